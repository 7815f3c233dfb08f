//! The accept loop: HTTP/1.1 and HTTP/2 on one listener, a connection limit, header-read
//! timeouts, and graceful shutdown that lets in-flight requests finish.

use std::sync::Arc;
use std::time::Duration;

use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

use crate::app::{App, StartError};
use crate::config::Config;
use crate::pipeline;

/// Largest request head (request line + headers) accepted, per connection buffer.
const MAX_HEADER_BYTES: usize = 64 * 1024;
const MAX_H2_STREAMS: u32 = 256;
/// HTTP/2 pings: a peer that stops answering is dropped after twice this.
const H2_KEEP_ALIVE: Duration = Duration::from_secs(20);
const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// Waits, at most `limit`, until the first bytes tell HTTP/1 from HTTP/2: anything that is
/// not a prefix of the HTTP/2 preface is HTTP/1 (whose header timeout then applies); an
/// HTTP/2 client must send the whole preface. Silent or stalled connections are dropped.
async fn protocol_sniffed(stream: &tokio::net::TcpStream, limit: Duration) -> bool {
    let mut buf = [0u8; 24];
    let sniff = async {
        loop {
            match stream.peek(&mut buf).await {
                Ok(0) | Err(_) => return false,
                Ok(n) if n >= H2_PREFACE.len() || buf[..n] != H2_PREFACE[..n] => return true,
                // A partial preface: wait for the rest without spinning.
                Ok(_) => tokio::time::sleep(Duration::from_millis(5)).await,
            }
        }
    };
    tokio::time::timeout(limit, sniff).await.unwrap_or(false)
}

/// Serves `config` on `listener` until `shutdown` completes, then drains connections for at
/// most `server.shutdown_grace`.
pub async fn run(
    listener: TcpListener,
    config: Config,
    shutdown: impl Future<Output = ()>,
) -> Result<(), StartError> {
    for warning in &config.warnings {
        tracing::warn!("{warning}");
    }
    let app = Arc::new(App::new(config)?);
    let discovery = tokio::spawn(discover(Arc::clone(&app)));
    let store = app.sessions.store.clone();
    tokio::spawn(async move { store.probe().await });
    let limit = Arc::new(Semaphore::new(app.config.server.max_connections));
    let graceful = GracefulShutdown::new();

    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(app.config.server.header_read_timeout)
        .max_buf_size(MAX_HEADER_BYTES);
    builder
        .http2()
        .timer(TokioTimer::new())
        .keep_alive_interval(H2_KEEP_ALIVE)
        .keep_alive_timeout(H2_KEEP_ALIVE)
        .max_concurrent_streams(MAX_H2_STREAMS)
        .max_header_list_size(u32::try_from(MAX_HEADER_BYTES).unwrap_or(u32::MAX));

    let builder = Arc::new(builder);
    tracing::info!(
        listen = %listener.local_addr().map(|a| a.to_string()).unwrap_or_default(),
        origin = %app.config.server.origin,
        store = app.sessions.store.kind(),
        routes = app.config.routes.iter().count(),
        "gatehouse listening"
    );
    tokio::pin!(shutdown);
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
            () = &mut shutdown => break,
        };
        let Ok(permit) = Arc::clone(&limit).try_acquire_owned() else {
            tracing::warn!("connection limit reached, closing a new connection");
            continue;
        };
        let _ = stream.set_nodelay(true);
        let app = Arc::clone(&app);
        let (builder, watcher) = (Arc::clone(&builder), graceful.watcher());
        tokio::spawn(async move {
            // A connection that never says which protocol it speaks would hold its slot forever.
            if !protocol_sniffed(&stream, app.config.server.header_read_timeout).await {
                drop(permit);
                return;
            }
            let service = service_fn(move |req| pipeline::handle(Arc::clone(&app), peer, req));
            let conn = builder
                .serve_connection(TokioIo::new(stream), service)
                .into_owned();
            if let Err(e) = watcher.watch(conn).await {
                tracing::debug!(error = %e, "connection ended with an error");
            }
            drop(permit);
        });
    }
    drop(listener);
    discovery.abort();
    tracing::info!("shutting down: finishing in-flight requests");
    tokio::select! {
        () = graceful.shutdown() => tracing::info!("all connections closed"),
        () = tokio::time::sleep(app.config.server.shutdown_grace) => tracing::warn!("shutdown grace elapsed with connections still open"),
    }
    Ok(())
}

/// Loads provider metadata, retrying with backoff until it succeeds.
async fn discover(app: Arc<App>) {
    let mut delay = Duration::from_millis(250);
    loop {
        match app.oidc.discover().await {
            Ok(()) => {
                tracing::info!(issuer = %app.oidc.settings.issuer, "provider metadata loaded");
                return;
            }
            Err(e) => {
                tracing::warn!(error = %e, retry_in_ms = u64::try_from(delay.as_millis()).unwrap_or(0), "provider discovery failed");
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(30));
            }
        }
    }
}
