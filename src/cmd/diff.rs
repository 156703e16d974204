//! `writ diff OLD NEW`: every enforcement change between two versions of a policy (rules,
//! workflows, prices, detectors, the kill switch), each given as a `.policy` source or a
//! built `.wasm` artifact.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use writ_plugin::ir;

/// Arguments of `writ diff`.
#[derive(Debug, clap::Args)]
pub struct DiffArgs {
    /// The older version: a `.policy` source or a `.wasm` artifact.
    pub old: PathBuf,
    /// The newer version: a `.policy` source or a `.wasm` artifact.
    pub new: PathBuf,
    /// Output format.
    #[arg(long, value_enum, default_value = "text")]
    pub format: super::Format,
    /// Exit 1 when enforcement changed (for CI gates), 0 when it did not.
    #[arg(long)]
    pub exit_code: bool,
}

/// Loads the compiled policy of a source (compiling it) or of an artifact (reading the
/// embedded blob), so sources and artifacts compare alike.
pub fn load_policy(path: &Path) -> anyhow::Result<ir::Policy> {
    if path.extension().is_some_and(|e| e == "wasm") {
        let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
        return writ_compiler::link::read_policy(&bytes)
            .with_context(|| format!("reading the policy embedded in {}", path.display()));
    }
    let source = super::read_source(path)?;
    let name = path.display().to_string();
    writ_compiler::compile(&name, &source)
        .map(|c| c.policy)
        .map_err(|diagnostics| {
            anyhow::anyhow!(
                "{} has errors:\n{}",
                name,
                diagnostics.render(&name, &source)
            )
        })
}

/// Prints the changes; exits 0 whether or not there are any, unless `--exit-code`.
pub fn run(args: DiffArgs) -> anyhow::Result<ExitCode> {
    let old = load_policy(&args.old)?;
    let new = load_policy(&args.new)?;
    let changes = writ::diff::diff(&writ::diff::summarize(&old), &writ::diff::summarize(&new));
    let settings = writ::diff::diff_settings(&old, &new);
    match args.format {
        super::Format::Json => println!(
            "{}",
            serde_json::to_string_pretty(&serde_json::json!({
                "old": {"policy": old.name, "version": old.version},
                "new": {"policy": new.name, "version": new.version},
                "changed": !changes.is_empty() || !settings.is_empty(),
                "changes": changes,
                "settings": settings,
            }))?
        ),
        super::Format::Text => {
            println!(
                "{} {} → {} {}",
                old.name, old.version, new.name, new.version
            );
            print!("{}", writ::diff::render_all(&changes, &settings));
        }
    }
    let changed = !changes.is_empty() || !settings.is_empty();
    Ok(if args.exit_code && changed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}
