//! `gatehouse sessions`, run through the real binary against the Redis store that running
//! instances share: counting, and ending one user's sessions on every instance.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "tests fail loudly"
)]

mod support;

use std::process::Output;

use reqwest::Method;
use support::redis_topology::Cluster;
use support::*;

/// Writes `config` to a temp file and runs `gatehouse --config <it> <args>`.
async fn gatehouse(config: &str, args: &[&str]) -> Output {
    let dir = std::env::temp_dir().join(format!("gh-sessions-{:x}", rand::random::<u64>()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("config.toml");
    // The command needs the store and keys only; the listener placeholders get any value.
    let config = config
        .replace("{listen}", "127.0.0.1:0")
        .replace("{origin}", "http://127.0.0.1:8080");
    std::fs::write(&path, config).unwrap();
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_gatehouse"))
        .arg("--config")
        .arg(&path)
        .args(args)
        .env_remove("GATEHOUSE_REDIS_URL")
        .env_remove("GATEHOUSE_REDIS_PASSWORD")
        .env_remove("GATEHOUSE_SESSION_KEYS")
        .output()
        .await
        .unwrap();
    let _ = std::fs::remove_dir_all(&dir);
    out
}

fn stdout(out: &Output) -> String {
    assert!(
        out.status.success(),
        "exit {:?}: {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

async fn logged_in(gh: &Gatehouse, sub: &str) -> Browser {
    let mut b = Browser::new(&gh.origin);
    let at_provider = b.start_login("/").await;
    let back = b
        .authorize(&format!("{at_provider}&login_hint={sub}"))
        .await;
    assert_eq!(b.callback(&back).await.status(), 200);
    b
}

async fn alive(b: &mut Browser) -> bool {
    b.api(Method::GET, "/api/x").await.status() == 200
}

#[tokio::test]
async fn sessions_end_by_sub_ends_exactly_that_users_sessions_on_every_instance() {
    let prefix = unique_prefix("cli");
    let provider = TestProvider::start(ProviderOptions::default()).await;
    let upstream = EchoUpstream::start().await;
    let text = config(&provider, &upstream, &redis_session(&prefix, ""));
    let (a, b) = tokio::join!(Gatehouse::start(&text), Gatehouse::start(&text));
    assert_eq!(
        stdout(&gatehouse(&text, &["sessions", "count"]).await),
        "0 session(s)"
    );

    let mut alice_on_a = logged_in(&a, "alice").await;
    let mut alice_on_b = logged_in(&b, "alice").await;
    let mut bob = logged_in(&b, "bob").await;
    assert_eq!(
        stdout(&gatehouse(&text, &["sessions", "count"]).await),
        "3 session(s)"
    );
    assert_eq!(
        stdout(&gatehouse(&text, &["sessions", "count", "--sub", "alice"]).await),
        "2 live session(s) of that subject"
    );

    let ended = gatehouse(&text, &["sessions", "end", "--sub", "alice"]).await;
    assert_eq!(stdout(&ended), "ended 2 session(s) of that subject");
    assert!(!alive(&mut alice_on_a).await, "ended on instance A");
    assert!(!alive(&mut alice_on_b).await, "ended on instance B");
    assert!(alive(&mut bob).await, "another user's session lives");
    assert_eq!(
        stdout(&gatehouse(&text, &["sessions", "count", "--sub", "alice"]).await),
        "0 live session(s) of that subject"
    );
    assert_eq!(
        stdout(&gatehouse(&text, &["sessions", "count"]).await),
        "1 session(s)"
    );
}

#[tokio::test]
async fn sessions_end_by_sid_ends_one_provider_session() {
    let prefix = unique_prefix("cli-sid");
    let provider = TestProvider::start(ProviderOptions::default()).await;
    let upstream = EchoUpstream::start().await;
    let text = config(&provider, &upstream, &redis_session(&prefix, ""));
    let gh = Gatehouse::start(&text).await;
    let mut first = logged_in(&gh, "alice").await;
    let mut second = logged_in(&gh, "alice").await;
    let sid = provider.stats().sids[0].clone();
    let ended = gatehouse(&text, &["sessions", "end", "--sid", &sid]).await;
    assert_eq!(
        stdout(&ended),
        "ended 1 session(s) of that provider session"
    );
    assert!(!alive(&mut first).await);
    assert!(alive(&mut second).await);
}

#[tokio::test]
async fn sessions_count_walks_every_master_of_a_cluster() {
    let cluster = Cluster::shared().await;
    let prefix = unique_prefix("cli-cluster");
    let provider = TestProvider::start(ProviderOptions::default()).await;
    let upstream = EchoUpstream::start().await;
    let text = config(&provider, &upstream, &cluster.session(&prefix, ""));
    let gh = Gatehouse::start(&text).await;
    for sub in ["alice", "bob", "carol", "dave", "erin", "frank"] {
        logged_in(&gh, sub).await;
    }
    assert_eq!(
        stdout(&gatehouse(&text, &["sessions", "count"]).await),
        "6 session(s)"
    );
    let ended = gatehouse(&text, &["sessions", "end", "--sub", "carol"]).await;
    assert_eq!(stdout(&ended), "ended 1 session(s) of that subject");
    assert_eq!(
        stdout(&gatehouse(&text, &["sessions", "count"]).await),
        "5 session(s)"
    );
}

#[tokio::test]
async fn the_sessions_command_refuses_the_memory_store_clearly() {
    let provider = TestProvider::start(ProviderOptions::default()).await;
    let upstream = EchoUpstream::start().await;
    let out = gatehouse(&config(&provider, &upstream, ""), &["sessions", "count"]).await;
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("session.store is \"memory\"") && err.contains("running gatehouse process"),
        "{err}"
    );
    let out = gatehouse(&config(&provider, &upstream, ""), &["sessions", "end"]).await;
    assert!(!out.status.success(), "end needs --sub or --sid");
}
