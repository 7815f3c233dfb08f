//! Which request a thread is working for, so that every line it logs meanwhile carries that
//! request's id, without a tracing span per request: a span costs a registry entry, its
//! fields formatted and stored, and every layer's bookkeeping at each poll (about a tenth of
//! the throughput of a forwarded request). [`InRequest`] sets this thread's request around
//! each poll of the request's future, and [`Prefixed`] writes the request into each line as
//! the request span used to: `request{request_id=…}:` in text, `"span":{"request_id":…,
//! "name":"request"}` in JSON.
//!
//! Rules:
//! 1. A line shows the request it was logged for, including from work the request spawned
//!    ([`super::trace::carry`]), and never another's: the thread's request is restored after
//!    each poll, even when the poll panics.
//! 2. Where a real request span is in scope (a log filter with span directives creates one,
//!    see [`super::trace`]), it is what the line shows; nothing is added.
//! 3. The bytes are those the request span gave: [`Prefixed`] adds to the general
//!    formatter's line exactly what it wrote for that span.

use std::cell::RefCell;
use std::fmt::{self, Write as _};
use std::pin::Pin;
use std::task::{Context, Poll};

use tracing::{Event, Subscriber};
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::registry::LookupSpan;

use super::request_id::RequestId;
use super::trace::REQUEST_SPAN_TARGET;

thread_local! {
    static CURRENT: RefCell<Option<RequestId>> = const { RefCell::new(None) };
}

/// This thread's request, if it works for one now.
pub fn current() -> Option<RequestId> {
    CURRENT.with_borrow(Clone::clone)
}

/// Runs `f` as work for the request `id` (for code that is not a future).
pub fn scope<R>(id: Option<RequestId>, f: impl FnOnce() -> R) -> R {
    let _restore = Restore(CURRENT.replace(id));
    f()
}

/// Puts back the request the thread worked for before, when dropped (also by a panic).
struct Restore(Option<RequestId>);

impl Drop for Restore {
    fn drop(&mut self) {
        let outer = self.0.take();
        let _ = CURRENT.try_with(|c| c.replace(outer));
    }
}

/// `inner`, polled as work for its request.
pub struct InRequest<F> {
    id: Option<RequestId>,
    inner: F,
}

impl<F> InRequest<F> {
    pub fn new(id: Option<RequestId>, inner: F) -> Self {
        InRequest { id, inner }
    }
}

impl<F: Future + Unpin> Future for InRequest<F> {
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let this = self.get_mut();
        let restore = Restore(CURRENT.replace(this.id.take()));
        let polled = Pin::new(&mut this.inner).poll(cx);
        // Ours back, the outer one in place.
        this.id = CURRENT.replace(None);
        drop(restore);
        polled
    }
}

/// How lines are written (see [`Prefixed`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shape {
    Text { ansi: bool },
    Json,
}

/// A general formatter `inner` whose lines also name the thread's request (rule 3).
pub struct Prefixed<F> {
    pub inner: F,
    pub shape: Shape,
}

thread_local! {
    /// A line being written, kept for the next one.
    static LINE: RefCell<String> = const { RefCell::new(String::new()) };
}

impl<S, N, F> FormatEvent<S, N> for Prefixed<F>
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'w> FormatFields<'w> + 'static,
    F: FormatEvent<S, N>,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        // Whether the line names spans, and whether one of them is a request's.
        let (spans, spanned) = ctx.event_scope().map_or((false, false), |mut scope| {
            (
                true,
                scope.any(|span| span.metadata().target() == REQUEST_SPAN_TARGET),
            )
        });
        let id = if spanned { None } else { current() };
        let Some(id) = id else {
            return self.inner.format_event(ctx, writer, event);
        };
        LINE.with(|line| {
            let mut own = String::new();
            let mut held = line.try_borrow_mut();
            let line = held.as_deref_mut().unwrap_or(&mut own);
            line.clear();
            self.inner.format_event(ctx, Writer::new(line), event)?;
            self.insert(line, &id, spans)?;
            writer.write_str(line)
        })
    }
}

/// Where the text formatter starts a line's spans: after the timestamp (27 characters) and
/// the level (5), each followed by a space; painted, with their colour codes around them.
const TEXT_SPANS_AT: usize = 27 + 1 + 5 + 1;
const ANSI_SPANS_AT: usize = 4 + 27 + 4 + 1 + 5 + 5 + 4 + 1;

