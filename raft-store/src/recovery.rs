//! Offline data-dir surgery: the two ways to start a new cluster from old
//! state. `restore` seeds a fresh data dir from a backup; `recover` makes the
//! survivor of a lost majority the only voter (like etcd's
//! `--force-new-cluster`), after applying every entry in its log.
//!
//! Both end the same way, so that `baton serve` on the data dir elects the
//! node alone and the usual add-node commands grow the cluster:
//! - the state machine is at some log id L;
//! - the log continues at L+1 with a membership entry naming the node as the
//!   only voter, at a term above every term the data dir has seen;
//! - the vote is for the node at that term (not committed: openraft elects it
//!   at the next term, and the new leader's first entry commits L+1);
//! - a new cluster id, written first, so the old cluster's nodes are refused
//!   from the moment anything else changed.
//!
//! Nothing here runs under openraft: these functions need the data dir for
//! themselves, which RocksDB's lock guarantees (a running node holds it).

use std::collections::{BTreeMap, BTreeSet};
use std::io::Read;
use std::path::Path;

use openraft::storage::{RaftLogStorage, RaftStateMachine};
use openraft::{CommittedLeaderId, EntryPayload, Membership};

use crate::backup::{self, BackupHeader};
use crate::error::StoreError;
use crate::log_store::LogStore;
use crate::state_machine::open_store;
use crate::types::*;

/// Log entries applied per batch while recovering. Bounds memory whatever
/// the length of the survivor's log.
pub const RECOVER_APPLY_CHUNK: u64 = 64;

fn storage(what: &str) -> impl FnOnce(StorageError) -> StoreError + '_ {
    move |e| StoreError::DataDir(format!("{what}: {e}"))
}

/// What [`restore`] did.
#[derive(Debug, Clone)]
pub struct Restored {
    pub header: BackupHeader,
    pub records: u64,
    /// The membership entry that makes the node the only voter.
    pub membership_log_id: LogId,
}

/// Restore `backup` into `dir`, which must not exist or be empty, as node
/// `node_id` (advertising `node`, whose incarnation is the new data dir's)
/// and the only voter of the new cluster `cluster_id`. The backup's checksum
/// and state hash are verified before anything is kept; on any error the
/// data dir is removed again.
pub async fn restore(
    dir: &Path,
    backup: impl Read,
    cluster_id: ClusterId,
    node_id: NodeId,
    node: NodeInfo,
) -> Result<Restored, StoreError> {
    let existed = dir.exists();
    if existed {
        let mut entries = std::fs::read_dir(dir).map_err(|e| StoreError::io(dir.display(), e))?;
        if entries.next().is_some() {
            return Err(StoreError::DataDir(format!(
                "refusing to restore into {}: it is not empty (restore seeds a new data dir)",
                dir.display()
            )));
        }
    }
    let result = restore_into(dir, backup, cluster_id, node_id, node).await;
    if result.is_err() {
        // Nothing half-restored may be started later.
        let _ = std::fs::remove_dir_all(dir);
        if existed {
            let _ = std::fs::create_dir_all(dir);
        }
    }
    result
}

async fn restore_into(
    dir: &Path,
    backup: impl Read,
    cluster_id: ClusterId,
    node_id: NodeId,
    node: NodeInfo,
) -> Result<Restored, StoreError> {
    let (mut log, mut sm) = open_store(dir)?;
    let (reader, header) = backup::Reader::new(backup)?;
    let Some(applied) = header.last_applied else {
        return Err(StoreError::Backup("the backup holds no applied entry".into()));
    };
    let records = sm.install_backup(reader, &header)?;
    log.save_node_id(node_id)?;
    log.save_incarnation(node.incarnation)?;
    // The log starts after the backup's state: its entries are in the state.
    log.purge(applied).await.map_err(storage("cannot start the log after the backup"))?;
    let membership_log_id =
        start_new_cluster(&mut log, applied, applied.leader_id.term + 1, cluster_id, node_id, node).await?;
    Ok(Restored { header, records, membership_log_id })
}

/// What [`recover`] did.
#[derive(Debug, Clone)]
pub struct Recovered {
    pub node_id: NodeId,
    /// The cluster the data dir belonged to.
    pub old_cluster: Option<ClusterId>,
    /// The voters of the last configuration in the survivor's log.
    pub old_voters: BTreeSet<NodeId>,
    /// Applied before, and after applying the whole log.
    pub applied_before: Option<LogId>,
    pub applied: LogId,
    /// Entries applied now: the survivor's log past its applied index,
    /// committed or not.
    pub entries_applied: u64,
    /// The membership entry that makes the node the only voter.
    pub membership_log_id: LogId,
    /// What the node advertises in the new membership.
    pub node: NodeInfo,
}

/// What a stopped node's data dir holds, for choosing the survivor to recover.
#[derive(Debug, Clone)]
pub struct Survey {
    pub node_id: Option<NodeId>,
    pub cluster: Option<ClusterId>,
    pub applied: Option<LogId>,
    /// The last entry of its log, committed or not.
    pub last_log: Option<LogId>,
    pub voters: BTreeSet<NodeId>,
}

