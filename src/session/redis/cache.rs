//! A local copy of the records this instance reads, kept true by Redis itself: a second
//! connection runs `CLIENT TRACKING ON BCAST PREFIX <redis_prefix>`, so every write, delete
//! or expiry of one of gatehouse's keys, by any instance, arrives as an invalidation that
//! drops the copy. A hot session then costs no round trip.
//!
//! Rules:
//! 1. Copies are served only while the tracking connection is up and tracking. When it drops,
//!    or misses its heartbeat, every copy is thrown away and reads go to Redis until tracking
//!    is back (and everything is thrown away once more when it is).
//! 2. A read reserves its key before it asks Redis; an invalidation of that key in the
//!    meantime cancels the reservation, so a reply that an invalidation overtook is never
//!    kept.
//! 3. No copy expires by time: invalidations, a flush and the size bound remove them. The
//!    heartbeat only bounds how long a silently dead connection goes unnoticed.
//! 4. Behind Sentinel the tracking connection goes to the master the store's requests use,
//!    and copies are served only while the requests still use the very connection (its
//!    generation) the tracking was set up for: at a failover, or any reconnect, the cache
//!    stops serving at the moment requests switch, and tracks the new master before it
//!    serves again.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use redis::{AsyncConnectionConfig, PushInfo, PushKind, Value};
use tokio::sync::mpsc;

use super::sentinel::Master;
use crate::session::shards::{SHARDS, Shard, Shards};

/// Copies kept at most (the memory bound: a session record is about 2 KiB).
pub const CAPACITY: usize = 100_000;
/// How often the tracking connection must answer a `PING`.
const HEARTBEAT: Duration = Duration::from_secs(1);
/// Pause before dialling again after the tracking connection failed, doubling per failure.
const RECONNECT_DELAY: Duration = Duration::from_millis(200);
const MAX_RECONNECT_DELAY: Duration = Duration::from_secs(10);

/// What [`LocalCache::lookup`] found.
pub enum Lookup {
    /// The record as Redis last had it.
    Hit(Arc<[u8]>),
    /// Ask Redis; hand the answer to [`LocalCache::fill`] with this reservation (`None`: the
    /// cache is not live, nothing will be kept).
    Miss(Option<Reservation>),
}

/// A read in flight that may fill the cache, unless an invalidation cancels it (rule 2).
pub struct Reservation(u64);

enum Slot {
    Reserved(u64),
    Copy(Arc<[u8]>),
}

/// Counters for tests and the operator: how often Redis told us to drop something.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CacheStats {
    /// Invalidation messages received (each may name several keys).
    pub invalidations: u64,
    /// Times the cache went live (tracking connection up and tracking).
    pub connects: u64,
    /// Whether copies are served now (tracking is up).
    pub live: bool,
}

#[derive(Clone)]
pub struct LocalCache {
    inner: Arc<Inner>,
}

/// Where the tracking connection goes.
pub enum Tracked {
    /// The one server (boxed: a client is large, and this is made once).
    Server(Box<redis::Client>),
    /// The master the sentinels name, as the store's requests reach it (rule 4).
    Sentinel(Master),
}

struct Inner {
    shards: Shards<Slot>,
    live: AtomicBool,
    /// Behind Sentinel: the master, and the generation of its connection that is tracked.
    following: Option<(Master, AtomicU64)>,
    /// Reservation numbers; taken on misses only.
    next: AtomicU64,
    invalidations: AtomicU64,
    connects: AtomicU64,
}

impl LocalCache {
    /// Starts tracking every key under `prefix` through `client` (which must speak RESP3) on
    /// the current runtime. The cache stays cold until the tracking connection is up.
    pub fn start(tracked: Tracked, prefix: &str, timeout: Duration) -> LocalCache {
        let (cache, client) = match tracked {
            Tracked::Server(client) => (LocalCache::new(None), Some(*client)),
            Tracked::Sentinel(master) => (LocalCache::new(Some(master)), None),
        };
        tokio::spawn(track(cache.clone(), client, prefix.to_owned(), timeout));
        cache
    }

    fn new(following: Option<Master>) -> LocalCache {
        LocalCache {
            inner: Arc::new(Inner {
                shards: Shards::new(),
                live: AtomicBool::new(false),
                following: following.map(|master| (master, AtomicU64::new(0))),
                next: AtomicU64::new(0),
                invalidations: AtomicU64::new(0),
                connects: AtomicU64::new(0),
            }),
        }
    }

