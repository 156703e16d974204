//! The OpenAI chat completions, legacy completions and embeddings shapes: their prompt
//! text and their error body (which every OpenAI API, Responses included, shares).

use serde_json::Value as Json;

use super::{Part, Prompt, Role, push_strings, role_of};

/// The prompt of a chat (`messages[]`: `content` as a string or parts, the assistant's
/// `tool_calls[].function.arguments`, `role: tool` results), legacy completions
/// (`prompt`, a string or a list) or embeddings (`input`) request.
pub fn prompt<'a>(body: &'a Json, out: &mut Vec<Prompt<'a>>) {
    for m in body
        .get("messages")
        .and_then(Json::as_array)
        .into_iter()
        .flatten()
    {
        let role = role_of(m.get("role").and_then(Json::as_str));
        let part = if role == Role::Tool {
            Part::ToolResult
        } else {
            Part::Text
        };
        match m.get("content") {
            Some(Json::String(text)) => out.push(Prompt { role, part, text }),
            Some(Json::Array(parts)) => {
                for p in parts {
                    if let Some(text) = p.get("text").and_then(Json::as_str) {
                        out.push(Prompt { role, part, text });
                    }
                }
            }
            _ => {}
        }
        for call in m
            .get("tool_calls")
            .and_then(Json::as_array)
            .into_iter()
            .flatten()
        {
            if let Some(text) = call.pointer("/function/arguments").and_then(Json::as_str) {
                out.push(Prompt {
                    role,
                    part: Part::ToolArguments,
                    text,
                });
            }
        }
    }
    for key in ["prompt", "input"] {
        if let Some(v) = body.get(key) {
            push_strings(v, Role::User, Part::Text, out);
        }
    }
}

/// `{"error":{"message","type","code"}}`, the OpenAI error shape, so clients written
/// against the provider API surface the reason unchanged.
pub fn error_body(message: &str, kind: &str, code: &str) -> Vec<u8> {
    let value = serde_json::json!({
        "error": { "message": message, "type": kind, "code": code }
    });
    serde_json::to_vec(&value).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn chat_prompt_includes_parts_tool_arguments_and_results() {
        let body = json!({"messages": [
            {"role": "system", "content": "sys"},
            {"role": "user", "content": [{"type": "text", "text": "look"}, {"type": "image_url", "image_url": {"url": "u"}}]},
            {"role": "assistant", "content": null, "tool_calls": [{"id": "c1", "type": "function",
                "function": {"name": "f", "arguments": "{\"a\":1}"}}]},
            {"role": "tool", "tool_call_id": "c1", "content": "result"}
        ]});
        let mut out = Vec::new();
        prompt(&body, &mut out);
        let got: Vec<(Role, Part, &str)> = out.iter().map(|p| (p.role, p.part, p.text)).collect();
        assert_eq!(
            got,
            [
                (Role::System, Part::Text, "sys"),
                (Role::User, Part::Text, "look"),
                (Role::Assistant, Part::ToolArguments, "{\"a\":1}"),
                (Role::Tool, Part::ToolResult, "result"),
            ]
        );
        let mut out = Vec::new();
        let legacy = json!({"prompt": ["a", "b"], "input": "c"});
        prompt(&legacy, &mut out);
        assert_eq!(
            out.iter().map(|p| p.text).collect::<Vec<_>>(),
            ["a", "b", "c"]
        );
    }
}
