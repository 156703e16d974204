//! A minimal HTTP/1.1 client and message reader, enough for tests to talk to a gateway and
//! for the recording upstream to read what the gateway forwards. Hand-written on std so the
//! tests control every timeout and see the bytes exactly as sent (no client-side rewriting).

use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

/// Header name/value pairs in wire order, names lower-cased.
pub type Headers = Vec<(String, String)>;

/// An HTTP request as sent by a client or as received by the upstream.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Request {
    pub method: String,
    pub path: String,
    /// In wire order; names lower-cased.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Request {
    /// A `POST` with a JSON body.
    pub fn post_json(path: &str, body: &str) -> Request {
        Request {
            method: "POST".into(),
            path: path.into(),
            headers: vec![("content-type".into(), "application/json".into())],
            body: body.as_bytes().to_vec(),
        }
    }

    /// Adds a header (builder style).
    pub fn header(mut self, name: &str, value: &str) -> Request {
        self.headers.push((name.to_ascii_lowercase(), value.into()));
        self
    }

    /// The first value of header `name` (case-insensitive).
    pub fn header_value(&self, name: &str) -> Option<&str> {
        find_header(&self.headers, name)
    }
}

/// An HTTP response as received by a client.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Response {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Response {
    pub fn header_value(&self, name: &str) -> Option<&str> {
        find_header(&self.headers, name)
    }

    pub fn body_str(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// The body parsed as JSON, or `Null` if it is not JSON.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or(serde_json::Value::Null)
    }
}

fn find_header<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
}

/// Sends `req` to `addr` on a fresh connection and reads the whole response, failing after
/// `timeout` without progress.
pub fn send(addr: SocketAddr, req: &Request, timeout: Duration) -> std::io::Result<Response> {
    let mut conn = Connection::open(addr, timeout)?;
    conn.close_after = true;
    conn.request(req)
}

/// What [`send_raw`] read back.
#[derive(Debug, Default)]
pub struct RawReplies {
    pub responses: Vec<Response>,
    /// Whether the last response's body ended as framed (false: the server cut it short,
    /// and that response holds what arrived).
    pub complete: bool,
}

/// Writes `bytes` to `addr` as they are (malformed requests, pipelined ones, HTTP/1.0) and
/// reads up to `responses` responses, skipping interim 1xx ones. Fewer come back when the
/// server closes the connection first; an error only when the connection fails outright.
pub fn send_raw(
    addr: SocketAddr,
    bytes: &[u8],
    responses: usize,
    timeout: Duration,
) -> std::io::Result<RawReplies> {
    let stream = TcpStream::connect_timeout(&addr, timeout)?;
    stream.set_read_timeout(Some(timeout))?;
    stream.set_write_timeout(Some(timeout))?;
    let mut writer = stream.try_clone()?;
    // The peer may refuse and close before it has read everything: not an error here.
    let _ = writer.write_all(bytes).and_then(|()| writer.flush());
    let mut reader = BufReader::new(stream);
    let mut out = Vec::new();
    let mut complete = true;
    while out.len() < responses {
        let head = match read_head(&mut reader) {
            Ok(Some(head)) => head,
            Ok(None) => break,
            Err(e) if out.is_empty() && e.kind() != std::io::ErrorKind::ConnectionReset => {
                return Err(e);
            }
            Err(_) => break,
        };
        let (status_line, headers) = head;
        let status: u16 = status_line
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| bad(format!("bad status line `{status_line}`")))?;
        if (100..200).contains(&status) {
            continue;
        }
        let mut body = Vec::new();
        let read = read_body_into(&mut reader, &headers, true, &mut body);
        out.push(Response {
            status,
            headers,
            body,
        });
        if read.is_err() {
            complete = false;
            break;
        }
    }
    Ok(RawReplies {
        responses: out,
        complete,
    })
}

/// A client connection that may carry many requests (keep-alive), for measuring per-request
/// cost without connection set-up in every sample.
pub struct Connection {
    addr: SocketAddr,
    writer: TcpStream,
    reader: BufReader<TcpStream>,
    /// Ask the server to close after the next response.
    pub close_after: bool,
}

impl Connection {
    pub fn open(addr: SocketAddr, timeout: Duration) -> std::io::Result<Connection> {
        let stream = TcpStream::connect_timeout(&addr, timeout)?;
        stream.set_read_timeout(Some(timeout))?;
        stream.set_write_timeout(Some(timeout))?;
        stream.set_nodelay(true)?;
        Ok(Connection {
            addr,
            writer: stream.try_clone()?,
            reader: BufReader::new(stream),
            close_after: false,
        })
    }

