//! Issue 17, tool calls end to end in both hosts with `policies/support-assistant.policy`:
//! a loopback model that answers with tool calls, streamed (one argument character per
//! event) and whole. Unapproved tools are stripped from the request, an unapproved call is
//! refused, a refund over 100 EUR is held (`pending_approval`), approved at the approvals
//! endpoint with the kill switch's token, and released once on retry with its review id,
//! without calling the model again.

use std::time::Duration;

use serde_json::{Value, json};

use crate::support::cases::Gateway;
use crate::support::hosts::{
    HostKind, Options, WritGateway, assert_in_both_hosts, build_support_assistant,
};
use crate::support::http::{Request, send};
use crate::support::tempdir::TempDir;
use crate::support::upstream::{Reply, Upstream};

/// The operator token whose sha256 the bundled policy's kill switch holds.
const TOKEN: &str = "test";
const REFUND_ARGS: &str = r#"{"order": "A-1", "amount": 250}"#;

fn chat(stream: bool, tools: &[&str]) -> Request {
    let tools: Vec<Value> = tools
        .iter()
        .map(|t| json!({"type": "function", "function": {"name": t, "parameters": {"type": "object"}}}))
        .collect();
    let body = json!({"model": "gpt-4o-mini", "stream": stream, "tools": tools,
        "messages": [{"role": "user", "content": "Please refund order A-1"}]});
    Request::post_json("/v1/chat/completions", &body.to_string())
        .header("x-workflow", "support-assistant")
        .header("x-jwt-team", "billing")
}

