//! Closing a request: completing the audit record, the one `writ-audit` line per request
//! followed by its alert lines, and the counters the request feeds.

use crate::audit::AuditRecord;
use crate::detect::Scanner;
use crate::ir::Policy;
use crate::metrics;
use crate::stream::Redacted;

/// What ending a request asks the host to do, in this order: add 1 to each counter of
/// `counters` (full stat names, labels included), then log each line of `lines` at info
/// level. `lines[0]` is always the request's own record; the budget and drift alerts the
/// request raised follow it, so the request record is the first `writ-audit` line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestEnd {
    pub counters: Vec<String>,
    pub lines: Vec<String>,
}

/// How a request ended, as far as the record needs to know.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ending {
    /// The request went upstream; a record without an outcome is `allowed`.
    Forwarded,
    /// The filter answered or failed before forwarding; a record without an outcome is
    /// `error` (every path that answers on purpose sets its own outcome).
    NotForwarded,
}

/// Completes `audit` (reply-side redactions, default event and outcome) and returns the
/// request's counters and audit lines. `reply_redacted` is what the reply rewriter masked,
/// if the reply was rewritten; `identity_labels` the bounded team/user labels of the
/// request's metrics; `alert_lines` the alert records raised during the request.
pub fn close_request(
    policy: &Policy,
    scanner: &Scanner,
    audit: &mut AuditRecord,
    reply_redacted: Option<&Redacted>,
    ending: Ending,
    identity_labels: &[(&'static str, String)],
    alert_lines: Vec<String>,
) -> RequestEnd {
    // Response-side redaction: counts per type, and the rules it enforced.
    if let Some(redacted) = reply_redacted {
        for (d, n) in redacted {
            if let Some(name) = scanner.name(*d) {
                audit.add_pii(name, *n);
            }
        }
        let fired = crate::decide::reply_redactions_fired(policy, redacted);
        audit.add_fired(&fired);
    }
    if audit.event.is_empty() {
        audit.event = "request".into();
    }
    if audit.outcome.is_empty() {
        audit.outcome = match ending {
            Ending::Forwarded => "allowed".into(),
            Ending::NotForwarded => "error".into(),
        };
    }
    let outcome = if audit.event == "kill_switch" {
        "admin"
    } else {
        audit.outcome.as_str()
    };
    let workflow = metrics::workflow_label(policy, audit.workflow.as_deref());
    let mut labels = vec![
        ("workflow", workflow.to_string()),
        ("outcome", outcome.to_string()),
    ];
    labels.extend(identity_labels.iter().cloned());
    let mut counters = vec![metrics::stat_name(metrics::REQUESTS.name, &labels)];
    for r in &audit.rules {
        let labels = [
            ("clause", r.clause.as_str()),
            ("action", r.action.as_str()),
            ("mode", r.mode.as_str()),
        ];
        counters.push(metrics::stat_name(metrics::DECISIONS.name, &labels));
    }
    for (k, v) in &audit.tags {
        let labels = [("key", k.as_str()), ("value", v.as_str())];
        counters.push(metrics::stat_name(metrics::TAGS.name, &labels));
    }
    let mut lines = Vec::with_capacity(1 + alert_lines.len());
    lines.push(audit.log_line());
    lines.extend(alert_lines);
    RequestEnd { counters, lines }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::audit::{RuleRecord, parse_log_line};

    fn policy() -> Policy {
        Policy {
            name: "p".into(),
            version: "1".into(),
            source_sha256: "00".into(),
            currency: "EUR".into(),
            enforcement: crate::ir::Enforcement::Enforce,
            workflows: vec![],
            prices: vec![],
            detectors: vec![],
            rules: vec![],
            kill_switch: None,
        }
    }

    fn scanner() -> Scanner {
        Scanner::new(&policy().detectors).unwrap()
    }

    fn records(end: &RequestEnd) -> Vec<serde_json::Value> {
        end.lines
            .iter()
            .map(|l| parse_log_line(l).unwrap())
            .collect()
    }

    #[test]
    fn every_ending_logs_exactly_one_request_record_first() {
        for (ending, outcome) in [
            (Ending::Forwarded, "allowed"),
            (Ending::NotForwarded, "error"),
        ] {
            let mut audit = AuditRecord::default();
            let alert = AuditRecord {
                event: "budget_alert".into(),
                outcome: "alert".into(),
                ..AuditRecord::default()
            }
            .log_line();
            let end = close_request(
                &policy(),
                &scanner(),
                &mut audit,
                None,
                ending,
                &[],
                vec![alert],
            );
            let recs = records(&end);
            assert_eq!(recs.len(), 2);
            assert_eq!(recs[0]["event"], "request");
            assert_eq!(recs[0]["outcome"], outcome);
            assert_eq!(recs[1]["event"], "budget_alert");
            let requests = recs.iter().filter(|r| r["event"] == "request").count();
            assert_eq!(requests, 1);
        }
    }

    #[test]
    fn an_outcome_set_on_purpose_is_kept_and_counted() {
        let mut audit = AuditRecord {
            outcome: "denied".into(),
            rules: vec![RuleRecord {
                id: "R-1".into(),
                clause: "R-1".into(),
                title: "t".into(),
                action: "deny".into(),
                mode: "enforce".into(),
                effect: "enforced".into(),
            }],
            ..AuditRecord::default()
        };
        audit.tags.insert("cost-center".into(), "support".into());
        let end = close_request(
            &policy(),
            &scanner(),
            &mut audit,
            None,
            Ending::Forwarded,
            &[("team", "billing".into())],
            vec![],
        );
        assert_eq!(records(&end)[0]["outcome"], "denied");
        assert_eq!(end.counters.len(), 3, "{:?}", end.counters);
        assert!(end.counters[0].starts_with(metrics::REQUESTS.name));
        assert!(end.counters[0].contains("outcome=denied"));
        assert!(end.counters[0].contains("team=billing"));
        assert!(end.counters[1].starts_with(metrics::DECISIONS.name));
        assert!(end.counters[1].contains("clause=R-1"));
        assert!(end.counters[2].starts_with(metrics::TAGS.name));
    }

    #[test]
    fn kill_switch_flips_count_as_admin() {
        let mut audit = AuditRecord {
            event: "kill_switch".into(),
            outcome: "stopped".into(),
            ..AuditRecord::default()
        };
        let end = close_request(
            &policy(),
            &scanner(),
            &mut audit,
            None,
            Ending::NotForwarded,
            &[],
            vec![],
        );
        assert!(
            end.counters[0].contains("outcome=admin"),
            "{:?}",
            end.counters
        );
        assert_eq!(records(&end)[0]["event"], "kill_switch");
    }
}
