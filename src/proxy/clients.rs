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
//! Plain `http://` requests (not `upstream_http2`) go through gatehouse's own HTTP/1.1 pool
//! ([`super::pool`]); the rest through hyper-util's pooled client of each kind. Either way
//! idle connections are bounded by `server.upstream_pool_max_idle` and closed after
//! `server.upstream_idle_timeout`, and the one retry after a pooled connection failed goes out
//! on a fresh connection (hyper-util's fresh client never reuses one; gatehouse's pool keeps
//! the new connection once it has answered).
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
use futures_util::future::Either;
use http::{Request, Response, Uri};
use http_body_util::Empty;
use hyper::body::Incoming;
use hyper_rustls::{HttpsConnector, HttpsConnectorBuilder};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::{Connected, Connection};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use rustls_pki_types::CertificateDer;
use tokio::net::TcpStream;

use super::Sent;
use super::pool::{Lane, Returning};
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
        Box::pin(async move { Ok(TokioIo::new(dial(addr, timeout).await?)) })
    }
}

/// A TCP connection to `addr`, made within `timeout`, that tells whether it was answered.
pub async fn dial(addr: SocketAddr, timeout: Duration) -> std::io::Result<Watched> {
    let stream = tokio::time::timeout(timeout, TcpStream::connect(addr))
        .await
        .map_err(|_| {
            std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                format!("connecting to {addr} took longer than {timeout:?}"),
            )
        })?
        .map_err(|e| std::io::Error::new(e.kind(), format!("connecting to {addr}: {e}")))?;
    stream.set_nodelay(true)?;
    Ok(Tapped::new(stream, Answered::default()))
}

/// Whether bytes came from the upstream since gatehouse last wrote to the connection: on an
/// HTTP/1.1 connection, whether the request being sent has any of its response yet.
#[derive(Clone, Debug, Default)]
pub struct Answered(Arc<AtomicBool>);

impl Answered {
    /// Whether the connection of a failed request of hyper-util's client had received any
    /// of its response.
    fn on(error: &hyper_util::client::legacy::Error) -> bool {
        error.connect_info().is_some_and(|c| {
            let mut extensions = http::Extensions::new();
            c.get_extras(&mut extensions);
            extensions.get::<Answered>().is_some_and(Answered::heard)
        })
    }

    /// Whether bytes came since the last write (or [`Answered::clear`]).
    pub fn heard(&self) -> bool {
        self.0.load(Ordering::Acquire)
    }

    /// Forgets what came so far: a new request is about to be handed over.
    pub fn clear(&self) {
        self.0.store(false, Ordering::Release);
    }
}

/// Why an attempt got no response, and what [`super::retry`] needs to know of it. Shows as
/// its cause, whose sources it passes on.
#[derive(Debug)]
pub struct Failure {
    error: Box<dyn std::error::Error + Send + Sync>,
    connect: bool,
    answered: bool,
}

impl Failure {
    /// No connection was made: nothing was sent.
    pub fn connect(error: impl Into<Box<dyn std::error::Error + Send + Sync>>) -> Failure {
        Failure {
            error: error.into(),
            connect: true,
            answered: false,
        }
    }

    /// The request was handed to a connection, which then failed; `answered`: whether the
    /// connection had received any of the response.
    pub fn sent(error: hyper::Error, answered: bool) -> Failure {
        Failure {
            error: Box::new(error),
            connect: false,
            answered,
        }
    }

    pub fn is_connect(&self) -> bool {
        self.connect
    }

    pub fn answered(&self) -> bool {
        self.answered
    }
}

impl From<hyper_util::client::legacy::Error> for Failure {
    fn from(e: hyper_util::client::legacy::Error) -> Failure {
        Failure {
            connect: e.is_connect(),
            answered: Answered::on(&e),
            error: Box::new(e),
        }
    }
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.error.fmt(f)
    }
}

impl std::error::Error for Failure {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.error.source()
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

