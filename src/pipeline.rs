//! The per-request lifecycle, in one place: read the request once into a [`Ctx`] → refuse
//! what no route may see (method, head size, host, path) → pick the endpoint or route →
//! anti-forgery check → load the session → refresh → rewrite the request → forward →
//! rewrite the response → log. Static routes take their own phase after the route is
//! picked: method → fetch-site check → session → file. WebSocket handshakes on upstream
//! routes take theirs: handshake check → Origin rule → session → refresh → cap → rewrite
//! the request → the upstream's handshake → relay.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use http::header::{ACCEPT, SET_COOKIE};
use http::{HeaderMap, HeaderValue, Method, Request, Response};
use hyper::body::Incoming;

use crate::app::App;
use crate::config::Config;
use crate::cookie::Jar;
use crate::error::Error;
use crate::forwarded::{self, ClientInfo, Peer};
use crate::host::{self, Verdict};
use crate::proxy::headers::{self, Forwarding};
use crate::response::Body;
use crate::routes::{AuthMode, Route, RouteTarget, Upstream, is_routable_path};
use crate::server::ConnHandle;
use crate::session::Loaded;
use crate::static_files::{self, StaticSite};
use crate::websocket::{self, WebSocketError};

use crate::telemetry::request_id::{self, RequestId, X_REQUEST_ID};
use crate::telemetry::trace::RequestSpans;
use crate::{csrf, endpoints, telemetry};

/// Largest request head accepted: the request line and header lines as HTTP/1.1 writes them
/// (`name: value\r\n` each), counted exactly whatever the protocol or TCP segmentation.
pub const MAX_HEAD_BYTES: usize = 64 * 1024;
/// Most header fields a request may carry.
pub const MAX_HEADERS: usize = 100;

/// The client's request, boxed once as it arrives: it passes by value through every phase
/// down to the upstream call, and each phase's future keeps what it was given (often twice,
/// as argument and as local). A pointer keeps those futures kilobytes smaller and moves
/// where the request's 264 bytes would be copied.
pub type ClientRequest = Box<Request<Incoming>>;

/// What one request carries through the phases: read from the request once, filled in as
/// the phases learn more, and summed up in the access log line.
pub struct Ctx<'a> {
    /// The config this request runs under, from start to end (a reload swaps in a new one for
    /// requests that start later).
    pub config: &'a Config,
    pub peer: SocketAddr,
    /// In every log line of the request, its error body, its response and the upstream's
    /// request (see [`telemetry::request_id`]).
    pub request_id: RequestId,
    pub started: Instant,
    pub method: Method,
    /// The client asked for HTML (a browser navigation): errors answer with a page.
    pub wants_html: bool,
    /// The request's cookies, taken out of its headers: ours are never forwarded.
    pub jar: Jar,
    /// The client: the peer, or whom a trusted proxy says it forwarded for.
    pub client: ClientInfo,
    /// Route prefix or endpoint name, for the log.
    pub route: &'a str,
    /// Whether a live session was found.
    pub session: bool,
    /// Size of the request head as HTTP/1.1 writes it (see [`MAX_HEAD_BYTES`]).
    pub head_bytes: usize,
    /// `Set-Cookie` values every answer to this request carries, errors included.
    pub set_cookies: Vec<HeaderValue>,
}

impl<'a> Ctx<'a> {
    /// Reads what every phase needs from `req` and takes its cookies out of the headers.
    pub fn read(
        app: &App,
        config: &'a Config,
        peer: &Peer,
        trusted: bool,
        req: &mut Request<Incoming>,
    ) -> Ctx<'a> {
        let wants_html = req
            .headers()
            .get(ACCEPT)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.contains("text/html"));
        let head_bytes = head_size(req.method(), req.uri(), req.headers());
        let client = forwarded::client(peer, req.headers(), &config.server.trusted_proxies);
        Ctx {
            config,
            peer: peer.addr,
            client,
            request_id: RequestId::choose(req.headers(), trusted),
            started: Instant::now(),
            method: req.method().clone(),
            wants_html,
            jar: Jar::take(req.headers_mut(), &app.cookie_names),
            route: "-",
            session: false,
            head_bytes,
            set_cookies: Vec::new(),
        }
    }
}

/// Entry point for every request: never fails, always answers.
pub async fn handle(
    app: Arc<App>,
    peer: Peer,
    mut req: ClientRequest,
) -> Result<Response<Body>, Infallible> {
    let config = app.snapshot();
    let trusted = request_id::trusted_peer(&config, peer.addr);
    let mut ctx = Ctx::read(&app, &config, &peer, trusted, &mut req);
    let spans = RequestSpans::start(&ctx.request_id, &ctx.method, req.headers(), trusted);
    // Boxed once here, so that the spans' wrappers and hyper move a pointer, not the phases'
    // state (kilobytes).
    let mut response = spans
        .instrument(Box::pin(respond(&app, req, &mut ctx)))
        .await;
    response
        .headers_mut()
        .insert(X_REQUEST_ID, ctx.request_id.header_value());
    spans.finish(ctx.route, response.status());
    Ok(response)
}

