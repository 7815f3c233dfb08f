//! File model + environment → typed `Config`. Every error names the key it is about.
//! One file per section: [`server`] (with `[auth]` and routes), [`oidc`], [`session`] (its
//! Redis keys in [`redis`]), [`static_site`] (the keys of static routes).

mod oidc;
mod redis;
mod routes;
mod server;
mod session;
mod static_site;
mod telemetry;

use std::time::Duration;

use url::Url;

use super::env::EnvSource;
use super::file::*;
use super::*;

/// No duration in the config may exceed this (a year and a day).
pub(super) const MAX_ANY_DURATION: Duration = Duration::from_secs(366 * 24 * 3600);
/// Tolerances that weaken token checks are capped so that no config silently disables them.
pub(super) const MAX_CLOCK_SKEW: Duration = Duration::from_secs(300);
pub(super) const MAX_TOKEN_AGE: Duration = Duration::from_secs(3600);
pub(super) const MAX_NETWORK_TIMEOUT: Duration = Duration::from_secs(600);

/// Collects errors so that one run reports all of them.
#[derive(Default)]
pub(super) struct Errors(Vec<ConfigError>);

impl Errors {
    pub(super) fn push(&mut self, key: impl Into<String>, message: impl Into<String>) {
        self.0.push(ConfigError {
            key: key.into(),
            message: message.into(),
        });
    }

    pub(super) fn duration(&mut self, key: &str, value: Option<&str>, default: &str) -> Duration {
        self.duration_at_most(key, value, default, MAX_ANY_DURATION)
    }

    /// A positive duration no longer than `max` (which also keeps `Instant + d` from overflowing).
    pub(super) fn duration_at_most(
        &mut self,
        key: &str,
        value: Option<&str>,
        default: &str,
        max: Duration,
    ) -> Duration {
        let raw = value.unwrap_or(default);
        match humantime::parse_duration(raw) {
            Ok(d) if d > max => {
                self.push(
                    key,
                    format!("must be at most {}", humantime::format_duration(max)),
                );
                max
            }
            Ok(d) if !d.is_zero() => d,
            Ok(_) => {
                self.push(key, "must be greater than zero");
                Duration::from_secs(1)
            }
            Err(e) => {
                self.push(
                    key,
                    format!("invalid duration {raw:?} ({e}); use e.g. \"30s\", \"15m\", \"12h\""),
                );
                Duration::from_secs(1)
            }
        }
    }
}

impl Errors {
    /// A positive size in bytes; `None` (and an error) when it is not one.
    pub(super) fn byte_size(&mut self, key: &str, size: &ByteSize) -> Option<u64> {
        let parsed = match size {
            ByteSize::Bytes(n) => u64::try_from(*n).ok(),
            ByteSize::Text(text) => parse_byte_size(text),
        };
        match parsed {
            Some(n) if n > 0 => Some(n),
            Some(_) => {
                self.push(key, "must be greater than zero; leave it out for no limit");
                None
            }
            None => {
                self.push(
                    key,
                    format!("invalid size {}; use bytes (1048576) or e.g. \"512KiB\", \"10MiB\", \"1GB\"", match size {
                        ByteSize::Bytes(n) => n.to_string(),
                        ByteSize::Text(text) => format!("{text:?}"),
                    }),
                );
                None
            }
        }
    }
}

/// "10MiB", "512 KB", "1048576", "2G" → bytes; binary (KiB, MiB, GiB) and decimal units.
fn parse_byte_size(text: &str) -> Option<u64> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (digits, unit) = text.split_at(split);
    let number: u64 = digits.parse().ok()?;
    let multiplier: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" => 1_000,
        "kib" => 1 << 10,
        "m" | "mb" => 1_000_000,
        "mib" => 1 << 20,
        "g" | "gb" => 1_000_000_000,
        "gib" => 1 << 30,
        _ => return None,
    };
    number.checked_mul(multiplier)
}

