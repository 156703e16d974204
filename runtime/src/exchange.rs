//! One whole request through a VM: the convenience API for tests, `writ run` and anyone who
//! has the request and the upstream's reply as values.

use crate::abi::Headers;
use crate::error::HostError;
use crate::shared::MetricValue;
use crate::state::{LocalResponse, LogRecord, StreamInfo, header_get};
use crate::vm::{StreamId, Vm};

/// A request as a client sends it.
#[derive(Debug, Clone, Default)]
pub struct RequestSpec {
    pub method: String,
    pub path: String,
    /// `:authority`; defaults to `localhost`.
    pub authority: String,
    pub headers: Headers,
    /// The body as the chunks it arrives in (empty: no body).
    pub body: Vec<Vec<u8>>,
    pub info: StreamInfo,
}

impl RequestSpec {
    /// A request with a one-chunk body (or none, when `body` is empty).
    pub fn new(method: &str, path: &str, headers: &[(&str, &str)], body: &[u8]) -> Self {
        Self {
            method: method.to_string(),
            path: path.to_string(),
            authority: "localhost".to_string(),
            headers: headers
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            body: if body.is_empty() {
                Vec::new()
            } else {
                vec![body.to_vec()]
            },
            info: StreamInfo::default(),
        }
    }

    /// The request headers with pseudo-headers first, as the filter sees them.
    pub fn wire_headers(&self) -> Headers {
        let authority = if self.authority.is_empty() {
            "localhost"
        } else {
            &self.authority
        };
        let mut h = vec![
            (":method".to_string(), self.method.clone()),
            (":path".to_string(), self.path.clone()),
            (":authority".to_string(), authority.to_string()),
            (":scheme".to_string(), "http".to_string()),
        ];
        h.extend(self.headers.iter().cloned());
        h
    }
}

/// What the upstream received.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct UpstreamRequest {
    /// Headers including pseudo-headers, after the filter's edits.
    pub headers: Headers,
    #[serde(serialize_with = "ser_body")]
    pub body: Vec<u8>,
}

impl UpstreamRequest {
    /// A header value (case-insensitive), `:path` and `:method` included.
    pub fn header(&self, name: &str) -> Option<&str> {
        header_get(&self.headers, name)
    }
}

/// The upstream's reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpstreamReply {
    pub status: u16,
    pub headers: Headers,
    /// The body as the chunks it arrives in: one per SSE event for a stream.
    pub body: Vec<Vec<u8>>,
}

impl UpstreamReply {
    /// A reply with a one-chunk body.
    pub fn new(status: u16, headers: &[(&str, &str)], body: &[u8]) -> Self {
        Self {
            status,
            headers: headers
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            body: if body.is_empty() {
                Vec::new()
            } else {
                vec![body.to_vec()]
            },
        }
    }
}

/// What the client received.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct ClientResponse {
    pub status: u16,
    pub headers: Headers,
    /// The body as the chunks the filter released, in order.
    #[serde(serialize_with = "ser_chunks")]
    pub body: Vec<Vec<u8>>,
}

impl ClientResponse {
    /// The whole body, chunks joined.
    pub fn body_bytes(&self) -> Vec<u8> {
        self.body.concat()
    }

    /// A header value (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        header_get(&self.headers, name)
    }
}

/// The full record of one request through a filter.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct Exchange {
    /// What the upstream received; `None` when the filter answered locally or failed.
    pub upstream_request: Option<UpstreamRequest>,
    /// The filter's own reply, if it made one.
    pub local_response: Option<LocalResponse>,
    pub client_response: ClientResponse,
    pub logs: Vec<LogRecord>,
    /// Every metric of the host after the request.
    pub metrics: Vec<MetricValue>,
    /// Set when the host failed the request closed (trap, timeout, memory, stall).
    pub error: Option<String>,
    /// The machine-readable kind of `error` (`filter_timeout`, …).
    pub error_kind: Option<String>,
}

impl Vm {
    /// Drives one request through the whole callback sequence. `upstream` is asked for the
    /// reply once the filter releases the request; it is not called when the filter answers
    /// locally. Never fails: a host error becomes a fail-closed client response.
    pub fn http_request(
        &mut self,
        req: &RequestSpec,
        upstream: impl FnOnce(&UpstreamRequest) -> UpstreamReply,
    ) -> Exchange {
        let mut ex = Exchange::default();
        let id = match self.open_stream(req.info.clone()) {
            Ok(id) => id,
            Err(e) => return self.fail(ex, e, None),
        };
        match self.drive(id, req, upstream, &mut ex) {
            Ok(()) => {
                match self.close_stream(id) {
                    Ok(report) => ex.logs = report.logs,
                    Err(e) => return self.fail(ex, e, None),
                }
                ex.metrics = self.host().metrics();
                ex
            }
            Err(e) => self.fail(ex, e, Some(id)),
        }
    }

