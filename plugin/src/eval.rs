//! The evaluator: a pure function of (compiled policy, request view) to a decision.
//!
//! Architecture invariant: no host calls here. The same code runs natively in unit tests
//! and benches and inside the wasm artifact, so what the tests prove is what ships.

use crate::detect::Scanner;
use crate::ir::{
    self, Action, CmpOp, Enforcement, Expr, Field, Operand, Phase, Policy, Text, Value,
};
use crate::request::Request;

/// Who the request is, resolved from the first matching workflow.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Identity {
    /// Index into `Policy::workflows` of the first workflow whose matcher holds.
    pub workflow: Option<usize>,
    pub team: Option<String>,
    pub user: Option<String>,
}

/// What the engine did with one rule whose condition held.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Effect {
    /// The action was carried out (or, for `allow`, recorded).
    Enforced,
    /// The rule is in monitor mode: recorded as what it would have done, nothing applied.
    WouldHave,
    /// The action is valid in the language but this engine does not carry it out yet; the
    /// audit record says so instead of pretending it happened.
    NotEnforcedYet,
    /// An enforced action of lower precedence lost to another rule's deny.
    Overridden,
}

/// The kind of a rule's action, without its payload, for audit records and logs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ActionKind {
    Allow,
    Deny,
    Redact,
    Tokenise,
    Route,
    Escalate,
    Tag,
    Hold,
    StripTool,
}

impl ActionKind {
    /// The kind of an IR action.
    pub fn of(action: &Action) -> ActionKind {
        match action {
            Action::Allow => ActionKind::Allow,
            Action::Deny { .. } => ActionKind::Deny,
            Action::Redact { .. } => ActionKind::Redact,
            Action::Tokenise { .. } => ActionKind::Tokenise,
            Action::Route(_) => ActionKind::Route,
            Action::Escalate { .. } => ActionKind::Escalate,
            Action::Tag { .. } => ActionKind::Tag,
            Action::Hold { .. } => ActionKind::Hold,
            Action::StripTool => ActionKind::StripTool,
        }
    }

    /// The keyword the language uses for this action.
    pub fn as_str(self) -> &'static str {
        match self {
            ActionKind::Allow => "allow",
            ActionKind::Deny => "deny",
            ActionKind::Redact => "redact",
            ActionKind::Tokenise => "tokenise",
            ActionKind::Route => "route",
            ActionKind::Escalate => "escalate",
            ActionKind::Tag => "tag",
            ActionKind::Hold => "hold",
            ActionKind::StripTool => "strip_tool",
        }
    }
}

/// One rule whose condition held.
#[derive(Debug, Clone, PartialEq)]
pub struct Fired {
    /// Index into `Policy::rules`.
    pub rule: usize,
    /// The rule's identity ([`Policy::rule_id`]).
    pub id: String,
    pub clause: String,
    pub title: String,
    pub action: ActionKind,
    /// True when the rule (or the whole policy) is in monitor mode.
    pub monitor: bool,
    pub effect: Effect,
}

/// A rule the engine could not decide because its condition needs something not
/// implemented yet; it neither fired nor was proven false.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Undecided {
    pub rule: usize,
    pub clause: String,
    pub reason: Unsupported,
}

/// Parts of the language the evaluator does not compute yet. Each is filled by a later
/// change; until then a condition using one is reported, never guessed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unsupported {
    /// `spend(scope, window)` needs the shared spend ledger.
    Spend,
    /// `tokens(…)`/`requests(…)` need the shared rate-limit counters.
    Rate,
    /// `confidence(...)` is a response-phase operand.
    Confidence,
    /// Response text is not available in the request phase.
    ResponseText,
}

impl Unsupported {
    /// A short reason for logs and audit records.
    pub fn as_str(self) -> &'static str {
        match self {
            Unsupported::Spend => "spend is known only after the budget admission",
            Unsupported::Rate => "rate-limit counts are known only after the rate admission",
            Unsupported::Confidence => "confidence is known only in the response phase",
            Unsupported::ResponseText => "response text is not available in this phase",
        }
    }
}

/// The outcome the host adapter acts on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Let the request through (transformations, when implemented, are listed in `fired`).
    Continue,
    /// Answer locally with an error; `rule` indexes `Policy::rules`.
    Deny {
        status: u16,
        message: String,
        clause: String,
        rule: usize,
    },
}

/// Everything the engine decided about one request, in the order rules were evaluated.
#[derive(Debug, Clone, PartialEq)]
pub struct Decision {
    pub identity: Identity,
    pub verdict: Verdict,
    /// Every rule that fired, monitor ones included, in source order.
    pub fired: Vec<Fired>,
    pub undecided: Vec<Undecided>,
}

impl Decision {
    /// The monitor-mode rules that would have denied, for "would have" logs.
    pub fn would_have_denied(&self) -> impl Iterator<Item = &Fired> {
        self.fired
            .iter()
            .filter(|f| f.effect == Effect::WouldHave && f.action == ActionKind::Deny)
    }
}

