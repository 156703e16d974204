//! `skopeo`, the OCI image tool Debian ships, for reading back the layouts `writ package`
//! writes. Installed with apt when missing (the machine runs as root and reaches Debian's
//! mirrors); a failed install fails the test that needs it with apt's own words, never
//! skips it.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::Duration;

use super::process::{run_bounded, run_ok};

/// Path of `skopeo`, installing it on first use. Safe across test threads (a `OnceLock`)
/// and across concurrent test processes (an exclusive lock on a file in `target/`, held
/// while apt runs; apt's own lock is waited for too, for installs outside these tests).
pub fn skopeo_binary() -> Result<&'static Path, String> {
    static BIN: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    BIN.get_or_init(install)
        .as_ref()
        .map(|p| p.as_path())
        .map_err(Clone::clone)
}

fn install() -> Result<PathBuf, String> {
    if let Some(bin) = on_path("skopeo") {
        return Ok(bin);
    }
    let lock_dir = super::target_dir();
    std::fs::create_dir_all(&lock_dir).map_err(|e| e.to_string())?;
    let lock =
        std::fs::File::create(lock_dir.join("skopeo-install.lock")).map_err(|e| e.to_string())?;
    lock.lock()
        .map_err(|e| format!("cannot lock the skopeo install: {e}"))?;
    // Another test process may have installed it while we waited for the lock.
    if on_path("skopeo").is_none() {
        let apt = |args: &[&str]| {
            run_bounded(
                Command::new("apt-get")
                    .args(["-o", "DPkg::Lock::Timeout=300"])
                    .args(args)
                    .env("DEBIAN_FRONTEND", "noninteractive"),
                Duration::from_secs(600),
            )
        };
        let install = ["install", "-y", "--no-install-recommends", "skopeo"];
        let first = apt(&install)?;
        if !first.status.success() {
            // A fresh machine has no package lists yet, or stale ones.
            let update = apt(&["update"])?;
            let second = apt(&install)?;
            if !second.status.success() {
                return Err(format!(
                    "skopeo is needed to read OCI layouts and could not be installed \
                     (`apt-get install -y --no-install-recommends skopeo`):\n{}{}\n\
                     apt-get update said:\n{}",
                    String::from_utf8_lossy(&second.stdout),
                    String::from_utf8_lossy(&second.stderr),
                    String::from_utf8_lossy(&update.stderr),
                ));
            }
        }
    }
    let _ = lock.unlock();
    let bin = on_path("skopeo").ok_or("apt installed skopeo, but it is not on PATH")?;
    let version = run_ok(Command::new(&bin).arg("--version"), Duration::from_secs(30))?;
    eprintln!("skopeo: {} ({})", bin.display(), version.trim());
    Ok(bin)
}

/// The first executable `name` in `PATH`.
fn on_path(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|p| p.is_file())
}

/// Runs `skopeo ARGS` (bounded in time) and returns its stdout; panics with its stderr on
/// failure or when skopeo cannot be installed.
pub fn skopeo(args: &[&str]) -> String {
    let bin = skopeo_binary().unwrap_or_else(|e| panic!("{e}"));
    run_ok(Command::new(bin).args(args), Duration::from_secs(120)).unwrap_or_else(|e| panic!("{e}"))
}
