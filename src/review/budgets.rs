//! Q1's days of budget headroom: each enforced `spend(scope, window) > cap` rule held
//! against the spend the audit log shows in the window of its latest record, at that
//! window's burn rate so far.

use super::{Check, Evidence, Verdict, check, money};
use writ_plugin::audit::AuditRecord;

/// A spend cap a policy enforces, as `writ review` reads it.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct BudgetEvidence {
    /// The rule's clause id.
    pub clause: String,
    /// `team`, `user` or `workflow`.
    pub scope: String,
    /// `hour`, `day` or `month`.
    pub window: String,
    pub cap_micros: i64,
}

/// Seconds since the epoch of an RFC 3339 UTC time (`2026-12-01T10:00:00.000000Z`).
fn unix_secs(time: &str) -> Option<i64> {
    let days = super::dates::Date::parse(time)?.days_since_epoch();
    let clock = time.get(11..19)?;
    let mut parts = clock.split(':').map(|p| p.parse::<i64>().ok());
    let (h, m, s) = (parts.next()??, parts.next()??, parts.next()??);
    Some(days * 86_400 + h * 3_600 + m * 60 + s)
}

/// The window holding `time`: its start and end in seconds, and the time prefix every
/// record of the same window shares.
fn window_of(window: &str, time: &str) -> Option<(i64, i64, String)> {
    let now = unix_secs(time)?;
    match window {
        "hour" => Some((
            now - now % 3_600,
            now - now % 3_600 + 3_600,
            time.get(..13)?.into(),
        )),
        "day" => Some((
            now - now % 86_400,
            now - now % 86_400 + 86_400,
            time.get(..10)?.into(),
        )),
        "month" => {
            let (y, m) = (
                time.get(..4)?.parse::<i64>().ok()?,
                time.get(5..7)?.parse::<i64>().ok()?,
            );
            let (ny, nm) = if m == 12 { (y + 1, 1) } else { (y, m + 1) };
            let start = unix_secs(&format!("{y:04}-{m:02}-01T00:00:00"))?;
            let end = unix_secs(&format!("{ny:04}-{nm:02}-01T00:00:00"))?;
            Some((start, end, time.get(..7)?.into()))
        }
        _ => None,
    }
}

fn scope_value<'r>(r: &'r AuditRecord, scope: &str) -> Option<&'r str> {
    match scope {
        "team" => r.team.as_deref(),
        "user" => r.user.as_deref(),
        "workflow" => r.workflow.as_deref(),
        _ => None,
    }
}

