//! Leased budgets: each gateway instance leases slices of a budget from the fleet store,
//! admits requests locally against what it holds, and writes its settled spend back.
//!
//! In the store, one record per ledger (the ledger's own key, e.g.
//! `writ/spend/team/billing/month/2026-11`), JSON:
//! `{"instances": {"<id>": {"granted": G, "spent": S}}}`. `spent` is what the instance
//! settled from `usage` (absolute, so writing it twice is harmless), `granted` what it
//! was leased. The fleet's commitment is `Σ max(granted, spent)`; a lease is granted
//! only while the commitment plus the slice stays within the cap, by compare-and-swap on
//! the record's revision. The fleet's ledger is `Σ spent`.
//!
//! On the instance, the local ledger of [`crate::spend`] stays the source of truth for
//! what this instance settled; beside it, shared data holds the instance's grant
//! ([`Grant`], key `writ/fleet/grant/<ledger>`). Admission is the local ledger's own
//! atomic check with the cap lowered to the grant ([`lease_caps`]):
//! `settled + reserved + estimate <= granted`. So no request waits for the store while its instance holds
//! enough; the filter asks for a slice only when one runs out ([`Sync`]), and the root
//! context's tick writes settled spend back.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::etcd::{self, CasReply};
use crate::ir::Micros;
use crate::spend::{self, BudgetKey};
use crate::store::{self, Cursor, SharedStore, Step, StoreError, Stored};

/// One instance's share of a ledger in the store.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Share {
    pub granted: Micros,
    pub spent: Micros,
}

/// A ledger's record in the store.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Record {
    #[serde(default)]
    pub instances: BTreeMap<String, Share>,
}

impl Record {
    /// Settled spend of the whole fleet: the ledger.
    pub fn spent(&self) -> Micros {
        self.instances
            .values()
            .fold(0, |a, s| a.saturating_add(s.spent))
    }

    /// What the fleet may still spend without asking: every instance's grant or, where it
    /// spent more (a reply dearer than its estimate, a degraded allowance), its spend.
    pub fn committed(&self) -> Micros {
        self.instances
            .values()
            .fold(0, |a, s| a.saturating_add(s.granted.max(s.spent)))
    }

    /// Decodes a stored record; `None` for bytes this engine did not write.
    pub fn decode(bytes: &[u8]) -> Option<Record> {
        serde_json::from_slice(bytes).ok()
    }
}

/// The instance's grant on one ledger, in shared data.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Grant {
    /// What the store granted this instance so far (the store's `granted` for it).
    pub granted: Micros,
    /// Settled spend the store has for this instance.
    pub flushed: Micros,
    /// The store revision these numbers come from: an older answer never overwrites a
    /// newer one (answers to different workers arrive in any order).
    pub revision: i64,
}

const GRANT_VERSION: u8 = 1;

impl Stored for Grant {
    fn encode(&self) -> Vec<u8> {
        let mut out = vec![GRANT_VERSION];
        out.extend_from_slice(&self.granted.to_le_bytes());
        out.extend_from_slice(&self.flushed.to_le_bytes());
        out.extend_from_slice(&self.revision.to_le_bytes());
        out
    }
    fn decode(bytes: &[u8]) -> Option<Grant> {
        let mut c = Cursor::new(bytes);
        if c.u8()? != GRANT_VERSION {
            return None;
        }
        let g = Grant {
            granted: c.i64()?,
            flushed: c.i64()?,
            revision: c.i64()?,
        };
        c.is_empty().then_some(g)
    }
}

/// The shared-data key of the instance's grant on `ledger`.
pub fn grant_key(ledger: &str) -> String {
    format!("writ/fleet/grant/{ledger}")
}

/// The shared-data key listing the ledgers this instance settled on (one per line), so
/// the tick knows what to write back.
pub const ACTIVE_KEY: &str = "writ/fleet/active";

/// The instance's grant on `ledger` (zero before the first lease).
pub fn grant(local: &dyn SharedStore, ledger: &str) -> Result<Grant, StoreError> {
    store::read(local, &grant_key(ledger))
}

/// A budget whose cap [`lease_caps`] lowered to the instance's grant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Leased {
    /// Index into the plan's keys.
    pub key: usize,
    pub ledger: String,
    /// The policy's cap.
    pub cap: Micros,
    /// What this instance may admit up to: its grant (plus the allowance while degraded).
    pub local_cap: Micros,
}

/// Lowers each capped key's cap to what this instance holds: its grant, plus `allowance`
/// when the store is unreachable (the policy's bounded local allowance; 0 fails closed).
/// Returns the keys it lowered, so a refusal on one of them is known to mean "lease
/// more", not "budget reached".
pub fn lease_caps(
    local: &dyn SharedStore,
    keys: &mut [BudgetKey],
    allowance: Option<Micros>,
) -> Result<Vec<Leased>, StoreError> {
    let mut out = Vec::new();
    for (i, k) in keys.iter_mut().enumerate() {
        let Some(cap) = k.cap else { continue };
        let g = grant(local, &k.key)?;
        let local_cap = g
            .granted
            .max(g.flushed)
            .saturating_add(allowance.unwrap_or(0).max(0));
        if local_cap < cap {
            k.cap = Some(local_cap);
            out.push(Leased {
                key: i,
                ledger: k.key.clone(),
                cap,
                local_cap,
            });
        }
    }
    Ok(out)
}

/// Adds the ledgers of a settled request to [`ACTIVE_KEY`] (a read when already listed).
pub fn note_active(local: &dyn SharedStore, keys: &[BudgetKey]) -> Result<(), StoreError> {
    for k in keys {
        super::add_line(local, ACTIVE_KEY, &k.key)?;
    }
    Ok(())
}

/// Ledgers listed in [`ACTIVE_KEY`].
pub fn active(local: &dyn SharedStore) -> Vec<String> {
    super::lines(local, ACTIVE_KEY)
}

