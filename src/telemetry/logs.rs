//! Log output: text or JSON lines, on stderr through a background writer.
//!
//! JSON lines are tracing-subscriber's JSON format with the event's fields at the top level:
//! `timestamp`, `level`, `message`, the event's own fields (`method`, `route`, `status`,
//! `latency_us`, `session`, `error`, …), `target`, and `span` (`{"name":"request",
//! "request_id":"…"}`) on every line logged while a request is handled. Field names are
//! stable; README.md lists them.

use std::cell::RefCell;
use std::fmt::Write as _;
use std::io::IsTerminal as _;
use std::str::FromStr;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use tracing::Subscriber;
use tracing_subscriber::filter::{EnvFilter, FilterExt as _, Targets, filter_fn};
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::time::FormatTime;
use tracing_subscriber::layer::Filter;
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::{Layer, fmt};

use super::access;
use super::context::{Prefixed, Shape};
use super::span_json::SpanFields;
use super::trace::{REQUEST_SPAN_TARGET, TRACE_TARGET};

/// `--log-format` / `GATEHOUSE_LOG_FORMAT`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum LogFormat {
    /// One human-readable line per event.
    #[default]
    Text,
    /// One JSON object per line.
    Json,
}

impl FromStr for LogFormat {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "text" => Ok(LogFormat::Text),
            "json" => Ok(LogFormat::Json),
            other => Err(format!("unknown log format {other:?}: use text or json")),
        }
    }
}

/// The filter used when none (or an invalid one) is given.
pub const DEFAULT_FILTER: &str = "info";

/// The log layer gatehouse runs with, writing to `writer`: `filter` is a `RUST_LOG`-style
/// directive list (invalid → [`DEFAULT_FILTER`]); trace spans never show (`trace` rule 3);
/// access lines are written by [`access::Access`].
pub fn layer<S, W>(format: LogFormat, filter: &str, writer: W) -> Box<dyn Layer<S> + Send + Sync>
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    W: for<'w> MakeWriter<'w> + Send + Sync + 'static,
{
    layer_with(format, filter, writer, std::io::stderr().is_terminal())
}

fn layer_with<S, W>(
    format: LogFormat,
    filter: &str,
    writer: W,
    ansi: bool,
) -> Box<dyn Layer<S> + Send + Sync>
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    W: for<'w> MakeWriter<'w> + Send + Sync + 'static,
{
    let writer = Shared(Arc::new(writer));
    // A static filter decides per call site and needs no spans of requests (their lines name
    // the request through `context`); span directives need them to match.
    let dynamic = !is_static(filter);
    let others = parse_filter::<S>(filter).and(filter_fn(move |meta| {
        let request_span = meta.target() == REQUEST_SPAN_TARGET;
        meta.target() != TRACE_TARGET
            && meta.target() != access::TARGET
            && (dynamic || !request_span)
    }));
    let (general, style) = match format {
        LogFormat::Text => (
            fmt::layer()
                .with_ansi(ansi)
                .event_format(Prefixed {
                    inner: fmt::format()
                        .with_timer(Clock)
                        .with_target(false)
                        .with_ansi(ansi),
                    shape: Shape::Text { ansi },
                })
                .with_writer(writer.clone())
                .with_filter(others)
                .boxed(),
            access::Style::Text { ansi },
        ),
        LogFormat::Json => (
            fmt::layer()
                .fmt_fields(SpanFields)
                .event_format(Prefixed {
                    inner: fmt::format()
                        .json()
                        .flatten_event(true)
                        .with_current_span(true)
                        .with_span_list(false)
                        .with_timer(Clock),
                    shape: Shape::Json,
                })
                .with_writer(writer.clone())
                .with_filter(others)
                .boxed(),
            access::Style::Json,
        ),
    };
    let access_only =
        filter_fn(move |meta| meta.target() == access::TARGET || (dynamic && meta.is_span()));
    let access = access::Access {
        style,
        writer,
        clock: Clock,
    }
    .with_filter(parse_filter::<S>(filter).and(access_only));
    general.and_then(access).boxed()
}

/// One writer for two layers.
struct Shared<W>(Arc<W>);

impl<W> Clone for Shared<W> {
    fn clone(&self) -> Self {
        Shared(Arc::clone(&self.0))
    }
}

impl<'a, W: MakeWriter<'a>> MakeWriter<'a> for Shared<W> {
    type Writer = W::Writer;

    fn make_writer(&'a self) -> Self::Writer {
        self.0.make_writer()
    }

    fn make_writer_for(&'a self, meta: &tracing::Metadata<'_>) -> Self::Writer {
        self.0.make_writer_for(meta)
    }
}

