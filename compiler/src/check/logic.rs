//! Rule logic on a normalised condition: rules that never fire, rules shadowed by earlier
//! ones, and contradictory actions on the same traffic.
//!
//! The analysis is deliberately simple and sound for what it reports: atoms are compared
//! by their canonical text, `and`/`or` are flattened, sorted and deduplicated, and only
//! equality and membership constraints on one operand are combined.

use std::collections::{BTreeMap, BTreeSet};

use super::RuleFacts;
use crate::ast::*;
use crate::diag::{Diagnostic, codes};
use crate::fmt;

/// A condition in normal form; comparable and ordered so equal conditions compare equal.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Nf {
    Const(bool),
    And(Vec<Nf>),
    Or(Vec<Nf>),
    Not(Box<Nf>),
    /// `operand op constant`, both as canonical text.
    Cmp {
        key: String,
        op: CmpOp,
        val: String,
    },
    In {
        key: String,
        set: BTreeSet<String>,
        negated: bool,
    },
    /// Anything else, by its canonical text.
    Atom(String),
}

/// A constant by its value rather than its spelling, so `1`, `1.0` and `100%` of a score
/// compare as the engine will compare them.
fn canon(l: &Lit) -> String {
    match l {
        Lit::Num(n) => format!("n{}", n.value),
        Lit::Percent(n) => format!("n{}", n.value / 100.0),
        Lit::Money { num, .. } => match crate::lower::micros(&num.text) {
            Some(m) => format!("m{m}"),
            None => format!("m{}", num.text),
        },
        other => fmt::lit(other),
    }
}

fn flip(op: CmpOp) -> CmpOp {
    match op {
        CmpOp::Lt => CmpOp::Gt,
        CmpOp::Le => CmpOp::Ge,
        CmpOp::Gt => CmpOp::Lt,
        CmpOp::Ge => CmpOp::Le,
        other => other,
    }
}

fn lit_num(l: &Lit) -> Option<f64> {
    match l {
        Lit::Num(n) | Lit::Money { num: n, .. } => Some(n.value),
        Lit::Percent(n) => Some(n.value / 100.0),
        _ => None,
    }
}

/// Compares two constants, when they are comparable.
fn eval_const(l: &Lit, op: CmpOp, r: &Lit) -> Option<bool> {
    use std::cmp::Ordering;
    let ord = match (l, r) {
        (Lit::Str(a), Lit::Str(b)) => a.cmp(b),
        (Lit::Bool(a), Lit::Bool(b)) => a.cmp(b),
        _ => lit_num(l)?.partial_cmp(&lit_num(r)?)?,
    };
    Some(match op {
        CmpOp::Eq => ord == Ordering::Equal,
        CmpOp::Ne => ord != Ordering::Equal,
        CmpOp::Lt => ord == Ordering::Less,
        CmpOp::Le => ord != Ordering::Greater,
        CmpOp::Gt => ord == Ordering::Greater,
        CmpOp::Ge => ord != Ordering::Less,
    })
}

/// Normalises a checked condition.
pub(crate) fn normalize(c: &Cond) -> Nf {
    match c {
        Cond::And(parts) => and(parts.iter().map(|p| normalize(&p.node)).collect()),
        Cond::Or(parts) => or(parts.iter().map(|p| normalize(&p.node)).collect()),
        Cond::Not(inner) => match normalize(&inner.node) {
            Nf::Const(b) => Nf::Const(!b),
            Nf::Not(x) => *x,
            other => Nf::Not(Box::new(other)),
        },
        Cond::Compare { left, op, right } => match (&left.node, &right.node) {
            (Operand::Lit(a), Operand::Lit(b)) => match eval_const(a, op.node, b) {
                Some(v) => Nf::Const(v),
                None => Nf::Atom(fmt::cond(c)),
            },
            (Operand::Lit(b), o) => Nf::Cmp {
                key: fmt::operand(o),
                op: flip(op.node),
                val: canon(b),
            },
            (o, Operand::Lit(r)) => Nf::Cmp {
                key: fmt::operand(o),
                op: op.node,
                val: canon(r),
            },
            _ => Nf::Atom(fmt::cond(c)),
        },
        Cond::In {
            operand,
            negated,
            list,
        } => {
            let set: BTreeSet<String> = list.node.iter().map(|l| canon(&l.node)).collect();
            if set.is_empty() {
                return Nf::Const(*negated);
            }
            Nf::In {
                key: fmt::operand(&operand.node),
                set,
                negated: *negated,
            }
        }
        Cond::Bare(o) => match &o.node {
            Operand::Lit(Lit::Bool(b)) => Nf::Const(*b),
            other => Nf::Atom(fmt::operand(other)),
        },
        Cond::Has { .. } | Cond::Error => Nf::Atom(fmt::cond(c)),
    }
}

