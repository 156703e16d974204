//! The request as the evaluator sees it: headers plus the parsed JSON body, gathered by the
//! host adapter (`filter`) or by a test. Plain data, no host calls.

use serde_json::Value as Json;

/// One HTTP request, ready for evaluation.
///
/// Header names are lower case (as HTTP/2 and Envoy deliver them); `method` and `path` come
/// from the `:method` and `:path` pseudo-headers when the adapter builds the view.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Request {
    pub method: String,
    /// The request path without its query string, so `path == "/v1/chat/completions"`
    /// holds whatever the client appends after `?`.
    pub path: String,
    /// The query string as sent (after `?`, before any `#`; empty when there is none),
    /// which `query has` and `scan query` search.
    pub query: String,
    pub headers: Vec<(String, String)>,
    /// The parsed JSON body, or `None` for a request without one.
    pub body: Option<Json>,
    /// The one detection pass over the body's bytes ([`crate::detection`]), when the
    /// adapter ran it: `prompt has …` rules read it instead of scanning. Describes `body`;
    /// whoever replaces `body` must replace or clear it.
    pub detection: Option<crate::detection::Detection>,
}

impl Request {
    /// Builds a view from a header list that includes the `:method` and `:path`
    /// pseudo-headers, lower-casing names so lookups are case-insensitive.
    pub fn from_headers(headers: Vec<(String, String)>, body: Option<Json>) -> Request {
        let mut method = String::new();
        let mut path = String::new();
        let mut query = String::new();
        let mut rest = Vec::with_capacity(headers.len());
        for (name, value) in headers {
            let name = if name.bytes().any(|b| b.is_ascii_uppercase()) {
                name.to_ascii_lowercase()
            } else {
                name
            };
            match name.as_str() {
                ":method" => method = value,
                ":path" => {
                    path = strip_query(&value).to_string();
                    query = query_of(&value).to_string();
                }
                _ => rest.push((name, value)),
            }
        }
        Request {
            method,
            path,
            query,
            headers: rest,
            body,
            detection: None,
        }
    }

