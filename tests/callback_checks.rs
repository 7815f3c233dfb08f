#![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests fail loudly")]
//! SECURITY.md §1: every check of the callback (authorization response, code exchange, ID
//! token, discovery) has one test here; a refused login sets no session and calls no upstream.

mod support;

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use reqwest::Method;
use serde_json::json;
use support::provider::{Audience, Misbehave, Override, Signing};
use support::*;

// ---------------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------------

fn unix_now() -> i64 {
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs();
    i64::try_from(secs).unwrap()
}

/// The refused-login contract: the callback answers `status`, sets no session cookie, the
/// browser holds none, its next API call is 401, and no token ever reached the upstream.
/// `reason` must appear in gatehouse's log, so the test pins which check refused.
async fn assert_refused(
    stack: &Stack,
    b: &mut Browser,
    res: reqwest::Response,
    status: u16,
    reason: &str,
) -> String {
    assert_eq!(res.status(), status, "callback status");
    let set = set_cookies(res.headers());
    assert!(
        !set.iter().any(|c| c.name == COOKIE && !c.deletes()),
        "a refused login set a session cookie: {set:?}"
    );
    assert_eq!(b.session_cookie(), None, "the browser holds a session");
    let body = res.text().await.unwrap();
    let api = b.api(Method::GET, "/api/x").await;
    assert_eq!(api.status(), 401, "API call after a refused login");
    assert_no_token_upstream(stack);
    let logs = logs();
    assert!(logs.contains(reason), "log lacks {reason:?}:\n{logs}");
    body
}

fn assert_no_token_upstream(stack: &Stack) {
    let seen = stack.upstream.requests();
    assert!(
        seen.iter().all(|r| r.header("authorization").is_none()),
        "the upstream received a token: {seen:?}"
    );
}

/// A successful login: 200 with a session cookie, and the API works with it.
async fn assert_logged_in(stack: &Stack, b: &mut Browser, res: reqwest::Response) {
    assert_eq!(res.status(), 200, "callback: {}", res.text().await.unwrap());
    assert!(
        set_cookies(res.headers())
            .iter()
            .any(|c| c.name == COOKIE && !c.deletes()),
        "no session cookie set"
    );
    let api = b.api(Method::GET, "/api/x").await;
    assert_eq!(api.status(), 200, "API call after login");
    let auth = stack.upstream.last();
    assert!(
        auth.header("authorization")
            .is_some_and(|a| a.starts_with("Bearer "))
    );
}

/// Starts a stack, makes the provider misbehave, logs in: the code is exchanged but the ID
/// token refused (401). Returns the stack for further assertions.
async fn id_token_refused(change: impl FnOnce(&mut Misbehave), reason: &str) -> Stack {
    id_token_refused_with(Stack::start().await, change, reason).await
}

async fn id_token_refused_with(
    stack: Stack,
    change: impl FnOnce(&mut Misbehave),
    reason: &str,
) -> Stack {
    stack.provider.set(change);
    let mut b = stack.browser();
    let res = b.login("/").await;
    assert_refused(&stack, &mut b, res, 401, reason).await;
    assert_eq!(
        stack.provider.stats().token_code,
        1,
        "the code was exchanged"
    );
    stack
}

/// The usual config with `line` added to the `[oidc]` section.
fn config_with_oidc(provider: &TestProvider, upstream: &EchoUpstream, line: &str) -> String {
    let text = config(provider, upstream, "");
    assert!(text.contains("\n[session]"));
    text.replacen("\n[session]", &format!("{line}\n\n[session]"), 1)
}

/// `url` with its query parameters rewritten by `edit`.
fn edit_query(url: &str, edit: impl FnOnce(&mut Vec<(String, String)>)) -> String {
    let mut u = url::Url::parse(url).unwrap();
    let mut pairs: Vec<(String, String)> = u
        .query_pairs()
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect();
    edit(&mut pairs);
    u.query_pairs_mut().clear().extend_pairs(pairs);
    u.to_string()
}

fn query_value(url: &str, name: &str) -> Option<String> {
    url::Url::parse(url)
        .unwrap()
        .query_pairs()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.into_owned())
}

