//! WebSockets through gatehouse, on every upstream route: the handshake ([`handshake`]), the
//! byte relay (`relay.rs`) and the registry that closes the sockets of a session that ends
//! ([`registry`]).
//!
//! Rules:
//! 1. The browser may ask by HTTP/1.1 `Upgrade: websocket` or by HTTP/2 extended CONNECT
//!    with `:protocol = websocket` (RFC 8441); the upstream is always asked by HTTP/1.1
//!    `Upgrade`, with gatehouse's own key, and must answer with its accept (else 502).
//! 2. On `required` and `optional` routes the handshake is exempt from the static
//!    anti-forgery header (a browser's WebSocket cannot send one) but must carry `Origin`
//!    equal to `public_origin`, and `Sec-Fetch-Site`, when present, `same-origin`: else 403
//!    before anything reaches the upstream. Then, like any request: session loaded, token
//!    refreshed if due, `Authorization: Bearer` attached, our cookies stripped, header
//!    hygiene. No session on a `required` route: 401, never a 101.
//! 3. Bytes are relayed as they come, with back-pressure both ways; gatehouse reads only
//!    frame headers, to know where a close frame of its own may go.
//! 4. A socket never outlives its session: a session ended on this instance closes its
//!    sockets at once; one ended on another instance, or expired, is found by re-reading the
//!    session from the store every 2 s or so. Close code 4401 (see [`Close`]).
//! 5. An open socket does not slide the session's idle clock: a page that only holds a
//!    socket is logged out at `session.idle_timeout`, like a page that does nothing.
//! 6. Limits: `server.max_websockets` (503 beyond), the route's `websocket_idle_timeout`
//!    (close 4408), shutdown (close 1001). Static routes refuse handshakes (400).

pub mod frame;
pub mod handshake;
pub mod registry;
mod relay;

pub use handshake::{Handshake, is_websocket, verify_origin};
pub use registry::{Close, Registered, Sockets};

use std::sync::Arc;

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use http_body_util::{Either, Empty};
use hyper::body::Incoming;

use crate::app::App;
use crate::error::Error;
use crate::proxy::headers;
use crate::proxy::pool::Returning;
use crate::proxy::stream::{IdleClock, Watched};
use crate::response::Body;
use crate::routes::{Route, Upstream};
use crate::server::ConnHold;
use crate::session::Loaded;

/// Why a handshake was refused.
#[derive(Debug, thiserror::Error)]
pub enum WebSocketError {
    #[error("invalid websocket handshake: {0}")]
    BadHandshake(&'static str),
    #[error("websocket handshake without an origin header")]
    MissingOrigin,
    #[error("websocket handshake origin is not public_origin")]
    ForeignOrigin,
    #[error("websocket handshake sec-fetch-site is not same-origin")]
    CrossSite,
    #[error("websockets are not served on static routes")]
    StaticRoute,
    #[error("too many websockets open (server.max_websockets = {0})")]
    TooMany(usize),
    #[error("upstream {0} answered 101 without accepting the websocket key")]
    UpstreamRefused(String),
}

impl WebSocketError {
    pub(crate) fn parts(&self) -> (StatusCode, &'static str, &'static str) {
        match self {
            WebSocketError::BadHandshake(_) => (
                StatusCode::BAD_REQUEST,
                "bad_websocket_handshake",
                "the WebSocket handshake is not valid",
            ),
            WebSocketError::MissingOrigin
            | WebSocketError::ForeignOrigin
            | WebSocketError::CrossSite => (
                StatusCode::FORBIDDEN,
                "csrf",
                "request refused by the anti-forgery check",
            ),
            WebSocketError::StaticRoute => (
                StatusCode::BAD_REQUEST,
                "websocket_unsupported",
                "this route does not accept WebSockets",
            ),
            WebSocketError::TooMany(_) => (
                StatusCode::SERVICE_UNAVAILABLE,
                "too_many_websockets",
                "too many WebSockets open, try again shortly",
            ),
            WebSocketError::UpstreamRefused(_) => (
                StatusCode::BAD_GATEWAY,
                "upstream_unavailable",
                "upstream unavailable",
            ),
        }
    }
}

/// Whether a request could become a socket: worth handing its connection's handle.
pub fn may_upgrade<B>(req: &Request<B>) -> bool {
    *req.method() == Method::CONNECT || req.headers().contains_key(http::header::UPGRADE)
}

/// A handshake that passed the pipeline's checks, ready to go to the upstream.
pub struct Opening {
    pub handshake: Handshake,
    /// Its place under `server.max_websockets`, and its close signal.
    pub registered: Registered,
    /// The session it belongs to, re-checked while the socket is open.
    pub session: Option<Loaded>,
    /// Keeps the connection it came from counted while the socket lives.
    pub hold: Option<ConnHold>,
}

/// Asks the upstream for the socket (`req`'s headers are prepared already) and, when it
/// accepts, answers the browser and starts relaying. Any other answer of the upstream is
/// passed back as a plain response.
pub async fn open(
    app: &Arc<App>,
    route: &Route,
    upstream: &Upstream,
    mut req: Request<Incoming>,
    opening: Opening,
) -> Result<Response<Body>, Error> {
    let client = hyper::upgrade::on(&mut req);
    let (parts, _) = req.into_parts();
    let mut outgoing = Request::new(Empty::<Bytes>::new());
    *outgoing.method_mut() = Method::GET;
    *outgoing.uri_mut() = parts.uri;
    *outgoing.headers_mut() = parts.headers;
    let key = handshake::upstream_request(outgoing.headers_mut());

    let mut res = app.forwarder.upgrade(outgoing, route, upstream).await?;
    if res.status() != StatusCode::SWITCHING_PROTOCOLS {
        let (mut parts, body) = res.into_parts();
        headers::strip_hop_by_hop(&mut parts.headers);
        headers::drop_our_set_cookies(&mut parts.headers, &app.cookie_names);
        let body = Watched::new(
            Returning::unpooled(body),
            IdleClock::new(),
            route.stream_idle_timeout,
        );
        return Ok(Response::from_parts(parts, Either::Left(body)));
    }
    if !handshake::upstream_accepted(res.headers(), &key) {
        return Err(WebSocketError::UpstreamRefused(upstream.authority().to_string()).into());
    }
    let upstream_io = hyper::upgrade::on(&mut res);
    let mut answer_headers = std::mem::take(res.headers_mut());
    headers::strip_hop_by_hop(&mut answer_headers);
    headers::drop_our_set_cookies(&mut answer_headers, &app.cookie_names);
    let answer = opening
        .handshake
        .answer(&answer_headers, crate::response::full(Bytes::new()));
    let relay = relay::Relay {
        registered: opening.registered,
        session: opening.session,
        idle_timeout: route.websocket_idle_timeout,
        hold: opening.hold,
        route: route.prefix.clone(),
    };
    tokio::spawn(relay::run(Arc::clone(app), relay, client, upstream_io));
    Ok(answer)
}
