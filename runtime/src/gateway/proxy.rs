//! One request through the gateway: filter the request on its worker, forward it, then
//! filter the reply frame by frame and stream what the filter releases to the client.

use super::workers::Workers;
use super::{GatewayConfig, GatewayError};
use crate::abi::Headers;
use crate::error::HostError;
use crate::host::Host;
use crate::state::{LocalResponse, StreamInfo, header_get};
use crate::vm::{Callout, CalloutReply, Flow, StreamId, Vm};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::{Body, Frame, Incoming};
use hyper::{Request, Response, StatusCode};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

pub(crate) type ResBody = http_body_util::combinators::BoxBody<Bytes, std::io::Error>;

/// Headers that describe one hop, never forwarded (RFC 9110 §7.6.1).
const HOP_BY_HOP: [&str; 9] = [
    "connection",
    "keep-alive",
    "proxy-connection",
    "transfer-encoding",
    "upgrade",
    "te",
    "trailer",
    "host",
    "content-length",
];

/// A module and the workers running it. Replaced whole on reload; requests in flight keep
/// the one they started with.
pub(crate) struct Pipeline {
    host: Host,
    workers: Workers,
}

/// The worker a request is pinned to, and the pipeline it belongs to.
#[derive(Clone)]
pub(crate) struct Lane {
    pipeline: Arc<Pipeline>,
    index: usize,
}

impl Lane {
    async fn run<R: Send + 'static>(
        &self,
        f: impl FnOnce(&mut crate::vm::Vm) -> R + Send + 'static,
    ) -> Result<R, super::workers::WorkerGone> {
        self.pipeline.workers.run(self.index, f).await
    }
}

pub(crate) struct State {
    pipeline: std::sync::RwLock<Arc<Pipeline>>,
    workers_per_pipeline: usize,
    client: Client<HttpsConnector<HttpConnector>, Full<Bytes>>,
    upstream_base: String,
    upstream_authority: String,
    max_body: usize,
    upstream_timeout: Duration,
    request_ids: AtomicU64,
    log_sink: Option<super::LogSink>,
}

impl State {
    pub(crate) fn new(host: Host, config: &GatewayConfig) -> Result<State, GatewayError> {
        let rest = config
            .upstream
            .strip_prefix("http://")
            .or_else(|| config.upstream.strip_prefix("https://"))
            .ok_or_else(|| GatewayError::Upstream(config.upstream.clone()))?;
        let authority = rest.split('/').next().unwrap_or("").to_string();
        if authority.is_empty() {
            return Err(GatewayError::Upstream(config.upstream.clone()));
        }
        let workers = Workers::start(&host, config.workers)?;
        let pipeline = std::sync::RwLock::new(Arc::new(Pipeline { host, workers }));
        let connector = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls_config(config.upstream_ca.as_deref())?)
            .https_or_http()
            .enable_http1()
            .build();
        let client = Client::builder(hyper_util::rt::TokioExecutor::new()).build(connector);
        Ok(State {
            pipeline,
            workers_per_pipeline: config.workers,
            client,
            upstream_base: config.upstream.clone(),
            upstream_authority: authority,
            max_body: config.max_request_body,
            upstream_timeout: config.upstream_timeout,
            request_ids: AtomicU64::new(1),
            log_sink: config.log_sink.clone(),
        })
    }
}

/// TLS for HTTPS upstreams: the public web roots, plus `extra_ca` (PEM) when given.
fn tls_config(extra_ca: Option<&[u8]>) -> Result<rustls::ClientConfig, GatewayError> {
    use rustls_pki_types::CertificateDer;
    use rustls_pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore {
        roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
    };
    if let Some(pem) = extra_ca {
        let mut added = 0;
        for cert in CertificateDer::pem_slice_iter(pem) {
            let cert = cert.map_err(|e| GatewayError::Tls(format!("upstream CA: {e}")))?;
            roots
                .add(cert)
                .map_err(|e| GatewayError::Tls(format!("upstream CA: {e}")))?;
            added += 1;
        }
        if added == 0 {
            return Err(GatewayError::Tls(
                "upstream CA: no certificate in the file".into(),
            ));
        }
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    Ok(rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| GatewayError::Tls(e.to_string()))?
        .with_root_certificates(roots)
        .with_no_client_auth())
}

