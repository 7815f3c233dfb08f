//! Provider shapes: where each real provider puts its issuer and endpoints (the same paths,
//! on 127.0.0.1), what its discovery document advertises, and how it treats tokens.
//! [`Host::Other`] is a second listener standing for the other hosts some providers use
//! (Cognito's hosted UI, Google's API hosts, Microsoft Graph).

/// Which real provider the test provider imitates.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Shape {
    /// Everything by the book, at `/authorize`, `/token`, `/jwks` … under `http://ADDR`.
    #[default]
    Standard,
    /// Issuer `http://ADDR/` with the trailing slash; opaque access tokens unless the
    /// authorization request names an `audience`; refresh tokens only for `offline_access`,
    /// rotated with reuse detection.
    Auth0,
    /// Issuer `…/realms/gatehouse`; everything advertised, back-channel logout with `sid`.
    Keycloak,
    /// Issuer `…/{tenant}/v2.0`; no revocation endpoint; refresh tokens reissued, the old
    /// ones stay valid; userinfo on another host.
    EntraId,
    /// No end-session endpoint; `offline_access` not in `scopes_supported` (asking for it is
    /// refused); a refresh token only with `access_type=offline`, and refresh responses carry
    /// none; token, JWKS, userinfo and revocation on another host.
    Google,
    /// Issuer `…/oauth2/default`.
    Okta,
    /// Issuer `…/us-east-1_gatehouse` with its JWKS; authorize, token and userinfo on the
    /// hosted-UI host; neither end-session nor revocation advertised, though the hosted UI
    /// serves `/logout?client_id&logout_uri` and `/oauth2/revoke`.
    Cognito,
    /// An older server: ES256 key, no `kid` in the JWKS or the tokens, `expires_in` as a
    /// string, `token_type` "bearer", no PKCE methods, RFC 9207 or back-channel advertised.
    LegacyEs256,
    /// An older server: PS256 key, `aud` as an array, `token_type` "BEARER", `expires_in` a
    /// string at code exchange and missing at refresh, no PKCE methods advertised.
    LegacyPs256,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Host {
    /// The issuer's host.
    Issuer,
    /// The second listener.
    Other,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Endpoint {
    Discovery,
    Authorize,
    Token,
    Jwks,
    Userinfo,
    EndSession,
    Revoke,
    Introspect,
}

/// How refresh tokens behave.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum RefreshPolicy {
    /// Single use; a reused one revokes the grant.
    Rotate,
    /// A new one with every refresh; the old one stays valid.
    Reissue,
    /// None in refresh responses; the presented one stays valid.
    Keep,
}

/// When a code exchange comes with a refresh token.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum RefreshGrant {
    Always,
    /// Only when `offline_access` was granted.
    OfflineAccessScope,
    /// Only with `access_type=offline` in the authorization request (Google).
    AccessTypeOffline,
}

const ENTRA_TENANT: &str = "9188040d-6c67-4c5b-b112-36a304b66dad";

/// One served endpoint: where it lives and whether discovery names it.
struct Place {
    endpoint: Endpoint,
    host: Host,
    path: String,
    advertised: bool,
}

pub(super) struct Layout {
    /// Appended to `http://ADDR` to make the issuer.
    pub(super) issuer_path: String,
    places: Vec<Place>,
}

