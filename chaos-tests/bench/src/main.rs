//! `baton-bench`: Baton against an etcd task-queue recipe and a NATS JetStream
//! work queue, on one machine, with one workload shape, in one run. Prints the
//! Baton/peer ratio table and writes `results.json`, `results.md` and SVG plots.
//!
//! Every server is a real process on 127.0.0.1, started here, its pid written to
//! `<run dir>/pids`, and stopped by pid (also on panic: `Node` kills on drop;
//! `compare.sh`'s trap covers a killed benchmark). See docs/benchmarks.md.

mod baton;
mod driver;
mod etcd;
mod nats;
mod plot;
mod procs;
mod stats;
mod steady;

use std::io::BufRead;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use clap::{Parser, Subcommand};
use serde::Serialize;

use driver::Load;
use stats::{Summary, SystemResults};

#[derive(Parser, Debug)]
#[command(about = "Baton vs etcd vs NATS JetStream: same machine, same workload, one run")]
struct Args {
    /// Short phases (10 s), 3 kills, 100,000 tasks for the restart: for development.
    #[arg(long)]
    quick: bool,
    /// Which systems, comma-separated (baton first is the ratio's numerator).
    #[arg(long, default_value = "baton,etcd,nats", value_delimiter = ',')]
    systems: Vec<String>,
    /// Where results.json, results.md and the plots go.
    #[arg(long, default_value = "target/bench-compare")]
    out: PathBuf,
    /// Scratch directory for data, logs and the pid file (default: a new one under /tmp).
    #[arg(long)]
    run_dir: Option<PathBuf>,
    /// The `baton` binary (default: next to this one).
    #[arg(long)]
    baton_bin: Option<PathBuf>,
    /// Sustained window of each throughput phase, seconds (default 60, quick 10).
    #[arg(long)]
    secs: Option<usize>,
    /// Leader kills and worker kills per system (default 10, quick 3).
    #[arg(long)]
    kills: Option<usize>,
    /// Tasks loaded for the full-restart measurement (default 1,000,000, quick 100,000; 0 skips).
    #[arg(long)]
    restart_tasks: Option<u64>,
    /// Workers per throughput phase, and tasks each runs at once.
    #[arg(long, default_value_t = 4)]
    workers: usize,
    #[arg(long, default_value_t = 512)]
    capacity: usize,
    /// Concurrent submitters per throughput phase.
    #[arg(long, default_value_t = 4)]
    submitters: usize,
    #[command(subcommand)]
    cmd: Option<Cmd>,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// (internal) A worker process that claims one task and holds it until SIGKILLed.
    #[command(hide = true)]
    Victim { system: String, endpoints: String },
    /// Baton alone: a long run of single-shard lifecycles under a short
    /// retention, sampling disk, snapshot and memory per node (docs/benchmarks.md).
    Steady {
        /// Lifecycles to run (the bar is 1,000,000).
        #[arg(long, default_value_t = 1_000_000)]
        lifecycles: u64,
        /// Retention of every job, ms.
        #[arg(long, default_value_t = 60_000)]
        retention_ms: u64,
        /// Seconds between samples.
        #[arg(long, default_value_t = 10)]
        sample_secs: u64,
    },
}

static NOTES: std::sync::Mutex<Vec<String>> = std::sync::Mutex::new(Vec::new());

/// Record a remark for the system being measured (it lands in its notes).
pub fn note(s: String) {
    eprintln!("  !! {s}");
    NOTES.lock().unwrap_or_else(|p| p.into_inner()).push(s);
}

/// A victim worker process for the reassignment measurement.
pub struct Victim {
    child: Child,
    lines: mpsc::Receiver<String>,
}

