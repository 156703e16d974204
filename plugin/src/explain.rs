//! `writ explain`: why each rule of a policy matched one request or did not, which
//! sub-condition decided, what each detector found where, and which precedence produced
//! the final action.
//!
//! Nothing here decides anything on its own: the request phase is
//! [`crate::decide::request_phase`] (the adapter's own code) over a fresh in-memory store,
//! the response phase is [`Engine::evaluate`] and the reply rewriter, and the trace of a
//! condition evaluates its leaves with the evaluator's own `Ctx`, so an explanation
//! cannot drift from enforcement. The normal path pays nothing for it: this module only
//! reads.
//!
//! Privacy: an explanation never holds a detected value. Findings name the detector and
//! where (a JSON path into the body, a header name, `query`); a header's value is shown
//! only for the headers a workflow matches on or takes identity from; a JSON key that is
//! not a plain identifier, or in which a detector finds something, is shown by position.

use std::collections::BTreeMap;

use serde_json::Value as Json;

use crate::decide::{self, SpendOutcome};
use crate::detect::{Match, Scanner};
use crate::eval::{
    Ctx, Decision, Effect, Engine, Facts, Fired, Identity, ReplyView, Unsupported, Val,
};
use crate::ir::{self, Action, Expr, Field, Operand, Phase, Policy, Text};
use crate::request::{self, BodyError, Request};
use crate::store::MemoryStore;
use crate::stream::{self, ReplyKind, ReplyRewriter};
use crate::tokenise::Vault;

/// The upstream's reply, for the response phase.
#[derive(Debug, Clone, Default)]
pub struct ReplyInput {
    pub status: u16,
    /// Names as sent; compared case-insensitively.
    pub headers: Vec<(String, String)>,
    /// The body as the upstream sends it: one chunk for JSON, one per event for SSE.
    pub chunks: Vec<Vec<u8>>,
}

/// The request as the client sends it, before the engine parses anything.
#[derive(Debug, Clone, Default)]
pub struct RequestInput {
    pub method: String,
    /// With the query string, if any.
    pub path: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

/// One detector's finds in one place, counted; never the value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    /// The detector's name in the policy (`email`, a custom `employee_id`, …).
    pub detector: String,
    /// Where: `$.messages[1].content`, `header x-notes`, `query`, `reply $.choices[0]…`.
    pub location: String,
    pub count: u32,
}

/// An operand's value as an explanation may show it.
#[derive(Debug, Clone, PartialEq)]
pub enum Shown {
    Str(String),
    Num(f64),
    Bool(bool),
    /// Money in micro-units of the policy's currency.
    Money(ir::Micros),
    /// The field is absent from this request (it compares as missing).
    Missing,
    /// The field is present but may be sensitive, so its value is not shown.
    Withheld,
    /// The engine cannot know it in this phase.
    Unknown(Unsupported),
}

/// One operand of a leaf condition with its value.
#[derive(Debug, Clone, PartialEq)]
pub struct OperandValue<'p> {
    pub operand: &'p Operand,
    pub value: Shown,
    /// For `spend(...)`, `tokens(...)`, `requests(...)`: the value comes from a fresh
    /// ledger or counter (this request's estimate, or this one request).
    pub fresh_state: bool,
}

/// The trace of one (sub-)condition.
#[derive(Debug, Clone, PartialEq)]
pub struct Node<'p> {
    pub expr: &'p Expr,
    /// `None` when the evaluator never looked at it (short-circuit).
    pub value: Option<bool>,
    /// Set when an operand of this node (or below) is not known in this phase.
    pub undecided: Option<Unsupported>,
    /// The non-constant operands of a leaf, with their values.
    pub operands: Vec<OperandValue<'p>>,
    /// What the detectors of a `has` leaf found, and where.
    pub findings: Vec<Finding>,
    /// Sub-conditions of `and`, `or`, `not` (a `not in` is one leaf).
    pub children: Vec<Node<'p>>,
}

impl<'p> Node<'p> {
    /// The sub-conditions that decided this node's value: for a false `and`, its first
    /// false conjunct; for a true `or`, its first true disjunct; for a true `and` or a
    /// false `or`, all of them; through `not`, its operand; down to the leaves.
    pub fn deciding(&self) -> Vec<&Node<'p>> {
        if self.children.is_empty() {
            return vec![self];
        }
        let want = match self.expr {
            Expr::And(_) => false,
            Expr::Or(_) => true,
            _ => return self.children.iter().flat_map(Node::deciding).collect(),
        };
        match self.children.iter().find(|c| c.value == Some(want)) {
            Some(first) => first.deciding(),
            None => self.children.iter().flat_map(Node::deciding).collect(),
        }
    }
}

/// What became of one rule.
#[derive(Debug, Clone, PartialEq)]
pub enum RuleStatus {
    /// The condition held; the effect says what the engine did with it.
    Fired(Effect),
    /// The condition was false.
    NotFired,
    /// The condition needs something the engine does not know in this phase.
    Undecided(Unsupported),
    /// The engine never evaluated the rule (a deny answered first, no reply was given…).
    NotReached(String),
}

/// One rule's explanation.
#[derive(Debug, Clone)]
pub struct RuleTrace<'p> {
    /// Index into `Policy::rules`.
    pub index: usize,
    /// [`Policy::rule_id`].
    pub id: String,
    pub rule: &'p ir::Rule,
    /// The rule (or the policy) is in monitor mode.
    pub monitor: bool,
    pub status: RuleStatus,
    /// The traced condition; `None` when it was not evaluated.
    pub condition: Option<Node<'p>>,
}

