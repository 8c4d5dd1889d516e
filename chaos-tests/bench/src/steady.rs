//! Steady state under retention: a 3-node cluster runs a long stream of
//! single-shard lifecycles whose jobs are kept for a short retention, while
//! this samples each node's data-dir size, snapshot size and RSS. With the
//! collector keeping up, all three level off once the first jobs expire
//! instead of growing with the number of lifecycles. The namespace's
//! idempotency window is set to the retention, so the submit keys expire
//! with their jobs rather than 24 h later. Prints a table and writes
//! `steady.json`, `steady.md` and three SVG plots.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use baton_client::{TaskContext, TaskError, Worker, proto};
use serde::Serialize;
use tokio::sync::oneshot;

use crate::baton::Cluster;
use crate::plot;
use crate::procs;

/// What one steady-state run does.
#[derive(Debug, Clone, Serialize)]
pub struct SteadyPlan {
    pub lifecycles: u64,
    pub retention_ms: u64,
    pub sample_secs: u64,
    pub workers: usize,
    pub capacity: usize,
    pub submitters: usize,
    /// Jobs per SubmitJobs request.
    pub batch: usize,
    /// Submitted but not finished lifecycles above which submitters wait.
    pub max_in_flight: u64,
}

/// One sample of the cluster.
#[derive(Debug, Clone, Serialize)]
pub struct Sample {
    pub t_s: f64,
    pub completed: u64,
    /// Lifecycles per second since the previous sample.
    pub rate: f64,
    pub data_mib: Vec<f64>,
    pub snapshot_mib: Vec<f64>,
    pub rss_mib: Vec<f64>,
    /// Node 1's `baton_gc_lag_ms` (how far the oldest queued retention
    /// target is past its time) and `baton_gc_queued`.
    pub gc_lag_s: f64,
    pub gc_queued: u64,
    /// The machine's 1-minute load average at the sample.
    pub load_1m: f64,
}

#[derive(Debug, Serialize)]
pub struct SteadyReport {
    pub plan: SteadyPlan,
    pub fsync_4k_p50_ms: f64,
    pub load_before: f64,
    pub samples: Vec<Sample>,
    pub elapsed_s: f64,
    pub errors: u64,
    /// Failed submits by what the cluster answered (the first 80 bytes).
    pub error_kinds: std::collections::BTreeMap<String, u64>,
}

#[derive(Default)]
struct Counters {
    submitted: AtomicU64,
    done: AtomicU64,
    errors: AtomicU64,
    error_kinds: std::sync::Mutex<std::collections::BTreeMap<String, u64>>,
    stop: AtomicBool,
}

impl Counters {
    fn error(&self, why: String, n: u64) {
        self.errors.fetch_add(n, Ordering::Relaxed);
        let why: String = why.chars().take(80).collect();
        *self.error_kinds.lock().unwrap_or_else(|e| e.into_inner()).entry(why).or_default() += n;
    }
}

/// The Prometheus text a node serves at `/metrics` (blocking; bounded by
/// short timeouts). `None` if it cannot be read.
fn metrics_text(http_port: u16) -> Option<String> {
    use std::io::{Read, Write};
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], http_port));
    let mut s = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(1)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    s.write_all(b"GET /metrics HTTP/1.0\r\nHost: localhost\r\n\r\n").ok()?;
    let mut body = String::new();
    s.take(4 << 20).read_to_string(&mut body).ok()?;
    Some(body)
}

/// A gauge's value in `metrics_text`'s text, if it is there.
fn gauge(text: &str, name: &str) -> Option<f64> {
    text.lines().find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
}

/// Bytes of every file under `dir`.
fn dir_bytes(dir: &Path) -> u64 {
    let Ok(rd) = std::fs::read_dir(dir) else { return 0 };
    rd.flatten()
        .map(|e| match e.metadata() {
            Ok(m) if m.is_dir() => dir_bytes(&e.path()),
            Ok(m) => m.len(),
            Err(_) => 0,
        })
        .sum()
}

fn mib(b: u64) -> f64 {
    b as f64 / (1024.0 * 1024.0)
}

pub fn load_1m() -> f64 {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|s| s.split_whitespace().next().and_then(|v| v.parse().ok()))
        .unwrap_or(0.0)
}

