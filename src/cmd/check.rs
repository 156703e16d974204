//! `writ check`: the front end's checks without lowering or linking, for editors and CI.
//! Text is rustc-style; `--format json` gives the same diagnostics as data, and `--format
//! sarif` as SARIF 2.1.0, which code-scanning UIs show inline on the policy's lines.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use writ_compiler::{Diagnostic, Severity};

/// Arguments of `writ check`.
#[derive(Debug, clap::Args)]
pub struct CheckArgs {
    /// Policy sources to check.
    #[arg(required = true)]
    pub files: Vec<PathBuf>,
    /// Fail (exit 1) on warnings too, not only on errors.
    #[arg(long)]
    pub deny_warnings: bool,
    /// Output: rustc-style text on stderr, or JSON / SARIF 2.1.0 on stdout.
    #[arg(long, value_enum, default_value = "text")]
    pub format: CheckFormat,
}

/// How `writ check` reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum CheckFormat {
    Text,
    Json,
    Sarif,
}

/// One diagnostic located in its file, in the form the machine formats print.
struct Located {
    file: String,
    code: &'static str,
    level: &'static str,
    message: String,
    line: u32,
    column: u32,
    end_line: u32,
    end_column: u32,
    label: String,
    help: Option<String>,
    /// The other places the diagnostic points at (e.g. the earlier of two conflicting
    /// rules), each with its label.
    related: Vec<Region>,
}

/// A labelled span, 1-based lines and columns (in characters), end exclusive.
struct Region {
    line: u32,
    column: u32,
    end_line: u32,
    end_column: u32,
    label: String,
}

/// Prints every diagnostic of every file (text: to stderr, nothing for a clean file);
/// exits 1 if any file has an error, or a warning with `--deny-warnings`.
pub fn run(args: CheckArgs) -> anyhow::Result<ExitCode> {
    let mut failed = false;
    let mut located = Vec::new();
    for path in &args.files {
        let source = super::read_source(path)?;
        let name = path.display().to_string();
        let mut paper_warnings = Vec::new();
        let diagnostics = paper_check(path, &name, &source, &mut paper_warnings);
        let errors = diagnostics.iter().filter(|d| d.is_error()).count();
        let warnings = diagnostics.len() - errors + paper_warnings.len();
        failed |= errors > 0 || (args.deny_warnings && warnings > 0);
        if args.format == CheckFormat::Text {
            if !diagnostics.is_empty() {
                eprint!("{}", writ_compiler::render(&name, &source, &diagnostics));
            }
            for w in &paper_warnings {
                eprintln!("warning: {}:{}: {}", w.file, w.line, w.message);
            }
            // A clean file prints nothing, like a compiler: silence is the success signal.
            if !diagnostics.is_empty() || !paper_warnings.is_empty() {
                eprintln!("{name}: {errors} errors, {warnings} warnings");
            }
            continue;
        }
        for d in &diagnostics {
            located.push(locate(&name, &source, d));
        }
        for w in paper_warnings {
            located.push(Located {
                file: w.file,
                code: "paper-id",
                level: "warning",
                message: w.message,
                line: w.line,
                column: 1,
                end_line: w.line,
                end_column: 1,
                label: String::new(),
                help: None,
                related: Vec::new(),
            });
        }
    }
    match args.format {
        CheckFormat::Text => {}
        CheckFormat::Json => println!("{}", serde_json::to_string_pretty(&json(&located))?),
        CheckFormat::Sarif => println!("{}", serde_json::to_string_pretty(&sarif(&located))?),
    }
    Ok(if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}

/// A paper-policy warning, with the paper's path.
struct PaperWarning {
    file: String,
    line: u32,
    message: String,
}

/// Every diagnostic of the policy, with the paper policy `implements` names read beside
/// it (an error if it cannot be); the paper's ids that do not parse are warnings.
fn paper_check(
    path: &Path,
    name: &str,
    source: &str,
    warnings: &mut Vec<PaperWarning>,
) -> Vec<Diagnostic> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let found = std::cell::RefCell::new(None);
    let diagnostics = writ_compiler::check_with_paper(name, source, |implements| {
        let p = dir.join(implements);
        let text = std::fs::read_to_string(&p).map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => "no such file".to_string(),
            _ => format!("cannot read it: {e}"),
        })?;
        *found.borrow_mut() = Some((p, text.clone()));
        Ok(text)
    });
    if let Some((paper, text)) = found.into_inner() {
        for w in writ::coverage::scan_paper(&text).warnings {
            warnings.push(PaperWarning {
                file: paper.display().to_string(),
                line: u32::try_from(w.line).unwrap_or(u32::MAX),
                message: w.message,
            });
        }
    }
    diagnostics
}

