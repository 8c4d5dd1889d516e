//! The leader core on a virtual clock, over the real apply() on an in-memory
//! store. A `Rig` plays the IO shell: it applies the core's proposals and
//! feeds their outcomes back, as `leader/mod.rs` and the simulator do.

use std::collections::BTreeMap;

use baton_raft_store::workflow::GateTimeout;
use baton_raft_store::{
    Backoff, Cadence, Command, CommandError, Core, Entry, JobSpec, MemKv, Misfire, Outcome as StoreOutcome, Overlap,
    Proposal as Entry0, Response, ScheduleSpec, SessionId, StepKind, StepSpec, StepState, TaskKey, TaskState, Template,
    TriggerRule, WorkflowId, WorkflowSpec, WorkflowStatus,
};
use openraft::{CommittedLeaderId, EntryPayload, LogId};

use super::*;
use crate::clock::LogClock;

const TTL: u64 = 2_000;

fn cfg() -> CoreConfig {
    CoreConfig {
        node: 1,
        ttl_ms: TTL,
        max_expirations_per_sec: 200,
        plan: PlanLimits { max_assignments: 1000, max_scan: 50_000 },
        timeouts_per_entry: TIMEOUTS_PER_ENTRY,
        gates_per_entry: GATES_PER_ENTRY,
    }
}

/// The store, the core under test, and the clocks of the node it runs on.
struct Rig {
    state: Core,
    kv: MemKv,
    index: u64,
    leader: LeaderCore,
    clock: LogClock,
    /// This node's wall clock minus true time.
    skew_ms: i64,
    /// True time, ms.
    t: u64,
    /// Every action the core produced, in order.
    log: Vec<Action>,
}

impl Rig {
    fn new() -> Self {
        Rig {
            state: Core::default(),
            kv: MemKv::default(),
            index: 0,
            leader: LeaderCore::new(cfg()),
            clock: LogClock::default(),
            skew_ms: 0,
            t: 1_000_000,
            log: Vec::new(),
        }
    }

    fn now(&mut self) -> Now {
        self.clock.observe(self.state.meta.clock_ms, self.t);
        let wall = (self.t as i64 + self.skew_ms) as u64;
        Now { mono_ms: self.t, log_ms: self.clock.now_ms(wall, self.t) }
    }

    /// Apply `cmd` as an entry stamped `at` (log time).
    fn apply_at(&mut self, cmd: Command, at: u64) -> Response {
        self.index += 1;
        let e = Entry {
            log_id: LogId::new(CommittedLeaderId::new(1, 0), self.index),
            payload: EntryPayload::Normal(Entry0 { proposed_at_ms: at, cmd }),
        };
        let r = self.state.apply_entry(&self.kv, &e).unwrap();
        let w = self.state.take_writes().unwrap();
        self.kv.write(w);
        r
    }

    /// Apply `cmd` stamped by this node's log clock.
    fn apply(&mut self, cmd: Command) -> Response {
        let at = self.now().log_ms;
        self.apply_at(cmd, at)
    }

    fn step(&mut self, ev: Event) -> Vec<Action> {
        let now = self.now();
        let view = StateView { core: &self.state, kv: &self.kv };
        let out = self.leader.step(ev, now, &view);
        self.log.extend(out.iter().cloned());
        out
    }

    /// Step, then commit every proposal the core made and feed back its
    /// outcome, until the core proposes nothing more. Returns every action.
    fn run(&mut self, ev: Event) -> Vec<Action> {
        let mut all = Vec::new();
        let mut queue = vec![ev];
        while let Some(ev) = queue.pop() {
            for a in self.step(ev) {
                if let Action::Propose(p) = &a {
                    let r = self.apply(p.cmd.clone());
                    queue.push(Event::Proposed { epoch: p.epoch, kind: p.kind, outcome: outcome_of(&p.kind, r) });
                }
                all.push(a);
            }
        }
        all
    }

    fn advance(&mut self, ms: u64) {
        self.t += ms;
    }

    fn register(&mut self, name: &str, capacity: u32) -> SessionId {
        match self.apply(Command::RegisterWorker {
            name: name.into(),
            labels: BTreeMap::new(),
            capacity,
            namespaces: None,
        }) {
            Response::Done(StoreOutcome::Registered { session, .. }) => session,
            r => panic!("{r:?}"),
        }
    }

    fn submit(&mut self, shards: usize) -> u64 {
        let mut spec = JobSpec::with_shards("ns", shards);
        spec.backoff = Backoff { base_ms: 1_000, max_ms: 1_000 };
        match self.apply(Command::SubmitJob(spec)) {
            Response::Done(StoreOutcome::Submitted { job, .. }) => job,
            r => panic!("{r:?}"),
        }
    }

    /// A leader at term 1 with one attached worker of `capacity`.
    fn leading_with_worker(capacity: u32) -> (Rig, SessionId) {
        let mut r = Rig::new();
        let s = r.register("w", capacity);
        r.lead(1);
        r.run(Event::Attach { session: s, conn: 1 });
        (r, s)
    }

