//! Runs policy test files against the compiled artifact in the wasmtime host: the artifact
//! is what is tested, not the source.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::Context;
use writ_compiler::link;
use writ_plugin::ir;

use super::expect::{self, FiredRule, Mismatch, Outcome, SeenRequest};
use super::format::{Case, Reply, TestFile};
use super::junit::CaseResult;

/// The test files under `paths`: `*.tests.yaml` in a folder (not recursive), a test file
/// itself, or the test file beside a `.policy`. Sorted, so runs are reproducible.
pub fn discover(paths: &[PathBuf]) -> anyhow::Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    for p in paths {
        if p.is_dir() {
            let entries =
                std::fs::read_dir(p).with_context(|| format!("reading {}", p.display()))?;
            let mut found: Vec<PathBuf> = entries
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|f| f.to_string_lossy().ends_with(".tests.yaml"))
                .collect();
            found.sort();
            out.extend(found);
        } else if p.extension().is_some_and(|e| e == "policy") {
            let stem = p.file_stem().map(|s| s.to_string_lossy().into_owned());
            let sibling = p.with_file_name(format!("{}.tests.yaml", stem.unwrap_or_default()));
            anyhow::ensure!(
                sibling.exists(),
                "{} has no test file ({} is missing)",
                p.display(),
                sibling.display()
            );
            out.push(sibling);
        } else {
            out.push(p.clone());
        }
    }
    Ok(out)
}

/// The title under which the engine reports a request refused by the kill switch.
pub const KILL_SWITCH_TITLE: &str = writ_plugin::kill_switch::RULE_TITLE;

/// One test file compiled, linked and ready to run.
pub struct Suite {
    pub test_path: PathBuf,
    pub policy_path: PathBuf,
    pub file: TestFile,
    pub compiled: writ_compiler::Compiled,
    pub artifact: link::Artifact,
}

impl Suite {
    /// Loads a test file, compiles and links the policy it names.
    pub fn load(test_path: &Path) -> anyhow::Result<Suite> {
        let file = super::format::load(test_path)?;
        let policy_path = test_path
            .parent()
            .unwrap_or_else(|| Path::new("."))
            .join(&file.policy);
        let source = std::fs::read_to_string(&policy_path)
            .with_context(|| format!("reading {}", policy_path.display()))?;
        let name = policy_path.display().to_string();
        let compiled = writ_compiler::compile(&name, &source).map_err(|diagnostics| {
            anyhow::anyhow!("{name} has errors:\n{}", diagnostics.render(&name, &source))
        })?;
        let artifact = link::link(crate::engine::ENGINE_WASM, &compiled)
            .with_context(|| format!("linking {name}"))?;
        Ok(Suite {
            test_path: test_path.to_path_buf(),
            policy_path,
            file,
            compiled,
            artifact,
        })
    }

    /// The artifact's sha256 as the manifest beside it records it.
    pub fn artifact_sha256(&self) -> String {
        link::sha256_hex(&self.artifact.wasm)
    }

    /// The artifact file name, `<policy>-<version>.wasm`.
    pub fn artifact_name(&self) -> String {
        format!("{}.wasm", self.artifact.file_stem())
    }

