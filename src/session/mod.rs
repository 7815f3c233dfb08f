//! Sessions: finding the browser's session from its cookie, loading it with one store round
//! trip, enforcing idle and absolute expiry server-side, and login transactions.

mod memory;
#[doc(hidden)]
pub mod record;
mod redis;
mod store;

pub use memory::MemoryStore;
pub use record::{CookieSecret, LoginTxn, Session, Tokens, now, now_ms, random_token};
pub use store::{Store, StoreError};

use std::time::Duration;

use zeroize::Zeroizing;

use crate::config::SessionConfig;
use crate::cookie::{Jar, KeyRing, SameSite};

/// Login transactions live this long (state, nonce and PKCE verifier expire with them).
pub const LOGIN_TTL: Duration = Duration::from_secs(600);
/// The longest the idle clock goes unwritten: sliding costs a write per session per
/// min(this, idle timeout / 4) at most, not one per request.
const MAX_TOUCH_INTERVAL_MS: i64 = 5_000;

/// A session as loaded: the record, where it lives, and the bytes it was read as (so a
/// later write can refuse to overwrite a newer one).
#[derive(Clone)]
pub struct Loaded {
    pub session: Session,
    pub secret: CookieSecret,
    pub key: String,
    raw: Vec<u8>,
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

fn millis(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

fn secs(d: Duration) -> i64 {
    i64::try_from(d.as_secs()).unwrap_or(i64::MAX)
}

/// Sessions and login transactions over a [`Store`].
pub struct Sessions {
    pub store: Store,
    keys: KeyRing,
    pub cookie_name: String,
    pub login_cookie_name: String,
    pub same_site: SameSite,
    pub idle: Duration,
    pub max_lifetime: Duration,
    prefix: String,
}

impl Sessions {
    pub fn new(config: &SessionConfig, store: Store, keys: KeyRing) -> Self {
        Self {
            store,
            keys,
            cookie_name: config.cookie_name.clone(),
            login_cookie_name: config.login_cookie_name.clone(),
            same_site: config.same_site,
            idle: config.idle_timeout,
            max_lifetime: config.max_lifetime,
            prefix: config.key_prefix.clone(),
        }
    }

    /// The session cookie's secret, from the first value of our cookie that opens.
    pub fn cookie_secret(&self, jar: &Jar) -> Option<CookieSecret> {
        jar.session_values()
            .find_map(|v| self.keys.open(&self.cookie_name, v))
            .and_then(|plain| CookieSecret::from_bytes(&plain))
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
            return Ok(None);
        };
        let Some(session) = record::open::<Session>(&secret.record_key, &key, &raw) else {
            return Ok(None);
        };
        let now = now_ms();
        let mut loaded = Loaded {
            session,
            secret,
            key,
            raw,
        };
        if now >= loaded.idle_expires_at_ms(self.idle) {
            self.destroy(&loaded).await?;
            return Ok(None);
        }
        let interval = (millis(self.idle) / 4).clamp(1, MAX_TOUCH_INTERVAL_MS);
        if slide && now - loaded.session.last_seen_ms >= interval {
            loaded.session.last_seen_ms = now;
            if let Some(sealed) =
                record::seal(&loaded.secret.record_key, &loaded.key, &loaded.session)
            {
                let store = self.store.clone();
                let (key, expected, ttl) = (
                    loaded.key.clone(),
                    std::mem::take(&mut loaded.raw),
                    self.ttl(&loaded.session),
                );
                loaded.raw.clone_from(&sealed);
                tokio::spawn(async move {
                    if let Err(e) = store.replace(&key, &expected, &sealed, ttl).await {
                        tracing::warn!(error = %e, "could not slide the session's idle timeout");
                    }
                });
            }
        }
        Ok(Some(loaded))
    }

    /// Store TTL: what is left of the idle and absolute lifetimes.
    fn ttl(&self, s: &Session) -> Duration {
        let end = s
            .last_seen_ms
            .saturating_add(millis(self.idle))
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
                    self.max_lifetime,
                )
                .await?;
        }
        self.store
            .index_add(
                &record::store_key(&self.prefix, "sub:", session.sub.as_bytes()),
                &key,
                self.max_lifetime,
            )
            .await?;
        Ok(self.keys.seal(&self.cookie_name, &secret.to_bytes()))
    }

    /// Reads the session again (no sliding): what another request or instance wrote since.
    pub async fn reload(&self, loaded: &Loaded) -> Result<Option<Loaded>, StoreError> {
        let Some(raw) = self.store.get(&loaded.key).await? else {
            return Ok(None);
        };
        let Some(session) = record::open::<Session>(&loaded.secret.record_key, &loaded.key, &raw)
        else {
            return Ok(None);
        };
        Ok(Some(Loaded {
            session,
            secret: loaded.secret.clone(),
            key: loaded.key.clone(),
            raw,
        }))
    }

    /// Stores new tokens into the session, merging with whatever was written meanwhile (an
    /// idle-clock slide): tokens change only under the refresh lock, so nothing newer is lost.
    /// Returns false when the session is gone.
    pub async fn write_tokens(
        &self,
        loaded: &mut Loaded,
        tokens: Tokens,
    ) -> Result<bool, StoreError> {
        loaded.session.tokens = tokens;
        for _ in 0..5 {
            if self.update(loaded).await? {
                return Ok(true);
            }
            let Some(mut current) = self.reload(loaded).await? else {
                return Ok(false);
            };
            current.session.tokens = loaded.session.tokens.clone();
            *loaded = current;
        }
        Ok(false)
    }

    /// Ends every session of the provider session `sid`; returns how many were found.
    pub async fn end_by_sid(&self, sid: &str) -> Result<usize, StoreError> {
        self.end_indexed(&record::store_key(&self.prefix, "sid:", sid.as_bytes()))
            .await
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
        }
        Ok(ended)
    }

    /// Records a logout token's `jti`; false when it was seen before (a replay).
    /// `ttl` must cover the longest a logout token is accepted, so no replay outlives its record.
    pub async fn first_use_of_jti(&self, jti: &str, ttl: Duration) -> Result<bool, StoreError> {
        self.store
            .put_new(
                &record::store_key(&self.prefix, "jti:", jti.as_bytes()),
                ttl,
            )
            .await
    }

    /// Key of the refresh lock of this session.
    pub fn refresh_lock_key(loaded: &Loaded) -> String {
        format!("{}:refresh", loaded.key)
    }

    /// Writes `loaded.session` back unless the stored record changed since it was read.
    pub async fn update(&self, loaded: &mut Loaded) -> Result<bool, StoreError> {
        let Some(sealed) = record::seal(&loaded.secret.record_key, &loaded.key, &loaded.session)
        else {
            return Ok(false);
        };
        let wrote = self
            .store
            .replace(&loaded.key, &loaded.raw, &sealed, self.ttl(&loaded.session))
            .await?;
        if wrote {
            loaded.raw = sealed;
        }
        Ok(wrote)
    }

    /// Deletes the session and takes it out of the back-channel indexes.
    pub async fn destroy(&self, loaded: &Loaded) -> Result<(), StoreError> {
        self.store.delete(&loaded.key).await?;
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
    pub fn new_session(
        &self,
        sub: String,
        sid: Option<String>,
        claims: serde_json::Map<String, serde_json::Value>,
        tokens: Tokens,
    ) -> Session {
        let now = now_ms();
        Session {
            handle: random_token(),
            sub,
            sid,
            claims,
            tokens,
            created_at_ms: now,
            last_seen_ms: now,
            expires_at_ms: now.saturating_add(millis(self.max_lifetime)),
        }
    }

    /// The browser's login-binding key, from its login cookie.
    pub fn login_binding(&self, jar: &Jar) -> Option<Zeroizing<[u8; 32]>> {
        jar.login_cookies()
            .filter(|(name, _)| *name == self.login_cookie_name)
            .find_map(|(_, v)| self.keys.open(&self.login_cookie_name, v))
            .and_then(|plain| {
                let arr: [u8; 32] = plain.as_slice().try_into().ok()?;
                Some(Zeroizing::new(arr))
            })
    }

    /// The sealed login cookie value for a binding key.
    pub fn login_cookie_value(&self, binding: &[u8; 32]) -> String {
        self.keys.seal(&self.login_cookie_name, binding)
    }

    pub async fn put_login(
        &self,
        binding: &[u8; 32],
        state: &str,
        txn: &LoginTxn,
    ) -> Result<(), StoreError> {
        let key = record::store_key(&self.prefix, "l:", state.as_bytes());
        let sealed = record::seal(binding, &key, txn).ok_or(StoreError::Seal)?;
        self.store.set_ephemeral(&key, &sealed, LOGIN_TTL).await
    }

    /// Takes the login transaction for `state` (one use only). `None` when it is unknown,
    /// expired, already used, or was started in another browser (it does not open with this
    /// browser's binding key).
    pub async fn take_login(
        &self,
        binding: Option<&[u8; 32]>,
        state: &str,
    ) -> Result<Option<LoginTxn>, StoreError> {
        let key = record::store_key(&self.prefix, "l:", state.as_bytes());
        // Taken atomically, so two callbacks can never both use it.
        let Some(raw) = self.store.take(&key).await? else {
            return Ok(None);
        };
        let txn: Option<LoginTxn> = binding.and_then(|b| record::open(b, &key, &raw));
        match txn {
            Some(txn) => Ok(Some(txn).filter(|t| now() - t.created_at <= secs(LOGIN_TTL))),
            None => {
                // Another browser presented this state: it must not burn the real owner's
                // login, so the transaction goes back (its own created_at still bounds it).
                self.store.set_ephemeral(&key, &raw, LOGIN_TTL).await?;
                Ok(None)
            }
        }
    }
}
