//! Checks over the AST: names, types, cross-layer consistency, and rule logic (rules that
//! never fire, shadowed rules, contradictions). Every check runs and reports; none stops
//! at the first problem. A file without errors is then resolved once ([`resolve`]) into
//! the tree lowering consumes.

mod cond;
mod economics;
pub(crate) mod logic;
mod operating;
mod relations;
mod resolve;
mod rollout;
pub(crate) mod suggest;
mod vocab;

use std::collections::{BTreeMap, BTreeSet};

use crate::ast::*;
use crate::diag::{Diagnostic, codes};
use crate::resolved::{Checked, DFA_SIZE_LIMIT, Dfas, RegexError, compile_regex};
use suggest::did_you_mean;
use vocab::{
    ASSUMPTIONS, Assumption, DETECTOR_CLASSES, ENFORCEMENTS, FAILURES, IDENTITIES, OVERSIGHT,
    OversightMode, PHASES, lookup, words,
};
use writ_plugin::ir;

pub(crate) const VALIDATORS: &[&str] = &["luhn", "iban", "mod97"];

/// A detector known to the policy: built in or declared.
#[derive(Debug, Clone)]
pub(crate) struct DetectorInfo {
    pub secret: bool,
    pub span: Option<Span>,
}

/// What the checks learn about the file's declarations.
pub(crate) struct Env {
    pub currency: String,
    pub detectors: BTreeMap<String, DetectorInfo>,
    pub workflows: Vec<String>,
    pub prices: Vec<String>,
    /// Identity headers a client can set: (scope, span of the `identify` entry).
    pub untrusted: Vec<(String, Span)>,
    /// Scopes (`team`, `user`) some workflow identifies, trusted or not.
    pub identified: Vec<String>,
    /// The policy header says `enforcement monitor`: rules without their own act on nothing.
    pub monitor: bool,
    /// The policy declares a `kill_switch` (whose token also authenticates approvals).
    pub kill_switch: bool,
}

/// What a rule's action is, as far as the relations between rules care.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum ActionKind {
    Allow,
    Deny,
    Route,
    Other,
}

/// A rule as the logic checks see it.
pub(crate) struct RuleFacts {
    /// The rule's first line, through its title.
    pub span: Span,
    pub when_span: Span,
    /// The `then` action (the head when it has none).
    pub then_span: Span,
    pub response: bool,
    /// The normalised condition; `None` when the rule has errors.
    pub cond: Option<logic::Nf>,
    /// The action's canonical text with its enforcement, for shadowing; `None` with errors.
    pub action: Option<String>,
    pub kind: ActionKind,
    /// Whether the rule acts (its own enforcement, else the policy's, is not `monitor`).
    pub enforced: bool,
    /// The models a route sends to, with their spans.
    pub targets: Vec<(String, Span)>,
}

/// Runs every check over a parsed file and, when none of the diagnostics is an error,
/// resolves it for lowering ([`resolve`]): the resolved tree, or why not (the diagnostics).
pub(crate) fn check_and_resolve(file: &File) -> (Vec<Diagnostic>, Option<Checked>) {
    let c = run(file);
    let mut diags = c.diags;
    if diags.iter().any(Diagnostic::is_error) {
        return (diags, None);
    }
    match resolve::resolve(file, &c.dfas) {
        Ok(checked) => (diags, Some(checked)),
        Err(resolve::Unresolved { span, what }) => {
            diags.push(
                Diagnostic::new(
                    codes::INTERNAL,
                    format!("internal compiler error: the check accepted {what} it cannot resolve"),
                    span,
                    "while resolving this",
                )
                .help("this is a bug in writ; please report it with this policy"),
            );
            (diags, None)
        }
    }
}

/// Runs every check over a (possibly partly parsed) file, without resolving it.
pub(crate) fn check(file: &File) -> Vec<Diagnostic> {
    run(file).diags
}

fn run(file: &File) -> Checker {
    let mut c = Checker {
        diags: Vec::new(),
        env: Env {
            currency: "EUR".to_string(),
            detectors: BTreeMap::new(),
            workflows: Vec::new(),
            prices: Vec::new(),
            untrusted: Vec::new(),
            identified: Vec::new(),
            monitor: false,
            kill_switch: false,
        },
        used_detectors: BTreeSet::new(),
        rules: Vec::new(),
        matchers: Vec::new(),
        fallback_models: Vec::new(),
        error_count: (0, 0),
        dfas: BTreeMap::new(),
    };
    c.declarations(file);
    // Workflows first: rules are checked against the identities they declare, wherever
    // the rules stand in the file.
    for item in &file.items {
        if let Item::Workflow(w) = &item.node {
            c.workflow(w);
        }
    }
    for item in &file.items {
        if let Item::Rule(r) = &item.node {
            c.rule(r, item.span);
        }
    }
    operating::check(file, &c.env.currency.clone(), &mut c.diags);
    c.unused_detectors(file);
    relations::workflow_relations(&c.matchers, &mut c.diags);
    let rules = std::mem::take(&mut c.rules);
    relations::rule_relations(&rules, &mut c.diags);
    relations::fallbacks_into_denied_models(&rules, &c.fallback_models, &mut c.diags);
    c
}

struct Checker {
    diags: Vec<Diagnostic>,
    env: Env,
    used_detectors: BTreeSet<String>,
    rules: Vec<RuleFacts>,
    /// Each workflow's checked `match`, normalised, in source order.
    matchers: Vec<(Span, logic::Nf)>,
    /// Every workflow's fallback models, with their spans, for the allowlist check.
    fallback_models: Vec<(String, Span)>,
    /// (diagnostics already counted, errors among them), for [`Checker::errors`].
    error_count: (usize, usize),
    /// Each custom detector's compiled pattern, by name (only those that compiled), for
    /// the resolved tree.
    dfas: BTreeMap<String, Dfas>,
}

