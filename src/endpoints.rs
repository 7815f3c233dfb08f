//! Gatehouse's own endpoints: `/healthz`, `/readyz`, and under the auth prefix `login`,
//! `callback`, `user` and `logout`.
//!
//! Rules:
//! 1. Only `/auth/login` starts a login; API routes answer 401 and set no cookie.
//! 2. A login always ends in a **new** session; a session the browser had before is destroyed.
//! 3. `/auth/user` never returns a token, and passes the anti-forgery check first.
//! 4. Logout is `POST` with the anti-forgery header, or `GET` carrying this session's own
//!    `sid` handle (which a cross-site page cannot know).

use http::header::SET_COOKIE;
use http::{Method, Request, Response, StatusCode};
use hyper::body::Incoming;
use serde_json::json;

use crate::app::App;
use crate::cookie::{self, SameSite};
use crate::csrf;
use crate::error::Error;
use crate::oidc::{CallbackParams, OidcError};
use crate::pipeline::Ctx;
use crate::redirect::safe_return_to;
use crate::response::{self, Body};
use crate::session::LOGIN_TTL;

/// Answers the request if it is for one of our endpoints; otherwise hands it back.
pub async fn dispatch<'a>(
    app: &'a App,
    req: Request<Incoming>,
    ctx: &mut Ctx<'a>,
) -> Result<Result<Response<Body>, Request<Incoming>>, Error> {
    let path = req.uri().path();
    let name = match path {
        "/healthz" => "healthz",
        "/readyz" => "readyz",
        _ => match path.strip_prefix(app.config.auth.prefix.as_str()) {
            Some("/login") => "login",
            Some("/callback") => "callback",
            Some("/user") => "user",
            Some("/logout") => "logout",
            Some("/backchannel-logout") => "backchannel-logout",
            Some(rest) if rest.is_empty() || rest.starts_with('/') => return Err(Error::NoRoute),
            _ => return Ok(Err(req)),
        },
    };
    ctx.route = name;
    let get = matches!(*req.method(), Method::GET | Method::HEAD);
    let res = match name {
        "healthz" if get => response::json(StatusCode::OK, &json!({"status": "ok"})),
        "readyz" if get => readyz(app).await,
        "login" if get => login(app, &req, ctx).await?,
        "callback" if get => callback(app, &req, ctx).await?,
        "user" if get => user(app, &req, ctx).await?,
        "logout" if get || req.method() == Method::POST => logout(app, &req, ctx).await?,
        "backchannel-logout" if req.method() == Method::POST => {
            backchannel_logout(app, req).await?
        }
        _ => return Err(Error::MethodNotAllowed),
    };
    Ok(Ok(res))
}

fn query_param(req: &Request<Incoming>, name: &str) -> Option<String> {
    url::form_urlencoded::parse(req.uri().query()?.as_bytes())
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.into_owned())
}

