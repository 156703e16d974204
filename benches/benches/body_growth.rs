//! Deadline safety (issue 14 §6): the engine's request work must grow linearly with the
//! body, so a 1 MiB prompt of any content finishes well inside the guest's call deadline.
//!
//! Bodies of 64 KiB, 256 KiB and 1 MiB, each a chat request whose user message is dense
//! with distinct e-mail addresses (one every ~15 bytes: the 1 MiB body carries ~70,000,
//! the worst case), go through:
//!
//! - `native/decide+tokenise`: the evaluator and the tokenising rewrite, without a host;
//! - `wasmtime/request`: the whole exchange through the `support-assistant` artifact in
//!   writ's wasmtime host (request headers, body, an upstream that answers a short JSON
//!   reply, response phase).
//!
//! Throughput is reported per byte, so linear growth shows as a flat MiB/s across sizes.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::hint::black_box;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use writ_benches::fixtures;
use writ_benches::payload::{self, email_dense_request};
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

const REPLY: &[u8] = b"{\"id\":\"c\",\"object\":\"chat.completion\",\"model\":\"gpt-4o-mini\",\
    \"choices\":[{\"index\":0,\"message\":{\"role\":\"assistant\",\"content\":\"ok\"},\
    \"finish_reason\":\"stop\"}],\"usage\":{\"prompt_tokens\":10,\"completion_tokens\":1,\"total_tokens\":11}}";

fn bench(c: &mut Criterion) {
    let compiled = fixtures::compile(
        "support-assistant",
        &fixtures::policy_source("support-assistant").unwrap(),
    )
    .unwrap();
    let engine = Engine::new(compiled.policy.clone()).unwrap();
    let policy = &compiled.policy;
    let spend = |_: Scope, _: Window| -> Option<Micros> { Some(0) };
    let host = Host::new(HostConfig::new(
        fixtures::artifact("support-assistant").unwrap(),
    ))
    .unwrap();
    let mut vm = host.vm().unwrap();

    let mut g = c.benchmark_group("body_growth");
    g.sample_size(10);
    for kib in [64usize, 256, 1024] {
        let body = email_dense_request(kib * 1024);
        g.throughput(Throughput::Bytes(body.len() as u64));
        let native = |body: &[u8]| {
            let json = parse_body(body, 2 << 20).unwrap();
            let req = Request::from_headers(headers(), Some(json));
            let identity = eval::identify(policy, &req);
            let facts = Facts {
                spend: Some(&spend),
                rate: None,
                reply: None,
                ..Default::default()
            };
            let d = eval::evaluate(
                policy,
                &engine.scanner,
                &req,
                identity,
                &facts,
                Phase::Request,
                None,
            );
            let t = Transforms::of(policy, &d);
            assert!(!t.tokenise.is_empty(), "no tokenisation decided: {d:?}");
            let mut vault = Vault::new(nonce(b"req-1", 1, 0));
            rewrite_request(body, &engine.scanner, &t.tokenise, &t.redact, &mut vault).unwrap()
        };
        let rw = native(&body);
        assert!(rw.body.is_some(), "{kib} KiB: nothing rewritten");
        g.bench_with_input(
            BenchmarkId::new("native/decide+tokenise", kib),
            &body,
            |b, body| b.iter(|| native(black_box(body))),
        );

        let spec = RequestSpec::new("POST", "/v1/chat/completions", payload::HEADERS, &body);
        let mut run = || {
            let ex = vm.http_request(&spec, |_| {
                UpstreamReply::new(
                    200,
                    &[
                        ("content-type", "application/json"),
                        ("x-model-confidence", "0.93"),
                    ],
                    REPLY,
                )
            });
            assert_eq!(ex.client_response.status, 200, "{kib} KiB: {:?}", ex.error);
            ex
        };
        let ex = run();
        let sent = ex.upstream_request.as_ref().map(|u| &u.body);
        assert!(
            sent.is_some_and(|b| !String::from_utf8_lossy(b).contains("u0@ex.org")),
            "{kib} KiB: an address reached the upstream"
        );
        g.bench_function(BenchmarkId::new("wasmtime/request", kib), |b| {
            b.iter(&mut run)
        });
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
