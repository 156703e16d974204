//! Tool-call arguments are JSON text inside a JSON string (`function.arguments`,
//! Responses `arguments` and its `….arguments.delta` events, Anthropic's
//! `input_json_delta` `partial_json`). Restoring or redacting inside them works on that
//! inner text, one level below the JSON string the reply carries, so what is inserted
//! must be escaped for the inner level too, and nothing may be cut or replaced in the
//! middle of an inner escape (`\"`, `\\`, `\u00e9`): a restored value `Jane "JD" Doe`
//! goes in as `Jane \"JD\" Doe`, and a mask never follows a lone `\`.
//!
//! Plain functions over the inner text; `stream.rs` calls them for the fields
//! [`is_json_text_field`] names. The inner text is assumed to start outside any escape
//! (the start of the arguments, or a cut this module allowed).

use std::borrow::Cow;
use std::ops::Range;

/// Whether a reply string whose innermost key is `key` holds JSON text (tool-call
/// arguments) rather than prose: `arguments` (chat `function.arguments`, Responses
/// `function_call` items and `….arguments.done` events) and Anthropic's `partial_json`.
pub fn is_json_text_field(key: &str) -> bool {
    key == "arguments" || key == "partial_json"
}

/// Whether a streamed Responses event type carries argument text in its `delta`
/// (`response.function_call_arguments.delta`, `response.mcp_call_arguments.delta`).
pub fn is_arguments_event(event_type: &str) -> bool {
    event_type.ends_with("_arguments.delta")
}

/// Appends `value` to `out` escaped as the contents of a JSON string (no quotes).
pub fn escape_into(value: &str, out: &mut String) {
    match serde_json::to_string(value) {
        Ok(q) => out.push_str(q.get(1..q.len().saturating_sub(1)).unwrap_or_default()),
        Err(_) => out.push_str(value),
    }
}

/// `raw`, the contents of a JSON string as written, decoded; `raw` itself when it is not
/// a valid string body (then it holds no escape to decode).
pub fn decode(raw: &str) -> Cow<'_, str> {
    if !raw.contains('\\') {
        return Cow::Borrowed(raw);
    }
    match serde_json::from_str::<String>(&format!("\"{raw}\"")) {
        Ok(s) => Cow::Owned(s),
        Err(_) => Cow::Borrowed(raw),
    }
}

/// The escape sequences of `text`, as byte ranges; one cut off by the end of `text` runs
/// past it (so its inside extends to the end).
fn escapes(text: &str) -> impl Iterator<Item = Range<usize>> + '_ {
    let b = text.as_bytes();
    let mut i = 0usize;
    std::iter::from_fn(move || {
        while i < b.len() {
            if b.get(i) == Some(&b'\\') {
                let len = if b.get(i + 1) == Some(&b'u') { 6 } else { 2 };
                let e = i..i + len;
                i += len;
                return Some(e);
            }
            i += 1;
        }
        None
    })
}

/// The largest position `<= at` that is not inside an escape of `text`: where `text` may
/// be cut, or a replaced span may start.
pub fn boundary_before(text: &str, at: usize) -> usize {
    escapes(text)
        .take_while(|e| e.start < at)
        .find(|e| at < e.end)
        .map_or(at, |e| e.start)
}

/// The smallest position `>= at` that is not inside an escape of `text` (at most its
/// length): where a replaced span may end.
pub fn boundary_after(text: &str, at: usize) -> usize {
    escapes(text)
        .take_while(|e| e.start < at)
        .find(|e| at < e.end)
        .map_or(at, |e| e.end.min(text.len()))
}

/// Widens each `(start, end)` span to whole escapes and merges the spans that then
/// overlap, keeping the first's other data, so no replacement splits an escape and none
/// is skipped for overlapping another.
pub fn widen<T: Copy>(text: &str, spans: &mut Vec<(usize, usize, T)>) {
    for s in spans.iter_mut() {
        s.0 = boundary_before(text, s.0);
        s.1 = boundary_after(text, s.1);
    }
    spans.sort_by_key(|s| s.0);
    let mut merged: Vec<(usize, usize, T)> = Vec::with_capacity(spans.len());
    for s in spans.drain(..) {
        match merged.last_mut() {
            Some(last) if s.0 < last.1 => last.1 = last.1.max(s.1),
            _ => merged.push(s),
        }
    }
    *spans = merged;
}

