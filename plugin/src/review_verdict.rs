//! Review outcomes on the wire: the gateway remembers each escalation it hands to a human,
//! a reviewer (or the review tool) posts the verdict back to an admin path, and the
//! gateway records it, measures the review queue and raises rubber-stamp signals.
//!
//! - The path is [`REVIEWS_PATH`], answered by the filter itself when the policy has a
//!   kill switch, and authenticated by the kill switch's bearer token (the same sha256
//!   comparison, [`crate::kill_switch::authorized`]).
//! - State lives in shared data, like the kill switch: one item per escalation
//!   (`writ/review/item/<review_id>`), one queue summary per workflow
//!   (`writ/review/wf/<workflow>`), its oldest pending review ids
//!   (`writ/review/pending/<workflow>`, see [`PendingList`]), and one day of verdicts per
//!   workflow for the signals (`writ/review/day/<workflow>/<date>`). Alone, a verdict
//!   reaches only the gateway instance that escalated (since its last restart); any other
//!   answers 404 `unknown_review`. In a fleet the session claims the review in the store
//!   first (`session/verdict.rs`, `fleet::reviews`), then records it here ([`accept`]).
//! - Every verdict call, refused ones included, is one audit record (`event:
//!   review_verdict`); an accepted one carries the escalated request's id and the review
//!   id, so it joins the request's own record.
//!
//! Plain Rust with no host calls: the filter passes the call in and carries out the
//! [`VerdictResponse`] (reply, audit record, metric updates).

use crate::audit::{AuditRecord, VerdictRecord};
use crate::calendar::{bucket, rfc3339};
use crate::ir::{Policy, ReviewSignals, Window};
use crate::metrics::{self, Kind, MetricUpdate};
use crate::store::{self, SharedStore, Step, StoreError, Stored};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::ops::Range;

/// The admin path verdicts are posted to.
pub const REVIEWS_PATH: &str = "/writ/admin/reviews";

/// Escalations a workflow's queue summary lists by age; past it the oldest-pending gauge
/// is a lower bound (the counts stay exact).
pub const MAX_LISTED_PENDING: usize = 256;

/// Reviewers a day's record tells apart; later ones count together as `other`.
pub const MAX_REVIEWERS: usize = 64;

/// The longest review a verdict may report (a week, in seconds).
pub const MAX_SECONDS: f64 = 7.0 * 86_400.0;

/// Whether a request is for the verdict endpoint (the path without its query string).
pub fn is_reviews_path(path: &str) -> bool {
    path.split('?').next() == Some(REVIEWS_PATH)
}

/// A value kept as JSON in shared data (these records are small and rarely written).
macro_rules! json_stored {
    ($t:ty) => {
        impl Stored for $t {
            fn encode(&self) -> Vec<u8> {
                serde_json::to_vec(self).unwrap_or_default()
            }
            fn decode(bytes: &[u8]) -> Option<Self> {
                serde_json::from_slice(bytes).ok()
            }
        }
    };
}

/// One escalation, by review id.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ReviewItem {
    pub workflow: String,
    pub request_id: String,
    /// Unix seconds of the escalation.
    pub at: i64,
    /// The verdict, once posted.
    pub verdict: Option<String>,
}
json_stored!(ReviewItem);

/// A workflow's review queue on this gateway since it started: counts only, so the
/// update every escalation and verdict makes stays a few dozen bytes of JSON.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct QueueSummary {
    pub escalated: u64,
    pub reviewed: u64,
    pub approved: u64,
    pub wait_secs: i64,
    pub spent_secs: f64,
}
json_stored!(QueueSummary);

/// The oldest pending escalations of a workflow, oldest first, at most
/// [`MAX_LISTED_PENDING`]: only the oldest-pending gauge reads them.
///
/// Kept apart from [`QueueSummary`] and as raw `"<unix secs> <review id>\n"` lines, so an
/// escalation appends a line and a verdict cuts one out without decoding the list: as
/// JSON inside the summary, a full list cost each escalated request about 650,000
/// instructions of decoding, cloning and encoding (`benches/README.md`).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PendingList {
    lines: Vec<u8>,
}

impl Stored for PendingList {
    fn encode(&self) -> Vec<u8> {
        self.lines.clone()
    }
    fn decode(bytes: &[u8]) -> Option<Self> {
        // Only this module writes the key, a whole line at a time.
        (bytes.is_empty() || bytes.ends_with(b"\n")).then(|| PendingList {
            lines: bytes.to_vec(),
        })
    }
}

/// A review id as a line holds it: a line must stay one line with one space. Review ids
/// are the gateway's own (`rev-<hex>`), so this changes none in practice.
fn line_id(review_id: &str) -> String {
    review_id.replace(['\n', ' '], "_")
}

impl PendingList {
    /// Each line's bytes in `lines`, newline included, with what it lists: (unix seconds,
    /// review id), or `None` for a line that does not parse.
    fn entries(&self) -> impl Iterator<Item = (Range<usize>, Option<(i64, &str)>)> + '_ {
        let mut start = 0;
        self.lines
            .split_inclusive(|&b| b == b'\n')
            .map(move |line| {
                let at = start..start + line.len();
                start = at.end;
                let entry = std::str::from_utf8(line).ok().and_then(|l| {
                    let (secs, id) = l.strip_suffix('\n')?.split_once(' ')?;
                    Some((secs.parse().ok()?, id))
                });
                (at, entry)
            })
    }

    /// How many escalations are listed.
    pub fn len(&self) -> usize {
        self.lines.iter().filter(|&&b| b == b'\n').count()
    }

    /// Whether none is listed.
    pub fn is_empty(&self) -> bool {
        self.lines.is_empty()
    }

    /// The oldest listed escalation's unix seconds, 0 when none is listed.
    pub fn oldest(&self) -> i64 {
        self.entries()
            .next()
            .and_then(|(_, e)| e)
            .map_or(0, |(at, _)| at)
    }

    /// Lists an escalation at the end (the newest); false when the list is full.
    fn push(&mut self, unix_secs: i64, review_id: &str) -> bool {
        if self.len() >= MAX_LISTED_PENDING {
            return false;
        }
        let line = format!("{unix_secs} {}\n", line_id(review_id));
        self.lines.extend_from_slice(line.as_bytes());
        true
    }

    /// Takes a review id off the list; false when it was not listed.
    fn remove(&mut self, review_id: &str) -> bool {
        let id = line_id(review_id);
        let listed = self
            .entries()
            .find(|(_, e)| e.is_some_and(|(_, listed)| listed == id))
            .map(|(at, _)| at);
        match listed {
            Some(at) => {
                self.lines.drain(at);
                true
            }
            None => false,
        }
    }
}

