//! The test OpenID Provider does what gatehouse's tests assume: a by-hand code flow with PKCE,
//! single-use codes, rotating refresh tokens with reuse detection, introspection, and tokens
//! (honest or deliberately broken) that verify, or fail to, against its JWKS.

#![expect(
    clippy::unwrap_used,
    reason = "clippy exempts #[test] fns only; the helpers here are test code too"
)]

mod support;

use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, Mac as _};
use openidconnect::JsonWebKey as _;
use openidconnect::core::{CoreJsonWebKey, CoreJsonWebKeySet, CoreJwsSigningAlgorithm};
use reqwest::{Client, StatusCode};
use serde_json::{Value, json};
use sha2::{Digest as _, Sha256};
use support::provider::{
    Audience, BACKCHANNEL_LOGOUT_EVENT, EVIL_ISSUER, OTHER_CLIENT, Override, ProviderOptions,
    Shape, Signing, TestProvider, TokenFault, UNKNOWN_KID, decode_unverified,
};
use url::Url;

const REDIRECT: &str = "http://127.0.0.1:9/callback";
const RS256: CoreJwsSigningAlgorithm = CoreJwsSigningAlgorithm::RsaSsaPkcs1V15Sha256;
const VERIFIER: &str = "a-verifier-that-is-long-enough-for-rfc-7636-purposes-0123456789";

fn client() -> Client {
    Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

async fn provider() -> TestProvider {
    TestProvider::start(ProviderOptions::default()).await
}

fn challenge(verifier: &str) -> String {
    URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes()))
}

/// An authorization request as gatehouse sends it, with `extra` appended.
async fn authorize(p: &TestProvider, extra: &[(&str, &str)]) -> reqwest::Response {
    let mut url = Url::parse(&format!("{}/authorize", p.issuer())).unwrap();
    url.query_pairs_mut()
        .extend_pairs([
            ("client_id", "bff"),
            ("response_type", "code"),
            ("redirect_uri", REDIRECT),
            ("scope", "openid email"),
            ("state", "st-1"),
            ("nonce", "n-1"),
            ("code_challenge", &challenge(VERIFIER)),
            ("code_challenge_method", "S256"),
        ])
        .extend_pairs(extra);
    client().get(url).send().await.unwrap()
}

/// The query pairs of a redirect's Location, in order (duplicates kept).
fn location_pairs(res: &reqwest::Response) -> Vec<(String, String)> {
    assert_eq!(res.status(), StatusCode::FOUND);
    let location = res.headers()["location"].to_str().unwrap();
    let url = Url::parse(location).unwrap();
    url.query_pairs().into_owned().collect()
}

fn param(pairs: &[(String, String)], name: &str) -> Option<String> {
    pairs
        .iter()
        .find(|(n, _)| n == name)
        .map(|(_, v)| v.clone())
}

async fn login(p: &TestProvider) -> String {
    let pairs = location_pairs(&authorize(p, &[]).await);
    param(&pairs, "code").unwrap()
}

async fn token(p: &TestProvider, form: &[(&str, &str)]) -> (StatusCode, Value) {
    let res = client()
        .post(format!("{}/token", p.issuer()))
        .basic_auth("bff", Some("bff-secret"))
        .form(form)
        .send()
        .await
        .unwrap();
    (res.status(), res.json().await.unwrap())
}

async fn exchange(p: &TestProvider, code: &str, verifier: &str) -> (StatusCode, Value) {
    let form = [
        ("grant_type", "authorization_code"),
        ("code", code),
        ("redirect_uri", REDIRECT),
        ("code_verifier", verifier),
    ];
    token(p, &form).await
}

async fn refresh(p: &TestProvider, refresh_token: &str) -> (StatusCode, Value) {
    let form = [
        ("grant_type", "refresh_token"),
        ("refresh_token", refresh_token),
    ];
    token(p, &form).await
}

