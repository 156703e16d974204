//! A loopback upstream standing in for a model provider: it records every request it
//! receives and answers with a configured JSON body or a stream of SSE events.

use std::io::{BufReader, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::http::{Request, read_request};

/// What the upstream answers to every request.
#[derive(Debug, Clone, PartialEq)]
pub enum Reply {
    /// A complete JSON response.
    Json { status: u16, body: String },
    /// `text/event-stream`, chunked: each event's `data` sent after its delay, then flushed.
    Sse { events: Vec<(Duration, String)> },
    /// Echoes the content of the request's last message back as a chat completion: as a
    /// JSON reply, or (`sse`) as one SSE event per character, then (`tool_args`) the same
    /// text again as tool-call argument deltas one character per event, then an event
    /// with `usage` and `[DONE]`. Both carry `usage` `{prompt_tokens: 10, completion_tokens:
    /// 5}`. What a gateway restores is then exactly what the client sent.
    Echo { sse: bool, tool_args: bool },
    /// Echoes like [`Reply::Echo`] in the shape of another provider API
    /// ([`super::api_mocks`]): Anthropic Messages or OpenAI Responses, JSON or streamed,
    /// reporting `output_tokens` of usage.
    EchoApi {
        api: super::api_mocks::MockApi,
        sse: bool,
        output_tokens: u64,
    },
    /// Exactly these bytes (a status line, headers and whatever body, well-formed or not),
    /// then the connection ends: closed, or (`reset`) reset with an RST, as a provider that
    /// fails mid-reply does.
    Raw { bytes: Vec<u8>, reset: bool },
}

impl Reply {
    /// A chat-completions style answer with the given assistant text.
    pub fn chat(text: &str) -> Reply {
        let body = serde_json::json!({
            "id": "chatcmpl-test",
            "object": "chat.completion",
            "model": "gpt-4o-mini",
            "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15}
        });
        Reply::Json {
            status: 200,
            body: body.to_string(),
        }
    }
}

/// A running upstream on `127.0.0.1:<free port>`; stops accepting on drop.
pub struct Upstream {
    addr: SocketAddr,
    received: Arc<Mutex<Vec<Request>>>,
    reply: Arc<Mutex<Reply>>,
    stop: Arc<AtomicBool>,
    /// Milliseconds every reply waits before it is written (a slow model).
    delay_ms: Arc<AtomicU64>,
}

impl Upstream {
    /// Binds a free loopback port and serves `reply` on a background thread.
    pub fn start(reply: Reply) -> Upstream {
        let listener = match TcpListener::bind("127.0.0.1:0") {
            Ok(l) => l,
            Err(e) => panic!("cannot bind the upstream: {e}"),
        };
        let addr = match listener.local_addr() {
            Ok(a) => a,
            Err(e) => panic!("upstream has no address: {e}"),
        };
        let up = Upstream {
            addr,
            received: Arc::default(),
            reply: Arc::new(Mutex::new(reply)),
            stop: Arc::default(),
            delay_ms: Arc::default(),
        };
        let (received, reply, stop) = (up.received.clone(), up.reply.clone(), up.stop.clone());
        let delay_ms = up.delay_ms.clone();
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                if stop.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(conn) = conn else { continue };
                let (received, reply) = (received.clone(), reply.clone());
                let delay_ms = delay_ms.clone();
                std::thread::spawn(move || serve(conn, &received, &reply, &delay_ms));
            }
        });
        up
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Every request received so far, in arrival order.
    pub fn received(&self) -> Vec<Request> {
        self.received.lock().map(|r| r.clone()).unwrap_or_default()
    }

    /// Makes every later reply wait `delay` before it is written (a slow model), so
    /// concurrent requests overlap at the gateway.
    pub fn set_delay(&self, delay: Duration) {
        let ms = u64::try_from(delay.as_millis()).unwrap_or(u64::MAX);
        self.delay_ms.store(ms, Ordering::SeqCst);
    }

    /// Changes the reply for later requests.
    pub fn set_reply(&self, reply: Reply) {
        if let Ok(mut r) = self.reply.lock() {
            *r = reply;
        }
    }
}

impl Drop for Upstream {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wake the accept loop so it sees the flag.
        let _ = TcpStream::connect_timeout(&self.addr, Duration::from_millis(200));
    }
}

