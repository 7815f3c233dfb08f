//! Keeping the access token fresh: refresh with the refresh token shortly before expiry.
//!
//! Rules:
//! 1. Refresh when the token expires within the skew (`oidc.refresh_skew`, never more than
//!    half the token's lifetime).
//! 2. `invalid_grant` ends the session (401). A provider that is down or slow keeps it: the
//!    old token is used while still valid, else 503 with `Retry-After`.
//! 3. A new ID token must pass validation and keep the same `iss`, `sub`, `aud` and (when
//!    both carry it) `auth_time` (OIDC Core §12.2), else the session ends; its user claims
//!    replace the session's.
//! 4. Single flight everywhere: one refresh per session in this process (`Flights`), and across
//!    instances a claim written into the session record by compare-and-set. Only the claim's
//!    holder presents the refresh token, and only while the claim holds: its lease is longer
//!    than one provider call plus the token write (config validation enforces it). A crashed
//!    holder blocks nobody longer than the lease.
//! 5. New tokens are written by compare-and-set on the record version the holder claimed; a
//!    write never lands over tokens written after it. A store that fails meanwhile is retried
//!    until the claim runs out. Tokens that cannot be stored (the session ended meanwhile, or
//!    the write was overtaken) are revoked at the provider.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use openidconnect::Nonce;

use super::OidcError;
use super::flow::{identity, tokens_from};
use crate::app::App;
use crate::error::Error;
use crate::secret::Secret;
use crate::session::{Identity, Loaded, Session, TokenWrite, Tokens, now_ms, random_token};
use crate::telemetry::outcomes::{self, RefreshResult};
use crate::telemetry::trace;

/// How often a request waiting for another instance's refresh re-reads the session.
const CLAIM_POLL: Duration = Duration::from_millis(50);
/// First and longest delay between retries of a token write the store refused.
const WRITE_RETRY_FIRST: Duration = Duration::from_millis(50);
const WRITE_RETRY_MAX: Duration = Duration::from_millis(500);

