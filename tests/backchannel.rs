//! OIDC Back-Channel Logout: the provider ends sessions by `sid` or by `sub`, and nothing
//! but a valid, fresh, signed logout token can do it.
#![allow(clippy::unwrap_used, reason = "tests fail loudly")]

mod support;

use reqwest::Method;
use serde_json::{Value, json};
use support::*;

async fn post_logout_token(gh: &Gatehouse, token: &str) -> reqwest::Response {
    reqwest::Client::new()
        .post(gh.url("/auth/backchannel-logout"))
        .form(&[("logout_token", token)])
        .send()
        .await
        .unwrap()
}

async fn logged_in(stack: &Stack, login_hint: Option<&str>) -> Browser {
    let mut b = stack.browser();
    let at_provider = b.start_login("/").await;
    let url = match login_hint {
        Some(hint) => format!("{at_provider}&login_hint={hint}"),
        None => at_provider,
    };
    let back = b.authorize(&url).await;
    assert_eq!(b.callback(&back).await.status(), 200);
    b
}

async fn alive(b: &mut Browser) -> bool {
    b.api(Method::GET, "/api/x").await.status() == 200
}

#[tokio::test]
async fn a_logout_token_with_sid_ends_that_session_only() {
    let stack = Stack::start().await;
    let mut first = logged_in(&stack, None).await;
    let mut second = logged_in(&stack, None).await;
    let sids = stack.provider.stats().sids;
    let token = stack
        .provider
        .mint_logout_token(json!({ "sid": sids[0], "sub": null }));
    let res = post_logout_token(&stack.gh, &token).await;
    assert_eq!(res.status(), 200);
    assert_eq!(res.json::<Value>().await.unwrap()["sessions_ended"], 1);
    assert!(
        !alive(&mut first).await,
        "the browser's next API call gets 401"
    );
    assert!(
        alive(&mut second).await,
        "another provider session of the same user survives"
    );
}

#[tokio::test]
async fn a_logout_token_with_only_sub_ends_every_session_of_that_user() {
    let stack = Stack::start().await;
    let mut a1 = logged_in(&stack, None).await;
    let mut a2 = logged_in(&stack, None).await;
    let mut bob = logged_in(&stack, Some("bob")).await;
    let token = stack
        .provider
        .mint_logout_token(json!({ "sid": null, "sub": "alice" }));
    assert_eq!(post_logout_token(&stack.gh, &token).await.status(), 200);
    assert!(!alive(&mut a1).await);
    assert!(!alive(&mut a2).await);
    assert!(alive(&mut bob).await, "other users are untouched");
}

#[tokio::test]
async fn a_replayed_sub_only_logout_token_ends_nothing_even_after_a_new_login() {
    let stack = Stack::start().await;
    let mut before = logged_in(&stack, None).await;
    let token = stack
        .provider
        .mint_logout_token(json!({ "sid": null, "sub": "alice" }));
    assert_eq!(post_logout_token(&stack.gh, &token).await.status(), 200);
    assert!(!alive(&mut before).await);

    // The user logs in again; the same token, replayed, must not end the new session.
    let mut after = logged_in(&stack, None).await;
    let replay = post_logout_token(&stack.gh, &token).await;
    assert_eq!(replay.status(), 400);
    assert_eq!(
        replay.json::<Value>().await.unwrap()["error"],
        "invalid_request"
    );
    assert!(alive(&mut after).await, "the new session lives");
}

