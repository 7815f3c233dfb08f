//! How the provider is set up, the runtime misbehaviour switches, and what it counts.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{Map, Value};

use super::layout::Shape;
use super::state::lock;

/// How the provider is set up; fixed for its lifetime (misbehaviour is switched via [`Behaviour`]).
#[derive(Clone, Debug)]
pub struct ProviderOptions {
    /// The one registered client.
    pub client_id: String,
    pub client_secret: String,
    /// Lifetime of access tokens; `expires_in` reports it in whole seconds.
    pub access_token_ttl: Duration,
    /// `exp - iat` of ID tokens.
    pub id_token_ttl: Duration,
    /// Each refresh token is single-use and a reused one revokes its grant. Without rotation the
    /// refresh token stays valid and refresh responses carry none.
    pub refresh_rotation: bool,
    /// RFC 9207: advertise and send `iss` in authorization responses.
    pub iss_parameter_supported: bool,
    /// Demo mode: `GET /authorize` shows a sign-in form; its POST approves.
    pub interactive: bool,
    /// Delay of every token endpoint answer, after the grant was processed (slow-provider tests).
    pub token_delay: Duration,
    /// Which real provider to imitate (paths, discovery, token quirks, key type).
    pub shape: Shape,
    /// `Cache-Control: max-age` on the discovery and JWKS answers; none when unset.
    pub metadata_max_age: Option<Duration>,
    /// Serve https with a fresh self-signed certificate for `localhost` (the issuer is then
    /// `https://localhost:PORT…`); see [`super::TestProvider::ca_pem`].
    pub tls: bool,
}

impl ProviderOptions {
    /// The defaults, in `shape`.
    pub fn shaped(shape: Shape) -> Self {
        Self {
            shape,
            ..Self::default()
        }
    }
}

impl Default for ProviderOptions {
    fn default() -> Self {
        Self {
            client_id: "bff".to_owned(),
            client_secret: "bff-secret".to_owned(),
            access_token_ttl: Duration::from_secs(300),
            id_token_ttl: Duration::from_secs(600),
            refresh_rotation: true,
            iss_parameter_supported: true,
            interactive: false,
            token_delay: Duration::ZERO,
            shape: Shape::Standard,
            metadata_max_age: None,
            tls: false,
        }
    }
}

/// How one value the provider emits is tampered with.
#[derive(Clone, Debug, Default, PartialEq)]
pub enum Override {
    /// The correct value.
    #[default]
    Honest,
    /// Left out entirely.
    Missing,
    /// A plausible wrong value (each knob's doc says which).
    Wrong,
    /// Exactly this JSON value (strings are used as-is in query parameters).
    Value(Value),
}

/// The ID token's `aud` (and `azp`).
#[derive(Clone, Debug, Default, PartialEq)]
pub enum Audience {
    /// `aud` = our client id, no `azp`.
    #[default]
    Honest,
    Missing,
    /// `aud` = [`OTHER_CLIENT`] only.
    Wrong,
    /// `aud` = [client id, [`OTHER_CLIENT`]], no `azp`.
    ExtraWithoutAzp,
    /// `aud` = [client id, [`OTHER_CLIENT`]], `azp` = [`OTHER_CLIENT`].
    ExtraWithForeignAzp,
    /// `aud` = [client id, [`OTHER_CLIENT`]], `azp` = client id.
    ExtraWithOurAzp,
    /// `aud` = client id, `azp` = [`OTHER_CLIENT`].
    ForeignAzp,
    Value(Value),
}

/// How the ID token is signed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Signing {
    /// RS256 with the current key and its `kid`.
    #[default]
    Honest,
    /// RS256 with the current key, no `kid` header.
    NoKid,
    /// Honest, then one signature byte flipped.
    FlippedByte,
    /// Header `{"alg":"none"}`, empty signature.
    AlgNone,
    /// HS256 keyed with the current RSA public key's PEM text (key confusion), current `kid`.
    Hs256WithPublicKey,
    /// PS256 with the current key: valid, but not an algorithm the discovery document allows.
    Ps256,
    /// RS256 with an attacker key under [`UNKNOWN_KID`], which no JWKS ever contains.
    UnknownKid,
    /// RS256 with the attacker key whose public half rides along in a `jwk` header.
    EmbeddedJwk,
}

/// A forced token endpoint failure.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TokenFault {
    /// 500 `{"error":"server_error"}`.
    ServerError,
    /// 400 `{"error":"invalid_grant"}` (no state changes).
    InvalidGrant,
}

