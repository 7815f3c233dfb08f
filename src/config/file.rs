//! The config file as users write it: serde structs with every default named here.
//! Nothing in this file is validated; `super::validate` turns it into a typed `Config`.

use std::collections::BTreeMap;

use serde::Deserialize;

pub const DEFAULT_LISTEN: &str = "127.0.0.1:8080";
pub const DEFAULT_AUTH_PREFIX: &str = "/auth";
pub const DEFAULT_COOKIE_NAME: &str = "__Host-gatehouse";
pub const DEFAULT_SAME_SITE: &str = "strict";
pub const DEFAULT_IDLE_TIMEOUT: &str = "30m";
pub const DEFAULT_MAX_LIFETIME: &str = "12h";
pub const DEFAULT_REDIS_PREFIX: &str = "gatehouse:";
pub const DEFAULT_MEMORY_CAPACITY: u64 = 100_000;
pub const DEFAULT_CSRF_HEADER: &str = "X-CSRF";
pub const DEFAULT_CSRF_VALUE: &str = "1";
pub const DEFAULT_UPSTREAM_TIMEOUT: &str = "30s";
pub const DEFAULT_CONNECT_TIMEOUT: &str = "5s";
pub const DEFAULT_PROVIDER_TIMEOUT: &str = "10s";
pub const DEFAULT_STORE_TIMEOUT: &str = "2s";
pub const DEFAULT_SHUTDOWN_GRACE: &str = "30s";
pub const DEFAULT_HEADER_READ_TIMEOUT: &str = "10s";
pub const DEFAULT_MAX_CONNECTIONS: usize = 10_000;
pub const DEFAULT_CLOCK_SKEW: &str = "60s";
pub const DEFAULT_MAX_ID_TOKEN_AGE: &str = "10m";
pub const DEFAULT_REFRESH_SKEW: &str = "60s";
/// Margin for clock differences between instances, added to the shortest refresh lease.
pub const REFRESH_LEASE_MARGIN: &str = "2s";
pub const DEFAULT_IDLE_CONNECTION_TIMEOUT: &str = "60s";
pub const DEFAULT_MAX_CONNECTIONS_PER_IP: usize = 256;
pub const DEFAULT_LOGIN_RATE_LIMIT: u32 = 30;
pub const DEFAULT_LOGIN_RATE_BURST: u32 = 10;
/// Largest request body gatehouse's own endpoints accept.
pub const MAX_ENDPOINT_BODY: u64 = 64 * 1024;
pub const DEFAULT_MAX_WEBSOCKETS: usize = 10_000;
pub const DEFAULT_STREAM_IDLE_TIMEOUT: &str = "5m";
pub const DEFAULT_WEBSOCKET_IDLE_TIMEOUT: &str = "5m";
/// Below Node's 5 s keep-alive (and nginx's 75 s, Go's 90 s): a pooled connection is dropped
/// here before the upstream closes it from its side.
pub const DEFAULT_UPSTREAM_IDLE_TIMEOUT: &str = "4s";
/// Idle pooled connections kept per upstream address.
pub const DEFAULT_UPSTREAM_POOL_MAX_IDLE: usize = 128;
pub const DEFAULT_HEALTH_INTERVAL: &str = "10s";
pub const DEFAULT_SCOPES: [&str; 4] = ["openid", "profile", "email", "offline_access"];
pub const DEFAULT_ALGS: [&str; 3] = ["RS256", "PS256", "ES256"];
pub const DEFAULT_POST_LOGOUT_REDIRECT_PARAM: &str = "post_logout_redirect_uri";
pub const DEFAULT_METADATA_REFRESH_MIN: &str = "1m";
pub const DEFAULT_METADATA_REFRESH_MAX: &str = "1h";
pub const DEFAULT_SERVICE_NAME: &str = "gatehouse";
pub const DEFAULT_SAMPLE_RATIO: f64 = 1.0;

#[derive(Debug, Clone, PartialEq, Deserialize)]

pub struct FileConfig {
    pub server: ServerFile,
    pub oidc: OidcFile,
    #[serde(default)]
    pub session: SessionFile,
    #[serde(default)]
    pub auth: AuthFile,
    #[serde(default)]
    pub routes: Vec<RouteFile>,
    #[serde(default)]
    pub telemetry: TelemetryFile,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize)]

