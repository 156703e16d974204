//! Byte formats of the proxy-wasm ABI and the engine's error replies, kept pure so they are
//! tested natively; `filter` only moves these bytes across the host boundary.

/// Decodes a proxy-wasm header map: a little-endian u32 count, then a (name length, value
/// length) u32 pair per entry, then each name and value followed by a NUL byte.
///
/// Returns `None` on a truncated or non-UTF-8 map instead of panicking (the SDK's own
/// decoder panics), so the adapter can fail closed with a defined answer.
pub fn decode_header_map(bytes: &[u8]) -> Option<Vec<(String, String)>> {
    if bytes.is_empty() {
        return Some(Vec::new());
    }
    let u32_at = |at: usize| -> Option<usize> {
        let b = bytes.get(at..at.checked_add(4)?)?;
        Some(u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as usize)
    };
    let count = u32_at(0)?;
    let mut data = count.checked_mul(8)?.checked_add(4)?;
    if data > bytes.len() {
        return None;
    }
    let mut out = Vec::with_capacity(count);
    for i in 0..count {
        let name_len = u32_at(4 + i * 8)?;
        let value_len = u32_at(8 + i * 8)?;
        let name = bytes.get(data..data.checked_add(name_len)?)?;
        data = data.checked_add(name_len + 1)?;
        let value = bytes.get(data..data.checked_add(value_len)?)?;
        data = data.checked_add(value_len + 1)?;
        out.push((
            String::from_utf8(name.to_vec()).ok()?,
            String::from_utf8(value.to_vec()).ok()?,
        ));
    }
    Some(out)
}

/// Encodes a header map in the format [`decode_header_map`] reads.
pub fn encode_header_map(map: &[(&str, &str)]) -> Vec<u8> {
    let size = 4 + map
        .iter()
        .map(|(k, v)| 10 + k.len() + v.len())
        .sum::<usize>();
    let mut out = Vec::with_capacity(size);
    out.extend_from_slice(&(map.len() as u32).to_le_bytes());
    for (k, v) in map {
        out.extend_from_slice(&(k.len() as u32).to_le_bytes());
        out.extend_from_slice(&(v.len() as u32).to_le_bytes());
    }
    for (k, v) in map {
        out.extend_from_slice(k.as_bytes());
        out.push(0);
        out.extend_from_slice(v.as_bytes());
        out.push(0);
    }
    out
}

/// An OpenAI-style error body, `{"error":{"message","type","code"}}`, so clients written
/// against the provider API surface the reason unchanged.
pub fn error_body(message: &str, kind: &str, code: &str) -> Vec<u8> {
    let value = serde_json::json!({
        "error": { "message": message, "type": kind, "code": code }
    });
    serde_json::to_vec(&value).unwrap_or_default()
}

/// A local reply the adapter sends instead of forwarding the request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    pub status: u16,
    pub body: Vec<u8>,
}

impl Reply {
    /// A rule denied the request: the rule's status and message, the clause as the code.
    pub fn policy_violation(status: u16, message: &str, clause: &str) -> Reply {
        Reply {
            status,
            body: error_body(message, "policy_violation", clause),
        }
    }

    /// The body could not be evaluated; each cause has its own status and code.
    pub fn body_error(err: &crate::request::BodyError) -> Reply {
        use crate::request::BodyError;
        match err {
            BodyError::Malformed(why) => Reply {
                status: 400,
                body: error_body(
                    &format!("the request body is not valid JSON: {why}"),
                    "invalid_request_error",
                    "invalid_json",
                ),
            },
            BodyError::TooLarge { limit } => Reply {
                status: 413,
                body: error_body(
                    &format!("the request body exceeds the policy engine's limit of {limit} bytes"),
                    "invalid_request_error",
                    "body_too_large",
                ),
            },
            BodyError::UnsupportedEncoding(enc) => Reply {
                status: 415,
                body: error_body(
                    &format!(
                        "the request body must not be compressed (content-encoding `{}`)",
                        enc.chars().take(64).collect::<String>()
                    ),
                    "invalid_request_error",
                    "unsupported_content_encoding",
                ),
            },
            BodyError::UnsupportedMediaType(ct) => Reply {
                status: 415,
                body: error_body(
                    &format!("the request body must be application/json, not `{ct}`"),
                    "invalid_request_error",
                    "unsupported_media_type",
                ),
            },
        }
    }

    /// The engine cannot decide (no policy loaded, or the host failed a call): refuse
    /// rather than let the request through unchecked.
    pub fn engine_error(message: &str, code: &str) -> Reply {
        Reply {
            status: 500,
            body: error_body(message, "engine_error", code),
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn header_maps_round_trip_and_refuse_truncation() {
        let bytes = encode_header_map(&[(":path", "/v1"), ("x-team", "")]);
        assert_eq!(
            decode_header_map(&bytes).unwrap(),
            [
                (":path".to_string(), "/v1".to_string()),
                ("x-team".to_string(), String::new())
            ]
        );
        for cut in 1..bytes.len() - 1 {
            assert_eq!(decode_header_map(&bytes[..cut]), None, "cut at {cut}");
        }
        assert_eq!(decode_header_map(&[]), Some(vec![]));
        assert_eq!(decode_header_map(&[255, 255, 255, 255]), None);
    }

    #[test]
    fn error_bodies_are_openai_shaped() {
        let r = Reply::policy_violation(403, "Model \"x\" not approved", "AIP-3.1");
        let v: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
        assert_eq!(v["error"]["message"], "Model \"x\" not approved");
        assert_eq!(v["error"]["type"], "policy_violation");
        assert_eq!(v["error"]["code"], "AIP-3.1");
        let r = Reply::body_error(&crate::request::BodyError::TooLarge { limit: 9 });
        assert_eq!(r.status, 413);
    }
}
