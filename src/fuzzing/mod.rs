//! Fuzz target bodies, one function per target taking the fuzzer's bytes. The `fuzz/` crate's
//! libFuzzer targets and the corpus replay test (`tests/fuzz_corpus.rs`) call the same code.
//! Not an API: hidden from the docs, kept in the library so the harnesses build on stable.
//!
//! Every function must not panic on any input; beyond that each one asserts what must hold:
//! 1. `cookie_jar`: the jar finds and opens a real cookie planted among any others, and what
//!    it forwards upstream never contains one of ours.
//! 2. `return_to`: the result is always a same-origin path, as a browser resolves it.
//! 3. `route_match`: a routable path picks the route its decoded form would pick.
//! 4. `callback_query`: each parameter is read once, or the response is refused.
//! 5. `logout_token`, `discovery`, `jwks`: parsing never trusts what a check refused.
//! 6. `config`: a config that validates is as hardened as the validator promises, and no
//!    error message repeats a secret.

mod config;
mod cookie;
mod oidc;
mod redirect;
mod routes;

pub use config::config;
pub use cookie::cookie_jar;
pub use oidc::{callback_query, discovery, jwks, logout_token};
pub use redirect::{assert_same_origin_path, return_to};
pub use routes::{assert_route_is_sound, route_match, table as route_table};

/// A fuzz target: its name (the directory under `fuzz/corpus/`) and its body.
pub type Target = (&'static str, fn(&[u8]));

/// Every target, by the name of its `fuzz/fuzz_targets/<name>.rs` file.
pub const TARGETS: &[Target] = &[
    ("cookie_jar", cookie_jar),
    ("return_to", return_to),
    ("route_match", route_match),
    ("callback_query", callback_query),
    ("logout_token", logout_token),
    ("discovery", discovery),
    ("jwks", jwks),
    ("config", config),
];

/// `%XY` escapes decoded once, a malformed `%` kept as is (what a server decoding a path does).
pub fn percent_decode(bytes: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| char::from(b).to_digit(16);
        if bytes[i] == b'%'
            && let (Some(hi), Some(lo)) = (
                bytes.get(i + 1).copied().and_then(hex),
                bytes.get(i + 2).copied().and_then(hex),
            )
        {
            out.push(u8::try_from(hi * 16 + lo).unwrap_or(0));
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    out
}
