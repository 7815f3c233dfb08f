//! `[[routes]]`. Upstream routes here; static routes' own keys in [`super::static_site`].

use url::Url;

use super::super::file::*;
use super::super::*;
use super::server::csrf_header;
use super::{Errors, MAX_NETWORK_TIMEOUT, is_loopback_host, static_site};
use crate::csrf::CsrfPolicy;
use crate::routes::{
    AuthMode, HealthCheck, Origin, Route, RouteTable, RouteTarget, Upstream, is_routable_path,
    is_valid_prefix,
};

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
        let upstream = f
            .upstream
            .as_ref()
            .and_then(|u| upstream(&key, u, f, mode, errs));
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

/// `routes[N].upstream` (one URL or a list, each checked by the same rules and named
/// `routes[N].upstream[M]` in a list) and the keys that go with it.
fn upstream(
    key: &str,
    raw: &UpstreamFile,
    f: &RouteFile,
    mode: AuthMode,
    errs: &mut Errors,
) -> Option<Upstream> {
    let entries: Vec<(String, &str)> = match raw {
        UpstreamFile::One(url) => vec![(format!("{key}.upstream"), url.as_str())],
        UpstreamFile::Many(urls) => urls
            .iter()
            .enumerate()
            .map(|(m, url)| (format!("{key}.upstream[{m}]"), url.as_str()))
            .collect(),
    };
    if entries.is_empty() {
        errs.push(
            format!("{key}.upstream"),
            "the list is empty: name at least one http(s):// URL",
        );
    }
    let mut origins: Vec<Origin> = Vec::with_capacity(entries.len());
    let mut valid = true;
    for (entry, url) in entries {
        let origin = match Origin::parse(url) {
            Ok(o) => o,
            Err(msg) => {
                errs.push(entry, msg);
                valid = false;
                continue;
            }
        };
        let plain_remote =
            origin.scheme == http::uri::Scheme::HTTP && !is_loopback_host(origin.authority.host());
        if mode != AuthMode::None && plain_remote && f.allow_plain_http != Some(true) {
            errs.push(
                entry.as_str(),
                format!("plain http:// to a remote host would send tokens unencrypted; use https://, or set {key}.allow_plain_http = true when a service mesh encrypts the hop"),
            );
        }
        if origins.contains(&origin) {
            errs.push(entry, format!("{url:?} is listed twice"));
            valid = false;
            continue;
        }
        origins.push(origin);
    }
    let health = health_check(key, f, errs);
    let upstream = Upstream::new(origins, f.retry_idempotent_writes == Some(true), health);
    upstream.filter(|_| valid)
}

/// `health_path` and `health_interval`: off unless `health_path` is set.
fn health_check(key: &str, f: &RouteFile, errs: &mut Errors) -> Option<HealthCheck> {
    let interval_key = format!("{key}.health_interval");
    let interval = errs.duration(
        &interval_key,
        f.health_interval.as_deref(),
        DEFAULT_HEALTH_INTERVAL,
    );
    let Some(path) = &f.health_path else {
        if f.health_interval.is_some() {
            errs.push(
                interval_key,
                format!("means nothing without {key}.health_path (the active check is off)"),
            );
        }
        return None;
    };
    if f.upstream_http2 == Some(true) {
        errs.push(
            format!("{key}.health_path"),
            format!("health checks speak HTTP/1.1; {key}.upstream_http2 upstreams cannot have one"),
        );
        return None;
    }
    if !is_routable_path(path) {
        errs.push(
            format!("{key}.health_path"),
            format!("{path:?} must be an absolute path like \"/healthz\""),
        );
        return None;
    }
    Some(HealthCheck {
        path: path.clone(),
        interval,
    })
}

#[cfg(test)]
mod tests {
    use super::super::super::{Config, ConfigErrors, NoEnv};
    use crate::routes::RouteTarget;

    const BASE: &str = r#"
[server]
public_origin = "https://app.example.com"
[oidc]
issuer = "https://id.example.com"
client_id = "bff"
client_secret = "not-in-any-message"
[[routes]]
path = "/api/"
auth = "required"
"#;

    /// The keys `route_lines` (added to the route) is refused for, and their messages.
    fn refused(route_lines: &str) -> Vec<(String, String)> {
        match Config::from_toml(&format!("{BASE}{route_lines}"), &NoEnv) {
            Ok(_) => Vec::new(),
            Err(ConfigErrors::Invalid(errors)) => {
                errors.into_iter().map(|e| (e.key, e.message)).collect()
            }
            Err(other) => vec![(String::new(), other.to_string())],
        }
    }

    fn keys(route_lines: &str) -> Vec<String> {
        refused(route_lines).into_iter().map(|(k, _)| k).collect()
    }

