//! Issue 17, item 3, end to end in both hosts (real Envoy and `writ serve`): the Anthropic
//! Messages API (`/v1/messages`) and the OpenAI Responses API (`/v1/responses`) behind a
//! writ policy, against mocks of each API (`support/api_mocks.rs`) that echo the prompt
//! back as text and as tool-call arguments, one character per delta event when streamed.
//!
//! Each host must: keep personal data in the system prompt / instructions and the user
//! turn from the model (tokenised) and give it back in the reply — `text_delta` and
//! `input_json_delta`, `output_text.delta` and function-call argument deltas, `….done`
//! events and whole JSON replies; leave each API's body without OpenAI's
//! `stream_options`; settle spend from each API's own usage (Anthropic `message_start` /
//! `message_delta`, Responses `response.completed` or the JSON `usage`); apply the model
//! allowlist, the output-limit rule under each API's field name, secret scanning of the
//! system prompt, the budget and the kill switch, answering in each API's error shape.

use std::time::Duration;

use serde_json::{Value, json};

use crate::support::api_mocks::{INPUT_TOKENS, MockApi, echoed_text, reassemble};
use crate::support::cases::Gateway;
use crate::support::hosts::{HostKind, Options, WritGateway};
use crate::support::http::{Request, Response, send};
use crate::support::tempdir::TempDir;
use crate::support::upstream::{Reply, Upstream};

const POLICY: &str = r#"# Agents speaking the Anthropic Messages API and the OpenAI Responses API.
policy "apis-e2e" version "0.1.0" {
  owner       "security@example.com"
  implements  "ai-policy.md"
  currency    EUR
}

workflow "agents" {
  match header "x-workflow" == "agents"
  oversight HIC sample 2%
  assume verification_rate <= 2%
  identify team by header "x-team", user by header "x-user"
}

price "claude-sonnet-4-5" input 3.00 EUR output 15.00 EUR per 1M tokens
price "gpt-4o" input 2.50 EUR output 10.00 EUR per 1M tokens

rule AIP-2.1 "Customer personal data is pseudonymised" {
  on request
  when prompt has pii(email, phone)
  then tokenise
}

rule AIP-2.4 "No credentials in prompts" {
  on request
  when prompt has secret
  then deny 400 "Remove credentials from your request."
}

rule AIP-3.1 "Only approved models" {
  on request
  when model not in ["claude-sonnet-4-5", "gpt-4o"]
  then deny 403 "Model not approved for this workflow."
}

rule AIP-4.2 "Monthly budget per team" {
  on request
  when spend(team, month) > 1 EUR
  then deny 429 "Monthly AI budget reached for your team."
}

rule AIP-4.4 "At most 4000 output tokens" {
  on request
  when max_tokens > 4000
  then deny 400 "Ask for at most 4000 output tokens."
}

kill_switch AIP-6.1 {
  admin path "/writ/admin/kill-switch"
  token sha256 "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"
}
"#;

const EMAIL: &str = "jane.doe@example.com";
const PHONE: &str = "+44 20 7946 0958";
const SYSTEM: &str = "You answer jane.doe@example.com politely.";
const USER: &str = "Call me on +44 20 7946 0958 about order A1.";
const T: Duration = Duration::from_secs(20);

fn path(api: MockApi) -> &'static str {
    match api {
        MockApi::Anthropic => "/v1/messages",
        MockApi::Responses => "/v1/responses",
    }
}

fn model(api: MockApi) -> &'static str {
    match api {
        MockApi::Anthropic => "claude-sonnet-4-5",
        MockApi::Responses => "gpt-4o",
    }
}

