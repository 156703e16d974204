//! `writ package`: an artifact as an OCI image layout Istio pulls as a wasm plugin, and the
//! `WasmPlugin` resource that runs it (printed to stdout). The image format and the
//! resource's choices are explained in `writ::oci` and `writ::wasm_plugin`.

use std::path::PathBuf;
use std::process::ExitCode;

use serde_json::Value;
use writ::oci::{self, WasmImage};
use writ::wasm_plugin::{self, FailStrategy, PullPolicy, WasmPlugin};

use crate::envoy_config::FailurePolicy;

/// Arguments of `writ package`.
#[derive(Debug, clap::Args)]
pub struct PackageArgs {
    /// The compiled policy artifact (`<policy>-<version>.wasm`), signed or not; it is
    /// packaged byte for byte.
    pub artifact: PathBuf,
    /// Write the OCI image layout (`oci-layout`, `index.json`, `blobs/sha256/…`) into this
    /// folder: missing, empty, or a layout written before (replaced).
    #[arg(long, value_name = "DIR")]
    pub oci: PathBuf,
    /// Where the image will be published, as the WasmPlugin's `url` names it (without
    /// `oci://`). Default: `localhost:5000/writ/<policy>:<version>`.
    #[arg(long, value_name = "REF")]
    pub image: Option<String>,
    /// The WasmPlugin's `metadata.name`; default `writ-<policy>`.
    #[arg(long, value_name = "NAME")]
    pub name: Option<String>,
    /// The WasmPlugin's namespace (the Istio root namespace applies it mesh-wide).
    #[arg(long, value_name = "NS")]
    pub namespace: Option<String>,
    /// Run the plugin only on workloads with this label (`selector.matchLabels`), e.g.
    /// `app=llm-gateway`. Repeatable.
    #[arg(long = "selector", value_name = "KEY=VALUE")]
    pub selector: Vec<String>,
    /// `imagePullPolicy`: `IfNotPresent` (the digest is pinned) or `Always`.
    #[arg(
        long,
        value_enum,
        value_name = "POLICY",
        default_value = "IfNotPresent"
    )]
    pub pull_policy: PullPolicy,
    /// What happens when the wasm VM fails: `closed` (FAIL_CLOSE) or `reload`
    /// (FAIL_RELOAD); both answer 503. Never fail-open.
    #[arg(long, value_name = "POLICY", default_value = "closed", value_parser = super::envoy::parse_failure)]
    pub failure_policy: FailurePolicy,
    /// The filter's plugin configuration, a JSON object, as for `writ envoy --config`:
    /// `review_queue` and `alert_sink` (`{"cluster": NAME, "path": "/…"}`), `body_limit`.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// A service the policy calls out to, `review=review-queue.writ.svc.cluster.local:8081`:
    /// `"cluster": "review"` in `--config` becomes Istio's cluster for it,
    /// `outbound|8081||review-queue.writ.svc.cluster.local`. Repeatable.
    #[arg(long = "cluster", value_name = "NAME=HOST:PORT")]
    pub clusters: Vec<String>,
    /// A `writ audit sink` service (HOST:PORT, e.g.
    /// `writ-audit-sink.writ.svc.cluster.local:9902`) the filter posts each request's
    /// records to before the client gets the end of its answer (fail closed).
    #[arg(long, value_name = "HOST:PORT")]
    pub audit_sink: Option<String>,
    /// Package only an artifact signed by this public key (`writ keygen`'s `.pub`).
    /// Repeatable.
    #[arg(long, value_name = "PUBKEY")]
    pub trust: Vec<PathBuf>,
}

