//! Configuration: the TOML file model (`file`), the environment (`env`), and `validate`, which
//! turns them into one typed, immutable [`Config`] or a list of every problem, each naming its key.

mod env;
pub mod file;
mod validate;

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use http::{HeaderName, HeaderValue};
use openidconnect::core::CoreJwsSigningAlgorithm;
use url::Url;

pub use env::{
    ENV_CLIENT_SECRET, ENV_REDIS_PASSWORD, ENV_REDIS_URL, ENV_SESSION_KEYS, EnvSource, NoEnv,
    ProcessEnv,
};
pub use file::{FileConfig, MAX_ENDPOINT_BODY};

use crate::cookie::{KeyRing, SameSite};
use crate::csrf::CsrfPolicy;
use crate::routes::RouteTable;
use crate::secret::Secret;

/// Everything gatehouse runs with. Built once at start-up by [`Config::from_toml`]; never mutated.
#[derive(Debug)]
pub struct Config {
    pub server: ServerConfig,
    pub oidc: OidcConfig,
    pub session: SessionConfig,
    pub auth: AuthConfig,
    pub routes: RouteTable,
    pub telemetry: TelemetryConfig,
    /// Non-fatal remarks to log at start-up (e.g. an ephemeral key for the memory store).
    pub warnings: Vec<String>,
    /// The file model this was validated from: a reload compares it with the new one to tell
    /// which changes need a restart.
    pub file: FileConfig,
}

#[derive(Debug)]
pub struct ServerConfig {
    pub listen: SocketAddr,
    /// The origin the browser sees (`https://app.example.com`); redirect targets and the
    /// CSRF `Origin` check are built from it.
    pub public_origin: Url,
    /// `public_origin` serialized without a trailing slash, as browsers send it in `Origin`.
    pub origin: String,
    /// `host[:port]` of `origin`, as the `X-Forwarded-Host` gatehouse writes: made once, so
    /// each request's is a reference count, not a copy.
    pub origin_host: http::HeaderValue,
    pub max_connections: usize,
    pub header_read_timeout: Duration,
    pub shutdown_grace: Duration,
    pub upstream_connect_timeout: Duration,
    /// A pooled upstream connection idle this long is closed (before the upstream's own
    /// keep-alive timeout would close it under a request).
    pub upstream_idle_timeout: Duration,
    /// Idle pooled connections kept per upstream address.
    pub upstream_pool_max_idle: usize,
    /// Extra CA certificates for https:// upstreams, besides the public web roots.
    pub upstream_ca: Vec<rustls_pki_types::CertificateDer<'static>>,
    /// `Host` / `:authority` values accepted (lowercase `host[:port]`); anything else is 421.
    pub allowed_hosts: Vec<String>,
    /// A connection with no request in flight for this long is closed (HTTP/1 keep-alive and
    /// HTTP/2 alike, pings or not).
    pub idle_timeout: Duration,
    /// Open connections per client IP; 0 = no per-IP cap.
    pub max_connections_per_ip: usize,
    /// Extra request headers never forwarded: exact lowercase names, or prefixes (`x-corp-*`).
    pub strip_request_headers: Vec<crate::proxy::headers::HeaderPattern>,
    /// Peers believed about the client behind them (`X-Forwarded-For`, `Forwarded`).
    pub trusted_proxies: Vec<ipnet::IpNet>,
    /// Reload when the config file changes (besides `SIGHUP`).
    pub watch_config: bool,
    /// Most WebSockets relayed at once by this instance.
    pub max_websockets: usize,
    /// How many single-threaded runtimes serve requests, each accepting on its own
    /// `SO_REUSEPORT` socket of `listen` (the binary's `run`; tests serve on one).
    pub workers: usize,
}

/// Metrics and trace export; everything off by default.
#[derive(Debug, Clone, Default)]
pub struct TelemetryConfig {
    /// `server.metrics_listen`: where `/metrics` is served, never the public listener.
    pub metrics_listen: Option<SocketAddr>,
    /// `[telemetry] otlp_endpoint` and friends: where spans are exported.
    pub otlp: Option<OtlpConfig>,
}

