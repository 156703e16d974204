//! A loopback MCP server speaking Streamable HTTP (protocol revisions 2025-06-18 and
//! 2025-11-25): every client message is a `POST` of one JSON-RPC message; requests are
//! answered with `application/json` or, for `lookup_order`, with `text/event-stream`
//! (a progress notification, then the result, each event written in two chunks cut in
//! the middle of its data, so a gateway must reassemble them); notifications get 202; the
//! `GET` of the server's own stream gets 405 (the server offers none). It records every
//! request it receives.
//!
//! Its tools are the support assistant's: `lookup_order` (its result names the customer's
//! email), `get_faq` (its result leaks a credential), `issue_refund`, and `delete_account`
//! (which the bundled policy must never let through).

use std::io::{BufReader, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{Value, json};

use super::http::{Request, read_request};

/// The email `lookup_order`'s result carries (a gateway must mask it).
pub const CUSTOMER_EMAIL: &str = "ann.lee@example.com";
/// The credential `get_faq`'s result leaks (a gateway must withhold it).
pub const LEAKED_KEY: &str = "AKIAIOSFODNN7EXAMPLE";

/// A running MCP server on `127.0.0.1:<free port>`; stops accepting on drop.
pub struct McpServer {
    addr: SocketAddr,
    received: Arc<Mutex<Vec<Request>>>,
    stop: Arc<AtomicBool>,
}

impl McpServer {
    /// Binds a free loopback port and serves on a background thread.
    pub fn start() -> McpServer {
        let listener = match TcpListener::bind("127.0.0.1:0") {
            Ok(l) => l,
            Err(e) => panic!("cannot bind the MCP server: {e}"),
        };
        let addr = match listener.local_addr() {
            Ok(a) => a,
            Err(e) => panic!("the MCP server has no address: {e}"),
        };
        let server = McpServer {
            addr,
            received: Arc::default(),
            stop: Arc::default(),
        };
        let (received, stop) = (server.received.clone(), server.stop.clone());
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                if stop.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(conn) = conn else { continue };
                let received = received.clone();
                std::thread::spawn(move || serve(conn, &received));
            }
        });
        server
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Every request received so far, in arrival order.
    pub fn received(&self) -> Vec<Request> {
        self.received.lock().map(|r| r.clone()).unwrap_or_default()
    }

    /// The `tools/call`s received, as `(tool name, arguments)`.
    pub fn calls(&self) -> Vec<(String, Value)> {
        self.received()
            .iter()
            .filter_map(|r| serde_json::from_slice::<Value>(&r.body).ok())
            .filter(|m| m["method"] == "tools/call")
            .map(|m| {
                (
                    m["params"]["name"].as_str().unwrap_or_default().to_string(),
                    m["params"]["arguments"].clone(),
                )
            })
            .collect()
    }
}

impl Drop for McpServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect_timeout(&self.addr, Duration::from_millis(200));
    }
}

/// What the server answers to one message.
enum Answer {
    Json(Value),
    Sse(Vec<Value>),
    Status(u16),
}

fn serve(conn: TcpStream, received: &Mutex<Vec<Request>>) {
    let _ = conn.set_read_timeout(Some(Duration::from_secs(30)));
    let _ = conn.set_nodelay(true);
    let Ok(mut out) = conn.try_clone() else {
        return;
    };
    let mut reader = BufReader::new(conn);
    while let Ok(Some(req)) = read_request(&mut reader) {
        let answer = answer(&req);
        if let Ok(mut r) = received.lock() {
            r.push(req);
        }
        if write(&mut out, &answer).is_err() {
            return;
        }
    }
}

fn tools() -> Value {
    let schema = |props: Value| json!({"type": "object", "properties": props});
    json!([
        {"name": "lookup_order", "description": "Look up an order", "inputSchema": schema(json!({"order": {"type": "string"}}))},
        {"name": "get_faq", "description": "Read an FAQ entry", "inputSchema": schema(json!({"q": {"type": "string"}}))},
        {"name": "issue_refund", "description": "Refund an order", "inputSchema": schema(json!({"order": {"type": "string"}, "amount": {"type": "number"}}))},
        {"name": "delete_account", "description": "Delete a customer account", "inputSchema": schema(json!({"account": {"type": "string"}}))},
    ])
}

