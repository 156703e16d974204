//! What governance costs on the wire: the same bounded load through real Envoy with no
//! wasm filter, with a pass-through wasm filter, and with a writ artifact, then through
//! `writ serve` and to the upstream directly — all against one in-process loopback upstream,
//! all in one run so the ratios compare like with like on a shared machine.
//!
//! Per target it measures: latency at one connection (p50/p99), throughput and CPU time of
//! the proxy process per request at `--connections` (plain and streamed replies), time to
//! first byte and per-event cost of a 500-event SSE reply, and the proxy's peak RSS. CPU is
//! read from `/proc/<pid>/task/*/schedstat` before and after each run, so "µs of CPU per
//! request" is the proxy's own work, independent of how busy the load generator is.
//!
//! Run it through `benches/run.sh`, which builds everything it needs.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use bytes::Bytes;
use clap::Parser;
use writ_benches::load::{self, Bounds, Spec, Stats};
use writ_benches::{payload, procstat, upstream};

#[derive(Parser, Debug)]
#[command(about = "Envoy / writ serve wire benchmark")]
struct Args {
    /// The Envoy binary (the ELF, not the Python launcher, so the pid is Envoy's).
    #[arg(long)]
    envoy: PathBuf,
    /// The `writ` binary (for `writ envoy` and `writ serve`).
    #[arg(long)]
    writ: PathBuf,
    /// The writ artifact to measure.
    #[arg(long)]
    artifact: PathBuf,
    /// The pass-through proxy-wasm filter.
    #[arg(long)]
    passthrough: PathBuf,
    /// Requests per throughput run (plain; streamed runs send half).
    #[arg(long, default_value_t = 20_000)]
    requests: u64,
    /// Connections of the throughput runs.
    #[arg(long, default_value_t = 8)]
    connections: usize,
    /// Requests of the one-connection latency run.
    #[arg(long, default_value_t = 3_000)]
    latency_requests: u64,
    /// 500-event SSE replies per target.
    #[arg(long, default_value_t = 100)]
    sse_requests: u64,
    /// Events per streamed reply in the throughput runs.
    #[arg(long, default_value_t = 20)]
    stream_events: usize,
    /// Upper bound on any one run's duration, in seconds.
    #[arg(long, default_value_t = 30)]
    max_seconds: u64,
    /// Rounds over all targets; each metric is the median over rounds.
    #[arg(long, default_value_t = 1)]
    rounds: usize,
    /// Only these targets (comma-separated: direct,none,pass,writ,serve).
    #[arg(long)]
    only: Option<String>,
    /// Print one reply body per target, to check what the proxy did.
    #[arg(long)]
    show_samples: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Target {
    Direct,
    EnvoyNone,
    EnvoyPass,
    EnvoyWrit,
    Serve,
}

impl Target {
    const ALL: [Target; 5] = [
        Target::Direct,
        Target::EnvoyNone,
        Target::EnvoyPass,
        Target::EnvoyWrit,
        Target::Serve,
    ];

    fn key(self) -> &'static str {
        match self {
            Target::Direct => "direct",
            Target::EnvoyNone => "none",
            Target::EnvoyPass => "pass",
            Target::EnvoyWrit => "writ",
            Target::Serve => "serve",
        }
    }

    fn label(self) -> &'static str {
        match self {
            Target::Direct => "upstream direct",
            Target::EnvoyNone => "Envoy, no wasm filter",
            Target::EnvoyPass => "Envoy + pass-through wasm",
            Target::EnvoyWrit => "Envoy + writ (support-assistant)",
            Target::Serve => "writ serve (1 worker)",
        }
    }
}

/// One target's measurements in one round.
#[derive(Debug, Clone, Default)]
struct Row {
    lat: Stats,
    plain: Stats,
    plain_cpu: Option<Duration>,
    streamed: Stats,
    streamed_cpu: Option<Duration>,
    sse: Stats,
    sse_cpu: Option<Duration>,
    hwm: Option<u64>,
    load: String,
}

