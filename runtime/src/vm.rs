//! One VM (a wasmtime `Store` and instance) and the HTTP streams it runs. It drives the
//! proxy-wasm callbacks the way Envoy does: pause and resume, body buffering, local replies,
//! callouts, ticks and queue notifications. Not `Sync`: one caller at a time (the gateway
//! keeps each behind a lock, used by whichever thread has the request).

use crate::abi::Headers;
use crate::callout;
use crate::error::{HostError, TrapKind};
use crate::host::Host;
use crate::state::{
    CallResponse, Direction, HostCalls, LocalResponse, LogRecord, Stage, StoreState, StreamInfo,
    StreamState, header_get, normalize,
};
use std::time::Instant;
use wasmtime::{Instance, Store, Trap, TypedFunc, WasmParams, WasmResults};

/// A stream (HTTP context) of one [`Vm`]. Ids are never reused by the same `Vm`, even
/// across restarts, so a stale id is reported as [`HostError::UnknownStream`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct StreamId(pub u32);

/// What the filter lets through after one step of a stream.
///
/// A paused step releases nothing. Once the filter continues, the held headers and the
/// buffered body are released together, as Envoy forwards them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Flow {
    /// Headers released now (only once per direction), pseudo-headers first.
    pub headers: Option<Headers>,
    /// Body bytes released now.
    pub body: Vec<u8>,
    /// Trailers released now.
    pub trailers: Option<Headers>,
    /// This direction is complete: everything up to its end has been released.
    pub end_of_stream: bool,
    /// The filter answered by itself: send this to the client and stop the exchange. In
    /// the request phase the response callbacks have already run over it (as in Envoy).
    pub local_response: Option<LocalResponse>,
}

impl Flow {
    /// Nothing was released: the filter holds the data for now.
    pub fn is_paused(&self) -> bool {
        self.headers.is_none()
            && self.body.is_empty()
            && self.trailers.is_none()
            && !self.end_of_stream
            && self.local_response.is_none()
    }
}

/// What a closed stream leaves behind.
#[derive(Debug, Clone, Default)]
pub struct StreamReport {
    /// Everything the filter logged in this stream's context, in order.
    pub logs: Vec<LogRecord>,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Dir {
    Request,
    Response,
}

type F1 = TypedFunc<i32, ()>;
type F2 = TypedFunc<(i32, i32), i32>;
type F3 = TypedFunc<(i32, i32, i32), i32>;
type F5 = TypedFunc<(i32, i32, i32, i32, i32), ()>;

struct Exports {
    context_create: Option<TypedFunc<(i32, i32), ()>>,
    vm_start: Option<F2>,
    configure: Option<F2>,
    request_headers: Option<F3>,
    request_body: Option<F3>,
    request_trailers: Option<F2>,
    response_headers: Option<F3>,
    response_body: Option<F3>,
    response_trailers: Option<F2>,
    log: Option<F1>,
    done: Option<TypedFunc<i32, i32>>,
    delete: Option<F1>,
    tick: Option<F1>,
    queue_ready: Option<TypedFunc<(i32, i32), ()>>,
    http_call_response: Option<F5>,
}

fn export<P: WasmParams, R: WasmResults>(
    instance: &Instance,
    store: &mut Store<StoreState>,
    name: &str,
) -> Result<Option<TypedFunc<P, R>>, HostError> {
    match instance.get_func(&mut *store, name) {
        None => Ok(None),
        Some(f) => f.typed::<P, R>(&*store).map(Some).map_err(|e| {
            HostError::Instantiate(format!("export `{name}` has an unexpected signature: {e}"))
        }),
    }
}

impl Exports {
    fn resolve(instance: &Instance, store: &mut Store<StoreState>) -> Result<Self, HostError> {
        Ok(Self {
            context_create: export(instance, store, "proxy_on_context_create")?,
            vm_start: export(instance, store, "proxy_on_vm_start")?,
            configure: export(instance, store, "proxy_on_configure")?,
            request_headers: export(instance, store, "proxy_on_request_headers")?,
            request_body: export(instance, store, "proxy_on_request_body")?,
            request_trailers: export(instance, store, "proxy_on_request_trailers")?,
            response_headers: export(instance, store, "proxy_on_response_headers")?,
            response_body: export(instance, store, "proxy_on_response_body")?,
            response_trailers: export(instance, store, "proxy_on_response_trailers")?,
            log: export(instance, store, "proxy_on_log")?,
            done: export(instance, store, "proxy_on_done")?,
            delete: export(instance, store, "proxy_on_delete")?,
            tick: export(instance, store, "proxy_on_tick")?,
            queue_ready: export(instance, store, "proxy_on_queue_ready")?,
            http_call_response: export(instance, store, "proxy_on_http_call_response")?,
        })
    }
}

/// A running VM of a [`Host`]'s module.
pub struct Vm {
    host: Host,
    store: Store<StoreState>,
    ex: std::sync::Arc<Exports>,
    next_context: u32,
    failed: bool,
    last_tick: Instant,
    restarts: u64,
    deferred_callouts: bool,
    /// The root context is starting ([`Vm::boot`]): its calls get the start deadline.
    booting: bool,
}

/// An HTTP callout a filter made (`proxy_http_call`), for a driver that performs it itself
/// (see [`Vm::set_deferred_callouts`]).
#[derive(Debug, Clone)]
pub struct Callout {
    pub token: u32,
    /// The stream that made it (`None`: the root context).
    pub stream: Option<StreamId>,
    pub cluster: String,
    /// The cluster's base URL from the host configuration.
    pub base_url: String,
    /// Headers including `:method`, `:path`, `:authority`.
    pub headers: Headers,
    pub body: Vec<u8>,
    pub timeout: std::time::Duration,
    context: u32,
}

/// The reply to a [`Callout`]: headers (with `:status` first) and body.
#[derive(Debug, Clone, Default)]
pub struct CalloutReply {
    pub headers: Headers,
    pub body: Vec<u8>,
}

impl std::fmt::Debug for Vm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Vm")
            .field("failed", &self.failed)
            .field("restarts", &self.restarts)
            .finish_non_exhaustive()
    }
}

