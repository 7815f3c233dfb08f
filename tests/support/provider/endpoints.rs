//! The smaller endpoints: JWKS, userinfo, revocation, introspection and end-session.

use hyper::header::{self, HeaderMap, HeaderValue};
use hyper::{Response, StatusCode};
use openidconnect::PrivateSigningKey as _;
use serde_json::{Value, json};
use url::Url;

use super::layout::Shape;
use super::options::{EndSession, Members};
use super::server::{
    Body, Params, invalid_request, json_response, metadata_response, oauth_error, parse_bearer,
    redirect, respond,
};
use super::state::{Shared, unix_secs};
use super::token::invalid_client;

impl Shared {
    pub(super) fn jwks(&self) -> Response<Body> {
        self.lock().stats.jwks += 1;
        if self.behaviour.get().jwks_fault {
            return oauth_error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "server_error",
                "forced by the test",
            );
        }
        let shape = self.opts.shape;
        let mut jwk = match shape.alg() {
            "ES256" => {
                let key = self.current_ec_key();
                let (x, y) = key.coordinates();
                json!({ "kty": "EC", "crv": "P-256", "x": x, "y": y, "use": "sig", "kid": key.kid })
            }
            _ => serde_json::to_value(self.current_key().private.as_verification_key())
                .unwrap_or_default(),
        };
        if let Value::Object(jwk) = &mut jwk {
            jwk.insert("alg".into(), json!(shape.alg()));
            if !shape.uses_kid() {
                jwk.remove("kid");
            }
        }
        metadata_response(&json!({ "keys": [jwk] }), self.opts.metadata_max_age)
    }

    pub(super) fn userinfo(&self, headers: &HeaderMap) -> Response<Body> {
        let mut state = self.lock();
        state.stats.userinfo += 1;
        let token = headers.get(header::AUTHORIZATION).and_then(parse_bearer);
        let Some((_, grant)) = token.and_then(|t| state.active_access(t)) else {
            drop(state);
            let mut res = oauth_error(
                StatusCode::UNAUTHORIZED,
                "invalid_token",
                "no active access token",
            );
            let challenge = HeaderValue::from_static(r#"Bearer error="invalid_token""#);
            res.headers_mut()
                .insert(header::WWW_AUTHENTICATE, challenge);
            return res;
        };
        let login = grant.login.clone();
        drop(state);
        let m = self.behaviour.get();
        let mut body = Members::default();
        body.knob("sub", &m.userinfo_sub, login.sub, "mallory");
        body.put("email", login.email);
        body.put("email_verified", true);
        body.put("name", login.name);
        json_response(StatusCode::OK, &body.into_value())
    }

    /// RFC 7009: always 200 for an authenticated client; a refresh token takes its grant along.
    pub(super) fn revoke(&self, headers: &HeaderMap, form: &Params) -> Response<Body> {
        if !self.client_authenticated(headers, form) {
            return invalid_client();
        }
        let Some(token) = form.get("token") else {
            return invalid_request("token");
        };
        let mut guard = self.lock();
        let state = &mut *guard;
        state.stats.revocations.push(token.clone());
        if let Some(refresh) = state.refresh_tokens.get(token)
            && let Some(grant) = state.grants.get_mut(&refresh.grant)
        {
            grant.active = false;
        }
        if let Some(access) = state.access_tokens.get_mut(token) {
            access.revoked = true;
        }
        respond(StatusCode::OK, "text/plain", "")
    }

    /// RFC 7662, for access tokens only.
    pub(super) fn introspect(&self, headers: &HeaderMap, form: &Params) -> Response<Body> {
        self.lock().stats.introspect += 1;
        if !self.client_authenticated(headers, form) {
            return invalid_client();
        }
        let Some(token) = form.get("token") else {
            return invalid_request("token");
        };
        let state = self.lock();
        let body = match state.active_access(token) {
            Some((access, grant)) => json!({
                "active": true,
                "sub": grant.login.sub,
                "client_id": self.opts.client_id,
                "scope": grant.scope,
                "token_type": "Bearer",
                "exp": unix_secs(access.expires_at),
                "iss": self.issuer,
            }),
            None => json!({ "active": false }),
        };
        json_response(StatusCode::OK, &body)
    }

    pub(super) fn end_session(&self, params: &Params) -> Response<Body> {
        let after = self.opts.shape.post_logout_param();
        let call = EndSession {
            id_token_hint: params.get("id_token_hint").cloned(),
            post_logout_redirect_uri: params.get(after).cloned(),
            state: params.get("state").cloned(),
            client_id: params.get("client_id").cloned(),
        };
        // Cognito's /logout needs the client, and a logout_uri to go to.
        if self.opts.shape == Shape::Cognito
            && (call.client_id.as_deref() != Some(self.opts.client_id.as_str())
                || call.post_logout_redirect_uri.is_none())
        {
            return respond(
                StatusCode::BAD_REQUEST,
                "text/plain",
                "client_id and logout_uri required",
            );
        }
        self.lock().stats.end_sessions.push(call.clone());
        match call.post_logout_redirect_uri.as_deref().map(Url::parse) {
            Some(Ok(mut location)) => {
                if let Some(state) = &call.state {
                    location.query_pairs_mut().append_pair("state", state);
                }
                redirect(location.as_str())
            }
            Some(Err(_)) => respond(StatusCode::BAD_REQUEST, "text/plain", "bad redirect"),
            None => respond(
                StatusCode::OK,
                "text/html; charset=utf-8",
                "<!doctype html><p>Signed out.</p>",
            ),
        }
    }
}
