//! The providers people run: for each shape of the test provider (Auth0, Keycloak, Entra ID,
//! Google, Okta, Cognito, older servers), gatehouse runs a login, an API call, a refresh and a
//! logout with the `[oidc]` lines README.md's "Provider notes" give for it, read from README.md
//! itself so the notes cannot rot.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "tests fail loudly"
)]

mod support;

use std::time::Duration;

use reqwest::Method;
use serde_json::{Value, json};
use support::provider::{Shape, decode_unverified};
use support::*;

/// The ` ```toml ` block that follows the heading `#### {heading}` in README.md.
fn readme_block(heading: &str) -> String {
    let readme = include_str!("../README.md");
    let start = readme
        .find(&format!("#### {heading}\n"))
        .unwrap_or_else(|| panic!("README.md has no \"#### {heading}\""));
    let rest = &readme[start..];
    let open = rest
        .find("```toml\n")
        .expect("a toml block after the heading")
        + 8;
    let close = rest[open..].find("```").expect("the block ends") + open;
    rest[open..close].to_owned()
}

/// The usual config with its `issuer` line replaced by the README block's lines (its
/// placeholders replaced by the test provider's addresses) and `extra_oidc` added.
fn readme_config(
    heading: &str,
    places: &[(&str, String)],
    provider: &TestProvider,
    upstream: &EchoUpstream,
) -> String {
    let mut block = readme_block(heading);
    for (placeholder, real) in places {
        assert!(block.contains(placeholder), "{heading}: {placeholder}");
        block = block.replace(placeholder, real);
    }
    let lines: String = block
        .lines()
        .filter(|l| l.trim() != "[oidc]")
        .map(|l| format!("{l}\n"))
        .collect();
    let base = config(provider, upstream, "");
    let issuer_line = format!("issuer = \"{}\"\n", provider.issuer());
    assert!(base.contains(&issuer_line));
    base.replacen(&issuer_line, &lines, 1)
}

/// Access tokens that live two seconds, so a refresh is due after one.
fn short_lived(shape: Shape) -> ProviderOptions {
    ProviderOptions {
        access_token_ttl: Duration::from_secs(2),
        ..ProviderOptions::shaped(shape)
    }
}

