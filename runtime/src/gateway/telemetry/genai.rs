//! What an OpenAI-compatible exchange says about itself, read for the OTel GenAI semantic
//! conventions: the operation (from the path), the model asked for (request body), the
//! model that answered and the token usage (reply body, JSON or SSE). Only these fields
//! are kept: never message text.

use serde::Deserialize;

/// The largest JSON reply scanned for `model` and `usage`; a larger one is not read.
const MAX_JSON_REPLY: usize = 4 << 20;
/// The longest SSE line kept while waiting for its end.
const MAX_SSE_LINE: usize = 1 << 20;
/// The longest model name recorded (a client chooses it; keep attributes bounded).
const MAX_MODEL_LEN: usize = 256;

/// `gen_ai.operation.name` for a request path (query string ignored), as the conventions
/// name OpenAI's endpoints; `None` for a path that is no GenAI operation.
pub fn operation_for_path(path: &str) -> Option<&'static str> {
    let path = path.split(['?', '#']).next().unwrap_or("");
    let path = path.trim_end_matches('/');
    if path.ends_with("/chat/completions") {
        Some("chat")
    } else if path.ends_with("/completions") {
        Some("text_completion")
    } else if path.ends_with("/embeddings") {
        Some("embeddings")
    } else if path.ends_with("/responses") || path.ends_with("/v1/messages") {
        // The Responses API and Anthropic's Messages API are chat in the conventions.
        Some("chat")
    } else {
        None
    }
}

#[derive(Deserialize)]
struct ModelOnly {
    #[serde(default)]
    model: Option<serde_json::Value>,
}

/// The `model` of a JSON request body, when it has a string one.
pub fn request_model(body: &[u8]) -> Option<String> {
    let parsed: ModelOnly = serde_json::from_slice(body).ok()?;
    match parsed.model? {
        serde_json::Value::String(s) => Some(bounded(s)),
        _ => None,
    }
}

fn bounded(mut s: String) -> String {
    if s.len() > MAX_MODEL_LEN {
        let mut cut = MAX_MODEL_LEN;
        while !s.is_char_boundary(cut) {
            cut -= 1;
        }
        s.truncate(cut);
    }
    s
}

/// `usage` as OpenAI's chat/completions/embeddings (`prompt_tokens`, `completion_tokens`),
/// the Responses API and Anthropic's Messages API (`input_tokens`, `output_tokens`;
/// Anthropic counts cache reads and writes apart, in `cache_read_input_tokens` and
/// `cache_creation_input_tokens`) write it.
#[derive(Deserialize, Default)]
struct UsageFields {
    prompt_tokens: Option<u64>,
    completion_tokens: Option<u64>,
    input_tokens: Option<u64>,
    output_tokens: Option<u64>,
    cache_read_input_tokens: Option<u64>,
    cache_creation_input_tokens: Option<u64>,
}

#[derive(Deserialize)]
struct ReplyFields {
    #[serde(default)]
    model: Option<serde_json::Value>,
    #[serde(default)]
    usage: Option<UsageFields>,
    /// The Responses API nests the final object in `response`.
    #[serde(default)]
    response: Option<Box<ReplyFields>>,
    /// Anthropic's `message_start` nests the message (model, input tokens) in `message`.
    #[serde(default)]
    message: Option<Box<ReplyFields>>,
}

/// Token counts of one exchange.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Usage {
    pub input_tokens: Option<u64>,
    pub output_tokens: Option<u64>,
}

/// Reads the reply as the client receives it, frame by frame, keeping only the model and
/// the usage.
#[derive(Debug, Default)]
pub struct ReplyObserver {
    sse: bool,
    buffer: Vec<u8>,
    overflowed: bool,
    /// The model that answered (`gen_ai.response.model`).
    pub model: Option<String>,
    /// The usage the reply reported, if any.
    pub usage: Option<Usage>,
}

impl ReplyObserver {
    /// An observer for a reply of this `content-type`.
    pub fn new(content_type: Option<&str>) -> ReplyObserver {
        ReplyObserver {
            sse: content_type.is_some_and(|c| c.contains("text/event-stream")),
            ..ReplyObserver::default()
        }
    }

    /// Feeds the next chunk of the body.
    pub fn feed(&mut self, chunk: &[u8]) {
        if self.overflowed {
            return;
        }
        if !self.sse {
            if self.buffer.len() + chunk.len() > MAX_JSON_REPLY {
                self.overflowed = true;
                self.buffer = Vec::new();
            } else {
                self.buffer.extend_from_slice(chunk);
            }
            return;
        }
        let mut rest = chunk;
        while let Some(end) = rest.iter().position(|&b| b == b'\n') {
            let (line, tail) = rest.split_at(end);
            rest = tail.get(1..).unwrap_or(&[]);
            if self.buffer.is_empty() {
                self.sse_line(line);
            } else {
                let mut whole = std::mem::take(&mut self.buffer);
                whole.extend_from_slice(line);
                self.sse_line(&whole);
            }
        }
        if self.buffer.len() + rest.len() > MAX_SSE_LINE {
            // A line this long is no usage chunk worth keeping; skip to the next line.
            self.buffer.clear();
        } else {
            self.buffer.extend_from_slice(rest);
        }
    }

