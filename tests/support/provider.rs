//! An in-process OpenID Provider for gatehouse's integration tests and `examples/demo.rs`:
//! discovery, authorize (PKCE S256 only), token (code + rotating refresh tokens), JWKS, userinfo,
//! revocation, introspection and end-session on 127.0.0.1:0. It counts every call and can be told
//! at runtime to misbehave, so tests prove gatehouse refuses what SECURITY.md §1 says it must.
//!
//! Test-only: its keys are public fixtures and its own checks are only as strict as the tests need.
//!
//! Rules it keeps, because gatehouse's tests lean on them:
//! 1. A code is single-use; a second use answers `invalid_grant` and revokes what the first issued.
//! 2. With rotation, a refresh token is single-use; reuse answers `invalid_grant` and revokes the
//!    whole grant (counted in [`Stats::refresh_reuse`]).
//! 3. Revoking a refresh token revokes its grant, so every access token of it turns inactive.
//! 4. Misbehaviour knobs stay set until changed or [`Behaviour::reset`]; ID-token knobs apply to
//!    every ID token issued meanwhile (code exchange and refresh).
#![allow(
    dead_code,
    reason = "shared by the integration tests and examples/demo.rs; each uses a different part"
)]

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use bytes::Bytes;
use hmac::Mac as _;
use http_body_util::{BodyExt as _, Full, Limited};
use hyper::body::Incoming;
use hyper::header::{self, HeaderMap, HeaderValue};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use openidconnect::core::{CoreJwsSigningAlgorithm, CoreRsaPrivateSigningKey};
use openidconnect::{JsonWebKeyId, PrivateSigningKey as _};
use serde_json::{Map, Value, json};
use sha2::{Digest as _, Sha256};
use tokio::net::TcpListener;
use tokio::task::{JoinHandle, JoinSet};
use url::Url;

/// What `Override::Wrong` puts in `iss`-like places.
pub const EVIL_ISSUER: &str = "https://evil.example";
/// The audience added by the extra-audience knobs.
pub const OTHER_CLIENT: &str = "other-client";
/// The `events` member a back-channel logout token must carry.
pub const BACKCHANNEL_LOGOUT_EVENT: &str = "http://schemas.openid.net/event/backchannel-logout";
/// `kid` of the attacker key used by [`Signing::UnknownKid`]; never in the JWKS.
pub const UNKNOWN_KID: &str = "never-published";

const MAX_BODY: usize = 64 * 1024;
const KEY_1: KeyFile = KeyFile {
    kid: "key-1",
    private_pem: include_str!("keys/rsa1.pem"),
    public_pem: include_str!("keys/rsa1.pub.pem"),
};
const KEY_2: KeyFile = KeyFile {
    kid: "key-2",
    private_pem: include_str!("keys/rsa2.pem"),
    public_pem: include_str!("keys/rsa2.pub.pem"),
};
/// Never published: signs the unknown-`kid` and embedded-`jwk` attacks.
const ATTACKER_KEY: KeyFile = KeyFile {
    kid: "attacker",
    private_pem: include_str!("keys/rsa3.pem"),
    public_pem: include_str!("keys/rsa3.pub.pem"),
};

// ---------------------------------------------------------------------------------------------
// Public API
// ---------------------------------------------------------------------------------------------

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
    /// Sleep before every token endpoint answer (slow-provider tests).
    pub token_delay: Duration,
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

    // Discovery.
    /// The document's `issuer`; Wrong = [`EVIL_ISSUER`].
    pub discovery_issuer: Override,

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
}

/// One call to the end-session endpoint.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct EndSession {
    pub id_token_hint: Option<String>,
    pub post_logout_redirect_uri: Option<String>,
    pub state: Option<String>,
}

/// A running provider; it stops serving when dropped.
pub struct TestProvider {
    shared: Arc<Shared>,
    addr: SocketAddr,
    task: JoinHandle<()>,
}

