//! The filter's Prometheus metrics: their families, how labels ride in a proxy-wasm stat
//! name, every series a policy can produce (defined at start-up, so dashboards and alerts
//! see zeros instead of gaps), and the bounded team and user labels.
//!
//! proxy-wasm has no labels: a metric is a name. writ encodes a series as
//! `family;label=value;label=value` (the *label convention*, `docs/metrics.md`):
//! - the family is a Prometheus metric name and never holds `;`;
//! - each label is `;name=value`; label names are `[a-z_]`, values never hold `;` (see
//!   [`label_value`]), so `;name=` can only start a label and extraction is unambiguous
//!   whatever else a value holds (`.`, `-` and `=` are kept: clause ids are `AIP-1.2`).
//!
//! Envoy turns the labels into tags with one `stats_tags` regex per label name,
//! `^wasmcustom\.writ_.*?(;name=([^;]*))` ([`envoy_tag_regex`], emitted by `writ envoy`),
//! so `/stats/prometheus` prints `writ_decisions_total{clause="AIP-1.2",…}`; `writ serve`
//! parses the same convention for any filter (`writ_runtime::prometheus`).
//!
//! Plain Rust with no host calls: the adapter asks this module for names and series and
//! only defines and moves them.

use crate::ir::{self, Policy};
use crate::kill_switch;
use crate::oversight;
use crate::spend;
use crate::store::{self, SharedStore, Step, Stored};

/// Counter or gauge (the proxy-wasm metric types writ uses).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Counter,
    Gauge,
}

impl Kind {
    /// The Prometheus `# TYPE` word.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Counter => "counter",
            Kind::Gauge => "gauge",
        }
    }
}

/// One metric family: its name, type, labels and meaning (the table in `docs/metrics.md`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Family {
    pub name: &'static str,
    pub kind: Kind,
    /// Labels every series carries, in the order they are encoded.
    pub labels: &'static [&'static str],
    /// The `# HELP` text.
    pub help: &'static str,
}

/// Requests by workflow and outcome (+ `team`/`user` when enabled).
pub const REQUESTS: Family = Family {
    name: "writ_requests_total",
    kind: Kind::Counter,
    labels: &["workflow", "outcome"],
    help: "Requests seen by the policy, by workflow and outcome (allowed, denied, stopped, error, admin).",
};
/// Rules that fired, by clause, action and mode.
pub const DECISIONS: Family = Family {
    name: "writ_decisions_total",
    kind: Kind::Counter,
    labels: &["clause", "action", "mode"],
    help: "Rules that fired, by paper-policy clause, action and mode (enforce or monitor).",
};
/// Settled spend in micros of the policy currency (+ `team`/`user` when enabled).
pub const SPEND: Family = Family {
    name: "writ_spend_micros_total",
    kind: Kind::Counter,
    labels: &["workflow"],
    help: "Settled model spend in millionths of the policy currency, by workflow.",
};
/// Spend reservations admitted and not yet settled or released.
pub const RESERVATIONS: Family = Family {
    name: "writ_reservations_in_flight",
    kind: Kind::Gauge,
    labels: &[],
    help: "Spend reservations admitted and not yet settled or released.",
};
/// Replies handed to human review.
pub const ESCALATIONS: Family = Family {
    name: "writ_escalations_total",
    kind: Kind::Counter,
    labels: &["workflow", "queue"],
    help: "Replies escalated to human review, by workflow and review queue.",
};
/// Measured share of outputs escalated to a human today, in parts per million.
pub const VERIFICATION_RATE: Family = Family {
    name: "writ_verification_rate_ppm",
    kind: Kind::Gauge,
    labels: &["workflow"],
    help: "Share of this UTC day's successful outputs escalated to human review, in parts per million.",
};
/// The paper policy's assumed verification rate, in parts per million.
pub const VERIFICATION_ASSUMED: Family = Family {
    name: "writ_verification_assumed_ppm",
    kind: Kind::Gauge,
    labels: &["workflow"],
    help: "Verification rate the paper policy assumes for the workflow (its upper bound), in parts per million.",
};
/// 1 while a workflow is stopped by the kill switch.
pub const KILL_SWITCH: Family = Family {
    name: "writ_kill_switch_stopped",
    kind: Kind::Gauge,
    labels: &["workflow"],
    help: "1 while the kill switch stops the workflow (itself or every workflow), else 0.",
};
/// Budget alerts raised (`alert at N%` crossed).
pub const BUDGET_ALERTS: Family = Family {
    name: "writ_budget_alerts_total",
    kind: Kind::Counter,
    labels: &["clause", "scope", "window"],
    help: "Budget alerts raised: settled spend crossed a rule's `alert at` threshold, by clause, scope and window.",
};
/// Drift alerts raised (verification rate above the assumed one).
pub const DRIFT_ALERTS: Family = Family {
    name: "writ_drift_alerts_total",
    kind: Kind::Counter,
    labels: &["workflow"],
    help: "Drift alerts raised: the measured verification rate rose above the assumed one, by workflow.",
};
/// Requests carrying each cost-attribution tag.
pub const TAGS: Family = Family {
    name: "writ_tags_total",
    kind: Kind::Counter,
    labels: &["key", "value"],
    help: "Requests tagged by a `tag` rule, by tag key and value.",
};

