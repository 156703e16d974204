//! Checked AST → the engine's IR ([`writ_plugin::ir`]). Names become indices, lists sorted
//! sets, money integer micros, percents fractions, header names lower case, and custom
//! detectors ahead-of-time compiled DFAs. Output depends only on the source (no hash-map
//! iteration order), so building twice gives the same bytes.
//!
//! Lowering runs only on a file the checker accepted; anything unexpected here is a
//! compiler bug, returned as an error string, never a panic.

use std::collections::{BTreeMap, BTreeSet};

use sha2::{Digest, Sha256};
use writ_plugin::ir;

use crate::ast::*;
use crate::diag::Lines;
use crate::resolved::{Resolved, micros};
use crate::{Compiled, ManualClause, RuleInfo};

struct Lowerer<'a> {
    /// Detector name → index in `detectors`.
    index: BTreeMap<String, u16>,
    detectors: Vec<ir::Detector>,
    customs: BTreeMap<String, &'a DetectorItem>,
    lines: Lines<'a>,
    resolved: &'a Resolved,
}

type Res<T> = Result<T, String>;

fn bug<T>(what: &str) -> Res<T> {
    Err(format!(
        "internal compiler error: {what} in a checked policy"
    ))
}

/// Lowers a checked file, with what its check resolved.
pub(crate) fn lower(file: &File, source: &str, resolved: &Resolved) -> Res<Compiled> {
    let mut header = None;
    let mut customs = BTreeMap::new();
    for item in &file.items {
        match &item.node {
            Item::Policy(p) if header.is_none() => header = Some(p),
            Item::Detector(d) => {
                customs.insert(d.name.node.clone(), d);
            }
            _ => {}
        }
    }
    let Some(header) = header else {
        return bug("no policy header");
    };
    let mut owner = String::new();
    let mut implements = String::new();
    let mut currency = "EUR".to_string();
    let mut enforcement = ir::Enforcement::Enforce;
    for s in &header.stmts {
        match &s.node {
            PolicyStmt::Owner(v) => owner = v.node.clone(),
            PolicyStmt::Implements(v) => implements = v.node.clone(),
            PolicyStmt::Currency(c) => currency = c.node.clone(),
            PolicyStmt::Enforcement(e) => enforcement = enforcement_of(&e.node),
        }
    }
    let mut l = Lowerer {
        index: BTreeMap::new(),
        detectors: Vec::new(),
        customs,
        lines: Lines::new(source),
        resolved,
    };
    l.collect_detectors(file)?;

    let mut policy = ir::Policy {
        name: header.name.node.clone(),
        version: header.version.node.clone(),
        source_sha256: hex(&Sha256::digest(source.as_bytes())),
        currency,
        enforcement,
        workflows: Vec::new(),
        prices: Vec::new(),
        detectors: Vec::new(),
        rules: Vec::new(),
        kill_switch: None,
    };
    let mut rule_info = Vec::new();
    let mut manual = Vec::new();
    for item in &file.items {
        match &item.node {
            Item::Policy(_) | Item::Detector(_) => {}
            Item::Workflow(w) => policy.workflows.push(l.workflow(w)?),
            Item::Price(p) => policy.prices.push(ir::Price {
                model: p.model.node.clone(),
                input_per_mtok: money(&p.input.node.num)?,
                output_per_mtok: money(&p.output.node.num)?,
                cached_input_per_mtok: p.cached.as_ref().map(|c| money(&c.node.num)).transpose()?,
            }),
            Item::Rule(r) => {
                let (line, column) = l.lines.line_col(item.span.start);
                policy.rules.push(l.rule(r, enforcement, line)?);
                rule_info.push(RuleInfo {
                    clause: r.id.node.clone(),
                    title: r.title.node.clone(),
                    line,
                    column,
                    start: item.span.start,
                    end: item.span.end,
                });
            }
            Item::Manual(m) => {
                let mut owner = String::new();
                let mut reason = String::new();
                for s in &m.stmts {
                    match &s.node {
                        ManualStmt::Owner(v) => owner = v.node.clone(),
                        ManualStmt::Reason(v) => reason = v.node.clone(),
                    }
                }
                manual.push(ManualClause {
                    clause: m.id.node.clone(),
                    title: m.title.node.clone(),
                    owner,
                    reason,
                    line: l.lines.line_col(item.span.start).0,
                });
            }
            Item::KillSwitch(k) => {
                let mut ks = ir::KillSwitch {
                    clause: k.clause.as_ref().map(|c| c.node.clone()),
                    admin_path: String::new(),
                    token_sha256: String::new(),
                };
                for s in &k.stmts {
                    match &s.node {
                        KillStmt::AdminPath(p) => ks.admin_path = p.node.clone(),
                        KillStmt::TokenSha256(t) => ks.token_sha256 = t.node.clone(),
                    }
                }
                policy.kill_switch = Some(ks);
            }
        }
    }
    policy.detectors = l.detectors;
    Ok(Compiled {
        policy,
        rule_info,
        manual,
        owner,
        implements,
        warnings: crate::Diagnostics::default(),
    })
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn money(n: &Num) -> Res<ir::Micros> {
    micros(&n.text).map_or_else(|| bug("unrepresentable amount"), Ok)
}

fn enforcement_of(word: &str) -> ir::Enforcement {
    if word == "monitor" {
        ir::Enforcement::Monitor
    } else {
        ir::Enforcement::Enforce
    }
}

fn builtin_secret(name: &str) -> Option<bool> {
    writ_plugin::detect::builtins()
        .iter()
        .find(|b| b.name == name)
        .map(|b| b.class == ir::DetectorClass::Secret)
}

/// The built-ins a class or group stands for (`pii`, `secret`, `pii.eu`, …); the checker
/// has rejected any other name.
fn class_builtins(class: &str) -> Vec<&'static str> {
    writ_plugin::detect::class_members(class).unwrap_or_default()
}

