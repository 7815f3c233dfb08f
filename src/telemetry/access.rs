//! The access line: one per request, logged as a tracing event with the target [`TARGET`]
//! and written by [`Access`], a layer that knows its few fields, instead of
//! tracing-subscriber's general formatter. It reads exactly as that formatter wrote it
//! (text, ANSI text or JSON), request span included; what it skips is the work a general
//! formatter does per event: looking up the current span, reading its stored fields (and in
//! JSON parsing them back), and formatting every value through `fmt`.
//!
//! Rules:
//! 1. The access line goes through the same filter as every other line (`--log`), so
//!    `gatehouse::access=off` turns it off and `warn` drops it; the general formatter never
//!    sees it.
//! 2. Its fields and their order are the stable ones README.md lists; the request id is shown
//!    as the request span's, where every other line of the request has it.

use std::cell::RefCell;
use std::fmt::{self, Write as _};
use std::io::Write as _;
use std::net::IpAddr;
use std::time::Duration;

use http::{Method, StatusCode};
use tracing::field::{Field, Visit};
use tracing::{Event, Subscriber};
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::time::FormatTime;
use tracing_subscriber::layer::{Context, Layer};

use super::request_id::RequestId;
use super::span_json::quoted;

/// The target of the access line (and of nothing else).
pub const TARGET: &str = "gatehouse::access";

/// What the access line says about one request.
pub struct Line<'a> {
    pub request_id: &'a RequestId,
    pub method: &'a Method,
    pub client: IpAddr,
    /// Route prefix or endpoint name (`-` when refused before routing).
    pub route: &'a str,
    pub status: StatusCode,
    /// Until the response head.
    pub latency: Duration,
    /// Whether a live session was found.
    pub session: bool,
}

/// Logs `line` at `info` with the target [`TARGET`].
pub fn log(line: &Line<'_>) {
    tracing::info!(
        target: TARGET,
        request_id = line.request_id.as_str(),
        method = line.method.as_str(),
        client = %crate::forwarded::IpText::new(line.client),
        route = line.route,
        status = line.status.as_u16(),
        latency_us = u64::try_from(line.latency.as_micros()).unwrap_or(u64::MAX),
        session = line.session,
        "request"
    );
}

/// How [`Access`] writes: the log format it stands in for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Style {
    Text { ansi: bool },
    Json,
}

/// Writes access lines to `writer` in `style`, timestamps from `clock`.
pub struct Access<W, T> {
    pub style: Style,
    pub writer: W,
    pub clock: T,
}

/// A line being written and its fields: kept per thread, so that after the first line their
/// strings have room and a line allocates nothing.
#[derive(Default)]
struct Scratch {
    line: String,
    fields: Fields,
}

thread_local! {
    static SCRATCH: RefCell<Scratch> = RefCell::new(Scratch::default());
}

impl<S, W, T> Layer<S> for Access<W, T>
where
    S: Subscriber,
    W: for<'w> MakeWriter<'w> + 'static,
    T: FormatTime + 'static,
{
    fn on_event(&self, event: &Event<'_>, _ctx: Context<'_, S>) {
        if event.metadata().target() != TARGET {
            return;
        }
        let _ = SCRATCH.try_with(|scratch| {
            // A line logged while this one is written (by a writer that logs) takes its own.
            let mut own = Scratch::default();
            let mut held = scratch.try_borrow_mut();
            let Scratch { line, fields } = held.as_deref_mut().unwrap_or(&mut own);
            fields.clear();
            event.record(fields);
            line.clear();
            if self.write(line, fields).is_ok() {
                let _ = self.writer.make_writer().write_all(line.as_bytes());
            }
        });
    }
}

