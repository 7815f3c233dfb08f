//! `/metrics`: scraped before and after each step of real flows, every counter moves by
//! exactly what happened; histograms are sane; labels are bounded; the listener is separate.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "tests fail loudly"
)]

mod support;

use std::collections::BTreeMap;
use std::time::Duration;

use gatehouse::telemetry::metrics::*;
use reqwest::Method;
use support::prometheus::{Scrape, scrape, with_metrics};
use support::provider::TokenFault;
use support::*;

async fn start(opts: ProviderOptions, extra_session: &str) -> Stack {
    let provider = TestProvider::start(opts).await;
    let upstream = EchoUpstream::start().await;
    let gh = Gatehouse::start(&with_metrics(&config(&provider, &upstream, extra_session))).await;
    Stack {
        provider,
        upstream,
        gh,
    }
}

fn short_lived() -> ProviderOptions {
    ProviderOptions {
        access_token_ttl: Duration::from_secs(2),
        ..ProviderOptions::default()
    }
}

type Labels = BTreeMap<String, String>;

/// How far the series moved between two scrapes.
fn moved(before: &Scrape, after: &Scrape, name: &str, labels: &[(&str, &str)]) -> f64 {
    after.value(name, labels) - before.value(name, labels)
}

/// How far all series of `name` moved together.
fn moved_total(before: &Scrape, after: &Scrape, name: &str) -> f64 {
    after.total(name) - before.total(name)
}

fn requests(before: &Scrape, after: &Scrape, route: &str, status: &str) -> f64 {
    moved(
        before,
        after,
        REQUESTS_TOTAL,
        &[("route", route), ("status", status)],
    )
}

/// Counters that no step of the flow below may move.
fn unmoved_background(before: &Scrape, after: &Scrape) {
    for (name, labels) in [
        (JWKS_REFRESHES_TOTAL, vec![]),
        (
            PROVIDER_REQUESTS_TOTAL,
            vec![("endpoint", "discovery"), ("result", "ok")],
        ),
        (
            PROVIDER_REQUESTS_TOTAL,
            vec![("endpoint", "jwks"), ("result", "ok")],
        ),
    ] {
        assert_eq!(
            moved(before, after, name, &labels),
            0.0,
            "{name} {labels:?}"
        );
    }
    assert_eq!(moved_total(before, after, STORE_ERRORS_TOTAL), 0.0);
}