/// Whether a class name is one of the two detector classes rather than a group of
/// built-ins: the classes also cover the policy's own detectors.
fn is_class(class: &str) -> bool {
    matches!(class, "pii" | "secret")
}

/// Every `has`/`redact`/`tokenise` target in the file, for collecting used built-ins.
fn targets(file: &File) -> Vec<&HasTarget> {
    fn walk<'a>(c: &'a Cond, out: &mut Vec<&'a HasTarget>) {
        match c {
            Cond::And(p) | Cond::Or(p) => p.iter().for_each(|x| walk(&x.node, out)),
            Cond::Not(x) => walk(&x.node, out),
            Cond::Has { target, .. } => out.push(&target.node),
            _ => {}
        }
    }
    let mut out = Vec::new();
    for item in &file.items {
        if let Item::Rule(r) = &item.node {
            for s in &r.stmts {
                match &s.node {
                    RuleStmt::When(c) => walk(&c.node, &mut out),
                    RuleStmt::Then(a) => match &a.node {
                        Action::Redact(Some(t)) | Action::Tokenise(Some(t)) => out.push(&t.node),
                        _ => {}
                    },
                    _ => {}
                }
            }
        }
    }
    out
}

impl Lowerer<'_> {
    /// Used built-ins sorted by name, then every custom detector in name order.
    fn collect_detectors(&mut self, file: &File) -> Res<()> {
        let mut builtins = BTreeSet::new();
        for t in targets(file) {
            match &t.names {
                Some(names) => {
                    builtins.extend(
                        names
                            .iter()
                            .map(|n| n.node.as_str())
                            .filter(|n| builtin_secret(n).is_some()),
                    );
                }
                None => builtins.extend(class_builtins(&t.class.node)),
            }
        }
        for name in builtins {
            let secret = builtin_secret(name).unwrap_or(false);
            self.push(ir::Detector {
                name: name.to_string(),
                class: class(secret),
                kind: ir::DetectorKind::Builtin(name.to_string()),
            })?;
        }
        let customs: Vec<&DetectorItem> = self.customs.values().copied().collect();
        for d in customs {
            let Some((fwd, rev)) = self.resolved.dfas.get(&d.name.node).cloned() else {
                return bug("a detector pattern the check did not compile");
            };
            let secret = d.class.as_ref().is_some_and(|c| c.node == "secret");
            self.push(ir::Detector {
                name: d.name.node.clone(),
                class: class(secret),
                kind: ir::DetectorKind::Custom(ir::CustomDetector {
                    pattern: d.pattern.node.clone(),
                    forward_dfa: fwd,
                    reverse_dfa: rev,
                    validator: d.validator.as_ref().map(|v| v.node.clone()),
                }),
            })?;
        }
        Ok(())
    }

    fn push(&mut self, d: ir::Detector) -> Res<()> {
        let Ok(i) = u16::try_from(self.detectors.len()) else {
            return bug("more than 65535 detectors");
        };
        self.index.insert(d.name.clone(), i);
        self.detectors.push(d);
        Ok(())
    }

    /// Indices a target stands for, sorted.
    fn target(&self, t: &HasTarget) -> Res<Vec<u16>> {
        let secret = t.class.node == "secret";
        let mut out: Vec<u16> = match &t.names {
            Some(names) => names
                .iter()
                .map(|n| {
                    self.index
                        .get(&n.node)
                        .copied()
                        .map_or_else(|| bug("unknown detector"), Ok)
                })
                .collect::<Res<_>>()?,
            None if is_class(&t.class.node) => self
                .detectors
                .iter()
                .zip(0u16..)
                .filter(|(d, _)| (d.class == ir::DetectorClass::Secret) == secret)
                .map(|(_, i)| i)
                .collect(),
            None => class_builtins(&t.class.node)
                .into_iter()
                .map(|n| {
                    self.index
                        .get(n)
                        .copied()
                        .map_or_else(|| bug("group member not collected"), Ok)
                })
                .collect::<Res<_>>()?,
        };
        out.sort_unstable();
        out.dedup();
        Ok(out)
    }

    fn workflow(&self, w: &WorkflowItem) -> Res<ir::Workflow> {
        let mut out = ir::Workflow {
            name: w.name.node.clone(),
            matcher: ir::Expr::Const(false),
            oversight: ir::Oversight::Hic { sample_rate: 0.0 },
            assumed_verification_rate: None,
            team: None,
            user: None,
            scan_headers: Vec::new(),
            scan_query: false,
        };
        for s in &w.stmts {
            match &s.node {
                WorkflowStmt::Match(c) => out.matcher = self.cond(&c.node)?,
                WorkflowStmt::Oversight {
                    mode,
                    below,
                    sample,
                } => {
                    out.oversight = match mode.node.as_str() {
                        "HITL" => ir::Oversight::Hitl,
                        "HOTL" => ir::Oversight::Hotl {
                            threshold: below.as_ref().map_or(0.0, |b| b.node.value),
                        },
                        _ => ir::Oversight::Hic {
                            sample_rate: sample.as_ref().map_or(0.0, |p| p.node.value / 100.0),
                        },
                    }
                }
                WorkflowStmt::Assume { value, percent, .. } => {
                    out.assumed_verification_rate = Some(if *percent {
                        value.node.value / 100.0
                    } else {
                        value.node.value
                    });
                }
                WorkflowStmt::Scan(ScanTarget::Query) => out.scan_query = true,
                WorkflowStmt::Scan(ScanTarget::Headers(names)) => {
                    for n in &names.node {
                        if let Lit::Str(s) = &n.node {
                            out.scan_headers.push(s.to_ascii_lowercase());
                        }
                    }
                    out.scan_headers.sort_unstable();
                    out.scan_headers.dedup();
                }
                WorkflowStmt::Identify(ids) => {
                    for id in ids {
                        let ident = ir::Identity {
                            header: id.node.header.node.to_ascii_lowercase(),
                            trusted: id.node.trusted,
                        };
                        if id.node.who.node == "team" {
                            out.team = Some(ident);
                        } else {
                            out.user = Some(ident);
                        }
                    }
                }
            }
        }
        Ok(out)
    }

    fn rule(&self, r: &RuleItem, default: ir::Enforcement, line: u32) -> Res<ir::Rule> {
        let mut phase = ir::Phase::Request;
        let mut condition = None;
        let mut action = None;
        let mut enforcement = default;
        let mut alert = None;
        let mut has_targets = Vec::new();
        for s in &r.stmts {
            if let RuleStmt::When(c) = &s.node {
                collect_has(&c.node, &mut has_targets);
            }
        }
        for s in &r.stmts {
            match &s.node {
                RuleStmt::On(p) if p.node == "response" => phase = ir::Phase::Response,
                RuleStmt::On(_) => {}
                RuleStmt::When(c) => condition = Some(self.cond(&c.node)?),
                RuleStmt::Then(a) => action = Some(self.action(&a.node, &has_targets)?),
                RuleStmt::Enforcement(e) => enforcement = enforcement_of(&e.node),
                RuleStmt::AlertAt(n) => {
                    let pct = n.node.value.round();
                    alert = Some(if (0.0..=100.0).contains(&pct) {
                        pct as u8
                    } else {
                        return bug("alert percent");
                    });
                }
            }
        }
        let Some(action) = action else {
            return bug("rule without `then`");
        };
        // A rule without `when` matches everything.
        let condition = condition.unwrap_or(ir::Expr::Const(true));
        Ok(ir::Rule {
            clause: r.id.node.clone(),
            title: r.title.node.clone(),
            phase,
            condition,
            action,
            enforcement,
            alert_at_percent: alert,
            line,
        })
    }

    fn action(&self, a: &Action, has: &[&HasTarget]) -> Res<ir::Action> {
        let from_condition = || -> Res<Vec<u16>> {
            let mut all = Vec::new();
            for t in has {
                all.extend(self.target(t)?);
            }
            all.sort_unstable();
            all.dedup();
            Ok(all)
        };
        Ok(match a {
            Action::Allow => ir::Action::Allow,
            Action::Deny { status, message } => ir::Action::Deny {
                status: u16::try_from(status.node.text.parse::<u32>().unwrap_or(0)).unwrap_or(0),
                message: message.node.clone(),
            },
            Action::Redact(t) => ir::Action::Redact {
                detectors: match t {
                    Some(t) => self.target(&t.node)?,
                    None => from_condition()?,
                },
            },
            Action::Tokenise(t) => ir::Action::Tokenise {
                detectors: match t {
                    Some(t) => self.target(&t.node)?,
                    None => from_condition()?,
                },
            },
            Action::Route(m) => ir::Action::Route(ir::RouteTarget::Model(m.node.clone())),
            Action::RouteCheapest(list) => {
                let mut models: Vec<String> = list
                    .node
                    .iter()
                    .filter_map(|l| match &l.node {
                        Lit::Str(s) => Some(s.clone()),
                        _ => None,
                    })
                    .collect();
                models.sort();
                models.dedup();
                ir::Action::Route(ir::RouteTarget::CheapestOf(models))
            }
            Action::Escalate { queue, reason } => ir::Action::Escalate {
                queue: queue.node.clone(),
                reason: reason.node.clone(),
            },
            Action::Tag { key, value } => ir::Action::Tag {
                key: key.node.clone(),
                value: value.node.clone(),
            },
            Action::Unknown(_) => return bug("unknown action"),
        })
    }

    fn cond(&self, c: &Cond) -> Res<ir::Expr> {
        Ok(match c {
            Cond::And(p) => {
                ir::Expr::And(p.iter().map(|x| self.cond(&x.node)).collect::<Res<_>>()?)
            }
            Cond::Or(p) => ir::Expr::Or(p.iter().map(|x| self.cond(&x.node)).collect::<Res<_>>()?),
            Cond::Not(x) => ir::Expr::Not(Box::new(self.cond(&x.node)?)),
            Cond::Compare { left, op, right } => {
                let op = match op.node {
                    CmpOp::Eq => ir::CmpOp::Eq,
                    CmpOp::Ne => ir::CmpOp::Ne,
                    CmpOp::Lt => ir::CmpOp::Lt,
                    CmpOp::Le => ir::CmpOp::Le,
                    CmpOp::Gt => ir::CmpOp::Gt,
                    CmpOp::Ge => ir::CmpOp::Ge,
                };
                ir::Expr::Compare {
                    left: self.operand(&left.node)?,
                    op,
                    right: self.operand(&right.node)?,
                }
            }
            Cond::In {
                operand,
                negated,
                list,
            } => {
                let mut set: Vec<ir::Value> = list
                    .node
                    .iter()
                    .map(|l| value(&l.node))
                    .collect::<Res<_>>()?;
                set.sort_by(|a, b| a.partial_cmp(b).unwrap_or(std::cmp::Ordering::Equal));
                set.dedup();
                let e = ir::Expr::In {
                    operand: self.operand(&operand.node)?,
                    set,
                };
                if *negated {
                    ir::Expr::Not(Box::new(e))
                } else {
                    e
                }
            }
            Cond::Has { subject, target } => ir::Expr::Has {
                subject: match &subject.node {
                    Subject::Prompt => ir::Text::Prompt,
                    Subject::Response => ir::Text::Response,
                    Subject::Header(name) => ir::Text::Header(name.to_ascii_lowercase()),
                    Subject::Query => ir::Text::Query,
                },
                detectors: self.target(&target.node)?,
            },
            Cond::Bare(o) => match &o.node {
                Operand::Lit(Lit::Bool(b)) => ir::Expr::Const(*b),
                other => ir::Expr::Compare {
                    left: self.operand(other)?,
                    op: ir::CmpOp::Eq,
                    right: ir::Operand::Const(ir::Value::Bool(true)),
                },
            },
            Cond::Error => return bug("an unparsed condition"),
        })
    }

    fn operand(&self, o: &Operand) -> Res<ir::Operand> {
        Ok(match o {
            Operand::Lit(l) => ir::Operand::Const(value(l)?),
            Operand::Header(h) => {
                ir::Operand::Field(ir::Field::Header(h.node.to_ascii_lowercase()))
            }
            Operand::ResponseHeader(h) => {
                ir::Operand::Field(ir::Field::ResponseHeader(h.node.to_ascii_lowercase()))
            }
            Operand::Field(f) => ir::Operand::Field(match f.node.as_str() {
                "model" => ir::Field::Model,
                "path" => ir::Field::Path,
                "method" => ir::Field::Method,
                "workflow" => ir::Field::Workflow,
                "team" => ir::Field::Team,
                "user" => ir::Field::User,
                "max_tokens" => ir::Field::MaxTokens,
                "stream" => ir::Field::Stream,
                "status" => ir::Field::Status,
                _ => return bug("unknown field"),
            }),
            Operand::Call { name, args } => {
                let arg = |i: usize| args.get(i).map(|a| &a.node);
                match name.node.as_str() {
                    "spend" => {
                        let scope = match arg(0) {
                            Some(CallArg::Name(n)) if n.node == "team" => ir::Scope::Team,
                            Some(CallArg::Name(n)) if n.node == "user" => ir::Scope::User,
                            Some(CallArg::Name(n)) if n.node == "workflow" => ir::Scope::Workflow,
                            _ => return bug("spend scope"),
                        };
                        let window = match arg(1) {
                            Some(CallArg::Name(n)) if n.node == "hour" => ir::Window::Hour,
                            Some(CallArg::Name(n)) if n.node == "day" => ir::Window::Day,
                            Some(CallArg::Name(n)) if n.node == "month" => ir::Window::Month,
                            _ => return bug("spend window"),
                        };
                        ir::Operand::Spend { scope, window }
                    }
                    "confidence" => ir::Operand::Confidence(match arg(0) {
                        Some(CallArg::Header(h)) => {
                            ir::ConfidenceSource::Header(h.node.to_ascii_lowercase())
                        }
                        Some(CallArg::Json(p)) => ir::ConfidenceSource::JsonPointer(p.node.clone()),
                        _ => return bug("confidence source"),
                    }),
                    _ => return bug("unknown function"),
                }
            }
        })
    }
}

