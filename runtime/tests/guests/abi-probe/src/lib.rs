//! A proxy-wasm filter that exercises every host call the writ runtime implements.
//! Behaviour is selected by the `x-probe` request header so one module drives every test.

use proxy_wasm::hostcalls;
use proxy_wasm::traits::*;
use proxy_wasm::types::*;
use std::time::Duration;

extern "C" {
    fn proxy_does_not_exist(a: u32) -> u32;
    fn proxy_log(level: u32, message_data: *const u8, message_size: usize) -> u32;
}

proxy_wasm::main! {{
    proxy_wasm::set_log_level(LogLevel::Trace);
    proxy_wasm::set_root_context(|_| -> Box<dyn RootContext> { Box::new(ProbeRoot::default()) });
}}

#[derive(Default)]
struct ProbeRoot {
    config: String,
    requests: u32,
    inflight: u32,
    body_bytes: u32,
    ticks: u32,
    queue: u32,
}

impl Context for ProbeRoot {}

impl RootContext for ProbeRoot {
    fn on_vm_start(&mut self, _size: usize) -> bool {
        let vm_config = self.get_vm_configuration().unwrap_or_default();
        proxy_wasm::hostcalls::log(
            LogLevel::Info,
            &format!("vm start: {}", String::from_utf8_lossy(&vm_config)),
        )
        .ok();
        self.queue = self.register_shared_queue("probe_queue");
        true
    }

    fn on_configure(&mut self, _size: usize) -> bool {
        self.config = String::from_utf8(self.get_plugin_configuration().unwrap_or_default())
            .unwrap_or_default();
        if self.config.contains("reject") {
            return false;
        }
        self.requests =
            hostcalls::define_metric(MetricType::Counter, "probe_requests_total").unwrap();
        self.inflight = hostcalls::define_metric(MetricType::Gauge, "probe_inflight").unwrap();
        self.body_bytes =
            hostcalls::define_metric(MetricType::Histogram, "probe_body_bytes").unwrap();
        self.ticks = hostcalls::define_metric(MetricType::Counter, "probe_ticks_total").unwrap();
        // A start that takes this long (a policy decoded at start-up, on a slow machine).
        if let Some(ms) = self.config.strip_prefix("start_ms=") {
            let ms: u64 = ms.trim().parse().unwrap_or(0);
            let until = self.get_current_time() + Duration::from_millis(ms);
            while self.get_current_time() < until {}
        }
        if let Some(ms) = self.config.strip_prefix("tick_ms=") {
            let ms: u64 = ms.trim().parse().unwrap_or(10);
            self.set_tick_period(Duration::from_millis(ms));
        }
        true
    }

    fn on_tick(&mut self) {
        hostcalls::increment_metric(self.ticks, 1).unwrap();
    }

    fn on_queue_ready(&mut self, queue_id: u32) {
        if let Ok(Some(item)) = self.dequeue_shared_queue(queue_id) {
            self.set_shared_data("queue_last", Some(&item), None)
                .unwrap();
        }
    }

    fn create_http_context(&self, _context_id: u32) -> Option<Box<dyn HttpContext>> {
        Some(Box::new(Probe {
            requests: self.requests,
            inflight: self.inflight,
            body_bytes: self.body_bytes,
            mode: String::new(),
            sse: false,
        }))
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }
}

struct Probe {
    requests: u32,
    inflight: u32,
    body_bytes: u32,
    mode: String,
    sse: bool,
}

fn prop(path: Vec<&str>) -> String {
    match hostcalls::get_property(path) {
        Ok(Some(v)) => String::from_utf8_lossy(&v).into_owned(),
        _ => "<none>".to_string(),
    }
}

impl Context for Probe {
    fn on_http_call_response(
        &mut self,
        _token: u32,
        _headers: usize,
        body_size: usize,
        _trailers: usize,
    ) {
        let status = self
            .get_http_call_response_header(":status")
            .unwrap_or_else(|| "none".to_string());
        let body = self
            .get_http_call_response_body(0, body_size)
            .unwrap_or_default();
        self.set_http_request_header("x-callout-status", Some(&status));
        self.set_http_request_header("x-callout-body", Some(&String::from_utf8_lossy(&body)));
        self.resume_http_request();
    }
}

