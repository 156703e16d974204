//! The request phase as one pure step over a shared store: the request rules, then the
//! spend admission, then the rules that read spend, combined in the engine's precedence.
//! The proxy-wasm adapter runs it against the host's shared data and `writ explain`
//! against a fresh in-memory store, so the two cannot decide differently.
//!
//! Architecture invariant: no host calls here; the store is the only state.

use crate::eval::{self, Decision, Engine, Facts, Identity, Unsupported, Verdict};
use crate::ir::{self, Phase};
use crate::rate_limit::{self, RateAdmission, RateHold, RatePlan};
use crate::request::Request;
use crate::spend::{self, Admission, Reservation, SpendPlan};
use crate::store::{SharedStore, StoreError};

/// What the request phase decided, before any effect on the traffic.
#[derive(Debug)]
pub struct RequestPhase {
    /// Every request rule's outcome, spend rules included once admission ran.
    pub decision: Decision,
    /// The reservation held on the spend ledgers (admitted requests of a policy that
    /// uses spend). The caller must release it when `decision` denies.
    pub reservation: Option<Reservation>,
    /// What the spend ledgers said, when they were asked.
    pub spend: Option<SpendOutcome>,
    /// The ledger could not be read or written: the caller fails closed.
    pub ledger_error: Option<StoreError>,
    /// The request's place on the rate-limit counters (admitted requests of a policy that
    /// reads `tokens(…)`/`requests(…)`). The caller must refund it when `decision` denies.
    pub rate_hold: Option<RateHold>,
    /// What the rate-limit counters said, when they were asked.
    pub rate: Option<RateOutcome>,
    /// The rate-limit counters could not be read or written: the caller fails closed.
    pub rate_error: Option<StoreError>,
}

impl RequestPhase {
    /// The enforced rate-limit rule that refused the request and answers it, if one did.
    pub fn rate_limited_by(&self) -> Option<usize> {
        let refused = match self.rate.as_ref().map(|r| &r.admission) {
            Some(RateAdmission::Deny { rule, .. }) => (*rule)?,
            _ => return None,
        };
        match self.decision.verdict {
            Verdict::Deny { rule, .. } if rule == refused => Some(rule),
            _ => None,
        }
    }

    /// The rate-limit headers of the answer: `retry-after` and the refusing counter's
    /// `x-ratelimit-*` when a rate limit answers; the tightest limits' `x-ratelimit-*` on a
    /// request that goes through; none when another rule refuses it.
    pub fn rate_headers(&self) -> Vec<(&'static str, String)> {
        let Some(rate) = &self.rate else {
            return Vec::new();
        };
        match (&self.decision.verdict, &rate.admission) {
            (Verdict::Continue, RateAdmission::Admit { .. }) => rate.headers(),
            (Verdict::Deny { .. }, RateAdmission::Deny { .. })
                if self.rate_limited_by().is_some() =>
            {
                rate.headers()
            }
            _ => Vec::new(),
        }
    }
}

/// The rate admission of one request, for the rules that read counts, the
/// `x-ratelimit-*` headers and explaining them.
#[derive(Debug, Clone)]
pub struct RateOutcome {
    pub plan: RatePlan,
    /// The tokens the request was estimated at.
    pub estimate: u64,
    pub admission: RateAdmission,
}

impl RateOutcome {
    /// `tokens(…)`/`requests(…)` as the rules saw them: the count with this request; after
    /// a refused admission, the count that was refused.
    pub fn total(
        &self,
        measure: ir::Measure,
        scope: ir::Scope,
        window: ir::RateWindow,
    ) -> Option<u64> {
        match &self.admission {
            RateAdmission::Admit { totals } => {
                rate_limit::total_for(&self.plan, totals, measure, scope, window)
            }
            RateAdmission::Deny { key, current, .. } => {
                let k = self.plan.keys.get(*key)?;
                let cost = match measure {
                    ir::Measure::Requests => 1,
                    ir::Measure::Tokens => self.estimate,
                };
                (k.measure == measure && k.scope == scope && k.window == window)
                    .then(|| current.saturating_add(cost))
            }
        }
    }

