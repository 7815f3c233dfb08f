//! Sessions: finding the browser's session from its cookie, loading it with one store round
//! trip, enforcing idle and absolute expiry server-side, writing tokens by compare-and-set,
//! and the login transactions that live in the browser until the callback (`login.rs`).

mod decoded;
mod login;
mod memory;
#[doc(hidden)]
pub mod record;
mod redis;
mod shards;
mod slides;
mod store;

pub use login::{LOGIN_TTL, LoginCookies, LoginTxn, MAX_PENDING_LOGINS, MAX_RETURN_TO};
pub use memory::MemoryStore;
pub use record::{CookieSecret, RefreshClaim, Session, Tokens, now, now_ms, random_token};
pub use redis::CacheStats;
pub use store::{Store, StoreError};

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use arc_swap::ArcSwap;

use crate::config::SessionConfig;
use crate::cookie::{Jar, KeyRing, SameSite};
use crate::secret::Secret;
/// The longest the idle clock goes unwritten: sliding costs a write per session per
/// min(this, idle timeout / 4) at most, not one per request.
const MAX_TOUCH_INTERVAL_MS: i64 = 5_000;

/// A session as loaded: the record, where it lives, and the bytes it was read as (so a
/// later write can refuse to overwrite a newer one).
#[derive(Clone)]
pub struct Loaded {
    /// Shared with this thread's opened copy (`decoded`) until a change: `Arc::make_mut`.
    pub session: Arc<Session>,
    pub secret: CookieSecret,
    pub key: String,
    raw: Arc<[u8]>,
}

impl Loaded {
    /// Unix milliseconds when the session ends for inactivity.
    pub fn idle_expires_at_ms(&self, idle: Duration) -> i64 {
        self.session
            .last_seen_ms
            .saturating_add(millis(idle))
            .min(self.session.expires_at_ms)
    }
}

fn duration_ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

fn millis(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

/// Who logged in, from the verified ID token.
#[derive(Debug, Clone)]
pub struct Identity {
    pub sub: String,
    pub sid: Option<String>,
    /// User claims for `/auth/user` (protocol claims removed).
    pub claims: serde_json::Map<String, serde_json::Value>,
    pub aud: Vec<String>,
    pub auth_time: Option<i64>,
}

/// How [`Sessions::write_tokens`] ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenWrite {
    /// The new tokens are stored.
    Written,
    /// The session is gone (logged out or expired meanwhile).
    Gone,
    /// Someone else's tokens or claim are in the record now; ours were not written.
    Lost,
}

/// Told of every session that ends on this instance (logout, back-channel logout, expiry
/// found on load, a refresh the provider refused), by its store key, right after its record
/// is deleted. Sessions ended elsewhere, or expired in the store, are not reported here.
pub trait EndObserver: Send + Sync {
    fn session_ended(&self, key: &str);
}

/// Sessions and login transactions over a [`Store`].
pub struct Sessions {
    pub store: Store,
    /// Seals and opens cookies; a reload swaps in a rotated ring.
    keys: ArcSwap<KeyRing>,
    pub cookie_name: String,
    pub login: LoginCookies,
    pub same_site: SameSite,
    /// Idle timeout and absolute lifetime, in milliseconds (a reload may change them).
    idle_ms: AtomicU64,
    max_lifetime_ms: AtomicU64,
    prefix: String,
    ended: OnceLock<Arc<dyn EndObserver>>,
    /// The idle-clock writes on their way to the store.
    slides: Arc<slides::Slides>,
}

impl Sessions {
    pub fn new(config: &SessionConfig, store: Store, keys: KeyRing) -> Self {
        Self {
            store,
            keys: ArcSwap::from_pointee(keys),
            cookie_name: config.cookie_name.clone(),
            login: LoginCookies::new(&config.cookie_name),
            same_site: config.same_site,
            idle_ms: AtomicU64::new(duration_ms(config.idle_timeout)),
            max_lifetime_ms: AtomicU64::new(duration_ms(config.max_lifetime)),
            prefix: config.key_prefix.clone(),
            ended: OnceLock::new(),
            slides: slides::Slides::new(),
        }
    }

    /// Sets who is told of sessions ending here (once; later calls are ignored).
    pub fn observe_ends(&self, observer: Arc<dyn EndObserver>) {
        let _ = self.ended.set(observer);
    }

    fn report_end(&self, key: &str) {
        if let Some(observer) = self.ended.get() {
            observer.session_ended(key);
        }
    }

    /// How long a session lives without a request.
    pub fn idle(&self) -> Duration {
        Duration::from_millis(self.idle_ms.load(Ordering::Relaxed))
    }

