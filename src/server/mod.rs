//! The accept loop: HTTP/1.1 and HTTP/2 on one listener (with upgrades: HTTP/1.1 `Upgrade`
//! and HTTP/2 extended CONNECT for WebSockets), connection limits (total and per client IP),
//! header-read and idle timeouts, and graceful shutdown that lets in-flight requests finish
//! and closes open WebSockets with a close frame.

mod conn;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use hyper::server::conn::{http1, http2};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, mpsc, watch};

use crate::app::{App, StartError};
use crate::config::Config;
use crate::forwarded::Peer;
use crate::pipeline::{self, MAX_HEAD_BYTES};
use crate::websocket::{self, Close};
use conn::{Activity, ClientStream, Expired, Expiry, PerIp, Slot, Tracked};
pub use conn::{ConnHandle, ConnHold};

const MAX_H2_STREAMS: u32 = 256;
/// HTTP/2 pings: a peer that stops answering is dropped after twice this.
const H2_KEEP_ALIVE: Duration = Duration::from_secs(20);
const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// Which protocol a client speaks, from its first bytes.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Protocol {
    Http1,
    Http2,
}

/// Waits, at most `limit`, until the first bytes tell HTTP/1 from HTTP/2: anything that is
/// not a prefix of the HTTP/2 preface is HTTP/1 (whose header timeout then applies); an
/// HTTP/2 client must send the whole preface. `None`: silent or stalled, to be dropped.
async fn protocol_sniffed(stream: &tokio::net::TcpStream, limit: Duration) -> Option<Protocol> {
    let mut buf = [0u8; 24];
    let sniff = async {
        loop {
            match stream.peek(&mut buf).await {
                Ok(0) | Err(_) => return None,
                Ok(n) if n >= H2_PREFACE.len() && buf == *H2_PREFACE => {
                    return Some(Protocol::Http2);
                }
                Ok(n) if n >= H2_PREFACE.len() || buf[..n] != H2_PREFACE[..n] => {
                    return Some(Protocol::Http1);
                }
                // A partial preface: wait for the rest without spinning.
                Ok(_) => tokio::time::sleep(Duration::from_millis(5)).await,
            }
        }
    };
    tokio::time::timeout(limit, sniff).await.ok().flatten()
}

/// Serves `config` on `listener` until `shutdown` completes, then drains connections for at
/// most `server.shutdown_grace`.
pub async fn run(
    listener: TcpListener,
    config: Config,
    shutdown: impl Future<Output = ()>,
) -> Result<(), StartError> {
    run_reloadable(listener, config, None, shutdown).await
}

/// Like [`run`], re-reading the config from `source` on `SIGHUP` (and on change, with
/// `server.watch_config`); see [`crate::reload`].
pub async fn run_reloadable(
    listener: TcpListener,
    config: Config,
    source: Option<crate::reload::Source>,
    shutdown: impl Future<Output = ()>,
) -> Result<(), StartError> {
    run_on(Some(listener), Vec::new(), config, source, shutdown).await
}

/// What [`run_reloadable`] and [`run_workers`] share: config warnings, the app, reloads, the
/// process-wide metrics recorder, then serving until `shutdown`.
async fn run_on(
    here: Option<TcpListener>,
    workers: Vec<Worker>,
    config: Config,
    source: Option<crate::reload::Source>,
    shutdown: impl Future<Output = ()>,
) -> Result<(), StartError> {
    for warning in &config.warnings {
        tracing::warn!("{warning}");
    }
    let app = Arc::new(App::new(config)?);
    let reloads = source.map(|source| {
        tokio::spawn(crate::reload::watch(
            Arc::clone(&app),
            source,
            Arc::new(crate::config::ProcessEnv),
        ))
    });
    app.metrics.install_global();
    // Boxed: the serving future is large, and callers hold this one across their awaits.
    Box::pin(serve_on(here, workers, app, shutdown)).await;
    if let Some(task) = reloads {
        task.abort();
    }
    Ok(())
}

/// One accept loop's runtime and its socket: built on the caller's thread by
/// [`bind_workers`], so bind errors surface before anything is served.
pub struct Worker {
    runtime: tokio::runtime::Runtime,
    listener: TcpListener,
}

impl Worker {
    /// The address this worker's socket is bound to (the same for all of them).
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }
}