/// Writes the layout and prints the WasmPlugin YAML.
pub fn run(args: PackageArgs) -> anyhow::Result<ExitCode> {
    let wasm = std::fs::read(&args.artifact)
        .map_err(|e| anyhow::anyhow!("cannot read {}: {e}", args.artifact.display()))?;
    let name = args.artifact.display().to_string();
    if !args.trust.is_empty() {
        let trusted = writ::trust::read_trusted(&args.trust)?;
        writ::trust::verify_artifact(&args.artifact, &wasm, &trusted)?;
    }
    let manifest = oci::artifact_manifest(&wasm).map_err(|e| anyhow::anyhow!("{name}: {e}"))?;
    let image = WasmImage::new(&wasm, &manifest).map_err(|e| anyhow::anyhow!("{name}: {e}"))?;
    let reference = args
        .image
        .clone()
        .unwrap_or_else(|| wasm_plugin::default_image(&manifest.policy, &manifest.version));
    wasm_plugin::check_image_ref(&reference, &image.manifest.sha256)
        .map_err(|e| anyhow::anyhow!(e))?;
    let plugin = WasmPlugin {
        name: args
            .name
            .clone()
            .unwrap_or_else(|| format!("writ-{}", wasm_plugin::dns_label(&manifest.policy))),
        namespace: args.namespace.clone(),
        selector: args
            .selector
            .iter()
            .map(|s| {
                s.split_once('=')
                    .filter(|(k, _)| !k.is_empty())
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .ok_or_else(|| anyhow::anyhow!("invalid --selector `{s}`: expected KEY=VALUE"))
            })
            .collect::<anyhow::Result<_>>()?,
        image: reference,
        manifest_sha256: image.manifest.sha256.clone(),
        pull_policy: args.pull_policy,
        fail_strategy: match args.failure_policy {
            FailurePolicy::Closed => FailStrategy::Close,
            FailurePolicy::Reload => FailStrategy::Reload,
        },
        plugin_config: plugin_config(&args, &image)?,
        policy: manifest.policy.clone(),
        version: manifest.version.clone(),
        artifact_sha256: image.artifact_sha256.clone(),
        layer_sha256: image.layer.sha256.clone(),
        layout_ref: image.ref_name.clone(),
        trusted_headers: writ_compiler::link::read_policy(&wasm)
            .map(|p| writ::identity::trusted_headers(&p))
            .unwrap_or_default(),
    };
    image.write_layout(&args.oci)?;
    if args.trust.is_empty() {
        eprintln!(
            "warning: the signature of {name} was not checked; pass --trust PUBKEY to package only a signed artifact"
        );
    }
    eprintln!(
        "wrote {} ({} {}, image sha256:{}, tag {})",
        args.oci.display(),
        manifest.policy,
        manifest.version,
        image.manifest.sha256,
        image.ref_name
    );
    print!("{}", plugin.to_yaml());
    Ok(ExitCode::SUCCESS)
}

/// The deployment settings `writ envoy` would put in the plugin configuration, with
/// clusters named as Istio names them.
fn plugin_config(
    args: &PackageArgs,
    image: &WasmImage,
) -> anyhow::Result<serde_json::Map<String, Value>> {
    let mut config = match &args.config {
        Some(path) => super::envoy::read_plugin_config(path)?,
        None => serde_json::Map::new(),
    };
    for spec in &args.clusters {
        let (name, host, port) = parse_cluster(spec)?;
        let mut used = false;
        for target in config.values_mut() {
            if let Some(t) = target.as_object_mut()
                && t.get("cluster").and_then(Value::as_str) == Some(name)
            {
                t.insert(
                    "cluster".into(),
                    wasm_plugin::istio_cluster(host, port).into(),
                );
                t.entry("authority").or_insert_with(|| host.into());
                used = true;
            }
        }
        if !used {
            eprintln!(
                "warning: --cluster {spec}: no callout in the plugin configuration (--config) names cluster `{name}`"
            );
        }
    }
    if let Some(addr) = &args.audit_sink {
        let (host, port) = parse_host_port(addr)
            .ok_or_else(|| anyhow::anyhow!("invalid --audit-sink `{addr}`: expected HOST:PORT"))?;
        let mut target = super::envoy::audit_sink_target(&wasm_plugin::istio_cluster(host, port));
        target["authority"] = host.into();
        config.insert("audit_sink".into(), target);
    }
    config
        .entry("artifact_sha256")
        .or_insert_with(|| image.artifact_sha256.clone().into());
    Ok(config)
}

/// `NAME=HOST:PORT`.
fn parse_cluster(spec: &str) -> anyhow::Result<(&str, &str, u16)> {
    spec.split_once('=')
        .filter(|(name, _)| !name.is_empty())
        .and_then(|(name, addr)| parse_host_port(addr).map(|(h, p)| (name, h, p)))
        .ok_or_else(|| anyhow::anyhow!("invalid --cluster `{spec}`: expected NAME=HOST:PORT"))
}

fn parse_host_port(addr: &str) -> Option<(&str, u16)> {
    let (host, port) = addr.rsplit_once(':')?;
    let port: u16 = port.parse().ok().filter(|p| *p > 0)?;
    (!host.is_empty() && !host.contains(char::is_whitespace)).then_some((host, port))
}
