//! Human oversight: which replies go to a human, the handoff a reviewer receives, and the
//! measured verification rate (the share of outputs sent to a human) against the rate
//! the paper policy assumes.
//!
//! - HITL escalates every reply.
//! - HOTL escalates a reply whose confidence is under the threshold, and, failing safe,
//!   a reply whose confidence is missing or unreadable (the reason says which).
//! - HIC escalates a deterministic sample: the request id is hashed, so the same request
//!   is always in or out of the sample whichever worker sees it, and tests are repeatable.
//!
//! Confidence comes from a reply header or an RFC 6901 JSON pointer into the reply body
//! ([`read_confidence`]); a policy names the source in its `confidence(...)` rules, and
//! a HOTL workflow without such a rule reads [`DEFAULT_CONFIDENCE_HEADER`].

use crate::calendar::{bucket, window_name};
use crate::ir::{ConfidenceSource, Expr, Operand, Oversight, Phase, Policy, Window};
use crate::store::{self, Cursor, SharedStore, Step, StoreError, Stored};
use serde_json::Value as Json;
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;

/// The reply header a HOTL workflow reads when no rule names a confidence source.
pub const DEFAULT_CONFIDENCE_HEADER: &str = "x-model-confidence";

/// Why a confidence score could not be read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConfidenceError {
    /// The header or the JSON pointer is absent from the reply.
    Missing,
    /// Present but not a number (the text is cut to 64 bytes).
    Unparseable(String),
    /// A number outside 0..=1.
    OutOfRange(String),
}

impl std::fmt::Display for ConfidenceError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ConfidenceError::Missing => write!(f, "confidence missing"),
            ConfidenceError::Unparseable(v) => write!(f, "confidence `{v}` is not a number"),
            ConfidenceError::OutOfRange(v) => write!(f, "confidence {v} is outside 0..1"),
        }
    }
}

/// The confidence source of a policy: the first `confidence(...)` operand of a response
/// rule, else the [`DEFAULT_CONFIDENCE_HEADER`].
pub fn confidence_source(policy: &Policy) -> ConfidenceSource {
    fn find(e: &Expr) -> Option<&ConfidenceSource> {
        match e {
            Expr::And(v) | Expr::Or(v) => v.iter().find_map(find),
            Expr::Not(e) => find(e),
            Expr::Compare { left, right, .. } => [left, right].into_iter().find_map(|o| match o {
                Operand::Confidence(s) => Some(s),
                _ => None,
            }),
            Expr::In {
                operand: Operand::Confidence(s),
                ..
            } => Some(s),
            _ => None,
        }
    }
    policy
        .rules
        .iter()
        .filter(|r| r.phase == Phase::Response)
        .find_map(|r| find(&r.condition))
        .cloned()
        .unwrap_or_else(|| ConfidenceSource::Header(DEFAULT_CONFIDENCE_HEADER.into()))
}

/// Reads the reply's confidence. `header` looks up a lower-case reply header; `body` is
/// the parsed reply (a JSON reply, or for a stream the final chunk the filter kept), or
/// `None` when there is none. A number may also be given as a numeric string.
pub fn read_confidence<'h>(
    source: &ConfidenceSource,
    header: impl Fn(&str) -> Option<&'h str>,
    body: Option<&Json>,
) -> Result<f64, ConfidenceError> {
    let cut = |s: &str| s.chars().take(64).collect::<String>();
    let value = match source {
        ConfidenceSource::Header(name) => {
            let raw = header(name).ok_or(ConfidenceError::Missing)?;
            raw.trim()
                .parse::<f64>()
                .map_err(|_| ConfidenceError::Unparseable(cut(raw)))?
        }
        ConfidenceSource::JsonPointer(ptr) => {
            let v = body
                .and_then(|b| b.pointer(ptr))
                .ok_or(ConfidenceError::Missing)?;
            match v {
                Json::Number(n) => n
                    .as_f64()
                    .ok_or_else(|| ConfidenceError::Unparseable(n.to_string()))?,
                Json::String(s) => s
                    .trim()
                    .parse::<f64>()
                    .map_err(|_| ConfidenceError::Unparseable(cut(s)))?,
                Json::Null => return Err(ConfidenceError::Missing),
                other => return Err(ConfidenceError::Unparseable(cut(&other.to_string()))),
            }
        }
    };
    if value.is_finite() && (0.0..=1.0).contains(&value) {
        Ok(value)
    } else {
        Err(ConfidenceError::OutOfRange(value.to_string()))
    }
}

