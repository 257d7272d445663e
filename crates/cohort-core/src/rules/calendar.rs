//! UTC calendar rules for `profile.age` and the birthday functions.
//!
//! Pure integer arithmetic on top of the civil-date helpers in
//! [`crate::time`], so the instants computed for timers agree exactly with
//! the values evaluated at those instants.

use super::facts::CivilDate;
use crate::time::{is_leap_year, timestamp_of_date, Duration, Timestamp};

/// The UTC civil date that contains `t`.
pub fn date_of(t: Timestamp) -> CivilDate {
    let (year, month, day) = t.civil();
    CivilDate { year, month, day }
}

/// Midnight UTC at the start of a civil date.
pub fn start_of(year: i32, month: u8, day: u8) -> Timestamp {
    timestamp_of_date(year, month, day)
}

/// Midnight UTC at the start of the month after the one containing `t`.
pub fn next_month_start(t: Timestamp) -> Timestamp {
    let d = date_of(t);
    if d.month == 12 {
        start_of(d.year.saturating_add(1), 1, 1)
    } else {
        start_of(d.year, d.month + 1, 1)
    }
}

/// The start of the birthday of someone born on `birth` in `year`. People
/// born on 29 February celebrate on 28 February in common years.
pub fn birthday_in(birth: CivilDate, year: i32) -> Timestamp {
    if birth.month == 2 && birth.day == 29 && !is_leap_year(year) {
        start_of(year, 2, 28)
    } else {
        start_of(year, birth.month, birth.day)
    }
}

/// Completed years at `now` (0 before the first birthday, and for birth
/// dates in the future). Age increments at the start of the birthday, UTC.
pub fn age_at(birth: CivilDate, now: Timestamp) -> u32 {
    let today = date_of(now);
    let mut age = i64::from(today.year) - i64::from(birth.year);
    if now < birthday_in(birth, today.year) {
        age -= 1;
    }
    age.clamp(0, i64::from(u32::MAX)) as u32
}

/// The first birthday start strictly after `now`: the instant `age_at` next
/// changes (for birth dates in the future, the birth itself is not an
/// increment, so this is conservative there, which is allowed).
pub fn next_birthday_after(birth: CivilDate, now: Timestamp) -> Timestamp {
    let year = date_of(now).year;
    let this = birthday_in(birth, year);
    if this > now {
        this
    } else {
        birthday_in(birth, year.saturating_add(1))
    }
}

/// Whether some birthday (a whole UTC day) overlaps `[now, now + within]`.
/// Only the birthday that has not yet ended can qualify: birthdays are at
/// least 365 days apart and `within` is at most 366 days, so if that one
/// starts too late, every later one does too.
pub fn birthday_within(birth: CivilDate, now: Timestamp, within: Duration) -> bool {
    let year = date_of(now).year;
    let mut b = birthday_in(birth, year);
    if b + Duration::from_days(1) <= now {
        b = birthday_in(birth, year.saturating_add(1));
    }
    b <= now + within
}

/// The earliest instant `> now` at which [`birthday_within`] can change:
/// `within` before a birthday starts, or when a birthday ends. Only the
/// birthday that has not ended yet and the one after it can matter.
pub fn birthday_within_next_change(birth: CivilDate, now: Timestamp, within: Duration) -> Option<Timestamp> {
    let year = date_of(now).year;
    let (mut b, mut next_year) = (birthday_in(birth, year), year.saturating_add(1));
    if b + Duration::from_days(1) <= now {
        b = birthday_in(birth, next_year);
        next_year = next_year.saturating_add(1);
    }
    let after = birthday_in(birth, next_year);
    [b - within, b + Duration::from_days(1), after - within].into_iter().filter(|&c| c > now).min()
}

/// Whether `now` falls in the customer's birth month (UTC).
pub fn birthday_this_month(birth: CivilDate, now: Timestamp) -> bool {
    date_of(now).month == birth.month
}

