//! The session record and the login transaction, and how both are encrypted at rest.
//!
//! Rules:
//! 1. A record is sealed with AES-256-GCM under a per-record key that only the browser's cookie
//!    carries, so a dump of the store reveals no token.
//! 2. The store key is the associated data: a record moved to another key does not open.
//! 3. Store keys are derived from the session id by SHA-256, never from the cookie text.

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use rand::RngCore;
use rand::rngs::OsRng;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

use crate::secret::Secret;

pub const ID_LEN: usize = 16;
pub const RECORD_KEY_LEN: usize = 32;
const NONCE_LEN: usize = 12;

/// What the session cookie carries (sealed): the session id and the record key.
#[derive(Clone)]
pub struct CookieSecret {
    pub id: [u8; ID_LEN],
    pub record_key: Zeroizing<[u8; RECORD_KEY_LEN]>,
}

impl CookieSecret {
    pub fn random() -> Self {
        let mut id = [0u8; ID_LEN];
        OsRng.fill_bytes(&mut id);
        let mut record_key = Zeroizing::new([0u8; RECORD_KEY_LEN]);
        OsRng.fill_bytes(record_key.as_mut());
        Self { id, record_key }
    }

    pub fn to_bytes(&self) -> Zeroizing<Vec<u8>> {
        let mut v = Zeroizing::new(Vec::with_capacity(ID_LEN + RECORD_KEY_LEN));
        v.extend_from_slice(&self.id);
        v.extend_from_slice(self.record_key.as_ref());
        v
    }

    pub fn from_bytes(b: &[u8]) -> Option<Self> {
        if b.len() != ID_LEN + RECORD_KEY_LEN {
            return None;
        }
        let (id, key) = b.split_at(ID_LEN);
        let mut record_key = Zeroizing::new([0u8; RECORD_KEY_LEN]);
        record_key.copy_from_slice(key);
        Some(Self {
            id: id.try_into().ok()?,
            record_key,
        })
    }
}

/// `prefix` + `kind` + hex(SHA-256(id)).
pub fn store_key(prefix: &str, kind: &str, id: &[u8]) -> String {
    let digest = Sha256::digest(id);
    let mut key = String::with_capacity(prefix.len() + kind.len() + 64);
    key.push_str(prefix);
    key.push_str(kind);
    push_hex(&mut key, &digest);
    key
}

/// Appends `bytes` as lowercase hex: one pass over a table, not a trip through the
/// formatting machinery per byte.
pub fn push_hex(out: &mut String, bytes: &[u8]) {
    // Through a small buffer, appended as one string: a `push` per digit checks the
    // capacity and encodes a char each time.
    let mut digits = [0u8; 64];
    for chunk in bytes.chunks(digits.len() / 2) {
        let hex = &mut digits[..chunk.len() * 2];
        write_hex(hex, chunk);
        out.push_str(std::str::from_utf8(hex).unwrap_or_default());
    }
}

/// Writes `bytes` as lowercase hex into the first `2 * bytes.len()` bytes of `out` (as many
/// as fit).
pub fn write_hex(out: &mut [u8], bytes: &[u8]) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    for (pair, &b) in out.chunks_exact_mut(2).zip(bytes) {
        pair[0] = HEX[usize::from(b >> 4)];
        pair[1] = HEX[usize::from(b & 0xf)];
    }
}

/// Serializes and seals `value` for `store_key`: nonce ‖ ciphertext ‖ tag.
pub fn seal<T: Serialize>(
    key: &[u8; RECORD_KEY_LEN],
    store_key: &str,
    value: &T,
) -> Option<Vec<u8>> {
    let plain = Zeroizing::new(serde_json::to_vec(value).ok()?);
    let cipher = Aes256Gcm::new(key.into());
    let mut nonce = [0u8; NONCE_LEN];
    OsRng.fill_bytes(&mut nonce);
    let ct = cipher
        .encrypt(
            Nonce::from_slice(&nonce),
            Payload {
                msg: &plain,
                aad: store_key.as_bytes(),
            },
        )
        .ok()?;
    let mut out = Vec::with_capacity(NONCE_LEN + ct.len());
    out.extend_from_slice(&nonce);
    out.extend_from_slice(&ct);
    Some(out)
}

