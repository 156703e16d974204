//! OpenTelemetry for the gateway (`writ serve --otlp`): a SERVER span per request with the
//! GenAI semantic-convention attributes, a CLIENT span per upstream attempt whose id goes
//! upstream in `traceparent`, the GenAI client metrics, all exported over OTLP/HTTP
//! (protobuf) in the background.
//!
//! Policy-agnostic like the rest of the runtime: what a filter's logs mean (guardrail
//! events, say) is told by an [`AnnotationHook`] the caller installs. Export never blocks
//! or fails a request: spans go to a bounded queue and are dropped, and counted, when it
//! is full; each export has a timeout.

mod body;
mod export;
pub mod genai;
mod metrics;
pub mod trace_context;

pub(crate) use body::ObservedBody;
pub(crate) use export::HttpClient;
pub use metrics::{DURATION_BOUNDS, TOKEN_USAGE_BOUNDS};

use crate::state::LogRecord;
use opentelemetry_proto::tonic::common::v1 as pc;
use opentelemetry_proto::tonic::trace::v1 as ps;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use trace_context::TraceParent;

/// The OTLP metric counting spans dropped on a full queue.
pub const DROPPED_SPANS_METRIC: &str = "writ.otlp.spans.dropped";

/// An attribute value (the OTLP types the gateway writes).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum AttributeValue {
    Str(String),
    Int(i64),
    Bool(bool),
}

impl From<&str> for AttributeValue {
    fn from(s: &str) -> Self {
        AttributeValue::Str(s.to_string())
    }
}

impl From<String> for AttributeValue {
    fn from(s: String) -> Self {
        AttributeValue::Str(s)
    }
}

/// A span event: a named, timestamped set of attributes (a guardrail that fired, say).
#[derive(Debug, Clone, PartialEq)]
pub struct SpanEvent {
    pub name: String,
    pub attributes: Vec<(String, AttributeValue)>,
}

/// What a caller adds to a request's span from the filter's log lines.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SpanAnnotations {
    pub attributes: Vec<(String, AttributeValue)>,
    pub events: Vec<SpanEvent>,
}

/// Reads one of a request's filter log lines and says what to add to its span; the
/// runtime knows nothing of what a filter logs. Called on the request's task when its
/// stream closes; keep it short, and never return message content.
#[derive(Clone)]
pub struct AnnotationHook(pub Arc<dyn Fn(&LogRecord) -> SpanAnnotations + Send + Sync>);

impl std::fmt::Debug for AnnotationHook {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AnnotationHook")
    }
}

/// Where and how the gateway exports traces and metrics.
#[derive(Debug, Clone)]
pub struct TelemetryConfig {
    /// Base URL of the OTLP/HTTP receiver (`http://127.0.0.1:4318`); `/v1/traces` and
    /// `/v1/metrics` are appended, as `OTEL_EXPORTER_OTLP_ENDPOINT` is read.
    pub endpoint: String,
    /// `service.name` of the resource.
    pub service_name: String,
    /// `gen_ai.provider.name` (`openai`, `azure.ai.openai`, …): the wire protocol does not
    /// say who serves it.
    pub provider_name: String,
    /// How often spans (at the latest) and metrics are exported.
    pub export_interval: Duration,
    /// Budget of one export request; past it the batch is dropped.
    pub export_timeout: Duration,
    /// Spans waiting for export; a span finished when it is full is dropped and counted.
    pub queue_capacity: usize,
    /// Spans per export request.
    pub max_batch: usize,
    /// Turns filter log lines into span attributes and events.
    pub annotate: Option<AnnotationHook>,
}

impl TelemetryConfig {
    /// Defaults as the OTel SDKs': 5 s between exports, 10 s per export, a queue of 2048
    /// spans, 512 per batch; service `writ`, provider `openai`.
    pub fn new(endpoint: &str) -> TelemetryConfig {
        TelemetryConfig {
            endpoint: endpoint.trim_end_matches('/').to_string(),
            service_name: "writ".into(),
            provider_name: "openai".into(),
            export_interval: Duration::from_secs(5),
            export_timeout: Duration::from_secs(10),
            queue_capacity: 2048,
            max_batch: 512,
            annotate: None,
        }
    }
}

