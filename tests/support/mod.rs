//! Shared test fixtures: a running gatehouse (in-process, on 127.0.0.1:0), the test OpenID
//! Provider, an echo upstream, a minimal browser (cookie jar, no redirects), log capture.
#![allow(
    dead_code,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "test fixtures fail loudly"
)]

pub mod collector;
pub mod faulty;
pub mod prometheus;
pub mod provider;
pub mod redis_topology;
pub mod upstream;
pub mod ws_upstream;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use gatehouse::config::{Config, NoEnv};
use reqwest::header::{HeaderMap, LOCATION, SET_COOKIE};
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

pub use provider::{ProviderOptions, TestProvider};
pub use upstream::EchoUpstream;

pub const COOKIE: &str = "__Host-gatehouse";
/// Every login cookie's name starts with this.
pub const LOGIN_COOKIE: &str = "__Host-gatehouse-login";
pub const KEY_A: &str = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";
pub const KEY_B: &str = "ICEiIyQlJicoKSorLC0uLzAxMjM0NTY3ODk6Ozw9Pj8=";

/// Everything gatehouse wrote to the log in this test, at every level. Each test captures
/// its own: `#[tokio::test]` runs the test and every task it spawns on the test's thread, and
/// the capturing subscriber is that thread's default, so tests running side by side in one
/// process (`cargo test`) never see each other's lines.
pub fn logs() -> String {
    capture_logs();
    CAPTURE.with(|c| {
        c.borrow()
            .as_ref()
            .map(|(buf, _)| String::from_utf8_lossy(&buf.lock().unwrap()).into_owned())
            .unwrap_or_default()
    })
}

/// The capture buffer for JSON or text lines of this test.
pub type LogBuffer = Arc<Mutex<Vec<u8>>>;

thread_local! {
    static CAPTURE: std::cell::RefCell<Option<(LogBuffer, tracing::subscriber::DefaultGuard)>> =
        const { std::cell::RefCell::new(None) };
}

/// Installs this thread's capturing subscriber (once per thread): gatehouse at trace, the
/// HTTP and Redis crates at info.
pub fn capture_logs() {
    capture_logs_with("trace,hyper=info,hyper_util=info,h2=info,reqwest=info,redis=info");
}

/// Like [`capture_logs`] with a filter of the test's choosing (call it before starting
/// anything).
pub fn capture_logs_with(filter: &str) {
    install_capture(|writer| {
        let subscriber = tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_ansi(false)
            .with_writer(writer)
            .finish();
        tracing::subscriber::set_default(subscriber)
    });
}

/// A layer of the subscriber the test captures with (an exporter's, say).
pub type ExtraLayer =
    Box<dyn tracing_subscriber::Layer<tracing_subscriber::Registry> + Send + Sync>;

/// Captures this thread's lines in gatehouse's own `format` (what `--log-format` selects),
/// with `filter`, plus `extra` layers (call it before starting anything).
pub fn capture_logs_as(
    format: gatehouse::telemetry::LogFormat,
    filter: &str,
    extra: Vec<ExtraLayer>,
) {
    use tracing_subscriber::layer::SubscriberExt as _;
    install_capture(|writer| {
        let mut layers = vec![gatehouse::telemetry::logs::layer(format, filter, writer)];
        layers.extend(extra);
        tracing::subscriber::set_default(tracing_subscriber::registry().with(layers))
    });
}

fn install_capture(
    subscriber: impl FnOnce(
        Box<dyn Fn() -> LogWriter + Send + Sync>,
    ) -> tracing::subscriber::DefaultGuard,
) {
    CAPTURE.with(|c| {
        let mut c = c.borrow_mut();
        if c.is_some() {
            return;
        }
        let buf: LogBuffer = Arc::default();
        let writer_buf = Arc::clone(&buf);
        let guard = subscriber(Box::new(move || LogWriter(Arc::clone(&writer_buf))));
        *c = Some((buf, guard));
    });
}

struct LogWriter(LogBuffer);

