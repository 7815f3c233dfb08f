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

/// A raw HTTP/1.1 request to `/` whose head (request line, header lines, final CRLF) is
/// exactly `size` bytes.
fn request_of_head_size(host: &str, size: usize) -> String {
    let base = format!("GET / HTTP/1.1\r\nHost: {host}\r\nX-Pad: \r\n\r\n");
    assert!(size >= base.len());
    let pad = "a".repeat(size - base.len());
    format!("GET / HTTP/1.1\r\nHost: {host}\r\nX-Pad: {pad}\r\n\r\n")
}

/// Writes `request` in `chunk`-byte segments, then reads one response head; returns its status.
#[tokio::test]
async fn the_connection_limit_is_shared_by_every_worker() {
    let provider = TestProvider::start(ProviderOptions::default()).await;
    let upstream = EchoUpstream::start().await;
    let text = config(&provider, &upstream, "").replacen(
        "shutdown_grace = \"5s\"",
        "shutdown_grace = \"5s\"\nheader_read_timeout = \"30s\"\nmax_connections = 1\nmax_connections_per_ip = 0",
        1,
    );
    // Four accept loops: with a limit per loop, sixteen connections spread by the kernel
    // would keep several open.
    let gh = Gatehouse::start_on_workers(&text, 4).await;
    // Whether the server keeps `s` open (it closes a refused connection at once).
    async fn held(s: &mut tokio::net::TcpStream) -> bool {
        let mut buf = [0u8; 16];
        let read = tokio::time::timeout(Duration::from_millis(500), s.read(&mut buf)).await;
        !matches!(read, Ok(Ok(0)) | Ok(Err(_)))
    }
    // The readiness probe's connection may still hold the one slot for a moment.
    let mut first = None;
    for _ in 0..20 {
        let mut s = tokio::net::TcpStream::connect(gh.addr).await.unwrap();
        if held(&mut s).await {
            first = Some(s);
            break;
        }
    }
    let _first = first.expect("one connection is accepted");
    let mut checks = tokio::task::JoinSet::new();
    for _ in 0..15 {
        let mut s = tokio::net::TcpStream::connect(gh.addr).await.unwrap();
        checks.spawn(async move { held(&mut s).await });
    }
    let open = checks.join_all().await.into_iter().filter(|h| *h).count();
    assert_eq!(
        open, 0,
        "connections held beyond max_connections = 1 across four workers"
    );
}

