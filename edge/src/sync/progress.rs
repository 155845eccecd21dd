//! Progress of an initial pull (a replica pulled from cursor 0, at enrollment or a first start),
//! which for a large chain takes a while: a bar on a terminal, log lines otherwise.
//!
//! Updated once per pulled page, never per row, so reporting costs the pull nothing.

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use std::io::IsTerminal;
use std::time::{Duration, Instant};

/// How often a progress line is logged when stderr is not a terminal (the first page and the
/// end are always logged).
pub const LOG_EVERY: Duration = Duration::from_secs(5);

/// Counts what an initial pull applied and shows it.
#[derive(Debug)]
pub struct PullProgress {
    started: Instant,
    rows: u64,
    output: Output,
}

#[derive(Debug)]
enum Output {
    /// An operator watching a terminal: a bar over the change log, with rows and rate.
    Bar(ProgressBar),
    /// Under systemd or piped: a log line at most every `every`.
    Lines {
        every: Duration,
        last: Option<Instant>,
    },
}

impl PullProgress {
    /// A bar when stderr is a terminal, log lines every [`LOG_EVERY`] otherwise.
    pub fn on_stderr() -> Self {
        if std::io::stderr().is_terminal() {
            let bar = ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr());
            let style = ProgressStyle::with_template(
                "initial pull [{bar:30}] change {pos}/{len} · {msg} · {elapsed}",
            )
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> ");
            bar.set_style(style);
            bar.set_message("waiting for central");
            Self::with_output(Output::Bar(bar))
        } else {
            Self::lines(LOG_EVERY)
        }
    }

    /// Log lines, at most one per `every` besides the first page and the end.
    pub fn lines(every: Duration) -> Self {
        Self::with_output(Output::Lines { every, last: None })
    }

    fn with_output(output: Output) -> Self {
        Self {
            started: Instant::now(),
            rows: 0,
            output,
        }
    }

    /// Rows applied so far.
    pub fn rows(&self) -> u64 {
        self.rows
    }

    /// One page applied: `rows` changes, the cursor now at `cursor` of central's `head`.
    pub fn page(&mut self, rows: usize, cursor: i64, head: i64) {
        self.page_at(Instant::now(), rows, cursor, head);
    }

    fn page_at(&mut self, now: Instant, rows: usize, cursor: i64, head: i64) {
        self.rows += rows as u64;
        let rate = self.rate(now);
        match &mut self.output {
            Output::Bar(bar) => {
                bar.set_length(u64::try_from(head.max(cursor)).unwrap_or(0));
                bar.set_position(u64::try_from(cursor).unwrap_or(0));
                bar.set_message(format!("{} rows, {rate:.0} rows/s", self.rows));
            }
            Output::Lines { every, last } => {
                if last.is_some_and(|at| now.duration_since(at) < *every) {
                    return;
                }
                *last = Some(now);
                tracing::info!(
                    rows = self.rows,
                    cursor,
                    head,
                    "initial pull: {} rows so far ({rate:.0} rows/s), change {cursor} of {head}",
                    self.rows
                );
            }
        }
    }

    /// The pull reached central's head.
    pub fn finish(&mut self) {
        let now = Instant::now();
        let rate = self.rate(now);
        let seconds = now.duration_since(self.started).as_secs_f64();
        let summary = format!(
            "initial pull done: {} rows in {seconds:.1} s ({rate:.0} rows/s)",
            self.rows
        );
        match &self.output {
            Output::Bar(bar) => {
                bar.finish_and_clear();
                eprintln!("{summary}");
            }
            Output::Lines { .. } => tracing::info!(rows = self.rows, "{summary}"),
        }
    }

    fn rate(&self, now: Instant) -> f64 {
        let seconds = now.duration_since(self.started).as_secs_f64();
        if seconds > 0.0 {
            self.rows as f64 / seconds
        } else {
            0.0
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn logged_at(progress: &PullProgress) -> Option<Instant> {
        match progress.output {
            Output::Lines { last, .. } => last,
            Output::Bar(_) => None,
        }
    }

    #[test]
    fn lines_log_the_first_page_then_at_most_once_per_period() {
        let mut progress = PullProgress::lines(Duration::from_secs(5));
        let start = progress.started;
        progress.page_at(start + Duration::from_millis(10), 1000, 1000, 5000);
        assert_eq!(
            logged_at(&progress),
            Some(start + Duration::from_millis(10))
        );
        progress.page_at(start + Duration::from_secs(2), 1000, 2000, 5000);
        assert_eq!(
            logged_at(&progress),
            Some(start + Duration::from_millis(10)),
            "a page within the period is counted, not logged"
        );
        progress.page_at(start + Duration::from_secs(6), 1000, 3000, 5000);
        assert_eq!(logged_at(&progress), Some(start + Duration::from_secs(6)));
        assert_eq!(progress.rows(), 3000);
    }
}
