//! The same decision in three policy engines, on the same inputs: "the model is in the
//! workflow's approved set, and the team's month-to-date spend plus this request's
//! estimate is within the 5,000 EUR budget".
//!
//! - writ: the two rules as a `.policy`, compiled to IR and run by `writ_plugin`'s native
//!   evaluator (workflow and team resolved from headers, spend supplied as the adapter
//!   supplies it: settled + reserved, this request's estimate included);
//! - Rego, evaluated by `regorus` (the Rust OPA interpreter);
//! - Cedar, evaluated by `cedar-policy`.
//!
//! Two variants each: `decide` with the input already in the engine's own structure, and
//! `from_json` with the input parsed from JSON first (what a sidecar or ext_authz call has
//! to do). Amounts are integer micro-euros everywhere. Every engine must allow the request;
//! the bench checks before it measures.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::hint::black_box;
use std::str::FromStr;

use criterion::{Criterion, criterion_group, criterion_main};
use writ_benches::fixtures;
use writ_plugin::eval::{self, Facts, Verdict};
use writ_plugin::ir::{Micros, Phase, Scope, Window};
use writ_plugin::request::{Request, parse_body};

const WRIT: &str = r#"
policy "peer" version "1.0.0" {
  owner       "bench@example.com"
  implements  "ai-policy.md"
  currency    EUR
}

workflow "support-assistant" {
  match header "x-workflow" == "support-assistant"
  identify team by trusted header "x-jwt-team", user by trusted header "x-jwt-sub"
}

price "gpt-4o-mini" input 0.15 EUR output 0.60 EUR per 1M tokens
price "gpt-4o" input 2.50 EUR output 10.00 EUR per 1M tokens

rule P-1 "Only approved models" {
  on request
  when model not in ["gpt-4o-mini", "gpt-4o"]
  then deny 403 "Model not approved."
}

rule P-2 "Monthly budget per team" {
  on request
  when spend(team, month) > 5000 EUR
  then deny 429 "Budget reached."
}
"#;

const REGO: &str = r#"
package writ

import rego.v1

default allow := false

approved := {"support-assistant": {"gpt-4o-mini", "gpt-4o"}}

budget_micros := 5000000000

allow if {
	approved[input.workflow][input.model]
	data.spend[input.team] + input.estimate_micros <= budget_micros
}
"#;

const CEDAR: &str = r#"
permit (
  principal,
  action == Action::"invoke",
  resource in ModelSet::"support-assistant"
)
when { context.spend_micros + context.estimate_micros <= 5000000000 };
"#;

const CEDAR_ENTITIES: &str = r#"[
  {"uid": {"type": "Model", "id": "gpt-4o-mini"}, "attrs": {}, "parents": [{"type": "ModelSet", "id": "support-assistant"}]},
  {"uid": {"type": "Model", "id": "gpt-4o"}, "attrs": {}, "parents": [{"type": "ModelSet", "id": "support-assistant"}]},
  {"uid": {"type": "ModelSet", "id": "support-assistant"}, "attrs": {}, "parents": []},
  {"uid": {"type": "Team", "id": "team-billing"}, "attrs": {}, "parents": []}
]"#;

/// Month-to-date spend of the team and this request's estimate, micro-euros.
const SPEND: Micros = 1_234_000_000;
const ESTIMATE: Micros = 480;

