//! State shared by every VM of a host, as Envoy shares it across worker threads: metrics,
//! key-value shared data with compare-and-swap, and shared queues.

use crate::abi::{MetricKind, Status};
use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

/// Upper bounds (inclusive) of histogram buckets, Prometheus style; the last is +Inf.
pub const HISTOGRAM_BUCKETS: [u64; 16] = [
    1, 2, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10_000, 50_000, 100_000, 1_000_000,
];

/// The current value of one metric, as reported to callers and the `/metrics` endpoint.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct MetricValue {
    pub name: String,
    pub kind: MetricKind,
    /// Counter or gauge value; for a histogram, the number of samples.
    pub value: i64,
    /// Histogram only: sum of all samples.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sum: Option<u64>,
    /// Histogram only: cumulative counts per bucket of [`HISTOGRAM_BUCKETS`], then +Inf.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub buckets: Option<Vec<u64>>,
}

struct Metric {
    name: String,
    kind: MetricKind,
    value: i64,
    sum: u64,
    buckets: [u64; HISTOGRAM_BUCKETS.len() + 1],
}

/// Metrics, shared data and queues of one host.
#[derive(Default)]
pub struct Shared {
    metrics: Mutex<Vec<Metric>>,
    data: Mutex<HashMap<String, (Vec<u8>, u32)>>,
    next_cas: AtomicU64,
    queues: Mutex<Vec<Queue>>,
}

struct Queue {
    vm_id: String,
    name: String,
    items: VecDeque<Vec<u8>>,
    /// Serial of the VM that registered the queue: it is told when items arrive.
    owner: u64,
    ready: bool,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // A poisoned lock only means another thread panicked mid-update of plain data.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Shared {
    /// Forgets every shared-data value and queued item and zeroes every metric (the
    /// metric ids stay valid): the state of a host that has served nothing yet.
    pub fn reset(&self) {
        lock(&self.data).clear();
        for q in lock(&self.queues).iter_mut() {
            q.items.clear();
            q.ready = false;
        }
        for m in lock(&self.metrics).iter_mut() {
            m.value = 0;
            m.sum = 0;
            m.buckets = [0; HISTOGRAM_BUCKETS.len() + 1];
        }
    }

    /// Defines (or finds) a metric; ids are 1-based indexes, stable for the host's life.
    pub fn define_metric(&self, kind: MetricKind, name: &str) -> u32 {
        let mut metrics = lock(&self.metrics);
        if let Some(i) = metrics.iter().position(|m| m.name == name) {
            return i as u32 + 1;
        }
        metrics.push(Metric {
            name: name.to_string(),
            kind,
            value: 0,
            sum: 0,
            buckets: [0; HISTOGRAM_BUCKETS.len() + 1],
        });
        metrics.len() as u32
    }

    /// Adds `offset` to a counter or gauge; counters refuse to go down.
    pub fn increment_metric(&self, id: u32, offset: i64) -> Status {
        let mut metrics = lock(&self.metrics);
        let Some(m) = id.checked_sub(1).and_then(|i| metrics.get_mut(i as usize)) else {
            return Status::NotFound;
        };
        match m.kind {
            MetricKind::Counter if offset < 0 => Status::BadArgument,
            MetricKind::Histogram => Status::BadArgument,
            _ => {
                m.value = m.value.saturating_add(offset);
                Status::Ok
            }
        }
    }

    /// Sets a counter or gauge, or records one histogram sample.
    pub fn record_metric(&self, id: u32, value: u64) -> Status {
        let mut metrics = lock(&self.metrics);
        let Some(m) = id.checked_sub(1).and_then(|i| metrics.get_mut(i as usize)) else {
            return Status::NotFound;
        };
        match m.kind {
            MetricKind::Histogram => {
                m.value += 1;
                m.sum = m.sum.saturating_add(value);
                let slot = HISTOGRAM_BUCKETS
                    .iter()
                    .position(|b| value <= *b)
                    .unwrap_or(HISTOGRAM_BUCKETS.len());
                for b in &mut m.buckets[slot..] {
                    *b += 1;
                }
            }
            _ => m.value = i64::try_from(value).unwrap_or(i64::MAX),
        }
        Status::Ok
    }

    /// Reads a counter or gauge (a histogram has no single value: `BadArgument`).
    pub fn get_metric(&self, id: u32) -> Result<u64, Status> {
        let metrics = lock(&self.metrics);
        let m = id
            .checked_sub(1)
            .and_then(|i| metrics.get(i as usize))
            .ok_or(Status::NotFound)?;
        match m.kind {
            MetricKind::Histogram => Err(Status::BadArgument),
            _ => Ok(m.value.max(0) as u64),
        }
    }

    /// A snapshot of every metric, in definition order.
    pub fn metrics(&self) -> Vec<MetricValue> {
        lock(&self.metrics)
            .iter()
            .map(|m| MetricValue {
                name: m.name.clone(),
                kind: m.kind,
                value: m.value,
                sum: (m.kind == MetricKind::Histogram).then_some(m.sum),
                buckets: (m.kind == MetricKind::Histogram).then(|| m.buckets.to_vec()),
            })
            .collect()
    }