/// The exporter's shared state: the span queue, the metrics, the drop counter.
pub(crate) struct Telemetry {
    config: TelemetryConfig,
    traces_url: hyper::Uri,
    metrics_url: hyper::Uri,
    queue: tokio::sync::mpsc::Sender<ps::Span>,
    pending: Mutex<Option<export::Pending>>,
    stop: Mutex<Option<tokio::sync::oneshot::Sender<tokio::sync::oneshot::Sender<()>>>>,
    dropped: AtomicU64,
    metrics: Mutex<metrics::Metrics>,
    start_nanos: u64,
}

/// Nanoseconds since the Unix epoch.
fn now_nanos() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

pub(crate) fn key_value(key: &str, value: AttributeValue) -> pc::KeyValue {
    use pc::any_value::Value;
    let value = match value {
        AttributeValue::Str(s) => Value::StringValue(s),
        AttributeValue::Int(i) => Value::IntValue(i),
        AttributeValue::Bool(b) => Value::BoolValue(b),
    };
    pc::KeyValue {
        key: key.to_string(),
        value: Some(pc::AnyValue { value: Some(value) }),
        ..Default::default()
    }
}

fn kv(key: &str, value: impl Into<AttributeValue>) -> pc::KeyValue {
    key_value(key, value.into())
}

fn int(key: &str, n: u64) -> pc::KeyValue {
    key_value(
        key,
        AttributeValue::Int(i64::try_from(n).unwrap_or(i64::MAX)),
    )
}

/// Why telemetry could not be set up.
#[derive(Debug, thiserror::Error)]
#[error("invalid OTLP endpoint `{0}`: expected http://host:port or https://host")]
pub struct EndpointError(String);

impl Telemetry {
    pub(crate) fn new(config: TelemetryConfig) -> Result<Arc<Telemetry>, EndpointError> {
        let url = |path: &str| -> Result<hyper::Uri, EndpointError> {
            let uri: hyper::Uri = format!("{}{path}", config.endpoint)
                .parse()
                .map_err(|_| EndpointError(config.endpoint.clone()))?;
            match (uri.scheme_str(), uri.host()) {
                (Some("http" | "https"), Some(_)) => Ok(uri),
                _ => Err(EndpointError(config.endpoint.clone())),
            }
        };
        let traces_url = url("/v1/traces")?;
        let metrics_url = url("/v1/metrics")?;
        let (queue, spans) = tokio::sync::mpsc::channel(config.queue_capacity.max(1));
        let (stop, stopped) = tokio::sync::oneshot::channel();
        Ok(Arc::new(Telemetry {
            config,
            traces_url,
            metrics_url,
            queue,
            pending: Mutex::new(Some(export::Pending { spans, stopped })),
            stop: Mutex::new(Some(stop)),
            dropped: AtomicU64::new(0),
            metrics: Mutex::new(metrics::Metrics::default()),
            start_nanos: now_nanos(),
        }))
    }

    /// Starts the export task on the current tokio runtime (once).
    pub(crate) fn spawn(self: &Arc<Self>, client: HttpClient) {
        if let Some(pending) = lock(&self.pending).take() {
            tokio::spawn(export::run(self.clone(), client, pending));
        }
    }

    /// Exports what is queued and the metrics, then stops the export task; waits at most
    /// the export timeout (the runtime then drops whatever is still in flight).
    pub(crate) async fn shutdown(&self) {
        let Some(stop) = lock(&self.stop).take() else {
            return;
        };
        let (ack, acked) = tokio::sync::oneshot::channel();
        if stop.send(ack).is_ok() {
            // One export timeout in all: a stalled receiver delays a shutdown by no more.
            let budget = self.config.export_timeout;
            let _ = tokio::time::timeout(budget, acked).await;
        }
    }

    /// Spans dropped so far because the queue was full.
    pub(crate) fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    /// Queues a finished span without waiting: a full queue drops it.
    fn enqueue(&self, span: ps::Span) {
        if self.queue.try_send(span).is_err() {
            let before = self.dropped.fetch_add(1, Ordering::Relaxed);
            if before == 0 {
                tracing::warn!(
                    "OTLP export queue full: dropping spans (counted in {DROPPED_SPANS_METRIC})"
                );
            }
        }
    }

