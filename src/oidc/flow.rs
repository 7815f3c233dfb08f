//! The authorization-code flow with PKCE: building the authorization request, checking the
//! authorization response, exchanging the code and validating what comes back.
//!
//! Rules:
//! 1. `state` and `nonce` are 128 random bits each, PKCE is S256; all three live only in the
//!    login transaction, sealed in the browser's login cookie, for 10 minutes, once.
//! 2. A response with a duplicated `code`, `state`, `iss` or `error` is refused.
//! 3. RFC 9207: `iss` must equal our issuer when present, and must be present when the
//!    provider advertises `authorization_response_iss_parameter_supported`.
//! 4. Tokens are kept only after the ID token passed every check.
//! 5. PKCE is always sent, whether or not the provider advertises
//!    `code_challenge_methods_supported`; `oidc.auth_params` never replaces a parameter
//!    gatehouse sets (config validation refuses those names).

use openidconnect::core::CoreIdTokenClaims;
use openidconnect::{CsrfToken, Nonce, PkceCodeChallenge};
use url::Url;

use super::token::TokenResponse;
use super::{Oidc, OidcError};
use crate::secret::Secret;
use crate::session::{Identity, LoginTxn, Tokens, now_ms};

/// Access-token lifetime assumed when the provider sends no `expires_in`, or 0.
pub const DEFAULT_EXPIRES_IN: i64 = 300;
/// Longest access-token lifetime believed: a token said to live longer is refreshed after a day.
pub const MAX_EXPIRES_IN: i64 = 86_400;

/// The lifetime to plan refreshes with: 0 or missing (which would mean a refresh on every
/// request) gets the default, absurdly long values are capped.
pub fn access_lifetime(expires_in: Option<i64>) -> i64 {
    match expires_in {
        Some(secs) if secs > 0 => secs.min(MAX_EXPIRES_IN),
        _ => DEFAULT_EXPIRES_IN,
    }
}

/// Claims that are protocol machinery, not facts about the user; `/auth/user` leaves them out.
const TECHNICAL_CLAIMS: [&str; 11] = [
    "iss",
    "aud",
    "exp",
    "iat",
    "nonce",
    "azp",
    "at_hash",
    "c_hash",
    "sid",
    "auth_time",
    "jti",
];

pub struct LoginStart {
    /// The authorization request (it carries the state: never log it).
    pub url: Url,
    pub txn: LoginTxn,
}

/// The parameters of an authorization response, each present at most once.
#[derive(Debug, Default)]
pub struct CallbackParams {
    pub code: Option<Secret>,
    pub state: Option<Secret>,
    pub iss: Option<String>,
    pub error: Option<String>,
}

impl CallbackParams {
    pub fn parse(query: Option<&str>) -> Result<CallbackParams, OidcError> {
        let mut p = CallbackParams::default();
        for (k, v) in url::form_urlencoded::parse(query.unwrap_or("").as_bytes()) {
            let duplicate = match &*k {
                "code" => p.code.replace(Secret::new(v)).is_some().then_some("code"),
                "state" => p.state.replace(Secret::new(v)).is_some().then_some("state"),
                "iss" => p.iss.replace(v.into_owned()).is_some().then_some("iss"),
                "error" => p.error.replace(v.into_owned()).is_some().then_some("error"),
                _ => None,
            };
            if let Some(name) = duplicate {
                return Err(OidcError::DuplicateParam(name));
            }
        }
        Ok(p)
    }
}

pub struct LoginResult {
    pub identity: Identity,
    pub tokens: Tokens,
}

