//! One chaos run, in four phases: [`setup`] starts a cluster, the workers and
//! the workload; [`fault_rounds`] injects seeded faults; [`heal_and_drain`]
//! heals everything, waits until every task is terminal and reads the final
//! state and replica hashes; [`collect_and_check`] merges the history and
//! checks it.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use serde::Serialize;
use tokio::task::JoinHandle;

use super::cluster::{LocalCluster, RAFT_ELECTION_TIMEOUT_MAX_MS, WORKER_CHECK_MS, WORKER_TTL_MS};
use super::faults::{Harness, Injected, hold_ms};
use super::final_read::read_final;
use super::nemesis::Fault;
use super::net::{Net, namespaces_unavailable};
use super::record::{Recorder, merge, mono_us};
use super::schedules::schedule_submitter;
use super::secure::{self, Role, Secure};
use super::summary::{RunFacts, summarize};
use super::workload::{Acked, reader, submitter, watch_leader, workflow_submitter};
use crate::history::{FinalState, NemesisOutcome, NemesisPhase, Replica, RunConfig, Targets};
use crate::{Config, check};

pub use super::final_read::NAMESPACE;
pub use super::summary::{RunSummary, max_reassign_ms};

/// What one run does.
#[derive(Debug, Clone, Serialize)]
pub struct RunOpts {
    /// Row name in the summary (e.g. the smoke profile's entry).
    pub name: String,
    /// Voters at the start: 3 or 5.
    pub nodes: u64,
    /// Faults to draw from.
    pub faults: Vec<String>,
    /// How long faults are injected, in ms (the drain comes after).
    pub duration_ms: u64,
    /// Seeds the fault schedule and the workload.
    pub seed: u64,
    /// Chaos worker processes.
    pub workers: usize,
    /// Submitting tasks (plus one reader).
    pub submitters: usize,
    /// Tasks submitting workflows.
    pub workflow_submitters: usize,
    /// Tasks creating schedules and a trigger and publishing events.
    pub schedule_submitters: usize,
    /// Where the cluster's data, logs, raw files, history and report go.
    pub out: PathBuf,
    /// After the last heal, everything must be terminal within this, in ms.
    pub liveness_bound_ms: u64,
    /// TLS on every port and `[auth]` on, every client with its token
    /// (see [`super::secure`]).
    pub secure: bool,
}

impl RunOpts {
    /// The command that replays this run's seed.
    pub fn replay_command(&self) -> String {
        format!(
            "cargo run -p baton-chaos --bin baton-chaos -- run --name {} --nodes {} --faults {} --duration-ms {} --seed {}",
            self.name,
            self.nodes,
            self.faults.join(","),
            self.duration_ms,
            self.seed
        ) + if self.secure { " --secure" } else { "" }
    }
}

/// Quiet time after the workload starts, before the first fault.
const WARMUP: Duration = Duration::from_millis(1_000);
/// How long to wait for a leader after starting or healing the cluster.
const LEADER_WAIT: Duration = Duration::from_secs(30);
/// Replica hash polls, 100 ms apart, waiting for equal applied indexes.
const REPLICA_POLLS: usize = 40;

/// A run in progress: the cluster under the nemesis, and the load on it.
struct Live {
    h: Harness,
    faults: Vec<Fault>,
    skipped: Vec<String>,
    stop: Arc<AtomicBool>,
    failovers: Arc<AtomicU64>,
    watcher: JoinHandle<()>,
    load: Vec<JoinHandle<()>>,
}

/// Run once. `worker_exe` is the binary whose `worker` subcommand runs a
/// chaos worker (the `baton-chaos` binary itself).
pub async fn run(opts: &RunOpts, worker_exe: PathBuf) -> Result<RunSummary> {
    let wall = Instant::now();
    let mut live = setup(opts, worker_exe).await?;
    let nemeses = fault_rounds(&mut live, opts).await;
    let (start_us, skipped, failovers) = heal_and_drain(live, opts).await?;
    collect_and_check(opts, start_us, nemeses, skipped, failovers, wall)
}

