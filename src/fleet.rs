//! `--shared URL`, which `writ serve` and `writ envoy` both take: the fleet store the
//! filter leases budgets from and shares the kill switch through (`docs/fleet.md`). The
//! URL's scheme names the store; only etcd is supported (its v3 JSON API is reachable by
//! the filter's HTTP callouts in both hosts). The flags become a callout cluster and the
//! `shared` section of the plugin configuration; without them nothing changes.

use anyhow::bail;

/// The cluster name the store is reached by, in both hosts.
pub const STORE_CLUSTER: &str = "writ_store";

/// The fleet flags both commands take.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct SharedArgs {
    /// The fleet store shared by every gateway running this policy: `etcd://HOST:PORT`
    /// (etcd's client port). Budgets are then leased from it in slices and the kill
    /// switch flips every instance (`docs/fleet.md`).
    #[arg(long, value_name = "URL")]
    pub shared: Option<String>,
    /// Budget leased from the store at a time, in micros of the policy's currency
    /// (default 10000 = 0.01). The fleet may refuse a request early by at most one slice
    /// per instance that holds one.
    #[arg(long, value_name = "MICROS", requires = "shared")]
    pub lease_slice: Option<u64>,
    /// While the store is unreachable, let each instance admit up to this much per budget
    /// beyond what it leased, every such request audited as `degraded` (default 0: fail
    /// closed).
    #[arg(long, value_name = "MICROS", requires = "shared")]
    pub local_allowance: Option<u64>,
}

/// The store's `HOST:PORT` from an `etcd://HOST:PORT` URL; any other scheme is a clear
/// error (Redis would need an HTTP front the filter could call).
pub fn store_address(url: &str) -> anyhow::Result<String> {
    let Some((scheme, rest)) = url.split_once("://") else {
        bail!("--shared expects etcd://HOST:PORT, got `{url}`");
    };
    match scheme {
        "etcd" => {}
        "redis" => bail!(
            "--shared {url}: Redis is not supported as the fleet store; use etcd://HOST:PORT (see docs/fleet.md for why)"
        ),
        other => bail!("--shared: unknown store `{other}`; use etcd://HOST:PORT"),
    }
    let addr = rest.trim_end_matches('/');
    let Some((host, port)) = addr.rsplit_once(':') else {
        bail!("--shared {url}: expected etcd://HOST:PORT");
    };
    if host.is_empty() || port.parse::<u16>().is_err() || addr.contains('/') {
        bail!("--shared {url}: expected etcd://HOST:PORT");
    }
    Ok(addr.to_string())
}

impl SharedArgs {
    /// The store's address and the plugin configuration's `shared` section, when
    /// `--shared` was given.
    pub fn section(&self) -> anyhow::Result<Option<(String, serde_json::Value)>> {
        let Some(url) = &self.shared else {
            return Ok(None);
        };
        let addr = store_address(url)?;
        let mut section = serde_json::json!({"store": "etcd", "cluster": STORE_CLUSTER});
        if let Some(s) = self.lease_slice {
            section["slice_micros"] = s.into();
        }
        if let Some(a) = self.local_allowance {
            section["local_allowance_micros"] = a.into();
        }
        Ok(Some((addr, section)))
    }
}

/// Adds `section` as `shared` to a plugin configuration (JSON bytes, possibly empty),
/// unless the configuration already has one.
pub fn with_shared(config: &[u8], section: serde_json::Value) -> anyhow::Result<Vec<u8>> {
    let mut value: serde_json::Value = if config.iter().all(u8::is_ascii_whitespace) {
        serde_json::json!({})
    } else {
        serde_json::from_slice(config)?
    };
    let Some(obj) = value.as_object_mut() else {
        bail!("the plugin configuration must be a JSON object");
    };
    obj.entry("shared").or_insert(section);
    Ok(serde_json::to_vec(&value)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_etcd_urls_are_accepted() {
        assert_eq!(
            store_address("etcd://127.0.0.1:2379").ok(),
            Some("127.0.0.1:2379".into())
        );
        let redis = store_address("redis://127.0.0.1:6379").map_err(|e| e.to_string());
        assert!(redis.is_err_and(|e| e.contains("use etcd://")));
        assert!(store_address("http://x:1").is_err());
        assert!(store_address("etcd://x").is_err());
        assert!(store_address("etcd://x:1/y").is_err());
    }

    #[test]
    fn the_section_joins_the_configuration() {
        let args = SharedArgs {
            shared: Some("etcd://h:1".into()),
            lease_slice: Some(5),
            local_allowance: None,
        };
        let (addr, section) = args.section().ok().flatten().unwrap_or_default();
        assert_eq!(addr, "h:1");
        let merged = with_shared(br#"{"body_limit": 10}"#, section).unwrap_or_default();
        let v: serde_json::Value = serde_json::from_slice(&merged).unwrap_or_default();
        assert_eq!(v["shared"]["slice_micros"], 5);
        assert_eq!(v["shared"]["cluster"], STORE_CLUSTER);
        assert_eq!(v["body_limit"], 10);
    }
}
