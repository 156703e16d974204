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

/// Calls `f` on the text of every tool result the request sends back (`role: tool` or
/// `role: function` messages: their string content, or every string inside structured
/// content); stops at the first `true` and returns whether it did.
pub fn any_tool_result(body: &Json, mut f: impl FnMut(&str) -> bool) -> bool {
    let Some(messages) = body.get("messages").and_then(Json::as_array) else {
        return false;
    };
    messages
        .iter()
        .filter(|m| {
            matches!(
                m.get("role").and_then(Json::as_str),
                Some("tool" | "function")
            )
        })
        .filter_map(|m| m.get("content"))
        .any(|c| crate::request::any_string(c, &mut f))
}

/// The tool calls of a whole chat completion: every choice's `message.tool_calls[]` and
/// the legacy `message.function_call`, in order.
pub fn calls_from_json(reply: &Json) -> Vec<ToolCall> {
    let mut out = Vec::new();
    let Some(choices) = reply.get("choices").and_then(Json::as_array) else {
        return out;
    };
    for choice in choices {
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
    out
}

fn str_at(v: Option<&Json>) -> &str {
    v.and_then(Json::as_str).unwrap_or_default()
}

/// Reassembles the tool calls of a streamed chat completion from its `data:` events:
/// `choices[a].delta.tool_calls[].index` says which call a fragment continues, the first
/// fragment brings `id` and `function.name`, every fragment appends to
/// `function.arguments`; `delta.function_call` is the legacy single call. Events that are
/// not JSON (`[DONE]`) are skipped.
#[derive(Debug, Default)]
pub struct SseToolCalls {
    line: Vec<u8>,
    data: Vec<u8>,
    /// The calls so far, in order of first appearance.
    calls: Vec<Partial>,
}

/// A streamed call being reassembled: `(choice, tool index)` and (id, name, arguments).
type Partial = ((u64, u64), (String, String, String));

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
                self.append(
                    (c, t),
                    tc.get("id"),
                    f.and_then(|f| f.get("name")),
                    f.and_then(|f| f.get("arguments")),
                );
            }
            if let Some(f) = delta.get("function_call") {
                self.append((c, LEGACY), None, f.get("name"), f.get("arguments"));
            }
        }
    }

    fn append(
        &mut self,
        key: (u64, u64),
        id: Option<&Json>,
        name: Option<&Json>,
        args: Option<&Json>,
    ) {
        let pos = match self.calls.iter().position(|(k, _)| *k == key) {
            Some(p) => p,
            None => {
                self.calls.push((key, Default::default()));
                self.calls.len() - 1
            }
        };
        let Some((_, (cid, cname, cargs))) = self.calls.get_mut(pos) else {
            return;
        };
        if let Some(id) = id.and_then(Json::as_str) {
            cid.push_str(id);
        }
        if let Some(n) = name.and_then(Json::as_str) {
            cname.push_str(n);
        }
        if let Some(a) = args.and_then(Json::as_str) {
            cargs.push_str(a);
        }
    }

    /// Ends the stream (an event without its blank line still counts) and returns the
    /// calls, in order of first appearance.
    pub fn finish(mut self) -> Vec<ToolCall> {
        if !self.line.is_empty() {
            let line = std::mem::take(&mut self.line);
            self.line_done(&line);
        }
        self.dispatch();
        self.calls
            .into_iter()
            .map(|(_, (id, name, args))| ToolCall::new(&id, &name, &args))
            .collect()
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
