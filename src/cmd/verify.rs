//! `writ verify`: check that an artifact is exactly what a trusted key signed, before it is
//! deployed or by an auditor after the fact.

use std::path::PathBuf;
use std::process::ExitCode;

use super::Format;

/// Arguments of `writ verify`.
#[derive(Debug, clap::Args)]
pub struct VerifyArgs {
    /// Artifacts to check.
    #[arg(required = true)]
    pub artifacts: Vec<PathBuf>,
    /// A public key (`writ keygen`'s `.pub`) whose signatures are accepted. Repeatable, so a
    /// key can be rotated.
    #[arg(long, value_name = "PUBKEY", required = true)]
    pub trust: Vec<PathBuf>,
    #[arg(long, value_enum, default_value = "text")]
    pub format: Format,
}

/// Prints one line per artifact; exits 1 if any artifact is unsigned, changed or signed by
/// a key not trusted.
pub fn run(args: VerifyArgs) -> anyhow::Result<ExitCode> {
    let trusted = writ::trust::read_trusted(&args.trust)?;
    let mut failed = false;
    let mut results = Vec::new();
    for path in &args.artifacts {
        let outcome = std::fs::read(path)
            .map_err(|e| anyhow::anyhow!("cannot read {}: {e}", path.display()))
            .and_then(|wasm| {
                let v = writ::trust::verify_artifact(path, &wasm, &trusted)?;
                Ok((v, writ_compiler::link::sha256_hex(&wasm)))
            });
        match outcome {
            Ok((v, sha)) => {
                if args.format == Format::Text {
                    println!(
                        "{}: ok, signed by key {} (artifact sha256:{sha})",
                        path.display(),
                        v.key_id
                    );
                }
                results.push(serde_json::json!({
                    "artifact": path.display().to_string(),
                    "ok": true,
                    "key_id": v.key_id,
                    "artifact_sha256": sha,
                }));
            }
            Err(e) => {
                failed = true;
                eprintln!("error: {e:#}");
                results.push(serde_json::json!({
                    "artifact": path.display().to_string(),
                    "ok": false,
                    "error": format!("{e:#}"),
                }));
            }
        }
    }
    if args.format == Format::Json {
        println!("{}", serde_json::Value::Array(results));
    }
    Ok(if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}
