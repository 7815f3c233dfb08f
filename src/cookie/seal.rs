//! AES-256-GCM sealing of cookie values with a key ring.
//!
//! Rules:
//! 1. Every seal draws a fresh random 96-bit nonce from the OS CSPRNG (never a counter or a
//!    static IV: CVE-2021-32791).
//! 2. The cookie's name is the associated data, so a value sealed for one cookie (the login
//!    binding) never opens as another (the session).
//! 3. The first key seals; every key opens, so keys rotate without logging anyone out.
//! 4. Anything that fails to decode or authenticate is `None`: "no cookie", never an error page.

use aes_gcm::aead::{Aead, AeadInPlace, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce, Tag};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use rand::RngCore;
use rand::rngs::OsRng;
use zeroize::Zeroizing;

/// Length of a key in the ring: AES-256.
pub const KEY_LEN: usize = 32;
const NONCE_LEN: usize = 12;
const TAG_LEN: usize = 16;
/// Format version, the first byte of every sealed value; bound into the associated data.
const VERSION: u8 = 1;
/// Longest cookie value we try to open (login cookies stay under 1 KB); anything larger is
/// not ours.
const MAX_SEALED_LEN: usize = 1536;

/// Session keys: the first seals, all open.
pub struct KeyRing {
    ciphers: Vec<Aes256Gcm>,
}

impl std::fmt::Debug for KeyRing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "KeyRing({} keys, redacted)", self.ciphers.len())
    }
}

impl KeyRing {
    pub fn new(keys: Vec<[u8; KEY_LEN]>) -> Self {
        let ciphers = keys
            .into_iter()
            .map(|k| {
                let k = Zeroizing::new(k);
                Aes256Gcm::new(k.as_ref().into())
            })
            .collect();
        Self { ciphers }
    }

    /// One fresh random key, for a single memory-store instance without configured keys.
    pub fn random() -> Self {
        Self::new(vec![random_key()])
    }

    /// Seals `plaintext` for the cookie called `name`: base64url(version ‖ nonce ‖ ciphertext ‖ tag).
    pub fn seal(&self, name: &str, plaintext: &[u8]) -> String {
        let Some(cipher) = self.ciphers.first() else {
            return String::new();
        };
        let mut out = Vec::with_capacity(1 + NONCE_LEN + plaintext.len() + TAG_LEN);
        out.push(VERSION);
        let mut nonce = [0u8; NONCE_LEN];
        OsRng.fill_bytes(&mut nonce);
        out.extend_from_slice(&nonce);
        let aad = associated_data(name);
        match cipher.encrypt(
            Nonce::from_slice(&nonce),
            Payload {
                msg: plaintext,
                aad: &aad,
            },
        ) {
            Ok(ct) => out.extend_from_slice(&ct),
            // AES-GCM only fails on inputs of gigabytes; an empty value opens as "no cookie".
            Err(_) => return String::new(),
        }
        URL_SAFE_NO_PAD.encode(out)
    }

    /// Opens a value sealed by [`KeyRing::seal`] for the same cookie name with any key of the ring.
    pub fn open(&self, name: &str, sealed: &str) -> Option<Zeroizing<Vec<u8>>> {
        if sealed.len() > MAX_SEALED_LEN {
            return None;
        }
        // Opened where it was decoded: no second buffer for the plaintext.
        let mut raw = Zeroizing::new(URL_SAFE_NO_PAD.decode(sealed.as_bytes()).ok()?);
        if raw.first() != Some(&VERSION) || raw.len() < 1 + NONCE_LEN + TAG_LEN {
            return None;
        }
        let aad = associated_data(name);
        let len = raw.len() - TAG_LEN;
        let (head, tag) = raw.split_at_mut(len);
        let (nonce, msg) = head[1..].split_at_mut(NONCE_LEN);
        // A key that does not authenticate leaves `msg` as it was (the tag is checked
        // before anything is decrypted), so the next key sees the same ciphertext.
        let opened = self.ciphers.iter().any(|cipher| {
            cipher
                .decrypt_in_place_detached(
                    Nonce::from_slice(nonce),
                    &aad,
                    msg,
                    Tag::from_slice(tag),
                )
                .is_ok()
        });
        if !opened {
            return None;
        }
        raw.truncate(len);
        raw.drain(..1 + NONCE_LEN);
        Some(raw)
    }
}

fn associated_data(name: &str) -> Vec<u8> {
    let mut aad = Vec::with_capacity(name.len() + 12);
    aad.extend_from_slice(b"gatehouse/");
    aad.push(VERSION);
    aad.push(b'/');
    aad.extend_from_slice(name.as_bytes());
    aad
}

/// A fresh 256-bit key from the OS CSPRNG.
pub fn random_key() -> [u8; KEY_LEN] {
    let mut k = [0u8; KEY_LEN];
    OsRng.fill_bytes(&mut k);
    k
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ring(keys: &[u8]) -> KeyRing {
        KeyRing::new(keys.iter().map(|b| [*b; KEY_LEN]).collect())
    }

    #[test]
    fn sealed_value_opens_with_the_same_name_only() {
        let r = ring(&[1]);
        let sealed = r.seal("__Host-gatehouse", b"session-id");
        assert_eq!(
            r.open("__Host-gatehouse", &sealed)
                .as_deref()
                .map(Vec::as_slice),
            Some(&b"session-id"[..])
        );
        assert!(r.open("__Host-gatehouse-login", &sealed).is_none());
    }

    #[test]
    fn cookie_sealed_with_old_key_still_opens_after_rotation() {
        let old = ring(&[1]);
        let sealed = old.seal("c", b"v");
        let rotated = ring(&[2, 1]);
        assert!(rotated.open("c", &sealed).is_some());
        let fresh = rotated.seal("c", b"v");
        assert!(
            old.open("c", &fresh).is_none(),
            "the first key of the ring seals"
        );
        assert!(
            ring(&[2]).open("c", &sealed).is_none(),
            "a removed key no longer opens"
        );
    }

    #[test]
    fn every_seal_uses_a_fresh_nonce() {
        let r = ring(&[1]);
        let a = r.seal("c", b"same");
        let b = r.seal("c", b"same");
        assert_ne!(a, b);
        let raw_a = URL_SAFE_NO_PAD.decode(&a).unwrap();
        let raw_b = URL_SAFE_NO_PAD.decode(&b).unwrap();
        assert_ne!(raw_a[1..13], raw_b[1..13]);
    }

    #[test]
    fn tampered_truncated_or_garbage_values_open_as_nothing() {
        let r = ring(&[1]);
        let sealed = r.seal("c", b"0123456789abcdef");
        let mut raw = URL_SAFE_NO_PAD.decode(&sealed).unwrap();
        for i in 0..raw.len() {
            raw[i] ^= 0x01;
            assert!(
                r.open("c", &URL_SAFE_NO_PAD.encode(&raw)).is_none(),
                "flipped byte {i}"
            );
            raw[i] ^= 0x01;
        }
        assert!(
            r.open("c", &URL_SAFE_NO_PAD.encode(&raw[..raw.len() - 1]))
                .is_none()
        );
        for junk in ["", "=", "AAAA", "not base64!", &"A".repeat(8192)] {
            assert!(r.open("c", junk).is_none(), "{junk:.20}");
        }
    }
}
