//! `/auth/login` and `/auth/callback`: the authorization-code flow as the browser sees it.
//!
//! Rules:
//! 1. `/auth/login` writes nothing to the store: the transaction travels in its own sealed
//!    login cookie (see `session::login`), at most a few per browser.
//! 2. The callback finds the transaction by the `state` it carries, in this browser's cookies
//!    only: a callback from another browser, an expired or unknown state answer 400
//!    `login_expired` and create nothing.
//! 3. RFC 9207: the response's `iss` is checked before anything else it says, `error=`
//!    responses included (mix-up attacks on error responses).
//! 4. A `state` is used once: a state already completed is refused before the provider is
//!    asked again (a replayed code could make it revoke the first login's tokens), and the
//!    completion record is written after the code exchange succeeded, first writer wins.
//! 5. The callback's response clears its login cookie, whatever the outcome.
//! 6. A login always ends in a **new** session; a session the browser had before is destroyed.

use std::collections::HashSet;
use std::sync::{Mutex, PoisonError};

use http::header::SET_COOKIE;
use http::{Request, Response, StatusCode};
use hyper::body::Incoming;

use super::query_param;
use crate::app::App;
use crate::cookie::{self, SameSite};
use crate::error::Error;
use crate::oidc::{CallbackParams, OidcError};
use crate::pipeline::Ctx;
use crate::redirect::safe_return_to;
use crate::response::{self, Body};
use crate::session::LOGIN_TTL;

pub(super) async fn login(
    app: &App,
    req: &Request<Incoming>,
    ctx: &Ctx<'_>,
) -> Result<Response<Body>, Error> {
    let return_to = safe_return_to(
        query_param(req, "return_to").as_deref(),
        &app.config().server.public_origin,
    );
    let sessions = &app.sessions;
    let start = app.oidc.start_login(return_to)?;
    let (name, value) = sessions.login_cookie(&start.txn)?;
    let mut res = response::redirect(start.url.as_str());
    let h = res.headers_mut();
    for stale in sessions.logins_to_drop(&ctx.jar) {
        h.append(SET_COOKIE, cookie::clear_cookie(stale, SameSite::Lax));
    }
    h.append(
        SET_COOKIE,
        cookie::set_cookie(&name, &value, SameSite::Lax, Some(LOGIN_TTL)),
    );
    Ok(res)
}

/// States whose callback is being processed by this instance: a second callback for the same
/// state (a double click, a replay racing the original) is refused while the first runs.
#[derive(Default)]
pub struct CallbacksInFlight(Mutex<HashSet<String>>);

/// A place in [`CallbacksInFlight`]; leaving happens on drop.
struct InFlight<'a> {
    set: &'a CallbacksInFlight,
    state: String,
}

impl CallbacksInFlight {
    fn enter(&self, state: &str) -> Option<InFlight<'_>> {
        let mut set = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        set.insert(state.to_owned()).then(|| InFlight {
            set: self,
            state: state.to_owned(),
        })
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        let mut set = self.set.0.lock().unwrap_or_else(PoisonError::into_inner);
        set.remove(&self.state);
    }
}

pub(super) async fn callback(
    app: &App,
    req: &Request<Incoming>,
    ctx: &mut Ctx<'_>,
) -> Result<Response<Body>, Error> {
    let params = CallbackParams::parse(req.uri().query())?;
    let sessions = &app.sessions;
    let state = params
        .state
        .as_ref()
        .ok_or(OidcError::MissingParam("state"))?;
    let state = state.expose();
    // Whatever happens next, this login is over: its cookie goes with the answer.
    ctx.set_cookies.push(cookie::clear_cookie(
        &sessions.login.name(state),
        SameSite::Lax,
    ));
    let txn = sessions
        .open_login(&ctx.jar, state)
        .ok_or(OidcError::UnknownState)?;
    app.oidc.check_response_issuer(params.iss.as_deref())?;
    if let Some(code) = params.error {
        let code = if code.bytes().all(|b| b.is_ascii_lowercase() || b == b'_') {
            code
        } else {
            "invalid".into()
        };
        return Err(OidcError::ProviderRefused { code }.into());
    }
    let code = params.code.ok_or(OidcError::MissingParam("code"))?;
    let _in_flight = app.callbacks.enter(state).ok_or(OidcError::UnknownState)?;
    if sessions.state_used(state).await? {
        return Err(OidcError::UnknownState.into());
    }
    let result = app.oidc.finish_login(&code, &txn).await?;
    if !sessions.mark_state_used(state, txn.remaining()).await? {
        // Another instance completed this login first.
        crate::oidc::revoke::revoke_tokens(app, &result.tokens).await;
        return Err(OidcError::UnknownState.into());
    }

    // Never carry a pre-login session over: destroy whatever the browser had.
    if let Some(secret) = sessions.cookie_secret(&ctx.jar) {
        ctx.session = true;
        if let Some(old) = sessions.load(secret, false).await? {
            sessions.destroy(&old).await?;
        }
    }
    let session = sessions.new_session(result.identity, result.tokens);
    let value = sessions.create(&session).await?;
    tracing::info!("login completed, new session created");

    let target = txn.return_to;
    let mut res = match sessions.same_site {
        SameSite::Lax => response::redirect(&target),
        // The provider's redirect to us is cross-site, so a Strict cookie set now would not be
        // sent if we redirected straight on; a same-origin navigation from this page sends it.
        SameSite::Strict => signed_in_page(&target),
    };
    res.headers_mut().append(
        SET_COOKIE,
        cookie::set_cookie(
            &sessions.cookie_name,
            &value,
            sessions.same_site,
            Some(sessions.max_lifetime()),
        ),
    );
    Ok(res)
}

/// A tiny page that navigates to `target` (already validated as a same-origin path).
fn signed_in_page(target: &str) -> Response<Body> {
    let href = response::escape(target);
    response::html(
        StatusCode::OK,
        format!(
            "<!doctype html><html><head><meta charset=\"utf-8\"><meta http-equiv=\"refresh\" content=\"0;url={href}\">\
             <title>Signed in</title></head><body><p>Signed in. <a href=\"{href}\">Continue</a></p></body></html>"
        ),
    )
}
