//! The Istio `WasmPlugin` resource that runs a packaged artifact (`writ package`), with the
//! choices writ depends on made once, each with its reason in the emitted comments:
//!
//! - `sha256` is the digest of the image *manifest*: for an `oci://` URL Istio's agent
//!   compares the field with the digest of the manifest it pulled (`img.Digest()` in
//!   `pkg/wasm/imagefetcher.go`, checked in `pkg/wasm/cache.go`), not with a layer. The
//!   manifest names the layer and the config by digest, so pinning it pins `plugin.wasm`
//!   and writ's manifest too; pinning the layer digest would make Istio refuse the image.
//! - `phase: STATS`: Istio puts the filter after its authentication filters (the
//!   `jwt_authn` a `RequestAuthentication` configures, whose `outputClaimToHeaders` sets
//!   the identity headers the policy trusts) *and* after its RBAC filter, still before the
//!   router, so nothing reaches the model unchecked. After RBAC because Istio lets a request
//!   without a token through authentication, with whatever identity headers the client
//!   wrote; only an `AuthorizationPolicy` requiring a request principal refuses it, and it
//!   must do so before the policy reads those headers. That is the guarantee `writ envoy`
//!   gives by stripping the headers and requiring a token ahead of the filter. `AUTHZ`
//!   would run the policy before RBAC, on forged identities (spending their budgets,
//!   queueing their reviews, writing their audit records); `AUTHN` before any token is
//!   verified. A request RBAC refuses never meets the policy and is in Istio's access log.
//! - `failStrategy: FAIL_CLOSE` (or `FAIL_RELOAD`): a failed VM answers 503, never lets
//!   traffic through unchecked. `FAIL_OPEN` is never offered.
//! - `imagePullPolicy: IfNotPresent` by default: the content is pinned by `sha256`, so a
//!   cached copy is the same image; `Always` re-pulls whenever the resource changes.
//! - `pluginConfig` holds the same deployment settings `writ envoy` writes into Envoy's
//!   plugin configuration (audit sink, review queue, alert sink, body limit, the artifact's
//!   sha256), with clusters named as Istio names them: `outbound|PORT||HOST`.

use serde_json::{Map, Value, json};

/// The `apiVersion` of the emitted resource.
pub const API_VERSION: &str = "extensions.istio.io/v1alpha1";

/// What Istio does when the VM fails (`failStrategy`). There is no fail-open variant.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum FailStrategy {
    /// 503 for every request after a VM failure.
    #[default]
    Close,
    /// 503 while the VM is recreated, then enforce again.
    Reload,
}

impl FailStrategy {
    /// The value of Istio's `failStrategy` enum.
    pub fn as_str(self) -> &'static str {
        match self {
            FailStrategy::Close => "FAIL_CLOSE",
            FailStrategy::Reload => "FAIL_RELOAD",
        }
    }
}

/// When Istio pulls the image again (`imagePullPolicy`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum PullPolicy {
    /// Pull once per pinned digest (the default: the digest fixes the content).
    #[default]
    #[value(name = "IfNotPresent")]
    IfNotPresent,
    /// Pull whenever the resource changes.
    #[value(name = "Always")]
    Always,
}

impl PullPolicy {
    /// The value of Istio's `imagePullPolicy` enum.
    pub fn as_str(self) -> &'static str {
        match self {
            PullPolicy::IfNotPresent => "IfNotPresent",
            PullPolicy::Always => "Always",
        }
    }
}

/// Everything the emitted resource says.
#[derive(Debug, Clone)]
pub struct WasmPlugin {
    /// `metadata.name`, a DNS-1123 label.
    pub name: String,
    /// `metadata.namespace`; none leaves it to `kubectl apply -n`.
    pub namespace: Option<String>,
    /// `selector.matchLabels`; none selects every workload of the namespace.
    pub selector: Vec<(String, String)>,
    /// The image reference, without `oci://`.
    pub image: String,
    /// sha256 (hex) of the image manifest.
    pub manifest_sha256: String,
    /// `imagePullPolicy`.
    pub pull_policy: PullPolicy,
    /// `failStrategy`.
    pub fail_strategy: FailStrategy,
    /// `pluginConfig`: the engine's deployment settings (`writ_plugin::config::PluginConfig`).
    pub plugin_config: Map<String, Value>,
    /// The policy name, for the header comment.
    pub policy: String,
    /// The policy version, for the header comment.
    pub version: String,
    /// sha256 (hex) of the artifact, for the header comment.
    pub artifact_sha256: String,
    /// sha256 (hex) of the image layer, for the header comment.
    pub layer_sha256: String,
    /// The tag of the manifest in the OCI layout (`skopeo copy oci:DIR:TAG`).
    pub layout_ref: String,
    /// The identity headers the policy trusts (lower case), named in the header comment.
    pub trusted_headers: Vec<String>,
}

