//! Token usage a provider reports: read from a JSON reply ([`usage_from_json`]) or
//! scanned out of a streamed (`text/event-stream`) reply chunk by chunk ([`SseUsage`]),
//! and the request rewrite that makes a stream report it ([`request_stream_usage`]).
//! A leaf module: plain JSON and bytes, no policy.

use serde_json::Value as Json;

/// Token counts of one call.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Usage {
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
    /// The part of `prompt_tokens` served from the provider's prompt cache.
    pub cached_tokens: u64,
}

/// Reads the `usage` of a reply, whatever the API: chat and legacy completions,
/// embeddings (`prompt_tokens`/`completion_tokens`); the Responses API (`input_tokens`/
/// `output_tokens`, also under `response.usage` in its stream events); the Anthropic
/// Messages API (`input_tokens`/`output_tokens`, also under `message.usage` in
/// `message_start`). `None` when the reply carries no usage, so the caller never
/// mistakes an estimate for usage.
pub fn usage_from_json(reply: &Json) -> Option<Usage> {
    partial_usage(reply).map(PartialUsage::complete)
}

/// What one usage object says; a streamed reply may spread it over several events
/// (Anthropic: input tokens in `message_start`, output tokens in `message_delta`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct PartialUsage {
    prompt: Option<u64>,
    completion: Option<u64>,
    cached: Option<u64>,
}

impl PartialUsage {
    /// `later` on top of `self`: each count `later` reports replaces this one (counts in
    /// a stream are cumulative), the others stay.
    fn merge(self, later: PartialUsage) -> PartialUsage {
        PartialUsage {
            prompt: later.prompt.or(self.prompt),
            completion: later.completion.or(self.completion),
            cached: later.cached.or(self.cached),
        }
    }

    fn complete(self) -> Usage {
        let prompt_tokens = self.prompt.unwrap_or(0);
        Usage {
            prompt_tokens,
            completion_tokens: self.completion.unwrap_or(0),
            cached_tokens: self.cached.unwrap_or(0).min(prompt_tokens),
        }
    }
}

/// The usage object of a reply or event: `usage`, `response.usage` (Responses stream
/// events) or `message.usage` (Anthropic `message_start`).
fn partial_usage(reply: &Json) -> Option<PartialUsage> {
    let usage = match reply.get("usage") {
        Some(u) if u.is_object() => u,
        _ => ["response", "message"]
            .iter()
            .find_map(|k| reply.get(*k)?.get("usage").filter(|u| u.is_object()))?,
    };
    let num = |names: &[&str]| names.iter().find_map(|n| usage.get(*n)?.as_u64());
    let input = num(&["prompt_tokens", "input_tokens"]);
    let completion = num(&["completion_tokens", "output_tokens"]);
    // Anthropic counts cache reads and cache writes apart from `input_tokens`; the prompt
    // is their sum, and the reads are the cached part. (Cache writes are charged as
    // ordinary input: the price table has no rate for them.)
    let cache_read = num(&["cache_read_input_tokens"]);
    let cache_write = num(&["cache_creation_input_tokens"]);
    if input.is_none() && completion.is_none() && cache_read.is_none() {
        return None;
    }
    let prompt = match (input, cache_read, cache_write) {
        (None, None, None) => None,
        (i, r, w) => Some(
            i.unwrap_or(0)
                .saturating_add(r.unwrap_or(0))
                .saturating_add(w.unwrap_or(0)),
        ),
    };
    let cached = ["prompt_tokens_details", "input_tokens_details"]
        .iter()
        .find_map(|d| usage.get(*d)?.get("cached_tokens")?.as_u64())
        .or(cache_read);
    Some(PartialUsage {
        prompt,
        completion,
        cached,
    })
}

/// The longest SSE line [`SseUsage`] buffers; a longer event is skipped so a hostile
/// stream cannot grow memory without bound.
pub const MAX_SSE_EVENT_BYTES: usize = 1 << 20;

/// Finds the `usage` of a streamed (`text/event-stream`) reply chunk by chunk, keeping
/// only the unfinished line, so an event split across body chunks anywhere is still read.
/// Each count comes from the last event that reports it (OpenAI sends usage in the final
/// chunk, with `stream_options.include_usage`, see [`request_stream_usage`]; the Responses
/// API in `response.completed`; Anthropic the input tokens in `message_start` and the
/// cumulative output tokens in `message_delta`).
#[derive(Debug, Default)]
pub struct SseUsage {
    line: Vec<u8>,
    data: Vec<u8>,
    overflow: bool,
    usage: Option<PartialUsage>,
}

