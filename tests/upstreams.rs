//! Upstreams that close connections, die, come back, and come in twos: what is sent again
//! and what never is, how the addresses of a route are balanced and taken out.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "tests fail loudly"
)]

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use gatehouse::telemetry::metrics::UPSTREAM_RETRIES_TOTAL;
use support::faulty::{Closer, Closing, Killable};
use support::prometheus::{scrape, with_metrics};
use support::*;

/// A gatehouse whose routes are `routes` (TOML `[[routes]]` tables), metrics on.
async fn gatehouse(provider: &TestProvider, routes: &str) -> Gatehouse {
    Gatehouse::start(&text(provider, routes)).await
}

/// The config of [`gatehouse`], `{listen}` and `{origin}` left to fill in.
fn text(provider: &TestProvider, routes: &str) -> String {
    let text = format!(
        r#"
[server]
listen = "{{listen}}"
public_origin = "{{origin}}"
shutdown_grace = "5s"

[oidc]
issuer = "{issuer}"
client_id = "{client_id}"
client_secret = "{secret}"

[session]
keys = ["{KEY_A}"]

{routes}
"#,
        issuer = provider.issuer(),
        client_id = provider.options().client_id,
        secret = provider.options().client_secret,
    );
    with_metrics(&text)
}

fn route(path: &str, upstream: &str, extra: &str) -> String {
    format!("[[routes]]\npath = \"{path}\"\nupstream = {upstream}\nauth = \"none\"\n{extra}\n")
}

async fn retries(gh: &Gatehouse, route: &str) -> f64 {
    scrape(&gh.app)
        .await
        .value(UPSTREAM_RETRIES_TOTAL, &[("route", route)])
}

#[tokio::test]
async fn a_get_on_a_pooled_connection_the_upstream_closed_is_sent_again_on_a_fresh_one() {
    let provider = TestProvider::start(ProviderOptions::default()).await;
    let closer = Closer::start(Closing::AfterOneAnswer).await;
    let gh = gatehouse(&provider, &route("/", &format!("\"{}\"", closer.url()), "")).await;
    let http = reqwest::Client::new();
    for i in 0..20 {
        let res = http.get(gh.url(&format!("/x/{i}"))).send().await.unwrap();
        assert_eq!(res.status(), 200, "request {i}");
        assert_eq!(res.text().await.unwrap(), "ok");
    }
    let dropped = closer.dropped();
    assert!(
        !dropped.is_empty(),
        "some GETs went out on a reused connection that the upstream then closed"
    );
    assert!(dropped.iter().all(|m| m == "GET"));
    assert_eq!(
        retries(&gh, "/").await,
        dropped.len() as f64,
        "each one sent again once, and counted"
    );
    let lines = logs();
    let retry_lines: Vec<&str> = lines
        .lines()
        .filter(|l| l.contains("sending it again"))
        .collect();
    assert_eq!(retry_lines.len(), dropped.len());
    assert!(
        retry_lines.iter().all(|l| l.contains("DEBUG")),
        "debug only"
    );
}

#[tokio::test]
async fn a_get_that_received_part_of_a_response_is_never_sent_again() {
    let provider = TestProvider::start(ProviderOptions::default()).await;
    let closer = Closer::start(Closing::MidAnswer).await;
    let gh = gatehouse(&provider, &route("/", &format!("\"{}\"", closer.url()), "")).await;
    let http = reqwest::Client::new();
    let mut failed = 0;
    for i in 0..20 {
        let res = http.get(gh.url(&format!("/x/{i}"))).send().await.unwrap();
        match res.status().as_u16() {
            200 => {}
            502 => failed += 1,
            other => panic!("request {i}: {other}"),
        }
    }
    let dropped = closer.dropped().len();
    assert!(
        dropped > 0,
        "some GETs got half a response head, then a closed connection"
    );
    assert_eq!(failed, dropped, "each of them failed, none was sent again");
    assert_eq!(retries(&gh, "/").await, 0.0);
}

