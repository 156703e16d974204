//! `writ serve` end to end: a loopback upstream, the gateway, and a raw HTTP client.

use crate::common::{module_cache, probe};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use writ_runtime::{Gateway, GatewayConfig, Host, HostConfig};

#[derive(Debug, Clone)]
struct Seen {
    path: String,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

/// The upstream: records requests; `/sse` streams three events, each only after the test
/// says the client received the previous one (proving the gateway does not buffer).
struct Upstream {
    addr: SocketAddr,
    seen: Arc<Mutex<Vec<Seen>>>,
    step: mpsc::Sender<()>,
}

fn read_head(reader: &mut BufReader<TcpStream>) -> Option<(String, Vec<(String, String)>)> {
    let mut line = String::new();
    reader.read_line(&mut line).ok()?;
    let path = line.split_whitespace().nth(1)?.to_string();
    let mut headers = Vec::new();
    loop {
        line.clear();
        reader.read_line(&mut line).ok()?;
        let l = line.trim_end();
        if l.is_empty() {
            break;
        }
        let (k, v) = l.split_once(':')?;
        headers.push((k.trim().to_ascii_lowercase(), v.trim().to_string()));
    }
    Some((path, headers))
}

fn upstream() -> Upstream {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let (step, steps) = mpsc::channel::<()>();
    let steps = Arc::new(Mutex::new(steps));
    let record = seen.clone();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(conn) = conn else { continue };
            let record = record.clone();
            let steps = steps.clone();
            std::thread::spawn(move || {
                let mut reader = BufReader::new(conn.try_clone().unwrap());
                let Some((path, headers)) = read_head(&mut reader) else {
                    return;
                };
                let len = headers
                    .iter()
                    .find(|(k, _)| k == "content-length")
                    .and_then(|(_, v)| v.parse().ok())
                    .unwrap_or(0);
                let mut body = vec![0; len];
                reader.read_exact(&mut body).unwrap();
                record.lock().unwrap().push(Seen {
                    path: path.clone(),
                    headers,
                    body,
                });
                let mut conn = conn;
                if path.starts_with("/sse") {
                    conn.write_all(
                        b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\nconnection: close\r\n\r\n",
                    )
                    .unwrap();
                    for (i, event) in ["data: one\n\n", "data: two\n\n", "data: [done]\n\n"]
                        .iter()
                        .enumerate()
                    {
                        if i > 0 {
                            steps
                                .lock()
                                .unwrap()
                                .recv_timeout(Duration::from_secs(10))
                                .unwrap();
                        }
                        let chunk = format!("{:x}\r\n{event}\r\n", event.len());
                        conn.write_all(chunk.as_bytes()).unwrap();
                        conn.flush().unwrap();
                    }
                    conn.write_all(b"0\r\n\r\n").unwrap();
                } else {
                    let body = "{\"msg\":\"hello world\"}";
                    let reply = format!(
                        "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                        body.len()
                    );
                    conn.write_all(reply.as_bytes()).unwrap();
                }
            });
        }
    });
    Upstream { addr, seen, step }
}

fn gateway(upstream: &str, max_body: usize) -> Gateway {
    gateway_with_workers(upstream, max_body, 2)
}

/// One worker runs every connection on the gateway's own thread; more get one I/O thread
/// each (`io_runtime`): both shapes must proxy, stream and count alike.
fn gateway_with_workers(upstream: &str, max_body: usize, workers: usize) -> Gateway {
    let mut config = HostConfig::new(probe());
    config.cache_dir = Some(module_cache());
    config.limits.max_vms = 8;
    config.limits.call_timeout = Duration::from_millis(200);
    let host = Host::new(config).unwrap();
    let mut gw = GatewayConfig::new("127.0.0.1:0".parse().unwrap(), upstream);
    gw.max_request_body = max_body;
    gw.workers = workers;
    Gateway::start(host, gw).unwrap()
}

