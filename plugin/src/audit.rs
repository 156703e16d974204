//! The audit record: one JSON object per request (and per kill-switch flip) saying what
//! the policy decided and why, without any of the data it protected.
//!
//! Contract with the hosts: the filter emits each record as one log line at info level,
//! `writ-audit <json>` ([`AuditRecord::log_line`]), the JSON on a single line. The test
//! runner and `writ serve` find records with [`parse_log_line`], which accepts any prefix
//! a host puts before the marker (Envoy prepends `wasm log <root_id>: `). `writ serve`
//! appends them to a hash-chained JSONL file (`writ audit verify` checks it).
//!
//! Never in a record: message text, detected values, tokens, headers other than the
//! identity the policy names. PII appears as detector names and counts only.
//!
//! The artifact cannot know its own sha256 (the hash covers the bytes it would have to
//! contain), so the host passes it in the plugin configuration and the filter copies it
//! into [`AuditRecord::artifact_sha256`]; `None` means the host did not say.

use crate::calendar::rfc3339;
use crate::eval::{Effect, Fired};
use crate::ir::Policy;
use crate::oversight::{DriftAlert, Handoff};
use crate::spend::Alert;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// The marker in front of every audit record in the host log.
pub const LOG_PREFIX: &str = "writ-audit ";

/// One rule that fired.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RuleRecord {
    /// The rule's identity (`AIP-2.1`, `AIP-2.1#2`, `kill_switch`), unique in the artifact,
    /// so a record tells apart two rules that cite one clause.
    #[serde(default)]
    pub id: String,
    pub clause: String,
    pub title: String,
    /// The action keyword (`deny`, `redact`, …).
    pub action: String,
    /// `enforce`, or `monitor` for a rule that only recorded what it would have done.
    pub mode: String,
    /// `enforced`, `would_have`, `overridden` (lost to a deny) or `not_enforced_yet`.
    pub effect: String,
}

impl RuleRecord {
    /// The record of one fired rule as the evaluator reports it.
    pub fn from_fired(f: &Fired) -> RuleRecord {
        RuleRecord {
            id: f.id.clone(),
            clause: f.clause.clone(),
            title: f.title.clone(),
            action: f.action.as_str().to_string(),
            mode: if f.monitor { "monitor" } else { "enforce" }.to_string(),
            effect: match f.effect {
                Effect::Enforced => "enforced",
                Effect::WouldHave => "would_have",
                Effect::NotEnforcedYet => "not_enforced_yet",
                Effect::Overridden => "overridden",
            }
            .to_string(),
        }
    }
}

/// Token counts, from the provider's `usage` or, when `cost_estimated`, from the estimate.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Tokens {
    pub prompt: u64,
    pub completion: u64,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub cached: u64,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

/// A reply handed to a human reviewer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EscalationRecord {
    pub queue: String,
    pub reason: String,
    pub review_id: String,
}

/// One request's audit record. Optional fields are omitted when unknown rather than
/// guessed; field names are stable (tools parse them).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct AuditRecord {
    /// `request` for traffic, `kill_switch` for an admin flip, `budget_alert`, `drift_alert`.
    pub event: String,
    /// RFC 3339 UTC with microseconds, see [`rfc3339`].
    pub time: String,
    #[serde(default)]
    pub request_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workflow: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub team: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    pub policy: String,
    pub policy_version: String,
    /// Supplied by the host (plugin configuration); the artifact cannot hash itself.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub artifact_sha256: Option<String>,
    pub source_sha256: String,
    /// Every rule that fired, monitor ones included, in source order.
    #[serde(default)]
    pub rules: Vec<RuleRecord>,
    /// Detector name → number of values found. Never the values.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub pii: BTreeMap<String, u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model_requested: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model_used: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tokens: Option<Tokens>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cost_micros: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub currency: Option<String>,
    /// True when no usage came back and `tokens`/`cost_micros` are the pre-call estimate.
    #[serde(default)]
    pub cost_estimated: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub confidence: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub escalation: Option<EscalationRecord>,
    /// Cost-attribution labels from `tag` rules.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub tags: BTreeMap<String, String>,
    /// A workflow with a `fallback`: every upstream attempt in order (model, cluster,
    /// status or failure kind), skipped steps and the degraded answer
    /// (`crate::fallback::Attempt`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub attempts: Vec<serde_json::Value>,
    /// The HTTP status the client received (0 when the client went away first).
    #[serde(default)]
    pub status: u16,
    /// `allowed`, `denied`, `stopped` (kill switch), `error` (failed closed), or for admin
    /// events the action taken.
    pub outcome: String,
    /// Free-form detail for non-request events and errors (never request content).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
    /// True when the fleet store was unreachable and the request was admitted on the
    /// instance's bounded local allowance instead of a lease (`docs/fleet.md`).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub degraded: bool,
    // ---- operating model (issue 15) ----
    /// A reviewer's verdict on an escalation (`event: review_verdict`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verdict: Option<VerdictRecord>,
    /// The rubber-stamp signal (`event: review_signal`) or kill point (`event:
    /// kill_point`) that was raised, as the policy names it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signal: Option<String>,
    /// An MCP request (`docs/mcp.md`): its JSON-RPC method, the tool a `tools/call`
    /// names, how many tools a `tools/list` result lost to the policy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mcp: Option<McpRecord>,
}

