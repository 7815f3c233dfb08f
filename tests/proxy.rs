//! The proxy path: who gets a token, what reaches the upstream, and how failures look.

#![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests fail loudly")]

mod support;

use reqwest::Method;
use support::*;

#[tokio::test]
async fn api_routes_answer_401_json_without_a_session_and_set_no_cookie() {
    let stack = Stack::start().await;
    let mut b = stack.browser();
    for method in [Method::GET, Method::POST, Method::DELETE, Method::HEAD] {
        let res = b.api(method.clone(), "/api/x").await;
        assert_eq!(res.status(), 401, "{method}");
        assert!(
            set_cookies(res.headers()).is_empty(),
            "no login started by an API call"
        );
        if method != Method::HEAD {
            assert_eq!(res.headers()["content-type"], "application/json");
            let body: serde_json::Value = res.json().await.unwrap();
            assert_eq!(body["error"], "unauthenticated");
        }
    }
    let garbage = b
        .http
        .get(stack.gh.url("/api/x"))
        .header("x-csrf", "1")
        .header("cookie", format!("{COOKIE}=garbage"))
        .send()
        .await
        .unwrap();
    assert_eq!(garbage.status(), 401);
    assert_eq!(
        stack.upstream.count(),
        0,
        "unauthenticated requests never reach a required upstream"
    );
}

#[tokio::test]
async fn token_routes_demand_the_anti_forgery_header_for_every_method() {
    let stack = Stack::start().await;
    let mut b = stack.browser();
    b.login("/").await;
    for method in [Method::GET, Method::HEAD, Method::POST, Method::OPTIONS] {
        let req = b.http.request(method.clone(), stack.gh.url("/api/x"));
        let res = b.send(req).await;
        assert_eq!(res.status(), 403, "{method} without the header");
    }
    let form_post = b
        .http
        .post(stack.gh.url("/api/x"))
        .header("content-type", "text/plain")
        .body("x");
    assert_eq!(b.send(form_post).await.status(), 403);
    let opt = b.http.get(stack.gh.url("/opt/x"));
    assert_eq!(b.send(opt).await.status(), 403, "optional routes too");
    assert_eq!(stack.upstream.count(), 0);
}

#[tokio::test]
async fn cross_site_requests_are_refused_even_with_the_header() {
    let stack = Stack::start().await;
    let mut b = stack.browser();
    b.login("/").await;
    let foreign = b
        .http
        .get(stack.gh.url("/api/x"))
        .header("x-csrf", "1")
        .header("origin", "https://evil.example");
    assert_eq!(b.send(foreign).await.status(), 403);
    let cross = b
        .http
        .get(stack.gh.url("/api/x"))
        .header("x-csrf", "1")
        .header("sec-fetch-site", "cross-site");
    assert_eq!(b.send(cross).await.status(), 403);
    let ours = b
        .http
        .get(stack.gh.url("/api/x"))
        .header("x-csrf", "1")
        .header("origin", &stack.gh.origin)
        .header("sec-fetch-site", "same-origin");
    assert_eq!(b.send(ours).await.status(), 200);
}

#[tokio::test]
async fn upstream_never_sees_our_cookies_client_authorization_or_spoofed_forwarding_headers() {
    let stack = Stack::start().await;
    let mut b = stack.browser();
    b.login("/").await;
    b.jar.insert("theme".into(), "dark".into());
    let req = b
        .http
        .post(stack.gh.url("/api/things?q=1"))
        .header("x-csrf", "1")
        .header("authorization", "Bearer forged")
        .header("x-forwarded-for", "6.6.6.6")
        .header("x_forwarded_host", "evil.example")
        .header("forwarded", "for=6.6.6.6")
        .header("x-real-ip", "6.6.6.6")
        .header("connection", "x-hop")
        .header("x-hop", "1")
        .body("payload");
    let res = b.send(req).await;
    assert_eq!(res.status(), 200);
    assert!(
        res.headers().get("x-upstream-hop").is_none(),
        "response hop-by-hop headers dropped"
    );
    let seen = stack.upstream.last();
    assert_eq!(seen.path_and_query, "/api/things?q=1");
    assert_eq!(seen.body_len, 7);
    let auth = seen.all("authorization");
    assert_eq!(auth.len(), 1);
    assert_ne!(auth[0], "Bearer forged");
    assert_eq!(seen.header("cookie"), Some("theme=dark"));
    assert_eq!(seen.all("x-forwarded-for"), ["127.0.0.1"]);
    assert_eq!(seen.header("x-forwarded-proto"), Some("http"));
    assert_eq!(
        seen.header("x-forwarded-host"),
        Some(stack.gh.addr.to_string().as_str())
    );
    for h in ["x_forwarded_host", "forwarded", "x-real-ip", "x-hop"] {
        assert!(seen.header(h).is_none(), "{h} reached the upstream");
    }
}

