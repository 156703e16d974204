//! writ's audit record as OpenTelemetry: each rule that fired becomes a guardrail event on
//! the request's span (`writ serve --otlp`). The runtime stays policy-agnostic; this is
//! the hook the CLI installs to say what a writ filter's log lines mean.
//!
//! The GenAI guardrail conventions are not settled (the open proposal in
//! semantic-conventions-genai names a `gen_ai.security.finding` event with
//! `gen_ai.security.policy.*` attributes), so writ uses names under `gen_ai.guardrail.*`,
//! listed in `docs/observability.md`. Like the record itself, an event carries rule and
//! policy identities only: never message text or a detected value.

use writ_plugin::audit::AuditRecord;
use writ_runtime::{AttributeValue, LogRecord, SpanAnnotations, SpanEvent};

/// The name of the event added for each rule that fired.
pub const GUARDRAIL_EVENT: &str = "gen_ai.guardrail.finding";

/// What a filter log line adds to its request's span: for a `writ-audit` request record,
/// the request id and outcome as attributes and one [`GUARDRAIL_EVENT`] per fired rule;
/// nothing for any other line.
pub fn annotations(log: &LogRecord) -> SpanAnnotations {
    let Some(value) = writ_plugin::audit::parse_log_line(&log.message) else {
        return SpanAnnotations::default();
    };
    let Ok(record) = serde_json::from_value::<AuditRecord>(value) else {
        return SpanAnnotations::default();
    };
    if record.event != "request" {
        return SpanAnnotations::default();
    }
    annotations_of(&record)
}

/// The annotations of one request record.
pub fn annotations_of(record: &AuditRecord) -> SpanAnnotations {
    let s = |v: &str| AttributeValue::Str(v.to_string());
    let mut attributes = vec![("writ.outcome".to_string(), s(&record.outcome))];
    if !record.request_id.is_empty() {
        attributes.push(("writ.request.id".to_string(), s(&record.request_id)));
    }
    let events = record
        .rules
        .iter()
        .map(|rule| {
            let mut a = vec![
                ("gen_ai.guardrail.policy.name", s(&record.policy)),
                (
                    "gen_ai.guardrail.policy.id",
                    s(&format!("{}@{}", record.policy, record.policy_version)),
                ),
            ];
            if let Some(sha) = &record.artifact_sha256 {
                a.push(("gen_ai.guardrail.policy.version", s(sha)));
            }
            a.extend([
                ("gen_ai.guardrail.rule.id", s(&rule.clause)),
                ("gen_ai.guardrail.rule.name", s(&rule.title)),
                ("gen_ai.guardrail.action.type", s(&rule.action)),
                ("gen_ai.guardrail.mode", s(&rule.mode)),
                ("gen_ai.guardrail.effect", s(&rule.effect)),
                ("writ.rule.id", s(&rule.id)),
            ]);
            SpanEvent {
                name: GUARDRAIL_EVENT.to_string(),
                attributes: a.into_iter().map(|(k, v)| (k.to_string(), v)).collect(),
            }
        })
        .collect();
    SpanAnnotations { attributes, events }
}

/// The hook `writ serve` installs.
pub fn hook() -> writ_runtime::AnnotationHook {
    writ_runtime::AnnotationHook(std::sync::Arc::new(annotations))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use writ_plugin::audit::RuleRecord;
    use writ_runtime::LogLevel;

    fn record() -> AuditRecord {
        AuditRecord {
            event: "request".into(),
            request_id: "r-1".into(),
            policy: "support-bot".into(),
            policy_version: "1.2.0".into(),
            artifact_sha256: Some("ab".repeat(32)),
            rules: vec![RuleRecord {
                id: "AIP-2.1#2".into(),
                clause: "AIP-2.1".into(),
                title: "No secrets to providers".into(),
                action: "redact".into(),
                mode: "enforce".into(),
                effect: "enforced".into(),
            }],
            outcome: "allowed".into(),
            ..Default::default()
        }
    }

    fn attr<'a>(e: &'a SpanEvent, key: &str) -> &'a AttributeValue {
        &e.attributes.iter().find(|(k, _)| k == key).unwrap().1
    }

    #[test]
    fn each_fired_rule_is_an_event_with_clause_and_artifact() {
        let line = LogRecord {
            level: LogLevel::Info,
            message: format!("wasm log: {}", record().log_line()),
        };
        let a = annotations(&line);
        assert_eq!(a.events.len(), 1);
        let e = &a.events[0];
        assert_eq!(e.name, GUARDRAIL_EVENT);
        assert_eq!(attr(e, "gen_ai.guardrail.rule.id"), &"AIP-2.1".into());
        assert_eq!(
            attr(e, "gen_ai.guardrail.policy.version"),
            &"ab".repeat(32).into()
        );
        assert_eq!(attr(e, "gen_ai.guardrail.action.type"), &"redact".into());
        assert_eq!(attr(e, "writ.rule.id"), &"AIP-2.1#2".into());
        assert!(
            a.attributes
                .contains(&("writ.request.id".into(), "r-1".into()))
        );
    }

    #[test]
    fn other_lines_add_nothing() {
        let line = LogRecord {
            level: LogLevel::Info,
            message: "would have denied".into(),
        };
        assert_eq!(annotations(&line), SpanAnnotations::default());
        let mut flip = record();
        flip.event = "kill_switch".into();
        let line = LogRecord {
            level: LogLevel::Info,
            message: flip.log_line(),
        };
        assert_eq!(annotations(&line), SpanAnnotations::default());
    }
}
