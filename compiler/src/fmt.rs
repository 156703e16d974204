//! The canonical layout printed by `writ fmt`: two-space indent, one statement per line,
//! single spaces around operators, a blank line between items (none between consecutive
//! `price` or `detector` lines), comments kept next to the statement they precede or end.
//! The policy header and manual clauses align their values in one column, as the
//! language reference shows them.
//!
//! Printing is a function of the AST alone (plus comments), so formatting is idempotent
//! and a formatted file parses back to the same tree.

use crate::ast::*;

/// Prints a parsed file canonically. `source` is needed only for the verbatim text of
/// unknown actions, which the AST does not model.
pub(crate) fn print_file(file: &File, source: &str) -> String {
    let mut p = Printer {
        out: String::new(),
        comments: &file.comments,
        next: 0,
        source,
        parens: &file.parens,
    };
    let mut prev: Option<&Item> = None;
    for item in &file.items {
        if let Some(prev) = prev {
            let one_liners = matches!(
                (prev, &item.node),
                (Item::Price(_), Item::Price(_)) | (Item::Detector(_), Item::Detector(_))
            );
            if !one_liners {
                p.out.push('\n');
            }
        }
        p.item(item);
        prev = Some(&item.node);
    }
    // Comments after the last item.
    let rest: Vec<&Comment> = file.comments.iter().skip(p.next).collect();
    if !rest.is_empty() && !p.out.is_empty() {
        p.out.push('\n');
    }
    for c in rest {
        p.out.push_str(&c.text);
        p.out.push('\n');
    }
    p.out
}

struct Printer<'a> {
    out: String,
    comments: &'a [Comment],
    /// Index of the first comment not yet printed.
    next: usize,
    source: &'a str,
    /// Where the author wrote parentheses: kept, even where precedence does not need them.
    parens: &'a [Span],
}

