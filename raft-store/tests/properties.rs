//! Property tests of the task table over random command sequences.
//!
//! Checked after every step:
//! - at most one live attempt per task, and indexes agree with records;
//! - tokens strictly increase per task;
//! - attempts count grants minus graceful releases, and never pass max_attempts;
//! - interned worker names are exactly the sticky names of pending tasks;
//! - terminal states are final (until RetryJob runs them again);
//! - a rejected command (stale tokens included) changes nothing;
//! - a job the collector deleted has no task left;
//! - re-applying the same entries to a fresh core, split into apply() calls
//!   differently, gives byte-identical state and equal indexes.

use std::collections::{BTreeMap, BTreeSet};

use baton_raft_store::keys;
use baton_raft_store::*;
use openraft::{CommittedLeaderId, EntryPayload};
use proptest::prelude::*;
use serde_bytes::ByteBuf;

/// An abstract operation; turned into a concrete command against current state
/// so that "current token" and "stale token" mean what they say. `sel` picks a
/// target among what exists (a pending shard, an assigned attempt, a live
/// session); `valid: false` aims at something random, which usually does not exist.
#[derive(Debug, Clone)]
enum Op {
    Register {
        worker: u8,
        capacity: u32,
    },
    Expire {
        sel: u16,
        valid: bool,
        epoch_off: u8,
    },
    Deregister {
        sel: u16,
        valid: bool,
    },
    Submit {
        shards: u8,
        max_attempts: u32,
        key: Option<u8>,
        not_before: u8,
        constraint: bool,
        retention: Option<u16>,
    },
    Assign {
        sel: u16,
        sess: u16,
        valid: bool,
    },
    Complete {
        sel: u16,
        valid: bool,
        token: TokenPick,
    },
    Fail {
        sel: u16,
        valid: bool,
        token: TokenPick,
        retryable: bool,
    },
    Progress {
        sel: u16,
        valid: bool,
        token: TokenPick,
    },
    Timeout {
        sel: u16,
        valid: bool,
        token: TokenPick,
    },
    Cancel {
        sel: u16,
        valid: bool,
    },
    /// Job operations aim at any job id up to the next one (live, finished,
    /// deleted, collected or never made).
    DeleteJob {
        sel: u16,
    },
    RetryJob {
        sel: u16,
    },
    CancelTask {
        sel: u16,
        valid: bool,
    },
    PauseJob {
        sel: u16,
        paused: bool,
    },
    PauseNamespace {
        paused: bool,
    },
    /// The namespace's idempotency window in ms (`None`: the default);
    /// below the minimum is refused.
    SetIdemWindow {
        ms: Option<u16>,
    },
    /// The namespace's live-task and payload quotas (`Some(0)`: unlimited).
    SetQuota {
        live: Option<u8>,
        bytes: Option<u8>,
    },
    SetPriority {
        sel: u16,
        priority: i8,
    },
    AppendLogs {
        sel: u16,
        valid: bool,
        token: TokenPick,
        lines: u8,
    },
    Collect,
    Batch(Vec<Op>),
    Tick {
        ms: u16,
    },
}

#[derive(Debug, Clone, Copy)]
enum TokenPick {
    Current,
    Stale,
    Random(u64),
}

/// `n` short log lines logged at `at_ms`.
fn chunk(n: u16, at_ms: u64) -> LogChunk {
    let mut c = LogChunk::default();
    for i in 0..n {
        c.push(at_ms, LogLevel::Debug, &format!("l{i}")).unwrap();
    }
    c
}

fn leaf_op() -> impl Strategy<Value = Op> {
    let sel = any::<u16>();
    let valid = prop::bool::weighted(0.85);
    let token = prop_oneof![
        5 => Just(TokenPick::Current),
        2 => Just(TokenPick::Stale),
        1 => (0u64..80).prop_map(TokenPick::Random),
    ];
    prop_oneof![
        2 => (0u8..3, 1u32..4).prop_map(|(worker, capacity)| Op::Register { worker, capacity }),
        1 => (sel.clone(), valid.clone(), prop::bool::weighted(0.2).prop_map(u8::from))
            .prop_map(|(sel, valid, epoch_off)| Op::Expire { sel, valid, epoch_off }),
        1 => (sel.clone(), valid.clone()).prop_map(|(sel, valid)| Op::Deregister { sel, valid }),
        2 => (1u8..4, 1u32..4, proptest::option::of(0u8..3), prop::bool::weighted(0.2).prop_map(u8::from), prop::bool::weighted(0.2), proptest::option::weighted(0.6, 0u16..6_000))
            .prop_map(|(shards, max_attempts, key, not_before, constraint, retention)| Op::Submit { shards, max_attempts, key, not_before, constraint, retention }),
        6 => (sel.clone(), any::<u16>(), valid.clone()).prop_map(|(sel, sess, valid)| Op::Assign { sel, sess, valid }),
        4 => (sel.clone(), valid.clone(), token.clone()).prop_map(|(sel, valid, token)| Op::Complete { sel, valid, token }),
        2 => (sel.clone(), valid.clone(), token.clone(), any::<bool>())
            .prop_map(|(sel, valid, token, retryable)| Op::Fail { sel, valid, token, retryable }),
        1 => (sel.clone(), valid.clone(), token.clone()).prop_map(|(sel, valid, token)| Op::Progress { sel, valid, token }),
        3 => (sel.clone(), valid.clone(), token.clone()).prop_map(|(sel, valid, token)| Op::Timeout { sel, valid, token }),
        1 => (sel.clone(), valid.clone()).prop_map(|(sel, valid)| Op::Cancel { sel, valid }),
        1 => sel.clone().prop_map(|sel| Op::DeleteJob { sel }),
        2 => sel.clone().prop_map(|sel| Op::RetryJob { sel }),
        1 => (sel.clone(), valid.clone()).prop_map(|(sel, valid)| Op::CancelTask { sel, valid }),
        1 => (sel.clone(), prop::bool::weighted(0.4)).prop_map(|(sel, paused)| Op::PauseJob { sel, paused }),
        1 => prop::bool::weighted(0.2).prop_map(|paused| Op::PauseNamespace { paused }),
        2 => proptest::option::weighted(0.8, 0u16..10_000).prop_map(|ms| Op::SetIdemWindow { ms }),
        1 => (proptest::option::of(0u8..20), proptest::option::of(any::<u8>()))
            .prop_map(|(live, bytes)| Op::SetQuota { live, bytes }),
        1 => (sel.clone(), any::<i8>()).prop_map(|(sel, priority)| Op::SetPriority { sel, priority }),
        2 => (sel, valid, token, 1u8..4).prop_map(|(sel, valid, token, lines)| Op::AppendLogs { sel, valid, token, lines }),
        1 => Just(Op::Collect),
        3 => (0u16..4000).prop_map(|ms| Op::Tick { ms }),
    ]
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        9 => leaf_op(),
        1 => proptest::collection::vec(leaf_op(), 1..5).prop_map(Op::Batch),
    ]
}

