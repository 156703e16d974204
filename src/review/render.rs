//! The review as Markdown, JSON or a self-contained HTML page (inline SVG charts, no
//! script, no network), so it can be attached to a ticket or a release.

use std::fmt::Write as _;

use super::{ObservedRate, Review, Verdict};

/// The review as Markdown.
pub fn markdown(review: &Review) -> String {
    let mut out = String::new();
    let names: Vec<String> = review
        .policies
        .iter()
        .map(|p| format!("`{}` {}", p.name, p.version))
        .collect();
    let _ = writeln!(out, "# Production readiness review: {}", names.join(", "));
    let _ = writeln!(out);
    let _ = writeln!(out, "**Verdict: {}**", review.verdict.as_str());
    let _ = writeln!(out);
    let _ = writeln!(
        out,
        "Audit log `{}`: {} records in the window{}, chain {}.",
        review.audit.file,
        review.audit.records_in_window,
        review
            .audit
            .since
            .as_ref()
            .map(|s| format!(" (since {s})"))
            .unwrap_or_default(),
        if review.audit.chain.ok {
            "verified"
        } else {
            "BROKEN"
        }
    );
    let _ = writeln!(out);
    for q in &review.questions {
        let _ = writeln!(
            out,
            "## {}. {} — {}",
            q.id.trim_start_matches('q'),
            q.title,
            q.verdict.as_str()
        );
        let _ = writeln!(out);
        for c in &q.checks {
            let _ = writeln!(
                out,
                "- **{}** `{}`: {}",
                c.verdict.as_str(),
                c.id,
                c.evidence
            );
        }
        let _ = writeln!(out);
    }
    let _ = writeln!(out, "## Conflicts between layers");
    let _ = writeln!(out);
    if review.conflicts.is_empty() {
        let _ = writeln!(out, "None found.");
    }
    for c in &review.conflicts {
        let _ = writeln!(out, "- {c}");
    }
    let _ = writeln!(out);
    let _ = writeln!(out, "## Rollout pack: fields still missing");
    let _ = writeln!(out);
    for (w, missing) in &review.rollout_pack_missing {
        let _ = writeln!(
            out,
            "- `{w}`: {}",
            if missing.is_empty() {
                "none".to_string()
            } else {
                format!(
                    "{} (`writ review --template {w}` prints the block to fill)",
                    missing.join(", ")
                )
            }
        );
    }
    out
}

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// One series of a line chart: a label, a colour and its points (x index, y).
struct Series<'a> {
    label: String,
    colour: &'a str,
    points: Vec<f64>,
    dashed: bool,
}

