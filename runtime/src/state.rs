//! What one VM's store holds between and during guest calls: its streams (HTTP contexts),
//! the callout in flight, logs, and a handle on the host-wide shared state.

use crate::abi::{Headers, LogLevel};
use crate::host::HostShared;
use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;
use wasmtime::{Memory, ResourceLimiter, TypedFunc};

/// One line the guest logged with `proxy_log`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct LogRecord {
    pub level: LogLevel,
    pub message: String,
}

/// How many times the guest called each host import, by import name (`proxy_log`,
/// `proxy_get_shared_data`, …). Generic over any proxy-wasm module: it lets a test measure
/// what a filter costs in host calls per request, with no knowledge of the filter.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HostCalls {
    /// The imports this host defines, by their static names: counting one costs a hash of
    /// the name, no allocation (every guest call of every import passes here).
    counts: HashMap<&'static str, u64>,
    /// Imports only stubbed for this module (names known at load time).
    others: HashMap<String, u64>,
}

impl HostCalls {
    pub(crate) fn count(&mut self, name: &'static str) {
        *self.counts.entry(name).or_insert(0) += 1;
    }

    /// [`HostCalls::count`] for an import whose name is not static (a stub).
    pub(crate) fn count_other(&mut self, name: &str) {
        match self.others.get_mut(name) {
            Some(n) => *n += 1,
            None => {
                self.others.insert(name.to_string(), 1);
            }
        }
    }

    /// Calls of the import `name` (0 when never called).
    pub fn get(&self, name: &str) -> u64 {
        self.counts
            .get(name)
            .or_else(|| self.others.get(name))
            .copied()
            .unwrap_or(0)
    }

    /// Calls of all imports together.
    pub fn total(&self) -> u64 {
        self.counts.values().chain(self.others.values()).sum()
    }

    /// Every import called at least once with its count, sorted by name.
    pub fn by_name(&self) -> std::collections::BTreeMap<&str, u64> {
        let mut all: std::collections::BTreeMap<&str, u64> =
            self.counts.iter().map(|(k, v)| (*k, *v)).collect();
        for (k, v) in &self.others {
            *all.entry(k.as_str()).or_insert(0) += v;
        }
        all
    }
}

/// A reply the filter produced itself instead of the upstream's (`proxy_send_local_response`).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct LocalResponse {
    pub status: u16,
    pub headers: Headers,
    #[serde(serialize_with = "crate::exchange::ser_body")]
    pub body: Vec<u8>,
    /// The `status_code_details` the filter gave, if any.
    pub details: String,
}

/// Connection facts a stream reports as properties (`source.address`, `request.id`, …).
#[derive(Debug, Clone, Default)]
pub struct StreamInfo {
    /// `request.id`; when absent the `x-request-id` header is used.
    pub request_id: Option<String>,
    pub source: Option<std::net::SocketAddr>,
    pub destination: Option<std::net::SocketAddr>,
    /// Extra properties for this stream only (`"route_name"` → bytes).
    pub properties: Vec<(String, Vec<u8>)>,
}

/// Header names compare case-insensitively and are stored lower-case, as in Envoy.
pub(crate) fn header_get<'a>(map: &'a Headers, key: &str) -> Option<&'a str> {
    map.iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(key))
        .map(|(_, v)| v.as_str())
}

pub(crate) fn header_add(map: &mut Headers, key: &str, value: &str) {
    map.push((key.to_ascii_lowercase(), value.to_string()));
    order_pseudo(map);
}

pub(crate) fn header_replace(map: &mut Headers, key: &str, value: &str) {
    let mut seen = false;
    map.retain_mut(|(k, v)| {
        if !k.eq_ignore_ascii_case(key) {
            return true;
        }
        if seen {
            return false;
        }
        seen = true;
        *v = value.to_string();
        true
    });
    if !seen {
        header_add(map, key, value);
    }
}

pub(crate) fn header_remove(map: &mut Headers, key: &str) {
    map.retain(|(k, _)| !k.eq_ignore_ascii_case(key));
}

/// Lower-cases names and moves pseudo-headers (`:path`…) to the front, keeping order.
pub(crate) fn normalize(mut map: Headers) -> Headers {
    for (k, _) in &mut map {
        k.make_ascii_lowercase();
    }
    order_pseudo(&mut map);
    map
}

fn order_pseudo(map: &mut Headers) {
    if map
        .iter()
        .skip_while(|(k, _)| k.starts_with(':'))
        .any(|(k, _)| k.starts_with(':'))
    {
        map.sort_by_key(|(k, _)| !k.starts_with(':'));
    }
}

/// One direction (request or response) of a stream.
#[derive(Debug, Default)]
pub(crate) struct Direction {
    pub headers: Headers,
    pub trailers: Headers,
    /// The body the guest currently sees: the held (buffered) bytes plus the new chunk.
    pub body: Vec<u8>,
    pub headers_released: bool,
    pub end_released: bool,
    /// Set by `proxy_continue_stream` while the direction is paused.
    pub resume: bool,
    /// Where the direction is paused (stage, end of stream seen), to resume it later.
    pub paused: Option<(Stage, bool)>,
}

