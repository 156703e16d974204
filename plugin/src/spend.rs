//! Spend: pricing token usage, estimating a request before the call, and the shared
//! ledgers that budgets are checked against.
//!
//! The life of one request:
//! 1. [`SpendPlan::for_request`] lists the ledgers the policy's spend rules need for this
//!    request's identity and the current UTC window (one ledger per scope, scope value,
//!    window and bucket, e.g. `writ/spend/team/billing/month/2026-11`).
//! 2. [`estimate`] prices the prompt (its size, see [`estimate_prompt_tokens`]) and the
//!    completion limit (`max_completion_tokens`/`max_tokens`, or a default).
//! 3. [`reserve`] adds the estimate to every ledger, atomically per ledger with a CAS
//!    retry, admitting only while `settled + reserved + estimate <= cap`.
//! 4. After the reply, [`settle`] replaces the reservation by the real cost priced from the
//!    provider's `usage` ([`crate::usage::usage_from_json`], or [`crate::usage::SseUsage`] for a stream), or
//!    [`release`] drops it when the call failed or the client went away. When no usage
//!    arrived, the filter settles at the estimate and the audit record says
//!    `cost_estimated: true`: an estimate is never reported as real usage.
//!
//! Money is integer micros of the policy's currency; token prices are per one million
//! tokens, so `cost = ceil(sum(tokens * price_per_mtok) / 1_000_000)`.
//!
//! Limits of shared data worth knowing: a reservation whose request never settles (the VM
//! was killed mid-request) stays counted until its window ends, so the budget errs on the
//! side of denying; ledgers are per Envoy `vm_id` and are lost when Envoy restarts.

use crate::calendar::{bucket, window_name};
use crate::ir::{
    CmpOp, Enforcement, Expr, Micros, Operand, Phase, Policy, Price, Scope, Value, Window,
};
use crate::store::{self, Cursor, SharedStore, Step, StoreError, Stored};
use crate::usage::Usage;
use serde_json::Value as Json;

/// Completion tokens assumed when a request sets no `max_tokens`: a common output limit
/// of current chat models. A host may pass its own default to [`estimate`].
pub const DEFAULT_MAX_COMPLETION_TOKENS: u64 = 4096;

/// Tokens the prompt estimate counts for one inline `data:` URL (an image sent as base64):
/// above what a high-detail image costs on current OpenAI models, so it errs on the side
/// of the budget without counting the base64 text itself.
pub const INLINE_DATA_TOKENS: u64 = 1_600;

/// Tokens the prompt estimate adds per message for the role and framing tokens.
pub const TOKENS_PER_MESSAGE: u64 = 4;

/// The language keyword of a scope, used in store keys.
pub fn scope_name(scope: Scope) -> &'static str {
    match scope {
        Scope::Workflow => "workflow",
        Scope::Team => "team",
        Scope::User => "user",
    }
}

/// The segment standing for a request whose scope identity is missing (no team header,
/// say): such requests share one ledger rather than escaping the budget.
pub const ANONYMOUS: &str = "-";

/// The ledger key of one scope value in the current bucket of a window, e.g.
/// `writ/spend/team/billing/month/2026-11`. The value is escaped with
/// [`store::key_segment`] so a header cannot name another ledger.
pub fn ledger_key(scope: Scope, value: Option<&str>, window: Window, unix_secs: i64) -> String {
    let value = match value {
        Some(v) if !v.is_empty() => store::key_segment(v),
        _ => ANONYMOUS.to_string(),
    };
    format!(
        "writ/spend/{}/{}/{}/{}",
        scope_name(scope),
        value,
        window_name(window),
        bucket(window, unix_secs)
    )
}

// ---------------------------------------------------------------------------------------
// Prices, usage, cost

/// The price entry for `model`: an exact match, else the longest entry that `model`
/// extends with a dated snapshot suffix (`gpt-4o-2024-08-06` is priced as `gpt-4o`, but
/// `gpt-4o-mini` never as `gpt-4o`).
pub fn price_for<'p>(prices: &'p [Price], model: &str) -> Option<&'p Price> {
    if let Some(p) = prices.iter().find(|p| p.model == model) {
        return Some(p);
    }
    prices
        .iter()
        .filter(|p| {
            model
                .strip_prefix(p.model.as_str())
                .and_then(|rest| rest.strip_prefix('-'))
                .is_some_and(|rest| rest.starts_with(|c: char| c.is_ascii_digit()))
        })
        .max_by_key(|p| p.model.len())
}

/// The highest price of each kind in the table, for a model the table does not list: the
/// budget is then charged conservatively instead of not at all. `None` for an empty table.
pub fn conservative_price(prices: &[Price]) -> Option<Price> {
    let first = prices.first()?;
    let mut p = Price {
        model: String::from("*"),
        input_per_mtok: first.input_per_mtok,
        output_per_mtok: first.output_per_mtok,
        cached_input_per_mtok: None,
    };
    for q in prices {
        p.input_per_mtok = p.input_per_mtok.max(q.input_per_mtok);
        p.output_per_mtok = p.output_per_mtok.max(q.output_per_mtok);
    }
    Some(p)
}

