#![allow(clippy::unwrap_used, clippy::expect_used, reason = "test fixture")]
//! A real HTTP upstream for tests: records every request it receives and echoes it back as
//! JSON. `/slow` answers after two seconds; `/big` streams 8 MiB; `/set-cookies` tries to
//! set gatehouse's own cookies.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

#[derive(Clone, Debug)]
pub struct Recorded {
    pub method: String,
    pub path_and_query: String,
    /// Header names lowercased, in arrival order, with every value.
    pub headers: Vec<(String, String)>,
    pub body_len: usize,
}

impl Recorded {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    pub fn all(&self, name: &str) -> Vec<&str> {
        self.headers
            .iter()
            .filter(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
            .collect()
    }
}

pub struct EchoUpstream {
    pub addr: SocketAddr,
    seen: Arc<Mutex<Vec<Recorded>>>,
    task: JoinHandle<()>,
}

impl Drop for EchoUpstream {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl EchoUpstream {
    pub async fn start() -> EchoUpstream {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let seen: Arc<Mutex<Vec<Recorded>>> = Arc::default();
        let seen2 = Arc::clone(&seen);
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let seen = Arc::clone(&seen2);
                tokio::spawn(async move {
                    let svc = service_fn(move |req| handle(Arc::clone(&seen), req));
                    let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(stream), svc)
                        .await;
                });
            }
        });
        EchoUpstream { addr, seen, task }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn requests(&self) -> Vec<Recorded> {
        self.seen.lock().unwrap().clone()
    }

    pub fn last(&self) -> Recorded {
        self.requests().pop().expect("the upstream saw no request")
    }

    pub fn count(&self) -> usize {
        self.seen.lock().unwrap().len()
    }
}

async fn handle(
    seen: Arc<Mutex<Vec<Recorded>>>,
    req: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, hyper::Error> {
    let method = req.method().to_string();
    let path_and_query = req
        .uri()
        .path_and_query()
        .map(|p| p.to_string())
        .unwrap_or_default();
    let headers: Vec<(String, String)> = req
        .headers()
        .iter()
        .map(|(n, v)| {
            (
                n.as_str().to_owned(),
                String::from_utf8_lossy(v.as_bytes()).into_owned(),
            )
        })
        .collect();
    let body = req.into_body().collect().await?.to_bytes();
    let rec = Recorded {
        method,
        path_and_query: path_and_query.clone(),
        headers,
        body_len: body.len(),
    };
    seen.lock().unwrap().push(rec.clone());
    if path_and_query.ends_with("/slow") {
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
    if path_and_query.ends_with("/set-cookies") {
        // Tries to set, overwrite and clear gatehouse's own cookies next to one of its own.
        let mut res = Response::new(Full::new(Bytes::from_static(b"{}")));
        for c in [
            "__Host-gatehouse=planted; Path=/; Secure; HttpOnly",
            "__HOST-GATEHOUSE=planted; Path=/; Secure",
            "__Host-gatehouse-login-AAAAAAAA=planted; Path=/; Secure",
            "__Host-gatehouse=; Max-Age=0; Path=/; Secure",
            "theme=dark; Path=/",
        ] {
            res.headers_mut().append("set-cookie", c.parse().unwrap());
        }
        return Ok(res);
    }
    if path_and_query.ends_with("/big") {
        return Ok(Response::new(Full::new(Bytes::from(vec![b'x'; 8 << 20]))));
    }
    let json = serde_json::json!({
        "method": rec.method,
        "path": rec.path_and_query,
        "body_len": rec.body_len,
        "authorization": rec.header("authorization"),
    });
    let mut res = Response::new(Full::new(Bytes::from(json.to_string())));
    res.headers_mut()
        .insert("content-type", "application/json".parse().unwrap());
    res.headers_mut()
        .insert("connection", "x-upstream-hop".parse().unwrap());
    res.headers_mut()
        .insert("x-upstream-hop", "1".parse().unwrap());
    Ok(res)
}
