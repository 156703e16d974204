//! `writ fmt`: rewrite policies in the canonical layout, or with `--check` report which
//! files are not (for CI).

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;

/// Arguments of `writ fmt`.
#[derive(Debug, clap::Args)]
pub struct FmtArgs {
    /// Policy sources to format in place.
    #[arg(required = true)]
    pub files: Vec<PathBuf>,
    /// Change nothing; list the files that would change and exit 1 if there are any.
    #[arg(long)]
    pub check: bool,
}

/// Formats each file. A file that does not parse is left untouched, its syntax errors
/// printed, and the exit code is 1.
pub fn run(args: FmtArgs) -> anyhow::Result<ExitCode> {
    let mut failed = false;
    for path in &args.files {
        let source = super::read_source(path)?;
        let name = path.display().to_string();
        let formatted = match writ_compiler::format(&source) {
            Ok(f) => f,
            Err(diagnostics) => {
                eprint!("{}", writ_compiler::render(&name, &source, &diagnostics.0));
                failed = true;
                continue;
            }
        };
        if formatted == source {
            continue;
        }
        if args.check {
            println!("{name}: would be reformatted");
            failed = true;
        } else {
            std::fs::write(path, formatted).with_context(|| format!("writing {name}"))?;
            println!("{name}: formatted");
        }
    }
    Ok(if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}
