//! What every proxied request pays before it is forwarded: opening the session cookie, the
//! store key, loading and decoding the session it points to, the header rewrite, and the
//! whole pipeline in-process (a request through `server::serve` to a loopback upstream).
//! Also sealing, which a login pays once. Redis runs only when one answers on 127.0.0.1:6379.
//!
//! `cargo bench --bench hot_path -- --warm-up-time 1 --measurement-time 3`

use std::hint::black_box;
use std::time::Duration;

use criterion::{Criterion, criterion_group, criterion_main};
use gatehouse::config::{Config, NoEnv};
use gatehouse::cookie::{CookieNames, Jar, KEY_LEN, KeyRing};
use gatehouse::proxy::headers::{self, Forwarding};
use gatehouse::secret::Secret;
use gatehouse::session::{CookieSecret, Identity, Sessions, Store, Tokens, now, record};
use http::HeaderMap;
use http::header::{COOKIE, HeaderValue};
use serde_json::json;
use tokio::runtime::Runtime;

const COOKIE_NAME: &str = "__Host-gatehouse";
const REDIS_URL: &str = "redis://127.0.0.1:6379";

fn cookie(c: &mut Criterion) {
    let plaintext = CookieSecret::random().to_bytes();
    let ring = KeyRing::new(vec![[1; KEY_LEN]]);
    let sealed = ring.seal(COOKIE_NAME, &plaintext);
    // After a rotation: a new key in front, the cookie still sealed with the old one.
    let rotated = KeyRing::new(vec![[2; KEY_LEN], [1; KEY_LEN]]);

    let mut group = c.benchmark_group("cookie");
    group.bench_function("seal", |b| {
        b.iter(|| ring.seal(black_box(COOKIE_NAME), black_box(&plaintext)));
    });
    // As a request opens its session cookie: into the secret, no buffer on the heap.
    group.bench_function("open", |b| {
        b.iter(|| {
            ring.open_with(
                black_box(COOKIE_NAME),
                black_box(&sealed),
                CookieSecret::from_bytes,
            )
        });
    });
    group.bench_function("open_with_second_key", |b| {
        b.iter(|| {
            rotated.open_with(
                black_box(COOKIE_NAME),
                black_box(&sealed),
                CookieSecret::from_bytes,
            )
        });
    });
    group.finish();
}

/// Reading a request's `Cookie` header into the jar: the session cookie beside one other,
/// and beside 4 KB of a site's other cookies (analytics, consent, A/B tests).
fn cookie_jar(c: &mut Criterion) {
    let names = CookieNames::new(COOKIE_NAME);
    let session =
        KeyRing::new(vec![[1; KEY_LEN]]).seal(COOKIE_NAME, &CookieSecret::random().to_bytes());
    let small = format!("theme=dark; {COOKIE_NAME}={session}");
    let others: Vec<String> = (0..40)
        .map(|i| {
            format!(
                "_ga_{i:02}=GS1.1.1700000000.{i}.1.1700000000.0.0.{}",
                "9".repeat(60)
            )
        })
        .collect();
    let large = format!("{}; {COOKIE_NAME}={session}", others.join("; "));
    assert!(large.len() > 4096);
    let mut group = c.benchmark_group("cookie_jar");
    for (name, value) in [("take", small), ("take_4k", large)] {
        let mut headers = HeaderMap::new();
        headers.insert(
            COOKIE,
            HeaderValue::from_str(&value).unwrap_or(HeaderValue::from_static("")),
        );
        group.bench_function(name, |b| {
            b.iter_batched_ref(
                || headers.clone(),
                |headers| Jar::take(headers, &names),
                criterion::BatchSize::SmallInput,
            );
        });
    }
    group.finish();
}

/// A config whose only interesting part is the session store.
fn config(session: &str) -> Option<Config> {
    let text = format!(
        r#"
[server]
public_origin = "http://127.0.0.1:8080"
[oidc]
issuer = "http://127.0.0.1:9000"
client_id = "bff"
client_secret = "bff-secret"
[session]
keys = ["AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8="]
{session}
"#
    );
    match Config::from_toml(&text, &NoEnv) {
        Ok(config) => Some(config),
        Err(e) => {
            eprintln!("hot_path: bench config rejected: {e}");
            None
        }
    }
}

/// Sessions over the configured store, like `App::new` builds them.
fn sessions(mut config: Config) -> Option<Sessions> {
    let store = Store::with_local_cache(
        &config.session.store,
        config.session.store_timeout,
        &config.session.key_prefix,
    )
    .ok()?;
    let keys = std::mem::replace(&mut config.session.keys, KeyRing::new(Vec::new()));
    Some(Sessions::new(&config.session, store, keys))
}