/// The earliest instant `> now` at which [`birthday_this_month`] changes:
/// the end of the birth month if we are in it, else its next start.
pub fn birthday_this_month_next_change(birth: CivilDate, now: Timestamp) -> Timestamp {
    let today = date_of(now);
    if today.month == birth.month {
        next_month_start(now)
    } else if birth.month > today.month {
        start_of(today.year, birth.month, 1)
    } else {
        start_of(today.year.saturating_add(1), birth.month, 1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(year: i32, month: u8, day: u8) -> CivilDate {
        CivilDate { year, month, day }
    }

    #[test]
    fn age_increments_at_birthday_start_and_leap_day_uses_28_feb() {
        let b = d(2000, 2, 29);
        assert_eq!(age_at(b, start_of(2001, 2, 28) - Duration::from_millis(1)), 0);
        assert_eq!(age_at(b, start_of(2001, 2, 28)), 1);
        assert_eq!(age_at(b, start_of(2004, 2, 28)), 3);
        assert_eq!(age_at(b, start_of(2004, 2, 29)), 4);
        assert_eq!(next_birthday_after(b, start_of(2004, 2, 28)), start_of(2004, 2, 29));
        assert_eq!(age_at(d(2030, 1, 1), start_of(2026, 1, 1)), 0);
    }

    #[test]
    fn birthday_within_covers_the_whole_day() {
        let b = d(1990, 6, 10);
        let w = Duration::from_days(7);
        assert!(!birthday_within(b, start_of(2026, 6, 3) - Duration::from_millis(1), w));
        assert!(birthday_within(b, start_of(2026, 6, 3), w));
        assert!(birthday_within(b, start_of(2026, 6, 11) - Duration::from_millis(1), w));
        assert!(!birthday_within(b, start_of(2026, 6, 11), w));
        assert_eq!(birthday_within_next_change(b, start_of(2026, 1, 1), w), Some(start_of(2026, 6, 3)));
        assert_eq!(birthday_within_next_change(b, start_of(2026, 6, 5), w), Some(start_of(2026, 6, 11)));
        assert_eq!(next_month_start(start_of(2026, 12, 31)), start_of(2027, 1, 1));
    }

    #[test]
    fn next_changes_match_hourly_brute_force() {
        let hour = Duration::from_hours(1);
        for birth in [d(1990, 6, 10), d(2000, 2, 29), d(1985, 12, 31), d(1970, 1, 1)] {
            for within in [Duration::ZERO, Duration::from_days(1), Duration::from_days(7), Duration::from_days(366)] {
                let mut now = start_of(2027, 11, 1) + Duration::from_mins(7);
                let end = start_of(2029, 3, 1);
                while now < end {
                    let next = birthday_within_next_change(birth, now, within).expect("birthdays recur");
                    assert!(next > now);
                    let v = birthday_within(birth, now, within);
                    // Constant until `next` (checked hourly and just before it).
                    let mut t = now;
                    while t < next && t < end {
                        assert_eq!(birthday_within(birth, t, within), v, "{birth:?} {within:?} {t:?}");
                        t = t + hour;
                    }
                    assert_eq!(birthday_within(birth, next - Duration::from_millis(1), within), v);
                    now = next.max(now + hour);
                }
                let mut now = start_of(2027, 11, 1) + Duration::from_mins(7);
                while now < end {
                    let next = next_birthday_after(birth, now);
                    assert_eq!(age_at(birth, next - Duration::from_millis(1)), age_at(birth, now));
                    assert_eq!(age_at(birth, next), age_at(birth, now) + 1);
                    let m = birthday_this_month_next_change(birth, now);
                    assert_eq!(
                        birthday_this_month(birth, m - Duration::from_millis(1)),
                        birthday_this_month(birth, now)
                    );
                    assert_ne!(birthday_this_month(birth, m), birthday_this_month(birth, now));
                    now = now + Duration::from_days(3);
                }
            }
        }
    }
}
