//! OpenID Connect Back-Channel Logout 1.0: validating a provider's logout token.
//!
//! Rules (spec §2.6):
//! 1. A JWS signed with an allowed asymmetric algorithm by a key from the provider's JWKS;
//!    `jwk`/`jku`/`x5u` headers are ignored. The token is unauthenticated input, so when no
//!    key matches its `kid` the JWKS is refetched only on a budget of its own (`jwks.rs`),
//!    which never delays the refetch a login may need.
//! 2. `typ`, when present, is `logout+jwt` (or plain `JWT`); `iss` is our issuer; `aud`
//!    contains our client id; `iat` is recent; `exp` is present and not past.
//! 3. `events` holds the back-channel-logout member; `sid` and/or `sub` are present; `nonce`
//!    is absent (so an ID token can never pass as a logout token).
//! 4. `jti` is present; a replayed `jti` is refused (the caller records it in the store).

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use openidconnect::core::{CoreJsonWebKey, CoreJsonWebKeySet, CoreJwsSigningAlgorithm};
use openidconnect::{JsonWebKey, JsonWebKeyId};
use serde_json::Value;

use super::{Oidc, OidcError};
use crate::session::now;

pub const BACKCHANNEL_EVENT: &str = "http://schemas.openid.net/event/backchannel-logout";

/// Who a valid logout token logs out.
#[derive(Debug)]
pub struct LogoutClaims {
    pub sid: Option<String>,
    pub sub: Option<String>,
    pub jti: String,
}

fn invalid(why: &str) -> OidcError {
    OidcError::InvalidLogoutToken(why.to_owned())
}

impl Oidc {
    /// The oldest logout token accepted: its `jti` must be remembered at least this long.
    pub fn logout_token_max_age(&self) -> std::time::Duration {
        self.settings.max_id_token_age + self.settings.clock_skew * 2
    }

    pub async fn verify_logout_token(&self, token: &str) -> Result<LogoutClaims, OidcError> {
        let provider = self.provider()?;
        let jws = Compact::parse(token, &self.settings.allowed_algs)?;
        let keys = self.keys().current().ok_or(OidcError::NotReady)?;
        let mut outcome = jws.verify(&keys.keys);
        if outcome == Outcome::NoKey
            && let Some(fresh) = self
                .keys()
                .refetch_unauthenticated(self.http(), &provider.endpoints.jwks_uri)
                .await
        {
            outcome = jws.verify(&fresh.keys);
        }
        if outcome != Outcome::Verified {
            return Err(invalid(
                "signature does not verify with the provider's keys",
            ));
        }
        check_logout_claims(&self.settings, &decode_json(jws.payload)?, now())
    }
}

/// A compact JWS taken apart, its header checked (rules 1 and 2), its signature not yet.
pub(crate) struct Compact<'a> {
    pub(crate) alg: CoreJwsSigningAlgorithm,
    pub(crate) kid: Option<JsonWebKeyId>,
    pub(crate) signing_input: &'a str,
    pub(crate) signature: Vec<u8>,
    pub(crate) payload: &'a str,
}

impl<'a> Compact<'a> {
    pub(crate) fn parse(
        token: &'a str,
        allowed_algs: &[CoreJwsSigningAlgorithm],
    ) -> Result<Compact<'a>, OidcError> {
        let mut parts = token.split('.');
        let (Some(h), Some(p), Some(s), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(invalid("not a compact JWS"));
        };
        let header: Value = decode_json(h)?;
        let alg_name = header
            .get("alg")
            .and_then(Value::as_str)
            .ok_or_else(|| invalid("no alg"))?;
        let alg: CoreJwsSigningAlgorithm =
            serde_json::from_value(Value::String(alg_name.to_owned()))
                .map_err(|_| invalid("unknown alg"))?;
        if !allowed_algs.contains(&alg) {
            return Err(invalid("algorithm not allowed"));
        }
        // Explicit typing (spec §2.4): an access token or other JWT type is not a logout token.
        let typ = header.get("typ").and_then(Value::as_str).unwrap_or("JWT");
        if !["logout+jwt", "application/logout+jwt", "jwt"]
            .iter()
            .any(|t| typ.eq_ignore_ascii_case(t))
        {
            return Err(invalid("typ is not logout+jwt"));
        }
        let kid = header
            .get("kid")
            .and_then(Value::as_str)
            .map(|k| JsonWebKeyId::new(k.to_owned()));
        let signature = URL_SAFE_NO_PAD
            .decode(s)
            .map_err(|_| invalid("bad signature encoding"))?;
        Ok(Compact {
            alg,
            kid,
            signing_input: token.get(..h.len() + 1 + p.len()).unwrap_or_default(),
            signature,
            payload: p,
        })
    }

    /// Checks the signature with the keys of `jwks` matching `kid` (any key when there is none).
    pub(crate) fn verify(&self, jwks: &CoreJsonWebKeySet) -> Outcome {
        let mut candidates = jwks
            .keys()
            .iter()
            .filter(|k: &&CoreJsonWebKey| self.kid.as_ref().is_none_or(|id| k.key_id() == Some(id)))
            .peekable();
        if candidates.peek().is_none() {
            return Outcome::NoKey;
        }
        let input = self.signing_input.as_bytes();
        if candidates.any(|k| {
            k.verify_signature(&self.alg, input, &self.signature)
                .is_ok()
        }) {
            Outcome::Verified
        } else {
            Outcome::BadSignature
        }
    }
}