#[tokio::test]
async fn a_login_an_api_call_a_refresh_and_a_logout_each_move_their_counters_by_exactly_what_happened()
 {
    let stack = start(short_lived(), "").await;
    let app = &stack.gh.app;
    let start = scrape(app).await;
    assert_eq!(
        start.value(JWKS_REFRESHES_TOTAL, &[]),
        1.0,
        "the start-up fetch"
    );
    assert_eq!(
        start.value(
            PROVIDER_REQUESTS_TOTAL,
            &[("endpoint", "discovery"), ("result", "ok")]
        ),
        1.0
    );
    assert_eq!(start.value(MEMORY_SESSIONS, &[]), 0.0);

    // Login: two requests (start, callback), one code exchange, one new session.
    let mut b = stack.browser();
    assert_eq!(b.login("/").await.status(), 200);
    let login = scrape(app).await;
    assert_eq!(
        moved(&start, &login, LOGINS_TOTAL, &[("result", "started")]),
        1.0
    );
    assert_eq!(
        moved(&start, &login, LOGINS_TOTAL, &[("result", "completed")]),
        1.0
    );
    assert_eq!(
        moved_total(&start, &login, LOGINS_TOTAL),
        2.0,
        "no failure counted"
    );
    assert_eq!(moved(&start, &login, SESSIONS_CREATED_TOTAL, &[]), 1.0);
    assert_eq!(requests(&start, &login, "login", "3xx"), 1.0);
    assert_eq!(requests(&start, &login, "callback", "2xx"), 1.0);
    assert_eq!(moved_total(&start, &login, REQUESTS_TOTAL), 2.0);
    let token_ok = [("endpoint", "token"), ("result", "ok")];
    assert_eq!(
        moved(&start, &login, PROVIDER_REQUESTS_TOTAL, &token_ok),
        1.0
    );
    assert_eq!(moved_total(&start, &login, PROVIDER_REQUESTS_TOTAL), 1.0);
    assert_eq!(login.value(MEMORY_SESSIONS, &[]), 1.0);
    assert_eq!(moved_total(&start, &login, REFRESHES_TOTAL), 0.0);

    // An API call: one request, one upstream call, no refresh yet.
    assert_eq!(b.api(Method::GET, "/api/things").await.status(), 200);
    let api = scrape(app).await;
    assert_eq!(requests(&login, &api, "/api/", "2xx"), 1.0);
    assert_eq!(moved_total(&login, &api, REQUESTS_TOTAL), 1.0);
    let api_route = [("route", "/api/")];
    assert_eq!(
        moved(
            &login,
            &api,
            "gatehouse_upstream_duration_seconds_count",
            &api_route
        ),
        1.0
    );
    assert_eq!(
        moved(
            &login,
            &api,
            "gatehouse_request_duration_seconds_count",
            &api_route
        ),
        1.0
    );
    assert_eq!(moved_total(&login, &api, REFRESHES_TOTAL), 0.0);
    assert_eq!(moved_total(&login, &api, PROVIDER_REQUESTS_TOTAL), 0.0);

    // Past half the token's life: the next call refreshes, once.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert_eq!(b.api(Method::GET, "/api/things").await.status(), 200);
    let refreshed = scrape(app).await;
    assert_eq!(
        moved(&api, &refreshed, REFRESHES_TOTAL, &[("result", "ok")]),
        1.0
    );
    assert_eq!(moved_total(&api, &refreshed, REFRESHES_TOTAL), 1.0);
    assert_eq!(
        moved(&api, &refreshed, PROVIDER_REQUESTS_TOTAL, &token_ok),
        1.0
    );
    assert_eq!(moved_total(&api, &refreshed, PROVIDER_REQUESTS_TOTAL), 1.0);
    assert_eq!(requests(&api, &refreshed, "/api/", "2xx"), 1.0);
    assert_eq!(moved(&api, &refreshed, SESSIONS_CREATED_TOTAL, &[]), 0.0);

    // Logout: the session ends, both tokens are revoked.
    assert_eq!(b.api(Method::POST, "/auth/logout").await.status(), 200);
    let logout = scrape(app).await;
    assert_eq!(
        moved(&refreshed, &logout, LOGOUTS_TOTAL, &[("kind", "user")]),
        1.0
    );
    assert_eq!(moved_total(&refreshed, &logout, LOGOUTS_TOTAL), 1.0);
    assert_eq!(
        moved(
            &refreshed,
            &logout,
            PROVIDER_REQUESTS_TOTAL,
            &[("endpoint", "revocation"), ("result", "ok")]
        ),
        2.0
    );
    assert_eq!(
        moved_total(&refreshed, &logout, PROVIDER_REQUESTS_TOTAL),
        2.0
    );
    assert_eq!(requests(&refreshed, &logout, "logout", "2xx"), 1.0);
    assert_eq!(moved_total(&refreshed, &logout, REQUESTS_TOTAL), 1.0);
    assert_eq!(logout.value(MEMORY_SESSIONS, &[]), 0.0);

    unmoved_background(&start, &logout);
    let stats = stack.provider.stats();
    assert_eq!(
        (stats.token_code, stats.token_refresh),
        (1, 1),
        "as counted"
    );
}

#[tokio::test]
async fn histogram_buckets_are_the_documented_bounds_cumulative_and_complete() {
    let stack = start(ProviderOptions::default(), "").await;
    let mut b = stack.browser();
    b.login("/").await;
    for _ in 0..3 {
        b.api(Method::GET, "/api/x").await;
    }
    let s = scrape(&stack.gh.app).await;
    // Every histogram series, by name and labels without `le`.
    let mut series: BTreeMap<(String, Labels), Vec<(f64, f64)>> = BTreeMap::new();
    for sample in s.samples.iter().filter(|x| x.name.ends_with("_bucket")) {
        let mut labels = sample.labels.clone();
        let le = labels.remove("le").expect("le label");
        let le = if le == "+Inf" {
            f64::INFINITY
        } else {
            le.parse().unwrap()
        };
        let name = sample.name.trim_end_matches("_bucket").to_owned();
        series
            .entry((name, labels))
            .or_default()
            .push((le, sample.value));
    }
    let names: Vec<&str> = series.keys().map(|(n, _)| n.as_str()).collect();
    for expected in [REQUEST_DURATION, UPSTREAM_DURATION, STORE_DURATION] {
        assert!(names.contains(&expected), "{expected} in {names:?}");
    }
    for ((name, labels), buckets) in &series {
        let bounds: Vec<f64> = buckets.iter().map(|(le, _)| *le).collect();
        let documented = if name == STORE_DURATION {
            &STORE_BUCKETS
        } else {
            &REQUEST_BUCKETS
        };
        let mut want = documented.to_vec();
        want.push(f64::INFINITY);
        assert_eq!(bounds, want, "{name} {labels:?}");
        let counts: Vec<f64> = buckets.iter().map(|(_, c)| *c).collect();
        assert!(
            counts.windows(2).all(|w| w[0] <= w[1]),
            "{name} {labels:?} cumulative: {counts:?}"
        );
        let pairs: Vec<(&str, &str)> = labels
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        let count = s.value(&format!("{name}_count"), &pairs);
        assert_eq!(
            counts.last().copied(),
            Some(count),
            "{name} {labels:?}: +Inf = count"
        );
        let sum = s.value(&format!("{name}_sum"), &pairs);
        assert!(
            sum >= 0.0 && (count == 0.0 || sum < count * 60.0),
            "{name}: sum {sum}"
        );
    }
    let api = [("route", "/api/")];
    assert_eq!(
        s.value("gatehouse_request_duration_seconds_count", &api),
        3.0
    );
}

