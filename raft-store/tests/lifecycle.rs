//! Job operations, task logs, retention and indexed listing through apply():
//! each operation's semantics and errors (a refused command changes
//! nothing), fencing of late logs and reports, the log bounds, and the
//! collector deleting every key of a job, workflow or session a bounded
//! number of keys per entry.

use std::collections::BTreeMap;

use baton_raft_store::codec;
use baton_raft_store::keys::{self, Table};
use baton_raft_store::limits::*;
use baton_raft_store::*;
use openraft::{CommittedLeaderId, EntryPayload};
use serde_bytes::ByteBuf;

const T0: u64 = 1_700_000_000_000;

/// The core over an in-memory store, written out after every entry.
struct Rig {
    kv: MemKv,
    core: Core,
    index: u64,
    now_ms: u64,
    /// Keys the last entry deleted from the store.
    deleted: usize,
    /// Reads of task log records the last entry made (found or not).
    log_reads: usize,
}

impl Rig {
    fn new() -> Rig {
        let kv = MemKv::default();
        let core = Core::open(&kv).unwrap();
        Rig { kv, core, index: 0, now_ms: T0, deleted: 0, log_reads: 0 }
    }

    /// Apply `cmd` 10 ms after the previous entry.
    fn apply(&mut self, cmd: Command) -> Response {
        self.apply_at(self.now_ms + 10, cmd)
    }

    fn apply_at(&mut self, at: u64, cmd: Command) -> Response {
        self.index += 1;
        self.now_ms = self.now_ms.max(at);
        let e = Entry {
            log_id: LogId::new(CommittedLeaderId::new(1, 1), self.index),
            payload: EntryPayload::Normal(Proposal { proposed_at_ms: at, cmd }),
        };
        let counted = CountingKv::new(&self.kv);
        let r = self.core.apply_entry(&counted, &e).unwrap();
        self.log_reads = counted.gets_of(Table::TaskLog);
        let w = self.core.take_writes().unwrap();
        self.deleted = w.iter().filter(|(k, v)| v.is_none() && self.kv.0.contains_key(k)).count();
        self.kv.write(w);
        r
    }

    fn ok(&mut self, cmd: Command) -> Outcome {
        match self.apply(cmd.clone()) {
            Response::Done(o) => o,
            r => panic!("{cmd:?} rejected: {r:?}"),
        }
    }

    /// Apply a command that must be refused, and check it changed nothing.
    fn refused(&mut self, cmd: Command) -> CommandError {
        let before = self.table();
        let idx = self.core.idx.canonical();
        let e = match self.apply(cmd.clone()) {
            Response::Rejected(e) => e,
            r => panic!("{cmd:?} was not refused: {r:?}"),
        };
        assert_eq!(before, self.table(), "refused {cmd:?} ({e}) changed a record");
        assert_eq!(idx, self.core.idx.canonical(), "refused {cmd:?} ({e}) changed the indexes");
        e
    }

    /// Every record but the meta, which every entry updates.
    fn table(&self) -> BTreeMap<Vec<u8>, Vec<u8>> {
        let mut t = self.kv.0.clone();
        t.remove(&keys::meta());
        t
    }

    fn register(&mut self, name: &str, capacity: u32) -> SessionId {
        match self.ok(Command::RegisterWorker {
            name: name.into(),
            labels: BTreeMap::new(),
            capacity,
            namespaces: None,
        }) {
            Outcome::Registered { session, .. } => session,
            o => panic!("{o:?}"),
        }
    }

    fn submit(&mut self, spec: JobSpec) -> JobId {
        match self.ok(Command::SubmitJob(spec)) {
            Outcome::Submitted { job, .. } => job,
            o => panic!("{o:?}"),
        }
    }

    fn grant(&mut self, task: TaskKey, session: SessionId) -> Grant {
        match self.ok(Command::AssignTasks { assignments: vec![Assign { task, session }] }) {
            Outcome::Assigned(mut g) => g.remove(0).unwrap_or_else(|e| panic!("grant of {task}: {e}")),
            o => panic!("{o:?}"),
        }
    }

    fn complete(&mut self, g: &Grant) {
        self.ok(Command::CompleteTask {
            task: g.task,
            token: g.token,
            result: ByteBuf::from(b"r".to_vec()),
            logs: Default::default(),
        });
    }

    fn fail(&mut self, g: &Grant, retryable: bool) {
        self.ok(Command::FailTask {
            task: g.task,
            token: g.token,
            error: "boom".into(),
            retryable,
            logs: Default::default(),
        });
    }

    fn job(&self, id: JobId) -> Option<JobRecord> {
        self.core.job(&self.kv, id).unwrap()
    }

    fn task(&self, key: TaskKey) -> TaskRecord {
        self.core.task(&self.kv, key).unwrap().unwrap()
    }

    /// Entries that only run the collector, until it has nothing due.
    fn collect_all(&mut self) -> Vec<u32> {
        let mut per_entry = Vec::new();
        while self.core.gc_due_ms().is_some_and(|at| at <= self.now_ms + 10) {
            match self.ok(Command::CollectGarbage) {
                Outcome::Collected { keys_deleted } => per_entry.push(keys_deleted),
                o => panic!("{o:?}"),
            }
            assert!(per_entry.len() < 10_000, "the collector does not finish");
        }
        per_entry
    }
}

fn spec(shards: usize) -> JobSpec {
    let mut s = JobSpec::with_shards("ns", shards);
    s.max_attempts = 1;
    s.payloads = (0..shards).map(|i| ByteBuf::from(format!("p{i}").into_bytes())).collect();
    s
}

fn line(message: &str) -> LogLine {
    LogLine { at_ms: 1, level: LogLevel::Info, message: message.to_string() }
}

fn logs(task: TaskKey, token: Token, lines: &[&str]) -> Command {
    Command::AppendLogs { task, token, lines: chunk(lines) }
}

/// As a worker sends them: compressed when that makes them smaller.
fn chunk(lines: &[&str]) -> LogChunk {
    let lines: Vec<LogLine> = lines.iter().map(|l| line(l)).collect();
    LogChunk::of_lines(&lines).unwrap().compressed()
}

/// The messages of a log record, oldest first.
fn messages(r: &LogRecord) -> Vec<String> {
    r.to_lines().into_iter().map(|l| l.message).collect()
}

/// Every stored key that belongs to `job`, described.
fn keys_of_job(kv: &MemKv, job: JobId) -> Vec<String> {
    kv.0.keys()
        .filter(|k| match Table::from_tag(k[0]) {
            Some(Table::Job) => k[1..] == job.to_be_bytes(),
            Some(Table::Task | Table::Payload) => keys::parse_task(k).is_some_and(|t| t.job == job),
            Some(Table::TaskLog) => keys::parse_task_log(k).is_some_and(|(t, _)| t.job == job),
            Some(Table::JobIndex) => keys::parse_job_index(k) == Some(job),
            _ => false,
        })
        .map(|k| keys::describe(k))
        .collect()
}

fn count_table(kv: &MemKv, t: Table) -> usize {
    kv.0.keys().filter(|k| k[0] == t as u8).count()
}