    /// The headers the answer carries: on a deny `retry-after` and the refusing counter's
    /// `x-ratelimit-*`, else the tightest enforced limit of each measure.
    pub fn headers(&self) -> Vec<(&'static str, String)> {
        match &self.admission {
            RateAdmission::Admit { totals } => rate_limit::headers(&self.plan, totals),
            RateAdmission::Deny { key, current, .. } => {
                rate_limit::deny_headers(&self.plan, *key, *current)
            }
        }
    }
}

/// The spend admission of one request, for the rules that read spend and for explaining
/// them.
#[derive(Debug, Clone)]
pub struct SpendOutcome {
    pub plan: SpendPlan,
    /// The price the estimate used.
    pub price: ir::Price,
    /// This request's estimated cost.
    pub estimate: ir::Micros,
    pub admission: Admission,
}

impl SpendOutcome {
    /// `spend(scope, window)` as the rules saw it: settled plus reserved, this request
    /// included; after a refused admission, the total that was refused.
    pub fn total(&self, scope: ir::Scope, window: ir::Window) -> Option<ir::Micros> {
        match &self.admission {
            Admission::Admit { totals } => self.plan.total_for(scope, window, totals),
            Admission::Deny { key, current, .. } => {
                let k = self.plan.keys.get(*key)?;
                (k.scope == scope && k.window == window)
                    .then(|| current.saturating_add(self.estimate))
            }
        }
    }
}

/// Runs the request phase: evaluates the request rules; unless a deny already answers
/// (one before every spend rule in the file), admits the request's estimated cost on
/// the spend ledgers in `store` (a budget cap refuses it there, atomically), then
/// evaluates the rules that read spend on the admitted totals. The first deny in file
/// order answers; every other enforced rule that fired is overridden.
pub fn request_phase(
    engine: &Engine,
    request: &Request,
    identity: Identity,
    store: &dyn SharedStore,
    unix_secs: i64,
) -> RequestPhase {
    request_phase_with(engine, request, identity, store, unix_secs, &mut |_| Ok(()))
}

