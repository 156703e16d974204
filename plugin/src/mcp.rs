//! MCP (the Model Context Protocol) over Streamable HTTP, as the policy sees it: which
//! JSON-RPC message a request is, the tool call a `tools/call` makes, the tools a
//! `tools/list` result lists, the JSON-RPC error objects the gateway answers with, and
//! the server's event stream cut into whole messages whatever the chunking. Plain JSON,
//! no policy and no host: the session (`session/mcp.rs`) decides, this module reads and
//! writes the wire (`docs/mcp.md`).
//!
//! A request is MCP when its body is one JSON-RPC 2.0 message: a JSON object with a
//! `"jsonrpc"` member. Streamable HTTP posts every client message to one endpoint and the
//! server answers `application/json` (one message) or `text/event-stream` (messages in
//! `data:` lines, the response to the request among them). Batches (a JSON array) are not
//! read: the request body parser refuses every body that is not an object.

use serde_json::{Value as Json, json};

use crate::ir;
use crate::tools::ToolCall;

/// The header MCP clients send on every request after initialisation; a request without
/// a body (the `GET` that opens the server's stream, the `DELETE` that ends a session) is
/// recognised as MCP by it.
pub const PROTOCOL_VERSION_HEADER: &str = "mcp-protocol-version";

/// JSON-RPC error code of a call or result a rule denied (the server-error range
/// `-32000..-32099` is the implementation's to define).
pub const DENIED: i64 = -32001;
/// JSON-RPC error code of a call held for approval: `error.data` is the
/// `pending_approval` object of `docs/tools.md`.
pub const PENDING_APPROVAL: i64 = -32002;
/// JSON-RPC error code of a retry the approval path refuses (rejected, unknown review id,
/// another call, already released, store error): `error.data.code` says which.
pub const APPROVAL_ERROR: i64 = -32003;
/// JSON-RPC error code of a gateway failure (fail closed: the server's answer could not
/// be checked, or the held call could not be stored).
pub const GATEWAY_ERROR: i64 = -32000;
/// JSON-RPC's own code for a request that is not a valid JSON-RPC request.
pub const INVALID_REQUEST: i64 = -32600;
/// JSON-RPC's own code for invalid method parameters (a `tools/call` without a name).
pub const INVALID_PARAMS: i64 = -32602;

/// What an MCP request asks, as far as the policy cares.
#[derive(Debug, Clone, PartialEq)]
pub enum Kind {
    /// `tools/list`: its result is filtered (denied tools are invisible).
    ToolsList,
    /// `tools/call`: checked by name and arguments before it reaches the server.
    ToolsCall {
        /// `params.name`.
        name: String,
        /// `params.arguments` (an object; `{}` when absent).
        arguments: Json,
    },
    /// Any other message (`initialize`, notifications, `resources/*`, `prompts/*`, a
    /// response to a server request): governed by identity and the kill switch only.
    Other,
}

/// One MCP request: its JSON-RPC id (`null` for a notification or a response), its
/// method (empty for a response) and what it asks.
#[derive(Debug, Clone, PartialEq)]
pub struct Message {
    pub id: Json,
    pub method: String,
    pub kind: Kind,
}

impl Message {
    /// The method as the audit record names it (`response` for a client's answer to a
    /// server request).
    pub fn method_label(&self) -> &str {
        if self.method.is_empty() {
            "response"
        } else {
            &self.method
        }
    }

    /// The tool a `tools/call` names.
    pub fn tool(&self) -> Option<&str> {
        match &self.kind {
            Kind::ToolsCall { name, .. } => Some(name),
            _ => None,
        }
    }

    /// The engine's API-neutral view of a `tools/call` (id, name, arguments as JSON
    /// text), so the `tool_call.…` rules read it exactly like a model's call.
    pub fn tool_call(&self) -> Option<ToolCall> {
        match &self.kind {
            Kind::ToolsCall { name, arguments } => {
                let id = match &self.id {
                    Json::String(s) => s.clone(),
                    Json::Null => String::new(),
                    other => other.to_string(),
                };
                Some(ToolCall::new(&id, name, &arguments.to_string()))
            }
            _ => None,
        }
    }

