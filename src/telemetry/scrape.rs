//! The `/metrics` listener (`server.metrics_listen`): HTTP/1.1, `GET`/`HEAD /metrics` only,
//! a few connections at a time, separate from the public listener so the proxy's routes,
//! limits and host checks never see it and it is never exposed with them.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::header::{ALLOW, CACHE_CONTROL, CONTENT_TYPE};
use http::{HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::sync::Semaphore;

use super::metrics::Metrics;

/// The Prometheus text exposition format.
pub const CONTENT_TYPE_TEXT: &str = "text/plain; version=0.0.4; charset=utf-8";
/// Scrapers served at once; more wait in the accept queue.
const MAX_CONNECTIONS: usize = 16;
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);
/// Histogram samples are drained into buckets at least this often between scrapes.
const UPKEEP_INTERVAL: Duration = Duration::from_secs(5);

/// Serves `/metrics` on the listener bound at start-up until the task is aborted; `None`
/// when metrics are off (or already served).
pub fn spawn(metrics: &Arc<Metrics>) -> Option<tokio::task::JoinHandle<()>> {
    let listener = metrics.take_listener()?;
    let listener = match tokio::net::TcpListener::from_std(listener) {
        Ok(l) => l,
        Err(e) => {
            tracing::error!(error = %e, "cannot serve /metrics (server.metrics_listen)");
            return None;
        }
    };
    tracing::info!(
        listen = %listener.local_addr().map(|a| a.to_string()).unwrap_or_default(),
        "serving /metrics"
    );
    Some(tokio::spawn(serve(listener, Arc::clone(metrics))))
}

async fn serve(listener: tokio::net::TcpListener, metrics: Arc<Metrics>) {
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    let mut upkeep = tokio::time::interval(UPKEEP_INTERVAL);
    loop {
        let permit = tokio::select! {
            permit = Arc::clone(&slots).acquire_owned() => match permit {
                Ok(p) => p,
                Err(_) => return,
            },
            _ = upkeep.tick() => {
                metrics.upkeep();
                continue;
            }
        };
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(e) => {
                    tracing::warn!(error = %e, "accepting a /metrics connection failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = upkeep.tick() => {
                metrics.upkeep();
                continue;
            }
        };
        let metrics = Arc::clone(&metrics);
        tokio::spawn(async move {
            let service = service_fn(move |req| {
                let res = answer(&metrics, &req);
                async move { Ok::<_, std::convert::Infallible>(res) }
            });
            let conn = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(HEADER_READ_TIMEOUT)
                .serve_connection(TokioIo::new(stream), service);
            if let Err(e) = conn.await {
                tracing::debug!(error = %e, "/metrics connection ended with an error");
            }
            drop(permit);
        });
    }
}

fn answer(metrics: &Metrics, req: &Request<Incoming>) -> Response<Full<Bytes>> {
    let (status, body) = match (req.method(), req.uri().path()) {
        (&Method::GET, "/metrics") => (StatusCode::OK, Bytes::from(metrics.render())),
        (&Method::HEAD, "/metrics") => (StatusCode::OK, Bytes::new()),
        (_, "/metrics") => (StatusCode::METHOD_NOT_ALLOWED, Bytes::new()),
        _ => (
            StatusCode::NOT_FOUND,
            Bytes::from_static(b"only /metrics here\n"),
        ),
    };
    let mut res = Response::new(Full::new(body));
    *res.status_mut() = status;
    let h = res.headers_mut();
    h.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    match status {
        StatusCode::OK => {
            h.insert(CONTENT_TYPE, HeaderValue::from_static(CONTENT_TYPE_TEXT));
        }
        StatusCode::METHOD_NOT_ALLOWED => {
            h.insert(ALLOW, HeaderValue::from_static("GET, HEAD"));
        }
        _ => {}
    }
    res
}