impl Layout {
    pub(super) fn of(shape: Shape) -> Layout {
        use Endpoint::*;
        use Host::{Issuer as I, Other as O};
        let standard = |base: &str, names: [&str; 7]| -> Vec<(Endpoint, Host, String, bool)> {
            let eps = [
                Authorize, Token, Jwks, Userinfo, EndSession, Revoke, Introspect,
            ];
            eps.into_iter()
                .zip(names)
                .map(|(e, n)| (e, I, format!("{base}{n}"), true))
                .collect()
        };
        let (issuer_path, places): (String, Vec<(Endpoint, Host, String, bool)>) = match shape {
            Shape::Standard | Shape::LegacyEs256 | Shape::LegacyPs256 => (
                String::new(),
                standard(
                    "",
                    [
                        "/authorize",
                        "/token",
                        "/jwks",
                        "/userinfo",
                        "/end_session",
                        "/revoke",
                        "/introspect",
                    ],
                ),
            ),
            Shape::Auth0 => (
                "/".into(),
                vec![
                    (Authorize, I, "/authorize".into(), true),
                    (Token, I, "/oauth/token".into(), true),
                    (Jwks, I, "/.well-known/jwks.json".into(), true),
                    (Userinfo, I, "/userinfo".into(), true),
                    (EndSession, I, "/oidc/logout".into(), true),
                    (Revoke, I, "/oauth/revoke".into(), true),
                ],
            ),
            Shape::Keycloak => {
                let base = "/realms/gatehouse";
                let p = "/protocol/openid-connect";
                (
                    base.into(),
                    standard(
                        &format!("{base}{p}"),
                        [
                            "/auth",
                            "/token",
                            "/certs",
                            "/userinfo",
                            "/logout",
                            "/revoke",
                            "/token/introspect",
                        ],
                    ),
                )
            }
            Shape::EntraId => {
                let t = ENTRA_TENANT;
                (
                    format!("/{t}/v2.0"),
                    vec![
                        (Authorize, I, format!("/{t}/oauth2/v2.0/authorize"), true),
                        (Token, I, format!("/{t}/oauth2/v2.0/token"), true),
                        (Jwks, I, format!("/{t}/discovery/v2.0/keys"), true),
                        (Userinfo, O, "/oidc/userinfo".into(), true),
                        (EndSession, I, format!("/{t}/oauth2/v2.0/logout"), true),
                    ],
                )
            }
            Shape::Google => (
                String::new(),
                vec![
                    (Authorize, I, "/o/oauth2/v2/auth".into(), true),
                    (Token, O, "/token".into(), true),
                    (Jwks, O, "/oauth2/v3/certs".into(), true),
                    (Userinfo, O, "/v1/userinfo".into(), true),
                    (Revoke, O, "/revoke".into(), true),
                ],
            ),
            Shape::Okta => {
                let base = "/oauth2/default";
                (
                    base.into(),
                    standard(
                        &format!("{base}/v1"),
                        [
                            "/authorize",
                            "/token",
                            "/keys",
                            "/userinfo",
                            "/logout",
                            "/revoke",
                            "/introspect",
                        ],
                    ),
                )
            }
            Shape::Cognito => {
                let pool = "/us-east-1_gatehouse";
                (
                    pool.into(),
                    vec![
                        (Jwks, I, format!("{pool}/.well-known/jwks.json"), true),
                        (Authorize, O, "/oauth2/authorize".into(), true),
                        (Token, O, "/oauth2/token".into(), true),
                        (Userinfo, O, "/oauth2/userInfo".into(), true),
                        (EndSession, O, "/logout".into(), false),
                        (Revoke, O, "/oauth2/revoke".into(), false),
                    ],
                )
            }
        };
        let discovery = format!(
            "{}/.well-known/openid-configuration",
            issuer_path.trim_end_matches('/')
        );
        let mut places: Vec<Place> = places
            .into_iter()
            .map(|(endpoint, host, path, advertised)| Place {
                endpoint,
                host,
                path,
                advertised,
            })
            .collect();
        places.push(Place {
            endpoint: Discovery,
            host: I,
            path: discovery,
            advertised: false,
        });
        Layout {
            issuer_path,
            places,
        }
    }

    /// Whether any endpoint lives on the second host.
    pub(super) fn uses_other_host(&self) -> bool {
        self.places.iter().any(|p| p.host == Host::Other)
    }

    /// The endpoint served at `path` on `host`.
    pub(super) fn find(&self, host: Host, path: &str) -> Option<Endpoint> {
        self.places
            .iter()
            .find(|p| p.host == host && p.path == path)
            .map(|p| p.endpoint)
    }