/// Why a reply goes to a human.
#[derive(Debug, Clone, PartialEq)]
pub struct Escalation {
    /// Human-readable reason, e.g. `confidence 0.42 below 0.70`.
    pub reason: String,
    /// The confidence read, when one was.
    pub confidence: Option<f64>,
}

/// Decides whether the workflow's oversight mode sends this reply to a human.
pub fn decide(
    oversight: &Oversight,
    confidence: &Result<f64, ConfidenceError>,
    request_id: &str,
) -> Option<Escalation> {
    let conf = confidence.as_ref().ok().copied();
    match oversight {
        Oversight::Hitl => Some(Escalation {
            reason: "HITL: every output is reviewed".into(),
            confidence: conf,
        }),
        Oversight::Hotl { threshold } => match confidence {
            Ok(c) if c < threshold => Some(Escalation {
                reason: format!("HOTL: confidence {c:.2} below {threshold:.2}"),
                confidence: Some(*c),
            }),
            Ok(_) => None,
            Err(e) => Some(Escalation {
                reason: format!("HOTL: {e}; escalated to fail safe"),
                confidence: None,
            }),
        },
        Oversight::Hic { sample_rate } => in_sample(request_id, *sample_rate).then(|| Escalation {
            reason: format!("HIC: sampled for review at {:.2}%", sample_rate * 100.0),
            confidence: conf,
        }),
    }
}

/// Whether `request_id` falls in a sample of `rate` (0..=1): the first 8 bytes of its
/// sha256 as a fraction of 2^64, compared with the rate. Uniform and the same everywhere.
pub fn in_sample(request_id: &str, rate: f64) -> bool {
    if rate.is_nan() || rate <= 0.0 {
        return false;
    }
    if rate >= 1.0 {
        return true;
    }
    let d = Sha256::digest(request_id.as_bytes());
    let mut first = [0u8; 8];
    first.copy_from_slice(d.get(..8).unwrap_or(&[0; 8]));
    let x = u64::from_be_bytes(first) as f64 / 18_446_744_073_709_551_616.0;
    x < rate
}

/// A stable review id for a request, so a retried handoff names the same review.
pub fn review_id(request_id: &str) -> String {
    let d = Sha256::digest(request_id.as_bytes());
    let hex: String = d.iter().take(10).map(|b| format!("{b:02x}")).collect();
    format!("rev-{hex}")
}

/// Everything a reviewer is handed. Built from facts only: no message text ever.
#[derive(Debug, Clone, PartialEq)]
pub struct Handoff {
    /// The escalating rule's clause and title; for an oversight-mode escalation, the
    /// workflow's oversight (`oversight HOTL`) and an empty clause.
    pub rule: String,
    pub clause: String,
    pub reason: String,
    pub confidence: Option<f64>,
    pub request_id: String,
    pub workflow: Option<String>,
    pub review_id: String,
    pub queue: String,
    /// The model that answered.
    pub model: Option<String>,
    /// Detector name → count found in the exchange.
    pub pii: BTreeMap<String, u32>,
    pub status: u16,
    /// The model's output when the workflow says `handoff includes output`: as the
    /// provider sent it (placeholders not restored), other detected values masked
    /// ([`reply_output`]).
    pub output: Option<String>,
}

/// The longest output a handoff carries, in bytes (cut at a character boundary).
pub const MAX_HANDOFF_OUTPUT: usize = 64 * 1024;

