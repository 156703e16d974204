//! Issue 17 §2, MCP over Streamable HTTP end to end in both hosts with
//! `policies/support-assistant.policy`: the official MCP Python SDK's client talks to a
//! loopback MCP server (`support/mcp_server.rs`) through the gateway. `tools/list` loses
//! the tool the policy refuses, a call to it never reaches the server, a result with the
//! customer's email (streamed as SSE, cut inside the email) is masked, a result leaking a
//! credential is withheld, a refund over 100 EUR is held, approved at the approvals
//! endpoint and released once on retry with its review id, and every message has its audit
//! record.

use std::time::Duration;

use serde_json::{Value, json};

use crate::support::cases::Gateway;
use crate::support::hosts::{
    HostKind, Options, WritGateway, assert_in_both_hosts, build_support_assistant,
};
use crate::support::http::{Request, send};
use crate::support::mcp_server::{CUSTOMER_EMAIL, LEAKED_KEY, McpServer};
use crate::support::python::mcp_session;
use crate::support::tempdir::TempDir;

/// The operator token whose sha256 the bundled policy's kill switch holds.
const TOKEN: &str = "test";

fn headers(extra: &[(&str, &str)]) -> Value {
    let mut h = json!({"x-workflow": "support-assistant", "x-jwt-team": "billing"});
    for (k, v) in extra {
        h[*k] = json!(v);
    }
    h
}

fn error_code(r: &Value) -> Option<i64> {
    r["error"]["code"].as_i64()
}