/// The last record of `ledger` any worker of this instance saw, with its revision, kept
/// in shared data so a sync starts from it and usually wins its first compare-and-swap.
#[derive(Debug, Clone, Default)]
struct Seen(i64, Record);

impl Stored for Seen {
    fn encode(&self) -> Vec<u8> {
        let mut out = self.0.to_le_bytes().to_vec();
        out.extend(serde_json::to_vec(&self.1).unwrap_or_default());
        out
    }
    fn decode(bytes: &[u8]) -> Option<Seen> {
        let (rev, json) = bytes.split_first_chunk::<8>()?;
        Some(Seen(i64::from_le_bytes(*rev), Record::decode(json)?))
    }
}

fn seen_key(ledger: &str) -> String {
    format!("writ/fleet/record/{ledger}")
}

/// The last record of `ledger` this instance saw, and its revision.
pub fn last_seen(local: &dyn SharedStore, ledger: &str) -> Option<(Record, i64)> {
    store::read::<Seen>(local, &seen_key(ledger))
        .ok()
        .filter(|s| s.0 > 0)
        .map(|s| (s.1, s.0))
}

fn remember(local: &dyn SharedStore, ledger: &str, record: &Record, revision: i64) {
    let _ = store::update(local, &seen_key(ledger), |s: &Seen| {
        if s.0 >= revision {
            Step::Keep(())
        } else {
            Step::Write(Seen(revision, record.clone()), ())
        }
    });
}

/// Whether the instance settled more on `ledger` than the store has for it.
pub fn needs_flush(local: &dyn SharedStore, ledger: &str) -> bool {
    let settled = spend::ledger(local, ledger).map_or(0, |l| l.settled);
    grant(local, ledger).is_ok_and(|g| settled > g.flushed)
}

/// What this instance may admit up to on `ledger` from its grant (0 before a lease).
fn held(local: &dyn SharedStore, ledger: &str) -> Micros {
    grant(local, ledger).map_or(0, |g| g.granted.max(g.flushed))
}

/// What this instance has committed on `ledger`: settled plus reserved (in flight).
fn committed_locally(local: &dyn SharedStore, ledger: &str) -> Micros {
    spend::ledger(local, ledger).map_or(0, |l| l.settled.saturating_add(l.reserved))
}

/// Whether a lease that finds no room in the record last seen should ask the store anyway
/// (at most once per `period_nanos` per ledger and instance; [`Sync::start_with`]).
pub fn room_check_due(
    local: &dyn SharedStore,
    ledger: &str,
    now_nanos: u64,
    period_nanos: u64,
) -> bool {
    store::update(
        local,
        &format!("writ/fleet/checked/{ledger}"),
        |t: &Stamp| {
            if t.0 != 0 && now_nanos.saturating_sub(t.0) < period_nanos {
                Step::Keep(false)
            } else {
                Step::Write(Stamp(now_nanos), true)
            }
        },
    )
    .unwrap_or(false)
}

#[derive(Debug, Clone, Copy, Default)]
struct Stamp(u64);

impl Stored for Stamp {
    fn encode(&self) -> Vec<u8> {
        self.0.to_le_bytes().to_vec()
    }
    fn decode(bytes: &[u8]) -> Option<Stamp> {
        Some(Stamp(u64::from_le_bytes(bytes.try_into().ok()?)))
    }
}

/// Lease held on `ledger` beyond what this instance has committed: what it could give
/// back to the fleet.
pub fn unused(local: &dyn SharedStore, ledger: &str) -> Micros {
    let g = grant(local, ledger).unwrap_or_default();
    g.granted
        .saturating_sub(g.flushed.max(committed_locally(local, ledger)))
        .max(0)
}

/// When a ledger's local numbers last changed (settled, reserved, since), in shared data.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Idle(Micros, Micros, u64);

impl Stored for Idle {
    fn encode(&self) -> Vec<u8> {
        let mut out = self.0.to_le_bytes().to_vec();
        out.extend_from_slice(&self.1.to_le_bytes());
        out.extend_from_slice(&self.2.to_le_bytes());
        out
    }
    fn decode(bytes: &[u8]) -> Option<Idle> {
        let mut c = Cursor::new(bytes);
        let i = Idle(c.i64()?, c.i64()?, c.u64()?);
        c.is_empty().then_some(i)
    }
}

fn idle_key(ledger: &str) -> String {
    format!("writ/fleet/idle/{ledger}")
}

fn returning_key(ledger: &str) -> String {
    format!("writ/fleet/returning/{ledger}")
}

/// How long `ledger` has seen no admission or settlement on this instance, as of `now`.
pub fn idle_for(local: &dyn SharedStore, ledger: &str, now_nanos: u64) -> u64 {
    let l = spend::ledger(local, ledger).unwrap_or_default();
    let since = store::update(local, &idle_key(ledger), |i: &Idle| {
        if i.2 != 0 && i.0 == l.settled && i.1 == l.reserved {
            Step::Keep(i.2)
        } else {
            Step::Write(Idle(l.settled, l.reserved, now_nanos), now_nanos)
        }
    })
    .unwrap_or(now_nanos);
    now_nanos.saturating_sub(since)
}

/// What a tick does about returning `ledger`'s unused lease.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReturnStep {
    /// Nothing to return (busy, or nothing unused).
    Nothing,
    /// First step, done locally: the instance's grant was lowered to what it has
    /// committed, so no request of it is admitted on the unused part from now on. The
    /// store still counts it until the next tick.
    Lowered,
    /// Second step, a poll period later (any admission that read the old grant has
    /// reserved by then: a worker reads the grant and reserves in one callback): write the
    /// lower grant to the store ([`Sync::give_back`]).
    Give,
}