    /// The assignment the core proposes when the applied index moves (not yet committed).
    fn planned(&mut self) -> Proposal {
        let a = self.step(Event::Applied { index: self.index });
        match a.first() {
            Some(Action::Propose(p)) => p.clone(),
            _ => panic!("no proposal: {a:?}"),
        }
    }

    fn lead(&mut self, term: u64) -> Vec<Action> {
        self.run(Event::Leadership { leading: true, term })
    }

    /// Submit a workflow: gate "approve" (timeout `timeout_ms`), then job step "after".
    fn submit_gate_flow(&mut self, name: &str, timeout_ms: u64, on_timeout: GateTimeout) -> WorkflowId {
        let spec = WorkflowSpec {
            namespace: "ns".into(),
            name: name.into(),
            labels: BTreeMap::new(),
            idempotency_key: None,
            steps: vec![
                StepSpec {
                    name: "approve".into(),
                    depends_on: vec![],
                    trigger: TriggerRule::AllSucceeded,
                    kind: StepKind::Gate { timeout_ms: Some(timeout_ms), on_timeout, event: None },
                },
                StepSpec {
                    name: "after".into(),
                    depends_on: vec!["approve".into()],
                    trigger: TriggerRule::AllSucceeded,
                    kind: StepKind::Job {
                        job: JobSpec::with_shards("ns", 1),
                        reduce: None,
                        choice: false,
                        dynamic: false,
                    },
                },
            ],
            result_step: None,
        };
        match self.apply(Command::SubmitWorkflow(spec)) {
            Response::Done(StoreOutcome::WorkflowSubmitted { workflow, .. }) => workflow,
            r => panic!("{r:?}"),
        }
    }

    fn step_state(&self, wf: WorkflowId, step: usize) -> StepState {
        self.state.workflow(&self.kv, wf).unwrap().unwrap().steps[step].state.clone()
    }

    fn task(&self, job: u64, shard: u32) -> TaskState {
        self.state.task(&self.kv, TaskKey::new(job, shard)).unwrap().unwrap().state
    }
}

/// What the shell reports for a committed proposal (see `leader/mod.rs`).
fn outcome_of(kind: &ProposalKind, r: Response) -> Outcome {
    super::super::outcome_of(kind, Ok(r))
}

fn pushes(actions: &[Action]) -> Vec<(SessionId, TaskKey)> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::Push { session, grant, .. } => Some((*session, grant.task)),
            _ => None,
        })
        .collect()
}

fn expiries(actions: &[Action]) -> Vec<SessionId> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::Propose(Proposal { cmd: Command::ExpireWorker { session, .. }, .. }) => Some(*session),
            _ => None,
        })
        .collect()
}

fn gate_expiries(actions: &[Action]) -> Vec<Vec<(WorkflowId, u32)>> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::Propose(Proposal { cmd: Command::ExpireGates { gates }, .. }) => Some(gates.clone()),
            _ => None,
        })
        .collect()
}

fn closes(actions: &[Action]) -> Vec<(SessionId, u64, CloseReason)> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::Close { session, conn, reason } => Some((*session, *conn, *reason)),
            _ => None,
        })
        .collect()
}

#[test]
fn a_new_leader_pushes_submitted_work_to_an_attached_worker() {
    let mut r = Rig::new();
    let s = r.register("w", 4);
    let job = r.submit(2);
    assert_eq!(r.lead(1), vec![Action::SetLeading(true)], "nobody attached yet");
    let a = r.run(Event::Attach { session: s, conn: 7 });
    assert_eq!(pushes(&a), vec![(s, TaskKey::new(job, 0)), (s, TaskKey::new(job, 1))]);
    assert!(matches!(r.task(job, 0), TaskState::Assigned { session, .. } if session == s));
    // Nothing more to do: the next applied index plans nothing.
    assert!(r.run(Event::Applied { index: r.index }).is_empty());
}

#[test]
fn heartbeats_renew_the_lease_and_are_acknowledged_only_then() {
    let (mut r, s) = Rig::leading_with_worker(1);
    r.advance(1_500);
    let a = r.run(Event::Heartbeat { session: s, conn: 1, seq: 9, quorum_fresh: true });
    assert_eq!(a, vec![Action::AckHeartbeat { session: s, conn: 1, seq: 9 }]);
    assert_eq!(r.leader.deadline(s), Some(r.t + TTL));
    // TTL after the last heartbeat, the session is expired once.
    r.advance(TTL - 1);
    assert!(expiries(&r.step(Event::Tick)).is_empty());
    r.advance(1);
    let a = r.step(Event::Tick);
    assert_eq!(expiries(&a), vec![s]);
    // While the expiry is in flight a heartbeat neither renews nor is acked.
    assert!(r.step(Event::Heartbeat { session: s, conn: 1, seq: 10, quorum_fresh: true }).is_empty());
    assert!(expiries(&r.step(Event::Tick)).is_empty(), "one expiry in flight at a time");
}