/// [`request_phase`] with a hook that may lower the plan's caps before admission: a fleet
/// member admits only up to what it leased (`fleet::budget::lease_caps`). An
/// error from the hook is a ledger error (fail closed).
pub fn request_phase_with(
    engine: &Engine,
    request: &Request,
    identity: Identity,
    store: &dyn SharedStore,
    unix_secs: i64,
    adjust: &mut dyn FnMut(&mut SpendPlan) -> Result<(), StoreError>,
) -> RequestPhase {
    let policy = &engine.policy;
    let mut decision = engine.evaluate(request, identity, &Facts::default(), Phase::Request, None);
    let mut out = RequestPhase {
        decision: Decision {
            identity: Identity::default(),
            verdict: Verdict::Continue,
            fired: Vec::new(),
            undecided: Vec::new(),
        },
        reservation: None,
        spend: None,
        ledger_error: None,
        rate_hold: None,
        rate: None,
        rate_error: None,
    };
    // A deny already decided answers unless a spend or rate rule comes before it in the
    // file (the first matching deny in file order answers).
    let undecided_by = |reason: Unsupported| -> Vec<usize> {
        decision
            .undecided
            .iter()
            .filter(|u| u.reason == reason)
            .map(|u| u.rule)
            .collect()
    };
    let spend_rules = undecided_by(Unsupported::Spend);
    let rate_rules = undecided_by(Unsupported::Rate);
    let denied_by = match decision.verdict {
        Verdict::Deny { rule, .. } => Some(rule),
        Verdict::Continue => None,
    };
    let state_first = |r: usize| spend_rules.iter().chain(&rate_rules).any(|s| *s < r);
    if denied_by.is_some_and(|r| !state_first(r)) || !(engine.uses_spend || engine.uses_rates) {
        out.decision = decision;
        return out;
    }
    let identity = decision.identity.clone();
    let workflow = identity
        .workflow
        .and_then(|i| policy.workflows.get(i))
        .map(|w| w.name.as_str());
    let empty = serde_json::Value::Object(serde_json::Map::new());
    let json = request.body.as_ref().unwrap_or(&empty);

    // The rate limits are counted first, then the budgets are asked, unless a refusal
    // already answers: the first deny in file order answers across both admissions.
    if engine.uses_rates && denied_by.is_none_or(|r| rate_rules.iter().any(|s| *s < r)) {
        let plan = RatePlan::for_request(
            policy,
            workflow,
            identity.team.as_deref(),
            identity.user.as_deref(),
            unix_secs,
        );
        match RateHold::admit(store, &plan, json, spend::DEFAULT_MAX_COMPLETION_TOKENS) {
            Err(e) => {
                out.rate_error = Some(e);
                out.decision = decision;
                return out;
            }
            Ok((admission, held)) => {
                let estimate = match &held {
                    Some(h) => h.estimate,
                    None if plan.counts(ir::Measure::Tokens) => {
                        rate_limit::estimate_tokens(json, spend::DEFAULT_MAX_COMPLETION_TOKENS)
                    }
                    None => 0,
                };
                out.rate_hold = held;
                let refused = match &admission {
                    RateAdmission::Deny { rule, .. } => Some(*rule),
                    RateAdmission::Admit { .. } => None,
                };
                out.rate = Some(RateOutcome {
                    plan,
                    estimate,
                    admission,
                });
                if let Some(rule) = refused {
                    refuse(
                        policy,
                        &mut decision,
                        denied_by,
                        rule,
                        "Rate limit reached.",
                    );
                }
            }
        }
    }
    // After a rate-limit refusal the budgets are asked only if one of their rules comes
    // earlier in the file and could answer first.
    let denied_by = match decision.verdict {
        Verdict::Deny { rule, .. } => Some(rule),
        Verdict::Continue => None,
    };
    if denied_by.is_some_and(|r| !spend_rules.iter().any(|s| *s < r)) {
        out.decision = decision;
        return out;
    }

    let rate = out.rate.clone();
    let rate_lookup = |m: ir::Measure, s: ir::Scope, w: ir::RateWindow| {
        rate.as_ref().and_then(|o| o.total(m, s, w))
    };
    let rate_fact = rate
        .is_some()
        .then_some(&rate_lookup as &dyn Fn(_, _, _) -> _);
    if !engine.uses_spend {
        let rate_rules: Vec<usize> = rate_rules
            .iter()
            .copied()
            .filter(|r| decision.undecided.iter().any(|u| u.rule == *r))
            .collect();
        if !rate_rules.is_empty() {
            let facts = Facts {
                rate: rate_fact,
                ..Default::default()
            };
            let more = engine.evaluate(
                request,
                decision.identity.clone(),
                &facts,
                Phase::Request,
                Some(&rate_rules),
            );
            decision.merge(more);
        }
        out.decision = decision;
        return out;
    }
    let model = eval::Transforms::of(policy, &decision)
        .route
        .or_else(|| request.model().map(str::to_string))
        .unwrap_or_default();
    let price = spend::price_for(&policy.prices, &model)
        .cloned()
        .or_else(|| spend::conservative_price(&policy.prices))
        .unwrap_or(ir::Price {
            model: "*".into(),
            input_per_mtok: 0,
            output_per_mtok: 0,
            cached_input_per_mtok: None,
        });
    let plan = SpendPlan::for_request(
        policy,
        workflow,
        identity.team.as_deref(),
        identity.user.as_deref(),
        unix_secs,
    );
    let mut plan = plan;
    if let Err(e) = adjust(&mut plan) {
        out.ledger_error = Some(e);
        out.decision = decision;
        return out;
    }
    let admitted = Reservation::admit(
        store,
        &plan,
        &price,
        json,
        spend::DEFAULT_MAX_COMPLETION_TOKENS,
    );
    match admitted {
        Err(e) => {
            out.ledger_error = Some(e);
        }
        Ok((admission @ Admission::Deny { rule, .. }, _)) => {
            refuse(policy, &mut decision, denied_by, rule, "Budget exhausted.");
            let estimate =
                spend::estimate(&price, json, spend::DEFAULT_MAX_COMPLETION_TOKENS).micros;
            out.spend = Some(SpendOutcome {
                plan,
                price,
                estimate,
                admission,
            });
        }
        Ok((admission @ Admission::Admit { .. }, held)) => {
            let estimate = held.as_ref().map_or(0, |h| h.estimate.micros);
            out.reservation = held;
            let outcome = SpendOutcome {
                plan,
                price,
                estimate,
                admission,
            };
            let mut later: Vec<usize> = spend_rules
                .iter()
                .chain(&rate_rules)
                .copied()
                .filter(|r| decision.undecided.iter().any(|u| u.rule == *r))
                .collect();
            later.sort_unstable();
            later.dedup();
            if !later.is_empty() {
                let lookup = |s: ir::Scope, w: ir::Window| outcome.total(s, w);
                let facts = Facts {
                    spend: Some(&lookup),
                    rate: rate_fact,
                    reply: None,
                    ..Default::default()
                };
                let more = engine.evaluate(
                    request,
                    decision.identity.clone(),
                    &facts,
                    Phase::Request,
                    Some(&later),
                );
                decision.merge(more);
            }
            out.spend = Some(outcome);
        }
    }
    out.decision = decision;
    out
}

