//! `writ envoy`: print an Envoy bootstrap that runs an artifact in front of an upstream.
//!
//! The printed config works as is (`envoy -c`), so operators start from a setup in which
//! the fail-closed and buffering choices writ depends on are already right; see
//! `envoy_config` for each choice and its reason.

use std::path::PathBuf;

use crate::envoy_config::{
    ArtifactUrl, EnvoyConfig, FailurePolicy, FallbackRoute, Jwks, JwtAuthn, OtlpTracing,
};

/// Arguments of `writ envoy`.
#[derive(Debug, clap::Args)]
pub struct EnvoyArgs {
    /// The compiled policy artifact (`<policy>-<version>.wasm`).
    pub artifact: PathBuf,
    /// The model provider (or any OpenAI-compatible server) to forward to: HOST:PORT (TLS
    /// when the port is 443) or a URL, `https://api.openai.com`, `http://127.0.0.1:8000`.
    #[arg(long, value_name = "HOST:PORT|URL")]
    pub upstream: String,
    /// Where Envoy accepts client traffic.
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:10000")]
    pub listen: String,
    /// Envoy's admin endpoint (`/ready`, `/stats/prometheus`). Keep it on loopback.
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:9901")]
    pub admin: String,
    /// CA bundle (PEM) that verifies a TLS upstream's certificate.
    #[arg(long, value_name = "FILE", default_value = crate::envoy_config::DEFAULT_CA_BUNDLE)]
    pub upstream_ca: PathBuf,
    /// An extra cluster the policy calls out to, e.g. `review=127.0.0.1:8081` for a review
    /// queue or `audit=…` for an audit sink. Repeatable.
    #[arg(long = "cluster", value_name = "NAME=HOST:PORT")]
    pub clusters: Vec<String>,
    /// The filter's plugin configuration, a JSON object: `review_queue` and `alert_sink`
    /// (`{"cluster": NAME, "path": "/…"}`, naming a `--cluster`), `body_limit`.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// What happens when the wasm VM fails: `closed` answers 503 until Envoy restarts,
    /// `reload` answers 503 while the VM is recreated (1–2 s). Never fail-open.
    #[arg(long, value_name = "POLICY", default_value = "closed", value_parser = parse_failure)]
    pub failure_policy: FailurePolicy,
    /// The largest request body, in bytes, the policy inspects; larger bodies get 413.
    #[arg(long, value_name = "BYTES", default_value_t = 1024 * 1024)]
    pub max_request_bytes: u32,
    /// The VM id (shared-data namespace); defaults to `writ.<policy name>`.
    #[arg(long, value_name = "ID")]
    pub vm_id: Option<String>,
    /// The JWT verifier (`jwt_authn`) that sets the policy's trusted identity headers.
    #[command(flatten)]
    pub jwt: writ::identity::JwtArgs,
    /// The fleet store (`--shared etcd://HOST:PORT`, `docs/fleet.md`).
    #[command(flatten)]
    pub fleet: writ::fleet::SharedArgs,
    /// Write the config only for an artifact signed by this public key (`writ keygen`'s
    /// `.pub`); an unsigned or changed artifact is refused. Repeatable.
    #[arg(long, value_name = "PUBKEY")]
    pub trust: Vec<PathBuf>,
    /// Envoy fetches the module from this URL (where the artifact is published) and refuses
    /// it unless its sha256 is that of ARTIFACT: Envoy itself then rejects a changed module.
    /// Without it Envoy reads ARTIFACT from disk, and does not check its hash.
    #[arg(long, value_name = "URL")]
    pub artifact_url: Option<String>,
    /// How often Envoy retries fetching the module (a failed fetch or a hash mismatch)
    /// before it gives up and answers 503.
    #[arg(long, value_name = "N", default_value_t = 3)]
    pub artifact_fetch_retries: u32,
    /// Envoy writes the filter's audit records to this file through its access log, one
    /// hash-chained line per record whatever the log level (`writ audit verify` checks it).
    #[arg(long, value_name = "FILE")]
    pub audit_log: Option<PathBuf>,
    /// A `writ audit sink` (HOST:PORT) the filter posts each request's records to before
    /// the client gets the end of its answer, so a killed Envoy loses no record of an
    /// answered request. The answer waits for the sink (a loopback round trip); if the sink
    /// cannot store the records, the answer is withheld (fail closed).
    #[arg(long, value_name = "HOST:PORT")]
    pub audit_sink: Option<String>,
    /// Seconds the model provider has for its whole reply (Envoy's route timeout; streamed
    /// replies included) before the client gets 504 `upstream_timeout`.
    #[arg(long, value_name = "SECS", default_value_t = 300)]
    pub upstream_timeout: u32,
    /// Trace with Envoy's OpenTelemetry tracer, exporting spans over OTLP/HTTP to this
    /// receiver (HOST:PORT or URL; `/v1/traces` is appended); Envoy then propagates
    /// `traceparent` to the upstream (`docs/observability.md`).
    #[arg(long, value_name = "HOST:PORT|URL")]
    pub otlp: Option<String>,
    /// `gen_ai.provider.name` tagged on Envoy's spans.
    #[arg(long, value_name = "NAME", default_value = "openai", requires = "otlp")]
    pub otel_provider: String,
    /// `service.name` of Envoy's spans.
    #[arg(
        long,
        value_name = "NAME",
        default_value = "writ-envoy",
        requires = "otlp"
    )]
    pub otel_service_name: String,
}