    pub fn endpoint(&self, origin: &Origin, addr: SocketAddr) -> EndpointClients {
        let own = (origin.scheme == http::uri::Scheme::HTTP).then(|| {
            (0..self.lanes())
                .map(|_| Lane::new(addr, self.settings))
                .collect()
        });
        EndpointClients {
            factory: self.clone(),
            addr,
            own,
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
    /// gatehouse's own HTTP/1.1 pool, one lane per worker: `http://` origins only.
    own: Option<Box<[Arc<Lane>]>>,
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

    /// For requests: HTTP/1.1 (gatehouse's own pool for `http://`) or ALPN's pick, or
    /// HTTP/2 only.
    pub fn forward(&self, http2_only: bool, conn: Conn) -> Sender<'_> {
        match &self.own {
            Some(lanes) if !http2_only => {
                Sender::Own(Arc::clone(&lanes[lane() % lanes.len()]), conn)
            }
            _ => Sender::Client(self.client(http2_only, conn)),
        }
    }

    fn client(&self, http2_only: bool, conn: Conn) -> &Client<Connector, Sent> {
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

/// Where one attempt of a request goes.
pub enum Sender<'a> {
    /// This worker's lane of gatehouse's own pool.
    Own(Arc<Lane>, Conn),
    /// A hyper-util client.
    Client(&'a Client<Connector, Sent>),
}

impl Sender<'_> {
    /// Whether the request must carry its absolute URI: hyper-util's client finds the
    /// connection by it and writes origin-form itself; gatehouse's pool writes the URI as is.
    pub fn absolute(&self) -> bool {
        matches!(self, Sender::Client(_))
    }

    pub fn send(
        self,
        req: Request<Sent>,
    ) -> impl Future<Output = Result<Response<Returning>, Failure>> + Send + 'static + use<> {
        match self {
            Sender::Own(lane, conn) => Either::Left(lane.send(req, conn)),
            Sender::Client(client) => {
                let sending = legacy(client, req);
                Either::Right(async move { Ok(sending.await?.map(Returning::unpooled)) })
            }
        }
    }
}

/// Sends `req` with a hyper-util client.
pub fn legacy<B>(
    client: &Client<Connector, B>,
    req: Request<B>,
) -> impl Future<Output = Result<Response<Incoming>, Failure>> + Send + 'static + use<B>
where
    B: http_body::Body + Send + Unpin + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let sending = client.request(req);
    async move { Ok(sending.await?) }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn clients(origin: &str, lanes: usize) -> EndpointClients {
        let factory = Factory::for_tests_with_lanes(lanes);
        let origin = Origin::parse(origin).unwrap();
        factory.endpoint(&origin, "127.0.0.1:9".parse().unwrap())
    }

    /// Where a request goes, by address: the lane of gatehouse's pool, or the client.
    fn target(sender: Sender<'_>) -> usize {
        match sender {
            Sender::Own(lane, _) => Arc::as_ptr(&lane) as usize,
            Sender::Client(client) => std::ptr::from_ref(client) as usize,
        }
    }

    /// Which client (by address) `lane`'s thread gets for pooled requests, and for fresh ones.
    fn taken_on_lane(clients: &EndpointClients, lane: usize) -> (usize, usize, usize) {
        std::thread::scope(|s| {
            s.spawn(|| {
                set_lane(lane);
                (
                    target(clients.forward(false, Conn::Pooled)),
                    target(clients.forward(false, Conn::Fresh)),
                    std::ptr::from_ref(clients.http1(Conn::Pooled)) as usize,
                )
            })
            .join()
            .unwrap()
        })
    }

    #[test]
    fn plain_http_requests_go_through_gatehouse_s_own_pool_and_the_rest_through_hyper_util() {
        let plain = clients("http://127.0.0.1:9", 1);
        assert!(matches!(
            plain.forward(false, Conn::Pooled),
            Sender::Own(..)
        ));
        assert!(
            matches!(plain.forward(true, Conn::Pooled), Sender::Client(_)),
            "h2c"
        );
        let tls = clients("https://127.0.0.1:9", 1);
        assert!(matches!(
            tls.forward(false, Conn::Pooled),
            Sender::Client(_)
        ));
    }

    #[test]
    fn each_worker_sends_plain_http_on_its_own_lane_only() {
        let clients = clients("http://127.0.0.1:9", 2);
        let (pooled0, fresh0, _) = taken_on_lane(&clients, 0);
        let (pooled1, _, _) = taken_on_lane(&clients, 1);
        assert_ne!(pooled0, pooled1, "two workers share no lane");
        assert_eq!(
            fresh0, pooled0,
            "a fresh connection joins the worker's lane"
        );
        let (again, _, _) = taken_on_lane(&clients, 0);
        assert_eq!(again, pooled0, "a worker keeps its lane");
        let (wrapped, _, _) = taken_on_lane(&clients, 2);
        assert_eq!(wrapped, pooled0, "a lane past the count wraps around");
    }

    #[test]
    fn each_worker_takes_pooled_connections_from_its_own_pool_only() {
        let clients = clients("https://127.0.0.1:9", 2);
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