/// The model's output in a reply body, for a handoff that includes it: the text of every
/// choice (`choices[].message.content`, as a string or text parts, or `choices[].text`) or
/// Responses item (`output[].content[].text`), joined by newlines, as the provider sent it,
/// so tokenised PII is still placeholders (the vault restores only the client's copy).
/// Values the model produced itself are masked: every match of the policy's detectors
/// (`scanner`, `detectors`) becomes its typed mask (`[EMAIL]`). `None` when the reply
/// holds no output text.
pub fn reply_output(
    body: &Json,
    scanner: &crate::detect::Scanner,
    detectors: &[crate::ir::Detector],
) -> Option<String> {
    let mut parts: Vec<&str> = Vec::new();
    fn texts<'j>(v: &'j Json, parts: &mut Vec<&'j str>) {
        match v {
            Json::String(s) => parts.push(s),
            Json::Array(items) => {
                for i in items {
                    if let Some(t) = i.get("text").and_then(Json::as_str) {
                        parts.push(t);
                    }
                }
            }
            _ => {}
        }
    }
    for c in body
        .get("choices")
        .and_then(Json::as_array)
        .into_iter()
        .flatten()
    {
        if let Some(m) = c.get("message").and_then(|m| m.get("content")) {
            texts(m, &mut parts);
        } else if let Some(t) = c.get("text") {
            texts(t, &mut parts);
        }
    }
    for o in body
        .get("output")
        .and_then(Json::as_array)
        .into_iter()
        .flatten()
    {
        if let Some(c) = o.get("content") {
            texts(c, &mut parts);
        }
    }
    if parts.is_empty() {
        return None;
    }
    let mut text = parts.join("\n");
    if text.len() > MAX_HANDOFF_OUTPUT {
        let mut cut = MAX_HANDOFF_OUTPUT;
        while !text.is_char_boundary(cut) {
            cut -= 1;
        }
        text.truncate(cut);
    }
    let wanted: Vec<u16> = (0..detectors.len())
        .filter_map(|i| u16::try_from(i).ok())
        .collect();
    let mut found = Vec::new();
    scanner.scan(&text, &wanted, &mut found);
    found.sort_by_key(|m| (m.start, std::cmp::Reverse(m.end)));
    let mut out = String::with_capacity(text.len());
    let mut at = 0;
    for m in found {
        if m.start < at {
            continue; // overlaps a value already masked
        }
        let name = scanner.name(m.detector).unwrap_or("pii");
        out.push_str(text.get(at..m.start).unwrap_or(""));
        out.push_str(&crate::detect::mask(name));
        at = m.end;
    }
    out.push_str(text.get(at..).unwrap_or(""));
    Some(out)
}

impl Handoff {
    /// The JSON payload for the review queue (an HTTP call by the filter).
    pub fn payload(&self) -> Vec<u8> {
        let v = serde_json::json!({
            "review_id": self.review_id,
            "queue": self.queue,
            "rule": self.rule,
            "clause": self.clause,
            "reason": self.reason,
            "confidence": self.confidence,
            "request_id": self.request_id,
            "workflow": self.workflow,
            "summary": {
                "model": self.model,
                "pii": self.pii,
                "status": self.status,
            },
        });
        let mut v = v;
        if let (Some(out), Some(obj)) = (&self.output, v.as_object_mut()) {
            obj.insert("output".into(), Json::String(out.clone()));
        }
        serde_json::to_vec(&v).unwrap_or_default()
    }

    /// Headers added to the reply so the application can hold it for review:
    /// `x-writ-review-id`, `x-writ-review-queue`, `x-writ-review-reason`. Values are
    /// reduced to printable ASCII so a reason cannot break the header block.
    pub fn headers(&self) -> Vec<(&'static str, String)> {
        let clean = |s: &str| -> String {
            s.chars()
                .map(|c| if (' '..='~').contains(&c) { c } else { '?' })
                .collect()
        };
        vec![
            ("x-writ-review-id", clean(&self.review_id)),
            ("x-writ-review-queue", clean(&self.queue)),
            ("x-writ-review-reason", clean(&self.reason)),
        ]
    }
}

// ---------------------------------------------------------------------------------------
// Verification rate

/// Outputs and escalations of one workflow in one window bucket.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RateCounts {
    pub total: u64,
    pub escalated: u64,
    /// Whether this bucket's drift alert has fired.
    pub alerted: bool,
}

const RATE_VERSION: u8 = 1;

impl Stored for RateCounts {
    fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(18);
        out.push(RATE_VERSION);
        out.extend_from_slice(&self.total.to_le_bytes());
        out.extend_from_slice(&self.escalated.to_le_bytes());
        out.push(u8::from(self.alerted));
        out
    }
    fn decode(bytes: &[u8]) -> Option<Self> {
        let mut c = Cursor::new(bytes);
        if c.u8()? != RATE_VERSION {
            return None;
        }
        let r = RateCounts {
            total: c.u64()?,
            escalated: c.u64()?,
            alerted: c.u8()? != 0,
        };
        c.rest().is_empty().then_some(r)
    }
}

