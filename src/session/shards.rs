//! Keys spread over 64 maps, each behind its own lock: how the memory store, the Redis
//! store's local cache and the slides in flight (`super::slides`) hold their entries, so
//! that requests on different cores rarely meet.

use std::collections::HashMap;
use std::hash::BuildHasher as _;
use std::sync::{Mutex, MutexGuard, PoisonError};

// Store keys are hex SHA-256 digests of cookie secrets, which only a sealed cookie this
// server made can name: nobody can aim keys at one bucket, so a fast hash will do (seeded per
// map all the same). The shard index takes the low bits, where `quality` mixes better.
use foldhash::{fast, quality};

pub const SHARDS: usize = 64;

/// One lock's share of the keys.
pub type Shard<V> = HashMap<Box<str>, V, fast::RandomState>;

pub struct Shards<V> {
    shards: Box<[Mutex<Shard<V>>]>,
    hasher: quality::RandomState,
}

impl<V> Shards<V> {
    pub fn new() -> Shards<V> {
        Shards {
            shards: (0..SHARDS)
                .map(|_| Mutex::new(HashMap::default()))
                .collect(),
            hasher: quality::RandomState::default(),
        }
    }

    /// Which shard holds `key`.
    pub fn index(&self, key: &str) -> usize {
        usize::try_from(self.hasher.hash_one(key) % SHARDS as u64).unwrap_or(0)
    }

    /// Shard `i` (modulo their number), locked.
    pub fn lock_at(&self, i: usize) -> MutexGuard<'_, Shard<V>> {
        self.shards[i % SHARDS]
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// The shard of `key`, locked.
    pub fn lock(&self, key: &str) -> MutexGuard<'_, Shard<V>> {
        self.lock_at(self.index(key))
    }
}