async fn send_segmented(s: &mut tokio::net::TcpStream, request: &str, chunk: usize) -> u16 {
    for part in request.as_bytes().chunks(chunk) {
        s.write_all(part).await.unwrap();
        s.flush().await.unwrap();
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    read_response(s).await
}

/// Reads one whole response (headers and a Content-Length body) and returns its status.
async fn read_response(s: &mut tokio::net::TcpStream) -> u16 {
    let mut buf = Vec::new();
    let mut byte = [0u8; 1];
    while !buf.ends_with(b"\r\n\r\n") {
        let n = tokio::time::timeout(Duration::from_secs(5), s.read(&mut byte))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(
            n,
            1,
            "connection closed mid-response: {:?}",
            String::from_utf8_lossy(&buf)
        );
        buf.push(byte[0]);
    }
    let head = String::from_utf8_lossy(&buf).to_ascii_lowercase();
    let len: usize = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length: "))
        .map_or(0, |v| v.trim().parse().unwrap());
    let mut body = vec![0u8; len];
    s.read_exact(&mut body).await.unwrap();
    head.split(' ').nth(1).unwrap().parse().unwrap()
}

#[tokio::test]
async fn request_heads_are_capped_at_exactly_64_kib_on_new_and_reused_connections() {
    let (_p, _u, gh) = stack_with_server("").await;
    let host = gh.addr.to_string();
    let limit = 64 * 1024;
    for (size, expected) in [(limit, 200), (limit + 1, 431), (70_000, 431)] {
        // A fresh connection, the head in one write.
        let mut fresh = tokio::net::TcpStream::connect(gh.addr).await.unwrap();
        let status =
            send_segmented(&mut fresh, &request_of_head_size(&host, size), usize::MAX).await;
        assert_eq!(status, expected, "{size} bytes, fresh connection");

        // A kept-alive connection that served a request already, the head in small segments.
        let mut reused = tokio::net::TcpStream::connect(gh.addr).await.unwrap();
        let small = format!("GET / HTTP/1.1\r\nHost: {host}\r\n\r\n");
        assert_eq!(send_segmented(&mut reused, &small, usize::MAX).await, 200);
        let status = send_segmented(&mut reused, &request_of_head_size(&host, size), 997).await;
        assert_eq!(
            status, expected,
            "{size} bytes, reused connection, 997-byte segments"
        );
    }
}

#[tokio::test]
async fn a_request_with_more_than_100_header_fields_is_refused_with_431_and_100_pass() {
    let (_p, _u, gh) = stack_with_server("").await;
    let host = gh.addr.to_string();
    // `Host` is one field: 99 more make 100, 100 more make 101. Gatehouse answers `/healthz`
    // itself, so no upstream's own cap is in the way.
    for (extra, expected) in [(99, 200), (100, 431)] {
        let fields: String = (0..extra)
            .map(|i| format!("X-Field-{i}: {i}\r\n"))
            .collect();
        let request = format!("GET /healthz HTTP/1.1\r\nHost: {host}\r\n{fields}\r\n");
        let mut s = tokio::net::TcpStream::connect(gh.addr).await.unwrap();
        let status = send_segmented(&mut s, &request, usize::MAX).await;
        assert_eq!(status, expected, "{} header fields", extra + 1);
    }
}

#[tokio::test]
async fn a_keep_alive_connection_idles_past_the_header_timeout_until_idle_timeout() {
    let (_p, _u, gh) =
        stack_with_server("header_read_timeout = \"1s\"\nidle_timeout = \"4s\"").await;
    let request = format!("GET /healthz HTTP/1.1\r\nHost: {}\r\n\r\n", gh.addr);
    let mut s = tokio::net::TcpStream::connect(gh.addr).await.unwrap();
    assert_eq!(send_segmented(&mut s, &request, usize::MAX).await, 200);
    // Idle for twice the header timeout: no head is being sent, so only idle_timeout counts.
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        send_segmented(&mut s, &request, usize::MAX).await,
        200,
        "the same connection still serves after 2 s idle"
    );
    let t = closed_after(s).await;
    assert!(
        t >= Duration::from_millis(3500) && t < Duration::from_secs(5),
        "closed {t:?} after its last request (idle_timeout is 4 s)"
    );
}

#[tokio::test]
async fn a_slow_first_head_is_dropped_at_the_header_timeout_even_with_a_shorter_idle_timeout() {
    // A graceful close at idle_timeout would wait for the head to finish: it never does.
    let (_p, _u, gh) =
        stack_with_server("header_read_timeout = \"2s\"\nidle_timeout = \"1s\"").await;
    let mut s = tokio::net::TcpStream::connect(gh.addr).await.unwrap();
    s.write_all(b"GET /healthz HTTP/1.1\r\nX-Slow: ")
        .await
        .unwrap();
    let t = closed_after(s).await;
    assert!(
        t >= Duration::from_millis(1800) && t < Duration::from_secs(4),
        "an unfinished first head held the connection for {t:?}"
    );
}