/// The cost of `usage` at `price`, in micros, rounded up once over the sum. Cached prompt
/// tokens are priced at the cached rate when the table has one, else as ordinary input.
pub fn cost_micros(price: &Price, usage: &Usage) -> Micros {
    let cached = usage.cached_tokens.min(usage.prompt_tokens);
    let uncached = usage.prompt_tokens - cached;
    let cached_rate = price.cached_input_per_mtok.unwrap_or(price.input_per_mtok);
    let total: i128 = i128::from(uncached) * i128::from(price.input_per_mtok.max(0))
        + i128::from(cached) * i128::from(cached_rate.max(0))
        + i128::from(usage.completion_tokens) * i128::from(price.output_per_mtok.max(0));
    let micros = (total + 999_999) / 1_000_000;
    Micros::try_from(micros).unwrap_or(Micros::MAX)
}

// ---------------------------------------------------------------------------------------
// Estimates

/// What a request is expected to cost before the call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Estimate {
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
    pub micros: Micros,
}

/// Estimates prompt tokens from the body without a tokenizer: one token per 4 bytes of
/// every string value in the body (rounded up; bytes rather than characters, so scripts
/// that take more tokens per character, such as CJK, are not under-counted), plus
/// [`TOKENS_PER_MESSAGE`] per message for role and framing ([`framed_messages`]: chat and
/// Anthropic messages, Responses input items, a system prompt outside the list), and a
/// fixed [`INLINE_DATA_TOKENS`] per inline `data:` URL (images). It over-counts the
/// parameter strings (`model`, `role`, `type`), which errs on the side of the budget.
pub fn estimate_prompt_tokens(body: &Json) -> u64 {
    fn bytes(v: &Json) -> u64 {
        match v {
            // An inline image or file is billed by its size in tiles, not by its base64
            // text, which would reserve hundreds of thousands of tokens for one picture.
            Json::String(s) if s.starts_with("data:") && s.contains(";base64,") => {
                INLINE_DATA_TOKENS * 4
            }
            Json::String(s) => s.len() as u64,
            Json::Array(a) => a.iter().map(bytes).sum(),
            Json::Object(o) => o.values().map(bytes).sum(),
            _ => 0,
        }
    }
    bytes(body).div_ceil(4) + framed_messages(body) * TOKENS_PER_MESSAGE
}

/// The messages a body frames, whatever its API, each of which the provider wraps in
/// role and separator tokens: chat and Anthropic `messages`; the Responses API's `input`,
/// one message when it is a string, else one per item (messages with content parts,
/// function calls and their outputs alike); and a system prompt written outside the list
/// (Anthropic `system`, Responses `instructions`). Read from the body's shape rather than
/// its path, so no API is counted as zero messages. An embeddings `input` list of strings
/// holds no items; an embeddings `input` string counts as one message, a few tokens too
/// many, on the side of the budget.
pub fn framed_messages(body: &Json) -> u64 {
    let messages = body
        .get("messages")
        .and_then(Json::as_array)
        .map_or(0, |m| m.len() as u64);
    let input = match body.get("input") {
        Some(Json::String(_)) => 1,
        Some(Json::Array(items)) => items.iter().filter(|i| i.is_object()).count() as u64,
        _ => 0,
    };
    let system = ["system", "instructions"]
        .iter()
        .filter(|k| body.get(**k).is_some_and(|v| !v.is_null()))
        .count() as u64;
    messages + input + system
}

/// The completion tokens a request may produce: `max_completion_tokens`, `max_tokens` or
/// `max_output_tokens` (Responses API), else `default`, times the number of choices `n`.
/// Pass a `default` of 0 for endpoints without output tokens (embeddings).
pub fn completion_limit(body: &Json, default: u64) -> u64 {
    let limit = ["max_completion_tokens", "max_tokens", "max_output_tokens"]
        .iter()
        .find_map(|k| body.get(*k)?.as_u64())
        .unwrap_or(default);
    let n = body
        .get("n")
        .and_then(Json::as_u64)
        .unwrap_or(1)
        .clamp(1, 128);
    limit.saturating_mul(n)
}

/// The cost reserved before the call: the prompt estimate plus the completion limit,
/// priced at `price` (cached input is assumed uncached, the dearer case).
pub fn estimate(price: &Price, body: &Json, default_completion_tokens: u64) -> Estimate {
    let prompt_tokens = estimate_prompt_tokens(body);
    let completion_tokens = completion_limit(body, default_completion_tokens);
    let micros = cost_micros(
        price,
        &Usage {
            prompt_tokens,
            completion_tokens,
            cached_tokens: 0,
        },
    );
    Estimate {
        prompt_tokens,
        completion_tokens,
        micros,
    }
}

