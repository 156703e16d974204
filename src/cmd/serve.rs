//! `writ serve`: the standalone gateway, an OpenAI-compatible reverse proxy that enforces an
//! artifact on every request and response (streaming included), without Envoy.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use writ_runtime::{Gateway, GatewayConfig, Host, HostConfig};

/// Arguments of `writ serve`.
#[derive(Debug, clap::Args)]
pub struct ServeArgs {
    /// The artifact to enforce (any proxy-wasm module), or a `.policy` source, compiled and
    /// linked in memory.
    #[arg(long)]
    pub policy: PathBuf,
    /// Append one audit record per request to this JSONL file, each line chained to the
    /// previous one by sha256 (`writ audit verify` checks the chain).
    #[arg(long, value_name = "FILE")]
    pub audit_log: Option<PathBuf>,
    /// Base URL of the model provider (`https://api.openai.com`, `http://127.0.0.1:8000`).
    #[arg(long)]
    pub upstream: String,
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,
    /// Workers: each is an I/O thread and a VM, like one of Envoy's `--concurrency` workers.
    #[arg(long, default_value_t = 2)]
    pub workers: usize,
    /// Largest request body accepted, in bytes (larger gets 413).
    #[arg(long, default_value_t = 1 << 20)]
    pub max_body: usize,
    /// Plugin configuration handed to the module (`proxy_on_configure`).
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Named clusters for the module's HTTP callouts, `name=http://host:port`.
    #[arg(long = "cluster", value_name = "NAME=URL")]
    pub clusters: Vec<String>,
    /// Extra CA certificates (PEM) to trust for an HTTPS upstream, besides the web roots.
    #[arg(long)]
    pub upstream_ca: Option<PathBuf>,
    /// Cache compiled modules here (keyed by the module's sha256); default
    /// `$WRIT_CACHE_DIR`, else `$XDG_CACHE_HOME/writ`, else `~/.cache/writ`.
    #[arg(long)]
    pub cache_dir: Option<PathBuf>,
    /// Compile the module every time instead of using the cache.
    #[arg(long)]
    pub no_cache: bool,
    /// Wall-clock budget of one filter callback, in milliseconds; a callback past it is
    /// stopped and its request answered with the fixed 503 `engine_error`.
    #[arg(long, value_name = "MS", default_value_t = 500)]
    pub filter_timeout_ms: u64,
    /// The JWT verifier that sets the policy's trusted identity headers.
    #[command(flatten)]
    pub jwt: writ::identity::JwtArgs,
    /// The fleet store (`--shared etcd://HOST:PORT`, `docs/fleet.md`).
    #[command(flatten)]
    pub fleet: writ::fleet::SharedArgs,
    /// Serve only an artifact signed by this public key (`writ keygen`'s `.pub`); an
    /// unsigned or changed artifact is refused, at start and on every SIGHUP reload.
    /// Repeatable, so a key can be rotated.
    #[arg(long, value_name = "PUBKEY")]
    pub trust: Vec<PathBuf>,
    /// Seconds the model provider has to start its reply (its status and headers) before
    /// the client gets 504 `upstream_timeout`.
    #[arg(long, value_name = "SECS", default_value_t = 300)]
    pub upstream_timeout: u64,
    /// OpenTelemetry.
    #[command(flatten)]
    pub otel: OtelArgs,
}

/// `writ serve --otlp`: traces and GenAI metrics over OTLP/HTTP (`docs/observability.md`).
#[derive(Debug, clap::Args)]
pub struct OtelArgs {
    /// Export a span per request (and per upstream attempt), guardrail events and the GenAI
    /// metrics to this OTLP/HTTP receiver, e.g. `http://127.0.0.1:4318` (`/v1/traces` and
    /// `/v1/metrics` are appended). Never prompts, completions or detected values.
    #[arg(long, value_name = "URL")]
    pub otlp: Option<String>,
    /// `gen_ai.provider.name` on spans and metrics (`openai`, `azure.ai.openai`, …).
    #[arg(long, value_name = "NAME", default_value = "openai", requires = "otlp")]
    pub otel_provider: String,
    /// `service.name` of the exported resource.
    #[arg(long, value_name = "NAME", default_value = "writ", requires = "otlp")]
    pub otel_service_name: String,
    /// How often spans (at the latest) and metrics are exported, in milliseconds.
    #[arg(long, value_name = "MS", default_value_t = 5000, requires = "otlp")]
    pub otlp_interval_ms: u64,
}

