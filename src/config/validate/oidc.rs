//! `[oidc]`.

use std::time::Duration;

use openidconnect::core::CoreJwsSigningAlgorithm;
use url::Url;

use super::super::env::{ENV_CLIENT_SECRET, EnvSource};
use super::super::file::*;
use super::super::*;
use super::{Errors, MAX_CLOCK_SKEW, MAX_NETWORK_TIMEOUT, MAX_TOKEN_AGE, ca_file, secure_url};

/// Authorization-request parameters gatehouse sets itself; `oidc.auth_params` cannot.
pub const RESERVED_AUTH_PARAMS: [&str; 12] = [
    "client_id",
    "redirect_uri",
    "response_type",
    "response_mode",
    "scope",
    "state",
    "nonce",
    "code_challenge",
    "code_challenge_method",
    "prompt",
    "request",
    "request_uri",
];
/// End-session parameters gatehouse sets itself; `post_logout_redirect_param` cannot be one.
const RESERVED_LOGOUT_PARAMS: [&str; 3] = ["client_id", "id_token_hint", "state"];
/// Upper bound of `oidc.metadata_refresh_max`: keys are looked at again at least daily.
const MAX_METADATA_REFRESH: Duration = Duration::from_secs(24 * 3600);

pub(super) fn oidc(
    f: &OidcFile,
    origin: &Url,
    prefix: &str,
    env: &dyn EnvSource,
    errs: &mut Errors,
) -> OidcConfig {
    if let Some(url) = secure_url("oidc.issuer", &f.issuer, errs)
        && (url.query().is_some() || url.fragment().is_some())
    {
        errs.push("oidc.issuer", "must not have a query or fragment");
    }
    if f.client_id.is_empty() {
        errs.push("oidc.client_id", "must not be empty");
    }
    let secret = env
        .var(ENV_CLIENT_SECRET)
        .or_else(|| f.client_secret.clone())
        .or_else(|| {
            let path = f.client_secret_file.as_deref()?;
            match std::fs::read_to_string(path) {
                Ok(s) => Some(s.trim().to_owned()),
                Err(e) => {
                    errs.push(
                        "oidc.client_secret_file",
                        format!("cannot read {path}: {e}"),
                    );
                    Some(String::new())
                }
            }
        });
    let client_secret = match secret {
        Some(s) if !s.is_empty() => Secret::new(s),
        Some(_) => {
            errs.push("oidc.client_secret", "must not be empty");
            Secret::new("")
        }
        None => {
            errs.push(
                "oidc.client_secret",
                format!("required (or oidc.client_secret_file, or env {ENV_CLIENT_SECRET})"),
            );
            Secret::new("")
        }
    };
    let scopes = f
        .scopes
        .clone()
        .unwrap_or_else(|| DEFAULT_SCOPES.iter().map(|s| (*s).to_owned()).collect());
    if !scopes.iter().any(|s| s == "openid") {
        errs.push("oidc.scopes", "must include \"openid\"");
    }
    let token_endpoint_auth = match f.token_endpoint_auth.as_deref() {
        None | Some("client_secret_basic") => TokenEndpointAuth::ClientSecretBasic,
        Some("client_secret_post") => TokenEndpointAuth::ClientSecretPost,
        Some(other) => {
            errs.push("oidc.token_endpoint_auth", format!("{other:?} is not supported; use \"client_secret_basic\" or \"client_secret_post\""));
            TokenEndpointAuth::ClientSecretBasic
        }
    };
    let alg_names: Vec<String> = f
        .allowed_algs
        .clone()
        .unwrap_or_else(|| DEFAULT_ALGS.iter().map(|s| (*s).to_owned()).collect());
    let mut allowed_algs = Vec::new();
    for (i, name) in alg_names.iter().enumerate() {
        let key = format!("oidc.allowed_algs[{i}]");
        if name.eq_ignore_ascii_case("none") || name.to_ascii_uppercase().starts_with("HS") {
            errs.push(
                key,
                format!("{name} is not allowed: only asymmetric signatures are accepted"),
            );
            continue;
        }
        match serde_json::from_value::<CoreJwsSigningAlgorithm>(serde_json::Value::String(
            name.clone(),
        )) {
            Ok(alg) => allowed_algs.push(alg),
            Err(_) => errs.push(key, format!("unknown algorithm {name:?}")),
        }
    }
    if f.allowed_algs.as_ref().is_some_and(|a| a.is_empty()) {
        errs.push("oidc.allowed_algs", "must list at least one algorithm");
    }
    let redirect_uri = origin
        .join(&format!("{prefix}/callback"))
        .unwrap_or_else(|_| origin.clone());
    let post_logout_redirect_uri = match f.post_logout_redirect_uri.as_deref() {
        None => origin.clone(),
        Some(raw) => match Url::parse(raw) {
            Ok(u) if u.origin() == origin.origin() => u,
            Ok(_) => {
                errs.push(
                    "oidc.post_logout_redirect_uri",
                    "must be on server.public_origin",
                );
                origin.clone()
            }
            Err(e) => {
                errs.push("oidc.post_logout_redirect_uri", format!("invalid URL: {e}"));
                origin.clone()
            }
        },
    };
    let discovery = f.discovery.unwrap_or(true);
    let (metadata_refresh_min, metadata_refresh_max) = metadata_refresh(f, errs);
    OidcConfig {
        // Exactly as written: OIDC Discovery §4.3 compares issuers as strings.
        issuer: f.issuer.clone(),
        client_id: f.client_id.clone(),
        client_secret,
        scopes,
        prompt: f.prompt.clone(),
        token_endpoint_auth,
        allowed_algs,
        trusted_audiences: trusted_audiences(f, errs),
        redirect_uri,
        post_logout_redirect_uri,
        timeout: errs.duration_at_most(
            "oidc.timeout",
            f.timeout.as_deref(),
            DEFAULT_PROVIDER_TIMEOUT,
            MAX_NETWORK_TIMEOUT,
        ),
        clock_skew: errs.duration_at_most(
            "oidc.clock_skew",
            f.clock_skew.as_deref(),
            DEFAULT_CLOCK_SKEW,
            MAX_CLOCK_SKEW,
        ),
        max_id_token_age: errs.duration_at_most(
            "oidc.max_id_token_age",
            f.max_id_token_age.as_deref(),
            DEFAULT_MAX_ID_TOKEN_AGE,
            MAX_TOKEN_AGE,
        ),
        refresh_skew: errs.duration(
            "oidc.refresh_skew",
            f.refresh_skew.as_deref(),
            DEFAULT_REFRESH_SKEW,
        ),
        ca: f
            .ca_file
            .as_deref()
            .map(|path| ca_file("oidc.ca_file", path, errs))
            .unwrap_or_default(),
        discovery,
        endpoints: endpoints(f, discovery, errs),
        post_logout_redirect_param: post_logout_redirect_param(f, errs),
        auth_params: auth_params(f, errs),
        metadata_refresh_min,
        metadata_refresh_max,
    }
}

