//! The Anthropic Messages API (`POST /v1/messages`): its prompt (`system` and
//! `messages[].content`, each a string or content blocks of `text`, `tool_use`,
//! `tool_result`), its tool calls, and its error shape.
//!
//! Its model (`model`), output limit (`max_tokens`, required by the API) and stream flag
//! (`stream`) sit where the OpenAI APIs have them; its usage (`usage.input_tokens`,
//! `output_tokens`, cache fields; streamed in `message_start` and `message_delta`) is read
//! by [`crate::usage`].

use serde_json::Value as Json;

use super::{Arguments, Part, Prompt, Role, ToolCall, push_strings, role_of};

/// The prompt: `system` (a string or `text` blocks), then each message's content.
pub fn prompt<'a>(body: &'a Json, out: &mut Vec<Prompt<'a>>) {
    if let Some(system) = body.get("system") {
        content(system, Role::System, out);
    }
    for m in body
        .get("messages")
        .and_then(Json::as_array)
        .into_iter()
        .flatten()
    {
        if let Some(c) = m.get("content") {
            content(c, role_of(m.get("role").and_then(Json::as_str)), out);
        }
    }
}

/// One `content` (or `system`): a string, or blocks. `text` blocks are text; `tool_use`
/// blocks are the assistant's tool arguments (every string of `input`); `tool_result`
/// blocks are tool output (their `content`, a string or blocks); a `document` whose
/// source is plain text is text too.
fn content<'a>(c: &'a Json, role: Role, out: &mut Vec<Prompt<'a>>) {
    match c {
        Json::String(text) => out.push(Prompt {
            role,
            part: Part::Text,
            text,
        }),
        Json::Array(blocks) => {
            for b in blocks {
                match b.get("type").and_then(Json::as_str) {
                    Some("tool_use") => {
                        if let Some(input) = b.get("input") {
                            push_strings(input, role, Part::ToolArguments, out);
                        }
                    }
                    Some("tool_result") => {
                        let mut inner = Vec::new();
                        if let Some(c) = b.get("content") {
                            content(c, Role::Tool, &mut inner);
                        }
                        out.extend(inner.into_iter().map(|p| Prompt {
                            part: Part::ToolResult,
                            ..p
                        }));
                    }
                    Some("document") => {
                        if b.pointer("/source/type").and_then(Json::as_str) == Some("text")
                            && let Some(text) = b.pointer("/source/data").and_then(Json::as_str)
                        {
                            out.push(Prompt {
                                role,
                                part: Part::Text,
                                text,
                            });
                        }
                    }
                    _ => {
                        if let Some(text) = b.get("text").and_then(Json::as_str) {
                            out.push(Prompt {
                                role,
                                part: Part::Text,
                                text,
                            });
                        }
                    }
                }
            }
        }
        _ => {}
    }
}

/// The `tool_use` blocks of a request's messages or of a reply's `content`.
pub fn tool_calls(body: &Json) -> Vec<ToolCall<'_>> {
    fn blocks(c: Option<&Json>) -> impl Iterator<Item = &Json> {
        c.and_then(Json::as_array).into_iter().flatten()
    }
    let mut out = Vec::new();
    let reply = blocks(body.get("content"));
    let history = body
        .get("messages")
        .and_then(Json::as_array)
        .into_iter()
        .flatten()
        .flat_map(|m| blocks(m.get("content")));
    for b in reply.chain(history) {
        if b.get("type").and_then(Json::as_str) != Some("tool_use") {
            continue;
        }
        // A block without a name or input is still a call: listed with empty ones, so a
        // rule on names (`not in [..]`) refuses it rather than missing it.
        static NO_INPUT: Json = Json::Null;
        out.push(ToolCall {
            id: b.get("id").and_then(Json::as_str),
            name: b.get("name").and_then(Json::as_str).unwrap_or_default(),
            arguments: Arguments::Object(b.get("input").unwrap_or(&NO_INPUT)),
        });
    }
    out
}

/// The Anthropic error `type` for an HTTP status, as the API documents them, so an
/// Anthropic SDK raises the matching exception and retries only what it would retry.
pub fn error_type(status: u16) -> &'static str {
    match status {
        400 => "invalid_request_error",
        401 => "authentication_error",
        402 => "billing_error",
        403 => "permission_error",
        404 => "not_found_error",
        413 => "request_too_large",
        429 => "rate_limit_error",
        504 => "timeout_error",
        529 => "overloaded_error",
        s if s >= 500 => "api_error",
        _ => "invalid_request_error",
    }
}

/// `{"type":"error","error":{"type","message","code"}}`: Anthropic's error shape, the
/// `type` chosen from the status ([`error_type`]), plus writ's `code` (the clause id of a
/// denying rule, or an engine code such as `kill_switch`), which Anthropic clients ignore
/// and operators read.
pub fn error_body(status: u16, message: &str, code: &str) -> Vec<u8> {
    let mut error = serde_json::json!({ "type": error_type(status), "message": message });
    if !code.is_empty() {
        error["code"] = Json::from(code);
    }
    serde_json::to_vec(&serde_json::json!({ "type": "error", "error": error })).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn prompt_covers_system_blocks_tool_use_and_tool_results() {
        let body = json!({
            "system": [{"type": "text", "text": "You help with orders.", "cache_control": {"type": "ephemeral"}}],
            "messages": [
                {"role": "user", "content": "Where is my order?"},
                {"role": "assistant", "content": [
                    {"type": "text", "text": "Let me look."},
                    {"type": "tool_use", "id": "toolu_1", "name": "lookup_order", "input": {"email": "a@b.co", "n": 3}}]},
                {"role": "user", "content": [
                    {"type": "tool_result", "tool_use_id": "toolu_1", "content": [{"type": "text", "text": "shipped"}]},
                    {"type": "tool_result", "tool_use_id": "toolu_2", "content": "late"},
                    {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "AAAA"}},
                    {"type": "document", "source": {"type": "text", "media_type": "text/plain", "data": "terms"}}]}
            ]
        });
        let mut out = Vec::new();
        prompt(&body, &mut out);
        let got: Vec<(Role, Part, &str)> = out.iter().map(|p| (p.role, p.part, p.text)).collect();
        assert_eq!(
            got,
            [
                (Role::System, Part::Text, "You help with orders."),
                (Role::User, Part::Text, "Where is my order?"),
                (Role::Assistant, Part::Text, "Let me look."),
                (Role::Assistant, Part::ToolArguments, "a@b.co"),
                (Role::Tool, Part::ToolResult, "shipped"),
                (Role::Tool, Part::ToolResult, "late"),
                (Role::User, Part::Text, "terms"),
            ]
        );
    }

    #[test]
    fn error_types_follow_the_status() {
        assert_eq!(error_type(403), "permission_error");
        assert_eq!(error_type(429), "rate_limit_error");
        assert_eq!(error_type(503), "api_error");
        assert_eq!(error_type(418), "invalid_request_error");
        let v: Json =
            serde_json::from_slice(&error_body(429, "budget", "AIP-4.2")).unwrap_or_default();
        assert_eq!(v["type"], "error");
        assert_eq!(v["error"]["type"], "rate_limit_error");
        assert_eq!(v["error"]["message"], "budget");
        assert_eq!(v["error"]["code"], "AIP-4.2");
        let v: Json = serde_json::from_slice(&error_body(400, "bad", "")).unwrap_or_default();
        assert!(v["error"].get("code").is_none());
    }
}
