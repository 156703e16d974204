//! OpenTelemetry from both hosts: `writ serve --otlp` and Envoy configured by
//! `writ envoy --otlp` export to a loopback OTLP/HTTP receiver started here, which decodes
//! every request with the real OTLP protobuf types. Checked: GenAI span attributes, the
//! SERVER/CLIENT parent relation, the client's trace id kept and sent upstream in
//! `traceparent`, guardrail events carrying the clause and the artifact sha256, the GenAI
//! metrics, and that no prompt, completion or detected value is in any exported byte.

use std::io::{BufReader, Write};
use std::net::{SocketAddr, TcpListener};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value::Value};
use opentelemetry_proto::tonic::metrics::v1::{Metric, metric::Data};
use opentelemetry_proto::tonic::trace::v1::{Span, span::SpanKind};
use prost::Message;
use sha2::Digest;

use crate::support::cases::Gateway as _;
use crate::support::envoy::EnvoyProcess;
use crate::support::http::{Request, read_request, send};
use crate::support::serve::ServeProcess;
use crate::support::tempdir::TempDir;
use crate::support::upstream::{Reply, Upstream};
use crate::support::{output_text, writ_envoy, writ_in};

/// What the receiver got: every export request's raw bytes, decoded spans (with their
/// resource's `service.name`) and metrics.
#[derive(Default)]
struct Received {
    raw: Vec<u8>,
    spans: Vec<(String, Span)>,
    metrics: Vec<Metric>,
    paths: Vec<String>,
}

/// A loopback OTLP/HTTP receiver (`POST /v1/traces`, `/v1/metrics`, protobuf).
struct Receiver {
    addr: SocketAddr,
    got: Arc<Mutex<Received>>,
}

