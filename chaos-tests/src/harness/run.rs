//! One chaos run: start a cluster and workers, drive a workload, inject
//! seeded faults, heal, drain, read the final state and replica hashes, then
//! merge the history and check it.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, Result};
use baton_client::{Client, ClientConfig, proto};
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use serde::Serialize;

use super::cluster::{LocalCluster, NodeState, WORKER_TTL_MS};
use super::nemesis::{Fault, pick, topology};
use super::net::{Net, namespaces_unavailable};
use super::record::{Recorder, merge, mono_us};
use crate::history::{
    Body, FinalJob, FinalShard, FinalState, History, JobStatus, Nemesis, NemesisOutcome, NemesisPhase, ReadInvoke,
    ReadOk, ReadReply, Replica, SubmitFailure, SubmitInvoke, SubmitOk, TaskKey, TaskStatus,
};
use crate::{Config, Report, check};

/// Namespace every chaos job is submitted under.
pub const NAMESPACE: &str = "chaos";
/// Most submits a submitter retries one idempotency key after `info`.
const SUBMIT_RETRIES: u32 = 10;
/// Page size for the final listing.
const LIST_PAGE: u32 = 1000;

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
    /// Where the cluster's data, logs, raw files, history and report go.
    pub out: PathBuf,
    /// After the last heal, everything must be terminal within this, in ms.
    pub liveness_bound_ms: u64,
}

/// The summary row of a run (also written to `report.json`).
#[derive(Debug, Clone, Serialize)]
pub struct RunSummary {
    /// The run's name.
    pub name: String,
    /// Its seed.
    pub seed: u64,
    /// Voters at the start.
    pub nodes: u64,
    /// Faults injected, by name, with how many times.
    pub nemeses: BTreeMap<String, u32>,
    /// Faults skipped, with why.
    pub skipped: Vec<String>,
    /// Invokes of every kind.
    pub ops: usize,
    /// Jobs whose submit returned ok.
    pub acknowledged: usize,
    /// no_lost_jobs violations.
    pub lost: usize,
    /// exactly_once_commit violations.
    pub duplicates: usize,
    /// Completes answered FENCED (the cluster refusing stale tokens).
    pub fenced: usize,
    /// Elections won after the first leader (new terms with a leader), as
    /// polled every 100 ms.
    pub failovers: u64,
    /// Longest time from a worker fault to one of its tasks being granted to
    /// another worker, in ms.
    pub max_reassign_ms: Option<u64>,
    /// Every invariant held.
    pub passed: bool,
    /// The invariants that did not.
    pub failed_invariants: Vec<String>,
    /// The merged history.
    pub history: PathBuf,
    /// The command that replays this run's seed.
    pub replay: String,
    /// How long the run took, in ms.
    pub wall_ms: u64,
}

/// What the nemesis must undo at heal.
enum Undo {
    Restart(Vec<u64>),
    Resume(Vec<u64>),
    ResumeWorker(String),
    RestartWorker(String),
    Net,
    Nothing,
    Membership { down: u64, added: Vec<u64> },
}

struct Harness {
    cluster: LocalCluster,
    client: Client,
    rec: Arc<Recorder>,
    rng: StdRng,
    founders: Vec<u64>,
    start_us: u64,
}

impl Harness {
    fn now_ms(&self) -> u64 {
        (mono_us() - self.start_us) / 1000
    }

    fn nemesis(&self, name: &str, phase: NemesisPhase, outcome: NemesisOutcome, detail: String) {
        self.rec.record(Nemesis { name: name.into(), phase, outcome, detail });
    }

    async fn leader(&self) -> Option<u64> {
        self.cluster.leader(&self.client, &self.founders).await
    }

    fn running_nodes(&self) -> Vec<u64> {
        self.founders.iter().copied().filter(|id| self.cluster.node_state(*id) == NodeState::Running).collect()
    }

