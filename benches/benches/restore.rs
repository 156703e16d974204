//! Restoration cost per SSE event: a 500-event chat-completion stream whose text holds
//! placeholders split across events, fed in 1 KiB chunks as Envoy hands a body over,
//! through `SseRestorer` with the request's vault; against the same stream with nothing
//! to restore (SSE framing only) and a plain copy. Also a 4 KB non-streamed reply.
//! Criterion reports per-element throughput: elements are events. Ported from
//! `plugin/benches/restore.rs`.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use serde_json::json;
use writ_plugin::stream::{Ctx, SseRestorer, rewrite_reply_json};
use writ_plugin::tokenise::{Vault, nonce};

const EVENTS: usize = 500;

fn bench(c: &mut Criterion) {
    let mut vault = Vault::new(nonce(b"req", 1, 0));
    let p1 = vault.tokenise("email", "ada@example.com").into_owned();
    let p2 = vault
        .tokenise("credit_card", "4111 1111 1111 1111")
        .into_owned();
    let mut text = String::new();
    while text.len() < EVENTS * 4 {
        text.push_str(&format!("Write to {p1} about card {p2} today. "));
    }
    let chars: Vec<char> = text.chars().collect();
    let mut sse = Vec::new();
    for piece in chars.chunks(chars.len().div_ceil(EVENTS)) {
        let s: String = piece.iter().collect();
        let ev = json!({"id":"chatcmpl-1","object":"chat.completion.chunk","created":1,"model":"gpt-4o-mini",
            "choices":[{"index":0,"delta":{"content":s},"logprobs":null,"finish_reason":null}]});
        sse.extend_from_slice(
            format!("data: {}\n\n", serde_json::to_string(&ev).unwrap()).as_bytes(),
        );
    }
    sse.extend_from_slice(b"data: [DONE]\n\n");
    let events = sse.windows(6).filter(|w| w == b"data: ").count();

    let ctx = Ctx {
        vault: &vault,
        redact: None,
    };
    let empty = Vault::new([0; 16]);
    let noop = Ctx {
        vault: &empty,
        redact: None,
    };
    let run = |ctx: &Ctx<'_>| {
        let mut r = SseRestorer::new();
        let mut out = Vec::with_capacity(sse.len());
        for chunk in sse.chunks(1024) {
            r.push(black_box(chunk), ctx, &mut out);
        }
        r.finish(ctx, &mut out);
        out
    };
    let restored = String::from_utf8(run(&ctx)).unwrap();
    assert!(
        restored.contains("ada@") && !restored.contains(&p1),
        "not restored"
    );

    let mut g = c.benchmark_group("restore");
    g.throughput(Throughput::Elements(events as u64));
    g.bench_function("sse_500_events/restore", |b| b.iter(|| run(&ctx)));
    g.bench_function("sse_500_events/framing_only", |b| b.iter(|| run(&noop)));
    g.bench_function("sse_500_events/plain_copy", |b| {
        b.iter(|| {
            let mut out = Vec::with_capacity(sse.len());
            for chunk in sse.chunks(1024) {
                out.extend_from_slice(black_box(chunk));
            }
            out
        })
    });
    let reply = serde_json::to_vec(&json!({
        "id": "chatcmpl-1", "object": "chat.completion", "model": "gpt-4o-mini",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": text.get(..4000).unwrap_or(&text)}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 900, "completion_tokens": 1000}
    }))
    .unwrap();
    g.throughput(Throughput::Bytes(reply.len() as u64));
    g.bench_function("json_reply_4k/restore", |b| {
        b.iter(|| rewrite_reply_json(black_box(&reply), &ctx).unwrap())
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
