//! The compiled module and everything shared by its VMs: one `Engine`, one `Linker`, an
//! `InstancePre`, the on-disk cache of compiled code, and the epoch ticker that bounds
//! every guest call.

use crate::config::{HostConfig, Limits};
use crate::error::HostError;
use crate::shared::{MetricValue, Shared};
use crate::state::StoreState;
use crate::vm::Vm;
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::hash::{Hash, Hasher};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};
use wasmtime::{Config, Engine, InstanceAllocationStrategy, InstancePre, Linker, Module};

/// How often the epoch advances; call deadlines are whole multiples of it.
const EPOCH_TICK: Duration = Duration::from_millis(2);

/// Host-wide, read-mostly facts every store sees.
pub(crate) struct HostShared {
    pub plugin_config: Vec<u8>,
    pub vm_config: Vec<u8>,
    pub plugin_name: String,
    pub root_id: String,
    pub vm_id: String,
    pub clusters: BTreeMap<String, String>,
    pub limits: Limits,
    pub properties: BTreeMap<String, Vec<u8>>,
    pub metric_help: BTreeMap<String, String>,
    /// [`crate::HostConfig::clock_nanos`].
    pub clock_nanos: Option<u64>,
    pub shared: Shared,
}

pub(crate) struct HostInner {
    pub engine: Engine,
    pub pre: InstancePre<StoreState>,
    pub shared: Arc<HostShared>,
    pub deadline_ticks: u64,
    /// The same for each step of a VM's start ([`crate::Limits::start_timeout`]).
    pub start_deadline_ticks: u64,
    pub next_serial: AtomicU64,
    sha256: String,
    from_cache: bool,
    compile_time: Duration,
    stop: Arc<AtomicBool>,
}

impl Drop for HostInner {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// A loaded proxy-wasm module, ready to start VMs. Cheap to clone and `Send + Sync`: give
/// each worker thread a clone and let it call [`Host::vm`] once.
#[derive(Clone)]
pub struct Host {
    pub(crate) inner: Arc<HostInner>,
}

impl std::fmt::Debug for Host {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Host")
            .field("sha256", &self.inner.sha256)
            .finish_non_exhaustive()
    }
}

impl Host {
    /// Compiles (or loads from the cache) the module, links it, and starts one VM to check
    /// the filter accepts its configuration, so a bad module fails here and not on traffic.
    pub fn new(config: HostConfig) -> Result<Host, HostError> {
        let limits = config.limits.clone();
        let engine = build_engine(&limits)?;
        let started = Instant::now();
        let (module, from_cache) =
            load_module(&engine, &config.module, config.cache_dir.as_deref())?;
        let compile_time = started.elapsed();
        let mut linker = Linker::new(&engine);
        crate::imports::define(&mut linker).map_err(|e| HostError::Instantiate(e.to_string()))?;
        crate::imports::define_stubs(&mut linker, &module)
            .map_err(|e| HostError::Instantiate(e.to_string()))?;
        let pre = linker
            .instantiate_pre(&module)
            .map_err(|e| HostError::Instantiate(format!("{e:#}")))?;
        let stop = Arc::new(AtomicBool::new(false));
        spawn_ticker(engine.clone(), stop.clone());
        // One tick more than the budget: the first tick may come right after the call starts.
        let ticks = |budget: Duration| {
            (budget.as_millis() as u64)
                .div_ceil(EPOCH_TICK.as_millis().max(1) as u64)
                .max(1)
                + 1
        };
        let deadline_ticks = ticks(limits.call_timeout);
        let start_deadline_ticks = ticks(limits.start_timeout.max(limits.call_timeout));
        let shared = Arc::new(HostShared {
            plugin_config: config.plugin_config,
            vm_config: config.vm_config,
            plugin_name: config.plugin_name,
            root_id: config.root_id,
            vm_id: config.vm_id,
            clusters: config.clusters,
            limits,
            properties: config.properties,
            metric_help: config.metric_help,
            clock_nanos: config.clock_nanos,
            shared: Shared::default(),
        });
        let host = Host {
            inner: Arc::new(HostInner {
                engine,
                pre,
                shared,
                deadline_ticks,
                start_deadline_ticks,
                next_serial: AtomicU64::new(1),
                sha256: hex(&Sha256::digest(&config.module)),
                from_cache,
                compile_time,
                stop,
            }),
        };
        drop(host.vm()?);
        Ok(host)
    }

    /// Starts a VM: a fresh store and instance, root context created, `proxy_on_vm_start`
    /// and `proxy_on_configure` run. One per worker thread; it is not shared.
    pub fn vm(&self) -> Result<Vm, HostError> {
        Vm::start(self.clone())
    }

    /// Returns the host's state (shared data, queues, metric values) to that of a host that
    /// has served nothing, so a test can start each case afresh without recompiling. VMs
    /// started before keep their own memory: start a new one.
    pub fn reset_state(&self) {
        self.inner.shared.shared.reset();
    }

