//! Calendar arithmetic without a date library: UTC civil time from unix seconds, the
//! bucket names of spend and oversight windows, and RFC 3339 timestamps for audit
//! records. A leaf module: it depends on nothing but the IR's `Window`.

use crate::ir::Window;

/// A UTC civil time, computed from unix seconds without a date library.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UtcTime {
    pub year: i64,
    pub month: u32,
    pub day: u32,
    pub hour: u32,
    pub minute: u32,
    pub second: u32,
}

impl UtcTime {
    /// The civil date and time of `unix_secs` (proleptic Gregorian, UTC), using Howard
    /// Hinnant's `civil_from_days`, exact for every representable day.
    pub fn from_unix(unix_secs: i64) -> UtcTime {
        let days = unix_secs.div_euclid(86_400);
        let secs = unix_secs.rem_euclid(86_400);
        let z = days + 719_468;
        let era = z.div_euclid(146_097);
        let doe = z.rem_euclid(146_097); // [0, 146096]
        let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365; // [0, 399]
        let doy = doe - (365 * yoe + yoe / 4 - yoe / 100); // [0, 365]
        let mp = (5 * doy + 2) / 153; // [0, 11]
        let day = doy - (153 * mp + 2) / 5 + 1; // [1, 31]
        let month = if mp < 10 { mp + 3 } else { mp - 9 }; // [1, 12]
        let year = yoe + era * 400 + i64::from(month <= 2);
        UtcTime {
            year,
            month: month as u32,
            day: day as u32,
            hour: (secs / 3600) as u32,
            minute: (secs / 60 % 60) as u32,
            second: (secs % 60) as u32,
        }
    }
}

/// The calendar bucket of `window` that `unix_secs` falls in: `2026-11` for a month,
/// `2026-11-24` for a day, `2026-11-24T03` for an hour.
pub fn bucket(window: Window, unix_secs: i64) -> String {
    let t = UtcTime::from_unix(unix_secs);
    match window {
        Window::Month => format!("{:04}-{:02}", t.year, t.month),
        Window::Day => format!("{:04}-{:02}-{:02}", t.year, t.month, t.day),
        Window::Hour => format!("{:04}-{:02}-{:02}T{:02}", t.year, t.month, t.day, t.hour),
    }
}

/// The language keyword of a window, used in store keys.
pub fn window_name(window: Window) -> &'static str {
    match window {
        Window::Hour => "hour",
        Window::Day => "day",
        Window::Month => "month",
    }
}

/// RFC 3339 UTC with microsecond precision, e.g. `2026-11-24T03:28:20.123456Z`.
pub fn rfc3339(unix_nanos: i64) -> String {
    let secs = unix_nanos.div_euclid(1_000_000_000);
    let micros = unix_nanos.rem_euclid(1_000_000_000) / 1000;
    let t = UtcTime::from_unix(secs);
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:06}Z",
        t.year, t.month, t.day, t.hour, t.minute, t.second, micros
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn civil_dates_match_known_instants() {
        // 1970-01-01T00:00:00Z
        assert_eq!(
            UtcTime::from_unix(0),
            UtcTime {
                year: 1970,
                month: 1,
                day: 1,
                hour: 0,
                minute: 0,
                second: 0
            }
        );
        // 2000-02-29T12:34:56Z (a leap day in a century leap year)
        assert_eq!(
            UtcTime::from_unix(951_827_696),
            UtcTime {
                year: 2000,
                month: 2,
                day: 29,
                hour: 12,
                minute: 34,
                second: 56
            }
        );
        // 1969-12-31T23:59:59Z, before the epoch
        assert_eq!(
            UtcTime::from_unix(-1),
            UtcTime {
                year: 1969,
                month: 12,
                day: 31,
                hour: 23,
                minute: 59,
                second: 59
            }
        );
        // 2026-11-24T03:28:20Z
        assert_eq!(bucket(Window::Month, 1_795_490_900), "2026-11");
        assert_eq!(bucket(Window::Day, 1_795_490_900), "2026-11-24");
        assert_eq!(bucket(Window::Hour, 1_795_490_900), "2026-11-24T03");
        // The last second of a month and the first of the next fall in different buckets.
        assert_eq!(bucket(Window::Month, 1_796_083_199), "2026-11");
        assert_eq!(bucket(Window::Month, 1_796_083_200), "2026-12");
    }

    #[test]
    fn every_day_round_trips_through_the_calendar() {
        // Walk 1600..2400 day by day and check the dates are consecutive.
        let mut prev = UtcTime::from_unix(-11_676_096_000 - 86_400);
        for day in -11_676_096_000 / 86_400..13_574_563_200 / 86_400 {
            let t = UtcTime::from_unix(day * 86_400);
            let next_day = (t.year, t.month, t.day);
            let expected = if prev.day < days_in_month(prev.year, prev.month) {
                (prev.year, prev.month, prev.day + 1)
            } else if prev.month < 12 {
                (prev.year, prev.month + 1, 1)
            } else {
                (prev.year + 1, 1, 1)
            };
            assert_eq!(next_day, expected);
            prev = t;
        }
    }

    fn days_in_month(y: i64, m: u32) -> u32 {
        let leap = (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
        match m {
            2 if leap => 29,
            2 => 28,
            4 | 6 | 9 | 11 => 30,
            _ => 31,
        }
    }

    #[test]
    fn times_are_rfc3339_utc() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00.000000Z");
        assert_eq!(
            rfc3339(1_795_490_900_123_456_789),
            "2026-11-24T03:28:20.123456Z"
        );
        assert_eq!(rfc3339(-1_000), "1969-12-31T23:59:59.999999Z");
    }
}
