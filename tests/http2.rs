//! HTTP/2 and `Expect: 100-continue`: unauthenticated requests never reach a `required`
//! upstream whatever the protocol, and authenticated ones work over HTTP/2 too.
#![allow(clippy::unwrap_used, reason = "tests fail loudly")]

mod support;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::Request;
use hyper_util::rt::{TokioExecutor, TokioIo};
use support::*;

async fn h2_sender(gh: &Gatehouse) -> hyper::client::conn::http2::SendRequest<Full<Bytes>> {
    let stream = tokio::net::TcpStream::connect(gh.addr).await.unwrap();
    let (sender, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
            .await
            .unwrap();
    tokio::spawn(conn);
    sender
}

fn request(
    gh: &Gatehouse,
    method: &str,
    path: &str,
    cookie: Option<&str>,
    body: &'static [u8],
) -> Request<Full<Bytes>> {
    let mut req = Request::builder()
        .method(method)
        .uri(gh.url(path))
        .header("x-csrf", "1");
    if let Some(c) = cookie {
        req = req.header("cookie", format!("{COOKIE}={c}"));
    }
    req.body(Full::new(Bytes::from_static(body))).unwrap()
}

#[tokio::test]
async fn http2_requests_without_a_session_get_401_and_never_reach_the_upstream() {
    let stack = Stack::start().await;
    let mut h2 = h2_sender(&stack.gh).await;
    for (method, body) in [
        ("GET", &b""[..]),
        ("POST", &b"payload"[..]),
        ("DELETE", &b""[..]),
    ] {
        let res = h2
            .send_request(request(&stack.gh, method, "/api/x", None, body))
            .await
            .unwrap();
        assert_eq!(res.version(), http::Version::HTTP_2);
        assert_eq!(res.status(), 401, "{method}");
    }
    assert_eq!(stack.upstream.count(), 0);
}

#[tokio::test]
async fn http2_requests_with_a_session_are_forwarded_with_the_token() {
    let stack = Stack::start().await;
    let mut b = stack.browser();
    b.login("/").await;
    let cookie = b.session_cookie().unwrap();
    let mut h2 = h2_sender(&stack.gh).await;
    let res = h2
        .send_request(request(
            &stack.gh,
            "POST",
            "/api/x",
            Some(&cookie),
            b"hello",
        ))
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    res.into_body().collect().await.unwrap();
    let seen = stack.upstream.last();
    assert!(seen.header("authorization").unwrap().starts_with("Bearer "));
    assert_eq!(seen.body_len, 5);
    assert!(seen.header("cookie").is_none());
}

#[tokio::test]
async fn expect_continue_without_a_session_is_answered_401_before_any_body() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let stack = Stack::start().await;
    let mut s = tokio::net::TcpStream::connect(stack.gh.addr).await.unwrap();
    let head = format!(
        "POST /api/upload HTTP/1.1\r\nHost: {}\r\nX-CSRF: 1\r\nContent-Length: 1000000\r\nExpect: 100-continue\r\n\r\n",
        stack.gh.addr
    );
    s.write_all(head.as_bytes()).await.unwrap();
    let mut buf = vec![0u8; 1024];
    let n = tokio::time::timeout(std::time::Duration::from_secs(2), s.read(&mut buf))
        .await
        .unwrap()
        .unwrap();
    let head = String::from_utf8_lossy(&buf[..n]);
    assert!(
        head.starts_with("HTTP/1.1 401"),
        "no 100 Continue, straight to 401: {head}"
    );
    assert_eq!(stack.upstream.count(), 0);
}
