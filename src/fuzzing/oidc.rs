//! The OpenID Connect targets: the callback query ([`CallbackParams::parse`]), logout tokens
//! ([`Compact::parse`], [`check_logout_claims`]), discovery documents
//! ([`parse_discovery`], [`Provider::resolve`] and the login URL built on it) and JWKS
//! documents.

use std::sync::OnceLock;

use openidconnect::core::{CoreJsonWebKeySet, CoreJwsSigningAlgorithm as Alg};
use openidconnect::{JsonWebKey as _, JsonWebKeyId};
use serde_json::Value;

use crate::config::{Config, NoEnv};
use crate::oidc::backchannel::{BACKCHANNEL_EVENT, Compact, Outcome, check_logout_claims};
use crate::oidc::provider::parse_discovery;
use crate::oidc::{CallbackParams, Oidc, OidcError, Provider};
use crate::secret::Secret;

/// The relying party every target runs as.
const CONFIG: &str = r#"
[server]
public_origin = "https://app.example.com"
[oidc]
issuer = "https://id.example.com"
client_id = "bff"
client_secret = "fuzzing-client-secret"
allowed_algs = ["RS256", "PS256", "ES256", "EdDSA"]
[[routes]]
path = "/api/"
upstream = "https://api.internal"
auth = "required"
"#;

/// The clock of the logout-token checks, so that the corpus replays the same way every day.
pub const NOW: i64 = 1_700_000_000;

/// The provider's keys for the logout-token target: `tests/support/keys/rsa1.pem`, kid `k1`.
const JWKS: &str = r#"{"keys":[{"kty":"RSA","use":"sig","alg":"RS256","kid":"k1","e":"AQAB","n":"teqzIiL1hToachEENnIMu9BFyLawycTVRfotmPT-7h0LziRgTteBE-XofJId_m-62Ir9DxGvjGMfcKE-WgRMv4dio1yUB2COEbEU5OlDy_oak9qTgZ7mZIPR0XESNW_vrvvPD0FCs0yYhPWECLi-Sow3miI6uniJeJXeZSubimPY9BwxtdnvU2DMGcFI0_MATwWpTtXmqo6iPj4W-7h5BVuSgeMCH6z3pjRqx9OAsZE1EJIIxo_CIz_yYaIpK_RkwgtFvr36jS3roofGFkIAIzxfZA7O6qgbfD9Zn76j25ep38dY3z1-L6rcWBdj5SQHXaZIsZObzUZR5VGG7pREzw"}]}"#;

/// Every asymmetric algorithm a JWKS key may be tried with.
const ALGS: [Alg; 10] = [
    Alg::RsaSsaPkcs1V15Sha256,
    Alg::RsaSsaPkcs1V15Sha384,
    Alg::RsaSsaPkcs1V15Sha512,
    Alg::RsaSsaPssSha256,
    Alg::RsaSsaPssSha384,
    Alg::RsaSsaPssSha512,
    Alg::EcdsaP256Sha256,
    Alg::EcdsaP384Sha384,
    Alg::EcdsaP521Sha512,
    Alg::EdDsa,
];

#[expect(
    clippy::expect_used,
    reason = "a fuzz harness with a broken fixture must stop at once"
)]
fn oidc() -> &'static Oidc {
    static OIDC: OnceLock<Oidc> = OnceLock::new();
    OIDC.get_or_init(|| {
        let config = Config::from_toml(CONFIG, &NoEnv).expect("the fuzzing config is valid");
        Oidc::new(&config.oidc).expect("the provider client builds")
    })
}

#[expect(
    clippy::expect_used,
    reason = "a fuzz harness with a broken fixture must stop at once"
)]
fn provider_keys() -> &'static CoreJsonWebKeySet {
    static KEYS: OnceLock<CoreJsonWebKeySet> = OnceLock::new();
    KEYS.get_or_init(|| serde_json::from_str(JWKS).expect("the fuzzing JWKS parses"))
}