/// A policy ready to evaluate: decoded once per VM, with its detectors built, so a
/// request pays for neither.
#[derive(Debug)]
pub struct Engine {
    pub policy: Policy,
    pub scanner: Scanner,
    /// Every detector a request rule looks for in the prompt: one pass with all of them
    /// proves most requests clean, so each `prompt has …` need not scan the body again.
    pub prompt_detectors: Vec<u16>,
    /// Whether any rule reads `spend(…)`: decided once at load, so a request of a policy
    /// without budgets skips the spend admission without walking the rules.
    pub uses_spend: bool,
    /// Whether any rule reads `tokens(…)` or `requests(…)`, decided once at load.
    pub uses_rates: bool,
    /// What the one detection pass over a request body looks for: every detector of a
    /// `prompt has …` and of a request-phase `tokenise`/`redact` action.
    pub detection_union: Vec<u16>,
}

/// Why a policy cannot be loaded; the adapter refuses every request when it sees one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LoadError {
    Decode(ir::DecodeError),
    Detectors(crate::detect::DetectError),
}

impl std::fmt::Display for LoadError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            LoadError::Decode(e) => e.fmt(f),
            LoadError::Detectors(e) => write!(f, "cannot build the detectors: {e}"),
        }
    }
}

impl std::error::Error for LoadError {}

impl Engine {
    /// Builds the detectors of an already decoded policy.
    pub fn new(policy: Policy) -> Result<Engine, LoadError> {
        let scanner = Scanner::new(&policy.detectors).map_err(LoadError::Detectors)?;
        let mut prompt_detectors: Vec<u16> = policy
            .rules
            .iter()
            .filter(|r| r.phase == Phase::Request)
            .flat_map(prompt_detectors)
            .collect();
        prompt_detectors.sort_unstable();
        prompt_detectors.dedup();
        let mut detection_union = prompt_detectors.clone();
        for r in policy.rules.iter().filter(|r| r.phase == Phase::Request) {
            if let Action::Tokenise { detectors } | Action::Redact { detectors } = &r.action {
                detection_union.extend_from_slice(detectors);
            }
        }
        detection_union.sort_unstable();
        detection_union.dedup();
        let uses_spend = !crate::spend::spend_operands(&policy).is_empty();
        let uses_rates = !crate::rate_limit::operands(&policy).is_empty();
        Ok(Engine {
            uses_spend,
            uses_rates,
            policy,
            scanner,
            prompt_detectors,
            detection_union,
        })
    }

    /// The one detection pass over a request body ([`crate::detection`]), for
    /// [`Request::detection`]; `None` when the policy's request rules look for nothing in
    /// the prompt or the body is not a JSON document the pass can walk (the rules then
    /// scan as they always did).
    pub fn detect(&self, body: &[u8]) -> Option<crate::detection::Detection> {
        if self.detection_union.is_empty() {
            return None;
        }
        crate::detection::Detection::of(&self.scanner, body, &self.detection_union).ok()
    }

    /// Decodes a serialized policy (as embedded in an artifact) and builds its detectors.
    pub fn load(blob: &[u8]) -> Result<Engine, LoadError> {
        Engine::new(Policy::decode(blob).map_err(LoadError::Decode)?)
    }

    /// [`evaluate_request`] with this engine's policy and detectors.
    pub fn evaluate_request(&self, request: &Request) -> Decision {
        let identity = identify(&self.policy, request);
        self.evaluate(request, identity, &Facts::default(), Phase::Request, None)
    }

    /// [`evaluate`] with this engine's policy and detectors, and the one-pass clean check
    /// of the prompt ([`Engine::prompt_detectors`]).
    pub fn evaluate(
        &self,
        request: &Request,
        identity: Identity,
        facts: &Facts<'_>,
        phase: Phase,
        only: Option<&[usize]>,
    ) -> Decision {
        let union = Some(self.prompt_detectors.as_slice());
        evaluate_with(
            &self.policy,
            &self.scanner,
            request,
            identity,
            facts,
            phase,
            only,
            union,
        )
    }
}

/// Resolves the workflow and identity. Workflow matchers see headers only (the body has
/// not arrived when a host would first ask), so body fields inside a matcher read as missing.
pub fn identify(policy: &Policy, request: &Request) -> Identity {
    let mut ctx = Ctx {
        policy,
        scanner: None,
        request,
        identity: &Identity::default(),
        headers_only: true,
        unsupported: None,
        facts: &Facts::default(),
        prompt_union: None,
        prompt_clean: None,
        tool: None,
    };
    for (i, wf) in policy.workflows.iter().enumerate() {
        ctx.unsupported = None;
        if ctx.expr(&wf.matcher) && ctx.unsupported.is_none() {
            let from = |id: &Option<ir::Identity>| {
                id.as_ref()
                    .and_then(|id| request.header(&id.header))
                    .map(str::to_string)
            };
            return Identity {
                workflow: Some(i),
                team: from(&wf.team),
                user: from(&wf.user),
            };
        }
    }
    Identity::default()
}

