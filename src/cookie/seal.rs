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
use zeroize::{Zeroize as _, Zeroizing};

/// Length of a key in the ring: AES-256.
pub const KEY_LEN: usize = 32;
/// Longest cookie name the config accepts (`session.cookie_name`).
pub const MAX_NAME_LEN: usize = 64;
const NONCE_LEN: usize = 12;
const TAG_LEN: usize = 16;
/// Format version, the first byte of every sealed value; bound into the associated data.
const VERSION: u8 = 1;
/// Longest cookie value we try to open (login cookies stay under 1 KB); anything larger is
/// not ours.
const MAX_SEALED_LEN: usize = 1536;
/// The most bytes a [`MAX_SEALED_LEN`] value decodes to.
const MAX_DECODED_LEN: usize = MAX_SEALED_LEN / 4 * 3;

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
        self.open_with(name, sealed, |plain| Some(Zeroizing::new(plain.to_vec())))
    }

    /// [`KeyRing::open`], handing the plaintext to `read` where it was decoded and opened (on
    /// the stack, wiped after): a session cookie, opened on every request, costs no
    /// allocation.
    pub fn open_with<T>(
        &self,
        name: &str,
        sealed: &str,
        read: impl FnOnce(&[u8]) -> Option<T>,
    ) -> Option<T> {
        if sealed.len() > MAX_SEALED_LEN {
            return None;
        }
        let mut buf = [0u8; MAX_DECODED_LEN];
        let decoded = URL_SAFE_NO_PAD
            .decode_slice(sealed.as_bytes(), &mut buf)
            .ok()?;
        let raw = &mut buf[..decoded];
        let result = open_in_place(&self.ciphers, name, raw).and_then(read);
        raw.zeroize();
        result
    }
}

/// Checks and decrypts `raw` (version ‖ nonce ‖ ciphertext ‖ tag) in place with the first key
/// that authenticates it; the plaintext, a part of `raw`.
fn open_in_place<'a>(ciphers: &[Aes256Gcm], name: &str, raw: &'a mut [u8]) -> Option<&'a [u8]> {
    if raw.first() != Some(&VERSION) || raw.len() < 1 + NONCE_LEN + TAG_LEN {
        return None;
    }
    let len = raw.len() - TAG_LEN;
    let (head, tag) = raw.split_at_mut(len);
    let (nonce, msg) = head[1..].split_at_mut(NONCE_LEN);
    let opened = with_associated_data(name, |aad| {
        // A key that does not authenticate leaves `msg` as it was (the tag is checked
        // before anything is decrypted), so the next key sees the same ciphertext.
        ciphers.iter().any(|cipher| {
            cipher
                .decrypt_in_place_detached(Nonce::from_slice(nonce), aad, msg, Tag::from_slice(tag))
                .is_ok()
        })
    });
    opened.then_some(&*msg)
}

/// What the associated data starts with: the format and its version, then the cookie's name.
const AAD_PREFIX: [u8; 12] = {
    let mut prefix = *b"gatehouse/?/";
    prefix[10] = VERSION;
    prefix
};

/// Runs `f` with the associated data for the cookie called `name`, built on the stack for
/// every name the config accepts.
fn with_associated_data<T>(name: &str, f: impl FnOnce(&[u8]) -> T) -> T {
    let mut buf = [0u8; AAD_PREFIX.len() + MAX_NAME_LEN];
    match buf.get_mut(..AAD_PREFIX.len() + name.len()) {
        Some(aad) => {
            let (prefix, rest) = aad.split_at_mut(AAD_PREFIX.len());
            prefix.copy_from_slice(&AAD_PREFIX);
            rest.copy_from_slice(name.as_bytes());
            f(aad)
        }
        None => f(&associated_data(name)),
    }
}

fn associated_data(name: &str) -> Vec<u8> {
    let mut aad = Vec::with_capacity(AAD_PREFIX.len() + name.len());
    aad.extend_from_slice(&AAD_PREFIX);
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

    #[test]
    fn a_name_too_long_for_the_stack_still_binds_the_value_to_it() {
        let r = ring(&[1]);
        // The longest name the config accepts (on the stack), and a longer one (not).
        for len in [MAX_NAME_LEN, 80] {
            let (name, other) = ("n".repeat(len), format!("{}m", "n".repeat(len - 1)));
            let sealed = r.seal(&name, b"v");
            assert_eq!(
                r.open(&name, &sealed).as_deref().map(Vec::as_slice),
                Some(&b"v"[..])
            );
            assert!(r.open(&other, &sealed).is_none(), "{len}");
        }
    }

    #[test]
    fn the_longest_value_accepted_opens_and_one_longer_does_not() {
        let r = ring(&[1]);
        // 1 + 12 + 1123 + 16 = 1152 bytes: 1536 characters of base64.
        let longest = r.seal("c", &[7u8; 1123]);
        assert_eq!(longest.len(), MAX_SEALED_LEN);
        assert_eq!(r.open("c", &longest).map(|p| p.len()), Some(1123));
        let longer = r.seal("c", &[7u8; 1124]);
        assert!(longer.len() > MAX_SEALED_LEN);
        assert!(r.open("c", &longer).is_none());
    }

    #[test]
    fn values_sealed_by_earlier_releases_still_open() {
        // The format as it has been since version 1: version ‖ nonce ‖ ciphertext ‖ tag, the
        // associated data "gatehouse/" ‖ version ‖ "/" ‖ name. Cookies in browsers outlive
        // an upgrade.
        let key = [3u8; KEY_LEN];
        let nonce = [9u8; NONCE_LEN];
        let ct = Aes256Gcm::new((&key).into())
            .encrypt(
                Nonce::from_slice(&nonce),
                Payload {
                    msg: b"kept",
                    aad: b"gatehouse/\x01/__Host-gatehouse",
                },
            )
            .unwrap();
        let sealed = URL_SAFE_NO_PAD.encode([&[1u8][..], &nonce, &ct].concat());
        let r = KeyRing::new(vec![key]);
        assert_eq!(
            r.open_with("__Host-gatehouse", &sealed, |p| Some(p.to_vec())),
            Some(b"kept".to_vec())
        );
    }
}
