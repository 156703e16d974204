//! Every enforcement-relevant difference between two versions of a policy, for `writ diff`
//! and for the version discipline of `writ build` (enforcement may not change while the
//! version stays): rules ([`RuleChange`], over [`RuleSummary`], which is also stored in
//! every manifest) and everything around them ([`SettingChange`]: workflows, prices,
//! detectors, the kill switch, policy-wide defaults, rule alerts).

use serde::{Deserialize, Serialize};
use writ_plugin::ir;

/// What enforcement-relevant facts a rule has, as text that reads like the source.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RuleSummary {
    pub clause: String,
    pub title: String,
    pub phase: String,
    pub condition: String,
    pub action: String,
    pub enforcement: String,
}

/// One rule-level change.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "change", rename_all = "snake_case")]
pub enum RuleChange {
    Added {
        rule: RuleSummary,
    },
    Removed {
        rule: RuleSummary,
    },
    Changed {
        old: RuleSummary,
        new: RuleSummary,
        fields: Vec<String>,
    },
}

/// Summaries of every rule, in source order.
pub fn summarize(policy: &ir::Policy) -> Vec<RuleSummary> {
    policy
        .rules
        .iter()
        .map(|r| RuleSummary {
            clause: r.clause.clone(),
            title: r.title.clone(),
            phase: match r.phase {
                ir::Phase::Request => "request".into(),
                ir::Phase::Response => "response".into(),
            },
            condition: expr_text(&r.condition, policy),
            action: action_text(&r.action, policy),
            enforcement: match r.enforcement {
                ir::Enforcement::Enforce => "enforce".into(),
                ir::Enforcement::Monitor => "monitor".into(),
            },
        })
        .collect()
}

/// Rules added, removed and changed, matched by clause id and title.
pub fn diff(old: &[RuleSummary], new: &[RuleSummary]) -> Vec<RuleChange> {
    let key = |r: &RuleSummary| (r.clause.clone(), r.title.clone());
    let mut changes = Vec::new();
    for o in old {
        match new.iter().find(|n| key(n) == key(o)) {
            None => changes.push(RuleChange::Removed { rule: o.clone() }),
            Some(n) => {
                let mut fields = Vec::new();
                if o.phase != n.phase {
                    fields.push("phase".to_string());
                }
                if o.condition != n.condition {
                    fields.push("condition".to_string());
                }
                if o.action != n.action {
                    fields.push("action".to_string());
                }
                if o.enforcement != n.enforcement {
                    fields.push("enforcement".to_string());
                }
                if !fields.is_empty() {
                    changes.push(RuleChange::Changed {
                        old: o.clone(),
                        new: n.clone(),
                        fields,
                    });
                }
            }
        }
    }
    for n in new {
        if !old.iter().any(|o| key(o) == key(n)) {
            changes.push(RuleChange::Added { rule: n.clone() });
        }
    }
    changes
}

/// One change outside the rules' own text, old → new (`None`: absent on that side).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SettingChange {
    /// What changed: `policy`, `workflow "name"`, `price "model"`, `detector "name"`,
    /// `kill_switch`, `rule CLAUSE "title"`.
    pub item: String,
    /// The field of it: `match`, `oversight`, `assume verification_rate`, `input`, …
    pub field: String,
    pub old: Option<String>,
    pub new: Option<String>,
}

