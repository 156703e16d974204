//! Kill points: a workflow's conditions under which it must stop (`kill_point
//! cost_per_transaction > 3.00 EUR over 7 days`, `kill_point verification_rate > 40% over
//! 1 day then stop`), measured by the gateway on the traffic it sees.
//!
//! Each workflow with kill points keeps one counter per calendar bucket (hour or day, as
//! its kill points' windows need) in shared data, `writ/killpoint/<workflow>/<window>/<bucket>`:
//! successful replies (2xx, the outputs the verification rate counts), the escalated ones,
//! and their settled spend in micros. A kill point over N buckets sums the current bucket
//! and the N-1 before it. Past buckets no longer change, so each VM caches their sum
//! ([`PastCache`]) and a request costs one CAS on the current bucket per window kind.
//!
//! A kill point is judged once its window holds `after N requests` replies (50 by
//! default), and raised at most once per current bucket (the flag is set by the same CAS
//! as the count): an alert record (`event: kill_point`) and
//! `writ_kill_points_crossed_total`; with `then stop` the workflow's kill switch is
//! flipped as an operator's `stop` would be ([`crate::kill_switch::stop_by`], `by:
//! kill_point`), which also logs its `event: kill_switch` record.
//!
//! Cost per transaction is the business case's own model (`docs/operating-model.md`): the
//! settled AI spend per reply plus the window's verification rate × the workflow's
//! `review_cost` (no `review_cost`: AI spend alone), so a kill point and `assume
//! cost_per_transaction` speak of the same number.

use crate::audit::AuditRecord;
use crate::calendar::{bucket, rfc3339, window_name};
use crate::ir::{KillMetric, KillPoint, Policy, Window, Workflow};
use crate::metrics::{self, Kind, MetricUpdate};
use crate::store::{self, SharedStore, Step, Stored};
use serde::{Deserialize, Serialize};
use std::cell::RefCell;
use std::collections::HashMap;

/// Who a kill point's flip is recorded as.
pub const STOPPED_BY: &str = "kill_point";

/// Replies, escalations and spend of one workflow in one bucket.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Totals {
    pub replies: u64,
    pub escalated: u64,
    pub spend_micros: i64,
}

impl Totals {
    fn add(self, o: Totals) -> Totals {
        Totals {
            replies: self.replies.saturating_add(o.replies),
            escalated: self.escalated.saturating_add(o.escalated),
            spend_micros: self.spend_micros.saturating_add(o.spend_micros),
        }
    }

    /// The kill point's measure on these totals: a fraction for the rate, currency units
    /// per reply for the cost (AI spend + verification rate × `review_cost_micros`).
    pub fn measure(&self, metric: KillMetric, review_cost_micros: Option<i64>) -> f64 {
        if self.replies == 0 {
            return 0.0;
        }
        let n = self.replies as f64;
        match metric {
            KillMetric::VerificationRate => self.escalated as f64 / n,
            KillMetric::CostPerTransaction => {
                let review = review_cost_micros.unwrap_or(0) as f64 * self.escalated as f64;
                (self.spend_micros as f64 + review) / 1e6 / n
            }
        }
    }
}

/// One bucket as stored: its totals and the kill points (by index in the workflow)
/// already raised in it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Bucket {
    pub totals: Totals,
    pub raised: Vec<u32>,
}

impl Stored for Bucket {
    fn encode(&self) -> Vec<u8> {
        serde_json::to_vec(self).unwrap_or_default()
    }
    fn decode(bytes: &[u8]) -> Option<Self> {
        serde_json::from_slice(bytes).ok()
    }
}

/// The shared-data key of a workflow's bucket.
pub fn bucket_key(workflow: &str, window: Window, unix_secs: i64) -> String {
    format!(
        "writ/killpoint/{}/{}/{}",
        store::key_segment(workflow),
        window_name(window),
        bucket(window, unix_secs)
    )
}