impl QueueSummary {
    /// Escalations without a verdict.
    pub fn pending_count(&self) -> u64 {
        self.escalated.saturating_sub(self.reviewed)
    }

    /// The queue's gauges as metric updates; `oldest` is the oldest pending escalation's
    /// unix seconds (0 for none).
    fn gauges(&self, workflow: &str, oldest: i64) -> Vec<MetricUpdate> {
        let w = [("workflow", workflow)];
        let approval = if self.reviewed == 0 {
            0.0
        } else {
            self.approved as f64 / self.reviewed as f64
        };
        vec![
            gauge(
                metrics::REVIEWS_PENDING.name,
                &w,
                self.pending_count() as i64,
            ),
            gauge(metrics::REVIEW_OLDEST_PENDING.name, &w, oldest),
            gauge(
                metrics::REVIEW_APPROVAL.name,
                &w,
                metrics::ppm(approval) as i64,
            ),
        ]
    }
}

fn gauge(family: &str, labels: &[(&str, &str)], value: i64) -> MetricUpdate {
    MetricUpdate {
        kind: Kind::Gauge,
        name: metrics::stat_name(family, labels),
        value,
    }
}

fn counter(family: &str, labels: &[(&str, &str)], value: i64) -> MetricUpdate {
    MetricUpdate {
        kind: Kind::Counter,
        name: metrics::stat_name(family, labels),
        value,
    }
}

/// One workflow's verdicts of one UTC day, for the rubber-stamp signals.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct DayVerdicts {
    pub reviews: u64,
    pub approved: u64,
    /// Verdicts faster than the policy's median floor.
    pub fast: u64,
    pub by_reviewer: BTreeMap<String, u64>,
    /// Signals already raised today.
    pub raised: Vec<String>,
}
json_stored!(DayVerdicts);

/// Reviewers a fleet member publishes per day (its busiest): the fleet's share signal
/// sees at most this many names per instance (`docs/fleet.md`).
pub const PUBLISHED_REVIEWERS: usize = 16;

impl DayVerdicts {
    /// This day's counts with the rest of the fleet's added (reviewers by name); the
    /// raised flags stay this instance's.
    pub fn plus(&self, others: &DayVerdicts) -> DayVerdicts {
        let mut day = self.clone();
        day.reviews = day.reviews.saturating_add(others.reviews);
        day.approved = day.approved.saturating_add(others.approved);
        day.fast = day.fast.saturating_add(others.fast);
        for (who, n) in &others.by_reviewer {
            let c = day.by_reviewer.entry(who.clone()).or_insert(0);
            *c = c.saturating_add(*n);
        }
        day
    }

    /// The busiest [`PUBLISHED_REVIEWERS`] reviewers, busiest first (ties by name), without
    /// the [`metrics::OTHER`] bucket: what a fleet member publishes of its day.
    pub fn top_reviewers(&self) -> Vec<(&str, u64)> {
        let mut all: Vec<(&str, u64)> = self
            .by_reviewer
            .iter()
            .filter(|(r, _)| r.as_str() != metrics::OTHER)
            .map(|(r, n)| (r.as_str(), *n))
            .collect();
        all.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(b.0)));
        all.truncate(PUBLISHED_REVIEWERS);
        all
    }
}

fn item_key(review_id: &str) -> String {
    format!("writ/review/item/{}", store::key_segment(review_id))
}

/// The shared-data key of a workflow's review queue (published in a fleet).
pub(crate) fn queue_key(workflow: &str) -> String {
    format!("writ/review/wf/{}", store::key_segment(workflow))
}

/// The shared-data key of a workflow's oldest pending review ids.
fn pending_key(workflow: &str) -> String {
    format!("writ/review/pending/{}", store::key_segment(workflow))
}

/// The shared-data key of a workflow's verdicts of one day (published in a fleet).
pub(crate) fn day_key(workflow: &str, unix_secs: i64) -> String {
    format!(
        "writ/review/day/{}/{}",
        store::key_segment(workflow),
        bucket(Window::Day, unix_secs)
    )
}

/// Remembers an escalation so its verdict can be posted, and returns the queue's gauges.
/// A review id seen before (a retried handoff) is not counted twice.
pub fn record_escalation(
    store: &dyn SharedStore,
    workflow: &str,
    review_id: &str,
    request_id: &str,
    unix_secs: i64,
) -> Result<Vec<MetricUpdate>, StoreError> {
    let new = store::update(store, &item_key(review_id), |cur: &ReviewItem| {
        if !cur.request_id.is_empty() {
            return Step::Keep(false);
        }
        let item = ReviewItem {
            workflow: workflow.to_string(),
            request_id: request_id.to_string(),
            at: unix_secs,
            verdict: None,
        };
        Step::Write(item, true)
    })?;
    let summary = store::update(store, &queue_key(workflow), |q: &QueueSummary| {
        if !new {
            return Step::Keep(q.clone());
        }
        let mut next = q.clone();
        next.escalated = next.escalated.saturating_add(1);
        Step::Write(next.clone(), next)
    })?;
    let oldest = edit_pending(store, workflow, |p| new && p.push(unix_secs, review_id));
    Ok(summary.gauges(workflow, oldest))
}