/// The cluster `--audit-sink` adds.
const AUDIT_SINK_CLUSTER: &str = "writ_audit_sink";

/// Parses `--failure-policy` (`writ envoy` and `writ package`): fail-open is refused.
pub(crate) fn parse_failure(s: &str) -> Result<FailurePolicy, String> {
    match s {
        "closed" => Ok(FailurePolicy::Closed),
        "reload" => Ok(FailurePolicy::Reload),
        "open" => {
            Err("fail-open would let traffic bypass the policy; use `closed` or `reload`".into())
        }
        _ => Err(format!(
            "unknown failure policy `{s}`: use `closed` or `reload`"
        )),
    }
}

/// Prints the bootstrap YAML to stdout.
pub fn run(args: EnvoyArgs) -> anyhow::Result<()> {
    let mut config = EnvoyConfig::new(&args.artifact, &args.upstream)?;
    if !args.trust.is_empty() {
        let trusted = writ::trust::read_trusted(&args.trust)?;
        let wasm = std::fs::read(&args.artifact)
            .map_err(|e| anyhow::anyhow!("cannot read {}: {e}", args.artifact.display()))?;
        writ::trust::verify_artifact(&args.artifact, &wasm, &trusted)?;
        // The hash pinned below must be of the bytes just verified.
        if writ_compiler::link::sha256_hex(&wasm) != config.artifact_sha256 {
            anyhow::bail!("{} changed while it was read", args.artifact.display());
        }
    } else if args.artifact_url.is_none() {
        eprintln!(
            "warning: {} is loaded by Envoy without any check of its bytes; pass --trust PUBKEY to verify its signature, --artifact-url URL to have Envoy pin its sha256",
            args.artifact.display()
        );
    } else {
        eprintln!(
            "warning: Envoy will pin the sha256 of {}, whose signature was not checked; pass --trust PUBKEY",
            args.artifact.display()
        );
    }
    if let Some(url) = &args.artifact_url {
        config.artifact_url = Some(ArtifactUrl::parse(url)?);
    }
    config.artifact_fetch_retries = args.artifact_fetch_retries;
    if let Some(path) = &args.audit_log {
        let absolute = std::path::absolute(path)
            .map_err(|e| anyhow::anyhow!("invalid audit log path {}: {e}", path.display()))?;
        config.audit_log = Some(absolute);
    }
    config.listen(&args.listen)?;
    config.admin(&args.admin)?;
    for spec in &args.clusters {
        config.add_cluster(spec)?;
    }
    if let Some(path) = &args.config {
        config.plugin_config = read_plugin_config(path)?;
    }
    if let Some(addr) = &args.audit_sink {
        config.add_cluster(&format!("{AUDIT_SINK_CLUSTER}={addr}"))?;
        config
            .plugin_config
            .insert("audit_sink".into(), audit_sink_target(AUDIT_SINK_CLUSTER));
    }
    if let Some((addr, section)) = args.fleet.section()? {
        config.add_cluster(&format!("{}={addr}", writ::fleet::STORE_CLUSTER))?;
        config.plugin_config.entry("shared").or_insert(section);
    }
    config.failure_policy = args.failure_policy;
    config.upstream_ca = args.upstream_ca.clone();
    config.max_request_bytes = args.max_request_bytes;
    config.route_timeout_secs = args.upstream_timeout.max(1);
    if let Some(id) = args.vm_id.clone() {
        config.vm_id = id;
    }
    if let Some(spec) = &args.otlp {
        let mut otlp = OtlpTracing::parse(spec)?;
        otlp.provider_name = args.otel_provider.clone();
        otlp.service_name = args.otel_service_name.clone();
        config.otlp = Some(otlp);
    }
    identity(&args, &mut config)?;
    fallback_routes(&args, &mut config)?;
    print!("{}", config.to_yaml());
    Ok(())
}

/// Reads a `--config` file (`writ envoy` and `writ package`): a JSON object.
pub(crate) fn read_plugin_config(
    path: &std::path::Path,
) -> anyhow::Result<serde_json::Map<String, serde_json::Value>> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| anyhow::anyhow!("cannot read {}: {e}", path.display()))?;
    match serde_json::from_str(&text) {
        Ok(serde_json::Value::Object(map)) => Ok(map),
        _ => anyhow::bail!("{} must hold a JSON object", path.display()),
    }
}

