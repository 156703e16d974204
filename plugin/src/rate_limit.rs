//! Rate limits: `tokens(scope, window)` and `requests(scope, window)` counted in fixed
//! UTC windows in shared data, and the `x-ratelimit-*` headers that report them.
//!
//! The life of one request:
//! 1. [`RatePlan::for_request`] lists the counters the policy's rate conditions read for
//!    this request's identity and the current window (one counter per measure, scope,
//!    scope value, window and window start, e.g. `writ/rate/requests/user/jane/minute/1795490880`).
//! 2. [`admit`] adds the request to every counter, atomically per counter with a CAS
//!    retry ([`crate::store::update`]): one request on a `requests` counter (kept: it
//!    counts at admission), the estimated tokens on a `tokens` counter (reserved), admitting
//!    only while `used + reserved + cost <= cap`. A deny on one counter rolls back the
//!    counters before it, so a refused request holds nothing.
//! 3. After the reply, [`RateHold::settle`] replaces the token reservation by the tokens of
//!    the provider's `usage` (or the estimate when none came), [`RateHold::release`] drops
//!    it when the upstream failed (the request still counts: it was sent), and
//!    [`RateHold::refund`] takes the request back entirely when the gateway refused it
//!    after admission (another rule's deny, a host failure): it never left.
//!
//! Windows are fixed and aligned to UTC (a minute starts at second 0, an hour at minute
//! 0, a day at midnight), so every worker and every gateway agrees on them without a
//! clock of its own; a deny says how long until the window ends (`retry-after`).
//!
//! Every read-modify-write goes through [`crate::store::update`] on the
//! [`SharedStore`] trait, so a distributed store can back the counters later without a
//! change here. Counters are plain keys that end with their window, so they are never
//! read again once the window has passed.

use crate::ir::{
    Action, CmpOp, Enforcement, Expr, Measure, Operand, Phase, Policy, RateWindow, Scope, Value,
};
use crate::spend;
use crate::store::{self, Cursor, SharedStore, Step, StoreError, Stored};
use crate::usage::Usage;
use serde_json::Value as Json;

/// The length of a window in seconds.
pub fn window_secs(window: RateWindow) -> i64 {
    match window {
        RateWindow::Minute => 60,
        RateWindow::Hour => 3_600,
        RateWindow::Day => 86_400,
    }
}

/// The language keyword of a window, used in store keys and metric labels.
pub fn window_name(window: RateWindow) -> &'static str {
    match window {
        RateWindow::Minute => "minute",
        RateWindow::Hour => "hour",
        RateWindow::Day => "day",
    }
}

/// The language keyword of a measure, used in store keys and metric labels.
pub fn measure_name(measure: Measure) -> &'static str {
    match measure {
        Measure::Tokens => "tokens",
        Measure::Requests => "requests",
    }
}

/// The unix second the window holding `unix_secs` started at.
pub fn window_start(window: RateWindow, unix_secs: i64) -> i64 {
    unix_secs - unix_secs.rem_euclid(window_secs(window))
}

/// Whole seconds from `unix_secs` until the window holding it ends: from 1 (the last
/// second of the window) to the window's length (its first second). What `retry-after`
/// says.
pub fn reset_secs(window: RateWindow, unix_secs: i64) -> u64 {
    let len = window_secs(window);
    (len - unix_secs.rem_euclid(len)).unsigned_abs()
}

/// A duration in OpenAI's `x-ratelimit-reset-*` style: `45s`, `6m0s`, `1h2m3s`.
pub fn duration_text(secs: u64) -> String {
    let (h, m, s) = (secs / 3600, secs / 60 % 60, secs % 60);
    match (h, m) {
        (0, 0) => format!("{s}s"),
        (0, _) => format!("{m}m{s}s"),
        _ => format!("{h}h{m}m{s}s"),
    }
}

/// The counter key of one scope value in the current window, e.g.
/// `writ/rate/tokens/team/billing/hour/1795489200`. The value is escaped with
/// [`store::key_segment`] so a header cannot name another counter; a missing identity
/// shares the [`spend::ANONYMOUS`] counter rather than escaping the limit.
pub fn counter_key(
    measure: Measure,
    scope: Scope,
    value: Option<&str>,
    window: RateWindow,
    unix_secs: i64,
) -> String {
    let value = match value {
        Some(v) if !v.is_empty() => store::key_segment(v),
        _ => spend::ANONYMOUS.to_string(),
    };
    format!(
        "writ/rate/{}/{}/{}/{}/{}",
        measure_name(measure),
        spend::scope_name(scope),
        value,
        window_name(window),
        window_start(window, unix_secs)
    )
}

