//! `[oidc]`.

use openidconnect::core::CoreJwsSigningAlgorithm;
use url::Url;

use super::super::env::{ENV_CLIENT_SECRET, EnvSource};
use super::super::file::*;
use super::super::*;
use super::{Errors, MAX_CLOCK_SKEW, MAX_NETWORK_TIMEOUT, MAX_TOKEN_AGE, secure_url};

pub(super) fn oidc(
    f: &OidcFile,
    origin: &Url,
    prefix: &str,
    env: &dyn EnvSource,
    errs: &mut Errors,
) -> OidcConfig {
    let issuer = secure_url("oidc.issuer", &f.issuer, errs).unwrap_or_else(|| origin.clone());
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
    OidcConfig {
        issuer,
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
