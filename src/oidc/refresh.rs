//! Keeping the access token fresh: refresh with the refresh token shortly before expiry.
//!
//! Rules:
//! 1. Refresh when the token expires within the skew (`oidc.refresh_skew`, never more than
//!    half the token's lifetime).
//! 2. `invalid_grant` ends the session (401). A provider that is down or slow keeps it: the
//!    old token is used while still valid, else 503 with `Retry-After`.
//! 3. A new ID token must pass validation and keep the same `iss` and `sub`, else the session ends.
//! 4. Single flight everywhere: one refresh per session in this process (`Flights`), and across
//!    instances a store lock whose lease is renewed while the provider call runs; a crashed
//!    holder blocks nobody longer than the lease. Whoever gets the lock re-reads first, so a
//!    refresh token is never presented twice.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use openidconnect::Nonce;

use super::OidcError;
use super::flow::tokens_from;
use crate::app::App;
use crate::error::Error;
use crate::secret::Secret;
use crate::session::{Loaded, Sessions, Tokens, now, random_token};

/// How often a request waiting for another instance's refresh re-reads the session.
const LOCK_POLL: Duration = Duration::from_millis(50);

/// Whether the access token is due for refresh at `now`.
pub fn due(tokens: &Tokens, skew: i64, now: i64) -> bool {
    let lifetime = (tokens.access_expires_at - tokens.issued_at).max(0);
    now >= tokens.access_expires_at - skew.min(lifetime / 2)
}

/// Per-instance single flight: one refresh per session at a time in this process.
#[derive(Default)]
pub struct Flights {
    inflight: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
}

impl Flights {
    fn enter(&self, key: &str) -> Arc<tokio::sync::Mutex<()>> {
        let mut map = self
            .inflight
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        Arc::clone(map.entry(key.to_owned()).or_default())
    }

    fn leave(&self, key: &str, flight: &Arc<tokio::sync::Mutex<()>>) {
        let mut map = self
            .inflight
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        // Ours and the map's: nobody else is waiting, forget the entry.
        if Arc::strong_count(flight) <= 2 {
            map.remove(key);
        }
    }
}

/// Renews the refresh lock while a provider call runs; stops when dropped.
struct Renewer(tokio::task::JoinHandle<()>);

impl Drop for Renewer {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// The access token to forward with, refreshed first if it is due. However many requests of
/// one session arrive at once, on however many instances, one of them refreshes; the others
/// wait and re-read the session.
///
/// The refresh runs in its own task: a browser that cancels its request after the provider
/// rotated the refresh token must not take the new tokens down with it.
pub async fn ensure_fresh(app: &Arc<App>, loaded: &mut Loaded) -> Result<Secret, Error> {
    let skew = i64::try_from(app.config.oidc.refresh_skew.as_secs()).unwrap_or(60);
    if !due(&loaded.session.tokens, skew, now()) {
        return Ok(loaded.session.tokens.access_token.clone());
    }
    let (app, mut owned) = (Arc::clone(app), loaded.clone());
    let task = tokio::spawn(async move {
        let flight = Flight::enter(&app.flights, &owned.key);
        let result = {
            let _one_at_a_time = flight.mutex.lock().await;
            refresh_in_flight(&app, &mut owned, skew).await
        };
        drop(flight);
        (result, owned)
    });
    match task.await {
        Ok((result, owned)) => {
            *loaded = owned;
            result
        }
        Err(e) => Err(Error::RefreshUnavailable(format!(
            "refresh task failed: {e}"
        ))),
    }
}

/// A place in a session's single flight; leaving happens on drop, whatever the outcome.
struct Flight<'a> {
    flights: &'a Flights,
    key: String,
    mutex: Arc<tokio::sync::Mutex<()>>,
}

impl<'a> Flight<'a> {
    fn enter(flights: &'a Flights, key: &str) -> Self {
        Flight {
            flights,
            key: key.to_owned(),
            mutex: flights.enter(key),
        }
    }
}

impl Drop for Flight<'_> {
    fn drop(&mut self) {
        self.flights.leave(&self.key, &self.mutex);
    }
}

async fn reload(app: &App, loaded: &mut Loaded) -> Result<(), Error> {
    *loaded = app
        .sessions
        .reload(loaded)
        .await?
        .ok_or(Error::Unauthenticated)?;
    Ok(())
}

