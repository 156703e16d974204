//! `writ review`: the production readiness review, answered from evidence. The five
//! questions of the operating model (business case, enforcement, handoffs, architecture,
//! ownership), each given `pass`, `fail` or `unknown` with the evidence behind it, plus the
//! conflicts between layers. A check the evidence cannot answer yet is `unknown` with the
//! reason, never a guess, so language added later (cost assumptions, review verdicts,
//! rollout-pack metadata) plugs in by turning unknowns into answers.
//!
//! This module only judges: the command (`src/cmd/review.rs`) gathers the [`Evidence`],
//! [`render`] prints the [`Review`].

pub mod dates;
pub mod render;
pub mod verdicts;

use std::collections::BTreeMap;

use serde::Serialize;
use writ_plugin::audit::AuditRecord;

/// A verdict on a check or a question.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Verdict {
    Pass,
    Fail,
    Unknown,
}

impl Verdict {
    /// The word the reports print.
    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::Pass => "pass",
            Verdict::Fail => "fail",
            Verdict::Unknown => "unknown",
        }
    }

    /// A question's verdict from its checks: `fail` if any failed; `unknown` if none could
    /// be answered; otherwise `pass` (the unknown checks stay listed beside it).
    fn of(checks: &[Check]) -> Verdict {
        if checks.iter().any(|c| c.verdict == Verdict::Fail) {
            Verdict::Fail
        } else if checks.iter().all(|c| c.verdict == Verdict::Unknown) {
            Verdict::Unknown
        } else {
            Verdict::Pass
        }
    }
}

/// One answered (or unanswerable) check and the evidence behind it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Check {
    /// Stable identifier, e.g. `verification_rate:support-assistant`.
    pub id: String,
    pub verdict: Verdict,
    /// What was found, with the numbers; for `unknown`, why it cannot be answered.
    pub evidence: String,
}

fn check(id: impl Into<String>, verdict: Verdict, evidence: impl Into<String>) -> Check {
    Check {
        id: id.into(),
        verdict,
        evidence: evidence.into(),
    }
}

/// One of the five questions.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Question {
    /// `q1` … `q5`.
    pub id: &'static str,
    pub title: &'static str,
    pub verdict: Verdict,
    pub checks: Vec<Check>,
}

/// A workflow as the policy declares it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct WorkflowEvidence {
    pub name: String,
    pub policy: String,
    /// `HITL`, `HOTL below 0.70`, `HIC sample 2%`.
    pub oversight: String,
    /// Whether every or some outputs must go to a human (HITL, HOTL).
    pub requires_review: bool,
    /// The least share of outputs the oversight mode itself sends to a human (1 for HITL,
    /// the sample for HIC, 0 for HOTL, which depends on confidence).
    pub designed_min_rate: f64,
    /// `assume verification_rate`, as a fraction.
    pub assumed_rate: Option<f64>,
    /// The workflow's `kill_point` statements, as written (canonical form).
    pub kill_points: Vec<String>,
}

/// A policy and what it was built into.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PolicyEvidence {
    pub name: String,
    pub version: String,
    pub path: String,
    pub owner: String,
    pub source_sha256: String,
    /// The sha256 of the artifact built from the source now (what `writ test` tests).
    pub built_sha256: String,
    pub currency: String,
    pub manual_owners: Vec<String>,
}

/// An artifact found in `--artifacts DIR`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ArtifactEvidence {
    pub file: String,
    pub policy: String,
    pub version: String,
    pub sha256: String,
    pub source_sha256: String,
    /// `Some(true)` verified by a `--trust` key; `Some(false)` unsigned, changed, or signed
    /// by a key not trusted; `None` signed but no `--trust` key given to verify it.
    pub signature_valid: Option<bool>,
    pub signature_note: String,
}

/// Clause coverage, from `writ coverage`'s report.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CoverageEvidence {
    pub paper: String,
    pub enforced: Vec<String>,
    pub manual: Vec<String>,
    pub paper_only: Vec<String>,
    /// Clauses not fully covered and why (rules without tests, …).
    pub gaps: Vec<String>,
    pub percent: f64,
}

/// The audit log's chain.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ChainEvidence {
    pub ok: bool,
    pub records: u64,
    /// The head hash when it verifies; why not otherwise.
    pub detail: String,
}

/// A few numbers from a Prometheus scrape.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct MetricsEvidence {
    pub url: String,
    /// Why the scrape failed, if it did.
    pub error: Option<String>,
    /// `writ_drift_alerts_total` per workflow.
    pub drift_alerts: BTreeMap<String, f64>,
    /// `writ_escalations_total` per workflow.
    pub escalations: BTreeMap<String, f64>,
}

