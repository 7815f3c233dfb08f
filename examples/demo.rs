//! `cargo run --example demo`: the whole stack in one process. A test OpenID Provider with a
//! sign-in form (127.0.0.1:9000), a demo API (:9100), and gatehouse on http://127.0.0.1:8080,
//! which is the only address the browser needs: it forwards `/api/` to the API and serves the
//! one-page SPA in `examples/demo/` itself, on a static route.
//!
//! Flags: `--port-offset N` adds N to every port, `--redis URL` keeps sessions in Redis,
//! `--log FILTER` sets the log filter. `tests/demo_example.rs` runs [`start`] on free ports.

#[cfg(not(test))]
#[path = "../tests/support/provider/mod.rs"]
pub mod provider;
// tests/demo_example.rs includes this file as a module and already has the provider through
// its `support` module; loading the file twice would make two incompatible copies.
#[cfg(test)]
pub use crate::support::provider;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use bytes::Bytes;
use clap::Parser;
use gatehouse::config::{Config, ConfigErrors, NoEnv};
use http::header::{AUTHORIZATION, CACHE_CONTROL, CONTENT_TYPE};
use http::{HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::{JoinHandle, JoinSet};

use provider::{ProviderOptions, TestProvider};

/// The SPA's files (a page, its script and its styles), which talk only to gatehouse.
pub const SPA_DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/demo");

/// Gatehouse's configuration for the demo; the `{…}` placeholders are filled in at start-up.
/// The top-level `config.toml` documents every key.
const CONFIG_TEMPLATE: &str = r#"
[server]
listen = "{listen}"
public_origin = "{origin}"
shutdown_grace = "2s"

[oidc]
issuer = "{issuer}"
client_id = "{client_id}"
client_secret = "{client_secret}"

[session]
# A fresh key per run: sessions end when the demo stops, as they would with the memory store.
keys = ["{key}"]
{store}

[[routes]]
path = "/api/"
upstream = "http://{api}"
auth = "required"

[[routes]]
path = "/"
static_dir = {spa_dir}
spa_fallback = "index.html"
auth = "none"
"#;

/// Where each part of the demo listens on 127.0.0.1. Port 0 picks a free port.
#[derive(Clone, Copy, Debug)]
pub struct Ports {
    pub gatehouse: u16,
    pub provider: u16,
    pub api: u16,
}

impl Ports {
    /// The ports the README quick start uses.
    pub const DEFAULT: Ports = Ports {
        gatehouse: 8080,
        provider: 9000,
        api: 9100,
    };
    /// Free ports, chosen by the OS (tests).
    pub const ANY: Ports = Ports {
        gatehouse: 0,
        provider: 0,
        api: 0,
    };

    /// Every port shifted by `n`; `None` past 65535.
    pub fn offset(self, n: u16) -> Option<Ports> {
        Some(Ports {
            gatehouse: self.gatehouse.checked_add(n)?,
            provider: self.provider.checked_add(n)?,
            api: self.api.checked_add(n)?,
        })
    }
}

/// How to run the demo.
#[derive(Clone, Debug)]
pub struct Options {
    pub ports: Ports,
    /// Keep sessions in this Redis instead of in memory.
    pub redis_url: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum DemoError {
    #[error("cannot listen on 127.0.0.1:{port} for the {what}: {source} (try --port-offset)")]
    Bind {
        what: &'static str,
        port: u16,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Config(#[from] ConfigErrors),
    #[error("--port-offset {0} pushes a port past 65535")]
    PortOffset(u16),
}

/// The running stack. Dropping it stops everything; [`Demo::stop`] also waits for gatehouse
/// to finish its in-flight requests.
pub struct Demo {
    pub provider: TestProvider,
    /// Gatehouse's public origin, e.g. `http://127.0.0.1:8080`: the one URL a browser opens.
    pub origin: String,
    pub api: SocketAddr,
    stop: watch::Sender<()>,
    gatehouse: JoinHandle<()>,
    // Aborted when dropped, taking their connections along.
    _servers: JoinSet<()>,
}

impl Demo {
    pub async fn stop(self) {
        drop(self.stop);
        let _ = self.gatehouse.await;
    }
}

/// Starts the provider, the API and gatehouse, in that order.
pub async fn start(options: Options) -> Result<Demo, DemoError> {
    let ports = options.ports;
    let provider_opts = ProviderOptions {
        interactive: true,
        ..ProviderOptions::default()
    };
    let provider = TestProvider::start_on(loopback(ports.provider), provider_opts)
        .await
        .map_err(|source| bind_error("test OpenID Provider", ports.provider, source))?;
    let api = bind("demo API", ports.api).await?;
    let gatehouse = bind("gatehouse", ports.gatehouse).await?;
    let (api_addr, listen) = (local(&api)?, local(&gatehouse)?);
    let origin = format!("http://{listen}");

    let config = Config::from_toml(&config_toml(&provider, &options, listen, api_addr), &NoEnv)?;
    let mut servers = JoinSet::new();
    let state = Arc::new(ApiState {
        http: reqwest::Client::new(),
        userinfo: format!("{}/userinfo", provider.issuer()),
    });
    servers.spawn(serve(api, move |req| api_handler(Arc::clone(&state), req)));

    let (stop, mut stopped) = watch::channel(());
    let gatehouse = tokio::spawn(async move {
        // Completes when `Demo::stop` (or dropping the demo) drops the sender.
        let shutdown = async move { while stopped.changed().await.is_ok() {} };
        if let Err(e) = gatehouse::server::run(gatehouse, config, shutdown).await {
            tracing::error!(error = %e, "gatehouse could not start");
        }
    });
    Ok(Demo {
        provider,
        origin,
        api: api_addr,
        stop,
        gatehouse,
        _servers: servers,
    })
}

fn config_toml(
    provider: &TestProvider,
    options: &Options,
    listen: SocketAddr,
    api: SocketAddr,
) -> String {
    let key = base64::engine::general_purpose::STANDARD.encode(gatehouse::cookie::random_key());
    let store = match &options.redis_url {
        Some(url) => format!(
            "store = \"redis\"\nredis_url = {}\nredis_prefix = \"gatehouse-demo:\"",
            toml_string(url)
        ),
        None => "store = \"memory\"".to_owned(),
    };
    let opts = provider.options();
    CONFIG_TEMPLATE
        .replace("{listen}", &listen.to_string())
        .replace("{origin}", &format!("http://{listen}"))
        .replace("{issuer}", &provider.issuer())
        .replace("{client_id}", &opts.client_id)
        .replace("{client_secret}", &opts.client_secret)
        .replace("{key}", &key)
        .replace("{store}", &store)
        .replace("{api}", &api.to_string())
        .replace("{spa_dir}", &toml_string(SPA_DIR))
}

/// A TOML basic string, so a URL from the command line cannot break the file.
fn toml_string(s: &str) -> String {
    toml::Value::String(s.to_owned()).to_string()
}

fn loopback(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

fn bind_error(what: &'static str, port: u16, source: std::io::Error) -> DemoError {
    DemoError::Bind { what, port, source }
}

async fn bind(what: &'static str, port: u16) -> Result<TcpListener, DemoError> {
    TcpListener::bind(loopback(port))
        .await
        .map_err(|source| bind_error(what, port, source))
}

fn local(listener: &TcpListener) -> Result<SocketAddr, DemoError> {
    listener
        .local_addr()
        .map_err(|source| bind_error("local address", 0, source))
}

type Body = Full<Bytes>;

/// A plain HTTP/1.1 server: every connection is a task of this one, so aborting it ends them.
async fn serve<F, Fut>(listener: TcpListener, handler: F)
where
    F: Fn(Request<Incoming>) -> Fut + Clone + Send + 'static,
    Fut: Future<Output = Response<Body>> + Send + 'static,
{
    let mut connections = JoinSet::new();
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            tokio::time::sleep(Duration::from_millis(10)).await;
            continue;
        };
        let handler = handler.clone();
        connections.spawn(async move {
            let service = service_fn(move |req| {
                let response = handler(req);
                async move { Ok::<_, Infallible>(response.await) }
            });
            let _ = http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
        while connections.try_join_next().is_some() {}
    }
}

struct ApiState {
    http: reqwest::Client,
    userinfo: String,
}

/// The demo API. `/api/hello` shows what reached it: whether a Bearer token came along and
/// whom the provider says it belongs to (asked at `/userinfo`). `/api/echo` answers without
/// asking anyone, for measuring the proxy alone (`scripts/loadtest.sh`).
async fn api_handler(state: Arc<ApiState>, req: Request<Incoming>) -> Response<Body> {
    let bearer = req
        .headers()
        .get(AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::to_owned);
    match (req.method(), req.uri().path()) {
        (&Method::GET, "/api/echo") => json_response(
            StatusCode::OK,
            &json!({ "authorization_present": bearer.is_some() }),
        ),
        (&Method::GET, "/api/hello") => match bearer {
            Some(token) => hello(&state, &token).await,
            None => json_response(
                StatusCode::UNAUTHORIZED,
                &json!({ "authorization_present": false, "error": "no Bearer token" }),
            ),
        },
        _ => json_response(StatusCode::NOT_FOUND, &json!({ "error": "not found" })),
    }
}

async fn hello(state: &ApiState, token: &str) -> Response<Body> {
    let asked = state.http.get(&state.userinfo).bearer_auth(token).send();
    let (status, body) = match asked.await {
        Ok(res) if res.status().is_success() => match res.json::<Value>().await {
            Ok(user) => (
                StatusCode::OK,
                json!({
                    "authorization_present": true,
                    "sub": user["sub"],
                    "message": format!("hello, {}", user["name"].as_str().unwrap_or("stranger")),
                    "userinfo": user,
                }),
            ),
            Err(_) => (StatusCode::BAD_GATEWAY, json!({ "error": "bad userinfo" })),
        },
        Ok(res) => (
            StatusCode::UNAUTHORIZED,
            json!({
                "authorization_present": true,
                "error": "the provider does not accept this token",
                "provider_status": res.status().as_u16(),
            }),
        ),
        Err(_) => (
            StatusCode::BAD_GATEWAY,
            json!({ "authorization_present": true, "error": "provider unreachable" }),
        ),
    };
    json_response(status, &body)
}

fn json_response(status: StatusCode, body: &Value) -> Response<Body> {
    response(status, "application/json", body.to_string())
}

fn response(
    status: StatusCode,
    content_type: &'static str,
    body: impl Into<Bytes>,
) -> Response<Body> {
    let mut res = Response::new(Full::new(body.into()));
    *res.status_mut() = status;
    let headers = res.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    res
}

/// One-command local stack for gatehouse.
#[derive(Parser)]
#[command(name = "demo")]
struct Args {
    /// Add N to every port (gatehouse 8080, provider 9000, API 9100).
    #[arg(long, value_name = "N", default_value_t = 0)]
    port_offset: u16,
    /// Keep sessions in Redis, e.g. redis://127.0.0.1:6379, instead of in memory.
    #[arg(long, value_name = "URL")]
    redis: Option<String>,
    /// Log filter, e.g. "info" or "warn".
    #[arg(long, env = "GATEHOUSE_LOG")]
    log: Option<String>,
}

#[tokio::main]
async fn main() -> ExitCode {
    let args = Args::parse();
    let logs = match gatehouse::telemetry::init(
        args.log.as_deref(),
        gatehouse::telemetry::LogFormat::Text,
        None,
    ) {
        Ok(guard) => guard,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::FAILURE;
        }
    };
    let Some(ports) = Ports::DEFAULT.offset(args.port_offset) else {
        tracing::error!("{}", DemoError::PortOffset(args.port_offset));
        return ExitCode::FAILURE;
    };
    let options = Options {
        ports,
        redis_url: args.redis,
    };
    let demo = match start(options).await {
        Ok(demo) => demo,
        Err(e) => {
            tracing::error!("{e}");
            return ExitCode::FAILURE;
        }
    };
    tracing::info!(
        provider = %demo.provider.issuer(),
        api = %demo.api,
        files = SPA_DIR,
        "demo is up: open {} in your browser (Ctrl-C stops it)",
        demo.origin
    );
    let _ = tokio::signal::ctrl_c().await;
    tracing::info!("stopping the demo");
    demo.stop().await;
    logs.shutdown();
    ExitCode::SUCCESS
}
