//! Logging set-up: human-readable lines or one JSON object per line, on stderr (journald under
//! systemd), filtered by `RUST_LOG` (default `info`).

use super::plain_fields::PlainFields;
use serde::{Deserialize, Serialize};
use std::io::IsTerminal;

/// How log lines are written: the `log_format` setting of both services.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// One readable line per event.
    #[default]
    Human,
    /// One JSON object per line: `timestamp`, `level`, `target`, `fields` (with `message`), the
    /// current `span` and the list of enclosing `spans` (e.g. a request's `request_id`), for a log
    /// shipper to index.
    Json,
}

/// Installs the global subscriber writing in `format`.
///
/// Human lines are coloured only on a terminal, and never with `NO_COLOR` set: under systemd,
/// stderr goes to journald, where colour codes would show up as escape sequences in
/// `journalctl` and in anything that ships the journal.
pub fn init_tracing(format: LogFormat) {
    let filter =
        tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into());
    let no_color = std::env::var_os("NO_COLOR").is_some_and(|v| !v.is_empty());
    let colour = std::io::stderr().is_terminal() && !no_color;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(colour)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Human if colour => builder.init(),
        LogFormat::Human => builder.fmt_fields(PlainFields).init(),
        LogFormat::Json => builder
            .json()
            .with_current_span(true)
            .with_span_list(true)
            .init(),
    }
}