/// Returns an idle ledger's unused lease in two ticks, so the fleet's outstanding leases
/// (the underspend bound of `docs/fleet.md`) shrink when an instance stops using a budget,
/// its window included. `idle_nanos`: how long the ledger must have been untouched.
/// Exactly one worker of the instance gets each step (compare-and-swap on shared data).
pub fn return_step(
    local: &dyn SharedStore,
    ledger: &str,
    now_nanos: u64,
    idle_nanos: u64,
) -> ReturnStep {
    let idle = idle_for(local, ledger, now_nanos);
    // The second step waits a while after the first, whichever worker's tick runs it
    // (the workers of an Envoy tick independently): by then every admission that read
    // the old grant has reserved.
    let gap = (idle_nanos / 3).max(100_000_000);
    let lowered = store::update(local, &returning_key(ledger), |f: &Stamp| {
        if f.0 == 0 {
            Step::Keep(None)
        } else if now_nanos.saturating_sub(f.0) >= gap {
            Step::Write(Stamp(0), Some(true))
        } else {
            Step::Keep(Some(false))
        }
    })
    .unwrap_or(Some(false));
    match lowered {
        Some(true) => return ReturnStep::Give,
        Some(false) => return ReturnStep::Nothing,
        None => {}
    }
    if idle < idle_nanos || unused(local, ledger) <= 0 {
        return ReturnStep::Nothing;
    }
    let keep = held(local, ledger).min(
        grant(local, ledger)
            .unwrap_or_default()
            .flushed
            .max(committed_locally(local, ledger)),
    );
    if !lower_grant(local, ledger, keep) {
        return ReturnStep::Nothing;
    }
    let flagged = store::update(local, &returning_key(ledger), |_: &Stamp| {
        Step::Write(Stamp(now_nanos.max(1)), ())
    });
    if flagged.is_ok() {
        ReturnStep::Lowered
    } else {
        ReturnStep::Nothing
    }
}

/// At shutdown, once the host admits no more requests and those in flight are done:
/// lowers `ledger`'s local grant to what the instance has committed (settled plus
/// reserved, at least what the store already has), at once rather than in the two
/// steps of [`return_step`], so that [`Sync::give_back`] returns the rest to the fleet.
/// Returns whether there was anything to lower.
pub fn lower_at_shutdown(local: &dyn SharedStore, ledger: &str) -> bool {
    let g = grant(local, ledger).unwrap_or_default();
    let keep = g.flushed.max(committed_locally(local, ledger));
    lower_grant(local, ledger, keep)
}

/// Lowers `ledger`'s local grant to `keep` with one compare-and-swap; whether it was
/// above `keep` (a lost race or a store error counts as not lowered: the next tick tries
/// again).
fn lower_grant(local: &dyn SharedStore, ledger: &str, keep: Micros) -> bool {
    store::update(local, &grant_key(ledger), |g: &Grant| {
        if g.granted <= keep {
            return Step::Keep(false);
        }
        Step::Write(
            Grant {
                granted: keep,
                ..*g
            },
            true,
        )
    })
    .unwrap_or(false)
}

/// An HTTP call to the store: `POST path` with `body`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Call {
    pub path: &'static str,
    pub body: Vec<u8>,
}

/// How a [`Sync`] ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The store has the instance's spend; `granted` is what the instance may now admit
    /// up to (more than before when a lease was asked and the cap allowed it).
    Synced { granted: Micros, leased: Micros },
    /// The store did not answer, or not as etcd does: nothing changed.
    Unreachable,
    /// Lost the compare-and-swap [`MAX_ATTEMPTS`] times in a row: the store answers, but
    /// nothing changed; the caller decides on what the instance holds.
    Contended,
}

/// The next step of a [`Sync`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Next {
    Call(Call),
    Done(Outcome),
}

/// Lost races a [`Sync`] retries before it reports the store as contended (unreachable).
pub const MAX_ATTEMPTS: u32 = 32;

/// One exchange with the store on one ledger: writes the instance's settled spend and,
/// when `want > 0`, leases a slice of up to `want` within `cap`. Sans-IO: [`Sync::start`]
/// gives the first call, [`Sync::on_reply`] takes each answer (`None`: the call failed)
/// and gives the next call or the outcome, after updating the instance's [`Grant`].
#[derive(Debug, Clone)]
pub struct Sync {
    pub ledger: String,
    instance: String,
    cap: Option<Micros>,
    want: Micros,
    /// The record and revision the next attempt builds on.
    current: Record,
    revision: i64,
    /// The record the last call tried to write.
    proposed: Record,
    attempts: u32,
    max_attempts: u32,
    /// Stop (without writing) once the instance's grant reaches this: another request's
    /// lease on the same instance already covers the one this sync was started for.
    enough: Option<Micros>,
    /// Give back what the instance holds beyond its commitment (an idle ledger's unused
    /// lease) instead of leasing; see [`return_step`].
    give_back: bool,
    /// Ask the store even when the record last seen has no room (see [`Sync::start_with`]).
    verify: bool,
}

impl Sync {
    /// Starts a sync of `ledger` for `instance`: the first attempt assumes the record is
    /// at the revision this instance last saw (a miss costs one more call, with the
    /// current record in the answer).
    pub fn start(
        local: &dyn SharedStore,
        ledger: &str,
        instance: &str,
        cap: Option<Micros>,
        want: Micros,
        cached: Option<(Record, i64)>,
    ) -> (Sync, Next) {
        Sync::start_with(local, ledger, instance, cap, want, cached, false)
    }

    /// [`Sync::start`]; with `verify`, a lease the record last seen has no room for is
    /// still asked of the store once (the same record written back at its revision): other
    /// instances may have given lease back since ([`return_step`]), which a cached record
    /// cannot show. Callers verify at most once per poll period ([`room_check_due`]).
    pub fn start_with(
        local: &dyn SharedStore,
        ledger: &str,
        instance: &str,
        cap: Option<Micros>,
        want: Micros,
        cached: Option<(Record, i64)>,
        verify: bool,
    ) -> (Sync, Next) {
        let (current, revision) = cached
            .or_else(|| last_seen(local, ledger))
            .unwrap_or_default();
        let mut s = Sync {
            ledger: ledger.to_string(),
            instance: instance.to_string(),
            cap,
            want: want.max(0),
            current,
            revision,
            proposed: Record::default(),
            attempts: 0,
            max_attempts: MAX_ATTEMPTS,
            enough: None,
            give_back: false,
            verify,
        };
        let first = s.attempt(local);
        (s, first)
    }