    fn shard(&self, key: &str) -> std::sync::MutexGuard<'_, Shard<Slot>> {
        self.inner.shards.lock(key)
    }

    pub fn is_live(&self) -> bool {
        self.inner.live.load(Ordering::Acquire)
            && self
                .inner
                .following
                .as_ref()
                .is_none_or(|(master, tracked)| {
                    master.generation() == tracked.load(Ordering::Acquire)
                })
    }

    pub fn stats(&self) -> CacheStats {
        CacheStats {
            invalidations: self.inner.invalidations.load(Ordering::Relaxed),
            connects: self.inner.connects.load(Ordering::Relaxed),
            live: self.is_live(),
        }
    }

    /// The copy of `key`, or a reservation to fill it from Redis' answer.
    pub fn lookup(&self, key: &str) -> Lookup {
        if !self.is_live() {
            return Lookup::Miss(None);
        }
        let mut shard = self.shard(key);
        if let Some(Slot::Copy(copy)) = shard.get(key) {
            return Lookup::Hit(Arc::clone(copy));
        }
        if shard.len() >= CAPACITY / SHARDS {
            // Full: make room by dropping any one entry (a later read fetches it again).
            if let Some(victim) = shard.keys().next().cloned() {
                shard.remove(&victim);
            }
        }
        let n = self.inner.next.fetch_add(1, Ordering::Relaxed);
        shard.insert(key.into(), Slot::Reserved(n));
        Lookup::Miss(Some(Reservation(n)))
    }

    /// Keeps Redis' answer for `key` if the reservation still stands (no invalidation, no
    /// flush since). An absent key is not kept.
    pub fn fill(&self, key: &str, reservation: Reservation, value: Option<&[u8]>) {
        let mut shard = self.shard(key);
        let stands = matches!(shard.get(key), Some(Slot::Reserved(n)) if *n == reservation.0);
        if !stands {
            return;
        }
        match value {
            Some(v) if self.is_live() => {
                shard.insert(key.into(), Slot::Copy(Arc::from(v)));
            }
            _ => {
                shard.remove(key);
            }
        }
    }

    /// Drops the copy (or cancels the reservation) of `key`.
    pub fn invalidate(&self, key: &str) {
        self.shard(key).remove(key);
    }

    fn flush(&self) {
        for i in 0..SHARDS {
            self.inner.shards.lock_at(i).clear();
        }
    }

    fn go_down(&self) {
        self.inner.live.store(false, Ordering::Release);
        self.flush();
    }

    /// Serves copies again; behind Sentinel, while requests use connection `generation`.
    fn go_live(&self, generation: u64) {
        // Anything reserved before tracking was on may have missed its invalidation.
        self.flush();
        if let Some((_, tracked)) = &self.inner.following {
            tracked.store(generation, Ordering::Release);
        }
        self.inner.connects.fetch_add(1, Ordering::Relaxed);
        self.inner.live.store(true, Ordering::Release);
    }

    /// Applies one push message of the tracking connection.
    fn apply(&self, push: &PushInfo) {
        if push.kind != PushKind::Invalidate {
            return;
        }
        self.inner.invalidations.fetch_add(1, Ordering::Relaxed);
        match push.data.first() {
            Some(Value::Array(keys)) => {
                for key in keys {
                    if let Value::BulkString(bytes) = key
                        && let Ok(key) = std::str::from_utf8(bytes)
                    {
                        self.invalidate(key);
                    }
                }
            }
            // A null key list: the server flushed everything (FLUSHALL, FLUSHDB).
            _ => self.flush(),
        }
    }
}

