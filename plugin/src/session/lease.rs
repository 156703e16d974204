//! A fleet member's request phase (`docs/fleet.md`): caps are lowered to what the
//! instance leased; a refusal on a lowered cap asks the fleet store for a slice and waits
//! for it as session events ([`Effect::StoreCall`] out, [`Session::on_store_answer`] in),
//! then decides again; with the store down (or too contended) the budget fails closed,
//! 503 `spend_unavailable`. The adapter only sends the call and hands back its answer.

use super::{Effect, Level, Next, Session, Stage, Step};
use crate::decide::RequestPhase;
use crate::fleet::budget::{self, Leased, Next as SyncNext, Outcome, Sync};
use crate::fleet::{self, FleetConfig};
use crate::spend::Admission;
use crate::store::SharedStore;

/// How many leases one request may wait for (one per capped ledger it is charged to).
const MAX_LEASE_ROUNDS: u8 = 3;
/// Calls to the store one request may wait for in all: under `writ serve`'s bound of 16
/// callout rounds per step.
const CALL_BUDGET: u8 = 14;

/// The lease one request waits for, and how far it got.
#[derive(Default)]
pub(super) struct Lease {
    wait: Option<LeaseWait>,
    rounds: u8,
    contended: bool,
    calls: u8,
}

/// A request waiting for the store's answer.
struct LeaseWait {
    step: WaitStep,
    ledger: String,
    /// What the instance must be able to admit up to for this request to fit.
    needed: i64,
    /// The request body to decide again with.
    body: Option<Vec<u8>>,
}

enum WaitStep {
    /// This request leases for the instance.
    Lead(Box<Sync>),
    /// Another request of the instance is leasing: this one reads the record.
    Follow,
}

/// The request phase as [`Session::decide`] uses it.
pub(super) enum Phase {
    Ready(Box<RequestPhase>),
    /// Answered or paused (a store call asked for, or the budget failed closed).
    Step(Step),
}

/// How long a leader may hold a ledger: its calls' timeout, a few times over.
fn lead_ttl(cfg: &FleetConfig) -> u64 {
    u64::from(cfg.timeout_ms) * 3 * 1_000_000
}

impl Session {
    /// The request phase; leased when the configuration names a fleet store.
    pub(super) fn request_phase(&mut self, store: &dyn SharedStore, body: Option<&[u8]>) -> Phase {
        let shared = self.shared.clone();
        let secs = (self.now_nanos / 1_000_000_000) as i64;
        let Some(cfg) = self.config.shared.clone() else {
            return Phase::Ready(Box::new(crate::decide::request_phase(
                &shared.engine,
                &self.request,
                self.identity.clone(),
                store,
                secs,
            )));
        };
        let down = fleet::is_down(store);
        let allowance =
            (down && cfg.local_allowance_micros > 0).then_some(cfg.local_allowance_micros);
        let mut leased: Vec<Leased> = Vec::new();
        let mut phase = crate::decide::request_phase_with(
            &shared.engine,
            &self.request,
            self.identity.clone(),
            store,
            secs,
            &mut |plan| {
                leased = budget::lease_caps(store, &mut plan.keys, allowance)?;
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
                if self.lease.rounds >= MAX_LEASE_ROUNDS {
                    if down || self.lease.contended {
                        return Phase::Step(self.store_unreachable(&mut phase, store));
                    }
                    return Phase::Ready(Box::new(phase));
                }
                self.lease.rounds += 1;
                let needed = current.saturating_add(outcome.estimate);
                let want = cfg.slice_micros.max(needed.saturating_sub(*limit));
                let mut wait = LeaseWait {
                    step: WaitStep::Follow,
                    ledger: l.ledger.clone(),
                    needed,
                    body: body.map(<[u8]>::to_vec),
                };
                let now = (self.clock)();
                let call = if budget::try_lead(store, &l.ledger, now, lead_ttl(&cfg)) {
                    let id = fleet::instance_id(store, now, shared.next_salt());
                    // Once a poll period, a lease the cached record has no room for asks
                    // the store anyway: another instance may have given lease back.
                    let verify = budget::room_check_due(
                        store,
                        &l.ledger,
                        now,
                        u64::from(cfg.poll_ms) * 1_000_000,
                    );
                    let (sync, first) =
                        Sync::start_with(store, &l.ledger, &id, Some(l.cap), want, None, verify);
                    match first {
                        SyncNext::Call(call) => {
                            wait.step = WaitStep::Lead(Box::new(sync.until_local_cap(needed)));
                            call
                        }
                        // No room in the cap as last seen: the budget's own answer.
                        SyncNext::Done(_) => {
                            budget::end_lead(store, &l.ledger);
                            return Phase::Ready(Box::new(phase));
                        }
                    }
                } else {
                    budget::read_call(&l.ledger)
                };
                match self.store_call(call) {
                    Some(effect) => {
                        // Decided again on the answer, which counts the request again.
                        self.refund_rate(&mut phase, store);
                        self.out.push(effect);
                        self.lease.wait = Some(wait);
                        self.stage = Stage::Leasing;
                        Phase::Step(self.step(Next::Pause))
                    }
                    None => {
                        if matches!(wait.step, WaitStep::Lead(_)) {
                            budget::end_lead(store, &l.ledger);
                        }
                        Phase::Step(self.store_unreachable(&mut phase, store))
                    }
                }
            }
        }
    }

