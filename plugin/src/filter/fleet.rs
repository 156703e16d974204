//! The fleet store's adapter (wasm32 only): sends the bodies [`crate::fleet`] builds to the
//! configured cluster and hands the answers back. The root context's tick writes settled
//! spend back, polls the kill switch and publishes admin flips; a request waiting for a
//! lease has its [`crate::session::Effect::StoreCall`]s sent and their answers handed to its session
//! (`session/lease.rs` decides). All decisions are in `crate::fleet` and the session.

use std::collections::HashMap;
use std::time::Duration;

use proxy_wasm::traits::Context;
use proxy_wasm::types::{Action, BufferType, LogLevel, MapType};

use super::{Http, Shared, host};
use crate::audit::AuditRecord;
use crate::calendar::rfc3339;
use crate::config::CalloutTarget;
use crate::fleet::budget::{self, Next, Outcome, Sync};
use crate::fleet::{self, FleetConfig, counters, kill, reviews};
use crate::session::Step;
use host::HostStore;

/// Reads a callout's answer: its body when the status was 2xx, else `None`.
fn answer(body_size: usize) -> Option<Vec<u8>> {
    let ok = proxy_wasm::hostcalls::get_map_value(MapType::HttpCallResponseHeaders, ":status")
        .ok()
        .flatten()
        .and_then(|s| s.parse::<u16>().ok())
        .is_some_and(|s| (200..300).contains(&s));
    if !ok {
        return None;
    }
    proxy_wasm::hostcalls::get_buffer(BufferType::HttpCallResponseBody, 0, body_size)
        .ok()
        .flatten()
        .or(Some(Vec::new()))
}

/// Sends `call` to the store from `ctx`; the token, or the host's refusal (logged).
fn send(ctx: &dyn Context, cfg: &FleetConfig, path: &str, body: &[u8]) -> Result<u32, String> {
    let headers = vec![
        (":method", "POST"),
        (":path", path),
        (":authority", cfg.authority.as_str()),
        ("content-type", "application/json"),
    ];
    match ctx.dispatch_http_call(
        &cfg.cluster,
        headers,
        Some(body),
        vec![],
        Duration::from_millis(u64::from(cfg.timeout_ms)),
    ) {
        Ok(t) => Ok(t),
        Err(status) => Err(format!("{status:?}")),
    }
}

/// [`send`], a refusal logged (the root's calls are retried on a later tick).
fn send_logged(ctx: &dyn Context, cfg: &FleetConfig, path: &str, body: &[u8]) -> Option<u32> {
    send(ctx, cfg, path, body)
        .map_err(|why| {
            host::log(
                LogLevel::Error,
                &format!(
                    "writ: call to the fleet store (cluster `{}`) refused by the host ({why})",
                    cfg.cluster
                ),
            );
        })
        .ok()
}

/// Notes the store's reachability, logging each change once per instance.
fn reachable(up: bool) {
    if let Some(line) = fleet::reachability_changed(&HostStore, up) {
        host::log(if up { LogLevel::Info } else { LogLevel::Error }, line);
    }
}

/// This instance's id in the store's records.
fn instance(salt: u64) -> String {
    fleet::instance_id(&HostStore, host::now_nanos(), salt)
}

/// What the root context has in flight with the store.
#[derive(Default)]
pub(super) struct RootFleet {
    calls: HashMap<u32, RootCall>,
    /// The host is stopping: `proxy_done` is called once the give-backs are answered.
    finishing: bool,
}

/// Lost races a give-back at shutdown may retry: the host bounds the wait anyway.
const FINISH_ATTEMPTS: u32 = 3;

enum RootCall {
    Poll,
    Sync(Box<Sync>),
    /// A local kill-switch flip being written (the workflow and the put's body).
    Publish(String, Vec<u8>),
    /// This instance's oversight counters being written (the put's body).
    Counters(Vec<u8>),
    /// The read of every instance's counters.
    CountersPoll,
    /// An alert being claimed for the fleet.
    Claim(Box<counters::Proposed>),
    /// The lease escalations are published under.
    ReviewLease,
    /// An escalation being published (its review id and record).
    Escalation(String, Box<crate::review_verdict::ReviewItem>),
}

