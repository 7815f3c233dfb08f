//! The provider's signing keys and their lifecycle.
//!
//! Rules:
//! 1. Keys come only from the provider's `jwks_uri`, never from a token's headers.
//! 2. Every fetch replaces the whole set, so a key the provider removed stops being accepted
//!    after the next refresh; an older fetch never overwrites a newer one.
//! 3. A token from the token endpoint (an authenticated channel) whose key is unknown always
//!    gets a fetch started after it arrived; tokens waiting at the same time share it.
//! 4. Unauthenticated input (logout tokens) may cause a fetch at most once per
//!    [`UNAUTHENTICATED_REFETCH_INTERVAL`], on a budget of its own, and never waits for or
//!    holds anything the authenticated path needs.
//! 5. A failing fetch keeps the keys we have and asks the background refresh to retry soon.

use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::{Duration, Instant};

use http::header::ACCEPT;
use openidconnect::core::CoreJsonWebKeySet;
use tokio::sync::Notify;
use url::Url;

/// Minimum time between two fetches caused by unauthenticated input.
pub const UNAUTHENTICATED_REFETCH_INTERVAL: Duration = Duration::from_secs(30);

/// One fetched key set and when the fetch that produced it started.
pub struct KeySet {
    pub keys: CoreJsonWebKeySet,
    pub fetch_started: Instant,
}

#[derive(Default)]
pub struct Keys {
    current: RwLock<Option<Arc<KeySet>>>,
    /// Single flight of the fetches asked for by tokens from the token endpoint.
    flight: tokio::sync::Mutex<()>,
    /// When unauthenticated input last caused a fetch.
    unauthenticated: Mutex<Option<Instant>>,
    /// Wakes the background refresh after a failed on-demand fetch.
    pub(super) retry: Notify,
}

impl Keys {
    /// The keys in use; `None` until the first fetch succeeded.
    pub fn current(&self) -> Option<Arc<KeySet>> {
        self.current
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Fetches the set and installs it; returns its `Cache-Control` freshness.
    pub async fn refresh(
        &self,
        http: &reqwest::Client,
        uri: &Url,
    ) -> Result<Option<Duration>, String> {
        let started = Instant::now();
        let (keys, freshness) = fetch(http, uri).await?;
        if keys.keys().is_empty() {
            tracing::warn!(jwks_uri = %uri, "the provider's JWKS holds no key gatehouse can use");
        }
        self.install(keys, started);
        crate::telemetry::outcomes::jwks_refreshed();
        Ok(freshness)
    }

    /// Installs `keys` unless a fetch that started later was installed meanwhile.
    fn install(&self, keys: CoreJsonWebKeySet, started: Instant) {
        let mut slot = self.current.write().unwrap_or_else(PoisonError::into_inner);
        if slot.as_ref().is_none_or(|c| c.fetch_started <= started) {
            *slot = Some(Arc::new(KeySet {
                keys,
                fetch_started: started,
            }));
        }
    }

    /// For a token that arrived from the token endpoint at `arrived` and found no key: the
    /// keys to verify it with. Unless the current set already serves it (`usable`) or was
    /// fetched after it arrived, this fetches, never refused by any rate limit; callers
    /// waiting at the same time share the fetch.
    pub async fn refetch_for_token(
        &self,
        http: &reqwest::Client,
        uri: &Url,
        arrived: Instant,
        usable: impl Fn(&CoreJsonWebKeySet) -> bool,
    ) -> Option<Arc<KeySet>> {
        let _one_at_a_time = self.flight.lock().await;
        if let Some(current) = self.current()
            && (current.fetch_started >= arrived || usable(&current.keys))
        {
            return Some(current);
        }
        self.fetch_on_demand(http, uri, "a token from the token endpoint")
            .await;
        self.current()
    }

    /// For unauthenticated input (a logout token) that found no key: a fresh set at most once
    /// per [`UNAUTHENTICATED_REFETCH_INTERVAL`], else `None`.
    pub async fn refetch_unauthenticated(
        &self,
        http: &reqwest::Client,
        uri: &Url,
    ) -> Option<Arc<KeySet>> {
        {
            let mut last = self
                .unauthenticated
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            if last.is_some_and(|t| t.elapsed() < UNAUTHENTICATED_REFETCH_INTERVAL) {
                return None;
            }
            *last = Some(Instant::now());
        }
        self.fetch_on_demand(http, uri, "a logout token").await
    }

    async fn fetch_on_demand(
        &self,
        http: &reqwest::Client,
        uri: &Url,
        why: &'static str,
    ) -> Option<Arc<KeySet>> {
        match self.refresh(http, uri).await {
            Ok(_) => {
                tracing::info!(
                    cause = why,
                    "refetched the provider's signing keys for an unknown key id"
                );
                self.current()
            }
            Err(e) => {
                tracing::warn!(error = %e, cause = why, "could not refetch the provider's signing keys; keeping the current ones");
                self.retry.notify_one();
                None
            }
        }
    }
}

/// GETs and parses a JWKS; keys of unknown types are skipped, not fatal.
pub async fn fetch(
    http: &reqwest::Client,
    uri: &Url,
) -> Result<(CoreJsonWebKeySet, Option<Duration>), String> {
    let answer = super::net::send(
        http.get(uri.clone()).header(ACCEPT, "application/json"),
        "jwks",
    )
    .await
    .map_err(|e| format!("jwks_uri {uri} is unreachable: {e}"))?;
    if answer.status != http::StatusCode::OK {
        return Err(format!(
            "jwks_uri {uri} answered HTTP {}",
            answer.status.as_u16()
        ));
    }
    let keys: CoreJsonWebKeySet = serde_json::from_slice(&answer.body)
        .map_err(|e| format!("jwks_uri {uri} is not a JWK set: {e}"))?;
    Ok((keys, super::net::freshness(&answer.headers)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(kid: &str) -> CoreJsonWebKeySet {
        let json = format!(r#"{{"keys":[{{"kty":"RSA","kid":"{kid}","n":"AQAB","e":"AQAB"}}]}}"#);
        serde_json::from_str(&json).unwrap()
    }

    fn kid(keys: &Keys) -> String {
        use openidconnect::JsonWebKey as _;
        let current = keys.current().unwrap();
        current.keys.keys()[0].key_id().unwrap().as_str().to_owned()
    }

    #[test]
    fn an_older_fetch_finishing_late_never_replaces_a_newer_set() {
        let keys = Keys::default();
        let older = Instant::now();
        let newer = older + Duration::from_millis(5);
        keys.install(set("new"), newer);
        keys.install(set("old"), older);
        assert_eq!(kid(&keys), "new");
        keys.install(set("newest"), newer + Duration::from_millis(5));
        assert_eq!(kid(&keys), "newest");
    }
}