#[test]
fn delete_job_hides_it_and_the_collector_takes_every_key() {
    let mut r = Rig::new();
    let s = r.register("w", 4);
    let mut sp = spec(2);
    sp.idempotency_key = Some("once".into());
    let job = r.submit(sp.clone());
    let g = r.grant(TaskKey::new(job, 0), s);
    r.ok(logs(g.task, g.token, &["hello"]));

    assert_eq!(r.refused(Command::DeleteJob { job }), CommandError::JobNotFinished { job });
    assert_eq!(r.refused(Command::DeleteJob { job: 99 }), CommandError::JobNotFound(99));
    r.complete(&g);
    let g1 = r.grant(TaskKey::new(job, 1), s);
    r.fail(&g1, false);
    let rec = r.job(job).unwrap();
    assert_eq!(rec.status(), JobStatus::Failed);
    let expires = rec.expires_ms.expect("a finished job has a retention");
    assert_eq!(expires, rec.finished_ms.unwrap() + RETENTION_MS_DEFAULT);

    assert_eq!(r.ok(Command::DeleteJob { job }), Outcome::JobDeleted { job });
    let rec = r.job(job).unwrap();
    assert!(rec.deleted && rec.expires_ms == Some(r.now_ms), "{rec:?}");
    assert!(!r.core.idx.expiry.iter().any(|(at, t)| *t == GcTarget::Job(job) && *at == expires), "moved to now");
    // Hidden from every listing at once; its index keys went with the record.
    let (page, _) = list_jobs_in(&r.kv, &JobFilter::default(), None, 10, false).unwrap();
    assert!(page.is_empty(), "{page:?}");
    assert_eq!(count_table(&r.kv, Table::JobIndex), 0);
    // Gone for commands at once (the collector works in the same entries,
    // so these are checked for their answer only, then again once it is done).
    let late_ops = [
        Command::DeleteJob { job },
        logs(g.task, g.token, &["late"]),
        Command::CompleteTask { task: g.task, token: g.token, result: ByteBuf::new(), logs: Default::default() },
        Command::RetryJob { job },
    ];
    for cmd in &late_ops {
        assert_eq!(r.apply(cmd.clone()), Response::Rejected(CommandError::JobNotFound(job)), "{cmd:?}");
    }

    let per_entry = r.collect_all();
    assert!(per_entry.iter().all(|n| *n as usize <= GC_KEYS_PER_ENTRY), "{per_entry:?}");
    assert_eq!(keys_of_job(&r.kv, job), Vec::<String>::new());
    assert!(r.job(job).is_none());
    for cmd in late_ops {
        assert_eq!(r.refused(cmd), CommandError::JobNotFound(job));
    }
    // The idempotency record keeps its own window: the same submit is still
    // answered with the job it made.
    match r.ok(Command::SubmitJob(sp)) {
        Outcome::Submitted { job: j, duplicate: true, .. } => assert_eq!(j, job),
        o => panic!("{o:?}"),
    }
    assert_eq!(Core::open(&r.kv).unwrap().idx.canonical(), r.core.idx.canonical());
}

#[test]
fn retry_runs_dead_and_cancelled_shards_again_and_fences_the_old_attempts() {
    let mut r = Rig::new();
    let s = r.register("w", 4);
    let job = r.submit(spec(3));
    let (k0, k1, k2) = (TaskKey::new(job, 0), TaskKey::new(job, 1), TaskKey::new(job, 2));
    assert_eq!(r.refused(Command::RetryJob { job }), CommandError::NothingToRetry { job });
    let g0 = r.grant(k0, s);
    r.complete(&g0);
    let g1 = r.grant(k1, s);
    r.ok(logs(k1, g1.token, &["first attempt"]));
    r.fail(&g1, true); // max_attempts 1: dead
    match r.ok(Command::CancelTask { task: k2, reason: "not needed".into() }) {
        Outcome::TaskCancelled { revoked: None, job_finished: true, .. } => {}
        o => panic!("{o:?}"),
    }
    let rec = r.job(job).unwrap();
    assert_eq!((rec.status(), rec.counts.dead, rec.counts.cancelled), (JobStatus::Failed, 1, 1));
    let expires = rec.expires_ms.unwrap();
    assert!(r.core.idx.expiry.contains(&(expires, GcTarget::Job(job))));
    // Dead and cancelled shards keep their input for a retry; a succeeded one does not.
    assert!(!r.kv.0.contains_key(&keys::payload(k0)));
    assert!(r.kv.0.contains_key(&keys::payload(k1)) && r.kv.0.contains_key(&keys::payload(k2)));
    let live_before = r.core.idx.live_tasks;

    // A retry that would pass the cluster's live-task bound is refused and
    // changes nothing. (The counter stands in for 10 million live tasks.)
    r.core.idx.live_tasks = MAX_LIVE_TASKS - 1;
    assert_eq!(
        r.refused(Command::RetryJob { job }),
        CommandError::LimitReached { what: "live tasks".into(), limit: MAX_LIVE_TASKS }
    );
    r.core.idx.live_tasks = live_before;
    assert_eq!(r.ok(Command::RetryJob { job }), Outcome::JobRetried { job, requeued: 2 });
    let rec = r.job(job).unwrap();
    assert_eq!((rec.finished_ms, rec.expires_ms, rec.cancel_reason.as_deref()), (None, None, None));
    assert_eq!(rec.status(), JobStatus::Running);
    assert!(r.core.idx.jobs.contains_key(&job));
    assert!(!r.core.idx.expiry.iter().any(|(_, t)| *t == GcTarget::Job(job)));
    assert_eq!(r.core.idx.live_tasks, live_before + 2);
    assert_eq!(r.core.idx.pending[&job].keys().copied().collect::<Vec<_>>(), [1, 2]);
    let t1 = r.task(k1);
    assert_eq!((t1.attempts, t1.last_token, t1.last_error.as_deref()), (0, g1.token, Some("boom")));
    assert_eq!(t1.state, TaskState::Pending { ready_at_ms: r.now_ms });
    assert_eq!(r.task(k0).state, TaskState::Succeeded { token: g0.token, result: ByteBuf::from(b"r".to_vec()) });

    // The old attempt is over: its late report and its late logs are fenced.
    let late = Command::CompleteTask { task: k1, token: g1.token, result: ByteBuf::new(), logs: Default::default() };
    assert!(r.refused(late.clone()).is_fenced());
    assert!(r.refused(logs(k1, g1.token, &["late"])).is_fenced());

    let n1 = r.grant(k1, s);
    assert!(n1.token > g1.token && n1.attempt == 1, "{n1:?}");
    assert!(r.refused(late).is_fenced());
    // Attempt numbers repeat after a retry; logs are kept per token, so the
    // new attempt 1 does not overwrite the old attempt 1's lines.
    r.ok(logs(k1, n1.token, &["second attempt"]));
    let old = r.core.task_log(&r.kv, k1, g1.token).unwrap().unwrap();
    let new = r.core.task_log(&r.kv, k1, n1.token).unwrap().unwrap();
    assert_eq!((old.token, old.attempt, messages(&old)), (g1.token, 1, vec!["first attempt".to_string()]));
    assert_eq!((new.token, new.attempt, messages(&new)), (n1.token, 1, vec!["second attempt".to_string()]));
    r.complete(&n1);
    let n2 = r.grant(k2, s);
    r.complete(&n2);
    let rec = r.job(job).unwrap();
    assert_eq!(rec.status(), JobStatus::Succeeded);
    assert!(r.core.idx.expiry.contains(&(rec.expires_ms.unwrap(), GcTarget::Job(job))));
    assert_eq!(r.refused(Command::RetryJob { job }), CommandError::NothingToRetry { job });
    assert_eq!(r.refused(Command::RetryJob { job: 42 }), CommandError::JobNotFound(42));

    // A job cancelled as a whole comes back without its cancel.
    let job2 = r.submit(spec(2));
    r.ok(Command::CancelJob { job: job2, reason: "stop".into() });
    assert_eq!(r.job(job2).unwrap().status(), JobStatus::Cancelled);
    assert_eq!(r.ok(Command::RetryJob { job: job2 }), Outcome::JobRetried { job: job2, requeued: 2 });
    let rec = r.job(job2).unwrap();
    assert_eq!((rec.status(), rec.cancel_reason.clone()), (JobStatus::Queued, None), "no shard ever started");
    assert_eq!(Core::open(&r.kv).unwrap().idx.canonical(), r.core.idx.canonical());
}

