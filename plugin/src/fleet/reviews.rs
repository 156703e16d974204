//! Escalations in the fleet store, so that a reviewer's verdict reaches any instance, not
//! only the one that escalated (`docs/fleet.md`, "Verdicts").
//!
//! - An instance that escalates remembers the escalation in its shared data as a lone
//!   gateway does, and queues it ([`queue`]); its root context's tick publishes it as
//!   `writ/review/item/<review id>` with a create-only transaction ([`publish_body`]),
//!   attached to an etcd lease of [`TTL_SECS`] so the store forgets it after about a week
//!   (the longest review a verdict may report). The tick grants a fresh lease once a day
//!   ([`lease`], [`grant_body`], [`granted`]).
//! - A verdict, on any instance, claims the escalation in the store with one transaction
//!   ([`claim_body`]): the published item (version 1) is overwritten, keeping its lease,
//!   with the verdict, and its previous value (the escalation) comes back in the answer. A
//!   second verdict finds version 2 and is refused (409), fleet-wide. The escalating
//!   instance may take a verdict before its tick published the item: it then creates the
//!   item already reviewed (version 0 expected), and its later publish finds it there.
//!
//! Plain Rust, no host calls: bodies out, answers in.

use serde::{Deserialize, Serialize};
use serde_json::{Value as Json, json};

use super::etcd;
use crate::review_verdict::ReviewItem;
use crate::store::{self, SharedStore, Step, StoreError, Stored};

/// Where escalations live in the store.
pub const ITEM_PREFIX: &str = "writ/review/item/";

/// etcd's lease grant.
pub const LEASE_PATH: &str = "/v3/lease/grant";

/// How long the store keeps an escalation: eight days, so every item lives at least a
/// week (a lease is used for a day after its grant).
pub const TTL_SECS: i64 = 8 * 86_400;

/// How long a lease is used for new items before a fresh one is granted.
pub const RENEW_SECS: i64 = 86_400;

/// Escalations waiting to be published at most; beyond, the oldest are dropped (their
/// verdicts are then taken only by the instance that escalated).
pub const MAX_QUEUED: usize = 1_024;

/// Escalations one tick publishes at most (one transaction each).
pub const PER_TICK: usize = 32;

/// The store key of an escalation.
pub fn item_key(review_id: &str) -> String {
    format!("{ITEM_PREFIX}{}", store::key_segment(review_id))
}

/// The shared-data key of the escalations waiting for the tick.
const QUEUE_KEY: &str = "writ/fleet/escalations";

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct Queue(Vec<(String, ReviewItem)>);

impl Stored for Queue {
    fn encode(&self) -> Vec<u8> {
        serde_json::to_vec(&self.0).unwrap_or_default()
    }
    fn decode(bytes: &[u8]) -> Option<Queue> {
        serde_json::from_slice(bytes).ok().map(Queue)
    }
}

/// Queues an escalation for the tick to publish. Returns how many older ones were
/// dropped to stay within [`MAX_QUEUED`].
pub fn queue(
    local: &dyn SharedStore,
    review_id: &str,
    item: &ReviewItem,
) -> Result<usize, StoreError> {
    store::update(local, QUEUE_KEY, |q: &Queue| {
        if q.0.iter().any(|(id, _)| id == review_id) {
            return Step::Keep(0);
        }
        let mut next = q.0.clone();
        next.push((review_id.to_string(), item.clone()));
        let over = next.len().saturating_sub(MAX_QUEUED);
        next.drain(..over);
        Step::Write(Queue(next), over)
    })
}

/// Takes up to `n` queued escalations, oldest first (one worker's tick gets each).
pub fn take(local: &dyn SharedStore, n: usize) -> Vec<(String, ReviewItem)> {
    if local.get(QUEUE_KEY).is_none_or(|(v, _)| v.len() <= 2) {
        return Vec::new();
    }
    store::update(local, QUEUE_KEY, |q: &Queue| {
        if q.0.is_empty() {
            return Step::Keep(Vec::new());
        }
        let mut rest = q.0.clone();
        let taken: Vec<_> = rest.drain(..n.min(rest.len())).collect();
        Step::Write(Queue(rest), taken)
    })
    .unwrap_or_default()
}

/// Whether escalations wait to be published.
pub fn pending(local: &dyn SharedStore) -> bool {
    local.get(QUEUE_KEY).is_some_and(|(v, _)| v.len() > 2)
}

/// Puts an escalation back after the store did not answer its publish.
pub fn requeue(local: &dyn SharedStore, review_id: &str, item: &ReviewItem) {
    let _ = queue(local, review_id, item);
}

// ---------------------------------------------------------------------------------------
// The lease that bounds how long the store keeps escalations

const LEASE_KEY: &str = "writ/fleet/review-lease";

/// (lease id, unix seconds of its grant).
#[derive(Debug, Clone, Copy, Default)]
struct Lease(i64, i64);

