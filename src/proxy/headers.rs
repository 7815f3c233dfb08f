//! Header hygiene between the browser and upstreams.
//!
//! Rules:
//! 1. Hop-by-hop headers (and any named in `Connection`) never cross gatehouse.
//! 2. Client-sent forwarding and identity headers (`Forwarded`, `X-Forwarded-*`, `X-Real-IP`,
//!    `X-Auth-Request-*`, …) are removed in every case and `_`/`-` spelling; gatehouse sets
//!    `X-Forwarded-For/-Proto/-Host` itself from what it knows.
//! 3. Gatehouse's own cookies never reach an upstream; other cookies pass.
//! 4. On token routes a client-sent `Authorization` is always removed; only gatehouse sets it.

use http::header::{AUTHORIZATION, CONNECTION, COOKIE, HOST};
use http::{HeaderMap, HeaderName, HeaderValue};

const HOP_BY_HOP: [&str; 9] = [
    "connection",
    "keep-alive",
    "proxy-connection",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
];
/// Headers that proxies, load balancers and auth gateways use to assert a client address or
/// an identity; upstreams may trust them, so a client must never be able to send them.
const SPOOFABLE_EXACT: [&str; 16] = [
    "forwarded",
    "x-real-ip",
    "x-client-ip",
    "true-client-ip",
    "cf-connecting-ip",
    "x-cluster-client-ip",
    "fastly-client-ip",
    "x-original-url",
    "x-original-uri",
    "x-rewrite-url",
    "remote-user",
    "x-user",
    "x-email",
    "x-userinfo",
    "x-id-token",
    "x-access-token",
];
const SPOOFABLE_PREFIX: [&str; 6] = [
    "x-forwarded-",
    "x-auth-request-",
    "x-original-forwarded-",
    "x-remote-",
    "x-authenticated-",
    "x-amzn-oidc-",
];

/// `a` equals `b` when `_` and `-` are taken as the same (names are already lowercase).
fn same_name(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len()
        && a.iter()
            .zip(b)
            .all(|(x, y)| x == y || (*x == b'_' && *y == b'-'))
}

fn is_spoofable(name: &HeaderName) -> bool {
    let n = name.as_str().as_bytes();
    SPOOFABLE_EXACT.iter().any(|e| same_name(n, e.as_bytes()))
        || SPOOFABLE_PREFIX
            .iter()
            .any(|p| n.len() > p.len() && same_name(&n[..p.len()], p.as_bytes()))
}

/// Removes hop-by-hop headers, including those the `Connection` header lists.
pub fn strip_hop_by_hop(headers: &mut HeaderMap) {
    let listed: Vec<HeaderName> = headers
        .get_all(CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|t| HeaderName::from_bytes(t.trim().as_bytes()).ok())
        .collect();
    for name in listed {
        headers.remove(name);
    }
    for name in HOP_BY_HOP {
        headers.remove(name);
    }
}

/// What gatehouse adds to a forwarded request.
pub struct Forwarding<'a> {
    pub client_ip: &'a str,
    pub proto: &'a str,
    pub host: &'a str,
    pub upstream_authority: &'a str,
    /// The request's cookies without ours (the request's own `Cookie` headers were taken out
    /// by the jar already).
    pub cookie: Option<HeaderValue>,
    /// `Some` on token routes: `Some(Some(bearer))` attaches it, `Some(None)` sends none.
    pub authorization: Option<Option<HeaderValue>>,
}

pub fn prepare_request(headers: &mut HeaderMap, f: Forwarding<'_>) {
    strip_hop_by_hop(headers);
    let spoofed: Vec<HeaderName> = headers
        .keys()
        .filter(|n| is_spoofable(n))
        .cloned()
        .collect();
    for name in spoofed {
        headers.remove(name);
    }
    match f.cookie {
        Some(kept) => {
            headers.insert(COOKIE, kept);
        }
        None => {
            headers.remove(COOKIE);
        }
    }
    if let Some(auth) = f.authorization {
        headers.remove(AUTHORIZATION);
        if let Some(bearer) = auth {
            headers.insert(AUTHORIZATION, bearer);
        }
    }
    for (name, value) in [
        ("x-forwarded-for", f.client_ip),
        ("x-forwarded-proto", f.proto),
        ("x-forwarded-host", f.host),
        ("host", f.upstream_authority),
    ] {
        if let Ok(v) = HeaderValue::from_str(value) {
            headers.insert(
                if name == "host" {
                    HOST
                } else {
                    HeaderName::from_static(name)
                },
                v,
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn forwarding(auth: Option<Option<HeaderValue>>) -> Forwarding<'static> {
        Forwarding {
            client_ip: "192.0.2.1",
            proto: "https",
            host: "app.example",
            upstream_authority: "10.0.0.1:9000",
            cookie: None,
            authorization: auth,
        }
    }

    #[test]
    fn spoofed_forwarding_headers_are_replaced_in_every_spelling() {
        let mut h = HeaderMap::new();
        for n in [
            "x-remote-user",
            "remote_user",
            "x-amzn-oidc-identity",
            "cf-connecting-ip",
            "x-forwarded-for",
            "x_forwarded_for",
            "X-Forwarded-Host",
            "forwarded",
            "x-real-ip",
            "x_real_ip",
            "x-auth-request-email",
            "x_auth_request_user",
        ] {
            h.append(
                HeaderName::from_bytes(n.as_bytes()).unwrap(),
                HeaderValue::from_static("evil"),
            );
        }
        prepare_request(&mut h, forwarding(None));
        assert_eq!(h["x-forwarded-for"], "192.0.2.1");
        assert_eq!(h["x-forwarded-host"], "app.example");
        assert_eq!(h["host"], "10.0.0.1:9000");
        assert!(h.values().all(|v| v != "evil"), "{h:?}");
    }

    #[test]
    fn hop_by_hop_and_connection_listed_headers_are_removed() {
        let mut h = HeaderMap::new();
        h.insert(
            CONNECTION,
            HeaderValue::from_static("keep-alive, x-secret-hop"),
        );
        h.insert("x-secret-hop", HeaderValue::from_static("1"));
        h.insert("upgrade", HeaderValue::from_static("websocket"));
        h.insert("te", HeaderValue::from_static("trailers"));
        h.insert("x-kept", HeaderValue::from_static("1"));
        strip_hop_by_hop(&mut h);
        assert_eq!(h.len(), 1, "{h:?}");
    }

    #[test]
    fn token_routes_replace_client_authorization_and_forward_only_the_jars_cookies() {
        let mut h = HeaderMap::new();
        h.insert(AUTHORIZATION, HeaderValue::from_static("Bearer forged"));
        h.insert(COOKIE, HeaderValue::from_static("__Host-g=sealed"));
        let mut f = forwarding(Some(Some(HeaderValue::from_static("Bearer real"))));
        f.cookie = Some(HeaderValue::from_static("a=1"));
        prepare_request(&mut h, f);
        assert_eq!(h[AUTHORIZATION], "Bearer real");
        assert_eq!(h[COOKIE], "a=1");

        let mut h = HeaderMap::new();
        h.insert(AUTHORIZATION, HeaderValue::from_static("Bearer forged"));
        prepare_request(&mut h, forwarding(Some(None)));
        assert!(h.get(AUTHORIZATION).is_none());

        let mut h = HeaderMap::new();
        h.insert(AUTHORIZATION, HeaderValue::from_static("Basic abc"));
        prepare_request(&mut h, forwarding(None));
        assert_eq!(
            h[AUTHORIZATION], "Basic abc",
            "auth = none routes leave Authorization alone"
        );
    }
}
