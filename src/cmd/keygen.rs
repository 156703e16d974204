//! `writ keygen`: make the ed25519 key pair that signs artifacts (`writ build --sign`) and
//! that hosts trust (`writ verify|serve|envoy --trust`).

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use writ_compiler::link::sign::SecretKey;

/// Arguments of `writ keygen`.
#[derive(Debug, clap::Args)]
pub struct KeygenArgs {
    /// Writes `PREFIX.key` (secret, mode 0600) and `PREFIX.pub` (public).
    #[arg(long, value_name = "PREFIX", default_value = "writ")]
    pub out: PathBuf,
    /// Replace existing key files (otherwise an existing key is never overwritten).
    #[arg(long)]
    pub force: bool,
}

/// Writes a fresh key pair from the operating system's random source and prints the key id.
pub fn run(args: KeygenArgs) -> anyhow::Result<ExitCode> {
    let secret_path = with_suffix(&args.out, "key");
    let public_path = with_suffix(&args.out, "pub");
    if !args.force {
        for path in [&secret_path, &public_path] {
            if path.exists() {
                anyhow::bail!(
                    "{} already exists; refusing to overwrite a key (pass --force to replace it)",
                    path.display()
                );
            }
        }
    }
    let mut seed = [0u8; 32];
    getrandom::fill(&mut seed)
        .map_err(|e| anyhow::anyhow!("the operating system gave no random bytes: {e}"))?;
    let key = SecretKey::from_seed(seed);
    seed.fill(0);
    write_file(&secret_path, key.to_file().as_bytes(), 0o600, args.force)?;
    write_file(
        &public_path,
        key.public().to_file().as_bytes(),
        0o644,
        args.force,
    )?;
    println!(
        "wrote {} (secret: keep it private) and {} (key id {})",
        secret_path.display(),
        public_path.display(),
        key.public().key_id()
    );
    Ok(ExitCode::SUCCESS)
}

/// `PREFIX.suffix`, keeping any dots already in the prefix (`keys/ci.2025` → `keys/ci.2025.key`).
fn with_suffix(prefix: &Path, suffix: &str) -> PathBuf {
    let mut s = prefix.as_os_str().to_owned();
    s.push(".");
    s.push(suffix);
    PathBuf::from(s)
}

/// Creates `path` with `mode` from the start (never world-readable, even for a moment).
fn write_file(path: &Path, bytes: &[u8], mode: u32, replace: bool) -> anyhow::Result<()> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, mode);
    #[cfg(not(unix))]
    let _ = mode;
    if replace {
        match std::fs::remove_file(path) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => anyhow::bail!("cannot replace {}: {e}", path.display()),
        }
    }
    let mut file = options
        .open(path)
        .map_err(|e| anyhow::anyhow!("cannot create {}: {e}", path.display()))?;
    file.write_all(bytes)
        .and_then(|()| file.sync_all())
        .map_err(|e| anyhow::anyhow!("cannot write {}: {e}", path.display()))
}
