//! The shared state of one simulation: the seeded RNG, the trace hash, the
//! network's fault settings, the nodes, the workers and the history recorder.
//!
//! Everything lives behind one `Mutex` and is only touched between awaits,
//! so the order of every draw from the RNG and every traced event follows
//! the (deterministic) order in which the current-thread runtime polls tasks.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::{self, Write as _};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use baton_chaos::History;
use baton_coordinator::clock::{LogClock, Now};
use baton_coordinator::leader::core::LeaderCore;
use baton_raft_store::{JobId, JobOrigin, NodeId, Raft, SessionId, TaskKey, TaskState, Token};

use crate::SimConfig;
use crate::disk::{Disk, SimSnapshot, SmState};

/// Wall clocks start here (2023-11-14), so skewed clocks stay positive.
pub const WALL_BASE_MS: u64 = 1_700_000_000_000;

/// Counts of what the run did, for the summary table and the fault-coverage test.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Stats {
    /// Leaderships taken (distinct terms in which a node became leader).
    pub elections: u64,
    /// Node crashes (a power loss of n nodes counts n).
    pub crashes: u64,
    /// Partitions installed (halves, isolated leader, one-way).
    pub partitions: u64,
    /// Worker pauses (zombies).
    pub pauses: u64,
    /// Raft messages dropped (by drop rate, partitions or crashed peers).
    pub dropped: u64,
    /// Raft messages delivered.
    pub delivered: u64,
    /// Log entries appended but not yet synced when their node crashed.
    pub lost_unsynced_entries: u64,
    /// Reports a worker sent, after a pause, for attempts it held when paused; and how many were fenced.
    pub zombie_reports: u64,
    pub zombie_fenced: u64,
    /// Grant deliveries dropped because a newer token for the task had already been delivered.
    pub stale_deliveries: u64,
    /// Attempts a worker stopped because the leader cancelled them.
    pub cancels_applied: u64,
    /// Wall-clock steps of a node.
    pub clock_jumps: u64,
    /// Cancels of a job that a submitter saw committed.
    pub cancels: u64,
    /// Single-shard cancels, and retries of a job's dead shards, that a
    /// submitter saw committed.
    pub tasks_cancelled: u64,
    pub jobs_retried: u64,
    /// Failure reports sent (retryable and not), and of those the
    /// non-retryable ones; progress reports sent.
    pub fail_reports: u64,
    pub fatal_fail_reports: u64,
    pub progress_reports: u64,
    /// Jobs submitted at the largest allowed payload.
    pub large_jobs: u64,
    /// Snapshots built by a node, and installed from a leader.
    pub snapshot_builds: u64,
    pub snapshot_installs: u64,
    /// Node starts that began from a durable snapshot.
    pub snapshot_restores: u64,
    /// Workflows acknowledged; cancels of them committed; gates decided by a
    /// client; gates expired by a leader's ExpireGates.
    pub workflows: u64,
    pub workflows_cancelled: u64,
    pub gates_decided: u64,
    pub gates_expired: u64,
    /// Workflow results computed by workers: reduces, choices, dynamic
    /// children emitted, and generators that emitted none.
    pub reduces: u64,
    pub choices: u64,
    pub children: u64,
    pub empty_generators: u64,
    /// Workflow results that waited for a node to apply their input.
    pub inputs_not_ready: u64,
    /// Schedules created; publishes acknowledged, and of those the ones
    /// answered duplicate; fire times the schedules passed over without a
    /// run (read from the final state's schedule records); attempts held
    /// for their payload's `hold:<ms>`.
    pub schedules: u64,
    pub events_published: u64,
    pub events_duplicate: u64,
    pub fires_skipped: u64,
    pub held_attempts: u64,
}

/// Fault settings of the simulated network.
#[derive(Debug, Clone)]
pub struct NetState {
    /// Directed links that deliver nothing: (from, to).
    pub blocked: BTreeSet<(NodeId, NodeId)>,
    /// Chance of dropping each message leg, per mille.
    pub drop_per_mille: u32,
    /// One-way delay range, ms (inclusive).
    pub delay_ms: (u64, u64),
}

