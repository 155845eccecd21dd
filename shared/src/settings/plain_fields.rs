//! Human log lines' fields when they are not coloured: the same text as tracing-subscriber's
//! `DefaultFields` without colour (`name=value`, separated by spaces), written without its
//! colour machinery.
//!
//! Every request opens a span whose fields (method, path, request id) are formatted when the span
//! is created. `DefaultFields` paints each field's name and `=` through `nu_ansi_term`, even with
//! colour off: two styled strings and a nested format for every field, about 5,500 instructions
//! for the request span, several percent of a kiosk lookup. Here a plain field is its name, `=`
//! and its value's `Debug`; `log.` fields are skipped, as `DefaultVisitor` skips them. The message
//! and errors (with their source lists) are handed to `DefaultVisitor`, so their escaping and
//! layout stay tracing-subscriber's own.

use std::fmt;
use tracing::field::{Field, Visit};
use tracing_subscriber::field::{MakeVisitor, VisitFmt, VisitOutput};
use tracing_subscriber::fmt::format::{DefaultVisitor, Writer};

/// The `FormatFields` of uncoloured human lines.
#[derive(Clone, Copy, Debug, Default)]
pub struct PlainFields;

impl<'a> MakeVisitor<Writer<'a>> for PlainFields {
    type Visitor = PlainVisitor<'a>;

    fn make_visitor(&self, writer: Writer<'a>) -> Self::Visitor {
        PlainVisitor {
            writer,
            pending: Pending::default(),
            is_empty: true,
            result: Ok(()),
        }
    }
}

pub struct PlainVisitor<'a> {
    writer: Writer<'a>,
    /// Plain fields not yet handed to `writer`: a span's fields go into its (empty) `String` in
    /// one write, one allocation, instead of growing it field by field.
    pending: Pending,
    is_empty: bool,
    result: fmt::Result,
}

/// Text on the stack, handed on in one piece.
struct Pending {
    bytes: [u8; Pending::CAPACITY],
    len: usize,
}

impl Pending {
    const CAPACITY: usize = 256;
}

impl Default for Pending {
    fn default() -> Self {
        Self {
            bytes: [0; Self::CAPACITY],
            len: 0,
        }
    }
}

impl fmt::Write for Pending {
    fn write_str(&mut self, text: &str) -> fmt::Result {
        let end = self.len + text.len();
        let room = self.bytes.get_mut(self.len..end).ok_or(fmt::Error)?;
        room.copy_from_slice(text.as_bytes());
        self.len = end;
        Ok(())
    }
}

impl PlainVisitor<'_> {
    /// Hands the pending text to the writer.
    fn flush(&mut self) {
        if self.pending.len > 0 {
            let text = std::str::from_utf8(&self.pending.bytes[..self.pending.len])
                .expect("only whole strings are written to the pending text");
            if self.result.is_ok() {
                self.result = self.writer.write_str(text);
            }
            self.pending.len = 0;
        }
    }

    fn delegate(&mut self, record: impl FnOnce(&mut DefaultVisitor<'_>)) {
        self.flush();
        let mut default = DefaultVisitor::new(self.writer.by_ref(), self.is_empty);
        record(&mut default);
        self.result = default.finish();
        // Everything handed over is written.
        self.is_empty = false;
    }

    fn write_plain(&mut self, name: &str, value: &dyn fmt::Debug) {
        use fmt::Write as _;
        // A raw identifier is shown without its `r#`, as `DefaultVisitor` shows it.
        let name = name.strip_prefix("r#").unwrap_or(name);
        let separator = if self.is_empty { "" } else { " " };
        self.is_empty = false;
        let start = self.pending.len;
        let written = write!(self.pending, "{separator}{name}={value:?}");
        if written.is_err() {
            // Longer than the room left: the field goes straight to the writer.
            self.pending.len = start;
            self.flush();
            if self.result.is_ok() {
                self.result = write!(self.writer, "{separator}{name}={value:?}");
            }
        }
    }
}

