//! Round robin, cool-downs and re-resolution, without sockets.

use super::*;

fn registry() -> Arc<Registry> {
    Arc::new(Registry::new(super::super::clients::Factory::for_tests()))
}

fn upstream(urls: &[&str]) -> Upstream {
    Upstream::new(
        urls.iter().map(|u| Origin::parse(u).unwrap()).collect(),
        false,
        None,
    )
    .unwrap()
}

#[tokio::test(start_paused = true)]
async fn a_failed_endpoint_is_out_for_a_cool_down_that_doubles_up_to_thirty_seconds() {
    let r = registry();
    let e = r.endpoint(
        &Origin::parse("http://127.0.0.1:1").unwrap(),
        "127.0.0.1:1".parse().unwrap(),
    );
    let mut cools = Vec::new();
    for _ in 0..8 {
        cools.push(e.failed().unwrap().as_secs());
        assert!(!e.is_in());
        assert_eq!(e.failed(), None, "already out: not counted again");
        tokio::time::advance(COOL_DOWN_MAX).await;
        assert!(e.is_in(), "back for a try after its cool-down");
    }
    assert_eq!(cools, [1, 2, 4, 8, 16, 30, 30, 30]);
    assert!(e.answered());
    assert_eq!(e.failed().unwrap(), COOL_DOWN_FIRST, "an answer resets it");
}

#[tokio::test(start_paused = true)]
async fn round_robin_skips_endpoints_that_are_out_and_none_is_picked_when_all_are() {
    let r = registry();
    let g = r.group(&upstream(&["http://127.0.0.1:1", "http://127.0.0.1:2"]));
    let all = g.endpoints(&r).await;
    let picks: Vec<u16> = (0..4)
        .map(|_| g.pick(&all, &[]).unwrap().addr.port())
        .collect();
    assert_eq!(picks, [1, 2, 1, 2]);
    all[0].failed();
    assert!((0..4).all(|_| g.pick(&all, &[]).unwrap().addr.port() == 2));
    assert!(
        g.pick(&all, &[Arc::clone(&all[1])]).is_none(),
        "tried already"
    );
    all[1].failed();
    assert!(g.pick(&all, &[]).is_none());
}

#[tokio::test]
async fn each_worker_goes_round_robin_with_its_own_cursor() {
    let r = Arc::new(Registry::new(
        super::super::clients::Factory::for_tests_with_lanes(2),
    ));
    let g = r.group(&upstream(&["http://127.0.0.1:1", "http://127.0.0.1:2"]));
    let all = g.endpoints(&r).await;
    let on_lane = |lane: usize, picks: usize| {
        std::thread::scope(|s| {
            s.spawn(|| {
                super::super::clients::set_lane(lane);
                (0..picks)
                    .map(|_| g.pick(&all, &[]).unwrap().addr.port())
                    .collect::<Vec<u16>>()
            })
            .join()
            .unwrap()
        })
    };
    assert_eq!(on_lane(0, 3), [1, 2, 1]);
    assert_eq!(
        on_lane(1, 2),
        [1, 2],
        "worker 1 starts where it stood, not where worker 0 left off"
    );
    assert_eq!(on_lane(0, 1), [2]);
}

#[tokio::test]
async fn a_host_name_is_balanced_over_all_its_addresses() {
    let r = registry();
    let g = r.group(&upstream(&["http://localhost:7"]));
    let all = g.endpoints(&r).await;
    assert!(!all.is_empty());
    assert!(
        all.iter()
            .all(|e| e.addr.ip().is_loopback() && e.addr.port() == 7)
    );
    assert!(all.iter().all(|e| e.origin.authority == "localhost:7"));
}

#[tokio::test(start_paused = true)]
async fn a_host_name_is_looked_up_again_and_new_addresses_join_the_rotation() {
    let answers: Arc<Mutex<Vec<SocketAddr>>> =
        Arc::new(Mutex::new(vec!["10.0.0.1:80".parse().unwrap()]));
    let dns = Arc::clone(&answers);
    let mut registry = Registry::new(super::super::clients::Factory::for_tests());
    registry.lookup = Arc::new(move |_, _| {
        let now = dns.lock().unwrap().clone();
        Box::pin(async move { Ok(now) })
    });
    let r = Arc::new(registry);
    let g = r.group(&upstream(&["http://api.internal"]));
    let ips = |all: &[Arc<Endpoint>]| all.iter().map(|e| e.addr.to_string()).collect::<Vec<_>>();
    assert_eq!(ips(&g.endpoints(&r).await), ["10.0.0.1:80"]);
    answers.lock().unwrap().push("10.0.0.2:80".parse().unwrap());
    assert_eq!(ips(&g.endpoints(&r).await), ["10.0.0.1:80"], "not due yet");
    tokio::time::advance(RESOLVE_EVERY).await;
    let _ = g.endpoints(&r).await;
    tokio::task::yield_now().await;
    assert_eq!(ips(&g.endpoints(&r).await), ["10.0.0.1:80", "10.0.0.2:80"]);
    let all = g.endpoints(&r).await;
    let picks: Vec<u8> = (0..4)
        .map(|_| {
            g.pick(&all, &[])
                .unwrap()
                .addr
                .ip()
                .to_string()
                .ends_with('2') as u8
        })
        .collect();
    assert_eq!(picks.iter().sum::<u8>(), 2, "balanced over both");
    *answers.lock().unwrap() = Vec::new();
    tokio::time::advance(RESOLVE_EVERY).await;
    let _ = g.endpoints(&r).await;
    tokio::task::yield_now().await;
    assert_eq!(
        g.endpoints(&r).await.len(),
        2,
        "an empty answer keeps what it had"
    );
}

#[test]
fn routes_naming_the_same_address_share_its_endpoint() {
    let r = registry();
    let a = r.group(&upstream(&["http://127.0.0.1:1"]));
    let b = r.group(&upstream(&["http://127.0.0.1:2", "http://127.0.0.1:1"]));
    let a0 = Arc::clone(&a.endpoints.load()[0]);
    let b1 = Arc::clone(&b.endpoints.load()[1]);
    assert!(Arc::ptr_eq(&a0, &b1));
}

#[test]
fn an_upstream_keeps_its_group_for_its_registry_only_and_a_clone_of_it_starts_empty() {
    let (r1, r2) = (registry(), registry());
    let u = upstream(&["http://127.0.0.1:1"]);
    let first = Arc::clone(&r1.group_of(&u));
    assert!(
        Arc::ptr_eq(&first, &r1.group(&u)),
        "the registry's own group"
    );
    assert!(
        matches!(r1.group_of(&u), Cow::Borrowed(_)),
        "kept: no look-up"
    );
    assert!(Arc::ptr_eq(&r1.group_of(&u), &first));

    let other = r2.group_of(&u);
    assert!(
        matches!(other, Cow::Owned(_)),
        "another registry looks it up"
    );
    assert!(Arc::ptr_eq(&other, &r2.group(&u)));
    assert!(!Arc::ptr_eq(&other, &first));

    let copy = u.clone();
    assert_eq!(copy, u, "the cell is no part of the value");
    assert!(
        Arc::ptr_eq(&r2.group_of(&copy), &r2.group(&u)),
        "a clone fills its own cell"
    );
}
