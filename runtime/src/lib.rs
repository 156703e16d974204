//! writ-runtime: a wasmtime host for any proxy-wasm module (ABI 0.2.1, as imported by the
//! Rust SDK 0.2.5) and the standalone gateway built on it.
//!
//! Architecture invariant: this crate knows nothing of writ policies. `Host` owns the
//! compiled module and host-wide state; each worker thread owns one `Vm`; a request is a
//! stream of that `Vm` driven step by step ([`Vm::request_headers`] …) or whole
//! ([`Vm::http_request`]).

pub mod abi;
mod callout;
pub mod config;
pub mod error;
pub mod exchange;
pub mod gateway;
mod host;
mod imports;
pub mod prometheus;
mod properties;
pub mod shared;
mod state;
mod vm;

pub use abi::{Headers, LogLevel, MetricKind};
pub use config::{HostConfig, Limits};
pub use error::{HostError, TrapKind};
pub use exchange::{ClientResponse, Exchange, RequestSpec, UpstreamReply, UpstreamRequest};
pub use gateway::identity::{IdentityConfig, JwtVerifier, TokenError};
pub use gateway::telemetry::{
    AnnotationHook, AttributeValue, SpanAnnotations, SpanEvent, TelemetryConfig,
};
pub use gateway::{
    Gateway, GatewayConfig, GatewayError, LogSink, Refusal, RefusalKind, RefusalSink,
};
pub use host::Host;
pub use shared::MetricValue;
pub use state::{HostCalls, LocalResponse, LogRecord, StreamInfo};
pub use vm::{Callout, CalloutReply, Flow, StreamId, StreamReport, Vm};
