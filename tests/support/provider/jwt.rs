//! ID tokens and compact JWS crafting, honest or tampered as the misbehaviour switches say.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::Mac as _;
use openidconnect::PrivateSigningKey as _;
use openidconnect::core::{CoreJwsSigningAlgorithm, CoreRsaPrivateSigningKey};
use serde_json::{Value, json};
use sha2::{Digest as _, Sha256};

use super::keys::RS256;
use super::layout::Shape;
use super::options::{Audience, Members, Misbehave, Signing};
use super::state::{Login, Shared, unix_now};
use super::{EVIL_ISSUER, OTHER_CLIENT, UNKNOWN_KID};

impl Shared {
    pub(super) fn id_token(
        &self,
        login: &Login,
        nonce: Option<&str>,
        access_token: &str,
        m: &Misbehave,
    ) -> String {
        let now = unix_now();
        let (expires, expired) = (
            now + self.opts.id_token_ttl.as_secs(),
            now.saturating_sub(600),
        );
        let day_ago = now.saturating_sub(86_400);
        let client = self.opts.client_id.as_str();
        let mut c = Members::default();
        c.knob("iss", &m.iss, self.issuer.as_str(), EVIL_ISSUER);
        c.knob("sub", &m.sub, login.sub.as_str(), "mallory");
        let both = || json!([client, OTHER_CLIENT]);
        // Refresh responses (no nonce) may carry another audience than the login's.
        let aud = if nonce.is_none() && m.refresh_aud != Audience::Honest {
            &m.refresh_aud
        } else {
            &m.aud
        };
        match aud {
            // Older servers write even a single audience as an array.
            Audience::Honest if self.opts.shape == Shape::LegacyPs256 => {
                c.put("aud", json!([client]))
            }
            Audience::Honest if self.opts.shape == Shape::Google => {
                c.put("aud", client);
                c.put("azp", client);
            }
            Audience::Honest => c.put("aud", client),
            Audience::Missing => {}
            Audience::Wrong => c.put("aud", OTHER_CLIENT),
            Audience::ExtraWithoutAzp => c.put("aud", both()),
            Audience::ExtraWithForeignAzp => {
                c.put("aud", both());
                c.put("azp", OTHER_CLIENT);
            }
            Audience::ExtraWithOurAzp => {
                c.put("aud", both());
                c.put("azp", client);
            }
            Audience::ForeignAzp => {
                c.put("aud", client);
                c.put("azp", OTHER_CLIENT);
            }
            Audience::Value(v) => c.put("aud", v.clone()),
        }
        c.knob("exp", &m.exp, expires, expired);
        c.knob("iat", &m.iat, now, day_ago);
        if let Some(nonce) = nonce {
            c.knob("nonce", &m.nonce, nonce, "not-the-nonce");
        }
        c.knob("auth_time", &m.auth_time, login.auth_time, now + 1);
        c.put("sid", login.sid.as_str());
        c.put("email", login.email.as_str());
        c.put("email_verified", true);
        c.knob("name", &m.name, login.name.as_str(), "Renamed Example");
        let digest = Sha256::digest(access_token.as_bytes());
        c.put(
            "at_hash",
            URL_SAFE_NO_PAD.encode(digest.get(..16).unwrap_or_default()),
        );
        self.sign_id_token(m.signing, &c.into_value())
    }

    /// The shape's own signing: algorithm, `kid` (if the shape uses them) and signer.
    pub(super) fn honest_signer(&self) -> (&'static str, Option<&'static str>, Signer<'_>) {
        let shape = self.opts.shape;
        let alg = shape.alg();
        let (kid, signer) = match alg {
            "ES256" => {
                let key = self.current_ec_key();
                (key.kid, Signer::Ec(&key.private))
            }
            "PS256" => {
                let key = self.current_key();
                let pss = CoreJwsSigningAlgorithm::RsaSsaPssSha256;
                (key.kid, Signer::Rsa(&key.private, pss))
            }
            _ => {
                let key = self.current_key();
                (key.kid, Signer::Rsa(&key.private, RS256))
            }
        };
        (alg, shape.uses_kid().then_some(kid), signer)
    }

    /// A JWS of `claims` signed the shape's way, with header `typ`.
    pub(super) fn sign_honestly(&self, typ: &str, claims: &Value) -> String {
        let (alg, kid, signer) = self.honest_signer();
        let mut header = json!({ "alg": alg, "typ": typ });
        if let (Some(kid), Value::Object(h)) = (kid, &mut header) {
            h.insert("kid".into(), json!(kid));
        }
        jws(&header, claims, signer)
    }

