//! The two handshakes of a relayed WebSocket, as pure functions of headers: the browser's
//! (HTTP/1.1 `Upgrade`, RFC 6455 §4, or HTTP/2 extended CONNECT, RFC 8441) and gatehouse's
//! own to the upstream (always HTTP/1.1 `Upgrade`, with a key of its own whose accept it
//! checks), and the Origin rule for token routes.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use http::header::{
    CONNECTION, CONTENT_LENGTH, HeaderMap, HeaderName, HeaderValue, ORIGIN, SEC_WEBSOCKET_ACCEPT,
    SEC_WEBSOCKET_KEY, SEC_WEBSOCKET_VERSION, UPGRADE,
};
use http::{Method, Request, Response, StatusCode, Version};
use tungstenite::handshake::derive_accept_key;

use super::WebSocketError;
use crate::csrf::CsrfPolicy;

const SEC_FETCH_SITE: HeaderName = HeaderName::from_static("sec-fetch-site");

/// How the browser asked for the socket; decides the answer's shape.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Handshake {
    /// HTTP/1.1 `GET` with `Upgrade: websocket`, answered `101` with the accept of this key.
    Upgrade { key: HeaderValue },
    /// HTTP/2 `CONNECT` with `:protocol = websocket`, answered `200`.
    ExtendedConnect,
}

/// Whether `req` asks for a WebSocket (well-formed or not): a `GET` whose `Upgrade` names
/// `websocket`, or an extended CONNECT for `websocket`.
pub fn is_websocket<B>(req: &Request<B>) -> bool {
    if *req.method() == Method::CONNECT {
        return is_extended_connect(req);
    }
    *req.method() == Method::GET && has_token(req.headers(), &UPGRADE, "websocket")
}

/// An HTTP/2 CONNECT whose `:protocol` is `websocket` (RFC 8441 §4).
pub fn is_extended_connect<B>(req: &Request<B>) -> bool {
    *req.method() == Method::CONNECT
        && req
            .extensions()
            .get::<hyper::ext::Protocol>()
            .is_some_and(|p| p.as_str().eq_ignore_ascii_case("websocket"))
}

/// Whether a comma-separated header lists `token` (ASCII case ignored).
fn has_token(headers: &HeaderMap, name: &HeaderName, token: &str) -> bool {
    headers
        .get_all(name)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| t.trim().eq_ignore_ascii_case(token))
}

impl Handshake {
    /// Checks the browser's handshake (RFC 6455 §4.2.1, RFC 8441 §5).
    pub fn read<B>(req: &Request<B>) -> Result<Handshake, WebSocketError> {
        let h = req.headers();
        if h.get(SEC_WEBSOCKET_VERSION).is_none_or(|v| v != "13") {
            return Err(WebSocketError::BadHandshake(
                "sec-websocket-version is not 13",
            ));
        }
        if is_extended_connect(req) {
            return Ok(Handshake::ExtendedConnect);
        }
        if req.version() != Version::HTTP_11 {
            return Err(WebSocketError::BadHandshake("upgrade needs HTTP/1.1"));
        }
        if !has_token(h, &CONNECTION, "upgrade") {
            return Err(WebSocketError::BadHandshake(
                "connection does not list upgrade",
            ));
        }
        let mut keys = h.get_all(SEC_WEBSOCKET_KEY).iter();
        let key = match (keys.next(), keys.next()) {
            (Some(key), None) => key,
            _ => {
                return Err(WebSocketError::BadHandshake(
                    "one sec-websocket-key is required",
                ));
            }
        };
        match STANDARD.decode(key.as_bytes()) {
            Ok(nonce) if nonce.len() == 16 => Ok(Handshake::Upgrade { key: key.clone() }),
            _ => Err(WebSocketError::BadHandshake(
                "sec-websocket-key is not 16 bytes in base64",
            )),
        }
    }

    /// The answer to the browser once the upstream accepted (`upstream`: its `101`'s headers,
    /// hop-by-hop headers already removed).
    pub fn answer<B>(&self, upstream: &HeaderMap, body: B) -> Response<B> {
        let mut res = Response::new(body);
        let headers = res.headers_mut();
        for (name, value) in upstream {
            if name != SEC_WEBSOCKET_ACCEPT && name != CONTENT_LENGTH {
                headers.append(name, value.clone());
            }
        }
        match self {
            Handshake::Upgrade { key } => {
                *res.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
                let h = res.headers_mut();
                h.insert(UPGRADE, HeaderValue::from_static("websocket"));
                h.insert(CONNECTION, HeaderValue::from_static("upgrade"));
                if let Ok(accept) = HeaderValue::from_str(&derive_accept_key(key.as_bytes())) {
                    h.insert(SEC_WEBSOCKET_ACCEPT, accept);
                }
            }
            Handshake::ExtendedConnect => *res.status_mut() = StatusCode::OK,
        }
        res
    }
}

