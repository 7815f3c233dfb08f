//! Which `Host` a request may name. DNS rebinding points an attacker's name at gatehouse, so
//! that a page on it can call `auth = "none"` routes or the callback as same-origin; answering
//! only for our own names defeats it.
//!
//! Rules:
//! 1. Every authority the request names (the request target's, HTTP/2 `:authority`, and the
//!    `Host` header) must be one of `server.allowed_hosts` (by default `public_origin`'s host,
//!    with and without its default port), compared ignoring ASCII case; at most one `Host`.
//! 2. Otherwise 421, except that a top-level browser navigation (GET or HEAD that says it is
//!    one) is redirected to the same path on `public_origin`, so someone typing another name
//!    for the same machine lands on the app instead of an error page.
//! 3. `/healthz` and `/readyz` answer whatever the `Host`: probes often use an IP.

use http::header::{ACCEPT, HOST};
use http::{HeaderMap, Method, Uri};

/// What the host check decided.
#[derive(Debug, PartialEq, Eq)]
pub enum Verdict {
    Allowed,
    /// Send the browser to this URL on the public origin.
    Redirect(String),
    Misdirected,
}

/// Paths that answer any `Host`.
pub fn is_exempt(path: &str) -> bool {
    matches!(path, "/healthz" | "/readyz")
}

/// Rule 1 on the request's URI and headers.
pub fn is_allowed(uri: &Uri, headers: &HeaderMap, allowed: &[String]) -> bool {
    let ok = |name: &str| allowed.iter().any(|a| a.eq_ignore_ascii_case(name));
    let mut hosts = headers.get_all(HOST).iter();
    let host = match (hosts.next(), hosts.next()) {
        (None, _) => None,
        (Some(h), None) => match h.to_str() {
            Ok(h) => Some(h),
            Err(_) => return false,
        },
        (Some(_), Some(_)) => return false,
    };
    let authority = uri.authority().map(|a| a.as_str());
    match (authority, host) {
        (None, None) => false,
        (a, h) => a.is_none_or(ok) && h.is_none_or(ok),
    }
}

/// Rules 1 and 2: `origin` is `public_origin` without a trailing slash.
pub fn check(
    method: &Method,
    uri: &Uri,
    headers: &HeaderMap,
    allowed: &[String],
    origin: &str,
) -> Verdict {
    if is_allowed(uri, headers, allowed) {
        return Verdict::Allowed;
    }
    if is_navigation(method, headers) {
        // Only a path gatehouse would route is carried over; anything else starts at the root.
        let path = match uri.path_and_query() {
            Some(p) if crate::routes::is_routable_path(p.path()) => p.as_str(),
            _ => "/",
        };
        return Verdict::Redirect(format!("{origin}{path}"));
    }
    Verdict::Misdirected
}

/// A top-level navigation: `Sec-Fetch-Mode: navigate`, or (older browsers) an HTML `Accept`
/// without fetch metadata. Only safe methods.
fn is_navigation(method: &Method, headers: &HeaderMap) -> bool {
    if !matches!(*method, Method::GET | Method::HEAD) {
        return false;
    }
    match headers.get("sec-fetch-mode") {
        Some(mode) => mode == "navigate",
        None => headers
            .get(ACCEPT)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.contains("text/html")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn allowed() -> Vec<String> {
        vec!["app.example.com:443".into(), "app.example.com".into()]
    }

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(
                http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        h
    }

    #[test]
    fn our_host_in_any_case_and_with_the_default_port_is_allowed() {
        let uri: Uri = "/x".parse().unwrap();
        for host in ["app.example.com", "APP.example.com", "app.example.com:443"] {
            assert!(
                is_allowed(&uri, &headers(&[("host", host)]), &allowed()),
                "{host}"
            );
        }
        let h2: Uri = "https://app.example.com/x".parse().unwrap();
        assert!(is_allowed(&h2, &HeaderMap::new(), &allowed()));
    }

    #[test]
    fn other_hosts_ports_missing_or_repeated_hosts_are_refused() {
        let uri: Uri = "/x".parse().unwrap();
        for host in [
            "evil.example",
            "app.example.com:8443",
            "app.example.com.evil.example",
            "127.0.0.1",
        ] {
            assert!(
                !is_allowed(&uri, &headers(&[("host", host)]), &allowed()),
                "{host}"
            );
        }
        assert!(
            !is_allowed(&uri, &HeaderMap::new(), &allowed()),
            "no host at all"
        );
        let two = headers(&[("host", "app.example.com"), ("host", "evil.example")]);
        assert!(!is_allowed(&uri, &two, &allowed()));
        let absolute: Uri = "http://evil.example/x".parse().unwrap();
        let ours = headers(&[("host", "app.example.com")]);
        assert!(
            !is_allowed(&absolute, &ours, &allowed()),
            "the target's authority counts too"
        );
    }

    #[test]
    fn a_navigation_to_another_host_is_sent_to_the_public_origin() {
        let uri: Uri = "/app/page?x=1".parse().unwrap();
        let nav = headers(&[("host", "localhost:8080"), ("sec-fetch-mode", "navigate")]);
        assert_eq!(
            check(
                &Method::GET,
                &uri,
                &nav,
                &allowed(),
                "https://app.example.com"
            ),
            Verdict::Redirect("https://app.example.com/app/page?x=1".into())
        );
        let fetch = headers(&[("host", "localhost:8080"), ("sec-fetch-mode", "cors")]);
        assert_eq!(
            check(
                &Method::GET,
                &uri,
                &fetch,
                &allowed(),
                "https://app.example.com"
            ),
            Verdict::Misdirected
        );
        let post = headers(&[("host", "localhost:8080"), ("sec-fetch-mode", "navigate")]);
        assert_eq!(
            check(
                &Method::POST,
                &uri,
                &post,
                &allowed(),
                "https://app.example.com"
            ),
            Verdict::Misdirected
        );
    }
}
