//! The in-memory session store: one instance's sessions in a bounded map, each entry
//! expiring on its own TTL. Sessions never get evicted (a full store refuses new logins);
//! the markers (used login states, logout-token ids) and back-channel indexes live in a second
//! bounded map. Only completed logins and verified logout tokens write there, so anonymous
//! traffic cannot fill either.
//!
//! Both maps are [`Shelf`]s: 64 shards behind their own locks, so requests on different cores
//! rarely meet, and about 150 bytes besides the record per entry (a general-purpose cache with
//! per-entry expiry took over a kilobyte). Expired entries are dropped when read, and a shard's
//! expired entries whenever something is written to that shard. A marker or an index is read
//! and written under one lock, so a replay check and two concurrent logins of one user are
//! exact.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, MutexGuard};
use std::time::{Duration, Instant};

use super::shards::{SHARDS, Shards};
use super::store::StoreError;

struct Entry {
    data: Arc<[u8]>,
    expires: Instant,
}

impl Entry {
    fn new(data: Arc<[u8]>, ttl: Duration) -> Entry {
        let now = Instant::now();
        Entry {
            data,
            expires: now
                .checked_add(ttl)
                .unwrap_or(now + Duration::from_secs(86_400 * 365)),
        }
    }

    fn live(&self, now: Instant) -> bool {
        self.expires > now
    }
}

type Shard = super::shards::Shard<Entry>;

/// A sharded map of bytes with a TTL per entry, holding at most `capacity` entries.
struct Shelf {
    shards: Shards<Entry>,
    /// Entries held, expired ones not yet dropped included. Changed by inserts and removals
    /// only (logins, logouts), never by a read.
    len: AtomicU64,
    capacity: u64,
}

/// One shard, locked, with the shelf's count to keep true.
struct Locked<'s> {
    map: MutexGuard<'s, Shard>,
    len: &'s AtomicU64,
}

impl Locked<'_> {
    fn remove(&mut self, key: &str) -> Option<Entry> {
        let gone = self.map.remove(key);
        if gone.is_some() {
            self.len.fetch_sub(1, Ordering::AcqRel);
        }
        gone
    }

    /// The live entry under `key`; an expired one is dropped.
    fn live(&mut self, key: &str, now: Instant) -> Option<&mut Entry> {
        if self.map.get(key).is_some_and(|e| !e.live(now)) {
            self.remove(key);
        }
        self.map.get_mut(key)
    }

    fn sweep(&mut self, now: Instant) {
        let before = self.map.len();
        self.map.retain(|_, e| e.live(now));
        let dropped = before - self.map.len();
        self.len.fetch_sub(dropped as u64, Ordering::AcqRel);
    }
}

impl Shelf {
    fn new(capacity: u64) -> Shelf {
        Shelf {
            shards: Shards::new(),
            len: AtomicU64::new(0),
            capacity,
        }
    }

