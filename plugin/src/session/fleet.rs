//! A fleet member's oversight counters and alerts (`docs/fleet.md`): the counters a request
//! touched are listed for the tick to publish, an alert the fleet's numbers raised is
//! queued for the tick to claim (so it fires once for the fleet), and the records the root
//! context wrote outside any request join this request's own. The decisions are in
//! `crate::fleet::counters`; these are the session's hooks.

use super::{Level, Session};
use crate::fleet::counters::{self, Proposed};
use crate::kill_point::Effects;
use crate::store::SharedStore;

impl Session {
    /// Lists a counter the tick publishes to the store.
    pub(super) fn count_for_fleet(&mut self, store: &dyn SharedStore, key: &str) {
        if let Err(e) = counters::note(store, key) {
            self.log(
                Level::Error,
                format!("writ: could not list a counter for the fleet store: {e}"),
            );
        }
    }

    /// Queues an alert for the tick to claim; the instance that claims it writes it.
    pub(super) fn propose_for_fleet(&mut self, store: &dyn SharedStore, alert: Proposed) {
        match counters::propose(store, alert) {
            Ok(_) => {}
            Err(e) => self.log(
                Level::Error,
                format!("writ: could not queue an alert for the fleet store: {e}"),
            ),
        }
    }

    /// In a fleet, a kill point's alert record and its counter go to the claim (each
    /// crossing fires once for the fleet); a `then stop` flip stays this instance's own
    /// record (it applied it) and is published to the fleet like an operator's.
    pub(super) fn kill_points_for_fleet(
        &mut self,
        store: &dyn SharedStore,
        workflow: &crate::ir::Workflow,
        effects: &mut Effects,
    ) {
        let now = (self.now_nanos / 1_000_000_000) as i64;
        for window in [crate::ir::Window::Hour, crate::ir::Window::Day] {
            if workflow.kill_points.iter().any(|k| k.window == window) {
                let key = crate::kill_point::bucket_key(&workflow.name, window, now);
                self.count_for_fleet(store, &key);
            }
        }
        if effects.crossed.is_empty() {
            return;
        }
        let crossed = std::mem::take(&mut effects.crossed);
        let mut alerts: Vec<usize> = Vec::new();
        for (id, at) in &crossed {
            let Some(record) = effects.records.get(*at) else {
                continue;
            };
            let mut line = record.clone();
            line.artifact_sha256 = self.config.artifact_sha256.clone();
            line.request_id = self.request_id.clone();
            let counter = crate::metrics::stat_name(
                crate::metrics::KILL_POINTS.name,
                &[
                    ("workflow", workflow.name.as_str()),
                    (
                        "metric",
                        workflow
                            .kill_points
                            .iter()
                            .find(|k| Some(k.text.as_str()) == record.signal.as_deref())
                            .map_or("", |k| k.metric.as_str()),
                    ),
                ],
            );
            self.propose_for_fleet(
                store,
                Proposed {
                    id: format!("killpoint/{id}"),
                    lines: vec![line.log_line()],
                    payload: None,
                    counters: vec![counter],
                },
            );
            alerts.push(*at);
        }
        let mut i = 0;
        effects.records.retain(|_| {
            i += 1;
            !alerts.contains(&(i - 1))
        });
        effects
            .metrics
            .retain(|m| !m.name.starts_with(crate::metrics::KILL_POINTS.name));
        if effects.records.iter().any(|r| r.event == "kill_switch")
            && let Err(e) = crate::fleet::kill::mark_pending(store, &workflow.name)
        {
            self.log(
                Level::Error,
                format!("writ: could not queue the kill point's stop for the fleet store: {e}"),
            );
        }
    }

    /// In a fleet, the rubber-stamp signals a verdict raised (judged on the fleet's day)
    /// go to the claim with their counter: the instance that claims one writes it.
    pub(super) fn review_signals_for_fleet(
        &mut self,
        store: &dyn SharedStore,
        r: &mut crate::review_verdict::VerdictResponse,
    ) {
        let Some(wf) = r.audit.workflow.clone() else {
            return;
        };
        let day = crate::review_verdict::day_key(&wf, (self.now_nanos / 1_000_000_000) as i64);
        for mut alert in std::mem::take(&mut r.alerts) {
            let signal = alert.signal.clone().unwrap_or_default();
            alert.request_id = self.request_id.clone();
            alert.artifact_sha256 = self.config.artifact_sha256.clone();
            let counter = crate::metrics::stat_name(
                crate::metrics::REVIEW_SIGNALS.name,
                &[("workflow", wf.as_str()), ("signal", signal.as_str())],
            );
            self.propose_for_fleet(
                store,
                Proposed {
                    id: counters::signal_id(&day, &signal),
                    lines: vec![alert.log_line()],
                    payload: None,
                    counters: vec![counter],
                },
            );
        }
        r.metrics
            .retain(|m| !m.name.starts_with(crate::metrics::REVIEW_SIGNALS.name));
    }

    /// Records the root context queued (a fleet-applied kill switch, a claimed alert):
    /// they follow this request's own, in its audit stream.
    pub(super) fn take_fleet_records(&mut self, store: &dyn SharedStore) -> Vec<String> {
        if self.config.shared.is_none() {
            return Vec::new();
        }
        counters::take_records(store)
    }
}
