//! Input validation: field-by-field checks that collect every error before answering 422.

use crate::problem::{ApiError, FieldError};
use ipnet::IpNet;

/// Implemented by request bodies; `ValidJson` runs it after decoding.
pub trait Validate {
    fn validate(&self, v: &mut Validator);
}

/// Collects field errors so a client sees all of them at once.
#[derive(Default, Debug)]
pub struct Validator {
    errors: Vec<FieldError>,
}

impl Validator {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn error(&mut self, field: &str, message: impl Into<String>) {
        self.errors.push(FieldError::new(field, message));
    }

    pub fn check(&mut self, ok: bool, field: &str, message: &str) {
        if !ok {
            self.error(field, message);
        }
    }

    /// Non-blank text of at most `max` characters.
    pub fn text(&mut self, field: &str, value: &str, max: usize) {
        if value.trim().is_empty() {
            self.error(field, "must not be blank");
        } else {
            self.max_len(field, value, max);
        }
    }

    pub fn max_len(&mut self, field: &str, value: &str, max: usize) {
        if value.chars().count() > max {
            self.error(field, format!("must be at most {max} characters"));
        }
        if value
            .chars()
            .any(|c| c.is_control() && c != '\n' && c != '\t')
        {
            self.error(field, "must not contain control characters");
        }
    }

    pub fn timezone(&mut self, field: &str, value: &str) {
        if value.parse::<chrono_tz::Tz>().is_err() {
            self.error(field, "must be an IANA timezone such as Europe/London");
        }
    }

    /// CIDRs arrive as strings so one bad entry names its index instead of failing the decode.
    pub fn networks(&mut self, field: &str, values: &[String]) -> Vec<IpNet> {
        if values.len() > 64 {
            self.error(field, "at most 64 networks");
        }
        values
            .iter()
            .enumerate()
            .filter_map(|(i, value)| match value.parse::<IpNet>() {
                Ok(net) => Some(net.trunc()),
                Err(_) => {
                    self.error(
                        &format!("{field}[{i}]"),
                        "must be a CIDR such as 192.168.1.0/24",
                    );
                    None
                }
            })
            .collect()
    }

    pub fn cron(&mut self, field: &str, value: &str) {
        if let Err(err) = crate::cron_expr::parse_cron(value) {
            self.error(field, format!("the cron expression {err}"));
        }
    }

    pub fn phone(&mut self, field: &str, value: &str) {
        let digits = value.chars().filter(char::is_ascii_digit).count();
        let allowed = value
            .chars()
            .all(|c| c.is_ascii_digit() || matches!(c, '+' | ' ' | '-' | '(' | ')' | '.'));
        if !allowed || !(6..=20).contains(&digits) {
            self.error(field, "must be a phone number of 6 to 20 digits");
        }
    }

    pub fn email(&mut self, field: &str, value: &str) {
        let plausible = value.len() <= 254
            && value.split_once('@').is_some_and(|(local, domain)| {
                !local.is_empty() && domain.contains('.') && !domain.starts_with('.')
            })
            && !value.chars().any(char::is_whitespace);
        if !plausible {
            self.error(field, "must be an email address");
        }
    }

    pub fn finish(self) -> Result<(), ApiError> {
        if self.errors.is_empty() {
            Ok(())
        } else {
            Err(ApiError::Validation(self.errors))
        }
    }
}

/// Normalises a phone number to the digits (and a leading +) used for lookups.
pub fn normalize_phone(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for (i, c) in value.trim().chars().enumerate() {
        if c.is_ascii_digit() || (i == 0 && c == '+') {
            out.push(c);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn collects_every_field_error() {
        let mut v = Validator::new();
        v.text("name", " ", 10);
        v.timezone("timezone", "Mars/Olympus");
        let nets = v.networks("allowed_networks", &["10.0.0.0/8".into(), "nope".into()]);
        v.cron("cron", "every day");
        let Err(ApiError::Validation(errors)) = v.finish() else {
            panic!("expected validation errors");
        };
        let fields: Vec<_> = errors.iter().map(|e| e.field.as_str()).collect();
        assert_eq!(fields, ["name", "timezone", "allowed_networks[1]", "cron"]);
        assert_eq!(nets.len(), 1);
    }

    #[test]
    fn accepts_valid_input() {
        let mut v = Validator::new();
        v.text("name", "Leeds", 10);
        v.timezone("timezone", "Europe/London");
        v.cron("cron", "0 0 9 * * *");
        v.phone("phone", "+44 113 496 0000");
        v.email("email", "jo@example.com");
        assert!(v.finish().is_ok());
    }

    #[test]
    fn oversized_text_is_rejected() {
        let mut v = Validator::new();
        v.text("name", &"x".repeat(11), 10);
        assert!(v.finish().is_err());
    }

    #[test]
    fn phone_normalisation_keeps_digits_and_leading_plus() {
        assert_eq!(normalize_phone(" +44 (113) 496-0000 "), "+441134960000");
    }
}