    /// Starts the trace of one request: joins the client's trace when its `traceparent`
    /// is valid (and follows its sampling decision), else starts one.
    pub(crate) fn start_request(
        self: &Arc<Self>,
        method: &str,
        path: &str,
        traceparent: Option<&str>,
        tracestate: Option<&str>,
    ) -> Arc<RequestTrace> {
        let parent = traceparent.and_then(TraceParent::parse);
        let (trace_id, parent_id, flags, trace_state) = match parent {
            Some(p) => (
                p.trace_id,
                Some(p.parent_id),
                p.flags,
                tracestate.unwrap_or("").to_string(),
            ),
            None => (
                trace_context::new_trace_id(),
                None,
                trace_context::SAMPLED,
                String::new(),
            ),
        };
        Arc::new(RequestTrace {
            telemetry: self.clone(),
            trace_id,
            span_id: trace_context::new_span_id(),
            parent_id,
            flags,
            trace_state,
            recording: flags & trace_context::SAMPLED != 0,
            started: Instant::now(),
            start_nanos: now_nanos(),
            operation: genai::operation_for_path(path),
            method: method.to_string(),
            path: path.split(['?', '#']).next().unwrap_or("/").to_string(),
            state: Mutex::new(TraceState::default()),
        })
    }
}

/// One upstream attempt (the CLIENT span).
#[derive(Debug)]
struct Attempt {
    span_id: [u8; 8],
    start_nanos: u64,
    status: Option<u16>,
    error: Option<&'static str>,
}

#[derive(Debug, Default)]
struct TraceState {
    request_model: Option<String>,
    status: Option<u16>,
    error: Option<&'static str>,
    reply: Option<genai::ReplyObserver>,
    attributes: Vec<pc::KeyValue>,
    events: Vec<ps::span::Event>,
    attempts: Vec<Attempt>,
}

/// The trace of one request through the gateway. Its SERVER span (and CLIENT spans) end
/// when the last holder lets go of it: when the reply has been relayed to the client.
pub(crate) struct RequestTrace {
    telemetry: Arc<Telemetry>,
    trace_id: [u8; 16],
    span_id: [u8; 8],
    parent_id: Option<[u8; 8]>,
    flags: u8,
    trace_state: String,
    /// Sampled: its spans are exported (metrics are recorded either way).
    recording: bool,
    started: Instant,
    start_nanos: u64,
    operation: Option<&'static str>,
    method: String,
    path: String,
    state: Mutex<TraceState>,
}

impl RequestTrace {
    /// Reads the model asked for from the request body (as the client sent it).
    pub(crate) fn request_body(&self, body: &[u8]) {
        if self.operation.is_some() {
            lock(&self.state).request_model = genai::request_model(body);
        }
    }

    /// Starts an upstream attempt and returns the `traceparent` naming its span; `None`
    /// when the trace is not recorded, so the client's header goes on unchanged.
    pub(crate) fn upstream_traceparent(&self) -> Option<String> {
        if !self.recording {
            return None;
        }
        let span_id = trace_context::new_span_id();
        lock(&self.state).attempts.push(Attempt {
            span_id,
            start_nanos: now_nanos(),
            status: None,
            error: None,
        });
        Some(
            TraceParent {
                trace_id: self.trace_id,
                parent_id: span_id,
                flags: self.flags,
            }
            .header(),
        )
    }

    /// Whether the client's `tracestate` must not go upstream: it belonged to a
    /// `traceparent` that was missing or invalid, so this is a new trace.
    pub(crate) fn drops_tracestate(&self) -> bool {
        self.recording && self.parent_id.is_none()
    }

    /// The upstream answered the current attempt with `status`.
    pub(crate) fn upstream_answered(&self, status: u16) {
        if let Some(a) = lock(&self.state).attempts.last_mut() {
            a.status = Some(status);
        }
    }

