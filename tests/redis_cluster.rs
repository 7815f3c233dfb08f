//! Sessions in a Redis Cluster of 3 masters and 3 replicas: refresh stays single-flight
//! across instances, back-channel logout finds a user's sessions in every slot, and a
//! master killed under traffic costs a few seconds of 503, never a login.
//!
//! The tests that only read and write share one cluster; the one that kills a master has
//! its own.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "tests fail loudly"
)]

mod support;

use std::collections::HashSet;
use std::time::{Duration, Instant};

use futures_util::future::join_all;
use redis::AsyncCommands as _;
use reqwest::Method;
use serde_json::{Value, json};
use sha2::{Digest as _, Sha256};
use support::redis_topology::{Cluster, Traffic, connect, slot_of};
use support::*;

fn index_key(prefix: &str, kind: &str, id: &str) -> String {
    let hex: String = Sha256::digest(id.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    format!("{prefix}{kind}{hex}")
}

/// The session keys indexed for user `sub` under `prefix`.
async fn sessions_of(cluster: &Cluster, prefix: &str, sub: &str) -> Vec<String> {
    cluster
        .client()
        .await
        .smembers(index_key(prefix, "sub:", sub))
        .await
        .unwrap()
}

fn short_lived(ttl: Duration) -> ProviderOptions {
    ProviderOptions {
        access_token_ttl: ttl,
        ..ProviderOptions::default()
    }
}

/// Refreshed tokens claim a long life, so that one refresh is all a test can need.
fn long_lived_after_refresh(provider: &TestProvider) {
    provider.set(|m| m.expires_in = support::provider::Override::Value(json!(300)));
}

/// Fires `n` API calls with `cookie` at once, alternating between the gatehouses.
async fn burst(ghs: &[&Gatehouse], cookie: &str, n: usize) -> Vec<u16> {
    let http = reqwest::Client::new();
    let calls = (0..n).map(|i| {
        let req = http
            .get(ghs[i % ghs.len()].url("/api/burst"))
            .header("x-csrf", "1")
            .header("cookie", format!("{COOKIE}={cookie}"));
        async move { req.send().await.map(|r| r.status().as_u16()).unwrap_or(0) }
    });
    join_all(calls).await
}

async fn post_logout_token(gh: &Gatehouse, token: &str) -> Value {
    let res = reqwest::Client::new()
        .post(gh.url("/auth/backchannel-logout"))
        .form(&[("logout_token", token)])
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    res.json().await.unwrap()
}

#[tokio::test]
async fn fifty_parallel_post_expiry_requests_on_two_instances_refresh_once_in_a_cluster() {
    let cluster = Cluster::shared().await;
    let provider = TestProvider::start(ProviderOptions {
        token_delay: Duration::from_millis(200),
        ..short_lived(Duration::from_secs(2))
    })
    .await;
    let upstream = EchoUpstream::start().await;
    let text = config(
        &provider,
        &upstream,
        &cluster.session(&unique_prefix("c-burst"), ""),
    );
    let (a, b) = (Gatehouse::start(&text).await, Gatehouse::start(&text).await);
    let mut browser = Browser::new(&a.origin);
    browser.login("/").await;
    let cookie = browser.session_cookie().unwrap();
    long_lived_after_refresh(&provider);
    tokio::time::sleep(Duration::from_millis(1100)).await;

    let statuses = burst(&[&a, &b], &cookie, 50).await;
    assert!(statuses.iter().all(|s| *s == 200), "{statuses:?}");
    let stats = provider.stats();
    assert_eq!(stats.token_refresh, 1, "one refresh at the provider");
    assert_eq!(stats.refresh_reuse, 0);
    let tokens: HashSet<String> = upstream
        .requests()
        .iter()
        .filter_map(|r| r.header("authorization").map(str::to_owned))
        .collect();
    assert_eq!(tokens.len(), 1, "every request used the winner's token");
}

#[tokio::test]
async fn back_channel_logout_by_sub_ends_the_users_sessions_in_every_slot() {
    let cluster = Cluster::shared().await;
    let provider = TestProvider::start(ProviderOptions::default()).await;
    let upstream = EchoUpstream::start().await;
    let prefix = unique_prefix("c-bcl");
    let text = config(&provider, &upstream, &cluster.session(&prefix, ""));
    let (a, b) = (Gatehouse::start(&text).await, Gatehouse::start(&text).await);

    // Log in until alice's sessions live on at least two masters.
    let mut browsers = Vec::new();
    let mut masters = HashSet::new();
    while browsers.len() < 4 || masters.len() < 2 {
        assert!(
            browsers.len() < 20,
            "sessions never spread over two masters"
        );
        let mut browser = Browser::new(&a.origin);
        assert_eq!(browser.login("/").await.status(), 200);
        browsers.push(browser);
        masters.clear();
        for key in sessions_of(&cluster, &prefix, "alice").await {
            masters.insert(cluster.master_of(&key).await);
        }
    }
    let keys = sessions_of(&cluster, &prefix, "alice").await;
    assert_eq!(keys.len(), browsers.len(), "every session is indexed");
    let mut node = connect(cluster.ports[0]).await;
    let index_slot = slot_of(&mut node, &index_key(&prefix, "sub:", "alice")).await;
    let mut slots = HashSet::new();
    for key in &keys {
        slots.insert(slot_of(&mut node, key).await);
    }
    slots.remove(&index_slot);
    assert!(
        !slots.is_empty(),
        "the index lives apart from the sessions it lists"
    );

    let token = provider.mint_logout_token(json!({ "sid": null, "sub": "alice" }));
    let ended = post_logout_token(&b, &token).await;
    assert_eq!(ended["sessions_ended"], browsers.len());
    for browser in &mut browsers {
        assert_eq!(browser.api(Method::GET, "/api/x").await.status(), 401);
    }
    let mut c = cluster.client().await;
    for key in &keys {
        assert!(!c.exists::<_, bool>(key).await.unwrap(), "{key} deleted");
    }
}

#[tokio::test]
async fn logout_in_a_cluster_deletes_the_session_and_takes_it_out_of_its_indexes() {
    let cluster = Cluster::shared().await;
    let provider = TestProvider::start(ProviderOptions::default()).await;
    let upstream = EchoUpstream::start().await;
    let prefix = unique_prefix("c-logout");
    let gh = Gatehouse::start(&config(&provider, &upstream, &cluster.session(&prefix, ""))).await;
    let mut stays = Browser::new(&gh.origin);
    stays.login("/").await;
    let mut leaves = Browser::new(&gh.origin);
    leaves.login("/").await;
    assert_eq!(leaves.api(Method::GET, "/api/x").await.status(), 200);
    let before = sessions_of(&cluster, &prefix, "alice").await;
    assert_eq!(before.len(), 2);

    assert_eq!(leaves.api(Method::POST, "/auth/logout").await.status(), 200);
    let after = sessions_of(&cluster, &prefix, "alice").await;
    assert_eq!(after.len(), 1, "the index lost exactly the ended session");
    let gone: Vec<&String> = before.iter().filter(|k| !after.contains(k)).collect();
    assert!(
        !cluster
            .client()
            .await
            .exists::<_, bool>(gone[0])
            .await
            .unwrap()
    );
    assert_eq!(leaves.api(Method::GET, "/api/x").await.status(), 401);
    assert_eq!(stays.api(Method::GET, "/api/x").await.status(), 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_master_killed_under_traffic_costs_a_few_seconds_of_503_and_the_session_lives_on() {
    let mut cluster = Cluster::start().await;
    // Due for refresh 2 s after login: after the kill, so it runs on the promoted replica.
    let provider = TestProvider::start(short_lived(Duration::from_secs(4))).await;
    let upstream = EchoUpstream::start().await;
    let prefix = unique_prefix("c-failover");
    let session = cluster.session(&prefix, "store_timeout = \"1s\"");
    let gh = Gatehouse::start(&config(&provider, &upstream, &session)).await;
    let mut b = Browser::new(&gh.origin);
    b.login("/").await;
    let logged_in = Instant::now();
    long_lived_after_refresh(&provider);
    assert_eq!(b.api(Method::GET, "/api/x").await.status(), 200);
    let key = sessions_of(&cluster, &prefix, "alice").await.remove(0);
    cluster.wait_replicated(&key).await;
    cluster
        .wait_replicated(&index_key(&prefix, "sub:", "alice"))
        .await;
    let master = cluster.master_of(&key).await;

    let traffic = Traffic::start(&gh, b.session_cookie().unwrap());
    tokio::time::sleep(Duration::from_millis(300)).await;
    let killed = traffic.now();
    cluster.kill(master);
    traffic
        .wait_recovered(killed, Duration::from_secs(20))
        .await;
    traffic.assert_only_brief_503s(Duration::from_secs(10));
    // A partial outage leaves /readyz alone (the other masters answer): taking every
    // instance out of the load balancer would turn a third of the sessions failing into all.
    assert_eq!(traffic.ready.lock().unwrap().last().unwrap().status, 200);

    // The same cookie, no new login; the refresh (due by now) ran once, on the new master.
    tokio::time::sleep(
        (logged_in + Duration::from_millis(3100)).saturating_duration_since(Instant::now()),
    )
    .await;
    assert_eq!(b.api(Method::GET, "/api/x").await.status(), 200);
    let stats = provider.stats();
    assert_eq!(stats.token_code, 1, "no second login");
    assert_eq!(stats.token_refresh, 1);
    assert_eq!(
        stats.refresh_reuse, 0,
        "no refresh token was presented twice"
    );
    let token = provider.mint_logout_token(json!({ "sid": null, "sub": "alice" }));
    assert_eq!(post_logout_token(&gh, &token).await["sessions_ended"], 1);
    assert_eq!(b.api(Method::GET, "/api/x").await.status(), 401);
}

#[tokio::test]
async fn a_cluster_with_no_reachable_master_is_not_ready() {
    use support::redis_topology::{free_port, url};
    let provider = TestProvider::start(ProviderOptions::default()).await;
    let upstream = EchoUpstream::start().await;
    let session = format!(
        "store = \"redis\"\nredis_cluster_nodes = [\"{}\", \"{}\"]\nstore_timeout = \"500ms\"",
        url(free_port()),
        url(free_port())
    );
    let gh = Gatehouse::start_unready(&config(&provider, &upstream, &session)).await;
    let res = reqwest::get(gh.url("/readyz")).await.unwrap();
    assert_eq!(res.status(), 503);
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["store"], "unreachable");
    assert_eq!(body["store_error"], "unreachable");
}
