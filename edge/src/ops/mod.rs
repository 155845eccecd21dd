//! Commands for whoever looks after the venue box: `aero-edge status` and `aero-edge check`.

pub mod check;
pub mod status;

/// "4 s", "3 min", "2 h 5 min", "3 d 4 h": how long ago, at a glance.
pub fn human_duration(seconds: i64) -> String {
    let s = seconds.max(0);
    match s {
        0..60 => format!("{s} s"),
        60..3600 => format!("{} min", s / 60),
        3600..86_400 => format!("{} h {} min", s / 3600, s % 3600 / 60),
        _ => format!("{} d {} h", s / 86_400, s % 86_400 / 3600),
    }
}

#[cfg(test)]
mod tests {
    use super::human_duration;

    #[test]
    fn durations_read_at_a_glance() {
        assert_eq!(human_duration(-3), "0 s");
        assert_eq!(human_duration(59), "59 s");
        assert_eq!(human_duration(61), "1 min");
        assert_eq!(human_duration(2 * 3600 + 5 * 60 + 7), "2 h 5 min");
        assert_eq!(human_duration(3 * 86_400 + 4 * 3600), "3 d 4 h");
    }
}