// ---------------------------------------------------------------------------------------
// Budgets in the policy

/// A request-phase rule of the simple budget form `spend(scope, window) > LIMIT` (or `>=`,
/// or mirrored), which the ledger can check atomically while reserving.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Budget {
    /// Index into `Policy::rules`.
    pub rule: usize,
    pub scope: Scope,
    pub window: Window,
    /// The limit as written.
    pub limit: Micros,
    /// The highest admissible total: `limit` for `>`, `limit - 1` for `>=`.
    pub cap: Micros,
    /// Settled spend at which the rule's `alert at N%` fires.
    pub alert_at: Option<Micros>,
    /// True when the rule (or the policy) is in monitor mode: it never denies.
    pub monitor: bool,
}

/// The budget rules of a policy, in source order. Spend used in other shapes of condition
/// is listed by [`spend_operands`] and evaluated from [`Admission::Admit`] totals.
pub fn budgets(policy: &Policy) -> Vec<Budget> {
    let mut out = Vec::new();
    for (i, rule) in policy.rules.iter().enumerate() {
        // Only a deny caps spend; a spend condition on another action (a tag at 80% of the
        // budget, say) is evaluated against the admitted totals like any condition.
        if rule.phase != Phase::Request || !matches!(rule.action, crate::ir::Action::Deny { .. }) {
            continue;
        }
        let Expr::Compare { left, op, right } = &rule.condition else {
            continue;
        };
        let (scope, window, op, limit) = match (left, right) {
            (Operand::Spend { scope, window }, Operand::Const(Value::Money(m))) => {
                (*scope, *window, *op, *m)
            }
            (Operand::Const(Value::Money(m)), Operand::Spend { scope, window }) => {
                let mirrored = match op {
                    CmpOp::Lt => CmpOp::Gt,
                    CmpOp::Le => CmpOp::Ge,
                    other => *other,
                };
                (*scope, *window, mirrored, *m)
            }
            _ => continue,
        };
        let cap = match op {
            CmpOp::Gt => limit,
            CmpOp::Ge => limit.saturating_sub(1),
            _ => continue,
        };
        let alert_at = rule
            .alert_at_percent
            .map(|p| (i128::from(limit) * i128::from(p) + 99).div_euclid(100))
            .map(|a| Micros::try_from(a).unwrap_or(Micros::MAX));
        out.push(Budget {
            rule: i,
            scope,
            window,
            limit,
            cap,
            alert_at,
            monitor: rule.enforcement == Enforcement::Monitor
                || policy.enforcement == Enforcement::Monitor,
        });
    }
    out
}

/// Every `(scope, window)` that a request-phase rule's condition reads, deduplicated, in
/// first-use order.
pub fn spend_operands(policy: &Policy) -> Vec<(Scope, Window)> {
    policy.request_operands(|o| match o {
        Operand::Spend { scope, window } => Some((*scope, *window)),
        _ => None,
    })
}

/// One ledger a request is charged to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BudgetKey {
    pub key: String,
    pub scope: Scope,
    pub window: Window,
    /// The lowest cap among the enforced budget rules on this ledger; `None` reserves
    /// unconditionally (monitor rules and conditions evaluated afterwards).
    pub cap: Option<Micros>,
    /// The enforced rule that owns `cap`, for the deny message.
    pub cap_rule: Option<usize>,
    /// The lowest alert threshold among the rules on this ledger.
    pub alert_at: Option<Micros>,
    /// The rule that owns `alert_at`.
    pub alert_rule: Option<usize>,
}

/// The ledgers of one request and the rules that read them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpendPlan {
    pub keys: Vec<BudgetKey>,
    /// Monitor-mode budgets: `(index into keys, rule, cap)`, checked after admission.
    pub monitors: Vec<(usize, usize, Micros)>,
}

impl SpendPlan {
    /// The ledgers for a request whose workflow, team and user are given (`None` when the
    /// request has none; it is charged to the [`ANONYMOUS`] ledger), at `unix_secs`.
    pub fn for_request(
        policy: &Policy,
        workflow: Option<&str>,
        team: Option<&str>,
        user: Option<&str>,
        unix_secs: i64,
    ) -> SpendPlan {
        let mut plan = SpendPlan {
            keys: Vec::new(),
            monitors: Vec::new(),
        };
        let value = |scope: Scope| match scope {
            Scope::Workflow => workflow,
            Scope::Team => team,
            Scope::User => user,
        };
        for (scope, window) in spend_operands(policy) {
            plan.keys.push(BudgetKey {
                key: ledger_key(scope, value(scope), window, unix_secs),
                scope,
                window,
                cap: None,
                cap_rule: None,
                alert_at: None,
                alert_rule: None,
            });
        }
        for b in budgets(policy) {
            let Some(i) = plan
                .keys
                .iter()
                .position(|k| k.scope == b.scope && k.window == b.window)
            else {
                continue;
            };
            let Some(k) = plan.keys.get_mut(i) else {
                continue;
            };
            if let Some(a) = b.alert_at
                && k.alert_at.is_none_or(|cur| a < cur)
            {
                k.alert_at = Some(a);
                k.alert_rule = Some(b.rule);
            }
            if b.monitor {
                plan.monitors.push((i, b.rule, b.cap));
            } else if k.cap.is_none_or(|cur| b.cap < cur) {
                k.cap = Some(b.cap);
                k.cap_rule = Some(b.rule);
            }
        }
        plan
    }

