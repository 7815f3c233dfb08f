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

use super::state::Shared;

const MAX_BODY: usize = 64 * 1024;

pub(super) type Body = Full<Bytes>;
pub(super) type Params = HashMap<String, String>;

/// Accepts until aborted; connection tasks live in a `JoinSet` so aborting this ends them too.
pub(super) async fn serve(listener: TcpListener, shared: Arc<Shared>) {
    let mut connections = JoinSet::new();
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            tokio::time::sleep(Duration::from_millis(10)).await;
            continue;
        };
        let shared = Arc::clone(&shared);
        connections.spawn(async move {
            let service = service_fn(move |req| {
                let shared = Arc::clone(&shared);
                async move { Ok::<_, Infallible>(route(&shared, req).await) }
            });
            // A client hanging up mid-request is not the provider's concern.
            let _ = http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
        while connections.try_join_next().is_some() {}
    }
}

async fn route(p: &Shared, req: Request<Incoming>) -> Response<Body> {
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
    match (&parts.method, parts.uri.path()) {
        (&Method::GET, "/.well-known/openid-configuration") => p.discovery(),
        (&Method::GET, "/authorize") => p.authorization_request(&query),
        (&Method::POST, "/authorize") if p.opts.interactive => p.sign_in_decision(&form),
        (&Method::POST, "/authorize") => p.authorization_request(&form),
        (&Method::POST, "/token") => {
            // Like a real provider: the grant is processed (codes used, refresh tokens
            // rotated) at once, only the answer is slow, and a client that hangs up does
            // not undo it.
            let answer = p.token(headers, &form);
            if !p.opts.token_delay.is_zero() {
                tokio::time::sleep(p.opts.token_delay).await;
            }
            answer
        }
        (&Method::GET, "/jwks") => p.jwks(),
        (&Method::GET | &Method::POST, "/userinfo") => p.userinfo(headers),
        (&Method::POST, "/revoke") => p.revoke(headers, &form),
        (&Method::POST, "/introspect") => p.introspect(headers, &form),
        (&Method::GET, "/end_session") => p.end_session(&query),
        (&Method::POST, "/end_session") => p.end_session(&form),
        _ => respond(StatusCode::NOT_FOUND, "text/plain", "not found"),
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