#[test]
fn a_workflow_job_is_deleted_and_retried_with_its_workflow() {
    let mut r = Rig::new();
    let s = r.register("w", 4);
    let mut job = JobSpec::with_shards("", 1);
    job.max_attempts = 1;
    let wf = WorkflowSpec {
        namespace: "ns".into(),
        name: "wf".into(),
        labels: BTreeMap::new(),
        idempotency_key: None,
        steps: vec![StepSpec {
            name: "a".into(),
            depends_on: vec![],
            trigger: TriggerRule::AllSucceeded,
            kind: StepKind::Job { job, reduce: None, choice: false, dynamic: false },
        }],
        result_step: None,
    };
    match r.ok(Command::SubmitWorkflow(wf)) {
        Outcome::WorkflowSubmitted { workflow: 1, .. } => {}
        o => panic!("{o:?}"),
    }
    let job = 1;
    let g = r.grant(TaskKey::new(job, 0), s);
    r.fail(&g, false);
    assert!(r.job(job).unwrap().finished_ms.is_some());
    assert_eq!(r.job(job).unwrap().expires_ms, None, "a workflow's job follows its workflow");
    let in_wf = CommandError::JobInWorkflow { job, workflow: 1, step: "a".into() };
    assert_eq!(r.refused(Command::DeleteJob { job }), in_wf);
    assert_eq!(r.refused(Command::RetryJob { job }), in_wf);
}

#[test]
fn cancel_task_cancels_one_shard() {
    let mut r = Rig::new();
    let s = r.register("w", 4);
    let job = r.submit(spec(3));
    let (k0, k1, k2) = (TaskKey::new(job, 0), TaskKey::new(job, 1), TaskKey::new(job, 2));
    let g1 = r.grant(k1, s);
    assert_eq!(
        r.refused(Command::CancelTask { task: TaskKey::new(job, 3), reason: String::new() }),
        CommandError::TaskNotFound(TaskKey::new(job, 3))
    );
    assert_eq!(
        r.refused(Command::CancelTask { task: TaskKey::new(77, 0), reason: String::new() }),
        CommandError::JobNotFound(77)
    );
    match r.ok(Command::CancelTask { task: k1, reason: String::new() }) {
        Outcome::TaskCancelled { task, revoked: Some(rv), job_finished: false } => {
            assert_eq!((task, rv.session, rv.token), (k1, s, g1.token));
        }
        o => panic!("{o:?}"),
    }
    let t1 = r.task(k1);
    assert_eq!((t1.state.clone(), t1.last_error.as_deref()), (TaskState::Cancelled, Some("cancelled")));
    assert!(!r.core.idx.by_session.get(&s).is_some_and(|h| h.contains(&k1)), "the attempt is taken away");
    assert!(
        r.refused(Command::CompleteTask {
            task: k1,
            token: g1.token,
            result: ByteBuf::new(),
            logs: Default::default()
        })
        .is_fenced()
    );
    assert!(matches!(
        r.refused(Command::CancelTask { task: k1, reason: String::new() }),
        CommandError::NotPending { .. }
    ));
    let g0 = r.grant(k0, s);
    r.complete(&g0);
    match r.ok(Command::CancelTask { task: k2, reason: "enough".into() }) {
        Outcome::TaskCancelled { revoked: None, job_finished: true, .. } => {}
        o => panic!("{o:?}"),
    }
    assert_eq!(r.job(job).unwrap().status(), JobStatus::Failed, "not every shard succeeded");
    assert_eq!(r.refused(Command::CancelTask { task: k0, reason: String::new() }), CommandError::JobFinished { job });
}

#[test]
fn a_paused_job_or_namespace_is_never_assigned_and_running_attempts_go_on() {
    let mut r = Rig::new();
    let s = r.register("w", 4);
    let job = r.submit(spec(3));
    let other = r.submit({
        let mut sp = spec(1);
        sp.namespace = "other".into();
        sp
    });
    let g0 = r.grant(TaskKey::new(job, 0), s);
    assert_eq!(r.ok(Command::PauseJob { job, paused: true }), Outcome::JobPaused { job, paused: true });
    assert!(r.job(job).unwrap().paused);
    let assign = |t| Command::AssignTasks { assignments: vec![Assign { task: t, session: s }] };
    match r.ok(assign(TaskKey::new(job, 1))) {
        Outcome::Assigned(v) => assert_eq!(v, vec![Err(CommandError::JobPaused { job, namespace: None })]),
        o => panic!("{o:?}"),
    }
    // The running attempt continues and reports.
    r.ok(logs(g0.task, g0.token, &["still running"]));
    r.complete(&g0);
    assert_eq!(r.ok(Command::PauseJob { job, paused: false }), Outcome::JobPaused { job, paused: false });
    r.grant(TaskKey::new(job, 1), s);

    let pause_ns = |paused| Command::PauseNamespace { namespace: "ns".into(), paused };
    assert_eq!(r.ok(pause_ns(true)), Outcome::NamespaceUpdated { namespace: "ns".into() });
    assert!(r.core.idx.namespaces["ns"].paused);
    assert_eq!(count_table(&r.kv, Table::Namespace), 1);
    match r.ok(assign(TaskKey::new(job, 2))) {
        Outcome::Assigned(v) => {
            assert_eq!(v, vec![Err(CommandError::JobPaused { job, namespace: Some("ns".into()) })])
        }
        o => panic!("{o:?}"),
    }
    r.grant(TaskKey::new(other, 0), s);
    assert_eq!(Core::open(&r.kv).unwrap().idx.canonical(), r.core.idx.canonical(), "namespaces are rebuilt");
    r.ok(pause_ns(false));
    assert!(r.core.idx.namespaces.is_empty(), "a namespace back at the defaults keeps no record");
    assert_eq!(count_table(&r.kv, Table::Namespace), 0);
    r.grant(TaskKey::new(job, 2), s);

    assert_eq!(r.refused(Command::PauseJob { job: 99, paused: true }), CommandError::JobNotFound(99));
    assert!(matches!(
        r.refused(Command::PauseNamespace { namespace: String::new(), paused: true }),
        CommandError::Invalid { .. }
    ));
}

#[test]
fn set_priority_changes_a_live_job() {
    let mut r = Rig::new();
    let s = r.register("w", 4);
    let job = r.submit(spec(1));
    assert_eq!(r.ok(Command::SetPriority { job, priority: 7 }), Outcome::PrioritySet { job, priority: 7 });
    assert_eq!(r.core.idx.jobs[&job].priority, 7);
    assert_eq!(r.job(job).unwrap().priority, 7);
    let g = r.grant(TaskKey::new(job, 0), s);
    r.complete(&g);
    assert_eq!(r.refused(Command::SetPriority { job, priority: 1 }), CommandError::JobFinished { job });
    assert_eq!(r.refused(Command::PauseJob { job, paused: true }), CommandError::JobFinished { job });
    assert_eq!(r.refused(Command::SetPriority { job: 5, priority: 1 }), CommandError::JobNotFound(5));
}

