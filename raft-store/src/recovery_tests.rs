//! Restore and recover on real RocksDB data dirs.

use openraft::RaftLogReader;
use openraft::storage::LogState;

use super::*;
use crate::command::{Command, JobSpec, Proposal};
use crate::kv::state_hash;

fn info(n: u64, inc: u128) -> NodeInfo {
    NodeInfo { raft_addr: format!("h{n}:1"), api_addr: format!("h{n}:2"), incarnation: Incarnation(inc) }
}

fn first_membership() -> Entry {
    let nodes: BTreeMap<NodeId, NodeInfo> = (1..=3).map(|n| (n, info(n, n as u128))).collect();
    Entry {
        log_id: LogId::new(CommittedLeaderId::new(0, 0), 0),
        payload: EntryPayload::Membership(Membership::new(vec![BTreeSet::from([1, 2, 3])], nodes)),
    }
}

fn submit(term: u64, index: u64) -> Entry {
    Entry {
        log_id: LogId::new(CommittedLeaderId::new(term, 1), index),
        payload: EntryPayload::Normal(Proposal {
            proposed_at_ms: 1_700_000_000_000 + index,
            cmd: Command::SubmitJob(JobSpec::with_shards("ns", 2)),
        }),
    }
}

/// A data dir as a node of the old cluster left it: `applied` entries
/// applied, `logged` in its log (the rest not applied yet), a vote at term 2.
async fn old_node(dir: &Path, applied: u64, logged: u64) {
    let (mut log, mut sm) = open_store(dir).unwrap();
    let entries: Vec<Entry> = std::iter::once(first_membership()).chain((1..=logged).map(|i| submit(2, i))).collect();
    log.append_offline(&entries).unwrap();
    sm.apply(entries[..=applied as usize].to_vec()).await.unwrap();
    log.save_vote(&Vote::new_committed(2, 1)).await.unwrap();
    log.save_cluster_id(ClusterId(1)).unwrap();
    log.save_incarnation(Incarnation(3)).unwrap();
    log.save_node_id(3).unwrap();
}

fn hash_of(sm: &crate::StateMachine) -> [u8; 32] {
    sm.state_hash().unwrap().1
}

/// What openraft will find when it starts on `dir`.
async fn raft_view(dir: &Path) -> (LogState<TypeConfig>, Option<LogId>, StoredMembership, Vote, Vec<Entry>) {
    let (mut log, mut sm) = open_store(dir).unwrap();
    let state = log.get_log_state().await.unwrap();
    let (applied, membership) = sm.applied_state().await.unwrap();
    let vote = log.read_vote().await.unwrap().unwrap();
    let from = state.last_purged_log_id.map_or(0, |l| l.index + 1);
    let tail = log.try_get_log_entries(from..).await.unwrap();
    (state, applied, membership, vote, tail)
}

#[tokio::test]
async fn a_backup_restores_into_a_one_node_cluster_with_the_same_state() {
    let old = tempfile::tempdir().unwrap();
    old_node(old.path(), 5, 5).await;
    let (_log, sm) = open_store(old.path()).unwrap();
    let mut bytes = Vec::new();
    let (header, records) = sm.reader().write_backup(ClusterId(1), 123, &mut bytes).unwrap();
    assert_eq!(header.state_hash, hash_of(&sm));
    assert_eq!(header.last_applied.map(|l| l.index), Some(5));
    drop((_log, sm));

    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("restored");
    let r = restore(&dir, &bytes[..], ClusterId(99), 7, info(7, 70)).await.unwrap();
    assert_eq!(r.header, header);
    assert_eq!(r.records, records);
    assert_eq!(r.membership_log_id, LogId::new(CommittedLeaderId::new(3, 7), 6));

    let (state, applied, _, vote, tail) = raft_view(&dir).await;
    assert_eq!(state.last_purged_log_id, header.last_applied, "the log starts after the backup");
    assert_eq!(applied, header.last_applied);
    assert_eq!(vote, Vote::new(3, 7));
    assert_eq!(tail.len(), 1);
    let EntryPayload::Membership(m) = &tail[0].payload else { panic!("not a membership entry: {:?}", tail[0]) };
    assert_eq!(m.voter_ids().collect::<Vec<_>>(), vec![7]);
    assert_eq!(m.get_node(&7), Some(&info(7, 70)));

    let (log, sm) = open_store(&dir).unwrap();
    assert_eq!(hash_of(&sm), header.state_hash, "the restored state is the backup's");
    assert_eq!(log.cluster_id().unwrap(), Some(ClusterId(99)));
    assert_eq!(log.incarnation().unwrap(), Some(Incarnation(70)));
    assert_eq!(log.node_id().unwrap(), Some(7));
}

