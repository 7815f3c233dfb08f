//! The floor for `scripts/loadtest.sh`: the smallest reverse proxy on the same parts as
//! gatehouse (hyper 1 server, hyper-util's pooled client, one current-thread runtime per
//! worker on its own `SO_REUSEPORT` socket, a pool per worker, its allocator), with no logic
//! at all: no routes, sessions, header hygiene, logs or metrics. What gatehouse costs above it
//! is its own; what it costs against nginx is the stack's.
//!
//!   cargo run --release --example bare_proxy -- LISTEN UPSTREAM [WORKERS]
//!   cargo run --release --example bare_proxy -- 127.0.0.1:8000 127.0.0.1:9000 2

use std::net::SocketAddr;

use http::Uri;
use http::uri::{Authority, Scheme};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo};

#[global_allocator]
static ALLOCATOR: gatehouse::Allocator = gatehouse::Allocator;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let (Some(listen), Some(upstream)) = (args.next(), args.next()) else {
        return Err("usage: bare_proxy LISTEN UPSTREAM [WORKERS]".into());
    };
    let listen: SocketAddr = listen.parse()?;
    let upstream: Authority = upstream.parse()?;
    let workers: usize = args.next().map_or(Ok(2), |w| w.parse())?;
    let threads: Vec<_> = (0..workers)
        .map(|_| {
            let upstream = upstream.clone();
            std::thread::spawn(move || worker(listen, upstream))
        })
        .collect();
    for thread in threads {
        thread.join().map_err(|_| "a worker panicked")??;
    }
    Ok(())
}

fn worker(listen: SocketAddr, upstream: Authority) -> Result<(), std::io::Error> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        let socket = tokio::net::TcpSocket::new_v4()?;
        socket.set_reuseaddr(true)?;
        socket.set_reuseport(true)?;
        socket.bind(listen)?;
        serve(socket.listen(511)?, upstream).await
    })
}

/// Forwards every request on `listener` to `upstream`, as it came.
pub async fn serve(
    listener: tokio::net::TcpListener,
    upstream: Authority,
) -> Result<(), std::io::Error> {
    let client: Client<HttpConnector, Incoming> =
        Client::builder(TokioExecutor::new()).build_http();
    loop {
        let (stream, _) = listener.accept().await?;
        let _ = stream.set_nodelay(true);
        let (client, upstream) = (client.clone(), upstream.clone());
        tokio::spawn(async move {
            let service = service_fn(move |mut req: http::Request<Incoming>| {
                let mut parts = req.uri().clone().into_parts();
                parts.scheme = Some(Scheme::HTTP);
                parts.authority = Some(upstream.clone());
                if let Ok(uri) = Uri::from_parts(parts) {
                    *req.uri_mut() = uri;
                }
                client.request(req)
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}