#[test]
fn retention_comes_from_the_job_then_its_namespace_then_the_default() {
    let mut r = Rig::new();
    let finish = |r: &mut Rig, sp: JobSpec| {
        let job = r.submit(sp);
        r.ok(Command::CancelJob { job, reason: String::new() });
        let rec = r.job(job).unwrap();
        rec.expires_ms.unwrap() - rec.finished_ms.unwrap()
    };
    assert_eq!(finish(&mut r, spec(1)), RETENTION_MS_DEFAULT);
    let set = |ms| Command::SetNamespaceRetention { namespace: "ns".into(), retention_ms: ms };
    let early = r.submit(spec(1));
    r.ok(set(Some(60_000)));
    assert_eq!(finish(&mut r, spec(1)), 60_000);
    let mut own = spec(1);
    own.retention_ms = Some(5_000);
    assert_eq!(finish(&mut r, own), 5_000);
    r.ok(Command::CancelJob { job: early, reason: String::new() });
    let rec = r.job(early).unwrap();
    assert_eq!(rec.expires_ms.unwrap() - rec.finished_ms.unwrap(), 60_000, "the setting when it finishes counts");
    assert!(matches!(r.refused(set(Some(MAX_RETENTION_MS + 1))), CommandError::Invalid { .. }));
    r.ok(set(None));
    assert_eq!(finish(&mut r, spec(1)), RETENTION_MS_DEFAULT);
}

#[test]
fn logs_are_fenced_to_the_latest_attempt_and_bounded() {
    let mut r = Rig::new();
    let s = r.register("w", 4);
    let mut sp = spec(1);
    sp.max_attempts = 3;
    sp.backoff = Backoff { base_ms: 1, max_ms: 1 };
    let job = r.submit(sp);
    let k = TaskKey::new(job, 0);
    assert!(r.refused(logs(k, 0, &["before any grant"])).is_fenced());
    let g1 = r.grant(k, s);
    assert_eq!(r.ok(logs(k, g1.token, &["a", "b"])), Outcome::LogsAppended { task: k, accepted: 2, refused: 0 });
    assert!(r.refused(logs(k, g1.token - 1, &["stale"])).is_fenced());
    assert_eq!(
        r.refused(logs(TaskKey::new(job, 1), g1.token, &["x"])),
        CommandError::TaskNotFound(TaskKey::new(job, 1))
    );
    assert_eq!(r.refused(logs(TaskKey::new(9, 0), 1, &["x"])), CommandError::JobNotFound(9));
    assert!(matches!(r.refused(logs(k, g1.token, &[])), CommandError::Invalid { .. }));
    // An ended attempt still takes its last flush.
    r.fail(&g1, true);
    r.ok(logs(k, g1.token, &["flushed after the report"]));
    let g2 = r.grant(k, s);
    assert!(r.refused(logs(k, g1.token, &["too late"])).is_fenced());
    r.ok(logs(k, g2.token, &["second"]));
    let first = r.core.task_log(&r.kv, k, g1.token).unwrap().unwrap();
    assert_eq!(
        (first.token, first.attempt, messages(&first)),
        (g1.token, 1, ["a", "b", "flushed after the report"].map(String::from).to_vec())
    );
    assert_eq!(r.core.task_log(&r.kv, k, g2.token).unwrap().unwrap().attempt, 2);

    // The ring keeps the newest lines of an attempt and counts the others.
    let big = "x".repeat(MAX_LOG_LINE_BYTES);
    let per_line = MAX_LOG_LINE_BYTES as u64 + LOG_LINE_OVERHEAD_BYTES;
    let fit = (MAX_LOG_BYTES_PER_ATTEMPT / per_line) as usize;
    let lines: Vec<&str> = (0..fit + 10).map(|_| big.as_str()).collect();
    r.ok(logs(k, g2.token, &lines));
    let log = r.core.task_log(&r.kv, k, g2.token).unwrap().unwrap();
    assert!(log.bytes <= MAX_LOG_BYTES_PER_ATTEMPT, "{}", log.bytes);
    // The newest lines that fit: `fit` long ones, and the short one before
    // them, which still fits beside them.
    assert_eq!(log.line_count() as usize, fit + 1);
    assert_eq!(log.dropped, 10, "the 10 oldest long lines");
    assert_eq!(log.bytes, fit as u64 * per_line + "second".len() as u64 + LOG_LINE_OVERHEAD_BYTES);

    // The job's bound refuses lines past it, and counts them.
    let per_command = MAX_LOG_LINES_PER_COMMAND as u64 * per_line;
    let full: Vec<&str> = (0..MAX_LOG_LINES_PER_COMMAND).map(|_| big.as_str()).collect();
    let mut refused = 0;
    for _ in 0..=(MAX_LOG_BYTES_PER_JOB / per_command) {
        match r.ok(logs(k, g2.token, &full)) {
            Outcome::LogsAppended { refused: n, .. } => refused += n,
            o => panic!("{o:?}"),
        }
    }
    let rec = r.job(job).unwrap();
    assert!(refused > 0 && rec.log_bytes <= MAX_LOG_BYTES_PER_JOB, "{refused} {}", rec.log_bytes);
    assert!(rec.log_bytes + per_line > MAX_LOG_BYTES_PER_JOB, "lines are refused only at the bound");
    match r.ok(logs(k, g2.token, &[big.as_str()])) {
        Outcome::LogsAppended { accepted: 0, refused: 1, .. } => {}
        o => panic!("{o:?}"),
    }
    let log = r.core.task_log(&r.kv, k, g2.token).unwrap().unwrap();
    assert!(log.dropped > refused as u64);
}

#[test]
fn a_report_stores_its_last_lines_once_and_a_fenced_report_stores_none() {
    let mut r = Rig::new();
    let s = r.register("w", 4);
    let job = r.submit(spec(2));
    let (k0, k1) = (TaskKey::new(job, 0), TaskKey::new(job, 1));
    let g0 = r.grant(k0, s);
    r.ok(logs(k0, g0.token, &["periodic"]));
    let done =
        Command::CompleteTask { task: k0, token: g0.token, result: ByteBuf::new(), logs: chunk(&["last", "lines"]) };
    assert!(matches!(r.ok(done.clone()), Outcome::Completed { duplicate: false, .. }));
    let stored = |r: &Rig| messages(&r.core.task_log(&r.kv, k0, g0.token).unwrap().unwrap());
    assert_eq!(stored(&r), ["periodic", "last", "lines"]);
    let bytes = r.job(job).unwrap().log_bytes;
    assert_eq!(bytes, chunk(&["periodic", "last", "lines"]).cost());
    // Resent after a reconnect: a duplicate, whose lines are not kept twice.
    assert!(matches!(r.ok(done), Outcome::Completed { duplicate: true, .. }));
    assert_eq!(stored(&r), ["periodic", "last", "lines"]);
    assert_eq!(r.job(job).unwrap().log_bytes, bytes);

    // A stale token's report is fenced, lines and all.
    let g1 = r.grant(k1, s);
    let zombie = Command::FailTask {
        task: k1,
        token: g0.token,
        error: "zombie".into(),
        retryable: true,
        logs: chunk(&["from a zombie"]),
    };
    assert!(r.refused(zombie).is_fenced());
    assert!(r.core.task_log(&r.kv, k1, g0.token).unwrap().is_none());
    // A failure keeps its lines too; the job's last report finishes it.
    let fail =
        Command::FailTask { task: k1, token: g1.token, error: "boom".into(), retryable: false, logs: chunk(&["why"]) };
    assert!(matches!(r.ok(fail), Outcome::Failed { job_finished: true, .. }));
    assert_eq!(messages(&r.core.task_log(&r.kv, k1, g1.token).unwrap().unwrap()), ["why"]);
    assert_eq!(r.job(job).unwrap().log_bytes, bytes + chunk(&["why"]).cost());
}

