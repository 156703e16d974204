//! Tool calls as the policy sees them, whatever API carried them: the tools a request
//! offers, the tool results it sends back, and the tool calls a reply makes (whole JSON or
//! a stream of argument deltas). Plain data and parsing, no host calls, so any API
//! adapter (chat completions here; Anthropic Messages and Responses elsewhere) can fill a
//! [`ToolCall`] list and the same rules apply.
//!
//! How a rule reads several calls (documented in `docs/tools.md`): a rule whose condition
//! mentions `tool_call.…` is evaluated once per tool call of the reply, and fires when it
//! holds for at least one of them; a rule that mentions `tool.…` is evaluated once per
//! offered tool. Every `tool_call.…` inside one condition reads the same call, so `name ==
//! "issue_refund" and argument "/amount" > 100` means one call that is both. A reply
//! without tool calls fires no such rule.

use serde_json::Value as Json;

/// One tool call of a reply, API-neutral: the adapter that parsed the reply fills it.
#[derive(Debug, Clone, PartialEq)]
pub struct ToolCall {
    /// The call's id (`call_…`), empty when the API gave none.
    pub id: String,
    /// The function (tool) name.
    pub name: String,
    /// The arguments as the model wrote them: JSON text, not necessarily valid.
    pub arguments_json: String,
    /// `arguments_json` parsed once, `None` when it is not JSON: argument conditions then
    /// compare as missing.
    pub arguments: Option<Json>,
}

impl ToolCall {
    /// A call with its arguments parsed.
    pub fn new(id: &str, name: &str, arguments_json: &str) -> ToolCall {
        ToolCall {
            id: id.to_string(),
            name: name.to_string(),
            arguments_json: arguments_json.to_string(),
            arguments: serde_json::from_str(arguments_json).ok(),
        }
    }

    /// The value at an RFC 6901 pointer inside the arguments (`""` is the whole object).
    pub fn argument(&self, pointer: &str) -> Option<&Json> {
        self.arguments.as_ref()?.pointer(pointer)
    }
}

/// Whether a pointer is a valid RFC 6901 JSON pointer: empty, or `/`-separated tokens
/// where `~` is only followed by `0` or `1`. The checker refuses others.
pub fn is_json_pointer(pointer: &str) -> bool {
    if pointer.is_empty() {
        return true;
    }
    if !pointer.starts_with('/') {
        return false;
    }
    let b = pointer.as_bytes();
    b.iter()
        .enumerate()
        .all(|(i, &c)| c != b'~' || matches!(b.get(i + 1), Some(b'0' | b'1')))
}

/// The names of the tools a chat request offers: `tools[].function.name` (and a bare
/// `tools[].name`, the flat shape some APIs use) and the legacy `functions[].name`.
pub fn offered_tools(body: &Json) -> Vec<&str> {
    let mut out = Vec::new();
    if let Some(tools) = body.get("tools").and_then(Json::as_array) {
        for t in tools {
            let name = t
                .get("function")
                .and_then(|f| f.get("name"))
                .or_else(|| t.get("name"))
                .and_then(Json::as_str);
            if let Some(n) = name {
                out.push(n);
            }
        }
    }
    if let Some(fs) = body.get("functions").and_then(Json::as_array) {
        out.extend(fs.iter().filter_map(|f| f.get("name")?.as_str()));
    }
    out
}

/// Whether a request offers the model any tool, so its reply may carry tool calls.
pub fn offers_tools(body: &Json) -> bool {
    let non_empty = |k: &str| {
        body.get(k)
            .and_then(Json::as_array)
            .is_some_and(|a| !a.is_empty())
    };
    non_empty("tools") || non_empty("functions")
}