/// Why the engine answered before evaluating rules.
#[derive(Debug, Clone, PartialEq)]
pub enum Early {
    /// The kill-switch admin endpoint, answered by the engine itself.
    Admin,
    /// The body cannot be evaluated: status and the engine's error code.
    Body { status: u16, error: BodyError },
}

/// What the client ends up with.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// Forwarded to the upstream; the client gets the upstream's status.
    Allowed { status: u16 },
    /// A rule denied (`phase` says which side); `rule` indexes `Policy::rules`.
    Denied {
        status: u16,
        rule: usize,
        phase: Phase,
    },
    /// The spend ledgers refused without a rule of their own (no cap rule).
    Refused { status: u16, why: String },
    /// The engine answered before any rule.
    Early(Early),
}

/// A reply sent to human review, and by what.
#[derive(Debug, Clone, PartialEq)]
pub struct Escalation {
    pub queue: String,
    pub reason: String,
    /// The rule that escalated, or `None` for the workflow's oversight mode.
    pub rule: Option<usize>,
}

/// Everything `writ explain` says about one request.
#[derive(Debug, Clone)]
pub struct Explanation<'p> {
    pub policy: &'p Policy,
    pub identity: Identity,
    pub outcome: Outcome,
    /// Every rule, in source order.
    pub rules: Vec<RuleTrace<'p>>,
    /// Every rule that fired, in the order of the audit record (request phase, then
    /// decided response rules, then streamed redactions).
    pub fired: Vec<Fired>,
    /// The request-phase decision (as the adapter made it), when rules ran.
    pub request: Option<Decision>,
    /// The response-phase decision, when a reply was given and the request went through.
    pub response: Option<Decision>,
    /// The spend admission, when the policy reads spend and admission ran.
    pub spend: Option<SpendOutcome>,
    /// The rate admission, when the policy reads `tokens(…)`/`requests(…)` and it ran.
    pub rate: Option<crate::decide::RateOutcome>,
    pub escalation: Option<Escalation>,
    /// The model the upstream is asked for, after routing.
    pub model_used: Option<String>,
    /// Detectors whose values are pseudonymised / masked in the forwarded request.
    pub tokenised: Vec<String>,
    pub redacted: Vec<String>,
    pub tags: Vec<(String, String)>,
}