#[test]
fn an_attempts_first_lines_are_kept_without_a_read_and_later_ones_add_to_its_record() {
    let mut r = Rig::new();
    let s = r.register("w", 4);
    let mut sp = spec(3);
    sp.max_attempts = 2;
    sp.backoff = Backoff { base_ms: 1, max_ms: 1 };
    let job = r.submit(sp);
    let stored = |r: &Rig, k: TaskKey, token: Token| messages(&r.core.task_log(&r.kv, k, token).unwrap().unwrap());
    // Lines that ride only in the report: stored without looking for a record.
    let k0 = TaskKey::new(job, 0);
    let g0 = r.grant(k0, s);
    assert!(!r.task(k0).log_kept);
    r.ok(Command::CompleteTask { task: k0, token: g0.token, result: ByteBuf::new(), logs: chunk(&["only", "these"]) });
    assert_eq!(r.log_reads, 0);
    assert!(r.task(k0).log_kept);
    assert_eq!(stored(&r, k0, g0.token), ["only", "these"]);
    // A flush after the report (the worker's last interval) adds to the
    // record: a terminal task's flag is not relied on, so it is read.
    r.ok(logs(k0, g0.token, &["late"]));
    assert_eq!(r.log_reads, 1);
    assert_eq!(stored(&r, k0, g0.token), ["only", "these", "late"]);

    // A periodic flush starts the record without a read and marks the task;
    // the report's lines then add to it.
    let k1 = TaskKey::new(job, 1);
    let g1 = r.grant(k1, s);
    r.ok(logs(k1, g1.token, &["first"]));
    assert_eq!(r.log_reads, 0);
    assert!(r.task(k1).log_kept);
    r.ok(logs(k1, g1.token, &["second"]));
    assert_eq!(r.log_reads, 1);
    let fail =
        Command::FailTask { task: k1, token: g1.token, error: "again".into(), retryable: true, logs: chunk(&["why"]) };
    r.ok(fail);
    assert_eq!(stored(&r, k1, g1.token), ["first", "second", "why"]);
    // The next attempt starts unmarked, with a record of its own.
    r.now_ms += 60_000;
    let g1b = r.grant(k1, s);
    assert!(!r.task(k1).log_kept);
    r.ok(Command::CompleteTask { task: k1, token: g1b.token, result: ByteBuf::new(), logs: chunk(&["retry"]) });
    assert_eq!(r.log_reads, 0);
    assert_eq!(stored(&r, k1, g1b.token), ["retry"]);
    assert_eq!(stored(&r, k1, g1.token), ["first", "second", "why"]);
}

#[test]
fn a_graceful_release_fences_the_attempt_it_gave_back() {
    let mut r = Rig::new();
    let s = r.register("w", 4);
    let job = r.submit(spec(1));
    let k = TaskKey::new(job, 0);
    let g = r.grant(k, s);
    r.ok(Command::DeregisterWorker { session: s, epoch: 1 });
    assert!(r.refused(logs(k, g.token, &["after leaving"])).is_fenced());
}

#[test]
fn retention_deletes_everything_of_a_job_and_keeps_its_idempotency_record() {
    let mut r = Rig::new();
    let s = r.register("w", 8);
    let mut sp = spec(6);
    sp.retention_ms = Some(1_000);
    sp.idempotency_key = Some("k".into());
    sp.max_attempts = 2;
    sp.backoff = Backoff { base_ms: 1, max_ms: 1 };
    let job = r.submit(sp.clone());
    for shard in 0..6 {
        let k = TaskKey::new(job, shard);
        let g = r.grant(k, s);
        r.ok(logs(k, g.token, &["one", "two"]));
        match shard {
            0 => r.fail(&g, false),
            1 => {
                r.fail(&g, true);
                let g2 = r.grant(k, s);
                r.ok(logs(k, g2.token, &["again"]));
                r.complete(&g2);
            }
            _ => r.complete(&g),
        }
    }
    let rec = r.job(job).unwrap();
    assert!(rec.finished_ms.is_some());
    assert_eq!(count_table(&r.kv, Table::TaskLog), 7);
    assert_eq!(count_table(&r.kv, Table::JobIndex), 3);
    // Before its time the collector leaves it alone.
    r.ok(Command::CollectGarbage);
    assert!(keys_of_job(&r.kv, job).len() > 10);
    r.apply_at(rec.expires_ms.unwrap(), Command::CollectGarbage);
    assert_eq!(keys_of_job(&r.kv, job), Vec::<String>::new());
    assert_eq!(count_table(&r.kv, Table::Idem), 1);
    assert_eq!(r.core.gc_due_ms().filter(|at| *at <= r.now_ms), None);
    match r.ok(Command::SubmitJob(sp)) {
        Outcome::Submitted { job: j, duplicate: true, .. } => assert_eq!(j, job),
        o => panic!("{o:?}"),
    }
    // Within the window a retry of the submit is still recognised; after it,
    // the key is free again.
    r.apply_at(T0 + IDEMPOTENCY_WINDOW_MS_DEFAULT + 60_000, Command::CollectGarbage);
    assert_eq!(count_table(&r.kv, Table::Idem), 0);
}

fn set_window(namespace: &str, window_ms: Option<u64>) -> Command {
    Command::SetNamespaceIdempotencyWindow { namespace: namespace.into(), window_ms }
}

/// A one-shard job of `namespace` with idempotency key `key`.
fn keyed(namespace: &str, key: &str) -> JobSpec {
    let mut sp = spec(1);
    sp.namespace = namespace.into();
    sp.idempotency_key = Some(key.into());
    sp
}

impl Rig {
    /// Submit at `at`: the job and whether it was a duplicate.
    fn submit_at(&mut self, at: u64, sp: JobSpec) -> (JobId, bool) {
        match self.apply_at(at, Command::SubmitJob(sp)) {
            Response::Done(Outcome::Submitted { job, duplicate, .. }) => (job, duplicate),
            r => panic!("{r:?}"),
        }
    }

    /// The stored idempotency record of `key` in `namespace`: (job, expires_ms).
    fn idem(&self, namespace: &str, key: &str) -> Option<(JobId, u64)> {
        let v = self.kv.0.get(&keys::idem(&keys::IdemKey::new(namespace, key)))?;
        let rec: baton_raft_store::core::IdemRecord = codec::decode(v).unwrap();
        Some((rec.job, rec.expires_ms))
    }
}

