//! The adapter's side of a workflow's fallback ([`crate::fallback`] decides): start the
//! plan when a request is forwarded, and on a failed reply either ask the host for another
//! attempt, answer with the degraded reply or the human handoff, or let the failure through.

use proxy_wasm::types::{Action, LogLevel};

use super::host::{self, HostStore};
use super::{Http, Shared};
use crate::fallback::{self, Next, Plan};
use crate::{metrics, oversight};

impl Http {
    /// Called when the request is forwarded with `forwarded` as its body: starts the
    /// workflow's fallback plan. When the host can retry (`writ serve`) and the plan has
    /// retries, keeps the body to replay (already bounded by the body limit) and tells the
    /// host, by [`fallback::FALLBACK_HEADER`], to hand connection failures to the filter.
    pub(super) fn start_fallback(&mut self, shared: &Shared, forwarded: Option<Vec<u8>>) {
        let Some(plan) = Plan::for_workflow(
            shared.policy(),
            self.identity.workflow,
            self.audit.model_used.clone(),
        ) else {
            return;
        };
        self.host_retry =
            host::property(&fallback::HOST_RETRY_PROPERTY).is_some_and(|v| v.as_slice() == b"1");
        if self.host_retry && plan.has_retries() {
            if host::replace_header(host::REQUEST_HEADERS, fallback::FALLBACK_HEADER, "1").is_err()
            {
                host::log(
                    LogLevel::Error,
                    "writ: the host refused the fallback header",
                );
                self.host_retry = false;
            }
            self.retry_body = forwarded.unwrap_or_default();
        }
        self.fallback = Some(plan);
    }

    /// The reply's headers arrived (status and headers already read): `Some` when the
    /// fallback answers instead of the reply.
    pub(super) fn fallback_on_reply(&mut self, shared: &Shared) -> Option<Action> {
        let mut plan = self.fallback.take()?;
        let marker = self
            .response_headers
            .iter()
            .find(|(k, _)| k == fallback::FAILURE_HEADER)
            .map(|(_, v)| v.clone())
            .or_else(|| {
                // Envoy's own answer for a failed attempt (503/504) names the failure in
                // its details; a success costs no host call.
                if self.response_status < 500 {
                    return None;
                }
                host::property(&["response", "code_details"])
                    .and_then(|b| String::from_utf8(b).ok())
                    .and_then(|d| fallback::failure_from_details(&d))
                    .map(str::to_string)
            });
        let status = self.response_status;
        let Some(failure) = fallback::classify(status, marker.as_deref()) else {
            plan.answered(status);
            self.keep_plan(plan);
            return None;
        };
        let now = (self.now_nanos / 1_000_000_000) as i64;
        let can_retry = self.host_retry;
        let next = plan.on_failure(status, failure, can_retry, |model| {
            // The failed attempt is charged nothing; the fallback model is admitted afresh.
            self.release();
            let held = fallback::recheck(
                &shared.engine,
                &self.request,
                self.identity.clone(),
                &HostStore,
                now,
                model,
            )?;
            if let Some(held) = held {
                shared.count(host::GAUGE, metrics::RESERVATIONS.name, 1);
                self.reservation = Some(held);
            }
            Ok(())
        });
        let answer = match next {
            Next::PassThrough => None,
            Next::Retry { model, cluster } => Some(self.ask_retry(model, cluster.as_deref())),
            Next::Reply { status, body } => {
                self.audit.outcome = "degraded".into();
                self.release();
                Some(self.reply_with(status, &body))
            }
            Next::Human { queue } => {
                self.audit.outcome = "degraded".into();
                self.release();
                Some(self.hand_to_human(shared, queue, failure))
            }
        };
        self.keep_plan(plan);
        answer
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
    fn ask_retry(&mut self, model: Option<String>, cluster: Option<&str>) -> Action {
        let mut body = self.retry_body.clone();
        if let Some(m) = &model {
            if let Ok(Some(new)) = crate::request::set_model(&body, m) {
                body = new;
            }
            self.audit.model_used = Some(m.clone());
        }
        let target = fallback::retry_header_value(cluster);
        let headers = [
            (fallback::RETRY_HEADER, target.as_str()),
            ("content-type", "application/json"),
        ];
        if let Err(rc) = host::send_local(307, &body, &headers) {
            host::log(
                LogLevel::Error,
                &format!("writ: the host refused a retry (status {rc})"),
            );
            self.audit.outcome = "error".into();
            return self.reply_with(
                502,
                &crate::wire::error_body(
                    "the model provider failed and the fallback could not be sent",
                    "upstream_error",
                    "fallback_failed",
                ),
            );
        }
        Action::Pause
    }

    /// The human-only path: the handoff goes to the review queue, the client gets 202 with
    /// the review id to wait for.
    fn hand_to_human(
        &mut self,
        shared: &Shared,
        queue: String,
        failure: crate::ir::Failure,
    ) -> Action {
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
        };
        let workflow = metrics::workflow_label(shared.policy(), self.audit.workflow.as_deref());
        let labels = [("workflow", workflow), ("queue", queue.as_str())];
        shared.count(
            host::COUNTER,
            &metrics::stat_name(metrics::ESCALATIONS.name, &labels),
            1,
        );
        self.audit.escalation = Some(handoff.audit());
        if let Some(target) = self.config.review_queue.clone() {
            self.call(&target, &handoff.payload());
        }
        self.reply_with(202, &fallback::human_body(&review_id, &queue))
    }
}