fn trusted_audiences(f: &OidcFile, errs: &mut Errors) -> Vec<String> {
    let list = f.trusted_audiences.clone().unwrap_or_default();
    for (i, aud) in list.iter().enumerate() {
        if aud.is_empty() || *aud == f.client_id {
            errs.push(
                format!("oidc.trusted_audiences[{i}]"),
                "must be another non-empty audience than oidc.client_id",
            );
        }
    }
    list
}

/// The endpoint overrides; without discovery the three the login needs are required.
fn endpoints(f: &OidcFile, discovery: bool, errs: &mut Errors) -> EndpointOverrides {
    let mut url = |name: &str, raw: &Option<String>, needed: bool| match raw {
        Some(raw) => secure_url(&format!("oidc.{name}"), raw, errs),
        None if needed && !discovery => {
            errs.push(
                format!("oidc.{name}"),
                "required when oidc.discovery = false",
            );
            None
        }
        None => None,
    };
    EndpointOverrides {
        authorization: url("authorization_endpoint", &f.authorization_endpoint, true),
        token: url("token_endpoint", &f.token_endpoint, true),
        jwks_uri: url("jwks_uri", &f.jwks_uri, true),
        userinfo: url("userinfo_endpoint", &f.userinfo_endpoint, false),
        end_session: url("end_session_endpoint", &f.end_session_endpoint, false),
        revocation: url("revocation_endpoint", &f.revocation_endpoint, false),
    }
}

/// A parameter name: non-empty, unreserved URL characters only (RFC 3986 §2.3).
fn is_param_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-._~".contains(&b))
}

fn post_logout_redirect_param(f: &OidcFile, errs: &mut Errors) -> String {
    let key = "oidc.post_logout_redirect_param";
    let name = f
        .post_logout_redirect_param
        .clone()
        .unwrap_or_else(|| DEFAULT_POST_LOGOUT_REDIRECT_PARAM.to_owned());
    if !is_param_name(&name) {
        errs.push(key, "must be a parameter name: letters, digits, - . _ ~");
    } else if RESERVED_LOGOUT_PARAMS.contains(&name.as_str()) {
        errs.push(key, format!("{name:?} is set by gatehouse itself"));
    }
    name
}

fn auth_params(f: &OidcFile, errs: &mut Errors) -> Vec<(String, String)> {
    let mut params = Vec::new();
    for (name, value) in f.auth_params.iter().flatten() {
        let key = format!("oidc.auth_params.{name}");
        if !is_param_name(name) {
            errs.push(key, "must be a parameter name: letters, digits, - . _ ~");
        } else if name == "prompt" {
            errs.push(key, "use oidc.prompt");
        } else if RESERVED_AUTH_PARAMS.contains(&name.as_str()) {
            errs.push(
                key,
                format!("{name} is set by gatehouse itself and cannot be configured"),
            );
        } else {
            params.push((name.clone(), value.clone()));
        }
    }
    params
}

/// `(min, max)` of the metadata refresh schedule.
fn metadata_refresh(f: &OidcFile, errs: &mut Errors) -> (Duration, Duration) {
    let min = errs.duration_at_most(
        "oidc.metadata_refresh_min",
        f.metadata_refresh_min.as_deref(),
        DEFAULT_METADATA_REFRESH_MIN,
        MAX_METADATA_REFRESH,
    );
    let max = errs.duration_at_most(
        "oidc.metadata_refresh_max",
        f.metadata_refresh_max.as_deref(),
        DEFAULT_METADATA_REFRESH_MAX,
        MAX_METADATA_REFRESH,
    );
    if min > max {
        errs.push(
            "oidc.metadata_refresh_min",
            "must not exceed oidc.metadata_refresh_max",
        );
        return (max, max);
    }
    (min, max)
}