#[tokio::test]
async fn no_label_carries_a_path_a_user_a_session_or_an_address() {
    let stack = start(ProviderOptions::default(), "").await;
    let mut b = stack.browser();
    b.login("/").await;
    let sub = b
        .api(Method::GET, "/auth/user")
        .await
        .json::<serde_json::Value>()
        .await
        .unwrap()["sub"]
        .as_str()
        .unwrap()
        .to_owned();
    let cookie = b.session_cookie().unwrap();
    for path in [
        "/api/users/marker-one/orders?token=marker-two",
        "/opt/marker-three",
        "/marker-four",
        "/auth/marker-five",
        "/api/a%2fmarker-six",
        "/auth/callback?state=marker-seven&code=marker-eight",
    ] {
        b.api(Method::GET, path).await;
    }
    let s = scrape(&stack.gh.app).await;
    for needle in [
        "marker",
        "token=",
        &sub,
        &cookie,
        "127.0.0.1",
        "users",
        "orders",
    ] {
        assert!(!s.text.contains(needle), "{needle:?} in the scrape");
    }
    let routes: Vec<&str> = ["/api/", "/opt/", "/"]
        .into_iter()
        .chain(ENDPOINTS)
        .chain([UNROUTED])
        .collect();
    let allowed = [
        ("route", routes),
        ("status", STATUS_CLASSES.to_vec()),
        ("kind", vec!["user", "back-channel"]),
        ("endpoint", vec!["discovery", "jwks", "token", "revocation"]),
        ("op", gatehouse::telemetry::outcomes::STORE_OPS.to_vec()),
    ];
    for sample in &s.samples {
        assert!(
            ALL.iter().any(|n| sample.name.starts_with(n)),
            "{}",
            sample.name
        );
        for (key, value) in &sample.labels {
            match key.as_str() {
                "le" | "result" => {}
                "version" => assert_eq!(value, env!("CARGO_PKG_VERSION")),
                other => {
                    let values = &allowed
                        .iter()
                        .find(|(k, _)| *k == other)
                        .unwrap_or_else(|| panic!("unexpected label {other} on {}", sample.name))
                        .1;
                    assert!(values.contains(&value.as_str()), "{other}={value:?}");
                }
            }
        }
    }
    let unrouted = [("route", "-"), ("status", "4xx")];
    assert_eq!(
        s.value(REQUESTS_TOTAL, &unrouted),
        2.0,
        "bad path, unknown endpoint"
    );
    let root = [("route", "/"), ("status", "2xx")];
    assert_eq!(s.value(REQUESTS_TOTAL, &root), 1.0, "only /marker-four");
}

#[tokio::test]
async fn a_back_channel_logout_is_counted_once_and_its_replay_not_at_all() {
    let stack = start(ProviderOptions::default(), "").await;
    stack.browser().login("/").await;
    let before = scrape(&stack.gh.app).await;
    let token = stack.provider.mint_logout_token(serde_json::json!({}));
    let http = reqwest::Client::new();
    for expected in [200, 400] {
        let res = http
            .post(stack.gh.url("/auth/backchannel-logout"))
            .form(&[("logout_token", token.as_str())])
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), expected);
    }
    let after = scrape(&stack.gh.app).await;
    let kind = [("kind", "back-channel")];
    assert_eq!(moved(&before, &after, LOGOUTS_TOTAL, &kind), 1.0);
    assert_eq!(
        moved(&before, &after, LOGOUTS_TOTAL, &[("kind", "user")]),
        0.0
    );
    assert_eq!(requests(&before, &after, "backchannel-logout", "2xx"), 1.0);
    assert_eq!(requests(&before, &after, "backchannel-logout", "4xx"), 1.0);
    assert_eq!(after.value(MEMORY_SESSIONS, &[]), 0.0);
}

