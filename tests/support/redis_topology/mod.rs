//! Real redis-server topologies that the tests start on loopback ports: a TLS server with a
//! private CA and an ACL user ([`TlsRedis`]), a 3-master/3-replica cluster ([`Cluster`]),
//! and a master and replica watched by three sentinels ([`Sentinels`]). Every process lives
//! in a temp dir and dies with its fixture, or with its test's process.

#![allow(
    unused_imports,
    reason = "each test binary uses a part of the fixtures"
)]

mod cluster;
mod proc;
mod sentinel;
mod shared;
mod tls;
mod traffic;

pub use cluster::{Cluster, NodeLine, slot_of};
pub use proc::{
    Proc, TempDir, command_calls, connect, eventually, free_port, info, reset_stats, url,
    wait_answering,
};
pub use sentinel::{MASTER_NAME, Sentinels, role};
pub use tls::{ACL_COMMANDS, ACL_USER, TestCa, TlsRedis};
pub use traffic::{Seen, Traffic};