    /// The current attempt failed without an answer (`timeout`, `unavailable`).
    pub(crate) fn upstream_failed(&self, kind: &'static str) {
        if let Some(a) = lock(&self.state).attempts.last_mut() {
            a.error = Some(kind);
        }
    }

    /// Hands the request's filter logs to the annotation hook.
    pub(crate) fn annotate(&self, logs: &[LogRecord]) {
        let Some(hook) = &self.telemetry.config.annotate else {
            return;
        };
        let mut added = SpanAnnotations::default();
        for log in logs {
            let a = (hook.0)(log);
            added.attributes.extend(a.attributes);
            added.events.extend(a.events);
        }
        if added.attributes.is_empty() && added.events.is_empty() {
            return;
        }
        let now = now_nanos();
        let mut state = lock(&self.state);
        state
            .attributes
            .extend(added.attributes.into_iter().map(|(k, v)| key_value(&k, v)));
        state.events.extend(added.events.into_iter().map(|e| {
            ps::span::Event {
                time_unix_nano: now,
                name: e.name,
                attributes: e
                    .attributes
                    .into_iter()
                    .map(|(k, v)| key_value(&k, v))
                    .collect(),
                dropped_attributes_count: 0,
            }
        }));
    }

    /// The client's reply starts: its status and content type.
    pub(crate) fn response(&self, status: u16, content_type: Option<&str>) {
        let mut state = lock(&self.state);
        state.status = Some(status);
        if self.operation.is_some() {
            state.reply = Some(genai::ReplyObserver::new(content_type));
        }
    }

    /// A chunk of the reply as the client receives it.
    pub(crate) fn reply_chunk(&self, chunk: &[u8]) {
        if let Some(r) = lock(&self.state).reply.as_mut() {
            r.feed(chunk);
        }
    }

    /// The reply ended early (the provider or the filter stopped it mid-stream).
    pub(crate) fn reply_aborted(&self) {
        lock(&self.state).error = Some("response_aborted");
    }

