//! Property tests for tokenisation, JSON string rewriting and streamed restoration.
//!
//! Inputs come from a small seeded generator (no RNG crate needed, every failure
//! reproducible from its seed): random JSON documents, random texts with values in them,
//! and random ways of cutting a reply into events and an event stream into chunks.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeMap;
use std::ops::Range;

use serde_json::{Value, json};
use writ_plugin::detect::Scanner;
use writ_plugin::ir;
use writ_plugin::json_strings::{self, Leaf, Path};
use writ_plugin::stream::{Ctx, Redact, Redacted, SseRestorer, TextStream, rewrite_text};
use writ_plugin::tokenise::{self, Vault};

/// xorshift64*: deterministic, good enough to pick shapes.
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Rng {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
    fn pick<'a, T>(&mut self, xs: &'a [T]) -> &'a T {
        &xs[self.below(xs.len())]
    }
    fn word(&mut self, xs: &[&'static str]) -> &'static str {
        xs[self.below(xs.len())]
    }
    fn chance(&mut self, percent: usize) -> bool {
        self.below(100) < percent
    }
}

const WORDS: &[&str] = &[
    "the",
    "mail",
    "EMAIL",
    "EMAIL_",
    "E",
    "_",
    "PHONE_7",
    "héllo",
    "日本語",
    "🦀",
    "\n",
    "\"q\"",
    "back\\slash",
    " ",
    "  ",
    "tab\t",
    "ok.",
    "x",
    "\u{1}",
    "CARD",
    "é",
];

fn random_string(r: &mut Rng) -> String {
    let mut s = String::new();
    for _ in 0..r.below(6) {
        s.push_str(r.word(WORDS));
    }
    s
}

fn random_json(r: &mut Rng, depth: usize) -> Value {
    let k = if depth == 0 { r.below(4) } else { r.below(6) };
    match k {
        0 => Value::String(random_string(r)),
        1 => json!(r.next() as i64 % 100_000),
        2 => json!((r.below(1000) as f64) / 8.0),
        3 => r
            .pick(&[Value::Null, Value::Bool(true), Value::Bool(false)])
            .clone(),
        4 => Value::Array((0..r.below(4)).map(|_| random_json(r, depth - 1)).collect()),
        _ => {
            let mut m = serde_json::Map::new();
            for _ in 0..r.below(4) {
                m.insert(random_string(r), random_json(r, depth - 1));
            }
            Value::Object(m)
        }
    }
}

fn map_dom(v: &mut Value, f: &dyn Fn(&str) -> String) {
    match v {
        Value::String(s) => *s = f(s),
        Value::Array(a) => a.iter_mut().for_each(|x| map_dom(x, f)),
        Value::Object(m) => m.values_mut().for_each(|x| map_dom(x, f)),
        _ => {}
    }
}

fn dom_strings(v: &Value, out: &mut Vec<String>) {
    match v {
        Value::String(s) => out.push(s.clone()),
        Value::Array(a) => a.iter().for_each(|x| dom_strings(x, out)),
        Value::Object(m) => m.values().for_each(|x| dom_strings(x, out)),
        _ => {}
    }
}

#[test]
fn json_rewrite_agrees_with_the_dom() {
    let change = |s: &str| format!("<{}\"\\\n{}>", s.to_uppercase(), s.len());
    for seed in 0..2000 {
        let mut r = Rng::new(seed);
        let v = random_json(&mut r, 4);
        let text = if seed % 2 == 0 {
            serde_json::to_string(&v).unwrap()
        } else {
            serde_json::to_string_pretty(&v).unwrap()
        };
        let body = text.as_bytes();
        // Visiting sees exactly the DOM's string values, in order.
        let mut seen = Vec::new();
        json_strings::visit(body, &mut |_: &Path<'_>, l: Leaf<'_>, _: Range<usize>| {
            if let Leaf::Str(s) = l {
                seen.push(s.to_string());
            }
        })
        .unwrap();
        let mut want = Vec::new();
        dom_strings(&v, &mut want);
        assert_eq!(seen, want, "seed {seed}");
        // No change: no new body (the original bytes are forwarded).
        assert_eq!(json_strings::rewrite_strings(body, |_, _| None), Ok(None));
        // Identity replacement re-encodes: still the same value.
        let same = json_strings::rewrite_strings(body, |_, s| Some(s.to_string()));
        assert_eq!(same, Ok(None), "seed {seed}");
        // Replacing every string equals replacing in the DOM.
        let new = json_strings::rewrite_strings(body, |_, s| Some(change(s))).unwrap();
        let mut dom = v.clone();
        map_dom(&mut dom, &change);
        let got: Value = match new {
            Some(b) => serde_json::from_slice::<Value>(&b).unwrap(),
            None => v.clone(),
        };
        assert_eq!(got, dom, "seed {seed}");
    }
}

#[test]
fn json_scanner_rejects_what_serde_rejects() {
    let mut r = Rng::new(99);
    for _ in 0..3000 {
        let v = random_json(&mut r, 3);
        let mut b = serde_json::to_vec(&v).unwrap();
        // Corrupt one byte.
        if !b.is_empty() {
            let i = r.below(b.len());
            b[i] = *r.pick(b"{}[],:\"\\ 0a-.eE\x01");
        }
        let ours = json_strings::visit(&b, &mut |_: &Path<'_>, _: Leaf<'_>, _: Range<usize>| {});
        let theirs = serde_json::from_slice::<Value>(&b);
        // serde_json also refuses numbers that overflow f64; the grammar allows them and
        // the scanner never interprets numbers.
        if theirs
            .as_ref()
            .is_err_and(|e| e.to_string().contains("out of range"))
        {
            continue;
        }
        assert_eq!(
            ours.is_ok(),
            theirs.is_ok(),
            "{}",
            String::from_utf8_lossy(&b)
        );
    }
}

fn detectors(names: &[&str]) -> Vec<ir::Detector> {
    names
        .iter()
        .map(|n| ir::Detector {
            name: n.to_string(),
            class: ir::DetectorClass::Pii,
            kind: ir::DetectorKind::Builtin(n.to_string()),
        })
        .collect()
}

const VALUES: &[(&str, &str)] = &[
    ("email", "ada@example.com"),
    ("email", "b.o+b@mail.example.org"),
    ("phone", "+1 415 555 0100"),
    ("credit_card", "4111 1111 1111 1111"),
    ("iban", "DE89 3704 0044 0532 0130 00"),
    ("email", "zoë@example.com"),
];

/// A reply text with placeholders, and the same text with the values.
fn reply_text(r: &mut Rng, vault: &mut Vault) -> (String, String) {
    let (mut with_ph, mut with_values) = (String::new(), String::new());
    for _ in 0..r.below(12) {
        if r.chance(35) {
            let (det, value) = *r.pick(VALUES);
            let ph = vault.tokenise(det, value).into_owned();
            with_ph.push_str(&ph);
            with_values.push_str(value);
        } else {
            let w = r.word(WORDS);
            with_ph.push_str(w);
            with_values.push_str(w);
        }
    }
    (with_ph, with_values)
}

/// Splits `s` at char boundaries: one char per piece, or random sizes.
fn fragments(r: &mut Rng, s: &str) -> Vec<String> {
    let chars: Vec<char> = s.chars().collect();
    let one_each = r.chance(30);
    let mut out = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        let n = if one_each { 1 } else { 1 + r.below(8) };
        let j = (i + n).min(chars.len());
        out.push(chars[i..j].iter().collect());
        i = j;
    }
    if r.chance(20) {
        out.insert(r.below(out.len() + 1), String::new());
    }
    out
}

#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Debug)]
enum Slot {
    Content(u64),
    Tool(u64, u64),
    Text(u64),
}

