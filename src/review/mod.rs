//! `writ review`: the production readiness review, answered from evidence. The five
//! questions of the operating model (business case, enforcement, handoffs, architecture,
//! ownership), each given `pass`, `fail` or `unknown` with the evidence behind it, plus the
//! conflicts between layers. A check the evidence cannot answer yet is `unknown` with the
//! reason, never a guess, so language added later (review verdicts, kill points) plugs in by
//! turning unknowns into answers. The business case (`assume cost_per_transaction`,
//! `review_cost`, `manual_cost`) and the rollout pack (`rollout { … }`) come from the
//! policies (`docs/operating-model.md`).
//!
//! This module only judges: the command (`src/cmd/review.rs`) gathers the [`Evidence`],
//! [`render`] prints the [`Review`].

pub mod budgets;
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
    /// The business case: `assume cost_per_transaction`, `review_cost`, `manual_cost`
    /// (micros of the policy's currency).
    pub business_case: writ_plugin::ir::BusinessCase,
    /// The rollout pack the policy states for the workflow.
    pub rollout: writ_compiler::rollout::Pack,
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
    /// The spend caps the policy enforces (`spend(scope, window) > cap` denies).
    pub budgets: Vec<budgets::BudgetEvidence>,
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
    /// Mean AI spend per output that carries `cost_micros`, in micros.
    pub ai_spend_micros: Option<f64>,
    /// The observed cost per transaction: AI spend + observed rate × review cost, in
    /// micros; `None` without outputs, without costs, or without a `review_cost` to price
    /// the verifications with.
    pub cost_per_transaction_micros: Option<f64>,
    /// `assume cost_per_transaction` and `review_cost`, in micros.
    pub assumed_cost_micros: Option<i64>,
    pub review_cost_micros: Option<i64>,
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

