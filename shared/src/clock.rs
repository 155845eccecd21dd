//! Time as a dependency, so expiry and scheduling logic can be tested without sleeping; and the
//! venue's local day, which reports at the edge and at central must cut at the same instants.

use chrono::{DateTime, Duration, NaiveDate, TimeZone, Utc};
use chrono_tz::Tz;
use std::sync::Arc;
use std::sync::Mutex;

pub trait Clock: Send + Sync + std::fmt::Debug {
    fn now(&self) -> DateTime<Utc>;
}

#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> DateTime<Utc> {
        Utc::now()
    }
}

/// A clock tests move by hand.
#[derive(Debug, Clone)]
pub struct ManualClock(Arc<Mutex<DateTime<Utc>>>);

impl ManualClock {
    pub fn new(start: DateTime<Utc>) -> Self {
        Self(Arc::new(Mutex::new(start)))
    }

    pub fn advance(&self, by: chrono::Duration) {
        *self.0.lock().expect("clock poisoned") += by;
    }
}

impl Clock for ManualClock {
    fn now(&self) -> DateTime<Utc> {
        *self.0.lock().expect("clock poisoned")
    }
}

pub type SharedClock = Arc<dyn Clock>;

/// The calendar date at `at` in `tz`.
pub fn local_date(tz: Tz, at: DateTime<Utc>) -> NaiveDate {
    at.with_timezone(&tz).date_naive()
}

/// The first instant of `date` in `tz`: local midnight, or, where a DST change skips midnight,
/// the first local time that exists after it. When midnight happens twice, the earlier counts.
pub fn start_of_local_day(tz: Tz, date: NaiveDate) -> DateTime<Utc> {
    let midnight = date.and_time(chrono::NaiveTime::MIN);
    // Gaps are whole minutes and last at most a few hours; walking them is the rare path.
    (0..=24 * 60)
        .find_map(|minutes| {
            tz.from_local_datetime(&(midnight + Duration::minutes(minutes)))
                .earliest()
        })
        .map_or_else(
            || Utc.from_utc_datetime(&midnight),
            |start| start.with_timezone(&Utc),
        )
}

/// `[start, end)` of `date` in `tz`, in UTC: 23, 24 or 25 hours, depending on DST. `None` only
/// for the last date chrono can represent.
pub fn local_day(tz: Tz, date: NaiveDate) -> Option<(DateTime<Utc>, DateTime<Utc>)> {
    let next = date.succ_opt()?;
    Some((start_of_local_day(tz, date), start_of_local_day(tz, next)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn utc(text: &str) -> DateTime<Utc> {
        text.parse().expect("timestamp")
    }

    fn day(tz: &str, date: &str) -> (DateTime<Utc>, DateTime<Utc>) {
        local_day(tz.parse().expect("tz"), date.parse().expect("date")).expect("day")
    }

    #[test]
    fn local_days_follow_daylight_saving() {
        // An ordinary London winter day is 24 hours from midnight GMT.
        assert_eq!(
            day("Europe/London", "2026-01-15"),
            (utc("2026-01-15T00:00:00Z"), utc("2026-01-16T00:00:00Z"))
        );
        // Clocks go forward at 01:00 GMT on 29 March 2026: a 23-hour day.
        let (start, end) = day("Europe/London", "2026-03-29");
        assert_eq!(
            (start, end),
            (utc("2026-03-29T00:00:00Z"), utc("2026-03-29T23:00:00Z"))
        );
        // And back on 25 October 2026: a 25-hour day.
        let (start, end) = day("Europe/London", "2026-10-25");
        assert_eq!(end - start, Duration::hours(25));
        assert_eq!(start, utc("2026-10-24T23:00:00Z"));
        // Where DST starts at midnight (Santiago, 6 Sep 2026), the day starts at 01:00 local.
        let (start, _) = day("America/Santiago", "2026-09-06");
        assert_eq!(start, utc("2026-09-06T04:00:00Z"));
        assert_eq!(
            local_date("America/Santiago".parse().expect("tz"), start),
            "2026-09-06".parse::<NaiveDate>().expect("date")
        );
        // The instant before belongs to the previous local day.
        assert_eq!(
            local_date(
                "America/Santiago".parse().expect("tz"),
                start - Duration::milliseconds(1)
            ),
            "2026-09-05".parse::<NaiveDate>().expect("date")
        );
    }
}
