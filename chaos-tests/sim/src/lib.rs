//! Baton's deterministic simulation tier.
//!
//! [`run`] builds an in-process cluster of 3 or 5 openraft nodes that use
//! Baton's real apply core ([`baton_raft_store::Core`] over a `MemKv`) as
//! their state machine, on a simulated network and simulated disks, drives
//! the Baton workload against it (submitters, a leader driver like the
//! coordinator's, workers with fencing tokens), injects seeded faults, records
//! a [`baton_chaos::History`] and judges it with [`baton_chaos::check`].
//!
//! Determinism: one seeded RNG ([`rand::rngs::StdRng`]) decides everything,
//! the runtime is tokio's current-thread scheduler with paused time, the sim
//! iterates only `BTreeMap`s, and openraft's election timeouts are pinned per
//! node (a one-ms range, drawn from the seeded RNG) so its own thread RNG has
//! no effect. Every simulated event is folded into a blake3 trace hash; the
//! same seed gives the same hash.
//!
//! Storage model: the log loses unsynced writes on a crash and acknowledges
//! appends only after a simulated fsync; the vote is written synchronously.
//! The state machine is volatile but snapshots every few dozen entries to
//! the disk (durable at once); the log is purged behind snapshots, lagging
//! followers get InstallSnapshot, and a restarted node starts from its last
//! snapshot and re-applies its durable log after it.

pub mod disk;
pub mod flows;
pub mod nemesis;
pub mod net;
pub mod node;
pub mod schedules;
pub mod store;
pub mod workload;
pub mod world;

use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use baton_chaos::history::{
    FinalJob, FinalShard, FinalState, FinalStep, FinalWorkflow, JobStatus, RunConfig, TaskStatus,
};
use baton_chaos::{History, Invariant, Report};
use baton_raft_store::{Core, Kv, StepState, TaskKey, TaskState, WorkflowRecord, WorkflowStatus, state_hash};

use crate::world::{Phase, Stats, World};

/// What to simulate. The seed is separate: the same config runs many seeds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SimConfig {
    /// Cluster size: 3 or 5.
    pub nodes: usize,
    /// Nemesis steps (one fault each) during the workload phase.
    pub steps: usize,
    pub clients: usize,
    pub jobs_per_client: usize,
    /// Submitters of workflows ([`flows`]), and workflows each submits.
    pub workflow_clients: usize,
    pub workflows_per_client: usize,
    /// Submitters of schedules, triggers and events ([`schedules`]).
    pub schedule_clients: usize,
    pub workers: usize,
    /// Worker lease, ms.
    pub ttl_ms: u64,
    /// How long an attempt runs, ms (inclusive range).
    pub exec_ms: (u64, u64),
    /// Largest wall-clock skew of a node, either way, ms. Half the seeds
    /// skew every node's clock by up to this much (and give it a rate error),
    /// and clock-jump faults step a clock by up to this much. It is longer
    /// than [`DRAIN_LIMIT`], so a leader that let skew delay work would fail
    /// the liveness check instead of draining late.
    pub max_skew_ms: u64,
    /// The deliberate bug: the log store acknowledges appends before fsync.
    pub ack_before_fsync: bool,
    /// The deliberate bug: leaders use their wall clock as log time (plans,
    /// timeouts, stamps), as Baton did before it had a log clock.
    pub wall_clock_as_log_time: bool,
    /// The deliberate bug: the first job of the first submitter carries this
    /// many payload bytes, past `limits::MAX_JOB_PAYLOAD_BYTES`. The sim's
    /// clients propose directly, without the coordinator's edge validation,
    /// so such an entry reaches the log and shows why the limit exists.
    pub oversized_job_bytes: Option<usize>,
    /// Print every traced event to stderr (for debugging a replay; no effect on the run).
    pub print_trace: bool,
}

impl Default for SimConfig {
    fn default() -> Self {
        Self {
            nodes: 3,
            steps: 20,
            clients: 3,
            jobs_per_client: 6,
            workflow_clients: 2,
            workflows_per_client: 2,
            schedule_clients: 1,
            workers: 4,
            ttl_ms: 1_500,
            exec_ms: (30, 600),
            max_skew_ms: 300_000,
            ack_before_fsync: false,
            wall_clock_as_log_time: false,
            oversized_job_bytes: None,
            print_trace: false,
        }
    }
}

