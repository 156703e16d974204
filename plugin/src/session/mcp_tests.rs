//! Native tests of MCP requests through the session (`session/mcp.rs`, `docs/mcp.md`):
//! `tools/list` filtering, `tools/call` deny / hold and release / redact, results checked
//! in JSON and in event streams cut at every byte, and one audit record each. The same
//! tool rules also hold a chat reply's tool call, bound to the request as sent.

use super::*;
use crate::ir::KillSwitch;

fn tools(names: &[&str]) -> Vec<Value> {
    names.iter().map(|n| Value::Str(n.to_string())).collect()
}

/// The support assistant's tool rules, plus a model allowlist MCP traffic must not trip.
fn mcp_policy(result_action: Action) -> Policy {
    let name = || Operand::Field(Field::ToolCallName);
    let mut p = policy(vec![
        model_deny(),
        rule(
            "AIP-9.1",
            Phase::Response,
            Expr::Not(Box::new(Expr::In {
                operand: name(),
                set: tools(&["lookup_order", "issue_refund", "ping"]),
            })),
            Action::Deny {
                status: 403,
                message: "Tool not approved.".into(),
            },
        ),
        rule(
            "AIP-9.2",
            Phase::Response,
            Expr::And(vec![
                Expr::Compare {
                    left: name(),
                    op: CmpOp::Eq,
                    right: Operand::Const(Value::Str("issue_refund".into())),
                },
                Expr::Compare {
                    left: Operand::Field(Field::ToolArgument("/amount".into())),
                    op: CmpOp::Gt,
                    right: Operand::Const(Value::Num(100.0)),
                },
            ]),
            Action::Hold {
                queue: "refund-approvals".into(),
                reason: "refund over 100".into(),
            },
        ),
        rule(
            "AIP-9.3",
            Phase::Request,
            Expr::In {
                operand: Operand::Field(Field::ToolName),
                set: tools(&["ping"]),
            },
            Action::StripTool,
        ),
        rule(
            "AIP-9.5",
            Phase::Request,
            Expr::Has {
                subject: Text::ToolResults,
                detectors: vec![0],
            },
            result_action,
        ),
        rule(
            "AIP-9.6",
            Phase::Response,
            Expr::Has {
                subject: Text::ToolArguments,
                detectors: vec![0],
            },
            Action::Redact { detectors: vec![0] },
        ),
    ]);
    p.kill_switch = Some(KillSwitch {
        clause: None,
        admin_path: "/writ/admin/kill-switch".into(),
        token_sha256: "00".into(),
    });
    p
}

fn redact_results() -> Action {
    Action::Redact { detectors: vec![0] }
}

impl Run {
    fn mcp(&mut self, extra: &[(&str, &str)], body: &str) -> Next {
        let mut h = vec![(":path", "/mcp"), ("mcp-protocol-version", "2025-06-18")];
        h.extend_from_slice(extra);
        // The path header given last wins in `Request::from_headers`.
        assert_eq!(self.headers(&h, false), Next::Pause);
        self.body(body)
    }

    fn fired(&self) -> Vec<String> {
        self.record()["rules"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["id"].as_str().unwrap().to_string())
            .collect()
    }

    /// The response body as the client gets it: every replaced chunk, or the original.
    fn replaced_reply(&self) -> Vec<u8> {
        let mut out = Vec::new();
        for e in &self.effects {
            if let Effect::ReplaceBody {
                side: Side::Response,
                bytes,
                ..
            } = e
            {
                out.extend_from_slice(bytes);
            }
        }
        out
    }
}

const CALL: &str =
    r#"{"jsonrpc":"2.0","id":7,"method":"tools/call","params":{"name":"NAME","arguments":ARGS}}"#;

fn call(name: &str, args: &str) -> String {
    CALL.replace("NAME", name).replace("ARGS", args)
}

