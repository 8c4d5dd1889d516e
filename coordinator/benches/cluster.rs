//! Cluster benchmark: a real three-node cluster on loopback, fsync on, load
//! generator in this process. Prints figures; asserts nothing about speed.
//!
//! `cargo bench -p baton-coordinator --bench cluster --profile dev`
//!
//! - commit latency, one client: SubmitJob acknowledged (fsynced on a majority);
//! - dispatch: submit acknowledged -> the worker receives the assignment;
//! - failover: SIGKILL of the leader -> first acknowledged submit.

#[path = "../tests/common/mod.rs"]
mod common;

use std::time::{Duration, Instant};

use baton_client::proto;
use common::*;

const COMMITS: usize = 2_000;
const DISPATCHES: usize = 500;
const KILLS: usize = 10;

fn pct(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 * p) as usize).min(sorted.len() - 1)]
}

fn report(name: &str, mut v: Vec<Duration>) {
    v.sort();
    println!(
        "{name:<28} n={:<5} p50 {:>9.3} ms  p99 {:>9.3} ms  p99.9 {:>9.3} ms  max {:>9.3} ms",
        v.len(),
        pct(&v, 0.50).as_secs_f64() * 1e3,
        pct(&v, 0.99).as_secs_f64() * 1e3,
        pct(&v, 0.999).as_secs_f64() * 1e3,
        v.last().unwrap().as_secs_f64() * 1e3
    );
}

async fn commit_latency(c: &Cluster) -> Vec<Duration> {
    let leader = c.wait_leader(Duration::from_secs(10)).await;
    let mut client = c.jobs(leader).await;
    let mut out = Vec::with_capacity(COMMITS);
    for i in 0..COMMITS + 200 {
        let t = Instant::now();
        client.submit_job(proto::SubmitJobRequest { spec: Some(spec("bench", 1, &format!("c{i}"))) }).await.unwrap();
        if i >= 200 {
            out.push(t.elapsed());
        }
    }
    out
}

async fn dispatch_latency(c: &Cluster) -> Vec<Duration> {
    let leader = c.wait_leader(Duration::from_secs(10)).await;
    let worker = TestWorker::start(vec![c.api(leader)], "bench-worker", 10_000, Duration::from_millis(1));
    while worker.session.lock().unwrap().is_none() {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let mut client = c.jobs(leader).await;
    let mut out = Vec::with_capacity(DISPATCHES);
    for i in 0..DISPATCHES {
        let r = client
            .submit_job(proto::SubmitJobRequest { spec: Some(spec("dispatch", 1, &format!("d{i}"))) })
            .await
            .unwrap()
            .into_inner();
        let acked = Instant::now();
        loop {
            if let Some((_, _, _, at)) = worker.assigned().into_iter().find(|(j, _, _, _)| *j == r.job_id) {
                out.push(at.saturating_duration_since(acked));
                break;
            }
            tokio::time::sleep(Duration::from_micros(200)).await;
        }
    }
    out
}

async fn failover(c: &mut Cluster) -> Vec<Duration> {
    let mut out = Vec::new();
    for k in 0..KILLS {
        // Each kill starts from a settled cluster: every node knows the
        // leader and has applied the same index.
        let leader = settled(c).await;
        let killed = Instant::now();
        c.kill(leader);
        let mut n = 0usize;
        loop {
            let live = c.live();
            let id = live[n % live.len()];
            n += 1;
            let ch = tonic::transport::Endpoint::from_shared(c.api(id))
                .unwrap()
                .timeout(Duration::from_millis(300))
                .connect_lazy();
            let mut client = proto::job_service_client::JobServiceClient::new(ch);
            let s = spec("failover", 1, &format!("f{k}"));
            if client.submit_job(proto::SubmitJobRequest { spec: Some(s) }).await.is_ok() {
                out.push(killed.elapsed());
                break;
            }
        }
        c.spawn(leader, true);
    }
    out
}

async fn settled(c: &Cluster) -> u64 {
    loop {
        let leader = c.wait_leader(Duration::from_secs(15)).await;
        let mut applied = Vec::new();
        for id in c.live() {
            applied.push(c.status(id).await.map(|s| (s.applied_index, s.commit_index)));
        }
        let target = applied.iter().flatten().map(|(_, commit)| *commit).max().unwrap_or(0);
        if applied.iter().all(|a| a.is_some_and(|(ap, _)| ap >= target)) {
            tokio::time::sleep(Duration::from_millis(500)).await;
            return leader;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    // BENCH_NODES=1 separates local overhead from replication in commit latency.
    let n: u64 = std::env::var("BENCH_NODES").ok().and_then(|v| v.parse().ok()).unwrap_or(3);
    let mut c = Cluster::start(n, Opts::default());
    c.wait_leader(Duration::from_secs(15)).await;
    println!("baton cluster bench: {n} nodes on loopback, fsync on, client in-process");
    report("commit latency (1 client)", commit_latency(&c).await);
    report("dispatch (ack -> worker)", dispatch_latency(&c).await);
    if n >= 3 {
        report("failover (kill -> commit)", failover(&mut c).await);
    }
}
