//! The login transaction: what `/auth/login` must remember until the callback (PKCE verifier,
//! nonce, `return_to`, expiry). It is kept in the browser, never in the store, so starting a
//! login costs the server nothing.
//!
//! Rules:
//! 1. One cookie per pending login, named `<session cookie>-login-<tag>` where the tag is
//!    derived from the login's `state`: the callback finds its own cookie by name, and several
//!    tabs can log in at once.
//! 2. The value is AES-256-GCM sealed under the session key ring with associated data that
//!    names its purpose (it opens as no other cookie), and the sealed transaction carries its
//!    `state`: a cookie opens for the callback of that state only.
//! 3. At most [`MAX_PENDING_LOGINS`] login cookies live in a browser; starting one more drops
//!    the oldest, so the `Cookie` header stays a few KB (each cookie is under 1 KB, because a
//!    `return_to` longer than [`MAX_RETURN_TO`] is replaced by `/`).
//! 4. The transaction expires [`LOGIN_TTL`] after it started, whatever the cookie's Max-Age.
//! 5. A `state` is used once: the callback records it in the store after the code exchange
//!    succeeded (so records are bounded by real logins), and refuses it when it finds it there.

use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::record::now_ms;
use crate::cookie::{Jar, KeyRing};
use crate::secret::Secret;

/// A login must finish within this time of starting.
pub const LOGIN_TTL: Duration = Duration::from_secs(600);
/// Login cookies one browser may hold at once; the oldest is dropped past this.
pub const MAX_PENDING_LOGINS: usize = 5;
/// Longest `return_to` a login cookie carries; a longer one is replaced by `/`.
pub const MAX_RETURN_TO: usize = 512;

/// A login in progress, as sealed in its cookie.
#[derive(Debug, Serialize, Deserialize)]
pub struct LoginTxn {
    /// The authorization request's `state`: the callback must present this one.
    #[serde(rename = "s")]
    pub state: Secret,
    #[serde(rename = "v")]
    pub pkce_verifier: Secret,
    #[serde(rename = "n")]
    pub nonce: Secret,
    #[serde(rename = "r")]
    pub return_to: String,
    /// Unix milliseconds after which the transaction is refused.
    #[serde(rename = "e")]
    pub expires_at_ms: i64,
}

impl LoginTxn {
    pub fn new(state: Secret, pkce_verifier: Secret, nonce: Secret, return_to: String) -> LoginTxn {
        let return_to = if return_to.len() > MAX_RETURN_TO {
            "/".to_owned()
        } else {
            return_to
        };
        LoginTxn {
            state,
            pkce_verifier,
            nonce,
            return_to,
            expires_at_ms: now_ms().saturating_add(super::millis(LOGIN_TTL)),
        }
    }

    pub fn is_expired(&self) -> bool {
        now_ms() >= self.expires_at_ms
    }

    /// What is left of the transaction's life (at least a millisecond).
    pub fn remaining(&self) -> Duration {
        Duration::from_millis(u64::try_from((self.expires_at_ms - now_ms()).max(1)).unwrap_or(1))
    }
}

/// Names and seals login cookies.
pub struct LoginCookies {
    /// `<session cookie>-login`; every login cookie's name starts with it.
    prefix: String,
}

/// The associated data of every login cookie: its purpose.
const PURPOSE: &str = "login-transaction";

impl LoginCookies {
    pub fn new(session_cookie: &str) -> Self {
        Self {
            prefix: format!("{session_cookie}-login"),
        }
    }

    /// The cookie name of the login whose `state` this is: the prefix, `-`, and 48 bits of
    /// SHA-256(state), base64url.
    pub fn name(&self, state: &str) -> String {
        let digest = Sha256::digest(state.as_bytes());
        format!(
            "{}-{}",
            self.prefix,
            URL_SAFE_NO_PAD.encode(digest.get(..6).unwrap_or_default())
        )
    }

    pub fn seal(&self, keys: &KeyRing, txn: &LoginTxn) -> Option<String> {
        let plain = zeroize::Zeroizing::new(serde_json::to_vec(txn).ok()?);
        Some(keys.seal(PURPOSE, &plain))
    }

    fn open_value(keys: &KeyRing, value: &str) -> Option<LoginTxn> {
        let plain = keys.open(PURPOSE, value)?;
        serde_json::from_slice::<LoginTxn>(&plain).ok()
    }

    /// The live transaction of `state`, from its own cookie; `None` when the browser has no
    /// such cookie, it does not open, it is another login's, or it expired.
    pub fn open(&self, keys: &KeyRing, jar: &Jar, state: &str) -> Option<LoginTxn> {
        let name = self.name(state);
        jar.login_cookies()
            .filter(|(n, _)| *n == name)
            .filter_map(|(_, value)| Self::open_value(keys, value))
            .find(|txn| txn.state.expose() == state && !txn.is_expired())
    }

    /// The login cookies to clear when a new login starts: every one that does not open as a
    /// live transaction under its own name (expired, foreign, from an older version), and the
    /// oldest live ones beyond [`MAX_PENDING_LOGINS`] − 1, so that with the new one there are
    /// at most [`MAX_PENDING_LOGINS`].
    pub fn to_drop<'j>(&self, keys: &KeyRing, jar: &'j Jar) -> Vec<&'j str> {
        let mut live: Vec<(i64, &str)> = Vec::new();
        let mut dead = Vec::new();
        for (name, value) in jar.login_cookies() {
            match Self::open_value(keys, value)
                .filter(|txn| !txn.is_expired() && self.name(txn.state.expose()) == name)
            {
                Some(txn) => live.push((txn.expires_at_ms, name)),
                None => dead.push(name),
            }
        }
        live.sort_unstable();
        let excess = (live.len() + 1).saturating_sub(MAX_PENDING_LOGINS);
        dead.extend(live.iter().take(excess).map(|(_, n)| *n));
        dead
    }
}
