//! Types and names inside conditions and actions.

use super::vocab::{
    DETECTOR_CLASSES, FIELDS, MEASURES, RATE_WINDOWS, SCOPES, WINDOWS, lookup, words,
};
use super::{Checker, suggest::did_you_mean};
use crate::ast::*;
use crate::diag::{Diagnostic, codes};

/// Where a condition is evaluated, and what checking it found.
pub(crate) struct Ctx {
    /// `None` for a workflow `match` (request headers only).
    response: Option<bool>,
    pub uses_spend: bool,
    /// How many `has` tests the condition makes (valid or not).
    pub has_count: usize,
    /// Detector names the condition's `has` tests mention, for a bare `redact`/`tokenise`.
    pub has_detectors: Vec<String>,
    /// The condition reads the reply's tool calls (`tool_call.…`).
    pub reads_tool_call: bool,
    /// The condition reads the request's offered tools (`tool.name`).
    pub reads_tool: bool,
}

impl Ctx {
    pub(crate) fn matcher() -> Ctx {
        Ctx {
            response: None,
            uses_spend: false,
            has_count: 0,
            has_detectors: Vec::new(),
            reads_tool_call: false,
            reads_tool: false,
        }
    }

    pub(crate) fn rule(response: bool) -> Ctx {
        Ctx {
            response: Some(response),
            uses_spend: false,
            has_count: 0,
            has_detectors: Vec::new(),
            reads_tool_call: false,
            reads_tool: false,
        }
    }
}

/// The type of a value in a condition.
#[derive(Debug, Clone, PartialEq)]
enum Ty {
    Str,
    Num,
    /// A 0..1 score (confidence): compares with numbers and percentages.
    Fraction,
    Percent,
    Money,
    Bool,
    List(Box<Ty>),
    /// `[]`: fits any list.
    EmptyList,
    /// A tool-call argument: a JSON value whose type is known only at run time; it
    /// compares with strings, numbers and booleans (a value of another type is missing).
    Argument,
}

impl Ty {
    fn name(&self) -> String {
        match self {
            Ty::Str => "a string".into(),
            Ty::Num => "a number".into(),
            Ty::Fraction => "a score between 0 and 1".into(),
            Ty::Percent => "a percentage".into(),
            Ty::Money => "money".into(),
            Ty::Bool => "a boolean".into(),
            Ty::List(t) => format!("a list of {}", t.plural()),
            Ty::EmptyList => "an empty list".into(),
            Ty::Argument => "a tool-call argument".into(),
        }
    }

    fn plural(&self) -> String {
        match self {
            Ty::Str => "strings".into(),
            Ty::Num => "numbers".into(),
            Ty::Fraction => "scores".into(),
            Ty::Percent => "percentages".into(),
            Ty::Money => "amounts".into(),
            Ty::Bool => "booleans".into(),
            Ty::List(_) | Ty::EmptyList => "lists".into(),
            Ty::Argument => "tool-call arguments".into(),
        }
    }

    fn fits(&self, other: &Ty) -> bool {
        match (self, other) {
            (a, b) if a == b => true,
            (Ty::Fraction, Ty::Num | Ty::Percent) | (Ty::Num | Ty::Percent, Ty::Fraction) => true,
            (Ty::Argument, Ty::Str | Ty::Num | Ty::Bool)
            | (Ty::Str | Ty::Num | Ty::Bool, Ty::Argument) => true,
            _ => false,
        }
    }

    fn ordered(&self) -> bool {
        matches!(self, Ty::Num | Ty::Fraction | Ty::Percent | Ty::Money)
    }
}

impl Checker {
    fn response_only(&mut self, ctx: &Ctx, span: Span, what: &str) {
        match ctx.response {
            Some(true) => {}
            Some(false) => self.push(
                Diagnostic::new(
                    codes::RESPONSE_ONLY,
                    format!("{what} in a request-phase rule"),
                    span,
                    "only known once the reply arrives",
                )
                .help("write `on response` for rules that inspect the reply"),
            ),
            None => self.not_in_match(span, what),
        }
    }

    fn request_only(&mut self, ctx: &Ctx, span: Span, what: &str) {
        match ctx.response {
            Some(false) => {}
            Some(true) => self.push(
                Diagnostic::new(
                    codes::TOOL_REQUEST_ONLY,
                    format!("{what} in a response-phase rule"),
                    span,
                    "the request's offered tools, before it is sent",
                )
                .help("write `on request`; in a response rule read the reply's calls with `tool_call.name`"),
            ),
            None => self.not_in_match(span, what),
        }
    }