/// Builds an OpenAI-style event stream from per-slot fragments, interleaved at random.
fn build_stream(r: &mut Rng, slots: &BTreeMap<Slot, Vec<String>>, done: bool) -> Vec<u8> {
    let mut queues: Vec<(Slot, std::collections::VecDeque<String>)> = slots
        .iter()
        .map(|(k, v)| (*k, v.iter().cloned().collect()))
        .collect();
    let mut out = Vec::new();
    let eol = *r.pick(&["\n", "\n", "\n", "\r\n", "\r"]);
    let head = |choices: Value| json!({"id":"chatcmpl-1","object":"chat.completion.chunk","created":1,"model":"m","choices":choices});
    let event = |v: Value, out: &mut Vec<u8>| {
        out.extend_from_slice(
            format!("data: {}{eol}{eol}", serde_json::to_string(&v).unwrap()).as_bytes(),
        );
    };
    event(
        head(json!([{"index":0,"delta":{"role":"assistant","content":""},"finish_reason":null}])),
        &mut out,
    );
    if r.chance(30) {
        out.extend_from_slice(format!(": keep-alive{eol}{eol}").as_bytes());
    }
    let mut finished: Vec<u64> = Vec::new();
    while queues.iter().any(|(_, q)| !q.is_empty()) {
        let live: Vec<usize> = (0..queues.len())
            .filter(|&i| !queues[i].1.is_empty())
            .collect();
        let qi = *r.pick(&live);
        let slot = queues[qi].0;
        let frag = queues[qi].1.pop_front().unwrap();
        let last_of_choice = queues[qi].1.is_empty();
        let choice = match slot {
            Slot::Content(c) | Slot::Tool(c, _) | Slot::Text(c) => c,
        };
        // Sometimes the final fragment carries the finish_reason itself.
        let finish_here = last_of_choice && r.chance(30) && !queues.iter().any(|(s, q)| {
            !q.is_empty()
                && matches!(*s, Slot::Content(c) | Slot::Tool(c, _) | Slot::Text(c) if c == choice)
        });
        let fin = if finish_here {
            json!("stop")
        } else {
            Value::Null
        };
        let v = match slot {
            Slot::Content(c) => {
                json!([{"index":c,"delta":{"content":frag},"logprobs":null,"finish_reason":fin}])
            }
            Slot::Text(c) => json!([{"index":c,"text":frag,"finish_reason":fin}]),
            Slot::Tool(c, t) => {
                json!([{"index":c,"delta":{"tool_calls":[{"index":t,"function":{"arguments":frag}}]},"finish_reason":fin}])
            }
        };
        event(head(v), &mut out);
        if finish_here {
            finished.push(choice);
        }
    }
    let mut choices: Vec<u64> = slots
        .keys()
        .map(|s| match *s {
            Slot::Content(c) | Slot::Tool(c, _) | Slot::Text(c) => c,
        })
        .collect();
    choices.dedup();
    for c in choices {
        if !finished.contains(&c) && r.chance(80) {
            event(
                head(json!([{"index":c,"delta":{},"finish_reason":"stop"}])),
                &mut out,
            );
        }
    }
    event(
        json!({"id":"chatcmpl-1","choices":[],"usage":{"prompt_tokens":1,"completion_tokens":2}}),
        &mut out,
    );
    if done {
        out.extend_from_slice(format!("data: [DONE]{eol}{eol}").as_bytes());
    }
    out
}

/// What a client reassembles from an event stream: text per slot, and the [DONE] count.
fn client_view(body: &[u8]) -> (BTreeMap<Slot, String>, usize) {
    let text = String::from_utf8(body.to_vec()).expect("output is UTF-8");
    let norm = text.replace("\r\n", "\n").replace('\r', "\n");
    let mut texts: BTreeMap<Slot, String> = BTreeMap::new();
    let mut dones = 0;
    for ev in norm.split("\n\n") {
        let data: Vec<&str> = ev
            .lines()
            .filter_map(|l| {
                l.strip_prefix("data:")
                    .map(|d| d.strip_prefix(' ').unwrap_or(d))
            })
            .collect();
        if data.is_empty() {
            continue;
        }
        let payload = data.join("\n");
        if payload == "[DONE]" {
            dones += 1;
            continue;
        }
        let v: Value =
            serde_json::from_str(&payload).unwrap_or_else(|e| panic!("bad event {payload:?}: {e}"));
        for ch in v["choices"].as_array().unwrap() {
            let c = ch["index"].as_u64().unwrap();
            if let Some(s) = ch["delta"]["content"].as_str() {
                texts.entry(Slot::Content(c)).or_default().push_str(s);
            }
            if let Some(s) = ch["text"].as_str() {
                texts.entry(Slot::Text(c)).or_default().push_str(s);
            }
            if let Some(tcs) = ch["delta"]["tool_calls"].as_array() {
                for tc in tcs {
                    let t = tc["index"].as_u64().unwrap();
                    if let Some(s) = tc["function"]["arguments"].as_str() {
                        texts.entry(Slot::Tool(c, t)).or_default().push_str(s);
                    }
                }
            }
        }
    }
    texts.retain(|_, s| !s.is_empty());
    (texts, dones)
}

fn run_sse(body: &[u8], cuts: &[usize], ctx: &Ctx<'_>) -> Vec<u8> {
    let mut sse = SseRestorer::new();
    let mut out = Vec::new();
    let mut at = 0;
    for &c in cuts.iter().chain(std::iter::once(&body.len())) {
        sse.push(&body[at..c], ctx, &mut out);
        at = c;
    }
    sse.finish(ctx, &mut out);
    out
}

#[test]
fn streamed_restoration_survives_any_cutting() {
    for seed in 0..400u64 {
        let mut r = Rng::new(seed);
        let mut vault = Vault::new(tokenise::nonce(format!("req-{seed}").as_bytes(), seed, 0));
        let mut slots = BTreeMap::new();
        let mut want = BTreeMap::new();
        for _ in 0..1 + r.below(3) {
            let slot = *r.pick(&[
                Slot::Content(0),
                Slot::Content(1),
                Slot::Tool(0, 0),
                Slot::Tool(0, 1),
                Slot::Text(2),
            ]);
            let (ph, plain) = reply_text(&mut r, &mut vault);
            slots.insert(slot, fragments(&mut r, &ph));
            want.insert(slot, plain);
        }
        want.retain(|_, s: &mut String| !s.is_empty());
        let done = r.chance(80);
        let body = build_stream(&mut r, &slots, done);
        let ctx = Ctx {
            vault: &vault,
            redact: None,
        };
        let whole = run_sse(&body, &[], &ctx);
        let (texts, dones) = client_view(&whole);
        assert_eq!(
            texts,
            want,
            "seed {seed}\n{}",
            String::from_utf8_lossy(&whole)
        );
        assert_eq!(dones, usize::from(done));
        // Held text never exceeds the longest placeholder: check with one byte per chunk.
        let bytewise: Vec<usize> = (1..body.len()).collect();
        assert_eq!(
            run_sse(&body, &bytewise, &ctx),
            whole,
            "seed {seed} bytewise"
        );
        // Every single cut point (on small streams), and random multi-cuts.
        if body.len() < 1500 {
            for c in 1..body.len() {
                assert_eq!(run_sse(&body, &[c], &ctx), whole, "seed {seed} cut {c}");
            }
        }
        for _ in 0..20 {
            let mut cuts: Vec<usize> = (0..r.below(12)).map(|_| r.below(body.len() + 1)).collect();
            cuts.sort_unstable();
            assert_eq!(
                run_sse(&body, &cuts, &ctx),
                whole,
                "seed {seed} cuts {cuts:?}"
            );
        }
    }
}

#[test]
fn untouched_events_pass_byte_for_byte() {
    let vault = Vault::new([1; 16]);
    let ctx = Ctx {
        vault: &vault,
        redact: None,
    };
    let body =
        b"data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"hi\"}}]}\n\ndata: [DONE]\n\n";
    assert_eq!(run_sse(body, &[7], &ctx), body.to_vec());
    let mut v2 = Vault::new([2; 16]);
    let ph = v2.tokenise("email", "a@b.io").into_owned();
    let ctx = Ctx {
        vault: &v2,
        redact: None,
    };
    let body = format!(
        "id: 1\r\ndata: {{\"x\" : 1.50, \"choices\":[{{\"index\":0,\"delta\":{{\"content\":\"to {ph}\"}}}}]}}\r\n\r\n"
    );
    let out = run_sse(body.as_bytes(), &[], &ctx);
    assert_eq!(
        String::from_utf8(out).unwrap(),
        "id: 1\r\ndata: {\"x\" : 1.50, \"choices\":[{\"index\":0,\"delta\":{\"content\":\"to a@b.io\"}}]}\r\n\r\n"
    );
}