/// A request of `api` with `system` as its system prompt / instructions and `user` as
/// the user turn, and `extra` fields merged in.
fn request(api: MockApi, team: &str, system: &str, user: &str, extra: Value) -> Request {
    let mut body = match api {
        MockApi::Anthropic => json!({"model": model(api), "max_tokens": 100,
            "system": [{"type": "text", "text": system}],
            "messages": [{"role": "user", "content": [{"type": "text", "text": user}]}]}),
        MockApi::Responses => json!({"model": model(api), "max_output_tokens": 100,
            "instructions": system,
            "input": [{"role": "user", "content": [{"type": "input_text", "text": user}]}]}),
    };
    if let (Some(b), Some(e)) = (body.as_object_mut(), extra.as_object()) {
        for (k, v) in e {
            b.insert(k.clone(), v.clone());
        }
    }
    let mut req = Request::post_json(path(api), &body.to_string())
        .header("x-workflow", "agents")
        .header("x-team", team)
        .header("x-user", "agent-7");
    if api == MockApi::Anthropic {
        req = req.header("anthropic-version", "2023-06-01");
    }
    req
}

/// The cost in micro-EUR of the mock's usage at the policy's price for `api`'s model,
/// rounded up once, as the engine settles it.
fn cost_micros(api: MockApi, output_tokens: u64) -> i64 {
    let (input, output) = match api {
        MockApi::Anthropic => (3_000_000u64, 15_000_000u64),
        MockApi::Responses => (2_500_000, 10_000_000),
    };
    let total = INPUT_TOKENS * input + output_tokens * output;
    total.div_ceil(1_000_000) as i64
}

/// Checks a local error reply: status, and the body in `api`'s own shape.
fn expect_error(api: MockApi, res: &Response, status: u16, code: &str) -> Result<(), String> {
    let v = res.json();
    let ok = res.status == status
        && match api {
            MockApi::Anthropic => {
                let kind = match status {
                    400 => "invalid_request_error",
                    403 => "permission_error",
                    429 => "rate_limit_error",
                    _ => "api_error",
                };
                v["type"] == "error"
                    && v["error"]["type"] == kind
                    && v["error"]["code"] == code
                    && v["error"]["message"].is_string()
            }
            MockApi::Responses => {
                v["error"]["code"] == code
                    && v["error"]["type"].is_string()
                    && v["error"]["message"].is_string()
                    && v.get("type").is_none()
            }
        };
    if ok {
        Ok(())
    } else {
        Err(format!(
            "{api:?}: wanted {status} `{code}` in the API's error shape, got {}: {}",
            res.status,
            res.body_str()
        ))
    }
}