/// Runtime misbehaviour switches. `Default` is an honest provider.
#[derive(Clone, Debug, Default)]
pub struct Misbehave {
    // ID tokens (every one issued while set).
    /// `iss`; Wrong = [`EVIL_ISSUER`].
    pub iss: Override,
    pub aud: Audience,
    /// `sub`; Wrong = "mallory".
    pub sub: Override,
    /// `exp`; Wrong = ten minutes ago.
    pub exp: Override,
    /// `iat`; Wrong = one day ago.
    pub iat: Override,
    /// `nonce` (code exchange only; refresh ID tokens carry none); Wrong = "not-the-nonce".
    pub nonce: Override,
    /// `auth_time`; Honest = when the user signed in, Wrong = a second after now.
    pub auth_time: Override,
    /// `name`; Wrong = "Renamed Example" (a profile change the next ID token reports).
    pub name: Override,
    /// `aud` of refreshed ID tokens only (after a refresh grant); Honest = as at login.
    pub refresh_aud: Audience,
    pub signing: Signing,

    // Authorization response.
    /// RFC 9207 `iss` parameter; Honest follows `iss_parameter_supported`; Wrong = [`EVIL_ISSUER`].
    pub authz_iss: Override,
    /// Answer `error=access_denied&error_description=…` instead of a code.
    pub authz_denied: bool,
    /// Append a second, forged `code` parameter.
    pub duplicate_code: bool,
    /// Append a second, forged `state` parameter.
    pub duplicate_state: bool,

    // Discovery and keys.
    /// The document's `issuer`; Wrong = [`EVIL_ISSUER`].
    pub discovery_issuer: Override,
    /// The JWKS endpoint answers 500.
    pub jwks_fault: bool,

    // Token endpoint.
    pub code_fault: Option<TokenFault>,
    pub refresh_fault: Option<TokenFault>,
    /// Responses carry no `refresh_token`; a refresh then leaves the presented one valid.
    pub omit_refresh_token: bool,
    /// `token_type`; Honest = "Bearer", Wrong = "mac".
    pub token_type: Override,
    /// `expires_in`; Wrong = 0.
    pub expires_in: Override,

    // UserInfo.
    /// `sub` in UserInfo responses; Wrong = "mallory".
    pub userinfo_sub: Override,
}

/// Shared handle to the misbehaviour switches; clone it freely.
#[derive(Clone, Debug, Default)]
pub struct Behaviour(Arc<Mutex<Misbehave>>);

impl Behaviour {
    /// Changes the switches, e.g. `p.behaviour().set(|m| m.nonce = Override::Wrong)`.
    pub fn set(&self, change: impl FnOnce(&mut Misbehave)) {
        change(&mut lock(&self.0));
    }

    /// Back to an honest provider.
    pub fn reset(&self) {
        *lock(&self.0) = Misbehave::default();
    }

    pub fn get(&self) -> Misbehave {
        lock(&self.0).clone()
    }
}

/// What the provider has been asked, for assertions. Counts are of requests received.
#[derive(Clone, Debug, Default)]
pub struct Stats {
    pub discovery: usize,
    /// Authorization requests (an interactive form's submission is not counted again).
    pub authorize: usize,
    pub token_code: usize,
    pub token_refresh: usize,
    /// Reused refresh tokens (each revoked its grant).
    pub refresh_reuse: usize,
    pub jwks: usize,
    pub userinfo: usize,
    pub introspect: usize,
    /// Every token presented to the revocation endpoint, in order.
    pub revocations: Vec<String>,
    pub end_sessions: Vec<EndSession>,
    /// The `sid` of every approved login, in order.
    pub sids: Vec<String>,
    /// Parameters of the latest authorization request.
    pub last_authorize: HashMap<String, String>,
    /// Every access token issued, in order (code exchange and refresh).
    pub access_tokens: Vec<String>,
}

/// One call to the end-session endpoint.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct EndSession {
    pub id_token_hint: Option<String>,
    /// Where to go afterwards (Cognito's `logout_uri`).
    pub post_logout_redirect_uri: Option<String>,
    pub state: Option<String>,
    pub client_id: Option<String>,
}

impl Override {
    /// The value to emit, or `None` to leave the member out.
    pub(super) fn resolve(&self, honest: Value, wrong: Value) -> Option<Value> {
        match self {
            Override::Honest => Some(honest),
            Override::Missing => None,
            Override::Wrong => Some(wrong),
            Override::Value(value) => Some(value.clone()),
        }
    }
}

/// A JSON object under construction, with [`Override`] knobs applied member by member.
#[derive(Default)]
pub(super) struct Members(Map<String, Value>);

impl Members {
    pub(super) fn put(&mut self, name: &str, value: impl Into<Value>) {
        self.0.insert(name.to_owned(), value.into());
    }

    pub(super) fn knob(
        &mut self,
        name: &str,
        knob: &Override,
        honest: impl Into<Value>,
        wrong: impl Into<Value>,
    ) {
        match knob.resolve(honest.into(), wrong.into()) {
            Some(value) => self.0.insert(name.to_owned(), value),
            None => self.0.remove(name),
        };
    }

    pub(super) fn is_null(&self, name: &str) -> bool {
        self.0.get(name).is_some_and(Value::is_null)
    }

    pub(super) fn remove(&mut self, name: &str) {
        self.0.remove(name);
    }

    pub(super) fn into_value(self) -> Value {
        Value::Object(self.0)
    }
}