fn instantiate(host: &Host) -> Result<(Store<StoreState>, std::sync::Arc<Exports>), HostError> {
    let inner = &host.inner;
    let serial = inner
        .next_serial
        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let mut store = Store::new(&inner.engine, StoreState::new(inner.shared.clone(), serial));
    store.limiter(|s| &mut s.limiter);
    store.epoch_deadline_trap();
    store.set_epoch_deadline(inner.start_deadline_ticks);
    let instance = inner
        .pre
        .instantiate(&mut store)
        .map_err(|e| HostError::Instantiate(format!("{e:#}")))?;
    let memory = instance.get_memory(&mut store, "memory");
    let alloc = export::<i32, i32>(&instance, &mut store, "proxy_on_memory_allocate")?
        .or(export::<i32, i32>(&instance, &mut store, "malloc")?);
    store.data_mut().memory = memory;
    store.data_mut().alloc = alloc;
    let ex = Exports::resolve(&instance, &mut store)?;
    for init in ["_initialize", "_start"] {
        if let Some(f) = export::<(), ()>(&instance, &mut store, init)? {
            f.call(&mut store, ())
                .map_err(|e| HostError::Instantiate(format!("`{init}` failed: {e:#}")))?;
            break;
        }
    }
    Ok((store, std::sync::Arc::new(ex)))
}

impl Vm {
    pub(crate) fn start(host: Host) -> Result<Vm, HostError> {
        let (store, ex) = instantiate(&host)?;
        let mut vm = Vm {
            host,
            store,
            ex,
            next_context: 2,
            failed: false,
            last_tick: Instant::now(),
            restarts: 0,
            deferred_callouts: false,
            booting: false,
        };
        vm.boot()?;
        Ok(vm)
    }

    /// Starts the root context, each step under the start deadline.
    fn boot(&mut self) -> Result<(), HostError> {
        self.booting = true;
        let booted = self.boot_root();
        self.booting = false;
        booted
    }