/// Explains one request (and, with `reply`, its response) against `engine`'s policy,
/// from a gateway that has served nothing: empty spend ledgers, no kill-switch stop.
/// `unix_secs` picks the spend windows; `body_limit` is the adapter's body limit.
pub fn explain<'p>(
    engine: &'p Engine,
    input: &RequestInput,
    reply: Option<&ReplyInput>,
    unix_secs: i64,
    body_limit: usize,
) -> Explanation<'p> {
    let policy = &engine.policy;
    let mut headers: Vec<(String, String)> = vec![
        (":method".into(), input.method.clone()),
        (":path".into(), input.path.clone()),
    ];
    headers.extend(input.headers.iter().cloned());
    let mut req = Request::from_headers(headers, None);
    let mut ex = Explanation {
        policy,
        identity: Identity::default(),
        outcome: Outcome::Allowed { status: 0 },
        rules: Vec::new(),
        fired: Vec::new(),
        request: None,
        response: None,
        spend: None,
        rate: None,
        escalation: None,
        model_used: None,
        tokenised: Vec::new(),
        redacted: Vec::new(),
        tags: Vec::new(),
    };
    // The adapter's order: the admin path, the kill switch (never stopped in a fresh
    // gateway), then the body checks, then the rules.
    if let Some(ks) = &policy.kill_switch
        && crate::kill_switch::is_admin_path(ks, &req.path)
    {
        ex.outcome = Outcome::Early(Early::Admin);
        ex.rules = not_reached(engine, "the kill-switch admin endpoint runs no rules");
        return ex;
    }
    ex.identity = crate::eval::identify(policy, &req);
    if !input.body.is_empty() {
        let content_type = req.header("content-type").unwrap_or("");
        let encoding = req.header("content-encoding");
        let checked = if !request::is_json_content_type(content_type) {
            Err(BodyError::UnsupportedMediaType(content_type.to_string()))
        } else if !request::is_identity_encoding(encoding) {
            Err(BodyError::UnsupportedEncoding(
                encoding.unwrap_or("").to_string(),
            ))
        } else if req
            .header("content-length")
            .and_then(|v| v.trim().parse::<usize>().ok())
            .is_some_and(|len| len > body_limit)
        {
            Err(BodyError::TooLarge { limit: body_limit })
        } else {
            request::parse_body(&input.body, body_limit)
        };
        match checked {
            Ok(body) => req.body = Some(body),
            Err(error) => {
                let status = crate::wire::Reply::body_error(&error).status;
                ex.outcome = Outcome::Early(Early::Body { status, error });
                ex.rules = not_reached(engine, "the engine refused the body before any rule");
                return ex;
            }
        }
    }

    let phase = decide::request_phase(
        engine,
        &req,
        ex.identity.clone(),
        &MemoryStore::new(),
        unix_secs,
    );
    let decision = phase.decision;
    ex.spend = phase.spend;
    ex.rate = phase.rate;
    ex.fired.extend(decision.fired.iter().cloned());
    let denied = match &decision.verdict {
        crate::eval::Verdict::Deny { status, rule, .. } => Some((*status, *rule)),
        crate::eval::Verdict::Continue => None,
    };
    let t = crate::eval::Transforms::of(policy, &decision);
    ex.model_used = t.route.clone().or_else(|| req.model().map(str::to_string));
    let names = |ids: &[u16]| -> Vec<String> {
        ids.iter()
            .filter_map(|&d| engine.scanner.name(d).map(str::to_string))
            .collect()
    };
    if denied.is_none() {
        ex.tokenised = names(&t.tokenise);
        ex.redacted = names(&t.redact);
        ex.tags.clone_from(&t.tags);
    }

    // Trace every request rule with the facts the decision had.
    let spend = ex.spend.clone();
    let lookup = |s: ir::Scope, w: ir::Window| spend.as_ref().and_then(|o| o.total(s, w));
    let rate = ex.rate.clone();
    let rate_lookup = |m: ir::Measure, s: ir::Scope, w: ir::RateWindow| {
        rate.as_ref().and_then(|o| o.total(m, s, w))
    };
    let request_facts = Facts {
        spend: spend.is_some().then_some(&lookup as &dyn Fn(_, _) -> _),
        rate: rate
            .is_some()
            .then_some(&rate_lookup as &dyn Fn(_, _, _) -> _),
        reply: None,
        ..Default::default()
    };
    let mut rules: Vec<Option<RuleTrace<'p>>> = vec![None; policy.rules.len()];
    for (i, rule) in policy.rules.iter().enumerate() {
        if rule.phase != Phase::Request {
            continue;
        }
        let mut status = status_in(&decision, i);
        // Merging the spend pass leaves a spend rule that turned out false listed as
        // undecided; once admission ran, a spend rule that did not fire was false.
        if matches!(status, RuleStatus::Undecided(Unsupported::Spend)) && spend.is_some() {
            status = RuleStatus::NotFired;
        }
        // The same for rate rules once the rate admission ran.
        if matches!(status, RuleStatus::Undecided(Unsupported::Rate))
            && rate.as_ref().is_some_and(|r| {
                matches!(r.admission, crate::rate_limit::RateAdmission::Admit { .. })
            })
            && (!engine.uses_spend
                || spend
                    .as_ref()
                    .is_some_and(|s| matches!(s.admission, crate::spend::Admission::Admit { .. })))
        {
            status = RuleStatus::NotFired;
        }
        let mut condition = Some(trace_rule(engine, &req, &ex.identity, &request_facts, rule));
        if matches!(status, RuleStatus::Undecided(Unsupported::Rate)) && rate.is_none() {
            status = RuleStatus::NotReached(
                "a deny earlier in the file answered before the rate admission".into(),
            );
            condition = None;
        }
        if matches!(status, RuleStatus::Undecided(Unsupported::Spend)) && spend.is_none() {
            status = RuleStatus::NotReached(
                "a deny earlier in the file answered before the spend admission".into(),
            );
            condition = None;
        }
        rules[i] = Some(trace(engine, i, status, condition));
    }

    let mut response = None;
    match (denied, reply) {
        (Some((status, rule)), _) => {
            ex.outcome = match policy.rules.get(rule) {
                Some(_) => Outcome::Denied {
                    status,
                    rule,
                    phase: Phase::Request,
                },
                None => Outcome::Refused {
                    status,
                    why: "the spend ledger refused the request".into(),
                },
            };
        }
        (None, None) => ex.outcome = Outcome::Allowed { status: 200 },
        (None, Some(reply)) => {
            let r = respond(engine, &req, &ex.identity, &t, reply, &mut rules);
            ex.fired.extend(r.fired.iter().cloned());
            ex.outcome = r.outcome;
            ex.escalation = r.escalation;
            for (k, v) in r.tags {
                ex.tags.push((k, v));
            }
            response = Some(r.decision);
        }
    }
    let why_response = if denied.is_some() {
        "the request was denied, so no reply was asked for"
    } else {
        "no reply was given (`--reply`)"
    };
    ex.rules = rules
        .into_iter()
        .enumerate()
        .map(|(i, r)| {
            r.unwrap_or_else(|| trace(engine, i, RuleStatus::NotReached(why_response.into()), None))
        })
        .collect();
    ex.request = Some(decision);
    ex.response = response;
    ex
}

/// Every rule as not reached, for an answer given before the rules.
fn not_reached<'p>(engine: &'p Engine, why: &str) -> Vec<RuleTrace<'p>> {
    (0..engine.policy.rules.len())
        .map(|i| trace(engine, i, RuleStatus::NotReached(why.into()), None))
        .collect()
}

fn trace<'p>(
    engine: &'p Engine,
    i: usize,
    status: RuleStatus,
    condition: Option<Node<'p>>,
) -> RuleTrace<'p> {
    let policy = &engine.policy;
    RuleTrace {
        index: i,
        id: policy.rule_id(i),
        rule: &policy.rules[i],
        monitor: crate::eval::is_monitor(policy, i),
        status,
        condition,
    }
}

/// A rule's status in a decision: fired with its effect, undecided, or not fired.
fn status_in(decision: &Decision, i: usize) -> RuleStatus {
    if let Some(f) = decision.fired.iter().find(|f| f.rule == i) {
        return RuleStatus::Fired(f.effect);
    }
    if let Some(u) = decision.undecided.iter().find(|u| u.rule == i) {
        return RuleStatus::Undecided(u.reason);
    }
    RuleStatus::NotFired
}

/// What the response phase came to.
struct Responded {
    decision: Decision,
    fired: Vec<Fired>,
    outcome: Outcome,
    escalation: Option<Escalation>,
    tags: Vec<(String, String)>,
}

