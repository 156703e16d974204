//! Fuzz targets for the engine, as library functions: each takes arbitrary bytes, runs one
//! component on them and panics when an oracle fails (a panic of the component itself is
//! a finding too). The `fuzz/` crate (outside the workspace) drives them with AFL++; the
//! `smoke` tests below run each on its seed corpus plus a few thousand mutations from a
//! seeded generator under plain `cargo test`, so no target silently stops compiling or
//! starts failing.
//!
//! Built only for tests and with the `fuzzing` feature, so none of it reaches the engine
//! wasm or the crate's normal API.
//!
//! | target | oracles |
//! |---|---|
//! | [`json_strings`] | no panic; accepts exactly what `serde_json` accepts; the identity rewrite returns the input; any rewrite of valid JSON is valid JSON with the same structure |
//! | [`sse`] | no panic; the reply fed whole and fed in arbitrary chunks (down to one byte) gives identical bytes and counts; a JSON reply rewrite of valid JSON is valid JSON |
//! | [`detectors`] | no panic; matches sorted, non-overlapping, in bounds and on char boundaries; `any` agrees with `scan`; `settled_len` in bounds, on a char boundary |
//!
//! The request path needs a compiled policy, so its target lives in the compiler
//! (`writ_compiler::fuzz::request`) and calls [`native_exchange`] here.

#![allow(
    clippy::panic,
    reason = "a fuzz target reports a failed oracle by panicking"
)]

use std::sync::OnceLock;

use serde_json::Value as Json;

use crate::detect::{self, Match, Scanner};
use crate::eval::{self, Engine, Facts, Transforms, Verdict};
use crate::ir::{self, Phase};
use crate::json_strings::{self, Leaf, Path, Slot};
use crate::request::{self, BodyError, Request};
use crate::stream::{self, BodyAction, Ctx, Redact, SseRestorer};
use crate::tokenise::{self, Vault};
use crate::wire::Reply;

// ---------------------------------------------------------------------------------------
// The generator behind every smoke test.

/// xorshift64*: a tiny deterministic generator, so every smoke failure is reproducible
/// from its seed without an RNG dependency.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    /// A generator for `seed` (any value, zero included).
    pub fn new(seed: u64) -> Rng {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// A number in `0..n` (0 when `n` is 0).
    pub fn below(&mut self, n: usize) -> usize {
        if n == 0 {
            return 0;
        }
        (self.next_u64() % n as u64) as usize
    }
}

/// One mutant of a seed, as a fuzzer would make it: one to four byte flips, insertions of
/// dictionary tokens, deletions, duplications, splices with another seed, truncations.
/// Mutating bytes (not grammar) is deliberate: the targets must survive any input.
pub fn mutate(rng: &mut Rng, seeds: &[Vec<u8>], dict: &[&[u8]]) -> Vec<u8> {
    let mut out = seeds
        .get(rng.below(seeds.len()))
        .cloned()
        .unwrap_or_default();
    for _ in 0..=rng.below(4) {
        let at = rng.below(out.len() + 1);
        match rng.below(8) {
            0 => {
                if let Some(b) = out.get_mut(at) {
                    *b ^= 1 << rng.below(8);
                }
            }
            1 => out.insert(at.min(out.len()), rng.below(256) as u8),
            2 | 3 => {
                if let Some(tok) = dict.get(rng.below(dict.len())) {
                    let at = at.min(out.len());
                    out.splice(at..at, tok.iter().copied());
                }
            }
            4 => {
                let end = (at + 1 + rng.below(16)).min(out.len());
                if at < end {
                    out.drain(at..end);
                }
            }
            5 => {
                let end = (at + 1 + rng.below(32)).min(out.len());
                if let Some(part) = out.get(at..end).map(<[u8]>::to_vec) {
                    out.splice(at..at, part);
                }
            }
            6 => {
                if let Some(other) = seeds.get(rng.below(seeds.len())) {
                    let from = rng.below(other.len() + 1);
                    let tail = other.get(from..).unwrap_or_default();
                    out.truncate(at);
                    out.extend_from_slice(tail);
                }
            }
            _ => out.truncate(at),
        }
    }
    out
}

/// The seed corpus of `target` as committed in `fuzz/corpus/<target>/` (regression inputs
/// included), sorted by file name; empty when the directory is absent (a packaged crate).
pub fn corpus(target: &str) -> Vec<Vec<u8>> {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../fuzz/corpus")
        .join(target);
    let mut files: Vec<_> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.is_file())
        .collect();
    files.sort();
    files.iter().filter_map(|p| std::fs::read(p).ok()).collect()
}

