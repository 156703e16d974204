//! The check's last step: a file without errors becomes the resolved tree
//! ([`Checked`]). Every name is looked up once here, in the same vocabulary tables the
//! checks validated it against ([`super::vocab`]), and every detector reference becomes
//! the engine's `u16` id, so lowering has nothing left to look up and cannot fail.
//!
//! Runs only when the checks found no error. Each step that could still miss (a name the
//! checks accepted but the tables do not hold) returns [`Unresolved`] at the node, which
//! the check reports as an internal error (E0900) there: the failure belongs to the check,
//! located, never to lowering.

use std::collections::{BTreeMap, BTreeSet};

use writ_plugin::ir;

use super::vocab::{
    ASSUMPTIONS, Assumption, DETECTOR_CLASSES, ENFORCEMENTS, FAILURES, FIELDS, IDENTITIES,
    MEASURES, OVERSIGHT, OversightMode, PHASES, RATE_WINDOWS, SCOPES, WINDOWS, Who, lookup,
};
use crate::ast::*;
use crate::resolved::{Checked, CheckedManual, CheckedRule, Dfas, micros};

/// A node the checks accepted but resolution could not place: a bug in the check.
#[derive(Debug)]
pub(crate) struct Unresolved {
    pub span: Span,
    pub what: String,
}

type Res<T> = Result<T, Unresolved>;

fn unresolved<T>(span: Span, what: impl Into<String>) -> Res<T> {
    Err(Unresolved {
        span,
        what: what.into(),
    })
}

/// A word looked up in a vocabulary table, or [`Unresolved`] at its span.
fn word<T: Clone>(table: &[(&str, T)], ident: &Ident, what: &str) -> Res<T> {
    lookup(table, &ident.node).map_or_else(
        || unresolved(ident.span, format!("{what} `{}`", ident.node)),
        Ok,
    )
}

/// A workflow's rollout pack: the fields its `rollout` block states (the check validated
/// their names and shapes; the phase word becomes text like the rest).
fn rollout_pack(w: &WorkflowItem) -> crate::rollout::Pack {
    use crate::rollout::Value;
    let mut pack = crate::rollout::Pack {
        workflow: w.name.node.clone(),
        fields: BTreeMap::new(),
    };
    for s in &w.stmts {
        let WorkflowStmt::Rollout(fields) = &s.node else {
            continue;
        };
        for f in fields {
            let value = match &f.node.value.node {
                RolloutValue::Text(t) | RolloutValue::Word(t) => Value::Text(t.clone()),
                RolloutValue::List(items) => Value::List(
                    items
                        .iter()
                        .filter_map(|i| match &i.node {
                            Lit::Str(s) => Some(s.clone()),
                            _ => None,
                        })
                        .collect(),
                ),
            };
            pack.fields.insert(f.node.key.node.clone(), value);
        }
    }
    pack
}

