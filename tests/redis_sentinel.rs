//! Sessions behind Redis Sentinel: gatehouse finds the master through the sentinels and
//! follows it across a failover, whether the master dies or is demoted alive; writes land on
//! the new master, and `/readyz` is not ready while no master answers. The local session
//! cache tracks the master the sessions are read from: a hot session costs no round trip, and
//! after a failover it follows the new master, never serving what only the old one holds.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "tests fail loudly"
)]

mod support;

use std::time::Duration;

use redis::AsyncCommands as _;
use reqwest::Method;
use sha2::{Digest as _, Sha256};
use support::redis_topology::{
    Sentinels, Traffic, command_calls, connect, eventually, reset_stats, role,
};
use support::*;

fn sub_index(prefix: &str, sub: &str) -> String {
    let hex: String = Sha256::digest(sub.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    format!("{prefix}sub:{hex}")
}

/// The session keys of `sub` as the server on `port` holds them.
async fn sessions_on(port: u16, prefix: &str, sub: &str) -> Vec<String> {
    connect(port)
        .await
        .smembers(sub_index(prefix, sub))
        .await
        .unwrap()
}

/// Gatehouse over the sentinels, with one logged-in browser whose session the replica holds.
async fn logged_in(
    topology: &Sentinels,
    provider: &TestProvider,
    upstream: &EchoUpstream,
    prefix: &str,
) -> (Gatehouse, Browser, String) {
    let session = topology.session(prefix, "store_timeout = \"1s\"");
    let gh = Gatehouse::start(&config(provider, upstream, &session)).await;
    let mut b = Browser::new(&gh.origin);
    assert_eq!(b.login("/").await.status(), 200);
    assert_eq!(b.api(Method::GET, "/api/x").await.status(), 200);
    let (master, replica) = (topology.data[0].port, topology.data[1].port);
    let key = sessions_on(master, prefix, "alice").await.remove(0);
    topology.wait_holds(replica, &key).await;
    topology
        .wait_holds(replica, &sub_index(prefix, "alice"))
        .await;
    (gh, b, key)
}

/// The commands gatehouse's session store sends (its ACL list in README.md).
const SESSION_COMMANDS: [&str; 13] = [
    "get",
    "set",
    "psetex",
    "del",
    "getdel",
    "exists",
    "sadd",
    "srem",
    "smembers",
    "srandmember",
    "pexpire",
    "eval",
    "evalsha",
];

/// Calls of the session store's commands on the server on `port` since its last reset.
async fn session_calls(port: u16) -> Vec<(String, u64)> {
    command_calls(&mut connect(port).await)
        .await
        .into_iter()
        .filter(|(name, _)| SESSION_COMMANDS.contains(&name.as_str()))
        .collect()
}

/// The instance's local cache: (times it went live, whether it serves now).
fn cache(gh: &Gatehouse) -> (u64, bool) {
    let stats = gh.app.sessions.store.cache_stats().expect("a local cache");
    (stats.connects, stats.live)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hot_session_behind_the_sentinels_costs_no_store_round_trip_after_the_first_request() {
    let topology = Sentinels::start().await;
    let master = topology.data[0].port;
    let provider = TestProvider::start(ProviderOptions::default()).await;
    let upstream = EchoUpstream::start().await;
    let prefix = unique_prefix("sentinel-hot");
    // A long idle timeout: no idle-clock write falls inside the counted requests.
    let session = topology.session(&prefix, "idle_timeout = \"12h\"");
    let gh = Gatehouse::start(&config(&provider, &upstream, &session)).await;
    let mut b = Browser::new(&gh.origin);
    assert_eq!(b.login("/").await.status(), 200);
    eventually(
        Duration::from_secs(10),
        "the cache tracks the master",
        async || cache(&gh).1,
    )
    .await;
    assert_eq!(b.api(Method::GET, "/api/first").await.status(), 200);
    reset_stats(&mut connect(master).await).await;
    for i in 0..100 {
        assert_eq!(
            b.api(Method::GET, &format!("/api/hot/{i}")).await.status(),
            200
        );
    }
    assert_eq!(
        session_calls(master).await,
        Vec::new(),
        "for 100 hot requests"
    );
    assert_eq!(upstream.last().path_and_query, "/api/hot/99");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_a_failover_a_logout_on_one_instance_makes_the_next_request_on_another_401() {
    let topology = Sentinels::start().await;
    let (master, replica) = (topology.data[0].port, topology.data[1].port);
    let provider = TestProvider::start(ProviderOptions::default()).await;
    let upstream = EchoUpstream::start().await;
    let prefix = unique_prefix("sentinel-cache");
    let cfg = config(
        &provider,
        &upstream,
        &topology.session(&prefix, "store_timeout = \"1s\""),
    );
    let (a, b) = tokio::join!(Gatehouse::start(&cfg), Gatehouse::start(&cfg));
    let mut on_a = Browser::new(&a.origin);
    assert_eq!(on_a.login("/").await.status(), 200);
    let key = sessions_on(master, &prefix, "alice").await.remove(0);
    topology.wait_holds(replica, &key).await;
    let mut on_b = Browser::new(&b.origin);
    on_b.jar.clone_from(&on_a.jar);
    eventually(
        Duration::from_secs(10),
        "B's cache tracks the master",
        async || cache(&b).1,
    )
    .await;
    let tracked = cache(&b).0;
    // B holds the session in its cache, tracked on the old master.
    reset_stats(&mut connect(master).await).await;
    for _ in 0..3 {
        assert_eq!(on_b.api(Method::GET, "/api/b").await.status(), 200);
    }
    assert_eq!(session_calls(master).await, vec![("get".to_owned(), 1)]);

    topology.manual_failover().await;
    eventually(
        Duration::from_secs(15),
        "the sentinels name the replica",
        async || topology.all_name(replica).await,
    )
    .await;
    eventually(Duration::from_secs(5), "a logout through A", async || {
        on_a.api(Method::POST, "/auth/logout").await.status() == 200
            && !connect(replica)
                .await
                .exists::<_, bool>(&key)
                .await
                .unwrap()
    })
    .await;
    assert_eq!(
        (
            role(master).await.as_str(),
            connect(master).await.exists::<_, bool>(&key).await.unwrap()
        ),
        ("master", true),
        "the old master still leads in its own eyes and holds the session (else this test proves less)"
    );
    // B tracks the new master once its requests go there, and only then serves copies again.
    eventually(
        Duration::from_secs(10),
        "B's cache tracks the new master",
        async || {
            let (connects, live) = cache(&b);
            connects > tracked && live
        },
    )
    .await;
    assert_eq!(on_b.api(Method::GET, "/api/b").await.status(), 401);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_master_killed_under_traffic_fails_over_and_the_session_writes_to_the_new_master() {
    let mut topology = Sentinels::start().await;
    let (master, replica) = (topology.data[0].port, topology.data[1].port);
    let provider = TestProvider::start(ProviderOptions::default()).await;
    let upstream = EchoUpstream::start().await;
    let prefix = unique_prefix("sentinel-kill");
    let (gh, mut b, key) = logged_in(&topology, &provider, &upstream, &prefix).await;

    let traffic = Traffic::start(&gh, b.session_cookie().unwrap());
    tokio::time::sleep(Duration::from_millis(300)).await;
    let killed = traffic.now();
    topology.kill(master);
    traffic
        .wait_recovered(killed, Duration::from_secs(20))
        .await;
    traffic.assert_only_brief_503s(Duration::from_secs(10));
    let ready = traffic.ready.lock().unwrap().clone();
    assert!(
        ready.iter().any(|s| s.at > killed && s.status == 503),
        "/readyz is not ready while no master answers: {ready:?}"
    );
    assert_eq!(
        ready.last().unwrap().status,
        200,
        "ready again after the failover"
    );

    assert_eq!(
        topology.master_port().await,
        replica,
        "the sentinels promoted the replica"
    );
    assert_eq!(role(replica).await, "master");
    assert_eq!(provider.stats().token_code, 1, "no second login");
    // Writes reach the new master: a new login adds a session, logout deletes the old one.
    let mut second = Browser::new(&gh.origin);
    assert_eq!(second.login("/").await.status(), 200);
    assert_eq!(sessions_on(replica, &prefix, "alice").await.len(), 2);
    assert_eq!(b.api(Method::POST, "/auth/logout").await.status(), 200);
    assert!(
        !connect(replica)
            .await
            .exists::<_, bool>(&key)
            .await
            .unwrap()
    );
    assert_eq!(sessions_on(replica, &prefix, "alice").await.len(), 1);
    assert_eq!(second.api(Method::GET, "/api/x").await.status(), 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_a_failover_writes_follow_the_sentinels_while_the_old_master_still_takes_them() {
    let topology = Sentinels::start().await;
    let (master, replica) = (topology.data[0].port, topology.data[1].port);
    let provider = TestProvider::start(ProviderOptions::default()).await;
    let upstream = EchoUpstream::start().await;
    let prefix = unique_prefix("sentinel-demote");
    let (gh, mut b, _) = logged_in(&topology, &provider, &upstream, &prefix).await;

    // The old master stays up, gatehouse connected to it, while the sentinels promote the
    // replica; they demote the old master only seconds later.
    topology.manual_failover().await;
    // Once every sentinel has announced the switch (between the promotion and the
    // announcement, tens of milliseconds, no client can know), writes must follow it.
    eventually(
        Duration::from_secs(15),
        "the sentinels name the replica",
        async || topology.all_name(replica).await,
    )
    .await;

    let mut second = Browser::new(&gh.origin);
    eventually(
        Duration::from_secs(5),
        "a login after the failover",
        async || {
            second.jar.clear();
            let res = second.get("/auth/login?return_to=%2F").await;
            if res.status() != 302 {
                assert_eq!(
                    res.status(),
                    503,
                    "a store in failover is an outage, nothing else"
                );
                return false;
            }
            let back = second.authorize(&location(&res)).await;
            let status = second.callback(&back).await.status();
            assert!(status == 200 || status == 503, "callback answered {status}");
            status == 200
        },
    )
    .await;
    assert_eq!(
        role(master).await,
        "master",
        "the old master still believed it led (else this test proves less)"
    );
    assert_eq!(
        sessions_on(replica, &prefix, "alice").await.len(),
        2,
        "the new session was written to the master the sentinels name"
    );
    assert_eq!(
        sessions_on(master, &prefix, "alice").await.len(),
        1,
        "nothing was written to the old master"
    );
    assert_eq!(
        b.api(Method::GET, "/api/x").await.status(),
        200,
        "the old session lives on"
    );
    assert_eq!(second.api(Method::GET, "/api/x").await.status(), 200);
}