    /// Starts giving back `ledger`'s unused lease (the second step of [`return_step`]):
    /// the instance's `granted` in the store drops to what it holds locally (its lowered
    /// grant, or its settled plus reserved spend when more), and its settled spend is
    /// written as by a flush. A lost race is retried while only other instances' shares
    /// moved; once this instance's own share moved (one of its leases or flushes landed
    /// meanwhile) it stops, learns the store's share, and returns nothing until the ledger
    /// is idle again.
    pub fn give_back(local: &dyn SharedStore, ledger: &str, instance: &str) -> (Sync, Next) {
        let (current, revision) = last_seen(local, ledger).unwrap_or_default();
        let mut s = Sync {
            ledger: ledger.to_string(),
            instance: instance.to_string(),
            cap: None,
            want: 0,
            current,
            revision,
            proposed: Record::default(),
            attempts: 0,
            max_attempts: MAX_ATTEMPTS,
            enough: None,
            give_back: true,
            verify: false,
        };
        let first = s.attempt(local);
        (s, first)
    }

    /// Makes the sync stop as soon as the instance may admit up to `cap` locally (see
    /// [`Sync::on_reply`]): concurrent requests of one instance that ran short together
    /// then share the first lease that lands instead of each taking one.
    pub fn until_local_cap(mut self, cap: Micros) -> Sync {
        self.enough = Some(cap);
        self
    }

    /// Gives up as [`Outcome::Contended`] after `n` lost races (a request waiting for a
    /// lease must not wait for long; the host may also bound a stream's callout rounds).
    pub fn max_attempts(mut self, n: u32) -> Sync {
        self.max_attempts = n.max(1);
        self
    }

    fn attempt(&mut self, local: &dyn SharedStore) -> Next {
        self.attempts += 1;
        let settled = spend::ledger(local, &self.ledger).map_or(0, |l| l.settled);
        let mut next = self.current.clone();
        let committed = next.committed();
        let mine = next.instances.entry(self.instance.clone()).or_default();
        mine.spent = mine.spent.max(settled);
        mine.granted = mine.granted.max(mine.spent);
        if self.give_back {
            // Never below what this instance may still admit up to locally.
            let keep = held(local, &self.ledger).max(committed_locally(local, &self.ledger));
            mine.granted = mine.granted.min(keep).max(mine.spent);
        }
        if self.want > 0 {
            let room = match self.cap {
                Some(cap) => {
                    // The commitment once this instance's spend is counted.
                    let before = self.current.instances.get(&self.instance).copied();
                    let was = before.map_or(0, |s| s.granted.max(s.spent));
                    let now = committed - was + mine.granted;
                    cap.saturating_sub(now).max(0)
                }
                None => self.want,
            };
            mine.granted = mine.granted.saturating_add(self.want.min(room));
        }
        if next == self.current && !(self.verify && self.want > 0 && self.attempts == 1) {
            // Nothing to write back and no room to lease as last seen. Only an idle
            // instance's give-back shrinks the fleet's commitment, so a record read earlier
            // can hide room only until a verifying lease (once a poll period) reads it.
            let held = grant(local, &self.ledger).map_or(0, |g| g.granted.max(g.flushed));
            return Next::Done(Outcome::Synced {
                granted: held,
                leased: 0,
            });
        }
        let body = serde_json::to_vec(&next).unwrap_or_default();
        self.proposed = next;
        Next::Call(Call {
            path: etcd::TXN_PATH,
            body: etcd::cas(&self.ledger, self.revision, &body),
        })
    }

    /// Takes the answer of the last call (`None`: no answer, or not a 2xx).
    pub fn on_reply(&mut self, local: &dyn SharedStore, reply: Option<&[u8]>) -> Next {
        let Some(parsed) = reply.and_then(etcd::parse_cas) else {
            return Next::Done(Outcome::Unreachable);
        };
        match parsed {
            CasReply::Written { revision } => {
                let before = grant(local, &self.ledger).unwrap_or_default();
                let mine = self
                    .proposed
                    .instances
                    .get(&self.instance)
                    .copied()
                    .unwrap_or_default();
                let _ = store::update(local, &grant_key(&self.ledger), |g: &Grant| {
                    if g.revision >= revision {
                        return Step::Keep(());
                    }
                    Step::Write(
                        Grant {
                            granted: mine.granted,
                            flushed: mine.spent,
                            revision,
                        },
                        (),
                    )
                });
                self.current = self.proposed.clone();
                self.revision = revision;
                remember(local, &self.ledger, &self.current, revision);
                Next::Done(Outcome::Synced {
                    granted: mine.granted,
                    leased: mine.granted - before.granted.max(before.flushed).min(mine.granted),
                })
            }
            CasReply::Conflict { current } => {
                let mine_before = self.current.instances.get(&self.instance).copied();
                match current {
                    None => {
                        self.current = Record::default();
                        self.revision = 0;
                    }
                    Some(kv) => match Record::decode(&kv.value) {
                        Some(r) => {
                            // A give-back retries only while this instance's share is the
                            // one it built on: other instances moved the record, and this
                            // one's lowered grant still holds. Its own share moved (a lease
                            // or flush of this instance landed): learn it and stop.
                            let same = r.instances.get(&self.instance).copied() == mine_before;
                            self.current = r;
                            self.revision = kv.mod_revision;
                            remember(local, &self.ledger, &self.current, self.revision);
                            if self.give_back && same && self.attempts < self.max_attempts {
                                return self.attempt(local);
                            }
                            self.learn(local);
                        }
                        // Not a record this engine wrote: never overwrite it.
                        None => return Next::Done(Outcome::Unreachable),
                    },
                }
                let held = grant(local, &self.ledger).map_or(0, |g| g.granted.max(g.flushed));
                if self.give_back {
                    return Next::Done(Outcome::Synced {
                        granted: held,
                        leased: 0,
                    });
                }
                if self.enough.is_some_and(|need| held >= need) {
                    return Next::Done(Outcome::Synced {
                        granted: held,
                        leased: 0,
                    });
                }
                if self.attempts >= self.max_attempts {
                    return Next::Done(Outcome::Contended);
                }
                self.attempt(local)
            }
        }
    }