    /// Runs every case in order. Each starts from a gateway that has served nothing (fresh
    /// shared data and a fresh VM), unless it says `continue: true`, when it sees the state
    /// the previous case left (spend ledgers, the kill switch, verification counts), as a
    /// gateway serving them one after another would. `cache_dir` holds compiled modules
    /// between runs (see `writ run --cache-dir`).
    pub fn run(&self, cache_dir: Option<PathBuf>) -> anyhow::Result<Vec<CaseRun>> {
        let mut config = writ_runtime::HostConfig::new(self.artifact.wasm.clone());
        config.cache_dir = cache_dir;
        config.plugin_config = serde_json::json!({ "artifact_sha256": self.artifact_sha256() })
            .to_string()
            .into_bytes();
        config.plugin_name = self.compiled.policy.name.clone();
        // One instant for the whole suite: a case's windows (a rate-limit minute, a
        // budget's month) cannot turn over between its requests or between cases.
        config.clock_nanos = Some(
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos() as u64),
        );
        config.vm_id = self.compiled.policy.name.clone();
        let host = writ_runtime::Host::new(config).context("starting the artifact")?;
        let mut vm = host.vm().context("starting a VM")?;
        let mut runs = Vec::new();
        for (i, case) in self.file.cases.iter().enumerate() {
            if i > 0 && !case.continues {
                host.reset_state();
                vm = host.vm().context("starting a VM")?;
            }
            let started = Instant::now();
            let outcome = run_case(&mut vm, case);
            let mismatches = expect::check(&case.expect, &outcome);
            runs.push(CaseRun {
                name: case.name.clone(),
                line: self.file.lines.get(i).copied().unwrap_or(0),
                seconds: started.elapsed().as_secs_f64(),
                outcome,
                mismatches,
            });
        }
        Ok(runs)
    }

    /// Rule indices a case shows firing, and those it shows not firing. A rule fired only
    /// if the case names it (an exact `fired` list speaks for every enforce-mode rule, an
    /// exact `monitored` list for every monitor-mode one) **and** the artifact's own audit
    /// record for the case lists it: naming a clause that two rules cite credits only the
    /// one that acted, and a response rule under a denied request is credited with nothing.
    pub fn asserted_rules(&self, case: &Case, outcome: &Outcome) -> (Vec<usize>, Vec<usize>) {
        let policy = &self.compiled.policy;
        let mut fired = Vec::new();
        let mut not_fired = Vec::new();
        let acted = |id: &str| outcome.fired.iter().any(|f| f.id == id);
        for (i, (rule, id)) in policy.rules.iter().zip(policy.rule_ids()).enumerate() {
            let ordinal = expect::ordinal_of_id(&id);
            let monitor = rule.enforcement == ir::Enforcement::Monitor
                || policy.enforcement == ir::Enforcement::Monitor;
            let list = if monitor {
                &case.expect.monitored
            } else {
                &case.expect.fired
            };
            let Some(list) = list else { continue };
            let named = list
                .iter()
                .any(|r| expect::names(r, &rule.clause, &rule.title, ordinal));
            match (named, acted(&id)) {
                (true, true) => fired.push(i),
                (false, false) => not_fired.push(i),
                // Named but silent, or acting unnamed: the case failed; it shows nothing.
                _ => {}
            }
        }
        // The kill switch, when it cites a clause, is asserted like an enforce-mode rule.
        if let (Some(clause), Some(list)) = (
            policy.kill_switch.as_ref().and_then(|k| k.clause.as_ref()),
            &case.expect.fired,
        ) {
            let i = policy.rules.len();
            let named = list
                .iter()
                .any(|r| expect::names(r, clause, KILL_SWITCH_TITLE, 1));
            match (named, acted(ir::KILL_SWITCH_RULE_ID)) {
                (true, true) => fired.push(i),
                (false, false) => not_fired.push(i),
                _ => {}
            }
        }
        (fired, not_fired)
    }
}

/// One case's result.
#[derive(Debug, Clone)]
pub struct CaseRun {
    pub name: String,
    /// 1-based line of the case in its test file (0 if unknown).
    pub line: usize,
    pub seconds: f64,
    pub outcome: Outcome,
    pub mismatches: Vec<Mismatch>,
}

impl CaseRun {
    /// The readable expected-versus-actual diff of a failed case.
    pub fn diff(&self) -> Option<String> {
        if self.mismatches.is_empty() {
            return None;
        }
        let mut out = String::new();
        for m in &self.mismatches {
            out.push_str(&format!(
                "  {}:\n    - expected: {}\n    + actual:   {}\n",
                m.what,
                m.expected,
                m.actual.replace('\n', "\n                ")
            ));
        }
        Some(out)
    }

    /// The case as a JUnit result of `suite`.
    pub fn junit(&self, suite: &str) -> CaseResult {
        CaseResult {
            suite: suite.to_string(),
            name: self.name.clone(),
            seconds: self.seconds,
            failure: self.diff(),
        }
    }
}

