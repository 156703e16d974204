//! Source text → typed AST ([`crate::ast`]). The only module that knows pest.
//!
//! Parsing runs in two passes. A hand-written lexical pre-pass finds comments, unclosed
//! strings, unbalanced brackets and excessive nesting (so pest's recursive descent never
//! sees input deep enough to overflow the stack), and splits the file into top-level items.
//! Then pest parses each item on its own, so one syntax error does not hide the next item's.

mod lex;

use pest::Parser;
use pest::error::{ErrorVariant, InputLocation};
use pest::iterators::Pair;

use crate::ast::*;
use crate::diag::{Diagnostic, codes};

#[derive(pest_derive::Parser)]
#[grammar = "syntax/grammar.pest"]
struct PolicyParser;

/// How deep parentheses, brackets and `not`s may nest.
pub const MAX_DEPTH: usize = 64;

/// Parses a whole file. On syntax errors the AST holds the items that did parse; callers
/// should not run checks over it (missing items would be reported twice).
pub fn parse(source: &str) -> (File, Vec<Diagnostic>) {
    let lexed = lex::scan(source);
    let mut file = File {
        items: Vec::new(),
        comments: lexed.comments,
        parens: Vec::new(),
    };
    let mut parens = Vec::new();
    let mut diags = lexed.diags;
    if !diags.is_empty() {
        return (file, diags);
    }
    for (start, end) in lexed.segments {
        let text = source.get(start..end).unwrap_or("");
        match PolicyParser::parse(Rule::segment, text) {
            Ok(mut pairs) => {
                let mut b = Builder {
                    base: start,
                    source,
                    comments: &file.comments,
                    diags: &mut diags,
                    parens: &mut parens,
                };
                if let Some(item) = pairs
                    .next()
                    .and_then(|seg| seg.into_inner().find(|p| p.as_rule() == Rule::item))
                    && let Some(item) = b.item(item)
                {
                    file.items.push(item);
                }
            }
            Err(e) => diags.push(syntax_error(source, start, &e)),
        }
    }
    file.parens = parens;
    (file, diags)
}

/// Turns a pest error into an "unexpected X, expected Y" diagnostic in words.
fn syntax_error(source: &str, base: usize, e: &pest::error::Error<Rule>) -> Diagnostic {
    let pos = base
        + match e.location {
            InputLocation::Pos(p) => p,
            InputLocation::Span((s, _)) => s,
        };
    let (tok_start, tok_end, found) = lex::token_at(source, pos);
    let expected = match &e.variant {
        ErrorVariant::ParsingError { positives, .. } => expected_words(positives),
        ErrorVariant::CustomError { message } => message.clone(),
    };
    let message = match found {
        Some(ref tok) => format!("unexpected {tok}"),
        None => "unexpected end of file".to_string(),
    };
    let label = if expected.is_empty() {
        "not expected here".to_string()
    } else {
        format!("expected {expected}")
    };
    let hint = match found.as_deref() {
        Some("`&`") => Some("write `and` instead of `&&`".to_string()),
        Some("`|`") => Some("write `or` instead of `||`".to_string()),
        Some("`!`") => Some("write `not` to negate a condition".to_string()),
        Some("`'`") => Some("strings are written in double quotes: `\"…\"`".to_string()),
        Some("`=`") if expected.contains("comparison") => Some("compare with `==`".to_string()),
        Some(word) if word.starts_with('`') => {
            // A misspelt keyword: suggest the closest expected one.
            let word = word.trim_matches('`');
            let candidates: Vec<&str> = expected
                .split('`')
                .skip(1)
                .step_by(2)
                .filter(|c| c.chars().all(|ch| ch.is_ascii_alphanumeric() || ch == '_'))
                .collect();
            crate::check::suggest::did_you_mean(word, candidates)
        }
        _ => None,
    };
    Diagnostic::new(
        codes::UNEXPECTED_TOKEN,
        message,
        Span::new(tok_start, tok_end),
        label,
    )
    .maybe_help(hint)
}