/// A provider failure the workflow's fallback answers with a degraded reply: `writ
/// explain` has no host to retry (as in Envoy), so model and cluster steps are skipped and
/// the fixed reply or the human-only path (202, a handoff to its queue) is the client's;
/// the response rules never see the failed reply.
fn fallback_answered<'p>(
    engine: &'p Engine,
    identity: &Identity,
    failure: ir::Failure,
    answer: crate::fallback::Degraded<'_>,
    rules: &mut [Option<RuleTrace<'p>>],
) -> Responded {
    for (i, rule) in engine.policy.rules.iter().enumerate() {
        if rule.phase == Phase::Response
            && let Some(slot) = rules.get_mut(i)
        {
            let why = "the provider failed and the workflow's fallback answered";
            *slot = Some(trace(engine, i, RuleStatus::NotReached(why.into()), None));
        }
    }
    let (outcome, escalation) = match answer {
        crate::fallback::Degraded::Human { queue } => (
            Outcome::Allowed { status: 202 },
            Some(Escalation {
                queue: queue.to_string(),
                reason: format!("provider failed ({})", failure.as_str()),
                rule: None,
            }),
        ),
        crate::fallback::Degraded::Reply { status } => (
            Outcome::Refused {
                status,
                why: format!(
                    "the provider failed ({}) and the workflow's fallback answered",
                    failure.as_str()
                ),
            },
            None,
        ),
    };
    Responded {
        decision: Decision {
            identity: identity.clone(),
            verdict: crate::eval::Verdict::Continue,
            fired: Vec::new(),
            undecided: Vec::new(),
        },
        fired: Vec::new(),
        outcome,
        escalation,
        tags: Vec::new(),
    }
}

/// The response phase in the adapter's order: a compressed reply that must be redacted
/// is refused; the decided response rules see the reply (a JSON body when the reply is
/// JSON); a response deny answers; the reply rewriter masks what the streamed
/// redactions find; then the escalation (a rule's, else the oversight mode's).
fn respond<'p>(
    engine: &'p Engine,
    req: &Request,
    identity: &Identity,
    request_transforms: &crate::eval::Transforms,
    reply: &ReplyInput,
    rules: &mut [Option<RuleTrace<'p>>],
) -> Responded {
    let policy = &engine.policy;
    let headers: Vec<(String, String)> = reply
        .headers
        .iter()
        .map(|(k, v)| (k.to_ascii_lowercase(), v.clone()))
        .collect();
    let header = |name: &str| {
        headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    };
    let kind = stream::reply_kind(header("content-type"), header("content-encoding"));
    let bytes: Vec<u8> = reply.chunks.concat();
    let json: Option<Json> = match kind {
        ReplyKind::Json => serde_json::from_slice(&bytes).ok(),
        _ => None,
    };
    let view = ReplyView {
        status: reply.status,
        headers: &headers,
        body: json.as_ref(),
    };
    // The reply's tool calls, as the session reads them: a whole JSON reply always, a
    // stream only when the request offers tools (the session holds such a stream whole).
    let calls = match kind {
        ReplyKind::Json => json
            .as_ref()
            .map(crate::tools::calls_from_json)
            .unwrap_or_default(),
        ReplyKind::EventStream if req.body.as_ref().is_some_and(crate::tools::offers_tools) => {
            crate::tools::calls_from_sse(&bytes)
        }
        _ => Vec::new(),
    };
    let facts = Facts {
        spend: None,
        rate: None,
        reply: Some(view),
        tool_calls: &calls,
    };
    if let Some((failure, answer)) =
        crate::fallback::degraded_answer(policy, identity.workflow, reply.status)
    {
        return fallback_answered(engine, identity, failure, answer, rules);
    }
    let decided = crate::eval::decided_response_rules(policy);
    let decision = engine.evaluate(
        req,
        identity.clone(),
        &facts,
        Phase::Response,
        Some(&decided),
    );
    let response_redact = crate::eval::response_redactions(policy);
    let mut out = Responded {
        fired: decision.fired.clone(),
        outcome: Outcome::Allowed {
            status: reply.status,
        },
        escalation: None,
        tags: Vec::new(),
        decision: Decision {
            identity: identity.clone(),
            verdict: crate::eval::Verdict::Continue,
            fired: Vec::new(),
            undecided: Vec::new(),
        },
    };
    let refused = |why: &str| Outcome::Refused {
        status: 502,
        why: why.into(),
    };
    if kind == ReplyKind::Encoded && !response_redact.is_empty() {
        out.fired.clear();
        for (i, rule) in policy.rules.iter().enumerate() {
            if rule.phase == Phase::Response
                && let Some(slot) = rules.get_mut(i)
            {
                let why = "the compressed reply was refused before the response rules";
                *slot = Some(trace(engine, i, RuleStatus::NotReached(why.into()), None));
            }
        }
        out.outcome = refused("the reply is compressed and cannot be checked for leaked data");
        return out;
    }
    for &i in &decided {
        let Some(rule) = policy.rules.get(i) else {
            continue;
        };
        let condition = trace_rule(engine, req, identity, &facts, rule);
        if let Some(slot) = rules.get_mut(i) {
            *slot = Some(trace(engine, i, status_in(&decision, i), Some(condition)));
        }
    }
    let t = crate::eval::Transforms::of(policy, &decision);
    out.tags.clone_from(&t.tags);
    if let crate::eval::Verdict::Deny { status, rule, .. } = &decision.verdict {
        out.outcome = Outcome::Denied {
            status: *status,
            rule: *rule,
            phase: Phase::Response,
        };
        not_reached_streamed(engine, rules, "a response rule denied the reply");
        out.decision = decision;
        return out;
    }
    // A tool call held for approval: the client gets 202 `pending_approval` and the reply
    // waits in the gateway (`docs/tools.md`); the handoff goes to the hold's queue.
    if let Some((rule, queue, reason)) = t.hold.clone() {
        out.outcome = Outcome::Allowed { status: 202 };
        out.escalation = Some(Escalation {
            queue,
            reason,
            rule: Some(rule),
        });
        not_reached_streamed(engine, rules, "the reply is held for approval");
        out.decision = decision;
        return out;
    }

    // Streamed redactions: the reply rewriter itself, with an empty vault (a reply file
    // holds no placeholders of this request).
    let vault = Vault::new([0; 16]);
    let ctx = stream::Ctx {
        vault: &vault,
        redact: (!response_redact.is_empty())
            .then(|| stream::Redact::new(&engine.scanner, &response_redact, &policy.detectors)),
    };
    let mut rewriter = ReplyRewriter::new(header("content-type"), header("content-encoding"), &ctx);
    let last = reply.chunks.len().saturating_sub(1);
    let mut failed = None;
    if kind == ReplyKind::Json {
        if let stream::BodyAction::Fail(why) = rewriter.on_body(&bytes, true, &ctx) {
            failed = Some(why);
        }
    } else {
        for (n, chunk) in reply.chunks.iter().enumerate() {
            if let stream::BodyAction::Fail(why) = rewriter.on_body(chunk, n == last, &ctx) {
                failed = Some(why);
            }
        }
    }
    if let Some(why) = failed {
        out.outcome = refused(why);
        out.decision = decision;
        return out;
    }
    let streamed = decide::reply_redactions_fired(policy, rewriter.redacted());
    for (i, rule) in policy.rules.iter().enumerate() {
        if !crate::eval::is_streamed_redaction(rule) {
            continue;
        }
        let status = match streamed.iter().find(|f| f.rule == i) {
            Some(f) => RuleStatus::Fired(f.effect),
            None => RuleStatus::NotFired,
        };
        let mut node = Node {
            expr: &rule.condition,
            value: Some(matches!(status, RuleStatus::Fired(_))),
            undecided: None,
            operands: Vec::new(),
            findings: Vec::new(),
            children: Vec::new(),
        };
        if let Expr::Has { detectors, .. } = &rule.condition {
            node.findings = reply_findings(&engine.scanner, kind, json.as_ref(), reply, detectors);
        }
        if let Some(slot) = rules.get_mut(i) {
            *slot = Some(trace(engine, i, status, Some(node)));
        }
    }
    out.fired.extend(streamed);

    // Escalation: the first escalating rule (response, then request), else the
    // workflow's oversight mode on a successful reply.
    let success = (200..300).contains(&reply.status);
    let confidence = crate::oversight::read_confidence(
        &crate::oversight::confidence_source(policy),
        |name| header(&name.to_ascii_lowercase()),
        json.as_ref(),
    );
    let workflow = identity.workflow.and_then(|i| policy.workflows.get(i));
    out.escalation = match (
        t.escalate.or_else(|| request_transforms.escalate.clone()),
        workflow,
    ) {
        (Some((rule, queue, reason)), _) => Some(Escalation {
            queue,
            reason,
            rule: Some(rule),
        }),
        (None, Some(wf)) if success => {
            let request_id = req.header("x-request-id").unwrap_or("");
            crate::oversight::decide(&wf.oversight, &confidence, request_id).map(|e| Escalation {
                queue: default_queue(policy),
                reason: e.reason,
                rule: None,
            })
        }
        _ => None,
    };
    out.decision = decision;
    out
}

