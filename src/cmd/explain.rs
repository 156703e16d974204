//! `writ explain ARTIFACT --request FILE [--reply FILE]`: for every rule of the policy
//! compiled into an artifact, whether it matched one request and why, and the precedence
//! that produced the final action. The request and reply files are `writ run`'s.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, bail};
use writ_compiler::link;
use writ_plugin::eval::Engine;
use writ_plugin::explain::{self, ReplyInput, RequestInput};

/// Arguments of `writ explain`.
#[derive(Debug, clap::Args)]
pub struct ExplainArgs {
    /// The artifact (`<policy>-<version>.wasm`): its embedded policy is explained.
    pub artifact: PathBuf,
    /// The request, in `writ run`'s format (JSON).
    #[arg(long)]
    pub request: PathBuf,
    /// The upstream's reply (JSON, or `{"events": [...]}` for SSE), to explain the
    /// response rules too.
    #[arg(long)]
    pub reply: Option<PathBuf>,
    /// Output: a tree per rule (text), or the same facts as JSON.
    #[arg(long, value_enum, default_value = "text")]
    pub format: super::Format,
}

/// Explains the request and prints the explanation.
pub fn run(args: ExplainArgs) -> anyhow::Result<ExitCode> {
    let name = args.artifact.display().to_string();
    let bytes = std::fs::read(&args.artifact).with_context(|| format!("cannot read {name}"))?;
    let policy =
        link::read_policy(&bytes).with_context(|| format!("{name} is not a writ artifact"))?;
    let engine = Engine::new(policy).map_err(|e| anyhow::anyhow!("{name}: {e}"))?;
    let request = request_input(&args.request)?;
    if is_mcp(&request) {
        bail!(
            "{}: this is an MCP message (JSON-RPC off a model API's path); `writ explain` explains \
             model requests only. The audit record of an MCP message says which rule acted \
             (docs/mcp.md).",
            args.request.display()
        );
    }
    let reply = match &args.reply {
        Some(path) => Some(reply_input(path)?),
        None => None,
    };
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64);
    let ex = explain::explain(
        &engine,
        &request,
        reply.as_ref(),
        now,
        writ_plugin::config::DEFAULT_BODY_LIMIT,
    );
    let text = match args.format {
        super::Format::Text => writ::explain::to_text(&ex),
        super::Format::Json => format!("{:#}\n", writ::explain::to_json(&ex)),
    };
    // A closed pipe (`writ explain … | head`) is not an error of the tool.
    match std::io::stdout().lock().write_all(text.as_bytes()) {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => return Err(e.into()),
        _ => {}
    }
    Ok(ExitCode::SUCCESS)
}

/// Whether the gateway would govern `request` as MCP rather than as a model request.
fn is_mcp(request: &RequestInput) -> bool {
    let header = |name: &str| {
        request
            .headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    };
    // The session reads the path without its query string; so does this.
    let path = request.path.split('?').next().unwrap_or_default();
    let api = writ_plugin::api::Api::of(path, header("anthropic-version"));
    let body: Option<serde_json::Value> = serde_json::from_slice(&request.body).ok();
    writ_plugin::mcp::recognised(
        api,
        &request.method,
        header(writ_plugin::mcp::PROTOCOL_VERSION_HEADER).is_some(),
        body.as_ref(),
    )
}

/// Reads a request file with `writ run`'s parser.
fn request_input(path: &PathBuf) -> anyhow::Result<RequestInput> {
    let v = super::run::read_json(path)?;
    if !v.is_object() {
        bail!(
            "{}: a request file is a JSON object (`method`, `path`, `headers`, `body`)",
            path.display()
        );
    }
    let spec =
        super::run::request_spec(&v).with_context(|| format!("{}: bad request", path.display()))?;
    Ok(RequestInput {
        method: spec.method,
        path: spec.path,
        headers: spec.headers,
        body: spec.body.concat(),
    })
}

/// Reads a reply file with `writ run`'s parser.
fn reply_input(path: &PathBuf) -> anyhow::Result<ReplyInput> {
    let v = super::run::read_json(path)?;
    if !v.is_object() {
        bail!(
            "{}: a reply file is a JSON object (`status`, `headers`, `body` or `events`)",
            path.display()
        );
    }
    let r =
        super::run::upstream_reply(&v).with_context(|| format!("{}: bad reply", path.display()))?;
    Ok(ReplyInput {
        status: r.status,
        headers: r.headers,
        chunks: r.body,
    })
}
