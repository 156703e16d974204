//! Issue 10, end to end in both hosts: personal data in disguise (fullwidth digits, a
//! zero-width space, percent-encoding, base64, a JSON object key, a 9xx taxpayer id) and
//! in the other request carriers (a scanned header, the query string) never reaches the
//! model, and the client gets every value back exactly; values the model invents in
//! carriers no list names (custom SSE fields split across events, Anthropic-style blocks,
//! plain `data:` text, a JSON reply's keys) never reach the client.

use std::time::Duration;

use serde_json::{Value, json};

use crate::pii_e2e::everything;
use crate::support::cases::Gateway;
use crate::support::hosts::{HostKind, Options, WritGateway, build_policy};
use crate::support::http::{Request, send};
use crate::support::tempdir::TempDir;
use crate::support::upstream::{Reply, Upstream};

const POLICY: &str = r#"
policy "carriers" version "1.0.0" {
  owner "security@example.com"
  implements "ai-policy.md"
}

workflow "support" {
  match header "x-workflow" == "support"
  scan headers ["x-customer-note"]
  scan query
}

rule AIP-2.1 "Personal data is pseudonymised wherever it travels" {
  on request
  when prompt has pii(email, credit_card, us_ssn, us_itin)
  then tokenise
}

rule AIP-2.5 "Personal data the model invents is masked" {
  on response
  when response has pii(email, credit_card, us_ssn)
  then redact
}
"#;

/// (disguised form sent by the client, what the model must never see in any form).
const DISGUISES: &[(&str, &[&str])] = &[
    (
        "４１１１ １１１１ １１１１ １１１１",
        &["４１１１", "4111 1111", "41111111"],
    ),
    ("jane\u{200b}.doe@example.com", &["jane", "doe@example"]),
    ("ana.lee%40example.org", &["ana.lee", "example.org"]),
    // base64 of "card 5555 5555 5555 4444".
    (
        "Y2FyZCA1NTU1IDU1NTUgNTU1NSA0NDQ0",
        &["Y2FyZCA1NTU1", "5555"],
    ),
    ("929-30-4053", &["929-30", "4053"]),
    ("912-70-1234", &["912-70", "1234"]),
];

fn prompt() -> String {
    let parts: Vec<&str> = DISGUISES.iter().map(|(v, _)| *v).collect();
    format!("Please help: {}.", parts.join(" and "))
}

fn request(stream: bool) -> Request {
    let body = json!({"model": "gpt-4o-mini", "stream": stream,
        "metadata": {"kim.park@example.net": 1},
        "messages": [{"role": "user", "content": prompt()}]});
    Request::post_json(
        "/v1/chat/completions?note=lou.wu%40example.com&x=1",
        &body.to_string(),
    )
    .header("x-workflow", "support")
    .header("x-customer-note", "reach me at max.roe@example.com")
}

fn reassemble(body: &str) -> String {
    body.split("\n\n")
        .filter_map(|e| e.strip_prefix("data: "))
        .filter_map(|d| serde_json::from_str::<Value>(d).ok())
        .filter_map(|v| {
            v["choices"][0]["delta"]["content"]
                .as_str()
                .map(String::from)
        })
        .collect()
}

