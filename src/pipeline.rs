//! The per-request lifecycle, in one place: check the path → pick the endpoint or route →
//! anti-forgery check → load the session → refresh → rewrite headers → forward → log.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use http::header::ACCEPT;
use http::{HeaderValue, Request, Response};
use hyper::body::Incoming;

use crate::config::Config;
use crate::error::Error;
use crate::oidc::Oidc;
use crate::proxy::Forwarder;
use crate::proxy::headers::{self, Forwarding};
use crate::response::Body;
use crate::routes::{AuthMode, Route, is_routable_path};
use crate::session::{Sessions, Store, StoreError};
use crate::{csrf, endpoints};

/// Everything a request needs, shared by all connections.
pub struct App {
    pub config: Config,
    pub oidc: Oidc,
    pub sessions: Sessions,
    pub forwarder: Forwarder,
    pub flights: crate::oidc::refresh::Flights,
}

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("cannot build the provider HTTP client: {0}")]
    Http(#[from] reqwest::Error),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("cannot set up TLS to upstreams (server.upstream_ca_file): {0}")]
    Tls(#[from] rustls::Error),
}

impl App {
    pub fn new(mut config: Config) -> Result<App, StartError> {
        let store = Store::new(&config.session.store, config.session.store_timeout)?;
        let keys = std::mem::replace(
            &mut config.session.keys,
            crate::cookie::KeyRing::new(Vec::new()),
        );
        let sessions = Sessions::new(&config.session, store, keys);
        Ok(App {
            oidc: Oidc::new(&config.oidc)?,
            forwarder: Forwarder::new(
                config.server.upstream_connect_timeout,
                &config.server.upstream_ca,
            )?,
            sessions,
            flights: Default::default(),
            config,
        })
    }
}

/// What the access log says about a request besides method and status.
pub struct Outcome<'a> {
    pub route: &'a str,
    pub session: bool,
}

/// Entry point for every request: never fails, always answers.
pub async fn handle(
    app: Arc<App>,
    peer: SocketAddr,
    req: Request<Incoming>,
) -> Result<Response<Body>, Infallible> {
    let started = Instant::now();
    let method = req.method().clone();
    let wants_html = req
        .headers()
        .get(ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.contains("text/html"));
    let had_cookie = crate::cookie::values(req.headers(), &app.sessions.cookie_name)
        .next()
        .is_some();
    let mut outcome = Outcome {
        route: "-",
        session: false,
    };
    let response = match dispatch(&app, peer, req, &mut outcome).await {
        Ok(res) => res,
        Err(e) => {
            if e.status().is_server_error() {
                tracing::warn!(error = %e, route = outcome.route, "request failed");
            } else {
                tracing::info!(error = %e, route = outcome.route, "request refused");
            }
            let stale = had_cookie && matches!(e, Error::Unauthenticated);
            let mut res = e.into_response(wants_html);
            if stale {
                // The cookie points at no session (ended, expired, foreign key): drop it so
                // the browser starts clean at its next login.
                let clear =
                    crate::cookie::clear_cookie(&app.sessions.cookie_name, app.sessions.same_site);
                res.headers_mut().append(http::header::SET_COOKIE, clear);
            }
            res
        }
    };
    tracing::info!(
        method = %method,
        route = outcome.route,
        status = response.status().as_u16(),
        latency_us = u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX),
        session = outcome.session,
        "request"
    );
    Ok(response)
}

async fn dispatch<'a>(
    app: &'a Arc<App>,
    peer: SocketAddr,
    req: Request<Incoming>,
    outcome: &mut Outcome<'a>,
) -> Result<Response<Body>, Error> {
    let path = req.uri().path();
    if !is_routable_path(path) {
        return Err(Error::BadPath);
    }
    let req = match endpoints::dispatch(app, req, outcome).await? {
        Ok(res) => return Ok(res),
        Err(req) => req,
    };
    let route = app
        .config
        .routes
        .find(req.uri().path())
        .ok_or(Error::NoRoute)?;
    outcome.route = &route.prefix;
    forward(app, route, peer, req, outcome).await
}

/// The proxy path: authenticate, attach the token, forward.
async fn forward(
    app: &Arc<App>,
    route: &Route,
    peer: SocketAddr,
    mut req: Request<Incoming>,
    outcome: &mut Outcome<'_>,
) -> Result<Response<Body>, Error> {
    let mut authorization = None;
    if route.auth != AuthMode::None {
        csrf::verify(req.headers(), &route.csrf)?;
        let loaded = match app.sessions.cookie_secret(req.headers()) {
            Some(secret) => app.sessions.load(secret, true).await?,
            None => None,
        };
        outcome.session = loaded.is_some();
        authorization = Some(match loaded {
            Some(mut loaded) => {
                let token = crate::oidc::refresh::ensure_fresh(app, &mut loaded).await?;
                Some(bearer(token.expose())?)
            }
            None if route.auth == AuthMode::Required => return Err(Error::Unauthenticated),
            None => None,
        });
    }
    let client_ip = peer.ip().to_string();
    let server = &app.config.server;
    let forwarding = Forwarding {
        client_ip: &client_ip,
        proto: server.public_origin.scheme(),
        host: server.origin.split_once("://").map_or("", |(_, h)| h),
        upstream_authority: route.upstream.authority.as_str(),
        our_cookies: [&app.sessions.cookie_name, &app.sessions.login_cookie_name],
        authorization,
    };
    headers::prepare_request(req.headers_mut(), &forwarding);
    app.forwarder.forward(req, route).await
}

fn bearer(token: &str) -> Result<HeaderValue, Error> {
    let mut v =
        HeaderValue::try_from(format!("Bearer {token}")).map_err(|_| Error::Unauthenticated)?;
    v.set_sensitive(true);
    Ok(v)
}
