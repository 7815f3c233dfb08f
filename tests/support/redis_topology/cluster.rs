//! A Redis Cluster of 3 masters and 3 replicas on loopback ports, created with
//! `redis-cli --cluster create`, with a 1 s node timeout so that a replica takes over from a
//! dead master within a few seconds.

use std::path::Path;
use std::time::Duration;

use super::proc::{
    Proc, TempDir, connect, eventually, free_cluster_port, info, url, wait_answering,
};
use super::shared::{self, Lease};

const NODES: usize = 6;

/// The cluster; stops on drop (a shared one, once no test uses it).
pub struct Cluster {
    pub ports: Vec<u16>,
    procs: Vec<Proc>,
    _dir: Option<TempDir>,
    _lease: Option<Lease>,
}

/// One line of `CLUSTER NODES`.
#[derive(Debug, Clone)]
pub struct NodeLine {
    pub id: String,
    pub port: u16,
    pub master: bool,
    pub failed: bool,
    pub master_id: Option<String>,
    pub slots: Vec<(u16, u16)>,
}

fn node_args(port: u16, dir: &Path) -> Vec<String> {
    [
        "--port",
        &port.to_string(),
        "--bind",
        "127.0.0.1",
        "--cluster-enabled",
        "yes",
        "--cluster-config-file",
        &format!("nodes-{port}.conf"),
        "--cluster-node-timeout",
        "1000",
        // A replica takes over however long it was cut off from its master.
        "--cluster-replica-validity-factor",
        "0",
        "--save",
        "",
        "--appendonly",
        "no",
        "--dir",
        &dir.display().to_string(),
    ]
    .map(str::to_owned)
    .to_vec()
}

impl Cluster {
    /// A cluster of this test's own, which it may break (kill a master).
    pub async fn start() -> Cluster {
        let dir = TempDir::new("redis-cluster");
        let ports: Vec<u16> = (0..NODES).map(|_| free_cluster_port()).collect();
        let procs = ports
            .iter()
            .map(|p| Proc::start(*p, &node_args(*p, dir.path())))
            .collect();
        create(&ports).await;
        Cluster {
            ports,
            procs,
            _dir: Some(dir),
            _lease: None,
        }
    }

    /// The cluster shared by the tests that only read and write.
    pub async fn shared() -> Cluster {
        let (state, lease) = shared::join(
            "cluster-v1",
            async |dir, record| {
                let ports: Vec<u16> = (0..NODES).map(|_| free_cluster_port()).collect();
                for p in &ports {
                    record(Proc::start_detached(*p, &node_args(*p, dir)));
                }
                create(&ports).await;
                ports
                    .iter()
                    .map(u16::to_string)
                    .collect::<Vec<_>>()
                    .join(",")
            },
            async |state| {
                let ports = parse_ports(state);
                for p in ports {
                    let healthy = tokio::time::timeout(Duration::from_secs(1), async {
                        cluster_ok(&mut connect(p).await).await
                    })
                    .await;
                    if !matches!(healthy, Ok(true)) {
                        return false;
                    }
                }
                true
            },
        )
        .await;
        Cluster {
            ports: parse_ports(&state),
            procs: Vec::new(),
            _dir: None,
            _lease: Some(lease),
        }
    }

    /// `[session]` lines for gatehouse: two of the nodes as seeds (it finds the rest).
    pub fn session(&self, prefix: &str, extra: &str) -> String {
        format!(
            "store = \"redis\"\nredis_cluster_nodes = [\"{}\", \"{}\"]\nredis_prefix = \"{prefix}\"\n{extra}",
            url(self.ports[0]),
            url(self.ports[3]),
        )
    }

    /// A cluster connection, to look at what gatehouse stored.
    pub async fn client(&self) -> redis::cluster_async::ClusterConnection {
        let nodes: Vec<String> = self.ports.iter().map(|p| url(*p)).collect();
        redis::cluster::ClusterClient::new(nodes)
            .unwrap()
            .get_async_connection()
            .await
            .unwrap()
    }

    /// `CLUSTER NODES`, as seen from a live node.
    pub async fn nodes(&self) -> Vec<NodeLine> {
        for port in &self.ports {
            let Ok(Ok(mut c)) = tokio::time::timeout(
                Duration::from_millis(500),
                redis::Client::open(url(*port))
                    .unwrap()
                    .get_multiplexed_async_connection(),
            )
            .await
            else {
                continue;
            };
            if let Ok(text) = redis::cmd("CLUSTER")
                .arg("NODES")
                .query_async::<String>(&mut c)
                .await
            {
                return parse_nodes(&text);
            }
        }
        panic!("no cluster node answers");
    }