/// A line chart over the days `days`, as inline SVG.
fn line_chart(title: &str, days: &[String], series: &[Series<'_>], unit: &str) -> String {
    let (w, h, left, bottom, top) = (640.0, 240.0, 60.0, 40.0, 30.0);
    let max = series
        .iter()
        .flat_map(|s| s.points.iter().copied())
        .fold(0.0f64, f64::max)
        .max(1e-9)
        * 1.1;
    let n = days.len().max(1);
    let x = |i: usize| {
        if n == 1 {
            left + (w - left - 20.0) / 2.0
        } else {
            left + (w - left - 20.0) * i as f64 / (n - 1) as f64
        }
    };
    let y = |v: f64| top + (h - top - bottom) * (1.0 - v / max);
    let mut svg = String::new();
    let _ = write!(
        svg,
        r#"<svg role="img" viewBox="0 0 {w} {h}" width="{w}" height="{h}"><title>{}</title>"#,
        esc(title)
    );
    let _ = write!(
        svg,
        r#"<text x="{left}" y="18" font-size="14">{}</text><line x1="{left}" y1="{}" x2="{}" y2="{}" stroke="gray"/><line x1="{left}" y1="{top}" x2="{left}" y2="{}" stroke="gray"/>"#,
        esc(title),
        h - bottom,
        w - 20.0,
        h - bottom,
        h - bottom
    );
    let _ = write!(
        svg,
        r#"<text x="4" y="{}" font-size="11">{:.2}{unit}</text><text x="4" y="{}" font-size="11">0</text>"#,
        y(max / 1.1) + 4.0,
        max / 1.1,
        h - bottom
    );
    for (i, d) in days.iter().enumerate() {
        let _ = write!(
            svg,
            r#"<text x="{}" y="{}" font-size="10" text-anchor="middle">{}</text>"#,
            x(i),
            h - bottom + 14.0,
            esc(d)
        );
    }
    for (k, s) in series.iter().enumerate() {
        let pts: Vec<String> = s
            .points
            .iter()
            .enumerate()
            .map(|(i, v)| format!("{:.1},{:.1}", x(i), y(*v)))
            .collect();
        let dash = if s.dashed {
            r#" stroke-dasharray="6 4""#
        } else {
            ""
        };
        let _ = write!(
            svg,
            r#"<polyline fill="none" stroke="{}" stroke-width="2"{dash} points="{}"/>"#,
            s.colour,
            pts.join(" ")
        );
        for p in &pts {
            let (px, py) = p.split_once(',').unwrap_or(("0", "0"));
            let _ = write!(
                svg,
                r#"<circle cx="{px}" cy="{py}" r="3" fill="{}"/>"#,
                s.colour
            );
        }
        let _ = write!(
            svg,
            r#"<text x="{}" y="{}" font-size="11" fill="{}">{}</text>"#,
            left + 10.0 + 200.0 * k as f64,
            h - 6.0,
            s.colour,
            esc(&s.label)
        );
    }
    svg.push_str("</svg>");
    svg
}

fn charts(o: &ObservedRate, currency: &str) -> String {
    if o.days.is_empty() {
        return format!(
            "<p>No outputs of <code>{}</code> in the window, so no charts.</p>",
            esc(&o.workflow)
        );
    }
    let days: Vec<String> = o.days.iter().map(|d| d.day.clone()).collect();
    let mut rate = vec![Series {
        label: "observed verification rate".into(),
        colour: "#c0392b",
        points: o
            .days
            .iter()
            .map(|d| 100.0 * d.escalations as f64 / d.outputs.max(1) as f64)
            .collect(),
        dashed: false,
    }];
    if let Some(a) = o.assumed {
        rate.push(Series {
            label: format!("assumed {:.1}%", a * 100.0),
            colour: "#2c3e50",
            points: vec![a * 100.0; o.days.len()],
            dashed: true,
        });
    }
    let escalations = [
        Series {
            label: "escalations".into(),
            colour: "#d35400",
            points: o.days.iter().map(|d| d.escalations as f64).collect(),
            dashed: false,
        },
        Series {
            label: "reviews (none logged yet)".into(),
            colour: "#27ae60",
            points: vec![0.0; o.days.len()],
            dashed: true,
        },
    ];
    // Per day: AI spend per transaction, plus that day's verification rate × the review
    // cost when the policy states one (the model of docs/operating-model.md).
    let review = o.review_cost_micros.unwrap_or(0) as f64;
    let mut cost = vec![Series {
        label: if o.review_cost_micros.is_some() {
            format!("cost per transaction ({currency}: AI spend + verification × review cost)")
        } else {
            format!("AI spend per transaction ({currency}; no review_cost declared)")
        },
        colour: "#8e44ad",
        points: o
            .days
            .iter()
            .map(|d| {
                let spend = d.cost_micros as f64 / d.costed.max(1) as f64;
                let rate = d.escalations as f64 / d.outputs.max(1) as f64;
                (spend + rate * review) / 1_000_000.0
            })
            .collect(),
        dashed: false,
    }];
    if let Some(a) = o.assumed_cost_micros {
        cost.push(Series {
            label: format!("business case {:.2} {currency}", a as f64 / 1_000_000.0),
            colour: "#2c3e50",
            points: vec![a as f64 / 1_000_000.0; o.days.len()],
            dashed: true,
        });
    }
    format!(
        "{}\n{}\n{}",
        line_chart(
            &format!(
                "{}: verification rate per day against its assumption",
                o.workflow
            ),
            &days,
            &rate,
            "%"
        ),
        line_chart(
            &format!("{}: escalations against reviews per day", o.workflow),
            &days,
            &escalations,
            ""
        ),
        line_chart(
            &format!("{}: cost per transaction per day", o.workflow),
            &days,
            &cost,
            ""
        )
    )
}

fn badge(v: Verdict) -> String {
    let colour = match v {
        Verdict::Pass => "#27ae60",
        Verdict::Fail => "#c0392b",
        Verdict::Unknown => "#7f8c8d",
    };
    format!(
        r#"<span style="background:{colour};color:#fff;padding:1px 6px;border-radius:3px">{}</span>"#,
        v.as_str()
    )
}

/// The review as one HTML page: no script, no stylesheet or image fetched.
pub fn html(review: &Review) -> String {
    let mut out = String::new();
    let names: Vec<String> = review
        .policies
        .iter()
        .map(|p| format!("{} {}", p.name, p.version))
        .collect();
    let title = format!("Production readiness review: {}", names.join(", "));
    let _ = write!(
        out,
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>{}</title><style>body{{font-family:sans-serif;max-width:980px;margin:2em auto}}li{{margin:.3em 0}}</style></head><body>\n<h1>{}</h1>\n<p>Verdict: {}</p>\n<p>Audit log <code>{}</code>: {} records in the window, chain {}.</p>\n",
        esc(&title),
        esc(&title),
        badge(review.verdict),
        esc(&review.audit.file),
        review.audit.records_in_window,
        if review.audit.chain.ok {
            "verified"
        } else {
            "<strong>broken</strong>"
        }
    );
    for q in &review.questions {
        let _ = write!(
            out,
            "<h2>{}. {} {}</h2>\n<ul>\n",
            q.id.trim_start_matches('q'),
            esc(q.title),
            badge(q.verdict)
        );
        for c in &q.checks {
            let _ = writeln!(
                out,
                "<li>{} <code>{}</code>: {}</li>",
                badge(c.verdict),
                esc(&c.id),
                esc(&c.evidence)
            );
        }
        out.push_str("</ul>\n");
    }
    out.push_str("<h2>Conflicts between layers</h2>\n<ul>\n");
    if review.conflicts.is_empty() {
        out.push_str("<li>None found.</li>\n");
    }
    for c in &review.conflicts {
        let _ = writeln!(out, "<li>{}</li>", esc(c));
    }
    out.push_str("</ul>\n<h2>Charts</h2>\n");
    for o in &review.observed {
        let _ = writeln!(
            out,
            "<h3>{}</h3>\n{}",
            esc(&o.workflow),
            charts(o, &review.currency)
        );
    }
    out.push_str("<h2>Rollout pack: fields still missing</h2>\n<ul>\n");
    for (w, missing) in &review.rollout_pack_missing {
        let _ = writeln!(
            out,
            "<li><code>{}</code>: {}</li>",
            esc(w),
            esc(&missing.join(", "))
        );
    }
    out.push_str("</ul>\n</body></html>\n");
    out
}