/// Resolves a file the checks accepted. `dfas` are the custom detectors' patterns the
/// check compiled, by detector name.
pub(crate) fn resolve(file: &File, dfas: &BTreeMap<String, Dfas>) -> Res<Checked> {
    let Some((header, header_span)) = file.items.iter().find_map(|i| match &i.node {
        Item::Policy(p) => Some((p, i.span)),
        _ => None,
    }) else {
        return unresolved(Span::default(), "no policy header");
    };
    let mut out = Checked {
        name: header.name.node.clone(),
        version: header.version.node.clone(),
        owner: String::new(),
        implements: String::new(),
        currency: "EUR".to_string(),
        enforcement: ir::Enforcement::Enforce,
        workflows: Vec::new(),
        prices: Vec::new(),
        detectors: Vec::new(),
        rules: Vec::new(),
        manual: Vec::new(),
        kill_switch: None,
        rollout: Vec::new(),
    };
    for s in &header.stmts {
        match &s.node {
            PolicyStmt::Owner(v) => out.owner = v.node.clone(),
            PolicyStmt::Implements(v) => out.implements = v.node.clone(),
            PolicyStmt::Currency(c) => out.currency = c.node.clone(),
            PolicyStmt::Enforcement(e) => out.enforcement = word(ENFORCEMENTS, e, "enforcement")?,
        }
    }
    let detectors = Detectors::collect(file, dfas, header_span)?;
    for item in &file.items {
        match &item.node {
            Item::Policy(_) | Item::Detector(_) => {}
            Item::Workflow(w) => {
                out.workflows.push(detectors.workflow(w)?);
                out.rollout.push(rollout_pack(w));
            }
            Item::Price(p) => out.prices.push(ir::Price {
                model: p.model.node.clone(),
                input_per_mtok: money(&p.input.node.num, p.input.span)?,
                output_per_mtok: money(&p.output.node.num, p.output.span)?,
                cached_input_per_mtok: p
                    .cached
                    .as_ref()
                    .map(|c| money(&c.node.num, c.span))
                    .transpose()?,
            }),
            Item::Rule(r) => out
                .rules
                .push(detectors.rule(r, out.enforcement, item.span)?),
            Item::Manual(m) => {
                let mut manual = CheckedManual {
                    clause: m.id.node.clone(),
                    title: m.title.node.clone(),
                    owner: String::new(),
                    reason: String::new(),
                    span: item.span,
                };
                for s in &m.stmts {
                    match &s.node {
                        ManualStmt::Owner(v) => manual.owner = v.node.clone(),
                        ManualStmt::Reason(v) => manual.reason = v.node.clone(),
                    }
                }
                out.manual.push(manual);
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
                out.kill_switch = Some(ks);
            }
        }
    }
    out.detectors = detectors.table;
    Ok(out)
}

fn money(n: &Num, span: Span) -> Res<ir::Micros> {
    micros(&n.text).map_or_else(|| unresolved(span, "an unrepresentable amount"), Ok)
}

fn builtin_class(name: &str) -> Option<ir::DetectorClass> {
    writ_plugin::detect::builtins()
        .iter()
        .find(|b| b.name == name)
        .map(|b| b.class)
}