fn collect_has<'a>(c: &'a Cond, out: &mut Vec<&'a HasTarget>) {
    match c {
        Cond::And(p) | Cond::Or(p) => p.iter().for_each(|x| collect_has(&x.node, out)),
        Cond::Not(x) => collect_has(&x.node, out),
        Cond::Has { target, .. } => out.push(&target.node),
        _ => {}
    }
}

fn class(secret: bool) -> ir::DetectorClass {
    if secret {
        ir::DetectorClass::Secret
    } else {
        ir::DetectorClass::Pii
    }
}

fn value(l: &Lit) -> Res<ir::Value> {
    Ok(match l {
        Lit::Str(s) => ir::Value::Str(s.clone()),
        Lit::Num(n) => ir::Value::Num(n.value),
        Lit::Percent(n) => ir::Value::Num(n.value / 100.0),
        Lit::Money { num, .. } => ir::Value::Money(money(num)?),
        Lit::Bool(b) => ir::Value::Bool(*b),
        Lit::List(_) => return bug("a nested list"),
    })
}

#[cfg(test)]
mod tests {
    use crate::resolved::micros;

    #[test]
    fn money_is_exact() {
        assert_eq!(micros("0.075"), Some(75_000));
        assert_eq!(micros("5000"), Some(5_000_000_000));
        assert_eq!(micros("0.1234567"), None);
        assert_eq!(micros("99999999999999999999"), None);
    }
}
