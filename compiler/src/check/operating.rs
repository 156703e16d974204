//! The operating-model statements of a workflow (issue 15): kill points, rubber-stamp
//! review signals and handoff context. Checked here, in one pass over the workflows after
//! the declarations (it needs the policy's currency and whether it has a kill switch),
//! and resolved into the workflow's IR by [`resolve`].

use crate::ast::*;
use crate::diag::{Diagnostic, codes};
use writ_plugin::ir;

use super::suggest::did_you_mean;

/// The measures a kill point may name.
const KILL_METRICS: &[(&str, ir::KillMetric)] = &[
    ("cost_per_transaction", ir::KillMetric::CostPerTransaction),
    ("verification_rate", ir::KillMetric::VerificationRate),
];

/// Window units of a kill point, with their calendar window and length in hours.
const UNITS: &[(&str, (ir::Window, u32))] = &[
    ("hour", (ir::Window::Hour, 1)),
    ("hours", (ir::Window::Hour, 1)),
    ("day", (ir::Window::Day, 24)),
    ("days", (ir::Window::Day, 24)),
];

/// The longest kill-point window, in hours (90 days).
pub(crate) const MAX_WINDOW_HOURS: u32 = 90 * 24;

/// Replies a kill point waits for when it names no `after N requests`.
pub(crate) const DEFAULT_MIN_REQUESTS: u64 = 50;

/// Verdicts the review signals wait for when they name no `after N reviews`.
pub(crate) const DEFAULT_MIN_REVIEWS: u64 = 20;

/// The review signals (`median_review_time` takes a duration, the others a percentage).
const SIGNALS: &[&str] = &["median_review_time", "approval_rate", "reviewer_share"];

fn lookup<T: Copy>(table: &[(&str, T)], word: &str) -> Option<T> {
    table.iter().find(|(w, _)| *w == word).map(|(_, t)| *t)
}

fn whole(n: &Num) -> Option<u64> {
    (n.value >= 1.0 && n.value.fract() == 0.0 && n.value <= 1e9).then_some(n.value as u64)
}

/// Seconds in a duration written `N` + `s`/`m`/`h`.
fn seconds(value: f64, unit: &str) -> f64 {
    match unit {
        "m" => value * 60.0,
        "h" => value * 3600.0,
        _ => value,
    }
}

/// Checks every workflow's operating-model statements.
pub(crate) fn check(file: &File, currency: &str, diags: &mut Vec<Diagnostic>) {
    let kill_switch = file
        .items
        .iter()
        .any(|i| matches!(i.node, Item::KillSwitch(_)));
    for item in &file.items {
        let Item::Workflow(w) = &item.node else {
            continue;
        };
        let mut seen: Vec<(&str, Span)> = Vec::new();
        for s in &w.stmts {
            match &s.node {
                WorkflowStmt::KillPoint(k) => kill_point(k, s.span, currency, kill_switch, diags),
                WorkflowStmt::ReviewSignals { after, signals } => {
                    super::once(&mut seen, "review_signals", s.span, diags);
                    review_signals(after.as_ref(), signals, s.span, kill_switch, diags);
                }
                WorkflowStmt::HandoffIncludes(what) => {
                    super::once(&mut seen, "handoff", s.span, diags);
                    if what.node != "output" {
                        let help = if what.node == "prompt" {
                            Some("raw prompts never leave the gateway; the handoff may carry the model's output, PII still tokenised".to_string())
                        } else {
                            did_you_mean(&what.node, ["output"])
                        };
                        diags.push(
                            Diagnostic::new(
                                codes::HANDOFF_CONTENT,
                                format!("a handoff cannot include `{}`", what.node),
                                what.span,
                                "expected `output`",
                            )
                            .maybe_help(help),
                        );
                    }
                }
                _ => {}
            }
        }
    }
}

