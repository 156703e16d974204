//! Calendar dates for the review cadence (go-live, +30 days, +90 days, then quarterly),
//! without a date crate: days since 1970-01-01 and back (Howard Hinnant's algorithms).

use std::fmt;

/// A UTC calendar date.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Date {
    /// Days since 1970-01-01.
    days: i64,
}

impl Date {
    /// Parses `YYYY-MM-DD` (a longer RFC 3339 time is cut to its date).
    pub fn parse(text: &str) -> Option<Date> {
        let d = text.get(..10)?;
        let mut parts = d.split('-');
        let y: i64 = parts.next()?.parse().ok()?;
        let m: i64 = parts.next()?.parse().ok()?;
        let day: i64 = parts.next()?.parse().ok()?;
        if d.len() != 10 || !(1..=12).contains(&m) || !(1..=31).contains(&day) {
            return None;
        }
        let date = Date {
            days: days_from_civil(y, m, day),
        };
        // Reject 2026-02-31 and the like: the round trip must give the same day.
        (date.civil() == (y, m, day)).then_some(date)
    }

    /// Today in UTC.
    pub fn today() -> Date {
        let secs = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        Date {
            days: i64::try_from(secs / 86_400).unwrap_or(0),
        }
    }

    /// Days since 1970-01-01.
    pub fn days_since_epoch(self) -> i64 {
        self.days
    }

    /// This date plus `n` days.
    pub fn plus_days(self, n: i64) -> Date {
        Date {
            days: self.days + n,
        }
    }

    fn civil(self) -> (i64, i64, i64) {
        let z = self.days + 719_468;
        let era = z.div_euclid(146_097);
        let doe = z.rem_euclid(146_097);
        let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
        let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
        let mp = (5 * doy + 2) / 153;
        let d = doy - (153 * mp + 2) / 5 + 1;
        let m = if mp < 10 { mp + 3 } else { mp - 9 };
        let y = yoe + era * 400 + i64::from(m <= 2);
        (y, m, d)
    }
}

fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let mp = if m > 2 { m - 3 } else { m + 9 };
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

impl fmt::Display for Date {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (y, m, d) = self.civil();
        write!(f, "{y:04}-{m:02}-{d:02}")
    }
}

impl serde::Serialize for Date {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// The next review on or after `today` for a workflow that went (or goes) live on
/// `go_live`: the go-live review itself, then +30 days, +90 days, then every 91 days (a
/// quarter), with the name of that review.
pub fn next_review(go_live: Date, today: Date) -> (Date, String) {
    if today <= go_live {
        return (go_live, "before go-live".into());
    }
    let d30 = go_live.plus_days(30);
    if today <= d30 {
        return (d30, "30 days after go-live".into());
    }
    let d90 = go_live.plus_days(90);
    if today <= d90 {
        return (d90, "90 days after go-live".into());
    }
    let since = today.days - d90.days;
    let quarters = (since + 90) / 91;
    (
        d90.plus_days(quarters * 91),
        format!("quarterly review {quarters}"),
    )
}

/// Whether dotted version `a` is older than `b` (numeric parts compared as numbers, other
/// parts as text), so `1.9.0` < `1.10.0`.
pub fn version_lt(a: &str, b: &str) -> bool {
    let key = |v: &str| -> Vec<(u64, String)> {
        v.split(['.', '-', '+'])
            .map(|p| match p.parse::<u64>() {
                Ok(n) => (n, String::new()),
                Err(_) => (u64::MAX, p.to_string()),
            })
            .collect()
    };
    key(a) < key(b)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "a test fails loudly on a bad fixture")]
    use super::*;

    #[test]
    fn dates_round_trip_and_reject_impossible_days() {
        for s in ["1970-01-01", "2024-02-29", "2026-12-06", "2100-03-01"] {
            assert_eq!(Date::parse(s).map(|d| d.to_string()).as_deref(), Some(s));
        }
        assert_eq!(Date::parse("2026-02-29"), None);
        assert_eq!(Date::parse("2026-13-01"), None);
        assert_eq!(Date::parse("yesterday"), None);
        assert_eq!(
            Date::parse("2026-12-06T04:00:00Z").map(|d| d.to_string()),
            Some("2026-12-06".into())
        );
    }

    #[test]
    fn cadence_is_go_live_then_30_then_90_then_quarterly() {
        let g = Date::parse("2026-01-01").unwrap();
        let at = |s: &str| next_review(g, Date::parse(s).unwrap());
        assert_eq!(at("2025-12-01").0.to_string(), "2026-01-01");
        assert_eq!(at("2026-01-02").0.to_string(), "2026-01-31");
        assert_eq!(at("2026-02-01").0.to_string(), "2026-04-01");
        let (d, label) = at("2026-04-02");
        assert_eq!(d.to_string(), "2026-07-01");
        assert_eq!(label, "quarterly review 1");
    }

    #[test]
    fn versions_compare_numerically() {
        assert!(version_lt("1.9.0", "1.10.0"));
        assert!(version_lt("0.9.0", "1.0.0"));
        assert!(!version_lt("1.0.0", "1.0.0"));
        assert!(!version_lt("2.0.0", "1.0.0"));
    }
}
