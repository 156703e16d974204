//! The proxy-wasm ABI 0.2.1 imports the adapter uses, declared here so every status is a
//! `Result` and nothing panics (the SDK's wrappers `panic!` on an unexpected status, which
//! traps the VM and fails every later request on that worker).

use proxy_wasm::types::LogLevel;

use crate::store::{CasMismatch, SharedStore};

const OK: u32 = 0;
const NOT_FOUND: u32 = 1;

/// Header maps of the ABI.
pub const REQUEST_HEADERS: u32 = 0;
pub const RESPONSE_HEADERS: u32 = 2;
/// Buffers of the ABI.
pub const REQUEST_BODY: u32 = 0;
pub const RESPONSE_BODY: u32 = 1;
pub const PLUGIN_CONFIGURATION: u32 = 7;

/// Metric kinds of the ABI.
pub const COUNTER: u32 = 0;
pub const GAUGE: u32 = 1;

#[link(wasm_import_module = "env")]
unsafe extern "C" {
    fn proxy_log(level: u32, data: *const u8, size: usize) -> u32;
    fn proxy_get_header_map_pairs(map: u32, data: *mut *mut u8, size: *mut usize) -> u32;
    fn proxy_replace_header_map_value(
        map: u32,
        key: *const u8,
        key_size: usize,
        value: *const u8,
        value_size: usize,
    ) -> u32;
    fn proxy_remove_header_map_value(map: u32, key: *const u8, key_size: usize) -> u32;
    fn proxy_get_buffer_bytes(
        buffer: u32,
        start: usize,
        max_size: usize,
        data: *mut *mut u8,
        size: *mut usize,
    ) -> u32;
    fn proxy_set_buffer_bytes(
        buffer: u32,
        start: usize,
        size: usize,
        data: *const u8,
        data_size: usize,
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
    fn proxy_get_current_time_nanoseconds(time: *mut u64) -> u32;
    fn proxy_get_property(
        path: *const u8,
        path_size: usize,
        data: *mut *mut u8,
        size: *mut usize,
    ) -> u32;
    fn proxy_set_property(
        path: *const u8,
        path_size: usize,
        data: *const u8,
        data_size: usize,
    ) -> u32;
    fn proxy_get_shared_data(
        key: *const u8,
        key_size: usize,
        data: *mut *mut u8,
        size: *mut usize,
        cas: *mut u32,
    ) -> u32;
    fn proxy_set_shared_data(
        key: *const u8,
        key_size: usize,
        value: *const u8,
        value_size: usize,
        cas: u32,
    ) -> u32;
    fn proxy_define_metric(kind: u32, name: *const u8, name_size: usize, id: *mut u32) -> u32;
    fn proxy_increment_metric(id: u32, offset: i64) -> u32;
    fn proxy_record_metric(id: u32, value: u64) -> u32;
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

/// The pairs of a header map (`REQUEST_HEADERS` or `RESPONSE_HEADERS`).
pub fn headers(map: u32) -> Result<Vec<(String, String)>, &'static str> {
    let mut data = core::ptr::null_mut();
    let mut size = 0usize;
    // SAFETY: the out-pointers are valid for writes for the call's duration.
    let status = unsafe { proxy_get_header_map_pairs(map, &mut data, &mut size) };
    if status != OK {
        return Err("proxy_get_header_map_pairs");
    }
    // SAFETY: on OK the host returned a buffer from our allocator.
    let bytes = unsafe { owned(data, size) };
    crate::wire::decode_header_map(&bytes).ok_or("malformed header map")
}

/// Sets (replacing every existing value) a header.
pub fn replace_header(map: u32, name: &str, value: &str) -> Result<(), u32> {
    // SAFETY: every pointer/length pair describes a live buffer for the call's duration.
    let rc = unsafe {
        proxy_replace_header_map_value(map, name.as_ptr(), name.len(), value.as_ptr(), value.len())
    };
    if rc == OK { Ok(()) } else { Err(rc) }
}

/// Removes a header; removing an absent header is not an error.
pub fn remove_header(map: u32, name: &str) -> Result<(), u32> {
    // SAFETY: the pointer/length pair describes a live buffer for the call's duration.
    let rc = unsafe { proxy_remove_header_map_value(map, name.as_ptr(), name.len()) };
    if rc == OK || rc == NOT_FOUND {
        Ok(())
    } else {
        Err(rc)
    }
}

/// Bytes `start..start+size` of a buffer (empty when the host has none).
pub fn buffer(buffer: u32, start: usize, size: usize) -> Result<Vec<u8>, &'static str> {
    let mut data = core::ptr::null_mut();
    let mut len = 0usize;
    // SAFETY: the out-pointers are valid for writes for the call's duration.
    let status = unsafe { proxy_get_buffer_bytes(buffer, start, size, &mut data, &mut len) };
    match status {
        // SAFETY: on OK the host returned a buffer from our allocator.
        OK => Ok(unsafe { owned(data, len) }),
        NOT_FOUND => Ok(Vec::new()),
        _ => Err("proxy_get_buffer_bytes"),
    }
}