// ---- operating model (issue 15): verdicts, rubber-stamp signals, kill points ----
/// Verdicts posted on escalations.
pub const REVIEWS: Family = Family {
    name: "writ_reviews_total",
    kind: Kind::Counter,
    labels: &["workflow", "verdict"],
    help: "Verdicts reviewers posted on escalations, by workflow and verdict (approved, edited, rejected).",
};
/// Escalations without a verdict yet.
pub const REVIEWS_PENDING: Family = Family {
    name: "writ_reviews_pending",
    kind: Kind::Gauge,
    labels: &["workflow"],
    help: "Escalations this gateway recorded that have no verdict yet, by workflow.",
};
/// When the oldest pending escalation was made (0: none pending).
pub const REVIEW_OLDEST_PENDING: Family = Family {
    name: "writ_review_oldest_pending_timestamp_seconds",
    kind: Kind::Gauge,
    labels: &["workflow"],
    help: "Unix time of the oldest escalation still waiting for a verdict (0 when none); its age is time() minus this.",
};
/// Seconds from escalation to verdict, summed.
pub const REVIEW_WAIT: Family = Family {
    name: "writ_review_time_to_verdict_seconds_total",
    kind: Kind::Counter,
    labels: &["workflow"],
    help: "Seconds from each escalation to its verdict, summed; divide by writ_reviews_total for the mean time to review.",
};
/// Seconds reviewers say they spent, summed.
pub const REVIEW_SPENT: Family = Family {
    name: "writ_review_spent_seconds_total",
    kind: Kind::Counter,
    labels: &["workflow"],
    help: "Seconds reviewers reported spending on their verdicts, summed.",
};
/// Share of verdicts that approved, since the gateway started.
pub const REVIEW_APPROVAL: Family = Family {
    name: "writ_review_approval_rate_ppm",
    kind: Kind::Gauge,
    labels: &["workflow"],
    help: "Share of verdicts that approved the output, in parts per million (this gateway, since start).",
};
/// Rubber-stamp signals raised.
pub const REVIEW_SIGNALS: Family = Family {
    name: "writ_review_signals_total",
    kind: Kind::Counter,
    labels: &["workflow", "signal"],
    help: "Rubber-stamp signals raised (once per workflow, signal and UTC day), by workflow and signal.",
};
/// Kill points crossed.
pub const KILL_POINTS: Family = Family {
    name: "writ_kill_points_crossed_total",
    kind: Kind::Counter,
    labels: &["workflow", "metric"],
    help: "Kill points crossed (once per window bucket), by workflow and measure.",
};

/// The verdicts a reviewer may post, as `writ_reviews_total` labels them.
pub const VERDICTS: [&str; 3] = ["approved", "edited", "rejected"];

/// A metric change a plain-Rust module asks the adapter to make: add `value` to a
/// counter, or set a gauge to it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MetricUpdate {
    pub kind: Kind,
    pub name: String,
    pub value: i64,
}

