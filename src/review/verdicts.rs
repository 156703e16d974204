//! The review's reading of what reviewers and the gateway's own measurements logged:
//! verdicts on escalations (`event: review_verdict`), rubber-stamp signals (`event:
//! review_signal`) and kill points crossed (`event: kill_point`). Q3 holds escalations
//! against verdicts; Q1 reports kill points.

use std::collections::{BTreeMap, BTreeSet};

use writ_plugin::audit::{AuditRecord, VerdictRecord};

use super::{Check, Evidence, Verdict, WorkflowEvidence, check, pct, window};

/// The accepted verdicts and raised signals in the audit window, by workflow.
#[derive(Debug, Default)]
pub struct Verdicts {
    /// Workflow → its accepted verdicts, in log order.
    pub by_workflow: BTreeMap<String, Vec<VerdictRecord>>,
    /// Review ids with an accepted verdict.
    pub reviewed: BTreeSet<String>,
    /// Workflow → (signal, detail) raised.
    pub signals: BTreeMap<String, Vec<(String, String)>>,
}

impl Verdicts {
    /// Reads the records: a verdict counts when the gateway accepted it (`outcome:
    /// reviewed`); refused calls (bad token, unknown review) prove nothing.
    pub fn of(records: &[AuditRecord]) -> Verdicts {
        let mut out = Verdicts::default();
        for r in records {
            let wf = r.workflow.clone().unwrap_or_default();
            match r.event.as_str() {
                "review_verdict" if r.outcome == "reviewed" => {
                    if let Some(v) = &r.verdict {
                        out.reviewed.insert(v.review_id.clone());
                        out.by_workflow.entry(wf).or_default().push(v.clone());
                    }
                }
                "review_signal" => out.signals.entry(wf).or_default().push((
                    r.signal.clone().unwrap_or_default(),
                    r.detail.clone().unwrap_or_default(),
                )),
                _ => {}
            }
        }
        out
    }
}

fn median(mut v: Vec<f64>) -> Option<f64> {
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    let mid = v.len() / 2;
    let upper = v.get(mid).copied()?;
    Some(if v.len().is_multiple_of(2) {
        (v.get(mid - 1).copied().unwrap_or(upper) + upper) / 2.0
    } else {
        upper
    })
}

fn secs(s: f64) -> String {
    if s >= 3600.0 {
        format!("{:.1} h", s / 3600.0)
    } else if s >= 60.0 {
        format!("{:.1} min", s / 60.0)
    } else {
        format!("{s:.0} s")
    }
}

