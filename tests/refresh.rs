//! Token refresh: before expiry, exactly once per session across instances, and the right
//! outcome for every provider failure.

#![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests fail loudly")]

mod support;

use std::time::Duration;

use futures_util::future::join_all;
use reqwest::Method;
use support::provider::TokenFault;
use support::*;

fn short_lived() -> ProviderOptions {
    ProviderOptions {
        access_token_ttl: Duration::from_secs(2),
        ..ProviderOptions::default()
    }
}

/// Refreshed tokens claim a long life, so a slow burst cannot legitimately need a second refresh.
fn long_lived_after_refresh(provider: &TestProvider) {
    provider.set(|m| m.expires_in = support::provider::Override::Value(serde_json::json!(300)));
}

/// Fires `n` API calls with `cookie`, alternating between the given gatehouses.
async fn burst(ghs: &[&Gatehouse], cookie: &str, n: usize) -> Vec<u16> {
    let http = reqwest::Client::new();
    let calls = (0..n).map(|i| {
        let url = ghs[i % ghs.len()].url("/api/burst");
        let req = http
            .get(url)
            .header("x-csrf", "1")
            .header("cookie", format!("{COOKIE}={cookie}"));
        async move { req.send().await.map(|r| r.status().as_u16()).unwrap_or(0) }
    });
    join_all(calls).await
}

async fn two_instances(
    provider: &TestProvider,
    upstream: &EchoUpstream,
    session: &str,
) -> (Gatehouse, Gatehouse) {
    let text = config(provider, upstream, session);
    (Gatehouse::start(&text).await, Gatehouse::start(&text).await)
}

#[tokio::test]
async fn fifty_parallel_requests_on_two_instances_refresh_exactly_once() {
    // A provider that takes a moment, so both instances are surely inside the race.
    let opts = ProviderOptions {
        token_delay: Duration::from_millis(200),
        ..short_lived()
    };
    let provider = TestProvider::start(opts).await;
    let upstream = EchoUpstream::start().await;
    let (a, b) = two_instances(
        &provider,
        &upstream,
        &redis_session(&unique_prefix("burst"), ""),
    )
    .await;
    let mut browser = Browser::new(&a.origin);
    browser.login("/").await;
    let cookie = browser.session_cookie().unwrap();
    long_lived_after_refresh(&provider);
    tokio::time::sleep(Duration::from_millis(1100)).await;

    let statuses = burst(&[&a, &b], &cookie, 50).await;
    assert!(statuses.iter().all(|s| *s == 200), "{statuses:?}");
    let stats = provider.stats();
    assert_eq!(stats.token_refresh, 1, "one refresh at the provider");
    assert_eq!(stats.refresh_reuse, 0);
    let tokens: std::collections::HashSet<String> = upstream
        .requests()
        .iter()
        .filter_map(|r| r.header("authorization").map(str::to_owned))
        .collect();
    assert_eq!(tokens.len(), 1, "every request used the winner's token");
    assert_eq!(
        burst(&[&b], &cookie, 1).await,
        [200],
        "the session is alive afterwards"
    );
}

#[tokio::test]
async fn a_slow_provider_still_sees_one_refresh_across_instances() {
    let opts = ProviderOptions {
        token_delay: Duration::from_millis(900),
        ..short_lived()
    };
    let provider = TestProvider::start(opts).await;
    let upstream = EchoUpstream::start().await;
    let session = redis_session(&unique_prefix("slow"), "");
    let (a, b) = two_instances(&provider, &upstream, &session).await;
    let mut browser = Browser::new(&a.origin);
    browser.login("/").await;
    let cookie = browser.session_cookie().unwrap();
    long_lived_after_refresh(&provider);
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let statuses = burst(&[&a, &b], &cookie, 20).await;
    assert!(statuses.iter().all(|s| *s == 200), "{statuses:?}");
    assert_eq!(provider.stats().token_refresh, 1);
    assert_eq!(provider.stats().refresh_reuse, 0);
}

#[tokio::test]
async fn one_instance_with_the_memory_store_refreshes_once_too() {
    let stack = Stack::with(short_lived(), "").await;
    let mut b = stack.browser();
    b.login("/").await;
    let cookie = b.session_cookie().unwrap();
    long_lived_after_refresh(&stack.provider);
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let statuses = burst(&[&stack.gh], &cookie, 30).await;
    assert!(statuses.iter().all(|s| *s == 200), "{statuses:?}");
    assert_eq!(stack.provider.stats().token_refresh, 1);
}