#[test]
fn held_text_is_bounded_by_the_longest_placeholder() {
    let mut vault = Vault::new([3; 16]);
    let ph = vault
        .tokenise("credit_card", "4111111111111111")
        .into_owned();
    let ctx = Ctx {
        vault: &vault,
        redact: None,
    };
    let mut ts = TextStream::default();
    let mut red = Redacted::new();
    let mut emitted = String::new();
    let text = format!("a long reply {ph} with more words after it");
    let value = "4111111111111111";
    for (i, ch) in text.char_indices() {
        ts.push(&ch.to_string(), &ctx, false, &mut emitted, &mut red);
        let consumed = if emitted.contains(value) {
            emitted.len() - value.len() + ph.len()
        } else {
            emitted.len()
        };
        let held = i + ch.len_utf8() - consumed;
        assert!(held < ph.len(), "held {held} bytes at {i}");
    }
    ts.push("", &ctx, true, &mut emitted, &mut red);
    assert_eq!(emitted, text.replace(&ph, value));
}

fn scanner(names: &[&str]) -> (Scanner, Vec<ir::Detector>) {
    let d = detectors(names);
    (Scanner::new(&d).unwrap(), d)
}

/// The detectors that find the values in [`LEAKS`].
const LEAK_DETECTORS: &[&str] = &[
    "email",
    "phone",
    "credit_card",
    "iban",
    "aws_access_key",
    "ipv4",
    "ipv6",
    "us_ssn",
    "github_token",
    "slack_token",
    "openai_key",
    "jwt",
    "private_key",
];

const LEAKS: &[&str] = &[
    "ada@example.com",
    "+1 415 555 0100",
    "(415) 555-0100",
    "4111 1111 1111 1111",
    "4111-1111-1111-1111",
    "DE89 3704 0044 0532 0130 00",
    "AKIAIOSFODNN7EXAMPLE",
    "192.168.10.1",
    "078-05-1120",
    "2001:db8::ff00:42:8329",
    "ghp_abcdefghijklmnopqrstuvwxyz0123456789",
    "xoxb-123456789012-abcdefghijklmnop",
    "sk-proj-abcdefghijklmnopqrstuvwxyz0123456789ABCD",
    "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.dozjgNryP4J3jVmNHl0w5N_XgL0n3I9PlFUP0THsR8U",
    "-----BEGIN PRIVATE KEY-----\nMIIEvQIBADANBgkqhkiG9w0BAQEFAASC\nAAAA\n-----END PRIVATE KEY-----",
];

#[test]
fn streamed_redaction_equals_whole_redaction() {
    let (sc, dets) = scanner(LEAK_DETECTORS);
    let wanted: Vec<u16> = (0..LEAK_DETECTORS.len() as u16).collect();
    let mut vault = Vault::new([4; 16]);
    let ph = vault.tokenise("email", "mine@example.com").into_owned();
    let ctx = Ctx {
        vault: &vault,
        redact: Some(Redact::new(&sc, &wanted, &dets)),
    };
    let words = [
        "call", "me", "at", " ", "  ", "\n", "or", ",", ".", "x", "12", "+1", "é", "日本",
    ];
    let mut checked = 0;
    let mut masked = 0;
    for seed in 0..1500u64 {
        let mut r = Rng::new(seed);
        let mut text = String::new();
        for _ in 0..r.below(14) {
            match r.below(10) {
                0..=2 => text.push_str(r.word(LEAKS)),
                3 => text.push_str(&ph),
                _ => text.push_str(r.word(&words)),
            }
            if r.chance(60) {
                text.push(' ');
            }
        }
        let mut red_whole = Redacted::new();
        let whole = rewrite_text(&text, &ctx, &mut red_whole).unwrap_or_else(|| text.clone());
        masked += red_whole.values().sum::<u32>();
        for _ in 0..4 {
            let mut ts = TextStream::default();
            let mut out = String::new();
            let mut red = Redacted::new();
            let mut prefixes_ok = true;
            for f in fragments(&mut r, &text) {
                ts.push(&f, &ctx, false, &mut out, &mut red);
                // Never ahead of the whole answer: what is out is a prefix of it.
                prefixes_ok &= whole.starts_with(&out);
            }
            ts.push("", &ctx, true, &mut out, &mut red);
            assert!(
                prefixes_ok,
                "seed {seed}: emitted a prefix the whole reply does not have"
            );
            assert_eq!(out, whole, "seed {seed} text {text:?}");
            assert_eq!(red, red_whole, "seed {seed}");
            checked += 1;
        }
    }
    assert!(checked > 1000);
    assert!(masked > 1000, "the texts should leak values: {masked}");
}

#[test]
fn leaked_values_are_masked_and_prompt_values_restored() {
    let (sc, dets) = scanner(&["email", "phone"]);
    let wanted = [0u16, 1];
    let mut vault = Vault::new([5; 16]);
    let ph = vault.tokenise("email", "mine@example.com").into_owned();
    let ctx = Ctx {
        vault: &vault,
        redact: Some(Redact::new(&sc, &wanted, &dets)),
    };
    let body = format!(
        "data: {{\"choices\":[{{\"index\":0,\"delta\":{{\"content\":\"mail {ph} or leak@corp.example, call +1 415 555 0100 \"}}}}]}}\n\ndata: [DONE]\n\n"
    );
    let cuts: Vec<usize> = (1..body.len()).collect();
    let mut sse = SseRestorer::new();
    let mut out = Vec::new();
    let mut at = 0;
    for c in cuts.into_iter().chain([body.len()]) {
        sse.push(&body.as_bytes()[at..c], &ctx, &mut out);
        at = c;
    }
    sse.finish(&ctx, &mut out);
    let (texts, dones) = client_view(&out);
    assert_eq!(dones, 1);
    assert_eq!(
        texts.get(&Slot::Content(0)).map(String::as_str),
        Some("mail mine@example.com or [EMAIL], call [PHONE] ")
    );
    assert_eq!(sse.redacted().get(&0), Some(&1));
    assert_eq!(sse.redacted().get(&1), Some(&1));
}

#[test]
fn request_tokenised_then_reply_restored_end_to_end() {
    let (sc, _) = scanner(&["email", "us_ssn"]);
    let body = serde_json::to_vec(&json!({
        "model": "gpt-4o",
        "messages": [
            {"role": "system", "content": "be nice"},
            {"role": "user", "content": [{"type": "text", "text": "mail ada@example.com about 078-05-1120, cc ada@example.com"}]},
            {"role": "assistant", "tool_calls": [{"id": "c1", "type": "function", "function": {"name": "send", "arguments": "{\"to\":\"bob@example.org\"}"}}]}
        ],
        "user": "ada@example.com"
    }))
    .unwrap();
    let mut vault = Vault::new(tokenise::nonce(b"req-42", 1_700_000_000_000_000_000, 1));
    let rw = tokenise::rewrite_request(&body, &sc, &[0], &[1], &mut vault).unwrap();
    let new = rw.body.expect("body changed");
    let text = String::from_utf8(new.clone()).unwrap();
    assert!(!text.contains("ada@example.com") && !text.contains("bob@example.org"));
    assert!(!text.contains("078-05-1120") && text.contains("[US_SSN]"));
    assert_eq!(vault.len(), 2);
    let v: Value = serde_json::from_slice(&new).unwrap();
    assert_eq!(v["model"], "gpt-4o");
    let args: Value = serde_json::from_str(
        v["messages"][2]["tool_calls"][0]["function"]["arguments"]
            .as_str()
            .unwrap(),
    )
    .unwrap();
    assert!(args["to"].as_str().unwrap().starts_with("EMAIL_"));
    assert_eq!(rw.tallies.len(), 2);
    assert_eq!((rw.tallies[0].detector, rw.tallies[0].tokenised), (0, 4));
    assert_eq!((rw.tallies[1].detector, rw.tallies[1].redacted), (1, 1));
    // The model echoes the placeholders; the client gets the values back.
    let ph = vault.tokenise("email", "ada@example.com").into_owned();
    let reply = serde_json::to_vec(&json!({
        "choices": [{"index": 0, "message": {"role": "assistant", "content": format!("Sent to {ph}.")}}]
    }))
    .unwrap();
    let ctx = Ctx {
        vault: &vault,
        redact: None,
    };
    let out = writ_plugin::stream::rewrite_reply_json(&reply, &ctx).unwrap();
    let v: Value = serde_json::from_slice(&out.body.unwrap()).unwrap();
    assert_eq!(
        v["choices"][0]["message"]["content"],
        "Sent to ada@example.com."
    );
}