impl TestProvider {
    #[expect(
        clippy::expect_used,
        reason = "test fixture: a failed loopback bind on port 0 has no recovery"
    )]
    pub async fn start(opts: ProviderOptions) -> TestProvider {
        let any_port = SocketAddr::from(([127, 0, 0, 1], 0));
        Self::start_on(any_port, opts)
            .await
            .expect("bind the test provider on 127.0.0.1:0")
    }

    /// Like [`TestProvider::start`], on a chosen address (the demo's fixed
    /// `127.0.0.1:9000`); the issuer is `http://` + the bound address. Fails only to bind.
    #[expect(clippy::expect_used, reason = "the test keys are compiled in")]
    pub async fn start_on(
        addr: SocketAddr,
        opts: ProviderOptions,
    ) -> std::io::Result<TestProvider> {
        let listener = TcpListener::bind(addr).await?;
        let addr = listener.local_addr()?;
        let keys = Keys::load().expect("parse the compiled-in test keys");
        let shared = Arc::new(Shared {
            issuer: format!("http://{addr}"),
            opts,
            keys,
            behaviour: Behaviour::default(),
            state: Mutex::new(State::default()),
        });
        let task = tokio::spawn(serve(listener, Arc::clone(&shared)));
        Ok(TestProvider { shared, addr, task })
    }

    /// `http://127.0.0.1:PORT`, no trailing slash.
    pub fn issuer(&self) -> String {
        self.shared.issuer.clone()
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn options(&self) -> &ProviderOptions {
        &self.shared.opts
    }

    pub fn behaviour(&self) -> &Behaviour {
        &self.shared.behaviour
    }

    /// Shorthand for `behaviour().set(..)`.
    pub fn set(&self, change: impl FnOnce(&mut Misbehave)) {
        self.shared.behaviour.set(change);
    }

    pub fn stats(&self) -> Stats {
        self.shared.lock().stats.clone()
    }

    /// Switches signing to the other test key and publishes only that one in the JWKS.
    pub fn rotate_keys(&self) {
        let mut state = self.shared.lock();
        state.rotated = !state.rotated;
    }

    /// The `kid` tokens are signed under now.
    pub fn current_kid(&self) -> String {
        self.shared.current_key().kid.to_owned()
    }

    /// A back-channel logout token signed with the current key. An object `claims` is merged
    /// over the defaults (iss, aud, iat, exp, jti, events, and sub + sid of the latest login);
    /// a `null` member removes that claim. Any other `claims` value is used verbatim.
    pub fn mint_logout_token(&self, claims: Value) -> String {
        let now = unix_now();
        let mut merged = Map::new();
        merged.insert("iss".into(), json!(self.shared.issuer));
        merged.insert("aud".into(), json!(self.shared.opts.client_id));
        merged.insert("iat".into(), json!(now));
        merged.insert("exp".into(), json!(now + 120));
        merged.insert("jti".into(), json!(random_token()));
        merged.insert("events".into(), json!({ BACKCHANNEL_LOGOUT_EVENT: {} }));
        if let Some(login) = self.shared.lock().last_login.clone() {
            merged.insert("sub".into(), json!(login.sub));
            merged.insert("sid".into(), json!(login.sid));
        }
        let claims = match claims {
            Value::Object(extra) => {
                for (name, value) in extra {
                    if value.is_null() {
                        merged.remove(&name);
                    } else {
                        merged.insert(name, value);
                    }
                }
                Value::Object(merged)
            }
            verbatim => verbatim,
        };
        let key = self.shared.current_key();
        let header = json!({ "alg": "RS256", "typ": "logout+jwt", "kid": key.kid });
        jws(&header, &claims, Signer::Rsa(&key.private, RS256))
    }

    /// RS256 over exactly this header and these claims with the current key (header verbatim:
    /// include `kid` yourself, see [`TestProvider::current_kid`]).
    pub fn sign_raw(&self, header: Value, claims: Value) -> String {
        let key = self.shared.current_key();
        jws(&header, &claims, Signer::Rsa(&key.private, RS256))
    }
}

