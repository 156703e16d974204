//! Evaluator tests, written directly in IR so they do not depend on the front end.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use super::Identity;
use super::*;
use crate::ir::*;
use crate::request::{Request, parse_body};

fn s(v: &str) -> Value {
    Value::Str(v.into())
}

fn rule(clause: &str, condition: Expr, action: Action) -> Rule {
    Rule {
        clause: clause.into(),
        title: format!("rule {clause}"),
        phase: Phase::Request,
        condition,
        action,
        enforcement: Enforcement::Enforce,
        alert_at_percent: None,
        line: 1,
    }
}

fn deny(status: u16) -> Action {
    Action::Deny {
        status,
        message: "no".into(),
    }
}

fn model_not_in(models: &[&str]) -> Expr {
    Expr::Not(Box::new(Expr::In {
        operand: Operand::Field(Field::Model),
        set: models.iter().map(|m| s(m)).collect(),
    }))
}

fn header_eq(name: &str, value: &str) -> Expr {
    Expr::Compare {
        left: Operand::Field(Field::Header(name.into())),
        op: CmpOp::Eq,
        right: Operand::Const(s(value)),
    }
}

fn policy(workflows: Vec<Workflow>, rules: Vec<Rule>) -> Policy {
    Policy {
        name: "p".into(),
        version: "1.0.0".into(),
        source_sha256: "00".into(),
        currency: "EUR".into(),
        enforcement: Enforcement::Enforce,
        workflows,
        prices: vec![],
        detectors: vec![],
        rules,
        kill_switch: None,
    }
}