    /// Inject `fault`; returns what to undo and a description.
    async fn inject(&mut self, fault: Fault) -> Result<(Undo, String)> {
        let leader = self.leader().await;
        match fault {
            Fault::KillLeader | Fault::PauseLeader | Fault::PauseThenKill => {
                let l = leader.context("no leader known")?;
                match fault {
                    Fault::KillLeader => {
                        self.cluster.kill(l);
                        Ok((Undo::Restart(vec![l]), format!("node={l}")))
                    }
                    Fault::PauseLeader => {
                        self.cluster.pause(l);
                        Ok((Undo::Resume(vec![l]), format!("node={l}")))
                    }
                    _ => {
                        self.cluster.pause(l);
                        tokio::time::sleep(Duration::from_millis(self.rng.random_range(300..1000))).await;
                        self.cluster.kill(l);
                        Ok((Undo::Restart(vec![l]), format!("node={l} paused then killed")))
                    }
                }
            }
            Fault::KillFollower => {
                let fs: Vec<u64> = self.running_nodes().into_iter().filter(|&x| Some(x) != leader).collect();
                let f = *pick(&fs, 1, &mut self.rng).first().context("no follower running")?;
                self.cluster.kill(f);
                Ok((Undo::Restart(vec![f]), format!("node={f}")))
            }
            Fault::KillMinority => {
                let k = (self.founders.len() - 1) / 2;
                let victims = pick(&self.running_nodes(), k, &mut self.rng);
                for &v in &victims {
                    self.cluster.kill(v);
                }
                Ok((Undo::Restart(victims.clone()), format!("nodes={victims:?}")))
            }
            Fault::PauseWorker | Fault::KillWorker => {
                let live: Vec<String> = self
                    .cluster
                    .worker_names()
                    .into_iter()
                    .filter(|w| self.cluster.worker_state(w) == NodeState::Running)
                    .collect();
                let i = *pick(&(0..live.len()).collect::<Vec<_>>(), 1, &mut self.rng)
                    .first()
                    .context("no worker running")?;
                let w = live[i].clone();
                if fault == Fault::PauseWorker {
                    self.cluster.pause_worker(&w, true);
                    Ok((Undo::ResumeWorker(w.clone()), format!("worker={w}")))
                } else {
                    self.cluster.kill_worker(&w);
                    Ok((Undo::RestartWorker(w.clone()), format!("worker={w}")))
                }
            }
            Fault::PartitionHalves | Fault::IsolateLeader | Fault::MajoritiesRing | Fault::Bridge => {
                let reach = topology(fault, &self.founders, leader.unwrap_or(self.founders[0]), &mut self.rng);
                self.cluster.net.install(&reach)?;
                let shape: Vec<String> = reach.iter().map(|(a, s)| format!("{a}->{s:?}")).collect();
                Ok((Undo::Net, shape.join(" ")))
            }
            Fault::OneWay => {
                let pair = pick(&self.founders, 2, &mut self.rng);
                // Half the time the leader is the one that cannot be heard.
                let from = match leader {
                    Some(l) if self.rng.random_bool(0.5) => l,
                    _ => pair[0],
                };
                let to = if pair[1] != from { pair[1] } else { pair[0] };
                self.cluster.net.drop_link(from, to)?;
                Ok((Undo::Net, format!("drop {from}->{to}")))
            }
            Fault::RollingRestart => {
                for id in self.founders.clone() {
                    self.cluster.stop(id);
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    self.cluster.restart(id)?;
                    self.cluster.wait_leader(&self.client, &self.founders, Duration::from_secs(20)).await?;
                }
                Ok((Undo::Nothing, format!("nodes={:?} in turn", self.founders)))
            }
            Fault::Membership => {
                let fs: Vec<u64> = self.running_nodes().into_iter().filter(|&x| Some(x) != leader).collect();
                let down = *pick(&fs, 1, &mut self.rng).first().context("no follower running")?;
                self.cluster.kill(down);
                let first_new = self.cluster.node_ids().into_iter().max().unwrap_or(0).max(5) + 1;
                let added = vec![first_new, first_new + 1];
                for &id in &added {
                    self.cluster.spawn_node(id, false)?;
                    let a = self.cluster.net.addr(id).clone();
                    self.client.add_learner(id, &a.raft_addr(), &a.api_addr()).await?;
                }
                let voters: Vec<u64> = self.founders.iter().chain(&added).copied().collect();
                self.client.change_membership(voters.clone()).await?;
                Ok((Undo::Membership { down, added }, format!("node {down} down; voters -> {voters:?}")))
            }
        }
    }