pub async fn run(plan: SteadyPlan, bin: &Path, run_dir: &Path, out: &Path) -> anyhow::Result<SteadyReport> {
    let load_before = load_1m();
    let fsync = procs::fsync_latency(run_dir, 300)?;
    let c = Cluster::start(bin, run_dir)?;
    c.settled(Duration::from_secs(30)).await?;
    let data_dirs: Vec<PathBuf> = (1..=c.nodes.len()).map(|i| run_dir.join(format!("baton{i}"))).collect();
    let n = Arc::new(Counters::default());
    // Every submit carries a key; with the default 24-h window the keys
    // would outlive a short retention and the state would grow for a day.
    let admin = baton_client::Client::new(baton_client::ClientConfig::new(c.endpoints()))?;
    let window = Duration::from_millis(plan.retention_ms);
    admin.set_namespace_idempotency_window("steady", Some(window)).await.map_err(|e| {
        anyhow::anyhow!("setting the idempotency window to --retention-ms {} failed: {e}", plan.retention_ms)
    })?;

    let mut workers = Vec::new();
    for i in 0..plan.workers {
        let n2 = n.clone();
        let w = Worker::builder()
            .endpoints(c.endpoints())
            .name(format!("steady-{i}"))
            .capacity(plan.capacity as u32)
            .handler(move |_ctx: TaskContext| {
                let n = n2.clone();
                async move {
                    n.done.fetch_add(1, Ordering::Relaxed);
                    Ok::<Vec<u8>, TaskError>(Vec::new())
                }
            })
            .build()?;
        let (tx, rx) = oneshot::channel::<()>();
        let h = tokio::spawn(async move {
            let _ = w
                .run(async move {
                    let _ = rx.await;
                })
                .await;
        });
        workers.push((tx, h));
    }

    let mut subs = Vec::new();
    for s in 0..plan.submitters {
        let n = n.clone();
        let client = baton_client::Client::new(baton_client::ClientConfig::new(c.endpoints()))?;
        let plan = plan.clone();
        subs.push(tokio::spawn(async move {
            let mut k = 0u64;
            while !n.stop.load(Ordering::Relaxed) {
                let sub = n.submitted.load(Ordering::Relaxed);
                if sub >= plan.lifecycles {
                    break;
                }
                if sub.saturating_sub(n.done.load(Ordering::Relaxed)) > plan.max_in_flight {
                    tokio::time::sleep(Duration::from_millis(2)).await;
                    continue;
                }
                let specs: Vec<proto::JobSpec> = (0..plan.batch)
                    .map(|_| {
                        k += 1;
                        proto::JobSpec {
                            namespace: "steady".into(),
                            shards: 1,
                            retention_ms: plan.retention_ms,
                            idempotency_key: format!("steady-{s}-{k}"),
                            attempt_timeout_ms: 600_000,
                            ..Default::default()
                        }
                    })
                    .collect();
                match client.submit_batch(specs).await {
                    Ok(rs) => {
                        let ok = rs.iter().filter(|r| r.is_ok()).count() as u64;
                        n.submitted.fetch_add(ok, Ordering::Relaxed);
                        for r in rs {
                            if let Err(e) = r {
                                n.error(format!("item: {e}"), 1);
                            }
                        }
                    }
                    Err(e) => {
                        n.error(format!("batch: {e}"), plan.batch as u64);
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                }
            }
        }));
    }

    let start = Instant::now();
    let mut samples = Vec::new();
    let mut last = (0.0f64, 0u64);
    eprintln!("namespace steady: retention {} ms, idempotency window {} ms", plan.retention_ms, plan.retention_ms);
    eprintln!(
        "{:>7} {:>10} {:>9} {:>24} {:>24} {:>20} {:>10} {:>9}",
        "t (s)", "done", "per s", "data MiB", "snapshot MiB", "RSS MiB", "gc lag s", "gc queue"
    );
    loop {
        tokio::time::sleep(Duration::from_secs(plan.sample_secs)).await;
        let t = start.elapsed().as_secs_f64();
        let done = n.done.load(Ordering::Relaxed);
        let rate = (done - last.1) as f64 / (t - last.0).max(1e-9);
        last = (t, done);
        let data_mib: Vec<f64> = data_dirs.iter().map(|d| mib(dir_bytes(d))).collect();
        let snapshot_mib: Vec<f64> = data_dirs.iter().map(|d| mib(dir_bytes(&d.join("snapshots")))).collect();
        let rss_mib: Vec<f64> = c.nodes.iter().map(|nd| nd.rss_mib().unwrap_or(0.0)).collect();
        let http = c.http[0];
        let (lag_ms, queued) = tokio::task::spawn_blocking(move || {
            let text = metrics_text(http).unwrap_or_default();
            (gauge(&text, "baton_gc_lag_ms").unwrap_or(f64::NAN), gauge(&text, "baton_gc_queued").unwrap_or(0.0))
        })
        .await
        .unwrap_or((f64::NAN, 0.0));
        let (gc_lag_s, gc_queued) = (lag_ms / 1e3, queued as u64);
        let round = |v: &[f64]| v.iter().map(|x| format!("{x:.0}")).collect::<Vec<_>>().join("/");
        eprintln!(
            "{t:>7.0} {done:>10} {rate:>9.0} {:>24} {:>24} {:>20} {gc_lag_s:>10.1} {gc_queued:>9}",
            round(&data_mib),
            round(&snapshot_mib),
            round(&rss_mib)
        );
        samples.push(Sample {
            t_s: t,
            completed: done,
            rate,
            data_mib,
            snapshot_mib,
            rss_mib,
            gc_lag_s,
            gc_queued,
            load_1m: load_1m(),
        });
        if done >= plan.lifecycles {
            break;
        }
    }
    let elapsed_s = start.elapsed().as_secs_f64();
    n.stop.store(true, Ordering::Relaxed);
    for s in subs {
        let _ = s.await;
    }
    for (tx, h) in workers {
        let _ = tx.send(());
        let _ = tokio::time::timeout(Duration::from_secs(8), h).await;
    }
    let report = SteadyReport {
        plan,
        fsync_4k_p50_ms: fsync.p50_ms,
        load_before,
        samples,
        elapsed_s,
        errors: n.errors.load(Ordering::Relaxed),
        error_kinds: std::mem::take(&mut *n.error_kinds.lock().unwrap_or_else(|e| e.into_inner())),
    };
    write(&report, out)?;
    Ok(report)
}

fn write(r: &SteadyReport, out: &Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(out)?;
    std::fs::write(out.join("steady.json"), serde_json::to_string_pretty(r)?)?;
    let per_node = |pick: fn(&Sample) -> &Vec<f64>| -> Vec<(String, Vec<(f64, f64)>)> {
        let nodes = r.samples.first().map_or(0, |s| pick(s).len());
        (0..nodes)
            .map(|i| {
                let pts = r.samples.iter().map(|s| (s.completed as f64 / 1e6, pick(s)[i])).collect();
                (format!("node {}", i + 1), pts)
            })
            .collect()
    };
    let x = "lifecycles completed (millions)";
    plot::lines(&out.join("steady-disk.svg"), "Data dir size per node", x, "MiB", &per_node(|s| &s.data_mib))?;
    plot::lines(&out.join("steady-snapshot.svg"), "Snapshot size per node", x, "MiB", &per_node(|s| &s.snapshot_mib))?;
    plot::lines(&out.join("steady-rss.svg"), "Resident memory per node", x, "MiB", &per_node(|s| &s.rss_mib))?;
    let lag = vec![("node 1".to_string(), r.samples.iter().map(|s| (s.completed as f64 / 1e6, s.gc_lag_s)).collect())];
    plot::lines(&out.join("steady-gc-lag.svg"), "Collector lag (oldest queued target past its time)", x, "s", &lag)?;
    let mut md = format!(
        "retention {} ms, idempotency window {} ms, {} lifecycles in {:.0} s ({:.0}/s), {} submit errors; fsync p50 {:.2} ms, load before {:.2}\n\n",
        r.plan.retention_ms,
        r.plan.retention_ms,
        r.samples.last().map_or(0, |s| s.completed),
        r.elapsed_s,
        r.samples.last().map_or(0.0, |s| s.completed as f64 / r.elapsed_s),
        r.errors,
        r.fsync_4k_p50_ms,
        r.load_before
    );
    for (why, count) in &r.error_kinds {
        md.push_str(&format!("- {count} submits failed: {why}\n"));
    }
    if !r.error_kinds.is_empty() {
        md.push('\n');
    }
    md.push_str("| t (s) | completed | per s | data MiB (n1/n2/n3) | snapshot MiB | RSS MiB | gc lag s | gc queue | load |\n|---|---|---|---|---|---|---|---|---|\n");
    let j = |v: &[f64]| v.iter().map(|x| format!("{x:.0}")).collect::<Vec<_>>().join(" / ");
    for s in &r.samples {
        md.push_str(&format!(
            "| {:.0} | {} | {:.0} | {} | {} | {} | {:.1} | {} | {:.2} |\n",
            s.t_s,
            s.completed,
            s.rate,
            j(&s.data_mib),
            j(&s.snapshot_mib),
            j(&s.rss_mib),
            s.gc_lag_s,
            s.gc_queued,
            s.load_1m
        ));
    }
    std::fs::write(out.join("steady.md"), md)?;
    Ok(())
}
