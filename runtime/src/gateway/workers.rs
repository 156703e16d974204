//! Worker threads, each owning one VM, like Envoy's workers: every step of a request runs
//! on the thread whose VM holds its HTTP context.

use crate::error::HostError;
use crate::host::Host;
use crate::vm::Vm;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

type Job = Box<dyn FnOnce(&mut Vm) + Send>;

/// The pool. Dropping it stops the threads once their queues drain.
pub(crate) struct Workers {
    senders: Vec<mpsc::Sender<Job>>,
    next: AtomicUsize,
}

/// The worker thread is gone (it cannot be, short of a bug: jobs never panic the loop).
#[derive(Debug)]
pub(crate) struct WorkerGone;

impl Workers {
    /// Starts `n` threads, each with its own VM; fails if a VM cannot start.
    pub(crate) fn start(host: &Host, n: usize) -> Result<Workers, HostError> {
        let mut senders = Vec::with_capacity(n);
        for i in 0..n.max(1) {
            let (tx, rx) = mpsc::channel::<Job>();
            let (ready_tx, ready_rx) = mpsc::channel::<Result<(), HostError>>();
            let host = host.clone();
            let spawned = std::thread::Builder::new()
                .name(format!("writ-worker-{i}"))
                .spawn(move || {
                    let mut vm = match host.vm() {
                        Ok(mut vm) => {
                            // Callouts are performed by the request's task, not this thread.
                            vm.set_deferred_callouts(true);
                            let _ = ready_tx.send(Ok(()));
                            vm
                        }
                        Err(e) => {
                            let _ = ready_tx.send(Err(e));
                            return;
                        }
                    };
                    worker_loop(&mut vm, &rx);
                });
            if let Err(e) = spawned {
                return Err(HostError::Instantiate(format!(
                    "cannot start a worker: {e}"
                )));
            }
            match ready_rx.recv() {
                Ok(Ok(())) => senders.push(tx),
                Ok(Err(e)) => return Err(e),
                Err(_) => return Err(HostError::Instantiate("worker died at start".into())),
            }
        }
        Ok(Workers {
            senders,
            next: AtomicUsize::new(0),
        })
    }

    /// Picks the worker for a new request (round robin).
    pub(crate) fn pick(&self) -> usize {
        self.next.fetch_add(1, Ordering::Relaxed) % self.senders.len()
    }

    /// Runs `f` on worker `worker`'s VM and returns its result.
    pub(crate) async fn run<R: Send + 'static>(
        &self,
        worker: usize,
        f: impl FnOnce(&mut Vm) -> R + Send + 'static,
    ) -> Result<R, WorkerGone> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        let job: Job = Box::new(move |vm| {
            let _ = tx.send(f(vm));
        });
        self.senders
            .get(worker)
            .ok_or(WorkerGone)?
            .send(job)
            .map_err(|_| WorkerGone)?;
        rx.await.map_err(|_| WorkerGone)
    }
}

fn worker_loop(vm: &mut Vm, rx: &mpsc::Receiver<Job>) {
    loop {
        let wait = vm
            .next_tick()
            .map(|t| t.saturating_duration_since(Instant::now()))
            .unwrap_or(Duration::from_secs(1));
        match rx.recv_timeout(wait) {
            Ok(job) => job(vm),
            Err(mpsc::RecvTimeoutError::Timeout) => {}
            Err(mpsc::RecvTimeoutError::Disconnected) => return,
        }
        if let Err(e) = vm.run_timers() {
            tracing::warn!("timer callback failed: {e}");
        }
    }
}