impl OtelArgs {
    /// The gateway's telemetry settings, with the hook that turns writ's audit records
    /// into guardrail events.
    fn telemetry(&self) -> Option<writ_runtime::TelemetryConfig> {
        let url = self.otlp.as_deref()?;
        let mut config = writ_runtime::TelemetryConfig::new(url);
        config.provider_name = self.otel_provider.clone();
        config.service_name = self.otel_service_name.clone();
        config.export_interval = std::time::Duration::from_millis(self.otlp_interval_ms.max(10));
        config.annotate = Some(writ::guardrail_events::hook());
        Some(config)
    }
}

/// Serves until SIGINT or SIGTERM; SIGHUP reloads the artifact and configuration.
pub fn run(args: ServeArgs) -> anyhow::Result<ExitCode> {
    let host = load(&args)?;
    let policy = policy_of(&args)?;
    let mut gateway = GatewayConfig::new(args.listen, &args.upstream);
    gateway.workers = args.workers.max(1);
    gateway.max_request_body = args.max_body;
    gateway.upstream_timeout = std::time::Duration::from_secs(args.upstream_timeout.max(1));
    if let Some(path) = &args.upstream_ca {
        gateway.upstream_ca =
            Some(std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?);
    }
    let trusted = policy
        .as_ref()
        .map(writ::identity::trusted_headers)
        .unwrap_or_default();
    gateway.identity = identity_config(&args, policy.as_ref(), &trusted)?;
    let audit = match &args.audit_log {
        Some(path) => Some(open_audit_log(path)?),
        None => None,
    };
    gateway.log_sink = Some(stderr_sink(audit.clone().map(audit_sink)));
    gateway.refusal_sink = Some(refusal_sink(policy.clone(), artifact_sha256(&args)?, audit));
    gateway.telemetry = args.otel.telemetry();
    let gateway = Gateway::start(host, gateway)?;
    eprintln!(
        "writ serve: listening on http://{} -> {}",
        gateway.local_addr(),
        args.upstream
    );
    gateway.run_until_signal(|| {
        // The identity headers are fixed at start: a module that trusts other headers
        // needs a restart, so that their client copies are never let through.
        let now = policy_of(&args)
            .map_err(|e| format!("{e:#}"))?
            .as_ref()
            .map(writ::identity::trusted_headers)
            .unwrap_or_default();
        if now != trusted {
            return Err(format!(
                "the new module trusts header(s) {now:?} instead of {trusted:?}: restart writ serve to change identity headers"
            ));
        }
        load(&args).map_err(|e| format!("{e:#}"))
    })?;
    Ok(ExitCode::SUCCESS)
}

/// A sink that prints the module's log lines at info level and above to stderr, as Envoy
/// does (`would have denied` lines of monitor rules, `writ-audit` records), then hands each
/// line to `next` (the audit log, when there is one).
fn stderr_sink(next: Option<writ_runtime::LogSink>) -> writ_runtime::LogSink {
    use writ_runtime::abi::LogLevel;
    writ_runtime::LogSink(std::sync::Arc::new(move |record| {
        let level = match record.level {
            LogLevel::Trace | LogLevel::Debug => None,
            LogLevel::Info => Some("info"),
            LogLevel::Warn => Some("warning"),
            LogLevel::Error => Some("error"),
            LogLevel::Critical => Some("critical"),
        };
        if let Some(level) = level {
            // One write per record: `eprintln!` writes each piece of its format to the
            // unbuffered stderr as a system call of its own (five per record).
            let line = format!("[{level}] wasm log: {}\n", record.message);
            let _ = std::io::Write::write_all(&mut std::io::stderr().lock(), line.as_bytes());
        }
        if let Some(next) = &next {
            (next.0)(record);
        }
    }))
}

/// The hash-chained audit log, shared by the filter's records and the gateway's own.
type SharedAuditLog = std::sync::Arc<std::sync::Mutex<writ::audit_log::AuditLog>>;

fn open_audit_log(path: &std::path::Path) -> anyhow::Result<SharedAuditLog> {
    let log = writ::audit_log::AuditLog::open(path)
        .map_err(|e| anyhow::anyhow!("cannot open the audit log {}: {e}", path.display()))?;
    Ok(std::sync::Arc::new(std::sync::Mutex::new(log)))
}