    fn boot_root(&mut self) -> Result<(), HostError> {
        let root = self.store.data().root_context as i32;
        let shared = self.host.inner.shared.clone();
        self.callback(1, self.ex.clone().context_create.as_ref(), (root, 0))?;
        let ok = self.callback(
            1,
            self.ex.clone().vm_start.as_ref(),
            (root, shared.vm_config.len() as i32),
        )?;
        if ok == Some(0) {
            return Err(HostError::StartRejected);
        }
        let ok = self.callback(
            1,
            self.ex.clone().configure.as_ref(),
            (root, shared.plugin_config.len() as i32),
        )?;
        if ok == Some(0) {
            return Err(HostError::ConfigureRejected);
        }
        self.last_tick = Instant::now();
        Ok(())
    }

    /// The host this VM belongs to.
    pub fn host(&self) -> &Host {
        &self.host
    }

    /// How many times this VM was recreated after a guest failure.
    pub fn restarts(&self) -> u64 {
        self.restarts
    }

    /// Recreates the instance if a trap left it unusable. Streams of the old instance are
    /// gone; their ids answer [`HostError::UnknownStream`].
    pub fn ensure_healthy(&mut self) -> Result<(), HostError> {
        if !self.failed {
            return Ok(());
        }
        let (store, ex) = instantiate(&self.host)?;
        self.store = store;
        self.ex = ex;
        self.failed = false;
        self.restarts += 1;
        tracing::warn!(
            restarts = self.restarts,
            "proxy-wasm VM restarted after a failure"
        );
        let booted = self.boot();
        // A VM that did not start cleanly is not used: the next stream tries again.
        self.failed = booted.is_err();
        booted
    }

    /// Opens a stream (creates an HTTP context) for one request.
    pub fn open_stream(&mut self, info: StreamInfo) -> Result<StreamId, HostError> {
        self.ensure_healthy()?;
        let id = self.next_context;
        self.next_context = self.next_context.wrapping_add(1).max(2);
        self.store.data_mut().streams.insert(
            id,
            StreamState {
                info,
                ..StreamState::default()
            },
        );
        let root = self.store.data().root_context as i32;
        if let Err(e) = self.callback(
            id,
            self.ex.clone().context_create.as_ref(),
            (id as i32, root),
        ) {
            self.store.data_mut().streams.remove(&id);
            return Err(e);
        }
        Ok(StreamId(id))
    }

    /// Request headers (with pseudo-headers `:method`, `:path`, `:authority`, `:scheme`)
    /// arrived; `end_of_stream` when the request has no body.
    pub fn request_headers(
        &mut self,
        id: StreamId,
        headers: Headers,
        end_of_stream: bool,
    ) -> Result<Flow, HostError> {
        self.headers(id, Dir::Request, headers, end_of_stream)
    }

    /// A request body chunk arrived.
    pub fn request_body(
        &mut self,
        id: StreamId,
        chunk: &[u8],
        end_of_stream: bool,
    ) -> Result<Flow, HostError> {
        self.body(id, Dir::Request, chunk, end_of_stream)
    }

    /// Request trailers arrived (this ends the request).
    pub fn request_trailers(&mut self, id: StreamId, trailers: Headers) -> Result<Flow, HostError> {
        self.trailers(id, Dir::Request, trailers)
    }

    /// The host sends the request again (a retry the filter asked for with a local reply
    /// in the response phase): the response side of the stream starts afresh, so the next
    /// attempt's reply runs the response callbacks as the first did.
    pub fn restart_response(&mut self, id: StreamId) -> Result<(), HostError> {
        let stream = self.stream(id)?;
        stream.response = Direction::default();
        stream.in_local_reply = false;
        stream.local = None;
        Ok(())
    }

    /// Upstream response headers (with `:status`) arrived.
    pub fn response_headers(
        &mut self,
        id: StreamId,
        headers: Headers,
        end_of_stream: bool,
    ) -> Result<Flow, HostError> {
        self.headers(id, Dir::Response, headers, end_of_stream)
    }

    /// An upstream response body chunk (an SSE event, say) arrived.
    pub fn response_body(
        &mut self,
        id: StreamId,
        chunk: &[u8],
        end_of_stream: bool,
    ) -> Result<Flow, HostError> {
        self.body(id, Dir::Response, chunk, end_of_stream)
    }

