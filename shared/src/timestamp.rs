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
//!
//! Reading goes the same way: text in exactly the shape written here is read from its digits,
//! and anything else (an offset, a lower-case `z`, a leap second, a malformed time) is handed to
//! chrono's own parser, so what is accepted, the instant it means, and the error for what is not,
//! are chrono's. Dates of birth (`YYYY-MM-DD`) are written and read the same way, see [`date`].

use chrono::{DateTime, Datelike, FixedOffset, NaiveDate, SecondsFormat, Timelike, Utc};
use serde::de::{self, Deserializer, Visitor};
use serde::{Serialize, Serializer};
use std::fmt;

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

    /// `YYYY-MM-DD`, or `None` for a year chrono writes with a sign.
    fn date(date: NaiveDate) -> Option<Text> {
        let year = u32::try_from(date.year()).ok().filter(|y| *y <= 9999)?;
        let mut text = Text {
            bytes: [0; LONGEST],
            len: 0,
        };
        text.digits(year, 4);
        text.push(b'-');
        text.digits(date.month(), 2);
        text.push(b'-');
        text.digits(date.day(), 2);
        Some(text)
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
    let mut text = Text::date(date)?;
    // A leap second is held as second 59 with a nanosecond past one billion.
    let (mut second, mut nano) = (time.second(), time.nanosecond());
    if nano >= 1_000_000_000 {
        second += 1;
        nano -= 1_000_000_000;
    }
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

/// Deserializes an instant exactly as chrono's own `Deserialize` does, for
/// `#[serde(deserialize_with)]`: the text this module writes is read from its digits.
pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<DateTime<Utc>, D::Error> {
    struct InstantText;

    impl Visitor<'_> for InstantText {
        type Value = DateTime<Utc>;

        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str("an RFC 3339 formatted date and time string")
        }

        fn visit_str<E: de::Error>(self, text: &str) -> Result<Self::Value, E> {
            parse(text)
                .map(Ok)
                .unwrap_or_else(|| {
                    text.parse::<DateTime<FixedOffset>>()
                        .map(|at| at.with_timezone(&Utc))
                })
                .map_err(E::custom)
        }
    }

    deserializer.deserialize_str(InstantText)
}

/// `YYYY-MM-DDTHH:MM:SS[.f{1,9}]Z`, the shape written here, as the instant it names; `None`
/// for any other text, valid or not (chrono's parser then decides).
fn parse(text: &str) -> Option<DateTime<Utc>> {
    let bytes = text.as_bytes();
    let (&b'Z', body) = bytes.split_last()? else {
        return None;
    };
    // The date's own dashes are checked by `read_date`.
    if body.len() < 19 || [body[10], body[13], body[16]] != *b"T::" {
        return None;
    }
    let date = read_date(&body[..10])?;
    let (hour, minute, second) = (
        number(&body[11..13])?,
        number(&body[14..16])?,
        number(&body[17..19])?,
    );
    let nano = match &body[19..] {
        [] => 0,
        [b'.', digits @ ..] if (1..=9).contains(&digits.len()) => {
            number(digits)? * 10u32.pow(9 - digits.len() as u32)
        }
        _ => return None,
    };
    // A leap second (:60) goes to chrono, with every out-of-range field.
    let time =
        chrono::NaiveTime::from_hms_nano_opt(hour, minute, second, nano).filter(|_| second < 60)?;
    Some(date.and_time(time).and_utc())
}

/// The value of a run of ASCII digits (at most nine), or `None` if any byte is not one.
fn number(digits: &[u8]) -> Option<u32> {
    digits.iter().try_fold(0u32, |value, &byte| {
        byte.is_ascii_digit()
            .then(|| value * 10 + u32::from(byte - b'0'))
    })
}

/// `YYYY-MM-DD` as the date it names, or `None`.
fn read_date(text: &[u8]) -> Option<NaiveDate> {
    if text.len() != 10 || text[4] != b'-' || text[7] != b'-' {
        return None;
    }
    let year = i32::try_from(number(&text[..4])?).ok()?;
    NaiveDate::from_ymd_opt(year, number(&text[5..7])?, number(&text[8..10])?)
}

/// Calendar dates (a date of birth) as `YYYY-MM-DD`, written and read exactly as chrono's own
/// `Serialize` and `Deserialize` of `NaiveDate` do, for `#[serde(with = "timestamp::date")]`.
pub mod date {
    use super::{Text, de, read_date};
    use chrono::NaiveDate;
    use serde::de::Visitor;
    use serde::{Deserializer, Serialize, Serializer};
    use std::fmt;

