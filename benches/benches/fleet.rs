//! What the fleet store costs a gateway (issue 16, §7): the CPU per request the shared
//! store adds against local shared data, and the store calls per gateway request.
//!
//! One process, one thread: the support-assistant artifact in writ's wasmtime host
//! (`writ serve`'s engine), the whole exchange per request (request, reply, audit), run
//! alone and as a fleet member of a real etcd on loopback (`etcd` on `PATH`; Debian's
//! `etcd-server`). The host performs the filter's callouts to etcd on the calling thread,
//! so the thread's CPU time (`/proc/thread-self/schedstat`) counts the HTTP client's work
//! too, not etcd's. Ticks run at their real period (`run_timers` after each request), so
//! the write-backs, kill-switch and counter polls are in the numbers at their real rate.
//! Store calls are the filter's `proxy_http_call`s.
//!
//! `cargo bench -p writ-benches --bench fleet` (`QUICK=1` for a smoke run); bounded in
//! requests and in seconds.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::net::{SocketAddr, TcpListener};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use writ_benches::{fixtures, payload};
use writ_runtime::{Host, HostConfig, RequestSpec, UpstreamReply};

fn thread_cpu() -> Duration {
    std::fs::read_to_string("/proc/thread-self/schedstat")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse::<u64>().ok())
        .map_or(Duration::ZERO, Duration::from_nanos)
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free loopback port")
}

/// A one-member etcd on free loopback ports, killed on drop.
struct Etcd {
    child: Child,
    dir: std::path::PathBuf,
    client: SocketAddr,
}

impl Etcd {
    fn start() -> Etcd {
        let client = SocketAddr::from(([127, 0, 0, 1], free_port()));
        let peer = format!("http://127.0.0.1:{}", free_port());
        let dir = std::env::temp_dir().join(format!("writ-bench-etcd-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let url = format!("http://{client}");
        let child = Command::new("etcd")
            .args(["--name", "bench", "--data-dir"])
            .arg(dir.join("data"))
            .args([
                "--listen-client-urls",
                &url,
                "--advertise-client-urls",
                &url,
            ])
            .args([
                "--listen-peer-urls",
                &peer,
                "--initial-advertise-peer-urls",
                &peer,
            ])
            .args(["--initial-cluster", &format!("bench={peer}")])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!("cannot start etcd ({e}): install it (`apt-get install etcd-server`)")
            });
        let etcd = Etcd { child, dir, client };
        let deadline = Instant::now() + Duration::from_secs(30);
        while std::net::TcpStream::connect(client).is_err() {
            assert!(Instant::now() < deadline, "etcd did not listen within 30 s");
            std::thread::sleep(Duration::from_millis(100));
        }
        std::thread::sleep(Duration::from_millis(500));
        etcd
    }
}

impl Drop for Etcd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// One configuration's numbers over `n` requests.
#[derive(Debug, Clone, Copy)]
struct Round {
    cpu_us: f64,
    wall_us: f64,
    store_calls: f64,
}

