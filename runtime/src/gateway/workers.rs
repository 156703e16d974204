//! The gateway's VMs, one per worker, like Envoy's workers: a request's HTTP context lives
//! in one VM, so every step of the request runs on that VM.
//!
//! A step runs on the calling I/O thread when its VM is free (as Envoy runs a filter on the
//! worker that does the connection's I/O): no thread hop, no wake-up, no allocation for a
//! queue. Only when another thread is inside the VM does the step queue to the VM's own
//! thread, which also runs the filter's timers (`proxy_on_tick`, queue notifications).

use crate::error::HostError;
use crate::host::Host;
use crate::vm::Vm;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, TryLockError, mpsc};
use std::time::{Duration, Instant};

type Job = Box<dyn FnOnce(&mut Vm) + Send>;

thread_local! {
    /// The index of the gateway's I/O thread this is, set when the thread starts.
    static IO_THREAD: std::cell::Cell<Option<usize>> = const { std::cell::Cell::new(None) };
}

/// Marks the calling thread as the gateway's I/O thread `index` (see [`Workers::pick`]).
pub(crate) fn set_io_thread(index: usize) {
    IO_THREAD.with(|t| t.set(Some(index)));
}

/// The longest the VM's thread sleeps before it looks at the filter's timers again (a step
/// run inline may have asked for ticks since it last looked).
const TIMER_POLL: Duration = Duration::from_millis(100);

/// One VM and the thread that runs its timers and the steps that found it busy.
struct Slot {
    vm: Arc<Mutex<Vm>>,
    jobs: mpsc::Sender<Job>,
}

/// The pool. Dropping it stops the threads once their queues drain.
pub(crate) struct Workers {
    slots: Vec<Slot>,
    next: AtomicUsize,
    /// Where the root contexts' logs go (see [`Workers::start`]).
    sink: Option<super::LogSink>,
}

/// The worker thread is gone (it cannot be, short of a bug: jobs never panic the loop).
#[derive(Debug)]
pub(crate) struct WorkerGone;

impl Workers {
    /// Starts `n` VMs, each with its thread; fails if a VM cannot start. What the root
    /// context logs from its timers (a tick's audit record, say) goes to `sink`.
    pub(crate) fn start(
        host: &Host,
        n: usize,
        sink: Option<super::LogSink>,
    ) -> Result<Workers, HostError> {
        let mut slots = Vec::with_capacity(n);
        for i in 0..n.max(1) {
            let mut vm = host.vm()?;
            // Callouts are performed by the request's task, not the VM's caller.
            vm.set_deferred_callouts(true);
            // Start-up logs stay where they were (the VM's own report); timers' go out.
            let _ = vm.take_root_logs();
            let vm = Arc::new(Mutex::new(vm));
            let (tx, rx) = mpsc::channel::<Job>();
            let shared = vm.clone();
            let sink = sink.clone();
            std::thread::Builder::new()
                .name(format!("writ-worker-{i}"))
                .spawn(move || worker_loop(&shared, &rx, sink.as_ref()))
                .map_err(|e| HostError::Instantiate(format!("cannot start a worker: {e}")))?;
            slots.push(Slot { vm, jobs: tx });
        }
        Ok(Workers {
            slots,
            next: AtomicUsize::new(0),
            sink,
        })
    }

    /// Picks the worker for a new request: the calling I/O thread's own VM, so that two
    /// I/O threads seldom meet at one VM (as an Envoy worker runs its own filters); round
    /// robin from a thread that is not one of the gateway's I/O threads.
    pub(crate) fn pick(&self) -> usize {
        let n = self.slots.len().max(1);
        IO_THREAD
            .with(std::cell::Cell::get)
            .unwrap_or_else(|| self.next.fetch_add(1, Ordering::Relaxed))
            % n
    }

    /// Runs `f` on worker `worker`'s VM and returns its result: right here when the VM is
    /// free, else on the VM's thread once the step ahead of it is done.
    pub(crate) async fn run<R: Send + 'static>(
        &self,
        worker: usize,
        f: impl FnOnce(&mut Vm) -> R + Send + 'static,
    ) -> Result<R, WorkerGone> {
        let slot = self.slots.get(worker).ok_or(WorkerGone)?;
        match slot.vm.try_lock() {
            Ok(mut vm) => return Ok(f(&mut vm)),
            // A step that panicked left the VM as it was; the next stream checks its health.
            Err(TryLockError::Poisoned(p)) => return Ok(f(&mut p.into_inner())),
            Err(TryLockError::WouldBlock) => {}
        }
        let (tx, rx) = tokio::sync::oneshot::channel();
        let job: Job = Box::new(move |vm| {
            let _ = tx.send(f(vm));
        });
        slot.jobs.send(job).map_err(|_| WorkerGone)?;
        rx.await.map_err(|_| WorkerGone)
    }
}

impl Workers {
    /// The gateway is stopping (requests drained): runs [`Vm::finish`] on each VM in
    /// turn, on the VM's own thread, waiting until `deadline` at most in all. What the
    /// root logs meanwhile goes to the sink, as a tick's does, before this returns: the
    /// process exits right after, and the give-back's log lines must not be lost.
    pub(crate) fn finish(&self, deadline: Instant) {
        for (i, slot) in self.slots.iter().enumerate() {
            let (tx, rx) = mpsc::channel();
            let sink = self.sink.clone();
            let job: Job = Box::new(move |vm| {
                let finished = vm.finish();
                send_root_logs(vm, sink.as_ref());
                let _ = tx.send(finished);
            });
            if slot.jobs.send(job).is_err() {
                continue;
            }
            match rx.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
                Ok(Ok(_)) => {}
                Ok(Err(e)) => tracing::warn!("worker {i} could not finish: {e}"),
                Err(_) => {
                    tracing::warn!("worker {i} did not finish before the shutdown deadline");
                    return;
                }
            }
        }
    }
}

fn lock(vm: &Mutex<Vm>) -> std::sync::MutexGuard<'_, Vm> {
    vm.lock().unwrap_or_else(|e| e.into_inner())
}

fn worker_loop(vm: &Mutex<Vm>, rx: &mpsc::Receiver<Job>, sink: Option<&super::LogSink>) {
    loop {
        let wait = lock(vm)
            .next_tick()
            .map_or(TIMER_POLL, |t| t.saturating_duration_since(Instant::now()))
            .min(TIMER_POLL);
        let mut vm = match rx.recv_timeout(wait) {
            Ok(job) => {
                let mut vm = lock(vm);
                job(&mut vm);
                vm
            }
            Err(mpsc::RecvTimeoutError::Timeout) => lock(vm),
            Err(mpsc::RecvTimeoutError::Disconnected) => return,
        };
        if let Err(e) = vm.run_timers() {
            tracing::warn!("timer callback failed: {e}");
        }
        send_root_logs(&mut vm, sink);
    }
}

/// Hands what the root context logged since the last call to `sink`.
fn send_root_logs(vm: &mut Vm, sink: Option<&super::LogSink>) {
    for log in vm.take_root_logs() {
        tracing::debug!(target: "writ::guest", level = ?log.level, "{}", log.message);
        if let Some(sink) = sink {
            (sink.0)(&log);
        }
    }
}
