//! File model + environment → typed `Config`. Every error names the key it is about.

use std::net::SocketAddr;
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE, URL_SAFE_NO_PAD};
use http::{HeaderName, HeaderValue};
use openidconnect::core::CoreJwsSigningAlgorithm;
use url::Url;

use super::env::{ENV_CLIENT_SECRET, ENV_REDIS_URL, ENV_SESSION_KEYS, EnvSource};
use super::file::*;
use super::*;
use crate::cookie::{KEY_LEN, KeyRing};
use crate::csrf::CsrfPolicy;
use crate::routes::{AuthMode, Route, RouteTable, Upstream};

/// Collects errors so that one run reports all of them.
#[derive(Default)]
struct Errors(Vec<ConfigError>);

impl Errors {
    fn push(&mut self, key: impl Into<String>, message: impl Into<String>) {
        self.0.push(ConfigError {
            key: key.into(),
            message: message.into(),
        });
    }

    fn duration(&mut self, key: &str, value: Option<&str>, default: &str) -> Duration {
        let raw = value.unwrap_or(default);
        match humantime::parse_duration(raw) {
            Ok(d) if !d.is_zero() => d,
            Ok(_) => {
                self.push(key, "must be greater than zero");
                Duration::from_secs(1)
            }
            Err(e) => {
                self.push(
                    key,
                    format!("invalid duration {raw:?} ({e}); use e.g. \"30s\", \"15m\", \"12h\""),
                );
                Duration::from_secs(1)
            }
        }
    }
}

pub(super) fn validate(file: FileConfig, env: &dyn EnvSource) -> Result<Config, Vec<ConfigError>> {
    let mut errs = Errors::default();
    let mut warnings = Vec::new();

    let server = server(&file.server, &mut errs);
    let auth = auth(&file.auth, &server.public_origin, &mut errs);
    let oidc = oidc(
        &file.oidc,
        &server.public_origin,
        &auth.prefix,
        env,
        &mut errs,
    );
    let session = session(&file.session, env, &mut errs, &mut warnings);
    let routes = routes(&file.routes, &auth, &server.public_origin, &mut errs);

    if errs.0.is_empty() {
        Ok(Config {
            server,
            oidc,
            session,
            auth,
            routes,
            warnings,
        })
    } else {
        Err(errs.0)
    }
}

fn is_loopback(url: &Url) -> bool {
    match url.host() {
        Some(url::Host::Domain(d)) => d == "localhost" || d.ends_with(".localhost"),
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        None => false,
    }
}

/// An http(s) URL; plain http only for loopback hosts, where browsers and we can trust it.
fn secure_url(key: &str, raw: &str, errs: &mut Errors) -> Option<Url> {
    let url = match Url::parse(raw) {
        Ok(u) => u,
        Err(e) => {
            errs.push(key, format!("invalid URL {raw:?}: {e}"));
            return None;
        }
    };
    match url.scheme() {
        "https" => {}
        "http" if is_loopback(&url) => {}
        "http" => {
            errs.push(
                key,
                "must use https (plain http is allowed only for localhost)",
            );
            return None;
        }
        other => {
            errs.push(key, format!("unsupported scheme {other:?}; use https"));
            return None;
        }
    }
    if !url.username().is_empty() || url.password().is_some() {
        errs.push(key, "must not contain credentials");
        return None;
    }
    Some(url)
}

fn server(f: &ServerFile, errs: &mut Errors) -> ServerConfig {
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
    ServerConfig {
        listen,
        public_origin,
        origin,
        max_connections,
        header_read_timeout: errs.duration(
            "server.header_read_timeout",
            f.header_read_timeout.as_deref(),
            DEFAULT_HEADER_READ_TIMEOUT,
        ),
        shutdown_grace: errs.duration(
            "server.shutdown_grace",
            f.shutdown_grace.as_deref(),
            DEFAULT_SHUTDOWN_GRACE,
        ),
        upstream_connect_timeout: errs.duration(
            "server.upstream_connect_timeout",
            f.upstream_connect_timeout.as_deref(),
            DEFAULT_CONNECT_TIMEOUT,
        ),
        upstream_ca: f
            .upstream_ca_file
            .as_deref()
            .map(|path| ca_file(path, errs))
            .unwrap_or_default(),
    }
}

