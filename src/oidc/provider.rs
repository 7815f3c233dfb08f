//! The provider as gatehouse uses it: the discovery document (fetched by hand, read leniently)
//! merged with the endpoint overrides of the config.
//!
//! Rules:
//! 1. The discovery URL is the issuer with any terminating `/` removed, plus
//!    `/.well-known/openid-configuration`; the document's `issuer` must equal the configured
//!    issuer as a string (OIDC Discovery §4.3), never normalised.
//! 2. An endpoint set in the config wins over the document; the authorization, token and JWKS
//!    endpoints are required from one of them.
//! 3. Endpoints are https (plain http only on loopback), on any host: Cognito's hosted UI and
//!    Google's token endpoint live on other hosts than their issuers.

use std::time::Duration;

use http::header::ACCEPT;
use serde_json::{Map, Value};
use url::Url;

use super::{OidcError, Settings};

/// What the discovery document says, for the members gatehouse reads; everything optional.
#[derive(Clone, Debug, Default)]
pub struct Discovery {
    pub issuer: String,
    pub authorization_endpoint: Option<String>,
    pub token_endpoint: Option<String>,
    pub jwks_uri: Option<String>,
    pub userinfo_endpoint: Option<String>,
    pub end_session_endpoint: Option<String>,
    pub revocation_endpoint: Option<String>,
    pub scopes_supported: Option<Vec<String>>,
    pub code_challenge_methods_supported: Option<Vec<String>>,
    pub token_endpoint_auth_methods_supported: Option<Vec<String>>,
    pub id_token_signing_alg_values_supported: Option<Vec<String>>,
    pub backchannel_logout_supported: bool,
    pub backchannel_logout_session_supported: bool,
    /// RFC 9207: the provider sends `iss` with every authorization response.
    pub authorization_response_iss_parameter_supported: bool,
}

/// Why discovery failed, precise enough for `check --online` to name the key to change.
#[derive(Debug, thiserror::Error)]
pub enum DiscoveryError {
    #[error("{url} is unreachable: {detail}")]
    Unreachable { url: String, detail: String },
    #[error("{url} answered HTTP {status}")]
    Status { url: String, status: u16 },
    #[error("{url} is not a JSON object: {detail}")]
    NotJson { url: String, detail: String },
    #[error("the discovery document's issuer is {found:?}, not oidc.issuer {expected:?}")]
    IssuerMismatch { found: String, expected: String },
    #[error("the discovery document's {member} {problem}")]
    Member {
        member: &'static str,
        problem: &'static str,
    },
}

impl From<DiscoveryError> for OidcError {
    fn from(e: DiscoveryError) -> Self {
        OidcError::Discovery(e.to_string())
    }
}

/// `issuer` without terminating `/` + `/.well-known/openid-configuration`.
pub fn discovery_url(issuer: &str) -> String {
    format!(
        "{}/.well-known/openid-configuration",
        issuer.trim_end_matches('/')
    )
}

/// Fetches and reads the discovery document; returns it with its `Cache-Control` freshness.
pub async fn fetch_discovery(
    issuer: &str,
    http: &reqwest::Client,
) -> Result<(Discovery, Option<Duration>), DiscoveryError> {
    let url = discovery_url(issuer);
    let answer = super::net::send(
        http.get(&url).header(ACCEPT, "application/json"),
        "discovery",
    )
    .await
    .map_err(|detail| DiscoveryError::Unreachable {
        url: url.clone(),
        detail,
    })?;
    if answer.status != http::StatusCode::OK {
        return Err(DiscoveryError::Status {
            url,
            status: answer.status.as_u16(),
        });
    }
    let discovery = parse_discovery(issuer, &url, &answer.body)?;
    Ok((discovery, super::net::freshness(&answer.headers)))
}

/// Reads a discovery document fetched from `url` and checks that it is the configured
/// `issuer`'s (compared as strings, never normalised).
pub(crate) fn parse_discovery(
    issuer: &str,
    url: &str,
    body: &[u8],
) -> Result<Discovery, DiscoveryError> {
    let doc: Map<String, Value> =
        serde_json::from_slice(body).map_err(|e| DiscoveryError::NotJson {
            url: url.to_owned(),
            detail: e.to_string(),
        })?;
    let discovery = Discovery::read(&doc)?;
    if discovery.issuer != issuer {
        return Err(DiscoveryError::IssuerMismatch {
            found: discovery.issuer,
            expected: issuer.to_owned(),
        });
    }
    Ok(discovery)
}

impl Discovery {
    fn read(doc: &Map<String, Value>) -> Result<Discovery, DiscoveryError> {
        let string = |member: &'static str| match doc.get(member) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.clone())),
            Some(_) => Err(DiscoveryError::Member {
                member,
                problem: "is not a string",
            }),
        };
        let strings = |member: &'static str| match doc.get(member) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::Array(items)) => Ok(Some(
                items
                    .iter()
                    .filter_map(|v| v.as_str().map(str::to_owned))
                    .collect(),
            )),
            Some(_) => Err(DiscoveryError::Member {
                member,
                problem: "is not an array",
            }),
        };
        // Flags some providers write as "true": read those too rather than fail discovery.
        let flag = |member: &'static str| match doc.get(member) {
            Some(Value::Bool(b)) => *b,
            Some(Value::String(s)) => s.eq_ignore_ascii_case("true"),
            _ => false,
        };
        Ok(Discovery {
            issuer: string("issuer")?.ok_or(DiscoveryError::Member {
                member: "issuer",
                problem: "is missing",
            })?,
            authorization_endpoint: string("authorization_endpoint")?,
            token_endpoint: string("token_endpoint")?,
            jwks_uri: string("jwks_uri")?,
            userinfo_endpoint: string("userinfo_endpoint")?,
            end_session_endpoint: string("end_session_endpoint")?,
            revocation_endpoint: string("revocation_endpoint")?,
            scopes_supported: strings("scopes_supported")?,
            code_challenge_methods_supported: strings("code_challenge_methods_supported")?,
            token_endpoint_auth_methods_supported: strings(
                "token_endpoint_auth_methods_supported",
            )?,
            id_token_signing_alg_values_supported: strings(
                "id_token_signing_alg_values_supported",
            )?,
            backchannel_logout_supported: flag("backchannel_logout_supported"),
            backchannel_logout_session_supported: flag("backchannel_logout_session_supported"),
            authorization_response_iss_parameter_supported: flag(
                "authorization_response_iss_parameter_supported",
            ),
        })
    }
}