impl State {
    /// The pipeline new requests use.
    pub(crate) fn current(&self) -> Arc<Pipeline> {
        self.pipeline
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    fn lane(&self) -> Lane {
        let pipeline = self.current();
        let index = pipeline.workers.pick();
        Lane { pipeline, index }
    }

    /// Hex sha256 of the module serving new requests.
    pub(crate) fn current_sha256(&self) -> String {
        self.current().host.module_sha256().to_string()
    }

    /// Starts workers for `host` and sends new requests to them.
    pub(crate) fn replace(&self, host: Host) -> Result<(), HostError> {
        let workers = Workers::start(&host, self.workers_per_pipeline)?;
        let next = Arc::new(Pipeline { host, workers });
        *self.pipeline.write().unwrap_or_else(|e| e.into_inner()) = next;
        Ok(())
    }
}

fn full(bytes: impl Into<Bytes>) -> ResBody {
    Full::new(bytes.into())
        .map_err(|never| match never {})
        .boxed()
}

fn json_error(status: u16, kind: &str, message: &str) -> Response<ResBody> {
    let body = serde_json::json!({ "error": { "type": kind, "message": message } });
    respond(
        status,
        &[("content-type".to_string(), "application/json".to_string())],
        body.to_string().into_bytes(),
    )
}

fn respond(status: u16, headers: &[(String, String)], body: Vec<u8>) -> Response<ResBody> {
    let mut builder =
        Response::builder().status(StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_GATEWAY));
    for (k, v) in headers {
        if k.starts_with(':') || HOP_BY_HOP.contains(&k.as_str()) {
            continue;
        }
        builder = builder.header(k.as_str(), v.as_str());
    }
    builder
        .body(full(body))
        .unwrap_or_else(|_| Response::new(full("invalid response headers")))
}

fn local(resp: &LocalResponse) -> Response<ResBody> {
    respond(resp.status, &resp.headers, resp.body.clone())
}

fn fail(e: &HostError) -> Response<ResBody> {
    local(&e.fail_closed_response())
}

/// Serves one HTTP request.
pub(crate) async fn handle(
    state: Arc<State>,
    req: Request<Incoming>,
    peer: SocketAddr,
) -> Response<ResBody> {
    match (req.method().as_str(), req.uri().path()) {
        ("GET", "/healthz") => {
            return respond(
                200,
                &[("content-type".into(), "application/json".into())],
                b"{\"status\":\"ok\"}".to_vec(),
            );
        }
        ("GET", "/metrics") => {
            return respond(
                200,
                &[("content-type".into(), "text/plain; version=0.0.4".into())],
                state.current().host.prometheus().into_bytes(),
            );
        }
        _ => {}
    }
    let (parts, mut incoming) = req.into_parts();
    let declared = parts
        .headers
        .get("content-length")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    if declared.is_some_and(|len| len > state.max_body) {
        return too_large(state.max_body);
    }
    let mut body = Vec::new();
    while let Some(frame) = incoming.frame().await {
        match frame {
            Ok(frame) => {
                if let Some(data) = frame.data_ref() {
                    body.extend_from_slice(data);
                    if body.len() > state.max_body {
                        return too_large(state.max_body);
                    }
                }
            }
            Err(e) => return json_error(400, "bad_request", &format!("reading the body: {e}")),
        }
    }

    let mut headers: Headers = vec![
        (":method".into(), parts.method.as_str().to_string()),
        (
            ":path".into(),
            parts
                .uri
                .path_and_query()
                .map_or("/".to_string(), |p| p.as_str().to_string()),
        ),
        (
            ":authority".into(),
            parts
                .headers
                .get("host")
                .and_then(|h| h.to_str().ok())
                .unwrap_or(&state.upstream_authority)
                .to_string(),
        ),
        (":scheme".into(), "http".into()),
    ];
    for (k, v) in &parts.headers {
        if HOP_BY_HOP.contains(&k.as_str()) {
            continue;
        }
        headers.push((
            k.as_str().to_string(),
            String::from_utf8_lossy(v.as_bytes()).into_owned(),
        ));
    }
    if header_get(&headers, "x-request-id").is_none() {
        let n = state.request_ids.fetch_add(1, Ordering::Relaxed);
        let id = format!("writ-{:x}-{n}", std::process::id());
        headers.push(("x-request-id".into(), id));
    }
    let info = StreamInfo {
        source: Some(peer),
        ..StreamInfo::default()
    };

    let worker = state.lane();
    let id = match worker.run(move |vm| vm.open_stream(info)).await {
        Ok(Ok(id)) => id,
        Ok(Err(e)) => return fail(&e),
        Err(_) => return gone(),
    };
    let stepped = step(&state, &worker, move |vm| {
        let first = vm.request_headers(id, headers, body.is_empty())?;
        let mut flows = vec![first];
        if !body.is_empty() && flows[0].local_response.is_none() {
            flows.push(vm.request_body(id, &body, true)?);
        }
        Ok(flows)
    })
    .await;
    let flows = match stepped {
        Ok(flows) => flows,
        Err(reply) => {
            close(&state, &worker, id).await;
            return reply;
        }
    };
    let mut up_headers = None;
    let mut up_body = Vec::new();
    let mut ended = false;
    for flow in flows {
        if let Some(resp) = flow.local_response {
            close(&state, &worker, id).await;
            return local(&resp);
        }
        up_headers = up_headers.or(flow.headers);
        up_body.extend_from_slice(&flow.body);
        ended |= flow.end_of_stream;
    }
    let (Some(up_headers), true) = (up_headers, ended) else {
        close(&state, &worker, id).await;
        return fail(&HostError::Stalled("request"));
    };
    forward(state, worker, id, up_headers, up_body).await
}