    fn sign_id_token(&self, signing: Signing, claims: &Value) -> String {
        let key = self.current_key();
        let attacker = &self.keys.attacker.private;
        let header = |alg: &str| json!({ "alg": alg, "typ": "JWT", "kid": key.kid });
        match signing {
            Signing::Honest => self.sign_honestly("JWT", claims),
            Signing::NoKid => {
                let (alg, _, signer) = self.honest_signer();
                jws(&json!({ "alg": alg, "typ": "JWT" }), claims, signer)
            }
            Signing::FlippedByte => flip_signature_byte(&self.sign_honestly("JWT", claims)),
            Signing::AlgNone => {
                let header = json!({ "alg": "none", "typ": "JWT" });
                format!("{}.{}.", encode_json(&header), encode_json(claims))
            }
            Signing::Hs256WithPublicKey => jws(
                &header("HS256"),
                claims,
                Signer::Hmac(key.public_pem.as_bytes()),
            ),
            Signing::Ps256 => {
                let pss = Signer::Rsa(&key.private, CoreJwsSigningAlgorithm::RsaSsaPssSha256);
                jws(&header("PS256"), claims, pss)
            }
            Signing::UnknownKid => {
                let header = json!({ "alg": "RS256", "typ": "JWT", "kid": UNKNOWN_KID });
                jws(&header, claims, Signer::Rsa(attacker, RS256))
            }
            Signing::EmbeddedJwk => {
                let jwk = serde_json::to_value(attacker.as_verification_key()).unwrap_or_default();
                let kid = self.keys.attacker.kid;
                let header = json!({ "alg": "RS256", "typ": "JWT", "kid": kid, "jwk": jwk });
                jws(&header, claims, Signer::Rsa(attacker, RS256))
            }
        }
    }

    /// Auth0's access token for an API `audience`: a JWT instead of an opaque string.
    pub(super) fn access_jwt(&self, login: &Login, audience: &str, scope: &str) -> String {
        let now = unix_now();
        let claims = json!({
            "iss": self.issuer,
            "sub": login.sub,
            "aud": audience,
            "azp": self.opts.client_id,
            "iat": now,
            "exp": now + self.opts.access_token_ttl.as_secs(),
            "scope": scope,
            // Unique per token, so two tokens minted in the same second differ.
            "jti": super::state::random_token(),
        });
        self.sign_honestly("at+jwt", &claims)
    }
}

pub(super) enum Signer<'a> {
    Rsa(&'a CoreRsaPrivateSigningKey, CoreJwsSigningAlgorithm),
    Ec(&'a p256::ecdsa::SigningKey),
    Hmac(&'a [u8]),
}

/// Compact JWS over `header` and `claims` exactly as given.
#[expect(
    clippy::expect_used,
    reason = "RSA signing with a parsed 2048-bit key and HMAC keying cannot fail (ECDSA signing has no error)"
)]
pub(super) fn jws(header: &Value, claims: &Value, signer: Signer<'_>) -> String {
    let input = format!("{}.{}", encode_json(header), encode_json(claims));
    let signature = match signer {
        Signer::Rsa(key, alg) => key.sign(&alg, input.as_bytes()).expect("RSA signing"),
        Signer::Ec(key) => {
            use p256::ecdsa::signature::Signer as _;
            let signature: p256::ecdsa::Signature = key.sign(input.as_bytes());
            signature.to_bytes().to_vec()
        }
        Signer::Hmac(secret) => {
            let mut mac =
                hmac::Hmac::<Sha256>::new_from_slice(secret).expect("HMAC accepts any key");
            mac.update(input.as_bytes());
            mac.finalize().into_bytes().to_vec()
        }
    };
    format!("{input}.{}", URL_SAFE_NO_PAD.encode(signature))
}

fn flip_signature_byte(jwt: &str) -> String {
    let Some((input, signature)) = jwt.rsplit_once('.') else {
        return jwt.to_owned();
    };
    let mut bytes = URL_SAFE_NO_PAD.decode(signature).unwrap_or_default();
    let middle = bytes.len() / 2;
    if let Some(byte) = bytes.get_mut(middle) {
        *byte ^= 0x01;
    }
    format!("{input}.{}", URL_SAFE_NO_PAD.encode(bytes))
}

fn encode_json(value: &Value) -> String {
    URL_SAFE_NO_PAD.encode(value.to_string())
}

pub(super) fn decode_json(segment: &str) -> Option<Value> {
    let bytes = URL_SAFE_NO_PAD.decode(segment).ok()?;
    serde_json::from_slice(&bytes).ok()
}
