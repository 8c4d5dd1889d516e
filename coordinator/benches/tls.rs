//! TLS cost benchmark: the same workload on a real three-node cluster
//! (loopback, fsync on) in plaintext and with TLS on both ports (mutual TLS
//! between nodes, SDK clients and workers trusting the cluster CA). Prints
//! task throughput and submit latency for both modes and their ratio;
//! asserts nothing about speed. A job that does not succeed fails the run.
//!
//! `cargo bench -p baton-coordinator --bench tls --profile dev`
//!
//! Each round starts a fresh cluster per mode (neither inherits the other's
//! RocksDB). In it, one SDK client submits `BENCH_SUBMITS` (500) one-shard
//! jobs one after another (latency: call → acknowledged, fsynced on a
//! majority), then `BENCH_WORKERS` (4) SDK workers of `BENCH_CAPACITY` (64)
//! slots run `BENCH_TASKS` (20,000) tasks in jobs of `BENCH_SHARDS_PER_JOB`
//! (1,000) shards (throughput: first submit → last job finished). Modes
//! alternate over `BENCH_ROUNDS` (3) rounds, in reverse every other round,
//! so a change in the machine's load hits both alike.
//!
//! Connections are long-lived, so a handshake is paid once per connection:
//! the figures are the cost of encrypting the traffic, not of handshakes.

#[path = "../tests/common/mod.rs"]
mod common;
#[path = "support/throughput.rs"]
mod throughput;

use std::time::{Duration, Instant};

use baton_client::{Client, ClientConfig, TaskContext, TlsOptions, Worker, WorkerStats, proto};
use baton_coordinator::tls::certgen::{DevCerts, write_dev_certs};
use common::*;
use throughput::*;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tonic::transport::{Certificate, ClientTlsConfig, Identity};

const NS: &str = "tlsbench";
/// Submits before the timed ones: connections open and the leader settles.
const WARMUP_SUBMITS: usize = 50;

#[derive(Clone, Copy)]
struct Setup {
    submits: usize,
    tasks: u32,
    shards_per_job: u32,
    workers: usize,
    capacity: u32,
}

/// The certificates of the TLS mode: a CA, one node certificate all three
/// nodes share (SANs `localhost`, `127.0.0.1`) and a client certificate.
struct Pki {
    _dir: tempfile::TempDir,
    certs: DevCerts,
}

impl Pki {
    fn new() -> Pki {
        let dir = tempfile::tempdir().unwrap();
        let certs = write_dev_certs(dir.path(), 1).unwrap();
        Pki { _dir: dir, certs }
    }

    /// Node settings: TLS on both ports, client certificates optional on
    /// the API (the SDK presents one, as a mutual-TLS deployment would).
    fn opts(&self) -> Opts {
        let p = |f: &std::path::Path| f.display().to_string();
        let (cert, key) = &self.certs.nodes[0];
        Opts {
            env: vec![
                ("BATON_TLS__CA".into(), p(&self.certs.ca)),
                ("BATON_TLS__CERT".into(), p(cert)),
                ("BATON_TLS__KEY".into(), p(key)),
                ("BATON_TLS__CLIENT_AUTH".into(), "optional".into()),
            ],
            ..Opts::default()
        }
    }

    fn sdk(&self) -> TlsOptions {
        TlsOptions::from_files(Some(&self.certs.ca), Some(&self.certs.client_cert), Some(&self.certs.client_key))
            .unwrap()
    }

    /// What the harness's own channels (leader lookup) use.
    fn tonic(&self) -> ClientTlsConfig {
        let read = |p: &std::path::Path| std::fs::read(p).unwrap();
        ClientTlsConfig::new()
            .ca_certificate(Certificate::from_pem(read(&self.certs.ca)))
            .identity(Identity::from_pem(read(&self.certs.client_cert), read(&self.certs.client_key)))
    }
}

/// `host:port` endpoints: the SDK picks https when TLS is configured.
fn bare_endpoints(c: &Cluster) -> Vec<String> {
    c.ports.values().map(|p| format!("127.0.0.1:{}", p.api)).collect()
}

async fn handle(_ctx: TaskContext) -> Result<Vec<u8>, baton_client::TaskError> {
    Ok(Vec::new())
}

fn start_workers(
    c: &Cluster,
    s: Setup,
    tls: Option<TlsOptions>,
) -> (watch::Sender<bool>, Vec<JoinHandle<WorkerStats>>) {
    let workers = (0..s.workers)
        .map(|i| {
            let mut b = Worker::builder().endpoints(bare_endpoints(c)).name(format!("bench-{i}")).capacity(s.capacity);
            if let Some(t) = &tls {
                b = b.tls(t.clone());
            }
            b.handler(handle).build().unwrap()
        })
        .collect();
    spawn_workers(workers)
}