fn too_large(limit: usize) -> Response<ResBody> {
    json_error(
        413,
        "body_too_large",
        &format!("request body larger than {limit} bytes"),
    )
}

async fn close(state: &State, worker: &Lane, id: StreamId) {
    match worker.run(move |vm| vm.close_stream(id)).await {
        Ok(Ok(report)) => {
            for log in report.logs {
                tracing::debug!(target: "writ::guest", level = ?log.level, "{}", log.message);
                if let Some(sink) = &state.log_sink {
                    (sink.0)(&log);
                }
            }
        }
        Ok(Err(e)) => tracing::debug!("closing stream: {e}"),
        Err(_) => {}
    }
}

async fn forward(
    state: Arc<State>,
    worker: Lane,
    id: StreamId,
    headers: Headers,
    body: Vec<u8>,
) -> Response<ResBody> {
    let path = header_get(&headers, ":path").unwrap_or("/");
    let uri = format!("{}{}", state.upstream_base, path);
    let method = header_get(&headers, ":method").unwrap_or("GET");
    let mut builder = Request::builder()
        .method(method)
        .uri(uri)
        .header("host", state.upstream_authority.as_str())
        // The filter must read the reply as the model wrote it, not compressed.
        .header("accept-encoding", "identity");
    for (k, v) in &headers {
        if k.starts_with(':') || HOP_BY_HOP.contains(&k.as_str()) || k == "accept-encoding" {
            continue;
        }
        builder = builder.header(k.as_str(), v.as_str());
    }
    let request = match builder.body(Full::new(Bytes::from(body))) {
        Ok(r) => r,
        Err(e) => {
            close(&state, &worker, id).await;
            return json_error(
                502,
                "bad_gateway",
                &format!("the filter produced an invalid request: {e}"),
            );
        }
    };
    let reply = tokio::time::timeout(state.upstream_timeout, state.client.request(request)).await;
    let reply = match reply {
        Ok(Ok(r)) => r,
        Ok(Err(e)) => {
            close(&state, &worker, id).await;
            return json_error(
                502,
                "upstream_unavailable",
                &format!("upstream request failed: {e}"),
            );
        }
        Err(_) => {
            close(&state, &worker, id).await;
            return json_error(
                504,
                "upstream_timeout",
                "the upstream did not answer in time",
            );
        }
    };
    let (parts, mut incoming) = reply.into_parts();
    let mut resp_headers: Headers = vec![(":status".into(), parts.status.as_u16().to_string())];
    for (k, v) in &parts.headers {
        if HOP_BY_HOP.contains(&k.as_str()) {
            continue;
        }
        resp_headers.push((
            k.as_str().to_string(),
            String::from_utf8_lossy(v.as_bytes()).into_owned(),
        ));
    }
    let empty = incoming.is_end_stream();
    let first = step(&state, &worker, move |vm| {
        vm.response_headers(id, resp_headers, empty)
            .map(|f| vec![f])
    })
    .await;

    // Feed frames until the filter releases the response headers.
    let mut flow = match first {
        Ok(flows) => merge(flows),
        Err(reply) => {
            close(&state, &worker, id).await;
            return reply;
        }
    };
    let mut held: Vec<Bytes> = Vec::new();
    let mut upstream_done = empty;
    let client_headers = loop {
        if let Some(resp) = flow.local_response.take() {
            close(&state, &worker, id).await;
            return local(&resp);
        }
        if !flow.body.is_empty() {
            held.push(Bytes::from(std::mem::take(&mut flow.body)));
        }
        if let Some(h) = flow.headers.take() {
            break h;
        }
        if upstream_done {
            close(&state, &worker, id).await;
            return fail(&HostError::Stalled("response"));
        }
        let (chunk, eos) = next_chunk(&mut incoming).await;
        upstream_done = eos;
        flow = match step(&state, &worker, move |vm| {
            vm.response_body(id, &chunk, eos).map(|f| vec![f])
        })
        .await
        {
            Ok(flows) => merge(flows),
            Err(reply) => {
                close(&state, &worker, id).await;
                return reply;
            }
        };
    };
    let finished = flow.end_of_stream;
    let status = header_get(&client_headers, ":status")
        .and_then(|s| s.parse::<u16>().ok())
        .unwrap_or(parts.status.as_u16());
    let mut builder =
        Response::builder().status(StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_GATEWAY));
    for (k, v) in &client_headers {
        if k.starts_with(':') || HOP_BY_HOP.contains(&k.as_str()) {
            continue;
        }
        builder = builder.header(k.as_str(), v.as_str());
    }
    if finished {
        close(&state, &worker, id).await;
        let body: Vec<u8> = held.concat();
        return builder
            .body(full(body))
            .unwrap_or_else(|_| json_error(502, "bad_gateway", "invalid response headers"));
    }
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Frame<Bytes>, std::io::Error>>(16);
    for chunk in held {
        let _ = tx.try_send(Ok(Frame::data(chunk)));
    }
    tokio::spawn(pump(state.clone(), worker, id, incoming, tx, upstream_done));
    builder
        .body(ChannelBody { rx }.boxed())
        .unwrap_or_else(|_| json_error(502, "bad_gateway", "invalid response headers"))
}