/// The queue of the oversight mode's own escalations: the first escalate rule's queue,
/// else `oversight` (as the adapter chooses it).
fn default_queue(policy: &Policy) -> String {
    policy
        .rules
        .iter()
        .find_map(|r| match &r.action {
            Action::Escalate { queue, .. } => Some(queue.clone()),
            _ => None,
        })
        .unwrap_or_else(|| "oversight".into())
}

fn not_reached_streamed<'p>(engine: &'p Engine, rules: &mut [Option<RuleTrace<'p>>], why: &str) {
    for (i, rule) in engine.policy.rules.iter().enumerate() {
        if crate::eval::is_streamed_redaction(rule)
            && let Some(slot) = rules.get_mut(i)
        {
            *slot = Some(trace(engine, i, RuleStatus::NotReached(why.into()), None));
        }
    }
}

/// Traces a rule's condition with the evaluator's own context.
fn trace_rule<'p>(
    engine: &'p Engine,
    req: &Request,
    identity: &Identity,
    facts: &Facts<'_>,
    rule: &'p ir::Rule,
) -> Node<'p> {
    let mut tracer = Tracer {
        ctx: Ctx {
            policy: &engine.policy,
            scanner: Some(&engine.scanner),
            request: req,
            identity,
            headers_only: false,
            unsupported: None,
            facts,
            prompt_union: None,
            prompt_clean: None,
            tool: None,
        },
        shown_headers: shown_headers(&engine.policy),
    };
    tracer.node(&rule.condition)
}

/// Request headers whose values an explanation may show: those a workflow matches on or
/// takes a team or user from. Every other header may carry a credential or personal data.
fn shown_headers(policy: &Policy) -> Vec<String> {
    fn walk(e: &Expr, out: &mut Vec<String>) {
        match e {
            Expr::And(v) | Expr::Or(v) => v.iter().for_each(|e| walk(e, out)),
            Expr::Not(e) => walk(e, out),
            Expr::Compare { left, right, .. } => {
                for o in [left, right] {
                    if let Operand::Field(Field::Header(h)) = o {
                        out.push(h.clone());
                    }
                }
            }
            Expr::In {
                operand: Operand::Field(Field::Header(h)),
                ..
            } => out.push(h.clone()),
            _ => {}
        }
    }
    let mut out = Vec::new();
    for wf in &policy.workflows {
        walk(&wf.matcher, &mut out);
        for id in [&wf.team, &wf.user].into_iter().flatten() {
            out.push(id.header.clone());
        }
    }
    out
}

struct Tracer<'a> {
    ctx: Ctx<'a>,
    shown_headers: Vec<String>,
}

