//! Native tests of the orchestration: whole requests driven through a [`Session`] against
//! a [`MemoryStore`], checking the effects the adapter would carry out.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::rc::Rc;

use super::*;
use crate::config::CalloutTarget;
use crate::ir::{
    Action, CmpOp, Detector, DetectorClass, DetectorKind, Enforcement, Expr, Field, Micros,
    Operand, Oversight, Policy, Price, Rule, Scope, Text, Value, Window, Workflow,
};
use crate::metrics;
use crate::store::MemoryStore;

const NOW: u64 = 1_780_000_000_000_000_000;

fn clock() -> u64 {
    NOW
}

fn no_host_id() -> Option<String> {
    None
}

fn rule(clause: &str, phase: Phase, condition: Expr, action: Action) -> Rule {
    Rule {
        clause: clause.into(),
        title: format!("rule {clause}"),
        phase,
        condition,
        action,
        enforcement: Enforcement::Enforce,
        alert_at_percent: None,
        line: 1,
    }
}

fn policy(rules: Vec<Rule>) -> Policy {
    Policy {
        name: "p".into(),
        version: "1.0.0".into(),
        source_sha256: "00".into(),
        currency: "EUR".into(),
        enforcement: Enforcement::Enforce,
        workflows: vec![],
        prices: vec![Price {
            model: "m".into(),
            input_per_mtok: 1_000_000,
            output_per_mtok: 1_000_000,
            cached_input_per_mtok: None,
        }],
        detectors: vec![Detector {
            name: "email".into(),
            class: DetectorClass::Pii,
            kind: DetectorKind::Builtin("email".into()),
        }],
        rules,
        kill_switch: None,
    }
}

fn support_workflow(oversight: Oversight) -> Workflow {
    Workflow {
        name: "support".into(),
        matcher: Expr::Const(true),
        oversight,
        assumed_verification_rate: None,
        team: None,
        user: None,
        scan_headers: Vec::new(),
        scan_query: false,
        business_case: Default::default(),
        kill_points: Vec::new(),
        review_signals: None,
        handoff_output: false,
        fallback: None,
    }
}

fn budget(limit: Micros) -> Rule {
    rule(
        "AIP-4.2",
        Phase::Request,
        Expr::Compare {
            left: Operand::Spend {
                scope: Scope::Team,
                window: Window::Month,
            },
            op: CmpOp::Gt,
            right: Operand::Const(Value::Money(limit)),
        },
        Action::Deny {
            status: 429,
            message: "over budget".into(),
        },
    )
}

fn model_deny() -> Rule {
    rule(
        "AIP-3.1",
        Phase::Request,
        Expr::Not(Box::new(Expr::In {
            operand: Operand::Field(Field::Model),
            set: vec![Value::Str("m".into())],
        })),
        Action::Deny {
            status: 403,
            message: "model not approved".into(),
        },
    )
}

fn escalate(clause: &str, phase: Phase) -> Rule {
    rule(
        clause,
        phase,
        Expr::Const(true),
        Action::Escalate {
            queue: "legal".into(),
            reason: format!("{clause} says so"),
        },
    )
}

fn target(cluster: &str) -> CalloutTarget {
    CalloutTarget {
        cluster: cluster.into(),
        path: "/".into(),
        authority: cluster.into(),
        timeout_ms: 1000,
    }
}

/// A request driven event by event, every effect kept in order.
struct Run {
    session: Session,
    store: MemoryStore,
    effects: Vec<Effect>,
    steps: Vec<Next>,
}

impl Run {
    fn new(p: Policy) -> Run {
        Run::with(p, PluginConfig::default())
    }

    fn with(p: Policy, config: PluginConfig) -> Run {
        let shared = Rc::new(Shared::new(Engine::new(p).unwrap()));
        Run {
            session: Session::new(shared, config, 7, clock),
            store: MemoryStore::new(),
            effects: Vec::new(),
            steps: Vec::new(),
        }
    }

    fn keep(&mut self, step: Step) -> Next {
        self.effects.extend(step.effects);
        self.steps.push(step.next);
        step.next
    }