fn nth<T: Copy>(items: impl ExactSizeIterator<Item = T>, sel: u16) -> Option<T> {
    let n = items.len();
    let mut items = items;
    if n == 0 { None } else { items.nth(sel as usize % n) }
}

/// The pure core over an in-memory store, plus what the test observed.
struct Harness {
    core: Core,
    kv: MemKv,
    clock: u64,
    index: u64,
    entries: Vec<Entry>,
    /// Every token granted per task, in grant order.
    grants: BTreeMap<TaskKey, Vec<Token>>,
    /// Attempts given back per task by graceful releases (deregistrations).
    given_back: BTreeMap<TaskKey, u32>,
    terminal: BTreeMap<TaskKey, TaskRecord>,
    /// Attempts a task had used (grants minus give-backs) when RetryJob
    /// gave it a fresh budget.
    retried_at: BTreeMap<TaskKey, u32>,
    /// Shards a command of the current entry ended (dead or cancelled) or
    /// made succeed, recorded in command order: a RetryJob later in the
    /// entry requeues the first kind, and the final state cannot tell.
    ended_in_entry: BTreeSet<TaskKey>,
    succeeded_in_entry: BTreeSet<TaskKey>,
    /// The idempotency table as the test expects it: key -> (job,
    /// expires_ms), each fixed by the window when the key was written.
    idem: BTreeMap<String, (JobId, u64)>,
    /// The namespace's window as last set.
    idem_window_ms: u64,
    stats: Stats,
}

/// What the generated sequences actually exercised, so a generator that only
/// produces rejected commands cannot pass silently.
#[derive(Debug, Default, Clone, Copy)]
struct Stats {
    grants: u64,
    completed: u64,
    fenced: u64,
    retried: u64,
    dead: u64,
    released: u64,
    revoked: u64,
    timed_out: u64,
    duplicates: u64,
    jobs_retried: u64,
    jobs_deleted: u64,
    tasks_cancelled: u64,
    paused_refusals: u64,
    logs_appended: u64,
    keys_collected: u64,
    /// Keyed submits that made a new job because the key's record expired.
    keys_forgotten: u64,
}

impl Stats {
    fn add(&mut self, o: &Stats) {
        self.grants += o.grants;
        self.completed += o.completed;
        self.fenced += o.fenced;
        self.retried += o.retried;
        self.dead += o.dead;
        self.released += o.released;
        self.revoked += o.revoked;
        self.timed_out += o.timed_out;
        self.duplicates += o.duplicates;
        self.jobs_retried += o.jobs_retried;
        self.jobs_deleted += o.jobs_deleted;
        self.tasks_cancelled += o.tasks_cancelled;
        self.paused_refusals += o.paused_refusals;
        self.logs_appended += o.logs_appended;
        self.keys_collected += o.keys_collected;
        self.keys_forgotten += o.keys_forgotten;
    }
}

const WORKERS: [&str; 3] = ["w0", "w1", "w2"];

impl Harness {
    fn new() -> Self {
        let kv = MemKv::default();
        Harness {
            core: Core::open(&kv).unwrap(),
            kv,
            clock: 1_000,
            index: 0,
            entries: vec![],
            grants: BTreeMap::new(),
            given_back: BTreeMap::new(),
            terminal: BTreeMap::new(),
            retried_at: BTreeMap::new(),
            ended_in_entry: BTreeSet::new(),
            succeeded_in_entry: BTreeSet::new(),
            idem: BTreeMap::new(),
            idem_window_ms: limits::IDEMPOTENCY_WINDOW_MS_DEFAULT,
            stats: Stats::default(),
        }
    }

    fn task(&self, job: u64, shard: u32) -> Option<TaskRecord> {
        self.core.task(&self.kv, TaskKey::new(job, shard)).unwrap()
    }

    fn pick(&self, job: u64, shard: u32, pick: TokenPick) -> Token {
        let last = self.task(job, shard).map_or(0, |t| t.last_token);
        match pick {
            TokenPick::Current => last,
            TokenPick::Stale => last.saturating_sub(1),
            TokenPick::Random(t) => t,
        }
    }

    fn live_session(&self, sel: u16, valid: bool) -> SessionId {
        match nth(self.core.idx.sessions.keys().copied(), sel) {
            Some(s) if valid => s,
            _ => 1 + sel as u64 % (self.core.meta.next_session + 1),
        }
    }

    /// An assigned attempt if `valid`, else any shard of any job id (maybe none).
    fn held_task(&self, sel: u16, valid: bool) -> TaskKey {
        match nth(self.core.idx.deadlines.iter().map(|(_, k, _)| *k), sel) {
            Some(k) if valid => k,
            _ => TaskKey::new(1 + (sel % 7) as u64, (sel / 7 % 4) as u32),
        }
    }

    fn pending_task(&self, sel: u16, valid: bool) -> TaskKey {
        let all = self.core.idx.pending.iter().flat_map(|(j, m)| m.keys().map(|s| TaskKey::new(*j, *s)));
        let all: Vec<TaskKey> = all.collect();
        match nth(all.into_iter(), sel) {
            Some(k) if valid => k,
            _ => self.held_task(sel, valid),
        }
    }