#[test]
fn tools_list_hides_what_the_policy_would_refuse_by_name() {
    let mut run = Run::new(mcp_policy(redact_results()));
    assert_eq!(
        run.mcp(&[], r#"{"jsonrpc":"2.0","id":1,"method":"tools/list"}"#),
        Next::Continue
    );
    assert_eq!(
        run.reply_headers(200, "application/json", false),
        Next::Pause
    );
    let reply = r#"{"jsonrpc":"2.0","id":1,"result":{"tools":[{"name":"lookup_order"},{"name":"drop_tables"},{"name":"issue_refund"},{"name":"ping"}]}}"#;
    assert_eq!(run.reply_body(reply), Next::Continue);
    run.seal();
    let out: serde_json::Value = serde_json::from_slice(&run.replaced_reply()).unwrap();
    assert_eq!(
        crate::mcp::listed_tools(&out),
        vec!["lookup_order", "issue_refund"]
    );
    let rec = run.record();
    assert_eq!(rec["outcome"], "allowed");
    assert_eq!(rec["mcp"]["method"], "tools/list");
    assert_eq!(rec["mcp"]["hidden_tools"], 2);
    // The hiding rules are cited; the model allowlist does not apply to MCP.
    assert_eq!(run.fired(), vec!["AIP-9.1", "AIP-9.3"]);
}

#[test]
fn tools_call_is_denied_by_name_with_a_json_rpc_error() {
    for (tool, clause) in [("drop_tables", "AIP-9.1"), ("ping", "AIP-9.3")] {
        let mut run = Run::new(mcp_policy(redact_results()));
        assert_eq!(run.mcp(&[], &call(tool, "{}")), Next::Pause);
        run.seal();
        let replies = run.local_replies();
        assert_eq!(replies.len(), 1);
        let (status, body) = &replies[0];
        assert_eq!(*status, 200);
        assert_eq!(body["jsonrpc"], "2.0");
        assert_eq!(body["id"], 7);
        assert_eq!(body["error"]["code"], crate::mcp::DENIED);
        assert_eq!(body["error"]["data"]["clause"], clause);
        let rec = run.record();
        assert_eq!(rec["outcome"], "denied");
        assert_eq!(rec["mcp"]["tool"], tool);
        assert_eq!(run.fired(), vec![clause]);
    }
}

#[test]
fn an_allowed_call_is_forwarded_with_its_arguments_redacted() {
    let mut run = Run::new(mcp_policy(redact_results()));
    let next = run.mcp(&[], &call("lookup_order", r#"{"email":"ann@example.com"}"#));
    assert_eq!(next, Next::Continue);
    let forwarded: Vec<&Vec<u8>> = run
        .effects
        .iter()
        .filter_map(|e| match e {
            Effect::ReplaceBody {
                side: Side::Request,
                bytes,
                ..
            } => Some(bytes),
            _ => None,
        })
        .collect();
    assert_eq!(forwarded.len(), 1);
    let text = String::from_utf8_lossy(forwarded[0]);
    assert!(!text.contains("ann@example.com"), "{text}");
    assert!(text.contains("\"method\":\"tools/call\""), "{text}");
    assert!(text.contains("lookup_order"), "{text}");
    assert_eq!(
        run.reply_headers(200, "application/json", false),
        Next::Pause
    );
    run.reply_body(
        r#"{"jsonrpc":"2.0","id":7,"result":{"content":[{"type":"text","text":"order A-1"}]}}"#,
    );
    run.seal();
    assert_eq!(run.fired(), vec!["AIP-9.6"]);
    assert_eq!(run.record()["pii"]["email"], 1);
}

#[test]
fn a_refund_over_the_limit_is_held_then_released_once_on_retry() {
    let mut run = Run::new(mcp_policy(redact_results()));
    let body = call("issue_refund", r#"{"order":"A-1","amount":250}"#);
    assert_eq!(run.mcp(&[], &body), Next::Pause);
    run.seal();
    let (status, reply) = run.local_replies().remove(0);
    assert_eq!(status, 200);
    assert_eq!(reply["error"]["code"], crate::mcp::PENDING_APPROVAL);
    let data = &reply["error"]["data"];
    assert_eq!(data["status"], "pending_approval");
    assert_eq!(data["clause"], "AIP-9.2");
    assert!(!reply.to_string().contains("250"), "{reply}");
    let review_id = data["review_id"].as_str().unwrap().to_string();
    assert_eq!(run.record()["outcome"], "pending_approval");
    let store = std::mem::take(&mut run.store);

    // Not decided yet: pending again. Then approved: the call goes to the server, once;
    // the retry numbers its JSON-RPC request anew.
    let retry = body.replace("\"id\":7", "\"id\":8");
    let mut again = Run::new(mcp_policy(redact_results()));
    again.store = store;
    assert_eq!(
        again.mcp(&[("x-writ-review-id", &review_id)], &retry),
        Next::Pause
    );
    let (_, r) = again.local_replies().remove(0);
    assert_eq!(r["id"], 8);
    assert_eq!(r["error"]["code"], crate::mcp::PENDING_APPROVAL);
    let (mut held, _) = crate::approval::get(&again.store, &review_id).unwrap();
    held.state = crate::approval::HoldState::Approved;
    crate::approval::put(&again.store, &held).unwrap();
    let store = std::mem::take(&mut again.store);

    let mut released = Run::new(mcp_policy(redact_results()));
    released.store = store;
    assert_eq!(
        released.mcp(&[("x-writ-review-id", &review_id)], &retry),
        Next::Continue
    );
    assert!(released.local_replies().is_empty());
    released.seal();
    assert_eq!(released.record()["outcome"], "released");
    let store = std::mem::take(&mut released.store);

    let mut twice = Run::new(mcp_policy(redact_results()));
    twice.store = store;
    assert_eq!(
        twice.mcp(&[("x-writ-review-id", &review_id)], &retry),
        Next::Pause
    );
    let (_, r) = twice.local_replies().remove(0);
    assert_eq!(r["error"]["code"], crate::mcp::APPROVAL_ERROR);
    assert_eq!(r["error"]["data"]["code"], "already_released");
    // Another call cannot use the review id.
    let mut other = Run::new(mcp_policy(redact_results()));
    other.store = std::mem::take(&mut twice.store);
    let different = call("issue_refund", r#"{"order":"A-1","amount":900}"#);
    other.mcp(&[("x-writ-review-id", &review_id)], &different);
    let (_, r) = other.local_replies().remove(0);
    assert_eq!(r["error"]["data"]["code"], "review_id_mismatch");
}

#[test]
fn results_in_an_event_stream_are_redacted_whatever_the_cut() {
    let stream = concat!(
        "event: message\n",
        "data: {\"jsonrpc\":\"2.0\",\"method\":\"notifications/progress\",\"params\":{\"progress\":1}}\n\n",
        "event: message\n",
        "data: {\"jsonrpc\":\"2.0\",\"id\":7,\"result\":{\"content\":[{\"type\":\"text\",\"text\":\"owner ann@example.com\"}]}}\n\n",
    )
    .as_bytes();
    let run_with = |cuts: &[usize]| {
        let mut run = Run::new(mcp_policy(redact_results()));
        assert_eq!(run.mcp(&[], &call("lookup_order", "{}")), Next::Continue);
        assert_eq!(
            run.reply_headers(200, "text/event-stream", false),
            Next::Continue
        );
        let mut at = 0;
        // What the client receives: each chunk as replaced, or as it came.
        let mut client = Vec::new();
        for &cut in cuts.iter().chain([stream.len()].iter()) {
            assert_eq!(run.session.reply_body_need(cut == stream.len()), Need::Read);
            let chunk = &stream[at..cut];
            let step = run
                .session
                .on_response_body(chunk, cut == stream.len(), &run.store);
            let replaced = step.effects.iter().find_map(|e| match e {
                Effect::ReplaceBody {
                    side: Side::Response,
                    bytes,
                    ..
                } => Some(bytes.clone()),
                _ => None,
            });
            client.extend_from_slice(&replaced.unwrap_or_else(|| chunk.to_vec()));
            run.keep(step);
            at = cut;
        }
        run.seal();
        (client, run.record())
    };
    let (whole, rec) = run_with(&[]);
    let text = String::from_utf8(whole.clone()).unwrap();
    assert!(!text.contains("ann@example.com"), "{text}");
    assert!(text.contains("notifications/progress"), "{text}");
    assert_eq!(rec["pii"]["email"], 1);
    assert_eq!(rec["rules"][0]["id"], "AIP-9.5");
    let every: Vec<usize> = (1..stream.len()).collect();
    assert_eq!(run_with(&every).0, whole);
    for cut in 1..stream.len() {
        assert_eq!(run_with(&[cut]).0, whole, "cut at {cut}");
    }
}

#[test]
fn a_denied_result_becomes_a_json_rpc_error_and_bad_replies_fail_closed() {
    let deny = Action::Deny {
        status: 400,
        message: "No personal data in tool results.".into(),
    };
    let mut run = Run::new(mcp_policy(deny.clone()));
    run.mcp(&[], &call("lookup_order", "{}"));
    run.reply_headers(200, "application/json", false);
    run.reply_body(r#"{"jsonrpc":"2.0","id":7,"result":{"content":[{"type":"text","text":"ann@example.com"}]}}"#);
    run.seal();
    let out: serde_json::Value = serde_json::from_slice(&run.replaced_reply()).unwrap();
    assert_eq!(out["error"]["code"], crate::mcp::DENIED);
    assert_eq!(out["error"]["data"]["clause"], "AIP-9.5");
    assert!(out.get("result").is_none());
    assert_eq!(run.record()["outcome"], "denied");

    let mut run = Run::new(mcp_policy(deny));
    run.mcp(&[], &call("lookup_order", "{}"));
    run.reply_headers(200, "application/json", false);
    run.reply_body("{not json");
    run.seal();
    let out: serde_json::Value = serde_json::from_slice(&run.replaced_reply()).unwrap();
    assert_eq!(out["error"]["code"], crate::mcp::GATEWAY_ERROR);
    assert_eq!(run.record()["outcome"], "error");
}

#[test]
fn other_methods_pass_and_malformed_json_rpc_is_refused() {
    let mut run = Run::new(mcp_policy(redact_results()));
    let init = r#"{"jsonrpc":"2.0","id":0,"method":"initialize","params":{"protocolVersion":"2025-06-18","capabilities":{},"clientInfo":{"name":"t","version":"1"}}}"#;
    assert_eq!(run.mcp(&[], init), Next::Continue);
    run.reply_headers(200, "application/json", false);
    run.reply_body(r#"{"jsonrpc":"2.0","id":0,"result":{"protocolVersion":"2025-06-18"}}"#);
    run.seal();
    let rec = run.record();
    assert_eq!(rec["outcome"], "allowed");
    assert_eq!(rec["mcp"]["method"], "initialize");
    assert!(run.fired().is_empty());

    let mut run = Run::new(mcp_policy(redact_results()));
    assert_eq!(
        run.mcp(
            &[],
            r#"{"jsonrpc":"2.0","id":3,"method":"tools/call","params":{}}"#
        ),
        Next::Pause
    );
    run.seal();
    let (status, r) = run.local_replies().remove(0);
    assert_eq!((status, r["id"].clone()), (200, serde_json::json!(3)));
    assert_eq!(r["error"]["code"], crate::mcp::INVALID_PARAMS);
    assert_eq!(run.record()["outcome"], "error");

    // A request without a body (the `GET` of the server's stream) is MCP by its header,
    // and the model allowlist does not refuse it.
    let mut run = Run::new(mcp_policy(redact_results()));
    let h = [
        (":method", "GET"),
        (":path", "/mcp"),
        ("mcp-protocol-version", "2025-06-18"),
    ];
    assert_eq!(run.headers(&h, true), Next::Continue);
    run.seal();
    assert_eq!(run.record()["outcome"], "allowed");
}

#[test]
fn tokenised_arguments_are_restored_in_the_result() {
    let mut p = mcp_policy(redact_results());
    // AIP-9.6 tokenises instead of redacting.
    if let Some(r) = p.rules.iter_mut().find(|r| r.clause == "AIP-9.6") {
        r.action = Action::Tokenise { detectors: vec![0] };
    }
    // No result rule and no response redaction may mask the restored value.
    p.rules.retain(|r| r.clause != "AIP-9.5");
    let mut run = Run::new(p);
    assert_eq!(
        run.mcp(&[], &call("lookup_order", r#"{"email":"ann@example.com"}"#)),
        Next::Continue
    );
    let sent = run
        .effects
        .iter()
        .find_map(|e| match e {
            Effect::ReplaceBody {
                side: Side::Request,
                bytes,
                ..
            } => Some(String::from_utf8(bytes.clone()).unwrap()),
            _ => None,
        })
        .unwrap();
    assert!(!sent.contains("ann@example.com"), "{sent}");
    let v: serde_json::Value = serde_json::from_str(&sent).unwrap();
    let placeholder = v["params"]["arguments"]["email"]
        .as_str()
        .unwrap()
        .to_string();
    // The server echoes the placeholder; the client gets the value back.
    run.reply_headers(200, "text/event-stream", false);
    let event = format!(
        "data: {{\"jsonrpc\":\"2.0\",\"id\":7,\"result\":{{\"content\":[{{\"type\":\"text\",\"text\":\"found {placeholder}\"}}]}}}}\n\n"
    );
    let step = run
        .session
        .on_response_body(event.as_bytes(), true, &run.store);
    run.keep(step);
    run.seal();
    let out = String::from_utf8(run.replaced_reply()).unwrap();
    assert!(out.contains("found ann@example.com"), "{out}");
    assert_eq!(run.record()["pii"]["email"], 1);
}

#[test]
fn a_tools_list_in_an_event_stream_is_filtered_too() {
    let mut run = Run::new(mcp_policy(redact_results()));
    run.mcp(&[], r#"{"jsonrpc":"2.0","id":"l","method":"tools/list"}"#);
    run.reply_headers(200, "text/event-stream", false);
    let stream = b"event: message\ndata: {\"jsonrpc\":\"2.0\",\"id\":\"l\",\"result\":{\"tools\":[{\"name\":\"drop_tables\"},{\"name\":\"lookup_order\"}]}}\n\n";
    let (a, b) = stream.split_at(40);
    for (chunk, end) in [(a, false), (b, true)] {
        let step = run.session.on_response_body(chunk, end, &run.store);
        run.keep(step);
    }
    run.seal();
    let out = String::from_utf8(run.replaced_reply()).unwrap();
    assert!(
        out.contains("lookup_order") && !out.contains("drop_tables"),
        "{out}"
    );
    assert_eq!(run.record()["mcp"]["hidden_tools"], 1);
}

#[test]
fn a_model_request_dressed_as_json_rpc_meets_the_model_rules() {
    // On a model API's path, a `jsonrpc` member changes nothing: the model allowlist
    // refuses the request as it refuses any other.
    let mut run = Run::new(mcp_policy(redact_results()));
    assert_eq!(run.headers(&[], false), Next::Pause);
    let smuggled = r#"{"jsonrpc":"2.0","method":"x","model":"gpt-4","messages":[{"role":"user","content":"hi"}]}"#;
    assert_eq!(run.body(smuggled), Next::Pause);
    run.seal();
    let (status, _) = run.local_replies().remove(0);
    assert_eq!(status, 403);
    assert_eq!(run.fired(), vec!["AIP-3.1"]);
    assert!(run.record().get("mcp").is_none());
    // Elsewhere, JSON-RPC with a model request's members is not a JSON-RPC message.
    let mut run = Run::new(mcp_policy(redact_results()));
    assert_eq!(run.mcp(&[], smuggled), Next::Pause);
    run.seal();
    let (status, r) = run.local_replies().remove(0);
    assert_eq!(
        (status, r["error"]["code"].clone()),
        (200, serde_json::json!(crate::mcp::INVALID_REQUEST))
    );
    // A bodiless POST with the MCP header is not MCP either.
    let mut run = Run::new(mcp_policy(redact_results()));
    let h = [(":path", "/mcp"), ("mcp-protocol-version", "2025-06-18")];
    assert_eq!(run.headers(&h, true), Next::Pause);
    run.seal();
    assert_eq!(run.fired(), vec!["AIP-3.1"]);
}

#[test]
fn a_tool_result_on_the_servers_own_stream_is_checked_too() {
    let deny = Action::Deny {
        status: 400,
        message: "No personal data in tool results.".into(),
    };
    let mut run = Run::new(mcp_policy(deny));
    let h = [
        (":method", "GET"),
        (":path", "/mcp"),
        ("mcp-protocol-version", "2025-06-18"),
        ("accept", "text/event-stream"),
    ];
    assert_eq!(run.headers(&h, true), Next::Continue);
    run.reply_headers(200, "text/event-stream", false);
    let event = b"data: {\"jsonrpc\":\"2.0\",\"id\":9,\"result\":{\"content\":[{\"type\":\"text\",\"text\":\"ann@example.com\"}]}}\n\n";
    let step = run.session.on_response_body(event, true, &run.store);
    run.keep(step);
    run.seal();
    let out: serde_json::Value = serde_json::from_slice(
        run.replaced_reply()
            .strip_prefix(b"data: ")
            .unwrap()
            .strip_suffix(b"\n\n")
            .unwrap(),
    )
    .unwrap();
    assert_eq!(out["id"], 9);
    assert_eq!(out["error"]["code"], crate::mcp::DENIED);
    assert_eq!(run.record()["mcp"]["method"], "");
}

/// A held chat reply is bound to the request as the client sent it (its sha256, taken only
/// when the reply is held): the same request with the review id is answered pending, a
/// different one is refused.
#[test]
fn a_held_chat_reply_is_bound_to_the_request_as_sent() {
    let body = r#"{"model":"m","messages":[{"role":"user","content":"refund order A-1"}],"tools":[{"type":"function","function":{"name":"issue_refund"}}]}"#;
    let reply = r#"{"choices":[{"index":0,"message":{"role":"assistant","tool_calls":[{"id":"c1","type":"function","function":{"name":"issue_refund","arguments":"{\"order\":\"A-1\",\"amount\":250}"}}]},"finish_reason":"tool_calls"}]}"#;
    let mut run = Run::new(mcp_policy(redact_results()));
    assert_eq!(run.request(body), Next::Continue);
    assert_eq!(
        run.reply_headers(200, "application/json", false),
        Next::Pause
    );
    run.reply_body(reply);
    run.seal();
    assert_eq!(run.record()["outcome"], "pending_approval");
    let review_id = oversight::review_id("req-1");
    let (held, _) = crate::approval::get(&run.store, &review_id).unwrap();
    assert_eq!(
        held.request_sha256,
        crate::approval::request_digest(body.as_bytes())
    );
    let store = std::mem::take(&mut run.store);

    let mut same = Run::new(mcp_policy(redact_results()));
    same.store = store;
    assert_eq!(
        same.headers(&[("x-writ-review-id", &review_id)], false),
        Next::Pause
    );
    same.body(body);
    same.seal();
    assert_eq!(same.record()["outcome"], "pending_approval");
    let store = std::mem::take(&mut same.store);

    let mut other = Run::new(mcp_policy(redact_results()));
    other.store = store;
    other.headers(&[("x-writ-review-id", &review_id)], false);
    other.body(&body.replace("A-1", "A-2"));
    other.seal();
    assert_eq!(other.record()["outcome"], "denied");
    let (status, r) = other.local_replies().remove(0);
    assert_eq!(status, 409);
    assert_eq!(r["error"]["code"], "review_id_mismatch", "{r}");
}
