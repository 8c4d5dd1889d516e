//! The leader task: the IO shell around [`core::LeaderCore`].
//!
//! One task per node owns the core and the worker streams attached to this
//! node. It turns what happens (Raft metrics, stream messages from the API,
//! proposal outcomes, timer ticks) into [`core::Event`]s, and carries out the
//! [`core::Action`]s the core returns: proposals, pushes down streams,
//! heartbeat acks, closes. Every decision is in the core, which the
//! simulator drives too; nothing here decides.
//!
//! It runs on every node and acts only while the core says this node leads
//! with a quorum. Heartbeats are never replicated: leases live in the core.

pub mod core;
pub mod streams;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use tokio::sync::mpsc;

use baton_raft_store::{JobId, NodeId, Outcome as StoreOutcome, Raft, Response, SessionId, StoreReader};

use self::core::{Action, CoreConfig, Event, LeaderCore, Outcome, ProposalKind, StateView};
use crate::clock::NodeClock;
use crate::config::Config;
use crate::error::ApiError;
use crate::proposer::Proposer;
use crate::scheduler::PlanLimits;

pub use self::streams::{Outbound, task_ref};

/// Messages queued for the leader task. Bounded: a flood of heartbeats slows
/// the streams that send them instead of growing memory.
pub const LEADER_QUEUE: usize = 65_536;
/// Proposal outcomes queued back to the leader task. At most one assignment
/// and one timeout proposal are in flight, plus expiries, which the expiry
/// rate limit bounds per second.
pub const OUTCOME_QUEUE: usize = 1024;
/// Planning also runs on this period, for tasks whose backoff or not-before
/// time has passed since the last applied entry.
pub const PLAN_TICK_MS: u64 = 50;
/// A leader that has not heard from a quorum for this many election
/// timeouts (the maximum) lets its workers go. openraft keeps a cut-off
/// leader in the leader state until it hears a higher term, while the
/// majority side elects a new leader whose fresh leases start at takeover: a
/// worker still heartbeating the old one would lose its session there.
pub const QUORUM_SILENCE_ELECTION_TIMEOUTS: u64 = 4;

pub enum LeaderMsg {
    Attach {
        session: SessionId,
        conn: u64,
        tx: Outbound,
    },
    Detach {
        session: SessionId,
        conn: u64,
    },
    /// Acknowledged by the leader task once the lease is renewed.
    Heartbeat {
        session: SessionId,
        conn: u64,
        seq: u64,
    },
    /// The worker is shutting down: schedule nothing more to it.
    Drain {
        session: SessionId,
    },
}

/// Handle used by the API services.
#[derive(Clone)]
pub struct LeaderHandle {
    tx: mpsc::Sender<LeaderMsg>,
    leading: Arc<AtomicBool>,
    conn_seq: Arc<AtomicU64>,
}

impl LeaderHandle {
    /// Whether this node serves worker sessions (leads with a quorum).
    pub fn is_leading(&self) -> bool {
        self.leading.load(Ordering::Acquire)
    }

    pub fn next_conn(&self) -> u64 {
        self.conn_seq.fetch_add(1, Ordering::Relaxed)
    }

    pub async fn send(&self, m: LeaderMsg) {
        let _ = self.tx.send(m).await;
    }
}

/// The current leader's id and API address, read from Raft's metrics without
/// copying them.
pub fn leader_hint(raft: &Raft) -> Option<(NodeId, String)> {
    let metrics = raft.metrics();
    let m = metrics.borrow();
    let id = m.current_leader?;
    let node = m.membership_config.membership().get_node(&id)?;
    Some((id, node.api_addr.clone()))
}

pub type Metrics = openraft::RaftMetrics<NodeId, baton_raft_store::NodeInfo>;