impl HttpContext for Probe {
    fn on_http_request_headers(&mut self, _num_headers: usize, _end_of_stream: bool) -> Action {
        hostcalls::increment_metric(self.requests, 1).unwrap();
        hostcalls::increment_metric(self.inflight, 1).unwrap();
        self.mode = self.get_http_request_header("x-probe").unwrap_or_default();
        let path = self.get_http_request_header(":path").unwrap_or_default();
        proxy_wasm::hostcalls::log(
            LogLevel::Info,
            &format!("request {path} mode={}", self.mode),
        )
        .ok();

        self.add_http_request_header("x-probe-seen", "1");
        if self.get_http_request_header("x-replace-me").is_some() {
            self.set_http_request_header("x-replace-me", Some("replaced"));
        }
        self.set_http_request_header("x-remove-me", None);
        self.set_http_request_header("x-probe-request-id", Some(&prop(vec!["request", "id"])));
        self.set_http_request_header("x-probe-plugin-name", Some(&prop(vec!["plugin_name"])));
        self.set_http_request_header("x-probe-prop-path", Some(&prop(vec!["request", "path"])));
        self.set_http_request_header(
            "x-probe-prop-method",
            Some(&prop(vec!["request", "method"])),
        );
        self.set_http_request_header("x-probe-source", Some(&prop(vec!["source", "address"])));

        match self.mode.as_str() {
            "deny" => {
                self.send_http_response(
                    403,
                    vec![("x-denied", "yes"), ("content-type", "application/json")],
                    Some(b"{\"error\":\"denied\"}"),
                );
                return Action::Pause;
            }
            "loop" => {
                let mut i: u64 = 0;
                loop {
                    i = std::hint::black_box(i.wrapping_add(1));
                }
            }
            "oom" => {
                let v = vec![7u8; 1 << 30];
                std::hint::black_box(&v);
                self.set_http_request_header("x-oom-survived", Some(&v.len().to_string()));
            }
            "callout" => {
                match self.dispatch_http_call(
                    "backend",
                    vec![
                        (":method", "GET"),
                        (":path", "/lookup"),
                        (":authority", "backend"),
                    ],
                    None,
                    vec![],
                    Duration::from_secs(2),
                ) {
                    Ok(_) => return Action::Pause,
                    Err(status) => {
                        self.set_http_request_header(
                            "x-callout-error",
                            Some(&format!("{status:?}")),
                        );
                    }
                }
            }
            "callout-unknown" => {
                let r = self.dispatch_http_call(
                    "nope",
                    vec![(":method", "GET"), (":path", "/"), (":authority", "nope")],
                    None,
                    vec![],
                    Duration::from_secs(1),
                );
                self.set_http_request_header("x-callout-error", Some(&format!("{:?}", r.err())));
            }
            "shared" => {
                let mut value = 0u64;
                let mut used = None;
                for _ in 0..100 {
                    let (data, cas) = self.get_shared_data("counter");
                    value = data
                        .and_then(|d| String::from_utf8(d).ok())
                        .and_then(|s| s.parse().ok())
                        .unwrap_or(0)
                        + 1;
                    // A missing key is created with a token no key holds, never with 0:
                    // 0 means "no check", so a creator that lost the race to another
                    // creator would later overwrite every increment made since.
                    let cas = cas.or(Some(u32::MAX));
                    if self
                        .set_shared_data("counter", Some(value.to_string().as_bytes()), cas)
                        .is_ok()
                    {
                        used = cas;
                        break;
                    }
                }
                // The token our write consumed is stale now and must be refused.
                let stale_cas = used.unwrap_or(u32::MAX - 7);
                let stale = self.set_shared_data(
                    "counter",
                    Some(value.to_string().as_bytes()),
                    Some(stale_cas),
                );
                self.set_http_request_header("x-shared-counter", Some(&value.to_string()));
                self.set_http_request_header("x-shared-stale", Some(&format!("{:?}", stale.err())));
            }
            "queue" => {
                if let Ok(Some(q)) = hostcalls::resolve_shared_queue("", "probe_queue") {
                    self.enqueue_shared_queue(q, Some(b"hello")).unwrap();
                }
            }
            "pairs" => {
                let mut headers = self.get_http_request_headers();
                let n = headers.len();
                headers.push(("x-set-map".to_string(), n.to_string()));
                let refs: Vec<(&str, &str)> = headers
                    .iter()
                    .map(|(k, v)| (k.as_str(), v.as_str()))
                    .collect();
                self.set_http_request_headers(refs);
                self.set_http_request_header(":path", Some("/rewritten"));
            }
            "unimplemented" => {
                let status = unsafe { proxy_does_not_exist(1) };
                self.set_http_request_header("x-unimplemented", Some(&status.to_string()));
            }
            "unsupported" => {
                let foreign = hostcalls::call_foreign_function("nope", None);
                self.set_http_request_header("x-foreign", Some(&format!("{:?}", foreign.err())));
                let grpc =
                    self.dispatch_grpc_call("svc", "s", "m", vec![], None, Duration::from_secs(1));
                self.set_http_request_header("x-grpc", Some(&format!("{:?}", grpc.err())));
            }
            "badptr" => {
                let status = unsafe { proxy_log(2, 0xFFFF_FFF0usize as *const u8, 64) };
                self.set_http_request_header("x-badptr", Some(&status.to_string()));
            }
            "panic" => panic!("probe panic"),
            "time" => {
                let now = self.get_current_time();
                let ok = now > std::time::UNIX_EPOCH + Duration::from_secs(1_600_000_000);
                self.set_http_request_header("x-time-ok", Some(&ok.to_string()));
            }
            "hold-headers" => return Action::Pause,
            _ => {}
        }
        Action::Continue
    }