fn is_semver(v: &str) -> bool {
    // MAJOR.MINOR.PATCH with optional -pre and +build, no leading zeros.
    let core_end = v.find(['-', '+']).unwrap_or(v.len());
    let (core, rest) = v.split_at(core_end);
    let parts: Vec<&str> = core.split('.').collect();
    let num_ok = |p: &&str| {
        !p.is_empty()
            && p.chars().all(|c| c.is_ascii_digit())
            && (p.len() == 1 || !p.starts_with('0'))
    };
    let ident_ok = |s: &str| {
        !s.is_empty()
            && s.split('.')
                .all(|p| !p.is_empty() && p.chars().all(|c| c.is_ascii_alphanumeric() || c == '-'))
    };
    let rest_ok = match rest.strip_prefix('-') {
        Some(pre) => match pre.split_once('+') {
            Some((pre, build)) => ident_ok(pre) && ident_ok(build),
            None => ident_ok(pre),
        },
        None => match rest.strip_prefix('+') {
            Some(build) => ident_ok(build),
            None => rest.is_empty(),
        },
    };
    parts.len() == 3 && parts.iter().all(num_ok) && rest_ok
}

/// A workflow's oversight mode, as far as the verification rate it implies goes.
#[derive(Clone, Copy)]
enum ReviewFloor {
    Hitl,
    /// HIC with its sample, as a fraction.
    Hic(f64),
}

/// Whether `assume verification_rate <op> <value>` fits an oversight mode that reviews at
/// least `floor` of the outputs: the gateway alerts when the measured rate exceeds `value`
/// (whatever the operator), so `value` must be at least `floor`, and the operator must admit
/// some rate the mode can reach (`< 100%` admits none under HITL).
fn admits_from(op: CmpOp, value: f64, floor: f64) -> bool {
    value >= floor
        && match op {
            CmpOp::Eq => (floor..=1.0).contains(&value),
            CmpOp::Ne => floor < 1.0 || value != 1.0,
            CmpOp::Lt => floor < value,
            CmpOp::Le => floor <= value,
            CmpOp::Gt => value < 1.0,
            CmpOp::Ge => value <= 1.0,
        }
}

/// A fraction as a percentage for messages: `0.05` → `5%`.
fn percent_text(f: f64) -> String {
    format!("{}%", (f * 1e6).round() / 1e4)
}

/// Reports a second occurrence of a once-only statement.
fn once<'a>(
    seen: &mut Vec<(&'a str, Span)>,
    name: &'a str,
    span: Span,
    diags: &mut Vec<Diagnostic>,
) {
    if let Some((_, first)) = seen.iter().find(|(n, _)| *n == name) {
        diags.push(
            Diagnostic::new(
                codes::DUPLICATE_STATEMENT,
                format!("`{name}` is given twice"),
                span,
                "second one here",
            )
            .with_label(*first, "first given here")
            .help("keep one"),
        );
    } else {
        seen.push((name, span));
    }
}

fn missing(
    diags: &mut Vec<Diagnostic>,
    code: crate::diag::Code,
    what: &str,
    block: &str,
    span: Span,
    help: &str,
) {
    diags.push(
        Diagnostic::new(
            code,
            format!("{block} has no `{what}`"),
            span,
            format!("`{what}` missing in this block"),
        )
        .help(help.to_string()),
    );
}

/// The span of an item's first line (its keyword through the `{`), for "missing" labels.
fn head_span(item_span: Span, name_span: Span) -> Span {
    Span {
        start: item_span.start,
        end: name_span.end,
    }
}

impl Checker {
    fn push(&mut self, d: Diagnostic) {
        self.diags.push(d);
    }

    /// Errors reported so far, counted from the last count so each rule pays only for its
    /// own diagnostics (counting all of them per rule made checking quadratic).
    fn errors(&mut self) -> usize {
        let (counted, errors) = self.error_count;
        let new = self
            .diags
            .get(counted..)
            .map_or(0, |ds| ds.iter().filter(|d| d.is_error()).count());
        self.error_count = (self.diags.len(), errors + new);
        errors + new
    }

    fn nonempty(&mut self, s: &Str, what: &str) {
        if s.node.trim().is_empty() {
            self.push(Diagnostic::new(
                codes::EMPTY_STRING,
                format!("{what} is empty"),
                s.span,
                "empty string",
            ));
        }
    }

