//! The provider's signing keys over time: a rotation never fails a login whatever arrived
//! before it, a key the provider removed is refused after the next refresh, the refresh
//! follows the provider's `max-age` within bounds, and a failing fetch keeps the old keys.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "tests fail loudly"
)]

mod support;

use std::time::Duration;

use futures_util::future::join_all;
use reqwest::Method;
use serde_json::json;
use support::*;

async fn post_logout_token(gh: &Gatehouse, token: &str) -> u16 {
    reqwest::Client::new()
        .post(gh.url("/auth/backchannel-logout"))
        .form(&[("logout_token", token)])
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

/// A provider whose discovery and JWKS say `max-age=1`, and a gatehouse allowed to honour it.
async fn fast_refreshing_stack() -> Stack {
    let opts = ProviderOptions {
        metadata_max_age: Some(Duration::from_secs(1)),
        ..ProviderOptions::default()
    };
    let provider = TestProvider::start(opts).await;
    let upstream = EchoUpstream::start().await;
    let text = config(&provider, &upstream, "").replacen(
        "\n[session]",
        "metadata_refresh_min = \"1s\"\n\n[session]",
        1,
    );
    let gh = Gatehouse::start(&text).await;
    Stack {
        provider,
        upstream,
        gh,
    }
}

/// Waits until the provider has served `count` JWKS requests (at most 10 s).
async fn jwks_fetched(provider: &TestProvider, count: usize) {
    for _ in 0..200 {
        if provider.stats().jwks >= count {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!(
        "the JWKS was fetched {} times, not {count}",
        provider.stats().jwks
    );
}

#[tokio::test]
async fn logout_tokens_with_random_kids_just_before_a_key_rotation_do_not_fail_the_next_login() {
    let stack = Stack::start().await;
    let p = &stack.provider;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    for i in 0..20 {
        let header = json!({ "alg": "RS256", "typ": "logout+jwt", "kid": format!("random-{i}") });
        let claims = json!({ "iss": p.issuer(), "aud": "bff", "iat": now, "exp": now + 60,
            "jti": format!("j{i}"), "sub": "alice",
            "events": { "http://schemas.openid.net/event/backchannel-logout": {} } });
        assert_eq!(
            post_logout_token(&stack.gh, &p.sign_raw(header, claims)).await,
            400
        );
    }
    assert_eq!(
        p.stats().jwks,
        2,
        "random kids got one refetch between them"
    );

    p.rotate_keys();
    let mut b = stack.browser();
    assert_eq!(
        b.login("/").await.status(),
        200,
        "the rotation did not fail the login"
    );
    assert_eq!(b.api(Method::GET, "/api/x").await.status(), 200);
    assert_eq!(p.stats().jwks, 3, "the login's own refetch");
}

#[tokio::test]
async fn a_key_removed_from_the_jwks_is_refused_after_the_next_refresh() {
    let stack = fast_refreshing_stack().await;
    let p = &stack.provider;
    let mut first = stack.browser();
    let mut second = stack.browser();
    assert_eq!(first.login("/").await.status(), 200);
    assert_eq!(second.login("/").await.status(), 200);
    let sids = p.stats().sids;
    // Both signed with the key published now.
    let ends_first = p.mint_logout_token(json!({ "sid": sids[0], "sub": null }));
    let ends_second = p.mint_logout_token(json!({ "sid": sids[1], "sub": null }));
    assert_eq!(
        post_logout_token(&stack.gh, &ends_first).await,
        200,
        "the key is trusted"
    );

    p.rotate_keys();
    let fetched = p.stats().jwks;
    jwks_fetched(p, fetched + 1).await;
    assert_eq!(
        post_logout_token(&stack.gh, &ends_second).await,
        400,
        "the provider no longer publishes the key"
    );
    assert_eq!(second.api(Method::GET, "/api/x").await.status(), 200);
}

#[tokio::test]
async fn discovery_and_jwks_are_refreshed_on_the_providers_max_age_within_bounds() {
    let stack = fast_refreshing_stack().await;
    tokio::time::sleep(Duration::from_millis(3500)).await;
    let stats = stack.provider.stats();
    assert!(
        (3..=6).contains(&stats.jwks),
        "JWKS fetched {} times in 3.5 s",
        stats.jwks
    );
    assert!(
        (3..=6).contains(&stats.discovery),
        "discovery fetched {} times",
        stats.discovery
    );

    // The same provider against the default bounds: max-age=1 is raised to a minute.
    let Stack {
        provider,
        upstream,
        gh,
    } = stack;
    gh.shutdown().await;
    let slow = Gatehouse::start(&config(&provider, &upstream, "")).await;
    let before = provider.stats().jwks;
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert_eq!(
        provider.stats().jwks,
        before,
        "no refresh sooner than metadata_refresh_min"
    );
    slow.shutdown().await;
}

#[tokio::test]
async fn a_failing_jwks_refresh_keeps_the_old_keys_and_recovers() {
    let stack = fast_refreshing_stack().await;
    let p = &stack.provider;
    p.set(|m| m.jwks_fault = true);
    let failing = p.stats().jwks;
    jwks_fetched(p, failing + 2).await;
    let mut b = stack.browser();
    assert_eq!(
        b.login("/").await.status(),
        200,
        "the keys loaded before still verify"
    );

    // Retries back off: far fewer than one a second once they have been failing a while.
    let before = p.stats().jwks;
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert!(
        p.stats().jwks - before <= 2,
        "{} retries in 2.5 s",
        p.stats().jwks - before
    );

    p.set(|m| m.jwks_fault = false);
    p.rotate_keys();
    let mut after = stack.browser();
    assert_eq!(
        after.login("/").await.status(),
        200,
        "back, with the new key"
    );
}

#[tokio::test]
async fn concurrent_logins_after_a_key_rotation_share_one_jwks_refetch() {
    let stack = Stack::start().await;
    let p = &stack.provider;
    p.rotate_keys();
    let before = p.stats().jwks;
    let logins = (0..6).map(|_| {
        let mut b = stack.browser();
        async move { b.login("/").await.status().as_u16() }
    });
    let statuses = join_all(logins).await;
    assert!(statuses.iter().all(|s| *s == 200), "{statuses:?}");
    assert_eq!(p.stats().jwks, before + 1, "one refetch served every login");
}