    /// Shard `i`, locked.
    fn lock_at(&self, i: usize) -> Locked<'_> {
        Locked {
            map: self.shards.lock_at(i),
            len: &self.len,
        }
    }

    fn lock(&self, key: &str) -> Locked<'_> {
        self.lock_at(self.shards.index(key))
    }

    fn get(&self, key: &str) -> Option<Arc<[u8]>> {
        let now = Instant::now();
        self.lock(key).live(key, now).map(|e| Arc::clone(&e.data))
    }

    fn contains(&self, key: &str) -> bool {
        self.lock(key).live(key, Instant::now()).is_some()
    }

    /// Drops every expired entry.
    fn sweep_all(&self) {
        let now = Instant::now();
        for i in 0..SHARDS {
            self.lock_at(i).sweep(now);
        }
    }

    /// Takes a place for a new entry; false when the shelf is full even without the expired.
    fn reserve(&self) -> bool {
        for attempt in 0..2 {
            if self.len.fetch_add(1, Ordering::AcqRel) < self.capacity {
                return true;
            }
            self.len.fetch_sub(1, Ordering::AcqRel);
            if attempt == 0 {
                self.sweep_all();
            }
        }
        false
    }

    /// Writes `key` (new keys only while there is room); gives the entry back when full.
    fn put(&self, key: &str, entry: Entry) -> Result<(), Entry> {
        let mut shard = self.lock(key);
        shard.sweep(Instant::now());
        if let Some(e) = shard.map.get_mut(key) {
            *e = entry;
            return Ok(());
        }
        drop(shard);
        if !self.reserve() {
            return Err(entry);
        }
        let mut shard = self.lock(key);
        if shard.map.insert(key.into(), entry).is_some() {
            // Written by another call meanwhile: one entry, counted once.
            self.len.fetch_sub(1, Ordering::AcqRel);
        }
        Ok(())
    }

    /// Reads and writes `key` in one step under its shard's lock: `write` sees the live entry
    /// (if any) and returns what to store, or `None` to leave it. Returns whether it wrote.
    /// When a new key makes the shelf overfull, the entry that expires first elsewhere makes
    /// room (markers and indexes only: sessions never go through here).
    fn upsert(&self, key: &str, write: impl FnOnce(Option<&Entry>) -> Option<Entry>) -> bool {
        let mut shard = self.lock(key);
        let Some(entry) = write(shard.live(key, Instant::now()).map(|e| &*e)) else {
            return false;
        };
        let added = shard.map.insert(key.into(), entry).is_none();
        drop(shard);
        if added && self.len.fetch_add(1, Ordering::AcqRel) >= self.capacity {
            self.evict_one(key);
        }
        true
    }

    /// Drops the entry that expires first in the shard after `keep`'s, or in the next one
    /// holding any other than `keep`.
    fn evict_one(&self, keep: &str) {
        let home = self.shards.index(keep);
        for i in home..home + SHARDS {
            let mut shard = self.lock_at(i);
            let first = shard
                .map
                .iter()
                .filter(|(k, _)| &***k != keep)
                .min_by_key(|(_, e)| e.expires)
                .map(|(k, _)| k.clone());
            if let Some(first) = first {
                shard.remove(&first);
                return;
            }
        }
    }

    fn len(&self) -> u64 {
        self.sweep_all();
        self.len.load(Ordering::Acquire)
    }
}

/// One instance's sessions, bounded in count; entries expire on their own TTL.
#[derive(Clone)]
pub struct MemoryStore {
    inner: Arc<Shelves>,
    /// How long its calls take (see [`crate::telemetry::tally`]).
    pub(super) tally: Arc<crate::telemetry::tally::StoreTally>,
}

struct Shelves {
    sessions: Shelf,
    /// Used login states, logout-token ids and indexes; bounded, evicts only under a load
    /// no anonymous client can create.
    side: Shelf,
}

impl MemoryStore {
    pub fn new(capacity: u64) -> Self {
        Self {
            inner: Arc::new(Shelves {
                sessions: Shelf::new(capacity),
                side: Shelf::new(capacity.saturating_mul(4)),
            }),
            tally: Arc::default(),
        }
    }

    pub(super) fn get(&self, key: &str) -> Option<Arc<[u8]>> {
        self.inner.sessions.get(key)
    }

    pub(super) fn set(&self, key: &str, value: &[u8], ttl: Duration) -> Result<(), StoreError> {
        // Refuse new keys when full rather than evict someone's live session.
        let sessions = &self.inner.sessions;
        sessions
            .put(key, Entry::new(value.into(), ttl))
            .map_err(|_| StoreError::Full(sessions.capacity))
    }

    pub(super) fn replace(
        &self,
        key: &str,
        expected: &[u8],
        value: &[u8],
        ttl: Duration,
    ) -> Result<bool, StoreError> {
        let mut shard = self.inner.sessions.lock(key);
        match shard.live(key, Instant::now()) {
            Some(e) if &*e.data == expected => {
                *e = Entry::new(value.into(), ttl);
                Ok(true)
            }
            _ => Ok(false),
        }
    }

    pub(super) fn delete(&self, key: &str) -> bool {
        let mut shard = self.inner.sessions.lock(key);
        let now = Instant::now();
        shard.remove(key).is_some_and(|e| e.live(now))
    }

    pub(super) fn exists(&self, key: &str) -> bool {
        self.inner.side.contains(key)
    }

    /// Entries held: sessions, and markers plus indexes (after expired ones are dropped).
    pub fn len(&self) -> (u64, u64) {
        (self.inner.sessions.len(), self.inner.side.len())
    }

    /// Writes a marker unless one is there, atomically (a replay check).
    pub(super) fn put_new(&self, key: &str, ttl: Duration) -> bool {
        self.inner.side.upsert(key, |current| match current {
            Some(_) => None,
            None => Some(Entry::new(Arc::from(&b"1"[..]), ttl)),
        })
    }