    /// Takes this instance's share from a record read back (another worker or request of
    /// the same instance may have leased since): the local grant follows the store.
    fn learn(&self, local: &dyn SharedStore) {
        learn_share(
            local,
            &self.ledger,
            &self.instance,
            &self.current,
            self.revision,
        );
    }
}

/// Sets the instance's [`Grant`] on `ledger` from a record read at `revision`, unless a
/// newer one is already there.
fn learn_share(
    local: &dyn SharedStore,
    ledger: &str,
    instance: &str,
    record: &Record,
    revision: i64,
) {
    let Some(mine) = record.instances.get(instance).copied() else {
        return;
    };
    let _ = store::update(local, &grant_key(ledger), |g: &Grant| {
        if g.revision >= revision {
            return Step::Keep(());
        }
        Step::Write(
            Grant {
                granted: mine.granted,
                flushed: mine.spent,
                revision,
            },
            (),
        )
    });
}

/// Single flight: one lease per ledger in flight from an instance at a time. Its other
/// requests that run short meanwhile read the record instead ([`read_call`],
/// [`learn_read`]), which never conflicts, and go on as soon as the lease they share
/// lands. `try_lead` takes the ledger for `ttl_nanos` (a leader that vanished frees it
/// when that passes).
pub fn try_lead(local: &dyn SharedStore, ledger: &str, now_nanos: u64, ttl_nanos: u64) -> bool {
    store::update(local, &lead_key(ledger), |u: &Until| {
        if u.0 > now_nanos {
            Step::Keep(false)
        } else {
            Step::Write(Until(now_nanos.saturating_add(ttl_nanos)), true)
        }
    }) == Ok(true)
}

/// Whether another request of this instance is leasing `ledger` now.
pub fn is_led(local: &dyn SharedStore, ledger: &str, now_nanos: u64) -> bool {
    store::read::<Until>(local, &lead_key(ledger)).is_ok_and(|u| u.0 > now_nanos)
}

/// Frees the ledger for the next leader.
pub fn end_lead(local: &dyn SharedStore, ledger: &str) {
    let _ = local.set(&lead_key(ledger), &Until(0).encode(), 0);
}

fn lead_key(ledger: &str) -> String {
    format!("writ/fleet/leasing/{ledger}")
}

#[derive(Debug, Clone, Copy, Default)]
struct Until(u64);

impl Stored for Until {
    fn encode(&self) -> Vec<u8> {
        self.0.to_le_bytes().to_vec()
    }
    fn decode(bytes: &[u8]) -> Option<Until> {
        Some(Until(u64::from_le_bytes(bytes.try_into().ok()?)))
    }
}

/// A read of `ledger`'s record, for a request waiting on another's lease.
pub fn read_call(ledger: &str) -> Call {
    Call {
        path: etcd::RANGE_PATH,
        body: etcd::range_key(ledger),
    }
}

/// Takes the answer of [`read_call`]: the instance's grant follows the record. Returns
/// what the instance may now admit up to, or `None` when the store did not answer as etcd
/// (or holds a value this engine did not write).
pub fn learn_read(
    local: &dyn SharedStore,
    ledger: &str,
    instance: &str,
    reply: Option<&[u8]>,
) -> Option<Micros> {
    let kvs = etcd::parse_range(reply?)?;
    if let Some(kv) = kvs.into_iter().next() {
        let record = Record::decode(&kv.value)?;
        remember(local, ledger, &record, kv.mod_revision);
        learn_share(local, ledger, instance, &record, kv.mod_revision);
    }
    grant(local, ledger).ok().map(|g| g.granted.max(g.flushed))
}

/// Whether the store's ledger key names a spend ledger (what [`Sync`] writes).
pub fn is_ledger(key: &str) -> bool {
    key.starts_with("writ/spend/")
}

/// Tests, and the fake etcd the session's lease tests answer with.
#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
pub(crate) mod tests {
    use super::*;
    use crate::ir::{Scope, Window};
    use crate::spend::{Admission, reserve, settle};
    use crate::store::MemoryStore;

    /// A fake etcd: one key space with revisions, answering the CAS bodies the code sends.
    #[derive(Default)]
    pub(crate) struct FakeEtcd {
        pub kv: BTreeMap<String, (Vec<u8>, i64)>,
        pub revision: i64,
        pub down: bool,
    }

    impl FakeEtcd {
        pub(crate) fn answer(&mut self, call: &Call) -> Option<Vec<u8>> {
            if self.down {
                return None;
            }
            let v: serde_json::Value = serde_json::from_slice(&call.body).ok()?;
            let text = |v: &serde_json::Value| {
                etcd::unb64(v.as_str().unwrap_or_default())
                    .and_then(|b| String::from_utf8(b).ok())
                    .unwrap_or_default()
            };
            assert_eq!(call.path, etcd::TXN_PATH);
            let key = text(&v["compare"][0]["key"]);
            let want: i64 = v["compare"][0]["mod_revision"]
                .as_str()
                .unwrap_or("0")
                .parse()
                .unwrap_or(0);
            let have = self.kv.get(&key).map_or(0, |(_, r)| *r);
            if have == want {
                self.revision += 1;
                let value = etcd::unb64(v["success"][0]["request_put"]["value"].as_str()?)
                    .unwrap_or_default();
                self.kv.insert(key, (value, self.revision));
                Some(
                    format!(
                        r#"{{"header":{{"revision":"{}"}},"succeeded":true}}"#,
                        self.revision
                    )
                    .into_bytes(),
                )
            } else {
                let (value, rev) = self.kv.get(&key).cloned().unwrap_or_default();
                Some(
                    format!(
                        r#"{{"header":{{"revision":"{}"}},"responses":[{{"response_range":{{"kvs":[{{"key":"{}","mod_revision":"{rev}","value":"{}"}}]}}}}]}}"#,
                        self.revision,
                        etcd::b64(key.as_bytes()),
                        etcd::b64(&value)
                    )
                    .into_bytes(),
                )
            }
        }

