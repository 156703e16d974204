//! `writ fmt`: rewrite policies in the canonical layout; with `--check` report which files
//! are not (for CI), with `--diff` show how they would change; `-` formats stdin to stdout
//! (for editors).

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;

/// Arguments of `writ fmt`.
#[derive(Debug, clap::Args)]
pub struct FmtArgs {
    /// Policy sources to format in place; `-` reads stdin and prints the result to stdout.
    #[arg(required = true)]
    pub files: Vec<PathBuf>,
    /// Change nothing; list the files that would change and exit 1 if there are any.
    #[arg(long)]
    pub check: bool,
    /// Change nothing; print how each file would change (a line diff) and exit 1 if any
    /// would.
    #[arg(long)]
    pub diff: bool,
}

/// Formats each file. A file that does not parse is left untouched, its syntax errors
/// printed, and the exit code is 1.
pub fn run(args: FmtArgs) -> anyhow::Result<ExitCode> {
    let mut failed = false;
    for path in &args.files {
        let stdin = path.as_os_str() == "-";
        let source = if stdin {
            let mut text = String::new();
            std::io::Read::read_to_string(&mut std::io::stdin(), &mut text)
                .context("reading stdin")?;
            text
        } else {
            super::read_source(path)?
        };
        let name = if stdin {
            "<stdin>".to_string()
        } else {
            path.display().to_string()
        };
        let formatted = match writ_compiler::format(&source) {
            Ok(f) => f,
            Err(diagnostics) => {
                eprint!("{}", writ_compiler::render(&name, &source, &diagnostics.0));
                failed = true;
                continue;
            }
        };
        if stdin && !args.check && !args.diff {
            print!("{formatted}");
            continue;
        }
        if formatted == source {
            continue;
        }
        if args.diff {
            print!("{}", line_diff(&name, &source, &formatted));
            failed = true;
        } else if args.check {
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

/// A unified-style line diff of `old` → `new` (every line, `-`/`+`/` `; files are short),
/// headed by the file name.
fn line_diff(name: &str, old: &str, new: &str) -> String {
    let (a, b): (Vec<&str>, Vec<&str>) = (old.lines().collect(), new.lines().collect());
    // Longest common subsequence table, from the ends.
    let mut lcs = vec![vec![0u32; b.len() + 1]; a.len() + 1];
    for i in (0..a.len()).rev() {
        for j in (0..b.len()).rev() {
            lcs[i][j] = if a[i] == b[j] {
                lcs[i + 1][j + 1] + 1
            } else {
                lcs[i + 1][j].max(lcs[i][j + 1])
            };
        }
    }
    let mut out = format!("--- {name}\n+++ {name} (formatted)\n");
    let (mut i, mut j) = (0, 0);
    while i < a.len() || j < b.len() {
        if i < a.len() && j < b.len() && a[i] == b[j] {
            out.push_str(&format!(" {}\n", a[i]));
            i += 1;
            j += 1;
        } else if i < a.len() && (j == b.len() || lcs[i + 1][j] >= lcs[i][j + 1]) {
            out.push_str(&format!("-{}\n", a[i]));
            i += 1;
        } else {
            out.push_str(&format!("+{}\n", b[j]));
            j += 1;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn diffs_line_by_line() {
        let d = super::line_diff("p", "a\nb\nc\n", "a\nB\nc\nd\n");
        assert_eq!(d, "--- p\n+++ p (formatted)\n a\n-b\n+B\n c\n+d\n");
    }
}
