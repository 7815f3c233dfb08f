//! Connection hygiene: silent or stalled connections cannot hold slots, and the connection
//! limit sheds load instead of queueing it forever.
#![allow(clippy::unwrap_used, reason = "tests fail loudly")]

mod support;

use std::time::{Duration, Instant};

use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

async fn stack_with_server(extra: &str) -> (TestProvider, EchoUpstream, Gatehouse) {
    let provider = TestProvider::start(ProviderOptions::default()).await;
    let upstream = EchoUpstream::start().await;
    let text = config(&provider, &upstream, "").replacen(
        "shutdown_grace = \"5s\"",
        &format!("shutdown_grace = \"5s\"\n{extra}"),
        1,
    );
    let gh = Gatehouse::start(&text).await;
    (provider, upstream, gh)
}

/// Reads until the server closes the connection; returns how long that took.
async fn closed_after(mut s: tokio::net::TcpStream) -> Duration {
    let started = Instant::now();
    let mut buf = [0u8; 256];
    loop {
        match tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return started.elapsed(),
            Ok(Ok(_)) => {}
            Err(_) => return Duration::MAX,
        }
    }
}

#[tokio::test]
async fn silent_and_stalled_connections_are_dropped_after_the_header_timeout() {
    let (_p, _u, gh) = stack_with_server("header_read_timeout = \"1s\"").await;
    let silent = tokio::net::TcpStream::connect(gh.addr).await.unwrap();
    let mut stalled = tokio::net::TcpStream::connect(gh.addr).await.unwrap();
    stalled.write_all(b"PRI * HTTP/2.0\r\n").await.unwrap();
    let mut slow_http1 = tokio::net::TcpStream::connect(gh.addr).await.unwrap();
    slow_http1
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
        .await
        .unwrap();
    let (a, b, c) = tokio::join!(
        closed_after(silent),
        closed_after(stalled),
        closed_after(slow_http1)
    );
    for (name, t) in [
        ("silent", a),
        ("partial h2 preface", b),
        ("unfinished headers", c),
    ] {
        assert!(
            t < Duration::from_secs(3),
            "{name} connection held for {t:?}"
        );
    }
}

#[tokio::test]
async fn the_connection_limit_frees_slots_held_by_idle_sockets() {
    let (_p, _u, gh) = stack_with_server("header_read_timeout = \"1s\"\nmax_connections = 2").await;
    let _idle1 = tokio::net::TcpStream::connect(gh.addr).await.unwrap();
    let _idle2 = tokio::net::TcpStream::connect(gh.addr).await.unwrap();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let res = reqwest::Client::new()
        .get(gh.url("/healthz"))
        .send()
        .await
        .unwrap();
    assert_eq!(
        res.status(),
        200,
        "slots came back once the idle sockets timed out"
    );
}
