//! Per-request cost of the policy decision for `support-assistant` on the 4 KB chat
//! request with PII:
//!
//! - natively, with `writ_plugin`'s evaluator: the decision alone (parse the body, resolve
//!   workflow and identity, evaluate every request rule with a spend total known), then the
//!   decision plus the tokenising rewrite of the body — the engine's work without a host;
//! - a naive filter's work for comparison: `serde_json` parse + re-serialise of the body;
//! - the whole exchange (request headers, body, upstream reply, response headers and body
//!   with restoration) through the artifact in writ's wasmtime host (`Vm::http_request`),
//!   next to the same exchange through the pass-through filter, so the difference is the
//!   policy's own cost inside wasm.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use writ_benches::{fixtures, payload, upstream};
use writ_plugin::eval::{self, Engine, Facts, Transforms};
use writ_plugin::ir::{Micros, Phase, Scope, Window};
use writ_plugin::request::{Request, parse_body};
use writ_plugin::tokenise::{Vault, nonce, rewrite_request};
use writ_runtime::{Host, HostConfig, RequestSpec, UpstreamReply};

fn headers() -> Vec<(String, String)> {
    payload::HEADERS
        .iter()
        .map(|(k, v)| ((*k).to_string(), (*v).to_string()))
        .collect()
}

fn reply_for(body: &[u8]) -> Vec<u8> {
    format!(
        "{{\"id\":\"chatcmpl-bench\",\"object\":\"chat.completion\",\"created\":1,\"model\":\"gpt-4o-mini\",\
         \"choices\":[{{\"index\":0,\"message\":{{\"role\":\"assistant\",\"content\":\"{}\"}},\"finish_reason\":\"stop\"}}],\
         \"usage\":{{\"prompt_tokens\":1000,\"completion_tokens\":90,\"total_tokens\":1090}}}}",
        upstream::echo(body)
    )
    .into_bytes()
}

fn bench(c: &mut Criterion) {
    let body = payload::chat_request(false);
    let compiled = fixtures::compile(
        "support-assistant",
        &fixtures::policy_source("support-assistant").unwrap(),
    )
    .unwrap();
    let engine = Engine::new(compiled.policy.clone()).unwrap();
    let policy = &compiled.policy;
    let scanner = &engine.scanner;
    let spend = |_: Scope, _: Window| -> Option<Micros> { Some(1_234_000_000) };

    // `one_pass`: the body's one detection pass (issue 14 §2) runs first, as in the
    // session, so the rules and the rewrite read it; without it every `prompt has …` scans.
    let decide_with = |body: &[u8], one_pass: bool| {
        let json = parse_body(body, 1 << 20).unwrap();
        let mut req = Request::from_headers(headers(), Some(json));
        if one_pass {
            req.detection = engine.detect(body);
        }
        let identity = eval::identify(policy, &req);
        let facts = Facts {
            spend: Some(&spend),
            rate: None,
            reply: None,
            ..Default::default()
        };
        let d = eval::evaluate(
            policy,
            scanner,
            &req,
            identity,
            &facts,
            Phase::Request,
            None,
        );
        (req, d)
    };
    let decide = |body: &[u8]| decide_with(body, false);
    // Sanity: the request is admitted and tokenised, not denied, the same either way.
    let (_, d) = decide(&body);
    assert_eq!(d, decide_with(&body, true).1);
    let t = Transforms::of(policy, &d);
    assert!(!t.tokenise.is_empty(), "no tokenisation decided: {d:?}");

    let mut g = c.benchmark_group("eval");
    g.throughput(Throughput::Bytes(body.len() as u64));
    g.bench_function("native/decide", |b| b.iter(|| decide(black_box(&body))));
    g.bench_function("native/decide+tokenise", |b| {
        b.iter(|| {
            let (_, d) = decide(black_box(&body));
            let t = Transforms::of(policy, &d);
            let mut vault = Vault::new(nonce(b"req-1", 1, 0));
            rewrite_request(&body, scanner, &t.tokenise, &t.redact, &mut vault).unwrap()
        })
    });
    g.bench_function("native/decide (one pass)", |b| {
        b.iter(|| decide_with(black_box(&body), true))
    });
    g.bench_function("native/decide+tokenise (one pass)", |b| {
        b.iter(|| {
            let (req, d) = decide_with(black_box(&body), true);
            let t = Transforms::of(policy, &d);
            let mut vault = Vault::new(nonce(b"req-1", 1, 0));
            writ_plugin::tokenise::rewrite_request_with(
                &body,
                scanner,
                req.detection.as_ref(),
                &t.tokenise,
                &t.redact,
                &mut vault,
            )
            .unwrap()
        })
    });
    // One pass of every detector of the policy over every string of the body: the unit the
    // two lines above are made of (each `prompt has …` rule and the tokeniser make a pass).
    let ids = scanner.all_ids();
    g.bench_function("native/one_detector_pass", |b| {
        b.iter(|| {
            let mut hits = Vec::new();
            let mut n = 0usize;
            writ_plugin::json_strings::visit(
                black_box(&body),
                &mut |_: &writ_plugin::json_strings::Path<'_>,
                      l: writ_plugin::json_strings::Leaf<'_>,
                      _: std::ops::Range<usize>| {
                    if let writ_plugin::json_strings::Leaf::Str(s) = l {
                        scanner.scan(s, &ids, &mut hits);
                        n += hits.len();
                    }
                },
            )
            .unwrap();
            n
        })
    });
    g.bench_function("native/serde_json_roundtrip (naive filter)", |b| {
        b.iter(|| {
            let v: serde_json::Value = serde_json::from_slice(black_box(&body)).unwrap();
            serde_json::to_vec(&v).unwrap()
        })
    });

    let spec = RequestSpec::new("POST", "/v1/chat/completions", payload::HEADERS, &body);
    let run = |vm: &mut writ_runtime::Vm| {
        let ex = vm.http_request(&spec, |up| {
            UpstreamReply::new(
                200,
                &[
                    ("content-type", "application/json"),
                    ("x-model-confidence", "0.93"),
                ],
                &reply_for(&up.body),
            )
        });
        assert_eq!(ex.client_response.status, 200, "{:?}", ex.error);
        ex
    };
    let host = Host::new(HostConfig::new(
        fixtures::artifact("support-assistant").unwrap(),
    ))
    .unwrap();
    let mut vm = host.vm().unwrap();
    let ex = run(&mut vm);
    let sent = ex
        .upstream_request
        .as_ref()
        .map(|u| String::from_utf8_lossy(&u.body).into_owned());
    assert!(
        sent.as_deref()
            .is_some_and(|s| !s.contains("jane.doe@example.com")),
        "the upstream saw the raw e-mail: {sent:?}"
    );
    g.bench_function("wasmtime/full_exchange/writ", |b| b.iter(|| run(&mut vm)));
    let pass = Host::new(HostConfig::new(fixtures::passthrough_wasm().unwrap())).unwrap();
    let mut pvm = pass.vm().unwrap();
    g.bench_function("wasmtime/full_exchange/passthrough", |b| {
        b.iter(|| run(&mut pvm))
    });
    g.finish();
    ablation(c, &spec);
}