impl RateCounts {
    /// escalated / total, 0 when nothing was counted.
    pub fn rate(&self) -> f64 {
        if self.total == 0 {
            0.0
        } else {
            self.escalated as f64 / self.total as f64
        }
    }
}

/// The shared-data key of a workflow's counters, e.g.
/// `writ/oversight/support/day/2026-11-24`.
pub fn rate_key(workflow: &str, window: Window, unix_secs: i64) -> String {
    format!(
        "writ/oversight/{}/{}/{}",
        store::key_segment(workflow),
        window_name(window),
        bucket(window, unix_secs)
    )
}

/// The measured rate has drifted above the assumed one in this bucket. Raised once per
/// workflow and bucket (flag set by the same CAS as the count).
#[derive(Debug, Clone, PartialEq)]
pub struct DriftAlert {
    pub workflow: String,
    pub key: String,
    pub measured: f64,
    pub assumed: f64,
    pub total: u64,
    pub escalated: u64,
}

/// Drift settings: the tumbling window counted in and the sample needed before a rate
/// is trusted enough to alert on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DriftConfig {
    pub window: Window,
    pub min_samples: u64,
}

impl Default for DriftConfig {
    /// A day, and at least 50 outputs: below that one escalation moves the rate by 2%.
    fn default() -> Self {
        DriftConfig {
            window: Window::Day,
            min_samples: 50,
        }
    }
}

/// Counts one reply of `workflow` (escalated or not) and checks the measured rate in the
/// current bucket against `assumed` (the workflow's `assume verification_rate`).
pub fn record_outcome(
    store: &dyn SharedStore,
    workflow: &str,
    escalated: bool,
    assumed: Option<f64>,
    config: DriftConfig,
    unix_secs: i64,
) -> Result<(RateCounts, Option<DriftAlert>), StoreError> {
    record_outcome_with(
        store,
        workflow,
        escalated,
        assumed,
        config,
        unix_secs,
        |_| RateCounts::default(),
    )
}

/// [`record_outcome`] in a fleet: `others(key)` gives the other instances' counts of the
/// bucket (`fleet::counters::others_rate`), added to this instance's own before the rate
/// is measured and judged. The returned counts are the fleet's.
pub fn record_outcome_with(
    store: &dyn SharedStore,
    workflow: &str,
    escalated: bool,
    assumed: Option<f64>,
    config: DriftConfig,
    unix_secs: i64,
    others: impl Fn(&str) -> RateCounts,
) -> Result<(RateCounts, Option<DriftAlert>), StoreError> {
    let key = rate_key(workflow, config.window, unix_secs);
    let o = others(&key);
    let (counts, fire) = store::update(store, &key, |c: &RateCounts| {
        let mut next = *c;
        next.total = next.total.saturating_add(1);
        if escalated {
            next.escalated = next.escalated.saturating_add(1);
        }
        let fleet = RateCounts {
            total: next.total.saturating_add(o.total),
            escalated: next.escalated.saturating_add(o.escalated),
            alerted: next.alerted,
        };
        let fire = match assumed {
            Some(a) => !c.alerted && fleet.total >= config.min_samples && fleet.rate() > a,
            None => false,
        };
        next.alerted |= fire;
        Step::Write(next, (fleet, fire))
    })?;
    let alert = fire.then(|| DriftAlert {
        workflow: workflow.to_string(),
        key,
        measured: counts.rate(),
        assumed: assumed.unwrap_or(0.0),
        total: counts.total,
        escalated: counts.escalated,
    });
    Ok((counts, alert))
}

/// The verification rate over the last full window length, sliding: the current bucket
/// plus the previous one weighted by the share of it still inside the window (the usual
/// two-bucket approximation). Hour and day windows only; a month reads as its bucket.
pub fn sliding_rate(
    store: &dyn SharedStore,
    workflow: &str,
    window: Window,
    unix_secs: i64,
) -> Result<f64, StoreError> {
    let cur: RateCounts = store::read(store, &rate_key(workflow, window, unix_secs))?;
    let len = match window {
        Window::Hour => 3600,
        Window::Day => 86_400,
        Window::Month => return Ok(cur.rate()),
    };
    let prev: RateCounts = store::read(store, &rate_key(workflow, window, unix_secs - len))?;
    let weight = 1.0 - unix_secs.rem_euclid(len) as f64 / len as f64;
    let total = cur.total as f64 + prev.total as f64 * weight;
    let escalated = cur.escalated as f64 + prev.escalated as f64 * weight;
    Ok(if total > 0.0 { escalated / total } else { 0.0 })
}