impl<'a> Tracer<'a> {
    fn node<'p>(&mut self, e: &'p Expr) -> Node<'p>
    where
        'p: 'a,
    {
        let mut node = Node {
            expr: e,
            value: None,
            undecided: None,
            operands: Vec::new(),
            findings: Vec::new(),
            children: Vec::new(),
        };
        match e {
            Expr::And(items) | Expr::Or(items) => {
                // The evaluator's short-circuit: `and` stops at the first false, `or` at
                // the first true; later items are never looked at.
                let stop = matches!(e, Expr::Or(_));
                let mut done = false;
                for x in items {
                    if done {
                        node.children.push(skipped(x));
                        continue;
                    }
                    let child = self.node(x);
                    if child.value == Some(stop) {
                        done = true;
                    }
                    node.undecided = node.undecided.or(child.undecided);
                    node.children.push(child);
                }
                node.value = Some(if done { stop } else { !stop });
            }
            Expr::Not(inner) if !matches!(inner.as_ref(), Expr::In { .. }) => {
                let child = self.node(inner);
                node.value = child.value.map(|v| !v);
                node.undecided = child.undecided;
                node.children.push(child);
            }
            _ => self.leaf(e, &mut node),
        }
        node
    }

    fn leaf<'p>(&mut self, e: &'p Expr, node: &mut Node<'p>)
    where
        'p: 'a,
    {
        self.ctx.unsupported = None;
        node.value = Some(self.ctx.expr(e));
        node.undecided = self.ctx.unsupported.take();
        let operands: Vec<&'p Operand> = match e {
            Expr::Compare { left, right, .. } => vec![left, right],
            Expr::In { operand, .. } => vec![operand],
            Expr::Not(inner) => match inner.as_ref() {
                Expr::In { operand, .. } => vec![operand],
                _ => vec![],
            },
            _ => vec![],
        };
        for o in operands {
            if matches!(o, Operand::Const(_)) {
                continue;
            }
            let value = self.shown(o);
            node.operands.push(OperandValue {
                operand: o,
                value,
                fresh_state: matches!(o, Operand::Spend { .. } | Operand::Rate { .. }),
            });
        }
        self.ctx.unsupported = None;
        if let Expr::Has { subject, detectors } = e
            && let Some(scanner) = self.ctx.scanner
        {
            node.findings = self.findings(scanner, subject, detectors);
        }
    }

    /// An operand's value, unless it may be sensitive.
    fn shown(&mut self, o: &'a Operand) -> Shown {
        if let Operand::Field(Field::Header(h)) = o
            && !self.shown_headers.contains(h)
        {
            return match self.ctx.request.header(h) {
                Some(_) => Shown::Withheld,
                None => Shown::Missing,
            };
        }
        if let Operand::Field(Field::ResponseHeader(h)) = o {
            let present = self.ctx.facts.reply.is_some_and(|r| r.header(h).is_some());
            return if present {
                Shown::Withheld
            } else {
                Shown::Missing
            };
        }
        self.ctx.unsupported = None;
        let value = self.ctx.operand(o);
        if let Some(why) = self.ctx.unsupported.take() {
            return Shown::Unknown(why);
        }
        match value {
            None => Shown::Missing,
            Some(Val::Str(s)) => Shown::Str(s.to_string()),
            Some(Val::Num(n)) => Shown::Num(n),
            Some(Val::Bool(b)) => Shown::Bool(b),
            Some(Val::Money(m)) => Shown::Money(m),
        }
    }

    /// What `detectors` find in the text a `has` reads, by detector and place.
    fn findings(&self, scanner: &Scanner, subject: &Text, detectors: &[u16]) -> Vec<Finding> {
        let mut found = Findings::new(scanner, detectors);
        let r = self.ctx.request;
        let header = |found: &mut Findings<'_>, name: &str| {
            for v in r.header_values(name) {
                found.text(v, &format!("header {name}"));
            }
        };
        match subject {
            Text::Prompt => {
                if let Some(body) = &r.body {
                    found.json(body, "$", "");
                }
                if let Some(wf) = self
                    .ctx
                    .identity
                    .workflow
                    .and_then(|i| self.ctx.policy.workflows.get(i))
                {
                    for h in &wf.scan_headers {
                        header(&mut found, h);
                    }
                    if wf.scan_query {
                        found.text(&r.query, "query");
                    }
                }
            }
            Text::Header(name) => header(&mut found, name),
            Text::Query => found.text(&r.query, "query"),
            Text::Response => {
                if let Some(body) = self.ctx.facts.reply.and_then(|v| v.body) {
                    found.json(body, "$", "reply ");
                }
            }
            Text::ToolArguments => {
                for (i, c) in self.ctx.facts.tool_calls.iter().enumerate() {
                    found.text(&c.arguments_json, &format!("tool call {i} arguments"));
                }
            }
            Text::ToolResults => {
                if let Some(body) = &r.body {
                    crate::tools::any_tool_result(body, |t| {
                        found.text(t, "tool result");
                        false
                    });
                }
            }
        }
        found.done()
    }
}

/// A node the evaluator never reached.
fn skipped(e: &Expr) -> Node<'_> {
    Node {
        expr: e,
        value: None,
        undecided: None,
        operands: Vec::new(),
        findings: Vec::new(),
        children: Vec::new(),
    }
}