    /// The bytes that identify a `tools/call` for approval: method, name and arguments,
    /// not the JSON-RPC id (a client numbers each request anew, so a retry carries
    /// another id). `None` for other methods.
    pub fn call_identity(&self) -> Option<Vec<u8>> {
        match &self.kind {
            Kind::ToolsCall { name, arguments } => serde_json::to_vec(
                &json!({"method": "tools/call", "name": name, "arguments": arguments}),
            )
            .ok(),
            _ => None,
        }
    }
}

/// Whether a request is MCP traffic: on a path that is no model API's (`api`), a body
/// that claims JSON-RPC (valid or not), or a `GET`/`DELETE` without a body that carries
/// [`PROTOCOL_VERSION_HEADER`]. A model API's path is never MCP: its requests meet the
/// model's rules whatever their body says.
pub fn recognised(
    api: crate::api::Api,
    method: &str,
    protocol_version: bool,
    body: Option<&Json>,
) -> bool {
    if api != crate::api::Api::Other {
        return false;
    }
    match body {
        Some(json) => classify(json).is_some(),
        None => protocol_version && matches!(method, "GET" | "DELETE"),
    }
}

/// The members a JSON-RPC 2.0 message may have.
const MEMBERS: &[&str] = &["jsonrpc", "id", "method", "params", "result", "error"];

/// Reads a request body as MCP: `None` when it is not JSON-RPC (no `"jsonrpc"` member),
/// `Some(Err(why))` when it claims JSON-RPC but is not a valid message (answered with
/// [`INVALID_REQUEST`] or [`INVALID_PARAMS`], never forwarded), else the message.
pub fn classify(body: &Json) -> Option<Result<Message, (i64, &'static str)>> {
    let obj = body.as_object()?;
    let version = obj.get("jsonrpc")?;
    if version.as_str() != Some("2.0") {
        return Some(Err((INVALID_REQUEST, "`jsonrpc` must be \"2.0\"")));
    }
    // Nothing but JSON-RPC's own members: a model request dressed as JSON-RPC (`model`,
    // `messages` next to `"jsonrpc"`) must not pass as MCP and skip the model's rules.
    if obj.keys().any(|k| !MEMBERS.contains(&k.as_str())) {
        return Some(Err((
            INVALID_REQUEST,
            "a JSON-RPC message has only `jsonrpc`, `id`, `method`, `params`, `result` and `error`",
        )));
    }
    let id = obj.get("id").cloned().unwrap_or(Json::Null);
    let method = match obj.get("method") {
        None if obj.contains_key("result") || obj.contains_key("error") => String::new(),
        Some(Json::String(m)) => m.clone(),
        _ => {
            return Some(Err((
                INVALID_REQUEST,
                "a JSON-RPC request needs a `method`",
            )));
        }
    };
    let kind = match method.as_str() {
        "tools/list" => Kind::ToolsList,
        "tools/call" => {
            let params = obj.get("params");
            let Some(name) = params.and_then(|p| p.get("name")).and_then(Json::as_str) else {
                return Some(Err((INVALID_PARAMS, "`tools/call` needs `params.name`")));
            };
            let arguments = match params.and_then(|p| p.get("arguments")) {
                None | Some(Json::Null) => json!({}),
                Some(a @ Json::Object(_)) => a.clone(),
                Some(_) => {
                    return Some(Err((
                        INVALID_PARAMS,
                        "`tools/call` arguments must be an object",
                    )));
                }
            };
            Kind::ToolsCall {
                name: name.to_string(),
                arguments,
            }
        }
        _ => Kind::Other,
    };
    Some(Ok(Message { id, method, kind }))
}

/// A JSON-RPC error response for request `id`: `{"jsonrpc":"2.0","id":…,"error":{code,
/// message, data}}` (`data` omitted when null). The gateway's local answers to MCP
/// requests are all of this shape, with HTTP 200 (`docs/mcp.md`).
pub fn error_response(id: &Json, code: i64, message: &str, data: Json) -> Json {
    let mut error = json!({"code": code, "message": message});
    if !data.is_null()
        && let Some(e) = error.as_object_mut()
    {
        e.insert("data".into(), data);
    }
    json!({"jsonrpc": "2.0", "id": id, "error": error})
}

/// [`error_response`] as bytes.
pub fn error_body(id: &Json, code: i64, message: &str, data: Json) -> Vec<u8> {
    serde_json::to_vec(&error_response(id, code, message, data)).unwrap_or_default()
}

