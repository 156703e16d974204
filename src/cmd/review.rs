//! `writ review`: gathers the evidence (policies, artifacts, coverage, the audit log, a
//! Prometheus scrape) and prints the production readiness review `writ::review` judges.
//! Exit 0 when no gate fails, 1 when one does, 2 when the input is unusable.

use std::io::{BufReader, Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use writ::review::{
    self, ArtifactEvidence, ChainEvidence, CoverageEvidence, Evidence, MetricsEvidence,
    PolicyEvidence, Verdict, WorkflowEvidence, dates::Date,
};
use writ_compiler::link;
use writ_plugin::ir;

/// Arguments of `writ review`.
#[derive(Debug, clap::Args)]
pub struct ReviewArgs {
    /// The policies under review (each with its `.tests.yaml` beside it for coverage).
    #[arg(required_unless_present = "template")]
    pub policies: Vec<PathBuf>,
    /// The hash-chained audit log (`writ serve --audit-log`, `writ audit sink`, or Envoy's
    /// `--audit-log` file).
    #[arg(long, value_name = "FILE", required_unless_present = "template")]
    pub audit: Option<PathBuf>,
    /// The folder `writ build --out` wrote artifacts to: tested builds and, for rollback,
    /// older signed versions.
    #[arg(long, value_name = "DIR")]
    pub artifacts: Option<PathBuf>,
    /// A public key whose signatures make an older artifact a valid rollback target.
    #[arg(long, value_name = "PUBKEY")]
    pub trust: Vec<PathBuf>,
    /// A Prometheus scrape (`http://127.0.0.1:PORT/metrics` of `writ serve` or Envoy).
    #[arg(long, value_name = "URL")]
    pub metrics: Option<String>,
    /// Only audit records from this day on (`YYYY-MM-DD`, UTC).
    #[arg(long, value_name = "DATE")]
    pub since: Option<String>,
    /// The go-live date (`YYYY-MM-DD`), from which the review cadence follows; overrides
    /// the `go_live` of every reviewed workflow's rollout pack.
    #[arg(long, value_name = "DATE")]
    pub go_live: Option<String>,
    #[arg(long, value_enum, default_value = "md")]
    pub format: ReviewFormat,
    /// Print an empty rollout pack for a workflow, in the policy's own syntax (a
    /// `rollout { … }` block to paste into the workflow), instead of a review.
    #[arg(long, value_name = "WORKFLOW", num_args = 0..=1, default_missing_value = "my-workflow")]
    pub template: Option<String>,
}

/// Output formats of `writ review`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ReviewFormat {
    Md,
    Html,
    Json,
}

