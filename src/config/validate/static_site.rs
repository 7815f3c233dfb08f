//! Static routes' keys (`static_dir`, `spa_fallback`, `immutable`, `content_security_policy`),
//! and the rule that each route kind takes only its own keys. Relative paths are resolved
//! against the working directory, like every other path in the config.

use std::path::Path;

use http::HeaderValue;

use super::super::file::*;
use super::Errors;
use crate::routes::AuthMode;
use crate::static_files::policy::{Pattern, Scope};
use crate::static_files::{DEFAULT_CSP, StaticSite, resolve};

/// Upstream routes refuse the keys that only mean something for files.
pub(super) fn no_static_keys(key: &str, f: &RouteFile, errs: &mut Errors) {
    for (name, set) in [
        ("spa_fallback", f.spa_fallback.is_some()),
        ("immutable", f.immutable.is_some()),
        (
            "content_security_policy",
            f.content_security_policy.is_some(),
        ),
    ] {
        if set {
            errs.push(
                format!("{key}.{name}"),
                format!("only for static routes (static_dir); {key} forwards to an upstream"),
            );
        }
    }
}

pub(super) fn site(
    key: &str,
    dir: &str,
    f: &RouteFile,
    mode: AuthMode,
    errs: &mut Errors,
) -> Option<StaticSite> {
    for (name, set) in [
        ("timeout", f.timeout.is_some()),
        ("allow_plain_http", f.allow_plain_http.is_some()),
        ("stream_idle_timeout", f.stream_idle_timeout.is_some()),
        ("websocket_idle_timeout", f.websocket_idle_timeout.is_some()),
        ("upstream_http2", f.upstream_http2.is_some()),
        (
            "retry_idempotent_writes",
            f.retry_idempotent_writes.is_some(),
        ),
        ("health_path", f.health_path.is_some()),
        ("health_interval", f.health_interval.is_some()),
        ("max_body", f.max_body.is_some()),
        ("csrf_header", f.csrf_header.is_some()),
        ("csrf_value", f.csrf_value.is_some()),
    ] {
        if set {
            errs.push(
                format!("{key}.{name}"),
                format!("only for upstream routes; {key} serves files (static_dir)"),
            );
        }
    }
    if mode == AuthMode::Optional {
        errs.push(
            format!("{key}.auth"),
            "\"optional\" means nothing on a static route (there is no token to attach); use \"none\" or \"required\"",
        );
    }
    let immutable = f
        .immutable
        .iter()
        .flatten()
        .enumerate()
        .filter_map(|(j, raw)| {
            Pattern::parse(raw)
                .map_err(|msg| errs.push(format!("{key}.immutable[{j}]"), msg))
                .ok()
        })
        .collect();
    let csp_raw = f.content_security_policy.as_deref().unwrap_or(DEFAULT_CSP);
    let csp = match HeaderValue::from_str(csp_raw.trim()) {
        Ok(v) if !v.is_empty() => Some(v),
        _ => {
            errs.push(
                format!("{key}.content_security_policy"),
                "must be a non-empty header value (printable ASCII on one line)",
            );
            None
        }
    };
    let root = static_dir(&format!("{key}.static_dir"), dir, errs)?;
    let fallback = match &f.spa_fallback {
        Some(raw) => Some(fallback(&format!("{key}.spa_fallback"), raw, &root, errs)?),
        None => None,
    };
    Some(StaticSite {
        root,
        fallback,
        immutable,
        csp: csp?,
        scope: match mode {
            AuthMode::None => Scope::Public,
            AuthMode::Required | AuthMode::Optional => Scope::Private,
        },
    })
}

/// The directory, canonical (symlinks resolved), so that containment compares real paths.
fn static_dir(key: &str, dir: &str, errs: &mut Errors) -> Option<std::path::PathBuf> {
    let root = match std::fs::canonicalize(dir) {
        Ok(root) => root,
        Err(e) => {
            let cwd = std::env::current_dir()
                .map(|d| d.display().to_string())
                .unwrap_or_else(|_| "?".to_owned());
            let why = if e.kind() == std::io::ErrorKind::NotFound {
                "does not exist".to_owned()
            } else {
                format!("cannot be opened ({e})")
            };
            errs.push(
                key,
                format!("{dir:?} {why}; relative paths are resolved against the working directory ({cwd})"),
            );
            return None;
        }
    };
    if !root.is_dir() {
        errs.push(
            key,
            format!("{dir:?} is not a directory ({})", root.display()),
        );
        return None;
    }
    Some(root)
}

/// A regular file inside `root`, named the way the resolver will look it up at request time.
fn fallback(key: &str, raw: &str, root: &Path, errs: &mut Errors) -> Option<String> {
    let plain = !raw.contains('%')
        && resolve::segments(raw).is_some_and(|(segments, dir)| !segments.is_empty() && !dir);
    if !plain {
        errs.push(
            key,
            format!("{raw:?} must name a file relative to static_dir, like \"index.html\": no leading or trailing /, no . or .. segments, no hidden names, no %"),
        );
        return None;
    }
    let inside = std::fs::canonicalize(root.join(raw))
        .is_ok_and(|path| path.starts_with(root) && path.is_file());
    if !inside {
        errs.push(
            key,
            format!(
                "{raw:?} is not a file inside static_dir ({})",
                root.display()
            ),
        );
        return None;
    }
    Some(raw.to_owned())
}

#[cfg(test)]
mod tests {
    use super::super::super::{Config, ConfigErrors, NoEnv};

