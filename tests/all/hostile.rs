//! The hostile-input corpus: what a client or a provider that sends what it likes gets, in
//! real Envoy and in `writ serve`, from the bundled support-assistant policy. Every case
//! must get its documented status (`docs/security.md`, "Hostile input") and JSON error
//! code, leave no trap or panic behind, write exactly one audit record per request, and
//! put no internal detail in the client's body.

use std::path::PathBuf;
use std::time::Duration;

use crate::support::hosts::{HostKind, Options, WritGateway, build_policy};
use crate::support::http::{Request, Response, send, send_raw};
use crate::support::tempdir::TempDir;
use crate::support::upstream::{Reply, Upstream};
use crate::support::{cases::Gateway, workspace_root};

/// The kill switch's operator token in the bundled policy (its sha256 is in the policy).
const ADMIN_TOKEN: &str = "test";
const ADMIN_PATH: &str = "/writ/admin/kill-switch";
const CHAT: &str = "/v1/chat/completions";
/// The upstream's timeout both hosts are started with, so a slow provider is a quick case.
const UPSTREAM_TIMEOUT_SECS: u64 = 2;

/// What the client sends.
#[derive(Debug, Clone)]
enum Send {
    /// A well-formed HTTP/1.1 request (the test client frames it).
    Request(Request),
    /// Bytes as they are, and how many responses to read back.
    Raw(Vec<u8>, usize),
}

/// What must come back.
#[derive(Debug, Clone, Copy)]
struct Expect {
    status: u16,
    /// The OpenAI-style `error.code` of a gateway's own answer; `None` for an answer that
    /// is the provider's (passed through) or has no body.
    code: Option<&'static str>,
    /// Audit records the case writes: 1 per request (2 for two pipelined requests), the
    /// ones refused by the host's HTTP codec included.
    records: usize,
    /// Whether the upstream sees the request.
    forwarded: bool,
    /// The host's HTTP codec refuses the bytes; `writ serve`'s HTTP library may then
    /// answer with an empty body (no request exists for the gateway to answer in JSON).
    codec: bool,
    /// The client gets the status and then a reply cut short (never a clean end).
    truncated: bool,
}

#[derive(Debug, Clone)]
struct Case {
    name: &'static str,
    send: Send,
    reply: Reply,
    /// Milliseconds the upstream waits before answering.
    upstream_delay_ms: u64,
    expect: Expect,
    /// Where `writ serve` answers differently (and still safely), what it answers.
    in_serve: Option<Expect>,
}

fn denied(status: u16, code: &'static str) -> Expect {
    Expect {
        status,
        code: Some(code),
        records: 1,
        forwarded: false,
        codec: false,
        truncated: false,
    }
}

fn refused_by_codec(status: u16, code: &'static str) -> Expect {
    Expect {
        codec: true,
        ..denied(status, code)
    }
}

fn forwarded(status: u16) -> Expect {
    Expect {
        code: None,
        forwarded: true,
        ..denied(status, "")
    }
}

fn upstream_failed(status: u16, code: &'static str) -> Expect {
    Expect {
        forwarded: true,
        ..denied(status, code)
    }
}

fn case(name: &'static str, send: Send, expect: Expect) -> Case {
    Case {
        name,
        send,
        reply: Reply::chat("Happy to help."),
        upstream_delay_ms: 0,
        expect,
        in_serve: None,
    }
}

impl Case {
    fn reply(mut self, reply: Reply) -> Case {
        self.reply = reply;
        self
    }

    fn in_serve(mut self, expect: Expect) -> Case {
        self.in_serve = Some(expect);
        self
    }

    fn expect(&self, kind: HostKind) -> Expect {
        match (kind, self.in_serve) {
            (HostKind::Serve, Some(e)) => e,
            _ => self.expect,
        }
    }
}

