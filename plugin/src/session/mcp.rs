//! An MCP request through the session (`docs/mcp.md`): the request side decides a
//! JSON-RPC message with the policy's own rules (the request rules that read only
//! identity and headers; for `tools/call` the `tool_call.…` rules and `strip tool`, with
//! deny, hold and redact/tokenise of arguments; a retry with a review id releases an
//! approved call), the reply side filters a `tools/list` result, applies the `tool_result`
//! rules to a `tools/call` result and restores/redacts every message, JSON or event
//! stream. Every local answer is a JSON-RPC error object with HTTP 200, and the request
//! keeps its one audit record, with the method and tool in `mcp`.

use serde_json::Value as Json;

use super::{Effect, Next, OnFail, Session, Side, Stage, Step};
use crate::audit::McpRecord;
use crate::eval::{self, Facts, ToolScope, Verdict};
use crate::ir::{self, Phase};
use crate::mcp::{self, Kind, Message};
use crate::oversight::{self, Handoff};
use crate::store::SharedStore;
use crate::stream::{self, ReplyKind};
use crate::tokenise::{self, Vault};

/// What the session keeps of an MCP request until its reply is done.
#[derive(Debug)]
pub(super) struct McpState {
    message: Message,
    /// The server's event stream, cut into whole messages (`text/event-stream` replies).
    events: Option<mcp::EventStream>,
    /// What the reply's restore/redact pass masked, per detector.
    pub(super) redacted: stream::Redacted,
}

impl Session {
    /// Whether the request is MCP and was handled here: on a path that is no model API's,
    /// the body is a JSON-RPC message, or a `GET`/`DELETE` without a body carries
    /// [`mcp::PROTOCOL_VERSION_HEADER`].
    pub(super) fn mcp_request(
        &mut self,
        store: &dyn SharedStore,
        body: Option<&[u8]>,
    ) -> Option<Step> {
        if !mcp::recognised(
            self.request.api(),
            &self.request.method,
            self.request.header(mcp::PROTOCOL_VERSION_HEADER).is_some(),
            self.request.body.as_ref(),
        ) {
            return None;
        }
        let parsed = match &self.request.body {
            Some(json) => mcp::classify(json)?,
            None => Ok(Message {
                id: Json::Null,
                method: String::new(),
                kind: Kind::Other,
            }),
        };
        self.audit.workflow = self.workflow_name();
        let message = match parsed {
            Ok(m) => m,
            Err((code, why)) => {
                let id = self
                    .request
                    .body
                    .as_ref()
                    .and_then(|b| b.get("id").cloned())
                    .unwrap_or(Json::Null);
                self.audit.mcp = Some(McpRecord {
                    method: self
                        .request
                        .body
                        .as_ref()
                        .and_then(|b| b.get("method")?.as_str().map(str::to_string))
                        .unwrap_or_default(),
                    ..McpRecord::default()
                });
                self.audit.outcome = "error".into();
                self.audit.detail = Some(why.to_string());
                return Some(self.mcp_answer(mcp::error_body(&id, code, why, Json::Null)));
            }
        };
        self.audit.mcp = Some(McpRecord {
            method: if self.request.body.is_some() {
                message.method_label().to_string()
            } else {
                String::new()
            },
            tool: message.tool().map(str::to_string),
            hidden_tools: 0,
        });
        Some(self.mcp_decide(store, body, message))
    }