#[tokio::test]
async fn a_post_whose_body_was_forwarded_is_never_sent_twice() {
    let provider = TestProvider::start(ProviderOptions::default()).await;
    let closer = Closer::start(Closing::AfterTheBody).await;
    let routes = route("/p/", &format!("\"{}\"", closer.url()), "")
        + &route(
            "/w/",
            &format!("\"{}\"", closer.url()),
            "retry_idempotent_writes = true",
        );
    let gh = gatehouse(&provider, &routes).await;
    let http = reqwest::Client::new();
    let body = vec![b'x'; 256 * 1024];
    for (method, path) in [
        (reqwest::Method::POST, "/p/orders"),
        (reqwest::Method::POST, "/p/orders"),
        (reqwest::Method::PATCH, "/p/orders/1"),
        (reqwest::Method::PUT, "/w/orders/1"),
        (reqwest::Method::DELETE, "/w/orders/1"),
    ] {
        let res = http
            .request(method.clone(), gh.url(path))
            .body(body.clone())
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 502, "{method}: the upstream never answered");
        let json: serde_json::Value = res.json().await.unwrap();
        assert_eq!(json["error"], "upstream_unavailable");
    }
    assert_eq!(
        closer.seen.bodies.load(Ordering::SeqCst),
        5,
        "each body reached the upstream exactly once, even where PUT/DELETE may be retried"
    );
    assert_eq!(closer.dropped().len(), 5);
    assert_eq!(retries(&gh, "/p/").await, 0.0);
    assert_eq!(retries(&gh, "/w/").await, 0.0);
}

#[tokio::test]
async fn an_empty_put_is_sent_again_only_where_retry_idempotent_writes_allows_it() {
    let provider = TestProvider::start(ProviderOptions::default()).await;
    let plain = Closer::start(Closing::AfterOneAnswer).await;
    let writes = Closer::start(Closing::AfterOneAnswer).await;
    let routes = route("/p/", &format!("\"{}\"", plain.url()), "")
        + &route(
            "/w/",
            &format!("\"{}\"", writes.url()),
            "retry_idempotent_writes = true",
        );
    let gh = gatehouse(&provider, &routes).await;
    let http = reqwest::Client::new();
    let mut refused_puts = 0;
    for i in 0..10 {
        for prefix in ["/p/", "/w/"] {
            let get = http
                .get(gh.url(&format!("{prefix}{i}")))
                .send()
                .await
                .unwrap();
            assert_eq!(get.status(), 200, "GETs are always sent again");
            let put = http
                .put(gh.url(&format!("{prefix}{i}")))
                .send()
                .await
                .unwrap();
            match (prefix, put.status().as_u16()) {
                ("/w/", status) => assert_eq!(status, 200, "PUT {i} with the key"),
                (_, 502) => refused_puts += 1,
                (_, status) => assert_eq!(status, 200),
            }
        }
    }
    let dropped_puts = |c: &Closer| c.dropped().iter().filter(|m| *m == "PUT").count();
    assert!(
        dropped_puts(&writes) > 0,
        "some PUTs hit a closed connection"
    );
    assert_eq!(
        refused_puts,
        dropped_puts(&plain),
        "without the key a PUT that hit a closed connection is not sent again"
    );
    assert!(refused_puts > 0);
}

#[tokio::test]
async fn when_every_address_refuses_the_answer_is_502_upstream_unavailable() {
    let provider = TestProvider::start(ProviderOptions::default()).await;
    // Two ports nobody listens on.
    let dead: Vec<String> = {
        let a = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let b = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        vec![
            format!("\"http://{}\"", a.local_addr().unwrap()),
            format!("\"http://{}\"", b.local_addr().unwrap()),
        ]
    };
    let gh = gatehouse(
        &provider,
        &route("/", &format!("[{}]", dead.join(", ")), ""),
    )
    .await;
    let http = reqwest::Client::new();
    for _ in 0..3 {
        let res = http.get(gh.url("/x")).send().await.unwrap();
        assert_eq!(res.status(), 502);
        assert_eq!(res.headers()["content-type"], "application/json");
        let json: serde_json::Value = res.json().await.unwrap();
        assert_eq!(json["error"], "upstream_unavailable");
    }
    assert!(
        logs().contains("out for a cool-down"),
        "both addresses were taken out"
    );
}