    /// Upstream response trailers arrived (this ends the response).
    pub fn response_trailers(
        &mut self,
        id: StreamId,
        trailers: Headers,
    ) -> Result<Flow, HostError> {
        self.trailers(id, Dir::Response, trailers)
    }

    /// Ends a stream: `proxy_on_log`, `proxy_on_done`, `proxy_on_delete`, then frees it.
    pub fn close_stream(&mut self, id: StreamId) -> Result<StreamReport, HostError> {
        if !self.store.data().streams.contains_key(&id.0) {
            return Err(HostError::UnknownStream);
        }
        let ctx = id.0 as i32;
        let result = self
            .callback(id.0, self.ex.clone().log.as_ref(), ctx)
            .and_then(|_| self.callback(id.0, self.ex.clone().done.as_ref(), ctx))
            .and_then(|_| self.callback(id.0, self.ex.clone().delete.as_ref(), ctx));
        let stream = self.store.data_mut().streams.remove(&id.0);
        result?;
        Ok(StreamReport {
            logs: stream.map(|s| s.logs).unwrap_or_default(),
        })
    }

    /// Streams currently open.
    pub fn open_streams(&self) -> usize {
        self.store.data().streams.len()
    }

    /// The host calls the guest made since the VM started (start-up included) or since the
    /// last call, by import name, and resets the count: a test reads a request's cost in
    /// host calls by taking once before and once after it.
    pub fn take_host_calls(&mut self) -> HostCalls {
        std::mem::take(&mut self.store.data_mut().host_calls)
    }

    /// Logs made by the root context (start, configure, ticks) since the last call.
    pub fn take_root_logs(&mut self) -> Vec<LogRecord> {
        std::mem::take(&mut self.store.data_mut().root_logs)
    }

    /// When the next `proxy_on_tick` is due, if the filter asked for ticks.
    pub fn next_tick(&self) -> Option<Instant> {
        self.store
            .data()
            .tick_period
            .map(|period| self.last_tick + period)
    }

    /// Runs `proxy_on_tick` if it is due, and delivers pending queue notifications. Call it
    /// from the worker's loop, at [`Vm::next_tick`] at the latest.
    pub fn run_timers(&mut self) -> Result<(), HostError> {
        self.ensure_healthy()?;
        if self.next_tick().is_some_and(|due| due <= Instant::now()) {
            self.tick()?;
        }
        self.deliver_queues()
    }

    /// Runs `proxy_on_tick` now.
    pub fn tick(&mut self) -> Result<(), HostError> {
        self.ensure_healthy()?;
        self.last_tick = Instant::now();
        let root = self.store.data().root_context;
        self.callback(root, self.ex.clone().tick.as_ref(), root as i32)
            .map(|_| ())
    }

    /// The host is stopping, after every stream closed: `proxy_on_done` on the root
    /// context. Callouts the root makes from it (a fleet member giving its budget leases
    /// back) are performed before this returns, as a tick's are. Returns whether the guest
    /// said it is done (it may also say so later with `proxy_done`).
    pub fn finish(&mut self) -> Result<bool, HostError> {
        self.ensure_healthy()?;
        let root = self.store.data().root_context;
        let done = self.callback(root, self.ex.clone().done.as_ref(), root as i32)?;
        Ok(done.is_none_or(|d| d != 0))
    }

    /// Leaves callouts made by streams to the caller ([`Vm::take_callouts`] after each
    /// step, [`Vm::complete_callout`] with the reply) instead of performing them, blocking,
    /// before the step returns. The gateway does this so a slow cluster holds only its own
    /// request. Callouts from the root context (ticks) are still performed by the VM.
    pub fn set_deferred_callouts(&mut self, deferred: bool) {
        self.deferred_callouts = deferred;
    }

