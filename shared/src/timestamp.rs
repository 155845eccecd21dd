//! Instants as RFC 3339 text in UTC, written straight from their digits.
//!
//! Both stores keep times as fixed-width text to the millisecond (`2026-12-07T06:43:13.123Z`),
//! so they compare as they sort, and the venue's records carry theirs in JSON. chrono writes the
//! same text through a `fmt::Formatter`, one character at a time, and under serde_json's
//! `collect_str`, which escapes each piece it is handed, one timestamp cost about 2,300
//! instructions; the edge's writer wrote several for every check-in and sale. Here the text is
//! laid out in a buffer on the stack, byte for byte what chrono writes (the tests compare the two
//! across the calendar). The years chrono writes with a sign, before 0 and after 9999, are left
//! to chrono.

use chrono::{DateTime, Datelike, SecondsFormat, Timelike, Utc};
use serde::{Serialize, Serializer};

/// The longest text written here: `YYYY-MM-DDTHH:MM:SS.nnnnnnnnnZ`.
const LONGEST: usize = 30;

/// How many fraction digits follow the seconds.
#[derive(Clone, Copy)]
enum Fraction {
    /// Always three, truncated: the stores' fixed width.
    Millis,
    /// The fewest of none, three, six or nine that are exact: chrono's JSON.
    Shortest,
}

struct Text {
    bytes: [u8; LONGEST],
    len: usize,
}

impl Text {
    fn push(&mut self, byte: u8) {
        self.bytes[self.len] = byte;
        self.len += 1;
    }

    /// `value` in `width` decimal digits, zero-padded; `value` has no more digits than that.
    fn digits(&mut self, mut value: u32, width: usize) {
        for at in (self.len..self.len + width).rev() {
            self.bytes[at] = b'0' + (value % 10) as u8;
            value /= 10;
        }
        self.len += width;
    }

    fn as_str(&self) -> &str {
        // Only ASCII digits and separators were written.
        std::str::from_utf8(&self.bytes[..self.len]).expect("ASCII")
    }
}

/// The text of `at`, or `None` for a year chrono writes with a sign.
fn write(at: &DateTime<Utc>, fraction: Fraction) -> Option<Text> {
    // The accessors of `DateTime` each work out the local date and time again.
    let (date, time) = (at.date_naive(), at.time());
    let year = u32::try_from(date.year()).ok().filter(|y| *y <= 9999)?;
    let mut text = Text {
        bytes: [0; LONGEST],
        len: 0,
    };
    // A leap second is held as second 59 with a nanosecond past one billion.
    let (mut second, mut nano) = (time.second(), time.nanosecond());
    if nano >= 1_000_000_000 {
        second += 1;
        nano -= 1_000_000_000;
    }
    text.digits(year, 4);
    text.push(b'-');
    text.digits(date.month(), 2);
    text.push(b'-');
    text.digits(date.day(), 2);
    text.push(b'T');
    text.digits(time.hour(), 2);
    text.push(b':');
    text.digits(time.minute(), 2);
    text.push(b':');
    text.digits(second, 2);
    let (fraction, width) = match fraction {
        Fraction::Millis => (nano / 1_000_000, 3),
        Fraction::Shortest if nano == 0 => (0, 0),
        Fraction::Shortest if nano % 1_000_000 == 0 => (nano / 1_000_000, 3),
        Fraction::Shortest if nano % 1_000 == 0 => (nano / 1_000, 6),
        Fraction::Shortest => (nano, 9),
    };
    if width > 0 {
        text.push(b'.');
        text.digits(fraction, width);
    }
    text.push(b'Z');
    Some(text)
}

/// `at` to the millisecond (truncated), as both stores keep times: `2026-12-07T06:43:13.123Z`.
/// The same text as chrono's `to_rfc3339_opts(SecondsFormat::Millis, true)`.
pub fn millis(at: DateTime<Utc>) -> String {
    match write(&at, Fraction::Millis) {
        Some(text) => text.as_str().to_owned(),
        None => at.to_rfc3339_opts(SecondsFormat::Millis, true),
    }
}

/// Serializes `at` exactly as chrono's own `Serialize` does, for `#[serde(serialize_with)]`.
pub fn serialize<S: Serializer>(at: &DateTime<Utc>, serializer: S) -> Result<S::Ok, S::Error> {
    match write(at, Fraction::Shortest) {
        Some(text) => serializer.serialize_str(text.as_str()),
        None => at.serialize(serializer),
    }
}

