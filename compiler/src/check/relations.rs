//! Relations between rules (and between workflows), decided on their normal forms
//! ([`super::logic`]): rules shadowed by earlier ones, allows that a deny overrides,
//! denies and routes that never act because an earlier one always acts first, and routes
//! into a model the policy denies.
//!
//! Comparing every pair would cost the square of the rule count. Instead each rule is
//! filed under one anchor of its condition (a value it requires, the rarest value it
//! excludes, an atom it needs), and a query looks only in the buckets where a rule it could
//! imply is filed ([`ImplicationIndex`]); allows are compared only with denies that can
//! share their traffic ([`OverlapIndex`]). Each finding names the first such rule in file
//! order, so the output does not depend on the index.

use std::collections::{BTreeMap, HashMap};

use super::logic::{Nf, conjuncts, disjoint, implies};
use super::{ActionKind, RuleFacts};
use crate::ast::Span;
use crate::diag::{Diagnostic, codes};

/// Where a condition is filed, borrowed from the conditions themselves.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Anchor<'a> {
    /// No conjuncts: `true`, implied by everything.
    Any,
    /// `key in [.., value, ..]`, filed under each of its values.
    Val(&'a str, &'a str),
    /// `key not in [.., value, ..]`, filed under its rarest value…
    NegVal(&'a str, &'a str),
    /// …and under its key, for queries that require a value it does not exclude.
    NegAny(&'a str),
    /// An ordering comparison on `key`.
    Range(&'a str),
    /// Any other conjunct, by itself.
    Exact(&'a Nf),
}

/// How many conditions exclude each (key, value), to file a `not in` under its rarest value.
type Rarity<'a> = HashMap<(&'a str, &'a str), usize>;

fn rarity<'a>(conds: impl Iterator<Item = &'a Nf>) -> Rarity<'a> {
    let mut r = Rarity::new();
    for nf in conds {
        for c in conjuncts(nf) {
            if let Nf::In {
                key,
                set,
                negated: true,
            } = c
            {
                for v in set {
                    *r.entry((key.as_str(), v.as_str())).or_default() += 1;
                }
            }
        }
    }
    r
}

/// Conditions filed so that "which of them does this condition imply" looks at few.
#[derive(Default)]
struct ImplicationIndex<'a> {
    /// Entry numbers (rule or workflow positions) per anchor, ascending.
    buckets: HashMap<Anchor<'a>, Vec<usize>>,
}

impl<'a> ImplicationIndex<'a> {
    /// Files condition `nf` of entry `i`; entries must come in ascending order.
    fn insert(&mut self, i: usize, nf: &'a Nf, rarity: &Rarity<'a>) {
        let cs = conjuncts(nf);
        let mut anchors = Vec::new();
        // Prefer the most selective conjunct: a required value, then a rare excluded one,
        // then an atom, then a range.
        let within = cs
            .iter()
            .filter_map(|c| match c {
                Nf::In {
                    key,
                    set,
                    negated: false,
                } => Some((key, set)),
                _ => None,
            })
            .min_by_key(|(_, set)| set.len());
        let excluded = cs
            .iter()
            .filter_map(|c| match c {
                Nf::In {
                    key,
                    set,
                    negated: true,
                } => set
                    .iter()
                    .map(|v| {
                        (
                            rarity
                                .get(&(key.as_str(), v.as_str()))
                                .copied()
                                .unwrap_or(0),
                            key,
                            v,
                        )
                    })
                    .min(),
                _ => None,
            })
            .min();
        let other = cs
            .iter()
            .find(|c| !matches!(c, Nf::In { .. } | Nf::Cmp { .. }));
        let range = cs.iter().find_map(|c| match c {
            Nf::Cmp { key, .. } => Some(key),
            _ => None,
        });
        if let Some((key, set)) = within {
            anchors.extend(set.iter().map(|v| Anchor::Val(key, v)));
        } else if let Some((_, key, v)) = excluded {
            anchors.push(Anchor::NegVal(key, v));
            anchors.push(Anchor::NegAny(key));
        } else if let Some(c) = other {
            anchors.push(Anchor::Exact(c));
        } else if let Some(key) = range {
            anchors.push(Anchor::Range(key));
        } else {
            anchors.push(Anchor::Any);
        }
        for a in anchors {
            self.buckets.entry(a).or_default().push(i);
        }
    }