/// Runs `target` on every seed, then on `iterations` mutants made by a generator seeded
/// with `seed`: the bounded, deterministic run behind each `smoke()`. The environment
/// variable `WRIT_FUZZ_ITERATIONS` replaces `iterations`, for a longer run without AFL.
pub fn run_smoke(
    target: &dyn Fn(&[u8]),
    seeds: &[Vec<u8>],
    dict: &[&[u8]],
    iterations: usize,
    seed: u64,
) {
    for s in seeds {
        target(s);
    }
    let iterations = std::env::var("WRIT_FUZZ_ITERATIONS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(iterations);
    let mut rng = Rng::new(seed);
    for _ in 0..iterations {
        let input = mutate(&mut rng, seeds, dict);
        target(&input);
    }
}

/// Seeds given in code, plus the committed corpus of `target`.
fn seeds_with_corpus(target: &str, inline: &[&[u8]]) -> Vec<Vec<u8>> {
    let mut seeds: Vec<Vec<u8>> = inline.iter().map(|s| s.to_vec()).collect();
    seeds.extend(corpus(target));
    seeds
}

// ---------------------------------------------------------------------------------------
// Shared fixtures.

/// A policy detector list with every built-in, in the registry's order, so detector `i`
/// is built-in `i`.
pub fn builtin_detectors() -> &'static [ir::Detector] {
    static DETECTORS: OnceLock<Vec<ir::Detector>> = OnceLock::new();
    DETECTORS.get_or_init(|| {
        detect::builtins()
            .iter()
            .map(|b| ir::Detector {
                name: b.name.to_string(),
                class: b.class,
                kind: ir::DetectorKind::Builtin(b.name.to_string()),
            })
            .collect()
    })
}

/// The scanner over [`builtin_detectors`], built once per process.
fn builtin_scanner() -> Option<&'static Scanner> {
    static SCANNER: OnceLock<Option<Scanner>> = OnceLock::new();
    SCANNER
        .get_or_init(|| Scanner::new(builtin_detectors()).ok())
        .as_ref()
}

// ---------------------------------------------------------------------------------------
// Target: the JSON string rewriter.

/// Every string of `body` (values and keys) with its span, in document order.
fn string_spans(body: &[u8]) -> Vec<(std::ops::Range<usize>, String)> {
    struct Spans(Vec<(std::ops::Range<usize>, String)>);
    impl<'a> json_strings::Visitor<'a> for Spans {
        fn leaf(&mut self, _: &Path<'a>, leaf: Leaf<'_>, span: std::ops::Range<usize>) {
            if let Leaf::Str(s) = leaf {
                self.0.push((span, s.to_string()));
            }
        }
        fn key(&mut self, _: &Path<'a>, key: &str, span: std::ops::Range<usize>) {
            self.0.push((span, key.to_string()));
        }
    }
    let mut v = Spans(Vec::new());
    match json_strings::visit(body, &mut v) {
        Ok(()) => v.0,
        Err(_) => Vec::new(),
    }
}

/// Applies `f` to every string value of a DOM (keys untouched).
fn map_values(v: &mut Json, f: &dyn Fn(&str) -> String) {
    match v {
        Json::String(s) => *s = f(s),
        Json::Array(a) => a.iter_mut().for_each(|x| map_values(x, f)),
        Json::Object(m) => m.values_mut().for_each(|x| map_values(x, f)),
        _ => {}
    }
}

/// The change the rewriting oracle applies: every character class that needs escaping.
fn change(s: &str) -> String {
    format!("<{s}\"\\\n\u{1}é\u{2028}>")
}

