//! Fallback when a provider fails: a workflow's `fallback on … to …` as a small state
//! machine the adapter drives, one attempt at a time, without host calls.
//!
//! The adapter starts a [`Plan`] when a request of a workflow with a fallback is
//! forwarded. When the reply's headers say the attempt failed ([`classify`]: 5xx, 429, or
//! the host's `x-writ-upstream-failure: connect|timeout` for an attempt that got no reply),
//! [`Plan::on_failure`] records the attempt and picks the next step:
//!
//! - `model "m"`: every request rule is re-checked for `m` (the caller's `recheck`, which
//!   runs the whole request phase with the model replaced: allowlists, prices, budgets, and
//!   the spend reservation re-made at `m`'s price). A step the rules refuse is skipped and
//!   recorded with the clause that refused it.
//! - `cluster "c"`: the same request to another upstream.
//! - `reply 503 "…"`: a fixed answer in the API's error shape.
//! - `human "q"`: a handoff to the review queue, and 202 to the client.
//!
//! Retries (`model`, `cluster`) need a host that can send a request again: `writ serve`
//! says so with the stream property [`HOST_RETRY_PROPERTY`]. Where the host cannot (Envoy,
//! whose router retries clusters itself, `docs/fallback.md`), retry steps are skipped and
//! recorded as such, and the degraded answer, if any, answers.
//!
//! Every attempt lands in the request's audit record ([`Attempt`], the `attempts` array).
//!
//! Architecture invariant: no host calls; the adapter translates [`Next`] into host calls.

use crate::eval::{Engine, Identity, Verdict};
use crate::ir::{self, Failure, FallbackStep};
use crate::request::Request;
use crate::spend::Reservation;
use crate::store::SharedStore;
use serde::Serialize;

/// Response header a host sets on the reply it makes up for an attempt that got no reply
/// from the provider: `connect` (connection failed or reset) or `timeout`.
pub const FAILURE_HEADER: &str = "x-writ-upstream-failure";
/// Stream property (`writ.host_retry`) a host sets when it can send a request again on the
/// filter's word (`writ serve`); Envoy does not, so a client cannot ask for it.
pub const HOST_RETRY_PROPERTY: [&str; 2] = ["writ", "host_retry"];
/// Request header the filter sets (and the host removes before forwarding) when the request
/// has a fallback: the host then hands connection failures and timeouts to the filter as a
/// reply carrying [`FAILURE_HEADER`] instead of answering them itself.
pub const FALLBACK_HEADER: &str = "x-writ-fallback";
/// Header of the filter's local reply that is not for the client but asks the host for the
/// next attempt: its body is the request body to send, the value the upstream
/// (`cluster=<name>`, or `upstream` for the default one).
pub const RETRY_HEADER: &str = "x-writ-retry";
/// Most attempts one request makes, whatever the policy says (the first included).
pub const MAX_ATTEMPTS: usize = 8;

/// The response header Envoy sets, with `include_attempt_count_in_response`, to the number
/// of upstream attempts its router made. `writ envoy` turns it on for the routes it
/// generates from [`envoy_chain`], and the filter reads it only for those workflows.
pub const ENVOY_ATTEMPTS_HEADER: &str = "x-envoy-attempt-count";

/// What Envoy's router can do of a workflow's fallback by itself: resend the same bytes
/// to the clusters of its leading `cluster` steps, in order, on the failures listed.
/// `writ envoy` writes it as an aggregate cluster with a retry policy on a route that
/// matches the workflow.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EnvoyChain {
    /// The request header (lower-case) and value the workflow's matcher tests.
    pub header: String,
    pub value: String,
    /// The fallback clusters, in order (the default upstream comes first).
    pub clusters: Vec<String>,
    /// The failures the retries are for.
    pub on: Vec<ir::Failure>,
}