/// Evaluates the request-phase rules of `policy` against `request`, with spend unknown:
/// rules reading `spend(...)` are reported as undecided ([`Unsupported::Spend`]).
///
/// Every rule is visited, in source order, and every rule that matches is recorded (the
/// audit record lists them all). A rule in monitor mode (its own or the policy's) is
/// recorded as [`Effect::WouldHave`] and changes nothing. The first enforced deny wins
/// (nothing outranks it in [`Action::precedence`]): every other enforced rule that
/// matched, before or after it, is [`Effect::Overridden`]. Without a deny, enforced
/// actions combine and are listed for the adapter.
pub fn evaluate_request(policy: &Policy, scanner: &Scanner, request: &Request) -> Decision {
    let identity = identify(policy, request);
    evaluate(
        policy,
        scanner,
        request,
        identity,
        &Facts::default(),
        Phase::Request,
        None,
    )
}

/// What the adapter knows beyond the request itself: spend totals after admission and,
/// in the response phase, the reply. Absent facts make the rules that read them
/// undecided (spend, response text) or compare as missing (status, headers, confidence).
#[derive(Default)]
pub struct Facts<'a> {
    /// `spend(scope, window)` values (settled + reserved, this request included), or
    /// `None` when no admission ran: spend rules are then undecided.
    pub spend: Option<&'a dyn Fn(ir::Scope, ir::Window) -> Option<ir::Micros>>,
    /// `tokens(…)`/`requests(…)` values (this request included), or `None` when no rate
    /// admission ran: rate rules are then undecided.
    pub rate: Option<&'a dyn Fn(ir::Measure, ir::Scope, ir::RateWindow) -> Option<u64>>,
    /// The reply, in the response phase.
    pub reply: Option<ReplyView<'a>>,
    /// The reply's tool calls (any API's, see [`crate::tools`]), in the response phase:
    /// a rule reading `tool_call.…` is evaluated once per call.
    pub tool_calls: &'a [crate::tools::ToolCall],
}

/// The reply as response-phase rules see it.
#[derive(Default, Clone, Copy)]
pub struct ReplyView<'a> {
    pub status: u16,
    /// Lower-case names.
    pub headers: &'a [(String, String)],
    /// The parsed JSON reply, when the reply is JSON and was buffered; `None` for streams.
    pub body: Option<&'a serde_json::Value>,
}

impl<'a> ReplyView<'a> {
    pub(crate) fn header(self, name: &str) -> Option<&'a str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// Evaluates the rules of `phase` (only those listed in `only`, when given) with the
/// identity already resolved and the `facts` the adapter gathered. The same precedence as
/// [`evaluate_request`]: the first enforced deny wins and overrides transformations.
pub fn evaluate(
    policy: &Policy,
    scanner: &Scanner,
    request: &Request,
    identity: Identity,
    facts: &Facts<'_>,
    phase: Phase,
    only: Option<&[usize]>,
) -> Decision {
    evaluate_with(policy, scanner, request, identity, facts, phase, only, None)
}

/// [`evaluate`], where `prompt_union` (every detector the prompt rules use) lets one
/// pass over the body prove it clean for all of them at once.
#[allow(clippy::too_many_arguments)]
fn evaluate_with(
    policy: &Policy,
    scanner: &Scanner,
    request: &Request,
    identity: Identity,
    facts: &Facts<'_>,
    phase: Phase,
    only: Option<&[usize]>,
    prompt_union: Option<&[u16]>,
) -> Decision {
    let mut decision = Decision {
        identity,
        verdict: Verdict::Continue,
        fired: Vec::new(),
        undecided: Vec::new(),
    };
    let mut ctx = Ctx {
        policy,
        scanner: Some(scanner),
        request,
        identity: &decision.identity,
        headers_only: false,
        unsupported: None,
        facts,
        prompt_union,
        prompt_clean: None,
        tool: None,
    };
    let mut deny = None;
    for (i, rule) in policy.rules.iter().enumerate() {
        if rule.phase != phase || only.is_some_and(|o| !o.contains(&i)) {
            continue;
        }
        ctx.unsupported = None;
        let holds = !ctx.matching_items(&rule.condition, 1).is_empty();
        if let Some(reason) = ctx.unsupported {
            decision.undecided.push(Undecided {
                rule: i,
                clause: rule.clause.clone(),
                reason,
            });
            continue;
        }
        if !holds {
            continue;
        }
        let monitor = is_monitor(policy, i);
        decision.fired.push(fired(policy, i, monitor));
        if let (false, Action::Deny { status, message }) = (monitor, &rule.action) {
            if deny.is_some() {
                // A later deny matched too: recorded, but the first one answers.
                if let Some(f) = decision.fired.last_mut() {
                    f.effect = Effect::Overridden;
                }
                continue;
            }
            deny = Some(Verdict::Deny {
                status: *status,
                message: message.clone(),
                clause: rule.clause.clone(),
                rule: i,
            });
        }
    }
    if let Some(verdict) = deny {
        decision.deny_with(verdict);
    }
    decision
}

/// True when rule `i` (or the whole policy) is in monitor mode.
pub fn is_monitor(policy: &Policy, i: usize) -> bool {
    policy.enforcement == Enforcement::Monitor
        || policy
            .rules
            .get(i)
            .is_some_and(|r| r.enforcement == Enforcement::Monitor)
}

/// The record of rule `i` firing (the adapter uses it for rules it decides itself, such as
/// a budget the ledger refused).
pub fn fired(policy: &Policy, i: usize, monitor: bool) -> Fired {
    let rule = policy.rules.get(i);
    Fired {
        rule: i,
        id: policy.rule_id(i),
        clause: rule.map(|r| r.clause.clone()).unwrap_or_default(),
        title: rule.map(|r| r.title.clone()).unwrap_or_default(),
        action: rule.map_or(ActionKind::Allow, |r| ActionKind::of(&r.action)),
        monitor,
        effect: if monitor {
            Effect::WouldHave
        } else {
            Effect::Enforced
        },
    }
}

impl Decision {
    /// Applies a deny: the verdict changes and every enforced transformation that fired
    /// becomes [`Effect::Overridden`].
    pub fn deny_with(&mut self, verdict: Verdict) {
        let winner = match &verdict {
            Verdict::Deny { rule, .. } => Some(*rule),
            Verdict::Continue => None,
        };
        for f in &mut self.fired {
            if f.effect != Effect::WouldHave && Some(f.rule) != winner {
                f.effect = Effect::Overridden;
            }
        }
        self.verdict = verdict;
    }

