//! Provider mocks in the shapes of the Anthropic Messages API and the OpenAI Responses
//! API: they echo the request's prompt back (system prompt or instructions, then the last
//! user turn, joined by ` | `) as text and again as a tool call's arguments (or, when
//! the request's history holds a tool call, call that tool again with the same
//! arguments), in a JSON reply or a stream with one character per delta event and each
//! API's own `event:` lines, with usage where each API reports it. What a gateway restores is then exactly
//! what the client sent. Written from the APIs' documentation, independently of the
//! engine's own reading of these shapes.

use serde_json::{Value, json};

use super::upstream::Reply;

/// Which API the mock speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MockApi {
    /// `POST /v1/messages`.
    Anthropic,
    /// `POST /v1/responses`.
    Responses,
}

/// Input tokens every mock reply reports.
pub const INPUT_TOKENS: u64 = 25;

/// The text a block (a string, or a list of blocks/parts with `text`) holds, parts joined
/// by ` | `.
fn text_of(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Array(parts) => parts
            .iter()
            .filter_map(|p| p["text"].as_str())
            .collect::<Vec<_>>()
            .join(" | "),
        _ => String::new(),
    }
}

/// What the mock echoes for a request body.
pub fn echoed_text(api: MockApi, request: &Value) -> String {
    let (system, last) = match api {
        MockApi::Anthropic => (
            text_of(&request["system"]),
            request["messages"]
                .as_array()
                .and_then(|m| m.last())
                .map(|m| text_of(&m["content"]))
                .unwrap_or_default(),
        ),
        MockApi::Responses => (
            text_of(&request["instructions"]),
            match &request["input"] {
                Value::String(s) => s.clone(),
                Value::Array(items) => items
                    .last()
                    .map(|i| text_of(&i["content"]))
                    .unwrap_or_default(),
                _ => String::new(),
            },
        ),
    };
    if system.is_empty() {
        last
    } else {
        format!("{system} | {last}")
    }
}

/// The last tool call in a request's history (Anthropic `tool_use` blocks, Responses
/// `function_call` items): its name and its arguments as JSON text.
pub fn last_tool_call(api: MockApi, request: &Value) -> Option<(String, String)> {
    let calls: Vec<&Value> = match api {
        MockApi::Anthropic => request["messages"]
            .as_array()?
            .iter()
            .filter_map(|m| m["content"].as_array())
            .flatten()
            .filter(|b| b["type"] == "tool_use")
            .collect(),
        MockApi::Responses => request["input"]
            .as_array()?
            .iter()
            .filter(|i| i["type"] == "function_call")
            .collect(),
    };
    let last = calls.last()?;
    let name = last["name"].as_str()?.to_string();
    let args = match api {
        MockApi::Anthropic => last["input"].to_string(),
        MockApi::Responses => last["arguments"].as_str()?.to_string(),
    };
    Some((name, args))
}

