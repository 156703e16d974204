//! The session's side of a workflow's fallback ([`crate::fallback`] decides): start the
//! plan when a request is forwarded, and on a failed reply either ask the host for another
//! attempt, answer with the degraded reply or the human handoff, or let the failure through.

use super::{Effect, MetricKind, Next, OnFail, Session, Side, Step};
use crate::fallback::{self, Plan};
use crate::metrics;
use crate::oversight;
use crate::store::SharedStore;
use crate::wire::Reply;

impl Session {
    /// Whether the request's workflow has a fallback with retries, so the adapter should
    /// tell [`Session::set_host_retry`] whether the host can send it again (one property
    /// read, only for such workflows).
    pub fn wants_host_retry(&self) -> bool {
        Plan::for_workflow(self.shared.policy(), self.identity.workflow, None)
            .is_some_and(|p| p.has_retries())
    }

    /// The host sends a request again on the filter's word (`writ serve`'s
    /// [`fallback::HOST_RETRY_PROPERTY`]).
    pub fn set_host_retry(&mut self, yes: bool) {
        self.host_retry = yes;
        self.host_retry_probe = None;
    }

    /// How to ask the host whether it can send a request again (one property read),
    /// called at most once and only when the request is forwarded and its workflow's
    /// fallback has retries: a denied request, or one of a workflow without retries,
    /// never pays for the read.
    pub fn ask_host_retry_with(&mut self, probe: fn() -> bool) {
        self.host_retry_probe = Some(probe);
    }

    /// Asks the probe given to [`Session::ask_host_retry_with`], if any, now that the
    /// request is being forwarded.
    pub(super) fn resolve_host_retry(&mut self) {
        if let Some(probe) = self.host_retry_probe.take()
            && self.wants_host_retry()
        {
            self.host_retry = probe();
        }
    }

    /// Called when the request is forwarded with `forwarded` as its body (kept only when
    /// the host can retry; bounded by the body limit): starts the workflow's fallback plan,
    /// and tells the host, by [`fallback::FALLBACK_HEADER`], to hand connection failures
    /// to the filter.
    pub(super) fn start_fallback(&mut self, forwarded: Option<Vec<u8>>) {
        let Some(plan) = Plan::for_workflow(
            self.shared.policy(),
            self.identity.workflow,
            self.audit.model_used.clone(),
        ) else {
            return;
        };
        if self.host_retry && plan.has_retries() {
            self.out.push(Effect::SetHeader {
                side: Side::Request,
                name: fallback::FALLBACK_HEADER.to_string(),
                value: "1".to_string(),
                on_fail: OnFail::Log("writ: the host refused the fallback header"),
            });
            self.retry_body = forwarded.unwrap_or_default();
        }
        self.fallback = Some(plan);
    }

    /// The reply's headers arrived (status and headers already read): `Some` when the
    /// fallback answers instead of the reply.
    pub(super) fn fallback_on_reply(&mut self, store: &dyn SharedStore) -> Option<Step> {
        let mut plan = self.fallback.take()?;
        if !self.host_retry {
            self.envoy_attempts(&mut plan);
        }
        let marker = self
            .response_headers
            .iter()
            .find(|(k, _)| k == fallback::FAILURE_HEADER)
            .map(|(_, v)| v.clone());
        let status = self.response_status;
        let Some(failure) = fallback::classify(status, marker.as_deref()) else {
            plan.answered(status);
            self.keep_plan(plan);
            return None;
        };
        let now = (self.now_nanos / 1_000_000_000) as i64;
        let can_retry = self.host_retry;
        let shared = self.shared.clone();
        let next = plan.on_failure(status, failure, can_retry, |model| {
            // The failed attempt is charged nothing; the fallback model is admitted afresh.
            self.release(store);
            let held = fallback::recheck(
                &shared.engine,
                &self.request,
                self.identity.clone(),
                store,
                now,
                model,
            )?;
            if let Some(held) = held {
                self.add(MetricKind::Gauge, metrics::RESERVATIONS.name.to_string(), 1);
                self.reservation = Some(held);
            }
            Ok(())
        });
        let answer = match next {
            fallback::Next::PassThrough => None,
            fallback::Next::Retry { model, cluster } => {
                Some(self.ask_retry(model, cluster.as_deref()))
            }
            fallback::Next::Reply { status, body } => {
                self.audit.outcome = "degraded".into();
                self.release(store);
                Some(self.reply(&Reply { status, body }))
            }
            fallback::Next::Human { queue } => {
                self.audit.outcome = "degraded".into();
                self.release(store);
                Some(self.hand_to_human(queue, failure))
            }
        };
        self.keep_plan(plan);
        answer
    }

    /// In Envoy, the router's own retries along the workflow's [`fallback::EnvoyChain`]
    /// (`writ envoy` configures them), as its attempt count reports them: read only for a
    /// workflow that has such a chain, where Envoy sets the header itself.
    fn envoy_attempts(&self, plan: &mut Plan) {
        let Some(chain) = self
            .identity
            .workflow
            .and_then(|w| fallback::envoy_chain(self.shared.policy(), w))
        else {
            return;
        };
        let count = self
            .response_headers
            .iter()
            .find(|(k, _)| k == fallback::ENVOY_ATTEMPTS_HEADER)
            .and_then(|(_, v)| v.trim().parse::<u32>().ok());
        if let Some(n) = count {
            plan.envoy_retried(n, &chain.clusters);
        }
    }

    fn keep_plan(&mut self, plan: Plan) {
        self.audit.attempts = plan
            .attempts
            .iter()
            .filter_map(|a| serde_json::to_value(a).ok())
            .collect();
        self.fallback = Some(plan);
    }

    /// Asks the host for the next attempt: a local reply it does not send to the client,
    /// marked [`fallback::RETRY_HEADER`], whose body is the request to send.
    fn ask_retry(&mut self, model: Option<String>, cluster: Option<&str>) -> Step {
        let mut body = self.retry_body.clone();
        if let Some(m) = &model {
            if let Ok(Some(new)) = crate::request::set_model(&body, m) {
                body = new;
            }
            self.audit.model_used = Some(m.clone());
        }
        self.out.push(Effect::LocalReply {
            status: 307,
            body,
            headers: vec![(
                fallback::RETRY_HEADER.to_string(),
                fallback::retry_header_value(cluster),
            )],
            hold_for_audit: false,
        });
        self.step(Next::Pause)
    }

    /// The human-only path: the handoff goes to the review queue, the client gets 202 with
    /// the review id to wait for.
    fn hand_to_human(&mut self, queue: String, failure: crate::ir::Failure) -> Step {
        let review_id = oversight::review_id(&self.request_id);
        let handoff = oversight::Handoff {
            rule: "fallback".into(),
            clause: String::new(),
            reason: format!("provider failed ({})", failure.as_str()),
            confidence: None,
            request_id: self.request_id.clone(),
            workflow: self.audit.workflow.clone(),
            review_id: review_id.clone(),
            queue: queue.clone(),
            model: self.audit.model_used.clone(),
            pii: self.audit.pii.clone(),
            status: 202,
            output: None,
        };
        let workflow =
            metrics::workflow_label(self.shared.policy(), self.audit.workflow.as_deref());
        let labels = [("workflow", workflow), ("queue", queue.as_str())];
        let name = metrics::stat_name(metrics::ESCALATIONS.name, &labels);
        self.add(MetricKind::Counter, name, 1);
        self.audit.escalation = Some(handoff.audit());
        self.callout(self.config.review_queue.clone(), handoff.payload());
        self.reply(&Reply {
            status: 202,
            body: fallback::human_body(&review_id, &queue),
        })
    }
}