#[tokio::test]
async fn optional_routes_forward_without_a_token_and_public_routes_never_add_one() {
    let stack = Stack::start().await;
    let mut b = stack.browser();
    let req = b
        .http
        .get(stack.gh.url("/opt/x"))
        .header("x-csrf", "1")
        .header("authorization", "Bearer forged");
    assert_eq!(b.send(req).await.status(), 200);
    assert!(
        stack.upstream.last().header("authorization").is_none(),
        "client Authorization stripped on token routes"
    );

    b.login("/").await;
    assert_eq!(b.api(Method::GET, "/opt/x").await.status(), 200);
    assert!(
        stack
            .upstream
            .last()
            .header("authorization")
            .unwrap()
            .starts_with("Bearer ")
    );

    assert_eq!(b.get("/index.html").await.status(), 200);
    let seen = stack.upstream.last();
    assert!(
        seen.header("authorization").is_none(),
        "auth = none never adds a token"
    );
    assert!(
        seen.header("cookie").is_none(),
        "our cookies are stripped on public routes too"
    );
}

/// Sends `raw` over a fresh connection and returns the status code (reqwest would
/// normalize the paths under test before sending them).
async fn raw_status(addr: std::net::SocketAddr, raw: &str) -> u16 {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(raw.as_bytes()).await.unwrap();
    let mut out = Vec::new();
    s.read_to_end(&mut out).await.unwrap();
    let text = String::from_utf8_lossy(&out);
    text.split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0)
}

#[tokio::test]
async fn paths_that_could_change_meaning_upstream_are_refused() {
    let stack = Stack::start().await;
    let mut b = stack.browser();
    b.login("/").await;
    let cookie = b.cookie_header();
    for path in [
        "/api/../admin",
        "/api/./x",
        "/api/%2e%2e/admin",
        "/api%2fx",
        "/api/%5cx",
        "/api;x=1",
        "//api/x",
        "/api//x",
        "/opt/%2E%2E/api/x",
        "/api\\x",
        "/%61pi/x",
        "/api/%7Eadmin",
    ] {
        let raw = format!(
            "GET {path} HTTP/1.1\r\nHost: {}\r\nX-CSRF: 1\r\nCookie: {cookie}\r\nConnection: close\r\n\r\n",
            stack.gh.addr
        );
        assert_eq!(raw_status(stack.gh.addr, &raw).await, 400, "{path}");
    }
    assert_eq!(stack.upstream.count(), 0);
}

#[tokio::test]
async fn absolute_form_targets_cannot_pick_another_upstream() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let stack = Stack::start().await;
    let send = |raw: String| async move {
        let mut s = tokio::net::TcpStream::connect(stack.gh.addr).await.unwrap();
        s.write_all(raw.as_bytes()).await.unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).await.unwrap();
        out
    };
    let foreign = send("GET http://169.254.169.254/latest HTTP/1.1\r\nHost: 169.254.169.254\r\nConnection: close\r\n\r\n".into()).await;
    assert!(foreign.starts_with("HTTP/1.1 421"), "{foreign}");
    assert_eq!(stack.upstream.count(), 0, "nobody was contacted");

    let ours = send(format!(
        "GET http://{addr}/latest HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n",
        addr = stack.gh.addr
    ))
    .await;
    assert!(ours.starts_with("HTTP/1.1 200"), "{ours}");
    let seen = stack.upstream.last();
    assert_eq!(
        seen.path_and_query, "/latest",
        "the configured upstream answered, with the path only"
    );
    assert_eq!(
        seen.header("host"),
        Some(stack.upstream.addr.to_string().as_str())
    );
}