impl Stored for Lease {
    fn encode(&self) -> Vec<u8> {
        let mut out = self.0.to_le_bytes().to_vec();
        out.extend_from_slice(&self.1.to_le_bytes());
        out
    }
    fn decode(bytes: &[u8]) -> Option<Lease> {
        let (id, at) = bytes.split_first_chunk::<8>()?;
        Some(Lease(
            i64::from_le_bytes(*id),
            i64::from_le_bytes(at.try_into().ok()?),
        ))
    }
}

/// The lease new items are attached to, while it is younger than [`RENEW_SECS`]; `None`
/// when the tick must grant one first.
pub fn lease(local: &dyn SharedStore, now_secs: i64) -> Option<i64> {
    store::read::<Lease>(local, LEASE_KEY)
        .ok()
        .filter(|l| l.0 != 0 && now_secs.saturating_sub(l.1) < RENEW_SECS)
        .map(|l| l.0)
}

/// The body of a lease grant of [`TTL_SECS`].
pub fn grant_body() -> Vec<u8> {
    json!({"TTL": TTL_SECS.to_string()})
        .to_string()
        .into_bytes()
}

/// Takes a grant's answer: the lease id, remembered for the next day's items; `None`
/// when the answer is not etcd's.
pub fn granted(local: &dyn SharedStore, reply: &[u8], now_secs: i64) -> Option<i64> {
    let v: Json = serde_json::from_slice(reply).ok()?;
    let id = int(&v["ID"]).filter(|id| *id != 0)?;
    let _ = local.set(LEASE_KEY, &Lease(id, now_secs).encode(), 0);
    Some(id)
}

/// Forgets the lease (a publish the store refused may have named a lease it no longer
/// has): the next tick grants a fresh one.
pub fn forget_lease(local: &dyn SharedStore) {
    let _ = local.set(LEASE_KEY, &Lease::default().encode(), 0);
}

fn int(v: &Json) -> Option<i64> {
    match v {
        Json::String(s) => s.parse().ok(),
        Json::Number(n) => n.as_i64(),
        _ => None,
    }
}

// ---------------------------------------------------------------------------------------
// Publishing and claiming

fn compare_version(key: &str, version: i64) -> Json {
    json!({"key": etcd::b64(key.as_bytes()), "target": "VERSION", "result": "EQUAL",
           "version": version.to_string()})
}

/// The create-only put of an escalation under `lease`.
pub fn publish_body(review_id: &str, item: &ReviewItem, lease: i64) -> Vec<u8> {
    let key = item_key(review_id);
    let value = serde_json::to_vec(item).unwrap_or_default();
    json!({
        "compare": [compare_version(&key, 0)],
        "success": [{"request_put": {"key": etcd::b64(key.as_bytes()),
                                     "value": etcd::b64(&value),
                                     "lease": lease.to_string()}}],
        "failure": []
    })
    .to_string()
    .into_bytes()
}

/// The answer to a publish: `Some(true)` created, `Some(false)` it was there already (a
/// verdict came first), `None` the store did not answer as etcd (publish again later).
pub fn published(reply: &[u8]) -> Option<bool> {
    let v: Json = serde_json::from_slice(reply).ok()?;
    v.get("header")?;
    Some(v["succeeded"].as_bool().unwrap_or(false))
}

/// The claim of a verdict: expects the item at `version` (0: not published yet, this
/// instance escalated it; 1: published, no verdict) and writes `marked` over it, keeping
/// its lease (or attaching `lease` to a new one). The answer carries the previous value,
/// or, when the claim fails, the item as it is.
pub fn claim_body(
    review_id: &str,
    version: i64,
    marked: &ReviewItem,
    lease: Option<i64>,
) -> Vec<u8> {
    let key = item_key(review_id);
    let value = serde_json::to_vec(marked).unwrap_or_default();
    let mut put = json!({"key": etcd::b64(key.as_bytes()), "value": etcd::b64(&value),
                         "prev_kv": true});
    match (version, lease) {
        (0, Some(l)) => put["lease"] = json!(l.to_string()),
        (0, None) => {}
        _ => put["ignore_lease"] = json!(true),
    }
    json!({
        "compare": [compare_version(&key, version)],
        "success": [{"request_put": put}],
        "failure": [{"request_range": {"key": etcd::b64(key.as_bytes())}}]
    })
    .to_string()
    .into_bytes()
}

/// What the store said to a claim.
#[derive(Debug, Clone, PartialEq)]
pub enum Claimed {
    /// This verdict is the review's; the escalation as the store held it (`None` when
    /// this instance created the item).
    Won(Option<ReviewItem>),
    /// No instance published this review (or the store forgot it after [`TTL_SECS`]).
    Absent,
    /// Published and not reviewed: claim again expecting version 1.
    Published,
    /// Another verdict was there first.
    Reviewed,
}