/// Start the nodes, the recorder, the workers, the submitters, the reader
/// and the leader watcher. Faults the machine cannot inject are skipped.
async fn setup(opts: &RunOpts, worker_exe: PathBuf) -> Result<Live> {
    tracing::info!(run = %opts.name, out = %opts.out.display(), "setup");
    let faults = Fault::parse_list(&opts.faults.join(",")).map_err(anyhow::Error::msg)?;
    // A fresh directory: raw files are appended to, so old ones must go.
    if opts.out.exists() {
        std::fs::remove_dir_all(&opts.out).with_context(|| format!("cannot clear {}", opts.out.display()))?;
    }
    std::fs::create_dir_all(&opts.out)?;
    let mut rng = StdRng::seed_from_u64(opts.seed);
    let mut skipped = Vec::new();
    let wants_net = faults.iter().any(|f| f.needs_network());
    let net = match (wants_net, namespaces_unavailable()) {
        (true, None) => Net::namespaces()?,
        (true, Some(why)) => {
            skipped.push(format!("partition faults: {why}"));
            Net::loopback()
        }
        (false, _) => Net::loopback(),
    };
    let faults: Vec<Fault> = faults
        .into_iter()
        .filter(|f| {
            if f.needs_network() && !net.can_partition() {
                return false;
            }
            if *f == Fault::Membership && opts.nodes != 3 {
                skipped.push("membership: only from 3 voters (3 -> 5 -> 3)".into());
                return false;
            }
            true
        })
        .collect();
    let net_desc = net.describe();
    let secure = if opts.secure {
        // Node certificates name every address a node may get: namespace
        // addresses are per node; on loopback 127.0.0.1 is always named.
        let hosts: Vec<String> =
            if net.can_partition() { (1..=secure::MAX_NODE_ID).map(|id| net.ip_of(id)).collect() } else { Vec::new() };
        let bin = super::cluster::baton_bin()?;
        Some(Secure::create(&bin, &opts.out.join("secure"), &hosts)?)
    } else {
        None
    };
    let mut cluster = LocalCluster::start(&opts.out, net, opts.nodes, secure)?;
    let founders: Vec<u64> = (1..=opts.nodes).collect();
    let endpoints: Vec<String> = founders.iter().map(|id| cluster.endpoint(*id)).collect();
    {
        let exe = worker_exe.clone();
        let out = opts.out.clone();
        let eps = endpoints.join(",");
        let seed = opts.seed;
        let secure = cluster.secure().map(|s| (s.ca.clone(), s.worker_token_file.clone()));
        cluster.set_worker_command(move |name| {
            let mut c = Command::new(&exe);
            c.args(["worker", "--name", name, "--endpoints", &eps, "--seed", &seed.to_string()])
                .arg("--out")
                .arg(out.join(format!("{name}.raw")));
            if let Some((ca, token_file)) = &secure {
                c.arg("--ca").arg(ca).arg("--token-file").arg(token_file);
            }
            c
        });
    }
    tracing::info!(run = %opts.name, seed = opts.seed, nodes = opts.nodes, network = %net_desc, "chaos run starting");
    let client = cluster.client(&founders)?;
    // The workload's own credential (the same client when not secure).
    let load_client = cluster.client_as(&founders, Role::Submitter)?;
    let watch_cfg = cluster.client_config(&founders, Role::Admin)?;
    cluster.wait_leader(&client, &founders, LEADER_WAIT).await?;

    let start_us = mono_us();
    let rec = Arc::new(Recorder::create(&opts.out.join("harness.raw"))?);
    // First in the history: the timing the checker's bounds are computed from.
    rec.record(RunConfig {
        ttl_ms: WORKER_TTL_MS,
        check_interval_ms: WORKER_CHECK_MS,
        election_timeout_max_ms: RAFT_ELECTION_TIMEOUT_MAX_MS,
    });
    for i in 1..=opts.workers {
        // Appending the run's worker files keeps a restarted worker's events:
        // each restart writes a new file.
        cluster.spawn_worker(&format!("w{i}"))?;
    }
    let stop = Arc::new(AtomicBool::new(false));
    let failovers = Arc::new(AtomicU64::new(0));
    let watcher = tokio::spawn(watch_leader(watch_cfg, rec.clone(), stop.clone(), failovers.clone()));
    let acked: Acked = Arc::default();
    let mut load: Vec<_> = (1..=opts.submitters)
        .map(|i| {
            let name = format!("c{i}");
            tokio::spawn(submitter(load_client.clone(), rec.clone(), name, rng.random(), stop.clone(), acked.clone()))
        })
        .collect();
    load.push(tokio::spawn(reader(load_client.clone(), rec.clone(), rng.random(), stop.clone(), acked)));
    for i in 1..=opts.workflow_submitters {
        let name = format!("f{i}");
        load.push(tokio::spawn(workflow_submitter(load_client.clone(), rec.clone(), name, rng.random(), stop.clone())));
    }
    for i in 1..=opts.schedule_submitters {
        let name = format!("s{i}");
        load.push(tokio::spawn(schedule_submitter(load_client.clone(), rec.clone(), name, rng.random(), stop.clone())));
    }

    let h = Harness { cluster, client, rec, rng, founders, start_us };
    Ok(Live { h, faults, skipped, stop, failovers, watcher, load })
}

