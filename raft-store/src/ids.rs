//! Identifiers shared by commands, records and the openraft configuration.
//! They sit below both `command.rs` and `types.rs`, so neither needs the other
//! for its ids.

use std::fmt;

use serde::{Deserialize, Serialize};

/// A Raft node id.
pub type NodeId = u64;
/// A job id, assigned by apply() from a replicated counter (starts at 1).
pub type JobId = u64;
/// A workflow id, assigned by apply() from its own replicated counter (starts at 1).
pub type WorkflowId = u64;
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
