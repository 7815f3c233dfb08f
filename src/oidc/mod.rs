//! OpenID Connect as a confidential client: discovery and JWKS (`provider.rs`), login and
//! callback (`flow.rs`), ID token validation (here), and logout URLs.

pub mod backchannel;
mod flow;
pub(crate) mod provider;
pub mod refresh;
pub mod revoke;

pub use flow::{CallbackParams, LoginResult, LoginStart};
pub use provider::{ExtraMetadata, JWKS_REFETCH_INTERVAL, Provider};

use std::sync::{Arc, PoisonError, RwLock};
use std::time::Duration;

use http::StatusCode;
use openidconnect::core::{
    CoreIdToken, CoreIdTokenClaims, CoreIdTokenVerifier, CoreJwsSigningAlgorithm,
};
use openidconnect::{
    ClaimsVerificationError, ClientId, IssuerUrl, NonceVerifier, SignatureVerificationError,
};
use url::Url;

use crate::config::{OidcConfig, TokenEndpointAuth};
use crate::secret::Secret;

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

/// What the OIDC code needs from the config.
#[derive(Debug)]
pub struct Settings {
    pub issuer: String,
    pub client_id: String,
    pub client_secret: Secret,
    pub scopes: Vec<String>,
    /// `prompt` sent with every authorization request (e.g. "consent"), if configured.
    pub prompt: Option<String>,
    pub token_endpoint_auth: TokenEndpointAuth,
    pub allowed_algs: Vec<CoreJwsSigningAlgorithm>,
    pub redirect_uri: String,
    pub post_logout_redirect_uri: Url,
    pub clock_skew: Duration,
    pub max_id_token_age: Duration,
}

/// The relying party: settings, the HTTP client for provider calls, and the discovered provider.
pub struct Oidc {
    pub settings: Settings,
    http: reqwest::Client,
    provider: RwLock<Option<Arc<Provider>>>,
}

impl Oidc {
    pub fn new(config: &OidcConfig) -> Result<Self, reqwest::Error> {
        let http = reqwest::Client::builder()
            // Never follow redirects on calls to the provider (SSRF, credential leaks).
            .redirect(reqwest::redirect::Policy::none())
            .timeout(config.timeout)
            .connect_timeout(config.timeout)
            .user_agent(concat!("gatehouse/", env!("CARGO_PKG_VERSION")))
            .build()?;
        let issuer = config
            .issuer
            .as_str()
            .strip_suffix('/')
            .filter(|_| config.issuer.path() == "/");
        let settings = Settings {
            issuer: issuer.unwrap_or(config.issuer.as_str()).to_owned(),
            client_id: config.client_id.clone(),
            client_secret: config.client_secret.clone(),
            scopes: config.scopes.clone(),
            prompt: config.prompt.clone(),
            token_endpoint_auth: config.token_endpoint_auth,
            allowed_algs: config.allowed_algs.clone(),
            redirect_uri: config.redirect_uri.to_string(),
            post_logout_redirect_uri: config.post_logout_redirect_uri.clone(),
            clock_skew: config.clock_skew,
            max_id_token_age: config.max_id_token_age,
        };
        Ok(Self {
            settings,
            http,
            provider: RwLock::new(None),
        })
    }

    /// Loads the provider's metadata and keys; `/readyz` is green once this succeeded.
    pub async fn discover(&self) -> Result<(), OidcError> {
        let provider = Provider::discover(&self.settings, &self.http).await?;
        self.install(provider);
        Ok(())
    }

    /// Makes `provider` the one every later request uses.
    pub(crate) fn install(&self, provider: Provider) {
        let mut slot = self
            .provider
            .write()
            .unwrap_or_else(PoisonError::into_inner);
        *slot = Some(Arc::new(provider));
    }

    pub fn provider(&self) -> Result<Arc<Provider>, OidcError> {
        let slot = self.provider.read().unwrap_or_else(PoisonError::into_inner);
        slot.clone().ok_or(OidcError::NotReady)
    }

    pub fn is_ready(&self) -> bool {
        self.provider().is_ok()
    }

    pub fn http(&self) -> &reqwest::Client {
        &self.http
    }

    /// Validates an ID token (OIDC Core §3.1.3.7): signature by a key from the provider's JWKS
    /// with an allowed asymmetric algorithm, `iss`, `aud`, `azp`, `exp`, `iat`, and the nonce.
    /// An unknown `kid` refetches the JWKS once (rate-limited) and tries again.
    pub async fn verify_id_token<N: NonceVerifier + Copy>(
        &self,
        provider: &Provider,
        token: &CoreIdToken,
        nonce: N,
    ) -> Result<CoreIdTokenClaims, OidcError> {
        match self.verify_with_current_keys(provider, token, nonce) {
            Err(ClaimsVerificationError::SignatureVerification(
                SignatureVerificationError::NoMatchingKey,
            )) if provider.refetch_jwks(&self.http).await => {
                self.verify_with_current_keys(provider, token, nonce)
            }
            other => other,
        }
        .map_err(|e| OidcError::InvalidIdToken(error_chain(&e)))
        .and_then(|claims| self.check_azp(claims))
    }

    fn verify_with_current_keys<N: NonceVerifier>(
        &self,
        provider: &Provider,
        token: &CoreIdToken,
        nonce: N,
    ) -> Result<CoreIdTokenClaims, ClaimsVerificationError> {
        let s = &self.settings;
        let issuer = IssuerUrl::new(s.issuer.clone())
            .map_err(|e| ClaimsVerificationError::Other(e.to_string()))?;
        let skew = i64::try_from(s.clock_skew.as_secs()).unwrap_or(0);
        let max_age = i64::try_from(s.max_id_token_age.as_secs()).unwrap_or(0);
        let verifier = CoreIdTokenVerifier::new_public_client(
            ClientId::new(s.client_id.clone()),
            issuer,
            (*provider.jwks()).clone(),
        )
        .set_allowed_algs(s.allowed_algs.iter().cloned())
        // `exp` may be up to the clock skew in the past.
        .set_time_fn(move || {
            chrono::DateTime::from_timestamp(crate::session::now() - skew, 0).unwrap_or_default()
        })
        .set_issue_time_verifier_fn(move |iat| {
            let age = crate::session::now() - iat.timestamp();
            if age < -skew {
                Err(format!("iat is {}s in the future", -age))
            } else if age > max_age + skew {
                Err(format!("iat is {age}s old"))
            } else {
                Ok(())
            }
        });
        token.claims(&verifier, nonce).cloned()
    }

    /// OIDC Core §3.1.3.7 steps 4–5: with several audiences, `azp` must be present; when
    /// present, it must be us.
    fn check_azp(&self, claims: CoreIdTokenClaims) -> Result<CoreIdTokenClaims, OidcError> {
        let us = self.settings.client_id.as_str();
        match claims.authorized_party() {
            Some(azp) if azp.as_str() != us => {
                Err(OidcError::InvalidIdToken("azp is not this client".into()))
            }
            None if claims.audiences().len() > 1 => Err(OidcError::InvalidIdToken(
                "several audiences without azp".into(),
            )),
            _ => Ok(claims),
        }
    }
}
