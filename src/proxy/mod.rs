//! Forwarding to upstreams: pooled hyper clients (http and https, rustls with the public web
//! roots plus `server.upstream_ca_file`), bodies and trailers streamed both ways frame by
//! frame, a deadline on the upstream's response headers, and on the bodies only an idle limit.
//!
//! Which HTTP version an upstream gets:
//! 1. `https://` upstreams are offered HTTP/2 and HTTP/1.1 by ALPN; the upstream picks.
//! 2. `upstream_http2 = true` speaks HTTP/2 only: cleartext with prior knowledge for
//!    `http://` (h2c, e.g. gRPC), ALPN `h2` for `https://`.
//! 3. WebSocket handshakes always go out as HTTP/1.1 `Upgrade` (ALPN `http/1.1`), whatever
//!    the route and whatever the browser spoke.

pub mod headers;
pub mod stream;

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use hyper_rustls::{HttpsConnector, HttpsConnectorBuilder};
use rustls_pki_types::CertificateDer;

use http::{Request, Response, Uri};
use http_body_util::{Either, Empty};
use hyper::body::Incoming;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

use crate::error::Error;
use crate::response::Body;
use crate::routes::{Route, Upstream};
use stream::{IdleClock, Watched};

/// A request body on its way to an upstream.
pub type Outgoing = Watched<Incoming>;

type Connector = HttpsConnector<HttpConnector>;

/// The shared upstream clients.
#[derive(Clone)]
pub struct Forwarder {
    /// HTTP/1.1, or HTTP/2 when an https upstream picks it by ALPN.
    client: Client<Connector, Outgoing>,
    /// HTTP/2 only (`upstream_http2`).
    h2: Client<Connector, Outgoing>,
    /// HTTP/1.1 only: WebSocket handshakes.
    upgrades: Client<Connector, Empty<Bytes>>,
}

/// Which ALPN protocols a connector offers.
#[derive(Clone, Copy)]
enum Alpn {
    Both,
    H2,
    H1,
}

impl Forwarder {
    /// `extra_roots`: CA certificates trusted for https upstreams besides the web roots.
    pub fn new(
        connect_timeout: Duration,
        extra_roots: &[CertificateDer<'static>],
    ) -> Result<Self, rustls::Error> {
        let mut roots = rustls::RootCertStore::empty();
        roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
        for cert in extra_roots {
            roots.add(cert.clone())?;
        }
        let tls = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth();
        let connector = |alpn: Alpn| {
            let mut http = HttpConnector::new();
            http.set_connect_timeout(Some(connect_timeout));
            http.set_nodelay(true);
            http.enforce_http(false);
            let builder = HttpsConnectorBuilder::new()
                .with_tls_config(tls.clone())
                .https_or_http();
            match alpn {
                Alpn::Both => builder.enable_http1().enable_http2().wrap_connector(http),
                Alpn::H2 => builder.enable_http2().wrap_connector(http),
                Alpn::H1 => builder.enable_http1().wrap_connector(http),
            }
        };
        let pooled = || {
            let mut b = Client::builder(TokioExecutor::new());
            b.pool_idle_timeout(Duration::from_secs(60))
                .pool_max_idle_per_host(256);
            b
        };
        Ok(Self {
            client: pooled().build(connector(Alpn::Both)),
            h2: pooled().http2_only(true).build(connector(Alpn::H2)),
            upgrades: pooled().build(connector(Alpn::H1)),
        })
    }

    /// Sends `req` (headers already prepared) to the route's upstream, keeping its path and
    /// query. Both bodies stream; the exchange ends when it idles for `stream_idle_timeout`.
    pub async fn forward(
        &self,
        req: Request<Incoming>,
        route: &Route,
        upstream: &Upstream,
    ) -> Result<Response<Body>, Error> {
        let clock = IdleClock::new();
        let timeout = route.stream_idle_timeout;
        let req =
            req.map(|body| Watched::new(body, Arc::clone(&clock), timeout).limited(route.max_body));
        let client = if route.upstream_http2 {
            &self.h2
        } else {
            &self.client
        };
        let response = send(client, req, route, upstream).await?;
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
        send(&self.upgrades, req, route, upstream).await
    }
}

/// Points `req` at the upstream and waits, at most the route's `timeout`, for its headers.
async fn send<B>(
    client: &Client<Connector, B>,
    mut req: Request<B>,
    route: &Route,
    upstream: &Upstream,
) -> Result<Response<Incoming>, Error>
where
    B: http_body::Body + Send + Unpin + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let mut parts = http::uri::Parts::default();
    parts.scheme = Some(upstream.scheme.clone());
    parts.authority = Some(upstream.authority.clone());
    parts.path_and_query = req.uri().path_and_query().cloned();
    *req.uri_mut() = Uri::from_parts(parts).map_err(|e| Error::UpstreamUnavailable {
        upstream: upstream.authority.to_string(),
        detail: e.to_string(),
    })?;
    // The version of the hop to the upstream is the client's to choose (ALPN, h2 only).
    *req.version_mut() = http::Version::HTTP_11;
    match tokio::time::timeout(route.timeout, client.request(req)).await {
        Ok(Ok(res)) => Ok(res),
        Ok(Err(e)) if body_limit(&e).is_some() => {
            Err(Error::BodyTooLarge(body_limit(&e).unwrap_or_default()))
        }
        Ok(Err(e)) => Err(Error::UpstreamUnavailable {
            upstream: upstream.authority.to_string(),
            detail: crate::oidc::error_chain(&e),
        }),
        Err(_) => Err(Error::UpstreamTimeout {
            upstream: upstream.authority.to_string(),
            seconds: route.timeout.as_secs(),
        }),
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