struct Reply {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Reply {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

fn send(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> TcpStream {
    let mut conn = TcpStream::connect(addr).unwrap();
    conn.set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    let mut req = format!(
        "{method} {path} HTTP/1.1\r\nhost: gateway.test\r\nconnection: close\r\ncontent-length: {}\r\n",
        body.len()
    );
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    conn.write_all(req.as_bytes()).unwrap();
    conn.write_all(body).unwrap();
    conn
}

fn read_chunk(reader: &mut BufReader<TcpStream>) -> Option<Vec<u8>> {
    let mut line = String::new();
    reader.read_line(&mut line).ok()?;
    let size = usize::from_str_radix(line.trim(), 16).ok()?;
    if size == 0 {
        return None;
    }
    let mut chunk = vec![0; size + 2];
    reader.read_exact(&mut chunk).ok()?;
    chunk.truncate(size);
    Some(chunk)
}

fn request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Reply {
    let conn = send(addr, method, path, headers, body);
    let mut reader = BufReader::new(conn);
    let mut line = String::new();
    reader.read_line(&mut line).unwrap();
    let status = line.split_whitespace().nth(1).unwrap().parse().unwrap();
    let mut headers = Vec::new();
    loop {
        line.clear();
        reader.read_line(&mut line).unwrap();
        let l = line.trim_end();
        if l.is_empty() {
            break;
        }
        let (k, v) = l.split_once(':').unwrap();
        headers.push((k.trim().to_ascii_lowercase(), v.trim().to_string()));
    }
    let mut body = Vec::new();
    if headers
        .iter()
        .any(|(k, v)| k == "transfer-encoding" && v == "chunked")
    {
        while let Some(chunk) = read_chunk(&mut reader) {
            body.extend(chunk);
        }
    } else {
        reader.read_to_end(&mut body).unwrap();
    }
    Reply {
        status,
        headers,
        body,
    }
}

#[test]
fn proxies_and_filters_both_directions() {
    let up = upstream();
    let gw = gateway(&format!("http://{}", up.addr), 1 << 20);
    let addr = gw.local_addr();

    let health = request(addr, "GET", "/healthz", &[], b"");
    assert_eq!(
        (health.status, health.body.as_slice()),
        (200, &b"{\"status\":\"ok\"}"[..])
    );

    let body = br#"{"model":"m","messages":[{"role":"user","content":"my secret"}]}"#;
    let reply = request(
        addr,
        "POST",
        "/v1/chat/completions",
        &[
            ("content-type", "application/json"),
            ("accept-encoding", "gzip, br"),
        ],
        body,
    );
    assert_eq!(reply.status, 200);
    assert_eq!(reply.body, b"{\"msg\":\"hello WORLD\"}");
    assert_eq!(reply.header("x-probe-response"), Some("1"));
    let seen = up.seen.lock().unwrap().clone();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].path, "/v1/chat/completions");
    assert_eq!(
        seen[0].body,
        br#"{"model":"m","messages":[{"role":"user","content":"my [redacted]"}]}"#
    );
    let header = |name: &str| {
        seen[0]
            .headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
    };
    assert_eq!(header("x-probe-seen").as_deref(), Some("1"));
    assert_eq!(header("accept-encoding").as_deref(), Some("identity"));
    assert!(header("x-probe-request-id").is_some_and(|id| id.starts_with("writ-")));
    assert!(header("x-probe-source").is_some_and(|s| s.starts_with("127.0.0.1:")));

    let denied = request(
        addr,
        "POST",
        "/v1/chat/completions",
        &[("x-probe", "deny")],
        b"{}",
    );
    assert_eq!(denied.status, 403);
    assert_eq!(denied.body, b"{\"error\":\"denied\"}");
    assert_eq!(
        up.seen.lock().unwrap().len(),
        1,
        "a denied request must not reach the upstream"
    );