/// Keeps a tracking connection up for as long as the store lives (the task ends when the
/// last store handle is dropped). Failed dials back off up to [`MAX_RECONNECT_DELAY`].
async fn track(
    cache: LocalCache,
    client: Option<redis::Client>,
    prefix: String,
    timeout: Duration,
) {
    let weak = Arc::downgrade(&cache.inner);
    drop(cache);
    let mut delay = RECONNECT_DELAY;
    let mut failures = 0u32;
    loop {
        let Some(inner) = weak.upgrade() else { return };
        let cache = LocalCache { inner };
        let connects = cache.stats().connects;
        let ended = match (&client, &cache.inner.following) {
            (Some(client), _) => tracking(&cache, client, None, &prefix, timeout).await,
            (None, Some((master, _))) => match master.tracking_client().await {
                Ok((generation, client)) => {
                    let following = Some((master, generation));
                    tracking(&cache, &client, following, &prefix, timeout).await
                }
                Err(e) => Err(e),
            },
            (None, None) => return,
        };
        cache.go_down();
        if cache.stats().connects > connects {
            delay = RECONNECT_DELAY;
            failures = 0;
        }
        // A switch of master is no failure: a failure after it is news again.
        let switched = ended.is_ok();
        match ended {
            Err(e) if failures == 0 => tracing::warn!(
                error = %super::super::store::StoreError::from(e),
                "session cache: no tracking connection; sessions are read from Redis every time until there is"
            ),
            Err(e) => tracing::debug!(
                error = %super::super::store::StoreError::from(e),
                "session cache: tracking connection still down"
            ),
            Ok(()) => {
                tracing::debug!("session cache: the Redis master changed; tracking the new one")
            }
        }
        failures = if switched {
            0
        } else {
            failures.saturating_add(1)
        };
        drop(cache);
        tokio::time::sleep(delay).await;
        delay = (delay * 2).min(MAX_RECONNECT_DELAY);
    }
}

/// One tracking connection, from dial to failure; behind Sentinel (`following`: the master
/// and the generation of its connection that `client` reaches), until that connection is no
/// longer the one requests use (`Ok`).
async fn tracking(
    cache: &LocalCache,
    client: &redis::Client,
    following: Option<(&Master, u64)>,
    prefix: &str,
    timeout: Duration,
) -> redis::RedisResult<()> {
    let (pushes, mut received) = mpsc::unbounded_channel::<PushInfo>();
    let config = AsyncConnectionConfig::new()
        .set_connection_timeout(Some(timeout))
        .set_response_timeout(Some(timeout))
        .set_push_sender(pushes);
    let mut conn = client
        .get_multiplexed_async_connection_with_config(&config)
        .await?;
    redis::cmd("CLIENT")
        .arg("TRACKING")
        .arg("ON")
        .arg("BCAST")
        .arg("PREFIX")
        .arg(prefix)
        .query_async::<()>(&mut conn)
        .await?;
    let generation = following.map_or(0, |(_, generation)| generation);
    let switched = switched(following);
    tokio::pin!(switched);
    cache.go_live(generation);
    tracing::debug!("session cache: tracking is on");
    let mut beat = tokio::time::interval(HEARTBEAT);
    beat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            push = received.recv() => match push {
                Some(push) if push.kind == PushKind::Disconnection => {
                    return Err(closed());
                }
                Some(push) => cache.apply(&push),
                None => return Err(closed()),
            },
            _ = beat.tick() => {
                redis::cmd("PING").query_async::<()>(&mut conn).await?;
            }
            () = &mut switched => return Ok(()),
        }
    }
}

/// Resolves once requests no longer use the master connection `following` names; never
/// for a single server.
async fn switched(following: Option<(&Master, u64)>) {
    let Some((master, generation)) = following else {
        return std::future::pending().await;
    };
    loop {
        let changed = master.changed();
        tokio::pin!(changed);
        changed.as_mut().enable();
        if master.generation() != generation {
            return;
        }
        changed.await;
    }
}

