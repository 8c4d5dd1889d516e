//! raft-store benchmark: prints figures, asserts nothing about speed.
//!
//! `cargo bench -p baton-raft-store --bench store --profile dev`
//! (the dev profile builds this crate at opt-level 3 and reuses the RocksDB
//! build of the tests; `--release` works too, after its own RocksDB build).
//!
//! Reports:
//! - the disk's raw fsync latency, as context for everything else;
//! - fsynced append throughput for batches of 1, 16 and 256 entries;
//! - apply() throughput in task transitions/s, one command per entry and batched;
//! - Rust heap held by the in-memory indexes per pending task, after a reopen
//!   of a store holding 1,000,000 pending tasks.

use std::alloc::{GlobalAlloc, Layout, System};
use std::collections::BTreeMap;
use std::io::Write;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use baton_raft_store::*;
use openraft::storage::{RaftLogStorageExt, RaftStateMachine};
use openraft::{CommittedLeaderId, EntryPayload};

/// Counts live heap bytes, so index memory is measured exactly rather than
/// guessed from RSS (which also holds RocksDB's caches and freed pages).
struct Counting;
static LIVE: AtomicUsize = AtomicUsize::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        LIVE.fetch_add(l.size(), Ordering::Relaxed);
        unsafe { System.alloc(l) }
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        LIVE.fetch_sub(l.size(), Ordering::Relaxed);
        unsafe { System.dealloc(p, l) }
    }
    unsafe fn realloc(&self, p: *mut u8, l: Layout, new: usize) -> *mut u8 {
        LIVE.fetch_add(new, Ordering::Relaxed);
        LIVE.fetch_sub(l.size(), Ordering::Relaxed);
        unsafe { System.realloc(p, l, new) }
    }
}

#[global_allocator]
static ALLOC: Counting = Counting;

const APPLY_CHUNK: usize = 64;

fn entry(index: u64, cmd: Command) -> Entry {
    Entry {
        log_id: LogId::new(CommittedLeaderId::new(1, 1), index),
        payload: EntryPayload::Normal(Proposal { proposed_at_ms: 1_700_000_000_000 + index, cmd }),
    }
}

fn rss_mib() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1)?.parse::<f64>().ok())
        .map_or(0.0, |kb| kb / 1024.0)
}

fn fsync_latency() -> (Duration, Duration) {
    let dir = tempfile::tempdir().unwrap();
    let mut f = std::fs::File::create(dir.path().join("probe")).unwrap();
    let mut samples = Vec::new();
    for _ in 0..200 {
        f.write_all(&[7u8; 4096]).unwrap();
        let t = Instant::now();
        f.sync_data().unwrap();
        samples.push(t.elapsed());
    }
    samples.sort();
    (samples[samples.len() / 2], samples[samples.len() * 99 / 100])
}

async fn append_throughput(batch: usize) -> (f64, f64) {
    let dir = tempfile::tempdir().unwrap();
    let (mut log, _sm) = open_store(dir.path()).unwrap();
    let mut index = 0u64;
    let deadline = Instant::now() + Duration::from_secs(3);
    let start = Instant::now();
    let mut appends = 0u64;
    while Instant::now() < deadline {
        let entries: Vec<Entry> = (0..batch)
            .map(|_| {
                index += 1;
                entry(
                    index,
                    Command::CompleteTask {
                        task: TaskKey::new(index, 0),
                        token: index,
                        result: serde_bytes::ByteBuf::from(vec![1u8; 32]),
                        logs: Default::default(),
                    },
                )
            })
            .collect();
        log.blocking_append(entries).await.unwrap();
        appends += 1;
    }
    let secs = start.elapsed().as_secs_f64();
    (index as f64 / secs, appends as f64 / secs)
}

/// Submit `jobs` x 100k tasks and register enough workers to hold them all.
fn setup(jobs: u64) -> (Vec<Entry>, u64, u64) {
    let mut es = Vec::new();
    let mut idx = 0;
    let per_worker = limits::MAX_WORKER_CAPACITY as u64;
    let tasks = jobs * limits::MAX_SHARDS_PER_JOB as u64;
    let workers = tasks.div_ceil(per_worker);
    for w in 0..workers {
        idx += 1;
        es.push(entry(
            idx,
            Command::RegisterWorker {
                name: format!("w{w}"),
                labels: BTreeMap::new(),
                capacity: per_worker as u32,
                namespaces: None,
            },
        ));
    }
    for _ in 0..jobs {
        idx += 1;
        let mut spec = JobSpec::with_shards("bench", limits::MAX_SHARDS_PER_JOB);
        spec.max_attempts = 3;
        es.push(entry(idx, Command::SubmitJob(spec)));
    }
    (es, idx, tasks)
}