    /// Indexes are newline-separated lists of session keys; adding drops members whose
    /// session is gone, so a user's index never outgrows their live sessions.
    pub(super) fn index_add(
        &self,
        key: &str,
        member: &str,
        ttl: Duration,
    ) -> Result<(), StoreError> {
        let sessions = &self.inner.sessions;
        // Read and written under one lock: two logins of one user at once both stay listed.
        // (Lock order: an index shard, then session shards; nothing takes them the other way.)
        self.inner.side.upsert(key, |current| {
            let mut data = Vec::new();
            if let Some(current) = current {
                for live in String::from_utf8_lossy(&current.data)
                    .lines()
                    .filter(|m| *m != member && sessions.contains(m))
                {
                    data.extend_from_slice(live.as_bytes());
                    data.push(b'\n');
                }
            }
            data.extend_from_slice(member.as_bytes());
            data.push(b'\n');
            Some(Entry::new(data.into(), ttl))
        });
        Ok(())
    }

    pub(super) fn index_remove(&self, key: &str, member: &str) -> Result<(), StoreError> {
        let mut shard = self.inner.side.lock(key);
        let now = Instant::now();
        let Some(entry) = shard.live(key, now) else {
            return Ok(());
        };
        let kept: Vec<&str> = std::str::from_utf8(&entry.data)
            .unwrap_or_default()
            .lines()
            .filter(|m| *m != member)
            .collect();
        if kept.is_empty() {
            shard.remove(key);
            return Ok(());
        }
        let mut data = kept.join("\n").into_bytes();
        data.push(b'\n');
        entry.data = data.into();
        Ok(())
    }

    pub(super) fn index_members(&self, key: &str) -> Vec<String> {
        self.inner
            .side
            .get(key)
            .map(|d| lines(&d))
            .unwrap_or_default()
    }

    pub(super) fn index_take(&self, key: &str) -> Vec<String> {
        let mut shard = self.inner.side.lock(key);
        let now = Instant::now();
        shard
            .remove(key)
            .filter(|e| e.live(now))
            .map(|e| lines(&e.data))
            .unwrap_or_default()
    }
}

fn lines(data: &[u8]) -> Vec<String> {
    String::from_utf8_lossy(data)
        .lines()
        .map(str::to_owned)
        .collect()
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

    #[test]
    fn a_marker_is_new_to_exactly_one_of_many_racing_writers() {
        let m = MemoryStore::new(1_000);
        let ttl = Duration::from_secs(5);
        for round in 0..200 {
            let key = format!("jti{round}");
            let start = std::sync::Barrier::new(8);
            let firsts: usize = std::thread::scope(|s| {
                let racers: Vec<_> = (0..8)
                    .map(|_| {
                        s.spawn(|| {
                            start.wait();
                            usize::from(m.put_new(&key, ttl))
                        })
                    })
                    .collect();
                racers.into_iter().map(|r| r.join().unwrap()).sum()
            });
            assert_eq!(firsts, 1, "{key}: a replay passed as new");
        }
    }

    #[test]
    fn logins_of_one_user_at_once_are_all_indexed() {
        let m = MemoryStore::new(1_000);
        let ttl = Duration::from_secs(5);
        for round in 0..50 {
            let index = format!("sub{round}");
            let members: Vec<String> = (0..8).map(|i| format!("s{round}-{i}")).collect();
            for member in &members {
                m.set(member, b"x", ttl).unwrap();
            }
            let start = std::sync::Barrier::new(members.len());
            std::thread::scope(|s| {
                for member in &members {
                    let (m, index, start) = (&m, &index, &start);
                    s.spawn(move || {
                        start.wait();
                        m.index_add(index, member, ttl).unwrap();
                    });
                }
            });
            let mut listed = m.index_members(&index);
            listed.sort();
            assert_eq!(listed, members, "{index}: a login fell out of the index");
        }
    }

    #[tokio::test]
    async fn an_expired_session_gives_its_place_to_a_new_login() {
        let s = Store::Memory(MemoryStore::new(2));
        s.set("old", b"1", Duration::from_millis(20)).await.unwrap();
        s.set("live", b"1", Duration::from_secs(5)).await.unwrap();
        tokio::time::sleep(Duration::from_millis(40)).await;
        s.set("new", b"1", Duration::from_secs(5)).await.unwrap();
        if let Store::Memory(m) = &s {
            assert_eq!(
                m.len().0,
                2,
                "the expired entry was dropped, not kept beside"
            );
        }
        assert_eq!(s.get("old").await.unwrap(), None);
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
