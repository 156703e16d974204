//! The proxy-wasm adapter: the only code that talks to the host (wasm32 only).
//!
//! It decides nothing itself: each callback reads what the host holds (headers, the body,
//! properties), feeds it to the request's [`crate::session::Session`] as an event, and
//! carries out the effects the session returns, in order. What it keeps is what only the
//! host knows: buffer sizes, metric ids, and the answer held for the audit sink.
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
//!    are spliced into the body, which is replaced only if something changed. In a fleet
//!    (`docs/fleet.md`) a request whose instance holds too little budget is paused while
//!    the session's store call is made, and decided again on its answer (`filter/fleet.rs`
//!    sends it; the root context's tick and answers stay there too).
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

mod fleet;
mod host;

use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;
use std::time::Duration;

use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{Action, ContextType, LogLevel};

use crate::config::{CalloutTarget, PluginConfig};
use crate::eval::Engine;
use crate::metrics;
use crate::session::{self, Effect, Held, Need, Next, OnFail, Session, Side, Stage, Step};
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
        Box::new(Root {
            shared: None,
            config: Rc::new(RefCell::new(PluginConfig::default())),
            fleet: fleet::RootFleet::default(),
        })
    });
}}

/// What every request of this VM shares: the session's per-policy facts and the metric ids
/// the host handed out.
struct Shared {
    session: Rc<session::Shared>,
    metrics: RefCell<HashMap<String, u32>>,
}

impl Shared {
    fn policy(&self) -> &crate::ir::Policy {
        self.session.policy()
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
}

struct Root {
    /// `None` until the embedded policy loads; requests are refused while it is `None`.
    shared: Option<Rc<Shared>>,
    config: Rc<RefCell<PluginConfig>>,
    /// Calls to the fleet store in flight (`docs/fleet.md`).
    fleet: fleet::RootFleet,
}

impl Context for Root {
    /// The host is stopping: a fleet member gives its unused budget leases back and says
    /// it is done once the store answered (`docs/fleet.md`, "Shutdown").
    fn on_done(&mut self) -> bool {
        let (cfg, sink, filter_state) = {
            let c = self.config.borrow();
            (c.shared.clone(), c.audit_sink.clone(), c.audit_filter_state)
        };
        let (Some(cfg), Some(shared)) = (cfg, self.shared.clone()) else {
            return true;
        };
        fleet::flush_records(self, sink.as_ref(), filter_state);
        let mut f = std::mem::take(&mut self.fleet);
        let done = f.finish(self, &cfg, shared.session.next_salt());
        self.fleet = f;
        done
    }

    fn on_http_call_response(
        &mut self,
        token: u32,
        _headers: usize,
        body: usize,
        _trailers: usize,
    ) {
        let (cfg, sink) = {
            let c = self.config.borrow();
            (c.shared.clone(), c.alert_sink.clone())
        };
        if let Some(cfg) = cfg {
            let shared = self.shared.clone();
            let salt = shared.as_ref().map_or(0, |s| s.session.next_salt());
            let mut f = std::mem::take(&mut self.fleet);
            f.on_response(
                self,
                &cfg,
                shared.as_deref(),
                sink.as_ref(),
                token,
                body,
                salt,
            );
            self.fleet = f;
        }
    }
}

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
                self.shared = Some(Rc::new(Shared {
                    session: Rc::new(session::Shared::new(engine)),
                    metrics: RefCell::new(HashMap::new()),
                }));
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
        if let Some(shared) = &config.shared {
            // Ticks write settled spend back to the fleet store and poll the kill switch.
            let _ = proxy_wasm::hostcalls::set_tick_period(Duration::from_millis(u64::from(
                shared.poll_ms,
            )));
        }
        *self.config.borrow_mut() = config;
        // A bad configuration never stops enforcement: the policy needs none.
        true
    }

    fn on_tick(&mut self) {
        let (cfg, sink, filter_state) = {
            let c = self.config.borrow();
            (c.shared.clone(), c.audit_sink.clone(), c.audit_filter_state)
        };
        if let (Some(cfg), Some(shared)) = (cfg, self.shared.clone()) {
            let mut f = std::mem::take(&mut self.fleet);
            f.tick(self, &cfg, shared.session.next_salt());
            self.fleet = f;
            // Records the root wrote (fleet-applied flips, claimed alerts) leave on the tick.
            fleet::flush_records(self, sink.as_ref(), filter_state);
        }
    }

    fn create_http_context(&self, context_id: u32) -> Option<Box<dyn HttpContext>> {
        let config = self.config.borrow().clone();
        let fleet = config.shared.clone();
        let session = self
            .shared
            .as_ref()
            .map(|s| Session::new(s.session.clone(), config, context_id, host::now_nanos));
        Some(Box::new(Http {
            shared: self.shared.clone(),
            session,
            body_len: 0,
            sink_token: None,
            fleet,
            store_token: None,
        }))
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }
}

