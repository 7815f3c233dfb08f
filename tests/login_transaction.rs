//! The login transaction lives in the browser: starting a login costs the server nothing, a
//! flood of login starts cannot push out a user who is signing in, several tabs can log in at
//! once, and every callback clears its own login cookie.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "tests fail loudly"
)]

mod support;

use futures_util::StreamExt as _;
use gatehouse::session::Store;
use reqwest::Method;
use support::*;

/// Sends `n` login starts from anonymous clients, 32 at a time; each must be a 302.
async fn flood(gh: &Gatehouse, n: usize) {
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let url = gh.url("/auth/login?return_to=%2Fflood");
    let statuses: Vec<u16> = futures_util::stream::iter(0..n)
        .map(|_| {
            let req = http.get(&url).send();
            async move { req.await.map(|r| r.status().as_u16()).unwrap_or(0) }
        })
        .buffer_unordered(32)
        .collect()
        .await;
    assert!(
        statuses.iter().all(|s| *s == 302),
        "every login start redirects"
    );
}

async fn redis_keys(prefix: &str) -> usize {
    use redis::AsyncCommands as _;
    let mut conn = redis().await;
    let keys: Vec<String> = conn.keys(format!("{prefix}*")).await.unwrap();
    keys.len()
}

fn memory_entries(gh: &Gatehouse) -> (u64, u64) {
    match &gh.app.sessions.store {
        Store::Memory(m) => m.len(),
        Store::Redis(_) => panic!("memory store expected"),
    }
}

/// A stack without the login rate limit: the flood must cost nothing even unthrottled.
async fn unthrottled(session: &str) -> Stack {
    let provider = TestProvider::start(ProviderOptions::default()).await;
    let upstream = EchoUpstream::start().await;
    let text = format!(
        "{}\n[auth]\nlogin_rate_limit = 0\n",
        config(&provider, &upstream, session)
    );
    let gh = Gatehouse::start(&text).await;
    Stack {
        provider,
        upstream,
        gh,
    }
}

#[tokio::test]
async fn ten_thousand_login_starts_leave_the_memory_store_untouched_and_a_signing_in_user_unharmed()
{
    let stack = unthrottled("").await;
    let mut user = stack.browser();
    let at_provider = user.start_login("/app").await;
    let back = user.authorize(&at_provider).await;
    let before = memory_entries(&stack.gh);

    flood(&stack.gh, 10_000).await;
    assert_eq!(
        memory_entries(&stack.gh),
        before,
        "the flood stored nothing"
    );

    let res = user.callback(&back).await;
    assert_eq!(res.status(), 200, "the user at the provider logs in fine");
    assert_eq!(user.api(Method::GET, "/api/x").await.status(), 200);
}

#[tokio::test]
async fn ten_thousand_login_starts_write_no_redis_key_and_a_signing_in_user_unharmed() {
    let prefix = unique_prefix("flood");
    let stack = unthrottled(&redis_session(&prefix, "")).await;
    let mut user = stack.browser();
    let at_provider = user.start_login("/app").await;
    let back = user.authorize(&at_provider).await;
    assert_eq!(redis_keys(&prefix).await, 0);

    flood(&stack.gh, 10_000).await;
    assert_eq!(redis_keys(&prefix).await, 0, "the flood wrote no key");

    assert_eq!(user.callback(&back).await.status(), 200);
    assert_eq!(user.api(Method::GET, "/api/x").await.status(), 200);
}

#[tokio::test]
async fn five_tabs_logging_in_at_once_all_succeed_in_any_order() {
    let stack = Stack::start().await;
    let mut b = stack.browser();
    let mut backs = Vec::new();
    for _ in 0..5 {
        let at_provider = b.start_login("/").await;
        backs.push(b.authorize(&at_provider).await);
    }
    assert_eq!(
        b.login_cookies().len(),
        5,
        "one login cookie per pending login"
    );
    for i in [2, 0, 4, 1, 3] {
        let res = b.callback(&backs[i]).await;
        assert_eq!(res.status(), 200, "tab {i}: {}", res.text().await.unwrap());
    }
    assert!(
        b.login_cookies().is_empty(),
        "every callback cleared its cookie"
    );
    assert_eq!(b.api(Method::GET, "/api/x").await.status(), 200);
}

