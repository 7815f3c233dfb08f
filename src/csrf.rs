//! The anti-forgery check every proxied request passes before a token is attached to it.
//! A pure function of the request headers, so the pipeline applies it to every method.
//!
//! A request is accepted only when all of these hold:
//!
//! 1. The configured static header is present exactly once with exactly the configured value.
//!    A custom header cannot be set by a form, a link or an image, and cross-origin `fetch`
//!    cannot send it without a CORS preflight we never approve. The value is not a secret, so
//!    it is compared plainly. Safe methods are not exempt: GET can still leak data or act.
//! 2. If `Origin` is present, it is our public origin (scheme and host compared ignoring ASCII
//!    case, everything else byte for byte). `Origin: null`, a foreign scheme, host or port, a
//!    trailing slash and several `Origin` headers are all refused.
//! 3. If `Sec-Fetch-Site` is present, it is exactly `same-origin`. `same-site` is refused (a
//!    sibling subdomain is not us), and so is `none`: a user-typed navigation never carries
//!    the custom header, so a request that claims both is not from our front end.

use http::header::{HeaderMap, HeaderName, HeaderValue, ORIGIN};
use url::Url;

/// The fetch-metadata header (`http` has no constant for it).
const SEC_FETCH_SITE: HeaderName = HeaderName::from_static("sec-fetch-site");

/// What [`verify`] accepts: the static header and our own origin.
#[derive(Debug, Clone)]
pub struct CsrfPolicy {
    /// Name of the static anti-forgery header the front end sends on every call.
    pub header_name: HeaderName,
    /// The value it must carry, byte for byte.
    pub header_value: HeaderValue,
    /// Serialized public origin, as a browser writes it in `Origin`: `http://127.0.0.1:8080`.
    pub origin: String,
}

impl CsrfPolicy {
    /// Builds a policy whose origin is `public_origin`'s, serialized the way browsers send it
    /// (no path, no trailing slash, default port omitted).
    pub fn new(header_name: HeaderName, header_value: HeaderValue, public_origin: &Url) -> Self {
        Self {
            header_name,
            header_value,
            origin: public_origin.origin().ascii_serialization(),
        }
    }
}

/// Why a request was refused; each variant is the browser's fault (403).
#[derive(Debug, thiserror::Error, PartialEq, Eq, Clone, Copy)]
pub enum CsrfError {
    /// Rule 1: the static header is absent, repeated or has another value.
    #[error("missing anti-forgery header")]
    MissingHeader,
    /// Rule 2: `Origin` names someone else.
    #[error("origin header names a foreign origin")]
    ForeignOrigin,
    /// Rule 3: `Sec-Fetch-Site` is not `same-origin`.
    #[error("sec-fetch-site header says the request is not same-origin")]
    CrossSiteFetch,
}

/// Applies rules 1-3 in order and returns the first one broken.
pub fn verify(headers: &HeaderMap, policy: &CsrfPolicy) -> Result<(), CsrfError> {
    if !single_value_is(headers, &policy.header_name, |v| v == policy.header_value) {
        return Err(CsrfError::MissingHeader);
    }
    if headers.contains_key(ORIGIN)
        && !single_value_is(headers, &ORIGIN, |v| {
            v.as_bytes().eq_ignore_ascii_case(policy.origin.as_bytes())
        })
    {
        return Err(CsrfError::ForeignOrigin);
    }
    if headers.contains_key(&SEC_FETCH_SITE)
        && !single_value_is(headers, &SEC_FETCH_SITE, |v| v == "same-origin")
    {
        return Err(CsrfError::CrossSiteFetch);
    }
    Ok(())
}

