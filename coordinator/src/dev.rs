//! `baton dev`: a local cluster doing real work, for a first look.
//!
//! Starts three `baton serve` processes on loopback (data under `.baton-dev/`),
//! a few demo workers (SDK `Worker`s counting words), submits a sharded
//! word-count job, shows its progress, and prints the aggregated result. It
//! keeps running until Ctrl-C unless `--exit-after-demo` is given.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use baton_client::{Client, ClientConfig, TaskContext, TaskError, Worker, proto};
use clap::Args;

#[derive(Args)]
pub struct DevArgs {
    /// Cluster size (3 or 5).
    #[arg(long, default_value_t = 3)]
    pub nodes: u64,
    /// Demo workers to start.
    #[arg(long, default_value_t = 3)]
    pub workers: u32,
    /// Shards of the demo job.
    #[arg(long, default_value_t = 24)]
    pub shards: u32,
    /// Node i uses ports base+i (Raft), base+100+i (API), base+200+i (HTTP).
    #[arg(long, default_value_t = 7100)]
    pub port_base: u16,
    /// Where node data and logs go; wiped at start.
    #[arg(long, default_value = ".baton-dev")]
    pub dir: PathBuf,
    /// Stop everything and exit once the demo job is done (for CI).
    #[arg(long)]
    pub exit_after_demo: bool,
}