/// Replaces bytes `0..size` of a buffer (the whole current chunk) with `data`.
pub fn set_buffer(buffer: u32, size: usize, data: &[u8]) -> Result<(), u32> {
    // SAFETY: the pointer/length pair describes a live buffer for the call's duration.
    let rc = unsafe { proxy_set_buffer_bytes(buffer, 0, size, data.as_ptr(), data.len()) };
    if rc == OK { Ok(()) } else { Err(rc) }
}

/// The response-code details of every reply the engine sends itself. Envoy's
/// `local_reply_config` (written by `writ envoy`) leaves replies with these details alone and
/// turns Envoy's own local replies (codec errors, upstream failures) into OpenAI-style JSON.
pub const LOCAL_REPLY_DETAILS: &str = "writ_local_reply";

/// Answers the client locally.
pub fn send_local(status: u16, body: &[u8], headers: &[(&str, &str)]) -> Result<(), u32> {
    let headers = crate::wire::encode_header_map(headers);
    // SAFETY: every pointer/length pair describes a live buffer for the call's duration.
    let rc = unsafe {
        proxy_send_local_response(
            u32::from(status),
            LOCAL_REPLY_DETAILS.as_ptr(),
            LOCAL_REPLY_DETAILS.len(),
            body.as_ptr(),
            body.len(),
            headers.as_ptr(),
            headers.len(),
            -1,
        )
    };
    if rc == OK { Ok(()) } else { Err(rc) }
}

/// The host's wall-clock time in nanoseconds since the epoch (0 if it cannot say).
pub fn now_nanos() -> u64 {
    let mut t = 0u64;
    // SAFETY: the out-pointer is valid for writes for the call's duration.
    let rc = unsafe { proxy_get_current_time_nanoseconds(&mut t) };
    if rc == OK { t } else { 0 }
}

/// A stream property (`["request", "id"]`), `None` when absent or refused.
pub fn property(path: &[&str]) -> Option<Vec<u8>> {
    let encoded = path.join("\0");
    let mut data = core::ptr::null_mut();
    let mut size = 0usize;
    // SAFETY: the pointer/length pair and out-pointers are valid for the call's duration.
    let rc = unsafe { proxy_get_property(encoded.as_ptr(), encoded.len(), &mut data, &mut size) };
    if rc != OK {
        return None;
    }
    // SAFETY: on OK the host returned a buffer from our allocator.
    Some(unsafe { owned(data, size) })
}

/// Sets a stream property (Envoy keeps it as filter state `wasm.<path>`, which access logs
/// can print); `false` when the host refuses.
pub fn set_property(path: &[&str], value: &[u8]) -> bool {
    let encoded = path.join("\0");
    // SAFETY: both pointer/length pairs describe live buffers for the call's duration.
    let rc =
        unsafe { proxy_set_property(encoded.as_ptr(), encoded.len(), value.as_ptr(), value.len()) };
    rc == OK
}

/// Defines (or looks up) a metric; `None` when the host refuses.
pub fn define_metric(kind: u32, name: &str) -> Option<u32> {
    let mut id = 0u32;
    // SAFETY: the pointer/length pair and out-pointer are valid for the call's duration.
    let rc = unsafe { proxy_define_metric(kind, name.as_ptr(), name.len(), &mut id) };
    (rc == OK).then_some(id)
}

/// Adds `delta` to a counter or gauge; failures are ignored (metrics are best effort).
pub fn increment_metric(id: u32, delta: i64) {
    // SAFETY: plain values.
    let _ = unsafe { proxy_increment_metric(id, delta) };
}

/// Sets a gauge; failures are ignored (metrics are best effort).
pub fn record_metric(id: u32, value: u64) {
    // SAFETY: plain values.
    let _ = unsafe { proxy_record_metric(id, value) };
}

/// Shared data on the host (Envoy shares it between the worker VMs of one `vm_id`): the
/// engine's spend ledgers, kill-switch flags and verification-rate counters.
pub struct HostStore;

impl SharedStore for HostStore {
    fn get(&self, key: &str) -> Option<(Vec<u8>, u32)> {
        let mut data = core::ptr::null_mut();
        let mut size = 0usize;
        let mut cas = 0u32;
        // SAFETY: the pointer/length pair and out-pointers are valid for the call.
        let rc = unsafe {
            proxy_get_shared_data(key.as_ptr(), key.len(), &mut data, &mut size, &mut cas)
        };
        if rc != OK {
            return None;
        }
        // SAFETY: on OK the host returned a buffer from our allocator (or null).
        let value = unsafe { owned(data, size) };
        // A token of 0 means "no token"; the store trait reads that as a missing key.
        (cas != 0).then_some((value, cas))
    }

    fn set(&self, key: &str, value: &[u8], cas: u32) -> Result<(), CasMismatch> {
        // SAFETY: every pointer/length pair describes a live buffer for the call.
        let rc = unsafe {
            proxy_set_shared_data(key.as_ptr(), key.len(), value.as_ptr(), value.len(), cas)
        };
        // Any refusal is reported as a mismatch: callers retry a bounded number of times
        // and then fail closed.
        if rc == OK { Ok(()) } else { Err(CasMismatch) }
    }
}