/// What the audit record says of an MCP request: never arguments or results.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct McpRecord {
    /// The JSON-RPC method (`tools/call`, `initialize`, …; `response` for a client's
    /// answer to a server request; empty for a request without a body).
    pub method: String,
    /// The tool a `tools/call` names.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool: Option<String>,
    /// Tools a `tools/list` result lost to the policy (hidden from the client).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub hidden_tools: u64,
}

/// A verdict as the audit record carries it: which escalation (its review id and the
/// escalated request's id, so the two records join), who, what, and how long.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VerdictRecord {
    pub review_id: String,
    /// The escalated request's id (empty when the review id is unknown to the gateway).
    #[serde(default)]
    pub escalated_request_id: String,
    pub reviewer: String,
    /// `approved`, `edited` or `rejected`.
    pub verdict: String,
    /// Seconds the reviewer says they spent.
    pub seconds: f64,
    /// Seconds from the escalation to this verdict, as the gateway measured them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wait_seconds: Option<i64>,
}

impl AuditRecord {
    /// A request record with the policy identity filled in.
    pub fn request(
        policy: &crate::ir::Policy,
        artifact_sha256: Option<&str>,
        request_id: &str,
        unix_nanos: i64,
    ) -> AuditRecord {
        AuditRecord {
            event: "request".into(),
            time: rfc3339(unix_nanos),
            request_id: request_id.to_string(),
            policy: policy.name.clone(),
            policy_version: policy.version.clone(),
            artifact_sha256: artifact_sha256.map(str::to_string),
            source_sha256: policy.source_sha256.clone(),
            currency: Some(policy.currency.clone()),
            ..AuditRecord::default()
        }
    }

    /// Copies what the evaluator decided: who the request is (workflow name, team, user)
    /// and every rule that fired. Call once per phase with that phase's decision.
    pub fn add_decision(&mut self, policy: &crate::ir::Policy, decision: &crate::eval::Decision) {
        let id = &decision.identity;
        if let Some(w) = id.workflow.and_then(|i| policy.workflows.get(i)) {
            self.workflow = Some(w.name.clone());
        }
        if id.team.is_some() {
            self.team = id.team.clone();
        }
        if id.user.is_some() {
            self.user = id.user.clone();
        }
        self.add_fired(&decision.fired);
    }

    /// Records the rules the evaluator reports as fired.
    pub fn add_fired(&mut self, fired: &[Fired]) {
        self.rules.extend(fired.iter().map(RuleRecord::from_fired));
    }

    /// Adds `count` findings of detector `name`.
    pub fn add_pii(&mut self, name: &str, count: u32) {
        let e = self.pii.entry(name.to_string()).or_insert(0);
        *e = e.saturating_add(count);
    }

    /// The record as one line of JSON.
    pub fn to_json(&self) -> String {
        // Serializing plain strings, numbers and maps with string keys cannot fail; the
        // fallback still produces a parseable record.
        serde_json::to_string(self).unwrap_or_else(|_| {
            format!(
                "{{\"event\":\"error\",\"request_id\":{}}}",
                serde_json::Value::String(self.request_id.clone())
            )
        })
    }