    async fn undo(&mut self, undo: Undo) -> Result<String> {
        match undo {
            Undo::Restart(ids) => {
                for &id in &ids {
                    self.cluster.restart(id)?;
                }
                Ok(format!("restarted {ids:?}"))
            }
            Undo::Resume(ids) => {
                for &id in &ids {
                    self.cluster.resume(id);
                }
                Ok(format!("resumed {ids:?}"))
            }
            Undo::ResumeWorker(w) => {
                self.cluster.pause_worker(&w, false);
                Ok(format!("resumed {w}"))
            }
            Undo::RestartWorker(w) => {
                self.cluster.spawn_worker(&w)?;
                Ok(format!("restarted {w}"))
            }
            Undo::Net => {
                self.cluster.net.heal()?;
                Ok("links restored".into())
            }
            Undo::Nothing => Ok(String::new()),
            Undo::Membership { down, added } => {
                self.cluster.restart(down)?;
                self.client.change_membership(self.founders.clone()).await?;
                for id in &added {
                    self.cluster.stop(*id);
                }
                Ok(format!("node {down} restarted; voters -> {:?}; stopped {added:?}", self.founders))
            }
        }
    }
}

/// How long a fault stays in place, in ms.
fn hold_ms(fault: Fault, rng: &mut StdRng) -> u64 {
    match fault {
        // Past the lease, so the worker comes back a zombie.
        Fault::PauseWorker => WORKER_TTL_MS + rng.random_range(500..2_000),
        Fault::RollingRestart | Fault::Membership => rng.random_range(500..1_500),
        _ => rng.random_range(1_500..4_000),
    }
}

/// Jobs acknowledged so far, shared by the submitters and the reader.
type Acked = Arc<Mutex<Vec<u64>>>;

