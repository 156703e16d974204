//! Shared helpers for the end-to-end tests: temp dirs, a recording loopback upstream, a
//! minimal HTTP/1.1 client, guest filters built for wasm32, and the gateways under test: real
//! Envoy ([`envoy::EnvoyProcess`]) and `writ serve` ([`serve::ServeProcess`]), both
//! [`cases::Gateway`]s that run the same case table ([`cases::e2e_cases`]).
//!
//! Everything here is bounded in time: every wait has a deadline, every child process is
//! killed on drop, so a broken gateway fails a test instead of hanging CI.

#![allow(dead_code)] // Each test area uses a different subset of the helpers.

pub mod api_mocks;
pub mod apt;
pub mod cases;
pub mod envoy;
/// The generator behind `writ envoy`, compiled in so the harness can configure Envoy for
/// guests that are not writ artifacts.
#[path = "../../../src/envoy_config.rs"]
pub mod envoy_config;
pub mod etcd;
pub mod exposition;
pub mod guests;
pub mod hosts;
pub mod http;
pub mod jwt;
pub mod mcp_server;
pub mod process;
pub mod python;
pub mod serve;
pub mod skopeo;
pub mod tempdir;
pub mod upstream;

use std::path::{Path, PathBuf};

/// The workspace root (where `Cargo.toml`, `.venv` and `target/` live).
pub fn workspace_root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// The cargo target directory of this build (honours `CARGO_TARGET_DIR`).
pub fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .map(|p| {
            if p.is_absolute() {
                p
            } else {
                workspace_root().join(p)
            }
        })
        .unwrap_or_else(|| workspace_root().join("target"))
}

/// The `writ` binary cargo built for these tests.
pub fn writ_bin() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_writ"))
}

/// Runs the `writ` binary in the workspace root and waits for it.
pub fn writ(args: &[&str]) -> std::process::Output {
    match std::process::Command::new(writ_bin())
        .args(args)
        .current_dir(workspace_root())
        .output()
    {
        Ok(out) => out,
        Err(e) => panic!("cannot run writ: {e}"),
    }
}

/// Runs `writ` with `args` in `dir` (relative paths in `args` resolve there), bounded in
/// time.
pub fn writ_in(dir: &std::path::Path, args: &[&str]) -> std::process::Output {
    process::run_bounded(
        std::process::Command::new(writ_bin())
            .args(args)
            .current_dir(dir),
        std::time::Duration::from_secs(120),
    )
    .unwrap_or_else(|e| panic!("writ {args:?}: {e}"))
}

/// `writ envoy ARTIFACT --upstream UPSTREAM` with kernel-chosen listener and admin ports
/// and `extra` flags, run in `dir`; panics unless it succeeds.
pub fn writ_envoy(
    dir: &std::path::Path,
    artifact: &std::path::Path,
    upstream: std::net::SocketAddr,
    extra: &[&str],
) -> std::process::Output {
    let artifact = artifact.display().to_string();
    let upstream = upstream.to_string();
    let mut args = vec![
        "envoy",
        &artifact,
        "--upstream",
        &upstream,
        "--listen",
        "127.0.0.1:0",
        "--admin",
        "127.0.0.1:0",
    ];
    args.extend_from_slice(extra);
    let out = writ_in(dir, &args);
    assert!(out.status.success(), "{}", output_text(&out));
    out
}

/// Everything a command printed, stdout then stderr, for assertions and failure messages.
pub fn output_text(out: &std::process::Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}
