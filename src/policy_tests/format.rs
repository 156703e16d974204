//! The policy test file format: `<policy>.tests.yaml` next to `<policy>.policy`, written by
//! the policy's authors, so every field reads as a sentence about traffic.
//!
//! ```yaml
//! policy: support-assistant.policy
//! cases:
//!   - name: an approved model passes unchanged
//!     request:
//!       headers: { x-workflow: support-assistant }
//!       body: { model: gpt-4o-mini, messages: [{ role: user, content: Hello }] }
//!     expect:
//!       allowed: true
//!       fired: [AIP-4.1]
//! ```

use serde::Deserialize;
use std::collections::BTreeMap;

/// One test file: the policy it tests and its cases, in order.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TestFile {
    /// Path of the `.policy` file, relative to the test file.
    pub policy: String,
    /// What every case shares unless it says otherwise.
    #[serde(default)]
    pub defaults: Defaults,
    pub cases: Vec<Case>,
    /// 1-based line of each case's `name:` in the file, in case order (0 if not found),
    /// so a failure points at its case.
    #[serde(skip)]
    pub lines: Vec<usize>,
}

/// Shared by every case of a file: request headers (a case's own headers win, name by
/// name) and the upstream's reply (for cases without one).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Defaults {
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    #[serde(default)]
    pub reply: Option<Reply>,
}

impl TestFile {
    /// Applies [`Defaults`] to every case.
    fn apply_defaults(&mut self) {
        for case in &mut self.cases {
            for (k, v) in &self.defaults.headers {
                case.request
                    .headers
                    .entry(k.clone())
                    .or_insert_with(|| v.clone());
            }
            if case.reply.is_none() {
                case.reply.clone_from(&self.defaults.reply);
            }
        }
    }
}

/// The line of each case's `name:`, found in order in the file's text.
fn case_lines(text: &str, cases: &[Case]) -> Vec<usize> {
    let lines: Vec<&str> = text.lines().collect();
    let mut from = 0;
    cases
        .iter()
        .map(|c| {
            let at = lines.iter().enumerate().skip(from).find(|(_, l)| {
                l.trim_start()
                    .trim_start_matches("- ")
                    .strip_prefix("name:")
                    .is_some_and(|rest| rest.trim().trim_matches(['"', '\'']) == c.name)
            });
            match at {
                Some((i, _)) => {
                    from = i + 1;
                    i + 1
                }
                None => 0,
            }
        })
        .collect()
}

/// One request through the artifact and what must come of it.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Case {
    pub name: String,
    pub request: Request,
    /// What the upstream answers, if the request reaches it; a plain JSON 200 otherwise.
    #[serde(default)]
    pub reply: Option<Reply>,
    pub expect: Expect,
    /// Keep the state the previous case left (spend ledgers, the kill switch, oversight
    /// counters) instead of starting from a gateway that has served nothing.
    #[serde(default, rename = "continue")]
    pub continues: bool,
    /// Send the request this many times in a row (default 1), as one client would, and
    /// check `expect` on the last answer: `repeat: 61` is the 61st request of a minute
    /// for a `requests(user, minute) > 60` rule. The suite's clock is pinned, so the
    /// requests cannot straddle two windows.
    #[serde(default)]
    pub repeat: Option<u32>,
}

/// The most requests one case may send with `repeat`.
pub const MAX_REPEAT: u32 = 10_000;

/// The client's request. Defaults make the common case short: `POST /v1/chat/completions`
/// with a JSON body.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Request {
    #[serde(default = "default_method")]
    pub method: String,
    #[serde(default = "default_path")]
    pub path: String,
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// A JSON value, sent serialized; or a raw string with `raw_body`.
    #[serde(default)]
    pub body: Option<serde_json::Value>,
    /// Sent byte for byte (malformed JSON, other content types).
    #[serde(default)]
    pub raw_body: Option<String>,
}

/// What the upstream answers: a JSON body, or a list of SSE events sent one by one.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Reply {
    #[serde(default = "default_status")]
    pub status: u16,
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    #[serde(default)]
    pub body: Option<serde_json::Value>,
    /// SSE `data:` payloads, each a JSON value or the string `[DONE]`; each becomes one
    /// chunk on the wire, so a test decides exactly where the stream is cut.
    #[serde(default)]
    pub events: Option<Vec<serde_json::Value>>,
}

/// What must be true of the outcome. Every field is optional; a case states what matters.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Expect {
    /// The request reached the upstream (true) or was answered by the gateway (false).
    #[serde(default)]
    pub allowed: Option<bool>,
    /// The status the client receives.
    #[serde(default)]
    pub status: Option<u16>,
    /// Exactly the rules that acted (clause ids, or `AIP-2.1 "title"` to name one rule of a
    /// shared clause), in any order; every other rule is asserted not to have acted.
    #[serde(default)]
    pub fired: Option<Vec<String>>,
    /// Exactly the `monitor` rules that would have acted.
    #[serde(default)]
    pub monitored: Option<Vec<String>>,
    /// Texts the upstream must receive somewhere in its request body.
    #[serde(default)]
    pub upstream_sees: Vec<String>,
    /// Texts that must not appear anywhere the upstream can see (path, headers, body).
    #[serde(default)]
    pub upstream_never_sees: Vec<String>,
    /// Texts the client's reply body must contain.
    #[serde(default)]
    pub client_sees: Vec<String>,
    /// Texts the client's reply body must not contain.
    #[serde(default)]
    pub client_never_sees: Vec<String>,
    /// The model the upstream is asked for, after any routing.
    #[serde(default)]
    pub upstream_model: Option<String>,
    /// The review queue the reply is escalated to, or `none`.
    #[serde(default)]
    pub escalated: Option<String>,
}

