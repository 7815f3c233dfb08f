//! Failure of the shared store and of a refresh-lock holder: 503 while Redis is away, no
//! session lost when it returns, and a crashed lock holder blocks nobody past its lease.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "tests fail loudly"
)]

mod support;

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use redis::AsyncCommands as _;
use reqwest::Method;
use support::*;

/// A private redis-server with an append-only file, so a restart keeps its data.
struct PrivateRedis {
    port: u16,
    dir: std::path::PathBuf,
    child: Option<Child>,
}

impl PrivateRedis {
    fn start(port: u16, dir: std::path::PathBuf) -> PrivateRedis {
        std::fs::create_dir_all(&dir).unwrap();
        let child = Command::new("redis-server")
            .args([
                "--port",
                &port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "yes",
                "--appendfsync",
                "always",
            ])
            .arg("--dir")
            .arg(&dir)
            .stdout(Stdio::null())
            .spawn()
            .expect("redis-server is installed (scripts/test.sh installs it)");
        PrivateRedis {
            port,
            dir,
            child: Some(child),
        }
    }

    async fn wait_up(&self) {
        let client = redis::Client::open(format!("redis://127.0.0.1:{}", self.port)).unwrap();
        for _ in 0..100 {
            if let Ok(mut c) = client.get_multiplexed_async_connection().await
                && redis::cmd("PING")
                    .query_async::<String>(&mut c)
                    .await
                    .is_ok()
            {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("private redis did not start");
    }

    fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for PrivateRedis {
    fn drop(&mut self) {
        self.stop();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[tokio::test]
async fn redis_restart_answers_503_meanwhile_and_loses_no_session() {
    let port = free_port();
    let dir = std::env::temp_dir().join(format!("gh-redis-{port}-{}", std::process::id()));
    let mut redis = PrivateRedis::start(port, dir.clone());
    redis.wait_up().await;

    let provider = TestProvider::start(ProviderOptions::default()).await;
    let upstream = EchoUpstream::start().await;
    let session = format!(
        "store = \"redis\"\nredis_url = \"redis://127.0.0.1:{port}\"\nstore_timeout = \"500ms\""
    );
    let gh = Gatehouse::start(&config(&provider, &upstream, &session)).await;
    let mut b = Browser::new(&gh.origin);
    b.login("/").await;
    assert_eq!(b.api(Method::GET, "/api/x").await.status(), 200);

    redis.stop();
    let cookie_before = b.session_cookie().unwrap();
    for _ in 0..3 {
        let res = b.api(Method::GET, "/api/x").await;
        assert_eq!(res.status(), 503, "store down is not a logout");
        assert!(res.headers().contains_key("retry-after"));
        assert!(set_cookies(res.headers()).is_empty(), "the cookie is kept");
    }
    assert_eq!(b.api(Method::GET, "/auth/user").await.status(), 503);
    assert_eq!(b.session_cookie().unwrap(), cookie_before);

    let restarted = PrivateRedis::start(port, dir);
    restarted.wait_up().await;
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let status = b.api(Method::GET, "/api/x").await.status();
        if status == 200 {
            break;
        }
        assert_eq!(status, 503, "never a 401 while reconnecting");
        assert!(
            Instant::now() < deadline,
            "gatehouse did not recover after Redis came back"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    drop(restarted);
}

#[tokio::test]
async fn a_crashed_refresh_lock_holder_blocks_the_session_no_longer_than_the_lease() {
    let provider = TestProvider::start(ProviderOptions {
        access_token_ttl: Duration::from_secs(2),
        ..ProviderOptions::default()
    })
    .await;
    let upstream = EchoUpstream::start().await;
    let prefix = unique_prefix("crash");
    let session = redis_session(&prefix, "refresh_lock_lease = \"1500ms\"");
    let gh = Gatehouse::start(&config(&provider, &upstream, &session)).await;
    let mut b = Browser::new(&gh.origin);
    b.login("/").await;

    // A holder that took the lock and died: nobody renews or releases it.
    let mut conn = redis().await;
    let sessions: Vec<String> = conn.keys(format!("{prefix}s:*")).await.unwrap();
    assert_eq!(sessions.len(), 1);
    let lock = format!("{}:refresh", sessions[0]);
    let _: () = redis::cmd("SET")
        .arg(&lock)
        .arg("crashed-holder")
        .arg("PX")
        .arg(1500)
        .query_async(&mut conn)
        .await
        .unwrap();

    tokio::time::sleep(Duration::from_millis(1100)).await; // the token is now due for refresh
    let started = Instant::now();
    let res = b.api(Method::GET, "/api/x").await;
    let waited = started.elapsed();
    assert_eq!(res.status(), 200);
    assert!(
        waited < Duration::from_millis(1500),
        "blocked {waited:?}, longer than the lease"
    );
    assert_eq!(
        provider.stats().token_refresh,
        1,
        "refreshed once the dead holder's lease ran out"
    );
    assert_eq!(provider.stats().refresh_reuse, 0);
}