/// The one `request` audit record of `team`, once logged.
fn record_of(gw: &WritGateway, team: &str) -> Option<Value> {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let found = gw
            .audit_records()
            .into_iter()
            .find(|r| r["event"] == "request" && r["team"] == team);
        if found.is_some() || std::time::Instant::now() > deadline {
            return found;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Tokenise and restore, usage settlement, no `stream_options`: one round trip.
fn round_trip(
    gw: &WritGateway,
    upstream: &Upstream,
    api: MockApi,
    sse: bool,
) -> Result<(), String> {
    let output_tokens = 40;
    upstream.set_reply(Reply::EchoApi {
        api,
        sse,
        output_tokens,
    });
    let team = format!("rt-{api:?}-{sse}");
    let before = upstream.received().len();
    let req = request(api, &team, SYSTEM, USER, json!({"stream": sse}));
    let res = send(gw.addr(), &req, T).map_err(|e| e.to_string())?;
    let what = format!("{api:?} stream={sse}");
    if res.status != 200 {
        return Err(format!("{what}: {} {}", res.status, res.body_str()));
    }
    let seen = upstream.received();
    let up = seen
        .get(before)
        .ok_or_else(|| format!("{what}: the upstream got nothing"))?;
    let up_text = crate::pii_e2e::everything(up);
    for value in [EMAIL, PHONE, "jane.doe", "7946"] {
        if up_text.contains(value) {
            return Err(format!("{what}: the upstream saw `{value}`:\n{up_text}"));
        }
    }
    for tag in ["EMAIL", "PHONE"] {
        if !up_text.contains(tag) {
            return Err(format!("{what}: no {tag} placeholder upstream:\n{up_text}"));
        }
    }
    if String::from_utf8_lossy(&up.body).contains("stream_options") {
        return Err(format!("{what}: `stream_options` was added to the body"));
    }
    let want = format!("{SYSTEM} | {USER}");
    let want_args = json!({ "text": want }).to_string();
    // What the client got back, restored.
    let (text, args, done) = if sse {
        let ct = res.header_value("content-type").unwrap_or_default();
        if !ct.starts_with("text/event-stream") {
            return Err(format!("{what}: content-type {ct}"));
        }
        reassemble(api, &res.body_str()).map_err(|e| format!("{what}: {e}"))?
    } else {
        let v = res.json();
        match api {
            MockApi::Anthropic => (
                v["content"][0]["text"].as_str().unwrap_or_default().into(),
                v["content"][1]["input"].to_string(),
                vec![],
            ),
            MockApi::Responses => (
                v["output"][0]["content"][0]["text"]
                    .as_str()
                    .unwrap_or_default()
                    .into(),
                v["output"][1]["arguments"]
                    .as_str()
                    .unwrap_or_default()
                    .into(),
                vec![],
            ),
        }
    };
    let args: Value =
        serde_json::from_str(&args).map_err(|e| format!("{what}: args {e}: {args}"))?;
    if text != want || args["text"] != want.as_str() {
        return Err(format!(
            "{what}: reassembled\n  text {text:?}\n  args {args}\nwanted {want:?}\n{}",
            res.body_str()
        ));
    }
    if sse && api == MockApi::Responses && done != [want.clone(), want_args] {
        return Err(format!("{what}: the done events carry {done:?}"));
    }
    // Settled from the API's own usage, not estimated.
    let rec = record_of(gw, &team).ok_or_else(|| format!("{what}: no audit record"))?;
    let want_tokens = json!({"prompt": INPUT_TOKENS, "completion": output_tokens});
    if rec["tokens"]["prompt"] != want_tokens["prompt"]
        || rec["tokens"]["completion"] != want_tokens["completion"]
        || rec["cost_estimated"] == true
        || rec["cost_micros"] != cost_micros(api, output_tokens)
        || rec["pii"]["email"] != 1
        || rec["pii"]["phone"] != 1
    {
        return Err(format!("{what}: audit record {rec}"));
    }
    Ok(())
}

/// Allowlist, output limit under each API's name, secrets in the system prompt: local
/// answers in the API's shape, nothing forwarded.
fn denials(gw: &WritGateway, upstream: &Upstream, api: MockApi) -> Result<(), String> {
    let before = upstream.received().len();
    let send = |req: &Request| send(gw.addr(), req, T).map_err(|e| e.to_string());
    let bad_model = request(api, "d", "hi", "hi", json!({"model": "claude-opus-0"}));
    expect_error(api, &send(&bad_model)?, 403, "AIP-3.1")?;
    let limit = match api {
        MockApi::Anthropic => json!({"max_tokens": 5000}),
        MockApi::Responses => json!({"max_output_tokens": 5000}),
    };
    expect_error(
        api,
        &send(&request(api, "d", "hi", "hi", limit))?,
        400,
        "AIP-4.4",
    )?;
    let secret = request(api, "d", "Use key AKIAIOSFODNN7EXAMPLE.", "hi", json!({}));
    let res = send(&secret)?;
    expect_error(api, &res, 400, "AIP-2.4")?;
    if res.body_str().contains("AKIAIOSFODNN7EXAMPLE") {
        return Err(format!("{api:?}: the deny echoes the secret"));
    }
    if upstream.received().len() != before {
        return Err(format!("{api:?}: a denied request reached the upstream"));
    }
    // The other API's limit field is not this API's limit: forwarded.
    upstream.set_reply(Reply::EchoApi {
        api,
        sse: false,
        output_tokens: 1,
    });
    let other = match api {
        MockApi::Anthropic => json!({"max_output_tokens": 5000}),
        MockApi::Responses => json!({"max_tokens": 5000}),
    };
    let res = send(&request(api, "d", "hi", "hi", other))?;
    if res.status != 200 {
        return Err(format!(
            "{api:?}: another API's limit field was read: {} {}",
            res.status,
            res.body_str()
        ));
    }
    Ok(())
}

/// A reply whose usage passes the budget settles it; the next request is refused with 429
/// in the API's shape.
fn budget(gw: &WritGateway, upstream: &Upstream, api: MockApi, sse: bool) -> Result<(), String> {
    // 110 000 output tokens cost 1.65 EUR (Anthropic price) or 1.1 EUR (gpt-4o); cap 1 EUR.
    upstream.set_reply(Reply::EchoApi {
        api,
        sse,
        output_tokens: 110_000,
    });
    let team = format!("budget-{api:?}");
    let res = send(
        gw.addr(),
        &request(api, &team, "hi", "hi", json!({"stream": sse})),
        T,
    )
    .map_err(|e| e.to_string())?;
    if res.status != 200 {
        return Err(format!("{api:?} budget: {} {}", res.status, res.body_str()));
    }
    let rec = record_of(gw, &team).ok_or_else(|| format!("{api:?}: no audit record"))?;
    if rec["cost_micros"] != cost_micros(api, 110_000) {
        return Err(format!("{api:?} budget: settled {rec}"));
    }
    let res = send(gw.addr(), &request(api, &team, "hi", "hi", json!({})), T)
        .map_err(|e| e.to_string())?;
    expect_error(api, &res, 429, "AIP-4.2")
}

fn check_host(kind: HostKind, artifact: &std::path::Path) -> Result<(), String> {
    let upstream = Upstream::start(Reply::chat("unused"));
    let gw = WritGateway::start(kind, artifact, upstream.addr(), &Options::default())?;
    let ctx = |msg: String| format!("[{}] {msg}", gw.name());
    let mut failures = Vec::new();
    for api in [MockApi::Anthropic, MockApi::Responses] {
        for sse in [true, false] {
            if let Err(e) = round_trip(&gw, &upstream, api, sse) {
                failures.push(ctx(e));
            }
        }
        if let Err(e) = denials(&gw, &upstream, api) {
            failures.push(ctx(e));
        }
        if let Err(e) = budget(&gw, &upstream, api, api == MockApi::Anthropic) {
            failures.push(ctx(e));
        }
    }
    // The kill switch, last: every later request of the workflow is refused.
    let stop = Request::post_json(
        "/writ/admin/kill-switch",
        r#"{"workflow": "agents", "action": "stop", "reason": "test", "by": "ops@example.com"}"#,
    )
    .header("authorization", "Bearer test");
    let res = send(gw.addr(), &stop, T).map_err(|e| ctx(e.to_string()))?;
    if res.status != 200 {
        failures.push(ctx(format!("stop: {} {}", res.status, res.body_str())));
    }
    for api in [MockApi::Anthropic, MockApi::Responses] {
        let res = send(gw.addr(), &request(api, "k", "hi", "hi", json!({})), T)
            .map_err(|e| ctx(e.to_string()))?;
        if let Err(e) = expect_error(api, &res, 503, "kill_switch") {
            failures.push(ctx(e));
        }
    }
    if failures.is_empty() {
        Ok(())
    } else {
        Err(failures.join("\n"))
    }
}

#[test]
fn anthropic_and_responses_apis_are_governed_in_both_hosts() {
    let dir = TempDir::new("apis-e2e");
    let source = dir.path().join("apis-e2e.policy");
    let paper = crate::support::workspace_root().join("policies/ai-policy.md");
    std::fs::write(&source, POLICY).unwrap();
    std::fs::copy(paper, dir.path().join("ai-policy.md")).unwrap();
    let artifact = crate::support::hosts::build_policy(&source, &dir.path().join("out"));
    crate::support::hosts::assert_in_both_hosts(&artifact, check_host);
}

/// The mock itself: what it echoes is the system prompt and the last user turn.
#[test]
fn the_mocks_echo_system_and_user_text() {
    let a = json!({"system": "s", "messages": [{"role": "user", "content": [{"type": "text", "text": "u"}]}]});
    assert_eq!(echoed_text(MockApi::Anthropic, &a), "s | u");
    let r = json!({"instructions": "s", "input": "u"});
    assert_eq!(echoed_text(MockApi::Responses, &r), "s | u");
}
