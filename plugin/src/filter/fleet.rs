//! The fleet store's adapter (wasm32 only): sends the bodies [`crate::fleet`] builds to the
//! configured cluster and hands the answers back. The root context's tick writes settled
//! spend back and polls the kill switch; a request whose instance holds too little budget
//! waits for one lease; an admin flip is published. All decisions are in `crate::fleet`.

use std::collections::HashMap;
use std::time::Duration;

use proxy_wasm::traits::Context;
use proxy_wasm::types::{Action, BufferType, LogLevel, MapType};

use super::{Http, Shared, host};
use crate::audit::AuditRecord;
use crate::calendar::rfc3339;
use crate::decide::RequestPhase;
use crate::fleet::budget::{self, Leased, Next, Outcome, Sync};
use crate::fleet::{self, FleetConfig, kill};
use crate::spend::Admission;
use host::HostStore;

/// How many leases one request may wait for (one per capped ledger it is charged to).
const MAX_LEASE_ROUNDS: u8 = 3;
/// Calls to the store one request may wait for in all: under `writ serve`'s bound of 16
/// callout rounds per step.
const CALL_BUDGET: u8 = 14;

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

/// Sends `call` to the store from `ctx`; the token, or `None` when the host refused.
fn send(ctx: &dyn Context, cfg: &FleetConfig, path: &str, body: &[u8]) -> Option<u32> {
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
        Ok(t) => Some(t),
        Err(status) => {
            host::log(
                LogLevel::Error,
                &format!(
                    "writ: call to the fleet store (cluster `{}`) refused by the host ({status:?})",
                    cfg.cluster
                ),
            );
            None
        }
    }
}

/// Notes the store's reachability, logging each change once per instance.
fn reachable(up: bool) {
    if fleet::set_down(&HostStore, !up) {
        let msg = if up {
            "writ: the fleet store is reachable again"
        } else {
            "writ: the fleet store is unreachable; budgets fail closed beyond what this instance holds, the kill switch keeps its last known state"
        };
        host::log(if up { LogLevel::Info } else { LogLevel::Error }, msg);
    }
}

/// How long a leader may hold a ledger: its calls' timeout, a few times over.
fn lead_ttl(cfg: &FleetConfig) -> u64 {
    u64::from(cfg.timeout_ms) * 3 * 1_000_000
}

fn instance(salt: u64) -> String {
    fleet::instance_id(&HostStore, host::now_nanos(), salt)
}

/// What the root context has in flight with the store.
#[derive(Default)]
pub(super) struct RootFleet {
    calls: HashMap<u32, RootCall>,
}

enum RootCall {
    Poll,
    Sync(Box<Sync>),
    /// A local kill-switch flip being written (the workflow and the put's body).
    Publish(String, Vec<u8>),
}

impl RootFleet {
    /// One tick: poll the kill switch, write back settled spend (one call per ledger at a
    /// time; nothing new is started while an earlier call is unanswered).
    pub(super) fn tick(&mut self, ctx: &dyn Context, cfg: &FleetConfig, salt: u64) {
        if !self.calls.values().any(|c| matches!(c, RootCall::Poll))
            && let Some(t) = send(ctx, cfg, fleet::etcd::RANGE_PATH, &kill::poll_body())
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
                && let Some(t) = send(ctx, cfg, fleet::etcd::PUT_PATH, &body)
            {
                self.calls.insert(t, RootCall::Publish(workflow, body));
            }
        }
        let id = instance(salt);
        for ledger in budget::active(&HostStore) {
            let busy = self
                .calls
                .values()
                .any(|c| matches!(c, RootCall::Sync(s) if s.ledger == ledger));
            if busy || !budget::needs_flush(&HostStore, &ledger) {
                continue;
            }
            let (sync, first) = Sync::start(&HostStore, &ledger, &id, None, 0, None);
            if let Next::Call(call) = first
                && let Some(t) = send(ctx, cfg, call.path, &call.body)
            {
                self.calls.insert(t, RootCall::Sync(Box::new(sync)));
            }
        }
    }

    /// An answer to one of the root's calls.
    pub(super) fn on_response(
        &mut self,
        ctx: &dyn Context,
        cfg: &FleetConfig,
        shared: Option<&Shared>,
        token: u32,
        body_size: usize,
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
                let stored = reply.as_deref().is_some_and(fleet::etcd::parse_put);
                reachable(stored);
                if stored {
                    kill::published(&HostStore, &workflow, &body);
                }
            }
            RootCall::Sync(mut sync) => match sync.on_reply(&HostStore, reply.as_deref()) {
                Next::Call(c) => {
                    if let Some(t) = send(ctx, cfg, c.path, &c.body) {
                        self.calls.insert(t, RootCall::Sync(sync));
                    }
                }
                Next::Done(outcome) => reachable(outcome != Outcome::Unreachable),
            },
        }
    }
}