// ---------------------------------------------------------------------------------------
// Limits in the policy

/// A request-phase deny rule of the simple form `tokens(scope, window) > N` or
/// `requests(scope, window) >= N` (or mirrored), which a counter checks atomically while
/// admitting.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limit {
    /// Index into `Policy::rules`.
    pub rule: usize,
    pub measure: Measure,
    pub scope: Scope,
    pub window: RateWindow,
    /// The highest admissible count: `N` for `>`, `N - 1` for `>=`.
    pub cap: u64,
    /// True when the rule (or the policy) is in monitor mode: it never denies.
    pub monitor: bool,
}

/// The limit rules of a policy, in source order. Rate operands in other shapes of
/// condition are listed by [`operands`] and evaluated on the admitted totals.
pub fn limits(policy: &Policy) -> Vec<Limit> {
    let mut out = Vec::new();
    for (i, rule) in policy.rules.iter().enumerate() {
        if rule.phase != Phase::Request || !matches!(rule.action, Action::Deny { .. }) {
            continue;
        }
        let Expr::Compare { left, op, right } = &rule.condition else {
            continue;
        };
        let (measure, scope, window, op, n) = match (left, right) {
            (
                Operand::Rate {
                    measure,
                    scope,
                    window,
                },
                Operand::Const(Value::Num(n)),
            ) => (*measure, *scope, *window, *op, *n),
            (
                Operand::Const(Value::Num(n)),
                Operand::Rate {
                    measure,
                    scope,
                    window,
                },
            ) => {
                let mirrored = match op {
                    CmpOp::Lt => CmpOp::Gt,
                    CmpOp::Le => CmpOp::Ge,
                    other => *other,
                };
                (*measure, *scope, *window, mirrored, *n)
            }
            _ => continue,
        };
        if !n.is_finite() || n < 0.0 {
            continue;
        }
        // Counts are whole: `> 2.5` admits up to 2, `>= 2.5` up to 2 as well.
        let cap = match op {
            CmpOp::Gt => n.floor(),
            CmpOp::Ge => n.ceil() - 1.0,
            _ => continue,
        };
        out.push(Limit {
            rule: i,
            measure,
            scope,
            window,
            // `>= 0` admits nothing: a cap of zero, which a request (cost one) exceeds.
            cap: cap.max(0.0) as u64,
            monitor: is_monitor(policy, i),
        });
    }
    out
}

fn is_monitor(policy: &Policy, rule: usize) -> bool {
    policy.enforcement == Enforcement::Monitor
        || policy
            .rules
            .get(rule)
            .is_some_and(|r| r.enforcement == Enforcement::Monitor)
}

/// Every `(measure, scope, window)` a request-phase rule's condition reads, deduplicated,
/// in first-use order.
pub fn operands(policy: &Policy) -> Vec<(Measure, Scope, RateWindow)> {
    policy.request_operands(|o| match o {
        Operand::Rate {
            measure,
            scope,
            window,
        } => Some((*measure, *scope, *window)),
        _ => None,
    })
}

/// One counter a request is charged to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CounterKey {
    pub key: String,
    pub measure: Measure,
    pub scope: Scope,
    pub window: RateWindow,
    /// The lowest cap among the enforced limit rules on this counter; `None` counts
    /// unconditionally (monitor rules and conditions evaluated afterwards).
    pub cap: Option<u64>,
    /// The enforced rule that owns `cap`, for the deny.
    pub cap_rule: Option<usize>,
}

/// The counters of one request, and when it was admitted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RatePlan {
    pub keys: Vec<CounterKey>,
    /// The unix second the plan was made for (the windows' reference).
    pub unix_secs: i64,
}