    /// Merges a later evaluation of other rules (re-evaluated undecided ones) into this
    /// decision, keeping source order and the first deny.
    pub fn merge(&mut self, other: Decision) {
        self.undecided
            .retain(|u| !other.fired.iter().any(|f| f.rule == u.rule));
        self.undecided
            .retain(|u| !other.undecided.iter().any(|o| o.rule == u.rule));
        self.undecided.extend(other.undecided);
        self.fired.extend(other.fired);
        self.fired.sort_by_key(|f| f.rule);
        // The first deny in file order answers.
        let earlier = match (&self.verdict, &other.verdict) {
            (_, Verdict::Continue) => false,
            (Verdict::Continue, Verdict::Deny { .. }) => true,
            (Verdict::Deny { rule: a, .. }, Verdict::Deny { rule: b, .. }) => b < a,
        };
        if earlier {
            self.deny_with(other.verdict);
        } else if let Verdict::Deny { rule, .. } = other.verdict
            && let Some(f) = self.fired.iter_mut().find(|f| f.rule == rule)
        {
            f.effect = Effect::Overridden;
        }
    }

    /// The enforced (not monitor, not overridden) rules that fired, with their actions.
    pub fn enforced<'p>(&self, policy: &'p Policy) -> impl Iterator<Item = (usize, &'p Action)> {
        self.fired
            .iter()
            .filter(|f| f.effect == Effect::Enforced)
            .filter_map(move |f| policy.rules.get(f.rule).map(|r| (f.rule, &r.action)))
    }
}

/// What the enforced rules of one decision ask the adapter to do to the traffic.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Transforms {
    /// Detectors whose values become placeholders (restored in the reply).
    pub tokenise: Vec<u16>,
    /// Detectors whose values become typed masks.
    pub redact: Vec<u16>,
    /// The model to send instead of the requested one: the first enforced route in source
    /// order wins.
    pub route: Option<String>,
    /// `(key, value)` cost-attribution labels, in source order (a later key overwrites).
    pub tags: Vec<(String, String)>,
    /// The first enforced escalation: `(rule, queue, reason)`.
    pub escalate: Option<(usize, String, String)>,
    /// The first enforced hold for approval: `(rule, queue, reason)`.
    pub hold: Option<(usize, String, String)>,
    /// The enforced `strip tool` rules, whose matching offered tools leave the request.
    pub strip_tool: Vec<usize>,
}