async fn readyz(app: &App) -> Response<Body> {
    let store = app.sessions.store.ping().await;
    let provider = app.oidc.is_ready();
    let ok = store.is_ok() && provider;
    let status = if ok {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    let mut body = json!({
        "status": if ok { "ready" } else { "not_ready" },
        "store": if store.is_ok() { "ok" } else { "unreachable" },
        "provider": if provider { "ok" } else { "metadata not loaded" },
    });
    if let Err(e) = &store {
        // The cause by name only; the detail is in the log (a probe runs every few seconds).
        body["store_error"] = json!(e.cause());
        tracing::debug!(error = %e, "readiness: session store not usable");
    }
    response::json(status, &body)
}

async fn login(app: &App, req: &Request<Incoming>, ctx: &Ctx<'_>) -> Result<Response<Body>, Error> {
    let return_to = safe_return_to(
        query_param(req, "return_to").as_deref(),
        &app.config.server.public_origin,
    );
    let sessions = &app.sessions;
    // Tabs logging in at once share one binding key, so every one of them can finish.
    let binding = sessions
        .login_binding(&ctx.jar)
        .unwrap_or_else(|| zeroize::Zeroizing::new(cookie::random_key()));
    let start = app.oidc.start_login(return_to)?;
    sessions
        .put_login(&binding, &start.state, &start.txn)
        .await?;
    let mut res = response::redirect(start.url.as_str());
    let value = sessions.login_cookie_value(&binding);
    res.headers_mut().append(
        SET_COOKIE,
        cookie::set_cookie(
            &sessions.login_cookie_name,
            &value,
            SameSite::Lax,
            Some(LOGIN_TTL),
        ),
    );
    Ok(res)
}

async fn callback(
    app: &App,
    req: &Request<Incoming>,
    ctx: &mut Ctx<'_>,
) -> Result<Response<Body>, Error> {
    let params = CallbackParams::parse(req.uri().query())?;
    let sessions = &app.sessions;
    let binding = sessions.login_binding(&ctx.jar);
    let state = params
        .state
        .as_deref()
        .ok_or(OidcError::MissingParam("state"))?;
    let txn = sessions.take_login(binding.as_deref(), state).await?;
    if let Some(code) = params.error {
        // The transaction (if any) is consumed above: an error response ends that login.
        let code = if code.bytes().all(|b| b.is_ascii_lowercase() || b == b'_') {
            code
        } else {
            "invalid".into()
        };
        return Err(OidcError::ProviderRefused { code }.into());
    }
    let txn = txn.ok_or(OidcError::UnknownState)?;
    app.oidc.check_response_issuer(params.iss.as_deref())?;
    let code = params.code.ok_or(OidcError::MissingParam("code"))?;
    let result = app.oidc.finish_login(code, &txn).await?;

    // Never carry a pre-login session over: destroy whatever the browser had.
    if let Some(secret) = sessions.cookie_secret(&ctx.jar) {
        ctx.session = true;
        if let Some(old) = sessions.load(secret, false).await? {
            sessions.destroy(&old).await?;
        }
    }
    let session = sessions.new_session(result.sub, result.sid, result.claims, result.tokens);
    let value = sessions.create(&session).await?;
    tracing::info!("login completed, new session created");

    let target = txn.return_to;
    let mut res = match sessions.same_site {
        SameSite::Lax => response::redirect(&target),
        // The provider's redirect to us is cross-site, so a Strict cookie set now would not be
        // sent if we redirected straight on; a same-origin navigation from this page sends it.
        SameSite::Strict => {
            let href = response::escape(&target);
            let mut res = response::html(
                StatusCode::OK,
                format!(
                    "<!doctype html><html><head><meta charset=\"utf-8\"><meta http-equiv=\"refresh\" content=\"0;url={href}\">\
                     <title>Signed in</title></head><body><p>Signed in. <a href=\"{href}\">Continue</a></p></body></html>"
                ),
            );
            res.headers_mut().insert(
                "referrer-policy",
                http::HeaderValue::from_static("no-referrer"),
            );
            res
        }
    };
    res.headers_mut().append(
        SET_COOKIE,
        cookie::set_cookie(
            &sessions.cookie_name,
            &value,
            sessions.same_site,
            Some(sessions.max_lifetime),
        ),
    );
    Ok(res)
}

async fn user(
    app: &App,
    req: &Request<Incoming>,
    ctx: &mut Ctx<'_>,
) -> Result<Response<Body>, Error> {
    csrf::verify(req.headers(), &app.config.auth.csrf)?;
    let slide = query_param(req, "slide").is_none_or(|v| v != "false");
    let sessions = &app.sessions;
    let secret = sessions
        .cookie_secret(&ctx.jar)
        .ok_or(Error::Unauthenticated)?;
    let loaded = sessions
        .load(secret, slide)
        .await?
        .ok_or(Error::Unauthenticated)?;
    ctx.session = true;
    let s = &loaded.session;
    let logout_url = format!("{}/logout?sid={}", app.config.auth.prefix, s.handle);
    Ok(response::json(
        StatusCode::OK,
        &json!({
            "sub": s.sub,
            "claims": s.claims,
            "expires_at": s.expires_at_ms / 1000,
            "idle_expires_at": loaded.idle_expires_at_ms(sessions.idle) / 1000,
            "logout_url": logout_url,
        }),
    ))
}

/// Largest back-channel logout request body read.
const MAX_LOGOUT_BODY: usize = 64 * 1024;

/// OIDC Back-Channel Logout: the provider tells us a session (`sid`) or a user (`sub`) logged
/// out. Server to server, so no browser checks apply; the signed token is the authentication.
async fn backchannel_logout(app: &App, req: Request<Incoming>) -> Result<Response<Body>, Error> {
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
    // End first, record the jti after: ending is idempotent, so a provider retrying after a
    // store failure still gets its sessions ended instead of a "replayed" refusal.
    let ended = match (&claims.sid, &claims.sub) {
        (Some(sid), _) => app.sessions.end_by_sid(sid).await?,
        (None, Some(sub)) => app.sessions.end_by_sub(sub).await?,
        (None, None) => 0,
    };
    if !app
        .sessions
        .first_use_of_jti(&claims.jti, app.oidc.logout_token_max_age())
        .await?
    {
        return Err(OidcError::InvalidLogoutToken("jti replayed".into()).into());
    }
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

/// Constant-time equality for the logout handle.
fn same_handle(a: &str, b: &str) -> bool {
    a.len() == b.len()
        && a.bytes()
            .zip(b.bytes())
            .fold(0u8, |acc, (x, y)| acc | (x ^ y))
            == 0
}

async fn logout(
    app: &App,
    req: &Request<Incoming>,
    ctx: &mut Ctx<'_>,
) -> Result<Response<Body>, Error> {
    let post = req.method() == Method::POST;
    if post {
        csrf::verify(req.headers(), &app.config.auth.csrf)?;
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
                    .is_some_and(|sid| same_handle(&sid, &loaded.session.handle))
            {
                return Err(Error::LogoutForbidden);
            }
            sessions.destroy(&loaded).await?;
            crate::oidc::revoke::revoke_tokens(app, &loaded.session.tokens).await;
            tracing::info!("session ended by logout");
            // A GET is a top-level navigation: the hint travels in a Location header no script
            // can read. A POST answers JSON to script, which must never see a token.
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
    h.append(
        SET_COOKIE,
        cookie::clear_cookie(&sessions.login_cookie_name, SameSite::Lax),
    );
    Ok(res)
}