/// Applies `edit` to a workflow's pending list (written when it says it changed the
/// list) and returns the oldest pending escalation's unix seconds after it. Called after
/// the counts are written: the list only feeds the oldest-pending gauge, so a store error
/// here costs that gauge one update (it reads the list as it stands, or 0), never a count.
fn edit_pending(
    store: &dyn SharedStore,
    workflow: &str,
    mut edit: impl FnMut(&mut PendingList) -> bool,
) -> i64 {
    let key = pending_key(workflow);
    store::update(store, &key, |p: &PendingList| {
        let mut next = p.clone();
        if edit(&mut next) {
            let oldest = next.oldest();
            Step::Write(next, oldest)
        } else {
            Step::Keep(p.oldest())
        }
    })
    .unwrap_or_else(|_| store::read::<PendingList>(store, &key).map_or(0, |p| p.oldest()))
}

/// Counts a verdict into its workflow's queue (the review is taken off the pending list)
/// and returns the queue's gauges; `wait` is the seconds it waited for a reviewer, and
/// `seconds` what the reviewer reported spending.
pub fn record_review(
    store: &dyn SharedStore,
    workflow: &str,
    review_id: &str,
    approved: bool,
    wait: i64,
    seconds: f64,
) -> Result<Vec<MetricUpdate>, StoreError> {
    let summary = store::update(store, &queue_key(workflow), |q: &QueueSummary| {
        let mut next = q.clone();
        next.reviewed = next.reviewed.saturating_add(1);
        next.approved = next.approved.saturating_add(u64::from(approved));
        next.wait_secs = next.wait_secs.saturating_add(wait);
        next.spent_secs += seconds;
        Step::Write(next.clone(), next)
    })?;
    let oldest = edit_pending(store, workflow, |p| p.remove(review_id));
    Ok(summary.gauges(workflow, oldest))
}