impl<F> Prefixed<F> {
    /// Adds the request to `line`; `spans`: whether the line names spans already (the
    /// request's would have been the outermost).
    fn insert(&self, line: &mut String, id: &RequestId, spans: bool) -> fmt::Result {
        let mut request = String::new();
        let at = match self.shape {
            Shape::Text { ansi: false } => {
                write!(request, "request{{request_id={id}}}:")?;
                TEXT_SPANS_AT
            }
            Shape::Text { ansi: true } => {
                write!(
                    request,
                    "\x1b[1mrequest\x1b[0m\x1b[1m{{\x1b[0m\x1b[3mrequest_id\x1b[0m\x1b[2m=\x1b[0m{id}\x1b[1m}}\x1b[0m\x1b[2m:\x1b[0m"
                )?;
                ANSI_SPANS_AT
            }
            Shape::Json if spans => return Ok(()),
            Shape::Json => {
                // The current span comes last; the line ends with "}\n".
                write!(
                    request,
                    ",\"span\":{{\"request_id\":\"{id}\",\"name\":\"request\"}}"
                )?;
                line.trim_end().len().saturating_sub(1)
            }
        };
        if !spans && matches!(self.shape, Shape::Text { .. }) {
            request.push(' ');
        }
        if line.is_char_boundary(at) && at <= line.len() {
            line.insert_str(at, &request);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use tracing_subscriber::Layer as _;
    use tracing_subscriber::fmt;
    use tracing_subscriber::layer::SubscriberExt as _;

    use super::*;
    use crate::telemetry::span_json::SpanFields;
    use crate::telemetry::testing::{Buffer, Fixed};

    /// The lines `f` logs through a formatter of `shape`, prefixed (ours) or not (the
    /// reference, which gets the request from a real span).
    fn lines(shape: Shape, prefixed: bool, f: impl FnOnce()) -> String {
        let buf = Buffer::default();
        let writer = buf.writer();
        let layer = match (shape, prefixed) {
            (Shape::Text { ansi }, false) => fmt::layer()
                .with_ansi(ansi)
                .event_format(
                    fmt::format()
                        .with_timer(Fixed)
                        .with_target(false)
                        .with_ansi(ansi),
                )
                .with_writer(writer)
                .boxed(),
            (Shape::Text { ansi }, true) => fmt::layer()
                .with_ansi(ansi)
                .event_format(Prefixed {
                    inner: fmt::format()
                        .with_timer(Fixed)
                        .with_target(false)
                        .with_ansi(ansi),
                    shape,
                })
                .with_writer(writer)
                .boxed(),
            (Shape::Json, prefixed) => {
                let json = fmt::format()
                    .json()
                    .flatten_event(true)
                    .with_current_span(true)
                    .with_span_list(false)
                    .with_timer(Fixed);
                let layer = fmt::layer().fmt_fields(SpanFields).with_writer(writer);
                if prefixed {
                    layer.event_format(Prefixed { inner: json, shape }).boxed()
                } else {
                    layer.event_format(json).boxed()
                }
            }
        };
        tracing::subscriber::with_default(tracing_subscriber::registry().with(layer), f);
        buf.text()
    }

    fn events() {
        tracing::warn!(route = "/api/", "a warning");
        let inner = tracing::info_span!("inner", n = 1u64);
        let _in = inner.enter();
        tracing::info!("inside another span");
    }

    #[test]
    fn lines_name_the_request_exactly_as_its_span_did_in_every_format() {
        let id = super::super::request_id::RequestId::choose(&http::HeaderMap::new(), false);
        for shape in [
            Shape::Text { ansi: false },
            Shape::Text { ansi: true },
            Shape::Json,
        ] {
            let theirs = lines(shape, false, || {
                let span = tracing::error_span!("request", request_id = %id);
                let _in = span.enter();
                events();
            });
            let ours = lines(shape, true, || scope(Some(id.clone()), events));
            assert_eq!(theirs.lines().count(), 2, "{theirs}");
            assert_eq!(ours, theirs, "{shape:?}");
            let outside = lines(shape, true, events);
            assert!(!outside.contains("request_id"), "{outside}");
        }
    }

    #[test]
    fn a_request_is_current_only_while_its_future_is_polled() {
        let id = super::super::request_id::RequestId::choose(&http::HeaderMap::new(), false);
        let mut seen = Vec::new();
        let mut future = InRequest::new(
            Some(id.clone()),
            Box::pin(async {
                let first = current();
                tokio::task::yield_now().await;
                (first, current())
            }),
        );
        let waker = std::task::Waker::noop();
        let mut cx = Context::from_waker(waker);
        let outer = super::super::request_id::RequestId::choose(&http::HeaderMap::new(), false);
        scope(Some(outer.clone()), || {
            assert!(Pin::new(&mut future).poll(&mut cx).is_pending());
            seen.push(current());
            match Pin::new(&mut future).poll(&mut cx) {
                Poll::Ready((first, second)) => {
                    assert_eq!(first.as_ref(), Some(&id));
                    assert_eq!(second.as_ref(), Some(&id), "after a pause too");
                }
                Poll::Pending => panic!("not done"),
            }
            seen.push(current());
        });
        assert_eq!(seen, [Some(outer.clone()), Some(outer)]);
        assert_eq!(current(), None);
    }

    #[test]
    fn a_panicking_poll_leaves_no_request_behind() {
        let id = super::super::request_id::RequestId::choose(&http::HeaderMap::new(), false);
        let mut future = InRequest::new(Some(id), Box::pin(async { panic!("boom") }));
        let waker = std::task::Waker::noop();
        let mut cx = Context::from_waker(waker);
        let caught = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            let _ = Pin::new(&mut future).poll(&mut cx);
        }));
        assert!(caught.is_err());
        assert_eq!(current(), None);
    }
}