impl Transforms {
    /// Collects the enforced actions of `decision` (monitor and overridden rules change
    /// nothing). Detector lists are sorted and deduplicated.
    pub fn of(policy: &Policy, decision: &Decision) -> Transforms {
        let mut t = Transforms::default();
        for (i, action) in decision.enforced(policy) {
            match action {
                Action::Tokenise { detectors } => t.tokenise.extend_from_slice(detectors),
                Action::Redact { detectors } => t.redact.extend_from_slice(detectors),
                Action::Route(target) if t.route.is_none() => {
                    t.route = route_target(policy, target);
                }
                Action::Tag { key, value } => t.tags.push((key.clone(), value.clone())),
                Action::Escalate { queue, reason } if t.escalate.is_none() => {
                    t.escalate = Some((i, queue.clone(), reason.clone()));
                }
                Action::Hold { queue, reason } if t.hold.is_none() => {
                    t.hold = Some((i, queue.clone(), reason.clone()));
                }
                Action::StripTool => t.strip_tool.push(i),
                _ => {}
            }
        }
        for v in [&mut t.tokenise, &mut t.redact] {
            v.sort_unstable();
            v.dedup();
        }
        t
    }
}

/// The positions of the items (reply tool calls, or offered tools) rule `rule`'s
/// condition holds for: which calls a hold withholds, which tools a `strip tool` removes.
/// Empty for a rule of another phase or of no tool scope.
pub fn matching_tool_items(
    policy: &Policy,
    scanner: &Scanner,
    request: &Request,
    identity: &Identity,
    facts: &Facts<'_>,
    rule: usize,
) -> Vec<usize> {
    let Some(r) = policy.rules.get(rule) else {
        return Vec::new();
    };
    if tool_scope(&r.condition) == ToolScope::None {
        return Vec::new();
    }
    let mut ctx = Ctx {
        policy,
        scanner: Some(scanner),
        request,
        identity,
        headers_only: false,
        unsupported: None,
        facts,
        prompt_union: None,
        prompt_clean: None,
        tool: None,
    };
    ctx.matching_items(&r.condition, usize::MAX)
}

/// The names of the offered tools the enforced `strip tool` rules of `t` remove, in the
/// request's order, without repeats.
pub fn stripped_tools(
    policy: &Policy,
    scanner: &Scanner,
    request: &Request,
    identity: &Identity,
    t: &Transforms,
) -> Vec<String> {
    let Some(body) = &request.body else {
        return Vec::new();
    };
    let offered = crate::tools::offered_tools(body);
    let facts = Facts::default();
    let mut out: Vec<String> = Vec::new();
    for &rule in &t.strip_tool {
        for i in matching_tool_items(policy, scanner, request, identity, &facts, rule) {
            if let Some(name) = offered.get(i)
                && !out.iter().any(|n| n == name)
            {
                out.push((*name).to_string());
            }
        }
    }
    out
}

/// The model a route names: the model itself, or for `cheapest [..]` the listed model
/// with the lowest input + output price per million tokens (ties: the first listed;
/// models without a price are never the cheapest unless none has one, then the first).
pub fn route_target(policy: &Policy, target: &ir::RouteTarget) -> Option<String> {
    match target {
        ir::RouteTarget::Model(m) => Some(m.clone()),
        ir::RouteTarget::CheapestOf(models) => {
            let priced = models.iter().filter_map(|m| {
                let p = crate::spend::price_for(&policy.prices, m)?;
                Some((p.input_per_mtok.saturating_add(p.output_per_mtok), m))
            });
            let mut best: Option<(i64, &String)> = None;
            for (cost, m) in priced {
                if best.is_none_or(|(c, _)| cost < c) {
                    best = Some((cost, m));
                }
            }
            best.map(|(_, m)| m.clone())
                .or_else(|| models.first().cloned())
        }
    }
}

/// Detectors that enforced response-phase `redact` rules mask in replies (their union,
/// sorted): applied to every reply, since a leaked value must be caught before it is
/// sent, not after the rule's condition is known.
pub fn response_redactions(policy: &Policy) -> Vec<u16> {
    let mut out: Vec<u16> = policy
        .rules
        .iter()
        .enumerate()
        .filter(|(i, r)| r.phase == Phase::Response && !is_monitor(policy, *i))
        .filter_map(|(_, r)| match &r.action {
            Action::Redact { detectors } => Some(detectors.iter().copied()),
            _ => None,
        })
        .flatten()
        .collect();
    out.sort_unstable();
    out.dedup();
    out
}

/// The detectors a rule's condition looks for in the prompt (`prompt has …`), sorted:
/// what a deny of a PII rule names in its message and counts in the audit record.
pub fn prompt_detectors(rule: &ir::Rule) -> Vec<u16> {
    fn walk(e: &Expr, out: &mut Vec<u16>) {
        match e {
            Expr::And(v) | Expr::Or(v) => v.iter().for_each(|e| walk(e, out)),
            Expr::Not(e) => walk(e, out),
            Expr::Has {
                subject: Text::Prompt,
                detectors,
            } => out.extend_from_slice(detectors),
            _ => {}
        }
    }
    let mut out = Vec::new();
    walk(&rule.condition, &mut out);
    out.sort_unstable();
    out.dedup();
    out
}