#[test]
fn placeholders_of_another_request_are_not_restored() {
    let mut mine = Vault::new(tokenise::nonce(b"a", 1, 0));
    mine.tokenise("email", "me@example.com");
    let mut theirs = Vault::new(tokenise::nonce(b"b", 1, 0));
    let foreign = theirs.tokenise("email", "victim@example.com").into_owned();
    let ctx = Ctx {
        vault: &mine,
        redact: None,
    };
    let body = format!(
        "data: {{\"choices\":[{{\"index\":0,\"delta\":{{\"content\":\"{foreign}\"}}}}]}}\n\n"
    );
    let out = run_sse(body.as_bytes(), &[], &ctx);
    assert_eq!(out, body.as_bytes());
}

/// A Responses API stream (`/v1/responses`): top-level `delta` strings keyed by output
/// and content index, `.done` events carrying the whole text.
fn responses_stream(r: &mut Rng, parts: &[(u64, Vec<String>, String)]) -> Vec<u8> {
    let mut out = Vec::new();
    let mut seq = 0;
    let mut ev = |ty: &str, mut v: Value, out: &mut Vec<u8>| {
        v["type"] = json!(ty);
        v["sequence_number"] = json!(seq);
        seq += 1;
        out.extend_from_slice(
            format!(
                "event: {ty}\ndata: {}\n\n",
                serde_json::to_string(&v).unwrap()
            )
            .as_bytes(),
        );
    };
    ev(
        "response.created",
        json!({"response": {"id": "resp_1"}}),
        &mut out,
    );
    for (oi, frags, whole) in parts {
        for f in frags {
            ev(
                "response.output_text.delta",
                json!({"item_id": "msg_1", "output_index": oi, "content_index": 0, "delta": f}),
                &mut out,
            );
        }
        if r.chance(80) {
            ev(
                "response.output_text.done",
                json!({"item_id": "msg_1", "output_index": oi, "content_index": 0, "text": whole}),
                &mut out,
            );
        }
    }
    if r.chance(70) {
        ev(
            "response.completed",
            json!({"response": {"id": "resp_1"}}),
            &mut out,
        );
    }
    out
}

fn responses_view(body: &[u8]) -> (BTreeMap<u64, String>, BTreeMap<u64, String>) {
    let text = String::from_utf8(body.to_vec()).unwrap();
    let (mut deltas, mut dones) = (BTreeMap::new(), BTreeMap::new());
    for ev in text.split("\n\n").filter(|e| !e.trim().is_empty()) {
        let data = ev.lines().find_map(|l| l.strip_prefix("data: ")).unwrap();
        let v: Value = serde_json::from_str(data).unwrap();
        let ty = v["type"].as_str().unwrap();
        let ety = ev.lines().find_map(|l| l.strip_prefix("event: ")).unwrap();
        assert_eq!(ty, ety, "the event line matches the payload");
        let oi = v["output_index"].as_u64().unwrap_or(0);
        if ty == "response.output_text.delta" {
            deltas
                .entry(oi)
                .or_insert_with(String::new)
                .push_str(v["delta"].as_str().unwrap());
        } else if ty == "response.output_text.done" {
            dones.insert(oi, v["text"].as_str().unwrap().to_string());
        }
    }
    deltas.retain(|_, s: &mut String| !s.is_empty());
    (deltas, dones)
}

#[test]
fn responses_api_streams_are_restored_under_any_cutting() {
    for seed in 0..300u64 {
        let mut r = Rng::new(seed);
        let mut vault = Vault::new(tokenise::nonce(b"resp", seed, 0));
        let mut parts = Vec::new();
        let mut want = BTreeMap::new();
        for oi in 0..1 + r.below(2) as u64 {
            let (ph, plain) = reply_text(&mut r, &mut vault);
            parts.push((oi, fragments(&mut r, &ph), ph));
            want.insert(oi, plain);
        }
        let body = responses_stream(&mut r, &parts);
        let ctx = Ctx {
            vault: &vault,
            redact: None,
        };
        let whole = run_sse(&body, &[], &ctx);
        let (deltas, dones) = responses_view(&whole);
        let mut want_deltas = want.clone();
        want_deltas.retain(|_, s| !s.is_empty());
        assert_eq!(
            deltas,
            want_deltas,
            "seed {seed}\n{}",
            String::from_utf8_lossy(&whole)
        );
        for (oi, t) in &dones {
            assert_eq!(Some(t), want.get(oi), "seed {seed}");
        }
        let bytewise: Vec<usize> = (1..body.len()).collect();
        assert_eq!(
            run_sse(&body, &bytewise, &ctx),
            whole,
            "seed {seed} bytewise"
        );
        for _ in 0..10 {
            let mut cuts: Vec<usize> = (0..r.below(12)).map(|_| r.below(body.len() + 1)).collect();
            cuts.sort_unstable();
            assert_eq!(
                run_sse(&body, &cuts, &ctx),
                whole,
                "seed {seed} cuts {cuts:?}"
            );
        }
    }
}

#[test]
fn text_held_at_the_end_goes_out_in_an_added_event() {
    let mut vault = Vault::new([9; 16]);
    vault.tokenise("email", "a@b.io");
    let ctx = Ctx {
        vault: &vault,
        redact: None,
    };
    // Chat: the last fragment ends with a placeholder prefix; the finish event has none.
    let chat = "data: {\"id\":\"c\",\"created\":7,\"choices\":[{\"index\":0,\"delta\":{\"content\":\"bye EMAIL\"},\"finish_reason\":null}]}\n\n\
data: {\"id\":\"c\",\"created\":7,\"choices\":[{\"index\":0,\"delta\":{},\"finish_reason\":\"stop\"}]}\n\n\
data: [DONE]\n\n";
    let mut sse = SseRestorer::new();
    let mut out = Vec::new();
    sse.push(chat.as_bytes(), &ctx, &mut out);
    sse.finish(&ctx, &mut out);
    assert_eq!(sse.stats.added, 1);
    let out = String::from_utf8(out).unwrap();
    assert_eq!(
        out,
        "data: {\"id\":\"c\",\"created\":7,\"choices\":[{\"index\":0,\"delta\":{\"content\":\"bye \"},\"finish_reason\":null}]}\n\n\
data: {\"id\":\"c\",\"created\":7,\"choices\":[{\"index\":0,\"delta\":{\"content\":\"EMAIL\"},\"finish_reason\":null}]}\n\n\
data: {\"id\":\"c\",\"created\":7,\"choices\":[{\"index\":0,\"delta\":{},\"finish_reason\":\"stop\"}]}\n\n\
data: [DONE]\n\n"
    );
    // Responses API: the added event copies the last delta event.
    let resp = "event: response.output_text.delta\ndata: {\"type\":\"response.output_text.delta\",\"output_index\":0,\"content_index\":0,\"delta\":\"bye EMAIL_\"}\n\n\
event: response.output_text.done\ndata: {\"type\":\"response.output_text.done\",\"output_index\":0,\"content_index\":0,\"text\":\"bye EMAIL_\"}\n\n";
    let mut sse = SseRestorer::new();
    let mut out = Vec::new();
    sse.push(resp.as_bytes(), &ctx, &mut out);
    sse.finish(&ctx, &mut out);
    assert_eq!(sse.stats.added, 1);
    assert_eq!(
        String::from_utf8(out).unwrap(),
        "event: response.output_text.delta\ndata: {\"type\":\"response.output_text.delta\",\"output_index\":0,\"content_index\":0,\"delta\":\"bye \"}\n\n\
event: response.output_text.delta\ndata: {\"type\":\"response.output_text.delta\",\"output_index\":0,\"content_index\":0,\"delta\":\"EMAIL_\"}\n\n\
event: response.output_text.done\ndata: {\"type\":\"response.output_text.done\",\"output_index\":0,\"content_index\":0,\"text\":\"bye EMAIL_\"}\n\n"
    );
}

