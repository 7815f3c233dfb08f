//! RFC 7009 token revocation at logout: the refresh token first (it is the long-lived one),
//! then the access token. Best effort: the session is already gone when this runs, so a
//! provider that fails to revoke is logged, not shown to the user.
//! (Hand-written because the `oauth2` crate refuses `http://` revocation endpoints, which
//! development providers on localhost use; config validation allows those only on loopback.)

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;

use crate::app::App;
use crate::config::TokenEndpointAuth;
use crate::session::Tokens;

fn form_encode(s: &str) -> String {
    url::form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

pub async fn revoke_tokens(app: &App, tokens: &Tokens) {
    let Ok(provider) = app.oidc.provider() else {
        return;
    };
    let Some(url) = provider.extra().revocation_endpoint.clone() else {
        return;
    };
    let settings = &app.oidc.settings;
    let mut revocable = Vec::with_capacity(2);
    if let Some(rt) = &tokens.refresh_token {
        revocable.push(("refresh_token", rt.expose()));
    }
    revocable.push(("access_token", tokens.access_token.expose()));
    for (kind, token) in revocable {
        let mut form: Vec<(&str, &str)> = vec![("token", token), ("token_type_hint", kind)];
        let mut request = app.oidc.http().post(url.clone());
        match settings.token_endpoint_auth {
            TokenEndpointAuth::ClientSecretBasic => {
                // RFC 6749 §2.3.1: form-encode both parts before base64.
                let pair = format!(
                    "{}:{}",
                    form_encode(&settings.client_id),
                    form_encode(settings.client_secret.expose())
                );
                request =
                    request.header("authorization", format!("Basic {}", STANDARD.encode(pair)));
            }
            TokenEndpointAuth::ClientSecretPost => {
                form.push(("client_id", &settings.client_id));
                form.push(("client_secret", settings.client_secret.expose()));
            }
        }
        match request.form(&form).send().await {
            Ok(res) if res.status().is_success() => {
                tracing::debug!(kind, "token revoked at the provider")
            }
            Ok(res) => tracing::warn!(
                kind,
                status = res.status().as_u16(),
                "provider refused to revoke the token"
            ),
            Err(e) => {
                tracing::warn!(kind, error = %super::error_chain(&e), "could not reach the revocation endpoint")
            }
        }
    }
}
