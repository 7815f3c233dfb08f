//! RFC 7009 token revocation at logout: the refresh token first (it is the long-lived one),
//! then the access token. Best effort: the session is already gone when this runs, so a
//! provider that fails to revoke is logged, not shown to the user. Without a revocation
//! endpoint (Entra ID, Cognito unless `oidc.revocation_endpoint` is set) logout just ends the
//! local session. Client authentication is the token endpoint's (`token.rs`).

use crate::app::App;
use crate::session::Tokens;

pub async fn revoke_tokens(app: &App, tokens: &Tokens) {
    let Ok(provider) = app.oidc.provider() else {
        return;
    };
    let Some(url) = provider.endpoints.revocation.clone() else {
        tracing::debug!("the provider has no revocation endpoint; tokens are not revoked");
        return;
    };
    let mut revocable = Vec::with_capacity(2);
    if let Some(rt) = &tokens.refresh_token {
        revocable.push(("refresh_token", rt.expose()));
    }
    revocable.push(("access_token", tokens.access_token.expose()));
    for (kind, token) in revocable {
        let mut form: Vec<(&str, &str)> = vec![("token", token), ("token_type_hint", kind)];
        let request = app
            .oidc
            .client_auth(app.oidc.http().post(url.clone()), &mut form);
        match super::net::send(request.form(&form), "revocation").await {
            Ok(res) if res.status.is_success() => {
                tracing::debug!(kind, "token revoked at the provider")
            }
            Ok(res) => tracing::warn!(
                kind,
                status = res.status.as_u16(),
                "provider refused to revoke the token"
            ),
            Err(e) => {
                tracing::warn!(kind, error = %e, "could not reach the revocation endpoint")
            }
        }
    }
}