/// Inject faults for `opts.duration_ms`, in rounds of every fault in a
/// seeded order, so that a short run still exercises each one it was given.
/// Returns how many times each fault was injected.
async fn fault_rounds(live: &mut Live, opts: &RunOpts) -> BTreeMap<String, u32> {
    tracing::info!(faults = live.faults.len(), duration_ms = opts.duration_ms, "fault rounds");
    let h = &mut live.h;
    let mut nemeses: BTreeMap<String, u32> = BTreeMap::new();
    let until = h.start_us + opts.duration_ms * 1000;
    tokio::time::sleep(WARMUP).await;
    let mut round: Vec<Fault> = Vec::new();
    while !live.faults.is_empty() && mono_us() < until {
        if round.is_empty() {
            round = live.faults.clone();
            round.shuffle(&mut h.rng);
        }
        let fault = round.pop().expect("refilled above");
        let started = h.now_ms();
        let (undo, targets, outcome) = match h.inject(fault).await {
            Ok(Injected { undo, targets, detail }) => {
                h.nemesis(fault.name(), NemesisPhase::Start, NemesisOutcome::Installed, targets.clone(), detail);
                (Some(undo), targets, NemesisOutcome::Healed)
            }
            Err(e) => {
                tracing::warn!(fault = %fault, error = %e, "fault not (fully) installed");
                let indeterminate = NemesisOutcome::Indeterminate;
                h.nemesis(fault.name(), NemesisPhase::Start, indeterminate, Targets::default(), e.to_string());
                (None, Targets::default(), indeterminate)
            }
        };
        *nemeses.entry(fault.name().to_string()).or_default() += 1;
        let hold = hold_ms(fault, &mut h.rng);
        tokio::time::sleep(Duration::from_millis(hold)).await;
        let detail = match undo {
            Some(u) => h.undo(u).await,
            None => h.cluster.heal_all().map(|_| "healed everything".into()),
        };
        match detail {
            Ok(d) => h.nemesis(fault.name(), NemesisPhase::Heal, outcome, targets, d),
            Err(e) => {
                h.nemesis(fault.name(), NemesisPhase::Heal, NemesisOutcome::Indeterminate, targets, e.to_string())
            }
        }
        tracing::info!(fault = %fault, at_ms = started, hold_ms = hold, "fault healed");
        tokio::time::sleep(Duration::from_millis(h.rng.random_range(800..2_000))).await;
    }
    nemeses
}

