//! The host calls writ's artifact makes for the bench's 4 KB JSON request, without any
//! policy work: both header maps read, both bodies buffered, read and written back, the
//! shared-data reads and CAS writes (kill switch, spend, rate counters), the upstream and
//! rate-limit header edits, one property read, the clock, eight metric updates and one
//! 1.5 KB log line. Run in Envoy in place of the pass-through filter, it splits writ's cost
//! into the proxy-wasm ABI's share and the guest's own work. Built with `PROBE=buf`, it
//! only buffers both bodies and copies them in and out.

use proxy_wasm::hostcalls;
use proxy_wasm::traits::*;
use proxy_wasm::types::*;

const MODE: &str = match option_env!("PROBE") {
    Some(m) => m,
    None => "abi",
};

proxy_wasm::main! {{
    proxy_wasm::set_root_context(|_| -> Box<dyn RootContext> { Box::new(Root { ids: vec![] }) });
}}

struct Root {
    ids: Vec<u32>,
}

impl Context for Root {}

impl RootContext for Root {
    fn on_vm_start(&mut self, _: usize) -> bool {
        if MODE == "abi" {
            for i in 0..8 {
                if let Ok(id) = hostcalls::define_metric(MetricType::Counter, &format!("probe_{i}")) {
                    self.ids.push(id);
                }
            }
        }
        true
    }

    fn create_http_context(&self, _: u32) -> Option<Box<dyn HttpContext>> {
        Some(Box::new(Probe { ids: self.ids.clone() }))
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }
}

struct Probe {
    ids: Vec<u32>,
}

impl Context for Probe {}

impl HttpContext for Probe {
    fn on_http_request_headers(&mut self, _: usize, _: bool) -> Action {
        if MODE == "abi" {
            std::hint::black_box(self.get_http_request_headers());
            let _ = self.get_property(vec!["writ", "host_retry"]);
        }
        Action::Pause
    }

    fn on_http_request_body(&mut self, size: usize, end_of_stream: bool) -> Action {
        if !end_of_stream {
            return Action::Pause;
        }
        let body = self.get_http_request_body(0, size).unwrap_or_default();
        if MODE == "abi" {
            for key in ["ks_all", "ks_workflow", "spend", "rate"] {
                let (value, cas) = self.get_shared_data(key);
                if key == "spend" || key == "rate" {
                    let _ = self.set_shared_data(key, Some(&value.unwrap_or_default()), cas);
                }
            }
            let _ = hostcalls::get_current_time();
            self.remove_http_request_header("content-length");
            self.set_http_request_header("accept-encoding", Some("identity"));
        }
        self.set_http_request_body(0, size, &body);
        Action::Continue
    }

    fn on_http_response_headers(&mut self, _: usize, _: bool) -> Action {
        if MODE == "abi" {
            std::hint::black_box(self.get_http_response_headers());
            for name in [
                "x-ratelimit-limit-requests",
                "x-ratelimit-remaining-requests",
                "x-ratelimit-reset-requests",
            ] {
                self.set_http_response_header(name, Some("1"));
            }
        }
        Action::Continue
    }

    fn on_http_response_body(&mut self, size: usize, end_of_stream: bool) -> Action {
        if !end_of_stream {
            return Action::Pause;
        }
        let body = self.get_http_response_body(0, size).unwrap_or_default();
        self.set_http_response_body(0, size, &body);
        Action::Continue
    }

    fn on_log(&mut self) {
        if MODE == "abi" {
            for key in ["spend", "rate"] {
                let (value, cas) = self.get_shared_data(key);
                let _ = self.set_shared_data(key, Some(&value.unwrap_or_default()), cas);
            }
            for id in &self.ids {
                let _ = hostcalls::increment_metric(*id, 1);
            }
            let _ = hostcalls::log(LogLevel::Info, &"x".repeat(1500));
        }
    }
}
