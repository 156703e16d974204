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
pub mod explain;
pub mod fmt;
pub mod init;
pub mod inspect;
pub mod keygen;
pub mod package;
pub mod review;
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
    /// Start a paper policy, a `.policy` implementing it and its tests (they pass as written).
    #[command(
        after_help = "Examples:\n  writ init governance --name support-bot\n  cd governance && writ check support-bot.policy && writ test . && writ coverage ."
    )]
    Init(init::InitArgs),
    /// Verify the hash-chained audit log, show the records of one request, or run the sink
    /// Envoy posts records to.
    #[command(
        after_help = "Examples:\n  writ audit verify audit.jsonl\n  writ audit verify audit.jsonl --head 3f9a0c   # also catch a rebuilt chain\n  writ audit show 6f1c2a audit.jsonl\n  writ audit sink --listen 127.0.0.1:9902 --out audit.jsonl --fsync"
    )]
    Audit(audit::AuditArgs),
    /// Check policies for errors without building them.
    #[command(
        after_help = "Examples:\n  writ check policies/*.policy\n  writ check policies/*.policy --deny-warnings\n  writ check policies/*.policy --format sarif > writ.sarif   # code-scanning UIs"
    )]
    Check(check::CheckArgs),
    /// Rewrite policies in the canonical layout (`--check`: only report).
    #[command(
        after_help = "Examples:\n  writ fmt policies/*.policy\n  writ fmt --check policies/*.policy   # in CI: exit 1 if a file would change\n  writ fmt --diff support-assistant.policy\n  writ fmt -   # stdin to stdout, for editors"
    )]
    Fmt(fmt::FmtArgs),
    /// Compile policies into `.wasm` artifacts with their manifests.
    #[command(
        after_help = "Examples:\n  writ build policies/*.policy --out out\n  writ build support-assistant.policy --out out --sign writ.key"
    )]
    Build(build::BuildArgs),
    /// Show what an artifact contains: policy, hashes, compiler, rules and clauses.
    #[command(
        after_help = "Examples:\n  writ inspect out/support-assistant-1.0.0.wasm\n  writ inspect out/support-assistant-1.0.0.wasm --format json"
    )]
    Inspect(inspect::InspectArgs),
    /// Run the policy tests beside each policy against its compiled artifact.
    #[command(
        after_help = "Examples:\n  writ test policies\n  writ test policies --junit out/policy-tests.xml"
    )]
    Test(test::TestArgs),
    /// Report paper-to-code coverage: clauses, rules, tests and artifacts.
    #[command(
        after_help = "Examples:\n  writ coverage policies\n  writ coverage policies --json out/coverage.json --junit out/coverage.xml"
    )]
    Coverage(coverage::CoverageArgs),
    /// List every enforcement change between two versions of a policy.
    #[command(
        after_help = "Examples:\n  writ diff old/support-assistant.policy support-assistant.policy\n  writ diff out/support-assistant-1.0.0.wasm support-assistant.policy --exit-code   # CI gate"
    )]
    Diff(diff::DiffArgs),
    /// Print an Envoy config that runs an artifact in front of an upstream.
    #[command(
        after_help = "Examples:\n  writ envoy out/support-assistant-1.0.0.wasm --upstream https://api.openai.com > envoy.yaml\n  writ envoy out/a.wasm --upstream https://api.openai.com --trust writ.pub \\\n    --jwt-issuer https://id.example.com --jwt-audience writ --jwks https://id.example.com/jwks.json\n  envoy -c envoy.yaml"
    )]
    Envoy(envoy::EnvoyArgs),
    /// Package an artifact as an OCI image for Istio and print the WasmPlugin that runs it.
    #[command(
        after_help = "Examples:\n  writ package out/support-assistant-1.0.0.wasm --oci out/oci > wasmplugin.yaml\n  writ package out/support-assistant-1.0.0.wasm --oci out/oci --trust writ.pub \\\n    --image registry.example.com/ai/support-assistant:1.0.0 --namespace llm --selector app=llm-gateway \\\n    --audit-sink writ-audit-sink.writ.svc.cluster.local:9902 > wasmplugin.yaml\n  skopeo copy --preserve-digests oci:out/oci:1.0.0 docker://registry.example.com/ai/support-assistant:1.0.0\n  kubectl apply -f wasmplugin.yaml"
    )]
    Package(package::PackageArgs),
    /// Make an ed25519 key pair that signs artifacts (`build --sign`).
    #[command(
        after_help = "Examples:\n  writ keygen                      # writ.key and writ.pub here\n  writ keygen --out keys/release"
    )]
    Keygen(keygen::KeygenArgs),
    /// Check that artifacts carry a valid signature by a trusted key.
    #[command(
        after_help = "Examples:\n  writ verify out/support-assistant-1.0.0.wasm --trust writ.pub"
    )]
    Verify(verify::VerifyArgs),
    /// Run one request (JSON) through an artifact in the embedded wasmtime host.
    #[command(
        after_help = "Examples:\n  writ run out/support-assistant-1.0.0.wasm --request req.json\n  writ run out/support-assistant-1.0.0.wasm --request req.json --reply reply.json"
    )]
    Run(run::RunArgs),
    /// Explain which rules match one request and why, and what precedence decided it.
    #[command(
        after_help = "Examples:\n  writ explain out/support-assistant-1.0.0.wasm --request req.json\n  writ explain out/support-assistant-1.0.0.wasm --request req.json --reply reply.json\n  writ explain out/support-assistant-1.0.0.wasm --request req.json --format json > why.json"
    )]
    Explain(explain::ExplainArgs),
    /// Serve an OpenAI-compatible gateway that enforces an artifact, without Envoy.
    #[command(
        after_help = "Examples:\n  writ serve --policy out/support-assistant-1.0.0.wasm --upstream https://api.openai.com --audit-log audit.jsonl\n  writ serve --policy support-assistant.policy --upstream http://127.0.0.1:8000 --trust writ.pub"
    )]
    Serve(serve::ServeArgs),
    /// The production readiness review: five questions answered from the policies, the
    /// artifacts, coverage and the audit log (exit 1 when a gate fails).
    #[command(
        after_help = "Examples:\n  writ review policies/support-assistant.policy --audit audit.jsonl\n  writ review policies/*.policy --audit audit.jsonl --artifacts out --trust writ.pub --since 2026-11-01\n  writ review policies/support-assistant.policy --audit audit.jsonl --metrics http://127.0.0.1:10000/metrics --go-live 2026-11-01 --format html > review.html\n  writ review --template support-assistant > rollout-pack.policy"
    )]
    Review(review::ReviewArgs),
}