#[test]
fn each_namespace_remembers_its_keys_for_its_own_window() {
    let mut r = Rig::new();
    r.ok(set_window("short", Some(10_000)));
    let t = r.now_ms + 10;
    let (a, _) = r.submit_at(t, keyed("short", "ka"));
    let (b, _) = r.submit_at(t, keyed("long", "kb"));
    assert_eq!(r.idem("short", "ka"), Some((a, t + 10_000)));
    assert_eq!(r.idem("long", "kb"), Some((b, t + IDEMPOTENCY_WINDOW_MS_DEFAULT)));
    assert_eq!(r.submit_at(t + 9_999, keyed("short", "ka")), (a, true));
    // Its expiry reached, the key is pruned by the next entry and free again.
    r.apply_at(t + 10_000, Command::CollectGarbage);
    assert_eq!((r.idem("short", "ka"), count_table(&r.kv, Table::Idem)), (None, 1));
    let (a2, dup) = r.submit_at(t + 10_000, keyed("short", "ka"));
    assert!(!dup && a2 != a);
    // The other namespace still remembers its key 23 h later.
    assert_eq!(r.submit_at(t + 23 * 3_600_000, keyed("long", "kb")), (b, true));
    r.apply_at(t + IDEMPOTENCY_WINDOW_MS_DEFAULT, Command::CollectGarbage);
    assert_eq!(count_table(&r.kv, Table::Idem), 0);
    assert_eq!(count_table(&r.kv, Table::IdemByExpiry), 0);
    assert!(!r.submit_at(r.now_ms + 10, keyed("long", "kb")).1);
}

#[test]
fn a_changed_window_applies_only_to_keys_written_after_the_change() {
    let mut r = Rig::new();
    let t = r.now_ms + 10;
    let (old, _) = r.submit_at(t, keyed("ns", "old"));
    r.apply_at(t, set_window("ns", Some(10_000)));
    let (short, _) = r.submit_at(t, keyed("ns", "short"));
    r.apply_at(t, set_window("ns", Some(3_600_000)));
    let (long, _) = r.submit_at(t, keyed("ns", "long"));
    r.apply_at(t, set_window("ns", None));
    assert_eq!(r.core.idx.namespaces.get("ns"), None, "back to the defaults, the record goes");
    assert_eq!(r.idem("ns", "old"), Some((old, t + IDEMPOTENCY_WINDOW_MS_DEFAULT)));
    assert_eq!(r.idem("ns", "short"), Some((short, t + 10_000)));
    assert_eq!(r.idem("ns", "long"), Some((long, t + 3_600_000)));
    // 20 s later only "short" is forgotten, though the window is now 24 h.
    let at = t + 20_000;
    assert_eq!(r.submit_at(at, keyed("ns", "old")), (old, true));
    assert!(!r.submit_at(at, keyed("ns", "short")).1);
    assert_eq!(r.submit_at(at, keyed("ns", "long")), (long, true));
    // Two hours later "long" is forgotten too: the 1-h window it was written with.
    assert!(!r.submit_at(t + 7_200_000, keyed("ns", "long")).1);
    assert_eq!(r.submit_at(t + 7_200_000, keyed("ns", "old")), (old, true));
}

#[test]
fn workflow_keys_and_event_ids_follow_their_namespace_window() {
    let mut r = Rig::new();
    r.ok(set_window("ns", Some(5_000)));
    let wf = WorkflowSpec {
        namespace: "ns".into(),
        name: "wf".into(),
        labels: BTreeMap::new(),
        idempotency_key: Some("w".into()),
        steps: vec![StepSpec {
            name: "a".into(),
            depends_on: vec![],
            trigger: TriggerRule::AllSucceeded,
            kind: StepKind::Job { job: JobSpec::with_shards("", 1), reduce: None, choice: false, dynamic: false },
        }],
        result_step: None,
    };
    let ev = EventSpec {
        namespace: "ns".into(),
        topic: "t".into(),
        event_id: "e1".into(),
        payload: ByteBuf::new(),
        attributes: BTreeMap::new(),
    };
    let submit = |r: &mut Rig, at| match r.apply_at(at, Command::SubmitWorkflow(wf.clone())) {
        Response::Done(Outcome::WorkflowSubmitted { workflow, duplicate, .. }) => (workflow, duplicate),
        o => panic!("{o:?}"),
    };
    let publish = |r: &mut Rig, at| match r.apply_at(at, Command::PublishEvent(ev.clone())) {
        Response::Done(Outcome::EventPublished { duplicate, .. }) => duplicate,
        o => panic!("{o:?}"),
    };
    let t = r.now_ms + 10;
    let (first, _) = submit(&mut r, t);
    assert!(!publish(&mut r, t));
    assert_eq!(submit(&mut r, t + 4_999), (first, true));
    assert!(publish(&mut r, t + 4_999));
    let (second, dup) = submit(&mut r, t + 5_000);
    assert!(!dup && second != first);
    assert!(!publish(&mut r, t + 5_000), "the event id is forgotten after the namespace's window");
}

#[test]
fn a_bad_idempotency_window_is_refused_and_changes_nothing() {
    let mut r = Rig::new();
    r.ok(set_window("ns", Some(60_000)));
    let field_and_reason = |e: CommandError| match e {
        CommandError::Invalid { field, reason } => (field, reason),
        e => panic!("{e}"),
    };
    for (ms, bound) in [
        (0, IDEMPOTENCY_WINDOW_MS_MIN),
        (IDEMPOTENCY_WINDOW_MS_MIN - 1, IDEMPOTENCY_WINDOW_MS_MIN),
        (IDEMPOTENCY_WINDOW_MS_MAX + 1, IDEMPOTENCY_WINDOW_MS_MAX),
    ] {
        let (field, reason) = field_and_reason(r.refused(set_window("ns", Some(ms))));
        assert_eq!(field, "idempotency_window_ms");
        assert!(reason.contains(&format!("{ms} ms")) && reason.contains(&format!("{bound}-ms")), "{reason}");
    }
    for ns in ["", "a\u{7}b", &"n".repeat(MAX_NAME_BYTES + 1)] {
        assert_eq!(field_and_reason(r.refused(set_window(ns, Some(10_000)))).0, "namespace");
    }
    // The bounds themselves are accepted.
    r.ok(set_window("ns", Some(IDEMPOTENCY_WINDOW_MS_MIN)));
    r.ok(set_window("ns", Some(IDEMPOTENCY_WINDOW_MS_MAX)));
    assert_eq!(r.core.idx.namespaces["ns"].idempotency_window_ms, Some(IDEMPOTENCY_WINDOW_MS_MAX));
}

type Live = BTreeMap<String, (JobId, u64)>;
type Written = std::collections::BTreeSet<(u64, String)>;

