//! Observability: logs (`logs`; the access line in `access`; per-worker batches in `batch`;
//! the request a line is for in `context`; request span fields in JSON in `span_json`), metrics and their listener (`metrics`; the
//! request path's in `tally`; `outcomes`, `scrape`), request ids (`request_id`), spans and
//! their export (`trace`, `otel`).
//!
//! Rules:
//! 1. Log lines, metric labels and span fields carry methods, route prefixes, endpoint names,
//!    statuses, latencies and ids, never a token, code, cookie value, session id, URL or
//!    user: secrets travel in [`crate::secret::Secret`], whose `Debug`/`Display` are redacted.
//! 2. Log output never blocks a request on the terminal or a pipe: lines go through a
//!    background writer, flushed by [`Guard::shutdown`] before the process exits.

pub mod access;
pub mod batch;
pub mod context;
pub mod logs;
pub mod metrics;
pub mod otel;
pub mod outcomes;
pub mod request_id;
pub mod scrape;
mod span_json;
pub mod tally;
#[cfg(test)]
mod testing;
pub mod trace;

pub use logs::LogFormat;
pub use request_id::RequestId;

use std::time::Instant;

use http::{Request, Response};
use tracing::Instrument as _;
use tracing_appender::non_blocking::{NonBlockingBuilder, WorkerGuard};
use tracing_subscriber::Registry;
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::util::SubscriberInitExt as _;

use crate::config::OtlpConfig;
use crate::error::Error;
use crate::response::Body;
use metrics::Metrics;

/// Log lines buffered for the background writer; past this, logging waits (nothing is dropped).
const LOG_BUFFER_LINES: usize = 128_000;
/// Bytes the background writer gathers before a write; it flushes whenever the queue is empty.
const LOG_WRITE_BUFFER: usize = 64 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum TelemetryError {
    #[error(transparent)]
    Otel(#[from] otel::OtelError),
    #[error("a global tracing subscriber is already installed")]
    AlreadyInstalled,
}

/// Keeps log output and trace export running; [`Guard::shutdown`] flushes both.
#[must_use = "dropping the guard stops log output"]
pub struct Guard {
    tracer: Option<otel::Tracer>,
    logs: WorkerGuard,
}

impl Guard {
    /// Exports the remaining spans, then writes the remaining log lines (blocking).
    pub fn shutdown(self) {
        if let Some(tracer) = self.tracer {
            tracer.shutdown();
        }
        drop(self.logs);
    }
}

/// Installs the process's subscriber: logs in `format` filtered by `filter` (`RUST_LOG`
/// syntax, default `info`) on stderr, and spans to `otlp` when set (call it within the tokio
/// runtime that will carry the exports).
pub fn init(
    filter: Option<&str>,
    format: LogFormat,
    otlp: Option<&OtlpConfig>,
) -> Result<Guard, TelemetryError> {
    let (writer, logs) = NonBlockingBuilder::default()
        .lossy(false)
        .buffered_lines_limit(LOG_BUFFER_LINES)
        .thread_name("gatehouse-log")
        // Buffered: the writer flushes whenever it has drained what is queued, so under load
        // one write(2) carries many lines instead of one each.
        .finish(std::io::BufWriter::with_capacity(
            LOG_WRITE_BUFFER,
            std::io::stderr(),
        ));
    let tracer = otlp.map(otel::Tracer::start).transpose()?;
    let mut layers = vec![logs::layer(
        format,
        filter.unwrap_or(logs::DEFAULT_FILTER),
        batch::Batched::new(writer),
    )];
    if let Some(tracer) = &tracer {
        layers.push(tracer.layer());
    }
    // Also routes the `log` records of dependencies into the same output.
    Registry::default()
        .with(layers)
        .try_init()
        .map_err(|_| TelemetryError::AlreadyInstalled)?;
    Ok(Guard { tracer, logs })
}

/// Sends `req` upstream with `send`, in an `upstream` span, with the request id (and trace
/// context) attached, timing it for `gatehouse_upstream_duration_seconds{route}`.
pub async fn upstream_call<B, F>(
    metrics: &Metrics,
    route: &str,
    id: &RequestId,
    mut req: Box<Request<B>>,
    send: impl FnOnce(Box<Request<B>>) -> F,
) -> Result<Response<Body>, Error>
where
    F: Future<Output = Result<Response<Body>, Error>>,
{
    let span = trace::upstream_span(route);
    trace::to_upstream(&span, id, req.headers_mut());
    let started = Instant::now();
    // Without a tracer the span records nothing: no wrapper (a move of the whole call).
    let result = if span.is_disabled() {
        send(req).await
    } else {
        send(req).instrument(span.clone()).await
    };
    metrics.upstream(route, started.elapsed());
    match &result {
        Ok(res) => trace::answered(&span, res.status()),
        Err(_) => trace::failed(&span),
    }
    result
}