    /// The first entry before `before` that `accept`s, among those `l` could imply (the
    /// caller's `accept` decides, with [`implies`] and whatever else it needs).
    fn first(
        &self,
        l: &'a Nf,
        before: usize,
        mut accept: impl FnMut(usize) -> bool,
    ) -> Option<usize> {
        let mut anchors = vec![Anchor::Any];
        for c in conjuncts(l) {
            match c {
                Nf::In {
                    key,
                    set,
                    negated: false,
                } => {
                    // An implied `in` contains all of `l`'s values, so any one finds it.
                    if let Some(v) = set.first() {
                        anchors.push(Anchor::Val(key, v));
                    }
                    anchors.push(Anchor::NegAny(key));
                    anchors.push(Anchor::Range(key));
                }
                Nf::In {
                    key,
                    set,
                    negated: true,
                } => anchors.extend(set.iter().map(|v| Anchor::NegVal(key, v))),
                Nf::Cmp { key, .. } => anchors.push(Anchor::Range(key)),
                other => anchors.push(Anchor::Exact(other)),
            }
        }
        let mut best = before;
        for a in anchors {
            for &i in self.buckets.get(&a).map_or(&[][..], Vec::as_slice) {
                if i >= best {
                    break;
                }
                if accept(i) {
                    best = i;
                    break;
                }
            }
        }
        (best < before).then_some(best)
    }
}

/// The enforced denies of one phase, filed so that an allow is compared only with the
/// denies that can share its traffic.
struct OverlapIndex<'a> {
    /// Every enforced deny of the phase: (rule position, condition), in file order.
    denies: Vec<(usize, &'a Nf)>,
    /// Positions in `denies` of those requiring `key in [.., value, ..]`.
    within: HashMap<(&'a str, &'a str), Vec<usize>>,
    /// Positions in `denies` of those with no `in` on a key, built when first asked.
    unconstrained: HashMap<&'a str, Vec<usize>>,
}