/// Money as the policy writes it: two decimals, more only when a sum needs them
/// (`1.1` → `1.10 EUR`, `0.00045` → `0.00045 EUR`), to the micro.
fn money(micros: f64, currency: &str) -> String {
    let micros = micros.round() as i64;
    let sign = if micros < 0 { "-" } else { "" };
    let m = micros.unsigned_abs();
    let mut frac = format!("{:06}", m % 1_000_000);
    while frac.len() > 2 && frac.ends_with('0') {
        frac.pop();
    }
    format!("{sign}{}.{frac} {currency}", m / 1_000_000)
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
            let rate = (outputs > 0).then(|| escalated as f64 / outputs as f64);
            let (spent, costed) = days.values().fold((0i64, 0u64), |(s, n), d| {
                (s.saturating_add(d.cost_micros), n + d.costed)
            });
            let ai_spend = (costed > 0).then(|| spent as f64 / costed as f64);
            let bc = &w.business_case;
            let cost_per_transaction = match (ai_spend, rate, bc.review_cost) {
                (Some(a), Some(r), Some(c)) => Some(a + r * c as f64),
                (Some(a), Some(0.0), None) => Some(a),
                _ => None,
            };
            ObservedRate {
                workflow: w.name.clone(),
                outputs,
                escalated,
                rate,
                assumed: w.assumed_rate,
                days: days.into_values().collect(),
                ai_spend_micros: ai_spend,
                cost_per_transaction_micros: cost_per_transaction,
                assumed_cost_micros: bc.cost_per_transaction,
                review_cost_micros: bc.review_cost,
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
    design_conflicts(evidence, &currency, &mut conflicts);
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
            let missing = w.rollout.missing().iter().map(|f| f.to_string()).collect();
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
        checks.push(cost_check(w, o, currency, evidence, conflicts));
        checks.push(verdicts::kill_points_check(evidence, w, conflicts));
    }
    checks.push(budgets::headroom_check(evidence));
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
    for w in &evidence.workflows {
        let pack = &w.rollout;
        let owner = evidence
            .policies
            .iter()
            .find(|p| p.name == w.policy)
            .map(|p| p.owner.clone())
            .unwrap_or_default();
        checks.push(match pack.get("dri") {
            Some(dri) => check(
                format!("dri:{}", w.name),
                Verdict::Pass,
                format!(
                    "`{}`: DRI {dri}{}{}",
                    w.name,
                    pack.get("on_call")
                        .map(|o| format!("; on call (can flip the kill switch): {o}"))
                        .unwrap_or_default(),
                    if owner.is_empty() {
                        String::new()
                    } else {
                        format!("; policy owner {owner}")
                    }
                ),
            ),
            None => check(
                format!("dri:{}", w.name),
                Verdict::Fail,
                format!(
                    "`{}` names no DRI in its rollout pack (`dri \"…\"`){}",
                    w.name,
                    if owner.is_empty() {
                        String::new()
                    } else {
                        format!("; the policy owner {owner} owns the policy, not the workflow")
                    }
                ),
            ),
        });
        let stated = pack.get("go_live").and_then(|d| dates::Date::parse(&d));
        let go_live = match (evidence.go_live, stated) {
            (Some(g), Some(p)) if g != p => {
                Some((g, format!("from `--go-live`, overriding the policy's {p}")))
            }
            (Some(g), _) => Some((g, "from `--go-live`".to_string())),
            (None, Some(p)) => Some((p, "from the rollout pack".to_string())),
            (None, None) => None,
        };
        match go_live {
            None => {
                checks.push(check(
                    format!("go_live:{}", w.name),
                    Verdict::Unknown,
                    format!(
                        "`{}` states no go-live date (`go_live \"YYYY-MM-DD\"` in its rollout pack, or `--go-live DATE`)",
                        w.name
                    ),
                ));
                checks.push(check(
                    format!("next_review:{}", w.name),
                    Verdict::Unknown,
                    "the next review follows from the go-live date (go-live, +30 days, +90 days, then quarterly)",
                ));
            }
            Some((g, source)) => {
                checks.push(check(
                    format!("go_live:{}", w.name),
                    Verdict::Pass,
                    format!("`{}` goes live {g} ({source})", w.name),
                ));
                let (next, label) = dates::next_review(g, evidence.today);
                checks.push(check(
                    format!("next_review:{}", w.name),
                    Verdict::Pass,
                    format!("next review {next} ({label}); today is {}", evidence.today),
                ));
            }
        }
        let missing = pack.missing();
        checks.push(if missing.is_empty() {
            check(
                format!("rollout_pack:{}", w.name),
                Verdict::Pass,
                format!(
                    "`{}`: every field of the rollout pack is filled; phase {}{}",
                    w.name,
                    pack.get("phase").unwrap_or_default(),
                    pack.get("next_gate")
                        .map(|g| format!(", gate to the next phase: {g}"))
                        .unwrap_or_default()
                ),
            )
        } else {
            check(
                format!("rollout_pack:{}", w.name),
                Verdict::Fail,
                format!(
                    "`{}` cannot fill its rollout pack, so it is not ready: {} of {} fields missing ({}); `writ review --template {}` prints the block to fill",
                    w.name,
                    missing.len(),
                    writ_compiler::rollout::FIELDS.len(),
                    missing.join(", "),
                    w.name
                ),
            )
        });
    }
    question("q5", "Is someone responsible for coherence?", checks)
}

