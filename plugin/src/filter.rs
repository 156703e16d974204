//! The proxy-wasm adapter: the only code that talks to the host (wasm32 only).
//!
//! The SDK provides the exported entry points and context bookkeeping; every call *into*
//! the host goes through [`host`], which declares the ABI imports itself and turns each
//! status into a `Result`. The SDK's own wrappers `panic!` on an unexpected status, and a
//! panic traps the VM and fails every later request on that worker, so they are not used.
//! The one exception is `dispatch_http_call`: the SDK must register the call's token or
//! its dispatcher traps when the answer arrives; it panics only on statuses other than
//! Ok, BadArgument and InternalFailure, which neither Envoy nor writ-runtime return.
//!
//! # What one request goes through
//!
//! 1. Request headers: the kill-switch admin path is answered locally; a stopped
//!    workflow gets 503; a non-JSON body 415; a declared length over the limit 413. When
//!    the policy may rewrite the body, `content-length` goes (and `accept-encoding:
//!    identity` is set when replies may need restoring or redaction).
//! 2. Request body (buffered to its end): request rules are evaluated; a deny answers
//!    locally (a PII rule's message names the data types found, never values); the spend
//!    ledgers admit and reserve the estimate (fail closed on a store error); rules on spend
//!    are evaluated on the totals; then tokenise/redact, route and the stream-usage option
//!    are spliced into the body, which is replaced only if something changed.
//! 3. Response headers: response rules on status, headers and header confidence; the
//!    oversight mode; escalation adds `x-writ-review-id/-queue/-reason` and posts the
//!    handoff to the configured review queue. JSON replies that must be read are buffered
//!    (headers held) and decided at their end; event streams are rewritten chunk by chunk.
//! 4. Response body: placeholders restored and leaked values redacted (`stream.rs`);
//!    usage read and the reservation settled (alerts logged, counted, posted).
//! 5. `on_log`: an unsettled reservation is settled at the estimate (a reply came) or
//!    released (none did); exactly one `writ-audit <json>` record with `event: request`
//!    (`kill_switch` for an admin call) is logged at info level, always the request's
//!    first audit line; budget and drift alerts it raised follow as their own records
//!    (`event: budget_alert` / `drift_alert`).
//!
//! Failure answers (all fail closed, all `{"error":{"message","type","code"}}` JSON):
//! no policy loaded → 500 `policy_unavailable`; host call failed → 500 `host_error`;
//! non-JSON content type → 415; body over the limit → 413; malformed JSON → 400; spend
//! ledger unavailable → 503 `spend_unavailable`; a reply that must be redacted but cannot
//! be read → 502 `unredactable_reply`; a stopped workflow → 503 `kill_switch`.
//!
//! # Metrics
//!
//! The families, their label encoding in stat names (`family;label=value;…`) and the
//! series defined at start-up come from [`crate::metrics`] (`docs/metrics.md`); the
//! adapter defines them in `on_configure` and moves their values.

mod fallback;
mod host;

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::rc::Rc;
use std::time::Duration;

use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{Action, ContextType, LogLevel};
use serde_json::Value as Json;

use crate::audit::{AuditRecord, Tokens};
use crate::config::PluginConfig;
use crate::eval::{self, Decision, Engine, Facts, ReplyView, Transforms, Verdict};
use crate::ir::{self, Phase};
use crate::metrics;
use crate::oversight;
use crate::request::{self, BodyError, Request};
use crate::spend::{self, Reservation};
use crate::stream::{self, ReplyKind, ReplyRewriter};
use crate::tokenise::{self, Vault};
use crate::usage::{self, SseUsage, Usage};
use crate::wire::Reply;
use host::HostStore;

/// The stream property holding the chained audit lines; Envoy exposes it to access logs as
/// filter state `wasm.writ_audit` (`writ envoy --audit-log`).
const AUDIT_PROPERTY: &str = "writ_audit";

proxy_wasm::main! {{
    // Installs the SDK's panic hook (logs a panic before the trap); the adapter itself
    // avoids panicking.
    proxy_wasm::set_log_level(LogLevel::Info);
    proxy_wasm::set_root_context(|_| -> Box<dyn RootContext> {
        Box::new(Root { shared: None, config: Rc::new(RefCell::new(PluginConfig::default())) })
    });
}}

/// What every request of this VM shares: the engine, facts derived from the policy once,
/// metric ids and a counter that makes tokenisation nonces unique.
struct Shared {
    engine: Engine,
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
    /// Where `oversight` reads confidence.
    confidence: ir::ConfidenceSource,
    /// Queue for escalations by the oversight mode itself: the policy's first escalate
    /// rule's queue, else `oversight`.
    default_queue: String,
    metrics: RefCell<HashMap<String, u32>>,
    counter: Cell<u64>,
}