impl<'a> OverlapIndex<'a> {
    fn new(denies: Vec<(usize, &'a Nf)>) -> Self {
        let mut within: HashMap<(&str, &str), Vec<usize>> = HashMap::new();
        for (pos, (_, nf)) in denies.iter().enumerate() {
            for c in conjuncts(nf) {
                if let Nf::In {
                    key,
                    set,
                    negated: false,
                } = c
                {
                    for v in set {
                        within
                            .entry((key.as_str(), v.as_str()))
                            .or_default()
                            .push(pos);
                    }
                }
            }
        }
        OverlapIndex {
            denies,
            within,
            unconstrained: HashMap::new(),
        }
    }

    /// The first deny before rule `before` that can hold together with `allow`.
    fn first_overlapping(&mut self, allow: &'a Nf, before: usize) -> Option<usize> {
        let denies = &self.denies;
        // `Some(true)`: overlaps; `None`: past `before`, stop looking in this list.
        let test = |pos: usize| {
            let (i, d) = denies.get(pos)?;
            (*i < before).then(|| !disjoint(allow, d))
        };
        // A deny shares traffic with `key in P` only if it allows one of P's values: it
        // requires one of them, or requires nothing of `key`.
        let pinned = conjuncts(allow).iter().find_map(|c| match c {
            Nf::In {
                key,
                set,
                negated: false,
            } => Some((key.as_str(), set)),
            _ => None,
        });
        let Some((key, set)) = pinned else {
            return (0..denies.len())
                .map_while(|p| Some((p, test(p)?)))
                .find(|(_, overlaps)| *overlaps)
                .and_then(|(p, _)| denies.get(p).map(|d| d.0));
        };
        let unconstrained = self.unconstrained.entry(key).or_insert_with(|| {
            denies
                .iter()
                .enumerate()
                .filter(|(_, (_, d))| {
                    !conjuncts(d)
                        .iter()
                        .any(|c| matches!(c, Nf::In { key: k, negated: false, .. } if k == key))
                })
                .map(|(p, _)| p)
                .collect()
        });
        let mut best: Option<usize> = None;
        let lists = set
            .iter()
            .filter_map(|v| self.within.get(&(key, v.as_str())))
            .chain(std::iter::once(&*unconstrained));
        for list in lists {
            for &p in list {
                if best.is_some_and(|b| p >= b) {
                    break;
                }
                match test(p) {
                    None => break,
                    Some(true) => {
                        best = Some(p);
                        break;
                    }
                    Some(false) => {}
                }
            }
        }
        best.and_then(|p| self.denies.get(p).map(|d| d.0))
    }
}

/// Workflows no request can reach: a request belongs to the first workflow whose `match`
/// holds, so a later workflow whose `match` implies an earlier one's never gets traffic.
pub(crate) fn workflow_relations(matchers: &[(Span, Nf)], diags: &mut Vec<Diagnostic>) {
    let rare = rarity(matchers.iter().map(|(_, nf)| nf));
    let mut index = ImplicationIndex::default();
    for (i, (_, nf)) in matchers.iter().enumerate() {
        index.insert(i, nf, &rare);
    }
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
        let earlier = index.first(later, j, |i| {
            matchers
                .get(i)
                .is_some_and(|(_, e)| *e != Nf::Const(false) && implies(later, e))
        });
        if let Some((earlier_span, _)) = earlier.and_then(|i| matchers.get(i)) {
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

/// A rule that took part in the relations: its position and its (clean, satisfiable)
/// condition.
fn live(rules: &[RuleFacts]) -> impl Iterator<Item = (usize, &RuleFacts, &Nf)> {
    rules
        .iter()
        .enumerate()
        .filter_map(|(i, r)| match (&r.cond, &r.action) {
            (Some(c), Some(_)) if *c != Nf::Const(false) => Some((i, r, c)),
            _ => None,
        })
}

/// Every relation between rules, each reported once, at the later or the weaker rule.
pub(crate) fn rule_relations(rules: &[RuleFacts], diags: &mut Vec<Diagnostic>) {
    let rare = rarity(live(rules).map(|(_, _, c)| c));
    // Rules with the same phase and action text (enforcement included), for shadowing;
    // enforced denies and routes per phase, for conflicts.
    let mut same_action: HashMap<(bool, &str), ImplicationIndex> = HashMap::new();
    let mut enforced: HashMap<(bool, ActionKind), ImplicationIndex> = HashMap::new();
    let mut denies: BTreeMap<bool, Vec<(usize, &Nf)>> = BTreeMap::new();
    for (i, r, c) in live(rules) {
        if let Some(a) = &r.action {
            same_action
                .entry((r.response, a.as_str()))
                .or_default()
                .insert(i, c, &rare);
        }
        if r.enforced && matches!(r.kind, ActionKind::Deny | ActionKind::Route) {
            enforced
                .entry((r.response, r.kind))
                .or_default()
                .insert(i, c, &rare);
        }
        if r.enforced && r.kind == ActionKind::Deny {
            denies.entry(r.response).or_default().push((i, c));
        }
    }
    let cond_of = |i: usize| rules.get(i).and_then(|r| r.cond.as_ref());
    let mut overlap: BTreeMap<bool, OverlapIndex> = denies
        .iter()
        .map(|(phase, d)| (*phase, OverlapIndex::new(d.clone())))
        .collect();

    for (j, later, lc) in live(rules) {
        let action = later.action.as_deref().unwrap_or_default();
        // Shadowed: an earlier rule with the same action fires wherever this one does.
        let shadow = same_action
            .get(&(later.response, action))
            .and_then(|idx| idx.first(lc, j, |i| cond_of(i).is_some_and(|e| implies(lc, e))));
        if let Some(earlier) = shadow.and_then(|i| rules.get(i)) {
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
            continue;
        }
        // Conflicting denies or routes: the first enforced one in file order acts, so a
        // later one whose traffic an earlier one always takes never acts.
        if later.enforced && matches!(later.kind, ActionKind::Deny | ActionKind::Route) {
            let first = enforced
                .get(&(later.response, later.kind))
                .and_then(|idx| idx.first(lc, j, |i| cond_of(i).is_some_and(|e| implies(lc, e))));
            if let Some(earlier) = first.and_then(|i| rules.get(i)) {
                diags.push(conflict(later, earlier));
                continue;
            }
        }
        if later.kind == ActionKind::Allow {
            allow_relations(j, later, lc, rules, &enforced, &mut overlap, diags);
        }
    }
    routes_into_denied_models(rules, diags);
}

/// An earlier deny (or route) takes all of `later`'s traffic with a different answer.
fn conflict(later: &RuleFacts, earlier: &RuleFacts) -> Diagnostic {
    if later.kind == ActionKind::Deny {
        Diagnostic::new(
            codes::CONFLICTING_DENIES,
            "this deny never answers: an earlier deny answers all of its requests",
            later.then_span,
            "never sent",
        )
        .with_label(
            earlier.then_span,
            "sent instead: this rule comes first and its condition is the same or weaker",
        )
        .help("the first enforced deny in file order answers; merge the two rules, or make their conditions exclude each other")
    } else {
        Diagnostic::new(
            codes::CONFLICTING_ROUTES,
            "this route never applies: an earlier route takes all of its requests",
            later.then_span,
            "never applied",
        )
        .with_label(
            earlier.then_span,
            "applied instead: this rule comes first and its condition is the same or weaker",
        )
        .help("the first enforced route in file order wins; remove one, or make their conditions exclude each other")
    }
}

/// An allow that a deny overrides: entirely (the deny's condition is the same or weaker,
/// wherever the deny stands) or on part of its traffic (an earlier deny whose condition can
/// hold together with the allow's: an allow written after a deny reads as an exception to
/// it). Deny wins wherever both hold, whichever comes first, so the allow exempts nothing
/// there.
fn allow_relations<'a>(
    j: usize,
    allow: &RuleFacts,
    ac: &'a Nf,
    rules: &[RuleFacts],
    enforced: &HashMap<(bool, ActionKind), ImplicationIndex<'a>>,
    overlap: &mut BTreeMap<bool, OverlapIndex<'a>>,
    diags: &mut Vec<Diagnostic>,
) {
    let cond_of = |i: usize| rules.get(i).and_then(|r| r.cond.as_ref());
    let covering = enforced
        .get(&(allow.response, ActionKind::Deny))
        .and_then(|idx| {
            idx.first(ac, usize::MAX, |i| {
                cond_of(i).is_some_and(|d| implies(ac, d))
            })
        });
    if let Some(deny) = covering.and_then(|i| rules.get(i)) {
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
        return;
    }
    // An unconditional allow records every exchange; it cannot mean to exempt anything.
    if *ac == Nf::Const(true) {
        return;
    }
    let Some(idx) = overlap.get_mut(&allow.response) else {
        return;
    };
    if let Some(deny) = idx.first_overlapping(ac, j).and_then(|i| rules.get(i)) {
        diags.push(
            Diagnostic::new(
                codes::ALLOW_OVERRIDDEN,
                "this allow does not exempt traffic from a deny it overlaps",
                allow.span,
                "this rule allows",
            )
            .with_label(deny.span, "this earlier rule denies part of that traffic")
            .help("deny takes precedence wherever both conditions hold, whichever rule comes first; to exempt that traffic, exclude it in the deny's condition"),
        );
    }
}

/// The enforced request denies that refuse a model by model alone (an allowlist
/// `model not in [...]`, or `model == "x"`), asked model by model: the first such deny for
/// a model, by index.
struct ModelDenies<'r> {
    /// Models a deny names (`model in [...]` / `model == "x"`), with the first deny's index.
    within: HashMap<&'r str, usize>,
    /// Allowlists (`model not in [...]`): the deny's index and the models it allows.
    excluding: Vec<(usize, &'r std::collections::BTreeSet<String>)>,
    memo: HashMap<String, Option<usize>>,
}

impl<'r> ModelDenies<'r> {
    fn new(rules: &'r [RuleFacts]) -> ModelDenies<'r> {
        let mut within: HashMap<&str, usize> = HashMap::new();
        let mut excluding = Vec::new();
        for (i, r, c) in live(rules) {
            if !(r.enforced && r.kind == ActionKind::Deny && !r.response) {
                continue;
            }
            if let Nf::In { key, set, negated } = c
                && key == "model"
            {
                if *negated {
                    excluding.push((i, set));
                } else {
                    for v in set {
                        within.entry(v.as_str()).or_insert(i);
                    }
                }
            }
        }
        ModelDenies {
            within,
            excluding,
            memo: HashMap::new(),
        }
    }

    fn is_empty(&self) -> bool {
        self.within.is_empty() && self.excluding.is_empty()
    }

    /// The first deny that refuses `model`, by index.
    fn first(&mut self, model: &str) -> Option<usize> {
        // Models are compared as the normal form spells strings.
        let canon = crate::fmt::lit(&crate::ast::Lit::Str(model.to_string()));
        let (within, excluding) = (&self.within, &self.excluding);
        *self.memo.entry(canon.clone()).or_insert_with(|| {
            let by_value = within.get(canon.as_str()).copied();
            let by_exclusion = excluding
                .iter()
                .find(|(_, set)| !set.contains(&canon))
                .map(|(i, _)| *i);
            by_value.into_iter().chain(by_exclusion).min()
        })
    }
}

/// Routes into a model that an enforced request deny refuses by model alone (an
/// allowlist `model not in [...]`, or `model == "x"`). Rules see the requested model, not
/// the routed one, so the routed request bypasses the deny.
fn routes_into_denied_models(rules: &[RuleFacts], diags: &mut Vec<Diagnostic>) {
    let mut denies = ModelDenies::new(rules);
    if denies.is_empty() {
        return;
    }
    for (_, r, _) in live(rules) {
        if !(r.enforced && r.kind == ActionKind::Route && !r.response) {
            continue;
        }
        for (model, span) in &r.targets {
            if let Some(deny) = denies.first(model).and_then(|i| rules.get(i)) {
                diags.push(
                    Diagnostic::new(
                        codes::ROUTE_TO_DENIED_MODEL,
                        format!("this rule routes to `{model}`, a model the policy denies"),
                        *span,
                        "routed here",
                    )
                    .with_label(deny.when_span, format!("denies `{model}`"))
                    .help(format!("rules see the requested model, not the routed one, so a request routed to `{model}` bypasses the deny; route to an allowed model, or allow `{model}`")),
                );
            }
        }
    }
}

/// Fallback models that an enforced request deny refuses by model alone: the engine
/// re-checks every request rule for a fallback model, so such a step is skipped on every
/// request and the fallback can never use it (the same allowlist reasoning as E0610).
pub(crate) fn fallbacks_into_denied_models(
    rules: &[RuleFacts],
    models: &[(String, Span)],
    diags: &mut Vec<Diagnostic>,
) {
    if models.is_empty() {
        return;
    }
    let mut denies = ModelDenies::new(rules);
    for (model, span) in models {
        if let Some(deny) = denies.first(model).and_then(|i| rules.get(i)) {
            diags.push(
                Diagnostic::new(
                    codes::FALLBACK_TO_DENIED_MODEL,
                    format!("this workflow falls back to `{model}`, a model the policy denies"),
                    *span,
                    "never used",
                )
                .with_label(deny.when_span, format!("denies `{model}`"))
                .help(format!("every request rule is re-checked for a fallback model, so this step is skipped on every request; fall back to an allowed model, or allow `{model}`")),
            );
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;

    use super::super::logic::tests::nf;

    /// Random conditions over small domains, so implications and overlaps are common.
    fn conditions(n: usize, seed: u64) -> Vec<Nf> {
        let mut state = seed;
        let mut next = move |m: u64| {
            state = state
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (state >> 33) % m
        };
        let mut out = Vec::new();
        for _ in 0..n {
            let mut parts = Vec::new();
            for _ in 0..=next(3) {
                let (a, b) = (next(4), next(4));
                parts.push(match next(11) {
                    0 => format!("model == \"m{a}\""),
                    1 => format!("model in [\"m{a}\", \"m{b}\"]"),
                    2 => format!("model not in [\"m{a}\", \"m{b}\"]"),
                    3 => format!("model != \"m{a}\""),
                    4 => format!("team == \"t{a}\""),
                    5 => format!("team in [\"t{a}\", \"t{b}\"]"),
                    6 => format!("max_tokens > {}", 100 * a),
                    7 => format!("max_tokens <= {}", 100 * b),
                    8 => "stream".to_string(),
                    9 => "not stream".to_string(),
                    _ => format!("(team == \"t{a}\" or prompt has secret)"),
                });
            }
            out.push(nf(&parts.join(" and ")));
        }
        out
    }

    /// The index finds exactly what comparing every earlier condition finds.
    #[test]
    fn implication_index_agrees_with_pairwise_comparison() {
        for seed in 0..20 {
            let conds = conditions(150, seed);
            let rare = rarity(conds.iter());
            // As in the checker, conditions that are never true take no part.
            let live = |i: usize| conds[i] != Nf::Const(false);
            let mut index = ImplicationIndex::default();
            for (i, c) in conds.iter().enumerate().filter(|(i, _)| live(*i)) {
                index.insert(i, c, &rare);
            }
            for (j, l) in conds.iter().enumerate().filter(|(j, _)| live(*j)) {
                let brute = (0..j).find(|&i| live(i) && implies(l, &conds[i]));
                let indexed = index.first(l, j, |i| implies(l, &conds[i]));
                assert_eq!(indexed, brute, "seed {seed}, rule {j}: {l:?}");
            }
        }
    }

    /// The overlap index finds the same first overlapping deny as a scan of all of them.
    #[test]
    fn overlap_index_agrees_with_pairwise_comparison() {
        for seed in 0..20 {
            let conds = conditions(150, seed + 100);
            // Even positions are denies, odd ones allows.
            let denies: Vec<(usize, &Nf)> = conds
                .iter()
                .enumerate()
                .step_by(2)
                .filter(|(_, c)| **c != Nf::Const(false))
                .collect();
            let mut index = OverlapIndex::new(denies.clone());
            for (j, a) in conds.iter().enumerate().skip(1).step_by(2) {
                let brute = denies
                    .iter()
                    .find(|(i, d)| *i < j && !disjoint(a, d))
                    .map(|(i, _)| *i);
                assert_eq!(
                    index.first_overlapping(a, j),
                    brute,
                    "seed {seed}, allow {j}: {a:?}"
                );
            }
        }
    }
}