/// A streamed tool call whose arguments arrive one character per event.
fn streamed_call(name: &str, args: &str) -> Reply {
    let mut events = vec![
        json!({"id": "c", "object": "chat.completion.chunk", "choices": [{"index": 0,
        "delta": {"role": "assistant", "tool_calls": [{"index": 0, "id": "call_7", "type": "function",
        "function": {"name": name, "arguments": ""}}]}}]}),
    ];
    for ch in args.chars() {
        events.push(
            json!({"id": "c", "object": "chat.completion.chunk", "choices": [{"index": 0,
            "delta": {"tool_calls": [{"index": 0, "function": {"arguments": ch.to_string()}}]}}]}),
        );
    }
    events.push(json!({"id": "c", "object": "chat.completion.chunk",
        "choices": [{"index": 0, "delta": {}, "finish_reason": "tool_calls"}],
        "usage": {"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15}}));
    let mut out: Vec<(Duration, String)> = events
        .into_iter()
        .map(|e| (Duration::ZERO, e.to_string()))
        .collect();
    out.push((Duration::ZERO, "[DONE]".into()));
    Reply::Sse { events: out }
}

fn whole_call(name: &str, args: &str) -> Reply {
    let body = json!({"id": "c", "object": "chat.completion", "model": "gpt-4o-mini",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": null,
        "tool_calls": [{"id": "call_1", "type": "function", "function": {"name": name, "arguments": args}}]},
        "finish_reason": "tool_calls"}],
        "usage": {"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15}});
    Reply::Json {
        status: 200,
        body: body.to_string(),
    }
}

/// The tool-call arguments a client reassembles from an SSE body, and its `[DONE]` count.
fn reassemble_args(body: &str) -> Result<(String, usize), String> {
    let (mut args, mut done) = (String::new(), 0);
    for event in body.split("\n\n").filter(|e| !e.trim().is_empty()) {
        let data = event
            .strip_prefix("data: ")
            .ok_or_else(|| format!("not an SSE data event: {event:?}"))?;
        if data == "[DONE]" {
            done += 1;
            continue;
        }
        let v: Value = serde_json::from_str(data).map_err(|e| format!("{e}: {data}"))?;
        if let Some(a) = v["choices"][0]["delta"]["tool_calls"][0]["function"]["arguments"].as_str()
        {
            args.push_str(a);
        }
    }
    Ok((args, done))
}

fn approve(gw: &WritGateway, token: &str, review_id: &str) -> Result<(u16, String), String> {
    let body =
        json!({"review_id": review_id, "decision": "approve", "by": "ana", "reason": "verified"});
    let req = Request::post_json("/writ/admin/approvals", &body.to_string())
        .header("authorization", &format!("Bearer {token}"));
    let res = send(gw.addr(), &req, Duration::from_secs(20)).map_err(|e| e.to_string())?;
    Ok((res.status, res.body_str()))
}

fn check_host(kind: HostKind, artifact: &std::path::Path) -> Result<(), String> {
    let upstream = Upstream::start(streamed_call("issue_refund", REFUND_ARGS));
    let gw = WritGateway::start(kind, artifact, upstream.addr(), &Options::default())?;
    let ctx = |msg: String| format!("[{}] {msg}", gw.name());
    let t = Duration::from_secs(20);

    // 1. A streamed refund over the limit: held, the client gets pending_approval.
    let req = chat(true, &["issue_refund", "delete_account"]);
    let res = send(gw.addr(), &req, t).map_err(|e| ctx(e.to_string()))?;
    if res.status != 202 {
        return Err(ctx(format!(
            "held: status {}: {}",
            res.status,
            res.body_str()
        )));
    }
    let pending = res.json();
    let review_id = pending["review_id"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    if pending["status"] != "pending_approval"
        || !review_id.starts_with("rev-")
        || pending["tool_calls"] != json!([{"id": "call_7", "name": "issue_refund"}])
        || pending["retry"]["header"] != "x-writ-review-id"
        // The arguments never reach the client; the review id is 20 hex digits of a
        // hash, which may hold "250" by chance, so it is cut out first.
        || res.body_str().replace(&review_id, "").contains("250")
    {
        return Err(ctx(format!("pending body: {pending}")));
    }
    // The model was not offered the unapproved tool.
    let seen = upstream.received();
    let up = String::from_utf8_lossy(&seen.first().ok_or_else(|| ctx("no upstream".into()))?.body)
        .to_string();
    if up.contains("delete_account") || !up.contains("issue_refund") {
        return Err(ctx(format!("upstream body: {up}")));
    }

    // 2. A retry before any decision: pending again, the model is not called.
    let retry = req.clone().header("x-writ-review-id", &review_id);
    let res = send(gw.addr(), &retry, t).map_err(|e| ctx(e.to_string()))?;
    if res.status != 202 || res.json()["review_id"] != review_id.as_str() {
        return Err(ctx(format!(
            "early retry: {} {}",
            res.status,
            res.body_str()
        )));
    }

    // 3. Approval: a wrong token is refused, the operator's is accepted.
    let (status, body) = approve(&gw, "wrong", &review_id).map_err(ctx)?;
    if status != 401 {
        return Err(ctx(format!("wrong token: {status} {body}")));
    }
    let (status, body) = approve(&gw, TOKEN, &review_id).map_err(ctx)?;
    if status != 200 || !body.contains("\"state\":\"approved\"") {
        return Err(ctx(format!("approval: {status} {body}")));
    }

    // 4. The retry gets the held stream, exactly as the model sent it, once.
    let res = send(gw.addr(), &retry, t).map_err(|e| ctx(e.to_string()))?;
    let (args, done) = reassemble_args(&res.body_str()).map_err(ctx)?;
    if res.status != 200
        || !res
            .header_value("content-type")
            .is_some_and(|c| c.starts_with("text/event-stream"))
        || args != REFUND_ARGS
        || done != 1
    {
        return Err(ctx(format!(
            "release: {} {:?} args {args:?} [DONE] x{done}",
            res.status,
            res.header_value("content-type")
        )));
    }
    let res = send(gw.addr(), &retry, t).map_err(|e| ctx(e.to_string()))?;
    if res.status != 410 {
        return Err(ctx(format!(
            "second release: {} {}",
            res.status,
            res.body_str()
        )));
    }
    if upstream.received().len() != 1 {
        return Err(ctx(format!(
            "the model was called {} times",
            upstream.received().len()
        )));
    }

    // 5. Whole replies: an unapproved call is refused, a small refund passes.
    upstream.set_reply(whole_call("delete_account", r#"{"account": "C-9"}"#));
    let res =
        send(gw.addr(), &chat(false, &["issue_refund"]), t).map_err(|e| ctx(e.to_string()))?;
    if res.status != 403 || !res.body_str().contains("AIP-9.1") || res.body_str().contains("C-9") {
        return Err(ctx(format!(
            "unapproved call: {} {}",
            res.status,
            res.body_str()
        )));
    }
    upstream.set_reply(whole_call(
        "issue_refund",
        r#"{"order": "A-2", "amount": 40}"#,
    ));
    let res =
        send(gw.addr(), &chat(false, &["issue_refund"]), t).map_err(|e| ctx(e.to_string()))?;
    let call = &res.json()["choices"][0]["message"]["tool_calls"][0]["function"];
    if res.status != 200 || call["name"] != "issue_refund" {
        return Err(ctx(format!(
            "small refund: {} {}",
            res.status,
            res.body_str()
        )));
    }

    // 6. A streamed approved call streams through.
    upstream.set_reply(streamed_call("lookup_order", r#"{"order": "A-4"}"#));
    let res = send(gw.addr(), &chat(true, &["lookup_order"]), t).map_err(|e| ctx(e.to_string()))?;
    let (args, done) = reassemble_args(&res.body_str()).map_err(ctx)?;
    if res.status != 200 || args != r#"{"order": "A-4"}"# || done != 1 {
        return Err(ctx(format!("streamed look-up: {} {args:?}", res.status)));
    }

    // 7. Audit: the hold, the release and the reviewer's decision each have a record.
    let records = gw.wait_audit("request", 7, Duration::from_secs(10));
    let outcomes: Vec<&str> = records
        .iter()
        .filter_map(|r| r["outcome"].as_str())
        .collect();
    for want in ["pending_approval", "released"] {
        if !outcomes.contains(&want) {
            return Err(ctx(format!("no `{want}` audit record: {outcomes:?}")));
        }
    }
    let held = records
        .iter()
        .find(|r| r["outcome"] == "pending_approval")
        .ok_or_else(|| ctx("no held record".into()))?;
    if !held["rules"].as_array().is_some_and(|rs| {
        rs.iter()
            .any(|r| r["clause"] == "AIP-9.2" && r["action"] == "hold")
    }) {
        return Err(ctx(format!("held record: {held}")));
    }
    let approvals = gw.wait_audit("approval", 2, Duration::from_secs(10));
    if !approvals.iter().any(|r| r["outcome"] == "approved")
        || !approvals.iter().any(|r| r["outcome"] == "unauthorized")
    {
        return Err(ctx(format!("approval records: {approvals:?}")));
    }
    Ok(())
}

#[test]
fn tool_calls_are_governed_held_and_released_in_both_hosts() {
    let dir = TempDir::new("tools-e2e");
    let artifact = build_support_assistant(dir.path());
    assert_in_both_hosts(&artifact, check_host);
}
