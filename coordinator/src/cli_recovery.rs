//! `baton cluster backup | restore | recover`: taking a backup of a running
//! cluster, and the two offline ways to start a new cluster from old state
//! (`baton_raft_store::recovery`). docs/operations.md says when to use which.

use std::io::Write;
use std::path::{Path, PathBuf};

use clap::{Args, Subcommand};
use serde_json::json;

use baton_client::Error;
use baton_raft_store::backup::{self, BackupHeader};
use baton_raft_store::recovery::{self, Recovered, Restored};
use baton_raft_store::{ClusterId, Incarnation, NodeInfo, StoreError};

use crate::cli::{Global, print_json};
use crate::config::valid_host_port;

#[derive(Subcommand)]
pub enum RecoveryCmd {
    /// Stream a consistent, checksummed copy of the cluster's state from the
    /// leader into FILE (no downtime).
    Backup {
        #[arg(long)]
        out: PathBuf,
    },
    /// Offline: seed a new data dir from a backup, as the only voter of a
    /// NEW cluster (new cluster id). Start it with `baton serve`, then add nodes.
    Restore(RestoreArgs),
    /// Offline, after losing a majority for good: make this stopped survivor
    /// the only voter of a NEW cluster, keeping every entry of its log (like
    /// etcd's --force-new-cluster). Start it with `baton serve`, then add nodes.
    Recover(RecoverArgs),
}

#[derive(Args)]
pub struct RestoreArgs {
    /// The backup file (`baton cluster backup --out`).
    #[arg(long)]
    pub from: PathBuf,
    /// The new node's data dir; must not exist or be empty.
    #[arg(long)]
    pub data_dir: PathBuf,
    /// The node id the data dir will be served as (`baton serve --node-id`).
    #[arg(long, default_value_t = 1)]
    pub node_id: u64,
    /// The Raft address the node will advertise (its raft_advertise, or raft_listen).
    #[arg(long, default_value = "127.0.0.1:7101")]
    pub raft_addr: String,
    /// The API address the node will advertise (its api_advertise, or api_listen).
    #[arg(long, default_value = "127.0.0.1:7201")]
    pub api_addr: String,
}

#[derive(Args)]
pub struct RecoverArgs {
    /// The survivor's data dir. Its node must be stopped.
    #[arg(long)]
    pub data_dir: PathBuf,
    /// Needed only if the data dir does not record its node id.
    #[arg(long)]
    pub node_id: Option<u64>,
    /// New Raft address for the node (default: the one in its membership).
    #[arg(long, requires = "api_addr")]
    pub raft_addr: Option<String>,
    /// New API address for the node (default: the one in its membership).
    #[arg(long, requires = "raft_addr")]
    pub api_addr: Option<String>,
    /// Only print what the data dir holds (its log's last index, to pick
    /// the survivor with the most log); change nothing.
    #[arg(long)]
    pub dry_run: bool,
}