#[test]
fn a_dead_workers_task_is_reassigned_within_ttl_and_one_check() {
    let mut r = Rig::new();
    let dead = r.register("dead", 1);
    let live = r.register("live", 1);
    r.lead(1);
    let job = r.submit(1);
    r.run(Event::Attach { session: dead, conn: 1 });
    assert!(matches!(r.task(job, 0), TaskState::Assigned { session, .. } if session == dead));
    r.run(Event::Attach { session: live, conn: 2 });
    let check = 100;
    let mut reassigned_at = None;
    for _ in 0..100 {
        r.advance(check);
        r.run(Event::Heartbeat { session: live, conn: 2, seq: 0, quorum_fresh: true });
        let a = r.run(Event::Tick);
        if pushes(&a).contains(&(live, TaskKey::new(job, 0))) {
            reassigned_at = Some(r.t);
            break;
        }
    }
    let took = reassigned_at.expect("reassigned") - 1_000_000;
    assert!(took <= TTL + check, "took {took} ms");
    assert!(closes(&r.log).contains(&(dead, 1, CloseReason::Ended)));
}

#[test]
fn a_new_term_gives_every_session_one_fresh_ttl_and_no_more() {
    let mut r = Rig::new();
    let s = r.register("w", 1);
    r.lead(1);
    r.advance(1_900);
    r.run(Event::Leadership { leading: false, term: 1 });
    r.advance(50);
    r.lead(2);
    assert_eq!(r.leader.deadline(s), Some(r.t + TTL), "fresh from takeover, not expired");
    r.advance(TTL);
    assert_eq!(expiries(&r.step(Event::Tick)), vec![s]);
}

#[test]
fn a_flapping_quorum_in_one_term_does_not_renew_leases() {
    let mut r = Rig::new();
    let s = r.register("w", 1);
    r.lead(3);
    let deadline = r.leader.deadline(s).unwrap();
    // The quorum goes silent and comes back every 400 ms, in the same term.
    let mut expired_at = None;
    for _ in 0..20 {
        r.advance(200);
        r.run(Event::Leadership { leading: false, term: 3 });
        r.advance(200);
        r.run(Event::Leadership { leading: true, term: 3 });
        assert!(r.leader.deadline(s).is_none_or(|d| d <= deadline), "lease extended by a flap");
        if !expiries(&r.step(Event::Tick)).is_empty() {
            expired_at = Some(r.t);
            break;
        }
    }
    assert!(expired_at.is_some_and(|t| t <= deadline + 400), "{expired_at:?} vs {deadline}");
}

#[test]
fn losing_leadership_closes_every_stream_and_refuses_new_ones() {
    let (mut r, s) = Rig::leading_with_worker(1);
    let a = r.run(Event::Leadership { leading: false, term: 1 });
    assert_eq!(a[0], Action::SetLeading(false));
    assert_eq!(closes(&a), vec![(s, 1, CloseReason::NotLeader)]);
    assert_eq!(closes(&r.run(Event::Attach { session: s, conn: 2 })), vec![(s, 2, CloseReason::NotLeader)]);
    assert_eq!(
        closes(&r.run(Event::Heartbeat { session: s, conn: 2, seq: 1, quorum_fresh: true })),
        vec![(s, 2, CloseReason::NotLeader)]
    );
}

#[test]
fn a_second_stream_of_a_session_replaces_the_first_and_resyncs() {
    let mut r = Rig::new();
    let s = r.register("w", 2);
    r.lead(1);
    let job = r.submit(1);
    r.run(Event::Attach { session: s, conn: 1 });
    let a = r.run(Event::Attach { session: s, conn: 2 });
    assert_eq!(closes(&a), vec![(s, 1, CloseReason::Replaced)]);
    assert_eq!(pushes(&a), vec![(s, TaskKey::new(job, 0))], "resync of the held attempt");
    // The old stream's detach does not detach the new one.
    r.run(Event::Detach { session: s, conn: 1 });
    assert_eq!(r.leader.attached_sessions().collect::<Vec<_>>(), vec![s]);
}

#[test]
fn an_ended_session_cannot_attach_and_its_stream_is_closed_at_the_next_check() {
    let (mut r, s) = Rig::leading_with_worker(1);
    // The same name registers again: the old session ends.
    let s2 = r.register("w", 1);
    assert_ne!(s, s2);
    assert_eq!(closes(&r.run(Event::Tick)), vec![(s, 1, CloseReason::Ended)]);
    assert_eq!(closes(&r.run(Event::Attach { session: s, conn: 3 })), vec![(s, 3, CloseReason::Ended)]);
}

