//! SECURITY.md §7: a full flow logged at trace level shows no token, code, state, cookie value
//! or client secret anywhere in the log, in text lines and in JSON lines (`--log-format json`).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "tests fail loudly"
)]

mod support;

use gatehouse::telemetry::LogFormat;
use reqwest::Method;
use support::*;

/// Installs this test's capture: text lines, or gatehouse's JSON lines.
fn capture(format: LogFormat, filter: &str) {
    match format {
        LogFormat::Text => capture_logs_with(filter),
        LogFormat::Json => capture_logs_as(LogFormat::Json, filter, Vec::new()),
    }
}

/// The status of each access-log line (JSON lines must all parse).
fn access_statuses(log: &str, format: LogFormat) -> Vec<u64> {
    match format {
        LogFormat::Text => log
            .lines()
            .filter(|l| l.contains("request") && l.contains("status="))
            .filter_map(|l| l.split("status=").nth(1)?.split(' ').next()?.parse().ok())
            .collect(),
        LogFormat::Json => log
            .lines()
            .map(|l| serde_json::from_str::<serde_json::Value>(l).expect("a JSON object per line"))
            .filter(|l| l["message"] == "request")
            .filter_map(|l| l["status"].as_u64())
            .collect(),
    }
}

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
    full_flow(LogFormat::Text).await;
}

#[tokio::test]
async fn a_full_flow_logs_no_token_code_state_cookie_or_client_secret_in_json_lines() {
    full_flow(LogFormat::Json).await;
}

async fn full_flow(format: LogFormat) {
    capture(
        format,
        "trace,hyper=info,hyper_util=info,h2=info,reqwest=info,redis=info",
    );
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
    let requests = access_statuses(&log, format);
    assert!(requests.len() >= 6, "access log lines: {requests:?}");
    for status in [302, 200, 401] {
        assert!(requests.contains(&status), "no {status} line");
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

#[tokio::test]
async fn refreshes_failures_errors_and_back_channel_logout_log_no_secret_in_any_crate_at_trace() {
    failure_paths(LogFormat::Text).await;
}

#[tokio::test]
async fn refreshes_failures_errors_and_back_channel_logout_log_no_secret_in_json_lines() {
    failure_paths(LogFormat::Json).await;
}

async fn failure_paths(format: LogFormat) {
    // Every crate at trace: hyper, h2, reqwest and redis included.
    capture(format, "trace");
    let prefix = unique_prefix("secrecy");
    let opts = ProviderOptions {
        access_token_ttl: std::time::Duration::from_secs(2),
        ..ProviderOptions::default()
    };
    let stack = Stack::with(opts, &redis_session(&prefix, "")).await;
    let mut secrets: Vec<(&str, String)> = Vec::new();

    // A login whose tokens are then refreshed (rotation), and whose refresh then fails.
    let mut b = stack.browser();
    let at_provider = b.start_login("/").await;
    secrets.push(("state", query_param(&at_provider, "state")));
    let (_, login_cookie) = b.login_cookies().pop().unwrap();
    secrets.push(("login cookie value", login_cookie));
    let back = b.authorize(&at_provider).await;
    secrets.push(("authorization code", query_param(&back, "code")));
    assert_eq!(b.callback(&back).await.status(), 200);
    secrets.push(("session cookie value", b.session_cookie().unwrap()));
    assert_eq!(b.api(Method::GET, "/api/x").await.status(), 200);
    let first_access = bearer_seen(&stack);
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    assert_eq!(b.api(Method::GET, "/api/x").await.status(), 200);
    let refreshed_access = bearer_seen(&stack);
    assert_ne!(first_access, refreshed_access, "the token was refreshed");
    secrets.push(("access token", first_access));
    secrets.push(("refreshed access token", refreshed_access));
    stack
        .provider
        .set(|m| m.refresh_fault = Some(support::provider::TokenFault::InvalidGrant));
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    assert_eq!(
        b.api(Method::GET, "/api/x").await.status(),
        401,
        "invalid_grant ends it"
    );
    stack.provider.behaviour().reset();

    // Error paths: a code used twice, a denied login, a logout token replayed.
    let mut c = stack.browser();
    let at_provider = c.start_login("/").await;
    let back = c.authorize(&at_provider).await;
    secrets.push(("second code", query_param(&back, "code")));
    assert_eq!(c.callback(&back).await.status(), 200);
    secrets.push(("second session cookie", c.session_cookie().unwrap()));
    let mut thief = stack.browser();
    let thief_start = thief.start_login("/").await;
    let stolen = back.replace(
        &query_param(&back, "state"),
        &query_param(&thief_start, "state"),
    );
    assert_eq!(thief.callback(&stolen).await.status(), 401);
    stack.provider.set(|m| m.authz_denied = true);
    assert_eq!(stack.browser().login("/").await.status(), 403);
    stack.provider.behaviour().reset();
    let logout_token = stack.provider.mint_logout_token(serde_json::json!({}));
    for expected in [200, 400] {
        let res = reqwest::Client::new()
            .post(stack.gh.url("/auth/backchannel-logout"))
            .form(&[("logout_token", logout_token.as_str())])
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), expected);
    }
    secrets.push(("logout token", logout_token));

    let stats = stack.provider.stats();
    for (i, t) in stats.revocations.iter().enumerate() {
        if i < 4 {
            secrets.push(("revoked token", t.clone()));
        }
    }
    secrets.push((
        "client secret",
        stack.provider.options().client_secret.clone(),
    ));

    let log = logs();
    assert!(
        log.contains("h2") || log.contains("hyper") || log.contains("reqwest"),
        "third-party crates were captured at trace"
    );
    assert!(access_statuses(&log, format).contains(&401), "access lines");
    for (what, secret) in &secrets {
        assert_absent(&log, what, secret);
    }
}

fn bearer_seen(stack: &Stack) -> String {
    stack
        .upstream
        .last()
        .header("authorization")
        .unwrap()
        .strip_prefix("Bearer ")
        .unwrap()
        .to_owned()
}