/// Dispatches to the subcommand.
pub fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Init(args) => init::run(args),
        Command::Audit(args) => audit::run(args),
        Command::Check(args) => check::run(args),
        Command::Fmt(args) => fmt::run(args),
        Command::Build(args) => build::run(args),
        Command::Inspect(args) => inspect::run(args),
        Command::Test(args) => test::run(args),
        Command::Coverage(args) => coverage::run(args),
        Command::Diff(args) => diff::run(args),
        Command::Envoy(args) => envoy::run(args).map(|()| ExitCode::SUCCESS),
        Command::Package(args) => package::run(args),
        Command::Keygen(args) => keygen::run(args),
        Command::Verify(args) => verify::run(args),
        Command::Run(args) => run::run(args),
        Command::Explain(args) => explain::run(args),
        Command::Serve(args) => serve::run(args),
        Command::Review(args) => review::run(args),
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

#[cfg(test)]
mod tests {
    use super::Cli;
    use clap::{CommandFactory, Parser};

    /// Every example in every subcommand's `--help` parses as the command line it shows.
    #[test]
    fn help_examples_are_valid_command_lines() {
        let cli = Cli::command();
        let mut checked = 0;
        for sub in cli.get_subcommands() {
            let help = sub
                .get_after_help()
                .map(|h| h.to_string())
                .unwrap_or_default();
            assert!(
                help.starts_with("Examples:"),
                "`writ {}` has no examples",
                sub.get_name()
            );
            let text = help.replace("\\\n", " ");
            for line in text
                .lines()
                .map(str::trim)
                .filter(|l| l.starts_with("writ "))
            {
                let line = line.split(" > ").next().unwrap_or(line);
                let line = line.split("  #").next().unwrap_or(line);
                let line = line.split(" && ").next().unwrap_or(line);
                let args: Vec<&str> = line.split_whitespace().collect();
                let parsed = Cli::try_parse_from(&args);
                assert!(parsed.is_ok(), "`{line}`: {:?}", parsed.err());
                checked += 1;
            }
        }
        assert!(checked >= 20, "only {checked} examples");
    }
}
