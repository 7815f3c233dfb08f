//! Forwarding to upstreams: bodies and trailers streamed both ways frame by frame, a
//! deadline on the upstream's response headers, and on the bodies only an idle limit.
//! Which address a request goes to is [`balance`]'s; when it is sent again, [`retry`]'s;
//! the clients and HTTP versions, [`clients`]'; plain HTTP/1.1 connections, [`pool`]'s; the
//! active check, [`health`]'s.

pub mod balance;
pub mod clients;
pub mod headers;
pub mod health;
pub mod pool;
pub mod retry;
pub mod stream;

use std::sync::Arc;

use bytes::Bytes;
use rustls_pki_types::CertificateDer;

use http::header::HOST;
use http::{Method, Request, Response, Uri};
use http_body_util::{Either, Empty};
use hyper::body::Incoming;

use crate::error::Error;
use crate::response::Body;
use crate::routes::{Route, RouteTable, RouteTarget, Upstream};
use crate::telemetry::metrics::Metrics;
use balance::{Endpoint, Registry};
use clients::{Conn, Factory, Failure, PoolSettings};
use retry::{BodySlot, Lent};
use stream::{IdleClock, Watched};

/// A request body on its way to an upstream.
pub type Outgoing = Watched<Incoming>;
/// What one attempt sends: the body, while no earlier attempt polled it.
pub type Sent = Lent<Outgoing>;

/// The upstream clients, their endpoints and health, shared by all requests.
#[derive(Clone)]
pub struct Forwarder {
    registry: Arc<Registry>,
    metrics: Arc<Metrics>,
}

