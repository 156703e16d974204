//! The provider APIs the engine understands, and a shape-neutral view of their requests.
//!
//! Each API lays out the same facts differently: where the model's output limit is
//! (`max_tokens`, `max_completion_tokens`, `max_output_tokens`), where the system prompt is
//! (`messages[0]`, `system`, `instructions`), how content is split into blocks or items,
//! how a tool call and its result are written, and how an error looks. This module is the
//! only place that knows those layouts: [`Api::of`] tells the API from the request, and
//! [`View`] gives the rest of the engine what it reads (model, output limit, stream flag,
//! prompt text with roles, message count) whatever the shape. One file per API:
//!
//! - [`openai`]: chat completions (`/v1/chat/completions`), legacy completions
//!   (`/v1/completions`), embeddings (`/v1/embeddings`);
//! - [`responses`]: the OpenAI Responses API (`/v1/responses`);
//! - [`anthropic`]: the Anthropic Messages API (`/v1/messages`).
//!
//! Token usage in replies, every shape, is read by [`crate::usage`]; streamed replies are
//! restored by [`crate::stream`], which already reassembles every API's delta events by
//! their JSON paths. Local error replies are reshaped per API by [`Api::error_body`].
//!
//! A leaf module: plain JSON, no policy, no other engine module.
//!
//! # Tool calls (extension point)
//!
//! [`tool_calls`] lists the tool calls a request's history or a whole reply holds, and
//! [`offered_tools`] the tools a request offers, as [`ToolCall`]s and names, for the
//! Anthropic and Responses shapes ([`anthropic::tool_calls`], [`responses::tool_calls`]).
//! The policy's tool rules read calls through `tools.rs`, which reads every shape
//! of a body at once (chat's own, and these two through the functions above), so a call
//! cannot hide in another API's layout.

pub mod anthropic;
pub mod openai;
pub mod responses;

use serde_json::Value as Json;

/// Which provider API a request speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Api {
    /// OpenAI chat completions, `POST /v1/chat/completions`.
    ChatCompletions,
    /// OpenAI legacy completions, `POST /v1/completions`.
    Completions,
    /// OpenAI embeddings, `POST /v1/embeddings`.
    Embeddings,
    /// The OpenAI Responses API, `POST /v1/responses`.
    Responses,
    /// The Anthropic Messages API, `POST /v1/messages`.
    AnthropicMessages,
    /// Any other path: read as OpenAI-compatible, the engine's historical default.
    #[default]
    Other,
}

impl Api {
    /// The API of a request, from its path (without the query string) and its
    /// `anthropic-version` header. A path is matched by its last segments, so a gateway
    /// prefix (`/openai/v1/chat/completions`, `/anthropic/v1/messages`) does not hide it;
    /// an unknown path with `anthropic-version` is an Anthropic client behind a rewritten
    /// path (every Anthropic SDK sends that header).
    pub fn of(path: &str, anthropic_version: Option<&str>) -> Api {
        let path = path.trim_end_matches('/');
        let ends = |suffix: &str| path == suffix || path.ends_with(suffix);
        if ends("/v1/chat/completions") || ends("/chat/completions") {
            Api::ChatCompletions
        } else if ends("/v1/completions") {
            Api::Completions
        } else if ends("/v1/embeddings") || ends("/embeddings") {
            Api::Embeddings
        } else if ends("/v1/responses") {
            Api::Responses
        } else if ends("/v1/messages") || anthropic_version.is_some() {
            Api::AnthropicMessages
        } else {
            Api::Other
        }
    }