impl RatePlan {
    /// The counters for a request whose workflow, team and user are given (`None` when the
    /// request has none; it shares the anonymous counter), at `unix_secs`.
    pub fn for_request(
        policy: &Policy,
        workflow: Option<&str>,
        team: Option<&str>,
        user: Option<&str>,
        unix_secs: i64,
    ) -> RatePlan {
        let value = |scope: Scope| match scope {
            Scope::Workflow => workflow,
            Scope::Team => team,
            Scope::User => user,
        };
        let mut keys: Vec<CounterKey> = operands(policy)
            .into_iter()
            .map(|(measure, scope, window)| CounterKey {
                key: counter_key(measure, scope, value(scope), window, unix_secs),
                measure,
                scope,
                window,
                cap: None,
                cap_rule: None,
            })
            .collect();
        for l in limits(policy).into_iter().filter(|l| !l.monitor) {
            if let Some(k) = keys
                .iter_mut()
                .find(|k| k.measure == l.measure && k.scope == l.scope && k.window == l.window)
                && k.cap.is_none_or(|cur| l.cap < cur)
            {
                k.cap = Some(l.cap);
                k.cap_rule = Some(l.rule);
            }
        }
        RatePlan { keys, unix_secs }
    }

    /// Whether the plan has a counter of `measure`.
    pub fn counts(&self, measure: Measure) -> bool {
        self.keys.iter().any(|k| k.measure == measure)
    }
}

// ---------------------------------------------------------------------------------------
// The counter

/// One counter's state in shared data.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counter {
    /// Requests admitted, or tokens settled, in this window.
    pub used: u64,
    /// Tokens reserved by requests in flight (always 0 on a `requests` counter).
    pub reserved: u64,
}

const COUNTER_VERSION: u8 = 1;

impl Stored for Counter {
    fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(17);
        out.push(COUNTER_VERSION);
        out.extend_from_slice(&self.used.to_le_bytes());
        out.extend_from_slice(&self.reserved.to_le_bytes());
        out
    }

    fn decode(bytes: &[u8]) -> Option<Counter> {
        let mut c = Cursor::new(bytes);
        if c.u8()? != COUNTER_VERSION {
            return None;
        }
        let v = Counter {
            used: c.u64()?,
            reserved: c.u64()?,
        };
        c.is_empty().then_some(v)
    }
}

/// Reads a counter (zero when it was never written), for tests and `writ serve`.
pub fn counter(store: &dyn SharedStore, key: &str) -> Result<Counter, StoreError> {
    store::read(store, key)
}

/// The answer of [`admit`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RateAdmission {
    /// Counted on every counter. `totals[i]` is `used + reserved` of `keys[i]` right after
    /// this request was added (this request included).
    Admit { totals: Vec<u64> },
    /// A counter's cap would be exceeded; nothing stays counted.
    Deny {
        /// Index into the keys of the counter that refused.
        key: usize,
        /// The enforced rule whose cap it is.
        rule: Option<usize>,
        /// `used + reserved` before this request.
        current: u64,
        /// The cap the total would have exceeded.
        cap: u64,
    },
}

fn cost(measure: Measure, tokens: u64) -> u64 {
    match measure {
        Measure::Requests => 1,
        Measure::Tokens => tokens,
    }
}

/// Adds one request costing `tokens` (its estimate) to every counter of `keys`, admitting
/// only while `used + reserved + cost <= cap` on each. Each counter is updated atomically
/// (CAS with bounded retries), so however many workers race, no more requests are
/// admitted than the cap allows. Across counters the request is added in order and rolled
/// back on a deny, so a request refused on its second counter may briefly hold its first:
/// concurrent requests can then be refused early, never admitted wrongly. On a store error
/// nothing stays counted and the caller fails closed.
pub fn admit(
    store: &dyn SharedStore,
    keys: &[CounterKey],
    tokens: u64,
) -> Result<RateAdmission, StoreError> {
    let outcome = store::reserve_all(
        store,
        keys,
        |k| k.key.as_str(),
        |k, v: &Counter| {
            let c = cost(k.measure, tokens);
            let current = v.used.saturating_add(v.reserved);
            let total = current.saturating_add(c);
            match k.cap {
                Some(cap) if total > cap => Err((k.cap_rule, current, cap)),
                _ => {
                    let mut next = *v;
                    match k.measure {
                        Measure::Requests => next.used = next.used.saturating_add(c),
                        Measure::Tokens => next.reserved = next.reserved.saturating_add(c),
                    }
                    Ok((next, total))
                }
            }
        },
        |done| refund(store, done, tokens),
    )?;
    Ok(match outcome {
        Ok(totals) => RateAdmission::Admit { totals },
        Err((key, (rule, current, cap))) => RateAdmission::Deny {
            key,
            rule,
            current,
            cap,
        },
    })
}

