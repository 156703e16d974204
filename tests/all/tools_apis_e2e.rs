//! Issue 17 §1 for the Anthropic Messages and OpenAI Responses shapes, end to end in both
//! hosts (real Envoy and `writ serve`) with `policies/support-assistant.policy`, against
//! the API mocks of `support/api_mocks.rs`: each mock calls again the last tool the
//! request's history called, with the same arguments, as a `tool_use` block
//! (`input_json_delta` one character per event when streamed) or a `function_call` item
//! (`response.function_call_arguments.delta` one character per event).
//!
//! For each API, streamed and whole: an unapproved call (`delete_account`) is refused in
//! the API's error shape without its arguments; a refund over 100 EUR is held
//! (`pending_approval`), approved with the kill switch's token and released once on retry
//! with its review id, without calling the model again; an unapproved offered tool is
//! stripped from `tools`; an e-mail in an earlier call's arguments is tokenised before
//! the model and restored in the reply's call.

use std::time::Duration;

use serde_json::{Value, json};

use crate::support::api_mocks::{MockApi, reassemble};
use crate::support::cases::Gateway;
use crate::support::hosts::{
    HostKind, Options, WritGateway, assert_in_both_hosts, build_support_assistant,
};
use crate::support::http::{Request, Response, send};
use crate::support::tempdir::TempDir;
use crate::support::upstream::{Reply, Upstream};

/// The operator token whose sha256 the bundled policy's kill switch holds.
const TOKEN: &str = "test";
const EMAIL: &str = "jane.doe@example.com";
const T: Duration = Duration::from_secs(20);

/// A request of `api` offering `tools`, whose history holds an earlier call of `name`
/// with `args` and its result, so the mock calls `name` again with `args`.
fn request(api: MockApi, sse: bool, tools: &[&str], name: &str, args: &Value) -> Request {
    let (path, body) = match api {
        MockApi::Anthropic => {
            let tools: Vec<Value> = tools
                .iter()
                .map(|t| json!({"name": t, "description": "", "input_schema": {"type": "object"}}))
                .collect();
            (
                "/v1/messages",
                json!({"model": "gpt-4o-mini", "max_tokens": 100, "stream": sse, "tools": tools,
                "messages": [
                    {"role": "user", "content": "Please see to order A-1."},
                    {"role": "assistant", "content": [
                        {"type": "tool_use", "id": "toolu_prev", "name": name, "input": args}]},
                    {"role": "user", "content": [
                        {"type": "tool_result", "tool_use_id": "toolu_prev", "content": "Timed out; try again."}]}
                ]}),
            )
        }
        MockApi::Responses => {
            let tools: Vec<Value> = tools
                .iter()
                .map(|t| json!({"type": "function", "name": t, "parameters": {"type": "object"}}))
                .collect();
            (
                "/v1/responses",
                json!({"model": "gpt-4o-mini", "max_output_tokens": 100, "stream": sse, "tools": tools,
                "input": [
                    {"role": "user", "content": "Please see to order A-1."},
                    {"type": "function_call", "call_id": "call_prev", "name": name, "arguments": args.to_string()},
                    {"type": "function_call_output", "call_id": "call_prev", "output": "Timed out; try again."}
                ]}),
            )
        }
    };
    let mut req = Request::post_json(path, &body.to_string())
        .header("x-workflow", "support-assistant")
        .header("x-jwt-team", "billing");
    if api == MockApi::Anthropic {
        req = req.header("anthropic-version", "2023-06-01");
    }
    req
}

/// The reply's tool call as a client reads it: (name, arguments parsed).
fn reply_call(api: MockApi, sse: bool, res: &Response) -> Result<(String, Value), String> {
    let (name, args) = if sse {
        let body = res.body_str();
        let (_, args, _) = reassemble(api, &body)?;
        let name = match api {
            MockApi::Anthropic => "content_block_start",
            MockApi::Responses => "response.output_item.added",
        };
        let called = body
            .split("\n\n")
            .filter_map(|e| e.lines().nth(1)?.strip_prefix("data: "))
            .filter_map(|d| serde_json::from_str::<Value>(d).ok())
            .filter(|v| v["type"] == name)
            .find_map(|v| {
                let item = if api == MockApi::Anthropic {
                    &v["content_block"]
                } else {
                    &v["item"]
                };
                item["name"].as_str().map(str::to_string)
            });
        (called.unwrap_or_default(), args)
    } else {
        let v = res.json();
        match api {
            MockApi::Anthropic => (
                v["content"][1]["name"].as_str().unwrap_or_default().into(),
                v["content"][1]["input"].to_string(),
            ),
            MockApi::Responses => (
                v["output"][1]["name"].as_str().unwrap_or_default().into(),
                v["output"][1]["arguments"]
                    .as_str()
                    .unwrap_or_default()
                    .into(),
            ),
        }
    };
    let args = serde_json::from_str(&args).map_err(|e| format!("arguments {e}: {args:?}"))?;
    Ok((name, args))
}

