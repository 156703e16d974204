//! The proxy-wasm adapter: the only code that talks to the host (wasm32 only).
//!
//! The SDK provides the exported entry points and context bookkeeping; every call *into*
//! the host goes through [`host`], which declares the ABI imports itself and turns each
//! status into a `Result`. The SDK's own wrappers `panic!` on an unexpected status, and a
//! panic traps the VM and fails every later request on that worker, so they are not used.
//!
//! Failure answers (all fail closed, all `{"error":{"message","type","code"}}` JSON):
//! no policy loaded → 500 `policy_unavailable`; host call failed → 500 `host_error`;
//! non-JSON content type → 415; body over [`BODY_LIMIT`] → 413; malformed JSON → 400.

use std::rc::Rc;

use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{Action, ContextType, LogLevel};

use crate::eval::{Engine, Verdict};
use crate::request::{self, BodyError, Request};
use crate::wire::Reply;

/// Largest request body the engine buffers and parses. Envoy's default connection buffer
/// limit is 1 MiB and answers 413 itself above it; this keeps the engine's own bound equal.
pub const BODY_LIMIT: usize = 1 << 20;

proxy_wasm::main! {{
    // Installs the SDK's panic hook (logs a panic before the trap); the adapter itself
    // avoids panicking.
    proxy_wasm::set_log_level(LogLevel::Info);
    proxy_wasm::set_root_context(|_| -> Box<dyn RootContext> { Box::new(Root { engine: None }) });
}}

struct Root {
    /// `None` until the embedded policy loads; requests are refused while it is `None`.
    engine: Option<Rc<Engine>>,
}

impl Context for Root {}

impl RootContext for Root {
    fn on_vm_start(&mut self, _vm_configuration_size: usize) -> bool {
        let Some(blob) = crate::embedded_policy() else {
            host::log(
                LogLevel::Critical,
                "writ: this engine has no policy linked in; build the artifact with `writ build` (every request will be refused)",
            );
            return false;
        };
        match Engine::load(blob) {
            Ok(engine) => {
                let policy = &engine.policy;
                host::log(
                    LogLevel::Info,
                    &format!(
                        "writ: policy {} {} loaded ({} rules)",
                        policy.name,
                        policy.version,
                        policy.rules.len()
                    ),
                );
                self.engine = Some(Rc::new(engine));
                true
            }
            Err(e) => {
                host::log(
                    LogLevel::Critical,
                    &format!(
                        "writ: cannot load the embedded policy: {e} (every request will be refused)"
                    ),
                );
                false
            }
        }
    }

    fn on_configure(&mut self, _plugin_configuration_size: usize) -> bool {
        true
    }

    fn create_http_context(&self, _context_id: u32) -> Option<Box<dyn HttpContext>> {
        Some(Box::new(Http {
            engine: self.engine.clone(),
            headers: Vec::new(),
            body_len: 0,
            replied: false,
        }))
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }
}

struct Http {
    engine: Option<Rc<Engine>>,
    /// Request headers kept from the header callback until the body has arrived.
    headers: Vec<(String, String)>,
    /// Bytes of request body buffered so far, as the host last reported.
    body_len: usize,
    /// Set once a local reply was sent, so later callbacks do nothing.
    replied: bool,
}

impl Context for Http {}

impl HttpContext for Http {
    fn on_http_request_headers(&mut self, _num_headers: usize, end_of_stream: bool) -> Action {
        if self.engine.is_none() {
            return self.reply(&Reply::engine_error(
                "the policy engine has no policy loaded",
                "policy_unavailable",
            ));
        }
        let headers = match host::request_headers() {
            Ok(h) => h,
            Err(what) => return self.host_failed(what),
        };
        if end_of_stream {
            return self.decide(Request::from_headers(headers, None));
        }
        let header = |name: &str| {
            headers
                .iter()
                .find(|(n, _)| n.eq_ignore_ascii_case(name))
                .map(|(_, v)| v.as_str())
        };
        let content_type = header("content-type").unwrap_or("");
        if !request::is_json_content_type(content_type) {
            let err = BodyError::UnsupportedMediaType(content_type.to_string());
            return self.reply(&Reply::body_error(&err));
        }
        if let Some(len) = header("content-length").and_then(|v| v.trim().parse::<usize>().ok())
            && len > BODY_LIMIT
        {
            let err = BodyError::TooLarge { limit: BODY_LIMIT };
            return self.reply(&Reply::body_error(&err));
        }
        self.headers = headers;
        // Hold the headers until the body is complete; needs
        // `allow_on_headers_stop_iteration: true` in Envoy's plugin config.
        Action::Pause
    }

    fn on_http_request_body(&mut self, body_size: usize, end_of_stream: bool) -> Action {
        if self.replied {
            return Action::Pause;
        }
        if body_size > BODY_LIMIT {
            let err = BodyError::TooLarge { limit: BODY_LIMIT };
            return self.reply(&Reply::body_error(&err));
        }
        self.body_len = body_size;
        if !end_of_stream {
            // Ask the host to keep buffering until the last chunk (or the trailers).
            return Action::Pause;
        }
        self.finish(body_size)
    }

    fn on_http_request_trailers(&mut self, _num_trailers: usize) -> Action {
        // Trailers end a request whose last body chunk did not say so (HTTP/2, gRPC-web):
        // decide on the body buffered so far rather than wait forever.
        if self.replied || self.engine.is_none() {
            return Action::Pause;
        }
        self.finish(self.body_len)
    }
}

impl Http {
    /// Reads the complete buffered body and decides.
    fn finish(&mut self, body_size: usize) -> Action {
        let bytes = match host::request_body(body_size) {
            Ok(b) => b,
            Err(what) => return self.host_failed(what),
        };
        let body = match request::parse_body(&bytes, BODY_LIMIT) {
            Ok(body) => body,
            Err(err) => return self.reply(&Reply::body_error(&err)),
        };
        let headers = std::mem::take(&mut self.headers);
        self.decide(Request::from_headers(headers, Some(body)))
    }