    /// How long a session lives at most.
    pub fn max_lifetime(&self) -> Duration {
        Duration::from_millis(self.max_lifetime_ms.load(Ordering::Relaxed))
    }

    /// Takes in the reloadable parts of a new `[session]`: the key ring (rotation; `None`
    /// keeps the running one) and the two lifetimes. Cookies sealed with a key still in the
    /// ring keep opening.
    pub fn reconfigure(&self, config: &SessionConfig, keys: Option<KeyRing>) {
        if let Some(keys) = keys {
            self.keys.store(std::sync::Arc::new(keys));
        }
        self.idle_ms
            .store(duration_ms(config.idle_timeout), Ordering::Relaxed);
        self.max_lifetime_ms
            .store(duration_ms(config.max_lifetime), Ordering::Relaxed);
    }

    /// The session cookie's secret, from the first value of our cookie that opens.
    pub fn cookie_secret(&self, jar: &Jar) -> Option<CookieSecret> {
        let keys = self.keys.load();
        jar.session_values()
            .find_map(|v| keys.open_with(&self.cookie_name, v, CookieSecret::from_bytes))
    }

    /// Loads the session the cookie points to. `Ok(None)` when there is none or it expired.
    /// One store round trip; when `slide` is set and the idle clock is due, it is written
    /// back in the background.
    pub async fn load(
        &self,
        secret: CookieSecret,
        slide: bool,
    ) -> Result<Option<Loaded>, StoreError> {
        let key = record::store_key(&self.prefix, "s:", &secret.id);
        let Some(raw) = self.store.get(&key).await? else {
            decoded::forget(&key);
            return Ok(None);
        };
        let keep = self.store.shares_copies();
        let Some(session) = decoded::open(&secret.record_key, &key, &raw, keep) else {
            return Ok(None);
        };
        let now = now_ms();
        let mut loaded = Loaded {
            session,
            secret,
            key,
            raw,
        };
        if now >= loaded.idle_expires_at_ms(self.idle()) {
            self.destroy(&loaded).await?;
            return Ok(None);
        }
        let interval = (millis(self.idle()) / 4).clamp(1, MAX_TOUCH_INTERVAL_MS);
        // A request that overlaps a slide of this session leaves the idle clock to it (and
        // keeps the record as read, whose clock is at most one interval behind).
        if slide
            && now - loaded.session.last_seen_ms >= interval
            && let Some(sliding) = self.slides.begin(&loaded.key)
        {
            Arc::make_mut(&mut loaded.session).last_seen_ms = now;
            if let Some(sealed) =
                record::seal(&loaded.secret.record_key, &loaded.key, &*loaded.session)
            {
                let store = self.store.clone();
                let sealed: Arc<[u8]> = sealed.into();
                let (key, expected, ttl) = (
                    loaded.key.clone(),
                    std::mem::replace(&mut loaded.raw, Arc::clone(&sealed)),
                    self.ttl(&loaded.session),
                );
                tokio::spawn(crate::telemetry::trace::carry(async move {
                    if let Err(e) = store.replace(&key, &expected, &sealed, ttl).await {
                        tracing::warn!(error = %e, "could not slide the session's idle timeout");
                    }
                    drop(sliding);
                }));
            }
        }
        Ok(Some(loaded))
    }

    /// Store TTL: what is left of the idle and absolute lifetimes.
    fn ttl(&self, s: &Session) -> Duration {
        let end = s
            .last_seen_ms
            .saturating_add(millis(self.idle()))
            .min(s.expires_at_ms);
        Duration::from_millis(u64::try_from((end - now_ms()).max(1)).unwrap_or(1))
    }

    /// Stores a new session under a fresh id and returns the sealed cookie value.
    pub async fn create(&self, session: &Session) -> Result<String, StoreError> {
        let secret = CookieSecret::random();
        let key = record::store_key(&self.prefix, "s:", &secret.id);
        let sealed = record::seal(&secret.record_key, &key, session).ok_or(StoreError::Seal)?;
        self.store.set(&key, &sealed, self.ttl(session)).await?;
        // Back-channel logout finds sessions by the provider's sid, or all of a subject's.
        if let Some(sid) = &session.sid {
            self.store
                .index_add(
                    &record::store_key(&self.prefix, "sid:", sid.as_bytes()),
                    &key,
                    self.max_lifetime(),
                )
                .await?;
        }
        self.store
            .index_add(
                &record::store_key(&self.prefix, "sub:", session.sub.as_bytes()),
                &key,
                self.max_lifetime(),
            )
            .await?;
        crate::telemetry::outcomes::session_created();
        Ok(self.keys.load().seal(&self.cookie_name, &secret.to_bytes()))
    }