    /// The spend operand value for `(scope, window)` after an admission: settled plus
    /// reserved including this request, what `spend(scope, window)` means in a condition.
    pub fn total_for(&self, scope: Scope, window: Window, totals: &[Micros]) -> Option<Micros> {
        let i = self
            .keys
            .iter()
            .position(|k| k.scope == scope && k.window == window)?;
        totals.get(i).copied()
    }

    /// Monitor-mode budget rules that would have denied this admitted request.
    pub fn would_have_denied(&self, totals: &[Micros]) -> Vec<usize> {
        self.monitors
            .iter()
            .filter(|(i, _, cap)| totals.get(*i).is_some_and(|t| t > cap))
            .map(|(_, rule, _)| *rule)
            .collect()
    }
}

// ---------------------------------------------------------------------------------------
// The ledger

/// One ledger's state in shared data.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Ledger {
    /// Real (or, without usage, estimated) cost of finished requests.
    pub settled: Micros,
    /// Estimates of requests in flight.
    pub reserved: Micros,
    /// Requests admitted and not yet settled or released.
    pub in_flight: u32,
    /// Requests settled in this window.
    pub requests: u64,
    /// Whether this window's alert has fired.
    pub alerted: bool,
}

const LEDGER_VERSION: u8 = 1;

impl Stored for Ledger {
    fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(30);
        out.push(LEDGER_VERSION);
        out.extend_from_slice(&self.settled.to_le_bytes());
        out.extend_from_slice(&self.reserved.to_le_bytes());
        out.extend_from_slice(&self.in_flight.to_le_bytes());
        out.extend_from_slice(&self.requests.to_le_bytes());
        out.push(u8::from(self.alerted));
        out
    }

    fn decode(bytes: &[u8]) -> Option<Ledger> {
        let mut c = Cursor::new(bytes);
        if c.u8()? != LEDGER_VERSION {
            return None;
        }
        let l = Ledger {
            settled: c.i64()?,
            reserved: c.i64()?,
            in_flight: c.u32()?,
            requests: c.u64()?,
            alerted: c.u8()? != 0,
        };
        c.is_empty().then_some(l)
    }
}

/// Reads a ledger (zero when it was never written), for `writ serve` and tests.
pub fn ledger(store: &dyn SharedStore, key: &str) -> Result<Ledger, StoreError> {
    store::read(store, key)
}

/// The answer of [`reserve`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Admission {
    /// Reserved on every ledger. `totals[i]` is `settled + reserved` of `keys[i]` right
    /// after this reservation (this request's estimate included).
    Admit { totals: Vec<Micros> },
    /// A ledger's cap would be exceeded; nothing stays reserved.
    Deny {
        /// Index into the keys of the ledger that refused.
        key: usize,
        /// The enforced rule whose cap it is.
        rule: Option<usize>,
        /// `settled + reserved` before this request.
        current: Micros,
        /// The cap the total would have exceeded.
        limit: Micros,
    },
}

/// Reserves `estimate` on every ledger of `keys`, admitting only while
/// `settled + reserved + estimate <= cap` on each. Each ledger is updated atomically (CAS
/// with bounded retries), so however many workers race, an admitted request always saw a
/// total that includes every reservation admitted before it. Across ledgers the
/// reservation is taken in order and rolled back on a deny, so a request that is denied
/// on its second ledger may briefly hold its first one: concurrent requests can then be
/// denied early, never admitted wrongly. On a store error nothing stays reserved and the
/// caller fails closed.
pub fn reserve(
    store: &dyn SharedStore,
    keys: &[BudgetKey],
    estimate: Micros,
) -> Result<Admission, StoreError> {
    let estimate = estimate.max(0);
    let outcome = store::reserve_all(
        store,
        keys,
        |k| k.key.as_str(),
        |k, l: &Ledger| {
            let current = l.settled.saturating_add(l.reserved);
            let total = current.saturating_add(estimate);
            match k.cap {
                Some(cap) if total > cap => Err((k.cap_rule, current, cap)),
                _ => {
                    let mut next = *l;
                    next.reserved = next.reserved.saturating_add(estimate);
                    next.in_flight = next.in_flight.saturating_add(1);
                    Ok((next, total))
                }
            }
        },
        |done| release(store, done, estimate),
    )?;
    Ok(match outcome {
        Ok(totals) => Admission::Admit { totals },
        Err((key, (rule, current, limit))) => Admission::Deny {
            key,
            rule,
            current,
            limit,
        },
    })
}

