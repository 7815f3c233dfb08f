//! What can go wrong talking OpenID Connect, and how each failure answers the browser.

use http::StatusCode;

#[derive(Debug, thiserror::Error)]
pub enum OidcError {
    #[error("provider metadata is not loaded yet")]
    NotReady,
    #[error("provider discovery failed: {0}")]
    Discovery(String),
    #[error("authorization response has a duplicated {0} parameter")]
    DuplicateParam(&'static str),
    #[error("authorization response lacks {0}")]
    MissingParam(&'static str),
    #[error("login state is unknown, expired, already used, or from another browser")]
    UnknownState,
    #[error("authorization response iss {0}")]
    IssuerMismatch(&'static str),
    #[error("provider returned error {code:?}")]
    ProviderRefused { code: String },
    #[error("token endpoint rejected the request: {0}")]
    TokenRejected(String),
    #[error("token endpoint unreachable: {0}")]
    ProviderUnavailable(String),
    #[error("token response is invalid: {0}")]
    InvalidTokenResponse(String),
    #[error("id token rejected: {0}")]
    InvalidIdToken(String),
    #[error("logout token rejected: {0}")]
    InvalidLogoutToken(String),
}

impl OidcError {
    pub(crate) fn parts(&self) -> (StatusCode, &'static str, &'static str) {
        match self {
            OidcError::NotReady | OidcError::Discovery(_) => (
                StatusCode::SERVICE_UNAVAILABLE,
                "provider_not_ready",
                "the identity provider is not available yet, try again shortly",
            ),
            OidcError::DuplicateParam(_)
            | OidcError::MissingParam(_)
            | OidcError::IssuerMismatch(_) => (
                StatusCode::BAD_REQUEST,
                "invalid_callback",
                "the sign-in response was malformed; please sign in again",
            ),
            OidcError::UnknownState => (
                StatusCode::BAD_REQUEST,
                "login_expired",
                "this sign-in attempt expired, was already completed, or was started in another browser; please sign in again",
            ),
            OidcError::ProviderRefused { code } if code == "access_denied" => (
                StatusCode::FORBIDDEN,
                "access_denied",
                "sign-in was cancelled or denied by the identity provider",
            ),
            OidcError::ProviderRefused { .. } => (
                StatusCode::BAD_REQUEST,
                "login_failed",
                "the identity provider could not complete the sign-in",
            ),
            OidcError::TokenRejected(_)
            | OidcError::InvalidTokenResponse(_)
            | OidcError::InvalidIdToken(_) => (
                StatusCode::UNAUTHORIZED,
                "login_failed",
                "the sign-in response could not be verified; please sign in again",
            ),
            OidcError::InvalidLogoutToken(_) => (
                StatusCode::BAD_REQUEST,
                "invalid_request",
                "the logout token is not valid",
            ),
            OidcError::ProviderUnavailable(_) => (
                StatusCode::BAD_GATEWAY,
                "provider_unavailable",
                "the identity provider did not answer; try again shortly",
            ),
        }
    }
}

/// `Display` of an error and all its sources, for logs.
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut source = e.source();
    while let Some(inner) = source {
        s.push_str(": ");
        s.push_str(&inner.to_string());
        source = inner.source();
    }
    s
}