/// The part of workflow `workflow`'s fallback that Envoy's router can carry out, or
/// `None`. Only when the router would do exactly what the policy says:
///
/// - the retry steps are all `cluster` steps (a `model` step changes the body and
///   re-checks every request rule for the new model: only the filter can, and Envoy's
///   router retries below it, so a cluster step after a model step would reach that
///   cluster with a model the policy did not name);
/// - the workflow is told by `header "h" == "v"`, and so is every workflow before it, on
///   the same header (a request belongs to the first workflow that matches; a route can
///   only test headers, and only then does the route pick the same workflow).
///
/// The degraded steps after the clusters stay the filter's.
pub fn envoy_chain(policy: &ir::Policy, workflow: usize) -> Option<EnvoyChain> {
    fn header_eq(e: &ir::Expr) -> Option<(&str, &str)> {
        use ir::{CmpOp, Expr, Field, Operand, Value};
        match e {
            Expr::Compare {
                left: Operand::Field(Field::Header(h)),
                op: CmpOp::Eq,
                right: Operand::Const(Value::Str(v)),
            }
            | Expr::Compare {
                left: Operand::Const(Value::Str(v)),
                op: CmpOp::Eq,
                right: Operand::Field(Field::Header(h)),
            } => Some((h, v)),
            _ => None,
        }
    }
    let w = policy.workflows.get(workflow)?;
    let fb = w.fallback.as_ref()?;
    let mut clusters = Vec::new();
    for step in &fb.steps {
        match step {
            FallbackStep::Cluster(c) => clusters.push(c.clone()),
            FallbackStep::Model(_) => return None,
            FallbackStep::Reply { .. } | FallbackStep::Human { .. } => break,
        }
    }
    if clusters.is_empty() {
        return None;
    }
    let (header, value) = header_eq(&w.matcher)?;
    let earlier_ok = policy
        .workflows
        .get(..workflow)?
        .iter()
        .all(|e| header_eq(&e.matcher).is_some_and(|(h, v)| h == header && v != value));
    earlier_ok.then(|| EnvoyChain {
        header: header.to_string(),
        value: value.to_string(),
        clusters,
        on: fb.on.clone(),
    })
}

/// How a reply (or the lack of one) failed, if fallback cares: the host's failure header
/// first, then 429, then 500..=599.
pub fn classify(status: u16, failure: Option<&str>) -> Option<Failure> {
    match failure.map(str::trim) {
        Some("connect") => return Some(Failure::Connect),
        Some("timeout") => return Some(Failure::Timeout),
        _ => {}
    }
    match status {
        429 => Some(Failure::Status429),
        500..=599 => Some(Failure::Status5xx),
        _ => None,
    }
}

/// The degraded answer (`reply` or `human`) a host that cannot retry gives to a reply of
/// `status` from `workflow`'s provider: the first such step of a fallback declared for
/// the failure, model and cluster steps skipped (as in Envoy). `None`: the failure (or
/// success) reaches the response rules as it is. `writ explain` uses it.
pub fn degraded_answer(
    policy: &ir::Policy,
    workflow: Option<usize>,
    status: u16,
) -> Option<(Failure, Degraded<'_>)> {
    let failure = classify(status, None)?;
    let fb = workflow
        .and_then(|i| policy.workflows.get(i))?
        .fallback
        .as_ref()?;
    if !fb.on.contains(&failure) {
        return None;
    }
    let answer = fb.steps.iter().find_map(|s| match s {
        FallbackStep::Reply { status, .. } => Some(Degraded::Reply { status: *status }),
        FallbackStep::Human { queue } => Some(Degraded::Human { queue }),
        FallbackStep::Model(_) | FallbackStep::Cluster(_) => None,
    })?;
    Some((failure, answer))
}

/// A fallback's degraded answer, as [`degraded_answer`] finds it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Degraded<'a> {
    /// A fixed reply with this status.
    Reply { status: u16 },
    /// The human-only path: 202 and a handoff to this queue.
    Human { queue: &'a str },
}

/// The failure in Envoy's `response.code_details` of its own answer for a failed attempt:
/// a reset or refused connection before any reply is `connect`, the route's timeout is
/// `timeout`; anything else (`via_upstream`, …) is none. (Not read yet: the session sees
/// Envoy's 503/504 as `5xx`; an adapter that reads the property passes this as the
/// failure header's value.)
pub fn failure_from_details(details: &str) -> Option<&'static str> {
    if details.starts_with("upstream_reset_before_response_started") {
        Some("connect")
    } else if details.starts_with("upstream_response_timeout") {
        Some("timeout")
    } else {
        None
    }
}