#[tokio::test]
async fn a_head_left_unfinished_on_a_kept_alive_connection_is_cut_at_the_header_timeout() {
    let (_p, _u, gh) =
        stack_with_server("header_read_timeout = \"1s\"\nidle_timeout = \"30s\"").await;
    let host = gh.addr.to_string();
    let mut s = tokio::net::TcpStream::connect(gh.addr).await.unwrap();
    let first = format!("GET /healthz HTTP/1.1\r\nHost: {host}\r\n\r\n");
    assert_eq!(send_segmented(&mut s, &first, usize::MAX).await, 200);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    s.write_all(format!("GET /healthz HTTP/1.1\r\nHost: {host}\r\n").as_bytes())
        .await
        .unwrap();
    let t = closed_after(s).await;
    assert!(
        t >= Duration::from_millis(900) && t < Duration::from_secs(3),
        "an unfinished head held the connection for {t:?} (idle_timeout is 30 s)"
    );
}

#[tokio::test]
async fn an_idle_http2_connection_is_closed_even_while_it_answers_pings() {
    let (_p, _u, gh) = stack_with_server("idle_timeout = \"1s\"").await;
    let stream = tokio::net::TcpStream::connect(gh.addr).await.unwrap();
    let (mut h2, conn) =
        hyper::client::conn::http2::Builder::new(hyper_util::rt::TokioExecutor::new())
            .timer(hyper_util::rt::TokioTimer::new())
            .keep_alive_interval(Duration::from_millis(200))
            .keep_alive_while_idle(true)
            .handshake::<_, http_body_util::Empty<bytes::Bytes>>(hyper_util::rt::TokioIo::new(
                stream,
            ))
            .await
            .unwrap();
    let started = Instant::now();
    let conn = tokio::spawn(conn);
    let req = hyper::Request::get(gh.url("/healthz"))
        .body(http_body_util::Empty::new())
        .unwrap();
    assert_eq!(h2.send_request(req).await.unwrap().status(), 200);
    let closed = tokio::time::timeout(Duration::from_secs(5), conn).await;
    assert!(closed.is_ok(), "the idle connection was never closed");
    let after = started.elapsed();
    assert!(
        after >= Duration::from_millis(900) && after < Duration::from_secs(3),
        "closed after {after:?}"
    );
}

#[tokio::test]
async fn an_idle_keep_alive_connection_is_closed_but_a_long_request_is_not() {
    let (_p, _u, gh) = stack_with_server("idle_timeout = \"1s\"").await;
    let host = gh.addr.to_string();
    let mut s = tokio::net::TcpStream::connect(gh.addr).await.unwrap();
    // The upstream takes 2 s, longer than the idle timeout: in flight is not idle.
    let slow = format!("GET /opt/slow HTTP/1.1\r\nHost: {host}\r\nX-CSRF: 1\r\n\r\n");
    assert_eq!(send_segmented(&mut s, &slow, usize::MAX).await, 200);
    let idle_for = closed_after(s).await;
    assert!(
        idle_for >= Duration::from_millis(900) && idle_for < Duration::from_secs(3),
        "the idle connection was closed after {idle_for:?}"
    );
}

#[tokio::test]
async fn one_client_ip_cannot_hold_more_than_its_share_of_connections() {
    let (_p, _u, gh) =
        stack_with_server("header_read_timeout = \"5s\"\nmax_connections_per_ip = 2").await;
    // Let the readiness probe's own connections finish closing first.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let _a = tokio::net::TcpStream::connect(gh.addr).await.unwrap();
    let _b = tokio::net::TcpStream::connect(gh.addr).await.unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    let third = tokio::net::TcpStream::connect(gh.addr).await.unwrap();
    assert!(
        closed_after(third).await < Duration::from_secs(1),
        "a third connection from 127.0.0.1 is closed at once"
    );
    // Another loopback address is another client.
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind("127.0.0.2:0".parse().unwrap()).unwrap();
    let mut other = socket.connect(gh.addr).await.unwrap();
    let ping = format!("GET /healthz HTTP/1.1\r\nHost: {}\r\n\r\n", gh.addr);
    assert_eq!(send_segmented(&mut other, &ping, usize::MAX).await, 200);
}
