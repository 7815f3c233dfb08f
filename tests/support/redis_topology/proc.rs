//! redis-server processes on loopback ports, in temp dirs, that never outlive their test.

use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A temp dir removed on drop.
pub struct TempDir(PathBuf);

impl TempDir {
    pub fn new(name: &str) -> TempDir {
        let n: u64 = rand::random();
        let path = std::env::temp_dir().join(format!("gh-{name}-{}-{n:x}", std::process::id()));
        std::fs::create_dir_all(&path).unwrap();
        TempDir(path)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }

    pub fn file(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// One redis-server (or sentinel) process, SIGKILLed on drop.
pub struct Proc {
    pub port: u16,
    child: Option<Child>,
}

impl Proc {
    /// `redis-server args…`, which also dies when this test's thread ends (`setpriv
    /// --pdeathsig`), so a test killed by its runner leaves no server behind.
    pub fn start(port: u16, args: &[String]) -> Proc {
        let mut cmd = if Path::new("/usr/bin/setpriv").exists() {
            let mut c = Command::new("setpriv");
            c.args(["--pdeathsig", "KILL", "redis-server"]);
            c
        } else {
            Command::new("redis-server")
        };
        // Its log shows in the output of a failing test.
        Proc::spawn(port, cmd.args(args).stdout(Stdio::inherit()))
    }

    /// A process that outlives this test, for a fixture shared between test processes: its
    /// own process group, so no signal meant for this test reaches it. The fixture's
    /// supervisor stops it.
    pub fn start_detached(port: u16, args: &[String]) -> u32 {
        let mut cmd = Command::new("redis-server");
        cmd.args(args).process_group(0).stdout(Stdio::null());
        let mut proc = Proc::spawn(port, &mut cmd);
        let mut child = proc.child.take().unwrap();
        let pid = child.id();
        reap(move || child.wait());
        pid
    }

    fn spawn(port: u16, cmd: &mut Command) -> Proc {
        let child = cmd
            .stdin(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server is installed (scripts/test.sh installs it)");
        Proc {
            port,
            child: Some(child),
        }
    }

    /// SIGKILL, as a crash would.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Reaps a detached child should it end while this process lives (else init reaps it).
pub fn reap(wait: impl FnOnce() -> std::io::Result<std::process::ExitStatus> + Send + 'static) {
    std::thread::spawn(move || {
        let _ = wait();
    });
}

/// A port nobody listens on now.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A port `p` with `p + 10000` free too (a cluster node's bus), below the ephemeral range.
pub fn free_cluster_port() -> u16 {
    loop {
        let p = 15_000 + rand::random::<u16>() % 7_000;
        let free = |port: u16| std::net::TcpListener::bind(("127.0.0.1", port)).is_ok();
        if free(p) && free(p + 10_000) {
            return p;
        }
    }
}

/// Plain `redis://127.0.0.1:port`.
pub fn url(port: u16) -> String {
    format!("redis://127.0.0.1:{port}")
}

/// A connection to a plain node, for looking at what it holds.
pub async fn connect(port: u16) -> redis::aio::MultiplexedConnection {
    redis::Client::open(url(port))
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap_or_else(|e| panic!("redis on port {port}: {e}"))
}

/// Waits until a plain node answers PING.
pub async fn wait_answering(port: u16) {
    let deadline = Instant::now() + Duration::from_secs(10);
    let client = redis::Client::open(url(port)).unwrap();
    loop {
        if let Ok(mut c) = client.get_multiplexed_async_connection().await
            && redis::cmd("PING")
                .query_async::<String>(&mut c)
                .await
                .is_ok()
        {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "redis on port {port} did not start"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Waits until something listens on `port` (a TLS port, before any handshake).
pub async fn wait_listening(port: u16) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .is_err()
    {
        assert!(Instant::now() < deadline, "nothing listens on port {port}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Calls per command (`INFO commandstats`) since the server's last [`reset_stats`].
pub async fn command_calls(
    conn: &mut impl redis::aio::ConnectionLike,
) -> std::collections::BTreeMap<String, u64> {
    let text: String = redis::cmd("INFO")
        .arg("commandstats")
        .query_async(conn)
        .await
        .unwrap();
    text.lines()
        .filter_map(|line| {
            let (name, rest) = line.strip_prefix("cmdstat_")?.split_once(':')?;
            let calls = rest
                .strip_prefix("calls=")?
                .split(',')
                .next()?
                .parse()
                .ok()?;
            Some((name.to_owned(), calls))
        })
        .collect()
}

/// `CONFIG RESETSTAT`: command counts start again from zero.
pub async fn reset_stats(conn: &mut impl redis::aio::ConnectionLike) {
    let () = redis::cmd("CONFIG")
        .arg("RESETSTAT")
        .query_async(conn)
        .await
        .unwrap();
}

/// `INFO <section>` as `field -> value`.
pub async fn info(
    conn: &mut impl redis::aio::ConnectionLike,
    section: &str,
) -> std::collections::HashMap<String, String> {
    let text: String = redis::cmd("INFO")
        .arg(section)
        .query_async(conn)
        .await
        .unwrap();
    text.lines()
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.to_owned(), v.trim().to_owned()))
        .collect()
}

/// Polls `check` every 50 ms until it holds; panics with `what` after `limit`.
pub async fn eventually<F: AsyncFnMut() -> bool>(limit: Duration, what: &str, mut check: F) {
    let deadline = Instant::now() + limit;
    while !check().await {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
