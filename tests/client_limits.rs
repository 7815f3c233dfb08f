//! Operating behind load balancers and against abuse: the client address from trusted proxies
//! only, per-client rate limits on login starts and callbacks, and request body limits on
//! gatehouse's own endpoints.
#![allow(clippy::unwrap_used, reason = "tests fail loudly")]

mod support;

use reqwest::Method;
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// The usual stack with extra `[server]` and `[auth]` lines.
async fn stack_with(server: &str, auth: &str) -> Stack {
    let provider = TestProvider::start(ProviderOptions::default()).await;
    let upstream = EchoUpstream::start().await;
    let text = config(&provider, &upstream, "").replacen(
        "shutdown_grace = \"5s\"",
        &format!("shutdown_grace = \"5s\"\n{server}"),
        1,
    );
    let gh = Gatehouse::start(&format!("{text}\n[auth]\n{auth}\n")).await;
    Stack {
        provider,
        upstream,
        gh,
    }
}

/// A request from the loopback address `from` (127.0.0.0/8 is all this machine).
async fn raw_from(gh: &Gatehouse, from: &str, request: &str) -> String {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind(format!("{from}:0").parse().unwrap()).unwrap();
    let mut s = socket.connect(gh.addr).await.unwrap();
    s.write_all(request.as_bytes()).await.unwrap();
    let mut out = Vec::new();
    s.read_to_end(&mut out).await.unwrap();
    String::from_utf8_lossy(&out).into_owned()
}

fn get(gh: &Gatehouse, path: &str, extra: &str) -> String {
    format!(
        "GET {path} HTTP/1.1\r\nHost: {}\r\n{extra}Connection: close\r\n\r\n",
        gh.addr
    )
}

#[tokio::test]
async fn a_spoofed_forwarded_for_from_an_untrusted_peer_is_ignored() {
    let stack = stack_with("trusted_proxies = [\"127.0.0.2/32\"]", "").await;
    let spoof = "X-Forwarded-For: 6.6.6.6\r\nX-Forwarded-Proto: ftp\r\nX-Forwarded-Host: evil.example\r\nForwarded: for=7.7.7.7\r\n";
    let answer = raw_from(&stack.gh, "127.0.0.1", &get(&stack.gh, "/page", spoof)).await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    let seen = stack.upstream.last();
    assert_eq!(
        seen.all("x-forwarded-for"),
        ["127.0.0.1"],
        "the peer, nothing it claimed"
    );
    assert_eq!(seen.header("x-forwarded-proto"), Some("http"));
    assert_eq!(
        seen.header("x-forwarded-host"),
        Some(stack.gh.addr.to_string().as_str())
    );
    assert!(seen.header("forwarded").is_none());
    let log = logs();
    assert!(
        log.contains("client=127.0.0.1"),
        "the access log names the peer"
    );
    assert!(!log.contains("6.6.6.6") && !log.contains("7.7.7.7"));
}

#[tokio::test]
async fn behind_a_trusted_proxy_the_client_is_its_right_most_untrusted_hop() {
    let stack = stack_with("trusted_proxies = [\"127.0.0.2/32\", \"10.0.0.0/8\"]", "").await;
    let chain = "X-Forwarded-For: 6.6.6.6, 198.51.100.7, 10.1.2.3\r\nX-Forwarded-Proto: https\r\nX-Forwarded-Host: app.example.com\r\n";
    let answer = raw_from(&stack.gh, "127.0.0.2", &get(&stack.gh, "/page", chain)).await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    let seen = stack.upstream.last();
    assert_eq!(
        seen.all("x-forwarded-for"),
        ["198.51.100.7, 10.1.2.3, 127.0.0.2"],
        "the client, the trusted hops, the peer; never what the client wrote"
    );
    assert_eq!(seen.header("x-forwarded-proto"), Some("https"));
    assert_eq!(seen.header("x-forwarded-host"), Some("app.example.com"));
    assert!(logs().contains("client=198.51.100.7"));
}

#[tokio::test]
async fn the_thirty_first_login_start_in_a_minute_is_429_and_another_client_is_unaffected() {
    let stack = stack_with("", "login_rate_limit = 30\nlogin_rate_burst = 30").await;
    for i in 0..30 {
        let answer = raw_from(&stack.gh, "127.0.0.5", &get(&stack.gh, "/auth/login", "")).await;
        assert!(
            answer.starts_with("HTTP/1.1 302"),
            "login start {i}: {answer}"
        );
    }
    let refused = raw_from(&stack.gh, "127.0.0.5", &get(&stack.gh, "/auth/login", "")).await;
    assert!(refused.starts_with("HTTP/1.1 429"), "{refused}");
    let retry_after: u64 = refused
        .lines()
        .find_map(|l| l.strip_prefix("retry-after: "))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert!((1..=3).contains(&retry_after), "Retry-After {retry_after}");
    assert!(refused.contains("\"error\":\"rate_limited\""), "{refused}");
    assert!(
        !refused.to_ascii_lowercase().contains("set-cookie"),
        "no login cookie for it"
    );
    let other = raw_from(&stack.gh, "127.0.0.6", &get(&stack.gh, "/auth/login", "")).await;
    assert!(other.starts_with("HTTP/1.1 302"), "another IP: {other}");
    // The API is not rate-limited by this budget.
    let mut b = Browser::new(&stack.gh.origin);
    assert_eq!(b.api(Method::GET, "/api/x").await.status(), 401);
}

#[tokio::test]
async fn the_default_budget_lets_a_burst_of_ten_through_and_then_throttles() {
    let stack = stack_with("", "").await;
    let mut statuses = Vec::new();
    for _ in 0..12 {
        let answer = raw_from(
            &stack.gh,
            "127.0.0.7",
            &get(&stack.gh, "/auth/callback?state=x", ""),
        )
        .await;
        statuses.push(answer.split(' ').nth(1).unwrap().to_owned());
    }
    assert!(statuses[..10].iter().all(|s| s == "400"), "{statuses:?}");
    assert_eq!(&statuses[10..], ["429", "429"]);
}

#[tokio::test]
async fn an_oversized_body_to_gatehouses_own_endpoints_is_413() {
    let stack = stack_with("", "").await;
    let big = "a".repeat(70 * 1024);
    let res = reqwest::Client::new()
        .post(stack.gh.url("/auth/backchannel-logout"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(format!("logout_token={big}"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 413);
    let body: serde_json::Value = res.json().await.unwrap();
    assert_eq!(body["error"], "body_too_large");
}