fn kill_point(
    k: &KillPoint,
    span: Span,
    currency: &str,
    kill_switch: bool,
    diags: &mut Vec<Diagnostic>,
) {
    let metric = lookup(KILL_METRICS, &k.metric.node);
    if metric.is_none() {
        diags.push(
            Diagnostic::new(
                codes::UNKNOWN_KILL_METRIC,
                format!("unknown kill-point measure `{}`", k.metric.node),
                k.metric.span,
                "expected `cost_per_transaction` or `verification_rate`",
            )
            .maybe_help(did_you_mean(
                &k.metric.node,
                KILL_METRICS.iter().map(|(w, _)| *w),
            )),
        );
    }
    if !matches!(k.op.node, CmpOp::Gt | CmpOp::Ge) {
        diags.push(
            Diagnostic::new(
                codes::KILL_POINT_VALUE,
                format!("a kill point cannot use `{}`", k.op.node.as_str()),
                k.op.span,
                "expected `>` or `>=`",
            )
            .help("a kill point fires when its measure rises past the threshold"),
        );
    }
    match metric {
        Some(ir::KillMetric::CostPerTransaction) => {
            if k.percent {
                diags.push(
                    Diagnostic::new(
                        codes::KILL_POINT_VALUE,
                        "a cost per transaction is an amount, not a percentage",
                        k.value.span,
                        "a percentage",
                    )
                    .help(format!("write e.g. `3.00 {currency}`")),
                );
            }
            if let Some(c) = &k.currency
                && c.node != currency
            {
                diags.push(
                    Diagnostic::new(
                        codes::CURRENCY_MISMATCH,
                        format!(
                            "kill point in `{}` in a policy whose currency is `{currency}`",
                            c.node
                        ),
                        c.span,
                        format!("expected `{currency}`"),
                    )
                    .help("spend is measured in the policy's currency"),
                );
            }
        }
        Some(ir::KillMetric::VerificationRate) => {
            if k.currency.is_some() {
                diags.push(
                    Diagnostic::new(
                        codes::KILL_POINT_VALUE,
                        "a verification rate is a share, not an amount",
                        k.value.span,
                        "an amount",
                    )
                    .help("write a percentage such as `40%`"),
                );
            } else if (k.percent && k.value.node.value > 100.0)
                || (!k.percent && k.value.node.value > 1.0)
            {
                diags.push(
                    Diagnostic::new(
                        codes::KILL_POINT_VALUE,
                        format!(
                            "verification rate `{}{}` is over 100%",
                            k.value.node.text,
                            if k.percent { "%" } else { "" }
                        ),
                        k.value.span,
                        "a share cannot exceed the whole",
                    )
                    .help("write a percentage between 0% and 100%, or a fraction 0..1"),
                );
            }
        }
        None => {}
    }
    match lookup(UNITS, &k.unit.node) {
        None => diags.push(
            Diagnostic::new(
                codes::KILL_POINT_WINDOW,
                format!("unknown window unit `{}`", k.unit.node),
                k.unit.span,
                "expected `hours` or `days`",
            )
            .maybe_help(did_you_mean(&k.unit.node, UNITS.iter().map(|(w, _)| *w))),
        ),
        Some((_, hours)) => match whole(&k.over.node) {
            None => diags.push(
                Diagnostic::new(
                    codes::KILL_POINT_WINDOW,
                    format!("`over {}` is not a whole number of {}", k.over.node.text, k.unit.node),
                    k.over.span,
                    "expected a whole number from 1",
                )
                .help("write e.g. `over 7 days`"),
            ),
            Some(n) if n.saturating_mul(u64::from(hours)) > u64::from(MAX_WINDOW_HOURS) => diags.push(
                Diagnostic::new(
                    codes::KILL_POINT_WINDOW,
                    format!("a kill-point window of {} {} is longer than 90 days", k.over.node.text, k.unit.node),
                    k.over.span.to(k.unit.span),
                    "too long",
                )
                .help("a kill point watches at most the last 90 days; review longer trends with `writ review`"),
            ),
            Some(_) => {}
        },
    }
    if let Some(a) = &k.after
        && whole(&a.node).is_none()
    {
        diags.push(
            Diagnostic::new(
                codes::KILL_POINT_WINDOW,
                format!(
                    "`after {} requests` is not a whole number from 1",
                    a.node.text
                ),
                a.span,
                "expected a whole number from 1",
            )
            .help("write e.g. `after 50 requests`"),
        );
    }
    if k.stop && !kill_switch {
        diags.push(
            Diagnostic::new(
                codes::NEEDS_KILL_SWITCH,
                "`then stop` in a policy without a kill switch",
                span,
                "would stop the workflow with no way to resume it",
            )
            .help("declare `kill_switch CLAUSE { admin path \"…\" token sha256 \"…\" }`, or drop `then stop` to only alert"),
        );
    }
}