/// Input: the query string of a request to the callback.
pub fn callback_query(data: &[u8]) {
    let query = String::from_utf8_lossy(data);
    let pairs = form_pairs(query.as_bytes());
    let count = |name: &str| pairs.iter().filter(|(k, _)| k == name).count();
    let first = |name: &str| {
        pairs
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
    };
    match CallbackParams::parse(Some(&query)) {
        Ok(p) => {
            let code = p.code.as_ref().map(|c| c.expose().to_owned());
            let state = p.state.as_ref().map(|c| c.expose().to_owned());
            for (name, value) in [
                ("code", &code),
                ("state", &state),
                ("iss", &p.iss),
                ("error", &p.error),
            ] {
                assert!(count(name) <= 1, "a duplicated {name} was accepted");
                assert_eq!(*value, first(name), "{name} read wrongly");
            }
        }
        Err(OidcError::DuplicateParam(name)) => {
            assert!(count(name) >= 2, "{name} refused as duplicated but is not");
        }
        Err(e) => panic_on(&e),
    }
}

#[expect(
    clippy::panic,
    reason = "a fuzz harness reports a broken invariant by panicking"
)]
fn panic_on(e: &OidcError) {
    panic!("unexpected error {e}");
}

/// `application/x-www-form-urlencoded` read the WHATWG way, written out independently.
fn form_pairs(query: &[u8]) -> Vec<(String, String)> {
    let decode = |b: &[u8]| {
        let plus: Vec<u8> = b
            .iter()
            .map(|&c| if c == b'+' { b' ' } else { c })
            .collect();
        String::from_utf8_lossy(&super::percent_decode(&plus)).into_owned()
    };
    query
        .split(|&b| b == b'&')
        .filter(|p| !p.is_empty())
        .map(|p| match p.iter().position(|&b| b == b'=') {
            Some(eq) => (decode(&p[..eq]), decode(&p[eq + 1..])),
            None => (decode(p), String::new()),
        })
        .collect()
}

/// Input: a logout token (compact JWS); the same bytes are also tried as its claims (JSON).
pub fn logout_token(data: &[u8]) {
    let settings = &oidc().settings;
    let token = String::from_utf8_lossy(data);
    if let Ok(jws) = Compact::parse(&token, &settings.allowed_algs) {
        assert!(settings.allowed_algs.contains(&jws.alg));
        assert_eq!(token.matches('.').count(), 2);
        assert!(token.starts_with(jws.signing_input));
        let _ = jws.verify(provider_keys());
        if let Ok(claims) = crate::oidc::backchannel::decode_json(jws.payload) {
            check_claims(&claims);
        }
    }
    if let Ok(claims) = serde_json::from_slice::<Value>(data) {
        check_claims(&claims);
    }
}

/// Accepted claims are what the back-channel logout rules demand, at [`NOW`].
fn check_claims(c: &Value) {
    let s = &oidc().settings;
    let Ok(claims) = check_logout_claims(s, c, NOW) else {
        return;
    };
    assert_eq!(c["iss"].as_str(), Some(s.issuer.as_str()));
    let aud = &c["aud"];
    assert!(
        aud.as_str() == Some(&s.client_id)
            || aud
                .as_array()
                .is_some_and(|a| a.iter().any(|v| v.as_str() == Some(&s.client_id)))
    );
    assert!(c.get("nonce").is_none(), "a token with a nonce passed");
    assert!(c["events"][BACKCHANNEL_EVENT].is_object());
    let skew = i64::try_from(s.clock_skew.as_secs()).unwrap_or(0);
    let max_age = i64::try_from(s.max_id_token_age.as_secs()).unwrap_or(0);
    let iat = c["iat"].as_i64().unwrap_or(i64::MIN);
    assert!(
        (NOW - max_age - skew..=NOW + skew).contains(&iat),
        "iat {iat}"
    );
    assert!(c["exp"].as_i64().is_some_and(|exp| exp > NOW - skew));
    assert!(!claims.jti.is_empty() && c["jti"].as_str() == Some(&claims.jti));
    assert!(claims.sid.is_some() || claims.sub.is_some());
    assert_eq!(claims.sid.as_deref(), c["sid"].as_str());
    assert_eq!(claims.sub.as_deref(), c["sub"].as_str());
}

