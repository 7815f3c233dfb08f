//! `[server]` and `[auth]`.

use std::net::SocketAddr;

use http::{HeaderName, HeaderValue};
use url::Url;

use super::super::file::*;
use super::super::*;
use super::{Errors, MAX_NETWORK_TIMEOUT, ca_file, secure_url};
use crate::proxy::headers::HeaderPattern;

pub(super) fn server(f: &ServerFile, errs: &mut Errors) -> ServerConfig {
    let listen_raw = f.listen.as_deref().unwrap_or(DEFAULT_LISTEN);
    let listen = listen_raw.parse::<SocketAddr>().unwrap_or_else(|e| {
        errs.push(
            "server.listen",
            format!("invalid address {listen_raw:?}: {e}"),
        );
        SocketAddr::from(([127, 0, 0, 1], 8080))
    });
    let fallback = || Url::parse("http://127.0.0.1:8080").ok();
    let public_origin = secure_url("server.public_origin", &f.public_origin, errs)
        .and_then(|u| {
            if u.path() != "/" || u.query().is_some() || u.fragment().is_some() {
                errs.push("server.public_origin", "must be an origin only (scheme://host[:port]), without path, query or fragment");
                None
            } else {
                Some(u)
            }
        })
        .or_else(fallback);
    let (public_origin, origin) = match public_origin {
        Some(u) => {
            let origin = u.origin().ascii_serialization();
            (u, origin)
        }
        None => {
            errs.push("server.public_origin", "cannot be used");
            (
                Url::parse("http://127.0.0.1/").unwrap_or_else(|_| unreachable_url()),
                String::new(),
            )
        }
    };
    let max_connections = f.max_connections.unwrap_or(DEFAULT_MAX_CONNECTIONS);
    if max_connections == 0 {
        errs.push("server.max_connections", "must be at least 1");
    }
    let max_websockets = f.max_websockets.unwrap_or(DEFAULT_MAX_WEBSOCKETS);
    if max_websockets == 0 {
        errs.push("server.max_websockets", "must be at least 1");
    }
    let workers = match f.workers {
        Some(0) => {
            errs.push(
                "server.workers",
                "must be at least 1 (leave it out for one per core)",
            );
            1
        }
        Some(n) if n > MAX_WORKERS => {
            errs.push("server.workers", format!("must be at most {MAX_WORKERS}"));
            MAX_WORKERS
        }
        Some(n) => n,
        None => std::thread::available_parallelism().map_or(1, usize::from),
    };
    let allowed_hosts = allowed_hosts(&public_origin, f.allowed_hosts.as_deref(), errs);
    let strip_request_headers = f
        .strip_request_headers
        .iter()
        .flatten()
        .enumerate()
        .filter_map(|(i, raw)| {
            HeaderPattern::parse(raw)
                .map_err(|msg| errs.push(format!("server.strip_request_headers[{i}]"), msg))
                .ok()
        })
        .collect();
    let trusted_proxies = f
        .trusted_proxies
        .iter()
        .flatten()
        .enumerate()
        .filter_map(|(i, raw)| {
            let parsed = raw
                .parse::<ipnet::IpNet>()
                .or_else(|_| raw.parse::<std::net::IpAddr>().map(ipnet::IpNet::from));
            parsed
                .map_err(|_| {
                    errs.push(
                        format!("server.trusted_proxies[{i}]"),
                        format!("{raw:?} is not an IP address or CIDR range like \"10.0.0.0/8\""),
                    )
                })
                .ok()
        })
        .collect();
    let origin_host = origin
        .get(public_origin.scheme().len() + "://".len()..)
        .and_then(|host| http::HeaderValue::from_str(host).ok())
        .unwrap_or(http::HeaderValue::from_static(""));
    ServerConfig {
        listen,
        public_origin,
        origin,
        origin_host,
        max_connections,
        header_read_timeout: errs.duration_at_most(
            "server.header_read_timeout",
            f.header_read_timeout.as_deref(),
            DEFAULT_HEADER_READ_TIMEOUT,
            MAX_NETWORK_TIMEOUT,
        ),
        shutdown_grace: errs.duration(
            "server.shutdown_grace",
            f.shutdown_grace.as_deref(),
            DEFAULT_SHUTDOWN_GRACE,
        ),
        upstream_connect_timeout: errs.duration_at_most(
            "server.upstream_connect_timeout",
            f.upstream_connect_timeout.as_deref(),
            DEFAULT_CONNECT_TIMEOUT,
            MAX_NETWORK_TIMEOUT,
        ),
        upstream_idle_timeout: errs.duration_at_most(
            "server.upstream_idle_timeout",
            f.upstream_idle_timeout.as_deref(),
            DEFAULT_UPSTREAM_IDLE_TIMEOUT,
            MAX_NETWORK_TIMEOUT,
        ),
        upstream_pool_max_idle: f
            .upstream_pool_max_idle
            .unwrap_or(DEFAULT_UPSTREAM_POOL_MAX_IDLE),
        upstream_ca: f
            .upstream_ca_file
            .as_deref()
            .map(|path| ca_file("server.upstream_ca_file", path, errs))
            .unwrap_or_default(),
        allowed_hosts,
        idle_timeout: errs.duration_at_most(
            "server.idle_timeout",
            f.idle_timeout.as_deref(),
            DEFAULT_IDLE_CONNECTION_TIMEOUT,
            MAX_NETWORK_TIMEOUT,
        ),
        max_connections_per_ip: f
            .max_connections_per_ip
            .unwrap_or(DEFAULT_MAX_CONNECTIONS_PER_IP),
        strip_request_headers,
        trusted_proxies,
        watch_config: f.watch_config.unwrap_or(false),
        max_websockets,
        workers,
    }
}