async fn respond<'a>(app: &Arc<App>, req: ClientRequest, ctx: &mut Ctx<'a>) -> Response<Body> {
    let mut response = match dispatch(app, req, ctx).await {
        Ok(res) => res,
        Err(e) => error_response(app, ctx, e),
    };
    for cookie in ctx.set_cookies.drain(..) {
        response.headers_mut().append(SET_COOKIE, cookie);
    }
    // One clock read for the log line and the metrics.
    let latency = ctx.started.elapsed();
    telemetry::access::log(&telemetry::access::Line {
        request_id: &ctx.request_id,
        method: &ctx.method,
        client: ctx.client.ip,
        route: ctx.route,
        status: response.status(),
        latency,
        session: ctx.session,
    });
    app.metrics.request(ctx.route, response.status(), latency);
    response
}

/// Logs the error once, here at the edge, and turns it into the response.
fn error_response(app: &App, ctx: &Ctx<'_>, e: Error) -> Response<Body> {
    if e.status().is_server_error() {
        tracing::warn!(error = %e, route = ctx.route, "request failed");
    } else {
        tracing::info!(error = %e, route = ctx.route, "request refused");
    }
    let stale = ctx.jar.has_session_cookie() && matches!(e, Error::Unauthenticated);
    let mut res = e.into_response(ctx.wants_html, ctx.request_id.as_str());
    if stale {
        // The cookie points at no session (ended, expired, foreign key): drop it so the
        // browser starts clean at its next login.
        let clear = crate::cookie::clear_cookie(&app.sessions.cookie_name, app.sessions.same_site);
        res.headers_mut().append(http::header::SET_COOKIE, clear);
    }
    res
}

async fn dispatch<'a>(
    app: &Arc<App>,
    req: ClientRequest,
    ctx: &mut Ctx<'a>,
) -> Result<Response<Body>, Error> {
    refuse_unroutable(&req, ctx)?;
    // The rarer phases are boxed: inline, the largest of them would make every request's
    // future as large as theirs, and a request's future is moved several times before and
    // while it runs (kilobytes of copying per request).
    let req = if endpoints::may_answer(app, req.uri().path()) {
        match Box::pin(endpoints::dispatch(app, req, ctx)).await? {
            Ok(res) => return Ok(res),
            Err(req) => req,
        }
    } else {
        req
    };
    let route = ctx
        .config
        .routes
        .find(req.uri().path())
        .ok_or(Error::NoRoute)?;
    ctx.route = &route.prefix;
    let websocket = websocket::is_websocket(&req);
    match &route.target {
        RouteTarget::Upstream(upstream) if websocket => {
            Box::pin(upgrade(app, route, upstream, *req, ctx)).await
        }
        RouteTarget::Upstream(upstream) => forward(app, route, upstream, req, ctx).await,
        RouteTarget::Static(_) if websocket => Err(WebSocketError::StaticRoute.into()),
        RouteTarget::Static(site) => Box::pin(serve_static(app, route, site, *req, ctx)).await,
    }
}

/// The checks every request passes before any endpoint or route sees it.
fn refuse_unroutable(req: &Request<Incoming>, ctx: &Ctx<'_>) -> Result<(), Error> {
    // TRACE echoes the request (cookies included) back; CONNECT would tunnel anywhere.
    // Only an HTTP/2 extended CONNECT for a WebSocket (RFC 8441) is not a tunnel.
    let tunnel =
        *req.method() == Method::CONNECT && !websocket::handshake::is_extended_connect(req);
    if *req.method() == Method::TRACE || tunnel {
        return Err(Error::MethodNotAllowed);
    }
    if ctx.head_bytes > MAX_HEAD_BYTES || req.headers().len() > MAX_HEADERS {
        return Err(Error::HeadTooLarge);
    }
    let server = &ctx.config.server;
    if !host::is_exempt(req.uri().path()) {
        match host::check(
            req.method(),
            req.uri(),
            req.headers(),
            &server.allowed_hosts,
            &server.origin,
        ) {
            Verdict::Allowed => {}
            Verdict::Redirect(to) => return Err(Error::WrongHost(Some(to))),
            Verdict::Misdirected => return Err(Error::WrongHost(None)),
        }
    }
    if !is_routable_path(req.uri().path()) {
        return Err(Error::BadPath);
    }
    Ok(())
}

/// The request line and header lines as HTTP/1.1 writes them, with the final empty line.
fn head_size(method: &Method, uri: &http::Uri, headers: &HeaderMap) -> usize {
    // Absolute-form and HTTP/2 targets count their scheme and authority too.
    let target = uri.path_and_query().map_or(1, |p| p.as_str().len())
        + uri.authority().map_or(0, |a| {
            a.as_str().len() + uri.scheme_str().map_or(0, str::len) + "://".len()
        });
    let line = method.as_str().len() + 1 + target + " HTTP/1.1\r\n".len();
    let fields: usize = headers
        .iter()
        .map(|(name, value)| name.as_str().len() + 2 + value.len() + 2)
        .sum();
    line + fields + 2
}

