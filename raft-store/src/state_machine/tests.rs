//! Reads against the RocksDB state machine: snapshots served whole, long
//! scans off the lock, and byte-bounded result pages.

use std::cell::Cell;
use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::Duration;

use openraft::{CommittedLeaderId, EntryPayload, RaftSnapshotBuilder};
use serde_bytes::ByteBuf;

use super::*;
use crate::command::{Assign, Command, JobSpec, Outcome, Proposal};
use crate::task::TaskState;

fn entry(index: u64, cmd: Command) -> Entry {
    Entry {
        log_id: LogId::new(CommittedLeaderId::new(1, 1), index),
        payload: EntryPayload::Normal(Proposal { proposed_at_ms: 1_700_000_000_000 + index, cmd }),
    }
}

fn submit(shards: usize) -> Command {
    Command::SubmitJob(JobSpec::with_shards("ns", shards))
}

/// A concurrent build may publish a newer snapshot between reading the meta
/// and opening the file; what is served must still be one snapshot.
#[tokio::test]
async fn the_served_meta_is_the_meta_of_the_served_file() {
    let dir = tempfile::tempdir().unwrap();
    let (_log, mut sm) = open_store(dir.path()).unwrap();
    sm.apply([entry(1, submit(1))]).await.unwrap();
    sm.get_snapshot_builder().await.build_snapshot().await.unwrap();
    let current = dir.path().join("snapshots").join(CURRENT_SNAPSHOT);
    let older = dir.path().join("older.snap");
    std::fs::copy(&current, &older).unwrap();
    sm.apply([entry(2, submit(1))]).await.unwrap();
    sm.get_snapshot_builder().await.build_snapshot().await.unwrap();
    let newer = dir.path().join("newer.snap");
    std::fs::rename(&current, &newer).unwrap();
    std::fs::rename(&older, &current).unwrap();

    let (meta, mut file) = open_current(&current, &mut || std::fs::rename(&newer, &current).unwrap()).unwrap().unwrap();
    let (_, in_file) = snapshot::Reader::new(&mut file).unwrap();
    assert_eq!(meta, in_file, "meta and file come from different snapshots");
    assert_eq!(meta.last_log_id.map(|l| l.index), Some(1));
    assert_eq!(snapshot::read_meta(&current).unwrap().last_log_id.map(|l| l.index), Some(2), "the swap happened");
    assert!(open_current(&dir.path().join("none.snap"), &mut || {}).unwrap().is_none());
}

/// A scan runs on a pinned snapshot, so apply() goes on while it is in
/// progress (a scan under the read lock would hold apply, and every later
/// reader, until it ended).
#[tokio::test]
async fn apply_goes_on_while_a_long_scan_runs() {
    let dir = tempfile::tempdir().unwrap();
    let (_log, mut sm) = open_store(dir.path()).unwrap();
    sm.apply([entry(1, submit(1)), entry(2, submit(1))]).await.unwrap();
    let reader = sm.reader();
    let (in_scan_tx, in_scan_rx) = std::sync::mpsc::channel::<()>();
    let (applied_tx, applied_rx) = std::sync::mpsc::channel::<()>();
    let scan = std::thread::spawn(move || {
        let applied_rx = Mutex::new(applied_rx);
        let first = Cell::new(true);
        let saw_apply = Cell::new(false);
        let (jobs, _) = reader
            .list_jobs_inspect(&JobFilter::default(), None, 10, false, |_| {
                if first.replace(false) {
                    in_scan_tx.send(()).unwrap();
                    // Liveness bound: apply must finish while the scan waits.
                    saw_apply.set(applied_rx.lock().unwrap().recv_timeout(Duration::from_secs(10)).is_ok());
                }
            })
            .unwrap();
        (jobs.len(), saw_apply.get())
    });
    in_scan_rx.recv().unwrap();
    sm.apply([entry(3, submit(1))]).await.unwrap();
    let _ = applied_tx.send(());
    let (seen, saw_apply) = scan.join().unwrap();
    assert!(saw_apply, "apply waited for the scan to end");
    assert_eq!(seen, 2, "the scan reads the state it pinned");
    let (applied, hash) = sm.reader().state_hash().unwrap();
    assert_eq!(applied.map(|l| l.index), Some(3), "the hash names the log id it covers");
    assert_eq!(hash, sm.read(|_, kv| state_hash(kv)).unwrap());
}

