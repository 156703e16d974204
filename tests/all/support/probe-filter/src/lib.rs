//! A proxy-wasm probe for the host test harness.
//!
//! It behaves like writ's engine on the wire without any policy: it stops iteration in
//! `on_http_request_headers` until the whole body has been buffered (which hangs in Envoy
//! unless the plugin sets `allow_on_headers_stop_iteration`), forwards the body unchanged,
//! and tags the response with `x-probe: <request body length>` so a test can tell the filter
//! saw the whole body. It logs `probe-filter: vm started` in `on_vm_start` to time VM starts.
//! Every request also increments a counter in shared data (compare-and-swap) and the
//! response carries it as `x-probe-count`, which shows whether workers share data.
//! A request with the header `x-probe-trap` makes it trap (a panic, aborting), so tests can
//! see what the host's failure policy does with a dead VM.

use proxy_wasm::hostcalls;
use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{Action, ContextType, LogLevel, MapType};

proxy_wasm::main! {{
    proxy_wasm::set_log_level(LogLevel::Info);
    proxy_wasm::set_root_context(|_| -> Box<dyn RootContext> { Box::new(Root) });
}}

struct Root;

impl Context for Root {}

impl RootContext for Root {
    fn on_vm_start(&mut self, _vm_configuration_size: usize) -> bool {
        hostcalls::log(LogLevel::Info, "probe-filter: vm started").ok();
        true
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }

    fn create_http_context(&self, _context_id: u32) -> Option<Box<dyn HttpContext>> {
        Some(Box::new(Probe { body_len: 0 }))
    }
}

/// One stream: remembers how many request body bytes it saw.
struct Probe {
    body_len: usize,
}

impl Context for Probe {}

impl HttpContext for Probe {
    fn on_http_request_headers(&mut self, _num_headers: usize, end_of_stream: bool) -> Action {
        if let Ok(Some(_)) = hostcalls::get_map_value(MapType::HttpRequestHeaders, "x-probe-trap") {
            // Deliberate: the one way this guest fails, on request.
            #[allow(clippy::panic)]
            {
                panic!("probe-filter: trap requested");
            }
        }
        if end_of_stream {
            Action::Continue
        } else {
            // Hold the headers until the body is complete, as a policy engine must.
            Action::Pause
        }
    }

    fn on_http_request_body(&mut self, body_size: usize, end_of_stream: bool) -> Action {
        if end_of_stream {
            self.body_len = body_size;
            Action::Continue
        } else {
            Action::Pause
        }
    }

    fn on_http_response_headers(&mut self, _num_headers: usize, _end_of_stream: bool) -> Action {
        if let Some(count) = increment_shared_counter() {
            hostcalls::add_map_value(
                MapType::HttpResponseHeaders,
                "x-probe-count",
                &count.to_string(),
            )
            .ok();
        }
        // A failed set must not fail traffic: the probe only observes.
        hostcalls::add_map_value(
            MapType::HttpResponseHeaders,
            "x-probe",
            &self.body_len.to_string(),
        )
        .ok();
        Action::Continue
    }
}

/// Adds one to the shared `probe.count`, retrying on a lost compare-and-swap; `None` if the
/// host refuses.
fn increment_shared_counter() -> Option<u64> {
    for _ in 0..100 {
        let (value, cas) = hostcalls::get_shared_data("probe.count").ok()?;
        let current = value
            .and_then(|v| <[u8; 8]>::try_from(v.as_slice()).ok())
            .map_or(0, u64::from_le_bytes);
        let next = current + 1;
        if hostcalls::set_shared_data("probe.count", Some(&next.to_le_bytes()), cas).is_ok() {
            return Some(next);
        }
    }
    None
}