/// A step of a direction: which callback ran last.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Stage {
    Headers,
    Body,
    Trailers,
}

/// One HTTP context.
#[derive(Debug, Default)]
pub(crate) struct StreamState {
    pub info: StreamInfo,
    pub request: Direction,
    pub response: Direction,
    pub local: Option<LocalResponse>,
    /// True while the response callbacks run over a local reply: a second local reply is
    /// ignored then, as the first is already being sent.
    pub in_local_reply: bool,
    pub logs: Vec<LogRecord>,
    pub properties: HashMap<String, Vec<u8>>,
    pub closed: bool,
}

/// A `proxy_http_call` waiting to be performed once the current callback returns.
#[derive(Debug, Clone)]
pub(crate) struct PendingCallout {
    pub token: u32,
    pub context: u32,
    pub cluster: String,
    pub headers: Headers,
    pub body: Vec<u8>,
    pub timeout: Duration,
}

/// The reply of a callout, readable by the guest during `proxy_on_http_call_response`.
#[derive(Debug, Clone, Default)]
pub(crate) struct CallResponse {
    pub headers: Headers,
    pub body: Vec<u8>,
    pub trailers: Headers,
}

/// Memory bound of a store; remembers a refusal so the resulting trap is reported as such.
pub(crate) struct Limiter {
    pub max_memory: usize,
    pub memory_refused: bool,
}

impl ResourceLimiter for Limiter {
    fn memory_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        if desired > self.max_memory {
            self.memory_refused = true;
            return Ok(false);
        }
        Ok(true)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        Ok(desired <= 1_000_000)
    }
}

/// The data of one wasmtime `Store`.
pub(crate) struct StoreState {
    pub limiter: Limiter,
    pub host: Arc<HostShared>,
    /// Unique per VM in the process; owns shared queues registered by this VM.
    pub serial: u64,
    pub memory: Option<Memory>,
    pub alloc: Option<TypedFunc<i32, i32>>,
    pub root_context: u32,
    /// The context the guest is running in (or made effective).
    pub active: u32,
    pub streams: HashMap<u32, StreamState>,
    pub root_logs: Vec<LogRecord>,
    pub tick_period: Option<Duration>,
    pub callouts: VecDeque<PendingCallout>,
    pub next_token: u32,
    pub call_response: Option<CallResponse>,
    /// Every import call of this VM since it started or [`crate::vm::Vm::take_host_calls`].
    pub host_calls: HostCalls,
    /// A buffer the imports reuse for what they hand the guest (a serialized header map, a
    /// header value), so a hot import allocates nothing once it has grown.
    pub scratch: Vec<u8>,
}

impl StoreState {
    pub(crate) fn new(host: Arc<HostShared>, serial: u64) -> Self {
        Self {
            limiter: Limiter {
                max_memory: host.limits.max_memory_bytes,
                memory_refused: false,
            },
            host,
            serial,
            memory: None,
            alloc: None,
            root_context: 1,
            active: 1,
            streams: HashMap::new(),
            root_logs: Vec::new(),
            tick_period: None,
            callouts: VecDeque::new(),
            next_token: 1,
            call_response: None,
            host_calls: HostCalls::default(),
            scratch: Vec::new(),
        }
    }

    /// The stream the guest is acting on, if the active context is one.
    pub(crate) fn stream(&mut self) -> Option<&mut StreamState> {
        self.streams.get_mut(&self.active)
    }

    pub(crate) fn log(&mut self, level: LogLevel, message: String) {
        let context = self.active;
        match level {
            LogLevel::Trace => tracing::trace!(target: "writ::guest", context, "{message}"),
            LogLevel::Debug => tracing::debug!(target: "writ::guest", context, "{message}"),
            LogLevel::Info => tracing::info!(target: "writ::guest", context, "{message}"),
            LogLevel::Warn => tracing::warn!(target: "writ::guest", context, "{message}"),
            LogLevel::Error | LogLevel::Critical => {
                tracing::error!(target: "writ::guest", context, "{message}")
            }
        }
        let record = LogRecord { level, message };
        match self.streams.get_mut(&context) {
            Some(s) => s.logs.push(record),
            None => self.root_logs.push(record),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::HostCalls;

    #[test]
    fn host_calls_are_counted_by_import_name() {
        let mut calls = HostCalls::default();
        assert_eq!(calls.total(), 0);
        for name in ["proxy_log", "proxy_get_shared_data", "proxy_log"] {
            calls.count(name);
        }
        assert_eq!(calls.get("proxy_log"), 2);
        assert_eq!(calls.get("proxy_get_shared_data"), 1);
        assert_eq!(calls.get("proxy_set_shared_data"), 0);
        calls.count_other("random_get");
        assert_eq!(calls.get("random_get"), 1);
        assert_eq!(calls.total(), 4);
        let names: Vec<_> = calls.by_name().into_iter().collect();
        assert_eq!(
            names,
            [
                ("proxy_get_shared_data", 1),
                ("proxy_log", 2),
                ("random_get", 1)
            ]
        );
    }
}
