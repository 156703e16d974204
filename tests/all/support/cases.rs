//! Host-independent end-to-end cases: a request, what the upstream answers, and what the
//! client and the upstream must see. Any gateway (real Envoy, `writ serve` on wasmtime)
//! implements [`Gateway`] and runs the same table with [`run_cases`], so both hosts are held
//! to the same outcomes.

use std::net::SocketAddr;
use std::time::Duration;

use super::envoy::EnvoyProcess;
use super::http::{Request, Response, send};
use super::upstream::{Reply, Upstream};

/// A gateway under test, already running in front of an [`Upstream`].
pub trait Gateway {
    /// Shown in failure messages, e.g. `envoy` or `writ serve`.
    fn name(&self) -> &str;
    /// Where clients send requests.
    fn addr(&self) -> SocketAddr;
    /// Everything the gateway logged so far (where a `monitor` rule's "would have" goes).
    fn log(&self) -> String;
}

impl Gateway for EnvoyProcess {
    fn name(&self) -> &str {
        "envoy"
    }
    fn addr(&self) -> SocketAddr {
        self.listener()
    }
    fn log(&self) -> String {
        EnvoyProcess::log(self)
    }
}

/// What must happen to a request.
#[derive(Debug, Clone, PartialEq)]
pub enum Expect {
    /// The upstream receives the request with its body byte for byte, and the client gets
    /// the upstream's reply.
    Forwarded,
    /// The gateway answers `status` with an OpenAI-style error
    /// `{"error":{"message","type","code"}}` (with `code` if given) and the upstream never
    /// sees the request.
    Denied { status: u16, code: Option<String> },
}

/// One end-to-end case.
#[derive(Debug, Clone)]
pub struct Case {
    pub name: String,
    pub request: Request,
    pub upstream_reply: Reply,
    pub expect: Expect,
    /// Substrings (case-insensitive) the gateway's log must contain afterwards.
    pub log_contains: Vec<String>,
}

impl Case {
    pub fn new(name: &str, request: Request, expect: Expect) -> Case {
        Case {
            name: name.into(),
            request,
            upstream_reply: Reply::chat("ok"),
            expect,
            log_contains: Vec::new(),
        }
    }

    /// Requires `needle` in the gateway's log (builder style).
    pub fn log(mut self, needle: &str) -> Case {
        self.log_contains.push(needle.into());
        self
    }

    pub fn reply(mut self, reply: Reply) -> Case {
        self.upstream_reply = reply;
        self
    }
}

/// What a case produced, for assertions beyond [`Expect`].
#[derive(Debug)]
pub struct Outcome {
    pub response: Response,
    /// Requests the upstream received during this case.
    pub upstream_received: Vec<Request>,
}

/// How long a single request through a gateway may take.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(20);

/// Runs one case; on failure returns a description naming the gateway and the case.
pub fn run_case(gw: &dyn Gateway, upstream: &Upstream, case: &Case) -> Result<Outcome, String> {
    let ctx = |msg: String| format!("[{} / {}] {msg}", gw.name(), case.name);
    upstream.set_reply(case.upstream_reply.clone());
    let before = upstream.received().len();
    let response = send(gw.addr(), &case.request, REQUEST_TIMEOUT)
        .map_err(|e| ctx(format!("request failed: {e}")))?;
    let upstream_received: Vec<Request> = upstream.received().split_off(before);
    let got = |what: &str| {
        ctx(format!(
            "{what}\n  status {}\n  body {}\n  upstream received {} request(s)",
            response.status,
            response.body_str(),
            upstream_received.len()
        ))
    };
    match &case.expect {
        Expect::Forwarded => {
            let [forwarded] = upstream_received.as_slice() else {
                return Err(got("expected exactly one request at the upstream"));
            };
            if forwarded.body != case.request.body {
                return Err(got(&format!(
                    "upstream body differs:\n  sent     {}\n  received {}",
                    String::from_utf8_lossy(&case.request.body),
                    String::from_utf8_lossy(&forwarded.body)
                )));
            }
            if forwarded.method != case.request.method || forwarded.path != case.request.path {
                return Err(got("upstream got a different method or path"));
            }
            for (name, value) in &case.request.headers {
                if forwarded.header_value(name) != Some(value.as_str()) {
                    return Err(got(&format!("upstream lost header `{name}: {value}`")));
                }
            }
            let reply = super::upstream::echo(case.upstream_reply.clone(), &forwarded.body);
            let (status, body) = match &reply {
                Reply::Json { status, body } => (*status, body.clone()),
                Reply::Sse { events } => (
                    200,
                    events
                        .iter()
                        .map(|(_, d)| format!("data: {d}\n\n"))
                        .collect(),
                ),
                // Tables of cases use replies with a known status and body.
                Reply::Echo { .. } | Reply::EchoApi { .. } | Reply::Raw { .. } => {
                    (0, String::new())
                }
            };
            if response.status != status || response.body != body.as_bytes() {
                return Err(got("client did not get the upstream's reply unchanged"));
            }
        }
        Expect::Denied { status, code } => {
            if !upstream_received.is_empty() {
                return Err(got("a denied request reached the upstream"));
            }
            if response.status != *status {
                return Err(got(&format!("expected status {status}")));
            }
            let json = response.json();
            let error = &json["error"];
            if !(error["message"].is_string()
                && error["type"].is_string()
                && !error["code"].is_null())
            {
                return Err(got(
                    "expected an OpenAI-style {\"error\":{message,type,code}} body",
                ));
            }
            if let Some(code) = code
                && error["code"].as_str() != Some(code.as_str())
            {
                return Err(got(&format!("expected error code `{code}`")));
            }
        }
    }
    for needle in &case.log_contains {
        if !wait_for_log(gw, needle, Duration::from_secs(5)) {
            return Err(got(&format!("log lacks `{needle}`")));
        }
    }
    Ok(Outcome {
        response,
        upstream_received,
    })
}