    fn concretize(&self, op: &Op) -> Option<Command> {
        Some(match op {
            Op::Register { worker, capacity } => Command::RegisterWorker {
                name: WORKERS[*worker as usize].into(),
                labels: if *worker == 0 { [("zone".to_string(), "a".to_string())].into() } else { BTreeMap::new() },
                capacity: *capacity,
                namespaces: None,
            },
            Op::Expire { sel, valid, epoch_off } => {
                let session = self.live_session(*sel, *valid);
                let epoch = self.core.idx.sessions.get(&session).map_or(1, |s| s.epoch) + *epoch_off as u64;
                Command::ExpireWorker { session, epoch }
            }
            Op::Deregister { sel, valid } => {
                let session = self.live_session(*sel, *valid);
                let epoch = self.core.idx.sessions.get(&session).map_or(1, |s| s.epoch);
                Command::DeregisterWorker { session, epoch }
            }
            Op::Submit { shards, max_attempts, key, not_before, constraint, retention } => {
                let mut spec = JobSpec::with_shards("ns", *shards as usize);
                spec.max_attempts = *max_attempts;
                spec.attempt_timeout_ms = 600;
                spec.backoff = Backoff { base_ms: 500, max_ms: 1_000 };
                spec.idempotency_key = key.map(|k| format!("k{k}"));
                if *not_before > 0 {
                    spec.not_before_ms = Some(self.clock + *not_before as u64 * 1_000);
                }
                if *constraint {
                    spec.constraints.insert("zone".into(), "a".into());
                }
                spec.retention_ms = retention.map(u64::from);
                for (i, p) in spec.payloads.iter_mut().enumerate() {
                    *p = ByteBuf::from(vec![i as u8; i]);
                }
                Command::SubmitJob(spec)
            }
            Op::Assign { sel, sess, valid } => Command::AssignTasks {
                assignments: vec![Assign {
                    task: self.pending_task(*sel, *valid),
                    session: self.live_session(*sess, *valid),
                }],
            },
            Op::Complete { sel, valid, token } => {
                let task = self.held_task(*sel, *valid);
                Command::CompleteTask {
                    task,
                    token: self.pick(task.job, task.shard, *token),
                    result: ByteBuf::from(format!("r{task}").into_bytes()),
                    // A report carries 0, 1 or 2 last lines.
                    logs: chunk(*sel % 3, self.clock),
                }
            }
            Op::Fail { sel, valid, token, retryable } => {
                let task = self.held_task(*sel, *valid);
                Command::FailTask {
                    task,
                    token: self.pick(task.job, task.shard, *token),
                    error: "boom".into(),
                    retryable: *retryable,
                    logs: chunk(*sel % 3, self.clock),
                }
            }
            Op::Progress { sel, valid, token } => {
                let task = self.held_task(*sel, *valid);
                Command::ReportProgress {
                    task,
                    token: self.pick(task.job, task.shard, *token),
                    progress_bp: 5_000,
                    message: "half".into(),
                }
            }
            Op::Timeout { sel, valid, token } => {
                let task = self.held_task(*sel, *valid);
                Command::TimeoutAttempts { attempts: vec![(task, self.pick(task.job, task.shard, *token))] }
            }
            Op::Cancel { sel, valid } => {
                let job = match nth(self.core.idx.jobs.keys().copied(), *sel) {
                    Some(j) if *valid => j,
                    _ => 1 + (*sel % 9) as u64,
                };
                Command::CancelJob { job, reason: String::new() }
            }
            Op::DeleteJob { sel } => Command::DeleteJob { job: self.any_job(*sel) },
            Op::RetryJob { sel } => Command::RetryJob { job: self.any_job(*sel) },
            Op::CancelTask { sel, valid } => {
                Command::CancelTask { task: self.pending_task(*sel, *valid), reason: "op".into() }
            }
            Op::PauseJob { sel, paused } => Command::PauseJob { job: self.any_job(*sel), paused: *paused },
            Op::PauseNamespace { paused } => Command::PauseNamespace { namespace: "ns".into(), paused: *paused },
            Op::SetIdemWindow { ms } => {
                Command::SetNamespaceIdempotencyWindow { namespace: "ns".into(), window_ms: ms.map(u64::from) }
            }
            Op::SetQuota { live, bytes } => Command::SetNamespaceQuota {
                namespace: "ns".into(),
                change: QuotaChange {
                    live_tasks: live.map(u64::from),
                    payload_bytes: bytes.map(u64::from),
                    ..QuotaChange::default()
                },
            },
            Op::SetPriority { sel, priority } => {
                Command::SetPriority { job: self.any_job(*sel), priority: i32::from(*priority) }
            }
            Op::AppendLogs { sel, valid, token, lines } => {
                let task = self.held_task(*sel, *valid);
                let lines = chunk(u16::from(*lines), self.clock);
                Command::AppendLogs { task, token: self.pick(task.job, task.shard, *token), lines }
            }
            Op::Collect => Command::CollectGarbage,
            Op::Batch(ops) => Command::Batch(ops.iter().filter_map(|o| self.concretize(o)).collect()),
            Op::Tick { .. } => return None,
        })
    }

    /// Any job id up to the next one.
    fn any_job(&self, sel: u16) -> JobId {
        1 + sel as u64 % self.core.meta.next_job
    }

    /// Apply `cmd` as the next entry, written out at once.
    fn apply(&mut self, cmd: Command) -> Response {
        self.index += 1;
        self.clock += 7;
        let entry = Entry {
            log_id: LogId::new(CommittedLeaderId::new(1, 0), self.index),
            payload: EntryPayload::Normal(Proposal { proposed_at_ms: self.clock, cmd }),
        };
        let resp = self.core.apply_entry(&self.kv, &entry).expect("apply never fails on MemKv");
        let writes = self.core.take_writes().unwrap();
        self.kv.write(writes);
        self.entries.push(entry);
        resp
    }

    /// Like the leader, run the collector in entries of its own while it
    /// has work due, so the next entry's command is judged alone. Every
    /// entry also prunes expired idempotency keys: run those apart too.
    fn collect_due(&mut self) {
        while self.core.gc_due_ms().is_some_and(|at| at <= self.clock + 7) || self.idem_due(self.clock + 7) {
            let resp = self.apply(Command::CollectGarbage);
            self.record_grants(&resp);
        }
    }

    /// Whether an entry at `at_ms` would prune an idempotency key.
    fn idem_due(&self, at_ms: u64) -> bool {
        let first = self.kv.0.keys().find(|k| k[0] == keys::Table::IdemByExpiry as u8);
        first.and_then(|k| keys::parse_idem_by_expiry(k)).is_some_and(|(exp, _)| exp <= at_ms)
    }

    /// State excluding the meta record (which changes on every entry).
    fn table(&self) -> BTreeMap<Vec<u8>, Vec<u8>> {
        let mut t = self.kv.0.clone();
        t.remove(&keys::meta());
        t
    }

