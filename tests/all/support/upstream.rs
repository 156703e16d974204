//! A loopback upstream standing in for a model provider: it records every request it
//! receives and answers with a configured JSON body or a stream of SSE events.

use std::io::{BufReader, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
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
        };
        let (received, reply, stop) = (up.received.clone(), up.reply.clone(), up.stop.clone());
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                if stop.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(conn) = conn else { continue };
                let (received, reply) = (received.clone(), reply.clone());
                std::thread::spawn(move || serve(conn, &received, &reply));
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
fn serve(conn: TcpStream, received: &Mutex<Vec<Request>>, reply: &Mutex<Reply>) {
    let _ = conn.set_read_timeout(Some(Duration::from_secs(30)));
    // Replies go out in one write each; without this, Nagle plus the peer's delayed ACK
    // adds ~40 ms to every keep-alive round trip.
    let _ = conn.set_nodelay(true);
    let Ok(mut out) = conn.try_clone() else {
        return;
    };
    let mut reader = BufReader::new(conn);
    while let Ok(Some(req)) = read_request(&mut reader) {
        if let Ok(mut r) = received.lock() {
            r.push(req);
        }
        let reply = reply.lock().map(|r| r.clone());
        let Ok(reply) = reply else { return };
        if write_reply(&mut out, &reply).is_err() {
            return;
        }
    }
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
    }
    out.flush()
}
