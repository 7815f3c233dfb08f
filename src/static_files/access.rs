//! Who may fetch an authenticated static route's files, and what a browser without a session
//! is told. Pure functions of the request, applied by the pipeline's static phase.
//!
//! Rules (`auth = "required"` static routes):
//! 1. No anti-forgery header is asked for: a navigation cannot carry one, only GET and HEAD
//!    are served, and a cross-site page cannot read what a file GET returns.
//! 2. A subresource request from another site (`Sec-Fetch-Site` other than `same-origin` or
//!    `none`, and `Sec-Fetch-Mode` not `navigate`) is refused with 403, so a sibling
//!    subdomain that the SameSite cookie still reaches cannot embed private scripts or data
//!    (cross-site script inclusion). Navigations from anywhere (links) are allowed.
//! 3. Without a session, a top-level browser navigation (`GET`, `Sec-Fetch-Mode: navigate`,
//!    `Sec-Fetch-Dest: document` or absent, `Accept` naming `text/html`) is redirected to the
//!    login endpoint with `return_to` = the requested path and query; every other request
//!    gets 401, as on token routes.

use http::header::ACCEPT;
use http::{HeaderMap, HeaderName, Method, Uri};

use crate::csrf::CsrfError;

const SEC_FETCH_SITE: HeaderName = HeaderName::from_static("sec-fetch-site");
const SEC_FETCH_MODE: HeaderName = HeaderName::from_static("sec-fetch-mode");
const SEC_FETCH_DEST: HeaderName = HeaderName::from_static("sec-fetch-dest");

fn header<'h>(headers: &'h HeaderMap, name: &HeaderName) -> Option<&'h str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

/// Rule 2.
pub fn verify(headers: &HeaderMap) -> Result<(), CsrfError> {
    let site = header(headers, &SEC_FETCH_SITE);
    let navigation = header(headers, &SEC_FETCH_MODE) == Some("navigate");
    match site {
        None | Some("same-origin" | "none") => Ok(()),
        Some(_) if navigation => Ok(()),
        Some(_) => Err(CsrfError::CrossSiteFetch),
    }
}

/// Rule 3's test: a top-level navigation that a login redirect can answer.
pub fn is_navigation(method: &Method, headers: &HeaderMap) -> bool {
    method == Method::GET
        && accepts_html(headers)
        && header(headers, &SEC_FETCH_MODE) == Some("navigate")
        && header(headers, &SEC_FETCH_DEST).is_none_or(|d| d == "document")
}

/// Whether an `Accept` header names `text/html`: what browsers send for a navigation.
pub fn accepts_html(headers: &HeaderMap) -> bool {
    headers
        .get_all(ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .any(|v| v.contains("text/html"))
}

/// Where rule 3 sends a navigation: `{auth_prefix}/login?return_to=<path and query>`. The
/// login endpoint validates `return_to` like any other.
pub fn login_location(auth_prefix: &str, uri: &Uri) -> String {
    let target = uri.path_and_query().map_or("/", |pq| pq.as_str());
    let encoded: String = url::form_urlencoded::byte_serialize(target.as_bytes()).collect();
    format!("{auth_prefix}/login?return_to={encoded}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (name, value) in pairs {
            h.append(*name, HeaderValue::from_static(value));
        }
        h
    }

    const NAVIGATION: &[(&str, &str)] = &[
        ("accept", "text/html,application/xhtml+xml,*/*;q=0.8"),
        ("sec-fetch-mode", "navigate"),
        ("sec-fetch-dest", "document"),
        ("sec-fetch-site", "none"),
    ];

    #[test]
    fn a_top_level_get_navigation_is_recognized() {
        assert!(is_navigation(&Method::GET, &headers(NAVIGATION)));
        assert!(is_navigation(
            &Method::GET,
            &headers(&[("accept", "text/html"), ("sec-fetch-mode", "navigate")])
        ));
    }

    #[test]
    fn fetches_frames_heads_and_non_html_requests_are_not_navigations() {
        assert!(!is_navigation(&Method::HEAD, &headers(NAVIGATION)));
        assert!(!is_navigation(
            &Method::GET,
            &headers(&[("accept", "*/*"), ("sec-fetch-mode", "cors")])
        ));
        assert!(!is_navigation(
            &Method::GET,
            &headers(&[("accept", "text/html"), ("sec-fetch-mode", "cors")])
        ));
        assert!(!is_navigation(
            &Method::GET,
            &headers(&[("accept", "text/html")])
        ));
        assert!(!is_navigation(
            &Method::GET,
            &headers(&[
                ("accept", "text/html"),
                ("sec-fetch-mode", "navigate"),
                ("sec-fetch-dest", "iframe"),
            ])
        ));
        assert!(!is_navigation(
            &Method::GET,
            &headers(&[
                ("accept", "application/json"),
                ("sec-fetch-mode", "navigate")
            ])
        ));
    }

    #[test]
    fn cross_site_subresources_are_refused_but_navigations_and_same_origin_pass() {
        for ok in [
            &[][..],
            &[
                ("sec-fetch-site", "same-origin"),
                ("sec-fetch-mode", "no-cors"),
            ][..],
            &[("sec-fetch-site", "none"), ("sec-fetch-mode", "navigate")][..],
            &[
                ("sec-fetch-site", "cross-site"),
                ("sec-fetch-mode", "navigate"),
            ][..],
        ] {
            assert_eq!(verify(&headers(ok)), Ok(()), "{ok:?}");
        }
        for refused in [
            &[
                ("sec-fetch-site", "same-site"),
                ("sec-fetch-mode", "no-cors"),
            ][..],
            &[("sec-fetch-site", "cross-site"), ("sec-fetch-mode", "cors")][..],
            &[("sec-fetch-site", "cross-site")][..],
        ] {
            assert_eq!(
                verify(&headers(refused)),
                Err(CsrfError::CrossSiteFetch),
                "{refused:?}"
            );
        }
    }

    #[test]
    fn the_login_location_carries_the_path_and_query_encoded() {
        let uri: Uri = "/app/settings?tab=1&x=%20".parse().unwrap();
        assert_eq!(
            login_location("/auth", &uri),
            "/auth/login?return_to=%2Fapp%2Fsettings%3Ftab%3D1%26x%3D%2520"
        );
        let root: Uri = "/".parse().unwrap();
        assert_eq!(login_location("/auth", &root), "/auth/login?return_to=%2F");
    }
}
