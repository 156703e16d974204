//! Errors of the host, and the fail-closed reply each one maps to.

use crate::state::LocalResponse;

/// Why a guest trapped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum TrapKind {
    /// The callback ran past [`crate::Limits::call_timeout`].
    Deadline,
    /// The guest tried to grow its memory past [`crate::Limits::max_memory_bytes`].
    MemoryLimit,
    /// Any other trap: a panic in the filter, `unreachable`, an out-of-bounds access.
    Guest,
}

/// What can go wrong hosting a module.
#[derive(Debug, Clone, thiserror::Error)]
pub enum HostError {
    #[error("module failed to compile: {0}")]
    Compile(String),
    #[error("module failed to instantiate: {0}")]
    Instantiate(String),
    #[error("the filter refused to start (`proxy_on_vm_start` returned false)")]
    StartRejected,
    #[error("the filter refused its configuration (`proxy_on_configure` returned false)")]
    ConfigureRejected,
    #[error("the filter trapped ({kind:?}): {message}")]
    Trap { kind: TrapKind, message: String },
    #[error("unknown stream: its VM was restarted or it was closed")]
    UnknownStream,
    #[error("body larger than the {limit} bytes the host buffers")]
    BodyTooLarge { limit: usize },
    #[error("the filter paused the {0} and never resumed it")]
    Stalled(&'static str),
}

impl HostError {
    /// A short machine-readable name for the JSON error reply.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Compile(_) | Self::Instantiate(_) => "filter_unavailable",
            Self::StartRejected | Self::ConfigureRejected => "filter_unavailable",
            Self::Trap {
                kind: TrapKind::Deadline,
                ..
            } => "filter_timeout",
            Self::Trap {
                kind: TrapKind::MemoryLimit,
                ..
            } => "filter_memory_limit",
            Self::Trap { .. } => "filter_failure",
            Self::UnknownStream => "filter_failure",
            Self::BodyTooLarge { .. } => "body_too_large",
            Self::Stalled(_) => "filter_stalled",
        }
    }

    /// The reply a client gets when this error ends its request: fail closed, never
    /// forwarding unfiltered traffic. 413 for an oversized body, 503 otherwise.
    pub fn fail_closed_response(&self) -> LocalResponse {
        let status = match self {
            Self::BodyTooLarge { .. } => 413,
            _ => 503,
        };
        let body = serde_json::json!({
            "error": { "type": self.kind(), "message": self.to_string() }
        });
        LocalResponse {
            status,
            headers: vec![("content-type".to_string(), "application/json".to_string())],
            body: body.to_string().into_bytes(),
            details: self.kind().to_string(),
        }
    }
}
