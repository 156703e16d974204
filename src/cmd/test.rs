//! `writ test [PATH...]`: runs the policy tests beside each policy against its compiled
//! artifact in the wasmtime host.

use std::path::PathBuf;
use std::process::ExitCode;

use writ::policy_tests::run::{Suite, discover};

/// Arguments of `writ test`.
#[derive(Debug, clap::Args)]
pub struct TestArgs {
    /// Test files, policies (their `.tests.yaml` sibling) or folders of test files.
    #[arg(default_value = "policies")]
    pub paths: Vec<PathBuf>,
    /// Also write a JUnit XML report here.
    #[arg(long, value_name = "FILE")]
    pub junit: Option<PathBuf>,
    /// Output: one line per case (text), or every case with its mismatches as JSON.
    #[arg(long, value_enum, default_value = "text")]
    pub format: super::Format,
}

/// Prints one line per case and a diff per failure; exits 1 if any case failed.
pub fn run(args: TestArgs) -> anyhow::Result<ExitCode> {
    let files = discover(&args.paths)?;
    anyhow::ensure!(!files.is_empty(), "no test files (*.tests.yaml) found");
    let text = args.format == super::Format::Text;
    let mut results = Vec::new();
    let mut report = Vec::new();
    let (mut passed, mut failed) = (0usize, 0usize);
    for path in &files {
        let suite = Suite::load(path)?;
        let label = path.display().to_string();
        if text {
            println!(
                "{label} ({}, sha256 {})",
                suite.artifact_name(),
                &suite.artifact_sha256()[..12]
            );
        }
        for case in suite.run(super::run::cache_dir(None, false))? {
            let at = format!("{label}:{}", case.line);
            match case.diff() {
                None => {
                    passed += 1;
                    if text {
                        println!("  ok    {}", case.name);
                    }
                }
                Some(diff) => {
                    failed += 1;
                    if text {
                        println!("  FAIL  {} ({at})\n{diff}", case.name);
                    }
                }
            }
            report.push(serde_json::json!({
                "file": label,
                "line": case.line,
                "name": case.name,
                "artifact": suite.artifact_name(),
                "artifact_sha256": suite.artifact_sha256(),
                "passed": case.mismatches.is_empty(),
                "mismatches": case.mismatches.iter().map(|m| serde_json::json!({
                    "what": m.what, "expected": m.expected, "actual": m.actual,
                })).collect::<Vec<_>>(),
            }));
            results.push(case.junit(&label));
        }
    }
    if let Some(junit) = &args.junit {
        std::fs::write(junit, writ::policy_tests::junit::render(&results))
            .map_err(|e| anyhow::anyhow!("writing {}: {e}", junit.display()))?;
    }
    if text {
        println!("\n{passed} passed, {failed} failed");
    } else {
        println!(
            "{}",
            serde_json::to_string_pretty(&serde_json::json!({
                "passed": passed, "failed": failed, "cases": report,
            }))?
        );
    }
    Ok(if failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}
