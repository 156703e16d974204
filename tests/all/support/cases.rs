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
            if let Reply::Json { status, body } = &case.upstream_reply {
                if response.status != *status || response.body != body.as_bytes() {
                    return Err(got("client did not get the upstream's reply unchanged"));
                }
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
            if let Some(code) = code {
                if error["code"].as_str() != Some(code.as_str()) {
                    return Err(got(&format!("expected error code `{code}`")));
                }
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