/// Fuzz target for [`json_strings`]: see the module table for its oracles.
pub fn json_strings(data: &[u8]) {
    let dom = serde_json::from_slice::<Json>(data);
    let scanned = json_strings::visit(data, &mut |_: &Path<'_>, _: Leaf<'_>, _| {});
    // `serde_json` also refuses numbers outside f64 (`1e999`), which is a limit of its
    // number type, not of the grammar: the scanner accepts them, and the filter parses
    // every request body with `serde_json` first, so such a body is answered 400 there.
    if dom
        .as_ref()
        .is_err_and(|e| e.to_string().starts_with("number out of range"))
    {
        return;
    }
    assert_eq!(
        dom.is_ok(),
        scanned.is_ok(),
        "json_strings and serde_json disagree on validity: serde {:?}, scanner {:?}",
        dom.as_ref().err().map(ToString::to_string),
        scanned.as_ref().err()
    );
    let Ok(dom) = dom else {
        // Invalid input: every entry point must refuse it without panicking.
        assert!(json_strings::rewrite_strings(data, |_, s| Some(change(s))).is_err());
        return;
    };

    // Identity: nothing changes, so the caller keeps the original body.
    let same = json_strings::rewrite_strings_and_keys(data, |_, s, _| Some(s.to_string()));
    assert_eq!(same, Ok(None), "identity rewrite changed the body");

    // Re-encoding every string (values and keys) as itself gives the same document.
    let spans = string_spans(data);
    let reencoded = json_strings::splice(data, &spans);
    let back: Json = serde_json::from_slice(&reencoded)
        .unwrap_or_else(|e| panic!("re-encoded body is not JSON: {e}"));
    assert_eq!(back, dom, "re-encoding the strings changed the document");

    // A real rewrite of every value keeps the structure and is valid JSON.
    let new = json_strings::rewrite_strings_and_keys(data, |_, s, slot| match slot {
        Slot::Value => Some(change(s)),
        Slot::Key => None,
    });
    let mut expected = dom;
    map_values(&mut expected, &change);
    match new {
        Ok(Some(body)) => {
            let got: Json = serde_json::from_slice(&body)
                .unwrap_or_else(|e| panic!("rewritten body is not JSON: {e}"));
            assert_eq!(got, expected, "rewrite does not match the DOM rewrite");
        }
        Ok(None) => assert_eq!(
            serde_json::from_slice::<Json>(data).ok(),
            Some(expected),
            "rewrite reported no change but the DOM has strings"
        ),
        Err(e) => panic!("valid JSON refused by the rewriter: {e}"),
    }
}

/// Seeds for [`json_strings`] given in code.
const JSON_SEEDS: &[&[u8]] = &[
    br#"{"model":"gpt-4o","messages":[{"role":"user","content":"hi \u00e9 \ud83e\udd80"}]}"#,
    br#"[1,-0.5e+3,true,false,null,"a\"b\\c\/\b\f\n\r\t",{},[],{"":""}]"#,
    b" \"plain\" ",
    b"{\"a\":{\"a\":{\"a\":[[[[\"deep\"]]]]}}}",
];

/// Tokens a fuzzer is unlikely to guess byte by byte.
const JSON_DICT: &[&[u8]] = &[
    b"\\u0000",
    b"\\ud800",
    b"\\udc00",
    b"\\ud83e\\udd80",
    b"\"",
    b"\\",
    b"{",
    b"}",
    b"[",
    b"]",
    b":",
    b",",
    b"1e999",
    b"-0",
    b"true",
    b"null",
    b"\xff",
    b"\xc3\xa9",
    b"\xed\xa0\x80",
    b"[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[",
    b"\t",
    b"\x00",
];

/// A bounded, deterministic run of [`json_strings`] for `cargo test`.
pub fn json_strings_smoke() {
    let seeds = seeds_with_corpus("json_strings", JSON_SEEDS);
    run_smoke(&json_strings, &seeds, JSON_DICT, 4000, 0x15_0a);
}

// ---------------------------------------------------------------------------------------
// Target: the SSE restorer and redactor.

/// The values the [`sse`] target's vault holds, by detector.
const VAULT_VALUES: &[(&str, &str)] = &[
    ("email", "jane@example.com"),
    ("phone", "+14155550100"),
    ("credit_card", "4111 1111 1111 1111"),
];