/// Calls `f` on the text of every tool result the request sends back; stops at the
/// first `true` and returns whether it did. Every API's shape is read, whatever the path,
/// so a result cannot hide by being written in another API's layout:
///
/// - chat: `role: tool` and `role: function` messages (their string content, or every
///   string inside structured content);
/// - Anthropic Messages: `tool_result` blocks in any message's `content` (their `content`,
///   a string or blocks);
/// - Responses: `function_call_output` items of `input` (their `output`).
pub fn any_tool_result(body: &Json, mut f: impl FnMut(&str) -> bool) -> bool {
    let messages = body
        .get("messages")
        .and_then(Json::as_array)
        .map(Vec::as_slice)
        .unwrap_or_default();
    let chat = messages
        .iter()
        .filter(|m| {
            matches!(
                m.get("role").and_then(Json::as_str),
                Some("tool" | "function")
            )
        })
        .filter_map(|m| m.get("content"));
    let anthropic = messages
        .iter()
        .filter_map(|m| m.get("content")?.as_array())
        .flatten()
        .filter(|b| b.get("type").and_then(Json::as_str) == Some("tool_result"))
        .filter_map(|b| b.get("content"));
    let responses = body
        .get("input")
        .and_then(Json::as_array)
        .into_iter()
        .flatten()
        .filter(|i| i.get("type").and_then(Json::as_str) == Some("function_call_output"))
        .filter_map(|i| i.get("output"));
    chat.chain(anthropic)
        .chain(responses)
        .any(|c| crate::request::any_string(c, &mut f))
}

/// The tool calls of a whole reply, whatever its API, in order: a chat completion's
/// `choices[].message.tool_calls[]` and legacy `message.function_call`; an Anthropic
/// message's `tool_use` blocks of `content` (their `input` object, serialised, is the
/// arguments text); a Responses object's `function_call` items of `output`.
pub fn calls_from_json(reply: &Json) -> Vec<ToolCall> {
    let mut out = Vec::new();
    for choice in reply
        .get("choices")
        .and_then(Json::as_array)
        .into_iter()
        .flatten()
    {
        let Some(message) = choice.get("message") else {
            continue;
        };
        for call in message
            .get("tool_calls")
            .and_then(Json::as_array)
            .into_iter()
            .flatten()
        {
            let f = call.get("function");
            out.push(ToolCall::new(
                str_at(call.get("id")),
                str_at(f.and_then(|f| f.get("name"))),
                str_at(f.and_then(|f| f.get("arguments"))),
            ));
        }
        if let Some(f) = message.get("function_call") {
            out.push(ToolCall::new(
                "",
                str_at(f.get("name")),
                str_at(f.get("arguments")),
            ));
        }
    }
    // A reply holds no `messages` or `input`, so these read the reply's own calls only.
    let others = crate::api::anthropic::tool_calls(reply)
        .into_iter()
        .chain(crate::api::responses::tool_calls(reply));
    out.extend(others.map(|c| from_api(&c)));
    out
}

/// The engine's view of a call an API module read.
pub fn from_api(call: &crate::api::ToolCall<'_>) -> ToolCall {
    let id = call.id.unwrap_or_default();
    match call.arguments {
        crate::api::Arguments::Object(v) => ToolCall {
            id: id.to_string(),
            name: call.name.to_string(),
            arguments_json: v.to_string(),
            arguments: Some(v.clone()),
        },
        crate::api::Arguments::Text(t) => ToolCall::new(id, call.name, t),
    }
}

fn str_at(v: Option<&Json>) -> &str {
    v.and_then(Json::as_str).unwrap_or_default()
}

/// Reassembles the tool calls of a streamed reply from its `data:` events, whatever its
/// API (events that are not JSON, such as `[DONE]`, are skipped):
///
/// - chat: `choices[a].delta.tool_calls[].index` says which call a fragment continues,
///   the first fragment brings `id` and `function.name`, every fragment appends to
///   `function.arguments`; `delta.function_call` is the legacy single call;
/// - Anthropic Messages: `content_block_start` with a `tool_use` block opens a call at the
///   block's `index` (id, name, and its `input` if no delta follows), and each
///   `content_block_delta` of type `input_json_delta` appends its `partial_json`;
/// - Responses: `response.output_item.added` / `.done` with a `function_call` item opens
///   (or completes) the call at `output_index` (`call_id`, name), each
///   `response.function_call_arguments.delta` appends its `delta`, and the `….done`
///   events carry the whole arguments.
///
/// When an API sends the whole arguments again (`….done`) and they differ from the
/// deltas, both versions are returned as calls with the same id and name, so a rule
/// holds if it holds for either: a client may read one or the other.
#[derive(Debug, Default)]
pub struct SseToolCalls {
    line: Vec<u8>,
    data: Vec<u8>,
    /// The calls so far, in order of first appearance.
    calls: Vec<(Slot, Partial)>,
}