    pub fn serialize<S: Serializer>(date: &NaiveDate, serializer: S) -> Result<S::Ok, S::Error> {
        match Text::date(*date) {
            Some(text) => serializer.serialize_str(text.as_str()),
            None => date.serialize(serializer),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<NaiveDate, D::Error> {
        struct DateText;

        impl Visitor<'_> for DateText {
            type Value = NaiveDate;

            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a formatted date string")
            }

            fn visit_str<E: de::Error>(self, text: &str) -> Result<Self::Value, E> {
                read_date(text.as_bytes())
                    .map(Ok)
                    .unwrap_or_else(|| text.parse::<NaiveDate>())
                    .map_err(E::custom)
            }
        }

        deserializer.deserialize_str(DateText)
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

    /// chrono's reading of `json`, and ours, as values or error messages.
    fn both_read<T, F>(json: &str, ours: F) -> (Result<T, String>, Result<T, String>)
    where
        T: serde::de::DeserializeOwned,
        F: FnOnce(
            &mut serde_json::Deserializer<serde_json::de::StrRead<'_>>,
        ) -> serde_json::Result<T>,
    {
        let chronos = serde_json::from_str::<T>(json).map_err(|e| e.to_string());
        let mut deserializer = serde_json::Deserializer::from_str(json);
        (chronos, ours(&mut deserializer).map_err(|e| e.to_string()))
    }

    #[test]
    fn an_instant_is_read_as_chrono_reads_it_for_every_instant_and_shape() {
        for at in instants().into_iter().chain(edges()) {
            let nano = at.timestamp_subsec_nanos() % 1_000_000_000;
            // The shapes written here are read from their digits, not handed to chrono; a leap
            // second is chrono's to read.
            let text = millis(at);
            let leap = at.timestamp_subsec_nanos() >= 1_000_000_000;
            assert_eq!(parse(&text).is_some(), !leap, "{text}");
            assert!(read_date(&text.as_bytes()[..10]).is_some(), "{text}");
            let mut texts = vec![
                serde_json::to_string(&at).unwrap(),
                format!("\"{}\"", millis(at)),
                format!("\"{}\"", at.to_rfc3339_opts(SecondsFormat::Secs, true)),
                format!("\"{}\"", at.to_rfc3339_opts(SecondsFormat::Nanos, false)),
                format!("\"{}\"", at.format("%Y-%m-%d %H:%M:%S%.fz")),
            ];
            // Every fraction width from one digit to nine.
            let all = format!("{nano:09}");
            for width in 1..=9 {
                let plain = at.format("%Y-%m-%dT%H:%M:%S").to_string();
                texts.push(format!("\"{plain}.{}Z\"", &all[..width]));
            }
            for json in texts {
                let (chronos, ours) = both_read::<DateTime<Utc>, _>(&json, |d| deserialize(d));
                assert_eq!(ours, chronos, "{json}");
            }
        }
    }

    #[test]
    fn text_that_is_not_an_instant_is_refused_as_chrono_refuses_it() {
        for json in [
            r#""2026-02-30T10:00:00Z""#,
            r#""2026-12-07T24:00:00Z""#,
            r#""2026-12-07T23:60:00Z""#,
            r#""2026-12-07T23:59:61Z""#,
            r#""2016-12-31T23:59:60Z""#,
            r#""2026-12-07T10:00:00.Z""#,
            r#""2026-12-07T10:00:00.1234567891Z""#,
            r#""2026-12-07T10:00:00""#,
            r#""2026-12-07T10:0a:00Z""#,
            r#""+2026-12-07T10:00:00Z""#,
            r#""2026-12-07""#,
            r#""""#,
            r#""Z""#,
            "12",
            "null",
        ] {
            let (chronos, ours) = both_read::<DateTime<Utc>, _>(json, |d| deserialize(d));
            assert_eq!(ours, chronos, "{json}");
        }
    }

    #[test]
    fn a_date_is_written_and_read_as_chrono_does_it() {
        let mut dates: Vec<NaiveDate> = instants().iter().map(|at| at.date_naive()).collect();
        dates.extend([
            NaiveDate::from_ymd_opt(0, 1, 1).unwrap(),
            NaiveDate::from_ymd_opt(9999, 12, 31).unwrap(),
            NaiveDate::from_ymd_opt(-1, 12, 31).unwrap(),
            NaiveDate::from_ymd_opt(10000, 1, 1).unwrap(),
            NaiveDate::from_ymd_opt(2024, 2, 29).unwrap(),
        ]);
        for day in dates {
            let mut ours = Vec::new();
            date::serialize(&day, &mut serde_json::Serializer::new(&mut ours)).unwrap();
            let json = serde_json::to_string(&day).unwrap();
            assert_eq!(String::from_utf8(ours).unwrap(), json, "{day:?}");
            let (chronos, ours) = both_read::<NaiveDate, _>(&json, |d| date::deserialize(d));
            assert_eq!(ours, chronos, "{json}");
        }
        for json in [
            r#""2026-02-30""#,
            r#""2026-13-01""#,
            r#""2026-1-01""#,
            r#""2026-01-01T00:00:00Z""#,
            r#"" 2026-01-01""#,
            r#""20260101""#,
            r#""""#,
            "20260101",
        ] {
            let (chronos, ours) = both_read::<NaiveDate, _>(json, |d| date::deserialize(d));
            assert_eq!(ours, chronos, "{json}");
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