impl Visit for PlainVisitor<'_> {
    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            // A message is written unquoted, escape codes neutralised: tracing-subscriber's way.
            if self.result.is_ok() {
                self.delegate(|default| default.record_str(field, value));
            }
        } else {
            // Any other text is its `Debug` (quoted), as `DefaultVisitor` writes it.
            self.record_debug(field, &value);
        }
    }

    fn record_error(&mut self, field: &Field, value: &(dyn std::error::Error + 'static)) {
        if self.result.is_err() {
            return;
        }
        self.delegate(|default| default.record_error(field, value));
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        if self.result.is_err() {
            return;
        }
        let name = field.name();
        if name.starts_with("log.") {
            // Log metadata the line already shows; `DefaultVisitor` skips it too.
            return;
        }
        if name == "message" {
            self.delegate(|default| default.record_debug(field, value));
        } else {
            self.write_plain(name, value);
        }
    }
}

impl VisitOutput<fmt::Result> for PlainVisitor<'_> {
    fn finish(mut self) -> fmt::Result {
        self.flush();
        self.result
    }
}

impl VisitFmt for PlainVisitor<'_> {
    fn writer(&mut self) -> &mut dyn fmt::Write {
        self.flush();
        &mut self.writer
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};
    use tracing_subscriber::fmt::MakeWriter;
    use tracing_subscriber::fmt::format::DefaultFields;

    #[derive(Clone, Default)]
    struct Captured(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Captured {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            self.0.lock().expect("log buffer").extend_from_slice(bytes);
            Ok(bytes.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    impl<'a> MakeWriter<'a> for Captured {
        type Writer = Captured;
        fn make_writer(&'a self) -> Self::Writer {
            self.clone()
        }
    }

    #[derive(Debug)]
    struct Outer(std::io::Error);
    impl fmt::Display for Outer {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("the write failed")
        }
    }
    impl std::error::Error for Outer {
        fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
            Some(&self.0)
        }
    }

    /// The lines a span and the events inside it produce, with fields of every kind.
    fn log_lines<N>(fields: N) -> String
    where
        N: for<'w> tracing_subscriber::fmt::FormatFields<'w> + Send + Sync + 'static,
    {
        let captured = Captured::default();
        let subscriber = tracing_subscriber::fmt()
            .with_ansi(false)
            .without_time()
            .fmt_fields(fields)
            .with_writer(captured.clone())
            .finish();
        tracing::subscriber::with_default(subscriber, || {
            let span = tracing::info_span!(
                "request",
                method = %axum::http::Method::GET,
                path = %"/v1/customers",
                request_id = %"0190b7c2-3f1e-7c3a-9d2e-5b8f0a1c2d3e",
            );
            let _entered = span.enter();
            let error = Outer(std::io::Error::other("disk full"));
            tracing::info!(
                count = 3,
                ok = true,
                name = "Ada \"Lovelace\"",
                r#type = "kiosk",
                "answered \x1b[31min red\x1b[0m {} rows",
                3
            );
            tracing::warn!(
                error = &error as &(dyn std::error::Error + 'static),
                "no luck"
            );
            tracing::error!(detail = ?Some(7), "plain {}", "message");
            let long = "x".repeat(300);
            tracing::info!(before = 1, long = %long, after = 2);
        });
        let bytes = captured.0.lock().expect("log buffer").clone();
        String::from_utf8(bytes).expect("utf-8 log")
    }

    #[test]
    fn lines_are_the_same_text_as_tracing_subscribers_own_fields_without_colour() {
        let plain = log_lines(PlainFields);
        let default = log_lines(DefaultFields::new());
        assert_eq!(plain, default);
        assert!(
            plain.contains(
                "request{method=GET path=/v1/customers request_id=0190b7c2-3f1e-7c3a-9d2e-5b8f0a1c2d3e}"
            ),
            "{plain}"
        );
        assert!(
            plain.contains(r#"count=3 ok=true name="Ada \"Lovelace\"" type="kiosk""#),
            "{plain}"
        );
        assert!(plain.contains("error.sources=[disk full]"), "{plain}");
        assert!(
            plain.contains(&format!("before=1 long={} after=2", "x".repeat(300))),
            "a field longer than the pending room keeps its place: {plain}"
        );
        assert!(
            !plain.contains('\x1b'),
            "escape codes in a message are neutralised: {plain}"
        );
    }
}