/// Audits (and shows in the gauges) each switch the poll applied on this instance.
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
        host::log(LogLevel::Info, &rec.log_line());
        for (name, stopped) in crate::metrics::kill_switch_gauges(policy, &HostStore) {
            shared.gauge(&name, stopped);
        }
    }
}

/// A request waiting for a lease.
pub(super) struct LeaseWait {
    token: u32,
    step: WaitStep,
    ledger: String,
    /// What the instance must be able to admit up to for this request to fit.
    needed: i64,
    body: Option<(Vec<u8>, usize)>,
}

enum WaitStep {
    /// This request leases for the instance.
    Lead(Box<Sync>),
    /// Another request of the instance is leasing: this one reads the record.
    Follow,
}

/// The request phase as [`Http::decide`] uses it.
pub(super) enum Phase {
    Ready(Box<RequestPhase>),
    /// A lease was asked for; the request resumes when it is answered.
    Waiting,
    /// Answered locally (the store is unreachable and the budget fails closed).
    Answered(Action),
}

impl Http {
    /// The request phase, leased when the instance is in a fleet: caps are lowered to the
    /// instance's grant; a refusal on a lowered cap asks the store for a slice and waits
    /// (once per ledger); a refusal after that, with the store down, fails closed (503).
    pub(super) fn fleet_request_phase(
        &mut self,
        shared: &Shared,
        body: &Option<(Vec<u8>, usize)>,
    ) -> Phase {
        let secs = (self.now_nanos / 1_000_000_000) as i64;
        let Some(cfg) = self.config.shared.clone() else {
            return Phase::Ready(Box::new(crate::decide::request_phase(
                &shared.engine,
                &self.request,
                self.identity.clone(),
                &HostStore,
                secs,
            )));
        };
        let down = fleet::is_down(&HostStore);
        let allowance =
            (down && cfg.local_allowance_micros > 0).then_some(cfg.local_allowance_micros);
        let mut leased: Vec<Leased> = Vec::new();
        let phase = crate::decide::request_phase_with(
            &shared.engine,
            &self.request,
            self.identity.clone(),
            &HostStore,
            secs,
            &mut |plan| {
                leased = budget::lease_caps(&HostStore, &mut plan.keys, allowance)?;
                Ok(())
            },
        );
        let Some(outcome) = phase.spend.as_ref() else {
            return Phase::Ready(Box::new(phase));
        };
        match &outcome.admission {
            Admission::Admit { totals } => {
                // Beyond the grant on the allowance: marked in the audit record.
                self.audit.degraded = allowance.is_some_and(|a| {
                    leased.iter().any(|l| {
                        totals
                            .get(l.key)
                            .is_some_and(|t| *t > l.local_cap.saturating_sub(a))
                    })
                });
                Phase::Ready(Box::new(phase))
            }
            Admission::Deny {
                key,
                current,
                limit,
                ..
            } => {
                let Some(l) = leased.iter().find(|l| l.key == *key) else {
                    return Phase::Ready(Box::new(phase)); // the policy's own cap: a real deny
                };
                if self.lease_rounds >= MAX_LEASE_ROUNDS {
                    if down || self.lease_contended {
                        return Phase::Answered(self.store_unreachable(shared, &phase));
                    }
                    return Phase::Ready(Box::new(phase));
                }
                self.lease_rounds += 1;
                let needed = current.saturating_add(outcome.estimate);
                let want = cfg.slice_micros.max(needed.saturating_sub(*limit));
                let mut wait = LeaseWait {
                    token: 0,
                    step: WaitStep::Follow,
                    ledger: l.ledger.clone(),
                    needed,
                    body: body.clone(),
                };
                let call =
                    if budget::try_lead(&HostStore, &l.ledger, host::now_nanos(), lead_ttl(&cfg)) {
                        let id = instance(shared.next_salt());
                        let (sync, first) =
                            Sync::start(&HostStore, &l.ledger, &id, Some(l.cap), want, None);
                        match first {
                            Next::Call(call) => {
                                wait.step = WaitStep::Lead(Box::new(sync.until_local_cap(needed)));
                                call
                            }
                            // No room in the cap as last seen: the budget's own answer.
                            Next::Done(_) => {
                                budget::end_lead(&HostStore, &l.ledger);
                                return Phase::Ready(Box::new(phase));
                            }
                        }
                    } else {
                        budget::read_call(&l.ledger)
                    };
                match self.store_call(&cfg, call) {
                    Some(token) => {
                        wait.token = token;
                        self.lease_wait = Some(wait);
                        Phase::Waiting
                    }
                    None => {
                        if matches!(wait.step, WaitStep::Lead(_)) {
                            budget::end_lead(&HostStore, &l.ledger);
                        }
                        Phase::Answered(self.store_unreachable(shared, &phase))
                    }
                }
            }
        }
    }