pub(super) fn validate(file: FileConfig, env: &dyn EnvSource) -> Result<Config, Vec<ConfigError>> {
    let mut errs = Errors::default();
    let mut warnings = Vec::new();

    let server = server::server(&file.server, &mut errs);
    let auth = server::auth(&file.auth, &server.public_origin, &mut errs);
    let oidc = oidc::oidc(
        &file.oidc,
        &server.public_origin,
        &auth.prefix,
        env,
        &mut errs,
    );
    let mut session = session::session(&file.session, env, &mut errs, &mut warnings);
    refresh_lease(&mut session, &oidc, &mut errs);
    let routes = routes::routes(&file.routes, &auth, &server.public_origin, &mut errs);
    let telemetry = telemetry::telemetry(
        &file.telemetry,
        file.server.metrics_listen.as_deref(),
        server.listen,
        &mut errs,
        &mut warnings,
    );

    if errs.0.is_empty() {
        Ok(Config {
            server,
            oidc,
            session,
            auth,
            routes,
            telemetry,
            warnings,
            file,
        })
    } else {
        Err(errs.0)
    }
}

/// A refresh claim must outlive one provider call and the token write that follows, with a
/// margin for clocks that differ between instances: otherwise another instance could take over
/// while the holder may still present the refresh token.
fn refresh_lease(session: &mut SessionConfig, oidc: &OidcConfig, errs: &mut Errors) {
    let shortest = oidc.timeout + session.store_timeout * 2 + session.refresh_lease_margin;
    if session.refresh_lock_lease.is_zero() {
        session.refresh_lock_lease = shortest;
    } else if session.refresh_lock_lease < shortest {
        errs.push(
            "session.refresh_lock_lease",
            format!(
                "must be at least oidc.timeout + 2 × session.store_timeout + {REFRESH_LEASE_MARGIN} ({}), so that a refresh always finishes inside its lease",
                humantime::format_duration(shortest)
            ),
        );
    }
}

pub(super) fn is_loopback_host(host: &str) -> bool {
    let host = host.trim_start_matches('[').trim_end_matches(']');
    host == "localhost"
        || host.ends_with(".localhost")
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

fn is_loopback(url: &Url) -> bool {
    match url.host() {
        Some(url::Host::Domain(d)) => d == "localhost" || d.ends_with(".localhost"),
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        None => false,
    }
}

/// An http(s) URL; plain http only for loopback hosts, where browsers and we can trust it.
pub(super) fn secure_url(key: &str, raw: &str, errs: &mut Errors) -> Option<Url> {
    let url = match Url::parse(raw) {
        Ok(u) => u,
        Err(e) => {
            errs.push(key, format!("invalid URL {raw:?}: {e}"));
            return None;
        }
    };
    match url.scheme() {
        "https" => {}
        "http" if is_loopback(&url) => {}
        "http" => {
            errs.push(
                key,
                "must use https (plain http is allowed only for localhost)",
            );
            return None;
        }
        other => {
            errs.push(key, format!("unsupported scheme {other:?}; use https"));
            return None;
        }
    }
    if !url.username().is_empty() || url.password().is_some() {
        errs.push(key, "must not contain credentials");
        return None;
    }
    Some(url)
}

/// Every certificate in a PEM file; an error names `key` when there is none.
pub(super) fn ca_file(
    key: &str,
    path: &str,
    errs: &mut Errors,
) -> Vec<rustls_pki_types::CertificateDer<'static>> {
    use rustls_pki_types::pem::PemObject as _;
    let certs: Result<Vec<_>, _> = match rustls_pki_types::CertificateDer::pem_file_iter(path) {
        Ok(iter) => iter.collect(),
        Err(e) => {
            errs.push(key, format!("cannot read {path}: {e}"));
            return Vec::new();
        }
    };
    match certs {
        Ok(certs) if !certs.is_empty() => certs,
        Ok(_) => {
            errs.push(key, format!("{path} holds no PEM certificate"));
            Vec::new()
        }
        Err(e) => {
            errs.push(key, format!("{path} is not valid PEM: {e}"));
            Vec::new()
        }
    }
}

#[cfg(test)]
mod tests;