pub struct ServerFile {
    pub listen: Option<String>,
    pub public_origin: String,
    pub max_connections: Option<usize>,
    pub header_read_timeout: Option<String>,
    pub shutdown_grace: Option<String>,
    pub upstream_connect_timeout: Option<String>,
    /// PEM file of extra CA certificates trusted for https:// upstreams (private CAs).
    pub upstream_ca_file: Option<String>,
    /// `Host` values accepted besides `public_origin`'s (DNS rebinding defence).
    pub allowed_hosts: Option<Vec<String>>,
    /// Close a connection that has no request in flight for this long.
    pub idle_timeout: Option<String>,
    pub max_connections_per_ip: Option<usize>,
    /// Extra request headers to strip (names, or prefixes ending in `*`).
    pub strip_request_headers: Option<Vec<String>>,
    /// Peers whose `X-Forwarded-For` / `Forwarded` / `X-Forwarded-Proto` / `-Host` are believed.
    pub trusted_proxies: Option<Vec<String>>,
    /// Reload when this file changes, not only on SIGHUP.
    pub watch_config: Option<bool>,
    /// Most WebSockets relayed at once; more handshakes get 503.
    pub max_websockets: Option<usize>,
    /// Address of the separate `/metrics` listener; unset = no metrics.
    pub metrics_listen: Option<String>,
    /// A pooled upstream connection idle this long is closed by gatehouse.
    pub upstream_idle_timeout: Option<String>,
    /// Idle pooled connections kept per upstream address.
    pub upstream_pool_max_idle: Option<usize>,
    /// Accept loops, each on its own single-threaded runtime; unset = one per core.
    pub workers: Option<usize>,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]

pub struct OidcFile {
    pub issuer: String,
    pub client_id: String,
    pub client_secret: Option<String>,
    pub client_secret_file: Option<String>,
    pub scopes: Option<Vec<String>>,
    /// `prompt` for every authorization request, e.g. "consent" (some providers need it
    /// before they issue a refresh token for `offline_access`).
    pub prompt: Option<String>,
    /// "client_secret_basic" (default) or "client_secret_post".
    pub token_endpoint_auth: Option<String>,
    pub allowed_algs: Option<Vec<String>>,
    /// Audiences an ID token may list besides our client id (then `azp` must be us).
    pub trusted_audiences: Option<Vec<String>>,
    pub post_logout_redirect_uri: Option<String>,
    pub timeout: Option<String>,
    pub clock_skew: Option<String>,
    pub max_id_token_age: Option<String>,
    pub refresh_skew: Option<String>,
    /// PEM file of extra CA certificates trusted for the provider (a private CA).
    pub ca_file: Option<String>,
    /// Fetch `{issuer}/.well-known/openid-configuration` (default true). Without it, the
    /// authorization, token and JWKS endpoints must be configured.
    pub discovery: Option<bool>,
    /// Endpoint overrides: each wins over what discovery says.
    pub authorization_endpoint: Option<String>,
    pub token_endpoint: Option<String>,
    pub jwks_uri: Option<String>,
    pub userinfo_endpoint: Option<String>,
    pub end_session_endpoint: Option<String>,
    pub revocation_endpoint: Option<String>,
    /// Name of the end-session parameter that carries `post_logout_redirect_uri`.
    pub post_logout_redirect_param: Option<String>,
    /// Extra authorization-request parameters, e.g. `{ audience = "https://api" }`.
    pub auth_params: Option<BTreeMap<String, String>>,
    /// Bounds on the background refresh of the discovery document and the JWKS.
    pub metadata_refresh_min: Option<String>,
    pub metadata_refresh_max: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize)]

