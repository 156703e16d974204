//! A fleet member's verdict call (`docs/fleet.md`, "Verdicts"): after the checks that need
//! no state, the review is claimed in the fleet store (`fleet::reviews`), so a verdict
//! reaches any instance and only one verdict per review wins fleet-wide; then it is
//! recorded on this instance as a lone gateway records it. The store call is a session
//! event like a lease's ([`Effect::StoreCall`] out, [`Session::on_store_answer`] in).

use super::{Effect, Next, Session, Stage, Step};
use crate::fleet::{counters, etcd, reviews};
use crate::review_verdict::{self, Checked, Refusal, ReviewItem};
use crate::store::SharedStore;
use crate::wire::Reply;

/// Calls one verdict may make to the store (create, then mark, then create again at most).
const MAX_CALLS: u8 = 3;

/// A verdict waiting for the store's answer to its claim.
pub(super) struct VerdictWait {
    checked: Checked,
    /// This instance's own record of the escalation, when it escalated it.
    local: Option<ReviewItem>,
    calls: u8,
}

impl Session {
    /// The verdict endpoint on a fleet member.
    pub(super) fn fleet_verdict(&mut self, store: &dyn SharedStore, body: &[u8]) -> Step {
        let shared = self.shared.clone();
        let auth = self.request.header("authorization").map(str::to_string);
        let checked = match review_verdict::check(
            shared.policy(),
            &self.request.method,
            auth.as_deref(),
            body,
            self.now_nanos as i64,
        ) {
            None => {
                return self.reply(&Reply::engine_error(
                    "the policy has no kill switch",
                    "no_kill_switch",
                ));
            }
            Some(Err(r)) => return self.answer_verdict(store, *r),
            Some(Ok(c)) => c,
        };
        let local = review_verdict::local_item(store, &checked.review_id);
        if local.as_ref().is_some_and(|i| i.verdict.is_some()) {
            let r = review_verdict::refuse_in_fleet(checked, Refusal::Reviewed);
            return self.answer_verdict(store, r);
        }
        // Escalated here: it may not be published yet, so create it reviewed; else mark
        // the published one.
        let version = if local.is_some() { 0 } else { 1 };
        let wait = VerdictWait {
            checked,
            local,
            calls: 0,
        };
        self.claim_review(store, wait, version)
    }

    fn claim_review(
        &mut self,
        store: &dyn SharedStore,
        mut wait: VerdictWait,
        version: i64,
    ) -> Step {
        if wait.calls >= MAX_CALLS {
            let r = review_verdict::refuse_in_fleet(wait.checked, Refusal::Store);
            return self.answer_verdict(store, r);
        }
        wait.calls += 1;
        let mut marked = wait.local.clone().unwrap_or_default();
        marked.verdict = Some(wait.checked.verdict.clone());
        let now_secs = (self.now_nanos / 1_000_000_000) as i64;
        let body = reviews::claim_body(
            &wait.checked.review_id,
            version,
            &marked,
            reviews::lease(store, now_secs),
        );
        self.out.push(Effect::StoreCall {
            path: etcd::TXN_PATH,
            body,
        });
        self.verdict_wait = Some(wait);
        self.stage = Stage::Leasing;
        self.step(Next::Pause)
    }

    /// The store answered the verdict's claim (`None`: no answer, or not a 2xx).
    pub(super) fn on_verdict_answer(
        &mut self,
        reply: Option<&[u8]>,
        store: &dyn SharedStore,
    ) -> Step {
        let Some(wait) = self.verdict_wait.take() else {
            return self.step(Next::Pause);
        };
        self.stage = Stage::Replied;
        let claimed = reply.and_then(reviews::parse_claim);
        self.reachable(store, claimed.is_some());
        let refuse = |wait: VerdictWait, why| review_verdict::refuse_in_fleet(wait.checked, why);
        let r = match claimed {
            None => refuse(wait, Refusal::Store),
            Some(reviews::Claimed::Published) => return self.claim_review(store, wait, 1),
            Some(reviews::Claimed::Absent) if wait.local.is_some() => {
                return self.claim_review(store, wait, 0);
            }
            Some(reviews::Claimed::Absent) => refuse(wait, Refusal::Unknown),
            Some(reviews::Claimed::Reviewed) => refuse(wait, Refusal::Reviewed),
            Some(reviews::Claimed::Won(prev)) => {
                let item = prev
                    .filter(|i| !i.request_id.is_empty())
                    .or_else(|| wait.local.clone());
                match item {
                    None => refuse(wait, Refusal::Unknown),
                    Some(mut item) => {
                        if wait.local.is_some() {
                            // This instance's own copy follows the fleet's.
                            let _ = review_verdict::mark_local(
                                store,
                                &wait.checked.review_id,
                                &wait.checked.verdict,
                            );
                        }
                        item.verdict = Some(wait.checked.verdict.clone());
                        let shared = self.shared.clone();
                        review_verdict::accept(
                            store,
                            shared.policy(),
                            wait.checked,
                            item,
                            self.now_nanos as i64,
                            &|key| counters::others_day(store, key),
                        )
                    }
                }
            }
        };
        self.answer_verdict(store, r)
    }

    /// Remembers an escalation so its verdict can be posted (a policy with a kill switch
    /// has the verdict endpoint): the review queue's gauges, and in a fleet the queue's
    /// counter and the escalation published for any instance to take. The one path for
    /// every kind of handoff (reply, MCP tool call).
    pub(super) fn remember_escalation(&mut self, store: &dyn SharedStore, review_id: &str) {
        let shared = self.shared.clone();
        let policy = shared.policy();
        if policy.kill_switch.is_none() {
            return;
        }
        let wf = crate::metrics::workflow_label(policy, self.audit.workflow.as_deref());
        match review_verdict::record_escalation(
            store,
            wf,
            review_id,
            &self.request_id,
            (self.now_nanos / 1_000_000_000) as i64,
        ) {
            Ok(updates) => {
                self.apply(&updates);
                if self.config.shared.is_some() {
                    self.count_for_fleet(store, &review_verdict::queue_key(wf));
                    self.publish_escalation(store, wf, review_id);
                }
            }
            Err(e) => self.log(
                super::Level::Error,
                format!("writ: could not record the escalation for its verdict: {e}"),
            ),
        }
    }

    /// In a fleet, an escalation this instance remembered for its verdict is queued for
    /// the tick to publish, so a verdict posted to any instance finds it. Only called in a
    /// fleet (`remember_escalation` checks).
    pub(super) fn publish_escalation(
        &mut self,
        store: &dyn SharedStore,
        workflow: &str,
        review_id: &str,
    ) {
        let item = ReviewItem {
            workflow: workflow.to_string(),
            request_id: self.request_id.clone(),
            at: (self.now_nanos / 1_000_000_000) as i64,
            verdict: None,
        };
        match reviews::queue(store, review_id, &item) {
            Ok(0) => {}
            Ok(n) => self.log(
                super::Level::Error,
                format!("writ: {n} escalations were never published to the fleet store (queue full); their verdicts go to the instance that escalated them"),
            ),
            Err(e) => self.log(
                super::Level::Error,
                format!("writ: could not queue an escalation for the fleet store: {e}"),
            ),
        }
    }
}
