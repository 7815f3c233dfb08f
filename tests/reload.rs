//! Reloading the config while serving: key rotation, live routes, refused broken files, and
//! no request lost across a reload; then `SIGHUP` and the file watch on the real binary.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "tests fail loudly"
)]

mod support;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine as _;
use gatehouse::config::NoEnv;
use gatehouse::cookie::{KEY_LEN, KeyRing};
use gatehouse::reload::reload_from;
use reqwest::Method;
use support::*;

fn ring(keys: &[&str]) -> KeyRing {
    KeyRing::new(
        keys.iter()
            .map(|k| {
                let bytes = base64::engine::general_purpose::STANDARD.decode(k).unwrap();
                <[u8; KEY_LEN]>::try_from(bytes.as_slice()).unwrap()
            })
            .collect(),
    )
}

/// A config file in a temp dir, its text with gatehouse's address filled in.
struct File {
    path: PathBuf,
    template: String,
}

impl File {
    fn new(template: String, gh: &Gatehouse) -> File {
        let dir = std::env::temp_dir().join(format!("gh-reload-{:x}", rand::random::<u64>()));
        std::fs::create_dir_all(&dir).unwrap();
        let f = File {
            path: dir.join("config.toml"),
            template,
        };
        f.write(gh, |t| t.to_owned());
        f
    }

    fn write(&self, gh: &Gatehouse, edit: impl FnOnce(&str) -> String) {
        let text = edit(&self.template)
            .replace("{listen}", &gh.addr.to_string())
            .replace("{origin}", &gh.origin);
        std::fs::write(&self.path, text).unwrap();
    }
}

