//! Each thread's opened copies of the records it loaded last, so that a hot session is
//! decrypted and parsed once per change, not once per request.
//!
//! Rules:
//! 1. A copy is used only for the very bytes it was opened from: the store's `Arc<[u8]>`
//!    must be the same allocation. The copy holds a reference, so that allocation cannot be
//!    freed and reused for other bytes; any write (by this instance or, through the Redis
//!    cache's invalidation, by another) hands out new bytes, which are opened again.
//! 2. A copy is used only with the record key it was opened with, compared in constant
//!    time: the cookie must carry the key exactly as when the record is decrypted.
//! 3. Per thread and bounded: no lock, nothing shared between workers. A session the store
//!    no longer has is dropped from the copies when a read finds it gone.

use std::cell::RefCell;
use std::collections::HashMap;
use std::sync::Arc;

use subtle::ConstantTimeEq as _;
use zeroize::Zeroizing;

use super::record::{self, RECORD_KEY_LEN, Session};

/// Copies kept per thread; the oldest-inserted is not tracked, an arbitrary one goes.
const PER_THREAD: usize = 1024;

struct Opened {
    raw: Arc<[u8]>,
    record_key: Zeroizing<[u8; RECORD_KEY_LEN]>,
    session: Arc<Session>,
}

thread_local! {
    /// Keyed by store key, which no client can choose (see `super::shards`): a fast hash.
    static COPIES: RefCell<HashMap<Box<str>, Opened, foldhash::fast::RandomState>> =
        RefCell::new(HashMap::default());
}

/// The record `raw` read under `store_key`, opened with `record_key` (see [`record::open`]);
/// from this thread's copy when it was opened from these bytes with this key (rules 1, 2).
/// `keep`: whether the store hands out the same bytes again (`Store::shares_copies`); a
/// store that reads afresh every time would only fill the copies with ones never used.
pub fn open(
    record_key: &[u8; RECORD_KEY_LEN],
    store_key: &str,
    raw: &Arc<[u8]>,
    keep: bool,
) -> Option<Arc<Session>> {
    if !keep {
        return record::open::<Session>(record_key, store_key, raw).map(Arc::new);
    }
    let hit = COPIES.with_borrow(|copies| {
        copies
            .get(store_key)
            .filter(|c| Arc::ptr_eq(&c.raw, raw) && bool::from(c.record_key.ct_eq(record_key)))
            .map(|c| Arc::clone(&c.session))
    });
    if hit.is_some() {
        return hit;
    }
    let session = Arc::new(record::open::<Session>(record_key, store_key, raw)?);
    COPIES.with_borrow_mut(|copies| {
        if copies.len() >= PER_THREAD
            && !copies.contains_key(store_key)
            && let Some(any) = copies.keys().next().cloned()
        {
            copies.remove(&any);
        }
        copies.insert(
            store_key.into(),
            Opened {
                raw: Arc::clone(raw),
                record_key: Zeroizing::new(*record_key),
                session: Arc::clone(&session),
            },
        );
    });
    Some(session)
}

/// Drops this thread's copy of the record under `store_key` (it is gone from the store).
pub fn forget(store_key: &str) {
    COPIES.with_borrow_mut(|copies| copies.remove(store_key));
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::secret::Secret;
    use crate::session::Tokens;

    fn session(sub: &str) -> Session {
        Session {
            handle: Secret::new("h"),
            sub: sub.into(),
            sid: None,
            claims: serde_json::Map::new(),
            aud: Vec::new(),
            auth_time: None,
            tokens: Tokens {
                access_token: Secret::new("at"),
                issued_at_ms: 0,
                access_expires_at_ms: 0,
                refresh_token: None,
                id_token: None,
                bearer: Default::default(),
            },
            token_version: 0,
            refresh_claim: None,
            created_at_ms: 0,
            last_seen_ms: 0,
            expires_at_ms: 0,
        }
    }

    fn sealed(key: &[u8; RECORD_KEY_LEN], store_key: &str, sub: &str) -> Arc<[u8]> {
        record::seal(key, store_key, &session(sub)).unwrap().into()
    }

    #[test]
    fn a_kept_copy_needs_the_record_key_it_was_opened_with() {
        let (key, other) = ([1u8; RECORD_KEY_LEN], [2u8; RECORD_KEY_LEN]);
        let raw = sealed(&key, "s:a", "alice");
        assert_eq!(open(&key, "s:a", &raw, true).unwrap().sub, "alice");
        assert!(
            open(&other, "s:a", &raw, true).is_none(),
            "the same bytes with another key do not open"
        );
        assert_eq!(open(&key, "s:a", &raw, true).unwrap().sub, "alice");
    }

    #[test]
    fn new_bytes_under_the_same_key_are_opened_again() {
        let key = [3u8; RECORD_KEY_LEN];
        let first = sealed(&key, "s:b", "before");
        assert_eq!(open(&key, "s:b", &first, true).unwrap().sub, "before");
        let written = sealed(&key, "s:b", "after");
        assert_eq!(open(&key, "s:b", &written, true).unwrap().sub, "after");
        let tampered: Arc<[u8]> = {
            let mut bytes = written.to_vec();
            let last = bytes.len() - 1;
            bytes[last] ^= 1;
            bytes.into()
        };
        assert!(
            open(&key, "s:b", &tampered, true).is_none(),
            "altered bytes fail"
        );
    }

    #[test]
    fn nothing_is_kept_for_a_store_that_reads_afresh() {
        let key = [5u8; RECORD_KEY_LEN];
        let raw = sealed(&key, "s:fresh", "carol");
        assert_eq!(open(&key, "s:fresh", &raw, false).unwrap().sub, "carol");
        assert!(COPIES.with_borrow(|c| !c.contains_key("s:fresh")));
    }

    #[test]
    fn copies_stay_bounded_per_thread() {
        let key = [4u8; RECORD_KEY_LEN];
        for i in 0..PER_THREAD + 10 {
            let store_key = format!("s:{i}");
            let raw = sealed(&key, &store_key, "u");
            assert!(open(&key, &store_key, &raw, true).is_some());
        }
        assert_eq!(COPIES.with_borrow(HashMap::len), PER_THREAD);
        forget("s:0");
        forget(&format!("s:{}", PER_THREAD + 9));
        assert!(COPIES.with_borrow(HashMap::len) < PER_THREAD);
    }
}