    fn decide(&mut self, request: Request) -> Action {
        let Some(engine) = self.engine.clone() else {
            return self.reply(&Reply::engine_error(
                "the policy engine has no policy loaded",
                "policy_unavailable",
            ));
        };
        let decision = engine.evaluate_request(&request);
        for f in decision.would_have_denied() {
            let status = match engine.policy.rules.get(f.rule).map(|r| &r.action) {
                Some(crate::ir::Action::Deny { status, .. }) => *status,
                _ => 0,
            };
            host::log(
                LogLevel::Info,
                &format!(
                    "writ: monitor: would have denied {status} \"{}\" (clause {})",
                    f.title, f.clause
                ),
            );
        }
        // `decision.undecided` (conditions on features not enforced yet) is not logged per
        // request: audit records will carry it without a host call on every request.
        match decision.verdict {
            Verdict::Continue => Action::Continue,
            Verdict::Deny {
                status,
                message,
                clause,
                ..
            } => self.reply(&Reply::policy_violation(status, &message, &clause)),
        }
    }

    fn host_failed(&mut self, what: &str) -> Action {
        host::log(LogLevel::Error, &format!("writ: host call failed: {what}"));
        self.reply(&Reply::engine_error(
            "the policy engine could not read the request",
            "host_error",
        ))
    }

    /// Sends a local reply and stops the request. If the host refuses the reply too, the
    /// request stays paused (never continued unchecked) and the failure is logged.
    fn reply(&mut self, reply: &Reply) -> Action {
        self.replied = true;
        if let Err(status) = host::send_json(reply.status, &reply.body) {
            host::log(
                LogLevel::Error,
                &format!("writ: the host refused a local reply (status {status})"),
            );
        }
        Action::Pause
    }
}

/// The proxy-wasm ABI 0.2.1 imports the adapter uses, declared here so every status is a
/// `Result` and nothing panics.
mod host {
    use proxy_wasm::types::LogLevel;

    const OK: u32 = 0;
    const NOT_FOUND: u32 = 1;
    const MAP_REQUEST_HEADERS: u32 = 0;
    const BUFFER_REQUEST_BODY: u32 = 0;

    #[link(wasm_import_module = "env")]
    unsafe extern "C" {
        fn proxy_log(level: u32, data: *const u8, size: usize) -> u32;
        fn proxy_get_header_map_pairs(map: u32, data: *mut *mut u8, size: *mut usize) -> u32;
        fn proxy_get_buffer_bytes(
            buffer: u32,
            start: usize,
            max_size: usize,
            data: *mut *mut u8,
            size: *mut usize,
        ) -> u32;
        fn proxy_send_local_response(
            status: u32,
            details: *const u8,
            details_size: usize,
            body: *const u8,
            body_size: usize,
            headers: *const u8,
            headers_size: usize,
            grpc_status: i32,
        ) -> u32;
    }

    /// Logs through the host; a failure to log is ignored (there is nowhere to report it).
    pub fn log(level: LogLevel, message: &str) {
        // SAFETY: the pointer and length describe a live `&str` for the call's duration.
        let _ = unsafe { proxy_log(level as u32, message.as_ptr(), message.len()) };
    }

    /// Takes ownership of a buffer the host allocated through `proxy_on_memory_allocate`.
    ///
    /// SAFETY: `data` must be null or come from the SDK's allocator with exactly `size`
    /// bytes, which is what the ABI promises for returned buffers.
    unsafe fn owned(data: *mut u8, size: usize) -> Vec<u8> {
        if data.is_null() {
            Vec::new()
        } else {
            // SAFETY: guaranteed by the caller (see above).
            unsafe { Vec::from_raw_parts(data, size, size) }
        }
    }

    pub fn request_headers() -> Result<Vec<(String, String)>, &'static str> {
        let mut data = core::ptr::null_mut();
        let mut size = 0usize;
        // SAFETY: the out-pointers are valid for writes for the call's duration.
        let status =
            unsafe { proxy_get_header_map_pairs(MAP_REQUEST_HEADERS, &mut data, &mut size) };
        if status != OK {
            return Err("proxy_get_header_map_pairs");
        }
        // SAFETY: on OK the host returned a buffer from our allocator.
        let bytes = unsafe { owned(data, size) };
        crate::wire::decode_header_map(&bytes).ok_or("malformed header map")
    }

    pub fn request_body(size: usize) -> Result<Vec<u8>, &'static str> {
        let mut data = core::ptr::null_mut();
        let mut len = 0usize;
        // SAFETY: the out-pointers are valid for writes for the call's duration.
        let status =
            unsafe { proxy_get_buffer_bytes(BUFFER_REQUEST_BODY, 0, size, &mut data, &mut len) };
        match status {
            // SAFETY: on OK the host returned a buffer from our allocator.
            OK => Ok(unsafe { owned(data, len) }),
            NOT_FOUND => Ok(Vec::new()),
            _ => Err("proxy_get_buffer_bytes"),
        }
    }

    pub fn send_json(status: u16, body: &[u8]) -> Result<(), u32> {
        let headers = crate::wire::encode_header_map(&[("content-type", "application/json")]);
        // SAFETY: every pointer/length pair describes a live buffer for the call's duration.
        let rc = unsafe {
            proxy_send_local_response(
                u32::from(status),
                core::ptr::null(),
                0,
                body.as_ptr(),
                body.len(),
                headers.as_ptr(),
                headers.len(),
                -1,
            )
        };
        if rc == OK { Ok(()) } else { Err(rc) }
    }
}