    fn step(&mut self, op: &Op) -> Result<(), TestCaseError> {
        if let Op::Tick { ms } = op {
            self.clock += *ms as u64;
            return Ok(());
        }
        self.collect_due();
        let Some(cmd) = self.concretize(op) else {
            return Ok(());
        };
        let stale_report = matches!(
            op,
            Op::Complete { token: TokenPick::Stale, .. }
                | Op::Fail { token: TokenPick::Stale, .. }
                | Op::Progress { token: TokenPick::Stale, .. }
                | Op::AppendLogs { token: TokenPick::Stale, .. }
        );
        let before = self.table();
        let before_stale_task = match &cmd {
            Command::CompleteTask { task, .. }
            | Command::FailTask { task, .. }
            | Command::ReportProgress { task, .. }
            | Command::AppendLogs { task, .. } => self.core.task(&self.kv, *task).unwrap(),
            _ => None,
        };
        let resp = self.apply(cmd.clone());

        // A rejected single command changes nothing.
        if let Response::Rejected(e) = &resp {
            prop_assert_eq!(&before, &self.table(), "rejected {:?} ({}) changed state", cmd, e);
        }
        // A stale token on a task that had a later grant is fenced and changes nothing.
        if stale_report
            && let Some(t) = before_stale_task
            && t.last_token > 0
        {
            let presented = match &cmd {
                Command::CompleteTask { token, .. }
                | Command::FailTask { token, .. }
                | Command::ReportProgress { token, .. }
                | Command::AppendLogs { token, .. } => *token,
                _ => unreachable!(),
            };
            if presented < t.last_token {
                prop_assert!(
                    matches!(&resp, Response::Rejected(CommandError::Fenced { .. })),
                    "stale token {} (latest {}) not fenced: {:?}",
                    presented,
                    t.last_token,
                    resp
                );
                prop_assert_eq!(&before, &self.table());
            }
        }
        self.record(&cmd, &resp);
        self.check_idempotency(&cmd, &resp)?;
        self.ended_in_entry.clear();
        self.succeeded_in_entry.clear();
        self.check_invariants()
    }

    /// Record what a command did, a Batch's commands in order: a RetryJob
    /// must see the grants made before it in its entry, not those after.
    fn record(&mut self, cmd: &Command, resp: &Response) {
        match (cmd, resp) {
            (Command::Batch(cmds), Response::Batch(rs)) => cmds.iter().zip(rs).for_each(|(c, r)| self.record(c, r)),
            _ => {
                self.record_grants(resp);
                self.record_given_back(cmd, resp);
                self.record_retries(cmd, resp);
                self.record_ends(resp);
            }
        }
    }

    /// A keyed submit is a duplicate (or a conflict) exactly while the key's
    /// record is within the expiry it was written with; the window set later
    /// changes only records written after it.
    fn check_idempotency(&mut self, cmd: &Command, resp: &Response) -> Result<(), TestCaseError> {
        let now = self.clock;
        match (cmd, resp) {
            (Command::Batch(cmds), Response::Batch(rs)) => {
                for (c, r) in cmds.iter().zip(rs) {
                    self.check_idempotency(c, r)?;
                }
            }
            (Command::SetNamespaceIdempotencyWindow { window_ms, .. }, Response::Done(_)) => {
                self.idem_window_ms = window_ms.unwrap_or(limits::IDEMPOTENCY_WINDOW_MS_DEFAULT);
            }
            (Command::SubmitJob(spec), _) => {
                let Some(key) = &spec.idempotency_key else { return Ok(()) };
                let live = self.idem.get(key).filter(|(_, exp)| *exp > now).map(|(job, _)| *job);
                match resp {
                    Response::Done(Outcome::Submitted { job, duplicate: true, .. }) => {
                        prop_assert_eq!(live, Some(*job), "{} at {}: a duplicate of a forgotten key", key, now);
                    }
                    Response::Done(Outcome::Submitted { job, duplicate: false, .. }) => {
                        prop_assert_eq!(live, None, "{} at {}: a live key made a new job", key, now);
                        if self.idem.contains_key(key) {
                            self.stats.keys_forgotten += 1;
                        }
                        self.idem.insert(key.clone(), (*job, now + self.idem_window_ms));
                    }
                    Response::Rejected(CommandError::IdempotencyConflict { job, .. }) => {
                        prop_assert_eq!(live, Some(*job), "{} at {}: a conflict with a forgotten key", key, now);
                    }
                    _ => {}
                }
            }
            _ => {}
        }
        Ok(())
    }

    /// Which shards this command ended or made succeed (see `ended_in_entry`).
    fn record_ends(&mut self, resp: &Response) {
        let Response::Done(o) = resp else { return };
        let mut ended = Vec::new();
        match o {
            Outcome::TaskCancelled { task, .. } => ended.push(*task),
            Outcome::Failed { task, retry_at_ms: None, duplicate: false, .. } => ended.push(*task),
            Outcome::Completed { task, duplicate: false, .. } => {
                self.succeeded_in_entry.insert(*task);
            }
            Outcome::TimedOut(rs) => ended.extend(rs.iter().flatten().flat_map(|r| r.dead.iter().copied())),
            Outcome::SessionEnded { released, .. } => ended.extend(released.dead.iter().copied()),
            // A worker registering again under its name ends its old session.
            Outcome::Registered { replaced: Some((_, released)), .. } => ended.extend(released.dead.iter().copied()),
            Outcome::Cancelled { job, .. } => {
                // Every shard not finished before: those already ended stay
                // ended, which changes nothing here.
                let shards = self.core.job(&self.kv, *job).unwrap().map_or(0, |j| j.shards);
                for shard in 0..shards {
                    let key = TaskKey::new(*job, shard);
                    let succeeded = self.succeeded_in_entry.contains(&key)
                        || self.terminal.get(&key).is_some_and(|p| matches!(p.state, TaskState::Succeeded { .. }));
                    if !succeeded {
                        ended.push(key);
                    }
                }
            }
            _ => {}
        }
        self.ended_in_entry.extend(ended);
    }

    fn record_given_back(&mut self, cmd: &Command, resp: &Response) {
        match (cmd, resp) {
            (Command::DeregisterWorker { .. }, Response::Done(Outcome::SessionEnded { released, .. })) => {
                for t in &released.requeued {
                    *self.given_back.entry(*t).or_default() += 1;
                }
            }
            (Command::Batch(cmds), Response::Batch(rs)) => {
                cmds.iter().zip(rs).for_each(|(c, r)| self.record_given_back(c, r));
            }
            _ => {}
        }
    }

    /// A retried job's dead and cancelled shards run again with a fresh budget.
    fn record_retries(&mut self, cmd: &Command, resp: &Response) {
        match (cmd, resp) {
            (Command::RetryJob { job }, Response::Done(Outcome::JobRetried { .. })) => {
                // Its shards that were dead or cancelled at this point of
                // the entry run again with no attempt used: known ended
                // before the entry, or ended by an earlier command of it.
                let shards = self.core.job(&self.kv, *job).unwrap().expect("a retried job").shards;
                for shard in 0..shards {
                    let key = TaskKey::new(*job, shard);
                    let ended_before = self
                        .terminal
                        .get(&key)
                        .is_some_and(|p| matches!(p.state, TaskState::Dead | TaskState::Cancelled));
                    let ended_now = self.ended_in_entry.remove(&key);
                    if ended_before || ended_now {
                        self.terminal.remove(&key);
                        let granted = self.grants.get(&key).map_or(0, |g| g.len() as u32);
                        let back = self.given_back.get(&key).copied().unwrap_or(0);
                        self.retried_at.insert(key, granted - back);
                    }
                }
            }
            (Command::Batch(cmds), Response::Batch(rs)) => {
                cmds.iter().zip(rs).for_each(|(c, r)| self.record_retries(c, r));
            }
            _ => {}
        }
    }

