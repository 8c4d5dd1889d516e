//! The leader's decisions, without IO: `step(event, now, state) -> actions`.
//!
//! The core owns what a leader keeps in memory and never replicates: which
//! worker streams are attached here, the lease deadline of every live
//! session, the attempts pushed down each stream, what is being drained, the
//! expiry rate limit, and which of its own proposals are in flight. It reads
//! the replicated state (`Core` and its records) but never changes it: every
//! change is an [`Action::Propose`] that apply() re-checks.
//!
//! It reconciles rather than reacts: on every applied index it plans again,
//! and on every check it compares what each attached worker was told with
//! what the applied state says that session holds, pushing grants it missed
//! and cancelling attempts it no longer holds (a cancelled job, a timeout).
//! The API never tells it what changed.
//!
//! Two clocks come in with every event ([`Now`]): monotonic time for leases
//! and the rate limit, and log time for ready times and attempt deadlines,
//! which are log times. Both the tokio loop in `leader/mod.rs` and the
//! deterministic simulator drive this same code.

use std::collections::{BTreeMap, BTreeSet};

use baton_raft_store::limits::MAX_ITEMS_PER_COMMAND;
use baton_raft_store::{Assign, Command, Core, Grant, Kv, NodeId, SessionId, TaskKey, TaskState, Token, WorkflowId};

use crate::clock::Now;
use crate::scheduler::{PlanLimits, View, plan};
use crate::token_bucket::TokenBucket;

/// Most attempt timeouts proposed in one entry.
pub const TIMEOUTS_PER_ENTRY: usize = 1_000;
/// Most gate timeouts proposed in one entry: as many as a command may carry.
/// Expiring a gate readies or skips its successors in the same entry, but
/// that work is bounded per workflow by its step and edge limits.
pub const GATES_PER_ENTRY: usize = MAX_ITEMS_PER_COMMAND;

/// Most schedule fires proposed in one entry (a Batch of Fire commands).
/// Each fire may create a job or a workflow from its template (at most one
/// entry's worth of bytes each), so the batch is kept small; the rest are
/// proposed when it commits.
pub const FIRES_PER_ENTRY: usize = 32;

/// What the core needs from the configuration.
#[derive(Debug, Clone)]
pub struct CoreConfig {
    pub node: NodeId,
    /// The worker lease: a session not heard from for this long is expired.
    pub ttl_ms: u64,
    /// Most sessions expired per second, so a blip that starved heartbeats
    /// does not become a reassignment storm.
    pub max_expirations_per_sec: u32,
    pub plan: PlanLimits,
    pub timeouts_per_entry: usize,
    /// Most gates expired by one ExpireGates ([`GATES_PER_ENTRY`]).
    pub gates_per_entry: usize,
}

/// A proposal the core asked for; its outcome comes back as [`Event::Proposed`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Proposal {
    /// The leadership epoch it was made in; outcomes of older epochs are ignored.
    pub epoch: u64,
    pub kind: ProposalKind,
    pub cmd: Command,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProposalKind {
    Assign,
    Expire {
        session: SessionId,
    },
    Timeout,
    ExpireGates,
    /// CollectGarbage: retention work is due and no entry is carrying it.
    CollectGarbage,
    /// A Batch of Fire commands for schedules whose fire time is due.
    Fire,
}

/// How a proposal of the core ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Committed AssignTasks: the grants that took effect.
    Assigned(Vec<Grant>),
    /// Committed ExpireWorker: `true` if it ended the session, `false` if the
    /// session had already ended or moved to another epoch.
    Expired(bool),
    /// Committed TimeoutAttempts.
    TimedOut,
    /// Committed ExpireGates: how many gates it expired (the rest had been
    /// decided first).
    GatesExpired(usize),
    /// Committed CollectGarbage: the keys its entry's collector deleted.
    Collected(u32),
    /// Committed Fire batch (each fire was applied or refused as stale).
    Fired,
    /// Not committed (no longer leader, overloaded, storage error): the
    /// next check tries again if it still applies.
    NotCommitted,
}

/// Why a stream is closed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CloseReason {
    /// This node does not lead (with a quorum): find the leader.
    NotLeader,
    /// The session attached again on a newer stream.
    Replaced,
    /// The session is no longer live (expired, replaced, deregistered).
    Ended,
    /// The stream's queue was full: the worker reconnects and resyncs.
    FellBehind,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CancelReason {
    /// The attempt passed its deadline.
    TimedOut,
    /// The applied state no longer gives this attempt to the session (its
    /// job was cancelled, or it ended otherwise).
    Revoked,
}

