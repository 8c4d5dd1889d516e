//! Workflow benchmark: a real three-node cluster on loopback, fsync on, SDK
//! workers and clients in this process. Prints figures and asserts nothing
//! about speed; a wrong reduce result or a workflow that does not succeed
//! fails the run.
//!
//! `cargo bench -p baton-coordinator --bench workflows --profile dev`
//!
//! - map-reduce: one workflow whose one step has `BENCH_SHARDS` (10,000)
//!   shards and a reduce. `BENCH_WORKERS` (4) SDK workers of `BENCH_CAPACITY`
//!   (64) slots return a number per shard; the reduce reads every shard's
//!   result page by page with `ctx.reduce_input()` and sums them;
//! - chain: one workflow of `BENCH_CHAIN` (100) sequential one-shard steps
//!   with a handler that returns at once: the latency each step adds;
//! - submit throughput: `BENCH_SUBMITTERS` (8) SDK clients submitting 3-step
//!   workflows for `BENCH_SUBMIT_SECS` (10) s, one at a time each, no workers.
//!
//! A quick run: `BENCH_SHARDS=1000 BENCH_CHAIN=20 BENCH_SUBMIT_SECS=3`.

#[path = "../tests/common/mod.rs"]
mod common;

use std::str::FromStr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use baton_client::workflow::{Step, WorkflowBuilder};
use baton_client::{Client, Error, TaskContext, TaskError, Worker, WorkerStats, proto};
use common::*;
use futures::StreamExt;
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// Namespace of every workflow here.
const NS: &str = "bench";
/// The map-reduce workflow's step; chain steps have other names.
const MAP_STEP: &str = "map";
/// Longest wait for one workflow to finish before the run fails.
const WORKFLOW_TIMEOUT: Duration = Duration::from_secs(900);

fn env_or<T: FromStr>(name: &str, default: T) -> T {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

/// What map shard `i` returns: a number the reduce sums. Mixed, so that a
/// result read from the wrong shard, twice or not at all changes the sum.
fn shard_value(i: u32) -> u64 {
    let mut z = u64::from(i).wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    (z ^ (z >> 31)) % 1_000_000_007
}

/// The reduce's result: how many shard results it read, and their sum.
fn reduce_result(count: u32, sum: u64) -> Vec<u8> {
    format!("{count} {sum}").into_bytes()
}

/// What the handlers saw, for the figures the cluster does not record.
#[derive(Default)]
struct Seen {
    /// Chain steps: (workflow, step, when its handler started, and the same
    /// on the wall clock in µs, to compare with the log's ms stamps).
    chain: Vec<(u64, String, Instant, u64)>,
    /// The reduce's last attempt: when it started and how long it read.
    reduce: Option<(Instant, Duration)>,
}

type Shared = Arc<Mutex<Seen>>;

fn task_error(e: Error) -> TaskError {
    if e.is_retryable() { TaskError::retryable(e) } else { TaskError::fatal(e) }
}

async fn handle(ctx: TaskContext, seen: Shared) -> Result<Vec<u8>, TaskError> {
    let w = ctx.workflow().ok_or_else(|| TaskError::fatal("not a workflow shard"))?;
    match proto::StepRole::try_from(w.role) {
        Ok(proto::StepRole::Map) if w.step == MAP_STEP => Ok(shard_value(ctx.shard).to_string().into_bytes()),
        Ok(proto::StepRole::Map) => {
            let wall_us = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_micros() as u64;
            seen.lock().unwrap().chain.push((w.workflow_id, w.step.clone(), Instant::now(), wall_us));
            Ok(Vec::new())
        }
        Ok(proto::StepRole::Reduce) => reduce(&ctx, &seen).await,
        _ => Err(TaskError::fatal(format!("unexpected role {}", w.role))),
    }
}

/// Sum every map result, streamed in shard order. Anything unexpected
/// (a gap, a shard not succeeded, a result that is not a number) is fatal:
/// the step fails and so does the run.
async fn reduce(ctx: &TaskContext, seen: &Mutex<Seen>) -> Result<Vec<u8>, TaskError> {
    let started = Instant::now();
    let (mut count, mut sum) = (0u32, 0u64);
    let mut input = Box::pin(ctx.reduce_input());
    while let Some(r) = input.next().await {
        let r = r.map_err(task_error)?;
        if r.shard != count {
            return Err(TaskError::fatal(format!("reduce input: shard {} where {count} was expected", r.shard)));
        }
        if r.status != proto::TaskStatus::Succeeded as i32 {
            return Err(TaskError::fatal(format!("reduce input: shard {} has status {}", r.shard, r.status)));
        }
        let v: u64 = std::str::from_utf8(&r.result)
            .ok()
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| TaskError::fatal(format!("reduce input: shard {} result {:?}", r.shard, r.result)))?;
        sum += v;
        count += 1;
    }
    seen.lock().unwrap().reduce = Some((started, started.elapsed()));
    Ok(reduce_result(count, sum))
}

