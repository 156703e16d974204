//! Renders a [`writ_plugin::explain::Explanation`] for `writ explain`: readable text
//! (a tree per rule, then the precedence) and the same facts as JSON. Only presentation
//! lives here; what matched and what won comes from the engine's own code.

use std::fmt::Write as _;

use serde_json::{Value, json};
use writ_plugin::eval::{ActionKind, Effect, Fired};
use writ_plugin::explain::{
    Early, Escalation, Explanation, Node, Outcome, RuleStatus, RuleTrace, Shown,
};
use writ_plugin::ir::{self, Phase};

use crate::diff::{action_text, expr_text, operand_text, value_text};

/// The explanation as JSON, for machines.
pub fn to_json(ex: &Explanation<'_>) -> Value {
    let p = ex.policy;
    json!({
        "policy": { "name": p.name, "version": p.version },
        "state": "fresh: empty spend ledgers, kill switch running, no oversight counts",
        "request": {
            "workflow": workflow(ex),
            "team": ex.identity.team,
            "user": ex.identity.user,
            "model": ex.model_used,
        },
        "outcome": outcome_json(ex),
        "fired": ex.fired.iter().map(fired_json).collect::<Vec<_>>(),
        "precedence": precedence(ex).into_iter().map(|(f, why)| {
            let mut v = fired_json(f);
            v["why"] = Value::String(why);
            v
        }).collect::<Vec<_>>(),
        "transforms": {
            "model": ex.model_used,
            "tokenised": ex.tokenised,
            "redacted": ex.redacted,
            "tags": ex.tags.iter().map(|(k, v)| json!({"key": k, "value": v})).collect::<Vec<_>>(),
        },
        "escalation": ex.escalation.as_ref().map(|e| escalation_json(ex, e)),
        "rules": ex.rules.iter().map(|r| rule_json(ex, r)).collect::<Vec<_>>(),
    })
}

/// The explanation as text: the outcome, the precedence that produced it, then every
/// rule with the condition tree that decided it.
pub fn to_text(ex: &Explanation<'_>) -> String {
    let p = ex.policy;
    let mut out = String::new();
    let _ = writeln!(out, "policy {} {}", p.name, p.version);
    let _ = writeln!(
        out,
        "request: workflow {}, team {}, user {}{}",
        workflow(ex).map_or("(none)".into(), |w| quote(&w)),
        ex.identity.team.as_deref().map_or("(none)".into(), quote),
        ex.identity.user.as_deref().map_or("(none)".into(), quote),
        ex.model_used
            .as_deref()
            .map_or(String::new(), |m| format!(", model {}", quote(m))),
    );
    out.push_str(
        "state: fresh (empty spend ledgers, kill switch running, no oversight counts)\n\n",
    );
    let _ = writeln!(out, "outcome: {}", outcome_text(ex));
    let mut applied = Vec::new();
    if !ex.tokenised.is_empty() {
        applied.push(format!("tokenise ({})", ex.tokenised.join(", ")));
    }
    if !ex.redacted.is_empty() {
        applied.push(format!("redact ({})", ex.redacted.join(", ")));
    }
    for (k, v) in &ex.tags {
        applied.push(format!("tag {k}={v}"));
    }
    if !applied.is_empty() && matches!(ex.outcome, Outcome::Allowed { .. }) {
        let _ = writeln!(out, "  applied: {}", applied.join("; "));
    }
    if let Some(e) = &ex.escalation {
        let by = match e.rule {
            Some(i) => format!("rule {}", ex.policy.rule_id(i)),
            None => "the workflow's oversight mode".into(),
        };
        let _ = writeln!(
            out,
            "  escalated to {} by {by}: {}",
            quote(&e.queue),
            e.reason
        );
    }
    let order = precedence(ex);
    if !order.is_empty() {
        out.push_str("\nprecedence (deny > escalate > route > tokenise > redact > tag > allow):\n");
        for (f, why) in order {
            let _ = writeln!(
                out,
                "  {:<8} {:<10} {}: {why}",
                f.action.as_str(),
                f.id,
                effect_text(f.effect)
            );
        }
    }
    out.push_str("\nrules:\n");
    for r in &ex.rules {
        rule_text(ex, r, &mut out);
    }
    out
}