/// Which call a fragment continues: (API shape, choice or block or output index, tool
/// index within a chat choice).
type Slot = (u8, u64, u64);

/// A streamed call being reassembled.
#[derive(Debug, Default)]
struct Partial {
    id: String,
    name: String,
    /// The arguments the deltas spelled, in order.
    deltas: String,
    /// The whole arguments an event sent at once (`….done`, an item's `arguments`, an
    /// Anthropic block's non-empty `input`), the last one seen.
    whole: Option<String>,
    /// True once a delta appended to `deltas`.
    streamed: bool,
}

/// [`Slot`] shapes.
const CHAT: u8 = 0;
const ANTHROPIC: u8 = 1;
const RESPONSES: u8 = 2;

/// A tool call marked as the legacy `function_call` (one per choice).
const LEGACY: u64 = u64::MAX;

impl SseToolCalls {
    /// An accumulator that has seen nothing.
    pub fn new() -> SseToolCalls {
        SseToolCalls::default()
    }

    /// Feeds the next piece of the stream, cut anywhere.
    pub fn push(&mut self, chunk: &[u8]) {
        for &b in chunk {
            if b == b'\n' {
                let line = std::mem::take(&mut self.line);
                self.line_done(&line);
            } else {
                self.line.push(b);
            }
        }
    }

    fn line_done(&mut self, line: &[u8]) {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if line.is_empty() {
            self.dispatch();
        } else if let Some(rest) = line.strip_prefix(b"data:") {
            let rest = rest.strip_prefix(b" ").unwrap_or(rest);
            if !self.data.is_empty() {
                self.data.push(b'\n');
            }
            self.data.extend_from_slice(rest);
        }
    }

    fn dispatch(&mut self) {
        let data = std::mem::take(&mut self.data);
        let Ok(event) = serde_json::from_slice::<Json>(&data) else {
            return;
        };
        if let Some(ty) = event.get("type").and_then(Json::as_str) {
            self.typed(ty, &event);
        }
        let Some(choices) = event.get("choices").and_then(Json::as_array) else {
            return;
        };
        for (pos, choice) in choices.iter().enumerate() {
            let c = choice
                .get("index")
                .and_then(Json::as_u64)
                .unwrap_or(pos as u64);
            let Some(delta) = choice.get("delta") else {
                continue;
            };
            for (j, tc) in delta
                .get("tool_calls")
                .and_then(Json::as_array)
                .into_iter()
                .flatten()
                .enumerate()
            {
                let t = tc.get("index").and_then(Json::as_u64).unwrap_or(j as u64);
                let f = tc.get("function");
                let p = self.slot((CHAT, c, t), true);
                if let Some(p) = p {
                    append(&mut p.id, tc.get("id"));
                    append(&mut p.name, f.and_then(|f| f.get("name")));
                    p.delta(f.and_then(|f| f.get("arguments")));
                }
            }
            if let Some(f) = delta.get("function_call")
                && let Some(p) = self.slot((CHAT, c, LEGACY), true)
            {
                append(&mut p.name, f.get("name"));
                p.delta(f.get("arguments"));
            }
        }
    }