impl Victim {
    pub fn spawn(exe: &Path, system: &str, endpoints: &str, run_dir: &Path) -> anyhow::Result<Victim> {
        let log = std::fs::OpenOptions::new().create(true).append(true).open(run_dir.join("victims.log"))?;
        let mut child = Command::new(exe)
            .args(["victim", system, endpoints])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(log)
            .spawn()?;
        procs::record_pid(&run_dir.join("pids"), child.id())?;
        let out = child.stdout.take().expect("piped stdout");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for l in std::io::BufReader::new(out).lines().map_while(Result::ok) {
                if tx.send(l).is_err() {
                    return;
                }
            }
        });
        Ok(Victim { child, lines: rx })
    }

    fn wait_line(&mut self, prefix: &str, limit: Duration) -> anyhow::Result<String> {
        let until = std::time::Instant::now() + limit;
        loop {
            let left = until.saturating_duration_since(std::time::Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(l) if l.starts_with(prefix) => return Ok(l),
                Ok(_) => {}
                Err(_) => anyhow::bail!("victim worker did not print {prefix:?} within {limit:?} (see victims.log)"),
            }
        }
    }

    pub fn wait_ready(&mut self, limit: Duration) -> anyhow::Result<()> {
        self.wait_line("ready", limit).map(|_| ())
    }

    pub fn wait_claim(&mut self, limit: Duration) -> anyhow::Result<String> {
        self.wait_line("claimed", limit)
    }

    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Victim {
    fn drop(&mut self) {
        self.kill();
    }
}

/// The run's settings, derived from the flags.
#[derive(Debug, Clone, Serialize)]
struct Plan {
    quick: bool,
    secs: usize,
    warmup: usize,
    kills: usize,
    latency_samples: usize,
    restart_tasks: u64,
    workers: usize,
    capacity: usize,
    submitters: usize,
    single_jobs_per_request: usize,
    hundred_jobs_per_request: usize,
}

impl Plan {
    /// The 100-shard load spread over 1,000 workers of 4 slots.
    fn load_many(&self) -> Load {
        Load { workers: 1_000, capacity: 4, secs: self.secs.min(30), ..self.load(100) }
    }

    fn load(&self, shards: u32) -> Load {
        Load {
            shards,
            jobs_per_request: if shards == 1 { self.single_jobs_per_request } else { self.hundred_jobs_per_request },
            submitters: self.submitters,
            workers: self.workers,
            capacity: self.capacity,
            max_in_flight: if shards == 1 { 20_000 } else { 50_000 },
            secs: self.secs,
            warmup: self.warmup,
        }
    }
}

#[derive(Serialize)]
struct Machine {
    cores: usize,
    mem_gib: f64,
    kernel: String,
    fsync_4k: Summary,
}

#[derive(Serialize)]
struct Report<'a> {
    when_unix_s: u64,
    machine: Machine,
    plan: &'a Plan,
    systems: &'a [SystemResults],
    table_markdown: String,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
    if let Some(Cmd::Victim { system, endpoints }) = &args.cmd {
        let eps: Vec<String> = endpoints.split(',').map(String::from).collect();
        let (sys, tag) = system.split_once(':').unwrap_or((system.as_str(), ""));
        return rt.block_on(async {
            match sys {
                "baton" => baton::victim(eps).await,
                "etcd" => etcd::victim(eps, tag.into()).await,
                "nats" => nats::victim(eps, tag.into()).await,
                other => anyhow::bail!("unknown system {other}"),
            }
        });
    }
    if let Some(Cmd::Steady { lifecycles, retention_ms, sample_secs }) = &args.cmd {
        let plan = steady::SteadyPlan {
            lifecycles: *lifecycles,
            retention_ms: *retention_ms,
            sample_secs: (*sample_secs).max(1),
            workers: args.workers,
            capacity: args.capacity,
            submitters: args.submitters,
            batch: 200,
            max_in_flight: 20_000,
        };
        let _tmp;
        let run_dir = match &args.run_dir {
            Some(d) => d.clone(),
            None => {
                _tmp = tempfile::Builder::new().prefix("baton-steady-").tempdir()?;
                _tmp.path().to_path_buf()
            }
        };
        let bin = args.baton_bin.clone().unwrap_or_else(|| {
            std::env::current_exe().map(|e| e.with_file_name("baton")).unwrap_or_else(|_| PathBuf::from("baton"))
        });
        let out = args.out.clone();
        return rt.block_on(async move {
            let r = steady::run(plan, &bin, &run_dir, &out).await?;
            println!("{}", std::fs::read_to_string(out.join("steady.md"))?);
            eprintln!("wrote {}/steady.json, steady.md and steady-*.svg ({} samples)", out.display(), r.samples.len());
            Ok(())
        });
    }
    // On SIGINT or SIGTERM the comparison future is dropped, and with it every
    // `Node`, which kills its server by pid.
    rt.block_on(async {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
        tokio::select! {
            r = compare(args) => r,
            _ = tokio::signal::ctrl_c() => anyhow::bail!("interrupted"),
            _ = term.recv() => anyhow::bail!("terminated"),
        }
    })
}

