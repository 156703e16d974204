//! Real consumers written in Python, installed from PyPI into the project's `.venv` (the
//! one that holds Envoy) when missing: the tests read writ's output with the libraries
//! its users read it with, not only with parsers of our own.

use std::path::PathBuf;
use std::process::Command;
use std::sync::OnceLock;
use std::time::Duration;

use super::process::run_ok;
use super::workspace_root;

/// The official Prometheus client library, whose text-format parser is what Python
/// exporters and tools use to read a scrape.
pub const PROMETHEUS_CLIENT: &str = "prometheus-client==0.21.1";

/// The venv's python with [`PROMETHEUS_CLIENT`] importable, installing it on first use
/// (serialised across test processes by the same lock file as the Envoy install).
pub fn with_prometheus_client() -> Result<PathBuf, String> {
    static PY: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    PY.get_or_init(|| install(PROMETHEUS_CLIENT, "prometheus_client"))
        .clone()
}

fn install(requirement: &str, module: &str) -> Result<PathBuf, String> {
    // The venv exists once Envoy is installed; the lock is the one Envoy's install holds.
    super::envoy::envoy_binary()?;
    let venv = workspace_root().join(".venv");
    let python = venv.join("bin").join("python3");
    let lock = super::apt::install_lock("envoy-install")?;
    let present = run_ok(
        Command::new(&python).args(["-c", &format!("import {module}")]),
        Duration::from_secs(30),
    )
    .is_ok();
    if !present {
        run_ok(
            Command::new(venv.join("bin").join("pip")).args([
                "install",
                "--quiet",
                "--disable-pip-version-check",
                requirement,
            ]),
            Duration::from_secs(300),
        )?;
    }
    let _ = lock.unlock();
    Ok(python)
}

/// The samples of a Prometheus text page as `prometheus_client` parses it:
/// `(name, sorted labels as "k=v;k=v", value)`, for names starting with `prefix`.
/// Fails when the library refuses the page.
pub fn prometheus_client_samples(
    page: &str,
    prefix: &str,
) -> Result<Vec<(String, String, f64)>, String> {
    let python = with_prometheus_client()?;
    let script = r#"
import sys
from prometheus_client.parser import text_string_to_metric_families
prefix = sys.argv[1]
with open(sys.argv[2], encoding="utf-8") as page:
    text = page.read()
for family in text_string_to_metric_families(text):
    for s in family.samples:
        if s.name.startswith(prefix):
            labels = ";".join(f"{k}={v}" for k, v in sorted(s.labels.items()))
            print(f"{s.name}\t{labels}\t{s.value!r}")
"#;
    let dir = super::tempdir::TempDir::new("promclient");
    let input = dir.path().join("page.txt");
    std::fs::write(&input, page).map_err(|e| e.to_string())?;
    let out = run_ok(
        Command::new(python)
            .args(["-c", script, prefix])
            .arg(&input),
        Duration::from_secs(60),
    )?;
    out.lines()
        .map(|line| {
            let mut f = line.split('\t');
            let (Some(name), Some(labels), Some(value)) = (f.next(), f.next(), f.next()) else {
                return Err(format!("unexpected line from prometheus_client: {line:?}"));
            };
            let value: f64 = value
                .parse()
                .map_err(|e| format!("value {value:?} from prometheus_client: {e}"))?;
            Ok((name.to_string(), labels.to_string(), value))
        })
        .collect()
}

/// The official MCP Python SDK: its Streamable HTTP client is what agents use to call an
/// MCP server, so the MCP end-to-end tests drive the gateway with it.
pub const MCP_SDK: &str = "mcp==2.3.0";

/// The venv's python with [`MCP_SDK`] importable, installing it on first use.
pub fn with_mcp_sdk() -> Result<PathBuf, String> {
    static PY: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    PY.get_or_init(|| install(MCP_SDK, "mcp.client.streamable_http"))
        .clone()
}

/// Runs one MCP session with the SDK's client (`mcp_client.py`): initialise, then each of
/// `steps` (`{"op": "list"}` or `{"op": "call", "name", "arguments"}`), against `url` with
/// the extra HTTP `headers`. Returns one result per step after the first, which names the
/// server (`{"server": …}`); a JSON-RPC error the SDK raised is `{"error": {code, message,
/// data}}`.
pub fn mcp_session(
    url: &str,
    headers: &serde_json::Value,
    steps: &serde_json::Value,
) -> Result<Vec<serde_json::Value>, String> {
    let python = with_mcp_sdk()?;
    let script = workspace_root().join("tests/all/support/mcp_client.py");
    let out = run_ok(
        Command::new(python)
            .arg(script)
            .arg(url)
            .arg(headers.to_string())
            .arg(steps.to_string()),
        Duration::from_secs(120),
    )?;
    let last = out.lines().last().unwrap_or_default();
    serde_json::from_str::<Vec<serde_json::Value>>(last)
        .map_err(|e| format!("mcp_client.py printed {out:?}: {e}"))
}