/// The grammar rules a parse error lists, as the words a policy author knows.
fn expected_words(rules: &[Rule]) -> String {
    use Rule as R;
    const VALUE: &[Rule] = &[
        R::ident,
        R::k_header,
        R::k_response,
        R::k_prompt,
        R::number,
        R::percent,
        R::pct_num,
        R::string,
        R::k_true,
        R::k_false,
        R::lbrack,
        R::money,
        R::lparen,
        R::k_not,
        R::literal,
        R::operand,
        R::call,
        R::field,
        R::cond,
        R::unary,
        R::primary,
        R::has_expr,
    ];
    if rules.contains(&R::cmp_op) {
        // Right after an operand: what completes a comparison matters most.
        return "a comparison operator (`==`, `!=`, `<`, `<=`, `>`, `>=`), `in` or `not in`"
            .to_string();
    }
    let in_value = |r: &Rule| VALUE.contains(r);
    let mut words: Vec<String> = Vec::new();
    let condition = rules.contains(&R::k_not) || rules.contains(&R::cond);
    let value = !condition && rules.iter().filter(|r| in_value(r)).count() >= 3;
    for r in rules {
        let w = if condition && in_value(r) {
            "a condition".to_string()
        } else if value && in_value(r) {
            "a value".to_string()
        } else {
            describe(*r)
        };
        // Group descriptions list several words; split them so the sentence has one "or".
        let parts: Vec<String> = if w.contains('(') {
            vec![w]
        } else {
            w.split(", ").map(str::to_string).collect()
        };
        for w in parts {
            if !words.contains(&w) {
                words.push(w);
            }
        }
    }
    match words.split_last() {
        None => String::new(),
        Some((last, [])) => last.clone(),
        Some((last, rest)) => format!("{} or {last}", rest.join(", ")),
    }
}

fn describe(rule: Rule) -> String {
    use Rule as R;
    let s = match rule {
        R::ident => "a name",
        R::rule_id => "a clause id such as `AIP-2.1`",
        R::string | R::str_inner => "a string",
        R::number | R::pct_num => "a number",
        R::percent => "a percentage such as `10%`",
        R::currency => "a currency code such as `EUR`",
        R::money | R::amount => "an amount",
        R::lbrace => "`{`",
        R::rbrace => "`}`",
        R::lparen => "`(`",
        R::rparen => "`)`",
        R::lbrack => "`[`",
        R::rbrack => "`]`",
        R::comma => "`,`",
        R::equals => "`=`",
        R::cmp_op => "a comparison operator (`==`, `!=`, `<`, `<=`, `>`, `>=`)",
        R::bin_op => "`and`, `or`",
        R::cond | R::unary | R::primary => "a condition",
        R::operand | R::literal | R::field | R::call => "a value",
        R::list => "a list `[...]`",
        R::action => "an action",
        R::item | R::EOI => {
            "an item (`policy`, `workflow`, `price`, `detector`, `rule`, `manual` or `kill_switch`)"
        }
        R::has_target => "a detector class (`pii`, `secret` or a group such as `pii.eu`)",
        R::class_name => "a detector class (`pii`, `secret` or a group such as `pii.eu`)",
        R::policy_stmt => "`owner`, `implements`, `currency`, `enforcement`",
        R::workflow_stmt => {
            "`match`, `oversight`, `assume`, `identify`, `scan`, `review_cost`, `manual_cost`, `rollout`, `kill_point`, `review_signals`, `handoff`, `fallback`"
        }
        R::rollout_field => "a rollout-pack field such as `purpose \"…\"`",
        R::duration => "a duration such as `30s`",
        R::fail_kind => "a failure (`5xx`, `429`, `timeout` or `connect`)",
        R::fallback_step => {
            "a fallback (`model \"…\"`, `cluster \"…\"`, `reply 503 \"…\"` or `human \"…\"`)"
        }
        R::rule_stmt => "`on`, `when`, `then`, `enforcement`, `alert`",
        R::manual_stmt => "`owner`, `reason`",
        R::kill_stmt => "`admin path`, `token sha256`",
        R::identity => "`team by header \"…\"` or `user by header \"…\"`",
        R::call_arg => "an argument",
        R::k_tokenise => "`tokenise`",
        R::k_1m => "`1M`",
        R::k_tool_call_name => "`tool_call.name`",
        R::k_tool_call_argument => "`tool_call.argument`",
        R::k_tool_call_arguments => "`tool_call.arguments`",
        R::k_tool_name => "`tool.name`",
        other => {
            let name = format!("{other:?}");
            return match name.strip_prefix("k_") {
                Some(kw) => format!("`{kw}`"),
                None => name.replace('_', " "),
            };
        }
    };
    s.to_string()
}

/// Builds AST nodes from pest pairs of one segment.
struct Builder<'d> {
    base: usize,
    source: &'d str,
    comments: &'d [Comment],
    diags: &'d mut Vec<Diagnostic>,
    /// Where the author wrote parentheses (see [`File::parens`]).
    parens: &'d mut Vec<Span>,
}

/// Punctuation and keywords carry no information once the shape is known.
fn is_noise(r: Rule) -> bool {
    use Rule as R;
    matches!(
        r,
        R::lbrace
            | R::rbrace
            | R::lparen
            | R::rparen
            | R::lbrack
            | R::rbrack
            | R::comma
            | R::equals
    ) || format!("{r:?}").starts_with("k_")
}

/// Resolves `\"` and `\\`; other backslashes stay as written (see the lexer).
fn unescape(raw: &str) -> String {
    let mut out = String::with_capacity(raw.len());
    let mut chars = raw.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\\'
            && let Some(&next @ ('"' | '\\')) = chars.peek()
        {
            out.push(next);
            chars.next();
        } else {
            out.push(c);
        }
    }
    out
}

