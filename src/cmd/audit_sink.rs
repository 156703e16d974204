//! `writ audit sink`: the synchronous audit endpoint. Envoy's filter posts a request's
//! records (`writ-audit <json>` lines) here and holds the end of the client's answer until
//! this answers 2xx, so the record is on disk before the client has its answer. One
//! process appends, in arrival order, so the hash chain needs no coordination.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::Path;
use std::process::ExitCode;
use std::sync::{Arc, Mutex};

use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper::{Request, Response};

use writ::audit_log::AuditLog;

/// The largest batch of records one request may post.
const MAX_BATCH_BYTES: usize = 4 << 20;

/// Serves until SIGINT or SIGTERM.
pub fn run(listen: SocketAddr, out: &Path, fsync: bool) -> anyhow::Result<ExitCode> {
    let log = AuditLog::open(out)
        .map_err(|e| anyhow::anyhow!("cannot open the audit log {}: {e}", out.display()))?;
    let log = Arc::new(Mutex::new(log));
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        let listener = tokio::net::TcpListener::bind(listen)
            .await
            .map_err(|e| anyhow::anyhow!("cannot listen on {listen}: {e}"))?;
        eprintln!(
            "writ audit sink: listening on http://{} -> {}",
            listener.local_addr()?,
            out.display()
        );
        loop {
            tokio::select! {
                accepted = listener.accept() => {
                    let Ok((stream, _)) = accepted else { continue };
                    let log = log.clone();
                    let service = hyper::service::service_fn(move |req| {
                        let log = log.clone();
                        async move { Ok::<_, Infallible>(store(req, &log, fsync).await) }
                    });
                    tokio::spawn(async move {
                        let io = hyper_util::rt::TokioIo::new(stream);
                        let _ = hyper::server::conn::http1::Builder::new()
                            .serve_connection(io, service)
                            .await;
                    });
                }
                _ = tokio::signal::ctrl_c() => break,
            }
        }
        Ok::<_, anyhow::Error>(())
    })?;
    Ok(ExitCode::SUCCESS)
}

/// Appends the posted records; 200 only once every one is written (and synced, with
/// `fsync`). A batch with a line that is not a record is refused whole (400), so the
/// filter withholds the answer rather than believe it was recorded.
async fn store(
    req: Request<hyper::body::Incoming>,
    log: &Mutex<AuditLog>,
    fsync: bool,
) -> Response<Full<Bytes>> {
    let reply = |status: u16, text: &str| {
        let mut r = Response::new(Full::new(Bytes::from(text.to_string())));
        *r.status_mut() = hyper::StatusCode::from_u16(status).unwrap_or_default();
        r
    };
    if req.method() != hyper::Method::POST {
        return reply(405, "POST records\n");
    }
    let limited = http_body_util::Limited::new(req.into_body(), MAX_BATCH_BYTES);
    let Ok(body) = limited.collect().await.map(|b| b.to_bytes()) else {
        return reply(400, "unreadable or oversized batch\n");
    };
    let Ok(text) = std::str::from_utf8(&body) else {
        return reply(400, "not UTF-8\n");
    };
    let records: Option<Vec<serde_json::Value>> = text
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(writ_plugin::audit::parse_log_line)
        .collect();
    let Some(records) = records.filter(|r| !r.is_empty()) else {
        return reply(400, "not audit records\n");
    };
    let mut log = match log.lock() {
        Ok(l) => l,
        Err(poisoned) => poisoned.into_inner(),
    };
    for record in &records {
        if let Err(e) = log.append(record) {
            eprintln!("error: writing the audit log: {e}");
            return reply(503, "the audit log cannot be written\n");
        }
    }
    if fsync && let Err(e) = log.sync() {
        eprintln!("error: syncing the audit log: {e}");
        return reply(503, "the audit log cannot be synced\n");
    }
    reply(200, "stored\n")
}
