//! A fast loopback stand-in for a model provider.
//!
//! It answers every request with a fixed chat completion whose text is the tail of the
//! request's last message (so a tokenised request gets its placeholders back, and the
//! filter restores them), or — when the body asks for `"stream":true` — with the same text
//! as an SSE stream of `x-bench-events` events (default 20), each written separately, then
//! a usage event and `[DONE]`. It never parses JSON: a substring search finds the text, so
//! the upstream's own cost stays small and identical for every proxy under test.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::{Body, Frame, Incoming};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio::sync::mpsc;

/// How many bytes of the last message's tail the reply echoes.
const ECHO_BYTES: usize = 320;

/// The confidence the reply reports, above the support policy's 0.70 HOTL threshold so no
/// request is escalated (escalation is a different path, not the common case measured).
const CONFIDENCE: &str = "0.93";

/// Starts the upstream on a fresh single-threaded runtime on its own thread and returns
/// its address. It runs until the process exits.
pub fn start() -> std::io::Result<SocketAddr> {
    let std_listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    std_listener.set_nonblocking(true)?;
    let addr = std_listener.local_addr()?;
    std::thread::Builder::new()
        .name("bench-upstream".into())
        .spawn(move || {
            let rt = match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(rt) => rt,
                Err(e) => {
                    eprintln!("upstream: no runtime: {e}");
                    return;
                }
            };
            rt.block_on(async move {
                let Ok(listener) = TcpListener::from_std(std_listener) else {
                    return;
                };
                loop {
                    let Ok((stream, _)) = listener.accept().await else {
                        continue;
                    };
                    let _ = stream.set_nodelay(true);
                    tokio::spawn(async move {
                        let _ = http1::Builder::new()
                            .serve_connection(TokioIo::new(stream), service_fn(handle))
                            .await;
                    });
                }
            });
        })?;
    Ok(addr)
}

/// A response body that is either one buffer or a stream of separately written events.
pub enum Reply {
    Full(Full<Bytes>),
    Events(mpsc::Receiver<Bytes>),
}

impl Body for Reply {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        match self.get_mut() {
            Reply::Full(f) => Pin::new(f).poll_frame(cx),
            Reply::Events(rx) => rx.poll_recv(cx).map(|o| o.map(|b| Ok(Frame::data(b)))),
        }
    }
}

async fn handle(req: Request<Incoming>) -> Result<Response<Reply>, Infallible> {
    let events: usize = req
        .headers()
        .get("x-bench-events")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
        .unwrap_or(20);
    let first_gap_ms: u64 = req
        .headers()
        .get("x-bench-first-gap-ms")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let body = match req.into_body().collect().await {
        Ok(b) => b.to_bytes(),
        Err(_) => Bytes::new(),
    };
    let text = echo(&body);
    // The bench requests put `"stream"` last: searching only the tail keeps the upstream's
    // cost per request small next to the proxy's (it shares the second core with the load
    // generator).
    let tail = body
        .get(body.len().saturating_sub(96)..)
        .unwrap_or_default();
    let stream = find(tail, b"\"stream\":true").is_some();
    let builder = Response::builder()
        .status(200)
        .header("x-model-confidence", CONFIDENCE);
    let resp = if stream {
        let (tx, rx) = mpsc::channel(16);
        tokio::spawn(send_events(tx, text, events, first_gap_ms));
        builder
            .header("content-type", "text/event-stream")
            .body(Reply::Events(rx))
    } else {
        let json = format!(
            "{{\"id\":\"chatcmpl-bench\",\"object\":\"chat.completion\",\"created\":1,\
             \"model\":\"gpt-4o-mini\",\"choices\":[{{\"index\":0,\"message\":{{\"role\":\
             \"assistant\",\"content\":\"{text}\"}},\"finish_reason\":\"stop\"}}],\
             \"usage\":{{\"prompt_tokens\":1000,\"completion_tokens\":90,\"total_tokens\":1090}}}}"
        );
        builder
            .header("content-type", "application/json")
            .body(Reply::Full(Full::new(Bytes::from(json))))
    };
    Ok(resp.unwrap_or_else(|_| Response::new(Reply::Full(Full::new(Bytes::new())))))
}

/// Writes `events` chunk events cycling through `text` in 8-byte pieces (so placeholders
/// are split across events), then a usage event and `[DONE]`. Yielding between events
/// lets hyper flush each one as its own write, as a real provider's tokens arrive.
///
/// With `first_gap_ms` the first event is sent alone and the rest follow after that pause:
/// a burst faster than any proxy would otherwise reach the proxy in one read, and the time
/// to the first byte would measure the whole burst instead of the first event.
async fn send_events(tx: mpsc::Sender<Bytes>, text: String, events: usize, first_gap_ms: u64) {
    let bytes = text.as_bytes();
    let mut at = 0usize;
    for i in 0..events {
        let mut end = (at + 8).min(bytes.len());
        // Do not split a JSON escape (`\"`, `\\`) across events.
        while end < bytes.len() && bytes.get(end - 1) == Some(&b'\\') {
            end += 1;
        }
        let piece = text.get(at..end).unwrap_or("");
        let ev = format!(
            "data: {{\"id\":\"chatcmpl-bench\",\"object\":\"chat.completion.chunk\",\"created\":1,\
             \"model\":\"gpt-4o-mini\",\"choices\":[{{\"index\":0,\"delta\":{{\"content\":\"{piece}\"}},\
             \"finish_reason\":null}}]}}\n\n"
        );
        if tx.send(Bytes::from(ev)).await.is_err() {
            return;
        }
        if first_gap_ms > 0 && i == 0 {
            tokio::time::sleep(std::time::Duration::from_millis(first_gap_ms)).await;
        } else {
            tokio::task::yield_now().await;
        }
        at = if end >= bytes.len() { 0 } else { end };
    }
    let usage = "data: {\"id\":\"chatcmpl-bench\",\"object\":\"chat.completion.chunk\",\"created\":1,\
        \"model\":\"gpt-4o-mini\",\"choices\":[{\"index\":0,\"delta\":{},\"finish_reason\":\"stop\"}],\
        \"usage\":{\"prompt_tokens\":1000,\"completion_tokens\":90,\"total_tokens\":1090}}\n\n";
    let _ = tx.send(Bytes::from_static(usage.as_bytes())).await;
    let _ = tx.send(Bytes::from_static(b"data: [DONE]\n\n")).await;
}

/// The last `ECHO_BYTES` of the last `"content":"…"` string in `body`, still JSON-escaped
/// (so it can be pasted into a JSON string as is), cut on a character boundary and never
/// inside an escape.
pub fn echo(body: &[u8]) -> String {
    let key = b"\"content\":\"";
    let Some(start) = rfind(body, key).map(|i| i + key.len()) else {
        return "Hello.".into();
    };
    let mut end = start;
    while end < body.len() {
        match body.get(end) {
            Some(b'\\') => end += 2,
            Some(b'"') => break,
            _ => end += 1,
        }
    }
    let end = end.min(body.len());
    let mut from = end.saturating_sub(ECHO_BYTES).max(start);
    let s = loop {
        match std::str::from_utf8(body.get(from..end).unwrap_or_default()) {
            Ok(s) => break s,
            Err(_) => from += 1,
        }
    };
    s.trim_start_matches('\\').to_string()
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

fn rfind(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).rposition(|w| w == needle)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn echoes_the_tail_of_the_last_message() {
        let body = crate::payload::chat_request(false);
        let e = echo(&body);
        assert!(e.ends_with("Copy bob.smith@example.org."), "{e}");
        assert!(e.len() <= ECHO_BYTES);
    }
}
