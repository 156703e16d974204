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
    /// The artifact to enforce (any proxy-wasm module).
    #[arg(long)]
    pub policy: PathBuf,
    /// Base URL of the model provider (`https://api.openai.com`, `http://127.0.0.1:8000`).
    #[arg(long)]
    pub upstream: String,
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,
    /// Worker threads, one VM each.
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
}

/// Serves until SIGINT or SIGTERM; SIGHUP reloads the artifact and configuration.
pub fn run(args: ServeArgs) -> anyhow::Result<ExitCode> {
    let host = load(&args)?;
    let mut gateway = GatewayConfig::new(args.listen, &args.upstream);
    gateway.workers = args.workers.max(1);
    gateway.max_request_body = args.max_body;
    if let Some(path) = &args.upstream_ca {
        gateway.upstream_ca =
            Some(std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?);
    }
    let gateway = Gateway::start(host, gateway)?;
    eprintln!(
        "writ serve: listening on http://{} -> {}",
        gateway.local_addr(),
        args.upstream
    );
    gateway.run_until_signal(|| load(&args).map_err(|e| format!("{e:#}")))?;
    Ok(ExitCode::SUCCESS)
}

/// Reads the artifact and configuration and starts a host; also what SIGHUP re-runs.
fn load(args: &ServeArgs) -> anyhow::Result<Host> {
    let module = std::fs::read(&args.policy)
        .with_context(|| format!("cannot read {}", args.policy.display()))?;
    let mut config = HostConfig::new(module);
    config.cache_dir = super::run::cache_dir(args.cache_dir.as_ref(), args.no_cache);
    // Two sets of workers may overlap during a reload.
    config.limits.max_vms = u32::try_from(args.workers.saturating_mul(2) + 2).unwrap_or(64);
    if let Some(path) = &args.config {
        config.plugin_config =
            std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
    }
    for cluster in &args.clusters {
        let Some((name, url)) = cluster.split_once('=') else {
            anyhow::bail!("--cluster expects NAME=URL, got `{cluster}`");
        };
        config.clusters.insert(name.to_string(), url.to_string());
    }
    Host::new(config).with_context(|| args.policy.display().to_string())
}
