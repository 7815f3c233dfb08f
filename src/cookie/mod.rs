//! Cookies: reading ours out of a `Cookie` header, writing `Set-Cookie` with fixed attributes,
//! and sealing their values (`seal.rs`).
//!
//! Rules:
//! 1. Every cookie gatehouse sets is `Secure; HttpOnly; Path=/` and has no `Domain`.
//! 2. The session cookie is `SameSite=Strict` unless configured `Lax`; the login-binding cookie
//!    is always `Lax`, because the provider's redirect back to us is a cross-site navigation.
//! 3. When a name appears more than once in `Cookie`, every value is tried in order and the
//!    first that opens wins: an attacker who can plant a cookie cannot shadow a real one.

mod seal;

pub use seal::{KEY_LEN, KeyRing, random_key};

use std::time::Duration;

use http::HeaderMap;
use http::HeaderValue;
use http::header::COOKIE;

use crate::config::SameSite;

/// Every value of cookie `name` in the request's `Cookie` headers, in order.
pub fn values<'a>(headers: &'a HeaderMap, name: &'a str) -> impl Iterator<Item = &'a str> + 'a {
    headers
        .get_all(COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(move |pair| {
            let (k, v) = pair.split_once('=')?;
            (k.trim() == name).then(|| v.trim().trim_matches('"'))
        })
}

fn same_site_attr(same_site: SameSite) -> &'static str {
    match same_site {
        SameSite::Strict => "Strict",
        SameSite::Lax => "Lax",
    }
}

/// `Set-Cookie` for a cookie gatehouse owns. `max_age: None` makes a browser-session cookie.
pub fn set_cookie(
    name: &str,
    value: &str,
    same_site: SameSite,
    max_age: Option<Duration>,
) -> HeaderValue {
    let same_site = same_site_attr(same_site);
    let mut s = format!("{name}={value}; Path=/; Secure; HttpOnly; SameSite={same_site}");
    if let Some(age) = max_age {
        s.push_str(&format!("; Max-Age={}", age.as_secs()));
    }
    // Name and value are base64url / validated config: always a valid header value.
    HeaderValue::from_str(&s).unwrap_or_else(|_| HeaderValue::from_static("invalid=; Max-Age=0"))
}

/// `Set-Cookie` that deletes the cookie in the browser.
pub fn clear_cookie(name: &str, same_site: SameSite) -> HeaderValue {
    let same_site = same_site_attr(same_site);
    let s = format!(
        "{name}=; Path=/; Secure; HttpOnly; SameSite={same_site}; Max-Age=0; Expires=Thu, 01 Jan 1970 00:00:00 GMT"
    );
    HeaderValue::from_str(&s).unwrap_or_else(|_| HeaderValue::from_static("invalid=; Max-Age=0"))
}

/// The request's `Cookie` header(s) without the cookies named in `ours`, for forwarding.
/// `None` when nothing else is left.
pub fn strip(headers: &HeaderMap, ours: &[&str]) -> Option<HeaderValue> {
    let mut kept = String::new();
    for header in headers.get_all(COOKIE) {
        let Ok(text) = header.to_str() else { continue };
        for pair in text.split(';') {
            let pair = pair.trim();
            if pair.is_empty() {
                continue;
            }
            let name = pair.split_once('=').map_or(pair, |(k, _)| k).trim();
            if ours.contains(&name) {
                continue;
            }
            if !kept.is_empty() {
                kept.push_str("; ");
            }
            kept.push_str(pair);
        }
    }
    if kept.is_empty() {
        None
    } else {
        HeaderValue::from_str(&kept).ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(cookies: &[&str]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for c in cookies {
            h.append(COOKIE, HeaderValue::from_str(c).unwrap());
        }
        h
    }

    #[test]
    fn reads_all_values_of_a_name_across_headers() {
        let h = headers(&["a=1; g=first", "g=second;; =; junk"]);
        assert_eq!(values(&h, "g").collect::<Vec<_>>(), ["first", "second"]);
        assert_eq!(values(&headers(&[";", "=", ""]), "g").count(), 0);
    }

    #[test]
    fn survives_two_hundred_cookies_and_huge_values() {
        let many: Vec<String> = (0..200).map(|i| format!("c{i}=v")).collect();
        let big = format!("g={}", "x".repeat(8192));
        let h = headers(&[&many.join("; "), &big]);
        assert_eq!(values(&h, "g").next().map(str::len), Some(8192));
    }

    #[test]
    fn strip_removes_only_our_cookies() {
        let h = headers(&["theme=dark; __Host-g=secret; __Host-g-login=x", "other=1"]);
        let kept = strip(&h, &["__Host-g", "__Host-g-login"]).unwrap();
        assert_eq!(kept, "theme=dark; other=1");
        assert!(strip(&headers(&["__Host-g=secret"]), &["__Host-g"]).is_none());
    }

    #[test]
    fn set_cookie_has_the_secure_attributes() {
        let v = set_cookie("__Host-g", "abc", SameSite::Strict, None);
        let s = v.to_str().unwrap();
        for attr in ["Secure", "HttpOnly", "SameSite=Strict", "Path=/"] {
            assert!(s.contains(attr), "{s} lacks {attr}");
        }
        assert!(!s.to_ascii_lowercase().contains("domain"));
        let c = clear_cookie("__Host-g", SameSite::Lax);
        assert!(c.to_str().unwrap().contains("Max-Age=0"));
    }
}
