//! Gatehouse's own endpoints: `/healthz`, `/readyz`, and under the auth prefix `login` and
//! `callback` (`login.rs`), `logout` and `backchannel-logout` (`logout.rs`), and `user`.
//!
//! Rules:
//! 1. Only `/auth/login` starts a login; API routes answer 401 and set no cookie.
//! 2. `/auth/user` never returns a token, and passes the anti-forgery check first.

mod login;
mod logout;

pub use login::CallbacksInFlight;

use http::{Method, Request, Response, StatusCode};
use hyper::body::Incoming;
use serde_json::json;

use crate::app::App;
use crate::config::MAX_ENDPOINT_BODY;
use crate::csrf;
use crate::error::Error;
use crate::pipeline::{ClientRequest, Ctx};
use crate::ratelimit::Budget;
use crate::response::{self, Body};
use crate::telemetry::outcomes;

/// Whether [`dispatch`] may answer a request for `path`; it hands back all others unseen,
/// so the request path can skip it (and the room its future takes).
pub fn may_answer(app: &App, path: &str) -> bool {
    matches!(path, "/healthz" | "/readyz") || path.starts_with(app.config().auth.prefix.as_str())
}

/// Answers the request if it is for one of our endpoints; otherwise hands it back.
pub async fn dispatch<'a>(
    app: &App,
    req: ClientRequest,
    ctx: &mut Ctx<'a>,
) -> Result<Result<Response<Body>, ClientRequest>, Error> {
    let path = req.uri().path();
    let name = match path {
        "/healthz" => "healthz",
        "/readyz" => "readyz",
        _ => match path.strip_prefix(app.config().auth.prefix.as_str()) {
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
    // Only the back-channel logout reads a body, and a small one.
    if crate::proxy::stream::declared_length(req.headers()).is_some_and(|n| n > MAX_ENDPOINT_BODY) {
        return Err(Error::BodyTooLarge(MAX_ENDPOINT_BODY));
    }
    let budget = match name {
        "login" => Some(Budget::LoginStart),
        "callback" => Some(Budget::Callback),
        _ => None,
    };
    if let Some(budget) = budget {
        app.login_limits
            .load()
            .check(budget, ctx.client.ip)
            .map_err(Error::RateLimited)?;
    }
    let get = matches!(*req.method(), Method::GET | Method::HEAD);
    let res = match name {
        "healthz" if get => response::json(StatusCode::OK, &json!({"status": "ok"})),
        "readyz" if get => readyz(app).await,
        "login" if get => counted(login::login(app, &req, ctx).await, outcomes::login_started)?,
        "callback" if get => counted(
            login::callback(app, &req, ctx).await,
            outcomes::login_completed,
        )?,
        "user" if get => user(app, &req, ctx).await?,
        "logout" if get || req.method() == Method::POST => logout::logout(app, &req, ctx).await?,
        "backchannel-logout" if req.method() == Method::POST => {
            logout::backchannel_logout(app, *req).await?
        }
        _ => return Err(Error::MethodNotAllowed),
    };
    Ok(Ok(res))
}

/// Counts a login step: `ok` when it succeeded, else its failure class.
fn counted(result: Result<Response<Body>, Error>, ok: fn()) -> Result<Response<Body>, Error> {
    match &result {
        Ok(_) => ok(),
        Err(e) => outcomes::login_failed(e),
    }
    result
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

async fn user(
    app: &App,
    req: &Request<Incoming>,
    ctx: &mut Ctx<'_>,
) -> Result<Response<Body>, Error> {
    csrf::verify(req.headers(), &app.config().auth.csrf)?;
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
    let logout_url = format!(
        "{}/logout?sid={}",
        app.config().auth.prefix,
        s.handle.expose()
    );
    Ok(response::json(
        StatusCode::OK,
        &json!({
            "sub": s.sub,
            "claims": s.claims,
            "expires_at": s.expires_at_ms / 1000,
            "idle_expires_at": loaded.idle_expires_at_ms(sessions.idle()) / 1000,
            "logout_url": logout_url,
        }),
    ))
}
