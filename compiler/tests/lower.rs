//! Lowering: what the engine receives for a known policy.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use writ_plugin::ir::*;

const SRC: &str = r#"
policy "p" version "1.2.3" {
  owner "o@example.com"
  implements "ai-policy.md"
  enforcement monitor
}

workflow "support" {
  match header "X-Workflow" == "support"
  oversight HIC sample 5%
  assume verification_rate <= 10%
  identify team by trusted header "X-Team", user by header "x-user"
}

price "gpt-4o-mini" input 0.15 EUR output 0.60 cached 0.075 EUR per 1M tokens
price "gpt-4o" input 2.5 output 10 per 1M tokens

detector employee_id = regex "EMP-[0-9]{6}"
detector vault = regex "hvs\.[a-z]{4}" class secret

rule AIP-2.1 "No personal data" {
  on request
  when prompt has pii(phone, employee_id, email)
  then tokenise
  enforcement enforce
}

rule AIP-3.1 "Only approved models" {
  on request
  when model not in ["gpt-4o", "gpt-4o-mini", "gpt-4o"]
  then deny 403 "no"
}

rule AIP-4.2 "Budget" {
  on request
  when spend(team, month) > 5000.5 EUR
  then route to cheapest ["gpt-4o", "gpt-4o-mini"]
  alert at 80%
}

rule AIP-5.1 "Confidence" {
  on response
  when confidence(header "X-Conf") < 70%
  then escalate "q" reason "low"
}

rule AIP-7.1 "Audit" {
  on request
  then allow
}

rule AIP-2.4 "No vault tokens" {
  on request
  when prompt has secret(vault)
  then deny 400 "no secrets"
}

manual AIP-8.2 "Weekly review" {
  owner "gov@example.com"
  reason "people"
}
"#;

#[test]
fn lowers_names_to_indices_and_values_to_exact_units() {
    let c = writ_compiler::compile("p.policy", SRC).unwrap();
    let p = &c.policy;
    assert_eq!((p.name.as_str(), p.version.as_str()), ("p", "1.2.3"));
    assert_eq!(p.enforcement, Enforcement::Monitor);
    assert_eq!(p.currency, "EUR");
    assert_eq!(p.source_sha256.len(), 64);
    assert_eq!(c.owner, "o@example.com");
    assert_eq!(c.implements, "ai-policy.md");

    // Used built-ins sorted by name, then custom detectors.
    let names: Vec<&str> = p.detectors.iter().map(|d| d.name.as_str()).collect();
    assert_eq!(names, ["email", "phone", "employee_id", "vault"]);
    assert_eq!(p.detectors[3].class, DetectorClass::Secret);

    let w = &p.workflows[0];
    assert_eq!(
        w.matcher,
        Expr::Compare {
            left: Operand::Field(Field::Header("x-workflow".into())),
            op: CmpOp::Eq,
            right: Operand::Const(Value::Str("support".into())),
        }
    );
    assert_eq!(w.oversight, Oversight::Hic { sample_rate: 0.05 });
    assert_eq!(w.assumed_verification_rate, Some(0.1));
    assert_eq!(
        w.team,
        Some(Identity {
            header: "x-team".into(),
            trusted: true
        })
    );
    assert_eq!(w.user.as_ref().map(|u| u.trusted), Some(false));

    assert_eq!(p.prices[0].input_per_mtok, 150_000);
    assert_eq!(p.prices[0].output_per_mtok, 600_000);
    assert_eq!(p.prices[0].cached_input_per_mtok, Some(75_000));
    assert_eq!(p.prices[1].output_per_mtok, 10_000_000);

    let r = &p.rules;
    assert_eq!(
        r[0].condition,
        Expr::Has {
            subject: Text::Prompt,
            detectors: vec![0, 1, 2]
        }
    );
    assert_eq!(
        r[0].action,
        Action::Tokenise {
            detectors: vec![0, 1, 2]
        }
    );
    assert_eq!(r[0].enforcement, Enforcement::Enforce);
    assert_eq!(r[1].enforcement, Enforcement::Monitor);
    assert_eq!(
        r[1].condition,
        Expr::Not(Box::new(Expr::In {
            operand: Operand::Field(Field::Model),
            set: vec![
                Value::Str("gpt-4o".into()),
                Value::Str("gpt-4o-mini".into())
            ],
        }))
    );
    assert_eq!(
        r[2].condition,
        Expr::Compare {
            left: Operand::Spend {
                scope: Scope::Team,
                window: Window::Month
            },
            op: CmpOp::Gt,
            right: Operand::Const(Value::Money(5_000_500_000)),
        }
    );
    assert_eq!(r[2].alert_at_percent, Some(80));
    assert_eq!(
        r[2].action,
        Action::Route(RouteTarget::CheapestOf(vec![
            "gpt-4o".into(),
            "gpt-4o-mini".into()
        ]))
    );
    assert_eq!(r[3].phase, Phase::Response);
    assert_eq!(
        r[3].condition,
        Expr::Compare {
            left: Operand::Confidence(ConfidenceSource::Header("x-conf".into())),
            op: CmpOp::Lt,
            right: Operand::Const(Value::Num(0.7)),
        }
    );
    assert_eq!(r[4].condition, Expr::Const(true));
    assert_eq!(r[4].action, Action::Allow);
    assert_eq!(
        r[5].condition,
        Expr::Has {
            subject: Text::Prompt,
            detectors: vec![3]
        }
    );

    assert_eq!(c.rule_info.len(), r.len());
    assert_eq!(c.rule_info[0].clause, "AIP-2.1");
    assert_eq!(c.rule_info[0].line, r[0].line);
    assert_eq!(c.rule_info[0].column, 1);
    let start = c.rule_info[0].start as usize;
    assert!(SRC[start..].starts_with("rule AIP-2.1"));
    assert!(SRC[..c.rule_info[0].end as usize].ends_with('}'));
    assert_eq!(c.manual[0].clause, "AIP-8.2");
    assert_eq!(c.manual[0].owner, "gov@example.com");
}