    /// The body has ended: reads a JSON reply, or the last unterminated SSE line.
    pub fn finish(&mut self) {
        let rest = std::mem::take(&mut self.buffer);
        if self.overflowed || rest.is_empty() {
            return;
        }
        if self.sse {
            self.sse_line(&rest);
        } else {
            self.json(&rest);
        }
    }

    fn sse_line(&mut self, line: &[u8]) {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        let Some(data) = line.strip_prefix(b"data:") else {
            return;
        };
        let data = data.strip_prefix(b" ").unwrap_or(data);
        if data.first() == Some(&b'{') {
            self.json(data);
        }
    }

    fn json(&mut self, bytes: &[u8]) {
        let Ok(fields) = serde_json::from_slice::<ReplyFields>(bytes) else {
            return;
        };
        self.take(fields);
    }

    fn take(&mut self, fields: ReplyFields) {
        if let Some(serde_json::Value::String(m)) = fields.model
            && self.model.is_none()
        {
            self.model = Some(bounded(m));
        }
        if let Some(u) = fields.usage {
            let cache = match (u.cache_read_input_tokens, u.cache_creation_input_tokens) {
                (None, None) => None,
                (r, w) => Some(r.unwrap_or(0).saturating_add(w.unwrap_or(0))),
            };
            let input = match (u.prompt_tokens.or(u.input_tokens), cache) {
                (Some(i), Some(c)) => Some(i.saturating_add(c)),
                (i, c) => i.or(c),
            };
            let output = u.completion_tokens.or(u.output_tokens);
            if input.is_some() || output.is_some() {
                // Counts a stream reports in several events (Anthropic: input in
                // `message_start`, output in `message_delta`) are combined; a later count
                // replaces an earlier one.
                let before = self.usage.unwrap_or_default();
                self.usage = Some(Usage {
                    input_tokens: input.or(before.input_tokens),
                    output_tokens: output.or(before.output_tokens),
                });
            }
        }
        for inner in [fields.response, fields.message].into_iter().flatten() {
            self.take(*inner);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn operations_come_from_the_path() {
        assert_eq!(operation_for_path("/v1/chat/completions"), Some("chat"));
        assert_eq!(
            operation_for_path("/v1/completions?x=1"),
            Some("text_completion")
        );
        assert_eq!(
            operation_for_path("/openai/v1/embeddings"),
            Some("embeddings")
        );
        assert_eq!(operation_for_path("/v1/models"), None);
    }

    #[test]
    fn the_request_model_is_read_without_the_messages() {
        let body = br#"{"messages":[{"role":"user","content":"hi"}],"model":"gpt-4o"}"#;
        assert_eq!(request_model(body).as_deref(), Some("gpt-4o"));
        assert_eq!(request_model(b"{\"model\":7}"), None);
        assert_eq!(request_model(b"not json"), None);
    }

    #[test]
    fn a_json_reply_gives_model_and_usage_across_chunks() {
        let mut o = ReplyObserver::new(Some("application/json"));
        let body = br#"{"id":"x","model":"gpt-4o-2024","choices":[],"usage":{"prompt_tokens":12,"completion_tokens":5,"total_tokens":17}}"#;
        let (a, b) = body.split_at(30);
        o.feed(a);
        o.feed(b);
        o.finish();
        assert_eq!(o.model.as_deref(), Some("gpt-4o-2024"));
        assert_eq!(
            o.usage,
            Some(Usage {
                input_tokens: Some(12),
                output_tokens: Some(5)
            })
        );
    }

    #[test]
    fn an_sse_reply_gives_the_usage_of_its_last_chunk() {
        let mut o = ReplyObserver::new(Some("text/event-stream"));
        let stream = "data: {\"model\":\"m1\",\"choices\":[{\"delta\":{\"content\":\"hel\"}}]}\n\n\
                      data: {\"model\":\"m1\",\"choices\":[],\"usage\":{\"prompt_tokens\":3,\"completion_tokens\":9}}\r\n\r\n\
                      data: [DONE]\n\n";
        for chunk in stream.as_bytes().chunks(7) {
            o.feed(chunk);
        }
        o.finish();
        assert_eq!(o.model.as_deref(), Some("m1"));
        assert_eq!(o.usage.and_then(|u| u.output_tokens), Some(9));
    }

    #[test]
    fn an_anthropic_stream_gives_input_from_message_start_and_output_from_message_delta() {
        let mut o = ReplyObserver::new(Some("text/event-stream"));
        let stream = "event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"model\":\"claude-x\",\"usage\":{\"input_tokens\":20,\"cache_read_input_tokens\":5,\"output_tokens\":1}}}\n\n\
                      event: message_delta\ndata: {\"type\":\"message_delta\",\"usage\":{\"output_tokens\":12}}\n\n";
        for chunk in stream.as_bytes().chunks(5) {
            o.feed(chunk);
        }
        o.finish();
        assert_eq!(o.model.as_deref(), Some("claude-x"));
        assert_eq!(
            o.usage,
            Some(Usage {
                input_tokens: Some(25),
                output_tokens: Some(12)
            })
        );
        assert_eq!(operation_for_path("/v1/messages"), Some("chat"));
    }

    #[test]
    fn embeddings_usage_has_no_output_tokens() {
        let mut o = ReplyObserver::new(None);
        o.feed(br#"{"model":"e","usage":{"prompt_tokens":4,"total_tokens":4}}"#);
        o.finish();
        assert_eq!(
            o.usage,
            Some(Usage {
                input_tokens: Some(4),
                output_tokens: None
            })
        );
    }
}
