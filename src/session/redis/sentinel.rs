//! The master the sentinels name, followed across failovers.
//!
//! Rules:
//! 1. The crate's `SentinelClient` finds the master and checks with `ROLE` that it is one;
//!    this keeps one multiplexed connection to it, shared by every request.
//! 2. A connection that fails (the master died, a timeout) is dropped, and the next
//!    operation asks the sentinels again: while they still name the dead master it fails
//!    fast (503), and once they have promoted a replica it reaches the new master.
//! 3. The sentinels' word beats the server's own: a watcher subscribed to `+switch-master`
//!    (and asking every few seconds, for a switch it missed) drops the connection as soon as
//!    they name another master, even while the old one still believes it leads (after
//!    `SENTINEL FAILOVER` it does for about ten seconds). Writes never go on to a demoted
//!    master.
//! 4. A server that answers `READONLY` was demoted: its connection is dropped and the
//!    operation retried once on the master the sentinels name now (it ran nowhere, so the
//!    retry cannot apply it twice).
//! 5. One lookup at a time: requests that find the connection gone wait for the lookup in
//!    flight instead of each asking the sentinels.
//! 6. Each connection has a generation, published for the session cache ([`Master::generation`],
//!    0 while there is none): the cache serves copies only while requests use the connection
//!    generation it tracks, so a failover takes it down at the moment requests switch.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, Weak};
use std::time::Duration;

use futures_util::StreamExt as _;
use redis::aio::{ConnectionLike, MultiplexedConnection};
use redis::sentinel::SentinelClient;
use redis::{
    AsyncConnectionConfig, Cmd, ConnectionAddr, ConnectionInfo, ErrorKind, Pipeline,
    ProtocolVersion, RedisError, RedisFuture, Value,
};

/// How often the watcher asks who the master is, besides listening for switches.
const RECHECK: Duration = Duration::from_secs(3);
/// Pause before the watcher tries the sentinels again after losing them.
const WATCH_RETRY: Duration = Duration::from_millis(500);

/// A handle on the current master; clones share it.
#[derive(Clone)]
pub struct Master(Arc<Inner>);

struct Inner {
    sentinels: tokio::sync::Mutex<SentinelClient>,
    name: String,
    current: Mutex<Current>,
    /// Whether the watcher runs (it starts with the first connection).
    watching: AtomicBool,
    config: AsyncConnectionConfig,
    /// Bound on one attempt, shorter than the store timeout so that a master that stopped
    /// answering is dropped before the caller gives up.
    attempt: Duration,
    /// The current connection's generation, 0 while there is none (rule 6).
    live: AtomicU64,
    /// Woken whenever `live` changes.
    changed: tokio::sync::Notify,
}

#[derive(Default)]
struct Current {
    /// Counts connections made, so a failure only drops the connection it happened on.
    generation: u64,
    conn: Option<MultiplexedConnection>,
    /// The master's host and port, as the sentinels named it.
    addr: Option<(String, u16)>,
    /// How to reach the same master speaking RESP3 (for the cache's tracking connection).
    resp3: Option<ConnectionInfo>,
}

impl Inner {
    fn current(&self) -> MutexGuard<'_, Current> {
        self.current.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Takes the current connection away (under its lock); whether there was one.
    fn drop_connection(&self, current: &mut Current) -> bool {
        let had = current.conn.take().is_some();
        current.addr = None;
        current.resp3 = None;
        self.live.store(0, Ordering::Release);
        self.changed.notify_waiters();
        had
    }
}

impl Master {
    pub fn new(
        sentinels: SentinelClient,
        name: &str,
        config: AsyncConnectionConfig,
        attempt: Duration,
    ) -> Self {
        Master(Arc::new(Inner {
            sentinels: tokio::sync::Mutex::new(sentinels),
            name: name.to_owned(),
            current: Mutex::new(Current::default()),
            watching: AtomicBool::new(false),
            config,
            attempt,
            live: AtomicU64::new(0),
            changed: tokio::sync::Notify::new(),
        }))
    }

    /// The generation of the connection requests use now; 0 while there is none.
    pub fn generation(&self) -> u64 {
        self.0.live.load(Ordering::Acquire)
    }