/// The enforcement-relevant settings of a policy, as (item, field) → text that reads like
/// the source. Two policies enforce the same settings exactly when these maps are equal.
fn settings(policy: &ir::Policy) -> Vec<((String, String), String)> {
    let mut out: Vec<((String, String), String)> = Vec::new();
    let mut put = |item: &str, field: &str, value: String| {
        out.push(((item.to_string(), field.to_string()), value));
    };
    put("policy", "currency", policy.currency.clone());
    put(
        "policy",
        "enforcement",
        format!("{:?}", policy.enforcement).to_lowercase(),
    );
    put(
        "policy",
        "workflow order",
        policy
            .workflows
            .iter()
            .map(|w| quote(&w.name))
            .collect::<Vec<_>>()
            .join(", "),
    );
    for w in &policy.workflows {
        let item = format!("workflow {}", quote(&w.name));
        put(&item, "match", expr_text(&w.matcher, policy));
        put(
            &item,
            "oversight",
            match &w.oversight {
                ir::Oversight::Hitl => "HITL".to_string(),
                ir::Oversight::Hotl { threshold } => format!("HOTL below {threshold:.2}"),
                ir::Oversight::Hic { sample_rate } => {
                    format!("HIC sample {}%", percent(*sample_rate))
                }
            },
        );
        if let Some(rate) = w.assumed_verification_rate {
            put(
                &item,
                "assume verification_rate",
                format!("{}%", percent(rate)),
            );
        }
        let bc = &w.business_case;
        for (field, amount) in [
            ("assume cost_per_transaction", bc.cost_per_transaction),
            ("review_cost", bc.review_cost),
            ("manual_cost", bc.manual_cost),
        ] {
            if let Some(m) = amount {
                put(&item, field, value_text(&ir::Value::Money(m), policy));
            }
        }
        for (field, id) in [("identify team", &w.team), ("identify user", &w.user)] {
            if let Some(id) = id {
                let trusted = if id.trusted { "trusted " } else { "" };
                put(
                    &item,
                    field,
                    format!("by {trusted}header {}", quote(&id.header)),
                );
            }
        }
        if !w.scan_headers.is_empty() {
            let names: Vec<String> = w.scan_headers.iter().map(|h| quote(h)).collect();
            put(&item, "scan headers", format!("[{}]", names.join(", ")));
        }
        if w.scan_query {
            put(&item, "scan query", "yes".into());
        }
        // Kill points are keyed by position: two may measure the same thing over
        // different windows, and their text is the canonical statement.
        for (i, kp) in w.kill_points.iter().enumerate() {
            let stop = if kp.stop { " then stop" } else { "" };
            let text = format!("{} after {} requests{stop}", kp.text, kp.min_requests);
            put(&item, &format!("kill_point {}", i + 1), text);
        }
        if let Some(rs) = &w.review_signals {
            put(&item, "review_signals", review_signals_text(rs));
        }
        if w.handoff_output {
            put(&item, "handoff includes", "output".into());
        }
        if let Some(fb) = &w.fallback {
            put(&item, "fallback", fallback_text(fb));
        }
    }
    let money = |m: ir::Micros| value_text(&ir::Value::Money(m), policy);
    for p in &policy.prices {
        let item = format!("price {}", quote(&p.model));
        put(
            &item,
            "input",
            format!("{} per 1M tokens", money(p.input_per_mtok)),
        );
        put(
            &item,
            "output",
            format!("{} per 1M tokens", money(p.output_per_mtok)),
        );
        if let Some(c) = p.cached_input_per_mtok {
            put(&item, "cached", format!("{} per 1M tokens", money(c)));
        }
    }
    for d in &policy.detectors {
        let item = format!("detector {}", quote(&d.name));
        let kind = match &d.kind {
            ir::DetectorKind::Builtin(name) => format!("built-in {name}"),
            ir::DetectorKind::Custom(c) => match &c.validator {
                Some(v) => format!("regex {} validate {v}", quote(&c.pattern)),
                None => format!("regex {}", quote(&c.pattern)),
            },
        };
        put(&item, "kind", kind);
        put(&item, "class", format!("{:?}", d.class).to_lowercase());
    }
    if let Some(ks) = &policy.kill_switch {
        put(
            "kill_switch",
            "clause",
            ks.clause.clone().unwrap_or_default(),
        );
        put("kill_switch", "admin path", quote(&ks.admin_path));
        put("kill_switch", "token sha256", ks.token_sha256.clone());
    }
    for r in &policy.rules {
        if let Some(at) = r.alert_at_percent {
            let item = format!("rule {} {}", r.clause, quote(&r.title));
            put(&item, "alert", format!("at {at}%"));
        }
    }
    out
}

