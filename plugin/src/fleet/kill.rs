//! The kill switch across the fleet: a flip sent to any instance is written to the store
//! under the same key and bytes as in shared data (`writ/kill/<workflow>`,
//! [`crate::kill_switch::state_key`]), and every instance's tick reads the `writ/kill/`
//! range and applies what changed.
//!
//! Each store key's last applied revision is kept in shared data, so an instance applies
//! a store write once (one worker wins the CAS and audits it), never re-applies an older
//! value over a newer local flip, and keeps its last known state while the store is down.

use super::etcd::{self, Kv};
use crate::kill_switch::{self, KillState};
use crate::store::{self, SharedStore, Step, Stored};

/// The store range holding every workflow's switch.
pub const PREFIX: &str = "writ/kill/";

/// The body of the poll: a range read of [`PREFIX`].
pub fn poll_body() -> Vec<u8> {
    etcd::range_prefix(PREFIX)
}

/// The put that publishes a local flip of `workflow`: the bytes shared data now holds.
/// `None` when shared data has no state for it (nothing was flipped).
pub fn publish_body(local: &dyn SharedStore, workflow: &str) -> Option<Vec<u8>> {
    let key = kill_switch::state_key(workflow);
    let (bytes, _) = local.get(&key)?;
    Some(etcd::put(&key, &bytes))
}

/// The shared-data key listing local flips not yet written to the store.
pub const PENDING_KEY: &str = "writ/fleet/publish";

/// Marks a local flip of `workflow` for publication: the root context's tick writes it to
/// the store, retrying every tick while the store is down, so a flip made during an
/// outage reaches the fleet once the store is back.
pub fn mark_pending(local: &dyn SharedStore, workflow: &str) -> Result<(), store::StoreError> {
    super::add_line(local, PENDING_KEY, workflow)
}

/// Flips waiting for publication.
pub fn pending(local: &dyn SharedStore) -> Vec<String> {
    super::lines(local, PENDING_KEY)
}

/// The store has the flip of `workflow` (its put answered, at `revision`): no longer
/// pending, unless the bytes changed since the put was built (a newer flip, published
/// next tick). The revision counts as seen: a poll answered before the put, arriving
/// after it, holds an older write of the key and must not undo the flip.
pub fn published(local: &dyn SharedStore, workflow: &str, sent: &[u8], revision: i64) {
    let key = kill_switch::state_key(workflow);
    let _ = see(local, &key, revision);
    if local
        .get(&key)
        .is_some_and(|(v, _)| etcd::put(&key, &v) == sent)
    {
        let _ = super::remove_line(local, PENDING_KEY, workflow);
    }
}

/// One switch the poll applied on this instance, for its audit record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Applied {
    pub workflow: String,
    pub state: Option<KillState>,
    pub stopped: bool,
    pub revision: i64,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Seen(i64);

impl Stored for Seen {
    fn encode(&self) -> Vec<u8> {
        self.0.to_le_bytes().to_vec()
    }
    fn decode(bytes: &[u8]) -> Option<Seen> {
        Some(Seen(i64::from_le_bytes(bytes.try_into().ok()?)))
    }
}

fn seen_key(store_key: &str) -> String {
    format!("writ/fleet/seen/{store_key}")
}

/// Records that this instance has `revision` of `store_key` (a poll's answer or its own
/// put's); true when it is newer than any it had, so exactly one worker acts on it.
fn see(local: &dyn SharedStore, store_key: &str, revision: i64) -> Result<bool, store::StoreError> {
    store::update(local, &seen_key(store_key), |s: &Seen| {
        if s.0 >= revision {
            Step::Keep(false)
        } else {
            Step::Write(Seen(revision), true)
        }
    })
}