/// Q3's checks for a workflow whose oversight requires review (HITL, HOTL) that routed
/// `escalations` in the window: were they reviewed (a `fail` finding when none or only
/// some were), how long reviews took, and whether the gateway raised rubber-stamp signals.
pub fn reviewed_checks(
    evidence: &Evidence,
    verdicts: &Verdicts,
    w: &WorkflowEvidence,
    escalations: u64,
    conflicts: &mut Vec<String>,
) -> Vec<Check> {
    let mut checks = Vec::new();
    let escalated: BTreeSet<&str> = evidence
        .records
        .iter()
        .filter(|r| r.event == "request" && r.workflow.as_deref() == Some(w.name.as_str()))
        .filter_map(|r| r.escalation.as_ref().map(|e| e.review_id.as_str()))
        .collect();
    let reviewed = escalated
        .iter()
        .filter(|id| verdicts.reviewed.contains(**id))
        .count() as u64;
    let id = format!("escalations_reviewed:{}", w.name);
    if escalations == 0 {
        checks.push(check(
            id,
            Verdict::Unknown,
            format!(
                "`{}` ({}) had no escalations{}",
                w.name,
                w.oversight,
                window(evidence)
            ),
        ));
    } else if reviewed == 0 {
        conflicts.push(format!(
            "the policy requires human oversight of `{}` ({}), but no review verdicts are logged, so compliance cannot be proved ({escalations} escalations, 0 verdicts)",
            w.name, w.oversight
        ));
        checks.push(check(
            id,
            Verdict::Fail,
            format!(
                "finding: `{}` ({}) escalated {escalations} outputs{} and no review verdict is logged for any of them, so none can be shown reviewed",
                w.name,
                w.oversight,
                window(evidence)
            ),
        ));
    } else if reviewed < escalations {
        checks.push(check(
            id,
            Verdict::Fail,
            format!(
                "finding: `{}` ({}) escalated {escalations} outputs{}, {reviewed} have a verdict and {} are still pending",
                w.name,
                w.oversight,
                window(evidence),
                escalations - reviewed
            ),
        ));
    } else {
        checks.push(check(
            id,
            Verdict::Pass,
            format!(
                "`{}` ({}): all {escalations} escalations{} have a verdict",
                w.name,
                w.oversight,
                window(evidence)
            ),
        ));
    }
    let vs = verdicts
        .by_workflow
        .get(&w.name)
        .cloned()
        .unwrap_or_default();
    if vs.is_empty() {
        checks.push(check(
            format!("review_times:{}", w.name),
            Verdict::Unknown,
            format!("no verdicts on `{}` are logged{}", w.name, window(evidence)),
        ));
        return checks;
    }
    let n = vs.len();
    let spent = median(vs.iter().map(|v| v.seconds).collect()).unwrap_or(0.0);
    let waits: Vec<f64> = vs
        .iter()
        .filter_map(|v| v.wait_seconds.map(|s| s as f64))
        .collect();
    let wait = median(waits.clone());
    let max_wait = waits.iter().copied().fold(0.0, f64::max);
    checks.push(check(
        format!("review_times:{}", w.name),
        Verdict::Pass,
        format!(
            "{n} verdicts on `{}`: median time spent {}, median time to verdict {}{}",
            w.name,
            secs(spent),
            wait.map_or("unknown".into(), secs),
            if waits.is_empty() {
                String::new()
            } else {
                format!(" (longest {})", secs(max_wait))
            }
        ),
    ));
    let approved = vs.iter().filter(|v| v.verdict == "approved").count();
    let mut by_reviewer: BTreeMap<&str, usize> = BTreeMap::new();
    for v in &vs {
        *by_reviewer.entry(v.reviewer.as_str()).or_default() += 1;
    }
    let (top, top_n) = by_reviewer
        .iter()
        .max_by_key(|(_, c)| **c)
        .map(|(r, c)| (*r, *c))
        .unwrap_or(("", 0));
    let observed = format!(
        "approval rate {} ({approved} of {n}), top reviewer `{top}` with {} of verdicts, median {} spent",
        pct(approved as f64 / n as f64),
        pct(top_n as f64 / n as f64),
        secs(spent)
    );
    let raised = verdicts.signals.get(&w.name).cloned().unwrap_or_default();
    if raised.is_empty() {
        checks.push(check(
            format!("rubber_stamp:{}", w.name),
            Verdict::Pass,
            format!("no rubber-stamp signal raised on `{}`; {observed}", w.name),
        ));
    } else {
        conflicts.push(format!(
            "reviews of `{}` look like rubber stamps ({}), so the human oversight the policy requires may not be genuine",
            w.name,
            raised
                .iter()
                .map(|(s, _)| s.as_str())
                .collect::<BTreeSet<_>>()
                .into_iter()
                .collect::<Vec<_>>()
                .join(", ")
        ));
        checks.push(check(
            format!("rubber_stamp:{}", w.name),
            Verdict::Fail,
            format!(
                "rubber-stamp signals on `{}`: {}; {observed}",
                w.name,
                raised
                    .iter()
                    .map(|(s, d)| format!("`{s}`: {d}"))
                    .collect::<Vec<_>>()
                    .join("; ")
            ),
        ));
    }
    checks
}

/// Q1's check of a workflow's kill points: `fail` naming each one the gateway logged as
/// crossed (`event: kill_point`), `pass` when it declares some and none was crossed,
/// `unknown` when it declares none.
pub fn kill_points_check(
    evidence: &Evidence,
    w: &WorkflowEvidence,
    conflicts: &mut Vec<String>,
) -> Check {
    let id = format!("kill_points:{}", w.name);
    let crossed: Vec<String> = evidence
        .records
        .iter()
        .filter(|r| r.event == "kill_point" && r.workflow.as_deref() == Some(w.name.as_str()))
        .map(|r| {
            format!(
                "{} at {}{}",
                r.detail.clone().unwrap_or_default(),
                r.time,
                if r.outcome == "stopped" {
                    " (the workflow was stopped)"
                } else {
                    ""
                }
            )
        })
        .collect();
    if !crossed.is_empty() {
        conflicts.push(format!(
            "production crossed a kill point of `{}` that the strategy set: {}",
            w.name,
            crossed.join("; ")
        ));
        return check(
            id,
            Verdict::Fail,
            format!(
                "kill points crossed by `{}`: {}",
                w.name,
                crossed.join("; ")
            ),
        );
    }
    if w.kill_points.is_empty() {
        return check(
            id,
            Verdict::Unknown,
            format!("workflow `{}` declares no kill points", w.name),
        );
    }
    check(
        id,
        Verdict::Pass,
        format!(
            "no kill point of `{}` crossed{} ({})",
            w.name,
            window(evidence),
            w.kill_points
                .iter()
                .map(|k| format!("`{k}`"))
                .collect::<Vec<_>>()
                .join(", ")
        ),
    )
}