/// The endpoints gatehouse calls or sends the browser to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Endpoints {
    pub authorization: Url,
    pub token: Url,
    pub jwks_uri: Url,
    pub userinfo: Option<Url>,
    pub end_session: Option<Url>,
    pub revocation: Option<Url>,
}

/// The provider: its endpoints, and what its discovery document advertised (all `None` or
/// false without discovery).
#[derive(Debug)]
pub struct Provider {
    pub endpoints: Endpoints,
    pub advertised: Discovery,
}

impl Provider {
    /// Merges the config's overrides over `discovery` (none when `oidc.discovery = false`).
    pub fn resolve(
        settings: &Settings,
        discovery: Option<Discovery>,
    ) -> Result<Provider, DiscoveryError> {
        let doc = discovery.unwrap_or_default();
        let o = &settings.endpoints;
        let pick =
            |member: &'static str, set: &Option<Url>, found: &Option<String>| match (set, found) {
                (Some(url), _) => Ok(Some(url.clone())),
                (None, Some(raw)) => endpoint_url(member, raw).map(Some),
                (None, None) => Ok(None),
            };
        let required = |member: &'static str, set: &Option<Url>, found: &Option<String>| {
            pick(member, set, found)?.ok_or(DiscoveryError::Member {
                member,
                problem: "is missing (set it in the config)",
            })
        };
        let endpoints = Endpoints {
            authorization: required(
                "authorization_endpoint",
                &o.authorization,
                &doc.authorization_endpoint,
            )?,
            token: required("token_endpoint", &o.token, &doc.token_endpoint)?,
            jwks_uri: required("jwks_uri", &o.jwks_uri, &doc.jwks_uri)?,
            userinfo: pick("userinfo_endpoint", &o.userinfo, &doc.userinfo_endpoint)?,
            end_session: pick(
                "end_session_endpoint",
                &o.end_session,
                &doc.end_session_endpoint,
            )?,
            revocation: pick(
                "revocation_endpoint",
                &o.revocation,
                &doc.revocation_endpoint,
            )?,
        };
        Ok(Provider {
            endpoints,
            advertised: doc,
        })
    }
}

/// An endpoint from the discovery document: an https URL (http only on loopback), no fragment.
fn endpoint_url(member: &'static str, raw: &str) -> Result<Url, DiscoveryError> {
    let invalid = |problem| DiscoveryError::Member { member, problem };
    let url = Url::parse(raw).map_err(|_| invalid("is not a URL"))?;
    let loopback = match url.host() {
        Some(url::Host::Domain(d)) => d == "localhost" || d.ends_with(".localhost"),
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        None => false,
    };
    match url.scheme() {
        "https" => {}
        "http" if loopback => {}
        _ => return Err(invalid("is not https")),
    }
    if url.fragment().is_some() || !url.username().is_empty() || url.password().is_some() {
        return Err(invalid("has a fragment or credentials"));
    }
    Ok(url)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_discovery_url_drops_a_terminating_slash_and_keeps_the_path() {
        let cases = [
            ("https://t.auth0.com/", "https://t.auth0.com"),
            ("https://id.example", "https://id.example"),
            ("https://kc/realms/x", "https://kc/realms/x"),
            ("https://login/tenant/v2.0/", "https://login/tenant/v2.0"),
        ];
        for (issuer, base) in cases {
            assert_eq!(
                discovery_url(issuer),
                format!("{base}/.well-known/openid-configuration")
            );
        }
    }

    #[test]
    fn discovered_endpoints_must_be_https_except_on_loopback() {
        assert!(endpoint_url("token_endpoint", "https://other.host/token").is_ok());
        assert!(endpoint_url("token_endpoint", "http://127.0.0.1:9/token").is_ok());
        assert!(endpoint_url("token_endpoint", "http://id.example/token").is_err());
        assert!(endpoint_url("token_endpoint", "javascript:alert(1)").is_err());
        assert!(endpoint_url("token_endpoint", "https://u:p@id.example/token").is_err());
    }

    #[test]
    fn discovery_reads_string_flags_and_refuses_mistyped_members() {
        let doc: Map<String, Value> = serde_json::from_str(
            r#"{"issuer":"https://i/","backchannel_logout_supported":"true","scopes_supported":["openid"]}"#,
        )
        .unwrap();
        let d = Discovery::read(&doc).unwrap();
        assert!(d.backchannel_logout_supported);
        assert_eq!(d.issuer, "https://i/", "kept exactly");
        let bad: Map<String, Value> =
            serde_json::from_str(r#"{"issuer":"https://i","token_endpoint":7}"#).unwrap();
        assert!(matches!(
            Discovery::read(&bad),
            Err(DiscoveryError::Member {
                member: "token_endpoint",
                ..
            })
        ));
    }
}