/// Applies `f` to every counter of `keys`, reporting the first error after trying all.
fn each(
    store: &dyn SharedStore,
    keys: &[CounterKey],
    f: impl Fn(&CounterKey, Counter) -> Counter,
) -> Result<(), StoreError> {
    let mut first_err = None;
    for k in keys {
        if let Err(e) = store::update(store, &k.key, |v: &Counter| Step::Write(f(k, *v), ())) {
            first_err.get_or_insert(e);
        }
    }
    first_err.map_or(Ok(()), Err)
}

/// Takes an admitted request back from every counter: it was refused after admission
/// and never reached the provider.
pub fn refund(
    store: &dyn SharedStore,
    keys: &[CounterKey],
    reserved_tokens: u64,
) -> Result<(), StoreError> {
    each(store, keys, |k, mut v| {
        match k.measure {
            Measure::Requests => v.used = v.used.saturating_sub(1),
            Measure::Tokens => v.reserved = v.reserved.saturating_sub(reserved_tokens),
        }
        v
    })
}

/// Replaces the token reservation (`reserved_tokens`, as passed to [`admit`]) by the
/// tokens actually used, on every `tokens` counter. `requests` counters are untouched.
pub fn settle(
    store: &dyn SharedStore,
    keys: &[CounterKey],
    reserved_tokens: u64,
    used_tokens: u64,
) -> Result<(), StoreError> {
    let tokens: Vec<CounterKey> = keys
        .iter()
        .filter(|k| k.measure == Measure::Tokens)
        .cloned()
        .collect();
    each(store, &tokens, |_, mut v| {
        v.reserved = v.reserved.saturating_sub(reserved_tokens);
        v.used = v.used.saturating_add(used_tokens);
        v
    })
}

// ---------------------------------------------------------------------------------------
// Estimates

/// The tokens reserved before the call: the prompt estimate and the completion limit
/// that the spend estimate uses ([`spend::estimate_prompt_tokens`],
/// [`spend::completion_limit`]).
pub fn estimate_tokens(body: &Json, default_completion_tokens: u64) -> u64 {
    spend::estimate_prompt_tokens(body)
        .saturating_add(spend::completion_limit(body, default_completion_tokens))
}

/// The tokens a provider's usage counts against a limit: prompt (cached included, as
/// providers count them) and completion.
pub fn usage_tokens(usage: &Usage) -> u64 {
    usage.prompt_tokens.saturating_add(usage.completion_tokens)
}

// ---------------------------------------------------------------------------------------
// One request's hold, as the filter keeps it

/// A request's place on the counters, kept by the filter from admission to the end of the
/// exchange. Only the first of settle, release or refund touches the counters, so the
/// filter may call them unconditionally when the stream ends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RateHold {
    pub plan: RatePlan,
    /// The tokens reserved on the `tokens` counters.
    pub estimate: u64,
    /// `used + reserved` of each counter right after admission.
    pub totals: Vec<u64>,
    done: bool,
}

impl RateHold {
    /// Admits the request on the plan's counters. On [`RateAdmission::Deny`] nothing is
    /// held and no hold is returned.
    pub fn admit(
        store: &dyn SharedStore,
        plan: &RatePlan,
        body: &Json,
        default_completion_tokens: u64,
    ) -> Result<(RateAdmission, Option<RateHold>), StoreError> {
        let estimate = if plan.counts(Measure::Tokens) {
            estimate_tokens(body, default_completion_tokens)
        } else {
            0
        };
        let admission = admit(store, &plan.keys, estimate)?;
        let held = match &admission {
            RateAdmission::Admit { totals } => Some(RateHold {
                plan: plan.clone(),
                estimate,
                totals: totals.clone(),
                done: false,
            }),
            RateAdmission::Deny { .. } => None,
        };
        Ok((admission, held))
    }