    /// A stable name for audit records and documentation.
    pub fn as_str(self) -> &'static str {
        match self {
            Api::ChatCompletions => "openai.chat_completions",
            Api::Completions => "openai.completions",
            Api::Embeddings => "openai.embeddings",
            Api::Responses => "openai.responses",
            Api::AnthropicMessages => "anthropic.messages",
            Api::Other => "other",
        }
    }

    /// The request's output-token limit, under this API's name for it: `max_tokens`
    /// (Anthropic, legacy completions) or `max_completion_tokens`/`max_tokens` (chat),
    /// `max_output_tokens` (Responses). Other paths accept any of the three.
    pub fn max_tokens(self, body: &Json) -> Option<f64> {
        let names: &[&str] = match self {
            Api::ChatCompletions => &["max_completion_tokens", "max_tokens"],
            Api::Completions | Api::AnthropicMessages => &["max_tokens"],
            Api::Responses => &["max_output_tokens"],
            Api::Embeddings => &[],
            Api::Other => &["max_completion_tokens", "max_tokens", "max_output_tokens"],
        };
        names.iter().find_map(|n| body.get(*n)?.as_f64())
    }

    /// True when a streamed request must be asked to report usage
    /// (`stream_options.include_usage`): only OpenAI chat and legacy completions (and
    /// unknown OpenAI-compatible paths). Anthropic reports usage in `message_start` and
    /// `message_delta` and refuses unknown fields; the Responses API reports it in
    /// `response.completed` and has no such option.
    pub fn asks_stream_usage(self) -> bool {
        matches!(self, Api::ChatCompletions | Api::Completions | Api::Other)
    }

    /// The messages (or input items) a request holds, for the per-message framing the
    /// token estimate adds; a system prompt outside the list counts as one more.
    pub fn message_count(self, body: &Json) -> u64 {
        let len = |v: Option<&Json>| v.and_then(Json::as_array).map_or(0, |a| a.len() as u64);
        match self {
            Api::AnthropicMessages => {
                len(body.get("messages")) + u64::from(body.get("system").is_some())
            }
            Api::Responses => {
                let input = match body.get("input") {
                    Some(Json::String(_)) => 1,
                    other => len(other),
                };
                input + u64::from(body.get("instructions").is_some())
            }
            _ => len(body.get("messages")),
        }
    }

    /// The prompt text of a request, part by part, with the role that wrote each part
    /// (system prompts and instructions included, tool arguments and results too).
    pub fn prompt<'a>(self, body: &'a Json) -> Vec<Prompt<'a>> {
        let mut out = Vec::new();
        match self {
            Api::AnthropicMessages => anthropic::prompt(body, &mut out),
            Api::Responses => responses::prompt(body, &mut out),
            _ => openai::prompt(body, &mut out),
        }
        out
    }

    /// A local error reply's body in this API's own error shape, from writ's message, its
    /// OpenAI-style `type` and its code (a clause id or an engine code such as
    /// `kill_switch`). Anthropic clients get `{"type":"error","error":{"type","message"}}`
    /// (see [`anthropic::error_body`]); every other API the OpenAI shape
    /// `{"error":{"message","type","code"}}`, which the Responses API shares.
    pub fn error_body(self, status: u16, message: &str, kind: &str, code: &str) -> Vec<u8> {
        match self {
            Api::AnthropicMessages => anthropic::error_body(status, message, code),
            _ => openai::error_body(message, kind, code),
        }
    }

    /// Rewrites a local error body written in the OpenAI shape (as the engine writes all
    /// of them) into this API's shape; a body that is not an OpenAI error is returned
    /// unchanged, so nothing is ever lost.
    pub fn reshape_error(self, status: u16, body: &[u8]) -> Vec<u8> {
        if self != Api::AnthropicMessages {
            return body.to_vec();
        }
        let Ok(v) = serde_json::from_slice::<Json>(body) else {
            return body.to_vec();
        };
        let error = &v["error"];
        match (error["message"].as_str(), error["type"].as_str()) {
            (Some(message), Some(kind)) => {
                let code = error["code"].as_str().unwrap_or_default();
                self.error_body(status, message, kind, code)
            }
            _ => body.to_vec(),
        }
    }
}

/// Who wrote a part of the prompt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// System prompts, developer messages, Responses `instructions`.
    System,
    User,
    Assistant,
    /// A tool's result sent back to the model.
    Tool,
}

/// What a part of the prompt is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Part {
    Text,
    /// The arguments of a tool call the model made earlier (JSON text, or a string inside
    /// Anthropic's `input` object).
    ToolArguments,
    /// A tool's result.
    ToolResult,
}

/// One piece of prompt text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Prompt<'a> {
    pub role: Role,
    pub part: Part,
    pub text: &'a str,
}

/// The arguments of a tool call as the API writes them.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Arguments<'a> {
    /// A JSON object (Anthropic `tool_use.input`).
    Object(&'a Json),
    /// JSON text in a string (Responses `function_call.arguments`, chat
    /// `function.arguments`); it may not parse.
    Text(&'a str),
}

impl Arguments<'_> {
    /// The arguments as a JSON value; `None` when the text does not parse.
    pub fn parsed(&self) -> Option<Json> {
        match self {
            Arguments::Object(v) => Some((*v).clone()),
            Arguments::Text(s) => serde_json::from_str(s).ok(),
        }
    }
}

