//! The request side of a session: headers (kill switch, admin path, media type, length),
//! the body (the request phase of [`crate::decide`], deny, tokenise/redact/route), local
//! replies and host failures.

use super::{Effect, Level, MetricKind, Next, OnFail, Session, Side, Stage, Step};
use crate::audit::AuditRecord;
use crate::eval::{self, Decision, Transforms, Verdict};
use crate::ir;
use crate::metrics;
use crate::request::{self, BodyError, Request};
use crate::store::SharedStore;
use crate::stream;
use crate::tokenise::{self, Vault};
use crate::wire::Reply;

impl Session {
    /// The request headers arrived (`end_of_stream`: the request has no body).
    /// `host_request_id` is asked for the host's request id only when the client sent no
    /// `x-request-id` (each host call costs).
    pub fn on_request_headers(
        &mut self,
        headers: Vec<(String, String)>,
        end_of_stream: bool,
        host_request_id: &mut dyn FnMut() -> Option<String>,
        store: &dyn SharedStore,
    ) -> Step {
        self.now_nanos = (self.clock)();
        self.request = Request::from_headers(headers, None);
        self.start_record(host_request_id);
        let shared = self.shared.clone();
        let policy = shared.policy();

        if let Some(ks) = &policy.kill_switch
            && (crate::kill_switch::is_admin_path(ks, &self.request.path)
                || (shared.holds && crate::approval::is_approvals_path(&self.request.path)))
        {
            if end_of_stream {
                return self.admin(store, &[]);
            }
            self.stage = Stage::Admin;
            return self.step(Next::Pause);
        }
        if policy.kill_switch.is_some()
            && crate::review_verdict::is_reviews_path(&self.request.path)
        {
            self.verdict_call = true;
            if end_of_stream {
                return self.verdict(store, &[]);
            }
            self.stage = Stage::Admin;
            return self.step(Next::Pause);
        }

        self.identity = eval::identify(policy, &self.request);
        let workflow = self.workflow_name();
        if crate::kill_switch::is_stopped(store, workflow.as_deref()) {
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
            return self.reply(&Reply {
                status: crate::kill_switch::STOPPED_STATUS,
                body: crate::kill_switch::stopped_body(workflow.as_deref()),
            });
        }

        if end_of_stream {
            return self.decide(store, None);
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
        // Hold the headers until the body is complete; needs
        // `allow_on_headers_stop_iteration: true` in Envoy's plugin config. The headers
        // the upstream needs changed are changed when the request is forwarded
        // ([`Session::upstream_headers`]), so a refused request does not pay for them.
        self.step(Next::Pause)
    }

    /// The request headers a forwarded request with a body needs changed (they are still
    /// held): its length headers removed when the body may be rewritten (the host
    /// re-frames it), and `accept-encoding: identity` when the reply may be rewritten.
    /// Only headers that are present are removed: each host call costs.
    fn upstream_headers(&mut self) {
        let shared = self.shared.clone();
        if shared.may_rewrite_request {
            for h in stream::LENGTH_HEADERS {
                if self.request.header(h).is_some() {
                    self.out.push(Effect::RemoveHeader {
                        side: Side::Request,
                        name: h.to_string(),
                        on_fail: OnFail::Fail("proxy_remove_header_map_value"),
                    });
                }
            }
        }
        if shared.may_rewrite_reply && self.request.header("accept-encoding") != Some("identity") {
            let (name, value) = stream::UPSTREAM_ACCEPT_ENCODING;
            self.out.push(Effect::SetHeader {
                side: Side::Request,
                name: name.to_string(),
                value: value.to_string(),
                on_fail: OnFail::Fail("proxy_replace_header_map_value"),
            });
        }
    }

    /// The request body has grown to `body_size` bytes: a local 413 if that is over the
    /// limit, else `None` (keep buffering, or read it at its end).
    pub fn on_request_body_size(&mut self, body_size: usize) -> Option<Step> {
        if body_size > self.config.body_limit {
            let err = BodyError::TooLarge {
                limit: self.config.body_limit,
            };
            return Some(self.reply(&Reply::body_error(&err)));
        }
        None
    }

    /// The whole request body: decides the request (or answers the admin call). A
    /// [`Effect::ReplaceBody`] replaces all of it.
    pub fn on_request_body(&mut self, bytes: &[u8], store: &dyn SharedStore) -> Step {
        if self.stage == Stage::Admin {
            if self.verdict_call {
                return self.verdict(store, bytes);
            }
            return self.admin(store, bytes);
        }
        let body = match request::parse_body(bytes, self.config.body_limit) {
            Ok(body) => body,
            Err(err) => return self.reply(&Reply::body_error(&err)),
        };
        self.request.body = Some(body);
        // One detection pass over the body: every `prompt has …` and the rewrite read it.
        self.request.detection = self.shared.engine.detect(bytes);
        self.decide(store, Some(bytes))
    }

    /// A host call failed (`what` names it): the request is answered 500 `host_error`,
    /// never continued unchecked. An admitted reservation is released when no reply came.
    pub fn host_failed(&mut self, what: &str, store: &dyn SharedStore) -> Step {
        self.log(Level::Error, format!("writ: host call failed: {what}"));
        if self.response_status == 0 {
            self.release(store);
        }
        self.audit.outcome = "error".into();
        self.reply(&Reply::engine_error(
            "the policy engine could not read the request",
            "host_error",
        ))
    }

    /// A request answered before this filter saw it, by a filter in front of it (Envoy's
    /// `jwt_authn` refusing a token) or by Envoy itself: Envoy still calls `on_log`, with
    /// the request headers and the reply's status and details, so it gets its record too
    /// (outcome `denied` for 401/403, else `error`; `detail` names Envoy's reason). Call
    /// [`Session::seal`] next.
    pub fn on_unseen(
        &mut self,
        headers: Vec<(String, String)>,
        host_request_id: &mut dyn FnMut() -> Option<String>,
        status: Option<u16>,
        details: &str,
    ) {
        self.request = Request::from_headers(headers, None);
        self.now_nanos = (self.clock)();
        self.start_record(host_request_id);
        self.identity = eval::identify(self.shared.policy(), &self.request);
        self.audit.workflow = self.workflow_name();
        let status = status.unwrap_or(self.response_status);
        self.audit.status = status;
        self.audit.outcome = if matches!(status, 401 | 403) {
            "denied"
        } else {
            "error"
        }
        .into();
        let details: String = details
            .chars()
            .filter(|c| c.is_ascii_graphic())
            .take(120)
            .collect();
        self.audit.detail = Some(format!("answered before the policy ran: {details}"));
    }

    /// The request id (the client's `x-request-id`, else the host's, else one of our own)
    /// and the audit record it starts.
    fn start_record(&mut self, host_request_id: &mut dyn FnMut() -> Option<String>) {
        self.request_id = self
            .request
            .header("x-request-id")
            .map(str::to_string)
            .or_else(host_request_id)
            .filter(|id| !id.is_empty())
            .unwrap_or_else(|| format!("writ-{}-{}", self.context_id, self.now_nanos));
        self.audit = AuditRecord::request(
            self.shared.policy(),
            self.config.artifact_sha256.as_deref(),
            &self.request_id,
            self.now_nanos as i64,
        );
    }

    /// Answers locally and stops the request (held for the audit sink when there is one).
    pub(super) fn reply(&mut self, reply: &Reply) -> Step {
        self.stage = Stage::Replied;
        self.audit.status = reply.status;
        if self.audit.outcome.is_empty() {
            self.audit.outcome = "error".into();
        }
        // Only the answer the rate admission decided carries its headers.
        let headers = std::mem::take(&mut self.rate_headers)
            .into_iter()
            .map(|(k, v)| (k.to_string(), v))
            .collect();
        self.out.push(Effect::LocalReply {
            status: reply.status,
            // Each API's clients get errors in its own shape (`docs/apis.md`).
            body: self.request.api().reshape_error(reply.status, &reply.body),
            headers,
            hold_for_audit: true,
        });
        self.step(Next::Pause)
    }

    /// The kill-switch admin endpoint: answered locally, audited as its own event.
    fn admin(&mut self, store: &dyn SharedStore, body: &[u8]) -> Step {
        let shared = self.shared.clone();
        let policy = shared.policy();
        let auth = self.request.header("authorization").map(str::to_string);
        let handle = if crate::approval::is_approvals_path(&self.request.path) {
            crate::approval::handle_decision_for
        } else {
            crate::kill_switch::handle_admin_for
        };
        let Some(r) = handle(
            store,
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
        let audit = r.audit;
        if r.status == 200 {
            // A switch of one workflow or of `*`: every workflow's gauge as the store has it.
            for (name, value) in metrics::kill_switch_gauges(policy, store) {
                self.out.push(Effect::Set { name, value });
            }
            // In a fleet, the tick publishes the flip to the store (the tick, not this
            // stream: a flip made while the store is down must still reach it later).
            if self.config.shared.is_some()
                && let Some(w) = audit.workflow.as_deref()
                && let Err(e) = crate::fleet::kill::mark_pending(store, w)
            {
                self.log(
                    Level::Error,
                    format!("writ: could not queue the kill-switch flip for the fleet store: {e}"),
                );
            }
        }
        self.answer_admin(audit, r.status, r.body, &r.headers)
    }

    /// Answers an admin call with its own audit record, stamped with this request's id
    /// and the artifact. Not held for the audit sink: the call is its own event.
    pub(super) fn answer_admin(
        &mut self,
        mut audit: AuditRecord,
        status: u16,
        body: Vec<u8>,
        headers: &[(&'static str, String)],
    ) -> Step {
        audit.request_id = self.request_id.clone();
        audit.artifact_sha256 = self.config.artifact_sha256.clone();
        self.audit = audit;
        self.stage = Stage::Replied;
        self.out.push(Effect::LocalReply {
            status,
            body,
            headers: headers
                .iter()
                .map(|(k, v)| (k.to_string(), v.clone()))
                .collect(),
            hold_for_audit: false,
        });
        self.step(Next::Pause)
    }

    /// The verdict endpoint (`review_verdict`): answered locally, audited as its own
    /// event, with the rubber-stamp signals it raised after it. In a fleet the review is
    /// claimed in the store first (`session/verdict.rs`), so any instance takes it.
    fn verdict(&mut self, store: &dyn SharedStore, body: &[u8]) -> Step {
        if self.config.shared.is_some() {
            return self.fleet_verdict(store, body);
        }
        let shared = self.shared.clone();
        let auth = self.request.header("authorization").map(str::to_string);
        let Some(r) = crate::review_verdict::handle(
            store,
            shared.policy(),
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
        self.answer_verdict(store, r)
    }

    /// Answers a verdict call with what [`crate::review_verdict`] decided: its metrics,
    /// its signals (claimed for the fleet in a fleet), its record.
    pub(super) fn answer_verdict(
        &mut self,
        store: &dyn SharedStore,
        mut r: crate::review_verdict::VerdictResponse,
    ) -> Step {
        let fleet = self.config.shared.is_some();
        if fleet {
            // Judged on the fleet's day: each signal is claimed, and fires once.
            self.review_signals_for_fleet(store, &mut r);
        }
        self.apply(&r.metrics);
        if fleet && let Some(wf) = r.audit.workflow.as_deref() {
            let secs = (self.now_nanos / 1_000_000_000) as i64;
            self.count_for_fleet(store, &crate::review_verdict::queue_key(wf));
            self.count_for_fleet(store, &crate::review_verdict::day_key(wf, secs));
        }
        self.alert_lines
            .extend(r.alerts.iter().map(AuditRecord::log_line));
        self.answer_admin(r.audit, r.status, r.body, &r.headers)
    }

    /// The request phase: evaluate, admit spend, transform the body.
    pub(super) fn decide(&mut self, store: &dyn SharedStore, body: Option<&[u8]>) -> Step {
        if let Some(step) = self.mcp_request(store, body) {
            return step;
        }
        let shared = self.shared.clone();
        let policy = shared.policy();
        if shared.holds {
            let bytes = body.unwrap_or_default();
            if let Some(id) = self.request.header(crate::approval::REVIEW_ID_HEADER) {
                let id = id.to_string();
                return self.release_hold(store, &id, bytes);
            }
            self.request_as_sent = bytes.to_vec();
        }
        self.audit.model_requested = self.request.model().map(str::to_string);
        let phase = match self.request_phase(store, body) {
            super::lease::Phase::Ready(phase) => *phase,
            super::lease::Phase::Step(step) => return step,
        };
        let rate_headers = phase.rate_headers();
        let rate_limited = phase.rate_limited_by();
        let decision = phase.decision;
        self.rate = phase.rate_hold;
        if let Some(e) = phase.ledger_error {
            self.release(store);
            self.log(
                Level::Error,
                format!("writ: spend ledger unavailable: {e} (failing closed)"),
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
        if let Some(e) = phase.rate_error {
            self.log(
                Level::Error,
                format!("writ: rate-limit counters unavailable: {e} (failing closed)"),
            );
            self.audit.outcome = "error".into();
            self.audit.add_decision(policy, &decision);
            return self.reply(&Reply {
                status: 503,
                body: crate::wire::error_body(
                    "the rate-limit counters are unavailable; try again",
                    "engine_error",
                    "rate_limit_unavailable",
                ),
            });
        }
        self.rate_headers = rate_headers;
        if let Some(name) = rate_limited.and_then(|r| metrics::rate_limited_name(policy, r)) {
            self.add(MetricKind::Counter, name, 1);
        }
        if let Some(held) = phase.reservation {
            self.add(MetricKind::Gauge, metrics::RESERVATIONS.name.to_string(), 1);
            self.reservation = Some(held);
        }
        if let Verdict::Deny { .. } = decision.verdict {
            self.release(store);
            return self.deny(decision);
        }
        self.log_would_have(&decision);
        self.resolve_host_retry();
        if body.is_some() {
            self.upstream_headers();
        }

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
            self.rewrite_carriers(&t);
        }
        let mut forwarded = None;
        if let Some(bytes) = body {
            match self.rewrite_body(&t, bytes) {
                Ok(Some(new)) => {
                    if self.host_retry {
                        forwarded = Some(new.clone());
                    }
                    self.out.push(Effect::ReplaceBody {
                        side: Side::Request,
                        bytes: new,
                        on_fail: OnFail::Fail("proxy_set_buffer_bytes"),
                    })
                }
                Ok(None) => forwarded = self.host_retry.then(|| bytes.to_vec()),
                Err(err) => {
                    self.release(store);
                    return self.reply(&Reply::body_error(&err));
                }
            }
        }
        self.audit.add_decision(policy, &decision);
        self.transforms = t;
        self.stage = Stage::Forwarded;
        self.forwarded = true;
        self.start_fallback(forwarded);
        self.step(Next::Continue)
    }

    /// A retry carrying a review id: the approved reply once, the pending answer again, or
    /// a defined error ([`crate::approval::release`]). The model is not called again.
    fn release_hold(&mut self, store: &dyn SharedStore, review_id: &str, body: &[u8]) -> Step {
        let digest = crate::approval::request_digest(body);
        self.audit.workflow = self.workflow_name();
        self.audit.detail = Some(format!("review {review_id}"));
        let (status, body, content_type) = match crate::approval::release(store, review_id, &digest)
        {
            crate::approval::Release::Reply { content_type, body } => {
                self.audit.outcome = "released".into();
                (200, body, content_type)
            }
            crate::approval::Release::Pending(body) => {
                self.audit.outcome = "pending_approval".into();
                (crate::approval::PENDING_STATUS, body, String::new())
            }
            crate::approval::Release::Refused { status, body } => {
                self.audit.outcome = "denied".into();
                (status, body, String::new())
            }
        };
        self.audit.status = status;
        self.stage = Stage::Replied;
        let headers = if content_type.starts_with("text/event-stream") {
            vec![("content-type".to_string(), "text/event-stream".to_string())]
        } else {
            Vec::new()
        };
        self.out.push(Effect::LocalReply {
            status,
            body,
            headers,
            hold_for_audit: true,
        });
        self.step(Next::Pause)
    }

    /// Tokenise/redact, route and the stream-usage option, spliced into the body. `None`
    /// when nothing changed.
    fn rewrite_body(&mut self, t: &Transforms, bytes: &[u8]) -> Result<Option<Vec<u8>>, BodyError> {
        let shared = self.shared.clone();
        let malformed = |e: crate::json_strings::JsonError| BodyError::Malformed(e.to_string());
        let mut current: Option<Vec<u8>> = None;
        if !t.tokenise.is_empty() || !t.redact.is_empty() {
            let rw = tokenise::rewrite_request_with(
                bytes,
                &shared.engine.scanner,
                self.request.detection.as_ref(),
                &t.tokenise,
                &t.redact,
                &mut self.vault,
            )
            .map_err(malformed)?;
            self.tally(&rw.tallies);
            current = rw.body;
        }
        if !t.strip_tool.is_empty() {
            let names = eval::stripped_tools(
                shared.policy(),
                &shared.engine.scanner,
                &self.request,
                &self.identity,
                t,
            );
            if let Some(new) =
                crate::tools::strip_tools(current.as_deref().unwrap_or(bytes), &names)
                    .map_err(BodyError::Malformed)?
            {
                current = Some(new);
            }
        }
        if let Some(model) = &t.route
            && let Some(new) =
                request::set_model(current.as_deref().unwrap_or(bytes), model).map_err(malformed)?
        {
            current = Some(new);
        }
        if self.reads_usage()
            && let Some(json) = &self.request.body
            && let Some(new) = request::ask_stream_usage(
                self.request.api(),
                current.as_deref().unwrap_or(bytes),
                json,
            )
        {
            current = Some(new);
        }
        Ok(current)
    }

    /// Tokenise/redact in the workflow's scanned headers and query string (`scan`), with
    /// the request's vault. The new values replace the old before the headers go
    /// upstream (they are still held); they are never restored.
    fn rewrite_carriers(&mut self, t: &Transforms) {
        let shared = self.shared.clone();
        let policy = shared.policy();
        let Some(wf) = self.identity.workflow.and_then(|i| policy.workflows.get(i)) else {
            return;
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
                        self.tally(&tallies);
                        new_values.push(new);
                    }
                    None => new_values.push(v.clone()),
                }
            }
            if changed {
                // Repeated headers are one comma-joined list in HTTP.
                let joined = new_values.join(", ");
                self.out.push(Effect::SetHeader {
                    side: Side::Request,
                    name: name.clone(),
                    value: joined.clone(),
                    on_fail: OnFail::Fail("proxy_replace_header_map_value"),
                });
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
            self.tally(&tallies);
            // The view holds the path and the query apart (a client sends no fragment).
            let new_path = format!("{}?{new}", self.request.path);
            self.out.push(Effect::SetHeader {
                side: Side::Request,
                name: ":path".into(),
                value: new_path,
                on_fail: OnFail::Fail("proxy_replace_header_map_value"),
            });
            self.request.query = new;
        }
    }

    /// Counts rewritten values per detector in the audit record.
    pub(super) fn tally(&mut self, tallies: &[tokenise::Tally]) {
        for tally in tallies {
            if let Some(name) = self.shared.engine.scanner.name(tally.detector) {
                self.audit
                    .add_pii(name, tally.tokenised.saturating_add(tally.redacted));
            }
        }
    }

    /// Answers a denied request; a PII rule's message names the types found.
    fn deny(&mut self, decision: Decision) -> Step {
        let shared = self.shared.clone();
        let policy = shared.policy();
        self.log_would_have(&decision);
        self.audit.add_decision(policy, &decision);
        self.audit.outcome = "denied".into();
        let Verdict::Deny {
            status,
            message,
            clause,
            rule,
        } = decision.verdict
        else {
            return self.step(Next::Continue);
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

    /// Logs what a monitored rule would have done.
    pub(super) fn log_would_have(&mut self, decision: &Decision) {
        let shared = self.shared.clone();
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
            self.log(
                Level::Info,
                format!(
                    "writ: monitor: would have {what} \"{}\" (clause {})",
                    f.title, f.clause
                ),
            );
        }
    }
}
