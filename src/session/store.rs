//! The session store: opaque bytes under string keys with a TTL, in Redis or in memory.
//! An enum rather than a trait object: two backends, no boxing on the hot path.
//! Every operation is bounded by `session.store_timeout`; a slow or dead store is an error
//! (503 to the client), never a logout.

use std::sync::Arc;
use std::time::Duration;

use moka::Expiry;
use moka::sync::Cache;
use redis::AsyncCommands as _;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};

use crate::config::StoreConfig;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("session store (redis) failed: {0}")]
    Redis(#[from] redis::RedisError),
    #[error("session store did not answer within {0:?}")]
    Timeout(Duration),
    #[error("session store is full ({0} entries)")]
    Full(u64),
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
            StoreConfig::Redis { url, .. } => Store::Redis(RedisStore::new(url.expose(), timeout)?),
        })
    }

    pub fn kind(&self) -> &'static str {
        match self {
            Store::Memory(_) => "memory",
            Store::Redis(_) => "redis",
        }
    }

    pub async fn get(&self, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        match self {
            Store::Memory(m) => Ok(m.get(key)),
            Store::Redis(r) => r.bounded(r.conn.clone().get(key)).await,
        }
    }

    pub async fn set(&self, key: &str, value: &[u8], ttl: Duration) -> Result<(), StoreError> {
        match self {
            Store::Memory(m) => m.set(key, value, ttl),
            Store::Redis(r) => {
                r.bounded(r.conn.clone().pset_ex(key, value, millis(ttl)))
                    .await
            }
        }
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
        match self {
            Store::Memory(m) => m.replace(key, expected, value, ttl),
            Store::Redis(r) => {
                let mut invocation = r.cas.key(key);
                invocation.arg(expected).arg(value).arg(millis(ttl));
                let mut conn = r.conn.clone();
                r.bounded(invocation.invoke_async::<i64>(&mut conn))
                    .await
                    .map(|n| n == 1)
            }
        }
    }

    /// Deletes `key`; returns whether it existed.
    pub async fn delete(&self, key: &str) -> Result<bool, StoreError> {
        match self {
            Store::Memory(m) => Ok(m.cache.remove(key).is_some()),
            Store::Redis(r) => r
                .bounded(r.conn.clone().del::<_, i64>(key))
                .await
                .map(|n| n > 0),
        }
    }

    /// Reads and deletes in one step: the value is handed out at most once.
    pub async fn take(&self, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        match self {
            Store::Memory(m) => Ok(m.cache.remove(key).map(|e| e.data.to_vec())),
            Store::Redis(r) => r.bounded(r.conn.clone().get_del(key)).await,
        }
    }

    /// Takes the lock `key` for `lease` unless someone holds it. The memory store serves one
    /// instance, whose in-process single flight is lock enough, so it always grants.
    pub async fn try_lock(
        &self,
        key: &str,
        owner: &str,
        lease: Duration,
    ) -> Result<bool, StoreError> {
        match self {
            Store::Memory(_) => Ok(true),
            Store::Redis(r) => r.set_nx(key, owner, lease).await,
        }
    }

    /// Extends a lock we still own; false when it was lost (expired and taken).
    pub async fn renew_lock(
        &self,
        key: &str,
        owner: &str,
        lease: Duration,
    ) -> Result<bool, StoreError> {
        match self {
            Store::Memory(_) => Ok(true),
            Store::Redis(r) => {
                let mut invocation = r.renew.key(key);
                invocation.arg(owner).arg(millis(lease));
                let mut conn = r.conn.clone();
                r.bounded(invocation.invoke_async::<i64>(&mut conn))
                    .await
                    .map(|n| n == 1)
            }
        }
    }

    /// Releases a lock if we still own it.
    pub async fn unlock(&self, key: &str, owner: &str) -> Result<(), StoreError> {
        match self {
            Store::Memory(_) => Ok(()),
            Store::Redis(r) => {
                let mut invocation = r.unlock.key(key);
                invocation.arg(owner);
                let mut conn = r.conn.clone();
                r.bounded(invocation.invoke_async::<i64>(&mut conn))
                    .await
                    .map(drop)
            }
        }
    }

    /// Stores `value` only if `key` is absent; false when it already existed (replay check).
    pub async fn put_new(&self, key: &str, ttl: Duration) -> Result<bool, StoreError> {
        match self {
            Store::Memory(m) => {
                let entry = m.cache.entry(key.to_owned()).or_insert(Entry {
                    data: Arc::from(&b"1"[..]),
                    ttl,
                });
                Ok(entry.is_fresh())
            }
            Store::Redis(r) => r.set_nx(key, "1", ttl).await,
        }
    }

    /// Adds `member` to the set `key` (a session index), which lives at least `ttl`.
    pub async fn index_add(
        &self,
        key: &str,
        member: &str,
        ttl: Duration,
    ) -> Result<(), StoreError> {
        match self {
            Store::Memory(m) => {
                m.cache.entry(key.to_owned()).and_upsert_with(|current| {
                    let mut data = current
                        .map(|e| e.into_value().data.to_vec())
                        .unwrap_or_default();
                    data.extend_from_slice(member.as_bytes());
                    data.push(b'\n');
                    Entry {
                        data: data.into(),
                        ttl,
                    }
                });
                Ok(())
            }
            Store::Redis(r) => {
                let mut conn = r.conn.clone();
                let mut pipe = redis::pipe();
                pipe.atomic()
                    .sadd(key, member)
                    .ignore()
                    .pexpire(key, i64::try_from(millis(ttl)).unwrap_or(i64::MAX))
                    .ignore();
                r.bounded(pipe.query_async::<()>(&mut conn)).await
            }
        }
    }

    /// Removes `member` from the set `key`.
    pub async fn index_remove(&self, key: &str, member: &str) -> Result<(), StoreError> {
        match self {
            Store::Memory(m) => {
                m.cache.entry(key.to_owned()).and_compute_with(|current| {
                    use moka::ops::compute::Op;
                    let Some(entry) = current else { return Op::Nop };
                    let entry = entry.into_value();
                    let kept: Vec<&str> = std::str::from_utf8(&entry.data)
                        .unwrap_or_default()
                        .lines()
                        .filter(|m| *m != member)
                        .collect();
                    if kept.is_empty() {
                        return Op::Remove;
                    }
                    let mut data = kept.join("\n").into_bytes();
                    data.push(b'\n');
                    Op::Put(Entry {
                        data: data.into(),
                        ttl: entry.ttl,
                    })
                });
                Ok(())
            }
            Store::Redis(r) => {
                r.bounded(r.conn.clone().srem::<_, _, ()>(key, member))
                    .await
            }
        }
    }

    /// Removes the set `key` and returns its members.
    pub async fn index_take(&self, key: &str) -> Result<Vec<String>, StoreError> {
        match self {
            Store::Memory(m) => Ok(m
                .cache
                .remove(key)
                .map(|e| {
                    String::from_utf8_lossy(&e.data)
                        .lines()
                        .map(str::to_owned)
                        .collect()
                })
                .unwrap_or_default()),
            Store::Redis(r) => {
                let mut conn = r.conn.clone();
                let mut pipe = redis::pipe();
                pipe.atomic().smembers(key).del(key).ignore();
                let (members,): (Vec<String>,) = r.bounded(pipe.query_async(&mut conn)).await?;
                Ok(members)
            }
        }
    }

    /// Whether the store answers.
    pub async fn ping(&self) -> Result<(), StoreError> {
        match self {
            Store::Memory(_) => Ok(()),
            Store::Redis(r) => {
                let mut conn = r.conn.clone();
                r.bounded(redis::cmd("PING").query_async::<String>(&mut conn))
                    .await
                    .map(drop)
            }
        }
    }
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX).max(1)
}