/// Result pages end by bytes, never empty, and resume at any shard.
#[tokio::test]
async fn result_pages_are_bounded_by_bytes() {
    let dir = tempfile::tempdir().unwrap();
    let (_log, mut sm) = open_store(dir.path()).unwrap();
    let reg = Command::RegisterWorker { name: "w".into(), labels: BTreeMap::new(), capacity: 10, namespaces: None };
    let assign =
        Command::AssignTasks { assignments: (0..5).map(|s| Assign { task: TaskKey::new(1, s), session: 1 }).collect() };
    let r = sm.apply([entry(1, reg), entry(2, submit(5)), entry(3, assign)]).await.unwrap();
    assert!(matches!(&r[2], Response::Done(Outcome::Assigned(g)) if g.iter().all(|g| g.is_ok())), "{r:?}");
    let done = (0..5u32)
        .map(|s| Command::CompleteTask {
            task: TaskKey::new(1, s),
            token: 3,
            result: ByteBuf::from(vec![s as u8; 100]),
            logs: Default::default(),
        })
        .collect();
    sm.apply([entry(4, Command::Batch(done))]).await.unwrap();
    let reader = sm.reader();

    let size =
        |page: &[(u32, TaskRecord)]| page.iter().map(|(_, t)| crate::codec::encode(t).unwrap().len()).sum::<usize>();
    let page = reader.tasks_of(1, 0, 10, 500).unwrap();
    assert!(page.len() >= 2 && page.len() < 5, "{} records", page.len());
    assert!(size(&page) <= 500, "a page stays within its bytes");
    assert_eq!(reader.tasks_of(1, 0, 10, 1).unwrap().len(), 1, "a page holds at least one record");
    assert_eq!(reader.tasks_of(1, 3, 10, usize::MAX).unwrap().iter().map(|(s, _)| *s).collect::<Vec<_>>(), [3, 4]);
    assert_eq!(reader.tasks_of(1, 0, 2, usize::MAX).unwrap().len(), 2, "the count limit still holds");
    let mut all = Vec::new();
    let mut from = 0;
    while from < 5 {
        let page = reader.tasks_of(1, from, 10, 500).unwrap();
        from = page.last().unwrap().0 + 1;
        all.extend(page);
    }
    assert_eq!(all.iter().map(|(s, _)| *s).collect::<Vec<_>>(), [0, 1, 2, 3, 4]);
    assert!(
        all.iter()
            .all(|(s, t)| matches!(&t.state, TaskState::Succeeded { result, .. } if result[..] == [*s as u8; 100]))
    );
}

/// Listing on RocksDB pages through the job table and the job indexes in
/// both directions, as the in-memory listing does, and hides deleted jobs.
#[tokio::test]
async fn list_jobs_pages_through_indexes_on_rocksdb() {
    let dir = tempfile::tempdir().unwrap();
    let (_log, mut sm) = open_store(dir.path()).unwrap();
    let mut entries = Vec::new();
    for i in 0..40u64 {
        let ns = ["a", "ab", "b"][(i % 3) as usize];
        entries.push(Command::SubmitJob(JobSpec::with_shards(ns, 1)));
    }
    for job in (1..=40u64).step_by(4) {
        entries.push(Command::CancelJob { job, reason: String::new() });
    }
    entries.push(Command::DeleteJob { job: 5 });
    let entries: Vec<Entry> = entries.into_iter().enumerate().map(|(i, c)| entry(i as u64 + 1, c)).collect();
    sm.apply(entries).await.unwrap();
    let reader = sm.reader();
    let all: Vec<JobRecord> = (1..=40).filter_map(|j| reader.job(j).unwrap()).collect();
    assert_eq!(all.len(), 39, "the deleted job is hidden");
    let filters = [
        JobFilter::default(),
        JobFilter { namespace: Some("a".into()), status: None },
        JobFilter { namespace: Some("ab".into()), status: Some(JobStatus::Queued) },
        JobFilter { namespace: None, status: Some(JobStatus::Cancelled) },
    ];
    for filter in &filters {
        for newest_first in [false, true] {
            let mut want: Vec<JobId> = all.iter().filter(|j| filter.matches(j)).map(|j| j.id).collect();
            if newest_first {
                want.reverse();
            }
            let (mut got, mut after) = (Vec::new(), None);
            loop {
                let (page, next) = reader.list_jobs(filter, after, 3, newest_first).unwrap();
                assert!(page.len() <= 3);
                got.extend(page.iter().map(|j| j.id));
                match next {
                    Some(n) => after = Some(n),
                    None => break,
                }
            }
            assert!(!want.is_empty());
            assert_eq!(got, want, "{filter:?} newest_first={newest_first}");
        }
    }
}