/// Something that happened, for the core to decide on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// Raft's view of this node: whether it leads with a quorum, in which term.
    Leadership {
        leading: bool,
        term: u64,
    },
    /// The state machine applied up to `index`.
    Applied {
        index: u64,
    },
    /// A worker stream opened (or resumed) `session` on connection `conn`.
    Attach {
        session: SessionId,
        conn: u64,
    },
    /// The stream `conn` of `session` ended.
    Detach {
        session: SessionId,
        conn: u64,
    },
    /// `quorum_fresh`: this node heard from a quorum within one election
    /// timeout, so no other leader can have taken over since (followers keep
    /// a leader lease that long).
    Heartbeat {
        session: SessionId,
        conn: u64,
        seq: u64,
        quorum_fresh: bool,
    },
    /// The worker is shutting down: give it nothing more.
    Drain {
        session: SessionId,
    },
    /// A message to this stream could not be queued.
    StreamFull {
        session: SessionId,
        conn: u64,
    },
    /// The periodic check: leases, attempt timeouts, ended sessions,
    /// reconciliation of pushed attempts, and a planning round.
    Tick,
    Proposed {
        epoch: u64,
        kind: ProposalKind,
        outcome: Outcome,
    },
}

/// What the IO shell must do, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Whether this node now serves worker sessions.
    SetLeading(bool),
    Propose(Proposal),
    /// Send a granted attempt (with its payload) down the stream.
    Push {
        session: SessionId,
        conn: u64,
        grant: Grant,
        deadline_in_ms: u64,
    },
    Cancel {
        session: SessionId,
        conn: u64,
        task: TaskKey,
        token: Token,
        reason: CancelReason,
    },
    /// The heartbeat renewed the lease: acknowledge it.
    AckHeartbeat {
        session: SessionId,
        conn: u64,
        seq: u64,
    },
    Close {
        session: SessionId,
        conn: u64,
        reason: CloseReason,
    },
}

/// One attached stream.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Stream {
    conn: u64,
    /// Attempts pushed down this stream that the applied state still gives
    /// to the session, as far as the core knows.
    pushed: BTreeMap<TaskKey, Token>,
}

/// The leader's in-memory state. See the module docs.
#[derive(Debug)]
pub struct LeaderCore {
    cfg: CoreConfig,
    /// Leading with a quorum, as last reported.
    leading: bool,
    /// Bumped at every gain of leadership; tags proposals.
    epoch: u64,
    /// Term of the current (or last) leadership.
    term: u64,
    /// Lease deadlines kept when the quorum went silent, restored if this
    /// node leads again in the same term: a flapping quorum must not renew
    /// every lease each time it comes back.
    saved: Option<(u64, BTreeMap<SessionId, u64>)>,
    attached: BTreeMap<SessionId, Stream>,
    /// Lease deadline per live session, monotonic ms.
    deadlines: BTreeMap<SessionId, u64>,
    /// Sessions with an ExpireWorker in flight: not renewed, not given work.
    expiring: BTreeSet<SessionId>,
    /// Sessions shutting down: given no new work.
    draining: BTreeSet<SessionId>,
    assign_in_flight: bool,
    /// Something changed while an assignment was in flight: plan again after it.
    plan_again: bool,
    timeouts_in_flight: bool,
    /// An ExpireGates is in flight: the gates it names stay in the applied
    /// state's `gate_deadlines` until it commits, so proposing again before
    /// its outcome would only repeat them.
    gates_in_flight: bool,
    /// A CollectGarbage is in flight: one at a time is enough, as every
    /// entry (ours or anyone's) runs the collector's budget.
    gc_in_flight: bool,
    /// A Fire batch is in flight: its schedules stay due in the applied
    /// state until it commits, so proposing again would only be refused.
    fires_in_flight: bool,
    bucket: TokenBucket,
}

/// The replicated state the core reads.
pub struct StateView<'a> {
    pub core: &'a Core,
    pub kv: &'a dyn Kv,
}

impl<'a> StateView<'a> {
    /// The attempts the applied state gives `session`, with their records.
    fn held(&self, session: SessionId) -> Vec<(TaskKey, Token, u32, u64)> {
        let keys: Vec<TaskKey> =
            self.core.idx.by_session.get(&session).map(|s| s.iter().copied().collect()).unwrap_or_default();
        keys.into_iter()
            .filter_map(|k| self.assigned(k).filter(|a| a.0 == session).map(|a| (k, a.1, a.2, a.3)))
            .collect()
    }