impl DriftAlert {
    /// The JSON body of the optional alert HTTP call.
    pub fn payload(&self, policy: &Policy) -> Vec<u8> {
        let v = serde_json::json!({
            "alert": "verification_rate_drift",
            "policy": policy.name,
            "workflow": self.workflow,
            "measured": self.measured,
            "assumed": self.assumed,
            "outputs": self.total,
            "escalated": self.escalated,
            "bucket": self.key,
        });
        serde_json::to_vec(&v).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::MemoryStore;

    fn hdr<'a>(pairs: &'a [(&'a str, &'a str)]) -> impl Fn(&str) -> Option<&'a str> {
        move |n: &str| pairs.iter().find(|(k, _)| *k == n).map(|(_, v)| *v)
    }

    #[test]
    fn confidence_is_read_from_headers_and_json_pointers() {
        let h = ConfidenceSource::Header("x-model-confidence".into());
        assert_eq!(
            read_confidence(&h, hdr(&[("x-model-confidence", " 0.25 ")]), None),
            Ok(0.25)
        );
        assert_eq!(
            read_confidence(&h, hdr(&[]), None),
            Err(ConfidenceError::Missing)
        );
        assert!(matches!(
            read_confidence(&h, hdr(&[("x-model-confidence", "high")]), None),
            Err(ConfidenceError::Unparseable(_))
        ));
        assert!(matches!(
            read_confidence(&h, hdr(&[("x-model-confidence", "1.5")]), None),
            Err(ConfidenceError::OutOfRange(_))
        ));
        assert!(matches!(
            read_confidence(&h, hdr(&[("x-model-confidence", "NaN")]), None),
            Err(ConfidenceError::OutOfRange(_))
        ));
        let p = ConfidenceSource::JsonPointer("/choices/0/confidence".into());
        let body = serde_json::json!({"choices": [{"confidence": 0.9}]});
        assert_eq!(read_confidence(&p, hdr(&[]), Some(&body)), Ok(0.9));
        let s = serde_json::json!({"choices": [{"confidence": "0.5"}]});
        assert_eq!(read_confidence(&p, hdr(&[]), Some(&s)), Ok(0.5));
        assert_eq!(
            read_confidence(&p, hdr(&[]), None),
            Err(ConfidenceError::Missing)
        );
        let esc = ConfidenceSource::JsonPointer("/a~1b".into());
        assert_eq!(
            read_confidence(&esc, hdr(&[]), Some(&serde_json::json!({"a/b": 0}))),
            Ok(0.0)
        );
    }

    #[test]
    fn modes_decide_escalation() {
        assert!(decide(&Oversight::Hitl, &Ok(0.99), "r").is_some());
        let hotl = Oversight::Hotl { threshold: 0.7 };
        assert_eq!(decide(&hotl, &Ok(0.7), "r"), None);
        let low = decide(&hotl, &Ok(0.42), "r");
        assert_eq!(
            low.as_ref().map(|e| e.reason.as_str()),
            Some("HOTL: confidence 0.42 below 0.70")
        );
        let missing = decide(&hotl, &Err(ConfidenceError::Missing), "r");
        assert_eq!(
            missing.map(|e| e.reason),
            Some("HOTL: confidence missing; escalated to fail safe".to_string())
        );
        assert_eq!(
            decide(&Oversight::Hic { sample_rate: 0.0 }, &Ok(0.1), "r"),
            None
        );
        assert!(decide(&Oversight::Hic { sample_rate: 1.0 }, &Ok(0.1), "r").is_some());
    }

    #[test]
    fn hic_samples_deterministically_near_the_rate() {
        let ids: Vec<String> = (0..20_000).map(|i| format!("req-{i}")).collect();
        let picked = ids.iter().filter(|id| in_sample(id, 0.02)).count();
        assert!((300..=500).contains(&picked), "{picked} of 20000 at 2%");
        for id in ids.iter().take(100) {
            assert_eq!(in_sample(id, 0.3), in_sample(id, 0.3));
        }
        // A larger sample contains the smaller one.
        assert!(
            ids.iter()
                .filter(|id| in_sample(id, 0.02))
                .all(|id| in_sample(id, 0.1))
        );
    }

    #[test]
    fn handoffs_carry_facts_not_text() {
        let h = Handoff {
            rule: "Low-confidence answers go to a human".into(),
            clause: "AIP-5.1".into(),
            reason: "low confidence\r\nx-evil: 1".into(),
            confidence: Some(0.42),
            request_id: "req-7".into(),
            workflow: Some("support".into()),
            review_id: review_id("req-7"),
            queue: "support-review".into(),
            model: Some("gpt-4o-mini".into()),
            pii: BTreeMap::from([("email".to_string(), 2)]),
            status: 200,
            output: None,
        };
        let v: Json = serde_json::from_slice(&h.payload()).unwrap_or_default();
        assert_eq!(v["clause"], "AIP-5.1");
        assert_eq!(v["confidence"], 0.42);
        assert_eq!(v["summary"]["pii"]["email"], 2);
        assert_eq!(v["review_id"], review_id("req-7"));
        assert!(review_id("req-7").starts_with("rev-"));
        let headers = h.headers();
        assert_eq!(headers.len(), 3);
        assert!(
            headers
                .iter()
                .all(|(_, v)| !v.contains('\n') && !v.contains('\r'))
        );
    }

    #[test]
    #[allow(clippy::panic)]
    fn handoff_output_keeps_placeholders_and_masks_raw_values() {
        let detectors = vec![crate::ir::Detector {
            name: "email".into(),
            class: crate::ir::DetectorClass::Pii,
            kind: crate::ir::DetectorKind::Builtin("email".into()),
        }];
        let scanner =
            crate::detect::Scanner::new(&detectors).unwrap_or_else(|e| panic!("scanner: {e:?}"));
        let body = serde_json::json!({"choices": [
            {"message": {"content": "Reply to <EMAIL_1> or write to leak@example.com"}},
            {"message": {"content": [{"type": "text", "text": "second"}]}},
        ]});
        let out = reply_output(&body, &scanner, &detectors).unwrap_or_default();
        assert_eq!(out, "Reply to <EMAIL_1> or write to [EMAIL]\nsecond");
        let responses = serde_json::json!({"output": [{"content": [{"text": "r"}]}]});
        assert_eq!(
            reply_output(&responses, &scanner, &detectors).as_deref(),
            Some("r")
        );
        assert_eq!(
            reply_output(&serde_json::json!({"error": 1}), &scanner, &detectors),
            None
        );
        let h = Handoff {
            rule: String::new(),
            clause: String::new(),
            reason: "r".into(),
            confidence: None,
            request_id: "req".into(),
            workflow: None,
            review_id: review_id("req"),
            queue: "q".into(),
            model: None,
            pii: BTreeMap::new(),
            status: 200,
            output: Some(out),
        };
        let v: Json = serde_json::from_slice(&h.payload()).unwrap_or_default();
        assert_eq!(
            v["output"],
            "Reply to <EMAIL_1> or write to [EMAIL]\nsecond"
        );
    }

    #[test]
    fn drift_alerts_once_after_the_minimum_sample() {
        let s = MemoryStore::new();
        let cfg = DriftConfig {
            window: Window::Day,
            min_samples: 10,
        };
        let mut alerts = 0;
        for i in 0..40 {
            // 1 in 4 escalated: 25% against an assumed 10%.
            let (_, a) = record_outcome(&s, "support", i % 4 == 0, Some(0.10), cfg, 1_000)
                .unwrap_or_default();
            if let Some(a) = a {
                assert!(a.total >= 10);
                assert!(a.measured > 0.10);
                alerts += 1;
            }
        }
        assert_eq!(alerts, 1);
        let counts: RateCounts =
            store::read(&s, &rate_key("support", Window::Day, 1_000)).unwrap_or_default();
        assert_eq!((counts.total, counts.escalated), (40, 10));
        // Under the assumption: never.
        let (_, a) = record_outcome(&s, "ok", false, Some(0.10), cfg, 1_000).unwrap_or_default();
        assert_eq!(a, None);
        let rate = sliding_rate(&s, "support", Window::Day, 1_000).unwrap_or_default();
        assert!((rate - 0.25).abs() < 1e-9);
        // Early in the next day the previous day still counts at almost full weight.
        let next = sliding_rate(&s, "support", Window::Day, 86_400 + 10).unwrap_or_default();
        assert!((next - 0.25).abs() < 1e-9);
    }
}