/// Fuzz target for the reply rewriting of [`stream`]. Byte 0 chooses the set-up (bit 0:
/// response redaction of every built-in; bit 1: chunks of one byte; bits 2-7: the largest
/// chunk), byte 1 seeds the cut points, the rest is the reply, where bytes `0x01`-`0x03`
/// stand for the vault's three placeholders so a fuzzer can place them.
pub fn sse(data: &[u8]) {
    let Some(scanner) = builtin_scanner() else {
        return;
    };
    let (flags, cut_seed, raw) = match data {
        [f, c, rest @ ..] => (*f, *c, rest),
        _ => (0, 0, data),
    };
    let mut vault = Vault::new([7; 16]);
    let placeholders: Vec<String> = VAULT_VALUES
        .iter()
        .map(|(d, v)| vault.tokenise(d, v).into_owned())
        .collect();
    let mut reply = Vec::with_capacity(raw.len() + 16);
    for &b in raw {
        match placeholders.get(usize::from(b).wrapping_sub(1)) {
            Some(p) if b != 0 => reply.extend_from_slice(p.as_bytes()),
            _ => reply.push(b),
        }
    }
    let all: Vec<u16> = (0..builtin_detectors().len() as u16).collect();
    let ctx = Ctx {
        vault: &vault,
        redact: (flags & 1 == 1).then(|| Redact::new(scanner, &all, builtin_detectors())),
    };

    let mut whole = SseRestorer::new();
    let mut expected = Vec::new();
    whole.push(&reply, &ctx, &mut expected);
    whole.finish(&ctx, &mut expected);

    let mut rng = Rng::new(u64::from(cut_seed));
    let max_chunk = usize::from(flags >> 2) + 1;
    let mut chunked = SseRestorer::new();
    let mut got = Vec::new();
    let mut at = 0usize;
    while at < reply.len() {
        let len = if flags & 2 == 2 {
            1
        } else {
            1 + rng.below(max_chunk)
        };
        let end = (at + len).min(reply.len());
        chunked.push(reply.get(at..end).unwrap_or_default(), &ctx, &mut got);
        at = end;
    }
    chunked.finish(&ctx, &mut got);
    assert!(
        got == expected,
        "chunked output differs from whole output:\nwhole:   {:?}\nchunked: {:?}",
        String::from_utf8_lossy(&expected),
        String::from_utf8_lossy(&got)
    );
    assert_eq!(
        whole.redacted(),
        chunked.redacted(),
        "redaction counts differ"
    );

    // The same bytes as a JSON reply.
    let valid = serde_json::from_slice::<Json>(&reply).is_ok();
    match stream::rewrite_reply_json(&reply, &ctx) {
        Ok(r) => {
            if let Some(body) = r.body {
                assert!(
                    serde_json::from_slice::<Json>(&body).is_ok(),
                    "a JSON reply rewrite is not JSON"
                );
            }
        }
        Err(_) => assert!(!valid, "valid JSON reply refused"),
    }
}

/// Seeds for [`sse`] given in code.
const SSE_SEEDS: &[&[u8]] = &[
    b"\x01\x05data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"to \x01 now\"}}]}\n\ndata: [DONE]\n\n",
    b"\x00\x09data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"EMAIL_\"}}]}\r\n\r\ndata: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"x\"},\"finish_reason\":\"stop\"}]}\r\n\r\n",
    b"\x03\x11event: response.output_text.delta\ndata: {\"type\":\"response.output_text.delta\",\"output_index\":0,\"delta\":\"card 4111 1111\"}\n\nevent: response.output_text.delta\ndata: {\"type\":\"response.output_text.delta\",\"output_index\":0,\"delta\":\" 1111 1111 and \x02\"}\n\n",
    b"\x01\x00data: plain text with jane@example.com\n\n: comment\n\ndata: {\"content\":\"\x03\"}",
];

/// Tokens a fuzzer is unlikely to guess byte by byte.
const SSE_DICT: &[&[u8]] = &[
    b"data: ",
    b"data:",
    b"event: ",
    b"\n\n",
    b"\r\n",
    b"\r",
    b"\x01",
    b"\x02",
    b"\x03",
    b"[DONE]",
    b"{\"choices\":[{\"index\":0,\"delta\":{\"content\":\"",
    b"\"}}]}",
    b"\"finish_reason\":\"stop\"",
    b"{\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"text\":\"",
    b"{\"type\":\"content_block_stop\",\"index\":0}",
    b"\"tool_calls\":[{\"index\":0,\"function\":{\"arguments\":\"",
    b"4111 1111 1111 1111",
    b"a@b.io",
    b"-----BEGIN RSA PRIVATE KEY-----\n",
    b"-----END RSA PRIVATE KEY-----",
    b"EMAIL_",
    b"\xef\xbb\xbf",
    b"\\u00",
    b" ",
];

/// A bounded, deterministic run of [`sse`] for `cargo test`.
pub fn sse_smoke() {
    let seeds = seeds_with_corpus("sse", SSE_SEEDS);
    run_smoke(&sse, &seeds, SSE_DICT, 2000, 0x55e);
}