/// Whether a server message is the response to request `id` (same id, and a `result` or
/// an `error`), as opposed to a notification or a request of the server's own on the
/// same stream.
pub fn is_response_to(message: &Json, id: &Json) -> bool {
    message.get("id") == Some(id)
        && message.get("method").is_none()
        && (message.get("result").is_some() || message.get("error").is_some())
}

/// The names of the tools a `tools/list` result lists (`result.tools[].name`), in order.
pub fn listed_tools(message: &Json) -> Vec<String> {
    message
        .pointer("/result/tools")
        .and_then(Json::as_array)
        .into_iter()
        .flatten()
        .filter_map(|t| t.get("name")?.as_str().map(str::to_string))
        .collect()
}

/// Removes the tools named in `hidden` from a `tools/list` result; returns how many went.
/// A listed tool without a name is removed too: nothing could allow it by name.
pub fn hide_tools(message: &mut Json, hidden: &[String]) -> usize {
    let Some(tools) = message
        .pointer_mut("/result/tools")
        .and_then(Json::as_array_mut)
    else {
        return 0;
    };
    let before = tools.len();
    tools.retain(|t| {
        t.get("name")
            .and_then(Json::as_str)
            .is_some_and(|n| !hidden.iter().any(|h| h == n))
    });
    before - tools.len()
}

/// The tool result of a `tools/call` response as the `tool_result …` rules read it: a
/// chat-shaped body with one `role: tool` message whose content is the result's
/// `content` blocks and `structuredContent`, so [`crate::tools::any_tool_result`] scans
/// every string of it. `None` when the message has no `result`.
pub fn tool_result_view(message: &Json) -> Option<Json> {
    let result = message.get("result")?;
    let mut parts = Vec::new();
    if let Some(c) = result.get("content") {
        parts.push(c.clone());
    }
    if let Some(s) = result.get("structuredContent") {
        parts.push(s.clone());
    }
    Some(json!({"messages": [{"role": "tool", "content": parts}]}))
}

/// A chat-shaped body offering the tools named, so the `tool.name` rules (`strip tool`)
/// read a `tools/list` result or a `tools/call`'s tool exactly like a request's offer.
pub fn offered_view(names: &[String]) -> Json {
    let tools: Vec<Json> = names.iter().map(|n| json!({"name": n})).collect();
    json!({ "tools": tools })
}

/// Whether a condition reads only what an MCP request has in common with any HTTP
/// request: path, method, headers, query, workflow, team, user. Such request rules
/// (`workflow != "support"`, a header check) govern MCP traffic too; rules that read a
/// model request (model, prompt, output limit, stream, spend, rates, offered tools, tool
/// results) do not apply to it (`docs/mcp.md`).
pub fn reads_only_context(e: &ir::Expr) -> bool {
    use ir::{Expr, Field, Operand, Text};
    let op = |o: &Operand| match o {
        Operand::Const(_) => true,
        Operand::Field(f) => matches!(
            f,
            Field::Path
                | Field::Method
                | Field::Header(_)
                | Field::Workflow
                | Field::Team
                | Field::User
        ),
        _ => false,
    };
    match e {
        Expr::And(v) | Expr::Or(v) => v.iter().all(reads_only_context),
        Expr::Not(e) => reads_only_context(e),
        Expr::Compare { left, right, .. } => op(left) && op(right),
        Expr::In { operand, .. } => op(operand),
        Expr::Has { subject, .. } => matches!(subject, Text::Header(_) | Text::Query),
        Expr::Const(_) => true,
    }
}

/// Whether a condition reads the tool results a request sends back (`tool_result has`):
/// such request rules are applied to a `tools/call`'s result.
pub fn reads_tool_results(e: &ir::Expr) -> bool {
    use ir::{Expr, Text};
    match e {
        Expr::And(v) | Expr::Or(v) => v.iter().any(reads_tool_results),
        Expr::Not(e) => reads_tool_results(e),
        Expr::Has { subject, .. } => *subject == Text::ToolResults,
        _ => false,
    }
}

/// Whether a condition reads a tool call's arguments (`tool_call.argument`,
/// `tool_call.arguments has`): a deny rule that does not is decided by the tool's name
/// alone, so `tools/list` hides the tools it would deny.
pub fn reads_arguments(e: &ir::Expr) -> bool {
    use ir::{Expr, Field, Operand, Text};
    let op = |o: &Operand| matches!(o, Operand::Field(Field::ToolArgument(_)));
    match e {
        Expr::And(v) | Expr::Or(v) => v.iter().any(reads_arguments),
        Expr::Not(e) => reads_arguments(e),
        Expr::Compare { left, right, .. } => op(left) || op(right),
        Expr::In { operand, .. } => op(operand),
        Expr::Has { subject, .. } => *subject == Text::ToolArguments,
        Expr::Const(_) => false,
    }
}