/// `workers` single-threaded runtimes, each with its own socket bound to `addr` with
/// `SO_REUSEPORT`, so the kernel spreads new connections over them and a connection lives
/// on one core from accept to close. Port 0 picks one free port that all of them share.
///
/// `SO_REUSEPORT` would also let a second gatehouse (same user) bind the same port and
/// silently take half the connections; a plain bind first makes that `AddrInUse`.
pub fn bind_workers(addr: SocketAddr, workers: usize) -> std::io::Result<Vec<Worker>> {
    if addr.port() != 0 {
        drop(std::net::TcpListener::bind(addr)?);
    }
    let mut bound = Vec::with_capacity(workers);
    let mut addr = addr;
    for _ in 0..workers.max(1) {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let listener = {
            // A tokio socket belongs to the runtime it is registered in.
            let _inside = runtime.enter();
            let socket = match addr {
                SocketAddr::V4(_) => tokio::net::TcpSocket::new_v4()?,
                SocketAddr::V6(_) => tokio::net::TcpSocket::new_v6()?,
            };
            socket.set_reuseaddr(true)?;
            socket.set_reuseport(true)?;
            socket.bind(addr)?;
            socket.listen(LISTEN_BACKLOG)?
        };
        addr = listener.local_addr()?;
        bound.push(Worker { runtime, listener });
    }
    Ok(bound)
}

/// Pending connections per socket, as nginx's default on Linux.
const LISTEN_BACKLOG: u32 = 511;

/// Like [`run_reloadable`], on [`bind_workers`]' runtimes (the binary's `run`). Background
/// work (provider metadata, reloads, `/metrics`) stays on the caller's runtime; requests
/// run on the workers. Connection limits, sessions and everything else are shared.
pub async fn run_workers(
    workers: Vec<Worker>,
    config: Config,
    source: Option<crate::reload::Source>,
    shutdown: impl Future<Output = ()>,
) -> Result<(), StartError> {
    run_on(None, workers, config, source, shutdown).await
}

/// Serves an already built `app` (tests keep a handle on it to look inside), and `/metrics`
/// when configured. Only [`run`] installs the metrics recorder for the whole process; callers
/// of `serve` install it where they want the counters recorded (tests: their own thread).
pub async fn serve(listener: TcpListener, app: Arc<App>, shutdown: impl Future<Output = ()>) {
    serve_on(Some(listener), Vec::new(), app, shutdown).await;
}

/// Like [`serve`], accepting on `workers` (see [`bind_workers`]), each on its own thread.
pub async fn serve_workers(
    workers: Vec<Worker>,
    app: Arc<App>,
    shutdown: impl Future<Output = ()>,
) {
    serve_on(None, workers, app, shutdown).await;
}

/// What every accept loop shares: one connection budget, one per-IP count, one drain.
#[derive(Clone)]
struct Acceptor {
    app: Arc<App>,
    protocols: Arc<Protocols>,
    limit: Arc<Semaphore>,
    per_ip: Arc<PerIp>,
    /// Every connection task holds a clone; draining waits until all are dropped.
    alive: mpsc::Sender<()>,
    /// Turns true when connections are to finish their requests and close.
    stopping: watch::Receiver<bool>,
}

