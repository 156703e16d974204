//! A bounded closed-loop HTTP/1.1 load generator on hyper.
//!
//! `connections` keep-alive connections each send one request, read the whole reply, and
//! send the next, until `requests` have been sent in total or `max_time` has passed —
//! whichever comes first, so no run is unbounded. Every request's latency (send to last
//! body byte) and time to first body byte are recorded; nothing is sampled.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Body;
use hyper::client::conn::http1;
use hyper::{Method, Request};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

/// What to send.
#[derive(Debug, Clone)]
pub struct Spec {
    pub path: String,
    pub headers: Vec<(String, String)>,
    pub body: Bytes,
}

/// How much load.
#[derive(Debug, Clone, Copy)]
pub struct Bounds {
    pub connections: usize,
    pub requests: u64,
    pub max_time: Duration,
}

/// What one run measured.
#[derive(Debug, Clone, Default)]
pub struct Stats {
    /// Requests answered with a 2xx status.
    pub ok: u64,
    /// Requests answered otherwise, or failed on the wire.
    pub errors: u64,
    /// The first non-2xx status seen, for the report.
    pub first_bad_status: Option<u16>,
    pub elapsed: Duration,
    /// Latency of every successful request, in nanoseconds, sorted.
    pub latency_ns: Vec<u64>,
    /// Time to the first body byte of every successful request, in nanoseconds, sorted.
    pub ttfb_ns: Vec<u64>,
    /// Body bytes received in total.
    pub body_bytes: u64,
    /// One reply body, to check what the proxy did to it.
    pub sample: Option<Bytes>,
}

impl Stats {
    pub fn rps(&self) -> f64 {
        self.ok as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }

    /// The `q`-quantile (0..=1) of the latencies, in microseconds.
    pub fn latency_us(&self, q: f64) -> f64 {
        quantile(&self.latency_ns, q)
    }

    /// The `q`-quantile of the time to first byte, in microseconds.
    pub fn ttfb_us(&self, q: f64) -> f64 {
        quantile(&self.ttfb_ns, q)
    }
}

fn quantile(sorted: &[u64], q: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() - 1) as f64 * q).round() as usize;
    sorted.get(i).copied().unwrap_or(0) as f64 / 1e3
}

/// Runs the load on a fresh single-threaded runtime (the load generator takes at most one
/// core) and returns what it measured.
pub fn run(addr: SocketAddr, spec: &Spec, bounds: Bounds) -> anyhow::Result<Stats> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(run_async(addr, Arc::new(spec.clone()), bounds))
}

async fn run_async(addr: SocketAddr, spec: Arc<Spec>, bounds: Bounds) -> anyhow::Result<Stats> {
    let issued = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let deadline = start + bounds.max_time;
    let mut tasks = Vec::new();
    for _ in 0..bounds.connections.max(1) {
        let spec = spec.clone();
        let issued = issued.clone();
        tasks.push(tokio::spawn(async move {
            connection(addr, &spec, &issued, bounds.requests, deadline).await
        }));
    }
    let mut total = Stats::default();
    for t in tasks {
        let s = t.await??;
        total.ok += s.ok;
        total.errors += s.errors;
        total.first_bad_status = total.first_bad_status.or(s.first_bad_status);
        total.latency_ns.extend(s.latency_ns);
        total.ttfb_ns.extend(s.ttfb_ns);
        total.body_bytes += s.body_bytes;
        total.sample = total.sample.or(s.sample);
    }
    total.elapsed = start.elapsed();
    total.latency_ns.sort_unstable();
    total.ttfb_ns.sort_unstable();
    Ok(total)
}

async fn connection(
    addr: SocketAddr,
    spec: &Spec,
    issued: &AtomicU64,
    requests: u64,
    deadline: Instant,
) -> anyhow::Result<Stats> {
    let mut stats = Stats::default();
    let mut sender = None;
    while Instant::now() < deadline && issued.fetch_add(1, Ordering::Relaxed) < requests {
        if sender.is_none() {
            let stream = TcpStream::connect(addr).await?;
            stream.set_nodelay(true)?;
            let (s, conn) = http1::handshake(TokioIo::new(stream)).await?;
            tokio::spawn(conn);
            sender = Some(s);
        }
        let Some(s) = sender.as_mut() else { break };
        let mut req = Request::builder()
            .method(Method::POST)
            .uri(&spec.path)
            .header("host", "bench.local");
        for (k, v) in &spec.headers {
            req = req.header(k, v);
        }
        let req = req.body(Full::new(spec.body.clone()))?;
        let t0 = Instant::now();
        let result = async {
            let resp = s.send_request(req).await?;
            let status = resp.status().as_u16();
            let mut body = resp.into_body();
            let mut first = None;
            let mut bytes = Vec::new();
            while let Some(frame) =
                std::future::poll_fn(|cx| std::pin::Pin::new(&mut body).poll_frame(cx)).await
            {
                if let Ok(data) = frame?.into_data() {
                    if first.is_none() && !data.is_empty() {
                        first = Some(t0.elapsed());
                    }
                    bytes.extend_from_slice(&data);
                }
            }
            anyhow::Ok((status, first.unwrap_or_else(|| t0.elapsed()), bytes))
        }
        .await;
        let total = t0.elapsed();
        match result {
            Ok((status, ttfb, bytes)) if (200..300).contains(&status) => {
                stats.ok += 1;
                stats.latency_ns.push(total.as_nanos() as u64);
                stats.ttfb_ns.push(ttfb.as_nanos() as u64);
                stats.body_bytes += bytes.len() as u64;
                if stats.sample.is_none() {
                    stats.sample = Some(Bytes::from(bytes));
                }
            }
            Ok((status, _, bytes)) => {
                stats.errors += 1;
                if stats.first_bad_status.is_none() {
                    stats.first_bad_status = Some(status);
                    stats.sample = Some(Bytes::from(bytes));
                }
            }
            Err(_) => {
                stats.errors += 1;
                sender = None;
            }
        }
    }
    Ok(stats)
}