    fn mcp_decide(&mut self, store: &dyn SharedStore, body: Option<&[u8]>, m: Message) -> Step {
        let shared = self.shared.clone();
        let policy = shared.policy();
        // The request rules that read only identity and headers.
        let context: Vec<usize> = policy
            .rules
            .iter()
            .enumerate()
            .filter(|(_, r)| r.phase == Phase::Request && mcp::reads_only_context(&r.condition))
            .map(|(i, _)| i)
            .collect();
        let decision = shared.engine.evaluate(
            &self.request,
            self.identity.clone(),
            &Facts::default(),
            Phase::Request,
            Some(&context),
        );
        self.log_would_have(&decision);
        self.audit.add_decision(policy, &decision);
        for (k, v) in eval::Transforms::of(policy, &decision).tags {
            self.audit.tags.insert(k, v);
        }
        if let Verdict::Deny {
            message, clause, ..
        } = &decision.verdict
        {
            return self.mcp_deny(&m.id, message, clause);
        }
        let mut new_body = None;
        if let Kind::ToolsCall { .. } = &m.kind {
            match self.mcp_call(store, body.unwrap_or_default(), &m) {
                Ok(b) => new_body = b,
                Err(step) => return step,
            }
        }
        if let Some(bytes) = new_body {
            for h in stream::LENGTH_HEADERS {
                if self.request.header(h).is_some() {
                    self.out.push(Effect::RemoveHeader {
                        side: Side::Request,
                        name: h.to_string(),
                        on_fail: OnFail::Fail("proxy_remove_header_map_value"),
                    });
                }
            }
            self.out.push(Effect::ReplaceBody {
                side: Side::Request,
                bytes,
                on_fail: OnFail::Fail("proxy_set_buffer_bytes"),
            });
        }
        // The server answers uncompressed, so its results can be checked.
        let (name, value) = stream::UPSTREAM_ACCEPT_ENCODING;
        if self.request.header(name) != Some(value) {
            self.out.push(Effect::SetHeader {
                side: Side::Request,
                name: name.to_string(),
                value: value.to_string(),
                on_fail: OnFail::Fail("proxy_replace_header_map_value"),
            });
        }
        self.mcp = Some(Box::new(McpState {
            message: m,
            events: None,
            redacted: stream::Redacted::new(),
        }));
        self.stage = Stage::Forwarded;
        self.forwarded = true;
        self.step(Next::Continue)
    }

    /// A `tools/call`: a retry with a review id is released (or answered), else the
    /// `tool_call.…` rules decide; `Ok` with the rewritten body when arguments were
    /// tokenised or redacted, `Err` with the local answer.
    fn mcp_call(
        &mut self,
        store: &dyn SharedStore,
        bytes: &[u8],
        m: &Message,
    ) -> Result<Option<Vec<u8>>, Step> {
        let shared = self.shared.clone();
        let policy = shared.policy();
        let digest = crate::approval::request_digest(&m.call_identity().unwrap_or_default());
        if shared.holds
            && let Some(review_id) = self
                .request
                .header(crate::approval::REVIEW_ID_HEADER)
                .map(str::to_string)
        {
            self.audit.detail = Some(format!("review {review_id}"));
            match crate::approval::release(store, &review_id, &digest) {
                crate::approval::Release::Reply { .. } => {
                    // Approved: the call goes to the server now, as it was held.
                    self.audit.outcome = "released".into();
                    return Ok(None);
                }
                crate::approval::Release::Pending(body) => {
                    self.audit.outcome = "pending_approval".into();
                    let data = serde_json::from_slice(&body).unwrap_or(Json::Null);
                    return Err(self.mcp_answer(mcp::error_body(
                        &m.id,
                        mcp::PENDING_APPROVAL,
                        "The tool call is waiting for a reviewer's approval.",
                        data,
                    )));
                }
                crate::approval::Release::Refused { status, body } => {
                    self.audit.outcome = "denied".into();
                    let mut data: Json = serde_json::from_slice::<Json>(&body)
                        .ok()
                        .and_then(|b| b.get("error").cloned())
                        .unwrap_or(Json::Null);
                    let message = data
                        .get("message")
                        .and_then(Json::as_str)
                        .unwrap_or("the approval path refused the retry")
                        .to_string();
                    if let Some(d) = data.as_object_mut() {
                        d.insert("http_status".into(), status.into());
                    }
                    return Err(self.mcp_answer(mcp::error_body(
                        &m.id,
                        mcp::APPROVAL_ERROR,
                        &message,
                        data,
                    )));
                }
            }
        }
        let Some(call) = m.tool_call() else {
            return Ok(None);
        };
        let calls = [call];
        let rules: Vec<usize> = policy
            .rules
            .iter()
            .enumerate()
            .filter(|(_, r)| {
                r.phase == Phase::Response && eval::tool_scope(&r.condition) == ToolScope::Calls
            })
            .map(|(i, _)| i)
            .collect();
        let facts = Facts {
            tool_calls: &calls,
            ..Facts::default()
        };
        let decision = shared.engine.evaluate(
            &self.request,
            self.identity.clone(),
            &facts,
            Phase::Response,
            Some(&rules),
        );
        self.log_would_have(&decision);
        self.audit.add_fired(&decision.fired);
        if let Verdict::Deny {
            message, clause, ..
        } = &decision.verdict
        {
            return Err(self.mcp_deny(&m.id, message, clause));
        }
        // A tool the policy hides from `tools/list` cannot be called either (a deny rule on
        // the name answered above, with its own message).
        if let Some((_, rule)) = self
            .mcp_hidden(std::slice::from_ref(&calls[0].name), false)
            .first()
        {
            let rule = *rule;
            self.audit.add_fired(&[eval::fired(policy, rule, false)]);
            let clause = policy
                .rules
                .get(rule)
                .map(|r| r.clause.clone())
                .unwrap_or_default();
            let message = format!("The tool `{}` is not available.", calls[0].name);
            return Err(self.mcp_deny(&m.id, &message, &clause));
        }
        let t = eval::Transforms::of(policy, &decision);
        for (k, v) in &t.tags {
            self.audit.tags.insert(k.clone(), v.clone());
        }
        if let Some((rule, queue, reason)) = t.hold.clone() {
            return Err(self.mcp_hold(store, m, &calls[0], rule, queue, reason, digest));
        }
        if let Some((rule, queue, reason)) = t.escalate.clone() {
            self.mcp_handoff(store, rule, queue, reason, None);
        }
        if t.tokenise.is_empty() && t.redact.is_empty() {
            return Ok(None);
        }
        self.vault = Vault::new(tokenise::nonce(
            self.request_id.as_bytes(),
            self.now_nanos,
            shared.next_salt(),
        ));
        match tokenise::rewrite_request(
            bytes,
            &shared.engine.scanner,
            &t.tokenise,
            &t.redact,
            &mut self.vault,
        ) {
            Ok(rw) => {
                self.tally(&rw.tallies);
                Ok(rw.body)
            }
            Err(e) => {
                self.audit.outcome = "error".into();
                Err(self.mcp_answer(mcp::error_body(
                    &m.id,
                    mcp::INVALID_REQUEST,
                    &format!("the request could not be rewritten: {e}"),
                    Json::Null,
                )))
            }
        }
    }

