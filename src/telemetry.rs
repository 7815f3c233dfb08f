//! Tracing setup. Log lines carry methods, routes, statuses and latencies, never a token,
//! code, cookie value or session id: secrets travel in [`crate::secret::Secret`], whose
//! `Debug`/`Display` are redacted, and the access log records route prefixes, not URLs.

use tracing_subscriber::EnvFilter;

/// Installs the global subscriber: `RUST_LOG`-style filter from `filter`, default `info`.
pub fn init(filter: Option<&str>) {
    let filter = filter
        .and_then(|f| EnvFilter::try_new(f).ok())
        .unwrap_or_else(|| EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false)
        .try_init();
}