impl SimConfig {
    /// The command that replays `seed` with this config.
    pub fn replay_command(&self, seed: u64) -> String {
        let mut s = format!("cargo run -p baton-sim -- --seed {seed} --nodes {} --steps {}", self.nodes, self.steps);
        if self.max_skew_ms != SimConfig::default().max_skew_ms {
            s.push_str(&format!(" --max-skew-ms {}", self.max_skew_ms));
        }
        if self.ack_before_fsync {
            s.push_str(" --ack-before-fsync");
        }
        if self.wall_clock_as_log_time {
            s.push_str(" --wall-clock-as-log-time");
        }
        if let Some(b) = self.oversized_job_bytes {
            s.push_str(&format!(" --oversized-job-bytes {b}"));
        }
        s
    }
}

/// How long after the heal the sim waits for the work to drain (sim time).
pub const DRAIN_LIMIT: Duration = Duration::from_secs(60);

/// Everything one seed produced.
#[derive(Debug, Clone)]
pub struct Outcome {
    pub seed: u64,
    pub config: SimConfig,
    pub trace_hash: String,
    pub trace_events: u64,
    pub history: History,
    pub report: Report,
    pub stats: Stats,
    pub summary: Summary,
    /// Simulated time the run covered, ms.
    pub sim_ms: u64,
    /// Breaches the sim saw directly (e.g. a report accepted after its
    /// session's end was committed). Any makes the run fail.
    pub sim_violations: Vec<String>,
}

/// The numbers of one run's row in the summary table.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Summary {
    /// Client operations invoked: submits and completes.
    pub ops: u64,
    /// Distinct jobs whose submit was acknowledged.
    pub acknowledged: u64,
    /// Violations of no_lost_jobs.
    pub lost: u64,
    pub duplicates: u64,
    pub fenced: u64,
    pub infos: u64,
    /// Jobs that ended failed (a dead shard) and cancelled, in the final state.
    pub failed_jobs: u64,
    pub cancelled_jobs: u64,
    /// Workflows in the final state, and of those the failed and cancelled
    /// ones; steps that ended skipped and failed.
    pub workflows: u64,
    pub failed_workflows: u64,
    pub cancelled_workflows: u64,
    pub skipped_steps: u64,
    pub failed_steps: u64,
    /// Jobs in the final state started by a schedule's fire, and by an event.
    pub schedule_runs: u64,
    pub event_runs: u64,
}

impl Outcome {
    pub fn passed(&self) -> bool {
        self.report.passed() && self.sim_violations.is_empty()
    }

    pub fn replay_command(&self) -> String {
        self.config.replay_command(self.seed)
    }

    pub fn verdict(&self) -> &'static str {
        if self.passed() { "pass" } else { "FAIL" }
    }

    pub fn failed_invariants(&self) -> Vec<Invariant> {
        self.report.failed()
    }
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (s, st) = (&self.summary, &self.stats);
        write!(
            f,
            "seed {} nodes {}: ops={} acked={} lost={} dup={} fenced={} elections={} crashes={} partitions={} \
             pauses={} zombie_fenced={}/{} lost_unsynced={} stale_deliveries={} dropped={} cancels={} \
             fail_reports={} progress={} large_jobs={} failed_jobs={} cancelled_jobs={} snapshots={}/{} \
             workflows={} failed_workflows={} cancelled_workflows={} skipped_steps={} failed_steps={} \
             gates_expired={} gates_decided={} reduces={} choices={} children={} schedules={} schedule_runs={} \
             fires_skipped={} held={} events={} duplicate_events={} event_runs={} sim={}ms trace={} verdict={}",
            self.seed,
            self.config.nodes,
            s.ops,
            s.acknowledged,
            s.lost,
            s.duplicates,
            s.fenced,
            st.elections,
            st.crashes,
            st.partitions,
            st.pauses,
            st.zombie_fenced,
            st.zombie_reports,
            st.lost_unsynced_entries,
            st.stale_deliveries,
            st.dropped,
            st.cancels,
            st.fail_reports,
            st.progress_reports,
            st.large_jobs,
            s.failed_jobs,
            s.cancelled_jobs,
            st.snapshot_builds,
            st.snapshot_installs,
            s.workflows,
            s.failed_workflows,
            s.cancelled_workflows,
            s.skipped_steps,
            s.failed_steps,
            st.gates_expired,
            st.gates_decided,
            st.reduces,
            st.choices,
            st.children,
            st.schedules,
            s.schedule_runs,
            st.fires_skipped,
            st.held_attempts,
            st.events_published,
            st.events_duplicate,
            s.event_runs,
            self.sim_ms,
            self.trace_hash,
            self.verdict()
        )
    }
}

