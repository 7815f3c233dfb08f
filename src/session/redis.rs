//! The Redis store: shared by every instance, each operation bounded by a timeout.
//!
//! Rules (so that every operation works in Redis Cluster):
//! 1. Every script touches only the keys it declares in `KEYS`, and only one key: a session,
//!    an index and a lock each live in their own slot.
//! 2. Nothing scans the keyspace (`KEYS`, `SCAN`); indexes are sets, read by their own key.
//! 3. Operations run on one [`conn::Conn`] per topology (server, cluster, sentinel); the local
//!    cache ([`cache`]) tracks the server, or the master the sentinels name, that they reach.

mod cache;
mod conn;
mod sentinel;

use std::sync::Arc;
use std::time::Duration;

use futures_util::{StreamExt as _, TryStreamExt as _};
use redis::AsyncCommands as _;

use super::store::{StoreError, millis};
use crate::config::RedisConfig;
pub use cache::CacheStats;
use cache::{LocalCache, Lookup};
use conn::Conn;

#[derive(Clone)]
pub struct RedisStore {
    conn: Conn,
    cas: Arc<redis::Script>,
    index_add: Arc<redis::Script>,
    index_take: Arc<redis::Script>,
    timeout: Duration,
    /// Where the store is, for the log (URLs carry no credentials).
    target: Arc<str>,
    /// Records read here, kept while Redis says they are unchanged (see [`cache`]).
    cache: Option<LocalCache>,
    /// How long its calls take (see [`crate::telemetry::tally`]).
    pub(super) tally: Arc<crate::telemetry::tally::StoreTally>,
}

/// Adds ARGV[1] to the index KEYS[1], removes the members ARGV[3..] (sessions found gone,
/// checked one key at a time by the caller) and sets the index's TTL to ARGV[2] ms.
const INDEX_ADD_SCRIPT: &str = r"
for i = 3, #ARGV do redis.call('SREM', KEYS[1], ARGV[i]) end
redis.call('SADD', KEYS[1], ARGV[1])
return redis.call('PEXPIRE', KEYS[1], ARGV[2])";

/// Removes the index KEYS[1] and returns its members.
const INDEX_TAKE_SCRIPT: &str = r"
local members = redis.call('SMEMBERS', KEYS[1])
redis.call('DEL', KEYS[1])
return members";

const CAS_SCRIPT: &str = r"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3])
  return 1
end
return 0";

/// Index members checked for a live session per `index_add`: bounds the work of one login
/// while repeated logins still prune the whole index.
const INDEX_PRUNE_SAMPLE: isize = 128;
/// Existence checks in flight at once while pruning.
const INDEX_PRUNE_CONCURRENCY: usize = 16;

impl RedisStore {
    /// Must run inside the tokio runtime; connects lazily.
    pub(super) fn new(config: &RedisConfig, timeout: Duration) -> Result<Self, StoreError> {
        Ok(Self {
            conn: Conn::new(config, timeout)?,
            cas: Arc::new(redis::Script::new(CAS_SCRIPT)),
            index_add: Arc::new(redis::Script::new(INDEX_ADD_SCRIPT)),
            index_take: Arc::new(redis::Script::new(INDEX_TAKE_SCRIPT)),
            timeout,
            target: target(config).into(),
            cache: None,
            tally: Arc::default(),
        })
    }

    /// Keeps what `get` reads under `prefix` locally, invalidated by Redis (single servers and
    /// Sentinel; Cluster stores read from Redis every time). Must run inside the runtime that
    /// carries the tracking connection.
    pub(super) fn with_local_cache(
        mut self,
        config: &RedisConfig,
        prefix: &str,
    ) -> Result<Self, StoreError> {
        if let Some(tracked) = self.conn.tracked(config)? {
            self.cache = Some(LocalCache::start(tracked, prefix, self.timeout));
        }
        Ok(self)
    }

    /// The local cache's counters, when there is one.
    pub(super) fn cache_stats(&self) -> Option<CacheStats> {
        self.cache.as_ref().map(LocalCache::stats)
    }

    /// Where the store is: the URL, the cluster's seed nodes or the sentinels and master.
    pub(super) fn target(&self) -> &str {
        &self.target
    }

