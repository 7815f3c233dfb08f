//! Header hygiene between the browser and upstreams.
//!
//! Rules:
//! 1. Hop-by-hop headers (and any named in `Connection`) never cross gatehouse.
//! 2. Client-sent forwarding and identity headers that upstreams may trust (`Forwarded`,
//!    `X-Forwarded-*`, `X-Real-IP`, `X-Auth-Request-*`, the identity headers of IAP, App
//!    Service, Cloudflare Access, Kong, Envoy, …, plus `server.strip_request_headers`) are
//!    removed in every case and `_`/`-` spelling; gatehouse sets `X-Forwarded-For/-Proto/-Host`
//!    itself from what it knows.
//! 3. Gatehouse's own cookies never reach an upstream; other cookies pass. An upstream's
//!    `Set-Cookie` for one of our cookie names never reaches the browser.
//! 4. On token routes a client-sent `Authorization` is always removed; only gatehouse sets it.
//! 5. `TE: trailers` survives as the one `TE` value forwarded (gRPC needs it, and a client
//!    that accepts trailers gets them); `Trailer` is end to end and passes both ways.

use http::header::{AUTHORIZATION, CONNECTION, COOKIE, SET_COOKIE, TE};
use http::{HeaderMap, HeaderName, HeaderValue};
use smallvec::SmallVec;

use crate::cookie::CookieNames;

/// How many [`HOP_BY_HOP`] names there are: each has a bit in a `u8` (`strip_hop_by_hop`).
const HOP_BY_HOP_COUNT: usize = 8;
const _: () = assert!(HOP_BY_HOP_COUNT <= u8::BITS as usize);
static HOP_BY_HOP: [HeaderName; HOP_BY_HOP_COUNT] = [
    CONNECTION,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    http::header::PROXY_AUTHENTICATE,
    http::header::PROXY_AUTHORIZATION,
    TE,
    http::header::TRANSFER_ENCODING,
    http::header::UPGRADE,
];
/// Where `name` is in [`HOP_BY_HOP`]: one comparison of its length and bytes (a search of
/// the list would compare it with each name in turn).
fn hop_by_hop_index(name: &HeaderName) -> Option<usize> {
    match name.as_str() {
        "connection" => Some(0),
        "keep-alive" => Some(1),
        "proxy-connection" => Some(2),
        "proxy-authenticate" => Some(3),
        "proxy-authorization" => Some(4),
        "te" => Some(5),
        "transfer-encoding" => Some(6),
        "upgrade" => Some(7),
        _ => None,
    }
}
static X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
static X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
static X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
/// A header name to strip: exact, or a prefix (written with a trailing `*` in config).
/// Names compare lowercase, with `_` and `-` taken as the same.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HeaderPattern {
    Exact(String),
    Prefix(String),
}

impl HeaderPattern {
    /// `"X-Corp-User"` or `"X-Corp-*"`.
    pub fn parse(raw: &str) -> Result<HeaderPattern, String> {
        let (name, prefix) = match raw.strip_suffix('*') {
            Some(p) => (p, true),
            None => (raw, false),
        };
        let lower = name.to_ascii_lowercase();
        if lower.is_empty() || HeaderName::from_bytes(lower.as_bytes()).is_err() {
            return Err(format!(
                "{raw:?} is not a header name (or a prefix ending in *)"
            ));
        }
        Ok(if prefix {
            HeaderPattern::Prefix(lower)
        } else {
            HeaderPattern::Exact(lower)
        })
    }

    fn matches(&self, name: &[u8]) -> bool {
        match self {
            HeaderPattern::Exact(e) => same_name(name, e.as_bytes()),
            HeaderPattern::Prefix(p) => {
                name.len() >= p.len() && same_name(&name[..p.len()], p.as_bytes())
            }
        }
    }
}

/// Whether `name` is one of the headers that proxies, load balancers and auth gateways use to
/// assert a client address or an identity (upstreams may trust them, so a client must never
/// be able to send them), or matches one of `extra`. Names compare with `_` read as `-`.
fn is_spoofable(name: &HeaderName, extra: &[HeaderPattern]) -> bool {
    let raw = name.as_str().as_bytes();
    let dashed: SmallVec<[u8; 64]>;
    let n = if memchr::memchr(b'_', raw).is_some() {
        dashed = raw
            .iter()
            .map(|&b| if b == b'_' { b'-' } else { b })
            .collect();
        &dashed[..]
    } else {
        raw
    };
    spoofable_name(n)
        || SPOOFABLE_PREFIXES
            .iter()
            .any(|p| n.starts_with(p.as_bytes()))
        || extra.iter().any(|p| p.matches(raw))
}