/// A proxy under test: where to send requests and which process does the work.
struct Proxy {
    addr: SocketAddr,
    child: Option<Child>,
}

impl Proxy {
    fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        if let Some(c) = self.child.as_mut() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Pause after the first event of the 500-event replies, so the time to first byte is
/// the first event's and not the whole burst's (see `upstream::send_events`).
const SSE_FIRST_GAP_MS: u64 = 5;

fn free_port() -> anyhow::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// A blocking `GET` on loopback; the body, or an error.
fn http_get(addr: SocketAddr, path: &str) -> anyhow::Result<String> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(1))?;
    s.set_read_timeout(Some(Duration::from_secs(2)))?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nhost: localhost\r\nconnection: close\r\n\r\n"
    )?;
    let mut out = String::new();
    s.read_to_string(&mut out)?;
    Ok(out)
}

fn wait_until(what: &str, timeout: Duration, mut ok: impl FnMut() -> bool) -> anyhow::Result<()> {
    let start = Instant::now();
    while start.elapsed() < timeout {
        if ok() {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    bail!("{what} not ready after {timeout:?}")
}

/// The Envoy config `writ envoy` generates for `artifact`, turned into the three variants:
/// the wasm filter removed, pointed at the pass-through module, or as generated.
fn envoy_config(
    args: &Args,
    target: Target,
    upstream: SocketAddr,
    listen: SocketAddr,
    admin: SocketAddr,
) -> anyhow::Result<String> {
    let out = Command::new(&args.writ)
        .arg("envoy")
        .arg(&args.artifact)
        .arg("--upstream")
        .arg(upstream.to_string())
        .arg("--listen")
        .arg(listen.to_string())
        .arg("--admin")
        .arg(admin.to_string())
        .output()
        .context("writ envoy")?;
    if !out.status.success() {
        bail!("writ envoy: {}", String::from_utf8_lossy(&out.stderr));
    }
    let cfg = String::from_utf8(out.stdout)?;
    let artifact = args.artifact.display().to_string();
    Ok(match target {
        Target::EnvoyNone => {
            let from = cfg
                .find("          - name: envoy.filters.http.wasm")
                .context("no wasm filter in the generated config")?;
            let to = cfg
                .find("          - name: envoy.filters.http.router")
                .context("no router in the generated config")?;
            format!(
                "{}{}",
                cfg.get(..from).unwrap_or(""),
                cfg.get(to..).unwrap_or("")
            )
        }
        Target::EnvoyPass => {
            let pass = args.passthrough.display().to_string();
            let mut c = cfg.replace(&artifact, &pass);
            if let Some(i) = c.find("vm_id: \"") {
                let end = c.get(i + 8..).and_then(|r| r.find('"')).unwrap_or(0) + i + 8;
                c.replace_range(i..=end, "vm_id: \"passthrough\"");
            }
            c
        }
        _ => cfg,
    })
}

fn start_envoy(
    args: &Args,
    target: Target,
    upstream: SocketAddr,
    dir: &Path,
) -> anyhow::Result<Proxy> {
    let listen = SocketAddr::from(([127, 0, 0, 1], free_port()?));
    let admin = SocketAddr::from(([127, 0, 0, 1], free_port()?));
    let cfg = envoy_config(args, target, upstream, listen, admin)?;
    let path = dir.join(format!("envoy-{}.yaml", target.key()));
    std::fs::write(&path, cfg)?;
    let log = std::fs::File::create(dir.join(format!("envoy-{}.log", target.key())))?;
    let child = Command::new(&args.envoy)
        .arg("-c")
        .arg(&path)
        .args([
            "--concurrency",
            "1",
            "--disable-hot-restart",
            "-l",
            "warning",
        ])
        .stdin(Stdio::null())
        // The access log goes to stdout: discarded, the same for every variant.
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .context("start envoy")?;
    let proxy = Proxy {
        addr: listen,
        child: Some(child),
    };
    wait_until("envoy", Duration::from_secs(60), || {
        http_get(admin, "/ready").is_ok_and(|r| r.contains("LIVE"))
    })?;
    Ok(proxy)
}

fn start_serve(args: &Args, upstream: SocketAddr, dir: &Path) -> anyhow::Result<Proxy> {
    let listen = SocketAddr::from(([127, 0, 0, 1], free_port()?));
    let log = std::fs::File::create(dir.join("serve.log"))?;
    let child = Command::new(&args.writ)
        .arg("serve")
        .arg("--policy")
        .arg(&args.artifact)
        .arg("--upstream")
        .arg(format!("http://{upstream}"))
        .arg("--listen")
        .arg(listen.to_string())
        .args(["--workers", "1"])
        .arg("--cache-dir")
        .arg(dir.join("cache"))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .context("start writ serve")?;
    let proxy = Proxy {
        addr: listen,
        child: Some(child),
    };
    wait_until("writ serve", Duration::from_secs(60), || {
        TcpStream::connect_timeout(&listen, Duration::from_millis(200)).is_ok()
    })?;
    Ok(proxy)
}

fn spec(stream: bool, events: usize) -> Spec {
    let mut headers: Vec<(String, String)> = payload::HEADERS
        .iter()
        .map(|(k, v)| ((*k).to_string(), (*v).to_string()))
        .collect();
    headers.push(("x-bench-events".into(), events.to_string()));
    Spec {
        path: "/v1/chat/completions".into(),
        headers,
        body: Bytes::from(payload::chat_request(stream)),
    }
}

/// Runs `f` and returns its result with the CPU time `pid` spent meanwhile.
fn with_cpu<T>(pid: Option<u32>, f: impl FnOnce() -> T) -> (T, Option<Duration>) {
    let before = pid.map(procstat::cpu_time);
    let out = f();
    let after = pid.map(procstat::cpu_time);
    let cpu = before.zip(after).map(|(b, a)| a.saturating_sub(b));
    (out, cpu)
}

fn measure(args: &Args, target: Target, up: SocketAddr, dir: &Path) -> anyhow::Result<Row> {
    let proxy = match target {
        Target::Direct => Proxy {
            addr: up,
            child: None,
        },
        Target::Serve => start_serve(args, up, dir)?,
        _ => start_envoy(args, target, up, dir)?,
    };
    let pid = proxy.pid();
    let max_time = Duration::from_secs(args.max_seconds);
    let bounds = |connections: usize, requests: u64| Bounds {
        connections,
        requests,
        max_time,
    };
    let plain = spec(false, 0);
    let streamed = spec(true, args.stream_events);
    let mut sse = spec(true, 500);
    sse.headers
        .push(("x-bench-first-gap-ms".into(), SSE_FIRST_GAP_MS.to_string()));
    // Warm-up: V8 and wasmtime tiers, connection pools, the upstream.
    let warm = load::run(proxy.addr, &plain, bounds(args.connections, 1500))?;
    if warm.ok == 0 {
        bail!(
            "{}: no request succeeded (status {:?}): {}",
            target.label(),
            warm.first_bad_status,
            String::from_utf8_lossy(warm.sample.as_deref().unwrap_or_default())
        );
    }
    load::run(proxy.addr, &streamed, bounds(args.connections, 200))?;
    let mut row = Row {
        load: procstat::loadavg(),
        ..Row::default()
    };
    row.lat = load::run(proxy.addr, &plain, bounds(1, args.latency_requests))?;
    let (s, cpu) = with_cpu(pid, || {
        load::run(proxy.addr, &plain, bounds(args.connections, args.requests))
    });
    (row.plain, row.plain_cpu) = (s?, cpu);
    let (s, cpu) = with_cpu(pid, || {
        load::run(
            proxy.addr,
            &streamed,
            bounds(args.connections, args.requests / 2),
        )
    });
    (row.streamed, row.streamed_cpu) = (s?, cpu);
    let (s, cpu) = with_cpu(pid, || {
        load::run(proxy.addr, &sse, bounds(1, args.sse_requests))
    });
    (row.sse, row.sse_cpu) = (s?, cpu);
    row.hwm = pid.and_then(|p| procstat::status_kb(p, "VmHWM"));
    if args.show_samples {
        for (name, s) in [("plain", &row.plain), ("streamed", &row.streamed)] {
            let body = s.sample.as_deref().unwrap_or_default();
            let text = String::from_utf8_lossy(body);
            let cut: String = text.chars().take(700).collect();
            eprintln!(
                "--- {} {name} sample ({} bytes):\n{cut}\n",
                target.key(),
                body.len()
            );
        }
    }
    Ok(row)
}

fn median(mut v: Vec<f64>) -> f64 {
    v.retain(|x| x.is_finite());
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(|a, b| a.total_cmp(b));
    v.get(v.len() / 2).copied().unwrap_or(f64::NAN)
}

/// Medians over rounds of the numbers reported.
#[derive(Debug, Default, Clone)]
struct Summary {
    lat_p50: f64,
    lat_p99: f64,
    plain_rps: f64,
    plain_cpu_us: f64,
    streamed_rps: f64,
    streamed_cpu_us: f64,
    sse_ttfb_p50: f64,
    sse_total_p50: f64,
    sse_cpu_us: f64,
    hwm_mb: f64,
    errors: u64,
    ok: u64,
    load: String,
}

fn per_req(cpu: Option<Duration>, s: &Stats) -> f64 {
    cpu.map(|c| c.as_secs_f64() * 1e6 / (s.ok.max(1) as f64))
        .unwrap_or(f64::NAN)
}

fn summarise(rows: &[Row]) -> Summary {
    let m = |f: &dyn Fn(&Row) -> f64| median(rows.iter().map(f).collect());
    Summary {
        lat_p50: m(&|r| r.lat.latency_us(0.5)),
        lat_p99: m(&|r| r.lat.latency_us(0.99)),
        plain_rps: m(&|r| r.plain.rps()),
        plain_cpu_us: m(&|r| per_req(r.plain_cpu, &r.plain)),
        streamed_rps: m(&|r| r.streamed.rps()),
        streamed_cpu_us: m(&|r| per_req(r.streamed_cpu, &r.streamed)),
        sse_ttfb_p50: m(&|r| r.sse.ttfb_us(0.5)),
        sse_total_p50: m(&|r| r.sse.latency_us(0.5)),
        sse_cpu_us: m(&|r| per_req(r.sse_cpu, &r.sse)),
        hwm_mb: m(&|r| r.hwm.map(|b| b as f64 / 1048576.0).unwrap_or(f64::NAN)),
        errors: rows
            .iter()
            .map(|r| r.lat.errors + r.plain.errors + r.streamed.errors + r.sse.errors)
            .sum(),
        ok: rows
            .iter()
            .map(|r| r.lat.ok + r.plain.ok + r.streamed.ok + r.sse.ok)
            .sum(),
        load: rows
            .iter()
            .map(|r| r.load.clone())
            .collect::<Vec<_>>()
            .join(" / "),
    }
}

fn f(x: f64, prec: usize) -> String {
    if x.is_finite() {
        format!("{x:.prec$}")
    } else {
        "–".into()
    }
}

fn signed(x: f64) -> String {
    if x.is_finite() {
        format!("{x:+.1}")
    } else {
        "–".into()
    }
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let targets: Vec<Target> = match &args.only {
        Some(list) => Target::ALL
            .into_iter()
            .filter(|t| list.split(',').any(|k| k.trim() == t.key()))
            .collect(),
        None => Target::ALL.to_vec(),
    };
    let dir = std::env::temp_dir().join(format!("writ-wire-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let up = upstream::start()?;
    eprintln!(
        "upstream {up}; {} rounds; load before: {}",
        args.rounds,
        procstat::loadavg()
    );
    let mut rows: Vec<(Target, Vec<Row>)> = targets.iter().map(|t| (*t, Vec::new())).collect();
    for round in 0..args.rounds {
        for (t, rs) in rows.iter_mut() {
            eprintln!("round {} {} …", round + 1, t.label());
            let r = measure(&args, *t, up, &dir)?;
            eprintln!(
                "  lat p50 {:.1} µs, plain {:.0} req/s {} µs CPU/req, streamed {:.0} req/s, sse ttfb {:.0} µs (load {})",
                r.lat.latency_us(0.5),
                r.plain.rps(),
                f(per_req(r.plain_cpu, &r.plain), 1),
                r.streamed.rps(),
                r.sse.ttfb_us(0.5),
                r.load
            );
            rs.push(r);
        }
    }
    let sums: Vec<(Target, Summary)> = rows.iter().map(|(t, r)| (*t, summarise(r))).collect();
    let get = |t: Target| sums.iter().find(|(x, _)| *x == t).map(|(_, s)| s.clone());
    let none = get(Target::EnvoyNone).unwrap_or_default();
    let pass = get(Target::EnvoyPass).unwrap_or_default();
    let direct = get(Target::Direct).unwrap_or_default();

    println!(
        "\n### Wire: 4 KB chat request with PII, Envoy 1.40 `--concurrency 1` (date {}, load {})\n",
        date(),
        procstat::loadavg()
    );
    println!(
        "Medians over {} round(s); {} connections, {} requests per throughput run; latency at 1 connection over {} requests.\n",
        args.rounds, args.connections, args.requests, args.latency_requests
    );
    println!(
        "| target | 1-conn p50 µs | Δp50 vs none | 1-conn p99 µs | Δp99 vs none | req/s ({} conn) | × none | × pass-through | proxy CPU µs/req | ΔCPU vs none | ok / errors | load avg |",
        args.connections
    );
    println!("|---|---|---|---|---|---|---|---|---|---|---|---|");
    for (t, s) in &sums {
        let base = if *t == Target::Serve || *t == Target::Direct {
            &direct
        } else {
            &none
        };
        println!(
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} / {} | {} |",
            t.label(),
            f(s.lat_p50, 1),
            signed(s.lat_p50 - base.lat_p50),
            f(s.lat_p99, 1),
            signed(s.lat_p99 - base.lat_p99),
            f(s.plain_rps, 0),
            f(s.plain_rps / none.plain_rps, 2),
            f(s.plain_rps / pass.plain_rps, 2),
            f(s.plain_cpu_us, 1),
            signed(s.plain_cpu_us - none.plain_cpu_us),
            s.ok,
            s.errors,
            s.load
        );
    }
    println!(
        "\n(Δ for `writ serve` is against the upstream direct; × columns always against the Envoy runs.)\n"
    );
    println!(
        "### Streamed replies ({} events each), {} connections\n",
        args.stream_events, args.connections
    );
    println!("| target | req/s | × none | × pass-through | proxy CPU µs/req | ΔCPU vs none |");
    println!("|---|---|---|---|---|---|");
    for (t, s) in &sums {
        println!(
            "| {} | {} | {} | {} | {} | {} |",
            t.label(),
            f(s.streamed_rps, 0),
            f(s.streamed_rps / none.streamed_rps, 2),
            f(s.streamed_rps / pass.streamed_rps, 2),
            f(s.streamed_cpu_us, 1),
            signed(s.streamed_cpu_us - none.streamed_cpu_us),
        );
    }
    println!(
        "\n### 500-event SSE reply with restoration, 1 connection, {} replies\n",
        args.sse_requests
    );
    println!(
        "| target | TTFB p50 µs | ΔTTFB vs none | whole reply p50 µs | Δ per event µs | proxy CPU µs/reply | ΔCPU per event µs |"
    );
    println!("|---|---|---|---|---|---|---|");
    for (t, s) in &sums {
        println!(
            "| {} | {} | {} | {} | {} | {} | {} |",
            t.label(),
            f(s.sse_ttfb_p50, 0),
            signed(s.sse_ttfb_p50 - none.sse_ttfb_p50),
            f(s.sse_total_p50, 0),
            f((s.sse_total_p50 - none.sse_total_p50) / 502.0, 2),
            f(s.sse_cpu_us, 0),
            f((s.sse_cpu_us - none.sse_cpu_us) / 502.0, 2),
        );
    }
    // A target whose baseline was not measured (`--only`) is not judged.
    type TargetRow = (&'static str, f64, &'static str, fn(f64) -> bool);
    let verdict = |value: f64, ok: fn(f64) -> bool| {
        if !value.is_finite() || value == 0.0 {
            "not measured"
        } else if ok(value) {
            "met"
        } else {
            "NOT met"
        }
    };
    if let Some(w) = get(Target::EnvoyWrit) {
        let serve = get(Target::Serve);
        let ratio = |a: f64, b: f64| if b > 0.0 { a / b } else { f64::NAN };
        println!("\n### Targets (issue 14), as ratios of this run\n");
        println!("| target | measured | must reach | verdict |");
        println!("|---|---|---|---|");
        let rows: [TargetRow; 5] = [
            (
                "Envoy + writ CPU per request ÷ Envoy alone",
                ratio(w.plain_cpu_us, none.plain_cpu_us),
                "≤ 1.9",
                |r| r <= 1.9,
            ),
            (
                "Envoy + writ throughput ÷ Envoy alone (8 connections)",
                ratio(w.plain_rps, none.plain_rps),
                "≥ 0.6",
                |r| r >= 0.6,
            ),
            (
                "Envoy + writ p50 at one connection ÷ Envoy alone",
                ratio(w.lat_p50, none.lat_p50),
                "≤ 1.3",
                |r| r <= 1.3,
            ),
            (
                "`writ serve` CPU per request ÷ Envoy + writ",
                serve
                    .as_ref()
                    .map_or(f64::NAN, |s| ratio(s.plain_cpu_us, w.plain_cpu_us)),
                "≤ 1.0",
                |r| r <= 1.0,
            ),
            (
                "`writ serve` CPU per 500-event SSE reply ÷ Envoy alone",
                serve
                    .as_ref()
                    .map_or(f64::NAN, |s| ratio(s.sse_cpu_us, none.sse_cpu_us)),
                "≤ 2.0",
                |r| r <= 2.0,
            ),
        ];
        for (what, value, goal, ok) in rows {
            println!(
                "| {what} | {} × | {goal} | {} |",
                f(value, 2),
                verdict(value, ok)
            );
        }

        let dcpu = w.plain_cpu_us - none.plain_cpu_us;
        let r_none = w.plain_rps / none.plain_rps;
        let r_pass = w.plain_rps / pass.plain_rps;
        let dp50 = w.lat_p50 - none.lat_p50;
        println!(
            "\n### Targets (issue 7), Envoy + writ against Envoy alone, plain 4 KB requests\n"
        );
        println!("| target | measured | verdict |");
        println!("|---|---|---|");
        println!(
            "| ≤ 30 µs CPU added per request | {} µs | {} |",
            f(dcpu, 1),
            verdict(dcpu, |d| d <= 30.0)
        );
        println!(
            "| throughput ≥ 0.75 × Envoy without a filter | {} × | {} |",
            f(r_none, 2),
            verdict(r_none, |r| r >= 0.75)
        );
        println!(
            "| throughput ≥ 0.9 × Envoy with a pass-through filter | {} × | {} |",
            f(r_pass, 2),
            verdict(r_pass, |r| r >= 0.9)
        );
        println!(
            "| ≤ 50 µs added to median latency at one connection | {} µs | {} |",
            f(dp50, 1),
            verdict(dp50, |d| d <= 50.0)
        );
    }
    println!("\n### Peak RSS under this load (VmHWM)\n");
    println!("| target | VmHWM MiB |");
    println!("|---|---|");
    for (t, s) in &sums {
        if s.hwm_mb.is_finite() {
            println!("| {} | {} |", t.label(), f(s.hwm_mb, 1));
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}

/// Today's date in UTC, `YYYY-MM-DD`, without a date crate.
fn date() -> String {
    let days = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() / 86_400)
        .unwrap_or(0) as i64;
    // Howard Hinnant's days-to-civil.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!("{y:04}-{m:02}-{d:02}")
}