/// The plugin configuration's `audit_sink` for a `writ audit sink` reached through
/// `cluster`: records are posted to `/records`, and the answer waits at most 5 s.
pub(crate) fn audit_sink_target(cluster: &str) -> serde_json::Value {
    serde_json::json!({"cluster": cluster, "path": "/records", "timeout_ms": 5000})
}

/// The workflows whose fallback clusters Envoy's router retries to itself
/// (`writ_plugin::fallback::envoy_chain` says which; `docs/fallback.md`). A chain naming
/// a cluster not given with `--cluster` is left to the filter, with a warning.
fn fallback_routes(args: &EnvoyArgs, config: &mut EnvoyConfig) -> anyhow::Result<()> {
    use writ_plugin::ir::Failure;
    let bytes = std::fs::read(&args.artifact)
        .map_err(|e| anyhow::anyhow!("cannot read {}: {e}", args.artifact.display()))?;
    let Ok(policy) = writ_compiler::link::read_policy(&bytes) else {
        return Ok(());
    };
    for (i, w) in policy.workflows.iter().enumerate() {
        let Some(chain) = writ_plugin::fallback::envoy_chain(&policy, i) else {
            if w.fallback.as_ref().is_some_and(|f| {
                f.steps.iter().any(|s| {
                    matches!(
                        s,
                        writ_plugin::ir::FallbackStep::Model(_)
                            | writ_plugin::ir::FallbackStep::Cluster(_)
                    )
                })
            }) {
                eprintln!(
                    "note: workflow `{}`: Envoy does not send its fallback attempts (a `model` step, or a matcher a route cannot test); the filter records them as `no_host_retry` and takes its degraded step",
                    w.name
                );
            }
            continue;
        };
        let missing: Vec<&String> = chain
            .clusters
            .iter()
            .filter(|c| !config.clusters.iter().any(|k| &k.name == *c))
            .collect();
        if !missing.is_empty() {
            eprintln!(
                "warning: workflow `{}`: fallback cluster(s) {missing:?} not given with --cluster; the filter records them as `no_host_retry`",
                w.name
            );
            continue;
        }
        let mut retry_on = Vec::new();
        let mut statuses = Vec::new();
        for f in &chain.on {
            match f {
                Failure::Status5xx => retry_on.push("5xx"),
                Failure::Status429 => {
                    retry_on.push("retriable-status-codes");
                    statuses.push(429);
                }
                Failure::Connect => retry_on.extend(["connect-failure", "reset"]),
                // Envoy's answer to a timed-out attempt is a 504, retried under `5xx`.
                Failure::Timeout => {}
            }
        }
        retry_on.dedup();
        if retry_on.is_empty() {
            eprintln!(
                "note: workflow `{}`: Envoy retries none of its fallback failures (`timeout` alone); the filter records its cluster steps as `no_host_retry`",
                w.name
            );
            continue;
        }
        config.fallback_routes.push(FallbackRoute {
            header: chain.header,
            value: chain.value,
            clusters: chain.clusters,
            retry_on,
            statuses,
        });
    }
    Ok(())
}

/// Trusted headers are always stripped; with `--jwt-issuer`, `jwt_authn` sets them.
fn identity(args: &EnvoyArgs, config: &mut EnvoyConfig) -> anyhow::Result<()> {
    let bytes = std::fs::read(&args.artifact)
        .map_err(|e| anyhow::anyhow!("cannot read {}: {e}", args.artifact.display()))?;
    let policy = writ_compiler::link::read_policy(&bytes).ok();
    let trusted = policy
        .as_ref()
        .map(writ::identity::trusted_headers)
        .unwrap_or_default();
    config.trusted_headers = trusted.clone();
    let Some(issuer) = &args.jwt.jwt_issuer else {
        if !trusted.is_empty() {
            eprintln!(
                "{}",
                writ::identity::unverified_warning("writ envoy", &trusted)
            );
        }
        return Ok(());
    };
    let jwks = args
        .jwt
        .jwks
        .as_deref()
        .ok_or_else(|| anyhow::anyhow!("--jwt-issuer needs --jwks"))?;
    config.jwt = Some(JwtAuthn {
        issuer: issuer.clone(),
        audiences: args.jwt.jwt_audience.clone(),
        jwks: Jwks::parse(jwks)?,
        claims: writ::identity::claim_mapping(&trusted, &args.jwt.jwt_claims)?,
        exempt_paths: policy
            .as_ref()
            .and_then(|p| p.kill_switch.as_ref())
            .map(|ks| vec![ks.admin_path.clone()])
            .unwrap_or_default(),
    });
    Ok(())
}
