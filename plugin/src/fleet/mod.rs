//! A fleet of gateways sharing one policy state through a distributed store (etcd's v3
//! JSON API, reached by HTTP callout in both hosts): leased budgets ([`budget`]), the
//! kill switch ([`kill`]), the oversight counters and alerts ([`counters`]) and the
//! escalations a verdict may reach from any instance ([`reviews`]). `docs/fleet.md` is the operator's guide.
//!
//! Without a `shared` section in the plugin configuration nothing here runs and the
//! engine keeps all state in the host's shared data, exactly as before.
//!
//! Architecture invariant: plain Rust, no host calls. The filter sends the bodies these
//! modules build to the configured cluster and hands back the answers; everything an
//! instance must remember between callbacks lives in shared data (so every worker of an
//! instance sees it) or in the sans-IO operations the caller holds.

pub mod budget;
pub mod counters;
pub mod etcd;
pub mod kill;
pub mod reviews;

use crate::ir::Micros;
use crate::store::{self, SharedStore, Step, Stored};

/// The `shared` section of the plugin configuration: where the store is and how budgets
/// are leased.
///
/// ```json
/// {"shared": {"store": "etcd", "cluster": "writ_store", "slice_micros": 10000,
///             "poll_ms": 1000, "local_allowance_micros": 0, "return_idle_ms": 3000}}
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FleetConfig {
    /// The host's cluster that reaches the store's HTTP port.
    pub cluster: String,
    /// `:authority` of the calls; the cluster name when not given.
    pub authority: String,
    /// How much budget an instance leases at a time (at least the request's estimate).
    pub slice_micros: Micros,
    /// How often the tick writes settled spend back and reads the kill switch.
    pub poll_ms: u32,
    /// Milliseconds a call to the store may take.
    pub timeout_ms: u32,
    /// What an instance may admit per ledger beyond its grant while the store is
    /// unreachable, each such request marked `degraded`; 0 (the default) fails closed.
    pub local_allowance_micros: Micros,
    /// How long a ledger must see no request on this instance before its unused lease is
    /// given back to the fleet (`budget::return_step`); 0 never gives back. Default: three
    /// poll periods.
    pub return_idle_ms: u32,
}

/// The default slice: 0.01 of the policy's currency.
pub const DEFAULT_SLICE_MICROS: Micros = 10_000;
/// The default poll period: a flip reaches every instance within about this plus one call.
pub const DEFAULT_POLL_MS: u32 = 1_000;

impl FleetConfig {
    /// Parses the `shared` value; problems are pushed and the section ignored (the
    /// instance then runs alone, and says so in its log).
    pub fn parse(v: &serde_json::Value, problems: &mut Vec<String>) -> Option<FleetConfig> {
        if v.is_null() {
            return None;
        }
        let Some(obj) = v.as_object() else {
            problems.push("`shared` must be an object".into());
            return None;
        };
        match obj.get("store").and_then(serde_json::Value::as_str) {
            Some("etcd") => {}
            Some("redis") => {
                problems.push(
                    "`shared.store` `redis` is not supported; use etcd (docs/fleet.md)".into(),
                );
                return None;
            }
            _ => {
                problems.push("`shared.store` must be \"etcd\"".into());
                return None;
            }
        }
        let Some(cluster) = obj
            .get("cluster")
            .and_then(serde_json::Value::as_str)
            .filter(|c| !c.is_empty())
        else {
            problems.push("`shared.cluster` must be a non-empty string".into());
            return None;
        };
        let num = |k: &str, default: u64, max: u64| {
            obj.get(k)
                .and_then(serde_json::Value::as_u64)
                .map_or(default, |n| n.min(max))
        };
        let poll_ms = num("poll_ms", u64::from(DEFAULT_POLL_MS), 60_000).max(100) as u32;
        Some(FleetConfig {
            cluster: cluster.to_string(),
            authority: obj
                .get("authority")
                .and_then(serde_json::Value::as_str)
                .unwrap_or(cluster)
                .to_string(),
            slice_micros: num("slice_micros", DEFAULT_SLICE_MICROS as u64, 1 << 50).max(1)
                as Micros,
            poll_ms,
            timeout_ms: num("timeout_ms", 2_000, 60_000).max(1) as u32,
            local_allowance_micros: num("local_allowance_micros", 0, 1 << 50) as Micros,
            return_idle_ms: num("return_idle_ms", 3 * u64::from(poll_ms), 86_400_000) as u32,
        })
    }
}

/// The shared-data key of this instance's id in the fleet.
pub const INSTANCE_KEY: &str = "writ/fleet/instance";

/// This instance's id in the store records: created once per instance (every worker
/// reads the same one) from the start time and a per-call salt.
pub fn instance_id(local: &dyn SharedStore, now_nanos: u64, salt: u64) -> String {
    if let Some((v, _)) = local.get(INSTANCE_KEY)
        && let Ok(id) = String::from_utf8(v)
        && !id.is_empty()
    {
        return id;
    }
    use sha2::{Digest, Sha256};
    let digest = Sha256::digest([now_nanos.to_le_bytes(), salt.to_le_bytes()].concat());
    let fresh: String = digest.iter().take(8).map(|b| format!("{b:02x}")).collect();
    match store::update(local, INSTANCE_KEY, |cur: &Id| {
        if cur.0.is_empty() {
            Step::Write(Id(fresh.clone()), fresh.clone())
        } else {
            Step::Keep(cur.0.clone())
        }
    }) {
        Ok(id) => id,
        Err(_) => fresh,
    }
}