async fn submitter(client: Client, rec: Arc<Recorder>, name: String, seed: u64, stop: Arc<AtomicBool>, acked: Acked) {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut op = 0u64;
    let mut n = 0u64;
    while !stop.load(Ordering::Relaxed) {
        n += 1;
        let key = format!("{name}-{n}");
        let shards = rng.random_range(1..=3u32);
        for _ in 0..=SUBMIT_RETRIES {
            op += 1;
            rec.record(SubmitInvoke { client: name.clone(), op, key: key.clone(), shards });
            let spec = proto::JobSpec {
                namespace: NAMESPACE.into(),
                name: key.clone(),
                shards,
                max_attempts: 50,
                backoff_base_ms: 100,
                backoff_max_ms: 1_000,
                idempotency_key: key.clone(),
                ..Default::default()
            };
            match client.submit(spec).await {
                Ok(r) => {
                    rec.record(SubmitOk { client: name.clone(), op, job: r.job_id });
                    acked.lock().unwrap_or_else(|p| p.into_inner()).push(r.job_id);
                    break;
                }
                Err(e) if e.is_indeterminate() => {
                    rec.record(Body::SubmitInfo(SubmitFailure { client: name.clone(), op, error: e.to_string() }));
                }
                Err(e) => {
                    rec.record(Body::SubmitFail(SubmitFailure { client: name.clone(), op, error: e.to_string() }));
                    break;
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(rng.random_range(20..80))).await;
    }
}

/// Linearizable status reads of random acknowledged jobs until `stop`.
async fn reader(client: Client, rec: Arc<Recorder>, seed: u64, stop: Arc<AtomicBool>, acked: Acked) {
    let mut rng = StdRng::seed_from_u64(seed);
    let name = "r1".to_string();
    let mut op = 0;
    while !stop.load(Ordering::Relaxed) {
        tokio::time::sleep(Duration::from_millis(rng.random_range(50..200))).await;
        let job = {
            let a = acked.lock().unwrap_or_else(|p| p.into_inner());
            if a.is_empty() {
                continue;
            }
            a[rng.random_range(0..a.len())]
        };
        op += 1;
        rec.record(ReadInvoke { client: name.clone(), op, job });
        match client.get(job).await {
            Ok(j) => rec.record(ReadOk { client: name.clone(), op, status: job_status(j.status) }),
            Err(baton_client::Error::NotFound(_)) => {
                rec.record(Body::ReadNotFound(ReadReply { client: name.clone(), op }))
            }
            Err(e) => rec.record(Body::ReadFail(SubmitFailure { client: name.clone(), op, error: e.to_string() })),
        }
    }
}

/// Count elections won (new terms with a leader) until `stop`.
async fn watch_leader(endpoints: Vec<String>, stop: Arc<AtomicBool>, changes: Arc<AtomicU64>) {
    let mut cfg = ClientConfig::new(endpoints.clone());
    cfg.rpc_timeout = Duration::from_millis(300);
    let Ok(client) = Client::new(cfg) else { return };
    let mut last_term = 0u64;
    while !stop.load(Ordering::Relaxed) {
        for e in &endpoints {
            if let Ok(s) = client.status(Some(e)).await
                && s.role == "leader"
                && s.term > last_term
            {
                if last_term != 0 {
                    changes.fetch_add(1, Ordering::Relaxed);
                }
                last_term = s.term;
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn job_status(s: i32) -> JobStatus {
    match proto::JobStatus::try_from(s) {
        Ok(proto::JobStatus::Running) => JobStatus::Running,
        Ok(proto::JobStatus::Succeeded) => JobStatus::Succeeded,
        Ok(proto::JobStatus::Failed) => JobStatus::Failed,
        Ok(proto::JobStatus::Cancelled) => JobStatus::Cancelled,
        _ => JobStatus::Queued,
    }
}

fn task_status(s: i32) -> TaskStatus {
    match proto::TaskStatus::try_from(s) {
        Ok(proto::TaskStatus::Running) => TaskStatus::Running,
        Ok(proto::TaskStatus::Succeeded) => TaskStatus::Succeeded,
        Ok(proto::TaskStatus::Dead) => TaskStatus::Dead,
        Ok(proto::TaskStatus::Cancelled) => TaskStatus::Cancelled,
        _ => TaskStatus::Pending,
    }
}

/// Every chaos job, read linearizably from the leader.
async fn read_final(client: &Client) -> Result<Vec<FinalJob>> {
    let mut jobs = Vec::new();
    let mut page_token = 0;
    loop {
        let page = client
            .list(proto::ListJobsRequest {
                namespace: NAMESPACE.into(),
                page_size: LIST_PAGE,
                page_token,
                ..Default::default()
            })
            .await?;
        for j in page.jobs {
            let shards = client
                .results(j.id)
                .await?
                .into_iter()
                .map(|r| {
                    let status = task_status(r.status);
                    let done = status == TaskStatus::Succeeded;
                    FinalShard {
                        shard: r.shard,
                        status,
                        result: done.then(|| String::from_utf8_lossy(&r.result).into_owned()),
                        token: done.then_some(r.token),
                        latest_token: (r.attempts > 0).then_some(r.token),
                    }
                })
                .collect();
            jobs.push(FinalJob { id: j.id, key: j.idempotency_key, status: job_status(j.status), shards });
        }
        if page.next_page_token == 0 {
            return Ok(jobs);
        }
        page_token = page.next_page_token;
    }
}

/// Run once. `worker_exe` is the binary whose `worker` subcommand runs a
/// chaos worker (the `baton-chaos` binary itself).
pub async fn run(opts: &RunOpts, worker_exe: PathBuf) -> Result<RunSummary> {
    let wall = std::time::Instant::now();
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
    let mut cluster = LocalCluster::start(&opts.out, net, opts.nodes)?;
    let founders: Vec<u64> = (1..=opts.nodes).collect();
    let endpoints: Vec<String> = founders.iter().map(|id| cluster.endpoint(*id)).collect();
    {
        let exe = worker_exe.clone();
        let out = opts.out.clone();
        let eps = endpoints.join(",");
        let seed = opts.seed;
        cluster.set_worker_command(move |name| {
            let mut c = Command::new(&exe);
            c.args(["worker", "--name", name, "--endpoints", &eps, "--seed", &seed.to_string()])
                .arg("--out")
                .arg(out.join(format!("{name}.raw")));
            c
        });
    }
    tracing::info!(run = %opts.name, seed = opts.seed, nodes = opts.nodes, network = %net_desc, "chaos run starting");
    let client = cluster.client(&founders)?;
    cluster.wait_leader(&client, &founders, Duration::from_secs(30)).await?;

    let start_us = mono_us();
    let rec = Arc::new(Recorder::create(&opts.out.join("harness.raw"))?);
    for i in 1..=opts.workers {
        // Appending the run's worker files keeps a restarted worker's events:
        // each restart writes a new file.
        cluster.spawn_worker(&format!("w{i}"))?;
    }
    let stop = Arc::new(AtomicBool::new(false));
    let changes = Arc::new(AtomicU64::new(0));
    let watcher = tokio::spawn(watch_leader(endpoints.clone(), stop.clone(), changes.clone()));
    let acked: Acked = Arc::default();
    let mut load: Vec<_> = (1..=opts.submitters)
        .map(|i| {
            let name = format!("c{i}");
            tokio::spawn(submitter(client.clone(), rec.clone(), name, rng.random(), stop.clone(), acked.clone()))
        })
        .collect();
    load.push(tokio::spawn(reader(client.clone(), rec.clone(), rng.random(), stop.clone(), acked.clone())));

    let mut h =
        Harness { cluster, client: client.clone(), rec: rec.clone(), rng, founders: founders.clone(), start_us };
    let mut nemeses: BTreeMap<String, u32> = BTreeMap::new();
    let until = start_us + opts.duration_ms * 1000;
    tokio::time::sleep(Duration::from_millis(1_000)).await;
    // Rounds of every fault in a seeded order, so that a short run still
    // exercises each one it was given.
    let mut round: Vec<Fault> = Vec::new();
    while !faults.is_empty() && mono_us() < until {
        if round.is_empty() {
            round = faults.clone();
            round.shuffle(&mut h.rng);
        }
        let fault = round.pop().expect("refilled above");
        let started = h.now_ms();
        let (undo, outcome) = match h.inject(fault).await {
            Ok((undo, detail)) => {
                h.nemesis(fault.name(), NemesisPhase::Start, NemesisOutcome::Installed, detail);
                (Some(undo), NemesisOutcome::Healed)
            }
            Err(e) => {
                tracing::warn!(fault = %fault, error = %e, "fault not (fully) installed");
                h.nemesis(fault.name(), NemesisPhase::Start, NemesisOutcome::Indeterminate, e.to_string());
                (None, NemesisOutcome::Indeterminate)
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
            Ok(d) => h.nemesis(fault.name(), NemesisPhase::Heal, outcome, d),
            Err(e) => h.nemesis(fault.name(), NemesisPhase::Heal, NemesisOutcome::Indeterminate, e.to_string()),
        }
        tracing::info!(fault = %fault, at_ms = started, hold_ms = hold, "fault healed");
        tokio::time::sleep(Duration::from_millis(h.rng.random_range(800..2_000))).await;
    }

    // Heal everything, stop submitting, drain.
    stop.store(true, Ordering::Relaxed);
    h.cluster.heal_all()?;
    for id in h.founders.clone() {
        h.cluster.restart(id)?;
    }
    let heal_detail = "all links up, all nodes and workers running".to_string();
    h.nemesis("final-heal", NemesisPhase::Heal, NemesisOutcome::Healed, heal_detail);
    for task in load {
        let _ = task.await;
    }
    let _ = watcher.await;
    h.cluster.wait_leader(&client, &founders, Duration::from_secs(30)).await?;

    let drain_until = h.now_ms() + opts.liveness_bound_ms;
    let (jobs, drained_at) = loop {
        let jobs = read_final(&client).await?;
        let done = jobs.iter().all(|j| j.status.is_terminal() && j.shards.iter().all(|s| s.status.is_terminal()));
        if done {
            break (jobs, Some(h.now_ms()));
        }
        if h.now_ms() > drain_until {
            break (jobs, None);
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    rec.record(FinalState { drained_at, jobs });

    // Replica hashes: wait for every node to reach the same applied index.
    for attempt in 0..40 {
        let mut got = Vec::new();
        for &id in &founders {
            if let Ok((index, hash)) = client.state_hash(&h.cluster.endpoint(id)).await {
                got.push((id, index, hash));
            }
        }
        let indexes: BTreeSet<u64> = got.iter().map(|g| g.1).collect();
        if (got.len() == founders.len() && indexes.len() == 1) || attempt == 39 {
            for (node, applied_index, hash) in got {
                let state_hash = hash.iter().map(|b| format!("{b:02x}")).collect();
                rec.record(Replica { node, applied_index, state_hash });
            }
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    h.cluster.shutdown();

    let mut files = vec![opts.out.join("harness.raw")];
    for i in 1..=opts.workers {
        files.push(opts.out.join(format!("w{i}.raw")));
    }
    let (history, merge_stats) = merge(&files, start_us)?;
    let history_path = opts.out.join("history.jsonl");
    history.write(&history_path)?;
    let report = check(&history, &Config { liveness_bound_ms: opts.liveness_bound_ms });
    std::fs::write(opts.out.join("check.txt"), report.render_text())?;
    tracing::info!(late_assigns = merge_stats.late_assigns, torn = merge_stats.torn_lines, "history merged");

    let summary = summarize(opts, &history, &report, nemeses, skipped, changes.load(Ordering::Relaxed), wall);
    std::fs::write(opts.out.join("report.json"), serde_json::to_vec_pretty(&summary)?)?;
    Ok(summary)
}

fn summarize(
    opts: &RunOpts,
    history: &History,
    report: &Report,
    nemeses: BTreeMap<String, u32>,
    skipped: Vec<String>,
    failovers: u64,
    wall: std::time::Instant,
) -> RunSummary {
    use crate::Invariant;
    let mut ops = 0;
    let mut acknowledged = BTreeSet::new();
    let mut fenced = 0;
    for e in history.events() {
        match &e.body {
            Body::SubmitInvoke(_) | Body::CompleteInvoke(_) | Body::ReadInvoke(_) => ops += 1,
            Body::SubmitOk(s) => {
                acknowledged.insert(s.job);
            }
            Body::CompleteFenced(_) => fenced += 1,
            _ => {}
        }
    }
    RunSummary {
        name: opts.name.clone(),
        seed: opts.seed,
        nodes: opts.nodes,
        nemeses,
        skipped,
        ops,
        acknowledged: acknowledged.len(),
        lost: report.get(Invariant::NoLostJobs).violations.len(),
        duplicates: report.get(Invariant::ExactlyOnceCommit).violations.len(),
        fenced,
        failovers,
        max_reassign_ms: max_reassign_ms(history),
        passed: report.passed(),
        failed_invariants: report.failed().iter().map(|i| i.name().to_string()).collect(),
        history: opts.out.join("history.jsonl"),
        replay: format!(
            "cargo run -p baton-chaos --bin baton-chaos -- run --name {} --nodes {} --faults {} --duration-ms {} --seed {}",
            opts.name,
            opts.nodes,
            opts.faults.join(","),
            opts.duration_ms,
            opts.seed
        ),
        wall_ms: wall.elapsed().as_millis() as u64,
    }
}

/// The longest time from a worker fault (`pause-worker`, `kill-worker`) to
/// the first grant of one of that worker's unfinished tasks to another worker.
pub fn max_reassign_ms(history: &History) -> Option<u64> {
    let mut held: BTreeMap<TaskKey, String> = BTreeMap::new();
    let mut waiting: BTreeMap<TaskKey, (String, u64)> = BTreeMap::new();
    let mut ops: BTreeMap<(String, u64), TaskKey> = BTreeMap::new();
    let mut worst: Option<u64> = None;
    for e in history.events() {
        match &e.body {
            Body::Assign(a) => {
                let task = a.task();
                if let Some((from, at)) = waiting.get(&task)
                    && *from != a.worker
                {
                    worst = Some(worst.unwrap_or(0).max(e.t - at));
                    waiting.remove(&task);
                }
                held.insert(task, a.worker.clone());
            }
            Body::CompleteInvoke(c) => {
                ops.insert((c.worker.clone(), c.op), c.task());
            }
            Body::CompleteOk(r) | Body::CompleteDuplicate(r) => {
                if let Some(task) = ops.get(&(r.worker.clone(), r.op)) {
                    held.remove(task);
                    waiting.remove(task);
                }
            }
            Body::Nemesis(n) if n.phase == NemesisPhase::Start && n.outcome == NemesisOutcome::Installed => {
                if let Some(w) = n.detail.strip_prefix("worker=") {
                    for (task, owner) in &held {
                        if owner == w {
                            waiting.insert(*task, (w.to_string(), e.t));
                        }
                    }
                }
            }
            _ => {}
        }
    }
    worst
}