impl RootFleet {
    /// One tick: poll the kill switch, write back settled spend (one call per ledger at a
    /// time; nothing new is started while an earlier call is unanswered).
    pub(super) fn tick(&mut self, ctx: &dyn Context, cfg: &FleetConfig, salt: u64) {
        if !self.calls.values().any(|c| matches!(c, RootCall::Poll))
            && let Some(t) = send_logged(ctx, cfg, fleet::etcd::RANGE_PATH, &kill::poll_body())
        {
            self.calls.insert(t, RootCall::Poll);
        }
        for workflow in kill::pending(&HostStore) {
            let busy = self
                .calls
                .values()
                .any(|c| matches!(c, RootCall::Publish(w, _) if *w == workflow));
            if busy {
                continue;
            }
            if let Some(body) = kill::publish_body(&HostStore, &workflow)
                && let Some(t) = send_logged(ctx, cfg, fleet::etcd::PUT_PATH, &body)
            {
                self.calls.insert(t, RootCall::Publish(workflow, body));
            }
        }
        let id = instance(salt);
        self.tick_counters(ctx, cfg, &id);
        self.tick_reviews(ctx, cfg);
        for ledger in self.ledgers_without_sync() {
            let idle_nanos = u64::from(cfg.return_idle_ms) * 1_000_000;
            let step = if cfg.return_idle_ms == 0 {
                budget::ReturnStep::Nothing
            } else {
                budget::return_step(&HostStore, &ledger, host::now_nanos(), idle_nanos)
            };
            let (sync, first) = match step {
                budget::ReturnStep::Give => Sync::give_back(&HostStore, &ledger, &id),
                budget::ReturnStep::Lowered => continue,
                budget::ReturnStep::Nothing if budget::needs_flush(&HostStore, &ledger) => {
                    Sync::start(&HostStore, &ledger, &id, None, 0, None)
                }
                budget::ReturnStep::Nothing => continue,
            };
            self.send_sync(ctx, cfg, sync, first);
        }
    }

    /// The host is stopping (the root context's `on_done`, after requests in flight are
    /// done): every budget's unused lease is given back to the fleet at once and settled
    /// spend written, and waiting records are flushed. Returns whether the root is done
    /// now; else `proxy_done` follows the last answer (`docs/fleet.md`, "Shutdown").
    pub(super) fn finish(&mut self, ctx: &dyn Context, cfg: &FleetConfig, salt: u64) -> bool {
        let id = instance(salt);
        for ledger in self.ledgers_without_sync() {
            budget::lower_at_shutdown(&HostStore, &ledger);
            let (sync, first) = Sync::give_back(&HostStore, &ledger, &id);
            self.send_sync(ctx, cfg, sync.max_attempts(FINISH_ATTEMPTS), first);
        }
        let waiting = self.give_backs();
        if waiting > 0 {
            host::log(
                LogLevel::Info,
                &format!("writ: stopping; giving {waiting} budget leases back to the fleet store"),
            );
        }
        self.finishing = waiting > 0;
        !self.finishing
    }

    /// The budgets this instance spends from with no sync of theirs in flight: the ones a
    /// tick or the shutdown may start one for.
    fn ledgers_without_sync(&self) -> Vec<String> {
        budget::active(&HostStore)
            .into_iter()
            .filter(|ledger| {
                !self
                    .calls
                    .values()
                    .any(|c| matches!(c, RootCall::Sync(s) if s.ledger == *ledger))
            })
            .collect()
    }

    /// Sends a budget sync's first call, and remembers the sync until the store answers.
    fn send_sync(&mut self, ctx: &dyn Context, cfg: &FleetConfig, sync: Sync, first: Next) {
        if let Next::Call(call) = first
            && let Some(t) = send_logged(ctx, cfg, call.path, &call.body)
        {
            self.calls.insert(t, RootCall::Sync(Box::new(sync)));
        }
    }

    /// Budget syncs in flight.
    fn give_backs(&self) -> usize {
        self.calls
            .values()
            .filter(|c| matches!(c, RootCall::Sync(_)))
            .count()
    }

    /// After an answer while stopping: tells the host the root is done once no give-back
    /// is in flight.
    fn finished(&mut self) {
        if self.finishing && self.give_backs() == 0 {
            self.finishing = false;
            host::log(LogLevel::Info, "writ: budget leases given back; done");
            let _ = proxy_wasm::hostcalls::done();
        }
    }

    /// The escalations' part of a tick: publish those this instance remembered since the
    /// last tick (under a lease, granted first when there is none for today).
    fn tick_reviews(&mut self, ctx: &dyn Context, cfg: &FleetConfig) {
        if !reviews::pending(&HostStore) {
            return;
        }
        let now_secs = (host::now_nanos() / 1_000_000_000) as i64;
        let Some(lease) = reviews::lease(&HostStore, now_secs) else {
            if !self
                .calls
                .values()
                .any(|c| matches!(c, RootCall::ReviewLease))
                && let Some(t) = send_logged(ctx, cfg, reviews::LEASE_PATH, &reviews::grant_body())
            {
                self.calls.insert(t, RootCall::ReviewLease);
            }
            return;
        };
        for (review_id, item) in reviews::take(&HostStore, reviews::PER_TICK) {
            let body = reviews::publish_body(&review_id, &item, lease);
            match send_logged(ctx, cfg, fleet::etcd::TXN_PATH, &body) {
                Some(t) => {
                    self.calls
                        .insert(t, RootCall::Escalation(review_id, Box::new(item)));
                }
                None => reviews::requeue(&HostStore, &review_id, &item),
            }
        }
    }

