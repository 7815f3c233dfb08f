//! Keeping the access token fresh: refresh with the refresh token shortly before expiry.
//!
//! Rules:
//! 1. Refresh when the token expires within the skew (`oidc.refresh_skew`, never more than
//!    half the token's lifetime).
//! 2. `invalid_grant` ends the session (401). A provider that is down or slow keeps it: the
//!    old token is used while still valid, else 503 with `Retry-After`.
//! 3. A new ID token must pass validation and keep the same `iss` and `sub`, else the session ends.

use openidconnect::{Nonce, OAuth2TokenResponse, RefreshToken, TokenResponse};

use super::OidcError;
use super::flow::{DEFAULT_EXPIRES_IN, token_error};
use crate::error::Error;
use crate::pipeline::App;
use crate::secret::Secret;
use crate::session::{Loaded, Tokens, now};

/// Whether the access token is due for refresh at `now`.
pub fn due(tokens: &Tokens, skew: i64, now: i64) -> bool {
    let lifetime = (tokens.access_expires_at - tokens.issued_at).max(0);
    now >= tokens.access_expires_at - skew.min(lifetime / 2)
}

/// The access token to forward with, refreshed first if it is due.
pub async fn ensure_fresh(app: &App, loaded: &mut Loaded) -> Result<Secret, Error> {
    let skew = i64::try_from(app.config.oidc.refresh_skew.as_secs()).unwrap_or(60);
    let now = now();
    if !due(&loaded.session.tokens, skew, now) {
        return Ok(loaded.session.tokens.access_token.clone());
    }
    let still_valid = now < loaded.session.tokens.access_expires_at;
    let Some(refresh_token) = loaded.session.tokens.refresh_token.clone() else {
        if still_valid {
            return Ok(loaded.session.tokens.access_token.clone());
        }
        app.sessions.destroy(loaded).await?;
        tracing::info!("session ended: access token expired and there is no refresh token");
        return Err(Error::Unauthenticated);
    };
    match refresh(app, loaded, &refresh_token).await {
        Ok(tokens) => {
            loaded.session.tokens = tokens;
            app.sessions.update(loaded).await?;
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
        Err(e) if still_valid => {
            tracing::warn!(error = %e, "refresh failed, forwarding with the current token");
            Ok(loaded.session.tokens.access_token.clone())
        }
        Err(e) => Err(Error::RefreshUnavailable(e.to_string())),
    }
}

/// One refresh-token grant; returns the new token set.
async fn refresh(app: &App, loaded: &Loaded, refresh_token: &Secret) -> Result<Tokens, OidcError> {
    let provider = app.oidc.provider()?;
    let response = provider
        .client
        .exchange_refresh_token(&RefreshToken::new(refresh_token.expose().to_owned()))
        .request_async(app.oidc.http())
        .await
        .map_err(token_error)?;
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
    let now = now();
    let expires_in = response
        .expires_in()
        .and_then(|d| i64::try_from(d.as_secs()).ok())
        .unwrap_or(DEFAULT_EXPIRES_IN);
    Ok(Tokens {
        access_token: Secret::new(response.access_token().secret().clone()),
        issued_at: now,
        access_expires_at: now.saturating_add(expires_in),
        refresh_token: response
            .refresh_token()
            .map(|t| Secret::new(t.secret().clone()))
            .or_else(|| old.refresh_token.clone()),
        id_token,
    })
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
