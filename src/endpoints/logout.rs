//! `/auth/logout` (the user's) and `/auth/backchannel-logout` (the provider's).
//!
//! Rules:
//! 1. Logout is `POST` with the anti-forgery header, or `GET` carrying this session's own
//!    `sid` handle (which a cross-site page cannot know). A `POST` answers JSON to script,
//!    which never sees a token; only a `GET`'s `Location` carries `id_token_hint`.
//! 2. Logout destroys the session, revokes its tokens, and clears our cookies.
//! 3. A back-channel logout token's `jti` is recorded atomically **before** anything is
//!    ended, so a replay ends nothing; when ending fails, the record is taken back, so the
//!    provider's retry is not refused as a replay.

use http::header::SET_COOKIE;
use http::{Method, Request, Response, StatusCode};
use hyper::body::Incoming;
use serde_json::json;

use super::query_param;
use crate::app::App;
use crate::cookie::{self, SameSite};
use crate::csrf;
use crate::error::Error;
use crate::oidc::OidcError;
use crate::pipeline::Ctx;
use crate::response::{self, Body};
use crate::telemetry::outcomes::{self, LogoutKind};

/// Largest back-channel logout request body read.
const MAX_LOGOUT_BODY: usize = crate::config::MAX_ENDPOINT_BODY as usize;

/// Constant-time equality for the logout handle.
fn same_handle(a: &str, b: &str) -> bool {
    a.len() == b.len()
        && a.bytes()
            .zip(b.bytes())
            .fold(0u8, |acc, (x, y)| acc | (x ^ y))
            == 0
}

pub(super) async fn logout(
    app: &App,
    req: &Request<Incoming>,
    ctx: &mut Ctx<'_>,
) -> Result<Response<Body>, Error> {
    let post = req.method() == Method::POST;
    if post {
        csrf::verify(req.headers(), &app.config().auth.csrf)?;
    }
    let sessions = &app.sessions;
    let loaded = match sessions.cookie_secret(&ctx.jar) {
        Some(secret) => sessions.load(secret, false).await?,
        None => None,
    };
    let target = match loaded {
        Some(loaded) => {
            ctx.session = true;
            if !post
                && !query_param(req, "sid")
                    .is_some_and(|sid| same_handle(&sid, loaded.session.handle.expose()))
            {
                return Err(Error::LogoutForbidden);
            }
            sessions.destroy(&loaded).await?;
            outcomes::logout(LogoutKind::User);
            crate::oidc::revoke::revoke_tokens(app, &loaded.session.tokens).await;
            tracing::info!("session ended by logout");
            let hint = if post {
                None
            } else {
                loaded.session.tokens.id_token.as_ref()
            };
            app.oidc.logout_url(hint)
        }
        None => app.oidc.settings.post_logout_redirect_uri.to_string(),
    };
    let mut res = if post {
        response::json(StatusCode::OK, &json!({ "redirect_to": target }))
    } else {
        response::redirect(&target)
    };
    let h = res.headers_mut();
    h.append(
        SET_COOKIE,
        cookie::clear_cookie(&sessions.cookie_name, sessions.same_site),
    );
    for (name, _) in ctx.jar.login_cookies() {
        h.append(SET_COOKIE, cookie::clear_cookie(name, SameSite::Lax));
    }
    Ok(res)
}

/// OIDC Back-Channel Logout: the provider tells us a session (`sid`) or a user (`sub`) logged
/// out. Server to server, so no browser checks apply; the signed token is the authentication.
pub(super) async fn backchannel_logout(
    app: &App,
    req: Request<Incoming>,
) -> Result<Response<Body>, Error> {
    use http_body_util::BodyExt as _;
    let body = http_body_util::Limited::new(req.into_body(), MAX_LOGOUT_BODY)
        .collect()
        .await
        .map_err(|_| OidcError::InvalidLogoutToken("unreadable or oversized body".into()))?
        .to_bytes();
    let mut tokens = url::form_urlencoded::parse(&body)
        .filter(|(k, _)| k == "logout_token")
        .map(|(_, v)| v);
    let (Some(token), None) = (tokens.next(), tokens.next()) else {
        return Err(OidcError::InvalidLogoutToken(
            "exactly one logout_token parameter is required".into(),
        )
        .into());
    };
    let claims = app.oidc.verify_logout_token(&token).await?;
    let sessions = &app.sessions;
    if !sessions
        .first_use_of_jti(&claims.jti, app.oidc.logout_token_max_age())
        .await?
    {
        return Err(OidcError::InvalidLogoutToken("jti replayed".into()).into());
    }
    let ended = match (&claims.sid, &claims.sub) {
        (Some(sid), _) => sessions.end_by_sid(sid).await,
        (None, Some(sub)) => sessions.end_by_sub(sub).await,
        (None, None) => Ok(0),
    };
    let ended = match ended {
        Ok(n) => n,
        Err(e) => {
            // Nothing may stay half-ended behind a "replayed" answer to the provider's retry.
            if let Err(forget) = sessions.forget_jti(&claims.jti).await {
                tracing::warn!(error = %forget, "could not take back the logout token's jti");
            }
            return Err(e.into());
        }
    };
    outcomes::logout(LogoutKind::BackChannel);
    tracing::info!(
        sessions = ended,
        by_sid = claims.sid.is_some(),
        "back-channel logout"
    );
    Ok(response::json(
        StatusCode::OK,
        &json!({ "sessions_ended": ended }),
    ))
}