    /// Reads the session again (no sliding): what another request or instance wrote since.
    pub async fn reload(&self, loaded: &Loaded) -> Result<Option<Loaded>, StoreError> {
        let Some(raw) = self.store.get_fresh(&loaded.key).await? else {
            return Ok(None);
        };
        let Some(session) = record::open::<Session>(&loaded.secret.record_key, &loaded.key, &raw)
        else {
            return Ok(None);
        };
        Ok(Some(Loaded {
            session: Arc::new(session),
            secret: loaded.secret.clone(),
            key: loaded.key.clone(),
            raw,
        }))
    }

    /// Takes the refresh claim of `loaded` for `owner` until `lease` from now, by
    /// compare-and-set on the record as it was read. False when the record changed since
    /// (someone else claimed, refreshed or slid it): re-read and decide again.
    pub async fn claim_refresh(
        &self,
        loaded: &mut Loaded,
        owner: &str,
        lease: Duration,
    ) -> Result<bool, StoreError> {
        let previous = Arc::make_mut(&mut loaded.session)
            .refresh_claim
            .replace(RefreshClaim {
                owner: owner.to_owned(),
                until_ms: now_ms().saturating_add(millis(lease)),
            });
        let wrote = self.update(loaded).await?;
        if !wrote {
            Arc::make_mut(&mut loaded.session).refresh_claim = previous;
        }
        Ok(wrote)
    }

    /// Gives a claim back without new tokens (the refresh failed transiently). Best effort:
    /// a claim that cannot be released expires with its lease.
    pub async fn release_refresh(&self, loaded: &mut Loaded, owner: &str) {
        for _ in 0..3 {
            if loaded
                .session
                .refresh_claim
                .as_ref()
                .is_none_or(|c| c.owner != owner)
            {
                return;
            }
            Arc::make_mut(&mut loaded.session).refresh_claim = None;
            match self.update(loaded).await {
                Ok(true) | Err(_) => return,
                Ok(false) => match self.reload(loaded).await {
                    Ok(Some(current)) => *loaded = current,
                    _ => return,
                },
            }
        }
    }

    /// Writes the tokens of a refresh that `owner` holds the claim for: `apply` puts them
    /// into the record, the token version goes up and the claim is released, all in one
    /// compare-and-set. A record that changed meanwhile only by an idle-clock slide is
    /// re-read and written again; one whose claim or token version moved on is never
    /// overwritten.
    pub async fn write_tokens(
        &self,
        loaded: &mut Loaded,
        owner: &str,
        apply: impl Fn(&mut Session),
    ) -> Result<TokenWrite, StoreError> {
        let base_version = loaded.session.token_version;
        for _ in 0..8 {
            let mut next = loaded.clone();
            let session = Arc::make_mut(&mut next.session);
            apply(session);
            session.token_version = base_version.wrapping_add(1);
            session.refresh_claim = None;
            if self.update(&mut next).await? {
                *loaded = next;
                return Ok(TokenWrite::Written);
            }
            let Some(current) = self.reload(loaded).await? else {
                return Ok(TokenWrite::Gone);
            };
            let still_ours = current.session.token_version == base_version
                && current
                    .session
                    .refresh_claim
                    .as_ref()
                    .is_some_and(|c| c.owner == owner);
            if !still_ours {
                *loaded = current;
                return Ok(TokenWrite::Lost);
            }
            *loaded = current;
        }
        Ok(TokenWrite::Lost)
    }

    /// Ends every session of the provider session `sid`; returns how many were found.
    pub async fn end_by_sid(&self, sid: &str) -> Result<usize, StoreError> {
        self.end_indexed(&record::store_key(&self.prefix, "sid:", sid.as_bytes()))
            .await
    }

    /// How many sessions exist: all of them, or those of `sub`.
    pub async fn count(&self, sub: Option<&str>) -> Result<usize, StoreError> {
        let Some(sub) = sub else {
            return self.store.count_sessions(&self.prefix).await;
        };
        let index = record::store_key(&self.prefix, "sub:", sub.as_bytes());
        let mut live = 0;
        for key in self.store.index_members(&index).await? {
            if self.store.get(&key).await?.is_some() {
                live += 1;
            }
        }
        Ok(live)
    }

    /// Ends every session of the user `sub`.
    pub async fn end_by_sub(&self, sub: &str) -> Result<usize, StoreError> {
        self.end_indexed(&record::store_key(&self.prefix, "sub:", sub.as_bytes()))
            .await
    }