/// More accept loops than this is a typo, not a machine.
const MAX_WORKERS: usize = 1024;

/// The `Host` values accepted: `public_origin`'s authority (with and without its scheme's
/// default port) and each `server.allowed_hosts` entry (an entry without a port also matches
/// that default port). Lowercase.
fn allowed_hosts(origin: &Url, extra: Option<&[String]>, errs: &mut Errors) -> Vec<String> {
    let default_port = origin.port_or_known_default();
    let mut hosts = Vec::new();
    let mut add = |host: &str, port: Option<u16>| {
        let host = host.to_ascii_lowercase();
        match port {
            Some(p) if Some(p) != default_port => hosts.push(format!("{host}:{p}")),
            _ => {
                if let Some(p) = default_port {
                    hosts.push(format!("{host}:{p}"));
                }
                hosts.push(host);
            }
        }
    };
    add(origin.host_str().unwrap_or_default(), origin.port());
    for (i, raw) in extra.unwrap_or_default().iter().enumerate() {
        match raw.parse::<http::uri::Authority>() {
            Ok(a) if !a.as_str().contains('@') && !a.host().is_empty() => {
                add(a.host(), a.port_u16());
            }
            _ => errs.push(
                format!("server.allowed_hosts[{i}]"),
                format!("{raw:?} is not a host or host:port"),
            ),
        }
    }
    hosts
}

#[expect(clippy::panic, reason = "a literal URL that always parses")]
fn unreachable_url() -> Url {
    panic!("static URL failed to parse")
}

pub(super) fn csrf_header(
    key: &str,
    name: Option<&str>,
    value: Option<&str>,
    default: Option<&CsrfHeader>,
    errs: &mut Errors,
) -> CsrfHeader {
    let explicit_name = name.is_some();
    let name = match (name, default) {
        (Some(n), _) => HeaderName::from_bytes(n.as_bytes()).unwrap_or_else(|_| {
            errs.push(
                format!("{key}csrf_header"),
                format!("{n:?} is not a valid header name"),
            );
            HeaderName::from_static("x-csrf")
        }),
        (None, Some(d)) => d.name.clone(),
        (None, None) => HeaderName::from_static("x-csrf"),
    };
    let value = match (value, default) {
        (Some(v), _) => HeaderValue::from_str(v).unwrap_or_else(|_| {
            errs.push(format!("{key}csrf_value"), "is not a valid header value");
            HeaderValue::from_static(DEFAULT_CSRF_VALUE)
        }),
        (None, Some(d)) => d.value.clone(),
        (None, None) => HeaderValue::from_static(DEFAULT_CSRF_VALUE),
    };
    // Allow-list: a custom X- header is never CORS-safelisted nor set by the browser itself,
    // so a cross-site page can only send it after a preflight gatehouse never approves.
    if explicit_name && (!name.as_str().starts_with("x-") || name.as_str().len() < 3) {
        errs.push(
            format!("{key}csrf_header"),
            format!("{name} cannot serve as the anti-forgery header: use a custom X- header such as X-CSRF"),
        );
    }
    CsrfHeader { name, value }
}

pub(super) fn auth(f: &AuthFile, origin: &Url, errs: &mut Errors) -> AuthConfig {
    let prefix = f
        .prefix
        .clone()
        .unwrap_or_else(|| DEFAULT_AUTH_PREFIX.to_owned());
    let ok = prefix.starts_with('/')
        && prefix.len() > 1
        && !prefix.ends_with('/')
        && prefix
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"/-_.".contains(&b));
    if !ok {
        errs.push("auth.prefix", "must look like \"/auth\": a leading slash, no trailing slash, letters, digits, - _ . /");
    }
    let csrf = csrf_header(
        "auth.",
        Some(f.csrf_header.as_deref().unwrap_or(DEFAULT_CSRF_HEADER)),
        f.csrf_value.as_deref(),
        None,
        errs,
    );
    let limit = f.login_rate_limit.unwrap_or(DEFAULT_LOGIN_RATE_LIMIT);
    let burst = f.login_rate_burst.unwrap_or(DEFAULT_LOGIN_RATE_BURST);
    let login_rate = match (
        std::num::NonZeroU32::new(limit),
        std::num::NonZeroU32::new(burst),
    ) {
        (None, _) => None,
        (Some(l), Some(b)) => Some((l, b)),
        (Some(_), None) => {
            errs.push(
                "auth.login_rate_burst",
                "must be at least 1 (set auth.login_rate_limit = 0 for no limit)",
            );
            None
        }
    };
    AuthConfig {
        prefix,
        login_rate,
        csrf: CsrfPolicy::new(csrf.name, csrf.value, origin),
    }
}
