//! What a host is built from: the module, its configuration, the upstreams its callouts may
//! reach and the bounds every guest runs under.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

/// Everything [`crate::Host::new`] needs. Build with [`HostConfig::new`] and adjust fields.
#[derive(Debug, Clone)]
pub struct HostConfig {
    /// The proxy-wasm module (wasm binary).
    pub module: Vec<u8>,
    /// Bytes the guest reads as its plugin configuration in `proxy_on_configure`.
    pub plugin_config: Vec<u8>,
    /// Bytes the guest reads as its VM configuration in `proxy_on_vm_start`.
    pub vm_config: Vec<u8>,
    /// Reported as the `plugin_name` property.
    pub plugin_name: String,
    /// Reported as the `plugin_root_id` property.
    pub root_id: String,
    /// Reported as the `plugin_vm_id` property and used to resolve shared queues.
    pub vm_id: String,
    /// Named clusters a guest may reach with `proxy_http_call`: name → base URL
    /// (`http://127.0.0.1:8080`).
    pub clusters: BTreeMap<String, String>,
    /// Where compiled modules are cached, keyed by the module's sha256; `None` disables it.
    pub cache_dir: Option<PathBuf>,
    /// Bounds on every guest.
    pub limits: Limits,
    /// Extra properties every stream reports (`"node.id"` → bytes), after the built-in ones.
    pub properties: BTreeMap<String, Vec<u8>>,
    /// `# HELP` text of metric families on `/metrics` (family name → text); the module
    /// cannot say it through the ABI, so whoever knows the module may.
    pub metric_help: BTreeMap<String, String>,
    /// A fixed time (unix nanoseconds) the guest reads instead of the wall clock, or
    /// `None` for the wall clock. `writ test` pins it so that no window a policy counts in
    /// (a rate-limit minute, a budget's day) turns over in the middle of a suite.
    pub clock_nanos: Option<u64>,
}

impl HostConfig {
    /// A configuration for `module` with default limits, no clusters and no cache.
    pub fn new(module: Vec<u8>) -> Self {
        Self {
            module,
            plugin_config: Vec::new(),
            vm_config: Vec::new(),
            plugin_name: "writ".to_string(),
            root_id: String::new(),
            vm_id: String::new(),
            clusters: BTreeMap::new(),
            cache_dir: None,
            limits: Limits::default(),
            properties: BTreeMap::new(),
            metric_help: BTreeMap::new(),
            clock_nanos: None,
        }
    }
}

/// Resource bounds, so a runaway or hostile guest fails its own request and nothing else.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Largest linear memory a VM may grow to, in bytes.
    pub max_memory_bytes: usize,
    /// Wall-clock budget of one guest callback; past it the call traps (epoch interruption).
    pub call_timeout: Duration,
    /// Wall-clock budget of each step of a VM's start (instantiation with `_initialize`,
    /// then the root context's `on_vm_start` and `on_configure`), which decode the whole
    /// policy once: a tight `call_timeout` meant for requests must not fail the start.
    pub start_timeout: Duration,
    /// How many VMs may be alive at once (pooling allocator slots).
    pub max_vms: u32,
    /// Use the pooling allocator (fast instantiation); off for very constrained machines.
    pub pooling: bool,
    /// Largest request or response body the host buffers for a pausing filter.
    pub max_buffered_body: usize,
    /// Budget of a `proxy_http_call` when the guest asks for none.
    pub default_callout_timeout: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_memory_bytes: 256 << 20,
            call_timeout: Duration::from_millis(500),
            start_timeout: Duration::from_secs(10),
            max_vms: 64,
            pooling: true,
            max_buffered_body: 16 << 20,
            default_callout_timeout: Duration::from_secs(5),
        }
    }
}