/// Input: a discovery document. One that is accepted yields a login URL that carries our
/// state, nonce, PKCE challenge and redirect URI to the advertised endpoint.
pub fn discovery(data: &[u8]) {
    let oidc = oidc();
    let s = &oidc.settings;
    let Ok(doc) = parse_discovery(&s.issuer, "https://id.example.com/.well-known", data) else {
        return;
    };
    assert_eq!(
        doc.issuer, s.issuer,
        "a document for another issuer was accepted"
    );
    let iss_required = doc.authorization_response_iss_parameter_supported;
    let Ok(provider) = Provider::resolve(s, Some(doc)) else {
        return;
    };
    let endpoint = provider.endpoints.authorization.clone();
    for url in [
        &provider.endpoints.authorization,
        &provider.endpoints.token,
        &provider.endpoints.jwks_uri,
    ] {
        let loopback = url.host_str().is_some_and(|h| {
            h == "localhost"
                || h.parse::<std::net::IpAddr>()
                    .is_ok_and(|ip| ip.is_loopback())
        });
        assert!(
            url.scheme() == "https" || (url.scheme() == "http" && loopback),
            "an endpoint over plain http to a remote host was accepted: {url}"
        );
    }
    let end_session = provider.endpoints.end_session.clone();
    oidc.set_provider(std::sync::Arc::new(provider));

    let Ok(start) = oidc.start_login("/next".to_owned()) else {
        return;
    };
    let url = &start.url;
    assert_eq!(
        url[..url::Position::AfterPath],
        endpoint[..url::Position::AfterPath]
    );
    let pairs: Vec<(String, String)> = url.query_pairs().into_owned().collect();
    let has = |k: &str, v: &str| pairs.iter().any(|(pk, pv)| pk == k && pv == v);
    assert!(has("state", start.txn.state.expose()));
    assert!(has("nonce", start.txn.nonce.expose()));
    assert!(has("code_challenge_method", "S256"));
    assert!(has("redirect_uri", &s.redirect_uri));
    assert!(has("client_id", &s.client_id));
    assert!(has("response_type", "code"));

    assert!(oidc.check_response_issuer(Some(&s.issuer)).is_ok());
    assert!(
        oidc.check_response_issuer(Some("https://evil.example"))
            .is_err()
    );
    assert_eq!(oidc.check_response_issuer(None).is_err(), iss_required);
    let logout = oidc.logout_url(Some(&Secret::new("id-token")));
    let parsed = url::Url::parse(&logout);
    assert!(parsed.is_ok(), "logout URL {logout:?}");
    if end_session.is_none() {
        assert_eq!(logout, s.post_logout_redirect_uri.as_str());
    }
}

/// Input: a JWKS document; every key is tried with every algorithm on a junk signature.
pub fn jwks(data: &[u8]) {
    let Ok(set) = serde_json::from_slice::<CoreJsonWebKeySet>(data) else {
        return;
    };
    let signature = data.iter().rev().take(600).copied().collect::<Vec<u8>>();
    let stranger = JsonWebKeyId::new("no key has this id \u{1}".to_owned());
    for alg in ALGS {
        let mut jws = Compact {
            alg,
            kid: None,
            signing_input: "eyJhbGciOiJub25lIn0.e30",
            signature: signature.clone(),
            payload: "e30",
        };
        let _ = jws.verify(&set);
        jws.kid = Some(stranger.clone());
        if !set.keys().iter().any(|k| k.key_id() == Some(&stranger)) {
            assert_eq!(
                jws.verify(&set),
                Outcome::NoKey,
                "a key with another kid was used"
            );
        }
    }
}
