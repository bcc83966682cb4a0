//! Cluster mode: rooms that span several machat nodes through Redis.
//!
//! - [`resp`] reads and writes the Redis protocol, socket-free, with the
//!   same parsing contract as the other parsers.
//! - [`node`] is one node's side of the cluster as a state machine: the
//!   two Redis links, name claims, subscriptions, publishes, faults.
//!
//! The reactor (`reactor/cluster.rs`) owns the sockets and moves bytes.

pub mod node;
pub mod resp;

pub use node::{Claim, Cluster, ClusterConfig, ClusterState, LinkId, RedisUrl};

/// A node id nobody else is likely to pick: 64 bits from the standard
/// library's per-process random hasher keys, the process id and the time.
pub fn random_node_id(now: std::time::Instant) -> String {
    use std::hash::{BuildHasher, Hash, Hasher};
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    std::process::id().hash(&mut hasher);
    now.hash(&mut hasher);
    std::time::SystemTime::now().hash(&mut hasher);
    format!("node-{:016x}", hasher.finish())
}
