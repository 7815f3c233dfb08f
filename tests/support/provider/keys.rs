//! The compiled-in RSA test keys (`tests/support/keys/`): two published, one attacker's.

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
}

impl Keys {
    pub(super) fn load() -> Result<Keys, String> {
        Ok(Keys {
            first: SigningKey::load(&KEY_1)?,
            second: SigningKey::load(&KEY_2)?,
            attacker: SigningKey::load(&ATTACKER_KEY)?,
        })
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