#[tokio::test]
async fn tokens_far_from_expiry_are_not_refreshed() {
    let stack = Stack::start().await;
    let mut b = stack.browser();
    b.login("/").await;
    for _ in 0..5 {
        assert_eq!(b.api(Method::GET, "/api/x").await.status(), 200);
    }
    assert_eq!(stack.provider.stats().token_refresh, 0);
}

#[tokio::test]
async fn invalid_grant_ends_the_session() {
    let stack = Stack::with(short_lived(), "").await;
    let mut b = stack.browser();
    b.login("/").await;
    stack
        .provider
        .set(|m| m.refresh_fault = Some(TokenFault::InvalidGrant));
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert_eq!(b.api(Method::GET, "/api/x").await.status(), 401);
    stack.provider.behaviour().reset();
    assert_eq!(
        b.api(Method::GET, "/api/x").await.status(),
        401,
        "the session is gone"
    );
}

#[tokio::test]
async fn provider_errors_keep_the_session_and_use_the_token_while_valid() {
    // 4 s tokens: due after 2 s, expired after 3–4 s (expiries are whole seconds).
    let opts = ProviderOptions {
        access_token_ttl: Duration::from_secs(4),
        ..ProviderOptions::default()
    };
    let stack = Stack::with(opts, "").await;
    let mut b = stack.browser();
    b.login("/").await;
    stack
        .provider
        .set(|m| m.refresh_fault = Some(TokenFault::ServerError));
    tokio::time::sleep(Duration::from_millis(2100)).await;
    assert_eq!(
        b.api(Method::GET, "/api/x").await.status(),
        200,
        "old token still valid"
    );
    assert!(
        stack.provider.stats().token_refresh >= 1,
        "a refresh was attempted"
    );
    tokio::time::sleep(Duration::from_millis(2100)).await;
    let res = b.api(Method::GET, "/api/x").await;
    assert_eq!(res.status(), 503, "expired and no refresh possible");
    assert!(res.headers().contains_key("retry-after"));
    stack.provider.behaviour().reset();
    assert_eq!(
        b.api(Method::GET, "/api/x").await.status(),
        200,
        "the session survived the outage"
    );
}

#[tokio::test]
async fn a_refreshed_id_token_for_another_subject_ends_the_session() {
    let stack = Stack::with(short_lived(), "").await;
    let mut b = stack.browser();
    b.login("/").await;
    stack
        .provider
        .set(|m| m.sub = support::provider::Override::Wrong);
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert_eq!(b.api(Method::GET, "/api/x").await.status(), 401);
}

#[tokio::test]
async fn an_expired_token_without_a_refresh_token_ends_the_session() {
    let stack = Stack::with(short_lived(), "").await;
    stack.provider.set(|m| m.omit_refresh_token = true);
    let mut b = stack.browser();
    b.login("/").await;
    assert_eq!(b.api(Method::GET, "/api/x").await.status(), 200);
    tokio::time::sleep(Duration::from_millis(2100)).await;
    assert_eq!(b.api(Method::GET, "/api/x").await.status(), 401);
    assert_eq!(stack.provider.stats().token_refresh, 0);
}

#[tokio::test]
async fn a_browser_that_cancels_mid_refresh_does_not_lose_the_rotated_tokens() {
    let opts = ProviderOptions {
        token_delay: Duration::from_millis(600),
        ..short_lived()
    };
    let stack = Stack::with(opts, "").await;
    let mut b = stack.browser();
    b.login("/").await;
    let cookie = b.session_cookie().unwrap();
    long_lived_after_refresh(&stack.provider);
    tokio::time::sleep(Duration::from_millis(1100)).await;
    // The fetch is aborted (HTTP/2 RST_STREAM, which cancels the request's future in
    // gatehouse) while gatehouse waits for the provider, which rotates the token anyway.
    let stream = tokio::net::TcpStream::connect(stack.gh.addr).await.unwrap();
    let (mut h2, conn) = hyper::client::conn::http2::handshake(
        hyper_util::rt::TokioExecutor::new(),
        hyper_util::rt::TokioIo::new(stream),
    )
    .await
    .unwrap();
    tokio::spawn(conn);
    let req = hyper::Request::get(stack.gh.url("/api/x"))
        .header("x-csrf", "1")
        .header("cookie", format!("{COOKIE}={cookie}"))
        .body(http_body_util::Empty::<bytes::Bytes>::new())
        .unwrap();
    let aborted = tokio::time::timeout(Duration::from_millis(150), h2.send_request(req)).await;
    assert!(aborted.is_err(), "the client gave up");
    tokio::time::sleep(Duration::from_millis(900)).await;
    assert_eq!(
        b.api(Method::GET, "/api/x").await.status(),
        200,
        "the refreshed tokens were kept"
    );
    let stats = stack.provider.stats();
    assert_eq!(stats.token_refresh, 1);
    assert_eq!(
        stats.refresh_reuse, 0,
        "the rotated-out refresh token was never presented again"
    );
}

