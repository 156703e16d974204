//! The shared key-value store the engine keeps cross-request state in: spend ledgers,
//! kill-switch flags, verification-rate counters.
//!
//! It mirrors proxy-wasm shared data, which Envoy shares between all worker threads (VMs)
//! of the same `vm_id`: `get` returns the value with a CAS token, and `set` with a token
//! stores only if the key still carries it. The filter implements [`SharedStore`] on
//! `proxy_wasm::hostcalls::{get_shared_data, set_shared_data}`; tests and benches use
//! [`MemoryStore`], which follows Envoy's semantics exactly.
//!
//! Architecture invariant: every read-modify-write of shared state goes through
//! [`update`], so the CAS retry and creation rules live in one place.
//!
//! The filter's implementation is a few lines (the SDK's wrappers `panic!` on a status
//! other than Ok, NotFound and CasMismatch; Envoy returns no other for these calls):
//!
//! ```ignore
//! struct HostStore;
//! impl SharedStore for HostStore {
//!     fn get(&self, key: &str) -> Option<(Vec<u8>, u32)> {
//!         match proxy_wasm::hostcalls::get_shared_data(key) {
//!             Ok((Some(v), Some(cas))) => Some((v, cas)),
//!             Ok((None, Some(cas))) => Some((Vec::new(), cas)),
//!             _ => None,
//!         }
//!     }
//!     fn set(&self, key: &str, value: &[u8], cas: u32) -> Result<(), CasMismatch> {
//!         let cas = (cas != 0).then_some(cas);
//!         proxy_wasm::hostcalls::set_shared_data(key, Some(value), cas).map_err(|_| CasMismatch)
//!     }
//! }
//! ```

use std::collections::HashMap;
use std::sync::Mutex;

/// A `set` whose CAS token was stale: another worker wrote the key since it was read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CasMismatch;

impl std::fmt::Display for CasMismatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "shared data was changed concurrently (cas mismatch)")
    }
}

impl std::error::Error for CasMismatch {}

/// Shared data as proxy-wasm exposes it.
///
/// Semantics the engine relies on (those of Envoy's `proxy-wasm-cpp-host`):
/// - `get` of a missing key is `None`; a present key comes with a non-zero CAS token that
///   changes on every write.
/// - `set` with `cas == 0` writes unconditionally; with a non-zero `cas` it fails with
///   [`CasMismatch`] when the key exists and carries a different token. On a missing key
///   Envoy creates it whatever the token; a host that refuses instead (writ-runtime does)
///   is handled by [`update`].
/// - Any host error other than a CAS mismatch should be reported as [`CasMismatch`] too:
///   callers retry a bounded number of times and then fail closed.
pub trait SharedStore {
    /// The value and its CAS token, or `None` when the key was never written.
    fn get(&self, key: &str) -> Option<(Vec<u8>, u32)>;
    /// Stores `value` if `cas` is 0 or still the key's token.
    fn set(&self, key: &str, value: &[u8], cas: u32) -> Result<(), CasMismatch>;
}

impl<S: SharedStore + ?Sized> SharedStore for &S {
    fn get(&self, key: &str) -> Option<(Vec<u8>, u32)> {
        (**self).get(key)
    }
    fn set(&self, key: &str, value: &[u8], cas: u32) -> Result<(), CasMismatch> {
        (**self).set(key, value, cas)
    }
}

/// Thread-safe in-memory shared data with Envoy's exact semantics: one global token
/// counter (so two entries never carry the same token), creation on `set` whatever the
/// token, and a mismatch only against an existing entry.
#[derive(Debug)]
pub struct MemoryStore {
    inner: Mutex<MemoryInner>,
}

#[derive(Debug)]
struct MemoryInner {
    map: HashMap<String, (Vec<u8>, u32)>,
    next_cas: u32,
}

impl Default for MemoryStore {
    fn default() -> Self {
        MemoryStore {
            inner: Mutex::new(MemoryInner {
                map: HashMap::new(),
                next_cas: 1,
            }),
        }
    }
}

impl MemoryStore {
    /// An empty store.
    pub fn new() -> MemoryStore {
        MemoryStore::default()
    }

    /// Every key currently stored, sorted, for tests and diagnostics.
    pub fn keys(&self) -> Vec<String> {
        let inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        let mut keys: Vec<String> = inner.map.keys().cloned().collect();
        keys.sort();
        keys
    }
}

impl SharedStore for MemoryStore {
    fn get(&self, key: &str) -> Option<(Vec<u8>, u32)> {
        // A poisoned lock only means another test thread panicked; the map is still whole.
        let inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        inner.map.get(key).cloned()
    }

    fn set(&self, key: &str, value: &[u8], cas: u32) -> Result<(), CasMismatch> {
        let mut inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        let token = inner.next_cas;
        if let Some((_, current)) = inner.map.get(key)
            && cas != 0
            && cas != *current
        {
            return Err(CasMismatch);
        }
        inner.next_cas = inner.next_cas.wrapping_add(1).max(1);
        inner.map.insert(key.to_string(), (value.to_vec(), token));
        Ok(())
    }
}

