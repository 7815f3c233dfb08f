//! Prometheus metrics: their names and labels, the per-route handles of the request path,
//! and the one-line helpers the rest of the code calls. The catalogue is in README.md
//! (Operations → Metrics).
//!
//! Rules:
//! 1. Labels are bounded: route prefixes from the config or endpoint names, status classes,
//!    fixed result and operation names. Never a path, a user, a session or an address.
//! 2. The request path records into per-route tallies ([`super::tally`]) made at start-up,
//!    and store calls into the store's: uncontended atomic adds into the worker's own slots,
//!    no registry lookup, nothing shared between workers. A route added by a reload gets its
//!    tally at first use.
//! 3. Everything else records through the `metrics` facade, into the recorder
//!    `server::run` installs for the process (tests install one per test thread). With
//!    `server.metrics_listen` unset there is no recorder and each call is a no-op.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use http::StatusCode;
use metrics::{Gauge, Key, KeyName, Label, Metadata, Recorder as _};
use metrics_exporter_prometheus::{
    Matcher, PrometheusBuilder, PrometheusHandle, PrometheusRecorder,
};

use super::tally::{RouteTally, StoreTally};
use crate::config::TelemetryConfig;
use crate::session::{MemoryStore, Store};

pub const REQUESTS_TOTAL: &str = "gatehouse_requests_total";
pub const REQUEST_DURATION: &str = "gatehouse_request_duration_seconds";
pub const UPSTREAM_DURATION: &str = "gatehouse_upstream_duration_seconds";
pub const UPSTREAM_RETRIES_TOTAL: &str = "gatehouse_upstream_retries_total";
pub const LOGINS_TOTAL: &str = "gatehouse_logins_total";
pub const LOGOUTS_TOTAL: &str = "gatehouse_logouts_total";
pub const REFRESHES_TOTAL: &str = "gatehouse_refreshes_total";
pub const SESSIONS_CREATED_TOTAL: &str = "gatehouse_sessions_created_total";
pub const STORE_DURATION: &str = "gatehouse_store_operation_duration_seconds";
pub const STORE_ERRORS_TOTAL: &str = "gatehouse_store_errors_total";
pub const PROVIDER_REQUESTS_TOTAL: &str = "gatehouse_provider_requests_total";
pub const JWKS_REFRESHES_TOTAL: &str = "gatehouse_jwks_refreshes_total";
pub const OPEN_CONNECTIONS: &str = "gatehouse_open_connections";
pub const WEBSOCKETS_OPEN: &str = "gatehouse_websockets_open";
pub const MEMORY_SESSIONS: &str = "gatehouse_memory_sessions";
pub const BUILD_INFO: &str = "gatehouse_build_info";

/// Every metric name gatehouse exports (the dashboard test checks its queries against it).
pub const ALL: [&str; 16] = [
    REQUESTS_TOTAL,
    REQUEST_DURATION,
    UPSTREAM_DURATION,
    UPSTREAM_RETRIES_TOTAL,
    LOGINS_TOTAL,
    LOGOUTS_TOTAL,
    REFRESHES_TOTAL,
    SESSIONS_CREATED_TOTAL,
    STORE_DURATION,
    STORE_ERRORS_TOTAL,
    PROVIDER_REQUESTS_TOTAL,
    JWKS_REFRESHES_TOTAL,
    OPEN_CONNECTIONS,
    WEBSOCKETS_OPEN,
    MEMORY_SESSIONS,
    BUILD_INFO,
];

/// The `status` label: the status class.
pub const STATUS_CLASSES: [&str; 6] = ["1xx", "2xx", "3xx", "4xx", "5xx", "other"];
/// The `route` label of gatehouse's own endpoints (as `pipeline::Ctx::route` names them).
pub const ENDPOINTS: [&str; 7] = [
    "healthz",
    "readyz",
    "login",
    "callback",
    "user",
    "logout",
    "backchannel-logout",
];
/// The `route` label of requests refused before any endpoint or route took them.
pub const UNROUTED: &str = "-";

/// Request and upstream latencies, in seconds: 1 ms to a minute.
pub const REQUEST_BUCKETS: [f64; 15] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
];
/// Store calls, in seconds: 100 µs to five seconds.
pub const STORE_BUCKETS: [f64; 15] = [
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
];

const METADATA: Metadata<'static> =
    Metadata::new(module_path!(), metrics::Level::INFO, Some(module_path!()));

