//! Cron expressions as HQ accepts them and venues run them: six fields with seconds first (an
//! optional seventh is the year) or a shorthand such as `@daily`, refused with a message that
//! names the field at fault and what it takes. Central validates schedules with it and the
//! edge's plug schedules parse with it, so both say the same thing about one expression.

use chrono::{DateTime, Utc};

/// Longest accepted cron expression.
pub const MAX_CRON_LEN: usize = 200;

/// Each field of an expression: its name and what it accepts, for error messages.
const FIELDS: [(&str, &str); 7] = [
    ("second", "0-59"),
    ("minute", "0-59"),
    ("hour", "0-23"),
    ("day-of-month", "1-31 or ?"),
    ("month", "1-12 or JAN-DEC"),
    ("day-of-week", "1-7 where 1 is Sunday, SUN-SAT or ?"),
    ("year", "1970-2100"),
];

/// Why a cron expression was refused; its message completes "the cron expression ...".
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum CronError {
    #[error(
        "is empty: expected six fields, \"second minute hour day-of-month month day-of-week\", \
         e.g. \"0 0 9 * * *\" for 09:00 every day"
    )]
    Empty,
    #[error("is longer than {MAX_CRON_LEN} characters")]
    TooLong,
    #[error(
        "has {found} fields: expected six, \"second minute hour day-of-month month day-of-week\", \
         optionally followed by a year{hint}",
        hint = five_field_hint(*.found)
    )]
    FieldCount { found: usize },
    #[error(
        "has an invalid {field} field {value:?}: expected {allowed}, or a list (a,b), range (a-b) \
         or step (*/n) of those"
    )]
    Field {
        field: &'static str,
        value: String,
        allowed: &'static str,
    },
    #[error("is not a known shorthand: use @yearly, @monthly, @weekly, @daily or @hourly")]
    Shorthand,
    #[error("never fires: no date matches it")]
    NeverFires,
    #[error("is invalid: {0}")]
    Invalid(String),
}

/// The likely mistake behind five fields: a crontab line, which has no seconds.
fn five_field_hint(found: usize) -> &'static str {
    if found == 5 {
        " (a crontab line needs a seconds field in front: \"0 0 9 * * *\" is 09:00 every day)"
    } else {
        ""
    }
}

/// Parses a schedule's cron expression: six fields with seconds first (an optional seventh is
/// the year) or a shorthand such as `@daily`. Errors name the field at fault and what it takes.
pub fn parse_cron(expression: &str) -> Result<cron::Schedule, CronError> {
    let expression = expression.trim();
    if expression.is_empty() {
        return Err(CronError::Empty);
    }
    if expression.len() > MAX_CRON_LEN {
        return Err(CronError::TooLong);
    }
    if expression.starts_with('@') {
        return expression
            .parse()
            .map_err(|_: cron::error::Error| CronError::Shorthand);
    }
    let fields: Vec<&str> = expression.split_whitespace().collect();
    if !(6..=FIELDS.len()).contains(&fields.len()) {
        return Err(CronError::FieldCount {
            found: fields.len(),
        });
    }
    if let Some(error) = fields
        .iter()
        .enumerate()
        .find_map(|(index, value)| field_error(index, value))
    {
        return Err(error);
    }
    let schedule: cron::Schedule = expression
        .parse()
        .map_err(|err: cron::error::Error| CronError::Invalid(last_line(&err.to_string())))?;
    if schedule
        .after(&DateTime::<Utc>::UNIX_EPOCH)
        .next()
        .is_none()
    {
        return Err(CronError::NeverFires);
    }
    Ok(schedule)
}

/// The error of field `index` when it is set to `value` in an otherwise valid expression: the
/// crate's own error points at a column, not at a field.
fn field_error(index: usize, value: &str) -> Option<CronError> {
    let mut probe = vec!["0", "0", "0", "*", "*", "*"];
    match probe.get_mut(index) {
        Some(field) => *field = value,
        None => probe.push(value),
    }
    let (field, allowed) = FIELDS[index];
    probe
        .join(" ")
        .parse::<cron::Schedule>()
        .is_err()
        .then(|| CronError::Field {
            field,
            value: value.to_string(),
            allowed,
        })
}

/// The crate formats errors as the expression, a caret line and a message: the message alone.
fn last_line(text: &str) -> String {
    text.lines()
        .map(str::trim)
        .rfind(|line| !line.is_empty() && !line.starts_with('^'))
        .unwrap_or("not a cron expression")
        .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cron_errors_name_the_field_and_what_it_takes() {
        let message = |expression: &str| parse_cron(expression).unwrap_err().to_string();
        assert_eq!(parse_cron("  "), Err(CronError::Empty));
        assert_eq!(
            parse_cron(&"0 ".repeat(120)),
            Err(CronError::TooLong),
            "checked before counting fields"
        );
        assert_eq!(
            message("0 9 * * *"),
            "has 5 fields: expected six, \"second minute hour day-of-month month day-of-week\", \
             optionally followed by a year (a crontab line needs a seconds field in front: \
             \"0 0 9 * * *\" is 09:00 every day)"
        );
        assert_eq!(
            parse_cron("0 0 9 * * * 2030 1"),
            Err(CronError::FieldCount { found: 8 })
        );
        assert_eq!(
            parse_cron("0 0 24 * * *"),
            Err(CronError::Field {
                field: "hour",
                value: "24".into(),
                allowed: "0-23",
            })
        );
        assert_eq!(
            message("0 0 9 * * Fun"),
            "has an invalid day-of-week field \"Fun\": expected 1-7 where 1 is Sunday, SUN-SAT \
             or ?, or a list (a,b), range (a-b) or step (*/n) of those"
        );
        assert_eq!(
            parse_cron("0 0 9 * * * 1969").unwrap_err(),
            CronError::Field {
                field: "year",
                value: "1969".into(),
                allowed: "1970-2100",
            }
        );
        assert_eq!(parse_cron("0 0 9 30 2 *"), Err(CronError::NeverFires));
        assert_eq!(parse_cron("@fortnightly"), Err(CronError::Shorthand));
        for valid in [
            "0 0 9 * * *",
            " 0 30 8-18/2 ? JAN-MAR MON-FRI ",
            "0 0 9 * * * 2030",
            "@daily",
        ] {
            assert!(parse_cron(valid).is_ok(), "{valid:?}");
        }
    }
}
