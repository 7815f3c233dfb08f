#![allow(clippy::unwrap_used, clippy::expect_used, reason = "test fixture")]
//! Upstreams that fail the way real ones do: [`Closer`] closes connections at the worst
//! moment (raw HTTP/1.1 over TCP, so nothing is polite), and [`Killable`] is a hyper server
//! that can die with its connections and come back on the same address.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// When a [`Closer`] closes a connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Closing {
    /// Answers the first request of each connection (keep-alive, no `Connection: close`),
    /// then reads the next one and closes without a word: a keep-alive connection closed
    /// just as a request was sent on it.
    AfterOneAnswer,
    /// Reads every request with its whole body, counts the body, and closes without
    /// answering: a request whose body was forwarded and then lost.
    AfterTheBody,
    /// Like `AfterOneAnswer`, but sends the start of a response head before closing.
    MidAnswer,
}

/// What a [`Closer`] saw.
#[derive(Default)]
pub struct Seen {
    pub answered: AtomicUsize,
    /// The methods of the requests read and left unanswered.
    pub dropped: Mutex<Vec<String>>,
    /// Request bodies (non-empty) read in full.
    pub bodies: AtomicUsize,
}

pub struct Closer {
    pub addr: SocketAddr,
    pub seen: Arc<Seen>,
    task: JoinHandle<()>,
}

impl Drop for Closer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Closer {
    pub async fn start(closing: Closing) -> Closer {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let seen = Arc::new(Seen::default());
        let seen2 = Arc::clone(&seen);
        let task = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                tokio::spawn(connection(stream, closing, Arc::clone(&seen2)));
            }
        });
        Closer { addr, seen, task }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn dropped(&self) -> Vec<String> {
        self.seen.dropped.lock().unwrap().clone()
    }
}

async fn connection(mut stream: TcpStream, closing: Closing, seen: Arc<Seen>) {
    let mut buf = Vec::new();
    for n in 0.. {
        let Some(method) = read_request(&mut stream, &mut buf, &seen).await else {
            return;
        };
        if closing == Closing::AfterTheBody || n > 0 {
            seen.dropped.lock().unwrap().push(method);
            if closing == Closing::MidAnswer {
                let _ = stream.write_all(b"HTTP/1.1 200 OK\r\ncontent-le").await;
                let _ = stream.flush().await;
            }
            return;
        }
        seen.answered.fetch_add(1, Ordering::SeqCst);
        let answer = b"HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: 2\r\n\r\nok";
        if stream.write_all(answer).await.is_err() {
            return;
        }
    }
}

/// Reads one request (head and `Content-Length` body); returns its method.
async fn read_request(stream: &mut TcpStream, buf: &mut Vec<u8>, seen: &Seen) -> Option<String> {
    let mut chunk = vec![0u8; 16 * 1024];
    let head_end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        let n = stream.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
    let method = head.split(' ').next().unwrap_or_default().to_owned();
    let length: usize = head
        .lines()
        .find_map(|l| {
            let (name, value) = l.split_once(':')?;
            name.eq_ignore_ascii_case("content-length")
                .then(|| value.trim().parse().ok())?
        })
        .unwrap_or(0);
    while buf.len() < head_end + length {
        let n = stream.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    if length > 0 {
        seen.bodies.fetch_add(1, Ordering::SeqCst);
    }
    buf.drain(..head_end + length);
    Some(method)
}

/// A hyper upstream answering `200 ok` to everything, that can be killed (listener and every
/// connection closed at once, as when its process dies) and started again on its address.
pub struct Killable {
    pub addr: SocketAddr,
    /// Requests answered, over every life.
    pub answered: Arc<AtomicUsize>,
    life: Mutex<Option<(watch::Sender<bool>, JoinHandle<()>)>>,
}

impl Drop for Killable {
    fn drop(&mut self) {
        self.kill();
    }
}

impl Killable {
    pub async fn start() -> Killable {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let k = Killable {
            addr: listener.local_addr().unwrap(),
            answered: Arc::default(),
            life: Mutex::new(None),
        };
        k.serve(listener);
        k
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn answered(&self) -> usize {
        self.answered.load(Ordering::SeqCst)
    }

    fn serve(&self, listener: TcpListener) {
        let (dead_tx, dead) = watch::channel(false);
        let answered = Arc::clone(&self.answered);
        let task = tokio::spawn(async move {
            let mut accepting = dead.clone();
            loop {
                let stream = tokio::select! {
                    s = listener.accept() => match s { Ok((s, _)) => s, Err(_) => continue },
                    _ = accepting.changed() => return,
                };
                let answered = Arc::clone(&answered);
                let mut dead = dead.clone();
                tokio::spawn(async move {
                    let svc = service_fn(move |req: Request<Incoming>| {
                        let answered = Arc::clone(&answered);
                        async move {
                            let _ = req.into_body().collect().await;
                            answered.fetch_add(1, Ordering::SeqCst);
                            Ok::<_, hyper::Error>(Response::new(Full::new(Bytes::from_static(
                                b"ok",
                            ))))
                        }
                    });
                    let builder =
                        hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
                    let conn = builder.serve_connection(TokioIo::new(stream), svc);
                    tokio::select! {
                        _ = conn => {}
                        // Dropped mid-request, as the kernel closes a dead process's sockets.
                        _ = dead.changed() => {}
                    }
                });
            }
        });
        *self.life.lock().unwrap() = Some((dead_tx, task));
    }

    /// Closes the listener and every connection now.
    pub fn kill(&self) {
        if let Some((dead, task)) = self.life.lock().unwrap().take() {
            let _ = dead.send(true);
            task.abort();
        }
    }

    /// Listens on the same address again.
    pub async fn restart(&self) {
        let listener = loop {
            match TcpListener::bind(self.addr).await {
                Ok(l) => break l,
                Err(_) => tokio::time::sleep(std::time::Duration::from_millis(20)).await,
            }
        };
        self.serve(listener);
    }
}