/// Undoes [`crate::store::key_segment`]'s percent-encoding, for the workflow name.
fn unsegment(segment: &str) -> String {
    let bytes = segment.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while let Some(&b) = bytes.get(i) {
        let hex = bytes
            .get(i + 1..i + 3)
            .and_then(|h| std::str::from_utf8(h).ok())
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        match (b, hex) {
            (b'%', Some(v)) => {
                out.push(v);
                i += 3;
            }
            _ => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Applies the poll's answer to shared data: every switch written in the store since this
/// instance last applied it, whose bytes differ from the local ones. Returns what this
/// call applied (another worker may have applied the same write first; it is then not
/// returned here, so each instance audits each change once). `None` when the answer is
/// not etcd's: the caller keeps the last known state.
pub fn apply_poll(local: &dyn SharedStore, reply: &[u8]) -> Option<Vec<Applied>> {
    let kvs = etcd::parse_range(reply)?;
    // A local flip not yet published is newer than anything the store holds for its
    // workflow: its put comes next tick, at a newer revision.
    let unpublished = pending(local);
    let mut applied = Vec::new();
    for Kv {
        key,
        value,
        mod_revision,
    } in kvs
    {
        let Ok(key) = String::from_utf8(key) else {
            continue;
        };
        let Some(segment) = key.strip_prefix(PREFIX) else {
            continue;
        };
        let workflow = unsegment(segment);
        if unpublished.contains(&workflow) {
            continue;
        }
        if see(local, &key, mod_revision) != Ok(true) {
            continue;
        }
        if local.get(&key).is_some_and(|(v, _)| v == value) {
            continue;
        }
        if local.set(&key, &value, 0).is_err() {
            continue;
        }
        applied.push(Applied {
            stopped: value.first() != Some(&b'R'),
            state: kill_switch::state(local, &workflow),
            workflow,
            revision: mod_revision,
        });
    }
    Some(applied)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::MemoryStore;

    fn answer(kvs: &[(&str, &[u8], i64)]) -> Vec<u8> {
        let list: Vec<serde_json::Value> = kvs
            .iter()
            .map(|(k, v, r)| {
                serde_json::json!({"key": etcd::b64(k.as_bytes()), "value": etcd::b64(v),
                    "mod_revision": r.to_string()})
            })
            .collect();
        serde_json::json!({"header": {"revision": "9"}, "kvs": list})
            .to_string()
            .into_bytes()
    }

    #[test]
    fn a_flip_in_the_store_is_applied_once_and_old_writes_never_win() {
        let a = MemoryStore::new();
        let stop = br#"S{"stopped":true,"by":"ops","at":"2026-12-06T00:00:00Z","reason":"x"}"#;
        let run = br#"R{"stopped":false,"by":"ops","at":"2026-12-06T00:00:01Z","reason":"y"}"#;
        let got = apply_poll(&a, &answer(&[("writ/kill/support", stop, 5)]));
        assert_eq!(got.as_ref().map(Vec::len), Some(1));
        assert_eq!(got.and_then(|v| v.first().map(|x| x.stopped)), Some(true));
        assert!(kill_switch::is_stopped(&a, Some("support")));
        // The same answer again (another worker's tick) applies nothing.
        assert_eq!(
            apply_poll(&a, &answer(&[("writ/kill/support", stop, 5)])),
            Some(vec![])
        );
        // A local resume (this instance's admin path) is not undone by the older store write.
        assert_eq!(a.set("writ/kill/support", run, 0), Ok(()));
        assert_eq!(
            apply_poll(&a, &answer(&[("writ/kill/support", stop, 5)])),
            Some(vec![])
        );
        assert!(!kill_switch::is_stopped(&a, Some("support")));
        // The published resume comes back at a newer revision: same bytes, no audit.
        assert_eq!(
            apply_poll(&a, &answer(&[("writ/kill/support", run, 6)])),
            Some(vec![])
        );
        // A store that is down or answers garbage changes nothing.
        assert_eq!(apply_poll(&a, b"<html>"), None);
        assert!(!kill_switch::is_stopped(&a, Some("support")));
    }

    /// A local flip against polls that race it. The store holds a stop (revision 5) this
    /// instance has not polled yet, and an operator resumes here. A poll answered before
    /// the resume's put holds the stop: it must not undo the resume, whether it arrives
    /// while the resume waits for its put (pending) or after the put answered (revision 6
    /// seen). The same holds when the stop was this instance's own, published at 5.
    #[test]
    fn a_poll_older_than_a_local_flip_never_undoes_it() {
        let stop = br#"S{"stopped":true,"by":"ops","at":"2026-12-06T00:00:00Z","reason":"x"}"#;
        let run = br#"R{"stopped":false,"by":"ops","at":"2026-12-06T00:00:01Z","reason":"y"}"#;
        let stale = answer(&[("writ/kill/support", stop, 5)]);
        let resume = |a: &MemoryStore| {
            assert_eq!(a.set("writ/kill/support", run, 0), Ok(()));
            assert_eq!(mark_pending(a, "support"), Ok(()));
        };
        let publish = |a: &MemoryStore, revision: i64| {
            let sent = publish_body(a, "support").unwrap_or_default();
            published(a, "support", &sent, revision);
            assert!(pending(a).is_empty());
        };
        // Another instance's stop; the resume here still waits for its put.
        let a = MemoryStore::new();
        resume(&a);
        assert_eq!(apply_poll(&a, &stale), Some(vec![]));
        assert!(!kill_switch::is_stopped(&a, Some("support")));
        // Its put answers; the stale answer arrives again, after it.
        publish(&a, 6);
        assert_eq!(apply_poll(&a, &stale), Some(vec![]));
        assert!(!kill_switch::is_stopped(&a, Some("support")));
        // This instance's own stop, then the resume, both published before the stale poll.
        let b = MemoryStore::new();
        assert_eq!(b.set("writ/kill/support", stop, 0), Ok(()));
        assert_eq!(mark_pending(&b, "support"), Ok(()));
        publish(&b, 5);
        resume(&b);
        publish(&b, 6);
        assert_eq!(apply_poll(&b, &stale), Some(vec![]));
        assert!(!kill_switch::is_stopped(&b, Some("support")));
        // Without a local flip, another instance's stop is applied as before; and a stop
        // written after this instance's flip was published wins over it.
        let c = MemoryStore::new();
        assert_eq!(apply_poll(&c, &stale).map(|v| v.len()), Some(1));
        assert!(kill_switch::is_stopped(&c, Some("support")));
        resume(&c);
        publish(&c, 6);
        let newer = answer(&[("writ/kill/support", stop, 7)]);
        assert_eq!(apply_poll(&c, &newer).map(|v| v.len()), Some(1));
        assert!(kill_switch::is_stopped(&c, Some("support")));
    }

    #[test]
    fn every_workflow_and_encoded_names_are_applied() {
        let a = MemoryStore::new();
        let stop = br#"S{"stopped":true,"by":"ops","at":"t","reason":""}"#;
        let got = apply_poll(
            &a,
            &answer(&[("writ/kill/*", stop, 2), ("writ/kill/a%2Fb", stop, 3)]),
        );
        let names: Vec<String> = got
            .unwrap_or_default()
            .into_iter()
            .map(|x| x.workflow)
            .collect();
        assert_eq!(names, vec!["*".to_string(), "a/b".to_string()]);
        assert!(kill_switch::is_stopped(&a, Some("anything")));
    }

    #[test]
    fn pending_flips_leave_the_list_once_published_unchanged() {
        let a = MemoryStore::new();
        let _ = a.set("writ/kill/support", b"S{}", 0);
        assert_eq!(mark_pending(&a, "support"), Ok(()));
        assert_eq!(mark_pending(&a, "support"), Ok(()));
        assert_eq!(pending(&a), vec!["support".to_string()]);
        let sent = publish_body(&a, "support").unwrap_or_default();
        // A newer flip after the put was built stays pending.
        let _ = a.set("writ/kill/support", b"R{}", 0);
        published(&a, "support", &sent, 4);
        assert_eq!(pending(&a).len(), 1);
        let sent = publish_body(&a, "support").unwrap_or_default();
        published(&a, "support", &sent, 5);
        assert!(pending(&a).is_empty());
    }

    #[test]
    fn publishing_sends_the_local_bytes() {
        let a = MemoryStore::new();
        assert_eq!(publish_body(&a, "support"), None);
        let _ = a.set("writ/kill/support", b"S{}", 0);
        let body: serde_json::Value =
            serde_json::from_slice(&publish_body(&a, "support").unwrap_or_default())
                .unwrap_or_default();
        assert_eq!(body["value"], etcd::b64(b"S{}"));
        assert_eq!(body["key"], etcd::b64(b"writ/kill/support"));
    }
}
