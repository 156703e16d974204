//! One request through the gateway: filter the request on its worker, forward it, then
//! filter the reply frame by frame and stream what the filter releases to the client.

use super::telemetry::{ObservedBody, RequestTrace, Telemetry};
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
    /// The request's trace, which travels with its lane (closing the stream annotates it,
    /// forwarding starts its upstream span); `None` without telemetry.
    trace: Option<Arc<RequestTrace>>,
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
    identity: super::identity::IdentityConfig,
    refusal_sink: Option<super::RefusalSink>,
    /// The largest header block accepted (names and values), as Envoy's codec limits it.
    max_header_bytes: usize,
    /// Spans and GenAI metrics for `--otlp`.
    telemetry: Option<Arc<Telemetry>>,
}

impl State {
    /// A request id for a request that came without one: unique in this process.
    pub(crate) fn next_request_id(&self) -> String {
        let n = self.request_ids.fetch_add(1, Ordering::Relaxed);
        format!("writ-{:x}-{n}", std::process::id())
    }

    /// Records a message the HTTP codec refused before it was a request (hyper answered it
    /// itself, 400 or 431), so it has its one record as in Envoy.
    pub(crate) fn record_codec_refusal(&self, status: u16) {
        if let Some(sink) = &self.refusal_sink {
            (sink.0)(&super::Refusal {
                request_id: self.next_request_id(),
                status,
                kind: super::RefusalKind::Rejected,
                code: rejection_code(status),
            });
        }
    }

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
        let workers = Workers::start(&host, config.workers, config.log_sink.clone())?;
        let pipeline = std::sync::RwLock::new(Arc::new(Pipeline { host, workers }));
        let connector = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls_config(config.upstream_ca.as_deref())?)
            .https_or_http()
            .enable_http1()
            .build();
        let client = Client::builder(hyper_util::rt::TokioExecutor::new()).build(connector);
        let telemetry = config.telemetry.clone().map(Telemetry::new).transpose()?;
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
            identity: config.identity.clone(),
            refusal_sink: config.refusal_sink.clone(),
            max_header_bytes: super::MAX_REQUEST_HEADER_BYTES,
            telemetry,
        })
    }
}

