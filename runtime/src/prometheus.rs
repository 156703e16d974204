//! Prometheus text exposition (format 0.0.4) of a module's metrics, with labels.
//!
//! proxy-wasm metrics are bare names, so labels ride in the name by a convention any
//! filter can follow (and that Envoy reads with `stats_tags` regexes):
//! `family;label=value;label=value`. The family and each label name are sanitised to
//! Prometheus' alphabets; a value is everything after the first `=` up to the next `;`.
//! A name with a label part lacking `=` is not of the convention and is rendered whole,
//! sanitised, without labels. Series of one family are grouped under one `# HELP` and
//! `# TYPE`, families and series in lexical order (as Envoy's `/stats/prometheus`).

use crate::abi::MetricKind;
use crate::shared::{HISTOGRAM_BUCKETS, MetricValue};
use std::collections::BTreeMap;
use std::fmt::Write;

/// The `# HELP` text of families the host was told nothing about.
const DEFAULT_HELP: &str = "Metric defined by the proxy-wasm module.";

/// A Prometheus metric or label name: `[a-zA-Z_:][a-zA-Z0-9_:]*` (`:` only in metric
/// names), anything else as `_`.
fn sanitize(name: &str, colon: bool) -> String {
    let mut out: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' || (colon && c == ':') {
                c
            } else {
                '_'
            }
        })
        .collect();
    if out.is_empty() || out.starts_with(|c: char| c.is_ascii_digit()) {
        out.insert(0, '_');
    }
    out
}

/// A label value escaped for the text format (`\`, `"`, newline).
fn escape(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for c in value.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out
}

/// Splits a metric name of the label convention into its family and labels, both
/// sanitised; a name not of the convention is one family without labels.
pub fn split_name(name: &str) -> (String, Vec<(String, String)>) {
    let mut parts = name.split(';');
    let family = parts.next().unwrap_or_default();
    let labels: Option<Vec<(String, String)>> = parts
        .map(|p| {
            p.split_once('=')
                .map(|(k, v)| (sanitize(k, false), v.to_string()))
        })
        .collect();
    match labels {
        Some(labels) => (sanitize(family, true), labels),
        None => (sanitize(name, true), Vec::new()),
    }
}

/// `{k="v",…}` with `extra` appended (a histogram's `le`), or nothing when empty.
fn label_set(labels: &[(String, String)], extra: Option<(&str, &str)>) -> String {
    let mut parts: Vec<String> = labels
        .iter()
        .map(|(k, v)| format!("{k}=\"{}\"", escape(v)))
        .collect();
    if let Some((k, v)) = extra {
        parts.push(format!("{k}=\"{v}\""));
    }
    if parts.is_empty() {
        String::new()
    } else {
        format!("{{{}}}", parts.join(","))
    }
}

/// One series of a family: its rendered label set (also its sort key), value and labels.
struct Series<'m> {
    set: String,
    metric: &'m MetricValue,
    labels: Vec<(String, String)>,
}

/// Renders metrics in the Prometheus text format; `help` gives the `# HELP` text of the
/// families it knows (by family name), others get a generic one.
pub fn render(metrics: &[MetricValue], help: &BTreeMap<String, String>) -> String {
    // family → (kind of its first series, its series)
    let mut families: BTreeMap<String, (MetricKind, Vec<Series<'_>>)> = BTreeMap::new();
    for m in metrics {
        let (family, labels) = split_name(&m.name);
        families
            .entry(family)
            .or_insert_with(|| (m.kind, Vec::new()))
            .1
            .push(Series {
                set: label_set(&labels, None),
                metric: m,
                labels,
            });
    }
    let mut out = String::new();
    for (name, (kind, mut series)) in families {
        series.sort_by(|a, b| a.set.cmp(&b.set));
        let text = help.get(&name).map_or(DEFAULT_HELP, String::as_str);
        let type_word = match kind {
            MetricKind::Counter => "counter",
            MetricKind::Gauge => "gauge",
            MetricKind::Histogram => "histogram",
        };
        let _ = writeln!(out, "# HELP {name} {}", text.replace('\n', " "));
        let _ = writeln!(out, "# TYPE {name} {type_word}");
        for Series {
            set,
            metric: m,
            labels,
        } in series
        {
            // A series whose kind differs from its family's cannot be typed; it is left out.
            if m.kind != kind {
                continue;
            }
            if kind != MetricKind::Histogram {
                let _ = writeln!(out, "{name}{set} {}", m.value);
                continue;
            }
            let buckets = m.buckets.clone().unwrap_or_default();
            for (bound, count) in HISTOGRAM_BUCKETS.iter().zip(&buckets) {
                let le = bound.to_string();
                let _ = writeln!(
                    out,
                    "{name}_bucket{} {count}",
                    label_set(&labels, Some(("le", &le)))
                );
            }
            let _ = writeln!(
                out,
                "{name}_bucket{} {}\n{name}_sum{set} {}\n{name}_count{set} {}",
                label_set(&labels, Some(("le", "+Inf"))),
                m.value,
                m.sum.unwrap_or(0),
                m.value
            );
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn value(name: &str, kind: MetricKind, v: i64) -> MetricValue {
        MetricValue {
            name: name.into(),
            kind,
            value: v,
            sum: None,
            buckets: None,
        }
    }

    #[test]
    fn labels_in_names_become_prometheus_labels() {
        let metrics = [
            value(
                "x_total;clause=AIP-1.2;mode=enforce",
                MetricKind::Counter,
                2,
            ),
            value(
                "x_total;clause=A=\"b\";mode=monitor",
                MetricKind::Counter,
                0,
            ),
            value("plain.name-1", MetricKind::Gauge, 7),
            value("bad;label", MetricKind::Gauge, 1),
        ];
        let help = BTreeMap::from([("x_total".to_string(), "Things.".to_string())]);
        let text = render(&metrics, &help);
        assert_eq!(
            text,
            "# HELP bad_label Metric defined by the proxy-wasm module.\n\
             # TYPE bad_label gauge\n\
             bad_label 1\n\
             # HELP plain_name_1 Metric defined by the proxy-wasm module.\n\
             # TYPE plain_name_1 gauge\n\
             plain_name_1 7\n\
             # HELP x_total Things.\n\
             # TYPE x_total counter\n\
             x_total{clause=\"A=\\\"b\\\"\",mode=\"monitor\"} 0\n\
             x_total{clause=\"AIP-1.2\",mode=\"enforce\"} 2\n"
        );
    }

    #[test]
    fn names_split_on_the_convention_only() {
        assert_eq!(
            split_name("f;a=1;b-c=x.y"),
            (
                "f".to_string(),
                vec![("a".into(), "1".into()), ("b_c".into(), "x.y".into())]
            )
        );
        assert_eq!(split_name("9f"), ("_9f".to_string(), vec![]));
    }
}