#[test]
fn a_cancelled_jobs_running_attempts_are_cancelled_at_the_next_check() {
    let mut r = Rig::new();
    let s = r.register("w", 2);
    r.lead(1);
    let job = r.submit(2);
    r.run(Event::Attach { session: s, conn: 1 });
    r.apply(Command::CancelJob { job, reason: "no".into() });
    let a = r.run(Event::Tick);
    let cancels: Vec<_> = a
        .iter()
        .filter_map(|a| match a {
            Action::Cancel { task, reason, .. } => Some((*task, *reason)),
            _ => None,
        })
        .collect();
    assert_eq!(
        cancels,
        vec![(TaskKey::new(job, 0), CancelReason::Revoked), (TaskKey::new(job, 1), CancelReason::Revoked)]
    );
    assert!(r.run(Event::Tick).is_empty(), "cancelled once");
}

#[test]
fn a_grant_whose_reply_was_lost_is_pushed_at_the_next_check() {
    let (mut r, s) = Rig::leading_with_worker(1);
    let job = r.submit(1);
    // The assignment commits but its reply is lost.
    let p = r.planned();
    r.apply(p.cmd.clone());
    r.step(Event::Proposed { epoch: p.epoch, kind: p.kind, outcome: Outcome::NotCommitted });
    let a = r.run(Event::Tick);
    assert_eq!(pushes(&a), vec![(s, TaskKey::new(job, 0))]);
    assert!(pushes(&r.run(Event::Tick)).is_empty(), "pushed once");
}

#[test]
fn an_attempt_past_its_deadline_is_cancelled_and_timed_out() {
    let mut r = Rig::new();
    let s = r.register("w", 1);
    r.lead(1);
    let mut spec = JobSpec::with_shards("ns", 1);
    spec.attempt_timeout_ms = 5_000;
    let job = match r.apply(Command::SubmitJob(spec)) {
        Response::Done(StoreOutcome::Submitted { job, .. }) => job,
        x => panic!("{x:?}"),
    };
    let a = r.run(Event::Attach { session: s, conn: 1 });
    let deadline_in = a.iter().find_map(|a| match a {
        Action::Push { deadline_in_ms, .. } => Some(*deadline_in_ms),
        _ => None,
    });
    assert_eq!(deadline_in, Some(5_000));
    r.advance(4_000);
    r.run(Event::Heartbeat { session: s, conn: 1, seq: 1, quorum_fresh: true });
    assert!(r.run(Event::Tick).iter().all(|a| !matches!(a, Action::Cancel { .. })));
    r.advance(1_000);
    r.run(Event::Heartbeat { session: s, conn: 1, seq: 2, quorum_fresh: true });
    let a = r.run(Event::Tick);
    assert!(a.iter().any(|a| matches!(a, Action::Cancel { reason: CancelReason::TimedOut, .. })), "{a:?}");
    assert!(matches!(r.task(job, 0), TaskState::Pending { .. }), "{:?}", r.task(job, 0));
}

#[test]
fn a_leader_whose_clock_is_60s_behind_dispatches_new_and_requeued_work_at_once() {
    let mut r = Rig::new();
    let a_worker = r.register("a", 1);
    let b_worker = r.register("b", 1);
    // The previous leader stamped the log at true time; this node is 60 s behind.
    r.skew_ms = -60_000;
    r.clock = LogClock::default();
    r.lead(2);
    let job = r.submit(1);
    let a = r.run(Event::Attach { session: a_worker, conn: 1 });
    assert_eq!(pushes(&a), vec![(a_worker, TaskKey::new(job, 0))], "new work dispatched at once");
    // The attempt fails and is retried after its 1 s backoff, measured in log time.
    let TaskState::Assigned { token, .. } = r.task(job, 0) else { panic!() };
    r.apply(Command::FailTask {
        task: TaskKey::new(job, 0),
        token,
        error: "x".into(),
        retryable: true,
        logs: Default::default(),
    });
    r.run(Event::Attach { session: b_worker, conn: 2 });
    let mut waited = 0;
    while !matches!(r.task(job, 0), TaskState::Assigned { .. }) {
        r.advance(50);
        waited += 50;
        r.run(Event::Heartbeat { session: a_worker, conn: 1, seq: waited, quorum_fresh: true });
        r.run(Event::Heartbeat { session: b_worker, conn: 2, seq: waited, quorum_fresh: true });
        r.run(Event::Tick);
        assert!(waited <= 1_100, "requeued work still waiting after {waited} ms");
    }
}

#[test]
fn expiries_are_rate_limited() {
    let mut r = Rig::new();
    r.leader = LeaderCore::new(CoreConfig { max_expirations_per_sec: 2, ..cfg() });
    let sessions: Vec<_> = (0..5).map(|i| r.register(&format!("w{i}"), 1)).collect();
    r.lead(1);
    r.advance(TTL);
    // Proposals are not committed here, so they stay in flight.
    assert_eq!(expiries(&r.step(Event::Tick)), sessions[..2].to_vec());
    assert!(expiries(&r.step(Event::Tick)).is_empty());
    r.advance(500);
    assert_eq!(expiries(&r.step(Event::Tick)), vec![sessions[2]]);
}