    let metrics = request(addr, "GET", "/metrics", &[], b"");
    let text = String::from_utf8(metrics.body).unwrap();
    assert!(text.contains("probe_requests_total 2"), "{text}");
    gw.shutdown();
}

#[test]
fn sse_streams_event_by_event() {
    for workers in [1, 2] {
        sse_streams_event_by_event_with(workers);
    }
}

fn sse_streams_event_by_event_with(workers: usize) {
    let up = upstream();
    let gw = gateway_with_workers(&format!("http://{}", up.addr), 1 << 20, workers);
    let conn = send(gw.local_addr(), "POST", "/sse", &[], b"{\"stream\":true}");
    let mut reader = BufReader::new(conn);
    let mut line = String::new();
    reader.read_line(&mut line).unwrap();
    assert!(line.contains("200"), "{line}");
    loop {
        line.clear();
        reader.read_line(&mut line).unwrap();
        if line.trim_end().is_empty() {
            break;
        }
    }
    // The probe upper-cases SSE chunks as they pass; each must arrive before the upstream
    // is allowed to send the next.
    for expected in ["DATA: ONE\n\n", "DATA: TWO\n\n", "DATA: [DONE]\n\n"] {
        let chunk = read_chunk(&mut reader).unwrap();
        assert_eq!(String::from_utf8(chunk).unwrap(), expected);
        let _ = up.step.send(());
    }
    assert_eq!(read_chunk(&mut reader), None);
    gw.shutdown();
}

#[test]
fn limits_and_failures_answer_json() {
    let up = upstream();
    let gw = gateway(&format!("http://{}", up.addr), 1024);
    let addr = gw.local_addr();
    let big = vec![b'a'; 4096];
    let reply = request(addr, "POST", "/v1/chat/completions", &[], &big);
    assert_eq!(reply.status, 413);
    let err: serde_json::Value = serde_json::from_slice(&reply.body).unwrap();
    assert_eq!(err["error"]["code"], "body_too_large");

    for _ in 0..2 {
        let reply = request(addr, "GET", "/", &[("x-probe", "loop")], b"");
        assert_eq!(reply.status, 503);
        // One fixed body for every engine failure: no backtrace, path or internal message.
        assert_eq!(
            reply.body,
            writ_runtime::error::ENGINE_ERROR_BODY.as_bytes()
        );
    }
    // Both workers recovered.
    for _ in 0..4 {
        assert_eq!(request(addr, "GET", "/ok", &[], b"").status, 200);
    }
    assert!(up.seen.lock().unwrap().iter().all(|s| s.path == "/ok"));
    gw.shutdown();

    let gw = gateway("http://127.0.0.1:9", 1024);
    let reply = request(gw.local_addr(), "GET", "/", &[], b"");
    assert_eq!(reply.status, 502);
    gw.shutdown();
}

#[test]
fn concurrent_requests_share_metrics() {
    for workers in [1, 2, 3] {
        concurrent_requests_share_metrics_with(workers);
    }
}

fn concurrent_requests_share_metrics_with(workers: usize) {
    let up = upstream();
    let gw = gateway_with_workers(&format!("http://{}", up.addr), 1 << 20, workers);
    let addr = gw.local_addr();
    let clients: Vec<_> = (0..6)
        .map(|_| {
            std::thread::spawn(move || {
                for _ in 0..10 {
                    let reply = request(
                        addr,
                        "POST",
                        "/v1/chat/completions",
                        &[("x-probe", "shared")],
                        b"{}",
                    );
                    assert_eq!(reply.status, 200);
                }
            })
        })
        .collect();
    for c in clients {
        c.join().unwrap();
    }
    // `proxy_on_log` runs after the last byte went out (as in Envoy), so the gauge may
    // trail the client by a moment.
    let mut text = String::new();
    for _ in 0..100 {
        text = String::from_utf8(request(addr, "GET", "/metrics", &[], b"").body).unwrap();
        if text.contains("probe_inflight 0") {
            break;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    assert!(text.contains("probe_requests_total 60"), "{text}");
    assert!(text.contains("probe_inflight 0"), "{text}");
    assert_eq!(up.seen.lock().unwrap().len(), 60);
    gw.shutdown();
}

#[test]
fn reload_switches_modules_for_new_requests() {
    let up = upstream();
    let gw = gateway(&format!("http://{}", up.addr), 1 << 20);
    let addr = gw.local_addr();
    let before = request(addr, "GET", "/a", &[], b"");
    assert_eq!(before.header("x-probe-response"), Some("1"));
    let mut config = HostConfig::new(crate::common::passthrough());
    config.cache_dir = Some(module_cache());
    config.limits.max_vms = 4;
    gw.reload(Host::new(config).unwrap()).unwrap();
    let after = request(addr, "GET", "/b", &[], b"");
    assert_eq!(after.status, 200);
    assert_eq!(after.header("x-probe-response"), None);
    assert_eq!(after.body, b"{\"msg\":\"hello world\"}");
    gw.shutdown();
}

/// An HTTPS upstream with the test CA's certificate for `localhost`.
fn tls_upstream() -> SocketAddr {
    use rustls_pki_types::pem::PemObject;
    use rustls_pki_types::{CertificateDer, PrivateKeyDer};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/tls");
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(dir.join("server.pem"))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    let key = PrivateKeyDer::from_pem_file(dir.join("server.key")).unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    listener.set_nonblocking(true).unwrap();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let listener = tokio::net::TcpListener::from_std(listener).unwrap();
            loop {
                let (tcp, _) = listener.accept().await.unwrap();
                let acceptor = acceptor.clone();
                tokio::spawn(async move {
                    let Ok(mut tls) = acceptor.accept(tcp).await else { return };
                    let mut head = Vec::new();
                    let mut buf = [0u8; 1024];
                    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                        match tls.read(&mut buf).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => head.extend_from_slice(&buf[..n]),
                        }
                    }
                    let body = "{\"msg\":\"hello over tls\"}";
                    let reply = format!(
                        "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                        body.len()
                    );
                    let _ = tls.write_all(reply.as_bytes()).await;
                    let _ = tls.shutdown().await;
                });
            }
        });
    });
    addr
}

