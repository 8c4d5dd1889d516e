//! `baton-chaos`: run chaos tests against a local cluster of real `baton`
//! processes, and check the histories they record. See docs/chaos.md.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Result, bail};
use baton_chaos::harness::profile::{self, Entry};
use baton_chaos::harness::run::{self, RunOpts, RunSummary};
use baton_chaos::harness::worker::{self, WorkerOpts};
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "baton-chaos", about = "Chaos tests for a local Baton cluster, with a history checker")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// One run: start a cluster, inject faults, heal, drain, check.
    Run {
        /// Row name in the summary.
        #[arg(long, default_value = "run")]
        name: String,
        /// Voters: 3 or 5.
        #[arg(long, default_value_t = 3)]
        nodes: u64,
        /// Faults and groups, comma-separated: kill, pause, partition, zombie,
        /// restart, membership, all, or single faults (kill-leader, bridge, ...).
        #[arg(long, default_value = "all")]
        faults: String,
        /// How long faults are injected, in ms.
        #[arg(long, default_value_t = 60_000)]
        duration_ms: u64,
        /// Seeds the fault schedule and the workload; random when omitted.
        #[arg(long)]
        seed: Option<u64>,
        #[arg(long, default_value_t = 4)]
        workers: usize,
        #[arg(long, default_value_t = 2)]
        submitters: usize,
        /// Tasks submitting workflows (chains, fan-outs, choices, map-reduces, gates).
        #[arg(long, default_value_t = 1)]
        workflow_submitters: usize,
        /// Tasks creating 1-s schedules and a trigger and publishing events.
        #[arg(long, default_value_t = 1)]
        schedule_submitters: usize,
        /// Output directory (cleared first).
        #[arg(long, default_value = "target/chaos/run")]
        out: PathBuf,
        /// After the last heal, everything must be terminal within this, in ms.
        #[arg(long, default_value_t = baton_chaos::Config::DEFAULT_LIVENESS_BOUND_MS)]
        liveness_bound_ms: u64,
        /// TLS on every node (mutual TLS between nodes) and `[auth]` on;
        /// every client connects with the run's CA and its own token.
        #[arg(long)]
        secure: bool,
    },
    /// The CI profile: one short run per fault family (about 3 minutes), each
    /// with TLS and tokens on (`--secure`).
    Smoke {
        /// Base seed; run i uses seed + i. Random when omitted.
        #[arg(long, env = "BATON_CHAOS_SEED")]
        seed: Option<u64>,
        #[arg(long, default_value = "target/chaos/smoke")]
        out: PathBuf,
    },
    /// Random faults for a long time: rotates 3- and 5-node runs of 5 minutes.
    Soak {
        /// Total time, e.g. 3600 for an hour, in seconds.
        #[arg(long, default_value_t = 3600)]
        seconds: u64,
        #[arg(long, env = "BATON_CHAOS_SEED")]
        seed: Option<u64>,
        #[arg(long, default_value = "target/chaos/soak")]
        out: PathBuf,
    },
    /// Internal: one chaos worker process (started by the harness).
    Worker {
        #[arg(long)]
        name: String,
        /// Comma-separated `http://host:port` (or `https://`) API endpoints.
        #[arg(long, value_delimiter = ',')]
        endpoints: Vec<String>,
        /// The cluster CA (PEM), for `https://` endpoints.
        #[arg(long)]
        ca: Option<PathBuf>,
        /// File holding the bearer token (not on the command line, where `ps` shows it).
        #[arg(long)]
        token_file: Option<PathBuf>,
        #[arg(long, default_value_t = 4)]
        capacity: u32,
        #[arg(long, default_value_t = 20)]
        work_min_ms: u64,
        #[arg(long, default_value_t = 400)]
        work_max_ms: u64,
        #[arg(long, default_value_t = 0)]
        seed: u64,
        #[arg(long)]
        out: PathBuf,
    },
}

fn seed_or_random(seed: Option<u64>) -> u64 {
    seed.unwrap_or_else(rand::random)
}

