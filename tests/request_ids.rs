//! Request ids and JSON logs: every request has an id, seen in the `X-Request-Id` response
//! header, at the upstream, in error bodies and in every log line of the request (parsed line
//! by line, JSON and text).

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "tests fail loudly"
)]

mod support;

use std::time::Duration;

use gatehouse::telemetry::LogFormat;
use reqwest::Method;
use serde_json::Value;
use support::provider::TokenFault;
use support::*;

const FILTER: &str = "trace,hyper=info,hyper_util=info,h2=info,reqwest=info,redis=info";

/// Every captured line, parsed: each must be one JSON object.
fn json_lines() -> Vec<Value> {
    logs()
        .lines()
        .map(|l| {
            let v: Value = serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}"));
            assert!(v.is_object(), "{l}");
            v
        })
        .collect()
}

/// The lines logged while handling the request with `id`.
fn lines_of(lines: &[Value], id: &str) -> Vec<Value> {
    lines
        .iter()
        .filter(|l| l["span"]["request_id"] == id)
        .cloned()
        .collect()
}

fn id_of(res: &reqwest::Response) -> String {
    res.headers()["x-request-id"].to_str().unwrap().to_owned()
}

#[tokio::test]
async fn the_id_of_an_api_call_is_in_its_response_at_the_upstream_and_in_its_json_access_line() {
    capture_logs_as(LogFormat::Json, FILTER, Vec::new());
    let stack = Stack::start().await;
    let mut b = stack.browser();
    b.login("/").await;
    let res = b.api(Method::GET, "/api/things?q=1").await;
    assert_eq!(res.status(), 200);
    let id = id_of(&res);
    assert_eq!(id.len(), 32, "generated: 128 bits of hex");
    assert_eq!(
        stack.upstream.last().header("x-request-id"),
        Some(id.as_str())
    );

    let lines = json_lines();
    for l in &lines {
        for field in ["timestamp", "level", "message", "target"] {
            assert!(l[field].is_string(), "{field} in {l}");
        }
    }
    let access: Vec<&Value> = lines
        .iter()
        .filter(|l| l["message"] == "request" && l["span"]["request_id"] == id.as_str())
        .collect();
    assert_eq!(access.len(), 1, "one access line for the call");
    let line = access[0];
    assert_eq!(line["level"], "INFO");
    assert_eq!(line["method"], "GET");
    assert_eq!(line["route"], "/api/");
    assert_eq!(line["status"], 200);
    assert_eq!(line["session"], true);
    assert!(line["latency_us"].as_u64().is_some());
    assert_eq!(line["span"]["name"], "request");
    // Every request got its own id.
    let mut ids: Vec<&str> = lines
        .iter()
        .filter(|l| l["message"] == "request")
        .map(|l| l["span"]["request_id"].as_str().unwrap())
        .collect();
    let n = ids.len();
    ids.sort_unstable();
    ids.dedup();
    assert_eq!(ids.len(), n, "ids are unique");
    assert!(n >= 3, "login start, callback, API call: {n}");
}

#[tokio::test]
async fn every_line_a_request_logs_carries_its_id_even_from_the_refresh_it_spawned() {
    capture_logs_as(LogFormat::Json, FILTER, Vec::new());
    let opts = ProviderOptions {
        access_token_ttl: Duration::from_secs(2),
        ..ProviderOptions::default()
    };
    let stack = Stack::with(opts, "").await;
    let mut b = stack.browser();
    b.login("/").await;
    tokio::time::sleep(Duration::from_millis(1100)).await;
    stack
        .provider
        .set(|m| m.refresh_fault = Some(TokenFault::ServerError));
    let res = b.api(Method::GET, "/api/x").await;
    assert_eq!(res.status(), 200, "the current token is still valid");
    let id = id_of(&res);

    let lines = json_lines();
    let mine = lines_of(&lines, &id);
    let messages: Vec<&str> = mine
        .iter()
        .map(|l| l["message"].as_str().unwrap())
        .collect();
    assert!(
        messages.contains(&"refresh failed, forwarding with the current token"),
        "the refresh task's warning is the request's: {messages:?}"
    );
    assert_eq!(messages.last(), Some(&"request"), "{messages:?}");
    // No line of that refresh went out without the id.
    let orphans: Vec<&Value> = lines
        .iter()
        .filter(|l| l["message"] == "refresh failed, forwarding with the current token")
        .filter(|l| l["span"]["request_id"] != id.as_str())
        .collect();
    assert!(orphans.is_empty(), "{orphans:?}");
}