    /// Reports a string that cannot be an HTTP request header name (see
    /// [`codes::BAD_HEADER_NAME`]).
    pub(super) fn header_name(&mut self, name: &str, span: Span) {
        const TCHAR: &[u8] = b"!#$%&'*+-.^_`|~";
        let ok = !name.is_empty()
            && name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || TCHAR.contains(&b));
        if ok {
            return;
        }
        let message = if name.is_empty() {
            "an empty string is not a header name".to_string()
        } else {
            format!("`{name}` is not a header name")
        };
        let help = if name.starts_with(':') {
            "pseudo-headers are not scanned; for the query string use `query has` or `scan query`"
        } else {
            "a header name is letters, digits and `!#$%&'*+-.^_`|~`"
        };
        self.push(
            Diagnostic::new(
                codes::BAD_HEADER_NAME,
                message,
                span,
                "expected an HTTP header name",
            )
            .help(help),
        );
    }

    fn not_in_match(&mut self, span: Span, what: &str) {
        self.push(
            Diagnostic::new(
                codes::MATCH_USES_BODY,
                format!("workflow `match` reads {what}"),
                span,
                "not available before the body arrives",
            )
            .help("a workflow is chosen from request headers, `path` and `method` only"),
        );
    }

    pub(super) fn cond(&mut self, c: &Node<Cond>, ctx: &mut Ctx) {
        match &c.node {
            Cond::And(parts) | Cond::Or(parts) => {
                for p in parts {
                    self.cond(p, ctx);
                }
            }
            Cond::Not(inner) => self.cond(inner, ctx),
            Cond::Error => {}
            Cond::Bare(o) => {
                if let Some(t) = self.operand(o, ctx)
                    && t != Ty::Bool
                {
                    self.push(
                        Diagnostic::new(
                            codes::NOT_A_CONDITION,
                            format!("{} is not a condition", t.name()),
                            o.span,
                            "expected a comparison here",
                        )
                        .help("compare it, e.g. `model == \"gpt-4o\"`"),
                    );
                }
            }
            Cond::Compare { left, op, right } => {
                let l = self.operand(left, ctx);
                let r = self.operand(right, ctx);
                let (Some(l), Some(r)) = (l, r) else { return };
                if !l.fits(&r) {
                    let is_rate = |o: &Node<Operand>| matches!(&o.node, Operand::Call { name, .. } if lookup(MEASURES, &name.node).is_some());
                    let help = match (&l, &r) {
                        (Ty::Money, Ty::Num) | (Ty::Num, Ty::Money)
                            if is_rate(left) || is_rate(right) =>
                        {
                            Some("a rate limit counts tokens or requests: write a plain number, e.g. `20000`".to_string())
                        }
                        (Ty::Money, Ty::Num) | (Ty::Num, Ty::Money) => Some(format!(
                            "write the amount with its currency, e.g. `5000 {}`",
                            self.env.currency
                        )),
                        (Ty::Argument, Ty::Money) | (Ty::Money, Ty::Argument) => Some(
                            "a tool-call argument is a plain JSON number: drop the currency, e.g. `> 100`"
                                .to_string(),
                        ),
                        (Ty::Str, _) | (_, Ty::Str) => Some("quote strings: `\"…\"`".to_string()),
                        _ => None,
                    };
                    self.push(
                        Diagnostic::new(
                            codes::TYPE_MISMATCH,
                            format!("cannot compare {} with {}", l.name(), r.name()),
                            right.span,
                            format!("expected {}", l.name()),
                        )
                        .with_label(left.span, format!("this is {}", l.name()))
                        .maybe_help(help),
                    );
                    return;
                }
                let ordered_ty = if l == Ty::Argument { &r } else { &l };
                if !matches!(op.node, CmpOp::Eq | CmpOp::Ne)
                    && !ordered_ty.ordered()
                    && (l != Ty::Argument || r != Ty::Argument)
                {
                    self.push(
                        Diagnostic::new(
                            codes::BAD_OPERATOR,
                            format!(
                                "`{}` does not apply to {}",
                                op.node.as_str(),
                                ordered_ty.name()
                            ),
                            op.span,
                            "an ordering operator",
                        )
                        .help("strings and booleans compare with `==` and `!=`; lists with `in`"),
                    );
                }
                self.workflow_names(left, right);
                self.workflow_names(right, left);
                if (l == Ty::Fraction) != (r == Ty::Fraction) {
                    let lit = if l == Ty::Fraction { right } else { left };
                    if let Operand::Lit(Lit::Num(n)) = &lit.node
                        && !(0.0..=1.0).contains(&n.value)
                    {
                        self.push(
                            Diagnostic::new(
                                codes::THRESHOLD_OUT_OF_RANGE,
                                format!("confidence compared with `{}`, outside 0..1", n.text),
                                lit.span,
                                "confidence lies between 0 and 1",
                            )
                            .help("write e.g. `0.70` or `70%`"),
                        );
                    }
                }
            }
            Cond::In { operand, list, .. } => {
                let t = self.operand(operand, ctx);
                let lt = self.list(list);
                if let (Some(t), Some(Ty::List(et))) = (&t, &lt)
                    && !t.fits(et)
                {
                    self.push(
                        Diagnostic::new(
                            codes::TYPE_MISMATCH,
                            format!(
                                "cannot look up {} in {}",
                                t.name(),
                                Ty::List(et.clone()).name()
                            ),
                            list.span,
                            format!("expected a list of {}", t.plural()),
                        )
                        .with_label(operand.span, format!("this is {}", t.name())),
                    );
                    return;
                }
                if let Operand::Field(f) = &operand.node
                    && f.node == "workflow"
                {
                    for item in &list.node {
                        self.known_workflow(item);
                    }
                }
            }
            Cond::Has { subject, target } => {
                match &subject.node {
                    Subject::Response => self.response_only(ctx, subject.span, "`response has`"),
                    Subject::Prompt if ctx.response.is_none() => {
                        self.not_in_match(subject.span, "the prompt")
                    }
                    Subject::Header(_) | Subject::Query if ctx.response.is_none() => {
                        self.push(
                            Diagnostic::new(
                                codes::MATCH_USES_BODY,
                                "workflow `match` runs no detectors",
                                subject.span,
                                "detectors run in rules, once the workflow is chosen",
                            )
                            .help("match on the header's value here, and put `has` in a rule"),
                        );
                    }
                    Subject::Header(name) => self.header_name(name, subject.span),
                    Subject::Prompt | Subject::Query => {}
                    Subject::ToolArguments => {
                        ctx.reads_tool_call = true;
                        self.response_only(ctx, subject.span, "`tool_call.arguments has`");
                    }
                    Subject::ToolResults if ctx.response.is_none() => {
                        self.not_in_match(subject.span, "tool results")
                    }
                    Subject::ToolResults => {}
                }
                ctx.has_count += 1;
                let names = self.has_target(target);
                ctx.has_detectors.extend(names);
            }
        }
    }

    /// Validates `pii(a, b)` / `secret` and returns the detector names it stands for.
    pub(super) fn has_target(&mut self, t: &Node<HasTarget>) -> Vec<String> {
        // A detector named anywhere counts as used, even where the test has other errors.
        for n in t.node.names.iter().flatten() {
            if !self.used_detectors.contains(&n.node) {
                self.used_detectors.insert(n.node.clone());
            }
        }
        let class = t.node.class.node.as_str();
        // `Some(secret)` for the two classes, `None` for a group of built-ins.
        let secret = match lookup(DETECTOR_CLASSES, class) {
            Some(c) => Some(c == writ_plugin::ir::DetectorClass::Secret),
            None if writ_plugin::detect::class_members(class).is_some() => None,
            None => {
                let other = class;
                let mut cands: Vec<&str> = writ_plugin::detect::CLASSES
                    .iter()
                    .map(|(c, _)| *c)
                    .collect();
                let is_detector = self.env.detectors.contains_key(other);
                cands.extend(self.env.detectors.keys().map(String::as_str));
                let help = if is_detector {
                    let class = if self.env.detectors.get(other).is_some_and(|d| d.secret) {
                        "secret"
                    } else {
                        "pii"
                    };
                    Some(format!(
                        "name detectors inside their class: `{class}({other})`"
                    ))
                } else {
                    did_you_mean(other, cands)
                };
                self.push(
                    Diagnostic::new(
                        codes::UNKNOWN_CLASS,
                        format!("unknown detector class `{other}`"),
                        t.node.class.span,
                        "expected `pii`, `secret` or a group such as `pii.eu`",
                    )
                    .maybe_help(help),
                );
                return Vec::new();
            }
        };
        let Some(secret) = secret else {
            return self.group_target(t, class);
        };
        let mut out = Vec::new();
        match &t.node.names {
            None => {
                for (name, info) in &self.env.detectors {
                    if info.secret == secret {
                        out.push(name.clone());
                    }
                }
            }
            Some(names) => {
                for n in names {
                    match self.env.detectors.get(&n.node) {
                        None => {
                            let help = did_you_mean(
                                &n.node,
                                self.env.detectors.keys().map(String::as_str),
                            );
                            self.push(
                                Diagnostic::new(
                                    codes::UNKNOWN_DETECTOR,
                                    format!("unknown detector `{}`", n.node),
                                    n.span,
                                    "not a built-in or declared detector",
                                )
                                .maybe_help(help),
                            );
                        }
                        Some(info) if info.secret != secret => {
                            let (is, said) = if info.secret {
                                ("secret", "pii")
                            } else {
                                ("pii", "secret")
                            };
                            self.push(
                                Diagnostic::new(
                                    codes::CLASS_MISMATCH,
                                    format!("detector `{}` is a {is} detector, not {said}", n.node),
                                    n.span,
                                    format!("named under `{said}`"),
                                )
                                .help(format!("write `{is}({})`", n.node)),
                            );
                        }
                        Some(_) => out.push(n.node.clone()),
                    }
                }
            }
        }
        for name in &out {
            if !self.used_detectors.contains(name) {
                self.used_detectors.insert(name.clone());
            }
        }
        out
    }

    /// `has pii.eu` / `has government_id(uk_nino)`: the group's built-ins, or the named
    /// ones, each of which must belong to the group.
    fn group_target(&mut self, t: &Node<HasTarget>, group: &str) -> Vec<String> {
        let members = writ_plugin::detect::class_members(group).unwrap_or_default();
        let out: Vec<String> = match &t.node.names {
            None => members.iter().map(|m| (*m).to_string()).collect(),
            Some(names) => {
                let mut out = Vec::new();
                for n in names {
                    if members.contains(&n.node.as_str()) {
                        out.push(n.node.clone());
                        continue;
                    }
                    let diag = if self.env.detectors.contains_key(&n.node) {
                        Diagnostic::new(
                            codes::CLASS_MISMATCH,
                            format!("detector `{}` is not in `{group}`", n.node),
                            n.span,
                            format!("named under `{group}`"),
                        )
                        .help(format!(
                            "`{group}` holds {}",
                            members
                                .iter()
                                .map(|m| format!("`{m}`"))
                                .collect::<Vec<_>>()
                                .join(", ")
                        ))
                    } else {
                        Diagnostic::new(
                            codes::UNKNOWN_DETECTOR,
                            format!("unknown detector `{}`", n.node),
                            n.span,
                            "not a built-in or declared detector",
                        )
                        .maybe_help(did_you_mean(&n.node, members.iter().copied()))
                    };
                    self.push(diag);
                }
                out
            }
        };
        for name in &out {
            if !self.used_detectors.contains(name) {
                self.used_detectors.insert(name.clone());
            }
        }
        out
    }

    fn known_workflow(&mut self, lit: &Node<Lit>) {
        // `workflow == ""` tests for "no workflow matched".
        if let Lit::Str(name) = &lit.node
            && !name.is_empty()
            && !self.env.workflows.contains(name)
        {
            let help = did_you_mean(name, self.env.workflows.iter().map(String::as_str));
            self.push(
                Diagnostic::new(
                    codes::UNKNOWN_WORKFLOW,
                    format!("unknown workflow `{name}`"),
                    lit.span,
                    "no workflow of this name is declared",
                )
                .maybe_help(
                    help.or_else(|| Some("declare it with `workflow \"…\" { … }`".to_string())),
                ),
            );
        }
    }

    fn workflow_names(&mut self, field: &Node<Operand>, value: &Node<Operand>) {
        if let (Operand::Field(f), Operand::Lit(l)) = (&field.node, &value.node)
            && f.node == "workflow"
        {
            self.known_workflow(&Node::new(l.clone(), value.span));
        }
    }

    /// The type of an operand, or `None` when it was already reported.
    fn operand(&mut self, o: &Node<Operand>, ctx: &mut Ctx) -> Option<Ty> {
        match &o.node {
            Operand::Lit(l) => self.lit(&Node::new(l.clone(), o.span)),
            Operand::Header(h) => {
                self.nonempty(h, "the header name");
                Some(Ty::Str)
            }
            Operand::ResponseHeader(h) => {
                self.nonempty(h, "the header name");
                self.response_only(ctx, o.span, "`response header`");
                Some(Ty::Str)
            }
            Operand::ToolName { call: true } => {
                ctx.reads_tool_call = true;
                self.response_only(ctx, o.span, "`tool_call.name`");
                Some(Ty::Str)
            }
            Operand::ToolName { call: false } => {
                ctx.reads_tool = true;
                self.request_only(ctx, o.span, "`tool.name`");
                Some(Ty::Str)
            }
            Operand::ToolArgument(p) => {
                ctx.reads_tool_call = true;
                self.response_only(ctx, o.span, "`tool_call.argument`");
                if p.node.is_empty() || !writ_plugin::tools::is_json_pointer(&p.node) {
                    let message = if p.node.is_empty() {
                        "an empty pointer is the whole arguments object, not a value".to_string()
                    } else {
                        format!("`{}` is not a JSON pointer", p.node)
                    };
                    let help = if !p.node.is_empty() && !p.node.starts_with('/') {
                        format!("a pointer starts with `/`: \"/{}\"", p.node)
                    } else {
                        "write e.g. \"/amount\" or \"/order/id\"; `~` is written `~0`, `/` in a key `~1`"
                            .to_string()
                    };
                    self.push(
                        Diagnostic::new(
                            codes::BAD_JSON_POINTER,
                            message,
                            p.span,
                            "expected an RFC 6901 JSON pointer",
                        )
                        .help(help),
                    );
                }
                Some(Ty::Argument)
            }
            Operand::Field(f) => {
                let name = f.node.as_str();
                if lookup(FIELDS, name).is_none() {
                    let mut help = did_you_mean(name, words(FIELDS));
                    if name == "prompt" || name == "response" {
                        help = Some(format!("test text with `{name} has pii(…)`"));
                    } else if lookup(MEASURES, name).is_some()
                        || name == "spend"
                        || name == "confidence"
                    {
                        help = Some(format!("`{name}` is a function: `{name}(…)`"));
                    }
                    self.push(
                        Diagnostic::new(
                            codes::UNKNOWN_FIELD,
                            format!("unknown field `{name}`"),
                            f.span,
                            "not a known field",
                        )
                        .maybe_help(help),
                    );
                    return None;
                }
                if ctx.response.is_none() && !matches!(name, "path" | "method") {
                    self.not_in_match(f.span, &format!("`{name}`"));
                    return None;
                }
                if name == "status" {
                    self.response_only(ctx, f.span, "`status`");
                }
                Some(match name {
                    "max_tokens" | "status" => Ty::Num,
                    "stream" => Ty::Bool,
                    _ => Ty::Str,
                })
            }
            Operand::Call { name, args } => match name.node.as_str() {
                "spend" => {
                    if ctx.response.is_none() {
                        self.not_in_match(o.span, "`spend`");
                        return None;
                    }
                    ctx.uses_spend = true;
                    let names: Vec<&Ident> = args
                        .iter()
                        .filter_map(|a| match &a.node {
                            CallArg::Name(n) => Some(n),
                            _ => None,
                        })
                        .collect();
                    if args.len() != 2 || names.len() != 2 {
                        self.push(
                            Diagnostic::new(
                                codes::TYPE_MISMATCH,
                                "`spend` takes a scope and a window",
                                o.span,
                                "wrong arguments",
                            )
                            .help("write e.g. `spend(team, month)`"),
                        );
                        return None;
                    }
                    let mut ok = true;
                    if let Some(scope) = names.first() {
                        ok &= self.scope_arg(scope, "spend", "budget");
                    }
                    if let Some(window) = names.get(1)
                        && lookup(WINDOWS, &window.node).is_none()
                    {
                        ok = false;
                        self.push(
                            Diagnostic::new(
                                codes::UNKNOWN_WINDOW,
                                format!("unknown spend window `{}`", window.node),
                                window.span,
                                "expected `hour`, `day` or `month`",
                            )
                            .maybe_help(did_you_mean(&window.node, words(WINDOWS))),
                        );
                    }
                    ok.then_some(Ty::Money)
                }
                f @ ("tokens" | "requests") => self.rate_call(o, f, args, ctx),
                "confidence" => {
                    self.response_only(ctx, o.span, "`confidence`");
                    match args.as_slice() {
                        [a] if matches!(a.node, CallArg::Header(_) | CallArg::Json(_)) => {
                            if let CallArg::Json(p) = &a.node
                                && !(p.node.is_empty() || p.node.starts_with('/'))
                            {
                                self.push(
                                    Diagnostic::new(
                                        codes::TYPE_MISMATCH,
                                        "a JSON pointer starts with `/`",
                                        p.span,
                                        "not a JSON pointer",
                                    )
                                    .help("write e.g. `json \"/choices/0/confidence\"`"),
                                );
                            }
                            Some(Ty::Fraction)
                        }
                        _ => {
                            self.push(
                                Diagnostic::new(
                                    codes::TYPE_MISMATCH,
                                    "`confidence` takes `header \"…\"` or `json \"/pointer\"`",
                                    o.span,
                                    "wrong arguments",
                                )
                                .help("write e.g. `confidence(header \"x-model-confidence\")`"),
                            );
                            None
                        }
                    }
                }
                other => {
                    self.push(
                        Diagnostic::new(
                            codes::UNKNOWN_FUNCTION,
                            format!("unknown function `{other}`"),
                            name.span,
                            "not a known function",
                        )
                        .maybe_help(did_you_mean(
                            other,
                            ["spend", "confidence", "tokens", "requests"],
                        )),
                    );
                    None
                }
            },
        }
    }

    /// The scope of `spend(…)` or a rate limit: a known scope, identified by a trusted
    /// header (a warning otherwise). `what` is the function, `kind` what it keeps
    /// (`budget`, `rate limit`). False when the scope is unknown.
    fn scope_arg(&mut self, scope: &Ident, what: &str, kind: &str) -> bool {
        if lookup(SCOPES, &scope.node).is_none() {
            self.push(
                Diagnostic::new(
                    codes::UNKNOWN_SCOPE,
                    format!("unknown {what} scope `{}`", scope.node),
                    scope.span,
                    "expected `team`, `user` or `workflow`",
                )
                .maybe_help(did_you_mean(&scope.node, words(SCOPES))),
            );
            return false;
        }
        if scope.node == "workflow" {
            return true;
        }
        let untrusted: Vec<Span> = self
            .env
            .untrusted
            .iter()
            .filter(|(who, _)| *who == scope.node)
            .map(|(_, s)| *s)
            .collect();
        if let Some(first) = untrusted.first() {
            self.push(
                Diagnostic::new(
                    codes::UNTRUSTED_BUDGET,
                    format!(
                        "{kind} per {} relies on a header the client sets",
                        scope.node
                    ),
                    scope.span,
                    format!("a client can change its identity to dodge this {kind}"),
                )
                .with_label(*first, "identified by an untrusted header here")
                .help("identify it `by trusted header` set by Envoy's `jwt_authn`"),
            );
        }
        if !self.env.identified.contains(&scope.node) {
            self.push(
                Diagnostic::new(
                    codes::UNIDENTIFIED_SCOPE,
                    format!(
                        "{kind} per {} but no workflow identifies the {}",
                        scope.node, scope.node
                    ),
                    scope.span,
                    format!("every request would share one {kind}"),
                )
                .help(format!(
                    "add `identify {} by trusted header \"…\"` to the workflows",
                    scope.node
                )),
            );
        }
        true
    }

    /// `tokens(scope, window)` / `requests(scope, window)`: a count, request rules only.
    fn rate_call(
        &mut self,
        o: &Node<Operand>,
        f: &str,
        args: &[Node<CallArg>],
        ctx: &mut Ctx,
    ) -> Option<Ty> {
        match ctx.response {
            None => {
                self.not_in_match(o.span, &format!("`{f}`"));
                return None;
            }
            Some(true) => {
                self.push(
                    Diagnostic::new(
                        codes::REQUEST_ONLY,
                        format!("`{f}` in a response-phase rule"),
                        o.span,
                        "counted when the request is admitted",
                    )
                    .help("write `on request` for rate limits"),
                );
                return None;
            }
            Some(false) => {}
        }
        let names: Vec<&Ident> = args
            .iter()
            .filter_map(|a| match &a.node {
                CallArg::Name(n) => Some(n),
                _ => None,
            })
            .collect();
        let (scope, window) = match (args.len(), names.as_slice()) {
            (2, [scope, window]) => (*scope, *window),
            _ => {
                self.push(
                    Diagnostic::new(
                        codes::TYPE_MISMATCH,
                        format!("`{f}` takes a scope and a window"),
                        o.span,
                        "wrong arguments",
                    )
                    .help(format!("write e.g. `{f}(user, minute)`")),
                );
                return None;
            }
        };
        let mut ok = self.scope_arg(scope, f, "rate limit");
        if lookup(RATE_WINDOWS, &window.node).is_none() {
            ok = false;
            let help = if window.node == "month" {
                Some("rate limits count per `minute`, `hour` or `day`; a monthly cap is a budget: `spend(…, month)`".to_string())
            } else {
                did_you_mean(&window.node, words(RATE_WINDOWS))
            };
            self.push(
                Diagnostic::new(
                    codes::UNKNOWN_WINDOW,
                    format!("unknown rate-limit window `{}`", window.node),
                    window.span,
                    "expected `minute`, `hour` or `day`",
                )
                .maybe_help(help),
            );
        }
        ok.then_some(Ty::Num)
    }

    fn lit(&mut self, l: &Node<Lit>) -> Option<Ty> {
        match &l.node {
            Lit::Str(_) => Some(Ty::Str),
            Lit::Num(_) => Some(Ty::Num),
            Lit::Bool(_) => Some(Ty::Bool),
            Lit::Percent(n) => {
                self.percent(n, l.span);
                Some(Ty::Percent)
            }
            Lit::Money { num, currency } => {
                self.amount(num, Some(currency), l.span);
                Some(Ty::Money)
            }
            Lit::List(_) => {
                if let Lit::List(items) = &l.node {
                    self.list(&Node::new(items.clone(), l.span))
                } else {
                    None
                }
            }
        }
    }

    fn list(&mut self, l: &Node<Vec<Node<Lit>>>) -> Option<Ty> {
        let mut first: Option<(Ty, Span)> = None;
        for item in &l.node {
            let t = self.lit(item)?;
            if matches!(t, Ty::List(_) | Ty::EmptyList) {
                self.push(
                    Diagnostic::new(
                        codes::MIXED_LIST,
                        "a list inside a list",
                        item.span,
                        "lists hold plain values",
                    )
                    .help("flatten the list"),
                );
                return None;
            }
            match &first {
                None => first = Some((t, item.span)),
                Some((ft, fs)) if *ft != t => {
                    self.push(
                        Diagnostic::new(
                            codes::MIXED_LIST,
                            "list mixes types",
                            item.span,
                            format!("this is {}", t.name()),
                        )
                        .with_label(*fs, format!("the list starts with {}", ft.name()))
                        .help("a list holds values of one type"),
                    );
                    return None;
                }
                Some(_) => {}
            }
        }
        Some(match first {
            Some((t, _)) => Ty::List(Box::new(t)),
            None => Ty::EmptyList,
        })
    }

    pub(super) fn action(&mut self, a: &Node<Action>, ctx: &Ctx, response: bool) {
        match &a.node {
            Action::Allow => {}
            Action::Deny { status, message } => {
                let v = status.node.value;
                if !(400.0..=599.0).contains(&v) || v.fract() != 0.0 {
                    self.push(
                        Diagnostic::new(
                            codes::STATUS_OUT_OF_RANGE,
                            format!(
                                "deny status `{}` is not an HTTP error status",
                                status.node.text
                            ),
                            status.span,
                            "expected 400 to 599",
                        )
                        .help("use e.g. 403 (forbidden) or 429 (too many requests)"),
                    );
                }
                self.nonempty(message, "the deny message");
            }
            Action::Redact(t) | Action::Tokenise(t) => {
                let verb = if matches!(a.node, Action::Redact(_)) {
                    "redact"
                } else {
                    "tokenise"
                };
                match t {
                    Some(t) => {
                        self.has_target(t);
                    }
                    None if ctx.has_count == 0 => self.push(
                        Diagnostic::new(
                            codes::NOTHING_TO_TRANSFORM,
                            format!("`{verb}` has no detectors to act on"),
                            a.span,
                            "the condition names no detectors",
                        )
                        .help(format!(
                            "name them: `{verb} pii(email)`, or test them with `prompt has pii(…)`"
                        )),
                    ),
                    None => {}
                }
            }
            Action::Route(m) => {
                self.nonempty(m, "the model");
                if response {
                    self.route_on_response(a.span);
                }
            }
            Action::RouteCheapest(list) => {
                if response {
                    self.route_on_response(a.span);
                }
                if list.node.is_empty() {
                    self.push(Diagnostic::new(
                        codes::ROUTE_WITHOUT_PRICE,
                        "`route to cheapest` has no candidates",
                        list.span,
                        "empty list",
                    ));
                }
                for item in &list.node {
                    match &item.node {
                        Lit::Str(m) => {
                            if !self.env.prices.contains(m) {
                                let help =
                                    did_you_mean(m, self.env.prices.iter().map(String::as_str))
                                        .unwrap_or_else(|| {
                                            format!(
                                                "add `price \"{m}\" input … output … per 1M tokens`"
                                            )
                                        });
                                self.push(
                                    Diagnostic::new(
                                        codes::ROUTE_WITHOUT_PRICE,
                                        format!("model `{m}` has no price"),
                                        item.span,
                                        "cannot be compared by cost",
                                    )
                                    .help(help),
                                );
                            }
                        }
                        _ => self.push(Diagnostic::new(
                            codes::TYPE_MISMATCH,
                            "route candidates are model names",
                            item.span,
                            "expected a string",
                        )),
                    }
                }
            }
            Action::Escalate { queue, reason } => {
                self.nonempty(queue, "the review queue");
                self.nonempty(reason, "the reason");
            }
            Action::Tag { key, .. } => self.nonempty(key, "the tag key"),
            Action::StripTool => {
                if response {
                    self.request_only(ctx, a.span, "`strip tool`");
                } else if !ctx.reads_tool {
                    self.push(
                        Diagnostic::new(
                            codes::TOOL_ACTION_WITHOUT_TOOL,
                            "`strip tool` without a condition on `tool.name`",
                            a.span,
                            "which offered tools should go?",
                        )
                        .help("e.g. `when tool.name not in [\"lookup_order\"]` then `strip tool`"),
                    );
                }
            }
            Action::Hold { queue, reason } => {
                self.nonempty(queue, "the review queue");
                self.nonempty(reason, "the reason");
                if !response {
                    self.push(
                        Diagnostic::new(
                            codes::TOOL_ACTION_WITHOUT_TOOL,
                            "`hold` in a request-phase rule",
                            a.span,
                            "holds the reply's tool calls",
                        )
                        .help("write `on response` and a condition on `tool_call.…`"),
                    );
                } else if !ctx.reads_tool_call {
                    self.push(
                        Diagnostic::new(
                            codes::TOOL_ACTION_WITHOUT_TOOL,
                            "`hold` without a condition on `tool_call`",
                            a.span,
                            "which tool calls should wait for approval?",
                        )
                        .help("e.g. `when tool_call.name == \"issue_refund\"`; to review answers, use `escalate` without `hold`"),
                    );
                }
                if !self.env.kill_switch {
                    self.push(
                        Diagnostic::new(
                            codes::HOLD_WITHOUT_APPROVER,
                            "`hold` in a policy without a kill switch",
                            a.span,
                            "no one could approve the held calls",
                        )
                        .help("approvals use the kill switch's token: add `kill_switch { admin path \"…\" token sha256 \"…\" }`"),
                    );
                }
            }
            Action::Unknown(n) => {
                const ACTIONS: &[&str] = &[
                    "allow", "deny", "redact", "tokenise", "route", "escalate", "tag", "strip",
                ];
                self.push(
                    Diagnostic::new(codes::UNKNOWN_ACTION, format!("unknown action `{}`", n.node), n.span, "not an action")
                        .maybe_help(did_you_mean(&n.node, ACTIONS.iter().copied()).or_else(|| {
                            Some("the actions are `allow`, `deny`, `redact`, `tokenise`, `route`, `escalate` and `tag`".into())
                        })),
                );
            }
        }
    }

    fn route_on_response(&mut self, span: Span) {
        self.push(
            Diagnostic::new(
                codes::ROUTE_ON_RESPONSE,
                "`route` in a response-phase rule",
                span,
                "the request was already sent",
            )
            .help("routing rewrites the requested model; use it `on request`"),
        );
    }
}