    /// The callouts made since the last call (deferred mode only).
    pub fn take_callouts(&mut self) -> Vec<Callout> {
        let clusters = &self.host.inner.shared.clusters;
        let root = self.store.data().root_context;
        std::mem::take(&mut self.store.data_mut().callouts)
            .into_iter()
            .map(|c| Callout {
                token: c.token,
                stream: (c.context != root).then_some(StreamId(c.context)),
                base_url: clusters.get(&c.cluster).cloned().unwrap_or_default(),
                cluster: c.cluster,
                headers: c.headers,
                body: c.body,
                timeout: c.timeout,
                context: c.context,
            })
            .collect()
    }

    /// Delivers a callout's reply (`None`: it failed) with `proxy_on_http_call_response`,
    /// then returns what the stream released if the filter resumed it (or answered).
    pub fn complete_callout(
        &mut self,
        callout: &Callout,
        reply: Option<CalloutReply>,
    ) -> Result<Flow, HostError> {
        let (nh, nb) = reply
            .as_ref()
            .map_or((0, 0), |r| (r.headers.len(), r.body.len()));
        self.store.data_mut().call_response = Some(CallResponse {
            headers: reply
                .as_ref()
                .map(|r| r.headers.clone())
                .unwrap_or_default(),
            body: reply.map(|r| r.body).unwrap_or_default(),
            trailers: Vec::new(),
        });
        let ctx = callout.context;
        let params = (ctx as i32, callout.token as i32, nh as i32, nb as i32, 0);
        let result = self.call(ctx, self.ex.clone().http_call_response.as_ref(), params);
        self.store.data_mut().call_response = None;
        result?;
        self.run_callouts()?;
        self.deliver_queues()?;
        match callout.stream {
            Some(id) if self.store.data().streams.contains_key(&id.0) => self.resume(id),
            _ => Ok(Flow::default()),
        }
    }

    /// Releases what a resumed (or locally answered) paused direction holds.
    fn resume(&mut self, id: StreamId) -> Result<Flow, HostError> {
        let stream = self.stream(id)?;
        let answered = stream.local.is_some() || stream.closed;
        for dir in [Dir::Response, Dir::Request] {
            let d = Self::dir(stream, dir);
            if let Some((stage, eos)) = d.paused.filter(|_| d.resume || answered) {
                return self.settle(id, dir, false, stage, eos);
            }
        }
        if answered {
            // A local reply from the callout's callback while nothing was paused.
            let dir = if stream.response.headers.is_empty() {
                Dir::Request
            } else {
                Dir::Response
            };
            return self.settle(id, dir, false, Stage::Headers, false);
        }
        Ok(Flow::default())
    }

    // ---- internals ----

    /// Calls one guest function in context `ctx` under the call deadline (the start
    /// deadline while booting); a trap marks the VM failed (it is recreated before its
    /// next stream) and becomes an error.
    fn call<P: WasmParams, R: WasmResults>(
        &mut self,
        ctx: u32,
        f: Option<&TypedFunc<P, R>>,
        params: P,
    ) -> Result<Option<R>, HostError> {
        let Some(f) = f else { return Ok(None) };
        if self.failed {
            return Err(HostError::UnknownStream);
        }
        let state = self.store.data_mut();
        state.active = ctx;
        state.limiter.memory_refused = false;
        let inner = &self.host.inner;
        self.store.set_epoch_deadline(if self.booting {
            inner.start_deadline_ticks
        } else {
            inner.deadline_ticks
        });
        match f.call(&mut self.store, params) {
            Ok(r) => Ok(Some(r)),
            Err(e) => {
                let kind = match e.downcast_ref::<Trap>() {
                    Some(Trap::Interrupt) => TrapKind::Deadline,
                    _ if self.store.data().limiter.memory_refused => TrapKind::MemoryLimit,
                    _ => TrapKind::Guest,
                };
                self.failed = true;
                let message = format!("{e:#}");
                tracing::error!(?kind, "proxy-wasm guest trapped: {message}");
                Err(HostError::Trap { kind, message })
            }
        }
    }

    /// A top-level callback: the call, then the callouts it started and any queue
    /// notifications, as an event loop would deliver them.
    fn callback<P: WasmParams, R: WasmResults>(
        &mut self,
        ctx: u32,
        f: Option<&TypedFunc<P, R>>,
        params: P,
    ) -> Result<Option<R>, HostError> {
        let r = self.call(ctx, f, params)?;
        self.run_callouts()?;
        self.deliver_queues()?;
        Ok(r)
    }