struct Workers {
    stop: watch::Sender<bool>,
    runs: Vec<JoinHandle<Result<WorkerStats, Error>>>,
}

fn start_workers(c: &Cluster, n: usize, capacity: u32, seen: &Shared) -> Workers {
    let (stop, rx) = watch::channel(false);
    let mut runs = Vec::new();
    for i in 0..n {
        let seen = seen.clone();
        let w = Worker::builder()
            .endpoints(c.endpoints())
            .name(format!("bench-{i}"))
            .capacity(capacity)
            .handler(move |ctx| handle(ctx, seen.clone()))
            .build()
            .unwrap();
        let mut rx = rx.clone();
        runs.push(tokio::spawn(w.run(async move {
            let _ = rx.wait_for(|s| *s).await;
        })));
    }
    Workers { stop, runs }
}

impl Workers {
    async fn stop(self) -> WorkerStats {
        let _ = self.stop.send(true);
        let mut total = WorkerStats::default();
        for r in self.runs {
            let s = r.await.unwrap().unwrap();
            total.completed += s.completed;
            total.failed += s.failed;
            total.fenced += s.fenced;
            total.abandoned += s.abandoned;
        }
        total
    }
}

/// Wait until the cluster lists exactly `n` workers.
async fn wait_workers(client: &Client, n: usize) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let live = client.list_workers().await.map(|w| w.len()).unwrap_or(usize::MAX);
        if live == n {
            return;
        }
        assert!(Instant::now() < deadline, "{live} workers listed, {n} expected");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Watch a workflow until it finishes; `on_event` sees every state with
/// the time since `t0`. Returns when the finished state was seen.
async fn watch_until_done(
    c: &Cluster,
    client: &Client,
    id: u64,
    t0: Instant,
    mut on_event: impl FnMut(&proto::Workflow, Duration),
) -> Duration {
    let watch = async {
        let mut events = Box::pin(client.watch_workflow(id));
        while let Some(ev) = events.next().await {
            let Some(w) = ev.unwrap().workflow else { continue };
            let at = t0.elapsed();
            on_event(&w, at);
            if w.finished_ms != 0 {
                return at;
            }
        }
        panic!("the watch of workflow {id} ended before it finished\n{}", c.logs())
    };
    match tokio::time::timeout(WORKFLOW_TIMEOUT, watch).await {
        Ok(at) => at,
        Err(_) => panic!("workflow {id} not finished within {WORKFLOW_TIMEOUT:?}\n{}", c.logs()),
    }
}