/// `a` equals `b` when `_` and `-` are taken as the same (names are already lowercase).
fn same_name(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len()
        && a.iter()
            .zip(b)
            .all(|(x, y)| x == y || (*x == b'_' && *y == b'-'))
}

/// The whole names of [`is_spoofable`]: one `match`, which compares a name's length before
/// any byte (most names a browser sends are no such length, or differ in the first bytes).
fn spoofable_name(n: &[u8]) -> bool {
    matches!(
        n,
        b"forwarded"
            | b"x-real-ip"
            | b"x-client-ip"
            | b"true-client-ip"
            | b"cf-connecting-ip"
            | b"x-cluster-client-ip"
            | b"fastly-client-ip"
            | b"x-original-url"
            | b"x-original-uri"
            | b"x-original-host"
            | b"x-rewrite-url"
            | b"remote-user"
            | b"x-user"
            | b"x-email"
            | b"x-userinfo"
            | b"x-id-token"
            | b"x-access-token"
            // Google IAP.
            | b"x-goog-iap-jwt-assertion"
            // Cloudflare Access.
            | b"cf-access-jwt-assertion"
            | b"cf-access-authenticated-user-email"
            // Kong.
            | b"x-credential-identifier"
            | b"x-anonymous-consumer"
            // Envoy.
            | b"x-jwt-payload"
    )
}

/// The prefixes of [`is_spoofable`].
const SPOOFABLE_PREFIXES: [&str; 12] = [
    "x-forwarded-",
    "x-auth-request-",
    "x-original-forwarded-",
    "x-remote-",
    "x-authenticated-",
    "x-amzn-oidc-",
    // Apache mod_auth_openidc / Grafana-style auth proxies.
    "x-webauth-",
    // Google IAP.
    "x-goog-authenticated-user-",
    // Azure App Service authentication.
    "x-ms-client-principal",
    "x-ms-token-",
    // Kong.
    "x-consumer-",
    // Envoy.
    "x-envoy-",
];

/// Removes hop-by-hop headers, including those the `Connection` header lists.
pub fn strip_hop_by_hop(headers: &mut HeaderMap) {
    // One look at each name says which hop-by-hop headers are there (a bit each): a removal
    // costs a hash of the name, and most messages carry none, or only `Connection`.
    let mut present = 0u8;
    for name in headers.keys() {
        if let Some(i) = hop_by_hop_index(name) {
            present |= 1 << i;
        }
    }
    if present == 0 {
        return;
    }
    // Names listed in `Connection` that are hop-by-hop anyway (`keep-alive`, `upgrade`) or no
    // header at all (`close`) need no second pass: the usual `Connection` costs nothing.
    // `Connection` itself (bit 0) comes out in the same lookup that reads what it lists.
    let mut listed: Vec<HeaderName> = Vec::new();
    if present & 1 != 0
        && let http::header::Entry::Occupied(entry) = headers.entry(CONNECTION)
    {
        for value in entry.remove_entry_mult().1 {
            // What nearly every message says: one token that names no other header.
            let whole = value.as_bytes();
            if whole.eq_ignore_ascii_case(b"keep-alive") || whole.eq_ignore_ascii_case(b"close") {
                continue;
            }
            let tokens = value.to_str().ok().into_iter().flat_map(|v| v.split(','));
            for token in tokens.map(str::trim) {
                let known = token.eq_ignore_ascii_case("close")
                    || HOP_BY_HOP
                        .iter()
                        .any(|h| token.eq_ignore_ascii_case(h.as_str()));
                if !known && let Ok(name) = HeaderName::from_bytes(token.as_bytes()) {
                    listed.push(name);
                }
            }
        }
    }
    for name in listed {
        headers.remove(name);
    }
    for (i, name) in HOP_BY_HOP.iter().enumerate().skip(1) {
        if present & (1 << i) != 0 {
            headers.remove(name);
        }
    }
}