/// Every `has`/`redact`/`tokenise` target in the file, for collecting used built-ins.
fn targets(file: &File) -> Vec<&HasTarget> {
    let mut out = Vec::new();
    for item in &file.items {
        if let Item::Rule(r) = &item.node {
            for s in &r.stmts {
                match &s.node {
                    RuleStmt::When(c) => collect_has(&c.node, &mut out),
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

fn collect_has<'a>(c: &'a Cond, out: &mut Vec<&'a HasTarget>) {
    match c {
        Cond::And(p) | Cond::Or(p) => p.iter().for_each(|x| collect_has(&x.node, out)),
        Cond::Not(x) => collect_has(&x.node, out),
        Cond::Has { target, .. } => out.push(&target.node),
        _ => {}
    }
}

/// The policy's detector table and each name's id in it.
struct Detectors {
    ids: BTreeMap<String, u16>,
    table: Vec<ir::Detector>,
}

impl Detectors {
    /// Used built-ins sorted by name, then every custom detector in name order.
    fn collect(file: &File, dfas: &BTreeMap<String, Dfas>, header: Span) -> Res<Detectors> {
        let mut builtins = BTreeSet::new();
        for t in targets(file) {
            match &t.names {
                Some(names) => builtins.extend(
                    names
                        .iter()
                        .map(|n| n.node.as_str())
                        .filter(|n| builtin_class(n).is_some()),
                ),
                None => builtins
                    .extend(writ_plugin::detect::class_members(&t.class.node).unwrap_or_default()),
            }
        }
        let mut table: Vec<(ir::Detector, Span)> = builtins
            .into_iter()
            .filter_map(|name| {
                Some((
                    ir::Detector {
                        name: name.to_string(),
                        class: builtin_class(name)?,
                        kind: ir::DetectorKind::Builtin(name.to_string()),
                    },
                    header,
                ))
            })
            .collect();
        let mut customs: Vec<&DetectorItem> = file
            .items
            .iter()
            .filter_map(|i| match &i.node {
                Item::Detector(d) => Some(d),
                _ => None,
            })
            .collect();
        customs.sort_by(|a, b| a.name.node.cmp(&b.name.node));
        customs.dedup_by(|a, b| a.name.node == b.name.node);
        for d in customs {
            let Some((forward_dfa, reverse_dfa)) = dfas.get(&d.name.node).cloned() else {
                return unresolved(
                    d.pattern.span,
                    "a detector pattern the check did not compile",
                );
            };
            let class = match &d.class {
                Some(c) => word(DETECTOR_CLASSES, c, "detector class")?,
                None => ir::DetectorClass::Pii,
            };
            table.push((
                ir::Detector {
                    name: d.name.node.clone(),
                    class,
                    kind: ir::DetectorKind::Custom(ir::CustomDetector {
                        pattern: d.pattern.node.clone(),
                        forward_dfa,
                        reverse_dfa,
                        validator: d.validator.as_ref().map(|v| v.node.clone()),
                    }),
                },
                d.name.span,
            ));
        }
        let mut ids = BTreeMap::new();
        for ((d, span), i) in table.iter().zip(0u32..) {
            let Ok(id) = u16::try_from(i) else {
                return unresolved(*span, "more than 65535 detectors");
            };
            ids.insert(d.name.clone(), id);
        }
        Ok(Detectors {
            ids,
            table: table.into_iter().map(|(d, _)| d).collect(),
        })
    }

    fn id(&self, name: &Ident) -> Res<u16> {
        self.ids.get(&name.node).copied().map_or_else(
            || unresolved(name.span, format!("detector `{}`", name.node)),
            Ok,
        )
    }

    /// The ids a target stands for, sorted.
    fn target(&self, t: &HasTarget) -> Res<Vec<u16>> {
        let mut out: Vec<u16> = match &t.names {
            Some(names) => names.iter().map(|n| self.id(n)).collect::<Res<_>>()?,
            None => match lookup(DETECTOR_CLASSES, &t.class.node) {
                // A class stands for every detector of it, the policy's own included.
                Some(class) => self
                    .table
                    .iter()
                    .zip(0u16..)
                    .filter(|(d, _)| d.class == class)
                    .map(|(_, i)| i)
                    .collect(),
                // A group stands for its built-ins.
                None => writ_plugin::detect::class_members(&t.class.node)
                    .unwrap_or_default()
                    .into_iter()
                    .map(|n| self.id(&Node::new(n.to_string(), t.class.span)))
                    .collect::<Res<_>>()?,
            },
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
            business_case: ir::BusinessCase::default(),
            kill_points: Vec::new(),
            review_signals: None,
            handoff_output: false,
            fallback: None,
        };
        for s in &w.stmts {
            match &s.node {
                WorkflowStmt::Match(c) => out.matcher = self.cond(c)?,
                WorkflowStmt::Oversight {
                    mode,
                    below,
                    sample,
                } => {
                    out.oversight = match word(OVERSIGHT, mode, "oversight mode")? {
                        OversightMode::Hitl => ir::Oversight::Hitl,
                        OversightMode::Hotl => ir::Oversight::Hotl {
                            threshold: below.as_ref().map_or(0.0, |b| b.node.value),
                        },
                        OversightMode::Hic => ir::Oversight::Hic {
                            sample_rate: sample.as_ref().map_or(0.0, |p| p.node.value / 100.0),
                        },
                    }
                }
                WorkflowStmt::Assume {
                    name,
                    value,
                    percent,
                    ..
                } => match word(ASSUMPTIONS, name, "assumption")? {
                    Assumption::VerificationRate => {
                        out.assumed_verification_rate = Some(if *percent {
                            value.node.value / 100.0
                        } else {
                            value.node.value
                        });
                    }
                    Assumption::CostPerTransaction => {
                        out.business_case.cost_per_transaction =
                            Some(money(&value.node, value.span)?);
                    }
                },
                WorkflowStmt::Cost { kind, amount } => {
                    let m = Some(money(&amount.node.num, amount.span)?);
                    match kind {
                        CostKind::Review => out.business_case.review_cost = m,
                        CostKind::Manual => out.business_case.manual_cost = m,
                    }
                }
                // Metadata for people and `writ review`, gathered by `rollout_pack`.
                WorkflowStmt::Rollout(_) => {}
                WorkflowStmt::Fallback { on, steps } => {
                    let mut failures = Vec::new();
                    for kind in on {
                        failures.push(word(FAILURES, kind, "failure")?);
                    }
                    failures.sort_unstable();
                    failures.dedup();
                    let steps = steps
                        .iter()
                        .map(|s| match &s.node {
                            FallbackStep::Model(m) => ir::FallbackStep::Model(m.node.clone()),
                            FallbackStep::Cluster(c) => ir::FallbackStep::Cluster(c.node.clone()),
                            FallbackStep::Reply { status, message } => ir::FallbackStep::Reply {
                                status: status.node.value as u16,
                                message: message.node.clone(),
                            },
                            FallbackStep::Human(q) => ir::FallbackStep::Human {
                                queue: q.node.clone(),
                            },
                        })
                        .collect();
                    out.fallback = Some(ir::Fallback {
                        on: failures,
                        steps,
                    });
                }
                WorkflowStmt::Scan(ScanTarget::Query) => out.scan_query = true,
                WorkflowStmt::KillPoint(_)
                | WorkflowStmt::ReviewSignals { .. }
                | WorkflowStmt::HandoffIncludes(_) => super::operating::resolve(&mut out, &s.node),
                WorkflowStmt::Scan(ScanTarget::Headers(names)) => {
                    for n in &names.node {
                        let Lit::Str(s) = &n.node else {
                            return unresolved(n.span, "a header name that is not a string");
                        };
                        out.scan_headers.push(s.to_ascii_lowercase());
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
                        match word(IDENTITIES, &id.node.who, "identity")? {
                            Who::Team => out.team = Some(ident),
                            Who::User => out.user = Some(ident),
                        }
                    }
                }
            }
        }
        Ok(out)
    }

    fn rule(&self, r: &RuleItem, default: ir::Enforcement, span: Span) -> Res<CheckedRule> {
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
                RuleStmt::On(p) => phase = word(PHASES, p, "phase")?,
                RuleStmt::When(c) => condition = Some(self.cond(c)?),
                RuleStmt::Then(a) => action = Some(self.action(a, &has_targets)?),
                RuleStmt::Enforcement(e) => enforcement = word(ENFORCEMENTS, e, "enforcement")?,
                RuleStmt::AlertAt(n) => {
                    let pct = n.node.value.round();
                    if !(0.0..=100.0).contains(&pct) {
                        return unresolved(n.span, "an alert percentage outside 0..=100");
                    }
                    alert = Some(pct as u8);
                }
            }
        }
        let Some(action) = action else {
            return unresolved(span, "a rule without `then`");
        };
        Ok(CheckedRule {
            clause: r.id.node.clone(),
            title: r.title.node.clone(),
            phase,
            // A rule without `when` matches everything.
            condition: condition.unwrap_or(ir::Expr::Const(true)),
            action,
            enforcement,
            alert_at_percent: alert,
            span,
        })
    }

    fn action(&self, a: &Node<Action>, has: &[&HasTarget]) -> Res<ir::Action> {
        // A bare `redact`/`tokenise` acts on what the condition tests for.
        let from_condition = || -> Res<Vec<u16>> {
            let mut all = Vec::new();
            for t in has {
                all.extend(self.target(t)?);
            }
            all.sort_unstable();
            all.dedup();
            Ok(all)
        };
        Ok(match &a.node {
            Action::Allow => ir::Action::Allow,
            Action::Deny { status, message } => ir::Action::Deny {
                // The check accepts whole numbers 400..=599 only.
                status: match status.node.value {
                    v if (400.0..=599.0).contains(&v) && v.fract() == 0.0 => v as u16,
                    _ => return unresolved(status.span, "a deny status outside 400..=599"),
                },
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
                let mut models = Vec::new();
                for l in &list.node {
                    let Lit::Str(s) = &l.node else {
                        return unresolved(l.span, "a route candidate that is not a string");
                    };
                    models.push(s.clone());
                }
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
            Action::Hold { queue, reason } => ir::Action::Hold {
                queue: queue.node.clone(),
                reason: reason.node.clone(),
            },
            Action::StripTool => ir::Action::StripTool,
            Action::Unknown(n) => return unresolved(n.span, format!("action `{}`", n.node)),
        })
    }

    fn cond(&self, c: &Node<Cond>) -> Res<ir::Expr> {
        Ok(match &c.node {
            Cond::And(p) => ir::Expr::And(p.iter().map(|x| self.cond(x)).collect::<Res<_>>()?),
            Cond::Or(p) => ir::Expr::Or(p.iter().map(|x| self.cond(x)).collect::<Res<_>>()?),
            Cond::Not(x) => ir::Expr::Not(Box::new(self.cond(x)?)),
            Cond::Compare { left, op, right } => ir::Expr::Compare {
                left: self.operand(left)?,
                op: cmp_op(op.node),
                right: self.operand(right)?,
            },
            Cond::In {
                operand,
                negated,
                list,
            } => {
                let mut set: Vec<ir::Value> = list.node.iter().map(value).collect::<Res<_>>()?;
                set.sort_by(|a, b| a.partial_cmp(b).unwrap_or(std::cmp::Ordering::Equal));
                set.dedup();
                let e = ir::Expr::In {
                    operand: self.operand(operand)?,
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
                    Subject::ToolArguments => ir::Text::ToolArguments,
                    Subject::ToolResults => ir::Text::ToolResults,
                },
                detectors: self.target(&target.node)?,
            },
            Cond::Bare(o) => match &o.node {
                Operand::Lit(Lit::Bool(b)) => ir::Expr::Const(*b),
                _ => ir::Expr::Compare {
                    left: self.operand(o)?,
                    op: ir::CmpOp::Eq,
                    right: ir::Operand::Const(ir::Value::Bool(true)),
                },
            },
            Cond::Error => return unresolved(c.span, "an unparsed condition"),
        })
    }

    fn operand(&self, o: &Node<Operand>) -> Res<ir::Operand> {
        Ok(match &o.node {
            Operand::Lit(l) => ir::Operand::Const(value(&Node::new(l.clone(), o.span))?),
            Operand::Header(h) => {
                ir::Operand::Field(ir::Field::Header(h.node.to_ascii_lowercase()))
            }
            Operand::ResponseHeader(h) => {
                ir::Operand::Field(ir::Field::ResponseHeader(h.node.to_ascii_lowercase()))
            }
            Operand::Field(f) => ir::Operand::Field(word(FIELDS, f, "field")?),
            Operand::ToolName { call: true } => ir::Operand::Field(ir::Field::ToolCallName),
            Operand::ToolName { call: false } => ir::Operand::Field(ir::Field::ToolName),
            Operand::ToolArgument(p) => ir::Operand::Field(ir::Field::ToolArgument(p.node.clone())),
            Operand::Call { name, args } => match (name.node.as_str(), args.as_slice()) {
                ("spend", [scope, window]) => match (&scope.node, &window.node) {
                    (CallArg::Name(scope), CallArg::Name(window)) => ir::Operand::Spend {
                        scope: word(SCOPES, scope, "spend scope")?,
                        window: word(WINDOWS, window, "spend window")?,
                    },
                    _ => return unresolved(o.span, "spend arguments"),
                },
                (f @ ("tokens" | "requests"), [scope, window]) => {
                    match (&scope.node, &window.node) {
                        (CallArg::Name(scope), CallArg::Name(window)) => ir::Operand::Rate {
                            measure: word(
                                MEASURES,
                                &Node::new(f.to_string(), name.span),
                                "rate measure",
                            )?,
                            scope: word(SCOPES, scope, "rate-limit scope")?,
                            window: word(RATE_WINDOWS, window, "rate-limit window")?,
                        },
                        _ => return unresolved(o.span, "rate-limit arguments"),
                    }
                }
                ("confidence", [source]) => ir::Operand::Confidence(match &source.node {
                    CallArg::Header(h) => ir::ConfidenceSource::Header(h.node.to_ascii_lowercase()),
                    CallArg::Json(p) => ir::ConfidenceSource::JsonPointer(p.node.clone()),
                    CallArg::Name(n) => {
                        return unresolved(n.span, "a confidence source");
                    }
                }),
                _ => return unresolved(name.span, format!("function `{}`", name.node)),
            },
        })
    }
}

fn cmp_op(op: CmpOp) -> ir::CmpOp {
    match op {
        CmpOp::Eq => ir::CmpOp::Eq,
        CmpOp::Ne => ir::CmpOp::Ne,
        CmpOp::Lt => ir::CmpOp::Lt,
        CmpOp::Le => ir::CmpOp::Le,
        CmpOp::Gt => ir::CmpOp::Gt,
        CmpOp::Ge => ir::CmpOp::Ge,
    }
}

fn value(l: &Node<Lit>) -> Res<ir::Value> {
    Ok(match &l.node {
        Lit::Str(s) => ir::Value::Str(s.clone()),
        Lit::Num(n) => ir::Value::Num(n.value),
        Lit::Percent(n) => ir::Value::Num(n.value / 100.0),
        Lit::Money { num, .. } => ir::Value::Money(money(num, l.span)?),
        Lit::Bool(b) => ir::Value::Bool(*b),
        Lit::List(_) => return unresolved(l.span, "a nested list"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const HEAD: &str =
        "policy \"p\" version \"1.0.0\" {\n  owner \"o\"\n  implements \"a.md\"\n}\n";

    fn parse(body: &str) -> (String, File) {
        let source = format!("{HEAD}{body}");
        let (file, diags) = crate::syntax::parse(&source);
        assert!(diags.is_empty(), "{diags:?}");
        (source, file)
    }

    #[test]
    fn detector_references_become_the_engine_ids() -> Result<(), String> {
        let (_, file) = parse(
            "detector badge = regex \"B-[0-9]{4}\" class secret\n\
             rule R-1 \"r\" {\n  on request\n  when prompt has pii(email) or prompt has secret\n  then redact\n}\n",
        );
        let dfas = crate::resolved::compile_regex("B-[0-9]{4}")
            .map_err(|_| "the pattern does not compile".to_string())?;
        let dfas = BTreeMap::from([("badge".to_string(), dfas)]);
        let checked = resolve(&file, &dfas).map_err(|e| format!("{e:?}"))?;
        let names: Vec<&str> = checked.detectors.iter().map(|d| d.name.as_str()).collect();
        // Used built-ins by name, then the policy's own.
        assert_eq!(names.last(), Some(&"badge"), "{names:?}");
        let email = names
            .iter()
            .position(|n| *n == "email")
            .ok_or(format!("email is used: {names:?}"))?;
        // `secret` stands for every secret detector, the custom one included.
        let mut want: Vec<u16> = checked
            .detectors
            .iter()
            .zip(0u16..)
            .filter(|(d, _)| d.class == ir::DetectorClass::Secret)
            .map(|(_, i)| i)
            .collect();
        want.push(u16::try_from(email).map_err(|e| e.to_string())?);
        want.sort_unstable();
        assert_eq!(
            checked.rules.first().map(|r| &r.action),
            Some(&ir::Action::Redact { detectors: want })
        );
        Ok(())
    }

    #[test]
    fn a_word_the_check_would_reject_is_unresolved_at_its_span() {
        let (source, file) =
            parse("rule R-1 \"r\" {\n  on request\n  when modle == \"x\"\n  then allow\n}\n");
        let e = resolve(&file, &BTreeMap::new()).err();
        let at = e
            .as_ref()
            .and_then(|e| source.get(e.span.start as usize..e.span.end as usize));
        assert_eq!(at, Some("modle"));
        assert_eq!(e.map(|e| e.what).as_deref(), Some("field `modle`"));
    }
}