/// Heal everything, stop the workload, wait (up to the liveness bound) until
/// every task is terminal, then record the final state and every node's state
/// hash, and stop the cluster. Returns the run's start, the skipped faults and
/// the failovers the watcher counted.
async fn heal_and_drain(live: Live, opts: &RunOpts) -> Result<(u64, Vec<String>, u64)> {
    tracing::info!(liveness_bound_ms = opts.liveness_bound_ms, "heal and drain");
    let Live { mut h, skipped, stop, failovers, watcher, load, .. } = live;
    stop.store(true, Ordering::Relaxed);
    h.cluster.heal_all()?;
    for id in h.founders.clone() {
        h.cluster.restart(id)?;
    }
    let heal_detail = "all links up, all nodes and workers running".to_string();
    let every_node = Targets::nodes(h.founders.clone());
    h.nemesis("final-heal", NemesisPhase::Heal, NemesisOutcome::Healed, every_node, heal_detail);
    for task in load {
        let _ = task.await;
    }
    let _ = watcher.await;
    h.cluster.wait_leader(&h.client, &h.founders, LEADER_WAIT).await?;

    let drain_until = h.now_ms() + opts.liveness_bound_ms;
    let (jobs, workflows, drained_at) = loop {
        let (jobs, workflows) = read_final(&h.client).await?;
        let done = jobs.iter().all(|j| j.status.is_terminal() && j.shards.iter().all(|s| s.status.is_terminal()))
            && workflows.iter().all(|w| w.status.is_terminal());
        if done {
            break (jobs, workflows, Some(h.now_ms()));
        }
        if h.now_ms() > drain_until {
            break (jobs, workflows, None);
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    h.rec.record(FinalState { drained_at, jobs, workflows });

    // Replica hashes: wait for every node to reach the same applied index.
    for attempt in 0..REPLICA_POLLS {
        let mut got = Vec::new();
        for &id in &h.founders {
            if let Ok((index, hash)) = h.client.state_hash(&h.cluster.endpoint(id)).await {
                got.push((id, index, hash));
            }
        }
        let indexes: BTreeSet<u64> = got.iter().map(|g| g.1).collect();
        if (got.len() == h.founders.len() && indexes.len() == 1) || attempt == REPLICA_POLLS - 1 {
            for (node, applied_index, hash) in got {
                let state_hash = hash.iter().map(|b| format!("{b:02x}")).collect();
                h.rec.record(Replica { node, applied_index, state_hash });
            }
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    h.cluster.shutdown();
    Ok((h.start_us, skipped, failovers.load(Ordering::Relaxed)))
}

/// Merge every process's raw file into `history.jsonl`, check it, and write
/// `check.txt` and `report.json`.
fn collect_and_check(
    opts: &RunOpts,
    start_us: u64,
    nemeses: BTreeMap<String, u32>,
    skipped: Vec<String>,
    failovers: u64,
    wall: Instant,
) -> Result<RunSummary> {
    tracing::info!(out = %opts.out.display(), "collect and check");
    let mut files = vec![opts.out.join("harness.raw")];
    for i in 1..=opts.workers {
        files.push(opts.out.join(format!("w{i}.raw")));
    }
    let (history, merge_stats) = merge(&files, start_us)?;
    let history_path = opts.out.join("history.jsonl");
    history.write(&history_path)?;
    let config = Config { liveness_bound_ms: opts.liveness_bound_ms, ..Config::default() };
    let report = check(&history, &config);
    std::fs::write(opts.out.join("check.txt"), report.render_text())?;
    tracing::info!(late_assigns = merge_stats.late_assigns, torn = merge_stats.torn_lines, "history merged");

    let run = RunFacts {
        name: opts.name.clone(),
        seed: opts.seed,
        nodes: opts.nodes,
        nemeses,
        skipped,
        failovers,
        history: history_path,
        replay: opts.replay_command(),
        wall_ms: wall.elapsed().as_millis() as u64,
    };
    let summary = summarize(run, &history, &report);
    std::fs::write(opts.out.join("report.json"), serde_json::to_vec_pretty(&summary)?)?;
    Ok(summary)
}