/// Smoke fuzzing: hostile bytes never panic the scanner, the tokeniser or the restorer.
#[test]
fn hostile_input_never_panics() {
    let (sc, dets) = scanner(&["email", "phone", "private_key", "iban"]);
    let wanted = [0u16, 1, 2, 3];
    let mut vault = Vault::new([7; 16]);
    let ph = vault.tokenise("email", "a@b.io").into_owned();
    let ctx = Ctx {
        vault: &vault,
        redact: Some(Redact::new(&sc, &wanted, &dets)),
    };
    let seed_stream = format!(
        "data: {{\"choices\":[{{\"index\":0,\"delta\":{{\"content\":\"x {ph} -----BEGIN RSA PRIVATE KEY-----\\nMII\"}}}}]}}\r\n\r\ndata: [DONE]\n\n"
    );
    let alphabet = b"{}[]\",:\\ \r\n\x00\xff\xc3\xa9datchoiesx-EMAIL_0123456789";
    let mut r = Rng::new(1);
    for _ in 0..3000 {
        let mut b = seed_stream.as_bytes().to_vec();
        for _ in 0..1 + r.below(6) {
            let i = r.below(b.len());
            match r.below(3) {
                0 => b[i] = *r.pick(alphabet),
                1 => b.insert(i, *r.pick(alphabet)),
                _ => {
                    b.remove(i);
                }
            }
        }
        let _ = json_strings::visit(&b, &mut |_: &Path<'_>, _: Leaf<'_>, _: Range<usize>| {});
        let mut v = Vault::new([1; 16]);
        let _ = tokenise::rewrite_request(&b, &sc, &[0, 1], &[2], &mut v);
        let cuts: Vec<usize> = (0..r.below(5)).map(|_| r.below(b.len() + 1)).collect();
        let mut cuts = cuts;
        cuts.sort_unstable();
        let _ = run_sse(&b, &cuts, &ctx);
        let _ = writ_plugin::stream::rewrite_reply_json(&b, &ctx);
    }
}

#[test]
fn private_key_blocks_are_never_partly_emitted() {
    let (sc, dets) = scanner(&["private_key", "email"]);
    let wanted = [0u16, 1];
    let vault = Vault::new([8; 16]);
    let ctx = Ctx {
        vault: &vault,
        redact: Some(Redact::new(&sc, &wanted, &dets)),
    };
    let body: String = (0..12)
        .map(|i| format!("MIIEowIBAAKCAQEA{i:02}xyzABCDEFGHIJKLMNOPQRSTUVWXYZabcdef\n"))
        .collect();
    let text = format!(
        "Here is the key:\n-----BEGIN RSA PRIVATE KEY-----\n{body}-----END RSA PRIVATE KEY-----\nand a cert -----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE----- done"
    );
    let mut red = Redacted::new();
    let whole = rewrite_text(&text, &ctx, &mut red).unwrap();
    assert!(
        whole.contains("[PRIVATE_KEY]") && !whole.contains("MIIEow"),
        "{whole}"
    );
    let mut ts = TextStream::default();
    let mut out = String::new();
    for ch in text.chars() {
        ts.push(&ch.to_string(), &ctx, false, &mut out, &mut red);
        assert!(
            !out.contains("MIIEow") && !out.contains("-----BEGIN RSA"),
            "{out}"
        );
    }
    ts.push("", &ctx, true, &mut out, &mut red);
    assert_eq!(out, whole);
}

#[test]
fn long_runs_without_whitespace_are_released_at_the_cap() {
    let (sc, dets) = scanner(&["email", "jwt", "private_key"]);
    let wanted = [0u16, 1, 2];
    let vault = Vault::new([6; 16]);
    let ctx = Ctx {
        vault: &vault,
        redact: Some(Redact::new(&sc, &wanted, &dets)),
    };
    let blob = "QUJD".repeat(5000);
    let mut ts = TextStream::default();
    let mut out = String::new();
    let mut red = Redacted::new();
    let mut pushed = 0;
    for piece in blob.as_bytes().chunks(7) {
        let piece = std::str::from_utf8(piece).unwrap();
        ts.push(piece, &ctx, false, &mut out, &mut red);
        pushed += piece.len();
        assert!(pushed - out.len() <= writ_plugin::stream::HOLD_CAP + 7);
    }
    ts.push("", &ctx, true, &mut out, &mut red);
    assert_eq!(out, blob);
}

/// Where a text streams in the upstream shapes no list names: a chat chunk's own field
/// (`choices[i].delta.audio.transcript`), a gateway's top-level field (`meta.note`),
/// Anthropic content blocks (`delta.text` by `index`), and `data:` lines that are not
/// JSON.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Debug)]
enum Carrier {
    Transcript(u64),
    Note,
    Block(u64),
    Raw,
}

/// An event stream carrying each carrier's fragments, in the upstream shape that carrier
/// belongs to. `style` 0: chat chunks (transcripts and notes interleaved); 1: Anthropic
/// blocks in order; 2: plain `data:` text.
fn carrier_stream(
    r: &mut Rng,
    style: usize,
    parts: &BTreeMap<Carrier, Vec<String>>,
    end: bool,
) -> Vec<u8> {
    let eol = *r.pick(&["\n", "\r\n"]);
    let mut out = Vec::new();
    let ev = |name: Option<&str>, v: &Value, out: &mut Vec<u8>| {
        if let Some(n) = name {
            out.extend_from_slice(format!("event: {n}{eol}").as_bytes());
        }
        out.extend_from_slice(
            format!("data: {}{eol}{eol}", serde_json::to_string(v).unwrap()).as_bytes(),
        );
    };
    match style {
        0 => {
            let mut queues: Vec<(Carrier, std::collections::VecDeque<String>)> = parts
                .iter()
                .map(|(k, v)| (*k, v.iter().cloned().collect()))
                .collect();
            while queues.iter().any(|(_, q)| !q.is_empty()) {
                let live: Vec<usize> = (0..queues.len())
                    .filter(|&i| !queues[i].1.is_empty())
                    .collect();
                let qi = *r.pick(&live);
                let frag = queues[qi].1.pop_front().unwrap();
                let v = match queues[qi].0 {
                    Carrier::Transcript(c) => {
                        json!({"id":"c1","object":"chat.completion.chunk","choices":[{"index":c,"delta":{"audio":{"id":"audio_1","transcript":frag}},"finish_reason":null}]})
                    }
                    _ => json!({"id":"c1","meta":{"note":frag,"seq_id":"s-1"}}),
                };
                ev(None, &v, &mut out);
            }
            if end {
                for c in 0..2 {
                    ev(
                        None,
                        &json!({"id":"c1","choices":[{"index":c,"delta":{},"finish_reason":"stop"}]}),
                        &mut out,
                    );
                }
                out.extend_from_slice(format!("data: [DONE]{eol}{eol}").as_bytes());
            }
        }
        1 => {
            ev(
                Some("message_start"),
                &json!({"type":"message_start","message":{"id":"msg_1","role":"assistant","content":[]}}),
                &mut out,
            );
            for (k, frags) in parts {
                let Carrier::Block(i) = k else { continue };
                ev(
                    Some("content_block_start"),
                    &json!({"type":"content_block_start","index":i,"content_block":{"type":"text","text":""}}),
                    &mut out,
                );
                for f in frags {
                    ev(
                        Some("content_block_delta"),
                        &json!({"type":"content_block_delta","index":i,"delta":{"type":"text_delta","text":f}}),
                        &mut out,
                    );
                }
                if end || r.chance(50) {
                    ev(
                        Some("content_block_stop"),
                        &json!({"type":"content_block_stop","index":i}),
                        &mut out,
                    );
                }
            }
            if end {
                ev(
                    Some("message_delta"),
                    &json!({"type":"message_delta","delta":{"stop_reason":"end_turn","stop_sequence":null},"usage":{"output_tokens":9}}),
                    &mut out,
                );
                ev(
                    Some("message_stop"),
                    &json!({"type":"message_stop"}),
                    &mut out,
                );
            }
        }
        _ => {
            for f in parts.get(&Carrier::Raw).into_iter().flatten() {
                for line in f.split('\n') {
                    out.extend_from_slice(format!("data: {line}{eol}").as_bytes());
                }
                out.extend_from_slice(eol.as_bytes());
            }
            if end {
                out.extend_from_slice(format!("data: [DONE]{eol}{eol}").as_bytes());
            }
        }
    }
    out
}