/// A budget alert: settled spend on a ledger crossed its `alert at N%` threshold. Raised
/// exactly once per ledger and window (the flag lives in the ledger, set by the same CAS
/// that settles), so the caller logs it, increments a metric and makes its HTTP call
/// without deduplicating. Alerts follow settled spend, never estimates, so a reservation
/// that is later released cannot raise one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Alert {
    pub key: String,
    /// The rule carrying `alert at`.
    pub rule: Option<usize>,
    pub settled: Micros,
    pub threshold: Micros,
}

/// Replaces this request's reservation (`reserved`, as passed to [`reserve`]) with its real
/// cost `actual` on every ledger, and returns the alerts this settlement raised. A
/// ledger's reservation never goes below zero, whatever the caller passes.
pub fn settle(
    store: &dyn SharedStore,
    keys: &[BudgetKey],
    reserved: Micros,
    actual: Micros,
) -> Result<Vec<Alert>, StoreError> {
    let mut alerts = Vec::new();
    let mut first_err = None;
    for k in keys {
        let r = store::update(store, &k.key, |l: &Ledger| {
            let mut next = *l;
            next.reserved = next.reserved.saturating_sub(reserved.max(0)).max(0);
            next.in_flight = next.in_flight.saturating_sub(1);
            next.settled = next.settled.saturating_add(actual.max(0));
            next.requests = next.requests.saturating_add(1);
            let fire = match k.alert_at {
                Some(a) if !l.alerted && next.settled >= a => Some(a),
                _ => None,
            };
            if fire.is_some() {
                next.alerted = true;
            }
            Step::Write(next, fire.map(|threshold| (next.settled, threshold)))
        });
        match r {
            Ok(Some((settled, threshold))) => alerts.push(Alert {
                key: k.key.clone(),
                rule: k.alert_rule,
                settled,
                threshold,
            }),
            Ok(None) => {}
            Err(e) => {
                first_err.get_or_insert(e);
            }
        }
    }
    match first_err {
        Some(e) => Err(e),
        None => Ok(alerts),
    }
}

/// Drops this request's reservation without charging anything: the upstream failed, the
/// request was denied after admission, or the client disconnected.
pub fn release(
    store: &dyn SharedStore,
    keys: &[BudgetKey],
    reserved: Micros,
) -> Result<(), StoreError> {
    let mut first_err = None;
    for k in keys {
        let r = store::update(store, &k.key, |l: &Ledger| {
            let mut next = *l;
            next.reserved = next.reserved.saturating_sub(reserved.max(0)).max(0);
            next.in_flight = next.in_flight.saturating_sub(1);
            Step::Write(next, ())
        });
        if let Err(e) = r {
            first_err.get_or_insert(e);
        }
    }
    first_err.map_or(Ok(()), Err)
}

// ---------------------------------------------------------------------------------------
// One request's reservation, as the filter holds it

/// What a finished request cost, ready for the audit record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settled {
    /// Tokens from the provider's usage, or the estimate's when `estimated`.
    pub usage: Usage,
    pub cost_micros: Micros,
    /// True when no usage came back and the estimate was charged instead: the audit record
    /// must say `cost_estimated: true`.
    pub estimated: bool,
    /// Budget alerts this settlement raised (each exactly once per window).
    pub alerts: Vec<Alert>,
}

/// A request's reservation, kept in the filter's per-request context from admission to
/// the end of the exchange. Settling or releasing twice is harmless: only the first call
/// touches the ledgers, so the filter can call [`Reservation::release`] unconditionally
/// when the stream ends (`on_log`) to cover errors and disconnects.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reservation {
    pub keys: Vec<BudgetKey>,
    pub price: Price,
    pub estimate: Estimate,
    done: bool,
}

impl Reservation {
    /// Estimates the request at `price` and reserves it on the plan's ledgers. On
    /// [`Admission::Deny`] nothing is held and no reservation is returned.
    pub fn admit(
        store: &dyn SharedStore,
        plan: &SpendPlan,
        price: &Price,
        body: &Json,
        default_completion_tokens: u64,
    ) -> Result<(Admission, Option<Reservation>), StoreError> {
        let estimate = estimate(price, body, default_completion_tokens);
        let admission = reserve(store, &plan.keys, estimate.micros)?;
        let held = matches!(admission, Admission::Admit { .. }).then(|| Reservation {
            keys: plan.keys.clone(),
            price: price.clone(),
            estimate,
            done: false,
        });
        Ok((admission, held))
    }