// ---------------------------------------------------------------------------------------
// Target: the detectors.

/// Checks the invariants of one scan result over `text`.
fn check_matches(text: &str, matches: &[Match], what: &str) {
    let mut prev_end = 0usize;
    for m in matches {
        assert!(
            m.start < m.end && m.end <= text.len(),
            "{what}: match {m:?} out of bounds (len {})",
            text.len()
        );
        assert!(
            text.is_char_boundary(m.start) && text.is_char_boundary(m.end),
            "{what}: match {m:?} not on char boundaries"
        );
        assert!(
            m.start >= prev_end,
            "{what}: matches overlap or are unsorted: {matches:?}"
        );
        prev_end = m.end;
    }
}

/// Fuzz target for [`detect`]: every built-in together and each alone, on the input as
/// text (invalid UTF-8 replaced), plus every validator on it.
pub fn detectors(data: &[u8]) {
    let Some(scanner) = builtin_scanner() else {
        return;
    };
    let text = String::from_utf8_lossy(data);
    let all: Vec<u16> = (0..builtin_detectors().len() as u16).collect();
    let mut out = Vec::new();
    scanner.scan(&text, &all, &mut out);
    check_matches(&text, &out, "all");
    assert_eq!(
        scanner.any(&text, &all),
        !out.is_empty(),
        "any disagrees with scan: {out:?}"
    );
    let settled = scanner.settled_len(&text, &all);
    assert!(
        settled <= text.len() && text.is_char_boundary(settled),
        "settled_len {settled} not a boundary of {} bytes",
        text.len()
    );
    let mut one = Vec::new();
    for id in &all {
        scanner.scan(&text, std::slice::from_ref(id), &mut one);
        check_matches(&text, &one, "one detector");
        assert!(one.iter().all(|m| m.detector == *id), "foreign detector id");
    }
    for name in detect::VALIDATORS
        .iter()
        .copied()
        .chain(detect::builtins().iter().map(|b| b.name))
    {
        let _ = detect::validate(name, &text);
    }
}

/// Seeds for [`detectors`] given in code.
const DETECTOR_SEEDS: &[&[u8]] = &[
    b"mail jane.doe+x@example.co.uk or call +1 (415) 555-0100, card 4111-1111-1111-1111",
    b"IBAN DE89 3704 0044 0532 0130 00, SSN 123-45-6789, ITIN 912-70-1234",
    b"ip 192.168.0.1 and 2001:db8::ff00:42:8329, key AKIAIOSFODNN7EXAMPLE",
    b"ghp_abcdefghijklmnopqrstuvwxyz0123456789 xoxb-1234-5678-abcdefghijkl sk-proj-abcdefghijklmnopqrstuvwxyz012345",
    b"eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxIn0.c2lnbmF0dXJl",
    b"-----BEGIN RSA PRIVATE KEY-----\nMIIBOgIBAAJBAKj34GkxFhD90vcNLYLInFEX6Ppy1tPf9Cnzj4p4WGeKLs1Pt8Qu\n-----END RSA PRIVATE KEY-----",
    "\u{ff14}\u{ff11}\u{ff11}\u{ff11} 1111 1111 1111 j\u{200b}ane@example.com %34%31%31%31".as_bytes(),
    b"NDExMTExMTExMTExMTExMQ== 34313131313131313131313131313131",
];

/// Tokens a fuzzer is unlikely to guess byte by byte.
const DETECTOR_DICT: &[&[u8]] = &[
    b"@",
    b".com",
    b"+1",
    b"-",
    b" ",
    b"4111",
    b"DE89",
    b"GB82WEST",
    b"123-45-",
    b"AKIA",
    b"ghp_",
    b"xoxb-",
    b"sk-",
    b"eyJ",
    b"-----BEGIN ",
    b"PRIVATE KEY-----",
    b"-----END ",
    b"::",
    b"192.168.",
    b"%34",
    b"\xef\xbc\x94",
    b"\xe2\x80\x8b",
    b"\xd9\xa4",
    b"==",
    b"\xff",
];

/// A bounded, deterministic run of [`detectors`] for `cargo test`.
pub fn detectors_smoke() {
    let seeds = seeds_with_corpus("detectors", DETECTOR_SEEDS);
    run_smoke(&detectors, &seeds, DETECTOR_DICT, 1500, 0xde7);
}

// ---------------------------------------------------------------------------------------
// The request path, natively.