/// `review_signals` as the language writes it.
fn review_signals_text(rs: &ir::ReviewSignals) -> String {
    let mut signals = Vec::new();
    if let Some(secs) = rs.median_review_secs_below {
        signals.push(format!("median_review_time < {secs}s"));
    }
    if let Some(rate) = rs.approval_rate_above {
        signals.push(format!("approval_rate > {}%", percent(rate)));
    }
    if let Some(share) = rs.reviewer_share_above {
        signals.push(format!("reviewer_share > {}%", percent(share)));
    }
    format!(
        "after {} reviews {{ {} }}",
        rs.min_reviews,
        signals.join(", ")
    )
}

/// A workflow's `fallback` as the language writes it.
fn fallback_text(fb: &ir::Fallback) -> String {
    let on: Vec<&str> = fb.on.iter().map(|f| f.as_str()).collect();
    let steps: Vec<String> = fb
        .steps
        .iter()
        .map(|step| match step {
            ir::FallbackStep::Model(m) => format!("model {}", quote(m)),
            ir::FallbackStep::Cluster(c) => format!("cluster {}", quote(c)),
            ir::FallbackStep::Reply { status, message } => {
                format!("reply {status} {}", quote(message))
            }
            ir::FallbackStep::Human { queue } => format!("human {}", quote(queue)),
        })
        .collect();
    format!("on {} to {}", on.join(", "), steps.join(" then "))
}

/// A fraction 0..=1 as a percentage without float noise (`0.1` → `10`).
fn percent(fraction: f64) -> String {
    let p = (fraction * 1e6).round() / 1e4;
    format!("{p}")
}

/// Settings changed between `old` and `new`, in the order of `old` then what `new` adds.
pub fn diff_settings(old: &ir::Policy, new: &ir::Policy) -> Vec<SettingChange> {
    let (a, b) = (settings(old), settings(new));
    let find = |m: &[((String, String), String)], k: &(String, String)| {
        m.iter().find(|(key, _)| key == k).map(|(_, v)| v.clone())
    };
    let mut changes = Vec::new();
    for (key, value) in &a {
        let other = find(&b, key);
        if other.as_deref() != Some(value.as_str()) {
            changes.push(SettingChange {
                item: key.0.clone(),
                field: key.1.clone(),
                old: Some(value.clone()),
                new: other,
            });
        }
    }
    for (key, value) in &b {
        if find(&a, key).is_none() {
            changes.push(SettingChange {
                item: key.0.clone(),
                field: key.1.clone(),
                old: None,
                new: Some(value.clone()),
            });
        }
    }
    changes
}

/// Renders setting changes for people, one line each.
pub fn render_settings(changes: &[SettingChange]) -> String {
    use std::fmt::Write;
    let mut out = String::new();
    for c in changes {
        let side = |v: &Option<String>| v.clone().unwrap_or_else(|| "(none)".into());
        let mark = match (&c.old, &c.new) {
            (None, _) => '+',
            (_, None) => '-',
            _ => '~',
        };
        let _ = writeln!(
            out,
            "{mark} {} {}: {} → {}",
            c.item,
            c.field,
            side(&c.old),
            side(&c.new)
        );
    }
    out
}

/// Every enforcement change, rules first: what `writ diff` prints and what `writ build`'s
/// refusal names.
pub fn render_all(rules: &[RuleChange], settings: &[SettingChange]) -> String {
    if rules.is_empty() && settings.is_empty() {
        return "no enforcement changes\n".into();
    }
    let mut out = String::new();
    if !rules.is_empty() {
        out.push_str(&render(rules));
    }
    out.push_str(&render_settings(settings));
    out
}

/// Renders changes for people, one block per rule.
pub fn render(changes: &[RuleChange]) -> String {
    use std::fmt::Write;
    let mut out = String::new();
    for c in changes {
        match c {
            RuleChange::Added { rule } => {
                let _ = writeln!(out, "+ rule {} \"{}\"", rule.clause, rule.title);
                let _ = writeln!(
                    out,
                    "    on {} when {} then {} ({})",
                    rule.phase, rule.condition, rule.action, rule.enforcement
                );
            }
            RuleChange::Removed { rule } => {
                let _ = writeln!(out, "- rule {} \"{}\"", rule.clause, rule.title);
            }
            RuleChange::Changed { old, new, fields } => {
                let _ = writeln!(
                    out,
                    "~ rule {} \"{}\" ({} changed)",
                    new.clause,
                    new.title,
                    fields.join(", ")
                );
                for f in fields {
                    let (a, b) = match f.as_str() {
                        "phase" => (&old.phase, &new.phase),
                        "condition" => (&old.condition, &new.condition),
                        "action" => (&old.action, &new.action),
                        _ => (&old.enforcement, &new.enforcement),
                    };
                    let _ = writeln!(out, "    {f}: {a}\n    {:width$}→ {b}", "", width = f.len());
                }
            }
        }
    }
    if changes.is_empty() {
        out.push_str("no rule-level changes\n");
    }
    out
}