    /// Holds a `tools/call` for approval: stored under a review id (nothing reaches the
    /// server), one handoff to the queue, and the `pending_approval` error to the client.
    #[allow(clippy::too_many_arguments, reason = "one hold's facts, used once")]
    fn mcp_hold(
        &mut self,
        store: &dyn SharedStore,
        m: &Message,
        call: &crate::tools::ToolCall,
        rule: usize,
        queue: String,
        reason: String,
        digest: String,
    ) -> Step {
        let policy = self.shared.policy();
        let held = crate::approval::Held {
            state: crate::approval::HoldState::Pending,
            review_id: oversight::review_id(&self.request_id),
            workflow: self.workflow_name(),
            rule: policy.rule_id(rule),
            clause: policy
                .rules
                .get(rule)
                .map(|r| r.clause.clone())
                .unwrap_or_default(),
            queue: queue.clone(),
            reason: reason.clone(),
            tool_calls: vec![crate::approval::HeldCall {
                id: call.id.clone(),
                name: call.name.clone(),
            }],
            request_sha256: digest,
            content_type: MCP_CALL.into(),
            body: String::new(),
            held_at: crate::calendar::rfc3339(self.now_nanos as i64),
            decided_at: None,
            decided_by: None,
        };
        if let Err(why) = crate::approval::put(store, &held) {
            self.log(super::Level::Error, format!("writ: {why} (failing closed)"));
            self.audit.outcome = "error".into();
            return self.mcp_answer(mcp::error_body(
                &m.id,
                mcp::GATEWAY_ERROR,
                "the held tool call could not be stored; it was not sent",
                Json::Null,
            ));
        }
        self.mcp_handoff(store, rule, queue, reason, Some(held.review_id.clone()));
        self.audit.outcome = "pending_approval".into();
        let data =
            serde_json::from_slice(&crate::approval::pending_body(&held)).unwrap_or(Json::Null);
        self.mcp_answer(mcp::error_body(
            &m.id,
            mcp::PENDING_APPROVAL,
            "The tool call is waiting for a reviewer's approval.",
            data,
        ))
    }

    /// One handoff to the review queue for rule `rule`, as `escalate` sends it.
    fn mcp_handoff(
        &mut self,
        store: &dyn SharedStore,
        rule: usize,
        queue: String,
        reason: String,
        review_id: Option<String>,
    ) {
        let shared = self.shared.clone();
        let policy = shared.policy();
        let r = policy.rules.get(rule);
        let h = Handoff {
            rule: r.map(|r| r.title.clone()).unwrap_or_default(),
            clause: r.map(|r| r.clause.clone()).unwrap_or_default(),
            reason,
            confidence: None,
            request_id: self.request_id.clone(),
            workflow: self.workflow_name(),
            review_id: review_id.unwrap_or_else(|| oversight::review_id(&self.request_id)),
            queue,
            model: None,
            pii: self.audit.pii.clone(),
            status: 0,
            output: None,
        };
        self.remember_escalation(store, &h.review_id);
        self.escalate(h);
    }

