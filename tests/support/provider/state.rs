//! The provider's shared state: codes, grants, tokens and stats behind one lock.

use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

use super::keys::{EcKey, Keys, SigningKey};
use super::layout::{Endpoint, Layout};
use super::options::{Behaviour, ProviderOptions, Stats};

pub(super) struct Shared {
    pub(super) issuer: String,
    /// `scheme://host:port` of the issuer's listener and of the second one ("" without).
    pub(super) origin: String,
    pub(super) other_origin: String,
    pub(super) layout: Layout,
    pub(super) opts: ProviderOptions,
    pub(super) keys: Keys,
    pub(super) behaviour: Behaviour,
    pub(super) state: Mutex<State>,
}

#[derive(Default)]
pub(super) struct State {
    pub(super) rotated: bool,
    pub(super) codes: HashMap<String, PendingCode>,
    pub(super) grants: HashMap<u64, Grant>,
    pub(super) next_grant: u64,
    pub(super) refresh_tokens: HashMap<String, RefreshToken>,
    pub(super) access_tokens: HashMap<String, AccessToken>,
    pub(super) last_login: Option<Login>,
    pub(super) stats: Stats,
}

/// The signed-in user of one login; `sid` is fresh per login.
#[derive(Clone, Debug)]
pub(super) struct Login {
    pub(super) sub: String,
    pub(super) email: String,
    pub(super) name: String,
    pub(super) sid: String,
    /// When the user authenticated: every ID token of this login carries it (OIDC Core §12.2).
    pub(super) auth_time: u64,
}

impl Login {
    pub(super) fn new(hint: Option<&str>) -> Login {
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
            auth_time: unix_now(),
        }
    }
}

pub(super) struct PendingCode {
    pub(super) used: bool,
    pub(super) grant: Option<u64>,
    pub(super) redirect_uri: String,
    pub(super) challenge: String,
    pub(super) nonce: String,
    pub(super) scope: String,
    pub(super) login: Login,
    /// Auth0's `audience`: access tokens become JWTs for it.
    pub(super) audience: Option<String>,
    /// Whether the code exchange comes with a refresh token.
    pub(super) offline: bool,
}

pub(super) struct Grant {
    pub(super) active: bool,
    pub(super) login: Login,
    pub(super) scope: String,
    pub(super) audience: Option<String>,
}

pub(super) struct RefreshToken {
    pub(super) grant: u64,
    pub(super) used: bool,
}

pub(super) struct AccessToken {
    pub(super) grant: u64,
    pub(super) expires_at: SystemTime,
    pub(super) revoked: bool,
}

impl State {
    pub(super) fn mint_access(&mut self, grant: u64, ttl: Duration) -> String {
        let token = random_token();
        self.stats.access_tokens.push(token.clone());
        let expires_at = SystemTime::now() + ttl;
        let entry = AccessToken {
            grant,
            expires_at,
            revoked: false,
        };
        self.access_tokens.insert(token.clone(), entry);
        token
    }

    /// Gives the access token `from` the new value `to` (a JWT instead of a random string).
    pub(super) fn rename_access(&mut self, from: &str, to: String) -> String {
        if let Some(entry) = self.access_tokens.remove(from) {
            self.access_tokens.insert(to.clone(), entry);
        }
        for token in &mut self.stats.access_tokens {
            if token == from {
                token.clone_from(&to);
            }
        }
        to
    }

    pub(super) fn mint_refresh(&mut self, grant: u64) -> String {
        let token = random_token();
        let entry = RefreshToken { grant, used: false };
        self.refresh_tokens.insert(token.clone(), entry);
        token
    }

    /// The grant behind an access token that is unexpired, unrevoked and of a live grant.
    pub(super) fn active_access(&self, token: &str) -> Option<(&AccessToken, &Grant)> {
        let access = self.access_tokens.get(token)?;
        let grant = self.grants.get(&access.grant)?;
        let live = !access.revoked && grant.active && SystemTime::now() < access.expires_at;
        live.then_some((access, grant))
    }
}

impl Shared {
    pub(super) fn lock(&self) -> MutexGuard<'_, State> {
        lock(&self.state)
    }

    pub(super) fn current_key(&self) -> &SigningKey {
        if self.lock().rotated {
            &self.keys.second
        } else {
            &self.keys.first
        }
    }

    pub(super) fn current_ec_key(&self) -> &EcKey {
        if self.lock().rotated {
            &self.keys.ec_second
        } else {
            &self.keys.ec_first
        }
    }

    /// The URL of `endpoint` on this provider, advertised or not.
    pub(super) fn endpoint_url(&self, endpoint: Endpoint) -> Option<String> {
        self.layout.url(endpoint, &self.origin, &self.other_origin)
    }
}

/// A poisoned lock only means another test thread panicked; the data is still usable.
pub(super) fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

pub(super) fn unix_now() -> u64 {
    unix_secs(SystemTime::now())
}

pub(super) fn unix_secs(time: SystemTime) -> u64 {
    time.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// 256 random bits, base64url: codes, tokens, `sid`, `jti`.
pub(super) fn random_token() -> String {
    URL_SAFE_NO_PAD.encode(rand::random::<[u8; 32]>())
}
