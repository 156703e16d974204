//! The hash chain of audit records written by Envoy's access log (`writ envoy --audit-log`):
//! the same line format as `writ serve`'s chained file (so `writ audit verify` and `show`
//! read both), with the head of the chain kept in shared data and advanced with CAS, so the
//! worker VMs of one Envoy extend one chain without losing or forking a link.
//!
//! Line format: the record's JSON object with `"prev_sha256"` (the previous line's sha256,
//! [`GENESIS`] for the first) and then `"sha256"` (the sha256 of the line without its
//! `,"sha256":"…"` suffix) appended.

use sha2::{Digest, Sha256};

use crate::store::SharedStore;

/// `prev_sha256` of the first line of a chain: 64 zeros.
pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// Shared-data key holding the sha256 of the chain's last line.
pub const HEAD_KEY: &str = "writ.audit.chain_head";

/// How often a worker retries advancing the head when another worker advanced it first.
const CAS_ATTEMPTS: usize = 64;

/// Lowercase hex sha256 of `bytes`.
pub fn sha256_hex(bytes: &[u8]) -> String {
    let d = Sha256::digest(bytes);
    let mut s = String::with_capacity(64);
    for b in d {
        s.push(char::from(b"0123456789abcdef"[usize::from(b >> 4)]));
        s.push(char::from(b"0123456789abcdef"[usize::from(b & 15)]));
    }
    s
}

/// Builds the chained line for `record` after a line whose hash is `prev`. A record that
/// is not a JSON object is wrapped as `{"record": ...}`; fields named `prev_sha256` or
/// `sha256` in the record are replaced.
pub fn chain_line(record: &serde_json::Value, prev: &str) -> String {
    let mut map = match record {
        serde_json::Value::Object(m) => m.clone(),
        other => {
            let mut m = serde_json::Map::new();
            m.insert("record".into(), other.clone());
            m
        }
    };
    map.remove("prev_sha256");
    map.remove("sha256");
    map.insert(
        "prev_sha256".into(),
        serde_json::Value::String(prev.to_string()),
    );
    // Serializing a map of JSON values cannot fail.
    let body = serde_json::to_string(&serde_json::Value::Object(map)).unwrap_or_default();
    let own = sha256_hex(body.as_bytes());
    let mut line = String::with_capacity(body.len() + 77);
    line.push_str(body.strip_suffix('}').unwrap_or(&body));
    line.push_str(",\"sha256\":\"");
    line.push_str(&own);
    line.push_str("\"}");
    line
}

/// Starts the chain if no worker has yet (called when a VM is configured, before traffic,
/// so two workers never both start it from an empty key during requests).
pub fn init(store: &impl SharedStore) {
    if store.get(HEAD_KEY).is_none() {
        let _ = store.set(HEAD_KEY, GENESIS.as_bytes(), 0);
    }
}

/// Chains `records` (JSON objects, in order) after the shared head and returns their lines.
/// The head moves only by CAS, so concurrent workers each get a distinct link. If the head
/// cannot be advanced after [`CAS_ATTEMPTS`] tries the lines are still returned, chained to
/// the last head seen: the record is never dropped, and `writ audit verify` names the fork.
pub fn chain(store: &impl SharedStore, records: &[serde_json::Value]) -> Vec<String> {
    let mut last = Vec::new();
    for _ in 0..CAS_ATTEMPTS {
        let (prev, cas) = match store.get(HEAD_KEY) {
            Some((v, cas)) => (String::from_utf8_lossy(&v).into_owned(), cas),
            None => (GENESIS.to_string(), 0),
        };
        let mut head = prev;
        let lines: Vec<String> = records
            .iter()
            .map(|r| {
                let line = chain_line(r, &head);
                head = sha256_hex(line.as_bytes());
                line
            })
            .collect();
        if store.set(HEAD_KEY, head.as_bytes(), cas).is_ok() {
            return lines;
        }
        last = lines;
    }
    last
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;
    use crate::store::MemoryStore;

    #[test]
    fn workers_extend_one_chain() {
        let store = std::sync::Arc::new(MemoryStore::new());
        init(&*store);
        let threads: Vec<_> = (0..4)
            .map(|t| {
                let store = store.clone();
                std::thread::spawn(move || {
                    (0..50)
                        .flat_map(|i| chain(&*store, &[serde_json::json!({"t": t, "i": i})]))
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        let lines: Vec<String> = threads
            .into_iter()
            .flat_map(|h| h.join().unwrap())
            .collect();
        // Every line links to exactly one other line or to the genesis: one chain.
        let mut children = std::collections::HashMap::new();
        for l in &lines {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            let prev = v["prev_sha256"].as_str().unwrap().to_string();
            assert!(children.insert(prev, l.clone()).is_none(), "forked chain");
        }
        let (mut at, mut n) = (GENESIS.to_string(), 0);
        while let Some(l) = children.get(&at) {
            at = sha256_hex(l.as_bytes());
            n += 1;
        }
        assert_eq!(n, 200);
    }
}
