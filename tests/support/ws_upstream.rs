#![allow(clippy::unwrap_used, clippy::expect_used, reason = "test fixture")]
//! A real WebSocket upstream for tests (tokio-tungstenite): records each handshake's path
//! and headers, echoes every text and binary message, and records how each socket ended
//! (the close code it received, or none). `/ws/deny` refuses the handshake with 403.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use futures_util::{SinkExt as _, StreamExt as _};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::handshake::server::{ErrorResponse, Request, Response};
use tokio_tungstenite::tungstenite::{Message, http};

#[derive(Clone, Debug)]
pub struct Handshake {
    pub path: String,
    pub headers: Vec<(String, String)>,
}

impl Handshake {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

/// How one socket ended at the upstream.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Ended {
    /// A close frame with this code arrived.
    Closed(u16),
    /// The stream ended without a close frame.
    Dropped,
}

#[derive(Default)]
struct Seen {
    handshakes: Vec<Handshake>,
    ended: Vec<Ended>,
}

pub struct WsUpstream {
    pub addr: SocketAddr,
    seen: Arc<Mutex<Seen>>,
    task: JoinHandle<()>,
}

impl Drop for WsUpstream {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl WsUpstream {
    pub async fn start() -> WsUpstream {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let seen: Arc<Mutex<Seen>> = Arc::default();
        let seen2 = Arc::clone(&seen);
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let seen = Arc::clone(&seen2);
                tokio::spawn(async move { serve(stream, seen).await });
            }
        });
        WsUpstream { addr, seen, task }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn handshakes(&self) -> Vec<Handshake> {
        self.seen.lock().unwrap().handshakes.clone()
    }

    pub fn last(&self) -> Handshake {
        self.handshakes()
            .pop()
            .expect("the upstream saw no handshake")
    }

    pub fn ended(&self) -> Vec<Ended> {
        self.seen.lock().unwrap().ended.clone()
    }
}

async fn serve(stream: tokio::net::TcpStream, seen: Arc<Mutex<Seen>>) {
    let record = Arc::clone(&seen);
    #[expect(clippy::result_large_err, reason = "tungstenite's callback signature")]
    let callback = move |req: &Request, res: Response| -> Result<Response, ErrorResponse> {
        let headers = req
            .headers()
            .iter()
            .map(|(n, v)| {
                (
                    n.as_str().to_owned(),
                    String::from_utf8_lossy(v.as_bytes()).into_owned(),
                )
            })
            .collect();
        let path = req.uri().path().to_owned();
        record.lock().unwrap().handshakes.push(Handshake {
            path: path.clone(),
            headers,
        });
        if path.ends_with("/deny") {
            let mut refused = http::Response::new(Some("denied".to_owned()));
            *refused.status_mut() = http::StatusCode::FORBIDDEN;
            return Err(refused);
        }
        Ok(res)
    };
    let Ok(mut ws) = tokio_tungstenite::accept_hdr_async(stream, callback).await else {
        return;
    };
    let mut ended = Ended::Dropped;
    while let Some(Ok(msg)) = ws.next().await {
        let echo = match msg {
            Message::Text(_) | Message::Binary(_) => msg,
            Message::Close(frame) => {
                ended = Ended::Closed(frame.map_or(1005, |f| u16::from(f.code)));
                let _ = ws.close(None).await;
                break;
            }
            _ => continue,
        };
        if ws.send(echo).await.is_err() {
            break;
        }
    }
    seen.lock().unwrap().ended.push(ended);
}