/// Reads a claim's answer; `None` when it is not etcd's.
pub fn parse_claim(reply: &[u8]) -> Option<Claimed> {
    let v: Json = serde_json::from_slice(reply).ok()?;
    v.get("header")?;
    let first = &v["responses"][0];
    if v["succeeded"].as_bool().unwrap_or(false) {
        let prev = first["response_put"]["prev_kv"]["value"]
            .as_str()
            .and_then(etcd::unb64)
            .and_then(|b| serde_json::from_slice::<ReviewItem>(&b).ok());
        return Some(Claimed::Won(prev));
    }
    let kv = &first["response_range"]["kvs"][0];
    if kv.is_null() {
        return Some(Claimed::Absent);
    }
    Some(match int(&kv["version"]) {
        Some(1) => Claimed::Published,
        _ => Claimed::Reviewed,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::MemoryStore;

    fn item(wf: &str) -> ReviewItem {
        ReviewItem {
            workflow: wf.into(),
            request_id: "req-1".into(),
            at: 900,
            verdict: None,
        }
    }

    #[test]
    fn escalations_queue_bounded_and_leave_in_ticks() {
        let s = MemoryStore::new();
        assert!(take(&s, PER_TICK).is_empty());
        assert_eq!(queue(&s, "rev-1", &item("w")), Ok(0));
        assert_eq!(queue(&s, "rev-1", &item("w")), Ok(0), "queued once");
        for i in 0..MAX_QUEUED {
            let _ = queue(&s, &format!("rev-x{i}"), &item("w"));
        }
        let first = take(&s, PER_TICK);
        assert_eq!(first.len(), PER_TICK);
        assert_eq!(
            first[0].0, "rev-x0",
            "the oldest was dropped past the bound"
        );
        let mut left = 0;
        loop {
            let got = take(&s, PER_TICK).len();
            if got == 0 {
                break;
            }
            left += got;
        }
        assert_eq!(left, MAX_QUEUED - PER_TICK);
    }

    #[test]
    fn a_lease_is_granted_then_used_for_a_day() {
        let s = MemoryStore::new();
        assert_eq!(lease(&s, 1_000), None);
        let g: Json = serde_json::from_slice(&grant_body()).unwrap_or_default();
        assert_eq!(g["TTL"], TTL_SECS.to_string());
        assert_eq!(granted(&s, b"<html>", 1_000), None);
        let reply = br#"{"header":{"revision":"5"},"ID":"7587861234","TTL":"691200"}"#;
        assert_eq!(granted(&s, reply, 1_000), Some(7_587_861_234));
        assert_eq!(lease(&s, 1_000 + RENEW_SECS - 1), Some(7_587_861_234));
        assert_eq!(lease(&s, 1_000 + RENEW_SECS), None, "a fresh one each day");
    }

    #[test]
    fn publish_is_create_only_under_the_lease() {
        let v: Json =
            serde_json::from_slice(&publish_body("rev-1", &item("w"), 42)).unwrap_or_default();
        assert_eq!(v["compare"][0]["target"], "VERSION");
        assert_eq!(v["compare"][0]["version"], "0");
        assert_eq!(v["compare"][0]["key"], etcd::b64(b"writ/review/item/rev-1"));
        assert_eq!(v["success"][0]["request_put"]["lease"], "42");
        assert_eq!(published(br#"{"header":{},"succeeded":true}"#), Some(true));
        assert_eq!(published(br#"{"header":{}}"#), Some(false));
        assert_eq!(published(b"502"), None);
    }

    #[test]
    fn a_claim_wins_once_and_says_why_it_lost() {
        let mut marked = item("w");
        marked.verdict = Some("approved".into());
        let v: Json =
            serde_json::from_slice(&claim_body("rev-1", 1, &marked, Some(7))).unwrap_or_default();
        assert_eq!(v["compare"][0]["version"], "1");
        assert_eq!(v["success"][0]["request_put"]["ignore_lease"], true);
        assert_eq!(v["success"][0]["request_put"]["prev_kv"], true);
        assert!(v["success"][0]["request_put"]["lease"].is_null());
        let v: Json =
            serde_json::from_slice(&claim_body("rev-1", 0, &marked, Some(7))).unwrap_or_default();
        assert_eq!(v["success"][0]["request_put"]["lease"], "7");
        let prev = etcd::b64(&serde_json::to_vec(&item("w")).unwrap_or_default());
        let won = format!(
            r#"{{"header":{{}},"succeeded":true,"responses":[{{"response_put":{{"prev_kv":{{"value":"{prev}","version":"1"}}}}}}]}}"#
        );
        assert_eq!(
            parse_claim(won.as_bytes()),
            Some(Claimed::Won(Some(item("w"))))
        );
        let created =
            r#"{"header":{},"succeeded":true,"responses":[{"response_put":{"header":{}}}]}"#;
        assert_eq!(parse_claim(created.as_bytes()), Some(Claimed::Won(None)));
        let absent = r#"{"header":{},"responses":[{"response_range":{"header":{}}}]}"#;
        assert_eq!(parse_claim(absent.as_bytes()), Some(Claimed::Absent));
        let at = |version: &str| {
            format!(
                r#"{{"header":{{}},"responses":[{{"response_range":{{"kvs":[{{"value":"{prev}","version":"{version}"}}]}}}}]}}"#
            )
        };
        assert_eq!(parse_claim(at("1").as_bytes()), Some(Claimed::Published));
        assert_eq!(parse_claim(at("2").as_bytes()), Some(Claimed::Reviewed));
        assert_eq!(parse_claim(b"<html>"), None);
    }
}
