//! Conditions in normal form, and a small decision procedure over them: when a condition
//! is never or always true, when one condition implies another, and when two can never
//! hold together.
//!
//! The procedure is sound for what it reports and deliberately incomplete: atoms it does
//! not understand (detectors, functions it cannot bound) are compared by their canonical
//! text. Within that, constraints on one operand are combined exactly, following the
//! engine's total evaluation (a missing value matches no `==`, `in` or ordering, so `!=`
//! and `not in` hold on it):
//! - `==`/`!=`/`in`/`not in` become one membership constraint per operand, so
//!   `model == "a" or model == "b"` is `model in ["a", "b"]` and
//!   `model == "a" or model != "a"` is always true;
//! - ordering comparisons on one operand intersect into an interval, so
//!   `max_tokens > 4000 and max_tokens < 100` is never true;
//! - `p and not p` is never true and `p or not p` always true.

use std::cmp::Ordering;
use std::collections::{BTreeMap, BTreeSet};

use crate::ast::*;
use crate::fmt;

/// A condition in normal form; comparable and ordered so equal conditions compare equal.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) enum Nf {
    Const(bool),
    And(Vec<Nf>),
    Or(Vec<Nf>),
    Not(Box<Nf>),
    /// `operand op constant` for an ordering operator (`<`, `<=`, `>`, `>=`), both as
    /// canonical text.
    Cmp {
        key: String,
        op: CmpOp,
        val: String,
    },
    /// `operand in set` (or `not in` when negated); `==` and `!=` are one-value sets.
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
        Lit::Money { num, .. } => match crate::resolved::micros(&num.text) {
            Some(m) => format!("m{m}"),
            None => format!("m{}", num.text),
        },
        other => fmt::lit(other),
    }
}

/// Orders two canonical numbers of the same kind (`n…` plain numbers, `m…` money in
/// micros, compared as integers so large amounts stay exact); `None` for anything else.
fn cmp_vals(a: &str, b: &str) -> Option<Ordering> {
    let (ka, va) = a.split_at_checked(1)?;
    let (kb, vb) = b.split_at_checked(1)?;
    match (ka, kb) {
        ("n", "n") => va
            .parse::<f64>()
            .ok()?
            .partial_cmp(&vb.parse::<f64>().ok()?),
        ("m", "m") => Some(va.parse::<i64>().ok()?.cmp(&vb.parse::<i64>().ok()?)),
        _ => None,
    }
}