#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Outcome {
    Verified,
    /// No key of the set has this `kid` (or, without `kid`, fits the algorithm).
    NoKey,
    BadSignature,
}

/// Rules 2 to 4 on the claims of a logout token whose signature verified, at `now` (unix
/// seconds). Arithmetic saturates: `iat`/`exp` at the ends of the integer range are refused,
/// never an overflow.
pub(crate) fn check_logout_claims(
    s: &super::Settings,
    c: &Value,
    now: i64,
) -> Result<LogoutClaims, OidcError> {
    if c.get("iss").and_then(Value::as_str) != Some(s.issuer.as_str()) {
        return Err(invalid("iss is not the provider"));
    }
    let ours = |v: &Value| v.as_str() == Some(s.client_id.as_str());
    let aud_ok = match c.get("aud") {
        Some(Value::Array(list)) => list.iter().any(ours),
        Some(v) => ours(v),
        None => false,
    };
    if !aud_ok {
        return Err(invalid("aud does not contain this client"));
    }
    let skew = i64::try_from(s.clock_skew.as_secs()).unwrap_or(0);
    let max_age = i64::try_from(s.max_id_token_age.as_secs()).unwrap_or(0);
    let iat = c
        .get("iat")
        .and_then(Value::as_i64)
        .ok_or_else(|| invalid("no iat"))?;
    let age = now.saturating_sub(iat);
    if age < -skew || age > max_age.saturating_add(skew) {
        return Err(invalid("iat out of range"));
    }
    let exp = c
        .get("exp")
        .and_then(Value::as_i64)
        .ok_or_else(|| invalid("no exp"))?;
    if exp.saturating_add(skew) <= now {
        return Err(invalid("expired"));
    }
    let event_ok = c
        .get("events")
        .and_then(|e| e.get(BACKCHANNEL_EVENT))
        .is_some_and(Value::is_object);
    if !event_ok {
        return Err(invalid("no back-channel logout event"));
    }
    if c.get("nonce").is_some() {
        return Err(invalid("nonce present"));
    }
    let string = |k: &str| {
        c.get(k)
            .and_then(Value::as_str)
            .filter(|v| !v.is_empty())
            .map(str::to_owned)
    };
    let (sid, sub) = (string("sid"), string("sub"));
    if sid.is_none() && sub.is_none() {
        return Err(invalid("neither sid nor sub"));
    }
    let jti = string("jti").ok_or_else(|| invalid("no jti"))?;
    Ok(LogoutClaims { sid, sub, jti })
}

pub(crate) fn decode_json(part: &str) -> Result<Value, OidcError> {
    let bytes = URL_SAFE_NO_PAD
        .decode(part)
        .map_err(|_| invalid("bad base64url"))?;
    serde_json::from_slice(&bytes).map_err(|_| invalid("bad JSON"))
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::config::{Config, NoEnv};

    fn oidc() -> Oidc {
        let text = r#"
[server]
public_origin = "https://app.example.com"
[oidc]
issuer = "https://id.example.com"
client_id = "bff"
client_secret = "s"
"#;
        Oidc::new(&Config::from_toml(text, &NoEnv).unwrap().oidc).unwrap()
    }

    #[test]
    fn an_iat_or_exp_at_the_ends_of_the_integer_range_is_refused_without_overflow() {
        let now = 1_700_000_000;
        let claims = |iat: i64, exp: i64| {
            json!({
                "iss": "https://id.example.com", "aud": "bff", "iat": iat, "exp": exp,
                "jti": "j", "sub": "u", "events": {BACKCHANNEL_EVENT: {}},
            })
        };
        let oidc = oidc();
        let s = &oidc.settings;
        assert!(check_logout_claims(s, &claims(now, now + 60), now).is_ok());
        for (iat, exp) in [(i64::MIN, now + 60), (i64::MAX, now + 60), (now, i64::MIN)] {
            assert!(
                check_logout_claims(s, &claims(iat, exp), now).is_err(),
                "iat {iat} exp {exp}"
            );
        }
        assert!(check_logout_claims(s, &claims(now, i64::MAX), now).is_ok());
    }
}
