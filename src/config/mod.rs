//! Configuration: the TOML file model (`file`), the environment (`env`), and `validate`, which
//! turns them into one typed, immutable [`Config`] or a list of every problem, each naming its key.

mod env;
mod file;
mod validate;

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use http::{HeaderName, HeaderValue};
use openidconnect::core::CoreJwsSigningAlgorithm;
use url::Url;

pub use env::{ENV_CLIENT_SECRET, ENV_REDIS_URL, ENV_SESSION_KEYS, EnvSource, NoEnv, ProcessEnv};
pub use file::FileConfig;

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
    /// Non-fatal remarks to log at start-up (e.g. an ephemeral key for the memory store).
    pub warnings: Vec<String>,
}

#[derive(Debug)]
pub struct ServerConfig {
    pub listen: SocketAddr,
    /// The origin the browser sees (`https://app.example.com`); redirect targets and the
    /// CSRF `Origin` check are built from it.
    pub public_origin: Url,
    /// `public_origin` serialized without a trailing slash, as browsers send it in `Origin`.
    pub origin: String,
    pub max_connections: usize,
    pub header_read_timeout: Duration,
    pub shutdown_grace: Duration,
    pub upstream_connect_timeout: Duration,
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
    /// Most WebSockets relayed at once by this instance.
    pub max_websockets: usize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenEndpointAuth {
    ClientSecretBasic,
    ClientSecretPost,
}

#[derive(Debug)]
pub struct OidcConfig {
    pub issuer: Url,
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
}

#[derive(Debug)]
pub enum StoreConfig {
    Memory { capacity: u64 },
    Redis { url: Secret, prefix: String },
}

#[derive(Debug)]
pub struct SessionConfig {
    pub store: StoreConfig,
    pub keys: KeyRing,
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
        .map_err(|e| ConfigErrors::Parse(e.to_string()))?;
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
