//! The request session without the host: everything the proxy-wasm adapter (`filter`)
//! decides, as a plain-Rust state machine. The adapter feeds it events (request headers,
//! request body, reply headers, reply body chunks, the end of the stream) and carries out
//! the [`Effect`]s each returns (header edits, body replacement, local reply, audit lines,
//! metric deltas, callouts). Shared data is read and written through [`SharedStore`], so
//! native tests drive a whole request against a [`crate::store::MemoryStore`].
//!
//! `request` holds the request side (headers, body, the admin call, deny), `reply` the
//! reply side and the end of a request (settlement, the audit record), `sink` the answer
//! held for the audit sink and the sink's own answer, `close` the record's completion into
//! its lines and counters, `lease` a fleet member's wait for a budget lease from the fleet
//! store (`docs/fleet.md`), `mcp` an MCP request's JSON-RPC (`docs/mcp.md`).

mod close;
mod effect;
mod fallback;
mod fleet;
mod lease;
mod mcp;
mod reply;
mod request;
mod sink;
#[cfg(test)]
mod tests;
mod verdict;

use std::cell::Cell;
use std::rc::Rc;

pub use close::{Ending, RequestEnd, close_request};
pub use effect::{Effect, Held, Level, MetricKind, Need, Next, OnFail, Side, Step};

use crate::audit::AuditRecord;
use crate::config::PluginConfig;
use crate::eval::{self, Engine, Transforms};
use crate::ir::{self, Phase};
use crate::oversight;
use crate::request::Request;
use crate::spend::Reservation;
use crate::store::SharedStore;
use crate::stream::{self, ReplyKind, ReplyRewriter};
use crate::tokenise::Vault;
use crate::usage::SseUsage;

/// What every request of a VM shares: the engine, facts derived from the policy once, and
/// a counter that makes tokenisation nonces unique.
pub struct Shared {
    pub engine: Engine,
    /// Detectors enforced response `redact` rules mask in every reply.
    response_redact: Vec<u16>,
    /// The response rules decided at the end of a reply ([`eval::decided_response_rules`]).
    response_rules: Vec<usize>,
    /// The policy has rules that may change the request body.
    may_rewrite_request: bool,
    /// Replies may need restoring or redaction, so they must come uncompressed.
    may_rewrite_reply: bool,
    /// Response rules or the confidence source read the reply body.
    reads_reply_body: bool,
    /// Response rules read the reply's tool calls: a streamed reply to a request that
    /// offers tools is held whole and decided at its end (`docs/tools.md`).
    reads_tool_calls: bool,
    /// Some rule holds tool calls for approval: retries may carry a review id.
    holds: bool,
    /// Where `oversight` reads confidence.
    confidence: ir::ConfidenceSource,
    /// Queue for escalations by the oversight mode itself: the policy's first escalate
    /// rule's queue, else `oversight`.
    default_queue: String,
    counter: Cell<u64>,
    /// Sums of past kill-point buckets (`kill_point`).
    kill_points: crate::kill_point::PastCache,
}

impl Shared {
    /// Derives the per-policy facts every request reads.
    pub fn new(engine: Engine) -> Shared {
        let policy = &engine.policy;
        let enforced = |i: usize| !eval::is_monitor(policy, i);
        let mut may_rewrite_request = false;
        let mut may_tokenise = false;
        let mut reads_reply_body = false;
        let mut reads_tool_calls = false;
        let mut holds = false;
        let mut default_queue = None;
        for (i, r) in policy.rules.iter().enumerate() {
            match (&r.action, r.phase) {
                (ir::Action::Tokenise { .. }, Phase::Request) if enforced(i) => {
                    may_tokenise = true;
                    may_rewrite_request = true;
                }
                (ir::Action::Redact { .. } | ir::Action::Route(_), Phase::Request)
                    if enforced(i) =>
                {
                    may_rewrite_request = true;
                }
                (ir::Action::Escalate { queue, .. }, _) => {
                    default_queue.get_or_insert_with(|| queue.clone());
                }
                (ir::Action::StripTool, Phase::Request) if enforced(i) => {
                    may_rewrite_request = true;
                }
                (ir::Action::Hold { .. }, _) => holds = true,
                _ => {}
            }
            if r.phase == Phase::Response
                && eval::tool_scope(&r.condition) == eval::ToolScope::Calls
            {
                reads_tool_calls = true;
            }
            if r.phase == Phase::Response
                && !eval::is_streamed_redaction(r)
                && reads_body(&r.condition)
            {
                reads_reply_body = true;
            }
        }
        let confidence = oversight::confidence_source(policy);
        if matches!(confidence, ir::ConfidenceSource::JsonPointer(_))
            || policy.workflows.iter().any(|w| w.handoff_output)
        {
            reads_reply_body = true;
        }
        let response_redact = eval::response_redactions(policy);
        let response_rules = eval::decided_response_rules(policy);
        let uses_spend = engine.uses_spend;
        Shared {
            may_rewrite_request: may_rewrite_request || uses_spend || engine.uses_rates,
            may_rewrite_reply: may_tokenise || !response_redact.is_empty(),
            response_redact,
            response_rules,
            reads_reply_body: reads_reply_body || reads_tool_calls,
            reads_tool_calls,
            holds,
            confidence,
            default_queue: default_queue.unwrap_or_else(|| "oversight".into()),
            counter: Cell::new(0),
            kill_points: crate::kill_point::PastCache::default(),
            engine,
        }
    }