fn closed() -> redis::RedisError {
    redis::RedisError::from(std::io::Error::from(std::io::ErrorKind::ConnectionReset))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn live() -> LocalCache {
        let cache = LocalCache::new(None);
        cache.go_live(0);
        cache
    }

    fn reserve(cache: &LocalCache, key: &str) -> Reservation {
        match cache.lookup(key) {
            Lookup::Miss(Some(r)) => r,
            _ => panic!("expected a reservation"),
        }
    }

    fn hit(cache: &LocalCache, key: &str) -> Option<Vec<u8>> {
        match cache.lookup(key) {
            Lookup::Hit(v) => Some(v.to_vec()),
            Lookup::Miss(_) => None,
        }
    }

    fn invalidation(keys: &[&str]) -> PushInfo {
        PushInfo {
            kind: PushKind::Invalidate,
            data: vec![Value::Array(
                keys.iter()
                    .map(|k| Value::BulkString(k.as_bytes().to_vec()))
                    .collect(),
            )],
        }
    }

    #[test]
    fn a_filled_read_is_served_until_redis_invalidates_it() {
        let cache = live();
        let r = reserve(&cache, "s:1");
        cache.fill("s:1", r, Some(b"v1"));
        assert_eq!(hit(&cache, "s:1"), Some(b"v1".to_vec()));
        cache.apply(&invalidation(&["s:1"]));
        assert_eq!(hit(&cache, "s:1"), None);
        assert_eq!(cache.stats().invalidations, 1);
    }

    #[test]
    fn a_reply_overtaken_by_an_invalidation_is_not_kept() {
        let cache = live();
        let r = reserve(&cache, "s:1");
        cache.apply(&invalidation(&["s:1"]));
        cache.fill("s:1", r, Some(b"stale"));
        assert_eq!(hit(&cache, "s:1"), None);
    }

    #[test]
    fn nothing_is_served_or_kept_while_tracking_is_down() {
        let cache = live();
        let r = reserve(&cache, "s:1");
        cache.fill("s:1", r, Some(b"v1"));
        let pending = reserve(&cache, "s:2");
        cache.go_down();
        assert!(matches!(cache.lookup("s:1"), Lookup::Miss(None)));
        cache.fill("s:2", pending, Some(b"v2"));
        cache.go_live(0);
        assert_eq!(hit(&cache, "s:1"), None, "flushed when tracking dropped");
        assert_eq!(
            hit(&cache, "s:2"),
            None,
            "a read from before the drop is not kept"
        );
    }

    #[test]
    fn a_flush_of_the_server_empties_the_cache() {
        let cache = live();
        let r = reserve(&cache, "s:1");
        cache.fill("s:1", r, Some(b"v1"));
        cache.apply(&PushInfo {
            kind: PushKind::Invalidate,
            data: vec![Value::Nil],
        });
        assert_eq!(hit(&cache, "s:1"), None);
    }

    #[test]
    fn behind_sentinel_copies_are_served_only_while_requests_use_the_tracked_connection() {
        let master = Master::unconnected();
        master.switch_to(1);
        let cache = LocalCache::new(Some(master.clone()));
        cache.go_live(1);
        let r = reserve(&cache, "s:1");
        cache.fill("s:1", r, Some(b"v1"));
        let pending = reserve(&cache, "s:2");
        assert_eq!(hit(&cache, "s:1"), Some(b"v1".to_vec()));

        master.switch_to(0);
        assert!(
            matches!(cache.lookup("s:1"), Lookup::Miss(None)),
            "not served once requests lost the tracked master"
        );
        master.switch_to(2);
        assert!(
            matches!(cache.lookup("s:1"), Lookup::Miss(None)),
            "nor while the new master is not tracked yet"
        );
        cache.fill("s:2", pending, Some(b"read before the switch"));
        cache.go_live(2);
        assert_eq!(hit(&cache, "s:1"), None, "flushed");
        assert_eq!(
            hit(&cache, "s:2"),
            None,
            "a read from before the switch is not kept"
        );
        let r = reserve(&cache, "s:1");
        cache.fill("s:1", r, Some(b"v2"));
        assert_eq!(hit(&cache, "s:1"), Some(b"v2".to_vec()));
    }

    #[tokio::test]
    async fn tracking_a_master_ends_when_requests_switch_to_another_connection() {
        let master = Master::unconnected();
        master.switch_to(1);
        let ended = switched(Some((&master, 1)));
        tokio::pin!(ended);
        let wait = Duration::from_millis(20);
        assert!(tokio::time::timeout(wait, &mut ended).await.is_err());
        master.switch_to(2);
        assert!(
            tokio::time::timeout(Duration::from_secs(5), ended)
                .await
                .is_ok()
        );
        // Already switched before it is first polled: ends at once.
        assert!(
            tokio::time::timeout(wait, switched(Some((&master, 1))))
                .await
                .is_ok()
        );
        assert!(tokio::time::timeout(wait, switched(None)).await.is_err());
    }

    #[test]
    fn absent_keys_are_not_kept() {
        let cache = live();
        let r = reserve(&cache, "s:1");
        cache.fill("s:1", r, None);
        assert!(matches!(cache.lookup("s:1"), Lookup::Miss(Some(_))));
    }
}