    fn record_grants(&mut self, resp: &Response) {
        let st = &mut self.stats;
        match resp {
            Response::Done(Outcome::Assigned(rs)) => {
                for g in rs.iter().flatten() {
                    st.grants += 1;
                    self.grants.entry(g.task).or_default().push(g.token);
                }
                st.paused_refusals +=
                    rs.iter().filter(|r| matches!(r, Err(CommandError::JobPaused { .. }))).count() as u64;
            }
            Response::Done(Outcome::Completed { duplicate, .. }) => {
                if *duplicate {
                    st.duplicates += 1
                } else {
                    st.completed += 1
                }
            }
            Response::Done(Outcome::Failed { retry_at_ms, duplicate, .. }) => {
                if *duplicate {
                    st.duplicates += 1
                } else if retry_at_ms.is_some() {
                    st.retried += 1
                } else {
                    st.dead += 1
                }
            }
            Response::Done(Outcome::SessionEnded { released, .. }) => {
                st.released += (released.requeued.len() + released.dead.len()) as u64
            }
            Response::Done(Outcome::Cancelled { revoked, .. }) => st.revoked += revoked.len() as u64,
            Response::Done(Outcome::TimedOut(rs)) => st.timed_out += rs.iter().flatten().count() as u64,
            Response::Rejected(CommandError::Fenced { .. }) => st.fenced += 1,
            Response::Done(Outcome::JobRetried { .. }) => st.jobs_retried += 1,
            Response::Done(Outcome::JobDeleted { .. }) => st.jobs_deleted += 1,
            Response::Done(Outcome::TaskCancelled { .. }) => st.tasks_cancelled += 1,
            Response::Done(Outcome::LogsAppended { accepted, .. }) => st.logs_appended += u64::from(*accepted),
            Response::Done(Outcome::Collected { keys_deleted }) => st.keys_collected += u64::from(*keys_deleted),
            Response::Batch(rs) => rs.iter().for_each(|r| self.record_grants(r)),
            _ => {}
        }
    }

    fn check_invariants(&mut self) -> Result<(), TestCaseError> {
        let idx = &self.core.idx;
        let mut holders: BTreeMap<TaskKey, SessionId> = BTreeMap::new();
        for (s, tasks) in &idx.by_session {
            let sess = idx.sessions.get(s);
            prop_assert!(sess.is_some(), "tasks held by dead session {}", s);
            prop_assert!(tasks.len() <= sess.unwrap().capacity as usize, "session {} over capacity", s);
            for t in tasks {
                prop_assert!(holders.insert(*t, *s).is_none(), "task {} held twice", t);
            }
        }
        let jobs: Vec<JobId> = (1..self.core.meta.next_job).collect();
        let mut sticky = BTreeSet::new();
        for job in jobs {
            let Some(rec) = self.core.job(&self.kv, job).unwrap() else {
                // Collected: nothing of it is left.
                prop_assert!(self.task(job, 0).is_none(), "job {} was collected but its tasks were not", job);
                prop_assert!(!idx.jobs.contains_key(&job) && !idx.pending.contains_key(&job));
                continue;
            };
            let mut counts = Counts::default();
            for shard in 0..rec.shards {
                let key = TaskKey::new(job, shard);
                let t = self.task(job, shard).expect("task record");
                match &t.state {
                    TaskState::Pending { .. } => {
                        counts.pending += 1;
                        prop_assert!(self.core.idx.pending.get(&job).is_some_and(|m| m.contains_key(&shard)));
                    }
                    TaskState::Assigned { session, token, .. } => {
                        counts.assigned += 1;
                        prop_assert_eq!(holders.get(&key), Some(session), "index disagrees for {}", key);
                        prop_assert_eq!(*token, t.last_token);
                    }
                    TaskState::Succeeded { token, .. } => {
                        counts.succeeded += 1;
                        prop_assert_eq!(*token, t.last_token, "committed result is not the latest attempt's");
                    }
                    TaskState::Dead => counts.dead += 1,
                    TaskState::Cancelled => counts.cancelled += 1,
                }
                if !matches!(t.state, TaskState::Assigned { .. }) {
                    prop_assert!(!holders.contains_key(&key));
                }
                // Terminal states are final.
                if let Some(prev) = self.terminal.get(&key) {
                    prop_assert_eq!(prev, &t, "terminal task {} changed", key);
                } else if t.state.is_terminal() {
                    self.terminal.insert(key, t.clone());
                }
                // Tokens strictly increase, and the record holds the latest.
                let g = self.grants.get(&key).cloned().unwrap_or_default();
                prop_assert!(g.windows(2).all(|w| w[0] < w[1]), "tokens of {} not increasing: {:?}", key, g);
                prop_assert_eq!(g.last().copied().unwrap_or(0), t.last_token);
                let back = self.given_back.get(&key).copied().unwrap_or(0);
                let before_retry = self.retried_at.get(&key).copied().unwrap_or(0);
                prop_assert_eq!(g.len() as u32 - back - before_retry, t.attempts, "attempts of {}", key);
                prop_assert!(t.attempts <= rec.max_attempts, "{} granted past max_attempts", key);
            }
            prop_assert_eq!(counts, rec.counts, "counts of job {}", job);
            if let Some(p) = idx.pending.get(&job) {
                for pt in p.values().filter_map(|p| p.sticky) {
                    sticky.insert(idx.names.name(pt).to_string());
                }
            }
            prop_assert_eq!(rec.finished_ms.is_none(), counts.live() > 0);
        }
        // Each namespace's usage is what its live jobs hold.
        let mut usage: BTreeMap<String, NamespaceUsage> = BTreeMap::new();
        for j in idx.jobs.values() {
            let u = usage.entry(j.namespace.clone()).or_default();
            u.live_tasks += u64::from(j.counts.live());
            u.payload_bytes += j.payload_bytes;
        }
        usage.retain(|_, u| !u.is_zero());
        prop_assert_eq!(&usage, &idx.ns_usage, "namespace usage");
        // Names live exactly as long as a pending task needs them.
        prop_assert_eq!(idx.names.len(), sticky.len(), "interned names {:?}", sticky);
        Ok(())
    }
}

