//! Span fields of JSON lines. tracing-subscriber's `JsonFields` gathers a span's fields into
//! a map of JSON values and serializes that, for every span when it opens; a request's span
//! has one field (its id), so that is several allocations per request for twenty bytes of
//! JSON. [`SpanFields`] writes a span of at most one plain field itself, byte for byte as
//! `JsonFields` would, and hands every other span to `JsonFields`.

use std::fmt::{self, Write as _};

use tracing::field::{Field, Visit};
use tracing_subscriber::field::RecordFields;
use tracing_subscriber::fmt::format::{JsonFields, Writer};
use tracing_subscriber::fmt::{FormatFields, FormattedFields};

/// `JsonFields`, with spans of at most one string or `Display`/`Debug` field written directly.
#[derive(Debug, Default)]
pub struct SpanFields;

impl<'w> FormatFields<'w> for SpanFields {
    fn format_fields<R: RecordFields>(&self, mut writer: Writer<'w>, fields: R) -> fmt::Result {
        let mut shape = Shape::default();
        fields.record(&mut shape);
        if !shape.plain() {
            return JsonFields::new().format_fields(writer, fields);
        }
        let mut direct = Direct {
            writer: &mut writer,
            result: Ok(()),
        };
        fields.record(&mut direct);
        direct.result?;
        if shape.fields == 0 {
            writer.write_str("{}")?;
        }
        Ok(())
    }

    fn add_fields(
        &self,
        current: &'w mut FormattedFields<Self>,
        fields: &tracing::span::Record<'_>,
    ) -> fmt::Result {
        // Merging needs `JsonFields`' own parse and re-serialization.
        let mut theirs = FormattedFields::<JsonFields>::new(std::mem::take(&mut current.fields));
        let result = JsonFields::new().add_fields(&mut theirs, fields);
        current.fields = theirs.fields;
        result
    }
}

/// How many fields a span has, and whether the one it has is written the plain way.
#[derive(Default)]
struct Shape {
    fields: usize,
    plain: bool,
}

impl Shape {
    fn plain(&self) -> bool {
        self.fields == 0 || (self.fields == 1 && self.plain)
    }
}

impl Visit for Shape {
    fn record_str(&mut self, _: &Field, _: &str) {
        self.fields += 1;
        self.plain = true;
    }

    fn record_debug(&mut self, field: &Field, _: &dyn fmt::Debug) {
        self.fields += 1;
        // `JsonFields` renames `r#` fields and skips `log.` ones.
        self.plain = !field.name().starts_with("r#") && !field.name().starts_with("log.");
    }

    fn record_i64(&mut self, _: &Field, _: i64) {
        self.fields += 1;
    }

    fn record_u64(&mut self, _: &Field, _: u64) {
        self.fields += 1;
    }

    fn record_bool(&mut self, _: &Field, _: bool) {
        self.fields += 1;
    }

    fn record_f64(&mut self, _: &Field, _: f64) {
        self.fields += 1;
    }
}

/// Writes the one plain field as `{"name":"value"}`.
struct Direct<'a, 'w> {
    writer: &'a mut Writer<'w>,
    result: fmt::Result,
}

impl Direct<'_, '_> {
    fn open(&mut self, field: &Field) -> fmt::Result {
        self.writer.write_str("{")?;
        quoted(self.writer, field.name())?;
        self.writer.write_str(":\"")
    }
}

impl Visit for Direct<'_, '_> {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.result = self
            .open(field)
            .and_then(|()| Escaped(self.writer).write_str(value))
            .and_then(|()| self.writer.write_str("\"}"));
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.result = self
            .open(field)
            .and_then(|()| write!(Escaped(self.writer), "{value:?}"))
            .and_then(|()| self.writer.write_str("\"}"));
    }
}

/// `s` as a JSON string, quoted and escaped as serde_json escapes it.
pub(super) fn quoted(out: &mut dyn fmt::Write, s: &str) -> fmt::Result {
    out.write_char('"')?;
    Escaped(out).write_str(s)?;
    out.write_char('"')
}

/// Text inside a JSON string, escaped as serde_json escapes it.
struct Escaped<'a>(&'a mut dyn fmt::Write);

impl fmt::Write for Escaped<'_> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        let mut plain = 0;
        for (i, b) in s.bytes().enumerate() {
            let escape = match b {
                b'"' => "\\\"",
                b'\\' => "\\\\",
                b'\n' => "\\n",
                b'\r' => "\\r",
                b'\t' => "\\t",
                0x08 => "\\b",
                0x0c => "\\f",
                0..0x20 => "",
                _ => continue,
            };
            self.0.write_str(&s[plain..i])?;
            if escape.is_empty() {
                write!(self.0, "\\u{b:04x}")?;
            } else {
                self.0.write_str(escape)?;
            }
            plain = i + 1;
        }
        self.0.write_str(&s[plain..])
    }
}

#[cfg(test)]
mod tests {
    use tracing_subscriber::fmt;
    use tracing_subscriber::fmt::format::FmtSpan;
    use tracing_subscriber::layer::SubscriberExt as _;

    use super::*;
    use crate::telemetry::testing::Buffer;

    /// The JSON lines logged by `f`, span fields written by `N`.
    fn lines<N>(fields: N, f: impl FnOnce()) -> String
    where
        N: for<'w> FormatFields<'w> + Send + Sync + 'static,
    {
        let buf = Buffer::default();
        let layer = fmt::layer()
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .with_span_list(true)
            .without_time()
            .with_span_events(FmtSpan::CLOSE)
            .fmt_fields(fields)
            .with_writer(buf.writer());
        tracing::subscriber::with_default(tracing_subscriber::registry().with(layer), f);
        buf.text()
    }

    #[test]
    fn span_fields_read_exactly_as_json_fields_writes_them() {
        let spans = || {
            let id = "6f1c\"\\\n\t\u{1}\u{7f}ü";
            let spans = [
                tracing::error_span!("request", request_id = %"6f1cabcdef"),
                tracing::error_span!("escaped", request_id = %id),
                tracing::error_span!("str", name = id),
                tracing::error_span!("debug", value = ?id),
                tracing::error_span!("none"),
                tracing::error_span!("two", a = 1u64, b = "x"),
                tracing::error_span!("number", n = -3i64),
                tracing::error_span!("raw", r#type = %"t"),
                tracing::error_span!("late", v = tracing::field::Empty),
            ];
            spans[8].record("v", "recorded later");
            for span in &spans {
                let _in = span.enter();
                tracing::info!("inside");
            }
        };
        let ours = lines(SpanFields, spans);
        let theirs = lines(JsonFields::new(), spans);
        assert_eq!(ours.lines().count(), 18, "{ours}");
        for (ours, theirs) in ours.lines().zip(theirs.lines()) {
            assert_eq!(ours, theirs);
        }
    }
}
