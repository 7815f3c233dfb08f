//! The HTTP side of provider calls: one client (no redirects, bounded time, the public web
//! roots plus `oidc.ca_file`), bounded response bodies, and `Cache-Control` freshness.

use std::time::Duration;

use http::HeaderMap;
use http::header::{AGE, CACHE_CONTROL};
use tracing::Instrument as _;

use crate::telemetry::outcomes::{self, ProviderResult};
use crate::telemetry::trace;

/// Largest provider response read (discovery, JWKS, token): real ones are a few KiB.
const MAX_RESPONSE_BYTES: usize = 1024 * 1024;

/// The client for every provider call.
pub fn client(
    timeout: Duration,
    extra_roots: &[rustls_pki_types::CertificateDer<'static>],
) -> Result<reqwest::Client, reqwest::Error> {
    let mut builder = reqwest::Client::builder()
        // Never follow redirects on calls to the provider (SSRF, credential leaks).
        .redirect(reqwest::redirect::Policy::none())
        .timeout(timeout)
        .connect_timeout(timeout)
        .user_agent(concat!("gatehouse/", env!("CARGO_PKG_VERSION")));
    for cert in extra_roots {
        builder = builder.add_root_certificate(reqwest::Certificate::from_der(cert.as_ref())?);
    }
    builder.build()
}

/// A provider answer: status, headers and a body of at most 1 MiB.
pub struct Answer {
    pub status: http::StatusCode,
    pub headers: HeaderMap,
    pub body: Vec<u8>,
}

/// Sends `request` to the provider's `endpoint` (a name in
/// `telemetry::outcomes::PROVIDER_ENDPOINTS`) and reads the answer, in a `provider` span and
/// counted by outcome; the error is the cause chain, for logs.
pub async fn send(
    request: reqwest::RequestBuilder,
    endpoint: &'static str,
) -> Result<Answer, String> {
    let span = trace::provider_span(endpoint);
    let (result, outcome) = read(request).instrument(span.clone()).await;
    outcomes::provider_request(endpoint, outcome);
    if let Ok(answer) = &result {
        trace::answered(&span, answer.status);
    }
    if outcome != ProviderResult::Ok {
        trace::failed(&span);
    }
    result
}

async fn read(request: reqwest::RequestBuilder) -> (Result<Answer, String>, ProviderResult) {
    let failed = |e: reqwest::Error| {
        let outcome = if e.is_timeout() {
            ProviderResult::Timeout
        } else {
            ProviderResult::Unreachable
        };
        (Err(super::error_chain(&e)), outcome)
    };
    let mut res = match request.send().await {
        Ok(res) => res,
        Err(e) => return failed(e),
    };
    let (status, headers) = (res.status(), res.headers().clone());
    let mut body = Vec::new();
    loop {
        match res.chunk().await {
            Ok(Some(chunk)) if body.len() + chunk.len() > MAX_RESPONSE_BYTES => {
                let why = format!("response larger than {} KiB", MAX_RESPONSE_BYTES / 1024);
                return (Err(why), ProviderResult::Unreachable);
            }
            Ok(Some(chunk)) => body.extend_from_slice(&chunk),
            Ok(None) => break,
            Err(e) => return failed(e),
        }
    }
    let outcome = if status.is_success() {
        ProviderResult::Ok
    } else {
        ProviderResult::ErrorResponse
    };
    let answer = Answer {
        status,
        headers,
        body,
    };
    (Ok(answer), outcome)
}

/// How long the response may be reused: `max-age` minus `Age` (RFC 9111 §4.2), zero for
/// `no-store`/`no-cache`, `None` when the response says nothing.
pub fn freshness(headers: &HeaderMap) -> Option<Duration> {
    let mut max_age = None;
    for value in headers.get_all(CACHE_CONTROL) {
        let Ok(value) = value.to_str() else { continue };
        for directive in value.split(',').map(str::trim) {
            let (name, arg) = directive.split_once('=').unwrap_or((directive, ""));
            if name.eq_ignore_ascii_case("no-store") || name.eq_ignore_ascii_case("no-cache") {
                return Some(Duration::ZERO);
            }
            if name.eq_ignore_ascii_case("max-age")
                && let Ok(secs) = arg.trim_matches('"').parse::<u64>()
            {
                max_age = Some(Duration::from_secs(secs));
            }
        }
    }
    let age = headers
        .get(AGE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok())
        .map_or(Duration::ZERO, Duration::from_secs);
    max_age.map(|m| m.saturating_sub(age))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (name, value) in pairs {
            h.append(*name, http::HeaderValue::from_static(value));
        }
        h
    }

    /// Serves one HTTP/1.1 answer with a body of `len` bytes on 127.0.0.1; returns its URL.
    async fn serve_body(len: usize) -> String {
        use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/", listener.local_addr().unwrap());
        tokio::spawn(async move {
            let (mut conn, _) = listener.accept().await.unwrap();
            let mut head = [0u8; 1024];
            let _ = conn.read(&mut head).await;
            let header = format!("HTTP/1.1 200 OK\r\ncontent-length: {len}\r\n\r\n");
            let _ = conn.write_all(header.as_bytes()).await;
            let _ = conn.write_all(&vec![b'x'; len]).await;
        });
        url
    }

    #[tokio::test]
    async fn provider_answers_are_read_up_to_one_mebibyte_only() {
        let http = client(Duration::from_secs(5), &[]).unwrap();
        let small = send(http.get(serve_body(1000).await), "jwks")
            .await
            .unwrap();
        assert_eq!(small.body.len(), 1000);
        let big = send(http.get(serve_body(MAX_RESPONSE_BYTES + 1).await), "jwks").await;
        assert!(big.is_err_and(|e| e.contains("larger than")));
    }

    #[test]
    fn freshness_reads_max_age_minus_age_and_treats_no_store_as_stale() {
        let secs = |s| Some(Duration::from_secs(s));
        assert_eq!(freshness(&headers(&[])), None);
        assert_eq!(
            freshness(&headers(&[("cache-control", "public, max-age=3600")])),
            secs(3600)
        );
        assert_eq!(
            freshness(&headers(&[
                ("cache-control", "Max-Age=600"),
                ("age", "100")
            ])),
            secs(500)
        );
        assert_eq!(
            freshness(&headers(&[("cache-control", "max-age=60"), ("age", "600")])),
            secs(0)
        );
        assert_eq!(
            freshness(&headers(&[("cache-control", "no-store")])),
            secs(0)
        );
        assert_eq!(
            freshness(&headers(&[("cache-control", "max-age=oops")])),
            None
        );
    }
}
