//! `writ check` cost on the bundled policies: parse + name/type/conflict checks
//! (`writ_compiler::check`), and the whole front end up to the IR (`compile`: check +
//! lowering), per policy file; and how check time grows with the rule count (1k, 4k, 10k
//! generated rules), which the rule-relation checks must keep near-linear.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::hint::black_box;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use writ_benches::fixtures;

fn bench(c: &mut Criterion) {
    let mut g = c.benchmark_group("parse_check");
    for (name, src) in fixtures::bundled_policies() {
        g.throughput(Throughput::Bytes(src.len() as u64));
        g.bench_function(format!("check/{name}"), |b| {
            b.iter(|| writ_compiler::check(&name, black_box(&src)))
        });
        g.bench_function(format!("compile/{name}"), |b| {
            b.iter(|| writ_compiler::compile(&name, black_box(&src)).unwrap())
        });
    }
    g.finish();
}

/// Check time at 1k, 4k and 10k rules: `varied` rules share fields and values so the
/// relation checks (shadowing, conflicting denies and routes, overlapping allows, routes
/// into denied models) have real candidates to compare; `generated` is `build.rs`'s
/// policy (one custom detector, so one DFA build, per five rules). Throughput is per rule,
/// so flat elements/s means linear growth.
fn scaling(c: &mut Criterion) {
    let mut g = c.benchmark_group("check_scaling");
    g.sample_size(10);
    for n in [1000usize, 4000, 10_000] {
        g.throughput(Throughput::Elements(n as u64));
        for (shape, src) in [
            ("varied", fixtures::varied_policy(n)),
            ("generated", fixtures::generated_policy(n)),
        ] {
            g.bench_with_input(BenchmarkId::new(shape, n), &src, |b, src| {
                b.iter(|| writ_compiler::check("gen.policy", black_box(src)))
            });
        }
    }
    g.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(30);
    targets = bench, scaling
}
criterion_main!(benches);