/// The next data chunk of the upstream body, and whether it was the last.
async fn next_chunk(incoming: &mut Incoming) -> (Vec<u8>, bool) {
    loop {
        match incoming.frame().await {
            None => return (Vec::new(), true),
            Some(Err(e)) => {
                tracing::warn!("upstream body failed: {e}");
                return (Vec::new(), true);
            }
            Some(Ok(frame)) => {
                if let Ok(data) = frame.into_data() {
                    return (data.to_vec(), incoming.is_end_stream());
                }
            }
        }
    }
}

/// Streams the rest of the reply through the filter to the client, chunk by chunk.
async fn pump(
    state: Arc<State>,
    worker: Lane,
    id: StreamId,
    mut incoming: Incoming,
    tx: tokio::sync::mpsc::Sender<Result<Frame<Bytes>, std::io::Error>>,
    mut upstream_done: bool,
) {
    while !upstream_done {
        let (chunk, eos) = next_chunk(&mut incoming).await;
        upstream_done = eos;
        let flow = step(&state, &worker, move |vm| {
            vm.response_body(id, &chunk, eos).map(|f| vec![f])
        })
        .await
        .map(merge);
        match flow {
            Ok(flow) if flow.local_response.is_none() => {
                if !flow.body.is_empty()
                    && tx
                        .send(Ok(Frame::data(Bytes::from(flow.body))))
                        .await
                        .is_err()
                {
                    break; // client went away
                }
                if flow.end_of_stream {
                    break;
                }
            }
            Ok(_) | Err(_) => {
                // Headers are already out: the only fail-closed answer left is to abort.
                let _ = tx
                    .send(Err(std::io::Error::other("response stopped by the filter")))
                    .await;
                break;
            }
        }
    }
    drop(tx);
    close(&state, &worker, id).await;
}

