//! A minimal blocking HTTP/1.1 client for `proxy_http_call` to a named cluster. Clusters are
//! plain `http://host:port` bases (loopback sidecars, review queues, audit sinks).

use crate::abi::Headers;
use crate::state::{CallResponse, header_get};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::time::Duration;

/// Largest callout reply read, so a misbehaving cluster cannot exhaust memory.
const MAX_REPLY: usize = 16 << 20;

/// Performs one call; the reply's headers carry `:status` first, as the guest expects.
pub(crate) fn perform(
    base: &str,
    headers: &Headers,
    body: &[u8],
    timeout: Duration,
) -> Result<CallResponse, String> {
    let rest = base
        .strip_prefix("http://")
        .ok_or_else(|| format!("unsupported cluster url `{base}` (http:// only)"))?;
    let (authority, prefix) = match rest.find('/') {
        Some(i) => (&rest[..i], rest[i..].trim_end_matches('/')),
        None => (rest, ""),
    };
    let addr = authority
        .to_socket_addrs()
        .map_err(|e| format!("resolve `{authority}`: {e}"))?
        .next()
        .ok_or_else(|| format!("no address for `{authority}`"))?;
    let mut stream =
        TcpStream::connect_timeout(&addr, timeout).map_err(|e| format!("connect: {e}"))?;
    stream
        .set_read_timeout(Some(timeout))
        .map_err(|e| e.to_string())?;
    stream
        .set_write_timeout(Some(timeout))
        .map_err(|e| e.to_string())?;
    let method = header_get(headers, ":method").unwrap_or("GET");
    let path = header_get(headers, ":path").unwrap_or("/");
    let host = header_get(headers, ":authority").unwrap_or(authority);
    let mut req = format!("{method} {prefix}{path} HTTP/1.1\r\nhost: {host}\r\n");
    for (k, v) in headers {
        if k.starts_with(':') || k == "host" || k == "content-length" || k == "connection" {
            continue;
        }
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str(&format!(
        "content-length: {}\r\nconnection: close\r\n\r\n",
        body.len()
    ));
    stream
        .write_all(req.as_bytes())
        .map_err(|e| format!("write: {e}"))?;
    stream.write_all(body).map_err(|e| format!("write: {e}"))?;
    read_response(stream)
}

fn read_response(stream: TcpStream) -> Result<CallResponse, String> {
    let mut reader = BufReader::new(stream.take(MAX_REPLY as u64));
    let mut line = String::new();
    reader
        .read_line(&mut line)
        .map_err(|e| format!("read: {e}"))?;
    let status = line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse::<u16>().ok())
        .ok_or_else(|| format!("bad status line `{}`", line.trim()))?;
    let mut headers = vec![(":status".to_string(), status.to_string())];
    loop {
        line.clear();
        reader
            .read_line(&mut line)
            .map_err(|e| format!("read: {e}"))?;
        let l = line.trim_end();
        if l.is_empty() {
            break;
        }
        if let Some((k, v)) = l.split_once(':') {
            headers.push((k.trim().to_ascii_lowercase(), v.trim().to_string()));
        }
    }
    let mut body = Vec::new();
    let chunked = header_get(&headers, "transfer-encoding")
        .is_some_and(|t| t.eq_ignore_ascii_case("chunked"));
    if chunked {
        loop {
            line.clear();
            reader
                .read_line(&mut line)
                .map_err(|e| format!("read: {e}"))?;
            let size = usize::from_str_radix(line.trim().split(';').next().unwrap_or(""), 16)
                .map_err(|_| "bad chunk size".to_string())?;
            if size == 0 {
                break;
            }
            let start = body.len();
            body.resize(start + size, 0);
            reader
                .read_exact(&mut body[start..])
                .map_err(|e| format!("read: {e}"))?;
            line.clear();
            reader
                .read_line(&mut line)
                .map_err(|e| format!("read: {e}"))?;
        }
    } else if let Some(len) = header_get(&headers, "content-length").and_then(|l| l.parse().ok()) {
        body.resize(len, 0);
        reader
            .read_exact(&mut body)
            .map_err(|e| format!("read: {e}"))?;
    } else {
        reader
            .read_to_end(&mut body)
            .map_err(|e| format!("read: {e}"))?;
    }
    Ok(CallResponse {
        headers,
        body,
        trailers: Vec::new(),
    })
}
