//! The compiled policy: the contract between `writ-compiler` (which lowers a checked AST
//! into it) and the engine (which evaluates it). It is serialized with postcard into the
//! artifact, so every change here must bump [`FORMAT_VERSION`].
//!
//! Architecture invariant: the IR holds only what evaluation needs, already resolved —
//! names are indices, lists are sorted sets, money is integer micro-units — so the engine
//! does no name lookup, parsing or regex compilation when a VM starts.

use serde::{Deserialize, Serialize};

/// Leading bytes of the serialized policy blob, so a loader can refuse foreign data.
pub const MAGIC: [u8; 4] = *b"WRIT";
/// Version of the serialized IR; the engine refuses blobs of any other version.
pub const FORMAT_VERSION: u32 = 2;

/// Money in millionths of the policy's currency unit, so sums never drift.
pub type Micros = i64;

/// A whole compiled policy.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Policy {
    pub name: String,
    pub version: String,
    /// sha256 (hex) of the `.policy` source, for audit records.
    pub source_sha256: String,
    /// ISO 4217 code used by every price and budget in the policy (one currency per policy).
    pub currency: String,
    /// Policy-wide default; a rule may override it.
    pub enforcement: Enforcement,
    /// In source order; a request belongs to the first workflow whose matcher is true.
    pub workflows: Vec<Workflow>,
    pub prices: Vec<Price>,
    /// Built-in detectors the policy uses and its custom ones; `Expr::Has` refers to them by index.
    pub detectors: Vec<Detector>,
    /// In source order; the engine combines matches by [`Action::precedence`].
    pub rules: Vec<Rule>,
    pub kill_switch: Option<KillSwitch>,
}

/// Whether a rule acts, or only records what it would have done.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Enforcement {
    Enforce,
    Monitor,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Workflow {
    pub name: String,
    /// Evaluated on request headers only (before the body arrives).
    pub matcher: Expr,
    pub oversight: Oversight,
    /// The share of outputs the paper policy assumes a human verifies, as a fraction 0..=1.
    pub assumed_verification_rate: Option<f64>,
    pub team: Option<Identity>,
    pub user: Option<Identity>,
    /// Lower-case names of request headers that count as the prompt (`scan headers`):
    /// `prompt has` searches them and `tokenise`/`redact` rewrite them.
    pub scan_headers: Vec<String>,
    /// The query string counts as the prompt (`scan query`).
    pub scan_query: bool,
    /// The workflow's business case (`assume cost_per_transaction`, `review_cost`,
    /// `manual_cost`). Evaluation does not read it today; it travels with the artifact so
    /// the gateway can price a verification (kill points on the cost per transaction) and
    /// so an artifact states the business case it was tested under. Defaulted so readers
    /// of a self-describing form (JSON) accept a workflow written without it.
    #[serde(default)]
    pub business_case: BusinessCase,
    // ---- operating model (issue 15): kill points, review signals, handoff context ----
    /// Conditions under which the workflow must stop (`kill_point …`), in source order.
    #[serde(default)]
    pub kill_points: Vec<KillPoint>,
    /// Rubber-stamp signals on the verdicts reviewers post (`review_signals { … }`).
    #[serde(default)]
    pub review_signals: Option<ReviewSignals>,
    /// `handoff includes output`: the handoff carries the model's output, PII still
    /// tokenised.
    #[serde(default)]
    pub handoff_output: bool,
    /// What happens when the provider fails (`fallback on … to …`); `None` passes the
    /// failure to the client.
    pub fallback: Option<Fallback>,
}

/// A workflow's answer to a failing provider: on which failures, and the steps to try in
/// order (`plugin/src/fallback.rs` runs it; `docs/fallback.md`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Fallback {
    /// The failure kinds that start the fallback.
    pub on: Vec<Failure>,
    /// Retries first, a degraded answer (if any) last.
    pub steps: Vec<FallbackStep>,
}

/// How an upstream attempt failed, as far as fallback cares.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Failure {
    /// The provider answered 500..=599.
    Status5xx,
    /// The provider answered 429 (rate limited).
    Status429,
    /// No answer within the host's upstream timeout.
    Timeout,
    /// The connection failed or was reset before an answer.
    Connect,
}

impl Failure {
    /// The word the language and the audit record use.
    pub fn as_str(self) -> &'static str {
        match self {
            Failure::Status5xx => "5xx",
            Failure::Status429 => "429",
            Failure::Timeout => "timeout",
            Failure::Connect => "connect",
        }
    }
}

