//! The plugin configuration: the deployment settings a host passes at start-up (artifact
//! hash, callout targets, body limit, opt-in metric labels), parsed defensively so a bad
//! setting is reported and left at its default, never fatal.

use crate::metrics::IdentityLabels;

/// Where the filter sends an HTTP call (a handoff or an alert): an upstream cluster the
/// host knows by name (an Envoy cluster, or a `writ serve` callout target).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CalloutTarget {
    pub cluster: String,
    /// Request path; `/` when not given.
    pub path: String,
    /// `:authority` of the call; the cluster name when not given.
    pub authority: String,
    /// Milliseconds the host waits for an answer (the answer is only logged).
    pub timeout_ms: u32,
}

/// The plugin configuration: deployment settings only, never policy. Every field is
/// optional; the artifact enforces its policy without any configuration.
///
/// ```json
/// {"artifact_sha256": "…", "review_queue": {"cluster": "reviews", "path": "/reviews",
///  "authority": "reviews.internal"}, "alert_sink": {"cluster": "alerts"}, "body_limit": 1048576,
///  "metrics": {"team_label": {"max": 50}}}
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PluginConfig {
    /// The artifact's own sha256, copied into audit records (the module cannot hash itself).
    pub artifact_sha256: Option<String>,
    /// Where escalations are handed off (`POST` of the handoff JSON).
    pub review_queue: Option<CalloutTarget>,
    /// Where budget and drift alerts are posted.
    pub alert_sink: Option<CalloutTarget>,
    /// Where each request's audit records are posted *before* the client gets the end of
    /// its answer (`writ audit sink`): the answer waits for the sink's 2xx, so a host
    /// killed at any moment loses no record of an answered request. Without it, records
    /// go to the host log and filter state only, after the answer.
    pub audit_sink: Option<CalloutTarget>,
    /// Largest request body buffered and parsed, at most [`MAX_BODY_LIMIT`].
    pub body_limit: usize,
    /// Also put each request's records, hash-chained across workers, in the stream's filter
    /// state (`wasm.writ_audit`), where Envoy's file access log writes them whatever the log
    /// level (`writ envoy --audit-log`).
    pub audit_filter_state: bool,
    /// The opt-in, capped `team` and `user` metric labels (`"metrics": {"team_label":
    /// {"max": 50}}`, `docs/metrics.md`).
    pub metrics: IdentityLabels,
    /// The fleet store (`"shared": {"store": "etcd", "cluster": …}`, `docs/fleet.md`):
    /// budgets are leased from it and the kill switch is shared through it. `None`: the
    /// instance keeps all state in its own shared data.
    pub shared: Option<crate::fleet::FleetConfig>,
}

/// The default request body limit: Envoy's default connection buffer limit (1 MiB), above
/// which it answers 413 itself.
pub const DEFAULT_BODY_LIMIT: usize = 1 << 20;
/// The largest body limit a configuration may ask for (64 MiB): the body is held in the
/// VM's memory.
pub const MAX_BODY_LIMIT: usize = 64 << 20;

impl Default for PluginConfig {
    fn default() -> Self {
        PluginConfig {
            artifact_sha256: None,
            review_queue: None,
            alert_sink: None,
            audit_sink: None,
            body_limit: DEFAULT_BODY_LIMIT,
            audit_filter_state: false,
            metrics: IdentityLabels::default(),
            shared: None,
        }
    }
}