/// [`widen`] for detector matches.
pub fn widen_matches(text: &str, hits: &mut Vec<crate::detect::Match>) {
    let mut spans: Vec<(usize, usize, crate::detect::Match)> =
        hits.iter().map(|h| (h.start, h.end, *h)).collect();
    widen(text, &mut spans);
    hits.clear();
    hits.extend(
        spans
            .into_iter()
            .map(|(start, end, h)| crate::detect::Match { start, end, ..h }),
    );
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::panic)]
    use super::*;

    #[test]
    fn values_are_escaped_for_the_inner_level() {
        let mut out = String::new();
        escape_into("Jane \"JD\" Doe \\ x\n", &mut out);
        assert_eq!(out, r#"Jane \"JD\" Doe \\ x\n"#);
        assert_eq!(decode(&out), "Jane \"JD\" Doe \\ x\n");
        assert_eq!(decode("plain"), "plain");
        // Not a string body: left as written.
        assert_eq!(decode(r"bad \q"), r"bad \q");
    }

    #[test]
    fn boundaries_never_fall_inside_an_escape() {
        let t = r#"a\"b\u00e9c\\"#;
        // a \ " b \ u 0 0 e 9 c \ \
        // 0 1 2 3 4 5 6 7 8 9 10 11 12
        assert_eq!(boundary_before(t, 2), 1);
        assert_eq!(boundary_after(t, 2), 3);
        assert_eq!(boundary_before(t, 3), 3);
        for inside in 5..10 {
            assert_eq!(boundary_before(t, inside), 4, "{inside}");
            assert_eq!(boundary_after(t, inside), 10, "{inside}");
        }
        assert_eq!(boundary_before(t, 12), 11);
        assert_eq!(boundary_after(t, 13), 13);
        // An escape cut off by the end: no cut inside it.
        assert_eq!(boundary_before(r"ab\u00", 5), 2);
        assert_eq!(boundary_after(r"ab\u00", 4), 6);
        assert_eq!(boundary_before(r"ab\", 3), 2);
    }

    #[test]
    fn widened_spans_merge() {
        let t = r#"x\"secret\"y"#;
        let mut spans = vec![(9, 10, 'b'), (2, 10, 'a'), (11, 12, 'c')];
        widen(t, &mut spans);
        assert_eq!(spans, [(1, 11, 'a'), (11, 12, 'c')]);
        // A span ending right before an escape keeps its end.
        let mut spans = vec![(3, 9, 'a')];
        widen(t, &mut spans);
        assert_eq!(spans, [(3, 9, 'a')]);
    }

    use crate::stream::{Ctx, Redact, SseRestorer, rewrite_reply_json, rewrite_text_as};
    use crate::tokenise::{Find, Vault};
    use serde_json::{Value, json};

    /// A value a custom detector could have tokenised, with both characters JSON escapes.
    const VALUE: &str = "Jane \"JD\" Doe \\ x";

    /// Finds `SECRET`, and reports each match one byte early and one byte late, as a
    /// detector whose pattern takes in the quotes around a value would: both ends then
    /// fall inside the escapes `\"` of JSON text.
    struct Secrets;
    impl Find for Secrets {
        fn find(&self, text: &str, _wanted: &[u16], out: &mut Vec<crate::detect::Match>) {
            out.clear();
            for (at, _) in text.match_indices("SECRET") {
                out.push(crate::detect::Match {
                    detector: 0,
                    start: at.saturating_sub(1),
                    end: (at + 7).min(text.len()),
                });
            }
        }
        fn name(&self, _detector: u16) -> Option<&str> {
            Some("token")
        }
    }

    fn vault() -> (Vault, String) {
        let mut v = Vault::new([7; 16]);
        let p = v.tokenise("name", VALUE).into_owned();
        (v, p)
    }

    /// The arguments the model writes: the placeholder, a quoted secret, escapes.
    fn model_args(placeholder: &str) -> String {
        json!({"name": placeholder, "note": "see \"SECRET\" now", "q": "a\"b\\c\u{e9}"})
            .to_string()
            .replace('\u{e9}', "\\u00e9")
    }

    fn check_args(args: &str, what: &str) {
        let v: Value = serde_json::from_str(args)
            .unwrap_or_else(|e| panic!("{what}: arguments are not JSON ({e}): {args}"));
        assert_eq!(v["name"], VALUE, "{what}: {args}");
        assert_eq!(v["q"], "a\"b\\c\u{e9}", "{what}: {args}");
        let note = v["note"].as_str().unwrap();
        assert!(
            !note.contains("SECRET") && note.contains("[TOKEN]"),
            "{what}: {args}"
        );
    }

    fn sse(events: &[Value]) -> Vec<u8> {
        let mut out = Vec::new();
        for e in events {
            match e["type"].as_str() {
                Some(t) => out.extend_from_slice(format!("event: {t}\ndata: {e}\n\n").as_bytes()),
                None => out.extend_from_slice(format!("data: {e}\n\n").as_bytes()),
            }
        }
        out
    }

    /// The three APIs' argument streams, one character of the arguments per event.
    fn streams(args: &str) -> Vec<(&'static str, Vec<u8>)> {
        let chars: Vec<String> = args.chars().map(String::from).collect();
        let mut chat = vec![
            json!({"choices": [{"index": 0, "delta": {"tool_calls": [{"index": 0,
            "id": "call_1", "type": "function", "function": {"name": "f", "arguments": ""}}]}}]}),
        ];
        let mut anthropic = vec![json!({"type": "content_block_start", "index": 0,
            "content_block": {"type": "tool_use", "id": "toolu_1", "name": "f", "input": {}}})];
        let mut responses = vec![
            json!({"type": "response.output_item.added", "output_index": 0,
            "item": {"type": "function_call", "id": "fc_1", "call_id": "call_1", "name": "f", "arguments": ""}}),
        ];
        for c in &chars {
            chat.push(
                json!({"choices": [{"index": 0, "delta": {"tool_calls": [{"index": 0,
                "function": {"arguments": c}}]}}]}),
            );
            anthropic.push(json!({"type": "content_block_delta", "index": 0,
                "delta": {"type": "input_json_delta", "partial_json": c}}));
            responses.push(json!({"type": "response.function_call_arguments.delta",
                "item_id": "fc_1", "output_index": 0, "delta": c}));
        }
        chat.push(json!({"choices": [{"index": 0, "delta": {}, "finish_reason": "tool_calls"}]}));
        anthropic.push(json!({"type": "content_block_stop", "index": 0}));
        anthropic.push(json!({"type": "message_stop"}));
        responses.push(
            json!({"type": "response.function_call_arguments.done", "item_id": "fc_1",
            "output_index": 0, "arguments": args}),
        );
        responses.push(json!({"type": "response.completed", "response": {"id": "r"}}));
        let mut chat = sse(&chat);
        chat.extend_from_slice(b"data: [DONE]\n\n");
        vec![
            ("chat", chat),
            ("anthropic", sse(&anthropic)),
            ("responses", sse(&responses)),
        ]
    }

    /// What a client reassembles: the streamed arguments, and the `….done` arguments.
    fn client_args(body: &[u8]) -> (String, Option<String>) {
        let (mut args, mut done) = (String::new(), None);
        for event in String::from_utf8_lossy(body).split("\n\n") {
            let Some(data) = event.lines().find_map(|l| l.strip_prefix("data: ")) else {
                continue;
            };
            let Ok(v) = serde_json::from_str::<Value>(data) else {
                continue;
            };
            for p in [
                "/choices/0/delta/tool_calls/0/function/arguments",
                "/delta/partial_json",
            ] {
                args.push_str(v.pointer(p).and_then(Value::as_str).unwrap_or_default());
            }
            match v["type"].as_str() {
                Some("response.function_call_arguments.delta") => {
                    args.push_str(v["delta"].as_str().unwrap_or_default())
                }
                Some("response.function_call_arguments.done") => {
                    done = v["arguments"].as_str().map(String::from)
                }
                _ => {}
            }
        }
        (args, done)
    }

    fn run(body: &[u8], cuts: &[usize], ctx: &Ctx<'_>) -> Vec<u8> {
        let mut r = SseRestorer::new();
        let mut out = Vec::new();
        let mut at = 0;
        for &c in cuts {
            r.push(&body[at..c], ctx, &mut out);
            at = c;
        }
        r.push(&body[at..], ctx, &mut out);
        r.finish(ctx, &mut out);
        out
    }

    #[test]
    fn restored_and_redacted_arguments_stay_json_whatever_the_cut() {
        let (v, placeholder) = vault();
        let finder = Secrets;
        let ctx = Ctx {
            vault: &v,
            redact: Some(Redact {
                finder: &finder,
                wanted: &[0],
                hold: crate::stream::Hold::default(),
            }),
        };
        let args = model_args(&placeholder);
        // The bug this guards against: the value restored, and the secret masked, as if
        // the arguments were prose, break the arguments' JSON.
        let mut redacted = Default::default();
        let as_prose = rewrite_text_as(&args, false, &ctx, &mut redacted).unwrap();
        assert!(
            serde_json::from_str::<Value>(&as_prose).is_err(),
            "{as_prose}"
        );
        let whole = rewrite_text_as(&args, true, &ctx, &mut redacted).unwrap();
        check_args(&whole, "whole text");
        // A whole chat reply.
        let reply = json!({"choices": [{"index": 0, "message": {"role": "assistant",
            "tool_calls": [{"id": "c", "type": "function", "function": {"name": "f", "arguments": args}}]}}]});
        let out = rewrite_reply_json(reply.to_string().as_bytes(), &ctx).unwrap();
        let out: Value = serde_json::from_slice(&out.body.unwrap()).unwrap();
        let got = out.pointer("/choices/0/message/tool_calls/0/function/arguments");
        check_args(got.and_then(Value::as_str).unwrap(), "whole reply");
        // Streams, one argument character per event (escapes split across events), fed
        // one byte at a time and cut once at every byte.
        for (api, body) in streams(&args) {
            let every: Vec<usize> = (1..body.len()).collect();
            let mut ways = vec![run(&body, &every, &ctx)];
            ways.extend((1..body.len()).map(|c| run(&body, &[c], &ctx)));
            for (i, out) in ways.iter().enumerate() {
                let (streamed, done) = client_args(out);
                check_args(&streamed, &format!("{api} streamed, way {i}"));
                if let Some(done) = done {
                    check_args(&done, &format!("{api} done event, way {i}"));
                }
            }
        }
    }

    #[test]
    fn a_value_tokenised_in_arguments_comes_back_as_it_was_meant() {
        // A request whose earlier call's arguments hold a value with escapes, found by a
        // detector whose match starts and ends inside them.
        let args = json!({"note": "call \"SECRET\" now"}).to_string();
        let body = json!({"messages": [{"role": "assistant", "tool_calls": [{"id": "c",
            "type": "function", "function": {"name": "f", "arguments": args}}]},
            {"role": "user", "content": "and \"SECRET\" too"}]})
        .to_string();
        let mut v = Vault::new([9; 16]);
        let rw =
            crate::tokenise::rewrite_request(body.as_bytes(), &Secrets, &[0], &[], &mut v).unwrap();
        let sent: Value = serde_json::from_slice(&rw.body.unwrap()).unwrap();
        let sent_args = sent
            .pointer("/messages/0/tool_calls/0/function/arguments")
            .and_then(Value::as_str)
            .unwrap();
        let parsed: Value = serde_json::from_str(sent_args)
            .unwrap_or_else(|e| panic!("arguments sent are not JSON ({e}): {sent_args}"));
        let note = parsed["note"].as_str().unwrap();
        assert!(!note.contains("SECRET"), "{note}");
        // The same value in prose and in the arguments is one placeholder.
        let prose = sent.pointer("/messages/1/content").and_then(Value::as_str);
        let placeholder = note.trim_start_matches("call ").trim_end_matches(" now");
        assert_eq!(prose, Some(format!("and {placeholder} too").as_str()));
        // Restored into the reply's arguments (escaped) and its text (as is).
        let ctx = Ctx {
            vault: &v,
            redact: None,
        };
        let mut redacted = Default::default();
        let back = rewrite_text_as(sent_args, true, &ctx, &mut redacted).unwrap();
        assert_eq!(
            serde_json::from_str::<Value>(&back).unwrap()["note"],
            "call \"SECRET\" now"
        );
        let text = rewrite_text_as(&format!("[{placeholder}]"), false, &ctx, &mut redacted);
        assert_eq!(text.as_deref(), Some("[\"SECRET\"]"));
    }

    #[test]
    fn arguments_fields_are_named() {
        assert!(is_json_text_field("arguments"));
        assert!(is_json_text_field("partial_json"));
        assert!(!is_json_text_field("text"));
        assert!(is_arguments_event("response.function_call_arguments.delta"));
        assert!(!is_arguments_event("response.output_text.delta"));
    }
}