#[test]
fn a_draining_session_gets_no_new_work() {
    let (mut r, s) = Rig::leading_with_worker(2);
    r.run(Event::Drain { session: s });
    r.submit(1);
    assert!(pushes(&r.run(Event::Applied { index: r.index })).is_empty());
    assert!(pushes(&r.run(Event::Tick)).is_empty());
}

#[test]
fn a_full_stream_is_closed_and_detached() {
    let mut r = Rig::new();
    let s = r.register("w", 1);
    r.lead(1);
    r.run(Event::Attach { session: s, conn: 4 });
    assert_eq!(closes(&r.run(Event::StreamFull { session: s, conn: 4 })), vec![(s, 4, CloseReason::FellBehind)]);
    assert_eq!(r.leader.attached_sessions().count(), 0);
    assert!(r.run(Event::StreamFull { session: s, conn: 4 }).is_empty(), "once");
}

#[test]
fn outcomes_of_an_earlier_leadership_are_ignored() {
    let (mut r, s) = Rig::leading_with_worker(1);
    let job = r.submit(1);
    let p = r.planned();
    let resp = r.apply(p.cmd.clone());
    r.run(Event::Leadership { leading: false, term: 1 });
    r.lead(2);
    let a = r.run(Event::Proposed { epoch: p.epoch, kind: p.kind, outcome: outcome_of(&p.kind, resp) });
    assert!(a.is_empty(), "{a:?}");
    // The grant is still delivered, by the resync when the worker reattaches.
    assert_eq!(pushes(&r.run(Event::Attach { session: s, conn: 2 })), vec![(s, TaskKey::new(job, 0))]);
}

#[test]
fn a_leader_without_a_fresh_quorum_renews_but_does_not_acknowledge() {
    // Its quorum may already have elected another leader, whose fresh TTL
    // starts at its takeover: an ack now would let the worker's fence
    // deadline run past that leader's expiry.
    let (mut r, s) = Rig::leading_with_worker(1);
    r.advance(500);
    assert!(r.run(Event::Heartbeat { session: s, conn: 1, seq: 1, quorum_fresh: false }).is_empty());
    assert_eq!(r.leader.deadline(s), Some(r.t + TTL), "still renewed: the worker is alive");
    let a = r.run(Event::Heartbeat { session: s, conn: 1, seq: 2, quorum_fresh: true });
    assert_eq!(a, vec![Action::AckHeartbeat { session: s, conn: 1, seq: 2 }]);
}

#[test]
fn a_gate_is_expired_once_after_its_deadline_in_log_time_and_not_before() {
    let (mut r, s) = Rig::leading_with_worker(1);
    let wf = r.submit_gate_flow("flow", 5_000, GateTimeout::Approve);
    assert!(matches!(r.step_state(wf, 0), StepState::AwaitingApproval { deadline_ms: Some(_) }));
    r.advance(4_999);
    r.run(Event::Heartbeat { session: s, conn: 1, seq: 1, quorum_fresh: true });
    assert!(gate_expiries(&r.run(Event::Tick)).is_empty(), "not before the deadline");
    assert!(gate_expiries(&r.run(Event::Applied { index: r.index })).is_empty());
    r.advance(1);
    r.run(Event::Heartbeat { session: s, conn: 1, seq: 2, quorum_fresh: true });
    // Proposed, not committed yet: later checks do not propose it again.
    assert_eq!(gate_expiries(&r.step(Event::Tick)), vec![vec![(wf, 0)]]);
    assert!(gate_expiries(&r.step(Event::Tick)).is_empty(), "one expiry in flight");
    assert!(gate_expiries(&r.step(Event::Applied { index: r.index })).is_empty());
    let p = match r
        .log
        .iter()
        .rev()
        .find(|a| matches!(a, Action::Propose(Proposal { cmd: Command::ExpireGates { .. }, .. })))
    {
        Some(Action::Propose(p)) => p.clone(),
        _ => unreachable!(),
    };
    let resp = r.apply(p.cmd.clone());
    let a = r.run(Event::Proposed { epoch: p.epoch, kind: p.kind, outcome: outcome_of(&p.kind, resp) });
    assert_eq!(r.step_state(wf, 0), StepState::Succeeded, "approved on timeout");
    assert_eq!(r.step_state(wf, 1), StepState::Running);
    // The successor's job went to the worker right after the commit.
    let job = r.state.workflow(&r.kv, wf).unwrap().unwrap().steps[1].map_job.unwrap();
    assert_eq!(pushes(&a), vec![(s, TaskKey::new(job, 0))]);
    r.advance(10_000);
    r.run(Event::Heartbeat { session: s, conn: 1, seq: 3, quorum_fresh: true });
    assert!(gate_expiries(&r.run(Event::Tick)).is_empty(), "expired once");
    assert_eq!(gate_expiries(&r.log).len(), 1);
}