/// Everything the review judges.
#[derive(Debug, Clone)]
pub struct Evidence {
    pub policies: Vec<PolicyEvidence>,
    pub workflows: Vec<WorkflowEvidence>,
    /// `None` without `--artifacts`.
    pub artifacts: Option<Vec<ArtifactEvidence>>,
    /// `Err(why)` when coverage could not be computed (no test file, no paper policy).
    pub coverage: Result<CoverageEvidence, String>,
    pub audit_file: String,
    pub chain: ChainEvidence,
    /// The audit records in the `--since` window, in file order.
    pub records: Vec<AuditRecord>,
    /// Records that did not parse as audit records.
    pub unparsed: u64,
    /// `--since`, as given.
    pub since: Option<String>,
    /// Time to find one request's records in the audit file, and the request id looked up.
    pub lookup: Option<(String, f64)>,
    pub metrics: Option<MetricsEvidence>,
    /// `--go-live`, and today (UTC), as `YYYY-MM-DD`.
    pub go_live: Option<dates::Date>,
    pub today: dates::Date,
}

/// Per workflow and UTC day: outputs, escalations, mean cost.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct DayPoint {
    pub day: String,
    pub outputs: u64,
    pub escalations: u64,
    pub cost_micros: i64,
    pub costed: u64,
}

/// The verification rate a workflow showed in production.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ObservedRate {
    pub workflow: String,
    pub outputs: u64,
    pub escalated: u64,
    /// `escalated / outputs`, when there were outputs.
    pub rate: Option<f64>,
    pub assumed: Option<f64>,
    pub days: Vec<DayPoint>,
}

/// The whole review.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Review {
    pub verdict: Verdict,
    pub policies: Vec<PolicyEvidence>,
    pub audit: AuditSummary,
    pub questions: Vec<Question>,
    /// Conflicts between layers, named as the operating model names them.
    pub conflicts: Vec<String>,
    /// Rollout-pack fields not filled for each workflow.
    pub rollout_pack_missing: BTreeMap<String, Vec<String>>,
    pub observed: Vec<ObservedRate>,
    pub currency: String,
}

/// What the review read from the audit log.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AuditSummary {
    pub file: String,
    pub chain: ChainEvidence,
    pub since: Option<String>,
    pub records_in_window: usize,
    pub unparsed: u64,
}

/// The rollout pack's fields (issue 15, §5); the language has none of them yet but the
/// owner, so the review lists them as missing.
pub const ROLLOUT_PACK_FIELDS: &[(&str, &str)] = &[
    ("purpose", "what the workflow is for"),
    ("primary_user", "who uses its output"),
    ("trigger", "what starts it"),
    ("output", "what it produces"),
    ("human_in_the_loop_point", "where a human reviews"),
    ("hard_stops", "what it must never do"),
    ("dri", "the single directly responsible individual"),
    ("owners.platform", "platform owner"),
    ("owners.security", "security owner"),
    ("owners.data", "data owner"),
    ("owners.on_call", "on-call owner"),
    ("redaction_rules", "what is redacted or tokenised"),
    ("retention", "how long records are kept"),
    ("audit_log_location", "where the audit log lives"),
    ("eval_set", "the evaluation set"),
    ("release_gate", "the gate to release"),
    (
        "operability",
        "central gateway, tracing, budget alerts, per-workflow cost attribution, kill switch",
    ),
    ("incident_actions", "what to do in an incident"),
    (
        "phase",
        "dogfood / beta / default_on, and the gate to the next",
    ),
    ("approved_models", "the models it may use"),
    ("routing_rule", "how a model is chosen"),
    ("fallback", "what happens when a provider fails"),
];

/// How long finding one request in the audit trail may take (the architecture layer's
/// "an audit trail for any prediction in 5 minutes").
const LOOKUP_BUDGET_MS: f64 = 5.0 * 60.0 * 1000.0;

fn pct(f: f64) -> String {
    let p = f * 100.0;
    if (p - p.round()).abs() < 1e-9 {
        format!("{p:.0}%")
    } else {
        format!("{p:.1}%")
    }
}

fn money(micros: f64, currency: &str) -> String {
    format!("{:.6} {currency}", micros / 1_000_000.0)
}

/// Outputs are request records the client got an answer to (`outcome: allowed`), the
/// same denominator as the engine's `writ_verification_rate_ppm`.
fn is_output(r: &AuditRecord) -> bool {
    r.event == "request" && r.outcome == "allowed"
}

