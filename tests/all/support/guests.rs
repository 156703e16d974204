//! Guest filters built from source for wasm32, so the hosts can be tested without writ.
//!
//! Each guest is its own cargo workspace; it is built once per test process into
//! `target/guests` (cargo's own fingerprinting makes later builds no-ops, and cargo's
//! target-dir lock makes concurrent builds safe).

use std::path::PathBuf;
use std::process::Command;
use std::sync::OnceLock;
use std::time::Duration;

use super::process::run_ok;

/// The bench's pass-through filter (`benches/passthrough-filter`): every callback continues.
pub fn passthrough_filter() -> Result<PathBuf, String> {
    static WASM: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    let dir = super::workspace_root().join("benches/passthrough-filter");
    WASM.get_or_init(|| build(&dir, "passthrough_filter"))
        .clone()
}

/// The harness probe (`tests/all/support/probe-filter`): buffers the request body like a
/// policy engine, tags responses with `x-probe: <body length>`, logs its VM start.
pub fn probe_filter() -> Result<PathBuf, String> {
    static WASM: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    let dir = super::workspace_root().join("tests/all/support/probe-filter");
    WASM.get_or_init(|| build(&dir, "probe_filter")).clone()
}

fn build(dir: &std::path::Path, artifact: &str) -> Result<PathBuf, String> {
    let target = super::target_dir().join("guests");
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    run_ok(
        Command::new(cargo)
            .current_dir(dir)
            .args([
                "build",
                "--release",
                "--quiet",
                "--target",
                "wasm32-unknown-unknown",
            ])
            .arg("--target-dir")
            .arg(&target)
            // The outer `cargo test` sets these for the host build; the guest wants its own.
            .env_remove("CARGO_TARGET_DIR")
            .env_remove("RUSTFLAGS")
            .env_remove("CARGO_ENCODED_RUSTFLAGS"),
        Duration::from_secs(600),
    )?;
    let wasm = target
        .join("wasm32-unknown-unknown/release")
        .join(format!("{artifact}.wasm"));
    if wasm.is_file() {
        Ok(wasm)
    } else {
        Err(format!("{} was not built", wasm.display()))
    }
}