/// The families [`super::tally`] keeps, with their help texts, in its order.
const TALLIED: [(&str, &str); 4] = [
    (
        REQUESTS_TOTAL,
        "Requests answered, by route (prefix or endpoint) and status class.",
    ),
    (
        REQUEST_DURATION,
        "Time from request to response head, by route.",
    ),
    (
        UPSTREAM_DURATION,
        "Time until the upstream's response head arrived, by route.",
    ),
    (
        UPSTREAM_RETRIES_TOTAL,
        "Requests sent to an upstream again after a failure before any response, by route.",
    ),
];

/// This instance's metrics: the recorder, the handles of the request path, and the
/// `/metrics` listener bound at start-up. Disabled (every method a no-op) without
/// `server.metrics_listen`.
pub struct Metrics {
    enabled: Option<Enabled>,
}

struct Enabled {
    recorder: Arc<PrometheusRecorder>,
    handle: PrometheusHandle,
    /// Route prefixes and endpoint names from the config: a fast hash (no client picks them).
    routes: HashMap<Box<str>, RouteTally, foldhash::fast::RandomState>,
    /// Routes added by a reload, tallied from their first request on.
    added: Mutex<BTreeMap<Box<str>, Arc<RouteTally>>>,
    /// The session store's call latencies.
    store: Arc<StoreTally>,
    lanes: usize,
    open_connections: Gauge,
    memory_sessions: Option<(MemoryStore, Gauge)>,
    listener: Mutex<Option<std::net::TcpListener>>,
    addr: SocketAddr,
}

impl Enabled {
    /// Runs `f` on `route`'s tally, made now for a route a reload added.
    fn tally(&self, route: &str, f: impl FnOnce(&RouteTally)) {
        if let Some(tally) = self.routes.get(route) {
            return f(tally);
        }
        let tally = {
            let mut added = self.added.lock().unwrap_or_else(PoisonError::into_inner);
            Arc::clone(
                added
                    .entry(route.into())
                    .or_insert_with(|| Arc::new(RouteTally::new(self.lanes))),
            )
        };
        f(&tally);
    }
}

/// A connection counted in `gatehouse_open_connections` until dropped.
pub struct OpenConnection(Gauge);

impl Drop for OpenConnection {
    fn drop(&mut self) {
        self.0.decrement(1.0);
    }
}

impl Metrics {
    pub fn disabled() -> Metrics {
        Metrics { enabled: None }
    }

