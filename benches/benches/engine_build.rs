//! What the engine's code generation buys inside wasm (issue 14 §3): `opt-level` 3
//! against "s", wasm `simd128` and bulk memory, compared in one run.
//!
//! `benches/engine-variants.sh` builds the engine once per variant into
//! `target/engine-variants/<name>.wasm` (or `$WRIT_ENGINE_VARIANTS`). This bench links the
//! `support-assistant` policy into each and runs, through writ's wasmtime host:
//!
//! - `exchange_4k/<variant>`: the whole exchange of the 4 KB chat request with PII (the
//!   request of the wire bench), reply restored;
//! - `request_1mib/<variant>`: the 1 MiB request dense with e-mail addresses, tokenised.
//!
//! Each variant is checked to give the same answer and the same upstream body shape
//! before it is measured, so a faster variant cannot be a wrong one.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::PathBuf;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use writ_benches::payload::{self, email_dense_request};
use writ_benches::{fixtures, upstream};
use writ_runtime::{Exchange, Host, HostConfig, RequestSpec, UpstreamReply, Vm};

fn variants() -> Vec<(String, Vec<u8>)> {
    let dir = std::env::var_os("WRIT_ENGINE_VARIANTS")
        .map(PathBuf::from)
        .unwrap_or_else(|| fixtures::root().join("target/engine-variants"));
    let mut out: Vec<(String, Vec<u8>)> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| {
            panic!(
                "no engine variants in {}: {e} (run benches/engine-variants.sh)",
                dir.display()
            )
        })
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "wasm"))
        .map(|p| {
            let name = p.file_stem().unwrap().to_string_lossy().into_owned();
            (name, std::fs::read(&p).unwrap())
        })
        .collect();
    out.sort();
    out
}

fn reply(body: &[u8]) -> Vec<u8> {
    format!(
        "{{\"id\":\"c\",\"object\":\"chat.completion\",\"model\":\"gpt-4o-mini\",\
         \"choices\":[{{\"index\":0,\"message\":{{\"role\":\"assistant\",\"content\":\"{}\"}},\"finish_reason\":\"stop\"}}],\
         \"usage\":{{\"prompt_tokens\":1000,\"completion_tokens\":90,\"total_tokens\":1090}}}}",
        upstream::echo(body)
    )
    .into_bytes()
}

fn exchange(vm: &mut Vm, spec: &RequestSpec) -> Exchange {
    vm.http_request(spec, |up| {
        UpstreamReply::new(
            200,
            &[
                ("content-type", "application/json"),
                ("x-model-confidence", "0.93"),
            ],
            &reply(&up.body),
        )
    })
}

fn bench(c: &mut Criterion) {
    let source = fixtures::policy_source("support-assistant").unwrap();
    let compiled = fixtures::compile("support-assistant.policy", &source).unwrap();
    let small = payload::chat_request(false);
    let big = email_dense_request(1 << 20);
    let small_spec = RequestSpec::new("POST", "/v1/chat/completions", payload::HEADERS, &small);
    let big_spec = RequestSpec::new("POST", "/v1/chat/completions", payload::HEADERS, &big);
    let mut reference: Option<(String, Exchange)> = None;
    let mut g = c.benchmark_group("engine_build");
    g.sample_size(20);
    for (name, engine) in variants() {
        let wasm = writ_compiler::link::link(&engine, &compiled).unwrap().wasm;
        let host = Host::new(HostConfig::new(wasm)).unwrap();
        let mut vm = host.vm().unwrap();
        let ex = exchange(&mut vm, &small_spec);
        assert_eq!(ex.client_response.status, 200, "{name}: {:?}", ex.error);
        let shape = |ex: &Exchange| {
            let body = ex.upstream_request.as_ref().map(|u| u.body.len());
            (
                ex.client_response.status,
                body,
                ex.client_response.body.len(),
            )
        };
        match &reference {
            Some((first, r)) => assert_eq!(shape(r), shape(&ex), "{name} answers unlike {first}"),
            None => reference = Some((name.clone(), ex)),
        }
        let ex = exchange(&mut vm, &big_spec);
        assert_eq!(
            ex.client_response.status, 200,
            "{name} 1 MiB: {:?}",
            ex.error
        );
        g.throughput(Throughput::Bytes(small.len() as u64));
        g.bench_function(BenchmarkId::new("exchange_4k", &name), |b| {
            b.iter(|| exchange(&mut vm, &small_spec))
        });
        g.throughput(Throughput::Bytes(big.len() as u64));
        g.bench_function(BenchmarkId::new("request_1mib", &name), |b| {
            b.iter(|| exchange(&mut vm, &big_spec))
        });
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