/// [`serialize`] for an optional instant.
pub mod option {
    use chrono::{DateTime, Utc};
    use serde::{Serialize, Serializer};

    struct Instant<'a>(&'a DateTime<Utc>);

    impl Serialize for Instant<'_> {
        fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
            super::serialize(self.0, serializer)
        }
    }

    pub fn serialize<S: Serializer>(
        at: &Option<DateTime<Utc>>,
        serializer: S,
    ) -> Result<S::Ok, S::Error> {
        match at {
            Some(at) => serializer.serialize_some(&Instant(at)),
            None => serializer.serialize_none(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::{NaiveDate, TimeZone};

    /// Instants spread over years 0 to 9999, each with a nanosecond of every kind the shortest
    /// fraction tells apart, from a fixed-seed generator (the same instants on every run).
    fn instants() -> Vec<DateTime<Utc>> {
        let mut state: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        let first = Utc.with_ymd_and_hms(0, 1, 1, 0, 0, 0).unwrap().timestamp();
        let last = Utc
            .with_ymd_and_hms(9999, 12, 31, 23, 59, 59)
            .unwrap()
            .timestamp();
        let span = (last - first + 1) as u64;
        (0..20_000)
            .map(|i| {
                let second = first + (next() % span) as i64;
                let nano = match i % 5 {
                    0 => 0,
                    1 => (next() % 1_000) as u32 * 1_000_000,
                    2 => (next() % 1_000_000) as u32 * 1_000,
                    3 => (next() % 1_000_000_000) as u32,
                    _ => 1,
                };
                DateTime::from_timestamp(second, nano).unwrap()
            })
            .collect()
    }

    /// The instants at the edges: the ends of the years written without a sign, and a leap second.
    fn edges() -> Vec<DateTime<Utc>> {
        let leap = NaiveDate::from_ymd_opt(2016, 12, 31)
            .unwrap()
            .and_hms_nano_opt(23, 59, 59, 1_500_000_000)
            .unwrap()
            .and_utc();
        vec![
            Utc.with_ymd_and_hms(0, 1, 1, 0, 0, 0).unwrap(),
            Utc.with_ymd_and_hms(9999, 12, 31, 23, 59, 59).unwrap()
                + chrono::Duration::nanoseconds(999_999_999),
            Utc.with_ymd_and_hms(2026, 3, 8, 7, 0, 0).unwrap(),
            leap,
        ]
    }

    #[test]
    fn millis_writes_what_chrono_writes_for_every_instant() {
        for at in instants().into_iter().chain(edges()) {
            assert_eq!(
                millis(at),
                at.to_rfc3339_opts(SecondsFormat::Millis, true),
                "{at:?}"
            );
        }
    }

    #[test]
    fn json_of_an_instant_is_chronos_json_for_every_instant() {
        for at in instants().into_iter().chain(edges()) {
            let mut ours = Vec::new();
            serialize(&at, &mut serde_json::Serializer::new(&mut ours)).unwrap();
            assert_eq!(
                String::from_utf8(ours).unwrap(),
                serde_json::to_string(&at).unwrap(),
                "{at:?}"
            );
        }
    }

    #[test]
    fn years_chrono_writes_with_a_sign_are_left_to_chrono() {
        for at in [
            Utc.with_ymd_and_hms(-1, 12, 31, 23, 59, 59).unwrap(),
            Utc.with_ymd_and_hms(10000, 1, 1, 0, 0, 0).unwrap(),
        ] {
            assert!(write(&at, Fraction::Shortest).is_none());
            assert_eq!(millis(at), at.to_rfc3339_opts(SecondsFormat::Millis, true));
            let mut ours = Vec::new();
            serialize(&at, &mut serde_json::Serializer::new(&mut ours)).unwrap();
            assert_eq!(
                String::from_utf8(ours).unwrap(),
                serde_json::to_string(&at).unwrap()
            );
        }
    }

    #[test]
    fn an_optional_instant_is_null_or_the_instants_json() {
        #[derive(Serialize)]
        struct Row {
            #[serde(serialize_with = "option::serialize")]
            at: Option<DateTime<Utc>>,
        }
        let at = Utc.with_ymd_and_hms(2026, 12, 7, 6, 43, 13).unwrap();
        assert_eq!(
            serde_json::to_string(&Row { at: Some(at) }).unwrap(),
            format!(r#"{{"at":{}}}"#, serde_json::to_string(&at).unwrap())
        );
        assert_eq!(
            serde_json::to_string(&Row { at: None }).unwrap(),
            r#"{"at":null}"#
        );
    }
}