impl WasmPlugin {
    /// Renders the resource as YAML, with a header comment saying what it runs and how to
    /// publish the image it names.
    pub fn to_yaml(&self) -> String {
        let mut metadata = Map::new();
        metadata.insert("name".into(), self.name.clone().into());
        if let Some(ns) = &self.namespace {
            metadata.insert("namespace".into(), ns.clone().into());
        }
        let mut spec = Map::new();
        if !self.selector.is_empty() {
            let labels: Map<String, Value> = self
                .selector
                .iter()
                .map(|(k, v)| (k.clone(), Value::String(v.clone())))
                .collect();
            spec.insert("selector".into(), json!({ "matchLabels": labels }));
        }
        spec.insert("url".into(), format!("oci://{}", self.image).into());
        spec.insert("sha256".into(), self.manifest_sha256.clone().into());
        spec.insert("imagePullPolicy".into(), self.pull_policy.as_str().into());
        spec.insert("type".into(), "HTTP".into());
        spec.insert("phase".into(), "STATS".into());
        spec.insert("failStrategy".into(), self.fail_strategy.as_str().into());
        if !self.plugin_config.is_empty() {
            spec.insert(
                "pluginConfig".into(),
                Value::Object(self.plugin_config.clone()),
            );
        }
        let resource = json!({
            "apiVersion": API_VERSION,
            "kind": "WasmPlugin",
            "metadata": metadata,
            "spec": spec,
        });
        let mut body = serde_norway::to_string(&resource).unwrap_or_default();
        if !body.ends_with('\n') {
            body.push('\n');
        }
        format!(
            "# Istio WasmPlugin generated by `writ package` {writ}.
# policy: {policy} {version}
# artifact sha256: {artifact} (plugin.wasm, the image's one layer)
# layer sha256:    {layer}
# Publish the image before applying this (--preserve-digests keeps the pinned digest):
#   skopeo copy --preserve-digests oci:LAYOUT_DIR:{layout_ref} docker://{image}
# sha256 pins the image manifest, which is what Istio checks for an oci:// URL; the
#   manifest names the layer, so it pins plugin.wasm too.
# phase STATS: after Istio's jwt_authn and RBAC, before the router: an AuthorizationPolicy
#   that requires a request principal refuses a request without a token before the policy
#   reads identity headers the client may have written.{identity}
# failStrategy {fail}: a failed VM answers 503; traffic never passes unchecked.
{body}",
            writ = env!("CARGO_PKG_VERSION"),
            policy = self.policy,
            version = self.version,
            artifact = self.artifact_sha256,
            layer = self.layer_sha256,
            layout_ref = self.layout_ref,
            image = self.image,
            fail = self.fail_strategy.as_str(),
            identity = self.identity_comment(),
        )
    }

    /// Which headers the policy trusts, and where in Istio they must come from.
    fn identity_comment(&self) -> String {
        if self.trusted_headers.is_empty() {
            return String::new();
        }
        format!(
            "\n# The policy trusts {}:\n#   set them from a verified token (RequestAuthentication outputClaimToHeaders) and\n#   require a principal (AuthorizationPolicy); see writ's docs/istio.md.",
            self.trusted_headers.join(", ")
        )
    }
}

/// The name Istio gives the outbound cluster of a service `host:port`, the name a
/// `dispatch_http_call` from the filter must use.
pub fn istio_cluster(host: &str, port: u16) -> String {
    format!("outbound|{port}||{host}")
}

