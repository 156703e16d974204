//! `writ coverage [PATH...]`: for every clause of the paper policy, the rules that enforce
//! it, the tests that make each rule fire and not fire, and the artifacts that ship it.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use writ::coverage::{self, CaseRef, ManualRef, PolicyInput, RuleRef};
use writ::policy_tests::run::{Suite, discover};

/// Arguments of `writ coverage`.
#[derive(Debug, clap::Args)]
pub struct CoverageArgs {
    /// Folders of policies with their test files, or test files.
    #[arg(default_value = "policies")]
    pub paths: Vec<PathBuf>,
    /// Fail unless at least this share of clauses is covered.
    #[arg(long, default_value_t = 100.0)]
    pub min: f64,
    /// Also write the report as JSON here.
    #[arg(long, value_name = "FILE")]
    pub json: Option<PathBuf>,
    /// Also write the report as JUnit XML here (one case per clause).
    #[arg(long, value_name = "FILE")]
    pub junit: Option<PathBuf>,
    /// Print the report as JSON instead of text.
    #[arg(long, value_enum, default_value = "text")]
    pub format: super::Format,
}

/// Every `.policy` under the folders must have a test file; a policy without one is
/// reported through its rules having no tests, so it is loaded from source alone.
fn policies_without_tests(paths: &[PathBuf], tested: &[PathBuf]) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for p in paths.iter().filter(|p| p.is_dir()) {
        let Ok(entries) = std::fs::read_dir(p) else {
            continue;
        };
        let mut found: Vec<PathBuf> = entries
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|f| f.extension().is_some_and(|e| e == "policy"))
            .filter(|f| !tested.iter().any(|t| same_file(t, f)))
            .collect();
        found.sort();
        out.extend(found);
    }
    out
}

fn same_file(a: &Path, b: &Path) -> bool {
    match (a.canonicalize(), b.canonicalize()) {
        (Ok(x), Ok(y)) => x == y,
        _ => a == b,
    }
}

/// Runs every suite, joins the results with the paper policy and prints the report.
pub fn run(args: CoverageArgs) -> anyhow::Result<ExitCode> {
    let (paper_path, report) = report(&args.paths)?;
    match args.format {
        super::Format::Text => {
            println!("paper policy: {}", paper_path.display());
            print!("{}", report.render_text());
        }
        super::Format::Json => println!("{}", serde_json::to_string_pretty(&report)?),
    }
    if let Some(json) = &args.json {
        std::fs::write(json, serde_json::to_string_pretty(&report)?)
            .with_context(|| format!("writing {}", json.display()))?;
    }
    if let Some(junit) = &args.junit {
        std::fs::write(junit, report.render_junit())
            .with_context(|| format!("writing {}", junit.display()))?;
    }
    Ok(if report.percent + 1e-9 >= args.min {
        ExitCode::SUCCESS
    } else {
        eprintln!(
            "error: coverage {:.1}% is under the required {:.1}%",
            report.percent, args.min
        );
        ExitCode::FAILURE
    })
}