        pub(crate) fn record(&self, key: &str) -> Record {
            self.kv
                .get(key)
                .and_then(|(v, _)| Record::decode(v))
                .unwrap_or_default()
        }
    }

    /// Runs a sync to its end against the fake.
    fn run(
        etcd: &mut FakeEtcd,
        local: &MemoryStore,
        ledger: &str,
        id: &str,
        cap: Option<Micros>,
        want: Micros,
    ) -> Outcome {
        let (mut s, first) = Sync::start(local, ledger, id, cap, want, None);
        let mut call = match first {
            Next::Call(c) => c,
            Next::Done(o) => return o,
        };
        loop {
            let reply = etcd.answer(&call);
            match s.on_reply(local, reply.as_deref()) {
                Next::Call(c) => call = c,
                Next::Done(o) => return o,
            }
        }
    }

    fn key(name: &str, cap: Micros) -> BudgetKey {
        BudgetKey {
            key: name.into(),
            scope: Scope::Team,
            window: Window::Month,
            cap: Some(cap),
            cap_rule: Some(0),
            alert_at: None,
            alert_rule: None,
        }
    }

    #[test]
    fn instances_lease_within_the_cap_and_admit_only_what_they_hold() {
        let mut etcd = FakeEtcd::default();
        let (a, b) = (MemoryStore::new(), MemoryStore::new());
        let l = "writ/spend/team/t/month/2026-12";
        // Nothing held yet: the cap is lowered to zero and the request refused locally.
        let mut keys = [key(l, 1000)];
        let leased = lease_caps(&a, &mut keys, None);
        assert_eq!(leased.map(|v| v.len()), Ok(1));
        assert!(matches!(reserve(&a, &keys, 10), Ok(Admission::Deny { .. })));
        // Leases of 400 each: a, b, then a again gets only the 200 left.
        assert_eq!(
            run(&mut etcd, &a, l, "a", Some(1000), 400),
            Outcome::Synced {
                granted: 400,
                leased: 400
            }
        );
        assert_eq!(
            run(&mut etcd, &b, l, "b", Some(1000), 400),
            Outcome::Synced {
                granted: 400,
                leased: 400
            }
        );
        assert_eq!(
            run(&mut etcd, &a, l, "a", Some(1000), 400),
            Outcome::Synced {
                granted: 600,
                leased: 200
            }
        );
        assert_eq!(
            run(&mut etcd, &b, l, "b", Some(1000), 400),
            Outcome::Synced {
                granted: 400,
                leased: 0
            }
        );
        assert_eq!(etcd.record(l).committed(), 1000);
        // a admits up to its 600, not the cap.
        let mut keys = [key(l, 1000)];
        let _ = lease_caps(&a, &mut keys, None);
        assert!(matches!(
            reserve(&a, &keys, 600),
            Ok(Admission::Admit { .. })
        ));
        assert!(matches!(reserve(&a, &keys, 1), Ok(Admission::Deny { .. })));
        // It settles 550 of it; the next sync writes the spend back exactly.
        assert_eq!(settle(&a, &keys, 600, 550), Ok(vec![]));
        assert!(needs_flush(&a, l));
        assert_eq!(
            run(&mut etcd, &a, l, "a", Some(1000), 0),
            Outcome::Synced {
                granted: 600,
                leased: 0
            }
        );
        assert!(!needs_flush(&a, l));
        assert_eq!(etcd.record(l).spent(), 550);
        assert_eq!(grant(&a, l).map(|g| (g.granted, g.flushed)), Ok((600, 550)));
    }

    #[test]
    fn overspend_is_counted_and_later_leases_shrink() {
        let mut etcd = FakeEtcd::default();
        let a = MemoryStore::new();
        let l = "l";
        let _ = run(&mut etcd, &a, l, "a", Some(1000), 300);
        // A reply dearer than its estimate: 300 reserved, 450 settled.
        let keys = [key(l, 1000)];
        let _ = reserve(&a, &keys, 300);
        let _ = settle(&a, &keys, 300, 450);
        let _ = run(&mut etcd, &a, l, "a", Some(1000), 0);
        assert_eq!(etcd.record(l).committed(), 450);
        // Only 550 remain for anyone.
        assert_eq!(
            run(&mut etcd, &MemoryStore::new(), l, "b", Some(1000), 900),
            Outcome::Synced {
                granted: 550,
                leased: 550
            }
        );
    }

    #[test]
    fn a_down_store_changes_nothing_and_a_foreign_value_is_never_overwritten() {
        let mut etcd = FakeEtcd {
            down: true,
            ..FakeEtcd::default()
        };
        let a = MemoryStore::new();
        assert_eq!(
            run(&mut etcd, &a, "l", "a", Some(10), 5),
            Outcome::Unreachable
        );
        assert_eq!(grant(&a, "l"), Ok(Grant::default()));
        // With the local allowance, the instance may admit that much while down.
        let mut keys = [key("l", 1000)];
        let _ = lease_caps(&a, &mut keys, Some(70));
        assert_eq!(keys[0].cap, Some(70));
        etcd.down = false;
        etcd.kv.insert("l".into(), (b"not json".to_vec(), 1));
        etcd.revision = 1;
        assert_eq!(
            run(&mut etcd, &a, "l", "a", Some(10), 5),
            Outcome::Unreachable
        );
        assert_eq!(
            etcd.kv.get("l").map(|v| v.0.clone()),
            Some(b"not json".to_vec())
        );
    }

