//! The rollout pack of a workflow (issue 15): the facts a production readiness review asks
//! for (purpose, owners, retention, phase, fallback, …), written in the policy as
//! `rollout { … }` inside a `workflow`. *If you can't fill this pack for a workflow, you're
//! not ready.*
//!
//! The pack is metadata for people and for `writ review`: the engine does not need it, so it
//! stays out of the artifact's IR and travels in [`crate::Compiled::rollout`]. Every field is
//! optional for `writ check`; `writ review` fails a workflow whose pack misses a required one.
//! [`FIELDS`] is the one list of field names: the check validates against it, the review
//! lists what is missing from it, and `writ review --template` prints it.

use std::collections::BTreeMap;

use serde::Serialize;

/// What a field's value must be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A string: `purpose "…"`.
    Text,
    /// A list of strings: `hard_stops ["…", "…"]`.
    List,
    /// One of the rollout phases, as a word: `phase beta`.
    Phase,
    /// A date `"YYYY-MM-DD"`.
    Date,
}

/// One field of the pack.
#[derive(Debug, Clone, Copy)]
pub struct Field {
    /// The word written in the policy.
    pub name: &'static str,
    pub kind: Kind,
    /// What it asks for, in the words of the pack.
    pub what: &'static str,
    /// An example value, in the policy's syntax, for the template.
    pub example: &'static str,
}

const fn field(name: &'static str, kind: Kind, what: &'static str, example: &'static str) -> Field {
    Field {
        name,
        kind,
        what,
        example,
    }
}

/// Every field of the pack, in the order the template prints them. All are required for a
/// passing review, except `next_gate` once the phase is `default_on` (there is no next
/// phase).
pub const FIELDS: &[Field] = &[
    field("purpose", Kind::Text, "what the workflow is for", "\"…\""),
    field("primary_user", Kind::Text, "who uses its output", "\"…\""),
    field("trigger", Kind::Text, "what starts it", "\"…\""),
    field("output", Kind::Text, "what it produces", "\"…\""),
    field(
        "review_point",
        Kind::Text,
        "the human-in-the-loop point: where and when a human reviews",
        "\"…\"",
    ),
    field("hard_stops", Kind::List, "what it must never do", "[\"…\"]"),
    field(
        "dri",
        Kind::Text,
        "the single directly responsible individual",
        "\"…\"",
    ),
    field("platform_owner", Kind::Text, "the platform owner", "\"…\""),
    field("security_owner", Kind::Text, "the security owner", "\"…\""),
    field("data_owner", Kind::Text, "the data owner", "\"…\""),
    field("on_call", Kind::Text, "who is on call for it", "\"…\""),
    field(
        "redaction",
        Kind::Text,
        "what is redacted or tokenised before it leaves",
        "\"…\"",
    ),
    field(
        "retention",
        Kind::Text,
        "how long records are kept",
        "\"…\"",
    ),
    field(
        "audit_log",
        Kind::Text,
        "where the audit log lives",
        "\"…\"",
    ),
    field("eval_set", Kind::Text, "the evaluation set", "\"…\""),
    field(
        "release_gate",
        Kind::Text,
        "what a release must pass",
        "\"…\"",
    ),
    field(
        "phase",
        Kind::Phase,
        "the rollout phase: dogfood, beta or default_on",
        "dogfood",
    ),
    field(
        "next_gate",
        Kind::Text,
        "the gate to the next phase",
        "\"…\"",
    ),
    field(
        "approved_models",
        Kind::List,
        "the models it may use",
        "[\"…\"]",
    ),
    field("routing", Kind::Text, "how a model is chosen", "\"…\""),
    field(
        "fallback",
        Kind::Text,
        "what happens when a provider fails",
        "\"…\"",
    ),
    field(
        "incident_actions",
        Kind::List,
        "what to do in an incident",
        "[\"…\"]",
    ),
    field("go_live", Kind::Date, "the go-live date", "\"YYYY-MM-DD\""),
];

/// The rollout phases, in order.
pub const PHASES: &[&str] = &["dogfood", "beta", "default_on"];

/// The field called `name`, if the pack has one.
pub fn field_named(name: &str) -> Option<&'static Field> {
    FIELDS.iter().find(|f| f.name == name)
}

/// A checked field value.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(untagged)]
pub enum Value {
    Text(String),
    List(Vec<String>),
}

impl Value {
    /// The value as one line of text (a list joined with `; `).
    pub fn text(&self) -> String {
        match self {
            Value::Text(t) => t.clone(),
            Value::List(items) => items.join("; "),
        }
    }
}

/// One workflow's rollout pack as the policy states it (fields it does not state are
/// absent).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Pack {
    pub workflow: String,
    pub fields: BTreeMap<String, Value>,
}

impl Pack {
    /// A field's value as text, when given.
    pub fn get(&self, name: &str) -> Option<String> {
        self.fields.get(name).map(Value::text)
    }

    /// The required fields the pack does not state, in [`FIELDS`] order.
    pub fn missing(&self) -> Vec<&'static str> {
        let last_phase = self.get("phase").as_deref() == PHASES.last().copied();
        FIELDS
            .iter()
            .filter(|f| !(f.name == "next_gate" && last_phase))
            .filter(|f| !self.fields.contains_key(f.name))
            .map(|f| f.name)
            .collect()
    }
}

/// Whether `text` is a calendar date `YYYY-MM-DD` (proleptic Gregorian).
pub fn is_date(text: &str) -> bool {
    let parts: Vec<&str> = text.split('-').collect();
    let [y, m, d] = parts.as_slice() else {
        return false;
    };
    if y.len() != 4 || m.len() != 2 || d.len() != 2 {
        return false;
    }
    let (Ok(y), Ok(m), Ok(d)) = (y.parse::<u32>(), m.parse::<u32>(), d.parse::<u32>()) else {
        return false;
    };
    let leap = (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
    let days = match m {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        2 if leap => 29,
        2 => 28,
        _ => return false,
    };
    (1..=days).contains(&d)
}

/// The template `writ review --template` prints: a `rollout { … }` block for `workflow`
/// in the policy's own syntax, each field with what it asks for.
pub fn template(workflow: &str) -> String {
    let width = FIELDS.iter().map(|f| f.name.len()).max().unwrap_or(0);
    let mut out = format!(
        "# The rollout pack of workflow `{workflow}`: paste it into `workflow \"{workflow}\" {{ … }}`\n# and fill every field. If you can't fill this pack for a workflow, you're not ready.\n  rollout {{\n"
    );
    for f in FIELDS {
        out.push_str(&format!(
            "    {:width$} {}  # {}\n",
            f.name, f.example, f.what
        ));
    }
    out.push_str("  }\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_are_calendar_dates() {
        assert!(is_date("2026-12-06"));
        assert!(is_date("2028-02-29"));
        assert!(!is_date("2026-02-29"));
        assert!(!is_date("2026-13-01"));
        assert!(!is_date("26-12-06"));
        assert!(!is_date("next week"));
    }

    #[test]
    fn the_last_phase_needs_no_next_gate() {
        let mut p = Pack::default();
        assert_eq!(p.missing().len(), FIELDS.len());
        p.fields
            .insert("phase".into(), Value::Text("default_on".into()));
        assert!(!p.missing().contains(&"next_gate"));
        p.fields.insert("phase".into(), Value::Text("beta".into()));
        assert!(p.missing().contains(&"next_gate"));
    }

    #[test]
    fn every_field_is_named_once() {
        let mut names: Vec<&str> = FIELDS.iter().map(|f| f.name).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), FIELDS.len());
    }
}
