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
    /// forwarding unfiltered traffic. 413 for an oversized body, otherwise the fixed 503
    /// [`ENGINE_ERROR_BODY`]. The body is the same for every failure, so no backtrace,
    /// path or internal message ever reaches a client; the detail stays in the host's log
    /// and in [`LocalResponse::details`].
    pub fn fail_closed_response(&self) -> LocalResponse {
        let (status, body) = match self {
            Self::BodyTooLarge { .. } => (413, BODY_TOO_LARGE_BODY),
            _ => (503, ENGINE_ERROR_BODY),
        };
        LocalResponse {
            status,
            headers: vec![("content-type".to_string(), "application/json".to_string())],
            body: body.as_bytes().to_vec(),
            details: self.kind().to_string(),
        }
    }
}

/// The one body a client gets when the filter fails (a trap, a deadline, a host error):
/// OpenAI-style, like the filter's own errors, and the same whatever went wrong.
pub const ENGINE_ERROR_BODY: &str = r#"{"error":{"message":"The policy engine failed; the request was not forwarded.","type":"engine_error","code":"engine_error"}}"#;

/// The body of a 413 for a body larger than the host buffers.
pub const BODY_TOO_LARGE_BODY: &str = r#"{"error":{"message":"The request body is larger than the gateway accepts.","type":"invalid_request_error","code":"body_too_large"}}"#;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failures_answer_a_fixed_body_without_internals() {
        let e = HostError::Trap {
            kind: TrapKind::Deadline,
            message: "wasm backtrace: 0: 0x1234 - <unknown>!writ_plugin::eval /src/x.rs".into(),
        };
        let r = e.fail_closed_response();
        assert_eq!(r.status, 503);
        assert_eq!(r.body, ENGINE_ERROR_BODY.as_bytes());
        assert_eq!(r.details, "filter_timeout");
        let v: serde_json::Value = serde_json::from_slice(&r.body).unwrap_or_default();
        assert_eq!(v["error"]["code"], "engine_error");
        let big = HostError::BodyTooLarge { limit: 9 }.fail_closed_response();
        assert_eq!(big.status, 413);
    }
}