    fn run_callouts(&mut self) -> Result<(), HostError> {
        let root = self.store.data().root_context;
        let deferred = self.deferred_callouts;
        // Bounded: a filter that calls out from every callout reply cannot spin forever.
        for _ in 0..64 {
            let callouts = &mut self.store.data_mut().callouts;
            let Some(next) = callouts.iter().position(|c| !deferred || c.context == root) else {
                return Ok(());
            };
            let Some(call) = callouts.remove(next) else {
                return Ok(());
            };
            let base = self
                .host
                .inner
                .shared
                .clusters
                .get(&call.cluster)
                .cloned()
                .unwrap_or_default();
            let reply = callout::perform(&base, &call.headers, &call.body, call.timeout);
            if let Err(e) = &reply {
                tracing::warn!(cluster = call.cluster, "callout failed: {e}");
            }
            let reply = reply.ok();
            let (nh, nb, nt) = reply.as_ref().map_or((0, 0, 0), |r| {
                (r.headers.len(), r.body.len(), r.trailers.len())
            });
            self.store.data_mut().call_response = Some(reply.unwrap_or_default());
            let result = self.call(
                call.context,
                self.ex.clone().http_call_response.as_ref(),
                (
                    call.context as i32,
                    call.token as i32,
                    nh as i32,
                    nb as i32,
                    nt as i32,
                ),
            );
            self.store.data_mut().call_response = None;
            result?;
        }
        self.store
            .data_mut()
            .callouts
            .retain(|c| deferred && c.context != root);
        Ok(())
    }

    fn deliver_queues(&mut self) -> Result<(), HostError> {
        let serial = self.store.data().serial;
        let ready = self.host.inner.shared.shared.take_ready_queues(serial);
        let root = self.store.data().root_context;
        for queue in ready {
            self.call(
                root,
                self.ex.clone().queue_ready.as_ref(),
                (root as i32, queue as i32),
            )?;
        }
        Ok(())
    }

    fn stream(&mut self, id: StreamId) -> Result<&mut StreamState, HostError> {
        self.store
            .data_mut()
            .streams
            .get_mut(&id.0)
            .ok_or(HostError::UnknownStream)
    }

    fn dir(stream: &mut StreamState, dir: Dir) -> &mut Direction {
        match dir {
            Dir::Request => &mut stream.request,
            Dir::Response => &mut stream.response,
        }
    }

    fn headers(
        &mut self,
        id: StreamId,
        dir: Dir,
        headers: Headers,
        eos: bool,
    ) -> Result<Flow, HostError> {
        let d = Self::dir(self.stream(id)?, dir);
        d.headers = normalize(headers);
        let n = d.headers.len() as i32;
        let ex = self.ex.clone();
        let f = match dir {
            Dir::Request => ex.request_headers.as_ref(),
            Dir::Response => ex.response_headers.as_ref(),
        };
        let action = self.callback(id.0, f, (id.0 as i32, n, eos as i32))?;
        self.settle(id, dir, action.unwrap_or(0) == 0, Stage::Headers, eos)
    }

    fn body(&mut self, id: StreamId, dir: Dir, chunk: &[u8], eos: bool) -> Result<Flow, HostError> {
        let d = Self::dir(self.stream(id)?, dir);
        d.body.extend_from_slice(chunk);
        let size = d.body.len() as i32;
        let ex = self.ex.clone();
        let f = match dir {
            Dir::Request => ex.request_body.as_ref(),
            Dir::Response => ex.response_body.as_ref(),
        };
        let action = self.callback(id.0, f, (id.0 as i32, size, eos as i32))?;
        self.settle(id, dir, action.unwrap_or(0) == 0, Stage::Body, eos)
    }