async fn serve_on(
    here: Option<TcpListener>,
    workers: Vec<Worker>,
    app: Arc<App>,
    shutdown: impl Future<Output = ()>,
) {
    let discovery = tokio::spawn(discover(Arc::clone(&app)));
    let scrape = crate::telemetry::scrape::spawn(&app.metrics);
    let store = app.sessions.store.clone();
    tokio::spawn(async move { store.probe().await });
    let limits = tokio::spawn(forget_quiet_clients(Arc::clone(&app)));
    let config = app.snapshot();
    let server = &config.server;
    let (alive, mut drained) = mpsc::channel::<()>(1);
    let (stop, stopping) = watch::channel(false);
    let acceptor = Acceptor {
        app: Arc::clone(&app),
        protocols: Arc::new(Protocols::new()),
        limit: Arc::new(Semaphore::new(server.max_connections)),
        per_ip: PerIp::new(server.max_connections_per_ip),
        alive,
        stopping,
    };
    let listen = here
        .as_ref()
        .or(workers.first().map(|w| &w.listener))
        .and_then(|l| l.local_addr().ok())
        .map(|a| a.to_string())
        .unwrap_or_default();
    tracing::info!(
        listen = %listen,
        workers = workers.len().max(1),
        origin = %server.origin,
        store = app.sessions.store.kind(),
        routes = config.routes.iter().count(),
        "gatehouse listening"
    );
    drop(config);
    // Accept loops end when `quit` turns true; worker threads then wait for `finished`
    // (connections drained or the grace spent) before their runtimes drop.
    let (quit, quitting) = watch::channel(false);
    let (finished, finishing) = watch::channel(false);
    let threads: Vec<_> = workers
        .into_iter()
        .enumerate()
        .filter_map(|(i, worker)| {
            let (acceptor, mut quitting, mut finishing) =
                (acceptor.clone(), quitting.clone(), finishing.clone());
            let spawned = std::thread::Builder::new()
                .name(format!("gatehouse-worker-{i}"))
                .spawn(move || {
                    use crate::telemetry::batch;
                    let Worker { runtime, listener } = worker;
                    // Upstream connections made here stay here (`proxy::clients`).
                    crate::proxy::clients::set_lane(i);
                    // Log lines of this thread go out in batches (`telemetry::batch`).
                    let batching = batch::Batching::start();
                    runtime.block_on(async move {
                        let flusher = tokio::spawn(async {
                            let mut every = tokio::time::interval(batch::FLUSH_EVERY);
                            loop {
                                every.tick().await;
                                batch::flush();
                            }
                        });
                        accept(listener, acceptor, async move {
                            let _ = quitting.wait_for(|q| *q).await;
                        })
                        .await;
                        let _ = finishing.wait_for(|f| *f).await;
                        flusher.abort();
                    });
                    drop(runtime);
                    drop(batching);
                });
            spawned
                .map_err(|e| tracing::error!(error = %e, "cannot start a worker thread"))
                .ok()
        })
        .collect();
    match here {
        Some(listener) => accept(listener, acceptor.clone(), shutdown).await,
        None => shutdown.await,
    }
    let _ = quit.send(true);
    drop(acceptor);
    discovery.abort();
    limits.abort();
    tracing::info!(
        websockets = app.sockets.len(),
        "shutting down: finishing in-flight requests, closing WebSockets"
    );
    app.sockets.close_all(Close::Shutdown);
    let _ = stop.send(true);
    let closed = tokio::select! {
        _ = drained.recv() => true,
        () = tokio::time::sleep(app.config().server.shutdown_grace) => false,
    };
    let _ = finished.send(true);
    for thread in threads {
        let _ = tokio::task::spawn_blocking(move || thread.join()).await;
    }
    // After the workers ended, so their last (batched) log lines come before this one.
    if closed {
        tracing::info!("all connections closed");
    } else {
        tracing::warn!("shutdown grace elapsed with connections still open");
    }
    // Scrapes go on while connections drain.
    if let Some(scrape) = scrape {
        scrape.abort();
    }
}

/// Accepts on `listener` until `stop` completes, within the shared limits.
async fn accept(listener: TcpListener, acceptor: Acceptor, stop: impl Future<Output = ()>) {
    let Acceptor {
        app,
        protocols,
        limit,
        per_ip,
        alive,
        stopping,
    } = acceptor;
    tokio::pin!(stop);
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(pair) => pair,
                Err(e) => {
                    // EMFILE and friends: back off instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut stop => break,
        };
        let Ok(permit) = Arc::clone(&limit).try_acquire_owned() else {
            tracing::warn!("connection limit reached, closing a new connection");
            continue;
        };
        let Some(ip_slot) = per_ip.acquire(peer.ip()) else {
            tracing::warn!("per-client connection limit reached, closing a new connection");
            continue;
        };
        let _ = stream.set_nodelay(true);
        let open = app.metrics.connection_opened();
        let (app, protocols, alive, stopping) = (
            Arc::clone(&app),
            Arc::clone(&protocols),
            alive.clone(),
            stopping.clone(),
        );
        tokio::spawn(async move {
            let slot = Slot::new(permit, ip_slot, alive, open);
            connection(app, &protocols, stream, peer, stopping, slot).await;
        });
    }
}

/// How both protocols are served. The connection's first bytes already told which one it
/// speaks ([`protocol_sniffed`]), so each is served by its own hyper builder: no second
/// sniff of the preface and no rewind wrapper around every read, as an auto-detecting
/// builder would add.
struct Protocols {
    http1: http1::Builder,
    http2: http2::Builder<TokioExecutor>,
}

impl Protocols {
    fn new() -> Protocols {
        let mut http1 = http1::Builder::new();
        http1
            // `server.header_read_timeout` is the connection's (`conn::Expiry`), not hyper's:
            // hyper's arms a timer per request and runs it while a keep-alive connection
            // idles too, closing it long before `server.idle_timeout`.
            .header_read_timeout(None)
            // No `.max_headers(MAX_HEADERS)`: hyper's own HTTP/1 cap is the same 100 fields
            // (431 past it), and setting one makes hyper fill a 100-entry buffer for every
            // request. A memory bound only: the exact head-size limit is the pipeline's.
            .max_buf_size(MAX_HEAD_BYTES * 2);
        let mut http2 = http2::Builder::new(TokioExecutor::new());
        http2
            .timer(TokioTimer::new())
            .keep_alive_interval(H2_KEEP_ALIVE)
            .keep_alive_timeout(H2_KEEP_ALIVE)
            .max_concurrent_streams(MAX_H2_STREAMS)
            // RFC 8441: WebSockets over HTTP/2 (extended CONNECT with `:protocol = websocket`).
            .enable_connect_protocol()
            .max_header_list_size(u32::try_from(MAX_HEAD_BYTES * 2).unwrap_or(u32::MAX));
        Protocols { http1, http2 }
    }
}