    /// Binds `server.metrics_listen` (when set) and registers every metric, so that each
    /// labelled series exists from the first scrape on. `routes` are the route prefixes;
    /// `lanes` the number of workers, each of which tallies requests in slots of its own.
    pub fn new<'r>(
        config: &TelemetryConfig,
        routes: impl Iterator<Item = &'r str>,
        store: &Store,
        lanes: usize,
    ) -> std::io::Result<Metrics> {
        let Some(listen) = config.metrics_listen else {
            return Ok(Metrics::disabled());
        };
        let listener = std::net::TcpListener::bind(listen)?;
        listener.set_nonblocking(true)?;
        let addr = listener.local_addr()?;
        let recorder = Arc::new(builder().build_recorder());
        describe(&recorder);
        let names = routes
            .chain(ENDPOINTS)
            .chain([UNROUTED])
            .map(|r| (Box::from(r), RouteTally::new(lanes)))
            .collect();
        super::outcomes::preregister(&recorder, &METADATA);
        let gauge = |name: &'static str, labels: Vec<Label>| {
            recorder.register_gauge(&Key::from_parts(name, labels), &METADATA)
        };
        gauge(
            BUILD_INFO,
            vec![Label::new("version", env!("CARGO_PKG_VERSION"))],
        )
        .set(1.0);
        let _ = gauge(WEBSOCKETS_OPEN, Vec::new());
        let memory_sessions = match store {
            Store::Memory(m) => Some((m.clone(), gauge(MEMORY_SESSIONS, Vec::new()))),
            Store::Redis(_) => None,
        };
        Ok(Metrics {
            enabled: Some(Enabled {
                handle: recorder.handle(),
                open_connections: gauge(OPEN_CONNECTIONS, Vec::new()),
                recorder,
                routes: names,
                added: Mutex::new(BTreeMap::new()),
                store: Arc::clone(store.tally()),
                lanes,
                memory_sessions,
                listener: Mutex::new(Some(listener)),
                addr,
            }),
        })
    }

    /// The address `/metrics` is served on.
    pub fn local_addr(&self) -> Option<SocketAddr> {
        self.enabled.as_ref().map(|e| e.addr)
    }

    /// The recorder, for the facade: [`Metrics::install_global`] in a process, a thread-local
    /// default in tests (`metrics::set_default_local_recorder`).
    pub fn recorder(&self) -> Option<Arc<PrometheusRecorder>> {
        self.enabled.as_ref().map(|e| Arc::clone(&e.recorder))
    }

    /// Makes this instance's recorder the process's (first caller wins).
    pub fn install_global(&self) {
        if let Some(recorder) = self.recorder()
            && metrics::set_global_recorder(recorder).is_err()
        {
            tracing::debug!("a metrics recorder was installed already; keeping it");
        }
    }

    /// One answered request: its route (prefix or endpoint name), status, and time until the
    /// response head was ready.
    pub fn request(&self, route: &str, status: StatusCode, elapsed: Duration) {
        if let Some(e) = &self.enabled {
            e.tally(route, |t| t.request(status_class(status), elapsed));
        }
    }

    /// Time until an upstream's response head arrived (or the call failed).
    pub fn upstream(&self, route: &str, elapsed: Duration) {
        if let Some(e) = &self.enabled {
            e.tally(route, |t| t.upstream(elapsed));
        }
    }

    /// A request sent to an upstream again (another address, or a fresh connection).
    pub fn upstream_retry(&self, route: &str) {
        if let Some(e) = &self.enabled {
            e.tally(route, RouteTally::retry);
        }
    }

    /// Counts a connection until the returned guard drops.
    pub fn connection_opened(&self) -> OpenConnection {
        let gauge = self
            .enabled
            .as_ref()
            .map_or_else(Gauge::noop, |e| e.open_connections.clone());
        gauge.increment(1.0);
        OpenConnection(gauge)
    }

    /// The Prometheus text exposition of every metric.
    pub fn render(&self) -> String {
        let Some(e) = &self.enabled else {
            return String::new();
        };
        if let Some((store, gauge)) = &e.memory_sessions {
            gauge.set(store.len().0 as f64);
        }
        let mut text = e.handle.render();
        let added = e.added.lock().unwrap_or_else(PoisonError::into_inner);
        let mut routes: Vec<(&str, &RouteTally)> = e
            .routes
            .iter()
            .map(|(r, t)| (&**r, t))
            .chain(added.iter().map(|(r, t)| (&**r, &**t)))
            .collect();
        routes.sort_unstable_by_key(|(r, _)| *r);
        super::tally::render(&mut text, TALLIED, routes.into_iter());
        e.store.render(
            &mut text,
            (STORE_DURATION, "Session store calls, by operation."),
        );
        text
    }

    /// Drains histogram samples into their buckets (also done by every scrape).
    pub(super) fn upkeep(&self) {
        if let Some(e) = &self.enabled {
            e.handle.run_upkeep();
        }
    }

    /// The bound `/metrics` listener, once.
    pub(super) fn take_listener(&self) -> Option<std::net::TcpListener> {
        let e = self.enabled.as_ref()?;
        e.listener
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take()
    }
}

/// A WebSocket connection started being proxied: `gatehouse_websockets_open` goes up. Call
/// [`websocket_closed`] exactly once when it ends (whichever side closed it).
pub fn websocket_opened() {
    metrics::gauge!(WEBSOCKETS_OPEN).increment(1.0);
}

/// A proxied WebSocket connection ended: `gatehouse_websockets_open` goes down.
pub fn websocket_closed() {
    metrics::gauge!(WEBSOCKETS_OPEN).decrement(1.0);
}

/// Index into [`STATUS_CLASSES`].
fn status_class(status: StatusCode) -> usize {
    match status.as_u16() {
        100..=599 => usize::from(status.as_u16() / 100 - 1),
        _ => STATUS_CLASSES.len() - 1,
    }
}

fn builder() -> PrometheusBuilder {
    let with_buckets = || -> Result<PrometheusBuilder, metrics_exporter_prometheus::BuildError> {
        PrometheusBuilder::new()
            .set_buckets_for_metric(Matcher::Full(REQUEST_DURATION.into()), &REQUEST_BUCKETS)?
            .set_buckets_for_metric(Matcher::Full(UPSTREAM_DURATION.into()), &REQUEST_BUCKETS)?
            .set_buckets_for_metric(Matcher::Full(STORE_DURATION.into()), &STORE_BUCKETS)
    };
    // The bucket lists are constant and non-empty, the only thing the builder checks.
    with_buckets().unwrap_or_else(|_| PrometheusBuilder::new())
}

