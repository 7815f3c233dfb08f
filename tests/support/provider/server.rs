//! Accepting connections, routing requests to endpoints, and the HTTP plumbing they share.

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use bytes::Bytes;
use http_body_util::{BodyExt as _, Full, Limited};
use hyper::body::Incoming;
use hyper::header::{self, HeaderValue};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio::task::JoinSet;

use super::layout::{Endpoint, Host};
use super::state::Shared;

const MAX_BODY: usize = 64 * 1024;

pub(super) type Body = Full<Bytes>;
pub(super) type Params = HashMap<String, String>;

/// The provider's TLS identity: a fresh self-signed certificate for `localhost`.
pub(super) struct Tls {
    pub(super) acceptor: tokio_rustls::TlsAcceptor,
    pub(super) cert_pem: String,
}

impl Tls {
    pub(super) fn self_signed() -> std::io::Result<Tls> {
        let err = |e: String| std::io::Error::other(e);
        let names = vec!["localhost".to_owned(), "127.0.0.1".to_owned()];
        let certified =
            rcgen::generate_simple_self_signed(names).map_err(|e| err(e.to_string()))?;
        let key =
            rustls_pki_types::PrivateKeyDer::Pkcs8(certified.signing_key.serialize_der().into());
        let config = rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .map_err(|e| err(e.to_string()))?
        .with_no_client_auth()
        .with_single_cert(vec![certified.cert.der().clone()], key)
        .map_err(|e| err(e.to_string()))?;
        Ok(Tls {
            acceptor: tokio_rustls::TlsAcceptor::from(Arc::new(config)),
            cert_pem: certified.cert.pem(),
        })
    }
}

/// Accepts until aborted; connection tasks live in a `JoinSet` so aborting this ends them too.
pub(super) async fn serve(
    listener: TcpListener,
    shared: Arc<Shared>,
    host: Host,
    tls: Option<tokio_rustls::TlsAcceptor>,
) {
    let mut connections = JoinSet::new();
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            tokio::time::sleep(Duration::from_millis(10)).await;
            continue;
        };
        let shared = Arc::clone(&shared);
        let tls = tls.clone();
        connections.spawn(async move {
            let service = service_fn(move |req| {
                let shared = Arc::clone(&shared);
                async move { Ok::<_, Infallible>(route(&shared, host, req).await) }
            });
            // A client hanging up mid-request is not the provider's concern.
            match tls {
                Some(acceptor) => {
                    if let Ok(stream) = acceptor.accept(stream).await {
                        let _ = http1::Builder::new()
                            .serve_connection(TokioIo::new(stream), service)
                            .await;
                    }
                }
                None => {
                    let _ = http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                }
            }
        });
        while connections.try_join_next().is_some() {}
    }
}

async fn route(p: &Shared, host: Host, req: Request<Incoming>) -> Response<Body> {
    let (parts, body) = req.into_parts();
    let Ok(body) = Limited::new(body, MAX_BODY).collect().await else {
        return invalid_request("unreadable body");
    };
    // RFC 6749 §3.1: parameters must not be repeated.
    let query = parse_params(parts.uri.query().unwrap_or_default().as_bytes());
    let (Ok(query), Ok(form)) = (query, parse_params(&body.to_bytes())) else {
        return invalid_request("repeated parameter");
    };
    let headers = &parts.headers;
    let Some(endpoint) = p.layout.find(host, parts.uri.path()) else {
        return respond(StatusCode::NOT_FOUND, "text/plain", "not found");
    };
    match (&parts.method, endpoint) {
        (&Method::GET, Endpoint::Discovery) => p.discovery(),
        (&Method::GET, Endpoint::Authorize) => p.authorization_request(&query),
        (&Method::POST, Endpoint::Authorize) if p.opts.interactive => p.sign_in_decision(&form),
        (&Method::POST, Endpoint::Authorize) => p.authorization_request(&form),
        (&Method::POST, Endpoint::Token) => {
            // Like a real provider: the grant is processed (codes used, refresh tokens
            // rotated) at once, only the answer is slow, and a client that hangs up does
            // not undo it.
            let answer = p.token(headers, &form);
            if !p.opts.token_delay.is_zero() {
                tokio::time::sleep(p.opts.token_delay).await;
            }
            answer
        }
        (&Method::GET, Endpoint::Jwks) => p.jwks(),
        (&Method::GET | &Method::POST, Endpoint::Userinfo) => p.userinfo(headers),
        (&Method::POST, Endpoint::Revoke) => p.revoke(headers, &form),
        (&Method::POST, Endpoint::Introspect) => p.introspect(headers, &form),
        (&Method::GET, Endpoint::EndSession) => p.end_session(&query),
        (&Method::POST, Endpoint::EndSession) => p.end_session(&form),
        _ => respond(
            StatusCode::METHOD_NOT_ALLOWED,
            "text/plain",
            "method not allowed",
        ),
    }
}

