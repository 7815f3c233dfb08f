//! Logout: the session dies server-side, tokens are revoked, the provider is told, and a
//! cross-site page cannot trigger any of it.

#![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests fail loudly")]

mod support;

use reqwest::Method;
use support::*;

async fn logout_url(b: &mut Browser) -> String {
    let user: serde_json::Value = b.api(Method::GET, "/auth/user").await.json().await.unwrap();
    user["logout_url"].as_str().unwrap().to_owned()
}

#[tokio::test]
async fn logout_ends_the_session_revokes_tokens_and_redirects_to_the_provider() {
    let stack = Stack::start().await;
    let mut b = stack.browser();
    b.login("/").await;
    let old_cookie = b.session_cookie().unwrap();
    let url = logout_url(&mut b).await;
    assert!(url.starts_with("/auth/logout?sid="), "{url}");

    let res = b.get(&url).await;
    assert_eq!(res.status(), 302);
    let cleared = set_cookies(res.headers())
        .into_iter()
        .find(|c| c.name == COOKIE)
        .expect("cookie cleared");
    assert!(cleared.deletes());
    let location = location(&res);
    assert!(
        location.starts_with(&format!("{}/end_session", stack.provider.issuer())),
        "{location}"
    );
    let end: url::Url = location.parse().unwrap();
    let q: std::collections::HashMap<_, _> = end.query_pairs().into_owned().collect();
    assert_eq!(
        q["post_logout_redirect_uri"],
        format!("{}/", stack.gh.origin)
    );
    assert!(q.contains_key("id_token_hint"));

    let revoked = stack.provider.stats().revocations;
    assert_eq!(
        revoked.len(),
        2,
        "refresh and access token revoked: {revoked:?}"
    );

    // The old cookie, replayed, is dead.
    let replay = b
        .http
        .get(stack.gh.url("/api/x"))
        .header("x-csrf", "1")
        .header("cookie", format!("{COOKIE}={old_cookie}"));
    assert_eq!(replay.send().await.unwrap().status(), 401);
    let user = b
        .http
        .get(stack.gh.url("/auth/user"))
        .header("x-csrf", "1")
        .header("cookie", format!("{COOKIE}={old_cookie}"));
    assert_eq!(user.send().await.unwrap().status(), 401);
}

#[tokio::test]
async fn get_logout_without_the_sessions_sid_is_refused_and_the_session_survives() {
    let stack = Stack::start().await;
    let mut b = stack.browser();
    b.login("/").await;
    for path in [
        "/auth/logout",
        "/auth/logout?sid=guess",
        "/auth/logout?sid=",
    ] {
        let res = b.get(path).await;
        assert_eq!(res.status(), 403, "{path}");
    }
    assert_eq!(
        b.api(Method::GET, "/api/x").await.status(),
        200,
        "still logged in"
    );
    assert!(stack.provider.stats().revocations.is_empty());
}

#[tokio::test]
async fn post_logout_needs_the_anti_forgery_header() {
    let stack = Stack::start().await;
    let mut b = stack.browser();
    b.login("/").await;
    let forged = b.http.post(stack.gh.url("/auth/logout"));
    assert_eq!(b.send(forged).await.status(), 403);
    let cross = b
        .http
        .post(stack.gh.url("/auth/logout"))
        .header("x-csrf", "1")
        .header("origin", "https://evil.example");
    assert_eq!(b.send(cross).await.status(), 403);
    assert_eq!(
        b.api(Method::GET, "/api/x").await.status(),
        200,
        "still logged in"
    );

    let res = b.api(Method::POST, "/auth/logout").await;
    assert_eq!(res.status(), 200);
    let body: serde_json::Value = res.json().await.unwrap();
    let redirect_to = body["redirect_to"].as_str().unwrap();
    assert!(redirect_to.contains("/end_session"), "{redirect_to}");
    let end: url::Url = redirect_to.parse().unwrap();
    assert!(
        end.query_pairs().all(|(k, _)| k != "id_token_hint"),
        "script must never see the ID token: {redirect_to}"
    );
    assert!(
        !redirect_to.contains("eyJ"),
        "no JWT anywhere in the answer: {redirect_to}"
    );
    assert_eq!(b.api(Method::GET, "/api/x").await.status(), 401);
}

#[tokio::test]
async fn user_endpoint_reports_claims_and_expiry_but_never_a_token() {
    let stack = Stack::start().await;
    let mut b = stack.browser();
    assert_eq!(b.api(Method::GET, "/auth/user").await.status(), 401);
    b.login("/").await;
    assert_eq!(
        b.get("/auth/user").await.status(),
        403,
        "anti-forgery header required"
    );
    let res = b.api(Method::GET, "/auth/user").await;
    assert_eq!(res.status(), 200);
    assert_eq!(res.headers()["cache-control"], "no-store");
    let text = res.text().await.unwrap();
    let user: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(user["sub"], "alice");
    // The defaults: 12 h absolute lifetime, 30 min idle timeout, both counted from the login.
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    let expires_at = user["expires_at"].as_i64().unwrap();
    let idle_expires_at = user["idle_expires_at"].as_i64().unwrap();
    assert!(
        (expires_at - (now + 12 * 3600)).abs() <= 5,
        "expires_at {expires_at}, now {now}"
    );
    assert!(
        (idle_expires_at - (now + 30 * 60)).abs() <= 5,
        "idle_expires_at {idle_expires_at}, now {now}"
    );
    b.api(Method::GET, "/api/x").await;
    let token = stack
        .upstream
        .last()
        .header("authorization")
        .unwrap()
        .trim_start_matches("Bearer ")
        .to_owned();
    assert!(!text.contains(&token), "no access token in /auth/user");
    for field in ["access_token", "refresh_token", "id_token", "nonce"] {
        assert!(!text.contains(field), "{field} leaked: {text}");
    }
}

#[tokio::test]
async fn logout_without_a_session_just_clears_the_cookie_and_goes_home() {
    let stack = Stack::start().await;
    let mut b = stack.browser();
    b.jar.insert(COOKIE.into(), "stale-value".into());
    let res = b.get("/auth/logout").await;
    assert_eq!(res.status(), 302);
    assert_eq!(location(&res), format!("{}/", stack.gh.origin));
    let cleared = set_cookies(res.headers())
        .into_iter()
        .find(|c| c.name == COOKIE)
        .expect("the session cookie is cleared");
    assert!(
        cleared.deletes()
            && cleared.has("Secure")
            && cleared.has("HttpOnly")
            && cleared.has("Path=/")
    );
    assert!(b.session_cookie().is_none());
}

#[tokio::test]
async fn a_cookie_that_points_at_no_session_is_cleared_with_the_401() {
    let stack = Stack::start().await;
    let mut b = stack.browser();
    b.login("/").await;
    let token = stack.provider.mint_logout_token(serde_json::json!({}));
    let bcl = b
        .http
        .post(stack.gh.url("/auth/backchannel-logout"))
        .form(&[("logout_token", token)]);
    assert_eq!(bcl.send().await.unwrap().status(), 200);
    let res = b.api(Method::GET, "/api/x").await;
    assert_eq!(res.status(), 401);
    let cleared = set_cookies(res.headers())
        .into_iter()
        .find(|c| c.name == COOKIE)
        .expect("stale cookie cleared");
    assert!(cleared.deletes() && cleared.has("Secure") && cleared.has("HttpOnly"));
    let fresh = stack.browser().api(Method::GET, "/api/x").await;
    assert!(
        set_cookies(fresh.headers()).is_empty(),
        "no cookie, nothing to clear"
    );
}
