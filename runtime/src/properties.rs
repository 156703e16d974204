//! `proxy_get_property`: the attributes Envoy exposes that filters commonly read
//! (`request.*`, `response.*`, `source.*`, `plugin_*`…). Strings are raw bytes, integers
//! 8-byte little-endian, as Envoy serializes them.

use crate::state::{StoreState, header_get};

fn int(v: i64) -> Vec<u8> {
    v.to_le_bytes().to_vec()
}

/// Looks a property path up for the active context; `None` is `NotFound`.
pub(crate) fn lookup(s: &mut StoreState, parts: &[String]) -> Option<Vec<u8>> {
    let key = parts.join(".");
    let host = s.host.clone();
    match key.as_str() {
        "plugin_name" => return Some(host.plugin_name.as_bytes().to_vec()),
        "plugin_root_id" => return Some(host.root_id.as_bytes().to_vec()),
        "plugin_vm_id" => return Some(host.vm_id.as_bytes().to_vec()),
        _ => {}
    }
    if let Some(stream) = s.stream() {
        if let Some(v) = stream.properties.get(&key) {
            return Some(v.clone());
        }
        if let Some((_, v)) = stream.info.properties.iter().find(|(k, _)| *k == key) {
            return Some(v.clone());
        }
        let req = &stream.request.headers;
        let resp = &stream.response.headers;
        let text = |v: Option<&str>| v.map(|v| v.as_bytes().to_vec());
        let path = header_get(req, ":path").unwrap_or("");
        let found = match parts
            .iter()
            .map(String::as_str)
            .collect::<Vec<_>>()
            .as_slice()
        {
            ["request", "path"] => text(Some(path)),
            ["request", "url_path"] => text(Some(path.split('?').next().unwrap_or(""))),
            ["request", "query"] => text(Some(path.split_once('?').map_or("", |(_, q)| q))),
            ["request", "method"] => text(header_get(req, ":method")),
            ["request", "host"] => text(header_get(req, ":authority")),
            ["request", "scheme"] => text(header_get(req, ":scheme").or(Some("http"))),
            ["request", "protocol"] => text(Some("HTTP/1.1")),
            ["request", "useragent"] => text(header_get(req, "user-agent")),
            ["request", "referer"] => text(header_get(req, "referer")),
            ["request", "id"] => stream
                .info
                .request_id
                .clone()
                .map(String::into_bytes)
                .or_else(|| text(header_get(req, "x-request-id"))),
            ["request", "headers", name] => text(header_get(req, name)),
            ["request", "size"] | ["request", "total_size"] => {
                Some(int(stream.request.body.len() as i64))
            }
            ["response", "code"] => header_get(resp, ":status")
                .and_then(|c| c.parse::<i64>().ok())
                .map(int),
            ["response", "headers", name] => text(header_get(resp, name)),
            ["response", "size"] | ["response", "total_size"] => {
                Some(int(stream.response.body.len() as i64))
            }
            ["source", "address"] => stream.info.source.map(|a| a.to_string().into_bytes()),
            ["source", "port"] => stream.info.source.map(|a| int(i64::from(a.port()))),
            ["destination", "address"] => {
                stream.info.destination.map(|a| a.to_string().into_bytes())
            }
            ["destination", "port"] => stream.info.destination.map(|a| int(i64::from(a.port()))),
            _ => None,
        };
        if found.is_some() {
            return found;
        }
    }
    host.properties.get(&key).cloned()
}