impl SseUsage {
    /// A scanner that has seen nothing.
    pub fn new() -> SseUsage {
        SseUsage::default()
    }

    /// Feeds the next piece of the stream.
    pub fn push(&mut self, chunk: &[u8]) {
        for &b in chunk {
            if b == b'\n' {
                let line = std::mem::take(&mut self.line);
                self.line_done(&line);
                self.line = line;
                self.line.clear();
            } else if self.line.len() < MAX_SSE_EVENT_BYTES {
                self.line.push(b);
            } else {
                self.overflow = true;
            }
        }
    }

    /// Ends the stream (dispatching an event not followed by a blank line) and returns the
    /// usage found, if any.
    pub fn finish(mut self) -> Option<Usage> {
        if !self.line.is_empty() {
            let line = std::mem::take(&mut self.line);
            self.line_done(&line);
        }
        self.dispatch();
        self.usage.map(PartialUsage::complete)
    }

    /// The usage found so far.
    pub fn usage(&self) -> Option<Usage> {
        self.usage.map(PartialUsage::complete)
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
            if self.data.len() + rest.len() <= MAX_SSE_EVENT_BYTES {
                self.data.extend_from_slice(rest);
            } else {
                self.overflow = true;
            }
        }
    }

    fn dispatch(&mut self) {
        let data = std::mem::take(&mut self.data);
        let overflow = std::mem::replace(&mut self.overflow, false);
        // Only events mentioning usage are parsed: the deltas before them are skipped cheaply.
        if overflow || data.is_empty() || !contains(&data, b"\"usage\"") {
            return;
        }
        if let Some(u) = serde_json::from_slice::<Json>(&data)
            .ok()
            .as_ref()
            .and_then(partial_usage)
        {
            self.usage = Some(self.usage.unwrap_or_default().merge(u));
        }
    }
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