impl Drop for TestProvider {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Header and claims of a compact JWS, without checking anything.
pub fn decode_unverified(jwt: &str) -> Option<(Value, Value)> {
    let mut parts = jwt.split('.');
    let header = parts.next().and_then(decode_json)?;
    let claims = parts.next().and_then(decode_json)?;
    Some((header, claims))
}

// ---------------------------------------------------------------------------------------------
// State
// ---------------------------------------------------------------------------------------------

const RS256: CoreJwsSigningAlgorithm = CoreJwsSigningAlgorithm::RsaSsaPkcs1V15Sha256;

struct Shared {
    issuer: String,
    opts: ProviderOptions,
    keys: Keys,
    behaviour: Behaviour,
    state: Mutex<State>,
}

struct Keys {
    first: SigningKey,
    second: SigningKey,
    attacker: SigningKey,
}

impl Keys {
    fn load() -> Result<Keys, String> {
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

struct SigningKey {
    kid: &'static str,
    private: CoreRsaPrivateSigningKey,
    public_pem: &'static str,
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

#[derive(Default)]
struct State {
    rotated: bool,
    codes: HashMap<String, PendingCode>,
    grants: HashMap<u64, Grant>,
    next_grant: u64,
    refresh_tokens: HashMap<String, RefreshToken>,
    access_tokens: HashMap<String, AccessToken>,
    last_login: Option<Login>,
    stats: Stats,
}

/// The signed-in user of one login; `sid` is fresh per login.
#[derive(Clone, Debug)]
struct Login {
    sub: String,
    email: String,
    name: String,
    sid: String,
}

impl Login {
    fn new(hint: Option<&str>) -> Login {
        let sub = hint.filter(|h| !h.is_empty()).unwrap_or("alice").to_owned();
        let name = match sub.as_str() {
            "alice" => "Alice Example".to_owned(),
            "bob" => "Bob Example".to_owned(),
            other => other.to_owned(),
        };
        Login {
            email: format!("{sub}@example.test"),
            sub,
            name,
            sid: random_token(),
        }
    }
}

struct PendingCode {
    used: bool,
    grant: Option<u64>,
    redirect_uri: String,
    challenge: String,
    nonce: String,
    scope: String,
    login: Login,
}

struct Grant {
    active: bool,
    login: Login,
    scope: String,
}

struct RefreshToken {
    grant: u64,
    used: bool,
}

struct AccessToken {
    grant: u64,
    expires_at: SystemTime,
    revoked: bool,
}

impl State {
    fn mint_access(&mut self, grant: u64, ttl: Duration) -> String {
        let token = random_token();
        let expires_at = SystemTime::now() + ttl;
        let entry = AccessToken {
            grant,
            expires_at,
            revoked: false,
        };
        self.access_tokens.insert(token.clone(), entry);
        token
    }

    fn mint_refresh(&mut self, grant: u64) -> String {
        let token = random_token();
        let entry = RefreshToken { grant, used: false };
        self.refresh_tokens.insert(token.clone(), entry);
        token
    }

    /// The grant behind an access token that is unexpired, unrevoked and of a live grant.
    fn active_access(&self, token: &str) -> Option<(&AccessToken, &Grant)> {
        let access = self.access_tokens.get(token)?;
        let grant = self.grants.get(&access.grant)?;
        let live = !access.revoked && grant.active && SystemTime::now() < access.expires_at;
        live.then_some((access, grant))
    }
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        lock(&self.state)
    }

    fn current_key(&self) -> &SigningKey {
        if self.lock().rotated {
            &self.keys.second
        } else {
            &self.keys.first
        }
    }
}

/// A poisoned lock only means another test thread panicked; the data is still usable.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

// ---------------------------------------------------------------------------------------------
// Server and routing
// ---------------------------------------------------------------------------------------------

type Body = Full<Bytes>;
type Params = HashMap<String, String>;

/// Accepts until aborted; connection tasks live in a `JoinSet` so aborting this ends them too.
async fn serve(listener: TcpListener, shared: Arc<Shared>) {
    let mut connections = JoinSet::new();
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            tokio::time::sleep(Duration::from_millis(10)).await;
            continue;
        };
        let shared = Arc::clone(&shared);
        connections.spawn(async move {
            let service = service_fn(move |req| {
                let shared = Arc::clone(&shared);
                async move { Ok::<_, Infallible>(route(&shared, req).await) }
            });
            // A client hanging up mid-request is not the provider's concern.
            let _ = http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
        while connections.try_join_next().is_some() {}
    }
}

async fn route(p: &Shared, req: Request<Incoming>) -> Response<Body> {
    let (parts, body) = req.into_parts();
    let Ok(body) = Limited::new(body, MAX_BODY).collect().await else {
        return invalid_request("unreadable body");
    };
    // RFC 6749 §3.1: parameters must not be repeated.
    let query = parse_params(parts.uri.query().unwrap_or_default().as_bytes());
    let (Ok(query), Ok(form)) = (query, parse_params(&body.to_bytes())) else {
        return invalid_request("repeated parameter");
    };
    let headers = &parts.headers;
    match (&parts.method, parts.uri.path()) {
        (&Method::GET, "/.well-known/openid-configuration") => p.discovery(),
        (&Method::GET, "/authorize") => p.authorization_request(&query),
        (&Method::POST, "/authorize") if p.opts.interactive => p.sign_in_decision(&form),
        (&Method::POST, "/authorize") => p.authorization_request(&form),
        (&Method::POST, "/token") => {
            if !p.opts.token_delay.is_zero() {
                tokio::time::sleep(p.opts.token_delay).await;
            }
            p.token(headers, &form)
        }
        (&Method::GET, "/jwks") => p.jwks(),
        (&Method::GET | &Method::POST, "/userinfo") => p.userinfo(headers),
        (&Method::POST, "/revoke") => p.revoke(headers, &form),
        (&Method::POST, "/introspect") => p.introspect(headers, &form),
        (&Method::GET, "/end_session") => p.end_session(&query),
        (&Method::POST, "/end_session") => p.end_session(&form),
        _ => respond(StatusCode::NOT_FOUND, "text/plain", "not found"),
    }
}

// ---------------------------------------------------------------------------------------------
// Discovery, authorization
// ---------------------------------------------------------------------------------------------

impl Shared {
    fn discovery(&self) -> Response<Body> {
        self.lock().stats.discovery += 1;
        let i = &self.issuer;
        let mut doc = json!({
            "authorization_endpoint": format!("{i}/authorize"),
            "token_endpoint": format!("{i}/token"),
            "jwks_uri": format!("{i}/jwks"),
            "userinfo_endpoint": format!("{i}/userinfo"),
            "end_session_endpoint": format!("{i}/end_session"),
            "revocation_endpoint": format!("{i}/revoke"),
            "introspection_endpoint": format!("{i}/introspect"),
            "response_types_supported": ["code"],
            "response_modes_supported": ["query"],
            "subject_types_supported": ["public"],
            "id_token_signing_alg_values_supported": ["RS256"],
            "code_challenge_methods_supported": ["S256"],
            "token_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post"],
            "grant_types_supported": ["authorization_code", "refresh_token"],
            "scopes_supported": ["openid", "profile", "email", "offline_access"],
            "claims_supported": ["sub", "iss", "aud", "exp", "iat", "auth_time", "nonce", "sid",
                                 "email", "email_verified", "name"],
            "authorization_response_iss_parameter_supported": self.opts.iss_parameter_supported,
            "backchannel_logout_supported": true,
            "backchannel_logout_session_supported": true,
        });
        let m = self.behaviour.get();
        if let (Some(issuer), Value::Object(doc)) = (
            m.discovery_issuer.resolve(json!(i), json!(EVIL_ISSUER)),
            &mut doc,
        ) {
            doc.insert("issuer".into(), issuer);
        }
        json_response(StatusCode::OK, &doc)
    }

    /// `GET /authorize` (and a non-interactive `POST`): validate, then approve or show the form.
    fn authorization_request(&self, params: &Params) -> Response<Body> {
        {
            let mut state = self.lock();
            state.stats.authorize += 1;
            state.stats.last_authorize = params.clone();
        }
        let request = match self.validate_authorize(params) {
            Ok(request) => request,
            Err(why) => return respond(StatusCode::BAD_REQUEST, "text/plain", why),
        };
        if self.opts.interactive {
            return respond(
                StatusCode::OK,
                "text/html; charset=utf-8",
                sign_in_form(params),
            );
        }
        self.decide(&request, params.get("login_hint").map(String::as_str))
    }

    /// `POST /authorize` from the interactive form.
    fn sign_in_decision(&self, params: &Params) -> Response<Body> {
        match self.validate_authorize(params) {
            Err(why) => respond(StatusCode::BAD_REQUEST, "text/plain", why),
            Ok(request) if params.contains_key("deny") => self.deny(&request),
            Ok(request) => self.decide(&request, params.get("login_hint").map(String::as_str)),
        }
    }

    fn validate_authorize(&self, params: &Params) -> Result<AuthorizeRequest, &'static str> {
        let get = |name| params.get(name).filter(|v| !v.is_empty());
        if get("client_id") != Some(&self.opts.client_id) {
            return Err("unknown client_id");
        }
        let redirect_uri = get("redirect_uri").ok_or("redirect_uri missing")?;
        let redirect = Url::parse(redirect_uri).map_err(|_| "redirect_uri is not a URL")?;
        if get("response_type").map(String::as_str) != Some("code") {
            return Err("response_type must be code");
        }
        let scope = get("scope").ok_or("scope missing")?;
        if !scope.split(' ').any(|s| s == "openid") {
            return Err("scope must contain openid");
        }
        let challenge = get("code_challenge").ok_or("code_challenge missing")?;
        if get("code_challenge_method").map(String::as_str) != Some("S256") {
            return Err("code_challenge_method must be S256");
        }
        Ok(AuthorizeRequest {
            redirect_uri: redirect_uri.clone(),
            redirect,
            state: get("state").ok_or("state missing")?.clone(),
            nonce: get("nonce").ok_or("nonce missing")?.clone(),
            challenge: challenge.clone(),
            scope: scope.clone(),
        })
    }

