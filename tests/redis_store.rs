//! Sessions in Redis: encrypted at rest under hashed keys, shared by instances, key rotation,
//! idle and absolute expiry enforced server-side, sliding, and a Redis that is down.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "tests fail loudly"
)]

mod support;

use std::time::{Duration, Instant};

use redis::AsyncCommands as _;
use reqwest::Method;
use serde_json::Value;
use sha2::{Digest as _, Sha256};
use support::*;

/// The usual config with `keys` replaced by `keys` (base64 keys, first seals).
fn with_keys(config: &str, keys: &[&str]) -> String {
    let list: Vec<String> = keys.iter().map(|k| format!("\"{k}\"")).collect();
    let replaced = config.replace(
        &format!("keys = [\"{KEY_A}\"]"),
        &format!("keys = [{}]", list.join(", ")),
    );
    assert_ne!(replaced, config, "the usual config sets keys = [KEY_A]");
    replaced
}

async fn keys_under(prefix: &str) -> Vec<String> {
    let mut keys: Vec<String> = redis().await.keys(format!("{prefix}*")).await.unwrap();
    keys.sort();
    keys
}

/// The one session key under `prefix`.
async fn session_key(prefix: &str) -> String {
    let keys: Vec<String> = keys_under(prefix)
        .await
        .into_iter()
        .filter(|k| k.starts_with(&format!("{prefix}s:")))
        .collect();
    assert_eq!(keys.len(), 1, "one session under {prefix}: {keys:?}");
    keys.into_iter().next().unwrap()
}

/// A key's value: a string's bytes, or every member of a set (the session indexes).
async fn value_of(key: &str) -> Vec<Vec<u8>> {
    let mut conn = redis().await;
    let kind: String = redis::cmd("TYPE")
        .arg(key)
        .query_async(&mut conn)
        .await
        .unwrap();
    match kind.as_str() {
        "string" => vec![conn.get(key).await.unwrap()],
        "set" => conn.smembers(key).await.unwrap(),
        other => panic!("{key} is a Redis {other}"),
    }
}

async fn exists(key: &str) -> bool {
    redis().await.exists(key).await.unwrap()
}

/// Removes what a test left under its own prefix (never anything else).
async fn cleanup(prefix: &str) {
    let keys = keys_under(prefix).await;
    if !keys.is_empty() {
        let () = redis().await.del(keys).await.unwrap();
    }
}

async fn json(res: reqwest::Response) -> Value {
    let status = res.status();
    let text = res.text().await.unwrap();
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{status} {text}: {e}"))
}