/// Read what the (stopped) node in `dir` holds; changes no Raft state.
pub async fn survey(dir: &Path) -> Result<Survey, StoreError> {
    if !dir.join("db").is_dir() {
        return Err(StoreError::DataDir(format!("{} holds no Baton data (no db/ inside)", dir.display())));
    }
    let (mut log, mut sm) = open_store(dir)?;
    let state = log.get_log_state().await.map_err(storage("cannot read the log"))?;
    let (applied, membership) = sm.applied_state().await.map_err(storage("cannot read the state machine"))?;
    Ok(Survey {
        node_id: log.node_id()?,
        cluster: log.cluster_id()?,
        applied,
        last_log: state.last_log_id,
        voters: membership.membership().voter_ids().collect(),
    })
}

/// Force the survivor in `dir` to be the only voter of the new cluster
/// `cluster_id`: apply every entry of its log, then append a membership of
/// just this node. `node_id` is needed only for a data dir that does not
/// record its own; `addrs` (raft, api) replace the addresses the membership
/// has for it; `fresh` becomes the incarnation of a data dir without one.
pub async fn recover(
    dir: &Path,
    cluster_id: ClusterId,
    node_id: Option<NodeId>,
    addrs: Option<(String, String)>,
    fresh: Incarnation,
) -> Result<Recovered, StoreError> {
    if !dir.join("db").is_dir() {
        return Err(StoreError::DataDir(format!("{} holds no Baton data (no db/ inside)", dir.display())));
    }
    let (mut log, mut sm) = open_store(dir)?;
    let node_id = match (log.node_id()?, node_id) {
        (Some(stored), Some(given)) if stored != given => {
            return Err(StoreError::DataDir(format!("the data dir belongs to node {stored}, not node {given}")));
        }
        (Some(id), _) | (None, Some(id)) => id,
        (None, None) => {
            return Err(StoreError::DataDir("the data dir does not record its node id: pass --node-id".into()));
        }
    };
    let old_cluster = log.cluster_id()?;
    let state = log.get_log_state().await.map_err(storage("cannot read the log"))?;
    let Some(last) = state.last_log_id else {
        return Err(StoreError::DataDir("nothing to recover: the data dir was never part of a cluster".into()));
    };
    let (applied_before, _) = sm.applied_state().await.map_err(storage("cannot read the state machine"))?;

    // Every entry the survivor holds, committed or not: nobody is left who
    // could know better, and acknowledged writes may be among the last ones.
    let mut next = applied_before.map_or(0, |l| l.index + 1);
    let mut entries_applied = 0u64;
    while next <= last.index {
        let end = (next + RECOVER_APPLY_CHUNK).min(last.index + 1);
        let entries = log.entries(next..end)?;
        if entries.first().map(|e| e.log_id.index) != Some(next) || entries.len() as u64 != end - next {
            return Err(StoreError::DataDir(format!(
                "the log has a gap in [{next}, {end}): cannot apply it (purged below {:?})",
                state.last_purged_log_id
            )));
        }
        entries_applied += entries.len() as u64;
        sm.apply(entries).await.map_err(storage("applying the survivor's log failed"))?;
        next = end;
    }
    let (applied, membership) = sm.applied_state().await.map_err(storage("cannot read the state machine"))?;
    if applied != Some(last) {
        return Err(StoreError::Invariant(format!("applied {applied:?} after applying up to {last:?}")));
    }
    let old_voters: BTreeSet<NodeId> = membership.membership().voter_ids().collect();
    let incarnation = match log.incarnation()? {
        Some(i) => i,
        None => {
            log.save_incarnation(fresh)?;
            fresh
        }
    };
    let (raft_addr, api_addr) = match (addrs, membership.membership().get_node(&node_id)) {
        (Some(a), _) => a,
        (None, Some(n)) => (n.raft_addr.clone(), n.api_addr.clone()),
        (None, None) => {
            return Err(StoreError::DataDir(format!(
                "node {node_id} is not in the last membership ({:?}): pass --raft-addr and --api-addr",
                membership.membership()
            )));
        }
    };
    let node = NodeInfo { raft_addr, api_addr, incarnation };
    log.save_node_id(node_id)?;
    let vote = log.read_vote().await.map_err(storage("cannot read the vote"))?.unwrap_or_default();
    let term = vote.leader_id().term.max(last.leader_id.term) + 1;
    let membership_log_id = start_new_cluster(&mut log, last, term, cluster_id, node_id, node.clone()).await?;
    Ok(Recovered {
        node_id,
        old_cluster,
        old_voters,
        applied_before,
        applied: last,
        entries_applied,
        membership_log_id,
        node,
    })
}

/// The common end of restore and recover (see the module doc): after `last`,
/// at `term`, a membership of `node_id` alone in the new cluster.
async fn start_new_cluster(
    log: &mut LogStore,
    last: LogId,
    term: u64,
    cluster_id: ClusterId,
    node_id: NodeId,
    node: NodeInfo,
) -> Result<LogId, StoreError> {
    log.save_cluster_id(cluster_id)?;
    let membership = Membership::new(vec![BTreeSet::from([node_id])], BTreeMap::from([(node_id, node)]));
    let log_id = LogId::new(CommittedLeaderId::new(term, node_id), last.index + 1);
    log.append_offline(&[Entry { log_id, payload: EntryPayload::Membership(membership) }])?;
    log.save_committed(Some(last)).await.map_err(storage("cannot save the commit index"))?;
    log.save_vote(&Vote::new(term, node_id)).await.map_err(storage("cannot save the vote"))?;
    Ok(log_id)
}

#[cfg(test)]
#[path = "recovery_tests.rs"]
mod tests;