impl std::io::Write for LogWriter {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(b);
        std::io::stderr().write_all(b)?;
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// A running gatehouse; stops when dropped.
pub struct Gatehouse {
    pub addr: SocketAddr,
    pub origin: String,
    /// The running instance's state, to look inside (store sizes, config).
    pub app: Arc<gatehouse::app::App>,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<()>>,
}

impl Drop for Gatehouse {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(t) = self.task.take() {
            t.abort();
        }
    }
}

impl Gatehouse {
    /// Starts gatehouse with `toml`, in which `{origin}` and `{listen}` are filled in, and
    /// waits until it is ready (provider metadata loaded, store reachable).
    pub async fn start(toml: &str) -> Gatehouse {
        let gh = Self::start_unready(toml).await;
        gh.wait_ready().await;
        gh
    }

    pub async fn start_unready(toml: &str) -> Gatehouse {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        Self::launch(addr, toml, |app, stop| {
            gatehouse::server::serve(listener, app, stop)
        })
    }

    /// Like [`Gatehouse::start`], accepting on `workers` runtimes of their own, each with its
    /// `SO_REUSEPORT` socket, as the binary does (`server::bind_workers`).
    pub async fn start_on_workers(toml: &str, workers: usize) -> Gatehouse {
        let bound = tokio::task::spawn_blocking(move || {
            gatehouse::server::bind_workers("127.0.0.1:0".parse().unwrap(), workers).unwrap()
        })
        .await
        .unwrap();
        let addr = bound[0].local_addr().unwrap();
        let gh = Self::launch(addr, toml, |app, stop| {
            gatehouse::server::serve_workers(bound, app, stop)
        });
        gh.wait_ready().await;
        gh
    }

    /// Fills in `toml` for `addr`, builds the app and runs `serve(app, stop)` in a task.
    fn launch<F>(
        addr: SocketAddr,
        toml: &str,
        serve: impl FnOnce(
            Arc<gatehouse::app::App>,
            std::pin::Pin<Box<dyn Future<Output = ()> + Send>>,
        ) -> F,
    ) -> Gatehouse
    where
        F: Future<Output = ()> + Send + 'static,
    {
        capture_logs();
        let origin = format!("http://{addr}");
        let text = toml
            .replace("{origin}", &origin)
            .replace("{listen}", &addr.to_string());
        let config = Config::from_toml(&text, &NoEnv).unwrap_or_else(|e| panic!("{e}"));
        let app = Arc::new(gatehouse::app::App::new(config).unwrap());
        prometheus::record_here(&app);
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(serve(
            Arc::clone(&app),
            Box::pin(async {
                let _ = stopped.await;
            }),
        ));
        Gatehouse {
            addr,
            origin,
            app,
            stop: Some(stop),
            task: Some(task),
        }
    }

    pub async fn wait_ready(&self) {
        // No pooled connection outlives the probe (tests count connections per client IP).
        let client = reqwest::Client::builder()
            .pool_max_idle_per_host(0)
            .build()
            .unwrap();
        for _ in 0..200 {
            if let Ok(r) = client.get(self.url("/readyz")).send().await
                && r.status() == 200
            {
                return;
            }
            tokio::time::sleep(std::time::Duration::from_millis(25)).await;
        }
        panic!("gatehouse did not become ready");
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.origin, path)
    }

    /// Stops accepting and waits for in-flight requests to finish.
    pub async fn shutdown(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(t) = self.task.take() {
            t.await.unwrap();
        }
    }
}