    fn headers(&mut self, extra: &[(&str, &str)], end_of_stream: bool) -> Next {
        let mut h: Vec<(String, String)> = vec![
            (":method".into(), "POST".into()),
            (":path".into(), "/v1/chat/completions".into()),
            ("content-type".into(), "application/json".into()),
            ("x-request-id".into(), "req-1".into()),
        ];
        h.extend(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())));
        let step = self
            .session
            .on_request_headers(h, end_of_stream, &mut no_host_id, &self.store);
        self.keep(step)
    }

    fn body(&mut self, body: &str) -> Next {
        if let Some(step) = self.session.on_request_body_size(body.len()) {
            return self.keep(step);
        }
        let step = self.session.on_request_body(body.as_bytes(), &self.store);
        self.keep(step)
    }

    fn request(&mut self, body: &str) -> Next {
        assert_eq!(self.headers(&[], false), Next::Pause);
        self.body(body)
    }

    fn reply_headers(&mut self, status: u16, content_type: &str, end_of_stream: bool) -> Next {
        assert!(self.session.wants_reply_headers());
        let h = vec![
            (":status".to_string(), status.to_string()),
            ("content-type".to_string(), content_type.to_string()),
        ];
        let step = self
            .session
            .on_response_headers(h, end_of_stream, &self.store);
        self.keep(step)
    }

    fn reply_body(&mut self, body: &str) -> Next {
        match self.session.reply_body_need(true) {
            Need::Pass => Next::Continue,
            Need::Wait => Next::Pause,
            Need::Read => {
                let step = self
                    .session
                    .on_response_body(body.as_bytes(), true, &self.store);
                self.keep(step)
            }
        }
    }

    fn seal(&mut self) {
        let effects = self.session.seal(&self.store);
        self.effects.extend(effects);
    }

    /// Every audit record logged, in order.
    fn records(&self) -> Vec<serde_json::Value> {
        self.effects
            .iter()
            .filter_map(|e| match e {
                Effect::Log {
                    level: Level::Info,
                    line,
                } => crate::audit::parse_log_line(line),
                _ => None,
            })
            .collect()
    }

    /// The one request record (`event: request` or `kill_switch`); fails unless exactly one.
    fn record(&self) -> serde_json::Value {
        let recs: Vec<_> = self
            .records()
            .into_iter()
            .filter(|r| r["event"] == "request" || r["event"] == "kill_switch")
            .collect();
        assert_eq!(recs.len(), 1, "{recs:#?}");
        recs.into_iter().next().unwrap()
    }

    fn local_replies(&self) -> Vec<(u16, serde_json::Value)> {
        self.effects
            .iter()
            .filter_map(|e| match e {
                Effect::LocalReply { status, body, .. } => {
                    Some((*status, serde_json::from_slice(body).unwrap()))
                }
                _ => None,
            })
            .collect()
    }

    fn callouts(&self, cluster: &str) -> Vec<serde_json::Value> {
        self.effects
            .iter()
            .filter_map(|e| match e {
                Effect::Callout { target, body } if target.cluster == cluster => {
                    Some(serde_json::from_slice(body).unwrap())
                }
                _ => None,
            })
            .collect()
    }

    /// The sum of the deltas added to metrics whose name starts with `prefix`.
    fn added(&self, prefix: &str) -> i64 {
        self.effects
            .iter()
            .map(|e| match e {
                Effect::Add { name, delta, .. } if name.starts_with(prefix) => *delta,
                _ => 0,
            })
            .sum()
    }

    fn headers_set(&self, name: &str) -> usize {
        self.effects
            .iter()
            .filter(|e| matches!(e, Effect::SetHeader { name: n, .. } if n == name))
            .count()
    }
}

const BODY: &str = r#"{"model":"m","max_tokens":10,"messages":[{"role":"user","content":"hi"}]}"#;
const REPLY: &str = r#"{"choices":[{"message":{"content":"hello"}}],"usage":{"prompt_tokens":3,"completion_tokens":2}}"#;

#[test]
fn an_allowed_request_forwards_and_logs_one_record_at_the_end() {
    let mut run = Run::new(policy(vec![model_deny()]));
    assert_eq!(run.request(BODY), Next::Continue);
    assert_eq!(run.session.stage(), Stage::Forwarded);
    assert!(run.records().is_empty(), "nothing is logged before the end");
    assert_eq!(
        run.reply_headers(200, "application/json", false),
        Next::Continue
    );
    assert_eq!(run.reply_body(REPLY), Next::Continue);
    run.seal();
    let rec = run.record();
    assert_eq!(rec["outcome"], "allowed");
    assert_eq!(rec["status"], 200);
    assert_eq!(rec["request_id"], "req-1");
    // Sealing again logs nothing more.
    run.seal();
    run.record();
    assert_eq!(run.added(metrics::REQUESTS.name), 1);
}