fn run_case(ops: &[Op], splits: &BTreeSet<usize>) -> Result<Stats, TestCaseError> {
    let mut h = Harness::new();
    for op in ops {
        h.step(op)?;
    }
    // Replay into a fresh core, flushing at different points.
    let mut kv = MemKv::default();
    let mut core = Core::open(&kv).unwrap();
    for (i, e) in h.entries.iter().enumerate() {
        core.apply_entry(&kv, e).unwrap();
        if splits.contains(&i) {
            let w = core.take_writes().unwrap();
            kv.write(w);
        }
    }
    let w = core.take_writes().unwrap();
    kv.write(w);
    prop_assert!(kv == h.kv, "replay diverged");
    prop_assert_eq!(state_hash(&kv).unwrap(), state_hash(&h.kv).unwrap());
    prop_assert_eq!(core.idx.canonical(), h.core.idx.canonical());
    // Indexes rebuilt from disk equal the ones maintained by apply.
    let reopened = Core::open(&kv).unwrap();
    prop_assert_eq!(reopened.idx.canonical(), h.core.idx.canonical());
    prop_assert_eq!(&reopened.meta, &h.core.meta);
    Ok(h.stats)
}

/// A case proptest found: a grant released by a Deregister later in the
/// same entry as a RetryJob of its job. The model took the released shard
/// (Pending, no attempt, after the entry) for a retried one, counted at the
/// retry, before the release was recorded, and its attempt count went
/// below zero.
#[test]
fn a_grant_released_after_a_retry_in_the_same_entry_is_not_taken_for_a_retried_one() {
    let submit =
        |shards| Op::Submit { shards, max_attempts: 1, key: None, not_before: 0, constraint: false, retention: None };
    let ops = [
        submit(1),
        Op::Cancel { sel: 0, valid: false },
        Op::Assign { sel: 0, sess: 0, valid: false },
        submit(2),
        submit(3),
        Op::Register { worker: 0, capacity: 1 },
        Op::CancelTask { sel: 24122, valid: true },
        Op::Assign { sel: 44578, sess: 0, valid: true },
        Op::Batch(vec![Op::RetryJob { sel: 40366 }, Op::Deregister { sel: 0, valid: false }]),
    ];
    run_case(&ops, &BTreeSet::new()).unwrap();
}

/// A case proptest found: one entry cancels a running shard, retries its
/// job and grants the shard again. The model judged "retried" from the
/// state after the whole entry (running, one attempt) and missed the retry.
#[test]
fn a_shard_cancelled_retried_and_granted_in_one_entry_counts_one_attempt() {
    let ops = [
        Op::Submit { shards: 1, max_attempts: 1, key: None, not_before: 0, constraint: false, retention: None },
        Op::Register { worker: 0, capacity: 1 },
        Op::Assign { sel: 0, sess: 0, valid: false },
        Op::Batch(vec![
            Op::CancelTask { sel: 0, valid: false },
            Op::RetryJob { sel: 14460 },
            Op::Assign { sel: 0, sess: 0, valid: false },
        ]),
    ];
    run_case(&ops, &BTreeSet::new()).unwrap();
}

/// A case proptest found: the report that finishes a job kept for 0 ms
/// carries log lines. The job is past its retention as soon as it
/// finishes, and keeping the lines failed apply ("an applied report's job
/// is gone"), which stops every node.
#[test]
fn the_last_report_of_a_job_kept_for_no_time_may_carry_lines() {
    let ops = [
        Op::Register { worker: 0, capacity: 1 },
        Op::Submit { shards: 1, max_attempts: 1, key: None, not_before: 0, constraint: false, retention: Some(0) },
        Op::Assign { sel: 0, sess: 0, valid: true },
        // sel 2887 % 3 = 1: the report carries one line.
        Op::Batch(vec![Op::Complete { sel: 2887, valid: true, token: TokenPick::Current }]),
    ];
    run_case(&ops, &BTreeSet::new()).unwrap();
}

#[test]
fn random_sequences_keep_invariants_and_replay_identically() {
    let config = ProptestConfig { cases: 4096, ..ProptestConfig::default() };
    let mut runner = proptest::test_runner::TestRunner::new(config);
    let total = std::cell::RefCell::new(Stats::default());
    let strategy = (proptest::collection::vec(op(), 1..80), proptest::collection::btree_set(0usize..80, 0..8));
    runner
        .run(&strategy, |(ops, splits)| {
            let st = run_case(&ops, &splits)?;
            total.borrow_mut().add(&st);
            Ok(())
        })
        .unwrap();
    let t = total.into_inner();
    println!("exercised: {t:?}");
    // Every interesting transition must have happened many times across the run.
    for (what, n) in [
        ("grants", t.grants),
        ("completions", t.completed),
        ("fenced reports", t.fenced),
        ("retries", t.retried),
        ("dead tasks", t.dead),
        ("released by session end", t.released),
        ("revoked by cancel", t.revoked),
        ("timeouts", t.timed_out),
        ("duplicate reports", t.duplicates),
        ("jobs retried", t.jobs_retried),
        ("jobs deleted", t.jobs_deleted),
        ("tasks cancelled", t.tasks_cancelled),
        ("paused refusals", t.paused_refusals),
        ("log lines appended", t.logs_appended),
        ("keys collected", t.keys_collected),
        ("idempotency keys forgotten", t.keys_forgotten),
    ] {
        assert!(n >= 20, "generator exercised only {n} {what}: {t:?}");
    }
}