impl Receiver {
    fn start() -> Receiver {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let got: Arc<Mutex<Received>> = Arc::default();
        let shared = got.clone();
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(conn) = conn else { continue };
                let got = shared.clone();
                std::thread::spawn(move || {
                    let _ = conn.set_read_timeout(Some(Duration::from_secs(60)));
                    let mut writer = match conn.try_clone() {
                        Ok(w) => w,
                        Err(_) => return,
                    };
                    let mut reader = BufReader::new(conn);
                    while let Ok(Some(req)) = read_request(&mut reader) {
                        record(&got, &req);
                        let _ = writer.write_all(
                            b"HTTP/1.1 200 OK\r\ncontent-type: application/x-protobuf\r\ncontent-length: 0\r\n\r\n",
                        );
                    }
                });
            }
        });
        Receiver { addr, got }
    }

    fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Waits (bounded) until `done` holds for what was received.
    fn wait(&self, what: &str, done: impl Fn(&Received) -> bool) {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if done(&self.got.lock().unwrap()) {
                return;
            }
            if Instant::now() > deadline {
                let got = self.got.lock().unwrap();
                let names: Vec<_> = got.spans.iter().map(|(s, sp)| (s, &sp.name)).collect();
                panic!(
                    "receiver: no {what} after 30 s; paths {:?}, spans {names:?}, metrics {:?}",
                    got.paths,
                    got.metrics.iter().map(|m| &m.name).collect::<Vec<_>>()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

fn record(got: &Mutex<Received>, req: &Request) {
    let mut got = got.lock().unwrap();
    got.raw.extend_from_slice(&req.body);
    got.paths.push(req.path.clone());
    assert_eq!(
        req.header_value("content-type"),
        Some("application/x-protobuf"),
        "{}",
        req.path
    );
    match req.path.as_str() {
        "/v1/traces" => {
            let export = ExportTraceServiceRequest::decode(req.body.as_slice()).unwrap();
            for rs in export.resource_spans {
                let service = rs
                    .resource
                    .as_ref()
                    .and_then(|r| str_attr(&r.attributes, "service.name"))
                    .unwrap_or_default();
                for ss in rs.scope_spans {
                    for span in ss.spans {
                        got.spans.push((service.clone(), span));
                    }
                }
            }
        }
        "/v1/metrics" => {
            let export = ExportMetricsServiceRequest::decode(req.body.as_slice()).unwrap();
            for rm in export.resource_metrics {
                for sm in rm.scope_metrics {
                    got.metrics.extend(sm.metrics);
                }
            }
        }
        other => panic!("unexpected OTLP path {other}"),
    }
}

fn attr<'a>(attrs: &'a [KeyValue], key: &str) -> Option<&'a Value> {
    attrs
        .iter()
        .find(|kv| kv.key == key)
        .and_then(|kv| kv.value.as_ref())
        .and_then(|v: &AnyValue| v.value.as_ref())
}

fn str_attr(attrs: &[KeyValue], key: &str) -> Option<String> {
    match attr(attrs, key) {
        Some(Value::StringValue(s)) => Some(s.clone()),
        _ => None,
    }
}

fn int_attr(attrs: &[KeyValue], key: &str) -> Option<i64> {
    match attr(attrs, key) {
        Some(Value::IntValue(i)) => Some(*i),
        _ => None,
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

const TRACE_ID: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const CLIENT_SPAN: &str = "00f067aa0ba902b7";
const EMAIL: &str = "jane.doe@example.com";
/// A phrase of the prompt that must not be exported either.
const PROMPT_MARKER: &str = "quarterly cactus inventory";

fn secret() -> String {
    format!("ghp_{}", &"a1B2c3D4e5".repeat(4)[..36])
}

fn chat(text: &str) -> Request {
    let body = serde_json::json!({
        "model": "gpt-4o-mini",
        "messages": [{"role": "user", "content": text}],
    });
    Request::post_json("/v1/chat/completions", &body.to_string())
        .header("x-workflow", "support-assistant")
}

/// No exported byte holds the prompt, the e-mail address, the secret or the completion.
fn assert_no_content(raw: &[u8], completion: &str) {
    let text = String::from_utf8_lossy(raw);
    for needle in [EMAIL, &secret(), PROMPT_MARKER, completion] {
        assert!(!text.contains(needle), "`{needle}` was exported");
    }
}

/// Builds the support-assistant policy into `dir`; returns the artifact and its sha256.
fn build_support_policy(dir: &std::path::Path) -> (std::path::PathBuf, String) {
    let source = crate::support::workspace_root().join("policies/support-assistant.policy");
    std::fs::copy(&source, dir.join("support-assistant.policy")).unwrap();
    std::fs::copy(
        crate::support::workspace_root().join("policies/ai-policy.md"),
        dir.join("ai-policy.md"),
    )
    .unwrap();
    let out = writ_in(dir, &["build", "support-assistant.policy", "--out", "out"]);
    assert!(out.status.success(), "{}", output_text(&out));
    let artifact = std::fs::read_dir(dir.join("out"))
        .unwrap()
        .filter_map(|e| e.ok().map(|e| e.path()))
        .find(|p| p.extension().is_some_and(|x| x == "wasm"))
        .unwrap();
    let sha = hex(&sha2::Sha256::digest(std::fs::read(&artifact).unwrap()));
    (artifact, sha)
}

#[test]
fn writ_serve_exports_genai_spans_guardrail_events_and_metrics() {
    let dir = TempDir::new("otel-serve");
    let (artifact, sha) = build_support_policy(dir.path());
    let receiver = Receiver::start();
    let completion = "Your parcel left the warehouse on Tuesday.";
    let upstream = Upstream::start(Reply::chat(completion));
    let serve = ServeProcess::start_with(
        &artifact,
        upstream.addr(),
        &[
            "--otlp".into(),
            receiver.url(),
            "--otel-provider".into(),
            "openai".into(),
            "--otlp-interval-ms".into(),
            "200".into(),
        ],
    )
    .unwrap();

    // Allowed, with the e-mail tokenised (AIP-2.1), inside the client's trace.
    let allowed = chat(&format!("About my {PROMPT_MARKER}: write to {EMAIL}"))
        .header("traceparent", &format!("00-{TRACE_ID}-{CLIENT_SPAN}-01"))
        .header("tracestate", "vendor=opaque")
        .header("x-request-id", "otel-allowed");
    let r = send(serve.addr(), &allowed, Duration::from_secs(20)).unwrap();
    assert_eq!(r.status, 200, "{}", r.body_str());
    // Denied for the secret (AIP-2.4), no traceparent: the gateway starts a trace.
    let denied = chat(&format!("{PROMPT_MARKER}, my token is {}", secret()))
        .header("x-request-id", "otel-denied");
    let r = send(serve.addr(), &denied, Duration::from_secs(20)).unwrap();
    assert_eq!(r.status, 400, "{}", r.body_str());
    let upstream_tp = upstream.received()[0]
        .header_value("traceparent")
        .unwrap()
        .to_string();
    // Streamed (SSE): the model and usage come from the chunks the client receives.
    let chunk = |data: serde_json::Value| (Duration::ZERO, data.to_string());
    upstream.set_reply(Reply::Sse {
        events: vec![
            chunk(serde_json::json!({"object": "chat.completion.chunk", "model": "gpt-4o-mini-2024",
                "choices": [{"index": 0, "delta": {"content": completion}}]})),
            chunk(serde_json::json!({"object": "chat.completion.chunk", "model": "gpt-4o-mini-2024",
                "choices": [], "usage": {"prompt_tokens": 7, "completion_tokens": 3, "total_tokens": 10}})),
            (Duration::ZERO, "[DONE]".to_string()),
        ],
    });
    let body = serde_json::json!({"model": "gpt-4o-mini", "stream": true,
        "messages": [{"role": "user", "content": "hello"}]});
    let streamed = Request::post_json("/v1/chat/completions", &body.to_string())
        .header("x-workflow", "support-assistant")
        .header("x-request-id", "otel-stream");
    let r = send(serve.addr(), &streamed, Duration::from_secs(20)).unwrap();
    assert_eq!(r.status, 200, "{}", r.body_str());
    assert!(r.body_str().contains("[DONE]"), "{}", r.body_str());

    // The upstream got a traceparent in the client's trace, naming the gateway's span.
    let got = upstream.received();
    assert_eq!(got.len(), 2, "the denied request never goes upstream");
    let parts: Vec<&str> = upstream_tp.split('-').collect();
    assert_eq!(parts.len(), 4, "{upstream_tp}");
    assert_eq!((parts[0], parts[1], parts[3]), ("00", TRACE_ID, "01"));
    assert_ne!(
        parts[2], CLIENT_SPAN,
        "the gateway's own span goes upstream"
    );
    assert_eq!(got[0].header_value("tracestate"), Some("vendor=opaque"));

    receiver.wait("spans of both requests", |g| {
        g.spans
            .iter()
            .filter(|(_, s)| s.kind == SpanKind::Server as i32)
            .count()
            >= 3
            && g.spans
                .iter()
                .any(|(_, s)| s.kind == SpanKind::Client as i32)
    });
    // Metrics are cumulative: wait for an export that counts all three requests.
    receiver.wait("the GenAI metrics of every request", |g| {
        let timed = g
            .metrics
            .iter()
            .rev()
            .find(|m| m.name == "gen_ai.client.operation.duration")
            .and_then(|m| match &m.data {
                Some(Data::Histogram(h)) => Some(h.data_points.iter().map(|p| p.count).sum()),
                _ => None,
            });
        timed == Some(3u64)
            && g.metrics
                .iter()
                .any(|m| m.name == "gen_ai.client.token.usage")
    });
    let got = receiver.got.lock().unwrap();
    assert!(got.spans.iter().all(|(service, _)| service == "writ"));

    // The allowed request: SERVER span in the client's trace, child of the client's span.
    let server = got
        .spans
        .iter()
        .map(|(_, s)| s)
        .find(|s| s.kind == SpanKind::Server as i32 && hex(&s.trace_id) == TRACE_ID)
        .expect("a server span in the client's trace");
    assert_eq!(hex(&server.parent_span_id), CLIENT_SPAN);
    assert_eq!(server.name, "chat gpt-4o-mini");
    assert_eq!(server.trace_state, "vendor=opaque");
    let a = &server.attributes;
    assert_eq!(
        str_attr(a, "gen_ai.operation.name").as_deref(),
        Some("chat")
    );
    assert_eq!(
        str_attr(a, "gen_ai.provider.name").as_deref(),
        Some("openai")
    );
    assert_eq!(
        str_attr(a, "gen_ai.request.model").as_deref(),
        Some("gpt-4o-mini")
    );
    assert_eq!(
        str_attr(a, "gen_ai.response.model").as_deref(),
        Some("gpt-4o-mini")
    );
    assert_eq!(int_attr(a, "gen_ai.usage.input_tokens"), Some(10));
    assert_eq!(int_attr(a, "gen_ai.usage.output_tokens"), Some(5));
    assert_eq!(int_attr(a, "http.response.status_code"), Some(200));
    assert_eq!(
        str_attr(a, "writ.request.id").as_deref(),
        Some("otel-allowed")
    );
    // Its CLIENT span is its child, and is the span the upstream was told about.
    let client = got
        .spans
        .iter()
        .map(|(_, s)| s)
        .find(|s| s.kind == SpanKind::Client as i32)
        .unwrap();
    assert_eq!(hex(&client.trace_id), TRACE_ID);
    assert_eq!(client.parent_span_id, server.span_id);
    assert_eq!(hex(&client.span_id), parts[2]);
    assert_eq!(
        int_attr(&client.attributes, "http.response.status_code"),
        Some(200)
    );
    // The guardrail that fired: the clause as rule id, the artifact as policy version.
    let event = server
        .events
        .iter()
        .find(|e| str_attr(&e.attributes, "gen_ai.guardrail.rule.id").as_deref() == Some("AIP-2.1"))
        .expect("a guardrail event for AIP-2.1");
    assert_eq!(event.name, "gen_ai.guardrail.finding");
    let e = &event.attributes;
    assert_eq!(
        str_attr(e, "gen_ai.guardrail.policy.version"),
        Some(sha.clone())
    );
    assert_eq!(
        str_attr(e, "gen_ai.guardrail.policy.name").as_deref(),
        Some("support-assistant")
    );
    assert_eq!(
        str_attr(e, "gen_ai.guardrail.action.type").as_deref(),
        Some("tokenise")
    );

    // The denied request: a new trace, status 400, the deny rule as an event, no upstream.
    let denied = got
        .spans
        .iter()
        .map(|(_, s)| s)
        .find(|s| {
            s.kind == SpanKind::Server as i32
                && int_attr(&s.attributes, "http.response.status_code") == Some(400)
        })
        .expect("a server span for the denied request");
    assert_ne!(hex(&denied.trace_id), TRACE_ID);
    assert_ne!(denied.trace_id, vec![0; 16]);
    assert!(denied.parent_span_id.is_empty(), "a root span");
    assert_eq!(
        str_attr(&denied.attributes, "error.type").as_deref(),
        Some("400")
    );
    let deny = denied
        .events
        .iter()
        .find(|e| str_attr(&e.attributes, "gen_ai.guardrail.rule.id").as_deref() == Some("AIP-2.4"))
        .expect("a guardrail event for AIP-2.4");
    assert_eq!(
        str_attr(&deny.attributes, "gen_ai.guardrail.action.type").as_deref(),
        Some("deny")
    );
    assert_eq!(
        str_attr(&deny.attributes, "gen_ai.guardrail.policy.version"),
        Some(sha)
    );
    assert!(
        !got.spans
            .iter()
            .any(|(_, s)| s.kind == SpanKind::Client as i32 && s.trace_id == denied.trace_id),
        "a request denied before the upstream has no CLIENT span"
    );

    // The streamed request: model and usage read from the SSE chunks.
    let stream = got
        .spans
        .iter()
        .map(|(_, s)| s)
        .find(|s| str_attr(&s.attributes, "writ.request.id").as_deref() == Some("otel-stream"))
        .expect("a server span for the streamed request");
    let a = &stream.attributes;
    assert_eq!(
        str_attr(a, "gen_ai.response.model").as_deref(),
        Some("gpt-4o-mini-2024")
    );
    assert_eq!(int_attr(a, "gen_ai.usage.input_tokens"), Some(7));
    assert_eq!(int_attr(a, "gen_ai.usage.output_tokens"), Some(3));

    // Metrics: token usage by type with the recommended buckets; duration in seconds.
    let usage = got
        .metrics
        .iter()
        .rev()
        .find(|m| m.name == "gen_ai.client.token.usage")
        .unwrap();
    assert_eq!(usage.unit, "{token}");
    let Some(Data::Histogram(h)) = &usage.data else {
        panic!("token usage is not a histogram: {usage:?}")
    };
    for (kind, sum) in [("input", 10.0), ("output", 5.0)] {
        let point = h
            .data_points
            .iter()
            .find(|p| {
                str_attr(&p.attributes, "gen_ai.token.type").as_deref() == Some(kind)
                    && str_attr(&p.attributes, "gen_ai.response.model").as_deref()
                        == Some("gpt-4o-mini")
            })
            .unwrap_or_else(|| panic!("no {kind} tokens point"));
        assert_eq!((point.count, point.sum), (1, Some(sum)));
        assert_eq!(
            str_attr(&point.attributes, "gen_ai.request.model").as_deref(),
            Some("gpt-4o-mini")
        );
        assert_eq!(
            point.explicit_bounds,
            [
                1.0, 4.0, 16.0, 64.0, 256.0, 1024.0, 4096.0, 16384.0, 65536.0, 262144.0, 1048576.0,
                4194304.0, 16777216.0, 67108864.0
            ]
        );
    }
    let duration = got
        .metrics
        .iter()
        .rev()
        .find(|m| m.name == "gen_ai.client.operation.duration")
        .unwrap();
    assert_eq!(duration.unit, "s");
    let Some(Data::Histogram(h)) = &duration.data else {
        panic!("duration is not a histogram")
    };
    let total: u64 = h.data_points.iter().map(|p| p.count).sum();
    assert_eq!(total, 3, "every request timed");
    assert_eq!(h.data_points[0].explicit_bounds.first(), Some(&0.01));
    assert_eq!(h.data_points[0].explicit_bounds.last(), Some(&81.92));

    assert_no_content(&got.raw, completion);
    drop(serve);
}

#[test]
fn a_stalled_receiver_never_holds_up_requests() {
    let dir = TempDir::new("otel-stall");
    let (artifact, _) = build_support_policy(dir.path());
    // Accepts connections (the kernel's backlog) but never reads or answers.
    let stalled = TcpListener::bind("127.0.0.1:0").unwrap();
    let upstream = Upstream::start(Reply::chat("ok"));
    let serve = ServeProcess::start_with(
        &artifact,
        upstream.addr(),
        &[
            "--otlp".into(),
            format!("http://{}", stalled.local_addr().unwrap()),
            "--otlp-interval-ms".into(),
            "50".into(),
        ],
    )
    .unwrap();
    for i in 0..20 {
        let r = send(
            serve.addr(),
            &chat("hello").header("x-request-id", &format!("stall-{i}")),
            Duration::from_secs(5),
        )
        .unwrap();
        assert_eq!(r.status, 200, "{}", r.body_str());
    }
    drop(stalled);
}

#[test]
fn writ_serve_flushes_its_spans_on_sigterm() {
    let dir = TempDir::new("otel-flush");
    let (artifact, _) = build_support_policy(dir.path());
    let receiver = Receiver::start();
    let upstream = Upstream::start(Reply::chat("ok"));
    // No periodic export within the test: only the shutdown flush can deliver the span.
    let serve = ServeProcess::start_with(
        &artifact,
        upstream.addr(),
        &[
            "--otlp".into(),
            receiver.url(),
            "--otlp-interval-ms".into(),
            "600000".into(),
        ],
    )
    .unwrap();
    let r = send(
        serve.addr(),
        &chat("hello").header("x-request-id", "flush-1"),
        Duration::from_secs(20),
    )
    .unwrap();
    assert_eq!(r.status, 200, "{}", r.body_str());
    std::thread::sleep(Duration::from_millis(300));
    assert!(
        receiver.got.lock().unwrap().spans.is_empty(),
        "nothing exported before the interval"
    );
    let kill = std::process::Command::new("kill")
        .args(["-TERM", &serve.pid().to_string()])
        .status()
        .unwrap();
    assert!(kill.success());
    receiver.wait("the span flushed at shutdown", |g| {
        g.spans
            .iter()
            .any(|(_, s)| str_attr(&s.attributes, "writ.request.id").as_deref() == Some("flush-1"))
            && g.metrics
                .iter()
                .any(|m| m.name == "gen_ai.client.operation.duration")
    });
}

#[test]
fn envoy_exports_spans_and_propagates_the_clients_trace() {
    let dir = TempDir::new("otel-envoy");
    let (artifact, sha) = build_support_policy(dir.path());
    let receiver = Receiver::start();
    let completion = "Your parcel left the warehouse on Tuesday.";
    let upstream = Upstream::start(Reply::chat(completion));
    let otlp = receiver.addr.to_string();
    let out = writ_envoy(dir.path(), &artifact, upstream.addr(), &["--otlp", &otlp]);
    let yaml = String::from_utf8(out.stdout).unwrap();
    assert!(yaml.contains("envoy.tracers.opentelemetry"), "{yaml}");
    let envoy = EnvoyProcess::start(&yaml).unwrap();

    let req = chat(&format!("About my {PROMPT_MARKER}: write to {EMAIL}"))
        .header("traceparent", &format!("00-{TRACE_ID}-{CLIENT_SPAN}-01"));
    let r = send(envoy.listener(), &req, Duration::from_secs(20)).unwrap();
    assert_eq!(r.status, 200, "{}\n{}", r.body_str(), envoy.log());

    let got = upstream.received();
    let upstream_tp = got[0].header_value("traceparent").unwrap().to_string();
    assert!(
        upstream_tp.starts_with(&format!("00-{TRACE_ID}-")),
        "the client's trace goes upstream: {upstream_tp}"
    );
    assert!(
        !upstream_tp.contains(CLIENT_SPAN),
        "Envoy's span goes upstream"
    );

    // Envoy flushes its spans every 5 s by default.
    receiver.wait("Envoy's spans in the client's trace", |g| {
        g.spans
            .iter()
            .any(|(_, s)| hex(&s.trace_id) == TRACE_ID && s.kind == SpanKind::Server as i32)
    });
    let got = receiver.got.lock().unwrap();
    let spans: Vec<&Span> = got
        .spans
        .iter()
        .filter(|(service, s)| service == "writ-envoy" && hex(&s.trace_id) == TRACE_ID)
        .map(|(_, s)| s)
        .collect();
    let server = spans
        .iter()
        .find(|s| s.kind == SpanKind::Server as i32)
        .expect("Envoy's server span");
    assert_eq!(hex(&server.parent_span_id), CLIENT_SPAN);
    assert_eq!(
        str_attr(&server.attributes, "gen_ai.provider.name").as_deref(),
        Some("openai")
    );
    assert_eq!(
        str_attr(&server.attributes, "writ.artifact.sha256"),
        Some(sha)
    );
    // The span id Envoy sent upstream is one of its spans in this trace.
    let sent_span = upstream_tp.split('-').nth(2).unwrap();
    assert!(
        spans.iter().any(|s| hex(&s.span_id) == sent_span),
        "the upstream's parent {sent_span} is an exported Envoy span"
    );
    assert_no_content(&got.raw, completion);
}