impl Drop for File {
    fn drop(&mut self) {
        if let Some(dir) = self.path.parent() {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

#[tokio::test]
async fn rotating_session_keys_by_reload_keeps_old_cookies_and_seals_new_ones_with_the_new_key() {
    let stack = Stack::start().await;
    let file = File::new(config(&stack.provider, &stack.upstream, ""), &stack.gh);
    let mut before = stack.browser();
    before.login("/").await;
    let old_cookie = before.session_cookie().unwrap();
    assert!(ring(&[KEY_A]).open(COOKIE, &old_cookie).is_some());

    file.write(&stack.gh, |t| {
        t.replace(
            &format!("[\"{KEY_A}\"]"),
            &format!("[\"{KEY_B}\", \"{KEY_A}\"]"),
        )
    });
    assert!(reload_from(&stack.gh.app, &file.path, &NoEnv));
    assert_eq!(
        before.api(Method::GET, "/api/x").await.status(),
        200,
        "old cookies still open"
    );
    let mut after = stack.browser();
    after.login("/").await;
    let new_cookie = after.session_cookie().unwrap();
    assert!(
        ring(&[KEY_B]).open(COOKIE, &new_cookie).is_some(),
        "sealed with the new key"
    );
    assert!(ring(&[KEY_A]).open(COOKIE, &new_cookie).is_none());

    // The old key retired: its cookies stop opening, the new ones go on.
    file.write(&stack.gh, |t| {
        t.replace(&format!("[\"{KEY_A}\"]"), &format!("[\"{KEY_B}\"]"))
    });
    assert!(reload_from(&stack.gh.app, &file.path, &NoEnv));
    assert_eq!(before.api(Method::GET, "/api/x").await.status(), 401);
    assert_eq!(after.api(Method::GET, "/api/x").await.status(), 200);
}

#[tokio::test]
async fn a_broken_config_is_refused_with_every_problem_logged_and_the_old_one_keeps_serving() {
    let stack = Stack::start().await;
    let file = File::new(config(&stack.provider, &stack.upstream, ""), &stack.gh);
    let mut b = stack.browser();
    b.login("/").await;
    file.write(&stack.gh, |t| {
        t.replace("auth = \"required\"", "auth = \"sometimes\"")
            .replace(&format!("[\"{KEY_A}\"]"), "[\"not-a-key\"]")
    });
    assert!(!reload_from(&stack.gh.app, &file.path, &NoEnv));
    let log = logs();
    assert!(log.contains("configuration reload refused"), "{log}");
    assert!(
        log.contains("routes[0].auth") && log.contains("session.keys[0]"),
        "every problem is named"
    );
    assert_eq!(
        b.api(Method::GET, "/api/x").await.status(),
        200,
        "the old config serves on"
    );
    assert_eq!(b.api(Method::GET, "/api/x").await.status(), 200);
}

#[tokio::test]
async fn routes_change_live_and_restart_only_keys_are_reported_not_applied() {
    let stack = Stack::start().await;
    let other = EchoUpstream::start().await;
    let file = File::new(config(&stack.provider, &stack.upstream, ""), &stack.gh);
    let mut b = stack.browser();
    b.login("/").await;
    file.write(&stack.gh, |t| {
        format!(
            "{}\n[[routes]]\npath = \"/v2/\"\nupstream = \"{}\"\nauth = \"required\"\n",
            t.replace(
                "shutdown_grace = \"5s\"",
                "shutdown_grace = \"5s\"\nmax_connections = 7\nallowed_hosts = [\"alias.test\"]"
            ),
            other.url()
        )
    });
    assert!(reload_from(&stack.gh.app, &file.path, &NoEnv));
    assert_eq!(
        b.api(Method::GET, "/v2/things").await.status(),
        200,
        "the new route is live"
    );
    assert_eq!(other.last().path_and_query, "/v2/things");
    let config = stack.gh.app.snapshot();
    assert_eq!(
        config
            .server
            .allowed_hosts
            .iter()
            .filter(|h| h.starts_with("alias.test"))
            .count(),
        2
    );
    assert_eq!(
        config.server.max_connections, 10_000,
        "a restart-only key keeps its running value"
    );
    let log = logs();
    assert!(
        log.lines()
            .any(|l| l.contains("server.max_connections") && l.contains("after a restart")),
        "{log}"
    );
}

#[tokio::test]
async fn a_load_of_requests_runs_through_twenty_reloads_without_one_error() {
    let stack = Stack::start().await;
    let file = Arc::new(File::new(
        config(&stack.provider, &stack.upstream, ""),
        &stack.gh,
    ));
    let mut b = stack.browser();
    b.login("/").await;
    let cookie = b.session_cookie().unwrap();
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let http = reqwest::Client::new();
    let mut workers = Vec::new();
    for _ in 0..16 {
        let (http, url, cookie, stop) = (
            http.clone(),
            stack.gh.url("/api/x"),
            cookie.clone(),
            Arc::clone(&stop),
        );
        workers.push(tokio::spawn(async move {
            let (mut ok, mut failed) = (0u32, Vec::new());
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let res = http
                    .get(&url)
                    .header("x-csrf", "1")
                    .header("cookie", format!("{COOKIE}={cookie}"))
                    .send()
                    .await;
                match res.map(|r| r.status().as_u16()) {
                    Ok(200) => ok += 1,
                    other => failed.push(format!("{other:?}")),
                }
            }
            (ok, failed)
        }));
    }
    for i in 0..20 {
        let keys = if i % 2 == 0 {
            format!("[\"{KEY_B}\", \"{KEY_A}\"]")
        } else {
            format!("[\"{KEY_A}\", \"{KEY_B}\"]")
        };
        file.write(&stack.gh, |t| {
            t.replace(&format!("[\"{KEY_A}\"]"), &keys)
                .replace("timeout = \"1s\"", &format!("timeout = \"{}s\"", 1 + i % 3))
        });
        let (app, path) = (Arc::clone(&stack.gh.app), file.path.clone());
        let reloaded = tokio::task::spawn_blocking(move || reload_from(&app, &path, &NoEnv))
            .await
            .unwrap();
        assert!(reloaded);
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let mut total = 0;
    for w in workers {
        let (ok, failed) = w.await.unwrap();
        assert!(
            failed.is_empty(),
            "requests failed across reloads: {failed:?}"
        );
        total += ok;
    }
    assert!(total > 100, "only {total} requests ran");
}

/// The real binary, on a free port, with its config in a temp file.
struct Binary {
    child: std::process::Child,
    origin: String,
    path: PathBuf,
}

impl Binary {
    async fn start(text: &str) -> Binary {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let dir = std::env::temp_dir().join(format!("gh-reload-bin-{:x}", rand::random::<u64>()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("config.toml");
        let origin = format!("http://127.0.0.1:{port}");
        std::fs::write(&path, Self::fill(text, port)).unwrap();
        let child = std::process::Command::new(env!("CARGO_BIN_EXE_gatehouse"))
            .arg("--config")
            .arg(&path)
            .env_remove("GATEHOUSE_SESSION_KEYS")
            .env_remove("GATEHOUSE_REDIS_URL")
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let b = Binary {
            child,
            origin,
            path,
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        while reqwest::get(format!("{}/readyz", b.origin))
            .await
            .map(|r| r.status().as_u16())
            .ok()
            != Some(200)
        {
            assert!(Instant::now() < deadline, "the binary did not get ready");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        b
    }

    fn fill(text: &str, port: u16) -> String {
        text.replace("{listen}", &format!("127.0.0.1:{port}"))
            .replace("{origin}", &format!("http://127.0.0.1:{port}"))
    }

    fn rewrite(&self, text: &str) {
        let port: u16 = self.origin.rsplit(':').next().unwrap().parse().unwrap();
        // Write then rename, as config management tools do: the watcher never reads half a file.
        let tmp = self.path.with_extension("tmp");
        std::fs::write(&tmp, Self::fill(text, port)).unwrap();
        std::fs::rename(&tmp, &self.path).unwrap();
    }

    fn hangup(&self) {
        let status = std::process::Command::new("kill")
            .arg("-HUP")
            .arg(self.child.id().to_string())
            .status()
            .unwrap();
        assert!(status.success());
    }

    async fn wait_status(&self, path: &str, want: u16) {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let status = reqwest::get(format!("{}{path}", self.origin))
                .await
                .unwrap()
                .status();
            if status == want {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{path} never answered {want} (last {status})"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    fn stop(mut self) -> String {
        let _ = std::process::Command::new("kill")
            .arg(self.child.id().to_string())
            .status();
        let out = std::mem::replace(
            &mut self.child,
            std::process::Command::new("true").spawn().unwrap(),
        )
        .wait_with_output()
        .unwrap();
        let _ = std::fs::remove_dir_all(self.path.parent().unwrap());
        String::from_utf8_lossy(&out.stderr).into_owned()
    }
}

fn with_route(text: &str, upstream: &EchoUpstream, path: &str) -> String {
    format!(
        "{text}\n[[routes]]\npath = \"{path}\"\nupstream = \"{}\"\nauth = \"none\"\n",
        upstream.url()
    )
}

/// The usual config without the catch-all route, so an unknown path is 404.
fn without_catch_all(text: &str) -> String {
    let cut = text.rfind("[[routes]]\npath = \"/\"").unwrap();
    text[..cut].to_owned()
}

#[tokio::test]
async fn sighup_reloads_the_running_binary_and_refuses_a_broken_file() {
    let provider = TestProvider::start(ProviderOptions::default()).await;
    let upstream = EchoUpstream::start().await;
    let base = without_catch_all(&config(&provider, &upstream, ""));
    let bin = Binary::start(&base).await;
    bin.wait_status("/new/x", 404).await;

    bin.rewrite(&with_route(&base, &upstream, "/new/"));
    bin.hangup();
    bin.wait_status("/new/x", 200).await;

    bin.rewrite(&base.replace("auth = \"required\"", "auth = \"whenever\""));
    bin.hangup();
    tokio::time::sleep(Duration::from_millis(500)).await;
    bin.wait_status("/new/x", 200).await;
    let stderr = bin.stop();
    assert!(stderr.contains("configuration reloaded"), "{stderr}");
    assert!(stderr.contains("configuration reload refused"), "{stderr}");
    assert!(stderr.contains("routes[0].auth"), "{stderr}");
}

#[tokio::test]
async fn with_watch_config_a_changed_file_is_reloaded_without_a_signal() {
    let provider = TestProvider::start(ProviderOptions::default()).await;
    let upstream = EchoUpstream::start().await;
    let base = without_catch_all(&config(&provider, &upstream, "")).replacen(
        "shutdown_grace = \"5s\"",
        "shutdown_grace = \"5s\"\nwatch_config = true",
        1,
    );
    let bin = Binary::start(&base).await;
    bin.wait_status("/watched/x", 404).await;
    bin.rewrite(&with_route(&base, &upstream, "/watched/"));
    bin.wait_status("/watched/x", 200).await;
    let stderr = bin.stop();
    assert!(stderr.contains("the config file changed"), "{stderr}");
}