/// Every certificate in a PEM file; an error names the key when there is none.
fn ca_file(path: &str, errs: &mut Errors) -> Vec<rustls_pki_types::CertificateDer<'static>> {
    use rustls_pki_types::pem::PemObject as _;
    let certs: Result<Vec<_>, _> = match rustls_pki_types::CertificateDer::pem_file_iter(path) {
        Ok(iter) => iter.collect(),
        Err(e) => {
            errs.push(
                "server.upstream_ca_file",
                format!("cannot read {path}: {e}"),
            );
            return Vec::new();
        }
    };
    match certs {
        Ok(certs) if !certs.is_empty() => certs,
        Ok(_) => {
            errs.push(
                "server.upstream_ca_file",
                format!("{path} holds no PEM certificate"),
            );
            Vec::new()
        }
        Err(e) => {
            errs.push(
                "server.upstream_ca_file",
                format!("{path} is not valid PEM: {e}"),
            );
            Vec::new()
        }
    }
}

#[expect(clippy::panic, reason = "a literal URL that always parses")]
fn unreachable_url() -> Url {
    panic!("static URL failed to parse")
}

fn csrf_header(
    key: &str,
    name: Option<&str>,
    value: Option<&str>,
    default: Option<&CsrfHeader>,
    errs: &mut Errors,
) -> CsrfHeader {
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
    let forbidden = ["cookie", "authorization", "origin", "host", "content-type"];
    if forbidden.contains(&name.as_str()) {
        errs.push(
            format!("{key}csrf_header"),
            format!("{name} cannot serve as the anti-forgery header"),
        );
    }
    CsrfHeader { name, value }
}

fn auth(f: &AuthFile, origin: &Url, errs: &mut Errors) -> AuthConfig {
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
    AuthConfig {
        prefix,
        csrf: CsrfPolicy::new(csrf.name, csrf.value, origin),
    }
}

fn oidc(
    f: &OidcFile,
    origin: &Url,
    prefix: &str,
    env: &dyn EnvSource,
    errs: &mut Errors,
) -> OidcConfig {
    let issuer = secure_url("oidc.issuer", &f.issuer, errs).unwrap_or_else(|| origin.clone());
    if f.client_id.is_empty() {
        errs.push("oidc.client_id", "must not be empty");
    }
    let secret = env
        .var(ENV_CLIENT_SECRET)
        .or_else(|| f.client_secret.clone())
        .or_else(|| {
            let path = f.client_secret_file.as_deref()?;
            match std::fs::read_to_string(path) {
                Ok(s) => Some(s.trim().to_owned()),
                Err(e) => {
                    errs.push(
                        "oidc.client_secret_file",
                        format!("cannot read {path}: {e}"),
                    );
                    Some(String::new())
                }
            }
        });
    let client_secret = match secret {
        Some(s) if !s.is_empty() => Secret::new(s),
        Some(_) => {
            errs.push("oidc.client_secret", "must not be empty");
            Secret::new("")
        }
        None => {
            errs.push(
                "oidc.client_secret",
                format!("required (or oidc.client_secret_file, or env {ENV_CLIENT_SECRET})"),
            );
            Secret::new("")
        }
    };
    let scopes = f
        .scopes
        .clone()
        .unwrap_or_else(|| DEFAULT_SCOPES.iter().map(|s| (*s).to_owned()).collect());
    if !scopes.iter().any(|s| s == "openid") {
        errs.push("oidc.scopes", "must include \"openid\"");
    }
    let token_endpoint_auth = match f.token_endpoint_auth.as_deref() {
        None | Some("client_secret_basic") => TokenEndpointAuth::ClientSecretBasic,
        Some("client_secret_post") => TokenEndpointAuth::ClientSecretPost,
        Some(other) => {
            errs.push("oidc.token_endpoint_auth", format!("{other:?} is not supported; use \"client_secret_basic\" or \"client_secret_post\""));
            TokenEndpointAuth::ClientSecretBasic
        }
    };
    let alg_names: Vec<String> = f
        .allowed_algs
        .clone()
        .unwrap_or_else(|| DEFAULT_ALGS.iter().map(|s| (*s).to_owned()).collect());
    let mut allowed_algs = Vec::new();
    for (i, name) in alg_names.iter().enumerate() {
        let key = format!("oidc.allowed_algs[{i}]");
        if name.eq_ignore_ascii_case("none") || name.to_ascii_uppercase().starts_with("HS") {
            errs.push(
                key,
                format!("{name} is not allowed: only asymmetric signatures are accepted"),
            );
            continue;
        }
        match serde_json::from_value::<CoreJwsSigningAlgorithm>(serde_json::Value::String(
            name.clone(),
        )) {
            Ok(alg) => allowed_algs.push(alg),
            Err(_) => errs.push(key, format!("unknown algorithm {name:?}")),
        }
    }
    if f.allowed_algs.as_ref().is_some_and(|a| a.is_empty()) {
        errs.push("oidc.allowed_algs", "must list at least one algorithm");
    }
    let redirect_uri = origin
        .join(&format!("{prefix}/callback"))
        .unwrap_or_else(|_| origin.clone());
    let post_logout_redirect_uri = match f.post_logout_redirect_uri.as_deref() {
        None => origin.clone(),
        Some(raw) => match Url::parse(raw) {
            Ok(u) if u.origin() == origin.origin() => u,
            Ok(_) => {
                errs.push(
                    "oidc.post_logout_redirect_uri",
                    "must be on server.public_origin",
                );
                origin.clone()
            }
            Err(e) => {
                errs.push("oidc.post_logout_redirect_uri", format!("invalid URL: {e}"));
                origin.clone()
            }
        },
    };
    OidcConfig {
        issuer,
        client_id: f.client_id.clone(),
        client_secret,
        scopes,
        prompt: f.prompt.clone(),
        token_endpoint_auth,
        allowed_algs,
        redirect_uri,
        post_logout_redirect_uri,
        timeout: errs.duration(
            "oidc.timeout",
            f.timeout.as_deref(),
            DEFAULT_PROVIDER_TIMEOUT,
        ),
        clock_skew: errs.duration(
            "oidc.clock_skew",
            f.clock_skew.as_deref(),
            DEFAULT_CLOCK_SKEW,
        ),
        max_id_token_age: errs.duration(
            "oidc.max_id_token_age",
            f.max_id_token_age.as_deref(),
            DEFAULT_MAX_ID_TOKEN_AGE,
        ),
        refresh_skew: errs.duration(
            "oidc.refresh_skew",
            f.refresh_skew.as_deref(),
            DEFAULT_REFRESH_SKEW,
        ),
    }
}

