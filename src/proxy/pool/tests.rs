//! The pool against a real HTTP/1.1 upstream on loopback that counts its connections.

use std::convert::Infallible;
use std::sync::atomic::{AtomicUsize, Ordering};

use http_body_util::{BodyExt as _, Empty, StreamBody};
use hyper::body::Frame;
use hyper::service::service_fn;
use tokio::net::TcpListener;
use tokio::sync::Notify;

use super::*;

/// Connections the upstream accepted, and those still open.
#[derive(Default)]
struct Counts {
    accepted: AtomicUsize,
    open: AtomicUsize,
}

/// An upstream answering `first`, or, on `/slow`, `first` then `rest` once `go` is notified,
/// or, on `/trailers`, `first` then trailers;
/// it closes connections idle for `keep_alive`.
async fn upstream(go: Arc<Notify>) -> (SocketAddr, Arc<Counts>) {
    upstream_keeping(go, LONG).await
}

async fn upstream_keeping(go: Arc<Notify>, keep_alive: Duration) -> (SocketAddr, Arc<Counts>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let counts = Arc::new(Counts::default());
    let seen = Arc::clone(&counts);
    tokio::spawn(async move {
        loop {
            let (stream, _) = listener.accept().await.unwrap();
            seen.accepted.fetch_add(1, Ordering::SeqCst);
            seen.open.fetch_add(1, Ordering::SeqCst);
            let seen = Arc::clone(&seen);
            let go = Arc::clone(&go);
            tokio::spawn(async move {
                let service = service_fn(move |req: Request<Incoming>| {
                    let go = Arc::clone(&go);
                    async move {
                        type Item = Result<Frame<Bytes>, Infallible>;
                        let slow = req.uri().path() == "/slow";
                        let trailers = req.uri().path() == "/trailers";
                        let frames = futures_util::stream::unfold(0, move |n| {
                            let go = Arc::clone(&go);
                            async move {
                                match (n, slow) {
                                    (0, _) => Some((
                                        Ok::<_, Infallible>(Frame::data(Bytes::from_static(
                                            b"first",
                                        ))),
                                        1,
                                    )),
                                    (1, _) if trailers => {
                                        let mut map = http::HeaderMap::new();
                                        map.insert(
                                            "grpc-status",
                                            http::HeaderValue::from_static("0"),
                                        );
                                        Some((Ok(Frame::trailers(map)), 2))
                                    }
                                    (1, true) => {
                                        go.notified().await;
                                        Some((Ok(Frame::data(Bytes::from_static(b"rest"))), 2))
                                    }
                                    _ => None,
                                }
                            }
                        });
                        let body: StreamBody<_> = StreamBody::new(Box::pin(frames)
                            as Pin<Box<dyn futures_util::Stream<Item = Item> + Send>>);
                        let mut res = Response::new(body);
                        if trailers {
                            // hyper sends only the trailer fields the head declares.
                            res.headers_mut().insert(
                                http::header::TRAILER,
                                http::HeaderValue::from_static("grpc-status"),
                            );
                        }
                        Ok::<_, Infallible>(res)
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .timer(hyper_util::rt::TokioTimer::new())
                    .header_read_timeout(keep_alive)
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
                seen.open.fetch_sub(1, Ordering::SeqCst);
            });
        }
    });
    (addr, counts)
}

type Plain = Empty<Bytes>;

fn lane(addr: SocketAddr, idle_timeout: Duration, max_idle: usize) -> Arc<Lane<Plain>> {
    Lane::new(
        addr,
        PoolSettings {
            connect_timeout: Duration::from_secs(5),
            idle_timeout,
            max_idle,
            lanes: 1,
        },
    )
}

fn get(path: &str) -> Request<Plain> {
    let mut req = Request::new(Empty::new());
    *req.uri_mut() = path.parse().unwrap();
    req.headers_mut().insert(
        http::header::HOST,
        http::HeaderValue::from_static("upstream"),
    );
    req.headers_mut()
        .insert(http::header::TE, http::HeaderValue::from_static("trailers"));
    req
}

/// Sends a GET for `path` and reads the whole answer.
async fn fetch(lane: &Arc<Lane<Plain>>, path: &str, conn: Conn) -> Bytes {
    let res = Arc::clone(lane).send(get(path), conn).await.unwrap();
    res.into_body().collect().await.unwrap().to_bytes()
}

/// Lets the connections' tasks run: a few turns of the runtime and a moment on the wire.
async fn settle() {
    tokio::time::sleep(Duration::from_millis(50)).await;
}

const LONG: Duration = Duration::from_secs(30);

#[tokio::test]
async fn requests_one_after_another_share_one_connection() {
    let (addr, counts) = upstream(Arc::default()).await;
    let lane = lane(addr, LONG, 8);
    for _ in 0..5 {
        assert_eq!(fetch(&lane, "/", Conn::Pooled).await, "first");
        settle().await;
    }
    assert_eq!(counts.accepted.load(Ordering::SeqCst), 1);
    assert_eq!(lane.idle_count(), 1);
}

#[tokio::test]
async fn a_connection_whose_answer_is_still_coming_is_not_handed_out_and_closes_when_dropped() {
    let go = Arc::new(Notify::new());
    let (addr, counts) = upstream(Arc::clone(&go)).await;
    let lane = lane(addr, LONG, 8);
    let mut slow = Arc::clone(&lane)
        .send(get("/slow"), Conn::Pooled)
        .await
        .unwrap();
    let first = slow.body_mut().frame().await.unwrap().unwrap();
    assert_eq!(first.into_data().unwrap(), "first");
    assert_eq!(lane.idle_count(), 0, "half read: not back in the pool");
    assert_eq!(fetch(&lane, "/", Conn::Pooled).await, "first");
    assert_eq!(
        counts.accepted.load(Ordering::SeqCst),
        2,
        "the second request could not have the busy connection"
    );
    settle().await;
    assert_eq!(counts.open.load(Ordering::SeqCst), 2);
    drop(slow);
    settle().await;
    assert_eq!(
        counts.open.load(Ordering::SeqCst),
        1,
        "a half-read answer's connection is closed, never reused"
    );
    assert_eq!(lane.idle_count(), 1);
}

#[tokio::test]
async fn a_connection_read_to_the_end_of_a_streamed_answer_is_used_again() {
    let go = Arc::new(Notify::new());
    let (addr, counts) = upstream(Arc::clone(&go)).await;
    let lane = lane(addr, LONG, 8);
    let res = Arc::clone(&lane)
        .send(get("/slow"), Conn::Pooled)
        .await
        .unwrap();
    go.notify_one();
    let body = res.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(body, "firstrest");
    settle().await;
    assert_eq!(fetch(&lane, "/", Conn::Pooled).await, "first");
    assert_eq!(counts.accepted.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn a_connection_idle_for_the_idle_timeout_is_closed_by_gatehouse() {
    let (addr, counts) = upstream(Arc::default()).await;
    let lane = lane(addr, Duration::from_millis(150), 8);
    fetch(&lane, "/", Conn::Pooled).await;
    settle().await;
    assert_eq!(counts.open.load(Ordering::SeqCst), 1, "kept while young");
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(lane.idle_count(), 0);
    assert_eq!(
        counts.open.load(Ordering::SeqCst),
        0,
        "the upstream saw it closed without another request"
    );
    fetch(&lane, "/", Conn::Pooled).await;
    assert_eq!(counts.accepted.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn no_more_than_max_idle_connections_stay_open() {
    let go = Arc::new(Notify::new());
    let (addr, counts) = upstream(Arc::clone(&go)).await;
    let lane = lane(addr, LONG, 1);
    let mut busy = Vec::new();
    for _ in 0..3 {
        busy.push(
            Arc::clone(&lane)
                .send(get("/slow"), Conn::Pooled)
                .await
                .unwrap(),
        );
    }
    assert_eq!(counts.accepted.load(Ordering::SeqCst), 3);
    for res in busy {
        go.notify_one();
        res.into_body().collect().await.unwrap();
    }
    settle().await;
    assert_eq!(lane.idle_count(), 1);
    assert_eq!(
        counts.open.load(Ordering::SeqCst),
        1,
        "the other two closed"
    );
}

#[tokio::test]
async fn a_fresh_attempt_never_takes_an_idle_connection() {
    let (addr, counts) = upstream(Arc::default()).await;
    let lane = lane(addr, LONG, 8);
    fetch(&lane, "/", Conn::Pooled).await;
    settle().await;
    fetch(&lane, "/", Conn::Fresh).await;
    assert_eq!(counts.accepted.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn an_idle_connection_the_upstream_closed_is_passed_over_without_an_error() {
    let (addr, counts) = upstream_keeping(Arc::default(), Duration::from_millis(100)).await;
    let lane = lane(addr, LONG, 8);
    fetch(&lane, "/", Conn::Pooled).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        counts.open.load(Ordering::SeqCst),
        0,
        "the upstream closed it"
    );
    assert_eq!(fetch(&lane, "/", Conn::Pooled).await, "first");
    assert_eq!(counts.accepted.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn a_connection_whose_answer_ended_with_trailers_is_used_again() {
    let (addr, counts) = upstream(Arc::default()).await;
    let lane = lane(addr, LONG, 8);
    let mut res = Arc::clone(&lane)
        .send(get("/trailers"), Conn::Pooled)
        .await
        .unwrap();
    let data = res.body_mut().frame().await.unwrap().unwrap();
    assert_eq!(data.into_data().unwrap(), "first");
    let trailers = res.body_mut().frame().await.unwrap().unwrap();
    assert_eq!(trailers.trailers_ref().unwrap()["grpc-status"], "0");
    // Polled no further, as hyper's server does after trailers.
    settle().await;
    assert_eq!(fetch(&lane, "/", Conn::Pooled).await, "first");
    assert_eq!(counts.accepted.load(Ordering::SeqCst), 1);
    drop(res);
}