#[tokio::test]
async fn restore_refuses_a_used_dir_and_leaves_nothing_of_a_bad_backup() {
    let old = tempfile::tempdir().unwrap();
    old_node(old.path(), 2, 2).await;
    let (_log, sm) = open_store(old.path()).unwrap();
    let mut bytes = Vec::new();
    sm.reader().write_backup(ClusterId(1), 0, &mut bytes).unwrap();

    let used = tempfile::tempdir().unwrap();
    std::fs::write(used.path().join("x"), b"x").unwrap();
    let err = restore(used.path(), &bytes[..], ClusterId(2), 1, info(1, 1)).await.unwrap_err();
    assert!(err.to_string().contains("not empty"), "{err}");
    assert!(used.path().join("x").exists());

    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("restored");
    let mut corrupt = bytes.clone();
    let n = corrupt.len();
    corrupt[n - 50] ^= 1;
    let err = restore(&dir, &corrupt[..], ClusterId(2), 1, info(1, 1)).await.unwrap_err();
    assert!(err.to_string().contains("checksum"), "{err}");
    assert!(!dir.exists(), "a failed restore leaves no data dir behind");
    let err = restore(&dir, &bytes[..bytes.len() / 2], ClusterId(2), 1, info(1, 1)).await.unwrap_err();
    assert!(err.to_string().contains("truncated"), "{err}");
    assert!(!dir.exists());
}

#[tokio::test]
async fn recover_applies_the_whole_log_and_leaves_one_voter() {
    let dir = tempfile::tempdir().unwrap();
    old_node(dir.path(), 3, 8).await;
    let r = recover(dir.path(), ClusterId(42), None, None, Incarnation(5)).await.unwrap();
    assert_eq!(r.node_id, 3);
    assert_eq!(r.old_cluster, Some(ClusterId(1)));
    assert_eq!(r.old_voters, BTreeSet::from([1, 2, 3]));
    assert_eq!(r.applied_before.map(|l| l.index), Some(3));
    assert_eq!(r.applied.index, 8);
    assert_eq!(r.entries_applied, 5);
    assert_eq!(r.node, info(3, 3), "the node keeps its addresses and its data dir's incarnation");
    assert_eq!(r.membership_log_id, LogId::new(CommittedLeaderId::new(3, 3), 9));

    let (state, applied, _, vote, tail) = raft_view(dir.path()).await;
    assert_eq!(applied.map(|l| l.index), Some(8), "every entry of the survivor's log is applied");
    assert_eq!(state.last_log_id, Some(r.membership_log_id));
    assert_eq!(vote, Vote::new(3, 3));
    let EntryPayload::Membership(m) = &tail.last().unwrap().payload else { panic!("no membership entry") };
    assert_eq!(m.voter_ids().collect::<Vec<_>>(), vec![3]);
    let (log, sm) = open_store(dir.path()).unwrap();
    assert_eq!(log.cluster_id().unwrap(), Some(ClusterId(42)));
    let jobs = sm.read(|core, _| core.meta.next_job);
    assert_eq!(jobs, 9, "the eight submits in the log are all applied");
    let kv_hash = sm.read(|_, kv| state_hash(kv).unwrap());
    assert_eq!(kv_hash, hash_of(&sm));
}

#[tokio::test]
async fn recover_refuses_a_data_dir_in_use_or_without_data() {
    let dir = tempfile::tempdir().unwrap();
    old_node(dir.path(), 1, 1).await;
    let held = open_store(dir.path()).unwrap();
    let err = recover(dir.path(), ClusterId(2), None, None, Incarnation(1)).await.unwrap_err();
    assert!(matches!(err, StoreError::Locked { .. }), "{err}");
    drop(held);

    let empty = tempfile::tempdir().unwrap();
    let err = recover(empty.path(), ClusterId(2), Some(1), None, Incarnation(1)).await.unwrap_err();
    assert!(err.to_string().contains("no Baton data"), "{err}");
    assert!(!empty.path().join("db").exists(), "recover creates nothing");

    let err = recover(dir.path(), ClusterId(2), Some(9), None, Incarnation(1)).await.unwrap_err();
    assert!(err.to_string().contains("belongs to node 3"), "{err}");
}