/// The operating-model series a policy can produce, at zero (see [`startup_series`]).
fn operating_series(policy: &Policy) -> Vec<(Kind, String)> {
    let mut out = Vec::new();
    let verdicts = policy.kill_switch.is_some();
    for wf in &policy.workflows {
        let w = [("workflow", wf.name.as_str())];
        if verdicts {
            for v in VERDICTS {
                let labels = [("workflow", wf.name.as_str()), ("verdict", v)];
                out.push((Kind::Counter, stat_name(REVIEWS.name, &labels)));
            }
            out.push((Kind::Gauge, stat_name(REVIEWS_PENDING.name, &w)));
            out.push((Kind::Gauge, stat_name(REVIEW_OLDEST_PENDING.name, &w)));
            out.push((Kind::Counter, stat_name(REVIEW_WAIT.name, &w)));
            out.push((Kind::Counter, stat_name(REVIEW_SPENT.name, &w)));
            out.push((Kind::Gauge, stat_name(REVIEW_APPROVAL.name, &w)));
        }
        if let Some(rs) = &wf.review_signals {
            for s in rs.names() {
                let labels = [("workflow", wf.name.as_str()), ("signal", s)];
                out.push((Kind::Counter, stat_name(REVIEW_SIGNALS.name, &labels)));
            }
        }
        for kp in &wf.kill_points {
            let labels = [
                ("workflow", wf.name.as_str()),
                ("metric", kp.metric.as_str()),
            ];
            out.push((Kind::Counter, stat_name(KILL_POINTS.name, &labels)));
        }
    }
    out
}

/// Requests refused by a rate limit (`tokens(…)`/`requests(…)`).
pub const RATE_LIMITED: Family = Family {
    name: "writ_rate_limited_total",
    kind: Kind::Counter,
    labels: &["clause", "measure", "scope", "window"],
    help: "Requests refused by a rate limit, by clause, measure (tokens or requests), scope and window.",
};

/// Every family, in the order `docs/metrics.md` lists them.
pub const FAMILIES: [Family; 20] = [
    REQUESTS,
    DECISIONS,
    SPEND,
    RESERVATIONS,
    ESCALATIONS,
    VERIFICATION_RATE,
    VERIFICATION_ASSUMED,
    KILL_SWITCH,
    BUDGET_ALERTS,
    DRIFT_ALERTS,
    TAGS,
    REVIEWS,
    REVIEWS_PENDING,
    REVIEW_OLDEST_PENDING,
    REVIEW_WAIT,
    REVIEW_SPENT,
    REVIEW_APPROVAL,
    REVIEW_SIGNALS,
    KILL_POINTS,
    RATE_LIMITED,
];

/// The families that carry the opt-in `team` and `user` labels.
pub const IDENTITY_LABELLED: [&str; 2] = [REQUESTS.name, SPEND.name];

/// Every outcome of `writ_requests_total`.
pub const OUTCOMES: [&str; 5] = ["allowed", "denied", "stopped", "error", "admin"];
/// The `workflow` of a request outside every workflow (or naming none the policy has),
/// and the `team`/`user` of a request that carries none.
pub const NONE: &str = "none";
/// The `team`/`user` of every value past the configured maximum.
pub const OTHER: &str = "other";
/// The largest `max` a team or user label may be configured with.
pub const MAX_IDENTITY_VALUES: u32 = 1000;
/// Label values are cut to this many bytes.
const MAX_VALUE_LEN: usize = 128;

/// Every label name any family can carry (one Envoy tag specifier each), sorted.
pub fn label_names() -> Vec<&'static str> {
    let mut names: Vec<&'static str> = FAMILIES
        .iter()
        .flat_map(|f| f.labels.iter().copied())
        .chain(["team", "user"])
        .collect();
    names.sort_unstable();
    names.dedup();
    names
}

/// The Envoy `stats_tags` regex that extracts label `name` from writ's stat names: the
/// first group (`;name=value`) is cut from the name, the second is the tag's value.
pub fn envoy_tag_regex(name: &str) -> String {
    format!(r"^wasmcustom\.writ_.*?(;{name}=([^;]*))")
}

/// A label value made safe for the convention: `[A-Za-z0-9._:/@+=-]` kept, anything else
/// (`;` above all) as `_`, at most 128 bytes, never empty (an empty value is `_`).
pub fn label_value(value: &str) -> String {
    let mut v = String::with_capacity(value.len().clamp(1, MAX_VALUE_LEN));
    push_label_value(&mut v, value);
    v
}

/// Appends [`label_value`]`(value)` to `out`, without a string of its own (stat names are
/// built on every request).
fn push_label_value(out: &mut String, value: &str) {
    let start = out.len();
    // Every character written is one ASCII byte, so MAX_VALUE_LEN characters are as
    // many bytes.
    for c in value.chars().take(MAX_VALUE_LEN) {
        out.push(if c.is_ascii_alphanumeric() || "._:/@+=-".contains(c) {
            c
        } else {
            '_'
        });
    }
    if out.len() == start {
        out.push('_');
    }
}