#[test]
fn custom_detectors_ship_working_dfas() {
    use regex_automata::{
        Input,
        dfa::{dense::DFA, regex::Regex},
    };
    let c = writ_compiler::compile("p.policy", SRC).unwrap();
    let DetectorKind::Custom(d) = &c.policy.detectors[2].kind else {
        panic!("expected a custom detector");
    };
    assert_eq!(d.pattern, "EMP-[0-9]{6}");
    // Copy into 4-byte aligned storage, as the engine does.
    let load = |bytes: &[u8]| {
        let mut buf = vec![0u8; bytes.len() + 3];
        let off = buf.as_ptr().align_offset(4).min(3);
        buf[off..off + bytes.len()].copy_from_slice(bytes);
        DFA::from_bytes(&buf[off..off + bytes.len()])
            .unwrap()
            .0
            .to_owned()
    };
    let re = Regex::builder().build_from_dfas(load(&d.forward_dfa), load(&d.reverse_dfa));
    let m = re.find(Input::new("id EMP-123456 here")).unwrap();
    assert_eq!((m.start(), m.end()), (3, 13));
    assert!(re.find(Input::new("EMP-12345")).is_none());
}

#[test]
fn building_twice_gives_identical_bytes() {
    let a = writ_compiler::compile("p.policy", SRC).unwrap();
    let b = writ_compiler::compile("p.policy", SRC).unwrap();
    assert_eq!(a.policy.encode(), b.policy.encode());
    assert_eq!(Policy::decode(&a.policy.encode()).unwrap(), a.policy);
}

#[test]
fn warnings_are_returned_with_a_successful_compile() {
    let src = SRC.replace("identify team by trusted header", "identify team by header");
    let c = writ_compiler::compile("p.policy", &src).unwrap();
    assert_eq!(c.warnings.0.len(), 1, "{:?}", c.warnings);
    let rendered = c.warnings.render("p.policy", &src);
    assert!(rendered.starts_with("warning[W0003]"), "{rendered}");
    assert_eq!(c.warnings.0[0].code.id(), "W0003");
}

#[test]
fn errors_are_all_reported_typed_and_render() {
    let src = SRC
        .replace("gpt-4o-mini\"]\n  alert", "gpt-4o-mni\"]\n  alert")
        .replace("pii(phone,", "pii(phon,");
    let errs = writ_compiler::compile("p.policy", &src).unwrap_err();
    assert_eq!(errs.0.len(), 2, "{errs:#?}");
    let codes: Vec<&str> = errs.0.iter().map(|d| d.code.id()).collect();
    assert_eq!(codes, ["E0103", "E0603"]);
    let rendered = errs.render("p.policy", &src);
    assert!(rendered.starts_with("error[E0103]: unknown detector `phon`"));
    assert!(rendered.contains("--> p.policy:"));
    assert!(rendered.contains("error[E0603]"));
}

