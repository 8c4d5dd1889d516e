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

/// Identifies one cluster: drawn at random when a cluster is created
/// (initialization, restore, recovery) and kept in every member's data dir.
/// Every Raft message carries it; a node of another cluster is refused.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct ClusterId(pub u128);

/// Identifies one life of a data dir: drawn at random when a data dir is
/// created, recorded in the membership when the node is added. A node whose
/// data dir was wiped comes back with another one, so messages addressed to
/// its old life (and the vote it forgot) are refused.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Incarnation(pub u128);

/// Both ids print as 32 lowercase hex digits and parse back from them.
macro_rules! hex_id {
    ($t:ident) => {
        impl fmt::Display for $t {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{:032x}", self.0)
            }
        }

        impl std::str::FromStr for $t {
            type Err = String;
            fn from_str(s: &str) -> Result<Self, String> {
                if s.len() != 32 {
                    return Err(format!("{s:?} is not 32 hex digits"));
                }
                u128::from_str_radix(s, 16).map($t).map_err(|_| format!("{s:?} is not 32 hex digits"))
            }
        }
    };
}
hex_id!(ClusterId);
hex_id!(Incarnation);

/// What a node advertises about itself in the membership config.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeInfo {
    /// host:port of the internal Raft service.
    pub raft_addr: String,
    /// host:port of the public gRPC API.
    pub api_addr: String,
    /// The data dir incarnation the node had when it was added. Raft
    /// messages to this node carry it; a node with another one refuses them.
    pub incarnation: Incarnation,
}

impl fmt::Display for NodeInfo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "raft={} api={} incarnation={}", self.raft_addr, self.api_addr, self.incarnation)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_print_as_32_hex_digits_and_parse_back() {
        let c = ClusterId(0xabc);
        assert_eq!(c.to_string(), "00000000000000000000000000000abc");
        assert_eq!(c.to_string().parse::<ClusterId>(), Ok(c));
        let i = Incarnation(u128::MAX);
        assert_eq!(i.to_string().parse::<Incarnation>(), Ok(i));
        assert!("abc".parse::<ClusterId>().is_err());
        assert!("zz000000000000000000000000000abc".parse::<ClusterId>().is_err());
    }
}
