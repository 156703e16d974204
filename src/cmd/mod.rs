//! Subcommands, one file each. Each `run` returns the process exit code for outcomes the
//! user caused (a policy with errors, a file that would be reformatted) and `Err` for
//! failures of the tool itself (an unreadable file, an unwritable output folder).

pub mod audit;
pub mod audit_sink;
pub mod build;
pub mod check;
pub mod coverage;
pub mod diff;
pub mod envoy;
pub mod fmt;
pub mod inspect;
pub mod keygen;
pub mod run;
pub mod serve;
pub mod test;
pub mod verify;

use std::process::ExitCode;

/// Policy-as-code for AI governance: compile `.policy` files into proxy-wasm artifacts.
#[derive(Debug, clap::Parser)]
#[command(name = "writ", version, about)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// Verify the hash-chained audit log, or show the records of one request.
    Audit(audit::AuditArgs),
    /// Check policies for errors without building them.
    Check(check::CheckArgs),
    /// Rewrite policies in the canonical layout (`--check`: only report).
    Fmt(fmt::FmtArgs),
    /// Compile policies into `.wasm` artifacts with their manifests.
    Build(build::BuildArgs),
    /// Show what an artifact contains: policy, hashes, compiler, rules and clauses.
    Inspect(inspect::InspectArgs),
    /// Run the policy tests beside each policy against its compiled artifact.
    Test(test::TestArgs),
    /// Report paper-to-code coverage: clauses, rules, tests and artifacts.
    Coverage(coverage::CoverageArgs),
    /// List the rule-level changes between two versions of a policy.
    Diff(diff::DiffArgs),
    /// Print an Envoy config that runs an artifact in front of an upstream.
    Envoy(envoy::EnvoyArgs),
    /// Make an ed25519 key pair that signs artifacts (`build --sign`).
    Keygen(keygen::KeygenArgs),
    /// Check that artifacts carry a valid signature by a trusted key.
    Verify(verify::VerifyArgs),
    /// Run one request (JSON) through an artifact in the embedded wasmtime host.
    Run(run::RunArgs),
    /// Serve an OpenAI-compatible gateway that enforces an artifact, without Envoy.
    Serve(serve::ServeArgs),
}

/// Dispatches to the subcommand.
pub fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Audit(args) => audit::run(args),
        Command::Check(args) => check::run(args),
        Command::Fmt(args) => fmt::run(args),
        Command::Build(args) => build::run(args),
        Command::Inspect(args) => inspect::run(args),
        Command::Test(args) => test::run(args),
        Command::Coverage(args) => coverage::run(args),
        Command::Diff(args) => diff::run(args),
        Command::Envoy(args) => envoy::run(args).map(|()| ExitCode::SUCCESS),
        Command::Keygen(args) => keygen::run(args),
        Command::Verify(args) => verify::run(args),
        Command::Run(args) => run::run(args),
        Command::Serve(args) => serve::run(args),
    }
}

/// How a command prints what a machine may read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    Text,
    Json,
}

/// Reads a policy source, naming the file in the error.
pub fn read_source(path: &std::path::Path) -> anyhow::Result<String> {
    std::fs::read_to_string(path)
        .map_err(|e| anyhow::anyhow!("cannot read {}: {e}", path.display()))
}
