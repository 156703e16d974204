//! `writ serve`: an OpenAI-compatible reverse proxy that runs a proxy-wasm module on every
//! request and response, streaming SSE replies chunk by chunk.
//!
//! hyper 1 on tokio does the I/O; a pool of VMs (one per worker) runs the filter. A request
//! is pinned to one VM for its whole life, since its HTTP context lives there; each step
//! runs on the I/O thread that has the request when the VM is free, else on the VM's own
//! thread (see `workers`). There are as many I/O threads as VMs, each preferring its own.

pub mod identity;
mod proxy;
pub mod telemetry;
mod workers;

use crate::error::HostError;
use crate::host::Host;
use hyper::server::conn::http1;
use hyper_util::rt::TokioIo;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;

/// The most request headers a client may send (Envoy's `max_headers_count` default).
pub const MAX_REQUEST_HEADERS: usize = 100;
/// The largest request header block, names and values, in bytes (Envoy's
/// `max_request_headers_kb` default, 60 KiB); larger gets 431.
pub const MAX_REQUEST_HEADER_BYTES: usize = 60 << 10;
/// hyper's read buffer, which bounds a request head as it is parsed (431 past it).
const MAX_REQUEST_HEAD_BYTES: usize = 96 << 10;

/// How the gateway listens and where it forwards.
#[derive(Debug, Clone)]
pub struct GatewayConfig {
    pub listen: SocketAddr,
    /// Base URL of the upstream (`http://127.0.0.1:8000`, `https://api.openai.com`, a path
    /// prefix allowed).
    pub upstream: String,
    /// Extra CA certificates (PEM) trusted for an HTTPS upstream, besides the web roots.
    pub upstream_ca: Option<Vec<u8>>,
    /// Worker threads (one VM each).
    pub workers: usize,
    /// Largest request body accepted; larger gets 413.
    pub max_request_body: usize,
    /// Budget for the upstream's response headers.
    pub upstream_timeout: Duration,
    /// How long a graceful shutdown waits for requests in flight.
    pub drain_timeout: Duration,
    /// Receives every log line a filter wrote for a request, when its stream closes; the
    /// gateway itself only forwards them to `tracing` at debug level.
    pub log_sink: Option<LogSink>,
    /// Identity headers to remove and the JWT verifier that may set them.
    pub identity: identity::IdentityConfig,
    /// Told about every request the gateway itself refused or failed (a bad token, an
    /// engine failure), for which the filter could not write its own record.
    pub refusal_sink: Option<RefusalSink>,
    /// OpenTelemetry: spans and GenAI metrics over OTLP/HTTP (`writ serve --otlp`).
    pub telemetry: Option<telemetry::TelemetryConfig>,
}

/// A request the gateway answered itself because the filter could not: what a caller
/// needs to record it (an audit record, say). Holds no request content.
#[derive(Debug, Clone)]
pub struct Refusal {
    /// `x-request-id` as the client sent it, else the one the gateway assigned.
    pub request_id: String,
    /// The status the client received (for a failure after the reply headers were sent,
    /// the status already sent).
    pub status: u16,
    /// Why: [`RefusalKind::Unauthenticated`] or [`RefusalKind::EngineFailure`].
    pub kind: RefusalKind,
    /// A fixed machine-readable reason (`token_expired`, `filter_timeout`, …).
    pub code: &'static str,
}

/// The reasons the gateway answers for the filter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RefusalKind {
    /// The identity check refused the request (401); the filter never saw it.
    Unauthenticated,
    /// The filter trapped, ran past its deadline, or the host failed it (fail closed).
    EngineFailure,
    /// The gateway refused the message before the filter saw it: not valid HTTP, framed
    /// ambiguously, or over a size limit.
    Rejected,
}

/// Where [`Refusal`]s go. Called on the request's task; keep it short.
#[derive(Clone)]
pub struct RefusalSink(pub std::sync::Arc<dyn Fn(&Refusal) + Send + Sync>);

impl std::fmt::Debug for RefusalSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("RefusalSink")
    }
}

/// Where a request's filter logs go (an audit log, say). Called on the request's task;
/// keep it short.
#[derive(Clone)]
pub struct LogSink(pub std::sync::Arc<dyn Fn(&crate::LogRecord) + Send + Sync>);