impl Expect {
    /// Whether the expectation asserts anything at all: `expect: {}` would pass whatever
    /// the gateway did, so a case must state at least one fact.
    pub fn asserts_nothing(&self) -> bool {
        self.allowed.is_none()
            && self.status.is_none()
            && self.fired.is_none()
            && self.monitored.is_none()
            && self.upstream_sees.is_empty()
            && self.upstream_never_sees.is_empty()
            && self.client_sees.is_empty()
            && self.client_never_sees.is_empty()
            && self.upstream_model.is_none()
            && self.escalated.is_none()
    }
}

fn default_method() -> String {
    "POST".to_string()
}

fn default_path() -> String {
    "/v1/chat/completions".to_string()
}

fn default_status() -> u16 {
    200
}

impl Request {
    /// The body bytes as sent on the wire.
    pub fn body_bytes(&self) -> Vec<u8> {
        match (&self.raw_body, &self.body) {
            (Some(raw), _) => raw.clone().into_bytes(),
            (None, Some(v)) => v.to_string().into_bytes(),
            (None, None) => Vec::new(),
        }
    }
}

impl Reply {
    /// A plain successful chat completion, for cases that only test the request side.
    pub fn default_chat() -> Reply {
        Reply {
            status: 200,
            headers: BTreeMap::new(),
            body: Some(serde_json::json!({
                "id": "chatcmpl-test",
                "object": "chat.completion",
                "choices": [{"index": 0, "message": {"role": "assistant", "content": "OK"}, "finish_reason": "stop"}],
                "usage": {"prompt_tokens": 10, "completion_tokens": 1, "total_tokens": 11}
            })),
            events: None,
        }
    }

    /// The reply body as chunks on the wire: one chunk for JSON, one per SSE event.
    pub fn chunks(&self) -> Vec<Vec<u8>> {
        match &self.events {
            Some(events) => events
                .iter()
                .map(|e| match e {
                    serde_json::Value::String(s) => format!("data: {s}\n\n").into_bytes(),
                    other => format!("data: {other}\n\n").into_bytes(),
                })
                .collect(),
            None => vec![
                self.body
                    .as_ref()
                    .map(|b| b.to_string().into_bytes())
                    .unwrap_or_default(),
            ],
        }
    }

    /// Whether the reply is a server-sent event stream.
    pub fn is_stream(&self) -> bool {
        self.events.is_some()
    }
}

/// Reads and parses a test file, naming the file and position in any error.
pub fn load(path: &std::path::Path) -> anyhow::Result<TestFile> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| anyhow::anyhow!("cannot read {}: {e}", path.display()))?;
    let mut file: TestFile = serde_norway::from_str(&text).map_err(|e| {
        let e = e.to_string();
        match did_you_mean(&e) {
            Some(hint) => anyhow::anyhow!("{}: {e} (did you mean `{hint}`?)", path.display()),
            None => anyhow::anyhow!("{}: {e}", path.display()),
        }
    })?;
    file.lines = case_lines(&text, &file.cases);
    file.apply_defaults();
    if let Some(case) = file.cases.iter().find(|c| c.expect.asserts_nothing()) {
        anyhow::bail!(
            "{}: case `{}` asserts nothing: give `expect` at least one of allowed, status, fired, monitored, upstream_sees, upstream_never_sees, client_sees, client_never_sees, upstream_model, escalated",
            path.display(),
            case.name
        );
    }
    if let Some(case) = file
        .cases
        .iter()
        .find(|c| c.repeat.is_some_and(|n| n == 0 || n > MAX_REPEAT))
    {
        anyhow::bail!(
            "{}: case `{}` has `repeat: {}`; it sends the request from 1 to {MAX_REPEAT} times",
            path.display(),
            case.name,
            case.repeat.unwrap_or(0)
        );
    }
    if let Some(case) = file.cases.first().filter(|c| c.continues) {
        anyhow::bail!(
            "{}: the first case `{}` says `continue: true`, but there is no previous case",
            path.display(),
            case.name
        );
    }
    Ok(file)
}

/// For serde's "unknown field `X`, expected one of `a`, `b`, …", the expected name closest
/// to X (at most a third of its letters apart), if any.
fn did_you_mean(message: &str) -> Option<String> {
    let rest = message.split("unknown field `").nth(1)?;
    let (unknown, rest) = rest.split_once('`')?;
    let expected = rest.split("expected").nth(1)?;
    let candidates = expected.split('`').skip(1).step_by(2);
    candidates
        .map(|c| (edit_distance(unknown, c), c))
        .filter(|(d, _)| *d <= unknown.chars().count().div_ceil(3).max(1))
        .min_by_key(|(d, _)| *d)
        .map(|(_, c)| c.to_string())
}

/// Levenshtein distance over chars.
fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut prev = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let cur = row[j + 1];
            row[j + 1] = (prev + usize::from(ca != *cb)).min(row[j] + 1).min(cur + 1);
            prev = cur;
        }
    }
    row[b.len()]
}

#[cfg(test)]
mod tests {
    use super::did_you_mean;

    #[test]
    fn suggests_the_closest_expected_field() {
        let m = "cases[0]: unknown field `exepct`, expected one of `name`, `request`, `reply`, `expect`, `continue` at line 5 column 5";
        assert_eq!(did_you_mean(m).as_deref(), Some("expect"));
        let far = "unknown field `zzzzzz`, expected one of `name`, `request`";
        assert_eq!(did_you_mean(far), None);
        assert_eq!(did_you_mean("invalid type: string"), None);
    }
}
