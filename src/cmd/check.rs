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
        let mut diagnostics = writ_compiler::check(&name, &source);
        let dir = path.parent().unwrap_or(std::path::Path::new("."));
        let paper_path = std::cell::RefCell::new(None);
        diagnostics.extend(writ_compiler::check_paper(&source, |implements| {
            let p = dir.join(implements);
            let text = std::fs::read_to_string(&p).map_err(|e| match e.kind() {
                std::io::ErrorKind::NotFound => "no such file".to_string(),
                _ => format!("cannot read it: {e}"),
            })?;
            *paper_path.borrow_mut() = Some((p, text.clone()));
            Ok(text)
        }));
        if let Some((paper, text)) = paper_path.into_inner() {
            for w in writ::coverage::scan_paper(&text).warnings {
                eprintln!("warning: {}:{}: {}", paper.display(), w.line, w.message);
            }
        }
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