async fn apply_all(sm: &mut StateMachine, entries: Vec<Entry>) -> Duration {
    let t = Instant::now();
    let mut it = entries.into_iter().peekable();
    while it.peek().is_some() {
        let chunk: Vec<Entry> = it.by_ref().take(APPLY_CHUNK).collect();
        sm.apply(chunk).await.unwrap();
    }
    t.elapsed()
}

/// Assign then complete every task; returns (assign rate, complete rate) in transitions/s.
async fn apply_throughput(batched: bool) -> (f64, f64) {
    let dir = tempfile::tempdir().unwrap();
    let (_log, mut sm) = open_store(dir.path()).unwrap();
    let (setup_entries, mut idx, tasks) = setup(2);
    apply_all(&mut sm, setup_entries).await;
    let per_worker = limits::MAX_WORKER_CAPACITY as u64;
    let all: Vec<(TaskKey, u64)> =
        (0..tasks).map(|i| (TaskKey::new(1 + i / 100_000, (i % 100_000) as u32), 1 + i / per_worker)).collect();
    let group = if batched { 1000 } else { 1 };
    let mut assigns = Vec::new();
    let mut tokens = Vec::new();
    for chunk in all.chunks(group) {
        idx += 1;
        tokens.extend(chunk.iter().map(|_| idx));
        assigns.push(entry(
            idx,
            Command::AssignTasks { assignments: chunk.iter().map(|(t, s)| Assign { task: *t, session: *s }).collect() },
        ));
    }
    let assign_time = apply_all(&mut sm, assigns).await;
    let mut completes = Vec::new();
    let reports: Vec<Command> = all
        .iter()
        .zip(tokens)
        .map(|((t, _), token)| Command::CompleteTask {
            task: *t,
            token,
            result: serde_bytes::ByteBuf::from(vec![1u8; 16]),
            logs: Default::default(),
        })
        .collect();
    if batched {
        for chunk in reports.chunks(1000) {
            idx += 1;
            completes.push(entry(idx, Command::Batch(chunk.to_vec())));
        }
    } else {
        for c in reports {
            idx += 1;
            completes.push(entry(idx, c));
        }
    }
    let complete_time = apply_all(&mut sm, completes).await;
    assert_eq!(sm.read(|c, _| c.idx.live_tasks), 0, "every task completed");
    (tasks as f64 / assign_time.as_secs_f64(), tasks as f64 / complete_time.as_secs_f64())
}

async fn index_memory() -> (f64, usize) {
    let dir = tempfile::tempdir().unwrap();
    {
        let (_log, mut sm) = open_store(dir.path()).unwrap();
        let (entries, _, _) = setup(10);
        apply_all(&mut sm, entries).await;
    }
    let before = LIVE.load(Ordering::Relaxed);
    let (_log, sm) = open_store(dir.path()).unwrap();
    let held = LIVE.load(Ordering::Relaxed) - before;
    let pending: usize = sm.read(|c, _| c.idx.pending.values().map(|m| m.len()).sum());
    (held as f64 / pending as f64, pending)
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let filter: Vec<String> = std::env::args().skip(1).filter(|a| !a.starts_with('-')).collect();
    let want = |name: &str| filter.is_empty() || filter.iter().any(|f| name.contains(f.as_str()));
    println!("raft-store bench ({} cores)", std::thread::available_parallelism().map_or(0, |n| n.get()));
    let (p50, p99) = fsync_latency();
    println!("disk fsync (4 KiB write + fdatasync): p50 {p50:?}, p99 {p99:?}");
    if want("memory") {
        let (per_task, pending) = index_memory().await;
        println!("index memory: {per_task:.1} bytes of heap per pending task ({pending} pending, after reopen)");
        println!("process RSS after the memory phase: {:.0} MiB", rss_mib());
    }
    if want("append") {
        for batch in [1, 16, 256] {
            let (eps, aps) = append_throughput(batch).await;
            println!("fsynced append, batch {batch:>3}: {eps:>9.0} entries/s ({aps:.0} appends/s)");
        }
    }
    if want("apply") {
        let (a, c) = apply_throughput(false).await;
        println!("apply, one command per entry: assign {a:>9.0} transitions/s, complete {c:>9.0} transitions/s");
        let (a, c) = apply_throughput(true).await;
        println!(
            "apply, 1000 per entry (AssignTasks / Batch): assign {a:>9.0} transitions/s, complete {c:>9.0} transitions/s"
        );
    }
}