/// What a client of each shape reassembles, per carrier.
fn carrier_view(body: &[u8], style: usize) -> BTreeMap<Carrier, String> {
    let text = String::from_utf8(body.to_vec()).expect("output is UTF-8");
    let norm = text.replace("\r\n", "\n").replace('\r', "\n");
    let mut got: BTreeMap<Carrier, String> = BTreeMap::new();
    for ev in norm.split("\n\n") {
        let data: Vec<&str> = ev
            .lines()
            .filter_map(|l| l.strip_prefix("data: ").or(l.strip_prefix("data:")))
            .collect();
        if data.is_empty() {
            continue;
        }
        let payload = data.join("\n");
        if payload == "[DONE]" {
            continue;
        }
        if style == 2 {
            got.entry(Carrier::Raw).or_default().push_str(&payload);
            continue;
        }
        let v: Value = serde_json::from_str(&payload)
            .unwrap_or_else(|e| panic!("bad event {payload:?}: {e}\n{norm}"));
        for ch in v["choices"].as_array().into_iter().flatten() {
            if let Some(s) = ch["delta"]["audio"]["transcript"].as_str() {
                let c = ch["index"].as_u64().unwrap();
                got.entry(Carrier::Transcript(c)).or_default().push_str(s);
            }
        }
        if let Some(s) = v["meta"]["note"].as_str() {
            got.entry(Carrier::Note).or_default().push_str(s);
        }
        if v["type"] == "content_block_delta" {
            let i = v["index"].as_u64().unwrap();
            let s = v["delta"]["text"].as_str().unwrap();
            got.entry(Carrier::Block(i)).or_default().push_str(s);
        }
    }
    got.retain(|_, s| !s.is_empty());
    got
}

#[test]
fn every_sse_field_and_plain_data_is_reassembled_under_any_cutting() {
    let (sc, dets) = scanner(LEAK_DETECTORS);
    let wanted: Vec<u16> = (0..LEAK_DETECTORS.len() as u16).collect();
    let leaks: Vec<&str> = LEAKS
        .iter()
        .copied()
        .chain(["929-30-4053", "jane.doe@example.com"])
        // The prompt's own values come back restored; the rest are made up by the model.
        .filter(|l| !VALUES.iter().any(|(_, v)| v == l))
        .collect();
    let mut masked = 0;
    for seed in 0..120u64 {
        let mut r = Rng::new(seed);
        let mut vault = Vault::new(tokenise::nonce(format!("c-{seed}").as_bytes(), seed, 0));
        let style = r.below(3);
        let carriers: &[Carrier] = match style {
            0 => &[
                Carrier::Transcript(0),
                Carrier::Transcript(1),
                Carrier::Note,
            ],
            1 => &[Carrier::Block(0), Carrier::Block(1)],
            _ => &[Carrier::Raw],
        };
        let mut parts = BTreeMap::new();
        let mut texts = BTreeMap::new();
        for &c in carriers {
            if r.chance(25) && !parts.is_empty() {
                continue;
            }
            let (mut ph, _) = reply_text(&mut r, &mut vault);
            // A value the model makes up, never in the prompt: must not reach the client.
            for _ in 0..1 + r.below(2) {
                ph.push(' ');
                ph.push_str(r.word(&leaks));
                ph.push_str(r.word(&[" ", " ok", ".", ""]));
            }
            parts.insert(c, fragments(&mut r, &ph));
            texts.insert(c, ph);
        }
        let ctx = Ctx {
            vault: &vault,
            redact: Some(Redact::new(&sc, &wanted, &dets)),
        };
        let want: BTreeMap<Carrier, String> = texts
            .iter()
            .map(|(c, t)| {
                let mut red = Redacted::new();
                (
                    *c,
                    rewrite_text(t, &ctx, &mut red).unwrap_or_else(|| t.clone()),
                )
            })
            .filter(|(_, t)| !t.is_empty())
            .collect();
        let end = r.chance(80);
        let body = carrier_stream(&mut r, style, &parts, end);
        let whole = run_sse(&body, &[], &ctx);
        let got = carrier_view(&whole, style);
        assert_eq!(
            got,
            want,
            "seed {seed}\n{}",
            String::from_utf8_lossy(&whole)
        );
        let out = String::from_utf8_lossy(&whole);
        for leak in &leaks {
            // Values the detectors find on their own (the list has near-misses too).
            let alone = rewrite_text(&format!(" {leak} "), &ctx, &mut Redacted::new());
            if leak.contains('\n') || alone.is_none() {
                continue;
            }
            assert!(
                !out.contains(leak),
                "seed {seed}: {leak} reached the client\n{out}"
            );
        }
        masked += out.matches("[EMAIL]").count() + out.matches("[US_SSN]").count();
        assert_eq!(
            run_sse(&body, &(1..body.len()).collect::<Vec<_>>(), &ctx),
            whole,
            "seed {seed} bytewise"
        );
        if body.len() < 700 {
            for c in 1..body.len() {
                assert_eq!(run_sse(&body, &[c], &ctx), whole, "seed {seed} cut {c}");
            }
        }
        for _ in 0..10 {
            let mut cuts: Vec<usize> = (0..r.below(10)).map(|_| r.below(body.len() + 1)).collect();
            cuts.sort_unstable();
            assert_eq!(
                run_sse(&body, &cuts, &ctx),
                whole,
                "seed {seed} cuts {cuts:?}"
            );
        }
    }
    assert!(masked > 100, "the streams should carry leaks: {masked}");
}

#[test]
fn a_value_split_across_two_events_of_a_custom_field_never_reaches_the_client() {
    let (sc, dets) = scanner(&["email", "us_ssn"]);
    let vault = Vault::new([9; 16]);
    let ctx = Ctx {
        vault: &vault,
        redact: Some(Redact::new(&sc, &[0, 1], &dets)),
    };
    let body = "data: {\"type\":\"x.delta\",\"result\":{\"summary\":\"mail jane.doe@exa\"}}\n\n\
                data: {\"type\":\"x.delta\",\"result\":{\"summary\":\"mple.com, ssn 929-30-\"}}\n\n\
                data: {\"type\":\"x.delta\",\"result\":{\"summary\":\"4053\"}}\n\n\
                data: jane%40example.com is 929-30-\n\n\
                data: 4053\n\n\
                data: [DONE]\n\n";
    let out = String::from_utf8(run_sse(body.as_bytes(), &[], &ctx)).unwrap();
    for leak in ["jane", "exa", "mple.com", "929", "4053", "%40example"] {
        assert!(!out.contains(leak), "{leak} leaked:\n{out}");
    }
    let summary: String = out
        .split("\n\n")
        .filter_map(|e| e.strip_prefix("data: "))
        .filter_map(|p| serde_json::from_str::<Value>(p).ok())
        .filter_map(|v| v["result"]["summary"].as_str().map(String::from))
        .collect();
    assert_eq!(summary, "mail [EMAIL], ssn [US_SSN]");
    assert!(out.contains("data: [EMAIL] is [US_SSN]"), "{out}");
}