async fn compare(args: Args) -> anyhow::Result<()> {
    let q = args.quick;
    let plan = Plan {
        quick: q,
        secs: args.secs.unwrap_or(if q { 10 } else { 60 }),
        warmup: if q { 2 } else { 5 },
        kills: args.kills.unwrap_or(if q { 3 } else { 10 }),
        latency_samples: if q { 300 } else { 2_000 },
        restart_tasks: args.restart_tasks.unwrap_or(if q { 100_000 } else { 1_000_000 }),
        workers: args.workers,
        capacity: args.capacity,
        submitters: args.submitters,
        single_jobs_per_request: 200,
        hundred_jobs_per_request: 10,
    };
    let _tmp;
    let run_dir = match &args.run_dir {
        Some(d) => d.clone(),
        None => {
            _tmp = tempfile::Builder::new().prefix("baton-bench-").tempdir()?;
            _tmp.path().to_path_buf()
        }
    };
    std::fs::create_dir_all(&run_dir)?;
    std::fs::create_dir_all(&args.out)?;
    let self_exe = std::env::current_exe()?;
    let baton_bin = args.baton_bin.clone().unwrap_or_else(|| self_exe.with_file_name("baton"));
    eprintln!("baton-bench: run dir {}, results to {}", run_dir.display(), args.out.display());
    eprintln!("plan: {plan:?}");

    let fsync = procs::fsync_latency(&run_dir, 500)?;
    eprintln!("disk fsync (4 KiB write + fdatasync): p50 {:.3} ms, p99 {:.3} ms", fsync.p50_ms, fsync.p99_ms);

    let mut all = Vec::new();
    for sys in &args.systems {
        eprintln!("== {sys}");
        let r = match sys.as_str() {
            "baton" => run_baton(&plan, &baton_bin, &self_exe, &run_dir).await,
            "etcd" => run_etcd(&plan, &self_exe, &run_dir).await,
            "nats" => run_nats(&plan, &self_exe, &run_dir).await,
            other => anyhow::bail!("unknown system {other}"),
        };
        let mut r = r;
        r.notes.extend(NOTES.lock().unwrap_or_else(|p| p.into_inner()).drain(..));
        all.push(r);
    }

    let table = stats::table(&all);
    println!("\n{table}");
    for s in &all {
        for n in &s.notes {
            println!("- {}: {n}", s.name);
        }
        if let Some(r) = &s.restart {
            println!(
                "- {}: restart with {} tasks: first commit {:.2} s, all queryable {:.2} s; RSS per node {:?} MiB before, {:?} MiB after",
                s.name,
                stats::group(r.tasks),
                r.first_commit_s,
                r.all_queryable_s,
                r.rss_mib_per_node.iter().map(|x| x.round()).collect::<Vec<_>>(),
                r.rss_mib_after_restart.iter().map(|x| x.round()).collect::<Vec<_>>()
            );
        }
    }
    let machine = Machine {
        cores: std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0),
        mem_gib: meminfo_gib(),
        kernel: std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default().trim().into(),
        fsync_4k: fsync,
    };
    let when = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH)?.as_secs();
    let report = Report { when_unix_s: when, machine, plan: &plan, systems: &all, table_markdown: table.clone() };
    std::fs::write(args.out.join("results.json"), serde_json::to_string_pretty(&report)?)?;
    std::fs::write(args.out.join("results.md"), &table)?;
    plots(&args.out, &all)?;
    eprintln!("wrote {}/results.json, results.md and *.svg", args.out.display());
    Ok(())
}

fn meminfo_gib() -> f64 {
    let s = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    procs_meminfo_kib(&s) as f64 / 1024.0 / 1024.0
}