/// Whether node `id` leads in openraft and has been acknowledged by a quorum
/// within `silence_ms` (see [`QUORUM_SILENCE_ELECTION_TIMEOUTS`]). A single
/// voter is its own quorum; a leader not yet acknowledged at all has just won
/// an election, which a quorum voted for.
pub fn leads_with_quorum(id: u64, m: &Metrics, silence_ms: u64) -> bool {
    m.current_leader == Some(id)
        && m.state.is_leader()
        && (m.membership_config.membership().voter_ids().nth(1).is_none()
            || m.millis_since_quorum_ack.is_none_or(|ms| ms <= silence_ms))
}

/// Whether this leader heard from a quorum within `lease_ms` (one election
/// timeout, the leader lease openraft's followers keep): then no other
/// leader can have been elected since. A single voter is its own quorum.
pub fn quorum_fresh(m: &Metrics, lease_ms: u64) -> bool {
    m.membership_config.membership().voter_ids().nth(1).is_none()
        || m.millis_since_quorum_ack.is_none_or(|ms| ms <= lease_ms)
}

/// What the core is told about a committed (or failed) proposal. Counts the
/// metrics on the way.
pub fn outcome_of(kind: &ProposalKind, r: Result<Response, ApiError>) -> Outcome {
    match (kind, r) {
        (ProposalKind::Assign, Ok(Response::Done(StoreOutcome::Assigned(items)))) => {
            let grants: Vec<_> = items.into_iter().filter_map(Result::ok).collect();
            metrics::counter!("baton_assignments_total").increment(grants.len() as u64);
            Outcome::Assigned(grants)
        }
        (ProposalKind::Expire { session }, Ok(Response::Done(StoreOutcome::SessionEnded { released, .. }))) => {
            metrics::counter!("baton_worker_expirations_total").increment(1);
            metrics::counter!("baton_reassignments_total").increment(released.requeued.len() as u64);
            tracing::info!(
                session,
                requeued = released.requeued.len(),
                dead = released.dead.len(),
                "worker session expired"
            );
            Outcome::Expired(true)
        }
        // Already ended, or re-registered under a new epoch.
        (ProposalKind::Expire { .. }, Ok(Response::Rejected(_))) => Outcome::Expired(false),
        (ProposalKind::Timeout, Ok(Response::Done(StoreOutcome::TimedOut(items)))) => {
            let n = items.iter().filter(|r| r.is_ok()).count();
            metrics::counter!("baton_attempt_timeouts_total").increment(n as u64);
            Outcome::TimedOut
        }
        (ProposalKind::ExpireGates, Ok(Response::Done(StoreOutcome::GatesExpired(items)))) => {
            let n = items.iter().filter(|r| r.is_ok()).count();
            metrics::counter!("baton_gate_timeouts_total").increment(n as u64);
            Outcome::GatesExpired(n)
        }
        (ProposalKind::CollectGarbage, Ok(Response::Done(StoreOutcome::Collected { keys_deleted }))) => {
            metrics::counter!("baton_gc_keys_deleted_total").increment(u64::from(keys_deleted));
            Outcome::Collected(keys_deleted)
        }
        (ProposalKind::Fire, Ok(Response::Batch(items))) => {
            for item in items {
                match item {
                    Response::Done(StoreOutcome::Fired { schedule, fire_ms, run, skipped_reason, missed, .. }) => {
                        metrics::counter!("baton_schedule_fires_total").increment(1);
                        metrics::counter!("baton_schedule_fires_missed_total").increment(missed);
                        tracing::debug!(schedule, fire_ms, ?run, ?skipped_reason, missed, "schedule fired");
                    }
                    // Another proposal fired it first (a lost reply, a new leader).
                    Response::Rejected(e) => tracing::debug!(error = %e, "schedule fire refused"),
                    other => tracing::warn!(reply = ?other, "unexpected reply to a fire"),
                }
            }
            Outcome::Fired
        }
        (kind, Ok(other)) => {
            tracing::warn!(?kind, reply = ?other, "unexpected reply to a leader proposal");
            Outcome::NotCommitted
        }
        (kind, Err(e)) => {
            tracing::debug!(?kind, error = %e, "leader proposal not committed");
            Outcome::NotCommitted
        }
    }
}