/// Run one seed to completion on a fresh current-thread runtime with paused time.
pub fn run(seed: u64, config: &SimConfig) -> Outcome {
    let rt =
        tokio::runtime::Builder::new_current_thread().enable_all().start_paused(true).build().expect("tokio runtime");
    let out = rt.block_on(simulate(seed, config.clone()));
    // Dropping the runtime drops every task still parked (old incarnations, timers).
    drop(rt);
    out
}

async fn simulate(seed: u64, config: SimConfig) -> Outcome {
    let world = World::new(seed, config.clone());
    // First in the history: the timing the reassignment bound is computed
    // from. The sim's failure detector is the leader driver's tick.
    world.lock().unwrap().history.config(
        0,
        RunConfig {
            ttl_ms: config.ttl_ms,
            check_interval_ms: node::DRIVER_TICK_MS,
            election_timeout_max_ms: node::ELECTION_TIMEOUT_MAX_MS,
        },
    );
    let n = config.nodes;
    let mut rafts = Vec::new();
    for id in 1..=n as u64 {
        rafts.push(node::start(&world, id).await);
    }
    rafts[0].initialize(node::members(n)).await.expect("initialize the cluster");

    {
        let mut w = world.lock().unwrap();
        for i in 0..config.workers {
            let ws = workload::new_worker(&mut w, i + 1);
            w.workers.push(ws);
        }
    }
    for i in 0..config.workers {
        tokio::spawn(workload::worker(world.clone(), i));
    }
    for c in 0..config.clients {
        tokio::spawn(workload::submitter(world.clone(), c + 1, config.jobs_per_client));
    }
    for c in 0..config.workflow_clients {
        tokio::spawn(flows::submitter(world.clone(), c + 1, config.workflows_per_client));
    }
    for c in 0..config.schedule_clients {
        tokio::spawn(schedules::submitter(world.clone(), c + 1));
    }
    nemesis::run(world.clone(), config.steps).await;

    // Heal and drain.
    nemesis::heal_all(&world).await;
    world.lock().unwrap().phase = Phase::Drain;
    let heal_at = tokio::time::Instant::now();
    let mut drained_at = None;
    while heal_at.elapsed() < DRAIN_LIMIT {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let w = world.lock().unwrap();
        if w.clients_done < config.clients + config.workflow_clients + config.schedule_clients {
            continue;
        }
        let Some(l) = w.leader() else { continue };
        let sm = w.running(l).expect("leader runs").sm.clone();
        // A gate awaiting its timeout holds no task but keeps its workflow live.
        let live = {
            let sm = sm.lock().unwrap();
            sm.core.idx.live_tasks + sm.core.idx.workflows.len() as u64
        };
        if live == 0 {
            drained_at = Some(w.now_ms());
            break;
        }
    }
    // Stop starting anything, let every request in flight finish, then wait
    // for every replica to apply the same log.
    world.lock().unwrap().phase = Phase::Stopped;
    tokio::time::sleep(net::CLIENT_TIMEOUT + Duration::from_millis(500)).await;
    let mut last = None;
    let mut converged = false;
    for _ in 0..200 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let w = world.lock().unwrap();
        let applied: Vec<u64> =
            w.nodes.values().map(|s| s.run.as_ref().map_or(0, |r| r.sm.lock().unwrap().applied_index())).collect();
        let logs: Vec<Option<u64>> = w.nodes.values().map(|s| s.disk.lock().unwrap().last_index()).collect();
        let same = applied.windows(2).all(|p| p[0] == p[1]) && logs.iter().all(|l| *l == Some(applied[0]));
        let now = (applied.clone(), w.leader());
        if same && last.as_ref() == Some(&now) && now.1.is_some() {
            converged = true;
            break;
        }
        last = Some(now);
    }

    let mut w = world.lock().unwrap();
    if !converged {
        let v = format!("replicas did not catch up within 20 s of the stop: (applied indexes, leader) {last:?}");
        w.violations.push(v);
    }
    let t = w.now_ms();
    let reader = w.leader().or_else(|| {
        w.nodes
            .iter()
            .filter_map(|(id, s)| Some((s.run.as_ref()?.sm.lock().unwrap().applied_index(), *id)))
            .max()
            .map(|x| x.1)
    });
    let final_state = match reader {
        Some(id) => {
            let sm = w.running(id).expect("running").sm.clone();
            let sm = sm.lock().unwrap();
            w.stats.fires_skipped = schedules::fires_skipped(&sm.core);
            read_final_state(&sm.core, &sm.kv, drained_at)
        }
        None => FinalState { drained_at, jobs: Vec::new(), workflows: Vec::new() },
    };
    w.history.final_state(t, final_state);
    let replicas: Vec<(u64, u64, String)> = w
        .nodes
        .iter()
        .filter_map(|(id, s)| {
            let sm = s.run.as_ref()?.sm.clone();
            let sm = sm.lock().unwrap();
            let h = state_hash(&sm.kv).expect("hash a MemKv");
            Some((*id, sm.applied_index(), hex(&h)))
        })
        .collect();
    for (id, applied, h) in replicas {
        w.history.replica(t, id, applied, &h);
    }

    let report = baton_chaos::check(&w.history, &baton_chaos::Config::default());
    let mut jsonl = Vec::new();
    w.history.write_to(&mut jsonl).expect("history to memory");
    w.fold_into_trace(&jsonl);
    let summary = summarize(&w.history, &report);
    Outcome {
        seed,
        config,
        trace_hash: w.trace_hex(),
        trace_events: w.trace_events,
        history: w.history.clone(),
        report,
        stats: w.stats.clone(),
        summary,
        sim_ms: t,
        sim_violations: w.violations.clone(),
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn summarize(h: &History, report: &Report) -> Summary {
    use baton_chaos::history::Body;
    let mut s = Summary::default();
    let mut acked = std::collections::BTreeSet::new();
    for ev in h.events() {
        match &ev.body {
            Body::SubmitInvoke(_) | Body::CompleteInvoke(_) => s.ops += 1,
            Body::SubmitOk(ok) => {
                acked.insert(ok.job);
            }
            Body::CompleteDuplicate(_) => s.duplicates += 1,
            Body::CompleteFenced(_) => s.fenced += 1,
            Body::SubmitInfo(_) | Body::CompleteInfo(_) => s.infos += 1,
            Body::FinalState(fs) => {
                use baton_chaos::history::{StepState, WorkflowStatus};
                s.failed_jobs = fs.jobs.iter().filter(|j| j.status == JobStatus::Failed).count() as u64;
                s.cancelled_jobs = fs.jobs.iter().filter(|j| j.status == JobStatus::Cancelled).count() as u64;
                let wfs = &fs.workflows;
                s.workflows = wfs.len() as u64;
                s.failed_workflows = wfs.iter().filter(|w| w.status == WorkflowStatus::Failed).count() as u64;
                s.cancelled_workflows = wfs.iter().filter(|w| w.status == WorkflowStatus::Cancelled).count() as u64;
                let steps = || wfs.iter().flat_map(|w| &w.steps);
                s.skipped_steps = steps().filter(|st| st.state == StepState::Skipped).count() as u64;
                s.failed_steps = steps().filter(|st| st.state == StepState::Failed).count() as u64;
                use baton_chaos::history::RunOf;
                let runs = |f: fn(&RunOf) -> bool| fs.jobs.iter().filter(|j| j.run_of.as_ref().is_some_and(f)).count();
                s.schedule_runs = runs(|r| matches!(r, RunOf::Schedule { .. })) as u64;
                s.event_runs = runs(|r| matches!(r, RunOf::Event { .. })) as u64;
            }
            _ => {}
        }
    }
    s.acknowledged = acked.len() as u64;
    s.lost = report.get(Invariant::NoLostJobs).violations.len() as u64;
    s
}

/// The task table as the history's final state: every job, every shard.
pub fn read_final_state(core: &Core, kv: &dyn Kv, drained_at: Option<u64>) -> FinalState {
    let mut jobs = Vec::new();
    for id in 1..core.meta.next_job {
        let Ok(Some(job)) = core.job(kv, id) else { continue };
        let status = match job.status() {
            baton_raft_store::JobStatus::Queued => JobStatus::Queued,
            baton_raft_store::JobStatus::Running => JobStatus::Running,
            baton_raft_store::JobStatus::Succeeded => JobStatus::Succeeded,
            baton_raft_store::JobStatus::Failed => JobStatus::Failed,
            baton_raft_store::JobStatus::Cancelled => JobStatus::Cancelled,
        };
        let mut shards = Vec::new();
        for shard in 0..job.shards {
            let Ok(Some(rec)) = core.task(kv, TaskKey::new(id, shard)) else { continue };
            let latest_token = (rec.last_token != 0).then_some(rec.last_token);
            let (status, result, token) = match &rec.state {
                TaskState::Pending { .. } => (TaskStatus::Pending, None, None),
                TaskState::Assigned { .. } => (TaskStatus::Running, None, None),
                TaskState::Succeeded { token, result } => {
                    (TaskStatus::Succeeded, Some(String::from_utf8_lossy(result).into_owned()), Some(*token))
                }
                TaskState::Dead => (TaskStatus::Dead, None, None),
                TaskState::Cancelled => (TaskStatus::Cancelled, None, None),
            };
            shards.push(FinalShard { shard, status, result, token, latest_token });
        }
        let key = job.idempotency_key.clone().unwrap_or_default();
        let origin = job.origin.as_ref().map(flows::step_ref);
        let run_of = job.run_of.as_ref().map(schedules::run_of);
        let (created_ms, finished_ms) = (Some(job.created_ms), job.finished_ms);
        jobs.push(FinalJob { id, key, status, shards, origin, run_of, created_ms, finished_ms });
    }
    let mut workflows = Vec::new();
    for id in 1..core.meta.next_workflow {
        let Ok(Some(rec)) = core.workflow(kv, id) else { continue };
        workflows.push(final_workflow(core, kv, &rec, &jobs));
    }
    FinalState { drained_at, jobs, workflows }
}

fn final_workflow(_core: &Core, _kv: &dyn Kv, rec: &WorkflowRecord, jobs: &[FinalJob]) -> FinalWorkflow {
    use baton_chaos::history::{StepState as H, WorkflowStatus as W};
    let status = match rec.status {
        WorkflowStatus::Running => W::Running,
        WorkflowStatus::Succeeded => W::Succeeded,
        WorkflowStatus::Failed => W::Failed,
        WorkflowStatus::Cancelled => W::Cancelled,
    };
    let steps: Vec<FinalStep> = rec
        .steps
        .iter()
        .map(|s| FinalStep {
            name: s.name.clone(),
            state: match s.state {
                StepState::Waiting => H::Waiting,
                StepState::Running => H::Running,
                StepState::AwaitingApproval { .. } => H::AwaitingApproval,
                StepState::Succeeded => H::Succeeded,
                StepState::Failed => H::Failed,
                StepState::Skipped => H::Skipped,
                StepState::Cancelled => H::Cancelled,
            },
            chosen: s.chosen.as_ref().map(|c| c.iter().map(|&i| rec.steps[i as usize].name.clone()).collect()),
            generate_job: s.generate_job,
            map_job: s.map_job,
            reduce_job: s.reduce_job,
        })
        .collect();
    // The workflow's result: shard 0 of its result step's output job, as GetWorkflowResult reads it.
    let result = rec.result_step.and_then(|i| rec.steps[i as usize].output_job()).and_then(|job| {
        let j = jobs.iter().find(|j| j.id == job)?;
        j.shards.iter().find(|s| s.shard == 0)?.result.clone()
    });
    FinalWorkflow { id: rec.id, key: rec.idempotency_key.clone().unwrap_or_default(), status, steps, result }
}

/// Parse `A..B` (half-open) or a single seed.
pub fn parse_seed_range(s: &str) -> Result<std::ops::Range<u64>, String> {
    match s.split_once("..") {
        Some((a, b)) => {
            let a: u64 = a.trim().parse().map_err(|e| format!("bad start of {s:?}: {e}"))?;
            let b: u64 = b.trim().parse().map_err(|e| format!("bad end of {s:?}: {e}"))?;
            if b <= a {
                return Err(format!("empty seed range {s:?}"));
            }
            Ok(a..b)
        }
        None => {
            let a: u64 = s.trim().parse().map_err(|e| format!("bad seed {s:?}: {e}"))?;
            Ok(a..a + 1)
        }
    }
}

/// The header of the summary table.
pub const TABLE_HEADER: &str =
    "seed  nodes    ops  acked  lost  dup  fenced  elections  crashes  partitions  lost_unsynced  verdict";

/// One row of the summary table.
pub fn table_row(o: &Outcome) -> String {
    format!(
        "{:<5} {:>5} {:>6} {:>6} {:>5} {:>4} {:>7} {:>10} {:>8} {:>11} {:>14}  {}",
        o.seed,
        o.config.nodes,
        o.summary.ops,
        o.summary.acknowledged,
        o.summary.lost,
        o.summary.duplicates,
        o.summary.fenced,
        o.stats.elections,
        o.stats.crashes,
        o.stats.partitions,
        o.stats.lost_unsynced_entries,
        o.verdict()
    )
}

/// Keep the shared world type out of the public surface but allow tests to
/// build their own runs.
pub type SharedWorld = Arc<Mutex<World>>;