/// What the logout of a shape looks like.
enum Logout {
    /// To the end-session endpoint at this URL prefix, with the redirect under this name.
    Provider { at: String, param: &'static str },
    /// Straight back to gatehouse: the provider has no end-session endpoint.
    Local,
}

struct Expect {
    logout: Logout,
    /// Tokens revoked at logout (refresh + access, or none without a revocation endpoint).
    revocations: usize,
    /// Refreshes the test goes through (each one a second apart).
    refreshes: usize,
}

/// The bearer token the upstream received last.
fn forwarded(stack: &Stack) -> String {
    let auth = stack.upstream.last();
    auth.header("authorization")
        .and_then(|a| a.strip_prefix("Bearer "))
        .expect("a bearer token upstream")
        .to_owned()
}

/// Login, API call, `expect.refreshes` refreshes (each with an API call carrying the new
/// token), logout; returns the browser (logged out) for shape-specific checks.
async fn full_flow(stack: &Stack, expect: Expect) -> Browser {
    let p = &stack.provider;
    let first = p.stats().access_tokens.len();
    let mut b = stack.browser();
    let res = b.login("/").await;
    assert_eq!(res.status(), 200, "login: {}", res.text().await.unwrap());
    assert_eq!(b.api(Method::GET, "/api/x").await.status(), 200);
    assert_eq!(forwarded(stack), p.stats().access_tokens[first]);

    for n in 1..=expect.refreshes {
        tokio::time::sleep(Duration::from_millis(1100)).await;
        assert_eq!(
            b.api(Method::GET, "/api/x").await.status(),
            200,
            "refresh {n}"
        );
        let stats = p.stats();
        assert_eq!(stats.token_refresh, n, "refreshed once more");
        assert_eq!(stats.refresh_reuse, 0, "no refresh token presented twice");
        assert_eq!(
            forwarded(stack),
            stats.access_tokens[first + n],
            "the new token goes upstream"
        );
    }

    let user: Value = b.api(Method::GET, "/auth/user").await.json().await.unwrap();
    let res = b.get(user["logout_url"].as_str().unwrap()).await;
    assert_eq!(res.status(), 302, "logout");
    let to = location(&res);
    let back = format!("{}/", stack.gh.origin);
    match expect.logout {
        Logout::Provider { at, param } => {
            assert!(to.starts_with(&at), "{to} is not at {at}");
            let url = url::Url::parse(&to).unwrap();
            let q: std::collections::HashMap<_, _> = url.query_pairs().into_owned().collect();
            assert_eq!(q.get(param), Some(&back), "{to}");
            assert_eq!(q.get("client_id").map(String::as_str), Some("bff"));
            let at_provider = b.http.get(&to).send().await.unwrap();
            assert_eq!(at_provider.status(), 302, "the provider accepts the logout");
            assert_eq!(location(&at_provider), back, "and sends the browser back");
        }
        Logout::Local => assert_eq!(to, back, "no end-session endpoint: straight back"),
    }
    assert_eq!(
        p.stats().revocations.len(),
        expect.revocations,
        "revocations"
    );
    assert_eq!(
        b.api(Method::GET, "/api/x").await.status(),
        401,
        "logged out"
    );
    b
}

async fn stack_from_readme(
    shape: Shape,
    heading: &str,
    places: impl Fn(&TestProvider) -> Vec<(&'static str, String)>,
) -> Stack {
    let provider = TestProvider::start(short_lived(shape)).await;
    let upstream = EchoUpstream::start().await;
    let text = readme_config(heading, &places(&provider), &provider, &upstream);
    let gh = Gatehouse::start(&text).await;
    Stack {
        provider,
        upstream,
        gh,
    }
}

#[tokio::test]
async fn auth0_with_its_trailing_slash_issuer_and_an_audience_works_end_to_end() {
    let stack = stack_from_readme(Shape::Auth0, "Auth0", |p| {
        vec![("https://TENANT.auth0.com/", p.issuer())]
    })
    .await;
    assert!(stack.provider.issuer().ends_with('/'));
    let at = format!("{}oidc/logout", stack.provider.issuer());
    let expect = Expect {
        logout: Logout::Provider {
            at,
            param: "post_logout_redirect_uri",
        },
        revocations: 2,
        refreshes: 2,
    };
    full_flow(&stack, expect).await;
    let stats = stack.provider.stats();
    assert_eq!(
        stats.last_authorize.get("audience").map(String::as_str),
        Some("https://api.example.com"),
        "oidc.auth_params reach the authorization request"
    );
    // With the audience the API gets a JWT it can verify, not an opaque string.
    let (_, claims) = decode_unverified(&stats.access_tokens[0]).expect("a JWT access token");
    assert_eq!(claims["aud"], "https://api.example.com");
}

#[tokio::test]
async fn keycloak_with_a_realm_path_issuer_and_back_channel_logout_by_sid_works() {
    let stack = stack_from_readme(Shape::Keycloak, "Keycloak", |p| {
        vec![("https://keycloak.example.com/realms/REALM", p.issuer())]
    })
    .await;
    assert!(stack.provider.issuer().ends_with("/realms/gatehouse"));
    // A second session, ended by the provider over the back channel, by its sid.
    let mut other = stack.browser();
    assert_eq!(other.login("/").await.status(), 200);
    let sid = stack.provider.stats().sids[0].clone();
    let token = stack
        .provider
        .mint_logout_token(json!({ "sid": sid, "sub": null }));
    let res = reqwest::Client::new()
        .post(stack.gh.url("/auth/backchannel-logout"))
        .form(&[("logout_token", token)])
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(other.api(Method::GET, "/api/x").await.status(), 401);

    let at = format!("{}/protocol/openid-connect/logout", stack.provider.issuer());
    let expect = Expect {
        logout: Logout::Provider {
            at,
            param: "post_logout_redirect_uri",
        },
        revocations: 2,
        refreshes: 2,
    };
    full_flow(&stack, expect).await;
}

#[tokio::test]
async fn entra_id_without_a_revocation_endpoint_logs_out_cleanly_and_reuses_no_assumption() {
    let stack = stack_from_readme(Shape::EntraId, "Microsoft Entra ID (v2 endpoints)", |p| {
        vec![(
            "https://login.microsoftonline.com/TENANT-ID/v2.0",
            p.issuer(),
        )]
    })
    .await;
    assert!(stack.provider.issuer().ends_with("/v2.0"));
    let at = stack
        .provider
        .issuer()
        .replace("/v2.0", "/oauth2/v2.0/logout");
    let expect = Expect {
        logout: Logout::Provider {
            at,
            param: "post_logout_redirect_uri",
        },
        revocations: 0,
        refreshes: 2,
    };
    full_flow(&stack, expect).await;
    assert!(
        !logs().contains("provider refused to revoke"),
        "no revocation attempted"
    );
}

#[tokio::test]
async fn google_with_access_type_offline_keeps_its_only_refresh_token_and_logs_out_locally() {
    let stack = stack_from_readme(Shape::Google, "Google", |p| {
        vec![("https://accounts.google.com", p.issuer())]
    })
    .await;
    let expect = Expect {
        logout: Logout::Local,
        revocations: 2,
        refreshes: 2,
    };
    full_flow(&stack, expect).await;
    let params = stack.provider.stats().last_authorize;
    assert_eq!(params["access_type"], "offline");
    assert_eq!(params["prompt"], "consent");
    assert!(!params["scope"].contains("offline_access"), "{params:?}");
}

#[tokio::test]
async fn google_with_offline_access_configured_warns_at_start_up_naming_oidc_scopes() {
    let provider = TestProvider::start(ProviderOptions::shaped(Shape::Google)).await;
    let upstream = EchoUpstream::start().await;
    let _gh = Gatehouse::start(&config(&provider, &upstream, "")).await;
    let warning = logs()
        .lines()
        .find(|l| l.contains("WARN") && l.contains("offline_access"))
        .map(str::to_owned)
        .unwrap_or_else(|| panic!("no offline_access warning in:\n{}", logs()));
    assert!(warning.contains("oidc.scopes"), "{warning}");
    assert!(warning.contains("scopes_supported"), "{warning}");
}

#[tokio::test]
async fn okta_with_its_authorization_server_path_issuer_works_end_to_end() {
    let stack = stack_from_readme(Shape::Okta, "Okta", |p| {
        vec![("https://EXAMPLE.okta.com/oauth2/default", p.issuer())]
    })
    .await;
    let at = format!("{}/v1/logout", stack.provider.issuer());
    let expect = Expect {
        logout: Logout::Provider {
            at,
            param: "post_logout_redirect_uri",
        },
        revocations: 2,
        refreshes: 2,
    };
    full_flow(&stack, expect).await;
}

#[tokio::test]
async fn cognito_with_its_hosted_ui_on_another_host_and_configured_logout_works_end_to_end() {
    let stack = stack_from_readme(Shape::Cognito, "Amazon Cognito", |p| {
        vec![
            (
                "https://cognito-idp.REGION.amazonaws.com/USER_POOL_ID",
                p.issuer(),
            ),
            (
                "https://DOMAIN.auth.REGION.amazoncognito.com",
                p.other_origin(),
            ),
        ]
    })
    .await;
    let p = &stack.provider;
    let expect = Expect {
        logout: Logout::Provider {
            at: format!("{}/logout", p.other_origin()),
            param: "logout_uri",
        },
        revocations: 2,
        refreshes: 2,
    };
    full_flow(&stack, expect).await;
    assert_ne!(p.origin(), p.other_origin(), "two hosts");
    let ends = p.stats().end_sessions;
    assert_eq!(ends.len(), 1);
    assert_eq!(ends[0].client_id.as_deref(), Some("bff"));
}

#[tokio::test]
async fn an_older_es256_server_without_kid_and_with_string_expires_in_works_end_to_end() {
    let provider = TestProvider::start(short_lived(Shape::LegacyEs256)).await;
    let upstream = EchoUpstream::start().await;
    let gh = Gatehouse::start(&config(&provider, &upstream, "")).await;
    let stack = Stack {
        provider,
        upstream,
        gh,
    };
    let at = format!("{}/end_session", stack.provider.issuer());
    let expect = Expect {
        logout: Logout::Provider {
            at,
            param: "post_logout_redirect_uri",
        },
        revocations: 2,
        // expires_in "2" read as two seconds: refreshes are due.
        refreshes: 2,
    };
    full_flow(&stack, expect).await;
    let params = stack.provider.stats().last_authorize;
    assert_eq!(
        params["code_challenge_method"], "S256",
        "PKCE although unadvertised"
    );
}

#[tokio::test]
async fn an_older_ps256_server_without_discovery_works_with_configured_endpoints() {
    let stack = stack_from_readme(Shape::LegacyPs256, "Older or unusual servers", |p| {
        vec![("https://sso.example.com", p.origin())]
    })
    .await;
    let expect = Expect {
        // Nothing advertised without discovery: logout ends the local session only.
        logout: Logout::Local,
        revocations: 0,
        // The refresh response has no expires_in: 300 s are assumed, so one refresh only.
        refreshes: 1,
    };
    full_flow(&stack, expect).await;
    let stats = stack.provider.stats();
    assert_eq!(
        stats.discovery, 0,
        "oidc.discovery = false fetches no document"
    );
    assert_eq!(stats.jwks, 1);
}

#[tokio::test]
async fn a_provider_behind_a_private_ca_is_reached_only_with_oidc_ca_file() {
    let opts = ProviderOptions {
        tls: true,
        ..ProviderOptions::default()
    };
    let provider = TestProvider::start(opts).await;
    assert!(provider.issuer().starts_with("https://localhost:"));
    let upstream = EchoUpstream::start().await;
    let text = config(&provider, &upstream, "");

    let untrusted = Gatehouse::start_unready(&text).await;
    tokio::time::sleep(Duration::from_millis(600)).await;
    let ready = reqwest::get(untrusted.url("/readyz")).await.unwrap();
    assert_eq!(ready.status(), 503, "an unknown CA is not trusted");
    assert_eq!(provider.stats().discovery, 0, "no TLS session, no request");

    let n: u64 = rand::random();
    let ca = std::env::temp_dir().join(format!("gatehouse-provider-ca-{n:x}.pem"));
    std::fs::write(&ca, provider.ca_pem().unwrap()).unwrap();
    let with_ca = text.replacen(
        "[session]",
        &format!("ca_file = \"{}\"\n\n[session]", ca.display()),
        1,
    );
    let gh = Gatehouse::start(&with_ca).await;
    // The browser visits the provider too, so it trusts the CA as well.
    let mut b = Browser::new(&gh.origin);
    let cert = reqwest::Certificate::from_pem(provider.ca_pem().unwrap().as_bytes()).unwrap();
    b.http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .add_root_certificate(cert)
        .build()
        .unwrap();
    assert_eq!(b.login("/").await.status(), 200);
    assert_eq!(b.api(Method::GET, "/api/x").await.status(), 200);
    let _ = std::fs::remove_file(ca);
}
