//! The Redis store's local session cache (`CLIENT TRACKING`): a hot session costs no store
//! round trip, and a session ended on another instance is seen as soon as Redis' invalidation
//! arrives. Round trips are counted on a Redis server of the test's own (`INFO commandstats`),
//! so no other test's traffic is counted.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "tests fail loudly"
)]

mod support;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use reqwest::Method;
use support::redis_topology::{command_calls, reset_stats};
use support::*;

/// A `redis-server` of this test alone, on a free port; killed when dropped.
struct OwnRedis {
    url: String,
    _child: tokio::process::Child,
}

impl OwnRedis {
    async fn start() -> OwnRedis {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let child = tokio::process::Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .stdout(std::process::Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("redis-server is installed");
        let url = format!("redis://127.0.0.1:{port}");
        for _ in 0..200 {
            if let Ok(client) = redis::Client::open(url.as_str())
                && client.get_multiplexed_async_connection().await.is_ok()
            {
                return OwnRedis { url, _child: child };
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        panic!("redis-server did not start on port {port}");
    }

    async fn conn(&self) -> redis::aio::MultiplexedConnection {
        redis::Client::open(self.url.as_str())
            .unwrap()
            .get_multiplexed_async_connection()
            .await
            .unwrap()
    }

    /// Calls per command since the last `CONFIG RESETSTAT`.
    async fn command_calls(&self) -> BTreeMap<String, u64> {
        command_calls(&mut self.conn().await).await
    }

    async fn reset_stats(&self) {
        reset_stats(&mut self.conn().await).await;
    }
}

fn session_lines(redis: &OwnRedis) -> String {
    // A long idle timeout: no idle-clock write falls inside the counted requests.
    format!(
        "store = \"redis\"\nredis_url = \"{}\"\nredis_prefix = \"gh-cache:\"\nidle_timeout = \"12h\"",
        redis.url
    )
}

/// Waits until the instance's tracking connection is up (counted, not timed).
async fn tracking_is_on(gh: &Gatehouse) {
    for _ in 0..500 {
        if gh
            .app
            .sessions
            .store
            .cache_stats()
            .is_some_and(|s| s.connects > 0)
        {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("the session cache never started tracking");
}

fn invalidations(gh: &Gatehouse) -> u64 {
    gh.app.sessions.store.cache_stats().unwrap().invalidations
}

#[tokio::test]
async fn a_hot_redis_session_costs_no_store_round_trip_after_the_first_request() {
    let redis = OwnRedis::start().await;
    let provider = TestProvider::start(ProviderOptions::default()).await;
    let upstream = EchoUpstream::start().await;
    let gh = Gatehouse::start(&config(&provider, &upstream, &session_lines(&redis))).await;
    tracking_is_on(&gh).await;

    let mut b = Browser::new(&gh.origin);
    assert_eq!(b.login("/").await.status(), 200);
    assert_eq!(b.api(Method::GET, "/api/first").await.status(), 200);
    redis.reset_stats().await;
    for i in 0..100 {
        let res = b.api(Method::GET, &format!("/api/hot/{i}")).await;
        assert_eq!(res.status(), 200);
    }
    let mut calls = redis.command_calls().await;
    // The cache's heartbeat and our own look are not the session's round trips.
    for ours in ["ping", "info", "config|resetstat"] {
        calls.remove(ours);
    }
    assert_eq!(
        calls,
        BTreeMap::new(),
        "store commands for 100 hot requests"
    );
    assert_eq!(upstream.last().path_and_query, "/api/hot/99");
}

#[tokio::test]
async fn requests_that_overlap_an_idle_clock_slide_write_it_once() {
    let redis = OwnRedis::start().await;
    let provider = TestProvider::start(ProviderOptions::default()).await;
    let upstream = EchoUpstream::start().await;
    // Idle 4 s: the idle clock is written back once it is 1 s old.
    let lines = format!(
        "store = \"redis\"\nredis_url = \"{}\"\nredis_prefix = \"gh-slide:\"\nidle_timeout = \"4s\"",
        redis.url
    );
    let gh = Gatehouse::start(&config(&provider, &upstream, &lines)).await;
    tracking_is_on(&gh).await;
    let mut b = Browser::new(&gh.origin);
    assert_eq!(b.login("/").await.status(), 200);
    assert_eq!(b.api(Method::GET, "/api/first").await.status(), 200);

    // One slide first, alone: the write script is loaded on the server before the count.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert_eq!(b.api(Method::GET, "/api/alone").await.status(), 200);
    tokio::time::sleep(Duration::from_millis(1100)).await;
    redis.reset_stats().await;
    let browsers: Vec<Browser> = (0..32)
        .map(|_| {
            let mut c = Browser::new(&gh.origin);
            c.jar.clone_from(&b.jar);
            c
        })
        .collect();
    let statuses = futures_util::future::join_all(
        browsers
            .into_iter()
            .map(|mut c| async move { c.api(Method::GET, "/api/due").await.status() }),
    )
    .await;
    assert!(statuses.iter().all(|s| *s == 200), "{statuses:?}");
    // Give a slide that went out late the time to reach Redis.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let calls = redis.command_calls().await;
    let writes =
        calls.get("evalsha").copied().unwrap_or(0) + calls.get("eval").copied().unwrap_or(0);
    assert_eq!(
        writes, 1,
        "idle-clock writes for 32 overlapping requests: {calls:?}"
    );
}

#[tokio::test]
async fn a_logout_on_one_instance_makes_the_next_request_on_another_401() {
    let redis = OwnRedis::start().await;
    let provider = TestProvider::start(ProviderOptions::default()).await;
    let upstream = EchoUpstream::start().await;
    let cfg = config(&provider, &upstream, &session_lines(&redis));
    let (a, b) = tokio::join!(Gatehouse::start(&cfg), Gatehouse::start(&cfg));
    tracking_is_on(&a).await;
    tracking_is_on(&b).await;

    let mut on_a = Browser::new(&a.origin);
    assert_eq!(on_a.login("/").await.status(), 200);
    let mut on_b = Browser::new(&b.origin);
    on_b.jar.clone_from(&on_a.jar);
    // B now holds the session in its cache, and serves it from there.
    redis.reset_stats().await;
    for _ in 0..3 {
        assert_eq!(on_b.api(Method::GET, "/api/b").await.status(), 200);
    }
    assert_eq!(redis.command_calls().await.get("get"), Some(&1));

    let before = invalidations(&b);
    assert_eq!(on_a.api(Method::POST, "/auth/logout").await.status(), 200);
    let logged_out = Instant::now();
    let mut polls = 0;
    while invalidations(&b) == before {
        polls += 1;
        assert!(polls < 10_000, "B never heard of the logout");
        tokio::task::yield_now().await;
    }
    eprintln!(
        "invalidation window: {:?} from the logout's response to B's cache ({polls} polls)",
        logged_out.elapsed()
    );
    assert_eq!(on_b.api(Method::GET, "/api/b").await.status(), 401);
}

#[tokio::test]
async fn when_the_tracking_connection_drops_sessions_are_read_from_redis_until_it_is_back() {
    let redis = OwnRedis::start().await;
    let provider = TestProvider::start(ProviderOptions::default()).await;
    let upstream = EchoUpstream::start().await;
    let gh = Gatehouse::start(&config(&provider, &upstream, &session_lines(&redis))).await;
    tracking_is_on(&gh).await;
    let mut b = Browser::new(&gh.origin);
    assert_eq!(b.login("/").await.status(), 200);
    assert_eq!(b.api(Method::GET, "/api/warm").await.status(), 200);

    // Kill the tracking connection (and only it) from the server's side.
    let mut admin = redis.conn().await;
    let clients: String = redis::cmd("CLIENT")
        .arg("LIST")
        .query_async(&mut admin)
        .await
        .unwrap();
    let tracking = clients
        .lines()
        .find(|l| {
            l.split(' ')
                .find_map(|f| f.strip_prefix("flags="))
                .is_some_and(|flags| flags.contains('t'))
        })
        .and_then(|l| l.split(' ').find_map(|f| f.strip_prefix("id=")))
        .map(str::to_owned);
    let tracking = tracking.unwrap_or_else(|| panic!("no tracking client in:\n{clients}"));
    let () = redis::cmd("CLIENT")
        .arg("KILL")
        .arg("ID")
        .arg(&tracking)
        .query_async(&mut admin)
        .await
        .unwrap();
    let mut polls = 0;
    while gh.app.sessions.store.cache_stats().unwrap().connects < 2 {
        polls += 1;
        assert!(polls < 1_000, "tracking never came back");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // Back, and emptied: the next request reads Redis once, then the cache serves again.
    redis.reset_stats().await;
    for _ in 0..5 {
        assert_eq!(b.api(Method::GET, "/api/again").await.status(), 200);
    }
    assert_eq!(redis.command_calls().await.get("get"), Some(&1));
}
