//! HTTP/2 to upstreams: h2c with prior knowledge on `upstream_http2` routes (gRPC through a
//! token route, trailers both ways), HTTP/2 by ALPN to https upstreams that offer it, and
//! WebSockets to such an upstream still over HTTP/1.1.
#![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests fail loudly")]

mod support;

use std::convert::Infallible;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use futures_util::{SinkExt as _, StreamExt as _};
use http_body_util::{BodyExt as _, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use support::*;
use tokio::net::{TcpListener, TcpStream};

/// What the gRPC-like upstream saw of one call.
#[derive(Clone, Debug, Default)]
struct Call {
    version: String,
    authorization: Option<String>,
    te: Option<String>,
    body: Vec<u8>,
    trailers: Option<http::HeaderMap>,
}

type Calls = Arc<Mutex<Vec<Call>>>;

/// Reads a request (body and trailers), records it, and answers like a gRPC server: a
/// message, then `grpc-status` / `grpc-message` trailers.
async fn grpc_like(
    req: hyper::Request<Incoming>,
    calls: Calls,
) -> Result<
    hyper::Response<
        StreamBody<futures_util::stream::BoxStream<'static, Result<Frame<Bytes>, Infallible>>>,
    >,
    hyper::Error,
> {
    let version = format!("{:?}", req.version());
    let header = |n: &str| req.headers().get(n).map(|v| v.to_str().unwrap().to_owned());
    let (authorization, te) = (header("authorization"), header("te"));
    let collected = req.into_body().collect().await?;
    let trailers = collected.trailers().cloned();
    calls.lock().unwrap().push(Call {
        version,
        authorization,
        te,
        body: collected.to_bytes().to_vec(),
        trailers,
    });
    let mut end = http::HeaderMap::new();
    end.insert("grpc-status", "0".parse().unwrap());
    end.insert("grpc-message", "ok".parse().unwrap());
    let frames = vec![
        Ok(Frame::data(Bytes::from_static(b"\0\0\0\0\x02hi"))),
        Ok(Frame::trailers(end)),
    ];
    let mut res = hyper::Response::new(StreamBody::new(futures_util::stream::iter(frames).boxed()));
    res.headers_mut()
        .insert("content-type", "application/grpc".parse().unwrap());
    Ok(res)
}

/// A cleartext HTTP/2-only (h2c, prior knowledge) upstream.
async fn h2c_upstream() -> (String, Calls) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let calls: Calls = Arc::default();
    let shared = Arc::clone(&calls);
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let calls = Arc::clone(&shared);
            tokio::spawn(async move {
                let svc = service_fn(move |req| grpc_like(req, Arc::clone(&calls)));
                let _ = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(tcp), svc)
                    .await;
            });
        }
    });
    (format!("http://{addr}"), calls)
}

#[tokio::test]
async fn grpc_through_a_token_route_to_an_h2c_upstream_keeps_trailers_both_ways() {
    let provider = TestProvider::start(ProviderOptions::default()).await;
    let echo = EchoUpstream::start().await;
    let (grpc_url, calls) = h2c_upstream().await;
    let text = config(&provider, &echo, "").replacen(
        "[[routes]]",
        &format!("[[routes]]\npath = \"/grpc/\"\nupstream = \"{grpc_url}\"\nauth = \"required\"\nupstream_http2 = true\n\n[[routes]]"),
        1,
    );
    let gh = Gatehouse::start(&text).await;
    let mut b = Browser::new(&gh.origin);
    b.login("/").await;
    let cookie = b.session_cookie().unwrap();

    let tcp = TcpStream::connect(gh.addr).await.unwrap();
    let (mut h2, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tcp))
            .await
            .unwrap();
    tokio::spawn(conn);
    let mut sent = http::HeaderMap::new();
    sent.insert("x-client-trailer", "done".parse().unwrap());
    let frames: Vec<Result<Frame<Bytes>, Infallible>> = vec![
        Ok(Frame::data(Bytes::from_static(b"\0\0\0\0\x05hello"))),
        Ok(Frame::trailers(sent)),
    ];
    let req = http::Request::post(gh.url("/grpc/pkg.Greeter/SayHello"))
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .header("x-csrf", "1")
        .header("cookie", format!("{COOKIE}={cookie}"))
        .body(StreamBody::new(futures_util::stream::iter(frames)))
        .unwrap();
    let res = h2.send_request(req).await.unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(res.headers()["content-type"], "application/grpc");
    let collected = res.into_body().collect().await.unwrap();
    let trailers = collected.trailers().cloned().expect("response trailers");
    assert_eq!(trailers["grpc-status"], "0");
    assert_eq!(trailers["grpc-message"], "ok");
    assert_eq!(collected.to_bytes(), &b"\0\0\0\0\x02hi"[..]);

    let call = calls
        .lock()
        .unwrap()
        .pop()
        .expect("the upstream saw the call");
    assert_eq!(
        call.version, "HTTP/2.0",
        "prior-knowledge HTTP/2 to the upstream"
    );
    assert!(call.authorization.unwrap().starts_with("Bearer "));
    assert_eq!(call.te.as_deref(), Some("trailers"));
    assert_eq!(call.body, b"\0\0\0\0\x05hello");
    assert_eq!(
        call.trailers
            .expect("request trailers reached the upstream")["x-client-trailer"],
        "done"
    );

    // Without a session: 401, the upstream is not called.
    let tcp = TcpStream::connect(gh.addr).await.unwrap();
    let (mut anon, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tcp))
            .await
            .unwrap();
    tokio::spawn(conn);
    let req = http::Request::post(gh.url("/grpc/pkg.Greeter/SayHello"))
        .header("x-csrf", "1")
        .body(Full::new(Bytes::new()))
        .unwrap();
    assert_eq!(anon.send_request(req).await.unwrap().status(), 401);
    assert_eq!(calls.lock().unwrap().len(), 0);
}

