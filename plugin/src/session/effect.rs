//! What a [`super::Session`] asks the host to do: the effects of one event, in order, and
//! whether the host should then continue or pause the stream. The adapter (`filter`)
//! carries them out one by one; nothing here calls the host.

use crate::config::CalloutTarget;

/// Which of the exchange's two header maps or bodies an effect touches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    Request,
    Response,
}

/// What the adapter does when the host refuses an effect.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnFail {
    /// Log this line at error level and go on with the next effect.
    Log(&'static str),
    /// Stop, and hand the name of the failed host call to [`super::Session::host_failed`],
    /// whose step replaces the rest (fail closed: a 500 `host_error` reply).
    Fail(&'static str),
}

/// A host log level (only those the session uses).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Level {
    Info,
    Error,
}

/// A metric kind of the ABI.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MetricKind {
    Counter,
    Gauge,
}

/// One thing for the host to do.
#[derive(Debug, Clone, PartialEq)]
pub enum Effect {
    /// Add `delta` to the metric `name` (full stat name, labels included; defined on
    /// first use, best effort).
    Add {
        kind: MetricKind,
        name: String,
        delta: i64,
    },
    /// Set the gauge `name` to `value` (best effort).
    Set { name: String, value: u64 },
    /// A host log line.
    Log { level: Level, line: String },
    /// Replace (or add) a header.
    SetHeader {
        side: Side,
        name: String,
        value: String,
        on_fail: OnFail,
    },
    /// Remove a header.
    RemoveHeader {
        side: Side,
        name: String,
        on_fail: OnFail,
    },
    /// Replace the body buffered so far (the whole request body, or the reply's current
    /// chunk or whole buffered body).
    ReplaceBody {
        side: Side,
        bytes: Vec<u8>,
        on_fail: OnFail,
    },
    /// `POST` `body` as JSON to a configured cluster; the answer is only logged.
    Callout {
        target: CalloutTarget,
        body: Vec<u8>,
    },
    /// The request's audit lines, hash-chained, for the stream's filter state
    /// (`wasm.writ_audit`), one line per record.
    AuditFilterState(String),
    /// `POST` the request's sealed records (text, one per line) to the audit sink; its
    /// answer goes to [`super::Session::on_audit_sink_answer`], or, if the call cannot be
    /// made, [`super::Session::on_audit_sink_unreachable`] is called at once.
    PostAuditSink {
        target: CalloutTarget,
        body: Vec<u8>,
    },
    /// Resume the reply held for the audit sink.
    ResumeReply,
    /// Reset the reply held for the audit sink (its records were not stored).
    ResetReply,
    /// Answer locally (JSON) instead of forwarding; always the step's last effect. With
    /// `hold_for_audit`, the adapter first asks [`super::Session::hold_for_audit`], which
    /// with an audit sink seals the request and holds the reply until the sink stored its
    /// records (`docs/audit.md`).
    LocalReply {
        status: u16,
        body: Vec<u8>,
        /// Headers besides `content-type: application/json`.
        headers: Vec<(String, String)>,
        hold_for_audit: bool,
    },
}

/// What the host does with the stream once the effects are carried out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Next {
    Continue,
    Pause,
}

/// The answer to one event.
#[derive(Debug, Clone, PartialEq)]
pub struct Step {
    pub effects: Vec<Effect>,
    pub next: Next,
}

impl Step {
    /// The local reply this step sends, if any (`(status, body)`).
    pub fn local_reply(&self) -> Option<(u16, &[u8])> {
        self.effects.iter().find_map(|e| match e {
            Effect::LocalReply { status, body, .. } => Some((*status, body.as_slice())),
            _ => None,
        })
    }
}

/// What the adapter must do with a reply body chunk before the session can see it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Need {
    /// Nothing to read: let the chunk through.
    Pass,
    /// Keep buffering (a JSON reply decided at its end).
    Wait,
    /// Read the chunk (or the whole buffered body) and pass it to the session.
    Read,
}

/// What the client is still owed while the audit sink writes the request's records.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Held {
    /// A local reply not yet sent.
    Local {
        status: u16,
        body: Vec<u8>,
        headers: Vec<(String, String)>,
    },
    /// The end of a forwarded reply (its last chunk, or headers without a body), paused.
    Reply,
}
