//! Oversight counters across the fleet: the verification rate's outputs and escalations,
//! the kill points' buckets, the review queue and the day's verdicts, summed over every
//! instance, with no call to the store on a request's path.
//!
//! Each instance keeps counting in its own shared data as a lone gateway does; the engine
//! lists the counters it touched ([`note`]). The root context's tick then
//! - writes the instance's counters, absolute, under its own key
//!   `writ/counters/<instance>` (one put, only when they changed: [`publish_body`]), so a
//!   put repeated after a lost answer is harmless and no two instances write one key;
//! - reads the `writ/counters/` range and keeps, per counter, the sum over the *other*
//!   instances in shared data ([`apply_poll`], read back by [`others`]).
//!
//! A request then judges on its own fresh count plus the others' sum, which is at most
//! one poll period plus one call old (`docs/fleet.md`, "staleness").
//!
//! An alert the fleet's numbers raise is claimed before it is written ([`propose`],
//! [`claim_body`]): the first instance to create `writ/alert/<id>` in the store (a
//! compare-and-swap on "the key does not exist") writes the records and calls the alert
//! sink; every other instance drops its copy. So each alert fires once for the fleet.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::etcd::{self, CasReply};
use crate::kill_point::{Bucket, Totals};
use crate::oversight::RateCounts;
use crate::review_verdict::{DayVerdicts, QueueSummary};
use crate::store::{self, SharedStore, Step, StoreError, Stored};

/// A counter's named fields (`total`, `escalated`, `spend_micros` …).
pub type Fields = BTreeMap<String, i64>;

/// The store range holding every instance's counters.
pub const PREFIX: &str = "writ/counters/";

/// The shared-data key listing the counters this instance publishes (one key a line).
pub const COUNTED_KEY: &str = "writ/fleet/counted";

/// Counters listed at most: the oldest are dropped first (their buckets are past).
pub const MAX_COUNTED: usize = 64;

/// Adds a counter's shared-data key to the published list (a read when it is listed).
pub fn note(local: &dyn SharedStore, key: &str) -> Result<(), StoreError> {
    let listed = local
        .get(COUNTED_KEY)
        .is_some_and(|(v, _)| v.split(|b| *b == b'\n').any(|l| l == key.as_bytes()));
    if listed {
        return Ok(());
    }
    super::add_line(local, COUNTED_KEY, key)?;
    let all = super::lines(local, COUNTED_KEY);
    if all.len() > MAX_COUNTED {
        for old in all.iter().take(all.len() - MAX_COUNTED) {
            super::remove_line(local, COUNTED_KEY, old)?;
        }
    }
    Ok(())
}

fn field(pairs: &[(&str, i64)]) -> Fields {
    pairs.iter().map(|(k, v)| ((*k).to_string(), *v)).collect()
}

