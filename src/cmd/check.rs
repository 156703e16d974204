//! `writ check`: the front end's checks without lowering or linking, for editors and CI.

use std::path::PathBuf;
use std::process::ExitCode;

/// Arguments of `writ check`.
#[derive(Debug, clap::Args)]
pub struct CheckArgs {
    /// Policy sources to check.
    #[arg(required = true)]
    pub files: Vec<PathBuf>,
}

/// Prints every diagnostic of every file to stderr, rustc-style, and nothing for a clean
/// file; exits 1 if any file has an error (warnings alone exit 0).
pub fn run(args: CheckArgs) -> anyhow::Result<ExitCode> {
    let mut failed = false;
    for path in &args.files {
        let source = super::read_source(path)?;
        let name = path.display().to_string();
        let diagnostics = writ_compiler::check(&name, &source);
        if !diagnostics.is_empty() {
            eprint!("{}", writ_compiler::render(&name, &source, &diagnostics));
        }
        let errors = diagnostics.iter().filter(|d| d.is_error()).count();
        failed |= errors > 0;
        let warnings = diagnostics.len() - errors;
        // A clean file prints nothing, like a compiler: silence is the success signal CI reads.
        if !diagnostics.is_empty() {
            eprintln!("{name}: {errors} errors, {warnings} warnings");
        }
    }
    Ok(if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}