/// A realistic session: JWT-sized tokens and a few claims.
fn session(sessions: &Sessions) -> gatehouse::session::Session {
    let jwt = |n: usize| Secret::new("x".repeat(n));
    let tokens = Tokens {
        access_token: jwt(900),
        issued_at_ms: now() * 1000,
        access_expires_at_ms: (now() + 300) * 1000,
        refresh_token: Some(jwt(64)),
        id_token: Some(jwt(900)),
        bearer: Default::default(),
    };
    let claims = json!({
        "sub": "alice",
        "email": "alice@example.test",
        "email_verified": true,
        "name": "Alice Example",
    });
    let claims = claims.as_object().cloned().unwrap_or_default();
    let identity = Identity {
        sub: "alice".into(),
        sid: Some("sid-1".into()),
        claims,
        aud: vec!["bff".into()],
        auth_time: Some(now()),
    };
    sessions.new_session(identity, tokens)
}

/// Creates a session and returns the request headers a browser would then send.
fn logged_in(rt: &Runtime, sessions: &Sessions) -> Option<HeaderMap> {
    let value = rt.block_on(sessions.create(&session(sessions))).ok()?;
    let mut headers = HeaderMap::new();
    let cookie = format!("theme=dark; {COOKIE_NAME}={value}");
    headers.insert(COOKIE, HeaderValue::from_str(&cookie).ok()?);
    Some(headers)
}

