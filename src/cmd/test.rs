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
}

/// Prints one line per case and a diff per failure; exits 1 if any case failed.
pub fn run(args: TestArgs) -> anyhow::Result<ExitCode> {
    let files = discover(&args.paths)?;
    anyhow::ensure!(!files.is_empty(), "no test files (*.tests.yaml) found");
    let mut results = Vec::new();
    let (mut passed, mut failed) = (0usize, 0usize);
    for path in &files {
        let suite = Suite::load(path)?;
        let label = path.display().to_string();
        println!(
            "{label} ({}, sha256 {})",
            suite.artifact_name(),
            &suite.artifact_sha256()[..12]
        );
        for case in suite.run(super::run::cache_dir(None, false))? {
            match case.diff() {
                None => {
                    passed += 1;
                    println!("  ok    {}", case.name);
                }
                Some(diff) => {
                    failed += 1;
                    println!("  FAIL  {}\n{diff}", case.name);
                }
            }
            results.push(case.junit(&label));
        }
    }
    if let Some(junit) = &args.junit {
        std::fs::write(junit, writ::policy_tests::junit::render(&results))
            .map_err(|e| anyhow::anyhow!("writing {}: {e}", junit.display()))?;
    }
    println!("\n{passed} passed, {failed} failed");
    Ok(if failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}