impl Printer<'_> {
    /// Prints every unprinted comment that starts before `pos`, each on its own line.
    fn leading(&mut self, pos: u32, indent: &str) {
        while let Some(c) = self.comments.get(self.next) {
            if c.span.start >= pos {
                break;
            }
            self.out.push_str(indent);
            self.out.push_str(&c.text);
            self.out.push('\n');
            self.next += 1;
        }
    }

    /// Ends the current line, with the comment that followed `end` on its source line.
    fn end_line(&mut self, end: u32) {
        if let Some(c) = self.comments.get(self.next) {
            let between = self
                .source
                .get(end as usize..c.span.start as usize)
                .unwrap_or("\n");
            if c.span.start >= end && !between.contains('\n') {
                self.out.push_str("  ");
                self.out.push_str(&c.text);
                self.next += 1;
            }
        }
        self.out.push('\n');
    }

    /// A `when` or `match` statement. When every comment inside it sits in an `in [...]`
    /// list, the list is printed one item per line with each comment where the author put
    /// it (`"gpt-4o",  # approved 2026-11`); otherwise as one line, comments above.
    fn cond_line(&mut self, indent: &str, keyword: &str, node: &Node<Cond>, span: Span) {
        let c = &node.node;
        let parens = self.parens;
        let wrap = |text: String| {
            if parens.iter().any(|s| s.same(&node.span)) {
                format!("({text})")
            } else {
                text
            }
        };
        let inner: Vec<Span> = self.comments[self.next..]
            .iter()
            .take_while(|k| k.span.start < span.end)
            .filter(|k| k.span.start > span.start)
            .map(|k| k.span)
            .collect();
        let mut lists = Vec::new();
        collect_lists(c, &mut lists);
        let in_a_list = |k: &Span| lists.iter().any(|l| l.start < k.start && k.start < l.end);
        if inner.is_empty() || !inner.iter().all(in_a_list) {
            let one_line = cond_with(c, &|l: &Node<Vec<Node<Lit>>>| lit_list(&l.node), parens);
            return self.line(indent, &format!("{keyword} {}", wrap(one_line)), span);
        }
        self.leading(span.start, indent);
        let (comments, source) = (self.comments, self.source);
        let item_indent = format!("{indent}  ");
        let printed = cond_with(
            c,
            &|l: &Node<Vec<Node<Lit>>>| list_lines(l, comments, source, &item_indent, indent),
            parens,
        );
        self.out.push_str(indent);
        self.out.push_str(&format!("{keyword} {}", wrap(printed)));
        while self
            .comments
            .get(self.next)
            .is_some_and(|k| k.span.start < span.end)
        {
            self.next += 1;
        }
        self.end_line(span.end);
    }

    fn line(&mut self, indent: &str, text: &str, span: Span) {
        self.leading(span.end, indent);
        self.out.push_str(indent);
        self.out.push_str(text);
        self.end_line(span.end);
    }

    fn block<T>(
        &mut self,
        head: String,
        span: Span,
        stmts: &[Node<T>],
        print: impl Fn(&T) -> String,
    ) {
        self.block_with(head, span, stmts, print, |_| None);
    }

    /// [`Printer::block`] where `condition` picks out the statements that hold a condition
    /// (`when`, `match`), printed by [`Printer::cond_line`].
    fn block_with<'c, T>(
        &mut self,
        head: String,
        span: Span,
        stmts: &'c [Node<T>],
        print: impl Fn(&T) -> String,
        condition: impl Fn(&'c T) -> Option<(&'static str, &'c Node<Cond>)>,
    ) {
        self.leading(span.start, "");
        self.out.push_str(&head);
        self.out.push_str(" {\n");
        for s in stmts {
            match condition(&s.node) {
                Some((keyword, c)) => self.cond_line("  ", keyword, c, s.span),
                None => self.line("  ", &print(&s.node), s.span),
            }
        }
        // Comments inside the block after the last statement.
        self.leading(span.end.saturating_sub(1), "  ");
        self.out.push('}');
        self.end_line(span.end);
    }

    /// A workflow: [`Printer::block_with`]'s layout, with the `rollout { … }` block nested
    /// one level deeper, its values aligned in one column and its comments kept in place.
    fn workflow(&mut self, w: &WorkflowItem, span: Span) {
        self.leading(span.start, "");
        self.out
            .push_str(&format!("workflow {} {{\n", string(&w.name.node)));
        for s in &w.stmts {
            match &s.node {
                WorkflowStmt::Match(c) => self.cond_line("  ", "match", c, s.span),
                WorkflowStmt::Rollout(fields) => {
                    let first = fields.first().map_or(s.span.end, |f| f.span.start);
                    self.leading(first.min(s.span.start + 1), "  ");
                    self.out.push_str("  rollout {");
                    self.end_line(s.span.start + 1);
                    let width = fields
                        .iter()
                        .map(|f| f.node.key.node.len())
                        .max()
                        .unwrap_or(0);
                    for f in fields {
                        let text = format!(
                            "{:width$} {}",
                            f.node.key.node,
                            rollout_value(&f.node.value.node)
                        );
                        self.line("    ", &text, f.span);
                    }
                    self.leading(s.span.end.saturating_sub(1), "    ");
                    self.out.push_str("  }");
                    self.end_line(s.span.end);
                }
                other => self.line("  ", &workflow_stmt(other), s.span),
            }
        }
        self.leading(span.end.saturating_sub(1), "  ");
        self.out.push('}');
        self.end_line(span.end);
    }

    fn item(&mut self, item: &Node<Item>) {
        let span = item.span;
        match &item.node {
            Item::Policy(p) => self.block(
                format!(
                    "policy {} version {}",
                    string(&p.name.node),
                    string(&p.version.node)
                ),
                span,
                &p.stmts,
                |s| match s {
                    PolicyStmt::Owner(v) => format!("owner       {}", string(&v.node)),
                    PolicyStmt::Implements(v) => format!("implements  {}", string(&v.node)),
                    PolicyStmt::Currency(v) => format!("currency    {}", v.node),
                    PolicyStmt::Enforcement(v) => format!("enforcement {}", v.node),
                },
            ),
            Item::Workflow(w) => self.workflow(w, span),
            Item::Price(p) => {
                let mut s = format!(
                    "price {} input {} output {}",
                    string(&p.model.node),
                    amount(&p.input.node),
                    amount(&p.output.node)
                );
                if let Some(c) = &p.cached {
                    s.push_str(&format!(" cached {}", amount(&c.node)));
                }
                s.push_str(" per 1M tokens");
                self.line("", &s, span);
            }
            Item::Detector(d) => {
                let mut s = format!(
                    "detector {} = regex {}",
                    d.name.node,
                    string(&d.pattern.node)
                );
                if let Some(v) = &d.validator {
                    s.push_str(&format!(" validate {}", v.node));
                }
                if let Some(c) = &d.class {
                    s.push_str(&format!(" class {}", c.node));
                }
                self.line("", &s, span);
            }
            Item::Rule(r) => {
                let source = self.source;
                let comments = self.comments;
                self.block_with(
                    format!("rule {} {}", r.id.node, string(&r.title.node)),
                    span,
                    &r.stmts,
                    |s| match s {
                        RuleStmt::On(v) => format!("on {}", v.node),
                        RuleStmt::When(c) => format!("when {}", cond(&c.node)),
                        RuleStmt::Then(a) => format!("then {}", action_src(a, source, comments)),
                        RuleStmt::Enforcement(v) => format!("enforcement {}", v.node),
                        RuleStmt::AlertAt(n) => format!("alert at {}%", n.node.text),
                    },
                    |s| match s {
                        RuleStmt::When(c) => Some(("when", c)),
                        _ => None,
                    },
                )
            }
            Item::Manual(m) => self.block(
                format!("manual {} {}", m.id.node, string(&m.title.node)),
                span,
                &m.stmts,
                |s| match s {
                    ManualStmt::Owner(v) => format!("owner  {}", string(&v.node)),
                    ManualStmt::Reason(v) => format!("reason {}", string(&v.node)),
                },
            ),
            Item::KillSwitch(k) => {
                let head = match &k.clause {
                    Some(c) => format!("kill_switch {}", c.node),
                    None => "kill_switch".to_string(),
                };
                self.block(head, span, &k.stmts, |s| match s {
                    KillStmt::AdminPath(v) => format!("admin path {}", string(&v.node)),
                    KillStmt::TokenSha256(v) => format!("token sha256 {}", string(&v.node)),
                })
            }
        }
    }
}

