//! Schedule fire lag on a real three-node cluster (loopback, fsync on):
//! `BENCH_SCHEDULES` (20) fixed-rate schedules firing every second, first on
//! a healthy cluster for `BENCH_SECS` (30) s, then for as long again while
//! the leader is killed every `BENCH_KILL_EVERY_SECS` (5) s and restarted.
//! Prints figures; asserts nothing about speed. Two lags per run:
//!
//! - **fire → run created**: the run's job creation time (the log time of
//!   the Fire entry, stamped by the leader that proposed it) minus its fire
//!   time. The entry commits about one single-client commit later.
//! - **fire → handler starts**: the worker's wall clock when its handler
//!   starts minus the fire time: the Fire commit, the AssignTasks commit and
//!   the push down the worker's stream. An upper bound of "fire → run
//!   committed".
//!
//! A fire time with two runs, or a run before its fire time, fails the run.
//!
//! `cargo bench -p baton-coordinator --bench schedules --profile dev`

#[path = "../tests/common/mod.rs"]
mod common;

use std::collections::BTreeMap;
use std::str::FromStr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use baton_client::proto::run_origin::Source;
use baton_client::{Client, ScheduleBuilder, TaskContext, Worker, proto};
use common::*;

fn env_or<T: FromStr>(name: &str, default: T) -> T {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

fn wall_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_millis() as u64
}

/// Handler start time (worker wall clock, ms) by job.
type Starts = Arc<Mutex<BTreeMap<u64, u64>>>;

fn start_worker(c: &Cluster, name: &str, starts: Starts) {
    let w = Worker::builder()
        .endpoints(c.endpoints())
        .name(name)
        .capacity(64)
        .handler(move |ctx: TaskContext| {
            let starts = starts.clone();
            async move {
                starts.lock().unwrap().entry(ctx.job_id).or_insert_with(wall_ms);
                Ok(Vec::new())
            }
        })
        .build()
        .unwrap();
    tokio::spawn(w.run(std::future::pending()));
}

fn pct(v: &mut [u64], p: f64) -> u64 {
    v.sort_unstable();
    v[((v.len() as f64 * p) as usize).min(v.len() - 1)]
}

/// Runs of namespace `ns` as (job, fire_ms, created_ms), checked for one run per fire time.
async fn runs(cl: &Client, ns: &str) -> Vec<(u64, u64, u64)> {
    let mut out = Vec::new();
    let mut seen = BTreeMap::new();
    let mut token = 0;
    loop {
        let page = cl
            .list(proto::ListJobsRequest {
                namespace: ns.into(),
                page_size: 1000,
                page_token: token,
                ..Default::default()
            })
            .await
            .unwrap();
        for j in page.jobs {
            let Some(Source::Schedule(o)) = j.run_origin.as_ref().and_then(|o| o.source.as_ref()) else { continue };
            if let Some(other) = seen.insert((o.schedule_id, o.fire_ms), j.id) {
                panic!("schedule {} fire {} has two runs: {other} and {}", o.schedule_id, o.fire_ms, j.id);
            }
            assert!(j.created_ms >= o.fire_ms, "job {} created before its fire time", j.id);
            out.push((j.id, o.fire_ms, j.created_ms));
        }
        if page.next_page_token == 0 {
            return out;
        }
        token = page.next_page_token;
    }
}

async fn phase(
    c: &mut Cluster,
    cl: &Client,
    starts: &Starts,
    name: &str,
    n: usize,
    secs: u64,
    kill_every: Option<u64>,
) {
    let mut ids = Vec::new();
    for i in 0..n {
        let spec = ScheduleBuilder::every(name, &format!("s{i}"), Duration::from_secs(1))
            .job(proto::JobSpec { shards: 1, attempt_timeout_ms: 60_000, ..Default::default() })
            .overlap(proto::OverlapPolicy::Allow)
            .misfire_fire_all(1000)
            .build();
        ids.push(cl.create_schedule(spec).await.unwrap().schedule_id);
    }
    let start = Instant::now();
    let mut kills = 0;
    while start.elapsed() < Duration::from_secs(secs) {
        match kill_every {
            Some(every) => {
                tokio::time::sleep(Duration::from_secs(every)).await;
                let leader = c.wait_leader(Duration::from_secs(20)).await;
                c.kill(leader);
                kills += 1;
                let others = c.live();
                c.wait_leader_among(&others, Duration::from_secs(20)).await;
                c.spawn(leader, true);
            }
            None => tokio::time::sleep(Duration::from_millis(200)).await,
        }
    }
    c.wait_leader(Duration::from_secs(20)).await;
    for id in &ids {
        cl.pause_schedule(*id).await.unwrap();
    }
    // Give the last runs time to reach a worker.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let runs = runs(cl, name).await;
    let starts = starts.lock().unwrap().clone();
    let mut created: Vec<u64> = runs.iter().map(|(_, f, cr)| cr - f).collect();
    let mut handled: Vec<u64> =
        runs.iter().filter_map(|(j, f, _)| starts.get(j).map(|s| s.saturating_sub(*f))).collect();
    let kills = if kill_every.is_some() { format!(", {kills} leader kills") } else { String::new() };
    println!("{name}: {n} schedules x 1 s for {secs} s{kills}: {} runs, one per fire time", runs.len());
    println!(
        "  fire -> run created     p50 {:>5} ms  p99 {:>5} ms  max {:>5} ms  (log, n={})",
        pct(&mut created, 0.5),
        pct(&mut created, 0.99),
        pct(&mut created, 1.0),
        created.len()
    );
    println!(
        "  fire -> handler starts  p50 {:>5} ms  p99 {:>5} ms  max {:>5} ms  (worker wall clock, n={})",
        pct(&mut handled, 0.5),
        pct(&mut handled, 0.99),
        pct(&mut handled, 1.0),
        handled.len()
    );
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let n: usize = env_or("BENCH_SCHEDULES", 20);
    let secs: u64 = env_or("BENCH_SECS", 30);
    let kill_every: u64 = env_or("BENCH_KILL_EVERY_SECS", 5);
    let mut c = Cluster::start(3, Opts::default());
    let fsync = fsync_probe(c.dir.path(), 200);
    println!("baton schedule fire lag bench: 3 nodes on loopback, fsync on, SDK workers in-process");
    println!(
        "load average {}; disk fsync (4 KiB write + fdatasync) p50 {:.3} ms, p99 {:.3} ms",
        load_average(),
        pct(&mut fsync.iter().map(|d| d.as_micros() as u64).collect::<Vec<_>>(), 0.5) as f64 / 1e3,
        pct(&mut fsync.iter().map(|d| d.as_micros() as u64).collect::<Vec<_>>(), 0.99) as f64 / 1e3,
    );
    c.wait_leader(Duration::from_secs(15)).await;
    let cl = Client::connect(c.endpoints()).unwrap();
    let starts = Starts::default();
    start_worker(&c, "w1", starts.clone());
    start_worker(&c, "w2", starts.clone());
    phase(&mut c, &cl, &starts, "healthy", n, secs, None).await;
    phase(&mut c, &cl, &starts, "failover", n, secs, Some(kill_every)).await;
    println!("load average at the end {}", load_average());
}