    /// The port of the master serving `key`'s slot.
    pub async fn master_of(&self, key: &str) -> u16 {
        let slot = slot_of(&mut connect(self.ports[0]).await, key).await;
        let nodes = self.nodes().await;
        nodes
            .iter()
            .find(|n| {
                n.master && !n.failed && n.slots.iter().any(|(a, b)| (*a..=*b).contains(&slot))
            })
            .map(|n| n.port)
            .unwrap_or_else(|| panic!("no master serves slot {slot}: {nodes:?}"))
    }

    /// The port of a replica of the master on `port`.
    pub async fn replica_of(&self, port: u16) -> u16 {
        let nodes = self.nodes().await;
        let id = &nodes.iter().find(|n| n.port == port).unwrap().id;
        nodes
            .iter()
            .find(|n| n.master_id.as_ref() == Some(id))
            .map(|n| n.port)
            .unwrap_or_else(|| panic!("no replica of {port}: {nodes:?}"))
    }

    /// Waits until the replica of `key`'s master holds `key` (it was replicated).
    pub async fn wait_replicated(&self, key: &str) {
        let replica = self.replica_of(self.master_of(key).await).await;
        let mut c = connect(replica).await;
        let _: () = redis::cmd("READONLY").query_async(&mut c).await.unwrap();
        eventually(Duration::from_secs(5), "replication", async || {
            redis::cmd("EXISTS")
                .arg(key)
                .query_async::<i64>(&mut c)
                .await
                .unwrap()
                == 1
        })
        .await;
    }

    /// SIGKILLs the node on `port` (only in a cluster of this test's own).
    pub fn kill(&mut self, port: u16) {
        let proc = self.procs.iter_mut().find(|p| p.port == port).unwrap();
        proc.kill();
    }
}

pub async fn slot_of(conn: &mut redis::aio::MultiplexedConnection, key: &str) -> u16 {
    redis::cmd("CLUSTER")
        .arg("KEYSLOT")
        .arg(key)
        .query_async(conn)
        .await
        .unwrap()
}

fn parse_ports(state: &str) -> Vec<u16> {
    state
        .split(',')
        .map(|p| p.trim().parse().unwrap())
        .collect()
}

fn parse_nodes(text: &str) -> Vec<NodeLine> {
    text.lines()
        .filter_map(|line| {
            let f: Vec<&str> = line.split_whitespace().collect();
            let addr = f.get(1)?.split('@').next()?;
            let port = addr.rsplit(':').next()?.parse().ok()?;
            let flags = *f.get(2)?;
            Some(NodeLine {
                id: f[0].to_owned(),
                port,
                master: flags.contains("master"),
                failed: flags.contains("fail"),
                master_id: f.get(3).filter(|m| **m != "-").map(|m| (*m).to_owned()),
                slots: f
                    .iter()
                    .skip(8)
                    .filter_map(|r| {
                        let (a, b) = r.split_once('-').unwrap_or((r, r));
                        Some((a.parse().ok()?, b.parse().ok()?))
                    })
                    .collect(),
            })
        })
        .collect()
}

async fn cluster_ok(conn: &mut redis::aio::MultiplexedConnection) -> bool {
    let text: String = redis::cmd("CLUSTER")
        .arg("INFO")
        .query_async(conn)
        .await
        .unwrap_or_default();
    text.contains("cluster_state:ok") && text.contains(&format!("cluster_known_nodes:{NODES}"))
}

/// `redis-cli --cluster create`, then waits until every node sees a whole cluster and every
/// replica is in sync.
async fn create(ports: &[u16]) {
    for p in ports {
        wait_answering(*p).await;
    }
    let addrs: Vec<String> = ports.iter().map(|p| format!("127.0.0.1:{p}")).collect();
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new("redis-cli")
            .arg("--cluster")
            .arg("create")
            .args(&addrs)
            .args(["--cluster-replicas", "1", "--cluster-yes"])
            .output()
            .expect("redis-cli is installed (scripts/test.sh installs redis-server)")
    })
    .await
    .unwrap();
    assert!(
        out.status.success(),
        "redis-cli --cluster create: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    for p in ports {
        let mut c = connect(*p).await;
        eventually(Duration::from_secs(20), "cluster state ok", async || {
            cluster_ok(&mut c).await
        })
        .await;
        eventually(Duration::from_secs(20), "replicas in sync", async || {
            let replication = info(&mut c, "replication").await;
            replication.get("role").map(String::as_str) == Some("master")
                || replication.get("master_link_status").map(String::as_str) == Some("up")
        })
        .await;
    }
}
