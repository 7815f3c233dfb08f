//! The token endpoint: code exchange, refresh with rotation and reuse detection, client
//! authentication.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hyper::header::{self, HeaderMap, HeaderValue};
use hyper::{Response, StatusCode};
use serde_json::Value;
use sha2::{Digest as _, Sha256};

use super::layout::{RefreshPolicy, Shape};
use super::options::{Members, Misbehave, Override, TokenFault};
use super::server::{Body, Params, json_response, oauth_error, parse_basic};
use super::state::{Grant, Shared};

/// An RFC 6749 §5.2 error answer.
struct OAuthError {
    status: StatusCode,
    error: &'static str,
    description: &'static str,
}

fn invalid_grant(description: &'static str) -> OAuthError {
    OAuthError {
        status: StatusCode::BAD_REQUEST,
        error: "invalid_grant",
        description,
    }
}

fn required<'a>(form: &'a Params, name: &'static str) -> Result<&'a String, OAuthError> {
    form.get(name).ok_or(OAuthError {
        status: StatusCode::BAD_REQUEST,
        error: "invalid_request",
        description: name,
    })
}

impl Shared {
    pub(super) fn token(&self, headers: &HeaderMap, form: &Params) -> Response<Body> {
        let grant_type = form.get("grant_type").map(String::as_str);
        match grant_type {
            Some("authorization_code") => self.lock().stats.token_code += 1,
            Some("refresh_token") => self.lock().stats.token_refresh += 1,
            _ => {}
        }
        if !self.client_authenticated(headers, form) {
            return invalid_client();
        }
        let m = self.behaviour.get();
        let fault = match grant_type {
            Some("authorization_code") => m.code_fault,
            _ => m.refresh_fault,
        };
        let result = match (grant_type, fault) {
            (_, Some(TokenFault::ServerError)) => Err(OAuthError {
                status: StatusCode::INTERNAL_SERVER_ERROR,
                error: "server_error",
                description: "forced by the test",
            }),
            (_, Some(TokenFault::InvalidGrant)) => Err(invalid_grant("forced by the test")),
            (Some("authorization_code"), None) => self.exchange_code(form, &m),
            (Some("refresh_token"), None) => self.refresh(form, &m),
            _ => Err(OAuthError {
                status: StatusCode::BAD_REQUEST,
                error: "unsupported_grant_type",
                description: "authorization_code or refresh_token",
            }),
        };
        match result {
            Ok(body) => json_response(StatusCode::OK, &body),
            Err(e) => oauth_error(e.status, e.error, e.description),
        }
    }

    fn exchange_code(&self, form: &Params, m: &Misbehave) -> Result<Value, OAuthError> {
        let code = required(form, "code")?;
        let (login, nonce, scope, access, refresh) = {
            let mut guard = self.lock();
            let state = &mut *guard;
            let pending = state
                .codes
                .get_mut(code)
                .ok_or(invalid_grant("unknown code"))?;
            if pending.used {
                if let Some(grant) = pending.grant.and_then(|id| state.grants.get_mut(&id)) {
                    grant.active = false;
                }
                return Err(invalid_grant("code already used"));
            }
            pending.used = true;
            if form.get("redirect_uri") != Some(&pending.redirect_uri) {
                return Err(invalid_grant(
                    "redirect_uri differs from the authorization request",
                ));
            }
            let verifier = form
                .get("code_verifier")
                .ok_or(invalid_grant("code_verifier missing"))?;
            if pkce_challenge(verifier) != pending.challenge {
                return Err(invalid_grant("PKCE verification failed"));
            }
            let grant_id = state.next_grant;
            state.next_grant += 1;
            pending.grant = Some(grant_id);
            let (login, nonce, scope, audience) = (
                pending.login.clone(),
                pending.nonce.clone(),
                pending.scope.clone(),
                pending.audience.clone(),
            );
            let offline = pending.offline;
            let grant = Grant {
                active: true,
                login: login.clone(),
                scope: scope.clone(),
                audience: audience.clone(),
            };
            state.grants.insert(grant_id, grant);
            state.last_login = Some(login.clone());
            let access = state.mint_access(grant_id, self.opts.access_token_ttl);
            let refresh = (offline && !m.omit_refresh_token).then(|| state.mint_refresh(grant_id));
            (login, nonce, scope, (access, audience), refresh)
        };
        let access = self.audience_token(access, &login, &scope);
        let id_token = self.id_token(&login, Some(&nonce), &access, m);
        Ok(self.token_response(access, refresh, id_token, &scope, m, true))
    }