/// TLS for HTTPS upstreams: the public web roots, plus `extra_ca` (PEM) when given.
pub(crate) fn tls_config(extra_ca: Option<&[u8]>) -> Result<rustls::ClientConfig, GatewayError> {
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

    fn lane(&self, trace: Option<Arc<RequestTrace>>) -> Lane {
        let pipeline = self.current();
        let index = pipeline.workers.pick();
        Lane {
            pipeline,
            index,
            trace,
        }
    }

    /// Starts the OTLP export task on the gateway's runtime, when telemetry is on.
    pub(crate) fn start_telemetry(&self) {
        if let Some(t) = &self.telemetry {
            t.spawn(self.client.clone());
        }
    }

    /// Exports the last spans and metrics and stops the export task (bounded).
    pub(crate) async fn stop_telemetry(&self) {
        if let Some(t) = &self.telemetry {
            t.shutdown().await;
        }
    }

    /// The gateway is stopping: the current module's root contexts finish (bounded by
    /// `deadline`).
    pub(crate) fn finish(&self, deadline: std::time::Instant) {
        self.current().workers.finish(deadline);
    }

    /// Hex sha256 of the module serving new requests.
    pub(crate) fn current_sha256(&self) -> String {
        self.current().host.module_sha256().to_string()
    }

    /// Starts workers for `host` and sends new requests to them.
    pub(crate) fn replace(&self, host: Host) -> Result<(), HostError> {
        let workers = Workers::start(&host, self.workers_per_pipeline, self.log_sink.clone())?;
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

/// An OpenAI-style error, `{"error":{"message","type","code"}}`. Messages are fixed
/// sentences: no error from a library, address or path reaches a client.
fn json_error(status: u16, kind: &str, code: &str, message: &str) -> Response<ResBody> {
    let body = serde_json::json!({ "error": { "message": message, "type": kind, "code": code } });
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

/// Fails a request closed: the fixed reply for `e`, and a [`super::Refusal`] for the
/// caller's record (the filter could not write its own).
fn failed(state: &State, request_id: &str, e: &HostError) -> Response<ResBody> {
    tracing::warn!(request_id, kind = e.kind(), "request failed closed: {e}");
    let reply = e.fail_closed_response();
    report(state, request_id, reply.status, e.kind());
    local(&reply)
}

/// Hands an engine failure to the refusal sink.
fn report(state: &State, request_id: &str, status: u16, code: &'static str) {
    if let Some(sink) = &state.refusal_sink {
        (sink.0)(&super::Refusal {
            request_id: request_id.to_string(),
            status,
            kind: super::RefusalKind::EngineFailure,
            code,
        });
    }
}

/// Serves one HTTP request; with telemetry, inside its trace (the span ends when the
/// client has the whole reply).
pub(crate) async fn handle(
    state: Arc<State>,
    req: Request<Incoming>,
    peer: SocketAddr,
) -> Response<ResBody> {
    // The gateway's own endpoints (probes, scrapes) are not traced.
    let own =
        req.method() == hyper::Method::GET && matches!(req.uri().path(), "/healthz" | "/metrics");
    let Some(telemetry) = state.telemetry.clone().filter(|_| !own) else {
        return serve(state, req, peer, None).await;
    };
    let header = |name: &str| req.headers().get(name).and_then(|v| v.to_str().ok());
    let trace = telemetry.start_request(
        req.method().as_str(),
        req.uri().path(),
        header("traceparent"),
        header("tracestate"),
    );
    let response = serve(state, req, peer, Some(trace.clone())).await;
    let content_type = response
        .headers()
        .get(hyper::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok());
    trace.response(response.status().as_u16(), content_type);
    response.map(|body| ObservedBody::new(body, trace).boxed())
}

async fn serve(
    state: Arc<State>,
    req: Request<Incoming>,
    peer: SocketAddr,
    trace: Option<Arc<RequestTrace>>,
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
    let rid = match parts
        .headers
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
    {
        Some(id) => id.to_string(),
        None => state.next_request_id(),
    };
    if let Some(reply) = headers_too_large(&state, &parts.headers) {
        return reject(&state, &rid, reply);
    }
    let declared = parts
        .headers
        .get("content-length")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    if declared.is_some_and(|len| len > state.max_body) {
        return reject(&state, &rid, too_large(state.max_body));
    }
    let mut body = Vec::new();
    while let Some(frame) = incoming.frame().await {
        match frame {
            Ok(frame) => {
                if let Some(data) = frame.data_ref() {
                    body.extend_from_slice(data);
                    if body.len() > state.max_body {
                        return reject(&state, &rid, too_large(state.max_body));
                    }
                }
            }
            Err(e) => {
                tracing::debug!("reading the request body: {e}");
                let reply = json_error(
                    400,
                    "invalid_request_error",
                    "bad_request",
                    "The request body could not be read.",
                );
                return reject(&state, &rid, reply);
            }
        }
    }
    if let Some(t) = &trace {
        t.request_body(&body);
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
        // The fallback header is the filter's word to this gateway, never the client's.
        if HOP_BY_HOP.contains(&k.as_str()) || k.as_str() == FALLBACK_HEADER {
            continue;
        }
        headers.push((
            k.as_str().to_string(),
            String::from_utf8_lossy(v.as_bytes()).into_owned(),
        ));
    }
    if header_get(&headers, "x-request-id").is_none() {
        headers.push(("x-request-id".into(), rid.clone()));
    }
    // Identity: the client's copies of trusted headers go first, whatever follows; then a
    // configured verifier checks the token and sets them from its claims.
    let path = header_get(&headers, ":path").unwrap_or("/").to_string();
    if let Err(e) = state.identity.apply(&path, &mut headers) {
        if let Some(sink) = &state.refusal_sink {
            (sink.0)(&super::Refusal {
                request_id: rid.clone(),
                status: 401,
                kind: super::RefusalKind::Unauthenticated,
                code: e.code(),
            });
        }
        let mut reply = json_error(401, "authentication_error", e.code(), e.message());
        reply.headers_mut().insert(
            hyper::header::WWW_AUTHENTICATE,
            hyper::header::HeaderValue::from_static("Bearer"),
        );
        return reply;
    }
    if state.identity.verifier.is_some() {
        // The token proved who the client is to this gateway; it is not the provider's.
        headers.retain(|(k, _)| !k.eq_ignore_ascii_case("authorization"));
    }
    let info = StreamInfo {
        source: Some(peer),
        // This host sends a request again when the filter asks ([`retry`]).
        properties: vec![(HOST_RETRY_PROPERTY.to_string(), b"1".to_vec())],
        ..StreamInfo::default()
    };

    let worker = state.lane(trace);
    let id = match worker.run(move |vm| vm.open_stream(info)).await {
        Ok(Ok(id)) => id,
        Ok(Err(e)) => return failed(&state, &rid, &e),
        Err(_) => return failed(&state, &rid, &StepError::Gone.host_error()),
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
        Err(e) => {
            let _ = close(&state, &worker, id).await;
            return failed(&state, &rid, &e.host_error());
        }
    };
    let mut up_headers = None;
    let mut up_body = Vec::new();
    let mut ended = false;
    for flow in flows {
        if let Some(resp) = flow.local_response {
            return finish_local(&state, &worker, id, &rid, &resp).await;
        }
        up_headers = up_headers.or(flow.headers);
        up_body.extend_from_slice(&flow.body);
        ended |= flow.end_of_stream;
    }
    let (Some(mut up_headers), true) = (up_headers, ended) else {
        let _ = close(&state, &worker, id).await;
        return failed(&state, &rid, &HostError::Stalled("request"));
    };
    // The filter asks for its failures (fallback) by a header that must not go upstream.
    let fallback = header_get(&up_headers, FALLBACK_HEADER).is_some();
    up_headers.retain(|(k, _)| !k.eq_ignore_ascii_case(FALLBACK_HEADER));
    let attempt = Attempt {
        fallback,
        cluster: None,
        number: 1,
    };
    forward(state, worker, id, rid, up_headers, up_body, attempt).await
}

/// Request header by which the filter says the request has a fallback: the gateway hands
/// it the failures it would otherwise answer itself (a refused connection, a timeout).
const FALLBACK_HEADER: &str = "x-writ-fallback";
/// Header of a filter's local reply in the response phase that asks for another attempt
/// instead of going to the client: `upstream`, or `cluster=<name>` (`--cluster`); its body
/// is the request body to send.
const RETRY_HEADER: &str = "x-writ-retry";
/// Response header on the reply the gateway makes up for an attempt that got none:
/// `connect` or `timeout`.
const FAILURE_HEADER: &str = "x-writ-upstream-failure";
/// Stream property telling the filter that this host retries on its word.
const HOST_RETRY_PROPERTY: &str = "writ.host_retry";
/// Most upstream attempts per request, whatever the filter asks.
const MAX_ATTEMPTS: u32 = 8;

/// One upstream attempt of a request.
#[derive(Debug, Clone)]
struct Attempt {
    /// The filter wants this request's failures (it has a fallback).
    fallback: bool,
    /// A named cluster (`--cluster NAME=URL`); `None` is the gateway's upstream.
    cluster: Option<String>,
    /// 1 for the first attempt.
    number: u32,
}

/// Where an attempt goes: base URL and authority; `None` for a cluster not configured.
fn target(state: &State, worker: &Lane, cluster: Option<&str>) -> Option<(String, String)> {
    let Some(name) = cluster else {
        return Some((
            state.upstream_base.clone(),
            state.upstream_authority.clone(),
        ));
    };
    let base = worker
        .pipeline
        .host
        .cluster_url(name)?
        .trim_end_matches('/');
    let rest = base
        .strip_prefix("http://")
        .or_else(|| base.strip_prefix("https://"))?;
    let authority = rest.split('/').next().filter(|a| !a.is_empty())?;
    Some((base.to_string(), authority.to_string()))
}

/// Whether a local reply of the response phase asks for another attempt, and where.
fn retry_target(resp: &LocalResponse) -> Option<Option<String>> {
    let v = header_get(&resp.headers, RETRY_HEADER)?;
    match v.strip_prefix("cluster=") {
        Some(name) => Some(Some(name.to_string())),
        None => Some(None),
    }
}

/// A boxed, sendable answer: an attempt may lead to another, so the futures nest.
type Answer = Pin<Box<dyn std::future::Future<Output = Response<ResBody>> + Send>>;

/// Sends the request again, as the filter asked: the stream's response side starts
/// afresh and the next attempt's reply goes through the filter like the first (bounded by
/// [`MAX_ATTEMPTS`]).
fn retry(
    state: Arc<State>,
    worker: Lane,
    id: StreamId,
    rid: String,
    (headers, resp, previous): (Headers, LocalResponse, Attempt),
) -> Answer {
    Box::pin(async move {
        let cluster = retry_target(&resp).unwrap_or(None);
        if previous.number >= MAX_ATTEMPTS {
            return match close(&state, &worker, id).await {
                Ok(()) => upstream_unavailable(),
                Err(e) => failed(&state, &rid, &e),
            };
        }
        match worker.run(move |vm| vm.restart_response(id)).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                let _ = close(&state, &worker, id).await;
                return failed(&state, &rid, &e);
            }
            Err(_) => return failed(&state, &rid, &StepError::Gone.host_error()),
        }
        tracing::debug!(attempt = previous.number + 1, ?cluster, "fallback attempt");
        let attempt = Attempt {
            fallback: previous.fallback,
            cluster,
            number: previous.number + 1,
        };
        forward(state, worker, id, rid, headers, resp.body, attempt).await
    })
}

/// An attempt that got no reply (`kind`: `connect` or `timeout`), handed to the filter of
/// a request with a fallback as the reply Envoy would make up (`status`, JSON error, and
/// [`FAILURE_HEADER`]). `None` when the filter lets it through: the caller answers as
/// without a fallback.
async fn no_reply(
    state: &Arc<State>,
    worker: &Lane,
    id: StreamId,
    rid: &str,
    (headers, attempt): (&Headers, &Attempt),
    (status, kind): (u16, &'static str),
) -> Option<Response<ResBody>> {
    if !attempt.fallback {
        return None;
    }
    let made_up: Headers = vec![
        (":status".into(), status.to_string()),
        ("content-type".into(), "application/json".into()),
        (FAILURE_HEADER.into(), kind.into()),
    ];
    let flows = step(state, worker, move |vm| {
        vm.response_headers(id, made_up, true).map(|f| vec![f])
    })
    .await;
    let mut flow = match flows {
        Ok(flows) => merge(flows),
        Err(e) => {
            let _ = close(state, worker, id).await;
            return Some(failed(state, rid, &e.host_error()));
        }
    };
    let resp = flow.local_response.take()?;
    if retry_target(&resp).is_some() {
        let carried = (headers.clone(), resp, attempt.clone());
        return Some(retry(state.clone(), worker.clone(), id, rid.to_string(), carried).await);
    }
    Some(finish_local(state, worker, id, rid, &resp).await)
}

/// Sends the filter's own reply; if closing the stream fails (its `on_log` trapped), the
/// request is failed closed instead, so it still gets exactly one record.
async fn finish_local(
    state: &State,
    worker: &Lane,
    id: StreamId,
    rid: &str,
    resp: &LocalResponse,
) -> Response<ResBody> {
    match close(state, worker, id).await {
        Ok(()) => local(resp),
        Err(e) => failed(state, rid, &e),
    }
}

/// Refuses a header block over Envoy's 60 KiB, as Envoy's codec does. (A request with
/// both `content-length` and `transfer-encoding` is framed by the latter, as RFC 9112
/// allows; the upstream gets a request framed afresh, so the two cannot be played
/// against each other.)
fn headers_too_large(state: &State, headers: &hyper::HeaderMap) -> Option<Response<ResBody>> {
    let size: usize = headers
        .iter()
        .map(|(k, v)| k.as_str().len() + v.len())
        .sum();
    (size > state.max_header_bytes).then(|| {
        json_error(
            431,
            "invalid_request_error",
            "headers_too_large",
            "The request headers exceed the gateway's limit.",
        )
    })
}

/// Answers a request the gateway refuses before the filter sees it, and records it.
fn reject(state: &State, request_id: &str, reply: Response<ResBody>) -> Response<ResBody> {
    if let Some(sink) = &state.refusal_sink {
        (sink.0)(&super::Refusal {
            request_id: request_id.to_string(),
            status: reply.status().as_u16(),
            kind: super::RefusalKind::Rejected,
            code: rejection_code(reply.status().as_u16()),
        });
    }
    reply
}

/// The fixed reason of a refusal before the filter, by its status.
pub(crate) fn rejection_code(status: u16) -> &'static str {
    match status {
        413 => "body_too_large",
        431 => "headers_too_large",
        _ => "bad_request",
    }
}

fn too_large(limit: usize) -> Response<ResBody> {
    json_error(
        413,
        "invalid_request_error",
        "body_too_large",
        &format!("The request body is larger than the {limit} bytes the gateway accepts."),
    )
}

/// Ends the stream (`on_log`, where the filter writes its record) and hands its logs to
/// the sink. An error means the filter failed while closing: its record is lost with its
/// VM, so the caller reports the failure unless it already did.
async fn close(state: &State, worker: &Lane, id: StreamId) -> Result<(), HostError> {
    match worker.run(move |vm| vm.close_stream(id)).await {
        Ok(Ok(report)) => {
            if let Some(trace) = &worker.trace {
                trace.annotate(&report.logs);
            }
            for log in report.logs {
                tracing::debug!(target: "writ::guest", level = ?log.level, "{}", log.message);
                if let Some(sink) = &state.log_sink {
                    (sink.0)(&log);
                }
            }
            Ok(())
        }
        Ok(Err(e)) => {
            tracing::debug!("closing stream: {e}");
            Err(e)
        }
        Err(_) => Err(StepError::Gone.host_error()),
    }
}

async fn forward(
    state: Arc<State>,
    worker: Lane,
    id: StreamId,
    rid: String,
    headers: Headers,
    body: Vec<u8>,
    attempt: Attempt,
) -> Response<ResBody> {
    let Some((base, authority)) = target(&state, &worker, attempt.cluster.as_deref()) else {
        tracing::warn!(
            cluster = attempt.cluster,
            "fallback to a cluster that is not configured (--cluster)"
        );
        let carried = (&headers, &attempt);
        if let Some(r) = no_reply(&state, &worker, id, &rid, carried, (502, "connect")).await {
            return r;
        }
        return match close(&state, &worker, id).await {
            Ok(()) => upstream_unavailable(),
            Err(e) => failed(&state, &rid, &e),
        };
    };
    let path = header_get(&headers, ":path").unwrap_or("/");
    let uri = format!("{base}{path}");
    let method = header_get(&headers, ":method").unwrap_or("GET");
    let mut builder = Request::builder()
        .method(method)
        .uri(uri)
        .header("host", authority.as_str())
        // The filter must read the reply as the model wrote it, not compressed.
        .header("accept-encoding", "identity");
    // A recorded trace goes upstream naming this attempt's span (W3C Trace Context).
    let traceparent = worker.trace.as_ref().and_then(|t| t.upstream_traceparent());
    let drop_tracestate = worker.trace.as_ref().is_some_and(|t| t.drops_tracestate());
    for (k, v) in &headers {
        if k.starts_with(':') || HOP_BY_HOP.contains(&k.as_str()) || k == "accept-encoding" {
            continue;
        }
        if (traceparent.is_some() && k == "traceparent") || (drop_tracestate && k == "tracestate") {
            continue;
        }
        builder = builder.header(k.as_str(), v.as_str());
    }
    if let Some(tp) = &traceparent {
        builder = builder.header("traceparent", tp.as_str());
    }
    let request = match builder.body(Full::new(Bytes::from(body))) {
        Ok(r) => r,
        Err(e) => {
            tracing::warn!("the filter produced an invalid request: {e}");
            let _ = close(&state, &worker, id).await;
            return failed(&state, &rid, &HostError::Stalled("request"));
        }
    };
    let reply = tokio::time::timeout(state.upstream_timeout, state.client.request(request)).await;
    if let Some(t) = &worker.trace {
        match &reply {
            Ok(Ok(r)) => t.upstream_answered(r.status().as_u16()),
            Ok(Err(_)) => t.upstream_failed("upstream_unavailable"),
            Err(_) => t.upstream_failed("upstream_timeout"),
        }
    }
    let reply = match reply {
        Ok(Ok(r)) => r,
        Ok(Err(e)) => {
            tracing::warn!("upstream request failed: {e}");
            let carried = (&headers, &attempt);
            if let Some(r) = no_reply(&state, &worker, id, &rid, carried, (502, "connect")).await {
                return r;
            }
            if let Err(e) = close(&state, &worker, id).await {
                return failed(&state, &rid, &e);
            }
            return json_error(
                502,
                "upstream_error",
                "upstream_unavailable",
                "The model provider could not be reached.",
            );
        }
        Err(_) => {
            let carried = (&headers, &attempt);
            if let Some(r) = no_reply(&state, &worker, id, &rid, carried, (504, "timeout")).await {
                return r;
            }
            if let Err(e) = close(&state, &worker, id).await {
                return failed(&state, &rid, &e);
            }
            return json_error(
                504,
                "upstream_error",
                "upstream_timeout",
                "The model provider did not answer in time.",
            );
        }
    };
    let (parts, incoming) = reply.into_parts();
    let mut incoming = UpstreamBody::new(incoming);
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
        Err(e) => {
            let _ = close(&state, &worker, id).await;
            return failed(&state, &rid, &e.host_error());
        }
    };
    let mut held: Vec<Bytes> = Vec::new();
    let mut held_by_filter = 0usize;
    let mut upstream_done = empty;
    let client_headers = loop {
        if let Some(resp) = flow.local_response.take() {
            if attempt.fallback && retry_target(&resp).is_some() {
                return retry(state, worker, id, rid, (headers, resp, attempt)).await;
            }
            return finish_local(&state, &worker, id, &rid, &resp).await;
        }
        if !flow.body.is_empty() {
            held.push(Bytes::from(std::mem::take(&mut flow.body)));
        }
        if let Some(h) = flow.headers.take() {
            break h;
        }
        if upstream_done {
            let _ = close(&state, &worker, id).await;
            return failed(&state, &rid, &HostError::Stalled("response"));
        }
        let Ok((chunk, eos)) = incoming.next_chunk().await else {
            return match close(&state, &worker, id).await {
                Ok(()) => upstream_unavailable(),
                Err(e) => failed(&state, &rid, &e),
            };
        };
        held_by_filter += chunk.len();
        if held_by_filter > state.max_body {
            // The filter holds the whole reply (to redact it): bounded as in Envoy, whose
            // connection buffer limit ends such a reply.
            return match close(&state, &worker, id).await {
                Ok(()) => json_error(
                    502,
                    "upstream_error",
                    "reply_too_large",
                    "The model provider's reply is too large to be checked.",
                ),
                Err(e) => failed(&state, &rid, &e),
            };
        }
        upstream_done = eos;
        flow = match step(&state, &worker, move |vm| {
            vm.response_body(id, &chunk, eos).map(|f| vec![f])
        })
        .await
        {
            Ok(flows) => merge(flows),
            Err(e) => {
                let _ = close(&state, &worker, id).await;
                return failed(&state, &rid, &e.host_error());
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
        if let Err(e) = close(&state, &worker, id).await {
            return failed(&state, &rid, &e);
        }
        let body: Vec<u8> = held.concat();
        return builder.body(full(body)).unwrap_or_else(|_| {
            json_error(
                502,
                "upstream_error",
                "bad_gateway",
                "The reply's headers are not valid HTTP.",
            )
        });
    }
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Frame<Bytes>, std::io::Error>>(16);
    for chunk in held {
        let _ = tx.try_send(Ok(Frame::data(chunk)));
    }
    tokio::spawn(pump(
        state.clone(),
        worker,
        id,
        (rid, status),
        incoming,
        tx,
        upstream_done,
    ));
    builder
        .body(ChannelBody { rx }.boxed())
        .unwrap_or_else(|_| {
            json_error(
                502,
                "upstream_error",
                "bad_gateway",
                "The reply's headers are not valid HTTP.",
            )
        })
}

/// Most bytes of upstream frames joined into one guest call.
const COALESCE_LIMIT: usize = 64 << 10;

/// The upstream reply body, read so that frames which have already arrived together cost
/// one guest call: a provider streaming fast (or a burst that one socket read delivered)
/// is fed to the filter as one chunk instead of one call per SSE event. The filter's
/// output does not depend on how the reply is cut (chunked output equals whole output),
/// so coalescing changes the cost, never the bytes the client receives.
struct UpstreamBody {
    incoming: Incoming,
    /// The provider failed after the data already returned: reported on the next read, so
    /// the data that arrived before the failure still goes through the filter first.
    failed: bool,
}

impl UpstreamBody {
    fn new(incoming: Incoming) -> UpstreamBody {
        UpstreamBody {
            incoming,
            failed: false,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.incoming.is_end_stream()
    }

    /// The next data of the upstream body, and whether it was the last; `Err` when the
    /// provider failed mid-reply (a reset, a close before the declared length, bad
    /// chunking), which must never look like a complete reply to the client. Waits for one
    /// data frame, then joins every frame already received (up to [`COALESCE_LIMIT`])
    /// without waiting for more.
    async fn next_chunk(&mut self) -> Result<(Bytes, bool), ()> {
        if self.failed {
            return Err(());
        }
        let first = loop {
            match self.incoming.frame().await {
                None => return Ok((Bytes::new(), true)),
                Some(Err(e)) => {
                    tracing::warn!("upstream body failed: {e}");
                    return Err(());
                }
                Some(Ok(frame)) => {
                    if let Ok(data) = frame.into_data() {
                        break data;
                    }
                }
            }
        };
        let mut eos = self.incoming.is_end_stream();
        let mut joined: Option<Vec<u8>> = None;
        // hyper's client body holds one frame at a time: the connection task decodes the
        // next one only after this body asked for it. So when none is ready, let that task
        // run once (it decodes what the socket already holds) before handing over.
        let mut yielded = false;
        while !eos && joined.as_ref().map_or(first.len(), Vec::len) < COALESCE_LIMIT {
            let ready =
                std::future::poll_fn(|cx| match Pin::new(&mut self.incoming).poll_frame(cx) {
                    Poll::Ready(frame) => Poll::Ready(Some(frame)),
                    Poll::Pending => Poll::Ready(None),
                })
                .await;
            if ready.is_some() {
                yielded = false;
            }
            match ready {
                None if !yielded => {
                    yielded = true;
                    tokio::task::yield_now().await;
                }
                // Nothing more has arrived: hand over what we have.
                None => break,
                Some(None) => eos = true,
                Some(Some(Err(e))) => {
                    tracing::warn!("upstream body failed: {e}");
                    self.failed = true;
                    break;
                }
                Some(Some(Ok(frame))) => {
                    if let Ok(data) = frame.into_data() {
                        joined
                            .get_or_insert_with(|| first.to_vec())
                            .extend_from_slice(&data);
                    }
                    eos = self.incoming.is_end_stream();
                }
            }
        }
        Ok((joined.map_or(first, Bytes::from), eos))
    }
}

/// The provider failed before the client had anything: the same answer as when it could
/// not be reached.
fn upstream_unavailable() -> Response<ResBody> {
    json_error(
        502,
        "upstream_error",
        "upstream_unavailable",
        "The model provider could not be reached.",
    )
}

/// Streams the rest of the reply through the filter to the client, chunk by chunk.
async fn pump(
    state: Arc<State>,
    worker: Lane,
    id: StreamId,
    (rid, status): (String, u16),
    mut incoming: UpstreamBody,
    tx: tokio::sync::mpsc::Sender<Result<Frame<Bytes>, std::io::Error>>,
    mut upstream_done: bool,
) {
    let mut reported = false;
    while !upstream_done {
        let Ok((chunk, eos)) = incoming.next_chunk().await else {
            // The client has the headers: abort, so it sees a truncated reply.
            let _ = tx
                .send(Err(std::io::Error::other(
                    "the model provider failed mid-reply",
                )))
                .await;
            break;
        };
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
            Ok(_) => {
                // Headers are already out: the only fail-closed answer left is to abort.
                let _ = tx
                    .send(Err(std::io::Error::other("response stopped by the filter")))
                    .await;
                break;
            }
            Err(e) => {
                let e = e.host_error();
                tracing::warn!(request_id = rid, "stream failed closed: {e}");
                report(&state, &rid, status, e.kind());
                reported = true;
                let _ = tx
                    .send(Err(std::io::Error::other("response stopped by the filter")))
                    .await;
                break;
            }
        }
    }
    drop(tx);
    if let Err(e) = close(&state, &worker, id).await
        && !reported
    {
        report(&state, &rid, status, e.kind());
    }
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

/// A failure of the step machinery itself (a worker gone, an error on the worker).
#[derive(Debug)]
enum StepError {
    Host(HostError),
    Gone,
}

impl StepError {
    fn host_error(self) -> HostError {
        match self {
            StepError::Host(e) => e,
            StepError::Gone => HostError::Instantiate("the filter worker is gone".into()),
        }
    }
}

/// Joins the flows of one step (and of the callout replies it led to) into one.
fn merge(mut flows: Vec<Flow>) -> Flow {
    // The usual case, one flow: moved, its body not copied.
    if flows.len() == 1
        && let Some(flow) = flows.pop()
    {
        return flow;
    }
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
/// On a failure the caller closes the stream and fails the request closed.
async fn step(
    state: &State,
    worker: &Lane,
    f: impl FnOnce(&mut Vm) -> Result<Vec<Flow>, HostError> + Send + 'static,
) -> Result<Vec<Flow>, StepError> {
    let (first, mut callouts) = worker
        .run(move |vm| {
            let flows = f(vm);
            (flows, vm.take_callouts())
        })
        .await
        .map_err(|_| StepError::Gone)?;
    let mut flows = first.map_err(StepError::Host)?;
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
                .map_err(|_| StepError::Gone)?;
            flows.push(flow.map_err(StepError::Host)?);
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
