//! The README quick start, proven: the demo stack of `examples/demo.rs` on free ports, a login
//! through the provider's sign-in form, and an API call that reaches the upstream with a token.
//! Also keeps the top-level `config.toml` valid, so the documented example cannot rot.

#![expect(
    clippy::unwrap_used,
    clippy::panic,
    reason = "clippy exempts #[test] fns only; the helpers here are test code too"
)]

#[expect(dead_code, reason = "the demo's CLI and main are not used here")]
#[path = "../examples/demo.rs"]
mod demo;
mod support;

use gatehouse::config::{Config, NoEnv};
use gatehouse::routes::RouteTarget;
use reqwest::Method;
use serde_json::Value;
use support::{Browser, REDIS_URL, location};

async fn start_demo(redis_url: Option<&str>) -> demo::Demo {
    let options = demo::Options {
        ports: demo::Ports::ANY,
        redis_url: redis_url.map(str::to_owned),
    };
    let demo = demo::start(options).await.unwrap();
    let http = reqwest::Client::new();
    for _ in 0..200 {
        let ready = http.get(format!("{}/readyz", demo.origin)).send().await;
        if ready.is_ok_and(|r| r.status() == 200) {
            return demo;
        }
        tokio::time::sleep(std::time::Duration::from_millis(25)).await;
    }
    panic!("the demo's gatehouse did not become ready");
}

/// The `<input type="hidden">` fields of the provider's sign-in form, unescaped.
fn hidden_fields(html: &str) -> Vec<(String, String)> {
    let unescape = |s: &str| {
        s.replace("&quot;", "\"")
            .replace("&#39;", "'")
            .replace("&lt;", "<")
            .replace("&gt;", ">")
            .replace("&amp;", "&")
    };
    html.split(r#"<input type="hidden" name=""#)
        .skip(1)
        .map(|rest| {
            let (name, rest) = rest.split_once(r#"" value=""#).unwrap();
            let (value, _) = rest.split_once('"').unwrap();
            (unescape(name), unescape(value))
        })
        .collect()
}

/// Everything a first-time user does in the browser, one request at a time.
async fn sign_in_and_call_the_api(demo: &demo::Demo) {
    let mut browser = Browser::new(&demo.origin);

    let page = browser.get("/").await;
    assert_eq!(page.status(), 200);
    assert!(
        page.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/html")
    );
    assert!(
        page.headers()["content-security-policy"]
            .to_str()
            .unwrap()
            .contains("default-src 'self'"),
        "gatehouse serves the page itself, with the static routes' headers"
    );
    let html = page.text().await.unwrap();
    assert!(html.contains("/auth/login?return_to=/") && html.contains("/app.js"));
    let script = browser.get("/app.js").await;
    assert_eq!(script.status(), 200);
    assert!(
        script.headers()["content-type"]
            .to_str()
            .unwrap()
            .contains("javascript")
    );
    assert!(script.text().await.unwrap().contains("/auth/user"));
    let navigation = browser
        .http
        .get(format!("{}/some/client/route", demo.origin))
        .header("accept", "text/html");
    let client_route = browser.send(navigation).await;
    assert_eq!(
        client_route.status(),
        200,
        "the SPA fallback answers client-side routes"
    );

    let signed_out = browser.api(Method::GET, "/auth/user").await;
    assert_eq!(signed_out.status(), 401);

    // "Log in": gatehouse sends the browser to the provider, which asks who is signing in.
    let authorize = browser.start_login("/").await;
    let issuer = demo.provider.issuer();
    assert!(
        authorize.starts_with(&format!("{issuer}/authorize?")),
        "{authorize}"
    );
    let form = browser.http.get(&authorize).send().await.unwrap();
    assert_eq!(form.status(), 200);
    let form = form.text().await.unwrap();
    assert!(form.contains("Sign in as alice"), "{form}");

    let mut fields = hidden_fields(&form);
    assert!(fields.iter().any(|(name, _)| name == "state"));
    fields.push(("login_hint".into(), "alice".into()));
    let approved = browser
        .http
        .post(format!("{issuer}/authorize"))
        .form(&fields)
        .send()
        .await
        .unwrap();
    assert_eq!(approved.status(), 302);
    let back = location(&approved);
    assert!(
        back.starts_with(&format!("{}/auth/callback?", demo.origin)),
        "{back}"
    );

    let signed_in = browser.callback(&back).await;
    assert!(signed_in.status().is_success() || signed_in.status().is_redirection());
    assert!(
        browser.session_cookie().is_some(),
        "the callback sets the session cookie"
    );

    let user: Value = browser
        .api(Method::GET, "/auth/user")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(user["sub"], "alice");
    assert!(
        user["logout_url"]
            .as_str()
            .unwrap()
            .starts_with("/auth/logout?sid=")
    );

    // "Call API": the SPA sent only its cookie; the API got a Bearer token the provider knows.
    let api = browser.api(Method::GET, "/api/hello").await;
    assert_eq!(api.status(), 200);
    let api: Value = api.json().await.unwrap();
    assert_eq!(api["authorization_present"], true);
    assert_eq!(api["sub"], "alice");

    let stranger = Browser::new(&demo.origin)
        .api(Method::GET, "/api/hello")
        .await;
    assert_eq!(stranger.status(), 401, "no session, no API");
}

#[tokio::test]
async fn demo_signs_in_through_the_provider_form_and_reaches_the_api_with_a_token() {
    let demo = start_demo(None).await;
    sign_in_and_call_the_api(&demo).await;
    demo.stop().await;
}

#[tokio::test]
async fn demo_with_redis_sessions_signs_in_and_reaches_the_api() {
    let demo = start_demo(Some(REDIS_URL)).await;
    sign_in_and_call_the_api(&demo).await;
    demo.stop().await;
}

#[test]
fn example_config_toml_is_valid_and_matches_the_demo_layout() {
    let config = Config::from_toml(include_str!("../config.toml"), &NoEnv)
        .unwrap_or_else(|e| panic!("config.toml: {e}"));
    assert_eq!(config.server.origin, "http://127.0.0.1:8080");
    assert_eq!(
        config.oidc.issuer, "http://127.0.0.1:9000",
        "kept exactly as written"
    );
    let api = config.routes.find("/api/hello").unwrap();
    let RouteTarget::Upstream(upstream) = &api.target else {
        panic!("/api/ forwards")
    };
    assert_eq!(upstream.authority().as_str(), "127.0.0.1:9100");
    let spa = config.routes.find("/").unwrap();
    let RouteTarget::Static(site) = &spa.target else {
        panic!("/ serves files")
    };
    assert_eq!(
        site.root,
        std::path::Path::new(demo::SPA_DIR).canonicalize().unwrap(),
        "config.toml serves the demo's files"
    );
    assert_eq!(site.fallback.as_deref(), Some("index.html"));
}

#[test]
fn gatehouse_check_accepts_the_example_config() {
    let config = concat!(env!("CARGO_MANIFEST_DIR"), "/config.toml");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_gatehouse"))
        .args(["check", "--config", config])
        .env_remove("GATEHOUSE_OIDC_CLIENT_SECRET")
        .env_remove("GATEHOUSE_SESSION_KEYS")
        .env_remove("GATEHOUSE_REDIS_URL")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains(": ok"), "{stdout}");
}