fn workflow(name: &str, matcher: Expr) -> Workflow {
    Workflow {
        name: name.into(),
        matcher,
        oversight: Oversight::Hitl,
        assumed_verification_rate: None,
        team: Some(crate::ir::Identity {
            header: "x-team".into(),
            trusted: false,
        }),
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

fn request(headers: &[(&str, &str)], body: &str) -> Request {
    let mut h: Vec<(String, String)> = vec![
        (":method".into(), "POST".into()),
        (":path".into(), "/v1/chat/completions".into()),
    ];
    h.extend(headers.iter().map(|(k, v)| (k.to_string(), v.to_string())));
    Request::from_headers(h, Some(parse_body(body.as_bytes(), 1 << 20).unwrap()))
}

fn eval(p: &Policy, r: &Request) -> Decision {
    Engine::new(p.clone()).unwrap().evaluate_request(r)
}

#[test]
fn model_allowlist_denies_unapproved_models_only() {
    let p = policy(
        vec![],
        vec![rule(
            "AIP-3.1",
            model_not_in(&["gpt-4o", "gpt-4o-mini"]),
            deny(403),
        )],
    );
    let d = eval(&p, &request(&[], r#"{"model":"gpt-3.5-turbo"}"#));
    assert_eq!(
        d.verdict,
        Verdict::Deny {
            status: 403,
            message: "no".into(),
            clause: "AIP-3.1".into(),
            rule: 0
        }
    );
    assert_eq!(d.fired.len(), 1);
    assert_eq!(d.fired[0].effect, Effect::Enforced);

    let d = eval(&p, &request(&[], r#"{"model":"gpt-4o"}"#));
    assert_eq!(d.verdict, Verdict::Continue);
    assert!(d.fired.is_empty());
}

#[test]
fn first_matching_workflow_sets_identity_and_scopes_rules() {
    let p = policy(
        vec![
            workflow("support", header_eq("x-workflow", "support")),
            workflow("catch-all", Expr::Const(true)),
        ],
        vec![rule(
            "AIP-1",
            Expr::And(vec![
                Expr::Compare {
                    left: Operand::Field(Field::Workflow),
                    op: CmpOp::Eq,
                    right: Operand::Const(s("support")),
                },
                Expr::Compare {
                    left: Operand::Field(Field::Team),
                    op: CmpOp::Ne,
                    right: Operand::Const(s("risk")),
                },
            ]),
            deny(403),
        )],
    );
    let r = request(
        &[("x-workflow", "support"), ("X-Team", "sales")],
        r#"{"model":"m"}"#,
    );
    let d = eval(&p, &r);
    assert_eq!(d.identity.workflow, Some(0));
    assert_eq!(d.identity.team.as_deref(), Some("sales"));
    assert!(matches!(d.verdict, Verdict::Deny { .. }));

    let r = request(
        &[("x-workflow", "support"), ("x-team", "risk")],
        r#"{"model":"m"}"#,
    );
    assert_eq!(eval(&p, &r).verdict, Verdict::Continue);

    let r = request(&[("x-team", "sales")], r#"{"model":"m"}"#);
    let d = eval(&p, &r);
    assert_eq!(d.identity.workflow, Some(1));
    assert_eq!(d.verdict, Verdict::Continue);
}

#[test]
fn workflow_matchers_do_not_see_the_body() {
    let p = policy(
        vec![workflow(
            "by-model",
            Expr::Compare {
                left: Operand::Field(Field::Model),
                op: CmpOp::Eq,
                right: Operand::Const(s("gpt-4o")),
            },
        )],
        vec![],
    );
    let d = eval(&p, &request(&[], r#"{"model":"gpt-4o"}"#));
    assert_eq!(d.identity, Identity::default());
}

#[test]
fn monitor_records_would_have_without_acting() {
    let mut r = rule("AIP-3.1", model_not_in(&["gpt-4o"]), deny(403));
    r.enforcement = Enforcement::Monitor;
    let p = policy(vec![], vec![r]);
    let d = eval(&p, &request(&[], r#"{"model":"other"}"#));
    assert_eq!(d.verdict, Verdict::Continue);
    assert_eq!(d.fired.len(), 1);
    assert!(d.fired[0].monitor);
    assert_eq!(d.fired[0].effect, Effect::WouldHave);
    assert_eq!(d.would_have_denied().count(), 1);

    // Policy-level monitor applies to rules that themselves say enforce.
    let mut p = policy(
        vec![],
        vec![rule("AIP-3.1", model_not_in(&["gpt-4o"]), deny(403))],
    );
    p.enforcement = Enforcement::Monitor;
    let d = eval(&p, &request(&[], r#"{"model":"other"}"#));
    assert_eq!(d.verdict, Verdict::Continue);
    assert_eq!(d.would_have_denied().count(), 1);
}

#[test]
fn deny_wins_over_transformations_and_stops() {
    let tag = Action::Tag {
        key: "cc".into(),
        value: "x".into(),
    };
    let p = policy(
        vec![],
        vec![
            rule("T-1", Expr::Const(true), tag.clone()),
            rule("A-1", Expr::Const(true), Action::Allow),
            rule("D-1", Expr::Const(true), deny(451)),
            rule("D-2", Expr::Const(true), deny(403)),
        ],
    );
    let d = eval(&p, &request(&[], r#"{"model":"m"}"#));
    assert!(matches!(
        d.verdict,
        Verdict::Deny { status: 451, ref clause, .. } if clause == "D-1"
    ));
    let clauses: Vec<_> = d.fired.iter().map(|f| f.clause.as_str()).collect();
    // Every matching rule is recorded; the first deny answers, the rest are overridden.
    assert_eq!(clauses, ["T-1", "A-1", "D-1", "D-2"]);
    assert_eq!(d.fired[0].effect, Effect::Overridden);
    assert_eq!(d.fired[1].effect, Effect::Overridden);
    assert_eq!(d.fired[2].effect, Effect::Enforced);
    assert_eq!(d.fired[3].effect, Effect::Overridden);

    // Without a deny, transformations are enforced (the adapter carries them out).
    let p = policy(vec![], vec![rule("T-1", Expr::Const(true), tag)]);
    let d = eval(&p, &request(&[], r#"{"model":"m"}"#));
    assert_eq!(d.verdict, Verdict::Continue);
    assert_eq!(d.fired[0].effect, Effect::Enforced);
    assert_eq!(d.fired[0].action, ActionKind::Tag);
}

#[test]
fn conditions_are_total_and_typed() {
    let gt = |field: Field, v: Value| Expr::Compare {
        left: Operand::Field(field),
        op: CmpOp::Gt,
        right: Operand::Const(v),
    };
    let p = policy(
        vec![],
        vec![
            rule("MT", gt(Field::MaxTokens, Value::Num(1000.0)), deny(400)),
            rule(
                "ST",
                Expr::Compare {
                    left: Operand::Field(Field::Stream),
                    op: CmpOp::Eq,
                    right: Operand::Const(Value::Bool(true)),
                },
                deny(400),
            ),
            rule(
                "MISSING",
                Expr::Or(vec![
                    header_eq("x-absent", "a"),
                    // Type mismatch: a string is never greater than a number.
                    gt(Field::Model, Value::Num(1.0)),
                ]),
                deny(400),
            ),
            rule(
                "PM",
                Expr::And(vec![
                    Expr::Compare {
                        left: Operand::Field(Field::Method),
                        op: CmpOp::Eq,
                        right: Operand::Const(s("POST")),
                    },
                    Expr::In {
                        operand: Operand::Field(Field::Path),
                        set: vec![s("/v1/embeddings")],
                    },
                ]),
                deny(404),
            ),
        ],
    );
    let d = eval(&p, &request(&[], r#"{"model":"m","max_tokens":500}"#));
    assert_eq!(d.verdict, Verdict::Continue);
    assert!(d.fired.is_empty());

    let d = eval(&p, &request(&[], r#"{"model":"m","max_tokens":5000}"#));
    assert!(matches!(d.verdict, Verdict::Deny { ref clause, .. } if clause == "MT"));

    let d = eval(&p, &request(&[], r#"{"model":"m","stream":true}"#));
    assert!(matches!(d.verdict, Verdict::Deny { ref clause, .. } if clause == "ST"));
}

#[test]
fn not_equal_is_the_negation_of_equal_even_when_missing() {
    let wf_ne = Expr::Compare {
        left: Operand::Field(Field::Workflow),
        op: CmpOp::Ne,
        right: Operand::Const(s("support")),
    };
    let p = policy(
        vec![workflow("support", header_eq("x-workflow", "support"))],
        vec![rule("AIP-1.2", wf_ne, deny(403))],
    );
    // No workflow matched: `workflow != "support"` holds, so unregistered traffic is refused.
    let d = eval(&p, &request(&[], r#"{"model":"m"}"#));
    assert!(matches!(d.verdict, Verdict::Deny { ref clause, .. } if clause == "AIP-1.2"));
    let d = eval(
        &p,
        &request(&[("x-workflow", "support")], r#"{"model":"m"}"#),
    );
    assert_eq!(d.verdict, Verdict::Continue);
    // A type mismatch is unequal too.
    assert!(compare(&Val::Str("a"), CmpOp::Ne, &Val::Num(1.0)));
    assert!(!compare(&Val::Str("a"), CmpOp::Eq, &Val::Num(1.0)));
}

#[test]
fn unimplemented_operands_are_reported_not_guessed() {
    let p = policy(
        vec![],
        vec![rule(
            "AIP-4.2",
            Expr::Compare {
                left: Operand::Spend {
                    scope: Scope::Team,
                    window: Window::Month,
                },
                op: CmpOp::Ge,
                right: Operand::Const(Value::Money(5_000_000_000)),
            },
            deny(429),
        )],
    );
    let d = eval(&p, &request(&[], r#"{"model":"m"}"#));
    assert_eq!(d.verdict, Verdict::Continue);
    assert!(d.fired.is_empty());
    assert_eq!(d.undecided.len(), 1);
    assert_eq!(d.undecided[0].reason, Unsupported::Spend);
}

#[test]
fn response_rules_are_not_evaluated_on_requests() {
    let mut r = rule("R-1", Expr::Const(true), deny(403));
    r.phase = Phase::Response;
    let p = policy(vec![], vec![r]);
    let d = eval(&p, &request(&[], r#"{"model":"m"}"#));
    assert_eq!(d.verdict, Verdict::Continue);
    assert!(d.fired.is_empty());
}

#[test]
fn has_delegates_to_the_detectors_over_every_body_string() {
    let mut p = policy(
        vec![],
        vec![rule(
            "AIP-2.1",
            Expr::Has {
                subject: Text::Prompt,
                detectors: vec![0],
            },
            deny(403),
        )],
    );
    p.detectors = vec![Detector {
        name: "email".into(),
        class: DetectorClass::Pii,
        kind: DetectorKind::Builtin("email".into()),
    }];
    let hit = r#"{"model":"m","metadata":{"note":["write to ann@example.com"]}}"#;
    let d = eval(&p, &request(&[], hit));
    assert!(matches!(d.verdict, Verdict::Deny { ref clause, .. } if clause == "AIP-2.1"));
    let d = eval(
        &p,
        &request(&[], r#"{"model":"m","messages":[{"content":"hi"}]}"#),
    );
    assert_eq!(d.verdict, Verdict::Continue);
}

#[test]
fn engine_load_refuses_bad_blobs() {
    assert!(matches!(
        Engine::load(b"nope"),
        Err(LoadError::Decode(DecodeError::BadMagic))
    ));
    let p = policy(vec![], vec![]);
    assert_eq!(Engine::load(&p.encode()).unwrap().policy, p);
}

/// Damaged bodies and odd headers: parsing refuses or evaluation decides, never a panic
/// (a smoke run of what a fuzzer would do against the request path).
#[test]
fn damaged_requests_never_panic() {
    let p = policy(
        vec![workflow("w", header_eq("x-workflow", "w"))],
        vec![
            rule("A", model_not_in(&["gpt-4o"]), deny(403)),
            rule(
                "B",
                Expr::Compare {
                    left: Operand::Field(Field::MaxTokens),
                    op: CmpOp::Ge,
                    right: Operand::Const(Value::Num(10.0)),
                },
                deny(400),
            ),
        ],
    );
    let engine = Engine::new(p).unwrap();
    let body = br#"{"model":"gpt-4o","max_tokens":5,"stream":true,"messages":[{"role":"user","content":"h\u00e9llo \"x\""}]}"#;
    let mut state = 0x9e37_79b9_7f4a_7c15_u64;
    for i in 0..3000 {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        let mut bad = body.to_vec();
        let at = (state % bad.len() as u64) as usize;
        match i % 3 {
            0 => bad[at] = (state >> 56) as u8,
            1 => bad.truncate(at),
            _ => bad.insert(at, b"{}[]\",:\\0e-"[(state >> 60) as usize % 11]),
        }
        let headers = vec![
            (
                ":path".to_string(),
                String::from_utf8_lossy(&bad[..at]).into_owned(),
            ),
            ("x-workflow".to_string(), "w".to_string()),
        ];
        if let Ok(json) = parse_body(&bad, 1 << 20) {
            let d = engine.evaluate_request(&Request::from_headers(headers, Some(json)));
            assert!(d.fired.len() <= 2);
        }
    }
}

#[test]
fn spend_facts_decide_spend_rules_and_the_first_deny_in_file_order_answers() {
    let spend_over = |limit: i64| Expr::Compare {
        left: Operand::Spend {
            scope: Scope::Team,
            window: Window::Month,
        },
        op: CmpOp::Gt,
        right: Operand::Const(Value::Money(limit)),
    };
    let p = policy(
        vec![],
        vec![
            rule("B-1", spend_over(100), deny(429)),
            rule("D-1", Expr::Const(true), deny(400)),
        ],
    );
    let engine = Engine::new(p.clone()).unwrap();
    let r = request(&[], r#"{"model":"m"}"#);
    let first = engine.evaluate_request(&r);
    assert!(matches!(first.verdict, Verdict::Deny { status: 400, .. }));
    assert_eq!(first.undecided.len(), 1);
    let spend = |_: Scope, _: Window| Some(150);
    let facts = Facts {
        spend: Some(&spend),
        rate: None,
        reply: None,
        ..Default::default()
    };
    let more = engine.evaluate(
        &r,
        first.identity.clone(),
        &facts,
        Phase::Request,
        Some(&[0]),
    );
    let mut merged = first.clone();
    merged.merge(more);
    assert!(matches!(merged.verdict, Verdict::Deny { status: 429, .. }));
    assert!(merged.undecided.is_empty());
    let effects: Vec<_> = merged
        .fired
        .iter()
        .map(|f| (f.clause.as_str(), f.effect))
        .collect();
    assert_eq!(
        effects,
        [("B-1", Effect::Enforced), ("D-1", Effect::Overridden)]
    );

    // Under the limit the spend rule does not fire and the later deny stands.
    let low = |_: Scope, _: Window| Some(50);
    let facts = Facts {
        spend: Some(&low),
        rate: None,
        reply: None,
        ..Default::default()
    };
    let mut merged = first.clone();
    merged.merge(engine.evaluate(
        &r,
        first.identity.clone(),
        &facts,
        Phase::Request,
        Some(&[0]),
    ));
    assert!(matches!(merged.verdict, Verdict::Deny { status: 400, .. }));
}

#[test]
fn response_facts_feed_status_headers_confidence_and_response_text() {
    let mut status = rule(
        "R-1",
        Expr::Compare {
            left: Operand::Field(Field::Status),
            op: CmpOp::Ge,
            right: Operand::Const(Value::Num(500.0)),
        },
        deny(502),
    );
    status.phase = Phase::Response;
    let mut conf = rule(
        "R-2",
        Expr::Compare {
            left: Operand::Confidence(ConfidenceSource::Header("x-c".into())),
            op: CmpOp::Lt,
            right: Operand::Const(Value::Num(0.5)),
        },
        Action::Escalate {
            queue: "q".into(),
            reason: "low".into(),
        },
    );
    conf.phase = Phase::Response;
    let p = policy(vec![], vec![status, conf]);
    let engine = Engine::new(p).unwrap();
    let r = request(&[], r#"{"model":"m"}"#);
    let headers = vec![("x-c".to_string(), "0.2".to_string())];
    let facts = Facts {
        spend: None,
        rate: None,
        reply: Some(ReplyView {
            status: 200,
            headers: &headers,
            body: None,
        }),
        ..Default::default()
    };
    let d = engine.evaluate(&r, Identity::default(), &facts, Phase::Response, None);
    assert_eq!(d.verdict, Verdict::Continue);
    let t = Transforms::of(&engine.policy, &d);
    assert_eq!(t.escalate, Some((1, "q".into(), "low".into())));
    let facts = Facts {
        spend: None,
        rate: None,
        reply: Some(ReplyView {
            status: 503,
            headers: &[],
            body: None,
        }),
        ..Default::default()
    };
    let d = engine.evaluate(&r, Identity::default(), &facts, Phase::Response, None);
    assert!(matches!(d.verdict, Verdict::Deny { status: 502, .. }));
}

#[test]
fn transforms_collect_enforced_actions_and_route_to_the_cheapest() {
    let price = |model: &str, input: i64, output: i64| Price {
        model: model.into(),
        input_per_mtok: input,
        output_per_mtok: output,
        cached_input_per_mtok: None,
    };
    let mut p = policy(
        vec![],
        vec![
            rule(
                "T-1",
                Expr::Const(true),
                Action::Tokenise {
                    detectors: vec![1, 0],
                },
            ),
            rule(
                "R-1",
                Expr::Const(true),
                Action::Redact { detectors: vec![2] },
            ),
            rule(
                "C-1",
                Expr::Const(true),
                Action::Route(RouteTarget::CheapestOf(vec![
                    "big".into(),
                    "unpriced".into(),
                    "small".into(),
                ])),
            ),
            rule(
                "C-2",
                Expr::Const(true),
                Action::Route(RouteTarget::Model("other".into())),
            ),
            rule(
                "G-1",
                Expr::Const(true),
                Action::Tag {
                    key: "cc".into(),
                    value: "x".into(),
                },
            ),
        ],
    );
    p.prices = vec![
        price("big", 2_500_000, 10_000_000),
        price("small", 150_000, 600_000),
    ];
    let mut monitored = rule(
        "R-2",
        Expr::Const(true),
        Action::Redact { detectors: vec![3] },
    );
    monitored.enforcement = Enforcement::Monitor;
    p.rules.push(monitored);
    let d = eval(&p, &request(&[], r#"{"model":"big"}"#));
    let t = Transforms::of(&p, &d);
    assert_eq!(t.tokenise, [0, 1]);
    assert_eq!(t.redact, [2], "monitor rules change nothing");
    assert_eq!(t.route.as_deref(), Some("small"), "the first route wins");
    assert_eq!(t.tags, [("cc".to_string(), "x".to_string())]);
    assert_eq!(
        route_target(&p, &RouteTarget::CheapestOf(vec!["a".into(), "b".into()])).as_deref(),
        Some("a"),
        "none priced: the first listed"
    );

    let mut resp = rule(
        "O-1",
        Expr::Has {
            subject: Text::Response,
            detectors: vec![4],
        },
        Action::Redact { detectors: vec![4] },
    );
    resp.phase = Phase::Response;
    assert!(is_streamed_redaction(&resp));
    p.rules.push(resp);
    assert_eq!(response_redactions(&p), [4]);
}

#[test]
fn pii_denies_count_and_name_types_only() {
    let mut p = policy(vec![], vec![]);
    p.detectors = vec![Detector {
        name: "email".into(),
        class: DetectorClass::Pii,
        kind: DetectorKind::Builtin("email".into()),
    }];
    let r = rule(
        "P-1",
        Expr::And(vec![
            Expr::Const(true),
            Expr::Has {
                subject: Text::Prompt,
                detectors: vec![0],
            },
        ]),
        deny(400),
    );
    assert_eq!(prompt_detectors(&r), [0]);
    p.rules.push(r);
    let engine = Engine::new(p).unwrap();
    let req = request(
        &[],
        r#"{"model":"m","messages":[{"content":"a@b.example and c@d.example"},{"content":"e@f.example"}]}"#,
    );
    let counts = count_in_request(&engine.scanner, &req, &[0]);
    assert_eq!(counts.get(&0), Some(&3));
    let msg = deny_message_with_types("Remove personal data.", &engine.scanner, &counts);
    assert_eq!(msg, "Remove personal data. (found: email)");
    assert!(!msg.contains("example"));
    assert!(matches!(
        engine.evaluate_request(&req).verdict,
        Verdict::Deny { status: 400, .. }
    ));
    let clean = request(&[], r#"{"model":"m","messages":[{"content":"hello"}]}"#);
    assert_eq!(engine.evaluate_request(&clean).verdict, Verdict::Continue);
}

#[test]
fn header_query_and_scanned_carriers_are_searched() {
    let has = |subject: Text| Expr::Has {
        subject,
        detectors: vec![0],
    };
    let mut wf = workflow("support", Expr::Const(true));
    wf.scan_headers = vec!["x-note".into()];
    wf.scan_query = true;
    let mut p = policy(
        vec![wf],
        vec![
            rule("H-1", has(Text::Header("x-other".into())), deny(401)),
            rule("Q-1", has(Text::Query), deny(402)),
            rule("P-1", has(Text::Prompt), deny(403)),
        ],
    );
    p.detectors = vec![Detector {
        name: "email".into(),
        class: DetectorClass::Pii,
        kind: DetectorKind::Builtin("email".into()),
    }];
    let status =
        |headers: &[(&str, &str)]| match eval(&p, &request(headers, r#"{"model":"m"}"#)).verdict {
            Verdict::Deny { clause, .. } => clause,
            Verdict::Continue => String::new(),
        };
    assert_eq!(status(&[]), "");
    // A second value of the header is searched too.
    assert_eq!(
        status(&[("x-other", "fine"), ("x-other", "ann@example.com")]),
        "H-1"
    );
    assert_eq!(
        status(&[(":path", "/v1/chat/completions?to=ann%40example.com")]),
        "Q-1"
    );
    // A scanned header counts as the prompt; an unscanned one does not.
    assert_eq!(status(&[("x-note", "ann@example.com")]), "P-1");
    assert_eq!(status(&[("x-unscanned", "ann@example.com")]), "");
}

fn tool_name_in(names: &[&str]) -> Expr {
    Expr::In {
        operand: Operand::Field(Field::ToolCallName),
        set: names.iter().map(|m| s(m)).collect(),
    }
}

fn argument_gt(pointer: &str, n: f64) -> Expr {
    Expr::Compare {
        left: Operand::Field(Field::ToolArgument(pointer.into())),
        op: CmpOp::Gt,
        right: Operand::Const(Value::Num(n)),
    }
}

/// The issue's two rules: an allowlist deny and a hold for large refunds.
fn tool_policy() -> Engine {
    let mut allow = rule(
        "T-1",
        Expr::Not(Box::new(tool_name_in(&[
            "lookup_order",
            "get_faq",
            "issue_refund",
        ]))),
        deny(403),
    );
    allow.phase = Phase::Response;
    let mut hold = rule(
        "T-2",
        Expr::And(vec![
            tool_name_in(&["issue_refund"]),
            argument_gt("/amount", 100.0),
        ]),
        Action::Hold {
            queue: "refunds".into(),
            reason: "over".into(),
        },
    );
    hold.phase = Phase::Response;
    let strip = rule(
        "T-3",
        Expr::Not(Box::new(Expr::In {
            operand: Operand::Field(Field::ToolName),
            set: vec![s("get_faq"), s("lookup_order")],
        })),
        Action::StripTool,
    );
    Engine::new(policy(vec![], vec![allow, hold, strip])).unwrap()
}

fn on_calls(engine: &Engine, calls: &[crate::tools::ToolCall]) -> Decision {
    let r = request(&[], r#"{"model":"m"}"#);
    let facts = Facts {
        reply: Some(ReplyView {
            status: 200,
            headers: &[],
            body: None,
        }),
        tool_calls: calls,
        ..Default::default()
    };
    engine.evaluate(&r, Identity::default(), &facts, Phase::Response, None)
}

#[test]
fn tool_call_rules_fire_per_call_and_never_without_calls() {
    use crate::tools::ToolCall;
    let engine = tool_policy();
    // No calls: `tool_call.name not in [...]` does not refuse a plain answer.
    let d = on_calls(&engine, &[]);
    assert_eq!(d.verdict, Verdict::Continue);
    assert!(d.fired.is_empty());
    // One unapproved call among approved ones: refused.
    let d = on_calls(
        &engine,
        &[
            ToolCall::new("a", "lookup_order", "{}"),
            ToolCall::new("b", "delete_account", "{}"),
        ],
    );
    assert!(matches!(d.verdict, Verdict::Deny { status: 403, .. }));
    // The same call must be a refund and over the limit: a small refund next to another
    // call with a large amount is not held.
    let d = on_calls(
        &engine,
        &[
            ToolCall::new("a", "issue_refund", r#"{"amount": 40}"#),
            ToolCall::new("b", "lookup_order", r#"{"amount": 500}"#),
        ],
    );
    assert!(d.fired.is_empty(), "{:?}", d.fired);
    let big = [
        ToolCall::new("a", "lookup_order", "{}"),
        ToolCall::new("b", "issue_refund", r#"{"amount": 250}"#),
    ];
    let d = on_calls(&engine, &big);
    assert_eq!(d.verdict, Verdict::Continue);
    let t = Transforms::of(&engine.policy, &d);
    assert_eq!(t.hold, Some((1, "refunds".into(), "over".into())));
    assert_eq!(d.fired[0].action, ActionKind::Hold);
    // Which calls the hold matched.
    let r = request(&[], r#"{"model":"m"}"#);
    let facts = Facts {
        tool_calls: &big,
        ..Default::default()
    };
    let matched = matching_tool_items(
        &engine.policy,
        &engine.scanner,
        &r,
        &Identity::default(),
        &facts,
        1,
    );
    assert_eq!(matched, vec![1]);
    // Arguments of the wrong type, or not JSON, compare as missing.
    for args in [
        r#"{"amount": "250"}"#,
        "not json",
        r#"{"amount": {"v": 250}}"#,
    ] {
        let d = on_calls(&engine, &[ToolCall::new("a", "issue_refund", args)]);
        assert!(d.fired.is_empty(), "{args}: {:?}", d.fired);
    }
}

#[test]
fn strip_tool_removes_only_the_tools_its_condition_holds_for() {
    let engine = tool_policy();
    let r = request(
        &[],
        r#"{"model":"m","tools":[{"type":"function","function":{"name":"get_faq"}},{"type":"function","function":{"name":"delete_account"}},{"type":"function","function":{"name":"wipe"}}]}"#,
    );
    let d = engine.evaluate_request(&r);
    let t = Transforms::of(&engine.policy, &d);
    assert_eq!(t.strip_tool, vec![2]);
    let names = stripped_tools(&engine.policy, &engine.scanner, &r, &d.identity, &t);
    assert_eq!(
        names,
        vec!["delete_account".to_string(), "wipe".to_string()]
    );
    // Only approved tools, or none at all: the rule does not fire.
    for body in [
        r#"{"model":"m","tools":[{"type":"function","function":{"name":"get_faq"}}]}"#,
        r#"{"model":"m"}"#,
    ] {
        let d = engine.evaluate_request(&request(&[], body));
        assert!(d.fired.is_empty(), "{body}");
    }
}