impl Forwarder {
    /// `extra_roots`: CA certificates trusted for https upstreams besides the web roots.
    pub fn new(
        settings: PoolSettings,
        extra_roots: &[CertificateDer<'static>],
        metrics: Arc<Metrics>,
    ) -> Result<Self, rustls::Error> {
        Ok(Self {
            registry: Arc::new(Registry::new(Factory::new(settings, extra_roots)?)),
            metrics,
        })
    }

    /// Makes the upstreams of `routes` the ones in use: their health checks start, those of
    /// upstreams no route names any more stop.
    pub fn prepare(&self, routes: &RouteTable) {
        self.registry
            .retain(routes.iter().filter_map(|r| match &r.target {
                RouteTarget::Upstream(u) => Some(u),
                RouteTarget::Static(_) => None,
            }));
    }

    /// Sends `req` (headers already prepared) to one of the route's addresses, keeping its
    /// path and query, and again to another when [`retry`] allows. Both bodies stream; the
    /// exchange ends when it idles for `stream_idle_timeout`.
    pub async fn forward(
        &self,
        req: Box<Request<Incoming>>,
        route: &Route,
        upstream: &Upstream,
    ) -> Result<Response<Body>, Error> {
        let clock = IdleClock::new();
        let timeout = route.stream_idle_timeout;
        let (head, body) = (*req).into_parts();
        let slot =
            BodySlot::new(Watched::new(body, Arc::clone(&clock), timeout).limited(route.max_body));
        let head = Head::from(head);
        let http2 = route.upstream_http2;
        let response = self
            .attempts(route, upstream, &head, |endpoint, conn| {
                let body = slot.lend()?;
                let sender = endpoint.clients.forward(http2, conn);
                let absolute = sender.absolute();
                Some(sender.send(head.request(endpoint, body, absolute)))
            })
            .await?;
        clock.touch();
        let (mut parts, body) = response.into_parts();
        headers::strip_hop_by_hop(&mut parts.headers);
        Ok(Response::from_parts(
            parts,
            Either::Left(Watched::new(body, clock, timeout)),
        ))
    }

    /// Sends a WebSocket handshake (headers already prepared) over HTTP/1.1 and returns the
    /// upstream's answer as it is, `Connection` and `Upgrade` included, for the caller to check.
    pub async fn upgrade(
        &self,
        req: Request<Empty<Bytes>>,
        route: &Route,
        upstream: &Upstream,
    ) -> Result<Response<Incoming>, Error> {
        let head = Head::from(req.into_parts().0);
        self.attempts(route, upstream, &head, |endpoint, conn| {
            let client = endpoint.clients.http1(conn);
            Some(clients::legacy(
                client,
                head.request(endpoint, Empty::new(), true),
            ))
        })
        .await
    }

    /// The attempts of one request, within the route's `timeout` together: the first on a
    /// pooled connection; after a connection that could not be made, another address; after
    /// a failure of a written request that [`retry`] allows to repeat, once more on a fresh
    /// connection (to whichever address is next). `attempt` returns `None` when the body
    /// cannot be sent again.
    async fn attempts<F, Fut, B>(
        &self,
        route: &Route,
        upstream: &Upstream,
        head: &Head,
        mut attempt: F,
    ) -> Result<Response<B>, Error>
    where
        F: FnMut(&Endpoint, Conn) -> Option<Fut>,
        Fut: Future<Output = Result<Response<B>, Failure>>,
    {
        let deadline = tokio::time::Instant::now() + route.timeout;
        let group = self.registry.group_of(upstream);
        let endpoints = group.endpoints(&self.registry).await;
        let repeatable = retry::is_repeatable(&head.method, upstream.retry_idempotent_writes);
        let mut refused: Vec<Arc<Endpoint>> = Vec::new();
        let mut repeated = false;
        let mut conn = Conn::Pooled;
        let unavailable = |detail: String| Error::UpstreamUnavailable {
            upstream: upstream.authority().to_string(),
            detail,
        };
        let mut last: Option<String> = None;
        loop {
            let Some(endpoint) = group.pick(&endpoints, &refused) else {
                return Err(unavailable(last.unwrap_or_else(|| {
                    if endpoints.is_empty() {
                        "the host name resolves to no address".to_owned()
                    } else {
                        "every address is out after failures (cooling down)".to_owned()
                    }
                })));
            };
            let Some(sending) = attempt(endpoint, conn) else {
                return Err(unavailable(last.unwrap_or_default()));
            };
            if let Some(why) = &last {
                tracing::debug!(route = %route.prefix, upstream = %endpoint.origin.authority, addr = %endpoint.addr, method = %head.method, error = %why, "upstream request failed before any response; sending it again on a fresh connection");
                self.metrics.upstream_retry(&route.prefix);
            }
            let failure = match tokio::time::timeout_at(deadline, sending).await {
                Ok(Ok(res)) => {
                    if endpoint.answered() {
                        tracing::info!(upstream = %endpoint.origin.authority, addr = %endpoint.addr, "the address answers again: back in");
                    }
                    return Ok(res);
                }
                Ok(Err(e)) => e,
                Err(_) => {
                    return Err(Error::UpstreamTimeout {
                        upstream: upstream.authority().to_string(),
                        seconds: route.timeout.as_secs(),
                    });
                }
            };
            if let Some(max) = body_limit(&failure) {
                // The client's body outgrew the route's limit: its fault, not the address's.
                return Err(Error::BodyTooLarge(max));
            }
            let detail = crate::oidc::error_chain(&failure);
            // A connection that was not made sent nothing; a fresh one that failed was the
            // address's doing. Either takes the address out (a reused one may just be stale).
            if failure.is_connect() || conn == Conn::Fresh {
                if let Some(cool) = endpoint.failed() {
                    tracing::warn!(route = %route.prefix, upstream = %endpoint.origin.authority, addr = %endpoint.addr, cool_down = ?cool, error = %detail, "upstream address failed: out for a cool-down");
                }
                refused.push(Arc::clone(endpoint));
            }
            if !failure.is_connect() {
                if !repeatable || repeated || failure.answered() {
                    return Err(unavailable(detail));
                }
                repeated = true;
                conn = Conn::Fresh;
            }
            last = Some(detail);
        }
    }
}

/// What each attempt of a request is built from.
struct Head {
    method: Method,
    path_and_query: Option<http::uri::PathAndQuery>,
    headers: http::HeaderMap,
}

impl From<http::request::Parts> for Head {
    fn from(parts: http::request::Parts) -> Head {
        Head {
            method: parts.method,
            path_and_query: parts.uri.path_and_query().cloned(),
            headers: parts.headers,
        }
    }
}

impl Head {
    /// The request for `endpoint`: its path and query (after its origin's URL when
    /// `absolute`), its origin's `Host`, every prepared header.
    fn request<B>(&self, endpoint: &Endpoint, body: B, absolute: bool) -> Request<B> {
        let mut req = Request::new(body);
        *req.method_mut() = self.method.clone();
        let mut parts = http::uri::Parts::default();
        if absolute {
            parts.scheme = Some(endpoint.origin.scheme.clone());
            parts.authority = Some(endpoint.origin.authority.clone());
        }
        parts.path_and_query = Some(
            self.path_and_query
                .clone()
                .unwrap_or_else(|| http::uri::PathAndQuery::from_static("/")),
        );
        if let Ok(uri) = Uri::from_parts(parts) {
            *req.uri_mut() = uri;
        }
        *req.headers_mut() = self.headers.clone();
        // Over the client's `Host` (it names gatehouse; `headers::prepare_request` leaves it as
        // the slot), so that the copy does not grow.
        req.headers_mut().insert(HOST, endpoint.origin.host.clone());
        // The version of the hop to the upstream is the client's to choose (ALPN, h2 only).
        *req.version_mut() = http::Version::HTTP_11;
        req
    }
}

/// The route's `max_body` when that is why the upstream call failed (the body outgrew it).
fn body_limit(e: &(dyn std::error::Error + 'static)) -> Option<u64> {
    let mut cause = Some(e);
    while let Some(e) = cause {
        if let Some(stream::BodyLimit(max)) = e.downcast_ref() {
            return Some(*max);
        }
        cause = e.source();
    }
    None
}
