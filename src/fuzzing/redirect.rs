//! The `return_to` target: [`safe_return_to`] under public origins with and without a path.

use url::Url;

use crate::redirect::safe_return_to;

/// Public origins the target is checked under: plain, with a port and a path, and IPv6.
const ORIGINS: [&str; 3] = [
    "https://app.example.com",
    "http://127.0.0.1:8080/gatehouse/",
    "https://[::1]:8443",
];

/// Input: the `return_to` value, as the query parser hands it over (already decoded once).
pub fn return_to(data: &[u8]) {
    let raw = String::from_utf8_lossy(data);
    for origin in ORIGINS {
        let Ok(base) = Url::parse(origin) else {
            continue;
        };
        let target = safe_return_to(Some(&raw), &base);
        assert_same_origin_path(&target, &base);
        assert_eq!(
            safe_return_to(Some(&target), &base),
            target,
            "an accepted target is accepted again unchanged"
        );
    }
}

/// What every `Location` built from a `return_to` must be: a short, printable, path-absolute
/// reference that a browser resolves to the public origin, wherever the response came from.
pub fn assert_same_origin_path(target: &str, public_origin: &Url) {
    assert!(target.len() <= 2048, "overlong target");
    assert!(
        target
            .bytes()
            .all(|b| (0x21..=0x7E).contains(&b) && b != b'\\'),
        "{target:?} has a byte a browser may strip or rewrite"
    );
    assert!(
        target.starts_with('/') && !target.starts_with("//"),
        "{target:?} is not path-absolute"
    );
    assert!(http::HeaderValue::from_str(target).is_ok());
    // The browser resolves `Location` against the URL of the response carrying it: the
    // callback, or a page under the origin's path.
    for page in ["auth/callback?code=c&state=s", "", "a/b/c?x#y"] {
        let Ok(response_url) = public_origin.join(page) else {
            continue;
        };
        let resolved = response_url.join(target);
        assert!(
            resolved
                .as_ref()
                .is_ok_and(|u| u.origin() == public_origin.origin()),
            "{target:?} resolves off our origin: {resolved:?}"
        );
    }
}