    /// The loaded policy.
    pub fn policy(&self) -> &ir::Policy {
        &self.engine.policy
    }

    /// A number unique within the VM (tokenisation nonces, the fleet instance id's salt).
    pub(crate) fn next_salt(&self) -> u64 {
        let n = self.counter.get().wrapping_add(1);
        self.counter.set(n);
        n
    }
}

/// Whether a condition reads the reply body (`response has`, a JSON-pointer confidence).
fn reads_body(e: &ir::Expr) -> bool {
    use ir::{Expr, Operand};
    let op = |o: &Operand| matches!(o, Operand::Confidence(ir::ConfidenceSource::JsonPointer(_)));
    match e {
        Expr::And(v) | Expr::Or(v) => v.iter().any(reads_body),
        Expr::Not(e) => reads_body(e),
        Expr::Compare { left, right, .. } => op(left) || op(right),
        Expr::In { operand, .. } => op(operand),
        Expr::Has { subject, .. } => *subject == ir::Text::Response,
        Expr::Const(_) => false,
    }
}

/// Where a request stands, so each event knows what is left to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    /// Waiting for the request body.
    Request,
    /// A kill-switch admin call whose body is being buffered.
    Admin,
    /// Waiting for the fleet store's answer to a lease (`docs/fleet.md`); the request is
    /// paused and decided again when it comes.
    Leasing,
    /// Forwarded upstream.
    Forwarded,
    /// Answered locally; later events pass everything through untouched.
    Replied,
}