async fn refresh_in_flight(app: &App, loaded: &mut Loaded, skew: i64) -> Result<Secret, Error> {
    // A request of this instance may have refreshed while we waited for the flight.
    reload(app, loaded).await?;
    if !due(&loaded.session.tokens, skew, now()) {
        return Ok(loaded.session.tokens.access_token.clone());
    }
    let store = &app.sessions.store;
    let lock_key = Sessions::refresh_lock_key(loaded);
    let owner = random_token();
    let lease = app.config.session.refresh_lock_lease;
    let deadline = Instant::now() + lease + app.config.oidc.timeout;
    while !store.try_lock(&lock_key, &owner, lease).await? {
        // Another instance is refreshing: wait for its tokens instead of refreshing again.
        tokio::time::sleep(LOCK_POLL).await;
        reload(app, loaded).await?;
        if !due(&loaded.session.tokens, skew, now()) {
            return Ok(loaded.session.tokens.access_token.clone());
        }
        if Instant::now() > deadline {
            return keep_or_fail(loaded, "another instance holds the refresh lock".into());
        }
    }
    let renewer = {
        let (store, lock_key, owner) = (store.clone(), lock_key.clone(), owner.clone());
        Renewer(tokio::spawn(async move {
            loop {
                tokio::time::sleep(lease / 3).await;
                match store.renew_lock(&lock_key, &owner, lease).await {
                    Ok(true) => {}
                    Ok(false) => {
                        tracing::warn!("refresh lock lost while refreshing");
                        return;
                    }
                    Err(e) => tracing::warn!(error = %e, "could not renew the refresh lock"),
                }
            }
        }))
    };
    let result = refresh_locked(app, loaded, skew).await;
    drop(renewer);
    if let Err(e) = store.unlock(&lock_key, &owner).await {
        tracing::warn!(error = %e, "could not release the refresh lock; it expires with its lease");
    }
    result
}

/// Holding the lock: re-read (an instance may have finished just before we got it), then
/// refresh and store the new tokens.
async fn refresh_locked(app: &App, loaded: &mut Loaded, skew: i64) -> Result<Secret, Error> {
    reload(app, loaded).await?;
    if !due(&loaded.session.tokens, skew, now()) {
        return Ok(loaded.session.tokens.access_token.clone());
    }
    let Some(refresh_token) = loaded.session.tokens.refresh_token.clone() else {
        if now() < loaded.session.tokens.access_expires_at {
            return Ok(loaded.session.tokens.access_token.clone());
        }
        app.sessions.destroy(loaded).await?;
        tracing::info!("session ended: access token expired and there is no refresh token");
        return Err(Error::Unauthenticated);
    };
    match refresh(app, loaded, &refresh_token).await {
        Ok(tokens) => {
            if !app.sessions.write_tokens(loaded, tokens).await? {
                return Err(Error::Unauthenticated);
            }
            tracing::debug!("access token refreshed");
            Ok(loaded.session.tokens.access_token.clone())
        }
        Err(OidcError::TokenRejected(code)) if code == "invalid_grant" => {
            app.sessions.destroy(loaded).await?;
            tracing::info!("session ended: the provider refused the refresh token");
            Err(Error::Unauthenticated)
        }
        Err(e @ OidcError::InvalidIdToken(_)) => {
            app.sessions.destroy(loaded).await?;
            tracing::warn!(error = %e, "session ended: refreshed id token rejected");
            Err(Error::Unauthenticated)
        }
        Err(e) => keep_or_fail(loaded, e.to_string()),
    }
}

/// A transient failure: forward with the current token while it is valid, else 503.
fn keep_or_fail(loaded: &Loaded, why: String) -> Result<Secret, Error> {
    if now() < loaded.session.tokens.access_expires_at {
        tracing::warn!(error = %why, "refresh failed, forwarding with the current token");
        Ok(loaded.session.tokens.access_token.clone())
    } else {
        Err(Error::RefreshUnavailable(why))
    }
}

/// One refresh-token grant; returns the new token set.
async fn refresh(app: &App, loaded: &Loaded, refresh_token: &Secret) -> Result<Tokens, OidcError> {
    let provider = app.oidc.provider()?;
    let response = app.oidc.refresh_grant(&provider, refresh_token).await?;
    super::flow::check_bearer(response.token_type())?;
    let old = &loaded.session.tokens;
    let mut id_token = old.id_token.clone();
    if let Some(new_id) = response.id_token() {
        // A refreshed ID token carries no nonce (OIDC Core §12.2).
        let claims = app
            .oidc
            .verify_id_token(&provider, new_id, |_: Option<&Nonce>| Ok(()))
            .await?;
        if claims.subject().as_str() != loaded.session.sub {
            return Err(OidcError::InvalidIdToken(
                "refreshed id token has another sub".into(),
            ));
        }
        id_token = Some(Secret::new(new_id.to_string()));
    }
    Ok(tokens_from(&response, id_token, old.refresh_token.clone()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tokens(issued: i64, expires: i64) -> Tokens {
        Tokens {
            access_token: Secret::new("a"),
            issued_at: issued,
            access_expires_at: expires,
            refresh_token: None,
            id_token: None,
        }
    }

    #[test]
    fn refresh_is_due_within_the_skew_but_never_before_half_the_lifetime() {
        assert!(!due(&tokens(0, 3600), 60, 3500));
        assert!(due(&tokens(0, 3600), 60, 3541));
        // A 60 s token with a 60 s skew is refreshed after 30 s, not immediately.
        assert!(!due(&tokens(0, 60), 60, 10));
        assert!(due(&tokens(0, 60), 60, 30));
    }
}