#[test]
fn a_gate_rejected_on_timeout_fails_its_workflow() {
    let mut r = Rig::new();
    r.lead(1);
    let wf = r.submit_gate_flow("flow", 1_000, GateTimeout::Reject);
    r.advance(1_000);
    assert_eq!(gate_expiries(&r.run(Event::Tick)), vec![vec![(wf, 0)]]);
    let rec = r.state.workflow(&r.kv, wf).unwrap().unwrap();
    assert_eq!(rec.steps[0].state, StepState::Failed);
    assert_eq!(rec.steps[1].state, StepState::Skipped);
    assert_eq!(rec.status, WorkflowStatus::Failed);
    assert!(r.state.idx.gate_deadlines.is_empty());
}

#[test]
fn a_resolved_gate_is_not_expired() {
    let mut r = Rig::new();
    r.lead(1);
    let wf = r.submit_gate_flow("flow", 1_000, GateTimeout::Reject);
    r.advance(500);
    let resp = r.apply(Command::ResolveGate { workflow: wf, step: "approve".into(), approve: true, by: "ops".into() });
    assert!(matches!(resp, Response::Done(StoreOutcome::GateResolved { approved: true, .. })), "{resp:?}");
    r.advance(5_000);
    assert!(gate_expiries(&r.run(Event::Tick)).is_empty());
    assert!(gate_expiries(&r.run(Event::Applied { index: r.index })).is_empty());
    assert_eq!(r.step_state(wf, 0), StepState::Succeeded);
}

#[test]
fn a_gate_decided_while_its_expiry_is_in_flight_stays_decided() {
    let mut r = Rig::new();
    r.lead(1);
    let wf = r.submit_gate_flow("flow", 1_000, GateTimeout::Approve);
    r.advance(1_000);
    let a = r.step(Event::Tick);
    let Some(Action::Propose(p)) = a.iter().find(|a| matches!(a, Action::Propose(_))).cloned() else { panic!("{a:?}") };
    // An operator rejects it before the expiry commits; the expiry then finds no waiting gate.
    r.apply(Command::ResolveGate { workflow: wf, step: "approve".into(), approve: false, by: "ops".into() });
    let resp = r.apply(p.cmd.clone());
    let outcome = outcome_of(&p.kind, resp);
    assert_eq!(outcome, Outcome::GatesExpired(0));
    assert!(gate_expiries(&r.run(Event::Proposed { epoch: p.epoch, kind: p.kind, outcome })).is_empty());
    assert_eq!(r.step_state(wf, 0), StepState::Failed, "the operator's rejection stands");
}

#[test]
fn gate_expiries_are_bounded_per_entry_and_continue_after_each_commit() {
    let mut r = Rig::new();
    r.leader = LeaderCore::new(CoreConfig { gates_per_entry: 2, ..cfg() });
    r.lead(1);
    let flows: Vec<WorkflowId> =
        (0..5).map(|i| r.submit_gate_flow(&format!("f{i}"), 1_000, GateTimeout::Reject)).collect();
    r.advance(1_000);
    let batches = gate_expiries(&r.run(Event::Tick));
    assert_eq!(
        batches,
        vec![vec![(flows[0], 0), (flows[1], 0)], vec![(flows[2], 0), (flows[3], 0)], vec![(flows[4], 0)]]
    );
    assert!(flows.iter().all(|wf| r.step_state(*wf, 0) == StepState::Failed));
}

#[test]
fn a_new_leader_expires_gates_from_the_applied_state() {
    let mut r = Rig::new();
    r.lead(1);
    let wf = r.submit_gate_flow("flow", 1_000, GateTimeout::Reject);
    r.advance(1_000);
    // The old leader proposes, and loses leadership before the outcome.
    let a = r.step(Event::Tick);
    let Some(Action::Propose(old)) = a.iter().find(|a| matches!(a, Action::Propose(_))).cloned() else {
        panic!("{a:?}")
    };
    r.run(Event::Leadership { leading: false, term: 1 });
    assert!(gate_expiries(&r.step(Event::Tick)).is_empty(), "a follower proposes nothing");
    // A new leadership re-derives the due gates from the state, not from the lost proposal.
    let a = r.step(Event::Leadership { leading: true, term: 2 });
    assert_eq!(gate_expiries(&a), vec![vec![(wf, 0)]], "{a:?}");
    let Some(Action::Propose(new)) =
        a.iter().find(|a| matches!(a, Action::Propose(Proposal { cmd: Command::ExpireGates { .. }, .. }))).cloned()
    else {
        unreachable!()
    };
    // The old proposal's outcome (another epoch) is ignored; the new one commits once.
    assert!(r.run(Event::Proposed { epoch: old.epoch, kind: old.kind, outcome: Outcome::NotCommitted }).is_empty());
    let resp = r.apply(new.cmd.clone());
    r.run(Event::Proposed { epoch: new.epoch, kind: new.kind, outcome: outcome_of(&new.kind, resp) });
    assert_eq!(r.step_state(wf, 0), StepState::Failed);
    assert!(gate_expiries(&r.run(Event::Tick)).is_empty());
}

fn collections(actions: &[Action]) -> usize {
    actions.iter().filter(|a| matches!(a, Action::Propose(Proposal { cmd: Command::CollectGarbage, .. }))).count()
}