/// Runs the review; input problems exit 2 with the reason.
pub fn run(args: ReviewArgs) -> anyhow::Result<ExitCode> {
    if let Some(workflow) = &args.template {
        print!("{}", writ_compiler::rollout::template(workflow));
        return Ok(ExitCode::SUCCESS);
    }
    let evidence = match gather(&args) {
        Ok(e) => e,
        Err(e) => {
            eprintln!("error: {e:#}");
            return Ok(ExitCode::from(2));
        }
    };
    let result = review::review(&evidence);
    let text = match args.format {
        ReviewFormat::Md => review::render::markdown(&result),
        ReviewFormat::Html => review::render::html(&result),
        ReviewFormat::Json => serde_json::to_string_pretty(&result)? + "\n",
    };
    std::io::stdout().write_all(text.as_bytes())?;
    Ok(if result.verdict == Verdict::Fail {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}

fn gather(args: &ReviewArgs) -> anyhow::Result<Evidence> {
    let audit = args
        .audit
        .as_ref()
        .ok_or_else(|| anyhow::anyhow!("--audit FILE is required"))?;
    let since = match &args.since {
        Some(s) => Some(
            Date::parse(s)
                .ok_or_else(|| anyhow::anyhow!("--since `{s}` is not a date (YYYY-MM-DD)"))?,
        ),
        None => None,
    };
    let go_live = match &args.go_live {
        Some(s) => Some(
            Date::parse(s)
                .ok_or_else(|| anyhow::anyhow!("--go-live `{s}` is not a date (YYYY-MM-DD)"))?,
        ),
        None => None,
    };
    let mut policies = Vec::new();
    let mut workflows = Vec::new();
    for path in &args.policies {
        let (p, w) = policy_evidence(path)?;
        policies.push(p);
        workflows.extend(w);
    }
    let artifacts = match &args.artifacts {
        Some(dir) => Some(artifact_evidence(dir, &args.trust)?),
        None => None,
    };
    let coverage = coverage_evidence(&args.policies);
    let bytes = std::fs::read(audit)
        .map_err(|e| anyhow::anyhow!("cannot read {}: {e}", audit.display()))?;
    let chain = chain_evidence(&bytes)?;
    let mut records = Vec::new();
    let mut unparsed = 0u64;
    let since_text = since.map(|d| d.to_string());
    for line in bytes.split(|&b| b == b'\n').filter(|l| !l.is_empty()) {
        match serde_json::from_slice::<writ_plugin::audit::AuditRecord>(line) {
            Ok(r) => {
                if since_text.as_deref().is_none_or(|s| r.time.as_str() >= s) {
                    records.push(r);
                }
            }
            Err(_) => unparsed += 1,
        }
    }
    let lookup = records
        .iter()
        .rev()
        .find(|r| r.event == "request" && !r.request_id.is_empty())
        .map(|r| r.request_id.clone())
        .map(|id| -> anyhow::Result<(String, f64)> {
            let start = Instant::now();
            let file = std::fs::File::open(audit)?;
            let found = writ::audit_log::find(BufReader::new(file), &id)?;
            let ms = start.elapsed().as_secs_f64() * 1000.0;
            anyhow::ensure!(!found.is_empty(), "request `{id}` not found again");
            Ok((id, ms))
        })
        .transpose()?;
    let metrics = args.metrics.as_deref().map(scrape);
    Ok(Evidence {
        policies,
        workflows,
        artifacts,
        coverage,
        audit_file: audit.display().to_string(),
        chain,
        records,
        unparsed,
        since: since_text,
        lookup,
        metrics,
        go_live,
        today: Date::today(),
    })
}

fn policy_evidence(path: &Path) -> anyhow::Result<(PolicyEvidence, Vec<WorkflowEvidence>)> {
    let source = super::read_source(path)?;
    let name = path.display().to_string();
    let compiled = writ_compiler::compile(&name, &source)
        .map_err(|d| anyhow::anyhow!("{name} has errors:\n{}", d.render(&name, &source)))?;
    let artifact = link::link(writ::engine::ENGINE_WASM, &compiled)?;
    let p = &compiled.policy;
    let workflows = p
        .workflows
        .iter()
        .zip(&compiled.rollout)
        .map(|(w, pack)| {
            let (oversight, requires_review, designed_min_rate) = match &w.oversight {
                ir::Oversight::Hitl => ("HITL".to_string(), true, 1.0),
                ir::Oversight::Hotl { threshold } => {
                    (format!("HOTL below {threshold:.2}"), true, 0.0)
                }
                ir::Oversight::Hic { sample_rate } => (
                    format!("HIC sample {}%", sample_rate * 100.0),
                    false,
                    *sample_rate,
                ),
            };
            WorkflowEvidence {
                name: w.name.clone(),
                policy: p.name.clone(),
                oversight,
                requires_review,
                designed_min_rate,
                assumed_rate: w.assumed_verification_rate,
                business_case: w.business_case.clone(),
                rollout: pack.clone(),
                kill_points: w.kill_points.iter().map(|k| k.text.clone()).collect(),
            }
        })
        .collect();
    Ok((
        PolicyEvidence {
            name: p.name.clone(),
            version: p.version.clone(),
            path: name,
            owner: compiled.owner.clone(),
            source_sha256: p.source_sha256.clone(),
            built_sha256: link::sha256_hex(&artifact.wasm),
            currency: p.currency.clone(),
            manual_owners: compiled.manual.iter().map(|m| m.owner.clone()).collect(),
            budgets: spend_caps(p),
        },
        workflows,
    ))
}

/// The spend caps a policy enforces: each enforced deny whose condition is `spend(scope,
/// window) > cap` (or `>=`), for `writ review`'s budget headroom.
fn spend_caps(p: &ir::Policy) -> Vec<writ::review::budgets::BudgetEvidence> {
    use ir::{Action, CmpOp, Enforcement, Expr, Operand, Scope, Value, Window};
    p.rules
        .iter()
        .filter(|r| {
            matches!(r.action, Action::Deny { .. }) && r.enforcement == Enforcement::Enforce
        })
        .filter_map(|r| match &r.condition {
            Expr::Compare {
                left: Operand::Spend { scope, window },
                op: CmpOp::Gt | CmpOp::Ge,
                right: Operand::Const(Value::Money(cap)),
            } => Some(writ::review::budgets::BudgetEvidence {
                clause: r.clause.clone(),
                scope: match scope {
                    Scope::Team => "team",
                    Scope::User => "user",
                    Scope::Workflow => "workflow",
                }
                .into(),
                window: match window {
                    Window::Hour => "hour",
                    Window::Day => "day",
                    Window::Month => "month",
                }
                .into(),
                cap_micros: *cap,
            }),
            _ => None,
        })
        .collect()
}

fn artifact_evidence(dir: &Path, trust: &[PathBuf]) -> anyhow::Result<Vec<ArtifactEvidence>> {
    let trusted = writ::trust::read_trusted(trust)?;
    let entries = std::fs::read_dir(dir)
        .map_err(|e| anyhow::anyhow!("cannot read the artifacts folder {}: {e}", dir.display()))?;
    let mut paths: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "wasm"))
        .collect();
    paths.sort();
    let mut out = Vec::new();
    for path in paths {
        let wasm = std::fs::read(&path)
            .map_err(|e| anyhow::anyhow!("cannot read {}: {e}", path.display()))?;
        let Ok(manifest) = link::read_manifest(&wasm) else {
            continue; // not a writ artifact
        };
        let signed = matches!(link::sign::read_signature(&wasm), Ok(Some(_)));
        let (signature_valid, signature_note) = if !signed {
            (Some(false), "unsigned".to_string())
        } else if trusted.is_empty() {
            (
                None,
                "signed, but no `--trust` key was given to verify the signature".to_string(),
            )
        } else {
            match writ::trust::verify_artifact(&path, &wasm, &trusted) {
                Ok(v) => (Some(true), format!("signed by trusted key {}", v.key_id)),
                Err(e) => (Some(false), format!("{e:#}")),
            }
        };
        out.push(ArtifactEvidence {
            file: path.display().to_string(),
            policy: manifest.policy,
            version: manifest.version,
            sha256: link::sha256_hex(&wasm),
            source_sha256: manifest.source_sha256,
            signature_valid,
            signature_note,
        });
    }
    Ok(out)
}