fn workflow(ex: &Explanation<'_>) -> Option<String> {
    ex.identity
        .workflow
        .and_then(|i| ex.policy.workflows.get(i))
        .map(|w| w.name.clone())
}

fn quote(s: &str) -> String {
    serde_json::to_string(s).unwrap_or_else(|_| format!("\"{s}\""))
}

fn phase_str(p: Phase) -> &'static str {
    match p {
        Phase::Request => "request",
        Phase::Response => "response",
    }
}

fn effect_text(e: Effect) -> &'static str {
    match e {
        Effect::Enforced => "enforced",
        Effect::WouldHave => "monitor: would have acted",
        Effect::NotEnforcedYet => "not enforced yet",
        Effect::Overridden => "overridden",
    }
}

fn effect_key(e: Effect) -> &'static str {
    match e {
        Effect::Enforced => "enforced",
        Effect::WouldHave => "would_have",
        Effect::NotEnforcedYet => "not_enforced_yet",
        Effect::Overridden => "overridden",
    }
}

fn fired_json(f: &Fired) -> Value {
    json!({
        "id": f.id,
        "clause": f.clause,
        "title": f.title,
        "action": f.action.as_str(),
        "mode": if f.monitor { "monitor" } else { "enforce" },
        "effect": effect_key(f.effect),
    })
}

fn outcome_text(ex: &Explanation<'_>) -> String {
    let rule = |i: usize| {
        ex.policy.rules.get(i).map_or(String::new(), |r| {
            format!("{} {}", ex.policy.rule_id(i), quote(&r.title))
        })
    };
    match &ex.outcome {
        Outcome::Allowed { status } => match (ex.response.is_some(), status) {
            (true, s) => format!("allowed: forwarded to the upstream; the client gets its {s}"),
            (false, _) => {
                "allowed: forwarded to the upstream (no reply given: response rules not evaluated)"
                    .into()
            }
        },
        Outcome::Denied {
            status,
            rule: i,
            phase,
        } => format!(
            "denied {status} by {} (in the {} phase)",
            rule(*i),
            phase_str(*phase)
        ),
        Outcome::Refused { status, why } => format!("refused {status}: {why}"),
        Outcome::Early(Early::Admin) => {
            "the kill-switch admin endpoint: the engine answers it itself, no rule runs".into()
        }
        Outcome::Early(Early::Body { status, error }) => {
            format!("refused {status} before any rule: {}", body_error(error))
        }
    }
}

fn body_error(e: &writ_plugin::request::BodyError) -> String {
    use writ_plugin::request::BodyError;
    match e {
        BodyError::Malformed(why) => format!("the body is not valid JSON ({why})"),
        BodyError::TooLarge { limit } => format!("the body is over the {limit}-byte limit"),
        BodyError::UnsupportedMediaType(t) => format!("content type {} is not JSON", quote(t)),
        BodyError::UnsupportedEncoding(e) => {
            format!("content encoding {} is not readable", quote(e))
        }
    }
}

fn outcome_json(ex: &Explanation<'_>) -> Value {
    match &ex.outcome {
        Outcome::Allowed { status } => json!({
            "action": "allowed",
            "status": ex.response.is_some().then_some(*status),
        }),
        Outcome::Denied {
            status,
            rule,
            phase,
        } => json!({
            "action": "denied",
            "status": status,
            "rule": ex.policy.rule_id(*rule),
            "phase": phase_str(*phase),
        }),
        Outcome::Refused { status, why } => json!({
            "action": "refused", "status": status, "reason": why,
        }),
        Outcome::Early(Early::Admin) => json!({"action": "admin"}),
        Outcome::Early(Early::Body { status, error }) => json!({
            "action": "refused", "status": status, "reason": body_error(error),
        }),
    }
}

fn escalation_json(ex: &Explanation<'_>, e: &Escalation) -> Value {
    json!({
        "queue": e.queue,
        "reason": e.reason,
        "rule": e.rule.map(|i| ex.policy.rule_id(i)),
    })
}