impl NetState {
    pub const CALM_DELAY: (u64, u64) = (1, 8);

    pub fn calm() -> Self {
        Self { blocked: BTreeSet::new(), drop_per_mille: 0, delay_ms: Self::CALM_DELAY }
    }
}

/// What a worker stream delivers, in order, with the next heartbeat reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Pushed {
    Grant(TaskKey, Token),
    Cancel(TaskKey, Token),
}

/// A worker stream attached to a node: the connection and what the leader
/// pushed down it since the worker last heard from it.
#[derive(Debug, Default)]
pub struct Stream {
    pub conn: u64,
    pub inbox: Vec<Pushed>,
}

/// The leader side of one incarnation: the coordinator's own leader core
/// (`baton_coordinator::leader::core`), the node's log clock, and the
/// streams the core's actions go down.
pub struct LeaderSide {
    pub core: LeaderCore,
    pub clock: LogClock,
    pub streams: BTreeMap<SessionId, Stream>,
    pub next_conn: u64,
    pub last_applied: Option<u64>,
}

/// A running incarnation of a node.
pub struct Running {
    pub raft: Raft,
    pub sm: Arc<Mutex<SmState>>,
    pub leader: LeaderSide,
}

/// One node: its disk and its clock (both survive crashes) and the running
/// incarnation, if up.
pub struct NodeSlot {
    pub disk: Arc<Mutex<Disk>>,
    /// This machine's wall clock minus true time, ms.
    pub skew_ms: i64,
    /// Its clock's rate error, parts per million (drift).
    pub drift_ppm: i64,
    /// Epoch of the running incarnation (equals the disk's while it runs).
    pub epoch: u64,
    pub run: Option<Running>,
}

/// An attempt a worker is executing.
#[derive(Debug, Clone)]
pub struct Attempt {
    pub token: Token,
    /// The session the attempt was granted to.
    pub session: SessionId,
    pub finish_at: u64,
    /// When it reports progress, if it does.
    pub progress_at: Option<u64>,
    /// How it ends: a completion or a failure report.
    pub ending: Ending,
    pub reporting: bool,
    /// The workflow step its job belongs to, as the job record says
    /// (`Some(None)`: a plain job); `None` until some node's record was read.
    pub origin: Option<Option<JobOrigin>>,
    /// Its result, once computed: a retried report resends the same bytes.
    pub result: Option<Vec<u8>>,
}

/// How an attempt ends, drawn when it is granted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ending {
    Complete,
    /// `FailTask`; retryable (the job allows 50 attempts) or fatal (the task goes dead).
    Fail {
        retryable: bool,
    },
}

/// A simulated worker process.
#[derive(Debug)]
pub struct WorkerState {
    pub name: String,
    pub capacity: u32,
    pub session: Option<(SessionId, u64)>,
    pub registering: bool,
    /// The node it believes is the leader.
    pub target: NodeId,
    pub hb_in_flight: bool,
    pub next_hb: u64,
    pub paused_until: u64,
    pub attempts: BTreeMap<TaskKey, Attempt>,
    pub seen: BTreeSet<(TaskKey, Token)>,
    pub next_op: u64,
    /// Attempts held when the worker was last paused: its reports of these are zombie reports.
    pub zombie: BTreeSet<(TaskKey, Token)>,
}

/// Where the run is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Phase {
    /// Nemesis active, submitters submitting.
    Workload,
    /// Everything healed; waiting for the work to finish.
    Drain,
    /// Workers, submitters and leader drivers stop starting anything.
    Stopped,
}