fn observe(evidence: &Evidence) -> Vec<ObservedRate> {
    evidence
        .workflows
        .iter()
        .map(|w| {
            let mut days: BTreeMap<String, DayPoint> = BTreeMap::new();
            let (mut outputs, mut escalated) = (0u64, 0u64);
            for r in evidence
                .records
                .iter()
                .filter(|r| is_output(r) && r.workflow.as_deref() == Some(w.name.as_str()))
            {
                outputs += 1;
                let day = r.time.get(..10).unwrap_or("").to_string();
                let point = days.entry(day.clone()).or_insert_with(|| DayPoint {
                    day,
                    ..DayPoint::default()
                });
                point.outputs += 1;
                if r.escalation.is_some() {
                    escalated += 1;
                    point.escalations += 1;
                }
                if let Some(c) = r.cost_micros {
                    point.cost_micros = point.cost_micros.saturating_add(c);
                    point.costed += 1;
                }
            }
            ObservedRate {
                workflow: w.name.clone(),
                outputs,
                escalated,
                rate: (outputs > 0).then(|| escalated as f64 / outputs as f64),
                assumed: w.assumed_rate,
                days: days.into_values().collect(),
            }
        })
        .collect()
}

/// Judges the evidence.
pub fn review(evidence: &Evidence) -> Review {
    let observed = observe(evidence);
    let currency = evidence
        .policies
        .first()
        .map(|p| p.currency.clone())
        .unwrap_or_default();
    let mut conflicts = Vec::new();
    let questions = vec![
        q1(evidence, &observed, &currency, &mut conflicts),
        q2(evidence),
        q3(evidence, &mut conflicts),
        q4(evidence),
        q5(evidence),
    ];
    design_conflicts(evidence, &mut conflicts);
    let mut verdict = Verdict::of(
        &questions
            .iter()
            .map(|q| check(q.id, q.verdict, ""))
            .collect::<Vec<_>>(),
    );
    if !evidence.chain.ok {
        verdict = Verdict::Fail;
    }
    let rollout_pack_missing = evidence
        .workflows
        .iter()
        .map(|w| {
            let owner_given = evidence
                .policies
                .iter()
                .any(|p| p.name == w.policy && !p.owner.is_empty());
            let missing = ROLLOUT_PACK_FIELDS
                .iter()
                .filter(|(f, _)| !(*f == "dri" && owner_given))
                .map(|(f, _)| f.to_string())
                .collect();
            (w.name.clone(), missing)
        })
        .collect();
    Review {
        verdict,
        policies: evidence.policies.clone(),
        audit: AuditSummary {
            file: evidence.audit_file.clone(),
            chain: evidence.chain.clone(),
            since: evidence.since.clone(),
            records_in_window: evidence.records.len(),
            unparsed: evidence.unparsed,
        },
        questions,
        conflicts,
        rollout_pack_missing,
        observed,
        currency,
    }
}

fn q1(
    evidence: &Evidence,
    observed: &[ObservedRate],
    currency: &str,
    conflicts: &mut Vec<String>,
) -> Question {
    let mut checks = Vec::new();
    for (w, o) in evidence.workflows.iter().zip(observed) {
        let id = format!("verification_rate:{}", w.name);
        let c = match (w.assumed_rate, o.rate) {
            (None, _) => check(
                id,
                Verdict::Unknown,
                format!(
                    "workflow `{}` declares no `assume verification_rate`, so there is nothing to hold production against",
                    w.name
                ),
            ),
            (Some(a), None) => check(
                id,
                Verdict::Unknown,
                format!(
                    "workflow `{}` assumes {} verification; the audit log has no outputs of it{}",
                    w.name,
                    pct(a),
                    window(evidence)
                ),
            ),
            (Some(a), Some(r)) if r > a + 1e-12 => {
                conflicts.push(format!(
                    "strategy assumes {} verification for `{}` while production measures {} ({} of {} outputs escalated), so the business case does not survive contact with production",
                    pct(a),
                    w.name,
                    pct(r),
                    o.escalated,
                    o.outputs
                ));
                check(
                    id,
                    Verdict::Fail,
                    format!(
                        "drift: workflow `{}` assumes {} verification, observed {} ({} of {} outputs escalated{})",
                        w.name,
                        pct(a),
                        pct(r),
                        o.escalated,
                        o.outputs,
                        window(evidence)
                    ),
                )
            }
            (Some(a), Some(r)) => check(
                id,
                Verdict::Pass,
                format!(
                    "workflow `{}` assumes {} verification, observed {} ({} of {} outputs escalated{})",
                    w.name,
                    pct(a),
                    pct(r),
                    o.escalated,
                    o.outputs,
                    window(evidence)
                ),
            ),
        };
        checks.push(c);
        let costed: Vec<i64> = evidence
            .records
            .iter()
            .filter(|r| is_output(r) && r.workflow.as_deref() == Some(w.name.as_str()))
            .filter_map(|r| r.cost_micros)
            .collect();
        let observed_cost = if costed.is_empty() {
            "no request of it carries `cost_micros`".to_string()
        } else {
            let mean = costed.iter().sum::<i64>() as f64 / costed.len() as f64;
            format!(
                "observed {} per transaction (AI spend, mean of {} requests)",
                money(mean, currency),
                costed.len()
            )
        };
        checks.push(check(
            format!("cost_per_transaction:{}", w.name),
            Verdict::Unknown,
            format!(
                "workflow `{}`: {observed_cost}; the policy declares no cost_per_transaction assumption to hold it against",
                w.name
            ),
        ));
        checks.push(verdicts::kill_points_check(evidence, w, conflicts));
    }
    checks.push(check(
        "budget_headroom",
        Verdict::Unknown,
        "days of budget headroom need the spend ledgers' balances, which neither the audit log nor the scrape carries yet",
    ));
    question(
        "q1",
        "Does the business case survive contact with production?",
        checks,
    )
}