/// Removes an upstream's `Set-Cookie` headers that would set, overwrite or clear one of
/// gatehouse's own cookies (any case of the name): only gatehouse writes those.
pub fn drop_our_set_cookies(headers: &mut HeaderMap, names: &CookieNames) {
    let http::header::Entry::Occupied(entry) = headers.entry(SET_COOKIE) else {
        return;
    };
    let all: Vec<HeaderValue> = entry.remove_entry_mult().1.collect();
    for value in all {
        let bytes = value.as_bytes();
        let pair = bytes.split(|&b| b == b';').next().unwrap_or_default();
        let name = pair.split(|&b| b == b'=').next().unwrap_or_default();
        let name = String::from_utf8_lossy(name);
        if names.is_ours(name.trim()) {
            tracing::warn!("dropped an upstream Set-Cookie for one of gatehouse's own cookies");
            continue;
        }
        headers.append(SET_COOKIE, value);
    }
}

/// What gatehouse adds to a forwarded request.
pub struct Forwarding<'a> {
    /// `X-Forwarded-For`: the client and the trusted hops after it (see [`crate::forwarded`]).
    pub client_ip: HeaderValue,
    pub proto: &'a str,
    /// `X-Forwarded-Host`.
    pub host: Option<HeaderValue>,
    /// The request's cookies without ours (the request's own `Cookie` headers were taken out
    /// by the jar already).
    pub cookie: Option<HeaderValue>,
    /// `Some` on token routes: `Some(Some(bearer))` attaches it, `Some(None)` sends none.
    pub authorization: Option<Option<HeaderValue>>,
    /// Configured extra headers to strip (`server.strip_request_headers`).
    pub strip: &'a [HeaderPattern],
}

/// Whether the request's `TE` lists `trailers`.
fn accepts_trailers(headers: &HeaderMap) -> bool {
    headers
        .get_all(TE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| {
            t.split(';')
                .next()
                .unwrap_or_default()
                .trim()
                .eq_ignore_ascii_case("trailers")
        })
}

