//! The master the sentinels name, followed across failovers.
//!
//! Rules:
//! 1. The crate's `SentinelClient` finds the master and checks with `ROLE` that it is one;
//!    this keeps one multiplexed connection to it, shared by every request.
//! 2. A connection that fails (the master died, a timeout) is dropped, and the next
//!    operation asks the sentinels again: while they still name the dead master it fails
//!    fast (503), and once they have promoted a replica it reaches the new master.
//! 3. A server that answers `READONLY` was demoted: its connection is dropped and the
//!    operation retried once on the master the sentinels name now (it ran nowhere, so the
//!    retry cannot apply it twice). Writes never stay on a demoted master.
//! 4. One lookup at a time: requests that find the connection gone wait for the lookup in
//!    flight instead of each asking the sentinels.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use redis::aio::{ConnectionLike, MultiplexedConnection};
use redis::sentinel::SentinelClient;
use redis::{AsyncConnectionConfig, Cmd, ErrorKind, Pipeline, RedisError, RedisFuture, Value};

/// A handle on the current master; clones share it.
#[derive(Clone)]
pub struct Master(Arc<Inner>);

struct Inner {
    sentinels: tokio::sync::Mutex<SentinelClient>,
    current: Mutex<Current>,
    config: AsyncConnectionConfig,
    /// Bound on one attempt, shorter than the store timeout so that a master that stopped
    /// answering is dropped before the caller gives up.
    attempt: Duration,
}

#[derive(Default)]
struct Current {
    /// Counts connections made, so a failure only drops the connection it happened on.
    generation: u64,
    conn: Option<MultiplexedConnection>,
}

impl Master {
    pub fn new(
        sentinels: SentinelClient,
        config: AsyncConnectionConfig,
        attempt: Duration,
    ) -> Self {
        Master(Arc::new(Inner {
            sentinels: tokio::sync::Mutex::new(sentinels),
            current: Mutex::new(Current::default()),
            config,
            attempt,
        }))
    }

    fn current(&self) -> Option<(u64, MultiplexedConnection)> {
        let current = self
            .0
            .current
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
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
        let conn = sentinels
            .get_async_connection_with_config(&self.0.config)
            .await?;
        let mut current = self
            .0
            .current
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        current.generation += 1;
        current.conn = Some(conn.clone());
        tracing::info!("connected to the Redis master named by the sentinels");
        Ok((current.generation, conn))
    }

    /// Drops connection `generation` if it is still the current one.
    fn forget(&self, generation: u64) {
        let mut current = self
            .0
            .current
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if current.generation == generation && current.conn.take().is_some() {
            tracing::warn!("lost the Redis master; asking the sentinels again");
        }
    }

    /// Sends `request` to the master (rules 2 and 3).
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