impl PluginConfig {
    /// Parses the configuration bytes. Empty bytes are the defaults; unknown keys are
    /// ignored (newer deployments may carry settings for newer engines); anything
    /// malformed is an error the adapter logs before falling back to the defaults, so a
    /// bad configuration never disables enforcement. A field of the wrong type is
    /// reported and ignored on its own.
    pub fn parse(bytes: &[u8]) -> (PluginConfig, Vec<String>) {
        let mut cfg = PluginConfig::default();
        let mut problems = Vec::new();
        if bytes.iter().all(u8::is_ascii_whitespace) {
            return (cfg, problems);
        }
        let v: serde_json::Value = match serde_json::from_slice(bytes) {
            Ok(v) => v,
            Err(e) => {
                problems.push(format!("plugin configuration is not JSON: {e}"));
                return (cfg, problems);
            }
        };
        let Some(obj) = v.as_object() else {
            problems.push("plugin configuration must be a JSON object".into());
            return (cfg, problems);
        };
        match obj.get("artifact_sha256") {
            None | Some(serde_json::Value::Null) => {}
            Some(serde_json::Value::String(s))
                if s.len() == 64 && s.bytes().all(|b| b.is_ascii_hexdigit()) =>
            {
                cfg.artifact_sha256 = Some(s.to_ascii_lowercase());
            }
            Some(_) => problems.push("`artifact_sha256` must be 64 hex digits".into()),
        }
        for (key, slot) in [
            ("review_queue", &mut cfg.review_queue),
            ("alert_sink", &mut cfg.alert_sink),
            ("audit_sink", &mut cfg.audit_sink),
        ] {
            match obj.get(key) {
                None | Some(serde_json::Value::Null) => {}
                Some(t) => match callout_target(t) {
                    Some(target) => *slot = Some(target),
                    None => problems.push(format!(
                        "`{key}` must be an object with a non-empty string `cluster`"
                    )),
                },
            }
        }
        match obj.get("body_limit") {
            None | Some(serde_json::Value::Null) => {}
            Some(n) => match n.as_u64() {
                Some(n) if n > 0 => {
                    cfg.body_limit = usize::try_from(n)
                        .unwrap_or(MAX_BODY_LIMIT)
                        .min(MAX_BODY_LIMIT);
                }
                _ => problems.push("`body_limit` must be a positive integer".into()),
            },
        }
        match obj.get("audit_filter_state") {
            None | Some(serde_json::Value::Null) => {}
            Some(serde_json::Value::Bool(b)) => cfg.audit_filter_state = *b,
            Some(_) => problems.push("`audit_filter_state` must be true or false".into()),
        }
        cfg.metrics = IdentityLabels::parse(obj.get("metrics"), &mut problems);
        if let Some(v) = obj.get("shared") {
            cfg.shared = crate::fleet::FleetConfig::parse(v, &mut problems);
        }
        (cfg, problems)
    }
}

fn callout_target(v: &serde_json::Value) -> Option<CalloutTarget> {
    let cluster = v.get("cluster")?.as_str().filter(|c| !c.is_empty())?;
    let text = |k: &str| v.get(k).and_then(serde_json::Value::as_str);
    let path = text("path").filter(|p| p.starts_with('/')).unwrap_or("/");
    Some(CalloutTarget {
        cluster: cluster.to_string(),
        path: path.to_string(),
        authority: text("authority").unwrap_or(cluster).to_string(),
        timeout_ms: v
            .get("timeout_ms")
            .and_then(serde_json::Value::as_u64)
            .map_or(5_000, |t| t.clamp(1, 60_000) as u32),
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn plugin_configuration_is_parsed_defensively() {
        assert_eq!(PluginConfig::parse(b""), (PluginConfig::default(), vec![]));
        let (c, p) = PluginConfig::parse(br#"{"artifact_sha256":"AB"}"#);
        assert_eq!(c.artifact_sha256, None);
        assert_eq!(p.len(), 1);
        let sha = "ab".repeat(32);
        let json = format!(
            r#"{{"artifact_sha256":"{sha}","review_queue":{{"cluster":"rq","path":"/reviews"}},"alert_sink":{{"cluster":""}},"body_limit":10,"future":1}}"#
        );
        let (c, p) = PluginConfig::parse(json.as_bytes());
        assert_eq!(c.artifact_sha256.as_deref(), Some(sha.as_str()));
        let rq = c.review_queue.unwrap();
        assert_eq!(
            (rq.cluster.as_str(), rq.path.as_str(), rq.authority.as_str()),
            ("rq", "/reviews", "rq")
        );
        assert_eq!(c.alert_sink, None);
        assert_eq!(c.body_limit, 10);
        assert_eq!(p.len(), 1, "{p:?}");
        let (c, p) = PluginConfig::parse(b"not json");
        assert_eq!(c, PluginConfig::default());
        assert_eq!(p.len(), 1);
        assert_eq!(PluginConfig::parse(b"[1]").1.len(), 1);
    }
}
