//! What the checker resolves once and lowering consumes: the resolved tree ([`Checked`]),
//! amounts as integer micros and custom detectors' patterns as ahead-of-time compiled
//! DFAs. A leaf module, so `check` and `lower` both depend on it and neither on the other.

use writ_plugin::ir;

use crate::ast::Span;

/// A decimal as millionths (`"0.075"` → 75 000), exactly; `None` with more than six
/// decimals or on overflow.
pub(crate) fn micros(text: &str) -> Option<i64> {
    let (int, frac) = text.split_once('.').unwrap_or((text, ""));
    if frac.len() > 6
        || int.is_empty()
        || !int.chars().chain(frac.chars()).all(|c| c.is_ascii_digit())
    {
        return None;
    }
    let whole: i64 = int.parse().ok()?;
    let mut f = frac.to_string();
    while f.len() < 6 {
        f.push('0');
    }
    let part: i64 = f.parse().ok()?;
    whole.checked_mul(1_000_000)?.checked_add(part)
}

/// The forward and reverse dense DFAs of one pattern (little-endian, padding stripped).
pub(crate) type Dfas = (Vec<u8>, Vec<u8>);

/// A checked policy with every name resolved into the engine's vocabulary
/// ([`writ_plugin::ir`]): fields, scopes, windows, actions, oversight modes and enforcement
/// as enums, detectors as their `u16` ids, money as micros, custom patterns as DFAs, header
/// names lower case. Built by the check once the file has no errors (`check::resolve`);
/// lowering only places it in its source (lines, hash), so it cannot fail.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Checked {
    pub name: String,
    pub version: String,
    pub owner: String,
    pub implements: String,
    pub currency: String,
    pub enforcement: ir::Enforcement,
    pub workflows: Vec<ir::Workflow>,
    pub prices: Vec<ir::Price>,
    /// Used built-ins sorted by name, then every custom detector in name order; a
    /// detector's id is its index here.
    pub detectors: Vec<ir::Detector>,
    pub rules: Vec<CheckedRule>,
    pub manual: Vec<CheckedManual>,
    pub kill_switch: Option<ir::KillSwitch>,
    /// Each workflow's rollout pack, in workflow order (metadata: not in the IR).
    pub rollout: Vec<crate::rollout::Pack>,
}

/// A resolved rule and where it stands in the source (lowering turns the span into the
/// rule's line for audits and coverage).
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct CheckedRule {
    pub clause: String,
    pub title: String,
    pub phase: ir::Phase,
    pub condition: ir::Expr,
    pub action: ir::Action,
    pub enforcement: ir::Enforcement,
    pub alert_at_percent: Option<u8>,
    /// The whole rule item.
    pub span: Span,
}

/// A `manual` clause with its statements gathered.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct CheckedManual {
    pub clause: String,
    pub title: String,
    pub owner: String,
    pub reason: String,
    pub span: Span,
}

/// Largest dense DFA (each direction) a custom detector may compile to.
pub(crate) const DFA_SIZE_LIMIT: usize = 1 << 20;

/// Why a custom detector's pattern did not compile.
#[derive(Clone)]
pub(crate) enum RegexError {
    Invalid(String),
    TooLarge,
}

/// Compiles a pattern ahead of time into forward and reverse dense DFAs (little-endian,
/// alignment padding stripped), bounded by [`DFA_SIZE_LIMIT`].
pub(crate) fn compile_regex(pattern: &str) -> Result<Dfas, RegexError> {
    #[cfg(feature = "fuzzing")]
    {
        dfa_cache::compile(pattern)
    }
    #[cfg(not(feature = "fuzzing"))]
    {
        build_regex(pattern)
    }
}

/// Fuzzing builds remember the DFAs of the last patterns they compiled: building one takes
/// milliseconds (the check and lowering each build it, for the source and its formatted
/// text), which would cap the policy fuzz target at a few hundred executions a second, and
/// the build is a pure function of the pattern, so a cached answer is the same answer.
#[cfg(feature = "fuzzing")]
mod dfa_cache {
    use std::cell::RefCell;
    use std::collections::HashMap;

    use super::RegexError;

    /// Patterns remembered before the cache starts over, bounding its memory.
    const MAX_PATTERNS: usize = 256;

    thread_local! {
        static CACHE: RefCell<HashMap<String, Result<super::Dfas, RegexError>>> = RefCell::new(HashMap::new());
    }

    pub(super) fn compile(pattern: &str) -> Result<super::Dfas, RegexError> {
        if let Some(hit) = CACHE.with(|c| c.borrow().get(pattern).cloned()) {
            return hit;
        }
        let built = super::build_regex(pattern);
        CACHE.with(|c| {
            let mut c = c.borrow_mut();
            if c.len() >= MAX_PATTERNS {
                c.clear();
            }
            c.insert(pattern.to_string(), built.clone());
        });
        built
    }
}

/// [`compile_regex`] without the fuzzing cache.
fn build_regex(pattern: &str) -> Result<Dfas, RegexError> {
    use regex_automata::dfa::{dense, regex::Regex};
    // Parse first so syntax errors are reported as such, not as size errors.
    if let Err(e) = regex_automata::util::syntax::parse(pattern) {
        return Err(RegexError::Invalid(e.to_string()));
    }
    let re = Regex::builder()
        // Bound the intermediate NFA too, so `a{1000000}` fails fast instead of
        // exhausting memory before the DFA limit is reached.
        .thompson(regex_automata::nfa::thompson::Config::new().nfa_size_limit(Some(DFA_SIZE_LIMIT)))
        .dense(
            dense::Config::new()
                .dfa_size_limit(Some(DFA_SIZE_LIMIT))
                .determinize_size_limit(Some(DFA_SIZE_LIMIT)),
        )
        .build(pattern)
        .map_err(|e| {
            // The build error's own text can be generic ("error building NFA"); the reason
            // is further down its source chain.
            let mut chain = vec![e.to_string()];
            let mut source = std::error::Error::source(&e);
            while let Some(inner) = source {
                chain.push(inner.to_string());
                source = inner.source();
            }
            let all = chain.join(": ");
            if all.contains("exceed") || all.contains("limit") || all.contains("too big") {
                RegexError::TooLarge
            } else {
                RegexError::Invalid(chain.last().cloned().unwrap_or(all))
            }
        })?;
    let strip =
        |(bytes, pad): (Vec<u8>, usize)| bytes.get(pad..).map(<[u8]>::to_vec).unwrap_or_default();
    Ok((
        strip(re.forward().to_bytes_little_endian()),
        strip(re.reverse().to_bytes_little_endian()),
    ))
}
