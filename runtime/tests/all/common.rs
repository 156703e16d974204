//! Builds the test guests once and offers small helpers.

use std::io::{Read, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Mutex, OnceLock};
use writ_runtime::{Host, HostConfig};

/// Builds a guest crate under `tests/guests/NAME` (or any manifest dir) for
/// wasm32-unknown-unknown, once per test binary, and returns its module bytes.
pub fn guest(dir: &Path, artifact: &str) -> Vec<u8> {
    type Built = Mutex<Vec<(PathBuf, Vec<u8>)>>;
    static BUILT: OnceLock<Built> = OnceLock::new();
    let built = BUILT.get_or_init(|| Mutex::new(Vec::new()));
    let mut built = built.lock().unwrap_or_else(|e| e.into_inner());
    if let Some((_, bytes)) = built.iter().find(|(d, _)| d == dir) {
        return bytes.clone();
    }
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let target = root.join("target").join("guests");
    // The root build script installs the target, but `cargo test -p writ-runtime` alone
    // never runs it; a toolchain that came without the target gets it here the same way.
    let _ = Command::new("rustup")
        .current_dir(dir)
        .args(["target", "add", "wasm32-unknown-unknown"])
        .output();
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_string());
    let status = Command::new(cargo)
        .current_dir(dir)
        .args([
            "build",
            "--release",
            "--target",
            "wasm32-unknown-unknown",
            "--target-dir",
        ])
        .arg(&target)
        .env_remove("RUSTFLAGS")
        .env_remove("CARGO_TARGET_DIR")
        .env_remove("CARGO_BUILD_TARGET")
        .status()
        .expect("run cargo for the guest");
    assert!(status.success(), "guest build failed for {}", dir.display());
    let wasm = target
        .join("wasm32-unknown-unknown/release")
        .join(format!("{artifact}.wasm"));
    let bytes = std::fs::read(&wasm).expect("read guest wasm");
    built.push((dir.to_path_buf(), bytes.clone()));
    bytes
}

/// The ABI probe filter.
pub fn probe() -> Vec<u8> {
    guest(
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/guests/abi-probe"),
        "abi_probe",
    )
}

/// The smallest filter (every callback continues), from the benches.
pub fn passthrough() -> Vec<u8> {
    guest(
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("../benches/passthrough-filter"),
        "passthrough_filter",
    )
}

pub fn probe_host(plugin_config: &str) -> Host {
    let mut config = HostConfig::new(probe());
    config.plugin_config = plugin_config.as_bytes().to_vec();
    config.plugin_name = "probe-plugin".to_string();
    config.limits.max_vms = 16;
    config.cache_dir = Some(module_cache());
    Host::new(config).expect("host")
}

/// One compiled-module cache for the tests: compiling in a debug build is slow.
pub fn module_cache() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/test-tmp/module-cache")
}

/// A unique empty directory under the target dir.
pub fn temp_dir(name: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../target/test-tmp")
        .join(format!(
            "{name}-{}-{:?}",
            std::process::id(),
            std::time::Instant::now()
        ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// A loopback HTTP server answering every request with `status` and `body`; returns its
/// base URL. Serves until the process ends.
pub fn http_server(status: u16, body: &'static str) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut conn) = conn else { continue };
            let mut buf = [0u8; 4096];
            let mut seen = Vec::new();
            while !seen.windows(4).any(|w| w == b"\r\n\r\n") {
                match conn.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => seen.extend_from_slice(&buf[..n]),
                }
            }
            let reply = format!(
                "HTTP/1.1 {status} OK\r\ncontent-type: text/plain\r\ncontent-length: {}\r\n\r\n{body}",
                body.len()
            );
            let _ = conn.write_all(reply.as_bytes());
        }
    });
    format!("http://{addr}")
}