#[tokio::test]
async fn a_sixth_pending_login_drops_the_oldest_and_the_cookie_header_stays_small() {
    let stack = Stack::start().await;
    let mut b = stack.browser();
    let mut backs = Vec::new();
    for i in 0..8 {
        // A long return_to makes each login cookie as large as it gets.
        let return_to = format!("/page/{i}?q={}", "x".repeat(400));
        let at_provider = b.start_login(&return_to).await;
        backs.push(b.authorize(&at_provider).await);
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    let cookies = b.login_cookies();
    assert_eq!(cookies.len(), 5, "at most five pending logins");
    let header = b.cookie_header();
    assert!(
        header.len() < 5 * 1024,
        "Cookie header is {} bytes",
        header.len()
    );

    for old in &backs[..3] {
        let res = b.callback(old).await;
        assert_eq!(res.status(), 400, "the oldest logins were dropped");
    }
    for newer in &backs[3..] {
        assert_eq!(b.callback(newer).await.status(), 200);
    }
}

#[tokio::test]
async fn the_callback_clears_its_login_cookie_whatever_the_outcome() {
    let stack = Stack::start().await;
    let mut b = stack.browser();
    let at_provider = b.start_login("/").await;
    let (name, _) = b.login_cookies().pop().unwrap();
    let back = b.authorize(&at_provider).await;
    let res = b.callback(&back).await;
    assert_eq!(res.status(), 200);
    let cleared = set_cookies(res.headers())
        .into_iter()
        .find(|c| c.name == name)
        .expect("the completed login's cookie is cleared");
    assert!(cleared.deletes() && cleared.has("Secure") && cleared.has("HttpOnly"));

    // A refused login (the user cancels at the provider) clears its cookie too.
    stack.provider.set(|m| m.authz_denied = true);
    let at_provider = b.start_login("/").await;
    let (name, _) = b.login_cookies().pop().unwrap();
    let back = b.authorize(&at_provider).await;
    let res = b.callback(&back).await;
    assert_eq!(res.status(), 403);
    assert!(
        set_cookies(res.headers())
            .iter()
            .any(|c| c.name == name && c.deletes()),
        "the cancelled login's cookie is cleared"
    );
    assert!(b.login_cookies().is_empty());
}

#[tokio::test]
async fn login_cookies_are_lax_host_only_secure_and_short_lived() {
    let stack = Stack::start().await;
    let mut b = stack.browser();
    let res = b.get("/auth/login?return_to=%2F").await;
    assert_eq!(res.status(), 302);
    let set = set_cookies(res.headers());
    let login = set
        .iter()
        .find(|c| c.name.starts_with(LOGIN_COOKIE))
        .expect("a login cookie");
    for attr in [
        "Secure",
        "HttpOnly",
        "SameSite=Lax",
        "Path=/",
        "Max-Age=600",
    ] {
        assert!(login.has(attr), "{attr} missing: {login:?}");
    }
    assert!(login.name.starts_with("__Host-"));
    assert!(
        !login
            .attributes
            .iter()
            .any(|a| a.to_ascii_lowercase().starts_with("domain"))
    );
    assert!(login.value.len() < 1024, "{} bytes", login.value.len());
}

#[tokio::test]
async fn a_login_cookie_under_another_logins_name_does_not_open() {
    let stack = Stack::start().await;
    let mut b = stack.browser();
    let first = b.start_login("/").await;
    let second = b.start_login("/").await;
    let back_first = b.authorize(&first).await;
    let back_second = b.authorize(&second).await;
    // Swap the two values under each other's names.
    let cookies = b.login_cookies();
    let (n0, v0) = cookies[0].clone();
    let (n1, v1) = cookies[1].clone();
    b.jar.insert(n0, v1);
    b.jar.insert(n1, v0);
    assert_eq!(b.callback(&back_first).await.status(), 400);
    assert_eq!(b.callback(&back_second).await.status(), 400);
    assert_eq!(
        stack.provider.stats().token_code,
        0,
        "no code was exchanged"
    );
}

#[tokio::test]
async fn a_return_to_too_long_for_the_login_cookie_falls_back_to_the_root() {
    let stack = Stack::start().await;
    let mut b = stack.browser();
    let long = format!("/deep?{}", "q".repeat(600));
    let res = b.login(&long).await;
    assert_eq!(res.status(), 200);
    let page = res.text().await.unwrap();
    assert!(page.contains("url=/\""), "{page}");
}
