//! `writ serve` (the wasmtime gateway) as a [`Gateway`], so it runs the same case table as
//! Envoy.

use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::cases::Gateway;
use super::tempdir::TempDir;

/// A running `writ serve`, killed on drop; its stderr (where it and the module log) is a
/// file in its own temp dir.
pub struct ServeProcess {
    child: Child,
    dir: TempDir,
    addr: SocketAddr,
}

/// How long `writ serve` may take to compile the module and listen.
const READY_TIMEOUT: Duration = Duration::from_secs(60);

impl ServeProcess {
    /// Starts `writ serve --policy artifact --upstream http://upstream` on a kernel-chosen
    /// port, learnt from its "listening on http://ADDR" line.
    pub fn start(artifact: &Path, upstream: SocketAddr) -> Result<ServeProcess, String> {
        ServeProcess::start_with(artifact, upstream, &[])
    }

    /// As [`ServeProcess::start`] with extra command-line arguments (`--workers 2`,
    /// `--cluster name=URL`, `--config FILE`, `--audit-log FILE`, …).
    pub fn start_with(
        artifact: &Path,
        upstream: SocketAddr,
        extra: &[String],
    ) -> Result<ServeProcess, String> {
        let dir = TempDir::new("serve");
        let log =
            |name: &str| std::fs::File::create(dir.path().join(name)).map_err(|e| e.to_string());
        let child = Command::new(super::writ_bin())
            .arg("serve")
            .arg("--policy")
            .arg(artifact)
            .arg("--upstream")
            .arg(format!("http://{upstream}"))
            .args(["--listen", "127.0.0.1:0"])
            .args(extra)
            .stdin(Stdio::null())
            .stdout(log("stdout.log")?)
            .stderr(log("serve.log")?)
            .spawn()
            .map_err(|e| format!("cannot start writ serve: {e}"))?;
        let mut serve = ServeProcess {
            child,
            dir,
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
        };
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            if let Some(addr) = serve
                .log()
                .split("listening on http://")
                .nth(1)
                .and_then(|rest| rest.split_whitespace().next())
                .and_then(|a| a.parse().ok())
            {
                serve.addr = addr;
                return Ok(serve);
            }
            if let Ok(Some(status)) = serve.child.try_wait() {
                return Err(format!("writ serve exited with {status}:\n{}", serve.log()));
            }
            if Instant::now() > deadline {
                return Err(format!(
                    "writ serve not listening after {READY_TIMEOUT:?}:\n{}",
                    serve.log()
                ));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Everything `writ serve` printed so far (stderr, then stdout).
    pub fn log(&self) -> String {
        let read =
            |name: &str| std::fs::read_to_string(self.dir.path().join(name)).unwrap_or_default();
        read("serve.log") + &read("stdout.log")
    }
}

impl ServeProcess {
    /// The process's own temp dir (for files the test passes it, such as an audit log).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The process id, for signals (SIGHUP reloads the artifact).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends SIGTERM (a graceful stop) and waits up to `timeout` for the exit; `None`
    /// when it did not exit in time (then it is killed).
    pub fn terminate(&mut self, timeout: std::time::Duration) -> Option<std::process::ExitStatus> {
        super::process::terminate(&mut self.child, timeout)
    }
}

impl Gateway for ServeProcess {
    fn name(&self) -> &str {
        "writ serve"
    }
    fn addr(&self) -> SocketAddr {
        self.addr
    }
    fn log(&self) -> String {
        ServeProcess::log(self)
    }
}

impl Drop for ServeProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