impl Shared {
    fn new(engine: Engine) -> Shared {
        let policy = &engine.policy;
        let enforced = |i: usize| !eval::is_monitor(policy, i);
        let mut may_rewrite_request = false;
        let mut may_tokenise = false;
        let mut reads_reply_body = false;
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
                _ => {}
            }
            if r.phase == Phase::Response
                && !eval::is_streamed_redaction(r)
                && reads_body(&r.condition)
            {
                reads_reply_body = true;
            }
        }
        let confidence = oversight::confidence_source(policy);
        if matches!(confidence, ir::ConfidenceSource::JsonPointer(_)) {
            reads_reply_body = true;
        }
        let response_redact = eval::response_redactions(policy);
        let response_rules = eval::decided_response_rules(policy);
        let uses_spend = engine.uses_spend;
        Shared {
            may_rewrite_request: may_rewrite_request || uses_spend,
            may_rewrite_reply: may_tokenise || !response_redact.is_empty(),
            response_redact,
            response_rules,
            reads_reply_body,
            confidence,
            default_queue: default_queue.unwrap_or_else(|| "oversight".into()),
            metrics: RefCell::new(HashMap::new()),
            counter: Cell::new(0),
            engine,
        }
    }

    fn policy(&self) -> &ir::Policy {
        &self.engine.policy
    }

    /// Defines every series the policy can produce (at zero; gauges the start-up series
    /// give a value are set), so `/metrics` is complete before the first request.
    fn define_series(&self, identity: metrics::IdentityLabels) {
        let now = (host::now_nanos() / 1_000_000_000) as i64;
        for s in metrics::startup_series(self.policy(), identity, &HostStore, now) {
            let kind = match s.kind {
                metrics::Kind::Counter => host::COUNTER,
                metrics::Kind::Gauge => host::GAUGE,
            };
            match (self.metric(kind, &s.name), s.set) {
                (Some(id), Some(v)) => host::record_metric(id, v),
                (Some(_), None) => {}
                (None, _) => host::log(
                    LogLevel::Error,
                    &format!("writ: the host refused to define the metric `{}`", s.name),
                ),
            }
        }
    }

    /// Adds `delta` to the metric `name` (defined on first use; best effort).
    fn count(&self, kind: u32, name: &str, delta: i64) {
        if let Some(id) = self.metric(kind, name) {
            host::increment_metric(id, delta);
        }
    }

    fn gauge(&self, name: &str, value: u64) {
        if let Some(id) = self.metric(host::GAUGE, name) {
            host::record_metric(id, value);
        }
    }

    fn metric(&self, kind: u32, name: &str) -> Option<u32> {
        if let Some(id) = self.metrics.borrow().get(name) {
            return Some(*id);
        }
        let id = host::define_metric(kind, name)?;
        self.metrics.borrow_mut().insert(name.to_string(), id);
        Some(id)
    }

    fn next_salt(&self) -> u64 {
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

struct Root {
    /// `None` until the embedded policy loads; requests are refused while it is `None`.
    shared: Option<Rc<Shared>>,
    config: Rc<RefCell<PluginConfig>>,
}

impl Context for Root {}

impl RootContext for Root {
    fn on_vm_start(&mut self, _vm_configuration_size: usize) -> bool {
        let Some(blob) = crate::embedded_policy() else {
            host::log(
                LogLevel::Critical,
                "writ: this engine has no policy linked in; build the artifact with `writ build` (every request will be refused)",
            );
            return false;
        };
        match Engine::load(blob) {
            Ok(engine) => {
                let policy = &engine.policy;
                host::log(
                    LogLevel::Info,
                    &format!(
                        "writ: policy {} {} loaded ({} rules)",
                        policy.name,
                        policy.version,
                        policy.rules.len()
                    ),
                );
                self.shared = Some(Rc::new(Shared::new(engine)));
                true
            }
            Err(e) => {
                host::log(
                    LogLevel::Critical,
                    &format!(
                        "writ: cannot load the embedded policy: {e} (every request will be refused)"
                    ),
                );
                false
            }
        }
    }

    fn on_configure(&mut self, plugin_configuration_size: usize) -> bool {
        let bytes = if plugin_configuration_size == 0 {
            Vec::new()
        } else {
            match host::buffer(host::PLUGIN_CONFIGURATION, 0, plugin_configuration_size) {
                Ok(b) => b,
                Err(what) => {
                    host::log(
                        LogLevel::Error,
                        &format!(
                            "writ: cannot read the plugin configuration ({what}); using defaults"
                        ),
                    );
                    Vec::new()
                }
            }
        };
        let (config, problems) = PluginConfig::parse(&bytes);
        for p in problems {
            host::log(
                LogLevel::Error,
                &format!("writ: plugin configuration: {p}; using the default for it"),
            );
        }
        if config.audit_filter_state {
            crate::audit_chain::init(&HostStore);
        }
        if let Some(shared) = &self.shared {
            shared.define_series(config.metrics);
        }
        *self.config.borrow_mut() = config;
        // A bad configuration never stops enforcement: the policy needs none.
        true
    }

    fn create_http_context(&self, context_id: u32) -> Option<Box<dyn HttpContext>> {
        Some(Box::new(Http::new(
            self.shared.clone(),
            self.config.borrow().clone(),
            context_id,
        )))
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }
}

/// Where a request stands, so each callback knows what is left to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stage {
    /// Waiting for the request body.
    Request,
    /// A kill-switch admin call whose body is being buffered.
    Admin,
    /// Forwarded upstream.
    Forwarded,
    /// Answered locally; later callbacks pass everything through untouched.
    Replied,
}

struct Http {
    shared: Option<Rc<Shared>>,
    config: PluginConfig,
    context_id: u32,
    stage: Stage,
    now_nanos: u64,
    request_id: String,
    /// The request view: headers from the first callback, the body once complete.
    request: Request,
    identity: eval::Identity,
    /// Bytes of request body buffered so far, as the host last reported.
    body_len: usize,
    audit: AuditRecord,
    audit_logged: bool,
    /// Budget and drift alert records, logged right after the request's own record so
    /// the request record is always the first `writ-audit` line of a request.
    alert_lines: Vec<String>,
    vault: Vault,
    reservation: Option<Reservation>,
    /// Escalations and tags of the request phase carry into the reply.
    transforms: Transforms,
    /// The request's `team`/`user` metric labels, once bounded ([`Http::identity_labels`]).
    identity_labels: Option<Vec<(&'static str, String)>>,
    // ---- response
    response_status: u16,
    response_headers: Vec<(String, String)>,
    rewriter: Option<ReplyRewriter>,
    reply_kind: ReplyKind,
    sse_usage: Option<SseUsage>,
    /// A JSON reply is buffered and decided at its end (its headers are held).
    buffering: bool,
    /// The end of the answer, held until the audit sink has the request's records.
    held: Option<Held>,
    /// The token of the audit-sink call the held answer waits for.
    sink_token: Option<u32>,
    /// The request's records as logged (request first, then alerts), for the audit sink.
    sealed_lines: Vec<String>,
    // ---- fallback (`filter/fallback.rs`)
    fallback: Option<crate::fallback::Plan>,
    /// The body as forwarded, replayed by a retry (only when the host can retry).
    retry_body: Vec<u8>,
    /// The host sends requests again on the filter's word (`writ serve`).
    host_retry: bool,
}

/// What the client is still owed while the audit sink writes the request's records.
enum Held {
    /// A local reply not yet sent.
    Local { status: u16, body: Vec<u8> },
    /// The end of a forwarded reply (its last chunk, or headers without a body), paused.
    Reply,
}

impl Context for Http {
    fn on_http_call_response(
        &mut self,
        token: u32,
        _headers: usize,
        _body: usize,
        _trailers: usize,
    ) {
        if self.sink_token != Some(token) {
            return; // a handoff or an alert: its answer is only logged by the host
        }
        self.sink_token = None;
        // The SDK's own getter panics on a host error; this one cannot.
        let stored = proxy_wasm::hostcalls::get_map_value(
            proxy_wasm::types::MapType::HttpCallResponseHeaders,
            ":status",
        )
        .ok()
        .flatten()
        .and_then(|s| s.parse::<u16>().ok())
        .is_some_and(|s| (200..300).contains(&s));
        if !stored {
            host::log(
                LogLevel::Error,
                "writ: the audit sink did not store the request's records; the answer is withheld",
            );
        }
        self.release_held(stored);
    }
}

impl Http {
    fn new(shared: Option<Rc<Shared>>, config: PluginConfig, context_id: u32) -> Http {
        Http {
            shared,
            config,
            context_id,
            stage: Stage::Request,
            now_nanos: 0,
            request_id: String::new(),
            request: Request::default(),
            identity: eval::Identity::default(),
            body_len: 0,
            audit: AuditRecord::default(),
            audit_logged: false,
            alert_lines: Vec::new(),
            vault: Vault::new([0; 16]),
            reservation: None,
            transforms: Transforms::default(),
            identity_labels: None,
            response_status: 0,
            response_headers: Vec::new(),
            rewriter: None,
            reply_kind: ReplyKind::Other,
            sse_usage: None,
            buffering: false,
            held: None,
            sink_token: None,
            sealed_lines: Vec::new(),
            fallback: None,
            retry_body: Vec::new(),
            host_retry: false,
        }
    }

