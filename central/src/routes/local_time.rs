//! A site's local days, hours and weeks as UTC ranges, for reports and leaderboards. Days are
//! not always 24 hours: a DST change makes one 23 or 25 hours long, and a gap at midnight makes
//! a day start at 01:00.

use aero_shared::ApiError;
use chrono::{DateTime, Datelike as _, Duration, NaiveDate, Utc};
use chrono_tz::Tz;

/// The timezone a site's settings name.
pub fn site_timezone(name: &str) -> Result<Tz, ApiError> {
    name.parse()
        .map_err(|_| ApiError::internal(anyhow::anyhow!("site has an invalid timezone {name}")))
}

/// The first instant of the local day (shared with the edge, so both count the same day).
pub use aero_shared::clock::start_of_local_day as start_of;

/// The local day `date` as `[from, to)` in UTC.
pub fn day(tz: Tz, date: NaiveDate) -> Result<(DateTime<Utc>, DateTime<Utc>), ApiError> {
    aero_shared::clock::local_day(tz, date).ok_or_else(|| ApiError::field("date", "out of range"))
}

/// The ISO week (Monday to Sunday) holding `date`, as `[from, to)` in UTC.
pub fn week(tz: Tz, date: NaiveDate) -> Result<(DateTime<Utc>, DateTime<Utc>), ApiError> {
    let monday = date - Duration::days(i64::from(date.weekday().num_days_from_monday()));
    let next = monday
        .checked_add_signed(Duration::days(7))
        .ok_or_else(|| ApiError::field("period", "out of range"))?;
    Ok((start_of(tz, monday), start_of(tz, next)))
}

/// The starts of the hours of `[from, to)`, then `to`: each interval between two bounds is one
/// hour as the clocks on the wall count them (23 on a spring-forward day, 25 on a fall-back
/// one, the repeated hour twice).
pub fn hour_bounds(from: DateTime<Utc>, to: DateTime<Utc>) -> Vec<DateTime<Utc>> {
    let mut bounds = Vec::new();
    let mut at = from;
    while at < to {
        bounds.push(at);
        at += Duration::hours(1);
    }
    bounds.push(to);
    bounds
}

#[cfg(test)]
mod tests {
    use super::*;

    fn date(y: i32, m: u32, d: u32) -> NaiveDate {
        NaiveDate::from_ymd_opt(y, m, d).unwrap()
    }

    #[test]
    fn dst_days_have_23_and_25_hours() {
        let tz: Tz = "America/New_York".parse().unwrap();
        for (d, hours) in [
            (date(2026, 3, 8), 23),
            (date(2026, 11, 1), 25),
            (date(2026, 6, 1), 24),
        ] {
            let (from, to) = day(tz, d).unwrap();
            assert_eq!((to - from).num_hours(), hours, "{d}");
            assert_eq!(hour_bounds(from, to).len(), hours as usize + 1, "{d}");
        }
        let (from, _) = day(tz, date(2026, 6, 1)).unwrap();
        assert_eq!(from.to_rfc3339(), "2026-06-01T04:00:00+00:00");
    }

    #[test]
    fn a_day_starting_in_a_gap_starts_when_the_gap_ends() {
        // Santiago moved its clocks from 00:00 to 01:00 on 2022-09-11.
        let tz: Tz = "America/Santiago".parse().unwrap();
        let from = start_of(tz, date(2022, 9, 11));
        assert_eq!(from.to_rfc3339(), "2022-09-11T04:00:00+00:00");
    }

    #[test]
    fn weeks_run_monday_to_monday() {
        let (from, to) = week(Tz::UTC, date(2026, 1, 1)).unwrap();
        assert_eq!(from.to_rfc3339(), "2025-12-29T00:00:00+00:00");
        assert_eq!(to.to_rfc3339(), "2026-01-05T00:00:00+00:00");
    }
}