    pub(super) async fn get(&self, key: &str) -> Result<Option<Arc<[u8]>>, StoreError> {
        let Some(cache) = &self.cache else {
            return self.fetch(key).await;
        };
        match cache.lookup(key) {
            Lookup::Hit(copy) => Ok(Some(copy)),
            Lookup::Miss(None) => self.fetch(key).await,
            Lookup::Miss(Some(reservation)) => {
                let value = self.fetch(key).await?;
                cache.fill(key, reservation, value.as_deref());
                Ok(value)
            }
        }
    }

    /// Reads Redis itself, past the local copy (which the answer then replaces).
    pub(super) async fn get_fresh(&self, key: &str) -> Result<Option<Arc<[u8]>>, StoreError> {
        if let Some(cache) = &self.cache {
            cache.invalidate(key);
        }
        self.get(key).await
    }

    /// Drops the local copy of a key this instance just wrote: its invalidation comes back on
    /// another connection, maybe after the next read here.
    fn forget(&self, key: &str) {
        if let Some(cache) = &self.cache {
            cache.invalidate(key);
        }
    }

    async fn fetch(&self, key: &str) -> Result<Option<Arc<[u8]>>, StoreError> {
        let value: Option<Vec<u8>> = self.bounded(self.conn.clone().get(key)).await?;
        Ok(value.map(Arc::from))
    }

    pub(super) async fn set(
        &self,
        key: &str,
        value: &[u8],
        ttl: Duration,
    ) -> Result<(), StoreError> {
        let set = self
            .bounded(self.conn.clone().pset_ex(key, value, millis(ttl)))
            .await;
        self.forget(key);
        set
    }

    pub(super) async fn replace(
        &self,
        key: &str,
        expected: &[u8],
        value: &[u8],
        ttl: Duration,
    ) -> Result<bool, StoreError> {
        let mut invocation = self.cas.key(key);
        invocation.arg(expected).arg(value).arg(millis(ttl));
        let mut conn = self.conn.clone();
        let replaced = self
            .bounded(invocation.invoke_async::<i64>(&mut conn))
            .await
            .map(|n| n == 1);
        self.forget(key);
        replaced
    }

    pub(super) async fn delete(&self, key: &str) -> Result<bool, StoreError> {
        let deleted = self
            .bounded(self.conn.clone().del::<_, i64>(key))
            .await
            .map(|n| n > 0);
        self.forget(key);
        deleted
    }

    pub(super) async fn exists(&self, key: &str) -> Result<bool, StoreError> {
        self.bounded(self.conn.clone().exists(key)).await
    }

    pub(super) async fn index_add(
        &self,
        key: &str,
        member: &str,
        ttl: Duration,
    ) -> Result<(), StoreError> {
        self.bounded(async {
            let sample: Vec<String> = self
                .conn
                .clone()
                .srandmember_multiple(key, INDEX_PRUNE_SAMPLE)
                .await?;
            // Each member is a session key in a slot of its own: one EXISTS per key.
            let gone: Vec<String> = futures_util::stream::iter(sample)
                .map(|m| async move {
                    let live: bool = self.conn.clone().exists(&m).await?;
                    Ok::<_, redis::RedisError>((!live).then_some(m))
                })
                .buffer_unordered(INDEX_PRUNE_CONCURRENCY)
                .try_filter_map(|m| async move { Ok(m) })
                .try_collect()
                .await?;
            let mut invocation = self.index_add.key(key);
            invocation.arg(member).arg(millis(ttl)).arg(gone);
            invocation.invoke_async::<i64>(&mut self.conn.clone()).await
        })
        .await
        .map(drop)
    }

    pub(super) async fn index_remove(&self, key: &str, member: &str) -> Result<(), StoreError> {
        self.bounded(self.conn.clone().srem::<_, _, ()>(key, member))
            .await
    }

    pub(super) async fn index_members(&self, key: &str) -> Result<Vec<String>, StoreError> {
        self.bounded(self.conn.clone().smembers(key)).await
    }

    pub(super) async fn index_take(&self, key: &str) -> Result<Vec<String>, StoreError> {
        let invocation = self.index_take.key(key);
        let mut conn = self.conn.clone();
        self.bounded(invocation.invoke_async::<Vec<String>>(&mut conn))
            .await
    }