/// The finished workflow, which must have succeeded.
async fn succeeded(c: &Cluster, client: &Client, id: u64) -> proto::Workflow {
    let w = client.get_workflow(id).await.unwrap();
    if w.status != proto::WorkflowStatus::Succeeded as i32 {
        let steps: Vec<String> =
            w.steps.iter().filter(|s| !s.reason.is_empty()).map(|s| format!("{}: {}", s.name, s.reason)).collect();
        panic!("workflow {id} finished with status {}: {steps:?}\n{}", w.status, c.logs());
    }
    w
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn pct<T: Copy + Ord>(v: &mut [T], p: f64) -> T {
    v.sort();
    v[((v.len() as f64 * p) as usize).min(v.len() - 1)]
}

async fn map_reduce(c: &Cluster, client: &Client, seen: &Shared, shards: u32) {
    let job = proto::JobSpec { shards, attempt_timeout_ms: 600_000, ..Default::default() };
    let spec = WorkflowBuilder::new(NS, "map-reduce")
        .step(Step::job(MAP_STEP, job).reduce(b"sum".to_vec()))
        .result_step(MAP_STEP)
        .build();
    let t0 = Instant::now();
    let id = client.submit_workflow(spec).await.unwrap().workflow_id;
    let acked = t0.elapsed();
    let mut map_seen = None;
    let done = watch_until_done(c, client, id, t0, |w, at| {
        if map_seen.is_none() && w.steps[0].phase == proto::StepRole::Reduce as i32 {
            map_seen = Some(at);
        }
    })
    .await;
    let w = succeeded(c, client, id).await;
    let step = &w.steps[0];
    let map = client.get(step.map_job_id).await.unwrap();
    let red = client.get(step.reduce_job_id).await.unwrap();

    let want: u64 = (0..shards).map(shard_value).sum();
    let got = client.workflow_result(id).await.unwrap();
    assert_eq!(
        String::from_utf8_lossy(&got.result),
        String::from_utf8_lossy(&reduce_result(shards, want)),
        "workflow {id}: the reduce's result (\"shards sum\") differs from the reference"
    );

    // Log time (leader clock, ms): created -> map job finished -> reduce job finished.
    let (created, map_done, red_done) = (w.created_ms, map.finished_ms, red.finished_ms);
    let map_seen = map_seen.unwrap_or(done);
    println!("map-reduce: {shards} shards + 1 reduce, result equals the reference ({want})");
    println!("  submit acknowledged            {:>9.1} ms (client)", ms(acked));
    println!(
        "  submit -> map done             {:>9} ms (log)   {:>9.1} ms (client: watch shows the reduce)",
        map_done - created,
        ms(map_seen)
    );
    println!(
        "  map done -> reduce committed   {:>9} ms (log)   {:>9.1} ms (client)",
        red_done - map_done,
        ms(done - map_seen)
    );
    if let Some((started, read)) = seen.lock().unwrap().reduce {
        println!(
            "    of which the reduce handler  {:>9.1} ms reading {shards} results in {} pages (started {:.1} ms after submit)",
            ms(read),
            shards.div_ceil(baton_client::worker::REDUCE_INPUT_PAGE_SHARDS),
            ms(started.saturating_duration_since(t0))
        );
    }
    println!("  total                          {:>9} ms (log)   {:>9.1} ms (client)", red_done - created, ms(done));
    println!(
        "  map throughput                 {:>9.0} shards/s (log)",
        f64::from(shards) * 1e3 / (map_done - created).max(1) as f64
    );
}

async fn chain(c: &Cluster, client: &Client, seen: &Shared, n: usize) {
    let name = |i: usize| format!("s{i:04}");
    let mut b = WorkflowBuilder::new(NS, "chain");
    for i in 0..n {
        let job = proto::JobSpec { shards: 1, ..Default::default() };
        let mut s = Step::job(name(i), job);
        if i > 0 {
            s = s.depends_on([name(i - 1)]);
        }
        b = b.step(s);
    }
    let t0 = Instant::now();
    let id = client.submit_workflow(b.build()).await.unwrap().workflow_id;
    let acked = t0.elapsed();
    let done = watch_until_done(c, client, id, t0, |_, _| {}).await;
    let w = succeeded(c, client, id).await;

    // Log time: each step's finish minus its predecessor's (the first: minus
    // the workflow's creation); split at the step's start.
    let (mut added, mut ready, mut run) = (Vec::new(), Vec::new(), Vec::new());
    let mut prev = w.created_ms;
    for s in &w.steps {
        added.push(s.finished_ms - prev);
        ready.push(s.started_ms - prev);
        run.push(s.finished_ms - s.started_ms);
        prev = s.finished_ms;
    }
    // Worker side: one handler start to the next, microsecond clock.
    let mut starts: Vec<(String, Instant, u64)> = seen
        .lock()
        .unwrap()
        .chain
        .iter()
        .filter(|(wf, ..)| *wf == id)
        .map(|(_, s, t, wall)| (s.clone(), *t, *wall))
        .collect();
    starts.sort();
    assert_eq!(starts.len(), n, "workflow {id}: {} chain handlers ran, {n} steps", starts.len());
    let mut gaps: Vec<Duration> = starts.windows(2).map(|p| p[1].1 - p[0].1).collect();
    // The step's span split at its handler's start. The log's stamps are the
    // leader's wall clock in whole ms when the entry was proposed (this
    // machine's clock too): the first part is over by up to 1 ms, the second
    // under by as much.
    let (mut to_handler, mut to_report) = (Vec::new(), Vec::new());
    for (s, (_, _, wall_us)) in w.steps.iter().zip(&starts) {
        to_handler.push(*wall_us as i64 - s.started_ms as i64 * 1000);
        to_report.push(s.finished_ms as i64 * 1000 - *wall_us as i64);
    }
    let us = |v: i64| v as f64 / 1e3;

    println!("chain: {n} sequential one-shard steps, trivial handler");
    println!("  submit acknowledged                    {:>8.1} ms (client)", ms(acked));
    println!(
        "  added per step (finish -> next finish) p50 {:>4} ms  p99 {:>4} ms  max {:>4} ms  (log, n={n})",
        pct(&mut added, 0.5),
        pct(&mut added, 0.99),
        added.last().unwrap()
    );
    println!(
        "    predecessor finish -> step start     p50 {:>4} ms  p99 {:>4} ms  (log)",
        pct(&mut ready, 0.5),
        pct(&mut ready, 0.99)
    );
    println!(
        "    step start -> step finish            p50 {:>4} ms  p99 {:>4} ms  (log)",
        pct(&mut run, 0.5),
        pct(&mut run, 0.99)
    );
    println!(
        "      step start -> handler starts       p50 {:>6.2} ms  p99 {:>6.2} ms  (log start vs worker wall clock)",
        us(pct(&mut to_handler, 0.5)),
        us(pct(&mut to_handler, 0.99))
    );
    println!(
        "      handler starts -> step finish      p50 {:>6.2} ms  p99 {:>6.2} ms  (worker wall clock vs log finish)",
        us(pct(&mut to_report, 0.5)),
        us(pct(&mut to_report, 0.99))
    );
    if !gaps.is_empty() {
        println!(
            "  handler start -> next handler start    p50 {:>6.2} ms  p99 {:>6.2} ms  max {:>6.2} ms  (worker, n={})",
            ms(pct(&mut gaps, 0.5)),
            ms(pct(&mut gaps, 0.99)),
            ms(*gaps.last().unwrap()),
            gaps.len()
        );
    }
    println!(
        "  total                                  {:>8} ms (log)  {:>8.1} ms (client: submit -> watch shows finished), {:.2} ms per step",
        w.finished_ms - w.created_ms,
        ms(done),
        ms(done) / n as f64
    );
}

async fn submit_throughput(c: &Cluster, submitters: usize, secs: u64) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    let start = Instant::now();
    let mut tasks = Vec::new();
    for k in 0..submitters {
        let client = Client::connect(c.endpoints()).unwrap();
        tasks.push(tokio::spawn(async move {
            let (mut lat, mut errors) = (Vec::new(), Vec::new());
            let mut i = 0u64;
            while Instant::now() < deadline {
                let job = || proto::JobSpec { shards: 1, ..Default::default() };
                let spec = WorkflowBuilder::new(NS, format!("small-{k}-{i}"))
                    .step(Step::job("a", job()))
                    .step(Step::job("b", job()).depends_on(["a"]))
                    .step(Step::job("c", job()).depends_on(["b"]))
                    .build();
                i += 1;
                let t = Instant::now();
                match client.submit_workflow(spec).await {
                    Ok(_) => lat.push(t.elapsed()),
                    Err(e) => errors.push(e.to_string()),
                }
            }
            (lat, errors)
        }));
    }
    let (mut lat, mut errors) = (Vec::new(), Vec::new());
    for t in tasks {
        let (l, e) = t.await.unwrap();
        lat.extend(l);
        errors.extend(e);
    }
    let elapsed = start.elapsed();
    println!("submit throughput: {submitters} clients, one 3-step workflow per request, {secs} s, no workers");
    println!(
        "  {:.0} workflows/s ({} acknowledged in {:.1} s), {} errors",
        lat.len() as f64 / elapsed.as_secs_f64(),
        lat.len(),
        elapsed.as_secs_f64(),
        errors.len()
    );
    if !lat.is_empty() {
        println!(
            "  submit latency p50 {:.2} ms  p99 {:.2} ms  max {:.2} ms",
            ms(pct(&mut lat, 0.5)),
            ms(pct(&mut lat, 0.99)),
            ms(*lat.last().unwrap())
        );
    }
    assert!(errors.is_empty(), "{} submits failed; first: {}", errors.len(), errors[0]);
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let nodes: u64 = env_or("BENCH_NODES", 3);
    let shards: u32 = env_or("BENCH_SHARDS", 10_000);
    let n_workers: usize = env_or("BENCH_WORKERS", 4);
    let capacity: u32 = env_or("BENCH_CAPACITY", 64);
    let chain_len: usize = env_or("BENCH_CHAIN", 100);
    let submitters: usize = env_or("BENCH_SUBMITTERS", 8);
    let submit_secs: u64 = env_or("BENCH_SUBMIT_SECS", 10);

    let c = Cluster::start(nodes, Opts::default());
    let mut fsync = fsync_probe(c.dir.path(), 200);
    println!("baton workflow bench: {nodes} nodes on loopback, fsync on, workers and clients in-process");
    println!(
        "load average {}; disk fsync (4 KiB write + fdatasync) p50 {:.3} ms, p99 {:.3} ms",
        load_average(),
        ms(pct(&mut fsync, 0.5)),
        ms(pct(&mut fsync, 0.99))
    );
    c.wait_leader(Duration::from_secs(15)).await;
    let client = Client::connect(c.endpoints()).unwrap();

    let seen = Shared::default();
    let workers = start_workers(&c, n_workers, capacity, &seen);
    wait_workers(&client, n_workers).await;
    println!("{n_workers} SDK workers of capacity {capacity}");
    map_reduce(&c, &client, &seen, shards).await;
    chain(&c, &client, &seen, chain_len).await;
    let stats = workers.stop().await;
    println!(
        "workers: {} completed, {} failed, {} fenced, {} abandoned",
        stats.completed, stats.failed, stats.fenced, stats.abandoned
    );
    wait_workers(&client, 0).await;

    submit_throughput(&c, submitters, submit_secs).await;
    println!("load average at the end {}", load_average());
}
