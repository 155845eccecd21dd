//! `aero-edge check`: whether this box can run the venue: configuration valid, data directory
//! writable, TLS files usable, enrolled, central reachable, and the clock close to central's (staff tokens,
//! waivers and sessions are time-bound). One line per check; exit 1 when any fails.

use crate::config::Settings;
use crate::credential::{self, Credential};
use aero_shared::clock::Clock;
use chrono::{DateTime, Utc};
use std::fmt;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// How long central gets to answer `/healthz`.
pub const CENTRAL_TIMEOUT: Duration = Duration::from_secs(5);
/// Clock skew against central past which the check warns.
pub const SKEW_WARN: chrono::Duration = chrono::Duration::seconds(5);

/// A check's result.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    Ok(String),
    /// Works, but deserves attention.
    Warn(String),
    Fail(String),
}

/// One line of the report.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Line {
    pub check: &'static str,
    pub outcome: Outcome,
}

impl fmt::Display for Line {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (word, detail) = match &self.outcome {
            Outcome::Ok(d) => ("ok", d),
            Outcome::Warn(d) => ("WARN", d),
            Outcome::Fail(d) => ("FAIL", d),
        };
        write!(f, "{word:<4}  {:<15}  {detail}", self.check)
    }
}

/// Runs every check. `config` and `data_dir` are the command line's; `clock` is the local
/// clock whose skew against central is measured.
pub async fn run_checks(
    config: Option<&Path>,
    data_dir: Option<PathBuf>,
    clock: &dyn Clock,
) -> Vec<Line> {
    let mut lines = Vec::new();
    let mut settings = match Settings::load(config) {
        Ok(settings) => {
            let source = config.map_or_else(
                || "compiled defaults and AERO_* variables".to_string(),
                |path| format!("{} and AERO_* variables", path.display()),
            );
            lines.push(ok("configuration", source));
            settings
        }
        Err(err) => {
            lines.push(fail("configuration", format!("{err:#}")));
            Settings::default()
        }
    };
    if data_dir.is_some() {
        settings.data_dir = data_dir;
    }
    let dir = settings.data_dir();
    lines.push(Line {
        check: "data directory",
        outcome: writable(&dir),
    });
    lines.push(Line {
        check: "tls",
        outcome: tls(&settings),
    });
    let credential = match Credential::load(&dir) {
        Ok(Some(credential)) => {
            lines.push(ok(
                "enrolled",
                format!("site {} at {}", credential.site_id, credential.central()),
            ));
            credential
        }
        Ok(None) => {
            lines.push(fail(
                "enrolled",
                format!(
                    "no credential at {}: run `aero-edge enroll --central URL --token TOKEN`",
                    credential::path_in(&dir).display()
                ),
            ));
            return lines;
        }
        Err(err) => {
            lines.push(fail("enrolled", format!("{err:#}")));
            return lines;
        }
    };
    let (reachable, skew) = central(&credential, clock).await;
    lines.push(Line {
        check: "central",
        outcome: reachable,
    });
    if let Some(skew) = skew {
        lines.push(Line {
            check: "clock skew",
            outcome: skew,
        });
    }
    lines
}

/// `aero-edge check`: prints one line per check; returns the exit code (1 if any failed).
pub async fn run(config: Option<&Path>, data_dir: Option<PathBuf>, clock: &dyn Clock) -> i32 {
    let lines = run_checks(config, data_dir, clock).await;
    for line in &lines {
        println!("{line}");
    }
    i32::from(lines.iter().any(|l| matches!(l.outcome, Outcome::Fail(_))))
}

/// Whether the configured certificate and key load: the same check `serve` makes at startup.
fn tls(settings: &Settings) -> Outcome {
    match (settings.tls.acceptor(), &settings.tls.cert_path) {
        (Ok(Some(_)), Some(cert)) => Outcome::Ok(format!("HTTPS with {}", cert.display())),
        (Ok(_), _) => Outcome::Warn(
            "off: device keys and staff passwords cross the venue LAN in clear (see [tls])".into(),
        ),
        (Err(err), _) => Outcome::Fail(err.to_string()),
    }
}

fn ok(check: &'static str, detail: String) -> Line {
    Line {
        check,
        outcome: Outcome::Ok(detail),
    }
}

fn fail(check: &'static str, detail: String) -> Line {
    Line {
        check,
        outcome: Outcome::Fail(detail),
    }
}

/// Creates, syncs and removes a probe file: the daemon must be able to write its database,
/// WAL and lock there.
fn writable(dir: &Path) -> Outcome {
    if !dir.is_dir() {
        return Outcome::Fail(format!(
            "{} does not exist or is not a directory",
            dir.display()
        ));
    }
    let probe = dir.join(format!(".aero-edge-check-{}", std::process::id()));
    let written = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&probe)
        .and_then(|mut file| {
            file.write_all(b"probe")?;
            file.sync_all()
        });
    let _ = std::fs::remove_file(&probe);
    match written {
        Ok(()) => Outcome::Ok(format!("{} is writable", dir.display())),
        Err(err) => Outcome::Fail(format!("{} is not writable: {err}", dir.display())),
    }
}