fn and(parts: Vec<Nf>) -> Nf {
    let mut flat = BTreeSet::new();
    for p in parts {
        match p {
            Nf::Const(true) => {}
            Nf::Const(false) => return Nf::Const(false),
            Nf::And(inner) => flat.extend(inner),
            other => {
                flat.insert(other);
            }
        }
    }
    if contradicts(&flat) {
        return Nf::Const(false);
    }
    let mut v: Vec<Nf> = flat.into_iter().collect();
    match v.len() {
        0 => Nf::Const(true),
        1 => v.pop().unwrap_or(Nf::Const(true)),
        _ => Nf::And(v),
    }
}

fn or(parts: Vec<Nf>) -> Nf {
    let mut flat = BTreeSet::new();
    for p in parts {
        match p {
            Nf::Const(false) => {}
            Nf::Const(true) => return Nf::Const(true),
            Nf::Or(inner) => flat.extend(inner),
            other => {
                flat.insert(other);
            }
        }
    }
    let mut v: Vec<Nf> = flat.into_iter().collect();
    match v.len() {
        0 => Nf::Const(false),
        1 => v.pop().unwrap_or(Nf::Const(false)),
        _ => Nf::Or(v),
    }
}

/// True when the conjuncts pin one operand to no possible value: `x == "a" and x == "b"`,
/// `x == "a" and x != "a"`, `x in ["a"] and x not in ["a"]`, `p and not p`.
fn contradicts(conj: &BTreeSet<Nf>) -> bool {
    let mut allowed: BTreeMap<&str, BTreeSet<&str>> = BTreeMap::new();
    let mut excluded: BTreeMap<&str, BTreeSet<&str>> = BTreeMap::new();
    for c in conj {
        let (key, set, negated): (&str, BTreeSet<&str>, bool) = match c {
            Nf::Cmp {
                key,
                op: CmpOp::Eq,
                val,
            } => (key, [val.as_str()].into(), false),
            Nf::Cmp {
                key,
                op: CmpOp::Ne,
                val,
            } => (key, [val.as_str()].into(), true),
            Nf::In { key, set, negated } => {
                (key, set.iter().map(String::as_str).collect(), *negated)
            }
            Nf::Not(inner) if conj.contains(inner) => return true,
            _ => continue,
        };
        if negated {
            excluded.entry(key).or_default().extend(set);
        } else {
            let slot = allowed.entry(key).or_insert_with(|| set.clone());
            *slot = slot.intersection(&set).copied().collect();
        }
    }
    allowed.iter().any(|(key, set)| {
        let ex = excluded.get(key);
        set.iter().all(|v| ex.is_some_and(|e| e.contains(v)))
    })
}

/// The conjuncts of a condition (itself when it is not an `and`).
fn conjuncts(nf: &Nf) -> BTreeSet<&Nf> {
    match nf {
        Nf::And(v) => v.iter().collect(),
        Nf::Const(true) => BTreeSet::new(),
        other => [other].into(),
    }
}