/// The mock's reply to `body`, with `output_tokens` of usage: the echoed text, then a
/// tool call. The call repeats the last tool call of the request's history (the model
/// calls the same tool again with the same arguments, placeholders included), or else is
/// `lookup_order` with the echoed text as its `text` argument.
pub fn echo(api: MockApi, sse: bool, output_tokens: u64, body: &[u8]) -> Reply {
    let request: Value = serde_json::from_slice(body).unwrap_or_default();
    let text = echoed_text(api, &request);
    let (tool, args) = last_tool_call(api, &request)
        .unwrap_or_else(|| ("lookup_order".into(), json!({ "text": text }).to_string()));
    let input: Value = serde_json::from_str(&args).unwrap_or_default();
    let model = request["model"].clone();
    if !sse {
        let body = match api {
            MockApi::Anthropic => json!({
                "id": "msg_echo", "type": "message", "role": "assistant", "model": model,
                "content": [
                    {"type": "text", "text": text},
                    {"type": "tool_use", "id": "toolu_echo", "name": tool, "input": input}
                ],
                "stop_reason": "tool_use", "stop_sequence": null,
                "usage": {"input_tokens": INPUT_TOKENS, "output_tokens": output_tokens}
            }),
            MockApi::Responses => json!({
                "id": "resp_echo", "object": "response", "status": "completed", "model": model,
                "output": [
                    {"type": "message", "id": "msg_echo", "role": "assistant", "status": "completed",
                     "content": [{"type": "output_text", "text": text, "annotations": []}]},
                    {"type": "function_call", "id": "fc_echo", "call_id": "call_echo",
                     "name": tool, "arguments": args}
                ],
                "usage": {"input_tokens": INPUT_TOKENS, "output_tokens": output_tokens,
                    "total_tokens": INPUT_TOKENS + output_tokens}
            }),
        };
        return Reply::Json {
            status: 200,
            body: body.to_string(),
        };
    }
    let chars = |s: &str| s.chars().map(|c| c.to_string()).collect::<Vec<_>>();
    let mut events: Vec<(&'static str, Value)> = Vec::new();
    match api {
        MockApi::Anthropic => {
            events.push((
                "message_start",
                json!({"type": "message_start", "message": {
                "id": "msg_echo", "type": "message", "role": "assistant", "model": model,
                "content": [], "stop_reason": null, "stop_sequence": null,
                "usage": {"input_tokens": INPUT_TOKENS, "output_tokens": 1}}}),
            ));
            events.push((
                "content_block_start",
                json!({"type": "content_block_start",
                "index": 0, "content_block": {"type": "text", "text": ""}}),
            ));
            for c in chars(&text) {
                events.push((
                    "content_block_delta",
                    json!({"type": "content_block_delta",
                    "index": 0, "delta": {"type": "text_delta", "text": c}}),
                ));
            }
            events.push((
                "content_block_stop",
                json!({"type": "content_block_stop", "index": 0}),
            ));
            events.push((
                "content_block_start",
                json!({"type": "content_block_start",
                "index": 1, "content_block": {"type": "tool_use", "id": "toolu_echo",
                "name": tool, "input": {}}}),
            ));
            for c in chars(&args) {
                events.push((
                    "content_block_delta",
                    json!({"type": "content_block_delta",
                    "index": 1, "delta": {"type": "input_json_delta", "partial_json": c}}),
                ));
            }
            events.push((
                "content_block_stop",
                json!({"type": "content_block_stop", "index": 1}),
            ));
            events.push((
                "message_delta",
                json!({"type": "message_delta",
                "delta": {"stop_reason": "tool_use", "stop_sequence": null},
                "usage": {"output_tokens": output_tokens}}),
            ));
            events.push(("message_stop", json!({"type": "message_stop"})));
        }
        MockApi::Responses => {
            events.push((
                "response.created",
                json!({"type": "response.created",
                "response": {"id": "resp_echo", "status": "in_progress", "model": model}}),
            ));
            events.push((
                "response.output_item.added",
                json!({"type": "response.output_item.added",
                "output_index": 0, "item": {"type": "message", "id": "msg_echo",
                "role": "assistant", "content": []}}),
            ));
            for c in chars(&text) {
                events.push((
                    "response.output_text.delta",
                    json!({"type": "response.output_text.delta",
                    "item_id": "msg_echo", "output_index": 0, "content_index": 0, "delta": c}),
                ));
            }
            events.push((
                "response.output_text.done",
                json!({"type": "response.output_text.done",
                "item_id": "msg_echo", "output_index": 0, "content_index": 0, "text": text}),
            ));
            events.push((
                "response.output_item.added",
                json!({"type": "response.output_item.added",
                "output_index": 1, "item": {"type": "function_call", "id": "fc_echo",
                "call_id": "call_echo", "name": tool, "arguments": ""}}),
            ));
            for c in chars(&args) {
                events.push((
                    "response.function_call_arguments.delta",
                    json!({
                    "type": "response.function_call_arguments.delta", "item_id": "fc_echo",
                    "output_index": 1, "delta": c}),
                ));
            }
            events.push((
                "response.function_call_arguments.done",
                json!({
                "type": "response.function_call_arguments.done", "item_id": "fc_echo",
                "output_index": 1, "arguments": args}),
            ));
            events.push((
                "response.completed",
                json!({"type": "response.completed",
                "response": {"id": "resp_echo", "status": "completed", "model": model,
                "usage": {"input_tokens": INPUT_TOKENS, "output_tokens": output_tokens,
                    "total_tokens": INPUT_TOKENS + output_tokens}}}),
            ));
        }
    }
    // Each event in its own HTTP chunk, with its `event:` line, as both providers send.
    // The mock closes the connection after a raw reply, so it says so: a gateway that
    // pooled the connection would race the close and fail its next request.
    let mut bytes = b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ncache-control: no-cache\r\ntransfer-encoding: chunked\r\nconnection: close\r\n\r\n".to_vec();
    for (name, data) in events {
        let event = format!("event: {name}\ndata: {data}\n\n");
        bytes.extend_from_slice(format!("{:x}\r\n{event}\r\n", event.len()).as_bytes());
    }
    bytes.extend_from_slice(b"0\r\n\r\n");
    Reply::Raw {
        bytes,
        reset: false,
    }
}

/// What a client reassembles from a stream of either API: the streamed text, the
/// streamed tool-call arguments, and the text of the final `….done` events (Responses;
/// empty for Anthropic). Fails on an event that is not `event:` + `data:` JSON.
pub fn reassemble(api: MockApi, body: &str) -> Result<(String, String, Vec<String>), String> {
    let (mut text, mut args, mut done) = (String::new(), String::new(), Vec::new());
    for event in body.split("\n\n").filter(|e| !e.trim().is_empty()) {
        let mut lines = event.lines();
        let name = lines
            .next()
            .and_then(|l| l.strip_prefix("event: "))
            .ok_or_else(|| format!("no event line: {event:?}"))?;
        let data = lines
            .next()
            .and_then(|l| l.strip_prefix("data: "))
            .ok_or_else(|| format!("no data line: {event:?}"))?;
        let v: Value = serde_json::from_str(data).map_err(|e| format!("{e}: {data}"))?;
        if v["type"] != name {
            return Err(format!("event `{name}` carries type {}", v["type"]));
        }
        match (api, name) {
            (MockApi::Anthropic, "content_block_delta") => {
                if let Some(t) = v["delta"]["text"].as_str() {
                    text.push_str(t);
                }
                if let Some(j) = v["delta"]["partial_json"].as_str() {
                    args.push_str(j);
                }
            }
            (MockApi::Responses, "response.output_text.delta") => {
                text.push_str(v["delta"].as_str().unwrap_or_default());
            }
            (MockApi::Responses, "response.function_call_arguments.delta") => {
                args.push_str(v["delta"].as_str().unwrap_or_default());
            }
            (MockApi::Responses, "response.output_text.done") => {
                done.push(v["text"].as_str().unwrap_or_default().to_string());
            }
            (MockApi::Responses, "response.function_call_arguments.done") => {
                done.push(v["arguments"].as_str().unwrap_or_default().to_string());
            }
            _ => {}
        }
    }
    Ok((text, args, done))
}
