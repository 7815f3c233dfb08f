//! OpenID Connect as a confidential client: discovery and endpoints (`provider.rs`), signing
//! keys (`jwks.rs`) kept fresh in the background (here), login and callback (`flow.rs`), the
//! token endpoint (`token.rs`), ID token validation (here), logout URLs; errors in `error.rs`.

pub mod advice;
pub mod backchannel;
mod error;
mod flow;
pub mod jwks;
pub mod net;
pub mod provider;
pub mod refresh;
pub mod revoke;
mod token;

pub use error::{OidcError, error_chain};
pub use flow::{CallbackParams, LoginResult, LoginStart};
pub use jwks::{Keys, UNAUTHENTICATED_REFETCH_INTERVAL};
pub use provider::{Discovery, Endpoints, Provider};
pub use token::TokenResponse;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, PoisonError, RwLock};
use std::time::{Duration, Instant};

use openidconnect::core::{
    CoreIdToken, CoreIdTokenClaims, CoreIdTokenVerifier, CoreJsonWebKeySet, CoreJwsSigningAlgorithm,
};
use openidconnect::{
    ClaimsVerificationError, ClientId, IssuerUrl, NonceVerifier, SignatureVerificationError,
};
use url::Url;

use crate::config::{EndpointOverrides, OidcConfig, TokenEndpointAuth};
use crate::secret::Secret;

fn no_matching_key<T>(result: &Result<T, ClaimsVerificationError>) -> bool {
    matches!(
        result,
        Err(ClaimsVerificationError::SignatureVerification(
            SignatureVerificationError::NoMatchingKey
        ))
    )
}

/// What the OIDC code needs from the config.
#[derive(Debug)]
pub struct Settings {
    /// Exactly as configured; compared as a string everywhere.
    pub issuer: String,
    pub client_id: String,
    pub client_secret: Secret,
    pub scopes: Vec<String>,
    /// `prompt` sent with every authorization request (e.g. "consent"), if configured.
    pub prompt: Option<String>,
    /// Extra authorization-request parameters (`oidc.auth_params`).
    pub auth_params: Vec<(String, String)>,
    pub token_endpoint_auth: TokenEndpointAuth,
    pub allowed_algs: Vec<CoreJwsSigningAlgorithm>,
    /// Extra ID token audiences accepted (then `azp` must be us).
    pub trusted_audiences: Vec<String>,
    pub redirect_uri: String,
    pub post_logout_redirect_uri: Url,
    /// Name of the end-session parameter carrying `post_logout_redirect_uri`.
    pub post_logout_redirect_param: String,
    pub clock_skew: Duration,
    pub max_id_token_age: Duration,
    pub discovery: bool,
    pub endpoints: EndpointOverrides,
    pub metadata_refresh_min: Duration,
    pub metadata_refresh_max: Duration,
}

/// The relying party: settings, the HTTP client for provider calls, the provider as last
/// discovered, and its signing keys.
pub struct Oidc {
    pub settings: Settings,
    http: reqwest::Client,
    provider: RwLock<Option<Arc<Provider>>>,
    keys: Keys,
    /// Whether the first complete load was announced (and its advice logged).
    announced: AtomicBool,
}

/// First retry after a failed metadata load; doubles up to [`RETRY_CAP`].
const RETRY_START: Duration = Duration::from_millis(250);
const RETRY_CAP: Duration = Duration::from_secs(30);

/// Retry delays: 250 ms doubling up to `cap` (at most 30 s).
#[derive(Debug)]
pub struct Backoff {
    next: Duration,
    cap: Duration,
}

impl Backoff {
    pub fn new(cap: Duration) -> Backoff {
        let cap = cap.min(RETRY_CAP).max(RETRY_START);
        Backoff {
            next: RETRY_START,
            cap,
        }
    }

    pub fn next_delay(&mut self) -> Duration {
        let delay = self.next;
        self.next = (self.next * 2).min(self.cap);
        delay
    }

    pub fn reset(&mut self) {
        self.next = RETRY_START;
    }
}

/// When to refresh again: the provider's freshness, clamped to `[min, max]`; `max` when it
/// said nothing.
pub fn next_refresh(freshness: Option<Duration>, min: Duration, max: Duration) -> Duration {
    freshness.unwrap_or(max).clamp(min, max)
}

