//! The language's words and what each one is in the engine's vocabulary
//! ([`writ_plugin::ir`]). One table per kind of word: the check validates names against it
//! (and suggests from it), the resolver turns names into the engine's values with it, so a
//! word is matched in exactly one place.

use writ_plugin::ir;

/// The fields a condition may read.
pub(crate) const FIELDS: &[(&str, ir::Field)] = &[
    ("model", ir::Field::Model),
    ("path", ir::Field::Path),
    ("method", ir::Field::Method),
    ("workflow", ir::Field::Workflow),
    ("team", ir::Field::Team),
    ("user", ir::Field::User),
    ("max_tokens", ir::Field::MaxTokens),
    ("stream", ir::Field::Stream),
    ("status", ir::Field::Status),
];

/// Who a budget (`spend(scope, …)`) is kept for.
pub(crate) const SCOPES: &[(&str, ir::Scope)] = &[
    ("team", ir::Scope::Team),
    ("user", ir::Scope::User),
    ("workflow", ir::Scope::Workflow),
];

/// The calendar windows of `spend(…, window)`.
pub(crate) const WINDOWS: &[(&str, ir::Window)] = &[
    ("hour", ir::Window::Hour),
    ("day", ir::Window::Day),
    ("month", ir::Window::Month),
];

/// The fixed windows of `tokens(…, window)` and `requests(…, window)`.
pub(crate) const RATE_WINDOWS: &[(&str, ir::RateWindow)] = &[
    ("minute", ir::RateWindow::Minute),
    ("hour", ir::RateWindow::Hour),
    ("day", ir::RateWindow::Day),
];

/// The rate-limit functions and what each counts.
pub(crate) const MEASURES: &[(&str, ir::Measure)] = &[
    ("tokens", ir::Measure::Tokens),
    ("requests", ir::Measure::Requests),
];

/// `enforcement …` in the header or a rule.
pub(crate) const ENFORCEMENTS: &[(&str, ir::Enforcement)] = &[
    ("enforce", ir::Enforcement::Enforce),
    ("monitor", ir::Enforcement::Monitor),
];

/// `on …` in a rule.
pub(crate) const PHASES: &[(&str, ir::Phase)] = &[
    ("request", ir::Phase::Request),
    ("response", ir::Phase::Response),
];

/// The failures a workflow's `fallback on …` may name.
pub(crate) const FAILURES: &[(&str, ir::Failure)] = &[
    ("5xx", ir::Failure::Status5xx),
    ("429", ir::Failure::Status429),
    ("timeout", ir::Failure::Timeout),
    ("connect", ir::Failure::Connect),
];

/// An oversight mode as written, before its options (`below`, `sample`) make it an
/// [`ir::Oversight`], which carries them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum OversightMode {
    Hitl,
    Hotl,
    Hic,
}

/// `oversight …` in a workflow.
pub(crate) const OVERSIGHT: &[(&str, OversightMode)] = &[
    ("HITL", OversightMode::Hitl),
    ("HOTL", OversightMode::Hotl),
    ("HIC", OversightMode::Hic),
];

/// Who `identify …` names in a workflow.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Who {
    Team,
    User,
}

/// `identify team …` / `identify user …`.
pub(crate) const IDENTITIES: &[(&str, Who)] = &[("team", Who::Team), ("user", Who::User)];

/// What a workflow's `assume …` states.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Assumption {
    /// The share of outputs a human verifies (a percentage or a fraction).
    VerificationRate,
    /// What one transaction may cost: AI spend plus the verification it needs (money).
    CostPerTransaction,
}

/// `assume verification_rate …` / `assume cost_per_transaction …`.
pub(crate) const ASSUMPTIONS: &[(&str, Assumption)] = &[
    ("verification_rate", Assumption::VerificationRate),
    ("cost_per_transaction", Assumption::CostPerTransaction),
];

/// A detector's declared `class`.
pub(crate) const DETECTOR_CLASSES: &[(&str, ir::DetectorClass)] = &[
    ("pii", ir::DetectorClass::Pii),
    ("secret", ir::DetectorClass::Secret),
];

/// What `name` stands for in `table`, if it is one of its words.
pub(crate) fn lookup<T: Clone>(table: &[(&str, T)], name: &str) -> Option<T> {
    table
        .iter()
        .find(|(word, _)| *word == name)
        .map(|(_, v)| v.clone())
}

/// The words of a table, for suggestions.
pub(crate) fn words<'a, T>(table: &'a [(&'a str, T)]) -> impl Iterator<Item = &'a str> + 'a {
    table.iter().map(|(word, _)| *word)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Each of the engine's values has exactly one word, and no word means two things.
    fn one_word_each<T: PartialEq + std::fmt::Debug>(table: &[(&str, T)], values: &[T]) {
        for v in values {
            let n = table.iter().filter(|(_, x)| x == v).count();
            assert_eq!(n, 1, "{v:?} has {n} words");
        }
        let mut seen: Vec<&str> = words(table).collect();
        seen.sort_unstable();
        seen.dedup();
        assert_eq!(seen.len(), table.len(), "a word is listed twice");
    }

    #[test]
    fn the_tables_cover_the_engine_vocabulary() {
        one_word_each(
            SCOPES,
            &[ir::Scope::Workflow, ir::Scope::Team, ir::Scope::User],
        );
        one_word_each(
            WINDOWS,
            &[ir::Window::Hour, ir::Window::Day, ir::Window::Month],
        );
        one_word_each(
            RATE_WINDOWS,
            &[
                ir::RateWindow::Minute,
                ir::RateWindow::Hour,
                ir::RateWindow::Day,
            ],
        );
        one_word_each(MEASURES, &[ir::Measure::Tokens, ir::Measure::Requests]);
        one_word_each(
            ENFORCEMENTS,
            &[ir::Enforcement::Enforce, ir::Enforcement::Monitor],
        );
        one_word_each(PHASES, &[ir::Phase::Request, ir::Phase::Response]);
        one_word_each(
            OVERSIGHT,
            &[OversightMode::Hitl, OversightMode::Hotl, OversightMode::Hic],
        );
        one_word_each(IDENTITIES, &[Who::Team, Who::User]);
        one_word_each(
            ASSUMPTIONS,
            &[Assumption::VerificationRate, Assumption::CostPerTransaction],
        );
        one_word_each(
            DETECTOR_CLASSES,
            &[ir::DetectorClass::Pii, ir::DetectorClass::Secret],
        );
        // Header fields are written `header "…"`, not as words.
        one_word_each(
            FIELDS,
            &[
                ir::Field::Model,
                ir::Field::Path,
                ir::Field::Method,
                ir::Field::Status,
                ir::Field::Workflow,
                ir::Field::Team,
                ir::Field::User,
                ir::Field::MaxTokens,
                ir::Field::Stream,
            ],
        );
        assert_eq!(lookup(FIELDS, "max_tokens"), Some(ir::Field::MaxTokens));
        assert_eq!(lookup(FIELDS, "prompt"), None);
    }
}