/// Deterministic demo text: shard `i` gets a paragraph of words.
fn paragraph(i: u32) -> String {
    const WORDS: [&str; 16] = [
        "raft", "shard", "lease", "token", "fence", "leader", "worker", "commit", "apply", "log", "vote", "term",
        "snapshot", "quorum", "batch", "task",
    ];
    let mut x = 0x9e37_79b9u32.wrapping_mul(i + 1);
    (0..(40 + i % 20))
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            WORDS[(x % 16) as usize]
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// The demo handler: count words, with a little simulated work time so the
/// progress is visible.
async fn count_words(ctx: TaskContext) -> Result<Vec<u8>, TaskError> {
    let text = String::from_utf8(ctx.payload.clone()).map_err(TaskError::fatal)?;
    let work = Duration::from_millis(150 + (ctx.shard as u64 * 37) % 250);
    let cancel = ctx.cancellation();
    tokio::select! {
        _ = tokio::time::sleep(work) => {}
        _ = cancel.cancelled() => return Err(TaskError::retryable("cancelled")),
    }
    Ok(text.split_whitespace().count().to_string().into_bytes())
}

/// A standalone demo worker: counts words until `shutdown`, then leaves gracefully.
pub async fn demo_worker(
    endpoints: Vec<String>,
    name: &str,
    capacity: u32,
    shutdown: impl std::future::Future<Output = ()> + Send,
) -> anyhow::Result<()> {
    let w = Worker::builder().endpoints(endpoints).name(name).capacity(capacity).handler(count_words).build()?;
    let stats = w.run(shutdown).await?;
    tracing::info!(?stats, "demo worker stopped");
    Ok(())
}

struct Nodes {
    children: Vec<Child>,
}

impl Nodes {
    fn stop(&mut self) {
        for c in &self.children {
            unsafe { libc::kill(c.id() as i32, libc::SIGTERM) };
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        for c in &mut self.children {
            while Instant::now() < deadline && matches!(c.try_wait(), Ok(None)) {
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = c.kill();
            let _ = c.wait();
        }
        self.children.clear();
    }
}

impl Drop for Nodes {
    fn drop(&mut self) {
        self.stop();
    }
}

pub async fn run(a: DevArgs) -> anyhow::Result<()> {
    anyhow::ensure!(a.nodes == 3 || a.nodes == 5, "--nodes must be 3 or 5");
    anyhow::ensure!(a.shards > 0 && a.workers > 0, "--shards and --workers must be at least 1");
    let b = a.port_base;
    let raft = |i: u64| format!("127.0.0.1:{}", b as u64 + i);
    let api = |i: u64| format!("127.0.0.1:{}", b as u64 + 100 + i);
    let http = |i: u64| format!("127.0.0.1:{}", b as u64 + 200 + i);
    let members: Vec<String> = (1..=a.nodes).map(|i| format!("{i}={}/{}", raft(i), api(i))).collect();
    if a.dir.exists() {
        std::fs::remove_dir_all(&a.dir)?;
    }
    std::fs::create_dir_all(&a.dir)?;
    let exe = std::env::current_exe()?;
    let mut nodes = Nodes { children: Vec::new() };
    for i in 1..=a.nodes {
        let log = std::fs::File::create(a.dir.join(format!("node{i}.log")))?;
        let child = Command::new(&exe)
            .args(["serve", "--node-id", &i.to_string()])
            .arg("--data-dir")
            .arg(a.dir.join(format!("node{i}")))
            .args(["--raft-listen", &raft(i), "--api-listen", &api(i), "--http-listen", &http(i)])
            .args(["--initial-members", &members.join(",")])
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()?;
        nodes.children.push(child);
    }
    let endpoints: Vec<String> = (1..=a.nodes).map(api).collect();
    println!("baton dev: {} nodes starting (logs in {}/node*.log)", a.nodes, a.dir.display());

    let mut cfg = ClientConfig::new(endpoints.clone());
    cfg.deadline = Duration::from_secs(30);
    let client = Client::new(cfg)?;
    let started = Instant::now();
    let leader = loop {
        if let Ok(s) = client.status(None).await
            && s.leader_id != 0
        {
            break s.leader_id;
        }
        for (i, c) in nodes.children.iter_mut().enumerate() {
            if let Some(status) = c.try_wait()? {
                anyhow::bail!("node {} exited with {status}; see {}/node{}.log", i + 1, a.dir.display(), i + 1);
            }
        }
        anyhow::ensure!(
            started.elapsed() < Duration::from_secs(30),
            "no leader after 30 s; see {}/node*.log",
            a.dir.display()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    println!("cluster up: leader is node {leader} ({:?})", started.elapsed());

    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let mut workers = Vec::new();
    for w in 1..=a.workers {
        let worker = Worker::builder()
            .endpoints(endpoints.clone())
            .name(format!("dev-worker-{w}"))
            .capacity(2)
            .shutdown_grace(Duration::from_secs(5))
            .handler(count_words)
            .build()?;
        let mut rx = stop_rx.clone();
        workers.push(tokio::spawn(worker.run(async move {
            let _ = rx.wait_for(|s| *s).await;
        })));
    }
    println!("{} demo workers started", a.workers);

    let spec = proto::JobSpec {
        namespace: "demo".into(),
        name: "word-count".into(),
        payloads: (0..a.shards).map(|i| paragraph(i).into_bytes()).collect(),
        ..Default::default()
    };
    let job = client.submit(spec).await?;
    println!("submitted word-count job {} with {} shards", job.job_id, job.shards);
    let done = crate::cli::watch(&client, job.job_id, true).await?;
    let results = client.results(job.job_id).await?;
    let total: u64 = results.iter().filter_map(|r| String::from_utf8_lossy(&r.result).parse::<u64>().ok()).sum();
    let expected: u64 = (0..a.shards).map(|i| paragraph(i).split_whitespace().count() as u64).sum();
    println!(
        "job {} {}: {} words counted across {} shards (expected {expected})",
        job.job_id,
        if done.status == proto::JobStatus::Succeeded as i32 { "succeeded" } else { "did not succeed" },
        total,
        results.len()
    );
    println!("metrics:  http://{}/metrics   status: baton cluster status --endpoints {}", http(1), endpoints.join(","));
    let ok = done.status == proto::JobStatus::Succeeded as i32 && total == expected;

    if !a.exit_after_demo {
        println!(
            "the cluster keeps running; submit more with `baton job submit --shards 10`. Ctrl-C stops everything."
        );
        let _ = tokio::signal::ctrl_c().await;
    }
    println!("stopping workers and nodes");
    let _ = stop_tx.send(true);
    for w in workers {
        let _ = tokio::time::timeout(Duration::from_secs(10), w).await;
    }
    nodes.stop();
    anyhow::ensure!(ok, "the demo job did not produce the expected result");
    println!("done");
    Ok(())
}