impl Rig {
    /// A job of `shards` shards kept `retention_ms` once finished, cancelled at once.
    fn finished_job(&mut self, shards: usize, retention_ms: u64) -> u64 {
        let mut spec = JobSpec::with_shards("ns", shards);
        spec.retention_ms = Some(retention_ms);
        let job = match self.apply(Command::SubmitJob(spec)) {
            Response::Done(StoreOutcome::Submitted { job, .. }) => job,
            r => panic!("{r:?}"),
        };
        self.apply(Command::CancelJob { job, reason: String::new() });
        job
    }
}

#[test]
fn garbage_is_collected_once_its_retention_has_passed_in_log_time() {
    let mut r = Rig::new();
    r.lead(1);
    let job = r.finished_job(3, 5_000);
    r.advance(4_999);
    assert_eq!(collections(&r.run(Event::Tick)), 0, "not before its time");
    assert_eq!(collections(&r.run(Event::Applied { index: r.index })), 0);
    r.advance(1);
    // Proposed, not committed yet: later checks do not propose it again.
    let a = r.step(Event::Tick);
    assert_eq!(collections(&a), 1);
    assert_eq!(collections(&r.step(Event::Tick)), 0, "one in flight");
    assert_eq!(collections(&r.step(Event::Applied { index: r.index })), 0);
    let Some(Action::Propose(p)) = a.into_iter().find(|a| matches!(a, Action::Propose(_))) else { unreachable!() };
    let resp = r.apply(p.cmd.clone());
    let outcome = outcome_of(&p.kind, resp);
    assert_eq!(outcome, Outcome::Collected(3 * 2 + 4), "3 shards, then 3 index keys and the record");
    assert_eq!(collections(&r.run(Event::Proposed { epoch: p.epoch, kind: p.kind, outcome })), 0, "nothing left");
    assert!(r.state.job(&r.kv, job).unwrap().is_none());
    r.advance(60_000);
    assert_eq!(collections(&r.run(Event::Tick)), 0);
}

#[test]
fn a_target_bigger_than_one_entry_is_collected_entry_after_entry() {
    let mut r = Rig::new();
    r.lead(1);
    let job = r.finished_job(2_000, 0);
    r.advance(1);
    let a = r.run(Event::Tick);
    // 4,004 keys at 512 per entry: 8 entries, each proposed after the last committed.
    assert_eq!(collections(&a), 8);
    assert!(r.state.job(&r.kv, job).unwrap().is_none());
    assert_eq!((r.state.meta.gc.clone(), r.state.gc_due_ms()), (None, None));
}

#[test]
fn a_collection_not_committed_is_proposed_again_and_a_new_leader_takes_over() {
    let mut r = Rig::new();
    r.lead(1);
    r.finished_job(1, 0);
    r.advance(1);
    let a = r.step(Event::Tick);
    let Some(Action::Propose(p)) = a.into_iter().find(|a| matches!(a, Action::Propose(_))) else { unreachable!() };
    assert_eq!(p.cmd, Command::CollectGarbage);
    assert!(r.step(Event::Proposed { epoch: p.epoch, kind: p.kind, outcome: Outcome::NotCommitted }).is_empty());
    assert_eq!(collections(&r.step(Event::Tick)), 1, "still due");
    r.run(Event::Leadership { leading: false, term: 1 });
    assert_eq!(collections(&r.step(Event::Tick)), 0, "a follower proposes nothing");
    assert_eq!(collections(&r.step(Event::Applied { index: r.index })), 0);
    assert_eq!(collections(&r.run(Event::Leadership { leading: true, term: 2 })), 1, "derived from the state");
    assert_eq!(r.state.gc_due_ms(), None);
}

fn fires(actions: &[Action]) -> Vec<(u64, u64)> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::Propose(Proposal { cmd: Command::Batch(cmds), kind: ProposalKind::Fire, .. }) => Some(cmds),
            _ => None,
        })
        .flatten()
        .map(|c| match c {
            Command::Fire { schedule, fire_ms } => (*schedule, *fire_ms),
            other => panic!("a fire batch holds {other:?}"),
        })
        .collect()
}

impl Rig {
    /// A fixed-rate schedule of `period_ms`, first firing `start_in_ms` from now (log time).
    fn schedule(&mut self, name: &str, period_ms: u64, start_in_ms: u64, misfire: Misfire) -> u64 {
        let start = self.now().log_ms + start_in_ms;
        let spec = ScheduleSpec {
            namespace: "ns".into(),
            name: name.into(),
            cadence: Cadence::FixedRate { period_ms },
            start_ms: Some(start),
            end_ms: None,
            jitter_ms: 0,
            misfire,
            misfire_grace_ms: 1_000,
            overlap: Overlap::Allow,
            template: Template::Job(JobSpec::with_shards("ns", 1)),
        };
        match self.apply(Command::CreateSchedule(Box::new(spec))) {
            Response::Done(StoreOutcome::ScheduleCreated { schedule, .. }) => schedule,
            r => panic!("{r:?}"),
        }
    }

