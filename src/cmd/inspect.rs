//! `writ inspect`: what an artifact is, read from the artifact alone (its embedded
//! manifest and policy), with the hash computed from the bytes on disk.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use writ_compiler::link;

use super::Format;

/// Arguments of `writ inspect`.
#[derive(Debug, clap::Args)]
pub struct InspectArgs {
    /// The artifact (`<policy>-<version>.wasm`).
    pub artifact: PathBuf,
    #[arg(long, value_enum, default_value = "text")]
    pub format: Format,
}

/// Prints the manifest (`--format json`: the manifest JSON with `artifact_sha256` set).
/// Fails if the file is not a writ artifact or its embedded policy does not decode.
pub fn run(args: InspectArgs) -> anyhow::Result<ExitCode> {
    let bytes = std::fs::read(&args.artifact)
        .with_context(|| format!("cannot read {}", args.artifact.display()))?;
    let name = args.artifact.display().to_string();
    let mut manifest = link::read_manifest(&bytes).with_context(|| name.clone())?;
    let policy = link::read_policy(&bytes).with_context(|| name.clone())?;
    if policy.rules.len() != manifest.rules.len() || policy.name != manifest.policy {
        anyhow::bail!("{name}: the embedded manifest does not describe the embedded policy");
    }
    manifest.artifact_sha256 = Some(link::sha256_hex(&bytes));
    // Who signed it, unchecked (`writ verify --trust` checks): a hint for the reader.
    manifest.signed_by = link::sign::read_signature(&bytes)
        .ok()
        .flatten()
        .map(|r| r.key_id);
    match args.format {
        Format::Json => print!("{}", manifest.to_json_pretty()),
        Format::Text => print!("{}", text(&manifest)),
    }
    Ok(ExitCode::SUCCESS)
}

fn text(m: &link::Manifest) -> String {
    use std::fmt::Write;
    let mut s = String::new();
    let _ = writeln!(s, "policy       {} {}", m.policy, m.version);
    let _ = writeln!(s, "owner        {}", m.owner);
    let _ = writeln!(s, "implements   {}", m.implements);
    let _ = writeln!(s, "enforcement  {}", m.enforcement);
    let _ = writeln!(
        s,
        "artifact     sha256:{}",
        m.artifact_sha256.as_deref().unwrap_or_default()
    );
    let _ = writeln!(
        s,
        "signature    {}",
        m.signed_by.as_deref().map_or_else(
            || "none".to_string(),
            |k| format!("key {k} (unverified; check with `writ verify --trust`)")
        )
    );
    let _ = writeln!(s, "source       sha256:{}", m.source_sha256);
    let _ = writeln!(s, "engine       sha256:{}", m.engine_sha256);
    let _ = writeln!(s, "compiler     {}", m.compiler);
    let _ = writeln!(
        s,
        "format       manifest {}, policy {}",
        m.manifest_format, m.policy_format
    );
    let _ = writeln!(s, "rules ({}):", m.rules.len());
    let width = m.rules.iter().map(|r| r.id.len()).max().unwrap_or(0);
    for r in &m.rules {
        let _ = writeln!(
            s,
            "  {:width$}  {:8}  {:8}  {:7}  line {:<4}  {}",
            r.id, r.phase, r.action, r.enforcement, r.line, r.title
        );
    }
    if !m.manual.is_empty() {
        let _ = writeln!(s, "manual clauses ({}):", m.manual.len());
        for c in &m.manual {
            let _ = writeln!(
                s,
                "  {}  {}  (owner {}: {})",
                c.clause, c.title, c.owner, c.reason
            );
        }
    }
    s
}