/// `# HELP` lines of the families the recorder keeps.
fn describe(recorder: &PrometheusRecorder) {
    let help: [(&'static str, &'static str); 11] = [
        (
            LOGINS_TOTAL,
            "Logins started, completed, and failed by cause.",
        ),
        (
            LOGOUTS_TOTAL,
            "Sessions ended by the user's logout or a back-channel logout token.",
        ),
        (REFRESHES_TOTAL, "Access-token refreshes by outcome."),
        (
            SESSIONS_CREATED_TOTAL,
            "Sessions created by completed logins.",
        ),
        (
            STORE_ERRORS_TOTAL,
            "Session store calls that failed, by operation.",
        ),
        (
            PROVIDER_REQUESTS_TOTAL,
            "Calls to the identity provider, by endpoint and outcome.",
        ),
        (
            JWKS_REFRESHES_TOTAL,
            "Signing-key sets fetched from the provider and installed.",
        ),
        (
            OPEN_CONNECTIONS,
            "Client connections open on the public listener.",
        ),
        (WEBSOCKETS_OPEN, "WebSocket connections being proxied."),
        (MEMORY_SESSIONS, "Sessions held by the memory store."),
        (
            BUILD_INFO,
            "Always 1; the version label names the running build.",
        ),
    ];
    for (name, text) in help {
        let key = KeyName::from_const_str(name);
        if name.ends_with("_seconds") {
            recorder.describe_histogram(key, None, text.into());
        } else if name.ends_with("_total") {
            recorder.describe_counter(key, None, text.into());
        } else {
            recorder.describe_gauge(key, None, text.into());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_classes_cover_every_status() {
        let class = |code: u16| STATUS_CLASSES[status_class(StatusCode::from_u16(code).unwrap())];
        assert_eq!(class(101), "1xx");
        assert_eq!(class(200), "2xx");
        assert_eq!(class(308), "3xx");
        assert_eq!(class(499), "4xx");
        assert_eq!(class(503), "5xx");
        assert_eq!(class(600), "other");
        assert_eq!(class(999), "other");
    }

    fn enabled(routes: &[&str]) -> Metrics {
        let config = TelemetryConfig {
            metrics_listen: Some("127.0.0.1:0".parse().unwrap()),
            otlp: None,
        };
        let store = Store::Memory(MemoryStore::new(10));
        Metrics::new(&config, routes.iter().copied(), &store, 2).unwrap()
    }

    /// The lines of a scrape that name `family` and `route`.
    fn lines(text: &str, family: &str, route: &str) -> Vec<String> {
        text.lines()
            .filter(|l| l.starts_with(family) && l.contains(&format!("route=\"{route}\"")))
            .map(str::to_owned)
            .collect()
    }

    #[test]
    fn every_family_is_exported_once_and_a_route_a_reload_added_is_counted_too() {
        let metrics = enabled(&["/api/"]);
        metrics.request("/api/", StatusCode::OK, Duration::from_millis(2));
        metrics.upstream("/api/", Duration::from_millis(1));
        metrics.request("/added/", StatusCode::BAD_GATEWAY, Duration::from_secs(2));
        metrics.upstream_retry("/added/");
        let text = metrics.render();
        for name in ALL {
            let types = text
                .lines()
                .filter(|l| l.starts_with(&format!("# TYPE {name} ")))
                .count();
            assert_eq!(types, 1, "{name} in\n{text}");
        }
        assert!(
            lines(&text, REQUESTS_TOTAL, "/api/")
                .contains(&"gatehouse_requests_total{route=\"/api/\",status=\"2xx\"} 1".to_owned()),
            "{text}"
        );
        assert!(
            lines(&text, REQUESTS_TOTAL, "/added/").contains(
                &"gatehouse_requests_total{route=\"/added/\",status=\"5xx\"} 1".to_owned()
            ),
            "{text}"
        );
        assert!(
            lines(&text, UPSTREAM_RETRIES_TOTAL, "/added/")
                .contains(&"gatehouse_upstream_retries_total{route=\"/added/\"} 1".to_owned())
        );
        assert!(
            lines(&text, UPSTREAM_DURATION, "/api/").contains(
                &"gatehouse_upstream_duration_seconds_count{route=\"/api/\"} 1".to_owned()
            )
        );
        assert_eq!(
            lines(&text, REQUESTS_TOTAL, "healthz").len(),
            STATUS_CLASSES.len(),
            "endpoints are registered from the start"
        );
    }

    #[test]
    fn bucket_bounds_increase() {
        for buckets in [&REQUEST_BUCKETS[..], &STORE_BUCKETS[..]] {
            assert!(buckets.windows(2).all(|w| w[0] < w[1]), "{buckets:?}");
        }
    }
}