/// Serves one connection until it ends, the server stops (graceful: in-flight requests
/// finish), or it sits idle for `server.idle_timeout` with nothing in flight.
async fn connection(
    app: Arc<App>,
    protocols: &Protocols,
    stream: TcpStream,
    peer: SocketAddr,
    stopping: watch::Receiver<bool>,
    slot: Arc<Slot>,
) {
    // A connection that never says which protocol it speaks would hold its slot forever.
    let (header_read_timeout, idle_timeout) = {
        let server = &app.config().server;
        (server.header_read_timeout, server.idle_timeout)
    };
    let Some(protocol) = protocol_sniffed(&stream, header_read_timeout).await else {
        return;
    };
    // HTTP/1 sends its first head now; HTTP/2 has no head timeout (pings keep it busy).
    let http1 = protocol == Protocol::Http1;
    let activity = Activity::new(http1);
    let expiry = Expiry::new(
        Arc::clone(&activity),
        idle_timeout,
        http1.then_some(header_read_timeout),
    );
    let service = {
        let activity = Arc::clone(&activity);
        let handle = ConnHandle::new(slot, Arc::clone(&activity));
        let peer = Peer::new(peer);
        service_fn(move |mut req: http::Request<hyper::body::Incoming>| {
            let in_flight = activity.begin();
            if websocket::may_upgrade(&req) {
                req.extensions_mut().insert(handle.clone());
            }
            let app = Arc::clone(&app);
            let peer = peer.clone();
            let req = Box::new(req);
            async move {
                let res = pipeline::handle(app, peer, req).await?;
                Ok::<_, Infallible>(res.map(|body| Tracked::new(body, in_flight)))
            }
        })
    };
    let io = TokioIo::new(ClientStream::new(stream, Arc::clone(&activity)));
    match protocol {
        Protocol::Http1 => {
            let conn = protocols
                .http1
                .serve_connection(io, service)
                .with_upgrades();
            drive(conn, |c| c.graceful_shutdown(), expiry, stopping).await;
        }
        Protocol::Http2 => {
            let conn = protocols.http2.serve_connection(io, service);
            drive(conn, |c| c.graceful_shutdown(), expiry, stopping).await;
        }
    }
}

/// Runs `conn` to its end: `close` (its graceful shutdown) when the server stops or the
/// connection idles past `expiry`; dropped at once when a request head comes too slowly.
async fn drive<C>(
    conn: C,
    close: fn(Pin<&mut C>),
    expiry: Expiry,
    mut stopping: watch::Receiver<bool>,
) where
    C: Future<Output = hyper::Result<()>>,
{
    tokio::pin!(conn, expiry);
    let (mut closing, mut expired) = (false, false);
    loop {
        // Biased: the connection first, so that the expiry sees what its reads just told
        // the activity (a head that began) before it decides how long to sleep.
        tokio::select! {
            biased;
            result = conn.as_mut() => {
                if let Err(e) = result {
                    tracing::debug!(error = %e, "connection ended with an error");
                }
                return;
            }
            _ = stopping.wait_for(|stop| *stop), if !closing => {
                close(conn.as_mut());
                closing = true;
            }
            why = &mut expiry, if !expired => {
                expired = true;
                match why {
                    Expired::Idle => {
                        tracing::debug!("closing an idle connection");
                        close(conn.as_mut());
                        closing = true;
                    }
                    // Dropped, not shut down: a head in progress would hold a graceful close
                    // open until the client finished it.
                    Expired::SlowHead => {
                        tracing::debug!("dropping a connection too slow to send a request head");
                        return;
                    }
                }
            }
        }
    }
}

/// Drops the rate-limit state of clients that went quiet, every minute.
async fn forget_quiet_clients(app: Arc<App>) {
    let mut tick = tokio::time::interval(Duration::from_secs(60));
    loop {
        tick.tick().await;
        app.login_limits.load().forget_quiet();
    }
}

/// Loads provider metadata and keys, then keeps them fresh in the background (see
/// [`crate::oidc::Oidc::maintain`]); runs until aborted at shutdown.
async fn discover(app: Arc<App>) {
    app.oidc.maintain().await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_gatehouse_cannot_bind_a_port_the_first_one_holds() {
        let first = bind_workers("127.0.0.1:0".parse().unwrap(), 2).unwrap();
        let taken = first[0].local_addr().unwrap();
        let second = bind_workers(taken, 2).err().map(|e| e.kind());
        assert_eq!(second, Some(std::io::ErrorKind::AddrInUse));
    }
}