    fn decide(&self, request: &AuthorizeRequest, login_hint: Option<&str>) -> Response<Body> {
        let m = self.behaviour.get();
        if m.authz_denied {
            return self.deny(request);
        }
        let code = random_token();
        let login = Login::new(login_hint);
        {
            let mut state = self.lock();
            state.stats.sids.push(login.sid.clone());
            let pending = PendingCode {
                used: false,
                grant: None,
                redirect_uri: request.redirect_uri.clone(),
                challenge: request.challenge.clone(),
                nonce: request.nonce.clone(),
                scope: request.scope.clone(),
                login,
            };
            state.codes.insert(code.clone(), pending);
        }
        let mut pairs = vec![("code", code), ("state", request.state.clone())];
        if m.duplicate_code {
            pairs.push(("code", "forged-code".to_owned()));
        }
        if m.duplicate_state {
            pairs.push(("state", "forged-state".to_owned()));
        }
        self.redirect_back(&request.redirect, pairs, &m)
    }

    fn deny(&self, request: &AuthorizeRequest) -> Response<Body> {
        let pairs = vec![
            ("error", "access_denied".to_owned()),
            (
                "error_description",
                "The user denied the request".to_owned(),
            ),
            ("state", request.state.clone()),
        ];
        self.redirect_back(&request.redirect, pairs, &self.behaviour.get())
    }