/// The stat name of one series: `family;label=value;…`, values through [`label_value`].
pub fn stat_name<K: AsRef<str>, V: AsRef<str>>(family: &str, labels: &[(K, V)]) -> String {
    let len = labels.iter().fold(family.len(), |n, (k, v)| {
        n + k.as_ref().len() + v.as_ref().len().clamp(1, MAX_VALUE_LEN) + 2
    });
    let mut out = String::with_capacity(len);
    out.push_str(family);
    for (k, v) in labels {
        out.push(';');
        out.push_str(k.as_ref());
        out.push('=');
        push_label_value(&mut out, v.as_ref());
    }
    out
}

/// The `writ_budget_alerts_total` series of a budget alert: its rule's clause and the
/// budget's scope and window (`None` for an alert of no budget rule, which
/// [`spend::budgets`] never produces).
pub fn budget_alert_name(policy: &Policy, alert: &spend::Alert) -> Option<String> {
    let rule = alert.rule?;
    let budget = spend::budgets(policy)
        .into_iter()
        .find(|b| b.rule == rule)?;
    let clause = policy.rules.get(rule)?.clause.as_str();
    let labels = [
        ("clause", clause),
        ("scope", spend::scope_name(budget.scope)),
        ("window", crate::calendar::window_name(budget.window)),
    ];
    Some(stat_name(BUDGET_ALERTS.name, &labels))
}

/// The `writ_rate_limited_total` series of a request refused by limit rule `rule`
/// (`None` when the rule is not a limit rule of [`crate::rate_limit::limits`]).
pub fn rate_limited_name(policy: &Policy, rule: usize) -> Option<String> {
    let limit = crate::rate_limit::limits(policy)
        .into_iter()
        .find(|l| l.rule == rule && !l.monitor)?;
    rate_limited_series(policy, &limit)
}

fn rate_limited_series(policy: &Policy, limit: &crate::rate_limit::Limit) -> Option<String> {
    let clause = policy.rules.get(limit.rule)?.clause.as_str();
    let labels = [
        ("clause", clause),
        ("measure", crate::rate_limit::measure_name(limit.measure)),
        ("scope", spend::scope_name(limit.scope)),
        ("window", crate::rate_limit::window_name(limit.window)),
    ];
    Some(stat_name(RATE_LIMITED.name, &labels))
}

/// Splits a stat name of the convention into its family and labels; `None` when a label
/// part has no `=`.
pub fn parse_stat_name(name: &str) -> Option<(&str, Vec<(&str, &str)>)> {
    let mut parts = name.split(';');
    let family = parts.next()?;
    let labels = parts
        .map(|p| p.split_once('='))
        .collect::<Option<Vec<_>>>()?;
    Some((family, labels))
}

/// The `workflow` label of a request: its workflow when the policy has it, else
/// [`NONE`] (a kill-switch call may name anything; labels stay bounded by the policy).
pub fn workflow_label<'p>(policy: &'p Policy, workflow: Option<&str>) -> &'p str {
    workflow
        .and_then(|w| policy.workflows.iter().find(|x| x.name == w))
        .map_or(NONE, |w| w.name.as_str())
}

/// The opt-in identity labels (plugin configuration `metrics`), each with its cap.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct IdentityLabels {
    /// `metrics.team_label.max`: the `team` label is on, with at most this many values.
    pub team: Option<u32>,
    /// `metrics.user_label.max`: the `user` label is on, with at most this many values.
    pub user: Option<u32>,
}

impl IdentityLabels {
    /// Reads `{"team_label": {"max": N}, "user_label": {"max": N}}`; a malformed part is
    /// reported and left off (the label stays off: no setting can unbound cardinality).
    pub fn parse(v: Option<&serde_json::Value>, problems: &mut Vec<String>) -> IdentityLabels {
        let mut out = IdentityLabels::default();
        let Some(v) = v.filter(|v| !v.is_null()) else {
            return out;
        };
        let Some(obj) = v.as_object() else {
            problems.push("`metrics` must be an object".into());
            return out;
        };
        for (key, slot) in [("team_label", &mut out.team), ("user_label", &mut out.user)] {
            match obj.get(key) {
                None | Some(serde_json::Value::Null) => {}
                Some(l) => match l.get("max").and_then(serde_json::Value::as_u64) {
                    Some(n) if (1..=u64::from(MAX_IDENTITY_VALUES)).contains(&n) => {
                        *slot = Some(n as u32);
                    }
                    _ => problems.push(format!(
                        "`metrics.{key}` must be {{\"max\": N}} with N from 1 to {MAX_IDENTITY_VALUES}; the label stays off"
                    )),
                },
            }
        }
        out
    }