    /// Charges the real cost from `usage`, or the estimate when the reply carried none
    /// (`Settled::estimated`). `None` once the reservation was already settled or released.
    pub fn settle(
        &mut self,
        store: &dyn SharedStore,
        usage: Option<Usage>,
    ) -> Result<Option<Settled>, StoreError> {
        if std::mem::replace(&mut self.done, true) {
            return Ok(None);
        }
        let (usage, estimated) = match usage {
            Some(u) => (u, false),
            None => (
                Usage {
                    prompt_tokens: self.estimate.prompt_tokens,
                    completion_tokens: self.estimate.completion_tokens,
                    cached_tokens: 0,
                },
                true,
            ),
        };
        let cost_micros = if estimated {
            self.estimate.micros
        } else {
            cost_micros(&self.price, &usage)
        };
        let alerts = settle(store, &self.keys, self.estimate.micros, cost_micros)?;
        Ok(Some(Settled {
            usage,
            cost_micros,
            estimated,
            alerts,
        }))
    }

    /// Drops the reservation without charging (upstream error, local reply after
    /// admission, client gone). Does nothing after a settle or an earlier release.
    pub fn release(&mut self, store: &dyn SharedStore) -> Result<(), StoreError> {
        if std::mem::replace(&mut self.done, true) {
            return Ok(());
        }
        release(store, &self.keys, self.estimate.micros)
    }

    /// Whether the reservation is still held.
    pub fn is_open(&self) -> bool {
        !self.done
    }
}

