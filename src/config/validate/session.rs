//! `[session]`: store, keys, cookie, timeouts.

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE, URL_SAFE_NO_PAD};

use super::super::env::{ENV_SESSION_KEYS, EnvSource};
use super::super::file::*;
use super::super::*;
use std::time::Duration;

use super::{Errors, MAX_NETWORK_TIMEOUT};
use crate::cookie::{KEY_LEN, KeyRing};

fn decode_key(raw: &str) -> Result<[u8; KEY_LEN], String> {
    let raw = raw.trim();
    let bytes = STANDARD
        .decode(raw)
        .or_else(|_| URL_SAFE.decode(raw))
        .or_else(|_| URL_SAFE_NO_PAD.decode(raw))
        .map_err(|_| "is not valid base64 (generate one with `gatehouse keygen`)".to_owned())?;
    <[u8; KEY_LEN]>::try_from(bytes.as_slice()).map_err(|_| {
        format!(
            "must decode to {KEY_LEN} bytes (got {}); generate one with `gatehouse keygen`",
            bytes.len()
        )
    })
}

pub(super) fn session(
    f: &SessionFile,
    env: &dyn EnvSource,
    errs: &mut Errors,
    warnings: &mut Vec<String>,
) -> SessionConfig {
    let prefix = f
        .redis_prefix
        .clone()
        .unwrap_or_else(|| DEFAULT_REDIS_PREFIX.to_owned());
    let store = match f.store.as_deref().unwrap_or("memory") {
        "memory" => StoreConfig::Memory {
            capacity: f.memory_capacity.unwrap_or(DEFAULT_MEMORY_CAPACITY),
        },
        "redis" => match super::redis::redis(f, env, errs) {
            Some(redis) => StoreConfig::Redis(redis),
            None => StoreConfig::Memory { capacity: 1 },
        },
        other => {
            errs.push(
                "session.store",
                format!("{other:?} is not a store; use \"memory\" or \"redis\""),
            );
            StoreConfig::Memory { capacity: 1 }
        }
    };
    if matches!(store, StoreConfig::Memory { .. }) && f.store.as_deref() != Some("redis") {
        for key in super::redis::ignored_keys(f) {
            warnings.push(format!(
                "{key} is set but session.store is not \"redis\": it is ignored"
            ));
        }
    }
    if f.memory_capacity == Some(0) {
        errs.push("session.memory_capacity", "must be at least 1");
    }

    let raw_keys: Option<Vec<String>> = env
        .var(ENV_SESSION_KEYS)
        .map(|v| {
            v.split(',')
                .map(|s| s.trim().to_owned())
                .filter(|s| !s.is_empty())
                .collect()
        })
        .or_else(|| f.keys.clone());
    let has_keys = raw_keys.as_ref().is_some_and(|k| !k.is_empty());
    let keys = match raw_keys {
        Some(list) if !list.is_empty() => {
            let mut keys = Vec::new();
            for (i, raw) in list.iter().enumerate() {
                match decode_key(raw) {
                    Ok(k) => keys.push(k),
                    Err(msg) => errs.push(format!("session.keys[{i}]"), msg),
                }
            }
            KeyRing::new(keys)
        }
        _ => match store {
            StoreConfig::Memory { .. } => {
                warnings.push("session.keys is not set: using a random key; sessions end when gatehouse restarts".to_owned());
                KeyRing::random()
            }
            StoreConfig::Redis { .. } => {
                errs.push("session.keys", format!("required with the redis store, so every instance opens the same cookies (or env {ENV_SESSION_KEYS}); generate one with `gatehouse keygen`"));
                KeyRing::random()
            }
        },
    };

    let ephemeral_keys = matches!(store, StoreConfig::Memory { .. }) && !has_keys;
    let cookie_name = f
        .cookie_name
        .clone()
        .unwrap_or_else(|| DEFAULT_COOKIE_NAME.to_owned());
    let valid_name = !cookie_name.is_empty()
        && cookie_name.len() <= crate::cookie::MAX_NAME_LEN
        && cookie_name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b));
    if !valid_name {
        errs.push(
            "session.cookie_name",
            "must be 1-64 characters of letters, digits, - _ .",
        );
    }
    // Only a __Host- cookie is Secure, host-only and Path=/ by the browser's own rule: a sibling
    // subdomain can neither set nor shadow it (cookie tossing).
    if !cookie_name.starts_with("__Host-") {
        errs.push(
            "session.cookie_name",
            "must start with __Host- so that no sibling subdomain can set or shadow it",
        );
    }
    if f.cookie_domain.is_some() {
        errs.push(
            "session.cookie_domain",
            "must not be set: the __Host- cookie is host-only",
        );
    }
    if f.cookie_path.as_deref().is_some_and(|p| p != "/") {
        errs.push("session.cookie_path", "must be \"/\" for a __Host- cookie");
    }
    let same_site = match f.same_site.as_deref().unwrap_or(DEFAULT_SAME_SITE) {
        s if s.eq_ignore_ascii_case("strict") => SameSite::Strict,
        s if s.eq_ignore_ascii_case("lax") => SameSite::Lax,
        other => {
            errs.push(
                "session.same_site",
                format!("{other:?} is not supported; use \"strict\" or \"lax\""),
            );
            SameSite::Strict
        }
    };
    let idle_timeout = errs.duration(
        "session.idle_timeout",
        f.idle_timeout.as_deref(),
        DEFAULT_IDLE_TIMEOUT,
    );
    let max_lifetime = errs.duration(
        "session.max_lifetime",
        f.max_lifetime.as_deref(),
        DEFAULT_MAX_LIFETIME,
    );
    if idle_timeout > max_lifetime {
        errs.push(
            "session.idle_timeout",
            "must not exceed session.max_lifetime",
        );
    }
    SessionConfig {
        store,
        keys,
        ephemeral_keys,
        cookie_name,
        same_site,
        idle_timeout,
        max_lifetime,
        // Set by `validate` from oidc.timeout and store_timeout when not configured.
        refresh_lock_lease: f
            .refresh_lock_lease
            .as_deref()
            .map_or(Duration::ZERO, |raw| {
                errs.duration_at_most(
                    "session.refresh_lock_lease",
                    Some(raw),
                    raw,
                    MAX_NETWORK_TIMEOUT,
                )
            }),
        refresh_lease_margin: humantime::parse_duration(REFRESH_LEASE_MARGIN).unwrap_or_default(),
        store_timeout: errs.duration_at_most(
            "session.store_timeout",
            f.store_timeout.as_deref(),
            DEFAULT_STORE_TIMEOUT,
            MAX_NETWORK_TIMEOUT,
        ),
        key_prefix: prefix,
    }
}
