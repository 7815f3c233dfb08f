//! Reloading the config while serving: `SIGHUP`, or a change of the config file when
//! `server.watch_config` is on.
//!
//! Rules:
//! 1. The new file is read and validated first; an invalid one is refused with every problem
//!    logged, and the running config keeps serving.
//! 2. What can change live does: routes (and their CSRF, timeouts, static sites), session keys
//!    (rotation: cookies sealed with any key still in the ring keep opening), session
//!    lifetimes, the refresh lease and skew, allowed hosts, trusted proxies, stripped headers,
//!    the connection idle timeout, the shutdown grace, and the login rate limits.
//! 3. What cannot (it is built into listeners, connections, the store client or the provider
//!    client) keeps its running value, and each changed key is logged as needing a restart.
//! 4. A request runs from start to end under one config: in-flight requests and open
//!    connections are unaffected by a swap.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use crate::app::App;
use crate::config::{Config, EnvSource, file::FileConfig};
use crate::cookie::KeyRing;
use crate::ratelimit::LoginLimits;

/// Puts `new` in force (rule 2), keeping the running value of every setting that needs a
/// restart (rule 3); returns the keys of those that changed.
pub fn apply(app: &App, mut new: Config) -> Vec<&'static str> {
    let current = app.snapshot();
    let restart = restart_only_changes(&current.file, &new.file);
    carry_over(&current, &mut new);
    let keys = std::mem::replace(&mut new.session.keys, KeyRing::new(Vec::new()));
    // No keys configured: the random key of the running process stays, or every session
    // would end.
    let keys = (!new.session.ephemeral_keys).then_some(keys);
    app.sessions.reconfigure(&new.session, keys);
    if new.auth.login_rate != current.auth.login_rate {
        app.login_limits
            .store(Arc::new(LoginLimits::new(new.auth.login_rate)));
    }
    app.forwarder.prepare(&new.routes);
    app.install(new);
    restart
}

/// Which restart-only keys differ between two file models.
fn restart_only_changes(old: &FileConfig, new: &FileConfig) -> Vec<&'static str> {
    let mut changed = Vec::new();
    let (o, n) = (&old.server, &new.server);
    let server = [
        ("server.listen", o.listen != n.listen),
        ("server.public_origin", o.public_origin != n.public_origin),
        (
            "server.max_connections",
            o.max_connections != n.max_connections,
        ),
        (
            "server.max_connections_per_ip",
            o.max_connections_per_ip != n.max_connections_per_ip,
        ),
        (
            "server.header_read_timeout",
            o.header_read_timeout != n.header_read_timeout,
        ),
        (
            "server.upstream_connect_timeout",
            o.upstream_connect_timeout != n.upstream_connect_timeout,
        ),
        (
            "server.upstream_idle_timeout",
            o.upstream_idle_timeout != n.upstream_idle_timeout,
        ),
        (
            "server.upstream_pool_max_idle",
            o.upstream_pool_max_idle != n.upstream_pool_max_idle,
        ),
        (
            "server.upstream_ca_file",
            o.upstream_ca_file != n.upstream_ca_file,
        ),
        (
            "server.max_websockets",
            o.max_websockets != n.max_websockets,
        ),
        ("server.watch_config", o.watch_config != n.watch_config),
        ("server.workers", o.workers != n.workers),
        (
            "server.metrics_listen",
            o.metrics_listen != n.metrics_listen,
        ),
    ];
    changed.extend(server.iter().filter(|(_, c)| *c).map(|(k, _)| *k));
    let mut oidc_old = old.oidc.clone();
    oidc_old.refresh_skew.clone_from(&new.oidc.refresh_skew);
    if oidc_old != new.oidc {
        changed.push("oidc (any key but refresh_skew)");
    }
    let strip = |s: &crate::config::file::SessionFile| {
        let mut s = s.clone();
        s.keys = None;
        s.idle_timeout = None;
        s.max_lifetime = None;
        s.refresh_lock_lease = None;
        s
    };
    if strip(&old.session) != strip(&new.session) {
        changed.push("session (store, Redis, cookie or store_timeout keys)");
    }
    if old.auth.prefix != new.auth.prefix {
        changed.push("auth.prefix");
    }
    if old.telemetry != new.telemetry {
        changed.push("telemetry (OpenTelemetry export)");
    }
    changed
}