fn approve(gw: &WritGateway, review_id: &str) -> Result<(u16, String), String> {
    let body =
        json!({"review_id": review_id, "decision": "approve", "by": "ana", "reason": "verified"});
    let req = Request::post_json("/writ/admin/approvals", &body.to_string())
        .header("authorization", &format!("Bearer {TOKEN}"));
    let res = send(gw.addr(), &req, T).map_err(|e| e.to_string())?;
    Ok((res.status, res.body_str()))
}

/// An unapproved call is refused in the API's error shape, without its arguments.
fn denied(gw: &WritGateway, api: MockApi, sse: bool) -> Result<(), String> {
    let req = request(
        api,
        sse,
        &["issue_refund", "lookup_order"],
        "delete_account",
        &json!({"account": "C-9"}),
    );
    let res = send(gw.addr(), &req, T).map_err(|e| e.to_string())?;
    let v = res.json();
    let shaped = match api {
        MockApi::Anthropic => v["type"] == "error" && v["error"]["type"] == "permission_error",
        MockApi::Responses => v["error"]["type"] == "policy_violation",
    };
    if res.status != 403 || v["error"]["code"] != "AIP-9.1" || !shaped {
        return Err(format!("denied call: {} {}", res.status, res.body_str()));
    }
    if res.body_str().contains("C-9") {
        return Err(format!("the deny shows the arguments: {}", res.body_str()));
    }
    Ok(())
}