    /// One call of this request to the store, within [`CALL_BUDGET`]; `None` past it.
    fn store_call(&mut self, call: budget::Call) -> Option<Effect> {
        if self.lease.calls >= CALL_BUDGET {
            self.lease.contended = true;
            return None;
        }
        self.lease.calls += 1;
        Some(Effect::StoreCall {
            path: call.path,
            body: call.body,
        })
    }

    /// Notes the store's reachability, logging each change once per instance.
    pub(super) fn reachable(&mut self, store: &dyn SharedStore, up: bool) {
        if let Some(line) = fleet::reachability_changed(store, up) {
            self.log(if up { Level::Info } else { Level::Error }, line.into());
        }
    }

    /// The budget fails closed: 503 `spend_unavailable` (retry), audited as an error.
    fn store_unreachable(&mut self, phase: &mut RequestPhase, store: &dyn SharedStore) -> Step {
        self.refund_rate(phase, store);
        let id = &phase.decision.identity;
        self.audit.workflow = id
            .workflow
            .and_then(|i| self.shared.policy().workflows.get(i))
            .map(|w| w.name.clone());
        self.audit.team = id.team.clone();
        self.audit.user = id.user.clone();
        self.audit.outcome = "error".into();
        let (detail, message) = if self.lease.contended {
            (
                "fleet store contended; budget failed closed",
                "the shared budget store is busy and this gateway holds no budget for the request; try again",
            )
        } else {
            (
                "fleet store unreachable; budget failed closed",
                "the shared budget store is unreachable and this gateway holds no budget for the request; try again",
            )
        };
        self.audit.detail = Some(detail.into());
        self.reply(&crate::wire::Reply {
            status: 503,
            body: crate::wire::error_body(message, "engine_error", "spend_unavailable"),
        })
    }

    /// Takes back the rate-limit counts of a request phase that is not used (the request
    /// waits and is decided again, or fails closed).
    fn refund_rate(&mut self, phase: &mut RequestPhase, store: &dyn SharedStore) {
        if let Some(mut hold) = phase.rate_hold.take()
            && hold.is_open()
            && let Err(e) = hold.refund(store)
        {
            self.log(
                Level::Error,
                format!("writ: could not close a rate-limit count: {e}"),
            );
        }
    }

    /// Whether the request waits for the fleet store's answer to an [`Effect::StoreCall`].
    pub fn awaits_store(&self) -> bool {
        self.lease.wait.is_some() || self.verdict_wait.is_some()
    }

    /// The fleet store answered this request's [`Effect::StoreCall`]: `reply` is the body
    /// of a 2xx answer, `None` for anything else (a timeout, an error status). The step
    /// asks for the next call, or decides the request again (its `Continue` resumes the
    /// paused request).
    pub fn on_store_answer(&mut self, reply: Option<&[u8]>, store: &dyn SharedStore) -> Step {
        if self.verdict_wait.is_some() {
            return self.on_verdict_answer(reply, store);
        }
        let Some(mut wait) = self.lease.wait.take() else {
            return self.step(Next::Pause);
        };
        let now = (self.clock)();
        let next = match &mut wait.step {
            WaitStep::Lead(sync) => match sync.on_reply(store, reply) {
                SyncNext::Call(c) => Some(c),
                SyncNext::Done(outcome) => {
                    budget::end_lead(store, &wait.ledger);
                    self.reachable(store, outcome != Outcome::Unreachable);
                    self.lease.contended = outcome == Outcome::Contended;
                    None
                }
            },
            WaitStep::Follow => {
                let id = fleet::instance_id(store, now, 0);
                match budget::learn_read(store, &wait.ledger, &id, reply) {
                    None => {
                        self.reachable(store, false);
                        None
                    }
                    Some(held) if held >= wait.needed => {
                        self.reachable(store, true);
                        None
                    }
                    Some(_) => {
                        self.reachable(store, true);
                        // Still short: while another request leads, read again; once
                        // the ledger is free, decide again (and lead, with a fresh
                        // estimate) without counting this wait as a lease round.
                        if budget::is_led(store, &wait.ledger, now) {
                            Some(budget::read_call(&wait.ledger))
                        } else {
                            self.lease.rounds = self.lease.rounds.saturating_sub(1);
                            None
                        }
                    }
                }
            }
        };
        if let Some(call) = next {
            match self.store_call(call) {
                Some(effect) => {
                    self.out.push(effect);
                    self.lease.wait = Some(wait);
                    return self.step(Next::Pause);
                }
                None => {
                    if matches!(wait.step, WaitStep::Lead(_)) {
                        budget::end_lead(store, &wait.ledger);
                    }
                    if !self.lease.contended {
                        self.reachable(store, false);
                    }
                }
            }
        }
        if self.lease.contended || fleet::is_down(store) {
            // No more waiting: this pass decides on what the instance holds; short of
            // it, 503 (retry).
            self.lease.rounds = MAX_LEASE_ROUNDS;
        }
        self.stage = Stage::Request;
        self.decide(store, wait.body.as_deref())
    }

    /// The host refused to even send this request's store call (`why` from the host): the
    /// store counts as unreachable and the request is decided on what the instance holds.
    pub fn on_store_unreachable(&mut self, why: &str, store: &dyn SharedStore) -> Step {
        let cluster = self
            .config
            .shared
            .as_ref()
            .map(|c| c.cluster.clone())
            .unwrap_or_default();
        self.log(
            Level::Error,
            format!(
                "writ: call to the fleet store (cluster `{cluster}`) refused by the host ({why})"
            ),
        );
        self.on_store_answer(None, store)
    }
}
