//! What the provider advertises and what that means for the user, each finding naming the
//! config key to change. Pure: the start-up log and `gatehouse check --online` share it.

use openidconnect::JsonWebKey as _;
use openidconnect::core::{CoreJsonWebKey, CoreJsonWebKeySet, CoreJwsSigningAlgorithm};
use serde_json::Value;

use super::{Provider, Settings};
use crate::config::TokenEndpointAuth;

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Level {
    Ok,
    Info,
    Warning,
    Error,
}

#[derive(Clone, Debug)]
pub struct Finding {
    pub level: Level,
    /// The config key to change, when one would.
    pub key: Option<&'static str>,
    pub message: String,
}

fn finding(level: Level, key: Option<&'static str>, message: impl Into<String>) -> Finding {
    Finding {
        level,
        key,
        message: message.into(),
    }
}

/// Every remark on the provider's metadata and keys.
pub fn advise(settings: &Settings, provider: &Provider, keys: &CoreJsonWebKeySet) -> Vec<Finding> {
    let mut out = keys_findings(settings, provider, keys);
    out.extend(logout_findings(provider));
    out.extend(login_findings(settings, provider));
    out
}

/// The JSON name of an algorithm (`RS256`).
fn alg_name(alg: &CoreJwsSigningAlgorithm) -> String {
    serde_json::to_value(alg)
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_else(|| format!("{alg:?}"))
}

/// The allowed algorithms `key` can verify: its type, its `alg` if it names one, its curve.
fn usable_algs<'a>(
    key: &CoreJsonWebKey,
    allowed: &'a [CoreJwsSigningAlgorithm],
) -> Vec<&'a CoreJwsSigningAlgorithm> {
    use openidconnect::{JsonWebKeyUse as _, JwsSigningAlgorithm as _};
    if key.key_use().is_some_and(|u| !u.allows_signature()) {
        return Vec::new();
    }
    // The curve is not public on the key type; read it from its JSON form.
    let crv = serde_json::to_value(key)
        .ok()
        .and_then(|v| v.get("crv").and_then(Value::as_str).map(str::to_owned));
    allowed
        .iter()
        .filter(|alg| alg.key_type().as_ref() == Some(key.key_type()))
        .filter(|alg| match key.signing_alg() {
            openidconnect::JsonWebKeyAlgorithm::Algorithm(a) => a == *alg,
            openidconnect::JsonWebKeyAlgorithm::Unspecified => true,
            _ => false,
        })
        .filter(|alg| {
            let curve = match alg {
                CoreJwsSigningAlgorithm::EcdsaP256Sha256 => Some("P-256"),
                CoreJwsSigningAlgorithm::EcdsaP384Sha384 => Some("P-384"),
                CoreJwsSigningAlgorithm::EcdsaP521Sha512 => Some("P-521"),
                CoreJwsSigningAlgorithm::EdDsa => Some("Ed25519"),
                _ => None,
            };
            curve.is_none_or(|c| crv.as_deref() == Some(c))
        })
        .collect()
}

fn keys_findings(
    settings: &Settings,
    provider: &Provider,
    keys: &CoreJsonWebKeySet,
) -> Vec<Finding> {
    let allowed = &settings.allowed_algs;
    let mut out = Vec::new();
    let mut usable = Vec::new();
    for key in keys.keys() {
        let kid = key.key_id().map_or("(no kid)", |k| k.as_str());
        let algs = usable_algs(key, allowed);
        if algs.is_empty() {
            out.push(finding(
                Level::Info,
                Some("oidc.allowed_algs"),
                format!("signing key {kid} cannot be used with oidc.allowed_algs; tokens it signs are refused"),
            ));
        } else {
            let names: Vec<String> = algs.into_iter().map(alg_name).collect();
            usable.push(format!("{kid} ({})", names.join(", ")));
        }
    }
    if usable.is_empty() {
        out.push(finding(
            Level::Error,
            Some("oidc.allowed_algs"),
            format!(
                "no key of the provider's JWKS ({}) can verify tokens with oidc.allowed_algs; every login will fail",
                provider.endpoints.jwks_uri
            ),
        ));
    } else {
        out.push(finding(
            Level::Ok,
            None,
            format!(
                "signing keys usable with oidc.allowed_algs: {}",
                usable.join(", ")
            ),
        ));
    }
    if keys.keys().len() > 1 && keys.keys().iter().any(|k| k.key_id().is_none()) {
        out.push(finding(
            Level::Warning,
            None,
            "the JWKS holds several keys and some lack a kid: a token without kid matching several keys is refused",
        ));
    }
    if let Some(advertised) = &provider.advertised.id_token_signing_alg_values_supported {
        let ours: Vec<String> = allowed.iter().map(alg_name).collect();
        if !advertised.iter().any(|a| ours.contains(a)) {
            out.push(finding(
                Level::Error,
                Some("oidc.allowed_algs"),
                format!(
                    "the provider signs ID tokens with {} only, none of which oidc.allowed_algs ({}) accepts",
                    advertised.join(", "),
                    ours.join(", ")
                ),
            ));
        }
    }
    out
}