/// Two true values per built-in from the labelled corpus, as the corpus shows them (with
/// their context keyword where the detector needs one).
fn corpus_leaks() -> Vec<String> {
    let dir = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/data/detectors");
    let mut out = Vec::new();
    for b in writ_plugin::detect::builtins() {
        let data = std::fs::read_to_string(dir.join(format!("{}.jsonl", b.name))).unwrap();
        let rows = data
            .lines()
            .map(|l| serde_json::from_str::<Value>(l).unwrap())
            .filter(|r| r["label"] == "match")
            .take(2);
        for r in rows {
            let shown = r.get("shown").unwrap_or(&r["value"]);
            out.push(shown.as_str().unwrap().to_string());
        }
    }
    out
}

/// Every built-in, keyword-gated numbers and service-account files included: chunked
/// redaction equals whole redaction, and never emits what the whole reply masks.
#[test]
fn every_builtin_streams_as_it_redacts_whole() {
    let names: Vec<&str> = writ_plugin::detect::builtins()
        .iter()
        .map(|b| b.name)
        .collect();
    let (sc, dets) = scanner(&names);
    let wanted: Vec<u16> = (0..names.len() as u16).collect();
    let vault = Vault::new([5; 16]);
    let ctx = Ctx {
        vault: &vault,
        redact: Some(Redact::new(&sc, &wanted, &dets)),
    };
    let leaks = corpus_leaks();
    let leaks: Vec<&str> = leaks.iter().map(String::as_str).collect();
    let words = [
        "see", "the", " ", "\n", "and", ",", "x", "12", "é", "NHS", "password",
    ];
    let mut masked = 0;
    for seed in 0..400u64 {
        let mut r = Rng::new(seed);
        let mut text = String::new();
        for _ in 0..r.below(8) {
            match r.below(4) {
                0 | 1 => text.push_str(leaks[r.below(leaks.len())]),
                _ => text.push_str(r.word(&words)),
            }
            if r.chance(70) {
                text.push(' ');
            }
        }
        let mut red_whole = Redacted::new();
        let whole = rewrite_text(&text, &ctx, &mut red_whole).unwrap_or_else(|| text.clone());
        masked += red_whole.values().sum::<u32>();
        for _ in 0..2 {
            let mut ts = TextStream::default();
            let mut out = String::new();
            let mut red = Redacted::new();
            for f in fragments(&mut r, &text) {
                ts.push(&f, &ctx, false, &mut out, &mut red);
                assert!(
                    whole.starts_with(&out),
                    "seed {seed}: ahead of the whole reply"
                );
            }
            ts.push("", &ctx, true, &mut out, &mut red);
            assert_eq!(out, whole, "seed {seed} text {text:?}");
            assert_eq!(red, red_whole, "seed {seed}");
        }
    }
    assert!(masked > 300, "the texts should leak values: {masked}");
}

/// The Anthropic Messages stream (`content_block_delta` with `text_delta` in a text block,
/// then `input_json_delta` in a `tool_use` block) or the Responses stream
/// (`response.output_text.delta`, then `response.function_call_arguments.delta` of a
/// function call item, each with its `.done` event), the text and the tool arguments
/// each cut into the given fragments.
fn api_tool_stream(anthropic: bool, text: &[String], args: &[String], usage: bool) -> Vec<u8> {
    let mut out = Vec::new();
    let mut ev = |ty: &str, v: Value| {
        let mut v = v;
        v["type"] = json!(ty);
        out.extend_from_slice(format!("event: {ty}\ndata: {v}\n\n").as_bytes());
    };
    if anthropic {
        ev(
            "message_start",
            json!({"message": {"id": "msg_1", "role": "assistant", "content": [],
            "usage": {"input_tokens": 9, "output_tokens": 1}}}),
        );
        ev(
            "content_block_start",
            json!({"index": 0, "content_block": {"type": "text", "text": ""}}),
        );
        for f in text {
            ev(
                "content_block_delta",
                json!({"index": 0, "delta": {"type": "text_delta", "text": f}}),
            );
        }
        ev("content_block_stop", json!({"index": 0}));
        ev(
            "content_block_start",
            json!({"index": 1, "content_block": {"type": "tool_use",
            "id": "toolu_1", "name": "lookup_order", "input": {}}}),
        );
        for f in args {
            ev(
                "content_block_delta",
                json!({"index": 1, "delta": {"type": "input_json_delta", "partial_json": f}}),
            );
        }
        ev("content_block_stop", json!({"index": 1}));
        if usage {
            ev(
                "message_delta",
                json!({"delta": {"stop_reason": "tool_use"}, "usage": {"output_tokens": 7}}),
            );
        }
        ev("message_stop", json!({}));
    } else {
        ev(
            "response.output_item.added",
            json!({"output_index": 0, "item": {"type": "message", "id": "msg_1"}}),
        );
        for f in text {
            ev(
                "response.output_text.delta",
                json!({"item_id": "msg_1", "output_index": 0, "content_index": 0, "delta": f}),
            );
        }
        ev(
            "response.output_text.done",
            json!({"item_id": "msg_1", "output_index": 0, "content_index": 0, "text": text.concat()}),
        );
        ev(
            "response.output_item.added",
            json!({"output_index": 1, "item": {"type": "function_call",
            "id": "fc_1", "call_id": "call_1", "name": "lookup_order", "arguments": ""}}),
        );
        for f in args {
            ev(
                "response.function_call_arguments.delta",
                json!({"item_id": "fc_1", "output_index": 1, "delta": f}),
            );
        }
        ev(
            "response.function_call_arguments.done",
            json!({"item_id": "fc_1", "output_index": 1, "arguments": args.concat()}),
        );
        if usage {
            ev(
                "response.completed",
                json!({"response": {"id": "resp_1", "usage": {"input_tokens": 9, "output_tokens": 7}}}),
            );
        }
    }
    out
}

/// What a client of either API reassembles: (streamed text, streamed tool arguments, the
/// `.done` events' texts). Every event must be a whole `event:` + `data:` pair whose
/// line names the payload's type.
fn api_tool_view(body: &[u8]) -> (String, String, Vec<String>) {
    let text = String::from_utf8(body.to_vec()).unwrap();
    let (mut t, mut a, mut done) = (String::new(), String::new(), Vec::new());
    for ev in text.split("\n\n").filter(|e| !e.trim().is_empty()) {
        let ety = ev.lines().find_map(|l| l.strip_prefix("event: ")).unwrap();
        let data = ev.lines().find_map(|l| l.strip_prefix("data: ")).unwrap();
        let v: Value = serde_json::from_str(data).unwrap();
        assert_eq!(v["type"], ety, "the event line matches the payload: {ev}");
        match ety {
            "content_block_delta" => {
                t.push_str(v["delta"]["text"].as_str().unwrap_or_default());
                a.push_str(v["delta"]["partial_json"].as_str().unwrap_or_default());
            }
            "response.output_text.delta" => t.push_str(v["delta"].as_str().unwrap()),
            "response.function_call_arguments.delta" => a.push_str(v["delta"].as_str().unwrap()),
            "response.output_text.done" => done.push(v["text"].as_str().unwrap().to_string()),
            "response.function_call_arguments.done" => {
                done.push(v["arguments"].as_str().unwrap().to_string());
            }
            _ => {}
        }
    }
    (t, a, done)
}