/// Keys of windows 1 s to 1 day written interleaved, some reused after
/// expiry while their old index entries still wait behind others: the pruned
/// index entries are always exactly a prefix of the index in (expiry, key)
/// order, none before its expiry, and every record within its expiry stays.
#[test]
fn pruning_with_mixed_windows_goes_in_expiry_order_and_keeps_live_records() {
    let mut r = Rig::new();
    let windows = [("s", 1_000), ("m", 60_000), ("h", 3_600_000)];
    for (ns, ms) in windows {
        r.ok(set_window(ns, Some(ms)));
    }
    // `live`: what each key's record must be, (job, expires_ms); `written`:
    // every index entry ever written.
    let (mut live, mut written) = (Live::new(), Written::new());
    let check = |r: &Rig, live: &Live, written: &Written| {
        let stored: Vec<(u64, String)> =
            r.kv.0
                .keys()
                .filter(|k| k[0] == Table::IdemByExpiry as u8)
                .map(|k| keys::parse_idem_by_expiry(k).unwrap())
                .map(|(t, k)| (t, k.key().to_string()))
                .collect();
        let pruned = written.len() - stored.len();
        let rest: Vec<(u64, String)> = written.iter().skip(pruned).cloned().collect();
        assert_eq!(stored, rest, "at {}: the pruned entries are not the first ones", r.now_ms);
        assert!(written.iter().take(pruned).all(|(t, _)| *t <= r.now_ms), "an entry pruned before its expiry");
        for (key, (job, exp)) in live {
            if *exp > r.now_ms {
                assert_eq!(r.idem(&key[..1], key), Some((*job, *exp)), "at {}: live key {key} lost", r.now_ms);
            }
        }
    };
    let submit = |r: &mut Rig, at: u64, ns: &str, key: String, live: &mut Live, written: &mut Written| {
        let window = windows.iter().find(|w| w.0 == ns).map_or(IDEMPOTENCY_WINDOW_MS_DEFAULT, |w| w.1);
        let (job, dup) = r.submit_at(at, keyed(ns, &key));
        match live.get(&key) {
            Some((j, exp)) if *exp > at => assert_eq!((job, dup), (*j, true), "{key} at {at}"),
            _ => {
                assert!(!dup, "{key} at {at} remembered past its expiry");
                live.insert(key.clone(), (job, at + window));
                written.insert((at + window, key));
            }
        }
    };
    // 4 s of submits: the 1-s keys are pruned while others are written.
    let t0 = r.now_ms + 10;
    for i in 0..2_000u64 {
        let ns = ["s", "m", "h", "d"][i as usize % 4];
        submit(&mut r, t0 + i * 2, ns, format!("{ns}{i}"), &mut live, &mut written);
        if i % 50 == 0 {
            check(&r, &live, &written);
        }
    }
    check(&r, &live, &written);
    // Past the 1-min window 500 keys wait, 64 pruned per entry: reuse some
    // of the last ones meanwhile, while their old entries still wait.
    let t1 = t0 + 70_000;
    for i in 0..30u64 {
        submit(&mut r, t1 + i * 10, "m", format!("m{}", 1997 - i * 4), &mut live, &mut written);
        check(&r, &live, &written);
    }
    assert_eq!(r.idem("m", "m1997").map(|(_, exp)| exp), Some(t1 + 60_000), "a reused key keeps its new record");
    assert_eq!(r.submit_at(t1 + 59_000, keyed("m", "m1997")).1, true);
    // The reused keys expire, then the hour's, then the day's.
    for at in [t1 + 61_000, t0 + 3_700_000, t0 + 2 * IDEMPOTENCY_WINDOW_MS_DEFAULT] {
        for i in 0..12 {
            r.apply_at(at + i, Command::CollectGarbage);
            check(&r, &live, &written);
        }
    }
    assert_eq!(count_table(&r.kv, Table::Idem), 0);
}

#[test]
fn retention_deletes_a_workflow_and_all_its_jobs() {
    let mut r = Rig::new();
    let s = r.register("w", 8);
    r.ok(Command::SetNamespaceRetention { namespace: "ns".into(), retention_ms: Some(1_000) });
    let step = |name: &str, deps: &[&str], shards| StepSpec {
        name: name.into(),
        depends_on: deps.iter().map(|d| d.to_string()).collect(),
        trigger: TriggerRule::AllSucceeded,
        kind: StepKind::Job {
            job: JobSpec::with_shards("", shards),
            reduce: Some(workflow::ReduceSpec::default()),
            choice: false,
            dynamic: false,
        },
    };
    let wf = WorkflowSpec {
        namespace: "ns".into(),
        name: "wf".into(),
        labels: BTreeMap::new(),
        idempotency_key: None,
        steps: vec![step("a", &[], 2), step("b", &["a"], 1)],
        result_step: None,
    };
    r.ok(Command::SubmitWorkflow(wf));
    // Run every job the workflow starts until it finishes.
    for _ in 0..20 {
        let pending: Vec<TaskKey> =
            r.core.idx.pending.iter().flat_map(|(j, m)| m.keys().map(|s| TaskKey::new(*j, *s))).collect();
        for k in pending {
            let g = r.grant(k, s);
            r.ok(logs(k, g.token, &["work"]));
            r.complete(&g);
        }
    }
    let rec = r.core.workflow(&r.kv, 1).unwrap().unwrap();
    assert_eq!(rec.status, WorkflowStatus::Succeeded);
    let expires = rec.expires_ms.unwrap();
    assert_eq!(expires, rec.finished_ms.unwrap() + 1_000);
    let jobs: Vec<JobId> = (1..r.core.meta.next_job).collect();
    assert_eq!(jobs.len(), 4, "a map and a reduce per step");
    assert!(jobs.iter().all(|j| r.job(*j).unwrap().expires_ms.is_none()));
    r.apply_at(expires - 1, Command::CollectGarbage);
    assert!(r.core.workflow(&r.kv, 1).unwrap().is_some());
    r.apply_at(expires, Command::CollectGarbage);
    r.collect_all();
    assert!(r.core.workflow(&r.kv, 1).unwrap().is_none());
    for j in jobs {
        assert_eq!(keys_of_job(&r.kv, j), Vec::<String>::new(), "job {j}");
    }
    assert_eq!(count_table(&r.kv, Table::Workflow), 0);
    assert_eq!(count_table(&r.kv, Table::StepSpec), 0);
    assert_eq!(count_table(&r.kv, Table::TaskLog), 0);
    assert_eq!(Core::open(&r.kv).unwrap().idx.canonical(), r.core.idx.canonical());
}

#[test]
fn retention_deletes_ended_sessions_and_names_no_one_took() {
    let mut r = Rig::new();
    let a = r.register("a", 1);
    let b1 = r.register("b", 1);
    let b2 = r.register("b", 1); // replaces b1: the name now points at b2
    let first_end = r.now_ms;
    r.ok(Command::DeregisterWorker { session: a, epoch: 1 });
    assert_eq!(count_table(&r.kv, Table::Session), 3);
    let last_end = r.now_ms;
    r.apply_at(first_end + SESSION_RETENTION_MS - 1, Command::CollectGarbage);
    assert_eq!(count_table(&r.kv, Table::Session), 3, "kept for an hour");
    r.apply_at(last_end + SESSION_RETENTION_MS, Command::CollectGarbage);
    assert!(!r.kv.0.contains_key(&keys::session(a)) && !r.kv.0.contains_key(&keys::session(b1)));
    assert!(r.kv.0.contains_key(&keys::session(b2)), "live");
    assert!(!r.kv.0.contains_key(&keys::worker_name("a")), "no one took the name");
    assert!(r.kv.0.contains_key(&keys::worker_name("b")), "b2 holds the name");
    // A name collected starts over at epoch 1.
    match r.ok(Command::RegisterWorker { name: "a".into(), labels: BTreeMap::new(), capacity: 1, namespaces: None }) {
        Outcome::Registered { epoch: 1, .. } => {}
        o => panic!("{o:?}"),
    }
    assert_eq!(Core::open(&r.kv).unwrap().idx.canonical(), r.core.idx.canonical());
}

