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

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn keys() -> KeyRing {
        KeyRing::new(vec![[7; crate::cookie::KEY_LEN]])
    }

    fn txn(state: &str) -> LoginTxn {
        LoginTxn::new(
            Secret::new(state),
            Secret::new("verifier-verifier-verifier-verifier-verifier"),
            Secret::new("nonce-nonce-nonce"),
            "/app".into(),
        )
    }

    fn jar(cookies: &[(String, String)]) -> Jar {
        let header = cookies
            .iter()
            .map(|(n, v)| format!("{n}={v}"))
            .collect::<Vec<_>>()
            .join("; ");
        Jar::from_values(
            vec![HeaderValue::from_str(&header).unwrap()],
            &crate::cookie::CookieNames::new("__Host-g"),
        )
    }

    #[test]
    fn a_transaction_opens_only_for_its_own_state_and_name() {
        let (k, lc) = (keys(), LoginCookies::new("__Host-g"));
        let t = txn("state-one");
        let cookie = (lc.name("state-one"), lc.seal(&k, &t).unwrap());
        let opened = lc
            .open(&k, &jar(std::slice::from_ref(&cookie)), "state-one")
            .unwrap();
        assert_eq!(opened.return_to, "/app");
        assert!(
            lc.open(&k, &jar(std::slice::from_ref(&cookie)), "state-two")
                .is_none()
        );
        // Under the name of another state, the value does not open for that state either.
        let moved = (lc.name("state-two"), cookie.1);
        assert!(lc.open(&k, &jar(&[moved]), "state-two").is_none());
    }

    #[test]
    fn an_expired_transaction_does_not_open() {
        let (k, lc) = (keys(), LoginCookies::new("__Host-g"));
        let mut t = txn("s");
        t.expires_at_ms = now_ms() - 1;
        let cookie = (lc.name("s"), lc.seal(&k, &t).unwrap());
        assert!(lc.open(&k, &jar(&[cookie]), "s").is_none());
    }

    #[test]
    fn a_login_cookie_never_opens_as_a_session_cookie() {
        let k = keys();
        let sealed = LoginCookies::new("__Host-g").seal(&k, &txn("s")).unwrap();
        assert!(k.open("__Host-g", &sealed).is_none());
    }

    #[test]
    fn to_drop_keeps_the_newest_pending_logins_and_drops_garbage() {
        let (k, lc) = (keys(), LoginCookies::new("__Host-g"));
        let mut cookies: Vec<(String, String)> = (0..6)
            .map(|i| {
                let mut t = txn(&format!("state-{i}"));
                t.expires_at_ms += i64::from(i);
                (lc.name(&format!("state-{i}")), lc.seal(&k, &t).unwrap())
            })
            .collect();
        cookies.push(("__Host-g-login".into(), "from-an-older-version".into()));
        let j = jar(&cookies);
        let mut dropped = lc.to_drop(&k, &j);
        dropped.sort_unstable();
        let mut expected = vec![
            "__Host-g-login".to_owned(),
            lc.name("state-0"),
            lc.name("state-1"),
        ];
        expected.sort_unstable();
        assert_eq!(dropped, expected, "room for the new one: four kept");
    }

    #[test]
    fn debug_never_shows_the_state_verifier_or_nonce() {
        let shown = format!("{:?}", txn("the-state-value"));
        for secret in ["the-state-value", "verifier-verifier", "nonce-nonce"] {
            assert!(!shown.contains(secret), "{shown}");
        }
    }

    #[test]
    fn an_overlong_return_to_is_replaced_by_the_root() {
        let t = LoginTxn::new(
            Secret::new("s"),
            Secret::new("v"),
            Secret::new("n"),
            format!("/{}", "a".repeat(MAX_RETURN_TO)),
        );
        assert_eq!(t.return_to, "/");
    }
}