fn decode_key(raw: &str) -> Result<[u8; KEY_LEN], String> {
    let raw = raw.trim();
    let bytes = STANDARD
        .decode(raw)
        .or_else(|_| URL_SAFE.decode(raw))
        .or_else(|_| URL_SAFE_NO_PAD.decode(raw))
        .map_err(|_| "is not valid base64 (generate one with `gatehouse keygen`)".to_owned())?;
    <[u8; KEY_LEN]>::try_from(bytes.as_slice()).map_err(|_| {
        format!(
            "must decode to {KEY_LEN} bytes (got {}); generate one with `gatehouse keygen`",
            bytes.len()
        )
    })
}

fn session(
    f: &SessionFile,
    env: &dyn EnvSource,
    errs: &mut Errors,
    warnings: &mut Vec<String>,
) -> SessionConfig {
    let prefix = f
        .redis_prefix
        .clone()
        .unwrap_or_else(|| DEFAULT_REDIS_PREFIX.to_owned());
    let store = match f.store.as_deref().unwrap_or("memory") {
        "memory" => StoreConfig::Memory {
            capacity: f.memory_capacity.unwrap_or(DEFAULT_MEMORY_CAPACITY),
        },
        "redis" => match env.var(ENV_REDIS_URL).or_else(|| f.redis_url.clone()) {
            Some(url) => {
                if let Err(e) =
                    redis::parse_redis_url(&url).ok_or("not a redis:// or rediss:// URL")
                {
                    errs.push("session.redis_url", format!("invalid: {e}"));
                }
                StoreConfig::Redis {
                    url: Secret::new(url),
                    prefix: prefix.clone(),
                }
            }
            None => {
                errs.push(
                    "session.redis_url",
                    format!("required when session.store = \"redis\" (or env {ENV_REDIS_URL})"),
                );
                StoreConfig::Memory { capacity: 1 }
            }
        },
        other => {
            errs.push(
                "session.store",
                format!("{other:?} is not a store; use \"memory\" or \"redis\""),
            );
            StoreConfig::Memory { capacity: 1 }
        }
    };
    if f.memory_capacity == Some(0) {
        errs.push("session.memory_capacity", "must be at least 1");
    }

    let raw_keys: Option<Vec<String>> = env
        .var(ENV_SESSION_KEYS)
        .map(|v| {
            v.split(',')
                .map(|s| s.trim().to_owned())
                .filter(|s| !s.is_empty())
                .collect()
        })
        .or_else(|| f.keys.clone());
    let keys = match raw_keys {
        Some(list) if !list.is_empty() => {
            let mut keys = Vec::new();
            for (i, raw) in list.iter().enumerate() {
                match decode_key(raw) {
                    Ok(k) => keys.push(k),
                    Err(msg) => errs.push(format!("session.keys[{i}]"), msg),
                }
            }
            KeyRing::new(keys)
        }
        _ => match store {
            StoreConfig::Memory { .. } => {
                warnings.push("session.keys is not set: using a random key; sessions end when gatehouse restarts".to_owned());
                KeyRing::random()
            }
            StoreConfig::Redis { .. } => {
                errs.push("session.keys", format!("required with the redis store, so every instance opens the same cookies (or env {ENV_SESSION_KEYS}); generate one with `gatehouse keygen`"));
                KeyRing::random()
            }
        },
    };

    let cookie_name = f
        .cookie_name
        .clone()
        .unwrap_or_else(|| DEFAULT_COOKIE_NAME.to_owned());
    let valid_name = !cookie_name.is_empty()
        && cookie_name.len() <= 64
        && cookie_name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b));
    if !valid_name {
        errs.push(
            "session.cookie_name",
            "must be 1-64 characters of letters, digits, - _ .",
        );
    }
    if cookie_name.starts_with("__Host-") {
        if f.cookie_domain.is_some() {
            errs.push(
                "session.cookie_domain",
                "must not be set with a __Host- cookie name",
            );
        }
        if f.cookie_path.as_deref().is_some_and(|p| p != "/") {
            errs.push(
                "session.cookie_path",
                "must be \"/\" with a __Host- cookie name",
            );
        }
    } else {
        if f.cookie_domain.is_some() {
            errs.push(
                "session.cookie_domain",
                "is not supported: host-only cookies cannot leak to sibling domains",
            );
        }
        if f.cookie_path.as_deref().is_some_and(|p| p != "/") {
            errs.push("session.cookie_path", "only \"/\" is supported");
        }
    }
    let same_site = match f.same_site.as_deref().unwrap_or(DEFAULT_SAME_SITE) {
        s if s.eq_ignore_ascii_case("strict") => SameSite::Strict,
        s if s.eq_ignore_ascii_case("lax") => SameSite::Lax,
        other => {
            errs.push(
                "session.same_site",
                format!("{other:?} is not supported; use \"strict\" or \"lax\""),
            );
            SameSite::Strict
        }
    };
    let idle_timeout = errs.duration(
        "session.idle_timeout",
        f.idle_timeout.as_deref(),
        DEFAULT_IDLE_TIMEOUT,
    );
    let max_lifetime = errs.duration(
        "session.max_lifetime",
        f.max_lifetime.as_deref(),
        DEFAULT_MAX_LIFETIME,
    );
    if idle_timeout > max_lifetime {
        errs.push(
            "session.idle_timeout",
            "must not exceed session.max_lifetime",
        );
    }
    SessionConfig {
        store,
        keys,
        login_cookie_name: format!("{cookie_name}-login"),
        cookie_name,
        same_site,
        idle_timeout,
        max_lifetime,
        refresh_lock_lease: errs.duration(
            "session.refresh_lock_lease",
            f.refresh_lock_lease.as_deref(),
            DEFAULT_REFRESH_LOCK_LEASE,
        ),
        store_timeout: errs.duration(
            "session.store_timeout",
            f.store_timeout.as_deref(),
            DEFAULT_STORE_TIMEOUT,
        ),
        key_prefix: prefix,
    }
}