    /// The identity labels on, with their caps, `team` first.
    pub fn enabled(&self) -> Vec<(&'static str, u32)> {
        [("team", self.team), ("user", self.user)]
            .into_iter()
            .filter_map(|(k, m)| Some((k, m?)))
            .collect()
    }
}

/// The values of one identity label admitted so far, shared by every worker.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct Admitted(Vec<String>);

impl Stored for Admitted {
    fn encode(&self) -> Vec<u8> {
        self.0.join("\n").into_bytes()
    }
    fn decode(bytes: &[u8]) -> Option<Self> {
        let text = std::str::from_utf8(bytes).ok()?;
        Some(Admitted(
            text.split('\n')
                .filter(|v| !v.is_empty())
                .map(str::to_string)
                .collect(),
        ))
    }
}

/// The shared-data key of the values admitted for identity label `label`.
fn admitted_key(label: &str) -> String {
    format!("writ/metrics/{label}")
}

/// The value label `label` gets for `value`: [`NONE`] when absent; the value itself when
/// it is among the first `max` distinct values seen by any worker (admitted in shared
/// data, CAS); else [`OTHER`], also when the store is contended or corrupt.
pub fn bounded_label(
    store: &dyn SharedStore,
    label: &str,
    max: u32,
    value: Option<&str>,
) -> String {
    let Some(value) = value.filter(|v| !v.is_empty()) else {
        return NONE.into();
    };
    let value = label_value(value);
    if value == NONE || value == OTHER {
        return value;
    }
    let admitted = store::update(store, &admitted_key(label), |a: &Admitted| {
        if a.0.contains(&value) {
            Step::Keep(true)
        } else if a.0.len() < max as usize {
            let mut next = a.clone();
            next.0.push(value.clone());
            Step::Write(next, true)
        } else {
            Step::Keep(false)
        }
    });
    if admitted == Ok(true) {
        value
    } else {
        OTHER.into()
    }
}

/// One series to define at start-up, with the value a gauge is set to (`None`: define
/// only, keeping what other workers recorded).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Series {
    pub kind: Kind,
    pub name: String,
    pub set: Option<u64>,
}

/// The workflow labels a policy can produce: its workflows, then [`NONE`].
fn workflow_labels(policy: &Policy) -> Vec<&str> {
    policy
        .workflows
        .iter()
        .map(|w| w.name.as_str())
        .chain([NONE])
        .collect()
}