    fn fail(&mut self, mut ex: Exchange, e: HostError, id: Option<StreamId>) -> Exchange {
        if let Some(Ok(report)) = id.map(|id| self.close_stream(id)) {
            ex.logs = report.logs;
        }
        let reply = e.fail_closed_response();
        ex.upstream_request = None;
        ex.client_response = ClientResponse {
            status: reply.status,
            headers: reply.headers.clone(),
            body: vec![reply.body.clone()],
        };
        ex.error = Some(e.to_string());
        ex.error_kind = Some(e.kind().to_string());
        ex.metrics = self.host().metrics();
        ex
    }

    fn drive(
        &mut self,
        id: StreamId,
        req: &RequestSpec,
        upstream: impl FnOnce(&UpstreamRequest) -> UpstreamReply,
        ex: &mut Exchange,
    ) -> Result<(), HostError> {
        let mut up = UpstreamRequest::default();
        let mut done = false;
        let mut flows = vec![self.request_headers(id, req.wire_headers(), req.body.is_empty())?];
        let last = req.body.len().saturating_sub(1);
        for (i, chunk) in req.body.iter().enumerate() {
            if flows.iter().any(|f| f.local_response.is_some()) {
                break;
            }
            flows.push(self.request_body(id, chunk, i == last)?);
        }
        for flow in flows {
            if let Some(local) = flow.local_response {
                ex.client_response = ClientResponse {
                    status: local.status,
                    headers: local.headers.clone(),
                    body: if local.body.is_empty() {
                        Vec::new()
                    } else {
                        vec![local.body.clone()]
                    },
                };
                ex.local_response = Some(local);
                return Ok(());
            }
            if let Some(h) = flow.headers {
                up.headers = h;
            }
            up.body.extend_from_slice(&flow.body);
            done |= flow.end_of_stream;
        }
        if !done {
            return Err(HostError::Stalled("request"));
        }
        let reply = upstream(&up);
        ex.upstream_request = Some(up);

        let mut headers = vec![(":status".to_string(), reply.status.to_string())];
        headers.extend(reply.headers.iter().cloned());
        let mut flows = vec![self.response_headers(id, headers, reply.body.is_empty())?];
        let last = reply.body.len().saturating_sub(1);
        for (i, chunk) in reply.body.iter().enumerate() {
            if flows.iter().any(|f| f.local_response.is_some()) {
                break;
            }
            flows.push(self.response_body(id, chunk, i == last)?);
        }
        let mut client = ClientResponse::default();
        let mut done = false;
        for flow in flows {
            if let Some(local) = flow.local_response {
                client = ClientResponse {
                    status: local.status,
                    headers: local.headers.clone(),
                    body: vec![local.body.clone()],
                };
                ex.local_response = Some(local);
                done = true;
                break;
            }
            if let Some(h) = flow.headers {
                client.status = header_get(&h, ":status")
                    .and_then(|s| s.parse().ok())
                    .unwrap_or(reply.status);
                client.headers = h.into_iter().filter(|(k, _)| !k.starts_with(':')).collect();
            }
            if !flow.body.is_empty() {
                client.body.push(flow.body);
            }
            done |= flow.end_of_stream;
        }
        if !done {
            return Err(HostError::Stalled("response"));
        }
        ex.client_response = client;
        Ok(())
    }
}

/// Bodies serialize as UTF-8 text when they are, else as an array of bytes.
pub(crate) fn ser_body<S: serde::Serializer>(body: &[u8], s: S) -> Result<S::Ok, S::Error> {
    match std::str::from_utf8(body) {
        Ok(text) => s.serialize_str(text),
        Err(_) => s.collect_seq(body),
    }
}

fn ser_chunks<S: serde::Serializer>(chunks: &[Vec<u8>], s: S) -> Result<S::Ok, S::Error> {
    let texts: Vec<String> = chunks
        .iter()
        .map(|c| String::from_utf8_lossy(c).into_owned())
        .collect();
    s.collect_seq(texts)
}