fn review_signals(
    after: Option<&Node<Num>>,
    signals: &[Node<ReviewSignal>],
    span: Span,
    kill_switch: bool,
    diags: &mut Vec<Diagnostic>,
) {
    if signals.is_empty() {
        diags.push(
            Diagnostic::new(
                codes::UNKNOWN_REVIEW_SIGNAL,
                "`review_signals` lists no signal",
                span,
                "empty",
            )
            .help("write e.g. `review_signals { median_review_time < 30s, approval_rate > 98%, reviewer_share > 60% }`"),
        );
    }
    if let Some(a) = after
        && whole(&a.node).is_none()
    {
        diags.push(
            Diagnostic::new(
                codes::REVIEW_SIGNAL_VALUE,
                format!(
                    "`after {} reviews` is not a whole number from 1",
                    a.node.text
                ),
                a.span,
                "expected a whole number from 1",
            )
            .help("write e.g. `after 20 reviews`"),
        );
    }
    let mut seen: Vec<(&str, Span)> = Vec::new();
    for g in signals {
        let name = g.node.name.node.as_str();
        let Some(known) = SIGNALS.iter().find(|s| **s == name) else {
            diags.push(
                Diagnostic::new(
                    codes::UNKNOWN_REVIEW_SIGNAL,
                    format!("unknown review signal `{name}`"),
                    g.node.name.span,
                    "expected `median_review_time`, `approval_rate` or `reviewer_share`",
                )
                .maybe_help(did_you_mean(name, SIGNALS.iter().copied())),
            );
            continue;
        };
        super::once(&mut seen, known, g.span, diags);
        let duration = *known == "median_review_time";
        let unit_ok = if duration {
            matches!(g.node.unit.as_str(), "s" | "m" | "h")
        } else {
            g.node.unit == "%"
        };
        if !unit_ok {
            diags.push(Diagnostic::new(
                codes::REVIEW_SIGNAL_VALUE,
                format!(
                    "`{name}` takes {}",
                    if duration {
                        "a duration"
                    } else {
                        "a percentage"
                    }
                ),
                g.node.value.span,
                if duration {
                    "expected e.g. `30s`"
                } else {
                    "expected e.g. `98%`"
                },
            ));
        } else if !duration && g.node.value.node.value > 100.0 {
            diags.push(
                Diagnostic::new(
                    codes::PERCENT_OUT_OF_RANGE,
                    format!("`{}%` is over 100%", g.node.value.node.text),
                    g.node.value.span,
                    "a share cannot exceed the whole",
                )
                .help("use a percentage between 0% and 100%"),
            );
        }
        let op_ok = if duration {
            g.node.op.node == CmpOp::Lt
        } else {
            g.node.op.node == CmpOp::Gt
        };
        if !op_ok {
            diags.push(
                Diagnostic::new(
                    codes::REVIEW_SIGNAL_VALUE,
                    format!("`{name}` cannot use `{}`", g.node.op.node.as_str()),
                    g.node.op.span,
                    if duration {
                        "expected `<`"
                    } else {
                        "expected `>`"
                    },
                )
                .help(if duration {
                    "a rubber stamp is a review faster than the floor"
                } else {
                    "a rubber stamp approves, or one reviewer clears, more than the ceiling"
                }),
            );
        }
    }
    if !kill_switch {
        diags.push(
            Diagnostic::new(
                codes::NEEDS_KILL_SWITCH,
                "`review_signals` in a policy without a kill switch",
                span,
                "no verdict could be posted to judge",
            )
            .help("verdicts are posted with the kill switch's token: declare `kill_switch CLAUSE { admin path \"…\" token sha256 \"…\" }`"),
        );
    }
}

/// Puts a checked operating-model statement into its workflow's IR.
pub(crate) fn resolve(out: &mut ir::Workflow, stmt: &WorkflowStmt) {
    match stmt {
        WorkflowStmt::KillPoint(k) => {
            let metric =
                lookup(KILL_METRICS, &k.metric.node).unwrap_or(ir::KillMetric::VerificationRate);
            let (window, _) = lookup(UNITS, &k.unit.node).unwrap_or((ir::Window::Day, 24));
            let threshold = if k.percent {
                k.value.node.value / 100.0
            } else {
                k.value.node.value
            };
            let value = if k.percent {
                format!("{}%", k.value.node.text)
            } else {
                match &k.currency {
                    Some(c) => format!("{} {}", k.value.node.text, c.node),
                    None => k.value.node.text.clone(),
                }
            };
            out.kill_points.push(ir::KillPoint {
                metric,
                inclusive: k.op.node == CmpOp::Ge,
                threshold,
                window,
                buckets: whole(&k.over.node).map_or(1, |n| n as u32),
                min_requests: k
                    .after
                    .as_ref()
                    .and_then(|a| whole(&a.node))
                    .unwrap_or(DEFAULT_MIN_REQUESTS),
                stop: k.stop,
                text: format!(
                    "{} {} {value} over {} {}",
                    k.metric.node,
                    k.op.node.as_str(),
                    k.over.node.text,
                    k.unit.node
                ),
            });
        }
        WorkflowStmt::ReviewSignals { after, signals } => {
            let mut rs = ir::ReviewSignals {
                median_review_secs_below: None,
                approval_rate_above: None,
                reviewer_share_above: None,
                min_reviews: after
                    .as_ref()
                    .and_then(|a| whole(&a.node))
                    .unwrap_or(DEFAULT_MIN_REVIEWS),
            };
            for g in signals {
                let v = g.node.value.node.value;
                match g.node.name.node.as_str() {
                    "median_review_time" => {
                        rs.median_review_secs_below = Some(seconds(v, &g.node.unit));
                    }
                    "approval_rate" => rs.approval_rate_above = Some(v / 100.0),
                    _ => rs.reviewer_share_above = Some(v / 100.0),
                }
            }
            out.review_signals = Some(rs);
        }
        WorkflowStmt::HandoffIncludes(_) => out.handoff_output = true,
        _ => {}
    }
}