#[test]
fn scan_carriers_and_header_and_query_subjects_lower() {
    let src = r#"
policy "p" version "1.0.0" {
  owner "o@example.com"
  implements "ai-policy.md"
}

workflow "support" {
  match header "x-workflow" == "support"
  scan headers ["X-Customer-Note", "x-ticket", "x-customer-note"]
  scan query
}

rule AIP-2.1 "No personal data in notes" {
  on request
  when header "X-Customer-Note" has pii(email) or query has secret(github_token)
  then tokenise pii(email)
}
"#;
    let c = writ_compiler::compile("p.policy", src).unwrap();
    let w = &c.policy.workflows[0];
    assert_eq!(w.scan_headers, ["x-customer-note", "x-ticket"]);
    assert!(w.scan_query);
    let Expr::Or(parts) = &c.policy.rules[0].condition else {
        panic!("{:?}", c.policy.rules[0].condition)
    };
    assert!(
        matches!(&parts[0], Expr::Has { subject: Text::Header(h), .. } if h == "x-customer-note")
    );
    assert!(matches!(
        &parts[1],
        Expr::Has {
            subject: Text::Query,
            ..
        }
    ));
    // `writ fmt` prints the new forms back, and they parse to the same policy.
    let formatted = writ_compiler::format(src).unwrap();
    assert!(
        formatted.contains("scan headers [\"X-Customer-Note\", \"x-ticket\", \"x-customer-note\"]"),
        "{formatted}"
    );
    assert!(formatted.contains("scan query"));
    assert!(
        formatted.contains(
            "when header \"X-Customer-Note\" has pii(email) or query has secret(github_token)"
        ),
        "{formatted}"
    );
    let again = writ_compiler::compile("p.policy", &formatted).unwrap();
    assert_eq!(again.policy.workflows, c.policy.workflows);
    assert_eq!(again.policy.rules[0].condition, c.policy.rules[0].condition);
    assert_eq!(again.policy.rules[0].action, c.policy.rules[0].action);
}

/// `has pii.eu` and `redact government_id(…)` lower to exactly the group's built-ins, and
/// `has pii` covers every personal-data built-in and the policy's own.
#[test]
fn detector_groups_lower_to_their_builtins() {
    let src = r#"
policy "p" version "1.0.0" {
  owner "o@example.com"
  implements "ai-policy.md"
}

detector employee_id = regex "EMP-[0-9]{6}"

rule AIP-1 "EU identifiers" {
  on request
  when prompt has pii.eu
  then tokenise government_id(uk_nino, us_ssn)
}

rule AIP-2 "All personal data" {
  on request
  when prompt has pii
  then deny 400 "no"
}
"#;
    let c = writ_compiler::compile("p.policy", src).unwrap();
    let p = &c.policy;
    let names = |ids: &[u16]| -> Vec<String> {
        let mut v: Vec<String> = ids
            .iter()
            .map(|&i| p.detectors[usize::from(i)].name.clone())
            .collect();
        v.sort();
        v
    };
    let mut eu: Vec<String> = writ_plugin::detect::class_members("pii.eu")
        .unwrap()
        .into_iter()
        .map(String::from)
        .collect();
    eu.sort();
    assert!(eu.len() >= 10);
    let Expr::Has { detectors, .. } = &p.rules[0].condition else {
        panic!("{:?}", p.rules[0].condition)
    };
    assert_eq!(names(detectors), eu);
    let Action::Tokenise { detectors } = &p.rules[0].action else {
        panic!()
    };
    assert_eq!(names(detectors), ["uk_nino", "us_ssn"]);
    let Expr::Has { detectors, .. } = &p.rules[1].condition else {
        panic!()
    };
    let all_pii = writ_plugin::detect::class_members("pii").unwrap().len();
    assert_eq!(detectors.len(), all_pii + 1);
    assert!(names(detectors).contains(&"employee_id".to_string()));
}

#[test]
fn operating_model_statements_lower_and_format_canonically() {
    let src = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../tests/ui/clean/operating_model.policy"),
    )
    .unwrap();
    let c = writ_compiler::compile("p.policy", &src).unwrap();
    let w = &c.policy.workflows[0];
    assert_eq!(w.kill_points.len(), 2);
    let cost = &w.kill_points[0];
    assert_eq!(cost.metric, KillMetric::CostPerTransaction);
    assert!((cost.threshold - 0.5).abs() < 1e-12);
    assert!(!cost.inclusive && cost.stop);
    assert_eq!(
        (cost.window, cost.buckets, cost.min_requests),
        (Window::Day, 7, 20)
    );
    assert_eq!(cost.text, "cost_per_transaction > 0.50 EUR over 7 days");
    let rate = &w.kill_points[1];
    assert_eq!(rate.metric, KillMetric::VerificationRate);
    assert!(rate.inclusive && !rate.stop);
    assert_eq!(
        (rate.window, rate.buckets, rate.min_requests),
        (Window::Hour, 24, 50)
    );
    let rs = w.review_signals.as_ref().unwrap();
    assert_eq!(rs.median_review_secs_below, Some(120.0));
    assert_eq!(rs.approval_rate_above, Some(0.98));
    assert_eq!(rs.reviewer_share_above, Some(0.6));
    assert_eq!(rs.min_reviews, 5);
    assert!(w.handoff_output);
    // The formatter keeps every statement, and its output is a fixed point.
    let once = writ_compiler::format(&src).unwrap();
    for line in [
        "kill_point cost_per_transaction > 0.50 EUR over 7 days after 20 requests then stop",
        "kill_point verification_rate >= 0.4 over 24 hours",
        "review_signals after 5 reviews { median_review_time < 2m, approval_rate > 98%, reviewer_share > 60% }",
        "handoff includes output",
    ] {
        assert!(once.contains(line), "{line} in:\n{once}");
    }
    assert_eq!(writ_compiler::format(&once).unwrap(), once);
}
