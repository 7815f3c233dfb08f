//! OpenTelemetry trace export: OTLP over HTTP (protobuf) to `[telemetry] otlp_endpoint`,
//! in batches from a background thread, through the reqwest client gatehouse already has
//! (no gRPC stack, no second TLS stack).
//!
//! The SDK's batch thread calls the exporter outside any async runtime, so every export is
//! run as a task on the runtime that was current when [`Tracer::start`] ran.

use std::time::Duration;

use bytes::Bytes;
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_http::{HttpClient, HttpError, Request, Response};
use opentelemetry_otlp::{Protocol, WithExportConfig as _, WithHttpConfig as _};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::trace::{Sampler, SdkTracerProvider};
use tracing::Subscriber;
use tracing_subscriber::Layer;
use tracing_subscriber::filter::Targets;
use tracing_subscriber::registry::LookupSpan;

use super::trace::TRACE_TARGET;
use crate::config::OtlpConfig;

/// How long one export may take.
const EXPORT_TIMEOUT: Duration = Duration::from_secs(10);
/// Largest collector answer read (they are a few bytes).
const MAX_ANSWER_BYTES: usize = 64 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum OtelError {
    #[error("telemetry.otlp_endpoint: trace export needs a tokio runtime to send from")]
    NoRuntime,
    #[error("telemetry.otlp_endpoint: cannot build the HTTP client: {0}")]
    Client(#[from] reqwest::Error),
    #[error("telemetry.otlp_endpoint: cannot set up the exporter: {0}")]
    Exporter(#[from] opentelemetry_otlp::ExporterBuildError),
}

/// The running exporter. Spans end up at the collector only through [`Tracer::layer`].
pub struct Tracer {
    provider: SdkTracerProvider,
    service_name: String,
}

impl Tracer {
    /// Starts exporting (within a tokio runtime, which then carries the exports).
    pub fn start(config: &OtlpConfig) -> Result<Tracer, OtelError> {
        let runtime = tokio::runtime::Handle::try_current().map_err(|_| OtelError::NoRuntime)?;
        let client = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .timeout(EXPORT_TIMEOUT)
            .user_agent(concat!("gatehouse/", env!("CARGO_PKG_VERSION")))
            .build()?;
        let exporter = opentelemetry_otlp::SpanExporter::builder()
            .with_http()
            .with_http_client(OnRuntime { client, runtime })
            .with_protocol(Protocol::HttpBinary)
            .with_endpoint(config.endpoint.as_str())
            .with_timeout(EXPORT_TIMEOUT)
            .build()?;
        let sampler =
            Sampler::ParentBased(Box::new(Sampler::TraceIdRatioBased(config.sample_ratio)));
        let provider = SdkTracerProvider::builder()
            .with_batch_exporter(exporter)
            .with_sampler(sampler)
            .with_resource(
                Resource::builder()
                    .with_service_name(config.service_name.clone())
                    .build(),
            )
            .build();
        Ok(Tracer {
            provider,
            service_name: config.service_name.clone(),
        })
    }

    /// The layer that turns trace spans (target [`TRACE_TARGET`], nothing else) into
    /// OpenTelemetry spans.
    pub fn layer<S>(&self) -> Box<dyn Layer<S> + Send + Sync>
    where
        S: Subscriber + for<'a> LookupSpan<'a> + Send + Sync,
    {
        let tracer = self.provider.tracer(self.service_name.clone());
        tracing_opentelemetry::layer()
            .with_tracer(tracer)
            .with_location(false)
            .with_threads(false)
            .with_target(false)
            .with_filter(Targets::new().with_target(TRACE_TARGET, tracing::Level::TRACE))
            .boxed()
    }

    /// Sends every finished span now (blocks: call it off the runtime's threads, or from a
    /// runtime with other workers).
    pub fn flush(&self) {
        if let Err(e) = self.provider.force_flush() {
            tracing::warn!(error = %e, "could not export the last spans");
        }
    }

    /// Exports what is left and stops.
    pub fn shutdown(self) {
        if let Err(e) = self.provider.shutdown() {
            tracing::warn!(error = %e, "trace export did not shut down cleanly");
        }
    }
}

/// The exporter's HTTP client: reqwest on the runtime the exporter was built in.
#[derive(Debug)]
struct OnRuntime {
    client: reqwest::Client,
    runtime: tokio::runtime::Handle,
}

#[async_trait::async_trait]
impl HttpClient for OnRuntime {
    async fn send_bytes(&self, request: Request<Bytes>) -> Result<Response<Bytes>, HttpError> {
        let request = reqwest::Request::try_from(request)?;
        let client = self.client.clone();
        let sent = self.runtime.spawn(async move {
            let mut res = client.execute(request).await?;
            let mut answer = Response::builder().status(res.status());
            if let Some(headers) = answer.headers_mut() {
                *headers = std::mem::take(res.headers_mut());
            }
            let mut body = Vec::new();
            while let Some(chunk) = res.chunk().await? {
                if body.len() + chunk.len() > MAX_ANSWER_BYTES {
                    return Err::<_, HttpError>("the collector's answer is too large".into());
                }
                body.extend_from_slice(&chunk);
            }
            Ok(answer.body(Bytes::from(body))?)
        });
        sent.await?
    }
}