/// How many values of each of `detectors` the request body holds (every string, the
/// structural ones included), by detector index. Counts only: values never leave here.
pub fn count_in_request(
    scanner: &Scanner,
    request: &Request,
    detectors: &[u16],
) -> std::collections::BTreeMap<u16, u32> {
    let mut counts = std::collections::BTreeMap::new();
    if detectors.is_empty() {
        return counts;
    }
    let mut hits = Vec::new();
    request.any_body_string(|text| {
        scanner.scan(text, detectors, &mut hits);
        for m in &hits {
            *counts.entry(m.detector).or_insert(0u32) += 1;
        }
        false
    });
    counts
}

/// The deny message of a PII rule with the data types found appended, e.g. `Remove
/// identifiers. (found: us_ssn)`: names of detectors, never values. The message is kept
/// as written when nothing was counted.
pub fn deny_message_with_types(
    message: &str,
    scanner: &Scanner,
    counts: &std::collections::BTreeMap<u16, u32>,
) -> String {
    let names: Vec<&str> = counts.keys().filter_map(|&d| scanner.name(d)).collect();
    if names.is_empty() {
        message.to_string()
    } else {
        format!("{message} (found: {})", names.join(", "))
    }
}

/// The response rules decided once the reply is complete: every response rule but the
/// streamed redactions, which the reply rewriter enforces as the reply passes. Computed
/// once per loaded policy, not per reply.
pub fn decided_response_rules(policy: &ir::Policy) -> Vec<usize> {
    policy
        .rules
        .iter()
        .enumerate()
        .filter(|(_, r)| r.phase == Phase::Response && !is_streamed_redaction(r))
        .map(|(i, _)| i)
        .collect()
}

/// True for a response rule `redact` whose condition is only `response has …`: the reply
/// rewriter enforces it while streaming, and the rule fires when it masked something.
pub fn is_streamed_redaction(rule: &ir::Rule) -> bool {
    rule.phase == Phase::Response
        && matches!(rule.action, Action::Redact { .. })
        && matches!(
            rule.condition,
            Expr::Has {
                subject: Text::Response,
                ..
            }
        )
}

/// Evaluation state for one condition. `unsupported` records the first operand the engine
/// cannot compute, so the caller reports the rule as undecided instead of guessing.
pub(crate) struct Ctx<'a> {
    pub(crate) policy: &'a Policy,
    /// `None` while matching workflows, which see headers only and never scan text.
    pub(crate) scanner: Option<&'a Scanner>,
    pub(crate) request: &'a Request,
    pub(crate) identity: &'a Identity,
    pub(crate) headers_only: bool,
    pub(crate) unsupported: Option<Unsupported>,
    pub(crate) facts: &'a Facts<'a>,
    /// Every detector the prompt rules use, when known.
    pub(crate) prompt_union: Option<&'a [u16]>,
    /// Computed on the first `prompt has`: true when no detector of the union finds
    /// anything in the body, so every `prompt has` is false without another pass.
    pub(crate) prompt_clean: Option<bool>,
    /// The tool call or offered tool a per-tool rule is looking at ([`ToolScope`]).
    pub(crate) tool: Option<Bound<'a>>,
}

/// What a per-tool rule quantifies over: the condition is evaluated once per item and the
/// rule fires when it holds for at least one (`docs/tools.md`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ToolScope {
    /// The condition reads no `tool_call.…` or `tool.…`: evaluated once.
    None,
    /// It reads `tool_call.…`: once per tool call of the reply.
    Calls,
    /// It reads `tool.…`: once per tool the request offers.
    Offered,
}