#[test]
fn malformed_json_is_a_400_with_one_error_record() {
    let mut run = Run::new(policy(vec![model_deny()]));
    assert_eq!(run.request(r#"{"model": "m", "messages": ["#), Next::Pause);
    let replies = run.local_replies();
    assert_eq!(replies.len(), 1);
    assert_eq!(replies[0].0, 400);
    assert!(replies[0].1["error"]["message"].is_string());
    assert_eq!(run.session.stage(), Stage::Replied);
    assert!(!run.session.wants_reply_headers());
    run.seal();
    let rec = run.record();
    assert_eq!(rec["outcome"], "error");
    assert_eq!(rec["status"], 400);
}

#[test]
fn a_body_over_the_limit_is_a_413_with_one_record_whether_declared_or_buffered() {
    let config = PluginConfig {
        body_limit: 16,
        ..PluginConfig::default()
    };
    // Declared in content-length: refused at the headers.
    let mut run = Run::with(policy(vec![]), config.clone());
    assert_eq!(run.headers(&[("content-length", "17")], false), Next::Pause);
    assert_eq!(run.local_replies()[0].0, 413);
    run.seal();
    assert_eq!(run.record()["status"], 413);
    // Found while buffering.
    let mut run = Run::with(policy(vec![]), config);
    assert_eq!(run.request(BODY), Next::Pause);
    assert_eq!(run.local_replies().len(), 1);
    assert_eq!(run.local_replies()[0].0, 413);
    run.seal();
    let rec = run.record();
    assert_eq!(rec["status"], 413);
    assert_eq!(rec["outcome"], "error");
}

#[test]
fn a_stopped_workflow_is_a_503_with_one_stopped_record() {
    let mut p = policy(vec![]);
    p.workflows = vec![support_workflow(Oversight::Hic { sample_rate: 0.0 })];
    p.kill_switch = Some(crate::ir::KillSwitch {
        clause: Some("AIP-9".into()),
        admin_path: "/writ/kill".into(),
        token_sha256: "00".into(),
    });
    let mut run = Run::new(p);
    run.store
        .set(&crate::kill_switch::state_key("*"), b"S{}", 0)
        .unwrap();
    assert_eq!(run.headers(&[], false), Next::Pause);
    let replies = run.local_replies();
    assert_eq!(replies.len(), 1);
    assert_eq!(replies[0].0, crate::kill_switch::STOPPED_STATUS);
    run.seal();
    let rec = run.record();
    assert_eq!(rec["outcome"], "stopped");
    assert_eq!(rec["workflow"], "support");
    assert_eq!(rec["rules"][0]["clause"], "AIP-9");
}

#[test]
fn an_admin_call_is_answered_and_audited_as_its_own_event() {
    let mut p = policy(vec![]);
    p.kill_switch = Some(crate::ir::KillSwitch {
        clause: None,
        admin_path: "/writ/kill".into(),
        token_sha256: "00".into(),
    });
    let mut run = Run::new(p);
    let h = vec![
        (":method".to_string(), "GET".to_string()),
        (":path".to_string(), "/writ/kill".to_string()),
    ];
    let step = run
        .session
        .on_request_headers(h, true, &mut no_host_id, &run.store);
    run.keep(step);
    let replies = run.local_replies();
    assert_eq!(replies.len(), 1);
    assert_eq!(replies[0].0, 401, "no token");
    assert!(run.effects.iter().any(|e| matches!(
        e,
        Effect::LocalReply {
            hold_for_audit: false,
            ..
        }
    )));
    run.seal();
    let rec = run.record();
    assert_eq!(rec["event"], "kill_switch");
    assert_eq!(rec["request_id"], "writ-7-1780000000000000000");
    assert!(run.added(&format!("{};", metrics::REQUESTS.name)) == 1);
}

#[test]
fn a_deny_answers_with_the_rule_and_logs_one_denied_record() {
    let mut run = Run::new(policy(vec![model_deny()]));
    let body = r#"{"model":"other","messages":[]}"#;
    assert_eq!(run.request(body), Next::Pause);
    let replies = run.local_replies();
    assert_eq!(replies.len(), 1);
    assert_eq!(replies[0].0, 403);
    assert_eq!(replies[0].1["error"]["code"], "AIP-3.1");
    assert_eq!(replies[0].1["error"]["type"], "policy_violation");
    run.seal();
    let rec = run.record();
    assert_eq!(rec["outcome"], "denied");
    assert_eq!(rec["rules"][0]["clause"], "AIP-3.1");
}

#[test]
fn a_pii_deny_names_the_types_found_never_the_values() {
    let has_email = Expr::Has {
        subject: Text::Prompt,
        detectors: vec![0],
    };
    let deny = rule(
        "P-1",
        Phase::Request,
        has_email,
        Action::Deny {
            status: 400,
            message: "Remove personal data.".into(),
        },
    );
    let mut run = Run::new(policy(vec![deny]));
    let body = r#"{"model":"m","messages":[{"content":"mail a@b.example"}]}"#;
    run.request(body);
    let (status, reply) = run.local_replies().remove(0);
    assert_eq!(status, 400);
    assert_eq!(
        reply["error"]["message"],
        "Remove personal data. (found: email)"
    );
    run.seal();
    let rec = run.record();
    assert_eq!(rec["pii"]["email"], 1);
    assert!(!rec.to_string().contains("a@b.example"));
}

#[test]
fn the_budget_and_a_rule_answer_in_file_order() {
    // The budget first: its 429 answers, the model deny is overridden, and the ledger
    // admitted nothing (no reservation is held).
    let mut run = Run::new(policy(vec![budget(1), model_deny()]));
    run.request(r#"{"model":"other","max_tokens":10,"messages":[]}"#);
    assert_eq!(run.local_replies()[0].0, 429);
    assert_eq!(run.added(metrics::RESERVATIONS.name), 0);
    run.seal();
    let rec = run.record();
    assert_eq!(rec["outcome"], "denied");
    let effects: Vec<_> = rec["rules"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| (r["clause"].clone(), r["effect"].clone()))
        .collect();
    assert_eq!(
        effects,
        [
            ("AIP-4.2".into(), "enforced".into()),
            ("AIP-3.1".into(), "overridden".into())
        ]
    );

    // The deny first: it answers before the ledger is asked at all.
    let mut run = Run::new(policy(vec![model_deny(), budget(1)]));
    run.request(r#"{"model":"other","max_tokens":10,"messages":[]}"#);
    assert_eq!(run.local_replies()[0].0, 403);
    assert!(run.store.keys().is_empty());
    run.seal();
    assert_eq!(run.record()["rules"][0]["clause"], "AIP-3.1");

    // Under the cap: admitted, reserved, then settled from the reply's usage.
    let mut run = Run::new(policy(vec![budget(1_000_000_000), model_deny()]));
    assert_eq!(run.request(BODY), Next::Continue);
    assert_eq!(run.added(metrics::RESERVATIONS.name), 1);
    run.reply_headers(200, "application/json", false);
    run.reply_body(REPLY);
    assert_eq!(run.added(metrics::RESERVATIONS.name), 0);
    run.seal();
    let rec = run.record();
    assert_eq!(rec["tokens"]["prompt"], 3);
    assert_eq!(rec["cost_estimated"], false);
}

#[test]
fn an_upstream_error_releases_the_reservation_and_logs_one_record() {
    let mut run = Run::new(policy(vec![budget(1_000_000_000)]));
    assert_eq!(run.request(BODY), Next::Continue);
    assert_eq!(run.added(metrics::RESERVATIONS.name), 1);
    assert_eq!(run.reply_headers(503, "text/plain", true), Next::Continue);
    run.seal();
    assert_eq!(run.added(metrics::RESERVATIONS.name), 0, "released");
    let rec = run.record();
    assert_eq!(rec["status"], 503);
    assert!(rec.get("cost_micros").is_none_or(|c| c.is_null()));
}

#[test]
fn a_reply_that_cannot_be_redacted_is_a_502_with_one_record() {
    let redact = rule(
        "R-1",
        Phase::Response,
        Expr::Has {
            subject: Text::Response,
            detectors: vec![0],
        },
        Action::Redact { detectors: vec![0] },
    );
    let mut run = Run::new(policy(vec![redact]));
    assert_eq!(run.request(BODY), Next::Continue);
    let h = vec![
        (":status".to_string(), "200".to_string()),
        ("content-type".to_string(), "application/json".to_string()),
        ("content-encoding".to_string(), "gzip".to_string()),
    ];
    let step = run.session.on_response_headers(h, false, &run.store);
    run.keep(step);
    let replies = run.local_replies();
    assert_eq!(replies.len(), 1);
    assert_eq!(replies[0].0, 502);
    assert_eq!(replies[0].1["error"]["code"], "unredactable_reply");
    // The reply's body then passes untouched.
    assert_eq!(run.session.reply_body_need(true), Need::Pass);
    run.seal();
    let rec = run.record();
    assert_eq!(rec["status"], 502);
    assert_eq!(rec["outcome"], "error");
}

#[test]
fn a_host_failure_is_a_500_with_one_error_record() {
    let mut run = Run::new(policy(vec![budget(1_000_000_000)]));
    assert_eq!(run.request(BODY), Next::Continue);
    let step = run
        .session
        .host_failed("proxy_set_buffer_bytes", &run.store);
    assert_eq!(run.keep(step), Next::Pause);
    assert_eq!(run.local_replies()[0].0, 500);
    assert_eq!(run.added(metrics::RESERVATIONS.name), 0, "released");
    run.seal();
    let rec = run.record();
    assert_eq!(rec["outcome"], "error");
    assert_eq!(rec["status"], 500);
}

#[test]
fn a_request_answered_before_the_policy_ran_gets_its_record() {
    let mut run = Run::new(policy(vec![]));
    assert!(!run.session.started());
    let h = vec![(":path".to_string(), "/v1/chat/completions".to_string())];
    let mut host_id = || Some("envoy-id".to_string());
    run.session
        .on_unseen(h, &mut host_id, Some(401), "jwt_authn_access_denied");
    run.seal();
    let rec = run.record();
    assert_eq!(rec["outcome"], "denied");
    assert_eq!(rec["status"], 401);
    assert_eq!(rec["request_id"], "envoy-id");
}

/// Escalations of both phases and the oversight mode: each request hands off once.
#[test]
fn every_escalation_hands_off_exactly_once() {
    let config = PluginConfig {
        review_queue: Some(target("review")),
        ..PluginConfig::default()
    };
    let cases: Vec<(&str, Vec<Rule>, &str, &str)> = vec![
        // (case, rules, expected queue, expected clause)
        ("oversight mode", vec![], "oversight", ""),
        (
            "request rule",
            vec![escalate("E-1", Phase::Request)],
            "legal",
            "E-1",
        ),
        (
            "response rule",
            vec![escalate("E-2", Phase::Response)],
            "legal",
            "E-2",
        ),
        (
            "both phases",
            vec![
                escalate("E-1", Phase::Request),
                escalate("E-2", Phase::Response),
            ],
            "legal",
            "E-2",
        ),
    ];
    for (case, rules, queue, clause) in cases {
        let mut p = policy(rules);
        p.workflows = vec![support_workflow(Oversight::Hitl)];
        let mut run = Run::with(p, config.clone());
        assert_eq!(run.request(BODY), Next::Continue, "{case}");
        run.reply_headers(200, "application/json", false);
        run.reply_body(REPLY);
        run.seal();
        let handoffs = run.callouts("review");
        assert_eq!(handoffs.len(), 1, "{case}: {handoffs:#?}");
        assert_eq!(handoffs[0]["queue"], queue, "{case}");
        assert_eq!(handoffs[0]["clause"], clause, "{case}");
        assert_eq!(handoffs[0]["request_id"], "req-1", "{case}");
        assert_eq!(run.headers_set("x-writ-review-id"), 1, "{case}");
        assert_eq!(run.added(metrics::ESCALATIONS.name), 1, "{case}");
        let rec = run.record();
        assert_eq!(rec["escalation"]["queue"], queue, "{case}");
        assert_eq!(
            rec["escalation"]["review_id"], handoffs[0]["review_id"],
            "{case}"
        );
    }
}

#[test]
fn no_escalation_means_no_handoff() {
    let config = PluginConfig {
        review_queue: Some(target("review")),
        ..PluginConfig::default()
    };
    let mut p = policy(vec![]);
    p.workflows = vec![support_workflow(Oversight::Hic { sample_rate: 0.0 })];
    let mut run = Run::with(p, config);
    run.request(BODY);
    run.reply_headers(200, "application/json", false);
    run.reply_body(REPLY);
    run.seal();
    assert!(run.callouts("review").is_empty());
    assert_eq!(run.headers_set("x-writ-review-id"), 0);
    assert!(run.record().get("escalation").is_none_or(|e| e.is_null()));
}

/// With an audit sink, the answer waits for the sink: a 2xx lets it go, anything else
/// withholds it (503 `audit_unavailable` for a local reply, a reset for a forwarded one).
#[test]
fn the_audit_sink_holds_the_answer_until_it_stored_the_one_record() {
    let config = PluginConfig {
        audit_sink: Some(target("sink")),
        ..PluginConfig::default()
    };
    let posted = |effects: &[Effect]| -> Vec<String> {
        effects
            .iter()
            .filter_map(|e| match e {
                Effect::PostAuditSink { target, body } if target.cluster == "sink" => {
                    Some(String::from_utf8(body.clone()).unwrap())
                }
                _ => None,
            })
            .collect()
    };
    for (sink_status, sent) in [(Some(200), 403), (Some(500), 503), (None, 503)] {
        let mut run = Run::with(policy(vec![model_deny()]), config.clone());
        run.request(r#"{"model":"other","messages":[]}"#);
        let Some(Effect::LocalReply {
            status,
            body,
            headers,
            hold_for_audit: true,
        }) = run.effects.pop()
        else {
            panic!("a held local reply")
        };
        let held = Held::Local {
            status,
            body,
            headers,
        };
        let effects = run.session.hold_for_audit(held, &run.store).unwrap();
        let lines = posted(&effects);
        assert_eq!(lines.len(), 1);
        run.effects.extend(effects);
        let rec = run.record();
        assert_eq!(crate::audit::parse_log_line(&lines[0]).unwrap(), rec);
        let answer = run.session.on_audit_sink_answer(sink_status);
        let replies: Vec<u16> = answer
            .iter()
            .filter_map(|e| match e {
                Effect::LocalReply {
                    status,
                    hold_for_audit: false,
                    ..
                } => Some(*status),
                _ => None,
            })
            .collect();
        assert_eq!(replies, [sent], "{sink_status:?}");
        // Sealing again (on_log) logs nothing more.
        run.seal();
        run.record();
    }

    // A forwarded reply: held at its end, then resumed or reset.
    for (sink_status, expected) in [
        (Some(204), Effect::ResumeReply),
        (Some(503), Effect::ResetReply),
    ] {
        let mut run = Run::with(policy(vec![]), config.clone());
        run.request(BODY);
        let next = run.reply_headers(200, "application/json", true);
        assert!(
            run.session
                .hold_end_of_reply(next, false, &run.store)
                .is_none(),
            "not the end"
        );
        let effects = run
            .session
            .hold_end_of_reply(next, true, &run.store)
            .unwrap();
        assert_eq!(posted(&effects).len(), 1);
        run.effects.extend(effects);
        run.record();
        let answer = run.session.on_audit_sink_answer(sink_status);
        assert!(answer.contains(&expected), "{answer:?}");
    }

    // A reply that streams past unread loses its length, so the client cannot see its end
    // before the held final frame; without a sink the length stays.
    for (config, stripped) in [(config.clone(), 1), (PluginConfig::default(), 0)] {
        let mut run = Run::with(policy(vec![]), config);
        run.request(BODY);
        let h = vec![
            (":status".to_string(), "200".to_string()),
            ("content-type".to_string(), "text/plain".to_string()),
            ("content-length".to_string(), "2".to_string()),
        ];
        let step = run.session.on_response_headers(h, false, &run.store);
        assert_eq!(run.keep(step), Next::Continue);
        let removed = run
            .effects
            .iter()
            .filter(|e| matches!(e, Effect::RemoveHeader { name, .. } if name == "content-length"))
            .count();
        assert_eq!(removed, stripped);
    }

    // The sink cannot be called: withheld at once.
    let mut run = Run::with(policy(vec![]), config);
    run.request(BODY);
    let next = run.reply_headers(200, "application/json", true);
    run.session
        .hold_end_of_reply(next, true, &run.store)
        .unwrap();
    let answer = run.session.on_audit_sink_unreachable("BadArgument");
    assert!(answer.contains(&Effect::ResetReply));

    // Without a sink nothing is held.
    let mut run = Run::new(policy(vec![]));
    run.request(BODY);
    let next = run.reply_headers(200, "application/json", true);
    assert!(
        run.session
            .hold_end_of_reply(next, true, &run.store)
            .is_none()
    );
}

/// A fleet member's configuration (`docs/fleet.md`): leases of 1 EUR, no local allowance.
fn fleet_config() -> PluginConfig {
    PluginConfig {
        shared: Some(crate::fleet::FleetConfig {
            cluster: "etcd".into(),
            authority: "etcd".into(),
            slice_micros: 1_000_000,
            poll_ms: 1000,
            timeout_ms: 1000,
            local_allowance_micros: 0,
            return_idle_ms: 3000,
        }),
        ..PluginConfig::default()
    }
}

/// The store call the last step ended with, if it paused for one.
fn store_call(step: &Step) -> Option<crate::fleet::budget::Call> {
    match step.effects.last() {
        Some(Effect::StoreCall { path, body }) if step.next == Next::Pause => {
            Some(crate::fleet::budget::Call {
                path,
                body: body.clone(),
            })
        }
        _ => None,
    }
}

#[test]
fn a_fleet_request_pauses_for_a_lease_and_is_decided_again_on_the_answer() {
    let mut run = Run::with(policy(vec![budget(1_000_000_000)]), fleet_config());
    assert_eq!(run.headers(&[], false), Next::Pause);
    let step = run.session.on_request_body(BODY.as_bytes(), &run.store);
    // The instance holds nothing yet: the session asks the host for one store call.
    let mut call = store_call(&step).expect("a lease is asked for");
    run.keep(step);
    assert_eq!(run.session.stage(), Stage::Leasing);
    assert!(run.session.awaits_store());
    assert!(run.local_replies().is_empty());
    assert_eq!(run.added(metrics::RESERVATIONS.name), 0);
    // The store answers (as etcd does); the request is decided again and goes on.
    let mut etcd = crate::fleet::budget::tests::FakeEtcd::default();
    let mut answers = 0;
    let last = loop {
        let reply = etcd.answer(&call);
        answers += 1;
        let step = run.session.on_store_answer(reply.as_deref(), &run.store);
        match store_call(&step) {
            Some(c) => {
                call = c;
                run.keep(step);
            }
            None => break run.keep(step),
        }
    };
    assert!(answers <= 3, "{answers} store calls for one lease");
    assert_eq!(last, Next::Continue);
    assert_eq!(run.session.stage(), Stage::Forwarded);
    assert!(!run.session.awaits_store());
    assert_eq!(run.added(metrics::RESERVATIONS.name), 1);
    assert!(run.local_replies().is_empty());
    run.reply_headers(200, "application/json", false);
    run.reply_body(REPLY);
    run.seal();
    let rec = run.record();
    assert_eq!(rec["outcome"], "allowed");
    assert!(rec.get("degraded").is_none());
    // Settled: the ledger is listed for the tick to write back to the store.
    assert!(
        run.store.get(crate::fleet::budget::ACTIVE_KEY).is_some(),
        "settlement notes the ledger for the fleet store"
    );
}

#[test]
fn a_fleet_request_whose_store_is_down_is_a_503_with_one_record() {
    let mut run = Run::with(policy(vec![budget(1_000_000_000)]), fleet_config());
    run.headers(&[], false);
    let step = run.session.on_request_body(BODY.as_bytes(), &run.store);
    assert!(store_call(&step).is_some());
    run.keep(step);
    // No answer (a timeout, a 5xx): the budget fails closed, nothing is reserved.
    let step = run.session.on_store_answer(None, &run.store);
    assert!(store_call(&step).is_none());
    run.keep(step);
    let replies = run.local_replies();
    assert_eq!(replies.len(), 1);
    assert_eq!(replies[0].0, 503);
    assert_eq!(replies[0].1["error"]["code"], "spend_unavailable");
    assert_eq!(run.session.stage(), Stage::Replied);
    assert_eq!(run.added(metrics::RESERVATIONS.name), 0);
    assert!(crate::fleet::is_down(&run.store));
    run.seal();
    let rec = run.record();
    assert_eq!(rec["status"], 503);
    assert_eq!(rec["outcome"], "error");
    assert_eq!(
        rec["detail"],
        "fleet store unreachable; budget failed closed"
    );

    // A call the host refuses to send is the same: one 503, one record.
    let mut run = Run::with(policy(vec![budget(1_000_000_000)]), fleet_config());
    run.headers(&[], false);
    let step = run.session.on_request_body(BODY.as_bytes(), &run.store);
    run.keep(step);
    let step = run.session.on_store_unreachable("BadArgument", &run.store);
    run.keep(step);
    assert_eq!(run.local_replies()[0].0, 503);
    run.seal();
    assert_eq!(run.record()["outcome"], "error");
}

#[test]
fn an_admin_flip_in_a_fleet_is_queued_for_the_store() {
    let mut p = policy(vec![]);
    p.workflows = vec![support_workflow(Oversight::Hic { sample_rate: 0.0 })];
    p.kill_switch = Some(crate::ir::KillSwitch {
        clause: None,
        admin_path: "/writ/kill".into(),
        // sha256("test")
        token_sha256: "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08".into(),
    });
    let flip = |config: PluginConfig| {
        let mut run = Run::with(p.clone(), config);
        let h = vec![
            (":method".to_string(), "POST".to_string()),
            (":path".to_string(), "/writ/kill".to_string()),
            ("authorization".to_string(), "Bearer test".to_string()),
        ];
        let step = run
            .session
            .on_request_headers(h, false, &mut no_host_id, &run.store);
        run.keep(step);
        let step = run.session.on_request_body(
            br#"{"workflow":"support","action":"stop","reason":"incident"}"#,
            &run.store,
        );
        run.keep(step);
        assert_eq!(run.local_replies()[0].0, 200);
        run.seal();
        assert_eq!(run.record()["event"], "kill_switch");
        crate::fleet::kill::pending(&run.store)
    };
    // In a fleet the tick publishes it; alone, nothing is queued.
    assert_eq!(flip(fleet_config()), ["support"]);
    assert!(flip(PluginConfig::default()).is_empty());
}

#[test]
fn a_fleet_verdict_claims_its_review_in_the_store_and_any_instance_takes_it() {
    let mut p = policy(vec![]);
    p.workflows = vec![support_workflow(Oversight::Hitl)];
    p.kill_switch = Some(crate::ir::KillSwitch {
        clause: None,
        admin_path: "/writ/kill".into(),
        // sha256("test")
        token_sha256: "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08".into(),
    });
    let body = br#"{"review_id":"rev-9","reviewer":"bob","verdict":"approved","seconds":12}"#;
    // A verdict call on an instance that did not escalate `rev-9`: one store call, then
    // the answer decides.
    let post = |answers: &[Option<&[u8]>]| {
        let mut run = Run::with(p.clone(), fleet_config());
        let h = vec![
            (":method".to_string(), "POST".to_string()),
            (":path".to_string(), "/writ/admin/reviews".to_string()),
            ("authorization".to_string(), "Bearer test".to_string()),
        ];
        let step = run
            .session
            .on_request_headers(h, false, &mut no_host_id, &run.store);
        run.keep(step);
        let step = run.session.on_request_body(body, &run.store);
        let mut calls = Vec::new();
        let mut call = store_call(&step);
        run.keep(step);
        for answer in answers {
            let Some(c) = call.take() else { break };
            calls.push(serde_json::from_slice::<serde_json::Value>(&c.body).unwrap_or_default());
            let step = run.session.on_store_answer(*answer, &run.store);
            call = store_call(&step);
            run.keep(step);
        }
        run.seal();
        let recs: Vec<_> = run
            .records()
            .into_iter()
            .filter(|r| r["event"] == "review_verdict")
            .collect();
        assert_eq!(recs.len(), 1, "one record per verdict call: {recs:#?}");
        (run.local_replies(), calls, recs[0].clone())
    };
    let item = serde_json::json!({"workflow": "support", "request_id": "req-esc", "at": 5,
                                  "verdict": null});
    let prev = crate::fleet::etcd::b64(item.to_string().as_bytes());
    let won = format!(
        r#"{{"header":{{}},"succeeded":true,"responses":[{{"response_put":{{"prev_kv":{{"value":"{prev}","version":"1"}}}}}}]}}"#
    );
    let (replies, calls, rec) = post(&[Some(won.as_bytes())]);
    assert_eq!(calls.len(), 1);
    assert_eq!(
        calls[0]["compare"][0]["version"], "1",
        "marks the published item"
    );
    assert_eq!(replies[0].0, 200, "{:?}", replies);
    assert_eq!(replies[0].1["request_id"], "req-esc");
    assert_eq!(rec["event"], "review_verdict");
    assert_eq!(rec["verdict"]["escalated_request_id"], "req-esc");
    let reviewed = br#"{"header":{},"responses":[{"response_range":{"kvs":[{"value":"e30=","version":"2"}]}}]}"#;
    let (replies, _, rec) = post(&[Some(&reviewed[..])]);
    assert_eq!(replies[0].0, 409);
    assert_eq!(replies[0].1["error"]["code"], "already_reviewed");
    assert_eq!(rec["status"], 409);
    let absent = br#"{"header":{},"responses":[{"response_range":{"header":{}}}]}"#;
    let (replies, _, _) = post(&[Some(&absent[..])]);
    assert_eq!(replies[0].0, 404);
    let (replies, _, rec) = post(&[None]);
    assert_eq!(
        replies[0].0, 503,
        "the store down fails the verdict, to be retried"
    );
    assert_eq!(rec["outcome"], "error");
}

fn rate(measure: crate::ir::Measure, limit: f64) -> Rule {
    rule(
        "AIP-4.5",
        Phase::Request,
        Expr::Compare {
            left: Operand::Rate {
                measure,
                scope: Scope::User,
                window: crate::ir::RateWindow::Minute,
            },
            op: CmpOp::Gt,
            right: Operand::Const(Value::Num(limit)),
        },
        Action::Deny {
            status: 429,
            message: "rate limit".into(),
        },
    )
}

fn local_headers(run: &Run) -> Vec<(String, String)> {
    run.effects
        .iter()
        .find_map(|e| match e {
            Effect::LocalReply { headers, .. } => Some(headers.clone()),
            _ => None,
        })
        .unwrap_or_default()
}

#[test]
fn a_rate_limit_refuses_with_429_retry_after_and_one_record_naming_the_rule() {
    // The estimate (a few prompt tokens + 10 completion tokens) is over a limit of 5.
    let mut run = Run::new(policy(vec![rate(crate::ir::Measure::Tokens, 5.0)]));
    run.request(BODY);
    assert_eq!(run.local_replies()[0].0, 429);
    assert_eq!(run.local_replies()[0].1["error"]["code"], "AIP-4.5");
    let headers = local_headers(&run);
    let secs_left = 60 - (NOW / 1_000_000_000) % 60;
    assert!(headers.contains(&("retry-after".into(), secs_left.to_string())));
    assert!(headers.contains(&("x-ratelimit-limit-tokens".into(), "5".into())));
    assert!(headers.contains(&("x-ratelimit-remaining-tokens".into(), "5".into())));
    assert_eq!(
        run.added("writ_rate_limited_total;clause=AIP-4.5;measure=tokens"),
        1
    );
    run.seal();
    let rec = run.record();
    assert_eq!(rec["outcome"], "denied");
    assert_eq!(rec["rules"][0]["clause"], "AIP-4.5");
    assert_eq!(rec["rules"][0]["effect"], "enforced");
}

#[test]
fn an_admitted_request_carries_the_headers_and_settles_its_tokens_from_usage() {
    let mut run = Run::new(policy(vec![rate(crate::ir::Measure::Tokens, 1000.0)]));
    assert_eq!(run.request(BODY), Next::Continue);
    run.reply_headers(200, "application/json", false);
    assert_eq!(run.headers_set("x-ratelimit-limit-tokens"), 1);
    assert_eq!(run.headers_set("x-ratelimit-remaining-tokens"), 1);
    assert_eq!(run.headers_set("retry-after"), 0);
    run.reply_body(REPLY);
    run.seal();
    let start = (NOW / 1_000_000_000) as i64;
    let key = crate::rate_limit::counter_key(
        crate::ir::Measure::Tokens,
        Scope::User,
        None,
        crate::ir::RateWindow::Minute,
        start,
    );
    // Settled at the reply's usage (3 + 2), nothing left reserved.
    assert_eq!(
        crate::rate_limit::counter(&run.store, &key),
        Ok(crate::rate_limit::Counter {
            used: 5,
            reserved: 0
        })
    );
    assert_eq!(run.records().len(), 1);
}

#[test]
fn a_request_refused_after_the_rate_admission_is_taken_back() {
    // The limit admits it, the model deny (later in the file) refuses it: it never left,
    // so it does not count.
    let mut run = Run::new(policy(vec![
        rate(crate::ir::Measure::Requests, 10.0),
        model_deny(),
    ]));
    run.request(r#"{"model":"other","messages":[]}"#);
    assert_eq!(run.local_replies()[0].0, 403);
    assert!(local_headers(&run).is_empty(), "no rate headers on a 403");
    run.seal();
    let key = crate::rate_limit::counter_key(
        crate::ir::Measure::Requests,
        Scope::User,
        None,
        crate::ir::RateWindow::Minute,
        (NOW / 1_000_000_000) as i64,
    );
    assert_eq!(
        crate::rate_limit::counter(&run.store, &key).map(|c| c.used),
        Ok(0)
    );
}

thread_local! {
    static PROBES: std::cell::Cell<u32> = const { std::cell::Cell::new(0) };
}

/// A host that can retry, counting how often it was asked.
fn probe_yes() -> bool {
    PROBES.with(|p| p.set(p.get() + 1));
    true
}

#[test]
fn the_host_is_asked_whether_it_can_retry_only_when_the_request_is_forwarded() {
    let with_retry = || {
        let mut p = policy(vec![model_deny()]);
        let mut wf = support_workflow(Oversight::Hotl { threshold: 0.5 });
        wf.fallback = Some(crate::ir::Fallback {
            on: vec![crate::ir::Failure::Status5xx],
            steps: vec![crate::ir::FallbackStep::Model("m".into())],
        });
        p.workflows = vec![wf];
        p
    };
    // Denied: the property is never read.
    PROBES.with(|p| p.set(0));
    let mut run = Run::new(with_retry());
    run.session.ask_host_retry_with(probe_yes);
    assert_eq!(
        run.request(r#"{"model":"other","messages":[]}"#),
        Next::Pause
    );
    assert_eq!(PROBES.with(|p| p.get()), 0);
    // Forwarded: asked once, and the answer arms the retry (the fallback header).
    let mut run = Run::new(with_retry());
    run.session.ask_host_retry_with(probe_yes);
    assert_eq!(run.request(BODY), Next::Continue);
    assert_eq!(PROBES.with(|p| p.get()), 1);
    assert_eq!(run.headers_set(crate::fallback::FALLBACK_HEADER), 1);
    // A workflow without retries never asks.
    PROBES.with(|p| p.set(0));
    let mut run = Run::new(policy(vec![model_deny()]));
    run.session.ask_host_retry_with(probe_yes);
    assert_eq!(run.request(BODY), Next::Continue);
    assert_eq!(PROBES.with(|p| p.get()), 0);
    assert_eq!(run.headers_set(crate::fallback::FALLBACK_HEADER), 0);
}

#[test]
fn upstream_headers_change_only_when_the_request_is_forwarded() {
    let tokenise = rule(
        "P-1",
        Phase::Request,
        Expr::Has {
            subject: Text::Prompt,
            detectors: vec![0],
        },
        Action::Tokenise { detectors: vec![0] },
    );
    let with_length = |run: &mut Run, body: &str| {
        let len = body.len().to_string();
        assert_eq!(run.headers(&[("content-length", &len)], false), Next::Pause);
        run.body(body)
    };
    // Forwarded and tokenised: the length header goes (the body is re-framed) and the
    // upstream is asked for an uncompressed reply, once each.
    let mut run = Run::new(policy(vec![model_deny(), tokenise.clone()]));
    let body = r#"{"model":"m","messages":[{"content":"mail a@b.example"}]}"#;
    assert_eq!(with_length(&mut run, body), Next::Continue);
    assert_eq!(run.headers_set(stream::UPSTREAM_ACCEPT_ENCODING.0), 1);
    let removed = |run: &Run| {
        run.effects
            .iter()
            .filter(|e| matches!(e, Effect::RemoveHeader { name, .. } if name == "content-length"))
            .count()
    };
    assert_eq!(removed(&run), 1);
    // Refused: neither, and still exactly one record.
    let mut run = Run::new(policy(vec![model_deny(), tokenise]));
    assert_eq!(
        with_length(&mut run, r#"{"model":"x","messages":[]}"#),
        Next::Pause
    );
    assert_eq!(run.headers_set(stream::UPSTREAM_ACCEPT_ENCODING.0), 0);
    assert_eq!(removed(&run), 0);
    run.seal();
    assert_eq!(run.record()["outcome"], "denied");
}

#[test]
fn in_a_fleet_the_drift_alert_is_judged_on_the_fleets_counts_and_claimed_not_written() {
    use crate::fleet::counters;
    let mut p = policy(vec![]);
    let mut wf = support_workflow(Oversight::Hitl);
    wf.assumed_verification_rate = Some(0.1);
    p.workflows = vec![wf];
    let key = oversight::rate_key(
        "support",
        oversight::DriftConfig::default().window,
        (NOW / 1_000_000_000) as i64,
    );

    // Alone, one escalated reply is too small a sample to alert on.
    let mut run = Run::new(p.clone());
    run.request(BODY);
    run.reply_headers(200, "application/json", false);
    run.reply_body(REPLY);
    run.seal();
    assert!(run.records().iter().all(|r| r["event"] != "drift_alert"));

    // In a fleet whose other instances counted 100 escalated outputs, the same reply
    // crosses: the alert is queued for the tick to claim, not written by this request.
    let mut run = Run::with(p, fleet_config());
    let others = serde_json::json!({"header": {"revision": "2"}, "kvs": [{
        "key": crate::fleet::etcd::b64(b"writ/counters/other"),
        "value": crate::fleet::etcd::b64(
            serde_json::json!({key.clone(): {"total": 100, "escalated": 100}}).to_string().as_bytes()),
        "mod_revision": "2"}]});
    assert_eq!(
        counters::apply_poll(&run.store, others.to_string().as_bytes(), "me"),
        Some(1)
    );
    // A record the root context queued (a fleet-applied kill switch) joins this request's.
    let queued = r#"writ-audit {"event":"kill_switch","outcome":"stopped","detail":"applied from the fleet store (revision 3)"}"#;
    assert_eq!(
        counters::queue_records(&run.store, &[queued.to_string()]),
        Ok(())
    );
    run.request(BODY);
    run.reply_headers(200, "application/json", false);
    run.reply_body(REPLY);
    run.seal();
    let records = run.records();
    assert_eq!(records[0]["event"], "request");
    assert!(
        records.iter().all(|r| r["event"] != "drift_alert"),
        "{records:#?}"
    );
    assert_eq!(
        records.last().map(|r| r["detail"].clone()),
        Some(serde_json::json!(
            "applied from the fleet store (revision 3)"
        ))
    );
    assert!(counters::take_records(&run.store).is_empty(), "taken once");
    let proposed = counters::take_proposed(&run.store);
    assert_eq!(proposed.len(), 1);
    assert_eq!(proposed[0].id, format!("drift/{key}"));
    let line = crate::audit::parse_log_line(&proposed[0].lines[0]).unwrap();
    assert_eq!(line["event"], "drift_alert");
    assert!(
        line["detail"].as_str().unwrap().contains("(101 of 101)"),
        "the fleet's counts: {line}"
    );
    assert_eq!(
        run.added(metrics::DRIFT_ALERTS.name),
        0,
        "counted by the winner"
    );
    // The bucket is listed for the tick to publish, with this instance's own count.
    assert_eq!(
        counters::snapshot(&run.store)[&key]["total"],
        1,
        "an instance publishes its own counts, never the others'"
    );
}

#[path = "mcp_tests.rs"]
mod mcp_tests;
