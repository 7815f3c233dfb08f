//! Logging in through the test provider and calling the API with the session cookie.

#![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests fail loudly")]

mod support;

use support::*;

#[tokio::test]
async fn login_sets_a_hardened_session_cookie_and_the_api_gets_the_bearer_token() {
    let stack = Stack::start().await;
    let mut b = stack.browser();
    let res = b.login("/app?x=1").await;
    assert_eq!(res.status(), 200);
    let cookies = set_cookies(res.headers());
    let session = cookies
        .iter()
        .find(|c| c.name == COOKIE)
        .expect("session cookie set");
    for attr in ["Secure", "HttpOnly", "SameSite=Strict", "Path=/"] {
        assert!(session.has(attr), "{attr} missing: {session:?}");
    }
    assert!(
        !session
            .attributes
            .iter()
            .any(|a| a.to_ascii_lowercase().starts_with("domain"))
    );
    let body = res.text().await.unwrap();
    assert!(body.contains("url=/app?x=1"), "{body}");

    let api = b.api(reqwest::Method::GET, "/api/things").await;
    assert_eq!(api.status(), 200);
    let seen = stack.upstream.last();
    let auth = seen.header("authorization").expect("bearer attached");
    assert!(auth.starts_with("Bearer "));
}

#[tokio::test]
async fn the_session_cookie_is_small_and_of_constant_size() {
    let stack = Stack::start().await;
    let mut lengths = Vec::new();
    for hint in ["alice", "bob-with-a-much-longer-subject-name"] {
        let mut b = stack.browser();
        let at_provider = b.start_login("/").await;
        let back = b
            .authorize(&format!("{at_provider}&login_hint={hint}"))
            .await;
        b.callback(&back).await;
        let value = b.session_cookie().unwrap();
        assert!(COOKIE.len() + value.len() < 256, "{} bytes", value.len());
        lengths.push(value.len());
    }
    assert_eq!(
        lengths[0], lengths[1],
        "size does not depend on the user or the tokens"
    );
}