/// The shell's state: the core, plus the IO handles it acts through.
struct Shell {
    id: NodeId,
    cfg: Arc<Config>,
    raft: Raft,
    reader: StoreReader,
    proposer: Proposer,
    clock: Arc<NodeClock>,
    core: LeaderCore,
    /// Outbound queues of attached streams, by (session, connection).
    streams: BTreeMap<(SessionId, u64), Outbound>,
    leading: Arc<AtomicBool>,
    done_tx: mpsc::Sender<Event>,
    last_applied: Option<u64>,
    /// When the next schedule fire falls due (see `LeaderCore::next_fire_due_ms`).
    fire_wake: Option<tokio::time::Instant>,
}

/// Start the leader task; it lives as long as the node.
pub fn spawn(
    cfg: Arc<Config>,
    raft: Raft,
    reader: StoreReader,
    proposer: Proposer,
    clock: Arc<NodeClock>,
) -> LeaderHandle {
    let (tx, rx) = mpsc::channel(LEADER_QUEUE);
    let (done_tx, done_rx) = mpsc::channel(OUTCOME_QUEUE);
    let leading = Arc::new(AtomicBool::new(false));
    let core = LeaderCore::new(CoreConfig {
        node: cfg.node_id,
        ttl_ms: cfg.workers.ttl_ms,
        max_expirations_per_sec: cfg.workers.max_expirations_per_sec,
        plan: PlanLimits {
            max_assignments: cfg.limits.max_assignments_per_round,
            max_scan: cfg.limits.max_scan_per_round,
        },
        timeouts_per_entry: core::TIMEOUTS_PER_ENTRY,
        gates_per_entry: core::GATES_PER_ENTRY,
    });
    let shell = Shell {
        id: cfg.node_id,
        cfg,
        raft,
        reader,
        proposer,
        clock,
        core,
        streams: BTreeMap::new(),
        leading: leading.clone(),
        done_tx,
        last_applied: None,
        fire_wake: None,
    };
    tokio::spawn(run(shell, rx, done_rx));
    LeaderHandle { tx, leading, conn_seq: Arc::new(AtomicU64::new(1)) }
}

async fn run(mut sh: Shell, mut rx: mpsc::Receiver<LeaderMsg>, mut done_rx: mpsc::Receiver<Event>) {
    let mut metrics = sh.raft.metrics();
    let mut check = tokio::time::interval(Duration::from_millis(sh.cfg.workers.check_interval_ms));
    let mut plan_tick = tokio::time::interval(Duration::from_millis(PLAN_TICK_MS));
    check.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    plan_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            changed = metrics.changed() => {
                if changed.is_err() {
                    return;
                }
                // Wakes on every applied entry: read a few fields, copy nothing.
                let (leadership, applied) = {
                    let m = metrics.borrow_and_update();
                    (sh.leadership(&m), m.last_applied.map(|l| l.index))
                };
                sh.step(leadership);
                if applied != sh.last_applied {
                    sh.last_applied = applied;
                    sh.step(Event::Applied { index: applied.unwrap_or(0) });
                }
            }
            Some(msg) = rx.recv() => {
                let ev = match msg {
                    LeaderMsg::Attach { session, conn, tx } => {
                        sh.streams.insert((session, conn), tx);
                        Event::Attach { session, conn }
                    }
                    LeaderMsg::Detach { session, conn } => {
                        sh.streams.remove(&(session, conn));
                        Event::Detach { session, conn }
                    }
                    LeaderMsg::Heartbeat { session, conn, seq } => {
                        let quorum_fresh = sh.quorum_fresh(&metrics.borrow());
                        Event::Heartbeat { session, conn, seq, quorum_fresh }
                    }
                    LeaderMsg::Drain { session } => Event::Drain { session },
                };
                sh.step(ev);
            }
            Some(done) = done_rx.recv() => sh.step(done),
            _ = check.tick() => {
                // Quorum silence grows without an applied entry: look again.
                let leadership = sh.leadership(&metrics.borrow());
                sh.step(leadership);
                sh.step(Event::Tick);
            }
            _ = plan_tick.tick() => {
                let index = sh.last_applied.unwrap_or(0);
                sh.step(Event::Applied { index });
            }
            _ = sleep_until(sh.fire_wake) => {
                sh.fire_wake = None;
                let index = sh.last_applied.unwrap_or(0);
                sh.step(Event::Applied { index });
            }
        }
    }
}