/// One tool call, whatever the API.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ToolCall<'a> {
    /// `tool_use.id` (Anthropic), `call_id` (Responses).
    pub id: Option<&'a str>,
    pub name: &'a str,
    pub arguments: Arguments<'a>,
}

/// The tool calls in a request's history (the assistant's earlier calls) or in a whole
/// reply, for the APIs this module reads tool calls of (see the module docs).
pub fn tool_calls(api: Api, body: &Json) -> Vec<ToolCall<'_>> {
    match api {
        Api::AnthropicMessages => anthropic::tool_calls(body),
        Api::Responses => responses::tool_calls(body),
        _ => Vec::new(),
    }
}

/// The names of the tools a request offers the model (`tools[].name`), for the APIs
/// this module reads tool calls of.
pub fn offered_tools(api: Api, body: &Json) -> Vec<&str> {
    match api {
        Api::AnthropicMessages | Api::Responses => body
            .get("tools")
            .and_then(Json::as_array)
            .into_iter()
            .flatten()
            .filter_map(|t| t.get("name")?.as_str())
            .collect(),
        _ => Vec::new(),
    }
}

/// What the engine reads from a request body, whatever its API.
#[derive(Debug, Clone, PartialEq)]
pub struct View<'a> {
    pub api: Api,
    /// `model`: the same field in every API.
    pub model: Option<&'a str>,
    /// The output-token limit ([`Api::max_tokens`]).
    pub max_tokens: Option<f64>,
    /// `stream`; absent reads as `false`, a non-boolean as `None`.
    pub stream: Option<bool>,
    pub prompt: Vec<Prompt<'a>>,
}

impl<'a> View<'a> {
    /// The view of `body` as `api` lays it out.
    pub fn of(api: Api, body: &'a Json) -> View<'a> {
        View {
            api,
            model: body.get("model").and_then(Json::as_str),
            max_tokens: api.max_tokens(body),
            stream: match body.get("stream") {
                None | Some(Json::Null) => Some(false),
                Some(v) => v.as_bool(),
            },
            prompt: api.prompt(body),
        }
    }
}

/// Pushes every string of `v` (depth first, values only) as `part` by `role`.
pub(crate) fn push_strings<'a>(v: &'a Json, role: Role, part: Part, out: &mut Vec<Prompt<'a>>) {
    match v {
        Json::String(text) => out.push(Prompt { role, part, text }),
        Json::Array(items) => items.iter().for_each(|i| push_strings(i, role, part, out)),
        Json::Object(map) => map.values().for_each(|i| push_strings(i, role, part, out)),
        Json::Null | Json::Bool(_) | Json::Number(_) => {}
    }
}