struct Round {
    /// Sorted submit latencies.
    submits: Vec<Duration>,
    tasks_per_sec: f64,
}

/// One mode on a fresh cluster.
async fn round(s: Setup, pki: Option<&Pki>) -> Round {
    let mut c = Cluster::start(3, pki.map(Pki::opts).unwrap_or_default());
    c.tls = pki.map(Pki::tonic);
    c.wait_leader(Duration::from_secs(30)).await;
    let tls = pki.map(Pki::sdk);
    let mut cfg = ClientConfig::new(bare_endpoints(&c));
    cfg.tls = tls.clone();
    cfg.deadline = Duration::from_secs(30);
    let client = Client::new(cfg).unwrap();

    // Submit latency: one client, one call at a time.
    let mut submits = Vec::with_capacity(s.submits);
    for i in 0..WARMUP_SUBMITS + s.submits {
        let spec = proto::JobSpec { namespace: NS.into(), name: format!("s{i}"), shards: 1, ..Default::default() };
        let t = Instant::now();
        client.submit(spec).await.unwrap();
        if i >= WARMUP_SUBMITS {
            submits.push(t.elapsed());
        }
    }
    submits.sort();

    // Throughput: the workers also drain the submit phase's jobs first.
    let (stop, runs) = start_workers(&c, s, tls);
    wait_workers(&client, s.workers).await;
    let (elapsed, finished) = run_jobs(&client, NS, s.tasks, s.shards_per_job).await;
    for (id, j) in &finished {
        assert_eq!(j.status, proto::JobStatus::Succeeded as i32, "job {id}: {j:?}\n{}", c.logs());
    }
    let _ = stop.send(true);
    for r in runs {
        r.await.unwrap();
    }
    Round { submits, tasks_per_sec: f64::from(s.tasks) / elapsed.as_secs_f64() }
}

fn pct(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 * p) as usize).min(sorted.len() - 1)]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let s = Setup {
        submits: env_or("BENCH_SUBMITS", 500),
        tasks: env_or("BENCH_TASKS", 20_000),
        shards_per_job: env_or("BENCH_SHARDS_PER_JOB", 1_000),
        workers: env_or("BENCH_WORKERS", 4),
        capacity: env_or("BENCH_CAPACITY", 64),
    };
    let rounds: usize = env_or("BENCH_ROUNDS", 3);
    let pki = Pki::new();
    let dir = tempfile::tempdir().unwrap();
    let fsync = fsync_probe(dir.path(), 200);
    println!("baton TLS bench: 3 nodes on loopback, fsync on, SDK client and workers in-process");
    println!(
        "load average {}; disk fsync (4 KiB write + fdatasync) p50 {:.3} ms, p99 {:.3} ms",
        load_average(),
        ms(fsync[fsync.len() / 2]),
        ms(fsync[fsync.len() * 99 / 100])
    );
    println!(
        "per round and mode: {} sequential submits; {} tasks in jobs of {} shards, {} workers x {} slots",
        s.submits, s.tasks, s.shards_per_job, s.workers, s.capacity
    );
    // [plaintext, tls]: throughput, submit p50, submit p99 per round.
    let names = ["plaintext", "tls"];
    let mut rate: [Vec<f64>; 2] = Default::default();
    let mut p50: [Vec<f64>; 2] = Default::default();
    let mut p99: [Vec<f64>; 2] = Default::default();
    for r in 0..rounds {
        let order = if r % 2 == 0 { [0, 1] } else { [1, 0] };
        for m in order {
            let out = round(s, (m == 1).then_some(&pki)).await;
            let (a, b) = (ms(pct(&out.submits, 0.50)), ms(pct(&out.submits, 0.99)));
            println!(
                "round {r}: {:<9} {:>7.0} tasks/s  submit p50 {a:>7.3} ms  p99 {b:>7.3} ms  (load {})",
                names[m],
                out.tasks_per_sec,
                load_average()
            );
            rate[m].push(out.tasks_per_sec);
            p50[m].push(a);
            p99[m].push(b);
        }
    }
    let med = |v: &mut [Vec<f64>; 2]| [median(&mut v[0]), median(&mut v[1])];
    let (rate, p50, p99) = (med(&mut rate), med(&mut p50), med(&mut p99));
    for m in 0..2 {
        println!(
            "median {:<9} {:>7.0} tasks/s  submit p50 {:>7.3} ms  p99 {:>7.3} ms",
            names[m], rate[m], p50[m], p99[m]
        );
    }
    println!(
        "tls / plaintext: throughput {:.1}%, submit p50 {:.2}x, p99 {:.2}x",
        100.0 * rate[1] / rate[0],
        p50[1] / p50[0],
        p99[1] / p99[0]
    );
    println!("load average at the end {}", load_average());
}