    /// Returns the value and its CAS token.
    pub fn get_data(&self, key: &str) -> Option<(Vec<u8>, u32)> {
        lock(&self.data).get(key).cloned()
    }

    /// Stores `value` if `cas` is 0 or still the key's current token. A key that does not
    /// exist yet is created whatever `cas` says, as Envoy does; so a guest creates a key
    /// with a non-zero token it can never hold, and of two guests racing to create the same
    /// key only the first succeeds.
    pub fn set_data(&self, key: &str, value: Vec<u8>, cas: u32) -> Status {
        let mut data = lock(&self.data);
        if cas != 0
            && let Some((_, current)) = data.get(key)
            && *current != cas
        {
            return Status::CasMismatch;
        }
        // Tokens are never 0 (0 means "no CAS" to the guest).
        let token =
            (self.next_cas.fetch_add(1, Ordering::Relaxed) % u64::from(u32::MAX)) as u32 + 1;
        data.insert(key.to_string(), (value, token));
        Status::Ok
    }

    /// Registers (or re-registers, after a VM restart) a queue owned by VM `owner`.
    pub fn register_queue(&self, vm_id: &str, name: &str, owner: u64) -> u32 {
        let mut queues = lock(&self.queues);
        if let Some(i) = queues
            .iter()
            .position(|q| q.vm_id == vm_id && q.name == name)
        {
            queues[i].owner = owner;
            return i as u32 + 1;
        }
        queues.push(Queue {
            vm_id: vm_id.to_string(),
            name: name.to_string(),
            items: VecDeque::new(),
            owner,
            ready: false,
        });
        queues.len() as u32
    }

    /// Finds a queue by name; an empty `vm_id` matches any VM id.
    pub fn resolve_queue(&self, vm_id: &str, name: &str) -> Option<u32> {
        lock(&self.queues)
            .iter()
            .position(|q| q.name == name && (vm_id.is_empty() || q.vm_id == vm_id))
            .map(|i| i as u32 + 1)
    }

    /// Appends an item and marks the queue ready for its owner.
    pub fn enqueue(&self, id: u32, item: Vec<u8>) -> Status {
        let mut queues = lock(&self.queues);
        let Some(q) = id.checked_sub(1).and_then(|i| queues.get_mut(i as usize)) else {
            return Status::NotFound;
        };
        q.items.push_back(item);
        q.ready = true;
        Status::Ok
    }

    /// Takes the oldest item.
    pub fn dequeue(&self, id: u32) -> Result<Vec<u8>, Status> {
        let mut queues = lock(&self.queues);
        let q = id
            .checked_sub(1)
            .and_then(|i| queues.get_mut(i as usize))
            .ok_or(Status::NotFound)?;
        q.items.pop_front().ok_or(Status::Empty)
    }

    /// Queues owned by VM `owner` that received items since the last call.
    pub fn take_ready_queues(&self, owner: u64) -> Vec<u32> {
        let mut queues = lock(&self.queues);
        let mut ready = Vec::new();
        for (i, q) in queues.iter_mut().enumerate() {
            if q.owner == owner && q.ready {
                q.ready = false;
                ready.push(i as u32 + 1);
            }
        }
        ready
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cas_refuses_stale_tokens() {
        let s = Shared::default();
        assert_eq!(s.set_data("k", b"1".to_vec(), 0), Status::Ok);
        let (_, cas) = s.get_data("k").unwrap_or_default();
        assert_ne!(cas, 0);
        assert_eq!(s.set_data("k", b"2".to_vec(), cas), Status::Ok);
        assert_eq!(s.set_data("k", b"3".to_vec(), cas), Status::CasMismatch);
        assert_eq!(s.get_data("k").map(|v| v.0), Some(b"2".to_vec()));
    }

    #[test]
    fn a_missing_key_is_created_whatever_the_cas_but_only_once() {
        let s = Shared::default();
        assert_eq!(s.set_data("new", b"a".to_vec(), u32::MAX), Status::Ok);
        assert_eq!(
            s.set_data("new", b"b".to_vec(), u32::MAX),
            Status::CasMismatch
        );
        assert_eq!(s.get_data("new").map(|v| v.0), Some(b"a".to_vec()));
    }

    #[test]
    fn metrics_follow_envoy_rules() {
        let s = Shared::default();
        let c = s.define_metric(MetricKind::Counter, "c");
        assert_eq!(s.define_metric(MetricKind::Counter, "c"), c);
        assert_eq!(s.increment_metric(c, 2), Status::Ok);
        assert_eq!(s.increment_metric(c, -1), Status::BadArgument);
        assert_eq!(s.get_metric(c), Ok(2));
        let h = s.define_metric(MetricKind::Histogram, "h");
        assert_eq!(s.record_metric(h, 7), Status::Ok);
        assert_eq!(s.get_metric(h), Err(Status::BadArgument));
        assert_eq!(s.increment_metric(99, 1), Status::NotFound);
        let snapshot = s.metrics();
        assert_eq!(snapshot[1].sum, Some(7));
    }
}
