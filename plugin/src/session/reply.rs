//! The reply side of a session: response rules, oversight and the one handoff per
//! escalation, restoring and redacting the reply, settling the spend reservation, and the
//! end of the request (its one audit record).

use serde_json::Value as Json;

use super::{Effect, Level, MetricKind, Need, Next, OnFail, Session, Side, Stage, Step};
use crate::audit::Tokens;
use crate::eval::{Facts, ReplyView, Transforms, Verdict};
use crate::ir::{self, Phase};
use crate::metrics;
use crate::oversight::{self, Handoff};
use crate::spend::Reservation;
use crate::store::SharedStore;
use crate::stream::{self, ReplyKind, ReplyRewriter};
use crate::usage::{self, SseUsage, Usage};
use crate::wire::Reply;

impl Session {
    /// Whether the adapter should read the reply headers at all: only for a forwarded
    /// request (a local reply passes through untouched).
    pub fn wants_reply_headers(&self) -> bool {
        self.stage == Stage::Forwarded
    }

    /// The reply headers of a forwarded request (`end_of_stream`: the reply has no body).
    pub fn on_response_headers(
        &mut self,
        headers: Vec<(String, String)>,
        end_of_stream: bool,
        store: &dyn SharedStore,
    ) -> Step {
        if self.stage != Stage::Forwarded {
            return self.step(Next::Continue);
        }
        let shared = self.shared.clone();
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
        if self.mcp.is_some() {
            return self.mcp_reply_headers(end_of_stream);
        }
        if let Some(step) = self.fallback_on_reply(store) {
            return step;
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
            let ctx = self.reply_ctx();
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
        for (name, value) in std::mem::take(&mut self.rate_headers) {
            self.out.push(Effect::SetHeader {
                side: Side::Response,
                name: name.to_string(),
                value,
                on_fail: OnFail::Log("writ: the host refused a rate-limit header"),
            });
        }
        if self.reply_kind == ReplyKind::EventStream && self.reads_usage() {
            self.sse_usage = Some(SseUsage::new());
        }
        self.buffering = (self.reply_kind == ReplyKind::Json
            && !end_of_stream
            && (active || self.reads_usage() || shared.reads_reply_body))
            || (self.reply_kind == ReplyKind::EventStream
                && !end_of_stream
                && shared.reads_tool_calls
                && self
                    .request
                    .body
                    .as_ref()
                    .is_some_and(crate::tools::offers_tools));
        if self.buffering {
            // Decided at the end of the body, where the headers can still change.
            return self.step(Next::Pause);
        }
        if let Some(step) = self.respond(None, &[], store) {
            return step;
        }
        // With an audit sink only the end of the reply is held, so the client must not be
        // able to tell the end from the length: without it, the last byte can pass before
        // the (empty) final frame that waits for the sink.
        if active || (self.config.audit_sink.is_some() && !end_of_stream) {
            self.strip_response_length(OnFail::Fail("proxy_remove_header_map_value"));
        }
        self.step(Next::Continue)
    }

    /// What the adapter does with a reply body chunk before [`Session::on_response_body`].
    pub fn reply_body_need(&self, end_of_stream: bool) -> Need {
        if self.stage != Stage::Forwarded {
            return Need::Pass;
        }
        if self.buffering {
            return if end_of_stream {
                Need::Read
            } else {
                Need::Wait
            };
        }
        let streaming = self.mcp_reads_chunks()
            || self.reply_kind == ReplyKind::EventStream
                && (self.sse_usage.is_some()
                    || self.rewriter.as_ref().is_some_and(|r| r.strip_length()));
        if streaming { Need::Read } else { Need::Pass }
    }

    /// Whether a failure to read the reply body must fail the request (a buffered JSON
    /// reply) or only be logged (a streamed chunk passes on unread).
    pub fn reply_read_is_fatal(&self) -> bool {
        self.buffering
    }

    /// A reply body chunk the adapter read because [`Session::reply_body_need`] said
    /// [`Need::Read`]: the whole buffered JSON body, or one event-stream chunk. A
    /// [`Effect::ReplaceBody`] replaces what was read.
    pub fn on_response_body(
        &mut self,
        chunk: &[u8],
        end_of_stream: bool,
        store: &dyn SharedStore,
    ) -> Step {
        if self.stage != Stage::Forwarded {
            return self.step(Next::Continue);
        }
        if self.buffering {
            if self.mcp.is_some() {
                return self.mcp_json_reply(chunk, store);
            }
            return self.finish_json_reply(chunk, store);
        }
        if self.mcp_reads_chunks() {
            return self.mcp_sse_chunk(chunk, end_of_stream, store);
        }
        if let Some(u) = &mut self.sse_usage {
            u.push(chunk);
        }
        let action = match self.rewriter.take() {
            Some(mut rw) => {
                let ctx = self.reply_ctx();
                let a = rw.on_body(chunk, end_of_stream, &ctx);
                self.rewriter = Some(rw);
                a
            }
            None => stream::BodyAction::Unchanged,
        };
        if let stream::BodyAction::Replace(out) = action {
            self.out.push(Effect::ReplaceBody {
                side: Side::Response,
                bytes: out,
                on_fail: OnFail::Log("writ: the host refused a rewritten reply chunk"),
            });
        }
        if end_of_stream {
            let usage = self.sse_usage.take().and_then(SseUsage::finish);
            self.end_of_reply(usage, store);
        }
        self.step(Next::Continue)
    }

    /// Closes the request's books once: an open reservation is charged at the estimate
    /// (a reply came without usage) or released (no reply), then the one audit record is
    /// logged with its alerts. Later calls add nothing.
    pub fn seal(&mut self, store: &dyn SharedStore) -> Vec<Effect> {
        self.close_rate(None, (200..300).contains(&self.response_status), store);
        if self.reservation.as_ref().is_some_and(Reservation::is_open) {
            if (200..300).contains(&self.response_status) {
                // A reply came but carried no usage: charge the estimate, and say so.
                self.settle(None, store);
            } else {
                // No reply (upstream error, client gone): charge nothing.
                self.release(store);
            }
        }
        self.log_audit(store);
        std::mem::take(&mut self.out)
    }

    /// The end of a buffered JSON reply: parse once, decide, restore/redact, settle.
    fn finish_json_reply(&mut self, bytes: &[u8], store: &dyn SharedStore) -> Step {
        self.buffering = false;
        let stream = self.reply_kind == ReplyKind::EventStream;
        let json: Option<Json> = if stream {
            None
        } else {
            serde_json::from_slice(bytes).ok()
        };
        let calls = if stream {
            crate::tools::calls_from_sse(bytes)
        } else {
            json.as_ref()
                .map(crate::tools::calls_from_json)
                .unwrap_or_default()
        };
        if let Some(step) = self.respond(json.as_ref(), &calls, store) {
            return step;
        }
        let action = match self.rewriter.take() {
            Some(mut rw) => {
                let ctx = self.reply_ctx();
                let a = rw.on_body(bytes, true, &ctx);
                self.rewriter = Some(rw);
                a
            }
            None => stream::BodyAction::Unchanged,
        };
        let usage = if stream {
            let mut u = SseUsage::new();
            u.push(bytes);
            u.finish()
        } else {
            json.as_ref().and_then(usage::usage_from_json)
        };
        if let Some(mut held) = self.pending_hold.take() {
            // The reply the client would have received is what a reviewer approves.
            let out = match &action {
                stream::BodyAction::Replace(out) => out.clone(),
                _ => bytes.to_vec(),
            };
            held.content_type = if stream {
                "text/event-stream".into()
            } else {
                "application/json".into()
            };
            held.body = String::from_utf8_lossy(&out).into_owned();
            self.sse_usage = None;
            self.end_of_reply(usage, store);
            return match crate::approval::put(store, &held) {
                Ok(()) => {
                    self.audit.outcome = "pending_approval".into();
                    self.reply(&Reply {
                        status: crate::approval::PENDING_STATUS,
                        body: crate::approval::pending_body(&held),
                    })
                }
                Err(why) => {
                    self.log(Level::Error, format!("writ: {why} (failing closed)"));
                    self.audit.outcome = "error".into();
                    self.reply(&Reply::engine_error(
                        "the held tool call could not be stored; it was not sent",
                        "approval_unavailable",
                    ))
                }
            };
        }
        match action {
            stream::BodyAction::Replace(out) => {
                let on_fail = OnFail::Fail("proxy_set_buffer_bytes");
                self.strip_response_length(on_fail);
                self.out.push(Effect::ReplaceBody {
                    side: Side::Response,
                    bytes: out,
                    on_fail,
                });
            }
            stream::BodyAction::Fail(why) => {
                return self.reply(&Reply {
                    status: 502,
                    body: crate::wire::error_body(why, "engine_error", "unredactable_reply"),
                });
            }
            stream::BodyAction::Unchanged | stream::BodyAction::Buffer => {}
        }
        self.sse_usage = None;
        self.end_of_reply(usage, store);
        self.step(Next::Continue)
    }

    pub(super) fn strip_response_length(&mut self, on_fail: OnFail) {
        for h in stream::LENGTH_HEADERS {
            if self.response_headers.iter().any(|(k, _)| k == h) {
                self.out.push(Effect::RemoveHeader {
                    side: Side::Response,
                    name: h.to_string(),
                    on_fail,
                });
            }
        }
    }

    /// The response phase on what is known: rules, oversight, escalation. Returns a step
    /// when it answered locally.
    fn respond(
        &mut self,
        body: Option<&Json>,
        calls: &[crate::tools::ToolCall],
        store: &dyn SharedStore,
    ) -> Option<Step> {
        let shared = self.shared.clone();
        let policy = shared.policy();
        // A copy, so the facts stay usable while the session records what they decided.
        let response_headers = self.response_headers.clone();
        let reply = ReplyView {
            status: self.response_status,
            headers: &response_headers,
            body,
        };
        let facts = Facts {
            spend: None,
            rate: None,
            reply: Some(reply),
            tool_calls: calls,
        };
        let decision = shared.engine.evaluate(
            &self.request,
            self.identity.clone(),
            &facts,
            Phase::Response,
            Some(&shared.response_rules),
        );
        self.log_would_have(&decision);
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
        if let Some((rule, queue, reason)) = &t.hold {
            let matched = crate::eval::matching_tool_items(
                policy,
                &shared.engine.scanner,
                &self.request,
                &self.identity,
                &facts,
                *rule,
            );
            self.pending_hold = Some(crate::approval::Held {
                state: crate::approval::HoldState::Pending,
                review_id: oversight::review_id(&self.request_id),
                workflow: self.workflow_name(),
                rule: policy.rule_id(*rule),
                clause: policy
                    .rules
                    .get(*rule)
                    .map(|r| r.clause.clone())
                    .unwrap_or_default(),
                queue: queue.clone(),
                reason: reason.clone(),
                tool_calls: matched
                    .iter()
                    .filter_map(|&i| calls.get(i))
                    .map(|c| crate::approval::HeldCall {
                        id: c.id.clone(),
                        name: c.name.clone(),
                    })
                    .collect(),
                request_sha256: crate::approval::request_digest(&self.request_as_sent),
                content_type: String::new(),
                body: String::new(),
                held_at: crate::calendar::rfc3339(self.now_nanos as i64),
                decided_at: None,
                decided_by: None,
            });
        }
        let by_rule = t
            .hold
            .clone()
            .or(t.escalate)
            .or_else(|| self.transforms.escalate.clone());
        // Who escalates, and why: a rule (this phase's, else the request phase's), else
        // the workflow's oversight mode on a successful reply. One handoff is built from
        // that, whichever it is.
        let escalation = match (by_rule, workflow) {
            (Some((rule, queue, reason)), _) => {
                let r = policy.rules.get(rule);
                Some((
                    r.map(|r| r.title.clone()).unwrap_or_default(),
                    r.map(|r| r.clause.clone()).unwrap_or_default(),
                    reason,
                    queue,
                    confidence.as_ref().ok().copied(),
                ))
            }
            (None, Some(wf)) if success => {
                oversight::decide(&wf.oversight, &confidence, &self.request_id).map(|e| {
                    (
                        format!("oversight {}", oversight_name(&wf.oversight)),
                        String::new(),
                        e.reason,
                        shared.default_queue.clone(),
                        e.confidence,
                    )
                })
            }
            _ => None,
        };
        let handoff = escalation.map(|(rule, clause, reason, queue, confidence)| Handoff {
            rule,
            clause,
            reason,
            confidence,
            request_id: self.request_id.clone(),
            workflow: workflow.map(|w| w.name.clone()),
            review_id: oversight::review_id(&self.request_id),
            queue,
            model: self.audit.model_used.clone(),
            pii: self.audit.pii.clone(),
            status: self.response_status,
            output: None,
        });
        let escalated = handoff.is_some();
        if let Some(mut h) = handoff {
            if workflow.is_some_and(|w| w.handoff_output) {
                h.output = body.and_then(|b| {
                    oversight::reply_output(b, &shared.engine.scanner, &policy.detectors)
                });
            }
            self.remember_escalation(store, &h.review_id);
            self.escalate(h);
        }
        if success && let Some(wf) = workflow {
            let fleet = self.config.shared.is_some();
            match oversight::record_outcome_with(
                store,
                &wf.name,
                escalated,
                wf.assumed_verification_rate,
                oversight::DriftConfig::default(),
                (self.now_nanos / 1_000_000_000) as i64,
                |key| {
                    if fleet {
                        crate::fleet::counters::others_rate(store, key)
                    } else {
                        oversight::RateCounts::default()
                    }
                },
            ) {
                Ok((counts, alert)) => {
                    let labels = [("workflow", wf.name.as_str())];
                    self.out.push(Effect::Set {
                        name: metrics::stat_name(metrics::VERIFICATION_RATE.name, &labels),
                        value: metrics::ppm(counts.rate()),
                    });
                    if fleet {
                        self.count_for_fleet(
                            store,
                            &oversight::rate_key(
                                &wf.name,
                                oversight::DriftConfig::default().window,
                                (self.now_nanos / 1_000_000_000) as i64,
                            ),
                        );
                    }
                    if let Some(a) = alert {
                        let rec = a.audit_record(policy, (self.clock)() as i64);
                        if fleet {
                            // Fired once for the fleet: the tick claims it in the store.
                            let payload =
                                self.config.alert_sink.is_some().then(|| a.payload(policy));
                            let alert = crate::fleet::counters::Proposed {
                                id: format!("drift/{}", a.key),
                                lines: vec![rec.log_line()],
                                payload,
                                counters: vec![metrics::stat_name(
                                    metrics::DRIFT_ALERTS.name,
                                    &labels,
                                )],
                            };
                            self.propose_for_fleet(store, alert);
                            return None;
                        }
                        self.alert_lines.push(rec.log_line());
                        self.add(
                            MetricKind::Counter,
                            metrics::stat_name(metrics::DRIFT_ALERTS.name, &labels),
                            1,
                        );
                        self.callout(self.config.alert_sink.clone(), a.payload(policy));
                    }
                }
                Err(e) => self.log(
                    Level::Error,
                    format!("writ: could not count the verification rate: {e}"),
                ),
            }
        }
        None
    }

    /// Carries out one escalation: review headers on the reply, the escalation counter,
    /// the record's escalation, and the handoff posted to the review queue.
    pub(super) fn escalate(&mut self, h: Handoff) {
        for (name, value) in h.headers() {
            self.out.push(Effect::SetHeader {
                side: Side::Response,
                name: name.to_string(),
                value,
                on_fail: OnFail::Log("writ: the host refused a review header"),
            });
        }
        let workflow =
            metrics::workflow_label(self.shared.policy(), self.audit.workflow.as_deref());
        let labels = [("workflow", workflow), ("queue", h.queue.as_str())];
        let name = metrics::stat_name(metrics::ESCALATIONS.name, &labels);
        self.add(MetricKind::Counter, name, 1);
        self.audit.escalation = Some(h.audit());
        self.callout(self.config.review_queue.clone(), h.payload());
    }

    /// At the end of a reply: a reply that reported usage, or succeeded, is charged
    /// (from usage, else at the estimate); a failed reply without usage is released.
    pub(super) fn end_of_reply(&mut self, usage: Option<Usage>, store: &dyn SharedStore) {
        self.close_rate(
            usage.as_ref(),
            usage.is_some() || (200..300).contains(&self.response_status),
            store,
        );
        if usage.is_some() || (200..300).contains(&self.response_status) {
            self.settle(usage, store);
        } else {
            self.release(store);
        }
    }

    /// Settles the reservation from `usage` (or the estimate) and handles its alerts.
    fn settle(&mut self, usage: Option<Usage>, store: &dyn SharedStore) {
        let shared = self.shared.clone();
        let policy = shared.policy();
        let Some(held) = self.reservation.as_mut() else {
            return;
        };
        match held.settle(store, usage) {
            Ok(Some(s)) => {
                self.add(
                    MetricKind::Gauge,
                    metrics::RESERVATIONS.name.to_string(),
                    -1,
                );
                self.audit.tokens = Some(Tokens {
                    prompt: s.usage.prompt_tokens,
                    completion: s.usage.completion_tokens,
                    cached: s.usage.cached_tokens,
                });
                self.audit.cost_micros = Some(s.cost_micros);
                self.audit.cost_estimated = s.estimated;
                let workflow = metrics::workflow_label(policy, self.audit.workflow.as_deref());
                let mut labels = vec![("workflow", workflow.to_string())];
                labels.extend(self.identity_labels(store));
                self.add(
                    MetricKind::Counter,
                    metrics::stat_name(metrics::SPEND.name, &labels),
                    s.cost_micros.max(0),
                );
                for alert in &s.alerts {
                    let rec = alert.audit_record(policy, (self.clock)() as i64);
                    self.alert_lines.push(rec.log_line());
                    if let Some(name) = metrics::budget_alert_name(policy, alert) {
                        self.add(MetricKind::Counter, name, 1);
                    }
                    self.callout(self.config.alert_sink.clone(), alert.payload(policy));
                }
            }
            Ok(None) => {}
            Err(e) => {
                self.add(
                    MetricKind::Gauge,
                    metrics::RESERVATIONS.name.to_string(),
                    -1,
                );
                self.log(
                    Level::Error,
                    format!("writ: could not settle a spend reservation: {e}"),
                );
            }
        }
        // In a fleet, the ledgers the tick must write back to the store.
        if self.config.shared.is_some()
            && let Some(r) = &self.reservation
            && let Err(e) = crate::fleet::budget::note_active(store, &r.keys)
        {
            self.log(
                Level::Error,
                format!("writ: could not list a ledger for the fleet store: {e}"),
            );
        }
    }

    /// Whether the reply's token usage is needed: for the spend reservation or a
    /// `tokens(…)` counter.
    pub(super) fn reads_usage(&self) -> bool {
        self.reservation.is_some()
            || self
                .rate
                .as_ref()
                .is_some_and(|h| h.plan.counts(crate::ir::Measure::Tokens))
    }

    /// Closes the request's place on the rate-limit counters once: taken back when the
    /// request never left, settled from `usage` (or the estimate) when a reply came
    /// (`replied`), the token reservation dropped when none did.
    fn close_rate(&mut self, usage: Option<&Usage>, replied: bool, store: &dyn SharedStore) {
        let forwarded = self.forwarded;
        let Some(hold) = self.rate.as_mut().filter(|h| h.is_open()) else {
            return;
        };
        let result = if !forwarded {
            hold.refund(store)
        } else if replied {
            hold.settle(store, usage).map(|_| ())
        } else {
            hold.release(store)
        };
        if let Err(e) = result {
            self.log(
                Level::Error,
                format!("writ: could not close a rate-limit count: {e}"),
            );
        }
    }

    /// Drops the reservation (the request was refused after admission).
    pub(super) fn release(&mut self, store: &dyn SharedStore) {
        self.close_rate(None, false, store);
        if let Some(mut held) = self.reservation.take()
            && held.is_open()
        {
            if let Err(e) = held.release(store) {
                self.log(
                    Level::Error,
                    format!("writ: could not release a spend reservation: {e}"),
                );
            }
            self.add(
                MetricKind::Gauge,
                metrics::RESERVATIONS.name.to_string(),
                -1,
            );
        }
    }

    /// Counts a forwarded request into its workflow's kill points (`kill_point`); the
    /// records of a crossing follow the request's own.
    fn observe_kill_points(&mut self, store: &dyn SharedStore) {
        let shared = self.shared.clone();
        let policy = shared.policy();
        let Some(wf) = self.identity.workflow.and_then(|i| policy.workflows.get(i)) else {
            return;
        };
        if wf.kill_points.is_empty() || self.stage != Stage::Forwarded {
            return;
        }
        let obs = crate::kill_point::Observation {
            replied: (200..300).contains(&self.response_status),
            escalated: self.audit.escalation.is_some(),
            spend_micros: self.audit.cost_micros.unwrap_or(0),
        };
        let fleet = self.config.shared.is_some();
        match crate::kill_point::observe_with(
            store,
            &shared.kill_points,
            policy,
            wf,
            obs,
            (self.clock)() as i64,
            |key| {
                if fleet {
                    crate::fleet::counters::others_totals(store, key)
                } else {
                    crate::kill_point::Totals::default()
                }
            },
        ) {
            Ok(mut effects) => {
                if fleet {
                    self.kill_points_for_fleet(store, wf, &mut effects);
                }
                self.apply(&effects.metrics);
                for mut r in effects.records {
                    r.artifact_sha256 = self.config.artifact_sha256.clone();
                    r.request_id = self.request_id.clone();
                    self.alert_lines.push(r.log_line());
                }
            }
            Err(e) => self.log(
                Level::Error,
                format!("writ: could not count the kill points: {e}"),
            ),
        }
    }

    /// Logs the request's one audit line and counts it.
    fn log_audit(&mut self, store: &dyn SharedStore) {
        if std::mem::replace(&mut self.audit_logged, true) {
            return;
        }
        let shared = self.shared.clone();
        let ending = if self.stage == Stage::Forwarded {
            super::Ending::Forwarded
        } else {
            super::Ending::NotForwarded
        };
        self.observe_kill_points(store);
        let identity_labels = self.identity_labels(store);
        let mut alert_lines = std::mem::take(&mut self.alert_lines);
        alert_lines.extend(self.take_fleet_records(store));
        let end = super::close_request(
            shared.policy(),
            &shared.engine.scanner,
            &mut self.audit,
            self.rewriter
                .as_ref()
                .map(|rw| rw.redacted())
                .or(self.mcp.as_ref().map(|m| &m.redacted)),
            ending,
            &identity_labels,
            alert_lines,
        );
        for name in end.counters {
            self.add(MetricKind::Counter, name, 1);
        }
        // The same records, chained, for Envoy's access log: one line per record.
        let chained = self.config.audit_filter_state.then(|| {
            let records: Vec<serde_json::Value> = end
                .lines
                .iter()
                .filter_map(|l| crate::audit::parse_log_line(l))
                .collect();
            crate::audit_chain::chain(&store, &records).join("\n")
        });
        if self.config.audit_sink.is_some() {
            self.sealed_lines = end.lines.clone();
        }
        for line in end.lines {
            self.log(Level::Info, line);
        }
        if let Some(lines) = chained {
            self.out.push(Effect::AuditFilterState(lines));
        }
    }
}

fn oversight_name(o: &ir::Oversight) -> &'static str {
    match o {
        ir::Oversight::Hitl => "HITL",
        ir::Oversight::Hotl { .. } => "HOTL",
        ir::Oversight::Hic { .. } => "HIC",
    }
}
