//! https:// upstreams: verified against the web roots plus `server.upstream_ca_file`; an
//! upstream whose certificate we cannot verify is never sent a token.
#![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests fail loudly")]

mod support;

use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http_body_util::Full;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use reqwest::Method;
use support::*;

/// A TLS upstream for `localhost` with a fresh self-signed certificate; records the
/// Authorization headers it receives. Returns (port, certificate PEM, seen).
async fn tls_upstream() -> (u16, String, Arc<Mutex<Vec<String>>>) {
    let certified = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
    let cert_pem = certified.cert.pem();
    let key = rustls_pki_types::PrivateKeyDer::Pkcs8(certified.signing_key.serialize_der().into());
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_no_client_auth()
    .with_single_cert(vec![certified.cert.der().clone()], key)
    .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let seen: Arc<Mutex<Vec<String>>> = Arc::default();
    let seen2 = Arc::clone(&seen);
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                continue;
            };
            let (acceptor, seen) = (acceptor.clone(), Arc::clone(&seen2));
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let svc = service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                    let auth = req
                        .headers()
                        .get("authorization")
                        .map(|v| v.to_str().unwrap().to_owned());
                    seen.lock().unwrap().push(auth.unwrap_or_default());
                    async {
                        Ok::<_, hyper::Error>(hyper::Response::new(Full::new(Bytes::from_static(
                            b"tls ok",
                        ))))
                    }
                });
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(tls), svc)
                    .await;
            });
        }
    });
    (port, cert_pem, seen)
}

fn with_tls_route(base: &str, port: u16, ca_file: Option<&std::path::Path>) -> String {
    let mut text = base.replacen("[[routes]]", &format!("[[routes]]\npath = \"/secure/\"\nupstream = \"https://localhost:{port}\"\nauth = \"required\"\n\n[[routes]]"), 1);
    if let Some(path) = ca_file {
        text = text.replacen(
            "shutdown_grace = \"5s\"",
            &format!(
                "shutdown_grace = \"5s\"\nupstream_ca_file = \"{}\"",
                path.display()
            ),
            1,
        );
    }
    text
}

#[tokio::test]
async fn https_upstreams_signed_by_the_configured_ca_get_the_token() {
    let (port, cert_pem, seen) = tls_upstream().await;
    let ca = std::env::temp_dir().join(format!("gh-ca-{port}-{}.pem", std::process::id()));
    std::fs::write(&ca, cert_pem).unwrap();
    let provider = TestProvider::start(ProviderOptions::default()).await;
    let upstream = EchoUpstream::start().await;
    let gh = Gatehouse::start(&with_tls_route(
        &config(&provider, &upstream, ""),
        port,
        Some(&ca),
    ))
    .await;
    let mut b = Browser::new(&gh.origin);
    b.login("/").await;
    let res = b.api(Method::GET, "/secure/data").await;
    assert_eq!(res.status(), 200);
    assert_eq!(res.text().await.unwrap(), "tls ok");
    assert!(seen.lock().unwrap()[0].starts_with("Bearer "));
    let _ = std::fs::remove_file(ca);
}

#[tokio::test]
async fn an_https_upstream_we_cannot_verify_gets_nothing() {
    let (port, _, seen) = tls_upstream().await;
    let provider = TestProvider::start(ProviderOptions::default()).await;
    let upstream = EchoUpstream::start().await;
    let gh = Gatehouse::start(&with_tls_route(
        &config(&provider, &upstream, ""),
        port,
        None,
    ))
    .await;
    let mut b = Browser::new(&gh.origin);
    b.login("/").await;
    let res = b.api(Method::GET, "/secure/data").await;
    assert_eq!(res.status(), 502, "an unknown issuer fails the handshake");
    assert!(
        seen.lock().unwrap().is_empty(),
        "no request, no token reached it"
    );
}

#[test]
fn a_missing_or_empty_ca_file_is_a_config_error_naming_the_key() {
    let base = "[server]\npublic_origin = \"http://127.0.0.1:8080\"\nupstream_ca_file = \"PATH\"\n[oidc]\nissuer = \"http://127.0.0.1:9000\"\nclient_id = \"bff\"\nclient_secret = \"s\"\n";
    let empty = std::env::temp_dir().join(format!("gh-empty-ca-{}.pem", std::process::id()));
    std::fs::write(&empty, "not a certificate\n").unwrap();
    for path in [
        "/nonexistent/ca.pem".to_owned(),
        empty.display().to_string(),
    ] {
        let err = gatehouse::config::Config::from_toml(
            &base.replace("PATH", &path),
            &gatehouse::config::NoEnv,
        )
        .unwrap_err();
        assert!(err.to_string().contains("server.upstream_ca_file"), "{err}");
    }
    let _ = std::fs::remove_file(empty);
}

#[tokio::test]
async fn each_https_address_is_verified_against_the_host_name_in_its_own_url() {
    let (port, cert_pem, seen) = tls_upstream().await;
    let ca = std::env::temp_dir().join(format!("gh-ca-list-{port}-{}.pem", std::process::id()));
    std::fs::write(&ca, cert_pem).unwrap();
    let provider = TestProvider::start(ProviderOptions::default()).await;
    let upstream = EchoUpstream::start().await;
    // One server, certified for `localhost` only, named twice: gatehouse connects to
    // 127.0.0.1 for both, and only the entry whose URL says `localhost` passes verification.
    let text = with_tls_route(&config(&provider, &upstream, ""), port, Some(&ca)).replace(
        &format!("upstream = \"https://localhost:{port}\""),
        &format!("upstream = [\"https://127.0.0.1:{port}\", \"https://localhost:{port}\"]"),
    );
    let gh = Gatehouse::start(&text).await;
    let mut b = Browser::new(&gh.origin);
    b.login("/").await;
    for _ in 0..6 {
        let res = b.api(Method::GET, "/secure/data").await;
        assert_eq!(res.status(), 200, "the localhost entry answers");
        assert_eq!(res.text().await.unwrap(), "tls ok");
    }
    assert_eq!(
        seen.lock().unwrap().len(),
        6,
        "each request reached it once"
    );
    let log = logs();
    assert!(
        log.lines()
            .any(|l| l.contains("out for a cool-down") && l.contains(&format!("127.0.0.1:{port}"))),
        "the entry by IP failed verification and was taken out"
    );
    let _ = std::fs::remove_file(ca);
}