/// Serves one keep-alive connection until the peer closes it or goes quiet for 30 s.
fn serve(
    conn: TcpStream,
    received: &Mutex<Vec<Request>>,
    reply: &Mutex<Reply>,
    delay_ms: &AtomicU64,
) {
    let _ = conn.set_read_timeout(Some(Duration::from_secs(30)));
    // Replies go out in one write each; without this, Nagle plus the peer's delayed ACK
    // adds ~40 ms to every keep-alive round trip.
    let _ = conn.set_nodelay(true);
    let Ok(mut out) = conn.try_clone() else {
        return;
    };
    let mut reader = BufReader::new(conn);
    while let Ok(Some(req)) = read_request(&mut reader) {
        let reply = reply.lock().map(|r| r.clone());
        let Ok(reply) = reply else { return };
        let reply = echo(reply, &req.body);
        if let Ok(mut r) = received.lock() {
            r.push(req);
        }
        let delay = delay_ms.load(Ordering::SeqCst);
        if delay > 0 {
            std::thread::sleep(Duration::from_millis(delay));
        }
        if let Reply::Raw { bytes, reset } = &reply {
            let _ = out.write_all(bytes);
            let _ = out.flush();
            if *reset {
                let _ = socket2::SockRef::from(&out).set_linger(Some(Duration::ZERO));
            }
            return;
        }
        if write_reply(&mut out, &reply).is_err() {
            return;
        }
    }
}

/// Turns an [`Reply::Echo`] into the concrete reply for a request `body`.
pub fn echo(reply: Reply, body: &[u8]) -> Reply {
    if let Reply::EchoApi {
        api,
        sse,
        output_tokens,
    } = reply
    {
        return super::api_mocks::echo(api, sse, output_tokens, body);
    }
    let Reply::Echo { sse, tool_args } = reply else {
        return reply;
    };
    let request: serde_json::Value = serde_json::from_slice(body).unwrap_or_default();
    let text = request["messages"]
        .as_array()
        .and_then(|m| m.last())
        .and_then(|m| m["content"].as_str())
        .unwrap_or_default()
        .to_string();
    let usage =
        serde_json::json!({"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15});
    if !sse {
        let body = serde_json::json!({
            "id": "chatcmpl-echo",
            "object": "chat.completion",
            "model": request["model"],
            "choices": [{"index": 0, "message": {"role": "assistant", "content": text},
                "finish_reason": "stop"}],
            "usage": usage
        });
        return Reply::Json {
            status: 200,
            body: body.to_string(),
        };
    }
    let delta = |delta: serde_json::Value| {
        let event = serde_json::json!({"id": "chatcmpl-echo", "object": "chat.completion.chunk",
            "choices": [{"index": 0, "delta": delta}]});
        (Duration::from_millis(1), event.to_string())
    };
    let mut events: Vec<(Duration, String)> = text
        .chars()
        .map(|c| delta(serde_json::json!({"content": c.to_string()})))
        .collect();
    if tool_args {
        events.extend(text.chars().map(|c| {
            delta(serde_json::json!({"tool_calls": [{"index": 0,
                "function": {"arguments": c.to_string()}}]}))
        }));
    }
    let last = serde_json::json!({"id": "chatcmpl-echo", "object": "chat.completion.chunk",
        "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}], "usage": usage});
    events.push((Duration::ZERO, last.to_string()));
    events.push((Duration::ZERO, "[DONE]".into()));
    Reply::Sse { events }
}

fn write_reply(out: &mut TcpStream, reply: &Reply) -> std::io::Result<()> {
    match reply {
        Reply::Json { status, body } => {
            let message = format!(
                "HTTP/1.1 {status} X\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
                body.len()
            );
            out.write_all(message.as_bytes())?;
        }
        Reply::Sse { events } => {
            write!(
                out,
                "HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ncache-control: no-cache\r\ntransfer-encoding: chunked\r\n\r\n"
            )?;
            out.flush()?;
            for (delay, data) in events {
                std::thread::sleep(*delay);
                let event = format!("data: {data}\n\n");
                let chunk = format!("{:x}\r\n{event}\r\n", event.len());
                out.write_all(chunk.as_bytes())?;
                out.flush()?;
            }
            write!(out, "0\r\n\r\n")?;
        }
        // Resolved by `echo`, or written by `serve`, before this.
        Reply::Echo { .. } | Reply::EchoApi { .. } | Reply::Raw { .. } => {
            let message = "HTTP/1.1 500 X\r\ncontent-length: 0\r\n\r\n";
            out.write_all(message.as_bytes())?;
        }
    }
    out.flush()
}
