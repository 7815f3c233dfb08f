//! WebSockets through gatehouse: the handshake goes through the pipeline (Origin rule,
//! session, refresh, Bearer), bytes are relayed, and a socket never outlives its session,
//! on this instance or another one sharing the store.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "tests fail loudly"
)]

mod support;

use std::time::{Duration, Instant};

use futures_util::{SinkExt as _, StreamExt as _};
use reqwest::Method;
use serde_json::json;
use support::ws_upstream::{Ended, WsUpstream};
use support::*;
use tokio::net::TcpStream;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest as _;
use tokio_tungstenite::tungstenite::{Error as WsError, Message};

type Ws = WebSocketStream<TcpStream>;

/// `/api/` required, `/opt/` optional, `/` public, all to the WebSocket upstream.
fn ws_config(
    provider: &TestProvider,
    upstream: &WsUpstream,
    session: &str,
    api_route: &str,
    server: &str,
) -> String {
    format!(
        r#"
[server]
listen = "{{listen}}"
public_origin = "{{origin}}"
shutdown_grace = "5s"
{server}

[oidc]
issuer = "{issuer}"
client_id = "{client_id}"
client_secret = "{secret}"

[session]
keys = ["{KEY_A}"]
{session}

[[routes]]
path = "/api/"
upstream = "{up}"
auth = "required"
timeout = "2s"
{api_route}

[[routes]]
path = "/opt/"
upstream = "{up}"
auth = "optional"

[[routes]]
path = "/"
upstream = "{up}"
auth = "none"
"#,
        issuer = provider.issuer(),
        client_id = provider.options().client_id,
        secret = provider.options().client_secret,
        up = upstream.url(),
    )
}

struct WsStack {
    provider: TestProvider,
    upstream: WsUpstream,
    gh: Gatehouse,
}

impl WsStack {
    async fn start() -> WsStack {
        Self::with(ProviderOptions::default(), "", "", "").await
    }

    async fn with(opts: ProviderOptions, session: &str, api_route: &str, server: &str) -> WsStack {
        let provider = TestProvider::start(opts).await;
        let upstream = WsUpstream::start().await;
        let gh =
            Gatehouse::start(&ws_config(&provider, &upstream, session, api_route, server)).await;
        WsStack {
            provider,
            upstream,
            gh,
        }
    }

    /// A browser logged in on this stack; returns it and its session cookie value.
    async fn logged_in(&self) -> (Browser, String) {
        let mut b = Browser::new(&self.gh.origin);
        assert_eq!(b.login("/").await.status(), 200);
        let cookie = b.session_cookie().unwrap();
        (b, cookie)
    }
}

/// Opens a WebSocket to `gh` like a browser page would: `Origin` and the cookie, no
/// anti-forgery header. `Err(status)` when the handshake is refused.
async fn connect(
    gh: &Gatehouse,
    path: &str,
    origin: Option<&str>,
    cookie: Option<&str>,
) -> Result<Ws, u16> {
    connect_with(gh, path, origin, cookie, &[]).await
}