/// Levels by target only (`info`, `gatehouse=debug,warn`) become a static filter, decided once
/// per call site. Anything else (span or field directives) needs `EnvFilter`, which takes a
/// process-wide lock whenever a span is entered or left, so several times per request.
fn parse_filter<S>(filter: &str) -> Box<dyn Filter<S> + Send + Sync>
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    if is_static(filter)
        && let Ok(targets) = filter.parse::<Targets>()
    {
        return Box::new(targets);
    }
    Box::new(EnvFilter::try_new(filter).unwrap_or_else(|_| EnvFilter::new(DEFAULT_FILTER)))
}

/// Whether `filter` is only `target=level` and bare levels or targets, which [`Targets`] reads
/// as `EnvFilter` does.
fn is_static(filter: &str) -> bool {
    !filter.is_empty()
        && filter.split(',').all(|directive| {
            !directive.is_empty()
                && directive
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"_:=-".contains(&b))
        })
}

/// Timestamps as tracing-subscriber's `SystemTime` writes them (RFC 3339, UTC, microseconds),
/// from this thread's text of the current second: the calendar is worked out once a second,
/// not once per line.
struct Clock;

thread_local! {
    /// The second (since the epoch) and its `YYYY-MM-DDTHH:MM:SS`.
    static SECOND: RefCell<(u64, String)> = const { RefCell::new((0, String::new())) };
}

impl FormatTime for Clock {
    fn format_time(&self, w: &mut Writer<'_>) -> std::fmt::Result {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        let (secs, micros) = (now.as_secs(), now.subsec_micros());
        SECOND.with_borrow_mut(|(at, text)| {
            if *at != secs || text.is_empty() {
                let Some(date) = i64::try_from(secs)
                    .ok()
                    .and_then(|s| chrono::DateTime::from_timestamp(s, 0))
                else {
                    return Err(std::fmt::Error);
                };
                text.clear();
                write!(text, "{}", date.format("%Y-%m-%dT%H:%M:%S"))?;
                *at = secs;
            }
            w.write_str(text)
        })?;
        let mut fraction = *b".000000Z";
        let mut rest = micros;
        for digit in fraction[1..7].iter_mut().rev() {
            *digit = b'0' + u8::try_from(rest % 10).unwrap_or(0);
            rest /= 10;
        }
        w.write_str(std::str::from_utf8(&fraction).map_err(|_| std::fmt::Error)?)
    }
}

#[cfg(test)]
mod tests {
    use tracing_subscriber::layer::SubscriberExt as _;

    use super::*;
    use crate::telemetry::request_id::RequestId;
    use crate::telemetry::testing::Buffer;
    use crate::telemetry::trace::{RequestSpans, store_span};

    /// The lines logged by `f` in `format` with `filter`.
    fn logged(format: LogFormat, filter: &str, f: impl FnOnce()) -> Vec<String> {
        let buf = Buffer::default();
        let subscriber =
            tracing_subscriber::registry().with(layer_with(format, filter, buf.writer(), false));
        tracing::subscriber::with_default(subscriber, f);
        buf.text().lines().map(str::to_owned).collect()
    }

    fn in_a_request() {
        let id = RequestId::choose(&http::HeaderMap::new(), false);
        let spans = RequestSpans::start(&id, &http::Method::GET, &http::HeaderMap::new(), false);
        spans.in_scope(|| {
            let store = store_span("get", "memory");
            let _in_store = store.enter();
            tracing::warn!(route = "/api/", status = 503u16, "request failed");
        });
    }

    #[test]
    fn json_lines_carry_stable_top_level_fields_and_the_request_id() {
        let lines = logged(LogFormat::Json, "info", in_a_request);
        assert_eq!(lines.len(), 1, "{lines:?}");
        let line: serde_json::Value = serde_json::from_str(&lines[0]).unwrap();
        assert_eq!(line["level"], "WARN");
        assert_eq!(line["message"], "request failed");
        assert_eq!(line["route"], "/api/");
        assert_eq!(line["status"], 503);
        assert_eq!(line["span"]["name"], "request", "{line}");
        assert_eq!(line["span"]["request_id"].as_str().unwrap().len(), 32);
        assert!(line["timestamp"].is_string() && line["target"].is_string());
    }

    #[test]
    fn text_lines_carry_the_request_id_and_no_trace_span() {
        let lines = logged(LogFormat::Text, "info", in_a_request);
        assert_eq!(lines.len(), 1, "{lines:?}");
        assert!(lines[0].contains("request{request_id="), "{}", lines[0]);
        assert!(!lines[0].contains("store"), "{}", lines[0]);
        assert!(!lines[0].contains("db."), "{}", lines[0]);
    }

    #[test]
    fn the_request_id_survives_a_filter_that_only_keeps_warnings() {
        for format in [LogFormat::Text, LogFormat::Json] {
            let lines = logged(format, "warn", in_a_request);
            assert_eq!(lines.len(), 1);
            assert!(lines[0].contains("request_id"), "{format:?}: {}", lines[0]);
        }
    }