/// Issue 17: Anthropic `text_delta` / `input_json_delta` and Responses `output_text.delta`
/// / function-call argument deltas, with placeholders to restore and leaked values to
/// redact, give the client the same text however the stream is cut — one byte per chunk,
/// at every single byte, at random — as the whole reply rewritten at once; what has gone
/// out is at every moment a prefix of the final text (no part of a leaked value ahead of
/// the part that reveals it); the stream's usage is read under every cut.
#[test]
fn anthropic_and_responses_tool_streams_survive_any_cutting() {
    let (sc, dets) = scanner(&["email", "phone", "credit_card"]);
    let wanted: Vec<u16> = vec![0, 1, 2];
    let leaks = ["leak@example.net", "+1 415 555 0100", "4111 1111 1111 1111"];
    let mut checked = 0;
    for seed in 0..100u64 {
        let mut r = Rng::new(seed);
        let anthropic = seed % 2 == 0;
        let mut vault = Vault::new(tokenise::nonce(b"apis", seed, 0));
        let (mut text_ph, _) = reply_text(&mut r, &mut vault);
        if r.chance(60) {
            text_ph.push_str(&format!(" {} ", r.word(&leaks)));
        }
        let (arg_ph, _) = reply_text(&mut r, &mut vault);
        // Arguments are JSON text: a value right after an escape (`\u0001ada@…`) would be
        // masked together with the escape's letters and break the JSON, in every API's
        // argument deltas alike (chat's included); this test keeps to text without escapes.
        let arg_ph: String = arg_ph
            .chars()
            .filter(|c| !c.is_control() && *c != '"' && *c != '\\')
            .collect();
        let leak = if r.chance(50) { r.word(&leaks) } else { "" };
        let args_ph = json!({"query": format!("{arg_ph} {leak}")}).to_string();
        let ctx = Ctx {
            vault: &vault,
            redact: Some(Redact::new(&sc, &wanted, &dets)),
        };
        let mut red = Redacted::new();
        let want_text = rewrite_text(&text_ph, &ctx, &mut red).unwrap_or(text_ph.clone());
        let want_args = rewrite_text(&args_ph, &ctx, &mut red).unwrap_or(args_ph.clone());
        let usage = r.chance(80);
        let body = api_tool_stream(
            anthropic,
            &fragments(&mut r, &text_ph),
            &fragments(&mut r, &args_ph),
            usage,
        );
        let whole = run_sse(&body, &[], &ctx);
        let (t, a, done) = api_tool_view(&whole);
        assert_eq!(
            (&t, &a),
            (&want_text, &want_args),
            "seed {seed}\n{}",
            String::from_utf8_lossy(&whole)
        );
        if !anthropic {
            assert_eq!(done, [want_text.clone(), want_args.clone()], "seed {seed}");
        }
        // The restored arguments are still the JSON the model wrote, with the values back.
        let parsed: Value = serde_json::from_str(&a)
            .unwrap_or_else(|e| panic!("seed {seed}: {e}: {a:?} from {args_ph:?}"));
        assert!(parsed["query"].is_string(), "seed {seed}: {a}");
        // One byte per chunk: same bytes, and every moment's output a prefix of the end.
        let mut sse = SseRestorer::new();
        let mut out = Vec::new();
        let (mut seen, mut t_now, mut a_now) = (0, String::new(), String::new());
        for b in body.chunks(1) {
            sse.push(b, &ctx, &mut out);
            if out.len() > seen {
                // Output only ever ends at an event boundary: read the new events.
                let (t, a, _) = api_tool_view(&out[seen..]);
                seen = out.len();
                t_now.push_str(&t);
                a_now.push_str(&a);
                assert!(
                    want_text.starts_with(&t_now),
                    "seed {seed}: text ahead: {t_now:?}"
                );
                assert!(
                    want_args.starts_with(&a_now),
                    "seed {seed}: args ahead: {a_now:?}"
                );
            }
        }
        sse.finish(&ctx, &mut out);
        assert_eq!(out, whole, "seed {seed} bytewise");
        // Every single cut point (on small streams; the random cuts cover the rest).
        if body.len() < 2500 {
            for c in 1..body.len() {
                assert_eq!(run_sse(&body, &[c], &ctx), whole, "seed {seed} cut {c}");
            }
        }
        for _ in 0..10 {
            let mut cuts: Vec<usize> = (0..r.below(12)).map(|_| r.below(body.len() + 1)).collect();
            cuts.sort_unstable();
            assert_eq!(
                run_sse(&body, &cuts, &ctx),
                whole,
                "seed {seed} cuts {cuts:?}"
            );
        }
        // Usage, from `message_start` + `message_delta` or `response.completed`, however cut.
        for size in [1, 3, 17, body.len()] {
            let mut u = writ_plugin::usage::SseUsage::new();
            body.chunks(size).for_each(|c| u.push(c));
            let got = u.finish().map(|u| (u.prompt_tokens, u.completion_tokens));
            let want = match (anthropic, usage) {
                (_, true) => Some((9, 7)),
                (true, false) => Some((9, 1)),
                (false, false) => None,
            };
            assert_eq!(got, want, "seed {seed} usage, chunks of {size}");
        }
        checked += 1;
    }
    assert_eq!(checked, 100);
}

/// The restorer remembers the short keys and metadata strings that came out unchanged
/// (they repeat in every event) and skips them; a repeated string that does change (a
/// leaked value, a placeholder) must still be rewritten in every event, and the counts
/// must count every event.
#[test]
fn repeated_metadata_is_rewritten_in_every_event() {
    let (sc, dets) = scanner(&["email", "phone", "iban"]);
    let wanted = [0u16, 1, 2];
    let mut vault = Vault::new([9; 16]);
    let ph = vault.tokenise("email", "mine@example.com").into_owned();
    let ctx = Ctx {
        vault: &vault,
        redact: Some(Redact::new(&sc, &wanted, &dets)),
    };
    let event = format!(
        "data: {{\"id\":\"c1\",\"object\":\"chat.completion.chunk\",\"user_id\":\"leak@corp.example\",\"{ph}\":1,\"choices\":[{{\"index\":0,\"delta\":{{\"content\":\"ab\"}}}}]}}\n\n"
    );
    let body = format!("{}data: [DONE]\n\n", event.repeat(40));
    let whole = run_sse(body.as_bytes(), &[], &ctx);
    let cut: Vec<usize> = (7..body.len()).step_by(7).collect();
    assert_eq!(run_sse(body.as_bytes(), &cut, &ctx), whole);
    let text = String::from_utf8(whole).unwrap();
    assert_eq!(text.matches("\"user_id\":\"[EMAIL]\"").count(), 40);
    assert_eq!(text.matches("\"mine@example.com\":1").count(), 40);
    // 40 events, and the chat chunk added at `[DONE]` for the held text copies `object`.
    assert_eq!(
        text.matches("\"object\":\"chat.completion.chunk\"").count(),
        41
    );
    assert!(!text.contains("leak@corp.example") && !text.contains(&ph));
    let (texts, dones) = client_view(text.as_bytes());
    assert_eq!(dones, 1);
    assert_eq!(
        texts.get(&Slot::Content(0)).map(String::as_str),
        Some("ab".repeat(40).as_str())
    );
    let mut sse = SseRestorer::new();
    let mut out = Vec::new();
    sse.push(body.as_bytes(), &ctx, &mut out);
    sse.finish(&ctx, &mut out);
    assert_eq!(sse.redacted().get(&0), Some(&40));
}

/// The chat chunk the restorer adds for held text repeats the latest top-level fields
/// (`id`, `model`, `system_fingerprint`, …): it must repeat them as the client saw them,
/// redacted and restored, not as the upstream sent them.
#[test]
fn the_added_event_repeats_top_level_fields_as_rewritten() {
    let (sc, dets) = scanner(&["email", "phone", "iban"]);
    let wanted = [0u16, 1, 2];
    let vault = Vault::new([9; 16]);
    let ctx = Ctx {
        vault: &vault,
        redact: Some(Redact::new(&sc, &wanted, &dets)),
    };
    // The last content ends in text that may be the start of a value, so it is held
    // and released in an added chunk at `[DONE]`.
    let body = "data: {\"id\":\"c1\",\"model\":\"m\",\"system_fingerprint\":\"leak@corp.example\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"write to bob\"}}]}\n\ndata: [DONE]\n\n";
    let whole = run_sse(body.as_bytes(), &[], &ctx);
    let text = String::from_utf8(whole).unwrap();
    assert!(
        text.matches("\"system_fingerprint\":").count() == 2,
        "the test needs the added chunk: {text}"
    );
    assert!(!text.contains("leak@corp.example"), "{text}");
    assert_eq!(
        text.matches("\"system_fingerprint\":\"[EMAIL]\"").count(),
        2,
        "{text}"
    );
}