/// OpenTelemetry trace export over OTLP/HTTP (protobuf).
#[derive(Debug, Clone)]
pub struct OtlpConfig {
    /// The traces endpoint itself: the configured base URL with `/v1/traces`.
    pub endpoint: Url,
    pub service_name: String,
    pub sample_ratio: f64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenEndpointAuth {
    ClientSecretBasic,
    ClientSecretPost,
}

/// Provider endpoints set in the config; each wins over the discovery document.
#[derive(Debug, Clone, Default)]
pub struct EndpointOverrides {
    pub authorization: Option<Url>,
    pub token: Option<Url>,
    pub jwks_uri: Option<Url>,
    pub userinfo: Option<Url>,
    pub end_session: Option<Url>,
    pub revocation: Option<Url>,
}

#[derive(Debug, Clone)]
pub struct OidcConfig {
    /// The issuer identifier exactly as configured: compared as a string, never normalised
    /// (OIDC Discovery §4.3), so `https://tenant.auth0.com/` keeps its trailing slash.
    pub issuer: String,
    pub client_id: String,
    pub client_secret: Secret,
    pub scopes: Vec<String>,
    pub prompt: Option<String>,
    pub token_endpoint_auth: TokenEndpointAuth,
    pub allowed_algs: Vec<CoreJwsSigningAlgorithm>,
    /// Extra audiences an ID token may carry; with any, `azp` must be our client id.
    pub trusted_audiences: Vec<String>,
    /// `public_origin` + auth prefix + `/callback`.
    pub redirect_uri: Url,
    pub post_logout_redirect_uri: Url,
    pub timeout: Duration,
    pub clock_skew: Duration,
    pub max_id_token_age: Duration,
    pub refresh_skew: Duration,
    /// Extra CA certificates for provider calls, besides the public web roots.
    pub ca: Vec<rustls_pki_types::CertificateDer<'static>>,
    /// Whether the discovery document is fetched (else the overrides are all there is).
    pub discovery: bool,
    pub endpoints: EndpointOverrides,
    pub post_logout_redirect_param: String,
    /// Extra authorization-request parameters, in a stable order.
    pub auth_params: Vec<(String, String)>,
    /// Discovery and JWKS are refetched after the provider's `max-age`, clamped to these.
    pub metadata_refresh_min: Duration,
    pub metadata_refresh_max: Duration,
}

#[derive(Debug, Clone)]
pub enum StoreConfig {
    Memory { capacity: u64 },
    Redis(RedisConfig),
}

/// The Redis store: where it is, and how gatehouse proves who it is and who the server is.
/// No URL carries credentials (validation refuses them), so URLs may be logged.
#[derive(Debug, Clone)]
pub struct RedisConfig {
    pub topology: RedisTopology,
    /// ACL user (`AUTH username password`); `None` with a password is the `default` user.
    pub username: Option<String>,
    pub password: Option<Secret>,
    /// TLS (`rediss://`): PEM of the CA certificates that sign the servers' certificates;
    /// `None` trusts the public web roots.
    pub ca_pem: Option<Vec<u8>>,
    /// TLS client certificate, for servers that ask for one.
    pub client_cert: Option<RedisClientCert>,
}

/// Exactly one of these, from `redis_url`, `redis_cluster_nodes` or `redis_sentinels`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RedisTopology {
    /// One server (or a managed endpoint that hides its replicas).
    Server(String),
    /// Redis Cluster, found from these seed nodes.
    Cluster(Vec<String>),
    /// The master named `master`, found (and followed across failovers) through the sentinels.
    Sentinel {
        sentinels: Vec<String>,
        master: String,
    },
}

/// PEM certificate chain and private key for TLS client authentication.
#[derive(Debug, Clone)]
pub struct RedisClientCert {
    pub cert_pem: Vec<u8>,
    pub key_pem: Secret,
}

#[derive(Debug)]
pub struct SessionConfig {
    pub store: StoreConfig,
    pub keys: KeyRing,
    /// `keys` is a random key made at start-up (memory store, none configured): a reload keeps
    /// the running one rather than a new random one.
    pub ephemeral_keys: bool,
    pub cookie_name: String,
    pub same_site: SameSite,
    pub idle_timeout: Duration,
    pub max_lifetime: Duration,
    pub store_timeout: Duration,
    /// How long a refresh claim holds: always longer than one provider call plus the token
    /// write, so a claim never runs out while its holder may still present the refresh token.
    pub refresh_lock_lease: Duration,
    /// Allowance for clocks that differ between instances, inside every lease.
    pub refresh_lease_margin: Duration,
    /// Key prefix in the store (Redis), shared by sessions and login transactions.
    pub key_prefix: String,
}