pub struct SessionFile {
    /// "memory" (default) or "redis".
    pub store: Option<String>,
    /// One Redis server; or `redis_cluster_nodes`; or `redis_sentinels` + `redis_sentinel_master`.
    pub redis_url: Option<String>,
    pub redis_cluster_nodes: Option<Vec<String>>,
    pub redis_sentinels: Option<Vec<String>>,
    pub redis_sentinel_master: Option<String>,
    /// ACL user; its password from `redis_password`, `redis_password_file` or the environment.
    pub redis_username: Option<String>,
    pub redis_password: Option<String>,
    pub redis_password_file: Option<String>,
    /// PEM CA certificates for `rediss://` (a private CA); unset trusts the web roots.
    pub redis_ca_file: Option<String>,
    pub redis_client_cert_file: Option<String>,
    pub redis_client_key_file: Option<String>,
    pub redis_prefix: Option<String>,
    pub keys: Option<Vec<String>>,
    pub cookie_name: Option<String>,
    pub cookie_domain: Option<String>,
    pub cookie_path: Option<String>,
    /// "strict" (default) or "lax".
    pub same_site: Option<String>,
    pub idle_timeout: Option<String>,
    pub max_lifetime: Option<String>,
    pub memory_capacity: Option<u64>,
    pub store_timeout: Option<String>,
    /// How long a refresh claim holds; at least oidc.timeout + 2 × store_timeout + 2s.
    pub refresh_lock_lease: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize)]

pub struct AuthFile {
    pub prefix: Option<String>,
    /// Login starts (and, separately, callbacks) per minute per client IP; 0 = no limit.
    pub login_rate_limit: Option<u32>,
    /// How many of those may come at once.
    pub login_rate_burst: Option<u32>,
    pub csrf_header: Option<String>,
    pub csrf_value: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize)]

pub struct TelemetryFile {
    /// OTLP/HTTP collector base URL (`http://127.0.0.1:4318`); unset = no trace export.
    pub otlp_endpoint: Option<String>,
    pub service_name: Option<String>,
    /// Share of new traces recorded (0.0–1.0); a trusted caller's sampling decision wins.
    pub sample_ratio: Option<f64>,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]

pub struct RouteFile {
    pub path: String,
    /// `http(s)://host[:port]` to forward to, or a list of them. A route has this or
    /// `static_dir`, not both.
    pub upstream: Option<UpstreamFile>,
    /// Directory whose files the route serves instead of proxying (static route).
    pub static_dir: Option<String>,
    /// Static routes: file inside `static_dir` that answers client-side routes.
    pub spa_fallback: Option<String>,
    /// Static routes: patterns (relative to `static_dir`) of fingerprinted files, cached a year.
    pub immutable: Option<Vec<String>>,
    /// Static routes: `Content-Security-Policy` of HTML documents; default
    /// [`crate::static_files::DEFAULT_CSP`].
    pub content_security_policy: Option<String>,
    /// "required" | "optional" | "none"; no default, so every route says what it is.
    pub auth: String,
    pub csrf_header: Option<String>,
    pub csrf_value: Option<String>,
    pub timeout: Option<String>,
    /// Allows `http://` to a non-loopback host on a token route (a mesh encrypts the hop).
    pub allow_plain_http: Option<bool>,
    /// A streamed exchange ends when neither body moved for this long.
    pub stream_idle_timeout: Option<String>,
    /// A relayed WebSocket is closed when no byte went either way for this long.
    pub websocket_idle_timeout: Option<String>,
    /// Speak HTTP/2 only to the upstream: h2c with prior knowledge on `http://` (gRPC).
    pub upstream_http2: Option<bool>,
    /// PUT and DELETE are sent again, like GET, when they failed before any response.
    pub retry_idempotent_writes: Option<bool>,
    /// Active health check: `GET` this path on every address each `health_interval`.
    pub health_path: Option<String>,
    pub health_interval: Option<String>,
    /// Largest request body forwarded: bytes, or a string such as "10MiB"; no limit if unset.
    pub max_body: Option<ByteSize>,
}

/// A size in bytes: an integer, or a string with a unit ("512KiB", "10MB", "1GiB").
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(untagged)]
pub enum ByteSize {
    Bytes(i64),
    Text(String),
}

/// `upstream = "http://a"` or `upstream = ["http://a", "http://b"]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UpstreamFile {
    One(String),
    Many(Vec<String>),
}

impl<'de> Deserialize<'de> for UpstreamFile {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl<'de> serde::de::Visitor<'de> for Visitor {
            type Value = UpstreamFile;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a URL string or an array of URL strings")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<UpstreamFile, E> {
                Ok(UpstreamFile::One(v.to_owned()))
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(
                self,
                mut seq: A,
            ) -> Result<UpstreamFile, A::Error> {
                let mut all = Vec::new();
                while let Some(url) = seq.next_element::<String>()? {
                    all.push(url);
                }
                Ok(UpstreamFile::Many(all))
            }
        }
        d.deserialize_any(Visitor)
    }
}