    /// (session, token, attempt, deadline) of an assigned task.
    fn assigned(&self, key: TaskKey) -> Option<(SessionId, Token, u32, u64)> {
        match self.core.task(self.kv, key) {
            Ok(Some(t)) => match t.state {
                TaskState::Assigned { session, token, deadline_ms } => Some((session, token, t.attempts, deadline_ms)),
                _ => None,
            },
            Ok(None) => None,
            Err(e) => {
                tracing::error!(task = %key, error = %e, "cannot read task record");
                None
            }
        }
    }
}

impl LeaderCore {
    pub fn new(cfg: CoreConfig) -> Self {
        let bucket = TokenBucket::new(cfg.max_expirations_per_sec);
        LeaderCore {
            cfg,
            leading: false,
            epoch: 0,
            term: 0,
            saved: None,
            attached: BTreeMap::new(),
            deadlines: BTreeMap::new(),
            expiring: BTreeSet::new(),
            draining: BTreeSet::new(),
            assign_in_flight: false,
            plan_again: false,
            timeouts_in_flight: false,
            gates_in_flight: false,
            gc_in_flight: false,
            fires_in_flight: false,
            bucket,
        }
    }

    pub fn is_leading(&self) -> bool {
        self.leading
    }

    /// The log time at which the next schedule fire falls due, while this
    /// core would propose it then: the shell wakes the core at that time
    /// rather than at its next periodic tick, so a fire is proposed within a
    /// millisecond or so of its time.
    pub fn next_fire_due_ms(&self, state: &StateView<'_>) -> Option<u64> {
        if !self.leading || self.fires_in_flight {
            return None;
        }
        state.core.idx.fire_due.first().map(|(due, _)| *due)
    }

    /// Lease deadline of `session` (monotonic ms), for tests and metrics.
    pub fn deadline(&self, session: SessionId) -> Option<u64> {
        self.deadlines.get(&session).copied()
    }