/// Asks central's `/healthz`; from the same answer's `Date` header, the skew (when central
/// answered at all).
async fn central(credential: &Credential, clock: &dyn Clock) -> (Outcome, Option<Outcome>) {
    let url = format!("{}/healthz", credential.central());
    let client = match reqwest::Client::builder()
        .connect_timeout(CENTRAL_TIMEOUT)
        .timeout(CENTRAL_TIMEOUT)
        .build()
    {
        Ok(client) => client,
        Err(err) => return (Outcome::Fail(format!("HTTP client: {err}")), None),
    };
    let sent = clock.now();
    let started = std::time::Instant::now();
    let response = match client.get(&url).send().await {
        Ok(response) => response,
        Err(err) => {
            return (
                Outcome::Fail(format!(
                    "{url} unreachable: {}",
                    crate::sync::describe(&err)
                )),
                None,
            );
        }
    };
    let received = clock.now();
    let elapsed = started.elapsed().as_millis();
    let status = response.status();
    let date = response
        .headers()
        .get(reqwest::header::DATE)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let reachable = if status.is_success() {
        Outcome::Ok(format!("{url} answered {status} in {elapsed} ms"))
    } else {
        Outcome::Fail(format!("{url} answered {status}"))
    };
    let skew = match date {
        Some(date) => skew_outcome(&date, sent, received),
        None => Outcome::Warn("central's answer carried no Date header to compare with".into()),
    };
    (reachable, Some(skew))
}

/// Compares central's `Date` header (whole seconds) with the local clock at the middle of the
/// exchange.
fn skew_outcome(date: &str, sent: DateTime<Utc>, received: DateTime<Utc>) -> Outcome {
    let central = match DateTime::parse_from_rfc2822(date) {
        Ok(at) => at.with_timezone(&Utc),
        Err(err) => return Outcome::Warn(format!("central's Date header {date:?}: {err}")),
    };
    let local = sent + (received - sent) / 2;
    // The header drops the fraction of central's second: its middle is the best guess.
    let skew = central + chrono::Duration::milliseconds(500) - local;
    let seconds = skew.num_milliseconds() as f64 / 1000.0;
    let direction = if seconds > 0.0 { "behind" } else { "ahead of" };
    if skew.abs() > SKEW_WARN {
        Outcome::Warn(format!(
            "this box's clock is {:.0} s {direction} central's: staff tokens, waivers and \
             sessions are time-bound; set up time sync (e.g. `timedatectl set-ntp true`)",
            seconds.abs()
        ))
    } else {
        Outcome::Ok(format!(
            "{seconds:+.1} s against central (within {} s)",
            SKEW_WARN.num_seconds()
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn at(h: u32, m: u32, s: u32, ms: i64) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 12, 3, h, m, s)
            .single()
            .expect("time")
            + chrono::Duration::milliseconds(ms)
    }

    #[test]
    fn a_close_clock_passes() {
        let outcome = skew_outcome(
            "Thu, 03 Dec 2026 18:00:00 GMT",
            at(18, 0, 0, 300),
            at(18, 0, 0, 500),
        );
        assert!(
            matches!(&outcome, Outcome::Ok(d) if d.contains("+0.1 s")),
            "{outcome:?}"
        );
    }

    #[test]
    fn a_clock_behind_central_past_the_threshold_warns() {
        let outcome = skew_outcome(
            "Thu, 03 Dec 2026 18:00:42 GMT",
            at(18, 0, 0, 400),
            at(18, 0, 0, 600),
        );
        assert!(
            matches!(&outcome, Outcome::Warn(d) if d.contains("42 s behind central")),
            "{outcome:?}"
        );
    }

    #[test]
    fn a_clock_ahead_of_central_warns() {
        let outcome = skew_outcome(
            "Thu, 03 Dec 2026 18:00:00 GMT",
            at(18, 0, 30, 500),
            at(18, 0, 30, 500),
        );
        assert!(
            matches!(&outcome, Outcome::Warn(d) if d.contains("30 s ahead of central")),
            "{outcome:?}"
        );
    }

    #[test]
    fn a_data_dir_that_cannot_exist_fails_by_name() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("a-file");
        std::fs::write(&file, b"x").expect("write");
        let outcome = writable(&file.join("data"));
        assert!(
            matches!(&outcome, Outcome::Fail(d) if d.contains("a-file/data does not exist")),
            "{outcome:?}"
        );
        assert!(matches!(writable(dir.path()), Outcome::Ok(_)));
        assert_eq!(
            std::fs::read_dir(dir.path()).expect("dir").count(),
            1,
            "the probe file is removed"
        );
    }
}
