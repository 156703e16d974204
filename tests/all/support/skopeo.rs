//! `skopeo`, the OCI image tool Debian ships, for reading back the layouts `writ package`
//! writes. Installed with apt when missing (the machine runs as root and reaches Debian's
//! mirrors); a failed install fails the test that needs it with apt's own words, never
//! skips it.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::Duration;

use super::process::run_ok;

/// Path of `skopeo`, installing it on first use ([`super::apt::ensure`]). Safe across test
/// threads (a `OnceLock`) and across concurrent test processes (apt's install lock).
pub fn skopeo_binary() -> Result<&'static Path, String> {
    static BIN: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    BIN.get_or_init(install)
        .as_ref()
        .map(|p| p.as_path())
        .map_err(Clone::clone)
}

fn install() -> Result<PathBuf, String> {
    let bin = super::apt::ensure("skopeo", "skopeo")?;
    let version = run_ok(Command::new(&bin).arg("--version"), Duration::from_secs(30))?;
    eprintln!("skopeo: {} ({})", bin.display(), version.trim());
    Ok(bin)
}

/// Runs `skopeo ARGS` (bounded in time) and returns its stdout; panics with its stderr on
/// failure or when skopeo cannot be installed.
pub fn skopeo(args: &[&str]) -> String {
    let bin = skopeo_binary().unwrap_or_else(|e| panic!("{e}"));
    run_ok(Command::new(bin).args(args), Duration::from_secs(120)).unwrap_or_else(|e| panic!("{e}"))
}
