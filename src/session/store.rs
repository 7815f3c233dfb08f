//! The session store: opaque bytes under string keys with a TTL, in Redis or in memory.
//! An enum rather than a trait object: two backends, no boxing on the hot path.
//! Every operation is bounded by `session.store_timeout`; a slow or dead store is an error
//! (503 to the client), never a logout. Every operation is timed and traced (`call`).

use std::sync::Arc;
use std::time::Duration;

use super::memory::MemoryStore;
use super::redis::{Failure, RedisStore};
use crate::config::StoreConfig;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("session store (redis) failed: {}", super::redis::explain(.0))]
    Redis(#[from] redis::RedisError),
    #[error("session store did not answer within {0:?}")]
    Timeout(Duration),
    #[error("could not encrypt the record")]
    Seal,
    #[error("session store is full ({0} entries)")]
    Full(u64),
}

impl StoreError {
    /// A short, stable name of the cause, for `/readyz`.
    pub fn cause(&self) -> &'static str {
        match self {
            StoreError::Redis(e) => Failure::of(e).name(),
            StoreError::Timeout(_) => "timeout",
            StoreError::Seal => "seal_failed",
            StoreError::Full(_) => "full",
        }
    }
}

#[derive(Clone)]
pub enum Store {
    Memory(MemoryStore),
    Redis(RedisStore),
}

impl Store {
    /// Builds the configured store. Redis connects lazily, so start-up does not wait for it
    /// (`/readyz` reports whether it answers).
    pub fn new(config: &StoreConfig, timeout: Duration) -> Result<Store, StoreError> {
        Ok(match config {
            StoreConfig::Memory { capacity } => Store::Memory(MemoryStore::new(*capacity)),
            StoreConfig::Redis(redis) => Store::Redis(RedisStore::new(redis, timeout)?),
        })
    }

    /// Like [`Store::new`]; a Redis store on a single server or behind Sentinel also keeps
    /// what it reads under `prefix` locally, invalidated by Redis (`CLIENT TRACKING`). Must
    /// run inside the tokio runtime.
    pub fn with_local_cache(
        config: &StoreConfig,
        timeout: Duration,
        prefix: &str,
    ) -> Result<Store, StoreError> {
        Ok(match (Store::new(config, timeout)?, config) {
            (Store::Redis(r), StoreConfig::Redis(redis)) => {
                Store::Redis(r.with_local_cache(redis, prefix)?)
            }
            (store, _) => store,
        })
    }

    /// The Redis store's local cache counters; `None` without one.
    pub fn cache_stats(&self) -> Option<super::redis::CacheStats> {
        match self {
            Store::Redis(r) => r.cache_stats(),
            Store::Memory(_) => None,
        }
    }

    /// Whether a read of an unchanged record hands out the same bytes (`Arc`) as the last
    /// one: the memory store and a Redis store with its local cache do; the others read
    /// afresh every time.
    pub fn shares_copies(&self) -> bool {
        match self {
            Store::Memory(_) => true,
            Store::Redis(r) => r.cache_stats().is_some(),
        }
    }