/// Why a backup, restore or recover failed.
#[derive(Debug, thiserror::Error)]
pub enum RecoveryError {
    /// Talking to the cluster failed (backup).
    #[error(transparent)]
    Client(#[from] Error),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("{path}: {source}")]
    Io { path: String, source: std::io::Error },
    #[error("invalid {field}: {reason}")]
    Invalid { field: &'static str, reason: String },
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> RecoveryError + '_ {
    move |source| RecoveryError::Io { path: path.display().to_string(), source }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

pub async fn run(g: &Global, cmd: RecoveryCmd) -> Result<(), RecoveryError> {
    match cmd {
        RecoveryCmd::Backup { out } => backup_to(g, &out).await,
        RecoveryCmd::Restore(a) => restore(g, a).await,
        RecoveryCmd::Recover(a) => recover(g, a).await,
    }
}

fn voters(h: &BackupHeader) -> Vec<u64> {
    h.membership.membership().voter_ids().collect()
}

async fn backup_to(g: &Global, out: &Path) -> Result<(), RecoveryError> {
    let client = g.client()?;
    let partial = PathBuf::from(format!("{}.partial", out.display()));
    let mut stream = client.backup().await?;
    let mut file = std::fs::File::create(&partial).map_err(io(&partial))?;
    let mut bytes = 0u64;
    let received = async {
        while let Some(chunk) = stream.message().await.map_err(|s| Error::from_status(&s, false))? {
            file.write_all(&chunk.data).map_err(io(&partial))?;
            bytes += chunk.data.len() as u64;
        }
        file.sync_all().map_err(io(&partial))?;
        Ok::<_, RecoveryError>(())
    };
    if let Err(e) = received.await {
        let _ = std::fs::remove_file(&partial);
        return Err(e);
    }
    // Read it back: only a file whose checksum holds gets the final name.
    let check = partial.clone();
    let verified = tokio::task::spawn_blocking(move || backup::verify(&check))
        .await
        .map_err(|e| StoreError::Backup(format!("verify task failed: {e}")))
        .and_then(|r| r);
    let (header, records) = match verified {
        Ok(v) => v,
        Err(e) => {
            let _ = std::fs::remove_file(&partial);
            return Err(e.into());
        }
    };
    std::fs::rename(&partial, out).map_err(io(out))?;
    let applied = header.last_applied.unwrap_or_default();
    if g.json {
        print_json(&json!({
            "file": out.display().to_string(), "bytes": bytes, "records": records,
            "cluster_id": header.cluster_id.to_string(), "last_applied_index": applied.index,
            "last_applied_term": applied.leader_id.term, "state_hash": hex(&header.state_hash),
            "voters": voters(&header), "taken_at_ms": header.taken_at_ms,
        }));
    } else {
        println!("backup written to {} ({bytes} bytes, {records} records, checksum verified)", out.display());
        println!("  cluster       {}", header.cluster_id);
        println!("  applied index {} (term {})", applied.index, applied.leader_id.term);
        println!("  state hash    {}", hex(&header.state_hash));
    }
    Ok(())
}

async fn restore(g: &Global, a: RestoreArgs) -> Result<(), RecoveryError> {
    for (field, v) in [("raft_addr", &a.raft_addr), ("api_addr", &a.api_addr)] {
        if !valid_host_port(v) {
            return Err(RecoveryError::Invalid { field, reason: format!("{v:?} is not host:port") });
        }
    }
    if a.node_id == 0 {
        return Err(RecoveryError::Invalid { field: "node_id", reason: "must be greater than 0".into() });
    }
    let file = std::fs::File::open(&a.from).map_err(io(&a.from))?;
    let cluster = ClusterId(rand::random());
    let node = NodeInfo {
        raft_addr: a.raft_addr.clone(),
        api_addr: a.api_addr.clone(),
        incarnation: Incarnation(rand::random()),
    };
    let r: Restored = recovery::restore(&a.data_dir, file, cluster, a.node_id, node).await?;
    let applied = r.header.last_applied.unwrap_or_default();
    if g.json {
        print_json(&json!({
            "data_dir": a.data_dir.display().to_string(), "node_id": a.node_id,
            "cluster_id": cluster.to_string(), "backup_cluster_id": r.header.cluster_id.to_string(),
            "last_applied_index": applied.index, "state_hash": hex(&r.header.state_hash), "records": r.records,
            "membership_log_index": r.membership_log_id.index,
        }));
    } else {
        println!(
            "restored {} into {} as node {}, the only voter of a new cluster",
            a.from.display(),
            a.data_dir.display(),
            a.node_id
        );
        println!("  backup of     cluster {}, applied index {}", r.header.cluster_id, applied.index);
        println!("  records       {}", r.records);
        println!("  state hash    {} (the restored state's, equal to the backup's)", hex(&r.header.state_hash));
        println!("  new cluster   {cluster}");
        println!(
            "next: baton serve --node-id {} --data-dir {} (advertising raft {} and api {}), then add nodes with \
             `baton cluster add-node` and `baton cluster promote`",
            a.node_id,
            a.data_dir.display(),
            a.raft_addr,
            a.api_addr
        );
    }
    Ok(())
}

async fn survey(g: &Global, dir: &Path) -> Result<(), RecoveryError> {
    let s = recovery::survey(dir).await?;
    let cluster = s.cluster.map(|c| c.to_string());
    let voters: Vec<u64> = s.voters.iter().copied().collect();
    if g.json {
        print_json(&json!({
            "data_dir": dir.display().to_string(), "node_id": s.node_id, "cluster_id": cluster,
            "applied_index": s.applied.map(|l| l.index), "last_log_index": s.last_log.map(|l| l.index),
            "last_log_term": s.last_log.map(|l| l.leader_id.term), "voters": voters,
        }));
    } else {
        println!("{} (dry run: nothing changed)", dir.display());
        println!("  node          {}", s.node_id.map_or_else(|| "unknown".into(), |n| n.to_string()));
        println!("  cluster       {}", cluster.as_deref().unwrap_or("none"));
        println!("  voters        {voters:?}");
        println!("  applied index {}", s.applied.map_or(0, |l| l.index));
        println!(
            "  last log      index {} term {}  (recover the survivor with the highest term, then index)",
            s.last_log.map_or(0, |l| l.index),
            s.last_log.map_or(0, |l| l.leader_id.term)
        );
    }
    Ok(())
}

async fn recover(g: &Global, a: RecoverArgs) -> Result<(), RecoveryError> {
    if a.dry_run {
        return survey(g, &a.data_dir).await;
    }
    let addrs = a.raft_addr.clone().zip(a.api_addr.clone());
    if let Some((raft, api)) = &addrs {
        for (field, v) in [("raft_addr", raft), ("api_addr", api)] {
            if !valid_host_port(v) {
                return Err(RecoveryError::Invalid { field, reason: format!("{v:?} is not host:port") });
            }
        }
    }
    let cluster = ClusterId(rand::random());
    let r: Recovered = recovery::recover(&a.data_dir, cluster, a.node_id, addrs, Incarnation(rand::random())).await?;
    let old = r.old_cluster.map_or_else(|| "<none>".to_string(), |c| c.to_string());
    let old_voters: Vec<u64> = r.old_voters.iter().copied().collect();
    if g.json {
        print_json(&json!({
            "data_dir": a.data_dir.display().to_string(), "node_id": r.node_id,
            "old_cluster_id": old, "old_voters": old_voters, "cluster_id": cluster.to_string(),
            "applied_before_index": r.applied_before.map(|l| l.index), "applied_index": r.applied.index,
            "entries_applied": r.entries_applied, "membership_log_index": r.membership_log_id.index,
            "term": r.membership_log_id.leader_id.term,
            "raft_addr": r.node.raft_addr, "api_addr": r.node.api_addr,
        }));
    } else {
        println!("recovered node {} in {} as the only voter of a new cluster", r.node_id, a.data_dir.display());
        println!("  old cluster     {old} (voters {old_voters:?})");
        println!("  new cluster     {cluster}");
        println!(
            "  applied         {} more entries of its log, up to index {} (term {}): every entry it held, committed or not",
            r.entries_applied, r.applied.index, r.applied.leader_id.term
        );
        println!(
            "  new membership  index {}, term {}: node {} alone ({})",
            r.membership_log_id.index, r.membership_log_id.leader_id.term, r.node_id, r.node
        );
        println!(
            "next: start it with `baton serve` (its usual flags), then add new nodes with empty data dirs \
             (`baton cluster add-node`, `baton cluster promote`). Writes only the lost nodes held are gone; \
             the old nodes' data dirs belong to the old cluster and are refused by the new one"
        );
    }
    Ok(())
}