    fn upstream(route_lines: &str) -> crate::routes::Upstream {
        let config = Config::from_toml(&format!("{BASE}{route_lines}"), &NoEnv).unwrap();
        let route = config.routes.iter().next().unwrap();
        let RouteTarget::Upstream(u) = &route.target else {
            panic!("an upstream route")
        };
        u.clone()
    }

    #[test]
    fn upstream_is_a_string_or_an_array_of_urls() {
        let one = upstream("upstream = \"https://api.internal\"");
        assert_eq!(one.origins().len(), 1);
        assert_eq!(one.authority(), "api.internal");
        let two = upstream("upstream = [\"https://10.0.0.11:8000\", \"https://10.0.0.12:8000\"]");
        let names: Vec<&str> = two.origins().iter().map(|o| o.authority.as_str()).collect();
        assert_eq!(names, ["10.0.0.11:8000", "10.0.0.12:8000"]);
        assert!(!two.retry_idempotent_writes);
        assert!(two.health.is_none(), "the active check is off by default");
    }

    #[test]
    fn each_bad_entry_of_an_upstream_list_is_named_by_its_index() {
        let errors = refused(
            "upstream = [\"https://a.internal\", \"ftp://b\", \"http://c.internal\", \"https://a.internal\", \"https://d/x\"]",
        );
        let keys: Vec<&str> = errors.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(
            keys,
            [
                "routes[0].upstream[1]",
                "routes[0].upstream[2]",
                "routes[0].upstream[3]",
                "routes[0].upstream[4]"
            ]
        );
        assert!(errors[1].1.contains("plain http://"), "{:?}", errors[1]);
        assert!(errors[2].1.contains("listed twice"), "{:?}", errors[2]);
        assert_eq!(keys_of("upstream = []"), ["routes[0].upstream"]);
        assert_eq!(keys_of("upstream = \"ftp://x\""), ["routes[0].upstream"]);
    }

    fn keys_of(line: &str) -> Vec<String> {
        keys(line)
    }

    #[test]
    fn an_upstream_that_is_neither_a_string_nor_a_list_of_strings_is_refused_with_its_line() {
        for line in ["upstream = 5", "upstream = [1, 2]", "upstream = { a = 1 }"] {
            let errors = refused(line);
            assert_eq!(errors.len(), 1, "{line}: {errors:?}");
            assert!(errors[0].1.contains("line 11"), "{line}: {:?}", errors[0].1);
        }
        assert!(
            refused("upstream = 5")[0]
                .1
                .contains("a URL string or an array of URL strings")
        );
    }

    #[test]
    fn retry_and_health_keys_are_read_and_validated() {
        let u = upstream(
            "upstream = \"https://api.internal\"\nretry_idempotent_writes = true\nhealth_path = \"/healthz\"",
        );
        assert!(u.retry_idempotent_writes);
        let health = u.health.unwrap();
        assert_eq!(health.path, "/healthz");
        assert_eq!(health.interval.as_secs(), 10, "default 10s");
        let u = upstream(
            "upstream = \"https://api.internal\"\nhealth_path = \"/up\"\nhealth_interval = \"2s\"",
        );
        assert_eq!(u.health.unwrap().interval.as_secs(), 2);
        let base = "upstream = \"https://api.internal\"\n";
        assert_eq!(
            keys(&format!("{base}health_interval = \"5s\"")),
            ["routes[0].health_interval"]
        );
        assert_eq!(
            keys(&format!("{base}health_path = \"healthz\"")),
            ["routes[0].health_path"]
        );
        assert_eq!(
            keys(&format!(
                "{base}health_path = \"/h\"\nhealth_interval = \"0s\""
            )),
            ["routes[0].health_interval"]
        );
        assert_eq!(
            keys(&format!(
                "{base}health_path = \"/h\"\nupstream_http2 = true"
            )),
            ["routes[0].health_path"]
        );
    }

    #[test]
    fn server_pool_keys_have_node_friendly_defaults_and_are_validated() {
        let config = Config::from_toml(
            &format!("{BASE}upstream = \"https://api.internal\""),
            &NoEnv,
        )
        .unwrap();
        assert_eq!(
            config.server.upstream_idle_timeout.as_secs(),
            4,
            "below Node's 5 s"
        );
        assert_eq!(config.server.upstream_pool_max_idle, 128);
        let text = format!("{BASE}upstream = \"https://api.internal\"").replacen(
            "[server]",
            "[server]\nupstream_idle_timeout = \"never\"",
            1,
        );
        let Err(ConfigErrors::Invalid(errors)) = Config::from_toml(&text, &NoEnv) else {
            panic!("refused")
        };
        assert_eq!(errors[0].key, "server.upstream_idle_timeout");
    }
}
