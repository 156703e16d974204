//! The OpenAI Responses API (`POST /v1/responses`): its prompt (`instructions`, and
//! `input` as a string or a list of items) and its tool calls (`function_call` items).
//!
//! Its output limit is `max_output_tokens`; its model and stream flag sit where chat
//! completions has them; its usage (`usage.input_tokens`/`output_tokens`, streamed in
//! `response.completed`) is read by [`crate::usage`]; its errors share the OpenAI shape.

use serde_json::Value as Json;

use super::{Arguments, Part, Prompt, Role, ToolCall, push_strings, role_of};

/// The prompt: `instructions`, then `input` (a string, or items: messages whose
/// `content` is a string or parts with `text`, `function_call` items' `arguments`,
/// `function_call_output` items' `output`).
pub fn prompt<'a>(body: &'a Json, out: &mut Vec<Prompt<'a>>) {
    if let Some(text) = body.get("instructions").and_then(Json::as_str) {
        out.push(Prompt {
            role: Role::System,
            part: Part::Text,
            text,
        });
    }
    match body.get("input") {
        Some(Json::String(text)) => out.push(Prompt {
            role: Role::User,
            part: Part::Text,
            text,
        }),
        Some(Json::Array(items)) => items.iter().for_each(|item| input_item(item, out)),
        _ => {}
    }
}

fn input_item<'a>(item: &'a Json, out: &mut Vec<Prompt<'a>>) {
    let ty = item.get("type").and_then(Json::as_str);
    match ty {
        Some("function_call") => {
            if let Some(text) = item.get("arguments").and_then(Json::as_str) {
                out.push(Prompt {
                    role: Role::Assistant,
                    part: Part::ToolArguments,
                    text,
                });
            }
        }
        Some("function_call_output") => {
            if let Some(v) = item.get("output") {
                push_strings(v, Role::Tool, Part::ToolResult, out);
            }
        }
        // A message item (`type: message`, or the short form without a type).
        None | Some("message") => {
            let role = role_of(item.get("role").and_then(Json::as_str));
            match item.get("content") {
                Some(Json::String(text)) => out.push(Prompt {
                    role,
                    part: Part::Text,
                    text,
                }),
                Some(Json::Array(parts)) => {
                    for p in parts {
                        if let Some(text) = p.get("text").and_then(Json::as_str) {
                            out.push(Prompt {
                                role,
                                part: Part::Text,
                                text,
                            });
                        }
                    }
                }
                _ => {}
            }
        }
        Some(_) => {}
    }
}

/// The `function_call` items of a request's `input` or of a reply's `output`.
pub fn tool_calls(body: &Json) -> Vec<ToolCall<'_>> {
    ["output", "input"]
        .iter()
        .filter_map(|k| body.get(*k)?.as_array())
        .flatten()
        .filter(|item| item.get("type").and_then(Json::as_str) == Some("function_call"))
        // A call without a name or arguments is still a call: listed with empty ones, so
        // a rule on names (`not in [..]`) refuses it rather than missing it.
        .map(|item| ToolCall {
            id: item.get("call_id").and_then(Json::as_str),
            name: item.get("name").and_then(Json::as_str).unwrap_or_default(),
            arguments: Arguments::Text(
                item.get("arguments")
                    .and_then(Json::as_str)
                    .unwrap_or_default(),
            ),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn prompt_covers_instructions_items_calls_and_outputs() {
        let body = json!({
            "instructions": "Answer in French.",
            "input": [
                {"role": "developer", "content": "Be kind."},
                {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "bonjour"},
                    {"type": "input_image", "image_url": "https://x"}]},
                {"type": "function_call", "call_id": "c1", "name": "f", "arguments": "{\"q\":1}"},
                {"type": "function_call_output", "call_id": "c1", "output": "done"},
                {"type": "reasoning", "summary": []}
            ]
        });
        let mut out = Vec::new();
        prompt(&body, &mut out);
        let got: Vec<(Role, Part, &str)> = out.iter().map(|p| (p.role, p.part, p.text)).collect();
        assert_eq!(
            got,
            [
                (Role::System, Part::Text, "Answer in French."),
                (Role::System, Part::Text, "Be kind."),
                (Role::User, Part::Text, "bonjour"),
                (Role::Assistant, Part::ToolArguments, "{\"q\":1}"),
                (Role::Tool, Part::ToolResult, "done"),
            ]
        );
    }
}