/// What one request through the engine ends in, as the client and the upstream see it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NativeOutcome {
    /// Answered by the engine: the status and JSON error body the client receives.
    Local { status: u16, body: Vec<u8> },
    /// Forwarded: the headers and body the upstream receives, and the status and body
    /// the client receives once the reply came back through the engine.
    Forwarded {
        upstream_headers: Vec<(String, String)>,
        upstream_body: Vec<u8>,
        status: u16,
        client_body: Vec<u8>,
    },
}

/// The request path of the proxy-wasm filter (`filter.rs`), natively and without a host,
/// for policies without spend rules or a kill switch: headers (content type, content
/// encoding, declared length), the buffered body (limit, JSON), request rules (deny with the PII types in
/// the message), tokenise/redact in the workflow's scanned headers, query and body,
/// routing, then a JSON reply from `upstream` (given the body it received) through
/// response rules and placeholder restoration and redaction. The fuzz target runs it on
/// arbitrary input; the end-to-end test `fuzz_agree` compares it with the linked
/// artifact in wasmtime, which is how "native and wasm agree" is checked.
///
/// `headers` include the `:method` and `:path` pseudo-headers. `nonce` seeds the vault;
/// the artifact draws its own, so placeholders differ between the two and are compared
/// by shape.
pub fn native_exchange(
    engine: &Engine,
    headers: &[(String, String)],
    body: &[u8],
    body_limit: usize,
    nonce: [u8; 16],
    upstream: &dyn Fn(&[u8]) -> Vec<u8>,
) -> NativeOutcome {
    let local = |r: Reply| NativeOutcome::Local {
        status: r.status,
        body: r.body,
    };
    let policy = &engine.policy;
    let mut req = Request::from_headers(headers.to_vec(), None);
    let identity = eval::identify(policy, &req);
    if !body.is_empty() {
        let content_type = req.header("content-type").unwrap_or("");
        if !request::is_json_content_type(content_type) {
            let err = BodyError::UnsupportedMediaType(content_type.to_string());
            return local(Reply::body_error(&err));
        }
        let encoding = req.header("content-encoding");
        if !request::is_identity_encoding(encoding) {
            let err = BodyError::UnsupportedEncoding(encoding.unwrap_or("").to_string());
            return local(Reply::body_error(&err));
        }
        let declared = req
            .header("content-length")
            .and_then(|v| v.trim().parse::<usize>().ok());
        if declared.is_some_and(|len| len > body_limit) || body.len() > body_limit {
            return local(Reply::body_error(&BodyError::TooLarge {
                limit: body_limit,
            }));
        }
        match request::parse_body(body, body_limit) {
            Ok(json) => req.body = Some(json),
            Err(err) => return local(Reply::body_error(&err)),
        }
    }
    let decision = engine.evaluate(
        &req,
        identity.clone(),
        &Facts::default(),
        Phase::Request,
        None,
    );
    if let Verdict::Deny {
        status,
        message,
        clause,
        rule,
    } = &decision.verdict
    {
        let mut message = message.clone();
        if let Some(r) = policy.rules.get(*rule) {
            let detectors = eval::prompt_detectors(r);
            if !detectors.is_empty() {
                let counts = eval::count_in_request(&engine.scanner, &req, &detectors);
                message = eval::deny_message_with_types(&message, &engine.scanner, &counts);
            }
        }
        return local(Reply::policy_violation(*status, &message, clause));
    }

    let t = Transforms::of(policy, &decision);
    let mut vault = Vault::new(nonce);
    let mut out_headers: Vec<(String, String)> = headers
        .iter()
        .map(|(k, v)| (k.to_ascii_lowercase(), v.clone()))
        .collect();
    if !t.tokenise.is_empty() || !t.redact.is_empty() {
        rewrite_carriers(
            engine,
            &identity,
            &t,
            &mut req,
            &mut out_headers,
            &mut vault,
        );
    }
    let malformed = |e: json_strings::JsonError| BodyError::Malformed(e.to_string());
    let mut current: Option<Vec<u8>> = None;
    if !body.is_empty() {
        if !t.tokenise.is_empty() || !t.redact.is_empty() {
            match tokenise::rewrite_request(
                body,
                &engine.scanner,
                &t.tokenise,
                &t.redact,
                &mut vault,
            ) {
                Ok(rw) => current = rw.body,
                Err(e) => return local(Reply::body_error(&malformed(e))),
            }
        }
        if let Some(model) = &t.route {
            match request::set_model(current.as_deref().unwrap_or(body), model) {
                Ok(Some(new)) => current = Some(new),
                Ok(None) => {}
                Err(e) => return local(Reply::body_error(&malformed(e))),
            }
        }
    }
    let upstream_body = current.unwrap_or_else(|| body.to_vec());

    // The reply: JSON, status 200.
    let reply = upstream(&upstream_body);
    let reply_json: Option<Json> = serde_json::from_slice(&reply).ok();
    let reply_headers = vec![("content-type".to_string(), "application/json".to_string())];
    let rules = eval::decided_response_rules(policy);
    let facts = Facts {
        spend: None,
        rate: None,
        reply: Some(eval::ReplyView {
            status: 200,
            headers: &reply_headers,
            body: reply_json.as_ref(),
        }),
        ..Default::default()
    };
    let response = engine.evaluate(&req, identity, &facts, Phase::Response, Some(&rules));
    if let Verdict::Deny {
        status,
        message,
        clause,
        ..
    } = &response.verdict
    {
        return local(Reply::policy_violation(*status, message, clause));
    }
    let redact = eval::response_redactions(policy);
    let ctx = Ctx {
        vault: &vault,
        redact: (!redact.is_empty())
            .then(|| Redact::new(&engine.scanner, &redact, &policy.detectors)),
    };
    let mut rw = stream::ReplyRewriter::new(Some("application/json"), None, &ctx);
    let client_body = match rw.on_body(&reply, true, &ctx) {
        BodyAction::Replace(b) => b,
        BodyAction::Unchanged | BodyAction::Buffer => reply,
        BodyAction::Fail(why) => {
            return local(Reply {
                status: 502,
                body: crate::wire::error_body(why, "engine_error", "unredactable_reply"),
            });
        }
    };
    NativeOutcome::Forwarded {
        upstream_headers: out_headers,
        upstream_body,
        status: 200,
        client_body,
    }
}