    /// Resolves at the next change of [`Master::generation`] (enable it before reading it).
    pub fn changed(&self) -> tokio::sync::futures::Notified<'_> {
        self.0.changed.notified()
    }

    /// A RESP3 client of the master requests use now, with that connection's generation;
    /// connects first when there is none.
    pub async fn tracking_client(&self) -> Result<(u64, redis::Client), RedisError> {
        self.connection().await?;
        let info = {
            let current = self.0.current();
            match (&current.conn, &current.resp3) {
                (Some(_), Some(info)) => Some((current.generation, info.clone())),
                _ => None,
            }
        };
        let Some((generation, info)) = info else {
            return Err(RedisError::from((
                ErrorKind::Io,
                "the Redis master changed while the session cache was connecting",
            )));
        };
        Ok((generation, redis::Client::open(info)?))
    }

    fn current(&self) -> Option<(u64, MultiplexedConnection)> {
        let current = self.0.current();
        current.conn.clone().map(|c| (current.generation, c))
    }

    /// The connection to the master, asking the sentinels when there is none.
    async fn connection(&self) -> Result<(u64, MultiplexedConnection), RedisError> {
        if let Some(found) = self.current() {
            return Ok(found);
        }
        let mut sentinels = self.0.sentinels.lock().await;
        // Whoever held the lookup before us may have connected already.
        if let Some(found) = self.current() {
            return Ok(found);
        }
        let client = sentinels.async_get_client().await?;
        let addr = match client.get_connection_info().addr() {
            ConnectionAddr::Tcp(host, port) | ConnectionAddr::TcpTls { host, port, .. } => {
                Some((host.clone(), *port))
            }
            _ => None,
        };
        let conn = client
            .get_multiplexed_async_connection_with_config(&self.0.config)
            .await?;
        let info = client.get_connection_info().clone();
        let resp3 = info
            .redis_settings()
            .clone()
            .set_protocol(ProtocolVersion::RESP3);
        let resp3 = info.set_redis_settings(resp3);
        drop(sentinels);
        if !self.0.watching.swap(true, Ordering::SeqCst) {
            tokio::spawn(watch(Arc::downgrade(&self.0)));
        }
        tracing::info!(
            master = %addr.as_ref().map(|(h, p)| format!("{h}:{p}")).unwrap_or_default(),
            "connected to the Redis master named by the sentinels"
        );
        let mut current = self.0.current();
        current.generation += 1;
        current.conn = Some(conn.clone());
        current.addr = addr;
        current.resp3 = Some(resp3);
        self.0.live.store(current.generation, Ordering::Release);
        self.0.changed.notify_waiters();
        Ok((current.generation, conn))
    }

    /// Drops connection `generation` if it is still the current one.
    fn forget(&self, generation: u64) {
        let mut current = self.0.current();
        if current.generation == generation && self.0.drop_connection(&mut current) {
            tracing::warn!("lost the Redis master; asking the sentinels again");
        }
    }

    /// Sends `request` to the master (rules 2 and 4).
    async fn run(&self, request: Request<'_>) -> Result<Reply, RedisError> {
        let mut retried = false;
        loop {
            let (generation, mut conn) = self.connection().await?;
            let result = match tokio::time::timeout(self.0.attempt, request.send(&mut conn)).await {
                Ok(result) => result,
                Err(_) => Err(timed_out()),
            };
            match result {
                Err(e) if demoted(&e) => {
                    self.forget(generation);
                    if retried {
                        return Err(e);
                    }
                    retried = true;
                }
                Err(e) if broken(&e) => {
                    self.forget(generation);
                    return Err(e);
                }
                other => return other,
            }
        }
    }
}

#[cfg(test)]
impl Master {
    /// A master that asks no sentinel, switched by hand with [`Master::switch_to`].
    pub fn unconnected() -> Master {
        let sentinels = SentinelClient::build(
            vec!["redis://127.0.0.1:1"],
            "test",
            None,
            redis::sentinel::SentinelServerType::Master,
        )
        .expect("a valid sentinel address");
        Master::new(
            sentinels,
            "test",
            AsyncConnectionConfig::new(),
            Duration::from_secs(1),
        )
    }

    /// As if requests now used connection `generation` (0: none).
    pub fn switch_to(&self, generation: u64) {
        self.0.live.store(generation, Ordering::Release);
        self.0.changed.notify_waiters();
    }
}