/// Form or query parameters; a repeated name is an error.
fn parse_params(raw: &[u8]) -> Result<Params, String> {
    let mut params = Params::new();
    for (name, value) in url::form_urlencoded::parse(raw) {
        if params
            .insert(name.to_string(), value.into_owned())
            .is_some()
        {
            return Err(name.into_owned());
        }
    }
    Ok(params)
}

/// `Authorization: Bearer <token>` (RFC 6750 §2.1).
pub(super) fn parse_bearer(value: &HeaderValue) -> Option<&str> {
    let value = value.to_str().ok()?;
    let token = strip_scheme(value, "bearer ")?;
    Some(token.trim())
}

/// `Authorization: Basic base64(urlencode(id) ":" urlencode(secret))` (RFC 6749 §2.3.1).
pub(super) fn parse_basic(value: &HeaderValue) -> Option<(String, String)> {
    let value = value.to_str().ok()?;
    let encoded = strip_scheme(value, "basic ")?;
    let decoded = String::from_utf8(STANDARD.decode(encoded.trim()).ok()?).ok()?;
    let (id, secret) = decoded.split_once(':')?;
    Some((form_decode(id), form_decode(secret)))
}

/// `value` without its case-insensitive auth-scheme prefix (`"basic "`, `"bearer "`).
fn strip_scheme<'a>(value: &'a str, scheme: &str) -> Option<&'a str> {
    let prefix = value.get(..scheme.len())?;
    prefix
        .eq_ignore_ascii_case(scheme)
        .then(|| value.get(scheme.len()..))
        .flatten()
}

/// application/x-www-form-urlencoded decoding of a single value.
fn form_decode(s: &str) -> String {
    let with_spaces = s.replace('+', " ");
    let mut out = Vec::with_capacity(with_spaces.len());
    let mut rest = with_spaces.as_bytes();
    while let Some((&byte, tail)) = rest.split_first() {
        let escaped = (byte == b'%')
            .then(|| tail.get(..2))
            .flatten()
            .and_then(|hex| std::str::from_utf8(hex).ok())
            .and_then(|hex| u8::from_str_radix(hex, 16).ok());
        match escaped {
            Some(decoded) => {
                out.push(decoded);
                rest = tail.get(2..).unwrap_or_default();
            }
            None => {
                out.push(byte);
                rest = tail;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

pub(super) fn respond(
    status: StatusCode,
    content_type: &'static str,
    body: impl Into<Bytes>,
) -> Response<Body> {
    let mut res = Response::new(Full::new(body.into()));
    *res.status_mut() = status;
    let headers = res.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    res
}

pub(super) fn json_response(status: StatusCode, body: &Value) -> Response<Body> {
    respond(status, "application/json", body.to_string())
}

/// A JSON answer for discovery and JWKS: cacheable for `max_age` when set, else without any
/// `Cache-Control` (the client's own schedule applies).
pub(super) fn metadata_response(body: &Value, max_age: Option<Duration>) -> Response<Body> {
    let mut res = json_response(StatusCode::OK, body);
    let headers = res.headers_mut();
    headers.remove(header::CACHE_CONTROL);
    if let Some(age) = max_age
        && let Ok(value) = HeaderValue::from_str(&format!("public, max-age={}", age.as_secs()))
    {
        headers.insert(header::CACHE_CONTROL, value);
    }
    res
}

pub(super) fn invalid_request(description: &str) -> Response<Body> {
    oauth_error(StatusCode::BAD_REQUEST, "invalid_request", description)
}

pub(super) fn oauth_error(status: StatusCode, error: &str, description: &str) -> Response<Body> {
    json_response(
        status,
        &json!({ "error": error, "error_description": description }),
    )
}

pub(super) fn redirect(location: &str) -> Response<Body> {
    let Ok(location) = HeaderValue::from_str(location) else {
        return respond(
            StatusCode::INTERNAL_SERVER_ERROR,
            "text/plain",
            "unencodable redirect",
        );
    };
    let mut res = respond(StatusCode::FOUND, "text/plain", "");
    res.headers_mut().insert(header::LOCATION, location);
    res
}
