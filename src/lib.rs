//! gatehouse: a backend-for-frontend token handler. The browser holds only an encrypted
//! cookie; gatehouse runs the OpenID Connect code flow, keeps the tokens, and forwards API
//! calls with `Authorization: Bearer`.
//!
//! A request's path: [`server`] → [`pipeline`] → [`endpoints`] or [`routes`] → [`csrf`] →
//! [`session`] → [`oidc::refresh`] → [`proxy`] (or, on static routes, [`static_files`]; for
//! a WebSocket handshake, [`websocket`] after the session).
//!
//! - [`config`]: TOML + environment → validated, typed `Config`
//! - [`check`]: `gatehouse check --online`: the provider and the store as `run` would see them
//! - [`server`]: accept loop, connection limits, graceful shutdown
//! - [`admin`]: `gatehouse sessions` (count and end sessions in the Redis store)
//! - [`app`]: the shared state every request borrows (`App`)
//! - [`pipeline`]: the per-request lifecycle and its context (`Ctx`)
//! - [`endpoints`]: `/auth/login`, `/auth/callback`, `/auth/user`, `/auth/logout`, health
//! - [`host`]: which `Host` a request may name (DNS rebinding)
//! - [`forwarded`]: the client behind trusted proxies (`X-Forwarded-For`, `Forwarded`)
//! - [`ratelimit`]: per-client budgets for login starts and callbacks
//! - [`routes`]: route table, longest-prefix match, path safety
//! - [`csrf`]: the anti-forgery check
//! - [`reload`]: the config reloaded while serving (SIGHUP, file watch)
//! - [`redirect`]: `return_to` validation
//! - [`session`]: session records, login transactions, Redis and memory stores
//! - [`cookie`]: the request's cookie jar, cookie attributes, AES-GCM sealing with a key ring
//! - [`oidc`]: discovery, signing keys and their refresh, login, callback, token endpoint,
//!   ID token validation, refresh, revocation, back-channel logout
//! - [`proxy`]: forwarding (HTTP/1.1 on its own pool, HTTP/2, h2c), streaming bodies, header
//!   hygiene; balancing over a route's addresses, their health, and when a request is sent
//!   again
//! - [`websocket`]: WebSocket handshakes, the byte relay, closing a session's sockets
//! - [`static_files`]: static routes, serving an SPA's files with its fallback and caching
//! - [`error`]: the one place errors become responses; [`response`]: response builders
//! - [`secret`]: redacted secret strings
//! - [`tap`]: a TCP stream that reports its reads and writes (head timing, `Answered`)
//! - [`telemetry`]: logs (text or JSON), request ids, Prometheus metrics and `/metrics`,
//!   spans and their OpenTelemetry export
//! - `fuzzing` (hidden): the bodies of the `fuzz/` targets, replayed by the tests

pub mod admin;
pub mod app;
pub mod check;
pub mod config;
pub mod cookie;
pub mod csrf;
pub mod endpoints;
pub mod error;
pub mod forwarded;
#[doc(hidden)]
pub mod fuzzing;
pub mod host;
pub mod oidc;
pub mod pipeline;
pub mod proxy;
pub mod ratelimit;
pub mod redirect;
pub mod reload;
pub mod response;
pub mod routes;
pub mod secret;
pub mod server;
pub mod session;
pub mod static_files;
pub mod tap;
pub mod telemetry;
pub mod websocket;

/// The allocator the `gatehouse` binary runs on, and the examples that measure it
/// (`#[global_allocator] static ALLOCATOR: gatehouse::Allocator = gatehouse::Allocator;`):
/// mimalloc, whose per-thread heaps serve a request's short-lived buffers (glibc's malloc
/// and free cost about 5% of a proxied request's instructions). The library and its tests
/// use whatever allocator their binary chose.
pub use mimalloc::MiMalloc as Allocator;
