//! The Redis session store: shared by every instance, each operation bounded by a timeout.

use std::sync::Arc;
use std::time::Duration;

use redis::AsyncCommands as _;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};

use super::store::{StoreError, millis};

#[derive(Clone)]
pub struct RedisStore {
    conn: ConnectionManager,
    cas: Arc<redis::Script>,
    index_add: Arc<redis::Script>,
    timeout: Duration,
}

/// Adds a session key to an index, first dropping members whose session is gone, so an
/// index never outgrows the user's live sessions.
const INDEX_ADD_SCRIPT: &str = r"
for _, member in ipairs(redis.call('SMEMBERS', KEYS[1])) do
  if redis.call('EXISTS', member) == 0 then redis.call('SREM', KEYS[1], member) end
end
redis.call('SADD', KEYS[1], ARGV[1])
return redis.call('PEXPIRE', KEYS[1], ARGV[2])";

const CAS_SCRIPT: &str = r"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3])
  return 1
end
return 0";

impl RedisStore {
    pub(super) fn new(url: &str, timeout: Duration) -> Result<Self, StoreError> {
        let client = redis::Client::open(url)?;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(timeout))
            .set_response_timeout(Some(timeout))
            .set_number_of_retries(2)
            .set_max_delay(Duration::from_millis(500));
        let conn = ConnectionManager::new_lazy_with_config(client, config)?;
        Ok(Self {
            conn,
            cas: Arc::new(redis::Script::new(CAS_SCRIPT)),
            index_add: Arc::new(redis::Script::new(INDEX_ADD_SCRIPT)),
            timeout,
        })
    }

    pub(super) async fn get(&self, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        self.bounded(self.conn.clone().get(key)).await
    }

    pub(super) async fn set(
        &self,
        key: &str,
        value: &[u8],
        ttl: Duration,
    ) -> Result<(), StoreError> {
        self.bounded(self.conn.clone().pset_ex(key, value, millis(ttl)))
            .await
    }

    pub(super) async fn replace(
        &self,
        key: &str,
        expected: &[u8],
        value: &[u8],
        ttl: Duration,
    ) -> Result<bool, StoreError> {
        let mut invocation = self.cas.key(key);
        invocation.arg(expected).arg(value).arg(millis(ttl));
        let mut conn = self.conn.clone();
        self.bounded(invocation.invoke_async::<i64>(&mut conn))
            .await
            .map(|n| n == 1)
    }

    pub(super) async fn delete(&self, key: &str) -> Result<bool, StoreError> {
        self.bounded(self.conn.clone().del::<_, i64>(key))
            .await
            .map(|n| n > 0)
    }

    pub(super) async fn exists(&self, key: &str) -> Result<bool, StoreError> {
        self.bounded(self.conn.clone().exists(key)).await
    }

    pub(super) async fn index_add(
        &self,
        key: &str,
        member: &str,
        ttl: Duration,
    ) -> Result<(), StoreError> {
        let mut invocation = self.index_add.key(key);
        invocation.arg(member).arg(millis(ttl));
        let mut conn = self.conn.clone();
        self.bounded(invocation.invoke_async::<i64>(&mut conn))
            .await
            .map(drop)
    }

    pub(super) async fn index_remove(&self, key: &str, member: &str) -> Result<(), StoreError> {
        self.bounded(self.conn.clone().srem::<_, _, ()>(key, member))
            .await
    }

    pub(super) async fn index_take(&self, key: &str) -> Result<Vec<String>, StoreError> {
        let mut conn = self.conn.clone();
        let mut pipe = redis::pipe();
        pipe.atomic().smembers(key).del(key).ignore();
        let (members,): (Vec<String>,) = self.bounded(pipe.query_async(&mut conn)).await?;
        Ok(members)
    }

    pub(super) async fn ping(&self) -> Result<(), StoreError> {
        let mut conn = self.conn.clone();
        self.bounded(redis::cmd("PING").query_async::<String>(&mut conn))
            .await
            .map(drop)
    }

    /// `SET key value NX PX ttl`: true when this call created the key.
    pub(super) async fn set_nx(
        &self,
        key: &str,
        value: &str,
        ttl: Duration,
    ) -> Result<bool, StoreError> {
        let mut conn = self.conn.clone();
        let set: Option<String> = self
            .bounded(
                redis::cmd("SET")
                    .arg(key)
                    .arg(value)
                    .arg("NX")
                    .arg("PX")
                    .arg(millis(ttl))
                    .query_async(&mut conn),
            )
            .await?;
        Ok(set.is_some())
    }

    async fn bounded<T>(
        &self,
        op: impl Future<Output = redis::RedisResult<T>>,
    ) -> Result<T, StoreError> {
        match tokio::time::timeout(self.timeout, op).await {
            Ok(result) => Ok(result?),
            Err(_) => Err(StoreError::Timeout(self.timeout)),
        }
    }
}