impl Oidc {
    /// A new authorization request and the transaction to remember until the callback.
    pub fn start_login(&self, return_to: String) -> Result<LoginStart, OidcError> {
        let provider = self.provider()?;
        let s = &self.settings;
        let (challenge, verifier) = PkceCodeChallenge::new_random_sha256();
        let (state, nonce) = (CsrfToken::new_random(), Nonce::new_random());
        let others = s
            .scopes
            .iter()
            .map(String::as_str)
            .filter(|n| *n != "openid");
        let scope = std::iter::once("openid")
            .chain(others)
            .collect::<Vec<_>>()
            .join(" ");
        // The endpoint may carry a query of its own (e.g. a B2C policy): append to it.
        let mut url = provider.endpoints.authorization.clone();
        {
            let mut q = url.query_pairs_mut();
            q.append_pair("response_type", "code")
                .append_pair("client_id", &s.client_id)
                .append_pair("state", state.secret())
                .append_pair("code_challenge", challenge.as_str())
                .append_pair("code_challenge_method", "S256")
                .append_pair("redirect_uri", &s.redirect_uri)
                .append_pair("scope", &scope)
                .append_pair("nonce", nonce.secret());
            if let Some(prompt) = &s.prompt {
                q.append_pair("prompt", prompt);
            }
            for (name, value) in &s.auth_params {
                q.append_pair(name, value);
            }
        }
        Ok(LoginStart {
            url,
            txn: LoginTxn::new(
                Secret::new(state.secret().clone()),
                Secret::new(verifier.secret().clone()),
                Secret::new(nonce.secret().clone()),
                return_to,
            ),
        })
    }

    /// RFC 9207 check of the response's `iss` against the discovered provider.
    pub fn check_response_issuer(&self, iss: Option<&str>) -> Result<(), OidcError> {
        let provider = self.provider()?;
        match iss {
            Some(iss) if iss == self.settings.issuer => Ok(()),
            Some(_) => Err(OidcError::IssuerMismatch("does not match the issuer")),
            None if provider
                .advertised
                .authorization_response_iss_parameter_supported =>
            {
                Err(OidcError::IssuerMismatch(
                    "is missing although the provider advertises it",
                ))
            }
            None => Ok(()),
        }
    }

    /// Exchanges the code (with the PKCE verifier) and validates the ID token against the
    /// transaction's nonce.
    pub async fn finish_login(
        &self,
        code: &Secret,
        txn: &LoginTxn,
    ) -> Result<LoginResult, OidcError> {
        let provider = self.provider()?;
        let response = self
            .exchange_code(&provider, code.expose(), &txn.pkce_verifier)
            .await?;
        check_bearer(response.token_type())?;
        let id_token = response.id_token().ok_or_else(|| {
            OidcError::InvalidTokenResponse("no id_token in the token response".into())
        })?;
        let nonce = Nonce::new(txn.nonce.expose().to_owned());
        let claims = self.verify_id_token(&provider, id_token, &nonce).await?;
        Ok(LoginResult {
            identity: identity(&claims, &id_token.to_string()),
            tokens: tokens_from(&response, Some(Secret::new(id_token.to_string())), None),
        })
    }

    /// Where to send the browser after a local logout: the provider's end-session endpoint
    /// when it has one (with `id_token_hint`, `client_id` and our post-logout redirect URI
    /// under `oidc.post_logout_redirect_param`), else straight to that URI: logout then ends
    /// only the local session.
    pub fn logout_url(&self, id_token: Option<&Secret>) -> String {
        let fallback = self.settings.post_logout_redirect_uri.to_string();
        let Ok(provider) = self.provider() else {
            return fallback;
        };
        let Some(mut url) = provider.endpoints.end_session.clone() else {
            return fallback;
        };
        {
            let mut q = url.query_pairs_mut();
            if let Some(t) = id_token {
                q.append_pair("id_token_hint", t.expose());
            }
            q.append_pair("client_id", &self.settings.client_id);
            q.append_pair(&self.settings.post_logout_redirect_param, &fallback);
        }
        url.to_string()
    }
}