fn q2(evidence: &Evidence) -> Question {
    let mut checks = Vec::new();
    match &evidence.coverage {
        Err(why) => checks.push(check("clauses", Verdict::Unknown, why.clone())),
        Ok(c) => {
            let listed = |v: &[String]| {
                if v.is_empty() {
                    "none".to_string()
                } else {
                    v.join(", ")
                }
            };
            let verdict = if c.paper_only.is_empty() && c.gaps.is_empty() {
                Verdict::Pass
            } else {
                Verdict::Fail
            };
            let mut text = format!(
                "{}: {} clauses enforced ({}), {} manual ({}), {} paper-only ({}); coverage {:.1}%",
                c.paper,
                c.enforced.len(),
                listed(&c.enforced),
                c.manual.len(),
                listed(&c.manual),
                c.paper_only.len(),
                listed(&c.paper_only),
                c.percent
            );
            if !c.gaps.is_empty() {
                text.push_str(&format!("; gaps: {}", c.gaps.join("; ")));
            }
            checks.push(check("clauses", verdict, text));
        }
    }
    // Which artifacts count as tested: the one each policy builds into now (what
    // `writ test` ran) and any in --artifacts built from the same source.
    let mut tested: BTreeMap<String, String> = BTreeMap::new();
    for p in &evidence.policies {
        tested.insert(
            p.built_sha256.clone(),
            format!("{} (built from {})", p.name, p.path),
        );
    }
    for a in evidence.artifacts.iter().flatten() {
        if evidence
            .policies
            .iter()
            .any(|p| p.source_sha256 == a.source_sha256)
        {
            tested.insert(a.sha256.clone(), a.file.clone());
        }
    }
    let mut seen: BTreeMap<String, u64> = BTreeMap::new();
    let mut without = 0u64;
    for r in evidence.records.iter().filter(|r| r.event == "request") {
        match &r.artifact_sha256 {
            Some(s) => *seen.entry(s.clone()).or_default() += 1,
            None => without += 1,
        }
    }
    if seen.is_empty() {
        checks.push(check(
            "artifact_tested",
            Verdict::Unknown,
            format!(
                "no request record{} carries an `artifact_sha256`{}",
                window(evidence),
                if without > 0 {
                    format!(" ({without} records without one: set it in the filter configuration)")
                } else {
                    String::new()
                }
            ),
        ));
    } else {
        let untested: Vec<String> = seen
            .iter()
            .filter(|(s, _)| !tested.contains_key(*s))
            .map(|(s, n)| format!("{s} ({n} records)"))
            .collect();
        if untested.is_empty() {
            let names: Vec<String> = seen
                .iter()
                .map(|(s, n)| {
                    format!(
                        "{} ({n} records): {}",
                        short(s),
                        tested.get(s).map(String::as_str).unwrap_or("")
                    )
                })
                .collect();
            checks.push(check(
                "artifact_tested",
                Verdict::Pass,
                format!("production ran only tested artifacts: {}", names.join("; ")),
            ));
        } else {
            checks.push(check(
                "artifact_tested",
                Verdict::Fail,
                format!(
                    "production records come from artifacts that are not built from the reviewed policies (untested): {}",
                    untested.join(", ")
                ),
            ));
        }
    }
    question(
        "q2",
        "Is every rule runtime-enforced, or paper-only?",
        checks,
    )
}