    /// Every metric the filter defined, with its current host-wide value.
    pub fn metrics(&self) -> Vec<MetricValue> {
        self.inner.shared.shared.metrics()
    }

    /// The metrics in Prometheus text exposition format, for `/metrics`.
    pub fn prometheus(&self) -> String {
        crate::prometheus::render(&self.metrics(), &self.inner.shared.metric_help)
    }

    /// A value of the filter's shared data (`proxy_get_shared_data`), for inspection.
    pub fn shared_data(&self, key: &str) -> Option<Vec<u8>> {
        self.inner.shared.shared.get_data(key).map(|(v, _)| v)
    }

    /// The base URL of a named cluster (`writ serve --cluster NAME=URL`): callouts go
    /// there, and so do the gateway's retries to that cluster.
    pub fn cluster_url(&self, name: &str) -> Option<&str> {
        self.inner.shared.clusters.get(name).map(String::as_str)
    }

    /// Hex sha256 of the module bytes: the cache key, and the artifact's identity.
    pub fn module_sha256(&self) -> &str {
        &self.inner.sha256
    }

    /// Whether the compiled code came from the on-disk cache.
    pub fn loaded_from_cache(&self) -> bool {
        self.inner.from_cache
    }

    /// Time spent compiling or loading the module.
    pub fn compile_time(&self) -> Duration {
        self.inner.compile_time
    }
}

fn build_engine(limits: &Limits) -> Result<Engine, HostError> {
    let mut config = Config::new();
    config.epoch_interruption(true);
    // `WRIT_PERF_MAP=1` names the guest's compiled functions for `perf` (a /tmp/perf-PID.map
    // file), so a profile of `writ serve` shows where in the engine the time goes
    // (`benches/README.md`). Off by default: the file grows with every module loaded.
    if std::env::var_os("WRIT_PERF_MAP").is_some_and(|v| v == "1") {
        config.profiler(wasmtime::ProfilingStrategy::PerfMap);
    }
    if limits.pooling {
        let mut pool = wasmtime::PoolingAllocationConfig::default();
        pool.total_core_instances(limits.max_vms)
            .total_memories(limits.max_vms)
            .total_tables(limits.max_vms)
            .max_memory_size(limits.max_memory_bytes);
        config.allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
    }
    Engine::new(&config).map_err(|e| HostError::Compile(format!("engine: {e:#}")))
}

fn spawn_ticker(engine: Engine, stop: Arc<AtomicBool>) {
    let spawned = std::thread::Builder::new()
        .name("writ-epoch".to_string())
        .spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                std::thread::sleep(EPOCH_TICK);
                engine.increment_epoch();
            }
        });
    if let Err(e) = spawned {
        tracing::error!("cannot start the epoch ticker, guest deadlines are off: {e}");
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Compiles `bytes`, or loads the code compiled earlier for the same module sha256 by the
/// same wasmtime build; a stale or corrupt entry is recompiled and replaced.
fn load_module(
    engine: &Engine,
    bytes: &[u8],
    cache_dir: Option<&Path>,
) -> Result<(Module, bool), HostError> {
    let compile = || Module::new(engine, bytes).map_err(|e| HostError::Compile(format!("{e:#}")));
    let Some(dir) = cache_dir else {
        return Ok((compile()?, false));
    };
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    engine.precompile_compatibility_hash().hash(&mut hasher);
    let path = dir.join(format!(
        "{}-{:016x}.cwasm",
        hex(&Sha256::digest(bytes)),
        hasher.finish()
    ));
    if path.is_file() {
        // SAFETY: the cache directory belongs to this host: its files were written by
        // `Module::serialize` below, and their names bind the module hash and the engine's
        // compatibility hash. Wasmtime still checks the header and refuses a mismatch.
        match unsafe { Module::deserialize_file(engine, &path) } {
            Ok(module) => return Ok((module, true)),
            Err(e) => tracing::warn!("ignoring cached module {}: {e:#}", path.display()),
        }
    }
    let module = compile()?;
    let written = module
        .serialize()
        .map_err(|e| e.to_string())
        .and_then(|code| {
            std::fs::create_dir_all(dir).map_err(|e| e.to_string())?;
            // Unique per writer: a file is never rewritten in place, since a loaded module maps it.
            static WRITES: AtomicU64 = AtomicU64::new(0);
            let n = WRITES.fetch_add(1, Ordering::Relaxed);
            let tmp = path.with_extension(format!("tmp{}-{n}", std::process::id()));
            std::fs::write(&tmp, code).map_err(|e| e.to_string())?;
            std::fs::rename(&tmp, &path).map_err(|e| e.to_string())
        });
    if let Err(e) = written {
        tracing::warn!("cannot cache compiled module in {}: {e}", dir.display());
    }
    Ok((module, false))
}