impl std::fmt::Debug for LogSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("LogSink")
    }
}

impl GatewayConfig {
    /// Defaults: 2 workers, 1 MiB bodies (Envoy's default buffer limit), 60 s upstream.
    pub fn new(listen: SocketAddr, upstream: &str) -> Self {
        Self {
            listen,
            upstream: upstream.trim_end_matches('/').to_string(),
            upstream_ca: None,
            workers: 2,
            max_request_body: 1 << 20,
            upstream_timeout: Duration::from_secs(60),
            drain_timeout: Duration::from_secs(10),
            log_sink: None,
            identity: identity::IdentityConfig::default(),
            refusal_sink: None,
            telemetry: None,
        }
    }
}

/// Why the gateway could not start.
#[derive(Debug, thiserror::Error)]
pub enum GatewayError {
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("unsupported upstream `{0}`: expected http://host:port or https://host")]
    Upstream(String),
    #[error(transparent)]
    Host(#[from] HostError),
    #[error("runtime: {0}")]
    Runtime(std::io::Error),
    #[error("tls: {0}")]
    Tls(String),
    #[error("reload: {0}")]
    Reload(String),
    #[error(transparent)]
    Telemetry(#[from] telemetry::EndpointError),
}

/// How long a stopping gateway waits for its modules' root contexts to finish (a fleet
/// member's give-back of its budget leases: a few calls to the store, each bounded by
/// its own timeout). Past it the gateway exits anyway.
pub const FINISH_TIMEOUT: Duration = Duration::from_secs(5);

/// The runtime that does the gateway's I/O: one thread per worker, as Envoy runs one worker
/// thread per `--concurrency`, each I/O thread preferring its own VM
/// ([`workers::Workers::pick`]). More I/O threads than VMs made two threads meet at one VM,
/// and the one that lost hopped to the VM's thread and back, two wake-ups per step; one
/// worker runs everything on the gateway's thread, with no scheduler between threads.
fn io_runtime(workers: usize) -> std::io::Result<tokio::runtime::Runtime> {
    if workers <= 1 {
        return tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build();
    }
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(workers)
        .enable_all()
        .thread_name("writ-io")
        // The workers start with the runtime, so they take 0..workers; a blocking-pool
        // thread started later (a DNS lookup) takes a higher index and runs no request.
        .on_thread_start(move || {
            workers::set_io_thread(next.fetch_add(1, std::sync::atomic::Ordering::Relaxed));
        })
        .build()
}

/// A gateway serving on a background thread; [`Gateway::shutdown`] stops it gracefully.
pub struct Gateway {
    addr: SocketAddr,
    state: Arc<proxy::State>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Gateway {
    /// Binds, starts the workers (one VM each) and serves on a background thread.
    pub fn start(host: Host, config: GatewayConfig) -> Result<Gateway, GatewayError> {
        let runtime = io_runtime(config.workers).map_err(GatewayError::Runtime)?;
        let std_listener =
            std::net::TcpListener::bind(config.listen).map_err(|source| GatewayError::Bind {
                addr: config.listen,
                source,
            })?;
        std_listener
            .set_nonblocking(true)
            .map_err(GatewayError::Runtime)?;
        let addr = std_listener.local_addr().map_err(GatewayError::Runtime)?;
        let state = Arc::new(proxy::State::new(host, &config)?);
        let serving = state.clone();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let drain = config.drain_timeout;
        let thread = std::thread::Builder::new()
            .name("writ-gateway".to_string())
            .spawn(move || {
                runtime.block_on(async move {
                    serving.start_telemetry();
                    match TcpListener::from_std(std_listener) {
                        Ok(listener) => {
                            accept_loop(listener, serving.clone(), stopped, drain).await
                        }
                        Err(e) => tracing::error!("cannot listen: {e}"),
                    }
                    // The last spans and metrics, once the requests in flight are done.
                    serving.stop_telemetry().await;
                });
            })
            .map_err(GatewayError::Runtime)?;
        tracing::info!(%addr, upstream = config.upstream, "writ gateway listening");
        Ok(Gateway {
            addr,
            state,
            stop: Some(stop),
            thread: Some(thread),
        })
    }

    /// The address it listens on (useful with port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Switches new requests to `host` (a new module or configuration) with fresh workers;
    /// requests in flight finish on the old ones. The new host's metrics start from zero.
    pub fn reload(&self, host: Host) -> Result<(), GatewayError> {
        self.state.replace(host)?;
        tracing::info!(sha256 = self.state.current_sha256(), "gateway reloaded");
        Ok(())
    }

    /// Stops accepting, lets requests in flight finish (up to the drain timeout), and waits.
    pub fn shutdown(mut self) {
        self.stop_and_join();
    }

    /// Serves until SIGINT or SIGTERM, then shuts down gracefully. On SIGHUP it calls
    /// `reload` for a new host and switches to it; a failed reload keeps the current one.
    pub fn run_until_signal(
        self,
        reload: impl Fn() -> Result<Host, String>,
    ) -> Result<(), GatewayError> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(GatewayError::Runtime)?;
        runtime.block_on(async {
            let term = async {
                #[cfg(unix)]
                {
                    use tokio::signal::unix::{SignalKind, signal};
                    match signal(SignalKind::terminate()) {
                        Ok(mut s) => {
                            s.recv().await;
                        }
                        Err(_) => std::future::pending::<()>().await,
                    }
                }
                #[cfg(not(unix))]
                std::future::pending::<()>().await
            };
            let hangups = async {
                #[cfg(unix)]
                {
                    use tokio::signal::unix::{SignalKind, signal};
                    match signal(SignalKind::hangup()) {
                        Ok(mut s) => loop {
                            s.recv().await;
                            match reload()
                                .map_err(GatewayError::Reload)
                                .and_then(|h| self.reload(h))
                            {
                                Ok(()) => eprintln!("writ serve: reloaded"),
                                Err(e) => eprintln!(
                                    "writ serve: reload failed, keeping the current module: {e}"
                                ),
                            }
                        },
                        Err(_) => std::future::pending::<()>().await,
                    }
                }
                #[cfg(not(unix))]
                std::future::pending::<()>().await
            };
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term => {}
                _ = hangups => {}
            }
        });
        tracing::info!("shutting down");
        self.shutdown();
        Ok(())
    }

    fn stop_and_join(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
            // Requests are drained: each VM's root context finishes (a fleet member gives
            // its budget leases back), bounded in time.
            self.state
                .finish(std::time::Instant::now() + FINISH_TIMEOUT);
        }
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        self.stop_and_join();
    }
}