/// The workflow's scanned headers and query string, tokenised and redacted as the filter
/// does (`Http::rewrite_carriers`).
fn rewrite_carriers(
    engine: &Engine,
    identity: &eval::Identity,
    t: &Transforms,
    req: &mut Request,
    out_headers: &mut Vec<(String, String)>,
    vault: &mut Vault,
) {
    let policy = &engine.policy;
    let Some(wf) = identity.workflow.and_then(|i| policy.workflows.get(i)) else {
        return;
    };
    for name in &wf.scan_headers {
        let values: Vec<String> = req.header_values(name).map(String::from).collect();
        let mut changed = false;
        let mut new_values = Vec::with_capacity(values.len());
        for v in &values {
            match tokenise::rewrite_carrier(
                v,
                tokenise::Carrier::Header,
                &engine.scanner,
                &t.tokenise,
                &t.redact,
                vault,
            ) {
                Some((new, _)) => {
                    changed = true;
                    new_values.push(new);
                }
                None => new_values.push(v.clone()),
            }
        }
        if changed {
            let joined = new_values.join(", ");
            out_headers.retain(|(n, _)| n != name);
            out_headers.push((name.clone(), joined.clone()));
            req.headers.retain(|(n, _)| n != name);
            req.headers.push((name.clone(), joined));
        }
    }
    if wf.scan_query
        && let Some((new, _)) = tokenise::rewrite_carrier(
            &req.query,
            tokenise::Carrier::Query,
            &engine.scanner,
            &t.tokenise,
            &t.redact,
            vault,
        )
    {
        let new_path = format!("{}?{new}", req.path);
        for (k, v) in out_headers.iter_mut() {
            if k == ":path" {
                *v = new_path.clone();
            }
        }
        req.query = new;
    }
}

