//! Leader-only work, owned by one task: worker streams attached to this node,
//! heartbeat deadlines (the failure detector), the scheduling loop
//! (plan → AssignTasks → push) and attempt timeouts.
//!
//! The task runs on every node and acts only while this node is the Raft
//! leader. Heartbeats are never replicated: deadlines live here, in memory.
//! When this node becomes leader every live session gets one fresh TTL from
//! now, so a leader change neither expires every lease nor extends them by
//! more than one TTL. On losing leadership it ends every attached stream with
//! UNAVAILABLE, and the workers reattach to the new leader.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use tokio::sync::{Notify, mpsc};
use tonic::Status;

use baton_client::proto;
use baton_raft_store::{
    Assign, Command, Grant, NodeId, Outcome, Raft, Response, Revoked, SessionId, StoreReader, TaskKey, TaskState, Token,
};

use crate::config::Config;
use crate::error::{ApiError, to_status};
use crate::proposer::{Proposer, now_ms};
use crate::scheduler::{PlanLimits, View, plan};

/// Messages queued for the leader task. Bounded: a flood of heartbeats slows
/// the streams that send them instead of growing memory.
pub const LEADER_QUEUE: usize = 65_536;
/// Most attempt timeouts proposed in one entry.
pub const TIMEOUTS_PER_ENTRY: usize = 1_000;
/// Scheduling also runs on this period, for tasks whose backoff or not-before
/// time has passed since the last event.
pub const SCHEDULE_TICK_MS: u64 = 50;
/// A leader that has not heard from a quorum for this many election
/// timeouts (the maximum) lets its workers go. openraft keeps a cut-off
/// leader in the leader state until it hears a higher term, while the
/// majority side elects a new leader whose fresh leases start at takeover: a
/// worker still heartbeating the old one would lose its session there.
pub const QUORUM_SILENCE_ELECTION_TIMEOUTS: u64 = 4;

/// What goes down a worker's stream.
pub type Outbound = mpsc::Sender<Result<proto::CoordinatorMessage, Status>>;

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
    Heartbeat {
        session: SessionId,
    },
    /// The worker is shutting down: schedule nothing more to it.
    Drain {
        session: SessionId,
    },
    /// Attempts taken away by a cancel: tell their workers.
    Revoked(Vec<Revoked>),
}

/// Handle used by the API services.
#[derive(Clone)]
pub struct LeaderHandle {
    tx: mpsc::Sender<LeaderMsg>,
    kick: Arc<Notify>,
    leading: Arc<AtomicBool>,
    conn_seq: Arc<AtomicU64>,
}

