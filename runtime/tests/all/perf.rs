//! Rough costs of the host, printed (run with `--nocapture`), with loose bounds so a gross
//! regression fails. Debug builds are far slower than release; see the crate README.

use crate::common::{module_cache, passthrough, probe};
use std::time::{Duration, Instant};
use writ_runtime::{Host, HostConfig, RequestSpec, UpstreamReply};

fn per_op(n: u32, mut f: impl FnMut()) -> Duration {
    let start = Instant::now();
    for _ in 0..n {
        f();
    }
    start.elapsed() / n
}

#[test]
fn costs_per_request_and_per_vm() {
    for (name, module) in [("passthrough", passthrough()), ("abi-probe", probe())] {
        let mut config = HostConfig::new(module);
        config.cache_dir = Some(module_cache());
        config.limits.max_vms = 4;
        let _warm = Host::new(config.clone()).unwrap();
        let started = Instant::now();
        let host = Host::new(config).unwrap();
        let load = started.elapsed();
        assert!(host.loaded_from_cache());
        let vm_start = per_op(20, || drop(host.vm().unwrap()));
        let mut vm = host.vm().unwrap();
        let body = vec![b'x'; 4096];
        let req = RequestSpec::new("POST", "/v1/chat/completions", &[], &body);
        let request = per_op(200, || {
            let ex = vm.http_request(&req, |_| UpstreamReply::new(200, &[], b"{}"));
            assert_eq!(ex.client_response.status, 200);
        });
        println!(
            "{name}: host from cache {load:?} (incl. first VM), vm start {vm_start:?}, \
             4 KB request through all callbacks {request:?}"
        );
        assert!(request < Duration::from_millis(20), "{name}: {request:?}");
        assert!(vm_start < Duration::from_millis(50), "{name}: {vm_start:?}");
    }
}