/// Q1's `cost_per_transaction:<workflow>`: the observed cost per transaction (AI spend per
/// request + observed verification rate × review cost) against the assumed one.
fn cost_check(
    w: &WorkflowEvidence,
    o: &ObservedRate,
    currency: &str,
    evidence: &Evidence,
    conflicts: &mut Vec<String>,
) -> Check {
    let id = format!("cost_per_transaction:{}", w.name);
    let bc = &w.business_case;
    let m = |micros: f64| money(micros, currency);
    let spend = match o.ai_spend_micros {
        Some(a) => format!(
            "AI spend {} per request (mean of {} requests)",
            m(a),
            o.days.iter().map(|d| d.costed).sum::<u64>()
        ),
        None => "no output of it carries `cost_micros`".to_string(),
    };
    let Some(assumed) = bc.cost_per_transaction else {
        return check(
            id,
            Verdict::Unknown,
            format!(
                "workflow `{}`: {spend}; the policy declares no `assume cost_per_transaction` to hold it against",
                w.name
            ),
        );
    };
    let assumed = assumed as f64;
    let Some(observed) = o.cost_per_transaction_micros else {
        let why = if o.ai_spend_micros.is_none() || o.rate.is_none() {
            format!("{spend}{}", window(evidence))
        } else {
            format!(
                "{spend}, {} verified, and no `review_cost` to price the verifications with",
                o.rate.map(pct).unwrap_or_default()
            )
        };
        return check(
            id,
            Verdict::Unknown,
            format!(
                "workflow `{}` assumes {} per transaction; {why}",
                w.name,
                m(assumed)
            ),
        );
    };
    let sum = format!(
        "{} AI spend + {} verified × {} review",
        m(o.ai_spend_micros.unwrap_or_default()),
        pct(o.rate.unwrap_or_default()),
        m(bc.review_cost.unwrap_or_default() as f64)
    );
    let manual = bc
        .manual_cost
        .map(|c| {
            let c = c as f64;
            if observed > c {
                format!("; more than the manual process ({} by hand)", m(c))
            } else {
                format!("; the manual process costs {}", m(c))
            }
        })
        .unwrap_or_default();
    if observed > assumed + 0.5 {
        conflicts.push(format!(
            "strategy assumes {} per transaction for `{}` while production measures {} ({sum}), so the business case does not survive contact with production{manual}",
            m(assumed),
            w.name,
            m(observed)
        ));
        check(
            id,
            Verdict::Fail,
            format!(
                "workflow `{}` assumes {} per transaction, observed {} ({sum}{}){manual}",
                w.name,
                m(assumed),
                m(observed),
                window(evidence)
            ),
        )
    } else {
        check(
            id,
            Verdict::Pass,
            format!(
                "workflow `{}` assumes {} per transaction, observed {} ({sum}{}){manual}",
                w.name,
                m(assumed),
                m(observed),
                window(evidence)
            ),
        )
    }
}