    fn finish(&mut self) {
        let end = now_nanos();
        let seconds = self.started.elapsed().as_secs_f64();
        let mut state = std::mem::take(&mut *lock(&self.state));
        if let Some(r) = state.reply.as_mut() {
            r.finish();
        }
        let provider = self.telemetry.config.provider_name.clone();
        let status = state.status;
        let response_model = state.reply.as_ref().and_then(|r| r.model.clone());
        let usage = state.reply.as_ref().and_then(|r| r.usage);
        let error_type: Option<String> = state
            .error
            .map(str::to_string)
            .or_else(|| status.filter(|s| *s >= 400).map(|s| s.to_string()));

        // Metrics: every GenAI request, sampled or not.
        if let Some(op) = self.operation {
            let mut base: metrics::SeriesKey = vec![
                ("gen_ai.operation.name", op.into()),
                ("gen_ai.provider.name", provider.clone().into()),
            ];
            if let Some(m) = &state.request_model {
                base.push(("gen_ai.request.model", m.clone().into()));
            }
            if let Some(m) = &response_model {
                base.push(("gen_ai.response.model", m.clone().into()));
            }
            let mut m = lock(&self.telemetry.metrics);
            m.dirty = true;
            let mut with_error = base.clone();
            if let Some(e) = &error_type {
                with_error.push(("error.type", e.clone().into()));
            }
            m.duration.record(with_error, seconds);
            if let Some(u) = usage {
                for (kind, n) in [("input", u.input_tokens), ("output", u.output_tokens)] {
                    if let Some(n) = n {
                        let mut key = base.clone();
                        key.push(("gen_ai.token.type", kind.into()));
                        m.token_usage.record(key, n as f64);
                    }
                }
            }
        }
        if !self.recording {
            return;
        }

        let name = match (self.operation, &state.request_model) {
            (Some(op), Some(model)) => format!("{op} {model}"),
            (Some(op), None) => op.to_string(),
            (None, _) => self.method.clone(),
        };
        let mut genai_attrs = Vec::new();
        if let Some(op) = self.operation {
            genai_attrs.push(kv("gen_ai.operation.name", op));
            genai_attrs.push(kv("gen_ai.provider.name", provider.as_str()));
            if let Some(m) = &state.request_model {
                genai_attrs.push(kv("gen_ai.request.model", m.as_str()));
            }
            if let Some(m) = &response_model {
                genai_attrs.push(kv("gen_ai.response.model", m.as_str()));
            }
            if let Some(u) = usage {
                if let Some(n) = u.input_tokens {
                    genai_attrs.push(int("gen_ai.usage.input_tokens", n));
                }
                if let Some(n) = u.output_tokens {
                    genai_attrs.push(int("gen_ai.usage.output_tokens", n));
                }
            }
        }
        let remote = 0x100 | 0x200; // has-is-remote, is-remote
        let mut attributes = vec![
            kv("http.request.method", self.method.as_str()),
            kv("url.path", self.path.as_str()),
        ];
        if let Some(s) = status {
            attributes.push(int("http.response.status_code", u64::from(s)));
        }
        attributes.extend(genai_attrs.iter().cloned());
        if let Some(e) = &error_type {
            attributes.push(kv("error.type", e.as_str()));
        }
        attributes.extend(state.attributes);
        // A server span is in error for 5xx (and an aborted reply), not for a 4xx answer.
        let server_error = state.error.is_some() || status.is_some_and(|s| s >= 500);
        self.telemetry.enqueue(ps::Span {
            trace_id: self.trace_id.to_vec(),
            span_id: self.span_id.to_vec(),
            trace_state: self.trace_state.clone(),
            parent_span_id: self.parent_id.map(|p| p.to_vec()).unwrap_or_default(),
            flags: u32::from(self.flags)
                | if self.parent_id.is_some() {
                    remote
                } else {
                    0x100
                },
            name: name.clone(),
            kind: ps::span::SpanKind::Server as i32,
            start_time_unix_nano: self.start_nanos,
            end_time_unix_nano: end,
            attributes,
            events: state.events,
            status: Some(status_of(server_error)),
            ..Default::default()
        });
        for attempt in state.attempts {
            let mut attributes = vec![
                kv("http.request.method", self.method.as_str()),
                kv("url.path", self.path.as_str()),
            ];
            if let Some(s) = attempt.status {
                attributes.push(int("http.response.status_code", u64::from(s)));
            }
            attributes.extend(genai_attrs.iter().cloned());
            let error = attempt
                .error
                .map(str::to_string)
                .or_else(|| attempt.status.filter(|s| *s >= 400).map(|s| s.to_string()));
            if let Some(e) = &error {
                attributes.push(kv("error.type", e.as_str()));
            }
            self.telemetry.enqueue(ps::Span {
                trace_id: self.trace_id.to_vec(),
                span_id: attempt.span_id.to_vec(),
                trace_state: self.trace_state.clone(),
                parent_span_id: self.span_id.to_vec(),
                flags: u32::from(self.flags) | 0x100,
                name: name.clone(),
                kind: ps::span::SpanKind::Client as i32,
                start_time_unix_nano: attempt.start_nanos,
                end_time_unix_nano: end,
                attributes,
                status: Some(status_of(error.is_some())),
                ..Default::default()
            });
        }
    }
}

fn status_of(error: bool) -> ps::Status {
    ps::Status {
        message: String::new(),
        code: if error {
            ps::status::StatusCode::Error as i32
        } else {
            ps::status::StatusCode::Unset as i32
        },
    }
}