/// For a streamed chat or completions request, asks the provider to report usage in the
/// final chunk (`stream_options.include_usage: true`), which is the only way a stream
/// carries usage. Returns true when the body was changed; a request that is not streamed
/// or already asks for usage is left as is. The filter re-serialises the body only when
/// this returns true.
pub fn request_stream_usage(body: &mut Json) -> bool {
    let Some(obj) = body.as_object_mut() else {
        return false;
    };
    if obj.get("stream").and_then(Json::as_bool) != Some(true) {
        return false;
    }
    // The Responses API always reports usage in `response.completed`; it has no such option.
    if obj.contains_key("input") && !obj.contains_key("messages") && !obj.contains_key("prompt") {
        return false;
    }
    let options = obj
        .entry("stream_options")
        .or_insert_with(|| Json::Object(serde_json::Map::new()));
    if !options.is_object() {
        *options = Json::Object(serde_json::Map::new());
    }
    let Some(options) = options.as_object_mut() else {
        return false;
    };
    if options.get("include_usage").and_then(Json::as_bool) == Some(true) {
        return false;
    }
    options.insert("include_usage".into(), Json::Bool(true));
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn usage_is_read_from_chat_responses_and_embeddings_replies() {
        let chat = serde_json::json!({"usage": {"prompt_tokens": 10, "completion_tokens": 5,
            "prompt_tokens_details": {"cached_tokens": 4}}});
        assert_eq!(
            usage_from_json(&chat),
            Some(Usage {
                prompt_tokens: 10,
                completion_tokens: 5,
                cached_tokens: 4
            })
        );
        let responses = serde_json::json!({"type": "response.completed", "response": {"usage":
            {"input_tokens": 7, "output_tokens": 3, "input_tokens_details": {"cached_tokens": 0}}}});
        assert_eq!(
            usage_from_json(&responses),
            Some(Usage {
                prompt_tokens: 7,
                completion_tokens: 3,
                cached_tokens: 0
            })
        );
        let emb = serde_json::json!({"usage": {"prompt_tokens": 8, "total_tokens": 8}});
        assert_eq!(
            usage_from_json(&emb),
            Some(Usage {
                prompt_tokens: 8,
                completion_tokens: 0,
                cached_tokens: 0
            })
        );
        assert_eq!(usage_from_json(&serde_json::json!({"usage": null})), None);
        assert_eq!(usage_from_json(&serde_json::json!({"choices": []})), None);
        assert_eq!(
            usage_from_json(&serde_json::json!({"usage": {"prompt_tokens": -1}})),
            None
        );
    }

    #[test]
    fn anthropic_usage_counts_cache_reads_and_writes_as_prompt() {
        let reply = serde_json::json!({"type": "message", "usage": {"input_tokens": 10,
            "cache_creation_input_tokens": 20, "cache_read_input_tokens": 100, "output_tokens": 7}});
        assert_eq!(
            usage_from_json(&reply),
            Some(Usage {
                prompt_tokens: 130,
                completion_tokens: 7,
                cached_tokens: 100
            })
        );
        let start = serde_json::json!({"type": "message_start", "message": {"id": "msg_1",
            "usage": {"input_tokens": 25, "output_tokens": 1}}});
        assert_eq!(
            usage_from_json(&start),
            Some(Usage {
                prompt_tokens: 25,
                completion_tokens: 1,
                cached_tokens: 0
            })
        );
    }

    /// An Anthropic stream: input tokens in `message_start`, the cumulative output count
    /// in `message_delta`; cut anywhere, the two are combined.
    #[test]
    fn anthropic_stream_usage_combines_start_and_delta() {
        let stream = "event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"usage\":{\"input_tokens\":25,\"cache_read_input_tokens\":5,\"output_tokens\":1}}}\n\n\
            event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\"usage\"}}\n\n\
            event: message_delta\ndata: {\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\"end_turn\"},\"usage\":{\"output_tokens\":15}}\n\n\
            event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n";
        for size in 1..=stream.len() {
            let mut s = SseUsage::new();
            for chunk in stream.as_bytes().chunks(size) {
                s.push(chunk);
            }
            assert_eq!(
                s.finish(),
                Some(Usage {
                    prompt_tokens: 30,
                    completion_tokens: 15,
                    cached_tokens: 5
                }),
                "chunk size {size}"
            );
        }
        // A Responses stream: usage only in `response.completed`.
        let mut s = SseUsage::new();
        s.push(b"event: response.output_text.delta\ndata: {\"type\":\"response.output_text.delta\",\"delta\":\"hi\"}\n\n\
            event: response.completed\ndata: {\"type\":\"response.completed\",\"response\":{\"usage\":{\"input_tokens\":9,\"output_tokens\":2}}}\n\n");
        assert_eq!(
            s.finish(),
            Some(Usage {
                prompt_tokens: 9,
                completion_tokens: 2,
                cached_tokens: 0
            })
        );
    }

    const STREAM: &str = "data: {\"choices\":[{\"delta\":{\"content\":\"Hel\"}}],\"usage\":null}\n\n\
        data: {\"choices\":[{\"delta\":{\"content\":\"lo\"}}],\"usage\":null}\n\n\
        data: {\"choices\":[],\"usage\":{\"prompt_tokens\":12,\"completion_tokens\":2}}\n\n\
        data: [DONE]\n\n";

    #[test]
    fn sse_usage_is_found_however_the_stream_is_split() {
        let want = Some(Usage {
            prompt_tokens: 12,
            completion_tokens: 2,
            cached_tokens: 0,
        });
        for size in [1, 2, 3, 7, 64, STREAM.len()] {
            let mut s = SseUsage::new();
            for chunk in STREAM.as_bytes().chunks(size) {
                s.push(chunk);
            }
            assert_eq!(s.finish(), want, "chunk size {size}");
        }
        let crlf = STREAM.replace('\n', "\r\n");
        let mut s = SseUsage::new();
        s.push(crlf.as_bytes());
        assert_eq!(s.finish(), want);
        let mut none = SseUsage::new();
        none.push(b"data: {\"choices\":[]}\n\ndata: [DONE]\n\n");
        assert_eq!(none.finish(), None);
        // No blank line after the last event still counts at the end of the stream.
        let mut tail = SseUsage::new();
        tail.push(b"data: {\"usage\":{\"prompt_tokens\":1,\"completion_tokens\":1}}");
        assert!(tail.finish().is_some());
    }

    #[test]
    fn streamed_requests_ask_for_usage_once() {
        let mut b = serde_json::json!({"model": "m", "stream": true, "messages": []});
        assert!(request_stream_usage(&mut b));
        assert_eq!(b["stream_options"]["include_usage"], Json::Bool(true));
        assert!(!request_stream_usage(&mut b));
        let mut keep = serde_json::json!({"model": "m", "stream": true, "stream_options": {"include_obfuscation": false}, "messages": []});
        assert!(request_stream_usage(&mut keep));
        assert_eq!(
            keep["stream_options"]["include_obfuscation"],
            Json::Bool(false)
        );
        let mut plain = serde_json::json!({"model": "m", "messages": []});
        assert!(!request_stream_usage(&mut plain));
        assert!(plain.get("stream_options").is_none());
    }
}