fn check_request_side(kind: HostKind, artifact: &std::path::Path) -> Result<(), String> {
    let upstream = Upstream::start(Reply::Echo {
        sse: true,
        tool_args: false,
    });
    let gw = WritGateway::start(kind, artifact, upstream.addr(), &Options::default())?;
    let ctx = |msg: String| format!("[{}] {msg}", gw.name());
    let t = Duration::from_secs(20);
    for stream in [true, false] {
        if !stream {
            upstream.set_reply(Reply::Echo {
                sse: false,
                tool_args: false,
            });
        }
        let res = send(gw.addr(), &request(stream), t).map_err(|e| ctx(e.to_string()))?;
        if res.status != 200 {
            return Err(ctx(format!("status {}: {}", res.status, res.body_str())));
        }
        let seen = upstream.received();
        let up = seen
            .last()
            .ok_or_else(|| ctx("no upstream request".into()))?;
        let up_text = everything(up);
        let mut forbidden: Vec<&str> = DISGUISES
            .iter()
            .flat_map(|(_, f)| f.iter().copied())
            .collect();
        forbidden.extend(["kim.park", "lou.wu", "max.roe", "%40example"]);
        if let Some(v) = forbidden.iter().find(|v| up_text.contains(**v)) {
            return Err(ctx(format!("upstream saw `{v}`:\n{up_text}")));
        }
        // The header and query keep their shape, with placeholders in place of values.
        let note = up.header_value("x-customer-note").unwrap_or_default();
        if !note.starts_with("reach me at EMAIL_") {
            return Err(ctx(format!("x-customer-note upstream: {note:?}")));
        }
        if !up.path.starts_with("/v1/chat/completions?note=EMAIL_") || !up.path.ends_with("&x=1") {
            return Err(ctx(format!("path upstream: {}", up.path)));
        }
        let body: Value = serde_json::from_slice(&up.body).map_err(|e| ctx(e.to_string()))?;
        let keys: Vec<&String> = body["metadata"]
            .as_object()
            .map(|m| m.keys().collect())
            .unwrap_or_default();
        if keys.len() != 1 || !keys[0].starts_with("EMAIL_") {
            return Err(ctx(format!("metadata keys upstream: {keys:?}")));
        }
        // The echo comes back with every disguised value exactly as the client wrote it.
        let text = if stream {
            reassemble(&res.body_str())
        } else {
            res.json()["choices"][0]["message"]["content"]
                .as_str()
                .unwrap_or_default()
                .to_string()
        };
        if text != prompt() {
            return Err(ctx(format!(
                "client got {text:?}\nwanted     {:?}",
                prompt()
            )));
        }
    }
    let records = gw.wait_audit("request", 2, Duration::from_secs(10));
    if records.len() != 2 {
        return Err(ctx(format!("{} audit records, wanted 2", records.len())));
    }
    // Body: 3 e-mails (ZWSP, %40, the key), 2 cards, 1 SSN, 1 ITIN; header and query: 2.
    let pii = &records[0]["pii"];
    if pii["email"] != 5 || pii["credit_card"] != 2 || pii["us_ssn"] != 1 || pii["us_itin"] != 1 {
        return Err(ctx(format!("audit pii counts: {pii}")));
    }
    Ok(())
}

/// Events a model might send that put invented values in fields nobody lists, each value
/// split across two events.
fn injected_events() -> Vec<String> {
    let chunk = |delta: Value| {
        json!({"id": "c1", "object": "chat.completion.chunk", "model": "gpt-4o-mini",
            "choices": [{"index": 0, "delta": delta, "finish_reason": null}]})
        .to_string()
    };
    vec![
        chunk(json!({"role": "assistant", "content": "Sure."})),
        chunk(json!({"audio": {"id": "a1", "transcript": "write to eve.sol@exa"}})),
        chunk(json!({"audio": {"id": "a1", "transcript": "mple.com or call"}})),
        json!({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "ssn 929-30-"}}).to_string(),
        json!({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "4053 ok"}}).to_string(),
        json!({"type": "content_block_stop", "index": 0}).to_string(),
        "card 5555 5555 ".to_string(),
        "5555 4444 end".to_string(),
        "ray.poe%40example.com".to_string(),
        json!({"id": "c1", "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 10, "completion_tokens": 5}})
        .to_string(),
        "[DONE]".to_string(),
    ]
}

const INVENTED: &[&str] = &[
    "eve.sol", "exa", "929-30", "4053", "5555", "4444", "ray.poe",
];

fn check_response_side(kind: HostKind, artifact: &std::path::Path) -> Result<(), String> {
    let events = injected_events()
        .into_iter()
        .map(|e| (Duration::from_millis(5), e))
        .collect();
    let upstream = Upstream::start(Reply::Sse { events });
    let gw = WritGateway::start(kind, artifact, upstream.addr(), &Options::default())?;
    let ctx = |msg: String| format!("[{}] {msg}", gw.name());
    let t = Duration::from_secs(20);
    let body = json!({"model": "gpt-4o-mini", "stream": true,
        "messages": [{"role": "user", "content": "hello"}]});
    let req = Request::post_json("/v1/chat/completions", &body.to_string())
        .header("x-workflow", "support");
    let res = send(gw.addr(), &req, t).map_err(|e| ctx(e.to_string()))?;
    let out = res.body_str();
    if res.status != 200 {
        return Err(ctx(format!("status {}: {out}", res.status)));
    }
    if let Some(v) = INVENTED.iter().find(|v| out.contains(**v)) {
        return Err(ctx(format!("the client saw `{v}`:\n{out}")));
    }
    for mask in ["[EMAIL]", "[US_SSN]", "[CREDIT_CARD]"] {
        if !out.contains(mask) {
            return Err(ctx(format!("no {mask} in the reply:\n{out}")));
        }
    }
    if out.matches("data: [DONE]").count() != 1 {
        return Err(ctx(format!("[DONE] count:\n{out}")));
    }
    // A JSON reply: an invented value as an object key is masked too.
    let reply = json!({"id": "c2", "object": "chat.completion", "model": "gpt-4o-mini",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": "ok",
            "annotations": {"eve.sol@example.com": "929-30-4053"}}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 1, "completion_tokens": 1}});
    upstream.set_reply(Reply::Json {
        status: 200,
        body: reply.to_string(),
    });
    let req = Request::post_json(
        "/v1/chat/completions",
        &json!({"model": "gpt-4o-mini",
        "messages": [{"role": "user", "content": "hello"}]})
        .to_string(),
    )
    .header("x-workflow", "support");
    let res = send(gw.addr(), &req, t).map_err(|e| ctx(e.to_string()))?;
    let out = res.body_str();
    if res.status != 200 || out.contains("eve.sol") || out.contains("4053") {
        return Err(ctx(format!("JSON reply {}: {out}", res.status)));
    }
    let ann = &res.json()["choices"][0]["message"]["annotations"];
    if ann.get("[EMAIL]") != Some(&json!("[US_SSN]")) {
        return Err(ctx(format!("annotations: {ann}")));
    }
    Ok(())
}

