//! The export task: batches finished spans from the bounded queue and POSTs them, and the
//! metrics, to the OTLP/HTTP receiver as protobuf (`application/x-protobuf`), each POST
//! bounded by the export timeout. A failed export is logged and dropped, never retried
//! into the request path.

use super::{Telemetry, kv};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1 as pc;
use opentelemetry_proto::tonic::metrics::v1 as pm;
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1 as ps;
use prost::Message;
use std::sync::Arc;

/// The gateway's HTTP client (HTTP and HTTPS), shared with the export task.
pub(crate) type HttpClient = Client<HttpsConnector<HttpConnector>, Full<Bytes>>;

/// The receiving ends the export task takes over when it starts.
pub(crate) struct Pending {
    pub(crate) spans: tokio::sync::mpsc::Receiver<ps::Span>,
    pub(crate) stopped: tokio::sync::oneshot::Receiver<tokio::sync::oneshot::Sender<()>>,
}

/// Largest reply read from the receiver (its partial-success message).
const MAX_REPLY: usize = 64 << 10;

pub(crate) async fn run(telemetry: Arc<Telemetry>, client: HttpClient, pending: Pending) {
    let Pending {
        mut spans,
        mut stopped,
    } = pending;
    let mut exporter = Exporter {
        telemetry,
        client,
        failing: false,
    };
    let period = exporter
        .telemetry
        .config
        .export_interval
        .max(std::time::Duration::from_millis(1));
    let mut tick = tokio::time::interval(period);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick.tick().await;
    let max_batch = exporter.telemetry.config.max_batch.max(1);
    let mut batch = Vec::new();
    loop {
        tokio::select! {
            span = spans.recv() => match span {
                Some(span) => {
                    batch.push(span);
                    if batch.len() >= max_batch {
                        exporter.spans(std::mem::take(&mut batch)).await;
                    }
                }
                None => break,
            },
            _ = tick.tick() => {
                exporter.spans(std::mem::take(&mut batch)).await;
                exporter.metrics(false).await;
            }
            ack = &mut stopped => {
                while let Ok(span) = spans.try_recv() {
                    batch.push(span);
                }
                for chunk in batch.chunks(max_batch) {
                    exporter.spans(chunk.to_vec()).await;
                }
                exporter.metrics(true).await;
                if let Ok(ack) = ack {
                    let _ = ack.send(());
                }
                return;
            }
        }
    }
}

struct Exporter {
    telemetry: Arc<Telemetry>,
    client: HttpClient,
    /// Whether the last export failed (so a down receiver is logged once, not per batch).
    failing: bool,
}

impl Exporter {
    fn resource(&self) -> Resource {
        Resource {
            attributes: vec![
                kv("service.name", self.telemetry.config.service_name.as_str()),
                kv("telemetry.sdk.name", "writ"),
                kv("telemetry.sdk.language", "rust"),
                kv("telemetry.sdk.version", env!("CARGO_PKG_VERSION")),
            ],
            ..Default::default()
        }
    }

    fn scope() -> pc::InstrumentationScope {
        pc::InstrumentationScope {
            name: "writ-runtime".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            ..Default::default()
        }
    }

    async fn spans(&mut self, spans: Vec<ps::Span>) {
        if spans.is_empty() {
            return;
        }
        let request = ExportTraceServiceRequest {
            resource_spans: vec![ps::ResourceSpans {
                resource: Some(self.resource()),
                scope_spans: vec![ps::ScopeSpans {
                    scope: Some(Self::scope()),
                    spans,
                    ..Default::default()
                }],
                ..Default::default()
            }],
        };
        let uri = self.telemetry.traces_url.clone();
        self.post(uri, request.encode_to_vec()).await;
    }

    async fn metrics(&mut self, force: bool) {
        let (metrics, dirty) = {
            let mut m = super::lock(&self.telemetry.metrics);
            let dirty = std::mem::take(&mut m.dirty);
            (
                m.to_proto(
                    self.telemetry.start_nanos,
                    super::now_nanos(),
                    self.telemetry.dropped(),
                ),
                dirty,
            )
        };
        if !dirty && !force {
            return;
        }
        let request = ExportMetricsServiceRequest {
            resource_metrics: vec![pm::ResourceMetrics {
                resource: Some(self.resource()),
                scope_metrics: vec![pm::ScopeMetrics {
                    scope: Some(Self::scope()),
                    metrics,
                    ..Default::default()
                }],
                ..Default::default()
            }],
        };
        let uri = self.telemetry.metrics_url.clone();
        self.post(uri, request.encode_to_vec()).await;
    }

    async fn post(&mut self, uri: hyper::Uri, body: Vec<u8>) {
        let request = hyper::Request::post(uri.clone())
            .header("content-type", "application/x-protobuf")
            .body(Full::new(Bytes::from(body)));
        let Ok(request) = request else {
            return;
        };
        let call = async {
            let reply = self
                .client
                .request(request)
                .await
                .map_err(|e| e.to_string())?;
            let status = reply.status();
            // Read (a bounded part of) the reply so the connection can be reused.
            let _ = http_body_util::Limited::new(reply.into_body(), MAX_REPLY)
                .collect()
                .await;
            if status.is_success() {
                Ok(())
            } else {
                Err(format!("status {status}"))
            }
        };
        let outcome = match tokio::time::timeout(self.telemetry.config.export_timeout, call).await {
            Ok(r) => r,
            Err(_) => Err("timed out".to_string()),
        };
        match outcome {
            Ok(()) => self.failing = false,
            Err(e) if !self.failing => {
                self.failing = true;
                tracing::warn!(%uri, "OTLP export failed, data dropped: {e}");
            }
            Err(e) => tracing::debug!(%uri, "OTLP export failed, data dropped: {e}"),
        }
    }
}