    /// The oversight counters' part of a tick: publish this instance's counters when they
    /// changed, read everyone's, and claim the alerts raised since the last tick.
    fn tick_counters(&mut self, ctx: &dyn Context, cfg: &FleetConfig, id: &str) {
        let busy = |calls: &HashMap<u32, RootCall>, f: fn(&RootCall) -> bool| calls.values().any(f);
        if !busy(&self.calls, |c| matches!(c, RootCall::Counters(_)))
            && let Some(body) = counters::publish_body(&HostStore, id)
            && let Some(t) = send_logged(ctx, cfg, fleet::etcd::PUT_PATH, &body)
        {
            self.calls.insert(t, RootCall::Counters(body));
        }
        if !busy(&self.calls, |c| matches!(c, RootCall::CountersPoll))
            && let Some(t) = send_logged(ctx, cfg, fleet::etcd::RANGE_PATH, &counters::poll_body())
        {
            self.calls.insert(t, RootCall::CountersPoll);
        }
        for alert in counters::take_proposed(&HostStore) {
            match send_logged(
                ctx,
                cfg,
                fleet::etcd::TXN_PATH,
                &counters::claim_body(&alert.id, id),
            ) {
                Some(t) => {
                    self.calls.insert(t, RootCall::Claim(Box::new(alert)));
                }
                None => counters::requeue(&HostStore, alert),
            }
        }
    }

    /// An answer to one of the root's calls.
    #[allow(clippy::too_many_arguments, reason = "the root's one call site")]
    pub(super) fn on_response(
        &mut self,
        ctx: &dyn Context,
        cfg: &FleetConfig,
        shared: Option<&Shared>,
        alert_sink: Option<&CalloutTarget>,
        token: u32,
        body_size: usize,
        salt: u64,
    ) {
        let Some(call) = self.calls.remove(&token) else {
            return;
        };
        let reply = answer(body_size);
        match call {
            RootCall::Poll => match reply
                .as_deref()
                .and_then(|r| kill::apply_poll(&HostStore, r))
            {
                None => reachable(false),
                Some(applied) => {
                    reachable(true);
                    if let Some(shared) = shared {
                        audit_applied(shared, &applied);
                    }
                }
            },
            RootCall::Publish(workflow, body) => {
                let revision = reply.as_deref().and_then(fleet::etcd::put_revision);
                reachable(revision.is_some());
                if let Some(revision) = revision {
                    kill::published(&HostStore, &workflow, &body, revision);
                }
            }
            RootCall::Counters(body) => {
                let stored = reply.as_deref().is_some_and(fleet::etcd::parse_put);
                reachable(stored);
                if stored {
                    counters::published(&HostStore, &body);
                }
            }
            RootCall::CountersPoll => {
                let id = instance(salt);
                let read = reply
                    .as_deref()
                    .and_then(|r| counters::apply_poll(&HostStore, r, &id));
                reachable(read.is_some());
            }
            RootCall::Claim(alert) => match reply.as_deref().and_then(counters::claimed) {
                None => {
                    reachable(false);
                    counters::requeue(&HostStore, *alert);
                }
                Some(won) => {
                    reachable(true);
                    if won {
                        fire(ctx, shared, alert_sink, &alert);
                    }
                }
            },
            RootCall::ReviewLease => {
                let now_secs = (host::now_nanos() / 1_000_000_000) as i64;
                let lease = reply
                    .as_deref()
                    .and_then(|r| reviews::granted(&HostStore, r, now_secs));
                reachable(lease.is_some());
            }
            RootCall::Escalation(review_id, item) => {
                match reply.as_deref().and_then(reviews::published) {
                    Some(_) => reachable(true),
                    None => {
                        // Unanswered, or refused (a lease the store no longer has): a
                        // fresh lease and another try on a later tick.
                        reviews::forget_lease(&HostStore);
                        reviews::requeue(&HostStore, &review_id, &item);
                    }
                }
            }
            RootCall::Sync(mut sync) => match sync.on_reply(&HostStore, reply.as_deref()) {
                Next::Call(c) => {
                    if let Some(t) = send_logged(ctx, cfg, c.path, &c.body) {
                        self.calls.insert(t, RootCall::Sync(sync));
                    }
                }
                Next::Done(outcome) => reachable(outcome != Outcome::Unreachable),
            },
        }
        self.finished();
    }
}