fn quote(s: &str) -> String {
    serde_json::to_string(s).unwrap_or_else(|_| format!("\"{s}\""))
}

fn detector_names(ids: &[u16], policy: &ir::Policy) -> String {
    ids.iter()
        .map(|&i| {
            policy
                .detectors
                .get(usize::from(i))
                .map(|d| d.name.clone())
                .unwrap_or_else(|| format!("#{i}"))
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// A constant printed as the language writes it (money in the policy's currency).
pub fn value_text(v: &ir::Value, policy: &ir::Policy) -> String {
    match v {
        ir::Value::Bool(b) => b.to_string(),
        ir::Value::Num(n) => n.to_string(),
        ir::Value::Money(m) => format!("{} {}", *m as f64 / 1e6, policy.currency),
        ir::Value::Str(s) => quote(s),
    }
}

/// An operand printed as the language writes it.
pub fn operand_text(o: &ir::Operand, policy: &ir::Policy) -> String {
    match o {
        ir::Operand::Const(v) => value_text(v, policy),
        ir::Operand::Field(f) => match f {
            ir::Field::Model => "model".into(),
            ir::Field::Path => "path".into(),
            ir::Field::Method => "method".into(),
            ir::Field::Header(h) => format!("header {}", quote(h)),
            ir::Field::ResponseHeader(h) => format!("response header {}", quote(h)),
            ir::Field::Status => "status".into(),
            ir::Field::Workflow => "workflow".into(),
            ir::Field::Team => "team".into(),
            ir::Field::User => "user".into(),
            ir::Field::MaxTokens => "max_tokens".into(),
            ir::Field::Stream => "stream".into(),
            ir::Field::ToolCallName => "tool_call.name".into(),
            ir::Field::ToolArgument(p) => format!("tool_call.argument {}", quote(p)),
            ir::Field::ToolName => "tool.name".into(),
        },
        ir::Operand::Spend { scope, window } => format!(
            "spend({}, {})",
            format!("{scope:?}").to_lowercase(),
            format!("{window:?}").to_lowercase()
        ),
        ir::Operand::Rate {
            measure,
            scope,
            window,
        } => format!(
            "{}({}, {})",
            writ_plugin::rate_limit::measure_name(*measure),
            writ_plugin::spend::scope_name(*scope),
            writ_plugin::rate_limit::window_name(*window)
        ),
        ir::Operand::Confidence(ir::ConfidenceSource::Header(h)) => {
            format!("confidence(header {})", quote(h))
        }
        ir::Operand::Confidence(ir::ConfidenceSource::JsonPointer(p)) => {
            format!("confidence(json {})", quote(p))
        }
    }
}

/// The IR condition printed in the language's own syntax, fully parenthesised.
pub fn expr_text(e: &ir::Expr, policy: &ir::Policy) -> String {
    match e {
        ir::Expr::Const(b) => b.to_string(),
        ir::Expr::And(v) => join(v, " and ", policy),
        ir::Expr::Or(v) => join(v, " or ", policy),
        ir::Expr::Not(inner) => match inner.as_ref() {
            ir::Expr::In { operand, set } => in_text(operand, set, "not in", policy),
            other => format!("not {}", expr_text(other, policy)),
        },
        ir::Expr::Compare { left, op, right } => {
            let op = match op {
                ir::CmpOp::Eq => "==",
                ir::CmpOp::Ne => "!=",
                ir::CmpOp::Lt => "<",
                ir::CmpOp::Le => "<=",
                ir::CmpOp::Gt => ">",
                ir::CmpOp::Ge => ">=",
            };
            format!(
                "{} {op} {}",
                operand_text(left, policy),
                operand_text(right, policy)
            )
        }
        ir::Expr::In { operand, set } => in_text(operand, set, "in", policy),
        ir::Expr::Has { subject, detectors } => format!(
            "{} has ({})",
            match subject {
                ir::Text::Prompt => "prompt".to_string(),
                ir::Text::Response => "response".to_string(),
                ir::Text::Header(name) => format!("header {name:?}"),
                ir::Text::Query => "query".to_string(),
                ir::Text::ToolArguments => "tool_call.arguments".to_string(),
                ir::Text::ToolResults => "tool_result".to_string(),
            },
            detector_names(detectors, policy)
        ),
    }
}

fn in_text(operand: &ir::Operand, set: &[ir::Value], op: &str, policy: &ir::Policy) -> String {
    format!(
        "{} {op} [{}]",
        operand_text(operand, policy),
        set.iter()
            .map(|v| value_text(v, policy))
            .collect::<Vec<_>>()
            .join(", ")
    )
}

fn join(v: &[ir::Expr], sep: &str, policy: &ir::Policy) -> String {
    let parts: Vec<String> = v.iter().map(|e| expr_text(e, policy)).collect();
    format!("({})", parts.join(sep))
}

/// The IR action printed in the language's own syntax.
pub fn action_text(a: &ir::Action, policy: &ir::Policy) -> String {
    match a {
        ir::Action::Allow => "allow".into(),
        ir::Action::Deny { status, message } => format!("deny {status} {}", quote(message)),
        ir::Action::Redact { detectors } => {
            format!("redact ({})", detector_names(detectors, policy))
        }
        ir::Action::Tokenise { detectors } => {
            format!("tokenise ({})", detector_names(detectors, policy))
        }
        ir::Action::Route(ir::RouteTarget::Model(m)) => format!("route to {}", quote(m)),
        ir::Action::Route(ir::RouteTarget::CheapestOf(v)) => format!(
            "route to cheapest [{}]",
            v.iter().map(|m| quote(m)).collect::<Vec<_>>().join(", ")
        ),
        ir::Action::Escalate { queue, reason } => {
            format!("escalate {} reason {}", quote(queue), quote(reason))
        }
        ir::Action::Tag { key, value } => format!("tag {} = {}", quote(key), quote(value)),
        ir::Action::Hold { queue, reason } => {
            format!("escalate {} reason {} hold", quote(queue), quote(reason))
        }
        ir::Action::StripTool => "strip tool".into(),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::panic)]
    use super::*;

    fn compiled(source: &str) -> ir::Policy {
        match writ_compiler::compile("t.policy", source) {
            Ok(c) => c.policy,
            Err(d) => panic!("{}", d.render("t.policy", source)),
        }
    }

    const BASE: &str = r#"policy "p" version "1.0.0" {
  owner "o@example.com"
  implements "ai-policy.md"
  currency EUR
}
workflow "a" {
  match header "x-w" == "a"
  oversight HIC sample 2%
  identify team by header "x-team"
}
kill_switch AIP-6.1 {
  admin path "/admin"
  token sha256 "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"
}
rule AIP-4.2 "Budget" {
  on request
  when spend(team, month) > 10 EUR
  then deny 429 "over"
  alert at 80%
}
"#;

    #[test]
    fn finds_setting_changes_outside_the_rules() {
        let old = compiled(BASE);
        assert!(diff_settings(&old, &old).is_empty());
        let edited = BASE
            .replace("sample 2%", "sample 5%")
            .replace("\"/admin\"", "\"/ops/admin\"")
            .replace("alert at 80%", "alert at 90%")
            .replace(
                "kill_switch",
                "workflow \"b\" {\n  match header \"x-w\" == \"b\"\n  oversight HITL\n}\nkill_switch",
            );
        let new = compiled(&edited);
        let text = render_settings(&diff_settings(&old, &new));
        for line in [
            "~ workflow \"a\" oversight: HIC sample 2% → HIC sample 5%",
            "~ kill_switch admin path: \"/admin\" → \"/ops/admin\"",
            "~ rule AIP-4.2 \"Budget\" alert: at 80% → at 90%",
            "~ policy workflow order: \"a\" → \"a\", \"b\"",
            "+ workflow \"b\" oversight: (none) → HITL",
        ] {
            assert!(text.contains(line), "missing `{line}` in:\n{text}");
        }
        let back = render_settings(&diff_settings(&new, &old));
        assert!(
            back.contains("- workflow \"b\" oversight: HITL → (none)"),
            "{back}"
        );
    }

    /// The operating model and the fallback of a workflow are settings too: a release that
    /// loosens a kill point or drops a rubber-stamp signal must show in the diff.
    #[test]
    fn finds_operating_model_and_fallback_changes() {
        let with = |kill: &str, signals: &str, extra: &str| {
            BASE.replace(
                "  identify team by header \"x-team\"\n",
                &format!(
                    "  identify team by header \"x-team\"\n  assume cost_per_transaction <= 1.10 EUR\n  review_cost 4.50 EUR\n{kill}{signals}{extra}"
                ),
            )
        };
        let old = compiled(&with(
            "  kill_point verification_rate > 30% over 7 days after 100 requests then stop\n",
            "  review_signals after 20 reviews { median_review_time < 30s, approval_rate > 98% }\n",
            "",
        ));
        let new = compiled(&with(
            "  kill_point verification_rate > 40% over 7 days after 100 requests then stop\n",
            "  review_signals after 20 reviews { approval_rate > 98% }\n",
            "  handoff includes output\n  fallback on 5xx, timeout to model \"gpt-4o-mini\" then reply 503 \"Later.\"\n",
        ));
        let text = render_settings(&diff_settings(&old, &new));
        for line in [
            "~ workflow \"a\" kill_point 1: verification_rate > 30% over 7 days after 100 requests then stop → verification_rate > 40% over 7 days after 100 requests then stop",
            "~ workflow \"a\" review_signals: after 20 reviews { median_review_time < 30s, approval_rate > 98% } → after 20 reviews { approval_rate > 98% }",
            "+ workflow \"a\" handoff includes: (none) → output",
            "+ workflow \"a\" fallback: (none) → on 5xx, timeout to model \"gpt-4o-mini\" then reply 503 \"Later.\"",
        ] {
            assert!(text.contains(line), "missing `{line}` in:\n{text}");
        }
    }

    fn summary(
        clause: &str,
        title: &str,
        condition: &str,
        action: &str,
        mode: &str,
    ) -> RuleSummary {
        RuleSummary {
            clause: clause.into(),
            title: title.into(),
            phase: "request".into(),
            condition: condition.into(),
            action: action.into(),
            enforcement: mode.into(),
        }
    }

    #[test]
    fn finds_added_removed_and_changed_rules() {
        let old = vec![
            summary(
                "A-1",
                "models",
                "model in [\"a\"]",
                "deny 403 \"no\"",
                "enforce",
            ),
            summary("A-2", "gone", "true", "allow", "enforce"),
            summary("A-3", "same", "true", "tag \"k\" = \"v\"", "enforce"),
        ];
        let new = vec![
            summary(
                "A-1",
                "models",
                "model in [\"a\", \"b\"]",
                "deny 403 \"no\"",
                "monitor",
            ),
            summary("A-3", "same", "true", "tag \"k\" = \"v\"", "enforce"),
            summary("A-4", "new", "true", "allow", "enforce"),
        ];
        let changes = diff(&old, &new);
        assert_eq!(changes.len(), 3);
        assert!(
            matches!(&changes[0], RuleChange::Changed { fields, .. } if fields == &["condition", "enforcement"])
        );
        assert!(matches!(&changes[1], RuleChange::Removed { rule } if rule.clause == "A-2"));
        assert!(matches!(&changes[2], RuleChange::Added { rule } if rule.clause == "A-4"));
        let text = render(&changes);
        assert!(text.contains("~ rule A-1 \"models\" (condition, enforcement changed)"));
        assert!(text.contains("- rule A-2"));
        assert!(text.contains("+ rule A-4"));
        assert_eq!(render(&diff(&new, &new)), "no rule-level changes\n");
        assert_eq!(render_all(&[], &[]), "no enforcement changes\n");
    }
}