fn routes(files: &[RouteFile], auth: &AuthConfig, origin: &Url, errs: &mut Errors) -> RouteTable {
    let mut routes = Vec::with_capacity(files.len());
    for (i, f) in files.iter().enumerate() {
        let key = format!("routes[{i}]");
        let path_ok = f.path.starts_with('/')
            && f.path
                .bytes()
                .all(|b| b.is_ascii_graphic() && !b"\\%?#;".contains(&b))
            && !f.path.split('/').any(|seg| seg == "." || seg == "..")
            && !f.path.contains("//");
        if !path_ok {
            errs.push(
                format!("{key}.path"),
                format!(
                    "{:?} must be a plain absolute path prefix like \"/api/\"",
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
        let upstream = match Upstream::parse(&f.upstream) {
            Ok(u) => Some(u),
            Err(msg) => {
                errs.push(format!("{key}.upstream"), msg);
                None
            }
        };
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
        let timeout = errs.duration(
            &format!("{key}.timeout"),
            f.timeout.as_deref(),
            DEFAULT_UPSTREAM_TIMEOUT,
        );
        if let Some(upstream) = upstream {
            routes.push(Route {
                prefix: f.path.clone(),
                upstream,
                auth: mode,
                csrf,
                timeout,
            });
        }
    }
    RouteTable::new(routes)
}
