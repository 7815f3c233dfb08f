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
//!
//! Files: [`options`] (setup, misbehaviour switches, stats), [`state`] (codes, grants, tokens),
//! [`keys`] (the compiled-in test keys), [`server`] (accept loop, routing, HTTP helpers),
//! [`authorize`] (discovery, authorization), [`token`] (token endpoint), [`jwt`] (ID tokens
//! and JWS crafting), [`endpoints`] (JWKS, userinfo, revocation, introspection, end-session).
#![allow(
    dead_code,
    unused_imports,
    reason = "shared by the integration tests and examples/demo.rs; each uses a different part"
)]

mod authorize;
mod endpoints;
mod jwt;
mod keys;
mod layout;
mod options;
mod server;
mod state;
mod token;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use serde_json::{Map, Value, json};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

// The options, shapes and misbehaviour switches are the provider's public API.
pub use layout::{Host, Shape};
pub use options::*;

use jwt::{Signer, decode_json, jws};
use keys::{Keys, RS256};
use layout::Layout;
use server::{Tls, serve};
use state::{Shared, State, random_token, unix_now};

/// What `Override::Wrong` puts in `iss`-like places.
pub const EVIL_ISSUER: &str = "https://evil.example";
/// The audience added by the extra-audience knobs.
pub const OTHER_CLIENT: &str = "other-client";
/// The `events` member a back-channel logout token must carry.
pub const BACKCHANNEL_LOGOUT_EVENT: &str = "http://schemas.openid.net/event/backchannel-logout";
/// `kid` of the attacker key used by [`Signing::UnknownKid`]; never in the JWKS.
pub const UNKNOWN_KID: &str = "never-published";

/// A running provider; it stops serving when dropped.
pub struct TestProvider {
    shared: Arc<Shared>,
    addr: SocketAddr,
    tasks: Vec<JoinHandle<()>>,
    ca_pem: Option<String>,
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
    /// `127.0.0.1:9000`); the issuer is `http://` + the bound address + the shape's issuer
    /// path. Shapes with endpoints on another host also listen on a second, free port.
    /// Fails only to bind.
    #[expect(clippy::expect_used, reason = "the test keys are compiled in")]
    pub async fn start_on(
        addr: SocketAddr,
        opts: ProviderOptions,
    ) -> std::io::Result<TestProvider> {
        let listener = TcpListener::bind(addr).await?;
        let addr = listener.local_addr()?;
        let layout = Layout::of(opts.shape);
        let other = if layout.uses_other_host() {
            Some(TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], 0))).await?)
        } else {
            None
        };
        let tls = opts.tls.then(Tls::self_signed).transpose()?;
        let (scheme, host) = match &tls {
            Some(_) => ("https", "localhost".to_owned()),
            None => ("http", addr.ip().to_string()),
        };
        let origin_of = |a: SocketAddr| format!("{scheme}://{host}:{}", a.port());
        let origin = origin_of(addr);
        let other_origin = match &other {
            Some(l) => origin_of(l.local_addr()?),
            None => String::new(),
        };
        let keys = Keys::load().expect("parse the compiled-in test keys");
        let shared = Arc::new(Shared {
            issuer: format!("{origin}{}", layout.issuer_path),
            origin,
            other_origin,
            layout,
            opts,
            keys,
            behaviour: Behaviour::default(),
            state: Mutex::new(State::default()),
        });
        let ca_pem = tls.as_ref().map(|t| t.cert_pem.clone());
        let acceptor = tls.map(|t| t.acceptor);
        let mut tasks = vec![tokio::spawn(serve(
            listener,
            Arc::clone(&shared),
            Host::Issuer,
            acceptor.clone(),
        ))];
        if let Some(other) = other {
            tasks.push(tokio::spawn(serve(
                other,
                Arc::clone(&shared),
                Host::Other,
                acceptor,
            )));
        }
        Ok(TestProvider {
            shared,
            addr,
            tasks,
            ca_pem,
        })
    }

    /// The issuer exactly as it publishes it: `http://127.0.0.1:PORT` plus the shape's path
    /// (Auth0's ends with `/`).
    pub fn issuer(&self) -> String {
        self.shared.issuer.clone()
    }

    /// `scheme://host:port` of the second host (Cognito's hosted UI, Google's API hosts);
    /// empty for shapes without one.
    pub fn other_origin(&self) -> String {
        self.shared.other_origin.clone()
    }

    /// `scheme://host:port` of the issuer's host.
    pub fn origin(&self) -> String {
        self.shared.origin.clone()
    }

    /// With `tls`: the PEM of the self-signed certificate the provider serves.
    pub fn ca_pem(&self) -> Option<&str> {
        self.ca_pem.as_deref()
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

    /// The `kid` tokens are signed under now (empty for shapes without `kid`).
    pub fn current_kid(&self) -> String {
        let (_, kid, _) = self.shared.honest_signer();
        kid.unwrap_or_default().to_owned()
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
        self.shared.sign_honestly("logout+jwt", &claims)
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
        for task in &self.tasks {
            task.abort();
        }
    }
}

/// Header and claims of a compact JWS, without checking anything.
pub fn decode_unverified(jwt: &str) -> Option<(Value, Value)> {
    let mut parts = jwt.split('.');
    let header = parts.next().and_then(decode_json)?;
    let claims = parts.next().and_then(decode_json)?;
    Some((header, claims))
}
