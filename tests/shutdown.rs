//! Graceful shutdown: in-flight requests finish, new connections are refused.
#![allow(clippy::unwrap_used, reason = "tests fail loudly")]

mod support;

use std::time::Duration;

use support::*;

#[tokio::test]
async fn shutdown_lets_in_flight_requests_finish() {
    let provider = TestProvider::start(ProviderOptions::default()).await;
    let upstream = EchoUpstream::start().await;
    let gh = Gatehouse::start(&config(&provider, &upstream, "")).await;
    let url = gh.url("/opt/slow");
    let addr = gh.addr;
    // Optional route, no session: forwarded bare; the upstream answers after 2 s.
    let in_flight = tokio::spawn(async move {
        reqwest::Client::new()
            .get(url)
            .header("x-csrf", "1")
            .send()
            .await
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    let started = std::time::Instant::now();
    gh.shutdown().await;
    let res = in_flight.await.unwrap().unwrap();
    assert_eq!(res.status(), 200, "the in-flight request completed");
    assert!(
        started.elapsed() >= Duration::from_millis(1000),
        "shutdown waited for it"
    );
    assert!(
        tokio::net::TcpStream::connect(addr).await.is_err(),
        "no new connections after shutdown"
    );
}