/// What a kill point measures.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum KillMetric {
    /// The business case's cost per transaction in the policy's currency: settled AI spend
    /// per successful reply + verification rate × `review_cost`.
    CostPerTransaction,
    /// The share of outputs sent to a human.
    VerificationRate,
}

impl KillMetric {
    /// The measure's name in the language, metric labels and audit records.
    pub fn as_str(self) -> &'static str {
        match self {
            KillMetric::CostPerTransaction => "cost_per_transaction",
            KillMetric::VerificationRate => "verification_rate",
        }
    }
}

/// `kill_point METRIC > VALUE over N UNIT [after N requests] [then stop]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct KillPoint {
    pub metric: KillMetric,
    /// `>=` rather than `>`.
    pub inclusive: bool,
    /// A fraction 0..=1 for a rate; currency units (not micros: it bounds an average) for
    /// a cost.
    pub threshold: f64,
    /// The window: `buckets` calendar buckets of `window` (the current one and the ones
    /// before it).
    pub window: Window,
    pub buckets: u32,
    /// Replies the window must hold before the point is judged.
    pub min_requests: u64,
    /// Flip the workflow's kill switch when crossed.
    pub stop: bool,
    /// The statement as written (canonical form), for alerts and audit records.
    pub text: String,
}

/// Rubber-stamp signals: each is judged on the verdicts of one day once `min_reviews`
/// verdicts came in, and raised at most once per workflow and day.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReviewSignals {
    /// Raised when the median seconds spent per review falls under this floor.
    pub median_review_secs_below: Option<f64>,
    /// Raised when the share of `approved` verdicts exceeds this fraction.
    pub approval_rate_above: Option<f64>,
    /// Raised when one reviewer's share of verdicts exceeds this fraction.
    pub reviewer_share_above: Option<f64>,
    /// Verdicts needed in the day before any signal is judged.
    pub min_reviews: u64,
}

impl ReviewSignals {
    /// The names of the signals set, as the language writes them.
    pub fn names(&self) -> Vec<&'static str> {
        let mut out = Vec::new();
        if self.median_review_secs_below.is_some() {
            out.push("median_review_time");
        }
        if self.approval_rate_above.is_some() {
            out.push("approval_rate");
        }
        if self.reviewer_share_above.is_some() {
            out.push("reviewer_share");
        }
        out
    }
}

/// The business case of a workflow, in micros of the policy's currency; each part is
/// optional. The model: cost per transaction = AI spend per request + verification rate ×
/// review cost (`docs/operating-model.md`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct BusinessCase {
    /// `assume cost_per_transaction <= …`: the most one transaction may cost.
    pub cost_per_transaction: Option<Micros>,
    /// `review_cost …`: the cost of one human verification.
    pub review_cost: Option<Micros>,
    /// `manual_cost …`: the cost of one transaction done wholly by hand.
    pub manual_cost: Option<Micros>,
}

/// One step of a [`Fallback`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum FallbackStep {
    /// The same request, to another model (every request rule re-checked for it).
    Model(String),
    /// The same request, to another upstream cluster.
    Cluster(String),
    /// A fixed answer: this status and message in the API's error shape.
    Reply { status: u16, message: String },
    /// A handoff to this review queue, and 202 to the client.
    Human { queue: String },
}

/// How much human review a workflow's outputs get.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Oversight {
    /// Human in the loop: every output is reviewed.
    Hitl,
    /// Human on the loop: outputs under the confidence threshold are reviewed.
    Hotl { threshold: f64 },
    /// Human in command: no per-request review; optionally a random sample (fraction 0..=1).
    Hic { sample_rate: f64 },
}

/// Where a request's team or user comes from, and whether a client could forge it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Identity {
    /// Lower-case header name.
    pub header: String,
    /// True when the header is set by a trusted component (e.g. Envoy `jwt_authn` claims).
    pub trusted: bool,
}

/// Price of a model per one million tokens.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Price {
    pub model: String,
    pub input_per_mtok: Micros,
    pub output_per_mtok: Micros,
    pub cached_input_per_mtok: Option<Micros>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Detector {
    /// The name rules use, e.g. `email` or a custom `employee_id`.
    pub name: String,
    pub class: DetectorClass,
    pub kind: DetectorKind,
}

