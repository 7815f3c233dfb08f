//! The provider as discovered: metadata, a configured client, and the JWKS cache.
//!
//! Rules:
//! 1. The discovery document's `issuer` must equal the configured issuer exactly.
//! 2. Signing keys come only from the provider's `jwks_uri`, never from token headers.
//! 3. An unknown `kid` refetches the JWKS at most once per [`JWKS_REFETCH_INTERVAL`], so key
//!    rotation just works and random `kid`s cannot make us hammer the provider.

use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::{Duration, Instant};

use openidconnect::core::{
    CoreAuthDisplay, CoreClaimName, CoreClaimType, CoreClient, CoreClientAuthMethod, CoreGrantType,
    CoreJsonWebKey, CoreJsonWebKeySet, CoreJweContentEncryptionAlgorithm,
    CoreJweKeyManagementAlgorithm, CoreResponseMode, CoreResponseType, CoreSubjectIdentifierType,
};
use openidconnect::{
    AdditionalProviderMetadata, AuthType, ClientId, ClientSecret, EndpointNotSet, EndpointSet,
    IssuerUrl, JsonWebKeySet, ProviderMetadata, RedirectUrl,
};
use serde::{Deserialize, Serialize};
use url::Url;

use super::{OidcError, Settings};
use crate::config::TokenEndpointAuth;

/// Minimum time between two JWKS refetches triggered by an unknown `kid`.
pub const JWKS_REFETCH_INTERVAL: Duration = Duration::from_secs(30);

/// Discovery fields the `openidconnect` crate does not model.
#[derive(Clone, Debug, Default, Deserialize, Serialize)]
pub struct ExtraMetadata {
    pub end_session_endpoint: Option<Url>,
    pub revocation_endpoint: Option<Url>,
    /// RFC 9207: the provider sends `iss` with every authorization response.
    #[serde(default)]
    pub authorization_response_iss_parameter_supported: bool,
}

impl AdditionalProviderMetadata for ExtraMetadata {}

pub type Metadata = ProviderMetadata<
    ExtraMetadata,
    CoreAuthDisplay,
    CoreClientAuthMethod,
    CoreClaimName,
    CoreClaimType,
    CoreGrantType,
    CoreJweContentEncryptionAlgorithm,
    CoreJweKeyManagementAlgorithm,
    CoreJsonWebKey,
    CoreResponseMode,
    CoreResponseType,
    CoreSubjectIdentifierType,
>;

/// The client with an authorization and a token endpoint set.
pub type Client = CoreClient<
    EndpointSet,
    EndpointNotSet,
    EndpointNotSet,
    EndpointNotSet,
    EndpointSet,
    EndpointNotSet,
>;

pub struct Provider {
    pub metadata: Metadata,
    pub client: Client,
    jwks: RwLock<Arc<CoreJsonWebKeySet>>,
    last_refetch: Mutex<Option<Instant>>,
}

impl Provider {
    /// Fetches the discovery document and the JWKS, and builds the client.
    pub async fn discover(
        settings: &Settings,
        http: &reqwest::Client,
    ) -> Result<Provider, OidcError> {
        let issuer = IssuerUrl::new(settings.issuer.clone())
            .map_err(|e| OidcError::Discovery(e.to_string()))?;
        // discover_async checks that the document's `issuer` equals ours, then fetches jwks_uri.
        let metadata = Metadata::discover_async(issuer, http)
            .await
            .map_err(|e| OidcError::Discovery(super::error_chain(&e)))?;
        Self::from_metadata(settings, metadata)
    }

    /// Builds the client from metadata already fetched and checked (its JWKS included).
    pub(crate) fn from_metadata(
        settings: &Settings,
        metadata: Metadata,
    ) -> Result<Provider, OidcError> {
        let issuer = IssuerUrl::new(settings.issuer.clone())
            .map_err(|e| OidcError::Discovery(e.to_string()))?;
        // Rule 1 again, so that this holds for any metadata, not only discover_async's.
        if metadata.issuer() != &issuer {
            return Err(OidcError::Discovery(
                "the discovery document's issuer is not the configured issuer".into(),
            ));
        }
        let token_url = metadata.token_endpoint().cloned().ok_or_else(|| {
            OidcError::Discovery("provider metadata has no token_endpoint".into())
        })?;
        let auth_type = match settings.token_endpoint_auth {
            TokenEndpointAuth::ClientSecretBasic => AuthType::BasicAuth,
            TokenEndpointAuth::ClientSecretPost => AuthType::RequestBody,
        };
        let redirect = RedirectUrl::new(settings.redirect_uri.clone())
            .map_err(|e| OidcError::Discovery(e.to_string()))?;
        let client = CoreClient::new(
            ClientId::new(settings.client_id.clone()),
            issuer,
            JsonWebKeySet::default(),
        )
        .set_client_secret(ClientSecret::new(
            settings.client_secret.expose().to_owned(),
        ))
        .set_auth_uri(metadata.authorization_endpoint().clone())
        .set_token_uri(token_url)
        .set_redirect_uri(redirect)
        .set_auth_type(auth_type);
        let jwks = Arc::new(metadata.jwks().clone());
        Ok(Provider {
            metadata,
            client,
            jwks: RwLock::new(jwks),
            last_refetch: Mutex::new(None),
        })
    }

    pub fn extra(&self) -> &ExtraMetadata {
        self.metadata.additional_metadata()
    }

    pub fn jwks(&self) -> Arc<CoreJsonWebKeySet> {
        Arc::clone(&self.jwks.read().unwrap_or_else(PoisonError::into_inner))
    }

    /// Refetches the JWKS unless that happened less than [`JWKS_REFETCH_INTERVAL`] ago.
    /// Returns whether a new key set was loaded.
    pub async fn refetch_jwks(&self, http: &reqwest::Client) -> bool {
        {
            let mut last = self
                .last_refetch
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            if last.is_some_and(|t| t.elapsed() < JWKS_REFETCH_INTERVAL) {
                return false;
            }
            *last = Some(Instant::now());
        }
        match CoreJsonWebKeySet::fetch_async(self.metadata.jwks_uri(), http).await {
            Ok(set) => {
                tracing::info!(
                    keys = set.keys().len(),
                    "refetched the provider's signing keys"
                );
                let mut g = self.jwks.write().unwrap_or_else(PoisonError::into_inner);
                *g = Arc::new(set);
                true
            }
            Err(e) => {
                tracing::warn!(error = %super::error_chain(&e), "could not refetch the provider's signing keys");
                false
            }
        }
    }
}