    /// The first value of a header, by lower-case name.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    /// Every value of a header, by lower-case name (a header may be sent more than once).
    pub fn header_values<'s>(&'s self, name: &'s str) -> impl Iterator<Item = &'s str> + 's {
        self.headers
            .iter()
            .filter(move |(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    /// `model` in the JSON body.
    pub fn model(&self) -> Option<&str> {
        self.body.as_ref()?.get("model")?.as_str()
    }

    /// The provider API the request speaks, from its path and `anthropic-version`
    /// header ([`crate::api::Api::of`]).
    pub fn api(&self) -> crate::api::Api {
        crate::api::Api::of(&self.path, self.header("anthropic-version"))
    }

    /// The output-token limit under the request's API's name for it: `max_tokens` or
    /// `max_completion_tokens` (chat), `max_tokens` (Anthropic), `max_output_tokens`
    /// (Responses); see [`crate::api::Api::max_tokens`].
    pub fn max_tokens(&self) -> Option<f64> {
        self.api().max_tokens(self.body.as_ref()?)
    }

    /// `stream` in the JSON body. An absent flag means a non-streamed reply, as in the
    /// OpenAI API, so a body without it reads as `false`; a request without a body has none.
    pub fn stream(&self) -> Option<bool> {
        let body = self.body.as_ref()?;
        match body.get("stream") {
            None | Some(Json::Null) => Some(false),
            Some(v) => v.as_bool(),
        }
    }

    /// Calls `f` on every string of the body, object keys included, depth first, so
    /// detectors cover the whole body and not only `messages`. Stops early when
    /// `f` returns true, and returns whether it did.
    pub fn any_body_string(&self, mut f: impl FnMut(&str) -> bool) -> bool {
        match &self.body {
            Some(body) => any_string(body, &mut f),
            None => false,
        }
    }
}

/// Calls `f` on every string of a JSON value, object keys included (personal data can be
/// a key), depth first; stops at the first that it returns true for.
pub(crate) fn any_string(value: &Json, f: &mut impl FnMut(&str) -> bool) -> bool {
    match value {
        Json::String(s) => f(s),
        Json::Array(items) => items.iter().any(|v| any_string(v, f)),
        Json::Object(map) => map.iter().any(|(k, v)| f(k) || any_string(v, f)),
        Json::Null | Json::Bool(_) | Json::Number(_) => false,
    }
}

/// The query string of a `:path` value: after the first `?`, up to any `#`.
pub fn query_of(path: &str) -> &str {
    let Some(q) = path.find('?') else { return "" };
    let rest = path.get(q + 1..).unwrap_or_default();
    match rest.find('#') {
        Some(h) => rest.get(..h).unwrap_or_default(),
        None => rest,
    }
}

fn strip_query(path: &str) -> &str {
    match path.find(['?', '#']) {
        Some(i) => &path[..i],
        None => path,
    }
}

/// Why a body cannot be evaluated; each maps to a defined HTTP answer in the adapter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BodyError {
    /// The body is not valid JSON, or its top level is not an object (400).
    Malformed(String),
    /// The body is larger than the engine accepts (413).
    TooLarge { limit: usize },
    /// The content type is not JSON (415).
    UnsupportedMediaType(String),
    /// The body is compressed (`content-encoding` other than `identity`): the engine does
    /// not inflate bodies, so it cannot read what the provider would (415).
    UnsupportedEncoding(String),
}

/// Whether a request `content-encoding` leaves the body as sent: absent, empty or only
/// `identity`. Anything else (`gzip`, `br`, `identity, gzip`) is a body the engine cannot
/// read as the provider would.
pub fn is_identity_encoding(value: Option<&str>) -> bool {
    value.is_none_or(|v| {
        v.split(',')
            .map(str::trim)
            .all(|c| c.is_empty() || c.eq_ignore_ascii_case("identity"))
    })
}

/// Parses a request body into the view. OpenAI-compatible endpoints take a JSON object;
/// anything else is refused rather than passed on unchecked (fail closed).
pub fn parse_body(bytes: &[u8], limit: usize) -> Result<Json, BodyError> {
    if bytes.len() > limit {
        return Err(BodyError::TooLarge { limit });
    }
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let value = serde::Deserialize::deserialize(&mut de)
        .and_then(|Strict(v)| de.end().map(|()| v))
        .map_err(|e| BodyError::Malformed(e.to_string()))?;
    if !value.is_object() {
        return Err(BodyError::Malformed(
            "the request body must be a JSON object".into(),
        ));
    }
    Ok(value)
}

/// A JSON value parsed with duplicate object keys refused. Parsers disagree on which of two
/// equal keys wins (serde keeps the last, others the first), so a body such as
/// `{"model":"a","model":"b"}` could be checked as one request and run as another; the
/// engine refuses it instead.
struct Strict(Json);

impl<'de> serde::Deserialize<'de> for Strict {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Strict, D::Error> {
        d.deserialize_any(StrictVisitor).map(Strict)
    }
}

struct StrictVisitor;

impl<'de> serde::de::Visitor<'de> for StrictVisitor {
    type Value = Json;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a JSON value")
    }
    fn visit_bool<E>(self, v: bool) -> Result<Json, E> {
        Ok(Json::Bool(v))
    }
    fn visit_i64<E>(self, v: i64) -> Result<Json, E> {
        Ok(Json::from(v))
    }
    fn visit_u64<E>(self, v: u64) -> Result<Json, E> {
        Ok(Json::from(v))
    }
    fn visit_f64<E>(self, v: f64) -> Result<Json, E> {
        Ok(serde_json::Number::from_f64(v).map_or(Json::Null, Json::Number))
    }
    fn visit_str<E>(self, v: &str) -> Result<Json, E> {
        Ok(Json::String(v.to_owned()))
    }
    fn visit_string<E>(self, v: String) -> Result<Json, E> {
        Ok(Json::String(v))
    }
    fn visit_unit<E>(self) -> Result<Json, E> {
        Ok(Json::Null)
    }
    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Json, A::Error> {
        let mut items = Vec::new();
        while let Some(Strict(v)) = seq.next_element()? {
            items.push(v);
        }
        Ok(Json::Array(items))
    }
    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Json, A::Error> {
        let mut object = serde_json::Map::new();
        while let Some(key) = map.next_key::<String>()? {
            if object.contains_key(&key) {
                return Err(serde::de::Error::custom(format_args!(
                    "duplicate key `{}`",
                    key.chars().take(64).collect::<String>()
                )));
            }
            let Strict(value) = map.next_value()?;
            object.insert(key, value);
        }
        Ok(Json::Object(object))
    }
}

