//! RFC 7009 token revocation at logout: the refresh token first (it is the long-lived one),
//! then the access token. Best effort: a provider that fails to revoke does not keep the
//! user logged in here, the session is already gone.

use openidconnect::core::CoreRevocableToken;
use openidconnect::{AccessToken, RefreshToken, RevocationUrl};

use crate::pipeline::App;
use crate::session::Tokens;

pub async fn revoke_tokens(app: &App, tokens: &Tokens) {
    let Ok(provider) = app.oidc.provider() else {
        return;
    };
    let Some(url) = provider.extra().revocation_endpoint.clone() else {
        return;
    };
    let client = provider
        .client
        .clone()
        .set_revocation_url(RevocationUrl::from_url(url));
    let mut revocable: Vec<(&str, CoreRevocableToken)> = Vec::with_capacity(2);
    if let Some(rt) = &tokens.refresh_token {
        revocable.push((
            "refresh_token",
            RefreshToken::new(rt.expose().to_owned()).into(),
        ));
    }
    revocable.push((
        "access_token",
        AccessToken::new(tokens.access_token.expose().to_owned()).into(),
    ));
    for (kind, token) in revocable {
        let result = match client.revoke_token(token) {
            Ok(request) => request
                .request_async(app.oidc.http())
                .await
                .map_err(|e| super::error_chain(&e)),
            Err(e) => Err(e.to_string()),
        };
        match result {
            Ok(()) => tracing::debug!(kind, "token revoked at the provider"),
            Err(e) => tracing::warn!(kind, error = %e, "provider did not revoke the token"),
        }
    }
}