#[derive(Debug, Clone, Default)]
struct Id(String);

impl Stored for Id {
    fn encode(&self) -> Vec<u8> {
        self.0.as_bytes().to_vec()
    }
    fn decode(bytes: &[u8]) -> Option<Id> {
        String::from_utf8(bytes.to_vec()).ok().map(Id)
    }
}

/// Newline-separated names in shared data (the ledgers to write back, the flips to
/// publish).
#[derive(Debug, Clone, Default)]
struct Lines(Vec<String>);

impl Stored for Lines {
    fn encode(&self) -> Vec<u8> {
        self.0.join("\n").into_bytes()
    }
    fn decode(bytes: &[u8]) -> Option<Lines> {
        let text = std::str::from_utf8(bytes).ok()?;
        Some(Lines(
            text.split('\n')
                .filter(|l| !l.is_empty())
                .map(str::to_string)
                .collect(),
        ))
    }
}

/// Adds `line` to the list under `key` unless it is there (then only a read).
pub(crate) fn add_line(
    local: &dyn SharedStore,
    key: &str,
    line: &str,
) -> Result<(), store::StoreError> {
    let listed = local
        .get(key)
        .is_some_and(|(v, _)| v.split(|b| *b == b'\n').any(|l| l == line.as_bytes()));
    if listed {
        return Ok(());
    }
    store::update(local, key, |list: &Lines| {
        if list.0.iter().any(|l| l == line) {
            return Step::Keep(());
        }
        let mut next = list.0.clone();
        next.push(line.to_string());
        Step::Write(Lines(next), ())
    })
}

/// Removes `line` from the list under `key`.
pub(crate) fn remove_line(
    local: &dyn SharedStore,
    key: &str,
    line: &str,
) -> Result<(), store::StoreError> {
    store::update(local, key, |list: &Lines| {
        if !list.0.iter().any(|l| l == line) {
            return Step::Keep(());
        }
        Step::Write(
            Lines(list.0.iter().filter(|l| *l != line).cloned().collect()),
            (),
        )
    })
}

/// The list under `key` (empty when missing or unreadable).
pub(crate) fn lines(local: &dyn SharedStore, key: &str) -> Vec<String> {
    store::read::<Lines>(local, key)
        .map(|l| l.0)
        .unwrap_or_default()
}

/// The shared-data key of the store's reachability as this instance last saw it.
pub const DOWN_KEY: &str = "writ/fleet/down";

/// Records whether the last call to the store failed; returns whether that changed (the
/// caller logs the transition once).
pub fn set_down(local: &dyn SharedStore, down: bool) -> bool {
    let want: &[u8] = if down { b"1" } else { b"0" };
    let was = is_down(local);
    if was != down {
        let _ = local.set(DOWN_KEY, want, 0);
    }
    was != down
}

/// Records whether the store answered; when that changed, the line to log once per
/// instance (at error level when it went down, info when it came back).
pub fn reachability_changed(local: &dyn SharedStore, up: bool) -> Option<&'static str> {
    set_down(local, !up).then_some(if up {
        "writ: the fleet store is reachable again"
    } else {
        "writ: the fleet store is unreachable; budgets fail closed beyond what this instance holds, the kill switch keeps its last known state"
    })
}

/// Whether the last call to the store failed.
pub fn is_down(local: &dyn SharedStore) -> bool {
    local.get(DOWN_KEY).is_some_and(|(v, _)| v == b"1")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::MemoryStore;

    #[test]
    fn the_section_is_parsed_with_defaults_and_redis_is_refused_clearly() {
        let mut p = Vec::new();
        let c = FleetConfig::parse(
            &serde_json::json!({"store": "etcd", "cluster": "s"}),
            &mut p,
        );
        assert_eq!(
            c,
            Some(FleetConfig {
                cluster: "s".into(),
                authority: "s".into(),
                slice_micros: DEFAULT_SLICE_MICROS,
                poll_ms: DEFAULT_POLL_MS,
                timeout_ms: 2_000,
                local_allowance_micros: 0,
                return_idle_ms: 3 * DEFAULT_POLL_MS,
            })
        );
        assert!(p.is_empty());
        let r = FleetConfig::parse(
            &serde_json::json!({"store": "redis", "cluster": "s"}),
            &mut p,
        );
        assert_eq!(r, None);
        assert!(p.iter().any(|m| m.contains("use etcd")), "{p:?}");
        assert_eq!(
            FleetConfig::parse(&serde_json::json!({"store": "etcd"}), &mut p),
            None
        );
        assert_eq!(FleetConfig::parse(&serde_json::Value::Null, &mut p), None);
    }

    #[test]
    fn an_instance_has_one_id_and_the_down_flag_reports_transitions() {
        let s = MemoryStore::new();
        let a = instance_id(&s, 1, 1);
        assert_eq!(instance_id(&s, 2, 2), a);
        assert_eq!(a.len(), 16);
        assert!(!is_down(&s));
        assert!(set_down(&s, true));
        assert!(!set_down(&s, true));
        assert!(is_down(&s));
        assert!(set_down(&s, false));
    }
}