/// `budget_headroom`: for every enforced cap and every scope value with spend in the
/// window of the policy's latest costed record, the days until the cap at the burn rate
/// so far. A cap reached, or one the burn rate reaches before its window ends, fails;
/// no caps, or no costed records: unknown.
pub fn headroom_check(evidence: &Evidence) -> Check {
    let mut lines = Vec::new();
    let mut failed = false;
    for p in &evidence.policies {
        let costed: Vec<&AuditRecord> = evidence
            .records
            .iter()
            .filter(|r| r.event == "request" && r.policy == p.name && r.cost_micros.is_some())
            .collect();
        let Some(latest) = costed.iter().map(|r| r.time.as_str()).max() else {
            continue;
        };
        for b in &p.budgets {
            let Some((start, end, prefix)) = window_of(&b.window, latest) else {
                continue;
            };
            let Some(now) = unix_secs(latest) else {
                continue;
            };
            let mut spent: std::collections::BTreeMap<&str, i64> = Default::default();
            for r in costed.iter().filter(|r| r.time.starts_with(&prefix)) {
                if let Some(v) = scope_value(r, &b.scope) {
                    *spent.entry(v).or_default() += r.cost_micros.unwrap_or(0);
                }
            }
            let elapsed_days = ((now - start).max(60)) as f64 / 86_400.0;
            let left_days = (end - now).max(0) as f64 / 86_400.0;
            for (value, micros) in spent {
                let burn = micros as f64 / elapsed_days;
                let head = (b.cap_micros - micros) as f64;
                let days = if burn > 0.0 {
                    head / burn
                } else {
                    f64::INFINITY
                };
                let over = micros >= b.cap_micros || days < left_days;
                failed |= over;
                lines.push(format!(
                    "{} spend({}, {}) cap {}: {} `{value}` spent {} in {prefix}, {} a day so far: {} of headroom, {:.1} days left in the window{}",
                    b.clause,
                    b.scope,
                    b.window,
                    money(b.cap_micros as f64, &p.currency),
                    b.scope,
                    money(micros as f64, &p.currency),
                    money((burn / 10_000.0).round() * 10_000.0, &p.currency),
                    if days.is_finite() { format!("{:.1} days", days.max(0.0)) } else { "unlimited".into() },
                    left_days,
                    if over { ": the cap is reached before the window ends" } else { "" }
                ));
            }
        }
    }
    if lines.is_empty() {
        let why = if evidence.policies.iter().all(|p| p.budgets.is_empty()) {
            "the policies enforce no spend caps"
        } else {
            "no request record in the window carries `cost_micros` for a capped scope"
        };
        return check("budget_headroom", Verdict::Unknown, why);
    }
    let verdict = if failed { Verdict::Fail } else { Verdict::Pass };
    check("budget_headroom", verdict, lines.join("; "))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "a test fails loudly on a bad fixture")]
    use super::*;
    use crate::review::{ChainEvidence, PolicyEvidence, dates};

    fn spend(team: &str, time: &str, micros: i64) -> AuditRecord {
        AuditRecord {
            event: "request".into(),
            time: time.into(),
            policy: "support".into(),
            team: Some(team.into()),
            cost_micros: Some(micros),
            ..AuditRecord::default()
        }
    }

    fn evidence(budgets: Vec<BudgetEvidence>, records: Vec<AuditRecord>) -> Evidence {
        Evidence {
            policies: vec![PolicyEvidence {
                name: "support".into(),
                version: "1.0.0".into(),
                path: "support.policy".into(),
                owner: String::new(),
                source_sha256: "s".into(),
                built_sha256: "b".into(),
                currency: "EUR".into(),
                manual_owners: Vec::new(),
                budgets,
            }],
            workflows: Vec::new(),
            artifacts: None,
            coverage: Err("no test file".into()),
            audit_file: "audit.jsonl".into(),
            chain: ChainEvidence {
                ok: true,
                records: records.len() as u64,
                detail: "head h".into(),
            },
            records,
            unparsed: 0,
            since: None,
            lookup: None,
            metrics: None,
            go_live: None,
            today: dates::Date::parse("2026-12-06").unwrap(),
        }
    }

    fn monthly(cap_eur: i64) -> Vec<BudgetEvidence> {
        vec![BudgetEvidence {
            clause: "AIP-4.2".into(),
            scope: "team".into(),
            window: "month".into(),
            cap_micros: cap_eur * 1_000_000,
        }]
    }

    #[test]
    fn a_burn_rate_that_reaches_the_cap_before_the_month_ends_fails() {
        // 30 EUR in the first 5.5 days of December: 5.45 EUR a day, 70 EUR left = 12.8 days,
        // 25.5 days left in the month.
        let records = vec![
            spend("billing", "2026-11-30T10:00:00.000000Z", 500_000_000),
            spend("billing", "2026-12-02T10:00:00.000000Z", 10_000_000),
            spend("billing", "2026-12-06T12:00:00.000000Z", 20_000_000),
        ];
        let c = headroom_check(&evidence(monthly(100), records));
        assert_eq!(c.verdict, Verdict::Fail, "{}", c.evidence);
        assert!(
            c.evidence
                .contains("spent 30.00 EUR in 2026-12, 5.45 EUR a day"),
            "{}",
            c.evidence
        );
        assert!(
            c.evidence.contains("12.8 days of headroom"),
            "{}",
            c.evidence
        );
        assert!(c.evidence.contains("25.5 days left"), "{}", c.evidence);
    }

    #[test]
    fn a_slow_burn_passes_and_no_caps_or_costs_are_unknown() {
        let records = vec![spend("billing", "2026-12-06T12:00:00.000000Z", 1_000_000)];
        let c = headroom_check(&evidence(monthly(100), records.clone()));
        assert_eq!(c.verdict, Verdict::Pass, "{}", c.evidence);
        let c = headroom_check(&evidence(Vec::new(), records));
        assert_eq!(c.verdict, Verdict::Unknown);
        assert_eq!(c.evidence, "the policies enforce no spend caps");
        let c = headroom_check(&evidence(monthly(100), Vec::new()));
        assert_eq!(c.verdict, Verdict::Unknown);
    }

    #[test]
    fn a_cap_already_reached_fails_and_windows_are_calendar_ones() {
        let records = vec![spend("billing", "2026-12-06T12:00:00.000000Z", 100_000_000)];
        let c = headroom_check(&evidence(monthly(100), records));
        assert_eq!(c.verdict, Verdict::Fail, "{}", c.evidence);
        assert_eq!(
            window_of("month", "2026-12-06T12:00:00.000000Z"),
            Some((
                unix_secs("2026-12-01T00:00:00Z").unwrap(),
                unix_secs("2027-01-01T00:00:00Z").unwrap(),
                "2026-12".into()
            ))
        );
        assert_eq!(
            window_of("day", "2026-12-06T12:30:00Z").map(|w| w.1 - w.0),
            Some(86_400)
        );
        assert_eq!(window_of("week", "2026-12-06T12:30:00Z"), None);
    }
}
