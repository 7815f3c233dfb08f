//! Discovery and the authorization endpoint (PKCE S256 only), with the demo's sign-in form.

use hyper::{Response, StatusCode};
use serde_json::{Value, json};
use url::Url;

use super::EVIL_ISSUER;
use super::layout::{Endpoint, RefreshGrant};
use super::options::{Misbehave, Override};
use super::server::{Body, Params, json_response, metadata_response, redirect, respond};
use super::state::{Login, PendingCode, Shared, random_token};

impl Shared {
    pub(super) fn discovery(&self) -> Response<Body> {
        self.lock().stats.discovery += 1;
        let shape = self.opts.shape;
        let (backchannel, backchannel_sid) = shape.backchannel();
        let mut doc = json!({
            "response_types_supported": ["code"],
            "response_modes_supported": ["query"],
            "subject_types_supported": ["public"],
            "id_token_signing_alg_values_supported": [shape.alg()],
            "token_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post"],
            "grant_types_supported": ["authorization_code", "refresh_token"],
            "scopes_supported": shape.scopes_supported(),
            "claims_supported": ["sub", "iss", "aud", "exp", "iat", "auth_time", "nonce", "sid",
                                 "email", "email_verified", "name"],
            "authorization_response_iss_parameter_supported": self.iss_parameter_supported(),
            "backchannel_logout_supported": backchannel,
            "backchannel_logout_session_supported": backchannel_sid,
        });
        let Value::Object(members) = &mut doc else {
            return json_response(StatusCode::INTERNAL_SERVER_ERROR, &json!({}));
        };
        if shape.advertises_pkce() {
            members.insert("code_challenge_methods_supported".into(), json!(["S256"]));
        }
        let endpoints = [
            ("authorization_endpoint", Endpoint::Authorize),
            ("token_endpoint", Endpoint::Token),
            ("jwks_uri", Endpoint::Jwks),
            ("userinfo_endpoint", Endpoint::Userinfo),
            ("end_session_endpoint", Endpoint::EndSession),
            ("revocation_endpoint", Endpoint::Revoke),
            ("introspection_endpoint", Endpoint::Introspect),
        ];
        for (member, endpoint) in endpoints {
            if let Some(url) = self
                .layout
                .advertised(endpoint, &self.origin, &self.other_origin)
            {
                members.insert(member.into(), json!(url));
            }
        }
        let m = self.behaviour.get();
        if let Some(issuer) = m
            .discovery_issuer
            .resolve(json!(self.issuer), json!(EVIL_ISSUER))
        {
            members.insert("issuer".into(), issuer);
        }
        metadata_response(&doc, self.opts.metadata_max_age)
    }

    /// RFC 9207: whether authorization responses carry `iss`.
    pub(super) fn iss_parameter_supported(&self) -> bool {
        self.opts
            .shape
            .iss_parameter()
            .unwrap_or(self.opts.iss_parameter_supported)
    }

    /// `GET /authorize` (and a non-interactive `POST`): validate, then approve or show the form.
    pub(super) fn authorization_request(&self, params: &Params) -> Response<Body> {
        {
            let mut state = self.lock();
            state.stats.authorize += 1;
            state.stats.last_authorize = params.clone();
        }
        let request = match self.validate_authorize(params) {
            Ok(request) => request,
            Err(why) => return respond(StatusCode::BAD_REQUEST, "text/plain", why),
        };
        if self.opts.interactive {
            return respond(
                StatusCode::OK,
                "text/html; charset=utf-8",
                sign_in_form(params),
            );
        }
        self.decide(&request, params.get("login_hint").map(String::as_str))
    }

    /// `POST /authorize` from the interactive form.
    pub(super) fn sign_in_decision(&self, params: &Params) -> Response<Body> {
        match self.validate_authorize(params) {
            Err(why) => respond(StatusCode::BAD_REQUEST, "text/plain", why),
            Ok(request) if params.contains_key("deny") => self.deny(&request),
            Ok(request) => self.decide(&request, params.get("login_hint").map(String::as_str)),
        }
    }

    fn validate_authorize(&self, params: &Params) -> Result<AuthorizeRequest, &'static str> {
        let get = |name| params.get(name).filter(|v| !v.is_empty());
        if get("client_id") != Some(&self.opts.client_id) {
            return Err("unknown client_id");
        }
        let redirect_uri = get("redirect_uri").ok_or("redirect_uri missing")?;
        let redirect = Url::parse(redirect_uri).map_err(|_| "redirect_uri is not a URL")?;
        if get("response_type").map(String::as_str) != Some("code") {
            return Err("response_type must be code");
        }
        let scope = get("scope").ok_or("scope missing")?;
        if !scope.split(' ').any(|s| s == "openid") {
            return Err("scope must contain openid");
        }
        let challenge = get("code_challenge").ok_or("code_challenge missing")?;
        if get("code_challenge_method").map(String::as_str) != Some("S256") {
            return Err("code_challenge_method must be S256");
        }
        let supported = self.opts.shape.scopes_supported();
        let offline = match self.opts.shape.refresh_grant() {
            RefreshGrant::Always => true,
            RefreshGrant::OfflineAccessScope => scope.split(' ').any(|s| s == "offline_access"),
            RefreshGrant::AccessTypeOffline => get("access_type").is_some_and(|v| v == "offline"),
        };
        Ok(AuthorizeRequest {
            redirect_uri: redirect_uri.clone(),
            redirect,
            state: get("state").ok_or("state missing")?.clone(),
            nonce: get("nonce").ok_or("nonce missing")?.clone(),
            challenge: challenge.clone(),
            scope: scope.clone(),
            // Like Google and Cognito: a scope the provider does not know fails the login.
            unknown_scope: scope.split(' ').any(|s| !supported.contains(&s)),
            audience: get("audience").cloned(),
            offline,
        })
    }

    fn decide(&self, request: &AuthorizeRequest, login_hint: Option<&str>) -> Response<Body> {
        let m = self.behaviour.get();
        if m.authz_denied {
            return self.deny(request);
        }
        if request.unknown_scope {
            let pairs = vec![
                ("error", "invalid_scope".to_owned()),
                ("state", request.state.clone()),
            ];
            return self.redirect_back(&request.redirect, pairs, &m);
        }
        let code = random_token();
        let login = Login::new(login_hint);
        {
            let mut state = self.lock();
            state.stats.sids.push(login.sid.clone());
            let pending = PendingCode {
                used: false,
                grant: None,
                redirect_uri: request.redirect_uri.clone(),
                challenge: request.challenge.clone(),
                nonce: request.nonce.clone(),
                scope: request.scope.clone(),
                login,
                audience: request.audience.clone(),
                offline: request.offline,
            };
            state.codes.insert(code.clone(), pending);
        }
        let mut pairs = vec![("code", code), ("state", request.state.clone())];
        if m.duplicate_code {
            pairs.push(("code", "forged-code".to_owned()));
        }
        if m.duplicate_state {
            pairs.push(("state", "forged-state".to_owned()));
        }
        self.redirect_back(&request.redirect, pairs, &m)
    }

    fn deny(&self, request: &AuthorizeRequest) -> Response<Body> {
        let pairs = vec![
            ("error", "access_denied".to_owned()),
            (
                "error_description",
                "The user denied the request".to_owned(),
            ),
            ("state", request.state.clone()),
        ];
        self.redirect_back(&request.redirect, pairs, &self.behaviour.get())
    }

    /// 302 to the client's redirect URI with `pairs` and the RFC 9207 `iss` as configured.
    fn redirect_back(
        &self,
        to: &Url,
        mut pairs: Vec<(&str, String)>,
        m: &Misbehave,
    ) -> Response<Body> {
        let honest = self.iss_parameter_supported().then(|| json!(self.issuer));
        let iss = match &m.authz_iss {
            Override::Honest => honest,
            other => other.resolve(Value::Null, json!(EVIL_ISSUER)),
        };
        if let Some(iss) = iss {
            pairs.push(("iss", text_of(&iss)));
        }
        let mut location = to.clone();
        location.query_pairs_mut().extend_pairs(pairs);
        redirect(location.as_str())
    }
}

struct AuthorizeRequest {
    redirect_uri: String,
    redirect: Url,
    state: String,
    nonce: String,
    challenge: String,
    scope: String,
    unknown_scope: bool,
    audience: Option<String>,
    offline: bool,
}

fn sign_in_form(params: &Params) -> String {
    let hidden: String = params
        .iter()
        .filter(|(name, _)| name.as_str() != "login_hint")
        .map(|(name, value)| {
            let (name, value) = (html_escape(name), html_escape(value));
            format!(r#"<input type="hidden" name="{name}" value="{value}">"#)
        })
        .collect();
    format!(
        r#"<!doctype html><html><head><meta charset="utf-8"><title>Test provider sign-in</title>
</head><body><h1>Test OpenID Provider</h1><form method="post" action="/authorize">{hidden}
<button name="login_hint" value="alice">Sign in as alice</button>
<button name="login_hint" value="bob">Sign in as bob</button>
<button name="deny" value="1">Cancel</button></form></body></html>"#
    )
}

fn text_of(value: &Value) -> String {
    value
        .as_str()
        .map_or_else(|| value.to_string(), str::to_owned)
}

fn html_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
        .replace('\'', "&#39;")
}
