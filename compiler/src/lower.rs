//! The resolved tree ([`Checked`]) → the engine's IR ([`writ_plugin::ir`]) and the
//! manifest's source map. Everything was resolved by the check (names to enums, detectors
//! to ids, money to micros, patterns to DFAs); lowering only places the policy in its
//! source: the source's hash and each rule's and manual clause's line. It is total: a
//! checked policy always lowers, so it returns no error.
//!
//! Output depends only on the source (no hash-map iteration order), so building twice gives
//! the same bytes.

use sha2::{Digest, Sha256};
use writ_plugin::ir;

use crate::diag::Lines;
use crate::resolved::Checked;
use crate::{Compiled, ManualClause, RuleInfo};

/// Lowers a resolved policy, written as `source`.
pub(crate) fn lower(checked: Checked, source: &str) -> Compiled {
    let lines = Lines::new(source);
    let mut rules = Vec::with_capacity(checked.rules.len());
    let mut rule_info = Vec::with_capacity(checked.rules.len());
    for r in checked.rules {
        let (line, column) = lines.line_col(r.span.start);
        rule_info.push(RuleInfo {
            clause: r.clause.clone(),
            title: r.title.clone(),
            line,
            column,
            start: r.span.start,
            end: r.span.end,
        });
        rules.push(ir::Rule {
            clause: r.clause,
            title: r.title,
            phase: r.phase,
            condition: r.condition,
            action: r.action,
            enforcement: r.enforcement,
            alert_at_percent: r.alert_at_percent,
            line,
        });
    }
    let manual = checked
        .manual
        .into_iter()
        .map(|m| ManualClause {
            line: lines.line_col(m.span.start).0,
            clause: m.clause,
            title: m.title,
            owner: m.owner,
            reason: m.reason,
        })
        .collect();
    Compiled {
        policy: ir::Policy {
            name: checked.name,
            version: checked.version,
            source_sha256: hex(&Sha256::digest(source.as_bytes())),
            currency: checked.currency,
            enforcement: checked.enforcement,
            workflows: checked.workflows,
            prices: checked.prices,
            detectors: checked.detectors,
            rules,
            kill_switch: checked.kill_switch,
        },
        rule_info,
        manual,
        owner: checked.owner,
        implements: checked.implements,
        rollout: checked.rollout,
        warnings: crate::Diagnostics::default(),
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use crate::resolved::micros;

    #[test]
    fn money_is_exact() {
        assert_eq!(micros("0.075"), Some(75_000));
        assert_eq!(micros("5000"), Some(5_000_000_000));
        assert_eq!(micros("0.1234567"), None);
        assert_eq!(micros("99999999999999999999"), None);
    }
}