/// How many times [`update`] re-reads after losing a race before it gives up. Each lost
/// race means another worker made progress, and one attempt is a get and a set (about a
/// microsecond), so the bound caps a starved worker at about a millisecond; 64 proved too
/// few with 8 threads hammering one key on 2 cores (`tests/governance.rs`). The caller
/// then fails closed.
pub const MAX_CAS_RETRIES: usize = 1024;

/// The token [`update`] writes a missing key with. On Envoy a non-zero token creates a
/// missing key but fails against an existing one, which makes it a create-if-absent: two
/// workers that both saw the key missing cannot both create it (the second gets a
/// mismatch and retries on the first one's value). Tokens come from one global counter,
/// so an existing entry carries this exact value only once every 2^32 writes, and only a
/// race at that very write could slip through.
pub const CREATE_CAS: u32 = u32::MAX;

/// Why a shared-state update did not happen.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreError {
    /// Lost the CAS race [`MAX_CAS_RETRIES`] times in a row.
    Contended,
    /// The stored bytes are not a value this engine wrote.
    Corrupt(String),
}

impl std::fmt::Display for StoreError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StoreError::Contended => write!(f, "shared data stayed contended after retries"),
            StoreError::Corrupt(key) => write!(f, "shared data under `{key}` is corrupt"),
        }
    }
}

impl std::error::Error for StoreError {}

/// What an update closure decides after seeing the current value.
pub enum Step<T, R> {
    /// Write this value and return this result.
    Write(T, R),
    /// Write nothing and return this result.
    Keep(R),
}

/// A value kept in shared data with a compact binary encoding.
pub trait Stored: Sized + Default {
    /// The bytes stored.
    fn encode(&self) -> Vec<u8>;
    /// `None` when the bytes are not a valid encoding.
    fn decode(bytes: &[u8]) -> Option<Self>;
}

/// Reads `key` (a missing key reads as `T::default()`), and applies `f`; when it asks to
/// write, stores the result with the token read, retrying on a CAS mismatch.
///
/// Creation of a missing key uses [`CREATE_CAS`] so two creators cannot overwrite each
/// other on Envoy; on a host that refuses a non-zero token for a missing key (the
/// mismatch is answered while the key is still missing) it falls back to an
/// unconditional write, the best such a host allows.
pub fn update<T: Stored, R>(
    store: &dyn SharedStore,
    key: &str,
    mut f: impl FnMut(&T) -> Step<T, R>,
) -> Result<R, StoreError> {
    let mut strict_host = false;
    for _ in 0..MAX_CAS_RETRIES {
        let (current, cas) = match store.get(key) {
            Some((bytes, cas)) => match T::decode(&bytes) {
                Some(v) => (v, cas),
                None => return Err(StoreError::Corrupt(key.to_string())),
            },
            None => (T::default(), 0),
        };
        match f(&current) {
            Step::Keep(r) => return Ok(r),
            Step::Write(next, r) => {
                let token = match (cas, strict_host) {
                    (0, false) => CREATE_CAS,
                    (0, true) => 0,
                    (c, _) => c,
                };
                match store.set(key, &next.encode(), token) {
                    Ok(()) => return Ok(r),
                    Err(CasMismatch) => {
                        if cas == 0 && !strict_host && store.get(key).is_none() {
                            strict_host = true;
                        }
                    }
                }
            }
        }
    }
    Err(StoreError::Contended)
}

/// Adds a request to each of `keys` in order, so it holds every counter or none: `add`
/// returns the next value and a result, or refuses the key (`Err`). On a refusal the keys
/// already added are given back with `rollback` and the refusal is returned with the
/// key's index; on a store error they are given back best effort (a count left over
/// expires with its window) and the error is returned. Budgets and rate limits share it.
pub fn reserve_all<K, T: Stored, R, E>(
    store: &dyn SharedStore,
    keys: &[K],
    key_of: impl Fn(&K) -> &str,
    mut add: impl FnMut(&K, &T) -> Result<(T, R), E>,
    rollback: impl FnOnce(&[K]) -> Result<(), StoreError>,
) -> Result<Result<Vec<R>, (usize, E)>, StoreError> {
    let mut results = Vec::with_capacity(keys.len());
    for (i, k) in keys.iter().enumerate() {
        let done = keys.get(..i).unwrap_or_default();
        match update(store, key_of(k), |v: &T| match add(k, v) {
            Ok((next, r)) => Step::Write(next, Ok(r)),
            Err(e) => Step::Keep(Err(e)),
        }) {
            Ok(Ok(r)) => results.push(r),
            Ok(Err(e)) => {
                rollback(done)?;
                return Ok(Err((i, e)));
            }
            Err(e) => {
                let _ = rollback(done);
                return Err(e);
            }
        }
    }
    Ok(Ok(results))
}

/// Reads and decodes `key`; a missing key is `T::default()`.
pub fn read<T: Stored>(store: &dyn SharedStore, key: &str) -> Result<T, StoreError> {
    match store.get(key) {
        None => Ok(T::default()),
        Some((bytes, _)) => T::decode(&bytes).ok_or_else(|| StoreError::Corrupt(key.to_string())),
    }
}

