//! OpenTelemetry: spans exported over OTLP/HTTP (protobuf) to an in-process collector stub: a
//! server span per request, client spans for store, provider and upstream calls under it, the
//! upstream's W3C `traceparent` naming the upstream span; a trusted caller's trace continues.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "tests fail loudly"
)]

mod support;

use std::sync::Arc;

use gatehouse::telemetry::LogFormat;
use gatehouse::telemetry::otel::Tracer;
use reqwest::Method;
use support::collector::{Collector, SERVER, Span, attr, hex};
use support::*;

/// Starts exporting to `collector` and captures this test's logs with the exporter's layer.
fn export_to(collector: &Collector) -> Arc<Tracer> {
    let tracer = Arc::new(Tracer::start(&collector.config()).unwrap());
    capture_logs_as(LogFormat::Json, "info", vec![tracer.layer()]);
    tracer
}

/// Exports every finished span (the batch thread blocks; the runtime keeps running).
async fn flush(tracer: &Arc<Tracer>) {
    let tracer = Arc::clone(tracer);
    tokio::task::spawn_blocking(move || tracer.flush())
        .await
        .unwrap();
}

fn children<'a>(spans: &'a [Span], parent: &Span) -> Vec<&'a Span> {
    spans
        .iter()
        .filter(|s| s.parent_span_id == parent.span_id && s.trace_id == parent.trace_id)
        .collect()
}

/// The server span of the request whose response carried `request_id`.
fn server_span<'a>(spans: &'a [Span], request_id: &str) -> &'a Span {
    spans
        .iter()
        .find(|s| s.kind == SERVER && attr(s, "request_id").as_deref() == Some(request_id))
        .unwrap_or_else(|| panic!("no server span for {request_id} in {spans:#?}"))
}

const CLIENT: i32 = 3;

#[tokio::test]
async fn an_api_call_is_a_server_span_with_store_and_upstream_children_and_the_upstream_gets_its_traceparent()
 {
    let collector = Collector::start().await;
    let tracer = export_to(&collector);
    let stack = Stack::start().await;
    let mut b = stack.browser();
    let callback = b.login("/").await;
    let callback_id = callback.headers()["x-request-id"]
        .to_str()
        .unwrap()
        .to_owned();
    let session_cookie = b.session_cookie().unwrap();
    let res = b.api(Method::GET, "/api/things/42?q=secret-query").await;
    assert_eq!(res.status(), 200);
    let id = res.headers()["x-request-id"].to_str().unwrap().to_owned();
    let seen = stack.upstream.last();
    flush(&tracer).await;
    let spans = collector.spans();

    let server = server_span(&spans, &id);
    assert_eq!(
        server.name, "GET",
        "named by method (routes are an attribute)"
    );
    assert_eq!(attr(server, "http.route").as_deref(), Some("/api/"));
    assert_eq!(attr(server, "http.request.method").as_deref(), Some("GET"));
    assert_eq!(
        attr(server, "http.response.status_code").as_deref(),
        Some("200")
    );
    assert!(
        server.parent_span_id.is_empty(),
        "a root: the client sent no traceparent"
    );
    let kids = children(&spans, server);
    let store = kids
        .iter()
        .find(|s| s.name == "store")
        .unwrap_or_else(|| panic!("store span under {kids:#?}"));
    assert_eq!(store.kind, CLIENT);
    assert_eq!(attr(store, "db.operation.name").as_deref(), Some("get"));
    assert_eq!(attr(store, "db.system.name").as_deref(), Some("memory"));
    let upstream = kids
        .iter()
        .find(|s| s.name == "upstream")
        .expect("upstream span");
    assert_eq!(upstream.kind, CLIENT);
    assert_eq!(
        attr(upstream, "http.response.status_code").as_deref(),
        Some("200")
    );
    // W3C trace context: version, our trace id, the upstream span as parent, sampled.
    let traceparent = seen.header("traceparent").expect("traceparent upstream");
    assert_eq!(
        traceparent,
        format!("00-{}-{}-01", hex(&server.trace_id), hex(&upstream.span_id))
    );
    assert_eq!(seen.header("x-request-id"), Some(id.as_str()));

    // The callback's span has the provider's token call under it.
    let callback_span = server_span(&spans, &callback_id);
    let provider = children(&spans, callback_span)
        .into_iter()
        .find(|s| s.name == "provider")
        .expect("provider span under the callback");
    assert_eq!(
        attr(provider, "provider.endpoint").as_deref(),
        Some("token")
    );
    assert_eq!(
        attr(provider, "http.response.status_code").as_deref(),
        Some("200")
    );

    // Nothing secret, and no path beyond the route prefix, went to the collector.
    let raw = collector.raw();
    let bearer = seen
        .header("authorization")
        .unwrap()
        .trim_start_matches("Bearer ")
        .to_owned();
    for leak in [
        bearer.as_str(),
        session_cookie.as_str(),
        "secret-query",
        "things/42",
    ] {
        assert!(!raw.contains(leak), "{leak:?} exported");
    }
}

