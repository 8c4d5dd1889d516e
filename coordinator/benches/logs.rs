//! Task log benchmark: task lifecycle throughput on a real three-node
//! cluster (loopback, fsync on) with handlers that log nothing, against
//! handlers that log one line and `BENCH_LOG_LINES` (10) lines per task
//! through their context (one line separates the cost of a log command from
//! the cost of its lines). Prints figures, with the CPU time the nodes and
//! this process used; asserts nothing about speed. A shard that does not
//! succeed, or a stored log that misses lines, fails the run.
//!
//! `cargo bench -p baton-coordinator --bench logs --profile dev`
//!
//! Each round starts a fresh cluster per mode (so neither inherits the
//! other's RocksDB), starts `BENCH_WORKERS` (4) SDK workers of
//! `BENCH_CAPACITY` (64) slots, then submits `BENCH_TASKS` (100,000) tasks
//! as jobs of `BENCH_SHARDS_PER_JOB` (1,000) shards and times first submit
//! → last job finished. Modes alternate over `BENCH_ROUNDS` (3) rounds, so a
//! change in the machine's load hits both. Rounds of 20,000 tasks (about a
//! second) varied by ±15% from one to the next; 100,000 take about 5 s.
//! `BENCH_ONLY=N` runs the mode of N lines alone, for a profiler.

#[path = "../tests/common/mod.rs"]
mod common;
#[path = "support/throughput.rs"]
mod throughput;

use std::time::Duration;

use baton_client::{Client, TaskContext, Worker, WorkerStats, proto};
use common::*;
use throughput::*;
use tokio::sync::watch;
use tokio::task::JoinHandle;

const NS: &str = "logbench";

#[derive(Clone, Copy)]
struct Setup {
    tasks: u32,
    shards_per_job: u32,
    workers: usize,
    capacity: u32,
    lines: u32,
}

/// A typical line: what was done, with a few values (about 55 bytes).
fn line(i: u32, shard: u32) -> String {
    format!("step {i} of shard {shard}: processed {} records in {} ms", 1000 + i, 3 + i)
}

async fn handle(ctx: TaskContext, lines: u32) -> Result<Vec<u8>, baton_client::TaskError> {
    for i in 0..lines {
        // The text of `line`, formatted straight into the task log.
        ctx.info(format_args!("step {i} of shard {}: processed {} records in {} ms", ctx.shard, 1000 + i, 3 + i));
    }
    Ok(Vec::new())
}

/// Bytes one task's lines take as the worker sends them: raw, and as sent.
fn chunk_bytes(lines: u32) -> (usize, usize) {
    let lines: Vec<proto::LogLine> = (0..lines)
        .map(|i| proto::LogLine {
            at_ms: 1_764_400_000_000 + u64::from(i),
            level: proto::LogLevel::Info as i32,
            message: line(i, 17),
        })
        .collect();
    let raw = lines.iter().map(|l| 11 + l.message.len()).sum();
    (raw, baton_client::worker::encode_chunk(&lines).map_or(0, |c| c.data.len()))
}

fn start_workers(c: &Cluster, s: Setup, lines: u32) -> (watch::Sender<bool>, Vec<JoinHandle<WorkerStats>>) {
    let workers = (0..s.workers)
        .map(|i| {
            Worker::builder()
                .endpoints(c.endpoints())
                .name(format!("bench-{i}"))
                .capacity(s.capacity)
                .handler(move |ctx| handle(ctx, lines))
                .build()
                .unwrap()
        })
        .collect();
    spawn_workers(workers)
}

struct Round {
    elapsed: Duration,
    stats: WorkerStats,
    /// CPU seconds the three nodes and this process (workers, client) used.
    nodes_cpu: f64,
    local_cpu: f64,
}

/// CPU seconds (user + system) process `pid` has used so far.
fn cpu_secs(pid: &str) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command name, which is in parentheses.
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let f: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15, in clock ticks (100 per second);
    // `rest` starts at field 3.
    let field = |n: usize| f.get(n - 3).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
    (field(14) + field(15)) as f64 / 100.0
}

fn nodes_cpu(c: &Cluster) -> f64 {
    c.procs.values().map(|p| cpu_secs(&p.id().to_string())).sum()
}

