//! What the throughput benches (`logs.rs`, `tls.rs`) share: settings from
//! the environment, running workers and waiting for them, one round of jobs run to the end,
//! and the median of rounds.

use std::str::FromStr;
use std::time::{Duration, Instant};

use baton_client::{Client, Worker, WorkerStats, proto};
use futures::StreamExt;
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// Longest wait for one round before the run fails.
pub const ROUND_TIMEOUT: Duration = Duration::from_secs(900);

pub fn env_or<T: FromStr>(name: &str, default: T) -> T {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

/// Run the `workers` until the returned sender says stop; each returns its stats.
pub fn spawn_workers(workers: Vec<Worker>) -> (watch::Sender<bool>, Vec<JoinHandle<WorkerStats>>) {
    let (stop, rx) = watch::channel(false);
    let runs = workers
        .into_iter()
        .map(|w| {
            let mut rx = rx.clone();
            tokio::spawn(async move {
                w.run(async move {
                    let _ = rx.wait_for(|s| *s).await;
                })
                .await
                .unwrap()
            })
        })
        .collect();
    (stop, runs)
}

pub async fn wait_workers(client: &Client, n: usize) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while client.list_workers().await.map(|w| w.len()).unwrap_or(0) != n {
        assert!(Instant::now() < deadline, "{n} workers never listed");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Submit `tasks` tasks of namespace `ns` as jobs of `shards_per_job`
/// shards, watch each to its end, and return the time from the first
/// submit to the last job finished, with every job's final state.
pub async fn run_jobs(
    client: &Client,
    ns: &str,
    tasks: u32,
    shards_per_job: u32,
) -> (Duration, Vec<(u64, proto::Job)>) {
    let t0 = Instant::now();
    let mut watches = Vec::new();
    for j in 0..tasks.div_ceil(shards_per_job) {
        let shards = shards_per_job.min(tasks - j * shards_per_job);
        let spec = proto::JobSpec {
            namespace: ns.into(),
            name: format!("j{j}"),
            shards,
            attempt_timeout_ms: 600_000,
            ..Default::default()
        };
        let id = client.submit(spec).await.unwrap().job_id;
        let client = client.clone();
        watches.push(tokio::spawn(async move {
            let mut events = Box::pin(client.watch(id));
            let mut last = None;
            while let Some(ev) = events.next().await {
                last = ev.unwrap().job;
            }
            (id, last.expect("a watch ends with the finished job"))
        }));
    }
    let mut finished = Vec::new();
    for w in watches {
        finished.push(tokio::time::timeout(ROUND_TIMEOUT, w).await.expect("round timed out").unwrap());
    }
    (t0.elapsed(), finished)
}

pub fn median(v: &mut [f64]) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[v.len() / 2]
}