    /// The log line the filter emits: [`LOG_PREFIX`] then the JSON.
    pub fn log_line(&self) -> String {
        format!("{LOG_PREFIX}{}", self.to_json())
    }
}

/// The JSON object of an audit log line, wherever the marker sits in the line; `None` for
/// any other line.
pub fn parse_log_line(line: &str) -> Option<serde_json::Value> {
    let at = line.find(LOG_PREFIX)?;
    let json = line.get(at + LOG_PREFIX.len()..)?.trim_end();
    let v: serde_json::Value = serde_json::from_str(json).ok()?;
    v.is_object().then_some(v)
}

// ---------------------------------------------------------------------------------------
// Assembly: the records of the events other modules raise. Kept here so `spend` and
// `oversight` do not depend on the record format (and through it on `eval`).

impl Handoff {
    /// The escalation as the audit record carries it.
    pub fn audit(&self) -> EscalationRecord {
        EscalationRecord {
            queue: self.queue.clone(),
            reason: self.reason.clone(),
            review_id: self.review_id.clone(),
        }
    }
}

impl Alert {
    /// The alert as an audit record (`event: budget_alert`), logged like any other.
    pub fn audit_record(&self, policy: &Policy, unix_nanos: i64) -> AuditRecord {
        let rule = self.rule.and_then(|r| policy.rules.get(r));
        AuditRecord {
            event: "budget_alert".into(),
            time: rfc3339(unix_nanos),
            policy: policy.name.clone(),
            policy_version: policy.version.clone(),
            source_sha256: policy.source_sha256.clone(),
            currency: Some(policy.currency.clone()),
            cost_micros: Some(self.settled),
            outcome: "alert".into(),
            detail: Some(format!(
                "{}: spend {} crossed the alert threshold {} ({})",
                rule.map_or("budget", |r| r.clause.as_str()),
                self.settled,
                self.threshold,
                self.key
            )),
            ..AuditRecord::default()
        }
    }
}

impl DriftAlert {
    /// The alert as an audit record (`event: drift_alert`).
    pub fn audit_record(&self, policy: &Policy, unix_nanos: i64) -> AuditRecord {
        AuditRecord {
            event: "drift_alert".into(),
            time: rfc3339(unix_nanos),
            workflow: Some(self.workflow.clone()),
            policy: policy.name.clone(),
            policy_version: policy.version.clone(),
            source_sha256: policy.source_sha256.clone(),
            outcome: "alert".into(),
            detail: Some(format!(
                "verification rate {:.1}% ({} of {}) is above the assumed {:.1}% ({})",
                self.measured * 100.0,
                self.escalated,
                self.total,
                self.assumed * 100.0,
                self.key
            )),
            ..AuditRecord::default()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::eval::ActionKind;

    #[test]
    fn records_round_trip_through_the_log_line() {
        let mut r = AuditRecord {
            event: "request".into(),
            time: rfc3339(0),
            request_id: "req-1".into(),
            policy: "support".into(),
            policy_version: "1.3.0".into(),
            source_sha256: "ab".into(),
            outcome: "denied".into(),
            status: 403,
            ..AuditRecord::default()
        };
        r.add_fired(&[Fired {
            rule: 1,
            id: "AIP-2.4#2".into(),
            clause: "AIP-2.4".into(),
            title: "No credentials".into(),
            action: ActionKind::Deny,
            monitor: true,
            effect: Effect::WouldHave,
        }]);
        r.add_pii("email", 2);
        r.add_pii("email", 1);
        let line = format!("[info] wasm log writ: {}", r.log_line());
        let parsed = parse_log_line(&line);
        assert!(parsed.is_some());
        let back: Option<AuditRecord> = parsed.and_then(|v| serde_json::from_value(v).ok());
        assert_eq!(back.as_ref(), Some(&r));
        let json = r.to_json();
        assert!(json.contains(r#""mode":"monitor""#), "{json}");
        assert!(json.contains(r#""pii":{"email":3}"#), "{json}");
        assert!(!json.contains('\n'));
        assert_eq!(parse_log_line("writ-audit not json"), None);
        assert_eq!(parse_log_line("other line"), None);
    }
}