/// Rules 1 to 5 on a request's headers, and what `f` says added. The client's `Host` (which
/// names gatehouse) is left where it is: every request to an upstream is built by
/// [`crate::proxy`]'s `Head::request`, which overwrites it with the address's own, and a map
/// that keeps the name needs no growing for it.
pub fn prepare_request(headers: &mut HeaderMap, f: Forwarding<'_>) {
    let trailers = accepts_trailers(headers);
    strip_hop_by_hop(headers);
    if trailers {
        headers.insert(TE, HeaderValue::from_static("trailers"));
    }
    // Spoofed headers are rare: the list is built (and allocated) only when there is one.
    if headers.keys().any(|n| is_spoofable(n, f.strip)) {
        let spoofed: Vec<HeaderName> = headers
            .keys()
            .filter(|n| is_spoofable(n, f.strip))
            .cloned()
            .collect();
        for name in spoofed {
            headers.remove(name);
        }
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
    // The client's address list is ours to give away: no copy of it.
    headers.insert(X_FORWARDED_FOR.clone(), f.client_ip);
    let proto = match f.proto {
        "https" => Ok(HeaderValue::from_static("https")),
        "http" => Ok(HeaderValue::from_static("http")),
        other => HeaderValue::from_str(other),
    };
    if let Ok(v) = proto {
        headers.insert(X_FORWARDED_PROTO.clone(), v);
    }
    if let Some(v) = f.host {
        headers.insert(X_FORWARDED_HOST.clone(), v);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_hop_by_hop_name_is_found_at_its_own_place() {
        for (i, name) in HOP_BY_HOP.iter().enumerate() {
            assert_eq!(hop_by_hop_index(name), Some(i), "{name}");
        }
        assert_eq!(hop_by_hop_index(&http::header::CONTENT_TYPE), None);
        assert_eq!(
            HOP_BY_HOP[0], CONNECTION,
            "strip_hop_by_hop takes bit 0 as Connection"
        );
    }

    fn forwarding(auth: Option<Option<HeaderValue>>) -> Forwarding<'static> {
        Forwarding {
            client_ip: HeaderValue::from_static("192.0.2.1"),
            proto: "https",
            host: Some(HeaderValue::from_static("app.example")),
            cookie: None,
            authorization: auth,
            strip: &[],
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
        assert!(h.values().all(|v| v != "evil"), "{h:?}");
    }

    #[test]
    fn every_listed_name_and_prefix_is_stripped_with_dashes_or_underscores_and_others_are_kept() {
        let long_prefixed = format!("x_forwarded_{}", "a".repeat(80));
        let listed = [
            "forwarded",
            "x-user",
            "x_user",
            "x-jwt-payload",
            "cf_access_authenticated_user_email",
            "x-goog-iap-jwt-assertion",
            "x-envoy-original-path",
            "x_ms_client_principal_name",
            "x-ms-client-principal",
            "x-consumer-username",
            long_prefixed.as_str(),
        ];
        // Names one byte off a listed one, or a listed prefix with nothing after it where the
        // list names only longer ones.
        let kept = [
            "x-csrf",
            "x-users",
            "x-use",
            "forwarde",
            "x-envoy",
            "x_consumer",
            "cf-ray",
        ];
        let mut h = HeaderMap::new();
        for n in listed.iter().chain(&kept) {
            h.append(
                HeaderName::from_bytes(n.as_bytes()).unwrap(),
                HeaderValue::from_static("1"),
            );
        }
        prepare_request(&mut h, forwarding(None));
        for n in listed {
            assert!(!h.contains_key(n), "{n} was kept");
        }
        for n in kept {
            assert!(h.contains_key(n), "{n} was stripped");
        }
    }

    #[test]
    fn hop_by_hop_and_connection_listed_headers_are_removed() {
        let mut h = HeaderMap::new();
        h.insert(
            CONNECTION,
            HeaderValue::from_static("keep-alive, x-secret-hop"),
        );
        h.append(CONNECTION, HeaderValue::from_static("Close, X-Second-Hop"));
        h.insert("x-secret-hop", HeaderValue::from_static("1"));
        h.insert("x-second-hop", HeaderValue::from_static("1"));
        h.insert("upgrade", HeaderValue::from_static("websocket"));
        h.insert("te", HeaderValue::from_static("trailers"));
        h.insert("x-kept", HeaderValue::from_static("1"));
        strip_hop_by_hop(&mut h);
        assert_eq!(h.len(), 1, "{h:?}");
    }

    #[test]
    fn a_connection_header_of_one_usual_token_goes_and_everything_end_to_end_stays() {
        for usual in ["keep-alive", "Keep-Alive", "close", "CLOSE"] {
            let mut h = HeaderMap::new();
            h.insert(CONNECTION, HeaderValue::from_static(usual));
            h.insert("keep-alive", HeaderValue::from_static("timeout=5"));
            h.insert("content-type", HeaderValue::from_static("application/json"));
            h.insert("x-kept", HeaderValue::from_static("1"));
            strip_hop_by_hop(&mut h);
            let mut left: Vec<&str> = h.keys().map(HeaderName::as_str).collect();
            left.sort_unstable();
            assert_eq!(left, ["content-type", "x-kept"], "{usual}");
        }
    }

    #[test]
    fn each_hop_by_hop_header_is_removed_on_its_own_in_any_case_without_connection() {
        for name in [
            "Connection",
            "Keep-Alive",
            "Proxy-Connection",
            "Proxy-Authenticate",
            "Proxy-Authorization",
            "TE",
            "Transfer-Encoding",
            "Upgrade",
        ] {
            let mut h = HeaderMap::new();
            h.insert(
                HeaderName::from_bytes(name.as_bytes()).unwrap(),
                HeaderValue::from_static("x"),
            );
            h.insert("x-kept", HeaderValue::from_static("1"));
            strip_hop_by_hop(&mut h);
            assert_eq!(h.len(), 1, "{name}: {h:?}");
            assert!(h.contains_key("x-kept"));
        }
    }

    #[test]
    fn te_trailers_is_the_only_te_forwarded_and_trailer_passes() {
        let mut h = HeaderMap::new();
        h.insert(TE, HeaderValue::from_static("gzip, Trailers"));
        h.insert("trailer", HeaderValue::from_static("grpc-status"));
        prepare_request(&mut h, forwarding(None));
        assert_eq!(h[TE], "trailers");
        assert_eq!(h["trailer"], "grpc-status");
        let mut h = HeaderMap::new();
        h.insert(TE, HeaderValue::from_static("gzip"));
        prepare_request(&mut h, forwarding(None));
        assert!(h.get(TE).is_none());
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