    /// Settles the token reservation at the tokens of `usage`, or at the estimate when the
    /// reply carried none. Returns the tokens charged, `None` when already closed.
    pub fn settle(
        &mut self,
        store: &dyn SharedStore,
        usage: Option<&Usage>,
    ) -> Result<Option<u64>, StoreError> {
        if std::mem::replace(&mut self.done, true) {
            return Ok(None);
        }
        let used = usage.map_or(self.estimate, usage_tokens);
        settle(store, &self.plan.keys, self.estimate, used)?;
        Ok(Some(used))
    }

    /// The upstream failed without usage: the token reservation is dropped, the request
    /// still counts (it was sent).
    pub fn release(&mut self, store: &dyn SharedStore) -> Result<(), StoreError> {
        if std::mem::replace(&mut self.done, true) {
            return Ok(());
        }
        settle(store, &self.plan.keys, self.estimate, 0)
    }

    /// The gateway refused the request after admission: it is taken back entirely.
    pub fn refund(&mut self, store: &dyn SharedStore) -> Result<(), StoreError> {
        if std::mem::replace(&mut self.done, true) {
            return Ok(());
        }
        refund(store, &self.plan.keys, self.estimate)
    }

    /// Whether the hold still has to be closed.
    pub fn is_open(&self) -> bool {
        !self.done
    }

    /// The `x-ratelimit-*` headers of an admitted request (see [`headers`]).
    pub fn headers(&self) -> Vec<(&'static str, String)> {
        headers(&self.plan, &self.totals)
    }
}

/// `tokens(…)`/`requests(…)` as the rules see them after an admission: `used + reserved`
/// of the matching counter, this request included.
pub fn total_for(
    plan: &RatePlan,
    totals: &[u64],
    measure: Measure,
    scope: Scope,
    window: RateWindow,
) -> Option<u64> {
    let i = plan
        .keys
        .iter()
        .position(|k| k.measure == measure && k.scope == scope && k.window == window)?;
    totals.get(i).copied()
}

// ---------------------------------------------------------------------------------------
// Headers

/// The OpenAI-style headers of an admitted request: for requests and for tokens, the
/// enforced limit with the least room left (`x-ratelimit-limit-*` its cap,
/// `-remaining-*` what is left of it after this request, `-reset-*` the time until its
/// window ends). A measure without an enforced limit gets no headers.
pub fn headers(plan: &RatePlan, totals: &[u64]) -> Vec<(&'static str, String)> {
    let mut out = Vec::new();
    for measure in [Measure::Requests, Measure::Tokens] {
        let tightest = plan
            .keys
            .iter()
            .zip(totals)
            .filter(|(k, _)| k.measure == measure)
            .filter_map(|(k, t)| Some((k, k.cap?, k.cap?.saturating_sub(*t))))
            .min_by_key(|(_, _, remaining)| *remaining);
        if let Some((k, cap, remaining)) = tightest {
            push_measure(
                &mut out,
                measure,
                cap,
                remaining,
                reset_secs(k.window, plan.unix_secs),
            );
        }
    }
    out
}

/// The headers of a request refused by counter `key`: `retry-after` (seconds until its
/// window ends) and the `x-ratelimit-*` headers of its measure.
pub fn deny_headers(plan: &RatePlan, key: usize, current: u64) -> Vec<(&'static str, String)> {
    let Some(k) = plan.keys.get(key) else {
        return Vec::new();
    };
    let reset = reset_secs(k.window, plan.unix_secs);
    let cap = k.cap.unwrap_or(0);
    let mut out = vec![("retry-after", reset.to_string())];
    push_measure(&mut out, k.measure, cap, cap.saturating_sub(current), reset);
    out
}