#[tokio::test]
async fn upstream_down_is_502_and_slow_is_504_with_json_bodies() {
    let provider = TestProvider::start(ProviderOptions::default()).await;
    let upstream = EchoUpstream::start().await;
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let text = config(&provider, &upstream, "").replacen(
        &format!("upstream = \"{}\"\nauth = \"required\"", upstream.url()),
        &format!("upstream = \"http://{closed}\"\nauth = \"required\""),
        1,
    );
    let gh = Gatehouse::start(&text).await;
    let mut b = Browser::new(&gh.origin);
    b.login("/").await;
    let down = b.api(Method::GET, "/api/x").await;
    assert_eq!(down.status(), 502);
    assert_eq!(
        down.json::<serde_json::Value>().await.unwrap()["error"],
        "upstream_unavailable"
    );

    let stack = Stack::start().await;
    let mut b = stack.browser();
    b.login("/").await;
    let started = std::time::Instant::now();
    let slow = b.api(Method::GET, "/api/slow").await;
    assert_eq!(slow.status(), 504);
    assert!(
        started.elapsed() < std::time::Duration::from_millis(1900),
        "the route's 1 s timeout applies"
    );
    assert_eq!(
        slow.json::<serde_json::Value>().await.unwrap()["error"],
        "upstream_timeout"
    );
}

#[tokio::test]
async fn large_bodies_stream_through_both_ways() {
    let stack = Stack::start().await;
    let mut b = stack.browser();
    b.login("/").await;
    let upload = vec![b'u'; 4 << 20];
    let req = b
        .http
        .post(stack.gh.url("/api/upload"))
        .header("x-csrf", "1")
        .body(upload);
    let res = b.send(req).await;
    assert_eq!(res.status(), 200);
    assert_eq!(stack.upstream.last().body_len, 4 << 20);
    let big = b.api(Method::GET, "/api/big").await;
    assert_eq!(big.bytes().await.unwrap().len(), 8 << 20);
}

#[tokio::test]
async fn unknown_paths_under_the_auth_prefix_are_404_not_proxied() {
    let stack = Stack::start().await;
    let mut b = stack.browser();
    assert_eq!(b.get("/auth/tokens").await.status(), 404);
    assert_eq!(b.get("/auth").await.status(), 404);
    assert_eq!(stack.upstream.count(), 0);
}

#[tokio::test]
async fn health_endpoints_answer() {
    let stack = Stack::start().await;
    let mut b = stack.browser();
    assert_eq!(b.get("/healthz").await.status(), 200);
    let ready: serde_json::Value = b.get("/readyz").await.json().await.unwrap();
    assert_eq!(ready["status"], "ready");
}

#[tokio::test]
async fn oversized_request_headers_are_refused_before_routing() {
    let stack = Stack::start().await;
    let big = "a".repeat(100 * 1024);
    let raw = format!(
        "GET /api/x HTTP/1.1\r\nHost: {}\r\nX-CSRF: 1\r\nX-Big: {big}\r\nConnection: close\r\n\r\n",
        stack.gh.addr
    );
    let status = raw_status(stack.gh.addr, &raw).await;
    assert_eq!(status, 431, "a 100 KiB header is refused");
    assert_eq!(stack.upstream.count(), 0);
}

