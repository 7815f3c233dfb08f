//! Long responses stream through: server-sent events arrive event by event for longer than
//! the route's timeout, only idle time between chunks ends a stream, a client that leaves
//! cancels the upstream request, and response trailers pass.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "tests fail loudly"
)]

mod support;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::StreamExt as _;
use http_body_util::{BodyExt as _, Empty, StreamBody};
use hyper::body::Frame;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use support::*;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;

type Frames =
    StreamBody<futures_util::stream::BoxStream<'static, Result<Frame<Bytes>, Infallible>>>;

/// An upstream that streams: `?n=N&gap=MS` sends N chunks `data: i\n\n` MS apart (SSE),
/// `&stall=K` stops for good after K chunks, `&trailers` ends with an `x-checksum` trailer.
/// Counts the responses it could not finish because the other side went away.
struct Streamer {
    addr: SocketAddr,
    cancelled: Arc<AtomicUsize>,
}

impl Streamer {
    async fn start() -> Streamer {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let cancelled = Arc::new(AtomicUsize::new(0));
        let counter = Arc::clone(&cancelled);
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let counter = Arc::clone(&counter);
                tokio::spawn(async move {
                    let svc = service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                        let counter = Arc::clone(&counter);
                        async move { Ok::<_, Infallible>(stream_response(req.uri(), counter)) }
                    });
                    let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(stream), svc)
                        .await;
                });
            }
        });
        Streamer { addr, cancelled }
    }

    fn url(&self) -> String {
        format!("http://{}", self.addr)
    }
}

fn stream_response(uri: &http::Uri, cancelled: Arc<AtomicUsize>) -> hyper::Response<Frames> {
    let query: std::collections::HashMap<String, String> =
        url::form_urlencoded::parse(uri.query().unwrap_or_default().as_bytes())
            .into_owned()
            .collect();
    let get = |k: &str, d: u64| query.get(k).map_or(d, |v| v.parse().unwrap());
    let (n, gap, stall) = (get("n", 3), get("gap", 100), get("stall", u64::MAX));
    let trailers = query.contains_key("trailers");
    let (tx, rx) = mpsc::channel::<Frame<Bytes>>(1);
    tokio::spawn(async move {
        for i in 0..n {
            if i == stall {
                std::future::pending::<()>().await;
            }
            if tx
                .send(Frame::data(Bytes::from(format!("data: {i}\n\n"))))
                .await
                .is_err()
            {
                cancelled.fetch_add(1, Ordering::SeqCst);
                return;
            }
            tokio::time::sleep(Duration::from_millis(gap)).await;
        }
        if trailers {
            let mut t = http::HeaderMap::new();
            t.insert("x-checksum", "abc123".parse().unwrap());
            let _ = tx.send(Frame::trailers(t)).await;
        }
    });
    let stream =
        futures_util::stream::unfold(
            rx,
            |mut rx| async move { rx.recv().await.map(|f| (Ok(f), rx)) },
        );
    let mut res = hyper::Response::new(StreamBody::new(stream.boxed()));
    res.headers_mut()
        .insert("content-type", "text/event-stream".parse().unwrap());
    if trailers {
        res.headers_mut()
            .insert("trailer", "x-checksum".parse().unwrap());
    }
    res
}

/// The usual config with every route pointing at the streamer, `timeout = "2s"` on `/api/`
/// plus `api_route`.
async fn stack(api_route: &str) -> (TestProvider, Streamer, Gatehouse, Browser) {
    let provider = TestProvider::start(ProviderOptions::default()).await;
    let streamer = Streamer::start().await;
    let echo = EchoUpstream::start().await;
    let text = config(&provider, &echo, "")
        .replace(&echo.url(), &streamer.url())
        .replace(
            "timeout = \"1s\"",
            &format!("timeout = \"2s\"\n{api_route}"),
        );
    let gh = Gatehouse::start(&text).await;
    let mut b = Browser::new(&gh.origin);
    b.login("/").await;
    (provider, streamer, gh, b)
}