fn push_measure(
    out: &mut Vec<(&'static str, String)>,
    measure: Measure,
    cap: u64,
    remaining: u64,
    reset: u64,
) {
    let names = match measure {
        Measure::Requests => [
            "x-ratelimit-limit-requests",
            "x-ratelimit-remaining-requests",
            "x-ratelimit-reset-requests",
        ],
        Measure::Tokens => [
            "x-ratelimit-limit-tokens",
            "x-ratelimit-remaining-tokens",
            "x-ratelimit-reset-tokens",
        ],
    };
    let [limit, left, when] = names;
    out.push((limit, cap.to_string()));
    out.push((left, remaining.to_string()));
    out.push((when, duration_text(reset)));
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use crate::store::MemoryStore;

    // 2026-11-24T03:28:20Z
    const T: i64 = 1_795_490_900;

    #[test]
    fn windows_are_fixed_and_aligned_to_utc() {
        assert_eq!(window_start(RateWindow::Minute, T), T - 20);
        assert_eq!(reset_secs(RateWindow::Minute, T), 40);
        // 03:28:20 -> the hour ends at 04:00:00, 31 min 40 s later.
        assert_eq!(reset_secs(RateWindow::Hour, T), 31 * 60 + 40);
        assert_eq!(window_start(RateWindow::Hour, T), T - (28 * 60 + 20));
        // The day ends at midnight: 20 h 31 min 40 s later.
        assert_eq!(reset_secs(RateWindow::Day, T), 20 * 3600 + 31 * 60 + 40);
        // The first second of a window has the whole window ahead, the last one second.
        let start = window_start(RateWindow::Minute, T);
        assert_eq!(reset_secs(RateWindow::Minute, start), 60);
        assert_eq!(reset_secs(RateWindow::Minute, start + 59), 1);
        assert_eq!(window_start(RateWindow::Minute, start + 60), start + 60);
        // Before the epoch too.
        assert_eq!(window_start(RateWindow::Minute, -1), -60);
        assert_eq!(reset_secs(RateWindow::Minute, -1), 1);
        assert_eq!(duration_text(40), "40s");
        assert_eq!(duration_text(31 * 60 + 40), "31m40s");
        assert_eq!(duration_text(360), "6m0s");
        assert_eq!(duration_text(20 * 3600 + 31 * 60 + 40), "20h31m40s");
    }

    #[test]
    fn keys_name_measure_scope_window_and_start() {
        assert_eq!(
            counter_key(
                Measure::Requests,
                Scope::User,
                Some("jane"),
                RateWindow::Minute,
                T
            ),
            format!("writ/rate/requests/user/jane/minute/{}", T - 20)
        );
        assert_eq!(
            counter_key(
                Measure::Tokens,
                Scope::Team,
                Some("a/b"),
                RateWindow::Day,
                0
            ),
            "writ/rate/tokens/team/a%2Fb/day/0"
        );
        assert_eq!(
            counter_key(Measure::Tokens, Scope::Team, None, RateWindow::Hour, 0),
            "writ/rate/tokens/team/-/hour/0"
        );
        // The next minute is a new counter.
        assert_ne!(
            counter_key(Measure::Requests, Scope::User, None, RateWindow::Minute, T),
            counter_key(
                Measure::Requests,
                Scope::User,
                None,
                RateWindow::Minute,
                T + 40
            )
        );
    }

    fn key(name: &str, measure: Measure, cap: Option<u64>) -> CounterKey {
        CounterKey {
            key: name.into(),
            measure,
            scope: Scope::User,
            window: RateWindow::Minute,
            cap,
            cap_rule: Some(0),
        }
    }

    #[test]
    fn requests_count_at_admission_up_to_the_cap() {
        let s = MemoryStore::new();
        let keys = [key("r", Measure::Requests, Some(3))];
        for n in 1..=3 {
            assert_eq!(
                admit(&s, &keys, 999),
                Ok(RateAdmission::Admit { totals: vec![n] })
            );
        }
        assert_eq!(
            admit(&s, &keys, 999),
            Ok(RateAdmission::Deny {
                key: 0,
                rule: Some(0),
                current: 3,
                cap: 3
            })
        );
        // Settling tokens does not touch a requests counter; a refund takes one back.
        assert_eq!(settle(&s, &keys, 999, 5), Ok(()));
        assert_eq!(
            counter(&s, "r"),
            Ok(Counter {
                used: 3,
                reserved: 0
            })
        );
        assert_eq!(refund(&s, &keys, 999), Ok(()));
        assert!(matches!(
            admit(&s, &keys, 1),
            Ok(RateAdmission::Admit { .. })
        ));
    }

    #[test]
    fn tokens_are_reserved_then_settled_from_usage() {
        let s = MemoryStore::new();
        let keys = [key("t", Measure::Tokens, Some(100))];
        assert_eq!(
            admit(&s, &keys, 60),
            Ok(RateAdmission::Admit { totals: vec![60] })
        );
        // A second estimate of 60 would pass 100 while the first is in flight.
        assert!(matches!(
            admit(&s, &keys, 60),
            Ok(RateAdmission::Deny { current: 60, .. })
        ));
        // The first used only 25: the reservation is replaced by real usage.
        assert_eq!(settle(&s, &keys, 60, 25), Ok(()));
        assert_eq!(
            counter(&s, "t"),
            Ok(Counter {
                used: 25,
                reserved: 0
            })
        );
        assert_eq!(
            admit(&s, &keys, 60),
            Ok(RateAdmission::Admit { totals: vec![85] })
        );
        // An upstream failure drops the reservation and charges nothing.
        assert_eq!(settle(&s, &keys, 60, 0), Ok(()));
        assert_eq!(
            counter(&s, "t"),
            Ok(Counter {
                used: 25,
                reserved: 0
            })
        );
    }

    #[test]
    fn a_deny_on_one_counter_rolls_back_the_others() {
        let s = MemoryStore::new();
        let keys = [
            key("req", Measure::Requests, Some(10)),
            key("tok", Measure::Tokens, Some(50)),
        ];
        assert!(matches!(
            admit(&s, &keys, 80),
            Ok(RateAdmission::Deny { key: 1, .. })
        ));
        assert_eq!(counter(&s, "req"), Ok(Counter::default()));
        assert_eq!(counter(&s, "tok"), Ok(Counter::default()));
    }

    #[test]
    fn a_hold_closes_once() {
        let s = MemoryStore::new();
        let plan = RatePlan {
            keys: vec![
                key("req", Measure::Requests, Some(10)),
                key("tok", Measure::Tokens, Some(10_000)),
            ],
            unix_secs: T,
        };
        let body = serde_json::json!({"max_tokens": 10, "messages": []});
        let (adm, held) = RateHold::admit(&s, &plan, &body, 0).unwrap();
        assert_eq!(
            adm,
            RateAdmission::Admit {
                totals: vec![1, 10]
            }
        );
        let mut h = held.unwrap();
        assert_eq!(h.estimate, 10);
        let usage = Usage {
            prompt_tokens: 3,
            completion_tokens: 4,
            cached_tokens: 1,
        };
        assert_eq!(h.settle(&s, Some(&usage)), Ok(Some(7)));
        assert_eq!(h.settle(&s, None), Ok(None));
        assert_eq!(h.refund(&s), Ok(()));
        assert_eq!(
            counter(&s, "req"),
            Ok(Counter {
                used: 1,
                reserved: 0
            })
        );
        assert_eq!(
            counter(&s, "tok"),
            Ok(Counter {
                used: 7,
                reserved: 0
            })
        );
        // Without usage the estimate is charged; a release keeps the request counted; a
        // refund takes it back.
        let (_, h2) = RateHold::admit(&s, &plan, &body, 0).unwrap();
        assert_eq!(h2.unwrap().settle(&s, None), Ok(Some(10)));
        let (_, h3) = RateHold::admit(&s, &plan, &body, 0).unwrap();
        h3.unwrap().release(&s).unwrap();
        assert_eq!(
            counter(&s, "req"),
            Ok(Counter {
                used: 3,
                reserved: 0
            })
        );
        assert_eq!(
            counter(&s, "tok"),
            Ok(Counter {
                used: 17,
                reserved: 0
            })
        );
        let (_, h4) = RateHold::admit(&s, &plan, &body, 0).unwrap();
        let mut h4 = h4.unwrap();
        assert!(h4.is_open());
        h4.refund(&s).unwrap();
        assert!(!h4.is_open());
        assert_eq!(
            counter(&s, "req"),
            Ok(Counter {
                used: 3,
                reserved: 0
            })
        );
        assert_eq!(
            counter(&s, "tok"),
            Ok(Counter {
                used: 17,
                reserved: 0
            })
        );
    }

    #[test]
    fn headers_report_the_tightest_limit() {
        let mut a = key("a", Measure::Requests, Some(60));
        a.window = RateWindow::Minute;
        let mut b = key("b", Measure::Requests, Some(1000));
        b.window = RateWindow::Day;
        let c = key("c", Measure::Tokens, None);
        let plan = RatePlan {
            keys: vec![a, b, c],
            unix_secs: T,
        };
        let h = headers(&plan, &[10, 995, 500]);
        assert_eq!(
            h,
            vec![
                ("x-ratelimit-limit-requests", "1000".to_string()),
                ("x-ratelimit-remaining-requests", "5".to_string()),
                ("x-ratelimit-reset-requests", "20h31m40s".to_string()),
            ]
        );
        let d = deny_headers(&plan, 0, 60);
        assert_eq!(
            d,
            vec![
                ("retry-after", "40".to_string()),
                ("x-ratelimit-limit-requests", "60".to_string()),
                ("x-ratelimit-remaining-requests", "0".to_string()),
                ("x-ratelimit-reset-requests", "40s".to_string()),
            ]
        );
    }

    #[test]
    fn concurrent_admissions_never_pass_the_cap() {
        let s = MemoryStore::new();
        let keys = [key("c", Measure::Requests, Some(50))];
        let admitted = std::sync::atomic::AtomicU64::new(0);
        std::thread::scope(|scope| {
            for _ in 0..8 {
                scope.spawn(|| {
                    for _ in 0..20 {
                        if let Ok(RateAdmission::Admit { .. }) = admit(&s, &keys, 0) {
                            admitted.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                        }
                    }
                });
            }
        });
        assert_eq!(admitted.into_inner(), 50);
        assert_eq!(
            counter(&s, "c"),
            Ok(Counter {
                used: 50,
                reserved: 0
            })
        );
    }

    fn policy(rules: Vec<(Operand, CmpOp, Operand, Enforcement)>) -> Policy {
        Policy {
            name: "p".into(),
            version: "1.0.0".into(),
            source_sha256: "00".into(),
            currency: "EUR".into(),
            enforcement: Enforcement::Enforce,
            workflows: vec![],
            prices: vec![],
            detectors: vec![],
            rules: rules
                .into_iter()
                .enumerate()
                .map(|(i, (left, op, right, enforcement))| crate::ir::Rule {
                    clause: format!("R-{i}"),
                    title: "t".into(),
                    phase: Phase::Request,
                    condition: Expr::Compare { left, op, right },
                    action: Action::Deny {
                        status: 429,
                        message: "slow down".into(),
                    },
                    enforcement,
                    alert_at_percent: None,
                    line: 1,
                })
                .collect(),
            kill_switch: None,
        }
    }

    #[test]
    fn limits_read_both_directions_and_the_lowest_cap_wins() {
        let rate = |measure| Operand::Rate {
            measure,
            scope: Scope::User,
            window: RateWindow::Minute,
        };
        let n = |v: f64| Operand::Const(Value::Num(v));
        let p = policy(vec![
            (
                rate(Measure::Requests),
                CmpOp::Gt,
                n(60.0),
                Enforcement::Enforce,
            ),
            (
                n(10.0),
                CmpOp::Le,
                rate(Measure::Requests),
                Enforcement::Enforce,
            ),
            (
                rate(Measure::Tokens),
                CmpOp::Gt,
                n(5.0),
                Enforcement::Monitor,
            ),
        ]);
        let l = limits(&p);
        assert_eq!(
            l.iter()
                .map(|l| (l.rule, l.cap, l.monitor))
                .collect::<Vec<_>>(),
            [(0, 60, false), (1, 9, false), (2, 5, true)]
        );
        let plan = RatePlan::for_request(&p, None, None, Some("jane"), T);
        assert_eq!(plan.keys.len(), 2);
        assert_eq!(
            (plan.keys[0].cap, plan.keys[0].cap_rule),
            (Some(9), Some(1))
        );
        // A monitor rule never caps: its counter counts unconditionally.
        assert_eq!(plan.keys[1].cap, None);
        assert_eq!(
            total_for(
                &plan,
                &[4, 7],
                Measure::Tokens,
                Scope::User,
                RateWindow::Minute
            ),
            Some(7)
        );
    }

    #[test]
    fn corrupt_counters_fail_closed() {
        let s = MemoryStore::new();
        let _ = s.set("bad", b"garbage", 0);
        assert!(admit(&s, &[key("bad", Measure::Requests, Some(10))], 1).is_err());
    }
}