/// Splits a fuzz input into a request: `name: value` header lines up to the first empty
/// line (`:method` defaults to `POST`, `:path` to `/v1/chat/completions`), the rest the
/// body. Input without an empty line is all body, with a JSON content type, so a fuzzer
/// reaches the body paths at once. Shared by the request target and the test that runs
/// its corpus through the artifact, so both see the same requests.
pub fn split_request(data: &[u8]) -> (Vec<(String, String)>, Vec<u8>) {
    let text_end = data
        .windows(2)
        .position(|w| w == b"\n\n")
        .map(|p| (p, p + 2));
    let mut headers: Vec<(String, String)> = Vec::new();
    let body = match text_end {
        Some((end, body_at)) => {
            let head = String::from_utf8_lossy(data.get(..end).unwrap_or_default());
            for line in head.split('\n') {
                // The leading `:` of a pseudo-header is part of its name.
                let split = line.get(1..).and_then(|r| r.find(':')).map(|i| i + 1);
                let Some(colon) = split else { continue };
                let name = line.get(..colon).unwrap_or_default().trim();
                let value = line.get(colon + 1..).unwrap_or_default().trim();
                // What an HTTP host can carry: a token name and a value without controls.
                let name_ok = !name.is_empty()
                    && name
                        .bytes()
                        .enumerate()
                        .all(|(i, b)| (b == b':' && i == 0) || is_token_byte(b));
                let value_ok = value
                    .bytes()
                    .all(|b| b == b'\t' || (b >= 0x20 && b != 0x7f));
                if name_ok && value_ok {
                    headers.push((name.to_ascii_lowercase(), value.to_string()));
                }
            }
            data.get(body_at..).unwrap_or_default().to_vec()
        }
        None => {
            headers.push(("content-type".into(), "application/json".into()));
            data.to_vec()
        }
    };
    let pseudo = |name: &str, default: &str, headers: &mut Vec<(String, String)>| {
        let given = headers.iter().position(|(n, _)| n == name);
        let value = match given {
            Some(i) => headers.remove(i).1,
            None => default.to_string(),
        };
        headers.retain(|(n, _)| n != name);
        (name.to_string(), value)
    };
    let method = pseudo(":method", "POST", &mut headers);
    let path = pseudo(":path", "/v1/chat/completions", &mut headers);
    headers.retain(|(n, _)| !n.starts_with(':'));
    let mut all = vec![method, path];
    all.extend(headers);
    (all, body)
}

/// An RFC 9110 token character, the bytes a header name may use.
fn is_token_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// The upstream the request target and the agreement test use: a chat completion whose
/// content is every string the upstream received in its body, so restoration and
/// response redaction are exercised on what the model saw.
pub fn echo_reply(received: &[u8]) -> Vec<u8> {
    let mut text = String::new();
    for (_, s) in string_spans(received) {
        text.push_str(&s);
        text.push(' ');
    }
    let reply = serde_json::json!({
        "id": "chatcmpl-fuzz",
        "object": "chat.completion",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": text},
                     "finish_reason": "stop"}],
    });
    serde_json::to_vec(&reply).unwrap_or_default()
}

/// The oracles of the request target on one native outcome: a local answer is one of the
/// documented statuses with a JSON error body; a forwarded body is JSON whenever the
/// client's was, and the client's reply is JSON.
pub fn check_outcome(body: &[u8], outcome: &NativeOutcome) {
    match outcome {
        NativeOutcome::Local { status, body } => {
            assert!(
                (400..600).contains(status),
                "local answer with status {status}"
            );
            let v: Json = serde_json::from_slice(body)
                .unwrap_or_else(|e| panic!("local answer is not JSON: {e}"));
            assert!(
                v.pointer("/error/code").is_some_and(Json::is_string),
                "local answer without an error code: {v}"
            );
        }
        NativeOutcome::Forwarded {
            upstream_body,
            client_body,
            ..
        } => {
            if !body.is_empty() {
                assert!(
                    serde_json::from_slice::<Json>(upstream_body).is_ok(),
                    "forwarded body is not JSON"
                );
            }
            assert!(
                serde_json::from_slice::<Json>(client_body).is_ok(),
                "client reply is not JSON"
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_strings_smoke_test() {
        json_strings_smoke();
    }

    #[test]
    fn sse_smoke_test() {
        sse_smoke();
    }

    #[test]
    fn detectors_smoke_test() {
        detectors_smoke();
    }

    #[test]
    fn split_request_reads_headers_and_body() {
        let (h, b) = split_request(b":path: /v1/x?q=1\nX-Team: a\nbad header\n\n{}");
        assert_eq!(h[0], (":method".into(), "POST".into()));
        assert_eq!(h[1], (":path".into(), "/v1/x?q=1".into()));
        assert_eq!(h[2], ("x-team".into(), "a".into()));
        assert_eq!(b, b"{}");
        let (h, b) = split_request(b"{\"a\":1}");
        assert_eq!(h[2], ("content-type".into(), "application/json".into()));
        assert_eq!(b, b"{\"a\":1}");
    }
}