/// Gatehouse's own handshake to the upstream: returns the key whose accept the upstream's
/// `101` must carry. `headers` went through the usual hygiene already (hop-by-hop removed);
/// only here, for an upgrade, are `Connection` and `Upgrade` put back.
pub fn upstream_request(headers: &mut HeaderMap) -> HeaderValue {
    let key = HeaderValue::from_str(&STANDARD.encode(rand::random::<[u8; 16]>()))
        .unwrap_or_else(|_| HeaderValue::from_static("dGhlIHNhbXBsZSBub25jZQ=="));
    headers.remove(SEC_WEBSOCKET_ACCEPT);
    headers.remove(CONTENT_LENGTH);
    headers.insert(CONNECTION, HeaderValue::from_static("upgrade"));
    headers.insert(UPGRADE, HeaderValue::from_static("websocket"));
    headers.insert(SEC_WEBSOCKET_VERSION, HeaderValue::from_static("13"));
    headers.insert(SEC_WEBSOCKET_KEY, key.clone());
    key
}

/// Whether the upstream's `101` accepted our key (RFC 6455 §4.1, client side, steps 2-4).
/// Subprotocol and extensions are the browser's business: it checks them against its offer.
pub fn upstream_accepted(headers: &HeaderMap, key: &HeaderValue) -> bool {
    has_token(headers, &UPGRADE, "websocket")
        && has_token(headers, &CONNECTION, "upgrade")
        && headers
            .get(SEC_WEBSOCKET_ACCEPT)
            .is_some_and(|v| v.as_bytes() == derive_accept_key(key.as_bytes()).as_bytes())
}

