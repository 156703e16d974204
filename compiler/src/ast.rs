//! The typed syntax tree of a `.policy` file. Every node carries the byte span it came
//! from so checks can point at it; nothing here knows pest.
//!
//! Equality ignores spans ([`Span`]'s `PartialEq` is always true): two trees are equal when
//! they say the same thing, which is what the formatter's round-trip oracle needs.

/// A byte range in the source. Spans compare equal to each other on purpose (see the
/// module doc); use [`Span::same`] to compare positions.
#[derive(Debug, Clone, Copy, Default, Eq)]
pub struct Span {
    pub start: u32,
    pub end: u32,
}

impl PartialEq for Span {
    fn eq(&self, _other: &Span) -> bool {
        true
    }
}

impl Span {
    /// A span from byte offsets (saturating at `u32::MAX`; policies are far smaller).
    pub fn new(start: usize, end: usize) -> Span {
        Span {
            start: u32::try_from(start).unwrap_or(u32::MAX),
            end: u32::try_from(end).unwrap_or(u32::MAX),
        }
    }

    /// Compares positions, which `==` deliberately does not.
    pub fn same(&self, other: &Span) -> bool {
        self.start == other.start && self.end == other.end
    }

    /// The smallest span covering both.
    pub fn to(&self, other: Span) -> Span {
        Span {
            start: self.start.min(other.start),
            end: self.end.max(other.end),
        }
    }
}

/// A value with the span it was written at.
#[derive(Debug, Clone, PartialEq)]
pub struct Node<T> {
    pub node: T,
    pub span: Span,
}

impl<T> Node<T> {
    pub fn new(node: T, span: Span) -> Node<T> {
        Node { node, span }
    }
}

/// A name (`employee_id`, `HOTL`, `month`).
pub type Ident = Node<String>;
/// A string literal, unescaped.
pub type Str = Node<String>;

/// A number as written (kept so the formatter prints `0.70`, not `0.7`) and its value.
#[derive(Debug, Clone, PartialEq)]
pub struct Num {
    pub text: String,
    pub value: f64,
}

/// A whole file: its items in source order and its comments (for the formatter).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct File {
    pub items: Vec<Node<Item>>,
    pub comments: Vec<Comment>,
    /// Spans of the conditions the author wrote in parentheses (the span of what is inside):
    /// the tree does not need them, `writ fmt` keeps them.
    pub parens: Vec<Span>,
}