/// The fired rules in precedence order (highest first, then file order), each with why
/// it did or did not shape the answer. The effects come from the engine's decision.
fn precedence<'e>(ex: &'e Explanation<'_>) -> Vec<(&'e Fired, String)> {
    let p = ex.policy;
    let prec = |f: &Fired| p.rules.get(f.rule).map_or(0, |r| r.action.precedence());
    let deny_by = match ex.outcome {
        Outcome::Denied { rule, .. } => Some(rule),
        _ => None,
    };
    let mut fired: Vec<&Fired> = ex.fired.iter().collect();
    fired.sort_by_key(|f| std::cmp::Reverse(prec(f)));
    let mut first_route = None;
    let mut first_escalate = None;
    fired
        .into_iter()
        .map(|f| {
            let why = match f.effect {
                Effect::WouldHave => format!(
                    "recorded as \"would have applied {}\"; nothing applied",
                    f.action.as_str()
                ),
                Effect::NotEnforcedYet => "not carried out by this engine yet".into(),
                Effect::Overridden => match (deny_by, f.action) {
                    (Some(w), ActionKind::Deny) => format!(
                        "a deny too, but {} comes first in the file: the first deny answers",
                        p.rule_id(w)
                    ),
                    (Some(w), kind) => format!(
                        "deny from {} wins (deny beats {})",
                        p.rule_id(w),
                        kind.as_str()
                    ),
                    (None, _) => "overridden".into(),
                },
                Effect::Enforced => match f.action {
                    ActionKind::Deny if deny_by == Some(f.rule) => {
                        "answers the request: deny beats every other action".into()
                    }
                    ActionKind::Deny => "denied".into(),
                    ActionKind::Route if first_route.is_none() => {
                        first_route = Some(f.rule);
                        "routes the request (the first route in the file wins)".into()
                    }
                    ActionKind::Route => "another route came first in the file and wins".into(),
                    ActionKind::Escalate if first_escalate.is_none() => {
                        first_escalate = Some(f.rule);
                        "escalates the reply (the first escalation in the file wins)".into()
                    }
                    ActionKind::Escalate => "another escalation came first and wins".into(),
                    ActionKind::Tokenise | ActionKind::Redact => {
                        "applies: transformations of different kinds combine".into()
                    }
                    ActionKind::Tag => "adds its cost-attribution label".into(),
                    ActionKind::Allow => "recorded; allow never overrides another rule".into(),
                    ActionKind::Hold => {
                        "withholds the reply's tool calls until a reviewer approves them".into()
                    }
                    ActionKind::StripTool => {
                        "removes the offered tools its condition holds for".into()
                    }
                },
            };
            (f, why)
        })
        .collect()
}

fn status_text(r: &RuleTrace<'_>) -> String {
    match &r.status {
        RuleStatus::Fired(e) => format!("MATCHED ({})", effect_text(*e)),
        RuleStatus::NotFired => "not matched".into(),
        RuleStatus::Undecided(u) => format!("undecided: {}", u.as_str()),
        RuleStatus::NotReached(why) => format!("not evaluated: {why}"),
    }
}