async fn run_all(runs: Vec<RunOpts>, report: PathBuf) -> Result<Vec<RunSummary>> {
    let exe = std::env::current_exe()?;
    let mut rows = Vec::new();
    for opts in runs {
        eprintln!(
            "chaos: run {} ({} nodes, faults {}, {} s, seed {})",
            opts.name,
            opts.nodes,
            opts.faults.join(","),
            opts.duration_ms / 1000,
            opts.seed
        );
        let started = Instant::now();
        let row = run::run(&opts, exe.clone()).await?;
        eprintln!(
            "chaos: run {} {} after {:.0} s; replay: {}",
            row.name,
            if row.passed { "passed" } else { "FAILED" },
            started.elapsed().as_secs_f64(),
            row.replay
        );
        rows.push(row);
    }
    let table = profile::table(&rows);
    println!("{table}");
    if let Some(dir) = report.parent() {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::write(&report, serde_json::to_vec_pretty(&rows)?)?;
    std::fs::write(report.with_extension("txt"), &table)?;
    println!("report: {} (and .txt)", report.display());
    Ok(rows)
}

fn verdict(rows: &[RunSummary]) -> Result<()> {
    let failed: Vec<&str> = rows.iter().filter(|r| !r.passed).map(|r| r.name.as_str()).collect();
    if failed.is_empty() {
        println!("chaos: {} runs, all invariants held", rows.len());
        Ok(())
    } else {
        bail!("chaos: invariants violated in {failed:?}; each row above prints its replay command")
    }
}

fn profile_runs(entries: &[Entry], seed: u64, root: &std::path::Path) -> Vec<RunOpts> {
    entries.iter().enumerate().map(|(i, e)| e.opts(seed.wrapping_add(i as u64), root, i)).collect()
}

#[tokio::main]
async fn main() -> Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("BATON_LOG").unwrap_or_else(|_| "warn,baton_chaos=info".into()),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    match Cli::parse().cmd {
        Cmd::Run {
            name,
            nodes,
            faults,
            duration_ms,
            seed,
            workers,
            submitters,
            workflow_submitters,
            schedule_submitters,
            out,
            liveness_bound_ms,
            secure,
        } => {
            if !(nodes == 3 || nodes == 5) {
                bail!("--nodes must be 3 or 5, not {nodes}");
            }
            baton_chaos::harness::nemesis::Fault::parse_list(&faults).map_err(anyhow::Error::msg)?;
            let opts = RunOpts {
                name,
                nodes,
                faults: faults.split(',').map(str::to_string).collect(),
                duration_ms,
                seed: seed_or_random(seed),
                workers: workers.max(1),
                submitters: submitters.max(1),
                workflow_submitters,
                schedule_submitters,
                out: out.clone(),
                liveness_bound_ms,
                secure,
            };
            let rows = run_all(vec![opts], out.join("summary.json")).await?;
            verdict(&rows)
        }
        Cmd::Smoke { seed, out } => {
            let seed = seed_or_random(seed);
            println!("chaos smoke: base seed {seed} (replay all: BATON_CHAOS_SEED={seed} make chaos-smoke)");
            let rows = run_all(profile_runs(&profile::SMOKE, seed, &out), out.join("summary.json")).await?;
            verdict(&rows)
        }
        Cmd::Soak { seconds, seed, out } => {
            let seed = seed_or_random(seed);
            println!("chaos soak: base seed {seed}, {seconds} s");
            let until = Instant::now() + Duration::from_secs(seconds);
            let mut runs = Vec::new();
            let mut i = 0;
            let mut budget = Duration::from_secs(seconds);
            while budget > Duration::ZERO {
                let e = &profile::SOAK[i % profile::SOAK.len()];
                let mut o = e.opts(seed.wrapping_add(i as u64), &out, i);
                o.duration_ms = o.duration_ms.min(budget.as_millis() as u64).max(10_000);
                budget = budget.saturating_sub(Duration::from_millis(o.duration_ms + 20_000));
                runs.push(o);
                i += 1;
            }
            let rows = run_all(runs, out.join("summary.json")).await?;
            eprintln!(
                "chaos soak: finished {:?} past the planned end",
                Instant::now().saturating_duration_since(until)
            );
            verdict(&rows)
        }
        Cmd::Worker { name, endpoints, ca, token_file, capacity, work_min_ms, work_max_ms, seed, out } => {
            let tls = match &ca {
                Some(ca) => Some(baton_client::TlsOptions::from_files(Some(ca), None, None)?),
                None => None,
            };
            let token = match &token_file {
                Some(p) => Some(
                    std::fs::read_to_string(p)
                        .map_err(|e| anyhow::anyhow!("cannot read token file {}: {e}", p.display()))?
                        .trim()
                        .to_string(),
                ),
                None => None,
            };
            let work_ms = (work_min_ms, work_max_ms);
            worker::run(WorkerOpts { name, endpoints, capacity, work_ms, seed, out, tls, token }).await
        }
    }
}