/// One mode on a fresh cluster: tasks per second from the first submit to
/// the last job finished.
async fn round(s: Setup, lines: u32) -> Round {
    let c = Cluster::start(3, Opts::default());
    c.wait_leader(Duration::from_secs(15)).await;
    let client = Client::connect(c.endpoints()).unwrap();
    let (stop, runs) = start_workers(&c, s, lines);
    wait_workers(&client, s.workers).await;
    let (nodes0, local0) = (nodes_cpu(&c), cpu_secs("self"));
    let (elapsed, finished) = run_jobs(&client, NS, s.tasks, s.shards_per_job).await;
    let (nodes_cpu, local_cpu) = (nodes_cpu(&c) - nodes0, cpu_secs("self") - local0);
    for (id, j) in &finished {
        assert_eq!(j.status, proto::JobStatus::Succeeded as i32, "job {id}: {j:?}\n{}", c.logs());
    }
    if lines > 0 {
        // Sanity: the last shard's lines were stored.
        let (id, j) = finished.last().unwrap();
        let logs = client.task_logs(*id, j.shards - 1, None).await.unwrap();
        let n: usize = logs.logs.iter().map(|r| r.lines.len()).sum();
        assert_eq!(n, lines as usize, "job {id} shard {}: {logs:?}", j.shards - 1);
    }
    let _ = stop.send(true);
    let mut stats = WorkerStats::default();
    for r in runs {
        let w = r.await.unwrap();
        stats.completed += w.completed;
        stats.failed += w.failed;
        stats.fenced += w.fenced;
        stats.abandoned += w.abandoned;
        stats.log_lines_dropped += w.log_lines_dropped;
    }
    Round { elapsed, stats, nodes_cpu, local_cpu }
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let s = Setup {
        tasks: env_or("BENCH_TASKS", 100_000),
        shards_per_job: env_or("BENCH_SHARDS_PER_JOB", 1_000),
        workers: env_or("BENCH_WORKERS", 4),
        capacity: env_or("BENCH_CAPACITY", 64),
        lines: env_or("BENCH_LOG_LINES", 10),
    };
    let rounds: usize = env_or("BENCH_ROUNDS", 3);
    let dir = tempfile::tempdir().unwrap();
    let mut fsync = fsync_probe(dir.path(), 200);
    fsync.sort();
    println!("baton task log bench: 3 nodes on loopback, fsync on, SDK workers in-process");
    println!(
        "load average {}; disk fsync (4 KiB write + fdatasync) p50 {:.3} ms, p99 {:.3} ms",
        load_average(),
        fsync[fsync.len() / 2].as_secs_f64() * 1e3,
        fsync[fsync.len() * 99 / 100].as_secs_f64() * 1e3
    );
    println!(
        "{} tasks per round in jobs of {} shards; {} workers x {} slots; handlers return at once",
        s.tasks, s.shards_per_job, s.workers, s.capacity
    );
    for n in [1, s.lines] {
        let (raw, sent) = chunk_bytes(n);
        println!("{n:>2} lines/task: {raw} bytes encoded, {sent} as sent (LZ4 when smaller)");
    }
    // `BENCH_ONLY=N` runs only the mode of N lines per task: one mode per
    // process, to profile it alone.
    let modes: Vec<u32> = match std::env::var("BENCH_ONLY").ok().and_then(|v| v.parse().ok()) {
        Some(n) => vec![n],
        None => vec![0, 1, s.lines],
    };
    let mut rates: Vec<Vec<f64>> = vec![Vec::new(); modes.len()];
    for r in 0..rounds {
        // Every other round runs the modes in reverse: a drift within a
        // round (the page cache writing back the last cluster's files)
        // then weighs on each mode alike.
        let order: Vec<usize> = if r % 2 == 0 { (0..modes.len()).collect() } else { (0..modes.len()).rev().collect() };
        for m in order {
            let lines = modes[m];
            let out = round(s, lines).await;
            let rate = f64::from(s.tasks) / out.elapsed.as_secs_f64();
            println!(
                "round {r}: {:>2} lines/task  {:>8.0} tasks/s  ({:.2} s; CPU: nodes {:.2} s, workers+client {:.2} s; completed {}, failed {}, fenced {}, log lines dropped {}; load {})",
                lines,
                rate,
                out.elapsed.as_secs_f64(),
                out.nodes_cpu,
                out.local_cpu,
                out.stats.completed,
                out.stats.failed,
                out.stats.fenced,
                out.stats.log_lines_dropped,
                load_average()
            );
            rates[m].push(rate);
        }
    }
    let base = median(&mut rates[0]);
    for (m, lines) in modes.iter().enumerate().skip(1) {
        let r = median(&mut rates[m]);
        println!(
            "median: {lines:>2} lines/task {r:.0} tasks/s against {base:.0} without logs: {:.1}%",
            100.0 * r / base
        );
    }
    println!("load average at the end {}", load_average());
}