/// One attempt of a request, as the audit record shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Attempt {
    /// The model the attempt asked for.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    /// The upstream cluster; `None` is the default upstream.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cluster: Option<String>,
    /// The status the provider answered (or the host made up for a failure).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status: Option<u16>,
    /// How the attempt failed (`5xx`, `429`, `timeout`, `connect`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub failure: Option<&'static str>,
    /// Why the step was not tried: the clause whose rule refused the model, `budget`,
    /// `no_host_retry` or `attempt_limit`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub skipped: Option<String>,
    /// The degraded answer that ended the request (`reply` or `human`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub answer: Option<&'static str>,
}

impl Attempt {
    fn target(model: Option<String>, cluster: Option<String>) -> Attempt {
        Attempt {
            model,
            cluster,
            status: None,
            failure: None,
            skipped: None,
            answer: None,
        }
    }
}

/// What the adapter does after a failed attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Next {
    /// Ask the host for another attempt: `model` rewrites the body's model (the re-check
    /// passed, the reservation is re-made), `cluster` picks the upstream (`None`: default).
    Retry {
        model: Option<String>,
        cluster: Option<String>,
    },
    /// Answer with this status and body (the API's error shape).
    Reply { status: u16, body: Vec<u8> },
    /// Hand off to this review queue and answer 202 ([`human_body`]).
    Human { queue: String },
    /// Nothing (more) to do: the failure goes to the client as it is.
    PassThrough,
}

/// The fallback of one request: where it stands and what it tried.
#[derive(Debug, Clone)]
pub struct Plan {
    fallback: ir::Fallback,
    next_step: usize,
    current: Attempt,
    /// Every attempt so far, in order (the current one is added when it ends).
    pub attempts: Vec<Attempt>,
    ended: bool,
}

impl Plan {
    /// A plan for a request of a workflow with `fallback`, first sent for `model`.
    pub fn new(fallback: &ir::Fallback, model: Option<String>) -> Plan {
        Plan {
            fallback: fallback.clone(),
            next_step: 0,
            current: Attempt::target(model, None),
            attempts: Vec::new(),
            ended: false,
        }
    }

    /// The plan of the request's workflow, if it declares a fallback.
    pub fn for_workflow(
        policy: &ir::Policy,
        workflow: Option<usize>,
        model: Option<String>,
    ) -> Option<Plan> {
        let fb = workflow
            .and_then(|i| policy.workflows.get(i))?
            .fallback
            .as_ref()?;
        Some(Plan::new(fb, model))
    }

    /// Whether the plan has a step that needs the host to send the request again.
    pub fn has_retries(&self) -> bool {
        self.fallback
            .steps
            .iter()
            .any(|s| matches!(s, FallbackStep::Model(_) | FallbackStep::Cluster(_)))
    }

    /// The model the current attempt asks for.
    pub fn model(&self) -> Option<&str> {
        self.current.model.as_deref()
    }

    /// Envoy's router made `count` attempts for this request along `clusters` (an
    /// [`EnvoyChain`]'s, the default upstream first): the attempts before the last are
    /// recorded with `failure: "envoy_retry"` (Envoy says how many there were, not how
    /// each failed), the last becomes the current one (its cluster, to be answered), and
    /// the cluster steps it used are spent. A count of 1, or one past the chain, changes
    /// nothing but what the chain covers.
    pub fn envoy_retried(&mut self, count: u32, clusters: &[String]) {
        let retries = (count.saturating_sub(1) as usize).min(clusters.len());
        for k in 0..retries {
            let mut a = self.current.clone();
            a.cluster = k.checked_sub(1).and_then(|i| clusters.get(i)).cloned();
            a.failure = Some("envoy_retry");
            self.attempts.push(a);
        }
        if retries > 0 {
            self.current.cluster = clusters.get(retries - 1).cloned();
            self.next_step += retries;
        }
    }

    /// The current attempt got an answer the fallback does not handle (a success, or a
    /// failure it was not declared for): recorded once.
    pub fn answered(&mut self, status: u16) {
        if std::mem::replace(&mut self.ended, true) {
            return;
        }
        let mut done = self.current.clone();
        done.status = Some(status);
        self.attempts.push(done);
    }