/// Whether a detector finds personal data or credentials; `pii` and `secret` in the
/// language stand for every detector of the class.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum DetectorClass {
    Pii,
    Secret,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum DetectorKind {
    /// One of the engine's built-in detectors, by its language name (`email`, `iban`, …).
    Builtin(String),
    /// A policy's own pattern, compiled at build time.
    Custom(CustomDetector),
}

/// A custom regex detector, compiled ahead of time so the engine never compiles a regex.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CustomDetector {
    /// The source pattern, kept for `writ inspect` and diagnostics only.
    pub pattern: String,
    /// regex-automata dense DFA for leftmost-first search, little-endian serialized.
    pub forward_dfa: Vec<u8>,
    /// The reverse DFA that finds match starts, little-endian serialized.
    pub reverse_dfa: Vec<u8>,
    /// A built-in checksum to confirm candidates (`luhn`, `iban`, …), if any.
    pub validator: Option<String>,
}

/// Which side of the exchange a rule inspects.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Phase {
    Request,
    Response,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Rule {
    /// The paper policy's clause id, e.g. `AIP-3.1`. Several rules may share one.
    pub clause: String,
    pub title: String,
    pub phase: Phase,
    pub condition: Expr,
    pub action: Action,
    pub enforcement: Enforcement,
    /// Spend rules: raise an alert once spend crosses this percentage of the limit.
    pub alert_at_percent: Option<u8>,
    /// 1-based line of the rule in its source, for audit and coverage.
    pub line: u32,
}

/// A condition. Evaluation is total: a missing field compares false, never errors.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Expr {
    Const(bool),
    And(Vec<Expr>),
    Or(Vec<Expr>),
    Not(Box<Expr>),
    Compare {
        left: Operand,
        op: CmpOp,
        right: Operand,
    },
    /// Membership in a constant set, sorted for binary search.
    In {
        operand: Operand,
        set: Vec<Value>,
    },
    /// True when any of the detectors (indices into `Policy::detectors`) finds a value in the text.
    Has {
        subject: Text,
        detectors: Vec<u16>,
    },
}

impl Expr {
    /// Calls `f` on every operand the condition reads, depth first, so the modules that
    /// need to know which counters or ledgers a policy reads do not each walk the tree.
    pub fn for_each_operand<'a>(&'a self, f: &mut impl FnMut(&'a Operand)) {
        match self {
            Expr::And(v) | Expr::Or(v) => v.iter().for_each(|e| e.for_each_operand(f)),
            Expr::Not(e) => e.for_each_operand(f),
            Expr::Compare { left, right, .. } => {
                f(left);
                f(right);
            }
            Expr::In { operand, .. } => f(operand),
            Expr::Const(_) | Expr::Has { .. } => {}
        }
    }
}