/// A refund over the limit is held, approved, released once on retry.
fn held(gw: &WritGateway, upstream: &Upstream, api: MockApi, sse: bool) -> Result<(), String> {
    let req = request(
        api,
        sse,
        &["issue_refund"],
        "issue_refund",
        &json!({"order": "A-1", "amount": 250}),
    );
    let calls_before = upstream.received().len();
    let res = send(gw.addr(), &req, T).map_err(|e| e.to_string())?;
    let pending = res.json();
    let id = match api {
        MockApi::Anthropic => "toolu_echo",
        MockApi::Responses => "call_echo",
    };
    let review_id = pending["review_id"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    if res.status != 202
        || pending["status"] != "pending_approval"
        || !review_id.starts_with("rev-")
        || pending["rule"] != "AIP-9.2"
        || pending["tool_calls"] != json!([{"id": id, "name": "issue_refund"}])
        // The arguments never reach the client; the review id is 20 hex digits of a
        // hash, which may hold "250" by chance, so it is cut out first.
        || res.body_str().replace(&review_id, "").contains("250")
    {
        return Err(format!("held: {} {}", res.status, res.body_str()));
    }
    let retry = req.clone().header("x-writ-review-id", &review_id);
    let (status, body) = approve(gw, &review_id)?;
    if status != 200 || !body.contains("\"state\":\"approved\"") {
        return Err(format!("approval: {status} {body}"));
    }
    let res = send(gw.addr(), &retry, T).map_err(|e| e.to_string())?;
    let ct = res.header_value("content-type").unwrap_or_default();
    let want_ct = if sse {
        "text/event-stream"
    } else {
        "application/json"
    };
    if res.status != 200 || !ct.starts_with(want_ct) {
        return Err(format!("release: {} {ct} {}", res.status, res.body_str()));
    }
    let (name, args) = reply_call(api, sse, &res).map_err(|e| format!("release: {e}"))?;
    if name != "issue_refund" || args != json!({"order": "A-1", "amount": 250}) {
        return Err(format!("released call: {name} {args}"));
    }
    let res = send(gw.addr(), &retry, T).map_err(|e| e.to_string())?;
    if res.status != 410 {
        return Err(format!("second release: {} {}", res.status, res.body_str()));
    }
    let calls = upstream.received().len() - calls_before;
    if calls != 1 {
        return Err(format!("the model was called {calls} times for one hold"));
    }
    Ok(())
}

/// An unapproved offered tool is stripped; an e-mail in an earlier call's arguments is
/// tokenised before the model and restored in the reply's call.
fn stripped_and_restored(
    gw: &WritGateway,
    upstream: &Upstream,
    api: MockApi,
    sse: bool,
) -> Result<(), String> {
    let args = json!({"email": EMAIL, "order": "A-7"});
    let req = request(
        api,
        sse,
        &["lookup_order", "delete_account"],
        "lookup_order",
        &args,
    );
    let before = upstream.received().len();
    let res = send(gw.addr(), &req, T).map_err(|e| e.to_string())?;
    if res.status != 200 {
        return Err(format!("look-up: {} {}", res.status, res.body_str()));
    }
    let seen = upstream.received();
    let up = seen
        .get(before)
        .ok_or_else(|| "the upstream got nothing".to_string())?;
    let up_body: Value = serde_json::from_slice(&up.body).unwrap_or_default();
    let offered: Vec<&str> = up_body["tools"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|t| t["name"].as_str())
        .collect();
    if offered != ["lookup_order"] {
        return Err(format!("the model was offered {offered:?}"));
    }
    let up_text = String::from_utf8_lossy(&up.body);
    if up_text.contains(EMAIL) || up_text.contains("jane.doe") || !up_text.contains("EMAIL_") {
        return Err(format!("the e-mail was not tokenised upstream: {up_text}"));
    }
    let (name, got) = reply_call(api, sse, &res)?;
    if name != "lookup_order" || got != args {
        return Err(format!(
            "restored call: {name} {got}, wanted {args}\n{}",
            res.body_str()
        ));
    }
    Ok(())
}

fn check_host(kind: HostKind, artifact: &std::path::Path) -> Result<(), String> {
    let upstream = Upstream::start(Reply::chat("unused"));
    let gw = WritGateway::start(kind, artifact, upstream.addr(), &Options::default())?;
    let mut failures = Vec::new();
    let mut requests = 0;
    for api in [MockApi::Anthropic, MockApi::Responses] {
        for sse in [true, false] {
            upstream.set_reply(Reply::EchoApi {
                api,
                sse,
                output_tokens: 12,
            });
            let what = format!("[{}] {api:?} stream={sse}", gw.name());
            for (step, result) in [
                ("deny", denied(&gw, api, sse)),
                ("hold", held(&gw, &upstream, api, sse)),
                (
                    "strip+restore",
                    stripped_and_restored(&gw, &upstream, api, sse),
                ),
            ] {
                if let Err(e) = result {
                    failures.push(format!("{what} {step}: {e}"));
                }
            }
            requests += 5;
        }
    }
    // One audit record per request: the deny cites AIP-9.1, the holds and releases say so.
    let records = gw.wait_audit("request", requests, Duration::from_secs(10));
    let count = |outcome: &str| records.iter().filter(|r| r["outcome"] == outcome).count();
    let denials = records
        .iter()
        .filter(|r| {
            r["rules"].as_array().is_some_and(|rs| {
                rs.iter()
                    .any(|x| x["clause"] == "AIP-9.1" && x["action"] == "deny")
            })
        })
        .count();
    if records.len() != requests
        || count("pending_approval") != 4
        || count("released") != 4
        || denials != 4
    {
        let outcomes: Vec<&Value> = records.iter().map(|r| &r["outcome"]).collect();
        failures.push(format!(
            "[{}] {} audit records, outcomes {outcomes:?}, {denials} AIP-9.1 denials",
            gw.name(),
            records.len()
        ));
    }
    if failures.is_empty() {
        Ok(())
    } else {
        Err(failures.join("\n"))
    }
}

#[test]
fn anthropic_and_responses_tool_calls_are_governed_in_both_hosts() {
    let dir = TempDir::new("tools-apis-e2e");
    let artifact = build_support_assistant(dir.path());
    assert_in_both_hosts(&artifact, check_host);
}
