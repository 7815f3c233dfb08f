//! A real nginx upstream reloaded gracefully (`nginx -s reload`) five times under load
//! through gatehouse: its old workers close their keep-alive connections, some just as a
//! request goes out on them, and no client sees an error. The test command installs nginx
//! (scripts/test.sh); without it this test fails and says so.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "tests fail loudly"
)]

mod support;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use gatehouse::telemetry::metrics::UPSTREAM_RETRIES_TOTAL;
use support::prometheus::{scrape, with_metrics};
use support::*;

/// The nginx binary: on `PATH`, or where Debian puts it.
fn nginx_binary() -> PathBuf {
    let candidates = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .unwrap_or_default()
        .into_iter()
        .chain([PathBuf::from("/usr/sbin"), PathBuf::from("/usr/local/sbin")])
        .map(|dir| dir.join("nginx"));
    candidates
        .into_iter()
        .find(|p| p.is_file())
        .unwrap_or_else(|| {
            panic!("nginx is not installed: scripts/test.sh installs it (apt-get install nginx)")
        })
}

/// nginx in the foreground, with its own prefix, config and pid file in a temp dir.
struct Nginx {
    bin: PathBuf,
    dir: tempfile::TempDir,
    port: u16,
    master: Child,
}

impl Nginx {
    fn start() -> Nginx {
        let bin = nginx_binary();
        let dir = tempfile::tempdir().unwrap();
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let p = dir.path().display();
        std::fs::create_dir_all(dir.path().join("logs")).unwrap();
        let conf = format!(
            r#"
worker_processes 2;
daemon off;
pid {p}/nginx.pid;
error_log {p}/logs/error.log warn;
events {{ worker_connections 1024; }}
http {{
    access_log off;
    client_body_temp_path {p}/body;
    proxy_temp_path {p}/proxy;
    fastcgi_temp_path {p}/fastcgi;
    uwsgi_temp_path {p}/uwsgi;
    scgi_temp_path {p}/scgi;
    keepalive_timeout 75s;
    keepalive_requests 100000;
    server {{
        listen 127.0.0.1:{port};
        location / {{ return 200 "ok\n"; }}
    }}
}}
"#
        );
        std::fs::write(dir.path().join("nginx.conf"), conf).unwrap();
        let master = Command::new(&bin)
            .args(Self::args(dir.path()))
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", bin.display()));
        Nginx {
            bin,
            dir,
            port,
            master,
        }
    }

    fn args(dir: &Path) -> Vec<String> {
        let d = dir.display();
        vec![
            "-p".into(),
            format!("{d}/"),
            "-c".into(),
            format!("{d}/nginx.conf"),
            "-e".into(),
            format!("{d}/logs/error.log"),
        ]
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    async fn wait_listening(&self) {
        for _ in 0..500 {
            if tokio::net::TcpStream::connect(("127.0.0.1", self.port))
                .await
                .is_ok()
            {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("nginx did not listen on {}", self.port);
    }

    fn signal(&self, signal: &str) {
        let status = Command::new(&self.bin)
            .args(Self::args(self.dir.path()))
            .args(["-s", signal])
            .status()
            .unwrap();
        assert!(status.success(), "nginx -s {signal}: {status}");
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        let _ = Command::new(&self.bin)
            .args(Self::args(self.dir.path()))
            .args(["-s", "stop"])
            .status();
        let _ = self.master.wait();
    }
}

const CONNECTIONS: usize = 64;
const RELOADS: usize = 5;
/// Requests answered between two reloads (and before the first, and after the last).
const BETWEEN: usize = 2000;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_nginx_upstream_reloaded_five_times_under_load_gives_no_errors() {
    let nginx = Nginx::start();
    nginx.wait_listening().await;
    let provider = TestProvider::start(ProviderOptions::default()).await;
    let text = format!(
        r#"
[server]
listen = "{{listen}}"
public_origin = "{{origin}}"
max_connections_per_ip = 0

[oidc]
issuer = "{issuer}"
client_id = "{client_id}"
client_secret = "{secret}"

[session]
keys = ["{KEY_A}"]

[[routes]]
path = "/"
upstream = "{up}"
auth = "none"
"#,
        issuer = provider.issuer(),
        client_id = provider.options().client_id,
        secret = provider.options().client_secret,
        up = nginx.url(),
    );
    let gh = Gatehouse::start(&with_metrics(&text)).await;

    // 64 clients, each one connection to gatehouse, one request after another.
    let stop = Arc::new(AtomicBool::new(false));
    let done = Arc::new(AtomicUsize::new(0));
    let errors = Arc::new(AtomicUsize::new(0));
    let clients: Vec<_> = (0..CONNECTIONS)
        .map(|_| {
            let http = reqwest::Client::builder()
                .pool_max_idle_per_host(1)
                .build()
                .unwrap();
            let (url, stop) = (gh.url("/api/x"), Arc::clone(&stop));
            let (done, errors) = (Arc::clone(&done), Arc::clone(&errors));
            tokio::spawn(async move {
                while !stop.load(Ordering::SeqCst) {
                    let ok = match http.get(&url).send().await {
                        Ok(res) => res.status() == 200 && res.bytes().await.is_ok(),
                        Err(_) => false,
                    };
                    if !ok {
                        errors.fetch_add(1, Ordering::SeqCst);
                    }
                    done.fetch_add(1, Ordering::SeqCst);
                }
            })
        })
        .collect();
    let answered = |n: usize| {
        let done = Arc::clone(&done);
        async move {
            let target = done.load(Ordering::SeqCst) + n;
            for _ in 0..12_000 {
                if done.load(Ordering::SeqCst) >= target {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            panic!("the load stalled");
        }
    };
    answered(BETWEEN).await;
    for _ in 0..RELOADS {
        nginx.signal("reload");
        answered(BETWEEN).await;
    }
    stop.store(true, Ordering::SeqCst);
    for c in clients {
        c.await.unwrap();
    }
    let retries = scrape(&gh.app)
        .await
        .value(UPSTREAM_RETRIES_TOTAL, &[("route", "/")]);
    let total = done.load(Ordering::SeqCst);
    let errors = errors.load(Ordering::SeqCst);
    eprintln!("{total} requests over {RELOADS} reloads: {errors} errors, {retries} sent again");
    assert!(total >= BETWEEN * (RELOADS + 1));
    assert_eq!(errors, 0, "no client saw an error while nginx reloaded");
}
