//! `[[routes]]`. Upstream routes here; static routes' own keys in [`super::static_site`].

use url::Url;

use super::super::file::*;
use super::super::*;
use super::server::csrf_header;
use super::{Errors, MAX_NETWORK_TIMEOUT, is_loopback_host, static_site};
use crate::csrf::CsrfPolicy;
use crate::routes::{AuthMode, Route, RouteTable, RouteTarget, Upstream, is_valid_prefix};

pub(super) fn routes(
    files: &[RouteFile],
    auth: &AuthConfig,
    origin: &Url,
    errs: &mut Errors,
) -> RouteTable {
    let mut routes = Vec::with_capacity(files.len());
    for (i, f) in files.iter().enumerate() {
        let key = format!("routes[{i}]");
        if !is_valid_prefix(&f.path) {
            errs.push(
                format!("{key}.path"),
                format!(
                    "{:?} must be a plain absolute path prefix like \"/api/\": letters, digits, - . _ ~ and /",
                    f.path
                ),
            );
        }
        let auth_prefix = format!("{}/", auth.prefix);
        if f.path.starts_with(&auth_prefix) || f.path == auth.prefix {
            errs.push(
                format!("{key}.path"),
                format!(
                    "{:?} is inside gatehouse's own {} endpoints",
                    f.path, auth.prefix
                ),
            );
        }
        if routes.iter().any(|r: &Route| r.prefix == f.path) {
            errs.push(
                format!("{key}.path"),
                format!("{:?} is configured twice", f.path),
            );
        }
        let mode = match f.auth.as_str() {
            "required" => AuthMode::Required,
            "optional" => AuthMode::Optional,
            "none" => AuthMode::None,
            other => {
                errs.push(
                    format!("{key}.auth"),
                    format!("{other:?} is not a mode; use \"required\", \"optional\" or \"none\""),
                );
                AuthMode::Required
            }
        };
        let upstream = match f.upstream.as_deref().map(Upstream::parse) {
            Some(Ok(u)) => Some(u),
            Some(Err(msg)) => {
                errs.push(format!("{key}.upstream"), msg);
                None
            }
            None => None,
        };
        let plain_remote = upstream.as_ref().is_some_and(|u| {
            u.scheme == http::uri::Scheme::HTTP && !is_loopback_host(u.authority.host())
        });
        if mode != AuthMode::None && plain_remote && f.allow_plain_http != Some(true) {
            errs.push(
                format!("{key}.upstream"),
                format!("plain http:// to a remote host would send tokens unencrypted; use https://, or set {key}.allow_plain_http = true when a service mesh encrypts the hop"),
            );
        }
        let default = CsrfHeader {
            name: auth.csrf.header_name.clone(),
            value: auth.csrf.header_value.clone(),
        };
        let csrf = csrf_header(
            &format!("{key}."),
            f.csrf_header.as_deref(),
            f.csrf_value.as_deref(),
            Some(&default),
            errs,
        );
        let csrf = CsrfPolicy::new(csrf.name, csrf.value, origin);
        let timeout = errs.duration_at_most(
            &format!("{key}.timeout"),
            f.timeout.as_deref(),
            DEFAULT_UPSTREAM_TIMEOUT,
            MAX_NETWORK_TIMEOUT,
        );
        let stream_idle_timeout = errs.duration(
            &format!("{key}.stream_idle_timeout"),
            f.stream_idle_timeout.as_deref(),
            DEFAULT_STREAM_IDLE_TIMEOUT,
        );
        let websocket_idle_timeout = errs.duration(
            &format!("{key}.websocket_idle_timeout"),
            f.websocket_idle_timeout.as_deref(),
            DEFAULT_WEBSOCKET_IDLE_TIMEOUT,
        );
        let max_body = f
            .max_body
            .as_ref()
            .and_then(|size| errs.byte_size(&format!("{key}.max_body"), size));
        let target = match (&f.upstream, &f.static_dir) {
            (Some(_), None) => {
                static_site::no_static_keys(&key, f, errs);
                upstream.map(RouteTarget::Upstream)
            }
            (None, Some(dir)) => {
                static_site::site(&key, dir, f, mode, errs).map(RouteTarget::Static)
            }
            (Some(_), Some(_)) => {
                errs.push(
                    format!("{key}.static_dir"),
                    format!("cannot be combined with {key}.upstream: a route either forwards (upstream) or serves files (static_dir)"),
                );
                None
            }
            (None, None) => {
                errs.push(
                    format!("{key}.upstream"),
                    "missing: set upstream to forward requests, or static_dir to serve files",
                );
                None
            }
        };
        if let Some(target) = target {
            routes.push(Route {
                prefix: f.path.clone(),
                target,
                auth: mode,
                csrf,
                timeout,
                stream_idle_timeout,
                websocket_idle_timeout,
                upstream_http2: f.upstream_http2 == Some(true),
                max_body,
            });
        }
    }
    RouteTable::new(routes)
}
