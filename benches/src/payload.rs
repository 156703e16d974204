//! The request every bench sends: a 4 KB OpenAI chat-completions body carrying a few
//! personal values (an e-mail address, a card number, an IBAN) that the bundled
//! `support-assistant` policy tokenises, and the headers that policy needs to admit it.
//!
//! The values sit near the end of the user message on purpose: the bench upstream echoes
//! the message's tail back, so the reply carries the placeholders and restoration has real
//! work to do (see [`crate::upstream`]).

/// Target size of the request body, in bytes.
pub const BODY_BYTES: usize = 4096;

/// Headers the `support-assistant` policy identifies the workflow, team and user by.
pub const HEADERS: &[(&str, &str)] = &[
    ("content-type", "application/json"),
    ("x-workflow", "support-assistant"),
    ("x-jwt-team", "team-billing"),
    ("x-jwt-sub", "agent-17"),
];

/// The personal values in the request (three PII kinds the policy tokenises).
pub const PII_TAIL: &str = " Please reply to jane.doe@example.com about the refund to card \
    4111 1111 1111 1111, and confirm the IBAN DE89 3704 0044 0532 0130 00 is still valid. \
    Copy bob.smith@example.org.";

/// A 4 KB chat request, `"stream": true` when `stream`.
pub fn chat_request(stream: bool) -> Vec<u8> {
    let head = "{\"model\":\"gpt-4o-mini\",\"messages\":[{\"role\":\"system\",\"content\":\
        \"You are the support assistant. Answer briefly and politely.\"},\
        {\"role\":\"user\",\"content\":\"";
    let tail = if stream {
        "\"}],\"max_tokens\":512,\"temperature\":0.2,\"stream\":true}"
    } else {
        "\"}],\"max_tokens\":512,\"temperature\":0.2,\"stream\":false}"
    };
    let prose = "The customer wrote in about an invoice that was charged twice this month. \
        They attached the statement and asked us to check the ledger entries from the \
        second week, and to explain the pending adjustment on their account. ";
    let room = BODY_BYTES - head.len() - tail.len() - PII_TAIL.len();
    let mut user = String::with_capacity(room + PII_TAIL.len());
    while user.len() + prose.len() <= room {
        user.push_str(prose);
    }
    while user.len() < room {
        user.push('.');
    }
    user.push_str(PII_TAIL);
    let mut body = String::with_capacity(BODY_BYTES);
    body.push_str(head);
    body.push_str(&user);
    body.push_str(tail);
    body.into_bytes()
}

/// A chat request of just under `bytes` bytes whose user message is distinct e-mail
/// addresses separated by spaces, one every ~15 bytes (a 1 MiB body carries ~70,000):
/// the worst case of issue 14 for the tokeniser, which must stay linear in the body.
pub fn email_dense_request(bytes: usize) -> Vec<u8> {
    let head = "{\"model\":\"gpt-4o-mini\",\"max_tokens\":64,\"messages\":[{\"role\":\"user\",\"content\":\"";
    let tail = "\"}]}";
    let mut body = String::with_capacity(bytes + 32);
    body.push_str(head);
    let mut i = 0u32;
    while body.len() + tail.len() + 16 < bytes {
        body.push_str(&format!("u{i:x}@ex.org "));
        i += 1;
    }
    body.push_str(tail);
    body.into_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_is_4k_valid_json() {
        for stream in [false, true] {
            let body = chat_request(stream);
            assert_eq!(body.len(), BODY_BYTES);
            let v: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
            assert_eq!(v["stream"], serde_json::Value::Bool(stream));
        }
    }
}