fn locate(file: &str, source: &str, d: &Diagnostic) -> Located {
    let (line, column) = d.line_col(source);
    let (end_line, end_column) = line_col_at(source, d.primary.span.end as usize);
    Located {
        file: file.to_string(),
        code: d.code.id(),
        level: match d.severity {
            Severity::Error => "error",
            Severity::Warning => "warning",
        },
        message: d.message.clone(),
        line,
        column,
        end_line,
        end_column,
        label: d.primary.text.clone(),
        help: d.help.clone(),
        related: d
            .secondary
            .iter()
            .map(|l| {
                let (line, column) = line_col_at(source, l.span.start as usize);
                let (end_line, end_column) = line_col_at(source, l.span.end as usize);
                Region {
                    line,
                    column,
                    end_line,
                    end_column,
                    label: l.text.clone(),
                }
            })
            .collect(),
    }
}

/// 1-based line and column (in characters) of a byte offset.
fn line_col_at(source: &str, offset: usize) -> (u32, u32) {
    let before = source.get(..offset.min(source.len())).unwrap_or(source);
    let line = before.matches('\n').count() + 1;
    let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    (
        u32::try_from(line).unwrap_or(u32::MAX),
        u32::try_from(column).unwrap_or(u32::MAX),
    )
}

fn json(located: &[Located]) -> serde_json::Value {
    serde_json::json!({
        "diagnostics": located.iter().map(|l| serde_json::json!({
            "file": l.file,
            "code": l.code,
            "level": l.level,
            "message": l.message,
            "line": l.line,
            "column": l.column,
            "end_line": l.end_line,
            "end_column": l.end_column,
            "label": l.label,
            "help": l.help,
            "related": l.related.iter().map(|r| serde_json::json!({
                "line": r.line,
                "column": r.column,
                "end_line": r.end_line,
                "end_column": r.end_column,
                "label": r.label,
            })).collect::<Vec<_>>(),
        })).collect::<Vec<_>>()
    })
}

/// SARIF 2.1.0: one run of the `writ` tool, a rule per code seen, a result per diagnostic.
fn sarif(located: &[Located]) -> serde_json::Value {
    let mut codes: Vec<&str> = located.iter().map(|l| l.code).collect();
    codes.sort_unstable();
    codes.dedup();
    let rules: Vec<serde_json::Value> = codes
        .iter()
        .map(|c| {
            serde_json::json!({
                "id": c,
                "helpUri": "https://github.com/writ-dev/writ/blob/main/docs/diagnostics.md",
            })
        })
        .collect();
    let results: Vec<serde_json::Value> = located
        .iter()
        .map(|l| {
            let text = match &l.help {
                Some(h) => format!("{} ({}); help: {h}", l.message, l.label),
                None if l.label.is_empty() => l.message.clone(),
                None => format!("{} ({})", l.message, l.label),
            };
            serde_json::json!({
                "ruleId": l.code,
                "level": l.level,
                "message": {"text": text},
                "locations": [{"physicalLocation": {
                    "artifactLocation": {"uri": l.file.replace('\\', "/")},
                    "region": {
                        "startLine": l.line,
                        "startColumn": l.column,
                        "endLine": l.end_line,
                        "endColumn": l.end_column,
                    }
                }}],
                "relatedLocations": l.related.iter().enumerate().map(|(i, r)| serde_json::json!({
                    "id": i,
                    "message": {"text": r.label},
                    "physicalLocation": {
                        "artifactLocation": {"uri": l.file.replace('\\', "/")},
                        "region": {
                            "startLine": r.line,
                            "startColumn": r.column,
                            "endLine": r.end_line,
                            "endColumn": r.end_column,
                        }
                    }
                })).collect::<Vec<_>>(),
            })
        })
        .collect();
    serde_json::json!({
        "$schema": "https://json.schemastore.org/sarif-2.1.0.json",
        "version": "2.1.0",
        "runs": [{
            "tool": {"driver": {
                "name": "writ",
                "version": env!("CARGO_PKG_VERSION"),
                "informationUri": "https://github.com/writ-dev/writ",
                "rules": rules,
            }},
            "results": results,
        }]
    })
}