fn q3(evidence: &Evidence, conflicts: &mut Vec<String>) -> Question {
    let mut checks = Vec::new();
    let mut per_queue: BTreeMap<String, u64> = BTreeMap::new();
    let mut per_workflow: BTreeMap<String, u64> = BTreeMap::new();
    let mut without_context = Vec::new();
    for r in evidence.records.iter().filter(|r| r.event == "request") {
        let Some(e) = &r.escalation else { continue };
        *per_queue.entry(e.queue.clone()).or_default() += 1;
        *per_workflow
            .entry(r.workflow.clone().unwrap_or_default())
            .or_default() += 1;
        let mut missing = Vec::new();
        if r.request_id.is_empty() {
            missing.push("request id");
        }
        if e.reason.is_empty() {
            missing.push("reason");
        }
        if e.review_id.is_empty() {
            missing.push("review id");
        }
        if e.queue.is_empty() {
            missing.push("queue");
        }
        if !missing.is_empty() {
            without_context.push(format!(
                "{} (missing {})",
                if r.request_id.is_empty() {
                    r.time.as_str()
                } else {
                    r.request_id.as_str()
                },
                missing.join(", ")
            ));
        }
    }
    let total: u64 = per_queue.values().sum();
    let scraped = match &evidence.metrics {
        Some(m) if m.error.is_none() => format!(
            "; the scrape counts {} (`writ_escalations_total`, since the gateway started)",
            m.escalations.values().sum::<f64>()
        ),
        _ => String::new(),
    };
    checks.push(check(
        "escalations_routed",
        if total > 0 {
            Verdict::Pass
        } else {
            Verdict::Unknown
        },
        if total > 0 {
            format!(
                "{total} escalations routed{}: {}{scraped}",
                window(evidence),
                per_queue
                    .iter()
                    .map(|(q, n)| format!("{n} to `{q}`"))
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        } else {
            format!("no escalations{}{scraped}", window(evidence))
        },
    ));
    let verdicts = verdicts::Verdicts::of(&evidence.records);
    for w in evidence.workflows.iter().filter(|w| w.requires_review) {
        let n = per_workflow.get(&w.name).copied().unwrap_or(0);
        checks.extend(verdicts::reviewed_checks(
            evidence, &verdicts, w, n, conflicts,
        ));
    }
    if total > 0 {
        if without_context.is_empty() {
            checks.push(check(
                "handoff_context",
                Verdict::Pass,
                format!("all {total} escalations carry a request id, reason, review id and queue"),
            ));
        } else {
            conflicts.push(format!(
                "the handoff dumps data without context: {} escalations lack a request id, reason, review id or queue",
                without_context.len()
            ));
            checks.push(check(
                "handoff_context",
                Verdict::Fail,
                format!("handoffs without context: {}", without_context.join("; ")),
            ));
        }
    }
    question(
        "q3",
        "Are escalations actually routed, and actually reviewed?",
        checks,
    )
}

fn q4(evidence: &Evidence) -> Question {
    let mut checks = Vec::new();
    checks.push(if evidence.chain.ok {
        check(
            "audit_chain",
            Verdict::Pass,
            format!(
                "{}: hash chain verifies, {} records, {}",
                evidence.audit_file, evidence.chain.records, evidence.chain.detail
            ),
        )
    } else {
        check(
            "audit_chain",
            Verdict::Fail,
            format!(
                "{}: the hash chain is broken: {}",
                evidence.audit_file, evidence.chain.detail
            ),
        )
    });
    // Rollback: an older signed artifact of the same policy.
    match &evidence.artifacts {
        None => checks.push(check(
            "rollback",
            Verdict::Unknown,
            "no `--artifacts DIR` given, so no previous artifact could be looked for",
        )),
        Some(artifacts) => {
            for p in &evidence.policies {
                let older: Vec<&ArtifactEvidence> = artifacts
                    .iter()
                    .filter(|a| a.policy == p.name && dates::version_lt(&a.version, &p.version))
                    .collect();
                let id = format!("rollback:{}", p.name);
                let valid: Vec<&&ArtifactEvidence> = older
                    .iter()
                    .filter(|a| a.signature_valid == Some(true))
                    .collect();
                let c = if let Some(a) = valid.last() {
                    check(
                        id,
                        Verdict::Pass,
                        format!(
                            "{} (version {}) is signed by a trusted key and can be rolled back to",
                            a.file, a.version
                        ),
                    )
                } else if older.is_empty() {
                    check(
                        id,
                        Verdict::Fail,
                        format!(
                            "no artifact of `{}` older than {} in the artifacts folder: nothing to roll back to",
                            p.name, p.version
                        ),
                    )
                } else if older.iter().any(|a| a.signature_valid.is_none()) {
                    check(
                        id,
                        Verdict::Unknown,
                        older
                            .iter()
                            .map(|a| format!("{}: {}", a.file, a.signature_note))
                            .collect::<Vec<_>>()
                            .join("; "),
                    )
                } else {
                    check(
                        id,
                        Verdict::Fail,
                        format!(
                            "no older artifact of `{}` has a valid signature: {}",
                            p.name,
                            older
                                .iter()
                                .map(|a| format!("{}: {}", a.file, a.signature_note))
                                .collect::<Vec<_>>()
                                .join("; ")
                        ),
                    )
                };
                checks.push(c);
            }
        }
    }
    // Drift detection: configured (an assumed rate) and fired.
    for w in &evidence.workflows {
        let id = format!("drift_alerts:{}", w.name);
        match w.assumed_rate {
            None => checks.push(check(
                id,
                Verdict::Fail,
                format!(
                    "`{}` declares no `assume verification_rate`, so no drift alert can fire",
                    w.name
                ),
            )),
            Some(a) => {
                let fired = evidence
                    .records
                    .iter()
                    .filter(|r| {
                        r.event == "drift_alert" && r.workflow.as_deref() == Some(w.name.as_str())
                    })
                    .count();
                let scraped = evidence
                    .metrics
                    .as_ref()
                    .and_then(|m| m.drift_alerts.get(&w.name))
                    .map(|n| format!("; the scrape counts {n} (`writ_drift_alerts_total`)"))
                    .unwrap_or_default();
                checks.push(check(
                    id,
                    Verdict::Pass,
                    format!(
                        "configured at {} (alerts within the UTC day, after 50 outputs); fired {fired} times in the audit log{scraped}",
                        pct(a)
                    ),
                ));
            }
        }
    }
    if let Some(m) = &evidence.metrics
        && let Some(e) = &m.error
    {
        checks.push(check(
            "metrics",
            Verdict::Unknown,
            format!("{}: {e}", m.url),
        ));
    }
    match &evidence.lookup {
        None => checks.push(check(
            "audit_lookup",
            Verdict::Unknown,
            "the audit log has no request to look up",
        )),
        Some((id, ms)) => checks.push(check(
            "audit_lookup",
            if *ms <= LOOKUP_BUDGET_MS {
                Verdict::Pass
            } else {
                Verdict::Fail
            },
            format!("found request `{id}` in the audit log in {ms:.1} ms (budget: 5 minutes)"),
        )),
    }
    checks.push(owners_check(evidence));
    question(
        "q4",
        "Does the architecture pass the readiness test?",
        checks,
    )
}

fn owners_check(evidence: &Evidence) -> Check {
    let missing: Vec<&str> = evidence
        .policies
        .iter()
        .filter(|p| p.owner.trim().is_empty())
        .map(|p| p.name.as_str())
        .collect();
    if missing.is_empty() {
        check(
            "owners",
            Verdict::Pass,
            evidence
                .policies
                .iter()
                .map(|p| {
                    let mut manual = p.manual_owners.clone();
                    manual.sort();
                    manual.dedup();
                    format!(
                        "`{}` owned by {}{}",
                        p.name,
                        p.owner,
                        if manual.is_empty() {
                            String::new()
                        } else {
                            format!(" (manual clauses: {})", manual.join(", "))
                        }
                    )
                })
                .collect::<Vec<_>>()
                .join("; "),
        )
    } else {
        check(
            "owners",
            Verdict::Fail,
            format!("no owner in the policy header of {}", missing.join(", ")),
        )
    }
}

fn q5(evidence: &Evidence) -> Question {
    let mut checks = Vec::new();
    let mut dri = owners_check(evidence);
    dri.id = "dri".into();
    checks.push(dri);
    match evidence.go_live {
        None => {
            checks.push(check(
                "go_live",
                Verdict::Unknown,
                "no go-live date given (`--go-live DATE`)",
            ));
            checks.push(check(
                "next_review",
                Verdict::Unknown,
                "the next review follows from the go-live date (go-live, +30 days, +90 days, then quarterly)",
            ));
        }
        Some(g) => {
            checks.push(check("go_live", Verdict::Pass, format!("go-live {g}")));
            let (next, label) = dates::next_review(g, evidence.today);
            checks.push(check(
                "next_review",
                Verdict::Pass,
                format!("next review {next} ({label}); today is {}", evidence.today),
            ));
        }
    }
    question("q5", "Is someone responsible for coherence?", checks)
}

/// Conflicts visible in the policy alone.
fn design_conflicts(evidence: &Evidence, conflicts: &mut Vec<String>) {
    for w in &evidence.workflows {
        if let Some(a) = w.assumed_rate
            && a + 1e-12 < w.designed_min_rate
        {
            conflicts.push(format!(
                    "strategy assumes {} verification for `{}` while process designed {} (at least {} reviewed), so the business case is underwater",
                    pct(a),
                    w.name,
                    w.oversight,
                    pct(w.designed_min_rate)
                ));
        }
    }
}

fn question(id: &'static str, title: &'static str, checks: Vec<Check>) -> Question {
    Question {
        id,
        title,
        verdict: Verdict::of(&checks),
        checks,
    }
}

fn window(evidence: &Evidence) -> String {
    match &evidence.since {
        Some(s) => format!(" since {s}"),
        None => String::new(),
    }
}

fn short(sha: &str) -> &str {
    sha.get(..12).unwrap_or(sha)
}

#[cfg(test)]
mod tests {
    #![allow(
        clippy::unwrap_used,
        clippy::panic,
        reason = "a test fails loudly on a bad fixture"
    )]
    use super::*;
    use writ_plugin::audit::EscalationRecord;

    fn evidence(workflow: WorkflowEvidence, records: Vec<AuditRecord>) -> Evidence {
        Evidence {
            policies: vec![PolicyEvidence {
                name: "claims".into(),
                version: "1.0.0".into(),
                path: "claims.policy".into(),
                owner: String::new(),
                source_sha256: "s".into(),
                built_sha256: "b".into(),
                currency: "EUR".into(),
                manual_owners: Vec::new(),
            }],
            workflows: vec![workflow],
            artifacts: None,
            coverage: Err("no test file".into()),
            audit_file: "audit.jsonl".into(),
            chain: ChainEvidence {
                ok: true,
                records: records.len() as u64,
                detail: "head h".into(),
            },
            records,
            unparsed: 0,
            since: None,
            lookup: None,
            metrics: None,
            go_live: None,
            today: dates::Date::parse("2026-12-06").unwrap(),
        }
    }

    fn hitl(assumed: f64) -> WorkflowEvidence {
        WorkflowEvidence {
            name: "claims".into(),
            policy: "claims".into(),
            oversight: "HITL".into(),
            requires_review: true,
            designed_min_rate: 1.0,
            assumed_rate: Some(assumed),
            kill_points: Vec::new(),
        }
    }

    #[test]
    fn hitl_with_a_low_assumed_rate_is_underwater_from_the_policy_alone() {
        let r = review(&evidence(hitl(0.10), Vec::new()));
        assert!(
            r.conflicts.iter().any(|c| c
                == "strategy assumes 10% verification for `claims` while process designed HITL (at least 100% reviewed), so the business case is underwater"),
            "{:?}",
            r.conflicts
        );
        // Nothing measured: unknown, not pass.
        assert_eq!(r.questions[0].verdict, Verdict::Unknown);
        // No owner in the header: Q4 and Q5 fail.
        assert_eq!(r.questions[3].verdict, Verdict::Fail);
        assert_eq!(r.questions[4].verdict, Verdict::Fail);
        assert_eq!(r.verdict, Verdict::Fail);
    }

    #[test]
    fn an_escalation_without_context_is_named() {
        let record = AuditRecord {
            event: "request".into(),
            time: "2026-12-01T00:00:00.000000Z".into(),
            request_id: "r1".into(),
            workflow: Some("claims".into()),
            outcome: "allowed".into(),
            status: 200,
            escalation: Some(EscalationRecord {
                queue: "claims-review".into(),
                reason: String::new(),
                review_id: "rv".into(),
            }),
            ..AuditRecord::default()
        };
        let r = review(&evidence(hitl(1.0), vec![record]));
        let q3 = &r.questions[2];
        let context = q3
            .checks
            .iter()
            .find(|c| c.id == "handoff_context")
            .unwrap();
        assert_eq!(context.verdict, Verdict::Fail);
        assert!(
            context.evidence.contains("r1 (missing reason)"),
            "{context:?}"
        );
        // HITL at 100% assumed, 1 of 1 escalated: the business case holds.
        assert_eq!(r.questions[0].verdict, Verdict::Pass);
        assert!(
            r.conflicts
                .iter()
                .any(|c| c.contains("compliance cannot be proved"))
        );
    }

    fn escalated(id: &str) -> AuditRecord {
        AuditRecord {
            event: "request".into(),
            time: "2026-12-01T00:00:00.000000Z".into(),
            request_id: id.into(),
            workflow: Some("claims".into()),
            outcome: "allowed".into(),
            status: 200,
            escalation: Some(EscalationRecord {
                queue: "claims-review".into(),
                reason: "HITL".into(),
                review_id: format!("rev-{id}"),
            }),
            ..AuditRecord::default()
        }
    }

    fn verdict(id: &str, reviewer: &str, verdict: &str, outcome: &str) -> AuditRecord {
        AuditRecord {
            event: "review_verdict".into(),
            time: "2026-12-01T00:10:00.000000Z".into(),
            request_id: format!("admin-{id}"),
            workflow: Some("claims".into()),
            outcome: outcome.into(),
            status: 200,
            verdict: Some(writ_plugin::audit::VerdictRecord {
                review_id: format!("rev-{id}"),
                escalated_request_id: id.into(),
                reviewer: reviewer.into(),
                verdict: verdict.into(),
                seconds: 90.0,
                wait_seconds: Some(600),
            }),
            ..AuditRecord::default()
        }
    }

    fn q3_check(r: &Review, id: &str) -> Check {
        r.questions[2]
            .checks
            .iter()
            .find(|c| c.id == id)
            .cloned()
            .unwrap_or_else(|| panic!("no {id} in {:?}", r.questions[2]))
    }

    #[test]
    fn verdicts_prove_review_and_pending_ones_are_a_finding() {
        let all = vec![
            escalated("r1"),
            escalated("r2"),
            verdict("r1", "alice", "approved", "reviewed"),
            verdict("r2", "bob", "edited", "reviewed"),
        ];
        let r = review(&evidence(hitl(1.0), all));
        let c = q3_check(&r, "escalations_reviewed:claims");
        assert_eq!(c.verdict, Verdict::Pass, "{c:?}");
        let times = q3_check(&r, "review_times:claims");
        assert!(
            times.evidence.contains("median time to verdict 10.0 min"),
            "{times:?}"
        );
        let stamp = q3_check(&r, "rubber_stamp:claims");
        assert_eq!(stamp.verdict, Verdict::Pass);
        assert!(
            stamp.evidence.contains("approval rate 50% (1 of 2)"),
            "{stamp:?}"
        );
        assert!(
            !r.conflicts
                .iter()
                .any(|c| c.contains("compliance cannot be proved"))
        );
        // A refused verdict call proves nothing: r2 is pending.
        let partial = vec![
            escalated("r1"),
            escalated("r2"),
            verdict("r1", "alice", "approved", "reviewed"),
            verdict("r2", "bob", "edited", "unauthorized"),
        ];
        let r = review(&evidence(hitl(1.0), partial));
        let c = q3_check(&r, "escalations_reviewed:claims");
        assert_eq!(c.verdict, Verdict::Fail);
        assert!(
            c.evidence
                .contains("1 have a verdict and 1 are still pending"),
            "{c:?}"
        );
    }

    #[test]
    fn rubber_stamp_signals_and_kill_points_fail_their_questions() {
        let mut records = vec![
            escalated("r1"),
            verdict("r1", "alice", "approved", "reviewed"),
        ];
        records.push(AuditRecord {
            event: "review_signal".into(),
            workflow: Some("claims".into()),
            outcome: "alert".into(),
            signal: Some("approval_rate".into()),
            detail: Some("approval rate 100.0% (20 of 20 verdicts today) above 98.0%".into()),
            ..AuditRecord::default()
        });
        records.push(AuditRecord {
            event: "kill_point".into(),
            time: "2026-12-01T01:00:00.000000Z".into(),
            workflow: Some("claims".into()),
            outcome: "stopped".into(),
            signal: Some("verification_rate > 40% over 1 day".into()),
            detail: Some("kill point `verification_rate > 40% over 1 day` crossed: measured 100.0% over 50 replies".into()),
            ..AuditRecord::default()
        });
        let r = review(&evidence(hitl(1.0), records));
        let stamp = q3_check(&r, "rubber_stamp:claims");
        assert_eq!(stamp.verdict, Verdict::Fail);
        assert!(
            stamp
                .evidence
                .contains("`approval_rate`: approval rate 100.0%"),
            "{stamp:?}"
        );
        assert!(
            r.conflicts
                .iter()
                .any(|c| c.contains("look like rubber stamps (approval_rate)"))
        );
        let kp = r.questions[0]
            .checks
            .iter()
            .find(|c| c.id == "kill_points:claims")
            .unwrap();
        assert_eq!(kp.verdict, Verdict::Fail);
        assert!(kp.evidence.contains("measured 100.0% over 50 replies at 2026-12-01T01:00:00.000000Z (the workflow was stopped)"), "{kp:?}");
        assert_eq!(r.questions[0].verdict, Verdict::Fail);
        // Declared but not crossed: pass.
        let mut w = hitl(1.0);
        w.kill_points = vec!["verification_rate > 40% over 1 day".into()];
        let r = review(&evidence(w, Vec::new()));
        let kp = r.questions[0]
            .checks
            .iter()
            .find(|c| c.id == "kill_points:claims")
            .unwrap();
        assert_eq!(kp.verdict, Verdict::Pass, "{kp:?}");
    }
}