    /// The policy header, prices, detectors, kill switch, manual clauses, and the name
    /// tables the rules are checked against.
    fn declarations(&mut self, file: &File) {
        for b in writ_plugin::detect::builtins() {
            self.env.detectors.insert(
                b.name.to_string(),
                DetectorInfo {
                    secret: b.class == writ_plugin::ir::DetectorClass::Secret,
                    span: None,
                },
            );
        }
        let mut header: Option<Span> = None;
        let mut kill: Option<Span> = None;
        // First pass: the header (its currency is needed by prices and rules).
        for item in &file.items {
            if let Item::Policy(p) = &item.node {
                let head = head_span(item.span, p.version.span);
                if let Some(first) = header {
                    self.push(
                        Diagnostic::new(
                            codes::DUPLICATE_ITEM,
                            "a second `policy` header",
                            head,
                            "second header",
                        )
                        .with_label(first, "first header here")
                        .help("a file holds one policy"),
                    );
                    continue;
                }
                header = Some(head);
                self.policy_header(p, head);
            }
        }
        if header.is_none() {
            let span = file.items.first().map_or(Span::default(), |i| Span {
                start: i.span.start,
                end: i.span.start,
            });
            self.push(
                Diagnostic::new(codes::MISSING_HEADER, "missing policy header", span, "expected a `policy` header before this")
                    .help("start the file with `policy \"name\" version \"1.0.0\" { owner \"…\" implements \"…\" }`"),
            );
        }
        let mut workflows: BTreeMap<String, Span> = BTreeMap::new();
        let mut prices: BTreeMap<String, Span> = BTreeMap::new();
        let mut rules: BTreeMap<(String, String), Span> = BTreeMap::new();
        for item in &file.items {
            match &item.node {
                Item::Policy(_) => {}
                Item::Workflow(w) => {
                    self.nonempty(&w.name, "a workflow name");
                    if let Some(first) = workflows.get(&w.name.node) {
                        self.push(
                            Diagnostic::new(
                                codes::DUPLICATE_WORKFLOW,
                                format!("workflow `{}` is declared twice", w.name.node),
                                w.name.span,
                                "declared again here",
                            )
                            .with_label(*first, "first declared here")
                            .help("rename one of them or merge them"),
                        );
                    } else {
                        workflows.insert(w.name.node.clone(), w.name.span);
                        self.env.workflows.push(w.name.node.clone());
                    }
                }
                Item::Price(p) => {
                    self.nonempty(&p.model, "a model name");
                    if let Some(first) = prices.get(&p.model.node) {
                        self.push(
                            Diagnostic::new(
                                codes::DUPLICATE_PRICE,
                                format!("model `{}` has two prices", p.model.node),
                                p.model.span,
                                "priced again here",
                            )
                            .with_label(*first, "first priced here")
                            .help("keep one price per model"),
                        );
                    } else {
                        prices.insert(p.model.node.clone(), p.model.span);
                        self.env.prices.push(p.model.node.clone());
                    }
                    for a in std::iter::once(&p.input)
                        .chain(std::iter::once(&p.output))
                        .chain(p.cached.iter())
                    {
                        self.amount(&a.node.num, a.node.currency.as_ref(), a.span);
                    }
                }
                Item::Detector(d) => self.detector(d),
                Item::Rule(r) => {
                    let key = (r.id.node.clone(), r.title.node.clone());
                    let head = head_span(item.span, r.title.span);
                    if let Some(first) = rules.get(&key) {
                        self.push(
                            Diagnostic::new(
                                codes::DUPLICATE_RULE,
                                format!(
                                    "rule `{}` \"{}\" is declared twice",
                                    r.id.node, r.title.node
                                ),
                                head,
                                "declared again here",
                            )
                            .with_label(*first, "first declared here")
                            .help("rules may share a clause id, but each needs its own title"),
                        );
                    } else {
                        rules.insert(key, head);
                    }
                }
                Item::Manual(m) => {
                    let head = head_span(item.span, m.title.span);
                    let mut seen = Vec::new();
                    for s in &m.stmts {
                        match &s.node {
                            ManualStmt::Owner(v) => {
                                once(&mut seen, "owner", s.span, &mut self.diags);
                                self.nonempty(v, "the owner");
                            }
                            ManualStmt::Reason(v) => {
                                once(&mut seen, "reason", s.span, &mut self.diags);
                                self.nonempty(v, "the reason");
                            }
                        }
                    }
                    for what in ["owner", "reason"] {
                        if !seen.iter().any(|(n, _)| *n == what) {
                            missing(
                                &mut self.diags,
                                codes::MISSING_STATEMENT,
                                what,
                                "manual clause",
                                head,
                                "a manual clause names who enforces it and why no gateway can",
                            );
                        }
                    }
                }
                Item::KillSwitch(k) => {
                    let head = Span {
                        start: item.span.start,
                        end: item.span.start + 11,
                    };
                    if let Some(first) = kill {
                        self.push(
                            Diagnostic::new(
                                codes::DUPLICATE_ITEM,
                                "a second `kill_switch` block",
                                head,
                                "second block",
                            )
                            .with_label(first, "first block here")
                            .help("a policy has one kill switch"),
                        );
                    }
                    kill = Some(head);
                    self.kill_switch(k, head);
                }
            }
        }
    }

    fn policy_header(&mut self, p: &PolicyItem, head: Span) {
        self.nonempty(&p.name, "the policy name");
        if !is_semver(&p.version.node) {
            self.push(
                Diagnostic::new(
                    codes::INVALID_VERSION,
                    format!("invalid version `{}`", p.version.node),
                    p.version.span,
                    "not a semantic version",
                )
                .help("write MAJOR.MINOR.PATCH, e.g. \"1.3.0\""),
            );
        }
        let mut seen = Vec::new();
        for s in &p.stmts {
            match &s.node {
                PolicyStmt::Owner(v) => {
                    once(&mut seen, "owner", s.span, &mut self.diags);
                    self.nonempty(v, "the owner");
                }
                PolicyStmt::Implements(v) => {
                    once(&mut seen, "implements", s.span, &mut self.diags);
                    self.nonempty(v, "the paper policy path");
                }
                PolicyStmt::Currency(c) => {
                    once(&mut seen, "currency", s.span, &mut self.diags);
                    let ok = c.node.len() == 3 && c.node.chars().all(|ch| ch.is_ascii_uppercase());
                    if ok {
                        self.env.currency = c.node.clone();
                    } else {
                        let upper = c.node.to_ascii_uppercase();
                        let help = if upper.len() == 3
                            && upper.chars().all(|ch| ch.is_ascii_uppercase())
                        {
                            format!("did you mean `{upper}`?")
                        } else {
                            "write an ISO 4217 code such as `EUR` or `USD`".to_string()
                        };
                        self.push(
                            Diagnostic::new(
                                codes::INVALID_CURRENCY,
                                format!("invalid currency `{}`", c.node),
                                c.span,
                                "not an ISO 4217 code",
                            )
                            .help(help),
                        );
                    }
                }
                PolicyStmt::Enforcement(e) => {
                    once(&mut seen, "enforcement", s.span, &mut self.diags);
                    self.env.monitor = self.enforcement(e) == Some(ir::Enforcement::Monitor);
                }
            }
        }
        if !seen.iter().any(|(n, _)| *n == "owner") {
            missing(
                &mut self.diags,
                codes::MISSING_OWNER,
                "owner",
                "the policy header",
                head,
                "add `owner \"team@example.com\"`: someone must answer for the policy",
            );
        }
        if !seen.iter().any(|(n, _)| *n == "implements") {
            missing(
                &mut self.diags,
                codes::MISSING_IMPLEMENTS,
                "implements",
                "the policy header",
                head,
                "add `implements \"ai-policy.md\"`: the paper policy whose clauses the rules cite",
            );
        }
    }

