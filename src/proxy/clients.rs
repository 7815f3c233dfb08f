//! The hyper clients of one endpoint: each connects to that endpoint's IP address only, while
//! TLS (SNI and certificate verification) and the pool use the host name of its URL, so an
//! `https://` origin resolved to several addresses is verified as itself at every one. Each
//! connection tells whether the upstream sent anything since the last request was written
//! ([`Answered`]), so a request that got any of a response is never sent again.
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
//!
//! Pools are per worker ([`set_lane`]): a connection is driven by the runtime that made it,
//! so a request on one worker thread that took a connection made on another would wake that
//! thread twice (to write the request, to read the answer). Each worker thread takes only
//! connections of its own pool, and a request runs on one core from accept to answer.

use std::cell::Cell;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::Uri;
use http_body_util::Empty;
use hyper_rustls::{HttpsConnector, HttpsConnectorBuilder};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::{Connected, Connection};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use rustls_pki_types::CertificateDer;
use tokio::net::TcpStream;

use super::Sent;
use crate::routes::Origin;
use crate::tap::{Tap, Tapped};

pub type Connector = HttpsConnector<Dial>;

thread_local! {
    /// Which pool of each endpoint this thread's requests use (see [`set_lane`]).
    static LANE: Cell<usize> = const { Cell::new(0) };
}

/// Makes this thread's pooled upstream connections its own: worker `lane` of
/// [`PoolSettings::lanes`]. Threads that never call it share lane 0.
pub fn set_lane(lane: usize) {
    LANE.with(|l| l.set(lane));
}

/// This thread's lane (see [`set_lane`]).
pub fn lane() -> usize {
    LANE.with(Cell::get)
}

/// Connects to one address (the endpoint's), whatever the URL's host: TLS above it still
/// uses the URL's host name.
#[derive(Clone, Copy, Debug)]
pub struct Dial {
    addr: SocketAddr,
    timeout: Duration,
}

impl tower_service::Service<Uri> for Dial {
    type Response = TokioIo<Watched>;
    type Error = std::io::Error;
    type Future = Pin<Box<dyn Future<Output = std::io::Result<TokioIo<Watched>>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, _: Uri) -> Self::Future {
        let Dial { addr, timeout } = *self;
        Box::pin(async move {
            let stream = tokio::time::timeout(timeout, TcpStream::connect(addr))
                .await
                .map_err(|_| {
                    std::io::Error::new(
                        std::io::ErrorKind::TimedOut,
                        format!("connecting to {addr} took longer than {timeout:?}"),
                    )
                })??;
            stream.set_nodelay(true)?;
            Ok(TokioIo::new(Tapped::new(stream, Answered::default())))
        })
    }
}

/// Whether bytes came from the upstream since gatehouse last wrote to the connection: on an
/// HTTP/1.1 connection, whether the request being sent has any of its response yet.
#[derive(Clone, Debug, Default)]
pub struct Answered(Arc<AtomicBool>);

impl Answered {
    /// Whether the connection of a failed request had received any of its response.
    pub fn on(error: &hyper_util::client::legacy::Error) -> bool {
        error.connect_info().is_some_and(|c| {
            let mut extensions = http::Extensions::new();
            c.get_extras(&mut extensions);
            extensions
                .get::<Answered>()
                .is_some_and(|a| a.0.load(Ordering::Acquire))
        })
    }
}

/// A TCP connection that keeps [`Answered`] up to date: set by bytes read, cleared by a
/// write (the next request).
pub type Watched = Tapped<Answered>;

impl Tap for Answered {
    fn read(&self) {
        self.0.store(true, Ordering::Release);
    }

    fn wrote(&self) {
        self.0.store(false, Ordering::Release);
    }
}

impl Connection for Watched {
    fn connected(&self) -> Connected {
        // Only `Answered`: every extra is copied into each response's extensions, and the
        // addresses that tokio's own `connected` adds are of no use here.
        Connected::new().extra(self.tap().clone())
    }
}

/// How connections to upstreams are made and pooled (`server.upstream_*`).
#[derive(Debug, Clone, Copy)]
pub struct PoolSettings {
    pub connect_timeout: Duration,
    pub idle_timeout: Duration,
    pub max_idle: usize,
    /// Pools per endpoint: one per worker thread (`server.workers`).
    pub lanes: usize,
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

    /// Worker threads, each with its own pools ([`PoolSettings::lanes`]).
    pub fn lanes(&self) -> usize {
        self.settings.lanes.max(1)
    }