async fn connect_with(
    gh: &Gatehouse,
    path: &str,
    origin: Option<&str>,
    cookie: Option<&str>,
    extra: &[(&'static str, &str)],
) -> Result<Ws, u16> {
    let mut req = format!("ws://{}{}", gh.addr, path)
        .into_client_request()
        .unwrap();
    let h = req.headers_mut();
    if let Some(origin) = origin {
        h.insert("origin", origin.parse().unwrap());
    }
    if let Some(cookie) = cookie {
        h.insert(
            "cookie",
            format!("{COOKIE}={cookie}; theme=dark").parse().unwrap(),
        );
    }
    for (name, value) in extra {
        h.insert(*name, value.parse().unwrap());
    }
    let tcp = TcpStream::connect(gh.addr).await.unwrap();
    match tokio_tungstenite::client_async(req, tcp).await {
        Ok((ws, res)) => {
            assert_eq!(res.status(), 101);
            Ok(ws)
        }
        Err(WsError::Http(res)) => Err(res.status().as_u16()),
        Err(e) => panic!("handshake failed: {e}"),
    }
}

async fn echo(ws: &mut Ws, text: &str) {
    ws.send(Message::text(text)).await.unwrap();
    let back = tokio::time::timeout(Duration::from_secs(2), ws.next())
        .await
        .expect("an echo within 2 s")
        .expect("the socket is open")
        .unwrap();
    assert_eq!(back, Message::text(text));
}

/// Waits at most `within` for the server's close frame; returns its code, and checks that
/// the stream then ends cleanly (no reset).
async fn closed_with(ws: &mut Ws, within: Duration) -> u16 {
    let code = tokio::time::timeout(within, async {
        loop {
            match ws.next().await {
                Some(Ok(Message::Close(frame))) => return frame.map(|f| u16::from(f.code)),
                Some(Ok(_)) => {}
                Some(Err(e)) => panic!("the socket failed instead of closing: {e}"),
                None => panic!("the socket ended without a close frame"),
            }
        }
    })
    .await
    .unwrap_or_else(|_| panic!("no close frame within {within:?}"))
    .expect("a close code");
    let rest = tokio::time::timeout(Duration::from_secs(3), ws.next())
        .await
        .expect("the stream ends after the close frame");
    assert!(
        matches!(rest, None | Some(Err(WsError::ConnectionClosed))),
        "after the close frame: {rest:?}"
    );
    code
}

/// Waits (at most a second) until `gh` has no socket open.
async fn no_sockets_left(gh: &Gatehouse) -> bool {
    for _ in 0..50 {
        if gh.app.sockets.is_empty() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    false
}

/// Waits until the upstream recorded `n` ended sockets.
async fn upstream_ended(upstream: &WsUpstream, n: usize) -> Vec<Ended> {
    for _ in 0..100 {
        let ended = upstream.ended();
        if ended.len() >= n {
            return ended;
        }
        tokio::time::sleep(Duration::from_millis(30)).await;
    }
    upstream.ended()
}

#[tokio::test]
async fn a_websocket_on_a_token_route_gets_101_with_the_bearer_and_without_our_cookie() {
    let stack = WsStack::start().await;
    let (_b, cookie) = stack.logged_in().await;
    let origin = stack.gh.origin.clone();
    let mut ws = connect(&stack.gh, "/api/live", Some(&origin), Some(&cookie))
        .await
        .expect("101");
    echo(&mut ws, "hello").await;
    ws.send(Message::binary(vec![7u8; 200_000])).await.unwrap();
    let big = ws.next().await.unwrap().unwrap();
    assert_eq!(
        big.len(),
        200_000,
        "a large binary message is relayed whole"
    );
    let seen = stack.upstream.last();
    assert_eq!(seen.path, "/api/live");
    assert!(
        seen.header("authorization")
            .is_some_and(|a| a.starts_with("Bearer ")),
        "{seen:?}"
    );
    assert_eq!(
        seen.header("cookie"),
        Some("theme=dark"),
        "our cookie is stripped"
    );
    assert_eq!(seen.header("origin"), Some(origin.as_str()));
    assert_eq!(seen.header("x-forwarded-proto"), Some("http"));
}

#[tokio::test]
async fn a_foreign_or_missing_origin_is_refused_with_403_before_the_upstream() {
    let stack = WsStack::start().await;
    let (_b, cookie) = stack.logged_in().await;
    let ours = stack.gh.origin.clone();
    for origin in [
        None,
        Some("http://evil.example"),
        Some("null"),
        Some("http://127.0.0.1:1"),
    ] {
        let refused = connect(&stack.gh, "/api/live", origin, Some(&cookie)).await;
        assert_eq!(refused.err(), Some(403), "origin {origin:?}");
    }
    for site in ["cross-site", "same-site", "none"] {
        let refused = connect_with(
            &stack.gh,
            "/opt/live",
            Some(&ours),
            Some(&cookie),
            &[("sec-fetch-site", site)],
        )
        .await;
        assert_eq!(refused.err(), Some(403), "sec-fetch-site {site}");
    }
    assert!(
        stack.upstream.handshakes().is_empty(),
        "nothing reached the upstream"
    );
    let same = connect_with(
        &stack.gh,
        "/api/live",
        Some(&ours),
        Some(&cookie),
        &[("sec-fetch-site", "same-origin")],
    )
    .await;
    assert!(same.is_ok(), "same-origin is accepted");
}

#[tokio::test]
async fn no_session_on_a_required_route_is_401_and_never_101() {
    let stack = WsStack::start().await;
    let origin = stack.gh.origin.clone();
    assert_eq!(
        connect(&stack.gh, "/api/live", Some(&origin), None)
            .await
            .err(),
        Some(401)
    );
    assert_eq!(
        connect(&stack.gh, "/api/live", Some(&origin), Some("forged"))
            .await
            .err(),
        Some(401)
    );
    assert!(stack.upstream.handshakes().is_empty());
    // Optional: relayed bare; none: no Origin rule, no token.
    let mut ws = connect(&stack.gh, "/opt/live", Some(&origin), None)
        .await
        .unwrap();
    echo(&mut ws, "anonymous").await;
    assert!(stack.upstream.last().header("authorization").is_none());
    let mut public = connect(&stack.gh, "/public", None, None).await.unwrap();
    echo(&mut public, "public").await;
}

#[tokio::test]
async fn an_expired_access_token_is_refreshed_at_the_handshake() {
    let opts = ProviderOptions {
        access_token_ttl: Duration::from_secs(2),
        ..ProviderOptions::default()
    };
    let stack = WsStack::with(opts, "", "", "").await;
    let (_b, cookie) = stack.logged_in().await;
    let origin = stack.gh.origin.clone();
    connect(&stack.gh, "/api/first", Some(&origin), Some(&cookie))
        .await
        .unwrap();
    let first = stack
        .upstream
        .last()
        .header("authorization")
        .unwrap()
        .to_owned();
    tokio::time::sleep(Duration::from_millis(2100)).await;
    let mut ws = connect(&stack.gh, "/api/second", Some(&origin), Some(&cookie))
        .await
        .unwrap();
    echo(&mut ws, "fresh").await;
    let second = stack
        .upstream
        .last()
        .header("authorization")
        .unwrap()
        .to_owned();
    assert_eq!(stack.provider.stats().token_refresh, 1);
    assert_ne!(
        first, second,
        "the second handshake carried the refreshed token"
    );
}

#[tokio::test]
async fn logout_closes_the_sessions_websockets_at_once_with_4401_and_tells_the_upstream() {
    let stack = WsStack::start().await;
    let (mut b, cookie) = stack.logged_in().await;
    let (_other, other_cookie) = stack.logged_in().await;
    let origin = stack.gh.origin.clone();
    let mut ws = connect(&stack.gh, "/api/live", Some(&origin), Some(&cookie))
        .await
        .unwrap();
    let mut second = connect(&stack.gh, "/opt/live", Some(&origin), Some(&cookie))
        .await
        .unwrap();
    let mut survivor = connect(&stack.gh, "/api/live", Some(&origin), Some(&other_cookie))
        .await
        .unwrap();
    echo(&mut ws, "before").await;
    let started = Instant::now();
    assert_eq!(b.api(Method::POST, "/auth/logout").await.status(), 200);
    assert_eq!(closed_with(&mut ws, Duration::from_secs(1)).await, 4401);
    assert_eq!(closed_with(&mut second, Duration::from_secs(1)).await, 4401);
    assert!(started.elapsed() < Duration::from_secs(1), "closed at once");
    assert_eq!(
        upstream_ended(&stack.upstream, 2).await,
        [Ended::Closed(4401), Ended::Closed(4401)],
        "the upstream got a close frame too"
    );
    echo(&mut survivor, "another session's socket stays").await;
}

#[tokio::test]
async fn logout_on_instance_a_closes_a_websocket_held_on_instance_b() {
    let prefix = unique_prefix("ws-two");
    let provider = TestProvider::start(ProviderOptions::default()).await;
    let upstream = WsUpstream::start().await;
    let text = ws_config(&provider, &upstream, &redis_session(&prefix, ""), "", "");
    let a = Gatehouse::start(&text).await;
    let b = Gatehouse::start(&text).await;
    let mut browser = Browser::new(&a.origin);
    browser.login("/").await;
    let cookie = browser.session_cookie().unwrap();
    // The page's origin is B's for the socket (each instance has its own test origin).
    let mut ws = connect(&b, "/api/live", Some(&b.origin), Some(&cookie))
        .await
        .unwrap();
    echo(&mut ws, "on b").await;
    let started = Instant::now();
    assert_eq!(
        browser.api(Method::POST, "/auth/logout").await.status(),
        200
    );
    assert_eq!(closed_with(&mut ws, Duration::from_secs(4)).await, 4401);
    let took = started.elapsed();
    assert!(took < Duration::from_secs(4), "closed within {took:?}");
    assert!(
        no_sockets_left(&b).await,
        "b's registry let it go: {}",
        b.app.sockets.len()
    );
}

#[tokio::test]
async fn back_channel_logout_closes_the_websocket() {
    let stack = WsStack::start().await;
    let (_b, cookie) = stack.logged_in().await;
    let origin = stack.gh.origin.clone();
    let mut ws = connect(&stack.gh, "/api/live", Some(&origin), Some(&cookie))
        .await
        .unwrap();
    let sid = stack.provider.stats().sids.pop().unwrap();
    let token = stack.provider.mint_logout_token(json!({ "sid": sid }));
    let res = reqwest::Client::new()
        .post(stack.gh.url("/auth/backchannel-logout"))
        .form(&[("logout_token", token)])
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(closed_with(&mut ws, Duration::from_secs(1)).await, 4401);
}

#[tokio::test]
async fn an_open_socket_does_not_slide_the_session_which_expires_and_closes_it() {
    let stack = WsStack::with(ProviderOptions::default(), "idle_timeout = \"3s\"", "", "").await;
    let (_b, cookie) = stack.logged_in().await;
    let origin = stack.gh.origin.clone();
    let mut ws = connect(&stack.gh, "/api/live", Some(&origin), Some(&cookie))
        .await
        .unwrap();
    let opened = Instant::now();
    // The socket is busy the whole time; the session is not used otherwise.
    while opened.elapsed() < Duration::from_millis(2500) {
        echo(&mut ws, "busy").await;
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(closed_with(&mut ws, Duration::from_secs(4)).await, 4401);
    assert!(opened.elapsed() >= Duration::from_millis(2900));
}

#[tokio::test]
async fn a_websocket_idle_for_the_routes_timeout_is_closed_with_4408() {
    let stack = WsStack::with(
        ProviderOptions::default(),
        "",
        "websocket_idle_timeout = \"1s\"",
        "",
    )
    .await;
    let (_b, cookie) = stack.logged_in().await;
    let origin = stack.gh.origin.clone();
    let mut ws = connect(&stack.gh, "/api/live", Some(&origin), Some(&cookie))
        .await
        .unwrap();
    for _ in 0..6 {
        tokio::time::sleep(Duration::from_millis(400)).await;
        echo(&mut ws, "still here").await;
    }
    let quiet = Instant::now();
    assert_eq!(closed_with(&mut ws, Duration::from_secs(3)).await, 4408);
    assert!(quiet.elapsed() >= Duration::from_millis(900));
    assert_eq!(
        upstream_ended(&stack.upstream, 1).await,
        [Ended::Closed(4408)]
    );
}

#[tokio::test]
async fn shutdown_closes_open_websockets_with_a_close_frame() {
    let stack = WsStack::start().await;
    let (_b, cookie) = stack.logged_in().await;
    let origin = stack.gh.origin.clone();
    let mut ws = connect(&stack.gh, "/api/live", Some(&origin), Some(&cookie))
        .await
        .unwrap();
    echo(&mut ws, "before shutdown").await;
    let started = Instant::now();
    let shutdown = tokio::spawn(stack.gh.shutdown());
    assert_eq!(closed_with(&mut ws, Duration::from_secs(2)).await, 1001);
    shutdown.await.unwrap();
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "shutdown did not wait out its grace for the socket"
    );
    assert_eq!(
        upstream_ended(&stack.upstream, 1).await,
        [Ended::Closed(1001)]
    );
}

#[tokio::test]
async fn max_websockets_caps_open_sockets_with_503_before_the_upstream() {
    let stack = WsStack::with(ProviderOptions::default(), "", "", "max_websockets = 1").await;
    let origin = stack.gh.origin.clone();
    let mut first = connect(&stack.gh, "/public/1", Some(&origin), None)
        .await
        .unwrap();
    assert_eq!(
        connect(&stack.gh, "/public/2", Some(&origin), None)
            .await
            .err(),
        Some(503)
    );
    assert_eq!(stack.upstream.handshakes().len(), 1);
    first.close(None).await.unwrap();
    while first.next().await.is_some() {}
    drop(first);
    assert!(no_sockets_left(&stack.gh).await);
    assert!(
        connect(&stack.gh, "/public/3", Some(&origin), None)
            .await
            .is_ok()
    );
}

#[tokio::test]
async fn an_upstream_that_refuses_the_handshake_is_answered_as_it_is() {
    let stack = WsStack::start().await;
    let (_b, cookie) = stack.logged_in().await;
    let origin = stack.gh.origin.clone();
    assert_eq!(
        connect(&stack.gh, "/api/deny", Some(&origin), Some(&cookie))
            .await
            .err(),
        Some(403)
    );
    assert!(stack.gh.app.sockets.is_empty());
}

#[tokio::test]
async fn an_upstream_101_without_our_accept_key_is_502() {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let fake = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = fake.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = fake.accept().await {
            let mut buf = [0u8; 4096];
            let _ = s.read(&mut buf).await;
            let _ = s
                .write_all(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\n")
                .await;
        }
    });
    let provider = TestProvider::start(ProviderOptions::default()).await;
    let upstream = WsUpstream::start().await;
    let text = ws_config(&provider, &upstream, "", "", "").replacen(
        &upstream.url(),
        &format!("http://{addr}"),
        1,
    );
    let gh = Gatehouse::start(&text).await;
    let mut b = Browser::new(&gh.origin);
    b.login("/").await;
    let cookie = b.session_cookie().unwrap();
    assert_eq!(
        connect(&gh, "/api/live", Some(&gh.origin), Some(&cookie))
            .await
            .err(),
        Some(502)
    );
}

#[tokio::test]
async fn a_malformed_handshake_is_400_before_the_upstream() {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let stack = WsStack::start().await;
    let mut s = TcpStream::connect(stack.gh.addr).await.unwrap();
    let head = format!(
        "GET /public HTTP/1.1\r\nHost: {}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: short\r\n\r\n",
        stack.gh.addr
    );
    s.write_all(head.as_bytes()).await.unwrap();
    let mut buf = vec![0u8; 2048];
    let n = s.read(&mut buf).await.unwrap();
    let answer = String::from_utf8_lossy(&buf[..n]);
    assert!(answer.starts_with("HTTP/1.1 400"), "{answer}");
    assert!(stack.upstream.handshakes().is_empty());
}

#[tokio::test]
async fn a_websocket_handshake_to_a_static_route_is_refused_with_400() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("index.html"), "<p>spa</p>").unwrap();
    let provider = TestProvider::start(ProviderOptions::default()).await;
    let upstream = WsUpstream::start().await;
    let text = format!(
        "{}\n[[routes]]\npath = \"/app/\"\nstatic_dir = \"{}\"\nauth = \"none\"\n",
        ws_config(&provider, &upstream, "", "", ""),
        dir.path().display()
    );
    let gh = Gatehouse::start(&text).await;
    assert_eq!(
        connect(&gh, "/app/index.html", Some(&gh.origin), None)
            .await
            .err(),
        Some(400)
    );
    let (status, _) = h2_connect(&gh, "/app/index.html", &gh.origin, None).await;
    assert_eq!(status, 400, "over HTTP/2 too");
}