    #[test]
    fn racing_instances_never_grant_past_the_cap() {
        // Interleaved: both start from the same revision; the loser re-reads and retries.
        let mut etcd = FakeEtcd::default();
        let (a, b) = (MemoryStore::new(), MemoryStore::new());
        let (mut sa, Next::Call(ca)) = Sync::start(&a, "l", "a", Some(500), 400, None) else {
            panic!("a first call")
        };
        let (mut sb, Next::Call(cb)) = Sync::start(&b, "l", "b", Some(500), 400, None) else {
            panic!("a first call")
        };
        let ra = etcd.answer(&ca);
        let rb = etcd.answer(&cb);
        assert!(matches!(sa.on_reply(&a, ra.as_deref()), Next::Done(_)));
        let Next::Call(retry) = sb.on_reply(&b, rb.as_deref()) else {
            panic!("the loser must retry");
        };
        let rb = etcd.answer(&retry);
        assert_eq!(
            sb.on_reply(&b, rb.as_deref()),
            Next::Done(Outcome::Synced {
                granted: 100,
                leased: 100
            })
        );
        assert_eq!(etcd.record("l").committed(), 500);
    }

    #[test]
    fn requests_of_one_instance_share_the_first_lease_that_lands() {
        let mut etcd = FakeEtcd::default();
        let a = MemoryStore::new();
        let (mut s1, Next::Call(c1)) = Sync::start(&a, "l", "a", Some(10_000), 400, None) else {
            panic!("a first call")
        };
        let (s2, Next::Call(c2)) = Sync::start(&a, "l", "a", Some(10_000), 400, None) else {
            panic!("a first call")
        };
        let mut s2 = s2.until_local_cap(300);
        let r1 = etcd.answer(&c1);
        let r2 = etcd.answer(&c2);
        assert!(matches!(
            s1.on_reply(&a, r1.as_deref()),
            Next::Done(Outcome::Synced { .. })
        ));
        assert_eq!(
            s2.on_reply(&a, r2.as_deref()),
            Next::Done(Outcome::Synced {
                granted: 400,
                leased: 0
            })
        );
        assert_eq!(etcd.record("l").committed(), 400, "one lease, not two");
    }

    #[test]
    fn one_lead_per_ledger_and_followers_learn_from_reads() {
        let mut etcd = FakeEtcd::default();
        let a = MemoryStore::new();
        assert!(try_lead(&a, "l", 100, 50));
        assert!(!try_lead(&a, "l", 120, 50));
        assert!(
            try_lead(&a, "l", 151, 50),
            "a vanished leader frees the ledger"
        );
        assert!(is_led(&a, "l", 160));
        end_lead(&a, "l");
        assert!(!is_led(&a, "l", 160));
        assert!(try_lead(&a, "l", 152, 50));
        // Another worker's lease lands; a follower's read brings the grant.
        let b = MemoryStore::new();
        let _ = run(&mut etcd, &b, "l", "a", Some(1000), 300);
        let (value, rev) = etcd.kv.get("l").cloned().unwrap_or_default();
        let reply = format!(
            r#"{{"header":{{"revision":"{rev}"}},"kvs":[{{"key":"bA==","mod_revision":"{rev}","value":"{}"}}]}}"#,
            etcd::b64(&value)
        );
        assert_eq!(learn_read(&a, "l", "a", Some(reply.as_bytes())), Some(300));
        assert_eq!(learn_read(&a, "l", "a", Some(b"nope")), None);
        assert_eq!(read_call("l").path, etcd::RANGE_PATH);
    }

    #[test]
    fn nothing_to_write_makes_no_call() {
        let mut etcd = FakeEtcd::default();
        let a = MemoryStore::new();
        let _ = run(&mut etcd, &a, "l", "a", Some(100), 100);
        let before = etcd.revision;
        // The cap is committed: asking again (from the remembered record) writes nothing.
        let (_, first) = Sync::start(&a, "l", "a", Some(100), 50, None);
        assert_eq!(
            first,
            Next::Done(Outcome::Synced {
                granted: 100,
                leased: 0
            })
        );
        let (_, first) = Sync::start(&a, "l", "a", None, 0, None);
        assert!(matches!(first, Next::Done(_)));
        assert_eq!(etcd.revision, before);
    }

    #[test]
    fn active_ledgers_are_listed_once() {
        let a = MemoryStore::new();
        let keys = [key("x", 1), key("y", 1)];
        assert_eq!(note_active(&a, &keys), Ok(()));
        assert_eq!(note_active(&a, &keys[..1]), Ok(()));
        assert_eq!(active(&a), vec!["x".to_string(), "y".to_string()]);
    }

    /// Runs a give-back to its end against the fake.
    fn give(etcd: &mut FakeEtcd, local: &MemoryStore, ledger: &str, id: &str) -> Outcome {
        let (mut s, first) = Sync::give_back(local, ledger, id);
        let mut call = match first {
            Next::Call(c) => c,
            Next::Done(o) => return o,
        };
        loop {
            let reply = etcd.answer(&call);
            match s.on_reply(local, reply.as_deref()) {
                Next::Call(c) => call = c,
                Next::Done(o) => return o,
            }
        }
    }