/// Cuts a server's event stream into whole events, whatever the chunking, and writes each
/// back after the caller has seen its JSON-RPC message: a message is decided only once its
/// event is complete, so a value split across chunks (or across `data:` lines) is seen
/// whole. Lines end with `\n` or `\r\n`; an event ends at a blank line.
///
/// The caller's `decide` gets each event's message and returns the message to send (the
/// same, rewritten, or an error in its place) or `None` to drop the event. Events without
/// data (comments, a priming event with only an `id:`) pass unchanged; an event whose data
/// is not JSON is dropped (it is no MCP message, and the gateway cannot check it).
#[derive(Debug, Default)]
pub struct EventStream {
    /// The bytes of the event being read (up to the last complete line).
    event: Vec<u8>,
    /// The current incomplete line.
    line: Vec<u8>,
    /// Events dropped because their data was not JSON.
    pub dropped: usize,
}

impl EventStream {
    /// A stream that has seen nothing.
    pub fn new() -> EventStream {
        EventStream::default()
    }

    /// Feeds the next chunk; whole events are decided and appended to `out`.
    pub fn push(
        &mut self,
        chunk: &[u8],
        decide: &mut dyn FnMut(Json) -> Option<Json>,
        out: &mut Vec<u8>,
    ) {
        for &b in chunk {
            self.line.push(b);
            if b != b'\n' {
                continue;
            }
            let line = std::mem::take(&mut self.line);
            let blank = matches!(line.as_slice(), b"\n" | b"\r\n");
            self.event.extend_from_slice(&line);
            if blank {
                let event = std::mem::take(&mut self.event);
                self.emit(&event, decide, out);
            }
        }
    }

    /// Ends the stream: an event cut short (no blank line after it) is decided too, so
    /// nothing leaves unchecked.
    pub fn finish(&mut self, decide: &mut dyn FnMut(Json) -> Option<Json>, out: &mut Vec<u8>) {
        let mut event = std::mem::take(&mut self.event);
        event.append(&mut self.line);
        if !event.is_empty() {
            self.emit(&event, decide, out);
        }
    }

    fn emit(
        &mut self,
        event: &[u8],
        decide: &mut dyn FnMut(Json) -> Option<Json>,
        out: &mut Vec<u8>,
    ) {
        let mut data: Vec<u8> = Vec::new();
        let mut has_data = false;
        let mut others: Vec<&[u8]> = Vec::new();
        let mut data_at = None;
        for line in event.split_inclusive(|&b| b == b'\n') {
            let bare = line.strip_suffix(b"\n").unwrap_or(line);
            let bare = bare.strip_suffix(b"\r").unwrap_or(bare);
            if bare.is_empty() {
                continue;
            }
            if let Some(rest) = bare.strip_prefix(b"data:") {
                let rest = rest.strip_prefix(b" ").unwrap_or(rest);
                if has_data {
                    data.push(b'\n');
                }
                has_data = true;
                data.extend_from_slice(rest);
                data_at.get_or_insert(others.len());
            } else {
                others.push(bare);
            }
        }
        if !has_data || data.iter().all(u8::is_ascii_whitespace) {
            out.extend_from_slice(event);
            return;
        }
        let Ok(message) = serde_json::from_slice::<Json>(&data) else {
            self.dropped += 1;
            return;
        };
        let Some(message) = decide(message) else {
            return;
        };
        let at = data_at.unwrap_or(others.len());
        for (i, line) in others.iter().enumerate() {
            if i == at {
                write_data(&message, out);
            }
            out.extend_from_slice(line);
            out.push(b'\n');
        }
        if at >= others.len() {
            write_data(&message, out);
        }
        out.push(b'\n');
    }
}