    fn a_request_with_an_access_line() {
        let id = RequestId::choose(&http::HeaderMap::new(), false);
        let spans = RequestSpans::start(&id, &http::Method::GET, &http::HeaderMap::new(), false);
        spans.in_scope(|| {
            tracing::info!("inside a request");
            access::log(&access::Line {
                request_id: &id,
                method: &http::Method::GET,
                client: std::net::Ipv4Addr::LOCALHOST.into(),
                route: "/api/",
                status: http::StatusCode::OK,
                latency: std::time::Duration::from_micros(5),
                session: true,
            });
        });
    }

    #[test]
    fn the_access_line_is_written_once_and_follows_the_log_filter() {
        let access_lines = |lines: &[String]| {
            lines
                .iter()
                .filter(|l| l.contains("request method=GET"))
                .count()
        };
        let lines = logged(LogFormat::Text, "info", a_request_with_an_access_line);
        assert_eq!((lines.len(), access_lines(&lines)), (2, 1), "{lines:?}");
        let lines = logged(LogFormat::Json, "info", a_request_with_an_access_line);
        assert_eq!(lines.len(), 2, "{lines:?}");
        let access: serde_json::Value = serde_json::from_str(&lines[1]).unwrap();
        assert_eq!(access["target"], access::TARGET, "{access}");
        assert_eq!(access["span"]["request_id"].as_str().unwrap().len(), 32);

        let lines = logged(
            LogFormat::Text,
            "gatehouse::access=off,info",
            a_request_with_an_access_line,
        );
        assert_eq!((lines.len(), access_lines(&lines)), (1, 0), "{lines:?}");
        let lines = logged(LogFormat::Text, "warn", a_request_with_an_access_line);
        assert!(lines.is_empty(), "{lines:?}");
        let lines = logged(
            LogFormat::Text,
            "warn,[request]=info",
            a_request_with_an_access_line,
        );
        assert_eq!((lines.len(), access_lines(&lines)), (2, 1), "{lines:?}");
    }

    #[test]
    fn plain_level_lists_take_the_static_filter_and_span_directives_do_not() {
        for plain in [
            "info",
            "warn",
            "gatehouse=debug,warn",
            "hyper_util::client=trace,info",
        ] {
            assert!(is_static(plain), "{plain}");
        }
        for dynamic in [
            "",
            "info,",
            "[request]=debug",
            "info,[{route=x}]=debug",
            "a b",
        ] {
            assert!(!is_static(dynamic), "{dynamic:?}");
        }
    }

    #[test]
    fn a_span_directive_still_filters_by_span() {
        let filter = "warn,[request]=info";
        let lines = logged(LogFormat::Text, filter, || {
            tracing::info!("outside any request");
            let id = RequestId::choose(&http::HeaderMap::new(), false);
            let spans =
                RequestSpans::start(&id, &http::Method::GET, &http::HeaderMap::new(), false);
            spans.in_scope(|| tracing::info!("inside a request"));
        });
        assert_eq!(lines.len(), 1, "{lines:?}");
        assert!(lines[0].contains("inside a request"), "{lines:?}");
        assert_eq!(
            lines[0].matches("request{request_id=").count(),
            1,
            "the span's own, not added again: {lines:?}"
        );
    }

    #[test]
    fn a_static_filter_makes_no_log_span_for_a_request_and_span_directives_do() {
        let made = |filter: &str| {
            let mut made = None;
            logged(LogFormat::Text, filter, || {
                let id = RequestId::choose(&http::HeaderMap::new(), false);
                let spans =
                    RequestSpans::start(&id, &http::Method::GET, &http::HeaderMap::new(), false);
                made = Some(!spans.log_span().is_disabled());
            });
            made.unwrap()
        };
        assert!(!made("info"));
        assert!(!made("gatehouse=debug,warn"));
        assert!(made("warn,[request]=info"));
    }

    #[test]
    fn timestamps_read_as_tracing_subscribers_own() {
        let format = |timer: &dyn FormatTime| {
            let mut text = String::new();
            timer.format_time(&mut Writer::new(&mut text)).unwrap();
            text
        };
        // Taken in the same second (a second boundary in between: try again).
        for _ in 0..3 {
            let ours = format(&Clock);
            let theirs = format(&fmt::time::SystemTime);
            assert_eq!(ours.len(), theirs.len(), "{ours} vs {theirs}");
            assert!(ours.ends_with('Z') && ours.as_bytes()[19] == b'.', "{ours}");
            if ours[..19] == theirs[..19] {
                assert!(ours[20..26].bytes().all(|b| b.is_ascii_digit()), "{ours}");
                return;
            }
        }
        panic!("the two clocks never agreed on the second");
    }

    #[test]
    fn log_formats_parse_case_insensitively_and_refuse_others() {
        assert_eq!("JSON".parse::<LogFormat>(), Ok(LogFormat::Json));
        assert_eq!("text".parse::<LogFormat>(), Ok(LogFormat::Text));
        assert!("xml".parse::<LogFormat>().is_err());
    }
}