    /// `PING`; in a cluster, every master must answer.
    /// Counts the keys matching `pattern` by `SCAN` (every master of a cluster). For the
    /// `sessions` command only: nothing on a request path walks the keyspace.
    pub(super) async fn count_keys(&self, pattern: &str) -> Result<usize, StoreError> {
        match &self.conn {
            Conn::Cluster(cluster) => {
                let mut cluster = cluster.clone();
                let nodes: String = self
                    .bounded(redis::cmd("CLUSTER").arg("NODES").query_async(&mut cluster))
                    .await?;
                let mut total = 0;
                for (host, port) in cluster_masters(&nodes) {
                    let route = redis::cluster_routing::RoutingInfo::SingleNode(
                        redis::cluster_routing::SingleNodeRoutingInfo::ByAddress { host, port },
                    );
                    let mut cursor = 0u64;
                    loop {
                        let mut scan = redis::cmd("SCAN");
                        scan.arg(cursor)
                            .arg("MATCH")
                            .arg(pattern)
                            .arg("COUNT")
                            .arg(1000);
                        let reply = self
                            .bounded(cluster.route_command(scan, route.clone()))
                            .await?;
                        let (next, keys): (u64, Vec<String>) =
                            redis::from_redis_value(reply).map_err(redis::RedisError::from)?;
                        total += keys.len();
                        cursor = next;
                        if cursor == 0 {
                            break;
                        }
                    }
                }
                Ok(total)
            }
            conn => {
                let mut conn = conn.clone();
                let mut cursor = 0u64;
                let mut total = 0;
                loop {
                    let (next, keys): (u64, Vec<String>) = self
                        .bounded(
                            redis::cmd("SCAN")
                                .arg(cursor)
                                .arg("MATCH")
                                .arg(pattern)
                                .arg("COUNT")
                                .arg(1000)
                                .query_async(&mut conn),
                        )
                        .await?;
                    total += keys.len();
                    cursor = next;
                    if cursor == 0 {
                        return Ok(total);
                    }
                }
            }
        }
    }

    pub(super) async fn ping(&self) -> Result<(), StoreError> {
        let mut conn = self.conn.clone();
        self.bounded(redis::cmd("PING").query_async::<redis::Value>(&mut conn))
            .await
            .map(drop)
    }

    /// `SET key value NX PX ttl`: true when this call created the key.
    pub(super) async fn set_nx(
        &self,
        key: &str,
        value: &str,
        ttl: Duration,
    ) -> Result<bool, StoreError> {
        let mut conn = self.conn.clone();
        let set: Option<String> = self
            .bounded(
                redis::cmd("SET")
                    .arg(key)
                    .arg(value)
                    .arg("NX")
                    .arg("PX")
                    .arg(millis(ttl))
                    .query_async(&mut conn),
            )
            .await?;
        Ok(set.is_some())
    }

    async fn bounded<T>(
        &self,
        op: impl Future<Output = redis::RedisResult<T>>,
    ) -> Result<T, StoreError> {
        match tokio::time::timeout(self.timeout, op).await {
            Ok(result) => Ok(result?),
            Err(_) => Err(StoreError::Timeout(self.timeout)),
        }
    }
}

/// `(host, port)` of every healthy master in `CLUSTER NODES` output.
fn cluster_masters(nodes: &str) -> Vec<(String, u16)> {
    nodes
        .lines()
        .filter_map(|line| {
            let mut fields = line.split(' ');
            let (_id, addr, flags) = (fields.next()?, fields.next()?, fields.next()?);
            let flags: Vec<&str> = flags.split(',').collect();
            if !flags.contains(&"master") || flags.iter().any(|f| f.starts_with("fail")) {
                return None;
            }
            let addr = addr.split('@').next()?;
            let (host, port) = addr.rsplit_once(':')?;
            Some((host.trim_matches(['[', ']']).to_owned(), port.parse().ok()?))
        })
        .collect()
}