/// One request: its session (`None` when no policy is loaded) and what only the host
/// knows (buffer sizes, the token of the audit-sink call).
struct Http {
    shared: Option<Rc<Shared>>,
    session: Option<Session>,
    /// Bytes of request body buffered so far, as the host last reported.
    body_len: usize,
    /// The token of the audit-sink call the held answer waits for.
    sink_token: Option<u32>,
    /// The fleet store (`docs/fleet.md`), when the configuration names one.
    fleet: Option<crate::fleet::FleetConfig>,
    /// The token of the fleet-store call the paused request waits for.
    store_token: Option<u32>,
}

impl Context for Http {
    fn on_http_call_response(
        &mut self,
        token: u32,
        _headers: usize,
        body: usize,
        _trailers: usize,
    ) {
        if self.store_token == Some(token) {
            self.store_token = None;
            self.on_store_answer(body);
            return;
        }
        if self.sink_token != Some(token) {
            return; // a handoff or an alert: its answer is only logged by the host
        }
        self.sink_token = None;
        // The SDK's own getter panics on a host error; this one cannot.
        let status = proxy_wasm::hostcalls::get_map_value(
            proxy_wasm::types::MapType::HttpCallResponseHeaders,
            ":status",
        )
        .ok()
        .flatten()
        .and_then(|s| s.parse::<u16>().ok());
        let Some(session) = self.session.as_mut() else {
            return;
        };
        let effects = session.on_audit_sink_answer(status);
        self.apply_all(effects);
    }
}

impl HttpContext for Http {
    fn on_http_request_headers(&mut self, _num_headers: usize, end_of_stream: bool) -> Action {
        let Some(session) = self.session.as_mut() else {
            send_local_or_log(
                &Reply::engine_error(
                    "the policy engine has no policy loaded",
                    "policy_unavailable",
                ),
                &[],
            );
            return Action::Pause;
        };
        let headers = match host::headers(host::REQUEST_HEADERS) {
            Ok(h) => h,
            Err(what) => {
                // Not started: `on_log` records it from what the host reports.
                let step = session.host_failed(what, &HostStore);
                return self.apply(step, 0);
            }
        };
        // Asked only when a request of a workflow with a fallback retry is forwarded.
        session.ask_host_retry_with(host_can_retry);
        let step =
            session.on_request_headers(headers, end_of_stream, &mut host_request_id, &HostStore);
        self.apply(step, 0)
    }