/// A `# …` comment; `text` includes the `#`.
#[derive(Debug, Clone, PartialEq)]
pub struct Comment {
    pub text: String,
    pub span: Span,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Item {
    Policy(PolicyItem),
    Workflow(WorkflowItem),
    Price(PriceItem),
    Detector(DetectorItem),
    Rule(RuleItem),
    Manual(ManualItem),
    KillSwitch(KillSwitchItem),
}

/// `policy "name" version "1.2.3" { … }`
#[derive(Debug, Clone, PartialEq)]
pub struct PolicyItem {
    pub name: Str,
    pub version: Str,
    pub stmts: Vec<Node<PolicyStmt>>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum PolicyStmt {
    Owner(Str),
    Implements(Str),
    Currency(Ident),
    Enforcement(Ident),
}

/// `workflow "name" { … }`
#[derive(Debug, Clone, PartialEq)]
pub struct WorkflowItem {
    pub name: Str,
    pub stmts: Vec<Node<WorkflowStmt>>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum WorkflowStmt {
    Match(Node<Cond>),
    Oversight {
        mode: Ident,
        below: Option<Node<Num>>,
        sample: Option<Node<Num>>,
    },
    /// `assume verification_rate <= 10%`; `percent` says whether the value had a `%`,
    /// `currency` the currency of an amount (`assume cost_per_transaction <= 1.10 EUR`).
    Assume {
        name: Ident,
        op: Node<CmpOp>,
        value: Node<Num>,
        percent: bool,
        currency: Option<Ident>,
    },
    Identify(Vec<Node<Identity>>),
    /// `scan headers ["x-note"]` / `scan query`: more request carriers that count as the
    /// prompt (searched by `prompt has`, rewritten by `tokenise`/`redact`).
    Scan(ScanTarget),
    /// `review_cost 4.50 EUR` / `manual_cost 6.00 EUR`: the business case's unit costs.
    Cost {
        kind: CostKind,
        amount: Node<Amount>,
    },
    /// `rollout { purpose "…" dri "…" phase beta … }`: the workflow's rollout pack.
    Rollout(Vec<Node<RolloutField>>),
    // ---- operating model (issue 15) ----
    /// `kill_point verification_rate > 40% over 1 day [after 50 requests] [then stop]`.
    KillPoint(KillPoint),
    /// `review_signals [after N reviews] { median_review_time < 30s, approval_rate > 98%, … }`.
    ReviewSignals {
        after: Option<Node<Num>>,
        signals: Vec<Node<ReviewSignal>>,
    },
    /// `handoff includes output`: what else the handoff carries (the word after
    /// `includes`, checked to be `output`).
    HandoffIncludes(Ident),
    /// `fallback on 5xx, 429 to model "m" then cluster "c" then reply 503 "…"`: what the
    /// gateway does when the provider fails (`docs/fallback.md`).
    Fallback {
        /// The failure kinds as written (`5xx`, `429`, `timeout`, `connect`).
        on: Vec<Ident>,
        /// The steps in order; empty when the author wrote no `to` (an error).
        steps: Vec<Node<FallbackStep>>,
    },
}

/// A condition under which a workflow must stop, measured by the gateway.
#[derive(Debug, Clone, PartialEq)]
pub struct KillPoint {
    /// `cost_per_transaction` or `verification_rate`.
    pub metric: Ident,
    pub op: Node<CmpOp>,
    /// The threshold's number.
    pub value: Node<Num>,
    /// Whether the threshold was written as a percentage.
    pub percent: bool,
    /// The threshold's currency, when it was an amount with one.
    pub currency: Option<Ident>,
    /// `over N unit`: the window's length and unit word (`hour(s)`, `day(s)`).
    pub over: Node<Num>,
    pub unit: Ident,
    /// `after N requests`: the sample needed before the point is judged.
    pub after: Option<Node<Num>>,
    /// `then stop`: cross it and the workflow's kill switch flips.
    pub stop: bool,
}

/// One rubber-stamp signal: `name op value`, where the value may carry a unit (`30s`,
/// `98%`).
#[derive(Debug, Clone, PartialEq)]
pub struct ReviewSignal {
    pub name: Ident,
    pub op: Node<CmpOp>,
    pub value: Node<Num>,
    /// `%`, `s`, `m`, `h`, or empty for a bare number.
    pub unit: String,
}

/// Which unit cost a `Cost` statement gives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CostKind {
    /// The cost of one human verification.
    Review,
    /// The cost of one transaction done wholly by hand, without AI.
    Manual,
}

impl CostKind {
    /// The keyword as written.
    pub fn as_str(self) -> &'static str {
        match self {
            CostKind::Review => "review_cost",
            CostKind::Manual => "manual_cost",
        }
    }
}

/// One line of a `rollout { … }` block: a field name and its value.
#[derive(Debug, Clone, PartialEq)]
pub struct RolloutField {
    pub key: Ident,
    pub value: Node<RolloutValue>,
}

/// A rollout-pack value as written.
#[derive(Debug, Clone, PartialEq)]
pub enum RolloutValue {
    /// `"…"`
    Text(String),
    /// `["…", "…"]` (the check requires strings).
    List(Vec<Node<Lit>>),
    /// A bare word, e.g. the phase `beta`.
    Word(String),
}

/// One step of a workflow's `fallback`.
#[derive(Debug, Clone, PartialEq)]
pub enum FallbackStep {
    /// `model "gpt-4o-mini"`: the same request to another model.
    Model(Str),
    /// `cluster "backup-openai"`: the same request to another upstream.
    Cluster(Str),
    /// `reply 503 "…"`: a fixed answer in the API's error shape (degraded mode).
    Reply { status: Node<Num>, message: Str },
    /// `human "queue"`: a handoff to the review queue, and 202 to the client.
    Human(Str),
}

/// What a `scan` statement adds to the prompt.
#[derive(Debug, Clone, PartialEq)]
pub enum ScanTarget {
    /// The named request headers (string literals, checked to be header names).
    Headers(Node<Vec<Node<Lit>>>),
    /// The query string of the request's `:path`.
    Query,
}

/// `team by trusted header "x-team"`
#[derive(Debug, Clone, PartialEq)]
pub struct Identity {
    pub who: Ident,
    pub trusted: bool,
    pub header: Str,
}

/// `price "model" input 0.15 EUR output 0.60 EUR cached 0.075 EUR per 1M tokens`
#[derive(Debug, Clone, PartialEq)]
pub struct PriceItem {
    pub model: Str,
    pub input: Node<Amount>,
    pub output: Node<Amount>,
    pub cached: Option<Node<Amount>>,
}

/// A number with an optional currency word after it.
#[derive(Debug, Clone, PartialEq)]
pub struct Amount {
    pub num: Num,
    pub currency: Option<Ident>,
}

/// `detector name = regex "…" [validate luhn] [class pii]`
#[derive(Debug, Clone, PartialEq)]
pub struct DetectorItem {
    pub name: Ident,
    pub pattern: Str,
    pub validator: Option<Ident>,
    pub class: Option<Ident>,
}

/// `rule AIP-2.1 "title" { … }`
#[derive(Debug, Clone, PartialEq)]
pub struct RuleItem {
    pub id: Ident,
    pub title: Str,
    pub stmts: Vec<Node<RuleStmt>>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum RuleStmt {
    On(Ident),
    When(Node<Cond>),
    Then(Node<Action>),
    Enforcement(Ident),
    AlertAt(Node<Num>),
}

/// `manual AIP-8.2 "title" { owner "…" reason "…" }`
#[derive(Debug, Clone, PartialEq)]
pub struct ManualItem {
    pub id: Ident,
    pub title: Str,
    pub stmts: Vec<Node<ManualStmt>>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum ManualStmt {
    Owner(Str),
    Reason(Str),
}

/// `kill_switch AIP-6.1 { admin path "…" token sha256 "…" }`
#[derive(Debug, Clone, PartialEq)]
pub struct KillSwitchItem {
    /// The paper policy clause the kill switch implements, if the policy names one.
    pub clause: Option<Ident>,
    pub stmts: Vec<Node<KillStmt>>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum KillStmt {
    AdminPath(Str),
    TokenSha256(Str),
}

/// A condition. `And`/`Or` are n-ary: `a and b and c` is one node.
#[derive(Debug, Clone, PartialEq)]
pub enum Cond {
    And(Vec<Node<Cond>>),
    Or(Vec<Node<Cond>>),
    Not(Box<Node<Cond>>),
    Compare {
        left: Node<Operand>,
        op: Node<CmpOp>,
        right: Node<Operand>,
    },
    In {
        operand: Node<Operand>,
        negated: bool,
        list: Node<Vec<Node<Lit>>>,
    },
    Has {
        subject: Node<Subject>,
        target: Node<HasTarget>,
    },
    /// An operand standing alone, e.g. `stream`; must be boolean.
    Bare(Node<Operand>),
    /// A part the parser already reported (e.g. nested too deeply); checks skip it.
    Error,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum CmpOp {
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
}

impl CmpOp {
    /// The operator as written.
    pub fn as_str(self) -> &'static str {
        match self {
            CmpOp::Eq => "==",
            CmpOp::Ne => "!=",
            CmpOp::Lt => "<",
            CmpOp::Le => "<=",
            CmpOp::Gt => ">",
            CmpOp::Ge => ">=",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Subject {
    Prompt,
    Response,
    /// One request header's value(s), by name as written.
    Header(String),
    /// The request's query string.
    Query,
    /// `tool_call.arguments`: the arguments text of the reply's tool call being read.
    ToolArguments,
    /// `tool_result`: the tool results the request sends back (`role: tool`).
    ToolResults,
}

/// `pii(email, phone)`, `secret`, … — a class and optionally the detectors named.
#[derive(Debug, Clone, PartialEq)]
pub struct HasTarget {
    pub class: Ident,
    pub names: Option<Vec<Ident>>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Operand {
    /// `model`, `team`, … (checked against the known fields).
    Field(Ident),
    Header(Str),
    ResponseHeader(Str),
    /// `tool_call.name` (a reply's tool call) or `tool.name` (a tool the request offers).
    ToolName {
        call: bool,
    },
    /// `tool_call.argument "/pointer"`: a typed value in the call's arguments.
    ToolArgument(Str),
    /// `spend(team, month)`, `confidence(header "x")`.
    Call {
        name: Ident,
        args: Vec<Node<CallArg>>,
    },
    Lit(Lit),
}

#[derive(Debug, Clone, PartialEq)]
pub enum CallArg {
    Name(Ident),
    Header(Str),
    Json(Str),
}

#[derive(Debug, Clone, PartialEq)]
pub enum Lit {
    Str(String),
    Num(Num),
    Percent(Num),
    Money { num: Num, currency: Ident },
    Bool(bool),
    List(Vec<Node<Lit>>),
}

#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    Allow,
    Deny {
        status: Node<Num>,
        message: Str,
    },
    Redact(Option<Node<HasTarget>>),
    Tokenise(Option<Node<HasTarget>>),
    Route(Str),
    RouteCheapest(Node<Vec<Node<Lit>>>),
    Escalate {
        queue: Str,
        reason: Str,
    },
    Tag {
        key: Str,
        value: Str,
    },
    /// `escalate "queue" reason "…" hold`: withhold the reply's tool calls for approval.
    Hold {
        queue: Str,
        reason: Str,
    },
    /// `strip tool`: remove the offered tools the condition holds for.
    StripTool,
    /// A word that is not an action; reported by the checker with a suggestion.
    Unknown(Ident),
}