fn bucket_secs(window: Window) -> i64 {
    match window {
        Window::Hour => 3_600,
        // Kill points never use months (the check allows hours and days).
        Window::Day | Window::Month => 86_400,
    }
}

/// Per-VM cache of the sums of past buckets, keyed by workflow, window, current bucket
/// and length; entries for a bucket that is no longer current are dropped as it grows.
#[derive(Debug, Default)]
pub struct PastCache {
    sums: RefCell<HashMap<String, Totals>>,
}

impl PastCache {
    /// The totals of the `n - 1` buckets before the current one (read once per current
    /// bucket). A bucket that cannot be read counts as empty.
    fn past(
        &self,
        store: &dyn SharedStore,
        workflow: &str,
        window: Window,
        n: u32,
        now: i64,
    ) -> Totals {
        let key = format!("{}/{}/{n}", workflow, bucket_key(workflow, window, now));
        if let Some(t) = self.sums.borrow().get(&key) {
            return *t;
        }
        let len = bucket_secs(window);
        let sum = (1..i64::from(n)).fold(Totals::default(), |acc, k| {
            let b: Bucket = store::read(store, &bucket_key(workflow, window, now - k * len))
                .unwrap_or_default();
            acc.add(b.totals)
        });
        let mut sums = self.sums.borrow_mut();
        if sums.len() > 256 {
            sums.clear();
        }
        sums.insert(key, sum);
        sum
    }
}

/// One request's contribution, once its record is final.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Observation {
    /// The upstream answered 2xx (an output).
    pub replied: bool,
    pub escalated: bool,
    /// Settled spend of the request, in micros.
    pub spend_micros: i64,
}

/// What crossing kill points asks the adapter to do: log these records (after the
/// request's own) and make these metric changes.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Effects {
    pub records: Vec<AuditRecord>,
    pub metrics: Vec<MetricUpdate>,
    /// Names the crossings these records report (`<bucket key>#<kill point index>`), each
    /// with the index of its `kill_point` alert in `records`: the same crossing has the
    /// same name on every instance of a fleet, which claims it so that its alert fires
    /// once (`fleet::counters`).
    pub crossed: Vec<(String, usize)>,
}

/// Counts a request of `workflow` and judges its kill points. Store errors count nothing
/// and raise nothing (logged by the caller through the returned `Err`).
pub fn observe(
    store: &dyn SharedStore,
    cache: &PastCache,
    policy: &Policy,
    workflow: &Workflow,
    obs: Observation,
    unix_nanos: i64,
) -> Result<Effects, store::StoreError> {
    observe_with(store, cache, policy, workflow, obs, unix_nanos, |_| {
        Totals::default()
    })
}