fn procs_meminfo_kib(s: &str) -> u64 {
    s.lines()
        .find(|l| l.starts_with("MemTotal:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

fn plots(out: &Path, all: &[SystemResults]) -> anyhow::Result<()> {
    for (file, title, pick) in [
        ("throughput-100-shard.svg", "Lifecycles per second, 100-shard jobs", 100u32),
        ("throughput-1-shard.svg", "Lifecycles per second, single-shard jobs", 1),
    ] {
        let series: Vec<(String, Vec<u64>)> = all
            .iter()
            .filter_map(|s| {
                let p = if pick == 1 { s.single_shard.as_ref() } else { s.hundred_shard.as_ref() };
                p.map(|p| (s.name.clone(), p.timeline.clone()))
            })
            .collect();
        plot::timeline(&out.join(file), title, &series)?;
    }
    type Pick = fn(&SystemResults) -> Option<&Summary>;
    let kinds: [(&str, &str, Pick, Pick); 3] = [
        (
            "cdf-submit.svg",
            "Submit acknowledged",
            |s| s.single_client.as_ref().map(|l| &l.submit),
            |s| s.hundred_shard.as_ref().map(|p| &p.submit),
        ),
        (
            "cdf-dispatch.svg",
            "Dispatch (acknowledged → worker receives)",
            |s| s.single_client.as_ref().map(|l| &l.dispatch),
            |s| s.hundred_shard.as_ref().map(|p| &p.dispatch),
        ),
        (
            "cdf-end-to-end.svg",
            "End to end (submit → worker done)",
            |s| s.single_client.as_ref().map(|l| &l.end_to_end),
            |s| s.hundred_shard.as_ref().map(|p| &p.end_to_end),
        ),
    ];
    for (file, title, one, peak) in kinds {
        let mut series = Vec::new();
        for s in all {
            if let Some(x) = one(s) {
                series.push((format!("{}, 1 client", s.name), x.cdf.clone()));
            }
        }
        for s in all {
            if let Some(x) = peak(s) {
                series.push((format!("{}, peak 100-shard", s.name), x.cdf.clone()));
            }
        }
        plot::cdf(&out.join(file), title, &series)?;
    }
    Ok(())
}

/// Run one measurement; a failure becomes a note instead of ending the run.
async fn step<T>(
    notes: &mut Vec<String>,
    what: &str,
    f: impl std::future::Future<Output = anyhow::Result<T>>,
) -> Option<T> {
    eprintln!("  -- {what}");
    match f.await {
        Ok(v) => Some(v),
        Err(e) => {
            eprintln!("  !! {what} failed: {e:#}");
            notes.push(format!("{what} failed: {e:#}"));
            None
        }
    }
}

async fn run_baton(plan: &Plan, bin: &Path, self_exe: &Path, run_dir: &Path) -> SystemResults {
    let mut r = SystemResults { name: "Baton".into(), ..Default::default() };
    r.version = Command::new(bin)
        .arg("--version")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default();
    r.setup = format!(
        "3 `baton serve` nodes, fsync on, worker TTL {} ms; SDK submitters with SubmitJobs batches ({} single-shard or {} 100-shard jobs per request); {} SDK workers of capacity {}",
        baton::TTL_MS,
        plan.single_jobs_per_request,
        plan.hundred_jobs_per_request,
        plan.workers,
        plan.capacity
    );
    let mut c = match baton::Cluster::start(bin, run_dir) {
        Ok(c) => c,
        Err(e) => {
            r.notes.push(format!("cluster did not start: {e:#}"));
            return r;
        }
    };
    let n = &mut r.notes;
    r.single_client = step(n, "1-client latency", baton::latency1(&c, plan.latency_samples)).await;
    r.single_shard = step(n, "throughput, single-shard jobs", baton::throughput(&c, &plan.load(1), "s1")).await;
    r.hundred_shard = step(n, "throughput, 100-shard jobs", baton::throughput(&c, &plan.load(100), "s100")).await;
    r.many_workers = step(n, "1,000 workers, 100-shard load", baton::throughput(&c, &plan.load_many(), "w1000")).await;
    for (what, p) in [("1-shard", &r.single_shard), ("100-shard", &r.hundred_shard), ("1,000-worker", &r.many_workers)]
    {
        if let Some(p) = p {
            n.push(format!(
                "{what} phase: {} attempts lost by live workers (fenced or abandoned: false expiries)",
                p.lost_attempts
            ));
        }
    }
    r.reassignment = step(n, "reassignment", baton::reassignment(&c, plan.kills, self_exe, run_dir)).await;
    r.failover = step(n, "failover", baton::failover(&mut c, plan.kills)).await;
    if plan.restart_tasks > 0 {
        r.restart = step(n, "full restart", baton::restart(&mut c, plan.restart_tasks)).await;
    }
    for node in &mut c.nodes {
        node.stop(Duration::from_secs(5));
    }
    r
}

async fn run_etcd(plan: &Plan, self_exe: &Path, run_dir: &Path) -> SystemResults {
    let mut r = SystemResults { name: "etcd".into(), ..Default::default() };
    r.version = Command::new("etcd")
        .arg("--version")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).lines().next().unwrap_or("").to_string())
        .unwrap_or_default();
    r.setup = format!(
        "3 etcd members, defaults (fsync per commit); put / claim txn (mod-revision) + {} s lease / delete txn; {} watch workers of {} concurrent claims",
        etcd::LEASE_TTL_S,
        plan.workers,
        plan.capacity
    );
    let mut c = match etcd::Cluster::start(run_dir) {
        Ok(c) => c,
        Err(e) => {
            r.notes.push(format!("cluster did not start: {e:#}"));
            return r;
        }
    };
    let n = &mut r.notes;
    r.single_client = step(n, "1-client latency", etcd::latency1(&c, plan.latency_samples)).await;
    r.single_shard = step(n, "throughput, single-shard jobs", etcd::throughput(&c, &plan.load(1), "s1")).await;
    r.hundred_shard = step(n, "throughput, 100-shard jobs", etcd::throughput(&c, &plan.load(100), "s100")).await;
    r.reassignment = step(n, "reassignment", etcd::reassignment(&c, plan.kills, self_exe, run_dir)).await;
    r.failover = step(n, "failover", etcd::failover(&mut c, plan.kills)).await;
    for node in &mut c.nodes {
        node.stop(Duration::from_secs(5));
    }
    r
}

async fn run_nats(plan: &Plan, self_exe: &Path, run_dir: &Path) -> SystemResults {
    let mut r = SystemResults { name: "NATS".into(), ..Default::default() };
    r.version = Command::new("nats-server")
        .arg("--version")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default();
    r.setup = format!(
        "3 JetStream servers; R3 file work-queue stream, one durable pull consumer, double_ack, {} s ack wait; {} workers of {} concurrent messages",
        nats::ACK_WAIT.as_secs(),
        plan.workers,
        plan.capacity
    );
    r.notes.push(
        "JetStream's default sync_interval is 2 min: acknowledged messages and acks are not fsynced per operation, so its durability is weaker than Baton's and etcd's".into(),
    );
    let mut c = match nats::Cluster::start(run_dir) {
        Ok(c) => c,
        Err(e) => {
            r.notes.push(format!("cluster did not start: {e:#}"));
            return r;
        }
    };
    let n = &mut r.notes;
    r.single_client = step(n, "1-client latency", nats::latency1(&c, plan.latency_samples)).await;
    r.single_shard = step(n, "throughput, single-shard jobs", nats::throughput(&c, &plan.load(1), "s1")).await;
    r.hundred_shard = step(n, "throughput, 100-shard jobs", nats::throughput(&c, &plan.load(100), "s100")).await;
    r.reassignment = step(n, "reassignment", nats::reassignment(&c, plan.kills, self_exe, run_dir)).await;
    r.failover = step(n, "failover", nats::failover(&mut c, plan.kills)).await;
    for node in &mut c.nodes {
        node.stop(Duration::from_secs(5));
    }
    r
}

#[cfg(test)]
mod tests {
    #[test]
    fn meminfo_parse() {
        assert_eq!(super::procs_meminfo_kib("MemTotal:       24576000 kB\nMemFree: 1 kB\n"), 24_576_000);
        assert_eq!(super::procs_meminfo_kib(""), 0);
    }
}