fn as_i64(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

/// A local counter as named fields, by the kind its key names; `None` for a key this
/// module does not know or a value it cannot read.
pub fn fields(local: &dyn SharedStore, key: &str) -> Option<Fields> {
    let (bytes, _) = local.get(key)?;
    if key.starts_with("writ/oversight/") {
        let c = RateCounts::decode(&bytes)?;
        return Some(field(&[
            ("total", as_i64(c.total)),
            ("escalated", as_i64(c.escalated)),
        ]));
    }
    if key.starts_with("writ/killpoint/") {
        let b = Bucket::decode(&bytes)?;
        return Some(field(&[
            ("replies", as_i64(b.totals.replies)),
            ("escalated", as_i64(b.totals.escalated)),
            ("spend_micros", b.totals.spend_micros),
        ]));
    }
    if key.starts_with("writ/review/wf/") {
        let q = QueueSummary::decode(&bytes)?;
        return Some(field(&[
            ("escalated", as_i64(q.escalated)),
            ("reviewed", as_i64(q.reviewed)),
            ("approved", as_i64(q.approved)),
        ]));
    }
    if key.starts_with("writ/review/day/") {
        let d = DayVerdicts::decode(&bytes)?;
        let mut f = field(&[
            ("reviews", as_i64(d.reviews)),
            ("approved", as_i64(d.approved)),
            ("fast", as_i64(d.fast)),
        ]);
        // The busiest reviewers, for the fleet's share signal (bounded per instance).
        for (who, n) in d.top_reviewers() {
            f.insert(format!("{REVIEWER_FIELD}{who}"), as_i64(n));
        }
        return Some(f);
    }
    None
}

/// The store key of `instance`'s counters.
pub fn instance_key(instance: &str) -> String {
    format!("{PREFIX}{instance}")
}

/// The shared-data key of the snapshot last written to the store.
const PUBLISHED_KEY: &str = "writ/fleet/counters-published";

/// This instance's counters as the store holds them: `{"<counter key>": {fields}}`.
pub fn snapshot(local: &dyn SharedStore) -> BTreeMap<String, Fields> {
    super::lines(local, COUNTED_KEY)
        .into_iter()
        .filter_map(|k| fields(local, &k).map(|f| (k, f)))
        .collect()
}

/// The put that writes this instance's counters, or `None` when the store already has
/// them (nothing counted since the last answered put).
pub fn publish_body(local: &dyn SharedStore, instance: &str) -> Option<Vec<u8>> {
    let snap = snapshot(local);
    if snap.is_empty() {
        return None;
    }
    let value = serde_json::to_vec(&snap).ok()?;
    let body = etcd::put(&instance_key(instance), &value);
    let same = local.get(PUBLISHED_KEY).is_some_and(|(v, _)| v == body);
    (!same).then_some(body)
}

/// The store answered the put `sent`: later ticks write only what changed since.
pub fn published(local: &dyn SharedStore, sent: &[u8]) {
    let _ = local.set(PUBLISHED_KEY, sent, 0);
}

/// The body of the poll: a range read of [`PREFIX`].
pub fn poll_body() -> Vec<u8> {
    etcd::range_prefix(PREFIX)
}

/// The shared-data key of the other instances' sum of one counter.
pub fn others_key(counter: &str) -> String {
    format!("writ/fleet/others/{counter}")
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct Sum(Fields);

impl Stored for Sum {
    fn encode(&self) -> Vec<u8> {
        serde_json::to_vec(&self.0).unwrap_or_default()
    }
    fn decode(bytes: &[u8]) -> Option<Sum> {
        serde_json::from_slice(bytes).ok().map(Sum)
    }
}

/// Takes the answer of [`poll_body`]: for every counter any other instance published,
/// the sum over those instances goes to shared data. Returns how many counters were
/// summed, or `None` when the answer is not etcd's (nothing changes).
pub fn apply_poll(local: &dyn SharedStore, reply: &[u8], instance: &str) -> Option<usize> {
    let kvs = etcd::parse_range(reply)?;
    let mine = instance_key(instance);
    let mut sums: BTreeMap<String, Fields> = BTreeMap::new();
    for kv in kvs {
        if kv.key == mine.as_bytes() {
            continue;
        }
        // A value this engine did not write counts as nothing.
        let Ok(snap) = serde_json::from_slice::<BTreeMap<String, Fields>>(&kv.value) else {
            continue;
        };
        for (counter, f) in snap {
            let sum = sums.entry(counter).or_default();
            for (name, v) in f {
                let s = sum.entry(name).or_default();
                *s = s.saturating_add(v.max(0));
            }
        }
    }
    let n = sums.len();
    for (counter, sum) in sums {
        let key = others_key(&counter);
        let bytes = Sum(sum).encode();
        if local.get(&key).is_some_and(|(v, _)| v == bytes) {
            continue;
        }
        let _ = local.set(&key, &bytes, 0);
    }
    Some(n)
}

/// The other instances' sum of the counter under `key` (empty before the first poll or
/// without a fleet).
pub fn others(local: &dyn SharedStore, key: &str) -> Fields {
    store::read::<Sum>(local, &others_key(key))
        .map(|s| s.0)
        .unwrap_or_default()
}

fn get(f: &Fields, name: &str) -> u64 {
    f.get(name).map_or(0, |v| u64::try_from(*v).unwrap_or(0))
}

/// The prefix of a day-of-verdicts field that counts one reviewer's verdicts.
pub const REVIEWER_FIELD: &str = "reviewer/";

/// The other instances' verdicts of one workflow's day (`writ/review/day/…`), for the
/// rubber-stamp signals: each instance publishes its counts and its busiest
/// `review_verdict::PUBLISHED_REVIEWERS` reviewers.
pub fn others_day(local: &dyn SharedStore, key: &str) -> DayVerdicts {
    let f = others(local, key);
    DayVerdicts {
        reviews: get(&f, "reviews"),
        approved: get(&f, "approved"),
        fast: get(&f, "fast"),
        by_reviewer: f
            .iter()
            .filter_map(|(k, v)| {
                let who = k.strip_prefix(REVIEWER_FIELD)?;
                Some((who.to_string(), u64::try_from(*v).unwrap_or(0)))
            })
            .collect(),
        raised: Vec::new(),
    }
}

/// The claim id of a rubber-stamp signal: one per workflow, day and signal for the fleet.
pub fn signal_id(day_key: &str, signal: &str) -> String {
    format!("review_signal/{day_key}/{signal}")
}

/// The other instances' outputs and escalations in one verification-rate bucket.
pub fn others_rate(local: &dyn SharedStore, key: &str) -> RateCounts {
    let f = others(local, key);
    RateCounts {
        total: get(&f, "total"),
        escalated: get(&f, "escalated"),
        alerted: false,
    }
}

/// The other instances' totals in one kill-point bucket.
pub fn others_totals(local: &dyn SharedStore, key: &str) -> Totals {
    let f = others(local, key);
    Totals {
        replies: get(&f, "replies"),
        escalated: get(&f, "escalated"),
        spend_micros: f.get("spend_micros").copied().unwrap_or(0).max(0),
    }
}

// ---------------------------------------------------------------------------------------
// Alerts, once for the fleet

/// An alert this instance raised, waiting for the tick to claim it in the store.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Proposed {
    /// Names the alert across the fleet: the same crossing gives the same id on every
    /// instance (the counter's key and what crossed).
    pub id: String,
    /// Its audit lines (`writ-audit {…}`), written by the instance that wins the claim.
    pub lines: Vec<String>,
    /// The alert sink's body, when the alert calls one.
    pub payload: Option<Vec<u8>>,
    /// Counters (stat names) the winner adds one to.
    #[serde(default)]
    pub counters: Vec<String>,
}

#[derive(Debug, Clone, Default)]
struct Queue(Vec<Proposed>);

impl Stored for Queue {
    fn encode(&self) -> Vec<u8> {
        serde_json::to_vec(&self.0).unwrap_or_default()
    }
    fn decode(bytes: &[u8]) -> Option<Queue> {
        serde_json::from_slice(bytes).ok().map(Queue)
    }
}

/// The shared-data key of the alerts waiting to be claimed.
pub const PROPOSED_KEY: &str = "writ/fleet/alerts";

/// Alerts waiting at most; one more is dropped and logged by the caller (a store down
/// for long keeps them from being claimed).
pub const MAX_PROPOSED: usize = 64;

/// Queues an alert for the tick to claim. `Ok(false)` when the queue is full or the
/// alert is already queued.
pub fn propose(local: &dyn SharedStore, alert: Proposed) -> Result<bool, StoreError> {
    store::update(local, PROPOSED_KEY, |q: &Queue| {
        if q.0.len() >= MAX_PROPOSED || q.0.iter().any(|p| p.id == alert.id) {
            return Step::Keep(false);
        }
        let mut next = q.0.clone();
        next.push(alert.clone());
        Step::Write(Queue(next), true)
    })
}

/// Takes every queued alert (one worker's tick gets each).
pub fn take_proposed(local: &dyn SharedStore) -> Vec<Proposed> {
    if local.get(PROPOSED_KEY).is_none_or(|(v, _)| v.len() <= 2) {
        return Vec::new();
    }
    store::update(local, PROPOSED_KEY, |q: &Queue| {
        if q.0.is_empty() {
            Step::Keep(Vec::new())
        } else {
            Step::Write(Queue(Vec::new()), q.0.clone())
        }
    })
    .unwrap_or_default()
}

/// Puts an alert back after the store did not answer its claim (claimed on a later tick).
pub fn requeue(local: &dyn SharedStore, alert: Proposed) {
    let _ = propose(local, alert);
}

/// The store key that marks an alert as fired for the fleet.
pub fn alert_key(id: &str) -> String {
    format!("writ/alert/{id}")
}

/// The claim: create [`alert_key`] with this instance's id unless it exists.
pub fn claim_body(id: &str, instance: &str) -> Vec<u8> {
    etcd::cas(&alert_key(id), 0, instance.as_bytes())
}

/// The answer to a claim: `Some(true)` this instance fires the alert, `Some(false)`
/// another did, `None` the store did not answer as etcd (claim again later).
pub fn claimed(reply: &[u8]) -> Option<bool> {
    match etcd::parse_cas(reply)? {
        CasReply::Written { .. } => Some(true),
        CasReply::Conflict { .. } => Some(false),
    }
}

// ---------------------------------------------------------------------------------------
// Records the root context writes into the audit stream

/// The shared-data key of audit lines written outside any request (a fleet-applied kill
/// switch, a claimed alert), waiting to join the next request's records.
pub const RECORDS_KEY: &str = "writ/fleet/records";

/// Lines waiting at most; beyond, the oldest are dropped (they are also in the log).
pub const MAX_RECORDS: usize = 256;

#[derive(Debug, Clone, Default)]
struct Records(Vec<String>);

impl Stored for Records {
    fn encode(&self) -> Vec<u8> {
        serde_json::to_vec(&self.0).unwrap_or_default()
    }
    fn decode(bytes: &[u8]) -> Option<Records> {
        serde_json::from_slice(bytes).ok().map(Records)
    }
}

/// Queues audit lines for the audit stream: the next request this instance finishes
/// writes them after its own record (to the `--audit-log` file, the audit sink and the
/// log, as its own).
pub fn queue_records(local: &dyn SharedStore, lines: &[String]) -> Result<(), StoreError> {
    if lines.is_empty() {
        return Ok(());
    }
    store::update(local, RECORDS_KEY, |r: &Records| {
        let mut next = r.0.clone();
        next.extend(lines.iter().cloned());
        let over = next.len().saturating_sub(MAX_RECORDS);
        next.drain(..over);
        Step::Write(Records(next), ())
    })
}

/// Whether the root context's tick writes the queued lines itself (to the log and the
/// audit sink) rather than leaving them for the next request: always, except where the
/// records go to Envoy's access-log file through a stream's filter state, which a root
/// context has no stream to write.
pub fn flush_on_tick(audit_filter_state: bool) -> bool {
    !audit_filter_state
}

/// Takes the queued lines (a read when there are none).
pub fn take_records(local: &dyn SharedStore) -> Vec<String> {
    if local.get(RECORDS_KEY).is_none_or(|(v, _)| v.len() <= 2) {
        return Vec::new();
    }
    store::update(local, RECORDS_KEY, |r: &Records| {
        if r.0.is_empty() {
            Step::Keep(Vec::new())
        } else {
            Step::Write(Records(Vec::new()), r.0.clone())
        }
    })
    .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::oversight::rate_key;
    use crate::store::MemoryStore;

    fn range_answer(kvs: &[(&str, &[u8])]) -> Vec<u8> {
        let list: Vec<serde_json::Value> = kvs
            .iter()
            .map(|(k, v)| {
                serde_json::json!({"key": etcd::b64(k.as_bytes()), "value": etcd::b64(v),
                                   "mod_revision": "3"})
            })
            .collect();
        serde_json::json!({"header": {"revision": "3"}, "kvs": list})
            .to_string()
            .into_bytes()
    }

    fn count(s: &MemoryStore, key: &str, total: u64, escalated: u64) {
        let c = RateCounts {
            total,
            escalated,
            alerted: false,
        };
        assert!(s.set(key, &c.encode(), 0).is_ok());
        assert!(note(s, key).is_ok());
    }

    #[test]
    fn an_instance_publishes_its_counters_once_until_they_change() {
        let s = MemoryStore::new();
        assert_eq!(
            publish_body(&s, "a"),
            None,
            "nothing counted: nothing to write"
        );
        let key = rate_key("support", crate::ir::Window::Day, 0);
        count(&s, &key, 10, 3);
        let body = publish_body(&s, "a").unwrap_or_default();
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
        assert_eq!(v["key"], etcd::b64(b"writ/counters/a"));
        let value = etcd::unb64(v["value"].as_str().unwrap_or("")).unwrap_or_default();
        let snap: BTreeMap<String, Fields> = serde_json::from_slice(&value).unwrap_or_default();
        assert_eq!(snap[&key]["total"], 10);
        assert_eq!(snap[&key]["escalated"], 3);
        published(&s, &body);
        assert_eq!(publish_body(&s, "a"), None, "unchanged: no second put");
        count(&s, &key, 11, 3);
        assert!(publish_body(&s, "a").is_some());
    }

    #[test]
    fn the_poll_sums_the_other_instances_and_skips_its_own_and_foreign_values() {
        let s = MemoryStore::new();
        let key = rate_key("support", crate::ir::Window::Day, 0);
        let b = serde_json::json!({key.clone(): {"total": 40, "escalated": 10}}).to_string();
        let c = serde_json::json!({key.clone(): {"total": 2, "escalated": 2},
                                   "writ/killpoint/support/day/x": {"replies": 5, "escalated": 1, "spend_micros": 700}})
        .to_string();
        let mine = serde_json::json!({key.clone(): {"total": 1000, "escalated": 1000}}).to_string();
        let reply = range_answer(&[
            ("writ/counters/a", mine.as_bytes()),
            ("writ/counters/b", b.as_bytes()),
            ("writ/counters/c", c.as_bytes()),
            ("writ/counters/d", b"not json"),
        ]);
        assert_eq!(apply_poll(&s, &reply, "a"), Some(2));
        assert_eq!(
            others_rate(&s, &key),
            RateCounts {
                total: 42,
                escalated: 12,
                alerted: false
            }
        );
        assert_eq!(
            others_totals(&s, "writ/killpoint/support/day/x"),
            Totals {
                replies: 5,
                escalated: 1,
                spend_micros: 700
            }
        );
        assert_eq!(apply_poll(&s, b"<html>", "a"), None);
        assert_eq!(
            others_rate(&s, &key).total,
            42,
            "a bad answer changes nothing"
        );
    }

    #[test]
    fn a_days_verdicts_are_published_with_the_busiest_reviewers_and_summed_by_name() {
        let s = MemoryStore::new();
        let key = crate::review_verdict::day_key("support", 0);
        let mut day = DayVerdicts {
            reviews: 30,
            approved: 29,
            fast: 20,
            by_reviewer: (0..20).map(|i| (format!("r{i:02}"), i + 1)).collect(),
            raised: vec!["approval_rate".into()],
        };
        day.by_reviewer
            .insert(crate::metrics::OTHER.to_string(), 1_000);
        assert!(s.set(&key, &day.encode(), 0).is_ok());
        assert!(note(&s, &key).is_ok());
        let f = snapshot(&s).remove(&key).unwrap_or_default();
        assert_eq!((f["reviews"], f["approved"], f["fast"]), (30, 29, 20));
        let named: Vec<&String> = f.keys().filter(|k| k.starts_with(REVIEWER_FIELD)).collect();
        assert_eq!(
            named.len(),
            crate::review_verdict::PUBLISHED_REVIEWERS,
            "bounded per instance"
        );
        assert_eq!(f["reviewer/r19"], 20);
        assert!(
            !f.contains_key("reviewer/r00"),
            "the least busy are left out"
        );
        assert!(!f.contains_key("reviewer/other"));
        // Two other instances' days add up, reviewers by name.
        let b = serde_json::json!({key.clone(): {"reviews": 3, "approved": 3, "fast": 3, "reviewer/alice": 3}}).to_string();
        let c = serde_json::json!({key.clone(): {"reviews": 2, "approved": 1, "fast": 0, "reviewer/alice": 1, "reviewer/bob": 1}}).to_string();
        let reply = range_answer(&[
            ("writ/counters/b", b.as_bytes()),
            ("writ/counters/c", c.as_bytes()),
        ]);
        assert_eq!(apply_poll(&s, &reply, "a"), Some(1));
        let others = others_day(&s, &key);
        assert_eq!((others.reviews, others.approved, others.fast), (5, 4, 3));
        assert_eq!(others.by_reviewer["alice"], 4);
        assert_eq!(others.by_reviewer["bob"], 1);
        assert_eq!(others.by_reviewer.len(), 2);
        assert_eq!(
            signal_id(&key, "approval_rate"),
            format!("review_signal/{key}/approval_rate")
        );
    }

    #[test]
    fn the_counted_list_stays_bounded() {
        let s = MemoryStore::new();
        for i in 0..(MAX_COUNTED + 5) {
            count(&s, &format!("writ/oversight/w/hour/{i}"), 1, 0);
        }
        let listed = super::super::lines(&s, COUNTED_KEY);
        assert_eq!(listed.len(), MAX_COUNTED);
        assert_eq!(
            listed[0], "writ/oversight/w/hour/5",
            "the oldest went first"
        );
    }

    #[test]
    fn an_alert_is_claimed_once_and_queued_once() {
        let s = MemoryStore::new();
        let a = Proposed {
            id: "drift/x".into(),
            lines: vec!["writ-audit {}".into()],
            payload: None,
            counters: vec![],
        };
        assert_eq!(propose(&s, a.clone()), Ok(true));
        assert_eq!(propose(&s, a.clone()), Ok(false), "one copy per instance");
        assert_eq!(take_proposed(&s), vec![a.clone()]);
        assert_eq!(take_proposed(&s), vec![]);
        let body: serde_json::Value =
            serde_json::from_slice(&claim_body("drift/x", "i1")).unwrap_or_default();
        assert_eq!(body["compare"][0]["mod_revision"], "0", "only if absent");
        assert_eq!(body["compare"][0]["key"], etcd::b64(b"writ/alert/drift/x"));
        let won = br#"{"header":{"revision":"9"},"succeeded":true}"#;
        let lost = br#"{"header":{"revision":"9"},"responses":[{"response_range":{"header":{"revision":"9"},"kvs":[{"key":"eA==","value":"aTI=","mod_revision":"8"}]}}]}"#;
        assert_eq!(claimed(won), Some(true));
        assert_eq!(claimed(lost), Some(false));
        assert_eq!(claimed(b"502"), None);
    }

    #[test]
    fn queued_records_are_taken_once_and_bounded() {
        let s = MemoryStore::new();
        assert!(take_records(&s).is_empty());
        assert!(queue_records(&s, &["a".into(), "b".into()]).is_ok());
        assert_eq!(take_records(&s), vec!["a".to_string(), "b".to_string()]);
        assert!(take_records(&s).is_empty());
        let many: Vec<String> = (0..MAX_RECORDS + 3).map(|i| i.to_string()).collect();
        assert!(queue_records(&s, &many).is_ok());
        let got = take_records(&s);
        assert_eq!(got.len(), MAX_RECORDS);
        assert_eq!(got[0], "3");
    }
}