impl<W, T: FormatTime> Access<W, T> {
    fn write(&self, out: &mut String, f: &Fields) -> fmt::Result {
        match self.style {
            Style::Text { ansi: false } => {
                self.clock.format_time(&mut Writer::new(out))?;
                out.push_str("  INFO request{request_id=");
                out.push_str(&f.request_id);
                out.push_str("}: request method=");
                out.push_str(&f.method);
                out.push_str(" client=");
                out.push_str(&f.client);
                out.push_str(" route=");
                debug_str(out, &f.route)?;
                outcome(out, f, [" status=", " latency_us=", " session="]);
            }
            Style::Text { ansi: true } => {
                // As tracing-subscriber paints them: time and separators dimmed, the level
                // green, the span bold, field names italic.
                out.push_str("\x1b[2m");
                self.clock.format_time(&mut Writer::new(out))?;
                out.push_str("\x1b[0m \x1b[32m INFO\x1b[0m \x1b[1mrequest\x1b[0m\x1b[1m{\x1b[0m");
                named(out, "request_id");
                out.push_str(&f.request_id);
                out.push_str("\x1b[1m}\x1b[0m\x1b[2m:\x1b[0m request ");
                named(out, "method");
                out.push_str(&f.method);
                out.push(' ');
                named(out, "client");
                out.push_str(&f.client);
                out.push(' ');
                named(out, "route");
                debug_str(out, &f.route)?;
                out.push(' ');
                named(out, "status");
                number(out, f.status);
                out.push(' ');
                named(out, "latency_us");
                number(out, f.latency_us);
                out.push(' ');
                named(out, "session");
                out.push_str(if f.session { "true" } else { "false" });
            }
            Style::Json => {
                out.push_str("{\"timestamp\":\"");
                self.clock.format_time(&mut Writer::new(out))?;
                out.push_str("\",\"level\":\"INFO\",\"message\":\"request\",\"method\":");
                quoted(out, &f.method)?;
                out.push_str(",\"client\":");
                quoted(out, &f.client)?;
                out.push_str(",\"route\":");
                quoted(out, &f.route)?;
                outcome(
                    out,
                    f,
                    [",\"status\":", ",\"latency_us\":", ",\"session\":"],
                );
                out.push_str(",\"target\":\"gatehouse::access\",\"span\":{\"request_id\":");
                quoted(out, &f.request_id)?;
                out.push_str(",\"name\":\"request\"}}");
            }
        }
        out.push('\n');
        Ok(())
    }
}

/// `n` in decimal, as `{}` writes it.
fn number(out: &mut String, n: u64) {
    out.push_str(itoa::Buffer::new().format(n));
}

/// The status, latency and session fields, each after its label as the format writes it.
fn outcome(out: &mut String, f: &Fields, labels: [&str; 3]) {
    out.push_str(labels[0]);
    number(out, f.status);
    out.push_str(labels[1]);
    number(out, f.latency_us);
    out.push_str(labels[2]);
    out.push_str(if f.session { "true" } else { "false" });
}

/// `name=` as tracing-subscriber paints a field name.
fn named(out: &mut String, name: &str) {
    out.push_str("\x1b[3m");
    out.push_str(name);
    out.push_str("\x1b[0m\x1b[2m=\x1b[0m");
}

/// `value` as `{:?}` writes a `str`, without `fmt` when nothing needs escaping.
fn debug_str(out: &mut String, value: &str) -> fmt::Result {
    if value
        .bytes()
        .all(|b| (b' '..=b'~').contains(&b) && b != b'"' && b != b'\\')
    {
        out.push('"');
        out.push_str(value);
        out.push('"');
        Ok(())
    } else {
        write!(out, "{value:?}")
    }
}

/// The access line's fields, as [`log`] records them.
#[derive(Default)]
struct Fields {
    request_id: String,
    method: String,
    client: String,
    route: String,
    status: u64,
    latency_us: u64,
    session: bool,
}

impl Fields {
    fn clear(&mut self) {
        self.request_id.clear();
        self.method.clear();
        self.client.clear();
        self.route.clear();
        (self.status, self.latency_us, self.session) = (0, 0, false);
    }
}