struct ChannelBody {
    rx: tokio::sync::mpsc::Receiver<Result<Frame<Bytes>, std::io::Error>>,
}

impl Body for ChannelBody {
    type Data = Bytes;
    type Error = std::io::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, std::io::Error>>> {
        self.rx.poll_recv(cx)
    }
}

fn gone() -> Response<ResBody> {
    json_error(503, "filter_unavailable", "the filter worker is gone")
}

/// Joins the flows of one step (and of the callout replies it led to) into one.
fn merge(flows: Vec<Flow>) -> Flow {
    let mut all = Flow::default();
    for flow in flows {
        all.headers = all.headers.or(flow.headers);
        all.body.extend_from_slice(&flow.body);
        all.trailers = all.trailers.or(flow.trailers);
        all.end_of_stream |= flow.end_of_stream;
        all.local_response = all.local_response.or(flow.local_response);
    }
    all
}

/// Runs one step on the worker, then performs the HTTP callouts it made, concurrently and
/// off the worker, and delivers their replies there; returns every flow released, in order.
/// A failure is the reply to send (the caller closes the stream).
async fn step(
    state: &State,
    worker: &Lane,
    f: impl FnOnce(&mut Vm) -> Result<Vec<Flow>, HostError> + Send + 'static,
) -> Result<Vec<Flow>, Response<ResBody>> {
    let (first, mut callouts) = worker
        .run(move |vm| {
            let flows = f(vm);
            (flows, vm.take_callouts())
        })
        .await
        .map_err(|_| gone())?;
    let mut flows = first.map_err(|e| fail(&e))?;
    // Bounded: a filter that calls out from every callout reply cannot loop forever.
    for _ in 0..16 {
        if callouts.is_empty() {
            break;
        }
        let tasks: Vec<_> = callouts
            .iter()
            .map(|c| tokio::spawn(perform(state.client.clone(), c.clone())))
            .collect();
        let mut next = Vec::new();
        for (callout, task) in callouts.drain(..).zip(tasks) {
            let reply = task.await.ok().flatten();
            let (flow, more) = worker
                .run(move |vm| {
                    let flow = vm.complete_callout(&callout, reply);
                    (flow, vm.take_callouts())
                })
                .await
                .map_err(|_| gone())?;
            flows.push(flow.map_err(|e| fail(&e))?);
            next.extend(more);
        }
        callouts = next;
    }
    Ok(flows)
}

/// Largest callout reply read.
const MAX_CALLOUT_REPLY: usize = 16 << 20;

/// Performs one callout; `None` when it fails (the filter then sees no headers and no body,
/// as Envoy reports a failed call).
async fn perform(
    client: Client<HttpsConnector<HttpConnector>, Full<Bytes>>,
    callout: Callout,
) -> Option<CalloutReply> {
    let path = header_get(&callout.headers, ":path").unwrap_or("/");
    let method = header_get(&callout.headers, ":method").unwrap_or("GET");
    let base = callout.base_url.trim_end_matches('/');
    let mut builder = Request::builder()
        .method(method)
        .uri(format!("{base}{path}"));
    if let Some(authority) = header_get(&callout.headers, ":authority") {
        builder = builder.header("host", authority);
    }
    for (k, v) in &callout.headers {
        if k.starts_with(':') || HOP_BY_HOP.contains(&k.as_str()) {
            continue;
        }
        builder = builder.header(k.as_str(), v.as_str());
    }
    let request = builder.body(Full::new(Bytes::from(callout.body))).ok()?;
    let call = async {
        let reply = client.request(request).await.ok()?;
        let (parts, body) = reply.into_parts();
        let body = http_body_util::Limited::new(body, MAX_CALLOUT_REPLY)
            .collect()
            .await
            .ok()?
            .to_bytes();
        let mut headers = vec![(":status".to_string(), parts.status.as_u16().to_string())];
        for (k, v) in &parts.headers {
            headers.push((
                k.as_str().to_string(),
                String::from_utf8_lossy(v.as_bytes()).into_owned(),
            ));
        }
        Some(CalloutReply {
            headers,
            body: body.to_vec(),
        })
    };
    match tokio::time::timeout(callout.timeout, call).await {
        Ok(reply) => reply,
        Err(_) => {
            tracing::warn!(cluster = callout.cluster, "callout timed out");
            None
        }
    }
}