fn write_data(message: &Json, out: &mut Vec<u8>) {
    out.extend_from_slice(b"data: ");
    // Compact JSON has no raw newline, so the message is one `data:` line.
    out.extend_from_slice(&serde_json::to_vec(message).unwrap_or_default());
    out.push(b'\n');
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;

    #[test]
    fn json_rpc_messages_are_classified() {
        let call = json!({"jsonrpc": "2.0", "id": 7, "method": "tools/call",
            "params": {"name": "issue_refund", "arguments": {"order": "A-1", "amount": 250}}});
        let m = classify(&call).unwrap().unwrap();
        assert_eq!(m.id, json!(7));
        assert_eq!(m.tool(), Some("issue_refund"));
        let tc = m.tool_call().unwrap();
        assert_eq!(tc.id, "7");
        assert_eq!(tc.argument("/amount"), Some(&json!(250)));
        // The identity of a call ignores its JSON-RPC id.
        let mut again = call.clone();
        again["id"] = json!("other");
        assert_eq!(
            classify(&again).unwrap().unwrap().call_identity(),
            m.call_identity()
        );
        let list = json!({"jsonrpc": "2.0", "id": "a", "method": "tools/list"});
        assert_eq!(classify(&list).unwrap().unwrap().kind, Kind::ToolsList);
        let note = json!({"jsonrpc": "2.0", "method": "notifications/initialized"});
        let n = classify(&note).unwrap().unwrap();
        assert_eq!((n.kind.clone(), n.id.clone()), (Kind::Other, Json::Null));
        let answer = json!({"jsonrpc": "2.0", "id": 3, "result": {}});
        assert_eq!(
            classify(&answer).unwrap().unwrap().method_label(),
            "response"
        );
        // Arguments default to an empty object.
        let bare = json!({"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {"name": "get_faq"}});
        assert_eq!(
            classify(&bare)
                .unwrap()
                .unwrap()
                .tool_call()
                .unwrap()
                .arguments_json,
            "{}"
        );
    }

    #[test]
    fn malformed_json_rpc_is_refused_and_chat_is_not_mcp() {
        assert_eq!(classify(&json!({"model": "m", "messages": []})), None);
        assert_eq!(classify(&json!([1])), None);
        let bad = [
            (json!({"jsonrpc": "1.0", "method": "x"}), INVALID_REQUEST),
            (json!({"jsonrpc": "2.0", "id": 1}), INVALID_REQUEST),
            (
                json!({"jsonrpc": "2.0", "id": 1, "method": "x", "model": "m", "messages": []}),
                INVALID_REQUEST,
            ),
            (
                json!({"jsonrpc": "2.0", "id": 1, "method": 5}),
                INVALID_REQUEST,
            ),
            (
                json!({"jsonrpc": "2.0", "id": 1, "method": "tools/call"}),
                INVALID_PARAMS,
            ),
            (
                json!({"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {"name": 1}}),
                INVALID_PARAMS,
            ),
            (
                json!({"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {"name": "a", "arguments": [1]}}),
                INVALID_PARAMS,
            ),
        ];
        for (body, code) in bad {
            assert_eq!(classify(&body).unwrap().unwrap_err().0, code, "{body}");
        }
    }

    #[test]
    fn errors_have_the_json_rpc_shape() {
        let e = error_response(&json!(4), DENIED, "no", json!({"clause": "AIP-9.1"}));
        assert_eq!(
            e,
            json!({"jsonrpc": "2.0", "id": 4, "error": {"code": -32001, "message": "no", "data": {"clause": "AIP-9.1"}}})
        );
        let e = error_response(&Json::Null, INVALID_REQUEST, "bad", Json::Null);
        assert!(e["error"].get("data").is_none());
        assert!(e["id"].is_null());
    }

    #[test]
    fn tools_list_results_are_filtered() {
        let mut m = json!({"jsonrpc": "2.0", "id": 1, "result": {"tools": [
            {"name": "lookup_order", "inputSchema": {}}, {"name": "drop_tables"}, {"title": "nameless"}]}});
        assert_eq!(listed_tools(&m), vec!["lookup_order", "drop_tables"]);
        assert_eq!(hide_tools(&mut m, &["drop_tables".into()]), 2);
        assert_eq!(listed_tools(&m), vec!["lookup_order"]);
        assert_eq!(hide_tools(&mut json!({"result": {}}), &[]), 0);
        assert!(is_response_to(&m, &json!(1)));
        assert!(!is_response_to(&m, &json!(2)));
        assert!(!is_response_to(
            &json!({"jsonrpc": "2.0", "method": "notifications/progress"}),
            &Json::Null
        ));
    }

    #[test]
    fn tool_results_read_as_a_tool_message() {
        let m = json!({"jsonrpc": "2.0", "id": 1, "result": {
            "content": [{"type": "text", "text": "mail ann@example.com"}],
            "structuredContent": {"key": "AKIAIOSFODNN7EXAMPLE"}}});
        let view = tool_result_view(&m).unwrap();
        let mut seen = Vec::new();
        crate::tools::any_tool_result(&view, |t| {
            seen.push(t.to_string());
            false
        });
        assert!(seen.contains(&"mail ann@example.com".to_string()));
        assert!(seen.contains(&"AKIAIOSFODNN7EXAMPLE".to_string()));
        assert_eq!(tool_result_view(&json!({"error": {}})), None);
        assert_eq!(
            crate::tools::offered_tools(&offered_view(&["a".into(), "b".into()])),
            vec!["a", "b"]
        );
    }

    fn redact_emails(mut m: Json) -> Option<Json> {
        if let Some(t) = m.pointer_mut("/result/content/0/text") {
            let s = t.as_str().unwrap().replace("ann@example.com", "[EMAIL]");
            *t = Json::String(s);
        }
        if m.get("drop").is_some() {
            return None;
        }
        Some(m)
    }

    fn stream() -> Vec<u8> {
        let mut s = Vec::new();
        s.extend_from_slice(b": a comment\n\nid: prime-1\ndata:\n\n");
        s.extend_from_slice(b"event: message\nid: 1\ndata: {\"jsonrpc\":\"2.0\",\"method\":\"notifications/progress\",\"params\":{\"progress\":1}}\n\n");
        s.extend_from_slice(b"data: {\"drop\": true}\r\n\r\n");
        s.extend_from_slice(b"data: not json\n\n");
        s.extend_from_slice(b"event: message\r\ndata: {\"jsonrpc\":\"2.0\",\"id\":7,\r\ndata: \"result\":{\"content\":[{\"type\":\"text\",\"text\":\"mail ann@example.com now\"}]}}\r\n\r\n");
        s
    }

    #[test]
    fn event_streams_are_decided_whole_whatever_the_cut() {
        let input = stream();
        let mut whole = Vec::new();
        let mut es = EventStream::new();
        es.push(&input, &mut redact_emails, &mut whole);
        es.finish(&mut redact_emails, &mut whole);
        assert_eq!(es.dropped, 1);
        let text = String::from_utf8(whole.clone()).unwrap();
        assert!(
            text.starts_with(": a comment\n\nid: prime-1\ndata:\n\n"),
            "{text}"
        );
        assert!(text.contains("event: message\nid: 1\ndata: {"), "{text}");
        assert!(text.contains("[EMAIL]"), "{text}");
        assert!(!text.contains("ann@example.com"), "{text}");
        assert!(!text.contains("drop"), "{text}");
        assert!(!text.contains("not json"), "{text}");
        assert!(text.ends_with("now\"}]}}\n\n"), "{text}");
        // One byte at a time: the same output.
        let mut out = Vec::new();
        let mut es = EventStream::new();
        for b in &input {
            es.push(std::slice::from_ref(b), &mut redact_emails, &mut out);
        }
        es.finish(&mut redact_emails, &mut out);
        assert_eq!(out, whole);
        // Cut once anywhere: the same output, and nothing of an event leaves before it
        // is whole.
        for cut in 0..input.len() {
            let mut out = Vec::new();
            let mut es = EventStream::new();
            es.push(&input[..cut], &mut redact_emails, &mut out);
            assert!(!String::from_utf8_lossy(&out).contains("ann@"), "cut {cut}");
            es.push(&input[cut..], &mut redact_emails, &mut out);
            es.finish(&mut redact_emails, &mut out);
            assert_eq!(out, whole, "cut at {cut}");
        }
    }

    #[test]
    fn an_event_cut_short_is_still_decided() {
        let mut out = Vec::new();
        let mut es = EventStream::new();
        es.push(
            b"data: {\"jsonrpc\":\"2.0\",\"id\":1,\"result\":{\"content\":[{\"type\":\"text\",\"text\":\"ann@example.com\"}]}}",
            &mut redact_emails,
            &mut out,
        );
        assert!(out.is_empty());
        es.finish(&mut redact_emails, &mut out);
        let text = String::from_utf8(out).unwrap();
        assert!(text.contains("[EMAIL]") && !text.contains("ann@"), "{text}");
    }
}