    /// The enforcement mode a word names, or `None` (reported).
    fn enforcement(&mut self, e: &Ident) -> Option<ir::Enforcement> {
        let mode = lookup(ENFORCEMENTS, &e.node);
        if mode.is_none() {
            self.push(
                Diagnostic::new(
                    codes::UNKNOWN_ENFORCEMENT,
                    format!("unknown enforcement mode `{}`", e.node),
                    e.span,
                    "expected `enforce` or `monitor`",
                )
                .maybe_help(did_you_mean(&e.node, words(ENFORCEMENTS))),
            );
        }
        mode
    }

    /// An amount of money: currency, precision.
    fn amount(&mut self, num: &Num, currency: Option<&Ident>, span: Span) {
        if let Some(c) = currency
            && c.node != self.env.currency
        {
            self.push(
                Diagnostic::new(
                    codes::CURRENCY_MISMATCH,
                    format!(
                        "amount in `{}` in a policy whose currency is `{}`",
                        c.node, self.env.currency
                    ),
                    c.span,
                    format!("expected `{}`", self.env.currency),
                )
                .help("one policy uses one currency; set it with `currency` in the policy header"),
            );
        }
        if crate::resolved::micros(&num.text).is_none() {
            self.push(
                Diagnostic::new(
                    codes::AMOUNT_PRECISION,
                    format!("amount `{}` cannot be represented", num.text),
                    span,
                    "more than 6 decimals, or too large",
                )
                .help("money is kept in millionths of a unit, up to about 9 trillion"),
            );
        }
    }

    fn detector(&mut self, d: &DetectorItem) {
        if let Some(existing) = self.env.detectors.get(&d.name.node) {
            let mut diag = Diagnostic::new(
                codes::DUPLICATE_DETECTOR,
                format!("detector `{}` is declared twice", d.name.node),
                d.name.span,
                "declared again here",
            );
            diag = match existing.span {
                Some(first) => diag
                    .with_label(first, "first declared here")
                    .help("rename one of them"),
                None => diag.help(format!(
                    "`{}` is a built-in detector; pick another name",
                    d.name.node
                )),
            };
            self.push(diag);
            return;
        }
        let mut secret = false;
        if let Some(class) = &d.class {
            match lookup(DETECTOR_CLASSES, &class.node) {
                Some(c) => secret = c == ir::DetectorClass::Secret,
                None => {
                    let other = class.node.as_str();
                    let help = if writ_plugin::detect::class_members(other).is_some() {
                        Some(format!(
                            "`{other}` groups built-ins; a declared detector is `pii` or `secret`"
                        ))
                    } else {
                        did_you_mean(&class.node, words(DETECTOR_CLASSES))
                    };
                    self.push(
                        Diagnostic::new(
                            codes::UNKNOWN_CLASS,
                            format!("unknown detector class `{}`", class.node),
                            class.span,
                            "expected `pii` or `secret`",
                        )
                        .maybe_help(help),
                    )
                }
            }
        }
        if let Some(v) = &d.validator
            && !VALIDATORS.contains(&v.node.as_str())
        {
            self.push(
                Diagnostic::new(
                    codes::UNKNOWN_VALIDATOR,
                    format!("unknown validator `{}`", v.node),
                    v.span,
                    "expected `luhn`, `iban` or `mod97`",
                )
                .maybe_help(did_you_mean(&v.node, VALIDATORS.iter().copied())),
            );
        }
        if d.pattern.node.is_empty() {
            self.nonempty(&d.pattern, "the pattern");
        } else {
            match compile_regex(&d.pattern.node) {
                Ok(dfas) => {
                    self.dfas.insert(d.name.node.clone(), dfas);
                }
                Err(RegexError::Invalid(e)) => {
                    // The regex error is multi-line with its own caret; keep its last line.
                    let reason = e
                        .lines()
                        .rev()
                        .find(|l| l.trim_start().starts_with("error:"))
                        .map(|l| l.trim_start().trim_start_matches("error:").trim().to_string())
                        .unwrap_or_else(|| e.lines().last().unwrap_or("").trim().to_string());
                    let help = if reason.contains("word boundar") {
                        "write `(?-u:\\b)` for a word boundary: the gateway's DFAs support ASCII ones only"
                    } else {
                        "patterns use Rust `regex` syntax"
                    };
                    self.push(
                        Diagnostic::new(
                            codes::INVALID_REGEX,
                            format!("invalid regex for detector `{}`", d.name.node),
                            d.pattern.span,
                            reason,
                        )
                        .help(help),
                    );
                }
                Err(RegexError::TooLarge) => self.push(
                    Diagnostic::new(
                        codes::REGEX_TOO_LARGE,
                        format!("regex for detector `{}` is too large", d.name.node),
                        d.pattern.span,
                        format!("compiles to more than {} KiB", DFA_SIZE_LIMIT / 1024),
                    )
                    .help("bound repetitions and prefer ASCII classes such as `[0-9]` over `\\d` or `\\w`"),
                ),
            }
        }
        self.env.detectors.insert(
            d.name.node.clone(),
            DetectorInfo {
                secret,
                span: Some(d.name.span),
            },
        );
    }