/// Load on a route: `gets` and `posts` tasks each sending one request after another.
struct Load {
    stop: Arc<AtomicBool>,
    /// Failures per method, and how many came after [`Load::mark`].
    get_errors: Arc<AtomicUsize>,
    post_errors: Arc<AtomicUsize>,
    errors_after_mark: Arc<AtomicUsize>,
    marked: Arc<AtomicBool>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Load {
    fn start(url: String, gets: usize, posts: usize) -> Load {
        let http = reqwest::Client::new();
        let stop = Arc::new(AtomicBool::new(false));
        let get_errors = Arc::new(AtomicUsize::new(0));
        let post_errors = Arc::new(AtomicUsize::new(0));
        let errors_after_mark = Arc::new(AtomicUsize::new(0));
        let marked = Arc::new(AtomicBool::new(false));
        let tasks = (0..gets + posts)
            .map(|i| {
                let post = i >= gets;
                let (http, url, stop) = (http.clone(), url.clone(), Arc::clone(&stop));
                let errors = Arc::clone(if post { &post_errors } else { &get_errors });
                let (after, marked) = (Arc::clone(&errors_after_mark), Arc::clone(&marked));
                tokio::spawn(async move {
                    while !stop.load(Ordering::SeqCst) {
                        let was_marked = marked.load(Ordering::SeqCst);
                        let req = if post {
                            http.post(&url).body("order")
                        } else {
                            http.get(&url)
                        };
                        let ok = match req.send().await {
                            Ok(res) => res.status() == 200 && res.bytes().await.is_ok(),
                            Err(_) => false,
                        };
                        if !ok {
                            errors.fetch_add(1, Ordering::SeqCst);
                            if was_marked {
                                after.fetch_add(1, Ordering::SeqCst);
                            }
                        }
                    }
                })
            })
            .collect();
        Load {
            stop,
            get_errors,
            post_errors,
            errors_after_mark,
            marked,
            tasks,
        }
    }

    /// From now on, failures also count as "after the mark".
    fn mark(&self) {
        self.marked.store(true, Ordering::SeqCst);
    }

    async fn stop(self) -> (usize, usize, usize) {
        self.stop.store(true, Ordering::SeqCst);
        for t in self.tasks {
            t.await.unwrap();
        }
        (
            self.get_errors.load(Ordering::SeqCst),
            self.post_errors.load(Ordering::SeqCst),
            self.errors_after_mark.load(Ordering::SeqCst),
        )
    }
}

/// Waits (yielding to the load) until `done` holds; gives up after a generous while.
async fn until(what: &str, mut done: impl FnMut() -> bool) {
    for _ in 0..6000 {
        if done() {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    panic!("never happened: {what}");
}

const GETS: usize = 24;
const POSTS: usize = 8;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_of_two_addresses_killed_under_load_costs_no_get_and_comes_back_when_restarted() {
    let provider = TestProvider::start(ProviderOptions::default()).await;
    let a = Killable::start().await;
    let b = Killable::start().await;
    let list = format!("[\"{}\", \"{}\"]", a.url(), b.url());
    let gh = gatehouse(&provider, &route("/", &list, "")).await;
    let load = Load::start(gh.url("/orders"), GETS, POSTS);
    until("both addresses serve", || {
        a.answered() > 200 && b.answered() > 200
    })
    .await;

    b.kill();
    let a_at_kill = a.answered();
    until("the load moved to the other address", || {
        a.answered() > a_at_kill + 500
    })
    .await;
    // The kill is seen: whatever failed, failed in the instant of the kill.
    load.mark();
    let b_dead = b.answered();
    until("more load while one address is down", || {
        a.answered() > a_at_kill + 1500
    })
    .await;
    assert_eq!(b.answered(), b_dead, "nothing reached the dead address");

    b.restart().await;
    until("the restarted address is back in rotation", || {
        b.answered() > b_dead + 100
    })
    .await;
    let (get_errors, post_errors, after_mark) = load.stop().await;
    eprintln!("errors: GET {get_errors}, POST {post_errors}, after the kill was seen {after_mark}");
    assert_eq!(get_errors, 0, "every GET succeeded, the kill included");
    assert_eq!(after_mark, 0, "no request failed once the kill was seen");
    // A POST cannot be sent again once written: those in flight on the killed address when
    // it died (one per POST task at most) fail, and nothing else.
    assert!(
        post_errors <= POSTS,
        "{post_errors} POSTs failed, more than the {POSTS} that can be in flight"
    );
}

#[tokio::test]
async fn an_address_failing_its_health_check_is_out_until_it_passes_again() {
    let provider = TestProvider::start(ProviderOptions::default()).await;
    let a = Killable::start().await;
    let b = Killable::start().await;
    let list = format!("[\"{}\", \"{}\"]", a.url(), b.url());
    let gh = gatehouse(
        &provider,
        &route(
            "/",
            &list,
            "health_path = \"/healthz\"\nhealth_interval = \"100ms\"",
        ),
    )
    .await;
    b.kill();
    until("the health check took the dead address out", || {
        logs().contains("the health check failed")
    })
    .await;
    let http = reqwest::Client::new();
    for _ in 0..10 {
        let res = http.get(gh.url("/x")).send().await.unwrap();
        assert_eq!(res.status(), 200);
    }
    assert_eq!(
        retries(&gh, "/").await,
        0.0,
        "no request tried the address the check took out"
    );
    b.restart().await;
    until("the health check brought it back", || {
        logs().contains("the health check passed")
    })
    .await;
    let b_before = b.answered();
    for _ in 0..10 {
        assert_eq!(http.get(gh.url("/x")).send().await.unwrap().status(), 200);
    }
    assert!(b.answered() >= b_before + 5, "round robin reaches it again");
}

#[tokio::test]
async fn a_reload_changes_a_routes_addresses_live_and_the_pool_keys_only_after_a_restart() {
    let provider = TestProvider::start(ProviderOptions::default()).await;
    let a = Killable::start().await;
    let b = Killable::start().await;
    let gh = gatehouse(&provider, &route("/", &format!("\"{}\"", a.url()), "")).await;
    let http = reqwest::Client::new();
    for _ in 0..3 {
        assert_eq!(http.get(gh.url("/x")).send().await.unwrap().status(), 200);
    }
    assert_eq!((a.answered(), b.answered()), (3, 0));
    let list = format!("[\"{}\", \"{}\"]", a.url(), b.url());
    let new = text(&provider, &route("/", &list, ""))
        .replace("{listen}", &gh.addr.to_string())
        .replace("{origin}", &gh.origin)
        .replacen(
            "[server]\n",
            "[server]\nupstream_idle_timeout = \"9s\"\nupstream_pool_max_idle = 3\n",
            1,
        );
    let new = gatehouse::config::Config::from_toml(&new, &gatehouse::config::NoEnv).unwrap();
    let restart = gatehouse::reload::apply(&gh.app, new);
    assert!(
        restart.contains(&"server.upstream_idle_timeout"),
        "{restart:?}"
    );
    assert!(
        restart.contains(&"server.upstream_pool_max_idle"),
        "{restart:?}"
    );
    let server = &gh.app.snapshot().server;
    assert_eq!(
        server.upstream_idle_timeout.as_secs(),
        4,
        "running value kept"
    );
    assert_eq!(server.upstream_pool_max_idle, 128);
    for _ in 0..10 {
        assert_eq!(http.get(gh.url("/x")).send().await.unwrap().status(), 200);
    }
    assert_eq!(
        b.answered(),
        5,
        "the new address takes every other request at once"
    );
}

#[tokio::test]
async fn every_address_of_a_token_route_gets_the_token_its_own_host_and_never_our_cookie() {
    let provider = TestProvider::start(ProviderOptions::default()).await;
    let one = EchoUpstream::start().await;
    let two = EchoUpstream::start().await;
    let two_by_name = format!("http://localhost:{}", two.addr.port());
    let routes = format!(
        "[[routes]]\npath = \"/api/\"\nupstream = [\"{}\", \"{two_by_name}\"]\nauth = \"required\"\n",
        one.url()
    );
    let gh = gatehouse(&provider, &routes).await;
    let mut b = Browser::new(&gh.origin);
    b.login("/").await;
    for _ in 0..6 {
        let req = b
            .http
            .get(gh.url("/api/x"))
            .header("x-csrf", "1")
            .header("authorization", "Bearer forged")
            .header("x-forwarded-for", "203.0.113.9");
        assert_eq!(b.send(req).await.status(), 200);
    }
    assert_eq!(one.count() + two.count(), 6);
    for (upstream, host) in [
        (&one, one.addr.to_string()),
        (&two, format!("localhost:{}", two.addr.port())),
    ] {
        let seen = upstream.requests();
        assert!(!seen.is_empty(), "both addresses get requests");
        for r in seen {
            assert_eq!(r.header("host"), Some(host.as_str()));
            let auth = r.header("authorization").unwrap();
            assert!(auth.starts_with("Bearer ") && auth != "Bearer forged");
            assert_eq!(r.all("authorization").len(), 1);
            assert!(r.header("cookie").is_none_or(|c| !c.contains(COOKIE)));
            assert_eq!(r.header("x-forwarded-for"), Some("127.0.0.1"));
        }
    }
}