/// A TLS upstream for `localhost` offering `h2` and `http/1.1` by ALPN: HTTP/2 connections
/// get the gRPC-like service, HTTP/1.1 ones a WebSocket echo. Returns (port, CA PEM, calls).
async fn alpn_upstream() -> (u16, String, Calls) {
    let certified = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
    let pem = certified.cert.pem();
    let key = rustls_pki_types::PrivateKeyDer::Pkcs8(certified.signing_key.serialize_der().into());
    let mut tls = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_no_client_auth()
    .with_single_cert(vec![certified.cert.der().clone()], key)
    .unwrap();
    tls.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(tls));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let calls: Calls = Arc::default();
    let shared = Arc::clone(&calls);
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let (acceptor, calls) = (acceptor.clone(), Arc::clone(&shared));
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(tcp).await else {
                    return;
                };
                if tls.get_ref().1.alpn_protocol() == Some(b"h2") {
                    let svc = service_fn(move |req| grpc_like(req, Arc::clone(&calls)));
                    let _ = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(tls), svc)
                        .await;
                } else if let Ok(mut ws) = tokio_tungstenite::accept_async(tls).await {
                    while let Some(Ok(msg)) = ws.next().await {
                        if msg.is_text() && ws.send(msg).await.is_err() {
                            break;
                        }
                    }
                }
            });
        }
    });
    (port, pem, calls)
}

#[tokio::test]
async fn an_https_upstream_offering_h2_gets_http2_and_websockets_still_get_http1() {
    let (port, pem, calls) = alpn_upstream().await;
    let ca = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(ca.path(), pem).unwrap();
    let provider = TestProvider::start(ProviderOptions::default()).await;
    let echo = EchoUpstream::start().await;
    let text = config(&provider, &echo, "")
        .replacen(
            "[[routes]]",
            &format!("[[routes]]\npath = \"/secure/\"\nupstream = \"https://localhost:{port}\"\nauth = \"required\"\n\n[[routes]]"),
            1,
        )
        .replacen(
            "shutdown_grace = \"5s\"",
            &format!("shutdown_grace = \"5s\"\nupstream_ca_file = \"{}\"", ca.path().display()),
            1,
        );
    let gh = Gatehouse::start(&text).await;
    let mut b = Browser::new(&gh.origin);
    b.login("/").await;
    let res = b.api(reqwest::Method::POST, "/secure/call").await;
    assert_eq!(res.status(), 200);
    let call = calls
        .lock()
        .unwrap()
        .pop()
        .expect("the upstream saw the call");
    assert_eq!(call.version, "HTTP/2.0", "negotiated by ALPN");
    assert!(call.authorization.unwrap().starts_with("Bearer "));

    use tokio_tungstenite::tungstenite::Message;
    use tokio_tungstenite::tungstenite::client::IntoClientRequest as _;
    let mut req = format!("ws://{}/secure/live", gh.addr)
        .into_client_request()
        .unwrap();
    req.headers_mut()
        .insert("origin", gh.origin.parse().unwrap());
    req.headers_mut().insert(
        "cookie",
        format!("{COOKIE}={}", b.session_cookie().unwrap())
            .parse()
            .unwrap(),
    );
    let tcp = TcpStream::connect(gh.addr).await.unwrap();
    let (mut ws, _) = tokio_tungstenite::client_async(req, tcp).await.unwrap();
    ws.send(Message::text("over tls")).await.unwrap();
    assert_eq!(ws.next().await.unwrap().unwrap(), Message::text("over tls"));
}