/// The bytes of `req` as the test client would send them, for cases read back raw.
fn wire(req: &Request) -> Vec<u8> {
    let mut head = format!("{} {} HTTP/1.1\r\nhost: gw\r\n", req.method, req.path);
    for (n, v) in &req.headers {
        head.push_str(&format!("{n}: {v}\r\n"));
    }
    head.push_str(&format!("content-length: {}\r\n\r\n", req.body.len()));
    [head.into_bytes(), req.body.clone()].concat()
}

fn chat_body(content: &str) -> String {
    serde_json::json!({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": content}]})
        .to_string()
}

/// A support-assistant request with `body` (bytes as given) and `content-type`.
fn post(body: impl Into<Vec<u8>>, content_type: Option<&str>) -> Request {
    let mut headers = vec![("x-workflow".to_string(), "support-assistant".to_string())];
    if let Some(ct) = content_type {
        headers.push(("content-type".into(), ct.into()));
    }
    Request {
        method: "POST".into(),
        path: CHAT.into(),
        headers,
        body: body.into(),
    }
}

fn json(body: impl Into<Vec<u8>>) -> Send {
    Send::Request(post(body, Some("application/json")))
}

fn ok() -> Request {
    post(chat_body("Where is my order?"), Some("application/json"))
}

/// A support-assistant JSON `POST` head (request line and headers, `\n`-separated) with
/// `extra` header lines after the usual ones.
fn json_head(extra: &str) -> String {
    format!(
        "POST {CHAT} HTTP/1.1\nhost: gw\nx-workflow: support-assistant\ncontent-type: application/json\n{extra}"
    )
}

/// Raw HTTP/1.1 bytes: the request line, header lines and body as given.
fn raw(head: &str, body: &[u8], responses: usize) -> Send {
    let mut bytes = head.replace('\n', "\r\n").into_bytes();
    bytes.extend_from_slice(b"\r\n");
    bytes.extend_from_slice(body);
    Send::Raw(bytes, responses)
}

fn admin(auth: Option<&str>, method: &str, body: &str) -> Send {
    let mut req = Request::post_json(ADMIN_PATH, body);
    req.method = method.into();
    if let Some(a) = auth {
        req = req.header("authorization", a);
    }
    Send::Request(req)
}

fn sse(events: &[&str]) -> Reply {
    Reply::Sse {
        events: events
            .iter()
            .map(|e| (Duration::from_millis(1), (*e).to_string()))
            .collect(),
    }
}

fn raw_reply(head: &str, body: &[u8], reset: bool) -> Reply {
    let mut bytes = head.replace('\n', "\r\n").into_bytes();
    bytes.extend_from_slice(b"\r\n");
    bytes.extend_from_slice(body);
    Reply::Raw { bytes, reset }
}

fn nested(depth: usize, open: &str, close: &str) -> String {
    format!(
        r#"{{"model":"gpt-4o-mini","messages":[],"x":{}1{}}}"#,
        open.repeat(depth),
        close.repeat(depth)
    )
}

/// The corpus. Statuses and codes are the ones `docs/security.md` documents.
fn corpus() -> Vec<Case> {
    let big = 2 << 20;
    let event = |text: &str| {
        serde_json::json!({"choices": [{"index": 0, "delta": {"content": text}}]}).to_string()
    };
    let e1 = event("Hello ");
    let e2 = event("there.");
    let mut cases = vec![
        // Request bodies.
        case("control: a valid request", Send::Request(ok()), forwarded(200)),
        case(
            "control: json with charset",
            Send::Request(post(
                chat_body("hi"),
                Some("application/json; charset=utf-8"),
            )),
            forwarded(200),
        ),
        case(
            "control: a +json media type",
            Send::Request(post(chat_body("hi"), Some("application/vnd.api+json"))),
            forwarded(200),
        ),
        case(
            "truncated JSON",
            json(r#"{"model":"gpt-4o-mini","messages":["#),
            denied(400, "invalid_json"),
        ),
        case(
            "trailing garbage",
            json(format!("{}x", chat_body("hi"))),
            denied(400, "invalid_json"),
        ),
        case("a JSON array", json("[1,2,3]"), denied(400, "invalid_json")),
        case("a JSON string", json(r#""hello""#), denied(400, "invalid_json")),
        case("the JSON literal null", json("null"), denied(400, "invalid_json")),
        // No body is a request without one: the policy decides on its headers alone.
        case("an empty body", json(""), denied(403, "AIP-3.1")),
        case("whitespace only", json("   \n "), denied(400, "invalid_json")),
        case(
            "text/plain",
            Send::Request(post(chat_body("hi"), Some("text/plain"))),
            denied(415, "unsupported_media_type"),
        ),
        case(
            "no content-type",
            Send::Request(post(chat_body("hi"), None)),
            denied(415, "unsupported_media_type"),
        ),
        case(
            "form-encoded",
            Send::Request(post(
                "model=gpt-4o-mini",
                Some("application/x-www-form-urlencoded"),
            )),
            denied(415, "unsupported_media_type"),
        ),
        case(
            "multipart",
            Send::Request(post(
                "--x\r\n\r\n{}\r\n--x--",
                Some("multipart/form-data; boundary=x"),
            )),
            denied(415, "unsupported_media_type"),
        ),
        case(
            "a gzip body",
            Send::Request(
                post(
                    b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\x03\xab\xae\x05\x00".to_vec(),
                    Some("application/json"),
                )
                .header("content-encoding", "gzip"),
            ),
            denied(415, "unsupported_content_encoding"),
        ),
        case(
            "a br body",
            Send::Request(
                post(b"\x0b\x01\x80{}\x03".to_vec(), Some("application/json"))
                    .header("content-encoding", "br"),
            ),
            denied(415, "unsupported_content_encoding"),
        ),
        case(
            "gzip hidden after identity",
            Send::Request(ok().header("content-encoding", "identity, gzip")),
            denied(415, "unsupported_content_encoding"),
        ),
        case(
            "control: content-encoding identity",
            Send::Request(ok().header("content-encoding", "identity")),
            forwarded(200),
        ),
        case(
            "a body over the limit (content-length)",
            json(format!(
                r#"{{"model":"gpt-4o-mini","messages":[],"pad":"{}"}}"#,
                "a".repeat(big)
            )),
            denied(413, "body_too_large"),
        ),
        case(
            "a body over the limit (chunked)",
            raw(
                &json_head("transfer-encoding: chunked\n"),
                format!("{:x}\r\n{}\r\n0\r\n\r\n", big, "a".repeat(big)).as_bytes(),
                1,
            ),
            denied(413, "body_too_large"),
        ),
        case(
            "arrays nested 10,000 deep",
            json(nested(10_000, "[", "]")),
            denied(400, "invalid_json"),
        ),
        case(
            "objects nested 10,000 deep",
            json(nested(10_000, r#"{"a":"#, "}")),
            denied(400, "invalid_json"),
        ),
        case(
            "a duplicate model key",
            json(r#"{"model":"gpt-4o-mini","messages":[],"model":"gpt-3.5-turbo"}"#),
            denied(400, "invalid_json"),
        ),
        case(
            "a duplicate key inside a message",
            json(
                r#"{"model":"gpt-4o-mini","messages":[{"role":"user","content":"hi","content":"jane@example.com"}]}"#,
            ),
            denied(400, "invalid_json"),
        ),
        case(
            "invalid UTF-8 in a string",
            json(b"{\"model\":\"gpt-4o-mini\",\"messages\":[{\"role\":\"user\",\"content\":\"\xff\xfe\"}]}".to_vec()),
            denied(400, "invalid_json"),
        ),
        case(
            "a lone leading surrogate",
            json(r#"{"model":"gpt-4o-mini","messages":[{"role":"user","content":"\ud800"}]}"#),
            denied(400, "invalid_json"),
        ),
        case(
            "a lone trailing surrogate",
            json(r#"{"model":"gpt-4o-mini","messages":[{"role":"user","content":"x\udc00y"}]}"#),
            denied(400, "invalid_json"),
        ),
        case(
            "a raw control character in a string",
            json(b"{\"model\":\"gpt-4o-mini\",\"messages\":[{\"role\":\"user\",\"content\":\"a\x00b\"}]}".to_vec()),
            denied(400, "invalid_json"),
        ),
        case(
            "a byte-order mark",
            json([b"\xef\xbb\xbf".as_slice(), chat_body("hi").as_bytes()].concat()),
            denied(400, "invalid_json"),
        ),
        case(
            "a number out of range",
            json(r#"{"model":"gpt-4o-mini","messages":[],"temperature":1e999}"#),
            denied(400, "invalid_json"),
        ),
        case(
            "model is not a string",
            json(r#"{"model":5,"messages":[]}"#),
            denied(403, "AIP-3.1"),
        ),
        case(
            "no model at all",
            json(r#"{"messages":[]}"#),
            denied(403, "AIP-3.1"),
        ),
        case(
            "a model outside the allowlist",
            json(r#"{"model":"gpt-3.5-turbo","messages":[]}"#),
            denied(403, "AIP-3.1"),
        ),
        case(
            "an unregistered workflow",
            Send::Request(Request::post_json(CHAT, &chat_body("hi"))),
            denied(403, "AIP-1.2"),
        ),
        case(
            "a secret in a key",
            json(
                r#"{"model":"gpt-4o-mini","messages":[],"metadata":{"sk-proj-abcdefghijklmnopqrstuvwxyz0123456789ABCD":1}}"#,
            ),
            denied(400, "AIP-2.4"),
        ),
        case(
            "a government id behind a zero-width space",
            json(chat_body("my ssn is 123-45-\u{200b}6789")),
            denied(400, "AIP-2.2"),
        ),
        case(
            "half a megabyte of prompt",
            json(chat_body(&"where is my order? ".repeat(27_000))),
            forwarded(200),
        ),
        case(
            "ten thousand messages",
            json(
                serde_json::json!({"model": "gpt-4o-mini", "messages":
                    vec![serde_json::json!({"role": "user", "content": "hi"}); 10_000]})
                .to_string(),
            ),
            forwarded(200),
        ),
        // Transport.
        case(
            "a 100 KiB header",
            Send::Request(ok().header("x-big", &"a".repeat(100 << 10))),
            refused_by_codec(431, "headers_too_large"),
        ),
        case(
            "200 headers",
            Send::Request((0..200).fold(ok(), |r, i| r.header(&format!("x-h{i}"), "v"))),
            refused_by_codec(431, "headers_too_large"),
        ),
        case(
            "a request line that is not HTTP",
            Send::Raw(b"GARBAGE\r\n\r\n".to_vec(), 1),
            refused_by_codec(400, "bad_request"),
        ),
        case(
            "a header line without a colon",
            raw(
                &format!("POST {CHAT} HTTP/1.1\nhost: gw\nnot a header\ncontent-length: 0\n"),
                b"",
                1,
            ),
            refused_by_codec(400, "bad_request"),
        ),
        case(
            "a space before the colon",
            raw(
                &format!("POST {CHAT} HTTP/1.1\nhost: gw\nx-workflow : support-assistant\ncontent-length: 0\n"),
                b"",
                1,
            ),
            refused_by_codec(400, "bad_request"),
        ),
        case(
            "an obsolete folded header",
            raw(
                &format!("POST {CHAT} HTTP/1.1\nhost: gw\nx-workflow: support-\n assistant\ncontent-length: 0\n"),
                b"",
                1,
            ),
            // Envoy unfolds it (RFC 9112 allows either): a workflow no rule knows.
            denied(403, "AIP-1.2"),
        )
        .in_serve(refused_by_codec(400, "bad_request")),
        case(
            "a NUL in a header value",
            raw(
                &format!("POST {CHAT} HTTP/1.1\nhost: gw\nx-workflow: support\0assistant\ncontent-length: 0\n"),
                b"",
                1,
            ),
            refused_by_codec(400, "bad_request"),
        ),
        case(
            "content-length and transfer-encoding together",
            raw(
                &json_head("content-length: 4\ntransfer-encoding: chunked\n"),
                b"0\r\n\r\n",
                1,
            ),
            refused_by_codec(400, "bad_request"),
        )
        // hyper frames it by transfer-encoding (RFC 9112 allows it; the upstream gets a
        // request framed afresh): an empty body, so no model.
        .in_serve(denied(403, "AIP-3.1")),
        case(
            "two different content-lengths",
            raw(
                &format!(
                    "POST {CHAT} HTTP/1.1\nhost: gw\ncontent-type: application/json\ncontent-length: 2\ncontent-length: 3\n"
                ),
                b"{}",
                1,
            ),
            refused_by_codec(400, "bad_request"),
        ),
        case(
            "a chunk size that is not hex",
            raw(
                &json_head("transfer-encoding: chunked\n"),
                b"zz\r\n{}\r\n0\r\n\r\n",
                1,
            ),
            refused_by_codec(400, "bad_request"),
        ),
        case(
            "transfer-encoding other than chunked",
            raw(
                &json_head("transfer-encoding: gzip\n"),
                b"{}",
                1,
            ),
            refused_by_codec(501, "not_implemented"),
        )
        .in_serve(refused_by_codec(400, "bad_request")),
        {
            let body = chat_body("hi");
            let chunked = format!(
                "{:x};ext=1\r\n{}\r\n{:x}\r\n{}\r\n0\r\n\r\n",
                5,
                &body[..5],
                body.len() - 5,
                &body[5..]
            );
            case(
                "control: chunked with an extension",
                raw(
                    &json_head("transfer-encoding: chunked\n"),
                    chunked.as_bytes(),
                    1,
                ),
                forwarded(200),
            )
        },
        {
            let body = chat_body("hi");
            case(
                "control: HTTP/1.0",
                raw(
                    &format!(
                        "POST {CHAT} HTTP/1.0\nhost: gw\nx-workflow: support-assistant\ncontent-type: application/json\ncontent-length: {}\n",
                        body.len()
                    ),
                    body.as_bytes(),
                    1,
                ),
                forwarded(200),
            )
        },
        {
            let body = chat_body("hi");
            let one = format!(
                "POST {CHAT} HTTP/1.1\r\nhost: gw\r\nx-workflow: support-assistant\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
                body.len()
            );
            Case {
                expect: Expect {
                    records: 2,
                    ..forwarded(200)
                },
                ..case(
                    "two pipelined requests",
                    Send::Raw(format!("{one}{one}").into_bytes(), 2),
                    forwarded(200),
                )
            }
        },
        {
            let body = chat_body("hi");
            case(
                "expect: 100-continue",
                raw(
                    &json_head(&format!("expect: 100-continue\ncontent-length: {}\n",
                        body.len())
                    ),
                    body.as_bytes(),
                    1,
                ),
                forwarded(200),
            )
        },
        case(
            "a GET with no body",
            Send::Request(Request {
                method: "GET".into(),
                path: "/v1/models".into(),
                headers: vec![("x-workflow".into(), "support-assistant".into())],
                body: Vec::new(),
            }),
            denied(403, "AIP-3.1"),
        ),
        case(
            "a forged identity header",
            Send::Request(ok().header("x-jwt-team", "someone-elses-team")),
            forwarded(200),
        ),
        // Upstream faults.
        case("the provider's 500", Send::Request(ok()), forwarded(500)).reply(Reply::Json {
            status: 500,
            body: r#"{"error":{"message":"boom","type":"server_error"}}"#.into(),
        }),
        case("the provider's 503", Send::Request(ok()), forwarded(503)).reply(Reply::Json {
            status: 503,
            body: r#"{"error":{"message":"overloaded","type":"server_error"}}"#.into(),
        }),
        case("the provider's 429", Send::Request(ok()), forwarded(429)).reply(Reply::Json {
            status: 429,
            body: r#"{"error":{"message":"slow down","type":"rate_limit"}}"#.into(),
        }),
        case(
            "the provider closes without answering",
            Send::Request(ok()),
            upstream_failed(502, "upstream_unavailable"),
        )
        .reply(Reply::Raw {
            bytes: Vec::new(),
            reset: false,
        }),
        case(
            "the provider resets without answering",
            Send::Request(ok()),
            upstream_failed(502, "upstream_unavailable"),
        )
        .reply(Reply::Raw {
            bytes: Vec::new(),
            reset: true,
        }),
        case(
            "the provider answers garbage",
            Send::Request(ok()),
            upstream_failed(502, "upstream_unavailable"),
        )
        .reply(Reply::Raw {
            bytes: b"SSH-2.0-OpenSSH_9.6\r\n".to_vec(),
            reset: false,
        }),
        case(
            "the provider is slower than the timeout",
            Send::Request(ok()),
            upstream_failed(504, "upstream_timeout"),
        ),
        case(
            "garbage SSE",
            Send::Request(ok()),
            forwarded(200),
        )
        .reply(sse(&["{not json", "\u{1}\u{2}binary", "", ": comment", "[DONE]"])),
        case(
            "SSE that is gzip-encoded",
            Send::Request(ok()),
            upstream_failed(502, "unredactable_reply"),
        )
        .reply(raw_reply(
            "HTTP/1.1 200 OK\ncontent-type: text/event-stream\ncontent-encoding: gzip\ncontent-length: 10\n",
            b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\x03",
            false,
        )),
        case(
            "a JSON reply that is gzip-encoded",
            Send::Request(ok()),
            upstream_failed(502, "unredactable_reply"),
        )
        .reply(raw_reply(
            "HTTP/1.1 200 OK\ncontent-type: application/json\ncontent-encoding: gzip\ncontent-length: 10\n",
            b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\x03",
            false,
        )),
        // The reply must be held whole to be redacted: past the body limit it is refused.
        case(
            "a 4 MiB JSON reply",
            Send::Request(ok()),
            upstream_failed(502, "reply_too_large"),
        )
        .reply(Reply::chat(&"All good. ".repeat(400_000))),
        case(
            "a reply that is not JSON despite its content-type",
            Send::Request(ok()),
            upstream_failed(502, "unredactable_reply"),
        )
        .reply(Reply::Json {
            status: 200,
            body: "<html>oops</html>".into(),
        }),
        case("5,000 SSE events", Send::Request(ok()), forwarded(200)).reply(Reply::Sse {
            events: (0..5_000)
                .map(|i| (Duration::ZERO, event(&format!("w{i} "))))
                .chain(std::iter::once((Duration::ZERO, "[DONE]".to_string())))
                .collect(),
        }),
        case(
            "one 1 MiB SSE event",
            Send::Request(ok()),
            forwarded(200),
        )
        .reply(sse(&[&event(&"x".repeat(1 << 20)), "[DONE]"])),
    ];
    // Kill-switch admin calls: wrong tokens first, then the right one with wrong requests.
    let stop = r#"{"workflow":"*","action":"stop","reason":"x"}"#;
    let bearer = format!("Bearer {ADMIN_TOKEN}");
    for (name, auth) in [
        ("admin: no token", None),
        ("admin: a wrong token", Some("Bearer wrong".to_string())),
        ("admin: an empty bearer", Some("Bearer ".to_string())),
        (
            "admin: the token under another scheme",
            Some(format!("Basic {ADMIN_TOKEN}")),
        ),
        ("admin: the token with a suffix", Some(format!("{bearer}x"))),
        (
            "admin: a 4 KiB token",
            Some(format!("Bearer {}", "t".repeat(4096))),
        ),
    ] {
        let call = admin(auth.as_deref(), "POST", stop);
        cases.push(case(name, call, denied(401, "unauthorized")));
    }
    for (name, method, body, expect) in [
        (
            "admin: GET with the right token",
            "GET",
            "",
            denied(405, "method_not_allowed"),
        ),
        (
            "admin: malformed body",
            "POST",
            "{",
            denied(400, "invalid_request"),
        ),
        (
            "admin: an unknown action",
            "POST",
            r#"{"workflow":"*","action":"explode","reason":"x"}"#,
            denied(400, "invalid_action"),
        ),
        (
            "admin: an unknown workflow",
            "POST",
            r#"{"workflow":"nope","action":"stop","reason":"x"}"#,
            denied(404, "unknown_workflow"),
        ),
    ] {
        cases.push(case(name, admin(Some(&bearer), method, body), expect));
    }
    cases.push(case(
        "control: no hostile admin call stopped the workflow",
        Send::Request(ok()),
        forwarded(200),
    ));
    // The provider fails mid-stream: the client has the headers already, so it gets a
    // truncated stream (never unfiltered text), and the request still has its one record.
    let partial = format!("data: {e1}\n\ndata: {e2}\n\n");
    for (name, reset) in [
        ("the provider resets mid-stream", true),
        ("the provider closes mid-stream", false),
    ] {
        let bytes = format!(
            "HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n{:x}\r\n{partial}\r\n",
            partial.len()
        );
        let cut = Expect {
            truncated: true,
            ..forwarded(200)
        };
        cases.push(
            case(name, Send::Raw(wire(&ok()), 1), cut).reply(Reply::Raw {
                bytes: bytes.into_bytes(),
                reset,
            }),
        );
    }
    cases.push(
        case(
            "a reply shorter than its content-length",
            Send::Request(ok()),
            upstream_failed(502, "upstream_unavailable"),
        )
        .reply(raw_reply(
            "HTTP/1.1 200 OK\ncontent-type: application/json\ncontent-length: 500\n",
            br#"{"choices":[{"message":{"content":"jane@exa"#,
            false,
        )),
    );
    for c in &mut cases {
        if c.name == "the provider is slower than the timeout" {
            c.upstream_delay_ms = (UPSTREAM_TIMEOUT_SECS + 2) * 1000;
        }
    }
    cases
}

/// Text in a gateway's own answer that would be internal detail.
const INTERNAL: [&str; 12] = [
    "panicked",
    "backtrace",
    "wasm-function",
    "wasm trap",
    ".rs:",
    "/tmp/",
    "/home/",
    "/root/",
    "/work/",
    "RUST_",
    "stack overflow",
    "unreachable",
];

fn check(
    kind: HostKind,
    gw: &WritGateway,
    upstream: &Upstream,
    case: &Case,
    records_before: usize,
) -> Result<(), String> {
    let before = upstream.received().len();
    let expect = case.expect(kind);
    let (responses, complete): (Vec<Response>, bool) = match &case.send {
        Send::Request(r) => send(gw.addr(), r, Duration::from_secs(20))
            .map(|r| (vec![r], true))
            .map_err(|e| format!("request failed: {e}"))?,
        Send::Raw(bytes, n) => send_raw(gw.addr(), bytes, *n, Duration::from_secs(20))
            .map(|r| (r.responses, r.complete))
            .map_err(|e| format!("request failed: {e}"))?,
    };
    if complete == expect.truncated {
        return Err(format!(
            "the reply was {} (expected {})",
            if complete { "complete" } else { "cut short" },
            if expect.truncated {
                "cut short"
            } else {
                "complete"
            }
        ));
    }
    let wanted = match &case.send {
        Send::Raw(_, n) => *n,
        Send::Request(_) => 1,
    };
    if responses.len() != wanted {
        return Err(format!(
            "expected {wanted} response(s), got {}",
            responses.len()
        ));
    }
    for r in &responses {
        let body = r.body_str();
        if r.status != expect.status {
            return Err(format!(
                "status {} (expected {}), body {}",
                r.status,
                expect.status,
                clip(&body)
            ));
        }
        // `writ serve`'s HTTP library answers a message it cannot parse itself, with an
        // empty body (docs/security.md): there is no request for the gateway to answer.
        let bare = expect.codec && kind == HostKind::Serve && r.body.is_empty();
        if let Some(code) = expect.code.filter(|_| !bare) {
            let got = r.json();
            if got["error"]["code"] != code || !got["error"]["message"].is_string() {
                return Err(format!(
                    "expected an OpenAI-style error with code `{code}`, got {}",
                    clip(&body)
                ));
            }
            let lower = body.to_lowercase();
            if let Some(leak) = INTERNAL.iter().find(|m| lower.contains(&m.to_lowercase())) {
                return Err(format!("internal detail `{leak}` in {}", clip(&body)));
            }
        }
    }
    let reached = upstream.received().len() - before;
    if expect.forwarded != (reached > 0) {
        return Err(format!(
            "upstream saw {reached} request(s); expected forwarded = {}",
            expect.forwarded
        ));
    }
    // Both hosts log a request's record when its stream closes, just after the client has
    // the answer: wait for the expected count, then make sure no extra one follows.
    let want = records_before + expect.records;
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while gw.audit_records().len() < want && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(25));
    }
    std::thread::sleep(Duration::from_millis(150));
    let got = gw.audit_records().len() - records_before;
    if got != expect.records {
        return Err(format!(
            "{got} audit record(s) (expected {})",
            expect.records
        ));
    }
    Ok(())
}

fn clip(s: &str) -> String {
    let mut s: String = s.chars().take(300).collect();
    s = s.replace('\n', "\\n");
    s
}

/// The bundled support policy without its workflow's `fallback on …` statement: the corpus
/// checks the gateway's own answers to provider faults (a fallback would turn each into
/// its degraded reply; `tests/all/fallback.rs` tests that path in both hosts).
fn artifact(dir: &TempDir) -> PathBuf {
    let source =
        std::fs::read_to_string(workspace_root().join("policies/support-assistant.policy"))
            .expect("the bundled support policy");
    let without: String = source
        .lines()
        .filter(|l| !l.trim_start().starts_with("fallback on "))
        .map(|l| format!("{l}\n"))
        .collect();
    assert_eq!(
        source.lines().count(),
        without.lines().count() + 1,
        "the support policy has one fallback statement"
    );
    let policy = dir.path().join("support-assistant.policy");
    std::fs::write(&policy, without).expect("write the policy");
    build_policy(&policy, &dir.path().join("out"))
}

fn run_corpus(kind: HostKind) {
    let dir = TempDir::new("hostile");
    let wasm = artifact(&dir);
    let upstream = Upstream::start(Reply::chat("ok"));
    let opts = Options {
        upstream_timeout_secs: Some(UPSTREAM_TIMEOUT_SECS),
        ..Options::default()
    };
    let gw = match WritGateway::start(kind, &wasm, upstream.addr(), &opts) {
        Ok(g) => g,
        Err(e) => panic!("{kind:?} did not start: {e}"),
    };
    let corpus = corpus();
    assert!(corpus.len() >= 60, "the corpus has {} cases", corpus.len());
    let mut failures = Vec::new();
    for case in &corpus {
        upstream.set_reply(case.reply.clone());
        upstream.set_delay(Duration::from_millis(case.upstream_delay_ms));
        let records = gw.audit_records().len();
        if let Err(e) = check(kind, &gw, &upstream, case, records) {
            failures.push(format!("[{} / {}] {e}", gw.name(), case.name));
        }
    }
    let log = gw.log().to_lowercase();
    for marker in ["panicked", "wasm trap", "filter_failure", "vm_failed"] {
        if log.contains(marker) {
            failures.push(format!("[{}] the host log shows `{marker}`", gw.name()));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} hostile cases failed:\n{}",
        failures.len(),
        corpus.len(),
        failures.join("\n")
    );
}

#[test]
fn hostile_corpus_in_envoy() {
    run_corpus(HostKind::Envoy);
}

#[test]
fn hostile_corpus_in_writ_serve() {
    run_corpus(HostKind::Serve);
}