    /// The names among `names` the policy hides from MCP clients, each with the rule that
    /// hides it: enforced `strip tool` rules (the tool read as offered), and enforced
    /// `deny` rules on `tool_call.…` that read no argument (the tool read as called with
    /// no arguments; only with `with_denies`), so a tool a call would always be refused
    /// is never shown.
    fn mcp_hidden(&self, names: &[String], with_denies: bool) -> Vec<(String, usize)> {
        let shared = &*self.shared;
        let policy = shared.policy();
        let scanner = &shared.engine.scanner;
        let offered = crate::request::Request {
            body: Some(mcp::offered_view(names)),
            ..self.request.clone()
        };
        let calls: Vec<crate::tools::ToolCall> = names
            .iter()
            .map(|n| crate::tools::ToolCall::new("", n, "{}"))
            .collect();
        let facts = Facts {
            tool_calls: &calls,
            ..Facts::default()
        };
        let mut out: Vec<(String, usize)> = Vec::new();
        for (i, r) in policy.rules.iter().enumerate() {
            if eval::is_monitor(policy, i) {
                continue;
            }
            let items = match (&r.action, r.phase, eval::tool_scope(&r.condition)) {
                (ir::Action::StripTool, Phase::Request, ToolScope::Offered) => {
                    eval::matching_tool_items(
                        policy,
                        scanner,
                        &offered,
                        &self.identity,
                        &Facts::default(),
                        i,
                    )
                }
                (ir::Action::Deny { .. }, Phase::Response, ToolScope::Calls)
                    if with_denies && !mcp::reads_arguments(&r.condition) =>
                {
                    eval::matching_tool_items(
                        policy,
                        scanner,
                        &self.request,
                        &self.identity,
                        &facts,
                        i,
                    )
                }
                _ => continue,
            };
            for p in items {
                if let Some(n) = names.get(p)
                    && !out.iter().any(|(o, _)| o == n)
                {
                    out.push((n.clone(), i));
                }
            }
        }
        out
    }

    /// Answers an MCP request locally: a JSON-RPC message with HTTP 200 (held for the
    /// audit sink like any local answer).
    fn mcp_answer(&mut self, body: Vec<u8>) -> Step {
        self.stage = Stage::Replied;
        self.audit.status = 200;
        if self.audit.outcome.is_empty() {
            self.audit.outcome = "error".into();
        }
        self.out.push(Effect::LocalReply {
            status: 200,
            body,
            headers: vec![("content-type".into(), "application/json".into())],
            hold_for_audit: true,
        });
        self.step(Next::Pause)
    }

    fn mcp_deny(&mut self, id: &Json, message: &str, clause: &str) -> Step {
        self.audit.outcome = "denied".into();
        let data = serde_json::json!({"type": "policy_violation", "clause": clause});
        self.mcp_answer(mcp::error_body(id, mcp::DENIED, message, data))
    }

    /// The reply headers of a forwarded MCP request: JSON is buffered and decided whole,
    /// an event stream is decided event by event, a compressed reply is refused (it cannot
    /// be checked), anything else passes.
    pub(super) fn mcp_reply_headers(&mut self, end_of_stream: bool) -> Step {
        let content_type = self
            .response_headers
            .iter()
            .find(|(k, _)| k == "content-type")
            .map(|(_, v)| v.clone());
        let encoding = self
            .response_headers
            .iter()
            .find(|(k, _)| k == "content-encoding")
            .map(|(_, v)| v.clone());
        self.reply_kind = stream::reply_kind(content_type.as_deref(), encoding.as_deref());
        let id = self
            .mcp
            .as_ref()
            .map(|s| s.message.id.clone())
            .unwrap_or(Json::Null);
        match self.reply_kind {
            ReplyKind::Encoded => {
                self.audit.outcome = "error".into();
                self.mcp_answer(mcp::error_body(
                    &id,
                    mcp::GATEWAY_ERROR,
                    "the MCP server's reply is compressed and cannot be checked",
                    Json::Null,
                ))
            }
            ReplyKind::Json if !end_of_stream => {
                self.buffering = true;
                self.step(Next::Pause)
            }
            ReplyKind::EventStream => {
                if let Some(s) = self.mcp.as_mut() {
                    s.events = Some(mcp::EventStream::new());
                }
                self.strip_response_length(OnFail::Fail("proxy_remove_header_map_value"));
                self.step(Next::Continue)
            }
            _ => {
                if self.config.audit_sink.is_some() && !end_of_stream {
                    self.strip_response_length(OnFail::Fail("proxy_remove_header_map_value"));
                }
                self.step(Next::Continue)
            }
        }
    }

