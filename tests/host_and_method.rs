//! Requests gatehouse refuses before any route sees them: another `Host` (DNS rebinding), and
//! the TRACE and CONNECT methods.
#![allow(clippy::unwrap_used, reason = "tests fail loudly")]

mod support;

use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Sends one raw HTTP/1.1 request and returns the whole answer.
async fn raw(gh: &Gatehouse, request: &str) -> String {
    let mut s = tokio::net::TcpStream::connect(gh.addr).await.unwrap();
    s.write_all(request.as_bytes()).await.unwrap();
    let mut out = Vec::new();
    s.read_to_end(&mut out).await.unwrap();
    String::from_utf8_lossy(&out).into_owned()
}

fn status(answer: &str) -> u16 {
    answer
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0)
}

#[tokio::test]
async fn another_host_gets_421_on_every_kind_of_route_and_reaches_nothing() {
    let stack = Stack::start().await;
    let mut b = stack.browser();
    b.login("/").await;
    let cookie = b.cookie_header();
    for path in [
        "/",
        "/public/page",
        "/api/x",
        "/opt/x",
        "/auth/login",
        "/auth/callback?code=x&state=y",
        "/auth/user",
        "/auth/logout",
    ] {
        let answer = raw(
            &stack.gh,
            &format!(
                "GET {path} HTTP/1.1\r\nHost: rebound.evil.example:{}\r\nX-CSRF: 1\r\nCookie: {cookie}\r\nConnection: close\r\n\r\n",
                stack.gh.addr.port()
            ),
        )
        .await;
        assert_eq!(status(&answer), 421, "{path}: {answer}");
    }
    assert_eq!(stack.upstream.count(), 0, "no upstream was called");
    assert_eq!(stack.provider.stats().token_code, 1, "only the real login");
}

#[tokio::test]
async fn health_probes_answer_whatever_the_host() {
    let stack = Stack::start().await;
    for path in ["/healthz", "/readyz"] {
        let answer = raw(
            &stack.gh,
            &format!("GET {path} HTTP/1.1\r\nHost: 10.1.2.3\r\nConnection: close\r\n\r\n"),
        )
        .await;
        assert_eq!(status(&answer), 200, "{path}: {answer}");
    }
}

#[tokio::test]
async fn a_navigation_to_another_name_is_redirected_to_the_public_origin() {
    let stack = Stack::start().await;
    let port = stack.gh.addr.port();
    let answer = raw(
        &stack.gh,
        &format!(
            "GET /app/page?x=1 HTTP/1.1\r\nHost: localhost:{port}\r\nSec-Fetch-Mode: navigate\r\nAccept: text/html\r\nConnection: close\r\n\r\n"
        ),
    )
    .await;
    assert_eq!(status(&answer), 307, "{answer}");
    let location = format!("location: {}/app/page?x=1", stack.gh.origin);
    assert!(answer.to_ascii_lowercase().contains(&location), "{answer}");
    // The same request as a fetch gets no redirect to follow.
    let fetch = raw(
        &stack.gh,
        &format!(
            "GET /app/page HTTP/1.1\r\nHost: localhost:{port}\r\nSec-Fetch-Mode: cors\r\nConnection: close\r\n\r\n"
        ),
    )
    .await;
    assert_eq!(status(&fetch), 421);
    assert_eq!(stack.upstream.count(), 0);
}

#[tokio::test]
async fn server_allowed_hosts_adds_names_gatehouse_answers_for() {
    let provider = TestProvider::start(ProviderOptions::default()).await;
    let upstream = EchoUpstream::start().await;
    let text = config(&provider, &upstream, "").replacen(
        "shutdown_grace = \"5s\"",
        "shutdown_grace = \"5s\"\nallowed_hosts = [\"app.internal\", \"alias.example:8443\"]",
        1,
    );
    let gh = Gatehouse::start(&text).await;
    for (host, expected) in [
        ("app.internal", 200),
        ("APP.INTERNAL", 200),
        ("alias.example:8443", 200),
        ("alias.example", 421),
        ("other.internal", 421),
    ] {
        let answer = raw(
            &gh,
            &format!("GET /page HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"),
        )
        .await;
        assert_eq!(status(&answer), expected, "{host}");
    }
}

#[tokio::test]
async fn trace_and_connect_are_refused_and_never_forwarded_with_a_token() {
    let stack = Stack::start().await;
    let mut b = stack.browser();
    b.login("/").await;
    let cookie = b.cookie_header();
    let host = stack.gh.addr;
    for request in [
        format!(
            "TRACE /api/x HTTP/1.1\r\nHost: {host}\r\nX-CSRF: 1\r\nCookie: {cookie}\r\nConnection: close\r\n\r\n"
        ),
        format!("TRACE / HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"),
        format!(
            "CONNECT {host} HTTP/1.1\r\nHost: {host}\r\nX-CSRF: 1\r\nCookie: {cookie}\r\nConnection: close\r\n\r\n"
        ),
    ] {
        let answer = raw(&stack.gh, &request).await;
        assert_eq!(status(&answer), 405, "{request}: {answer}");
        assert!(!answer.contains(&cookie), "the cookie is never echoed");
    }
    assert_eq!(stack.upstream.count(), 0);
}