/// Conflicts visible in the policy alone.
fn design_conflicts(evidence: &Evidence, currency: &str, conflicts: &mut Vec<String>) {
    for w in &evidence.workflows {
        let bc = &w.business_case;
        // What the designed review alone costs per transaction, against the business case.
        let priced = match (bc.review_cost, bc.cost_per_transaction) {
            (Some(review), Some(cost)) => format!(
                ": {} × {} = {} of review per transaction against an assumed {}",
                pct(w.designed_min_rate),
                money(review as f64, currency),
                money(w.designed_min_rate * review as f64, currency),
                money(cost as f64, currency)
            ),
            _ => String::new(),
        };
        if let Some(a) = w.assumed_rate
            && a + 1e-12 < w.designed_min_rate
        {
            conflicts.push(format!(
                "strategy assumes {} verification for `{}` while process designed {} (at least {} reviewed), so the business case is underwater{priced}",
                pct(a),
                w.name,
                w.oversight,
                pct(w.designed_min_rate)
            ));
        } else if let (Some(review), Some(cost)) = (bc.review_cost, bc.cost_per_transaction)
            && w.designed_min_rate * review as f64 > cost as f64 + 0.5
        {
            conflicts.push(format!(
                "strategy assumes {} per transaction for `{}` while process designed {}, so the business case is underwater{priced}",
                money(cost as f64, currency),
                w.name,
                w.oversight
            ));
        }
        if let (Some(cost), Some(manual)) = (bc.cost_per_transaction, bc.manual_cost)
            && cost > manual
        {
            conflicts.push(format!(
                "the business case for `{}` costs more than the manual process: {} per transaction assumed, {} by hand",
                w.name,
                money(cost as f64, currency),
                money(manual as f64, currency)
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
                budgets: Vec::new(),
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
            business_case: writ_plugin::ir::BusinessCase::default(),
            rollout: writ_compiler::rollout::Pack::default(),
            kill_points: Vec::new(),
        }
    }

    /// A HOTL workflow with a business case: 1.10 EUR per transaction, 4.50 EUR a review,
    /// 6.00 EUR by hand, and 10% verification assumed.
    fn hotl_with_business_case() -> WorkflowEvidence {
        WorkflowEvidence {
            name: "support".into(),
            policy: "claims".into(),
            oversight: "HOTL below 0.70".into(),
            requires_review: true,
            designed_min_rate: 0.0,
            assumed_rate: Some(0.10),
            business_case: writ_plugin::ir::BusinessCase {
                cost_per_transaction: Some(1_100_000),
                review_cost: Some(4_500_000),
                manual_cost: Some(6_000_000),
            },
            rollout: writ_compiler::rollout::Pack::default(),
            kill_points: Vec::new(),
        }
    }

    /// `n` outputs of `support`, the first `escalated` of them escalated, each costing
    /// `cost` micros of AI spend.
    fn outputs(n: usize, escalated: usize, cost: i64) -> Vec<AuditRecord> {
        (0..n)
            .map(|i| AuditRecord {
                event: "request".into(),
                time: "2026-12-01T00:00:00.000000Z".into(),
                request_id: format!("r{i}"),
                workflow: Some("support".into()),
                outcome: "allowed".into(),
                status: 200,
                cost_micros: Some(cost),
                escalation: (i < escalated).then(|| EscalationRecord {
                    queue: "support-review".into(),
                    reason: "low confidence".into(),
                    review_id: format!("rv{i}"),
                }),
                ..AuditRecord::default()
            })
            .collect()
    }

    fn find<'a>(r: &'a Review, q: usize, id: &str) -> &'a Check {
        r.questions[q]
            .checks
            .iter()
            .find(|c| c.id == id)
            .unwrap_or_else(|| panic!("no {id} in {:#?}", r.questions[q]))
    }

    #[test]
    fn the_cost_per_transaction_is_ai_spend_plus_verification_priced_at_the_review_cost() {
        // 1 of 10 escalated (10%), 0.05 EUR of AI spend each: 0.05 + 10% × 4.50 = 0.50 EUR.
        let r = review(&evidence(hotl_with_business_case(), outputs(10, 1, 50_000)));
        let c = find(&r, 0, "cost_per_transaction:support");
        assert_eq!(c.verdict, Verdict::Pass, "{c:?}");
        assert!(
            c.evidence.contains("assumes 1.10 EUR per transaction, observed 0.50 EUR (0.05 EUR AI spend + 10% verified × 4.50 EUR review)"),
            "{c:?}"
        );
        assert_eq!(r.observed[0].cost_per_transaction_micros, Some(500_000.0));

        // 3 of 10 escalated: 0.05 + 30% × 4.50 = 1.40 EUR, over 1.10 EUR.
        let r = review(&evidence(hotl_with_business_case(), outputs(10, 3, 50_000)));
        let c = find(&r, 0, "cost_per_transaction:support");
        assert_eq!(c.verdict, Verdict::Fail, "{c:?}");
        assert!(
            c.evidence.contains("assumes 1.10 EUR per transaction, observed 1.40 EUR (0.05 EUR AI spend + 30% verified × 4.50 EUR review)"),
            "{c:?}"
        );
        assert!(
            r.conflicts.iter().any(|c| c.starts_with("strategy assumes 1.10 EUR per transaction for `support` while production measures 1.40 EUR")),
            "{:?}",
            r.conflicts
        );
        assert_eq!(r.questions[0].verdict, Verdict::Fail);

        // Nothing measured: unknown, with the assumption named.
        let r = review(&evidence(hotl_with_business_case(), Vec::new()));
        let c = find(&r, 0, "cost_per_transaction:support");
        assert_eq!(c.verdict, Verdict::Unknown, "{c:?}");
        assert!(
            c.evidence.contains("assumes 1.10 EUR per transaction"),
            "{c:?}"
        );
    }

    #[test]
    fn hitl_priced_over_the_business_case_is_named_with_the_numbers() {
        let mut w = hitl(0.10);
        w.business_case = writ_plugin::ir::BusinessCase {
            cost_per_transaction: Some(1_100_000),
            review_cost: Some(4_500_000),
            manual_cost: Some(1_000_000),
        };
        let r = review(&evidence(w, Vec::new()));
        assert!(
            r.conflicts.iter().any(|c| c
                == "strategy assumes 10% verification for `claims` while process designed HITL (at least 100% reviewed), so the business case is underwater: 100% × 4.50 EUR = 4.50 EUR of review per transaction against an assumed 1.10 EUR"),
            "{:?}",
            r.conflicts
        );
        assert!(
            r.conflicts.iter().any(|c| c
                == "the business case for `claims` costs more than the manual process: 1.10 EUR per transaction assumed, 1.00 EUR by hand"),
            "{:?}",
            r.conflicts
        );
    }

    #[test]
    fn the_rollout_pack_gives_q5_its_dri_and_go_live_and_a_missing_field_fails() {
        use writ_compiler::rollout::{FIELDS, Value};
        let mut w = hotl_with_business_case();
        for f in FIELDS {
            let v = match f.name {
                "phase" => "beta",
                "go_live" => "2026-11-01",
                "dri" => "jane.doe@example.com",
                _ => "filled",
            };
            w.rollout
                .fields
                .insert(f.name.into(), Value::Text(v.into()));
        }
        let r = review(&evidence(w.clone(), Vec::new()));
        assert_eq!(r.rollout_pack_missing["support"], Vec::<String>::new());
        let q5 = 4;
        assert_eq!(find(&r, q5, "rollout_pack:support").verdict, Verdict::Pass);
        let dri = find(&r, q5, "dri:support");
        assert_eq!(dri.verdict, Verdict::Pass);
        assert!(dri.evidence.contains("DRI jane.doe@example.com"), "{dri:?}");
        let go = find(&r, q5, "go_live:support");
        assert_eq!(
            go.evidence,
            "`support` goes live 2026-11-01 (from the rollout pack)"
        );
        // 2026-11-01 + 30 days is 2026-12-01, past on 2026-12-06: next is +90 days.
        let next = find(&r, q5, "next_review:support");
        assert!(
            next.evidence.starts_with("next review 2027-01-30"),
            "{next:?}"
        );
        assert_eq!(r.questions[q5].verdict, Verdict::Pass);

        // `--go-live` overrides the pack.
        let mut e = evidence(w.clone(), Vec::new());
        e.go_live = dates::Date::parse("2026-12-01");
        let r = review(&e);
        assert_eq!(
            find(&r, q5, "go_live:support").evidence,
            "`support` goes live 2026-12-01 (from `--go-live`, overriding the policy's 2026-11-01)"
        );

        // A missing field fails the review, and is listed.
        w.rollout.fields.remove("fallback");
        w.rollout.fields.remove("dri");
        let r = review(&evidence(w, Vec::new()));
        assert_eq!(r.rollout_pack_missing["support"], vec!["dri", "fallback"]);
        let pack = find(&r, q5, "rollout_pack:support");
        assert_eq!(pack.verdict, Verdict::Fail);
        assert!(
            pack.evidence
                .contains("2 of 23 fields missing (dri, fallback)"),
            "{pack:?}"
        );
        assert_eq!(find(&r, q5, "dri:support").verdict, Verdict::Fail);
        assert_eq!(r.verdict, Verdict::Fail);
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