    /// The `team`/`user` labels the configuration turns on, each bounded by its cap across
    /// workers ([`metrics::bounded_label`]); decided once per request.
    fn identity_labels(&mut self) -> Vec<(&'static str, String)> {
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
                (label, metrics::bounded_label(&HostStore, label, max, value))
            })
            .collect();
        self.identity_labels = Some(labels.clone());
        labels
    }
}

impl HttpContext for Http {
    fn on_http_request_headers(&mut self, _num_headers: usize, end_of_stream: bool) -> Action {
        let Some(shared) = self.shared.clone() else {
            return self.reply(&Reply::engine_error(
                "the policy engine has no policy loaded",
                "policy_unavailable",
            ));
        };
        self.now_nanos = host::now_nanos();
        let headers = match host::headers(host::REQUEST_HEADERS) {
            Ok(h) => h,
            Err(what) => return self.host_failed(what),
        };
        self.request = Request::from_headers(headers, None);
        self.start_record(&shared);
        let policy = shared.policy();

        if let Some(ks) = &policy.kill_switch
            && crate::kill_switch::is_admin_path(ks, &self.request.path)
        {
            if end_of_stream {
                return self.admin(&shared, &[]);
            }
            self.stage = Stage::Admin;
            return Action::Pause;
        }

        self.identity = eval::identify(policy, &self.request);
        let workflow = self.workflow_name(&shared);
        if crate::kill_switch::is_stopped(&HostStore, workflow.as_deref()) {
            self.audit.outcome = "stopped".into();
            self.audit.workflow = workflow.clone();
            if let Some(clause) = policy.kill_switch.as_ref().and_then(|k| k.clause.clone()) {
                self.audit.rules.push(crate::audit::RuleRecord {
                    id: crate::ir::KILL_SWITCH_RULE_ID.into(),
                    clause,
                    title: crate::kill_switch::RULE_TITLE.into(),
                    action: "deny".into(),
                    mode: "enforce".into(),
                    effect: "enforced".into(),
                });
            }
            return self.reply_with(
                crate::kill_switch::STOPPED_STATUS,
                &crate::kill_switch::stopped_body(workflow.as_deref()),
            );
        }

        if end_of_stream {
            return self.decide(&shared, None);
        }
        let content_type = self.request.header("content-type").unwrap_or("");
        if !request::is_json_content_type(content_type) {
            let err = BodyError::UnsupportedMediaType(content_type.to_string());
            return self.reply(&Reply::body_error(&err));
        }
        let encoding = self.request.header("content-encoding");
        if !request::is_identity_encoding(encoding) {
            let err = BodyError::UnsupportedEncoding(encoding.unwrap_or("").to_string());
            return self.reply(&Reply::body_error(&err));
        }
        if let Some(len) = self
            .request
            .header("content-length")
            .and_then(|v| v.trim().parse::<usize>().ok())
            && len > self.config.body_limit
        {
            let err = BodyError::TooLarge {
                limit: self.config.body_limit,
            };
            return self.reply(&Reply::body_error(&err));
        }
        if shared.may_rewrite_request {
            // The body may be rewritten after these headers are decided: its length is
            // then unknown, and the host re-frames it.
            // Only headers that are present: each host call costs.
            for h in stream::LENGTH_HEADERS {
                if self.request.header(h).is_some()
                    && host::remove_header(host::REQUEST_HEADERS, h).is_err()
                {
                    return self.host_failed("proxy_remove_header_map_value");
                }
            }
        }
        if shared.may_rewrite_reply && self.request.header("accept-encoding") != Some("identity") {
            let (name, value) = stream::UPSTREAM_ACCEPT_ENCODING;
            if host::replace_header(host::REQUEST_HEADERS, name, value).is_err() {
                return self.host_failed("proxy_replace_header_map_value");
            }
        }
        // Hold the headers until the body is complete; needs
        // `allow_on_headers_stop_iteration: true` in Envoy's plugin config.
        Action::Pause
    }

    fn on_http_request_body(&mut self, body_size: usize, end_of_stream: bool) -> Action {
        if self.stage == Stage::Replied || self.stage == Stage::Forwarded {
            return if self.stage == Stage::Replied {
                Action::Pause
            } else {
                Action::Continue
            };
        }
        if body_size > self.config.body_limit {
            let err = BodyError::TooLarge {
                limit: self.config.body_limit,
            };
            return self.reply(&Reply::body_error(&err));
        }
        self.body_len = body_size;
        if !end_of_stream {
            // Ask the host to keep buffering until the last chunk (or the trailers).
            return Action::Pause;
        }
        self.finish(body_size)
    }

    fn on_http_request_trailers(&mut self, _num_trailers: usize) -> Action {
        // Trailers end a request whose last body chunk did not say so (HTTP/2, gRPC-web):
        // decide on the body buffered so far rather than wait forever.
        match self.stage {
            Stage::Request | Stage::Admin if self.shared.is_some() => self.finish(self.body_len),
            Stage::Forwarded => Action::Continue,
            _ => Action::Pause,
        }
    }

    fn on_http_response_headers(&mut self, num_headers: usize, end_of_stream: bool) -> Action {
        let action = self.response_headers(num_headers, end_of_stream);
        self.hold_end_of_reply(action, end_of_stream)
    }

    fn on_http_response_body(&mut self, body_size: usize, end_of_stream: bool) -> Action {
        let action = self.response_body(body_size, end_of_stream);
        self.hold_end_of_reply(action, end_of_stream)
    }

    fn on_log(&mut self) {
        let Some(shared) = self.shared.clone() else {
            return;
        };
        if self.request_id.is_empty() {
            self.record_unseen(&shared);
        }
        self.seal(&shared);
    }
}