#[tokio::test]
async fn server_sent_events_arrive_one_by_one_for_longer_than_the_route_timeout() {
    let (_p, _s, gh, b) = stack("").await;
    let started = Instant::now();
    let res = b
        .http
        .get(gh.url("/api/events?n=40&gap=1000"))
        .header("x-csrf", "1")
        .header("cookie", b.cookie_header())
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(res.headers()["content-type"], "text/event-stream");
    let mut arrivals = Vec::new();
    let mut pending = String::new();
    let mut res = res;
    while let Some(chunk) = res.chunk().await.unwrap() {
        pending.push_str(std::str::from_utf8(&chunk).unwrap());
        while let Some(end) = pending.find("\n\n") {
            let event: String = pending.drain(..end + 2).collect();
            assert_eq!(event, format!("data: {}\n\n", arrivals.len()));
            arrivals.push(started.elapsed());
        }
    }
    assert_eq!(
        arrivals.len(),
        40,
        "every event, none cut by the 2 s route timeout"
    );
    assert!(
        arrivals[0] < Duration::from_millis(500),
        "first byte at once"
    );
    for (i, at) in arrivals.iter().enumerate() {
        let expected = Duration::from_secs(i as u64);
        let early = expected.saturating_sub(Duration::from_millis(400));
        assert!(
            *at >= early && *at <= expected + Duration::from_millis(700),
            "event {i} arrived at {at:?}, sent at about {expected:?}"
        );
    }
}

#[tokio::test]
async fn only_idle_time_between_chunks_ends_a_stream() {
    let (_p, _s, gh, b) = stack("stream_idle_timeout = \"1s\"").await;
    let get = |path: &str| {
        b.http
            .get(gh.url(path))
            .header("x-csrf", "1")
            .header("cookie", b.cookie_header())
            .send()
    };
    // 3.5 s of chunks 0.7 s apart: longer than the idle limit, never idle that long.
    let steady = get("/api/steady?n=5&gap=700").await.unwrap();
    let text = steady.text().await.unwrap();
    assert_eq!(text.matches("data: ").count(), 5, "{text}");

    // Two chunks, then silence: cut about a second later.
    let mut stalled = get("/api/stall?n=5&gap=10&stall=2").await.unwrap();
    assert_eq!(stalled.status(), 200);
    let started = Instant::now();
    let mut got = String::new();
    let outcome = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            match stalled.chunk().await {
                Ok(Some(bytes)) => got.push_str(std::str::from_utf8(&bytes).unwrap()),
                Ok(None) => return false,
                Err(_) => return true,
            }
        }
    })
    .await
    .expect("the stalled stream was ended");
    assert!(outcome, "ended with an error, not as if complete: {got:?}");
    assert_eq!(got, "data: 0\n\ndata: 1\n\n");
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(900) && took < Duration::from_millis(2500),
        "{took:?}"
    );
}

#[tokio::test]
async fn a_client_that_leaves_cancels_the_upstream_request() {
    let (_p, streamer, gh, b) = stack("").await;
    let res = b
        .http
        .get(gh.url("/api/forever?n=1000&gap=100"))
        .header("x-csrf", "1")
        .header("cookie", b.cookie_header())
        .send()
        .await
        .unwrap();
    let mut res = res;
    res.chunk().await.unwrap().unwrap();
    drop(res);
    drop(b);
    for _ in 0..40 {
        if streamer.cancelled.load(Ordering::SeqCst) == 1 {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("the upstream kept streaming to nobody for 2 s");
}

#[tokio::test]
async fn response_trailers_reach_http1_clients_that_accept_them_and_http2_clients() {
    let (_p, _s, gh, b) = stack("").await;
    let cookie = b.session_cookie().unwrap();
    let request = || {
        http::Request::get(gh.url("/api/trailers?n=2&gap=10&trailers"))
            .header("x-csrf", "1")
            .header("te", "trailers")
            .header("cookie", format!("{COOKIE}={cookie}"))
            .body(Empty::<Bytes>::new())
            .unwrap()
    };
    let tcp = TcpStream::connect(gh.addr).await.unwrap();
    let (mut h1, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
        .await
        .unwrap();
    tokio::spawn(conn);
    let res = h1.send_request(request()).await.unwrap();
    assert_eq!(res.status(), 200);
    let collected = res.into_body().collect().await.unwrap();
    let trailers = collected
        .trailers()
        .cloned()
        .expect("trailers over HTTP/1.1");
    assert_eq!(trailers["x-checksum"], "abc123");
    assert_eq!(collected.to_bytes(), "data: 0\n\ndata: 1\n\n");

    let tcp = TcpStream::connect(gh.addr).await.unwrap();
    let (mut h2, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tcp))
            .await
            .unwrap();
    tokio::spawn(conn);
    let res = h2.send_request(request()).await.unwrap();
    let collected = res.into_body().collect().await.unwrap();
    assert_eq!(
        collected.trailers().expect("trailers over HTTP/2")["x-checksum"],
        "abc123"
    );
}
