//! `cargo run --release --example session_memory -- [SESSIONS] [ACCESS] [ID] [REFRESH]`: the
//! memory store's resident memory per idle session. Creates SESSIONS (default 100,000)
//! sessions whose access, ID and refresh tokens are ACCESS, ID and REFRESH bytes long (default
//! 900, 900 and 64, a typical provider's JWTs), and prints the process's RSS growth divided by
//! the count, next to the size of one sealed record.

use std::process::ExitCode;

use gatehouse::config::{Config, NoEnv};
use gatehouse::cookie::KeyRing;
use gatehouse::secret::Secret;
use gatehouse::session::{Identity, Sessions, Store, Tokens, now};
use serde_json::json;

fn arg(n: usize, default: usize) -> usize {
    std::env::args()
        .nth(n)
        .and_then(|a| a.replace('_', "").parse().ok())
        .unwrap_or(default)
}

/// Resident set size in bytes, from `/proc/self/statm` (Linux).
fn rss() -> Option<u64> {
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    Some(pages * 4096)
}

/// User `n`: every session its own subject and provider session, as real traffic has.
fn identity(n: usize) -> Identity {
    let claims = json!({
        "sub": "alice",
        "email": "alice@example.test",
        "email_verified": true,
        "name": "Alice Example",
    });
    Identity {
        sub: format!("user-{n:08}"),
        sid: Some(format!("provider-session-{n:08}")),
        claims: claims.as_object().cloned().unwrap_or_default(),
        aud: vec!["bff".into()],
        auth_time: Some(now()),
    }
}

#[global_allocator]
static ALLOCATOR: gatehouse::Allocator = gatehouse::Allocator;

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let (count, access, id, refresh) = (arg(1, 100_000), arg(2, 900), arg(3, 900), arg(4, 64));
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
memory_capacity = {count}
"#
    );
    let mut config = match Config::from_toml(&text, &NoEnv) {
        Ok(config) => config,
        Err(e) => {
            eprintln!("session_memory: {e}");
            return ExitCode::FAILURE;
        }
    };
    let store = match Store::new(&config.session.store, config.session.store_timeout) {
        Ok(store) => store,
        Err(e) => {
            eprintln!("session_memory: {e}");
            return ExitCode::FAILURE;
        }
    };
    let keys = std::mem::replace(&mut config.session.keys, KeyRing::new(Vec::new()));
    let sessions = Sessions::new(&config.session, store, keys);
    let tokens = || Tokens {
        access_token: Secret::new("a".repeat(access)),
        issued_at_ms: now() * 1000,
        access_expires_at_ms: (now() + 300) * 1000,
        refresh_token: Some(Secret::new("r".repeat(refresh))),
        id_token: Some(Secret::new("i".repeat(id))),
        bearer: Default::default(),
    };
    let sample = sessions.new_session(identity(0), tokens());
    let record = serde_json::to_vec(&sample).map_or(0, |v| v.len()) + 12 + 16;

    let before = rss().unwrap_or(0);
    for n in 0..count {
        let session = sessions.new_session(identity(n), tokens());
        if let Err(e) = sessions.create(&session).await {
            eprintln!("session_memory: {e}");
            return ExitCode::FAILURE;
        }
    }
    if let Store::Memory(memory) = &sessions.store {
        // Drops anything expired, as a running instance would have by now.
        let (live, _) = memory.len();
        eprintln!("memory store holds {live} sessions");
    }
    let after = rss().unwrap_or(0);
    let per = after.saturating_sub(before) / u64::try_from(count.max(1)).unwrap_or(1);
    eprintln!(
        "{count} sessions (tokens {access}/{id}/{refresh} bytes, sealed record {record} bytes): \
         RSS {} MiB -> {} MiB, {per} bytes per session",
        before >> 20,
        after >> 20,
    );
    ExitCode::SUCCESS
}