/// Workflows no request can reach: a request belongs to the first workflow whose `match`
/// holds, so a later workflow whose `match` implies an earlier one's never gets traffic.
pub(crate) fn workflow_relations(matchers: &[(Span, Nf)], diags: &mut Vec<Diagnostic>) {
    for (j, (later_span, later)) in matchers.iter().enumerate() {
        if *later == Nf::Const(false) {
            diags.push(
                Diagnostic::new(
                    codes::NEVER_FIRES,
                    "this workflow's `match` is never true",
                    *later_span,
                    "this condition is never true",
                )
                .help(
                    "two constraints on the same field contradict each other, or a list is empty",
                ),
            );
            continue;
        }
        if let Some((earlier_span, _)) = matchers
            .iter()
            .take(j)
            .find(|(_, earlier)| conjuncts(earlier).is_subset(&conjuncts(later)))
        {
            diags.push(
                Diagnostic::new(
                    codes::SHADOWED_WORKFLOW,
                    "this workflow never gets a request",
                    *later_span,
                    "every request this matches goes to the earlier workflow",
                )
                .with_label(*earlier_span, "the earlier workflow's `match` is the same or weaker")
                .help("a request belongs to the first workflow whose `match` holds; narrow the earlier one or reorder them"),
            );
        }
    }
}

/// Shadowed rules and contradictory pairs, in source order.
pub(crate) fn rule_relations(rules: &[RuleFacts], diags: &mut Vec<Diagnostic>) {
    for (j, later) in rules.iter().enumerate() {
        let (Some(lc), Some(la)) = (&later.cond, &later.action) else {
            continue;
        };
        if *lc == Nf::Const(false) {
            continue;
        }
        for earlier in rules.iter().take(j) {
            let (Some(ec), Some(ea)) = (&earlier.cond, &earlier.action) else {
                continue;
            };
            if earlier.response != later.response || *ec == Nf::Const(false) {
                continue;
            }
            if ea == la && conjuncts(ec).is_subset(&conjuncts(lc)) {
                diags.push(
                    Diagnostic::new(
                        codes::SHADOWED_RULE,
                        "this rule is shadowed by an earlier rule",
                        later.when_span,
                        "fires only where the earlier rule already does the same",
                    )
                    .with_label(
                        earlier.when_span,
                        "the earlier rule's condition is the same or weaker",
                    )
                    .help("remove this rule, or give it a different condition or action"),
                );
                break;
            }
            // An allow is dead when a deny fires on all its traffic (the deny's condition is
            // the same or weaker), whichever comes first.
            let pair = if earlier.is_allow && later.is_deny {
                Some((earlier, later))
            } else if earlier.is_deny && later.is_allow {
                Some((later, earlier))
            } else {
                None
            };
            if let Some((allow, deny)) = pair
                && let (Some(ac), Some(dc)) = (&allow.cond, &deny.cond)
                && conjuncts(dc).is_subset(&conjuncts(ac))
            {
                diags.push(
                    Diagnostic::new(
                        codes::CONTRADICTORY_RULES,
                        "this rule allows traffic that another rule denies",
                        allow.span,
                        "this rule allows",
                    )
                    .with_label(deny.span, "this rule denies all of that traffic")
                    .help("deny takes precedence, so the allow never has an effect; narrow one condition"),
                );
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;

    fn nf(cond: &str) -> Nf {
        let src = format!("rule A \"t\" {{\n  when {cond}\n}}\n");
        let (file, diags) = crate::syntax::parse(&src);
        assert!(diags.is_empty(), "{diags:?}");
        let Some(Item::Rule(r)) = file.items.first().map(|i| &i.node) else {
            panic!()
        };
        let Some(RuleStmt::When(c)) = r.stmts.first().map(|s| &s.node) else {
            panic!()
        };
        normalize(&c.node)
    }

    #[test]
    fn finds_constant_conditions() {
        assert_eq!(nf("model == \"a\" and model == \"b\""), Nf::Const(false));
        assert_eq!(nf("model in []"), Nf::Const(false));
        assert_eq!(nf("model not in []"), Nf::Const(true));
        assert_eq!(
            nf("model in [\"a\", \"b\"] and model not in [\"a\", \"b\"]"),
            Nf::Const(false)
        );
        assert_eq!(nf("stream and not stream"), Nf::Const(false));
        assert_eq!(nf("1 == 2 or false"), Nf::Const(false));
        assert_ne!(nf("model == \"a\" and path == \"b\""), Nf::Const(false));
        assert_ne!(
            nf("model in [\"a\", \"b\"] and model != \"a\""),
            Nf::Const(false)
        );
    }

    #[test]
    fn equal_conditions_normalise_equal() {
        assert_eq!(
            nf("model == \"a\" and path == \"/x\""),
            nf("(path == \"/x\") and \"a\" == model")
        );
    }
}