/// The policy's source with the named rules removed (each `rule ID "…" { … }` block).
fn without(source: &str, rules: &[&str]) -> String {
    let mut s = source.to_string();
    for id in rules {
        let Some(start) = s.find(&format!("rule {id} ")) else {
            panic!("no rule {id}");
        };
        let end = s
            .get(start..)
            .and_then(|r| r.find("\n}\n"))
            .map(|i| start + i + 3)
            .unwrap_or(s.len());
        s.replace_range(start..end, "");
    }
    s
}

/// Where the guest's time goes: the whole exchange in the wasmtime host with parts of the
/// policy removed. The difference to `full` is what the removed rules cost inside wasm.
fn ablation(c: &mut Criterion, spec: &RequestSpec) {
    let source = fixtures::policy_source("support-assistant").unwrap();
    let engine = fixtures::engine_wasm().unwrap();
    let variants: &[(&str, &[&str])] = &[
        ("full", &[]),
        ("no_tokenise_AIP-2.1", &["AIP-2.1"]),
        (
            "no_prompt_detector_rules_AIP-2.1-2.4",
            &["AIP-2.1", "AIP-2.2", "AIP-2.3", "AIP-2.4"],
        ),
        ("no_response_redaction_AIP-2.5", &["AIP-2.5"]),
        ("no_budget_AIP-4.2", &["AIP-4.2"]),
        ("no_oversight_AIP-5.1", &["AIP-5.1"]),
        (
            "only_allowlist_tag_cap",
            &[
                "AIP-2.1", "AIP-2.2", "AIP-2.3", "AIP-2.4", "AIP-2.5", "AIP-4.2", "AIP-5.1",
            ],
        ),
    ];
    let mut g = c.benchmark_group("eval_ablation");
    for (name, rules) in variants {
        let src = without(&source, rules);
        let compiled = fixtures::compile("support-assistant.policy", &src).unwrap();
        let wasm = writ_compiler::link::link(&engine, &compiled).unwrap().wasm;
        let host = Host::new(HostConfig::new(wasm)).unwrap();
        let mut vm = host.vm().unwrap();
        let mut run = || {
            let ex = vm.http_request(spec, |up| {
                UpstreamReply::new(
                    200,
                    &[
                        ("content-type", "application/json"),
                        ("x-model-confidence", "0.93"),
                    ],
                    &reply_for(&up.body),
                )
            });
            assert_eq!(ex.client_response.status, 200, "{name}: {:?}", ex.error);
            ex
        };
        run();
        g.bench_function(format!("wasmtime/{name}"), |b| b.iter(&mut run));
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