    fn refresh(&self, form: &Params, m: &Misbehave) -> Result<Value, OAuthError> {
        let presented = required(form, "refresh_token")?;
        let (login, scope, access, refresh) = {
            let mut guard = self.lock();
            let state = &mut *guard;
            let entry = state
                .refresh_tokens
                .get_mut(presented)
                .ok_or(invalid_grant("unknown refresh token"))?;
            let grant_id = entry.grant;
            if entry.used {
                state.stats.refresh_reuse += 1;
                if let Some(grant) = state.grants.get_mut(&grant_id) {
                    grant.active = false;
                }
                return Err(invalid_grant("refresh token reused; grant revoked"));
            }
            let grant = state
                .grants
                .get(&grant_id)
                .filter(|g| g.active)
                .ok_or(invalid_grant("grant revoked"))?;
            let (login, scope, audience) = (
                grant.login.clone(),
                grant.scope.clone(),
                grant.audience.clone(),
            );
            let policy = self.opts.shape.refresh_policy(self.opts.refresh_rotation);
            let (single_use, reissue) = match policy {
                _ if m.omit_refresh_token => (false, false),
                RefreshPolicy::Rotate => (true, true),
                RefreshPolicy::Reissue => (false, true),
                RefreshPolicy::Keep => (false, false),
            };
            entry.used = single_use;
            let access = state.mint_access(grant_id, self.opts.access_token_ttl);
            let refresh = reissue.then(|| state.mint_refresh(grant_id));
            (login, scope, (access, audience), refresh)
        };
        let access = self.audience_token(access, &login, &scope);
        let id_token = self.id_token(&login, None, &access, m);
        Ok(self.token_response(access, refresh, id_token, &scope, m, false))
    }

    /// Auth0: with an `audience`, the access token is a JWT for it (signed outside the lock).
    fn audience_token(
        &self,
        (access, audience): (String, Option<String>),
        login: &super::state::Login,
        scope: &str,
    ) -> String {
        match audience {
            Some(aud) => {
                let jwt = self.access_jwt(login, &aud, scope);
                self.lock().rename_access(&access, jwt)
            }
            None => access,
        }
    }

    fn token_response(
        &self,
        access: String,
        refresh: Option<String>,
        id_token: String,
        scope: &str,
        m: &Misbehave,
        code_exchange: bool,
    ) -> Value {
        let shape = self.opts.shape;
        let mut body = Members::default();
        body.put("access_token", access);
        body.knob("token_type", &m.token_type, shape.token_type(), "mac");
        let ttl = self.opts.access_token_ttl.as_secs();
        let honest_ttl = match shape {
            // Older servers: a string, and at refresh none at all for the PS256 one.
            Shape::LegacyEs256 => Value::String(ttl.to_string()),
            Shape::LegacyPs256 if code_exchange => Value::String(ttl.to_string()),
            Shape::LegacyPs256 if m.expires_in == Override::Honest => Value::Null,
            _ => ttl.into(),
        };
        body.knob("expires_in", &m.expires_in, honest_ttl, 0);
        if body.is_null("expires_in") {
            body.remove("expires_in");
        }
        if let Some(refresh) = refresh {
            body.put("refresh_token", refresh);
        }
        body.put("id_token", id_token);
        body.put("scope", scope);
        body.into_value()
    }

    /// RFC 6749 §2.3.1: `client_secret_basic` or `client_secret_post`, never both.
    pub(super) fn client_authenticated(&self, headers: &HeaderMap, form: &Params) -> bool {
        let basic = headers.get(header::AUTHORIZATION).map(parse_basic);
        let form_id = form.get("client_id");
        let (id, secret) = match (basic, form.get("client_secret")) {
            (Some(Some((id, secret))), None) if form_id.is_none_or(|f| *f == id) => (id, secret),
            (None, Some(secret)) => (form_id.cloned().unwrap_or_default(), secret.clone()),
            _ => return false,
        };
        id == self.opts.client_id && secret == self.opts.client_secret
    }
}

pub(super) fn invalid_client() -> Response<Body> {
    let description = "client authentication failed";
    let mut res = oauth_error(StatusCode::UNAUTHORIZED, "invalid_client", description);
    let challenge = HeaderValue::from_static(r#"Basic realm="test-provider""#);
    res.headers_mut()
        .insert(header::WWW_AUTHENTICATE, challenge);
    res
}

fn pkce_challenge(verifier: &str) -> String {
    URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes()))
}