/// Every series the policy can produce, so each exists at zero before the first request:
/// each workflow × outcome (× `none`/`other` of each identity label on), each rule's
/// clause × action × mode, each workflow × review queue, each budget alert, each enforced
/// rate limit, each tag, and
/// the gauges (the kill switch and the verification rate of the day of `unix_secs` read
/// from `store`, so a new worker or a reloaded host shows the current state).
pub fn startup_series(
    policy: &Policy,
    identity: IdentityLabels,
    store: &dyn SharedStore,
    unix_secs: i64,
) -> Vec<Series> {
    let mut out: Vec<Series> = Vec::new();
    let mut add = |kind: Kind, name: String, set: Option<u64>| {
        if !out.iter().any(|s| s.name == name) {
            out.push(Series { kind, name, set });
        }
    };
    let workflows = workflow_labels(policy);
    // The identity labels' start values: none and other (each value seen later adds one).
    let mut identities: Vec<Vec<(&str, &str)>> = vec![vec![]];
    for (label, _) in identity.enabled() {
        identities = identities
            .into_iter()
            .flat_map(|base| {
                [NONE, OTHER].map(|v| {
                    let mut l = base.clone();
                    l.push((label, v));
                    l
                })
            })
            .collect();
    }
    for w in &workflows {
        for ids in &identities {
            for o in OUTCOMES {
                let mut labels = vec![("workflow", *w), ("outcome", o)];
                labels.extend(ids.iter().copied());
                add(Kind::Counter, stat_name(REQUESTS.name, &labels), None);
            }
            let mut labels = vec![("workflow", *w)];
            labels.extend(ids.iter().copied());
            add(Kind::Counter, stat_name(SPEND.name, &labels), None);
        }
    }
    for (i, r) in policy.rules.iter().enumerate() {
        let action = crate::eval::ActionKind::of(&r.action).as_str();
        let mode = if crate::eval::is_monitor(policy, i) {
            "monitor"
        } else {
            "enforce"
        };
        let labels = [
            ("clause", r.clause.as_str()),
            ("action", action),
            ("mode", mode),
        ];
        add(Kind::Counter, stat_name(DECISIONS.name, &labels), None);
        if let ir::Action::Tag { key, value } = &r.action {
            let labels = [("key", key.as_str()), ("value", value.as_str())];
            add(Kind::Counter, stat_name(TAGS.name, &labels), None);
        }
    }
    for q in review_queues(policy) {
        for w in &workflows {
            let labels = [("workflow", *w), ("queue", q.as_str())];
            add(Kind::Counter, stat_name(ESCALATIONS.name, &labels), None);
        }
    }
    for b in spend::budgets(policy) {
        if b.alert_at.is_none() {
            continue;
        }
        let Some(rule) = policy.rules.get(b.rule) else {
            continue;
        };
        let labels = [
            ("clause", rule.clause.as_str()),
            ("scope", spend::scope_name(b.scope)),
            ("window", crate::calendar::window_name(b.window)),
        ];
        add(Kind::Counter, stat_name(BUDGET_ALERTS.name, &labels), None);
    }
    for l in crate::rate_limit::limits(policy)
        .iter()
        .filter(|l| !l.monitor)
    {
        if let Some(name) = rate_limited_series(policy, l) {
            add(Kind::Counter, name, None);
        }
    }
    for wf in &policy.workflows {
        let labels = [("workflow", wf.name.as_str())];
        let window = oversight::DriftConfig::default().window;
        let key = oversight::rate_key(&wf.name, window, unix_secs);
        let today = store::read::<oversight::RateCounts>(store, &key)
            .ok()
            .filter(|c| c.total > 0)
            .map(|c| ppm(c.rate()));
        add(
            Kind::Gauge,
            stat_name(VERIFICATION_RATE.name, &labels),
            today,
        );
        if let Some(assumed) = wf.assumed_verification_rate {
            add(
                Kind::Gauge,
                stat_name(VERIFICATION_ASSUMED.name, &labels),
                Some(ppm(assumed)),
            );
            add(Kind::Counter, stat_name(DRIFT_ALERTS.name, &labels), None);
        }
    }
    add(Kind::Gauge, RESERVATIONS.name.to_string(), None);
    for (name, stopped) in kill_switch_gauges(policy, store) {
        add(Kind::Gauge, name, Some(stopped));
    }
    for (kind, name) in operating_series(policy) {
        add(kind, name, None);
    }
    out
}

/// A fraction 0..=1 in parts per million, clamped.
pub fn ppm(fraction: f64) -> u64 {
    (fraction.clamp(0.0, 1.0) * 1_000_000.0).round() as u64
}

/// The review queues escalations can name: each escalate rule's, then the oversight
/// mode's default (the first rule's queue, else `oversight`), then the queues of the
/// workflows' fallback human-only paths.
pub fn review_queues(policy: &Policy) -> Vec<String> {
    let mut queues: Vec<String> = Vec::new();
    for r in &policy.rules {
        if let ir::Action::Escalate { queue, .. } = &r.action
            && !queues.contains(queue)
        {
            queues.push(queue.clone());
        }
    }
    if queues.is_empty() {
        queues.push("oversight".into());
    }
    // A fallback's human-only path hands off too (`fallback … to human "queue"`).
    let human = policy
        .workflows
        .iter()
        .filter_map(|w| w.fallback.as_ref())
        .flat_map(|f| &f.steps);
    for step in human {
        if let ir::FallbackStep::Human { queue } = step
            && !queues.contains(queue)
        {
            queues.push(queue.clone());
        }
    }
    queues
}

