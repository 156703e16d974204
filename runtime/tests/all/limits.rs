//! A runaway guest fails its own request, closed, and the host keeps serving.

use crate::common::probe;
use std::time::{Duration, Instant};
use writ_runtime::{Host, HostConfig, HostError, RequestSpec, TrapKind, UpstreamReply};

fn host() -> Host {
    let mut config = HostConfig::new(probe());
    config.limits.call_timeout = Duration::from_millis(100);
    config.limits.max_memory_bytes = 64 << 20;
    config.limits.max_vms = 4;
    config.cache_dir = Some(crate::common::module_cache());
    Host::new(config).unwrap()
}

fn run(vm: &mut writ_runtime::Vm, mode: &str) -> writ_runtime::Exchange {
    vm.http_request(
        &RequestSpec::new("GET", "/", &[("x-probe", mode)], b""),
        |_| UpstreamReply::new(200, &[], b"ok"),
    )
}

fn assert_recovers(vm: &mut writ_runtime::Vm, restarts: u64) {
    let ex = run(vm, "");
    assert_eq!(ex.error, None);
    assert_eq!(ex.client_response.status, 200);
    assert_eq!(ex.client_response.body_bytes(), b"ok");
    assert_eq!(vm.restarts(), restarts);
}

/// A VM's start is held to its own budget, not to the requests' deadline: a start that
/// takes 40 ms succeeds under a 1 ms call deadline (which `writ serve --filter-timeout-ms 1`
/// sets), the requests still stop at that deadline, and a start that never ends stops at
/// the start budget.
#[test]
fn a_start_is_held_to_the_start_budget_not_the_call_deadline() {
    let config = |start_ms: u64, start_timeout: Duration| {
        let mut config = HostConfig::new(probe());
        config.plugin_config = format!("start_ms={start_ms}").into_bytes();
        config.limits.call_timeout = Duration::from_millis(1);
        config.limits.start_timeout = start_timeout;
        config.limits.max_vms = 4;
        config.cache_dir = Some(crate::common::module_cache());
        config
    };
    let slow = Host::new(config(40, Duration::from_secs(10))).unwrap();
    let mut vm = slow.vm().unwrap();
    let ex = run(&mut vm, "loop");
    assert!(ex.error.is_some(), "the loop was not stopped");
    assert_eq!(ex.client_response.status, 503);

    // `Host::new` starts one VM to check the module, so the endless start fails there.
    let started = Instant::now();
    let endless = Host::new(config(600_000, Duration::from_millis(200)));
    assert!(
        matches!(
            endless,
            Err(HostError::Trap {
                kind: TrapKind::Deadline,
                ..
            })
        ),
        "{endless:?}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "{:?}",
        started.elapsed()
    );
}

#[test]
fn infinite_loop_hits_the_deadline() {
    let host = host();
    let mut vm = host.vm().unwrap();
    let started = Instant::now();
    let ex = run(&mut vm, "loop");
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(ex.client_response.status, 503);
    assert_eq!(ex.error_kind.as_deref(), Some("filter_timeout"));
    assert_eq!(ex.upstream_request, None);
    let body: serde_json::Value = serde_json::from_slice(&ex.client_response.body_bytes()).unwrap();
    assert_eq!(body["error"]["code"], "engine_error");
    assert!(!String::from_utf8_lossy(&ex.client_response.body_bytes()).contains("backtrace"));
    assert_recovers(&mut vm, 1);
}

#[test]
fn huge_allocation_hits_the_memory_limit() {
    let host = host();
    let mut vm = host.vm().unwrap();
    let ex = run(&mut vm, "oom");
    assert_eq!(ex.client_response.status, 503);
    assert_eq!(ex.error_kind.as_deref(), Some("filter_memory_limit"));
    assert_recovers(&mut vm, 1);
}

#[test]
fn guest_panic_fails_closed() {
    let host = host();
    let mut vm = host.vm().unwrap();
    let ex = run(&mut vm, "panic");
    assert_eq!(ex.client_response.status, 503);
    assert_eq!(ex.error_kind.as_deref(), Some("filter_failure"));
    assert_recovers(&mut vm, 1);
    let ex = run(&mut vm, "loop");
    assert_eq!(ex.error_kind.as_deref(), Some("filter_timeout"));
    assert_recovers(&mut vm, 2);
}