/// Runs every case in order, collecting all failures rather than stopping at the first.
pub fn run_cases(gw: &dyn Gateway, upstream: &Upstream, cases: &[Case]) -> Result<(), String> {
    let failures: Vec<String> = cases
        .iter()
        .filter_map(|c| run_case(gw, upstream, c).err())
        .collect();
    if failures.is_empty() {
        Ok(())
    } else {
        Err(failures.join("\n\n"))
    }
}

fn wait_for_log(gw: &dyn Gateway, needle: &str, timeout: Duration) -> bool {
    let needle = needle.to_lowercase();
    let deadline = std::time::Instant::now() + timeout;
    loop {
        if gw.log().to_lowercase().contains(&needle) {
            return true;
        }
        if std::time::Instant::now() > deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A policy with a workflow, a model allowlist and a rule in monitor mode.
pub const E2E_POLICY: &str = r#"# End-to-end test policy: an allowlist that denies, and a rule that only watches.
policy "e2e-gateway" version "0.1.0" {
  owner       "security@example.com"
  implements  "ai-policy.md"
  currency    EUR
}

workflow "e2e" {
  match header "x-workflow" == "e2e"
  oversight HIC sample 2%
  assume verification_rate <= 2%
  identify team by header "x-team", user by header "x-user"
}

rule AIP-3.1 "Only approved models" {
  on request
  when model not in ["gpt-4o-mini", "gpt-4o"]
  then deny 403 "Model not approved for this workflow."
}

rule AIP-4.4 "At most 4000 output tokens" {
  on request
  when max_tokens > 4000
  then deny 400 "Ask for at most 4000 output tokens."
  enforcement monitor
}
"#;

/// Builds [`E2E_POLICY`] with the real `writ build` into `dir` and returns the artifact;
/// panics with the CLI's output if it fails.
pub fn build_e2e_policy(dir: &std::path::Path) -> std::path::PathBuf {
    let source = dir.join("e2e-gateway.policy");
    let paper = super::workspace_root().join("policies/ai-policy.md");
    if let Err(e) = std::fs::write(&source, E2E_POLICY)
        .and_then(|()| std::fs::copy(&paper, dir.join("ai-policy.md")).map(drop))
    {
        panic!("cannot prepare the policy in {}: {e}", dir.display());
    }
    let out = dir.join("out");
    let build = super::process::run_bounded(
        std::process::Command::new(super::writ_bin())
            .arg("build")
            .arg(&source)
            .arg("--out")
            .arg(&out),
        Duration::from_secs(120),
    );
    let build = match build {
        Ok(b) => b,
        Err(e) => panic!("writ build: {e}"),
    };
    let stderr = String::from_utf8_lossy(&build.stderr);
    assert!(
        build.status.success(),
        "writ build failed ({}):\n{stderr}",
        build.status
    );
    let artifact = out.join("e2e-gateway-0.1.0.wasm");
    assert!(
        artifact.is_file(),
        "writ build wrote no {}",
        artifact.display()
    );
    artifact
}

/// The cases every gateway must pass with [`E2E_POLICY`]: the allowlist forwards and denies,
/// the monitor rule only logs, a streamed reply comes back byte for byte, and bodies the
/// engine cannot read are refused (fail closed) rather than forwarded.
pub fn e2e_cases() -> Vec<Case> {
    let chat = |model: &str, extra: &str| {
        format!(r#"{{"model":"{model}","messages":[{{"role":"user","content":"hi"}}]{extra}}}"#)
    };
    let req = |body: String| {
        Request::post_json("/v1/chat/completions", &body)
            .header("x-workflow", "e2e")
            .header("x-team", "support")
    };
    let sse: Vec<(Duration, String)> = [
        r#"{"choices":[{"delta":{"content":"Hel"}}]}"#,
        r#"{"choices":[{"delta":{"content":"lo"}}]}"#,
        "[DONE]",
    ]
    .iter()
    .map(|e| (Duration::from_millis(20), e.to_string()))
    .collect();
    vec![
        Case::new(
            "approved model",
            req(chat("gpt-4o-mini", "")),
            Expect::Forwarded,
        ),
        Case::new(
            "model outside the allowlist",
            req(chat("gpt-3.5-turbo", "")),
            Expect::Denied {
                status: 403,
                code: Some("AIP-3.1".into()),
            },
        ),
        Case::new(
            "monitor rule lets it through",
            req(chat("gpt-4o", r#","max_tokens":8000"#)),
            Expect::Forwarded,
        )
        .log("would have denied 400")
        .log("AIP-4.4"),
        Case::new(
            "streamed reply passes unchanged",
            req(chat("gpt-4o-mini", r#","stream":true"#)),
            Expect::Forwarded,
        )
        .reply(Reply::Sse { events: sse }),
        Case::new(
            "malformed JSON fails closed",
            req(r#"{"model":"gpt-4o-mini","messages":["#.into()),
            Expect::Denied {
                status: 400,
                code: None,
            },
        ),
        Case::new(
            "a body that is not JSON fails closed",
            Request {
                headers: vec![
                    ("content-type".into(), "text/plain".into()),
                    ("x-workflow".into(), "e2e".into()),
                ],
                ..req("model=gpt-4o-mini".into())
            },
            Expect::Denied {
                status: 415,
                code: None,
            },
        ),
    ]
}