    fn on_http_request_body(&mut self, body_size: usize, end_of_stream: bool) -> Action {
        if !end_of_stream {
            return Action::Pause;
        }
        hostcalls::record_metric(self.body_bytes, body_size as u64).unwrap();
        if let Some(body) = self.get_http_request_body(0, body_size) {
            let text = String::from_utf8_lossy(&body);
            if text.contains("secret") {
                let new = text.replace("secret", "[redacted]");
                self.set_http_request_body(0, body_size, new.as_bytes());
            }
            if text.contains("block-in-body") {
                self.send_http_response(400, vec![], Some(b"blocked body"));
                return Action::Pause;
            }
        }
        Action::Continue
    }

    fn on_http_response_headers(&mut self, _num_headers: usize, _end_of_stream: bool) -> Action {
        if self.mode == "deny-response" {
            self.send_http_response(502, vec![("x-blocked", "reply")], Some(b"blocked reply"));
            return Action::Pause;
        }
        let status = self.get_http_response_header(":status").unwrap_or_default();
        self.set_http_response_header("x-probe-upstream-status", Some(&status));
        self.add_http_response_header("x-probe-response", "1");
        self.sse = self
            .get_http_response_header("content-type")
            .is_some_and(|c| c.contains("text/event-stream"));
        Action::Continue
    }

    fn on_http_response_body(&mut self, body_size: usize, end_of_stream: bool) -> Action {
        if self.sse {
            if let Some(chunk) = self.get_http_response_body(0, body_size) {
                let upper = String::from_utf8_lossy(&chunk).to_uppercase();
                self.set_http_response_body(0, body_size, upper.as_bytes());
            }
            return Action::Continue;
        }
        if !end_of_stream {
            return Action::Pause;
        }
        if let Some(body) = self.get_http_response_body(0, body_size) {
            let text = String::from_utf8_lossy(&body).replace("world", "WORLD");
            self.set_http_response_body(0, body_size, text.as_bytes());
        }
        Action::Continue
    }

    fn on_log(&mut self) {
        hostcalls::increment_metric(self.inflight, -1).unwrap();
        proxy_wasm::hostcalls::log(LogLevel::Debug, "done").ok();
    }
}