impl Alert {
    /// The JSON body of the optional alert HTTP call.
    pub fn payload(&self, policy: &Policy) -> Vec<u8> {
        let rule = self.rule.and_then(|r| policy.rules.get(r));
        let v = serde_json::json!({
            "alert": "budget",
            "policy": policy.name,
            "clause": rule.map(|r| r.clause.as_str()),
            "title": rule.map(|r| r.title.as_str()),
            "ledger": self.key,
            "settled_micros": self.settled,
            "threshold_micros": self.threshold,
            "currency": policy.currency,
        });
        serde_json::to_vec(&v).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::MemoryStore;

    fn price() -> Price {
        Price {
            model: "gpt-4o-mini".into(),
            input_per_mtok: 150_000,
            output_per_mtok: 600_000,
            cached_input_per_mtok: Some(75_000),
        }
    }

    #[test]
    fn ledger_keys_name_scope_window_and_bucket() {
        assert_eq!(
            ledger_key(Scope::Team, Some("billing"), Window::Month, 1_795_490_900),
            "writ/spend/team/billing/month/2026-11"
        );
        assert_eq!(
            ledger_key(Scope::User, Some("a/b"), Window::Day, 0),
            "writ/spend/user/a%2Fb/day/1970-01-01"
        );
        assert_eq!(
            ledger_key(Scope::User, None, Window::Hour, 0),
            "writ/spend/user/-/hour/1970-01-01T00"
        );
    }

    #[test]
    fn costs_round_up_and_price_cached_tokens() {
        let p = price();
        let u = Usage {
            prompt_tokens: 1_000_000,
            completion_tokens: 1_000_000,
            cached_tokens: 0,
        };
        assert_eq!(cost_micros(&p, &u), 750_000);
        let one = Usage {
            prompt_tokens: 1,
            completion_tokens: 0,
            cached_tokens: 0,
        };
        assert_eq!(cost_micros(&p, &one), 1, "0.15 micros rounds up to 1");
        let cached = Usage {
            prompt_tokens: 2_000_000,
            completion_tokens: 0,
            cached_tokens: 1_000_000,
        };
        assert_eq!(cost_micros(&p, &cached), 150_000 + 75_000);
        assert_eq!(cost_micros(&p, &Usage::default()), 0);
        let huge = Usage {
            prompt_tokens: u64::MAX,
            completion_tokens: u64::MAX,
            cached_tokens: 0,
        };
        assert!(cost_micros(&p, &huge) > 0);
    }

    #[test]
    fn prices_match_exactly_or_by_dated_snapshot() {
        let prices = vec![
            price(),
            Price {
                model: "gpt-4o".into(),
                input_per_mtok: 2_500_000,
                output_per_mtok: 10_000_000,
                cached_input_per_mtok: None,
            },
        ];
        assert_eq!(
            price_for(&prices, "gpt-4o").map(|p| p.model.as_str()),
            Some("gpt-4o")
        );
        assert_eq!(
            price_for(&prices, "gpt-4o-2024-08-06").map(|p| p.model.as_str()),
            Some("gpt-4o")
        );
        assert_eq!(
            price_for(&prices, "gpt-4o-mini-2024-07-18").map(|p| p.model.as_str()),
            Some("gpt-4o-mini")
        );
        assert_eq!(price_for(&prices[1..], "gpt-4o-mini"), None);
        let c = conservative_price(&prices);
        assert_eq!(
            c.map(|c| (c.input_per_mtok, c.output_per_mtok)),
            Some((2_500_000, 10_000_000))
        );
    }

    #[test]
    fn estimates_cover_prompt_and_completion_limit() {
        let body = serde_json::json!({"model": "gpt-4o-mini", "max_tokens": 100, "n": 2,
            "messages": [{"role": "user", "content": "12345678"}]});
        // bytes: "gpt-4o-mini" 11 + "user" 4 + "12345678" 8 = 23 -> 6 tokens, + 4 per message
        assert_eq!(estimate_prompt_tokens(&body), 10);
        assert_eq!(completion_limit(&body, 4096), 200);
        let e = estimate(&price(), &body, 4096);
        assert_eq!(
            e.micros,
            cost_micros(
                &price(),
                &Usage {
                    prompt_tokens: 10,
                    completion_tokens: 200,
                    cached_tokens: 0
                }
            )
        );
        let no_limit = serde_json::json!({"messages": []});
        assert_eq!(
            completion_limit(&no_limit, DEFAULT_MAX_COMPLETION_TOKENS),
            4096
        );
        let newer = serde_json::json!({"max_completion_tokens": 7, "max_tokens": 9});
        assert_eq!(completion_limit(&newer, 4096), 7);
    }

    #[test]
    fn responses_input_items_are_framed_like_chat_messages() {
        // A string input is one user message: "gpt-4o-mini" 11 + "12345678" 8 = 19 bytes
        // -> 5 tokens, + 4 for the message; the chat body with the same text also frames one.
        let string = serde_json::json!({"model": "gpt-4o-mini", "input": "12345678"});
        assert_eq!(framed_messages(&string), 1);
        assert_eq!(estimate_prompt_tokens(&string), 9);
        // Items: instructions, a message with content parts, a call and its output.
        // Bytes: 11 + "Be brief" 8 + ("user" 4 + "input_text" 10 + "12345678" 8)
        // + ("function_call" 13 + "c" 1 + "f" 1 + "{}" 2)
        // + ("function_call_output" 20 + "c" 1 + "ok" 2) = 81 -> 21 tokens, + 4 x 4.
        let items = serde_json::json!({"model": "gpt-4o-mini", "instructions": "Be brief",
            "input": [
                {"role": "user", "content": [{"type": "input_text", "text": "12345678"}]},
                {"type": "function_call", "call_id": "c", "name": "f", "arguments": "{}"},
                {"type": "function_call_output", "call_id": "c", "output": "ok"}]});
        assert_eq!(framed_messages(&items), 4);
        assert_eq!(estimate_prompt_tokens(&items), 21 + 16);
        // The same conversation as chat messages is framed the same way.
        let chat = serde_json::json!({"model": "gpt-4o-mini", "messages": [
            {"role": "system", "content": "Be brief"},
            {"role": "user", "content": "12345678"},
            {"role": "assistant", "tool_calls": [{"id": "c", "type": "function",
                "function": {"name": "f", "arguments": "{}"}}]},
            {"role": "tool", "tool_call_id": "c", "content": "ok"}]});
        assert_eq!(framed_messages(&chat), framed_messages(&items));
        // Anthropic: the system prompt outside the list is one more.
        let anthropic =
            serde_json::json!({"system": "s", "messages": [{"role": "user", "content": "u"}]});
        assert_eq!(framed_messages(&anthropic), 2);
        // Embeddings: a list of strings holds no items.
        assert_eq!(
            framed_messages(&serde_json::json!({"input": ["a", "b"]})),
            0
        );
        // The rate limits reserve the same prompt estimate.
        assert_eq!(
            crate::rate_limit::estimate_tokens(&items, 0),
            estimate_prompt_tokens(&items)
        );
    }

    fn key(name: &str, cap: Option<Micros>, alert_at: Option<Micros>) -> BudgetKey {
        BudgetKey {
            key: name.into(),
            scope: Scope::Team,
            window: Window::Month,
            cap,
            cap_rule: Some(0),
            alert_at,
            alert_rule: Some(0),
        }
    }

    #[test]
    fn reserve_settle_release_keep_the_ledger_exact() {
        let s = MemoryStore::new();
        let keys = [key("a", Some(100), None), key("b", Some(1000), None)];
        assert_eq!(
            reserve(&s, &keys, 60),
            Ok(Admission::Admit {
                totals: vec![60, 60]
            })
        );
        assert_eq!(
            reserve(&s, &keys, 50),
            Ok(Admission::Deny {
                key: 0,
                rule: Some(0),
                current: 60,
                limit: 100
            })
        );
        // The deny left nothing reserved on either ledger.
        assert_eq!(
            ledger(&s, "b").map(|l| (l.reserved, l.in_flight)),
            Ok((60, 1))
        );
        assert_eq!(settle(&s, &keys, 60, 45), Ok(vec![]));
        assert_eq!(
            ledger(&s, "a"),
            Ok(Ledger {
                settled: 45,
                reserved: 0,
                in_flight: 0,
                requests: 1,
                alerted: false
            })
        );
        assert_eq!(
            reserve(&s, &keys, 50),
            Ok(Admission::Admit {
                totals: vec![95, 95]
            })
        );
        assert_eq!(release(&s, &keys, 50), Ok(()));
        assert_eq!(
            ledger(&s, "a").map(|l| (l.settled, l.reserved, l.in_flight)),
            Ok((45, 0, 0))
        );
        // A deny on the second ledger rolls back the first.
        let tight = [key("a", Some(100), None), key("c", Some(10), None)];
        assert!(matches!(
            reserve(&s, &tight, 20),
            Ok(Admission::Deny { key: 1, .. })
        ));
        assert_eq!(ledger(&s, "a").map(|l| l.reserved), Ok(0));
    }

    #[test]
    fn alerts_fire_once_per_window() {
        let s = MemoryStore::new();
        let k = [key("w1", Some(1000), Some(800))];
        let mut fired = 0;
        for _ in 0..10 {
            if let Ok(Admission::Admit { .. }) = reserve(&s, &k, 100) {
                fired += settle(&s, &k, 100, 100).map_or(0, |a| a.len());
            }
        }
        assert_eq!(fired, 1);
        // The next window is a new ledger with its own alert.
        let k2 = [key("w2", Some(1000), Some(800))];
        let _ = reserve(&s, &k2, 900);
        assert_eq!(settle(&s, &k2, 900, 900).map(|a| a.len()), Ok(1));
    }

    #[test]
    fn corrupt_ledgers_fail_closed() {
        let s = MemoryStore::new();
        let _ = s.set("bad", b"garbage", 0);
        assert!(reserve(&s, &[key("bad", Some(10), None)], 1).is_err());
    }

    #[test]
    fn a_reservation_settles_or_releases_once() {
        let s = MemoryStore::new();
        let policy_keys = SpendPlan {
            keys: vec![key("r", Some(10_000), None)],
            monitors: vec![],
        };
        let body = serde_json::json!({"max_tokens": 10, "messages": []});
        let (adm, held) = Reservation::admit(&s, &policy_keys, &price(), &body, 0)
            .unwrap_or((Admission::Admit { totals: vec![] }, None));
        assert!(matches!(adm, Admission::Admit { .. }));
        let mut r = held.unwrap_or_else(|| unreachable!());
        let est = r.estimate.micros;
        // No usage came back: the estimate is charged and flagged as such.
        let settled = r.settle(&s, None);
        assert_eq!(
            settled
                .as_ref()
                .map(|o| o.as_ref().map(|x| (x.cost_micros, x.estimated))),
            Ok(Some((est, true)))
        );
        assert_eq!(r.settle(&s, None), Ok(None));
        assert_eq!(r.release(&s), Ok(()));
        assert_eq!(
            ledger(&s, "r").map(|l| (l.settled, l.reserved, l.in_flight)),
            Ok((est, 0, 0))
        );
        // A released one charges nothing; real usage is not flagged as estimated.
        let (_, held) = Reservation::admit(&s, &policy_keys, &price(), &body, 0)
            .unwrap_or((Admission::Admit { totals: vec![] }, None));
        let mut r = held.unwrap_or_else(|| unreachable!());
        assert_eq!(r.release(&s), Ok(()));
        assert!(!r.is_open());
        assert_eq!(
            r.settle(
                &s,
                Some(Usage {
                    prompt_tokens: 1,
                    completion_tokens: 1,
                    cached_tokens: 0
                })
            ),
            Ok(None)
        );
        let (_, held) = Reservation::admit(&s, &policy_keys, &price(), &body, 0)
            .unwrap_or((Admission::Admit { totals: vec![] }, None));
        let mut r = held.unwrap_or_else(|| unreachable!());
        let real = r.settle(
            &s,
            Some(Usage {
                prompt_tokens: 3,
                completion_tokens: 2,
                cached_tokens: 0,
            }),
        );
        assert_eq!(
            real.map(|o| o.map(|x| (x.cost_micros, x.estimated))),
            Ok(Some((2, false)))
        );
        assert_eq!(
            ledger(&s, "r").map(|l| (l.settled, l.reserved, l.in_flight, l.requests)),
            Ok((est + 2, 0, 0, 2))
        );
    }

    #[test]
    fn inline_images_are_not_counted_as_text() {
        let b64 = "A".repeat(400_000);
        let body = serde_json::json!({"messages": [{"role": "user", "content": [
            {"type": "text", "text": "what is this?"},
            {"type": "image_url", "image_url": {"url": format!("data:image/png;base64,{b64}")}}]}]});
        let tokens = estimate_prompt_tokens(&body);
        assert!(
            tokens > INLINE_DATA_TOKENS && tokens < INLINE_DATA_TOKENS + 100,
            "{tokens}"
        );
    }
}
