//! The in-memory session store: one instance's sessions in a bounded cache, each entry
//! expiring on its own TTL. Sessions never get evicted (a full store refuses new logins);
//! the markers (used login states, logout-token ids) and back-channel indexes live in a second
//! bounded cache. Only completed logins and verified logout tokens write there, so anonymous
//! traffic cannot fill either.

use std::sync::Arc;
use std::time::Duration;

use moka::Expiry;
use moka::ops::compute::Op;
use moka::sync::Cache;

use super::store::StoreError;

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
    /// Used login states, logout-token ids and indexes; bounded, evicts only under a load
    /// no anonymous client can create.
    side: Cache<String, Entry>,
    capacity: u64,
}

impl MemoryStore {
    pub fn new(capacity: u64) -> Self {
        let build = |max| {
            Cache::builder()
                .max_capacity(max)
                .expire_after(PerEntryTtl)
                .build()
        };
        Self {
            cache: build(capacity),
            side: build(capacity.saturating_mul(4)),
            capacity,
        }
    }

    pub(super) fn get(&self, key: &str) -> Option<Arc<[u8]>> {
        self.cache.get(key).map(|e| e.data)
    }

    pub(super) fn set(&self, key: &str, value: &[u8], ttl: Duration) -> Result<(), StoreError> {
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

    pub(super) fn replace(
        &self,
        key: &str,
        expected: &[u8],
        value: &[u8],
        ttl: Duration,
    ) -> Result<bool, StoreError> {
        let mut wrote = false;
        self.cache
            .entry(key.to_owned())
            .and_compute_with(|current| match current {
                Some(e) if &*e.value().data == expected => {
                    wrote = true;
                    Op::Put(Entry {
                        data: value.into(),
                        ttl,
                    })
                }
                _ => Op::Nop,
            });
        Ok(wrote)
    }

    pub(super) fn delete(&self, key: &str) -> bool {
        self.cache.remove(key).is_some()
    }

    pub(super) fn exists(&self, key: &str) -> bool {
        self.side.contains_key(key)
    }

    /// Entries held: sessions, and markers plus indexes (after pending expiries settled).
    pub fn len(&self) -> (u64, u64) {
        self.cache.run_pending_tasks();
        self.side.run_pending_tasks();
        (self.cache.entry_count(), self.side.entry_count())
    }

    pub(super) fn put_new(&self, key: &str, ttl: Duration) -> bool {
        let entry = self.side.entry(key.to_owned()).or_insert(Entry {
            data: Arc::from(&b"1"[..]),
            ttl,
        });
        entry.is_fresh()
    }

    /// Indexes are newline-separated lists of session keys; adding drops members whose
    /// session is gone, so a user's index never outgrows their live sessions.
    pub(super) fn index_add(
        &self,
        key: &str,
        member: &str,
        ttl: Duration,
    ) -> Result<(), StoreError> {
        self.side.entry(key.to_owned()).and_upsert_with(|current| {
            let mut data = Vec::new();
            if let Some(entry) = current {
                for live in String::from_utf8_lossy(&entry.into_value().data)
                    .lines()
                    .filter(|m| self.cache.contains_key(*m))
                {
                    data.extend_from_slice(live.as_bytes());
                    data.push(b'\n');
                }
            }
            data.extend_from_slice(member.as_bytes());
            data.push(b'\n');
            Entry {
                data: data.into(),
                ttl,
            }
        });
        Ok(())
    }

    pub(super) fn index_remove(&self, key: &str, member: &str) -> Result<(), StoreError> {
        self.side.entry(key.to_owned()).and_compute_with(|current| {
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

    pub(super) fn index_members(&self, key: &str) -> Vec<String> {
        self.side
            .get(key)
            .map(|e| {
                String::from_utf8_lossy(&e.data)
                    .lines()
                    .map(str::to_owned)
                    .collect()
            })
            .unwrap_or_default()
    }

    pub(super) fn index_take(&self, key: &str) -> Vec<String> {
        self.side
            .remove(key)
            .map(|e| {
                String::from_utf8_lossy(&e.data)
                    .lines()
                    .map(str::to_owned)
                    .collect()
            })
            .unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::session::Store;

    #[tokio::test]
    async fn memory_entries_expire_and_markers_are_written_once() {
        let s = Store::Memory(MemoryStore::new(10));
        s.set("k", b"v", Duration::from_millis(50)).await.unwrap();
        assert_eq!(s.get("k").await.unwrap().as_deref(), Some(&b"v"[..]));
        tokio::time::sleep(Duration::from_millis(80)).await;
        assert_eq!(s.get("k").await.unwrap(), None);

        assert!(!s.exists("t").await.unwrap());
        assert!(s.put_new("t", Duration::from_secs(5)).await.unwrap());
        assert!(!s.put_new("t", Duration::from_secs(5)).await.unwrap());
        assert!(s.exists("t").await.unwrap());
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
    async fn a_flood_of_markers_never_evicts_a_session() {
        let s = Store::Memory(MemoryStore::new(2));
        s.set("session", b"live", Duration::from_secs(5))
            .await
            .unwrap();
        for i in 0..100 {
            s.put_new(&format!("jti{i}"), Duration::from_secs(5))
                .await
                .unwrap();
        }
        if let Store::Memory(m) = &s {
            assert!(m.len().1 <= 8, "the side cache stays bounded");
        }
        assert_eq!(
            s.get("session").await.unwrap().as_deref(),
            Some(&b"live"[..])
        );
        s.set("second", b"live", Duration::from_secs(5))
            .await
            .unwrap();
    }

    #[tokio::test]
    async fn indexes_forget_sessions_that_are_gone() {
        let s = Store::Memory(MemoryStore::new(10));
        let ttl = Duration::from_secs(5);
        s.set("s1", b"x", ttl).await.unwrap();
        s.index_add("sub", "s1", ttl).await.unwrap();
        s.index_add("sub", "s2-expired", ttl).await.unwrap();
        s.index_add("sub", "s3", ttl).await.unwrap();
        let members = s.index_take("sub").await.unwrap();
        assert_eq!(members, ["s1", "s3"], "s2 had no session when s3 was added");
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