fn hex_sha256(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn contains(haystack: &[u8], needle: &str) -> bool {
    haystack
        .windows(needle.len())
        .any(|w| w == needle.as_bytes())
}

/// A browser for `gh` that carries `from`'s cookies.
fn same_cookies(gh: &Gatehouse, from: &Browser) -> Browser {
    let mut b = Browser::new(&gh.origin);
    b.jar.clone_from(&from.jar);
    b
}

#[tokio::test]
async fn redis_holds_only_ciphertext_under_a_hashed_key_with_the_idle_ttl() {
    let prefix = unique_prefix("at-rest");
    let stack = Stack::with(
        ProviderOptions::default(),
        &redis_session(&prefix, "idle_timeout = \"10m\""),
    )
    .await;
    let mut b = stack.browser();
    assert_eq!(b.login("/").await.status(), 200);
    let cookie = b.session_cookie().expect("session cookie");

    let api = b.api(Method::GET, "/api/things").await;
    assert_eq!(api.status(), 200);
    let bearer = stack
        .upstream
        .last()
        .header("authorization")
        .unwrap()
        .to_owned();
    let access_token = bearer.strip_prefix("Bearer ").unwrap().to_owned();
    let user = json(b.api(Method::GET, "/auth/user").await).await;
    let sub = user["sub"].as_str().unwrap().to_owned();
    let email = user["claims"]["email"]
        .as_str()
        .unwrap_or("alice@example.test")
        .to_owned();

    // Key: under the prefix, a hash of the session id, nothing taken from the cookie text.
    let key = session_key(&prefix).await;
    // Besides the session: only the back-channel logout indexes (sid, sub) and the completed
    // login's state marker; login transactions never live in the store.
    let all_keys = keys_under(&prefix).await;
    for k in &all_keys {
        let kind = k.strip_prefix(&prefix).unwrap().split(':').next().unwrap();
        assert!(
            ["s", "sid", "sub", "st"].contains(&kind),
            "unexpected key {k}"
        );
        assert!(!k.contains(&sub), "key holds the sub in clear: {k}");
    }
    let id_part = key.strip_prefix(&format!("{prefix}s:")).unwrap();
    assert_eq!(id_part.len(), 64, "hex SHA-256: {key}");
    assert!(id_part.bytes().all(|c| c.is_ascii_hexdigit()), "{key}");
    assert!(!key.contains(&cookie), "key holds the cookie value");
    for fragment in cookie.as_bytes().chunks(12) {
        let fragment = std::str::from_utf8(fragment).unwrap();
        if fragment.len() == 12 {
            assert!(!key.contains(fragment), "key holds cookie text {fragment}");
        }
    }
    assert_ne!(
        id_part,
        hex_sha256(cookie.as_bytes()),
        "key is SHA-256 of the cookie"
    );
    assert_ne!(id_part, hex_sha256(format!("{COOKIE}={cookie}").as_bytes()));

    // TTL: set, and no longer than the idle timeout.
    let pttl: i64 = redis().await.pttl(&key).await.unwrap();
    assert!(pttl > 0 && pttl <= 600_000, "PTTL {pttl} ms");

    // Values: sealed. Snapshot now, learn the refresh and ID tokens from the logout.
    let mut values = Vec::new();
    for k in &all_keys {
        values.extend(value_of(k).await);
    }
    let user = json(b.api(Method::GET, "/auth/user").await).await;
    let res = b.get(user["logout_url"].as_str().unwrap()).await;
    assert_eq!(res.status(), 302);
    let end_session = location(&res);
    let id_token = url::Url::parse(&end_session)
        .unwrap()
        .query_pairs()
        .find(|(k, _)| k == "id_token_hint")
        .map(|(_, v)| v.into_owned())
        .expect("id_token_hint in the end-session URL");
    let revoked = stack.provider.stats().revocations;
    let refresh_token = revoked
        .iter()
        .find(|t| **t != access_token)
        .expect("refresh token revoked at logout")
        .clone();
    let id_signature = id_token.rsplit('.').next().unwrap().to_owned();
    let id_payload = id_token.split('.').nth(1).unwrap().to_owned();
    assert!(values.iter().any(|v| v.len() > 28), "a sealed record");
    for v in &values {
        for (what, secret) in [
            ("access token", access_token.as_str()),
            ("refresh token", refresh_token.as_str()),
            ("ID token", id_token.as_str()),
            ("ID token payload", id_payload.as_str()),
            ("ID token signature", id_signature.as_str()),
            ("sub", sub.as_str()),
            ("email", email.as_str()),
            ("JSON field", "access_token"),
        ] {
            assert!(
                !contains(v, secret),
                "Redis value holds the {what} in clear"
            );
        }
    }
    assert!(!exists(&key).await, "logout deleted the session");
    cleanup(&prefix).await;
}

#[tokio::test]
async fn a_session_made_on_one_instance_works_on_another_sharing_redis() {
    let prefix = unique_prefix("shared");
    let provider = TestProvider::start(ProviderOptions::default()).await;
    let upstream = EchoUpstream::start().await;
    let cfg = config(&provider, &upstream, &redis_session(&prefix, ""));
    let (one, two) = tokio::join!(Gatehouse::start(&cfg), Gatehouse::start(&cfg));

    let mut b1 = Browser::new(&one.origin);
    assert_eq!(b1.login("/").await.status(), 200);
    assert_eq!(b1.api(Method::GET, "/api/a").await.status(), 200);
    let token_one = upstream.last().header("authorization").unwrap().to_owned();

    let mut b2 = same_cookies(&two, &b1);
    assert_eq!(b2.api(Method::GET, "/api/b").await.status(), 200);
    let seen = upstream.last();
    assert_eq!(seen.path_and_query, "/api/b");
    assert_eq!(seen.header("authorization"), Some(token_one.as_str()));
    let user = json(b2.api(Method::GET, "/auth/user").await).await;
    assert_eq!(user["sub"], "alice");

    // Logging out on the second instance ends the session on the first.
    assert_eq!(b2.api(Method::POST, "/auth/logout").await.status(), 200);
    assert_eq!(b1.api(Method::GET, "/api/c").await.status(), 401);
    cleanup(&prefix).await;
}

#[tokio::test]
async fn rotated_keys_accept_old_cookies_until_the_old_key_is_dropped() {
    let prefix = unique_prefix("rotate");
    let provider = TestProvider::start(ProviderOptions::default()).await;
    let upstream = EchoUpstream::start().await;
    let cfg = config(&provider, &upstream, &redis_session(&prefix, ""));
    let (ba, b_only) = (with_keys(&cfg, &[KEY_B, KEY_A]), with_keys(&cfg, &[KEY_B]));
    let (old, rotating, rotated) = tokio::join!(
        Gatehouse::start(&cfg),
        Gatehouse::start(&ba),
        Gatehouse::start(&b_only),
    );

    let mut b = Browser::new(&old.origin);
    assert_eq!(b.login("/").await.status(), 200);
    assert_eq!(b.api(Method::GET, "/api/x").await.status(), 200);

    let mut during = same_cookies(&rotating, &b);
    assert_eq!(during.api(Method::GET, "/api/x").await.status(), 200);
    let mut after = same_cookies(&rotated, &b);
    assert_eq!(after.api(Method::GET, "/api/x").await.status(), 401);
    // A cookie that no key opens is "no session", and the session itself is untouched.
    assert_eq!(during.api(Method::GET, "/api/x").await.status(), 200);
    cleanup(&prefix).await;
}

#[tokio::test]
async fn idle_timeout_is_enforced_by_the_server_even_when_the_cookie_is_sent() {
    let prefix = unique_prefix("idle");
    let stack = Stack::with(
        ProviderOptions::default(),
        &redis_session(&prefix, "idle_timeout = \"2s\"\nmax_lifetime = \"1h\""),
    )
    .await;
    let mut b = stack.browser();
    assert_eq!(b.login("/").await.status(), 200);
    let key = session_key(&prefix).await;
    let pttl: i64 = redis().await.pttl(&key).await.unwrap();
    assert!(
        pttl > 0 && pttl <= 2_000,
        "PTTL {pttl} ms within the idle timeout"
    );

    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(
        b.session_cookie().is_some(),
        "the browser still sends its cookie"
    );
    assert_eq!(b.api(Method::GET, "/api/x").await.status(), 401);
    assert!(!exists(&key).await, "the idle session is gone from Redis");
    cleanup(&prefix).await;
}

#[tokio::test]
async fn max_lifetime_ends_even_a_busy_session() {
    // Idle 2 s, absolute 4 s: only sliding keeps the session alive past 2 s, and only the
    // absolute lifetime ends it. The absolute end is 4 s after login.
    let prefix = unique_prefix("max-life");
    let stack = Stack::with(
        ProviderOptions::default(),
        &redis_session(&prefix, "idle_timeout = \"2s\"\nmax_lifetime = \"4s\""),
    )
    .await;
    let mut b = stack.browser();
    assert_eq!(b.login("/").await.status(), 200);
    let logged_in = Instant::now();
    let mut saw_late_success = false;
    loop {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let status = b.api(Method::GET, "/api/busy").await.status();
        let elapsed = logged_in.elapsed();
        if elapsed < Duration::from_millis(2_900) {
            assert_eq!(status, 200, "busy session alive at {elapsed:?}");
            saw_late_success |= elapsed > Duration::from_millis(2_200);
        } else if elapsed >= Duration::from_millis(4_050) {
            assert_eq!(status, 401, "session past max_lifetime at {elapsed:?}");
            break;
        }
    }
    assert!(saw_late_success, "the session outlived its idle timeout");
    assert!(
        b.session_cookie().is_none(),
        "the 401 cleared the cookie the browser had sent"
    );
    cleanup(&prefix).await;
}

#[tokio::test]
async fn user_endpoint_slides_the_idle_clock_unless_asked_not_to() {
    // Idle 4 s: the idle clock is written back at most once per second.
    let prefix = unique_prefix("slide");
    let stack = Stack::with(
        ProviderOptions::default(),
        &redis_session(&prefix, "idle_timeout = \"4s\"\nmax_lifetime = \"1h\""),
    )
    .await;
    let mut b = stack.browser();
    assert_eq!(b.login("/").await.status(), 200);
    let idle_expires = |v: &Value| v["idle_expires_at"].as_i64().unwrap();

    let first = idle_expires(&json(b.api(Method::GET, "/auth/user?slide=false").await).await);
    // More than the 1 s write-back interval (idle / 4) after the login's last_seen.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let key = session_key(&prefix).await;
    let stored_before: Vec<u8> = redis().await.get(&key).await.unwrap();

    let unslid = idle_expires(&json(b.api(Method::GET, "/auth/user?slide=false").await).await);
    assert_eq!(unslid, first, "slide=false leaves the idle clock alone");
    let stored: Vec<u8> = redis().await.get(&key).await.unwrap();
    assert_eq!(stored, stored_before, "slide=false writes nothing");

    let slid = idle_expires(&json(b.api(Method::GET, "/auth/user").await).await);
    assert!(
        slid > first,
        "sliding moves idle_expires_at forward: {first} -> {slid}"
    );
    // The write-back happens in the background; the next read sees it.
    let deadline = Instant::now() + Duration::from_secs(1);
    loop {
        let now = idle_expires(&json(b.api(Method::GET, "/auth/user?slide=false").await).await);
        if now == slid {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "slide not persisted: {now} != {slid}"
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    let pttl: i64 = redis().await.pttl(&key).await.unwrap();
    assert!(pttl > 0 && pttl <= 4_000, "PTTL {pttl} ms");
    cleanup(&prefix).await;
}

#[tokio::test]
async fn unreachable_redis_means_503_not_a_logout_or_a_panic() {
    let prefix = unique_prefix("down");
    let provider = TestProvider::start(ProviderOptions::default()).await;
    let upstream = EchoUpstream::start().await;
    let live_cfg = config(&provider, &upstream, &redis_session(&prefix, ""));
    let dead_cfg = config(
        &provider,
        &upstream,
        &format!(
            "store = \"redis\"\nredis_url = \"redis://127.0.0.1:1\"\nredis_prefix = \"{prefix}\"\nstore_timeout = \"500ms\""
        ),
    );
    let (live, dead) = tokio::join!(
        Gatehouse::start(&live_cfg),
        Gatehouse::start_unready(&dead_cfg)
    );

    // Not ready: the provider's metadata loads, the store never answers.
    let http = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let res = http.get(dead.url("/readyz")).send().await.unwrap();
        assert_eq!(res.status(), 503);
        let body = json(res).await;
        assert_eq!(body["store"], "unreachable", "{body}");
        if body["provider"] == "ok" {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "provider metadata never loaded: {body}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // A garbage cookie is simply no session.
    let mut forged = Browser::new(&dead.origin);
    forged
        .jar
        .insert(COOKIE.into(), "garbage-not-a-sealed-value".into());
    let status = forged.api(Method::GET, "/api/x").await.status();
    assert_eq!(
        status, 401,
        "a cookie that does not open needs no store to be refused"
    );

    // A real session's cookie: the store cannot be asked, so 503 and the cookie is kept.
    let mut b = Browser::new(&live.origin);
    assert_eq!(b.login("/").await.status(), 200);
    let mut on_dead = same_cookies(&dead, &b);
    let res = on_dead.api(Method::GET, "/api/x").await;
    assert_eq!(res.status(), 503);
    assert!(res.headers().contains_key("retry-after"));
    assert!(
        set_cookies(res.headers()).iter().all(|c| c.name != COOKIE),
        "a store outage must not clear the session cookie"
    );
    assert_eq!(upstream.count(), 0, "nothing reached the upstream");

    // Starting a login needs no store; completing one does: a clean 503 JSON with Retry-After.
    let mut newcomer = Browser::new(&dead.origin);
    let at_provider = newcomer.start_login("/").await;
    let back = newcomer.authorize(&at_provider).await;
    let res = newcomer.callback(&back).await;
    assert_eq!(res.status(), 503);
    assert!(res.headers().contains_key("retry-after"));
    let page = res.text().await.unwrap();
    assert!(page.contains("session store unavailable"), "{page}");

    // Still serving after all that.
    let res = http.get(dead.url("/healthz")).send().await.unwrap();
    assert_eq!(res.status(), 200);
    // And the session itself survived the outage.
    assert_eq!(b.api(Method::GET, "/api/x").await.status(), 200);
    cleanup(&prefix).await;
}