/// A check of one host against a built artifact.
type Check = fn(HostKind, &std::path::Path) -> Result<(), String>;

/// Builds `policy` and runs every check in both hosts; fails with every failure at once.
fn in_both_hosts(policy: &str, checks: &[Check]) {
    let dir = TempDir::new("pii-carriers");
    let src = dir.path().join("carriers.policy");
    std::fs::write(&src, policy).unwrap();
    let artifact = build_policy(&src, dir.path());
    let artifact = artifact.as_path();
    let failures: Vec<String> = HostKind::BOTH
        .iter()
        .flat_map(|&kind| checks.iter().filter_map(move |c| c(kind, artifact).err()))
        .collect();
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

#[test]
fn disguised_values_and_other_carriers_never_leak_in_both_hosts() {
    in_both_hosts(POLICY, &[check_request_side, check_response_side]);
}

const ALL_BUILTINS: &str = r#"
policy "all-builtins" version "1.0.0" {
  owner "security@example.com"
  implements "ai-policy.md"
}

workflow "support" {
  match header "x-workflow" == "support"
  scan headers ["x-customer-note"]
  scan query
}

rule AIP-2.1 "Personal data is pseudonymised" {
  on request
  when prompt has pii
  then tokenise
}

rule AIP-2.4 "Credentials are pseudonymised" {
  on request
  when prompt has secret
  then tokenise
}
"#;

/// One true value per built-in detector, from the labelled corpus (so a detector added
/// there is covered here too): the detector, the value, and the text the corpus shows it
/// in (the value with its context keyword, `NHS 943 476 5919`, for detectors that need
/// one; otherwise the value itself).
fn corpus_values() -> Vec<(String, String, String)> {
    let dir = crate::support::workspace_root().join("tests/data/detectors");
    let mut out = Vec::new();
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "jsonl"))
        .collect();
    files.sort();
    for f in files {
        let name = f.file_stem().unwrap().to_string_lossy().to_string();
        let text = std::fs::read_to_string(&f).unwrap();
        let first = text
            .lines()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .find(|r| r["label"] == "match");
        if let Some(r) = first
            && let Some(v) = r["value"].as_str()
        {
            let shown = r["shown"].as_str().unwrap_or(v);
            out.push((name, v.to_string(), shown.to_string()));
        }
    }
    out
}

/// How a test disguises a value.
type Encode = fn(&str) -> String;

fn fullwidth(s: &str) -> String {
    s.chars()
        .map(|c| match c {
            '!'..='~' => char::from_u32(u32::from(c) - 0x21 + 0xFF01).unwrap_or(c),
            _ => c,
        })
        .collect()
}