fn text(t: String) -> Value {
    json!({"content": [{"type": "text", "text": t}], "isError": false})
}

fn answer(req: &Request) -> Answer {
    if req.method == "GET" {
        return Answer::Status(405);
    }
    if req.method == "DELETE" {
        return Answer::Status(200);
    }
    let Ok(m) = serde_json::from_slice::<Value>(&req.body) else {
        return Answer::Json(
            json!({"jsonrpc": "2.0", "id": null, "error": {"code": -32700, "message": "parse error"}}),
        );
    };
    let id = m["id"].clone();
    if id.is_null() {
        // A notification, or a response to a request of ours (we send none).
        return Answer::Status(202);
    }
    let ok = |result: Value| json!({"jsonrpc": "2.0", "id": id, "result": result});
    let params = &m["params"];
    match m["method"].as_str().unwrap_or_default() {
        "initialize" => {
            let asked = params["protocolVersion"].as_str().unwrap_or_default();
            let version = if ["2025-06-18", "2025-11-25"].contains(&asked) {
                asked
            } else {
                "2025-06-18"
            };
            Answer::Json(ok(json!({
                "protocolVersion": version,
                "capabilities": {"tools": {"listChanged": false}},
                "serverInfo": {"name": "support-tools", "version": "1.0.0"},
            })))
        }
        "ping" => Answer::Json(ok(json!({}))),
        "tools/list" => Answer::Json(ok(json!({"tools": tools()}))),
        "tools/call" => {
            let args = &params["arguments"];
            match params["name"].as_str().unwrap_or_default() {
                "lookup_order" => {
                    let order = args["order"].as_str().unwrap_or("?");
                    Answer::Sse(vec![
                        json!({"jsonrpc": "2.0", "method": "notifications/message",
                            "params": {"level": "info", "data": format!("looking up {order}")}}),
                        ok(text(format!(
                            "Order {order} ships on Monday to {CUSTOMER_EMAIL}."
                        ))),
                    ])
                }
                "get_faq" => Answer::Json(ok(text(format!(
                    "To connect, set the key {LEAKED_KEY} in the config."
                )))),
                "issue_refund" => Answer::Json(ok(text(format!(
                    "Refund of {} EUR issued for order {}.",
                    args["amount"],
                    args["order"].as_str().unwrap_or("?")
                )))),
                "delete_account" => Answer::Json(ok(text("Account deleted.".into()))),
                other => Answer::Json(json!({"jsonrpc": "2.0", "id": id,
                    "error": {"code": -32602, "message": format!("unknown tool {other}")}})),
            }
        }
        other => Answer::Json(json!({"jsonrpc": "2.0", "id": id,
            "error": {"code": -32601, "message": format!("method not found: {other}")}})),
    }
}

fn write(out: &mut TcpStream, answer: &Answer) -> std::io::Result<()> {
    match answer {
        Answer::Json(v) => {
            let body = v.to_string();
            write!(
                out,
                "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
                body.len()
            )?;
        }
        Answer::Status(status) => {
            write!(out, "HTTP/1.1 {status} X\r\ncontent-length: 0\r\n\r\n")?;
        }
        Answer::Sse(messages) => {
            write!(
                out,
                "HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ncache-control: no-cache\r\ntransfer-encoding: chunked\r\n\r\n"
            )?;
            out.flush()?;
            for m in messages {
                let event = format!("event: message\ndata: {m}\n\n");
                // Two chunks, cut in the middle of the data (inside the email, for the
                // result), each flushed on its own.
                let cut = event.find('@').unwrap_or(event.len() / 2);
                for part in [&event[..cut], &event[cut..]] {
                    write!(out, "{:x}\r\n{part}\r\n", part.len())?;
                    out.flush()?;
                    std::thread::sleep(Duration::from_millis(20));
                }
            }
            write!(out, "0\r\n\r\n")?;
        }
    }
    out.flush()
}