async fn introspect(p: &TestProvider, token: &str) -> Value {
    let res = client()
        .post(format!("{}/introspect", p.issuer()))
        .form(&[
            ("token", token),
            ("client_id", "bff"),
            ("client_secret", "bff-secret"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    res.json().await.unwrap()
}

async fn jwks(p: &TestProvider) -> CoreJsonWebKeySet {
    let url = format!("{}/jwks", p.issuer());
    client()
        .get(url)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

fn input(jwt: &str) -> &str {
    jwt.rsplit_once('.').unwrap().0
}

fn signature(jwt: &str) -> Vec<u8> {
    URL_SAFE_NO_PAD
        .decode(jwt.rsplit_once('.').unwrap().1)
        .unwrap()
}

/// Verifies an RS256 JWT against the provider's JWKS the way a relying party would.
async fn verify(p: &TestProvider, jwt: &str) -> Result<Value, String> {
    let jwks = jwks(p).await;
    let (header, claims) = decode_unverified(jwt).ok_or("not a JWT")?;
    if header["alg"] != "RS256" {
        return Err(format!("alg {}", header["alg"]));
    }
    let key = match header["kid"].as_str() {
        Some(kid) => jwks
            .keys()
            .iter()
            .find(|k| k.key_id().map(|id| id.as_str()) == Some(kid)),
        None => jwks.keys().first(),
    }
    .ok_or("kid not in JWKS")?;
    let signature = URL_SAFE_NO_PAD
        .decode(jwt.rsplit_once('.').unwrap().1)
        .map_err(|e| e.to_string())?;
    key.verify_signature(&RS256, input(jwt).as_bytes(), &signature)
        .map_err(|e| e.to_string())?;
    Ok(claims)
}

#[tokio::test]
async fn discovery_document_describes_every_endpoint() {
    let p = provider().await;
    let i = p.issuer();
    let doc: Value = client()
        .get(format!("{i}/.well-known/openid-configuration"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(doc["issuer"], i);
    assert!(!i.ends_with('/'));
    for (name, path) in [
        ("authorization_endpoint", "/authorize"),
        ("token_endpoint", "/token"),
        ("jwks_uri", "/jwks"),
        ("userinfo_endpoint", "/userinfo"),
        ("end_session_endpoint", "/end_session"),
        ("revocation_endpoint", "/revoke"),
        ("introspection_endpoint", "/introspect"),
    ] {
        assert_eq!(doc[name], format!("{i}{path}"), "{name}");
    }
    assert_eq!(doc["code_challenge_methods_supported"], json!(["S256"]));
    assert_eq!(
        doc["id_token_signing_alg_values_supported"],
        json!(["RS256"])
    );
    assert_eq!(doc["authorization_response_iss_parameter_supported"], true);
    assert_eq!(doc["backchannel_logout_session_supported"], true);
    assert_eq!(p.stats().discovery, 1);

    p.set(|m| m.discovery_issuer = Override::Wrong);
    let doc: Value = client()
        .get(format!("{i}/.well-known/openid-configuration"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(doc["issuer"], EVIL_ISSUER);
}

#[tokio::test]
async fn code_flow_issues_tokens_that_verify_against_the_jwks() {
    let p = provider().await;
    let pairs = location_pairs(&authorize(&p, &[]).await);
    assert_eq!(param(&pairs, "state").as_deref(), Some("st-1"));
    assert_eq!(param(&pairs, "iss"), Some(p.issuer()));
    let code = param(&pairs, "code").unwrap();

    let (status, body) = exchange(&p, &code, VERIFIER).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["token_type"], "Bearer");
    assert_eq!(body["expires_in"], 300);
    assert!(body["refresh_token"].is_string());
    let claims = verify(&p, body["id_token"].as_str().unwrap())
        .await
        .unwrap();
    assert_eq!(claims["iss"], p.issuer());
    assert_eq!(claims["aud"], "bff");
    assert_eq!(claims["sub"], "alice");
    assert_eq!(claims["nonce"], "n-1");
    assert_eq!(claims["sid"], p.stats().sids[0]);

    let access = body["access_token"].as_str().unwrap();
    let info: Value = client()
        .get(format!("{}/userinfo", p.issuer()))
        .bearer_auth(access)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        info,
        json!({
            "sub": "alice",
            "email": "alice@example.test",
            "email_verified": true,
            "name": "Alice Example",
        })
    );

    let stats = p.stats();
    assert_eq!(
        (stats.authorize, stats.token_code, stats.userinfo),
        (1, 1, 1)
    );
    assert_eq!(stats.last_authorize["code_challenge_method"], "S256");
}

#[tokio::test]
async fn login_hint_picks_another_subject() {
    let p = provider().await;
    let pairs = location_pairs(&authorize(&p, &[("login_hint", "bob")]).await);
    let (_, body) = exchange(&p, &param(&pairs, "code").unwrap(), VERIFIER).await;
    let (_, claims) = decode_unverified(body["id_token"].as_str().unwrap()).unwrap();
    assert_eq!(claims["sub"], "bob");
}

#[tokio::test]
async fn authorization_requests_without_s256_pkce_or_with_repeats_are_refused() {
    let p = provider().await;
    let mut url = Url::parse(&format!("{}/authorize", p.issuer())).unwrap();
    url.query_pairs_mut().extend_pairs([
        ("client_id", "bff"),
        ("response_type", "code"),
        ("redirect_uri", REDIRECT),
        ("scope", "openid"),
        ("state", "s"),
        ("nonce", "n"),
    ]);
    let res = client().get(url.clone()).send().await.unwrap();
    assert_eq!(res.status(), StatusCode::BAD_REQUEST);

    url.query_pairs_mut()
        .append_pair("code_challenge", VERIFIER)
        .append_pair("code_challenge_method", "plain");
    let res = client().get(url).send().await.unwrap();
    assert_eq!(res.status(), StatusCode::BAD_REQUEST);

    let res = authorize(&p, &[("state", "second")]).await;
    assert_eq!(res.status(), StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn wrong_pkce_verifier_is_refused() {
    let p = provider().await;
    let code = login(&p).await;
    let (status, body) =
        exchange(&p, &code, "some-other-verifier-of-sufficient-length-000000").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(body["error"], "invalid_grant");
}

#[tokio::test]
async fn code_reuse_is_refused_and_revokes_the_first_grant() {
    let p = provider().await;
    let code = login(&p).await;
    let (status, first) = exchange(&p, &code, VERIFIER).await;
    assert_eq!(status, StatusCode::OK);
    let access = first["access_token"].as_str().unwrap();
    assert_eq!(introspect(&p, access).await["active"], true);

    let (status, body) = exchange(&p, &code, VERIFIER).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(body["error"], "invalid_grant");
    assert_eq!(introspect(&p, access).await["active"], false);
}

#[tokio::test]
async fn token_endpoint_requires_client_authentication() {
    let p = provider().await;
    let code = login(&p).await;
    let form = [
        ("grant_type", "authorization_code"),
        ("code", code.as_str()),
        ("redirect_uri", REDIRECT),
        ("code_verifier", VERIFIER),
    ];
    let url = format!("{}/token", p.issuer());
    let res = client()
        .post(&url)
        .basic_auth("bff", Some("wrong"))
        .form(&form)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(
        res.json::<Value>().await.unwrap()["error"],
        "invalid_client"
    );

    let mut post = form.to_vec();
    post.extend([("client_id", "bff"), ("client_secret", "bff-secret")]);
    let res = client().post(&url).form(&post).send().await.unwrap();
    assert_eq!(res.status(), StatusCode::OK, "client_secret_post works");
}

#[tokio::test]
async fn refresh_rotation_detects_reuse_and_revokes_the_grant() {
    let p = provider().await;
    let (_, first) = exchange(&p, &login(&p).await, VERIFIER).await;
    let (_, id_claims) = decode_unverified(first["id_token"].as_str().unwrap()).unwrap();
    let r1 = first["refresh_token"].as_str().unwrap();

    let (status, second) = refresh(&p, r1).await;
    assert_eq!(status, StatusCode::OK);
    let r2 = second["refresh_token"].as_str().unwrap();
    assert_ne!(r1, r2);
    let claims = verify(&p, second["id_token"].as_str().unwrap())
        .await
        .unwrap();
    assert_eq!(
        (&claims["sub"], &claims["sid"]),
        (&id_claims["sub"], &id_claims["sid"])
    );
    assert!(claims.get("nonce").is_none());

    let (status, body) = refresh(&p, r1).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (StatusCode::BAD_REQUEST, Some("invalid_grant"))
    );
    let (status, _) = refresh(&p, r2).await;
    assert_eq!(
        status,
        StatusCode::BAD_REQUEST,
        "the whole grant is revoked"
    );
    let access = second["access_token"].as_str().unwrap();
    assert_eq!(introspect(&p, access).await["active"], false);

    let stats = p.stats();
    assert_eq!((stats.token_refresh, stats.refresh_reuse), (3, 1));
}

#[tokio::test]
async fn refresh_faults_and_missing_refresh_tokens_can_be_forced() {
    let p = provider().await;
    let (_, first) = exchange(&p, &login(&p).await, VERIFIER).await;
    let r1 = first["refresh_token"].as_str().unwrap();
    p.set(|m| m.refresh_fault = Some(TokenFault::ServerError));
    assert_eq!(refresh(&p, r1).await.0, StatusCode::INTERNAL_SERVER_ERROR);
    p.set(|m| m.refresh_fault = Some(TokenFault::InvalidGrant));
    assert_eq!(refresh(&p, r1).await.1["error"], "invalid_grant");
    p.set(|m| {
        m.refresh_fault = None;
        m.omit_refresh_token = true;
    });
    let (status, body) = refresh(&p, r1).await;
    assert_eq!(status, StatusCode::OK);
    assert!(body.get("refresh_token").is_none());
    p.behaviour().reset();
    assert_eq!(refresh(&p, r1).await.0, StatusCode::OK, "r1 stayed valid");
}

#[tokio::test]
async fn introspection_reports_expiry_and_revocation() {
    let opts = ProviderOptions {
        access_token_ttl: Duration::from_millis(300),
        ..ProviderOptions::default()
    };
    let p = TestProvider::start(opts).await;
    let (_, body) = exchange(&p, &login(&p).await, VERIFIER).await;
    let access = body["access_token"].as_str().unwrap();
    let active = introspect(&p, access).await;
    assert_eq!(
        (&active["active"], &active["sub"], &active["client_id"]),
        (&json!(true), &json!("alice"), &json!("bff"))
    );
    tokio::time::sleep(Duration::from_millis(350)).await;
    assert_eq!(introspect(&p, access).await["active"], false);

    let (_, body) = refresh(&p, body["refresh_token"].as_str().unwrap()).await;
    let access = body["access_token"].as_str().unwrap();
    let refresh_token = body["refresh_token"].as_str().unwrap();
    let res = client()
        .post(format!("{}/revoke", p.issuer()))
        .basic_auth("bff", Some("bff-secret"))
        .form(&[
            ("token", refresh_token),
            ("token_type_hint", "refresh_token"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(introspect(&p, access).await["active"], false);
    assert_eq!(p.stats().revocations, vec![refresh_token.to_owned()]);
    assert_eq!(
        introspect(&p, "never-issued").await,
        json!({"active": false})
    );
}

#[tokio::test]
async fn signed_helpers_verify_against_the_jwks_and_follow_rotation() {
    let p = provider().await;
    let kid = p.current_kid();
    let raw = p.sign_raw(
        json!({"alg": "RS256", "kid": kid}),
        json!({"hello": "world"}),
    );
    assert_eq!(verify(&p, &raw).await.unwrap()["hello"], "world");

    exchange(&p, &login(&p).await, VERIFIER).await;
    let logout = p.mint_logout_token(json!({"jti": "fixed", "sub": null}));
    let (header, _) = decode_unverified(&logout).unwrap();
    assert_eq!(header["typ"], "logout+jwt");
    let claims = verify(&p, &logout).await.unwrap();
    assert_eq!(claims["iss"], p.issuer());
    assert_eq!(claims["aud"], "bff");
    assert_eq!(claims["jti"], "fixed");
    assert_eq!(claims["sid"], p.stats().sids[0]);
    assert!(claims.get("sub").is_none() && claims.get("nonce").is_none());
    assert!(claims["events"][BACKCHANNEL_LOGOUT_EVENT].is_object());

    p.rotate_keys();
    assert_ne!(p.current_kid(), kid);
    assert_eq!(verify(&p, &raw).await.unwrap_err(), "kid not in JWKS");
    let fresh = p.mint_logout_token(json!({}));
    assert!(verify(&p, &fresh).await.is_ok());
    assert_eq!(p.stats().jwks, 4);
}

#[tokio::test]
async fn broken_signatures_never_verify() {
    let p = provider().await;
    for signing in [
        Signing::FlippedByte,
        Signing::AlgNone,
        Signing::Hs256WithPublicKey,
        Signing::Ps256,
        Signing::UnknownKid,
        Signing::EmbeddedJwk,
    ] {
        p.set(|m| m.signing = signing);
        let (status, body) = exchange(&p, &login(&p).await, VERIFIER).await;
        assert_eq!(status, StatusCode::OK);
        let jwt = body["id_token"].as_str().unwrap();
        let (header, _) = decode_unverified(jwt).unwrap();
        assert!(verify(&p, jwt).await.is_err(), "{signing:?} verified");
        match signing {
            Signing::AlgNone => assert!(jwt.ends_with('.') && header["alg"] == "none"),
            Signing::FlippedByte => {}
            Signing::UnknownKid => assert_eq!(header["kid"], UNKNOWN_KID),
            // The attack tokens are well formed: a careless verifier would accept them.
            Signing::Hs256WithPublicKey => {
                assert_eq!(header["kid"], p.current_kid());
                let public_pem = include_str!("support/keys/rsa1.pub.pem");
                let mut mac = Hmac::<Sha256>::new_from_slice(public_pem.as_bytes()).unwrap();
                mac.update(input(jwt).as_bytes());
                mac.verify_slice(&signature(jwt)).unwrap();
            }
            Signing::Ps256 => {
                // The published key is pinned to RS256; the same key without `alg` accepts PS256.
                let mut jwk = serde_json::to_value(&jwks(&p).await.keys()[0]).unwrap();
                jwk.as_object_mut().unwrap().remove("alg");
                let jwk: CoreJsonWebKey = serde_json::from_value(jwk).unwrap();
                let pss = CoreJwsSigningAlgorithm::RsaSsaPssSha256;
                jwk.verify_signature(&pss, input(jwt).as_bytes(), &signature(jwt))
                    .unwrap();
            }
            Signing::EmbeddedJwk => {
                let jwk: CoreJsonWebKey = serde_json::from_value(header["jwk"].clone()).unwrap();
                assert_eq!(header["kid"], "attacker");
                jwk.verify_signature(&RS256, input(jwt).as_bytes(), &signature(jwt))
                    .unwrap();
            }
            Signing::Honest | Signing::NoKid => unreachable!(),
        }
    }
    p.set(|m| m.signing = Signing::NoKid);
    let (_, body) = exchange(&p, &login(&p).await, VERIFIER).await;
    assert!(verify(&p, body["id_token"].as_str().unwrap()).await.is_ok());
}

#[tokio::test]
async fn claim_knobs_shape_the_id_token() {
    let p = provider().await;
    p.set(|m| {
        m.iss = Override::Wrong;
        m.aud = Audience::ExtraWithForeignAzp;
        m.sub = Override::Missing;
        m.exp = Override::Wrong;
        m.iat = Override::Value(json!(7));
        m.nonce = Override::Wrong;
    });
    let (_, body) = exchange(&p, &login(&p).await, VERIFIER).await;
    let claims = verify(&p, body["id_token"].as_str().unwrap())
        .await
        .unwrap();
    assert_eq!(claims["iss"], EVIL_ISSUER);
    assert_eq!(claims["aud"], json!(["bff", OTHER_CLIENT]));
    assert_eq!(claims["azp"], OTHER_CLIENT);
    assert!(claims.get("sub").is_none());
    assert!(claims["exp"].as_u64().unwrap() < claims["auth_time"].as_u64().unwrap());
    assert_eq!(claims["iat"], 7);
    assert_eq!(claims["nonce"], "not-the-nonce");
}

#[tokio::test]
async fn authorization_response_knobs() {
    let p = provider().await;
    p.set(|m| m.authz_denied = true);
    let pairs = location_pairs(&authorize(&p, &[]).await);
    assert_eq!(param(&pairs, "error").as_deref(), Some("access_denied"));
    assert!(param(&pairs, "error_description").is_some() && param(&pairs, "code").is_none());

    p.set(|m| {
        m.authz_denied = false;
        m.duplicate_code = true;
        m.duplicate_state = true;
        m.authz_iss = Override::Wrong;
    });
    let pairs = location_pairs(&authorize(&p, &[]).await);
    assert_eq!(pairs.iter().filter(|(n, _)| n == "code").count(), 2);
    assert_eq!(pairs.iter().filter(|(n, _)| n == "state").count(), 2);
    assert_eq!(param(&pairs, "iss").as_deref(), Some(EVIL_ISSUER));

    p.set(|m| m.authz_iss = Override::Missing);
    assert_eq!(
        param(&location_pairs(&authorize(&p, &[]).await), "iss"),
        None
    );
}

#[tokio::test]
async fn end_session_redirects_with_state_and_is_recorded() {
    let p = provider().await;
    let res = client()
        .get(format!("{}/end_session", p.issuer()))
        .query(&[
            ("id_token_hint", "tok"),
            ("post_logout_redirect_uri", "http://127.0.0.1:9/bye"),
            ("state", "s"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(res.headers()["location"], "http://127.0.0.1:9/bye?state=s");
    let calls = p.stats().end_sessions;
    assert_eq!(calls.len(), 1);
    assert_eq!(calls[0].id_token_hint.as_deref(), Some("tok"));
}

#[tokio::test]
async fn interactive_mode_shows_a_form_whose_post_approves() {
    let opts = ProviderOptions {
        interactive: true,
        ..ProviderOptions::default()
    };
    let p = TestProvider::start(opts).await;
    let page = authorize(&p, &[]).await.text().await.unwrap();
    assert!(page.contains("Sign in as alice"));
    assert!(page.contains(r#"name="nonce" value="n-1""#));

    let mut form: Vec<(String, String)> = p.stats().last_authorize.into_iter().collect();
    form.push(("login_hint".into(), "alice".into()));
    let res = client()
        .post(format!("{}/authorize", p.issuer()))
        .form(&form)
        .send()
        .await
        .unwrap();
    let pairs = location_pairs(&res);
    assert!(param(&pairs, "code").is_some());
    assert_eq!(p.stats().authorize, 1);
}

// ---------------------------------------------------------------------------------------------
// Shapes
// ---------------------------------------------------------------------------------------------

const SHAPES: [Shape; 9] = [
    Shape::Standard,
    Shape::Auth0,
    Shape::Keycloak,
    Shape::EntraId,
    Shape::Google,
    Shape::Okta,
    Shape::Cognito,
    Shape::LegacyEs256,
    Shape::LegacyPs256,
];

async fn discovery(p: &TestProvider) -> Value {
    let url = format!(
        "{}/.well-known/openid-configuration",
        p.issuer().trim_end_matches('/')
    );
    client()
        .get(url)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

#[tokio::test]
async fn every_shape_publishes_its_exact_issuer_and_serves_every_endpoint_it_advertises() {
    for shape in SHAPES {
        let p = TestProvider::start(ProviderOptions::shaped(shape)).await;
        let doc = discovery(&p).await;
        assert_eq!(doc["issuer"], p.issuer(), "{shape:?}");
        for member in [
            "authorization_endpoint",
            "token_endpoint",
            "jwks_uri",
            "userinfo_endpoint",
            "end_session_endpoint",
            "revocation_endpoint",
        ] {
            let Some(url) = doc[member].as_str() else {
                continue;
            };
            let res = client().get(url).send().await.unwrap();
            assert_ne!(
                res.status(),
                StatusCode::NOT_FOUND,
                "{shape:?} {member} {url}"
            );
        }
        let keys: Value = client()
            .get(doc["jwks_uri"].as_str().unwrap())
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let key = &keys["keys"][0];
        assert_eq!(
            key["alg"], doc["id_token_signing_alg_values_supported"][0],
            "{shape:?}"
        );
        assert_eq!(
            key.get("kid").is_some(),
            shape != Shape::LegacyEs256,
            "{shape:?}"
        );
    }
}

#[tokio::test]
async fn shapes_differ_where_their_providers_do() {
    let auth0 = TestProvider::start(ProviderOptions::shaped(Shape::Auth0)).await;
    assert!(auth0.issuer().ends_with('/'));
    let google =
        discovery(&TestProvider::start(ProviderOptions::shaped(Shape::Google)).await).await;
    assert!(google.get("end_session_endpoint").is_none());
    assert!(
        !google["scopes_supported"]
            .as_array()
            .unwrap()
            .contains(&json!("offline_access"))
    );
    let entra =
        discovery(&TestProvider::start(ProviderOptions::shaped(Shape::EntraId)).await).await;
    assert!(entra.get("revocation_endpoint").is_none());
    let cognito_p = TestProvider::start(ProviderOptions::shaped(Shape::Cognito)).await;
    let cognito = discovery(&cognito_p).await;
    assert!(cognito.get("end_session_endpoint").is_none());
    assert!(cognito.get("revocation_endpoint").is_none());
    assert!(
        cognito["authorization_endpoint"]
            .as_str()
            .unwrap()
            .starts_with(&cognito_p.other_origin())
    );
    for legacy in [Shape::LegacyEs256, Shape::LegacyPs256] {
        let doc = discovery(&TestProvider::start(ProviderOptions::shaped(legacy)).await).await;
        assert!(
            doc.get("code_challenge_methods_supported").is_none(),
            "{legacy:?}"
        );
    }
}

#[tokio::test]
async fn cognito_logout_needs_client_id_and_logout_uri() {
    let p = TestProvider::start(ProviderOptions::shaped(Shape::Cognito)).await;
    let url = format!("{}/logout", p.other_origin());
    let res = client()
        .get(&url)
        .query(&[("logout_uri", "http://127.0.0.1:9/bye")])
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::BAD_REQUEST);
    let res = client()
        .get(&url)
        .query(&[
            ("client_id", "bff"),
            ("logout_uri", "http://127.0.0.1:9/bye"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(res.headers()["location"], "http://127.0.0.1:9/bye");
}

#[tokio::test]
async fn metadata_max_age_is_sent_only_when_set_and_the_jwks_fault_answers_500() {
    let p = provider().await;
    let res = client()
        .get(format!("{}/jwks", p.issuer()))
        .send()
        .await
        .unwrap();
    assert!(res.headers().get("cache-control").is_none());
    let opts = ProviderOptions {
        metadata_max_age: Some(Duration::from_secs(7)),
        ..ProviderOptions::default()
    };
    let p = TestProvider::start(opts).await;
    let res = client()
        .get(format!("{}/jwks", p.issuer()))
        .send()
        .await
        .unwrap();
    assert_eq!(res.headers()["cache-control"], "public, max-age=7");
    p.set(|m| m.jwks_fault = true);
    let res = client()
        .get(format!("{}/jwks", p.issuer()))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::INTERNAL_SERVER_ERROR);
}