impl Visit for Fields {
    fn record_str(&mut self, field: &Field, value: &str) {
        let slot = match field.name() {
            "request_id" => &mut self.request_id,
            "method" => &mut self.method,
            "route" => &mut self.route,
            _ => return,
        };
        slot.push_str(value);
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        match field.name() {
            "status" => self.status = value,
            "latency_us" => self.latency_us = value,
            _ => {}
        }
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        if field.name() == "session" {
            self.session = value;
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        if field.name() == "client" {
            let _ = write!(self.client, "{value:?}");
        }
    }
}

#[cfg(test)]
mod tests {
    use tracing_subscriber::fmt;
    use tracing_subscriber::layer::SubscriberExt as _;

    use super::*;
    use crate::telemetry::testing::{Buffer, Fixed};

    /// Lines that differ in every field that has a choice: method, address family, a route
    /// that needs escaping, a failed request without a session.
    fn lines(id: &RequestId) -> [Line<'_>; 2] {
        [
            Line {
                request_id: id,
                method: &Method::GET,
                client: "127.0.0.1".parse().unwrap(),
                route: "/api/",
                status: StatusCode::OK,
                latency: Duration::from_micros(812),
                session: true,
            },
            Line {
                request_id: id,
                method: &Method::POST,
                client: "2001:db8::1".parse().unwrap(),
                route: "/we\"ird\\/ü\u{1}",
                status: StatusCode::SERVICE_UNAVAILABLE,
                latency: Duration::from_secs(3),
                session: false,
            },
        ]
    }

    /// What tracing-subscriber's own formatter wrote for the line before [`Access`] did: the
    /// fields of the event, the request id in the request span.
    fn as_tracing_subscriber_wrote_it(style: Style, line: &Line<'_>) -> String {
        let buf = Buffer::default();
        let layer = match style {
            Style::Text { ansi } => fmt::layer()
                .with_timer(Fixed)
                .with_writer(buf.writer())
                .with_target(false)
                .with_ansi(ansi)
                .boxed(),
            Style::Json => fmt::layer()
                .json()
                .flatten_event(true)
                .with_current_span(true)
                .with_span_list(false)
                .with_timer(Fixed)
                .with_writer(buf.writer())
                .boxed(),
        };
        tracing::subscriber::with_default(tracing_subscriber::registry().with(layer), || {
            let span = tracing::error_span!("request", request_id = %line.request_id);
            let _in = span.enter();
            tracing::info!(
                target: TARGET,
                method = %line.method,
                client = %crate::forwarded::IpText::new(line.client),
                route = line.route,
                status = line.status.as_u16(),
                latency_us = u64::try_from(line.latency.as_micros()).unwrap(),
                session = line.session,
                "request"
            );
        });
        buf.text()
    }

    fn as_access_writes_it(style: Style, line: &Line<'_>) -> String {
        let buf = Buffer::default();
        let access = Access {
            style,
            writer: buf.writer(),
            clock: Fixed,
        };
        tracing::subscriber::with_default(tracing_subscriber::registry().with(access), || {
            log(line)
        });
        buf.text()
    }

    #[test]
    fn access_lines_read_exactly_as_tracing_subscriber_wrote_them_in_every_format() {
        let id = RequestId::choose(&http::HeaderMap::new(), false);
        for style in [
            Style::Text { ansi: false },
            Style::Text { ansi: true },
            Style::Json,
        ] {
            for line in &lines(&id) {
                let theirs = as_tracing_subscriber_wrote_it(style, line);
                assert_eq!(theirs.lines().count(), 1, "{theirs}");
                assert_eq!(as_access_writes_it(style, line), theirs, "{style:?}");
            }
        }
    }

    #[test]
    fn other_events_are_not_access_lines() {
        let buf = Buffer::default();
        let access = Access {
            style: Style::Json,
            writer: buf.writer(),
            clock: Fixed,
        };
        tracing::subscriber::with_default(tracing_subscriber::registry().with(access), || {
            tracing::info!(route = "/api/", status = 200u16, "request");
        });
        assert_eq!(buf.text(), "");
    }
}