/// Whether the access token is due for refresh at `now`.
pub fn due(tokens: &Tokens, skew_ms: i64, now_ms: i64) -> bool {
    let lifetime = (tokens.access_expires_at_ms - tokens.issued_at_ms).max(0);
    now_ms >= tokens.access_expires_at_ms - skew_ms.min(lifetime / 2)
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

/// Makes the session's access token fit to forward: refreshed first if it is due. However
/// many requests of one session arrive at once, on however many instances, one of them
/// refreshes; the others wait and re-read the session.
///
/// The refresh runs in its own task: a browser that cancels its request after the provider
/// rotated the refresh token must not take the new tokens down with it.
pub async fn ensure_fresh(app: &Arc<App>, loaded: &mut Loaded) -> Result<(), Error> {
    let skew = i64::try_from(app.config().oidc.refresh_skew.as_millis()).unwrap_or(60_000);
    if !due(&loaded.session.tokens, skew, now_ms()) {
        return Ok(());
    }
    let (app, mut owned) = (Arc::clone(app), loaded.clone());
    let task = tokio::spawn(trace::carry(async move {
        let flight = Flight::enter(&app.flights, &owned.key);
        let mut outcome = None;
        let result = {
            let _one_at_a_time = flight.mutex.lock().await;
            refresh_in_flight(&app, &mut owned, skew, &mut outcome).await
        };
        drop(flight);
        outcomes::refresh(outcome.unwrap_or_else(|| match &result {
            Ok(_) => RefreshResult::Ok,
            Err(e) => RefreshResult::of_error(e),
        }));
        (result, owned)
    }));
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

/// `outcome` is set where the result alone does not tell how the refresh ended.
async fn refresh_in_flight(
    app: &Arc<App>,
    loaded: &mut Loaded,
    skew: i64,
    outcome: &mut Option<RefreshResult>,
) -> Result<(), Error> {
    let owner = random_token();
    let lease = app.config().session.refresh_lock_lease;
    // Waiting for another holder is bounded by what one refresh may take; past that the
    // current token is used while valid, else 503, and a later request waits again.
    let give_up =
        Instant::now() + app.config().oidc.timeout + app.config().session.store_timeout * 2;
    loop {
        // A request of this instance, or another instance, may have refreshed meanwhile.
        reload(app, loaded).await?;
        if !due(&loaded.session.tokens, skew, now_ms()) {
            *outcome = Some(RefreshResult::LockWait);
            return Ok(());
        }
        let held_by_other = loaded
            .session
            .refresh_claim
            .as_ref()
            .is_some_and(|c| c.owner != owner && c.until_ms > now_ms());
        if held_by_other {
            if Instant::now() > give_up {
                *outcome = Some(RefreshResult::LockTimeout);
                return keep_or_fail(loaded, "another instance holds the refresh claim".into());
            }
            tokio::time::sleep(CLAIM_POLL).await;
            continue;
        }
        if app.sessions.claim_refresh(loaded, &owner, lease).await? {
            break;
        }
    }
    refresh_claimed(app, loaded, &owner, outcome).await
}

/// Holding the claim: present the refresh token once and store what comes back.
async fn refresh_claimed(
    app: &Arc<App>,
    loaded: &mut Loaded,
    owner: &str,
    outcome: &mut Option<RefreshResult>,
) -> Result<(), Error> {
    let Some(refresh_token) = loaded.session.tokens.refresh_token.clone() else {
        *outcome = Some(RefreshResult::NoRefreshToken);
        if now_ms() < loaded.session.tokens.access_expires_at_ms {
            app.sessions.release_refresh(loaded, owner).await;
            return Ok(());
        }
        app.sessions.destroy(loaded).await?;
        tracing::info!("session ended: access token expired and there is no refresh token");
        return Err(Error::Unauthenticated);
    };
    match refresh(app, &loaded.session, &refresh_token).await {
        Ok(refreshed) => store(app, loaded, owner, &refresh_token, refreshed, outcome).await,
        Err(OidcError::TokenRejected(code)) if code == "invalid_grant" => {
            *outcome = Some(RefreshResult::InvalidGrant);
            app.sessions.destroy(loaded).await?;
            tracing::info!("session ended: the provider refused the refresh token");
            Err(Error::Unauthenticated)
        }
        Err(e @ OidcError::InvalidIdToken(_)) => {
            *outcome = Some(RefreshResult::IdTokenRejected);
            app.sessions.destroy(loaded).await?;
            tracing::warn!(error = %e, "session ended: refreshed id token rejected");
            Err(Error::Unauthenticated)
        }
        Err(e) => {
            *outcome = Some(RefreshResult::ProviderError);
            app.sessions.release_refresh(loaded, owner).await;
            keep_or_fail(loaded, e.to_string())
        }
    }
}

/// Writes the refreshed tokens under the claim, retrying a failing store while the claim
/// holds. Tokens that end up stored nowhere are revoked.
async fn store(
    app: &Arc<App>,
    loaded: &mut Loaded,
    owner: &str,
    presented: &Secret,
    refreshed: Refreshed,
    outcome: &mut Option<RefreshResult>,
) -> Result<(), Error> {
    // The write must land while no other instance could take over, clock margin included.
    let margin = i64::try_from(app.config().session.refresh_lease_margin.as_millis()).unwrap_or(0);
    let deadline_ms = loaded
        .session
        .refresh_claim
        .as_ref()
        .map_or(0, |c| c.until_ms - margin);
    let apply = |s: &mut Session| {
        s.tokens = refreshed.tokens.clone();
        if let Some(identity) = &refreshed.identity {
            s.claims.clone_from(&identity.claims);
        }
    };
    let mut delay = WRITE_RETRY_FIRST;
    loop {
        match app.sessions.write_tokens(loaded, owner, apply).await {
            Ok(TokenWrite::Written) => {
                tracing::debug!("access token refreshed");
                return Ok(());
            }
            Ok(TokenWrite::Gone) => {
                *outcome = Some(RefreshResult::SessionEnded);
                tracing::info!("session ended while refreshing; revoking the new tokens");
                revoke_in_background(app, orphaned(&refreshed.tokens, presented));
                return Err(Error::Unauthenticated);
            }
            Ok(TokenWrite::Lost) => {
                *outcome = Some(RefreshResult::Overtaken);
                tracing::warn!("refreshed tokens were overtaken by a newer write; revoking ours");
                let mut ours = orphaned(&refreshed.tokens, presented);
                if ours.refresh_token == loaded.session.tokens.refresh_token {
                    ours.refresh_token = None;
                }
                revoke_in_background(app, ours);
                return Ok(());
            }
            Err(e) if now_ms() + delay_ms(delay) < deadline_ms => {
                tracing::warn!(error = %e, "could not store refreshed tokens; retrying");
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(WRITE_RETRY_MAX);
            }
            Err(e) => {
                *outcome = Some(RefreshResult::StoreError);
                tracing::warn!(error = %e, "refreshed tokens could not be stored in time; revoking them");
                revoke_in_background(app, orphaned(&refreshed.tokens, presented));
                return Err(e.into());
            }
        }
    }
}

fn delay_ms(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

/// The tokens a refresh minted that belong to nobody: the new access token, and the new
/// refresh token when the provider rotated it (a non-rotated one is still the session's).
fn orphaned(minted: &Tokens, presented: &Secret) -> Tokens {
    let mut t = minted.clone();
    if t.refresh_token.as_ref() == Some(presented) {
        t.refresh_token = None;
    }
    t.id_token = None;
    t
}

fn revoke_in_background(app: &Arc<App>, tokens: Tokens) {
    let app = Arc::clone(app);
    tokio::spawn(trace::carry(async move {
        super::revoke::revoke_tokens(&app, &tokens).await;
    }));
}

/// A transient failure: forward with the current token while it is valid, else 503.
fn keep_or_fail(loaded: &Loaded, why: String) -> Result<(), Error> {
    if now_ms() < loaded.session.tokens.access_expires_at_ms {
        tracing::warn!(error = %why, "refresh failed, forwarding with the current token");
        Ok(())
    } else {
        Err(Error::RefreshUnavailable(why))
    }
}

/// What one refresh-token grant returned.
struct Refreshed {
    tokens: Tokens,
    /// Who the new ID token says the user is, when the response carried one.
    identity: Option<Identity>,
}

/// One refresh-token grant; returns the new token set.
async fn refresh(
    app: &App,
    session: &Session,
    refresh_token: &Secret,
) -> Result<Refreshed, OidcError> {
    let provider = app.oidc.provider()?;
    let response = app.oidc.refresh_grant(&provider, refresh_token).await?;
    super::flow::check_bearer(response.token_type())?;
    let old = &session.tokens;
    let mut id_token = old.id_token.clone();
    let mut identity_update = None;
    if let Some(new_id) = response.id_token() {
        // A refreshed ID token carries no nonce (OIDC Core §12.2).
        let claims = app
            .oidc
            .verify_id_token(&provider, new_id, |_: Option<&Nonce>| Ok(()))
            .await?;
        let jwt = new_id.to_string();
        let new = identity(&claims, &jwt);
        same_identity(session, &new)?;
        id_token = Some(Secret::new(jwt));
        identity_update = Some(new);
    }
    Ok(Refreshed {
        tokens: tokens_from(&response, id_token, old.refresh_token.clone()),
        identity: identity_update,
    })
}

/// OIDC Core §12.2: a refreshed ID token is about the same login (`iss` is checked by the
/// verifier against the configured issuer).
fn same_identity(session: &Session, new: &Identity) -> Result<(), OidcError> {
    let refuse = |why: &str| {
        Err(OidcError::InvalidIdToken(format!(
            "refreshed id token {why}"
        )))
    };
    if new.sub != session.sub {
        return refuse("has another sub");
    }
    let as_set = |v: &[String]| v.iter().cloned().collect::<std::collections::BTreeSet<_>>();
    if !session.aud.is_empty() && as_set(&session.aud) != as_set(&new.aud) {
        return refuse("has another aud");
    }
    if let (Some(old), Some(new)) = (session.auth_time, new.auth_time)
        && old != new
    {
        return refuse("has another auth_time");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tokens(issued: i64, expires: i64) -> Tokens {
        Tokens {
            access_token: Secret::new("a"),
            issued_at_ms: issued,
            access_expires_at_ms: expires,
            refresh_token: None,
            id_token: None,
            bearer: Default::default(),
        }
    }

    #[test]
    fn refresh_is_due_within_the_skew_but_never_before_half_the_lifetime() {
        assert!(!due(&tokens(0, 3_600_000), 60_000, 3_500_000));
        assert!(due(&tokens(0, 3_600_000), 60_000, 3_541_000));
        // A 60 s token with a 60 s skew is refreshed after 30 s, not immediately.
        assert!(!due(&tokens(0, 60_000), 60_000, 10_000));
        assert!(due(&tokens(0, 60_000), 60_000, 30_000));
        // A 2 s token is due after exactly 1 s, not up to a second early or late.
        assert!(!due(&tokens(5_000, 7_000), 60_000, 5_999));
        assert!(due(&tokens(5_000, 7_000), 60_000, 6_000));
    }
}