/// `writ_kill_switch_stopped` of each workflow (and of [`NONE`], stopped only by `*`) as
/// the store has it now: empty when the policy has no kill switch.
pub fn kill_switch_gauges(policy: &Policy, store: &dyn SharedStore) -> Vec<(String, u64)> {
    if policy.kill_switch.is_none() {
        return Vec::new();
    }
    policy
        .workflows
        .iter()
        .map(|w| Some(w.name.as_str()))
        .chain([None])
        .map(|w| {
            let stopped = kill_switch::is_stopped(store, w);
            let labels = [("workflow", w.unwrap_or(NONE))];
            (stat_name(KILL_SWITCH.name, &labels), u64::from(stopped))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::panic)]
    use super::*;
    use crate::store::MemoryStore;

    #[test]
    fn stat_names_round_trip_and_values_cannot_forge_labels() {
        let name = stat_name(
            DECISIONS.name,
            &[
                ("clause", "AIP-1.2"),
                ("action", "deny;mode=x"),
                ("mode", ""),
            ],
        );
        assert_eq!(
            name,
            "writ_decisions_total;clause=AIP-1.2;action=deny_mode=x;mode=_"
        );
        let (family, labels) = parse_stat_name(&name).unwrap();
        assert_eq!(family, "writ_decisions_total");
        assert_eq!(
            labels,
            [
                ("clause", "AIP-1.2"),
                ("action", "deny_mode=x"),
                ("mode", "_")
            ]
        );
        assert_eq!(parse_stat_name("plain"), Some(("plain", vec![])));
        assert_eq!(parse_stat_name("x;novalue"), None);
        assert_eq!(label_value(&"é".repeat(200)).len(), 128);
    }

    #[test]
    fn every_label_has_an_envoy_regex_scoped_to_writ_stats() {
        let names = label_names();
        assert!(names.contains(&"clause") && names.contains(&"team"));
        // The regex as Envoy applies it (search; group 1 cut, group 2 the value).
        let stat = format!(
            "wasmcustom.{}",
            stat_name(
                DECISIONS.name,
                &[
                    ("clause", "A-1.2=x"),
                    ("action", "deny"),
                    ("mode", "enforce")
                ]
            )
        );
        let re = envoy_tag_regex("clause");
        assert!(re.starts_with(r"^wasmcustom\.writ_"));
        assert!(re.ends_with("(;clause=([^;]*))"));
        // What Envoy cuts (group 1): from `;clause=` up to the next `;`, which only a
        // label boundary can hold (the real extraction is checked in `tests/all/metrics.rs`).
        let start = stat.find(";clause=").unwrap();
        let end = stat[start + 1..]
            .find(';')
            .map_or(stat.len(), |e| start + 1 + e);
        assert_eq!(&stat[start..end], ";clause=A-1.2=x");
    }

    #[test]
    fn the_n_plus_first_team_goes_to_other() {
        let store = MemoryStore::new();
        for i in 0..3 {
            let team = format!("t{i}");
            assert_eq!(bounded_label(&store, "team", 3, Some(&team)), team);
        }
        assert_eq!(bounded_label(&store, "team", 3, Some("t3")), OTHER);
        // Admitted values stay admitted; absence is `none`.
        assert_eq!(bounded_label(&store, "team", 3, Some("t1")), "t1");
        assert_eq!(bounded_label(&store, "team", 3, None), NONE);
        assert_eq!(bounded_label(&store, "team", 3, Some("")), NONE);
        // Another label has its own cap.
        assert_eq!(bounded_label(&store, "user", 1, Some("u")), "u");
        assert_eq!(bounded_label(&store, "user", 1, Some("v")), OTHER);
    }

    fn policy() -> Policy {
        use crate::ir::*;
        let rule = |clause: &str, action: Action, enforcement: Enforcement| Rule {
            clause: clause.into(),
            title: String::new(),
            phase: Phase::Request,
            condition: Expr::Const(true),
            action,
            enforcement,
            alert_at_percent: None,
            line: 1,
        };
        Policy {
            name: "p".into(),
            version: "1.0.0".into(),
            source_sha256: "00".into(),
            currency: "EUR".into(),
            enforcement: Enforcement::Enforce,
            workflows: vec![Workflow {
                name: "support desk".into(),
                matcher: Expr::Const(true),
                oversight: Oversight::Hitl,
                assumed_verification_rate: Some(0.25),
                team: None,
                user: None,
                scan_headers: vec![],
                scan_query: false,
                business_case: Default::default(),
                kill_points: Vec::new(),
                review_signals: None,
                handoff_output: false,
                fallback: None,
            }],
            prices: vec![],
            detectors: vec![],
            rules: vec![
                rule(
                    "AIP-3.1",
                    Action::Deny {
                        status: 403,
                        message: "no".into(),
                    },
                    Enforcement::Monitor,
                ),
                rule(
                    "AIP-4.1",
                    Action::Tag {
                        key: "cost-center".into(),
                        value: "cs".into(),
                    },
                    Enforcement::Enforce,
                ),
            ],
            kill_switch: Some(KillSwitch {
                clause: None,
                admin_path: "/k".into(),
                token_sha256: "00".into(),
            }),
        }
    }

    #[test]
    fn startup_series_cover_the_policy_and_read_the_gauges_from_the_store() {
        let store = MemoryStore::new();
        // Every workflow stopped before this VM started.
        store
            .set(
                &kill_switch::state_key(kill_switch::ALL_WORKFLOWS),
                b"S{}",
                0,
            )
            .unwrap();
        // Today's verification rate so far: 1 of 4 outputs escalated.
        let now = 1_800_000_000;
        let key = oversight::rate_key(
            "support desk",
            oversight::DriftConfig::default().window,
            now,
        );
        for escalated in [true, false, false, false] {
            oversight::record_outcome(
                &store,
                "support desk",
                escalated,
                None,
                Default::default(),
                now,
            )
            .unwrap();
        }
        assert!(store.get(&key).is_some());
        let series = startup_series(&policy(), IdentityLabels::default(), &store, now);
        let find = |name: &str| series.iter().find(|s| s.name == name).cloned();
        let names: Vec<&str> = series.iter().map(|s| s.name.as_str()).collect();
        // 2 workflow labels x 5 outcomes, 2 spend, 2 decisions, 1 tag, 2 escalation
        // queues, rate + assumed + drift, reservations, 2 kill-switch gauges, and with the
        // kill switch's verdict endpoint 3 verdicts + pending, oldest, wait, spent, approval.
        assert_eq!(
            series.len(),
            10 + 2 + 2 + 1 + 2 + 3 + 1 + 2 + 8,
            "{names:?}"
        );
        for name in [
            "writ_reviews_total;workflow=support_desk;verdict=edited",
            "writ_review_time_to_verdict_seconds_total;workflow=support_desk",
            "writ_requests_total;workflow=support_desk;outcome=stopped",
            "writ_requests_total;workflow=none;outcome=error",
            "writ_decisions_total;clause=AIP-3.1;action=deny;mode=monitor",
            "writ_tags_total;key=cost-center;value=cs",
            "writ_escalations_total;workflow=none;queue=oversight",
            "writ_spend_micros_total;workflow=support_desk",
        ] {
            let s = find(name).unwrap_or_else(|| panic!("{name} in {names:?}"));
            assert_eq!((s.kind, s.set), (Kind::Counter, None), "{name}");
        }
        let gauge = |name: &str| find(name).map(|s| (s.kind, s.set));
        assert_eq!(
            gauge("writ_verification_assumed_ppm;workflow=support_desk"),
            Some((Kind::Gauge, Some(250_000)))
        );
        assert_eq!(
            gauge("writ_verification_rate_ppm;workflow=support_desk"),
            Some((Kind::Gauge, Some(250_000)))
        );
        assert_eq!(
            gauge("writ_kill_switch_stopped;workflow=support_desk"),
            Some((Kind::Gauge, Some(1)))
        );
        assert_eq!(
            gauge("writ_kill_switch_stopped;workflow=none"),
            Some((Kind::Gauge, Some(1)))
        );
        // The identity labels add `none` and `other` to the families that carry them.
        let with_team = startup_series(
            &policy(),
            IdentityLabels {
                team: Some(5),
                user: Some(5),
            },
            &store,
            now,
        );
        assert_eq!(with_team.len(), series.len() + 3 * (10 + 2));
        assert!(
            with_team.iter().any(|s| s.name
                == "writ_requests_total;workflow=none;outcome=allowed;team=other;user=none")
        );
        // Every family a series belongs to is a declared one, with the declared labels.
        for s in &with_team {
            let (family, labels) = parse_stat_name(&s.name).unwrap();
            let f = FAMILIES.iter().find(|f| f.name == family).unwrap();
            assert_eq!(f.kind, s.kind, "{}", s.name);
            let names: Vec<&str> = labels.iter().map(|(k, _)| *k).collect();
            assert!(names.starts_with(f.labels), "{}", s.name);
        }
    }

    #[test]
    fn identity_label_settings_are_bounded() {
        let mut p = Vec::new();
        let v = serde_json::json!({"team_label": {"max": 50}, "user_label": {"max": 0}});
        let l = IdentityLabels::parse(Some(&v), &mut p);
        assert_eq!(
            l,
            IdentityLabels {
                team: Some(50),
                user: None
            }
        );
        assert_eq!(p.len(), 1, "{p:?}");
        let v = serde_json::json!({"team_label": {"max": 100000}});
        assert_eq!(IdentityLabels::parse(Some(&v), &mut p).team, None);
        assert_eq!(
            IdentityLabels::parse(None, &mut p),
            IdentityLabels::default()
        );
        assert_eq!(
            IdentityLabels::parse(Some(&serde_json::json!(3)), &mut p),
            IdentityLabels::default()
        );
    }
}