/// Records a refusal by a ledger or counter cap (`rule`, the enforced rule owning the
/// cap): the rule fired and answers, unless a deny earlier in the file (`denied_by`)
/// already does, which leaves it recorded as overridden.
fn refuse(
    policy: &ir::Policy,
    decision: &mut Decision,
    denied_by: Option<usize>,
    rule: Option<usize>,
    fallback: &str,
) {
    let rule = rule.unwrap_or(usize::MAX);
    let (status, message, clause) = match policy.rules.get(rule) {
        Some(ir::Rule {
            action: ir::Action::Deny { status, message },
            clause,
            ..
        }) => (*status, message.clone(), clause.clone()),
        _ => (429, fallback.to_string(), "budget".to_string()),
    };
    decision.undecided.retain(|u| u.rule != rule);
    if rule != usize::MAX {
        decision.fired.push(eval::fired(policy, rule, false));
        decision.fired.sort_by_key(|f| f.rule);
    }
    let verdict = Verdict::Deny {
        status,
        message,
        clause,
        rule,
    };
    match denied_by {
        // An earlier rule's deny still answers; the cap's rule is recorded.
        Some(r) if r < rule => {
            if let Some(f) = decision.fired.iter_mut().find(|f| f.rule == rule) {
                f.effect = eval::Effect::Overridden;
            }
        }
        _ => decision.deny_with(verdict),
    }
}