/// True when `name` occurs exactly once and its value passes `accept`.
fn single_value_is(
    headers: &HeaderMap,
    name: &HeaderName,
    accept: impl FnOnce(&HeaderValue) -> bool,
) -> bool {
    let mut values = headers.get_all(name).iter();
    match (values.next(), values.next()) {
        (Some(value), None) => accept(value),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ORIGIN_OURS: &str = "http://127.0.0.1:8080";

    fn p_name() -> HeaderName {
        HeaderName::from_static("x-gatehouse-csrf")
    }

    fn policy() -> CsrfPolicy {
        CsrfPolicy::new(
            p_name(),
            HeaderValue::from_static("1"),
            &Url::parse("http://127.0.0.1:8080/some/path").unwrap(),
        )
    }

    /// Headers carrying the static header plus `extra`.
    fn with(extra: &[(&str, &str)]) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(p_name(), HeaderValue::from_static("1"));
        for (name, value) in extra {
            headers.append(
                HeaderName::from_bytes(name.as_bytes()).unwrap(),
                HeaderValue::from_str(value).unwrap(),
            );
        }
        headers
    }

    #[test]
    fn policy_origin_is_the_browser_serialization() {
        assert_eq!(policy().origin, ORIGIN_OURS);
        let https = Url::parse("https://App.Example.com:443/").unwrap();
        let p = CsrfPolicy::new(p_name(), HeaderValue::from_static("1"), &https);
        assert_eq!(p.origin, "https://app.example.com");
    }

    #[test]
    fn static_header_alone_is_accepted() {
        assert_eq!(verify(&with(&[]), &policy()), Ok(()));
    }

    #[test]
    fn same_origin_browser_request_is_accepted() {
        let headers = with(&[("origin", ORIGIN_OURS), ("sec-fetch-site", "same-origin")]);
        assert_eq!(verify(&headers, &policy()), Ok(()));
    }

    #[test]
    fn origin_scheme_and_host_case_is_ignored() {
        let headers = with(&[("origin", "HTTP://127.0.0.1:8080")]);
        assert_eq!(verify(&headers, &policy()), Ok(()));
    }

    #[test]
    fn header_name_case_does_not_matter() {
        let mut headers = HeaderMap::new();
        headers.insert(
            HeaderName::from_bytes(b"X-GateHouse-CSRF").unwrap(),
            HeaderValue::from_static("1"),
        );
        assert_eq!(verify(&headers, &policy()), Ok(()));
    }

    #[test]
    fn missing_static_header_is_refused() {
        let headers = HeaderMap::new();
        assert_eq!(verify(&headers, &policy()), Err(CsrfError::MissingHeader));
        let same_origin = {
            let mut h = HeaderMap::new();
            h.insert(ORIGIN, HeaderValue::from_static(ORIGIN_OURS));
            h.insert(SEC_FETCH_SITE, HeaderValue::from_static("same-origin"));
            h
        };
        assert_eq!(
            verify(&same_origin, &policy()),
            Err(CsrfError::MissingHeader)
        );
    }

    #[test]
    fn wrong_static_header_value_is_refused() {
        for value in ["0", "", "1 ", "true"] {
            let mut headers = HeaderMap::new();
            headers.insert(p_name(), HeaderValue::from_str(value).unwrap());
            assert_eq!(
                verify(&headers, &policy()),
                Err(CsrfError::MissingHeader),
                "accepted {value:?}"
            );
        }
    }

    #[test]
    fn repeated_static_header_is_refused() {
        let headers = with(&[("x-gatehouse-csrf", "1")]);
        assert_eq!(verify(&headers, &policy()), Err(CsrfError::MissingHeader));
    }

    #[test]
    fn foreign_origins_are_refused() {
        let foreign = [
            "null",
            "",
            "http://evil.com",
            "http://127.0.0.1:8081",
            "http://127.0.0.1",
            "https://127.0.0.1:8080",
            "http://127.0.0.1:8080/",
            "http://127.0.0.1:8080.evil.com",
            "http://localhost:8080",
        ];
        for origin in foreign {
            let headers = with(&[("origin", origin)]);
            assert_eq!(
                verify(&headers, &policy()),
                Err(CsrfError::ForeignOrigin),
                "accepted {origin:?}"
            );
        }
    }

    #[test]
    fn several_origin_headers_are_refused() {
        let headers = with(&[("origin", ORIGIN_OURS), ("origin", ORIGIN_OURS)]);
        assert_eq!(verify(&headers, &policy()), Err(CsrfError::ForeignOrigin));
    }

    #[test]
    fn fetch_site_other_than_same_origin_is_refused() {
        for site in ["cross-site", "same-site", "none", "Same-Origin", ""] {
            let headers = with(&[("origin", ORIGIN_OURS), ("sec-fetch-site", site)]);
            assert_eq!(
                verify(&headers, &policy()),
                Err(CsrfError::CrossSiteFetch),
                "accepted {site:?}"
            );
        }
    }

    #[test]
    fn fetch_site_without_origin_is_still_checked() {
        let headers = with(&[("sec-fetch-site", "cross-site")]);
        assert_eq!(verify(&headers, &policy()), Err(CsrfError::CrossSiteFetch));
    }

    #[test]
    fn several_fetch_site_headers_are_refused() {
        let headers = with(&[
            ("sec-fetch-site", "same-origin"),
            ("sec-fetch-site", "same-origin"),
        ]);
        assert_eq!(verify(&headers, &policy()), Err(CsrfError::CrossSiteFetch));
    }

    #[test]
    fn error_messages_are_lowercase() {
        for error in [
            CsrfError::MissingHeader,
            CsrfError::ForeignOrigin,
            CsrfError::CrossSiteFetch,
        ] {
            let message = error.to_string();
            assert_eq!(message, message.to_lowercase());
        }
    }
}
