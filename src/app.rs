//! The shared state every request borrows: the config, the provider client, the sessions,
//! the upstream clients, the refresh flights and the open WebSockets. Everything else points
//! down to this module.

use std::sync::Arc;

use arc_swap::ArcSwap;

use crate::config::Config;
use crate::cookie::CookieNames;
use crate::endpoints::CallbacksInFlight;
use crate::oidc::Oidc;
use crate::oidc::refresh::Flights;
use crate::proxy::Forwarder;
use crate::proxy::clients::PoolSettings;
use crate::ratelimit::LoginLimits;
use crate::session::{Sessions, Store, StoreError};
use crate::telemetry::metrics::Metrics;
use crate::websocket::Sockets;

/// Everything a request needs, shared by all connections.
pub struct App {
    /// The config now in force; a reload swaps it (see [`crate::reload`]). A request takes one
    /// snapshot and keeps it to the end, so it never sees half of two configs.
    config: ArcSwap<Config>,
    pub oidc: Oidc,
    pub sessions: Sessions,
    pub forwarder: Forwarder,
    pub flights: Flights,
    /// The cookie names the request jar classifies as ours.
    pub cookie_names: CookieNames,
    /// Login callbacks being processed here, so one `state` is completed once.
    pub callbacks: CallbacksInFlight,
    /// Per-client budgets for login starts and callbacks (rebuilt when a reload changes them).
    pub login_limits: ArcSwap<LoginLimits>,
    /// The WebSockets open on this instance; told of every session that ends here.
    pub sockets: Arc<Sockets>,
    /// Per-route metric handles and the `/metrics` listener (disabled without one).
    pub metrics: Arc<Metrics>,
}

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("cannot build the provider HTTP client: {0}")]
    Http(#[from] reqwest::Error),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("cannot set up TLS to upstreams (server.upstream_ca_file): {0}")]
    Tls(#[from] rustls::Error),
    #[error("cannot listen on {addr} (server.metrics_listen): {source}")]
    MetricsListen {
        addr: String,
        #[source]
        source: std::io::Error,
    },
}

impl App {
    pub fn new(mut config: Config) -> Result<App, StartError> {
        let store = Store::with_local_cache(
            &config.session.store,
            config.session.store_timeout,
            &config.session.key_prefix,
        )?;
        let keys = std::mem::replace(
            &mut config.session.keys,
            crate::cookie::KeyRing::new(Vec::new()),
        );
        let metrics = Metrics::new(
            &config.telemetry,
            config.routes.iter().map(|r| r.prefix.as_str()),
            &store,
            config.server.workers,
        )
        .map_err(|source| StartError::MetricsListen {
            addr: config
                .telemetry
                .metrics_listen
                .map(|a| a.to_string())
                .unwrap_or_default(),
            source,
        })?;
        let metrics = Arc::new(metrics);
        let forwarder = Forwarder::new(
            PoolSettings {
                connect_timeout: config.server.upstream_connect_timeout,
                idle_timeout: config.server.upstream_idle_timeout,
                max_idle: config.server.upstream_pool_max_idle,
                lanes: config.server.workers,
            },
            &config.server.upstream_ca,
            Arc::clone(&metrics),
        )?;
        forwarder.prepare(&config.routes);
        let sessions = Sessions::new(&config.session, store, keys);
        let sockets = Arc::new(Sockets::new(config.server.max_websockets));
        sessions.observe_ends(Arc::clone(&sockets) as _);
        Ok(App {
            metrics,
            oidc: Oidc::new(&config.oidc)?,
            forwarder,
            cookie_names: CookieNames::new(&config.session.cookie_name),
            sessions,
            flights: Flights::default(),
            callbacks: CallbacksInFlight::default(),
            login_limits: ArcSwap::from_pointee(LoginLimits::new(config.auth.login_rate)),
            sockets,
            config: ArcSwap::from_pointee(config),
        })
    }
}

impl App {
    /// The config now in force, for a short look. Hold [`App::snapshot`] across awaits.
    pub fn config(&self) -> arc_swap::Guard<Arc<Config>> {
        self.config.load()
    }

    /// The config now in force, kept as long as needed.
    pub fn snapshot(&self) -> Arc<Config> {
        self.config.load_full()
    }

    /// Puts `config` in force for every request that starts from now on.
    pub(crate) fn install(&self, config: Config) {
        self.config.store(Arc::new(config));
    }
}