    /// Sends one request and reads its whole response.
    pub fn request(&mut self, req: &Request) -> std::io::Result<Response> {
        let mut head = format!(
            "{} {} HTTP/1.1\r\nhost: {}\r\n",
            req.method, req.path, self.addr
        );
        for (n, v) in &req.headers {
            head.push_str(&format!("{n}: {v}\r\n"));
        }
        if req.header_value("content-length").is_none() {
            head.push_str(&format!("content-length: {}\r\n", req.body.len()));
        }
        if self.close_after {
            head.push_str("connection: close\r\n");
        }
        head.push_str("\r\n");
        let mut message = head.into_bytes();
        message.extend_from_slice(&req.body);
        self.writer.write_all(&message)?;
        self.writer.flush()?;
        let (status_line, headers) = read_head(&mut self.reader)?.ok_or_else(|| {
            std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                "connection closed before a response",
            )
        })?;
        let status = status_line
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| bad(format!("bad status line `{status_line}`")))?;
        let body = read_body(&mut self.reader, &headers, true)?;
        Ok(Response {
            status,
            headers,
            body,
        })
    }
}

/// Reads one request from a server-side connection; `None` at a clean end of connection.
pub fn read_request(reader: &mut impl BufRead) -> std::io::Result<Option<Request>> {
    let Some((line, headers)) = read_head(reader)? else {
        return Ok(None);
    };
    let mut parts = line.split_whitespace();
    let method = parts.next().unwrap_or_default().to_string();
    let path = parts.next().unwrap_or_default().to_string();
    let body = read_body(reader, &headers, false)?;
    Ok(Some(Request {
        method,
        path,
        headers,
        body,
    }))
}

fn bad(msg: String) -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::InvalidData, msg)
}

/// Reads the start line and headers; `None` if the peer closed before sending anything.
fn read_head(reader: &mut impl BufRead) -> std::io::Result<Option<(String, Headers)>> {
    let mut start = String::new();
    if reader.read_line(&mut start)? == 0 {
        return Ok(None);
    }
    let mut headers = Vec::new();
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line)? == 0 {
            return Err(bad("connection closed inside headers".into()));
        }
        let line = line.trim_end_matches(['\r', '\n']);
        if line.is_empty() {
            break;
        }
        let (n, v) = line
            .split_once(':')
            .ok_or_else(|| bad(format!("bad header line `{line}`")))?;
        headers.push((n.trim().to_ascii_lowercase(), v.trim().to_string()));
    }
    Ok(Some((start.trim_end().to_string(), headers)))
}

/// Reads a body framed by content-length or chunked encoding; a response without either
/// runs to the end of the connection.
fn read_body(
    reader: &mut impl BufRead,
    headers: &[(String, String)],
    is_response: bool,
) -> std::io::Result<Vec<u8>> {
    let mut body = Vec::new();
    read_body_into(reader, headers, is_response, &mut body)?;
    Ok(body)
}

/// As [`read_body`], into `body`, which keeps what arrived when the read fails.
fn read_body_into(
    reader: &mut impl BufRead,
    headers: &[(String, String)],
    is_response: bool,
    body: &mut Vec<u8>,
) -> std::io::Result<()> {
    if find_header(headers, "transfer-encoding").is_some_and(|v| v.eq_ignore_ascii_case("chunked"))
    {
        loop {
            let mut size_line = String::new();
            reader.read_line(&mut size_line)?;
            let size_hex = size_line.trim().split(';').next().unwrap_or_default();
            let size = usize::from_str_radix(size_hex, 16)
                .map_err(|_| bad(format!("bad chunk size `{size_line}`")))?;
            let mut chunk = vec![0; size + 2];
            reader.read_exact(&mut chunk)?;
            if size == 0 {
                // No trailers are sent by the peers in these tests; `chunk` held the CRLF.
                break;
            }
            body.extend_from_slice(&chunk[..size]);
        }
    } else if let Some(len) = find_header(headers, "content-length") {
        let len: usize = len
            .parse()
            .map_err(|_| bad(format!("bad content-length `{len}`")))?;
        let mut rest = vec![0; len];
        reader.read_exact(&mut rest)?;
        body.extend_from_slice(&rest);
    } else if is_response {
        reader.read_to_end(body)?;
    }
    Ok(())
}
