//! The `route_match` target: [`is_routable_path`] and [`RouteTable::find`] on configured
//! prefixes, compared with the path an upstream sees once it decodes the request target.

use std::time::Duration;

use http::{HeaderName, HeaderValue};

use super::percent_decode;
use crate::csrf::CsrfPolicy;
use crate::routes::{
    AuthMode, Route, RouteTable, RouteTarget, Upstream, is_routable_path, is_valid_prefix,
};

/// Input: route prefixes one per line (those the config would accept, at most 8), the last
/// line the request path.
pub fn route_match(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let mut lines: Vec<&str> = text.split('\n').collect();
    let path = lines.pop().unwrap_or_default();
    let prefixes: Vec<&str> = lines
        .into_iter()
        .filter(|p| is_valid_prefix(p))
        .take(8)
        .collect();
    let table = table(&prefixes);
    if !is_routable_path(path) {
        return;
    }
    let decoded = String::from_utf8_lossy(&percent_decode(path.as_bytes())).into_owned();
    let picked = table.find(path).map(|r| r.prefix.as_str());
    assert_route_is_sound(&prefixes, path, &decoded, picked);
    let picked_decoded = table.find(&decoded).map(|r| r.prefix.as_str());
    assert_eq!(
        picked, picked_decoded,
        "{path:?} routes differently once decoded to {decoded:?}"
    );
}

/// The route picked for `path` is the longest configured prefix it is under, and the decoded
/// path is under it too: what the upstream serves is what the route's policy covers.
pub fn assert_route_is_sound(prefixes: &[&str], path: &str, decoded: &str, picked: Option<&str>) {
    let longest = prefixes
        .iter()
        .filter(|p| is_under(path, p))
        .max_by_key(|p| p.len())
        .copied();
    assert_eq!(picked, longest, "not the longest matching prefix");
    if let Some(prefix) = picked {
        assert!(
            is_under(decoded, prefix),
            "{path:?} picked {prefix:?} but decodes to {decoded:?}"
        );
    }
}

/// Whether `path` is `prefix` or below it, whole segments only unless the prefix ends in `/`.
pub fn is_under(path: &str, prefix: &str) -> bool {
    path.strip_prefix(prefix)
        .is_some_and(|rest| prefix.ends_with('/') || rest.is_empty() || rest.starts_with('/'))
}

/// A table of `auth = "none"` routes with these prefixes.
pub fn table(prefixes: &[&str]) -> RouteTable {
    let Ok(upstream) = Upstream::parse("http://127.0.0.1:1") else {
        return RouteTable::default();
    };
    let Ok(origin) = url::Url::parse("https://app.example.com") else {
        return RouteTable::default();
    };
    let mut routes: Vec<Route> = Vec::new();
    for prefix in prefixes {
        if routes.iter().any(|r| r.prefix == *prefix) {
            continue;
        }
        routes.push(Route {
            prefix: (*prefix).to_owned(),
            target: RouteTarget::Upstream(upstream.clone()),
            auth: AuthMode::None,
            csrf: CsrfPolicy::new(
                HeaderName::from_static("x-csrf"),
                HeaderValue::from_static("1"),
                &origin,
            ),
            timeout: Duration::from_secs(1),
            stream_idle_timeout: Duration::from_secs(1),
            websocket_idle_timeout: Duration::from_secs(1),
            max_body: None,
            upstream_http2: false,
        });
    }
    RouteTable::new(routes)
}