/// Whether a `content-type` value names JSON (`application/json`, or any `+json` type),
/// ignoring parameters such as `charset`.
pub fn is_json_content_type(value: &str) -> bool {
    let essence = value.split(';').next().unwrap_or("").trim();
    essence.eq_ignore_ascii_case("application/json")
        || essence
            .rsplit_once('+')
            .is_some_and(|(_, suffix)| suffix.eq_ignore_ascii_case("json"))
}

/// Rewrites the top-level `model` of a JSON body to `model`, splicing only that string
/// (every other byte is kept). `Ok(None)` when the body has no top-level `model` string or
/// it already names `model`.
pub fn set_model(
    body: &[u8],
    model: &str,
) -> Result<Option<Vec<u8>>, crate::json_strings::JsonError> {
    use crate::json_strings::Pat;
    crate::json_strings::rewrite_strings(body, |path, s| {
        (path.matches(&[Pat::Key("model")]) && s != model).then(|| model.to_string())
    })
}

/// For a streamed chat or completions request without `stream_options`, the body with
/// `"stream_options":{"include_usage":true}` spliced in first, so the provider reports
/// usage in its final chunk and the budget is settled from real usage. A body that already
/// has `stream_options` goes through [`crate::usage::request_stream_usage`] on a copy and
/// is re-serialised (rare). `None` when nothing needs changing, and always for APIs that
/// report stream usage unasked ([`crate::api::Api::asks_stream_usage`]: Anthropic would
/// refuse the unknown field).
pub fn ask_stream_usage(api: crate::api::Api, body: &[u8], json: &Json) -> Option<Vec<u8>> {
    if !api.asks_stream_usage() {
        return None;
    }
    let obj = json.as_object()?;
    if obj.get("stream").and_then(Json::as_bool) != Some(true) {
        return None;
    }
    if !obj.contains_key("stream_options") {
        let mut probe = json.clone();
        if !crate::usage::request_stream_usage(&mut probe) {
            return None;
        }
        let open = body.iter().position(|&b| b == b'{')?;
        let insert: &[u8] = br#""stream_options":{"include_usage":true},"#;
        let mut out = Vec::with_capacity(body.len() + insert.len());
        out.extend_from_slice(body.get(..=open)?);
        out.extend_from_slice(insert);
        out.extend_from_slice(body.get(open + 1..)?);
        return Some(out);
    }
    let mut copy = json.clone();
    if crate::usage::request_stream_usage(&mut copy) {
        serde_json::to_vec(&copy).ok()
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::api::Api;

    #[test]
    fn builds_the_view_from_pseudo_headers() {
        let r = Request::from_headers(
            vec![
                (":method".into(), "POST".into()),
                (":path".into(), "/v1/chat/completions?x=1".into()),
                ("X-Team".into(), "risk".into()),
            ],
            None,
        );
        assert_eq!(r.method, "POST");
        assert_eq!(r.path, "/v1/chat/completions");
        assert_eq!(r.header("x-team"), Some("risk"));
        assert_eq!(r.stream(), None);
    }

    #[test]
    fn extracts_body_fields() {
        let body = parse_body(
            br#"{"model":"gpt-4o","max_completion_tokens":12,"messages":[{"content":"hi"}]}"#,
            1024,
        )
        .ok();
        let r = Request::from_headers(vec![], body);
        assert_eq!(r.model(), Some("gpt-4o"));
        assert_eq!(r.max_tokens(), Some(12.0));
        assert_eq!(r.stream(), Some(false));
        let mut seen = vec![];
        r.any_body_string(|s| {
            seen.push(s.to_string());
            false
        });
        assert_eq!(
            seen,
            [
                "model",
                "gpt-4o",
                "max_completion_tokens",
                "messages",
                "content",
                "hi"
            ]
        );
    }

    #[test]
    fn model_and_stream_usage_are_spliced() {
        let body = br#"{"model":"gpt-4o", "messages":[{"role":"user","content":"model"}]}"#;
        let out = set_model(body, "gpt-4o-mini").unwrap().unwrap();
        assert_eq!(
            out,
            br#"{"model":"gpt-4o-mini", "messages":[{"role":"user","content":"model"}]}"#
        );
        assert_eq!(set_model(&out, "gpt-4o-mini").unwrap(), None);

        let body = br#" {"model":"m","stream":true}"#;
        let json: Json = serde_json::from_slice(body).unwrap();
        let out = ask_stream_usage(Api::Other, body, &json).unwrap();
        let v: Json = serde_json::from_slice(&out).unwrap();
        assert_eq!(v["stream_options"]["include_usage"], true);
        assert_eq!(v["model"], "m");
        let again: Json = serde_json::from_slice(&out).unwrap();
        assert_eq!(ask_stream_usage(Api::Other, &out, &again), None);
        let plain: Json = serde_json::from_slice(br#"{"model":"m"}"#).unwrap();
        assert_eq!(
            ask_stream_usage(Api::Other, br#"{"model":"m"}"#, &plain),
            None
        );
        let opts = br#"{"stream":true,"stream_options":{}}"#;
        let v: Json = serde_json::from_slice(opts).unwrap();
        let out: Json =
            serde_json::from_slice(&ask_stream_usage(Api::ChatCompletions, opts, &v).unwrap())
                .unwrap();
        assert_eq!(out["stream_options"]["include_usage"], true);
    }

    #[test]
    fn the_view_reads_each_apis_fields() {
        let view = |path: &str, body: &str| {
            Request::from_headers(
                vec![(":path".into(), path.into())],
                parse_body(body.as_bytes(), 1024).ok(),
            )
        };
        let r = view(
            "/v1/responses",
            r#"{"model":"gpt-4o","max_output_tokens":64}"#,
        );
        assert_eq!(r.api(), Api::Responses);
        assert_eq!(r.max_tokens(), Some(64.0));
        let r = view(
            "/v1/messages",
            r#"{"model":"claude-sonnet-4-5","max_tokens":32}"#,
        );
        assert_eq!(r.api(), Api::AnthropicMessages);
        assert_eq!(r.max_tokens(), Some(32.0));
        assert_eq!(r.model(), Some("claude-sonnet-4-5"));
        // A streamed Anthropic or Responses request is never given `stream_options`.
        let body = br#"{"model":"m","stream":true,"messages":[]}"#;
        let json: Json = serde_json::from_slice(body).unwrap();
        assert_eq!(ask_stream_usage(Api::AnthropicMessages, body, &json), None);
        assert_eq!(ask_stream_usage(Api::Responses, body, &json), None);
        assert!(ask_stream_usage(Api::ChatCompletions, body, &json).is_some());
    }

    #[test]
    fn refuses_bad_bodies_and_types() {
        assert!(matches!(parse_body(b"{", 10), Err(BodyError::Malformed(_))));
        for dup in [
            r#"{"model":"a","model":"b"}"#,
            r#"{"messages":[{"content":"x","content":"y"}]}"#,
        ] {
            let got = parse_body(dup.as_bytes(), 1 << 10);
            assert!(
                matches!(&got, Err(BodyError::Malformed(why)) if why.contains("duplicate key")),
                "{dup}: {got:?}"
            );
        }
        let nested = format!("{}1{}", "[".repeat(5000), "]".repeat(5000));
        assert!(matches!(
            parse_body(format!(r#"{{"a":{nested}}}"#).as_bytes(), 1 << 20),
            Err(BodyError::Malformed(_))
        ));
        let same = r#"{"model":"gpt-4o","n":1.5,"a":[true,null,-3,{"b":"c"}]}"#;
        assert_eq!(
            parse_body(same.as_bytes(), 1 << 10).ok(),
            serde_json::from_str(same).ok()
        );
        assert!(matches!(
            parse_body(b"[1]", 10),
            Err(BodyError::Malformed(_))
        ));
        assert_eq!(
            parse_body(b"{}    ", 3),
            Err(BodyError::TooLarge { limit: 3 })
        );
        assert!(is_json_content_type("application/json; charset=utf-8"));
        assert!(is_json_content_type("application/vnd.api+json"));
        assert!(is_identity_encoding(None));
        assert!(is_identity_encoding(Some("identity")));
        assert!(is_identity_encoding(Some(" Identity ")));
        assert!(!is_identity_encoding(Some("gzip")));
        assert!(!is_identity_encoding(Some("identity, br")));
        assert!(!is_json_content_type("text/plain"));
        assert!(!is_json_content_type(""));
    }
}
