//! `writ audit`: check and search the hash-chained audit log `writ serve` writes
//! (format in `writ::audit_log`).

use std::fs::File;
use std::io::BufReader;
use std::path::PathBuf;
use std::process::ExitCode;

use writ::audit_log;

/// Arguments of `writ audit`.
#[derive(Debug, clap::Args)]
pub struct AuditArgs {
    #[command(subcommand)]
    pub command: AuditCommand,
}

#[derive(Debug, clap::Subcommand)]
pub enum AuditCommand {
    /// Check that no record was edited, removed or reordered; prints the chain's head.
    Verify {
        /// The audit log (JSONL).
        file: PathBuf,
        /// The head hash recorded elsewhere earlier; fails unless the log ends with it
        /// (this is what catches a forger who rebuilt the whole chain).
        #[arg(long)]
        head: Option<String>,
        #[arg(long, value_enum, default_value = "text")]
        format: super::Format,
    },
    /// Serve the endpoint `writ envoy --audit-sink` posts records to: each request's
    /// records are appended to FILE, hash-chained, before the sink answers 200, and Envoy
    /// holds the end of the client's answer until then. A host killed at any moment so
    /// loses no record of a request whose answer the client saw.
    Sink {
        /// Where to listen (keep it on loopback or a private network).
        #[arg(long, default_value = "127.0.0.1:9902")]
        listen: std::net::SocketAddr,
        /// The audit log (JSONL), appended to; `writ audit verify` checks it.
        #[arg(long)]
        out: PathBuf,
        /// Also `fsync` each batch before answering (survives a machine crash, not only a
        /// killed process; slower).
        #[arg(long)]
        fsync: bool,
    },
    /// Print the records of one request.
    Show {
        /// The request id (`x-request-id`).
        request_id: String,
        /// The audit log (JSONL).
        file: PathBuf,
        #[arg(long, value_enum, default_value = "text")]
        format: super::Format,
    },
}

/// Runs the subcommand: exit 1 when the log is broken or the request is not found.
pub fn run(args: AuditArgs) -> anyhow::Result<ExitCode> {
    let open = |path: &PathBuf| {
        File::open(path)
            .map(|f| BufReader::with_capacity(256 * 1024, f))
            .map_err(|e| anyhow::anyhow!("cannot read {}: {e}", path.display()))
    };
    match args.command {
        AuditCommand::Sink { listen, out, fsync } => super::audit_sink::run(listen, &out, fsync),
        AuditCommand::Verify { file, head, format } => {
            let mut result = audit_log::verify(open(&file)?)
                .map_err(|e| anyhow::anyhow!("cannot read {}: {e}", file.display()))?;
            if result.is_err() {
                // Envoy's workers append concurrently, so a record may sit a few lines from
                // its place in the chain: follow the links instead of the file order.
                let linked = audit_log::verify_linked(open(&file)?)
                    .map_err(|e| anyhow::anyhow!("cannot read {}: {e}", file.display()))?;
                if let Ok(v) = linked {
                    eprintln!(
                        "note: {}: verified by following the links ({} chain(s); records were appended by concurrent writers)",
                        file.display(),
                        v.chains
                    );
                    result = Ok(audit_log::Verified {
                        lines: v.lines,
                        head: v.head,
                    });
                }
            }
            let result = match (result, head) {
                (Ok(v), Some(h)) if !v.head.eq_ignore_ascii_case(h.trim()) => {
                    Err(audit_log::Broken {
                        line: v.lines,
                        reason: format!(
                            "the log ends with head {}, not the expected {h}: records were removed from the end or the chain was rebuilt",
                            v.head
                        ),
                    })
                }
                (r, _) => r,
            };
            let name = file.display();
            match (&result, format) {
                (Ok(v), super::Format::Text) => {
                    println!("{name}: ok, {} records, head {}", v.lines, v.head)
                }
                (Err(b), super::Format::Text) => eprintln!("{name}: {b}"),
                (Ok(v), super::Format::Json) => println!(
                    "{}",
                    serde_json::json!({"file": name.to_string(), "ok": true, "records": v.lines, "head": v.head})
                ),
                (Err(b), super::Format::Json) => println!(
                    "{}",
                    serde_json::json!({"file": name.to_string(), "ok": false, "line": b.line, "reason": b.reason})
                ),
            }
            Ok(if result.is_ok() {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            })
        }
        AuditCommand::Show {
            request_id,
            file,
            format,
        } => {
            let found = audit_log::find(open(&file)?, &request_id)
                .map_err(|e| anyhow::anyhow!("cannot read {}: {e}", file.display()))?;
            if found.is_empty() {
                eprintln!("{}: no record of request `{request_id}`", file.display());
                return Ok(ExitCode::FAILURE);
            }
            for (line, record) in &found {
                match format {
                    super::Format::Json => println!("{record}"),
                    super::Format::Text => {
                        println!("# {}:{line}", file.display());
                        println!(
                            "{}",
                            serde_json::to_string_pretty(record).unwrap_or_default()
                        );
                    }
                }
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}
