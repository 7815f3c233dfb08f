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
    // The local session cache serves copies until it notices its tracking connection is
    // gone (one event-loop turn after the socket closes); from then on every read is Redis'.
    let mut polls = 0;
    while gh.app.sessions.store.cache_stats().is_some_and(|s| s.live) {
        polls += 1;
        assert!(polls < 500, "the session cache never noticed Redis stopped");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
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

/// `[oidc]` lines that make a refresh claim's lease short: 2 s provider timeout, and the
/// shortest lease then is 2 + 2 × 0.5 + 2 = 5 s.
const SHORT_LEASE: &str = "timeout = \"2s\"";

fn short_lease_config(provider: &TestProvider, upstream: &EchoUpstream, session: &str) -> String {
    config(provider, upstream, session).replacen(
        "[session]",
        &format!("{SHORT_LEASE}\n\n[session]\nstore_timeout = \"500ms\""),
        1,
    )
}

#[tokio::test]
async fn a_crashed_refresh_claim_holder_blocks_the_session_no_longer_than_the_lease() {
    // No rotation: the dead holder's grant left the refresh token valid for the next one.
    let provider = TestProvider::start(ProviderOptions {
        access_token_ttl: Duration::from_secs(2),
        refresh_rotation: false,
        token_delay: Duration::from_millis(1500),
        ..ProviderOptions::default()
    })
    .await;
    let upstream = EchoUpstream::start().await;
    let prefix = unique_prefix("crash");
    let text = short_lease_config(&provider, &upstream, &redis_session(&prefix, ""));
    let mut doomed = Isolated::start(&text).await;
    let survivor = Gatehouse::start(&text).await;
    let mut b = Browser::new(&survivor.origin);
    b.login("/").await;
    let cookie = b.session_cookie().unwrap();
    tokio::time::sleep(Duration::from_millis(1100)).await; // due for refresh

    // The doomed instance claims the refresh and dies while the provider answers.
    let http = reqwest::Client::new();
    let doomed_call = http
        .get(doomed.url("/api/x"))
        .header("x-csrf", "1")
        .header("cookie", format!("{COOKIE}={cookie}"))
        .send();
    tokio::spawn(doomed_call);
    let deadline = Instant::now() + Duration::from_secs(3);
    while provider.stats().token_refresh == 0 {
        assert!(
            Instant::now() < deadline,
            "the doomed instance never refreshed"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let crashed_at = Instant::now();
    doomed.crash();

    // The survivor honours the dead claim (no second presentation of the refresh token while
    // it holds), then takes over once its 5 s lease ran out.
    let took_over = async {
        while provider.stats().token_refresh < 2 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        crashed_at.elapsed()
    };
    let recovered = async {
        let deadline = Instant::now() + Duration::from_secs(12);
        loop {
            let status = b.api(Method::GET, "/api/x").await.status();
            if status == 200 && provider.stats().token_refresh == 2 {
                return;
            }
            assert!(
                status == 200 || status == 503,
                "never a logout while waiting: {status}"
            );
            assert!(Instant::now() < deadline, "the survivor never took over");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    };
    let (took_over, ()) = tokio::join!(took_over, recovered);
    assert!(
        took_over > Duration::from_millis(4000),
        "took over after {took_over:?}, inside the dead holder's lease"
    );
    assert!(
        took_over < Duration::from_millis(5600),
        "blocked {took_over:?}, longer than the lease"
    );
    assert_eq!(provider.stats().refresh_reuse, 0);
}

#[tokio::test]
async fn a_store_restart_while_the_provider_answers_loses_no_rotated_token() {
    let port = free_port();
    let dir = std::env::temp_dir().join(format!("gh-redis-{port}-{}", std::process::id()));
    let mut redis = PrivateRedis::start(port, dir.clone());
    redis.wait_up().await;
    let provider = TestProvider::start(ProviderOptions {
        access_token_ttl: Duration::from_secs(2),
        token_delay: Duration::from_millis(800),
        ..ProviderOptions::default()
    })
    .await;
    let upstream = EchoUpstream::start().await;
    let session = format!("store = \"redis\"\nredis_url = \"redis://127.0.0.1:{port}\"");
    let text = short_lease_config(&provider, &upstream, &session);
    let (a, other) = tokio::join!(Gatehouse::start(&text), Gatehouse::start(&text));
    let mut b = Browser::new(&a.origin);
    b.login("/").await;
    let cookie = b.session_cookie().unwrap();
    provider.set(|m| m.expires_in = support::provider::Override::Value(serde_json::json!(300)));
    tokio::time::sleep(Duration::from_millis(1100)).await;

    // The refresh is under way at the provider (which rotates at once) when Redis goes away;
    // it comes back before the claim runs out.
    let http = reqwest::Client::new();
    let call = tokio::spawn(
        http.get(a.url("/api/x"))
            .header("x-csrf", "1")
            .header("cookie", format!("{COOKIE}={cookie}"))
            .send(),
    );
    while provider.stats().token_refresh == 0 {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    redis.stop();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let restarted = PrivateRedis::start(port, dir);
    restarted.wait_up().await;

    let res = call.await.unwrap().unwrap();
    assert_eq!(
        res.status(),
        200,
        "the holder stored its tokens once Redis was back"
    );
    // The other instance reconnects too (a 503 meanwhile, never a 401) and sees the new tokens.
    let mut on_other = Browser::new(&other.origin);
    on_other.jar.insert(COOKIE.into(), cookie);
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let status = on_other.api(Method::GET, "/api/x").await.status();
        if status == 200 {
            break;
        }
        assert_eq!(status, 503, "never a logout");
        assert!(
            Instant::now() < deadline,
            "the other instance never recovered"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let stats = provider.stats();
    assert_eq!(stats.token_refresh, 1, "one refresh, never repeated");
    assert_eq!(
        stats.refresh_reuse, 0,
        "the rotated-out token was never presented again"
    );
    drop(restarted);
}