#[tokio::test]
async fn a_logout_that_failed_half_way_is_not_refused_as_a_replay_when_the_provider_retries() {
    use redis::AsyncCommands as _;
    // An ACL user that may record the jti but not read the session indexes: ending fails.
    let user = format!("gh-test-bcl-{:x}", rand::random::<u64>());
    let mut conn = redis().await;
    let _: () = redis::cmd("ACL")
        .arg(&["SETUSER", &user, "on", ">pw", "~*", "+@all", "-smembers"][..])
        .query_async(&mut conn)
        .await
        .unwrap();
    let prefix = unique_prefix("bcl-retry");
    let provider = TestProvider::start(ProviderOptions::default()).await;
    let upstream = EchoUpstream::start().await;
    let healthy =
        Gatehouse::start(&config(&provider, &upstream, &redis_session(&prefix, ""))).await;
    let crippled_session = format!(
        "store = \"redis\"\nredis_url = \"{REDIS_URL}\"\nredis_username = \"{user}\"\nredis_password = \"pw\"\nredis_prefix = \"{prefix}\""
    );
    let crippled = Gatehouse::start(&config(&provider, &upstream, &crippled_session)).await;
    let mut b = Browser::new(&healthy.origin);
    assert_eq!(b.login("/").await.status(), 200);
    let token = provider.mint_logout_token(json!({ "sid": null, "sub": "alice" }));

    let failed = post_logout_token(&crippled, &token).await;
    assert_eq!(
        failed.status(),
        503,
        "ending failed: the provider is told to retry"
    );
    assert!(alive(&mut b).await, "nothing was ended");

    let retried = post_logout_token(&healthy, &token).await;
    assert_eq!(retried.status(), 200, "the retry is not taken for a replay");
    assert_eq!(retried.json::<Value>().await.unwrap()["sessions_ended"], 1);
    assert!(!alive(&mut b).await);
    assert_eq!(
        post_logout_token(&healthy, &token).await.status(),
        400,
        "now it is a replay"
    );

    let _: () = redis::cmd("ACL")
        .arg(&["DELUSER", &user][..])
        .query_async(&mut conn)
        .await
        .unwrap();
    let keys: Vec<String> = conn.keys(format!("{prefix}*")).await.unwrap();
    if !keys.is_empty() {
        let _: () = conn.del(keys).await.unwrap();
    }
}

#[tokio::test]
async fn invalid_logout_tokens_are_refused_and_end_nothing() {
    let stack = Stack::start().await;
    let mut b = logged_in(&stack, None).await;
    let p = &stack.provider;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let valid_claims = || {
        let token = p.mint_logout_token(json!({}));
        support::provider::decode_unverified(&token).unwrap().1
    };
    let flipped = {
        let t = p.mint_logout_token(json!({}));
        let (head, sig) = t.rsplit_once('.').unwrap();
        let mut sig: Vec<char> = sig.chars().collect();
        sig[5] = if sig[5] == 'A' { 'B' } else { 'A' };
        format!("{head}.{}", sig.into_iter().collect::<String>())
    };
    let alg_none = {
        use base64::Engine as _;
        let e = |v: &Value| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string());
        format!("{}.{}.", e(&json!({"alg": "none"})), e(&valid_claims()))
    };
    let cases: Vec<(&str, String)> = vec![
        ("bad signature", flipped),
        ("alg none", alg_none),
        ("wrong aud", p.mint_logout_token(json!({ "aud": "other-client" }))),
        ("wrong iss", p.mint_logout_token(json!({ "iss": "https://evil.example" }))),
        ("missing events", p.mint_logout_token(json!({ "events": null }))),
        ("wrong event", p.mint_logout_token(json!({ "events": { "http://schemas.openid.net/event/other": {} } }))),
        ("nonce present", p.mint_logout_token(json!({ "nonce": "n" }))),
        ("missing iat", p.mint_logout_token(json!({ "iat": null }))),
        ("old iat", p.mint_logout_token(json!({ "iat": now - 86_400 }))),
        ("expired", p.mint_logout_token(json!({ "exp": now - 600 }))),
        ("missing jti", p.mint_logout_token(json!({ "jti": null }))),
        ("neither sid nor sub", p.mint_logout_token(json!({ "sid": null, "sub": null }))),
        ("not a jwt", "garbage".to_owned()),
        ("id token shape", p.sign_raw(json!({"alg": "RS256", "kid": p.current_kid()}), json!({"iss": p.issuer(), "aud": "bff", "iat": now, "sub": "alice", "nonce": "x", "jti": "j"}))),
    ];
    for (name, token) in cases {
        let res = post_logout_token(&stack.gh, &token).await;
        assert_eq!(res.status(), 400, "{name}");
        assert!(alive(&mut b).await, "{name} ended the session");
    }
    let missing = reqwest::Client::new()
        .post(stack.gh.url("/auth/backchannel-logout"))
        .form(&[("other", "x")])
        .send()
        .await
        .unwrap();
    assert_eq!(missing.status(), 400);
    assert_eq!(
        reqwest::Client::new()
            .get(stack.gh.url("/auth/backchannel-logout"))
            .send()
            .await
            .unwrap()
            .status(),
        405
    );
}

