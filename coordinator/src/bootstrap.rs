//! Forming a new cluster: who initializes it, when that is safe, and what a
//! second initialization gets.
//!
//! Two ways in:
//! - implicit, with `initial_members` on every start (compose files, the
//!   StatefulSet): the lowest id initializes, once, when it has no Raft
//!   state. "No Raft state" is also what a wiped disk looks like, so before
//!   initializing it asks every other member (`Identify`) and goes ahead
//!   only when all of them answered that they belong to no cluster. If one
//!   does, the node logs why and waits to be added like any new node: it
//!   never starts a second cluster beside the first.
//! - explicit, `baton serve --init`: the operator says "create it now". It
//!   fails, and the node exits, on an initialized data dir or when a member
//!   belongs to a cluster.
//!
//! The initial membership records every member's incarnation, learned from
//! the same `Identify` answers, so the very first messages are already
//! checked (see `identity.rs`).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use baton_raft_store::{NodeId, NodeInfo, Raft};

use crate::config::{Config, ConfigError, Member};
use crate::identity::{Identity, IdentityError};
use crate::network::{CONNECT_TIMEOUT_MS, identify};

/// Pause between rounds of asking the initial members who they are.
pub const PROBE_INTERVAL: Duration = Duration::from_millis(200);
/// How often the wait for silent initial members is logged.
pub const PROBE_LOG_INTERVAL: Duration = Duration::from_secs(5);

#[derive(Debug, thiserror::Error)]
pub enum BootstrapError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Identity(#[from] IdentityError),
    #[error(
        "--init refused: this data dir is already initialized (node {node} of cluster {cluster}). \
         A second initialization would start another cluster over its state; start the node without --init"
    )]
    AlreadyInitialized { node: NodeId, cluster: String },
    #[error(
        "--init refused: initial member node {peer} at {addr} already belongs to cluster {cluster}, \
         and this node would start a second cluster beside it. To join that cluster, start this node \
         without --init and without initial members, then `baton cluster add-node`"
    )]
    PeerInCluster { peer: NodeId, addr: String, cluster: String },
    #[error("initial member {expected} at {addr} answers as node {actual}: fix initial_members")]
    WrongPeer { expected: NodeId, addr: String, actual: NodeId },
    #[error("raft: {0}")]
    Raft(String),
}

fn cluster_name(identity: &Identity) -> String {
    identity.cluster_id().map_or_else(|| "<unknown>".into(), |c| c.to_string())
}

/// `--init` on a data dir with Raft state: refused before anything serves.
pub async fn check_second_init(cfg: &Config, raft: &Raft, identity: &Identity) -> Result<(), BootstrapError> {
    if cfg.init && raft.is_initialized().await.map_err(|e| BootstrapError::Raft(e.to_string()))? {
        return Err(BootstrapError::AlreadyInitialized { node: cfg.node_id, cluster: cluster_name(identity) });
    }
    Ok(())
}

/// Initialize a new cluster if this node should (see the module doc).
/// Returns once it did, or decided not to; an error ends the node.
pub async fn form(
    cfg: Arc<Config>,
    raft: Raft,
    identity: Arc<Identity>,
    tls: Option<Arc<crate::tls::TlsState>>,
) -> Result<(), BootstrapError> {
    let initialized = || async { raft.is_initialized().await.map_err(|e| BootstrapError::Raft(e.to_string())) };
    if initialized().await? {
        return Ok(());
    }
    let mut members = cfg.members()?;
    if members.is_empty() {
        if !cfg.init {
            return Ok(()); // a new node, to be added with add-node
        }
        members.push(Member { id: cfg.node_id, info: NodeInfo::default() });
    }
    if !cfg.init && members.iter().map(|m| m.id).min() != Some(cfg.node_id) {
        tracing::info!(node = cfg.node_id, "waiting for the lowest-id member to initialize the cluster");
        return Ok(());
    }

    let mut nodes: BTreeMap<NodeId, NodeInfo> = BTreeMap::from([(cfg.node_id, cfg.node_info(identity.incarnation()))]);
    let mut last_log = Instant::now();
    loop {
        let silent: Vec<&Member> = members.iter().filter(|m| !nodes.contains_key(&m.id)).collect();
        for m in silent {
            let Ok(who) = identify(&m.info.raft_addr, tls.as_deref(), Duration::from_millis(CONNECT_TIMEOUT_MS)).await
            else {
                continue;
            };
            if who.node_id != m.id {
                return Err(BootstrapError::WrongPeer {
                    expected: m.id,
                    addr: m.info.raft_addr.clone(),
                    actual: who.node_id,
                });
            }
            if who.in_a_cluster() {
                let cluster = who.cluster_id.map_or_else(|| "<unknown>".into(), |c| c.to_string());
                if cfg.init {
                    return Err(BootstrapError::PeerInCluster { peer: m.id, addr: m.info.raft_addr.clone(), cluster });
                }
                tracing::error!(
                    node = cfg.node_id,
                    peer = m.id,
                    addr = %m.info.raft_addr,
                    %cluster,
                    "not initializing a new cluster: initial member node {} already belongs to cluster {cluster}, \
                     and this node has no Raft state (its data dir is new, or was wiped). It waits to be added. \
                     If it was a member before, remove it and add it again: `baton cluster remove-node --id {}`, \
                     `baton cluster add-node --id {} --raft-addr {} --api-addr {}`, then `baton cluster promote`",
                    m.id,
                    cfg.node_id,
                    cfg.node_id,
                    cfg.raft_addr(),
                    cfg.api_addr()
                );
                return Ok(());
            }
            nodes.insert(m.id, NodeInfo { incarnation: who.incarnation, ..m.info.clone() });
        }
        if nodes.len() == members.len() {
            break;
        }
        // Someone else may have initialized us meanwhile (another node's --init).
        if initialized().await? {
            return Ok(());
        }
        if last_log.elapsed() >= PROBE_LOG_INTERVAL {
            let silent: Vec<NodeId> = members.iter().map(|m| m.id).filter(|id| !nodes.contains_key(id)).collect();
            tracing::info!(?silent, "waiting for every initial member to answer before initializing");
            last_log = Instant::now();
        }
        tokio::time::sleep(PROBE_INTERVAL).await;
    }

    let cluster = identity.found_cluster()?;
    match raft.initialize(nodes).await {
        Ok(()) => tracing::info!(node = cfg.node_id, %cluster, "cluster initialized"),
        Err(openraft::error::RaftError::APIError(e)) if !cfg.init => {
            tracing::info!(reason = %e, "cluster already initialized")
        }
        Err(openraft::error::RaftError::APIError(_)) => {
            return Err(BootstrapError::AlreadyInitialized { node: cfg.node_id, cluster: cluster_name(&identity) });
        }
        Err(e) => return Err(BootstrapError::Raft(e.to_string())),
    }
    Ok(())
}