    /// Web roots only, small pools.
    #[cfg(test)]
    pub fn for_tests() -> Factory {
        let settings = PoolSettings {
            connect_timeout: Duration::from_secs(5),
            idle_timeout: Duration::from_secs(4),
            max_idle: 8,
            lanes: 1,
        };
        Factory::new(settings, &[]).unwrap()
    }

    /// [`Factory::for_tests`] with `lanes` workers.
    #[cfg(test)]
    pub fn for_tests_with_lanes(lanes: usize) -> Factory {
        let mut factory = Factory::for_tests();
        factory.settings.lanes = lanes;
        factory
    }

    pub fn endpoint(&self, _origin: &Origin, addr: SocketAddr) -> EndpointClients {
        EndpointClients {
            factory: self.clone(),
            addr,
            pooled: (0..self.lanes()).map(|_| Kinds::default()).collect(),
            fresh: Kinds::default(),
        }
    }

    fn connector(&self, addr: SocketAddr, alpn: Alpn) -> Connector {
        let http = Dial {
            addr,
            timeout: self.settings.connect_timeout,
        };
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

/// The clients of one pool (or of the fresh connections), by kind, each made on first use.
#[derive(Default)]
struct Kinds {
    both: OnceLock<Client<Connector, Sent>>,
    h2: OnceLock<Client<Connector, Sent>>,
    h1: OnceLock<Client<Connector, Empty<Bytes>>>,
}

/// One endpoint's clients: a pool per worker thread, and the fresh connections.
pub struct EndpointClients {
    factory: Factory,
    addr: SocketAddr,
    pooled: Box<[Kinds]>,
    fresh: Kinds,
}

impl EndpointClients {
    /// This thread's pool, or the fresh connections.
    fn kinds(&self, conn: Conn) -> &Kinds {
        match conn {
            Conn::Pooled => &self.pooled[lane() % self.pooled.len()],
            Conn::Fresh => &self.fresh,
        }
    }

    /// For requests: HTTP/1.1 or ALPN's pick, or HTTP/2 only.
    pub fn forward(&self, http2_only: bool, conn: Conn) -> &Client<Connector, Sent> {
        let kinds = self.kinds(conn);
        let (lock, alpn) = if http2_only {
            (&kinds.h2, Alpn::H2)
        } else {
            (&kinds.both, Alpn::Both)
        };
        lock.get_or_init(|| self.factory.client(self.addr, alpn, conn))
    }

    /// HTTP/1.1 only: WebSocket handshakes and health checks.
    pub fn http1(&self, conn: Conn) -> &Client<Connector, Empty<Bytes>> {
        self.kinds(conn)
            .h1
            .get_or_init(|| self.factory.client(self.addr, Alpn::H1, conn))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn clients(lanes: usize) -> EndpointClients {
        let factory = Factory::for_tests_with_lanes(lanes);
        let origin = Origin::parse("http://127.0.0.1:9").unwrap();
        factory.endpoint(&origin, "127.0.0.1:9".parse().unwrap())
    }

    /// Which client (by address) `lane`'s thread gets for pooled requests, and for fresh ones.
    fn taken_on_lane(clients: &EndpointClients, lane: usize) -> (usize, usize, usize) {
        std::thread::scope(|s| {
            s.spawn(|| {
                set_lane(lane);
                let addr = |c: &Client<Connector, Sent>| std::ptr::from_ref(c) as usize;
                (
                    addr(clients.forward(false, Conn::Pooled)),
                    addr(clients.forward(false, Conn::Fresh)),
                    std::ptr::from_ref(clients.http1(Conn::Pooled)) as usize,
                )
            })
            .join()
            .unwrap()
        })
    }

    #[test]
    fn each_worker_takes_pooled_connections_from_its_own_pool_only() {
        let clients = clients(2);
        let (pooled0, fresh0, h1_0) = taken_on_lane(&clients, 0);
        let (pooled1, fresh1, h1_1) = taken_on_lane(&clients, 1);
        assert_ne!(pooled0, pooled1, "two workers share no pool");
        assert_ne!(h1_0, h1_1, "nor for WebSocket handshakes");
        assert_eq!(
            fresh0, fresh1,
            "fresh connections are never pooled: one client"
        );
        let (again, _, _) = taken_on_lane(&clients, 0);
        assert_eq!(again, pooled0, "a worker keeps its pool");
        let (wrapped, _, _) = taken_on_lane(&clients, 2);
        assert_eq!(wrapped, pooled0, "a lane past the count wraps around");
    }
}
