//! `writ check`: the front end's checks without linking, for editors and CI.

use std::path::PathBuf;
use std::process::ExitCode;

/// Arguments of `writ check`.
#[derive(Debug, clap::Args)]
pub struct CheckArgs {
    /// Policy sources to check.
    #[arg(required = true)]
    pub files: Vec<PathBuf>,
}

/// Prints every diagnostic of every file to stderr; exits 1 if any file has an error.
pub fn run(args: CheckArgs) -> anyhow::Result<ExitCode> {
    let mut failed = false;
    for path in &args.files {
        let source = super::read_source(path)?;
        let name = path.display().to_string();
        match writ_compiler::compile(&name, &source) {
            Ok(compiled) => {
                for w in &compiled.warnings {
                    eprintln!("{w}");
                }
                eprintln!("{name}: ok ({} rules)", compiled.policy.rules.len());
            }
            Err(diagnostics) => {
                failed = true;
                for d in &diagnostics {
                    eprintln!("{d}");
                }
            }
        }
    }
    Ok(if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}