#[derive(Debug, Clone)]
pub struct CsrfHeader {
    pub name: HeaderName,
    pub value: HeaderValue,
}

#[derive(Debug)]
pub struct AuthConfig {
    /// Path prefix of gatehouse's own endpoints, default `/auth`.
    pub prefix: String,
    /// Login starts and callbacks per minute per client IP (each counted on its own), and the
    /// burst; `None` = no limit.
    pub login_rate: Option<(std::num::NonZeroU32, std::num::NonZeroU32)>,
    /// Anti-forgery policy of `/auth/user` and `POST /auth/logout`; routes default to it.
    pub csrf: CsrfPolicy,
}

/// One problem in the configuration, naming the key it is about.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{key}: {message}")]
pub struct ConfigError {
    pub key: String,
    pub message: String,
}

/// Every problem found, so `gatehouse check` can list them all at once.
#[derive(Debug, thiserror::Error)]
pub enum ConfigErrors {
    #[error("cannot read config file {path}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("config is not valid TOML: {0}")]
    Parse(String),
    #[error("{}", list(.0))]
    Invalid(Vec<ConfigError>),
}

fn list(errors: &[ConfigError]) -> String {
    let lines: Vec<String> = errors.iter().map(|e| format!("  - {e}")).collect();
    format!("invalid configuration:\n{}", lines.join("\n"))
}

/// The keys whose values are secrets: no message about the file may repeat them.
const SECRET_KEYS: [(&str, &str); 3] = [
    ("oidc", "client_secret"),
    ("session", "redis_url"),
    ("session", "keys"),
];

/// A TOML error as a line and column and toml's message, without the source line toml would
/// quote (it may be a secret's), and with any secret value the message repeats redacted
/// (`keys = "…"` written instead of a list is "invalid type: string \"…\"").
fn parse_error(text: &str, e: &toml::de::Error) -> String {
    let mut message = e.message().trim_end().to_owned();
    if let Ok(table) = text.parse::<toml::Table>() {
        let secrets = SECRET_KEYS
            .iter()
            .filter_map(|(section, key)| table.get(*section)?.get(*key))
            .flat_map(|v| match v {
                toml::Value::Array(items) => items.iter().filter_map(toml::Value::as_str).collect(),
                v => v.as_str().into_iter().collect::<Vec<_>>(),
            });
        for secret in secrets.filter(|s| !s.is_empty()) {
            let escaped = format!("{secret:?}");
            message = message
                .replace(secret, "<redacted>")
                .replace(escaped.trim_matches('"'), "<redacted>");
        }
    }
    let Some(before) = e.span().and_then(|span| text.get(..span.start)) else {
        return message;
    };
    let line = before.matches('\n').count() + 1;
    let column = before.rsplit('\n').next().unwrap_or("").chars().count() + 1;
    format!("line {line}, column {column}: {message}")
}

impl Config {
    /// Reads and validates a config file.
    pub fn load(path: &Path, env: &dyn EnvSource) -> Result<Config, ConfigErrors> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigErrors::Read {
            path: path.display().to_string(),
            source,
        })?;
        Self::from_toml(&text, env)
    }

    /// Parses and validates config text; environment values override the file where documented.
    pub fn from_toml(text: &str, env: &dyn EnvSource) -> Result<Config, ConfigErrors> {
        // Unknown keys are collected rather than fatal at parse time, so that one run reports
        // them together with every other problem.
        let mut unknown = Vec::new();
        let deserializer = toml::Deserializer::new(text);
        let file: FileConfig = serde_ignored::deserialize(deserializer, |path| {
            unknown.push(ConfigError {
                key: path.to_string(),
                message: "unknown key".to_owned(),
            });
        })
        .map_err(|e| ConfigErrors::Parse(parse_error(text, &e)))?;
        match validate::validate(file, env) {
            Ok(config) if unknown.is_empty() => Ok(config),
            Ok(_) => Err(ConfigErrors::Invalid(unknown)),
            Err(mut errors) => {
                unknown.append(&mut errors);
                Err(ConfigErrors::Invalid(unknown))
            }
        }
    }
}