#[tokio::test]
async fn identity_headers_upstreams_trust_never_reach_them_nor_configured_extras() {
    let provider = TestProvider::start(ProviderOptions::default()).await;
    let upstream = EchoUpstream::start().await;
    let text = config(&provider, &upstream, "").replacen(
        "shutdown_grace = \"5s\"",
        "shutdown_grace = \"5s\"\nstrip_request_headers = [\"X-Corp-*\", \"X-Tenant\"]",
        1,
    );
    let gh = Gatehouse::start(&text).await;
    let spoofed = [
        "x-webauth-user",
        "x-goog-authenticated-user-email",
        "x-goog-authenticated-user-id",
        "x-ms-client-principal",
        "x-ms-client-principal-name",
        "x-ms-client-principal-id",
        "cf-access-jwt-assertion",
        "cf-access-authenticated-user-email",
        "x-consumer-username",
        "x-consumer-id",
        "x-original-host",
        "x-envoy-original-path",
        "x-envoy-external-address",
        "x-remote-user",
        "remote-user",
        "remote_user",
        "x-forwarded-user",
        "x-forwarded-email",
        "x-forwarded-groups",
        "x-forwarded-preferred-username",
        "x_forwarded_preferred_username",
        "x-corp-role",
        "x-tenant",
    ];
    for route in ["/public", "/api/x"] {
        let mut b = Browser::new(&gh.origin);
        if route == "/api/x" {
            b.login("/").await;
        }
        let mut req = b.http.get(gh.url(route)).header("x-csrf", "1");
        for h in spoofed {
            req = req.header(h, "admin@evil.example");
        }
        assert_eq!(b.send(req).await.status(), 200, "{route}");
        let seen = upstream.last();
        for h in spoofed {
            assert!(
                seen.header(h).is_none(),
                "{h} reached the upstream on {route}"
            );
        }
        assert!(
            seen.headers.iter().all(|(_, v)| v != "admin@evil.example"),
            "{route}: {:?}",
            seen.headers
        );
    }
}

#[tokio::test]
async fn an_upstream_cannot_set_or_clear_gatehouses_own_cookies() {
    let stack = Stack::start().await;
    let mut b = stack.browser();
    b.login("/").await;
    let session = b.session_cookie().unwrap();
    for path in ["/public/set-cookies", "/api/set-cookies"] {
        let res = b.api(Method::GET, path).await;
        assert_eq!(res.status(), 200);
        let names: Vec<String> = set_cookies(res.headers())
            .into_iter()
            .map(|c| c.name)
            .collect();
        assert_eq!(
            names,
            ["theme"],
            "{path}: only the upstream's own cookie passes"
        );
    }
    assert_eq!(
        b.session_cookie(),
        Some(session),
        "the session cookie is untouched"
    );
    assert_eq!(b.api(Method::GET, "/api/x").await.status(), 200);
}

#[tokio::test]
async fn a_route_with_max_body_refuses_larger_bodies_with_413_before_the_upstream_sees_them() {
    let provider = TestProvider::start(ProviderOptions::default()).await;
    let upstream = EchoUpstream::start().await;
    let text = config(&provider, &upstream, "").replacen(
        "[[routes]]\npath = \"/\"",
        &format!(
            "[[routes]]\npath = \"/small/\"\nupstream = \"{}\"\nauth = \"none\"\nmax_body = \"1KiB\"\n\n[[routes]]\npath = \"/\"",
            upstream.url()
        ),
        1,
    );
    let gh = Gatehouse::start(&text).await;
    let http = reqwest::Client::new();
    let post = |body: reqwest::Body| http.post(gh.url("/small/upload")).body(body).send();

    let at_limit = post(vec![b'a'; 1024].into()).await.unwrap();
    assert_eq!(at_limit.status(), 200, "exactly max_body is allowed");
    assert_eq!(upstream.last().body_len, 1024);
    let seen = upstream.count();

    let declared = post(vec![b'a'; 1025].into()).await.unwrap();
    assert_eq!(declared.status(), 413, "Content-Length one byte over");
    assert_eq!(
        declared.json::<serde_json::Value>().await.unwrap()["error"],
        "body_too_large"
    );
    assert_eq!(upstream.count(), seen, "refused before it was forwarded");

    // No Content-Length: the limit is counted as the body streams.
    let chunks = futures_util::stream::iter(
        (0..8).map(|_| Ok::<_, std::io::Error>(bytes::Bytes::from(vec![b'c'; 512]))),
    );
    let streamed = post(reqwest::Body::wrap_stream(chunks)).await.unwrap();
    assert_eq!(streamed.status(), 413, "a chunked body past the limit");
    assert!(
        upstream.requests().iter().all(|r| r.body_len <= 1024),
        "the upstream never received more than max_body"
    );

    let elsewhere = http
        .post(gh.url("/other"))
        .body(vec![b'a'; 64 << 10])
        .send()
        .await
        .unwrap();
    assert_eq!(
        elsewhere.status(),
        200,
        "routes without max_body have no limit"
    );
}