fn target(config: &RedisConfig) -> String {
    use crate::config::RedisTopology;
    match &config.topology {
        RedisTopology::Server(url) => url.clone(),
        RedisTopology::Cluster(nodes) => format!("cluster {}", nodes.join(" ")),
        RedisTopology::Sentinel { sentinels, master } => {
            format!("master {master} via sentinels {}", sentinels.join(" "))
        }
    }
}

/// What a failed Redis operation means to the operator.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    /// The server refused the credentials (`WRONGPASS`, `NOAUTH`).
    Auth,
    /// The ACL user may not run a command gatehouse needs, or touch its keys (`NOPERM`).
    Permission,
    /// TLS: the server's certificate did not verify; nothing was sent to it.
    Untrusted,
    /// TLS: the server refused the handshake (no or an unknown client certificate).
    TlsRefused,
    /// No answer: refused, reset, timed out, no master, cluster down.
    Unreachable,
}

impl Failure {
    pub fn of(e: &redis::RedisError) -> Failure {
        use redis::{ErrorKind, ServerErrorKind};
        // rustls' errors reach us only as the text of an I/O error.
        let text = e.to_string().to_ascii_lowercase();
        let tls = |words: &[&str]| words.iter().any(|w| text.contains(w));
        match e.kind() {
            ErrorKind::AuthenticationFailed => Failure::Auth,
            ErrorKind::Server(ServerErrorKind::NoPerm) => Failure::Permission,
            _ if matches!(e.code(), Some("WRONGPASS" | "NOAUTH")) => Failure::Auth,
            ErrorKind::Io if tls(&["invalid peer certificate", "certificate not"]) => {
                Failure::Untrusted
            }
            ErrorKind::Io if tls(&["fatal alert", "handshake"]) => Failure::TlsRefused,
            _ => Failure::Unreachable,
        }
    }

    /// A short, stable name for `/readyz`.
    pub fn name(self) -> &'static str {
        match self {
            Failure::Auth => "authentication_failed",
            Failure::Permission => "permission_denied",
            Failure::Untrusted | Failure::TlsRefused => "tls_failed",
            Failure::Unreachable => "unreachable",
        }
    }

    /// What to check, naming the config keys.
    pub fn hint(self) -> &'static str {
        match self {
            Failure::Auth => {
                "the server refused the credentials: check session.redis_username and \
                 session.redis_password / redis_password_file / GATEHOUSE_REDIS_PASSWORD"
            }
            Failure::Permission => {
                "the ACL user lacks a command or the key pattern of session.redis_prefix \
                 (see README, Running with Redis)"
            }
            Failure::Untrusted => {
                "TLS: the server's certificate did not verify against session.redis_ca_file \
                 (or the web roots when it is unset); nothing was sent to it"
            }
            Failure::TlsRefused => {
                "TLS: the server refused the handshake; it may want a client certificate \
                 (session.redis_client_cert_file) signed by a CA it trusts"
            }
            Failure::Unreachable => {
                "Redis did not answer (refused, reset, timed out, no master, cluster down)"
            }
        }
    }
}

/// The crate's error with what it means, for the log.
pub(super) fn explain(e: &redis::RedisError) -> String {
    format!("{}: {e}", Failure::of(e).hint())
}

#[cfg(test)]
mod tests {
    use super::Failure;
    use redis::{ErrorKind, RedisError};

    fn io(text: &str) -> RedisError {
        RedisError::from(std::io::Error::other(text.to_owned()))
    }

    #[test]
    fn failures_are_told_apart_for_the_operator() {
        let auth = RedisError::from((
            ErrorKind::AuthenticationFailed,
            "Password authentication failed",
        ));
        assert_eq!(Failure::of(&auth), Failure::Auth);
        assert_eq!(
            Failure::of(&io("invalid peer certificate: UnknownIssuer")),
            Failure::Untrusted
        );
        assert_eq!(
            Failure::of(&io("received fatal alert: CertificateRequired")),
            Failure::TlsRefused
        );
        let refused = RedisError::from(std::io::Error::from(std::io::ErrorKind::ConnectionRefused));
        assert_eq!(Failure::of(&refused), Failure::Unreachable);
        assert!(Failure::Auth.hint().contains("session.redis_password"));
        assert!(Failure::Untrusted.hint().contains("session.redis_ca_file"));
    }
}