impl LeaderHandle {
    /// Something changed that may make tasks assignable: plan again soon.
    pub fn kick(&self) {
        self.kick.notify_one();
    }

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

enum Done {
    Assigned(Result<Response, ApiError>),
    Expired { session: SessionId, result: Result<Response, ApiError> },
    TimedOut(Result<Response, ApiError>),
}

struct Attached {
    conn: u64,
    tx: Outbound,
}

/// Leaky bucket limiting session expirations per second.
struct Bucket {
    tokens: f64,
    rate: f64,
    last: Instant,
}

impl Bucket {
    fn take(&mut self) -> bool {
        let now = Instant::now();
        self.tokens = (self.tokens + now.duration_since(self.last).as_secs_f64() * self.rate).min(self.rate);
        self.last = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

struct State {
    id: NodeId,
    cfg: Arc<Config>,
    raft: Raft,
    reader: StoreReader,
    proposer: Proposer,
    leading: Arc<AtomicBool>,
    attached: BTreeMap<SessionId, Attached>,
    deadlines: BTreeMap<SessionId, Instant>,
    expiring: BTreeSet<SessionId>,
    draining: BTreeSet<SessionId>,
    assign_in_flight: bool,
    schedule_again: bool,
    timeouts_in_flight: bool,
    bucket: Bucket,
    done_tx: mpsc::Sender<Done>,
    kick: Arc<Notify>,
}

/// Start the leader task; it lives as long as the node.
pub fn spawn(cfg: Arc<Config>, raft: Raft, reader: StoreReader, proposer: Proposer) -> LeaderHandle {
    let (tx, rx) = mpsc::channel(LEADER_QUEUE);
    // One reply per proposal in flight; at most three kinds are in flight.
    let (done_tx, done_rx) = mpsc::channel(1024);
    let kick = Arc::new(Notify::new());
    let leading = Arc::new(AtomicBool::new(false));
    let rate = cfg.workers.max_expirations_per_sec as f64;
    let st = State {
        id: cfg.node_id,
        cfg,
        raft,
        reader,
        proposer,
        leading: leading.clone(),
        attached: BTreeMap::new(),
        deadlines: BTreeMap::new(),
        expiring: BTreeSet::new(),
        draining: BTreeSet::new(),
        assign_in_flight: false,
        schedule_again: false,
        timeouts_in_flight: false,
        bucket: Bucket { tokens: rate, rate, last: Instant::now() },
        done_tx,
        kick: kick.clone(),
    };
    tokio::spawn(run(st, rx, done_rx));
    LeaderHandle { tx, kick, leading, conn_seq: Arc::new(AtomicU64::new(1)) }
}

type Metrics = openraft::RaftMetrics<baton_raft_store::NodeId, baton_raft_store::NodeInfo>;

/// Whether node `id` leads in openraft and has been acknowledged by a quorum
/// within `silence_ms` (see [`QUORUM_SILENCE_ELECTION_TIMEOUTS`]). A single
/// voter is its own quorum; a leader not yet acknowledged at all has just won
/// an election, which a quorum voted for.
fn leads_with_quorum(id: u64, m: &Metrics, silence_ms: u64) -> bool {
    m.current_leader == Some(id)
        && m.state.is_leader()
        && (m.membership_config.membership().voter_ids().nth(1).is_none()
            || m.millis_since_quorum_ack.is_none_or(|ms| ms <= silence_ms))
}

async fn run(mut st: State, mut rx: mpsc::Receiver<LeaderMsg>, mut done_rx: mpsc::Receiver<Done>) {
    let mut metrics = st.raft.metrics();
    let mut check = tokio::time::interval(Duration::from_millis(st.cfg.workers.check_interval_ms));
    let mut tick = tokio::time::interval(Duration::from_millis(SCHEDULE_TICK_MS));
    check.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let kick = st.kick.clone();
    loop {
        tokio::select! {
            changed = metrics.changed() => {
                if changed.is_err() {
                    return;
                }
                // Wakes on every applied entry: read a few fields, copy nothing.
                let now_leader = st.leads_with_quorum(&metrics.borrow_and_update());
                if now_leader != st.leading.load(Ordering::Acquire) {
                    if now_leader { st.on_gain() } else { st.on_loss() }
                }
            }
            Some(msg) = rx.recv() => st.handle(msg),
            Some(done) = done_rx.recv() => st.on_done(done),
            _ = check.tick() => {
                // Quorum silence grows without an applied entry: look again.
                if st.is_leading() && !st.leads_with_quorum(&metrics.borrow()) {
                    st.on_loss();
                }
                if st.is_leading() {
                    st.check_deadlines();
                    st.check_timeouts();
                    st.drop_ended_sessions();
                }
            }
            _ = kick.notified() => if st.is_leading() { st.schedule() },
            _ = tick.tick() => if st.is_leading() { st.schedule() },
        }
    }
}

impl State {
    fn is_leading(&self) -> bool {
        self.leading.load(Ordering::Acquire)
    }

    fn leads_with_quorum(&self, m: &Metrics) -> bool {
        leads_with_quorum(self.id, m, self.cfg.raft.election_timeout_max_ms * QUORUM_SILENCE_ELECTION_TIMEOUTS)
    }

    fn ttl(&self) -> Duration {
        Duration::from_millis(self.cfg.workers.ttl_ms)
    }

    fn on_gain(&mut self) {
        self.leading.store(true, Ordering::Release);
        let fresh = Instant::now() + self.ttl();
        let live: Vec<SessionId> = self.reader.read(|c, _| c.idx.sessions.keys().copied().collect());
        // One fresh TTL for every live session: no mass expiry on failover.
        self.deadlines = live.iter().map(|s| (*s, fresh)).collect();
        tracing::info!(node = self.id, sessions = live.len(), "became leader; leases renewed for one ttl");
        self.kick.notify_one();
    }

    fn on_loss(&mut self) {
        self.leading.store(false, Ordering::Release);
        // Cut off from the quorum, openraft still names this node: no hint then.
        let hint = crate::api::leader_hint(&self.raft).filter(|h| h.0 != self.id);
        for (_, a) in std::mem::take(&mut self.attached) {
            let _ = a.tx.try_send(Err(to_status(ApiError::NotLeader { leader: hint.clone() })));
        }
        self.deadlines.clear();
        self.expiring.clear();
        self.draining.clear();
        tracing::info!(node = self.id, new_leader = ?hint.map(|h| h.0), "stepped down; worker streams closed");
    }

    fn handle(&mut self, msg: LeaderMsg) {
        match msg {
            LeaderMsg::Attach { session, conn, tx } => {
                if !self.is_leading() {
                    let _ = tx.try_send(Err(to_status(ApiError::NotLeader { leader: None })));
                    return;
                }
                self.deadlines.insert(session, Instant::now() + self.ttl());
                if let Some(old) = self.attached.insert(session, Attached { conn, tx }) {
                    let _ = old.tx.try_send(Err(Status::aborted("session reattached on another stream")));
                }
                self.resync(session);
                self.kick.notify_one();
            }
            LeaderMsg::Detach { session, conn } => {
                // The lease decides liveness; a dropped stream may reconnect.
                if self.attached.get(&session).is_some_and(|a| a.conn == conn) {
                    self.attached.remove(&session);
                }
            }
            LeaderMsg::Heartbeat { session } => {
                if self.is_leading() && !self.expiring.contains(&session) {
                    let ttl = self.ttl();
                    if let Some(d) = self.deadlines.get_mut(&session) {
                        *d = Instant::now() + ttl;
                    }
                }
            }
            LeaderMsg::Drain { session } => {
                self.draining.insert(session);
            }
            LeaderMsg::Revoked(list) => {
                for r in list {
                    self.send_cancel(r.session, r.task, r.token, "job cancelled");
                }
                self.kick.notify_one();
            }
        }
    }

    fn send_cancel(&mut self, session: SessionId, task: TaskKey, token: Token, reason: &str) {
        if let Some(a) = self.attached.get(&session) {
            let msg = proto::CoordinatorMessage {
                msg: Some(proto::coordinator_message::Msg::Cancel(proto::Cancel {
                    task: Some(task_ref(task)),
                    token,
                    reason: reason.into(),
                })),
            };
            if a.tx.try_send(Ok(msg)).is_err() {
                self.disconnect_slow(session);
            }
        }
    }

    /// Push every attempt the session holds: after a reconnect or a leader
    /// change the worker may have missed some. It ignores ones it runs already.
    fn resync(&mut self, session: SessionId) {
        let held = self.reader.read(|c, kv| {
            let keys: Vec<TaskKey> =
                c.idx.by_session.get(&session).map(|s| s.iter().copied().collect()).unwrap_or_default();
            keys.into_iter()
                .filter_map(|k| match c.task(kv, k) {
                    Ok(Some(t)) => match t.state {
                        TaskState::Assigned { token, deadline_ms, .. } => {
                            Some(Grant { task: k, session, token, attempt: t.attempts, deadline_ms })
                        }
                        _ => None,
                    },
                    _ => None,
                })
                .collect::<Vec<_>>()
        });
        for g in held {
            self.push(&g);
        }
    }

    fn push(&mut self, g: &Grant) {
        let Some(a) = self.attached.get(&g.session) else { return };
        let payload = match self.reader.payload(g.task) {
            Ok(p) => p,
            Err(e) => {
                tracing::error!(task = %g.task, error = %e, "cannot read payload");
                return;
            }
        };
        let msg = proto::CoordinatorMessage {
            msg: Some(proto::coordinator_message::Msg::Assignment(proto::Assignment {
                task: Some(task_ref(g.task)),
                token: g.token,
                attempt: g.attempt,
                payload,
                deadline_ms: g.deadline_ms,
            })),
        };
        if a.tx.try_send(Ok(msg)).is_err() {
            self.disconnect_slow(g.session);
        }
    }

    /// A stream that does not drain its queue is cut; the worker reconnects
    /// and resyncs instead of the leader buffering without bound.
    fn disconnect_slow(&mut self, session: SessionId) {
        if let Some(a) = self.attached.remove(&session) {
            tracing::warn!(session, "worker stream queue full or closed; disconnecting it");
            let _ = a.tx.try_send(Err(Status::resource_exhausted("worker stream fell behind; reconnect")));
        }
    }

    fn schedule(&mut self) {
        if self.assign_in_flight {
            self.schedule_again = true;
            return;
        }
        let now = Instant::now();
        let eligible: BTreeSet<SessionId> = self
            .attached
            .keys()
            .copied()
            .filter(|s| {
                self.deadlines.get(s).is_some_and(|d| *d > now)
                    && !self.expiring.contains(s)
                    && !self.draining.contains(s)
            })
            .collect();
        if eligible.is_empty() {
            return;
        }
        let limits = PlanLimits {
            max_assignments: self.cfg.limits.max_assignments_per_round,
            max_scan: self.cfg.limits.max_scan_per_round,
        };
        let now_ms = now_ms();
        let assignments: Vec<Assign> =
            self.reader.read(|c, _| plan(&View { idx: &c.idx, eligible: &eligible, limits }, now_ms));
        if assignments.is_empty() {
            return;
        }
        self.assign_in_flight = true;
        let (p, done) = (self.proposer.clone(), self.done_tx.clone());
        tokio::spawn(async move {
            let r = p.propose(Command::AssignTasks { assignments }).await;
            let _ = done.send(Done::Assigned(r)).await;
        });
    }

    fn check_deadlines(&mut self) {
        let now = Instant::now();
        // Sessions registered since we became leader, seen before their stream attached.
        let live: Vec<(SessionId, u64)> =
            self.reader.read(|c, _| c.idx.sessions.values().map(|s| (s.id, s.epoch)).collect());
        let fresh = now + self.ttl();
        for (s, _) in &live {
            self.deadlines.entry(*s).or_insert(fresh);
        }
        let live: BTreeMap<SessionId, u64> = live.into_iter().collect();
        self.deadlines.retain(|s, _| live.contains_key(s));
        self.draining.retain(|s| live.contains_key(s));
        let due: Vec<SessionId> =
            self.deadlines.iter().filter(|(s, d)| **d <= now && !self.expiring.contains(s)).map(|(s, _)| *s).collect();
        for session in due {
            if !self.bucket.take() {
                tracing::warn!("session expiry rate limit reached; deferring the rest");
                break;
            }
            let epoch = live[&session];
            self.expiring.insert(session);
            tracing::info!(session, epoch, "worker lease expired");
            let (p, done) = (self.proposer.clone(), self.done_tx.clone());
            tokio::spawn(async move {
                let result = p.propose(Command::ExpireWorker { session, epoch }).await;
                let _ = done.send(Done::Expired { session, result }).await;
            });
        }
    }

    fn check_timeouts(&mut self) {
        if self.timeouts_in_flight {
            return;
        }
        let now = now_ms();
        let due: Vec<(TaskKey, Token, SessionId)> = self.reader.read(|c, kv| {
            c.idx
                .deadlines
                .iter()
                .take_while(|(d, _, _)| *d <= now)
                .take(TIMEOUTS_PER_ENTRY)
                .filter_map(|(_, k, t)| match c.task(kv, *k) {
                    Ok(Some(rec)) => match rec.state {
                        TaskState::Assigned { session, .. } => Some((*k, *t, session)),
                        _ => None,
                    },
                    _ => None,
                })
                .collect()
        });
        if due.is_empty() {
            return;
        }
        for (k, t, s) in &due {
            self.send_cancel(*s, *k, *t, "attempt timed out");
        }
        self.timeouts_in_flight = true;
        let attempts = due.into_iter().map(|(k, t, _)| (k, t)).collect();
        let (p, done) = (self.proposer.clone(), self.done_tx.clone());
        tokio::spawn(async move {
            let r = p.propose(Command::TimeoutAttempts { attempts }).await;
            let _ = done.send(Done::TimedOut(r)).await;
        });
    }

    /// Close streams of sessions that are no longer live (expired, replaced).
    fn drop_ended_sessions(&mut self) {
        let ended: Vec<SessionId> = {
            let attached: Vec<SessionId> = self.attached.keys().copied().collect();
            self.reader.read(|c, _| attached.into_iter().filter(|s| !c.idx.sessions.contains_key(s)).collect())
        };
        for s in ended {
            if let Some(a) = self.attached.remove(&s) {
                let _ =
                    a.tx.try_send(Err(Status::failed_precondition(format!("session {s} has ended; register again"))));
            }
        }
    }

    fn on_done(&mut self, d: Done) {
        match d {
            Done::Assigned(r) => {
                self.assign_in_flight = false;
                match r {
                    Ok(Response::Done(Outcome::Assigned(items))) => {
                        let grants: Vec<Grant> = items.into_iter().filter_map(Result::ok).collect();
                        metrics::counter!("baton_assignments_total").increment(grants.len() as u64);
                        for g in &grants {
                            self.push(g);
                        }
                        if !grants.is_empty() || self.schedule_again {
                            self.schedule_again = false;
                            self.schedule();
                        }
                    }
                    Ok(other) => tracing::warn!(reply = ?other, "unexpected reply to AssignTasks"),
                    Err(e) => tracing::debug!(error = %e, "assignment not committed"),
                }
            }
            Done::Expired { session, result } => {
                self.expiring.remove(&session);
                match result {
                    Ok(Response::Done(Outcome::SessionEnded { released, .. })) => {
                        metrics::counter!("baton_worker_expirations_total").increment(1);
                        metrics::counter!("baton_reassignments_total").increment(released.requeued.len() as u64);
                        tracing::info!(
                            session,
                            requeued = released.requeued.len(),
                            dead = released.dead.len(),
                            "worker session expired"
                        );
                        self.deadlines.remove(&session);
                        if let Some(a) = self.attached.remove(&session) {
                            let _ = a.tx.try_send(Err(Status::failed_precondition(format!(
                                "session {session} expired; register again"
                            ))));
                        }
                        self.schedule();
                    }
                    Ok(_) => {
                        // Already ended, or re-registered under a new epoch.
                        self.deadlines.remove(&session);
                    }
                    Err(e) => tracing::warn!(session, error = %e, "expiry not committed; will retry"),
                }
            }
            Done::TimedOut(r) => {
                self.timeouts_in_flight = false;
                if let Ok(Response::Done(Outcome::TimedOut(items))) = r {
                    let n = items.iter().filter(|r| r.is_ok()).count();
                    metrics::counter!("baton_attempt_timeouts_total").increment(n as u64);
                    self.schedule();
                }
            }
        }
    }
}

pub fn task_ref(t: TaskKey) -> proto::TaskRef {
    proto::TaskRef { job_id: t.job, shard: t.shard }
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
}