#[tokio::test]
async fn text_lines_of_a_request_carry_its_id() {
    capture_logs_as(LogFormat::Text, FILTER, Vec::new());
    let stack = Stack::start().await;
    let res = stack.browser().api(Method::GET, "/api/x").await;
    assert_eq!(res.status(), 401);
    let id = id_of(&res);
    let log = logs();
    let mine: Vec<&str> = log
        .lines()
        .filter(|l| l.contains(&format!("request{{request_id={id}}}")))
        .collect();
    assert!(
        mine.iter().any(|l| l.contains("request refused")),
        "{mine:#?}"
    );
    assert!(
        mine.iter()
            .any(|l| l.contains(" request ") && l.contains("status=401")),
        "{mine:#?}"
    );
}

#[tokio::test]
async fn a_valid_id_from_a_trusted_peer_is_kept_and_forwarded() {
    // The test client is on loopback, listed as a trusted proxy.
    let stack = Stack::with_server(
        ProviderOptions::default(),
        "trusted_proxies = [\"127.0.0.1/32\"]",
        "",
    )
    .await;
    let http = reqwest::Client::new();
    let res = http
        .get(stack.gh.url("/public"))
        .header("x-request-id", "lb-7f3a:9")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(id_of(&res), "lb-7f3a:9");
    let seen = stack.upstream.last();
    assert_eq!(seen.all("x-request-id"), vec!["lb-7f3a:9"]);
}

#[tokio::test]
async fn an_invalid_or_repeated_incoming_id_is_replaced() {
    let stack = Stack::start().await;
    let http = reqwest::Client::new();
    let long = "x".repeat(129);
    for ids in [vec!["has space"], vec![long.as_str()], vec!["a", "b"]] {
        let mut req = http.get(stack.gh.url("/public"));
        for id in &ids {
            req = req.header("x-request-id", *id);
        }
        let res = req.send().await.unwrap();
        let id = id_of(&res);
        assert!(!ids.contains(&id.as_str()), "{ids:?} kept");
        assert_eq!(id.len(), 32);
        assert_eq!(stack.upstream.last().all("x-request-id"), vec![id.as_str()]);
    }
}

#[tokio::test]
async fn error_bodies_and_pages_name_the_request_id() {
    let stack = Stack::start().await;
    let http = reqwest::Client::new();
    let res = http
        .get(stack.gh.url("/api/x"))
        .header("x-csrf", "1")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 401);
    let id = id_of(&res);
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["error"], "unauthenticated");
    assert_eq!(body["request_id"], id.as_str());

    let page = http
        .get(stack.gh.url("/auth/callback?state=unknown&code=x"))
        .header("accept", "text/html")
        .send()
        .await
        .unwrap();
    assert_eq!(page.status(), 400);
    let id = id_of(&page);
    assert!(
        page.text()
            .await
            .unwrap()
            .contains(&format!("request id {id}"))
    );
}

#[tokio::test]
async fn an_id_from_a_peer_that_is_not_a_trusted_proxy_is_replaced() {
    // No trusted_proxies: not even a loopback peer is believed.
    let stack = Stack::start().await;
    let res = reqwest::Client::new()
        .get(stack.gh.url("/public"))
        .header("x-request-id", "spoofed-id-1")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let id = id_of(&res);
    assert_ne!(id, "spoofed-id-1");
    assert_eq!(stack.upstream.last().all("x-request-id"), vec![id.as_str()]);
}