#[test]
fn https_upstream_with_a_private_ca() {
    let addr = tls_upstream();
    let ca = std::fs::read(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/tls/ca.pem"),
    )
    .unwrap();
    let mut config = HostConfig::new(probe());
    config.cache_dir = Some(module_cache());
    config.limits.max_vms = 4;
    let upstream = format!("https://localhost:{}", addr.port());
    let mut gw = GatewayConfig::new("127.0.0.1:0".parse().unwrap(), &upstream);
    gw.upstream_ca = Some(ca);
    let gw = Gateway::start(Host::new(config.clone()).unwrap(), gw).unwrap();
    let reply = request(gw.local_addr(), "GET", "/v1/models", &[], b"");
    assert_eq!(
        reply.status,
        200,
        "{}",
        String::from_utf8_lossy(&reply.body)
    );
    assert_eq!(reply.body, b"{\"msg\":\"hello over tls\"}");
    gw.shutdown();

    // Without the CA the certificate is refused: a 502, never a plaintext fallback.
    let gw = GatewayConfig::new("127.0.0.1:0".parse().unwrap(), &upstream);
    let gw = Gateway::start(Host::new(config).unwrap(), gw).unwrap();
    let reply = request(gw.local_addr(), "GET", "/v1/models", &[], b"");
    assert_eq!(reply.status, 502);
    gw.shutdown();
}

#[test]
fn shutdown_drains_requests_in_flight() {
    let up = upstream();
    let gw = gateway(&format!("http://{}", up.addr), 1 << 20);
    let addr = gw.local_addr();
    let conn = send(addr, "POST", "/sse", &[], b"{}");
    let mut reader = BufReader::new(conn);
    let mut line = String::new();
    loop {
        line.clear();
        reader.read_line(&mut line).unwrap();
        if line.trim_end().is_empty() {
            break;
        }
    }
    assert_eq!(read_chunk(&mut reader).unwrap(), b"DATA: ONE\n\n");
    let stopping = std::thread::spawn(move || gw.shutdown());
    std::thread::sleep(Duration::from_millis(100));
    assert!(
        !stopping.is_finished(),
        "shutdown must wait for the stream in flight"
    );
    assert!(
        TcpStream::connect(addr).is_err(),
        "no new connections while draining"
    );
    for expected in ["DATA: TWO\n\n", "DATA: [DONE]\n\n"] {
        let _ = up.step.send(());
        assert_eq!(
            String::from_utf8(read_chunk(&mut reader).unwrap()).unwrap(),
            expected
        );
    }
    assert_eq!(read_chunk(&mut reader), None);
    stopping.join().unwrap();
}