    fn kill_switch(&mut self, k: &KillSwitchItem, head: Span) {
        self.env.kill_switch = true;
        let mut seen = Vec::new();
        for s in &k.stmts {
            match &s.node {
                KillStmt::AdminPath(p) => {
                    once(&mut seen, "admin path", s.span, &mut self.diags);
                    if !p.node.starts_with('/') {
                        self.push(
                            Diagnostic::new(
                                codes::INVALID_PATH,
                                "the admin path must start with `/`",
                                p.span,
                                "not a request path",
                            )
                            .help("e.g. \"/writ/admin/kill-switch\""),
                        );
                    }
                }
                KillStmt::TokenSha256(t) => {
                    once(&mut seen, "token sha256", s.span, &mut self.diags);
                    let ok = t.node.len() == 64
                        && t.node.chars().all(|c| matches!(c, '0'..='9' | 'a'..='f'));
                    if !ok {
                        self.push(
                            Diagnostic::new(
                                codes::INVALID_TOKEN_HASH,
                                "invalid kill-switch token hash",
                                t.span,
                                "expected 64 lower-case hex characters",
                            )
                            .help("write the sha256 of the token, e.g. `printf %s \"$TOKEN\" | sha256sum`; never the token itself"),
                        );
                    }
                }
            }
        }
        for what in ["admin path", "token sha256"] {
            if !seen.iter().any(|(n, _)| *n == what) {
                missing(
                    &mut self.diags,
                    codes::MISSING_STATEMENT,
                    what,
                    "the kill switch",
                    head,
                    "a kill switch needs its admin path and the sha256 of its token",
                );
            }
        }
    }

    /// A workflow's `fallback`: known failures, at least one step, answers last, priced
    /// models, valid statuses and cluster names (the allowlist check runs with the rules).
    fn fallback(&mut self, on: &[Ident], steps: &[Node<FallbackStep>], span: Span) {
        for kind in on {
            if lookup(FAILURES, &kind.node).is_none() {
                self.push(
                    Diagnostic::new(
                        codes::UNKNOWN_FAILURE,
                        format!("unknown failure `{}`", kind.node),
                        kind.span,
                        "expected `5xx`, `429`, `timeout` or `connect`",
                    )
                    .maybe_help(did_you_mean(&kind.node, words(FAILURES))),
                );
            }
        }
        if steps.is_empty() {
            self.push(
                Diagnostic::new(
                    codes::EMPTY_FALLBACK,
                    "this fallback has nothing to fall back to",
                    span,
                    "no `to …` here",
                )
                .help("add steps: `to model \"…\" then cluster \"…\" then reply 503 \"…\"`"),
            );
        }
        let mut answer: Option<Span> = None;
        for step in steps {
            if let Some(at) = answer {
                self.push(
                    Diagnostic::new(
                        codes::FALLBACK_AFTER_ANSWER,
                        "this fallback step is never tried",
                        step.span,
                        "after the answer",
                    )
                    .with_label(at, "this answer ends the fallback")
                    .help("put `model` and `cluster` steps first and one `reply` or `human` last"),
                );
                continue;
            }
            match &step.node {
                FallbackStep::Model(m) => {
                    self.nonempty(m, "the fallback model");
                    if !self.env.prices.is_empty() && !self.env.prices.contains(&m.node) {
                        let help =
                            did_you_mean(&m.node, self.env.prices.iter().map(String::as_str))
                                .unwrap_or_else(|| {
                                    format!(
                                        "add `price \"{}\" input … output … per 1M tokens`",
                                        m.node
                                    )
                                });
                        self.push(
                            Diagnostic::new(
                                codes::FALLBACK_WITHOUT_PRICE,
                                format!("fallback model `{}` has no price", m.node),
                                m.span,
                                "the spend reservation is re-made at this model's price",
                            )
                            .help(help),
                        );
                    }
                    self.fallback_models.push((m.node.clone(), m.span));
                }
                FallbackStep::Cluster(c) => {
                    let ok = !c.node.is_empty()
                        && c.node.len() <= 128
                        && c.node
                            .chars()
                            .all(|ch| ch.is_ascii_alphanumeric() || matches!(ch, '_' | '-' | '.'));
                    if !ok {
                        self.push(
                            Diagnostic::new(
                                codes::BAD_CLUSTER_NAME,
                                format!("`{}` is not a cluster name", c.node),
                                c.span,
                                "letters, digits, `_`, `-` and `.` only",
                            )
                            .help("name the upstream as `writ serve --cluster NAME=URL` and `writ envoy --cluster NAME=HOST:PORT` do"),
                        );
                    }
                }
                FallbackStep::Reply { status, message } => {
                    let v = status.node.value;
                    if v.fract() != 0.0 || !(400.0..=599.0).contains(&v) {
                        self.push(
                            Diagnostic::new(
                                codes::FALLBACK_REPLY_STATUS,
                                format!("`{}` is not an error status", status.node.text),
                                status.span,
                                "expected 400 to 599",
                            )
                            .help("a degraded answer is an error in the API's shape, e.g. `reply 503 \"…\"`"),
                        );
                    }
                    self.nonempty(message, "the reply message");
                    answer = Some(step.span);
                }
                FallbackStep::Human(q) => {
                    self.nonempty(q, "the review queue");
                    answer = Some(step.span);
                }
            }
        }
    }