/// Opens a value sealed by [`seal`]; `None` when the key is wrong or the bytes were altered.
pub fn open<T: DeserializeOwned>(
    key: &[u8; RECORD_KEY_LEN],
    store_key: &str,
    sealed: &[u8],
) -> Option<T> {
    if sealed.len() < NONCE_LEN {
        return None;
    }
    let (nonce, ct) = sealed.split_at(NONCE_LEN);
    let cipher = Aes256Gcm::new(key.into());
    let plain = Zeroizing::new(
        cipher
            .decrypt(
                Nonce::from_slice(nonce),
                Payload {
                    msg: ct,
                    aad: store_key.as_bytes(),
                },
            )
            .ok()?,
    );
    serde_json::from_slice(&plain).ok()
}

/// The tokens of one session. Never serialized anywhere but into a sealed record.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Tokens {
    pub access_token: Secret,
    /// Unix milliseconds when the access token was obtained (milliseconds, so that short
    /// lifetimes are planned exactly; a record without it reads as expired and refreshes).
    #[serde(default)]
    pub issued_at_ms: i64,
    /// Unix milliseconds; the provider's `expires_in` after the exchange, or a default.
    #[serde(default)]
    pub access_expires_at_ms: i64,
    pub refresh_token: Option<Secret>,
    pub id_token: Option<Secret>,
    /// `Authorization` for the upstream, made from `access_token` at most once per opened
    /// record (see [`Tokens::bearer`]).
    #[serde(skip)]
    pub bearer: Bearer,
}

impl Tokens {
    /// `Bearer <access_token>` as a sensitive header value; `None` when the token cannot be
    /// one. Made once and kept with these tokens; a kept value is used only while it still
    /// carries `access_token`, so changing the token can never send the old one.
    pub fn bearer(&self) -> Option<http::HeaderValue> {
        const SCHEME: &[u8] = b"Bearer ";
        let token = self.access_token.expose().as_bytes();
        if let Some(kept) = self.bearer.0.get()
            && kept.as_bytes().strip_prefix(SCHEME) == Some(token)
        {
            return Some(kept.clone());
        }
        let mut value = Vec::with_capacity(SCHEME.len() + token.len());
        value.extend_from_slice(SCHEME);
        value.extend_from_slice(token);
        let mut value = http::HeaderValue::from_maybe_shared(bytes::Bytes::from(value)).ok()?;
        value.set_sensitive(true);
        // Taken already (by a value for an older token): this one is still right to send.
        let _ = self.bearer.0.set(value.clone());
        Some(value)
    }
}

/// See [`Tokens::bearer`]. Never shows its value.
#[derive(Clone, Default)]
pub struct Bearer(std::sync::OnceLock<http::HeaderValue>);

impl std::fmt::Debug for Bearer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Bearer([redacted])")
    }
}

/// A logged-in browser. Lives in the store, sealed; the cookie holds the only key.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Session {
    /// Public random handle (not the session id): put in logout URLs so a cross-site page,
    /// which cannot read it, cannot log the user out.
    pub handle: Secret,
    pub sub: String,
    /// The provider's session id (`sid` claim), for back-channel logout.
    pub sid: Option<String>,
    /// The ID token's user claims, shown to the SPA by `/auth/user`.
    pub claims: serde_json::Map<String, serde_json::Value>,
    /// The login ID token's `aud` and `auth_time`: a refreshed ID token must keep them
    /// (OIDC Core §12.2).
    #[serde(default)]
    pub aud: Vec<String>,
    #[serde(default)]
    pub auth_time: Option<i64>,
    pub tokens: Tokens,
    /// Bumped by every token write: a refresh that started from an older version never lands.
    #[serde(default)]
    pub token_version: u64,
    /// A refresh in progress: only its holder presents the refresh token until it expires.
    #[serde(default)]
    pub refresh_claim: Option<RefreshClaim>,
    /// Unix milliseconds (milliseconds, so that short idle timeouts are exact).
    pub created_at_ms: i64,
    pub last_seen_ms: i64,
    /// Absolute end (created_at + max_lifetime), unix milliseconds.
    pub expires_at_ms: i64,
}

/// Who is refreshing a session's tokens, and until when. Written into the record itself by
/// compare-and-set, so two instances can never both hold it, on any store topology.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RefreshClaim {
    pub owner: String,
    /// Unix milliseconds after which another instance may take over.
    pub until_ms: i64,
}