/// One request's state, from its headers to its audit record.
pub struct Session {
    shared: Rc<Shared>,
    config: PluginConfig,
    context_id: u32,
    /// The host's clock, nanoseconds since the Unix epoch (read when the request starts
    /// and when an alert is raised).
    clock: fn() -> u64,
    stage: Stage,
    now_nanos: u64,
    request_id: String,
    /// The request view: headers from the first event, the body once complete.
    request: Request,
    identity: eval::Identity,
    audit: AuditRecord,
    audit_logged: bool,
    /// Budget and drift alert records, logged right after the request's own record so
    /// the request record is always the first `writ-audit` line of a request.
    /// The admin call being buffered is a verdict (`review_verdict`), not a kill-switch flip.
    verdict_call: bool,
    /// A fleet member's verdict waiting for the store's claim (`session/verdict.rs`).
    verdict_wait: Option<verdict::VerdictWait>,
    alert_lines: Vec<String>,
    vault: Vault,
    reservation: Option<Reservation>,
    /// The request's place on the rate-limit counters (`rate_limit.rs`).
    rate: Option<crate::rate_limit::RateHold>,
    /// `retry-after` and `x-ratelimit-*`: on the local reply of a rate-limit deny, or
    /// added to the forwarded reply's headers.
    rate_headers: Vec<(&'static str, String)>,
    /// The request left for the upstream (a refund of the rate counters is then wrong).
    forwarded: bool,
    /// Escalations and tags of the request phase carry into the reply.
    transforms: Transforms,
    /// The request body as sent, when the policy holds tool calls: a held reply records
    /// its sha256 (a retry must send the same request to collect an approved reply). It
    /// is hashed only when a reply is held, not on every request (sha256 of a 4 KB body
    /// costs tens of µs in wasm, which has no SHA instructions).
    request_as_sent: Vec<u8>,
    /// A reply a `hold` rule withholds, stored once the reply is complete.
    pending_hold: Option<crate::approval::Held>,
    /// The request's `team`/`user` metric labels, once bounded ([`Session::identity_labels`]).
    identity_labels: Option<Vec<(&'static str, String)>>,
    // ---- response
    response_status: u16,
    response_headers: Vec<(String, String)>,
    rewriter: Option<ReplyRewriter>,
    reply_kind: ReplyKind,
    sse_usage: Option<SseUsage>,
    /// A JSON reply is buffered and decided at its end (its headers are held).
    buffering: bool,
    /// The request's records as logged (request first, then alerts), for the audit sink.
    sealed_lines: Vec<String>,
    /// The answer held until the audit sink stores the records.
    held: Option<Held>,
    /// The fleet store's lease this request waits for, and leases asked so far.
    lease: lease::Lease,
    /// The effects of the event being handled.
    out: Vec<Effect>,
    // ---- fallback (`session/fallback.rs`)
    fallback: Option<crate::fallback::Plan>,
    /// The body as forwarded, replayed by a retry (only when the host can retry).
    retry_body: Vec<u8>,
    /// The host sends requests again on the filter's word (`writ serve`).
    host_retry: bool,
    /// Asks the host for `host_retry` when the request is forwarded (at most once).
    host_retry_probe: Option<fn() -> bool>,
    /// An MCP request (`session/mcp.rs`), from its body to the end of its reply.
    mcp: Option<Box<mcp::McpState>>,
}

impl Session {
    /// A session for one request; `context_id` makes a request id of its own unique when
    /// neither the client nor the host gives one; `clock` is the host's clock.
    pub fn new(
        shared: Rc<Shared>,
        config: PluginConfig,
        context_id: u32,
        clock: fn() -> u64,
    ) -> Session {
        Session {
            shared,
            config,
            context_id,
            clock,
            stage: Stage::Request,
            now_nanos: 0,
            request_id: String::new(),
            request: Request::default(),
            identity: eval::Identity::default(),
            audit: AuditRecord::default(),
            audit_logged: false,
            verdict_call: false,
            verdict_wait: None,
            alert_lines: Vec::new(),
            vault: Vault::new([0; 16]),
            reservation: None,
            rate: None,
            rate_headers: Vec::new(),
            forwarded: false,
            transforms: Transforms::default(),
            request_as_sent: Vec::new(),
            pending_hold: None,
            identity_labels: None,
            response_status: 0,
            response_headers: Vec::new(),
            rewriter: None,
            reply_kind: ReplyKind::Other,
            sse_usage: None,
            buffering: false,
            sealed_lines: Vec::new(),
            held: None,
            lease: lease::Lease::default(),
            out: Vec::new(),
            fallback: None,
            retry_body: Vec::new(),
            host_retry: false,
            host_retry_probe: None,
            mcp: None,
        }
    }

    /// Where the request stands.
    pub fn stage(&self) -> Stage {
        self.stage
    }

    /// Whether the request has started (its headers were seen, or it was recorded as
    /// answered before the policy ran).
    pub fn started(&self) -> bool {
        !self.request_id.is_empty()
    }

    /// The request's audit record as it stands.
    pub fn audit(&self) -> &AuditRecord {
        &self.audit
    }

    /// The request's records as sealed (request first, then alerts), kept for the audit
    /// sink when one is configured.
    pub fn sealed_lines(&self) -> &[String] {
        &self.sealed_lines
    }

    fn step(&mut self, next: Next) -> Step {
        Step {
            effects: std::mem::take(&mut self.out),
            next,
        }
    }

    fn log(&mut self, level: Level, line: String) {
        self.out.push(Effect::Log { level, line });
    }

    /// The metric changes a plain-Rust module asked for, as effects.
    fn apply(&mut self, updates: &[crate::metrics::MetricUpdate]) {
        for u in updates {
            match u.kind {
                crate::metrics::Kind::Counter => {
                    self.add(MetricKind::Counter, u.name.clone(), u.value)
                }
                crate::metrics::Kind::Gauge => self.out.push(Effect::Set {
                    name: u.name.clone(),
                    value: u.value.max(0) as u64,
                }),
            }
        }
    }

    fn add(&mut self, kind: MetricKind, name: String, delta: i64) {
        self.out.push(Effect::Add { kind, name, delta });
    }

    fn callout(&mut self, target: Option<crate::config::CalloutTarget>, body: Vec<u8>) {
        if let Some(target) = target {
            self.out.push(Effect::Callout { target, body });
        }
    }

    fn workflow_name(&self) -> Option<String> {
        self.identity
            .workflow
            .and_then(|i| self.shared.policy().workflows.get(i))
            .map(|w| w.name.clone())
    }

    /// The `team`/`user` labels the configuration turns on, each bounded by its cap across
    /// workers ([`crate::metrics::bounded_label`]); decided once per request.
    fn identity_labels(&mut self, store: &dyn SharedStore) -> Vec<(&'static str, String)> {
        if let Some(l) = &self.identity_labels {
            return l.clone();
        }
        let labels: Vec<(&'static str, String)> = self
            .config
            .metrics
            .enabled()
            .into_iter()
            .map(|(label, max)| {
                let value = match label {
                    "team" => self.audit.team.as_deref(),
                    _ => self.audit.user.as_deref(),
                };
                (
                    label,
                    crate::metrics::bounded_label(store, label, max, value),
                )
            })
            .collect();
        self.identity_labels = Some(labels.clone());
        labels
    }

    fn reply_ctx(&self) -> stream::Ctx<'_> {
        let shared = &*self.shared;
        stream::Ctx {
            vault: &self.vault,
            redact: (!shared.response_redact.is_empty()).then(|| {
                stream::Redact::new(
                    &shared.engine.scanner,
                    &shared.response_redact,
                    &shared.policy().detectors,
                )
            }),
        }
    }
}
