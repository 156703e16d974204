//! Key files and artifact verification shared by `writ keygen`, `build --sign`, `verify`,
//! `serve --trust` and `envoy --trust`: one place that turns a path into a key or a
//! verified artifact, so every command refuses the same things with the same words.

use std::path::{Path, PathBuf};

use writ_compiler::link::sign::{self, PublicKey, SecretKey, Verified};

/// Reads a secret key file written by `writ keygen`, naming the file in any error.
pub fn read_secret_key(path: &Path) -> anyhow::Result<SecretKey> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| anyhow::anyhow!("cannot read the signing key {}: {e}", path.display()))?;
    SecretKey::parse(&text).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))
}

/// Reads the public key files given to `--trust`, naming the file in any error.
pub fn read_trusted(paths: &[PathBuf]) -> anyhow::Result<Vec<PublicKey>> {
    paths
        .iter()
        .map(|path| {
            let text = std::fs::read_to_string(path).map_err(|e| {
                anyhow::anyhow!("cannot read the trusted key {}: {e}", path.display())
            })?;
            PublicKey::parse(&text).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))
        })
        .collect()
}

/// Checks the signature of the artifact bytes `wasm` read from `path`; the error names the
/// artifact and says what is wrong (unsigned, changed, wrong key).
pub fn verify_artifact(
    path: &Path,
    wasm: &[u8],
    trusted: &[PublicKey],
) -> anyhow::Result<Verified> {
    sign::verify(wasm, trusted)
        .map_err(|e| anyhow::anyhow!("refusing artifact {}: {e}", path.display()))
}