    /// 302 to the client's redirect URI with `pairs` and the RFC 9207 `iss` as configured.
    fn redirect_back(
        &self,
        to: &Url,
        mut pairs: Vec<(&str, String)>,
        m: &Misbehave,
    ) -> Response<Body> {
        let honest = self
            .opts
            .iss_parameter_supported
            .then(|| json!(self.issuer));
        let iss = match &m.authz_iss {
            Override::Honest => honest,
            other => other.resolve(Value::Null, json!(EVIL_ISSUER)),
        };
        if let Some(iss) = iss {
            pairs.push(("iss", text_of(&iss)));
        }
        let mut location = to.clone();
        location.query_pairs_mut().extend_pairs(pairs);
        redirect(location.as_str())
    }
}

struct AuthorizeRequest {
    redirect_uri: String,
    redirect: Url,
    state: String,
    nonce: String,
    challenge: String,
    scope: String,
}

fn sign_in_form(params: &Params) -> String {
    let hidden: String = params
        .iter()
        .filter(|(name, _)| name.as_str() != "login_hint")
        .map(|(name, value)| {
            let (name, value) = (html_escape(name), html_escape(value));
            format!(r#"<input type="hidden" name="{name}" value="{value}">"#)
        })
        .collect();
    format!(
        r#"<!doctype html><html><head><meta charset="utf-8"><title>Test provider sign-in</title>
</head><body><h1>Test OpenID Provider</h1><form method="post" action="/authorize">{hidden}
<button name="login_hint" value="alice">Sign in as alice</button>
<button name="login_hint" value="bob">Sign in as bob</button>
<button name="deny" value="1">Cancel</button></form></body></html>"#
    )
}

// ---------------------------------------------------------------------------------------------
// Token endpoint
// ---------------------------------------------------------------------------------------------

/// An RFC 6749 §5.2 error answer.
struct OAuthError {
    status: StatusCode,
    error: &'static str,
    description: &'static str,
}

fn invalid_grant(description: &'static str) -> OAuthError {
    OAuthError {
        status: StatusCode::BAD_REQUEST,
        error: "invalid_grant",
        description,
    }
}

fn required<'a>(form: &'a Params, name: &'static str) -> Result<&'a String, OAuthError> {
    form.get(name).ok_or(OAuthError {
        status: StatusCode::BAD_REQUEST,
        error: "invalid_request",
        description: name,
    })
}

impl Shared {
    fn token(&self, headers: &HeaderMap, form: &Params) -> Response<Body> {
        let grant_type = form.get("grant_type").map(String::as_str);
        match grant_type {
            Some("authorization_code") => self.lock().stats.token_code += 1,
            Some("refresh_token") => self.lock().stats.token_refresh += 1,
            _ => {}
        }
        if !self.client_authenticated(headers, form) {
            return invalid_client();
        }
        let m = self.behaviour.get();
        let fault = match grant_type {
            Some("authorization_code") => m.code_fault,
            _ => m.refresh_fault,
        };
        let result = match (grant_type, fault) {
            (_, Some(TokenFault::ServerError)) => Err(OAuthError {
                status: StatusCode::INTERNAL_SERVER_ERROR,
                error: "server_error",
                description: "forced by the test",
            }),
            (_, Some(TokenFault::InvalidGrant)) => Err(invalid_grant("forced by the test")),
            (Some("authorization_code"), None) => self.exchange_code(form, &m),
            (Some("refresh_token"), None) => self.refresh(form, &m),
            _ => Err(OAuthError {
                status: StatusCode::BAD_REQUEST,
                error: "unsupported_grant_type",
                description: "authorization_code or refresh_token",
            }),
        };
        match result {
            Ok(body) => json_response(StatusCode::OK, &body),
            Err(e) => oauth_error(e.status, e.error, e.description),
        }
    }

    fn exchange_code(&self, form: &Params, m: &Misbehave) -> Result<Value, OAuthError> {
        let code = required(form, "code")?;
        let (login, nonce, scope, access, refresh) = {
            let mut guard = self.lock();
            let state = &mut *guard;
            let pending = state
                .codes
                .get_mut(code)
                .ok_or(invalid_grant("unknown code"))?;
            if pending.used {
                if let Some(grant) = pending.grant.and_then(|id| state.grants.get_mut(&id)) {
                    grant.active = false;
                }
                return Err(invalid_grant("code already used"));
            }
            pending.used = true;
            if form.get("redirect_uri") != Some(&pending.redirect_uri) {
                return Err(invalid_grant(
                    "redirect_uri differs from the authorization request",
                ));
            }
            let verifier = form
                .get("code_verifier")
                .ok_or(invalid_grant("code_verifier missing"))?;
            if pkce_challenge(verifier) != pending.challenge {
                return Err(invalid_grant("PKCE verification failed"));
            }
            let grant_id = state.next_grant;
            state.next_grant += 1;
            pending.grant = Some(grant_id);
            let (login, nonce, scope) = (
                pending.login.clone(),
                pending.nonce.clone(),
                pending.scope.clone(),
            );
            let grant = Grant {
                active: true,
                login: login.clone(),
                scope: scope.clone(),
            };
            state.grants.insert(grant_id, grant);
            state.last_login = Some(login.clone());
            let access = state.mint_access(grant_id, self.opts.access_token_ttl);
            let refresh = (!m.omit_refresh_token).then(|| state.mint_refresh(grant_id));
            (login, nonce, scope, access, refresh)
        };
        let id_token = self.id_token(&login, Some(&nonce), &access, m);
        Ok(self.token_response(access, refresh, id_token, &scope, m))
    }

    fn refresh(&self, form: &Params, m: &Misbehave) -> Result<Value, OAuthError> {
        let presented = required(form, "refresh_token")?;
        let (login, scope, access, refresh) = {
            let mut guard = self.lock();
            let state = &mut *guard;
            let entry = state
                .refresh_tokens
                .get_mut(presented)
                .ok_or(invalid_grant("unknown refresh token"))?;
            let grant_id = entry.grant;
            if entry.used {
                state.stats.refresh_reuse += 1;
                if let Some(grant) = state.grants.get_mut(&grant_id) {
                    grant.active = false;
                }
                return Err(invalid_grant("refresh token reused; grant revoked"));
            }
            let grant = state
                .grants
                .get(&grant_id)
                .filter(|g| g.active)
                .ok_or(invalid_grant("grant revoked"))?;
            let (login, scope) = (grant.login.clone(), grant.scope.clone());
            let rotate = self.opts.refresh_rotation && !m.omit_refresh_token;
            entry.used = rotate;
            let access = state.mint_access(grant_id, self.opts.access_token_ttl);
            let refresh = rotate.then(|| state.mint_refresh(grant_id));
            (login, scope, access, refresh)
        };
        let id_token = self.id_token(&login, None, &access, m);
        Ok(self.token_response(access, refresh, id_token, &scope, m))
    }

    fn token_response(
        &self,
        access: String,
        refresh: Option<String>,
        id_token: String,
        scope: &str,
        m: &Misbehave,
    ) -> Value {
        let mut body = Members::default();
        body.put("access_token", access);
        body.knob("token_type", &m.token_type, "Bearer", "mac");
        let ttl = self.opts.access_token_ttl.as_secs();
        body.knob("expires_in", &m.expires_in, ttl, 0);
        if let Some(refresh) = refresh {
            body.put("refresh_token", refresh);
        }
        body.put("id_token", id_token);
        body.put("scope", scope);
        body.into_value()
    }

    /// RFC 6749 §2.3.1: `client_secret_basic` or `client_secret_post`, never both.
    fn client_authenticated(&self, headers: &HeaderMap, form: &Params) -> bool {
        let basic = headers.get(header::AUTHORIZATION).map(parse_basic);
        let form_id = form.get("client_id");
        let (id, secret) = match (basic, form.get("client_secret")) {
            (Some(Some((id, secret))), None) if form_id.is_none_or(|f| *f == id) => (id, secret),
            (None, Some(secret)) => (form_id.cloned().unwrap_or_default(), secret.clone()),
            _ => return false,
        };
        id == self.opts.client_id && secret == self.opts.client_secret
    }
}

fn invalid_client() -> Response<Body> {
    let description = "client authentication failed";
    let mut res = oauth_error(StatusCode::UNAUTHORIZED, "invalid_client", description);
    let challenge = HeaderValue::from_static(r#"Basic realm="test-provider""#);
    res.headers_mut()
        .insert(header::WWW_AUTHENTICATE, challenge);
    res
}

// ---------------------------------------------------------------------------------------------
// ID tokens and signing
// ---------------------------------------------------------------------------------------------

impl Shared {
    fn id_token(
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
        match &m.aud {
            Audience::Honest => c.put("aud", client),
            Audience::Missing => {}
            Audience::Wrong => c.put("aud", OTHER_CLIENT),
            Audience::ExtraWithoutAzp => c.put("aud", both()),
            Audience::ExtraWithForeignAzp => {
                c.put("aud", both());
                c.put("azp", OTHER_CLIENT);
            }
            Audience::Value(v) => c.put("aud", v.clone()),
        }
        c.knob("exp", &m.exp, expires, expired);
        c.knob("iat", &m.iat, now, day_ago);
        if let Some(nonce) = nonce {
            c.knob("nonce", &m.nonce, nonce, "not-the-nonce");
        }
        c.put("auth_time", now);
        c.put("sid", login.sid.as_str());
        c.put("email", login.email.as_str());
        c.put("email_verified", true);
        c.put("name", login.name.as_str());
        let digest = Sha256::digest(access_token.as_bytes());
        c.put(
            "at_hash",
            URL_SAFE_NO_PAD.encode(digest.get(..16).unwrap_or_default()),
        );
        self.sign_id_token(m.signing, &c.into_value())
    }

    fn sign_id_token(&self, signing: Signing, claims: &Value) -> String {
        let key = self.current_key();
        let attacker = &self.keys.attacker.private;
        let rsa = Signer::Rsa(&key.private, RS256);
        let header = |alg: &str| json!({ "alg": alg, "typ": "JWT", "kid": key.kid });
        match signing {
            Signing::Honest => jws(&header("RS256"), claims, rsa),
            Signing::NoKid => jws(&json!({ "alg": "RS256", "typ": "JWT" }), claims, rsa),
            Signing::FlippedByte => flip_signature_byte(&jws(&header("RS256"), claims, rsa)),
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
}

enum Signer<'a> {
    Rsa(&'a CoreRsaPrivateSigningKey, CoreJwsSigningAlgorithm),
    Hmac(&'a [u8]),
}

/// Compact JWS over `header` and `claims` exactly as given.
#[expect(
    clippy::expect_used,
    reason = "RSA signing with a parsed 2048-bit key and HMAC keying cannot fail"
)]
fn jws(header: &Value, claims: &Value, signer: Signer<'_>) -> String {
    let input = format!("{}.{}", encode_json(header), encode_json(claims));
    let signature = match signer {
        Signer::Rsa(key, alg) => key.sign(&alg, input.as_bytes()).expect("RSA signing"),
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

// ---------------------------------------------------------------------------------------------
// JWKS, userinfo, revocation, introspection, end-session
// ---------------------------------------------------------------------------------------------

impl Shared {
    fn jwks(&self) -> Response<Body> {
        self.lock().stats.jwks += 1;
        let mut jwk = serde_json::to_value(self.current_key().private.as_verification_key())
            .unwrap_or_default();
        if let Value::Object(jwk) = &mut jwk {
            jwk.insert("alg".into(), json!("RS256"));
        }
        json_response(StatusCode::OK, &json!({ "keys": [jwk] }))
    }

    fn userinfo(&self, headers: &HeaderMap) -> Response<Body> {
        let mut state = self.lock();
        state.stats.userinfo += 1;
        let token = headers.get(header::AUTHORIZATION).and_then(parse_bearer);
        let Some((_, grant)) = token.and_then(|t| state.active_access(t)) else {
            drop(state);
            let mut res = oauth_error(
                StatusCode::UNAUTHORIZED,
                "invalid_token",
                "no active access token",
            );
            let challenge = HeaderValue::from_static(r#"Bearer error="invalid_token""#);
            res.headers_mut()
                .insert(header::WWW_AUTHENTICATE, challenge);
            return res;
        };
        let login = grant.login.clone();
        drop(state);
        let m = self.behaviour.get();
        let mut body = Members::default();
        body.knob("sub", &m.userinfo_sub, login.sub, "mallory");
        body.put("email", login.email);
        body.put("email_verified", true);
        body.put("name", login.name);
        json_response(StatusCode::OK, &body.into_value())
    }

    /// RFC 7009: always 200 for an authenticated client; a refresh token takes its grant along.
    fn revoke(&self, headers: &HeaderMap, form: &Params) -> Response<Body> {
        if !self.client_authenticated(headers, form) {
            return invalid_client();
        }
        let Some(token) = form.get("token") else {
            return invalid_request("token");
        };
        let mut guard = self.lock();
        let state = &mut *guard;
        state.stats.revocations.push(token.clone());
        if let Some(refresh) = state.refresh_tokens.get(token)
            && let Some(grant) = state.grants.get_mut(&refresh.grant)
        {
            grant.active = false;
        }
        if let Some(access) = state.access_tokens.get_mut(token) {
            access.revoked = true;
        }
        respond(StatusCode::OK, "text/plain", "")
    }

    /// RFC 7662, for access tokens only.
    fn introspect(&self, headers: &HeaderMap, form: &Params) -> Response<Body> {
        self.lock().stats.introspect += 1;
        if !self.client_authenticated(headers, form) {
            return invalid_client();
        }
        let Some(token) = form.get("token") else {
            return invalid_request("token");
        };
        let state = self.lock();
        let body = match state.active_access(token) {
            Some((access, grant)) => json!({
                "active": true,
                "sub": grant.login.sub,
                "client_id": self.opts.client_id,
                "scope": grant.scope,
                "token_type": "Bearer",
                "exp": unix_secs(access.expires_at),
                "iss": self.issuer,
            }),
            None => json!({ "active": false }),
        };
        json_response(StatusCode::OK, &body)
    }

    fn end_session(&self, params: &Params) -> Response<Body> {
        let call = EndSession {
            id_token_hint: params.get("id_token_hint").cloned(),
            post_logout_redirect_uri: params.get("post_logout_redirect_uri").cloned(),
            state: params.get("state").cloned(),
        };
        self.lock().stats.end_sessions.push(call.clone());
        match call.post_logout_redirect_uri.as_deref().map(Url::parse) {
            Some(Ok(mut location)) => {
                if let Some(state) = &call.state {
                    location.query_pairs_mut().append_pair("state", state);
                }
                redirect(location.as_str())
            }
            Some(Err(_)) => respond(
                StatusCode::BAD_REQUEST,
                "text/plain",
                "bad post_logout_redirect_uri",
            ),
            None => respond(
                StatusCode::OK,
                "text/html; charset=utf-8",
                "<!doctype html><p>Signed out.</p>",
            ),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Small helpers
// ---------------------------------------------------------------------------------------------

impl Override {
    /// The value to emit, or `None` to leave the member out.
    fn resolve(&self, honest: Value, wrong: Value) -> Option<Value> {
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
struct Members(Map<String, Value>);

impl Members {
    fn put(&mut self, name: &str, value: impl Into<Value>) {
        self.0.insert(name.to_owned(), value.into());
    }

    fn knob(
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

    fn into_value(self) -> Value {
        Value::Object(self.0)
    }
}

fn text_of(value: &Value) -> String {
    value
        .as_str()
        .map_or_else(|| value.to_string(), str::to_owned)
}

fn unix_now() -> u64 {
    unix_secs(SystemTime::now())
}

fn unix_secs(time: SystemTime) -> u64 {
    time.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// 256 random bits, base64url: codes, tokens, `sid`, `jti`.
fn random_token() -> String {
    URL_SAFE_NO_PAD.encode(rand::random::<[u8; 32]>())
}

fn pkce_challenge(verifier: &str) -> String {
    URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes()))
}

fn encode_json(value: &Value) -> String {
    URL_SAFE_NO_PAD.encode(value.to_string())
}

fn decode_json(segment: &str) -> Option<Value> {
    let bytes = URL_SAFE_NO_PAD.decode(segment).ok()?;
    serde_json::from_slice(&bytes).ok()
}

/// Form or query parameters; a repeated name is an error.
fn parse_params(raw: &[u8]) -> Result<Params, String> {
    let mut params = Params::new();
    for (name, value) in url::form_urlencoded::parse(raw) {
        if params
            .insert(name.to_string(), value.into_owned())
            .is_some()
        {
            return Err(name.into_owned());
        }
    }
    Ok(params)
}

/// `Authorization: Bearer <token>` (RFC 6750 §2.1).
fn parse_bearer(value: &HeaderValue) -> Option<&str> {
    let value = value.to_str().ok()?;
    let token = strip_scheme(value, "bearer ")?;
    Some(token.trim())
}

/// `Authorization: Basic base64(urlencode(id) ":" urlencode(secret))` (RFC 6749 §2.3.1).
fn parse_basic(value: &HeaderValue) -> Option<(String, String)> {
    let value = value.to_str().ok()?;
    let encoded = strip_scheme(value, "basic ")?;
    let decoded = String::from_utf8(STANDARD.decode(encoded.trim()).ok()?).ok()?;
    let (id, secret) = decoded.split_once(':')?;
    Some((form_decode(id), form_decode(secret)))
}

/// `value` without its case-insensitive auth-scheme prefix (`"basic "`, `"bearer "`).
fn strip_scheme<'a>(value: &'a str, scheme: &str) -> Option<&'a str> {
    let prefix = value.get(..scheme.len())?;
    prefix
        .eq_ignore_ascii_case(scheme)
        .then(|| value.get(scheme.len()..))
        .flatten()
}

/// application/x-www-form-urlencoded decoding of a single value.
fn form_decode(s: &str) -> String {
    let with_spaces = s.replace('+', " ");
    let mut out = Vec::with_capacity(with_spaces.len());
    let mut rest = with_spaces.as_bytes();
    while let Some((&byte, tail)) = rest.split_first() {
        let escaped = (byte == b'%')
            .then(|| tail.get(..2))
            .flatten()
            .and_then(|hex| std::str::from_utf8(hex).ok())
            .and_then(|hex| u8::from_str_radix(hex, 16).ok());
        match escaped {
            Some(decoded) => {
                out.push(decoded);
                rest = tail.get(2..).unwrap_or_default();
            }
            None => {
                out.push(byte);
                rest = tail;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn html_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
        .replace('\'', "&#39;")
}

fn respond(
    status: StatusCode,
    content_type: &'static str,
    body: impl Into<Bytes>,
) -> Response<Body> {
    let mut res = Response::new(Full::new(body.into()));
    *res.status_mut() = status;
    let headers = res.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    res
}

fn json_response(status: StatusCode, body: &Value) -> Response<Body> {
    respond(status, "application/json", body.to_string())
}

fn invalid_request(description: &str) -> Response<Body> {
    oauth_error(StatusCode::BAD_REQUEST, "invalid_request", description)
}

fn oauth_error(status: StatusCode, error: &str, description: &str) -> Response<Body> {
    json_response(
        status,
        &json!({ "error": error, "error_description": description }),
    )
}

fn redirect(location: &str) -> Response<Body> {
    let Ok(location) = HeaderValue::from_str(location) else {
        return respond(
            StatusCode::INTERNAL_SERVER_ERROR,
            "text/plain",
            "unencodable redirect",
        );
    };
    let mut res = respond(StatusCode::FOUND, "text/plain", "");
    res.headers_mut().insert(header::LOCATION, location);
    res
}