    #[test]
    fn an_idle_instance_gives_its_unused_lease_back_in_two_ticks() {
        let mut etcd = FakeEtcd::default();
        let (a, b) = (MemoryStore::new(), MemoryStore::new());
        let l = "writ/spend/team/t/month/2026-12";
        let _ = run(&mut etcd, &a, l, "a", Some(1000), 800);
        let keys = [key(l, 1000)];
        let _ = reserve(&a, &keys, 100);
        let _ = settle(&a, &keys, 100, 90);
        let _ = run(&mut etcd, &a, l, "a", Some(1000), 0);
        assert_eq!(unused(&a, l), 710);
        // b can lease only the 200 a does not hold.
        assert_eq!(
            run(&mut etcd, &b, l, "b", Some(1000), 500),
            Outcome::Synced {
                granted: 200,
                leased: 200
            }
        );
        let s = 1_000_000_000;
        // Busy (or not idle long enough): nothing.
        assert_eq!(return_step(&a, l, 10 * s, 3 * s), ReturnStep::Nothing);
        assert_eq!(return_step(&a, l, 12 * s, 3 * s), ReturnStep::Nothing);
        // A reservation in flight counts as committed and restarts the idle clock.
        let _ = reserve(&a, &keys, 50);
        assert_eq!(return_step(&a, l, 14 * s, 3 * s), ReturnStep::Nothing);
        assert_eq!(return_step(&a, l, 18 * s, 3 * s), ReturnStep::Lowered);
        // Lowered locally first: the instance admits only what it committed.
        assert_eq!(grant(&a, l).map(|g| g.granted), Ok(140));
        let mut k = [key(l, 1000)];
        let _ = lease_caps(&a, &mut k, None);
        assert!(matches!(reserve(&a, &k, 1), Ok(Admission::Deny { .. })));
        // Another worker's tick right after: too soon for the second step.
        assert_eq!(
            return_step(&a, l, 18 * s + 1_000, 3 * s),
            ReturnStep::Nothing
        );
        // A poll period later it writes it to the store (in flight stays held).
        assert_eq!(return_step(&a, l, 19 * s, 3 * s), ReturnStep::Give);
        assert!(matches!(
            give(&mut etcd, &a, l, "a"),
            Outcome::Synced { .. }
        ));
        let rec = etcd.record(l);
        assert_eq!(
            rec.instances["a"],
            Share {
                granted: 140,
                spent: 90
            }
        );
        assert_eq!(rec.committed(), 340);
        // b's cached record still shows the cap as full: without verifying, no call.
        assert_eq!(
            run(&mut etcd, &b, l, "b", Some(1000), 500),
            Outcome::Synced {
                granted: 200,
                leased: 0
            }
        );
        // A verifying lease (once a poll period) reads the store and gets what a gave back.
        assert!(room_check_due(&b, l, 20 * s, s));
        assert!(!room_check_due(&b, l, 20 * s + 1, s));
        let (mut sync, first) = Sync::start_with(&b, l, "b", Some(1000), 500, None, true);
        let mut call = match first {
            Next::Call(c) => c,
            Next::Done(o) => panic!("no call: {o:?}"),
        };
        let outcome = loop {
            let reply = etcd.answer(&call);
            match sync.on_reply(&b, reply.as_deref()) {
                Next::Call(c) => call = c,
                Next::Done(o) => break o,
            }
        };
        assert_eq!(
            outcome,
            Outcome::Synced {
                granted: 700,
                leased: 500
            }
        );
        assert!(etcd.record(l).committed() <= 1000);
        // Nothing unused any more: nothing to do.
        assert_eq!(return_step(&a, l, 30 * s, 3 * s), ReturnStep::Nothing);
    }

    #[test]
    fn at_shutdown_the_whole_unused_lease_goes_back_at_once() {
        let mut etcd = FakeEtcd::default();
        let a = MemoryStore::new();
        let l = "writ/spend/team/t/month/2026-12";
        let _ = run(&mut etcd, &a, l, "a", Some(1000), 800);
        let keys = [key(l, 1000)];
        let _ = reserve(&a, &keys, 100);
        let _ = settle(&a, &keys, 100, 90);
        assert_eq!(etcd.record(l).instances["a"].granted, 800);
        // No idle wait and no second step: the host admits nothing any more.
        assert!(lower_at_shutdown(&a, l));
        assert_eq!(grant(&a, l).map(|g| g.granted), Ok(90));
        assert!(matches!(
            give(&mut etcd, &a, l, "a"),
            Outcome::Synced { .. }
        ));
        assert_eq!(
            etcd.record(l).instances["a"],
            Share {
                granted: 90,
                spent: 90
            },
            "the store keeps only the settled spend"
        );
        // A second worker's shutdown finds nothing to lower and nothing to write.
        assert!(!lower_at_shutdown(&a, l));
        let (_, first) = Sync::give_back(&a, l, "a");
        assert!(matches!(first, Next::Done(_)), "no call: {first:?}");
    }

    #[test]
    fn a_give_back_stops_when_its_own_share_moved() {
        let mut etcd = FakeEtcd::default();
        let a = MemoryStore::new();
        let l = "l";
        let _ = run(&mut etcd, &a, l, "a", Some(1000), 800);
        let s = 1_000_000_000;
        let _ = return_step(&a, l, s, s);
        assert_eq!(return_step(&a, l, 3 * s, s), ReturnStep::Lowered);
        assert_eq!(return_step(&a, l, 4 * s, s), ReturnStep::Give);
        // Another worker of a flushed meanwhile (a's own share moved): a's attempt
        // conflicts and stops, keeping the lease counted.
        let mut moved = etcd.record(l);
        moved.instances.entry("a".into()).or_default().spent = 5;
        let body = serde_json::to_vec(&moved).unwrap_or_default();
        let rev = etcd.kv.get(l).map_or(0, |(_, r)| *r);
        let _ = etcd.answer(&Call {
            path: etcd::TXN_PATH,
            body: etcd::cas(l, rev, &body),
        });
        assert!(matches!(
            give(&mut etcd, &a, l, "a"),
            Outcome::Synced { .. }
        ));
        assert_eq!(
            etcd.record(l).instances["a"].granted,
            800,
            "kept, still counted"
        );
        // a's local grant follows the store again: consistent, never above it.
        assert_eq!(grant(&a, l).map(|g| g.granted), Ok(800));
    }
}
