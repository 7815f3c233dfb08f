//! Redis over TLS with an ACL user: a private CA made at test time, a client certificate the
//! server requires, the default user off. The whole session lifecycle works; a server whose
//! certificate does not verify gets no session data; wrong credentials are named, never logged.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "tests fail loudly"
)]

mod support;

use std::time::Duration;

use redis::AsyncCommands as _;
use reqwest::Method;
use serde_json::Value;
use sha2::{Digest as _, Sha256};
use support::redis_topology::{TlsRedis, eventually};
use support::*;

/// The store key of `sub`'s session index under `prefix`.
fn sub_index(prefix: &str, sub: &str) -> String {
    let hex: String = Sha256::digest(sub.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    format!("{prefix}sub:{hex}")
}

async fn readyz(gh: &Gatehouse) -> (u16, Value) {
    let res = reqwest::get(gh.url("/readyz")).await.unwrap();
    (res.status().as_u16(), res.json().await.unwrap())
}

/// Waits until `/readyz` reports the store failing with `cause`.
async fn wait_store_error(gh: &Gatehouse, cause: &str) {
    eventually(Duration::from_secs(10), cause, async || {
        let (status, body) = readyz(gh).await;
        status == 503 && body["store_error"] == cause
    })
    .await;
}

async fn keys_under(tls: &TlsRedis, prefix: &str) -> Vec<String> {
    tls.connect()
        .await
        .keys(format!("{prefix}*"))
        .await
        .unwrap()
}

#[tokio::test]
async fn login_api_refresh_and_logout_work_over_tls_as_an_acl_user_with_a_client_certificate() {
    let tls = TlsRedis::start().await;
    let provider = TestProvider::start(ProviderOptions {
        access_token_ttl: Duration::from_secs(2),
        ..ProviderOptions::default()
    })
    .await;
    let upstream = EchoUpstream::start().await;
    let prefix = unique_prefix("tls");
    let session = tls.session(&prefix, &tls.ca, &tls.password, "store_timeout = \"1s\"");
    let gh = Gatehouse::start(&config(&provider, &upstream, &session)).await;

    let mut b = Browser::new(&gh.origin);
    assert_eq!(b.login("/").await.status(), 200);
    let members: Vec<String> = tls
        .connect()
        .await
        .smembers(sub_index(&prefix, "alice"))
        .await
        .unwrap();
    assert_eq!(members.len(), 1, "the session is indexed in the TLS server");
    let session_key = &members[0];
    assert!(
        tls.connect()
            .await
            .exists::<_, bool>(session_key)
            .await
            .unwrap()
    );

    assert_eq!(b.api(Method::GET, "/api/x").await.status(), 200);
    let first_token = upstream
        .requests()
        .last()
        .unwrap()
        .header("authorization")
        .unwrap()
        .to_owned();

    provider.set(|m| m.expires_in = support::provider::Override::Value(serde_json::json!(300)));
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert_eq!(b.api(Method::GET, "/api/x").await.status(), 200);
    assert_eq!(
        provider.stats().token_refresh,
        1,
        "refreshed through the TLS store"
    );
    let refreshed = upstream
        .requests()
        .last()
        .unwrap()
        .header("authorization")
        .unwrap()
        .to_owned();
    assert_ne!(first_token, refreshed, "the new token was stored and used");

    assert_eq!(b.api(Method::POST, "/auth/logout").await.status(), 200);
    assert!(
        !tls.connect()
            .await
            .exists::<_, bool>(session_key)
            .await
            .unwrap(),
        "logout deleted the session in Redis"
    );
    assert_eq!(b.api(Method::GET, "/api/x").await.status(), 401);
    assert!(
        !logs().contains(&tls.password),
        "the Redis password reached the log"
    );
}

#[tokio::test]
async fn a_server_whose_certificate_does_not_verify_gets_no_session_data() {
    let tls = TlsRedis::start().await;
    let provider = TestProvider::start(ProviderOptions::default()).await;
    let upstream = EchoUpstream::start().await;
    let prefix = unique_prefix("tls-ca");
    let trusting = tls.session(&prefix, &tls.ca, &tls.password, "store_timeout = \"1s\"");
    let good = Gatehouse::start(&config(&provider, &upstream, &trusting)).await;
    let mut b = Browser::new(&good.origin);
    b.login("/").await;
    let stored = keys_under(&tls, &prefix).await;

    // Same keys and prefix, but it trusts another CA: the server is an impostor to it.
    let distrusting = tls.session(
        &prefix,
        &tls.other_ca,
        &tls.password,
        "store_timeout = \"1s\"",
    );
    let bad = Gatehouse::start_unready(&config(&provider, &upstream, &distrusting)).await;
    wait_store_error(&bad, "tls_failed").await;
    let mut same_cookie = Browser::new(&bad.origin);
    same_cookie.jar = b.jar.clone();
    let res = same_cookie.api(Method::GET, "/api/x").await;
    assert_eq!(
        res.status(),
        503,
        "an unverified store is an outage, not a logout"
    );
    assert!(set_cookies(res.headers()).is_empty(), "the cookie is kept");
    assert!(
        upstream.requests().is_empty(),
        "no token went upstream: none was read from the unverified server"
    );
    // A login can start (nothing is stored for that) but cannot complete.
    let mut fresh = Browser::new(&bad.origin);
    let at_provider = fresh.start_login("/").await;
    let back = fresh.authorize(&at_provider).await;
    assert_eq!(fresh.callback(&back).await.status(), 503);
    assert_eq!(
        keys_under(&tls, &prefix).await,
        stored,
        "nothing was written to the unverified server"
    );
    let log = logs();
    assert!(
        log.lines()
            .any(|l| l.contains("session store is not usable")
                && l.contains("session.redis_ca_file")
                && l.contains("certificate")),
        "a clear start-up line names the CA key"
    );
}

#[tokio::test]
async fn a_wrong_password_is_named_in_readiness_and_the_log_and_never_logged() {
    let tls = TlsRedis::start().await;
    let provider = TestProvider::start(ProviderOptions::default()).await;
    let upstream = EchoUpstream::start().await;
    let wrong = format!("wrong-{:x}", rand::random::<u64>());
    let session = tls.session(
        &unique_prefix("tls-pw"),
        &tls.ca,
        &wrong,
        "store_timeout = \"1s\"",
    );
    let gh = Gatehouse::start_unready(&config(&provider, &upstream, &session)).await;
    wait_store_error(&gh, "authentication_failed").await;
    let mut b = Browser::new(&gh.origin);
    let at_provider = b.start_login("/").await;
    let back = b.authorize(&at_provider).await;
    assert_eq!(
        b.callback(&back).await.status(),
        503,
        "no session can be stored"
    );
    let log = logs();
    assert!(
        log.lines()
            .any(|l| l.contains("session store is not usable")
                && l.contains("session.redis_username")
                && l.contains("session.redis_password")),
        "the start-up line names the credential keys"
    );
    assert!(!log.contains(&wrong), "the wrong password reached the log");
    assert!(!log.contains(&tls.password), "the right one too");
}

#[tokio::test]
async fn a_server_requiring_a_client_certificate_refuses_gatehouse_without_one() {
    let tls = TlsRedis::start().await;
    let provider = TestProvider::start(ProviderOptions::default()).await;
    let upstream = EchoUpstream::start().await;
    let session = tls.session(
        &unique_prefix("tls-mtls"),
        &tls.ca,
        &tls.password,
        "store_timeout = \"1s\"",
    );
    let without_cert: String = session
        .lines()
        .filter(|l| !l.starts_with("redis_client_"))
        .map(|l| format!("{l}\n"))
        .collect();
    let gh = Gatehouse::start_unready(&config(&provider, &upstream, &without_cert)).await;
    wait_store_error(&gh, "tls_failed").await;
}