    /// Sends one call of this request to the store, within [`CALL_BUDGET`].
    fn store_call(&mut self, cfg: &FleetConfig, call: budget::Call) -> Option<u32> {
        if self.store_calls >= CALL_BUDGET {
            self.lease_contended = true;
            return None;
        }
        self.store_calls += 1;
        send(self, cfg, call.path, &call.body)
    }

    fn store_unreachable(&mut self, shared: &Shared, phase: &RequestPhase) -> Action {
        let id = &phase.decision.identity;
        self.audit.workflow = id
            .workflow
            .and_then(|i| shared.policy().workflows.get(i))
            .map(|w| w.name.clone());
        self.audit.team = id.team.clone();
        self.audit.user = id.user.clone();
        self.audit.outcome = "error".into();
        self.audit.detail = Some(if self.lease_contended {
            "fleet store contended; budget failed closed".into()
        } else {
            "fleet store unreachable; budget failed closed".into()
        });
        let message = if self.lease_contended {
            "the shared budget store is busy and this gateway holds no budget for the request; try again"
        } else {
            "the shared budget store is unreachable and this gateway holds no budget for the request; try again"
        };
        self.reply(&crate::wire::Reply {
            status: 503,
            body: crate::wire::error_body(message, "engine_error", "spend_unavailable"),
        })
    }

    /// An answer to a call this request made to the store; `false` when the token is not
    /// the fleet's.
    pub(super) fn fleet_on_response(&mut self, token: u32, body_size: usize) -> bool {
        if self.lease_wait.as_ref().is_none_or(|w| w.token != token) {
            return false;
        }
        let Some(mut wait) = self.lease_wait.take() else {
            return true;
        };
        let reply = answer(body_size);
        let Some(cfg) = self.config.shared.clone() else {
            return true;
        };
        let next = match &mut wait.step {
            WaitStep::Lead(sync) => match sync.on_reply(&HostStore, reply.as_deref()) {
                Next::Call(c) => Some(c),
                Next::Done(outcome) => {
                    budget::end_lead(&HostStore, &wait.ledger);
                    reachable(outcome != Outcome::Unreachable);
                    self.lease_contended = outcome == Outcome::Contended;
                    None
                }
            },
            WaitStep::Follow => {
                let id = instance(0);
                match budget::learn_read(&HostStore, &wait.ledger, &id, reply.as_deref()) {
                    None => {
                        reachable(false);
                        None
                    }
                    Some(held) if held >= wait.needed => {
                        reachable(true);
                        None
                    }
                    Some(_) => {
                        reachable(true);
                        // Still short: while another request leads, read again; once
                        // the ledger is free, decide again (and lead, with a fresh
                        // estimate) without counting this wait as a lease round.
                        if budget::is_led(&HostStore, &wait.ledger, host::now_nanos()) {
                            Some(budget::read_call(&wait.ledger))
                        } else {
                            self.lease_rounds = self.lease_rounds.saturating_sub(1);
                            None
                        }
                    }
                }
            }
        };
        if let Some(call) = next {
            match self.store_call(&cfg, call) {
                Some(t) => {
                    wait.token = t;
                    self.lease_wait = Some(wait);
                    return true;
                }
                None => {
                    if matches!(wait.step, WaitStep::Lead(_)) {
                        budget::end_lead(&HostStore, &wait.ledger);
                    }
                    if !self.lease_contended {
                        reachable(false);
                    }
                }
            }
        }
        if self.lease_contended {
            // Decide now on what the instance holds; short of it, 503 (retry).
            self.lease_rounds = MAX_LEASE_ROUNDS;
        }
        let Some(shared) = self.shared.clone() else {
            return true;
        };
        if fleet::is_down(&HostStore) {
            // No more waiting: this pass decides on what the instance holds.
            self.lease_rounds = MAX_LEASE_ROUNDS;
        }
        if self.decide(&shared, wait.body) == Action::Continue {
            let _ = proxy_wasm::hostcalls::resume_http_request();
        }
        true
    }

    /// Marks an admin flip of `workflow` for the tick to publish to the store (the tick,
    /// not this stream: the stream ends with its reply, and a flip made while the store is
    /// down must still reach it later).
    pub(super) fn fleet_publish(&self, workflow: Option<&str>) {
        if let (Some(_), Some(w)) = (&self.config.shared, workflow)
            && let Err(e) = kill::mark_pending(&HostStore, w)
        {
            host::log(
                LogLevel::Error,
                &format!("writ: could not queue the kill-switch flip for the fleet store: {e}"),
            );
        }
    }

    /// After a settlement: the ledgers the tick must write back.
    pub(super) fn fleet_settled(&self, keys: &[crate::spend::BudgetKey]) {
        if self.config.shared.is_some()
            && let Err(e) = budget::note_active(&HostStore, keys)
        {
            host::log(
                LogLevel::Error,
                &format!("writ: could not list a ledger for the fleet store: {e}"),
            );
        }
    }
}