fn workflow_stmt(s: &WorkflowStmt) -> String {
    match s {
        WorkflowStmt::Match(c) => format!("match {}", cond(&c.node)),
        WorkflowStmt::Oversight {
            mode,
            below,
            sample,
        } => {
            let mut s = format!("oversight {}", mode.node);
            if let Some(b) = below {
                s.push_str(&format!(" below {}", b.node.text));
            }
            if let Some(p) = sample {
                s.push_str(&format!(" sample {}%", p.node.text));
            }
            s
        }
        WorkflowStmt::Assume {
            name,
            op,
            value,
            percent,
            currency,
        } => format!(
            "assume {} {} {}{}",
            name.node,
            op.node.as_str(),
            value.node.text,
            match (percent, currency) {
                (true, _) => "%".to_string(),
                (false, Some(c)) => format!(" {}", c.node),
                (false, None) => String::new(),
            }
        ),
        WorkflowStmt::Cost { kind, amount: a } => {
            format!("{} {}", kind.as_str(), amount(&a.node))
        }
        // Printed by `Printer::workflow`, which nests the block; this flat form is only
        // reached by callers that print one statement.
        WorkflowStmt::Rollout(fields) => {
            let parts: Vec<String> = fields
                .iter()
                .map(|f| format!("{} {}", f.node.key.node, rollout_value(&f.node.value.node)))
                .collect();
            format!("rollout {{ {} }}", parts.join(" "))
        }
        WorkflowStmt::Identify(ids) => {
            let parts: Vec<String> = ids
                .iter()
                .map(|i| {
                    format!(
                        "{} by {}header {}",
                        i.node.who.node,
                        if i.node.trusted { "trusted " } else { "" },
                        string(&i.node.header.node)
                    )
                })
                .collect();
            format!("identify {}", parts.join(", "))
        }
        WorkflowStmt::Scan(ScanTarget::Headers(names)) => {
            format!("scan headers {}", lit_list(&names.node))
        }
        WorkflowStmt::Scan(ScanTarget::Query) => "scan query".to_string(),
        // ---- operating model (issue 15) ----
        WorkflowStmt::KillPoint(k) => {
            let value = if k.percent {
                format!("{}%", k.value.node.text)
            } else {
                match &k.currency {
                    Some(c) => format!("{} {}", k.value.node.text, c.node),
                    None => k.value.node.text.clone(),
                }
            };
            let mut s = format!(
                "kill_point {} {} {value} over {} {}",
                k.metric.node,
                k.op.node.as_str(),
                k.over.node.text,
                k.unit.node
            );
            if let Some(a) = &k.after {
                s.push_str(&format!(" after {} requests", a.node.text));
            }
            if k.stop {
                s.push_str(" then stop");
            }
            s
        }
        WorkflowStmt::ReviewSignals { after, signals } => {
            let parts: Vec<String> = signals
                .iter()
                .map(|g| {
                    format!(
                        "{} {} {}{}",
                        g.node.name.node,
                        g.node.op.node.as_str(),
                        g.node.value.node.text,
                        g.node.unit
                    )
                })
                .collect();
            let after = after
                .as_ref()
                .map(|a| format!(" after {} reviews", a.node.text))
                .unwrap_or_default();
            format!("review_signals{after} {{ {} }}", parts.join(", "))
        }
        WorkflowStmt::HandoffIncludes(what) => format!("handoff includes {}", what.node),
        WorkflowStmt::Fallback { on, steps } => {
            let on: Vec<&str> = on.iter().map(|k| k.node.as_str()).collect();
            let steps: Vec<String> = steps
                .iter()
                .map(|s| match &s.node {
                    FallbackStep::Model(m) => format!("model {}", string(&m.node)),
                    FallbackStep::Cluster(c) => format!("cluster {}", string(&c.node)),
                    FallbackStep::Reply { status, message } => {
                        format!("reply {} {}", status.node.text, string(&message.node))
                    }
                    FallbackStep::Human(q) => format!("human {}", string(&q.node)),
                })
                .collect();
            if steps.is_empty() {
                format!("fallback on {}", on.join(", "))
            } else {
                format!("fallback on {} to {}", on.join(", "), steps.join(" then "))
            }
        }
    }
}