    /// Whether the adapter reads this MCP reply's chunks (an event stream).
    pub(super) fn mcp_reads_chunks(&self) -> bool {
        self.mcp.as_ref().is_some_and(|s| s.events.is_some())
    }

    /// A whole buffered JSON reply: decided as one message; one that is not JSON is
    /// replaced by a JSON-RPC error (fail closed).
    pub(super) fn mcp_json_reply(&mut self, bytes: &[u8], store: &dyn SharedStore) -> Step {
        self.buffering = false;
        let new = if bytes.iter().all(u8::is_ascii_whitespace) {
            None
        } else {
            match serde_json::from_slice::<Json>(bytes) {
                Ok(message) => Some(
                    self.mcp_message(message)
                        .map(|m| serde_json::to_vec(&m).unwrap_or_default())
                        .unwrap_or_default(),
                ),
                Err(_) => {
                    self.audit.outcome = "error".into();
                    let id = self
                        .mcp
                        .as_ref()
                        .map(|s| s.message.id.clone())
                        .unwrap_or(Json::Null);
                    Some(mcp::error_body(
                        &id,
                        mcp::GATEWAY_ERROR,
                        "the MCP server's reply is not valid JSON and cannot be checked",
                        Json::Null,
                    ))
                }
            }
        };
        if let Some(out) = new
            && out != bytes
        {
            let on_fail = OnFail::Fail("proxy_set_buffer_bytes");
            self.strip_response_length(on_fail);
            self.out.push(Effect::ReplaceBody {
                side: Side::Response,
                bytes: out,
                on_fail,
            });
        }
        self.end_of_reply(None, store);
        self.step(Next::Continue)
    }

    /// One chunk of an event-stream reply: whole events are decided and sent, a partial
    /// one waits for the rest.
    pub(super) fn mcp_sse_chunk(
        &mut self,
        chunk: &[u8],
        end_of_stream: bool,
        store: &dyn SharedStore,
    ) -> Step {
        let Some(mut events) = self.mcp.as_mut().and_then(|s| s.events.take()) else {
            return self.step(Next::Continue);
        };
        let mut out = Vec::with_capacity(chunk.len() + 64);
        let mut decide = |m: Json| self.mcp_message(m);
        events.push(chunk, &mut decide, &mut out);
        if end_of_stream {
            events.finish(&mut decide, &mut out);
        }
        if events.dropped > 0 {
            self.audit.detail = Some(format!(
                "{} server event(s) that were not JSON were dropped",
                events.dropped
            ));
        }
        if let Some(s) = self.mcp.as_mut() {
            s.events = Some(events);
        }
        if out != chunk {
            self.out.push(Effect::ReplaceBody {
                side: Side::Response,
                bytes: out,
                on_fail: OnFail::Log("writ: the host refused a rewritten reply chunk"),
            });
        }
        if end_of_stream {
            self.end_of_reply(None, store);
        }
        self.step(Next::Continue)
    }