impl Policy {
    /// What `pick` takes from the operands of the request-phase rules' conditions,
    /// deduplicated, in first-use order.
    pub fn request_operands<T: PartialEq>(&self, pick: impl Fn(&Operand) -> Option<T>) -> Vec<T> {
        let mut out = Vec::new();
        for rule in self.rules.iter().filter(|r| r.phase == Phase::Request) {
            rule.condition.for_each_operand(&mut |o| {
                if let Some(t) = pick(o)
                    && !out.contains(&t)
                {
                    out.push(t);
                }
            });
        }
        out
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum CmpOp {
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
}

/// Text a detector can scan.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Text {
    /// Every string value and key of the request's JSON body, plus the workflow's
    /// scanned headers and query string.
    Prompt,
    /// Every string value of the reply (JSON or the concatenated SSE deltas).
    Response,
    /// Every value of one request header (lower-case name).
    Header(String),
    /// The request's query string, as sent (percent-encoding is seen through).
    Query,
    /// The `function.arguments` text of the tool call the rule is looking at (response
    /// phase; see `docs/tools.md` for how a rule reads a reply with several calls).
    ToolArguments,
    /// The tool results the request sends back (`role: tool` and `role: function`
    /// messages' content), request phase.
    ToolResults,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Operand {
    Const(Value),
    Field(Field),
    /// Money spent in the current calendar window by the request's scope, plus reservations
    /// in flight, plus this request's estimated cost.
    Spend {
        scope: Scope,
        window: Window,
    },
    /// The reply's confidence score, 0..=1.
    Confidence(ConfidenceSource),
    /// Tokens or requests counted for the request's scope in the current fixed window,
    /// this request included (tokens: settled usage plus reservations in flight plus this
    /// request's estimate). Request phase only; counted by the `rate_limit` module.
    Rate {
        measure: Measure,
        scope: Scope,
        window: RateWindow,
    },
}

/// What a rate limit counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Measure {
    /// Model tokens (prompt and completion), reserved from the estimate and settled from
    /// the provider's `usage`.
    Tokens,
    /// Requests, counted when admitted.
    Requests,
}

/// A fixed rate-limit window aligned to UTC (`minute` starts at second 0).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum RateWindow {
    Minute,
    Hour,
    Day,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Field {
    /// The requested model (`model` in the JSON body).
    Model,
    Path,
    Method,
    /// A request header, lower-case name.
    Header(String),
    /// A response header, lower-case name (response phase only).
    ResponseHeader(String),
    /// The reply's HTTP status (response phase only).
    Status,
    Workflow,
    Team,
    User,
    /// `max_tokens` (or `max_completion_tokens`) in the body.
    MaxTokens,
    /// `stream` in the body.
    Stream,
    /// `tool_call.name`: the function name of the reply's tool call the rule is looking at.
    ToolCallName,
    /// `tool_call.argument "/ptr"`: a typed value inside that call's arguments (an RFC
    /// 6901 JSON pointer into the parsed `function.arguments`).
    ToolArgument(String),
    /// `tool.name`: the name of the offered tool (`tools[]` of the request) the rule is
    /// looking at.
    ToolName,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Scope {
    Workflow,
    Team,
    User,
}

/// A calendar window in UTC.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Window {
    Hour,
    Day,
    Month,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ConfidenceSource {
    /// A reply header carrying a number 0..=1, lower-case name.
    Header(String),
    /// An RFC 6901 JSON pointer into the reply body.
    JsonPointer(String),
}

/// A constant. Ordering across variants is by variant, then value, so sets sort totally.
#[derive(Debug, Clone, PartialEq, PartialOrd, Serialize, Deserialize)]
pub enum Value {
    Bool(bool),
    Num(f64),
    Money(Micros),
    Str(String),
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Action {
    /// Records that the rule matched; never overrides another rule's action.
    Allow,
    /// Answers the client locally with an OpenAI-style JSON error.
    Deny { status: u16, message: String },
    /// Replaces each value found by these detectors with a typed mask such as `[EMAIL]`.
    Redact { detectors: Vec<u16> },
    /// Replaces each value with a placeholder and restores it in the reply.
    Tokenise { detectors: Vec<u16> },
    /// Rewrites the request's model.
    Route(RouteTarget),
    /// Marks the reply for human review and hands it to a review queue.
    Escalate { queue: String, reason: String },
    /// Adds a cost-attribution label to the audit record and metrics.
    Tag { key: String, value: String },
    /// Withholds the reply's tool calls until a reviewer approves them: the client gets a
    /// `pending_approval` answer and, once approved, the held reply on retry
    /// (`docs/tools.md`).
    Hold { queue: String, reason: String },
    /// Removes each offered tool the condition holds for from the request's `tools`.
    StripTool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum RouteTarget {
    Model(String),
    /// The approved model with the lowest input+output price in the policy's price table.
    CheapestOf(Vec<String>),
}

impl Action {
    /// Higher wins when several matching rules disagree: deny > hold > escalate > route >
    /// tokenise > redact, strip tool > tag > allow. Transformations of different kinds
    /// combine; deny stops everything else. Documented in `docs/language.md`.
    pub fn precedence(&self) -> u8 {
        match self {
            Action::Deny { .. } => 7,
            Action::Hold { .. } => 6,
            Action::Escalate { .. } => 5,
            Action::Route(_) => 4,
            Action::Tokenise { .. } => 3,
            Action::Redact { .. } | Action::StripTool => 2,
            Action::Tag { .. } => 1,
            Action::Allow => 0,
        }
    }
}

/// How an operator stops and resumes workflows without a redeploy.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KillSwitch {
    /// The paper policy clause it implements, so coverage and audit records can cite it.
    pub clause: Option<String>,
    /// Request path of the admin endpoint the filter answers itself.
    pub admin_path: String,
    /// sha256 (hex) of the bearer token an operator must present.
    pub token_sha256: String,
}

/// Errors reading a serialized policy; the engine fails closed on any of them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DecodeError {
    BadMagic,
    UnsupportedVersion(u32),
    Malformed(String),
}

impl std::fmt::Display for DecodeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DecodeError::BadMagic => write!(f, "not a writ policy blob"),
            DecodeError::UnsupportedVersion(v) => write!(
                f,
                "policy format version {v} is not supported (this engine reads {FORMAT_VERSION})"
            ),
            DecodeError::Malformed(e) => write!(f, "malformed policy blob: {e}"),
        }
    }
}