    fn workflow(&mut self, w: &WorkflowItem) {
        let mut seen = Vec::new();
        let mut oversight: Option<(ReviewFloor, Span)> = None;
        let mut rate: Option<(CmpOp, f64, Span)> = None;
        let mut case = economics::BusinessCase::default();
        let mut identities: Vec<&str> = Vec::new();
        for s in &w.stmts {
            match &s.node {
                WorkflowStmt::Match(c) => {
                    once(&mut seen, "match", s.span, &mut self.diags);
                    let mut ctx = cond::Ctx::matcher();
                    let before = self.diags.len();
                    self.cond(c, &mut ctx);
                    if self.diags.len() == before {
                        self.matchers.push((c.span, logic::normalize(&c.node)));
                    }
                }
                WorkflowStmt::Oversight {
                    mode,
                    below,
                    sample,
                } => {
                    once(&mut seen, "oversight", s.span, &mut self.diags);
                    let resolved = lookup(OVERSIGHT, &mode.node);
                    match resolved {
                        Some(OversightMode::Hitl) => oversight = Some((ReviewFloor::Hitl, mode.span)),
                        Some(OversightMode::Hotl) => match below {
                            None => self.push(
                                Diagnostic::new(
                                    codes::OVERSIGHT_OPTION,
                                    "HOTL needs a confidence threshold",
                                    mode.span,
                                    "no `below` here",
                                )
                                .help("write `oversight HOTL below 0.70`: outputs under the threshold go to a human"),
                            ),
                            Some(b) if !(0.0..=1.0).contains(&b.node.value) => self.push(
                                Diagnostic::new(
                                    codes::THRESHOLD_OUT_OF_RANGE,
                                    format!("HOTL threshold `{}` is outside 0..1", b.node.text),
                                    b.span,
                                    "a confidence threshold lies between 0 and 1",
                                )
                                .help("write e.g. `below 0.70`"),
                            ),
                            Some(_) => {}
                        },
                        Some(OversightMode::Hic) => {
                            let share = sample.as_ref().map_or(0.0, |p| p.node.value / 100.0);
                            oversight = Some((ReviewFloor::Hic(share), s.span));
                        }
                        None => self.push(
                            Diagnostic::new(
                                codes::UNKNOWN_OVERSIGHT,
                                format!("unknown oversight mode `{}`", mode.node),
                                mode.span,
                                "expected `HITL`, `HOTL` or `HIC`",
                            )
                            .maybe_help(did_you_mean(&mode.node, words(OVERSIGHT))),
                        ),
                    }
                    if let Some(b) = below
                        && resolved != Some(OversightMode::Hotl)
                    {
                        self.push(Diagnostic::new(
                            codes::OVERSIGHT_OPTION,
                            "`below` belongs to HOTL",
                            b.span,
                            format!("not used by `{}`", mode.node),
                        ));
                    }
                    if let Some(p) = sample {
                        if resolved != Some(OversightMode::Hic) {
                            self.push(Diagnostic::new(
                                codes::OVERSIGHT_OPTION,
                                "`sample` belongs to HIC",
                                p.span,
                                format!("not used by `{}`", mode.node),
                            ));
                        }
                        self.percent(&p.node, p.span);
                    }
                }
                WorkflowStmt::Assume {
                    name,
                    op,
                    value,
                    percent,
                    currency,
                } => match lookup(ASSUMPTIONS, &name.node) {
                    None => self.push(
                        Diagnostic::new(
                            codes::UNKNOWN_ASSUMPTION,
                            format!("unknown assumption `{}`", name.node),
                            name.span,
                            "expected `verification_rate` or `cost_per_transaction`",
                        )
                        .maybe_help(did_you_mean(&name.node, words(ASSUMPTIONS))),
                    ),
                    Some(Assumption::VerificationRate) => {
                        once(
                            &mut seen,
                            "assume verification_rate",
                            s.span,
                            &mut self.diags,
                        );
                        if currency.is_some() {
                            self.push(
                                Diagnostic::new(
                                    codes::TYPE_MISMATCH,
                                    "a verification rate is a share, not an amount",
                                    value.span,
                                    "an amount",
                                )
                                .help("write a percentage such as `10%`"),
                            );
                            continue;
                        }
                        let fraction = self.rate(value, *percent);
                        rate = Some((op.node, fraction, value.span));
                    }
                    Some(Assumption::CostPerTransaction) => {
                        once(
                            &mut seen,
                            "assume cost_per_transaction",
                            s.span,
                            &mut self.diags,
                        );
                        let Some(c) = currency else {
                            self.push(
                                Diagnostic::new(
                                    codes::TYPE_MISMATCH,
                                    "a cost per transaction is an amount of money",
                                    value.span,
                                    "no currency",
                                )
                                .help(format!(
                                    "write an amount such as `1.10 {}`",
                                    self.env.currency
                                )),
                            );
                            continue;
                        };
                        if !matches!(op.node, CmpOp::Le | CmpOp::Lt) {
                            self.push(
                                Diagnostic::new(
                                    codes::ASSUMPTION_OPERATOR,
                                    format!(
                                        "`assume cost_per_transaction {}` is not a ceiling",
                                        op.node.as_str()
                                    ),
                                    op.span,
                                    "expected `<=` or `<`",
                                )
                                .help("the business case caps what one transaction may cost: `assume cost_per_transaction <= 1.10 EUR`"),
                            );
                        }
                        let before = self.diags.len();
                        self.amount(&value.node, Some(c), value.span);
                        if self.diags.len() == before {
                            case.cost =
                                crate::resolved::micros(&value.node.text).map(|m| (m, value.span));
                        }
                    }
                },
                WorkflowStmt::Cost { kind, amount } => {
                    once(&mut seen, kind.as_str(), s.span, &mut self.diags);
                    let before = self.diags.len();
                    self.amount(&amount.node.num, amount.node.currency.as_ref(), amount.span);
                    let micros = crate::resolved::micros(&amount.node.num.text)
                        .filter(|_| self.diags.len() == before)
                        .map(|m| (m, amount.span));
                    match kind {
                        CostKind::Review => case.review = micros,
                        CostKind::Manual => case.manual = micros,
                    }
                }
                WorkflowStmt::Rollout(fields) => {
                    once(&mut seen, "rollout", s.span, &mut self.diags);
                    rollout::check(fields, &mut self.diags);
                }
                WorkflowStmt::Fallback { on, steps } => {
                    once(&mut seen, "fallback", s.span, &mut self.diags);
                    self.fallback(on, steps, s.span);
                }
                WorkflowStmt::Scan(ScanTarget::Query) => {}
                // Checked by `operating::check`.
                WorkflowStmt::KillPoint(_)
                | WorkflowStmt::ReviewSignals { .. }
                | WorkflowStmt::HandoffIncludes(_) => {}
                WorkflowStmt::Scan(ScanTarget::Headers(names)) => {
                    for n in &names.node {
                        match &n.node {
                            Lit::Str(s) => self.header_name(s, n.span),
                            _ => self.push(Diagnostic::new(
                                codes::BAD_HEADER_NAME,
                                "`scan headers` takes header names in quotes",
                                n.span,
                                "expected a string",
                            )),
                        }
                    }
                }
                WorkflowStmt::Identify(ids) => {
                    for id in ids {
                        let who = id.node.who.node.as_str();
                        if lookup(IDENTITIES, who).is_none() {
                            self.push(
                                Diagnostic::new(
                                    codes::UNKNOWN_SCOPE,
                                    format!("unknown identity `{who}`"),
                                    id.node.who.span,
                                    "expected `team` or `user`",
                                )
                                .maybe_help(did_you_mean(who, words(IDENTITIES))),
                            );
                            continue;
                        }
                        if identities.contains(&who) {
                            self.push(Diagnostic::new(
                                codes::DUPLICATE_STATEMENT,
                                format!("`{who}` is identified twice"),
                                id.span,
                                "second one here",
                            ));
                        }
                        identities.push(who);
                        self.nonempty(&id.node.header, "the header name");
                        if !id.node.trusted {
                            self.env.untrusted.push((who.to_string(), id.span));
                        }
                        if !self.env.identified.iter().any(|w| w == who) {
                            self.env.identified.push(who.to_string());
                        }
                    }
                }
            }
        }
        if !seen.iter().any(|(n, _)| *n == "match") {
            missing(
                &mut self.diags,
                codes::MISSING_STATEMENT,
                "match",
                "workflow",
                w.name.span,
                "add `match header \"x-workflow\" == \"…\"` so requests can be attributed to it",
            );
        }
        // The verification rate each mode guarantees at least: HITL reviews everything, a
        // HIC sample reviews its share (escalating rules may add more); HOTL depends on the
        // model's confidence, so any rate fits it.
        if let Some((op, r, span)) = rate {
            match oversight {
                Some((ReviewFloor::Hitl, h)) if !admits_from(op, r, 1.0) => self.push(
                    Diagnostic::new(
                        codes::HITL_RATE,
                        "HITL oversight with an assumed verification rate under 100%",
                        span,
                        "assumes fewer outputs are reviewed",
                    )
                    .with_label(h, "HITL reviews every output")
                    .help(
                        "use `oversight HOTL below …` or `HIC`, or assume `verification_rate == 100%`",
                    ),
                ),
                Some((ReviewFloor::Hic(sample), h)) if sample > 0.0 && !admits_from(op, r, sample) => {
                    self.push(
                        Diagnostic::new(
                            codes::HIC_SAMPLE_RATE,
                            "HIC samples more outputs for review than the assumed verification rate",
                            span,
                            "assumes fewer outputs are reviewed",
                        )
                        .with_label(h, format!("sends {} of outputs to a human", percent_text(sample)))
                        .help("lower the sample, or assume a verification rate at least as high as it"),
                    )
                }
                _ => {}
            }
        }
        // The business case against the workflow's own declarations.
        match oversight {
            Some((ReviewFloor::Hitl, h)) => case.hitl = Some(h),
            Some((ReviewFloor::Hic(sample), h)) if sample > 0.0 => case.sample = Some((sample, h)),
            _ => {}
        }
        case.hotl = w.stmts.iter().any(|s| {
            matches!(&s.node, WorkflowStmt::Oversight { mode, .. }
                if lookup(OVERSIGHT, &mode.node) == Some(OversightMode::Hotl))
        });
        case.rate = rate.map(|(_, r, span)| (r, span));
        economics::check(&case, &self.env.currency, &mut self.diags);
    }