    /// The URL discovery advertises for `endpoint`, if it does.
    pub(super) fn advertised(
        &self,
        endpoint: Endpoint,
        issuer_origin: &str,
        other_origin: &str,
    ) -> Option<String> {
        self.places
            .iter()
            .find(|p| p.endpoint == endpoint && p.advertised)
            .map(|p| Self::join(p, issuer_origin, other_origin))
    }

    /// The URL of `endpoint`, advertised or not.
    pub(super) fn url(
        &self,
        endpoint: Endpoint,
        issuer_origin: &str,
        other_origin: &str,
    ) -> Option<String> {
        self.places
            .iter()
            .find(|p| p.endpoint == endpoint)
            .map(|p| Self::join(p, issuer_origin, other_origin))
    }

    fn join(p: &Place, issuer_origin: &str, other_origin: &str) -> String {
        let origin = match p.host {
            Host::Issuer => issuer_origin,
            Host::Other => other_origin,
        };
        format!("{origin}{}", p.path)
    }
}

impl Shape {
    pub(super) fn refresh_policy(self, rotation: bool) -> RefreshPolicy {
        match self {
            Shape::Auth0 | Shape::Okta | Shape::Keycloak => RefreshPolicy::Rotate,
            Shape::EntraId => RefreshPolicy::Reissue,
            Shape::Google | Shape::Cognito => RefreshPolicy::Keep,
            Shape::Standard | Shape::LegacyEs256 | Shape::LegacyPs256 if rotation => {
                RefreshPolicy::Rotate
            }
            _ => RefreshPolicy::Keep,
        }
    }

    pub(super) fn refresh_grant(self) -> RefreshGrant {
        match self {
            Shape::Auth0 | Shape::Okta | Shape::EntraId => RefreshGrant::OfflineAccessScope,
            Shape::Google => RefreshGrant::AccessTypeOffline,
            _ => RefreshGrant::Always,
        }
    }

    pub(super) fn scopes_supported(self) -> &'static [&'static str] {
        match self {
            Shape::Google => &["openid", "email", "profile"],
            Shape::Cognito => &[
                "openid",
                "email",
                "phone",
                "profile",
                "aws.cognito.signin.user.admin",
            ],
            _ => &["openid", "profile", "email", "offline_access"],
        }
    }

    /// RFC 9207 `iss` in authorization responses; `None` = as `iss_parameter_supported` says.
    pub(super) fn iss_parameter(self) -> Option<bool> {
        match self {
            Shape::Standard => None,
            Shape::Keycloak => Some(true),
            _ => Some(false),
        }
    }

    pub(super) fn advertises_pkce(self) -> bool {
        !matches!(
            self,
            Shape::EntraId | Shape::Cognito | Shape::LegacyEs256 | Shape::LegacyPs256
        )
    }

    /// `(backchannel_logout_supported, backchannel_logout_session_supported)`.
    pub(super) fn backchannel(self) -> (bool, bool) {
        match self {
            Shape::Standard | Shape::Keycloak | Shape::Auth0 => (true, true),
            _ => (false, false),
        }
    }

    pub(super) fn token_type(self) -> &'static str {
        match self {
            Shape::LegacyEs256 => "bearer",
            Shape::LegacyPs256 => "BEARER",
            _ => "Bearer",
        }
    }

    /// The signing algorithm of its ID tokens.
    pub(super) fn alg(self) -> &'static str {
        match self {
            Shape::LegacyEs256 => "ES256",
            Shape::LegacyPs256 => "PS256",
            _ => "RS256",
        }
    }

    /// Whether keys and tokens carry a `kid`.
    pub(super) fn uses_kid(self) -> bool {
        self != Shape::LegacyEs256
    }

    /// The parameter of the end-session endpoint naming where to go afterwards.
    pub(super) fn post_logout_param(self) -> &'static str {
        match self {
            Shape::Cognito => "logout_uri",
            _ => "post_logout_redirect_uri",
        }
    }
}