/// A rollout-pack value as the language writes it.
fn rollout_value(v: &RolloutValue) -> String {
    match v {
        RolloutValue::Text(t) => string(t),
        RolloutValue::List(items) => lit_list(items),
        RolloutValue::Word(w) => w.clone(),
    }
}

fn amount(a: &Amount) -> String {
    match &a.currency {
        Some(c) => format!("{} {}", a.num.text, c.node),
        None => a.num.text.clone(),
    }
}

/// A string literal with its quotes and escapes: `"` always, and a backslash only where it
/// would otherwise read as an escape (before `"`, `\` or the closing quote).
pub(crate) fn string(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' if matches!(chars.peek(), None | Some('"' | '\\')) => out.push_str("\\\\"),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// A condition, parenthesised only where precedence requires it (and where a nested
/// `and`/`or` of the same kind would otherwise be flattened on re-parse).
pub(crate) fn cond(c: &Cond) -> String {
    cond_with(c, &|l: &Node<Vec<Node<Lit>>>| lit_list(&l.node), &[])
}

/// Prints the literal list of an `in`.
type ListPrinter<'a> = dyn Fn(&Node<Vec<Node<Lit>>>) -> String + 'a;

/// [`cond`], with `list` printing the literal list of each `in` (one line, or one item per
/// line with the author's comments).
fn cond_with(c: &Cond, list: &ListPrinter, parens: &[Span]) -> String {
    let cond = |c: &Cond| cond_with(c, list, parens);
    // A part in parentheses: where precedence needs them, or where the author wrote them.
    let part = |p: &Node<Cond>, needed: bool| {
        if needed || parens.iter().any(|s| s.same(&p.span)) {
            format!("({})", cond(&p.node))
        } else {
            cond(&p.node)
        }
    };
    match c {
        Cond::And(parts) => parts
            .iter()
            .map(|p| part(p, matches!(p.node, Cond::And(_) | Cond::Or(_))))
            .collect::<Vec<_>>()
            .join(" and "),
        Cond::Or(parts) => parts
            .iter()
            .map(|p| part(p, matches!(p.node, Cond::Or(_))))
            .collect::<Vec<_>>()
            .join(" or "),
        Cond::Not(inner) => format!(
            "not {}",
            part(inner, matches!(inner.node, Cond::And(_) | Cond::Or(_)))
        ),
        Cond::Compare { left, op, right } => {
            format!(
                "{} {} {}",
                operand(&left.node),
                op.node.as_str(),
                operand(&right.node)
            )
        }
        Cond::In {
            operand: o,
            negated,
            list: l,
        } => format!(
            "{} {}in {}",
            operand(&o.node),
            if *negated { "not " } else { "" },
            list(l)
        ),
        Cond::Has { subject, target } => format!(
            "{} has {}",
            match &subject.node {
                Subject::Prompt => "prompt".to_string(),
                Subject::Response => "response".to_string(),
                Subject::Header(name) => format!("header {}", string(name)),
                Subject::Query => "query".to_string(),
                Subject::ToolArguments => "tool_call.arguments".to_string(),
                Subject::ToolResults => "tool_result".to_string(),
            },
            has_target(&target.node)
        ),
        Cond::Bare(o) => operand(&o.node),
        Cond::Error => "false".to_string(),
    }
}

pub(crate) fn has_target(t: &HasTarget) -> String {
    match &t.names {
        None => t.class.node.clone(),
        Some(names) => format!(
            "{}({})",
            t.class.node,
            names
                .iter()
                .map(|n| n.node.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        ),
    }
}

pub(crate) fn operand(o: &Operand) -> String {
    match o {
        Operand::Field(f) => f.node.clone(),
        Operand::Header(h) => format!("header {}", string(&h.node)),
        Operand::ResponseHeader(h) => format!("response header {}", string(&h.node)),
        Operand::ToolName { call: true } => "tool_call.name".to_string(),
        Operand::ToolName { call: false } => "tool.name".to_string(),
        Operand::ToolArgument(p) => format!("tool_call.argument {}", string(&p.node)),
        Operand::Call { name, args } => format!(
            "{}({})",
            name.node,
            args.iter()
                .map(|a| match &a.node {
                    CallArg::Name(n) => n.node.clone(),
                    CallArg::Header(h) => format!("header {}", string(&h.node)),
                    CallArg::Json(j) => format!("json {}", string(&j.node)),
                })
                .collect::<Vec<_>>()
                .join(", ")
        ),
        Operand::Lit(l) => lit(l),
    }
}

pub(crate) fn lit(l: &Lit) -> String {
    match l {
        Lit::Str(s) => string(s),
        Lit::Num(n) => n.text.clone(),
        Lit::Percent(n) => format!("{}%", n.text),
        Lit::Money { num, currency } => format!("{} {}", num.text, currency.node),
        Lit::Bool(b) => b.to_string(),
        Lit::List(items) => lit_list(items),
    }
}

/// The spans of every `in` list of a condition.
fn collect_lists(c: &Cond, out: &mut Vec<Span>) {
    match c {
        Cond::And(parts) | Cond::Or(parts) => {
            parts.iter().for_each(|p| collect_lists(&p.node, out))
        }
        Cond::Not(inner) => collect_lists(&inner.node, out),
        Cond::In { list, .. } => out.push(list.span),
        _ => {}
    }
}

/// A list one item per line, each followed by the comments that came after it in the
/// source: on its line when they were on its line, else on their own lines.
fn list_lines(
    l: &Node<Vec<Node<Lit>>>,
    comments: &[Comment],
    source: &str,
    item_indent: &str,
    close_indent: &str,
) -> String {
    let inside: Vec<&Comment> = comments
        .iter()
        .filter(|k| l.span.start < k.span.start && k.span.start < l.span.end)
        .collect();
    if inside.is_empty() {
        return lit_list(&l.node);
    }
    let mut out = String::from("[\n");
    let first = l.node.first().map_or(l.span.end, |i| i.span.start);
    for k in inside.iter().filter(|k| k.span.start < first) {
        out.push_str(&format!("{item_indent}{}\n", k.text));
    }
    for (i, item) in l.node.iter().enumerate() {
        let next = l.node.get(i + 1).map_or(l.span.end, |n| n.span.start);
        out.push_str(&format!("{item_indent}{},", lit(&item.node)));
        let mut on_line = true;
        for k in inside
            .iter()
            .filter(|k| item.span.end <= k.span.start && k.span.start < next)
        {
            let between = source
                .get(item.span.end as usize..k.span.start as usize)
                .unwrap_or("\n");
            if on_line && !between.contains('\n') {
                out.push_str(&format!("  {}", k.text));
            } else {
                out.push_str(&format!("\n{item_indent}{}", k.text));
            }
            on_line = false;
        }
        out.push('\n');
    }
    out.push_str(&format!("{close_indent}]"));
    out
}

pub(crate) fn lit_list(items: &[Node<Lit>]) -> String {
    format!(
        "[{}]",
        items
            .iter()
            .map(|i| lit(&i.node))
            .collect::<Vec<_>>()
            .join(", ")
    )
}

/// An action in canonical form; unknown actions print as their name.
pub(crate) fn action(a: &Action) -> String {
    match a {
        Action::Allow => "allow".to_string(),
        Action::Deny { status, message } => {
            format!("deny {} {}", status.node.text, string(&message.node))
        }
        Action::Redact(t) => match t {
            Some(t) => format!("redact {}", has_target(&t.node)),
            None => "redact".to_string(),
        },
        Action::Tokenise(t) => match t {
            Some(t) => format!("tokenise {}", has_target(&t.node)),
            None => "tokenise".to_string(),
        },
        Action::Route(m) => format!("route to {}", string(&m.node)),
        Action::RouteCheapest(l) => format!("route to cheapest {}", lit_list(&l.node)),
        Action::Escalate { queue, reason } => {
            format!(
                "escalate {} reason {}",
                string(&queue.node),
                string(&reason.node)
            )
        }
        Action::Tag { key, value } => {
            format!("tag {} = {}", string(&key.node), string(&value.node))
        }
        Action::Hold { queue, reason } => {
            format!(
                "escalate {} reason {} hold",
                string(&queue.node),
                string(&reason.node)
            )
        }
        Action::StripTool => "strip tool".to_string(),
        Action::Unknown(n) => n.node.clone(),
    }
}

/// Like [`action`], but an unknown action keeps its source text (less any comments inside
/// it, which the printer moves before the statement) so formatting never drops what the
/// author wrote.
fn action_src(a: &Node<Action>, source: &str, comments: &[Comment]) -> String {
    match &a.node {
        Action::Unknown(_) => {
            let (start, end) = (a.span.start, a.span.end);
            let mut text = String::new();
            let mut at = start;
            for c in comments
                .iter()
                .filter(|c| c.span.start >= start && c.span.end <= end)
            {
                text.push_str(source.get(at as usize..c.span.start as usize).unwrap_or(""));
                text.push(' ');
                at = c.span.end;
            }
            text.push_str(source.get(at as usize..end as usize).unwrap_or(""));
            text.split_whitespace().collect::<Vec<_>>().join(" ")
        }
        other => action(other),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use crate::format;

    #[test]
    fn nests_the_rollout_block_and_keeps_the_business_case_and_its_comments() {
        let src = "workflow \"w\" { match header \"x\" == \"w\"\n assume cost_per_transaction<=1.10   EUR review_cost 4.5 EUR\nmanual_cost 6\n rollout { # the pack\n  dri \"d\"\n  # between\n  hard_stops [\"a\",\"b\"]\n  phase beta  # now\n  # last\n } # after\n}\n";
        let out = format(src).unwrap();
        assert_eq!(
            out,
            "workflow \"w\" {\n  match header \"x\" == \"w\"\n  assume cost_per_transaction <= 1.10 EUR\n  review_cost 4.5 EUR\n  manual_cost 6\n  rollout {  # the pack\n    dri        \"d\"\n    # between\n    hard_stops [\"a\", \"b\"]\n    phase      beta  # now\n    # last\n  }  # after\n}\n"
        );
        assert_eq!(format(&out).unwrap(), out);
    }

    #[test]
    fn lays_out_canonically_and_keeps_comments() {
        let src = "# head\npolicy \"p\"   version \"1.0.0\" {owner \"o\"  # who\n implements \"a.md\"}\nprice \"a\" input 1 output 2 per 1M tokens\nprice \"b\" input 1 EUR output 2 EUR per 1M tokens\nrule A-1 \"t\" {\n on request when model==\"x\" and (path == \"/a\" or not stream)\n  then deny 403 \"no\"\n  # tail\n}\n# end\n";
        let out = format(src).unwrap();
        assert_eq!(
            out,
            "# head\npolicy \"p\" version \"1.0.0\" {\n  owner       \"o\"  # who\n  implements  \"a.md\"\n}\n\nprice \"a\" input 1 output 2 per 1M tokens\nprice \"b\" input 1 EUR output 2 EUR per 1M tokens\n\nrule A-1 \"t\" {\n  on request\n  when model == \"x\" and (path == \"/a\" or not stream)\n  then deny 403 \"no\"\n  # tail\n}\n\n# end\n"
        );
        assert_eq!(format(&out).unwrap(), out);
    }

    #[test]
    fn keeps_nested_groups_that_would_flatten() {
        let src =
            "rule A \"t\" {\n  when (a == 1 and b == 2) and c == 3 or (d == 4 or e == 5)\n}\n";
        let out = format(src).unwrap();
        assert!(
            out.contains("when (a == 1 and b == 2) and c == 3 or (d == 4 or e == 5)"),
            "{out}"
        );
        assert_eq!(format(&out).unwrap(), out);
    }

    #[test]
    fn keeps_each_list_items_comment_on_its_item() {
        let src = "rule A-1 \"t\" {\n  on request\n  when model not in [ # approved models\n    \"gpt-4o\",       # approved 2026-11\n    \"gpt-4o-mini\",  # approved 2026-10\n    # under review:\n    \"o3\"\n  ] and max_tokens > 10\n  then deny 403 \"no\"  # wording\n}\n";
        let out = format(src).unwrap();
        assert_eq!(
            out,
            "rule A-1 \"t\" {\n  on request\n  when model not in [\n    # approved models\n    \"gpt-4o\",  # approved 2026-11\n    \"gpt-4o-mini\",  # approved 2026-10\n    # under review:\n    \"o3\",\n  ] and max_tokens > 10\n  then deny 403 \"no\"  # wording\n}\n"
        );
        assert_eq!(format(&out).unwrap(), out);
        // Without comments in it, a list stays on one line.
        let plain =
            format("rule A-1 \"t\" {\n  when model in [\n \"a\",\n \"b\"\n ]\n}\n").unwrap();
        assert!(plain.contains("when model in [\"a\", \"b\"]"), "{plain}");
    }

    #[test]
    fn keeps_the_parentheses_the_author_wrote() {
        let src = "rule A \"t\" {\n  when (model == \"a\" or model == \"b\") and (max_tokens > 10) and not (stream)\n}\n";
        let out = format(src).unwrap();
        assert!(
            out.contains(
                "when (model == \"a\" or model == \"b\") and (max_tokens > 10) and not (stream)"
            ),
            "{out}"
        );
        assert_eq!(format(&out).unwrap(), out);
        // Where none were written, none are added beyond what precedence needs.
        let bare = format("rule A \"t\" {\n  when max_tokens > 10 and not stream\n}\n").unwrap();
        assert!(
            bare.contains("when max_tokens > 10 and not stream"),
            "{bare}"
        );
    }

    #[test]
    fn refuses_to_format_what_does_not_parse() {
        assert!(format("rule {").is_err());
    }
}