/// Whether `v op bound` holds for two canonical numbers; `None` when not comparable.
fn holds(v: &str, op: CmpOp, bound: &str) -> Option<bool> {
    let o = cmp_vals(v, bound)?;
    Some(match op {
        CmpOp::Eq => o == Ordering::Equal,
        CmpOp::Ne => o != Ordering::Equal,
        CmpOp::Lt => o == Ordering::Less,
        CmpOp::Le => o != Ordering::Greater,
        CmpOp::Gt => o == Ordering::Greater,
        CmpOp::Ge => o != Ordering::Less,
    })
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

/// `key op val`, with `==`/`!=` as one-value memberships.
fn compare(key: String, op: CmpOp, val: String) -> Nf {
    match op {
        CmpOp::Eq | CmpOp::Ne => Nf::In {
            key,
            set: [val].into(),
            negated: op == CmpOp::Ne,
        },
        op => Nf::Cmp { key, op, val },
    }
}

/// Normalises a checked condition.
pub(crate) fn normalize(c: &Cond) -> Nf {
    match c {
        Cond::And(parts) => and(parts.iter().map(|p| normalize(&p.node)).collect()),
        Cond::Or(parts) => or(parts.iter().map(|p| normalize(&p.node)).collect()),
        Cond::Not(inner) => not(normalize(&inner.node)),
        Cond::Compare { left, op, right } => match (&left.node, &right.node) {
            (Operand::Lit(a), Operand::Lit(b)) => match eval_const(a, op.node, b) {
                Some(v) => Nf::Const(v),
                None => Nf::Atom(fmt::cond(c)),
            },
            (Operand::Lit(b), o) => compare(fmt::operand(o), flip(op.node), canon(b)),
            (o, Operand::Lit(r)) => compare(fmt::operand(o), op.node, canon(r)),
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

/// `not x`. A membership flips (`not (model == "a")` is `model != "a"`, exactly, since a
/// missing value fails `==` and passes `!=`); an ordering does not (a missing
/// `max_tokens` fails both `< 5` and `>= 5`), so it stays wrapped.
fn not(x: Nf) -> Nf {
    match x {
        Nf::Const(b) => Nf::Const(!b),
        Nf::Not(x) => *x,
        Nf::In { key, set, negated } => Nf::In {
            key,
            set,
            negated: !negated,
        },
        other => Nf::Not(Box::new(other)),
    }
}

/// What the conjuncts of an `and` say about one operand.
#[derive(Default)]
struct Constraint {
    /// The operand is one of these (intersection of every `in`), when any `in` was given.
    within: Option<BTreeSet<String>>,
    /// The operand is none of these (union of every `not in`).
    excluded: BTreeSet<String>,
    /// The tightest lower and upper bounds: (value, strict).
    lower: Option<(String, bool)>,
    upper: Option<(String, bool)>,
}

impl Constraint {
    /// Tightens a bound; `false` when the two bounds cannot be ordered (different kinds).
    fn bound(&mut self, op: CmpOp, val: String) -> bool {
        let strict = matches!(op, CmpOp::Lt | CmpOp::Gt);
        let (slot, tighter) = match op {
            CmpOp::Gt | CmpOp::Ge => (&mut self.lower, Ordering::Greater),
            _ => (&mut self.upper, Ordering::Less),
        };
        match slot {
            None => *slot = Some((val, strict)),
            Some((old, old_strict)) => match cmp_vals(&val, old) {
                None => return false,
                Some(o) if o == tighter => *slot = Some((val, strict)),
                Some(Ordering::Equal) => *old_strict |= strict,
                Some(_) => {}
            },
        }
        true
    }

    /// Whether a value passes the bounds (values that cannot be compared pass).
    fn in_bounds(&self, v: &str) -> bool {
        let lo = self.lower.as_ref().is_none_or(|(b, strict)| {
            holds(v, if *strict { CmpOp::Gt } else { CmpOp::Ge }, b).unwrap_or(true)
        });
        let hi = self.upper.as_ref().is_none_or(|(b, strict)| {
            holds(v, if *strict { CmpOp::Lt } else { CmpOp::Le }, b).unwrap_or(true)
        });
        lo && hi
    }

    /// The constraint back as conjuncts, or `None` when no value satisfies it.
    fn conjuncts(self, key: &str, out: &mut BTreeSet<Nf>) -> Option<()> {
        if let Some(within) = &self.within {
            let set: BTreeSet<String> = within
                .iter()
                .filter(|v| !self.excluded.contains(*v) && self.in_bounds(v))
                .cloned()
                .collect();
            if set.is_empty() {
                return None;
            }
            out.insert(Nf::In {
                key: key.to_string(),
                set,
                negated: false,
            });
            return Some(());
        }
        if let (Some((lo, lo_strict)), Some((hi, hi_strict))) = (&self.lower, &self.upper) {
            match cmp_vals(lo, hi) {
                Some(Ordering::Greater) => return None,
                Some(Ordering::Equal) if *lo_strict || *hi_strict => return None,
                _ => {}
            }
        }
        if !self.excluded.is_empty() {
            out.insert(Nf::In {
                key: key.to_string(),
                set: self.excluded,
                negated: true,
            });
        }
        for (bound, ops) in [
            (self.lower, [CmpOp::Ge, CmpOp::Gt]),
            (self.upper, [CmpOp::Le, CmpOp::Lt]),
        ] {
            if let Some((val, strict)) = bound {
                out.insert(Nf::Cmp {
                    key: key.to_string(),
                    op: ops[usize::from(strict)],
                    val,
                });
            }
        }
        Some(())
    }
}

/// `a and b and …`, flattened, with the constraints on each operand combined.
pub(crate) fn and(parts: Vec<Nf>) -> Nf {
    let mut flat = BTreeSet::new();
    let mut by_key: BTreeMap<String, Constraint> = BTreeMap::new();
    let mut push = |p: Nf, flat: &mut BTreeSet<Nf>| match p {
        Nf::In { key, set, negated } => {
            let c = by_key.entry(key).or_default();
            if negated {
                c.excluded.extend(set);
            } else {
                c.within = Some(match c.within.take() {
                    Some(w) => w.intersection(&set).cloned().collect(),
                    None => set,
                });
            }
        }
        Nf::Cmp { key, op, val } => {
            let c = by_key.entry(key.clone()).or_default();
            if !c.bound(op, val.clone()) {
                flat.insert(Nf::Cmp { key, op, val });
            }
        }
        other => {
            flat.insert(other);
        }
    };
    for p in parts {
        match p {
            Nf::Const(true) => {}
            Nf::Const(false) => return Nf::Const(false),
            Nf::And(inner) => {
                for i in inner {
                    push(i, &mut flat);
                }
            }
            other => push(other, &mut flat),
        }
    }
    for (key, c) in by_key {
        if c.conjuncts(&key, &mut flat).is_none() {
            return Nf::Const(false);
        }
    }
    if flat
        .iter()
        .any(|c| matches!(c, Nf::Not(inner) if flat.contains(&**inner)))
    {
        return Nf::Const(false);
    }
    let mut v: Vec<Nf> = flat.into_iter().collect();
    match v.len() {
        0 => Nf::Const(true),
        1 => v.pop().unwrap_or(Nf::Const(true)),
        _ => Nf::And(v),
    }
}

/// `a or b or …`, flattened, with the memberships of each operand combined: `x in P or
/// x not in N` is `x not in (N - P)`, always true when `P` covers `N`.
pub(crate) fn or(parts: Vec<Nf>) -> Nf {
    let mut flat = BTreeSet::new();
    // Per operand: the union of its `in` sets, and the intersection of its `not in` sets.
    let mut by_key: BTreeMap<String, (BTreeSet<String>, Option<BTreeSet<String>>)> =
        BTreeMap::new();
    let mut push = |p: Nf, flat: &mut BTreeSet<Nf>| match p {
        Nf::In { key, set, negated } => {
            let (within, excluded) = by_key.entry(key).or_default();
            if negated {
                *excluded = Some(match excluded.take() {
                    Some(e) => e.intersection(&set).cloned().collect(),
                    None => set,
                });
            } else {
                within.extend(set);
            }
        }
        other => {
            flat.insert(other);
        }
    };
    for p in parts {
        match p {
            Nf::Const(false) => {}
            Nf::Const(true) => return Nf::Const(true),
            Nf::Or(inner) => {
                for i in inner {
                    push(i, &mut flat);
                }
            }
            other => push(other, &mut flat),
        }
    }
    for (key, (within, excluded)) in by_key {
        match excluded {
            Some(excluded) => {
                let set: BTreeSet<String> = excluded.difference(&within).cloned().collect();
                if set.is_empty() {
                    return Nf::Const(true);
                }
                flat.insert(Nf::In {
                    key,
                    set,
                    negated: true,
                });
            }
            None => {
                flat.insert(Nf::In {
                    key,
                    set: within,
                    negated: false,
                });
            }
        }
    }
    if flat
        .iter()
        .any(|c| matches!(c, Nf::Not(inner) if flat.contains(&**inner)))
    {
        return Nf::Const(true);
    }
    let mut v: Vec<Nf> = flat.into_iter().collect();
    match v.len() {
        0 => Nf::Const(false),
        1 => v.pop().unwrap_or(Nf::Const(false)),
        _ => Nf::Or(v),
    }
}

/// The conjuncts of a condition (itself when it is not an `and`; none for `true`).
pub(crate) fn conjuncts(nf: &Nf) -> &[Nf] {
    match nf {
        Nf::And(v) => v,
        Nf::Const(true) => &[],
        other => std::slice::from_ref(other),
    }
}

/// Whether conjunct `l` implies conjunct `e` (every value satisfying `l` satisfies `e`).
fn conjunct_implies(l: &Nf, e: &Nf) -> bool {
    if l == e {
        return true;
    }
    match (l, e) {
        (
            Nf::In {
                key: kl,
                set: sl,
                negated: nl,
            },
            Nf::In {
                key: ke,
                set: se,
                negated: ne,
            },
        ) if kl == ke => match (nl, ne) {
            (false, false) => sl.is_subset(se),
            (true, true) => se.is_subset(sl),
            (false, true) => sl.is_disjoint(se),
            (true, false) => false,
        },
        (
            Nf::In {
                key: kl,
                set,
                negated: false,
            },
            Nf::Cmp { key: ke, op, val },
        ) if kl == ke => set.iter().all(|v| holds(v, *op, val) == Some(true)),
        (
            Nf::Cmp {
                key: kl,
                op: ol,
                val: vl,
            },
            Nf::Cmp {
                key: ke,
                op: oe,
                val: ve,
            },
        ) if kl == ke => {
            let Some(o) = cmp_vals(vl, ve) else {
                return false;
            };
            match (ol, oe) {
                // x > vl (or >=) implies x > ve when vl is at least ve (strictly more
                // when only the implied bound is strict).
                (CmpOp::Gt, CmpOp::Gt | CmpOp::Ge) | (CmpOp::Ge, CmpOp::Ge) => o != Ordering::Less,
                (CmpOp::Ge, CmpOp::Gt) => o == Ordering::Greater,
                (CmpOp::Lt, CmpOp::Lt | CmpOp::Le) | (CmpOp::Le, CmpOp::Le) => {
                    o != Ordering::Greater
                }
                (CmpOp::Le, CmpOp::Lt) => o == Ordering::Less,
                _ => false,
            }
        }
        _ => false,
    }
}

/// Whether `l` implies `e`: every conjunct of `e` follows from some conjunct of `l`, so
/// wherever `l` holds, `e` does (`e` is the same or weaker).
pub(crate) fn implies(l: &Nf, e: &Nf) -> bool {
    if *l == Nf::Const(false) || *e == Nf::Const(true) {
        return true;
    }
    let lc = conjuncts(l);
    conjuncts(e)
        .iter()
        .all(|ec| lc.iter().any(|lc| conjunct_implies(lc, ec)))
}

/// Whether `a` and `b` can never hold together.
pub(crate) fn disjoint(a: &Nf, b: &Nf) -> bool {
    and(vec![a.clone(), b.clone()]) == Nf::Const(false)
}

#[cfg(test)]
pub(super) mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;

    /// The normal form of a condition written in the language (shared with the
    /// `relations` tests).
    pub(in crate::check) fn nf(cond: &str) -> Nf {
        let src = format!("rule A \"t\" {{\n  when {cond}\n}}\n");
        let (file, diags) = crate::syntax::parse(&src);
        assert!(diags.is_empty(), "{cond}: {diags:?}");
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

    #[test]
    fn finds_tautologies_under_total_evaluation() {
        assert_eq!(nf("model == \"a\" or model != \"a\""), Nf::Const(true));
        assert_eq!(nf("stream or not stream"), Nf::Const(true));
        assert_eq!(
            nf("model in [\"a\", \"b\"] or model not in [\"a\"]"),
            Nf::Const(true)
        );
        assert_eq!(
            nf("model != \"a\" or model != \"b\""),
            Nf::Const(true),
            "no value is both a and b"
        );
        // A missing max_tokens fails both sides, so this is not a tautology.
        assert_ne!(nf("max_tokens > 5 or max_tokens <= 5"), Nf::Const(true));
        assert_ne!(nf("model == \"a\" or model != \"b\""), Nf::Const(true));
        // Equalities on one operand merge into one membership.
        assert_eq!(
            nf("model == \"a\" or model == \"b\""),
            nf("model in [\"b\", \"a\"]")
        );
        assert_eq!(nf("not (model == \"a\")"), nf("model != \"a\""));
    }

    #[test]
    fn intersects_ranges() {
        assert_eq!(
            nf("max_tokens > 4000 and max_tokens < 100"),
            Nf::Const(false)
        );
        assert_eq!(nf("max_tokens > 5 and max_tokens < 5"), Nf::Const(false));
        assert_eq!(nf("max_tokens >= 5 and max_tokens < 5"), Nf::Const(false));
        assert_ne!(nf("max_tokens >= 5 and max_tokens <= 5"), Nf::Const(false));
        assert_eq!(nf("max_tokens == 3 and max_tokens > 10"), Nf::Const(false));
        assert_eq!(
            nf("max_tokens > 10 and max_tokens > 20"),
            nf("max_tokens > 20")
        );
        assert_eq!(
            nf("spend(team, day) >= 100 EUR and spend(team, day) < 100.0 EUR"),
            Nf::Const(false)
        );
    }

    #[test]
    fn decides_implication() {
        let imp = |l: &str, e: &str| implies(&nf(l), &nf(e));
        assert!(imp("model == \"a\"", "model in [\"a\", \"b\"]"));
        assert!(!imp("model in [\"a\", \"b\"]", "model == \"a\""));
        assert!(imp("model == \"a\"", "model != \"b\""));
        assert!(imp("model not in [\"a\", \"b\"]", "model != \"a\""));
        assert!(!imp("model != \"a\"", "model not in [\"a\", \"b\"]"));
        assert!(imp("max_tokens > 5000", "max_tokens > 4000"));
        assert!(imp("max_tokens >= 4001", "max_tokens >= 4000"));
        assert!(!imp("max_tokens >= 4000", "max_tokens > 4000"));
        assert!(imp("max_tokens == 5000", "max_tokens > 4000"));
        assert!(imp("team == \"x\" and model == \"a\"", "model == \"a\""));
        assert!(!imp("model == \"a\"", "team == \"x\" and model == \"a\""));
        assert!(imp(
            "prompt has secret and model == \"a\"",
            "prompt has secret"
        ));
    }

    #[test]
    fn decides_disjointness() {
        let dis = |a: &str, b: &str| disjoint(&nf(a), &nf(b));
        assert!(dis("model == \"a\"", "model == \"b\""));
        assert!(dis("model == \"a\"", "model not in [\"a\"]"));
        assert!(dis("max_tokens > 4000", "max_tokens < 100"));
        assert!(!dis("model == \"a\"", "team == \"x\""));
        assert!(!dis("model not in [\"a\"]", "team == \"x\""));
        assert!(!dis("prompt has secret", "model == \"a\""));
    }
}