#[derive(Clone)]
pub struct RedisStore {
    conn: ConnectionManager,
    cas: Arc<redis::Script>,
    renew: Arc<redis::Script>,
    unlock: Arc<redis::Script>,
    timeout: Duration,
}

const RENEW_SCRIPT: &str = r"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0";

const UNLOCK_SCRIPT: &str = r"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0";

const CAS_SCRIPT: &str = r"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3])
  return 1
end
return 0";

impl RedisStore {
    fn new(url: &str, timeout: Duration) -> Result<Self, StoreError> {
        let client = redis::Client::open(url)?;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(timeout))
            .set_response_timeout(Some(timeout))
            .set_number_of_retries(2)
            .set_max_delay(Duration::from_millis(500));
        let conn = ConnectionManager::new_lazy_with_config(client, config)?;
        Ok(Self {
            conn,
            cas: Arc::new(redis::Script::new(CAS_SCRIPT)),
            renew: Arc::new(redis::Script::new(RENEW_SCRIPT)),
            unlock: Arc::new(redis::Script::new(UNLOCK_SCRIPT)),
            timeout,
        })
    }

    /// `SET key value NX PX ttl`: true when this call created the key.
    async fn set_nx(&self, key: &str, value: &str, ttl: Duration) -> Result<bool, StoreError> {
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

#[derive(Clone)]
struct Entry {
    data: Arc<[u8]>,
    ttl: Duration,
}

struct PerEntryTtl;

impl Expiry<String, Entry> for PerEntryTtl {
    fn expire_after_create(
        &self,
        _: &String,
        value: &Entry,
        _: std::time::Instant,
    ) -> Option<Duration> {
        Some(value.ttl)
    }

    fn expire_after_update(
        &self,
        _: &String,
        value: &Entry,
        _: std::time::Instant,
        _: Option<Duration>,
    ) -> Option<Duration> {
        Some(value.ttl)
    }
}

/// One instance's sessions, bounded in count; entries expire on their own TTL.
#[derive(Clone)]
pub struct MemoryStore {
    cache: Cache<String, Entry>,
    capacity: u64,
}

impl MemoryStore {
    pub fn new(capacity: u64) -> Self {
        Self {
            cache: Cache::builder()
                .max_capacity(capacity)
                .expire_after(PerEntryTtl)
                .build(),
            capacity,
        }
    }

    fn get(&self, key: &str) -> Option<Vec<u8>> {
        self.cache.get(key).map(|e| e.data.to_vec())
    }

    fn set(&self, key: &str, value: &[u8], ttl: Duration) -> Result<(), StoreError> {
        // Refuse new keys when full rather than let the cache evict someone's live session.
        // New keys come from logins only, so settling the count first is affordable.
        if !self.cache.contains_key(key) {
            self.cache.run_pending_tasks();
            if self.cache.entry_count() >= self.capacity {
                return Err(StoreError::Full(self.capacity));
            }
        }
        self.cache.insert(
            key.to_owned(),
            Entry {
                data: value.into(),
                ttl,
            },
        );
        Ok(())
    }

    fn replace(
        &self,
        key: &str,
        expected: &[u8],
        value: &[u8],
        ttl: Duration,
    ) -> Result<bool, StoreError> {
        let mut wrote = false;
        self.cache
            .entry(key.to_owned())
            .and_compute_with(|current| {
                use moka::ops::compute::Op;
                match current {
                    Some(e) if &*e.value().data == expected => {
                        wrote = true;
                        Op::Put(Entry {
                            data: value.into(),
                            ttl,
                        })
                    }
                    _ => Op::Nop,
                }
            });
        Ok(wrote)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn memory_entries_expire_and_take_hands_out_once() {
        let s = Store::Memory(MemoryStore::new(10));
        s.set("k", b"v", Duration::from_millis(50)).await.unwrap();
        assert_eq!(s.get("k").await.unwrap().as_deref(), Some(&b"v"[..]));
        tokio::time::sleep(Duration::from_millis(80)).await;
        assert_eq!(s.get("k").await.unwrap(), None);

        s.set("t", b"once", Duration::from_secs(5)).await.unwrap();
        assert!(s.take("t").await.unwrap().is_some());
        assert!(s.take("t").await.unwrap().is_none());
    }

    #[tokio::test]
    async fn memory_store_refuses_new_keys_when_full() {
        let s = Store::Memory(MemoryStore::new(2));
        s.set("a", b"1", Duration::from_secs(5)).await.unwrap();
        s.set("b", b"1", Duration::from_secs(5)).await.unwrap();
        assert!(matches!(
            s.set("c", b"1", Duration::from_secs(5)).await,
            Err(StoreError::Full(2))
        ));
        s.set("a", b"2", Duration::from_secs(5)).await.unwrap();
        assert_eq!(
            s.get("b").await.unwrap().as_deref(),
            Some(&b"1"[..]),
            "no live entry evicted"
        );
    }

    #[tokio::test]
    async fn replace_writes_only_over_the_expected_value() {
        let s = Store::Memory(MemoryStore::new(10));
        s.set("k", b"v1", Duration::from_secs(5)).await.unwrap();
        assert!(
            !s.replace("k", b"stale", b"x", Duration::from_secs(5))
                .await
                .unwrap()
        );
        assert!(
            s.replace("k", b"v1", b"v2", Duration::from_secs(5))
                .await
                .unwrap()
        );
        assert_eq!(s.get("k").await.unwrap().as_deref(), Some(&b"v2"[..]));
    }
}
