//! The compiled-in RSA test keys (`tests/support/keys/`): two published, one attacker's; and
//! two P-256 keys for the ES256 shape, derived from fixed labels (public test fixtures too).

use openidconnect::JsonWebKeyId;
use openidconnect::core::{CoreJwsSigningAlgorithm, CoreRsaPrivateSigningKey};

pub(super) const RS256: CoreJwsSigningAlgorithm = CoreJwsSigningAlgorithm::RsaSsaPkcs1V15Sha256;

const KEY_1: KeyFile = KeyFile {
    kid: "key-1",
    private_pem: include_str!("../keys/rsa1.pem"),
    public_pem: include_str!("../keys/rsa1.pub.pem"),
};
const KEY_2: KeyFile = KeyFile {
    kid: "key-2",
    private_pem: include_str!("../keys/rsa2.pem"),
    public_pem: include_str!("../keys/rsa2.pub.pem"),
};
/// Never published: signs the unknown-`kid` and embedded-`jwk` attacks.
const ATTACKER_KEY: KeyFile = KeyFile {
    kid: "attacker",
    private_pem: include_str!("../keys/rsa3.pem"),
    public_pem: include_str!("../keys/rsa3.pub.pem"),
};

pub(super) struct Keys {
    pub(super) first: SigningKey,
    pub(super) second: SigningKey,
    pub(super) attacker: SigningKey,
    pub(super) ec_first: EcKey,
    pub(super) ec_second: EcKey,
}

impl Keys {
    pub(super) fn load() -> Result<Keys, String> {
        Ok(Keys {
            first: SigningKey::load(&KEY_1)?,
            second: SigningKey::load(&KEY_2)?,
            attacker: SigningKey::load(&ATTACKER_KEY)?,
            ec_first: EcKey::derive("ec-1")?,
            ec_second: EcKey::derive("ec-2")?,
        })
    }
}

/// A P-256 key whose scalar is SHA-256 of its label.
pub(super) struct EcKey {
    pub(super) kid: &'static str,
    pub(super) private: p256::ecdsa::SigningKey,
}

impl EcKey {
    fn derive(kid: &'static str) -> Result<EcKey, String> {
        use sha2::Digest as _;
        let scalar = sha2::Sha256::digest(format!("gatehouse test key {kid}").as_bytes());
        let private = p256::ecdsa::SigningKey::from_slice(&scalar).map_err(|e| e.to_string())?;
        Ok(EcKey { kid, private })
    }

    /// The public JWK members `x` and `y` (base64url of the affine coordinates).
    pub(super) fn coordinates(&self) -> (String, String) {
        use base64::Engine as _;
        let b64 = |b: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b);
        let point = self.private.verifying_key().to_sec1_point(false);
        let bytes = point.as_bytes();
        // Uncompressed SEC1: 0x04 ‖ x (32 bytes) ‖ y (32 bytes).
        (
            b64(bytes.get(1..33).unwrap_or_default()),
            b64(bytes.get(33..65).unwrap_or_default()),
        )
    }
}

/// A compiled-in PKCS#1 key pair (the PEM form `CoreRsaPrivateSigningKey::from_pem` reads).
struct KeyFile {
    kid: &'static str,
    private_pem: &'static str,
    public_pem: &'static str,
}

pub(super) struct SigningKey {
    pub(super) kid: &'static str,
    pub(super) private: CoreRsaPrivateSigningKey,
    pub(super) public_pem: &'static str,
}

impl SigningKey {
    fn load(file: &KeyFile) -> Result<SigningKey, String> {
        let kid = Some(JsonWebKeyId::new(file.kid.to_owned()));
        let private = CoreRsaPrivateSigningKey::from_pem(file.private_pem, kid)?;
        let (kid, public_pem) = (file.kid, file.public_pem);
        Ok(SigningKey {
            kid,
            private,
            public_pem,
        })
    }
}