/// Writes the audit records the root context queued (a fleet-applied kill switch, a
/// claimed alert) on the tick, so they appear within one poll period even with no
/// traffic: to the log (which `writ serve` appends to its `--audit-log`) and to the audit
/// sink. Records bound for Envoy's access-log file (`filter_state`) can only be written
/// by a stream, so there they stay queued for the next request's (`docs/fleet.md`).
pub(super) fn flush_records(ctx: &dyn Context, sink: Option<&CalloutTarget>, filter_state: bool) {
    if !counters::flush_on_tick(filter_state) {
        return;
    }
    let lines = counters::take_records(&HostStore);
    if lines.is_empty() {
        return;
    }
    for line in &lines {
        host::log(LogLevel::Info, line);
    }
    if let Some(target) = sink {
        super::post_json(ctx, target, lines.join("\n").as_bytes());
    }
}

/// This instance claimed an alert for the fleet: its records join the audit stream (with
/// the next request's), its counters count, and the alert sink is called.
fn fire(
    ctx: &dyn Context,
    shared: Option<&Shared>,
    alert_sink: Option<&CalloutTarget>,
    alert: &counters::Proposed,
) {
    host::log(
        LogLevel::Info,
        &format!("writ: fleet alert `{}` claimed by this instance", alert.id),
    );
    if let Err(e) = counters::queue_records(&HostStore, &alert.lines) {
        host::log(
            LogLevel::Error,
            &format!("writ: could not queue the fleet alert's records: {e}"),
        );
        for line in &alert.lines {
            host::log(LogLevel::Info, line);
        }
    }
    if let Some(shared) = shared {
        for name in &alert.counters {
            shared.count(host::COUNTER, name, 1);
        }
    }
    if let (Some(target), Some(body)) = (alert_sink, alert.payload.as_deref()) {
        super::post_json(ctx, target, body);
    }
}

/// Audits (and shows in the gauges) each switch the poll applied on this instance: the
/// record joins the audit stream with the next request's records (the `--audit-log` file,
/// the audit sink), as a flip sent to this instance's own admin path does.
fn audit_applied(shared: &Shared, applied: &[kill::Applied]) {
    let policy = shared.policy();
    for a in applied {
        let now = host::now_nanos() as i64;
        let rec = AuditRecord {
            event: "kill_switch".into(),
            time: rfc3339(now),
            workflow: Some(a.workflow.clone()),
            user: a.state.as_ref().map(|s| s.by.clone()),
            policy: policy.name.clone(),
            policy_version: policy.version.clone(),
            source_sha256: policy.source_sha256.clone(),
            status: 200,
            outcome: if a.stopped { "stopped" } else { "resumed" }.into(),
            detail: Some(format!(
                "applied from the fleet store (revision {}){}",
                a.revision,
                a.state
                    .as_ref()
                    .map(|s| format!(": {}", s.reason))
                    .unwrap_or_default()
            )),
            ..AuditRecord::default()
        };
        if let Err(e) = counters::queue_records(&HostStore, &[rec.log_line()]) {
            // Not lost: the application log still has it.
            host::log(
                LogLevel::Error,
                &format!("writ: could not queue the kill switch's record: {e}"),
            );
            host::log(LogLevel::Info, &rec.log_line());
        } else {
            host::log(
                LogLevel::Info,
                &format!(
                    "writ: fleet kill switch for `{}` applied (revision {}); its record follows the next request's",
                    a.workflow, a.revision
                ),
            );
        }
        for (name, stopped) in crate::metrics::kill_switch_gauges(policy, &HostStore) {
            shared.gauge(&name, stopped);
        }
    }
}

impl Http {
    /// Sends a paused request's [`crate::session::Effect::StoreCall`]; `Some` with the session's next step
    /// when the host refused to send it (the session decides without the store).
    pub(super) fn store_call(&mut self, path: &str, body: &[u8]) -> Option<Step> {
        let Some(cfg) = self.fleet.clone() else {
            return self
                .session
                .as_mut()
                .map(|s| s.on_store_unreachable("no fleet store configured", &HostStore));
        };
        match send(self, &cfg, path, body) {
            Ok(token) => {
                self.store_token = Some(token);
                None
            }
            Err(why) => self
                .session
                .as_mut()
                .map(|s| s.on_store_unreachable(&why, &HostStore)),
        }
    }

    /// The store answered the paused request's call: the session asks again or decides;
    /// a decision to go on resumes the request.
    pub(super) fn on_store_answer(&mut self, body_size: usize) {
        let reply = answer(body_size);
        let Some(session) = self.session.as_mut() else {
            return;
        };
        let step = session.on_store_answer(reply.as_deref(), &HostStore);
        if self.apply(step, self.body_len) == Action::Continue
            && proxy_wasm::hostcalls::resume_http_request().is_err()
        {
            host::log(
                LogLevel::Error,
                "writ: the host refused to resume the request",
            );
        }
    }
}