/// Sends one case through the VM and gathers everything observable.
fn run_case(vm: &mut writ_runtime::Vm, case: &Case) -> Outcome {
    let spec = case_request(case);
    let reply = case.reply.clone().unwrap_or_else(Reply::default_chat);
    // `repeat`: the requests before the last are sent and answered, not checked.
    for _ in 1..case.repeat.unwrap_or(1) {
        vm.http_request(&spec, |_| upstream_reply(&reply));
    }
    let exchange = vm.http_request(&spec, |_| upstream_reply(&reply));
    outcome_of(&exchange)
}

/// The request a case sends, as the host receives it: lower-case header names, a JSON
/// content type for a body, and a stable `x-request-id` unless the case sets one.
pub fn case_request(case: &Case) -> writ_runtime::RequestSpec {
    let mut headers: Vec<(String, String)> = case
        .request
        .headers
        .iter()
        .map(|(k, v)| (k.to_ascii_lowercase(), v.clone()))
        .collect();
    let body = case.request.body_bytes();
    if !body.is_empty() && !headers.iter().any(|(k, _)| k == "content-type") {
        headers.push(("content-type".into(), "application/json".into()));
    }
    if !headers.iter().any(|(k, _)| k == "x-request-id") {
        headers.push((
            "x-request-id".into(),
            format!("writ-test-{:08x}", fnv(&case.name)),
        ));
    }
    let mut spec =
        writ_runtime::RequestSpec::new(&case.request.method, &case.request.path, &[], &body);
    spec.headers = headers;
    spec
}

/// A stable per-case request id, so audit records of two runs line up.
fn fnv(s: &str) -> u32 {
    s.bytes().fold(0x811c_9dc5u32, |h, b| {
        (h ^ u32::from(b)).wrapping_mul(0x0100_0193)
    })
}

/// The upstream's answer to a case, as the host delivers it (one chunk per SSE event).
pub fn upstream_reply(reply: &Reply) -> writ_runtime::UpstreamReply {
    let mut headers: Vec<(String, String)> = reply
        .headers
        .iter()
        .map(|(k, v)| (k.to_ascii_lowercase(), v.clone()))
        .collect();
    if !headers.iter().any(|(k, _)| k == "content-type") {
        let ct = if reply.is_stream() {
            "text/event-stream"
        } else {
            "application/json"
        };
        headers.push(("content-type".into(), ct.into()));
    }
    writ_runtime::UpstreamReply {
        status: reply.status,
        headers,
        body: reply.chunks(),
    }
}

/// Maps the host's record of an exchange to what expectations look at; which rules fired
/// comes from the artifact's own audit record (`writ-audit <json>` in its log).
pub fn outcome_of(exchange: &writ_runtime::Exchange) -> Outcome {
    let upstream = exchange.upstream_request.as_ref().map(|u| SeenRequest {
        path: u.header(":path").unwrap_or_default().to_string(),
        headers: u.headers.clone(),
        body: u.body.clone(),
    });
    let audit = exchange
        .logs
        .iter()
        .filter_map(|l| writ_plugin::audit::parse_log_line(&l.message))
        .find(|v| {
            matches!(
                v.get("event").and_then(|e| e.as_str()),
                Some("request" | "kill_switch")
            )
        });
    let fired = audit
        .as_ref()
        .and_then(|a| a.get("rules"))
        .and_then(|r| r.as_array())
        .map(|rules| {
            rules
                .iter()
                .map(|r| FiredRule {
                    id: str_of(r, "id"),
                    clause: str_of(r, "clause"),
                    title: str_of(r, "title"),
                    mode: str_of(r, "mode"),
                })
                .collect()
        })
        .unwrap_or_default();
    let escalated = audit
        .as_ref()
        .and_then(|a| a.pointer("/escalation/queue"))
        .and_then(|q| q.as_str())
        .map(str::to_string);
    Outcome {
        upstream,
        client_status: exchange.client_response.status,
        client_headers: exchange.client_response.headers.clone(),
        client_body: exchange.client_response.body_bytes(),
        fired,
        escalated,
    }
}

fn str_of(v: &serde_json::Value, key: &str) -> String {
    v.get(key)
        .and_then(|s| s.as_str())
        .unwrap_or_default()
        .to_string()
}