/// The streamed response redactions that fired: each rule whose detectors the reply
/// rewriter masked at least once (`redacted` counts per detector, never values).
pub fn reply_redactions_fired(
    policy: &ir::Policy,
    redacted: &crate::stream::Redacted,
) -> Vec<eval::Fired> {
    policy
        .rules
        .iter()
        .enumerate()
        .filter(|(_, r)| eval::is_streamed_redaction(r))
        .filter(|(_, r)| match &r.action {
            ir::Action::Redact { detectors } => detectors
                .iter()
                .any(|d| redacted.get(d).is_some_and(|n| *n > 0)),
            _ => false,
        })
        .map(|(i, _)| eval::fired(policy, i, eval::is_monitor(policy, i)))
        .collect()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use crate::ir::{
        Action, CmpOp, Enforcement, Expr, Micros, Operand, Policy, Price, Rule, Scope, Value,
        Window,
    };
    use crate::store::MemoryStore;

    fn budget_policy(limit: Micros) -> Policy {
        Policy {
            name: "p".into(),
            version: "1.0.0".into(),
            source_sha256: "00".into(),
            currency: "EUR".into(),
            enforcement: Enforcement::Enforce,
            workflows: vec![],
            prices: vec![Price {
                model: "m".into(),
                input_per_mtok: 1_000_000,
                output_per_mtok: 1_000_000,
                cached_input_per_mtok: None,
            }],
            detectors: vec![],
            rules: vec![Rule {
                clause: "AIP-4.2".into(),
                title: "budget".into(),
                phase: Phase::Request,
                condition: Expr::Compare {
                    left: Operand::Spend {
                        scope: Scope::Team,
                        window: Window::Month,
                    },
                    op: CmpOp::Gt,
                    right: Operand::Const(Value::Money(limit)),
                },
                action: Action::Deny {
                    status: 429,
                    message: "budget".into(),
                },
                enforcement: Enforcement::Enforce,
                alert_at_percent: None,
                line: 1,
            }],
            kill_switch: None,
        }
    }

    fn request() -> Request {
        Request {
            method: "POST".into(),
            path: "/v1/chat/completions".into(),
            body: Some(serde_json::json!({"model": "m", "max_tokens": 10, "messages": []})),
            ..Request::default()
        }
    }

    #[test]
    fn admits_under_the_cap_and_refuses_over_it() {
        let engine = Engine::new(budget_policy(1_000_000)).unwrap();
        let r = request();
        let out = request_phase(&engine, &r, Identity::default(), &MemoryStore::new(), 0);
        assert_eq!(out.decision.verdict, Verdict::Continue);
        assert!(out.reservation.is_some());
        let spend = out.spend.unwrap();
        assert_eq!(
            spend.total(Scope::Team, Window::Month),
            Some(spend.estimate)
        );
        assert!(spend.estimate > 0);

        let engine = Engine::new(budget_policy(1)).unwrap();
        let out = request_phase(&engine, &r, Identity::default(), &MemoryStore::new(), 0);
        assert!(matches!(
            out.decision.verdict,
            Verdict::Deny { status: 429, .. }
        ));
        assert!(out.reservation.is_none());
        assert_eq!(out.decision.fired.len(), 1);
    }

    #[test]
    fn the_first_deny_in_the_file_answers_across_the_admission() {
        let model_deny = Rule {
            clause: "AIP-3.1".into(),
            title: "models".into(),
            phase: Phase::Request,
            condition: Expr::Const(true),
            action: Action::Deny {
                status: 403,
                message: "model".into(),
            },
            enforcement: Enforcement::Enforce,
            alert_at_percent: None,
            line: 2,
        };
        // The budget comes first in the file: its refusal answers, the later deny is
        // recorded as overridden.
        let mut p = budget_policy(1);
        p.rules.push(model_deny.clone());
        let engine = Engine::new(p).unwrap();
        let out = request_phase(
            &engine,
            &request(),
            Identity::default(),
            &MemoryStore::new(),
            0,
        );
        assert!(matches!(
            out.decision.verdict,
            Verdict::Deny {
                rule: 0,
                status: 429,
                ..
            }
        ));
        let effects: Vec<_> = out
            .decision
            .fired
            .iter()
            .map(|f| (f.rule, f.effect))
            .collect();
        assert_eq!(
            effects,
            [(0, eval::Effect::Enforced), (1, eval::Effect::Overridden)]
        );
        // The deny comes first: it answers before the ledgers are asked at all.
        let mut p = budget_policy(1);
        p.rules.insert(0, model_deny);
        let engine = Engine::new(p).unwrap();
        let store = MemoryStore::new();
        let out = request_phase(&engine, &request(), Identity::default(), &store, 0);
        assert!(matches!(
            out.decision.verdict,
            Verdict::Deny {
                rule: 0,
                status: 403,
                ..
            }
        ));
        assert!(out.spend.is_none() && out.reservation.is_none());
        assert!(store.keys().is_empty());
    }

    fn rate_rule(measure: ir::Measure, limit: f64, clause: &str) -> Rule {
        Rule {
            clause: clause.into(),
            title: "rate".into(),
            phase: Phase::Request,
            condition: Expr::Compare {
                left: Operand::Rate {
                    measure,
                    scope: Scope::User,
                    window: ir::RateWindow::Minute,
                },
                op: CmpOp::Gt,
                right: Operand::Const(Value::Num(limit)),
            },
            action: Action::Deny {
                status: 429,
                message: "slow down".into(),
            },
            enforcement: Enforcement::Enforce,
            alert_at_percent: None,
            line: 3,
        }
    }

    #[test]
    fn a_rate_limit_counts_requests_and_refuses_past_its_cap() {
        let mut p = budget_policy(1_000_000_000);
        p.rules = vec![rate_rule(ir::Measure::Requests, 2.0, "AIP-9")];
        let engine = Engine::new(p).unwrap();
        assert!(engine.uses_rates && !engine.uses_spend);
        let store = MemoryStore::new();
        // 2026-11-24T03:28:20Z: 40 seconds left in the minute.
        let t = 1_795_490_900;
        for n in 1..=2u64 {
            let out = request_phase(&engine, &request(), Identity::default(), &store, t);
            assert_eq!(out.decision.verdict, Verdict::Continue);
            assert!(out.decision.fired.is_empty());
            assert!(out.rate_hold.is_some());
            assert_eq!(out.rate_limited_by(), None);
            let h = out.rate_headers();
            assert!(h.contains(&("x-ratelimit-remaining-requests", (2 - n).to_string())));
            assert!(h.contains(&("x-ratelimit-limit-requests", "2".to_string())));
        }
        let out = request_phase(&engine, &request(), Identity::default(), &store, t);
        assert!(matches!(
            out.decision.verdict,
            Verdict::Deny {
                status: 429,
                rule: 0,
                ..
            }
        ));
        assert!(out.rate_hold.is_none());
        assert_eq!(out.rate_limited_by(), Some(0));
        assert_eq!(out.decision.fired.len(), 1);
        let h = out.rate_headers();
        assert_eq!(h.first(), Some(&("retry-after", "40".to_string())));
        assert!(h.contains(&("x-ratelimit-reset-requests", "40s".to_string())));
        // The next minute is a new window.
        let out = request_phase(&engine, &request(), Identity::default(), &store, t + 40);
        assert_eq!(out.decision.verdict, Verdict::Continue);
    }

    #[test]
    fn a_budget_earlier_in_the_file_answers_before_a_rate_limit() {
        // Both the budget (rule 0) and the token limit (rule 1) refuse: the budget answers,
        // the limit is recorded as overridden, nothing stays counted.
        let mut p = budget_policy(1);
        p.rules.push(rate_rule(ir::Measure::Tokens, 5.0, "AIP-9"));
        let engine = Engine::new(p).unwrap();
        let store = MemoryStore::new();
        let out = request_phase(&engine, &request(), Identity::default(), &store, 0);
        assert!(matches!(
            out.decision.verdict,
            Verdict::Deny { rule: 0, .. }
        ));
        let effects: Vec<_> = out
            .decision
            .fired
            .iter()
            .map(|f| (f.rule, f.effect))
            .collect();
        assert_eq!(
            effects,
            [(0, eval::Effect::Enforced), (1, eval::Effect::Overridden)]
        );
        assert_eq!(out.rate_limited_by(), None);
        assert!(out.rate_headers().is_empty());
        // The limit first: it answers and the budget is never asked.
        let mut p = budget_policy(1);
        p.rules
            .insert(0, rate_rule(ir::Measure::Tokens, 5.0, "AIP-9"));
        let engine = Engine::new(p).unwrap();
        let out = request_phase(&engine, &request(), Identity::default(), &store, 0);
        assert!(matches!(
            out.decision.verdict,
            Verdict::Deny { rule: 0, .. }
        ));
        assert!(out.spend.is_none() && out.reservation.is_none());
        assert_eq!(out.rate_limited_by(), Some(0));
    }
}