    /// `assume verification_rate`'s value as a fraction (`10%` or `0.1`), checked.
    fn rate(&mut self, value: &Node<Num>, percent: bool) -> f64 {
        if percent {
            self.percent(&value.node, value.span);
            return value.node.value / 100.0;
        }
        if !(0.0..=1.0).contains(&value.node.value) {
            self.push(
                Diagnostic::new(
                    codes::THRESHOLD_OUT_OF_RANGE,
                    format!("verification rate `{}` is outside 0..1", value.node.text),
                    value.span,
                    "a rate lies between 0 and 1",
                )
                .help("write a fraction such as `0.1` or a percentage such as `10%`"),
            );
        }
        value.node.value
    }

    fn percent(&mut self, n: &Num, span: Span) {
        if n.value > 100.0 {
            self.push(
                Diagnostic::new(
                    codes::PERCENT_OUT_OF_RANGE,
                    format!("`{}%` is over 100%", n.text),
                    span,
                    "a share cannot exceed the whole",
                )
                .help("use a percentage between 0% and 100%"),
            );
        }
    }

    fn rule(&mut self, r: &RuleItem, span: Span) {
        let head = head_span(span, r.title.span);
        self.nonempty(&r.title, "the rule title");
        let mut seen = Vec::new();
        let mut response = false;
        let mut when: Option<&Node<Cond>> = None;
        let mut then: Option<&Node<Action>> = None;
        let mut alert: Option<&Node<Num>> = None;
        let mut enforcement: Option<&str> = None;
        let mut mode: Option<ir::Enforcement> = None;
        for s in &r.stmts {
            match &s.node {
                RuleStmt::On(p) => {
                    once(&mut seen, "on", s.span, &mut self.diags);
                    match lookup(PHASES, &p.node) {
                        Some(phase) => response = phase == ir::Phase::Response,
                        None => self.push(
                            Diagnostic::new(
                                codes::UNKNOWN_PHASE,
                                format!("unknown phase `{}`", p.node),
                                p.span,
                                "expected `request` or `response`",
                            )
                            .maybe_help(did_you_mean(&p.node, words(PHASES))),
                        ),
                    }
                }
                RuleStmt::When(c) => {
                    once(&mut seen, "when", s.span, &mut self.diags);
                    when = Some(c);
                }
                RuleStmt::Then(a) => {
                    once(&mut seen, "then", s.span, &mut self.diags);
                    then = Some(a);
                }
                RuleStmt::Enforcement(e) => {
                    once(&mut seen, "enforcement", s.span, &mut self.diags);
                    mode = self.enforcement(e);
                    enforcement = Some(e.node.as_str());
                }
                RuleStmt::AlertAt(n) => {
                    once(&mut seen, "alert", s.span, &mut self.diags);
                    self.percent(&n.node, n.span);
                    alert = Some(n);
                }
            }
        }
        for (what, help) in [
            ("on", "add `on request` or `on response`"),
            ("then", "add an action, e.g. `then deny 403 \"…\"`"),
        ] {
            if !seen.iter().any(|(n, _)| *n == what) {
                missing(
                    &mut self.diags,
                    codes::MISSING_STATEMENT,
                    what,
                    "rule",
                    head,
                    help,
                );
            }
        }
        let mut ctx = cond::Ctx::rule(response);
        let errors_before = self.errors();
        if let Some(c) = when {
            self.cond(c, &mut ctx);
        }
        if let Some(a) = then {
            self.action(a, &ctx, response);
        }
        if let Some(n) = alert
            && !ctx.uses_spend
        {
            self.push(
                Diagnostic::new(
                    codes::ALERT_WITHOUT_SPEND,
                    "`alert at` on a rule that does not use spend",
                    n.span,
                    "budget alert without a budget",
                )
                .help("`alert at N%` alerts when spend crosses N% of the rule's `spend(…)` limit"),
            );
        }
        let clean = self.errors() == errors_before;
        // A rule without `when` matches everything.
        let nf = match when {
            Some(c) if clean => Some(logic::normalize(&c.node)),
            None if clean => Some(logic::Nf::Const(true)),
            _ => None,
        };
        if let (Some(nf), Some(c)) = (&nf, when) {
            if *nf == logic::Nf::Const(false) {
                self.push(
                    Diagnostic::new(codes::NEVER_FIRES, "this rule can never fire", c.span, "this condition is never true")
                        .help("two constraints on the same field contradict each other, or a list is empty"),
                );
            } else if *nf == logic::Nf::Const(true) {
                self.push(
                    Diagnostic::new(codes::ALWAYS_FIRES, "this condition is always true", c.span, "always true")
                        .help("the rule fires on every exchange in its phase; drop the condition or narrow it"),
                );
            }
        }
        let kind = match then.map(|a| &a.node) {
            Some(Action::Allow) => ActionKind::Allow,
            Some(Action::Deny { .. }) => ActionKind::Deny,
            Some(Action::Route(_) | Action::RouteCheapest(_)) => ActionKind::Route,
            _ => ActionKind::Other,
        };
        let targets = match then.map(|a| &a.node) {
            Some(Action::Route(m)) => vec![(m.node.clone(), m.span)],
            Some(Action::RouteCheapest(list)) => list
                .node
                .iter()
                .filter_map(|l| match &l.node {
                    Lit::Str(m) => Some((m.clone(), l.span)),
                    _ => None,
                })
                .collect(),
            _ => Vec::new(),
        };
        self.rules.push(RuleFacts {
            span: head,
            when_span: when.map_or(head, |c| c.span),
            then_span: then.map_or(head, |a| a.span),
            response,
            cond: if clean { nf } else { None },
            // A monitor rule does not act, so it never shadows (or is shadowed by) one that does.
            action: then.filter(|_| clean).map(|a| {
                format!(
                    "{} @{}",
                    crate::fmt::action(&a.node),
                    enforcement.unwrap_or("")
                )
            }),
            kind,
            enforced: match mode {
                Some(m) => m != ir::Enforcement::Monitor,
                None => !self.env.monitor,
            },
            targets,
        });
    }

