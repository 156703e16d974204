//! The request phase as one pure step over a shared store: the request rules, then the
//! spend admission, then the rules that read spend, combined in the engine's precedence.
//! The proxy-wasm adapter runs it against the host's shared data and `writ explain`
//! against a fresh in-memory store, so the two cannot decide differently.
//!
//! Architecture invariant: no host calls here; the store is the only state.

use crate::eval::{self, Decision, Engine, Facts, Identity, Unsupported, Verdict};
use crate::ir::{self, Phase};
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
    };
    // A deny already decided answers unless a spend rule comes before it in the file
    // (the first matching deny in file order answers).
    let spend_rules: Vec<usize> = decision
        .undecided
        .iter()
        .filter(|u| u.reason == Unsupported::Spend)
        .map(|u| u.rule)
        .collect();
    let denied_by = match decision.verdict {
        Verdict::Deny { rule, .. } => Some(rule),
        Verdict::Continue => None,
    };
    if denied_by.is_some_and(|r| !spend_rules.iter().any(|s| *s < r)) || !engine.uses_spend {
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
    let identity = &decision.identity;
    let workflow = identity
        .workflow
        .and_then(|i| policy.workflows.get(i))
        .map(|w| w.name.as_str());
    let plan = SpendPlan::for_request(
        policy,
        workflow,
        identity.team.as_deref(),
        identity.user.as_deref(),
        unix_secs,
    );
    let empty = serde_json::Value::Object(serde_json::Map::new());
    let json = request.body.as_ref().unwrap_or(&empty);
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
            let rule = rule.unwrap_or(usize::MAX);
            let (status, message, clause) = match policy.rules.get(rule) {
                Some(ir::Rule {
                    action: ir::Action::Deny { status, message },
                    clause,
                    ..
                }) => (*status, message.clone(), clause.clone()),
                _ => (429, "Budget exhausted.".to_string(), "budget".to_string()),
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
                // An earlier rule's deny still answers; the budget is recorded.
                Some(r) if r < rule => {
                    if let Some(f) = decision.fired.iter_mut().find(|f| f.rule == rule) {
                        f.effect = eval::Effect::Overridden;
                    }
                }
                _ => decision.deny_with(verdict),
            }
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
            if !spend_rules.is_empty() {
                let lookup = |s: ir::Scope, w: ir::Window| outcome.total(s, w);
                let facts = Facts {
                    spend: Some(&lookup),
                    reply: None,
                    ..Default::default()
                };
                let more = engine.evaluate(
                    request,
                    decision.identity.clone(),
                    &facts,
                    Phase::Request,
                    Some(&spend_rules),
                );
                decision.merge(more);
            }
            out.spend = Some(outcome);
        }
    }
    out.decision = decision;
    out
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
}
