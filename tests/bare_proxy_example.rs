//! `examples/bare_proxy.rs`, the floor `scripts/loadtest.sh` measures gatehouse against, is a
//! working proxy: a request through it reaches the upstream with its method, path and query.

#[expect(dead_code, reason = "the example's main is not used here")]
#[path = "../examples/bare_proxy.rs"]
mod bare_proxy;
mod support;

use support::EchoUpstream;

#[tokio::test]
async fn a_request_through_the_bare_proxy_reaches_the_upstream_as_sent() {
    let upstream = EchoUpstream::start().await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let proxy = listener.local_addr().unwrap();
    let authority = upstream.addr.to_string().parse().unwrap();
    tokio::spawn(bare_proxy::serve(listener, authority));
    let res = reqwest::Client::new()
        .post(format!("http://{proxy}/api/things?q=1"))
        .body("hello")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let seen = upstream.last();
    assert_eq!(seen.method, "POST");
    assert_eq!(seen.path_and_query, "/api/things?q=1");
    assert_eq!(seen.body_len, 5);
}
