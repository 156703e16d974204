//! A real etcd (Debian's `etcd-server`) on loopback for the fleet tests: installed with apt
//! when missing ([`super::apt::ensure`]), started on free high ports
//! with its data in a temp dir, stoppable and restartable on the same data and ports, and
//! read back through its own v3 JSON API.

use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use super::http::{Request, send};
use super::tempdir::TempDir;

/// Path of `etcd`, installing Debian's `etcd-server` on first use; a failed install fails
/// the test with apt's own words.
pub fn etcd_binary() -> Result<&'static Path, String> {
    static BIN: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    BIN.get_or_init(install)
        .as_ref()
        .map(|p| p.as_path())
        .map_err(Clone::clone)
}

fn install() -> Result<PathBuf, String> {
    super::apt::ensure("etcd-server", "etcd")
}

/// A free loopback port, chosen by the kernel (released right away for etcd to take).
fn free_port() -> Result<u16, String> {
    let l = TcpListener::bind("127.0.0.1:0").map_err(|e| e.to_string())?;
    l.local_addr().map(|a| a.port()).map_err(|e| e.to_string())
}

/// A running etcd, killed on drop.
pub struct Etcd {
    child: Option<Child>,
    dir: TempDir,
    client: SocketAddr,
    peer: SocketAddr,
    starts: u32,
}

/// How long etcd may take to answer after start.
const READY_TIMEOUT: Duration = Duration::from_secs(30);

impl Etcd {
    /// Starts a one-member etcd on free loopback ports with a fresh data dir.
    pub fn start() -> Result<Etcd, String> {
        let client = SocketAddr::from(([127, 0, 0, 1], free_port()?));
        let peer = SocketAddr::from(([127, 0, 0, 1], free_port()?));
        let mut etcd = Etcd {
            child: None,
            dir: TempDir::new("etcd"),
            client,
            peer,
            starts: 0,
        };
        etcd.spawn()?;
        Ok(etcd)
    }

    fn spawn(&mut self) -> Result<(), String> {
        let bin = etcd_binary()?;
        self.starts += 1;
        let log = std::fs::File::create(self.dir.path().join(format!("etcd-{}.log", self.starts)))
            .map_err(|e| e.to_string())?;
        let client = format!("http://{}", self.client);
        let peer = format!("http://{}", self.peer);
        let child = Command::new(bin)
            .args(["--name", "writ-test"])
            .arg("--data-dir")
            .arg(self.dir.path().join("data"))
            .args(["--listen-client-urls", &client])
            .args(["--advertise-client-urls", &client])
            .args(["--listen-peer-urls", &peer])
            .args(["--initial-advertise-peer-urls", &peer])
            .args(["--initial-cluster", &format!("writ-test={peer}")])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .map_err(|e| format!("cannot start etcd: {e}"))?;
        self.child = Some(child);
        let deadline = Instant::now() + READY_TIMEOUT;
        while Instant::now() < deadline {
            if self.range("writ-health-check").is_ok() {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        Err(format!(
            "etcd did not answer within {READY_TIMEOUT:?}:\n{}",
            self.log()
        ))
    }

    /// The client address (`etcd://` + this is what `--shared` takes).
    pub fn addr(&self) -> SocketAddr {
        self.client
    }

    /// `--shared`'s value for this store.
    pub fn url(&self) -> String {
        format!("etcd://{}", self.client)
    }

    /// Kills the store (its data dir stays).
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts it again on the same data and ports.
    pub fn restart(&mut self) -> Result<(), String> {
        self.stop();
        self.spawn()
    }

    /// Every key under `prefix` with its value, through etcd's own JSON API.
    pub fn range(&self, prefix: &str) -> Result<Vec<(String, Vec<u8>)>, String> {
        let body = String::from_utf8(writ_plugin::fleet::etcd::range_prefix(prefix))
            .map_err(|e| e.to_string())?;
        let r = send(
            self.client,
            &Request::post_json("/v3/kv/range", &body),
            Duration::from_secs(5),
        )
        .map_err(|e| e.to_string())?;
        if r.status != 200 {
            return Err(format!(
                "etcd range answered {}: {}",
                r.status,
                r.body_str()
            ));
        }
        let kvs = writ_plugin::fleet::etcd::parse_range(&r.body)
            .ok_or_else(|| format!("not an etcd answer: {}", r.body_str()))?;
        Ok(kvs
            .into_iter()
            .map(|kv| (String::from_utf8_lossy(&kv.key).into_owned(), kv.value))
            .collect())
    }

    /// The fleet's settled spend on every spend ledger whose key contains `needle`.
    pub fn ledger_spent(&self, needle: &str) -> Result<i64, String> {
        let mut total = 0;
        for (key, value) in self.range("writ/spend/")? {
            if !key.contains(needle) {
                continue;
            }
            let record = writ_plugin::fleet::budget::Record::decode(&value)
                .ok_or_else(|| format!("`{key}` is not a fleet record"))?;
            total += record.spent();
        }
        Ok(total)
    }

    /// What etcd logged so far.
    pub fn log(&self) -> String {
        (1..=self.starts)
            .map(|n| {
                std::fs::read_to_string(self.dir.path().join(format!("etcd-{n}.log")))
                    .unwrap_or_default()
            })
            .collect()
    }
}

impl Drop for Etcd {
    fn drop(&mut self) {
        self.stop();
    }
}