#[tokio::test]
async fn a_trusted_callers_trace_continues_and_the_upstream_gets_our_span_as_parent() {
    let collector = Collector::start().await;
    let tracer = export_to(&collector);
    let stack = Stack::with_server(
        ProviderOptions::default(),
        "trusted_proxies = [\"127.0.0.1/32\"]",
        "",
    )
    .await;
    let (trace_id, caller_span) = ("4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7");
    // From loopback, listed as a trusted proxy.
    let res = reqwest::Client::new()
        .get(stack.gh.url("/public/page"))
        .header("traceparent", format!("00-{trace_id}-{caller_span}-01"))
        .header("tracestate", "vendor=caller")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let id = res.headers()["x-request-id"].to_str().unwrap().to_owned();
    let seen = stack.upstream.last();
    flush(&tracer).await;
    let spans = collector.spans();
    let server = server_span(&spans, &id);
    assert_eq!(hex(&server.trace_id), trace_id);
    assert_eq!(hex(&server.parent_span_id), caller_span);
    let upstream = children(&spans, server)
        .into_iter()
        .find(|s| s.name == "upstream")
        .expect("upstream span");
    assert_eq!(
        seen.all("traceparent"),
        vec![format!("00-{trace_id}-{}-01", hex(&upstream.span_id))]
    );
    assert_eq!(
        seen.all("tracestate"),
        vec!["vendor=caller"],
        "the caller's state goes on"
    );
}

#[tokio::test]
async fn an_untrusted_callers_traceparent_starts_no_trace_of_ours() {
    let collector = Collector::start().await;
    let tracer = export_to(&collector);
    let mut headers = http::HeaderMap::new();
    headers.insert(
        "traceparent",
        http::HeaderValue::from_static("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"),
    );
    let id = gatehouse::telemetry::RequestId::generate();
    let spans =
        gatehouse::telemetry::trace::RequestSpans::start(&id, &http::Method::GET, &headers, false);
    spans.instrument(Box::pin(async {})).await;
    spans.finish("/api/", http::StatusCode::OK);
    drop(spans);
    flush(&tracer).await;
    let exported = collector.spans();
    let server = server_span(&exported, id.as_str());
    assert_ne!(hex(&server.trace_id), "4bf92f3577b34da6a3ce929d0e0e4736");
    assert!(server.parent_span_id.is_empty());
}

#[tokio::test]
async fn a_failed_upstream_call_marks_its_spans_as_errors() {
    let collector = Collector::start().await;
    let tracer = export_to(&collector);
    let provider = TestProvider::start(ProviderOptions::default()).await;
    let upstream = EchoUpstream::start().await;
    // The /api/ route points at a port nobody listens on.
    let text = config(&provider, &upstream, "").replacen(&upstream.url(), "http://127.0.0.1:1", 1);
    let gh = Gatehouse::start(&text).await;
    let mut b = Browser::new(&gh.origin);
    b.login("/").await;
    let res = b.api(Method::GET, "/api/x").await;
    assert_eq!(res.status(), 502);
    let id = res.headers()["x-request-id"].to_str().unwrap().to_owned();
    flush(&tracer).await;
    let spans = collector.spans();
    let server = server_span(&spans, &id);
    assert_eq!(
        server.status.as_ref().map(|s| s.code),
        Some(2),
        "error status"
    );
    let upstream = children(&spans, server)
        .into_iter()
        .find(|s| s.name == "upstream")
        .expect("upstream span");
    assert_eq!(upstream.status.as_ref().map(|s| s.code), Some(2));
}

#[tokio::test]
async fn without_trace_export_a_clients_traceparent_passes_through_untouched() {
    let stack = Stack::start().await;
    let sent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    let res = reqwest::Client::new()
        .get(stack.gh.url("/public"))
        .header("traceparent", sent)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(stack.upstream.last().all("traceparent"), vec![sent]);
}