/// A deterministic walk through the main path, with exact expectations.
#[test]
fn submit_assign_complete_and_fence() {
    let mut h = Harness::new();
    let run = |h: &mut Harness, cmd: Command| -> Response {
        h.index += 1;
        h.clock += 10;
        let e = Entry {
            log_id: LogId::new(CommittedLeaderId::new(1, 0), h.index),
            payload: EntryPayload::Normal(Proposal { proposed_at_ms: h.clock, cmd }),
        };
        let r = h.core.apply_entry(&h.kv, &e).unwrap();
        let w = h.core.take_writes().unwrap();
        h.kv.write(w);
        r
    };
    let reg = |name: &str| Command::RegisterWorker {
        name: name.into(),
        labels: BTreeMap::new(),
        capacity: 4,
        namespaces: None,
    };
    assert!(matches!(run(&mut h, reg("a")), Response::Done(Outcome::Registered { session: 1, epoch: 1, .. })));
    assert!(matches!(run(&mut h, reg("b")), Response::Done(Outcome::Registered { session: 2, epoch: 1, .. })));
    let mut spec = JobSpec::with_shards("ns", 2);
    spec.idempotency_key = Some("once".into());
    assert!(matches!(
        run(&mut h, Command::SubmitJob(spec.clone())),
        Response::Done(Outcome::Submitted { job: 1, shards: 2, duplicate: false })
    ));
    // Same key, same spec: the same job.
    assert!(matches!(
        run(&mut h, Command::SubmitJob(spec.clone())),
        Response::Done(Outcome::Submitted { job: 1, duplicate: true, .. })
    ));
    // Same key, different spec: refused.
    spec.priority = 9;
    assert!(matches!(
        run(&mut h, Command::SubmitJob(spec)),
        Response::Rejected(CommandError::IdempotencyConflict { .. })
    ));

    let k0 = TaskKey::new(1, 0);
    let r = run(&mut h, Command::AssignTasks { assignments: vec![Assign { task: k0, session: 1 }] });
    let Response::Done(Outcome::Assigned(g)) = r else { panic!("{r:?}") };
    let t1 = g[0].as_ref().unwrap().token;
    assert_eq!(t1, h.index, "the token is the granting entry's log index");

    // Worker 1 dies; the task is reassigned to worker 2 with a larger token.
    let r = run(&mut h, Command::ExpireWorker { session: 1, epoch: 1 });
    assert!(
        matches!(r, Response::Done(Outcome::SessionEnded { session: 1, ref released }) if released.requeued == vec![k0])
    );
    let r = run(&mut h, Command::AssignTasks { assignments: vec![Assign { task: k0, session: 2 }] });
    let Response::Done(Outcome::Assigned(g)) = r else { panic!() };
    let t2 = g[0].as_ref().unwrap().token;
    assert!(t2 > t1);

    // The zombie's completion is fenced and changes nothing.
    let before = h.kv.clone();
    let r = run(
        &mut h,
        Command::CompleteTask {
            task: k0,
            token: t1,
            result: ByteBuf::from(b"zombie".to_vec()),
            logs: Default::default(),
        },
    );
    assert!(
        matches!(r, Response::Rejected(CommandError::Fenced { presented, latest, .. }) if presented == t1 && latest == t2)
    );
    let mut a = before.0.clone();
    let mut b = h.kv.0.clone();
    a.remove(&keys::meta());
    b.remove(&keys::meta());
    assert_eq!(a, b);

    // The owner's completion commits; a retry of it is a duplicate, not an error.
    let done =
        Command::CompleteTask { task: k0, token: t2, result: ByteBuf::from(b"ok".to_vec()), logs: Default::default() };
    assert!(matches!(
        run(&mut h, done.clone()),
        Response::Done(Outcome::Completed { duplicate: false, job_finished: false, .. })
    ));
    assert!(matches!(run(&mut h, done), Response::Done(Outcome::Completed { duplicate: true, .. })));

    // Cancelling revokes nothing held and finishes the job.
    let r = run(&mut h, Command::CancelJob { job: 1, reason: "stop".into() });
    assert!(matches!(r, Response::Done(Outcome::Cancelled { tasks_cancelled: 1, .. })), "{r:?}");
    let job = h.core.job(&h.kv, 1).unwrap().unwrap();
    assert_eq!(job.status(), JobStatus::Cancelled);
    assert!(h.core.idx.jobs.is_empty() && h.core.idx.pending.is_empty());
    assert!(matches!(
        run(&mut h, Command::CancelJob { job: 1, reason: String::new() }),
        Response::Rejected(CommandError::JobFinished { job: 1 })
    ));
    assert!(matches!(
        run(&mut h, Command::CancelJob { job: 99, reason: String::new() }),
        Response::Rejected(CommandError::JobNotFound(99))
    ));
}

/// Time is read only from entries: a leader whose clock is behind cannot move
/// logical time backwards, and deadlines are judged against entry time.
#[test]
fn time_comes_from_entries_and_never_goes_back() {
    let mut kv = MemKv::default();
    let mut core = Core::open(&kv).unwrap();
    let apply = |core: &mut Core, kv: &mut MemKv, index: u64, at: u64, cmd: Command| {
        let e = Entry {
            log_id: LogId::new(CommittedLeaderId::new(1, 0), index),
            payload: EntryPayload::Normal(Proposal { proposed_at_ms: at, cmd }),
        };
        let r = core.apply_entry(kv, &e).unwrap();
        let w = core.take_writes().unwrap();
        kv.write(w);
        r
    };
    apply(
        &mut core,
        &mut kv,
        1,
        10_000,
        Command::RegisterWorker { name: "w".into(), labels: BTreeMap::new(), capacity: 1, namespaces: None },
    );
    let mut spec = JobSpec::with_shards("ns", 1);
    spec.attempt_timeout_ms = 1_000;
    apply(&mut core, &mut kv, 2, 10_000, Command::SubmitJob(spec));
    let k = TaskKey::new(1, 0);
    apply(&mut core, &mut kv, 3, 10_000, Command::AssignTasks { assignments: vec![Assign { task: k, session: 1 }] });
    // A new leader with a slow clock: logical time stays at 10_000.
    let r = apply(&mut core, &mut kv, 4, 5_000, Command::TimeoutAttempts { attempts: vec![(k, 3)] });
    assert!(
        matches!(r, Response::Done(Outcome::TimedOut(ref v)) if matches!(v[0], Err(CommandError::NotExpired { .. }))),
        "{r:?}"
    );
    assert_eq!(core.meta.clock_ms, 10_000);
    let r = apply(&mut core, &mut kv, 5, 11_000, Command::TimeoutAttempts { attempts: vec![(k, 3)] });
    assert!(matches!(r, Response::Done(Outcome::TimedOut(ref v)) if v[0].is_ok()), "{r:?}");
}

/// Apply one command at the harness's next index, 10 ms after the last one.
fn run(h: &mut Harness, cmd: Command) -> Response {
    h.index += 1;
    h.clock += 10;
    let e = Entry {
        log_id: LogId::new(CommittedLeaderId::new(1, 0), h.index),
        payload: EntryPayload::Normal(Proposal { proposed_at_ms: h.clock, cmd }),
    };
    let r = h.core.apply_entry(&h.kv, &e).unwrap();
    let w = h.core.take_writes().unwrap();
    h.kv.write(w);
    r
}

fn register(h: &mut Harness, name: &str) -> (SessionId, u64) {
    match run(h, Command::RegisterWorker { name: name.into(), labels: BTreeMap::new(), capacity: 1, namespaces: None })
    {
        Response::Done(Outcome::Registered { session, epoch, .. }) => (session, epoch),
        r => panic!("{r:?}"),
    }
}

