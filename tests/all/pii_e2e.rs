//! Issue 4, end to end in both hosts: with `policies/support-assistant.policy` (tokenises
//! e-mail, phone, card and IBAN), a loopback model that echoes the prompt back — one
//! character per SSE event, or in one JSON reply — never sees any of the values (request
//! line, headers and body), and the client reassembles exactly the text it sent, with
//! exactly one `[DONE]`; the same holds for tool-call argument deltas.

use std::time::Duration;

use serde_json::{Value, json};

use crate::support::cases::Gateway;
use crate::support::hosts::{
    HostKind, Options, WritGateway, assert_in_both_hosts, build_support_assistant,
};
use crate::support::http::{Request, send};
use crate::support::tempdir::TempDir;
use crate::support::upstream::{Reply, Upstream};

const EMAIL: &str = "jane.doe@example.com";
const PHONE: &str = "+44 20 7946 0958";
const CARD: &str = "4111 1111 1111 1111";
const IBAN: &str = "DE89 3704 0044 0532 0130 00";

/// Every value, plus the separator-free forms a leak might take.
fn forbidden() -> Vec<String> {
    let mut v: Vec<String> = [EMAIL, PHONE, CARD, IBAN].map(String::from).to_vec();
    v.extend([CARD, IBAN, PHONE].map(|s| s.replace(' ', "")));
    v.push("jane.doe".into());
    v
}

fn prompt() -> String {
    format!("Hi, I am {EMAIL}, call me on {PHONE}. Refund card {CARD} to IBAN {IBAN} please.")
}

fn request(stream: bool) -> Request {
    let body = json!({"model": "gpt-4o-mini", "max_tokens": 200, "stream": stream,
        "messages": [{"role": "user", "content": prompt()}]});
    Request::post_json("/v1/chat/completions", &body.to_string())
        .header("x-workflow", "support-assistant")
        .header("x-jwt-team", "billing")
        .header("x-jwt-sub", "agent-7")
}

/// The text a client reassembles from an SSE body: the content deltas, the tool-call
/// argument deltas, and the number of `[DONE]` events.
fn reassemble(body: &str) -> Result<(String, String, usize), String> {
    let (mut content, mut args, mut done) = (String::new(), String::new(), 0);
    for event in body.split("\n\n").filter(|e| !e.trim().is_empty()) {
        let data = event
            .strip_prefix("data: ")
            .ok_or_else(|| format!("not an SSE data event: {event:?}"))?;
        if data == "[DONE]" {
            done += 1;
            continue;
        }
        let v: Value = serde_json::from_str(data).map_err(|e| format!("{e}: {data}"))?;
        let delta = &v["choices"][0]["delta"];
        if let Some(c) = delta["content"].as_str() {
            content.push_str(c);
        }
        if let Some(a) = delta["tool_calls"][0]["function"]["arguments"].as_str() {
            args.push_str(a);
        }
    }
    Ok((content, args, done))
}

/// What the upstream received, as one string: request line, headers and body. The
/// headers the proxy itself writes from its own state are left out: `host` carries the
/// upstream's random port and the request id random digits, so a value such as `4053`
/// could turn up there by chance (a port of 40533 did) without anything leaking.
pub(crate) fn everything(req: &Request) -> String {
    let mut s = format!("{} {}\n", req.method, req.path);
    for (n, v) in &req.headers {
        let own = n == "host"
            || n == "x-request-id"
            || n.starts_with("x-envoy-")
            || n.starts_with("x-forwarded-");
        if !own {
            s.push_str(&format!("{n}: {v}\n"));
        }
    }
    s + &String::from_utf8_lossy(&req.body)
}

fn check_host(kind: HostKind, artifact: &std::path::Path) -> Result<(), String> {
    let upstream = Upstream::start(Reply::Echo {
        sse: true,
        tool_args: true,
    });
    let gw = WritGateway::start(kind, artifact, upstream.addr(), &Options::default())?;
    let ctx = |msg: String| format!("[{}] {msg}", gw.name());
    let t = Duration::from_secs(20);

    // Streamed: one character per event, content then tool-call arguments.
    let res = send(gw.addr(), &request(true), t).map_err(|e| ctx(e.to_string()))?;
    if res.status != 200 {
        return Err(ctx(format!("status {}: {}", res.status, res.body_str())));
    }
    let seen = upstream.received();
    let [up] = seen.as_slice() else {
        return Err(ctx(format!("upstream got {} requests", seen.len())));
    };
    let up_text = everything(up);
    for value in forbidden() {
        if up_text.contains(&value) {
            return Err(ctx(format!("upstream saw `{value}`:\n{up_text}")));
        }
    }
    for tag in ["EMAIL", "PHONE", "CARD", "IBAN"] {
        if !up_text.contains(tag) {
            return Err(ctx(format!("no {tag} placeholder upstream:\n{up_text}")));
        }
    }
    let events = res.body_str().matches("data: ").count();
    let (content, args, done) = reassemble(&res.body_str()).map_err(ctx)?;
    if content != prompt() || args != prompt() || done != 1 {
        return Err(ctx(format!(
            "reassembled\n  content {content:?}\n  args    {args:?}\n  [DONE] x{done}\nwanted {:?}",
            prompt()
        )));
    }
    eprintln!(
        "[{}] streamed: {} chars echoed in {events} events, restored exactly; upstream saw placeholders only",
        gw.name(),
        prompt().chars().count()
    );

    // JSON: the whole echo in one reply.
    upstream.set_reply(Reply::Echo {
        sse: false,
        tool_args: false,
    });
    let res = send(gw.addr(), &request(false), t).map_err(|e| ctx(e.to_string()))?;
    let content = res.json()["choices"][0]["message"]["content"].clone();
    if res.status != 200 || content != prompt().as_str() {
        return Err(ctx(format!(
            "JSON reply {}: {}",
            res.status,
            res.body_str()
        )));
    }
    let seen = upstream.received();
    let up_text = everything(seen.last().ok_or_else(|| ctx("no request".into()))?);
    if let Some(v) = forbidden().into_iter().find(|v| up_text.contains(v)) {
        return Err(ctx(format!("upstream saw `{v}` (JSON mode)")));
    }

    // No value in anything the gateway logged (audit records included).
    let records = gw.wait_audit("request", 2, Duration::from_secs(10));
    if records.len() != 2 {
        return Err(ctx(format!("{} audit records, wanted 2", records.len())));
    }
    if records[0]["pii"]["email"] != 1 || records[0]["pii"]["iban"] != 1 {
        return Err(ctx(format!("audit record counts: {}", records[0])));
    }
    let log = gw.log();
    if let Some(v) = forbidden().into_iter().find(|v| log.contains(v)) {
        return Err(ctx(format!("the gateway log holds `{v}`")));
    }
    Ok(())
}

#[test]
fn pii_never_reaches_the_model_and_the_client_gets_it_back_in_both_hosts() {
    let dir = TempDir::new("pii-e2e");
    let artifact = build_support_assistant(dir.path());
    assert_in_both_hosts(&artifact, check_host);
}