/// Findings of a reply: per JSON path for a JSON reply, per event and path for a stream.
fn reply_findings(
    scanner: &Scanner,
    kind: ReplyKind,
    json: Option<&Json>,
    reply: &ReplyInput,
    detectors: &[u16],
) -> Vec<Finding> {
    let mut found = Findings::new(scanner, detectors);
    match (kind, json) {
        (ReplyKind::Json, Some(body)) => found.json(body, "$", "reply "),
        (ReplyKind::EventStream, _) => {
            // A value may be split across events: the strings at one JSON path are read
            // as one text, in event order, as the reply rewriter reads the deltas.
            let mut texts: Vec<(String, String)> = Vec::new();
            let text = String::from_utf8_lossy(&reply.chunks.concat()).into_owned();
            for line in text.lines() {
                let Some(data) = line.strip_prefix("data:") else {
                    continue;
                };
                let Ok(event) = serde_json::from_str::<Json>(data.trim()) else {
                    continue;
                };
                let mut strings = Vec::new();
                found.paths(&event, "$", &mut strings);
                for (path, s) in strings {
                    match texts.iter_mut().find(|(p, _)| *p == path) {
                        Some((_, t)) => t.push_str(&s),
                        None => texts.push((path, s)),
                    }
                }
            }
            for (path, t) in texts {
                found.text(&t, &format!("reply events {path}"));
            }
        }
        _ => found.text(&String::from_utf8_lossy(&reply.chunks.concat()), "reply"),
    }
    found.done()
}

/// Counts finds per (detector, location) in source order of first appearance.
struct Findings<'s> {
    scanner: &'s Scanner,
    detectors: &'s [u16],
    all: Vec<u16>,
    hits: Vec<Match>,
    counts: BTreeMap<(usize, u16), u32>,
    places: Vec<String>,
}