/// The item a per-tool condition is evaluated against.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Bound<'a> {
    Call(&'a crate::tools::ToolCall),
    Offered(&'a str),
}

/// Which items a condition quantifies over ([`ToolScope`]).
pub fn tool_scope(e: &Expr) -> ToolScope {
    fn walk(e: &Expr, calls: &mut bool, offered: &mut bool) {
        let mut field = |f: &Field| match f {
            Field::ToolCallName | Field::ToolArgument(_) => *calls = true,
            Field::ToolName => *offered = true,
            _ => {}
        };
        let mut op = |o: &Operand| {
            if let Operand::Field(f) = o {
                field(f)
            }
        };
        match e {
            Expr::And(v) | Expr::Or(v) => v.iter().for_each(|e| walk(e, calls, offered)),
            Expr::Not(e) => walk(e, calls, offered),
            Expr::Compare { left, right, .. } => {
                op(left);
                op(right);
            }
            Expr::In { operand, .. } => op(operand),
            Expr::Has { subject, .. } => {
                if *subject == Text::ToolArguments {
                    *calls = true;
                }
            }
            Expr::Const(_) => {}
        }
    }
    let (mut calls, mut offered) = (false, false);
    walk(e, &mut calls, &mut offered);
    match (calls, offered) {
        (true, _) => ToolScope::Calls,
        (false, true) => ToolScope::Offered,
        _ => ToolScope::None,
    }
}

/// A resolved operand, borrowed where possible so evaluation allocates nothing.
#[derive(Debug, PartialEq)]
pub(crate) enum Val<'a> {
    Bool(bool),
    Num(f64),
    Money(ir::Micros),
    Str(&'a str),
}

impl<'a> Val<'a> {
    fn of(v: &'a Value) -> Val<'a> {
        match v {
            Value::Bool(b) => Val::Bool(*b),
            Value::Num(n) => Val::Num(*n),
            Value::Money(m) => Val::Money(*m),
            Value::Str(s) => Val::Str(s),
        }
    }
}

impl<'a> Ctx<'a> {
    /// The items (tool calls or offered tools, by position) a per-tool condition holds
    /// for, at most `limit`; for a condition of no tool scope `[0]` when it holds.
    pub(crate) fn matching_items(&mut self, e: &'a Expr, limit: usize) -> Vec<usize> {
        let mut out = Vec::new();
        match tool_scope(e) {
            ToolScope::None => {
                if self.expr(e) {
                    out.push(0);
                }
            }
            ToolScope::Calls => {
                let calls = self.facts.tool_calls;
                for (i, call) in calls.iter().enumerate() {
                    if out.len() >= limit {
                        break;
                    }
                    self.tool = Some(Bound::Call(call));
                    if self.expr(e) {
                        out.push(i);
                    }
                }
            }
            ToolScope::Offered => {
                let request = self.request;
                let offered = match &request.body {
                    Some(b) if !self.headers_only => crate::tools::offered_tools(b),
                    _ => Vec::new(),
                };
                for (i, name) in offered.into_iter().enumerate() {
                    if out.len() >= limit {
                        break;
                    }
                    self.tool = Some(Bound::Offered(name));
                    if self.expr(e) {
                        out.push(i);
                    }
                }
            }
        }
        self.tool = None;
        out
    }

    pub(crate) fn expr(&mut self, e: &'a Expr) -> bool {
        match e {
            Expr::Const(b) => *b,
            Expr::And(items) => items.iter().all(|x| self.expr(x)),
            Expr::Or(items) => items.iter().any(|x| self.expr(x)),
            Expr::Not(inner) => !self.expr(inner),
            Expr::Compare { left, op, right } => {
                match (self.operand(left), self.operand(right)) {
                    (Some(l), Some(r)) => compare(&l, *op, &r),
                    // Total evaluation: a missing value matches no comparison, so `!=`
                    // (the negation of `==`, like `not in`) holds. `workflow !=
                    // "support"` must refuse a request that matched no workflow.
                    _ => *op == CmpOp::Ne,
                }
            }
            Expr::In { operand, set } => match self.operand(operand) {
                Some(v) => set.iter().any(|s| compare(&v, CmpOp::Eq, &Val::of(s))),
                None => false,
            },
            Expr::Has { subject, detectors } => self.has(subject, detectors),
        }
    }

    fn has(&mut self, subject: &Text, detectors: &[u16]) -> bool {
        let Some(scanner) = self.scanner else {
            // Workflow matchers run no detectors (the checker refuses `has` there).
            return false;
        };
        match subject {
            Text::Prompt if self.headers_only => false,
            Text::Prompt => {
                self.body_has(scanner, detectors) || self.carriers_have(scanner, detectors)
            }
            Text::Header(name) => self
                .request
                .header_values(name)
                .any(|v| scanner.any(v, detectors)),
            Text::Query => scanner.any(&self.request.query, detectors),
            Text::ToolArguments => match self.tool {
                Some(Bound::Call(c)) => scanner.any(&c.arguments_json, detectors),
                _ => false,
            },
            Text::ToolResults if self.headers_only => false,
            Text::ToolResults => match &self.request.body {
                Some(b) => crate::tools::any_tool_result(b, |t| scanner.any(t, detectors)),
                None => false,
            },
            Text::Response => match self.facts.reply.and_then(|r| r.body) {
                Some(body) => {
                    crate::request::any_string(body, &mut |text| scanner.any(text, detectors))
                }
                None => {
                    self.unsupported.get_or_insert(Unsupported::ResponseText);
                    false
                }
            },
        }
    }

    /// Whether the body finds any of `detectors`: from the request's one detection pass
    /// when it ran, else with one pass for the whole union to prove the body clean.
    fn body_has(&mut self, scanner: &Scanner, detectors: &[u16]) -> bool {
        if let Some(has) = self
            .request
            .detection
            .as_ref()
            .and_then(|d| d.has_any(detectors))
        {
            return has;
        }
        if let Some(union) = self.prompt_union
            && detectors.iter().all(|d| union.contains(d))
        {
            let request = self.request;
            let clean = *self
                .prompt_clean
                .get_or_insert_with(|| !request.any_body_string(|text| scanner.any(text, union)));
            if clean {
                return false;
            }
        }
        self.request
            .any_body_string(|text| scanner.any(text, detectors))
    }

    /// Whether the workflow's scanned headers or query string (`scan`) find any of
    /// `detectors`: they count as the prompt.
    fn carriers_have(&self, scanner: &Scanner, detectors: &[u16]) -> bool {
        let Some(wf) = self
            .identity
            .workflow
            .and_then(|i| self.policy.workflows.get(i))
        else {
            return false;
        };
        let r = self.request;
        wf.scan_headers
            .iter()
            .any(|h| r.header_values(h).any(|v| scanner.any(v, detectors)))
            || (wf.scan_query && scanner.any(&r.query, detectors))
    }

    pub(crate) fn operand(&mut self, o: &'a Operand) -> Option<Val<'a>> {
        match o {
            Operand::Const(v) => Some(Val::of(v)),
            Operand::Field(f) => self.field(f),
            Operand::Spend { scope, window } => match self.facts.spend {
                Some(spend) => spend(*scope, *window).map(Val::Money),
                None => {
                    self.unsupported.get_or_insert(Unsupported::Spend);
                    None
                }
            },
            Operand::Rate {
                measure,
                scope,
                window,
            } => match self.facts.rate {
                Some(rate) => rate(*measure, *scope, *window).map(|n| Val::Num(n as f64)),
                None => {
                    self.unsupported.get_or_insert(Unsupported::Rate);
                    None
                }
            },
            Operand::Confidence(source) => match self.facts.reply {
                // A missing or unreadable score compares as missing: no comparison holds
                // (the oversight mode escalates such replies on its own, failing safe).
                Some(reply) => {
                    crate::oversight::read_confidence(source, |name| reply.header(name), reply.body)
                        .ok()
                        .map(Val::Num)
                }
                None => {
                    self.unsupported.get_or_insert(Unsupported::Confidence);
                    None
                }
            },
        }
    }

    fn field(&self, f: &'a Field) -> Option<Val<'a>> {
        let r = self.request;
        match f {
            Field::Path => Some(Val::Str(&r.path)),
            Field::Method => Some(Val::Str(&r.method)),
            Field::Header(name) => r.header(name).map(Val::Str),
            Field::Model if self.headers_only => None,
            Field::Model => r.model().map(Val::Str),
            Field::MaxTokens if self.headers_only => None,
            Field::MaxTokens => r.max_tokens().map(Val::Num),
            Field::Stream if self.headers_only => None,
            Field::Stream => r.stream().map(Val::Bool),
            Field::Workflow => self
                .identity
                .workflow
                .and_then(|i| self.policy.workflows.get(i))
                .map(|w| Val::Str(&w.name)),
            Field::Team => self.identity.team.as_deref().map(Val::Str),
            Field::User => self.identity.user.as_deref().map(Val::Str),
            Field::ResponseHeader(name) => {
                self.facts.reply.and_then(|r| r.header(name)).map(Val::Str)
            }
            Field::Status => self.facts.reply.map(|r| Val::Num(f64::from(r.status))),
            Field::ToolCallName => match self.tool {
                Some(Bound::Call(c)) => Some(Val::Str(&c.name)),
                _ => None,
            },
            Field::ToolArgument(pointer) => match self.tool {
                Some(Bound::Call(c)) => match c.argument(pointer)? {
                    serde_json::Value::String(s) => Some(Val::Str(s)),
                    serde_json::Value::Number(n) => n.as_f64().map(Val::Num),
                    serde_json::Value::Bool(b) => Some(Val::Bool(*b)),
                    _ => None,
                },
                _ => None,
            },
            Field::ToolName => match self.tool {
                Some(Bound::Offered(n)) => Some(Val::Str(n)),
                _ => None,
            },
        }
    }
}

/// Compares two values. Values of different types are unequal and unordered: `!=` holds
/// and every other operator is false.
fn compare(l: &Val<'_>, op: CmpOp, r: &Val<'_>) -> bool {
    use std::cmp::Ordering;
    let ord: Option<Ordering> = match (l, r) {
        (Val::Bool(a), Val::Bool(b)) => Some(a.cmp(b)),
        (Val::Num(a), Val::Num(b)) => a.partial_cmp(b),
        (Val::Money(a), Val::Money(b)) => Some(a.cmp(b)),
        (Val::Str(a), Val::Str(b)) => Some(a.cmp(b)),
        _ => None,
    };
    let Some(ord) = ord else {
        return op == CmpOp::Ne;
    };
    match op {
        CmpOp::Eq => ord == Ordering::Equal,
        CmpOp::Ne => ord != Ordering::Equal,
        CmpOp::Lt => ord == Ordering::Less,
        CmpOp::Le => ord != Ordering::Greater,
        CmpOp::Gt => ord == Ordering::Greater,
        CmpOp::Ge => ord != Ordering::Less,
    }
}

#[cfg(test)]
#[path = "eval_tests.rs"]
mod tests;