/// The token set of a token-endpoint response. A refresh response without a new refresh or
/// ID token keeps the previous ones (`keep_refresh`, `id_token`): providers that do not
/// rotate refresh tokens (Google, Entra ID, Cognito) send none.
pub(super) fn tokens_from(
    response: &TokenResponse,
    id_token: Option<Secret>,
    keep_refresh: Option<Secret>,
) -> Tokens {
    let now = now_ms();
    let expires_in = access_lifetime(
        response
            .expires_in()
            .map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX)),
    );
    Tokens {
        access_token: response.access_token().clone(),
        issued_at_ms: now,
        access_expires_at_ms: now.saturating_add(expires_in.saturating_mul(1000)),
        refresh_token: response.refresh_token().cloned().or(keep_refresh),
        id_token,
        bearer: Default::default(),
    }
}

/// Gatehouse forwards tokens as `Authorization: Bearer`; any other type (mac, DPoP, …) would
/// be sent wrongly, so it is refused. RFC 6749 §5.1: the type is case-insensitive.
pub(super) fn check_bearer(token_type: &str) -> Result<(), OidcError> {
    if token_type.eq_ignore_ascii_case("bearer") {
        Ok(())
    } else {
        Err(OidcError::InvalidTokenResponse(format!(
            "token_type {token_type:?} is not bearer"
        )))
    }
}

/// Who a verified ID token is about: `sub`, `sid`, `aud`, `auth_time`, and the user claims
/// that `/auth/user` shows (protocol machinery removed).
pub(super) fn identity(claims: &CoreIdTokenClaims, jwt: &str) -> Identity {
    let mut user = match serde_json::to_value(claims) {
        Ok(serde_json::Value::Object(map)) => map,
        _ => serde_json::Map::new(),
    };
    for k in TECHNICAL_CLAIMS {
        user.remove(k);
    }
    Identity {
        sub: claims.subject().as_str().to_owned(),
        // `sid` is not modelled by the claims type; read it from the verified token's payload.
        sid: verified_payload_claim(jwt, "sid"),
        claims: user,
        aud: claims
            .audiences()
            .iter()
            .map(|a| a.as_str().to_owned())
            .collect(),
        auth_time: claims.auth_time().map(|t| t.timestamp()),
    }
}

/// A string claim from the payload of a JWT whose signature was already verified.
fn verified_payload_claim(jwt: &str, name: &str) -> Option<String> {
    use base64::Engine as _;
    let payload = jwt.split('.').nth(1)?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload)
        .ok()?;
    let value: serde_json::Value = serde_json::from_slice(&bytes).ok()?;
    value.get(name)?.as_str().map(str::to_owned)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn callback_params_debug_never_shows_the_code_or_state() {
        let p = CallbackParams::parse(Some("code=the-secret-code&state=the-state-value&iss=x"))
            .unwrap();
        let shown = format!("{p:?}");
        assert!(
            !shown.contains("the-secret-code") && !shown.contains("the-state-value"),
            "{shown}"
        );
        assert_eq!(p.code.unwrap().expose(), "the-secret-code");
    }

    #[test]
    fn duplicated_parameters_are_refused() {
        for q in [
            "code=a&code=b",
            "state=a&state=b",
            "iss=a&iss=b",
            "error=a&error=b",
        ] {
            assert!(
                matches!(
                    CallbackParams::parse(Some(q)),
                    Err(OidcError::DuplicateParam(_))
                ),
                "{q}"
            );
        }
    }

    #[test]
    fn zero_or_absurd_lifetimes_are_replaced() {
        assert_eq!(access_lifetime(None), DEFAULT_EXPIRES_IN);
        assert_eq!(access_lifetime(Some(0)), DEFAULT_EXPIRES_IN);
        assert_eq!(access_lifetime(Some(-5)), DEFAULT_EXPIRES_IN);
        assert_eq!(access_lifetime(Some(2)), 2);
        assert_eq!(access_lifetime(Some(i64::MAX)), MAX_EXPIRES_IN);
    }
}