pub fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// 128 random bits, base64url.
pub fn random_token() -> String {
    use base64::Engine as _;
    let mut b = [0u8; 16];
    OsRng.fill_bytes(&mut b);
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tokens(access: &str) -> Tokens {
        Tokens {
            access_token: Secret::new(access),
            issued_at_ms: 0,
            access_expires_at_ms: 0,
            refresh_token: None,
            id_token: None,
            bearer: Default::default(),
        }
    }

    #[test]
    fn the_bearer_is_made_once_per_record_and_marked_sensitive() {
        let t = tokens("at-1");
        let first = t.bearer().unwrap();
        assert_eq!(first, "Bearer at-1");
        assert!(first.is_sensitive());
        let again = t.bearer().unwrap();
        assert_eq!(
            again.as_bytes().as_ptr(),
            first.as_bytes().as_ptr(),
            "not made again"
        );
        let copy = t.clone();
        assert_eq!(
            copy.bearer().unwrap().as_bytes().as_ptr(),
            first.as_bytes().as_ptr()
        );
    }

    #[test]
    fn a_changed_access_token_never_sends_the_kept_bearer() {
        let mut t = tokens("at-1");
        assert_eq!(t.bearer().unwrap(), "Bearer at-1");
        t.access_token = Secret::new("at-2");
        assert_eq!(t.bearer().unwrap(), "Bearer at-2");
        let mut shorter = t.clone();
        shorter.access_token = Secret::new("at-");
        assert_eq!(shorter.bearer().unwrap(), "Bearer at-");
    }

    #[test]
    fn a_token_that_cannot_be_a_header_value_gives_no_bearer() {
        for bad in ["at\nX-Injected: 1", "at\r", "at\u{0}", "at\u{7f}"] {
            assert!(tokens(bad).bearer().is_none(), "{bad:?}");
        }
        assert!(tokens("eyJ.a-b_c~+/=").bearer().is_some());
    }

    #[test]
    fn record_opens_only_with_its_key_and_store_key() {
        let k = [7u8; RECORD_KEY_LEN];
        let sealed = seal(&k, "s:1", &"hello").unwrap();
        assert_eq!(open::<String>(&k, "s:1", &sealed).as_deref(), Some("hello"));
        assert!(open::<String>(&k, "s:2", &sealed).is_none());
        assert!(open::<String>(&[8u8; RECORD_KEY_LEN], "s:1", &sealed).is_none());
        assert!(!String::from_utf8_lossy(&sealed).contains("hello"));
    }

    #[test]
    fn debug_of_a_session_never_shows_a_token_or_the_logout_handle() {
        let tokens = Tokens {
            access_token: Secret::new("access-token-value"),
            issued_at_ms: 0,
            access_expires_at_ms: 0,
            refresh_token: Some(Secret::new("refresh-token-value")),
            id_token: Some(Secret::new("id-token-value")),
            bearer: Default::default(),
        };
        let session = Session {
            handle: Secret::new("logout-handle-value"),
            sub: "alice".into(),
            sid: None,
            claims: serde_json::Map::new(),
            aud: Vec::new(),
            auth_time: None,
            tokens,
            token_version: 0,
            refresh_claim: None,
            created_at_ms: 0,
            last_seen_ms: 0,
            expires_at_ms: 0,
        };
        assert!(
            session.tokens.bearer().is_some(),
            "the kept bearer is shown too"
        );
        let shown = format!("{session:?}");
        for secret in [
            "access-token-value",
            "refresh-token-value",
            "id-token-value",
            "logout-handle-value",
        ] {
            assert!(!shown.contains(secret), "{secret} in {shown}");
        }
    }

    #[test]
    fn hex_is_two_lowercase_digits_per_byte_however_many_bytes() {
        let bytes: Vec<u8> = (0..=255).collect();
        let mut out = String::from("x:");
        push_hex(&mut out, &bytes);
        let expected: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(out, format!("x:{expected}"));
    }

    #[test]
    fn store_key_is_a_hash_not_the_id() {
        let k = store_key("p:", "s:", b"abc");
        assert!(k.starts_with("p:s:") && k.len() == 4 + 64);
        assert!(!k.contains("abc"));
        // SHA-256("abc"), lowercase hex: keys written by earlier versions still match.
        assert_eq!(
            &k[4..],
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }
}