pub struct World {
    pub cfg: SimConfig,
    pub rng: StdRng,
    trace: blake3::Hasher,
    line: String,
    pub trace_events: u64,
    pub start: tokio::time::Instant,
    pub stats: Stats,
    pub net: NetState,
    pub nodes: BTreeMap<NodeId, NodeSlot>,
    pub workers: Vec<WorkerState>,
    pub history: History,
    /// Highest token recorded in an `assign` event, per task.
    pub max_token: BTreeMap<TaskKey, Token>,
    /// Terms in which some node took leadership.
    pub leader_terms: BTreeSet<u64>,
    pub phase: Phase,
    pub clients_done: usize,
    /// Breaches the sim itself saw, beyond what the history shows the checker.
    pub violations: Vec<String>,
    /// Snapshots on the wire: (receiving node, snapshot id) to what the
    /// sender's disk held, taken by the receiver's state machine on install.
    pub inflight_snapshots: BTreeMap<(NodeId, String), SimSnapshot>,
    /// Jobs whose cancel a submitter saw committed, with the time of the reply.
    pub cancelled_jobs: BTreeMap<JobId, u64>,
}

impl World {
    pub fn new(seed: u64, cfg: SimConfig) -> Arc<Mutex<World>> {
        let mut rng = StdRng::seed_from_u64(seed);
        let nodes = (1..=cfg.nodes as NodeId)
            .map(|id| {
                // Half the seeds run with skewed clocks: up to max_skew_ms either
                // way, and a rate error of up to 200 ppm.
                let skewed = cfg.max_skew_ms > 0 && rng.random_range(0..2) == 1;
                let (skew_ms, drift_ppm) = if skewed {
                    let m = cfg.max_skew_ms as i64;
                    (rng.random_range(-m..=m), rng.random_range(-200..=200))
                } else {
                    (0, 0)
                };
                let disk = Arc::new(Mutex::new(Disk::default()));
                (id, NodeSlot { disk, skew_ms, drift_ppm, epoch: 0, run: None })
            })
            .collect();
        Arc::new(Mutex::new(World {
            cfg,
            rng,
            trace: blake3::Hasher::new(),
            line: String::new(),
            trace_events: 0,
            start: tokio::time::Instant::now(),
            stats: Stats::default(),
            net: NetState::calm(),
            nodes,
            workers: Vec::new(),
            history: History::new(),
            max_token: BTreeMap::new(),
            leader_terms: BTreeSet::new(),
            phase: Phase::Workload,
            clients_done: 0,
            violations: Vec::new(),
            inflight_snapshots: BTreeMap::new(),
            cancelled_jobs: BTreeMap::new(),
        }))
    }

    /// Simulated time since the start, ms.
    pub fn now_ms(&self) -> u64 {
        tokio::time::Instant::now().duration_since(self.start).as_millis() as u64
    }

    /// Node `id`'s wall clock: true time plus its skew and drift, from a
    /// realistic epoch so that skew can be negative.
    pub fn wall_ms(&self, id: NodeId) -> u64 {
        let t = self.now_ms() as i64;
        let slot = &self.nodes[&id];
        (WALL_BASE_MS as i64 + t + slot.skew_ms + t * slot.drift_ppm / 1_000_000) as u64
    }

    /// Node `id`'s view of time for its leader core and its stamps: its
    /// monotonic clock and its log clock, after observing its applied log.
    pub fn node_now(&mut self, id: NodeId) -> Option<Now> {
        let wall = self.wall_ms(id);
        let mono = self.now_ms();
        let run = self.running_mut(id)?;
        let applied = run.sm.lock().unwrap().core.meta.clock_ms;
        run.leader.clock.observe(applied, mono);
        let log_ms = run.leader.clock.now_ms(wall, mono);
        Some(Now { mono_ms: mono, log_ms: if self.cfg.wall_clock_as_log_time { wall } else { log_ms } })
    }

    /// Fold one event into the trace hash.
    pub fn trace(&mut self, args: fmt::Arguments<'_>) {
        self.line.clear();
        let _ = write!(self.line, "{} ", self.now_ms());
        let _ = self.line.write_fmt(args);
        self.line.push('\n');
        if self.cfg.print_trace {
            eprint!("{}", self.line);
        }
        self.trace.update(self.line.as_bytes());
        self.trace_events += 1;
    }