impl std::error::Error for DecodeError {}

/// The id of the `n`th (1-based) rule citing `clause`.
fn ordinal_id(clause: &str, n: usize) -> String {
    if n == 1 {
        clause.to_string()
    } else {
        format!("{clause}#{n}")
    }
}

/// The id the kill switch has in audit records and coverage: it is not one of the
/// policy's rules, so it never collides with a clause-based rule id.
pub const KILL_SWITCH_RULE_ID: &str = "kill_switch";

impl Policy {
    /// The stable identity of rule `i`, as the manifest, audit records, test
    /// expectations and coverage name it: the clause id for the first rule citing a
    /// clause, `<clause>#2`, `<clause>#3`… for the next ones in source order. Two rules
    /// on one clause must be told apart, or a test of one would vouch for the other.
    pub fn rule_id(&self, i: usize) -> String {
        let Some(rule) = self.rules.get(i) else {
            return String::new();
        };
        let before = self.rules[..i]
            .iter()
            .filter(|r| r.clause == rule.clause)
            .count();
        ordinal_id(&rule.clause, before + 1)
    }

    /// [`Policy::rule_id`] of every rule, in one pass.
    pub fn rule_ids(&self) -> Vec<String> {
        let mut seen: std::collections::HashMap<&str, usize> = std::collections::HashMap::new();
        self.rules
            .iter()
            .map(|r| {
                let n = seen.entry(r.clause.as_str()).or_insert(0);
                *n += 1;
                ordinal_id(&r.clause, *n)
            })
            .collect()
    }

    /// Serializes with the magic and format version in front.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(4096);
        out.extend_from_slice(&MAGIC);
        out.extend_from_slice(&FORMAT_VERSION.to_le_bytes());
        // postcard into a Vec cannot fail for these types (no maps with non-string keys).
        if let Ok(body) = postcard::to_stdvec(self) {
            out.extend_from_slice(&body);
        }
        out
    }

    /// Reads a blob written by [`Policy::encode`], refusing other formats and versions.
    pub fn decode(bytes: &[u8]) -> Result<Policy, DecodeError> {
        let (magic, rest) = bytes.split_at_checked(4).ok_or(DecodeError::BadMagic)?;
        if magic != MAGIC {
            return Err(DecodeError::BadMagic);
        }
        let (version, body) = rest
            .split_at_checked(4)
            .ok_or_else(|| DecodeError::Malformed("truncated header".into()))?;
        let version = u32::from_le_bytes([version[0], version[1], version[2], version[3]]);
        if version != FORMAT_VERSION {
            return Err(DecodeError::UnsupportedVersion(version));
        }
        postcard::from_bytes(body).map_err(|e| DecodeError::Malformed(e.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Policy {
        Policy {
            name: "p".into(),
            version: "1.0.0".into(),
            source_sha256: "00".into(),
            currency: "EUR".into(),
            enforcement: Enforcement::Enforce,
            workflows: vec![],
            prices: vec![],
            detectors: vec![],
            rules: vec![Rule {
                clause: "AIP-3.1".into(),
                title: "Only approved models".into(),
                phase: Phase::Request,
                condition: Expr::Not(Box::new(Expr::In {
                    operand: Operand::Field(Field::Model),
                    set: vec![Value::Str("gpt-4o".into())],
                })),
                action: Action::Deny {
                    status: 403,
                    message: "no".into(),
                },
                enforcement: Enforcement::Enforce,
                alert_at_percent: None,
                line: 3,
            }],
            kill_switch: None,
        }
    }

    #[test]
    fn round_trips_and_refuses_other_versions() {
        let p = sample();
        let bytes = p.encode();
        assert_eq!(Policy::decode(&bytes), Ok(p));
        let mut wrong = bytes.clone();
        wrong[4] = 99;
        assert_eq!(
            Policy::decode(&wrong),
            Err(DecodeError::UnsupportedVersion(99))
        );
        assert_eq!(Policy::decode(b"nope"), Err(DecodeError::BadMagic));
        assert!(matches!(
            Policy::decode(&bytes[..bytes.len() - 3]),
            Err(DecodeError::Malformed(_))
        ));
    }
}