#[tokio::test]
async fn a_refresh_that_completes_after_logout_has_its_new_tokens_revoked() {
    let opts = ProviderOptions {
        token_delay: Duration::from_millis(800),
        ..short_lived()
    };
    let stack = Stack::with(opts, "").await;
    let mut b = stack.browser();
    b.login("/").await;
    let cookie = b.session_cookie().unwrap();
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let http = reqwest::Client::new();
    let refreshing = tokio::spawn(
        http.get(stack.gh.url("/api/x"))
            .header("x-csrf", "1")
            .header("cookie", format!("{COOKIE}={cookie}"))
            .send(),
    );
    while stack.provider.stats().token_refresh == 0 {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // The user logs out while the provider is still answering the refresh.
    assert_eq!(b.api(Method::POST, "/auth/logout").await.status(), 200);
    let at_logout = stack.provider.stats().revocations.len();
    assert_eq!(at_logout, 2, "logout revoked the tokens it knew");
    let res = refreshing.await.unwrap().unwrap();
    assert_eq!(res.status(), 401, "the refresh found the session gone");
    let deadline = std::time::Instant::now() + Duration::from_secs(3);
    loop {
        let revoked = stack.provider.stats().revocations;
        if revoked.len() == 4 {
            let distinct: std::collections::HashSet<_> = revoked.iter().collect();
            assert_eq!(
                distinct.len(),
                4,
                "the refresh's own tokens were revoked: {revoked:?}"
            );
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the minted tokens were not revoked: {revoked:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn a_refreshed_id_token_updates_the_claims_the_spa_sees() {
    let stack = Stack::with(short_lived(), "").await;
    let mut b = stack.browser();
    b.login("/").await;
    let user: serde_json::Value = b.api(Method::GET, "/auth/user").await.json().await.unwrap();
    assert_eq!(user["claims"]["name"], "Alice Example");
    stack
        .provider
        .set(|m| m.name = support::provider::Override::Wrong);
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert_eq!(b.api(Method::GET, "/api/x").await.status(), 200);
    assert_eq!(stack.provider.stats().token_refresh, 1);
    let user: serde_json::Value = b.api(Method::GET, "/auth/user").await.json().await.unwrap();
    assert_eq!(user["claims"]["name"], "Renamed Example");
}

#[tokio::test]
async fn a_refreshed_id_token_for_another_audience_ends_the_session() {
    let stack = Stack::with(short_lived(), "").await;
    let mut b = stack.browser();
    b.login("/").await;
    // Still contains us (so the verifier passes), but not the login's audience any more.
    stack.provider.set(|m| {
        m.refresh_aud = support::provider::Audience::Value(serde_json::json!(["bff", "another"]))
    });
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert_eq!(b.api(Method::GET, "/api/x").await.status(), 401);
    assert!(logs().contains("session ended: refreshed id token rejected"));
}

#[tokio::test]
async fn a_refreshed_id_token_with_another_auth_time_ends_the_session() {
    let stack = Stack::with(short_lived(), "").await;
    let mut b = stack.browser();
    b.login("/").await;
    stack
        .provider
        .set(|m| m.auth_time = support::provider::Override::Wrong);
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert_eq!(b.api(Method::GET, "/api/x").await.status(), 401);
    assert!(logs().contains("refreshed id token has another auth_time"));
}

#[tokio::test]
async fn expires_in_zero_does_not_mean_a_refresh_on_every_request() {
    let stack = Stack::start().await;
    stack
        .provider
        .set(|m| m.expires_in = support::provider::Override::Value(serde_json::json!(0)));
    let mut b = stack.browser();
    b.login("/").await;
    for _ in 0..5 {
        assert_eq!(b.api(Method::GET, "/api/x").await.status(), 200);
    }
    assert_eq!(stack.provider.stats().token_refresh, 0);
}