    /// Deletes every session in the index; counts those that still existed.
    async fn end_indexed(&self, index: &str) -> Result<usize, StoreError> {
        let keys = self.store.index_take(index).await?;
        let mut ended = 0;
        for key in &keys {
            if self.store.delete(key).await? {
                ended += 1;
            }
            self.report_end(key);
        }
        Ok(ended)
    }

    /// Records a logout token's `jti`; false when it was seen before (a replay).
    /// `ttl` must cover the longest a logout token is accepted, so no replay outlives its record.
    pub async fn first_use_of_jti(&self, jti: &str, ttl: Duration) -> Result<bool, StoreError> {
        self.store.put_new(&self.jti_key(jti), ttl).await
    }

    /// Forgets a recorded `jti`, so that a provider retrying a logout that failed half-way is
    /// not refused as a replay.
    pub async fn forget_jti(&self, jti: &str) -> Result<(), StoreError> {
        self.store.delete(&self.jti_key(jti)).await.map(drop)
    }

    fn jti_key(&self, jti: &str) -> String {
        record::store_key(&self.prefix, "jti:", jti.as_bytes())
    }

    /// Whether the login of `state` was completed already (a replayed callback).
    pub async fn state_used(&self, state: &str) -> Result<bool, StoreError> {
        self.store.exists(&self.state_key(state)).await
    }

    /// Records that the login of `state` completed; false when another callback recorded it
    /// first. Kept while the transaction could still be presented.
    pub async fn mark_state_used(&self, state: &str, ttl: Duration) -> Result<bool, StoreError> {
        self.store.put_new(&self.state_key(state), ttl).await
    }

    fn state_key(&self, state: &str) -> String {
        record::store_key(&self.prefix, "st:", state.as_bytes())
    }

    /// The `Set-Cookie` name and value that carry a new login's transaction.
    pub fn login_cookie(&self, txn: &LoginTxn) -> Result<(String, String), StoreError> {
        let value = self
            .login
            .seal(&self.keys.load(), txn)
            .ok_or(StoreError::Seal)?;
        Ok((self.login.name(txn.state.expose()), value))
    }

    /// The live login transaction of `state` in this browser's cookies.
    pub fn open_login(&self, jar: &Jar, state: &str) -> Option<LoginTxn> {
        self.login.open(&self.keys.load(), jar, state)
    }

    /// Login cookies to clear before a new one is set (see [`LoginCookies::to_drop`]).
    pub fn logins_to_drop<'j>(&self, jar: &'j Jar) -> Vec<&'j str> {
        self.login.to_drop(&self.keys.load(), jar)
    }

    /// Writes `loaded.session` back unless the stored record changed since it was read.
    pub async fn update(&self, loaded: &mut Loaded) -> Result<bool, StoreError> {
        let Some(sealed) = record::seal(&loaded.secret.record_key, &loaded.key, &*loaded.session)
        else {
            return Ok(false);
        };
        let wrote = self
            .store
            .replace(&loaded.key, &loaded.raw, &sealed, self.ttl(&loaded.session))
            .await?;
        if wrote {
            loaded.raw = sealed.into();
        }
        Ok(wrote)
    }

    /// Deletes the session and takes it out of the back-channel indexes.
    pub async fn destroy(&self, loaded: &Loaded) -> Result<(), StoreError> {
        self.store.delete(&loaded.key).await?;
        self.report_end(&loaded.key);
        self.unindex(&loaded.key, &loaded.session).await
    }

    async fn unindex(&self, key: &str, session: &Session) -> Result<(), StoreError> {
        if let Some(sid) = &session.sid {
            self.store
                .index_remove(
                    &record::store_key(&self.prefix, "sid:", sid.as_bytes()),
                    key,
                )
                .await?;
        }
        self.store
            .index_remove(
                &record::store_key(&self.prefix, "sub:", session.sub.as_bytes()),
                key,
            )
            .await
    }

    /// A new session record for a user who just logged in.
    pub fn new_session(&self, identity: Identity, tokens: Tokens) -> Session {
        let now = now_ms();
        Session {
            handle: Secret::new(random_token()),
            sub: identity.sub,
            sid: identity.sid,
            claims: identity.claims,
            aud: identity.aud,
            auth_time: identity.auth_time,
            tokens,
            token_version: 0,
            refresh_claim: None,
            created_at_ms: now,
            last_seen_ms: now,
            expires_at_ms: now.saturating_add(millis(self.max_lifetime())),
        }
    }
}