    /// The keys refused in a config with one static route over `dir` and the extra lines
    /// `route` (`auth = "none"` unless they set it).
    fn refused(dir: &str, route: &str) -> Vec<String> {
        let text = format!(
            r#"
[server]
public_origin = "https://app.example.com"
[oidc]
issuer = "https://id.example.com"
client_id = "bff"
client_secret = "s"
[[routes]]
path = "/"
static_dir = {dir}
{auth}
{route}
"#,
            dir = toml::Value::String(dir.to_owned()),
            auth = if route.contains("auth =") {
                ""
            } else {
                "auth = \"none\""
            },
        );
        match Config::from_toml(&text, &NoEnv) {
            Ok(_) => Vec::new(),
            Err(ConfigErrors::Invalid(errors)) => errors.into_iter().map(|e| e.key).collect(),
            Err(other) => vec![other.to_string()],
        }
    }

    fn site() -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("index.html"), "<!doctype html>").unwrap();
        std::fs::create_dir(dir.path().join("sub")).unwrap();
        dir
    }

    #[test]
    fn a_static_route_over_an_existing_directory_is_accepted() {
        let dir = site();
        let path = dir.path().to_str().unwrap();
        assert!(refused(path, "spa_fallback = \"index.html\"").is_empty());
        assert!(
            refused(
                path,
                "immutable = [\"assets/**\"]\ncontent_security_policy = \"default-src 'self'\""
            )
            .is_empty()
        );
    }

    #[test]
    fn static_dir_must_exist_and_be_a_directory() {
        let dir = site();
        let missing = dir.path().join("nope");
        assert_eq!(
            refused(missing.to_str().unwrap(), ""),
            ["routes[0].static_dir"]
        );
        let file = dir.path().join("index.html");
        assert_eq!(
            refused(file.to_str().unwrap(), ""),
            ["routes[0].static_dir"]
        );
    }

    #[test]
    fn spa_fallback_must_be_a_file_inside_static_dir() {
        let dir = site();
        let outside = tempfile::NamedTempFile::new().unwrap();
        let path = dir.path().to_str().unwrap();
        for bad in [
            "missing.html".to_owned(),
            "sub".to_owned(),
            "sub/".to_owned(),
            "../index.html".to_owned(),
            "/etc/passwd".to_owned(),
            ".hidden".to_owned(),
            "index%2ehtml".to_owned(),
            outside.path().display().to_string(),
        ] {
            assert_eq!(
                refused(
                    path,
                    &format!("spa_fallback = {}", toml::Value::String(bad.clone()))
                ),
                ["routes[0].spa_fallback"],
                "{bad}"
            );
        }
        std::os::unix::fs::symlink(outside.path(), dir.path().join("out.html")).unwrap();
        assert_eq!(
            refused(path, "spa_fallback = \"out.html\""),
            ["routes[0].spa_fallback"],
            "a symlink out of static_dir"
        );
    }

    #[test]
    fn a_route_has_exactly_one_of_upstream_and_static_dir() {
        let dir = site();
        let path = dir.path().to_str().unwrap();
        assert_eq!(
            refused(path, "upstream = \"http://127.0.0.1:9\""),
            ["routes[0].static_dir"]
        );
        let text = format!(
            "{}spa_fallback = \"index.html\"\nimmutable = [\"x\"]\n",
            super::super::tests::BASE
        );
        assert_eq!(
            super::super::tests::refused(&text),
            ["routes[0].spa_fallback", "routes[0].immutable"]
        );
    }

    #[test]
    fn each_route_kind_refuses_the_other_kinds_keys() {
        let dir = site();
        let path = dir.path().to_str().unwrap();
        assert_eq!(
            refused(
                path,
                "timeout = \"5s\"\ncsrf_header = \"X-A\"\nallow_plain_http = true"
            ),
            [
                "routes[0].timeout",
                "routes[0].allow_plain_http",
                "routes[0].csrf_header"
            ]
        );
        assert_eq!(
            refused(
                path,
                "stream_idle_timeout = \"1m\"\nwebsocket_idle_timeout = \"1m\"\nupstream_http2 = true"
            ),
            [
                "routes[0].stream_idle_timeout",
                "routes[0].websocket_idle_timeout",
                "routes[0].upstream_http2"
            ]
        );
        let text = r#"
[server]
public_origin = "https://app.example.com"
[oidc]
issuer = "https://id.example.com"
client_id = "bff"
client_secret = "s"
[[routes]]
path = "/api/"
upstream = "https://api.internal"
auth = "required"
spa_fallback = "index.html"
immutable = ["x"]
"#;
        match Config::from_toml(text, &NoEnv) {
            Err(ConfigErrors::Invalid(errors)) => {
                let keys: Vec<_> = errors.into_iter().map(|e| e.key).collect();
                assert_eq!(keys, ["routes[0].spa_fallback", "routes[0].immutable"]);
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn optional_auth_bad_patterns_and_an_empty_policy_are_refused() {
        let dir = site();
        let path = dir.path().to_str().unwrap();
        assert!(refused(path, "auth = \"required\"").is_empty());
        assert_eq!(refused(path, "auth = \"optional\""), ["routes[0].auth"]);
        assert_eq!(
            refused(path, "immutable = [\"assets/**\", \"/abs\"]"),
            ["routes[0].immutable[1]"]
        );
        assert_eq!(
            refused(path, "content_security_policy = \"\""),
            ["routes[0].content_security_policy"]
        );
    }
}