    fn trailers(&mut self, id: StreamId, dir: Dir, trailers: Headers) -> Result<Flow, HostError> {
        let d = Self::dir(self.stream(id)?, dir);
        d.trailers = normalize(trailers);
        let n = d.trailers.len() as i32;
        let ex = self.ex.clone();
        let f = match dir {
            Dir::Request => ex.request_trailers.as_ref(),
            Dir::Response => ex.response_trailers.as_ref(),
        };
        let action = self.callback(id.0, f, (id.0 as i32, n))?;
        self.settle(id, dir, action.unwrap_or(0) == 0, Stage::Trailers, true)
    }

    /// Turns the filter's answer to one step into what is released.
    fn settle(
        &mut self,
        id: StreamId,
        dir: Dir,
        continued: bool,
        stage: Stage,
        eos: bool,
    ) -> Result<Flow, HostError> {
        let limit = self.host.inner.shared.limits.max_buffered_body;
        let stream = self.stream(id)?;
        if stream.closed && stream.local.is_none() {
            // `proxy_close_stream`: Envoy resets the stream; a client here gets a defined
            // 503 instead of a dropped connection.
            stream.local = Some(LocalResponse {
                status: 503,
                headers: vec![("content-type".to_string(), "application/json".to_string())],
                body:
                    br#"{"error":{"type":"stream_reset","message":"the filter reset the stream"}}"#
                        .to_vec(),
                details: "stream_reset".to_string(),
            });
        }
        if let Some(local) = stream.local.take() {
            return match dir {
                Dir::Request => self.local_reply(id, local),
                Dir::Response => {
                    stream.in_local_reply = true;
                    Ok(Flow {
                        local_response: Some(local),
                        end_of_stream: true,
                        ..Flow::default()
                    })
                }
            };
        }
        let d = Self::dir(stream, dir);
        let go = continued | std::mem::take(&mut d.resume);
        let mut flow = Flow::default();
        d.paused = (!go).then_some((stage, eos));
        if !go {
            if d.body.len() > limit {
                return Err(HostError::BodyTooLarge { limit });
            }
            return Ok(flow);
        }
        if !d.headers_released {
            d.headers_released = true;
            flow.headers = Some(d.headers.clone());
        }
        if stage != Stage::Headers {
            flow.body = std::mem::take(&mut d.body);
        }
        if stage == Stage::Trailers {
            flow.trailers = Some(d.trailers.clone());
        }
        if eos {
            d.end_released = true;
            flow.end_of_stream = true;
        }
        Ok(flow)
    }

    /// A local reply made in the request phase: like Envoy, run the response callbacks over
    /// it (they may still edit it) before it goes to the client.
    fn local_reply(&mut self, id: StreamId, local: LocalResponse) -> Result<Flow, HostError> {
        let stream = self.stream(id)?;
        stream.in_local_reply = true;
        let mut headers = vec![(":status".to_string(), local.status.to_string())];
        headers.extend(local.headers.iter().cloned());
        if !local.body.is_empty() && header_get(&headers, "content-type").is_none() {
            headers.push(("content-type".to_string(), "text/plain".to_string()));
        }
        let n = headers.len() as i32;
        stream.response = Direction {
            headers,
            body: local.body.clone(),
            ..Direction::default()
        };
        let has_body = !local.body.is_empty();
        let ctx = id.0 as i32;
        self.callback(
            id.0,
            self.ex.clone().response_headers.as_ref(),
            (ctx, n, (!has_body) as i32),
        )?;
        if has_body {
            let size = self.stream(id)?.response.body.len() as i32;
            self.callback(id.0, self.ex.clone().response_body.as_ref(), (ctx, size, 1))?;
        }
        let stream = self.stream(id)?;
        stream.response.headers_released = true;
        stream.response.end_released = true;
        let status = header_get(&stream.response.headers, ":status")
            .and_then(|s| s.parse().ok())
            .unwrap_or(local.status);
        let headers = stream
            .response
            .headers
            .iter()
            .filter(|(k, _)| !k.starts_with(':'))
            .cloned()
            .collect();
        Ok(Flow {
            local_response: Some(LocalResponse {
                status,
                headers,
                body: std::mem::take(&mut stream.response.body),
                details: local.details,
            }),
            end_of_stream: true,
            ..Flow::default()
        })
    }
}