fn bench_load(c: &mut Criterion, rt: &Runtime, name: &str, sessions: &Sessions) {
    let Some(headers) = logged_in(rt, sessions) else {
        eprintln!("hot_path: could not create a session in the {name} store; skipped");
        return;
    };
    let names = CookieNames::new(COOKIE_NAME);
    let load = || async {
        let mut headers = black_box(headers.clone());
        let jar = Jar::take(&mut headers, &names);
        let secret = sessions.cookie_secret(&jar)?;
        sessions.load(secret, false).await.ok().flatten()
    };
    // Measure the path a logged-in request takes, not a miss.
    if rt.block_on(load()).is_none() {
        eprintln!("hot_path: the {name} store did not return the session; skipped");
        return;
    }
    // The Redis store's local cache serves hot sessions once its tracking connection is up.
    for _ in 0..200 {
        if sessions.store.cache_stats().is_none_or(|s| s.connects > 0) {
            break;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let _ = rt.block_on(load());
    let mut group = c.benchmark_group("session_load");
    group.bench_function(name, |b| b.to_async(rt).iter(load));
    group.finish();
}

fn session_load(c: &mut Criterion) {
    let Ok(rt) = Runtime::new() else {
        eprintln!("hot_path: no tokio runtime; session_load skipped");
        return;
    };
    if let Some(memory) = config(r#"store = "memory""#).and_then(sessions) {
        bench_load(c, &rt, "memory", &memory);
    }

    let prefix = format!("gh-bench-{:x}:", rand::random::<u32>());
    let redis =
        format!("store = \"redis\"\nredis_url = \"{REDIS_URL}\"\nredis_prefix = \"{prefix}\"");
    // The store connects lazily, inside the runtime.
    let redis = rt.block_on(async { config(&redis).and_then(sessions) });
    let answers = redis.as_ref().is_some_and(|s| {
        rt.block_on(async {
            tokio::time::timeout(Duration::from_secs(1), s.store.ping())
                .await
                .is_ok_and(|r| r.is_ok())
        })
    });
    match redis {
        Some(redis) if answers => bench_load(c, &rt, "redis", &redis),
        _ => eprintln!("hot_path: no Redis answers on {REDIS_URL}; session_load/redis skipped"),
    }
}

fn store_key(c: &mut Criterion) {
    let id = CookieSecret::random().id;
    c.bench_function("store_key", |b| {
        b.iter(|| record::store_key(black_box("gatehouse:"), "s:", black_box(&id)));
    });
}

/// Decrypting and decoding a session record (what a load does after the store answered).
fn session_decode(c: &mut Criterion) {
    let Some(sessions) = config(r#"store = "memory""#).and_then(sessions) else {
        return;
    };
    let secret = CookieSecret::random();
    let key = record::store_key("gatehouse:", "s:", &secret.id);
    let Some(sealed) = record::seal(&secret.record_key, &key, &session(&sessions)) else {
        return;
    };
    c.bench_function("session_decode", |b| {
        b.iter(|| {
            record::open::<gatehouse::session::Session>(
                black_box(&secret.record_key),
                black_box(&key),
                black_box(&sealed),
            )
        });
    });
}

/// The request header rewrite of a token route: hop-by-hop and spoofable headers out, the
/// forwarding headers and the Bearer token in.
fn header_rewrite(c: &mut Criterion) {
    let mut browser = HeaderMap::new();
    for (name, value) in [
        ("host", "app.example.com"),
        (
            "user-agent",
            "Mozilla/5.0 (X11; Linux x86_64) Gecko/20100101 Firefox/128.0",
        ),
        ("accept", "application/json"),
        ("accept-language", "en-GB,en;q=0.5"),
        ("accept-encoding", "gzip, deflate, br"),
        ("referer", "https://app.example.com/orders"),
        ("x-csrf", "1"),
        ("sec-fetch-site", "same-origin"),
        ("sec-fetch-mode", "cors"),
        ("connection", "keep-alive"),
    ] {
        browser.insert(
            http::HeaderName::from_static(name),
            HeaderValue::from_static(value),
        );
    }
    let bearer = HeaderValue::from_str(&format!("Bearer {}", "x".repeat(900))).ok();
    c.bench_function("header_rewrite", |b| {
        b.iter_batched_ref(
            || browser.clone(),
            |headers| {
                headers::prepare_request(
                    headers,
                    Forwarding {
                        client_ip: HeaderValue::from_static("192.0.2.1"),
                        proto: "https",
                        host: Some(HeaderValue::from_static("app.example.com")),
                        cookie: None,
                        authorization: Some(bearer.clone()),
                        strip: &[],
                    },
                );
            },
            criterion::BatchSize::SmallInput,
        );
    });
}

/// A fixed 200 on `listener`, like the load test's nginx upstream.
async fn fixed_upstream(listener: tokio::net::TcpListener) {
    use hyper::service::service_fn;
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        tokio::spawn(async move {
            let service = service_fn(|_req| async {
                Ok::<_, std::convert::Infallible>(hyper::Response::new(http_body_util::Full::new(
                    bytes::Bytes::from_static(b"{\"ok\":true}"),
                )))
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                .await;
        });
    }
}

/// One request through the whole pipeline (`server::serve`, memory store, `auth = "required"`
/// and `auth = "none"`) to a loopback upstream, over one kept-alive connection.
fn pipeline(c: &mut Criterion) {
    use http_body_util::{BodyExt as _, Empty};
    let Ok(rt) = Runtime::new() else { return };
    let setup = rt.block_on(async {
        let upstream = tokio::net::TcpListener::bind("127.0.0.1:0").await.ok()?;
        let upstream_addr = upstream.local_addr().ok()?;
        tokio::spawn(fixed_upstream(upstream));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.ok()?;
        let addr = listener.local_addr().ok()?;
        let routes = format!(
            "store = \"memory\"\n[[routes]]\npath = \"/api/\"\nupstream = \"http://{upstream_addr}\"\nauth = \"required\"\n[[routes]]\npath = \"/open/\"\nupstream = \"http://{upstream_addr}\"\nauth = \"none\""
        );
        let config = config(&routes)?;
        let app = std::sync::Arc::new(gatehouse::app::App::new(config).ok()?);
        let headers = logged_in_app(&app).await?;
        tokio::spawn(gatehouse::server::serve(
            listener,
            std::sync::Arc::clone(&app),
            std::future::pending::<()>(),
        ));
        let stream = tokio::net::TcpStream::connect(addr).await.ok()?;
        let (sender, conn) =
            hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
                .await
                .ok()?;
        tokio::spawn(conn);
        Some((sender, headers))
    });
    let Some((sender, headers)) = setup else {
        eprintln!("hot_path: could not start the in-process pipeline; skipped");
        return;
    };
    let sender = std::sync::Arc::new(tokio::sync::Mutex::new(sender));
    let probe = rt.block_on(async {
        let mut sender = sender.lock().await;
        let mut req = http::Request::get("/api/x")
            .header("host", "127.0.0.1:8080")
            .header("x-csrf", "1")
            .body(Empty::<bytes::Bytes>::new())
            .unwrap_or_default();
        req.headers_mut().extend(headers.clone());
        sender.send_request(req).await.map(|r| r.status())
    });
    if !probe.as_ref().is_ok_and(|s| s.is_success()) {
        eprintln!("hot_path: the in-process pipeline answered {probe:?}; skipped");
        return;
    }
    let mut group = c.benchmark_group("pipeline");
    for (name, path, with_session) in [
        ("required_memory", "/api/x", true),
        ("none", "/open/x", false),
    ] {
        let request = || {
            let mut req = http::Request::get(path)
                .header("host", "127.0.0.1:8080")
                .header("x-csrf", "1")
                .body(Empty::<bytes::Bytes>::new())
                .unwrap_or_default();
            if with_session {
                req.headers_mut().extend(headers.clone());
            }
            req
        };
        group.bench_function(name, |b| {
            b.iter_custom(|iters| {
                rt.block_on(async {
                    let mut sender = sender.lock().await;
                    let started = std::time::Instant::now();
                    for _ in 0..iters {
                        if sender.ready().await.is_err() {
                            break;
                        }
                        let Ok(res) = sender.send_request(request()).await else {
                            break;
                        };
                        assert!(res.status().is_success(), "{name}: {}", res.status());
                        let _ = black_box(res.into_body().collect().await);
                    }
                    started.elapsed()
                })
            });
        });
    }
    group.finish();
}

/// A session in `app`'s store; the request headers that carry it.
async fn logged_in_app(app: &gatehouse::app::App) -> Option<HeaderMap> {
    let value = app.sessions.create(&session(&app.sessions)).await.ok()?;
    let mut headers = HeaderMap::new();
    let cookie = format!("theme=dark; {COOKIE_NAME}={value}");
    headers.insert(COOKIE, HeaderValue::from_str(&cookie).ok()?);
    Some(headers)
}

criterion_group!(
    benches,
    cookie,
    cookie_jar,
    store_key,
    session_decode,
    header_rewrite,
    session_load,
    pipeline
);
criterion_main!(benches);