impl Http {
    fn response_headers(&mut self, _num_headers: usize, end_of_stream: bool) -> Action {
        if self.stage != Stage::Forwarded {
            // A local reply passes through here too: leave it alone.
            return Action::Continue;
        }
        let Some(shared) = self.shared.clone() else {
            return Action::Continue;
        };
        let headers = match host::headers(host::RESPONSE_HEADERS) {
            Ok(h) => h,
            Err(what) => return self.host_failed(what),
        };
        self.response_status = headers
            .iter()
            .find(|(k, _)| k == ":status")
            .and_then(|(_, v)| v.parse().ok())
            .unwrap_or(0);
        self.audit.status = self.response_status;
        self.response_headers = headers
            .into_iter()
            .map(|(k, v)| (k.to_ascii_lowercase(), v))
            .collect();
        if let Some(action) = self.fallback_on_reply(&shared) {
            return action;
        }
        let header = |name: &str| {
            self.response_headers
                .iter()
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.as_str())
        };
        let content_type = header("content-type");
        let content_encoding = header("content-encoding");
        self.reply_kind = stream::reply_kind(content_type, content_encoding);
        let rewriter = {
            let ctx = self.reply_ctx(&shared);
            ReplyRewriter::new(content_type, content_encoding, &ctx)
        };
        if self.reply_kind == ReplyKind::Encoded && !shared.response_redact.is_empty() {
            return self.reply(&Reply {
                status: 502,
                body: crate::wire::error_body(
                    "the upstream reply is compressed and cannot be checked for leaked data",
                    "engine_error",
                    "unredactable_reply",
                ),
            });
        }
        let active = rewriter.strip_length();
        self.rewriter = Some(rewriter);
        if self.reply_kind == ReplyKind::EventStream && self.reservation.is_some() {
            self.sse_usage = Some(SseUsage::new());
        }
        self.buffering = self.reply_kind == ReplyKind::Json
            && !end_of_stream
            && (active || self.reservation.is_some() || shared.reads_reply_body);
        if self.buffering {
            // Decided at the end of the body, where the headers can still change.
            return Action::Pause;
        }
        if let Some(action) = self.respond(&shared, None) {
            return action;
        }
        if active && self.strip_response_length().is_err() {
            return self.host_failed("proxy_remove_header_map_value");
        }
        Action::Continue
    }

    fn response_body(&mut self, body_size: usize, end_of_stream: bool) -> Action {
        if self.stage != Stage::Forwarded {
            return Action::Continue;
        }
        let Some(shared) = self.shared.clone() else {
            return Action::Continue;
        };
        if self.buffering {
            if !end_of_stream {
                return Action::Pause;
            }
            return self.finish_json_reply(&shared, body_size);
        }
        let streaming = self.reply_kind == ReplyKind::EventStream
            && (self.sse_usage.is_some()
                || self.rewriter.as_ref().is_some_and(|r| r.strip_length()));
        if !streaming {
            return Action::Continue;
        }
        let chunk = match host::buffer(host::RESPONSE_BODY, 0, body_size) {
            Ok(b) => b,
            Err(what) => {
                host::log(LogLevel::Error, &format!("writ: host call failed: {what}"));
                return Action::Continue;
            }
        };
        if let Some(u) = &mut self.sse_usage {
            u.push(&chunk);
        }
        let action = match self.rewriter.take() {
            Some(mut rw) => {
                let ctx = self.reply_ctx(&shared);
                let a = rw.on_body(&chunk, end_of_stream, &ctx);
                self.rewriter = Some(rw);
                a
            }
            None => stream::BodyAction::Unchanged,
        };
        if let stream::BodyAction::Replace(out) = action
            && host::set_buffer(host::RESPONSE_BODY, body_size, &out).is_err()
        {
            host::log(
                LogLevel::Error,
                "writ: the host refused a rewritten reply chunk",
            );
        }
        if end_of_stream {
            let usage = self.sse_usage.take().and_then(SseUsage::finish);
            self.end_of_reply(&shared, usage);
        }
        Action::Continue
    }

    /// Closes the request's books once: an open reservation is charged at the estimate
    /// (a reply came without usage) or released (no reply), then the record is logged.
    fn seal(&mut self, shared: &Shared) {
        if self.reservation.as_ref().is_some_and(Reservation::is_open) {
            if (200..300).contains(&self.response_status) {
                // A reply came but carried no usage: charge the estimate, and say so.
                self.settle(shared, None);
            } else {
                // No reply (upstream error, client gone): charge nothing.
                self.release();
            }
        }
        self.log_audit(shared);
    }

    /// With an audit sink, the end of a forwarded reply (`action` would let it go) is held
    /// until the sink has stored the request's records.
    fn hold_end_of_reply(&mut self, action: Action, end_of_stream: bool) -> Action {
        if !end_of_stream || action != Action::Continue || self.stage != Stage::Forwarded {
            return action;
        }
        self.hold_for_audit(Held::Reply).unwrap_or(action)
    }

    /// Seals the record and posts it to the audit sink, holding `held` until the sink
    /// answers. `None` without a sink (the caller goes on as usual). If the call cannot
    /// even be made, the answer is withheld at once (fail closed).
    fn hold_for_audit(&mut self, held: Held) -> Option<Action> {
        let target = self.config.audit_sink.clone()?;
        let shared = self.shared.clone()?;
        self.seal(&shared);
        let body = self.sealed_lines.join("\n");
        let headers = vec![
            (":method", "POST"),
            (":path", target.path.as_str()),
            (":authority", target.authority.as_str()),
            ("content-type", "text/plain"),
        ];
        self.held = Some(held);
        match self.dispatch_http_call(
            &target.cluster,
            headers,
            Some(body.as_bytes()),
            vec![],
            Duration::from_millis(u64::from(target.timeout_ms)),
        ) {
            Ok(token) => self.sink_token = Some(token),
            Err(status) => {
                host::log(
                    LogLevel::Error,
                    &format!(
                        "writ: the audit sink `{}` cannot be called ({status:?})",
                        target.cluster
                    ),
                );
                self.release_held(false);
            }
        }
        Some(Action::Pause)
    }

    /// Lets the held answer go once the sink stored the records; otherwise withholds it:
    /// a local reply becomes 503 `audit_unavailable`, a reply in flight is reset.
    fn release_held(&mut self, stored: bool) {
        match (self.held.take(), stored) {
            (Some(Held::Local { status, body }), true) => send_local_or_log(status, &body),
            (Some(Held::Local { .. }), false) => {
                let body = crate::wire::error_body(
                    "The audit record could not be written; the request was not answered.",
                    "engine_error",
                    "audit_unavailable",
                );
                send_local_or_log(503, &body);
            }
            (Some(Held::Reply), true) => {
                if proxy_wasm::hostcalls::resume_http_response().is_err() {
                    host::log(
                        LogLevel::Error,
                        "writ: the host refused to resume the reply",
                    );
                }
            }
            (Some(Held::Reply), false) => {
                let _ = proxy_wasm::hostcalls::reset_http_response();
            }
            (None, _) => {}
        }
    }
    fn workflow_name(&self, shared: &Shared) -> Option<String> {
        self.identity
            .workflow
            .and_then(|i| shared.policy().workflows.get(i))
            .map(|w| w.name.clone())
    }

    fn reply_ctx<'a>(&'a self, shared: &'a Shared) -> stream::Ctx<'a> {
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

    /// Reads the complete buffered body and decides (or answers the admin call).
    fn finish(&mut self, body_size: usize) -> Action {
        let Some(shared) = self.shared.clone() else {
            return Action::Pause;
        };
        let bytes = match host::buffer(host::REQUEST_BODY, 0, body_size) {
            Ok(b) => b,
            Err(what) => return self.host_failed(what),
        };
        if self.stage == Stage::Admin {
            return self.admin(&shared, &bytes);
        }
        let body = match request::parse_body(&bytes, self.config.body_limit) {
            Ok(body) => body,
            Err(err) => return self.reply(&Reply::body_error(&err)),
        };
        self.request.body = Some(body);
        self.decide(&shared, Some((bytes, body_size)))
    }

    /// The kill-switch admin endpoint: answered locally, audited as its own event.
    fn admin(&mut self, shared: &Shared, body: &[u8]) -> Action {
        let policy = shared.policy();
        let auth = self.request.header("authorization").map(str::to_string);
        let Some(r) = crate::kill_switch::handle_admin_for(
            &HostStore,
            policy,
            &self.request.method,
            auth.as_deref(),
            body,
            self.now_nanos as i64,
        ) else {
            return self.reply(&Reply::engine_error(
                "the policy has no kill switch",
                "no_kill_switch",
            ));
        };
        let mut audit = r.audit;
        audit.request_id = self.request_id.clone();
        audit.artifact_sha256 = self.config.artifact_sha256.clone();
        if r.status == 200 {
            // A switch of one workflow or of `*`: every workflow's gauge as the store has it.
            for (name, stopped) in metrics::kill_switch_gauges(policy, &HostStore) {
                shared.gauge(&name, stopped);
            }
        }
        self.audit = audit;
        let headers: Vec<(&str, &str)> = std::iter::once(("content-type", "application/json"))
            .chain(r.headers.iter().map(|(k, v)| (*k, v.as_str())))
            .collect();
        self.stage = Stage::Replied;
        if let Err(status) = host::send_local(r.status, &r.body, &headers) {
            host::log(
                LogLevel::Error,
                &format!("writ: the host refused a local reply (status {status})"),
            );
        }
        Action::Pause
    }

    /// The request phase: evaluate, admit spend, transform the body.
    fn decide(&mut self, shared: &Shared, body: Option<(Vec<u8>, usize)>) -> Action {
        let policy = shared.policy();
        self.audit.model_requested = self.request.model().map(str::to_string);
        let phase = crate::decide::request_phase(
            &shared.engine,
            &self.request,
            self.identity.clone(),
            &HostStore,
            (self.now_nanos / 1_000_000_000) as i64,
        );
        let decision = phase.decision;
        if let Some(e) = phase.ledger_error {
            host::log(
                LogLevel::Error,
                &format!("writ: spend ledger unavailable: {e} (failing closed)"),
            );
            self.audit.outcome = "error".into();
            self.audit.add_decision(policy, &decision);
            return self.reply(&Reply {
                status: 503,
                body: crate::wire::error_body(
                    "the spend ledger is unavailable; try again",
                    "engine_error",
                    "spend_unavailable",
                ),
            });
        }
        if let Some(held) = phase.reservation {
            shared.count(host::GAUGE, metrics::RESERVATIONS.name, 1);
            self.reservation = Some(held);
        }
        if let Verdict::Deny { .. } = decision.verdict {
            self.release();
            return self.deny(shared, decision);
        }
        self.log_would_have(shared, &decision);

        // Transformations.
        let t = Transforms::of(policy, &decision);
        let requested = self.request.model().map(str::to_string);
        self.audit.model_used = t.route.clone().or_else(|| requested.clone());
        for (k, v) in &t.tags {
            self.audit.tags.insert(k.clone(), v.clone());
        }
        if !t.tokenise.is_empty() || !t.redact.is_empty() {
            self.vault = Vault::new(tokenise::nonce(
                self.request_id.as_bytes(),
                self.now_nanos,
                shared.next_salt(),
            ));
            if let Err(what) = self.rewrite_carriers(shared, &t) {
                self.release();
                return self.host_failed(what);
            }
        }
        let mut forwarded = None;
        if let Some((bytes, body_size)) = body {
            match self.rewrite_body(shared, &t, &bytes) {
                Ok(Some(new)) => {
                    if host::set_buffer(host::REQUEST_BODY, body_size, &new).is_err() {
                        self.release();
                        return self.host_failed("proxy_set_buffer_bytes");
                    }
                    forwarded = Some(new);
                }
                Ok(None) => forwarded = Some(bytes),
                Err(err) => {
                    self.release();
                    return self.reply(&Reply::body_error(&err));
                }
            }
        }
        self.audit.add_decision(policy, &decision);
        self.transforms = t;
        self.stage = Stage::Forwarded;
        self.start_fallback(shared, forwarded);
        Action::Continue
    }

    /// Tokenise/redact, route and the stream-usage option, spliced into the body. `None`
    /// when nothing changed.
    fn rewrite_body(
        &mut self,
        shared: &Shared,
        t: &Transforms,
        bytes: &[u8],
    ) -> Result<Option<Vec<u8>>, BodyError> {
        let malformed = |e: crate::json_strings::JsonError| BodyError::Malformed(e.to_string());
        let mut current: Option<Vec<u8>> = None;
        if !t.tokenise.is_empty() || !t.redact.is_empty() {
            let rw = tokenise::rewrite_request(
                bytes,
                &shared.engine.scanner,
                &t.tokenise,
                &t.redact,
                &mut self.vault,
            )
            .map_err(malformed)?;
            self.tally(shared, &rw.tallies);
            current = rw.body;
        }
        if let Some(model) = &t.route
            && let Some(new) =
                request::set_model(current.as_deref().unwrap_or(bytes), model).map_err(malformed)?
        {
            current = Some(new);
        }
        if self.reservation.is_some()
            && let Some(json) = &self.request.body
            && let Some(new) = request::ask_stream_usage(current.as_deref().unwrap_or(bytes), json)
        {
            current = Some(new);
        }
        Ok(current)
    }

    /// Tokenise/redact in the workflow's scanned headers and query string (`scan`), with
    /// the request's vault. The new values replace the old before the headers go
    /// upstream (they are still held); they are never restored.
    fn rewrite_carriers(&mut self, shared: &Shared, t: &Transforms) -> Result<(), &'static str> {
        let policy = shared.policy();
        let Some(wf) = self.identity.workflow.and_then(|i| policy.workflows.get(i)) else {
            return Ok(());
        };
        let scanner = &shared.engine.scanner;
        for name in &wf.scan_headers {
            let values: Vec<String> = self.request.header_values(name).map(String::from).collect();
            let mut changed = false;
            let mut new_values = Vec::with_capacity(values.len());
            for v in &values {
                match tokenise::rewrite_carrier(
                    v,
                    tokenise::Carrier::Header,
                    scanner,
                    &t.tokenise,
                    &t.redact,
                    &mut self.vault,
                ) {
                    Some((new, tallies)) => {
                        changed = true;
                        self.tally(shared, &tallies);
                        new_values.push(new);
                    }
                    None => new_values.push(v.clone()),
                }
            }
            if changed {
                // Repeated headers are one comma-joined list in HTTP.
                let joined = new_values.join(", ");
                host::replace_header(host::REQUEST_HEADERS, name, &joined)
                    .map_err(|_| "proxy_replace_header_map_value")?;
                self.request.headers.retain(|(n, _)| n != name);
                self.request.headers.push((name.clone(), joined));
            }
        }
        if wf.scan_query
            && let Some((new, tallies)) = tokenise::rewrite_carrier(
                &self.request.query,
                tokenise::Carrier::Query,
                scanner,
                &t.tokenise,
                &t.redact,
                &mut self.vault,
            )
        {
            self.tally(shared, &tallies);
            // The view holds the path and the query apart (a client sends no fragment).
            let new_path = format!("{}?{new}", self.request.path);
            host::replace_header(host::REQUEST_HEADERS, ":path", &new_path)
                .map_err(|_| "proxy_replace_header_map_value")?;
            self.request.query = new;
        }
        Ok(())
    }

    /// Counts rewritten values per detector in the audit record.
    fn tally(&mut self, shared: &Shared, tallies: &[tokenise::Tally]) {
        for tally in tallies {
            if let Some(name) = shared.engine.scanner.name(tally.detector) {
                self.audit
                    .add_pii(name, tally.tokenised.saturating_add(tally.redacted));
            }
        }
    }

    /// Answers a denied request; a PII rule's message names the types found.
    fn deny(&mut self, shared: &Shared, decision: Decision) -> Action {
        let policy = shared.policy();
        self.log_would_have(shared, &decision);
        self.audit.add_decision(policy, &decision);
        self.audit.outcome = "denied".into();
        let Verdict::Deny {
            status,
            message,
            clause,
            rule,
        } = decision.verdict
        else {
            return Action::Continue;
        };
        let mut message = message;
        if let Some(r) = policy.rules.get(rule) {
            let detectors = eval::prompt_detectors(r);
            if !detectors.is_empty() {
                let counts =
                    eval::count_in_request(&shared.engine.scanner, &self.request, &detectors);
                for (d, n) in &counts {
                    if let Some(name) = shared.engine.scanner.name(*d) {
                        self.audit.add_pii(name, *n);
                    }
                }
                message = eval::deny_message_with_types(&message, &shared.engine.scanner, &counts);
            }
        }
        self.reply(&Reply::policy_violation(status, &message, &clause))
    }

    fn log_would_have(&self, shared: &Shared, decision: &Decision) {
        for f in decision
            .fired
            .iter()
            .filter(|f| f.effect == eval::Effect::WouldHave)
        {
            let what = match shared.policy().rules.get(f.rule).map(|r| &r.action) {
                Some(ir::Action::Deny { status, .. }) => format!("denied {status}"),
                Some(a) => format!("applied {}", eval::ActionKind::of(a).as_str()),
                None => "acted".into(),
            };
            host::log(
                LogLevel::Info,
                &format!(
                    "writ: monitor: would have {what} \"{}\" (clause {})",
                    f.title, f.clause
                ),
            );
        }
    }

    /// The response phase on what is known: rules, oversight, escalation. Returns an
    /// action when it answered locally.
    fn respond(&mut self, shared: &Shared, body: Option<&Json>) -> Option<Action> {
        let policy = shared.policy();
        let reply = ReplyView {
            status: self.response_status,
            headers: &self.response_headers,
            body,
        };
        let facts = Facts {
            spend: None,
            reply: Some(reply),
        };
        let decision = shared.engine.evaluate(
            &self.request,
            self.identity.clone(),
            &facts,
            Phase::Response,
            Some(&shared.response_rules),
        );
        self.log_would_have(shared, &decision);
        self.audit.add_fired(&decision.fired);
        let t = Transforms::of(policy, &decision);
        for (k, v) in &t.tags {
            self.audit.tags.insert(k.clone(), v.clone());
        }
        if let Verdict::Deny {
            status,
            message,
            clause,
            ..
        } = &decision.verdict
        {
            self.audit.outcome = "denied".into();
            return Some(self.reply(&Reply::policy_violation(*status, message, clause)));
        }

        // Oversight and escalation.
        let confidence = oversight::read_confidence(
            &shared.confidence,
            |name| {
                self.response_headers
                    .iter()
                    .find(|(k, _)| k.eq_ignore_ascii_case(name))
                    .map(|(_, v)| v.as_str())
            },
            body,
        );
        if let Ok(c) = confidence {
            self.audit.confidence = Some(c);
        }
        let success = (200..300).contains(&self.response_status);
        let workflow = self.identity.workflow.and_then(|i| policy.workflows.get(i));
        let by_rule = t.escalate.or_else(|| self.transforms.escalate.clone());
        let handoff = match (by_rule, workflow) {
            (Some((rule, queue, reason)), _) => {
                let r = policy.rules.get(rule);
                Some(oversight::Handoff {
                    rule: r.map(|r| r.title.clone()).unwrap_or_default(),
                    clause: r.map(|r| r.clause.clone()).unwrap_or_default(),
                    reason,
                    confidence: confidence.as_ref().ok().copied(),
                    request_id: self.request_id.clone(),
                    workflow: workflow.map(|w| w.name.clone()),
                    review_id: oversight::review_id(&self.request_id),
                    queue,
                    model: self.audit.model_used.clone(),
                    pii: self.audit.pii.clone(),
                    status: self.response_status,
                })
            }
            (None, Some(wf)) if success => {
                oversight::decide(&wf.oversight, &confidence, &self.request_id).map(|e| {
                    oversight::Handoff {
                        rule: format!(
                            "oversight {}",
                            match wf.oversight {
                                ir::Oversight::Hitl => "HITL",
                                ir::Oversight::Hotl { .. } => "HOTL",
                                ir::Oversight::Hic { .. } => "HIC",
                            }
                        ),
                        clause: String::new(),
                        reason: e.reason,
                        confidence: e.confidence,
                        request_id: self.request_id.clone(),
                        workflow: Some(wf.name.clone()),
                        review_id: oversight::review_id(&self.request_id),
                        queue: shared.default_queue.clone(),
                        model: self.audit.model_used.clone(),
                        pii: self.audit.pii.clone(),
                        status: self.response_status,
                    }
                })
            }
            _ => None,
        };
        let escalated = handoff.is_some();
        if let Some(h) = handoff {
            for (name, value) in h.headers() {
                if host::replace_header(host::RESPONSE_HEADERS, name, &value).is_err() {
                    host::log(LogLevel::Error, "writ: the host refused a review header");
                }
            }
            let workflow = metrics::workflow_label(policy, self.audit.workflow.as_deref());
            let labels = [("workflow", workflow), ("queue", h.queue.as_str())];
            shared.count(
                host::COUNTER,
                &metrics::stat_name(metrics::ESCALATIONS.name, &labels),
                1,
            );
            self.audit.escalation = Some(h.audit());
            if let Some(target) = self.config.review_queue.clone() {
                self.call(&target, &h.payload());
            }
        }
        if success && let Some(wf) = workflow {
            match oversight::record_outcome(
                &HostStore,
                &wf.name,
                escalated,
                wf.assumed_verification_rate,
                oversight::DriftConfig::default(),
                (self.now_nanos / 1_000_000_000) as i64,
            ) {
                Ok((counts, alert)) => {
                    let labels = [("workflow", wf.name.as_str())];
                    shared.gauge(
                        &metrics::stat_name(metrics::VERIFICATION_RATE.name, &labels),
                        metrics::ppm(counts.rate()),
                    );
                    if let Some(a) = alert {
                        let rec = a.audit_record(policy, host::now_nanos() as i64);
                        self.alert_lines.push(rec.log_line());
                        shared.count(
                            host::COUNTER,
                            &metrics::stat_name(metrics::DRIFT_ALERTS.name, &labels),
                            1,
                        );
                        if let Some(target) = self.config.alert_sink.clone() {
                            self.call(&target, &a.payload(policy));
                        }
                    }
                }
                Err(e) => host::log(
                    LogLevel::Error,
                    &format!("writ: could not count the verification rate: {e}"),
                ),
            }
        }
        None
    }

    /// The end of a buffered JSON reply: parse once, decide, restore/redact, settle.
    fn finish_json_reply(&mut self, shared: &Shared, body_size: usize) -> Action {
        self.buffering = false;
        let bytes = match host::buffer(host::RESPONSE_BODY, 0, body_size) {
            Ok(b) => b,
            Err(what) => return self.host_failed(what),
        };
        let json: Option<Json> = serde_json::from_slice(&bytes).ok();
        if let Some(action) = self.respond(shared, json.as_ref()) {
            return action;
        }
        let action = match self.rewriter.take() {
            Some(mut rw) => {
                let ctx = self.reply_ctx(shared);
                let a = rw.on_body(&bytes, true, &ctx);
                self.rewriter = Some(rw);
                a
            }
            None => stream::BodyAction::Unchanged,
        };
        match action {
            stream::BodyAction::Replace(out) => {
                if self.strip_response_length().is_err()
                    || host::set_buffer(host::RESPONSE_BODY, body_size, &out).is_err()
                {
                    return self.host_failed("proxy_set_buffer_bytes");
                }
            }
            stream::BodyAction::Fail(why) => {
                return self.reply(&Reply {
                    status: 502,
                    body: crate::wire::error_body(why, "engine_error", "unredactable_reply"),
                });
            }
            stream::BodyAction::Unchanged | stream::BodyAction::Buffer => {}
        }
        let usage = json.as_ref().and_then(usage::usage_from_json);
        self.end_of_reply(shared, usage);
        Action::Continue
    }

    fn strip_response_length(&self) -> Result<(), u32> {
        for h in stream::LENGTH_HEADERS {
            if self.response_headers.iter().any(|(k, _)| k == h) {
                host::remove_header(host::RESPONSE_HEADERS, h)?;
            }
        }
        Ok(())
    }

    /// At the end of a reply: a reply that reported usage, or succeeded, is charged
    /// (from usage, else at the estimate); a failed reply without usage is released.
    fn end_of_reply(&mut self, shared: &Shared, usage: Option<Usage>) {
        if usage.is_some() || (200..300).contains(&self.response_status) {
            self.settle(shared, usage);
        } else {
            self.release();
        }
    }

    /// Settles the reservation from `usage` (or the estimate) and handles its alerts.
    fn settle(&mut self, shared: &Shared, usage: Option<Usage>) {
        let Some(held) = self.reservation.as_mut() else {
            return;
        };
        let policy = shared.policy();
        match held.settle(&HostStore, usage) {
            Ok(Some(s)) => {
                shared.count(host::GAUGE, metrics::RESERVATIONS.name, -1);
                self.audit.tokens = Some(Tokens {
                    prompt: s.usage.prompt_tokens,
                    completion: s.usage.completion_tokens,
                    cached: s.usage.cached_tokens,
                });
                self.audit.cost_micros = Some(s.cost_micros);
                self.audit.cost_estimated = s.estimated;
                let workflow = metrics::workflow_label(policy, self.audit.workflow.as_deref());
                let mut labels = vec![("workflow", workflow.to_string())];
                labels.extend(self.identity_labels());
                shared.count(
                    host::COUNTER,
                    &metrics::stat_name(metrics::SPEND.name, &labels),
                    s.cost_micros.max(0),
                );
                for alert in &s.alerts {
                    let rec = alert.audit_record(policy, host::now_nanos() as i64);
                    self.alert_lines.push(rec.log_line());
                    if let Some(name) = metrics::budget_alert_name(policy, alert) {
                        shared.count(host::COUNTER, &name, 1);
                    }
                    if let Some(target) = self.config.alert_sink.clone() {
                        self.call(&target, &alert.payload(policy));
                    }
                }
            }
            Ok(None) => {}
            Err(e) => {
                shared.count(host::GAUGE, metrics::RESERVATIONS.name, -1);
                host::log(
                    LogLevel::Error,
                    &format!("writ: could not settle a spend reservation: {e}"),
                );
            }
        }
    }

    /// Drops the reservation (the request was refused after admission).
    fn release(&mut self) {
        if let Some(mut held) = self.reservation.take()
            && held.is_open()
        {
            if let Err(e) = held.release(&HostStore) {
                host::log(
                    LogLevel::Error,
                    &format!("writ: could not release a spend reservation: {e}"),
                );
            }
            if let Some(shared) = &self.shared {
                shared.count(host::GAUGE, metrics::RESERVATIONS.name, -1);
            }
        }
    }

    /// Posts `body` to a configured cluster; the answer is only logged.
    fn call(&self, target: &crate::config::CalloutTarget, body: &[u8]) {
        let headers = vec![
            (":method", "POST"),
            (":path", target.path.as_str()),
            (":authority", target.authority.as_str()),
            ("content-type", "application/json"),
        ];
        if let Err(status) = self.dispatch_http_call(
            &target.cluster,
            headers,
            Some(body),
            vec![],
            Duration::from_millis(u64::from(target.timeout_ms)),
        ) {
            host::log(
                LogLevel::Error,
                &format!(
                    "writ: call to cluster `{}` refused by the host ({status:?})",
                    target.cluster
                ),
            );
        }
    }

    /// Logs the request's one audit line and counts it.
    fn log_audit(&mut self, shared: &Shared) {
        if std::mem::replace(&mut self.audit_logged, true) {
            return;
        }
        let policy = shared.policy();
        let ending = if self.stage == Stage::Forwarded {
            crate::session::Ending::Forwarded
        } else {
            crate::session::Ending::NotForwarded
        };
        let identity_labels = self.identity_labels();
        let alert_lines = std::mem::take(&mut self.alert_lines);
        let end = crate::session::close_request(
            policy,
            &shared.engine.scanner,
            &mut self.audit,
            self.rewriter.as_ref().map(|rw| rw.redacted()),
            ending,
            &identity_labels,
            alert_lines,
        );
        for name in &end.counters {
            shared.count(host::COUNTER, name, 1);
        }
        for line in &end.lines {
            host::log(LogLevel::Info, line);
        }
        if self.config.audit_sink.is_some() {
            self.sealed_lines = end.lines.clone();
        }
        if self.config.audit_filter_state {
            // The same records, chained, for Envoy's access log: one line per record.
            let records: Vec<serde_json::Value> = end
                .lines
                .iter()
                .filter_map(|l| crate::audit::parse_log_line(l))
                .collect();
            let lines = crate::audit_chain::chain(&HostStore, &records);
            if !host::set_property(&[AUDIT_PROPERTY], lines.join("\n").as_bytes()) {
                host::log(
                    LogLevel::Error,
                    "writ: the host refused the audit record's filter state",
                );
            }
        }
    }

    /// The request id (the client's `x-request-id`, else the host's, else one of our own)
    /// and the audit record it starts, from the request view and `now_nanos`.
    fn start_record(&mut self, shared: &Shared) {
        self.request_id = self
            .request
            .header("x-request-id")
            .map(str::to_string)
            .or_else(|| host::property(&["request", "id"]).and_then(|b| String::from_utf8(b).ok()))
            .filter(|id| !id.is_empty())
            .unwrap_or_else(|| format!("writ-{}-{}", self.context_id, self.now_nanos));
        self.audit = AuditRecord::request(
            shared.policy(),
            self.config.artifact_sha256.as_deref(),
            &self.request_id,
            self.now_nanos as i64,
        );
    }

    /// A request answered before this filter saw it, by a filter in front of it (Envoy's
    /// `jwt_authn` refusing a token) or by Envoy itself: Envoy still calls `on_log`, with
    /// the request headers and the reply's status and details, so it gets its record too
    /// (outcome `denied` for 401/403, else `error`; `detail` names Envoy's reason).
    fn record_unseen(&mut self, shared: &Shared) {
        let headers = host::headers(host::REQUEST_HEADERS).unwrap_or_default();
        self.request = Request::from_headers(headers, None);
        self.now_nanos = host::now_nanos();
        self.start_record(shared);
        let policy = shared.policy();
        self.identity = eval::identify(policy, &self.request);
        self.audit.workflow = self.workflow_name(shared);
        // Envoy reports `response.code` as a little-endian int64.
        let status = host::property(&["response", "code"])
            .and_then(|b| <[u8; 8]>::try_from(b.as_slice()).ok())
            .map(i64::from_le_bytes)
            .and_then(|c| u16::try_from(c).ok())
            .unwrap_or(self.response_status);
        self.audit.status = status;
        self.audit.outcome = if matches!(status, 401 | 403) {
            "denied"
        } else {
            "error"
        }
        .into();
        let details = host::property(&["response", "code_details"])
            .and_then(|b| String::from_utf8(b).ok())
            .unwrap_or_default();
        let details: String = details
            .chars()
            .filter(|c| c.is_ascii_graphic())
            .take(120)
            .collect();
        self.audit.detail = Some(format!("answered before the policy ran: {details}"));
    }

    fn host_failed(&mut self, what: &str) -> Action {
        host::log(LogLevel::Error, &format!("writ: host call failed: {what}"));
        self.audit.outcome = "error".into();
        self.reply(&Reply::engine_error(
            "the policy engine could not read the request",
            "host_error",
        ))
    }

    /// Sends a local reply and stops the request. If the host refuses the reply too, the
    /// request stays paused (never continued unchecked) and the failure is logged.
    fn reply(&mut self, reply: &Reply) -> Action {
        self.reply_with(reply.status, &reply.body)
    }

    fn reply_with(&mut self, status: u16, body: &[u8]) -> Action {
        self.stage = Stage::Replied;
        self.audit.status = status;
        if self.audit.outcome.is_empty() {
            self.audit.outcome = "error".into();
        }
        let held = Held::Local {
            status,
            body: body.to_vec(),
        };
        if let Some(action) = self.hold_for_audit(held) {
            return action;
        }
        send_local_or_log(status, body);
        Action::Pause
    }
}

/// Sends a local JSON reply; a refusal by the host is logged (the request stays paused,
/// never continued unchecked).
fn send_local_or_log(status: u16, body: &[u8]) {
    if let Err(rc) = host::send_local(status, body, &[("content-type", "application/json")]) {
        host::log(
            LogLevel::Error,
            &format!("writ: the host refused a local reply (status {rc})"),
        );
    }
}