/// Makes an identity value (a team or user header) safe as one segment of a store key:
/// `/` and `%` and control characters are percent-encoded, so `a/b` and `a%2Fb` never
/// share a ledger and no value can reach another key's namespace.
pub fn key_segment(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for c in value.chars() {
        if c == '/' || c == '%' || c.is_control() {
            let mut buf = [0u8; 4];
            for b in c.encode_utf8(&mut buf).bytes() {
                out.push_str(&format!("%{b:02X}"));
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// Little-endian helpers for the fixed layouts of stored values.
pub(crate) struct Cursor<'a> {
    bytes: &'a [u8],
}

impl<'a> Cursor<'a> {
    pub(crate) fn new(bytes: &'a [u8]) -> Cursor<'a> {
        Cursor { bytes }
    }
    fn take<const N: usize>(&mut self) -> Option<[u8; N]> {
        let (head, rest) = self.bytes.split_first_chunk::<N>()?;
        self.bytes = rest;
        Some(*head)
    }
    pub(crate) fn u8(&mut self) -> Option<u8> {
        self.take::<1>().map(|b| b[0])
    }
    pub(crate) fn u32(&mut self) -> Option<u32> {
        self.take::<4>().map(u32::from_le_bytes)
    }
    pub(crate) fn i64(&mut self) -> Option<i64> {
        self.take::<8>().map(i64::from_le_bytes)
    }
    pub(crate) fn u64(&mut self) -> Option<u64> {
        self.take::<8>().map(u64::from_le_bytes)
    }
    pub(crate) fn rest(self) -> &'a [u8] {
        self.bytes
    }
    pub(crate) fn is_empty(&self) -> bool {
        self.bytes.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Default, Debug, PartialEq)]
    struct Counter(u64);
    impl Stored for Counter {
        fn encode(&self) -> Vec<u8> {
            self.0.to_le_bytes().to_vec()
        }
        fn decode(bytes: &[u8]) -> Option<Self> {
            Some(Counter(u64::from_le_bytes(bytes.try_into().ok()?)))
        }
    }

    #[test]
    fn memory_store_follows_envoy_cas_rules() {
        let s = MemoryStore::new();
        assert_eq!(s.get("k"), None);
        // A non-zero token creates a missing key, as in Envoy.
        assert_eq!(s.set("k", b"1", 77), Ok(()));
        let (v, cas) = s.get("k").unwrap_or_default();
        assert_eq!(v, b"1");
        assert_ne!(cas, 0);
        assert_eq!(s.set("k", b"2", cas), Ok(()));
        assert_eq!(s.set("k", b"3", cas), Err(CasMismatch));
        assert_eq!(s.set("k", b"4", 0), Ok(()));
        assert_eq!(s.get("k").map(|(v, _)| v), Some(b"4".to_vec()));
    }

    /// A host like writ-runtime refuses a non-zero token on a missing key.
    struct StrictStore(MemoryStore);
    impl SharedStore for StrictStore {
        fn get(&self, key: &str) -> Option<(Vec<u8>, u32)> {
            self.0.get(key)
        }
        fn set(&self, key: &str, value: &[u8], cas: u32) -> Result<(), CasMismatch> {
            if cas != 0 && self.0.get(key).is_none() {
                return Err(CasMismatch);
            }
            self.0.set(key, value, cas)
        }
    }

    #[test]
    fn update_creates_on_both_kinds_of_host() {
        let envoy = MemoryStore::new();
        let strict = StrictStore(MemoryStore::new());
        for store in [&envoy as &dyn SharedStore, &strict] {
            for _ in 0..3 {
                let r = update(store, "c", |c: &Counter| Step::Write(Counter(c.0 + 1), ()));
                assert_eq!(r, Ok(()));
            }
            assert_eq!(read::<Counter>(store, "c"), Ok(Counter(3)));
        }
    }

    #[test]
    fn concurrent_updates_lose_nothing() {
        let s = MemoryStore::new();
        std::thread::scope(|scope| {
            for _ in 0..8 {
                scope.spawn(|| {
                    for _ in 0..500 {
                        let mut done = false;
                        while !done {
                            done = update(&s, "n", |c: &Counter| Step::Write(Counter(c.0 + 1), ()))
                                .is_ok();
                        }
                    }
                });
            }
        });
        assert_eq!(read::<Counter>(&s, "n"), Ok(Counter(4000)));
    }

    #[test]
    fn corrupt_values_are_reported_not_overwritten() {
        let s = MemoryStore::new();
        assert_eq!(s.set("c", b"xx", 0), Ok(()));
        assert_eq!(
            update(&s, "c", |c: &Counter| Step::Write(Counter(c.0 + 1), ())),
            Err(StoreError::Corrupt("c".into()))
        );
    }

    #[test]
    fn key_segments_cannot_escape() {
        assert_eq!(key_segment("billing"), "billing");
        assert_eq!(key_segment("a/b"), "a%2Fb");
        assert_eq!(key_segment("a%2Fb"), "a%252Fb");
        assert_eq!(key_segment("x\ny"), "x%0Ay");
    }
}
