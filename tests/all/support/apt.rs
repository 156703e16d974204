//! Tools the tests install on first use: a Debian package with apt ([`ensure`]), under one
//! exclusive lock on a file in `target/` ([`install_lock`], also held by pip installs
//! into `.venv`), so concurrent test threads and processes install once. The machine runs
//! as root and reaches Debian's mirrors; a failed install fails the test that needs it
//! with apt's own words, never skips it.

use std::fs::File;
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use super::process::run_bounded;

/// The first executable `name` in `PATH`.
pub fn on_path(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|p| p.is_file())
}

/// Takes the exclusive lock `<name>.lock` in the target dir (released when the file is
/// dropped or unlocked): what installs of one tool hold while they run.
pub fn install_lock(name: &str) -> Result<File, String> {
    let dir = super::target_dir();
    std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
    let lock = File::create(dir.join(format!("{name}.lock"))).map_err(|e| e.to_string())?;
    lock.lock()
        .map_err(|e| format!("cannot take the install lock `{name}`: {e}"))?;
    Ok(lock)
}

/// Path of `binary`, installing Debian's `package` with apt when it is not on `PATH`
/// (again after `apt-get update` when the first install fails: a fresh machine has no
/// package lists yet, or stale ones). apt's own lock is waited for too, for installs
/// outside these tests.
pub fn ensure(package: &str, binary: &str) -> Result<PathBuf, String> {
    if let Some(bin) = on_path(binary) {
        return Ok(bin);
    }
    let lock = install_lock("apt-install")?;
    // Another test process may have installed it while we waited for the lock.
    if on_path(binary).is_none() {
        let apt = |args: &[&str]| {
            run_bounded(
                Command::new("apt-get")
                    .args(["-o", "DPkg::Lock::Timeout=300"])
                    .args(args)
                    .env("DEBIAN_FRONTEND", "noninteractive"),
                Duration::from_secs(600),
            )
        };
        let install = ["install", "-y", "--no-install-recommends", package];
        let first = apt(&install)?;
        if !first.status.success() {
            let update = apt(&["update"])?;
            let second = apt(&install)?;
            if !second.status.success() {
                return Err(format!(
                    "`{binary}` is needed by this test and could not be installed \
                     (`apt-get install -y --no-install-recommends {package}`):\n{}{}\n\
                     apt-get update said:\n{}",
                    String::from_utf8_lossy(&second.stdout),
                    String::from_utf8_lossy(&second.stderr),
                    String::from_utf8_lossy(&update.stderr),
                ));
            }
        }
    }
    let _ = lock.unlock();
    on_path(binary).ok_or_else(|| format!("apt installed {package}, but `{binary}` is not on PATH"))
}
