//! Cost of tokenisation and restoration, against the naive alternatives.
//!
//! - request: tokenising a 4 KB chat request (scan every string, replace 6 values) with
//!   the DOM-free rewriter, against `serde_json` parse + re-serialise of the same body
//!   (the naive filter's cost, without any scanning);
//! - reply: restoring a 500-event SSE stream (placeholders split across events) per
//!   event, against feeding it through a restorer with nothing to restore (framing only)
//!   and a plain copy;
//! - JSON reply: restoring a 4 KB non-streamed reply.
//!
//! `cargo bench -p writ-plugin --bench restore` prints µs per operation. A plain harness
//! (no criterion), like `scan`, keeps the dependency tree small on shared build machines.
//!
//! Recorded on the 2-core development machine while other builds ran (load ~4, so
//! ranges over several runs; compare lines of one run, not runs):
//!
//! | measurement                                   | µs          |
//! |-----------------------------------------------|-------------|
//! | tokenise 4 KB request (validate, scan, 6 values) | 13–19 |
//! | of which: validate only                       | 0.9–1.4     |
//! | of which: validate + detector scan            | 6.9–7.7     |
//! | serde_json parse + serialise (naive filter)   | 5.2–7.7     |
//! | SSE restore, per event (500 events)           | 0.8–1.2     |
//! | SSE framing only, per event                   | 0.2–0.4     |
//! | restore a 4 KB JSON reply (placeholder-dense) | 6.0–8.8     |
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::hint::black_box;
use std::time::{Duration, Instant};

use serde_json::json;
use writ_plugin::detect::{Scanner, builtin_names};
use writ_plugin::ir::{Detector, DetectorKind};
use writ_plugin::stream::{Ctx, SseRestorer, rewrite_reply_json};
use writ_plugin::tokenise::{Vault, nonce, rewrite_request};

/// Runs `f` repeatedly for about `budget` and returns the mean time per call.
fn time(budget: Duration, mut f: impl FnMut()) -> Duration {
    for _ in 0..50 {
        f();
    }
    let start = Instant::now();
    let mut n = 0u32;
    while start.elapsed() < budget {
        for _ in 0..20 {
            f();
        }
        n += 20;
    }
    start.elapsed() / n
}

fn us(d: Duration) -> String {
    format!("{:8.2} µs", d.as_secs_f64() * 1e6)
}

fn request_4k() -> Vec<u8> {
    let filler = "The quarterly report covers revenue, churn and the hiring plan for next year. ";
    let mut user = String::new();
    while user.len() < 3300 {
        user.push_str(filler);
    }
    user.insert_str(200, " Contact ada@example.com or +1 415 555 0100. ");
    user.insert_str(
        1500,
        " Card 4111 1111 1111 1111, IBAN DE89 3704 0044 0532 0130 00. ",
    );
    user.insert_str(2500, " cc bob@example.org and ada@example.com. ");
    serde_json::to_vec(&json!({
        "model": "gpt-4o-mini",
        "temperature": 0.2,
        "messages": [
            {"role": "system", "content": "You are a helpful assistant for the finance team."},
            {"role": "user", "content": user},
        ],
        "user": "u-123",
    }))
    .unwrap()
}