// ---- HTTP/2 extended CONNECT (RFC 8441) ------------------------------------------------

use bytes::Bytes;
use http_body_util::Empty;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio_tungstenite::tungstenite::protocol::Role;

type H2Ws = WebSocketStream<TokioIo<hyper::upgrade::Upgraded>>;

/// Opens an HTTP/2 connection to `gh` and asks for a WebSocket by extended CONNECT;
/// returns the status and, on 200, the socket.
async fn h2_connect(
    gh: &Gatehouse,
    path: &str,
    origin: &str,
    cookie: Option<&str>,
) -> (u16, Option<H2Ws>) {
    let stream = TcpStream::connect(gh.addr).await.unwrap();
    let (mut sender, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
            .await
            .unwrap();
    tokio::spawn(conn);
    // The server's SETTINGS (ENABLE_CONNECT_PROTOCOL) arrive with the first exchange.
    let probe = http::Request::get(gh.url("/healthz"))
        .body(Empty::<Bytes>::new())
        .unwrap();
    assert_eq!(sender.send_request(probe).await.unwrap().status(), 200);
    let mut req = http::Request::builder()
        .method(http::Method::CONNECT)
        .uri(gh.url(path))
        .header("sec-websocket-version", "13")
        .header("origin", origin);
    if let Some(c) = cookie {
        req = req.header("cookie", format!("{COOKIE}={c}"));
    }
    let mut req = req.body(Empty::<Bytes>::new()).unwrap();
    req.extensions_mut()
        .insert(hyper::ext::Protocol::from_static("websocket"));
    let mut res = sender.send_request(req).await.unwrap();
    let status = res.status().as_u16();
    if status != 200 {
        return (status, None);
    }
    let upgraded = hyper::upgrade::on(&mut res).await.unwrap();
    let ws = WebSocketStream::from_raw_socket(TokioIo::new(upgraded), Role::Client, None).await;
    (status, Some(ws))
}

#[tokio::test]
async fn http2_extended_connect_is_relayed_to_an_http1_upstream_with_the_bearer() {
    let stack = WsStack::start().await;
    let (mut b, cookie) = stack.logged_in().await;
    let origin = stack.gh.origin.clone();
    let (status, ws) = h2_connect(&stack.gh, "/api/h2", &origin, Some(&cookie)).await;
    assert_eq!(status, 200);
    let mut ws = ws.unwrap();
    ws.send(Message::text("over h2")).await.unwrap();
    assert_eq!(ws.next().await.unwrap().unwrap(), Message::text("over h2"));
    let seen = stack.upstream.last();
    assert_eq!(seen.path, "/api/h2");
    assert!(seen.header("authorization").unwrap().starts_with("Bearer "));
    assert_eq!(seen.header("upgrade"), Some("websocket"));

    let (refused, _) = h2_connect(&stack.gh, "/api/h2", "http://evil.example", Some(&cookie)).await;
    assert_eq!(refused, 403);
    let (anonymous, _) = h2_connect(&stack.gh, "/api/h2", &origin, None).await;
    assert_eq!(anonymous, 401);

    assert_eq!(b.api(Method::POST, "/auth/logout").await.status(), 200);
    let closed = tokio::time::timeout(Duration::from_secs(2), async {
        loop {
            match ws.next().await {
                Some(Ok(Message::Close(f))) => return f.map(|f| u16::from(f.code)),
                Some(Ok(_)) => {}
                other => panic!("{other:?}"),
            }
        }
    })
    .await
    .unwrap();
    assert_eq!(closed, Some(4401), "logout closes an HTTP/2 socket too");
}

#[tokio::test]
async fn plain_http2_connect_is_still_refused_with_405() {
    let stack = WsStack::start().await;
    let stream = TcpStream::connect(stack.gh.addr).await.unwrap();
    let (mut sender, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
            .await
            .unwrap();
    tokio::spawn(conn);
    let req = http::Request::builder()
        .method(http::Method::CONNECT)
        .uri(stack.gh.addr.to_string())
        .body(Empty::<Bytes>::new())
        .unwrap();
    assert_eq!(sender.send_request(req).await.unwrap().status(), 405);
}

#[tokio::test]
async fn an_open_websocket_still_counts_as_its_clients_connection() {
    let stack = WsStack::with(
        ProviderOptions::default(),
        "",
        "",
        "max_connections_per_ip = 1",
    )
    .await;
    let probe = || async {
        reqwest::Client::builder()
            .pool_max_idle_per_host(0)
            .build()
            .unwrap()
            .get(stack.gh.url("/healthz"))
            .send()
            .await
            .map(|r| r.status().as_u16())
    };
    // The readiness probe's connection may take a moment to be let go.
    let mut ws = None;
    for _ in 0..50 {
        let tcp = TcpStream::connect(stack.gh.addr).await.unwrap();
        let url = format!("ws://{}/public", stack.gh.addr);
        if let Ok((socket, _)) = tokio_tungstenite::client_async(url, tcp).await {
            ws = Some(socket);
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let mut ws = ws.expect("a socket once the probe's connection is gone");
    echo(&mut ws, "holding the only slot").await;
    assert!(
        probe().await.is_err(),
        "the upgraded socket holds the IP's one connection"
    );
    ws.close(None).await.unwrap();
    while ws.next().await.is_some() {}
    drop(ws);
    assert!(no_sockets_left(&stack.gh).await);
    assert_eq!(probe().await.ok(), Some(200), "its slot is free again");
}