/// The Origin rule of token routes (cross-site WebSocket hijacking): a browser's WebSocket
/// cannot send the static anti-forgery header, but always sends `Origin`.
///
/// 1. `Origin` is present exactly once and equals `public_origin` (scheme and host compared
///    ignoring ASCII case, like [`crate::csrf`]).
/// 2. `Sec-Fetch-Site`, when present, is exactly once `same-origin`.
pub fn verify_origin(headers: &HeaderMap, policy: &CsrfPolicy) -> Result<(), WebSocketError> {
    let mut origins = headers.get_all(ORIGIN).iter();
    match (origins.next(), origins.next()) {
        (None, _) => return Err(WebSocketError::MissingOrigin),
        (Some(origin), None)
            if origin
                .as_bytes()
                .eq_ignore_ascii_case(policy.origin.as_bytes()) => {}
        _ => return Err(WebSocketError::ForeignOrigin),
    }
    let mut sites = headers.get_all(SEC_FETCH_SITE).iter();
    match (sites.next(), sites.next()) {
        (None, _) => Ok(()),
        (Some(site), None) if site == "same-origin" => Ok(()),
        _ => Err(WebSocketError::CrossSite),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> CsrfPolicy {
        CsrfPolicy::new(
            HeaderName::from_static("x-csrf"),
            HeaderValue::from_static("1"),
            &url::Url::parse("https://app.example").unwrap(),
        )
    }

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (n, v) in pairs {
            h.append(
                HeaderName::from_bytes(n.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        h
    }

    fn upgrade(pairs: &[(&str, &str)]) -> Request<()> {
        let mut req = Request::get("/ws").body(()).unwrap();
        *req.headers_mut() = headers(pairs);
        req
    }

    const GOOD: [(&str, &str); 4] = [
        ("upgrade", "websocket"),
        ("connection", "keep-alive, Upgrade"),
        ("sec-websocket-version", "13"),
        ("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ=="),
    ];

    #[test]
    fn a_browser_handshake_is_answered_with_the_accept_of_its_key() {
        let req = upgrade(&GOOD);
        assert!(is_websocket(&req));
        let hs = Handshake::read(&req).unwrap();
        let upstream = headers(&[
            ("sec-websocket-protocol", "chat"),
            ("sec-websocket-accept", "theirs"),
        ]);
        let res: Response<()> = hs.answer(&upstream, ());
        assert_eq!(res.status(), 101);
        // RFC 6455 §1.3's example key and accept.
        assert_eq!(
            res.headers()["sec-websocket-accept"],
            "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
        );
        assert_eq!(res.headers()["sec-websocket-protocol"], "chat");
        assert_eq!(res.headers()["upgrade"], "websocket");
    }

    #[test]
    fn malformed_handshakes_are_refused() {
        for (drop, extra) in [
            ("sec-websocket-version", None),
            ("connection", None),
            ("sec-websocket-key", None),
            ("sec-websocket-key", Some(("sec-websocket-key", "c2hvcnQ="))),
            (
                "sec-websocket-version",
                Some(("sec-websocket-version", "8")),
            ),
        ] {
            let mut pairs: Vec<(&str, &str)> =
                GOOD.iter().copied().filter(|(n, _)| *n != drop).collect();
            pairs.extend(extra);
            assert!(
                Handshake::read(&upgrade(&pairs)).is_err(),
                "{drop} {extra:?}"
            );
        }
        let mut twice = GOOD.to_vec();
        twice.push(("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ=="));
        assert!(Handshake::read(&upgrade(&twice)).is_err());
    }

    #[test]
    fn other_upgrades_and_plain_connect_are_not_websockets() {
        assert!(!is_websocket(&upgrade(&[("upgrade", "h2c")])));
        let connect = Request::connect("example.com:443").body(()).unwrap();
        assert!(!is_websocket(&connect));
        let mut extended = Request::connect("https://app.example/ws").body(()).unwrap();
        extended
            .extensions_mut()
            .insert(hyper::ext::Protocol::from_static("websocket"));
        assert!(is_websocket(&extended));
        *extended.headers_mut() = headers(&[("sec-websocket-version", "13")]);
        assert_eq!(
            Handshake::read(&extended).unwrap(),
            Handshake::ExtendedConnect
        );
        let res: Response<()> = Handshake::ExtendedConnect.answer(&HeaderMap::new(), ());
        assert_eq!(res.status(), 200);
        assert!(res.headers().get("sec-websocket-accept").is_none());
    }

    #[test]
    fn the_upstream_must_accept_our_own_key() {
        let mut h = headers(&[("sec-websocket-key", "client-key")]);
        let key = upstream_request(&mut h);
        assert_ne!(h["sec-websocket-key"], "client-key");
        assert_eq!(h["connection"], "upgrade");
        let good = headers(&[
            ("upgrade", "websocket"),
            ("connection", "Upgrade"),
            ("sec-websocket-accept", &derive_accept_key(key.as_bytes())),
        ]);
        assert!(upstream_accepted(&good, &key));
        let mut wrong = good.clone();
        wrong.insert(
            SEC_WEBSOCKET_ACCEPT,
            HeaderValue::from_static("s3pPLMBiTxaQ9kYGzzhZRbK+xOo="),
        );
        assert!(!upstream_accepted(&wrong, &key));
        let mut no_upgrade = good;
        no_upgrade.remove(UPGRADE);
        assert!(!upstream_accepted(&no_upgrade, &key));
    }

    #[test]
    fn the_origin_must_be_ours_and_the_fetch_site_same_origin() {
        let p = policy();
        assert!(verify_origin(&headers(&[("origin", "https://app.example")]), &p).is_ok());
        assert!(verify_origin(&headers(&[("origin", "HTTPS://APP.example")]), &p).is_ok());
        assert!(
            verify_origin(
                &headers(&[
                    ("origin", "https://app.example"),
                    ("sec-fetch-site", "same-origin")
                ]),
                &p
            )
            .is_ok()
        );
        assert!(matches!(
            verify_origin(&HeaderMap::new(), &p),
            Err(WebSocketError::MissingOrigin)
        ));
        for origin in [
            "https://evil.example",
            "null",
            "https://app.example:444",
            "http://app.example",
            "https://app.example/",
        ] {
            assert!(
                matches!(
                    verify_origin(&headers(&[("origin", origin)]), &p),
                    Err(WebSocketError::ForeignOrigin)
                ),
                "{origin}"
            );
        }
        assert!(matches!(
            verify_origin(
                &headers(&[
                    ("origin", "https://app.example"),
                    ("origin", "https://app.example")
                ]),
                &p
            ),
            Err(WebSocketError::ForeignOrigin)
        ));
        for site in ["same-site", "cross-site", "none"] {
            assert!(matches!(
                verify_origin(
                    &headers(&[("origin", "https://app.example"), ("sec-fetch-site", site)]),
                    &p
                ),
                Err(WebSocketError::CrossSite)
            ));
        }
    }
}
