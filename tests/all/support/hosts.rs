//! A writ policy running in either host behind one type: real Envoy configured from the
//! output of `writ envoy`, or `writ serve`. Tests that must hold in both hosts start a
//! [`WritGateway`] per [`HostKind`] and read its metrics and audit records the same way.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use super::cases::Gateway;
use super::envoy::EnvoyProcess;
use super::http::{Request, send};
use super::process::run_ok;
use super::serve::ServeProcess;

/// Which host runs the artifact.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HostKind {
    Envoy,
    Serve,
}

impl HostKind {
    pub const BOTH: [HostKind; 2] = [HostKind::Envoy, HostKind::Serve];
}

/// How to start a gateway.
#[derive(Debug, Clone)]
pub struct Options {
    /// Envoy worker threads / `writ serve --workers`.
    pub workers: u32,
    /// A loopback review queue: escalations are posted to `http://ADDR/reviews`.
    pub review_queue: Option<SocketAddr>,
    /// `--upstream-timeout` in both hosts, when given.
    pub upstream_timeout_secs: Option<u64>,
    /// Turns the metrics' `team` label on with this cap (`metrics.team_label.max`).
    pub team_label_max: Option<u32>,
    /// More named upstreams (`--cluster NAME=…` in both hosts), e.g. a fallback's.
    pub clusters: Vec<(String, SocketAddr)>,
}

impl Default for Options {
    fn default() -> Options {
        Options {
            workers: 2,
            review_queue: None,
            upstream_timeout_secs: None,
            team_label_max: None,
            clusters: Vec::new(),
        }
    }
}

/// The cluster name and path the review queue is configured with.
pub const REVIEW_CLUSTER: &str = "reviews";
pub const REVIEW_PATH: &str = "/reviews";

/// A running gateway enforcing a writ artifact.
pub enum WritGateway {
    Envoy(EnvoyProcess),
    Serve(ServeProcess),
}

/// Runs `check` against `artifact` in real Envoy and in `writ serve`, and fails with every
/// host's failure at once, so one host's failure never hides the other's.
pub fn assert_in_both_hosts(
    artifact: &Path,
    check: impl Fn(HostKind, &Path) -> Result<(), String>,
) {
    let failures: Vec<String> = HostKind::BOTH
        .iter()
        .filter_map(|&kind| check(kind, artifact).err())
        .collect();
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

/// The bundled `support-assistant` policy, built into `out` by the real `writ build`.
pub fn build_support_assistant(out: &Path) -> PathBuf {
    build_policy(
        &super::workspace_root().join("policies/support-assistant.policy"),
        out,
    )
}

/// Builds the policy `source` with the real `writ build` into `out` and returns the
/// artifact it wrote (the `.policy`'s directory must hold the paper policy it implements).
pub fn build_policy(source: &Path, out: &Path) -> PathBuf {
    let built = run_ok(
        Command::new(super::writ_bin())
            .arg("build")
            .arg(source)
            .arg("--out")
            .arg(out),
        Duration::from_secs(120),
    );
    if let Err(e) = built {
        panic!("writ build {}: {e}", source.display());
    }
    let wasm = std::fs::read_dir(out)
        .ok()
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path())
        .find(|p| p.extension().is_some_and(|e| e == "wasm"));
    match wasm {
        Some(w) => w,
        None => panic!("writ build wrote no artifact into {}", out.display()),
    }
}

/// The plugin configuration both hosts get (`writ envoy --config`, `writ serve --config`):
/// the review queue and the team label, when given. Both CLIs add `artifact_sha256`
/// themselves.
fn plugin_config(opts: &Options) -> String {
    let mut config = serde_json::json!({});
    if opts.review_queue.is_some() {
        config["review_queue"] =
            serde_json::json!({"cluster": REVIEW_CLUSTER, "path": REVIEW_PATH});
    }
    if let Some(max) = opts.team_label_max {
        config["metrics"] = serde_json::json!({"team_label": {"max": max}});
    }
    config.to_string()
}

