//! The per-request lifecycle, in one place: read the request once into a [`Ctx`] → check the
//! path → pick the endpoint or route → anti-forgery check → load the session → refresh →
//! rewrite headers → forward → log. Static routes take their own phase after the route is
//! picked: method → fetch-site check → session → file.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use http::header::ACCEPT;
use http::{HeaderValue, Method, Request, Response};
use hyper::body::Incoming;

use crate::app::App;
use crate::cookie::Jar;
use crate::error::Error;
use crate::proxy::headers::{self, Forwarding};
use crate::response::Body;
use crate::routes::{AuthMode, Route, RouteTarget, Upstream, is_routable_path};
use crate::static_files::{self, StaticSite};
use crate::{csrf, endpoints};

/// What one request carries through the phases: read from the request once, filled in as
/// the phases learn more, and summed up in the access log line.
pub struct Ctx<'a> {
    pub peer: SocketAddr,
    pub started: Instant,
    pub method: Method,
    /// The client asked for HTML (a browser navigation): errors answer with a page.
    pub wants_html: bool,
    /// The request's cookies, taken out of its headers: ours are never forwarded.
    pub jar: Jar,
    /// Route prefix or endpoint name, for the log.
    pub route: &'a str,
    /// Whether a live session was found.
    pub session: bool,
}

impl<'a> Ctx<'a> {
    /// Reads what every phase needs from `req` and takes its cookies out of the headers.
    pub fn read(app: &App, peer: SocketAddr, req: &mut Request<Incoming>) -> Ctx<'a> {
        let wants_html = req
            .headers()
            .get(ACCEPT)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.contains("text/html"));
        Ctx {
            peer,
            started: Instant::now(),
            method: req.method().clone(),
            wants_html,
            jar: Jar::take(req.headers_mut(), &app.cookie_names),
            route: "-",
            session: false,
        }
    }
}

/// Entry point for every request: never fails, always answers.
pub async fn handle(
    app: Arc<App>,
    peer: SocketAddr,
    mut req: Request<Incoming>,
) -> Result<Response<Body>, Infallible> {
    let mut ctx = Ctx::read(&app, peer, &mut req);
    let response = match dispatch(&app, req, &mut ctx).await {
        Ok(res) => res,
        Err(e) => error_response(&app, &ctx, e),
    };
    tracing::info!(
        method = %ctx.method,
        route = ctx.route,
        status = response.status().as_u16(),
        latency_us = u64::try_from(ctx.started.elapsed().as_micros()).unwrap_or(u64::MAX),
        session = ctx.session,
        "request"
    );
    Ok(response)
}

/// Logs the error once, here at the edge, and turns it into the response.
fn error_response(app: &App, ctx: &Ctx<'_>, e: Error) -> Response<Body> {
    if e.status().is_server_error() {
        tracing::warn!(error = %e, route = ctx.route, "request failed");
    } else {
        tracing::info!(error = %e, route = ctx.route, "request refused");
    }
    let stale = ctx.jar.has_session_cookie() && matches!(e, Error::Unauthenticated);
    let mut res = e.into_response(ctx.wants_html);
    if stale {
        // The cookie points at no session (ended, expired, foreign key): drop it so the
        // browser starts clean at its next login.
        let clear = crate::cookie::clear_cookie(&app.sessions.cookie_name, app.sessions.same_site);
        res.headers_mut().append(http::header::SET_COOKIE, clear);
    }
    res
}

async fn dispatch<'a>(
    app: &'a Arc<App>,
    req: Request<Incoming>,
    ctx: &mut Ctx<'a>,
) -> Result<Response<Body>, Error> {
    let path = req.uri().path();
    if !is_routable_path(path) {
        return Err(Error::BadPath);
    }
    let req = match endpoints::dispatch(app, req, ctx).await? {
        Ok(res) => return Ok(res),
        Err(req) => req,
    };
    let route = app
        .config
        .routes
        .find(req.uri().path())
        .ok_or(Error::NoRoute)?;
    ctx.route = &route.prefix;
    match &route.target {
        RouteTarget::Upstream(upstream) => forward(app, route, upstream, req, ctx).await,
        RouteTarget::Static(site) => serve_static(app, route, site, req, ctx).await,
    }
}

/// The proxy path: authenticate, attach the token, forward.
async fn forward(
    app: &Arc<App>,
    route: &Route,
    upstream: &Upstream,
    mut req: Request<Incoming>,
    ctx: &mut Ctx<'_>,
) -> Result<Response<Body>, Error> {
    let mut authorization = None;
    if route.auth != AuthMode::None {
        csrf::verify(req.headers(), &route.csrf)?;
        let loaded = match app.sessions.cookie_secret(&ctx.jar) {
            Some(secret) => app.sessions.load(secret, true).await?,
            None => None,
        };
        ctx.session = loaded.is_some();
        authorization = Some(match loaded {
            Some(mut loaded) => {
                let token = crate::oidc::refresh::ensure_fresh(app, &mut loaded).await?;
                Some(bearer(token.expose())?)
            }
            None if route.auth == AuthMode::Required => return Err(Error::Unauthenticated),
            None => None,
        });
    }
    let client_ip = ctx.peer.ip().to_string();
    let server = &app.config.server;
    let forwarding = Forwarding {
        client_ip: &client_ip,
        proto: server.public_origin.scheme(),
        host: server.origin.split_once("://").map_or("", |(_, h)| h),
        upstream_authority: upstream.authority.as_str(),
        cookie: ctx.jar.forward(),
        authorization,
    };
    headers::prepare_request(req.headers_mut(), forwarding);
    app.forwarder.forward(req, route, upstream).await
}

/// The static path: GET and HEAD only; on `required` no anti-forgery header (a navigation
/// cannot send one) but a live session, without which a browser navigation goes to login
/// and anything else gets 401; then the file. Rules in [`static_files::access`].
async fn serve_static(
    app: &Arc<App>,
    route: &Route,
    site: &StaticSite,
    req: Request<Incoming>,
    ctx: &mut Ctx<'_>,
) -> Result<Response<Body>, Error> {
    if !matches!(*req.method(), Method::GET | Method::HEAD) {
        return Err(Error::MethodNotAllowed);
    }
    if route.auth != AuthMode::None {
        static_files::access::verify(req.headers())?;
        let loaded = match app.sessions.cookie_secret(&ctx.jar) {
            Some(secret) => app.sessions.load(secret, true).await?,
            None => None,
        };
        ctx.session = loaded.is_some();
        if loaded.is_none() && route.auth == AuthMode::Required {
            if static_files::access::is_navigation(req.method(), req.headers()) {
                let login =
                    static_files::access::login_location(&app.config.auth.prefix, req.uri());
                return Ok(crate::response::redirect(&login));
            }
            return Err(Error::Unauthenticated);
        }
    }
    Ok(site.serve(&route.prefix, &req).await?)
}

fn bearer(token: &str) -> Result<HeaderValue, Error> {
    let mut v =
        HeaderValue::try_from(format!("Bearer {token}")).map_err(|_| Error::Unauthenticated)?;
    v.set_sensitive(true);
    Ok(v)
}