    fn unused_detectors(&mut self, file: &File) {
        for item in &file.items {
            if let Item::Detector(d) = &item.node
                && !self.used_detectors.contains(&d.name.node)
                && self
                    .env
                    .detectors
                    .get(&d.name.node)
                    .and_then(|i| i.span)
                    .is_some_and(|s| s.same(&d.name.span))
            {
                self.push(
                    Diagnostic::new(
                        codes::UNUSED_DETECTOR,
                        format!("detector `{}` is never used", d.name.node),
                        d.name.span,
                        "declared here",
                    )
                    .help("name it in a rule (`prompt has pii(…)`) or remove it"),
                );
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn assumed_rates_fit_the_oversight_floor() {
        // HITL: only an assumption that admits 100% (and does not alert below it) fits.
        assert!(admits_from(CmpOp::Eq, 1.0, 1.0));
        assert!(admits_from(CmpOp::Le, 1.0, 1.0));
        assert!(!admits_from(CmpOp::Lt, 1.0, 1.0));
        assert!(!admits_from(CmpOp::Le, 0.2, 1.0));
        assert!(
            !admits_from(CmpOp::Ge, 0.5, 1.0),
            "the gateway alerts above 50%"
        );
        // HIC sample 2%: at least 2% is reviewed.
        assert!(admits_from(CmpOp::Le, 0.02, 0.02));
        assert!(!admits_from(CmpOp::Lt, 0.02, 0.02));
        assert!(!admits_from(CmpOp::Le, 0.01, 0.02));
        assert!(admits_from(CmpOp::Le, 0.1, 0.02));
        // Nothing guaranteed (HOTL): any rate in range fits.
        assert!(admits_from(CmpOp::Le, 0.0, 0.0));
    }
}