    fn on_http_request_body(&mut self, body_size: usize, end_of_stream: bool) -> Action {
        let Some(session) = self.session.as_mut() else {
            return Action::Pause;
        };
        match session.stage() {
            Stage::Replied | Stage::Leasing => return Action::Pause,
            Stage::Forwarded => return Action::Continue,
            Stage::Request | Stage::Admin => {}
        }
        if let Some(step) = session.on_request_body_size(body_size) {
            return self.apply(step, body_size);
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
        match self.session.as_ref().map(Session::stage) {
            Some(Stage::Request | Stage::Admin) => self.finish(self.body_len),
            Some(Stage::Forwarded) => Action::Continue,
            _ => Action::Pause,
        }
    }

    fn on_http_response_headers(&mut self, _num_headers: usize, end_of_stream: bool) -> Action {
        let action = self.response_headers(end_of_stream);
        self.hold_end_of_reply(action, end_of_stream)
    }

    fn on_http_response_body(&mut self, body_size: usize, end_of_stream: bool) -> Action {
        let action = self.response_body(body_size, end_of_stream);
        self.hold_end_of_reply(action, end_of_stream)
    }

    fn on_log(&mut self) {
        let Some(session) = self.session.as_mut() else {
            return;
        };
        if !session.started() {
            record_unseen(session);
        }
        self.seal();
    }
}

/// Whether the host sends a request again on the filter's word (`writ.host_retry`).
fn host_can_retry() -> bool {
    host::property(&crate::fallback::HOST_RETRY_PROPERTY).is_some_and(|v| v.as_slice() == b"1")
}

/// The host's request id (`request.id`), asked only when the client sent none.
fn host_request_id() -> Option<String> {
    host::property(&["request", "id"]).and_then(|b| String::from_utf8(b).ok())
}

/// A request answered before this filter saw it: its record from what Envoy reports.
fn record_unseen(session: &mut Session) {
    let headers = host::headers(host::REQUEST_HEADERS).unwrap_or_default();
    // Envoy reports `response.code` as a little-endian int64.
    let code = host::property(&["response", "code"])
        .and_then(|b| <[u8; 8]>::try_from(b.as_slice()).ok())
        .map(i64::from_le_bytes)
        .and_then(|c| u16::try_from(c).ok());
    let details = host::property(&["response", "code_details"])
        .and_then(|b| String::from_utf8(b).ok())
        .unwrap_or_default();
    session.on_unseen(headers, &mut host_request_id, code, &details);
}

/// Posts a JSON `body` to a configured cluster (a handoff, an alert); the answer is only
/// logged, and a call the host refuses is logged too.
pub(crate) fn post_json(ctx: &dyn Context, target: &CalloutTarget, body: &[u8]) {
    let headers = vec![
        (":method", "POST"),
        (":path", target.path.as_str()),
        (":authority", target.authority.as_str()),
        ("content-type", "application/json"),
    ];
    if let Err(status) = ctx.dispatch_http_call(
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

impl Http {
    fn response_headers(&mut self, end_of_stream: bool) -> Action {
        let Some(session) = self.session.as_mut() else {
            return Action::Continue;
        };
        if !session.wants_reply_headers() {
            // A local reply passes through here too: leave it alone.
            return Action::Continue;
        }
        let step = match host::headers(host::RESPONSE_HEADERS) {
            Ok(headers) => session.on_response_headers(headers, end_of_stream, &HostStore),
            Err(what) => session.host_failed(what, &HostStore),
        };
        self.apply(step, 0)
    }

    fn response_body(&mut self, body_size: usize, end_of_stream: bool) -> Action {
        let Some(session) = self.session.as_mut() else {
            return Action::Continue;
        };
        match session.reply_body_need(end_of_stream) {
            Need::Pass => return Action::Continue,
            Need::Wait => return Action::Pause,
            Need::Read => {}
        }
        let step = match host::buffer(host::RESPONSE_BODY, 0, body_size) {
            Ok(chunk) => session.on_response_body(&chunk, end_of_stream, &HostStore),
            Err(what) if session.reply_read_is_fatal() => session.host_failed(what, &HostStore),
            Err(what) => {
                host::log(LogLevel::Error, &format!("writ: host call failed: {what}"));
                return Action::Continue;
            }
        };
        self.apply(step, body_size)
    }

    /// Reads the complete buffered body and decides (or answers the admin call).
    fn finish(&mut self, body_size: usize) -> Action {
        let Some(session) = self.session.as_mut() else {
            return Action::Pause;
        };
        let step = match host::buffer(host::REQUEST_BODY, 0, body_size) {
            Ok(bytes) => session.on_request_body(&bytes, &HostStore),
            Err(what) => session.host_failed(what, &HostStore),
        };
        self.apply(step, body_size)
    }

    /// Carries out a step's effects in order; `body_size` is the size of the body buffer
    /// a [`Effect::ReplaceBody`] replaces. A refused effect marked [`OnFail::Fail`] stops
    /// the step and fails the request closed.
    fn apply(&mut self, step: Step, body_size: usize) -> Action {
        let Step { effects, next } = step;
        for effect in effects {
            if let Effect::StoreCall { path, body } = &effect {
                // The fleet store's answer resumes the request; a refused call replaces
                // the rest with the session's next step.
                if let Some(step) = self.store_call(path, body) {
                    return self.apply(step, body_size);
                }
                continue;
            }
            if let Err(what) = self.apply_one(effect, body_size) {
                let Some(session) = self.session.as_mut() else {
                    return Action::Pause;
                };
                let step = session.host_failed(what, &HostStore);
                return self.apply(step, body_size);
            }
        }
        match next {
            Next::Continue => Action::Continue,
            Next::Pause => Action::Pause,
        }
    }

    fn apply_one(&mut self, effect: Effect, body_size: usize) -> Result<(), &'static str> {
        let failed = |on_fail: OnFail| match on_fail {
            OnFail::Log(line) => {
                host::log(LogLevel::Error, line);
                Ok(())
            }
            OnFail::Fail(what) => Err(what),
        };
        match effect {
            Effect::Add { kind, name, delta } => {
                if let Some(shared) = &self.shared {
                    shared.count(metric_kind(kind), &name, delta);
                }
            }
            Effect::Set { name, value } => {
                if let Some(shared) = &self.shared {
                    shared.gauge(&name, value);
                }
            }
            Effect::Log { level, line } => host::log(log_level(level), &line),
            Effect::SetHeader {
                side,
                name,
                value,
                on_fail,
            } => {
                if host::replace_header(header_map(side), &name, &value).is_err() {
                    return failed(on_fail);
                }
            }
            Effect::RemoveHeader {
                side,
                name,
                on_fail,
            } => {
                if host::remove_header(header_map(side), &name).is_err() {
                    return failed(on_fail);
                }
            }
            Effect::ReplaceBody {
                side,
                bytes,
                on_fail,
            } => {
                let buffer = match side {
                    Side::Request => host::REQUEST_BODY,
                    Side::Response => host::RESPONSE_BODY,
                };
                if host::set_buffer(buffer, body_size, &bytes).is_err() {
                    return failed(on_fail);
                }
            }
            Effect::Callout { target, body } => post_json(self, &target, &body),
            Effect::AuditFilterState(lines) => {
                if !host::set_property(&[AUDIT_PROPERTY], lines.as_bytes()) {
                    host::log(
                        LogLevel::Error,
                        "writ: the host refused the audit record's filter state",
                    );
                }
            }
            Effect::LocalReply {
                status,
                body,
                headers,
                hold_for_audit,
            } => {
                if hold_for_audit && let Some(session) = self.session.as_mut() {
                    let held = Held::Local {
                        status,
                        body: body.clone(),
                        headers: headers.clone(),
                    };
                    if let Some(effects) = session.hold_for_audit(held, &HostStore) {
                        self.apply_all(effects);
                        return Ok(());
                    }
                }
                let headers: Vec<(&str, &str)> = headers
                    .iter()
                    .map(|(k, v)| (k.as_str(), v.as_str()))
                    .collect();
                send_local_or_log(&Reply { status, body }, &headers);
            }
            Effect::PostAuditSink { target, body } => self.post_audit_sink(&target, &body),
            Effect::StoreCall { path, body } => {
                // Only ever the last effect of a request step, which `apply` handles.
                if let Some(step) = self.store_call(path, &body) {
                    let _ = self.apply(step, body_size);
                }
            }
            Effect::ResumeReply => {
                if proxy_wasm::hostcalls::resume_http_response().is_err() {
                    host::log(
                        LogLevel::Error,
                        "writ: the host refused to resume the reply",
                    );
                }
            }
            Effect::ResetReply => {
                let _ = proxy_wasm::hostcalls::reset_http_response();
            }
        }
        Ok(())
    }

    /// Carries out effects that cannot fail the request (sealing, the audit sink).
    fn apply_all(&mut self, effects: Vec<Effect>) {
        for effect in effects {
            let _ = self.apply_one(effect, 0);
        }
    }

    /// Closes the request's books once and logs its record ([`Session::seal`]).
    fn seal(&mut self) {
        let Some(session) = self.session.as_mut() else {
            return;
        };
        let effects = session.seal(&HostStore);
        self.apply_all(effects);
    }

    /// With an audit sink, the end of a forwarded reply (`action` would let it go) is held
    /// until the sink has stored the request's records.
    fn hold_end_of_reply(&mut self, action: Action, end_of_stream: bool) -> Action {
        let Some(session) = self.session.as_mut() else {
            return action;
        };
        let next = match action {
            Action::Continue => Next::Continue,
            _ => Next::Pause,
        };
        match session.hold_end_of_reply(next, end_of_stream, &HostStore) {
            Some(effects) => {
                self.apply_all(effects);
                Action::Pause
            }
            None => action,
        }
    }

    /// Posts the sealed records to the audit sink; if the call cannot even be made, the
    /// held answer is withheld at once (fail closed).
    fn post_audit_sink(&mut self, target: &CalloutTarget, body: &[u8]) {
        let headers = vec![
            (":method", "POST"),
            (":path", target.path.as_str()),
            (":authority", target.authority.as_str()),
            ("content-type", "text/plain"),
        ];
        match self.dispatch_http_call(
            &target.cluster,
            headers,
            Some(body),
            vec![],
            Duration::from_millis(u64::from(target.timeout_ms)),
        ) {
            Ok(token) => self.sink_token = Some(token),
            Err(status) => {
                if let Some(session) = self.session.as_mut() {
                    let effects = session.on_audit_sink_unreachable(&format!("{status:?}"));
                    self.apply_all(effects);
                }
            }
        }
    }
}

fn metric_kind(kind: session::MetricKind) -> u32 {
    match kind {
        session::MetricKind::Counter => host::COUNTER,
        session::MetricKind::Gauge => host::GAUGE,
    }
}

fn log_level(level: session::Level) -> LogLevel {
    match level {
        session::Level::Info => LogLevel::Info,
        session::Level::Error => LogLevel::Error,
    }
}

fn header_map(side: Side) -> u32 {
    match side {
        Side::Request => host::REQUEST_HEADERS,
        Side::Response => host::RESPONSE_HEADERS,
    }
}

/// Sends a local JSON reply; a refusal by the host is logged (the request stays paused,
/// never continued unchecked).
fn send_local_or_log(reply: &Reply, extra: &[(&str, &str)]) {
    // A released held stream names its own content type.
    let typed = extra
        .iter()
        .any(|(k, _)| k.eq_ignore_ascii_case("content-type"));
    let headers: Vec<(&str, &str)> = (!typed)
        .then_some(("content-type", "application/json"))
        .into_iter()
        .chain(extra.iter().copied())
        .collect();
    if let Err(rc) = host::send_local(reply.status, &reply.body, &headers) {
        host::log(
            LogLevel::Error,
            &format!("writ: the host refused a local reply (status {rc})"),
        );
    }
}