    pub fn attached_sessions(&self) -> impl Iterator<Item = SessionId> + '_ {
        self.attached.keys().copied()
    }

    /// Decide what to do about `ev`.
    pub fn step(&mut self, ev: Event, now: Now, state: &StateView<'_>) -> Vec<Action> {
        let mut out = Vec::new();
        match ev {
            Event::Leadership { leading, term } => self.on_leadership(leading, term, now, state, &mut out),
            Event::Applied { .. } => {
                self.fire_due(now, state, &mut out);
                self.expire_gates_due(now, state, &mut out);
                self.collect_due(now, state, &mut out);
                self.plan(now, state, &mut out);
            }
            Event::Attach { session, conn } => self.on_attach(session, conn, now, state, &mut out),
            Event::Detach { session, conn } => {
                if self.attached.get(&session).is_some_and(|s| s.conn == conn) {
                    self.attached.remove(&session);
                }
            }
            Event::StreamFull { session, conn } => {
                if self.attached.get(&session).is_some_and(|s| s.conn == conn) {
                    self.attached.remove(&session);
                    tracing::warn!(session, "worker stream queue full; disconnecting it");
                    out.push(Action::Close { session, conn, reason: CloseReason::FellBehind });
                }
            }
            Event::Heartbeat { session, conn, seq, quorum_fresh } => {
                self.on_heartbeat(session, conn, seq, quorum_fresh, now, state, &mut out)
            }
            Event::Drain { session } => {
                if state.core.idx.sessions.contains_key(&session) {
                    self.draining.insert(session);
                }
            }
            Event::Tick => {
                if self.leading {
                    self.track_sessions(now, state, &mut out);
                    self.expire_due(now, state, &mut out);
                    self.time_out_due(now, state, &mut out);
                    self.fire_due(now, state, &mut out);
                    self.expire_gates_due(now, state, &mut out);
                    self.collect_due(now, state, &mut out);
                    self.reconcile(now, state, &mut out);
                    self.plan(now, state, &mut out);
                }
            }
            Event::Proposed { epoch, kind, outcome } => {
                if epoch == self.epoch && self.leading {
                    self.on_proposed(kind, outcome, now, state, &mut out);
                }
            }
        }
        out
    }

    fn on_leadership(&mut self, leading: bool, term: u64, now: Now, state: &StateView<'_>, out: &mut Vec<Action>) {
        if leading == self.leading {
            return;
        }
        if leading {
            self.leading = true;
            self.epoch += 1;
            self.assign_in_flight = false;
            self.timeouts_in_flight = false;
            self.gates_in_flight = false;
            self.gc_in_flight = false;
            self.fires_in_flight = false;
            self.plan_again = false;
            let live: Vec<SessionId> = state.core.idx.sessions.keys().copied().collect();
            self.deadlines = match self.saved.take() {
                // The quorum came back in the same term: leases go on as they were.
                Some((t, saved)) if t == term => {
                    let fresh = now.mono_ms + self.cfg.ttl_ms;
                    live.iter().map(|s| (*s, saved.get(s).copied().unwrap_or(fresh))).collect()
                }
                // A new term: every live session gets one fresh TTL, so a leader
                // change neither expires every lease nor extends it by more than one TTL.
                _ => live.iter().map(|s| (*s, now.mono_ms + self.cfg.ttl_ms)).collect(),
            };
            self.term = term;
            tracing::info!(node = self.cfg.node, term, sessions = live.len(), "leading; leases tracked");
            out.push(Action::SetLeading(true));
            self.fire_due(now, state, out);
            self.expire_gates_due(now, state, out);
            self.collect_due(now, state, out);
            self.plan(now, state, out);
        } else {
            self.leading = false;
            out.push(Action::SetLeading(false));
            for (session, s) in std::mem::take(&mut self.attached) {
                out.push(Action::Close { session, conn: s.conn, reason: CloseReason::NotLeader });
            }
            self.saved = Some((self.term, std::mem::take(&mut self.deadlines)));
            self.expiring.clear();
            self.draining.clear();
            tracing::info!(node = self.cfg.node, term = self.term, "not leading; worker streams closed");
        }
    }

    fn on_attach(&mut self, session: SessionId, conn: u64, now: Now, state: &StateView<'_>, out: &mut Vec<Action>) {
        if !self.leading {
            out.push(Action::Close { session, conn, reason: CloseReason::NotLeader });
            return;
        }
        if !state.core.idx.sessions.contains_key(&session) {
            out.push(Action::Close { session, conn, reason: CloseReason::Ended });
            return;
        }
        if let Some(old) = self.attached.remove(&session) {
            out.push(Action::Close { session, conn: old.conn, reason: CloseReason::Replaced });
        }
        // Opening or resuming a stream proves the worker is alive.
        if !self.expiring.contains(&session) {
            self.deadlines.insert(session, now.mono_ms + self.cfg.ttl_ms);
        }
        // Resync: after a reconnect or a leader change the worker may have
        // missed some of its attempts. It ignores the ones it already runs.
        let mut stream = Stream { conn, pushed: BTreeMap::new() };
        for (task, token, attempt, deadline_ms) in state.held(session) {
            stream.pushed.insert(task, token);
            let grant = Grant { task, session, token, attempt, deadline_ms };
            out.push(Action::Push { session, conn, grant, deadline_in_ms: deadline_ms.saturating_sub(now.log_ms) });
        }
        self.attached.insert(session, stream);
        self.plan(now, state, out);
    }

    #[allow(clippy::too_many_arguments)]
    fn on_heartbeat(
        &mut self,
        session: SessionId,
        conn: u64,
        seq: u64,
        quorum_fresh: bool,
        now: Now,
        state: &StateView<'_>,
        out: &mut Vec<Action>,
    ) {
        if !self.leading {
            out.push(Action::Close { session, conn, reason: CloseReason::NotLeader });
            return;
        }
        if !state.core.idx.sessions.contains_key(&session) {
            self.attached.remove(&session);
            out.push(Action::Close { session, conn, reason: CloseReason::Ended });
            return;
        }
        // An expiring session is not renewed, and so not acknowledged: the
        // worker must not believe its lease was renewed.
        if self.expiring.contains(&session) {
            return;
        }
        self.deadlines.insert(session, now.mono_ms + self.cfg.ttl_ms);
        // An ack tells the worker its lease runs TTL from when it sent the
        // heartbeat. Without a fresh quorum another leader may already have
        // taken over and started its own TTL earlier: no ack then, and the
        // worker's fence deadline stays behind that leader's expiry.
        if quorum_fresh {
            out.push(Action::AckHeartbeat { session, conn, seq });
        }
    }

    /// Follow the live sessions: ones registered since we took over get one
    /// TTL from when we first see them; ended ones are forgotten and their
    /// streams closed.
    fn track_sessions(&mut self, now: Now, state: &StateView<'_>, out: &mut Vec<Action>) {
        let live = &state.core.idx.sessions;
        for s in live.keys() {
            self.deadlines.entry(*s).or_insert(now.mono_ms + self.cfg.ttl_ms);
        }
        self.deadlines.retain(|s, _| live.contains_key(s));
        self.draining.retain(|s| live.contains_key(s));
        let ended: Vec<SessionId> = self.attached.keys().filter(|s| !live.contains_key(s)).copied().collect();
        for session in ended {
            if let Some(s) = self.attached.remove(&session) {
                out.push(Action::Close { session, conn: s.conn, reason: CloseReason::Ended });
            }
        }
    }

    fn expire_due(&mut self, now: Now, state: &StateView<'_>, out: &mut Vec<Action>) {
        let due: Vec<SessionId> = self
            .deadlines
            .iter()
            .filter(|(s, d)| **d <= now.mono_ms && !self.expiring.contains(s))
            .map(|(s, _)| *s)
            .collect();
        for session in due {
            let Some(rec) = state.core.idx.sessions.get(&session) else { continue };
            if !self.bucket.take(now.mono_ms) {
                tracing::warn!("session expiry rate limit reached; deferring the rest");
                break;
            }
            self.expiring.insert(session);
            tracing::info!(session, epoch = rec.epoch, "worker lease expired");
            out.push(
                self.propose(ProposalKind::Expire { session }, Command::ExpireWorker { session, epoch: rec.epoch }),
            );
        }
    }

    fn time_out_due(&mut self, now: Now, state: &StateView<'_>, out: &mut Vec<Action>) {
        if self.timeouts_in_flight {
            return;
        }
        let due: Vec<(TaskKey, Token)> = state
            .core
            .idx
            .deadlines
            .iter()
            .take_while(|(d, _, _)| *d <= now.log_ms)
            .take(self.cfg.timeouts_per_entry)
            .map(|(_, k, t)| (*k, *t))
            .collect();
        if due.is_empty() {
            return;
        }
        // Tell the workers now; the commit may take a while.
        for (task, token) in &due {
            if let Some((session, conn)) = self.holder(state, *task, *token) {
                if let Some(s) = self.attached.get_mut(&session) {
                    s.pushed.remove(task);
                }
                out.push(Action::Cancel { session, conn, task: *task, token: *token, reason: CancelReason::TimedOut });
            }
        }
        self.timeouts_in_flight = true;
        out.push(self.propose(ProposalKind::Timeout, Command::TimeoutAttempts { attempts: due }));
    }

    /// The attached stream that was pushed attempt (task, token): the one of
    /// the session the task record names.
    fn holder(&self, state: &StateView<'_>, task: TaskKey, token: Token) -> Option<(SessionId, u64)> {
        let (session, ..) = state.assigned(task)?;
        let stream = self.attached.get(&session).filter(|s| s.pushed.get(&task) == Some(&token))?;
        Some((session, stream.conn))
    }

    /// Compare what each attached worker was told with what the applied
    /// state gives its session: cancel what it no longer holds, push what it
    /// holds but was never sent (a lost reply to our own AssignTasks).
    fn reconcile(&mut self, now: Now, state: &StateView<'_>, out: &mut Vec<Action>) {
        let assign_in_flight = self.assign_in_flight;
        for (session, stream) in self.attached.iter_mut() {
            let held = state.core.idx.by_session.get(session);
            let gone: Vec<(TaskKey, Token)> = stream
                .pushed
                .iter()
                .filter(|(k, _)| !held.is_some_and(|h| h.contains(k)))
                .map(|(k, t)| (*k, *t))
                .collect();
            for (task, token) in gone {
                stream.pushed.remove(&task);
                out.push(Action::Cancel {
                    session: *session,
                    conn: stream.conn,
                    task,
                    token,
                    reason: CancelReason::Revoked,
                });
            }
            // While an assignment is in flight its grants are pushed when it
            // commits; pushing them here as well would only duplicate them.
            if assign_in_flight {
                continue;
            }
            let Some(held) = held else { continue };
            let missing: Vec<TaskKey> = held.iter().filter(|k| !stream.pushed.contains_key(k)).copied().collect();
            for task in missing {
                if let Some((s, token, attempt, deadline_ms)) = state.assigned(task)
                    && s == *session
                {
                    stream.pushed.insert(task, token);
                    let grant = Grant { task, session: s, token, attempt, deadline_ms };
                    out.push(Action::Push {
                        session: s,
                        conn: stream.conn,
                        grant,
                        deadline_in_ms: deadline_ms.saturating_sub(now.log_ms),
                    });
                }
            }
        }
    }

    /// One planning round, unless one is in flight (then again after it).
    fn plan(&mut self, now: Now, state: &StateView<'_>, out: &mut Vec<Action>) {
        if !self.leading {
            return;
        }
        if self.assign_in_flight {
            self.plan_again = true;
            return;
        }
        if state.core.idx.pending.is_empty() {
            return;
        }
        let eligible: BTreeSet<SessionId> = self
            .attached
            .keys()
            .copied()
            .filter(|s| {
                self.deadlines.get(s).is_some_and(|d| *d > now.mono_ms)
                    && !self.expiring.contains(s)
                    && !self.draining.contains(s)
            })
            .collect();
        if eligible.is_empty() {
            return;
        }
        let assignments: Vec<Assign> =
            plan(&View { idx: &state.core.idx, eligible: &eligible, limits: self.cfg.plan }, now.log_ms);
        if assignments.is_empty() {
            return;
        }
        self.assign_in_flight = true;
        out.push(self.propose(ProposalKind::Assign, Command::AssignTasks { assignments }));
    }

    fn propose(&self, kind: ProposalKind, cmd: Command) -> Action {
        Action::Propose(Proposal { epoch: self.epoch, kind, cmd })
    }

    fn on_proposed(
        &mut self,
        kind: ProposalKind,
        outcome: Outcome,
        now: Now,
        state: &StateView<'_>,
        out: &mut Vec<Action>,
    ) {
        match (kind, outcome) {
            (ProposalKind::Assign, outcome) => {
                self.assign_in_flight = false;
                let grants = match outcome {
                    Outcome::Assigned(g) => g,
                    _ => Vec::new(),
                };
                for g in &grants {
                    if let Some(s) = self.attached.get_mut(&g.session) {
                        s.pushed.insert(g.task, g.token);
                        out.push(Action::Push {
                            session: g.session,
                            conn: s.conn,
                            grant: g.clone(),
                            deadline_in_ms: g.deadline_ms.saturating_sub(now.log_ms),
                        });
                    }
                }
                if !grants.is_empty() || std::mem::take(&mut self.plan_again) {
                    self.plan(now, state, out);
                }
            }
            (ProposalKind::Expire { session }, outcome) => {
                self.expiring.remove(&session);
                match outcome {
                    Outcome::Expired(true) => {
                        self.deadlines.remove(&session);
                        self.draining.remove(&session);
                        if let Some(s) = self.attached.remove(&session) {
                            out.push(Action::Close { session, conn: s.conn, reason: CloseReason::Ended });
                        }
                        self.plan(now, state, out);
                    }
                    // Already ended, or re-registered under a new epoch.
                    Outcome::Expired(false) => {
                        self.deadlines.remove(&session);
                    }
                    // Not committed: still due, so the next check proposes it again.
                    _ => {}
                }
            }
            (ProposalKind::Timeout, outcome) => {
                self.timeouts_in_flight = false;
                if outcome == Outcome::TimedOut {
                    self.plan(now, state, out);
                }
            }
            (ProposalKind::ExpireGates, outcome) => {
                self.gates_in_flight = false;
                // Committed: more may be due than one entry held. Not
                // committed: the next check proposes what is still due.
                if let Outcome::GatesExpired(_) = outcome {
                    self.expire_gates_due(now, state, out);
                    self.plan(now, state, out);
                }
            }
            (ProposalKind::Fire, outcome) => {
                self.fires_in_flight = false;
                // Committed: a catch-up leaves the next time due at once,
                // and the runs it started want workers. Not committed: the
                // next check proposes what is still due.
                if outcome == Outcome::Fired {
                    self.fire_due(now, state, out);
                    self.plan(now, state, out);
                }
            }
            (ProposalKind::CollectGarbage, outcome) => {
                self.gc_in_flight = false;
                // Committed: go on while work is due. Not committed: the
                // next check proposes it again.
                if let Outcome::Collected(_) = outcome {
                    self.collect_due(now, state, out);
                }
            }
        }
    }
}

#[path = "core_due.rs"]
mod due;

#[cfg(test)]
#[path = "core_tests.rs"]
mod tests;