    pub fn kind(&self) -> &'static str {
        match self {
            Store::Memory(_) => "memory",
            Store::Redis(_) => "redis",
        }
    }

    /// The record under `key`, shared with the store's own copy where it keeps one.
    pub async fn get(&self, key: &str) -> Result<Option<Arc<[u8]>>, StoreError> {
        self.call("get", async {
            match self {
                Store::Memory(m) => Ok(m.get(key)),
                Store::Redis(r) => r.get(key).await,
            }
        })
        .await
    }

    /// Like [`Store::get`], never from a local copy: what another instance wrote since.
    pub async fn get_fresh(&self, key: &str) -> Result<Option<Arc<[u8]>>, StoreError> {
        self.call("get", async {
            match self {
                Store::Memory(m) => Ok(m.get(key)),
                Store::Redis(r) => r.get_fresh(key).await,
            }
        })
        .await
    }

    pub async fn set(&self, key: &str, value: &[u8], ttl: Duration) -> Result<(), StoreError> {
        self.call("set", async {
            match self {
                Store::Memory(m) => m.set(key, value, ttl),
                Store::Redis(r) => r.set(key, value, ttl).await,
            }
        })
        .await
    }

    /// Replaces `key` only while it still holds `expected`: a write based on a stale read
    /// never overwrites a newer one. Returns whether it wrote.
    pub async fn replace(
        &self,
        key: &str,
        expected: &[u8],
        value: &[u8],
        ttl: Duration,
    ) -> Result<bool, StoreError> {
        self.call("replace", async {
            match self {
                Store::Memory(m) => m.replace(key, expected, value, ttl),
                Store::Redis(r) => r.replace(key, expected, value, ttl).await,
            }
        })
        .await
    }

    /// Deletes `key`; returns whether it existed.
    pub async fn delete(&self, key: &str) -> Result<bool, StoreError> {
        self.call("delete", async {
            match self {
                Store::Memory(m) => Ok(m.delete(key)),
                Store::Redis(r) => r.delete(key).await,
            }
        })
        .await
    }

    /// Whether a marker written by [`Store::put_new`] exists.
    pub async fn exists(&self, key: &str) -> Result<bool, StoreError> {
        self.call("exists", async {
            match self {
                Store::Memory(m) => Ok(m.exists(key)),
                Store::Redis(r) => r.exists(key).await,
            }
        })
        .await
    }

    /// Writes a marker only if `key` is absent; false when it already existed (replay check).
    pub async fn put_new(&self, key: &str, ttl: Duration) -> Result<bool, StoreError> {
        self.call("put_new", async {
            match self {
                Store::Memory(m) => Ok(m.put_new(key, ttl)),
                Store::Redis(r) => r.set_nx(key, "1", ttl).await,
            }
        })
        .await
    }

    /// Adds `member` to the set `key` (a session index), which lives at least `ttl`.
    pub async fn index_add(
        &self,
        key: &str,
        member: &str,
        ttl: Duration,
    ) -> Result<(), StoreError> {
        self.call("index_add", async {
            match self {
                Store::Memory(m) => m.index_add(key, member, ttl),
                Store::Redis(r) => r.index_add(key, member, ttl).await,
            }
        })
        .await
    }

    /// Removes `member` from the set `key`.
    pub async fn index_remove(&self, key: &str, member: &str) -> Result<(), StoreError> {
        self.call("index_remove", async {
            match self {
                Store::Memory(m) => m.index_remove(key, member),
                Store::Redis(r) => r.index_remove(key, member).await,
            }
        })
        .await
    }

    /// The members of the set `key`, left in place.
    pub async fn index_members(&self, key: &str) -> Result<Vec<String>, StoreError> {
        match self {
            Store::Memory(m) => Ok(m.index_members(key)),
            Store::Redis(r) => r.index_members(key).await,
        }
    }

    /// Removes the set `key` and returns its members.
    pub async fn index_take(&self, key: &str) -> Result<Vec<String>, StoreError> {
        self.call("index_take", async {
            match self {
                Store::Memory(m) => Ok(m.index_take(key)),
                Store::Redis(r) => r.index_take(key).await,
            }
        })
        .await
    }

    /// Pings the store once and logs the outcome, naming the cause of a failure, so that a
    /// wrong password or CA shows at start-up and not only in `/readyz`.
    pub async fn probe(&self) {
        let Store::Redis(r) = self else { return };
        match self.ping().await {
            Ok(()) => tracing::info!(redis = %r.target(), "session store answers"),
            Err(e) => tracing::error!(
                redis = %r.target(),
                error = %e,
                "session store is not usable; /readyz stays not ready until it is"
            ),
        }
    }

    /// Sessions stored under `prefix` (the `sessions` command; scans the keyspace).
    pub async fn count_sessions(&self, prefix: &str) -> Result<usize, StoreError> {
        match self {
            Store::Memory(m) => Ok(usize::try_from(m.len().0).unwrap_or(usize::MAX)),
            Store::Redis(r) => r.count_keys(&format!("{prefix}s:*")).await,
        }
    }

    /// Whether the store answers.
    pub async fn ping(&self) -> Result<(), StoreError> {
        self.call("ping", async {
            match self {
                Store::Memory(_) => Ok(()),
                Store::Redis(r) => r.ping().await,
            }
        })
        .await
    }

    /// One call `op` (a name in `telemetry::outcomes::STORE_OPS`), timed, counted and traced.
    async fn call<T>(
        &self,
        op: &'static str,
        call: impl Future<Output = Result<T, StoreError>>,
    ) -> Result<T, StoreError> {
        crate::telemetry::outcomes::store_call(op, self.kind(), self.tally(), call).await
    }

    /// How long this store's calls take, by operation (`/metrics` renders it).
    pub fn tally(&self) -> &Arc<crate::telemetry::tally::StoreTally> {
        match self {
            Store::Memory(m) => &m.tally,
            Store::Redis(r) => &r.tally,
        }
    }
}

pub(super) fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX).max(1)
}