fn status_key(r: &RuleTrace<'_>) -> &'static str {
    match r.status {
        RuleStatus::Fired(_) => "fired",
        RuleStatus::NotFired => "not_fired",
        RuleStatus::Undecided(_) => "undecided",
        RuleStatus::NotReached(_) => "not_reached",
    }
}

fn rule_text(ex: &Explanation<'_>, r: &RuleTrace<'_>, out: &mut String) {
    let p = ex.policy;
    let mode = if r.monitor { ", monitor" } else { "" };
    let _ = writeln!(
        out,
        "  {} {} [{}, {}{mode}]: {}",
        r.id,
        quote(&r.rule.title),
        phase_str(r.rule.phase),
        match &r.rule.action {
            // The message is in the policy; the status is what the client sees.
            ir::Action::Deny { status, .. } => format!("deny {status}"),
            a => action_text(a, p),
        },
        status_text(r)
    );
    let Some(node) = &r.condition else { return };
    if matches!(node.expr, ir::Expr::Const(true)) {
        out.push_str("      (no condition: the rule applies to every request)\n");
        return;
    }
    if !node.children.is_empty() {
        let deciding: Vec<String> = node
            .deciding()
            .iter()
            .map(|n| expr_text(n.expr, p))
            .collect();
        let verb = match node.value {
            Some(true) => "held",
            Some(false) => "was false",
            None => "was not evaluated",
        };
        let _ = writeln!(out, "      decided by: {} {verb}", deciding.join(", "));
    }
    node_text(ex, node, 3, out);
}

fn node_text(ex: &Explanation<'_>, n: &Node<'_>, depth: usize, out: &mut String) {
    let p = ex.policy;
    let pad = "  ".repeat(depth);
    let value = match (n.value, n.undecided) {
        (_, Some(u)) => format!("undecided ({})", u.as_str()),
        (Some(true), None) => "true".into(),
        (Some(false), None) => "false".into(),
        (None, None) => "not evaluated (short-circuit)".into(),
    };
    let label = match n.expr {
        ir::Expr::And(_) => "all of".to_string(),
        ir::Expr::Or(_) => "any of".to_string(),
        ir::Expr::Not(inner) if !matches!(inner.as_ref(), ir::Expr::In { .. }) => "not".to_string(),
        e => expr_text(e, p),
    };
    let _ = writeln!(out, "{pad}{label} → {value}");
    for o in &n.operands {
        let _ = writeln!(
            out,
            "{pad}    {} = {}",
            operand_text(o.operand, p),
            shown_text(ex, &o.value, o.fresh_state)
        );
    }
    if matches!(n.expr, ir::Expr::Has { .. }) && n.value.is_some() {
        if n.findings.is_empty() {
            let _ = writeln!(out, "{pad}    found nothing");
        }
        for f in &n.findings {
            let _ = writeln!(
                out,
                "{pad}    {} at {} ({}×)",
                f.detector, f.location, f.count
            );
        }
    }
    for c in &n.children {
        node_text(ex, c, depth + 1, out);
    }
}

fn shown_text(ex: &Explanation<'_>, v: &Shown, fresh: bool) -> String {
    let p = ex.policy;
    match v {
        Shown::Str(s) => quote(s),
        Shown::Num(n) => n.to_string(),
        Shown::Bool(b) => b.to_string(),
        Shown::Money(m) => {
            let money = value_text(&ir::Value::Money(*m), p);
            if fresh {
                format!("{money} (fresh state: this request's estimate only)")
            } else {
                money
            }
        }
        Shown::Missing => "(missing)".into(),
        Shown::Withheld => "(present; value not shown)".into(),
        Shown::Unknown(u) => format!("(unknown: {})", u.as_str()),
    }
}

fn shown_json(v: &Shown) -> Value {
    match v {
        Shown::Str(s) => json!(s),
        Shown::Num(n) => json!(n),
        Shown::Bool(b) => json!(b),
        Shown::Money(m) => json!({ "micros": m }),
        Shown::Missing => json!({ "missing": true }),
        Shown::Withheld => json!({ "withheld": true }),
        Shown::Unknown(u) => json!({ "unknown": u.as_str() }),
    }
}

fn node_json(ex: &Explanation<'_>, n: &Node<'_>) -> Value {
    let p = ex.policy;
    json!({
        "condition": expr_text(n.expr, p),
        "value": n.value,
        "undecided": n.undecided.map(|u| u.as_str()),
        "operands": n.operands.iter().map(|o| json!({
            "operand": operand_text(o.operand, p),
            "value": shown_json(&o.value),
            "fresh_state": o.fresh_state,
        })).collect::<Vec<_>>(),
        "findings": n.findings.iter().map(|f| json!({
            "detector": f.detector, "location": f.location, "count": f.count,
        })).collect::<Vec<_>>(),
        "children": n.children.iter().map(|c| node_json(ex, c)).collect::<Vec<_>>(),
    })
}

fn rule_json(ex: &Explanation<'_>, r: &RuleTrace<'_>) -> Value {
    let p = ex.policy;
    let (effect, reason) = match &r.status {
        RuleStatus::Fired(e) => (Some(effect_key(*e)), None),
        RuleStatus::Undecided(u) => (None, Some(u.as_str().to_string())),
        RuleStatus::NotReached(why) => (None, Some(why.clone())),
        RuleStatus::NotFired => (None, None),
    };
    json!({
        "id": r.id,
        "clause": r.rule.clause,
        "title": r.rule.title,
        "phase": phase_str(r.rule.phase),
        "action": action_text(&r.rule.action, p),
        "mode": if r.monitor { "monitor" } else { "enforce" },
        "status": status_key(r),
        "effect": effect,
        "reason": reason,
        "decided_by": r.condition.as_ref().map(|n| n.deciding().iter()
            .map(|d| expr_text(d.expr, p)).collect::<Vec<_>>()),
        "condition": r.condition.as_ref().map(|n| node_json(ex, n)),
    })
}