fn bench(c: &mut Criterion) {
    let mut g = c.benchmark_group("peers");

    // writ
    let compiled = fixtures::compile("peer.policy", WRIT).unwrap();
    let policy = &compiled.policy;
    let scanner = writ_plugin::detect::Scanner::new(&policy.detectors).unwrap();
    let headers: Vec<(String, String)> = [
        ("x-workflow", "support-assistant"),
        ("x-jwt-team", "team-billing"),
        ("x-jwt-sub", "agent-17"),
        ("content-type", "application/json"),
    ]
    .iter()
    .map(|(k, v)| ((*k).to_string(), (*v).to_string()))
    .collect();
    let body = br#"{"model":"gpt-4o-mini","max_tokens":512}"#;
    let spend = |scope: Scope, window: Window| -> Option<Micros> {
        (scope == Scope::Team && window == Window::Month).then_some(SPEND + ESTIMATE)
    };
    let writ_decide = |req: &Request| {
        let identity = eval::identify(policy, req);
        let facts = Facts {
            spend: Some(&spend),
            rate: None,
            reply: None,
            ..Default::default()
        };
        eval::evaluate(
            policy,
            &scanner,
            req,
            identity,
            &facts,
            Phase::Request,
            None,
        )
    };
    let req = Request::from_headers(headers.clone(), Some(parse_body(body, 1 << 20).unwrap()));
    let d = writ_decide(&req);
    assert!(matches!(d.verdict, Verdict::Continue), "writ denied: {d:?}");
    assert!(d.undecided.is_empty(), "writ left rules undecided: {d:?}");
    g.bench_function("writ native/decide", |b| {
        b.iter(|| writ_decide(black_box(&req)))
    });
    g.bench_function("writ native/from_json", |b| {
        b.iter(|| {
            let r = Request::from_headers(
                headers.clone(),
                Some(parse_body(black_box(body), 1 << 20).unwrap()),
            );
            writ_decide(&r)
        })
    });

    // Rego (regorus)
    let input_json = format!(
        r#"{{"workflow":"support-assistant","team":"team-billing","user":"agent-17","model":"gpt-4o-mini","estimate_micros":{ESTIMATE}}}"#
    );
    let mut rego = regorus::Engine::new();
    rego.add_policy("writ.rego".into(), REGO.into()).unwrap();
    rego.add_data_json(&format!(r#"{{"spend":{{"team-billing":{SPEND}}}}}"#))
        .unwrap();
    let input = regorus::Value::from_json_str(&input_json).unwrap();
    rego.set_input(input.clone());
    assert_eq!(
        rego.eval_rule("data.writ.allow".into()).unwrap(),
        regorus::Value::from(true)
    );
    g.bench_function("rego regorus/decide", |b| {
        b.iter(|| {
            rego.set_input(input.clone());
            rego.eval_rule("data.writ.allow".into()).unwrap()
        })
    });
    g.bench_function("rego regorus/from_json", |b| {
        b.iter(|| {
            rego.set_input_json(black_box(&input_json)).unwrap();
            rego.eval_rule("data.writ.allow".into()).unwrap()
        })
    });

    // Cedar
    use cedar_policy::{Authorizer, Context, Decision, Entities, EntityUid, PolicySet};
    let policies = PolicySet::from_str(CEDAR).unwrap();
    let entities = Entities::from_json_str(CEDAR_ENTITIES, None).unwrap();
    let authorizer = Authorizer::new();
    let principal = EntityUid::from_str(r#"Team::"team-billing""#).unwrap();
    let action = EntityUid::from_str(r#"Action::"invoke""#).unwrap();
    let resource = EntityUid::from_str(r#"Model::"gpt-4o-mini""#).unwrap();
    let ctx_json = format!(
        r#"{{"workflow":"support-assistant","spend_micros":{SPEND},"estimate_micros":{ESTIMATE}}}"#
    );
    let context = Context::from_json_str(&ctx_json, None).unwrap();
    let request = |context: Context| {
        cedar_policy::Request::new(
            principal.clone(),
            action.clone(),
            resource.clone(),
            context,
            None,
        )
        .unwrap()
    };
    let r = authorizer.is_authorized(&request(context.clone()), &policies, &entities);
    assert_eq!(r.decision(), Decision::Allow, "{r:?}");
    g.bench_function("cedar cedar-policy/decide", |b| {
        b.iter(|| {
            authorizer
                .is_authorized(&request(context.clone()), &policies, &entities)
                .decision()
        })
    });
    g.bench_function("cedar cedar-policy/from_json", |b| {
        b.iter(|| {
            let context = Context::from_json_str(black_box(&ctx_json), None).unwrap();
            authorizer
                .is_authorized(&request(context), &policies, &entities)
                .decision()
        })
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