async fn accept_loop(
    listener: TcpListener,
    state: Arc<proxy::State>,
    mut stopped: tokio::sync::oneshot::Receiver<()>,
    drain: Duration,
) {
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let (stream, peer) = match accepted {
                    Ok(a) => a,
                    Err(e) => {
                        tracing::warn!("accept failed: {e}");
                        continue;
                    }
                };
                let _ = stream.set_nodelay(true);
                let conn_state = state.clone();
                let state = state.clone();
                let service = hyper::service::service_fn(move |req| {
                    let state = state.clone();
                    async move { Ok::<_, std::convert::Infallible>(proxy::handle(state, req, peer).await) }
                });
                // Envoy's limits, so both hosts refuse the same header blocks: at most 100
                // headers (431); the 60 KiB of header bytes is checked per request, and
                // hyper's read buffer bounds a head before that (431 past it).
                let conn = http1::Builder::new()
                    .max_headers(MAX_REQUEST_HEADERS)
                    .max_buf_size(MAX_REQUEST_HEAD_BYTES)
                    .serve_connection(TokioIo::new(stream), service);
                let conn = graceful.watch(conn);
                let state = conn_state;
                tokio::spawn(async move {
                    if let Err(e) = conn.await {
                        tracing::debug!("connection error: {e}");
                        // hyper answered a message it could not parse (400, or 431 for a
                        // head past its buffer): that refusal gets its record too.
                        if e.is_parse_too_large() {
                            state.record_codec_refusal(431);
                        } else if e.is_parse() {
                            state.record_codec_refusal(400);
                        }
                    }
                });
            }
            _ = &mut stopped => break,
        }
    }
    drop(listener);
    if tokio::time::timeout(drain, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!("requests still in flight after the drain timeout; closing");
    }
}
