//! The `config` target: [`Config::from_toml`] with no environment.

use std::time::Duration;

use crate::config::{Config, ConfigErrors, NoEnv};
use crate::routes::{is_routable_path, is_valid_prefix};

/// Input: a config file. Inputs naming a file to read (`*_file` keys) are skipped: the target
/// is the parser and the validator, not the machine's files.
pub fn config(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if text.contains("_file") {
        return;
    }
    match Config::from_toml(text, &NoEnv) {
        Ok(c) => check_config(&c),
        Err(ConfigErrors::Invalid(errors)) => {
            assert!(!errors.is_empty());
            assert!(
                errors
                    .iter()
                    .all(|e| !e.key.is_empty() && !e.message.is_empty())
            );
        }
        Err(_) => {}
    }
    check_secrets_are_not_echoed(text);
}

/// What the validator promises about every config it accepts.
fn check_config(c: &Config) {
    let origin = &c.server.public_origin;
    assert!(matches!(origin.scheme(), "https" | "http"));
    assert_eq!(c.server.origin, origin.origin().ascii_serialization());
    assert_eq!(c.oidc.redirect_uri.origin(), origin.origin());
    assert_eq!(c.oidc.post_logout_redirect_uri.origin(), origin.origin());
    assert!(c.session.cookie_name.starts_with("__Host-"));
    assert!(!c.oidc.allowed_algs.is_empty());
    for alg in &c.oidc.allowed_algs {
        let name = serde_json::to_value(alg).unwrap_or_default();
        let name = name.as_str().unwrap_or("");
        assert!(name != "none" && !name.starts_with("HS"), "{name} allowed");
    }
    assert!(c.oidc.clock_skew <= Duration::from_secs(300));
    assert!(c.oidc.max_id_token_age <= Duration::from_secs(3600));
    assert!(is_routable_path(&c.auth.prefix));
    for route in c.routes.iter() {
        assert!(is_valid_prefix(&route.prefix) && is_routable_path(&route.prefix));
        let under_auth = route.prefix == c.auth.prefix
            || route.prefix.starts_with(&format!("{}/", c.auth.prefix));
        assert!(!under_auth, "{} is inside the auth prefix", route.prefix);
    }
    let sealed = c.session.keys.seal("n", b"v");
    assert!(c.session.keys.open("n", &sealed).is_some());
}

/// An error message never repeats a secret's value. Each secret of the file (client secret,
/// session keys, Redis URL) that appears once in it, as written, is swapped for its case
/// swap: if the messages then echo the swapped text, they echoed the secret.
fn check_secrets_are_not_echoed(text: &str) {
    let Ok(table) = text.parse::<toml::Table>() else {
        return;
    };
    let mut secrets: Vec<String> = Vec::new();
    let at = |section: &str, key: &str| table.get(section).and_then(|s| s.get(key)).cloned();
    if let Some(toml::Value::String(s)) = at("oidc", "client_secret") {
        secrets.push(s);
    }
    if let Some(toml::Value::String(s)) = at("session", "redis_url") {
        secrets.push(s);
    }
    match at("session", "keys") {
        Some(toml::Value::Array(keys)) => {
            secrets.extend(
                keys.into_iter()
                    .filter_map(|k| k.as_str().map(str::to_owned)),
            );
        }
        Some(toml::Value::String(s)) => secrets.push(s),
        _ => {}
    }
    for secret in secrets {
        let swapped: String = secret
            .chars()
            .map(|c| match c {
                'a'..='z' => c.to_ascii_uppercase(),
                'A'..='Z' => c.to_ascii_lowercase(),
                c => c,
            })
            .collect();
        let letters = secret.chars().filter(char::is_ascii_alphabetic).count();
        if letters < 6 || text.matches(secret.as_str()).count() != 1 {
            continue;
        }
        let before = messages(text);
        let after = messages(&text.replacen(secret.as_str(), &swapped, 1));
        assert!(
            !(before.contains(secret.as_str()) && after.contains(swapped.as_str())),
            "an error message repeats a secret: {before}"
        );
    }
}

fn messages(text: &str) -> String {
    match Config::from_toml(text, &NoEnv) {
        Ok(c) => c.warnings.join("\n"),
        Err(e) => e.to_string(),
    }
}
