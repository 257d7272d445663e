//! Instants and durations in event time.
//!
//! cohort never reads the system clock in core: every function that depends
//! on time takes a [`Timestamp`] argument. Milliseconds since the Unix epoch
//! (UTC) match Kafka's record timestamps and Avro's `timestamp-millis`.

use serde::{Deserialize, Serialize};
use std::fmt;
use std::ops::{Add, Sub};

/// An instant: milliseconds since 1970-01-01T00:00:00Z.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Timestamp(pub i64);

/// A span of event time in milliseconds. Never negative when built by the
/// constructors below.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Duration(pub i64);

impl Timestamp {
    pub const MIN: Timestamp = Timestamp(i64::MIN);
    pub const MAX: Timestamp = Timestamp(i64::MAX);

    pub const fn from_millis(ms: i64) -> Self {
        Timestamp(ms)
    }
    pub const fn as_millis(self) -> i64 {
        self.0
    }
    /// `self - earlier`, saturating instead of overflowing.
    pub fn since(self, earlier: Timestamp) -> Duration {
        Duration(self.0.saturating_sub(earlier.0))
    }
}

impl Duration {
    pub const ZERO: Duration = Duration(0);
    pub const fn from_millis(ms: i64) -> Self {
        Duration(ms)
    }
    pub const fn from_secs(s: i64) -> Self {
        Duration(s * 1_000)
    }
    pub const fn from_mins(m: i64) -> Self {
        Duration(m * 60_000)
    }
    pub const fn from_hours(h: i64) -> Self {
        Duration(h * 3_600_000)
    }
    pub const fn from_days(d: i64) -> Self {
        Duration(d * 86_400_000)
    }
    pub const fn as_millis(self) -> i64 {
        self.0
    }
}

impl Add<Duration> for Timestamp {
    type Output = Timestamp;
    fn add(self, d: Duration) -> Timestamp {
        Timestamp(self.0.saturating_add(d.0))
    }
}

impl Sub<Duration> for Timestamp {
    type Output = Timestamp;
    fn sub(self, d: Duration) -> Timestamp {
        Timestamp(self.0.saturating_sub(d.0))
    }
}

impl fmt::Debug for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Timestamp({}ms)", self.0)
    }
}

impl fmt::Debug for Duration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Duration({}ms)", self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arithmetic_saturates_instead_of_wrapping() {
        assert_eq!(Timestamp::MAX + Duration::from_days(1), Timestamp::MAX);
        assert_eq!(Timestamp::MIN - Duration::from_days(1), Timestamp::MIN);
        assert_eq!(Timestamp(10).since(Timestamp(4)), Duration(6));
    }
}

// ---- calendar helpers (pure; used for birthdays, ages and day buckets) ----

/// Milliseconds in one day. Day buckets and calendar helpers use UTC days.
pub const MS_PER_DAY: i64 = 86_400_000;

/// Whether `year` is a leap year in the proleptic Gregorian calendar.
pub const fn is_leap_year(year: i32) -> bool {
    (year % 4 == 0 && year % 100 != 0) || year % 400 == 0
}

/// Days in `month` (1-12) of `year`; 0 for an invalid month.
pub const fn days_in_month(year: i32, month: u8) -> u8 {
    match month {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        2 => {
            if is_leap_year(year) {
                29
            } else {
                28
            }
        }
        _ => 0,
    }
}

impl Timestamp {
    /// The UTC day number (days since 1970-01-01), flooring for instants
    /// before the epoch.
    pub const fn day(self) -> i64 {
        self.0.div_euclid(MS_PER_DAY)
    }

    /// The UTC calendar date `(year, month, day)` of this instant.
    pub fn civil(self) -> (i32, u8, u8) {
        civil_from_days(self.day())
    }
}

/// `(year, month, day)` of a day number (days since 1970-01-01), after
/// Howard Hinnant's `civil_from_days`.
pub fn civil_from_days(z: i64) -> (i32, u8, u8) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = if m <= 2 { y + 1 } else { y };
    (y as i32, m as u8, d as u8)
}

/// Day number (days since 1970-01-01) of a calendar date, after Howard
/// Hinnant's `days_from_civil`. The date is not validated.
pub fn days_from_civil(year: i32, month: u8, day: u8) -> i64 {
    let y = i64::from(year) - i64::from(month <= 2);
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let m = i64::from(month);
    let mp = if m > 2 { m - 3 } else { m + 9 };
    let doy = (153 * mp + 2) / 5 + i64::from(day) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The first instant of a calendar date, UTC.
pub fn timestamp_of_date(year: i32, month: u8, day: u8) -> Timestamp {
    Timestamp(days_from_civil(year, month, day).saturating_mul(MS_PER_DAY))
}

#[cfg(test)]
mod calendar_tests {
    use super::*;

    #[test]
    fn civil_roundtrip_and_known_dates() {
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(timestamp_of_date(2000, 1, 1), Timestamp(946_684_800_000));
        assert_eq!(Timestamp(946_684_800_000 - 1).civil(), (1999, 12, 31));
        for d in -800_000..800_000i64 {
            if d % 997 == 0 {
                let (y, m, dd) = civil_from_days(d);
                assert_eq!(days_from_civil(y, m, dd), d);
            }
        }
        assert_eq!(days_in_month(2024, 2), 29);
        assert_eq!(days_in_month(1900, 2), 28);
    }
}