/// The proxy path: anti-forgery check, authenticate, attach the token, forward.
async fn forward(
    app: &Arc<App>,
    route: &Route,
    upstream: &Upstream,
    mut req: ClientRequest,
    ctx: &mut Ctx<'_>,
) -> Result<Response<Body>, Error> {
    if let Some(max) = route.max_body
        && crate::proxy::stream::declared_length(req.headers()).is_some_and(|n| n > max)
    {
        return Err(Error::BodyTooLarge(max));
    }
    let mut authorization = None;
    if route.auth != AuthMode::None {
        csrf::verify(req.headers(), &route.csrf)?;
        authorization = Some(authenticate(app, route, ctx).await?.1);
    }
    let client_ip = std::mem::replace(&mut ctx.client.chain, HeaderValue::from_static(""));
    headers::prepare_request(req.headers_mut(), forwarding(ctx, client_ip, authorization));
    let mut res =
        telemetry::upstream_call(&app.metrics, &route.prefix, &ctx.request_id, req, |req| {
            app.forwarder.forward(req, route, upstream)
        })
        .await?;
    headers::drop_our_set_cookies(res.headers_mut(), &app.cookie_names);
    Ok(res)
}

/// The WebSocket path: the Origin rule instead of the anti-forgery header, then the same
/// session, refresh and hygiene as [`forward`]; then the socket's place under the cap, the
/// upstream's handshake and the relay. Rules in [`websocket`].
async fn upgrade(
    app: &Arc<App>,
    route: &Route,
    upstream: &Upstream,
    mut req: Request<Incoming>,
    ctx: &mut Ctx<'_>,
) -> Result<Response<Body>, Error> {
    let handshake = websocket::Handshake::read(&req)?;
    let mut session = None;
    let mut authorization = None;
    if route.auth != AuthMode::None {
        websocket::verify_origin(req.headers(), &route.csrf)?;
        let (loaded, bearer) = authenticate(app, route, ctx).await?;
        session = loaded;
        authorization = Some(bearer);
    }
    let registered = app
        .sockets
        .register(session.as_ref().map(|l| l.key.as_str()))
        .map_err(|_| WebSocketError::TooMany(app.config().server.max_websockets))?;
    let hold = req
        .extensions_mut()
        .remove::<ConnHandle>()
        .map(|h| h.hold());
    let client_ip = std::mem::replace(&mut ctx.client.chain, HeaderValue::from_static(""));
    headers::prepare_request(req.headers_mut(), forwarding(ctx, client_ip, authorization));
    req.headers_mut()
        .insert(X_REQUEST_ID, ctx.request_id.header_value());
    let opening = websocket::Opening {
        handshake,
        registered,
        session,
        hold,
    };
    websocket::open(app, route, upstream, req, opening).await
}

/// Loads the session and makes its token fresh: the session (if any) and the
/// `Authorization` to send. No session on a `required` route is 401.
async fn authenticate(
    app: &Arc<App>,
    route: &Route,
    ctx: &mut Ctx<'_>,
) -> Result<(Option<Loaded>, Option<HeaderValue>), Error> {
    let loaded = match app.sessions.cookie_secret(&ctx.jar) {
        Some(secret) => app.sessions.load(secret, true).await?,
        None => None,
    };
    ctx.session = loaded.is_some();
    match loaded {
        Some(mut loaded) => {
            crate::oidc::refresh::ensure_fresh(app, &mut loaded).await?;
            let bearer = loaded.session.tokens.bearer();
            Ok((Some(loaded), Some(bearer.ok_or(Error::Unauthenticated)?)))
        }
        None if route.auth == AuthMode::Required => Err(Error::Unauthenticated),
        None => Ok((None, None)),
    }
}

/// What gatehouse tells the upstream about the request (see [`headers::prepare_request`]).
/// `client_ip`: the `X-Forwarded-For` list, taken out of `ctx` (nothing else reads it).
fn forwarding<'a>(
    ctx: &'a Ctx<'_>,
    client_ip: HeaderValue,
    authorization: Option<Option<HeaderValue>>,
) -> Forwarding<'a> {
    let server = &ctx.config.server;
    Forwarding {
        client_ip,
        proto: ctx
            .client
            .proto
            .as_deref()
            .unwrap_or(server.public_origin.scheme()),
        host: match ctx.client.host.as_deref() {
            Some(theirs) => HeaderValue::from_str(theirs).ok(),
            None => Some(server.origin_host.clone()),
        },
        cookie: ctx.jar.forward(),
        authorization,
        strip: &server.strip_request_headers,
    }
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
                    static_files::access::login_location(&app.config().auth.prefix, req.uri());
                return Ok(crate::response::redirect(&login));
            }
            return Err(Error::Unauthenticated);
        }
    }
    Ok(site.serve(&route.prefix, &req).await?)
}
