//! The hyper clients of one endpoint: each connects to that endpoint's IP address only, while
//! TLS (SNI and certificate verification) and the pool use the host name of its URL, so an
//! `https://` origin resolved to several addresses is verified as itself at every one.
//!
//! Which HTTP version an upstream gets:
//! 1. `https://` upstreams are offered HTTP/2 and HTTP/1.1 by ALPN; the upstream picks.
//! 2. `upstream_http2 = true` speaks HTTP/2 only: cleartext with prior knowledge for
//!    `http://` (h2c, e.g. gRPC), ALPN `h2` for `https://`.
//! 3. WebSocket handshakes (and health checks) always go out as HTTP/1.1 (ALPN `http/1.1`).
//!
//! Each kind has a pooled client (idle connections bounded by `server.upstream_pool_max_idle`
//! and closed after `server.upstream_idle_timeout`) and a fresh one that never reuses a
//! connection, for the one retry after a pooled connection failed.

use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Empty;
use hyper_rustls::{HttpsConnector, HttpsConnectorBuilder};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::connect::dns::Name;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use rustls_pki_types::CertificateDer;

use super::Sent;
use crate::routes::Origin;

pub type Connector = HttpsConnector<HttpConnector<Fixed>>;

/// A "resolver" that answers every name with one address: the endpoint's.
#[derive(Clone, Copy, Debug)]
pub struct Fixed(SocketAddr);

impl tower_service::Service<Name> for Fixed {
    type Response = std::iter::Once<SocketAddr>;
    type Error = std::io::Error;
    type Future = std::future::Ready<Result<Self::Response, Self::Error>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, _: Name) -> Self::Future {
        std::future::ready(Ok(std::iter::once(self.0)))
    }
}

/// How connections to upstreams are made and pooled (`server.upstream_*`).
#[derive(Debug, Clone, Copy)]
pub struct PoolSettings {
    pub connect_timeout: Duration,
    pub idle_timeout: Duration,
    pub max_idle: usize,
}

/// Which ALPN protocols a connector offers.
#[derive(Clone, Copy)]
enum Alpn {
    Both,
    H2,
    H1,
}

/// Builds endpoints' clients; one per process.
#[derive(Clone)]
pub struct Factory {
    tls: Arc<rustls::ClientConfig>,
    settings: PoolSettings,
}

impl Factory {
    /// `extra_roots`: CA certificates trusted for https upstreams besides the web roots.
    pub fn new(
        settings: PoolSettings,
        extra_roots: &[CertificateDer<'static>],
    ) -> Result<Factory, rustls::Error> {
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
        Ok(Factory {
            tls: Arc::new(tls),
            settings,
        })
    }

    /// Web roots only, small pools.
    #[cfg(test)]
    pub fn for_tests() -> Factory {
        let settings = PoolSettings {
            connect_timeout: Duration::from_secs(5),
            idle_timeout: Duration::from_secs(4),
            max_idle: 8,
        };
        Factory::new(settings, &[]).unwrap()
    }

    pub fn endpoint(&self, _origin: &Origin, addr: SocketAddr) -> EndpointClients {
        EndpointClients {
            factory: self.clone(),
            addr,
            both: Default::default(),
            h2: Default::default(),
            h1: Default::default(),
        }
    }

    fn connector(&self, addr: SocketAddr, alpn: Alpn) -> Connector {
        let mut http = HttpConnector::new_with_resolver(Fixed(addr));
        http.set_connect_timeout(Some(self.settings.connect_timeout));
        http.set_nodelay(true);
        http.enforce_http(false);
        let builder = HttpsConnectorBuilder::new()
            .with_tls_config(rustls::ClientConfig::clone(&self.tls))
            .https_or_http();
        match alpn {
            Alpn::Both => builder.enable_http1().enable_http2().wrap_connector(http),
            Alpn::H2 => builder.enable_http2().wrap_connector(http),
            Alpn::H1 => builder.enable_http1().wrap_connector(http),
        }
    }

    fn client<B>(&self, addr: SocketAddr, alpn: Alpn, conn: Conn) -> Client<Connector, B>
    where
        B: http_body::Body + Send + 'static,
        B::Data: Send,
    {
        let mut b = Client::builder(TokioExecutor::new());
        b.pool_timer(TokioTimer::new())
            .pool_idle_timeout(self.settings.idle_timeout)
            .pool_max_idle_per_host(match conn {
                Conn::Pooled => self.settings.max_idle,
                Conn::Fresh => 0,
            });
        if matches!(alpn, Alpn::H2) {
            b.http2_only(true);
        }
        b.build(self.connector(addr, alpn))
    }
}

/// A pooled connection, or one made for this request and never reused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Conn {
    Pooled,
    Fresh,
}

impl Conn {
    fn index(self) -> usize {
        match self {
            Conn::Pooled => 0,
            Conn::Fresh => 1,
        }
    }
}

/// One endpoint's clients, each made on first use.
pub struct EndpointClients {
    factory: Factory,
    addr: SocketAddr,
    both: [OnceLock<Client<Connector, Sent>>; 2],
    h2: [OnceLock<Client<Connector, Sent>>; 2],
    h1: [OnceLock<Client<Connector, Empty<Bytes>>>; 2],
}

impl EndpointClients {
    /// For requests: HTTP/1.1 or ALPN's pick, or HTTP/2 only.
    pub fn forward(&self, http2_only: bool, conn: Conn) -> &Client<Connector, Sent> {
        let (lock, alpn) = if http2_only {
            (&self.h2, Alpn::H2)
        } else {
            (&self.both, Alpn::Both)
        };
        lock[conn.index()].get_or_init(|| self.factory.client(self.addr, alpn, conn))
    }

    /// HTTP/1.1 only: WebSocket handshakes and health checks.
    pub fn http1(&self, conn: Conn) -> &Client<Connector, Empty<Bytes>> {
        self.h1[conn.index()].get_or_init(|| self.factory.client(self.addr, Alpn::H1, conn))
    }
}