#[tokio::test]
async fn failed_logins_are_counted_by_cause() {
    let stack = start(ProviderOptions::default(), "").await;
    let before = scrape(&stack.gh.app).await;
    let mut b = stack.browser();
    let res = b.get("/auth/callback?state=never-issued&code=x").await;
    assert_eq!(res.status(), 400);
    stack.provider.set(|m| m.authz_denied = true);
    assert_eq!(stack.browser().login("/").await.status(), 403);
    stack.provider.behaviour().reset();
    stack
        .provider
        .set(|m| m.code_fault = Some(TokenFault::InvalidGrant));
    assert_eq!(stack.browser().login("/").await.status(), 401);
    let after = scrape(&stack.gh.app).await;
    let result = |r| moved(&before, &after, LOGINS_TOTAL, &[("result", r)]);
    assert_eq!(result("unknown_state"), 1.0);
    assert_eq!(result("access_denied"), 1.0);
    assert_eq!(result("token_rejected"), 1.0);
    assert_eq!(result("started"), 2.0);
    assert_eq!(result("completed"), 0.0);
    assert_eq!(moved_total(&before, &after, LOGINS_TOTAL), 5.0);
    assert_eq!(moved(&before, &after, SESSIONS_CREATED_TOTAL, &[]), 0.0);
    assert_eq!(
        moved(
            &before,
            &after,
            PROVIDER_REQUESTS_TOTAL,
            &[("endpoint", "token"), ("result", "error_response")]
        ),
        1.0
    );
}

#[tokio::test]
async fn a_refused_refresh_counts_as_invalid_grant_and_waiters_as_lock_wait() {
    let opts = ProviderOptions {
        token_delay: Duration::from_millis(400),
        ..short_lived()
    };
    let stack = start(opts, "").await;
    let mut b = stack.browser();
    b.login("/").await;
    let cookie = b.session_cookie().unwrap();
    stack
        .provider
        .set(|m| m.expires_in = support::provider::Override::Value(serde_json::json!(300)));
    tokio::time::sleep(Duration::from_millis(1100)).await;

    // Five requests of one session at once: one refreshes, four wait for it.
    let before = scrape(&stack.gh.app).await;
    let http = reqwest::Client::new();
    let calls = (0..5).map(|_| {
        http.get(stack.gh.url("/api/burst"))
            .header("x-csrf", "1")
            .header("cookie", format!("{COOKIE}={cookie}"))
            .send()
    });
    for res in futures_util::future::join_all(calls).await {
        assert_eq!(res.unwrap().status(), 200);
    }
    let burst = scrape(&stack.gh.app).await;
    assert_eq!(
        moved(&before, &burst, REFRESHES_TOTAL, &[("result", "ok")]),
        1.0
    );
    assert_eq!(
        moved(&before, &burst, REFRESHES_TOTAL, &[("result", "lock_wait")]),
        4.0
    );
    assert_eq!(moved_total(&before, &burst, REFRESHES_TOTAL), 5.0);

    // The next refresh is refused: the session ends.
    stack.provider.set(|m| {
        m.refresh_fault = Some(TokenFault::InvalidGrant);
        m.expires_in = support::provider::Override::Value(serde_json::json!(2));
    });
    let mut c = stack.browser();
    c.login("/").await;
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let before = scrape(&stack.gh.app).await;
    assert_eq!(c.api(Method::GET, "/api/x").await.status(), 401);
    let after = scrape(&stack.gh.app).await;
    assert_eq!(
        moved(
            &before,
            &after,
            REFRESHES_TOTAL,
            &[("result", "invalid_grant")]
        ),
        1.0
    );
    assert_eq!(moved_total(&before, &after, REFRESHES_TOTAL), 1.0);
    assert_eq!(
        moved(
            &before,
            &after,
            PROVIDER_REQUESTS_TOTAL,
            &[("endpoint", "token"), ("result", "error_response")]
        ),
        1.0
    );
    assert_eq!(requests(&before, &after, "/api/", "4xx"), 1.0);
}

