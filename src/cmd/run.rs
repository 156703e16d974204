//! `writ run`: one request through an artifact in the embedded wasmtime host, JSON in and
//! JSON out, so a policy's behaviour can be checked without Envoy or a live model.
//!
//! Request file: `{"method", "path", "headers": {name: value}, "body": <JSON value>}` (or
//! `"body_text": "raw"`, or `"body_chunks": ["a", "b"]` to deliver it in pieces).
//! Reply file: `{"status", "headers", "body": <JSON value>}` or `"body_text"`, or
//! `{"events": [<JSON value or string>, …]}` for an SSE stream (`data: …` per event).

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, bail};
use serde_json::{Value, json};
use writ_runtime::{Exchange, Headers, Host, HostConfig, RequestSpec, UpstreamReply};

/// Arguments of `writ run`.
#[derive(Debug, clap::Args)]
pub struct RunArgs {
    /// The artifact (any proxy-wasm module).
    pub artifact: PathBuf,
    /// The request, as JSON.
    #[arg(long)]
    pub request: PathBuf,
    /// The upstream's reply, as JSON; without it the upstream answers 200 `{}`.
    #[arg(long)]
    pub reply: Option<PathBuf>,
    /// Plugin configuration handed to the module (`proxy_on_configure`).
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Cache compiled modules here (keyed by the module's sha256); default
    /// `$WRIT_CACHE_DIR`, else `$XDG_CACHE_HOME/writ`, else `~/.cache/writ`.
    #[arg(long)]
    pub cache_dir: Option<PathBuf>,
    /// Compile the module every time instead of using the cache.
    #[arg(long)]
    pub no_cache: bool,
}

/// Runs the request and prints the exchange as JSON.
pub fn run(args: RunArgs) -> anyhow::Result<ExitCode> {
    let module = std::fs::read(&args.artifact)
        .with_context(|| format!("cannot read {}", args.artifact.display()))?;
    let request = read_json(&args.request)?;
    let reply = match &args.reply {
        Some(path) => read_json(path)?,
        None => json!({"status": 200, "headers": {"content-type": "application/json"}, "body": {}}),
    };
    let mut config = HostConfig::new(module);
    config.cache_dir = cache_dir(args.cache_dir.as_ref(), args.no_cache);
    config.limits.max_vms = 2;
    if let Some(path) = &args.config {
        config.plugin_config =
            std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
    }
    let host = Host::new(config).with_context(|| args.artifact.display().to_string())?;
    let mut vm = host.vm()?;
    let spec = request_spec(&request)?;
    let upstream = upstream_reply(&reply)?;
    let exchange = vm.http_request(&spec, |_| upstream);
    let text = serde_json::to_string_pretty(&render(&exchange))?;
    // A closed pipe (`writ run … | head`) is not an error of the tool.
    match writeln!(std::io::stdout().lock(), "{text}") {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => return Err(e.into()),
        _ => {}
    }
    Ok(ExitCode::SUCCESS)
}

/// Where compiled modules are cached, so a second run skips compilation (seconds in debug
/// builds, ~100 ms in release).
pub fn cache_dir(explicit: Option<&PathBuf>, disabled: bool) -> Option<PathBuf> {
    if disabled {
        return None;
    }
    if let Some(dir) = explicit {
        return Some(dir.clone());
    }
    let env = |k: &str| {
        std::env::var_os(k)
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
    };
    env("WRIT_CACHE_DIR")
        .or_else(|| env("XDG_CACHE_HOME").map(|d| d.join("writ")))
        .or_else(|| env("HOME").map(|d| d.join(".cache").join("writ")))
}

pub(super) fn read_json(path: &PathBuf) -> anyhow::Result<Value> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    serde_json::from_str(&text).with_context(|| format!("{} is not valid JSON", path.display()))
}

fn headers(v: Option<&Value>) -> anyhow::Result<Headers> {
    match v {
        None | Some(Value::Null) => Ok(Vec::new()),
        Some(Value::Object(map)) => Ok(map
            .iter()
            .map(|(k, v)| {
                (
                    k.clone(),
                    v.as_str().map_or_else(|| v.to_string(), str::to_string),
                )
            })
            .collect()),
        Some(Value::Array(pairs)) => pairs
            .iter()
            .map(|p| match p.as_array().map(Vec::as_slice) {
                Some([Value::String(k), Value::String(v)]) => Ok((k.clone(), v.clone())),
                _ => bail!("a header pair must be [\"name\", \"value\"]"),
            })
            .collect(),
        Some(_) => bail!("`headers` must be an object or a list of [name, value] pairs"),
    }
}

fn body_chunks(v: &Value) -> anyhow::Result<Vec<Vec<u8>>> {
    if let Some(chunks) = v.get("body_chunks") {
        let Some(chunks) = chunks.as_array() else {
            bail!("`body_chunks` must be a list of strings");
        };
        return chunks
            .iter()
            .map(|c| match c {
                Value::String(s) => Ok(s.clone().into_bytes()),
                _ => bail!("`body_chunks` must be a list of strings"),
            })
            .collect();
    }
    let body = match (v.get("body_text"), v.get("body")) {
        (Some(Value::String(text)), _) => text.clone().into_bytes(),
        (Some(_), _) => bail!("`body_text` must be a string"),
        (None, None | Some(Value::Null)) => Vec::new(),
        (None, Some(value)) => serde_json::to_vec(value)?,
    };
    Ok(if body.is_empty() {
        Vec::new()
    } else {
        vec![body]
    })
}