#[tokio::test]
async fn back_channel_logout_works_across_instances_sharing_redis() {
    let provider = TestProvider::start(ProviderOptions::default()).await;
    let upstream = EchoUpstream::start().await;
    let session = redis_session(&unique_prefix("bcl"), "");
    let text = config(&provider, &upstream, &session);
    let (a, b) = (Gatehouse::start(&text).await, Gatehouse::start(&text).await);
    let mut browser = Browser::new(&a.origin);
    browser.login("/").await;
    assert!(alive(&mut browser).await);
    let token = provider.mint_logout_token(json!({}));
    assert_eq!(
        post_logout_token(&b, &token).await.status(),
        200,
        "the provider may call any instance"
    );
    assert!(!alive(&mut browser).await);
}

#[tokio::test]
async fn sessions_ended_by_logout_leave_the_index_and_are_not_counted() {
    let stack = Stack::start().await;
    let mut gone = logged_in(&stack, None).await;
    let mut live = logged_in(&stack, None).await;
    let user: Value = gone
        .api(Method::GET, "/auth/user")
        .await
        .json()
        .await
        .unwrap();
    let logout = user["logout_url"].as_str().unwrap().to_owned();
    assert_eq!(gone.get(&logout).await.status(), 302);

    let first_sid = stack.provider.stats().sids[0].clone();
    let by_sid = stack
        .provider
        .mint_logout_token(json!({ "sid": first_sid, "sub": null }));
    let res = post_logout_token(&stack.gh, &by_sid).await;
    assert_eq!(
        res.json::<Value>().await.unwrap()["sessions_ended"],
        0,
        "already logged out"
    );

    let by_sub = stack
        .provider
        .mint_logout_token(json!({ "sid": null, "sub": "alice" }));
    let res = post_logout_token(&stack.gh, &by_sub).await;
    assert_eq!(
        res.json::<Value>().await.unwrap()["sessions_ended"],
        1,
        "only the live session counts"
    );
    assert!(!alive(&mut live).await);
}

#[tokio::test]
async fn redis_index_entries_go_away_with_the_session() {
    use redis::AsyncCommands as _;
    let provider = TestProvider::start(ProviderOptions::default()).await;
    let upstream = EchoUpstream::start().await;
    let prefix = unique_prefix("idx");
    let session = redis_session(&prefix, "");
    let gh = Gatehouse::start(&config(&provider, &upstream, &session)).await;
    let mut b = Browser::new(&gh.origin);
    b.login("/").await;
    let mut conn = redis().await;
    let indexes = |conn: &mut redis::aio::MultiplexedConnection| {
        let pattern = format!("{prefix}s[iu][db]:*");
        let mut conn = conn.clone();
        async move { conn.keys::<_, Vec<String>>(pattern).await.unwrap() }
    };
    assert_eq!(indexes(&mut conn).await.len(), 2, "a sid and a sub index");
    let user: Value = b.api(Method::GET, "/auth/user").await.json().await.unwrap();
    b.get(user["logout_url"].as_str().unwrap()).await;
    assert!(
        indexes(&mut conn).await.is_empty(),
        "logout empties both indexes"
    );
}

#[tokio::test]
async fn redis_sub_index_drops_sessions_that_expired_on_their_own() {
    use redis::AsyncCommands as _;
    let provider = TestProvider::start(ProviderOptions::default()).await;
    let upstream = EchoUpstream::start().await;
    let prefix = unique_prefix("prune");
    let session = redis_session(&prefix, "");
    let gh = Gatehouse::start(&config(&provider, &upstream, &session)).await;
    let mut conn = redis().await;
    Browser::new(&gh.origin).login("/").await;
    let first: Vec<String> = conn.keys(format!("{prefix}s:*")).await.unwrap();
    let _: () = conn.del(&first[0]).await.unwrap(); // as if its TTL had run out
    Browser::new(&gh.origin).login("/").await;
    let subs: Vec<String> = conn.keys(format!("{prefix}sub:*")).await.unwrap();
    let members: Vec<String> = conn.smembers(&subs[0]).await.unwrap();
    assert_eq!(
        members.len(),
        1,
        "only the live session stays indexed: {members:?}"
    );
}