/// A DNS-1123 label (lower case, digits, `-`, at most 63) made from `name`, for
/// `metadata.name` and the default image repository.
pub fn dns_label(name: &str) -> String {
    let mut out: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '-'
            }
        })
        .collect();
    out.truncate(63);
    let trimmed = out.trim_matches('-');
    if trimmed.is_empty() {
        "writ".to_string()
    } else {
        trimmed.to_string()
    }
}

/// The image reference used without `--image`: a registry on the machine
/// (`localhost:5000`, the usual local registry), repository `writ/<policy>`, tagged with
/// the policy version.
pub fn default_image(policy: &str, version: &str) -> String {
    format!("localhost:5000/writ/{}:{}", dns_label(policy), tag(version))
}

/// A version as an OCI tag (`[A-Za-z0-9_][A-Za-z0-9._-]{0,127}`): other characters (a `+`
/// of build metadata) become `_`.
pub fn tag(version: &str) -> String {
    let mut t: String = version
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') {
                c
            } else {
                '_'
            }
        })
        .collect();
    if t.is_empty() || t.starts_with(['.', '-']) {
        t.insert(0, '_');
    }
    t.truncate(128);
    t
}

/// Checks an image reference `[HOST[:PORT]/]PATH[:TAG][@sha256:HEX]` for what Istio can
/// pull and pin: no scheme (it is added), no spaces, lower-case repository, and a digest,
/// if any, equal to the image's (Istio refuses a `sha256` field that disagrees with it).
pub fn check_image_ref(image: &str, manifest_sha256: &str) -> Result<(), String> {
    if image.contains("://") {
        return Err(format!(
            "--image `{image}`: give the reference without a scheme (`oci://` is added)"
        ));
    }
    if image.is_empty() || image.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(format!("--image `{image}` is not an image reference"));
    }
    let (name, digest) = match image.split_once('@') {
        Some((n, d)) => (n, Some(d)),
        None => (image, None),
    };
    if let Some(d) = digest
        && d != format!("sha256:{manifest_sha256}")
    {
        return Err(format!(
            "--image `{image}` names digest {d}, but the packaged image is sha256:{manifest_sha256}"
        ));
    }
    // The tag is after the last `:` that follows the last `/` (a registry port is not).
    let last = name.rsplit('/').next().unwrap_or(name);
    let repo_len = name.len() - last.len() + last.split(':').next().unwrap_or(last).len();
    let repo = &name[..repo_len];
    let path = repo.split_once('/').map_or(repo, |(host, path)| {
        if host.contains(['.', ':']) || host == "localhost" {
            path
        } else {
            repo
        }
    });
    let path_ok = !path.is_empty()
        && path.split('/').all(|part| {
            !part.is_empty()
                && part.bytes().all(|b| {
                    b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'.' | b'_' | b'-')
                })
        });
    if !path_ok {
        return Err(format!(
            "--image `{image}`: the repository must be lower-case letters, digits, `.`, `_`, `-` and `/`"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_tags_and_references() {
        assert_eq!(dns_label("Support_Assistant"), "support-assistant");
        assert_eq!(dns_label("--"), "writ");
        assert_eq!(tag("1.0.0+build.5"), "1.0.0_build.5");
        assert_eq!(
            default_image("support-assistant", "1.0.0"),
            "localhost:5000/writ/support-assistant:1.0.0"
        );
        assert_eq!(
            istio_cluster("sink.writ.svc.cluster.local", 9902),
            "outbound|9902||sink.writ.svc.cluster.local"
        );
        let sha = "ab".repeat(32);
        for ok in [
            "localhost:5000/writ/a:1.0.0".to_string(),
            "registry.example.com/team/writ/a".to_string(),
            format!("ghcr.io/x/a:1@sha256:{sha}"),
        ] {
            assert_eq!(check_image_ref(&ok, &sha), Ok(()), "{ok}");
        }
        for bad in [
            "oci://localhost:5000/a:1".to_string(),
            "localhost:5000/Writ/a:1".to_string(),
            "a b".to_string(),
            String::new(),
            format!("ghcr.io/x/a@sha256:{}", "cd".repeat(32)),
        ] {
            assert!(check_image_ref(&bad, &sha).is_err(), "{bad}");
        }
    }
}