fn append(log: &SharedAuditLog, value: &serde_json::Value) {
    let mut log = match log.lock() {
        Ok(l) => l,
        Err(poisoned) => poisoned.into_inner(),
    };
    if let Err(e) = log.append(value) {
        eprintln!("error: writing the audit log: {e}");
    }
}

/// A sink that appends the filter's `writ-audit` records to a hash-chained JSONL file.
fn audit_sink(log: SharedAuditLog) -> writ_runtime::LogSink {
    writ_runtime::LogSink(std::sync::Arc::new(move |record| {
        if let Some(value) = writ_plugin::audit::parse_log_line(&record.message) {
            append(&log, &value);
        }
    }))
}

/// Records the requests the gateway answered itself (a refused token, a failed engine),
/// which the filter could not record: outcome `denied` with `detail: "unauthenticated:
/// <code>"`, or outcome `error` with `detail: "engine_error: <kind>"`. Printed to stderr
/// like the filter's records, and appended to the audit log when there is one.
fn refusal_sink(
    policy: Option<writ_plugin::ir::Policy>,
    artifact_sha256: String,
    log: Option<SharedAuditLog>,
) -> writ_runtime::RefusalSink {
    writ_runtime::RefusalSink(std::sync::Arc::new(move |refusal| {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX))
            .unwrap_or(0);
        let mut record = match &policy {
            Some(p) => writ_plugin::audit::AuditRecord::request(
                p,
                Some(&artifact_sha256),
                &refusal.request_id,
                nanos,
            ),
            None => writ_plugin::audit::AuditRecord {
                event: "request".into(),
                time: writ_plugin::calendar::rfc3339(nanos),
                request_id: refusal.request_id.clone(),
                artifact_sha256: Some(artifact_sha256.clone()),
                ..Default::default()
            },
        };
        record.status = refusal.status;
        let (outcome, detail) = match refusal.kind {
            writ_runtime::RefusalKind::Unauthenticated => ("denied", "unauthenticated"),
            writ_runtime::RefusalKind::EngineFailure => ("error", "engine_error"),
            // As the filter records a request Envoy answered before the policy ran.
            writ_runtime::RefusalKind::Rejected => ("error", "answered before the policy ran"),
        };
        record.outcome = outcome.into();
        record.detail = Some(format!("{detail}: {}", refusal.code));
        eprintln!("[info] writ serve: {}", record.log_line());
        if let (Some(log), Ok(value)) = (&log, serde_json::to_value(&record)) {
            append(log, &value);
        }
    }))
}

/// The policy inside the module, when it is a writ artifact.
fn policy_of(args: &ServeArgs) -> anyhow::Result<Option<writ_plugin::ir::Policy>> {
    let module = module_of(&args.policy)?;
    Ok(writ_compiler::link::read_policy(&module).ok())
}

fn artifact_sha256(args: &ServeArgs) -> anyhow::Result<String> {
    Ok(writ_compiler::link::sha256_hex(&module_of(&args.policy)?))
}

/// The identity rules: strip every trusted header; verify tokens when configured; warn
/// when the policy trusts headers that nothing sets.
fn identity_config(
    args: &ServeArgs,
    policy: Option<&writ_plugin::ir::Policy>,
    trusted: &[String],
) -> anyhow::Result<writ_runtime::IdentityConfig> {
    let mut identity = writ_runtime::IdentityConfig {
        strip: trusted.to_vec(),
        exempt_paths: policy
            .and_then(|p| p.kill_switch.as_ref())
            .map(|ks| vec![ks.admin_path.clone()])
            .unwrap_or_default(),
        ..Default::default()
    };
    let Some(issuer) = &args.jwt.jwt_issuer else {
        if !trusted.is_empty() {
            eprintln!(
                "{}",
                writ::identity::unverified_warning("writ serve", trusted)
            );
        }
        return Ok(identity);
    };
    let jwks = match args.jwt.jwks_source() {
        Some(writ::identity::JwksSource::File(path)) => std::fs::read(&path)
            .with_context(|| format!("cannot read the JWKS {}", path.display()))?,
        Some(writ::identity::JwksSource::Url(url)) => {
            let ca = match &args.upstream_ca {
                Some(p) => {
                    Some(std::fs::read(p).with_context(|| format!("cannot read {}", p.display()))?)
                }
                None => None,
            };
            writ_runtime::gateway::identity::fetch_jwks(&url, ca.as_deref())
                .map_err(|e| anyhow::anyhow!("cannot fetch the JWKS from {url}: {e}"))?
        }
        None => anyhow::bail!("--jwt-issuer needs --jwks"),
    };
    let claims = writ::identity::claim_mapping(trusted, &args.jwt.jwt_claims)?;
    let verifier =
        writ_runtime::JwtVerifier::new(&jwks, issuer, args.jwt.jwt_audience.clone(), claims)
            .map_err(|e| anyhow::anyhow!("--jwks: {e}"))?;
    identity.verifier = Some(verifier);
    Ok(identity)
}