impl WritGateway {
    /// Starts `artifact` in front of `upstream` in the given host.
    pub fn start(
        kind: HostKind,
        artifact: &Path,
        upstream: SocketAddr,
        opts: &Options,
    ) -> Result<WritGateway, String> {
        let config = plugin_config(opts);
        let dir = super::tempdir::TempDir::new("plugin-config");
        let config_path = dir.path().join("plugin.json");
        std::fs::write(&config_path, &config).map_err(|e| e.to_string())?;
        match kind {
            HostKind::Envoy => {
                let mut cmd = Command::new(super::writ_bin());
                cmd.arg("envoy")
                    .arg(artifact)
                    .arg("--config")
                    .arg(&config_path)
                    .arg("--upstream")
                    .arg(upstream.to_string())
                    .args(["--listen", "127.0.0.1:0", "--admin", "127.0.0.1:0"]);
                if let Some(review) = opts.review_queue {
                    cmd.arg("--cluster")
                        .arg(format!("{REVIEW_CLUSTER}={review}"));
                }
                if let Some(secs) = opts.upstream_timeout_secs {
                    cmd.arg("--upstream-timeout").arg(secs.to_string());
                }
                for (name, addr) in &opts.clusters {
                    cmd.arg("--cluster").arg(format!("{name}={addr}"));
                }
                let yaml = run_ok(&mut cmd, Duration::from_secs(30))?;
                EnvoyProcess::start_with_workers(&yaml, opts.workers).map(WritGateway::Envoy)
            }
            HostKind::Serve => {
                let mut extra = vec![
                    "--workers".to_string(),
                    opts.workers.to_string(),
                    "--config".to_string(),
                    config_path.display().to_string(),
                ];
                if let Some(review) = opts.review_queue {
                    extra.push("--cluster".into());
                    extra.push(format!("{REVIEW_CLUSTER}=http://{review}"));
                }
                if let Some(secs) = opts.upstream_timeout_secs {
                    extra.push("--upstream-timeout".into());
                    extra.push(secs.to_string());
                }
                for (name, addr) in &opts.clusters {
                    extra.push("--cluster".into());
                    extra.push(format!("{name}=http://{addr}"));
                }
                // The configuration is read at start; the temp dir may go afterwards.
                ServeProcess::start_with(artifact, upstream, &extra).map(WritGateway::Serve)
            }
        }
    }

    pub fn kind(&self) -> HostKind {
        match self {
            WritGateway::Envoy(_) => HostKind::Envoy,
            WritGateway::Serve(_) => HostKind::Serve,
        }
    }

    fn gateway(&self) -> &dyn Gateway {
        match self {
            WritGateway::Envoy(e) => e,
            WritGateway::Serve(s) => s,
        }
    }

    /// The Prometheus text: Envoy's admin `/stats/prometheus`, `writ serve`'s `/metrics`.
    pub fn prometheus(&self) -> String {
        let got = match self {
            WritGateway::Envoy(e) => e.admin_get("/stats/prometheus"),
            WritGateway::Serve(s) => {
                let req = Request {
                    method: "GET".into(),
                    path: "/metrics".into(),
                    ..Default::default()
                };
                send(s.addr(), &req, Duration::from_secs(5)).map_err(|e| e.to_string())
            }
        };
        got.map(|r| r.body_str()).unwrap_or_default()
    }

    /// The Prometheus page parsed, with only the `writ_*` families (Envoy's own stats of
    /// the filter named `writ`, `envoy_wasm_…`, are not the module's metrics). A page that
    /// does not parse is a test failure.
    pub fn writ_exposition(&self) -> super::exposition::Exposition {
        let text = self.prometheus();
        let mut page = super::exposition::parse(&text)
            .unwrap_or_else(|e| panic!("[{}] unparsable Prometheus page: {e}", self.name()));
        page.samples.retain(|s| s.name.starts_with("writ_"));
        page.types.retain(|f, _| f.starts_with("writ_"));
        page.helps.retain(|f, _| f.starts_with("writ_"));
        page
    }

    /// The writ series as (`family;label=value;…` with labels sorted, value).
    pub fn writ_metrics(&self) -> Vec<(String, f64)> {
        self.writ_exposition()
            .samples
            .iter()
            .map(|s| (s.key(), s.value))
            .collect()
    }

    /// The value of the writ series `spec` (`family;label=value;…`, exactly those labels),
    /// if exported.
    pub fn metric(&self, spec: &str) -> Option<f64> {
        self.writ_exposition().value(spec)
    }

    /// Every `writ-audit` record the gateway logged so far, in order.
    pub fn audit_records(&self) -> Vec<serde_json::Value> {
        self.log()
            .lines()
            .filter_map(writ_plugin::audit::parse_log_line)
            .collect()
    }

    /// Waits up to `timeout` until at least `n` audit records with `event == event` exist
    /// (both hosts log them when the stream closes, after the client has its answer).
    pub fn wait_audit(&self, event: &str, n: usize, timeout: Duration) -> Vec<serde_json::Value> {
        let deadline = std::time::Instant::now() + timeout;
        loop {
            let records: Vec<_> = self
                .audit_records()
                .into_iter()
                .filter(|r| r["event"] == event)
                .collect();
            if records.len() >= n || std::time::Instant::now() > deadline {
                return records;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Gateway for WritGateway {
    fn name(&self) -> &str {
        self.gateway().name()
    }
    fn addr(&self) -> SocketAddr {
        self.gateway().addr()
    }
    fn log(&self) -> String {
        self.gateway().log()
    }
}