fn round(artifact: &[u8], shared: Option<(&Etcd, u64)>, n: usize, limit: Duration) -> Round {
    let mut config = HostConfig::new(artifact.to_vec());
    if let Some((etcd, slice)) = shared {
        config.plugin_config = serde_json::json!({"shared": {
            "store": "etcd", "cluster": "writ_store", "slice_micros": slice}})
        .to_string()
        .into_bytes();
        config
            .clusters
            .insert("writ_store".into(), format!("http://{}", etcd.client));
    }
    let host = Host::new(config).expect("host");
    let mut vm = host.vm().expect("vm");
    let body = payload::chat_request(false);
    // The users rotate over a thousand names so the policy's per-user rate limit (60 a
    // minute) never answers: the same work per request in every configuration.
    let specs: Vec<RequestSpec> = (0..1_000)
        .map(|u| {
            let user = format!("agent-{u}");
            let headers: Vec<(&str, &str)> = payload::HEADERS
                .iter()
                .map(|(k, v)| {
                    if *k == "x-jwt-sub" {
                        (*k, user.as_str())
                    } else {
                        (*k, *v)
                    }
                })
                .collect();
            RequestSpec::new("POST", "/v1/chat/completions", &headers, &body)
        })
        .collect();
    let mut next = 0usize;
    let reply = br#"{"id":"x","object":"chat.completion","model":"gpt-4o-mini","choices":[{"index":0,"message":{"role":"assistant","content":"Done."},"finish_reason":"stop"}],"usage":{"prompt_tokens":300,"completion_tokens":20,"total_tokens":320}}"#;
    let mut run = |vm: &mut writ_runtime::Vm| {
        next = (next + 1) % specs.len();
        let ex = vm.http_request(&specs[next], |_| {
            UpstreamReply::new(
                200,
                &[
                    ("content-type", "application/json"),
                    ("x-model-confidence", "0.93"),
                ],
                reply,
            )
        });
        assert_eq!(ex.client_response.status, 200, "{:?}", ex.error);
        let _ = vm.run_timers();
    };
    // Warm up (first lease, first tick), then measure.
    for _ in 0..50 {
        run(&mut vm);
    }
    let _ = vm.take_host_calls();
    let (cpu0, t0) = (thread_cpu(), Instant::now());
    let mut done = 0;
    while done < n && t0.elapsed() < limit {
        run(&mut vm);
        done += 1;
    }
    let (cpu, wall) = (thread_cpu() - cpu0, t0.elapsed());
    let calls = vm.take_host_calls().get("proxy_http_call");
    let per = |d: Duration| d.as_secs_f64() * 1e6 / done as f64;
    Round {
        cpu_us: per(cpu),
        wall_us: per(wall),
        store_calls: calls as f64 / done as f64,
    }
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

fn main() {
    // `cargo bench` passes `--bench`; a filter argument other than ours skips the run.
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with('-'))
        .collect();
    if !args.is_empty() && !args.iter().any(|a| "fleet".contains(a.as_str())) {
        return;
    }
    let quick = std::env::var_os("QUICK").is_some();
    let (n, rounds) = if quick { (300, 1) } else { (3_000, 3) };
    let limit = Duration::from_secs(if quick { 20 } else { 60 });
    let artifact = fixtures::artifact("support-assistant").expect("artifact");
    let etcd = Etcd::start();
    let configs: [(&str, Option<u64>); 3] = [
        ("local shared data", None),
        ("etcd, slice 0.01 EUR (default)", Some(10_000)),
        ("etcd, slice 1 EUR", Some(1_000_000)),
    ];
    let mut results: Vec<Vec<Round>> = vec![Vec::new(); configs.len()];
    println!(
        "fleet bench: {n} requests per round, {rounds} rounds, load average {}",
        writ_benches::procstat::loadavg()
    );
    for _ in 0..rounds {
        for (i, (_, slice)) in configs.iter().enumerate() {
            results[i].push(round(&artifact, slice.map(|s| (&etcd, s)), n, limit));
        }
    }
    let base = median(results[0].iter().map(|r| r.cpu_us).collect());
    println!();
    println!(
        "| configuration | CPU µs / request | vs local | added µs | wall µs / request | store calls / request |"
    );
    println!("|---|---|---|---|---|---|");
    for (i, (name, _)) in configs.iter().enumerate() {
        let cpu = median(results[i].iter().map(|r| r.cpu_us).collect());
        let wall = median(results[i].iter().map(|r| r.wall_us).collect());
        let calls = median(results[i].iter().map(|r| r.store_calls).collect());
        println!(
            "| {name} | {cpu:.1} | {:.3} × | {:+.1} | {wall:.1} | {calls:.4} |",
            cpu / base,
            cpu - base
        );
    }
    println!();
    println!(
        "load average at the end: {}",
        writ_benches::procstat::loadavg()
    );
}
