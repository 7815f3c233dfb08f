//! One connection type per topology, behind one enum that the store's operations run on:
//! a single server (the crate's `ConnectionManager`, which reconnects), Redis Cluster (the
//! crate's cluster connection, which follows `MOVED`/`ASK` and replica promotions), or the
//! master the sentinels name ([`Master`]). TLS is the crate's rustls, verified against
//! `session.redis_ca_file` or the web roots. All of them are multiplexed and connect lazily.

use std::time::Duration;

use redis::aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig};
use redis::cluster::{ClusterClientBuilder, ClusterConfig};
use redis::cluster_async::ClusterConnection;
use redis::sentinel::{SentinelClientBuilder, SentinelServerType};
use redis::{
    AsyncConnectionConfig, ClientTlsConfig, Cmd, IntoConnectionInfo, Pipeline, ProtocolVersion,
    RedisError, RedisFuture, TlsCertificates, TlsMode, Value,
};

use super::cache::Tracked;
use super::sentinel::Master;
use crate::config::{RedisConfig, RedisTopology};

#[derive(Clone)]
pub enum Conn {
    Server(ConnectionManager),
    Cluster(ClusterConnection),
    Sentinel(Master),
}

/// Reconnect attempts per failed connection (single server, cluster node).
const RETRIES: usize = 2;
/// Longest pause between reconnect attempts.
const MAX_RETRY_DELAY: Duration = Duration::from_millis(500);

impl Conn {
    /// Builds the connection for `config`; nothing is dialled until the first command.
    /// Must run inside the tokio runtime (the cluster connection starts its task here).
    pub fn new(config: &RedisConfig, timeout: Duration) -> Result<Conn, RedisError> {
        let certs = certificates(config);
        Ok(match &config.topology {
            RedisTopology::Server(url) => {
                let client = server_client(url, config, certs, ProtocolVersion::RESP2)?;
                let manager = ConnectionManagerConfig::new()
                    .set_connection_timeout(Some(timeout))
                    .set_response_timeout(Some(timeout))
                    .set_number_of_retries(RETRIES)
                    .set_max_delay(MAX_RETRY_DELAY);
                Conn::Server(ConnectionManager::new_lazy_with_config(client, manager)?)
            }
            RedisTopology::Cluster(nodes) => {
                let mut builder = ClusterClientBuilder::new(nodes.iter().map(String::as_str))
                    .retries(u32::try_from(RETRIES).unwrap_or(2))
                    .min_retry_wait(50)
                    .max_retry_wait(u64::try_from(MAX_RETRY_DELAY.as_millis()).unwrap_or(500));
                if let Some(user) = &config.username {
                    builder = builder.username(user);
                }
                if let Some(password) = &config.password {
                    builder = builder.password(password.expose());
                }
                if let Some(certs) = certs {
                    builder = builder.certs(certs);
                }
                let cluster = ClusterConfig::new()
                    .set_connection_timeout(timeout)
                    .set_response_timeout(timeout);
                Conn::Cluster(
                    builder
                        .build()?
                        .get_pending_async_connection_with_config(cluster),
                )
            }
            RedisTopology::Sentinel { sentinels, master } => {
                let addrs = sentinels
                    .iter()
                    .map(|s| s.as_str().into_connection_info().map(|i| i.addr().clone()))
                    .collect::<Result<Vec<_>, _>>()?;
                let tls = sentinels.iter().any(|s| s.starts_with("rediss:"));
                let mut builder =
                    SentinelClientBuilder::new(addrs, master, SentinelServerType::Master)?;
                if tls {
                    // The sentinels' scheme says whether the data nodes speak TLS too.
                    builder = builder.set_client_to_redis_tls_mode(TlsMode::Secure);
                }
                if let Some(certs) = certs {
                    builder = builder.set_client_to_redis_certificates(certs.clone());
                    if tls {
                        builder = builder.set_client_to_sentinel_certificates(certs);
                    }
                }
                if let Some(user) = &config.username {
                    builder = builder.set_client_to_redis_username(user);
                }
                if let Some(password) = &config.password {
                    builder = builder.set_client_to_redis_password(password.expose());
                }
                // Each attempt gets 3/4 of the store timeout, so a master that stopped
                // answering is dropped (and the sentinels asked) before the caller gives up.
                let attempt = timeout.mul_f64(0.75);
                let connection = AsyncConnectionConfig::new()
                    .set_connection_timeout(Some(attempt))
                    .set_response_timeout(Some(attempt));
                Conn::Sentinel(Master::new(builder.build()?, master, connection, attempt))
            }
        })
    }
}

/// A client of the one server at `url`, with the configured credentials and TLS.
fn server_client(
    url: &str,
    config: &RedisConfig,
    certs: Option<TlsCertificates>,
    protocol: ProtocolVersion,
) -> Result<redis::Client, RedisError> {
    let mut info = url.into_connection_info()?;
    let mut redis = info.redis_settings().clone().set_protocol(protocol);
    if let Some(user) = &config.username {
        redis = redis.set_username(user);
    }
    if let Some(password) = &config.password {
        redis = redis.set_password(password.expose());
    }
    info = info.set_redis_settings(redis);
    match certs {
        Some(certs) => redis::Client::build_with_tls(info, certs),
        None => redis::Client::open(info),
    }
}

impl Conn {
    /// Where the session cache's tracking connection goes (see [`super::cache`]): the server,
    /// speaking RESP3 so that invalidations arrive as push messages on it, or the master the
    /// sentinels name as requests reach it. `None` for Cluster, whose sessions are read from
    /// Redis every time.
    pub fn tracked(&self, config: &RedisConfig) -> Result<Option<Tracked>, RedisError> {
        match (self, &config.topology) {
            (Conn::Sentinel(master), _) => Ok(Some(Tracked::Sentinel(master.clone()))),
            (Conn::Server(_), RedisTopology::Server(url)) => {
                let client =
                    server_client(url, config, certificates(config), ProtocolVersion::RESP3)?;
                Ok(Some(Tracked::Server(Box::new(client))))
            }
            _ => Ok(None),
        }
    }
}

/// The private CA and client certificate, when configured; `None` uses the web roots.
fn certificates(config: &RedisConfig) -> Option<TlsCertificates> {
    if config.ca_pem.is_none() && config.client_cert.is_none() {
        return None;
    }
    Some(TlsCertificates {
        client_tls: config.client_cert.as_ref().map(|c| ClientTlsConfig {
            client_cert: c.cert_pem.clone(),
            client_key: c.key_pem.expose().as_bytes().to_vec(),
        }),
        root_cert: config.ca_pem.clone(),
    })
}

impl ConnectionLike for Conn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Conn::Server(c) => c.req_packed_command(cmd),
            Conn::Cluster(c) => c.req_packed_command(cmd),
            Conn::Sentinel(c) => c.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Conn::Server(c) => c.req_packed_commands(pipeline, offset, count),
            Conn::Cluster(c) => c.req_packed_commands(pipeline, offset, count),
            Conn::Sentinel(c) => c.req_packed_commands(pipeline, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Conn::Server(c) => c.get_db(),
            Conn::Cluster(c) => c.get_db(),
            Conn::Sentinel(c) => c.get_db(),
        }
    }
}
