//! `gatehouse check --online` through the real binary: against healthy and broken providers
//! and stores it reports each finding with the config key to change, and exits non-zero on
//! errors only.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "tests fail loudly"
)]

mod support;

use std::path::PathBuf;
use std::process::Command;

use support::provider::{Override, Shape};
use support::*;

/// The outcome of one run: success, and stdout + stderr.
struct Run {
    ok: bool,
    out: String,
}

impl Run {
    /// The line of this level naming this key (e.g. `error: oidc.issuer: …`).
    fn line(&self, level: &str, key: &str) -> &str {
        let prefix = format!("{level}: {key}: ");
        self.out
            .lines()
            .find(|l| l.starts_with(&prefix))
            .unwrap_or_else(|| panic!("no {prefix:?} line in:\n{}", self.out))
    }

    fn lacks(&self, level: &str) {
        assert!(
            !self
                .out
                .lines()
                .any(|l| l.starts_with(&format!("{level}: "))),
            "unexpected {level}:\n{}",
            self.out
        );
    }
}

/// Writes `config` (with `{listen}` and `{origin}` filled in) to a file and runs
/// `gatehouse check --online` on it, off the runtime so the in-process provider keeps serving.
async fn check_online(config: &str) -> Run {
    let text = config
        .replace("{listen}", "127.0.0.1:0")
        .replace("{origin}", "http://127.0.0.1:8080");
    let n: u64 = rand::random();
    let path: PathBuf = std::env::temp_dir().join(format!("gatehouse-online-{n:x}.toml"));
    std::fs::write(&path, text).unwrap();
    let file = path.clone();
    let output = tokio::task::spawn_blocking(move || {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_gatehouse"));
        for var in [
            "GATEHOUSE_CONFIG",
            "GATEHOUSE_LOG",
            "GATEHOUSE_OIDC_CLIENT_SECRET",
            "GATEHOUSE_SESSION_KEYS",
            "GATEHOUSE_REDIS_URL",
        ] {
            cmd.env_remove(var);
        }
        cmd.args(["check", "--online", "--config", file.to_str().unwrap()])
            .output()
            .expect("run the gatehouse binary")
    })
    .await
    .unwrap();
    let _ = std::fs::remove_file(path);
    Run {
        ok: output.status.success(),
        out: format!(
            "{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        ),
    }
}

fn with_oidc(config: &str, lines: &str) -> String {
    config.replacen("\n[session]", &format!("{lines}\n\n[session]"), 1)
}

async fn provider(shape: Shape) -> (TestProvider, EchoUpstream) {
    let provider = TestProvider::start(ProviderOptions::shaped(shape)).await;
    (provider, EchoUpstream::start().await)
}

#[tokio::test]
async fn a_healthy_provider_and_store_pass_with_every_capability_reported() {
    let (p, up) = provider(Shape::Standard).await;
    let run = check_online(&config(&p, &up, &redis_session(&unique_prefix("chk"), ""))).await;
    assert!(run.ok, "{}", run.out);
    run.lacks("error");
    run.lacks("warning");
    for expected in [
        "ok: discovery at ",
        "ok: signing keys usable with oidc.allowed_algs: key-1 (RS256)",
        "ok: logout sends the browser to the end-session endpoint",
        "ok: logout revokes the tokens at",
        "ok: back-channel logout with sid is advertised",
        "ok: the session store (redis) answers",
        "0 error(s), 0 warning(s)",
    ] {
        assert!(
            run.out.contains(expected),
            "{expected:?} missing:\n{}",
            run.out
        );
    }
    assert!(
        p.stats().discovery >= 1 && p.stats().jwks >= 1,
        "it really asked"
    );
}

#[tokio::test]
async fn a_provider_without_revocation_warns_that_logout_will_not_revoke_tokens_and_passes() {
    let (p, up) = provider(Shape::EntraId).await;
    let run = check_online(&config(&p, &up, "")).await;
    assert!(run.ok, "warnings only: {}", run.out);
    let line = run.line("warning", "oidc.revocation_endpoint");
    assert!(line.contains("logout will not revoke tokens"), "{line}");
    assert!(
        run.out
            .contains("info: the provider does not advertise RFC 9207 iss")
    );
    assert!(run.out.contains("PKCE S256 is sent anyway"), "{}", run.out);
}

#[tokio::test]
async fn google_with_offline_access_and_no_end_session_gets_warnings_naming_their_keys() {
    let (p, up) = provider(Shape::Google).await;
    let run = check_online(&config(&p, &up, "")).await;
    assert!(run.ok, "{}", run.out);
    assert!(
        run.line("warning", "oidc.scopes")
            .contains("offline_access")
    );
    assert!(
        run.line("warning", "oidc.end_session_endpoint")
            .contains("logout ends the gatehouse session only")
    );
}

#[tokio::test]
async fn an_issuer_missing_its_trailing_slash_fails_with_the_exact_value_to_set() {
    let (p, up) = provider(Shape::Auth0).await;
    let issuer = p.issuer();
    let without = issuer.trim_end_matches('/').to_owned();
    let text = config(&p, &up, "").replace(
        &format!("issuer = \"{issuer}\""),
        &format!("issuer = \"{without}\""),
    );
    let run = check_online(&text).await;
    assert!(!run.ok, "{}", run.out);
    let line = run.line("error", "oidc.issuer");
    assert!(line.contains("trailing slash"), "{line}");
    assert!(
        line.contains(&format!("set oidc.issuer = \"{issuer}\"")),
        "{line}"
    );
}

#[tokio::test]
async fn a_discovery_document_for_another_issuer_fails() {
    let (p, up) = provider(Shape::Standard).await;
    p.set(|m| m.discovery_issuer = Override::Wrong);
    let run = check_online(&config(&p, &up, "")).await;
    assert!(!run.ok);
    assert!(
        run.line("error", "oidc.issuer")
            .contains("https://evil.example")
    );
}

#[tokio::test]
async fn an_unreachable_provider_fails_naming_oidc_issuer() {
    let (p, up) = provider(Shape::Standard).await;
    let text = config(&p, &up, "");
    drop(p);
    let run = check_online(&text).await;
    assert!(!run.ok);
    assert!(run.line("error", "oidc.issuer").contains("unreachable"));
}

#[tokio::test]
async fn a_failing_jwks_fails_naming_oidc_jwks_uri() {
    let (p, up) = provider(Shape::Standard).await;
    p.set(|m| m.jwks_fault = true);
    let run = check_online(&config(&p, &up, "")).await;
    assert!(!run.ok);
    assert!(run.line("error", "oidc.jwks_uri").contains("HTTP 500"));
}

#[tokio::test]
async fn keys_no_allowed_algorithm_can_use_fail_naming_oidc_allowed_algs() {
    let (p, up) = provider(Shape::Standard).await;
    let run = check_online(&with_oidc(
        &config(&p, &up, ""),
        r#"allowed_algs = ["ES256"]"#,
    ))
    .await;
    assert!(!run.ok);
    assert!(
        run.line("error", "oidc.allowed_algs")
            .contains("every login will fail")
    );
}

#[tokio::test]
async fn an_unreachable_redis_fails_naming_session_redis_url() {
    let (p, up) = provider(Shape::Standard).await;
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = closed.local_addr().unwrap().port();
    drop(closed);
    let session = format!(
        "store = \"redis\"\nredis_url = \"redis://127.0.0.1:{port}\"\nstore_timeout = \"500ms\""
    );
    let run = check_online(&config(&p, &up, &session)).await;
    assert!(!run.ok, "{}", run.out);
    run.line("error", "session.redis_url");
    assert!(
        run.out.contains("ok: discovery at "),
        "the provider is still checked"
    );
}

#[tokio::test]
async fn a_provider_behind_an_unknown_ca_fails_naming_oidc_ca_file() {
    let opts = ProviderOptions {
        tls: true,
        ..ProviderOptions::default()
    };
    let p = TestProvider::start(opts).await;
    let up = EchoUpstream::start().await;
    let run = check_online(&config(&p, &up, "")).await;
    assert!(!run.ok);
    assert!(run.line("error", "oidc.ca_file").contains("private CA"));
}