    /// The events of the typed APIs (Anthropic Messages, Responses).
    fn typed(&mut self, ty: &str, event: &Json) {
        let index = |k: &str| event.get(k).and_then(Json::as_u64).unwrap_or_default();
        match ty {
            "content_block_start" => {
                let block = event.get("content_block");
                if block.and_then(|b| b.get("type")).and_then(Json::as_str) != Some("tool_use") {
                    return;
                }
                if let Some(p) = self.slot((ANTHROPIC, index("index"), 0), true) {
                    set(&mut p.id, block.and_then(|b| b.get("id")));
                    set(&mut p.name, block.and_then(|b| b.get("name")));
                    // The input comes in deltas, after an empty object; a non-empty one
                    // is the whole input.
                    if let Some(input) = block.and_then(|b| b.get("input"))
                        && input.as_object().is_none_or(|o| !o.is_empty())
                    {
                        p.whole = Some(input.to_string());
                    }
                }
            }
            "content_block_delta" => {
                let delta = event.get("delta");
                if delta.and_then(|d| d.get("type")).and_then(Json::as_str)
                    != Some("input_json_delta")
                {
                    return;
                }
                // Only a block opened as a tool call: a server tool's input is not the
                // application's to run.
                if let Some(p) = self.slot((ANTHROPIC, index("index"), 0), false) {
                    p.delta(delta.and_then(|d| d.get("partial_json")));
                }
            }
            "response.output_item.added" | "response.output_item.done" => {
                let item = event.get("item");
                if item.and_then(|i| i.get("type")).and_then(Json::as_str) != Some("function_call")
                {
                    return;
                }
                if let Some(p) = self.slot((RESPONSES, index("output_index"), 0), true) {
                    set(&mut p.id, item.and_then(|i| i.get("call_id")));
                    set(&mut p.name, item.and_then(|i| i.get("name")));
                    if let Some(a) = item
                        .and_then(|i| i.get("arguments"))
                        .and_then(Json::as_str)
                        .filter(|a| !a.is_empty() || ty.ends_with(".done"))
                    {
                        p.whole = Some(a.to_string());
                    }
                }
            }
            "response.function_call_arguments.delta" => {
                if let Some(p) = self.slot((RESPONSES, index("output_index"), 0), true) {
                    p.delta(event.get("delta"));
                }
            }
            "response.function_call_arguments.done" => {
                if let Some(p) = self.slot((RESPONSES, index("output_index"), 0), true)
                    && let Some(a) = event.get("arguments").and_then(Json::as_str)
                {
                    p.whole = Some(a.to_string());
                }
            }
            _ => {}
        }
    }

    /// The call at `slot`, opened if `open` and it is new.
    fn slot(&mut self, slot: Slot, open: bool) -> Option<&mut Partial> {
        let pos = match self.calls.iter().position(|(k, _)| *k == slot) {
            Some(p) => p,
            None if open => {
                self.calls.push((slot, Partial::default()));
                self.calls.len() - 1
            }
            None => return None,
        };
        self.calls.get_mut(pos).map(|(_, p)| p)
    }

    /// Ends the stream (an event without its blank line still counts) and returns the
    /// calls, in order of first appearance.
    pub fn finish(mut self) -> Vec<ToolCall> {
        if !self.line.is_empty() {
            let line = std::mem::take(&mut self.line);
            self.line_done(&line);
        }
        self.dispatch();
        let mut out = Vec::new();
        for (_, p) in self.calls {
            match p.whole {
                Some(whole) if p.streamed && whole != p.deltas => {
                    out.push(ToolCall::new(&p.id, &p.name, &p.deltas));
                    out.push(ToolCall::new(&p.id, &p.name, &whole));
                }
                Some(whole) => out.push(ToolCall::new(&p.id, &p.name, &whole)),
                None => out.push(ToolCall::new(&p.id, &p.name, &p.deltas)),
            }
        }
        out
    }
}

impl Partial {
    fn delta(&mut self, fragment: Option<&Json>) {
        if let Some(a) = fragment.and_then(Json::as_str) {
            self.deltas.push_str(a);
            self.streamed = true;
        }
    }
}

/// Appends a string fragment (chat deltas spread ids and names too).
fn append(to: &mut String, v: Option<&Json>) {
    if let Some(s) = v.and_then(Json::as_str) {
        to.push_str(s);
    }
}

/// Sets a field once: the first event that names it wins.
fn set(to: &mut String, v: Option<&Json>) {
    if to.is_empty() {
        append(to, v);
    }
}

/// [`SseToolCalls`] over a whole stream at once.
pub fn calls_from_sse(stream: &[u8]) -> Vec<ToolCall> {
    let mut acc = SseToolCalls::new();
    acc.push(stream);
    acc.finish()
}

