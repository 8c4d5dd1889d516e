//! Identifiers and the openraft type configuration.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::command::{Proposal, Response};

/// A Raft node id.
pub type NodeId = u64;
/// A job id, assigned by apply() from a replicated counter (starts at 1).
pub type JobId = u64;
/// A worker session id, assigned by apply() from a replicated counter (starts at 1).
pub type SessionId = u64;
/// A fencing token: the Raft log index of the entry that granted an attempt.
pub type Token = u64;

/// One task: a shard of a job.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct TaskKey {
    pub job: JobId,
    pub shard: u32,
}

impl TaskKey {
    pub fn new(job: JobId, shard: u32) -> Self {
        Self { job, shard }
    }
}

impl fmt::Display for TaskKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.job, self.shard)
    }
}

/// What a node advertises about itself in the membership config.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeInfo {
    /// host:port of the internal Raft service.
    pub raft_addr: String,
    /// host:port of the public gRPC API.
    pub api_addr: String,
}

impl fmt::Display for NodeInfo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "raft={} api={}", self.raft_addr, self.api_addr)
    }
}

openraft::declare_raft_types!(
    /// Baton's openraft type configuration.
    pub TypeConfig:
        D = Proposal,
        R = Response,
        NodeId = NodeId,
        Node = NodeInfo,
        Entry = openraft::Entry<TypeConfig>,
        SnapshotData = tokio::fs::File,
        AsyncRuntime = openraft::TokioRuntime,
);

pub type Entry = openraft::Entry<TypeConfig>;
pub type LogId = openraft::LogId<NodeId>;
pub type Vote = openraft::Vote<NodeId>;
pub type StoredMembership = openraft::StoredMembership<NodeId, NodeInfo>;
pub type SnapshotMeta = openraft::SnapshotMeta<NodeId, NodeInfo>;
pub type Snapshot = openraft::Snapshot<TypeConfig>;
pub type StorageError = openraft::StorageError<NodeId>;
pub type Raft = openraft::Raft<TypeConfig>;