    pub fn trace_hex(&self) -> String {
        self.trace.clone().finalize().to_hex().to_string()
    }

    pub fn fold_into_trace(&mut self, bytes: &[u8]) {
        self.trace.update(bytes);
    }

    pub fn range(&mut self, lo: u64, hi: u64) -> u64 {
        self.rng.random_range(lo..=hi)
    }

    pub fn chance(&mut self, per_mille: u32) -> bool {
        per_mille > 0 && self.rng.random_range(0..1000) < per_mille
    }

    /// Whether `node` runs incarnation `epoch`.
    pub fn is_current(&self, node: NodeId, epoch: u64) -> bool {
        self.nodes.get(&node).is_some_and(|s| s.run.is_some() && s.epoch == epoch)
    }

    pub fn is_up(&self, node: NodeId) -> bool {
        self.nodes.get(&node).is_some_and(|s| s.run.is_some())
    }

    pub fn running(&self, node: NodeId) -> Option<&Running> {
        self.nodes.get(&node).and_then(|s| s.run.as_ref())
    }

    pub fn running_mut(&mut self, node: NodeId) -> Option<&mut Running> {
        self.nodes.get_mut(&node).and_then(|s| s.run.as_mut())
    }

    /// Whether a message from `from` to `to` (`None`: a client) gets through the partitions.
    pub fn link_open(&self, from: Option<NodeId>, to: Option<NodeId>) -> bool {
        match (from, to) {
            (Some(a), Some(b)) => !self.net.blocked.contains(&(a, b)),
            _ => true,
        }
    }

    /// Decide one message leg at send time: `Some(delay)` or `None` when it is
    /// dropped. Draws from the RNG in the same order whatever the outcome.
    pub fn transmit(&mut self, from: Option<NodeId>, to: Option<NodeId>) -> Option<Duration> {
        let dropped = self.chance(self.net.drop_per_mille);
        let (lo, hi) = self.net.delay_ms;
        let delay = self.range(lo, hi);
        let up = from.is_none_or(|n| self.is_up(n)) && to.is_none_or(|n| self.is_up(n));
        if dropped || !up || !self.link_open(from, to) {
            self.stats.dropped += 1;
            None
        } else {
            Some(Duration::from_millis(delay))
        }
    }

    /// A running node whose applied state shows `session` ended (so its end is committed).
    pub fn session_ended_on(&self, session: SessionId) -> Option<NodeId> {
        self.nodes.iter().find_map(|(id, s)| {
            let sm = s.run.as_ref()?.sm.lock().unwrap();
            let ended = session < sm.core.meta.next_session && !sm.core.idx.sessions.contains_key(&session);
            ended.then_some(*id)
        })
    }

    /// A running node whose applied state shows `task` cancelled (so the cancel is committed).
    pub fn task_cancelled_on(&self, task: TaskKey) -> Option<NodeId> {
        self.nodes.iter().find_map(|(id, s)| {
            let sm = s.run.as_ref()?.sm.lock().unwrap();
            let rec = sm.core.task(&sm.kv, task).ok().flatten()?;
            matches!(rec.state, TaskState::Cancelled).then_some(*id)
        })
    }

    /// The node that is leader by its own metrics, with the highest term.
    pub fn leader(&self) -> Option<NodeId> {
        let mut best: Option<(u64, NodeId)> = None;
        for (id, slot) in &self.nodes {
            let Some(run) = &slot.run else { continue };
            let m = run.raft.metrics().borrow().clone();
            if m.current_leader == Some(*id) && m.state.is_leader() && best.is_none_or(|(t, _)| m.current_term > t) {
                best = Some((m.current_term, *id));
            }
        }
        best.map(|(_, id)| id)
    }

    /// A node other than `not`, chosen at random (for clients whose target failed).
    pub fn other_node(&mut self, not: NodeId) -> NodeId {
        let n = self.cfg.nodes as u64;
        let k = self.range(1, n.saturating_sub(1).max(1));
        ((not - 1 + k) % n) + 1
    }
}
