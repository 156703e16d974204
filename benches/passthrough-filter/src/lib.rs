//! The smallest proxy-wasm HTTP filter: every callback continues. Used to measure the host's
//! own per-request cost, without any filter work.

use proxy_wasm::traits::*;

proxy_wasm::main! {{
    proxy_wasm::set_http_context(|_, _| -> Box<dyn HttpContext> { Box::new(Passthrough) });
}}

struct Passthrough;

impl Context for Passthrough {}

impl HttpContext for Passthrough {}