impl Oidc {
    pub fn new(config: &OidcConfig) -> Result<Self, reqwest::Error> {
        let http = net::client(config.timeout, &config.ca)?;
        let settings = Settings {
            issuer: config.issuer.clone(),
            client_id: config.client_id.clone(),
            client_secret: config.client_secret.clone(),
            scopes: config.scopes.clone(),
            prompt: config.prompt.clone(),
            auth_params: config.auth_params.clone(),
            token_endpoint_auth: config.token_endpoint_auth,
            allowed_algs: config.allowed_algs.clone(),
            trusted_audiences: config.trusted_audiences.clone(),
            redirect_uri: config.redirect_uri.to_string(),
            post_logout_redirect_uri: config.post_logout_redirect_uri.clone(),
            post_logout_redirect_param: config.post_logout_redirect_param.clone(),
            clock_skew: config.clock_skew,
            max_id_token_age: config.max_id_token_age,
            discovery: config.discovery,
            endpoints: config.endpoints.clone(),
            metadata_refresh_min: config.metadata_refresh_min,
            metadata_refresh_max: config.metadata_refresh_max,
        };
        Ok(Self {
            settings,
            http,
            provider: RwLock::new(None),
            keys: Keys::default(),
            announced: AtomicBool::new(false),
        })
    }