/// One job of the largest size, with logs: no entry deletes more than
/// GC_KEYS_PER_ENTRY keys, and in the end no key of the job is left in any table.
#[test]
fn the_collector_deletes_a_100k_shard_job_a_bounded_number_of_keys_per_entry() {
    let mut r = Rig::new();
    let s = r.register("w", 100);
    let mut sp = JobSpec::with_shards("ns", MAX_SHARDS_PER_JOB);
    sp.payloads[0] = ByteBuf::from(b"p".to_vec());
    sp.retention_ms = Some(0);
    let job = r.submit(sp);
    for shard in (0..MAX_SHARDS_PER_JOB as u32).step_by(997) {
        let k = TaskKey::new(job, shard);
        let g = r.grant(k, s);
        r.ok(logs(k, g.token, &["x"]));
        r.complete(&g);
    }
    r.ok(Command::CancelJob { job, reason: String::new() });
    let job_keys = keys_of_job(&r.kv, job).len();
    assert!(job_keys > MAX_SHARDS_PER_JOB, "{job_keys}");
    let mut entries = 0;
    loop {
        let out = r.ok(Command::CollectGarbage);
        let Outcome::Collected { keys_deleted } = out else { panic!("{out:?}") };
        let deleted = r.deleted;
        assert!(deleted <= keys_deleted as usize && keys_deleted as usize <= GC_KEYS_PER_ENTRY, "{deleted}");
        entries += 1;
        if keys_deleted == 0 {
            break;
        }
    }
    let tables: Vec<(Table, usize)> = Table::ALL.iter().map(|t| (*t, count_table(&r.kv, *t))).collect();
    assert_eq!(keys_of_job(&r.kv, job), Vec::<String>::new(), "{tables:?}");
    for t in [Table::Job, Table::Task, Table::Payload, Table::TaskLog, Table::JobIndex, Table::StepSpec] {
        assert_eq!(count_table(&r.kv, t), 0, "{t:?}");
    }
    assert!(entries > 2 * MAX_SHARDS_PER_JOB / GC_KEYS_PER_ENTRY, "{entries} entries");
    assert_eq!(r.core.meta.gc, None);
}

/// 2,000 jobs in namespace "big", and 30 in "small" spread among them, of
/// which some succeeded, some were cancelled and one was deleted.
fn listing_rig() -> Rig {
    let mut r = Rig::new();
    let s = r.register("w", 1000);
    for i in 0..2_030u32 {
        let mut sp = spec(1);
        sp.namespace = if i % 68 == 7 { "small" } else { "big" }.into();
        let job = r.submit(sp);
        match i % 3 {
            0 => {
                let g = r.grant(TaskKey::new(job, 0), s);
                r.complete(&g);
            }
            1 => {
                r.ok(Command::CancelJob { job, reason: String::new() });
            }
            _ => {}
        }
    }
    r.ok(Command::DeleteJob { job: 8 });
    r
}

#[test]
fn a_filtered_page_reads_about_as_many_records_as_it_returns() {
    let r = listing_rig();
    let filters = [
        JobFilter { namespace: Some("small".into()), status: None },
        JobFilter { namespace: Some("small".into()), status: Some(JobStatus::Succeeded) },
        JobFilter { namespace: None, status: Some(JobStatus::Queued) },
        JobFilter::default(),
    ];
    for filter in &filters {
        for newest_first in [false, true] {
            let counting = CountingKv::new(&r.kv);
            let (page, next) = list_jobs_in(&counting, filter, None, 5, newest_first).unwrap();
            let reads = counting.reads();
            assert_eq!(page.len(), 5, "{filter:?}");
            assert!(next.is_some());
            // Per record: its index key and the record; one key more to know a page follows.
            assert!(reads <= 2 * page.len() + 2, "{filter:?} newest_first={newest_first}: {reads} reads for 5 jobs");
        }
    }
}

#[test]
fn pages_list_each_matching_job_once_in_either_order_and_hide_deleted_ones() {
    let r = listing_rig();
    let all: Vec<JobRecord> = (1..r.core.meta.next_job).filter_map(|j| r.job(j)).filter(|j| !j.deleted).collect();
    let filters = [
        JobFilter::default(),
        JobFilter { namespace: Some("small".into()), status: None },
        JobFilter { namespace: Some("big".into()), status: Some(JobStatus::Cancelled) },
        JobFilter { namespace: None, status: Some(JobStatus::Succeeded) },
        JobFilter { namespace: Some("none".into()), status: None },
    ];
    for filter in &filters {
        for newest_first in [false, true] {
            let mut want: Vec<JobId> = all.iter().filter(|j| filter.matches(j)).map(|j| j.id).collect();
            if newest_first {
                want.reverse();
            }
            let mut got = Vec::new();
            let mut after = None;
            loop {
                let (page, next) = list_jobs_in(&r.kv, filter, after, 97, newest_first).unwrap();
                got.extend(page.iter().map(|j| j.id));
                match next {
                    Some(n) => after = Some(n),
                    None => break,
                }
            }
            assert_eq!(got, want, "{filter:?} newest_first={newest_first}");
        }
    }
    assert!(!all.iter().any(|j| j.id == 8));
    assert!(r.job(8).unwrap().deleted);
}

/// Under a steady stream of busy entries, collection and idempotency
/// pruning keep pace with creation: what an entry may delete grows with the
/// commands it carries. With a fixed budget per entry (512 keys, 64
/// idempotency keys), entries of a few hundred commands created more than
/// they deleted, and the backlog grew without end (the steady benchmark's
/// collector fell behind by 0.6 s every second).
#[test]
fn collection_and_pruning_keep_pace_with_busy_entries() {
    const PER_ENTRY: usize = 200;
    const ENTRIES: usize = 100;
    const STEP_MS: u64 = 100;
    let mut r = Rig::new();
    let s = r.register("w", 10_000);
    r.ok(Command::SetNamespaceRetention { namespace: "ns".into(), retention_ms: Some(1_000) });
    r.ok(Command::SetNamespaceIdempotencyWindow { namespace: "ns".into(), window_ms: Some(1_000) });
    let (mut submitted, mut granted): (Vec<TaskKey>, Vec<Grant>) = (Vec::new(), Vec::new());
    let mut worst = (0usize, 0usize);
    for e in 0..ENTRIES {
        // One entry as a busy leader batches it: the reports of the last
        // grants, grants of the last submits, and new submits.
        let mut cmds: Vec<Command> = granted
            .drain(..)
            .map(|g| Command::CompleteTask {
                task: g.task,
                token: g.token,
                result: ByteBuf::new(),
                logs: Default::default(),
            })
            .collect();
        let assignments: Vec<Assign> = submitted.drain(..).map(|task| Assign { task, session: s }).collect();
        let assigned = !assignments.is_empty();
        if assigned {
            cmds.push(Command::AssignTasks { assignments });
        }
        for i in 0..PER_ENTRY {
            let mut sp = spec(1);
            sp.idempotency_key = Some(format!("k-{e}-{i}"));
            cmds.push(Command::SubmitJob(sp));
        }
        let at = r.now_ms + STEP_MS;
        let Response::Batch(out) = r.apply_at(at, Command::Batch(cmds)) else { panic!("not a batch") };
        for o in out {
            match o {
                Response::Done(Outcome::Submitted { job, .. }) => submitted.push(TaskKey::new(job, 0)),
                Response::Done(Outcome::Assigned(g)) => granted.extend(g.into_iter().map(|g| g.unwrap())),
                Response::Done(Outcome::Completed { .. }) => {}
                other => panic!("{other:?}"),
            }
        }
        let idem_keys = r.table().keys().filter(|k| k[0] == Table::Idem as u8).count();
        worst = (worst.0.max(r.core.idx.expiry.len()), worst.1.max(idem_keys));
    }
    // What may be waiting at any time: the jobs finished within the last
    // retention (1 s = 10 entries), and the keys written within the window,
    // plus an entry or two in flight.
    let bound = 13 * PER_ENTRY;
    assert!(worst.0 <= bound, "finished jobs waiting for the collector peaked at {}, over {bound}", worst.0);
    assert!(worst.1 <= bound, "idempotency records peaked at {}, over {bound}", worst.1);
}
