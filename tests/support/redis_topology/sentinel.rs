//! One master, one replica, three sentinels (quorum 2) that declare a master down after 1 s
//! and fail over to the replica.

use std::collections::HashMap;
use std::time::Duration;

use super::proc::{Proc, TempDir, connect, eventually, free_port, info, url, wait_answering};

pub const MASTER_NAME: &str = "mymaster";

pub struct Sentinels {
    /// The data nodes: `[first master, first replica]`, by port.
    pub data: Vec<Proc>,
    pub sentinels: Vec<Proc>,
    dir: TempDir,
}

fn data_args(port: u16, dir: &TempDir, replica_of: Option<u16>) -> Vec<String> {
    let mut args: Vec<String> = [
        "--port",
        &port.to_string(),
        "--bind",
        "127.0.0.1",
        "--save",
        "",
        "--appendonly",
        "no",
        "--dir",
        &dir.path().display().to_string(),
        "--dbfilename",
        &format!("dump-{port}.rdb"),
    ]
    .map(str::to_owned)
    .to_vec();
    if let Some(master) = replica_of {
        args.extend(["--replicaof".into(), "127.0.0.1".into(), master.to_string()]);
    }
    args
}

impl Sentinels {
    pub async fn start() -> Sentinels {
        let dir = TempDir::new("redis-sentinel");
        let (m, r) = (free_port(), free_port());
        let master = Proc::start(m, &data_args(m, &dir, None));
        wait_answering(m).await;
        let replica = Proc::start(r, &data_args(r, &dir, Some(m)));
        wait_answering(r).await;
        let sentinels = (0..3)
            .map(|_| {
                let port = free_port();
                let conf = dir.file(&format!("sentinel-{port}.conf"));
                std::fs::write(
                    &conf,
                    format!(
                        "port {port}\nbind 127.0.0.1\ndir {dir}\n\
                         sentinel monitor {MASTER_NAME} 127.0.0.1 {m} 2\n\
                         sentinel down-after-milliseconds {MASTER_NAME} 1000\n\
                         sentinel failover-timeout {MASTER_NAME} 4000\n\
                         sentinel parallel-syncs {MASTER_NAME} 1\n",
                        dir = dir.path().display()
                    ),
                )
                .unwrap();
                Proc::start(port, &[conf.display().to_string(), "--sentinel".into()])
            })
            .collect();
        let s = Sentinels {
            data: vec![master, replica],
            sentinels,
            dir,
        };
        s.wait_settled(m).await;
        s
    }

    /// Waits until every sentinel sees `master` with one replica and the two other sentinels,
    /// and the replica is in sync.
    pub async fn wait_settled(&self, master: u16) {
        for s in &self.sentinels {
            wait_answering(s.port).await;
            let mut c = connect(s.port).await;
            eventually(Duration::from_secs(20), "sentinels settled", async || {
                let Ok(m) = redis::cmd("SENTINEL")
                    .arg("MASTER")
                    .arg(MASTER_NAME)
                    .query_async::<HashMap<String, String>>(&mut c)
                    .await
                else {
                    return false;
                };
                m.get("port") == Some(&master.to_string())
                    && m.get("flags").map(String::as_str) == Some("master")
                    && m.get("num-slaves").map(String::as_str) == Some("1")
                    && m.get("num-other-sentinels").map(String::as_str) == Some("2")
            })
            .await;
        }
        for p in self.data.iter().map(|d| d.port).filter(|p| *p != master) {
            let mut c = connect(p).await;
            eventually(Duration::from_secs(20), "replica in sync", async || {
                info(&mut c, "replication")
                    .await
                    .get("master_link_status")
                    .map(String::as_str)
                    == Some("up")
            })
            .await;
        }
    }

    /// `[session]` lines for gatehouse.
    pub fn session(&self, prefix: &str, extra: &str) -> String {
        let list: Vec<String> = self
            .sentinels
            .iter()
            .map(|s| format!("\"{}\"", url(s.port)))
            .collect();
        format!(
            "store = \"redis\"\nredis_sentinels = [{}]\nredis_sentinel_master = \"{MASTER_NAME}\"\nredis_prefix = \"{prefix}\"\n{extra}",
            list.join(", ")
        )
    }

    /// Whether every sentinel names the master on `port` (the switch is announced).
    pub async fn all_name(&self, port: u16) -> bool {
        for s in &self.sentinels {
            let mut c = connect(s.port).await;
            let named: Result<(String, u16), _> = redis::cmd("SENTINEL")
                .arg("GET-MASTER-ADDR-BY-NAME")
                .arg(MASTER_NAME)
                .query_async(&mut c)
                .await;
            if named.map(|(_, p)| p).ok() != Some(port) {
                return false;
            }
        }
        true
    }

    /// The master's port, as the first sentinel that answers says.
    pub async fn master_port(&self) -> u16 {
        for s in &self.sentinels {
            let Ok(mut c) = redis::Client::open(url(s.port))
                .unwrap()
                .get_multiplexed_async_connection()
                .await
            else {
                continue;
            };
            if let Ok((_, port)) = redis::cmd("SENTINEL")
                .arg("GET-MASTER-ADDR-BY-NAME")
                .arg(MASTER_NAME)
                .query_async::<(String, u16)>(&mut c)
                .await
            {
                return port;
            }
        }
        panic!("no sentinel answers");
    }

    /// Waits until `port`'s server holds `key`.
    pub async fn wait_holds(&self, port: u16, key: &str) {
        let mut c = connect(port).await;
        eventually(
            Duration::from_secs(5),
            "the key on that server",
            async || {
                redis::cmd("EXISTS")
                    .arg(key)
                    .query_async::<i64>(&mut c)
                    .await
                    .unwrap()
                    == 1
            },
        )
        .await;
    }

    /// SIGKILLs the data node on `port`.
    pub fn kill(&mut self, port: u16) {
        self.data
            .iter_mut()
            .find(|p| p.port == port)
            .unwrap()
            .kill();
    }

    /// Starts the data node on `port` again, empty, as a replica of `master` (as a sentinel
    /// would reconfigure it).
    pub async fn restart_as_replica(&mut self, port: u16, master: u16) {
        let restarted = Proc::start(port, &data_args(port, &self.dir, Some(master)));
        wait_answering(port).await;
        let slot = self.data.iter_mut().find(|p| p.port == port).unwrap();
        *slot = restarted;
    }

    /// `SENTINEL FAILOVER`: the master is demoted while it is alive, its clients connected.
    pub async fn manual_failover(&self) {
        let mut c = connect(self.sentinels[0].port).await;
        let _: String = redis::cmd("SENTINEL")
            .arg("FAILOVER")
            .arg(MASTER_NAME)
            .query_async(&mut c)
            .await
            .unwrap();
    }
}

/// `ROLE`'s first element: "master" or "slave".
pub async fn role(port: u16) -> String {
    let mut c = connect(port).await;
    let role: Vec<redis::Value> = redis::cmd("ROLE").query_async(&mut c).await.unwrap();
    match role.first() {
        Some(redis::Value::BulkString(b)) => String::from_utf8_lossy(b).into_owned(),
        Some(redis::Value::SimpleString(s)) => s.clone(),
        other => panic!("ROLE answered {other:?}"),
    }
}