    /// Loads the discovery document (unless `oidc.discovery = false`) and the JWKS once;
    /// returns the freshness the provider gave them. New metadata is used even when the
    /// JWKS then fails, and a failure keeps whatever was loaded before.
    pub async fn load(&self) -> Result<Option<Duration>, OidcError> {
        let (discovery, doc_fresh) = if self.settings.discovery {
            let (doc, fresh) = provider::fetch_discovery(&self.settings.issuer, &self.http).await?;
            (Some(doc), fresh)
        } else {
            (None, None)
        };
        let provider = Arc::new(Provider::resolve(&self.settings, discovery)?);
        let previous = self.set_provider(Arc::clone(&provider));
        if previous.is_some_and(|p| p.endpoints != provider.endpoints) {
            tracing::info!("the provider's endpoints changed with its discovery document");
        }
        let keys_fresh = self
            .keys
            .refresh(&self.http, &provider.endpoints.jwks_uri)
            .await
            .map_err(OidcError::Discovery)?;
        if !self.announced.swap(true, Ordering::AcqRel) {
            tracing::info!(issuer = %self.settings.issuer, "provider metadata loaded");
            self.log_advice(&provider);
        }
        Ok(match (doc_fresh, keys_fresh) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        })
    }

    /// Loads the provider's metadata and keys, then keeps them fresh, forever: on the
    /// schedule of [`next_refresh`], and with [`Backoff`] after a failure (also one of an
    /// on-demand key fetch). `/readyz` is green once the first load succeeded.
    pub async fn maintain(&self) {
        let s = &self.settings;
        let mut backoff = Backoff::new(s.metadata_refresh_max);
        let mut wait = Duration::ZERO;
        loop {
            tokio::select! {
                () = tokio::time::sleep(wait) => {}
                () = self.keys.retry.notified() => tokio::time::sleep(backoff.next_delay()).await,
            }
            match self.load().await {
                Ok(freshness) => {
                    backoff.reset();
                    wait = next_refresh(freshness, s.metadata_refresh_min, s.metadata_refresh_max);
                    tracing::debug!(
                        next_in_s = wait.as_secs(),
                        "provider metadata and keys refreshed"
                    );
                }
                Err(e) => {
                    wait = backoff.next_delay();
                    tracing::warn!(error = %e, retry_in_ms = u64::try_from(wait.as_millis()).unwrap_or(0), "loading the provider's metadata failed; keeping what was loaded before");
                }
            }
        }
    }

    /// Makes `provider` the one every later request uses; returns the previous one.
    pub(crate) fn set_provider(&self, provider: Arc<Provider>) -> Option<Arc<Provider>> {
        let mut slot = self
            .provider
            .write()
            .unwrap_or_else(PoisonError::into_inner);
        slot.replace(provider)
    }

    fn log_advice(&self, provider: &Provider) {
        let Some(keys) = self.keys.current() else {
            return;
        };
        for f in advice::advise(&self.settings, provider, &keys.keys) {
            match f.level {
                advice::Level::Error | advice::Level::Warning => {
                    tracing::warn!(key = f.key.unwrap_or("-"), "{}", f.message)
                }
                advice::Level::Info => tracing::info!(key = f.key.unwrap_or("-"), "{}", f.message),
                advice::Level::Ok => {}
            }
        }
    }

    /// The provider, once its metadata and keys are loaded.
    pub fn provider(&self) -> Result<Arc<Provider>, OidcError> {
        if self.keys.current().is_none() {
            return Err(OidcError::NotReady);
        }
        let slot = self.provider.read().unwrap_or_else(PoisonError::into_inner);
        slot.clone().ok_or(OidcError::NotReady)
    }

    pub fn is_ready(&self) -> bool {
        self.provider().is_ok()
    }

    pub fn http(&self) -> &reqwest::Client {
        &self.http
    }

    pub fn keys(&self) -> &Keys {
        &self.keys
    }

    /// Validates an ID token from the token endpoint (OIDC Core §3.1.3.7): signature by a key
    /// from the provider's JWKS with an allowed asymmetric algorithm, `iss`, `aud`, `azp`,
    /// `exp`, `iat`, and the nonce. When no key matches, the JWKS is fetched again (once,
    /// shared by tokens arriving together) and the token checked against it.
    pub async fn verify_id_token<N: NonceVerifier + Copy>(
        &self,
        provider: &Provider,
        token: &CoreIdToken,
        nonce: N,
    ) -> Result<CoreIdTokenClaims, OidcError> {
        let arrived = Instant::now();
        let keys = self.keys.current().ok_or(OidcError::NotReady)?;
        let mut result = self.verify_with(&keys.keys, token, nonce);
        if no_matching_key(&result) {
            let usable =
                |set: &CoreJsonWebKeySet| !no_matching_key(&self.verify_with(set, token, nonce));
            if let Some(fresh) = self
                .keys
                .refetch_for_token(&self.http, &provider.endpoints.jwks_uri, arrived, usable)
                .await
            {
                result = self.verify_with(&fresh.keys, token, nonce);
            }
        }
        result
            .map_err(|e| OidcError::InvalidIdToken(error_chain(&e)))
            .and_then(|claims| self.check_azp(claims))
    }

    fn verify_with<N: NonceVerifier>(
        &self,
        keys: &CoreJsonWebKeySet,
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
            keys.clone(),
        )
        .set_allowed_algs(s.allowed_algs.iter().cloned())
        // Extra audiences only when configured as trusted; `check_azp` then requires azp = us.
        .set_other_audience_verifier_fn(|aud| s.trusted_audiences.iter().any(|t| t == aud.as_str()))
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_refresh_schedule_honours_the_providers_max_age_within_bounds() {
        let (min, max) = (Duration::from_secs(60), Duration::from_secs(3600));
        let s = |secs| Some(Duration::from_secs(secs));
        assert_eq!(next_refresh(s(600), min, max), Duration::from_secs(600));
        assert_eq!(next_refresh(s(86_400), min, max), max, "at most max");
        assert_eq!(next_refresh(s(0), min, max), min, "no-store: at least min");
        assert_eq!(next_refresh(None, min, max), max);
    }

    #[test]
    fn retries_back_off_by_doubling_up_to_a_cap() {
        let mut b = Backoff::new(Duration::from_secs(3600));
        let delays: Vec<u128> = (0..9).map(|_| b.next_delay().as_millis()).collect();
        assert_eq!(
            delays,
            [250, 500, 1000, 2000, 4000, 8000, 16_000, 30_000, 30_000]
        );
        b.reset();
        assert_eq!(b.next_delay(), RETRY_START);
        let mut short = Backoff::new(Duration::from_secs(1));
        let delays: Vec<u128> = (0..4).map(|_| short.next_delay().as_millis()).collect();
        assert_eq!(
            delays,
            [250, 500, 1000, 1000],
            "never later than the schedule"
        );
    }
}