    /// Decides one server message: a `tools/list` result loses the hidden tools, a
    /// `tools/call` result is checked by the `tool_result` rules (deny replaces it with a
    /// JSON-RPC error; tokenise/redact rewrite it), and every message is restored and
    /// redacted like a model's reply.
    fn mcp_message(&mut self, mut message: Json) -> Option<Json> {
        let (id, kind) = {
            let s = self.mcp.as_ref()?;
            (s.message.id.clone(), s.message.kind.clone())
        };
        let ours = !id.is_null() && mcp::is_response_to(&message, &id);
        if ours && kind == Kind::ToolsList {
            let names = mcp::listed_tools(&message);
            let hidden = self.mcp_hidden(&names, true);
            if !hidden.is_empty() {
                let names: Vec<String> = hidden.iter().map(|(n, _)| n.clone()).collect();
                let n = mcp::hide_tools(&mut message, &names);
                let policy = self.shared.policy();
                let mut rules: Vec<usize> = hidden.iter().map(|(_, r)| *r).collect();
                rules.sort_unstable();
                rules.dedup();
                let fired: Vec<_> = rules
                    .iter()
                    .map(|&r| eval::fired(policy, r, false))
                    .collect();
                self.audit.add_fired(&fired);
                if let Some(rec) = self.audit.mcp.as_mut() {
                    rec.hidden_tools += n as u64;
                }
            }
        }
        // The response to this `tools/call`, and anything else shaped like a tool result
        // (a server could answer on another stream): the `tool_result` rules read it.
        let tool_result = (ours && matches!(kind, Kind::ToolsCall { .. }))
            || message.pointer("/result/content").is_some();
        if tool_result && let Some(view) = mcp::tool_result_view(&message) {
            let id = message.get("id").cloned().unwrap_or(Json::Null);
            match self.mcp_result(&id, view, &message) {
                ResultDecision::Replace(m) => return Some(m),
                ResultDecision::Rewrite(m) => message = m,
                ResultDecision::Keep => {}
            }
        }
        let bytes = serde_json::to_vec(&message).ok()?;
        let ctx = self.reply_ctx();
        match stream::rewrite_reply_json(&bytes, &ctx) {
            Ok(rw) => {
                let counts = rw.redacted.clone();
                let out = rw
                    .body
                    .and_then(|b| serde_json::from_slice(&b).ok())
                    .unwrap_or(message);
                // Counted, and the response `redact` rules cited, when the record closes.
                if let Some(state) = self.mcp.as_mut() {
                    for (d, n) in counts {
                        *state.redacted.entry(d).or_default() += n;
                    }
                }
                Some(out)
            }
            Err(_) => Some(message),
        }
    }

    /// The `tool_result` rules on one `tools/call` result.
    fn mcp_result(&mut self, id: &Json, view: Json, message: &Json) -> ResultDecision {
        let shared = self.shared.clone();
        let policy = shared.policy();
        let rules: Vec<usize> = policy
            .rules
            .iter()
            .enumerate()
            .filter(|(_, r)| r.phase == Phase::Request && mcp::reads_tool_results(&r.condition))
            .map(|(i, _)| i)
            .collect();
        if rules.is_empty() {
            return ResultDecision::Keep;
        }
        let request = crate::request::Request {
            body: Some(view),
            ..self.request.clone()
        };
        let decision = shared.engine.evaluate(
            &request,
            self.identity.clone(),
            &Facts::default(),
            Phase::Request,
            Some(&rules),
        );
        self.log_would_have(&decision);
        self.audit.add_fired(&decision.fired);
        if let Verdict::Deny {
            message, clause, ..
        } = &decision.verdict
        {
            self.audit.outcome = "denied".into();
            let data = serde_json::json!({"type": "policy_violation", "clause": clause});
            return ResultDecision::Replace(mcp::error_response(id, mcp::DENIED, message, data));
        }
        let t = eval::Transforms::of(policy, &decision);
        if t.tokenise.is_empty() && t.redact.is_empty() {
            return ResultDecision::Keep;
        }
        if self.vault.is_empty() {
            self.vault = Vault::new(tokenise::nonce(
                self.request_id.as_bytes(),
                self.now_nanos,
                shared.next_salt(),
            ));
        }
        let Ok(bytes) = serde_json::to_vec(message) else {
            return ResultDecision::Keep;
        };
        match tokenise::rewrite_request(
            &bytes,
            &shared.engine.scanner,
            &t.tokenise,
            &t.redact,
            &mut self.vault,
        ) {
            Ok(rw) => {
                self.tally(&rw.tallies);
                match rw.body.and_then(|b| serde_json::from_slice(&b).ok()) {
                    Some(m) => ResultDecision::Rewrite(m),
                    None => ResultDecision::Keep,
                }
            }
            Err(_) => {
                self.audit.outcome = "error".into();
                ResultDecision::Replace(mcp::error_response(
                    id,
                    mcp::GATEWAY_ERROR,
                    "the tool result could not be checked",
                    Json::Null,
                ))
            }
        }
    }
}

/// What the `tool_result` rules make of one result.
enum ResultDecision {
    /// Unchanged.
    Keep,
    /// Tokenised or redacted.
    Rewrite(Json),
    /// Replaced (a deny's JSON-RPC error): sent as is.
    Replace(Json),
}

/// The held entry's `content_type` for an MCP call: released by forwarding the call,
/// not by answering a stored reply.
pub(super) const MCP_CALL: &str = "application/vnd.writ.mcp-call";
