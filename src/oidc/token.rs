//! Token endpoint calls (code exchange, refresh) and client authentication, by hand so that
//! the responses of real providers are read leniently.
//!
//! Rules:
//! 1. Client authentication is `client_secret_basic` (both parts form-encoded before base64,
//!    RFC 6749 §2.3.1) or `client_secret_post`; the same for revocation.
//! 2. `expires_in` may be a number, a numeric string ("3600") or missing; `token_type` is kept
//!    as sent (the bearer check ignores case); an empty `refresh_token` counts as none.
//! 3. An error answer with an OAuth `error` is the provider's refusal; anything else that is
//!    not a token response is the provider being unavailable or broken.

use std::str::FromStr as _;
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use http::header::{ACCEPT, AUTHORIZATION};
use openidconnect::core::CoreIdToken;
use serde_json::{Map, Value};

use super::{Oidc, OidcError, Provider};
use crate::config::TokenEndpointAuth;
use crate::secret::Secret;

/// A successful token response (RFC 6749 §5.1), as read from the provider.
#[derive(Debug)]
pub struct TokenResponse {
    access_token: Secret,
    token_type: String,
    expires_in: Option<Duration>,
    refresh_token: Option<Secret>,
    id_token: Option<CoreIdToken>,
}

impl TokenResponse {
    pub fn access_token(&self) -> &Secret {
        &self.access_token
    }

    pub fn token_type(&self) -> &str {
        &self.token_type
    }

    pub fn expires_in(&self) -> Option<Duration> {
        self.expires_in
    }

    pub fn refresh_token(&self) -> Option<&Secret> {
        self.refresh_token.as_ref()
    }

    pub fn id_token(&self) -> Option<&CoreIdToken> {
        self.id_token.as_ref()
    }

    /// Reads a token response body.
    pub fn parse(body: &[u8]) -> Result<TokenResponse, OidcError> {
        let invalid = |why: &str| OidcError::InvalidTokenResponse(why.to_owned());
        let map: Map<String, Value> =
            serde_json::from_slice(body).map_err(|_| invalid("not a JSON object"))?;
        let string = |name: &str| match map.get(name) {
            Some(Value::String(s)) if !s.is_empty() => Ok(Some(s.clone())),
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(_)) => Ok(None),
            Some(_) => Err(invalid(&format!("{name} is not a string"))),
        };
        let access_token = string("access_token")?.ok_or_else(|| invalid("no access_token"))?;
        let token_type = string("token_type")?.ok_or_else(|| invalid("no token_type"))?;
        let id_token = string("id_token")?
            .map(|raw| {
                CoreIdToken::from_str(&raw)
                    .map_err(|e| invalid(&format!("id_token is not a valid JWT: {e}")))
            })
            .transpose()?;
        Ok(TokenResponse {
            access_token: Secret::new(access_token),
            token_type,
            expires_in: seconds(map.get("expires_in"))
                .map_err(|()| invalid("expires_in is not a number of seconds"))?,
            refresh_token: string("refresh_token")?.map(Secret::new),
            id_token,
        })
    }
}

/// `expires_in` as a JSON number or a numeric string; absent or null is `None`.
fn seconds(value: Option<&Value>) -> Result<Option<Duration>, ()> {
    let secs = match value {
        None | Some(Value::Null) => return Ok(None),
        Some(Value::Number(n)) => n.as_u64().or_else(|| {
            n.as_f64()
                .filter(|f| f.is_finite() && *f >= 0.0)
                .map(|f| f as u64)
        }),
        Some(Value::String(s)) => s.trim().parse::<u64>().ok(),
        Some(_) => None,
    };
    secs.map(|s| Some(Duration::from_secs(s))).ok_or(())
}

