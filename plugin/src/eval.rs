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
        }
    }
}

/// One rule whose condition held.
#[derive(Debug, Clone, PartialEq)]
pub struct Fired {
    /// Index into `Policy::rules`.
    pub rule: usize,
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
    /// `confidence(...)` is a response-phase operand.
    Confidence,
    /// Response text is not available in the request phase.
    ResponseText,
}

impl Unsupported {
    /// A short reason for logs and audit records.
    pub fn as_str(self) -> &'static str {
        match self {
            Unsupported::Spend => "spend is not enforced yet",
            Unsupported::Confidence => "confidence is not evaluated yet",
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
        Ok(Engine { policy, scanner })
    }

    /// Decodes a serialized policy (as embedded in an artifact) and builds its detectors.
    pub fn load(blob: &[u8]) -> Result<Engine, LoadError> {
        Engine::new(Policy::decode(blob).map_err(LoadError::Decode)?)
    }

    /// [`evaluate_request`] with this engine's policy and detectors.
    pub fn evaluate_request(&self, request: &Request) -> Decision {
        evaluate_request(&self.policy, &self.scanner, request)
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

/// Evaluates the request-phase rules of `policy` against `request`.
///
/// Rules are visited in source order. A rule in monitor mode (its own or the policy's) is
/// recorded as [`Effect::WouldHave`] and changes nothing. The first enforced deny wins and
/// stops evaluation (nothing outranks it in [`Action::precedence`]); other enforced actions
/// combine and are listed for the adapter.
pub fn evaluate_request(policy: &Policy, scanner: &Scanner, request: &Request) -> Decision {
    let identity = identify(policy, request);
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
    };
    let mut deny = None;
    for (i, rule) in policy.rules.iter().enumerate() {
        if rule.phase != Phase::Request {
            continue;
        }
        ctx.unsupported = None;
        let holds = ctx.expr(&rule.condition);
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
        let monitor =
            policy.enforcement == Enforcement::Monitor || rule.enforcement == Enforcement::Monitor;
        let effect = if monitor {
            Effect::WouldHave
        } else {
            match &rule.action {
                Action::Allow | Action::Deny { .. } => Effect::Enforced,
                // Filled by later changes: the streaming rewriter (redact, tokenise), model
                // rewriting (route), the review queue (escalate) and cost labels (tag).
                Action::Redact { .. }
                | Action::Tokenise { .. }
                | Action::Route(_)
                | Action::Escalate { .. }
                | Action::Tag { .. } => Effect::NotEnforcedYet,
            }
        };
        decision.fired.push(Fired {
            rule: i,
            clause: rule.clause.clone(),
            title: rule.title.clone(),
            action: ActionKind::of(&rule.action),
            monitor,
            effect,
        });
        if let (false, Action::Deny { status, message }) = (monitor, &rule.action) {
            deny = Some(Verdict::Deny {
                status: *status,
                message: message.clone(),
                clause: rule.clause.clone(),
                rule: i,
            });
            break;
        }
    }
    if let Some(verdict) = deny {
        // A deny overrides every enforced transformation that fired before it.
        for f in &mut decision.fired {
            if f.effect != Effect::WouldHave && f.action != ActionKind::Deny {
                f.effect = Effect::Overridden;
            }
        }
        decision.verdict = verdict;
    }
    decision
}

/// Evaluation state for one condition. `unsupported` records the first operand the engine
/// cannot compute, so the caller reports the rule as undecided instead of guessing.
struct Ctx<'a> {
    policy: &'a Policy,
    /// `None` while matching workflows, which see headers only and never scan text.
    scanner: Option<&'a Scanner>,
    request: &'a Request,
    identity: &'a Identity,
    headers_only: bool,
    unsupported: Option<Unsupported>,
}

/// A resolved operand, borrowed where possible so evaluation allocates nothing.
#[derive(Debug, PartialEq)]
enum Val<'a> {
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
    fn expr(&mut self, e: &'a Expr) -> bool {
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
            Expr::Has { subject, detectors } => self.has(*subject, detectors),
        }
    }

    fn has(&mut self, subject: Text, detectors: &[u16]) -> bool {
        match subject {
            Text::Prompt if self.headers_only => false,
            Text::Prompt => match self.scanner {
                Some(scanner) => self
                    .request
                    .any_body_string(|text| scanner.any(text, detectors)),
                None => false,
            },
            Text::Response => {
                self.unsupported.get_or_insert(Unsupported::ResponseText);
                false
            }
        }
    }

    fn operand(&mut self, o: &'a Operand) -> Option<Val<'a>> {
        match o {
            Operand::Const(v) => Some(Val::of(v)),
            Operand::Field(f) => self.field(f),
            Operand::Spend { .. } => {
                self.unsupported.get_or_insert(Unsupported::Spend);
                None
            }
            Operand::Confidence(_) => {
                self.unsupported.get_or_insert(Unsupported::Confidence);
                None
            }
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
            // Response-phase fields; the response evaluator fills them in a later change.
            Field::ResponseHeader(_) | Field::Status => None,
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