/// Runs the suites under `paths` (folders, test files or policies with a test file beside
/// them) and joins them with the paper policy they implement: the report `writ coverage`
/// prints and `writ review` answers its second question from.
pub(crate) fn report(paths: &[PathBuf]) -> anyhow::Result<(PathBuf, coverage::Report)> {
    let test_files = discover(paths)?;
    let mut inputs = Vec::new();
    let mut paper_path: Option<PathBuf> = None;
    let mut tested_policies = Vec::new();
    for path in &test_files {
        let suite = Suite::load(path)?;
        tested_policies.push(suite.policy_path.clone());
        note_paper(
            &mut paper_path,
            &suite.policy_path,
            &suite.compiled.implements,
        )?;
        let runs = suite.run(super::run::cache_dir(None, false))?;
        let cases = suite
            .file
            .cases
            .iter()
            .zip(&runs)
            .map(|(case, run)| {
                let (asserted_fired, asserted_not_fired) = suite.asserted_rules(case, &run.outcome);
                CaseRef {
                    name: format!("{}: {}", file_name(path), case.name),
                    artifact: suite.artifact_name(),
                    passed: run.mismatches.is_empty(),
                    asserted_fired,
                    asserted_not_fired,
                }
            })
            .collect();
        inputs.push(policy_input(
            &suite.policy_path,
            &suite.compiled,
            suite.artifact_name(),
            suite.artifact_sha256(),
            cases,
        ));
    }
    for policy in policies_without_tests(paths, &tested_policies) {
        let source = super::read_source(&policy)?;
        let name = policy.display().to_string();
        let compiled = writ_compiler::compile(&name, &source)
            .map_err(|d| anyhow::anyhow!("{name} has errors:\n{}", d.render(&name, &source)))?;
        note_paper(&mut paper_path, &policy, &compiled.implements)?;
        let artifact = writ_compiler::link::link(writ::engine::ENGINE_WASM, &compiled)?;
        let sha = writ_compiler::link::sha256_hex(&artifact.wasm);
        inputs.push(policy_input(
            &policy,
            &compiled,
            format!("{}.wasm", artifact.file_stem()),
            sha,
            Vec::new(),
        ));
    }
    let paper_path = paper_path.context("no policies found")?;
    let paper = std::fs::read_to_string(&paper_path)
        .with_context(|| format!("reading the paper policy {}", paper_path.display()))?;
    let scanned = coverage::scan_paper(&paper);
    for w in &scanned.warnings {
        eprintln!(
            "warning: {}:{}: {}",
            paper_path.display(),
            w.line,
            w.message
        );
    }
    let clauses: Vec<String> = scanned.clauses.into_iter().map(|c| c.id).collect();
    anyhow::ensure!(
        !clauses.is_empty(),
        "{} has no clause ids (write them in bold, like **AIP-1.1**, or first in a heading, list item or table row)",
        paper_path.display()
    );
    Ok((paper_path, coverage::compute(&clauses, &inputs)))
}

/// All policies of one run must implement the same paper policy.
fn note_paper(paper: &mut Option<PathBuf>, policy: &Path, implements: &str) -> anyhow::Result<()> {
    let path = policy
        .parent()
        .unwrap_or_else(|| Path::new("."))
        .join(implements);
    match paper {
        None => *paper = Some(path),
        Some(existing) => anyhow::ensure!(
            same_file(existing, &path),
            "{} implements {}, but other policies implement {}; run coverage per paper policy",
            policy.display(),
            path.display(),
            existing.display()
        ),
    }
    Ok(())
}

fn file_name(p: &Path) -> String {
    p.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

fn policy_input(
    path: &Path,
    compiled: &writ_compiler::Compiled,
    artifact: String,
    sha: String,
    cases: Vec<CaseRef>,
) -> PolicyInput {
    let mut rules: Vec<RuleRef> = compiled
        .rule_info
        .iter()
        .zip(&compiled.policy.rules)
        .zip(compiled.policy.rule_ids())
        .map(|((r, ir_rule), id)| RuleRef {
            id,
            clause: r.clause.clone(),
            title: r.title.clone(),
            location: format!("{}:{}", path.display(), r.line),
            artifact: artifact.clone(),
            artifact_sha256: sha.clone(),
            unconditional: ir_rule.condition == writ_plugin::ir::Expr::Const(true),
        })
        .collect();
    // The kill switch enforces its clause like a rule; its index follows the rules'.
    if let Some(clause) = compiled
        .policy
        .kill_switch
        .as_ref()
        .and_then(|k| k.clause.clone())
    {
        rules.push(RuleRef {
            id: writ_plugin::ir::KILL_SWITCH_RULE_ID.to_string(),
            clause,
            title: writ::policy_tests::run::KILL_SWITCH_TITLE.to_string(),
            location: format!("{} (kill_switch)", path.display()),
            artifact: artifact.clone(),
            artifact_sha256: sha.clone(),
            unconditional: false,
        });
    }
    let manual = compiled
        .manual
        .iter()
        .map(|m| ManualRef {
            clause: m.clause.clone(),
            owner: m.owner.clone(),
            reason: m.reason.clone(),
            location: format!("{}:{}", path.display(), m.line),
        })
        .collect();
    PolicyInput {
        artifact,
        rules,
        manual,
        cases,
    }
}