    /// Fire times of the runs schedule `id` started, oldest first.
    fn run_times(&self, id: u64) -> Vec<u64> {
        let rec = &self.state.idx.schedules[&id];
        rec.recent.iter().filter(|e| e.target.is_some()).map(|e| e.fire_ms).collect()
    }
}

#[test]
fn a_fire_is_proposed_once_it_is_due_in_log_time_with_one_batch_in_flight() {
    let mut r = Rig::new();
    r.lead(1);
    let id = r.schedule("s", 10_000, 5_000, Misfire::Skip);
    let first = r.state.idx.schedules[&id].next_fire_ms.unwrap();
    let wake = |r: &Rig| r.leader.next_fire_due_ms(&StateView { core: &r.state, kv: &r.kv });
    assert_eq!(wake(&r), Some(first), "the shell is told when to wake");
    r.advance(4_999);
    assert!(fires(&r.run(Event::Tick)).is_empty(), "not before its time");
    assert!(fires(&r.run(Event::Applied { index: r.index })).is_empty());
    r.advance(1);
    let a = r.step(Event::Tick);
    assert_eq!(fires(&a), vec![(id, first)]);
    assert!(fires(&r.step(Event::Tick)).is_empty(), "one batch in flight");
    assert_eq!(wake(&r), None, "nothing to wake for while the batch is in flight");
    assert!(fires(&r.step(Event::Applied { index: r.index })).is_empty());
    let Some(Action::Propose(p)) = a.into_iter().find(|a| matches!(a, Action::Propose(_))) else { unreachable!() };
    let resp = r.apply(p.cmd.clone());
    let outcome = outcome_of(&p.kind, resp);
    assert_eq!(outcome, Outcome::Fired);
    assert!(fires(&r.run(Event::Proposed { epoch: p.epoch, kind: p.kind, outcome })).is_empty(), "next not due");
    assert_eq!(r.run_times(id), vec![first]);
    assert_eq!(wake(&r), Some(first + 10_000));
    r.advance(10_000);
    assert_eq!(fires(&r.run(Event::Tick)), vec![(id, first + 10_000)]);
    assert_eq!(r.run_times(id), vec![first, first + 10_000]);
}

#[test]
fn a_fire_proposed_by_two_leaders_starts_one_run() {
    let mut r = Rig::new();
    r.lead(1);
    let id = r.schedule("s", 10_000, 1_000, Misfire::Skip);
    let first = r.state.idx.schedules[&id].next_fire_ms.unwrap();
    r.advance(1_000);
    // The old leader proposes and loses leadership before hearing the outcome.
    let a = r.step(Event::Tick);
    let Some(Action::Propose(old)) = a.into_iter().find(|a| matches!(a, Action::Propose(_))) else { unreachable!() };
    r.run(Event::Leadership { leading: false, term: 1 });
    assert!(fires(&r.step(Event::Tick)).is_empty(), "a follower proposes nothing");
    // The new leader derives the same due fire from the applied state.
    let a = r.step(Event::Leadership { leading: true, term: 2 });
    assert_eq!(fires(&a), vec![(id, first)]);
    let Some(Action::Propose(new)) =
        a.into_iter().find(|a| matches!(a, Action::Propose(Proposal { kind: ProposalKind::Fire, .. })))
    else {
        unreachable!()
    };
    // Both proposals commit, the old one first: the second is refused.
    let first_resp = r.apply(old.cmd.clone());
    let second_resp = r.apply(new.cmd.clone());
    assert!(matches!(&first_resp, Response::Batch(v) if matches!(v[0], Response::Done(_))), "{first_resp:?}");
    assert!(
        matches!(&second_resp, Response::Batch(v) if matches!(v[0], Response::Rejected(CommandError::FireNotDue { .. }))),
        "{second_resp:?}"
    );
    r.run(Event::Proposed { epoch: new.epoch, kind: new.kind, outcome: outcome_of(&new.kind, second_resp) });
    assert_eq!(r.run_times(id), vec![first]);
    assert_eq!(r.state.meta.next_job, 2, "one job");
}

#[test]
fn a_catch_up_is_proposed_batch_after_batch_until_nothing_is_due() {
    let mut r = Rig::new();
    r.lead(1);
    let id = r.schedule("s", 1_000, 1_000, Misfire::FireAll { max: 100 });
    r.apply(Command::PauseSchedule { schedule: id, paused: true });
    r.advance(40_500);
    assert!(fires(&r.run(Event::Tick)).is_empty(), "paused");
    r.apply(Command::PauseSchedule { schedule: id, paused: false });
    // 40 fire times passed; each commit leaves the next one due at once.
    let a = r.run(Event::Tick);
    assert_eq!(fires(&a).len(), 40);
    let first = r.run_times(id)[0];
    assert_eq!(r.state.idx.schedules[&id].runs_started, 40);
    assert_eq!(r.state.idx.schedules[&id].next_fire_ms, Some(first + 40_000));
}
