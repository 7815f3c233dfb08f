//! What every proxied request pays before it is forwarded: opening the session cookie and
//! loading the session it points to (one store round trip, record decrypted). Also sealing,
//! which a login pays once. Redis runs only when one answers on 127.0.0.1:6379.
//!
//! `cargo bench --bench hot_path -- --warm-up-time 1 --measurement-time 3`

use std::hint::black_box;
use std::time::Duration;

use criterion::{Criterion, criterion_group, criterion_main};
use gatehouse::config::{Config, NoEnv};
use gatehouse::cookie::{CookieNames, Jar, KEY_LEN, KeyRing};
use gatehouse::secret::Secret;
use gatehouse::session::{CookieSecret, Identity, Sessions, Store, Tokens, now};
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
    group.bench_function("open", |b| {
        b.iter(|| ring.open(black_box(COOKIE_NAME), black_box(&sealed)));
    });
    group.bench_function("open_with_second_key", |b| {
        b.iter(|| rotated.open(black_box(COOKIE_NAME), black_box(&sealed)));
    });
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
    let store = Store::new(&config.session.store, config.session.store_timeout).ok()?;
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

criterion_group!(benches, cookie, session_load);
criterion_main!(benches);