fn main() {
    let budget = Duration::from_millis(800);
    let detectors: Vec<Detector> = builtin_names()
        .iter()
        .map(|(n, class)| Detector {
            name: n.to_string(),
            class: *class,
            kind: DetectorKind::Builtin(n.to_string()),
        })
        .collect();
    let scanner = Scanner::new(&detectors).unwrap();
    let all: Vec<u16> = (0..detectors.len() as u16).collect();

    let body = request_4k();
    println!("request body: {} bytes", body.len());
    let t_tok = time(budget, || {
        let mut vault = Vault::new(nonce(b"req", 1, 0));
        let rw = rewrite_request(black_box(&body), &scanner, &all, &[], &mut vault).unwrap();
        black_box(rw);
    });
    let t_none = time(budget, || {
        let mut vault = Vault::new(nonce(b"req", 1, 0));
        let rw = rewrite_request(black_box(&body), &scanner, &[], &[], &mut vault).unwrap();
        black_box(rw);
    });
    let t_scan = time(budget, || {
        let mut hits = Vec::new();
        let mut n = 0usize;
        writ_plugin::json_strings::visit(
            black_box(&body),
            &mut |_: &writ_plugin::json_strings::Path<'_>,
                  l: writ_plugin::json_strings::Leaf<'_>,
                  _: std::ops::Range<usize>| {
                if let writ_plugin::json_strings::Leaf::Str(s) = l {
                    scanner.scan(s, &all, &mut hits);
                    n += hits.len();
                }
            },
        )
        .unwrap();
        black_box(n);
    });
    let t_serde = time(budget, || {
        let v: serde_json::Value = serde_json::from_slice(black_box(&body)).unwrap();
        black_box(serde_json::to_vec(&v).unwrap());
    });
    println!("tokenise 4 KB request (scan + 6 values)  {}", us(t_tok));
    println!("validate only (no detectors wanted)      {}", us(t_none));
    println!("validate + detector scan, no rewrite     {}", us(t_scan));
    println!("serde_json parse + serialise (baseline)  {}", us(t_serde));

    // A 500-event stream whose text holds placeholders split across events.
    let mut vault = Vault::new(nonce(b"req", 1, 0));
    let p1 = vault.tokenise("email", "ada@example.com").into_owned();
    let p2 = vault.tokenise("phone", "+1 415 555 0100").into_owned();
    let mut text = String::new();
    while text.len() < 500 * 4 {
        text.push_str(&format!("Write to {p1} or call {p2} today. "));
    }
    let chars: Vec<char> = text.chars().collect();
    let mut sse = Vec::new();
    for piece in chars.chunks(chars.len().div_ceil(500)) {
        let s: String = piece.iter().collect();
        let ev = json!({"id":"chatcmpl-1","object":"chat.completion.chunk","created":1,"model":"gpt-4o-mini",
            "choices":[{"index":0,"delta":{"content":s},"logprobs":null,"finish_reason":null}]});
        sse.extend_from_slice(
            format!("data: {}\n\n", serde_json::to_string(&ev).unwrap()).as_bytes(),
        );
    }
    sse.extend_from_slice(b"data: [DONE]\n\n");
    let events = 501u32;
    let ctx = Ctx {
        vault: &vault,
        redact: None,
    };
    let empty = Vault::new([0; 16]);
    let noop = Ctx {
        vault: &empty,
        redact: None,
    };
    // Envoy hands the body over in chunks; cut it every 1 KiB.
    let run = |ctx: &Ctx<'_>| {
        let mut r = SseRestorer::new();
        let mut out = Vec::with_capacity(sse.len());
        for chunk in sse.chunks(1024) {
            r.push(chunk, ctx, &mut out);
        }
        r.finish(ctx, &mut out);
        out
    };
    let t_restore = time(budget, || {
        black_box(run(&ctx));
    });
    let t_frame = time(budget, || {
        black_box(run(&noop));
    });
    let t_copy = time(budget, || {
        let mut out = Vec::with_capacity(sse.len());
        for chunk in sse.chunks(1024) {
            out.extend_from_slice(black_box(chunk));
        }
        black_box(out);
    });
    println!("SSE stream: {} bytes, {events} events", sse.len());
    println!(
        "restore, per event                       {}",
        us(t_restore / events)
    );
    println!(
        "framing only (nothing to restore)        {}",
        us(t_frame / events)
    );
    println!(
        "plain copy, per event                    {}",
        us(t_copy / events)
    );

    let reply = serde_json::to_vec(&json!({
        "id": "chatcmpl-1", "object": "chat.completion", "model": "gpt-4o-mini",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": text.get(..4000).unwrap_or(&text)}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 900, "completion_tokens": 1000}
    }))
    .unwrap();
    let t_json = time(budget, || {
        black_box(rewrite_reply_json(black_box(&reply), &ctx).unwrap());
    });
    println!("restore 4 KB JSON reply                  {}", us(t_json));
}
