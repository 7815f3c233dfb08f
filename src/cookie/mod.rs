//! Cookies: reading the request's `Cookie` header once (`jar.rs`), writing `Set-Cookie` with
//! fixed attributes, and sealing values (`seal.rs`).
//!
//! Rules:
//! 1. Every cookie gatehouse sets is `Secure; HttpOnly; Path=/` and has no `Domain`.
//! 2. The session cookie is `SameSite=Strict` unless configured `Lax`; the login-binding cookie
//!    is always `Lax`, because the provider's redirect back to us is a cross-site navigation.
//! 3. When a name appears more than once in `Cookie`, every value is tried in order and the
//!    first that opens wins: an attacker who can plant a cookie cannot shadow a real one.

mod jar;
mod seal;

pub use jar::{CookieNames, Jar};
pub use seal::{KEY_LEN, KeyRing, MAX_NAME_LEN, random_key};

use std::time::Duration;

use http::HeaderValue;

/// The `SameSite` attribute of a cookie gatehouse sets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SameSite {
    Strict,
    Lax,
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

#[cfg(test)]
mod tests {
    use super::*;

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