#[tokio::test]
async fn a_store_that_does_not_answer_is_counted_per_operation() {
    // Nothing listens on port 1: every Redis call fails at once.
    let provider = TestProvider::start(ProviderOptions::default()).await;
    let upstream = EchoUpstream::start().await;
    let session = "store = \"redis\"\nredis_url = \"redis://127.0.0.1:1\"\nstore_timeout = \"1s\"";
    let gh = Gatehouse::start_unready(&with_metrics(&config(&provider, &upstream, session))).await;
    // The start-up probe pings once; wait for it to be counted.
    let ping = [("op", "ping")];
    let mut before = scrape(&gh.app).await;
    for _ in 0..100 {
        if before.value(STORE_ERRORS_TOTAL, &ping) >= 1.0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
        before = scrape(&gh.app).await;
    }
    assert_eq!(before.value(STORE_ERRORS_TOTAL, &ping), 1.0);
    let res = reqwest::get(gh.url("/readyz")).await.unwrap();
    assert_eq!(res.status(), 503);
    let after = scrape(&gh.app).await;
    assert_eq!(moved(&before, &after, STORE_ERRORS_TOTAL, &ping), 1.0);
    assert_eq!(moved_total(&before, &after, STORE_ERRORS_TOTAL), 1.0);
    assert_eq!(
        moved(
            &before,
            &after,
            "gatehouse_store_operation_duration_seconds_count",
            &ping
        ),
        1.0
    );
    assert_eq!(requests(&before, &after, "readyz", "5xx"), 1.0);
    assert!(
        after.samples.iter().all(|s| s.name != MEMORY_SESSIONS),
        "no memory store"
    );
}

#[tokio::test]
async fn open_connections_are_counted_while_open() {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let stack = start(ProviderOptions::default(), "").await;
    let app = &stack.gh.app;
    let baseline = scrape(app).await.value(OPEN_CONNECTIONS, &[]);
    assert_eq!(baseline, 0.0, "the readiness probe's connection is closed");
    let mut conns = Vec::new();
    for _ in 0..3 {
        let mut c = tokio::net::TcpStream::connect(stack.gh.addr).await.unwrap();
        let host = stack.gh.addr;
        c.write_all(format!("GET /healthz HTTP/1.1\r\nhost: {host}\r\n\r\n").as_bytes())
            .await
            .unwrap();
        let mut buf = [0u8; 512];
        assert!(c.read(&mut buf).await.unwrap() > 0);
        conns.push(c);
    }
    assert_eq!(scrape(app).await.value(OPEN_CONNECTIONS, &[]), 3.0);
    drop(conns);
    for _ in 0..100 {
        if scrape(app).await.value(OPEN_CONNECTIONS, &[]) == 0.0 {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("closed connections still counted");
}

#[tokio::test]
async fn the_metrics_listener_serves_get_and_head_of_metrics_only_and_the_public_one_none() {
    let stack = start(ProviderOptions::default(), "").await;
    let addr = stack.gh.app.metrics.local_addr().unwrap();
    assert_ne!(addr, stack.gh.addr);
    let http = reqwest::Client::new();
    let url = |p: &str| format!("http://{addr}{p}");
    let head = http.head(url("/metrics")).send().await.unwrap();
    assert_eq!(head.status(), 200);
    let post = http.post(url("/metrics")).send().await.unwrap();
    assert_eq!(post.status(), 405);
    assert_eq!(post.headers()["allow"], "GET, HEAD");
    assert_eq!(http.get(url("/api/x")).send().await.unwrap().status(), 404);
    assert_eq!(http.get(url("/")).send().await.unwrap().status(), 404);

    let s = scrape(&stack.gh.app).await;
    assert_eq!(
        s.value(BUILD_INFO, &[("version", env!("CARGO_PKG_VERSION"))]),
        1.0
    );
    assert_eq!(s.value(WEBSOCKETS_OPEN, &[]), 0.0);
    assert!(s.text.contains("# TYPE gatehouse_requests_total counter"));
    assert!(
        s.text
            .contains("# TYPE gatehouse_request_duration_seconds histogram")
    );

    // On the public listener `/metrics` is just a path of the `/` route.
    let public = http.get(stack.gh.url("/metrics")).send().await.unwrap();
    assert_eq!(public.status(), 200);
    assert!(
        !public
            .text()
            .await
            .unwrap()
            .contains("gatehouse_requests_total")
    );
    assert_eq!(stack.upstream.last().path_and_query, "/metrics");
}

#[tokio::test]
async fn without_metrics_listen_nothing_is_served_or_recorded() {
    let stack = Stack::start().await;
    assert!(stack.gh.app.metrics.local_addr().is_none());
    assert!(stack.gh.app.metrics.recorder().is_none());
    assert_eq!(stack.gh.app.metrics.render(), "");
}

#[tokio::test]
async fn the_websocket_helpers_move_the_gauge() {
    let stack = start(ProviderOptions::default(), "").await;
    websocket_opened();
    websocket_opened();
    websocket_closed();
    assert_eq!(scrape(&stack.gh.app).await.value(WEBSOCKETS_OPEN, &[]), 1.0);
}