/// [`observe`] in a fleet: `others(bucket key)` gives the other instances' totals of a
/// bucket (`fleet::counters::others_totals`), added to this instance's own over the kill
/// point's window before it is judged.
pub fn observe_with(
    store: &dyn SharedStore,
    cache: &PastCache,
    policy: &Policy,
    workflow: &Workflow,
    obs: Observation,
    unix_nanos: i64,
    others: impl Fn(&str) -> Totals,
) -> Result<Effects, store::StoreError> {
    let mut effects = Effects::default();
    if workflow.kill_points.is_empty() || (!obs.replied && obs.spend_micros == 0) {
        return Ok(effects);
    }
    let now = unix_nanos.div_euclid(1_000_000_000);
    let add = Totals {
        replies: u64::from(obs.replied),
        escalated: u64::from(obs.replied && obs.escalated),
        spend_micros: obs.spend_micros.max(0),
    };
    for window in [Window::Hour, Window::Day] {
        let points: Vec<(u32, &KillPoint)> = (0u32..)
            .zip(&workflow.kill_points)
            .filter(|(_, k)| k.window == window)
            .collect();
        if points.is_empty() {
            continue;
        }
        let pasts: Vec<Totals> = points
            .iter()
            .map(|(_, k)| {
                let n = k.buckets.max(1);
                let fleet = (0..i64::from(n)).fold(Totals::default(), |acc, b| {
                    let at = now - b * bucket_secs(window);
                    acc.add(others(&bucket_key(&workflow.name, window, at)))
                });
                cache.past(store, &workflow.name, window, n, now).add(fleet)
            })
            .collect();
        let key = bucket_key(&workflow.name, window, now);
        let crossed = store::update(store, &key, |b: &Bucket| {
            let mut next = b.clone();
            next.totals = next.totals.add(add);
            let mut crossed = Vec::new();
            for ((i, k), past) in points.iter().zip(&pasts) {
                let totals = past.add(next.totals);
                if totals.replies < k.min_requests || next.raised.contains(i) {
                    continue;
                }
                let m = totals.measure(k.metric, workflow.business_case.review_cost);
                let over = if k.inclusive {
                    m >= k.threshold
                } else {
                    m > k.threshold
                };
                if over {
                    next.raised.push(*i);
                    crossed.push((*i, *k, m, totals));
                }
            }
            Step::Write(next, crossed)
        })?;
        for (i, k, measured, totals) in crossed {
            effects
                .crossed
                .push((format!("{key}#{i}"), effects.records.len()));
            raise(
                store,
                policy,
                workflow,
                k,
                measured,
                totals,
                unix_nanos,
                &mut effects,
            );
        }
    }
    Ok(effects)
}

/// The value of a measure as the alert states it.
pub fn describe(metric: KillMetric, value: f64, currency: &str) -> String {
    match metric {
        KillMetric::VerificationRate => format!("{:.1}%", value * 100.0),
        KillMetric::CostPerTransaction => format!("{value:.4} {currency}"),
    }
}