/// What the verdict endpoint answers, and what the filter must do with it.
#[derive(Debug, Clone, PartialEq)]
pub struct VerdictResponse {
    pub status: u16,
    /// JSON body.
    pub body: Vec<u8>,
    /// Extra response headers (`www-authenticate` on a 401).
    pub headers: Vec<(&'static str, String)>,
    /// The call's own audit record (`event: review_verdict`).
    pub audit: AuditRecord,
    /// Rubber-stamp signals raised by this verdict (`event: review_signal`).
    pub alerts: Vec<AuditRecord>,
    pub metrics: Vec<MetricUpdate>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct VerdictBody {
    review_id: String,
    reviewer: String,
    verdict: String,
    seconds: f64,
}

const BODY_SHAPE: &str = "expected {\"review_id\": \"rev-…\", \"reviewer\": \"…\", \"verdict\": \"approved\"|\"edited\"|\"rejected\", \"seconds\": N}";

/// Handles one verdict call: `POST` [`REVIEWS_PATH`] with `authorization: Bearer <token>`
/// (the kill switch's) and the JSON body `{"review_id", "reviewer", "verdict", "seconds"}`.
///
/// Answers 200 with the recorded verdict; 401 for a missing or wrong token (before the body
/// is read); 405 for another method; 400 `invalid_request` for a body that is not that
/// object (unknown fields included), `invalid_verdict` for another verdict,
/// `invalid_reviewer` for an empty or over-long reviewer, `invalid_seconds` for seconds
/// outside 0..=604800; 404 `unknown_review` for a review id this gateway did not
/// escalate; 409 `already_reviewed` for a second verdict; 503 `store_error` when shared
/// data could not be written. `None` when the policy has no kill switch (the path is then
/// an ordinary request).
pub fn handle(
    store: &dyn SharedStore,
    policy: &Policy,
    method: &str,
    authorization: Option<&str>,
    body: &[u8],
    unix_nanos: i64,
) -> Option<VerdictResponse> {
    handle_in_fleet(
        store,
        policy,
        method,
        authorization,
        body,
        unix_nanos,
        &|_| DayVerdicts::default(),
    )
}

/// [`handle`] for a fleet member: `others(day key)` gives the other instances' verdicts
/// of that workflow's day (`fleet::counters::others_day`), and the signals are judged on
/// the fleet's numbers, this instance's own plus theirs.
pub fn handle_in_fleet(
    store: &dyn SharedStore,
    policy: &Policy,
    method: &str,
    authorization: Option<&str>,
    body: &[u8],
    unix_nanos: i64,
    others: &dyn Fn(&str) -> DayVerdicts,
) -> Option<VerdictResponse> {
    let checked = match check(policy, method, authorization, body, unix_nanos)? {
        Ok(c) => c,
        Err(r) => return Some(*r),
    };
    match mark_local(store, &checked.review_id, &checked.verdict) {
        Ok(item) => Some(accept(store, policy, checked, item, unix_nanos, others)),
        Err(why) => Some(refuse(checked, why)),
    }
}

/// A verdict call that passed every check but the review's own: the parsed verdict and
/// its audit record so far.
#[derive(Debug, Clone)]
pub struct Checked {
    pub review_id: String,
    pub verdict: String,
    pub seconds: f64,
    record: VerdictRecord,
    audit: AuditRecord,
}

/// Why a review cannot take this verdict.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// No escalation by that id (on this gateway, or in the fleet's store).
    Unknown,
    /// It has a verdict already.
    Reviewed,
    /// Shared data (or the fleet store) could not be read or written.
    Store,
}

fn error_response(
    status: u16,
    message: &str,
    code: &str,
    outcome: &str,
    mut audit: AuditRecord,
) -> VerdictResponse {
    audit.status = status;
    audit.outcome = outcome.to_string();
    audit.detail = Some(message.to_string());
    let v = crate::kill_switch::admin_error(message, "review_error", code);
    VerdictResponse {
        status,
        body: serde_json::to_vec(&v).unwrap_or_default(),
        headers: if status == 401 {
            vec![("www-authenticate", "Bearer".to_string())]
        } else {
            Vec::new()
        },
        audit,
        alerts: Vec::new(),
        metrics: Vec::new(),
    }
}

/// The checks of a verdict call that need no state: the token, the method and the body.
/// `None` when the policy has no kill switch; `Err` with the answer to a bad call.
pub fn check(
    policy: &Policy,
    method: &str,
    authorization: Option<&str>,
    body: &[u8],
    unix_nanos: i64,
) -> Option<Result<Checked, Box<VerdictResponse>>> {
    let ks = policy.kill_switch.as_ref()?;
    let mut audit = AuditRecord {
        event: "review_verdict".into(),
        time: rfc3339(unix_nanos),
        policy: policy.name.clone(),
        policy_version: policy.version.clone(),
        source_sha256: policy.source_sha256.clone(),
        ..AuditRecord::default()
    };
    let error = |status: u16, message: &str, code: &str, outcome: &str, audit: AuditRecord| {
        Some(Err(Box::new(error_response(
            status, message, code, outcome, audit,
        ))))
    };
    if let Err(r) = crate::kill_switch::check_admin_call(ks, method, authorization) {
        return error(r.status, r.message, r.code, r.outcome, audit);
    }
    let parsed: VerdictBody = match serde_json::from_slice(body) {
        Ok(b) => b,
        Err(e) => {
            let msg = format!("{BODY_SHAPE}: {e}");
            return error(400, &msg, "invalid_request", "rejected", audit);
        }
    };
    let reviewer = parsed.reviewer.trim().to_string();
    let record = VerdictRecord {
        review_id: parsed.review_id.clone(),
        escalated_request_id: String::new(),
        reviewer: reviewer.chars().take(128).collect(),
        verdict: parsed.verdict.chars().take(32).collect(),
        seconds: if parsed.seconds.is_finite() {
            parsed.seconds
        } else {
            -1.0
        },
        wait_seconds: None,
    };
    audit.user = Some(record.reviewer.clone());
    audit.verdict = Some(record.clone());
    if !metrics::VERDICTS.contains(&parsed.verdict.as_str()) {
        let msg = format!(
            "unknown verdict `{}`; use `approved`, `edited` or `rejected`",
            record.verdict
        );
        return error(400, &msg, "invalid_verdict", "rejected", audit);
    }
    if reviewer.is_empty() || reviewer.len() > 128 {
        let msg = "`reviewer` must name who reviewed, in 1 to 128 bytes";
        return error(400, msg, "invalid_reviewer", "rejected", audit);
    }
    if !(0.0..=MAX_SECONDS).contains(&parsed.seconds) {
        let msg = "`seconds` must be a number from 0 to 604800 (a week)";
        return error(400, msg, "invalid_seconds", "rejected", audit);
    }
    Some(Ok(Checked {
        review_id: parsed.review_id,
        verdict: parsed.verdict,
        seconds: parsed.seconds,
        record,
        audit,
    }))
}

/// This gateway's own record of an escalation (`None` when it did not escalate it).
pub fn local_item(store: &dyn SharedStore, review_id: &str) -> Option<ReviewItem> {
    store::read::<ReviewItem>(store, &item_key(review_id))
        .ok()
        .filter(|i| !i.request_id.is_empty())
}

/// Marks the escalation reviewed in shared data: exactly one verdict wins.
pub fn mark_local(
    store: &dyn SharedStore,
    review_id: &str,
    verdict: &str,
) -> Result<ReviewItem, Refusal> {
    let marked = store::update(store, &item_key(review_id), |item: &ReviewItem| {
        if item.request_id.is_empty() {
            return Step::Keep(Err(Refusal::Unknown));
        }
        if item.verdict.is_some() {
            return Step::Keep(Err(Refusal::Reviewed));
        }
        let mut next = item.clone();
        next.verdict = Some(verdict.to_string());
        Step::Write(next.clone(), Ok(next))
    });
    marked.unwrap_or(Err(Refusal::Store))
}

/// The answer to a verdict the review could not take.
pub fn refuse(checked: Checked, why: Refusal) -> VerdictResponse {
    refuse_as(checked, why, false)
}

/// [`refuse`] on a fleet member, which looked the review up in the fleet's store.
pub fn refuse_in_fleet(checked: Checked, why: Refusal) -> VerdictResponse {
    refuse_as(checked, why, true)
}

fn refuse_as(checked: Checked, why: Refusal, fleet: bool) -> VerdictResponse {
    let audit = checked.audit;
    match why {
        Refusal::Unknown => {
            let msg = if fleet {
                format!(
                    "no gateway of the fleet escalated review `{}` (or the store has not had it for a week, or its escalation is not published yet: retry within a few seconds)",
                    checked.record.review_id
                )
            } else {
                format!(
                    "this gateway escalated no review `{}` (since it started)",
                    checked.record.review_id
                )
            };
            error_response(404, &msg, "unknown_review", "rejected", audit)
        }
        Refusal::Reviewed => {
            let msg = format!(
                "review `{}` already has a verdict",
                checked.record.review_id
            );
            error_response(409, &msg, "already_reviewed", "rejected", audit)
        }
        Refusal::Store if fleet => {
            let msg = "the fleet store could not be reached to record the verdict; retry";
            error_response(503, msg, "store_error", "error", audit)
        }
        Refusal::Store => {
            let msg = "could not record the verdict; retry";
            error_response(503, msg, "store_error", "error", audit)
        }
    }
}

/// Records a verdict its review took (`item`: the escalation, marked): the queue, the
/// metrics, the day's signals, and the 200 answer.
pub fn accept(
    store: &dyn SharedStore,
    policy: &Policy,
    checked: Checked,
    item: ReviewItem,
    unix_nanos: i64,
    others: &dyn Fn(&str) -> DayVerdicts,
) -> VerdictResponse {
    let Checked {
        review_id,
        verdict,
        seconds,
        mut record,
        mut audit,
    } = checked;
    let now = unix_nanos.div_euclid(1_000_000_000);
    let wait = now.saturating_sub(item.at).max(0);
    record.escalated_request_id = item.request_id.clone();
    record.wait_seconds = Some(wait);
    audit.workflow = Some(item.workflow.clone());
    audit.verdict = Some(record.clone());
    let approved = verdict == "approved";
    let mut updates = Vec::new();
    match record_review(store, &item.workflow, &review_id, approved, wait, seconds) {
        Ok(gauges) => updates.extend(gauges),
        Err(_) => {
            // The verdict itself is recorded (the item); only the summary missed it.
        }
    }
    let wf = item.workflow.as_str();
    updates.push(counter(
        metrics::REVIEWS.name,
        &[("workflow", wf), ("verdict", verdict.as_str())],
        1,
    ));
    updates.push(counter(
        metrics::REVIEW_WAIT.name,
        &[("workflow", wf)],
        wait,
    ));
    updates.push(counter(
        metrics::REVIEW_SPENT.name,
        &[("workflow", wf)],
        seconds.round() as i64,
    ));
    let mut alerts = Vec::new();
    let signals = policy
        .workflows
        .iter()
        .find(|w| w.name == item.workflow)
        .and_then(|w| w.review_signals.as_ref());
    if let Some(rs) = signals {
        let fleet = others(&day_key(wf, now));
        for raised in judge_day(store, wf, rs, &record, approved, now, &fleet) {
            updates.push(counter(
                metrics::REVIEW_SIGNALS.name,
                &[("workflow", wf), ("signal", raised.signal)],
                1,
            ));
            alerts.push(AuditRecord {
                event: "review_signal".into(),
                time: rfc3339(unix_nanos),
                workflow: Some(wf.to_string()),
                policy: policy.name.clone(),
                policy_version: policy.version.clone(),
                source_sha256: policy.source_sha256.clone(),
                outcome: "alert".into(),
                signal: Some(raised.signal.to_string()),
                detail: Some(raised.detail),
                ..AuditRecord::default()
            });
        }
    }
    audit.status = 200;
    audit.outcome = "reviewed".into();
    let value = serde_json::json!({
        "review_id": record.review_id,
        "request_id": record.escalated_request_id,
        "workflow": wf,
        "reviewer": record.reviewer,
        "verdict": record.verdict,
        "seconds": record.seconds,
        "wait_seconds": wait,
    });
    VerdictResponse {
        status: 200,
        body: serde_json::to_vec(&value).unwrap_or_default(),
        headers: Vec::new(),
        audit,
        alerts,
        metrics: updates,
    }
}

/// A rubber-stamp signal raised.
#[derive(Debug, Clone, PartialEq)]
pub struct Raised {
    pub signal: &'static str,
    pub detail: String,
}

/// Counts a verdict into its workflow's day and judges the signals on it, once
/// `min_reviews` verdicts came in; each signal is raised at most once per day (the flag is
/// set by the same CAS as the count). A store error raises nothing (the verdict stands).
///
/// `others` is the rest of the fleet's day (empty for a lone gateway): the signals are
/// judged on this instance's count plus theirs, so verdicts spread over the fleet add up.
pub fn judge_day(
    store: &dyn SharedStore,
    workflow: &str,
    rs: &ReviewSignals,
    verdict: &VerdictRecord,
    approved: bool,
    unix_secs: i64,
    others: &DayVerdicts,
) -> Vec<Raised> {
    let result = store::update(store, &day_key(workflow, unix_secs), |d: &DayVerdicts| {
        let mut next = d.clone();
        next.reviews = next.reviews.saturating_add(1);
        next.approved = next.approved.saturating_add(u64::from(approved));
        if rs
            .median_review_secs_below
            .is_some_and(|floor| verdict.seconds < floor)
        {
            next.fast = next.fast.saturating_add(1);
        }
        let who = if next.by_reviewer.contains_key(&verdict.reviewer)
            || next.by_reviewer.len() < MAX_REVIEWERS
        {
            verdict.reviewer.clone()
        } else {
            metrics::OTHER.to_string()
        };
        *next.by_reviewer.entry(who).or_insert(0) += 1;
        let day = next.plus(others);
        let mut raised = Vec::new();
        if day.reviews >= rs.min_reviews {
            let n = day.reviews as f64;
            let mut check = |name: &'static str, hit: bool, detail: String| {
                if hit && !next.raised.iter().any(|r| r == name) {
                    next.raised.push(name.to_string());
                    raised.push(Raised {
                        signal: name,
                        detail,
                    });
                }
            };
            if let Some(floor) = rs.median_review_secs_below {
                // The median is under the floor exactly when more than half are.
                check(
                    "median_review_time",
                    day.fast as f64 > n / 2.0,
                    format!(
                        "median review time under {floor}s: {} of {} verdicts today took less",
                        day.fast, day.reviews
                    ),
                );
            }
            if let Some(ceiling) = rs.approval_rate_above {
                let rate = day.approved as f64 / n;
                check(
                    "approval_rate",
                    rate > ceiling,
                    format!(
                        "approval rate {:.1}% ({} of {} verdicts today) above {:.1}%",
                        rate * 100.0,
                        day.approved,
                        day.reviews,
                        ceiling * 100.0
                    ),
                );
            }
            if let Some(ceiling) = rs.reviewer_share_above {
                // Reviewers past the bound, counted together, are not one reviewer.
                let (top, count) = day
                    .by_reviewer
                    .iter()
                    .filter(|(r, _)| r.as_str() != metrics::OTHER)
                    .max_by_key(|(_, c)| **c)
                    .map(|(r, c)| (r.clone(), *c))
                    .unwrap_or_default();
                let share = count as f64 / n;
                check(
                    "reviewer_share",
                    share > ceiling,
                    format!(
                        "one reviewer (`{top}`) cleared {:.1}% ({count} of {}) of today's verdicts, above {:.1}%",
                        share * 100.0,
                        day.reviews,
                        ceiling * 100.0
                    ),
                );
            }
        }
        Step::Write(next, raised)
    });
    result.unwrap_or_default()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::panic)]
    use super::*;
    use crate::ir::{Enforcement, Expr, KillSwitch, Oversight, Workflow};
    use crate::store::MemoryStore;

    // sha256("test")
    const TEST_HASH: &str = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08";

    fn policy(signals: Option<ReviewSignals>, kill_switch: bool) -> Policy {
        Policy {
            name: "p".into(),
            version: "1.0.0".into(),
            source_sha256: "ab".into(),
            currency: "EUR".into(),
            enforcement: Enforcement::Enforce,
            workflows: vec![Workflow {
                name: "support".into(),
                matcher: Expr::Const(true),
                oversight: Oversight::Hitl,
                assumed_verification_rate: None,
                team: None,
                user: None,
                scan_headers: Vec::new(),
                scan_query: false,
                kill_points: Vec::new(),
                review_signals: signals,
                handoff_output: false,
                business_case: Default::default(),
                fallback: None,
            }],
            prices: Vec::new(),
            detectors: Vec::new(),
            rules: Vec::new(),
            kill_switch: kill_switch.then(|| KillSwitch {
                clause: None,
                admin_path: "/writ/admin/kill-switch".into(),
                token_sha256: TEST_HASH.into(),
            }),
        }
    }

    fn post(s: &MemoryStore, p: &Policy, auth: Option<&str>, body: &str) -> VerdictResponse {
        handle(s, p, "POST", auth, body.as_bytes(), 1_000 * 1_000_000_000).unwrap_or_else(|| {
            VerdictResponse {
                status: 0,
                body: Vec::new(),
                headers: Vec::new(),
                audit: AuditRecord::default(),
                alerts: Vec::new(),
                metrics: Vec::new(),
            }
        })
    }

    fn verdict(rid: &str, reviewer: &str, verdict: &str, seconds: f64) -> String {
        serde_json::json!({"review_id": rid, "reviewer": reviewer, "verdict": verdict, "seconds": seconds})
            .to_string()
    }

    fn code(r: &VerdictResponse) -> String {
        let v: serde_json::Value = serde_json::from_slice(&r.body).unwrap_or_default();
        v["error"]["code"].as_str().unwrap_or("").to_string()
    }

    #[test]
    fn a_verdict_joins_its_escalation_and_moves_the_queue() {
        let s = MemoryStore::new();
        let p = policy(None, true);
        let g = record_escalation(&s, "support", "rev-1", "req-1", 900).unwrap_or_default();
        assert!(
            g.iter()
                .any(|m| m.name == "writ_reviews_pending;workflow=support" && m.value == 1)
        );
        assert!(
            g.iter()
                .any(|m| m.name.starts_with("writ_review_oldest_pending") && m.value == 900)
        );
        // A retried handoff names the same review: counted once.
        record_escalation(&s, "support", "rev-1", "req-1", 901).unwrap_or_default();
        record_escalation(&s, "support", "rev-2", "req-2", 950).unwrap_or_default();
        let r = post(
            &s,
            &p,
            Some("Bearer test"),
            &verdict("rev-1", "alice", "approved", 42.0),
        );
        assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
        assert_eq!(r.audit.event, "review_verdict");
        assert_eq!(r.audit.outcome, "reviewed");
        assert_eq!(r.audit.workflow.as_deref(), Some("support"));
        let v = r
            .audit
            .verdict
            .clone()
            .unwrap_or_else(|| panic!("no verdict"));
        assert_eq!(v.escalated_request_id, "req-1");
        assert_eq!(v.wait_seconds, Some(100));
        assert_eq!(v.reviewer, "alice");
        let m = |name: &str| r.metrics.iter().find(|m| m.name == name).map(|m| m.value);
        assert_eq!(
            m("writ_reviews_total;workflow=support;verdict=approved"),
            Some(1)
        );
        assert_eq!(m("writ_reviews_pending;workflow=support"), Some(1));
        assert_eq!(
            m("writ_review_oldest_pending_timestamp_seconds;workflow=support"),
            Some(950)
        );
        assert_eq!(
            m("writ_review_time_to_verdict_seconds_total;workflow=support"),
            Some(100)
        );
        assert_eq!(
            m("writ_review_spent_seconds_total;workflow=support"),
            Some(42)
        );
        assert_eq!(
            m("writ_review_approval_rate_ppm;workflow=support"),
            Some(1_000_000)
        );
        // A second verdict on the same review is refused, and so is an unknown one.
        let again = post(
            &s,
            &p,
            Some("Bearer test"),
            &verdict("rev-1", "bob", "rejected", 5.0),
        );
        assert_eq!(
            (again.status, code(&again).as_str()),
            (409, "already_reviewed")
        );
        let unknown = post(
            &s,
            &p,
            Some("Bearer test"),
            &verdict("rev-9", "bob", "rejected", 5.0),
        );
        assert_eq!(
            (unknown.status, code(&unknown).as_str()),
            (404, "unknown_review")
        );
        assert_eq!(unknown.audit.outcome, "rejected");
        let r = post(
            &s,
            &p,
            Some("Bearer test"),
            &verdict("rev-2", "bob", "rejected", 5.0),
        );
        assert_eq!(r.status, 200);
        assert_eq!(m_of(&r, "writ_reviews_pending;workflow=support"), Some(0));
        assert_eq!(
            m_of(
                &r,
                "writ_review_oldest_pending_timestamp_seconds;workflow=support"
            ),
            Some(0)
        );
        assert_eq!(
            m_of(&r, "writ_review_approval_rate_ppm;workflow=support"),
            Some(500_000)
        );
    }

    /// The pending list keeps order through removals anywhere, stops at its limit (the
    /// counts go on), and an id that would break a line is kept on one.
    #[test]
    fn the_pending_list_keeps_the_oldest_first_within_its_limit() {
        let s = MemoryStore::new();
        let oldest = |g: &[MetricUpdate]| {
            g.iter()
                .find(|m| m.name.starts_with("writ_review_oldest_pending"))
                .map(|m| m.value)
        };
        let pending = |g: &[MetricUpdate]| {
            g.iter()
                .find(|m| m.name.starts_with("writ_reviews_pending;"))
                .map(|m| m.value)
        };
        for i in 0..MAX_LISTED_PENDING + 10 {
            let id = format!("rev-{i}");
            let g = record_escalation(&s, "wf", &id, "req", 100 + i as i64).unwrap_or_default();
            assert_eq!(oldest(&g), Some(100));
            assert_eq!(pending(&g), Some(i as i64 + 1));
        }
        let listed = |s: &MemoryStore| {
            let (bytes, _) = s.get(&pending_key("wf")).unwrap_or_default();
            PendingList::decode(&bytes).unwrap_or_default()
        };
        assert_eq!(listed(&s).len(), MAX_LISTED_PENDING);
        // From the middle, then the oldest: the next one listed becomes the oldest.
        let g = record_review(&s, "wf", "rev-7", true, 1, 1.0).unwrap_or_default();
        assert_eq!(oldest(&g), Some(100));
        let g = record_review(&s, "wf", "rev-0", true, 1, 1.0).unwrap_or_default();
        assert_eq!(oldest(&g), Some(101));
        assert_eq!(listed(&s).len(), MAX_LISTED_PENDING - 2);
        // One past the limit was never listed; its verdict still counts.
        let g = record_review(&s, "wf", "rev-300", false, 1, 1.0).unwrap_or_default();
        assert_eq!(pending(&g), Some(MAX_LISTED_PENDING as i64 + 7));
        assert_eq!(listed(&s).len(), MAX_LISTED_PENDING - 2);
        // An id takes off its own line only: not rev-10 to rev-19, which it begins, and a
        // part of an id (ev-12) takes off none.
        record_review(&s, "wf", "rev-1", true, 1, 1.0).unwrap_or_default();
        record_review(&s, "wf", "ev-12", true, 1, 1.0).unwrap_or_default();
        assert_eq!(listed(&s).len(), MAX_LISTED_PENDING - 3);
        assert_eq!(listed(&s).oldest(), 102);
        // A list the store cannot give back whole costs the gauge, never a count.
        let u = MemoryStore::new();
        assert_eq!(u.set(&pending_key("wf"), b"12 rev-a", 0), Ok(()));
        let g = record_escalation(&u, "wf", "rev-b", "req", 20).unwrap_or_default();
        assert_eq!((pending(&g), oldest(&g)), (Some(1), Some(0)));
        let g = record_review(&u, "wf", "rev-b", true, 1, 1.0).unwrap_or_default();
        assert_eq!(pending(&g), Some(0));
        // Newlines and spaces cannot split a line.
        let t = MemoryStore::new();
        record_escalation(&t, "wf", "a b\nc", "req", 5).unwrap_or_default();
        record_escalation(&t, "wf", "d", "req", 6).unwrap_or_default();
        assert_eq!(listed(&t).len(), 2);
        let g = record_review(&t, "wf", "a b\nc", true, 1, 1.0).unwrap_or_default();
        assert_eq!(oldest(&g), Some(6));
    }

    fn m_of(r: &VerdictResponse, name: &str) -> Option<i64> {
        r.metrics.iter().find(|m| m.name == name).map(|m| m.value)
    }

    #[test]
    fn bad_calls_get_defined_errors_and_an_audit_record() {
        let s = MemoryStore::new();
        let p = policy(None, true);
        record_escalation(&s, "support", "rev-1", "req-1", 900).unwrap_or_default();
        let ok = verdict("rev-1", "alice", "approved", 1.0);
        for auth in [None, Some("Bearer wrong"), Some("test")] {
            let r = post(&s, &p, auth, &ok);
            assert_eq!((r.status, code(&r).as_str()), (401, "unauthorized"));
            assert_eq!(r.audit.outcome, "unauthorized");
            assert_eq!(r.headers.len(), 1);
        }
        let cases = [
            ("{not json", "invalid_request"),
            (
                r#"{"review_id":"rev-1","reviewer":"a","verdict":"approved"}"#,
                "invalid_request",
            ),
            (
                r#"{"review_id":"rev-1","reviewer":"a","verdict":"approved","seconds":1,"x":1}"#,
                "invalid_request",
            ),
            (
                r#"{"review_id":"rev-1","reviewer":"a","verdict":"approved","seconds":"1"}"#,
                "invalid_request",
            ),
            (&verdict("rev-1", "alice", "maybe", 1.0), "invalid_verdict"),
            (&verdict("rev-1", "  ", "approved", 1.0), "invalid_reviewer"),
            (
                &verdict("rev-1", &"x".repeat(129), "approved", 1.0),
                "invalid_reviewer",
            ),
            (
                &verdict("rev-1", "alice", "approved", -1.0),
                "invalid_seconds",
            ),
            (
                &verdict("rev-1", "alice", "approved", 1e9),
                "invalid_seconds",
            ),
        ];
        for (body, want) in cases {
            let r = post(&s, &p, Some("Bearer test"), body);
            assert_eq!((r.status, code(&r).as_str()), (400, want), "{body}");
            assert_eq!(r.audit.event, "review_verdict");
        }
        let get = handle(&s, &p, "GET", Some("Bearer test"), b"", 0).map(|r| r.status);
        assert_eq!(get, Some(405));
        // Nothing above consumed the review.
        assert_eq!(post(&s, &p, Some("Bearer test"), &ok).status, 200);
        // Without a kill switch there is no endpoint.
        assert!(handle(&s, &policy(None, false), "POST", None, b"", 0).is_none());
        assert!(is_reviews_path("/writ/admin/reviews?x=1"));
        assert!(!is_reviews_path("/writ/admin/reviews/x"));
    }

    #[test]
    fn rubber_stamp_signals_fire_once_per_day_after_the_minimum() {
        let s = MemoryStore::new();
        let rs = ReviewSignals {
            median_review_secs_below: Some(30.0),
            approval_rate_above: Some(0.98),
            reviewer_share_above: Some(0.6),
            min_reviews: 5,
        };
        let p = policy(Some(rs), true);
        let mut raised: Vec<String> = Vec::new();
        for i in 0..10 {
            let rid = format!("rev-{i}");
            record_escalation(&s, "support", &rid, &format!("req-{i}"), 900).unwrap_or_default();
            let r = post(
                &s,
                &p,
                Some("Bearer test"),
                &verdict(&rid, "alice", "approved", 3.0),
            );
            assert_eq!(r.status, 200);
            if i < 4 {
                assert!(r.alerts.is_empty(), "under the minimum sample");
            }
            for a in &r.alerts {
                assert_eq!(a.event, "review_signal");
                raised.extend(a.signal.clone());
            }
            let counted = r
                .metrics
                .iter()
                .filter(|m| m.name.starts_with("writ_review_signals_total"))
                .count();
            assert_eq!(counted, r.alerts.len());
        }
        raised.sort();
        assert_eq!(
            raised,
            ["approval_rate", "median_review_time", "reviewer_share"]
        );
    }

    #[test]
    fn in_a_fleet_the_signals_are_judged_on_this_instance_plus_the_others() {
        let rs = ReviewSignals {
            median_review_secs_below: Some(30.0),
            approval_rate_above: Some(0.98),
            reviewer_share_above: Some(0.6),
            min_reviews: 6,
        };
        let p = policy(Some(rs), true);
        // The rest of the fleet saw four fast approvals today, three of them by alice.
        let others = DayVerdicts {
            reviews: 4,
            approved: 4,
            fast: 4,
            by_reviewer: [("alice".to_string(), 3), ("bob".to_string(), 1)].into(),
            raised: Vec::new(),
        };
        let fleet = |key: &str| {
            assert_eq!(
                key,
                day_key("support", 1_000),
                "asked for the verdict's day"
            );
            others.clone()
        };
        let s = MemoryStore::new();
        let mut raised = Vec::new();
        for i in 0..2 {
            let rid = format!("rev-{i}");
            record_escalation(&s, "support", &rid, "req", 900).unwrap_or_default();
            let body = verdict(&rid, "alice", "approved", 3.0);
            let r = handle_in_fleet(
                &s,
                &p,
                "POST",
                Some("Bearer test"),
                body.as_bytes(),
                1_000 * 1_000_000_000,
                &fleet,
            )
            .unwrap_or_else(|| panic!("no answer"));
            assert_eq!(r.status, 200);
            if i == 0 {
                assert!(r.alerts.is_empty(), "4 + 1 is under the minimum of 6");
            }
            raised.extend(r.alerts.iter().filter_map(|a| a.signal.clone()));
            if i == 1 {
                let share = r
                    .alerts
                    .iter()
                    .find(|a| a.signal.as_deref() == Some("reviewer_share"));
                let detail = share.and_then(|a| a.detail.clone()).unwrap_or_default();
                assert!(
                    detail.contains("`alice`") && detail.contains("(5 of 6)"),
                    "{detail}"
                );
            }
        }
        raised.sort();
        assert_eq!(
            raised,
            ["approval_rate", "median_review_time", "reviewer_share"],
            "two verdicts here and four elsewhere reach the fleet's minimum"
        );
        // The same two verdicts on a lone gateway raise nothing.
        let alone = MemoryStore::new();
        for i in 0..2 {
            let rid = format!("rev-{i}");
            record_escalation(&alone, "support", &rid, "req", 900).unwrap_or_default();
            let r = post(
                &alone,
                &p,
                Some("Bearer test"),
                &verdict(&rid, "alice", "approved", 3.0),
            );
            assert!(r.alerts.is_empty());
        }
    }

    #[test]
    fn the_fleets_day_adds_reviewers_by_name_and_publishes_only_the_busiest() {
        let mut mine = DayVerdicts {
            reviews: 3,
            approved: 2,
            fast: 1,
            by_reviewer: [("alice".to_string(), 2), (metrics::OTHER.to_string(), 1)].into(),
            raised: vec!["approval_rate".into()],
        };
        let theirs = DayVerdicts {
            reviews: 5,
            approved: 5,
            fast: 0,
            by_reviewer: [("alice".to_string(), 1), ("bob".to_string(), 4)].into(),
            raised: Vec::new(),
        };
        let day = mine.plus(&theirs);
        assert_eq!((day.reviews, day.approved, day.fast), (8, 7, 1));
        assert_eq!(day.by_reviewer["alice"], 3);
        assert_eq!(day.by_reviewer["bob"], 4);
        assert_eq!(
            day.raised,
            ["approval_rate"],
            "the flags stay this instance's"
        );
        assert_eq!(
            mine.top_reviewers(),
            [("alice", 2)],
            "`other` is not a reviewer"
        );
        for i in 0..40 {
            mine.by_reviewer.insert(format!("r{i:02}"), 100 + i);
        }
        let top = mine.top_reviewers();
        assert_eq!(top.len(), PUBLISHED_REVIEWERS);
        assert_eq!(top[0], ("r39", 139), "the busiest first");
        assert!(top.iter().all(|(_, n)| *n >= 124));
    }

    #[test]
    fn careful_varied_reviews_raise_nothing() {
        let s = MemoryStore::new();
        let rs = ReviewSignals {
            median_review_secs_below: Some(30.0),
            approval_rate_above: Some(0.98),
            reviewer_share_above: Some(0.6),
            min_reviews: 4,
        };
        let p = policy(Some(rs), true);
        for i in 0..12 {
            let rid = format!("rev-{i}");
            record_escalation(&s, "support", &rid, &format!("req-{i}"), 900).unwrap_or_default();
            let who = ["alice", "bob", "carol"][i % 3];
            let v = if i % 4 == 0 { "edited" } else { "approved" };
            let r = post(&s, &p, Some("Bearer test"), &verdict(&rid, who, v, 120.0));
            assert_eq!(r.status, 200);
            assert!(r.alerts.is_empty(), "{:?}", r.alerts);
        }
    }
}