fn is_base64url(s: &str) -> bool {
    s.bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

// ---------------------------------------------------------------------------------------------
// ID token claims
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn id_token_from_another_issuer_is_refused() {
    id_token_refused(|m| m.iss = Override::Wrong, "Invalid issuer").await;
}

#[tokio::test]
async fn id_token_without_aud_is_refused() {
    id_token_refused(|m| m.aud = Audience::Missing, "Invalid audiences").await;
}

#[tokio::test]
async fn id_token_for_another_audience_is_refused() {
    id_token_refused(|m| m.aud = Audience::Wrong, "Invalid audiences").await;
}

#[tokio::test]
async fn id_token_with_an_extra_untrusted_audience_is_refused() {
    id_token_refused(
        |m| m.aud = Audience::ExtraWithoutAzp,
        "`other-client` is not a trusted audience",
    )
    .await;
}

/// A stack whose client trusts [`OTHER_CLIENT`] as an extra ID token audience, so that the
/// `azp` rules, not the audience rule, decide.
async fn trusting_other_client() -> Stack {
    let provider = TestProvider::start(ProviderOptions::default()).await;
    let upstream = EchoUpstream::start().await;
    let text = config_with_oidc(
        &provider,
        &upstream,
        "trusted_audiences = [\"other-client\"]",
    );
    let gh = Gatehouse::start(&text).await;
    Stack {
        provider,
        upstream,
        gh,
    }
}

#[tokio::test]
async fn id_token_with_a_trusted_extra_audience_and_no_azp_is_refused() {
    id_token_refused_with(
        trusting_other_client().await,
        |m| m.aud = Audience::ExtraWithoutAzp,
        "several audiences without azp",
    )
    .await;
}

#[tokio::test]
async fn id_token_with_a_trusted_extra_audience_and_a_foreign_azp_is_refused() {
    id_token_refused_with(
        trusting_other_client().await,
        |m| m.aud = Audience::ExtraWithForeignAzp,
        "azp is not this client",
    )
    .await;
}

#[tokio::test]
async fn id_token_with_a_trusted_extra_audience_and_our_azp_logs_in() {
    let stack = trusting_other_client().await;
    stack.provider.set(|m| m.aud = Audience::ExtraWithOurAzp);
    let mut b = stack.browser();
    let res = b.login("/").await;
    assert_logged_in(&stack, &mut b, res).await;
}

#[tokio::test]
async fn id_token_with_a_foreign_azp_is_refused() {
    id_token_refused(|m| m.aud = Audience::ForeignAzp, "azp is not this client").await;
}

#[tokio::test]
async fn id_token_without_sub_is_refused() {
    id_token_refused(|m| m.sub = Override::Missing, "missing field `sub`").await;
}

#[tokio::test]
async fn id_token_expired_beyond_the_clock_skew_is_refused() {
    let two_minutes_ago = unix_now() - 120;
    id_token_refused(
        |m| m.exp = Override::Value(json!(two_minutes_ago)),
        "ID token expired",
    )
    .await;
}

#[tokio::test]
async fn id_token_without_exp_is_refused() {
    id_token_refused(|m| m.exp = Override::Missing, "missing field `exp`").await;
}

#[tokio::test]
async fn id_token_issued_a_day_ago_is_refused() {
    id_token_refused(|m| m.iat = Override::Wrong, "iat is").await;
}

#[tokio::test]
async fn id_token_without_iat_is_refused() {
    id_token_refused(|m| m.iat = Override::Missing, "missing field `iat`").await;
}

#[tokio::test]
async fn id_token_without_nonce_is_refused() {
    id_token_refused(|m| m.nonce = Override::Missing, "missing nonce").await;
}

#[tokio::test]
async fn id_token_with_another_nonce_is_refused() {
    id_token_refused(|m| m.nonce = Override::Wrong, "nonce mismatch").await;
}

// ---------------------------------------------------------------------------------------------
// ID token signature and keys
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn id_token_with_a_flipped_signature_byte_is_refused() {
    let stack = id_token_refused(
        |m| m.signing = Signing::FlippedByte,
        "Signature verification failed",
    )
    .await;
    assert_eq!(
        stack.provider.stats().jwks,
        1,
        "a bad signature is no reason to refetch"
    );
}

#[tokio::test]
async fn unsigned_id_token_with_alg_none_is_refused() {
    let stack = id_token_refused(
        |m| m.signing = Signing::AlgNone,
        "Signature verification failed",
    )
    .await;
    assert_eq!(stack.provider.stats().jwks, 1);
}

#[tokio::test]
async fn id_token_hmac_signed_with_the_rsa_public_key_is_refused() {
    let stack = id_token_refused(
        |m| m.signing = Signing::Hs256WithPublicKey,
        "Signature verification failed",
    )
    .await;
    assert_eq!(stack.provider.stats().jwks, 1);
}

/// The JWKS key carries `alg: RS256`, so a PS256 token also finds no key; the allow-list is
/// what refuses it before any key lookup, which the unchanged JWKS count proves.
#[tokio::test]
async fn id_token_signed_with_an_algorithm_outside_the_allowed_list_is_refused() {
    let provider = TestProvider::start(ProviderOptions::default()).await;
    let upstream = EchoUpstream::start().await;
    let text = config_with_oidc(&provider, &upstream, r#"allowed_algs = ["RS256"]"#);
    let gh = Gatehouse::start(&text).await;
    let stack = Stack {
        provider,
        upstream,
        gh,
    };
    let stack = id_token_refused_with(
        stack,
        |m| m.signing = Signing::Ps256,
        "Signature verification failed",
    )
    .await;
    assert_eq!(
        stack.provider.stats().jwks,
        1,
        "no key lookup for a disallowed alg"
    );
}

/// ID tokens come from the token endpoint, an authenticated channel: an unknown `kid` there
/// always gets one JWKS refetch (a key rotation must never fail a login), no more, and a token
/// whose key is still unpublished afterwards is refused.
#[tokio::test]
async fn id_tokens_under_unknown_kids_get_one_jwks_refetch_each_and_are_refused() {
    let stack = id_token_refused(
        |m| m.signing = Signing::UnknownKid,
        "Signature verification failed",
    )
    .await;
    assert_eq!(
        stack.provider.stats().jwks,
        2,
        "start-up fetch + one refetch"
    );
    for _ in 0..3 {
        let mut b = stack.browser();
        let res = b.login("/").await;
        assert_refused(&stack, &mut b, res, 401, "Signature verification failed").await;
    }
    let stats = stack.provider.stats();
    assert_eq!(stats.token_code, 4);
    assert_eq!(stats.jwks, 5, "exactly one refetch per token");
    // Tokens under the published kid still log in.
    stack.provider.behaviour().reset();
    let mut b = stack.browser();
    let res = b.login("/").await;
    assert_logged_in(&stack, &mut b, res).await;
    assert_eq!(
        stack.provider.stats().jwks,
        5,
        "a known kid needs no refetch"
    );
}

#[tokio::test]
async fn id_token_signed_by_a_key_embedded_in_its_jwk_header_is_refused() {
    id_token_refused(
        |m| m.signing = Signing::EmbeddedJwk,
        "Signature verification failed",
    )
    .await;
}

#[tokio::test]
async fn id_token_without_kid_logs_in_when_the_jwks_has_one_key() {
    let stack = Stack::start().await;
    stack.provider.set(|m| m.signing = Signing::NoKid);
    let mut b = stack.browser();
    let res = b.login("/").await;
    assert_logged_in(&stack, &mut b, res).await;
}

#[tokio::test]
async fn login_after_provider_key_rotation_works_with_one_jwks_refetch() {
    let stack = Stack::start().await;
    let mut b = stack.browser();
    let res = b.login("/").await;
    assert_logged_in(&stack, &mut b, res).await;
    let before = stack.provider.stats().jwks;
    stack.provider.rotate_keys();
    let mut b = stack.browser();
    let res = b.login("/").await;
    assert_logged_in(&stack, &mut b, res).await;
    assert_eq!(stack.provider.stats().jwks, before + 1);
}

// ---------------------------------------------------------------------------------------------
// Authorization response
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn callback_without_state_is_refused() {
    let stack = Stack::start().await;
    let mut b = stack.browser();
    let at_provider = b.start_login("/").await;
    let back = b.authorize(&at_provider).await;
    let back = edit_query(&back, |p| p.retain(|(k, _)| k != "state"));
    let res = b.callback(&back).await;
    assert_refused(&stack, &mut b, res, 400, "lacks state").await;
    assert_eq!(stack.provider.stats().token_code, 0);
}

#[tokio::test]
async fn callback_with_a_forged_state_is_refused() {
    let stack = Stack::start().await;
    let mut b = stack.browser();
    let at_provider = b.start_login("/").await;
    let back = b.authorize(&at_provider).await;
    let forged = edit_query(&back, |p| {
        for (k, v) in p.iter_mut() {
            if k == "state" {
                *v = "AAAAAAAAAAAAAAAAAAAAAA".into();
            }
        }
    });
    let res = b.callback(&forged).await;
    assert_refused(&stack, &mut b, res, 400, "login state is unknown").await;
    assert_eq!(stack.provider.stats().token_code, 0);
}

#[tokio::test]
async fn replayed_callback_is_refused_and_creates_no_session() {
    let stack = Stack::start().await;
    let mut b = stack.browser();
    let at_provider = b.start_login("/").await;
    let back = b.authorize(&at_provider).await;
    let login_cookies = b.login_cookies();
    assert_eq!(login_cookies.len(), 1);
    let res = b.callback(&back).await;
    assert_eq!(res.status(), 200);
    let session = b.session_cookie().unwrap();

    // Same browser (back button): refused, its session untouched.
    let again = b.callback(&back).await;
    assert_eq!(again.status(), 400);
    assert!(
        !set_cookies(again.headers())
            .iter()
            .any(|c| c.name == COOKIE)
    );
    assert_eq!(b.session_cookie(), Some(session));

    // The login cookie and URL alone (no session): refused in full, before the provider is
    // asked again (a reused code could make it revoke the first login's tokens).
    let mut other = stack.browser();
    other.jar.extend(login_cookies);
    let res = other.callback(&back).await;
    assert_refused(&stack, &mut other, res, 400, "login state is unknown").await;
    assert_eq!(
        stack.provider.stats().token_code,
        1,
        "the code went out once"
    );
    assert_eq!(
        b.api(Method::GET, "/api/x").await.status(),
        200,
        "the first login still works"
    );
}

#[tokio::test]
async fn callback_from_another_browser_is_refused_and_leaves_the_owners_login_intact() {
    let stack = Stack::start().await;
    let mut a = stack.browser();
    let at_provider = a.start_login("/").await;
    let back = a.authorize(&at_provider).await;

    let mut b = stack.browser();
    b.start_login("/").await; // b has a login cookie of its own
    let res = b.callback(&back).await;
    assert_refused(&stack, &mut b, res, 400, "login state is unknown").await;

    assert_eq!(
        stack.provider.stats().token_code,
        0,
        "b's attempt never reached the provider"
    );

    // A state that leaked to someone else cannot be used to deny its owner the login.
    let res = a.callback(&back).await;
    assert_eq!(res.status(), 200);
    assert!(a.session_cookie().is_some());
}

#[tokio::test]
async fn callback_with_a_foreign_iss_parameter_is_refused() {
    let stack = Stack::start().await;
    stack.provider.set(|m| m.authz_iss = Override::Wrong);
    let mut b = stack.browser();
    let res = b.login("/").await;
    assert_refused(&stack, &mut b, res, 400, "does not match the issuer").await;
    assert_eq!(stack.provider.stats().token_code, 0);
}

#[tokio::test]
async fn an_error_response_with_a_foreign_iss_is_refused_as_a_mix_up() {
    let stack = Stack::start().await;
    stack.provider.set(|m| {
        m.authz_denied = true;
        m.authz_iss = Override::Wrong;
    });
    let mut b = stack.browser();
    let res = b.login("/").await;
    // Not the 403 access_denied page: the error came from someone else than our provider.
    let body = assert_refused(&stack, &mut b, res, 400, "does not match the issuer").await;
    assert!(!body.contains("cancelled"), "{body}");
}

#[tokio::test]
async fn callback_without_iss_is_refused_when_the_provider_advertises_it() {
    let stack = Stack::start().await;
    stack.provider.set(|m| m.authz_iss = Override::Missing);
    let mut b = stack.browser();
    let res = b.login("/").await;
    assert_refused(
        &stack,
        &mut b,
        res,
        400,
        "missing although the provider advertises",
    )
    .await;
    assert_eq!(stack.provider.stats().token_code, 0);
}

#[tokio::test]
async fn callback_without_iss_logs_in_when_the_provider_does_not_advertise_it() {
    let opts = ProviderOptions {
        iss_parameter_supported: false,
        ..ProviderOptions::default()
    };
    let stack = Stack::with(opts, "").await;
    let mut b = stack.browser();
    let at_provider = b.start_login("/").await;
    let back = b.authorize(&at_provider).await;
    assert_eq!(query_value(&back, "iss"), None);
    let res = b.callback(&back).await;
    assert_logged_in(&stack, &mut b, res).await;
}

#[tokio::test]
async fn callback_with_a_duplicated_code_is_refused() {
    let stack = Stack::start().await;
    stack.provider.set(|m| m.duplicate_code = true);
    let mut b = stack.browser();
    let res = b.login("/").await;
    assert_refused(&stack, &mut b, res, 400, "duplicated code").await;
    assert_eq!(stack.provider.stats().token_code, 0);
}

#[tokio::test]
async fn callback_with_a_duplicated_state_is_refused() {
    let stack = Stack::start().await;
    stack.provider.set(|m| m.duplicate_state = true);
    let mut b = stack.browser();
    let res = b.login("/").await;
    assert_refused(&stack, &mut b, res, 400, "duplicated state").await;
    assert_eq!(stack.provider.stats().token_code, 0);
}

#[tokio::test]
async fn callback_with_a_duplicated_iss_is_refused() {
    let stack = Stack::start().await;
    let mut b = stack.browser();
    let at_provider = b.start_login("/").await;
    let back = b.authorize(&at_provider).await;
    let back = edit_query(&back, |p| p.push(("iss".into(), stack.provider.issuer())));
    let res = b.callback(&back).await;
    assert_refused(&stack, &mut b, res, 400, "duplicated iss").await;
    assert_eq!(stack.provider.stats().token_code, 0);
}

#[tokio::test]
async fn access_denied_answers_403_with_a_page_that_echoes_no_markup() {
    let stack = Stack::start().await;
    stack.provider.set(|m| m.authz_denied = true);
    let mut b = stack.browser();
    let at_provider = b.start_login("/").await;
    let back = b.authorize(&at_provider).await;
    assert_eq!(
        query_value(&back, "error").as_deref(),
        Some("access_denied")
    );
    let injected = edit_query(&back, |p| {
        for (k, v) in p.iter_mut() {
            if k == "error_description" {
                *v = "<script>alert(1)</script>".into();
            }
        }
    });
    let res = b.callback(&injected).await;
    let content_type = res.headers()["content-type"].to_str().unwrap().to_owned();
    assert!(content_type.starts_with("text/html"), "{content_type}");
    let body = assert_refused(&stack, &mut b, res, 403, "access_denied").await;
    assert!(!body.to_ascii_lowercase().contains("<script"), "{body}");
    assert_eq!(stack.provider.stats().token_code, 0);
}

#[tokio::test]
async fn a_code_is_exchanged_once_and_its_reuse_creates_no_session() {
    let stack = Stack::start().await;
    let mut a = stack.browser();
    let at_provider = a.start_login("/").await;
    let back = a.authorize(&at_provider).await;
    let res = a.callback(&back).await;
    assert_eq!(res.status(), 200);

    // Another browser with a fresh login of its own presents a's code under its own state.
    let mut b = stack.browser();
    let b_at_provider = b.start_login("/").await;
    let b_state = query_value(&b_at_provider, "state").unwrap();
    let stolen = edit_query(&back, |p| {
        for (k, v) in p.iter_mut() {
            if k == "state" {
                v.clone_from(&b_state);
            }
        }
    });
    let res = b.callback(&stolen).await;
    assert_refused(&stack, &mut b, res, 401, "invalid_grant").await;
    assert_eq!(
        stack.provider.stats().token_code,
        2,
        "the reuse reached the provider"
    );
}

#[tokio::test]
async fn authorization_requests_carry_pkce_s256_and_fresh_128_bit_state_and_nonce() {
    let stack = Stack::start().await;
    let mut seen = Vec::new();
    for _ in 0..2 {
        let mut b = stack.browser();
        let at_provider = b.start_login("/").await;
        b.authorize(&at_provider).await;
        let p = stack.provider.stats().last_authorize;
        assert_eq!(
            p.get("code_challenge_method").map(String::as_str),
            Some("S256")
        );
        let challenge = &p["code_challenge"];
        assert_eq!(challenge.len(), 43, "{challenge}");
        assert!(is_base64url(challenge));
        for name in ["state", "nonce"] {
            let v = &p[name];
            assert!(v.len() >= 22 && is_base64url(v), "{name} = {v:?}");
        }
        seen.push((p["state"].clone(), p["nonce"].clone(), challenge.clone()));
    }
    let (first, second) = (&seen[0], &seen[1]);
    assert_ne!(first.0, second.0, "state repeats");
    assert_ne!(first.1, second.1, "nonce repeats");
    assert_ne!(first.2, second.2, "PKCE challenge repeats");
    assert_ne!(first.0, first.1, "state doubles as nonce");
}

// ---------------------------------------------------------------------------------------------
// Discovery
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn discovery_document_for_another_issuer_keeps_gatehouse_unready() {
    let provider = TestProvider::start(ProviderOptions::default()).await;
    provider.set(|m| m.discovery_issuer = Override::Wrong);
    let upstream = EchoUpstream::start().await;
    let gh = Gatehouse::start_unready(&config(&provider, &upstream, "")).await;
    let mut b = Browser::new(&gh.origin);
    for _ in 0..10 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert_eq!(b.get("/readyz").await.status(), 503);
    }
    assert!(provider.stats().discovery >= 1, "discovery was attempted");
    let res = b.get("/auth/login?return_to=%2F").await;
    assert_eq!(res.status(), 503);
    assert!(b.jar.is_empty(), "no cookie while unready: {:?}", b.jar);
    // Control: the same provider with an honest document makes gatehouse ready.
    provider.set(|m| m.discovery_issuer = Override::Honest);
    gh.wait_ready().await;
}

// ---------------------------------------------------------------------------------------------
// Sessions made by logins
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn three_tabs_logging_in_at_once_all_finish_in_reverse_order() {
    let stack = Stack::start().await;
    let mut b = stack.browser();
    let mut backs = Vec::new();
    for _ in 0..3 {
        let at_provider = b.start_login("/").await;
        backs.push(b.authorize(&at_provider).await);
    }
    for back in backs.iter().rev() {
        let res = b.callback(back).await;
        assert_eq!(res.status(), 200, "{}", res.text().await.unwrap());
        assert!(
            set_cookies(res.headers())
                .iter()
                .any(|c| c.name == COOKIE && !c.deletes()),
            "no session cookie"
        );
    }
    assert_eq!(b.api(Method::GET, "/api/x").await.status(), 200);
}

#[tokio::test]
async fn every_login_creates_a_new_session_and_ends_the_previous_one() {
    let stack = Stack::start().await;
    let mut b = stack.browser();
    assert_eq!(b.login("/").await.status(), 200);
    let first = b.session_cookie().unwrap();
    assert_eq!(b.login("/").await.status(), 200);
    let second = b.session_cookie().unwrap();
    assert_ne!(first, second);

    let mut old = stack.browser();
    old.jar.insert(COOKIE.into(), first);
    assert_eq!(old.api(Method::GET, "/auth/user").await.status(), 401);
    let mut current = stack.browser();
    current.jar.insert(COOKIE.into(), second);
    assert_eq!(current.api(Method::GET, "/auth/user").await.status(), 200);
}

#[tokio::test]
async fn token_type_is_compared_case_insensitively_and_must_be_bearer() {
    let stack = Stack::start().await;
    stack
        .provider
        .set(|m| m.token_type = Override::Value(serde_json::json!("bEaReR")));
    let mut b = stack.browser();
    assert_eq!(
        b.login("/").await.status(),
        200,
        "bearer in any case logs in"
    );

    stack.provider.set(|m| m.token_type = Override::Wrong);
    let mut mallory = stack.browser();
    let res = mallory.login("/").await;
    assert_eq!(
        res.status(),
        401,
        "a mac token is not forwarded as a bearer token"
    );
    assert!(mallory.session_cookie().is_none());
}

#[tokio::test]
async fn a_missing_expires_in_gets_a_short_default_lifetime() {
    let stack = Stack::start().await;
    stack.provider.set(|m| m.expires_in = Override::Missing);
    let mut b = stack.browser();
    assert_eq!(b.login("/").await.status(), 200);
    assert_eq!(b.api(reqwest::Method::GET, "/api/x").await.status(), 200);
    assert_eq!(
        stack.provider.stats().token_refresh,
        0,
        "the default is not 'already expired'"
    );
}