#[allow(
    clippy::too_many_arguments,
    reason = "one call site; the effects it fills"
)]
fn raise(
    store: &dyn SharedStore,
    policy: &Policy,
    workflow: &Workflow,
    k: &KillPoint,
    measured: f64,
    totals: Totals,
    unix_nanos: i64,
    effects: &mut Effects,
) {
    let detail = format!(
        "kill point `{}` crossed: measured {} over {} replies",
        k.text,
        describe(k.metric, measured, &policy.currency),
        totals.replies
    );
    effects.metrics.push(MetricUpdate {
        kind: Kind::Counter,
        name: metrics::stat_name(
            metrics::KILL_POINTS.name,
            &[
                ("workflow", workflow.name.as_str()),
                ("metric", k.metric.as_str()),
            ],
        ),
        value: 1,
    });
    let mut record = AuditRecord {
        event: "kill_point".into(),
        time: rfc3339(unix_nanos),
        workflow: Some(workflow.name.clone()),
        policy: policy.name.clone(),
        policy_version: policy.version.clone(),
        source_sha256: policy.source_sha256.clone(),
        currency: Some(policy.currency.clone()),
        outcome: "alert".into(),
        signal: Some(k.text.clone()),
        detail: Some(detail.clone()),
        ..AuditRecord::default()
    };
    let flip = k
        .stop
        .then(|| {
            crate::kill_switch::stop_by(
                store,
                policy,
                &workflow.name,
                STOPPED_BY,
                &detail,
                unix_nanos,
            )
        })
        .flatten();
    if k.stop {
        record.outcome = if flip.is_some() { "stopped" } else { "error" }.into();
    }
    effects.records.push(record);
    if let Some(flip) = flip {
        effects.records.push(flip);
        for (name, stopped) in metrics::kill_switch_gauges(policy, store) {
            effects.metrics.push(MetricUpdate {
                kind: Kind::Gauge,
                name,
                value: stopped as i64,
            });
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::panic)]
    use super::*;
    use crate::ir::{Enforcement, Expr, KillSwitch, Oversight};
    use crate::store::MemoryStore;

    fn policy(points: Vec<KillPoint>) -> Policy {
        Policy {
            name: "p".into(),
            version: "1.0.0".into(),
            source_sha256: "ab".into(),
            currency: "EUR".into(),
            enforcement: Enforcement::Enforce,
            workflows: vec![Workflow {
                name: "support".into(),
                matcher: Expr::Const(true),
                oversight: Oversight::Hotl { threshold: 0.7 },
                assumed_verification_rate: None,
                team: None,
                user: None,
                scan_headers: Vec::new(),
                scan_query: false,
                kill_points: points,
                review_signals: None,
                handoff_output: false,
                business_case: Default::default(),
                fallback: None,
            }],
            prices: Vec::new(),
            detectors: Vec::new(),
            rules: Vec::new(),
            kill_switch: Some(KillSwitch {
                clause: None,
                admin_path: "/writ/admin/kill-switch".into(),
                token_sha256: String::new(),
            }),
        }
    }

    fn rate_point(stop: bool, buckets: u32) -> KillPoint {
        KillPoint {
            metric: KillMetric::VerificationRate,
            inclusive: false,
            threshold: 0.4,
            window: Window::Day,
            buckets,
            min_requests: 10,
            stop,
            text: "verification_rate > 40% over 1 day".into(),
        }
    }

    const DAY: i64 = 86_400 * 1_000_000_000;

    fn run(
        p: &Policy,
        s: &MemoryStore,
        c: &PastCache,
        n: usize,
        every: usize,
        at: i64,
    ) -> Vec<Effects> {
        let wf = &p.workflows[0];
        (0..n)
            .map(|i| {
                let obs = Observation {
                    replied: true,
                    escalated: i % every == 0,
                    spend_micros: 1_000_000,
                };
                observe(s, c, p, wf, obs, at).unwrap_or_default()
            })
            .collect()
    }

    #[test]
    fn a_crossed_rate_alerts_once_and_stops_the_workflow() {
        let p = policy(vec![rate_point(true, 1)]);
        let s = MemoryStore::new();
        let c = PastCache::default();
        // Every reply escalated: 100% > 40%, judged from the 10th reply on.
        let effects = run(&p, &s, &c, 20, 1, 100 * DAY);
        let fired: Vec<usize> = (0..20)
            .filter(|i| !effects[*i].records.is_empty())
            .collect();
        assert_eq!(fired, [9]);
        let e = &effects[9];
        assert_eq!(e.records[0].event, "kill_point");
        assert_eq!(e.records[0].outcome, "stopped");
        assert_eq!(
            e.records[0].signal.as_deref(),
            Some("verification_rate > 40% over 1 day")
        );
        assert_eq!(e.records[1].event, "kill_switch");
        assert_eq!(e.records[1].user.as_deref(), Some(STOPPED_BY));
        assert!(crate::kill_switch::is_stopped(&s, Some("support")));
        assert!(e.metrics.iter().any(|m| m.name
            == "writ_kill_points_crossed_total;workflow=support;metric=verification_rate"));
        assert!(
            e.metrics
                .iter()
                .any(|m| m.name == "writ_kill_switch_stopped;workflow=support" && m.value == 1)
        );
        // The next day fires again (once).
        let next = run(&p, &s, &c, 12, 1, 101 * DAY);
        assert_eq!(next.iter().filter(|e| !e.records.is_empty()).count(), 1);
    }

    #[test]
    fn under_the_threshold_or_sample_nothing_fires() {
        let p = policy(vec![rate_point(true, 1)]);
        let s = MemoryStore::new();
        let c = PastCache::default();
        // One in four escalated: 25% < 40%.
        assert!(
            run(&p, &s, &c, 40, 4, 100 * DAY)
                .iter()
                .all(|e| e.records.is_empty())
        );
        assert!(!crate::kill_switch::is_stopped(&s, Some("support")));
        // A failed reply with no spend counts nothing.
        let wf = &p.workflows[0];
        let none = Observation {
            replied: false,
            escalated: false,
            spend_micros: 0,
        };
        assert_eq!(
            observe(&s, &c, &p, wf, none, 100 * DAY).map(|e| e.records.len()),
            Ok(0)
        );
    }

    #[test]
    fn cost_sums_the_window_and_alert_only_does_not_stop() {
        let mut k = rate_point(false, 7);
        k.metric = KillMetric::CostPerTransaction;
        k.threshold = 1.5;
        k.text = "cost_per_transaction > 1.50 EUR over 7 days".into();
        let p = policy(vec![k]);
        let s = MemoryStore::new();
        let wf = &p.workflows[0];
        // Six days ago: 10 replies at 3 EUR each (they count for the 7-day window).
        for _ in 0..10 {
            let obs = Observation {
                replied: true,
                escalated: false,
                spend_micros: 3_000_000,
            };
            let e = observe(&s, &PastCache::default(), &p, wf, obs, 94 * DAY).unwrap_or_default();
            assert!(e.records.is_empty() || e.records[0].outcome == "alert");
        }
        // Today a fresh cache sums the past days: one 1 EUR reply pushes nothing new, the
        // day's own flag is clear, and the 7-day mean is (30 + 1) / 11 > 1.50.
        let c = PastCache::default();
        let obs = Observation {
            replied: true,
            escalated: false,
            spend_micros: 1_000_000,
        };
        let e = observe(&s, &c, &p, wf, obs, 100 * DAY).unwrap_or_default();
        assert_eq!(e.records.len(), 1, "{e:?}");
        assert_eq!(e.records[0].outcome, "alert");
        assert!(
            e.records[0]
                .detail
                .as_deref()
                .unwrap_or("")
                .contains("2.8182 EUR over 11 replies")
        );
        assert!(!crate::kill_switch::is_stopped(&s, Some("support")));
        // Eight days later the old spend is out of the window.
        let late = observe(&s, &c, &p, wf, obs, 108 * DAY).unwrap_or_default();
        assert!(late.records.is_empty());
        assert_eq!(
            describe(KillMetric::VerificationRate, 0.425, "EUR"),
            "42.5%"
        );
    }

    #[test]
    fn in_a_fleet_the_other_instances_totals_count_and_the_crossing_is_named() {
        let p = policy(vec![rate_point(true, 2)]);
        let s = MemoryStore::new();
        let c = PastCache::default();
        let wf = &p.workflows[0];
        let at = 40 * DAY;
        let today = bucket_key("support", Window::Day, at / 1_000_000_000);
        let yesterday = bucket_key("support", Window::Day, at / 1_000_000_000 - 86_400);
        // The others escalated 9 of 9 outputs today and yesterday: one escalated reply
        // here makes 19 of 19 over the window, past `after 10`.
        let others = |key: &str| {
            if key == today || key == yesterday {
                Totals {
                    replies: 9,
                    escalated: 9,
                    spend_micros: 0,
                }
            } else {
                Totals::default()
            }
        };
        let obs = Observation {
            replied: true,
            escalated: true,
            spend_micros: 0,
        };
        let e = observe_with(&s, &c, &p, wf, obs, at, others).unwrap_or_default();
        assert_eq!(e.crossed, vec![(format!("{today}#0"), 0)]);
        assert_eq!(e.records[0].event, "kill_point");
        assert!(
            e.records[0]
                .detail
                .as_deref()
                .is_some_and(|d| d.contains("over 19 replies")),
            "{:?}",
            e.records[0].detail
        );
        // Alone, the same reply is one of one: under `after 10`, nothing crosses.
        let alone = MemoryStore::new();
        let e = observe(&alone, &PastCache::default(), &p, wf, obs, at).unwrap_or_default();
        assert!(e.crossed.is_empty() && e.records.is_empty());
    }
}
