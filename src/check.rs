//! `gatehouse check --online`: beyond validating the file, contact the provider and the store
//! the way `run` would, and report what works, what does not, and what that means for the
//! user, each finding naming the config key to change.

use std::fmt;

use crate::config::Config;
use crate::oidc::advice::{self, Finding, Level};
use crate::oidc::provider::{self, DiscoveryError, Provider};
use crate::oidc::{Oidc, jwks};
use crate::session::Store;

/// Every finding of one online check, in the order they were made.
#[derive(Debug, Default)]
pub struct Report {
    pub findings: Vec<Finding>,
}

impl Report {
    fn push(&mut self, level: Level, key: Option<&'static str>, message: impl Into<String>) {
        self.findings.push(Finding {
            level,
            key,
            message: message.into(),
        });
    }

    pub fn count(&self, level: Level) -> usize {
        self.findings.iter().filter(|f| f.level == level).count()
    }

    /// Whether `run` would fail or stay unready with this config.
    pub fn has_errors(&self) -> bool {
        self.count(Level::Error) > 0
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for finding in &self.findings {
            let level = match finding.level {
                Level::Ok => "ok",
                Level::Info => "info",
                Level::Warning => "warning",
                Level::Error => "error",
            };
            match finding.key {
                Some(key) => writeln!(f, "{level}: {key}: {}", finding.message)?,
                None => writeln!(f, "{level}: {}", finding.message)?,
            }
        }
        write!(
            f,
            "{} error(s), {} warning(s)",
            self.count(Level::Error),
            self.count(Level::Warning)
        )
    }
}

/// Checks the provider (discovery, endpoints, keys, what it advertises) and the store.
pub async fn online(config: &Config) -> Report {
    let mut report = Report::default();
    match Oidc::new(&config.oidc) {
        Ok(oidc) => check_provider(&oidc, &mut report).await,
        Err(e) => report.push(
            Level::Error,
            Some("oidc.ca_file"),
            format!("cannot build the provider HTTP client: {e}"),
        ),
    }
    check_store(config, &mut report).await;
    report
}

async fn check_provider(oidc: &Oidc, report: &mut Report) {
    let s = &oidc.settings;
    let discovery = if s.discovery {
        match provider::fetch_discovery(&s.issuer, oidc.http()).await {
            Ok((doc, _)) => {
                report.push(
                    Level::Ok,
                    None,
                    format!(
                        "discovery at {} answers and its issuer is exactly oidc.issuer",
                        provider::discovery_url(&s.issuer)
                    ),
                );
                Some(doc)
            }
            Err(e) => {
                report.push(Level::Error, Some(discovery_key(&e)), explain(&e));
                return;
            }
        }
    } else {
        report.push(
            Level::Info,
            Some("oidc.discovery"),
            "discovery is off: only the configured endpoints are used",
        );
        None
    };
    let provider = match Provider::resolve(s, discovery) {
        Ok(p) => p,
        Err(e) => {
            let key = match &e {
                DiscoveryError::Member { member, .. } => override_key(member),
                _ => "oidc.issuer",
            };
            report.push(Level::Error, Some(key), e.to_string());
            return;
        }
    };
    match jwks::fetch(oidc.http(), &provider.endpoints.jwks_uri).await {
        Ok((keys, _)) => report.findings.extend(advice::advise(s, &provider, &keys)),
        Err(e) => {
            report.push(Level::Error, Some("oidc.jwks_uri"), e);
            report.findings.extend(
                advice::advise(s, &provider, &Default::default())
                    .into_iter()
                    .filter(|f| f.key != Some("oidc.allowed_algs")),
            );
        }
    }
}

/// The key an operator changes for a discovery failure.
fn discovery_key(e: &DiscoveryError) -> &'static str {
    match e {
        DiscoveryError::Unreachable { detail, .. } if detail.contains("certificate") => {
            "oidc.ca_file"
        }
        _ => "oidc.issuer",
    }
}

fn explain(e: &DiscoveryError) -> String {
    match e {
        DiscoveryError::IssuerMismatch { found, expected }
            if found.trim_end_matches('/') == expected.trim_end_matches('/') =>
        {
            format!(
                "{e}: issuers are compared exactly, trailing slash included; set oidc.issuer = {found:?}"
            )
        }
        DiscoveryError::IssuerMismatch { found, .. } => {
            format!("{e}: set oidc.issuer = {found:?} if that is the provider you mean")
        }
        DiscoveryError::Status { .. } => format!(
            "{e}: is oidc.issuer right? Without discovery, set oidc.discovery = false and the endpoints"
        ),
        DiscoveryError::Unreachable { .. } if discovery_key(e) == "oidc.ca_file" => {
            format!("{e} (a private CA? list it in oidc.ca_file)")
        }
        _ => e.to_string(),
    }
}

fn override_key(member: &str) -> &'static str {
    match member {
        "authorization_endpoint" => "oidc.authorization_endpoint",
        "token_endpoint" => "oidc.token_endpoint",
        "jwks_uri" => "oidc.jwks_uri",
        "userinfo_endpoint" => "oidc.userinfo_endpoint",
        "end_session_endpoint" => "oidc.end_session_endpoint",
        "revocation_endpoint" => "oidc.revocation_endpoint",
        _ => "oidc.issuer",
    }
}

async fn check_store(config: &Config, report: &mut Report) {
    let store = match Store::new(&config.session.store, config.session.store_timeout) {
        Ok(store) => store,
        Err(e) => {
            report.push(
                Level::Error,
                Some("session.store"),
                format!("cannot set up the store: {e}"),
            );
            return;
        }
    };
    let key = match store.kind() {
        "redis" => "session.redis_url",
        _ => "session.store",
    };
    match store.ping().await {
        Ok(()) => report.push(
            Level::Ok,
            None,
            format!("the session store ({}) answers", store.kind()),
        ),
        Err(e) => report.push(
            Level::Error,
            Some(key),
            format!("{e}: is the store up and reachable from here?"),
        ),
    }
}