impl Drop for RequestTrace {
    fn drop(&mut self) {
        self.finish();
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    const CLIENT: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    fn telemetry(capacity: usize) -> Arc<Telemetry> {
        let mut config = TelemetryConfig::new("http://127.0.0.1:9");
        config.queue_capacity = capacity;
        Telemetry::new(config).unwrap()
    }

    fn queue(t: &Telemetry) -> tokio::sync::mpsc::Receiver<ps::Span> {
        lock(&t.pending).take().unwrap().spans
    }

    fn str_attr(span: &ps::Span, key: &str) -> Option<String> {
        span.attributes
            .iter()
            .find(|kv| kv.key == key)
            .and_then(|kv| match kv.value.as_ref()?.value.as_ref()? {
                pc::any_value::Value::StringValue(s) => Some(s.clone()),
                _ => None,
            })
    }

    #[test]
    fn a_full_queue_drops_and_counts() {
        let t = telemetry(1);
        let _rx = queue(&t);
        for _ in 0..3 {
            t.enqueue(ps::Span::default());
        }
        assert_eq!(t.dropped(), 2);
    }

    #[test]
    fn a_request_joins_the_clients_trace_and_names_its_upstream_span() {
        let t = telemetry(16);
        let mut rx = queue(&t);
        let trace = t.start_request(
            "POST",
            "/v1/chat/completions?api-version=1",
            Some(CLIENT),
            Some("k=v"),
        );
        trace.request_body(
            br#"{"model":"m","messages":[{"role":"user","content":"my secret text"}]}"#,
        );
        let upstream = TraceParent::parse(&trace.upstream_traceparent().unwrap()).unwrap();
        assert!(!trace.drops_tracestate());
        trace.upstream_answered(200);
        trace.response(200, Some("application/json"));
        trace.reply_chunk(br#"{"model":"m-1","usage":{"prompt_tokens":3,"completion_tokens":4}}"#);
        drop(trace);
        let server = rx.try_recv().unwrap();
        let client = rx.try_recv().unwrap();
        assert_eq!(server.kind, ps::span::SpanKind::Server as i32);
        assert_eq!(client.kind, ps::span::SpanKind::Client as i32);
        assert_eq!(server.name, "chat m");
        assert_eq!(
            trace_context::hex(&server.trace_id),
            "4bf92f3577b34da6a3ce929d0e0e4736"
        );
        assert_eq!(
            trace_context::hex(&server.parent_span_id),
            "00f067aa0ba902b7"
        );
        assert_eq!(server.trace_state, "k=v");
        assert_eq!(client.parent_span_id, server.span_id);
        assert_eq!(upstream.parent_id.to_vec(), client.span_id);
        assert_eq!(upstream.trace_id.to_vec(), server.trace_id);
        assert_eq!(
            str_attr(&server, "url.path").as_deref(),
            Some("/v1/chat/completions")
        );
        assert_eq!(
            str_attr(&server, "gen_ai.response.model").as_deref(),
            Some("m-1")
        );
        let m = lock(&t.metrics);
        assert_eq!(m.token_usage.series_count(), 2);
        assert_eq!(m.duration.series_count(), 1);
    }

    #[test]
    fn an_unsampled_trace_is_measured_but_not_exported() {
        let t = telemetry(16);
        let mut rx = queue(&t);
        let unsampled = CLIENT.replace("-01", "-00");
        let trace = t.start_request("POST", "/v1/embeddings", Some(&unsampled), None);
        assert_eq!(trace.upstream_traceparent(), None);
        trace.response(200, None);
        drop(trace);
        assert!(rx.try_recv().is_err());
        assert_eq!(lock(&t.metrics).duration.series_count(), 1);
    }

    #[test]
    fn without_a_valid_traceparent_a_trace_starts_and_drops_tracestate() {
        let t = telemetry(16);
        let mut rx = queue(&t);
        let trace = t.start_request("GET", "/v1/models", Some("garbage"), Some("k=v"));
        assert!(trace.drops_tracestate());
        assert!(trace.upstream_traceparent().is_some());
        trace.response(502, None);
        drop(trace);
        let server = rx.try_recv().unwrap();
        assert!(server.parent_span_id.is_empty());
        assert_eq!(server.trace_state, "");
        assert_eq!(server.name, "GET");
        assert_eq!(
            server.status.unwrap().code,
            ps::status::StatusCode::Error as i32
        );
        // Not a GenAI operation: no GenAI metrics.
        assert_eq!(lock(&t.metrics).duration.series_count(), 0);
    }

    #[test]
    fn an_endpoint_must_be_an_http_url() {
        assert!(Telemetry::new(TelemetryConfig::new("127.0.0.1:4318")).is_err());
        assert!(Telemetry::new(TelemetryConfig::new("http://127.0.0.1:4318/")).is_ok());
    }
}
