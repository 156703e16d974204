//! Starting the policy in writ's wasmtime host: `Host::new` compiling the artifact cold
//! (cranelift), `Host::new` from the on-disk compiled-module cache, and instantiating one
//! more `Vm` (pooling allocator; runs `proxy_on_vm_start` and `proxy_on_configure`, i.e.
//! the policy decode and detector build inside the guest).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use criterion::{Criterion, criterion_group, criterion_main};
use writ_benches::fixtures;
use writ_runtime::{Host, HostConfig};

fn bench(c: &mut Criterion) {
    let wasm = fixtures::artifact("support-assistant").unwrap();
    let cache = std::env::temp_dir().join(format!("writ-bench-cache-{}", std::process::id()));
    let mut g = c.benchmark_group("vm_start");
    g.sample_size(10);
    g.bench_function("host_new/cold_compile", |b| {
        b.iter(|| Host::new(HostConfig::new(wasm.clone())).unwrap())
    });
    let mut cached = HostConfig::new(wasm.clone());
    cached.cache_dir = Some(cache.clone());
    drop(Host::new(cached.clone()).unwrap());
    g.bench_function("host_new/cached", |b| {
        b.iter(|| {
            let h = Host::new(cached.clone()).unwrap();
            assert!(h.loaded_from_cache());
            h
        })
    });
    let host = Host::new(cached.clone()).unwrap();
    g.sample_size(30);
    g.bench_function("vm_instantiate", |b| b.iter(|| host.vm().unwrap()));
    let pass = Host::new(HostConfig::new(fixtures::passthrough_wasm().unwrap())).unwrap();
    g.bench_function("vm_instantiate/passthrough", |b| {
        b.iter(|| pass.vm().unwrap())
    });
    g.finish();
    let _ = std::fs::remove_dir_all(&cache);
}

criterion_group!(benches, bench);
criterion_main!(benches);