/// The module to serve: a `.wasm` as is, or a `.policy` compiled and linked in memory.
fn module_of(path: &std::path::Path) -> anyhow::Result<Vec<u8>> {
    if path.extension().is_some_and(|e| e == "policy") {
        let source = super::read_source(path)?;
        let name = path.display().to_string();
        let compiled = writ_compiler::compile(&name, &source)
            .map_err(|d| anyhow::anyhow!("{name} has errors:\n{}", d.render(&name, &source)))?;
        let artifact = writ_compiler::link::link(writ::engine::ENGINE_WASM, &compiled)?;
        return Ok(artifact.wasm);
    }
    std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))
}

/// A writ artifact cannot know its own hash, so the host tells it (audit records carry
/// it): `artifact_sha256` is added to the plugin configuration unless it is already set.
fn with_artifact_sha256(config: Vec<u8>, module: &[u8]) -> Vec<u8> {
    if writ_compiler::link::read_manifest(module).is_err() {
        return config;
    }
    let mut value: serde_json::Value = if config.is_empty() {
        serde_json::json!({})
    } else {
        match serde_json::from_slice(&config) {
            Ok(v) => v,
            Err(_) => return config,
        }
    };
    if let Some(obj) = value.as_object_mut() {
        obj.entry("artifact_sha256")
            .or_insert_with(|| writ_compiler::link::sha256_hex(module).into());
    }
    serde_json::to_vec(&value).unwrap_or(config)
}

/// Reads the artifact and configuration and starts a host; also what SIGHUP re-runs.
fn load(args: &ServeArgs) -> anyhow::Result<Host> {
    if !args.trust.is_empty() && args.policy.extension().is_some_and(|e| e == "policy") {
        anyhow::bail!(
            "refusing artifact {}: --trust needs a signed `.wasm` artifact, not a `.policy` source",
            args.policy.display()
        );
    }
    let module = module_of(&args.policy)?;
    if !args.trust.is_empty() {
        // The bytes checked are the bytes loaded: read once, verified, then handed over.
        let trusted = writ::trust::read_trusted(&args.trust)?;
        writ::trust::verify_artifact(&args.policy, &module, &trusted)?;
    }
    let mut config = HostConfig::new(module.clone());
    config.cache_dir = super::run::cache_dir(args.cache_dir.as_ref(), args.no_cache);
    // Two sets of workers may overlap during a reload.
    config.limits.call_timeout = std::time::Duration::from_millis(args.filter_timeout_ms.max(1));
    config.limits.max_vms = u32::try_from(args.workers.saturating_mul(2) + 2).unwrap_or(64);
    if let Some(path) = &args.config {
        config.plugin_config =
            std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
    }
    if let Some((addr, section)) = args.fleet.section()? {
        config.plugin_config = writ::fleet::with_shared(&config.plugin_config, section)
            .context("the plugin configuration with --shared")?;
        config.clusters.insert(
            writ::fleet::STORE_CLUSTER.to_string(),
            format!("http://{addr}"),
        );
    }
    config.plugin_config = with_artifact_sha256(std::mem::take(&mut config.plugin_config), &module);
    config.metric_help = writ_plugin::metrics::FAMILIES
        .iter()
        .map(|f| (f.name.to_string(), f.help.to_string()))
        .collect();
    for cluster in &args.clusters {
        let Some((name, url)) = cluster.split_once('=') else {
            anyhow::bail!("--cluster expects NAME=URL, got `{cluster}`");
        };
        config.clusters.insert(name.to_string(), url.to_string());
    }
    Host::new(config).with_context(|| args.policy.display().to_string())
}