impl Builder<'_> {
    /// A pair's span without the whitespace and comments pest lets a rule end with (an
    /// optional part that did not match still consumes the trivia before it).
    fn span(&self, p: &Pair<'_, Rule>) -> Span {
        let s = p.as_span();
        let start = self.base + s.start();
        let mut end = self.base + s.end();
        loop {
            let text = self.source.get(start..end).unwrap_or("");
            end = start + text.trim_end().len();
            match self
                .comments
                .binary_search_by_key(&end, |c| c.span.end as usize)
                .ok()
                .and_then(|i| self.comments.get(i))
            {
                Some(c) if c.span.start as usize >= start => end = c.span.start as usize,
                _ => break,
            }
        }
        Span::new(start, end)
    }

    /// The meaningful children of a pair.
    fn kids<'i>(&self, p: Pair<'i, Rule>) -> Vec<Pair<'i, Rule>> {
        p.into_inner().filter(|c| !is_noise(c.as_rule())).collect()
    }

    /// A statement wrapper whose one statement carries one string (`owner "…"`,
    /// `admin path "…"`): which statement it is, the string, and the statement's span.
    fn string_stmt(&self, wrapper: &Pair<'_, Rule>) -> Option<(Rule, Str, Span)> {
        let s = wrapper.clone().into_inner().next()?;
        let span = self.span(&s);
        let rule = s.as_rule();
        let value = self.string(self.kids(s).first()?);
        Some((rule, value, span))
    }

    fn ident(&self, p: &Pair<'_, Rule>) -> Ident {
        Node::new(p.as_str().to_string(), self.span(p))
    }

    fn string(&self, p: &Pair<'_, Rule>) -> Str {
        let raw = p.as_str();
        let inner = raw
            .strip_prefix('"')
            .and_then(|s| s.strip_suffix('"'))
            .unwrap_or(raw);
        Node::new(unescape(inner), self.span(p))
    }

    fn num(&self, p: &Pair<'_, Rule>) -> Node<Num> {
        let text = p.as_str().trim_end_matches('%').trim().to_string();
        let value = text.parse::<f64>().unwrap_or(f64::INFINITY);
        Node::new(Num { text, value }, self.span(p))
    }

    fn item(&mut self, p: Pair<'_, Rule>) -> Option<Node<Item>> {
        let inner = p.into_inner().next()?;
        let span = self.span(&inner);
        let rule = inner.as_rule();
        let raw = inner.clone();
        let k = self.kids(inner);
        let item = match rule {
            Rule::policy_item => Item::Policy(PolicyItem {
                name: self.string(k.first()?),
                version: self.string(k.get(1)?),
                stmts: k
                    .iter()
                    .skip(2)
                    .filter_map(|s| self.policy_stmt(s.clone()))
                    .collect(),
            }),
            Rule::workflow_item => Item::Workflow(WorkflowItem {
                name: self.string(k.first()?),
                stmts: k
                    .iter()
                    .skip(1)
                    .filter_map(|s| self.workflow_stmt(s.clone()))
                    .collect(),
            }),
            Rule::price_item => {
                let amounts: Vec<Node<Amount>> =
                    k.iter().skip(1).map(|a| self.amount(a.clone())).collect();
                Item::Price(PriceItem {
                    model: self.string(k.first()?),
                    input: amounts.first()?.clone(),
                    output: amounts.get(1)?.clone(),
                    cached: amounts.get(2).cloned(),
                })
            }
            Rule::detector_item => {
                // The optional values are told apart by the keyword before them.
                let mut validator = None;
                let mut class = None;
                let mut last_kw = Rule::k_detector;
                for c in raw.clone().into_inner() {
                    match c.as_rule() {
                        Rule::k_validate | Rule::k_class => last_kw = c.as_rule(),
                        Rule::ident if last_kw == Rule::k_validate => {
                            validator = Some(self.ident(&c))
                        }
                        Rule::ident if last_kw == Rule::k_class => class = Some(self.ident(&c)),
                        _ => {}
                    }
                }
                let name = self.ident(k.first()?);
                let pattern = self.string(k.get(1)?);
                Item::Detector(DetectorItem {
                    name,
                    pattern,
                    validator,
                    class,
                })
            }
            Rule::rule_item => Item::Rule(RuleItem {
                id: self.ident(k.first()?),
                title: self.string(k.get(1)?),
                stmts: k
                    .iter()
                    .skip(2)
                    .filter_map(|s| self.rule_stmt(s.clone()))
                    .collect(),
            }),
            Rule::manual_item => Item::Manual(ManualItem {
                id: self.ident(k.first()?),
                title: self.string(k.get(1)?),
                stmts: k
                    .iter()
                    .skip(2)
                    .filter_map(|s| {
                        let (rule, v, sp) = self.string_stmt(s)?;
                        let stmt = if rule == Rule::owner_stmt {
                            ManualStmt::Owner(v)
                        } else {
                            ManualStmt::Reason(v)
                        };
                        Some(Node::new(stmt, sp))
                    })
                    .collect(),
            }),
            Rule::kill_item => Item::KillSwitch(KillSwitchItem {
                clause: k
                    .first()
                    .filter(|c| c.as_rule() == Rule::rule_id)
                    .map(|c| self.ident(c)),
                stmts: k
                    .iter()
                    .filter(|s| s.as_rule() == Rule::kill_stmt)
                    .filter_map(|s| {
                        let (rule, v, sp) = self.string_stmt(s)?;
                        let stmt = if rule == Rule::admin_stmt {
                            KillStmt::AdminPath(v)
                        } else {
                            KillStmt::TokenSha256(v)
                        };
                        Some(Node::new(stmt, sp))
                    })
                    .collect(),
            }),
            _ => return None,
        };
        Some(Node::new(item, span))
    }

    fn amount(&self, p: Pair<'_, Rule>) -> Node<Amount> {
        let mut span = self.span(&p);
        let mut num = Num {
            text: String::new(),
            value: 0.0,
        };
        let mut currency = None;
        for c in p.into_inner() {
            match c.as_rule() {
                Rule::number => {
                    let n = self.num(&c);
                    span = n.span;
                    num = n.node;
                }
                Rule::currency => {
                    let cur = self.ident(&c);
                    span = span.to(cur.span);
                    currency = Some(cur);
                }
                _ => {}
            }
        }
        Node::new(Amount { num, currency }, span)
    }

    fn policy_stmt(&mut self, p: Pair<'_, Rule>) -> Option<Node<PolicyStmt>> {
        let s = p.into_inner().next()?;
        let span = self.span(&s);
        let rule = s.as_rule();
        let k = self.kids(s);
        let v = k.first()?;
        let stmt = match rule {
            Rule::owner_stmt => PolicyStmt::Owner(self.string(v)),
            Rule::implements_stmt => PolicyStmt::Implements(self.string(v)),
            Rule::currency_stmt => PolicyStmt::Currency(self.ident(v)),
            Rule::enforcement_stmt => PolicyStmt::Enforcement(self.ident(v)),
            _ => return None,
        };
        Some(Node::new(stmt, span))
    }

    fn fallback_step(&mut self, p: Pair<'_, Rule>) -> Option<Node<FallbackStep>> {
        let s = p.into_inner().next()?;
        let span = self.span(&s);
        let rule = s.as_rule();
        let k = self.kids(s);
        let step = match rule {
            Rule::fb_model => FallbackStep::Model(self.string(k.first()?)),
            Rule::fb_cluster => FallbackStep::Cluster(self.string(k.first()?)),
            Rule::fb_human => FallbackStep::Human(self.string(k.first()?)),
            Rule::fb_reply => FallbackStep::Reply {
                status: self.num(k.first()?),
                message: self.string(k.get(1)?),
            },
            _ => return None,
        };
        Some(Node::new(step, span))
    }

    fn workflow_stmt(&mut self, p: Pair<'_, Rule>) -> Option<Node<WorkflowStmt>> {
        let s = p.into_inner().next()?;
        let span = self.span(&s);
        let rule = s.as_rule();
        let stmt = match rule {
            Rule::match_stmt => {
                let c = self.kids(s).into_iter().next()?;
                WorkflowStmt::Match(self.cond(c, 0))
            }
            Rule::oversight_stmt => {
                let mut mode = None;
                let mut below = None;
                let mut sample = None;
                let mut last_kw = "";
                for c in s.into_inner() {
                    match c.as_rule() {
                        Rule::ident => mode = Some(self.ident(&c)),
                        Rule::k_below => last_kw = "below",
                        Rule::k_sample => last_kw = "sample",
                        Rule::number if last_kw == "below" => below = Some(self.num(&c)),
                        Rule::percent if last_kw == "sample" => sample = Some(self.num(&c)),
                        _ => {}
                    }
                }
                WorkflowStmt::Oversight {
                    mode: mode?,
                    below,
                    sample,
                }
            }
            Rule::assume_stmt => {
                let k = self.kids(s);
                let name = self.ident(k.first()?);
                let op = self.cmp_op(k.get(1)?);
                let v = k.get(2)?;
                let (value, currency) = if v.as_rule() == Rule::money {
                    let a = self.amount(v.clone());
                    let span = a.span;
                    (Node::new(a.node.num, span), a.node.currency)
                } else {
                    (self.num(v), None)
                };
                WorkflowStmt::Assume {
                    name,
                    op,
                    value,
                    percent: v.as_rule() == Rule::percent,
                    currency,
                }
            }
            Rule::cost_stmt => {
                let manual = s
                    .clone()
                    .into_inner()
                    .any(|c| c.as_rule() == Rule::k_manual_cost);
                let a = s.into_inner().find(|c| c.as_rule() == Rule::amount)?;
                WorkflowStmt::Cost {
                    kind: if manual {
                        CostKind::Manual
                    } else {
                        CostKind::Review
                    },
                    amount: self.amount(a),
                }
            }
            Rule::rollout_stmt => WorkflowStmt::Rollout(
                s.into_inner()
                    .filter(|c| c.as_rule() == Rule::rollout_field)
                    .filter_map(|f| {
                        let span = self.span(&f);
                        let mut parts = f.into_inner();
                        let key = self.ident(&parts.next()?);
                        let v = parts.next()?;
                        let vspan = self.span(&v);
                        let value = match v.as_rule() {
                            Rule::string => RolloutValue::Text(self.string(&v).node),
                            Rule::list => RolloutValue::List(self.list(v, 0).node),
                            _ => RolloutValue::Word(v.as_str().to_string()),
                        };
                        Some(Node::new(
                            RolloutField {
                                key,
                                value: Node::new(value, vspan),
                            },
                            span,
                        ))
                    })
                    .collect(),
            ),
            Rule::scan_stmt => {
                let list = s.into_inner().find(|c| c.as_rule() == Rule::list);
                match list {
                    Some(l) => WorkflowStmt::Scan(ScanTarget::Headers(self.list(l, 0))),
                    None => WorkflowStmt::Scan(ScanTarget::Query),
                }
            }
            Rule::kill_point_stmt | Rule::review_signals_stmt | Rule::handoff_stmt => {
                self.operating_stmt(s)?
            }
            Rule::fallback_stmt => {
                let mut on = Vec::new();
                let mut steps = Vec::new();
                for c in s.into_inner() {
                    match c.as_rule() {
                        Rule::fail_kind => on.push(self.ident(&c)),
                        Rule::fallback_step => {
                            if let Some(step) = self.fallback_step(c) {
                                steps.push(step);
                            }
                        }
                        _ => {}
                    }
                }
                WorkflowStmt::Fallback { on, steps }
            }
            Rule::identify_stmt => WorkflowStmt::Identify(
                self.kids(s)
                    .into_iter()
                    .filter_map(|id| {
                        let span = self.span(&id);
                        let mut who = None;
                        let mut trusted = false;
                        let mut header = None;
                        for c in id.into_inner() {
                            match c.as_rule() {
                                Rule::ident => who = Some(self.ident(&c)),
                                Rule::k_trusted => trusted = true,
                                Rule::string => header = Some(self.string(&c)),
                                _ => {}
                            }
                        }
                        Some(Node::new(
                            Identity {
                                who: who?,
                                trusted,
                                header: header?,
                            },
                            span,
                        ))
                    })
                    .collect(),
            ),
            _ => return None,
        };
        Some(Node::new(stmt, span))
    }

    /// The operating-model statements of a workflow (issue 15): kill points, review
    /// signals, handoff context.
    fn operating_stmt(&mut self, s: Pair<'_, Rule>) -> Option<WorkflowStmt> {
        match s.as_rule() {
            Rule::kill_point_stmt => {
                let raw: Vec<Pair<'_, Rule>> = s.clone().into_inner().collect();
                let k = self.kids(s);
                let metric = self.ident(k.first()?);
                let op = self.cmp_op(k.get(1)?);
                let v = k.get(2)?;
                let (value, percent, currency) = if v.as_rule() == Rule::percent {
                    (self.num(v), true, None)
                } else {
                    let a = self.amount(v.clone());
                    let value = Node::new(a.node.num, a.span);
                    (value, false, a.node.currency)
                };
                let over = self.num(k.get(3)?);
                let unit = self.ident(k.get(4)?);
                let after = k
                    .iter()
                    .find(|c| c.as_rule() == Rule::kill_after)
                    .and_then(|c| self.kids(c.clone()).first().map(|n| self.num(n)));
                let stop = raw.iter().any(|c| c.as_rule() == Rule::kill_stop);
                Some(WorkflowStmt::KillPoint(KillPoint {
                    metric,
                    op,
                    value,
                    percent,
                    currency,
                    over,
                    unit,
                    after,
                    stop,
                }))
            }
            Rule::review_signals_stmt => {
                let k = self.kids(s);
                let after = k
                    .iter()
                    .find(|c| c.as_rule() == Rule::review_after)
                    .and_then(|c| self.kids(c.clone()).first().map(|n| self.num(n)));
                let signals = k
                    .into_iter()
                    .filter(|c| c.as_rule() == Rule::review_signal)
                    .filter_map(|sig| {
                        let span = self.span(&sig);
                        let k = self.kids(sig);
                        let v = k.get(2)?;
                        let unit = match v.as_rule() {
                            Rule::percent => "%".to_string(),
                            Rule::duration => v
                                .as_str()
                                .chars()
                                .last()
                                .map(String::from)
                                .unwrap_or_default(),
                            _ => String::new(),
                        };
                        let text = v.as_str().trim_end_matches(['%', 's', 'm', 'h']);
                        let value = Node::new(
                            Num {
                                text: text.to_string(),
                                value: text.parse::<f64>().unwrap_or(f64::INFINITY),
                            },
                            self.span(v),
                        );
                        Some(Node::new(
                            ReviewSignal {
                                name: self.ident(k.first()?),
                                op: self.cmp_op(k.get(1)?),
                                value,
                                unit,
                            },
                            span,
                        ))
                    })
                    .collect();
                Some(WorkflowStmt::ReviewSignals { after, signals })
            }
            Rule::handoff_stmt => Some(WorkflowStmt::HandoffIncludes(
                self.ident(self.kids(s).first()?),
            )),
            _ => None,
        }
    }

    fn rule_stmt(&mut self, p: Pair<'_, Rule>) -> Option<Node<RuleStmt>> {
        let s = p.into_inner().next()?;
        let span = self.span(&s);
        let rule = s.as_rule();
        let k = self.kids(s);
        let v = k.into_iter().next()?;
        let stmt = match rule {
            Rule::on_stmt => RuleStmt::On(self.ident(&v)),
            Rule::when_stmt => RuleStmt::When(self.cond(v, 0)),
            Rule::then_stmt => RuleStmt::Then(self.action(v)?),
            Rule::enforcement_stmt => RuleStmt::Enforcement(self.ident(&v)),
            Rule::alert_stmt => RuleStmt::AlertAt(self.num(&v)),
            _ => return None,
        };
        Some(Node::new(stmt, span))
    }

    fn action(&mut self, p: Pair<'_, Rule>) -> Option<Node<Action>> {
        let a = p.into_inner().next()?;
        let span = self.span(&a);
        let rule = a.as_rule();
        let hold = a.clone().into_inner().any(|c| c.as_rule() == Rule::k_hold);
        let k = self.kids(a);
        let action = match rule {
            Rule::act_allow => Action::Allow,
            Rule::act_deny => Action::Deny {
                status: self.num(k.first()?),
                message: self.string(k.get(1)?),
            },
            Rule::act_redact => Action::Redact(k.first().map(|t| self.has_target(t.clone()))),
            Rule::act_tokenise => Action::Tokenise(k.first().map(|t| self.has_target(t.clone()))),
            Rule::act_route => {
                let t = k.first()?;
                if t.as_rule() == Rule::list {
                    Action::RouteCheapest(self.list(t.clone(), 0))
                } else {
                    Action::Route(self.string(t))
                }
            }
            Rule::act_escalate if hold => Action::Hold {
                queue: self.string(k.first()?),
                reason: self.string(k.get(1)?),
            },
            Rule::act_escalate => Action::Escalate {
                queue: self.string(k.first()?),
                reason: self.string(k.get(1)?),
            },
            Rule::act_strip => Action::StripTool,
            Rule::act_tag => Action::Tag {
                key: self.string(k.first()?),
                value: self.string(k.get(1)?),
            },
            _ => Action::Unknown(self.ident(k.first()?)),
        };
        Some(Node::new(action, span))
    }

    fn has_target(&self, p: Pair<'_, Rule>) -> Node<HasTarget> {
        let span = self.span(&p);
        let mut class = Node::new(String::new(), span);
        let mut names = None;
        let mut first = true;
        for c in p.into_inner() {
            match c.as_rule() {
                Rule::class_name if first => {
                    class = self.ident(&c);
                    first = false;
                }
                Rule::ident => names.get_or_insert_with(Vec::new).push(self.ident(&c)),
                Rule::lparen => {
                    names.get_or_insert_with(Vec::new);
                }
                _ => {}
            }
        }
        Node::new(HasTarget { class, names }, span)
    }

    fn too_deep(&mut self, span: Span) -> Node<Cond> {
        self.diags.push(
            Diagnostic::new(
                codes::NESTING_TOO_DEEP,
                format!("condition nested more than {MAX_DEPTH} levels deep"),
                span,
                "nested too deeply",
            )
            .help("simplify the condition"),
        );
        Node::new(Cond::Error, span)
    }

    /// `cond = unary (op unary)*`, grouped by precedence: `or` binds looser than `and`.
    fn cond(&mut self, p: Pair<'_, Rule>, depth: usize) -> Node<Cond> {
        let span = self.span(&p);
        let mut ors: Vec<Node<Cond>> = Vec::new();
        let mut ands: Vec<Node<Cond>> = Vec::new();
        for c in p.into_inner() {
            match c.as_rule() {
                Rule::unary => ands.push(self.unary(c, depth)),
                Rule::bin_op if c.as_str() == "or" => {
                    ors.push(group(std::mem::take(&mut ands), Cond::And))
                }
                _ => {}
            }
        }
        ors.push(group(ands, Cond::And));
        let mut g = group(ors, Cond::Or);
        // A condition that is one parenthesised part takes this wider span: the recorded
        // parentheses belong to the node, whatever span it ends up with.
        if let Some(last) = self.parens.last_mut()
            && last.same(&g.span)
        {
            *last = span;
        }
        g.span = span;
        g
    }

    fn unary(&mut self, p: Pair<'_, Rule>, depth: usize) -> Node<Cond> {
        let span = self.span(&p);
        let mut nots: Vec<Span> = Vec::new();
        let mut prim = None;
        for c in p.into_inner() {
            match c.as_rule() {
                Rule::k_not => nots.push(self.span(&c)),
                Rule::primary => prim = Some(c),
                _ => {}
            }
        }
        if depth + nots.len() > MAX_DEPTH {
            let at = nots
                .get(MAX_DEPTH.saturating_sub(depth))
                .copied()
                .unwrap_or(span);
            return self.too_deep(at);
        }
        let depth = depth + nots.len();
        let Some(prim) = prim else {
            return Node::new(Cond::Error, span);
        };
        let mut c = self.primary(prim, depth);
        for not in nots.into_iter().rev() {
            let s = not.to(c.span);
            c = Node::new(Cond::Not(Box::new(c)), s);
        }
        c
    }

    fn primary(&mut self, p: Pair<'_, Rule>, depth: usize) -> Node<Cond> {
        let span = self.span(&p);
        let Some(inner) = p.into_inner().next() else {
            return Node::new(Cond::Error, span);
        };
        let rule = inner.as_rule();
        match rule {
            Rule::paren => {
                if depth + 1 > MAX_DEPTH {
                    return self.too_deep(span);
                }
                match inner.into_inner().find(|c| c.as_rule() == Rule::cond) {
                    Some(c) => {
                        let node = self.cond(c, depth + 1);
                        // `((x))` is one pair as far as the layout goes.
                        if !self.parens.last().is_some_and(|s| s.same(&node.span)) {
                            self.parens.push(node.span);
                        }
                        node
                    }
                    None => Node::new(Cond::Error, span),
                }
            }
            Rule::has_expr => {
                let mut subject = Node::new(Subject::Prompt, span);
                let mut target = None;
                for c in inner.into_inner() {
                    match c.as_rule() {
                        Rule::k_prompt => subject = Node::new(Subject::Prompt, self.span(&c)),
                        Rule::k_response => subject = Node::new(Subject::Response, self.span(&c)),
                        Rule::k_query => subject = Node::new(Subject::Query, self.span(&c)),
                        Rule::k_tool_call_arguments => {
                            subject = Node::new(Subject::ToolArguments, self.span(&c))
                        }
                        Rule::k_tool_result => {
                            subject = Node::new(Subject::ToolResults, self.span(&c))
                        }
                        Rule::header_subject => {
                            let span = self.span(&c);
                            if let Some(name) = c.into_inner().find(|n| n.as_rule() == Rule::string)
                            {
                                let name = self.string(&name).node;
                                subject = Node::new(Subject::Header(name), span);
                            }
                        }
                        Rule::has_target => target = Some(self.has_target(c)),
                        _ => {}
                    }
                }
                match target {
                    Some(target) => Node::new(Cond::Has { subject, target }, span),
                    None => Node::new(Cond::Error, span),
                }
            }
            Rule::in_expr => {
                let mut operand = None;
                let mut negated = false;
                let mut list = None;
                for c in inner.into_inner() {
                    match c.as_rule() {
                        Rule::operand => operand = Some(self.operand(c, depth)),
                        Rule::k_not => negated = true,
                        Rule::list => list = Some(self.list(c, depth)),
                        _ => {}
                    }
                }
                match (operand, list) {
                    (Some(operand), Some(list)) => Node::new(
                        Cond::In {
                            operand,
                            negated,
                            list,
                        },
                        span,
                    ),
                    _ => Node::new(Cond::Error, span),
                }
            }
            Rule::compare => {
                let k = self.kids(inner);
                match (k.first(), k.get(1), k.get(2)) {
                    (Some(l), Some(o), Some(r)) => {
                        let left = self.operand(l.clone(), depth);
                        let op = self.cmp_op(o);
                        let right = self.operand(r.clone(), depth);
                        Node::new(Cond::Compare { left, op, right }, span)
                    }
                    _ => Node::new(Cond::Error, span),
                }
            }
            Rule::operand => Node::new(Cond::Bare(self.operand(inner, depth)), span),
            _ => Node::new(Cond::Error, span),
        }
    }

    fn cmp_op(&self, p: &Pair<'_, Rule>) -> Node<CmpOp> {
        let op = match p.as_str() {
            "==" => CmpOp::Eq,
            "!=" => CmpOp::Ne,
            "<" => CmpOp::Lt,
            "<=" => CmpOp::Le,
            ">" => CmpOp::Gt,
            _ => CmpOp::Ge,
        };
        Node::new(op, self.span(p))
    }

    fn operand(&mut self, p: Pair<'_, Rule>, depth: usize) -> Node<Operand> {
        let span = self.span(&p);
        let Some(inner) = p.into_inner().next() else {
            return Node::new(Operand::Lit(Lit::Bool(false)), span);
        };
        let op = match inner.as_rule() {
            Rule::call => {
                let k = self.kids(inner);
                let name = k
                    .first()
                    .map(|n| self.ident(n))
                    .unwrap_or_else(|| Node::new(String::new(), span));
                let args = k
                    .iter()
                    .skip(1)
                    .filter_map(|a| {
                        let aspan = self.span(a);
                        let mut kw = "";
                        let mut arg = None;
                        for c in a.clone().into_inner() {
                            match c.as_rule() {
                                Rule::k_header => kw = "header",
                                Rule::k_json => kw = "json",
                                Rule::ident => arg = Some(CallArg::Name(self.ident(&c))),
                                Rule::string if kw == "json" => {
                                    arg = Some(CallArg::Json(self.string(&c)))
                                }
                                Rule::string => arg = Some(CallArg::Header(self.string(&c))),
                                _ => {}
                            }
                        }
                        arg.map(|a| Node::new(a, aspan))
                    })
                    .collect();
                Operand::Call { name, args }
            }
            Rule::field => {
                let mut response = false;
                let mut argument = false;
                let mut out = None;
                for c in inner.into_inner() {
                    match c.as_rule() {
                        Rule::k_response => response = true,
                        Rule::k_tool_call_argument => argument = true,
                        Rule::k_tool_call_name => out = Some(Operand::ToolName { call: true }),
                        Rule::k_tool_name => out = Some(Operand::ToolName { call: false }),
                        Rule::string if argument => {
                            out = Some(Operand::ToolArgument(self.string(&c)))
                        }
                        Rule::ident => out = Some(Operand::Field(self.ident(&c))),
                        Rule::string if response => {
                            out = Some(Operand::ResponseHeader(self.string(&c)))
                        }
                        Rule::string => out = Some(Operand::Header(self.string(&c))),
                        _ => {}
                    }
                }
                out.unwrap_or(Operand::Lit(Lit::Bool(false)))
            }
            Rule::literal => Operand::Lit(self.literal(inner, depth).node),
            _ => Operand::Lit(Lit::Bool(false)),
        };
        Node::new(op, span)
    }

    fn literal(&mut self, p: Pair<'_, Rule>, depth: usize) -> Node<Lit> {
        let span = self.span(&p);
        let Some(inner) = p.into_inner().next() else {
            return Node::new(Lit::Bool(false), span);
        };
        let lit = match inner.as_rule() {
            Rule::money => {
                let mut num = Num {
                    text: String::new(),
                    value: 0.0,
                };
                let mut currency = Node::new(String::new(), span);
                for c in inner.into_inner() {
                    match c.as_rule() {
                        Rule::number => num = self.num(&c).node,
                        Rule::currency => currency = self.ident(&c),
                        _ => {}
                    }
                }
                Lit::Money { num, currency }
            }
            Rule::percent => Lit::Percent(self.num(&inner).node),
            Rule::number => Lit::Num(self.num(&inner).node),
            Rule::string => Lit::Str(self.string(&inner).node),
            Rule::k_true => Lit::Bool(true),
            Rule::k_false => Lit::Bool(false),
            Rule::list => Lit::List(self.list(inner, depth).node),
            _ => Lit::Bool(false),
        };
        Node::new(lit, span)
    }

    fn list(&mut self, p: Pair<'_, Rule>, depth: usize) -> Node<Vec<Node<Lit>>> {
        let span = self.span(&p);
        if depth + 1 > MAX_DEPTH {
            self.too_deep(span);
            return Node::new(Vec::new(), span);
        }
        let items = p
            .into_inner()
            .filter(|c| c.as_rule() == Rule::literal)
            .map(|c| self.literal(c, depth + 1))
            .collect();
        Node::new(items, span)
    }
}

/// One operand stays itself; several become an n-ary node.
fn group(mut parts: Vec<Node<Cond>>, make: fn(Vec<Node<Cond>>) -> Cond) -> Node<Cond> {
    if parts.len() == 1
        && let Some(only) = parts.pop()
    {
        return only;
    }
    let span = match (parts.first(), parts.last()) {
        (Some(f), Some(l)) => f.span.to(l.span),
        _ => Span::default(),
    };
    Node::new(make(parts), span)
}