/// The role named by a message's `role` string.
pub(crate) fn role_of(name: Option<&str>) -> Role {
    match name {
        Some("system" | "developer") => Role::System,
        Some("assistant") => Role::Assistant,
        Some("tool" | "function") => Role::Tool,
        _ => Role::User,
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use serde_json::json;

    #[test]
    fn the_api_is_told_by_path_and_header() {
        assert_eq!(Api::of("/v1/messages", None), Api::AnthropicMessages);
        assert_eq!(
            Api::of("/anthropic/v1/messages/", None),
            Api::AnthropicMessages
        );
        assert_eq!(Api::of("/llm", Some("2023-06-01")), Api::AnthropicMessages);
        assert_eq!(Api::of("/v1/responses", None), Api::Responses);
        assert_eq!(Api::of("/v1/chat/completions", None), Api::ChatCompletions);
        assert_eq!(
            Api::of("/openai/deployments/x/chat/completions", None),
            Api::ChatCompletions
        );
        assert_eq!(Api::of("/v1/completions", None), Api::Completions);
        assert_eq!(Api::of("/v1/embeddings", None), Api::Embeddings);
        assert_eq!(Api::of("/v1/models", None), Api::Other);
        // A chat path stays chat even if a client adds the Anthropic header.
        assert_eq!(
            Api::of("/v1/chat/completions", Some("2023-06-01")),
            Api::ChatCompletions
        );
        // `/v1/messages` is not a suffix match for `/v1/messagesx`.
        assert_eq!(Api::of("/v1/messagesx", None), Api::Other);
    }

    #[test]
    fn output_limits_are_read_under_each_apis_name() {
        let b = json!({"max_tokens": 10, "max_output_tokens": 20, "max_completion_tokens": 30});
        assert_eq!(Api::AnthropicMessages.max_tokens(&b), Some(10.0));
        assert_eq!(Api::Responses.max_tokens(&b), Some(20.0));
        assert_eq!(Api::ChatCompletions.max_tokens(&b), Some(30.0));
        assert_eq!(Api::Completions.max_tokens(&b), Some(10.0));
        assert_eq!(Api::Embeddings.max_tokens(&b), None);
        assert_eq!(
            Api::Other.max_tokens(&json!({"max_output_tokens": 5})),
            Some(5.0)
        );
        // The Responses API has no `max_tokens`: a stray one is not its limit.
        assert_eq!(Api::Responses.max_tokens(&json!({"max_tokens": 5})), None);
    }

    #[test]
    fn only_openai_chat_and_completions_are_asked_for_stream_usage() {
        assert!(Api::ChatCompletions.asks_stream_usage());
        assert!(Api::Completions.asks_stream_usage());
        assert!(!Api::AnthropicMessages.asks_stream_usage());
        assert!(!Api::Responses.asks_stream_usage());
    }

    #[test]
    fn views_agree_across_shapes() {
        let anthropic = json!({"model": "claude-sonnet-4-5", "max_tokens": 300, "stream": true,
            "system": "Be brief.", "messages": [{"role": "user", "content": "hi"}]});
        let responses = json!({"model": "gpt-4o", "max_output_tokens": 300, "stream": true,
            "instructions": "Be brief.", "input": "hi"});
        let chat = json!({"model": "gpt-4o", "max_completion_tokens": 300, "stream": true,
            "messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "hi"}]});
        for (api, body) in [
            (Api::AnthropicMessages, &anthropic),
            (Api::Responses, &responses),
            (Api::ChatCompletions, &chat),
        ] {
            let v = View::of(api, body);
            assert_eq!(v.max_tokens, Some(300.0), "{api:?}");
            assert_eq!(v.stream, Some(true), "{api:?}");
            let texts: Vec<(Role, &str)> = v.prompt.iter().map(|p| (p.role, p.text)).collect();
            assert_eq!(
                texts,
                [(Role::System, "Be brief."), (Role::User, "hi")],
                "{api:?}"
            );
            assert_eq!(api.message_count(body), 2, "{api:?}");
        }
        assert_eq!(View::of(Api::Responses, &json!({})).stream, Some(false));
        assert_eq!(
            View::of(Api::Responses, &json!({"stream": "yes"})).stream,
            None
        );
    }

    #[test]
    fn errors_take_each_apis_shape() {
        let openai = openai::error_body("Model not approved", "policy_violation", "AIP-3.1");
        let v: Json = serde_json::from_slice(&openai).unwrap();
        assert_eq!(v["error"]["code"], "AIP-3.1");
        assert_eq!(Api::Responses.reshape_error(403, &openai), openai);
        assert_eq!(Api::ChatCompletions.reshape_error(403, &openai), openai);
        let a: Json =
            serde_json::from_slice(&Api::AnthropicMessages.reshape_error(403, &openai)).unwrap();
        assert_eq!(
            a,
            json!({"type": "error", "error": {"type": "permission_error",
                "message": "Model not approved", "code": "AIP-3.1"}})
        );
        // Not an OpenAI error: left as it was.
        assert_eq!(
            Api::AnthropicMessages.reshape_error(500, b"plain"),
            b"plain".to_vec()
        );
    }

    #[test]
    fn tools_of_both_shapes_are_listed() {
        let a = json!({"tools": [{"name": "lookup_order", "input_schema": {}}],
            "messages": [{"role": "assistant", "content": [
                {"type": "tool_use", "id": "toolu_1", "name": "lookup_order", "input": {"order": "A1"}}]}]});
        assert_eq!(offered_tools(Api::AnthropicMessages, &a), ["lookup_order"]);
        let calls = tool_calls(Api::AnthropicMessages, &a);
        assert_eq!(calls.len(), 1);
        assert_eq!(calls[0].name, "lookup_order");
        assert_eq!(calls[0].id, Some("toolu_1"));
        assert_eq!(calls[0].arguments.parsed(), Some(json!({"order": "A1"})));
        let r = json!({"tools": [{"type": "function", "name": "get_faq"}],
            "output": [{"type": "function_call", "call_id": "call_1", "name": "get_faq",
                "arguments": "{\"q\":\"refund\"}"}]});
        assert_eq!(offered_tools(Api::Responses, &r), ["get_faq"]);
        let calls = tool_calls(Api::Responses, &r);
        assert_eq!(calls[0].arguments.parsed(), Some(json!({"q": "refund"})));
        assert!(tool_calls(Api::ChatCompletions, &r).is_empty());
    }
}