fn assign(h: &mut Harness, task: TaskKey, session: SessionId) -> Grant {
    match run(h, Command::AssignTasks { assignments: vec![Assign { task, session }] }) {
        Response::Done(Outcome::Assigned(mut g)) => g.remove(0).unwrap(),
        r => panic!("{r:?}"),
    }
}

/// Rolling restarts that deregister a worker give its attempt back: with
/// max_attempts 3, two graceful releases and a failure still leave retries,
/// and handlers see attempt 1 each time.
#[test]
fn graceful_releases_do_not_use_up_the_attempt_budget() {
    let mut h = Harness::new();
    let mut spec = JobSpec::with_shards("ns", 1);
    spec.max_attempts = 3;
    run(&mut h, Command::SubmitJob(spec));
    let k = TaskKey::new(1, 0);
    for _ in 0..2 {
        let (session, epoch) = register(&mut h, "w");
        assert_eq!(assign(&mut h, k, session).attempt, 1);
        let r = run(&mut h, Command::DeregisterWorker { session, epoch });
        assert!(
            matches!(r, Response::Done(Outcome::SessionEnded { ref released, .. }) if released.requeued == vec![k])
        );
    }
    let (session, _) = register(&mut h, "w");
    let g = assign(&mut h, k, session);
    assert_eq!(g.attempt, 1);
    let r = run(
        &mut h,
        Command::FailTask { task: k, token: g.token, error: "boom".into(), retryable: true, logs: Default::default() },
    );
    assert!(matches!(r, Response::Done(Outcome::Failed { retry_at_ms: Some(_), .. })), "{r:?}");
    assert_eq!(h.task(1, 0).unwrap().attempts, 1);
}

/// A not-before further ahead than MAX_NOT_BEFORE_AHEAD_MS of the entry's
/// time is refused; one exactly at the limit is accepted.
#[test]
fn not_before_too_far_ahead_is_refused() {
    let mut h = Harness::new();
    let at = |h: &Harness, t: u64| {
        let mut spec = JobSpec::with_shards("ns", 1);
        spec.not_before_ms = Some(t);
        spec.name = format!("{}", h.index);
        Command::SubmitJob(spec)
    };
    // Each entry is applied at `h.clock + 10`.
    for far in [false, true] {
        let t = if far { h.clock + 10 + limits::MAX_NOT_BEFORE_AHEAD_MS + 1 } else { u64::MAX };
        let cmd = at(&h, t);
        let r = run(&mut h, cmd);
        assert!(
            matches!(r, Response::Rejected(CommandError::Invalid { ref field, .. }) if field == "not_before_ms"),
            "{t}: {r:?}"
        );
    }
    let cmd = at(&h, h.clock + 10 + limits::MAX_NOT_BEFORE_AHEAD_MS);
    assert!(matches!(run(&mut h, cmd), Response::Done(Outcome::Submitted { .. })));
    let spec = JobSpec { not_before_ms: Some(u64::MAX), ..JobSpec::with_shards("ns", 1) };
    assert!(spec.check_not_before(0).is_err() && spec.validate().is_ok(), "the edge helper refuses it too");
}

/// Workers that restart under fresh names (the SDK default is `<host>-<pid>`)
/// leave nothing behind in the name interner once no pending task is sticky
/// to them.
#[test]
fn worker_names_are_forgotten_when_no_pending_task_needs_them() {
    let mut h = Harness::new();
    let mut spec = JobSpec::with_shards("ns", 1);
    spec.max_attempts = limits::MAX_ATTEMPTS_LIMIT;
    run(&mut h, Command::SubmitJob(spec));
    let k = TaskKey::new(1, 0);
    for i in 0..50 {
        let (session, epoch) = register(&mut h, &format!("host-{i}"));
        assign(&mut h, k, session);
        run(&mut h, Command::ExpireWorker { session, epoch });
        // Pending again, sticky to the last worker only.
        assert_eq!(h.core.idx.names.len(), 1, "after worker {i}");
    }
    let (session, _) = register(&mut h, "last");
    let g = assign(&mut h, k, session);
    assert!(h.core.idx.names.is_empty(), "an assigned task holds no name");
    run(&mut h, Command::CompleteTask { task: k, token: g.token, result: ByteBuf::new(), logs: Default::default() });
    assert!(h.core.idx.names.is_empty());
    assert!(Core::open(&h.kv).unwrap().idx.names.is_empty());
}

/// A payload is read only to push an attempt: once its shard succeeded it
/// is deleted, so finished work does not keep its inputs (up to 1 MiB a
/// job) on every replica. A dead or cancelled shard keeps its input for a
/// RetryJob, until the collector takes the job at the end of its retention.
#[test]
fn payloads_are_dropped_when_their_shard_succeeds_and_with_their_job() {
    let mut h = Harness::new();
    let mut spec = JobSpec::with_shards("ns", 3);
    spec.max_attempts = 1;
    spec.retention_ms = Some(1_000);
    spec.payloads = (0..3).map(|i| serde_bytes::ByteBuf::from(vec![i as u8; 100])).collect();
    run(&mut h, Command::SubmitJob(spec));
    let has_payload = |h: &Harness, shard: u32| h.kv.0.contains_key(&keys::payload(TaskKey::new(1, shard)));
    assert!((0..3).all(|s| has_payload(&h, s)));
    let (session, _) = register(&mut h, "w");
    let g = assign(&mut h, TaskKey::new(1, 0), session);
    run(
        &mut h,
        Command::CompleteTask {
            task: g.task,
            token: g.token,
            result: serde_bytes::ByteBuf::new(),
            logs: Default::default(),
        },
    );
    assert!(!has_payload(&h, 0), "succeeded");
    let (session, _) = register(&mut h, "v");
    let g = assign(&mut h, TaskKey::new(1, 1), session);
    assert!(has_payload(&h, 1), "running: the payload is still needed for a resync");
    run(
        &mut h,
        Command::FailTask {
            task: g.task,
            token: g.token,
            error: "x".into(),
            retryable: false,
            logs: Default::default(),
        },
    );
    assert!(has_payload(&h, 1), "dead: kept for a retry");
    run(&mut h, Command::CancelJob { job: 1, reason: String::new() });
    assert!(has_payload(&h, 2), "cancelled: kept for a retry");
    h.clock += 1_000;
    run(&mut h, Command::CollectGarbage);
    assert!((0..3).all(|s| !has_payload(&h, s)), "collected with the job");
}