fn check_host(kind: HostKind, artifact: &std::path::Path) -> Result<(), String> {
    let server = McpServer::start();
    let gw = WritGateway::start(kind, artifact, server.addr(), &Options::default())?;
    let ctx = |msg: String| format!("[{}] {msg}", gw.name());
    let url = format!("http://{}/mcp", gw.addr());
    let refund_250 =
        json!({"op": "call", "name": "issue_refund", "arguments": {"order": "A-1", "amount": 250}});
    let steps = json!([
        {"op": "list"},
        {"op": "call", "name": "lookup_order", "arguments": {"order": "A-1"}},
        {"op": "call", "name": "delete_account", "arguments": {"account": "C-9"}},
        {"op": "call", "name": "get_faq", "arguments": {"q": "connect"}},
        {"op": "call", "name": "issue_refund", "arguments": {"order": "A-2", "amount": 40}},
        refund_250,
    ]);
    let r = mcp_session(&url, &headers(&[]), &steps).map_err(ctx)?;
    let all = Value::Array(r.clone()).to_string();
    let get = |i: usize| r.get(i).cloned().unwrap_or(Value::Null);
    if get(0)["server"] != "support-tools" {
        return Err(ctx(format!("initialize: {all}")));
    }
    // 1. tools/list: the tool the policy refuses by name is invisible.
    if get(1)["tools"] != json!(["lookup_order", "get_faq", "issue_refund"]) {
        return Err(ctx(format!("tools/list: {}", get(1))));
    }
    // 2. A streamed result: the customer's email is masked, the rest arrives.
    let text = get(2)["content"].to_string();
    if !text.contains("Order A-1 ships on Monday to") || text.contains(CUSTOMER_EMAIL) {
        return Err(ctx(format!("lookup_order: {}", get(2))));
    }
    // 3. An unapproved tool: a JSON-RPC error citing the clause; the server never sees it.
    if error_code(&get(3)) != Some(-32001) || get(3)["error"]["data"]["clause"] != "AIP-9.1" {
        return Err(ctx(format!("delete_account: {}", get(3))));
    }
    // 4. A result leaking a credential is withheld.
    if error_code(&get(4)) != Some(-32001)
        || get(4)["error"]["data"]["clause"] != "AIP-9.4"
        || all.contains(LEAKED_KEY)
    {
        return Err(ctx(format!("get_faq: {}", get(4))));
    }
    // 5. A small refund goes through.
    if !get(5)["content"].to_string().contains("Refund of 40 EUR") {
        return Err(ctx(format!("small refund: {}", get(5))));
    }
    // 6. A refund over 100 EUR is held: pending_approval, nothing reaches the server.
    let pending = get(6);
    let review_id = pending["error"]["data"]["review_id"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    if error_code(&pending) != Some(-32002)
        || pending["error"]["data"]["status"] != "pending_approval"
        || !review_id.starts_with("rev-")
    {
        return Err(ctx(format!("held refund: {pending}")));
    }
    let calls = server.calls();
    if calls.iter().any(|(n, _)| n == "delete_account")
        || calls
            .iter()
            .any(|(n, a)| n == "issue_refund" && a["amount"] == 250)
    {
        return Err(ctx(format!("the server saw: {calls:?}")));
    }

    // 7. A retry before the decision is still pending; then a reviewer approves.
    let review = headers(&[("x-writ-review-id", &review_id)]);
    let again = mcp_session(&url, &review, &json!([refund_250])).map_err(ctx)?;
    if again.get(1).and_then(error_code) != Some(-32002) {
        return Err(ctx(format!("early retry: {again:?}")));
    }
    let body =
        json!({"review_id": review_id, "decision": "approve", "by": "ana", "reason": "verified"});
    let req = Request::post_json("/writ/admin/approvals", &body.to_string())
        .header("authorization", &format!("Bearer {TOKEN}"));
    let res = send(gw.addr(), &req, Duration::from_secs(20)).map_err(|e| ctx(e.to_string()))?;
    if res.status != 200 {
        return Err(ctx(format!("approval: {} {}", res.status, res.body_str())));
    }

    // 8. The retry with the review id reaches the server, once.
    let released = mcp_session(&url, &review, &json!([refund_250])).map_err(ctx)?;
    let got = released.get(1).cloned().unwrap_or(Value::Null);
    if !got["content"].to_string().contains("Refund of 250 EUR") {
        return Err(ctx(format!("release: {released:?}")));
    }
    let twice = mcp_session(&url, &review, &json!([refund_250])).map_err(ctx)?;
    let got = twice.get(1).cloned().unwrap_or(Value::Null);
    if error_code(&got) != Some(-32003) || got["error"]["data"]["code"] != "already_released" {
        return Err(ctx(format!("second release: {twice:?}")));
    }
    let refunds_250 = server
        .calls()
        .iter()
        .filter(|(n, a)| n == "issue_refund" && a["amount"] == 250)
        .count();
    if refunds_250 != 1 {
        return Err(ctx(format!(
            "the held refund reached the server {refunds_250} times"
        )));
    }

    // 9. Audit: one record per message, with its method and tool and the clause.
    let records = gw.wait_audit("request", 16, Duration::from_secs(10));
    let find = |method: &str, tool: Option<&str>, outcome: &str| {
        records.iter().find(|r| {
            r["mcp"]["method"] == method
                && tool.is_none_or(|t| r["mcp"]["tool"] == t)
                && r["outcome"] == outcome
        })
    };
    let cites = |r: Option<&Value>, clause: &str| {
        r.is_some_and(|r| {
            r["rules"]
                .as_array()
                .is_some_and(|rs| rs.iter().any(|x| x["clause"] == clause))
        })
    };
    let list = find("tools/list", None, "allowed");
    if !cites(list, "AIP-9.1") || list.is_some_and(|r| r["mcp"]["hidden_tools"] != 1) {
        return Err(ctx(format!("tools/list record: {list:?}")));
    }
    for (tool, outcome, clause) in [
        ("delete_account", "denied", "AIP-9.1"),
        ("get_faq", "denied", "AIP-9.4"),
        ("issue_refund", "pending_approval", "AIP-9.2"),
        ("lookup_order", "allowed", "AIP-2.5"),
    ] {
        let r = find("tools/call", Some(tool), outcome);
        if !cites(r, clause) {
            return Err(ctx(format!(
                "no {outcome} record for {tool} citing {clause}: {records:?}"
            )));
        }
    }
    if find("tools/call", Some("issue_refund"), "released").is_none()
        || find("initialize", None, "allowed").is_none()
    {
        return Err(ctx(format!("records: {records:?}")));
    }
    if records.iter().any(|r| {
        let s = r.to_string();
        s.contains(CUSTOMER_EMAIL) || s.contains(LEAKED_KEY) || s.contains("C-9")
    }) {
        return Err(ctx("an audit record carries content".into()));
    }
    Ok(())
}

#[test]
fn mcp_is_governed_in_both_hosts_with_the_official_client() {
    let dir = TempDir::new("mcp-e2e");
    let artifact = build_support_assistant(dir.path());
    assert_in_both_hosts(&artifact, check_host);
}