/// Rule 3: the new config keeps the running values of what was not reloaded, so that what a
/// request reads from the config is what the process actually does.
fn carry_over(old: &Config, new: &mut Config) {
    let (o, n) = (&old.server, &mut new.server);
    n.listen = o.listen;
    n.public_origin = o.public_origin.clone();
    n.origin.clone_from(&o.origin);
    n.max_connections = o.max_connections;
    n.max_connections_per_ip = o.max_connections_per_ip;
    n.header_read_timeout = o.header_read_timeout;
    n.upstream_connect_timeout = o.upstream_connect_timeout;
    n.upstream_idle_timeout = o.upstream_idle_timeout;
    n.upstream_pool_max_idle = o.upstream_pool_max_idle;
    n.upstream_ca.clone_from(&o.upstream_ca);
    n.max_websockets = o.max_websockets;
    n.watch_config = o.watch_config;
    n.workers = o.workers;
    let refresh_skew = new.oidc.refresh_skew;
    new.oidc = old.oidc.clone();
    new.oidc.refresh_skew = refresh_skew;
    let (o, n) = (&old.session, &mut new.session);
    n.store = o.store.clone();
    n.cookie_name.clone_from(&o.cookie_name);
    n.same_site = o.same_site;
    n.store_timeout = o.store_timeout;
    n.key_prefix.clone_from(&o.key_prefix);
    new.auth.prefix.clone_from(&old.auth.prefix);
    new.telemetry = old.telemetry.clone();
}

/// Reads and validates the config at `path`; on success puts it in force. Logs the outcome.
pub fn reload_from(app: &App, path: &Path, env: &dyn EnvSource) -> bool {
    match Config::load(path, env) {
        Ok(new) => {
            for warning in &new.warnings {
                tracing::warn!("{warning}");
            }
            let restart = apply(app, new);
            for key in &restart {
                tracing::warn!(
                    key,
                    "changed in the config file, but takes effect only after a restart; the running value stays"
                );
            }
            tracing::info!(
                path = %path.display(),
                restart_needed = restart.len(),
                "configuration reloaded"
            );
            true
        }
        Err(e) => {
            tracing::error!(path = %path.display(), "configuration reload refused, still serving the previous one: {e}");
            false
        }
    }
}

/// Where a running gatehouse re-reads its config from.
#[derive(Debug, Clone)]
pub struct Source {
    pub path: PathBuf,
}

/// What identifies a version of the file: its modification time, length and content hash
/// (a ConfigMap update swaps a symlink, which only the content shows reliably).
fn fingerprint(path: &Path) -> Option<(Option<SystemTime>, u64, [u8; 32])> {
    use sha2::Digest as _;
    let meta = std::fs::metadata(path).ok()?;
    let text = std::fs::read(path).ok()?;
    Some((
        meta.modified().ok(),
        meta.len(),
        sha2::Sha256::digest(&text).into(),
    ))
}

/// How often a watched config file is looked at.
const WATCH_EVERY: Duration = Duration::from_secs(2);

/// Reloads on `SIGHUP`, and when `watch` is on, whenever the file changes. Runs until
/// aborted.
pub async fn watch(app: Arc<App>, source: Source, env: Arc<dyn EnvSource + Send + Sync>) {
    #[cfg(unix)]
    let mut hangups = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) {
        Ok(s) => Some(s),
        Err(e) => {
            tracing::warn!(error = %e, "cannot listen for SIGHUP; reload by signal is off");
            None
        }
    };
    let mut last = fingerprint(&source.path);
    let mut tick = tokio::time::interval(WATCH_EVERY);
    loop {
        #[cfg(unix)]
        let hangup = async {
            match hangups.as_mut() {
                Some(s) => {
                    s.recv().await;
                }
                None => std::future::pending::<()>().await,
            }
        };
        #[cfg(not(unix))]
        let hangup = std::future::pending::<()>();
        let watching = app.config().server.watch_config;
        tokio::select! {
            () = hangup => {
                tracing::info!("SIGHUP: reloading the configuration");
            }
            _ = tick.tick(), if watching => {
                if fingerprint(&source.path) == last {
                    continue;
                }
                tracing::info!("the config file changed: reloading it");
            }
        }
        let (app, path, env) = (Arc::clone(&app), source.path.clone(), Arc::clone(&env));
        let _ = tokio::task::spawn_blocking(move || reload_from(&app, &path, env.as_ref())).await;
        last = fingerprint(&source.path);
    }
}
