//! `writ check` cost on the bundled policies: parse + name/type/conflict checks
//! (`writ_compiler::check`), and the whole front end up to the IR (`compile`: check +
//! lowering), per policy file.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
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

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(30);
    targets = bench
}
criterion_main!(benches);
