//! A workflow's `rollout { … }` block: every field is one the pack has
//! ([`crate::rollout::FIELDS`]), given once, with a value of its shape. Which fields are
//! missing is not the check's business: the pack is optional for `writ check` and complete
//! only for a passing `writ review`.

use crate::ast::*;
use crate::diag::{Diagnostic, codes};
use crate::rollout::{FIELDS, Kind, PHASES, field_named, is_date};

use super::suggest::did_you_mean;

/// Checks the fields of one `rollout` block.
pub(super) fn check(fields: &[Node<RolloutField>], diags: &mut Vec<Diagnostic>) {
    let mut seen: Vec<(&str, Span)> = Vec::new();
    for f in fields {
        let key = f.node.key.node.as_str();
        let Some(field) = field_named(key) else {
            diags.push(
                Diagnostic::new(
                    codes::UNKNOWN_ROLLOUT_FIELD,
                    format!("unknown rollout-pack field `{key}`"),
                    f.node.key.span,
                    "not a field of the rollout pack",
                )
                .maybe_help(did_you_mean(key, FIELDS.iter().map(|f| f.name))),
            );
            continue;
        };
        if let Some((_, first)) = seen.iter().find(|(n, _)| *n == key) {
            diags.push(
                Diagnostic::new(
                    codes::DUPLICATE_STATEMENT,
                    format!("`{key}` is given twice"),
                    f.span,
                    "second one here",
                )
                .with_label(*first, "first given here")
                .help("keep one"),
            );
            continue;
        }
        seen.push((key, f.span));
        if let Some(why) = wrong_shape(field.kind, &f.node.value.node) {
            diags.push(
                Diagnostic::new(
                    codes::BAD_ROLLOUT_VALUE,
                    format!("`{key}` {why}"),
                    f.node.value.span,
                    format!("expected {}", expected(field.kind)),
                )
                .help(format!("`{key}` is {}", field.what)),
            );
        }
    }
}

fn expected(kind: Kind) -> String {
    match kind {
        Kind::Text => "a string".to_string(),
        Kind::List => "a list of strings".to_string(),
        Kind::Phase => format!("one of {}", words(PHASES)),
        Kind::Date => "a date \"YYYY-MM-DD\"".to_string(),
    }
}

fn words(ws: &[&str]) -> String {
    ws.iter()
        .map(|w| format!("`{w}`"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Why `value` does not fit `kind`, if it does not.
fn wrong_shape(kind: Kind, value: &RolloutValue) -> Option<String> {
    match (kind, value) {
        (Kind::Text, RolloutValue::Text(t)) if t.trim().is_empty() => Some("is empty".into()),
        (Kind::Text, RolloutValue::Text(_)) => None,
        (Kind::List, RolloutValue::List(items)) => {
            if items.is_empty() {
                return Some("is an empty list".into());
            }
            items.iter().find_map(|i| match &i.node {
                Lit::Str(s) if s.trim().is_empty() => Some("lists an empty string".into()),
                Lit::Str(_) => None,
                _ => Some("lists something that is not a string".into()),
            })
        }
        (Kind::Phase, RolloutValue::Word(w)) if PHASES.contains(&w.as_str()) => None,
        (Kind::Phase, RolloutValue::Word(w)) => Some(format!(
            "is not a rollout phase: `{w}`{}",
            did_you_mean(w, PHASES.iter().copied())
                .map(|s| format!(" ({s})"))
                .unwrap_or_default()
        )),
        (Kind::Date, RolloutValue::Text(t)) if is_date(t) => None,
        (Kind::Date, RolloutValue::Text(t)) => Some(format!("is not a date: \"{t}\"")),
        _ => Some("has a value of the wrong shape".into()),
    }
}