fn logout_findings(provider: &Provider) -> Vec<Finding> {
    let (e, a) = (&provider.endpoints, &provider.advertised);
    let mut out = Vec::new();
    out.push(match &e.end_session {
        Some(url) => finding(
            Level::Ok,
            None,
            format!("logout sends the browser to the end-session endpoint {url}"),
        ),
        None => finding(
            Level::Warning,
            Some("oidc.end_session_endpoint"),
            "logout ends the gatehouse session only, the user stays signed in at the provider: it advertises no end_session_endpoint (set one if it has a logout URL, e.g. Cognito's /logout)",
        ),
    });
    out.push(match &e.revocation {
        Some(url) => finding(
            Level::Ok,
            None,
            format!("logout revokes the tokens at {url}"),
        ),
        None => finding(
            Level::Warning,
            Some("oidc.revocation_endpoint"),
            "logout will not revoke tokens: the provider advertises no revocation endpoint, so a refresh token stays valid at the provider until it expires",
        ),
    });
    if !a.backchannel_logout_supported {
        out.push(finding(
            Level::Info,
            None,
            "the provider does not advertise back-channel logout: signing out elsewhere does not end gatehouse sessions (idle_timeout and max_lifetime still do)",
        ));
    } else if !a.backchannel_logout_session_supported {
        out.push(finding(
            Level::Info,
            None,
            "back-channel logout without sid: a logout token ends every session of the user",
        ));
    } else {
        out.push(finding(
            Level::Ok,
            None,
            "back-channel logout with sid is advertised",
        ));
    }
    out
}

fn login_findings(settings: &Settings, provider: &Provider) -> Vec<Finding> {
    let a = &provider.advertised;
    let mut out = Vec::new();
    if !a.authorization_response_iss_parameter_supported {
        out.push(finding(
            Level::Info,
            None,
            "the provider does not advertise RFC 9207 iss in authorization responses: iss is checked when present, mix-up defence rests on state and PKCE",
        ));
    }
    match &a.code_challenge_methods_supported {
        None => out.push(finding(
            Level::Info,
            None,
            "the provider does not advertise code_challenge_methods_supported: PKCE S256 is sent anyway",
        )),
        Some(methods) if !methods.iter().any(|m| m == "S256") => out.push(finding(
            Level::Warning,
            None,
            format!(
                "the provider advertises PKCE methods {methods:?} without S256; gatehouse always sends S256, which it may refuse"
            ),
        )),
        Some(_) => {}
    }
    let offline = settings.scopes.iter().any(|s| s == "offline_access");
    match &a.scopes_supported {
        Some(scopes) if offline && !scopes.iter().any(|s| s == "offline_access") => {
            out.push(finding(
                Level::Warning,
                Some("oidc.scopes"),
                "offline_access is configured but the provider does not list it in scopes_supported and may refuse the login (Google does: remove it and set oidc.auth_params.access_type = \"offline\")",
            ))
        }
        _ if !offline && !settings.auth_params.iter().any(|(k, _)| k == "access_type") => out
            .push(finding(
                Level::Info,
                Some("oidc.scopes"),
                "no offline_access scope: the provider may issue no refresh token, and a session then ends when its access token expires",
            )),
        _ => {}
    }
    let ours = match settings.token_endpoint_auth {
        TokenEndpointAuth::ClientSecretBasic => "client_secret_basic",
        TokenEndpointAuth::ClientSecretPost => "client_secret_post",
    };
    // Without the member, the default is client_secret_basic (OIDC Discovery §3).
    let methods = a
        .token_endpoint_auth_methods_supported
        .clone()
        .unwrap_or_else(|| vec!["client_secret_basic".to_owned()]);
    if !methods.iter().any(|m| m == ours) {
        out.push(finding(
            Level::Warning,
            Some("oidc.token_endpoint_auth"),
            format!(
                "the provider advertises token endpoint authentication {methods:?}, not {ours}"
            ),
        ));
    }
    out
}