    /// The current attempt failed with `failure` (reply status `status`, 0 when none came).
    /// Records it and walks the steps: a retry the host cannot make (`can_retry` false), one
    /// past [`MAX_ATTEMPTS`], or a model `recheck` refuses (its `Err` says why, a clause id
    /// or `budget`) is recorded as skipped; the first step that can run is returned.
    pub fn on_failure(
        &mut self,
        status: u16,
        failure: Failure,
        can_retry: bool,
        mut recheck: impl FnMut(&str) -> Result<(), String>,
    ) -> Next {
        if self.ended {
            return Next::PassThrough;
        }
        if !self.fallback.on.contains(&failure) {
            self.answered(status);
            return Next::PassThrough;
        }
        let mut failed = self.current.clone();
        failed.status = (status != 0).then_some(status);
        failed.failure = Some(failure.as_str());
        self.attempts.push(failed);
        while let Some(step) = self.fallback.steps.get(self.next_step).cloned() {
            self.next_step += 1;
            let (model, cluster) = match step {
                FallbackStep::Model(m) => (Some(m), None),
                FallbackStep::Cluster(c) => (self.current.model.clone(), Some(c)),
                FallbackStep::Reply { status, message } => {
                    self.end_with("reply", Some(status));
                    return Next::Reply {
                        status,
                        body: crate::wire::error_body(
                            &message,
                            "upstream_error",
                            "provider_unavailable",
                        ),
                    };
                }
                FallbackStep::Human { queue } => {
                    self.end_with("human", Some(202));
                    return Next::Human { queue };
                }
            };
            let mut next = Attempt::target(model.clone(), cluster.clone());
            let refused = if !can_retry {
                Some("no_host_retry".to_string())
            } else if self.tried() >= MAX_ATTEMPTS {
                Some("attempt_limit".to_string())
            } else {
                match (&model, &self.current.model) {
                    // Only a different model changes what the rules see.
                    (Some(m), cur) if cur.as_deref() != Some(m.as_str()) => recheck(m).err(),
                    _ => None,
                }
            };
            if let Some(why) = refused {
                next.skipped = Some(why);
                self.attempts.push(next);
                continue;
            }
            self.current = next;
            return Next::Retry { model, cluster };
        }
        self.ended = true;
        Next::PassThrough
    }

    /// Attempts that went to a provider (skipped steps and answers aside).
    fn tried(&self) -> usize {
        self.attempts
            .iter()
            .filter(|a| a.skipped.is_none() && a.answer.is_none())
            .count()
    }

    fn end_with(&mut self, answer: &'static str, status: Option<u16>) {
        self.ended = true;
        let mut a = Attempt::target(None, None);
        a.answer = Some(answer);
        a.status = status;
        self.attempts.push(a);
    }
}

/// Re-runs the whole request phase ([`crate::decide::request_phase`]) as if the client had
/// asked for `model`: every request rule (allowlists, conditions on the model), the spend
/// admission at `model`'s price and the rules on spend. `Ok` carries the new reservation
/// (the caller released the failed attempt's first); `Err` the clause of the rule that
/// refused, or `spend_unavailable` when the ledger failed (fail closed: the step is
/// skipped, never taken unchecked).
pub fn recheck(
    engine: &Engine,
    request: &Request,
    identity: Identity,
    store: &dyn SharedStore,
    unix_secs: i64,
    model: &str,
) -> Result<Option<Reservation>, String> {
    let mut asked = request.clone();
    if let Some(obj) = asked.body.as_mut().and_then(|b| b.as_object_mut()) {
        obj.insert("model".into(), serde_json::Value::String(model.to_string()));
        // The detection pass described the body as sent; this one differs (its model).
        asked.detection = None;
    }
    let mut phase = crate::decide::request_phase(engine, &asked, identity, store, unix_secs);
    let refused = if phase.ledger_error.is_some() {
        Some("spend_unavailable".to_string())
    } else if let Verdict::Deny { clause, .. } = &phase.decision.verdict {
        Some(clause.clone())
    } else {
        None
    };
    match refused {
        Some(why) => {
            if let Some(held) = phase.reservation.as_mut() {
                // Best effort: a ledger that failed is already the reason.
                let _ = held.release(store);
            }
            Err(why)
        }
        None => Ok(phase.reservation),
    }
}