/// A gatehouse on a runtime of its own, which [`Isolated::crash`] drops mid-flight: every task
/// it runs (connections, refreshes) stops where it is, as if the process died.
pub struct Isolated {
    pub addr: SocketAddr,
    pub origin: String,
    crash: Option<std::sync::mpsc::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Isolated {
    pub async fn start(toml: &str) -> Isolated {
        let (ready_tx, ready_rx) = oneshot::channel();
        let (crash_tx, crash_rx) = std::sync::mpsc::channel::<()>();
        let toml = toml.to_owned();
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(1)
                .enable_all()
                .build()
                .unwrap();
            rt.spawn(async move {
                let gh = Gatehouse::start(&toml).await;
                let _ = ready_tx.send((gh.addr, gh.origin.clone()));
                std::future::pending::<()>().await;
                drop(gh);
            });
            let _ = crash_rx.recv();
            rt.shutdown_background();
        });
        // Awaited, not blocked on: the provider it talks to may run on this test's thread.
        let (addr, origin) = ready_rx.await.expect("the isolated gatehouse started");
        Isolated {
            addr,
            origin,
            crash: Some(crash_tx),
            thread: Some(thread),
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.origin, path)
    }

    /// Drops the runtime: nothing this instance was doing finishes.
    pub fn crash(&mut self) {
        if let Some(c) = self.crash.take() {
            let _ = c.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for Isolated {
    fn drop(&mut self) {
        self.crash();
    }
}

/// The usual config: `/api/` required, `/opt/` optional, `/` public, memory store.
pub fn config(provider: &TestProvider, upstream: &EchoUpstream, extra_session: &str) -> String {
    format!(
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
{extra_session}

[[routes]]
path = "/api/"
upstream = "{up}"
auth = "required"
timeout = "1s"

[[routes]]
path = "/opt/"
upstream = "{up}"
auth = "optional"

[[routes]]
path = "/"
upstream = "{up}"
auth = "none"
"#,
        issuer = provider.issuer(),
        client_id = provider.options().client_id,
        secret = provider.options().client_secret,
        up = upstream.url(),
    )
}

/// Provider + upstream + gatehouse with the usual config and the memory store.
pub struct Stack {
    pub provider: TestProvider,
    pub upstream: EchoUpstream,
    pub gh: Gatehouse,
}

impl Stack {
    pub async fn start() -> Stack {
        Self::with(ProviderOptions::default(), "").await
    }

    /// The usual stack with extra `[server]` lines.
    pub async fn with_server(opts: ProviderOptions, server: &str, extra_session: &str) -> Stack {
        let provider = TestProvider::start(opts).await;
        let upstream = EchoUpstream::start().await;
        let text = config(&provider, &upstream, extra_session).replacen(
            "shutdown_grace = \"5s\"",
            &format!("shutdown_grace = \"5s\"\n{server}"),
            1,
        );
        let gh = Gatehouse::start(&text).await;
        Stack {
            provider,
            upstream,
            gh,
        }
    }

    pub async fn with(opts: ProviderOptions, extra_session: &str) -> Stack {
        let provider = TestProvider::start(opts).await;
        let upstream = EchoUpstream::start().await;
        let gh = Gatehouse::start(&config(&provider, &upstream, extra_session)).await;
        Stack {
            provider,
            upstream,
            gh,
        }
    }

    pub fn browser(&self) -> Browser {
        Browser::new(&self.gh.origin)
    }
}

/// A cookie as a browser would store it, with its attributes.
#[derive(Clone, Debug)]
pub struct SetCookie {
    pub name: String,
    pub value: String,
    pub attributes: Vec<String>,
}

impl SetCookie {
    pub fn parse(raw: &str) -> SetCookie {
        let mut parts = raw.split(';').map(str::trim);
        let (name, value) = parts.next().unwrap().split_once('=').unwrap();
        SetCookie {
            name: name.into(),
            value: value.into(),
            attributes: parts.map(str::to_owned).collect(),
        }
    }

    pub fn has(&self, attr: &str) -> bool {
        self.attributes.iter().any(|a| a.eq_ignore_ascii_case(attr))
    }

    pub fn deletes(&self) -> bool {
        self.value.is_empty() || self.has("Max-Age=0")
    }
}

pub fn set_cookies(headers: &HeaderMap) -> Vec<SetCookie> {
    headers
        .get_all(SET_COOKIE)
        .iter()
        .map(|v| SetCookie::parse(v.to_str().unwrap()))
        .collect()
}

/// A minimal browser: a cookie jar for gatehouse's origin and manual redirects.
pub struct Browser {
    pub origin: String,
    pub http: reqwest::Client,
    pub jar: BTreeMap<String, String>,
}

impl Browser {
    pub fn new(origin: &str) -> Browser {
        let http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap();
        Browser {
            origin: origin.to_owned(),
            http,
            jar: BTreeMap::new(),
        }
    }

    pub fn cookie_header(&self) -> String {
        self.jar
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join("; ")
    }

    /// Sends a request to gatehouse with the jar's cookies and stores what it sets.
    pub async fn send(&mut self, req: reqwest::RequestBuilder) -> reqwest::Response {
        let req = if self.jar.is_empty() {
            req
        } else {
            req.header("cookie", self.cookie_header())
        };
        let res = req.send().await.unwrap();
        for c in set_cookies(res.headers()) {
            if c.deletes() {
                self.jar.remove(&c.name);
            } else {
                self.jar.insert(c.name, c.value);
            }
        }
        res
    }

    pub async fn get(&mut self, path: &str) -> reqwest::Response {
        let req = self.http.get(format!("{}{}", self.origin, path));
        self.send(req).await
    }

    /// A same-origin `fetch` from the SPA: the anti-forgery header, no Origin mismatch.
    pub async fn api(&mut self, method: reqwest::Method, path: &str) -> reqwest::Response {
        let req = self
            .http
            .request(method, format!("{}{}", self.origin, path))
            .header("x-csrf", "1");
        self.send(req).await
    }

    /// Starts a login; returns the provider URL gatehouse redirected to.
    pub async fn start_login(&mut self, return_to: &str) -> String {
        let path = format!("/auth/login?return_to={}", urlencode(return_to));
        let res = self.get(&path).await;
        assert_eq!(res.status(), 302, "login start");
        location(&res)
    }

    /// Visits the provider (no gatehouse cookies go there) and returns the callback URL it
    /// redirects back to.
    pub async fn authorize(&self, provider_url: &str) -> String {
        let res = self.http.get(provider_url).send().await.unwrap();
        assert_eq!(
            res.status(),
            302,
            "provider authorize: {}",
            res.text().await.unwrap_or_default()
        );
        location(&res)
    }

    /// Follows the provider's redirect back to gatehouse's callback.
    pub async fn callback(&mut self, callback_url: &str) -> reqwest::Response {
        assert!(
            callback_url.starts_with(&self.origin),
            "callback goes to gatehouse: {callback_url}"
        );
        let req = self.http.get(callback_url).header("accept", "text/html");
        self.send(req).await
    }

    /// The whole login; returns the callback response.
    pub async fn login(&mut self, return_to: &str) -> reqwest::Response {
        let at_provider = self.start_login(return_to).await;
        let back = self.authorize(&at_provider).await;
        self.callback(&back).await
    }

    pub fn session_cookie(&self) -> Option<String> {
        self.jar.get(COOKIE).cloned()
    }

    /// The login cookies in the jar, (name, value).
    pub fn login_cookies(&self) -> Vec<(String, String)> {
        self.jar
            .iter()
            .filter(|(k, _)| k.starts_with(LOGIN_COOKIE))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()
    }
}

pub fn location(res: &reqwest::Response) -> String {
    res.headers()
        .get(LOCATION)
        .expect("a Location header")
        .to_str()
        .unwrap()
        .to_owned()
}

pub fn urlencode(s: &str) -> String {
    url::form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

/// Whether a Redis answers on 127.0.0.1:6379 (the test command starts one).
pub const REDIS_URL: &str = "redis://127.0.0.1:6379";

/// `[session]` lines for the Redis store under `prefix`, plus `extra` lines.
pub fn redis_session(prefix: &str, extra: &str) -> String {
    format!("store = \"redis\"\nredis_url = \"{REDIS_URL}\"\nredis_prefix = \"{prefix}\"\n{extra}")
}

/// A connection to the test Redis, to look at what gatehouse stored.
pub async fn redis() -> redis::aio::MultiplexedConnection {
    redis::Client::open(REDIS_URL)
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .expect("Redis on 127.0.0.1:6379")
}

/// A Redis key prefix unique to this test run.
pub fn unique_prefix(name: &str) -> String {
    let n: u64 = rand::random();
    format!("gh-test-{name}-{n:x}:")
}
