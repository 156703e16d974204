//! Runs the bench's exchange (the 4 KB chat request with PII through `support-assistant`,
//! and a JSON reply that echoes the placeholders it received) natively through the
//! sans-IO [`Session`] the artifact runs, N times, so that a profiler with symbols can
//! split the guest's work by function. In wasm the same code runs under V8 or wasmtime,
//! where callgrind sees no symbols:
//!
//! ```sh
//! cargo build --release -p writ-benches --example session_exchange
//! valgrind --tool=callgrind --callgrind-out-file=cg.out \
//!   target/release/examples/session_exchange 2000
//! callgrind_annotate --inclusive=yes cg.out | head -60
//! ```
//!
//! The host is a [`MemoryStore`] and the effects are applied as `filter.rs` would apply
//! them where they matter to the next step (the rewritten request body reaches the
//! upstream); metric and log effects are dropped after they are made.
#![allow(clippy::print_stdout)]

use std::rc::Rc;

use writ_benches::{fixtures, payload, upstream};
use writ_plugin::config::PluginConfig;
use writ_plugin::eval::Engine;
use writ_plugin::session::{Effect, Need, Next, Session, Shared, Side, Step};
use writ_plugin::store::MemoryStore;

const NOW: u64 = 1_780_000_000_000_000_000;

fn clock() -> u64 {
    NOW
}

fn no_host_id() -> Option<String> {
    None
}

/// The request body the upstream receives: the last replacement of it, if any.
fn forwarded(step: &Step, sent: &mut Vec<u8>) {
    for e in &step.effects {
        if let Effect::ReplaceBody {
            side: Side::Request,
            bytes,
            ..
        } = e
        {
            sent.clone_from(bytes);
        }
    }
}

fn main() -> anyhow::Result<()> {
    let n: usize = std::env::args()
        .nth(1)
        .map(|a| a.parse())
        .transpose()?
        .unwrap_or(2000);
    // `POLICY=path/to.policy` profiles another policy (benches/floor/one-rule.policy:
    // what every artifact pays); `EMAILS=bytes` sends the e-mail-dense request of that
    // size (issue 14's 1 MiB case) instead of the 4 KB one.
    let (name, source) = match std::env::var("POLICY") {
        Ok(path) => ("policy", std::fs::read_to_string(path)?),
        Err(_) => (
            "support-assistant",
            fixtures::policy_source("support-assistant")?,
        ),
    };
    let compiled = fixtures::compile(name, &source)?;
    let shared = Rc::new(Shared::new(
        Engine::new(compiled.policy).map_err(|e| anyhow::anyhow!("{e}"))?,
    ));
    let store = MemoryStore::new();
    let body = match std::env::var("EMAILS") {
        Ok(bytes) => payload::email_dense_request(bytes.parse()?),
        Err(_) => payload::chat_request(false),
    };
    let headers: Vec<(String, String)> = payload::HEADERS
        .iter()
        .map(|(k, v)| ((*k).to_string(), (*v).to_string()))
        .chain([("content-length".to_string(), body.len().to_string())])
        .collect();
    let mut restored = 0usize;
    for i in 0..n {
        let mut s = Session::new(shared.clone(), PluginConfig::default(), i as u32 + 2, clock);
        let step = s.on_request_headers(headers.clone(), false, &mut no_host_id, &store);
        anyhow::ensure!(step.next == Next::Pause, "request headers: {:?}", step.next);
        let mut sent = body.clone();
        if let Some(step) = s.on_request_body_size(body.len()) {
            anyhow::bail!("body refused by size: {:?}", step.next);
        }
        let step = s.on_request_body(&body, &store);
        anyhow::ensure!(step.next == Next::Continue, "request body: {:?}", step.next);
        forwarded(&step, &mut sent);
        let reply = format!(
            "{{\"id\":\"chatcmpl-bench\",\"object\":\"chat.completion\",\"created\":1,\
             \"model\":\"gpt-4o-mini\",\"choices\":[{{\"index\":0,\"message\":{{\"role\":\
             \"assistant\",\"content\":\"{}\"}},\"finish_reason\":\"stop\"}}],\"usage\":\
             {{\"prompt_tokens\":1000,\"completion_tokens\":90,\"total_tokens\":1090}}}}",
            upstream::echo(&sent)
        );
        let reply_headers = vec![
            (":status".to_string(), "200".to_string()),
            ("content-type".to_string(), "application/json".to_string()),
            ("content-length".to_string(), reply.len().to_string()),
            // Above the policy's HOTL threshold, as the wire bench's upstream says.
            ("x-model-confidence".to_string(), "0.93".to_string()),
        ];
        s.on_response_headers(reply_headers, false, &store);
        if s.reply_body_need(true) == Need::Read {
            let step = s.on_response_body(reply.as_bytes(), true, &store);
            restored += step
                .effects
                .iter()
                .filter(|e| {
                    matches!(
                        e,
                        Effect::ReplaceBody {
                            side: Side::Response,
                            ..
                        }
                    )
                })
                .count();
        }
        s.seal(&store);
    }
    // The bundled policy's replies to the 4 KB request have placeholders to restore;
    // another policy may not read replies at all.
    if name == "support-assistant" && std::env::var_os("EMAILS").is_none() {
        anyhow::ensure!(restored == n, "{restored} of {n} replies were restored");
    }
    println!("{n} exchanges, {restored} replies restored");
    Ok(())
}