/// The 202 body of a human-only answer: the review to wait for, no message text.
pub fn human_body(review_id: &str, queue: &str) -> Vec<u8> {
    let v = serde_json::json!({
        "status": "pending_human",
        "review_id": review_id,
        "queue": queue,
        "message": "The model provider is unavailable; a person will answer this request.",
    });
    serde_json::to_vec(&v).unwrap_or_default()
}

/// The host's retry header value for an upstream: `cluster=<name>`, or `upstream`.
pub fn retry_header_value(cluster: Option<&str>) -> String {
    match cluster {
        Some(c) => format!("cluster={c}"),
        None => "upstream".to_string(),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;

    fn fallback(on: &[Failure], steps: Vec<FallbackStep>) -> ir::Fallback {
        ir::Fallback {
            on: on.to_vec(),
            steps,
        }
    }

    fn all() -> Vec<Failure> {
        vec![
            Failure::Status5xx,
            Failure::Status429,
            Failure::Timeout,
            Failure::Connect,
        ]
    }

    #[test]
    fn classifies_statuses_and_host_failures() {
        assert_eq!(classify(503, None), Some(Failure::Status5xx));
        assert_eq!(classify(500, None), Some(Failure::Status5xx));
        assert_eq!(classify(599, None), Some(Failure::Status5xx));
        assert_eq!(classify(429, None), Some(Failure::Status429));
        assert_eq!(classify(200, None), None);
        assert_eq!(classify(404, None), None);
        assert_eq!(classify(600, None), None);
        assert_eq!(classify(502, Some("connect")), Some(Failure::Connect));
        assert_eq!(classify(504, Some(" timeout")), Some(Failure::Timeout));
        assert_eq!(classify(200, Some("other")), None);
        assert_eq!(
            failure_from_details("upstream_reset_before_response_started{connection_failure}"),
            Some("connect")
        );
        assert_eq!(
            failure_from_details("upstream_response_timeout"),
            Some("timeout")
        );
        assert_eq!(failure_from_details("via_upstream"), None);
    }

    #[test]
    fn envoys_retries_are_recorded_and_spend_the_cluster_steps() {
        let steps = vec![
            FallbackStep::Cluster("b1".into()),
            FallbackStep::Cluster("b2".into()),
            FallbackStep::Reply {
                status: 503,
                message: "down".into(),
            },
        ];
        let chain = ["b1".to_string(), "b2".to_string()];
        // Two attempts: the default upstream failed, b1 answered.
        let mut plan = Plan::new(&fallback(&all(), steps.clone()), Some("m".into()));
        plan.envoy_retried(2, &chain);
        plan.answered(200);
        let got: Vec<_> = plan
            .attempts
            .iter()
            .map(|a| (a.cluster.as_deref(), a.status, a.failure))
            .collect();
        assert_eq!(
            got,
            [
                (None, None, Some("envoy_retry")),
                (Some("b1"), Some(200), None)
            ]
        );
        // Three attempts, the last failed too: the filter's reply ends it, no cluster step
        // is left for it to skip.
        let mut plan = Plan::new(&fallback(&all(), steps.clone()), Some("m".into()));
        plan.envoy_retried(3, &chain);
        let next = plan.on_failure(503, Failure::Status5xx, false, |_| Ok(()));
        assert!(matches!(next, Next::Reply { status: 503, .. }));
        assert_eq!(plan.attempts.len(), 4, "{:?}", plan.attempts);
        assert_eq!(plan.attempts[2].cluster.as_deref(), Some("b2"));
        assert!(plan.attempts.iter().all(|a| a.skipped.is_none()));
        // One attempt, or none reported: nothing changes.
        let mut plan = Plan::new(&fallback(&all(), steps), Some("m".into()));
        plan.envoy_retried(1, &chain);
        plan.answered(200);
        assert_eq!(plan.attempts.len(), 1);
        assert_eq!(plan.attempts[0].cluster, None);
    }

    #[test]
    fn model_then_cluster_then_reply_in_order() {
        let fb = fallback(
            &all(),
            vec![
                FallbackStep::Model("mini".into()),
                FallbackStep::Cluster("backup".into()),
                FallbackStep::Reply {
                    status: 503,
                    message: "down".into(),
                },
            ],
        );
        let mut plan = Plan::new(&fb, Some("big".into()));
        assert!(plan.has_retries());
        let mut checked = Vec::new();
        let next = plan.on_failure(503, Failure::Status5xx, true, |m| {
            checked.push(m.to_string());
            Ok(())
        });
        assert_eq!(
            next,
            Next::Retry {
                model: Some("mini".into()),
                cluster: None
            }
        );
        assert_eq!(checked, ["mini"]);
        assert_eq!(plan.model(), Some("mini"));
        // The cluster keeps the model now in use; no re-check for the same model.
        let next = plan.on_failure(0, Failure::Connect, true, |_| panic!("no re-check"));
        assert_eq!(
            next,
            Next::Retry {
                model: Some("mini".into()),
                cluster: Some("backup".into())
            }
        );
        let Next::Reply { status, body } =
            plan.on_failure(429, Failure::Status429, true, |_| Ok(()))
        else {
            panic!("expected the reply");
        };
        assert_eq!(status, 503);
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(v["error"]["message"], "down");
        assert_eq!(v["error"]["code"], "provider_unavailable");
        let json = serde_json::to_value(&plan.attempts).unwrap();
        assert_eq!(
            json,
            serde_json::json!([
                {"model": "big", "status": 503, "failure": "5xx"},
                {"model": "mini", "failure": "connect"},
                {"model": "mini", "cluster": "backup", "status": 429, "failure": "429"},
                {"status": 503, "answer": "reply"},
            ])
        );
        // Ended: later answers change nothing.
        plan.answered(200);
        assert_eq!(plan.attempts.len(), 4);
    }

    #[test]
    fn a_refused_model_is_skipped_with_its_reason() {
        let fb = fallback(
            &[Failure::Status5xx],
            vec![
                FallbackStep::Model("denied".into()),
                FallbackStep::Model("ok".into()),
            ],
        );
        let mut plan = Plan::new(&fb, Some("big".into()));
        let next = plan.on_failure(500, Failure::Status5xx, true, |m| {
            if m == "denied" {
                Err("AIP-3.1".into())
            } else {
                Ok(())
            }
        });
        assert_eq!(
            next,
            Next::Retry {
                model: Some("ok".into()),
                cluster: None
            }
        );
        assert_eq!(plan.attempts[1].skipped.as_deref(), Some("AIP-3.1"));
        plan.answered(200);
        assert_eq!(plan.attempts.last().unwrap().status, Some(200));
        assert_eq!(plan.attempts.len(), 3);
    }

    #[test]
    fn failures_not_declared_and_successes_pass_through() {
        let fb = fallback(&[Failure::Connect], vec![FallbackStep::Cluster("b".into())]);
        let mut plan = Plan::new(&fb, None);
        assert_eq!(
            plan.on_failure(503, Failure::Status5xx, true, |_| Ok(())),
            Next::PassThrough
        );
        assert_eq!(plan.attempts.len(), 1);
        assert_eq!(plan.attempts[0].status, Some(503));
        assert_eq!(plan.attempts[0].failure, None);

        let mut plan = Plan::new(&fb, None);
        plan.answered(200);
        assert_eq!(
            plan.on_failure(0, Failure::Connect, true, |_| Ok(())),
            Next::PassThrough
        );
    }

    #[test]
    fn without_host_retries_only_answers_remain() {
        let fb = fallback(
            &all(),
            vec![
                FallbackStep::Cluster("b".into()),
                FallbackStep::Human {
                    queue: "desk".into(),
                },
            ],
        );
        let mut plan = Plan::new(&fb, Some("m".into()));
        let next = plan.on_failure(503, Failure::Status5xx, false, |_| Ok(()));
        assert_eq!(
            next,
            Next::Human {
                queue: "desk".into()
            }
        );
        assert_eq!(plan.attempts[1].skipped.as_deref(), Some("no_host_retry"));
        assert_eq!(plan.attempts[2].answer, Some("human"));
        assert_eq!(plan.attempts[2].status, Some(202));
        let body: serde_json::Value = serde_json::from_slice(&human_body("rev-1", "desk")).unwrap();
        assert_eq!(body["status"], "pending_human");
        assert_eq!(body["review_id"], "rev-1");
    }

    #[test]
    fn steps_run_out_and_attempts_are_bounded() {
        let steps = (0..20)
            .map(|i| FallbackStep::Cluster(format!("c{i}")))
            .collect();
        let fb = fallback(&[Failure::Connect], steps);
        let mut plan = Plan::new(&fb, None);
        let mut retries = 0;
        while let Next::Retry { .. } = plan.on_failure(0, Failure::Connect, true, |_| Ok(())) {
            retries += 1;
        }
        assert_eq!(retries, MAX_ATTEMPTS - 1);
        assert!(
            plan.attempts
                .iter()
                .any(|a| a.skipped.as_deref() == Some("attempt_limit"))
        );
        assert_eq!(
            plan.on_failure(0, Failure::Connect, true, |_| Ok(())),
            Next::PassThrough
        );
    }

    #[test]
    fn recheck_runs_every_request_rule_for_the_fallback_model() {
        use ir::{Action, Expr, Field, Operand, Rule, Value};
        let allowlist = Rule {
            clause: "AIP-3.1".into(),
            title: "Only approved models".into(),
            phase: ir::Phase::Request,
            condition: Expr::Not(Box::new(Expr::In {
                operand: Operand::Field(Field::Model),
                set: vec![Value::Str("big".into()), Value::Str("mini".into())],
            })),
            action: Action::Deny {
                status: 403,
                message: "no".into(),
            },
            enforcement: ir::Enforcement::Enforce,
            alert_at_percent: None,
            line: 1,
        };
        let mut policy = test_policy();
        policy.rules.push(allowlist);
        let engine = Engine::new(policy).unwrap();
        let headers = vec![
            (":method".to_string(), "POST".to_string()),
            (":path".to_string(), "/v1/chat/completions".to_string()),
        ];
        let body = serde_json::json!({"model": "big", "messages": []});
        let request = Request::from_headers(headers, Some(body));
        let store = crate::store::MemoryStore::default();
        let identity = crate::eval::identify(&engine.policy, &request);
        assert_eq!(
            recheck(&engine, &request, identity.clone(), &store, 0, "other"),
            Err("AIP-3.1".to_string())
        );
        assert!(recheck(&engine, &request, identity, &store, 0, "mini").is_ok());
    }

    fn test_policy() -> ir::Policy {
        ir::Policy {
            name: "p".into(),
            version: "1.0.0".into(),
            source_sha256: String::new(),
            currency: "EUR".into(),
            enforcement: ir::Enforcement::Enforce,
            workflows: vec![ir::Workflow {
                name: "w".into(),
                matcher: ir::Expr::Const(true),
                oversight: ir::Oversight::Hic { sample_rate: 0.0 },
                assumed_verification_rate: None,
                team: None,
                user: None,
                scan_headers: Vec::new(),
                scan_query: false,
                business_case: Default::default(),
                kill_points: Vec::new(),
                review_signals: None,
                handoff_output: false,
                fallback: None,
            }],
            prices: Vec::new(),
            detectors: Vec::new(),
            rules: Vec::new(),
            kill_switch: None,
        }
    }

    #[test]
    fn plan_comes_from_the_workflow() {
        let fb = fallback(&[Failure::Connect], vec![]);
        let mut policy = test_policy();
        assert!(Plan::for_workflow(&policy, Some(0), None).is_none());
        if let Some(w) = policy.workflows.get_mut(0) {
            w.fallback = Some(fb);
        }
        let plan = Plan::for_workflow(&policy, Some(0), Some("m".into())).unwrap();
        assert!(!plan.has_retries());
        assert!(Plan::for_workflow(&policy, None, None).is_none());
        assert_eq!(retry_header_value(Some("b")), "cluster=b");
        assert_eq!(retry_header_value(None), "upstream");
    }
}