/// The request body without the offered tools named in `remove` (`tools[]` entries and
/// legacy `functions[]`). When no tool is left, `tools`/`functions` go, and so do
/// `tool_choice`/`function_call`/`parallel_tool_calls`, which the provider would refuse
/// without tools; a `tool_choice` naming a removed tool goes too. `Ok(None)` when nothing
/// changed. The body is re-serialised (keys keep their order).
pub fn strip_tools(body: &[u8], remove: &[String]) -> Result<Option<Vec<u8>>, String> {
    if remove.is_empty() {
        return Ok(None);
    }
    let mut json: Json = serde_json::from_slice(body).map_err(|e| e.to_string())?;
    let Some(obj) = json.as_object_mut() else {
        return Ok(None);
    };
    let gone = |t: &Json| {
        let name = t
            .get("function")
            .and_then(|f| f.get("name"))
            .or_else(|| t.get("name"))
            .and_then(Json::as_str);
        name.is_some_and(|n| remove.iter().any(|r| r == n))
    };
    let mut changed = false;
    for (list, choice) in [("tools", "tool_choice"), ("functions", "function_call")] {
        let Some(items) = obj.get_mut(list).and_then(Json::as_array_mut) else {
            continue;
        };
        let before = items.len();
        items.retain(|t| !gone(t));
        if items.len() == before {
            continue;
        }
        changed = true;
        let empty = items.is_empty();
        let choice_gone = obj.get(choice).is_some_and(|c| {
            c.get("function")
                .and_then(|f| f.get("name"))
                .or_else(|| c.get("name"))
                .and_then(Json::as_str)
                .is_some_and(|n| remove.iter().any(|r| r == n))
        });
        if empty {
            obj.remove(list);
            if list == "tools" {
                obj.remove("parallel_tool_calls");
            }
        }
        if empty || choice_gone {
            obj.remove(choice);
        }
    }
    if !changed {
        return Ok(None);
    }
    serde_json::to_vec(&json)
        .map(Some)
        .map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;
    use serde_json::json;

    fn sse(events: &[Json]) -> Vec<u8> {
        let mut out = Vec::new();
        for e in events {
            out.extend_from_slice(format!("data: {e}\n\n").as_bytes());
        }
        out.extend_from_slice(b"data: [DONE]\n\n");
        out
    }

    fn refund_stream() -> Vec<u8> {
        let d = |tc: Json| json!({"choices": [{"index": 0, "delta": {"tool_calls": [tc]}}]});
        sse(&[
            d(
                json!({"index": 0, "id": "call_1", "type": "function", "function": {"name": "issue_refund", "arguments": ""}}),
            ),
            d(json!({"index": 0, "function": {"arguments": "{\"amo"}})),
            d(json!({"index": 0, "function": {"arguments": "unt\": 250, \"order\": \"A-1\"}"}})),
            d(
                json!({"index": 1, "id": "call_2", "function": {"name": "get_faq", "arguments": "{}"}}),
            ),
            json!({"choices": [{"index": 0, "delta": {}, "finish_reason": "tool_calls"}]}),
        ])
    }

    #[test]
    fn streamed_calls_are_reassembled_whatever_the_cut() {
        let stream = refund_stream();
        let whole = calls_from_sse(&stream);
        assert_eq!(whole.len(), 2);
        assert_eq!(whole[0].name, "issue_refund");
        assert_eq!(whole[0].id, "call_1");
        assert_eq!(whole[0].argument("/amount"), Some(&json!(250)));
        assert_eq!(whole[1].name, "get_faq");
        // Cut at every byte: the same calls.
        let mut acc = SseToolCalls::new();
        for b in &stream {
            acc.push(std::slice::from_ref(b));
        }
        assert_eq!(acc.finish(), whole);
        // Cut once anywhere.
        for cut in 0..stream.len() {
            let mut acc = SseToolCalls::new();
            acc.push(&stream[..cut]);
            acc.push(&stream[cut..]);
            assert_eq!(acc.finish(), whole, "cut at {cut}");
        }
    }

    #[test]
    fn whole_replies_give_their_calls_and_legacy_function_calls() {
        let reply = json!({"choices": [{"index": 0, "message": {"role": "assistant", "content": null,
            "tool_calls": [{"id": "c1", "type": "function", "function": {"name": "lookup_order", "arguments": "{\"order\":\"A-1\"}"}}],
            "function_call": {"name": "legacy", "arguments": "not json"}}}]});
        let calls = calls_from_json(&reply);
        assert_eq!(calls.len(), 2);
        assert_eq!(calls[0].argument("/order"), Some(&json!("A-1")));
        assert_eq!(calls[1].name, "legacy");
        assert_eq!(calls[1].arguments, None);
        assert_eq!(calls[1].argument("/x"), None);
        assert!(calls_from_json(&json!({"choices": [{"message": {"content": "hi"}}]})).is_empty());
        assert!(calls_from_json(&json!("not an object")).is_empty());
    }

    #[test]
    fn offered_tools_and_tool_results_are_read() {
        let body = json!({"model": "m", "tools": [
            {"type": "function", "function": {"name": "lookup_order"}},
            {"type": "function", "name": "flat_shape"}],
            "functions": [{"name": "legacy_fn"}],
            "messages": [{"role": "user", "content": "u"},
                {"role": "tool", "tool_call_id": "c1", "content": "result text"},
                {"role": "tool", "content": [{"type": "text", "text": "part text"}]}]});
        assert_eq!(
            offered_tools(&body),
            vec!["lookup_order", "flat_shape", "legacy_fn"]
        );
        assert!(offers_tools(&body));
        assert!(!offers_tools(&json!({"tools": []})));
        let mut seen = Vec::new();
        any_tool_result(&body, |t| {
            seen.push(t.to_string());
            false
        });
        assert!(seen.contains(&"result text".to_string()));
        assert!(seen.contains(&"part text".to_string()));
        assert!(!seen.contains(&"u".to_string()));
    }

    #[test]
    fn stripping_removes_tools_and_what_needs_them() {
        let body = br#"{"model":"m","tools":[{"type":"function","function":{"name":"a"}},{"type":"function","function":{"name":"b"}}],"tool_choice":{"type":"function","function":{"name":"b"}},"messages":[]}"#;
        let out = strip_tools(body, &["b".into()]).unwrap().unwrap();
        let v: Json = serde_json::from_slice(&out).unwrap();
        assert_eq!(v["tools"].as_array().unwrap().len(), 1);
        assert!(v.get("tool_choice").is_none());
        // Keys keep their order.
        assert!(String::from_utf8_lossy(&out).starts_with(r#"{"model":"m","tools""#));
        let out = strip_tools(body, &["a".into(), "b".into()])
            .unwrap()
            .unwrap();
        let v: Json = serde_json::from_slice(&out).unwrap();
        assert!(v.get("tools").is_none());
        assert_eq!(strip_tools(body, &["zzz".into()]), Ok(None));
        assert_eq!(strip_tools(body, &[]), Ok(None));
        assert!(strip_tools(b"{not json", &["a".into()]).is_err());
    }

    /// Anthropic and Responses events, each with its `event:` line.
    fn typed_sse(events: &[Json]) -> Vec<u8> {
        let mut out = Vec::new();
        for e in events {
            let name = e["type"].as_str().unwrap_or_default();
            out.extend_from_slice(format!("event: {name}\ndata: {e}\n\n").as_bytes());
        }
        out
    }

    fn anthropic_stream() -> Vec<u8> {
        let delta = |i: u64, j: &str| {
            json!({"type": "content_block_delta", "index": i,
                "delta": {"type": "input_json_delta", "partial_json": j}})
        };
        typed_sse(&[
            json!({"type": "message_start", "message": {"id": "msg_1", "content": [], "usage": {"input_tokens": 5}}}),
            json!({"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}}),
            json!({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "Refunding"}}),
            json!({"type": "content_block_stop", "index": 0}),
            json!({"type": "content_block_start", "index": 1, "content_block": {"type": "tool_use",
                "id": "toolu_1", "name": "issue_refund", "input": {}}}),
            delta(1, "{\"amo"),
            delta(1, "unt\": 250, \"note\": \"a \\\"b\\\"\"}"),
            json!({"type": "content_block_stop", "index": 1}),
            // A server tool's input streams too, but it is not the application's call.
            json!({"type": "content_block_start", "index": 2, "content_block": {"type": "server_tool_use",
                "id": "srvtoolu_1", "name": "web_search", "input": {}}}),
            delta(2, "{\"query\": \"x\"}"),
            json!({"type": "content_block_stop", "index": 2}),
            json!({"type": "content_block_start", "index": 3, "content_block": {"type": "tool_use",
                "id": "toolu_2", "name": "get_faq", "input": {}}}),
            delta(3, "{}"),
            json!({"type": "content_block_stop", "index": 3}),
            json!({"type": "message_delta", "delta": {"stop_reason": "tool_use"}, "usage": {"output_tokens": 9}}),
            json!({"type": "message_stop"}),
        ])
    }

    fn responses_stream(done_args: &str) -> Vec<u8> {
        let delta = |d: &str| {
            json!({"type": "response.function_call_arguments.delta", "item_id": "fc_1",
                "output_index": 1, "delta": d})
        };
        typed_sse(&[
            json!({"type": "response.created", "response": {"id": "resp_1", "status": "in_progress"}}),
            json!({"type": "response.output_item.added", "output_index": 0,
                "item": {"type": "message", "id": "msg_1", "role": "assistant", "content": []}}),
            json!({"type": "response.output_text.delta", "item_id": "msg_1", "output_index": 0,
                "content_index": 0, "delta": "Refunding"}),
            json!({"type": "response.output_item.added", "output_index": 1,
                "item": {"type": "function_call", "id": "fc_1", "call_id": "call_1",
                "name": "issue_refund", "arguments": ""}}),
            delta("{\"amount\""),
            delta(": 250}"),
            json!({"type": "response.function_call_arguments.done", "item_id": "fc_1",
                "output_index": 1, "arguments": done_args}),
            json!({"type": "response.output_item.done", "output_index": 1,
                "item": {"type": "function_call", "id": "fc_1", "call_id": "call_1",
                "name": "issue_refund", "arguments": done_args}}),
            json!({"type": "response.completed", "response": {"id": "resp_1", "status": "completed"}}),
        ])
    }

    /// The calls of `stream` fed whole, one byte at a time, and cut once anywhere agree.
    fn every_cut(stream: &[u8]) -> Vec<ToolCall> {
        let whole = calls_from_sse(stream);
        let mut acc = SseToolCalls::new();
        for b in stream {
            acc.push(std::slice::from_ref(b));
        }
        assert_eq!(acc.finish(), whole);
        for cut in 0..stream.len() {
            let mut acc = SseToolCalls::new();
            acc.push(&stream[..cut]);
            acc.push(&stream[cut..]);
            assert_eq!(acc.finish(), whole, "cut at {cut}");
        }
        whole
    }

    #[test]
    fn anthropic_tool_use_streams_are_reassembled_whatever_the_cut() {
        let calls = every_cut(&anthropic_stream());
        let names: Vec<&str> = calls.iter().map(|c| c.name.as_str()).collect();
        assert_eq!(names, ["issue_refund", "get_faq"]);
        assert_eq!(calls[0].id, "toolu_1");
        assert_eq!(calls[0].argument("/amount"), Some(&json!(250)));
        assert_eq!(calls[0].argument("/note"), Some(&json!("a \"b\"")));
        assert_eq!(calls[1].argument(""), Some(&json!({})));
        // A block whose whole input came at its start, with no delta.
        let whole = typed_sse(&[json!({"type": "content_block_start", "index": 0,
            "content_block": {"type": "tool_use", "id": "t", "name": "n", "input": {"a": 1}}})]);
        assert_eq!(calls_from_sse(&whole)[0].argument("/a"), Some(&json!(1)));
    }

    #[test]
    fn responses_function_call_streams_are_reassembled_whatever_the_cut() {
        let calls = every_cut(&responses_stream("{\"amount\": 250}"));
        assert_eq!(calls.len(), 1);
        assert_eq!(calls[0].id, "call_1");
        assert_eq!(calls[0].name, "issue_refund");
        assert_eq!(calls[0].argument("/amount"), Some(&json!(250)));
        // `….done` events that disagree with the deltas: both versions are judged.
        let calls = every_cut(&responses_stream("{\"amount\": 5}"));
        let amounts: Vec<_> = calls.iter().map(|c| c.argument("/amount")).collect();
        assert_eq!(amounts, [Some(&json!(250)), Some(&json!(5))]);
        assert!(calls.iter().all(|c| c.name == "issue_refund"));
    }

    #[test]
    fn whole_anthropic_and_responses_replies_give_their_calls() {
        let a = json!({"id": "msg_1", "type": "message", "role": "assistant", "content": [
            {"type": "text", "text": "ok"},
            {"type": "tool_use", "id": "toolu_1", "name": "issue_refund", "input": {"amount": 250}},
            {"type": "tool_use", "id": "toolu_2"}]});
        let calls = calls_from_json(&a);
        assert_eq!(calls.len(), 2);
        assert_eq!(calls[0].argument("/amount"), Some(&json!(250)));
        assert_eq!(calls[0].arguments_json, r#"{"amount":250}"#);
        // No name: still a call, which a name allowlist refuses.
        assert_eq!(calls[1].name, "");
        let r = json!({"object": "response", "output": [
            {"type": "message", "content": [{"type": "output_text", "text": "ok"}]},
            {"type": "function_call", "call_id": "call_1", "name": "delete_account",
             "arguments": "{\"account\":\"C-9\"}"}]});
        let calls = calls_from_json(&r);
        assert_eq!(calls.len(), 1);
        assert_eq!(calls[0].id, "call_1");
        assert_eq!(calls[0].argument("/account"), Some(&json!("C-9")));
    }

    #[test]
    fn tool_results_of_every_shape_are_read() {
        let results = |body: &Json| {
            let mut seen = Vec::new();
            any_tool_result(body, |t| {
                seen.push(t.to_string());
                false
            });
            seen
        };
        let a = json!({"messages": [
            {"role": "user", "content": "u"},
            {"role": "assistant", "content": [{"type": "tool_use", "id": "t1", "name": "n", "input": {"q": "arg"}}]},
            {"role": "user", "content": [
                {"type": "tool_result", "tool_use_id": "t1", "content": "plain result"},
                {"type": "tool_result", "tool_use_id": "t2", "content": [{"type": "text", "text": "block result"}]},
                {"type": "text", "text": "not a result"}]}]});
        // Every string of a result is scanned (object keys too, as `any_string` does).
        let seen = results(&a);
        for want in ["plain result", "block result"] {
            assert!(seen.iter().any(|s| s == want), "{seen:?}");
        }
        for not in ["u", "arg", "not a result"] {
            assert!(!seen.iter().any(|s| s == not), "{seen:?}");
        }
        let r = json!({"input": [
            {"role": "user", "content": "u"},
            {"type": "function_call", "call_id": "c1", "name": "n", "arguments": "{}"},
            {"type": "function_call_output", "call_id": "c1", "output": "item result"}]});
        assert_eq!(results(&r), ["item result"]);
        assert!(any_tool_result(&r, |t| t.contains("item")));
        assert!(!any_tool_result(&json!({"input": "just text"}), |_| true));
    }

    #[test]
    fn stripping_works_on_the_flat_tool_shapes() {
        // Anthropic: `tools[].name`, `tool_choice: {type: tool, name}`.
        let a = br#"{"model":"m","tools":[{"name":"a","input_schema":{}},{"name":"b","input_schema":{}}],"tool_choice":{"type":"tool","name":"b"},"messages":[]}"#;
        let v: Json =
            serde_json::from_slice(&strip_tools(a, &["b".into()]).unwrap().unwrap()).unwrap();
        assert_eq!(v["tools"], json!([{"name": "a", "input_schema": {}}]));
        assert!(v.get("tool_choice").is_none());
        // Responses: `tools[].name` of `type: function`; built-in tools have no name and stay.
        let r = br#"{"model":"m","tools":[{"type":"function","name":"b"},{"type":"web_search"}],"parallel_tool_calls":true,"input":"x"}"#;
        let v: Json =
            serde_json::from_slice(&strip_tools(r, &["b".into()]).unwrap().unwrap()).unwrap();
        assert_eq!(v["tools"], json!([{"type": "web_search"}]));
        assert_eq!(v["parallel_tool_calls"], true);
        assert_eq!(offered_tools(&serde_json::from_slice(r).unwrap()), ["b"]);
    }

    #[test]
    fn json_pointers_are_validated() {
        for ok in ["", "/amount", "/a/0/b", "/a~0b/~1c"] {
            assert!(is_json_pointer(ok), "{ok}");
        }
        for bad in ["amount", "/a~", "/a~2"] {
            assert!(!is_json_pointer(bad), "{bad}");
        }
    }
}