#[test]
fn gateway_overhead_is_measured() {
    let up = upstream();
    let mut config = HostConfig::new(crate::common::passthrough());
    config.cache_dir = Some(module_cache());
    config.limits.max_vms = 4;
    let gw = GatewayConfig::new(
        "127.0.0.1:0".parse().unwrap(),
        &format!("http://{}", up.addr),
    );
    let gw = Gateway::start(Host::new(config).unwrap(), gw).unwrap();
    let body = vec![b'x'; 4096];
    let time = |addr: SocketAddr| {
        let n = 100;
        let started = std::time::Instant::now();
        for _ in 0..n {
            assert_eq!(
                request(addr, "POST", "/v1/chat/completions", &[], &body).status,
                200
            );
        }
        started.elapsed() / n
    };
    let _ = time(gw.local_addr());
    let direct = time(up.addr);
    let through = time(gw.local_addr());
    println!(
        "4 KB POST, new connection each: direct {direct:?}, through the gateway with the \
         passthrough filter {through:?}"
    );
    assert!(through < Duration::from_millis(50), "{through:?}");
    gw.shutdown();
}

#[test]
fn response_phase_local_reply_and_callouts_through_the_gateway() {
    let up = upstream();
    let backend = crate::common::http_server(200, "found");
    let mut config = HostConfig::new(probe());
    config.cache_dir = Some(module_cache());
    config.limits.max_vms = 4;
    config.clusters.insert("backend".to_string(), backend);
    let gw = GatewayConfig::new(
        "127.0.0.1:0".parse().unwrap(),
        &format!("http://{}", up.addr),
    );
    let gw = Gateway::start(Host::new(config).unwrap(), gw).unwrap();
    let addr = gw.local_addr();

    let reply = request(addr, "GET", "/r", &[("x-probe", "deny-response")], b"");
    assert_eq!(reply.status, 502);
    assert_eq!(reply.header("x-blocked"), Some("reply"));
    assert_eq!(reply.body, b"blocked reply");
    assert!(!String::from_utf8_lossy(&reply.body).contains("hello"));

    let reply = request(addr, "GET", "/c", &[("x-probe", "callout")], b"");
    assert_eq!(reply.status, 200);
    let seen = up.seen.lock().unwrap().clone();
    let last = seen.iter().find(|s| s.path == "/c").unwrap();
    let header = |n: &str| {
        last.headers
            .iter()
            .find(|(k, _)| k == n)
            .map(|(_, v)| v.as_str())
    };
    assert_eq!(header("x-callout-status"), Some("200"));
    assert_eq!(header("x-callout-body"), Some("found"));
    gw.shutdown();
}

#[test]
fn a_slow_callout_does_not_hold_the_worker() {
    let up = upstream();
    let slow = TcpListener::bind("127.0.0.1:0").unwrap();
    let slow_addr = slow.local_addr().unwrap();
    std::thread::spawn(move || {
        for conn in slow.incoming() {
            let Ok(mut conn) = conn else { continue };
            std::thread::spawn(move || {
                let mut buf = [0u8; 2048];
                let _ = conn.read(&mut buf);
                std::thread::sleep(Duration::from_millis(800));
                let _ = conn.write_all(
                    b"HTTP/1.1 200 OK\r\ncontent-length: 4\r\nconnection: close\r\n\r\nslow",
                );
            });
        }
    });
    let mut config = HostConfig::new(probe());
    config.cache_dir = Some(module_cache());
    config.limits.max_vms = 4;
    config
        .clusters
        .insert("backend".to_string(), format!("http://{slow_addr}"));
    let mut gw = GatewayConfig::new(
        "127.0.0.1:0".parse().unwrap(),
        &format!("http://{}", up.addr),
    );
    gw.workers = 1;
    let gw = Gateway::start(Host::new(config).unwrap(), gw).unwrap();
    let addr = gw.local_addr();
    let started = std::time::Instant::now();
    let slow_request =
        std::thread::spawn(move || request(addr, "GET", "/slow", &[("x-probe", "callout")], b""));
    std::thread::sleep(Duration::from_millis(100));
    let fast = request(addr, "GET", "/fast", &[], b"");
    let fast_done = started.elapsed();
    assert_eq!(fast.status, 200);
    assert!(fast_done < Duration::from_millis(700), "{fast_done:?}");
    let slow = slow_request.join().unwrap();
    assert_eq!(slow.status, 200);
    assert!(started.elapsed() >= Duration::from_millis(800));
    let seen = up.seen.lock().unwrap().clone();
    let slow_seen = seen.iter().find(|s| s.path == "/slow").unwrap();
    assert!(
        slow_seen
            .headers
            .contains(&("x-callout-body".to_string(), "slow".to_string()))
    );
    gw.shutdown();
}
