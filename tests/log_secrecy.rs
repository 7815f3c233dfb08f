//! SECURITY.md §7: a full flow logged at trace level shows no token, code, state, cookie value
//! or client secret anywhere in the log.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "tests fail loudly"
)]

mod support;

use reqwest::Method;
use support::*;

fn query_param(url: &str, name: &str) -> String {
    url::Url::parse(url)
        .unwrap()
        .query_pairs()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.into_owned())
        .unwrap_or_else(|| panic!("{name} in {url}"))
}

/// Asserts `log` holds neither `secret` nor its tail (a truncated or partly masked copy
/// would still leak).
fn assert_absent(log: &str, what: &str, secret: &str) {
    assert!(
        secret.len() >= 8,
        "{what} is too short to search for: {secret:?}"
    );
    assert!(!log.contains(secret), "the log contains the {what}");
    let tail = &secret[secret.len() - secret.len().min(20)..];
    assert!(
        !log.contains(tail),
        "the log contains the end of the {what}"
    );
}

#[tokio::test]
async fn a_full_flow_logs_no_token_code_state_cookie_or_client_secret() {
    let stack = Stack::start().await;
    let mut b = stack.browser();

    // Login, step by step, keeping every secret the flow carries.
    let at_provider = b.start_login("/app").await;
    let state = query_param(&at_provider, "state");
    let (_, login_cookie) = b.login_cookies().pop().expect("login cookie");
    let back = b.authorize(&at_provider).await;
    let code = query_param(&back, "code");
    assert_eq!(b.callback(&back).await.status(), 200);
    let session_cookie = b.session_cookie().expect("session cookie");

    let api = b.api(Method::GET, "/api/things").await;
    assert_eq!(api.status(), 200);
    let bearer = stack
        .upstream
        .last()
        .header("authorization")
        .unwrap()
        .to_owned();
    let access_token = bearer.strip_prefix("Bearer ").unwrap().to_owned();

    let user: serde_json::Value = b.api(Method::GET, "/auth/user").await.json().await.unwrap();
    let logout_url = user["logout_url"].as_str().unwrap().to_owned();
    let res = b.get(&logout_url).await;
    assert_eq!(res.status(), 302, "logout redirects to the provider");
    let end_session = location(&res);
    let res = b.http.get(&end_session).send().await.unwrap();
    assert!(res.status().is_redirection() || res.status().is_success());
    assert_eq!(b.api(Method::GET, "/api/things").await.status(), 401);

    let stats = stack.provider.stats();
    let id_token = stats
        .end_sessions
        .last()
        .and_then(|e| e.id_token_hint.clone())
        .expect("id_token_hint sent to end-session");
    let refresh_token = stats
        .revocations
        .iter()
        .find(|t| **t != access_token)
        .expect("refresh token revoked at logout")
        .clone();
    let client_secret = stack.provider.options().client_secret.clone();

    let log = logs();
    // Not vacuous: the flow was logged, request by request.
    let requests: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("request") && l.contains("status="))
        .collect();
    assert!(requests.len() >= 6, "access log lines: {requests:#?}");
    for status in ["status=302", "status=200", "status=401"] {
        assert!(
            requests.iter().any(|l| l.contains(status)),
            "no {status} line"
        );
    }
    assert!(
        log.contains("TRACE") || log.contains("DEBUG"),
        "captured below info"
    );

    for (what, secret) in [
        ("access token", access_token.as_str()),
        ("refresh token", refresh_token.as_str()),
        ("ID token", id_token.as_str()),
        ("ID token signature", id_token.rsplit('.').next().unwrap()),
        ("authorization code", code.as_str()),
        ("state", state.as_str()),
        ("session cookie value", session_cookie.as_str()),
        ("login cookie value", login_cookie.as_str()),
        ("client secret", client_secret.as_str()),
    ] {
        assert_absent(&log, what, secret);
    }
}
