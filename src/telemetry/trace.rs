//! Spans. Each line a request logs carries its id (`request{request_id=…}`), through
//! [`super::context`]; a log span for it exists only under a log filter with span directives
//! (`[request]=debug`), which need one to match. When traces are exported (`[telemetry]
//! otlp_endpoint`), a request also runs in an OpenTelemetry server span with client spans for
//! its store, provider and upstream calls, and upstreams get its W3C `traceparent`.
//!
//! Rules:
//! 1. Span fields are ids, methods, route prefixes, endpoint and operation names and statuses:
//!    never a path, query, header value, token, cookie or user.
//! 2. The log span (target [`REQUEST_SPAN_TARGET`]) is an ERROR-level span, so that whatever
//!    the log filter, the lines of a request keep its id; a static filter disables it.
//! 3. Trace spans have the target [`TRACE_TARGET`]: the log layer never shows them and the
//!    exporter sees nothing else (no log line becomes a span event).
//! 4. An incoming `traceparent` is the parent only when the peer is trusted
//!    ([`super::request_id::trusted_peer`]); otherwise it is ignored, and when traces are
//!    exported the upstream gets ours instead of the client's.

use std::pin::Pin;

use http::header::HeaderName;
use http::{HeaderMap, Method, StatusCode};
use opentelemetry::propagation::TextMapPropagator as _;
use opentelemetry::trace::TraceContextExt as _;
use opentelemetry_http::{HeaderExtractor, HeaderInjector};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use tracing::field::Empty;
use tracing::instrument::Instrumented;
use tracing::{Instrument as _, Span};
use tracing_opentelemetry::OpenTelemetrySpanExt as _;

use super::context::InRequest;
use super::request_id::{RequestId, X_REQUEST_ID};

/// The target of the spans exported as traces (and of nothing else).
pub const TRACE_TARGET: &str = "gatehouse::trace";
/// The target of the log span of a request (and of nothing else).
pub const REQUEST_SPAN_TARGET: &str = "gatehouse::request";

const TRACEPARENT: HeaderName = HeaderName::from_static("traceparent");
const TRACESTATE: HeaderName = HeaderName::from_static("tracestate");

/// A request's two spans: the trace span (disabled unless traces are exported) and, inside
/// it, the log span (disabled unless the log filter has span directives); and its id, which
/// its lines carry either way.
pub struct RequestSpans {
    trace: Span,
    log: Span,
    id: RequestId,
}

impl RequestSpans {
    /// Opens the spans of a request; `trusted`: whether its `traceparent` may be the parent.
    pub fn start(id: &RequestId, method: &Method, headers: &HeaderMap, trusted: bool) -> Self {
        let trace = tracing::info_span!(
            target: TRACE_TARGET,
            parent: None,
            "request",
            otel.name = %method,
            otel.kind = "server",
            otel.status_code = Empty,
            http.request.method = %method,
            http.route = Empty,
            http.response.status_code = Empty,
            request_id = %id,
        );
        if trusted && !trace.is_disabled() {
            let parent = TraceContextPropagator::new().extract(&HeaderExtractor(headers));
            if parent.span().span_context().is_valid() {
                let _ = trace.set_parent(parent);
            }
        }
        let log = tracing::error_span!(
            target: REQUEST_SPAN_TARGET,
            parent: &trace,
            "request",
            request_id = %id,
        );
        RequestSpans {
            trace,
            log,
            id: id.clone(),
        }
    }

    /// Runs `future` inside both spans, as work for the request.
    pub fn instrument<F: Future + Unpin>(
        &self,
        future: F,
    ) -> Instrumented<Instrumented<InRequest<F>>> {
        InRequest::new(Some(self.id.clone()), future)
            .instrument(self.log.clone())
            .instrument(self.trace.clone())
    }

    /// Runs `f` inside both spans, as work for the request.
    #[cfg(test)]
    pub(crate) fn in_scope<R>(&self, f: impl FnOnce() -> R) -> R {
        let _log = self.log.enter();
        super::context::scope(Some(self.id.clone()), f)
    }

    #[cfg(test)]
    pub(crate) fn log_span(&self) -> &Span {
        &self.log
    }

    /// Records how the request ended on the trace span.
    pub fn finish(&self, route: &str, status: StatusCode) {
        if self.trace.is_disabled() {
            return;
        }
        self.trace.record("http.route", route);
        self.trace
            .record("http.response.status_code", status.as_u16());
        if status.is_server_error() {
            failed(&self.trace);
        }
    }
}

/// A session store call.
pub fn store_span(op: &'static str, backend: &'static str) -> Span {
    tracing::info_span!(
        target: TRACE_TARGET,
        "store",
        otel.kind = "client",
        otel.status_code = Empty,
        db.system.name = backend,
        db.operation.name = op,
    )
}

/// A call to the identity provider's `endpoint` (discovery, jwks, token, revocation).
pub fn provider_span(endpoint: &'static str) -> Span {
    tracing::info_span!(
        target: TRACE_TARGET,
        "provider",
        otel.kind = "client",
        otel.status_code = Empty,
        provider.endpoint = endpoint,
        http.response.status_code = Empty,
    )
}

/// A forwarded request to the upstream of `route`.
pub fn upstream_span(route: &str) -> Span {
    tracing::info_span!(
        target: TRACE_TARGET,
        "upstream",
        otel.kind = "client",
        otel.status_code = Empty,
        http.route = route,
        http.response.status_code = Empty,
    )
}

/// Marks a trace span as failed.
pub fn failed(span: &Span) {
    span.record("otel.status_code", "error");
}

/// Records the status an outgoing call got.
pub fn answered(span: &Span, status: StatusCode) {
    span.record("http.response.status_code", status.as_u16());
}

/// What an upstream request carries about its origin: the request id, and while traces
/// are exported, the `traceparent` of `span` in place of whatever the client sent (rule 4).
pub fn to_upstream(span: &Span, id: &RequestId, headers: &mut HeaderMap) {
    headers.insert(X_REQUEST_ID, id.header_value());
    if span.is_disabled() {
        return;
    }
    // Only an exporting subscriber gives the span an OpenTelemetry context.
    let context = span.context();
    if !context.span().span_context().is_valid() {
        return;
    }
    headers.remove(TRACEPARENT);
    headers.remove(TRACESTATE);
    TraceContextPropagator::new().inject_context(&context, &mut HeaderInjector(headers));
}

/// `future` in the current request's spans and trace context, for work a request spawns
/// (a refresh, a background write) so that its lines and spans stay the request's.
pub fn carry<F: Future>(
    future: F,
) -> opentelemetry::context::WithContext<Instrumented<InRequest<Pin<Box<F>>>>> {
    use opentelemetry::context::FutureExt as _;
    InRequest::new(super::context::current(), Box::pin(future))
        .instrument(Span::current())
        .with_current_context()
}
