//! Snapshot round trip with 1,000,000 tasks: build on one store, stream into
//! another, install, and compare state hashes and indexes, before and after a
//! reopen. Prints the peak RSS of the build and of the install.

use std::collections::BTreeMap;
use std::time::Instant;

use baton_raft_store::*;
use openraft::storage::RaftStateMachine;
use openraft::{CommittedLeaderId, EntryPayload, RaftSnapshotBuilder};
use serde_bytes::ByteBuf;

const TASKS: usize = 1_000_000;
/// Shards per job: with their payloads, a job stays under the entry limit
/// (each shard also costs an 8-byte length prefix).
const SHARDS_PER_JOB: usize = 50_000;

fn entry(index: u64, cmd: Command) -> Entry {
    Entry {
        log_id: LogId::new(CommittedLeaderId::new(2, 1), index),
        payload: EntryPayload::Normal(Proposal { proposed_at_ms: 1_700_000_000_000 + index, cmd }),
    }
}

/// Peak resident set since the last reset, in MiB (Linux).
fn peak_rss_mib() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|kb| kb.parse::<f64>().ok())
        .map_or(0.0, |kb| kb / 1024.0)
}

fn reset_peak_rss() {
    // "5" resets VmHWM to the current RSS (Linux >= 4.0).
    let _ = std::fs::write("/proc/self/clear_refs", "5");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn million_task_snapshot_round_trip() {
    let dir_a = tempfile::tempdir().unwrap();
    let dir_b = tempfile::tempdir().unwrap();
    let (_log_a, mut sm_a) = open_store(dir_a.path()).unwrap();

    // Fill: 20 jobs x 50k shards with small payloads, then give the table
    // some variety: sessions, assignments, results, a failure and a cancel.
    let t0 = Instant::now();
    let mut index = 0u64;
    let mut next = |cmd| {
        index += 1;
        entry(index, cmd)
    };
    let mut entries = vec![
        next(Command::RegisterWorker {
            name: "w1".into(),
            labels: BTreeMap::new(),
            capacity: 10_000,
            namespaces: None,
        }),
        next(Command::RegisterWorker {
            name: "w2".into(),
            labels: BTreeMap::new(),
            capacity: 10_000,
            namespaces: None,
        }),
    ];
    let jobs = TASKS / SHARDS_PER_JOB;
    for j in 0..jobs {
        let mut spec = JobSpec::with_shards("bulk", SHARDS_PER_JOB);
        for (i, p) in spec.payloads.iter_mut().enumerate() {
            *p = ByteBuf::from(format!("{j}:{i}").into_bytes());
        }
        spec.idempotency_key = Some(format!("bulk-{j}"));
        entries.push(next(Command::SubmitJob(spec)));
    }
    sm_a.apply(entries).await.unwrap();
    let assign = |session, job: u64, range: std::ops::Range<u32>| Command::AssignTasks {
        assignments: range.map(|s| Assign { task: TaskKey::new(job, s), session }).collect(),
    };
    let e1 = next(assign(1, 1, 0..5_000));
    let t1 = e1.log_id.index;
    let e2 = next(assign(2, 2, 0..5_000));
    sm_a.apply([e1, e2]).await.unwrap();
    let mut reports = Vec::new();
    for s in 0..2_000u32 {
        reports.push(Command::CompleteTask {
            task: TaskKey::new(1, s),
            token: t1,
            result: ByteBuf::from(s.to_le_bytes().to_vec()),
            logs: Default::default(),
        });
    }
    reports.push(Command::FailTask {
        task: TaskKey::new(1, 2_000),
        token: t1,
        error: "x".into(),
        retryable: true,
        logs: Default::default(),
    });
    let batch = next(Command::Batch(reports));
    let cancel = next(Command::CancelJob { job: 3, reason: "test".into() });
    sm_a.apply([batch, cancel]).await.unwrap();
    println!("filled {TASKS} tasks in {:?}", t0.elapsed());
    assert_eq!(sm_a.read(|c, _| c.idx.live_tasks), (TASKS - SHARDS_PER_JOB - 2_000) as u64);

    // Build.
    reset_peak_rss();
    let base = peak_rss_mib();
    let t0 = Instant::now();
    let mut snap = sm_a.get_snapshot_builder().await.build_snapshot().await.unwrap();
    let build_time = t0.elapsed();
    let build_peak = peak_rss_mib();
    let size = snap.snapshot.metadata().await.unwrap().len();

    // Stream into the other store, as openraft would, and install.
    let (_log_b, mut sm_b) = open_store(dir_b.path()).unwrap();
    reset_peak_rss();
    let base_install = peak_rss_mib();
    let t0 = Instant::now();
    let mut recv = sm_b.begin_receiving_snapshot().await.unwrap();
    tokio::io::copy(&mut snap.snapshot, &mut *recv).await.unwrap();
    sm_b.install_snapshot(&snap.meta, recv).await.unwrap();
    let install_time = t0.elapsed();
    let install_peak = peak_rss_mib();

    let hash_a = sm_a.state_hash().unwrap().1;
    assert_eq!(hash_a, sm_b.state_hash().unwrap().1, "installed state differs");
    assert_eq!(sm_a.applied_state().await.unwrap(), sm_b.applied_state().await.unwrap());
    let canon_a = sm_a.read(|c, _| c.idx.canonical());
    assert_eq!(canon_a, sm_b.read(|c, _| c.idx.canonical()), "installed indexes differ");
    let current = sm_b.get_current_snapshot().await.unwrap().expect("installed snapshot is current");
    assert_eq!(current.meta, snap.meta);

    // The install is durable: reopen and compare again.
    drop(sm_b);
    drop(_log_b);
    let t0 = Instant::now();
    let (_log_b, sm_b) = open_store(dir_b.path()).unwrap();
    let reopen_time = t0.elapsed();
    assert_eq!(hash_a, sm_b.state_hash().unwrap().1, "state after reopen differs");
    assert_eq!(canon_a, sm_b.read(|c, _| c.idx.canonical()));

    println!(
        "snapshot of {TASKS} tasks: {:.1} MiB file; build {build_time:?} (peak RSS {build_peak:.0} MiB, +{:.0} over {base:.0}); \
         install {install_time:?} (peak RSS {install_peak:.0} MiB, +{:.0} over {base_install:.0}); reopen with index rebuild {reopen_time:?}",
        size as f64 / (1024.0 * 1024.0),
        build_peak - base,
        install_peak - base_install,
    );
}

/// A snapshot whose bytes were damaged in transit is refused, and the state
/// machine keeps its old state.
#[tokio::test]
async fn corrupt_snapshot_is_refused_and_changes_nothing() {
    let dir_a = tempfile::tempdir().unwrap();
    let dir_b = tempfile::tempdir().unwrap();
    let (_la, mut sm_a) = open_store(dir_a.path()).unwrap();
    let (_lb, mut sm_b) = open_store(dir_b.path()).unwrap();
    sm_a.apply([entry(1, Command::SubmitJob(JobSpec::with_shards("ns", 50)))]).await.unwrap();
    sm_b.apply([entry(1, Command::SubmitJob(JobSpec::with_shards("other", 3)))]).await.unwrap();
    let before = sm_b.state_hash().unwrap().1;
    let mut snap = sm_a.get_snapshot_builder().await.build_snapshot().await.unwrap();
    let mut bytes = Vec::new();
    tokio::io::AsyncReadExt::read_to_end(&mut snap.snapshot, &mut bytes).await.unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0xff;
    let mut recv = sm_b.begin_receiving_snapshot().await.unwrap();
    tokio::io::AsyncWriteExt::write_all(&mut *recv, &bytes).await.unwrap();
    let err = sm_b.install_snapshot(&snap.meta, recv).await.unwrap_err();
    println!("refused: {err}");
    assert_eq!(sm_b.state_hash().unwrap().1, before);
    drop(sm_b);
    drop(_lb);
    let (_lb, sm_b) = open_store(dir_b.path()).unwrap();
    assert_eq!(sm_b.state_hash().unwrap().1, before, "a failed install leaked into the reopened state");
}