/// Rule 3, for as long as the master handle lives.
async fn watch(inner: Weak<Inner>) {
    loop {
        let Some(strong) = inner.upgrade() else {
            return;
        };
        if let Err(e) = watch_one_sentinel(&strong).await {
            tracing::debug!(error = %e, "lost the sentinel watched for failovers; trying another");
        }
        drop(strong);
        tokio::time::sleep(WATCH_RETRY).await;
    }
}

/// Listens to one sentinel until it fails, or until the store is gone (checked every
/// [`RECHECK`], when it asks who the master is).
async fn watch_one_sentinel(inner: &Arc<Inner>) -> Result<(), RedisError> {
    let client = {
        let mut sentinels = inner.sentinels.lock().await;
        sentinels.async_get_sentinel_client().await?
    };
    let mut pubsub = client.get_async_pubsub().await?;
    pubsub.subscribe("+switch-master").await?;
    let mut messages = pubsub.into_on_message();
    let mut ask = client.get_multiplexed_async_connection().await?;
    loop {
        // Asked right after subscribing too: a switch may have happened while unsubscribed.
        let (host, port): (String, u16) = redis::cmd("SENTINEL")
            .arg("GET-MASTER-ADDR-BY-NAME")
            .arg(&inner.name)
            .query_async(&mut ask)
            .await?;
        follow(inner, &host, port);
        let recheck = tokio::time::sleep(RECHECK);
        tokio::pin!(recheck);
        loop {
            tokio::select! {
                message = messages.next() => {
                    let Some(message) = message else {
                        return Err(RedisError::from((ErrorKind::Io, "sentinel subscription ended")));
                    };
                    // "<name> <old ip> <old port> <new ip> <new port>"
                    let payload: String = message.get_payload().unwrap_or_default();
                    if let [name, _, _, host, port] = payload.split_whitespace().collect::<Vec<_>>()[..]
                        && name == inner.name
                    {
                        follow(inner, host, port.parse().unwrap_or(0));
                    }
                }
                () = &mut recheck => break,
            }
        }
        if Arc::strong_count(inner) <= 1 {
            // Only the watcher holds the handle: the store is gone.
            return Ok(());
        }
    }
}

/// Drops the connection unless it goes to `host:port`, the master the sentinels name.
fn follow(inner: &Inner, host: &str, port: u16) {
    let mut current = inner.current();
    let elsewhere = current
        .addr
        .as_ref()
        .is_some_and(|(h, p)| h != host || *p != port);
    if elsewhere && inner.drop_connection(&mut current) {
        tracing::warn!(
            master = %format!("{host}:{port}"),
            "the sentinels named another Redis master; following it"
        );
    }
}

/// What [`ConnectionLike`] asks of a connection: one command, or part of a pipeline.
#[derive(Clone, Copy)]
enum Request<'a> {
    One(&'a Cmd),
    Many(&'a Pipeline, usize, usize),
}

enum Reply {
    One(Value),
    Many(Vec<Value>),
}

impl Request<'_> {
    async fn send(self, conn: &mut MultiplexedConnection) -> Result<Reply, RedisError> {
        match self {
            Request::One(cmd) => conn.req_packed_command(cmd).await.map(Reply::One),
            Request::Many(pipeline, offset, count) => conn
                .req_packed_commands(pipeline, offset, count)
                .await
                .map(Reply::Many),
        }
    }
}

fn unexpected() -> RedisError {
    RedisError::from((
        ErrorKind::Client,
        "a pipeline reply came back for a single command",
    ))
}

fn timed_out() -> RedisError {
    RedisError::from(std::io::Error::new(
        std::io::ErrorKind::TimedOut,
        "the Redis master did not answer in time",
    ))
}

fn demoted(e: &RedisError) -> bool {
    e.kind() == ErrorKind::Server(redis::ServerErrorKind::ReadOnly)
}

/// Whether the connection is no use any more.
fn broken(e: &RedisError) -> bool {
    e.is_io_error() || e.is_unrecoverable_error() || e.is_connection_dropped() || e.is_timeout()
}

impl ConnectionLike for Master {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        Box::pin(async move {
            match self.run(Request::One(cmd)).await? {
                Reply::One(value) => Ok(value),
                Reply::Many(_) => Err(unexpected()),
            }
        })
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        Box::pin(async move {
            match self.run(Request::Many(pipeline, offset, count)).await? {
                Reply::Many(values) => Ok(values),
                Reply::One(_) => Err(unexpected()),
            }
        })
    }

    fn get_db(&self) -> i64 {
        0
    }
}