impl<'s> Findings<'s> {
    fn new(scanner: &'s Scanner, detectors: &'s [u16]) -> Findings<'s> {
        Findings {
            scanner,
            detectors,
            all: scanner.all_ids(),
            hits: Vec::new(),
            counts: BTreeMap::new(),
            places: Vec::new(),
        }
    }

    fn text(&mut self, text: &str, place: &str) {
        self.scanner.scan(text, self.detectors, &mut self.hits);
        if self.hits.is_empty() {
            return;
        }
        let at = match self.places.iter().position(|p| p == place) {
            Some(at) => at,
            None => {
                self.places.push(place.to_string());
                self.places.len() - 1
            }
        };
        for m in &self.hits {
            *self.counts.entry((at, m.detector)).or_insert(0) += 1;
        }
    }

    /// Every string of `v`, object keys included, as the evaluator reads the body.
    fn json(&mut self, v: &Json, path: &str, prefix: &str) {
        match v {
            Json::String(s) => self.text(s, &format!("{prefix}{path}")),
            Json::Array(items) => {
                for (i, item) in items.iter().enumerate() {
                    self.json(item, &format!("{path}[{i}]"), prefix);
                }
            }
            Json::Object(map) => {
                for (n, (k, item)) in map.iter().enumerate() {
                    let step = self.key_step(k, n);
                    let child = format!("{path}{step}");
                    self.text(k, &format!("{prefix}{child} (the key)"));
                    self.json(item, &child, prefix);
                }
            }
            Json::Null | Json::Bool(_) | Json::Number(_) => {}
        }
    }

    /// Every string value of `v` with its path (keys are not collected: a stream's keys
    /// repeat in every event).
    fn paths(&self, v: &Json, path: &str, out: &mut Vec<(String, String)>) {
        match v {
            Json::String(s) => out.push((path.to_string(), s.clone())),
            Json::Array(items) => {
                for (i, item) in items.iter().enumerate() {
                    self.paths(item, &format!("{path}[{i}]"), out);
                }
            }
            Json::Object(map) => {
                for (n, (k, item)) in map.iter().enumerate() {
                    self.paths(item, &format!("{path}{}", self.key_step(k, n)), out);
                }
            }
            Json::Null | Json::Bool(_) | Json::Number(_) => {}
        }
    }

    /// `.name` for a plain identifier in which no detector of the policy finds anything;
    /// otherwise the key's position (`.<key 2>`), so a path never carries a value.
    fn key_step(&self, key: &str, n: usize) -> String {
        let plain = !key.is_empty()
            && key.len() <= 64
            && key
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
            && !self.scanner.any(key, &self.all);
        if plain {
            format!(".{key}")
        } else {
            format!(".<key {n}>")
        }
    }

    fn done(self) -> Vec<Finding> {
        let mut out: Vec<Finding> = self
            .counts
            .into_iter()
            .map(|((at, d), count)| Finding {
                detector: self.scanner.name(d).unwrap_or("?").to_string(),
                location: self.places.get(at).cloned().unwrap_or_default(),
                count,
            })
            .collect();
        out.sort_by(|a, b| {
            a.location
                .cmp(&b.location)
                .then(a.detector.cmp(&b.detector))
        });
        out
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;
    use crate::ir::{
        CmpOp, Detector, DetectorClass, DetectorKind, Enforcement, Oversight, Rule, Value, Workflow,
    };

    fn rule(clause: &str, condition: Expr, action: Action, monitor: bool) -> Rule {
        Rule {
            clause: clause.into(),
            title: clause.into(),
            phase: Phase::Request,
            condition,
            action,
            enforcement: if monitor {
                Enforcement::Monitor
            } else {
                Enforcement::Enforce
            },
            alert_at_percent: None,
            line: 1,
        }
    }

    fn model_not_in(models: &[&str]) -> Expr {
        Expr::Not(Box::new(Expr::In {
            operand: Operand::Field(Field::Model),
            set: models.iter().map(|m| Value::Str((*m).into())).collect(),
        }))
    }

    fn header_eq(name: &str, value: &str) -> Expr {
        Expr::Compare {
            left: Operand::Field(Field::Header(name.into())),
            op: CmpOp::Eq,
            right: Operand::Const(Value::Str(value.into())),
        }
    }

    fn engine() -> Engine {
        let email = Expr::Has {
            subject: Text::Prompt,
            detectors: vec![0],
        };
        let deny = Action::Deny {
            status: 403,
            message: "no".into(),
        };
        Engine::new(Policy {
            name: "p".into(),
            version: "1.0.0".into(),
            source_sha256: "00".into(),
            currency: "EUR".into(),
            enforcement: Enforcement::Enforce,
            workflows: vec![Workflow {
                name: "support".into(),
                matcher: header_eq("x-workflow", "support"),
                oversight: Oversight::Hic { sample_rate: 0.0 },
                assumed_verification_rate: None,
                team: Some(ir::Identity {
                    header: "x-team".into(),
                    trusted: false,
                }),
                user: None,
                scan_headers: vec!["x-notes".into()],
                scan_query: true,
                business_case: Default::default(),
                kill_points: Vec::new(),
                review_signals: None,
                handoff_output: false,
                fallback: None,
            }],
            prices: vec![],
            detectors: vec![Detector {
                name: "email".into(),
                class: DetectorClass::Pii,
                kind: DetectorKind::Builtin("email".into()),
            }],
            rules: vec![
                rule(
                    "A-1",
                    Expr::And(vec![model_not_in(&["gpt-4o"]), email.clone()]),
                    deny.clone(),
                    false,
                ),
                rule("A-2", email, Action::Tokenise { detectors: vec![0] }, false),
                rule("A-3", header_eq("authorization", "Bearer x"), deny, false),
                rule(
                    "A-4",
                    model_not_in(&["gpt-4o"]),
                    Action::Deny {
                        status: 400,
                        message: "m".into(),
                    },
                    true,
                ),
            ],
            kill_switch: None,
        })
        .unwrap()
    }

    fn input(model: &str) -> RequestInput {
        let body = serde_json::json!({
            "model": model,
            "messages": [{"role": "user", "content": "write to jane@example.com"}],
            "a@b.example": "key"
        });
        RequestInput {
            method: "POST".into(),
            path: "/v1/chat/completions?cc=joe@example.com".into(),
            headers: vec![
                ("x-workflow".into(), "support".into()),
                ("x-team".into(), "risk".into()),
                ("x-notes".into(), "ask bob@example.com".into()),
                ("authorization".into(), "Bearer sk-very-secret".into()),
                ("content-type".into(), "application/json".into()),
            ],
            body: serde_json::to_vec(&body).unwrap(),
        }
    }

    #[test]
    fn names_the_false_conjunct_and_where_detectors_found_what() {
        let engine = engine();
        let ex = explain(&engine, &input("gpt-4o"), None, 0, 1 << 20);
        assert_eq!(ex.outcome, Outcome::Allowed { status: 200 });
        let a1 = &ex.rules[0];
        assert_eq!(a1.status, RuleStatus::NotFired);
        let node = a1.condition.as_ref().unwrap();
        let deciding = node.deciding();
        assert_eq!(deciding.len(), 1);
        assert_eq!(deciding[0].value, Some(false));
        assert_eq!(deciding[0].operands[0].value, Shown::Str("gpt-4o".into()));
        assert_eq!(node.children[1].value, None, "short-circuit");

        let a2 = &ex.rules[1];
        assert_eq!(a2.status, RuleStatus::Fired(Effect::Enforced));
        let places: Vec<&str> = a2
            .condition
            .as_ref()
            .unwrap()
            .findings
            .iter()
            .map(|f| f.location.as_str())
            .collect();
        assert_eq!(
            places,
            [
                "$.<key 2> (the key)",
                "$.messages[0].content",
                "header x-notes",
                "query"
            ]
        );
        assert_eq!(ex.tokenised, ["email"]);

        // A header no workflow names is withheld; the value never appears.
        let a3 = ex.rules[2].condition.as_ref().unwrap();
        assert_eq!(a3.operands[0].value, Shown::Withheld);
        let dump = format!("{ex:?}");
        for value in [
            "jane@example.com",
            "bob@example.com",
            "joe@example.com",
            "a@b.example",
            "sk-very-secret",
        ] {
            assert!(!dump.contains(value), "{value} leaked");
        }
    }

    #[test]
    fn deny_overrides_tokenise_and_monitor_rules_would_have() {
        let engine = engine();
        let ex = explain(&engine, &input("gpt-3.5"), None, 0, 1 << 20);
        assert_eq!(
            ex.outcome,
            Outcome::Denied {
                status: 403,
                rule: 0,
                phase: Phase::Request
            }
        );
        let effect = |i: usize| ex.fired.iter().find(|f| f.rule == i).map(|f| f.effect);
        assert_eq!(effect(0), Some(Effect::Enforced));
        assert_eq!(effect(1), Some(Effect::Overridden));
        assert_eq!(effect(3), Some(Effect::WouldHave));
        assert!(ex.tokenised.is_empty());
        // The explanation's fired rules are the engine's own decision.
        let decision = engine.evaluate_request(&Request::from_headers(
            vec![
                (":method".into(), "POST".into()),
                (":path".into(), "/v1/chat/completions".into()),
                ("x-workflow".into(), "support".into()),
                ("x-notes".into(), "ask bob@example.com".into()),
            ],
            serde_json::from_slice(&input("gpt-3.5").body).ok(),
        ));
        assert_eq!(ex.request.as_ref().unwrap().verdict, decision.verdict);
    }

    #[test]
    fn refused_bodies_and_the_admin_path_run_no_rules() {
        let engine = engine();
        let mut bad = input("gpt-4o");
        bad.body = b"{\"model\":".to_vec();
        let ex = explain(&engine, &bad, None, 0, 1 << 20);
        assert!(matches!(
            ex.outcome,
            Outcome::Early(Early::Body { status: 400, .. })
        ));
        assert!(
            ex.rules
                .iter()
                .all(|r| matches!(r.status, RuleStatus::NotReached(_)))
        );
        assert!(ex.fired.is_empty());
    }
}