fn form_encode(s: &str) -> String {
    url::form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

impl Oidc {
    /// Authenticates `request` as this client (`form` gets the post credentials).
    pub(super) fn client_auth<'a>(
        &'a self,
        request: reqwest::RequestBuilder,
        form: &mut Vec<(&'static str, &'a str)>,
    ) -> reqwest::RequestBuilder {
        let s = &self.settings;
        match s.token_endpoint_auth {
            TokenEndpointAuth::ClientSecretBasic => {
                let pair = format!(
                    "{}:{}",
                    form_encode(&s.client_id),
                    form_encode(s.client_secret.expose())
                );
                request.header(AUTHORIZATION, format!("Basic {}", STANDARD.encode(pair)))
            }
            TokenEndpointAuth::ClientSecretPost => {
                form.push(("client_id", &s.client_id));
                form.push(("client_secret", s.client_secret.expose()));
                request
            }
        }
    }

    /// The authorization-code grant, with the PKCE verifier.
    pub async fn exchange_code(
        &self,
        provider: &Provider,
        code: &str,
        verifier: &Secret,
    ) -> Result<TokenResponse, OidcError> {
        let form = vec![
            ("grant_type", "authorization_code"),
            ("code", code),
            ("redirect_uri", self.settings.redirect_uri.as_str()),
            ("code_verifier", verifier.expose()),
        ];
        self.token_request(provider, form).await
    }

    /// The refresh-token grant.
    pub async fn refresh_grant(
        &self,
        provider: &Provider,
        refresh_token: &Secret,
    ) -> Result<TokenResponse, OidcError> {
        let form = vec![
            ("grant_type", "refresh_token"),
            ("refresh_token", refresh_token.expose()),
        ];
        self.token_request(provider, form).await
    }

    async fn token_request(
        &self,
        provider: &Provider,
        mut form: Vec<(&'static str, &str)>,
    ) -> Result<TokenResponse, OidcError> {
        let request = self
            .http()
            .post(provider.endpoints.token.clone())
            .header(ACCEPT, "application/json");
        let request = self.client_auth(request, &mut form).form(&form);
        let answer = super::net::send(request, "token")
            .await
            .map_err(OidcError::ProviderUnavailable)?;
        if answer.status.is_success() {
            return TokenResponse::parse(&answer.body);
        }
        match error_code(&answer.body) {
            Some(code) => Err(OidcError::TokenRejected(code)),
            None => Err(OidcError::ProviderUnavailable(format!(
                "token endpoint answered HTTP {} without an OAuth error",
                answer.status.as_u16()
            ))),
        }
    }
}

/// The `error` of an RFC 6749 §5.2 error body, reduced to its allowed characters.
fn error_code(body: &[u8]) -> Option<String> {
    let map: Map<String, Value> = serde_json::from_slice(body).ok()?;
    let code = map.get("error")?.as_str()?;
    let clean: String = code
        .chars()
        .filter(|c| c.is_ascii_graphic())
        .take(64)
        .collect();
    (!clean.is_empty()).then_some(clean)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parsed(body: &str) -> Result<TokenResponse, OidcError> {
        TokenResponse::parse(body.as_bytes())
    }

    #[test]
    fn expires_in_may_be_a_number_a_numeric_string_or_missing() {
        let base = r#""access_token":"a","token_type":"bearer""#;
        let secs = |b: &str| parsed(&format!("{{{base}{b}}}")).map(|r| r.expires_in());
        assert_eq!(
            secs(r#","expires_in":3600"#).ok(),
            Some(Some(Duration::from_secs(3600)))
        );
        assert_eq!(
            secs(r#","expires_in":"3600""#).ok(),
            Some(Some(Duration::from_secs(3600)))
        );
        assert_eq!(
            secs(r#","expires_in":" 60 ""#).ok(),
            Some(Some(Duration::from_secs(60)))
        );
        assert_eq!(
            secs(r#","expires_in":59.9"#).ok(),
            Some(Some(Duration::from_secs(59)))
        );
        assert_eq!(secs("").ok(), Some(None));
        assert!(secs(r#","expires_in":"soon""#).is_err());
        assert!(secs(r#","expires_in":-5"#).is_err());
    }

    #[test]
    fn a_token_response_needs_an_access_token_and_a_type_and_drops_an_empty_refresh_token() {
        assert!(parsed(r#"{"token_type":"Bearer"}"#).is_err());
        assert!(parsed(r#"{"access_token":"a"}"#).is_err());
        assert!(parsed(r#"{"access_token":"a","token_type":"Bearer","id_token":"x"}"#).is_err());
        let r = parsed(r#"{"access_token":"a","token_type":"BEARER","refresh_token":""}"#).unwrap();
        assert!(r.refresh_token().is_none());
        assert_eq!(r.token_type(), "BEARER");
    }

    #[test]
    fn error_codes_are_read_from_oauth_error_bodies_only() {
        assert_eq!(
            error_code(br#"{"error":"invalid_grant"}"#).as_deref(),
            Some("invalid_grant")
        );
        assert_eq!(error_code(b"<html>502</html>"), None);
        assert_eq!(error_code(br#"{"error":"a\nb"}"#).as_deref(), Some("ab"));
    }
}