pub(super) fn request_spec(v: &Value) -> anyhow::Result<RequestSpec> {
    let text = |key: &str, default: &str| {
        v.get(key)
            .and_then(Value::as_str)
            .unwrap_or(default)
            .to_string()
    };
    let mut headers = headers(v.get("headers"))?;
    let body = body_chunks(v)?;
    if !body.is_empty()
        && !headers
            .iter()
            .any(|(k, _)| k.eq_ignore_ascii_case("content-type"))
    {
        headers.push(("content-type".to_string(), "application/json".to_string()));
    }
    Ok(RequestSpec {
        method: text("method", "POST"),
        path: text("path", "/v1/chat/completions"),
        authority: text("authority", "localhost"),
        headers,
        body,
        info: Default::default(),
    })
}

pub(super) fn upstream_reply(v: &Value) -> anyhow::Result<UpstreamReply> {
    let status = v.get("status").and_then(Value::as_u64).unwrap_or(200);
    let Ok(status) = u16::try_from(status) else {
        bail!("`status` must be an HTTP status code");
    };
    let mut headers = headers(v.get("headers"))?;
    let has_type = |h: &Headers| {
        h.iter()
            .any(|(k, _)| k.eq_ignore_ascii_case("content-type"))
    };
    let body = if let Some(events) = v.get("events") {
        let Some(events) = events.as_array() else {
            bail!("`events` must be a list");
        };
        if !has_type(&headers) {
            headers.push(("content-type".to_string(), "text/event-stream".to_string()));
        }
        events
            .iter()
            .map(|e| {
                let data = match e {
                    Value::String(s) => s.clone(),
                    other => other.to_string(),
                };
                format!("data: {data}\n\n").into_bytes()
            })
            .collect()
    } else {
        if !has_type(&headers) {
            headers.push(("content-type".to_string(), "application/json".to_string()));
        }
        body_chunks(v)?
    };
    Ok(UpstreamReply {
        status,
        headers,
        body,
    })
}

/// A body as JSON when it parses as JSON, else as text.
fn body_value(bytes: &[u8]) -> Value {
    serde_json::from_slice(bytes)
        .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(bytes).into_owned()))
}

/// Headers as an object; a repeated name maps to the list of its values.
fn headers_value(h: &Headers) -> Value {
    let mut map = serde_json::Map::new();
    for (k, v) in h {
        match map.get_mut(k) {
            None => {
                map.insert(k.clone(), Value::String(v.clone()));
            }
            Some(Value::Array(values)) => values.push(Value::String(v.clone())),
            Some(first) => {
                let prev = first.take();
                *first = Value::Array(vec![prev, Value::String(v.clone())]);
            }
        }
    }
    Value::Object(map)
}

fn render(ex: &Exchange) -> Value {
    json!({
        "upstream_request": ex.upstream_request.as_ref().map(|u| json!({
            "headers": headers_value(&u.headers),
            "body": body_value(&u.body),
        })),
        "local_response": ex.local_response.as_ref().map(|l| json!({
            "status": l.status,
            "headers": headers_value(&l.headers),
            "body": body_value(&l.body),
        })),
        "client_response": {
            "status": ex.client_response.status,
            "headers": headers_value(&ex.client_response.headers),
            "body": body_value(&ex.client_response.body_bytes()),
            "chunks": ex.client_response.body.iter()
                .map(|c| String::from_utf8_lossy(c).into_owned())
                .collect::<Vec<_>>(),
        },
        "logs": ex.logs,
        "metrics": ex.metrics,
        "error": ex.error,
        "error_kind": ex.error_kind,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_and_reply_files_parse() {
        let req = request_spec(&json!({
            "method": "POST", "path": "/v1/x", "headers": {"x-a": "1"}, "body": {"k": "v"}
        }))
        .unwrap_or_default();
        assert_eq!(req.path, "/v1/x");
        assert_eq!(req.body, vec![br#"{"k":"v"}"#.to_vec()]);
        assert!(
            req.headers
                .contains(&("content-type".into(), "application/json".into()))
        );

        let reply = upstream_reply(&json!({"events": [{"a": 1}, "[DONE]"]}));
        let reply = reply.unwrap_or_else(|_| UpstreamReply::new(0, &[], b""));
        assert_eq!(reply.status, 200);
        assert_eq!(
            reply.body,
            vec![
                b"data: {\"a\":1}\n\n".to_vec(),
                b"data: [DONE]\n\n".to_vec()
            ]
        );
        assert!(upstream_reply(&json!({"status": 70000})).is_err());
        assert_eq!(
            headers_value(&vec![("a".into(), "1".into()), ("a".into(), "2".into())]),
            json!({"a": ["1", "2"]})
        );
    }
}