fn percent(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

fn base64(s: &str) -> String {
    const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in s.as_bytes().chunks(3) {
        let n = chunk.iter().fold(0u32, |n, &b| (n << 8) | u32::from(b)) << (8 * (3 - chunk.len()));
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(char::from(A[((n >> (18 - 6 * i)) & 63) as usize]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// Every string value and object key of a JSON body, decoded, one per line.
fn json_strings(body: &[u8]) -> String {
    fn walk(v: &Value, out: &mut String) {
        match v {
            Value::String(s) => {
                out.push_str(s);
                out.push('\n');
            }
            Value::Array(a) => a.iter().for_each(|x| walk(x, out)),
            Value::Object(m) => m.iter().for_each(|(k, x)| {
                out.push_str(k);
                out.push('\n');
                walk(x, out);
            }),
            _ => {}
        }
    }
    let mut out = String::new();
    if let Ok(v) = serde_json::from_slice::<Value>(body) {
        walk(&v, &mut out);
    }
    out
}

fn check_every_builtin(kind: HostKind, artifact: &std::path::Path) -> Result<(), String> {
    let upstream = Upstream::start(Reply::Echo {
        sse: true,
        tool_args: false,
    });
    let gw = WritGateway::start(kind, artifact, upstream.addr(), &Options::default())?;
    let ctx = |msg: String| format!("[{}] {msg}", gw.name());
    let t = Duration::from_secs(30);
    let values = corpus_values();
    let encodings: [(&str, Encode); 4] = [
        ("plain", |s| s.to_string()),
        ("fullwidth", fullwidth),
        ("percent", percent),
        ("base64", base64),
    ];
    for (enc, f) in encodings {
        // (detector, the encoded value, the encoded text around it)
        let sent: Vec<(String, String, String)> = values
            .iter()
            .filter(|(_, v, _)| enc != "base64" || v.len() >= 12)
            .map(|(n, v, shown)| (n.clone(), f(v), f(shown)))
            .collect();
        let content = sent
            .iter()
            .map(|(_, _, shown)| shown.as_str())
            .collect::<Vec<_>>()
            .join(" | ");
        let body = json!({"model": "gpt-4o-mini", "stream": true,
            "messages": [{"role": "user", "content": content}]});
        let req = Request::post_json("/v1/chat/completions", &body.to_string())
            .header("x-workflow", "support");
        let res = send(gw.addr(), &req, t).map_err(|e| ctx(e.to_string()))?;
        let back = reassemble(&res.body_str());
        if res.status != 200 || back != content {
            return Err(ctx(format!(
                "{enc}: status {}, client got {back:?}\nwanted {content:?}",
                res.status
            )));
        }
        let seen = upstream.received();
        let up = seen
            .last()
            .ok_or_else(|| ctx("no upstream request".into()))?;
        let strings = json_strings(&up.body);
        for ((name, v, shown), (_, plain, _)) in sent.iter().zip(
            values
                .iter()
                .filter(|(_, p, _)| enc != "base64" || p.len() >= 12),
        ) {
            // The encoded text, the encoded value (base64 of a value is not a substring of
            // the base64 of its text, so not looked for there) and the plain value.
            let leaked = strings.contains(shown.as_str())
                || (enc != "base64" && strings.contains(v.as_str()))
                || strings.contains(plain.as_str());
            if leaked {
                return Err(ctx(format!("{enc}: upstream saw {name} {v:?}:\n{strings}")));
            }
        }
    }
    // Headers and the query string: the single-line values, plain and percent-encoded.
    let lines: Vec<&(String, String, String)> = values
        .iter()
        .filter(|(_, _, shown)| !shown.contains('\n'))
        .collect();
    let note = lines
        .iter()
        .map(|(_, _, shown)| shown.as_str())
        .collect::<Vec<_>>()
        .join(" | ");
    let query = lines
        .iter()
        .enumerate()
        .map(|(i, (_, _, shown))| format!("v{i}={}", percent(shown)))
        .collect::<Vec<_>>()
        .join("&");
    let body = json!({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]});
    let req = Request::post_json(&format!("/v1/chat/completions?{query}"), &body.to_string())
        .header("x-workflow", "support")
        .header("x-customer-note", &note);
    upstream.set_reply(Reply::Echo {
        sse: false,
        tool_args: false,
    });
    let res = send(gw.addr(), &req, t).map_err(|e| ctx(e.to_string()))?;
    if res.status != 200 {
        return Err(ctx(format!(
            "carriers: status {}: {}",
            res.status,
            res.body_str()
        )));
    }
    let seen = upstream.received();
    let up = seen
        .last()
        .ok_or_else(|| ctx("no upstream request".into()))?;
    let head = everything(up);
    for (name, v, _) in &lines {
        if head.contains(v.as_str()) || head.contains(&percent(v)) {
            return Err(ctx(format!("carriers: upstream saw {name} {v:?}:\n{head}")));
        }
    }
    eprintln!(
        "[{}] {} built-in types × 4 encodings in the body, {} in a header and the query: none reached the upstream",
        gw.name(),
        values.len(),
        lines.len()
    );
    Ok(())
}

#[test]
fn every_builtin_type_in_every_carrier_and_encoding_in_both_hosts() {
    in_both_hosts(ALL_BUILTINS, &[check_every_builtin]);
}