fn coverage_evidence(policies: &[PathBuf]) -> Result<CoverageEvidence, String> {
    let (paper, report) = super::coverage::report(policies)
        .map_err(|e| format!("clause coverage could not be computed: {e:#}"))?;
    let mut c = CoverageEvidence {
        paper: paper.display().to_string(),
        enforced: Vec::new(),
        manual: Vec::new(),
        paper_only: Vec::new(),
        gaps: Vec::new(),
        percent: report.percent,
    };
    for clause in &report.clauses {
        if !clause.rules.is_empty() {
            c.enforced.push(clause.clause.clone());
        } else if !clause.manual.is_empty() {
            c.manual.push(clause.clause.clone());
        } else {
            c.paper_only.push(clause.clause.clone());
        }
        if !clause.gaps.is_empty() {
            c.gaps
                .push(format!("{}: {}", clause.clause, clause.gaps.join(", ")));
        }
    }
    Ok(c)
}

fn chain_evidence(bytes: &[u8]) -> anyhow::Result<ChainEvidence> {
    let mut result = writ::audit_log::verify(bytes)?;
    if result.is_err() {
        // Envoy's workers append concurrently: follow the links, as `writ audit verify`.
        if let Ok(v) = writ::audit_log::verify_linked(bytes)? {
            result = Ok(writ::audit_log::Verified {
                lines: v.lines,
                head: v.head,
            });
        }
    }
    Ok(match result {
        Ok(v) => ChainEvidence {
            ok: true,
            records: v.lines,
            detail: format!("head {}", v.head),
        },
        Err(b) => ChainEvidence {
            ok: false,
            records: b.line,
            detail: b.to_string(),
        },
    })
}

/// Scrapes a Prometheus endpoint over plain HTTP/1.0 (loopback or a private network; the
/// scrape is read-only and small, so no client library is pulled in for it).
fn scrape(url: &str) -> MetricsEvidence {
    let mut m = MetricsEvidence {
        url: url.to_string(),
        ..MetricsEvidence::default()
    };
    match fetch(url) {
        Err(e) => m.error = Some(e),
        Ok(body) => {
            for line in body.lines().filter(|l| !l.starts_with('#')) {
                let Some((series, value)) = line.rsplit_once(' ') else {
                    continue;
                };
                let Ok(value) = value.trim().parse::<f64>() else {
                    continue;
                };
                let (name, labels) = series.split_once('{').unwrap_or((series, ""));
                let workflow = labels
                    .split("workflow=\"")
                    .nth(1)
                    .and_then(|r| r.split('"').next())
                    .unwrap_or("")
                    .to_string();
                let target = match name {
                    "writ_drift_alerts_total" => &mut m.drift_alerts,
                    "writ_escalations_total" => &mut m.escalations,
                    _ => continue,
                };
                *target.entry(workflow).or_insert(0.0) += value;
            }
        }
    }
    m
}

fn fetch(url: &str) -> Result<String, String> {
    let rest = url
        .strip_prefix("http://")
        .ok_or("only http:// scrape URLs are supported")?;
    let (host, path) = match rest.find('/') {
        Some(i) => rest.split_at(i),
        None => (rest, "/metrics"),
    };
    let addr = host
        .to_socket_addrs()
        .map_err(|e| format!("cannot resolve {host}: {e}"))?
        .next()
        .ok_or(format!("cannot resolve {host}"))?;
    let timeout = Duration::from_secs(5);
    let mut stream =
        TcpStream::connect_timeout(&addr, timeout).map_err(|e| format!("cannot connect: {e}"))?;
    let _ = stream.set_read_timeout(Some(timeout));
    write!(stream, "GET {path} HTTP/1.0\r\nHost: {host}\r\n\r\n")
        .map_err(|e| format!("cannot send: {e}"))?;
    let mut response = Vec::new();
    stream
        .take(16 * 1024 * 1024)
        .read_to_end(&mut response)
        .map_err(|e| format!("cannot read: {e}"))?;
    let text = String::from_utf8_lossy(&response);
    let (head, body) = text.split_once("\r\n\r\n").ok_or("no HTTP answer")?;
    let status = head.split_whitespace().nth(1).unwrap_or("");
    if status != "200" {
        return Err(format!("the scrape answered {status}"));
    }
    Ok(body.to_string())
}