/// Sleep until `at`, or forever when there is nothing to wake for.
async fn sleep_until(at: Option<tokio::time::Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

impl Shell {
    fn leadership(&self, m: &Metrics) -> Event {
        let silence = self.cfg.raft.election_timeout_max_ms * QUORUM_SILENCE_ELECTION_TIMEOUTS;
        Event::Leadership { leading: leads_with_quorum(self.id, m, silence), term: m.current_term }
    }

    /// Heard from a quorum within one election timeout (see
    /// [`quorum_fresh`]).
    fn quorum_fresh(&self, m: &Metrics) -> bool {
        quorum_fresh(m, self.cfg.raft.election_timeout_max_ms)
    }

    /// Run one event through the core and carry out its actions; feedback
    /// from carrying them out (a full stream) goes back in.
    fn step(&mut self, ev: Event) {
        let mut queue = vec![ev];
        while let Some(ev) = queue.pop() {
            // Cheap events first: most heartbeats never need the store.
            if matches!(ev, Event::Leadership { leading, .. } if leading == self.core.is_leading()) {
                continue;
            }
            let core = &mut self.core;
            let clock = &self.clock;
            let (actions, fire_in_ms) = self.reader.read(|state, kv| {
                clock.observe(state.meta.clock_ms);
                let now = clock.now();
                let view = StateView { core: state, kv };
                let actions = core.step(ev, now, &view);
                (actions, core.next_fire_due_ms(&view).map(|due| due.saturating_sub(now.log_ms)))
            });
            self.fire_wake = fire_in_ms.map(|ms| tokio::time::Instant::now() + Duration::from_millis(ms));
            for a in actions {
                if let Some(feedback) = self.execute(a) {
                    queue.push(feedback);
                }
            }
        }
    }

    fn execute(&mut self, a: Action) -> Option<Event> {
        match a {
            Action::SetLeading(on) => self.leading.store(on, Ordering::Release),
            Action::Propose(p) => {
                let (proposer, done) = (self.proposer.clone(), self.done_tx.clone());
                tokio::spawn(async move {
                    let r = proposer.propose_control(p.cmd).await;
                    let outcome = outcome_of(&p.kind, r);
                    let _ = done.send(Event::Proposed { epoch: p.epoch, kind: p.kind, outcome }).await;
                });
            }
            Action::Push { session, conn, grant, deadline_in_ms } => {
                let payload = match self.reader.payload(grant.task) {
                    Ok(p) => p,
                    Err(e) => {
                        tracing::error!(task = %grant.task, error = %e, "cannot read payload");
                        return None;
                    }
                };
                let workflow = self.workflow_context(grant.task.job);
                return self.send(session, conn, streams::assignment(&grant, payload, deadline_in_ms, workflow));
            }
            Action::Cancel { session, conn, task, token, reason } => {
                return self.send(session, conn, streams::cancel(task, token, reason));
            }
            Action::AckHeartbeat { session, conn, seq } => {
                return self.send(session, conn, streams::heartbeat_ack(seq));
            }
            Action::Close { session, conn, reason } => {
                if let Some(tx) = self.streams.remove(&(session, conn)) {
                    let hint = leader_hint(&self.raft).filter(|h| h.0 != self.id);
                    let _ = tx.try_send(Err(streams::close_status(session, reason, hint)));
                }
            }
        }
        None
    }

    /// `Assignment.workflow` for a shard of `job`: from the job's origin,
    /// read from the live job (in memory). A reduce also needs its map's
    /// shard count, one record read per reduce attempt.
    fn workflow_context(&self, job: JobId) -> Option<baton_client::proto::WorkflowContext> {
        let origin = self.reader.read(|core, _| core.idx.jobs.get(&job).and_then(|j| j.origin.clone()))?;
        let reduce_of_shards = match origin.reduce_of.map(|m| self.reader.job(m)) {
            None => 0,
            Some(Ok(Some(map))) => map.shards,
            Some(Ok(None)) => 0,
            Some(Err(e)) => {
                tracing::error!(job, error = %e, "cannot read the map job of a reduce");
                0
            }
        };
        Some(crate::api::convert::workflow_context(&origin, reduce_of_shards))
    }

    /// Queue a message on an attached stream; a full queue is reported back.
    fn send(&mut self, session: SessionId, conn: u64, msg: baton_client::proto::CoordinatorMessage) -> Option<Event> {
        let tx = self.streams.get(&(session, conn))?;
        match tx.try_send(Ok(msg)) {
            Ok(()) => None,
            Err(_) => Some(Event::StreamFull { session, conn }),
        }
    }
}

#[cfg(test)]
mod quorum_tests {
    use std::collections::{BTreeMap, BTreeSet};
    use std::sync::Arc;

    use openraft::{Membership, ServerState, StoredMembership};

    use super::*;

    fn metrics(voters: &[u64], state: ServerState, leader: Option<u64>, since_ack: Option<u64>) -> Metrics {
        let mut m = Metrics::new_initial(1);
        let nodes: BTreeMap<u64, baton_raft_store::NodeInfo> =
            voters.iter().map(|id| (*id, Default::default())).collect();
        let membership = Membership::new(vec![voters.iter().copied().collect::<BTreeSet<_>>()], nodes);
        m.membership_config = Arc::new(StoredMembership::new(None, membership));
        m.state = state;
        m.current_leader = leader;
        m.millis_since_quorum_ack = since_ack;
        m
    }

    #[test]
    fn a_leader_keeps_its_workers_only_while_a_quorum_answers() {
        let l = ServerState::Leader;
        assert!(leads_with_quorum(1, &metrics(&[1, 2, 3], l, Some(1), Some(30)), 480));
        assert!(leads_with_quorum(1, &metrics(&[1, 2, 3], l, Some(1), None), 480), "just elected");
        assert!(!leads_with_quorum(1, &metrics(&[1, 2, 3], l, Some(1), Some(481)), 480), "cut off");
        assert!(leads_with_quorum(1, &metrics(&[1], l, Some(1), Some(60_000)), 480), "a single voter");
        assert!(!leads_with_quorum(1, &metrics(&[1, 2, 3], ServerState::Follower, Some(2), Some(0)), 480));
        assert!(!leads_with_quorum(1, &metrics(&[1, 2, 3], ServerState::Candidate, None, None), 480));
    }

    #[test]
    fn heartbeats_are_acknowledged_only_within_the_leader_lease() {
        let l = ServerState::Leader;
        assert!(quorum_fresh(&metrics(&[1, 2, 3], l, Some(1), Some(120)), 120));
        assert!(!quorum_fresh(&metrics(&[1, 2, 3], l, Some(1), Some(121)), 120));
        assert!(quorum_fresh(&metrics(&[1, 2, 3], l, Some(1), None), 120), "just elected");
        assert!(quorum_fresh(&metrics(&[1], l, Some(1), Some(60_000)), 120), "a single voter");
    }
}
