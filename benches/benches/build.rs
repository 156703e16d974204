//! How `writ build` cost grows with policy size: compile (parse, check, lower) and link
//! (embed the IR into the engine module, validate) for generated policies of 10, 100 and
//! 1,000 rules, and each stage separately so the growth can be attributed.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::hint::black_box;

use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use writ_benches::fixtures;

fn bench(c: &mut Criterion) {
    let engine = fixtures::engine_wasm().unwrap();
    let mut g = c.benchmark_group("build");
    g.sample_size(10);
    for n in [10usize, 100, 1000] {
        let src = fixtures::generated_policy(n);
        let compiled = fixtures::compile("gen.policy", &src).unwrap();
        g.bench_with_input(BenchmarkId::new("compile", n), &src, |b, src| {
            b.iter(|| writ_compiler::compile("gen.policy", black_box(src)).unwrap())
        });
        g.bench_with_input(BenchmarkId::new("link", n), &compiled, |b, compiled| {
            b.iter(|| writ_compiler::link::link(&engine, black_box(compiled)).unwrap())
        });
        g.bench_with_input(BenchmarkId::new("compile+link", n), &src, |b, src| {
            b.iter(|| {
                let c = writ_compiler::compile("gen.policy", black_box(src)).unwrap();
                writ_compiler::link::link(&engine, &c).unwrap()
            })
        });
        // What the host pays at load: decode the IR and build the detectors.
        let blob = compiled.policy.encode();
        g.bench_with_input(BenchmarkId::new("engine_load", n), &blob, |b, blob| {
            b.iter(|| writ_plugin::eval::Engine::load(black_box(blob)).unwrap())
        });
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
