//! Task and job records, and the single pure transition function that moves a
//! task between states. Nothing here does IO or reads a clock.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};
use serde_bytes::ByteBuf;

use crate::command::{Backoff, CommandError, JobSpec};
use crate::ids::{JobId, SessionId, TaskKey, Token};
use crate::schedule::RunOrigin;
use crate::workflow::JobOrigin;

/// Where a task is in its life. `Succeeded`, `Dead` and `Cancelled` are final.
///
/// The brief's transient `Failed` state is folded into `Pending { ready_at_ms }`:
/// a failed attempt that will be retried waits in Pending until its backoff
/// ends, so no extra log entry is needed to leave a Failed state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum TaskState {
    Pending {
        ready_at_ms: u64,
    },
    Assigned {
        session: SessionId,
        token: Token,
        deadline_ms: u64,
    },
    Succeeded {
        token: Token,
        result: ByteBuf,
    },
    /// Out of attempts, or failed with a non-retryable error.
    Dead,
    Cancelled,
}

impl TaskState {
    pub fn is_terminal(&self) -> bool {
        matches!(self, TaskState::Succeeded { .. } | TaskState::Dead | TaskState::Cancelled)
    }

    pub fn name(&self) -> &'static str {
        match self {
            TaskState::Pending { .. } => "pending",
            TaskState::Assigned { .. } => "assigned",
            TaskState::Succeeded { .. } => "succeeded",
            TaskState::Dead => "dead",
            TaskState::Cancelled => "cancelled",
        }
    }

    fn kind(&self) -> StateKind {
        match self {
            TaskState::Pending { .. } => StateKind::Pending,
            TaskState::Assigned { .. } => StateKind::Assigned,
            TaskState::Succeeded { .. } => StateKind::Succeeded,
            TaskState::Dead => StateKind::Dead,
            TaskState::Cancelled => StateKind::Cancelled,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StateKind {
    Pending,
    Assigned,
    Succeeded,
    Dead,
    Cancelled,
}

/// How the latest attempt ended. A late report for an ended attempt is a
/// duplicate only if that attempt ended by the same kind of report; one that
/// ended by a timeout, expiry or cancellation fences it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum AttemptEnd {
    /// The worker reported a failure.
    Failed,
    /// The attempt's deadline passed.
    TimedOut,
    /// The worker's lease expired, or the same worker name registered again.
    Expired,
    /// The worker deregistered; the attempt did not count.
    Left,
    /// The job was cancelled.
    Cancelled,
}

/// One task's durable record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskRecord {
    pub state: TaskState,
    /// Attempts that count against `max_attempts`: grants, minus the ones
    /// given back by a graceful release. Also the attempt number handlers see.
    pub attempts: u32,
    /// Token of the latest granted attempt; 0 before the first grant.
    pub last_token: Token,
    /// How the attempt of `last_token` ended; `None` while it runs (or before
    /// the first grant, or when it succeeded).
    pub last_end: Option<AttemptEnd>,
    /// Name of the worker that held the latest attempt (for stickiness).
    pub last_worker: Option<String>,
    pub last_error: Option<String>,
    pub progress_bp: u32,
    pub progress_message: String,
    /// Entry time of the last change.
    pub updated_ms: u64,
    /// A log record exists for the attempt of `last_token`. Without one, the
    /// attempt's first lines start a record without a read: most attempts
    /// log only what rides in their report, and a read that finds nothing
    /// still walks every level of the store (it was half the cost of a
    /// one-line log, docs/benchmarks.md "Task logs").
    pub log_kept: bool,
}

impl TaskRecord {
    pub fn new(ready_at_ms: u64, now_ms: u64) -> Self {
        Self {
            state: TaskState::Pending { ready_at_ms },
            attempts: 0,
            last_token: 0,
            last_end: None,
            last_worker: None,
            last_error: None,
            progress_bp: 0,
            progress_message: String::new(),
            updated_ms: now_ms,
            log_kept: false,
        }
    }
}

/// Retry policy of the job a task belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Policy {
    pub max_attempts: u32,
    pub backoff: Backoff,
    pub attempt_timeout_ms: u64,
}

/// Something that happens to a task.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event<'a> {
    Grant {
        session: SessionId,
        worker: &'a str,
        token: Token,
    },
    Complete {
        token: Token,
        result: &'a [u8],
    },
    Fail {
        token: Token,
        error: &'a str,
        retryable: bool,
    },
    Progress {
        token: Token,
        progress_bp: u32,
        message: &'a str,
    },
    /// The attempt's deadline passed.
    Timeout {
        token: Token,
    },
    /// The session holding the attempt ended. `graceful` releases (the worker
    /// deregistered) give the attempt back: it counts neither against the
    /// budget nor in the attempt number of the next grant.
    Release {
        session: SessionId,
        graceful: bool,
    },
    Cancel,
}

/// The effect of an accepted event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Effect {
    /// The record changed.
    Changed,
    /// The event repeats one already applied (same token); nothing changed.
    Duplicate,
}

/// Result of [`transition`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Step {
    pub next: TaskRecord,
    pub effect: Effect,
}

/// The task state machine. Pure: the same inputs always give the same output,
/// and a rejected event leaves the caller's record untouched because the
/// caller only ever stores `Step::next`.
pub fn transition(
    key: TaskKey,
    rec: &TaskRecord,
    ev: &Event<'_>,
    policy: &Policy,
    now_ms: u64,
) -> Result<Step, CommandError> {
    let fenced = |presented: Token| CommandError::Fenced { task: key, presented, latest: rec.last_token };
    let changed = |next: TaskRecord| Ok(Step { next, effect: Effect::Changed });
    let duplicate = || Ok(Step { next: rec.clone(), effect: Effect::Duplicate });
    let mut next = rec.clone();
    next.updated_ms = now_ms;

    match (ev, &rec.state) {
        (Event::Grant { session, worker, token }, TaskState::Pending { ready_at_ms }) => {
            if *ready_at_ms > now_ms {
                return Err(CommandError::NotReady { task: key, ready_at_ms: *ready_at_ms });
            }
            if *token <= rec.last_token {
                return Err(CommandError::AlreadyGrantedInEntry { task: key });
            }
            // Every way into Pending leaves an attempt to spend.
            debug_assert!(rec.attempts < policy.max_attempts, "{key} pending with {} attempts used", rec.attempts);
            next.state = TaskState::Assigned {
                session: *session,
                token: *token,
                deadline_ms: now_ms.saturating_add(policy.attempt_timeout_ms),
            };
            next.attempts = rec.attempts.saturating_add(1);
            next.last_token = *token;
            next.log_kept = false;
            next.last_end = None;
            next.last_worker = Some(worker.to_string());
            next.progress_bp = 0;
            next.progress_message.clear();
            changed(next)
        }
        (Event::Grant { .. }, state) => Err(CommandError::NotPending { task: key, state: state.name().to_string() }),

        (Event::Complete { token, result }, TaskState::Assigned { token: cur, .. }) if token == cur => {
            next.state = TaskState::Succeeded { token: *token, result: ByteBuf::from(result.to_vec()) };
            next.progress_bp = 10_000;
            changed(next)
        }
        (Event::Complete { token, .. }, TaskState::Succeeded { token: cur, .. }) if token == cur => duplicate(),
        (Event::Complete { token, .. }, _) => Err(fenced(*token)),

        (Event::Fail { token, error, retryable }, TaskState::Assigned { token: cur, .. }) if token == cur => {
            next.last_error = Some(error.to_string());
            next.last_end = Some(AttemptEnd::Failed);
            next.state = if *retryable && rec.attempts < policy.max_attempts {
                TaskState::Pending { ready_at_ms: now_ms.saturating_add(policy.backoff.delay_ms(rec.attempts)) }
            } else {
                TaskState::Dead
            };
            changed(next)
        }
        // A repeated failure report for an attempt that ended by a failure
        // report. One that timed out or expired is fenced instead.
        (Event::Fail { token, .. }, TaskState::Pending { .. } | TaskState::Dead)
            if *token == rec.last_token && *token != 0 && rec.last_end == Some(AttemptEnd::Failed) =>
        {
            duplicate()
        }
        (Event::Fail { token, .. }, _) => Err(fenced(*token)),

        (Event::Progress { token, progress_bp, message }, TaskState::Assigned { token: cur, .. }) if token == cur => {
            next.progress_bp = *progress_bp;
            next.progress_message = message.to_string();
            changed(next)
        }
        (Event::Progress { token, .. }, _) => Err(fenced(*token)),

        (Event::Timeout { token }, TaskState::Assigned { token: cur, deadline_ms, .. }) if token == cur => {
            if *deadline_ms > now_ms {
                return Err(CommandError::NotExpired { task: key, token: *token, deadline_ms: *deadline_ms });
            }
            next.last_error = Some("attempt timed out".to_string());
            next.last_end = Some(AttemptEnd::TimedOut);
            next.state = requeue_or_dead(rec, policy, now_ms, true);
            changed(next)
        }
        (Event::Timeout { token }, _) => Err(fenced(*token)),

        (Event::Release { session, graceful }, TaskState::Assigned { session: held, .. }) if session == held => {
            next.last_error = Some(if *graceful { "worker left" } else { "worker lease expired" }.to_string());
            // Either way the task retries at once: it did nothing wrong.
            if *graceful {
                // The worker left on its own: give the attempt back.
                debug_assert!(rec.attempts > 0, "{key} assigned with no attempt counted");
                next.attempts = rec.attempts.saturating_sub(1);
                next.last_end = Some(AttemptEnd::Left);
                next.state = TaskState::Pending { ready_at_ms: now_ms };
            } else {
                next.last_end = Some(AttemptEnd::Expired);
                next.state = requeue_or_dead(rec, policy, now_ms, false);
            }
            changed(next)
        }
        (Event::Release { session, .. }, state) => Err(CommandError::Invalid {
            field: "session".into(),
            reason: format!("task {key} is {} and not held by session {session}", state.name()),
        }),

        (Event::Cancel, state) if !state.is_terminal() => {
            if matches!(state, TaskState::Assigned { .. }) {
                next.last_end = Some(AttemptEnd::Cancelled);
            }
            next.state = TaskState::Cancelled;
            changed(next)
        }
        (Event::Cancel, state) => Err(CommandError::NotPending { task: key, state: state.name().to_string() }),
    }
}

fn requeue_or_dead(rec: &TaskRecord, policy: &Policy, now_ms: u64, backoff: bool) -> TaskState {
    if rec.attempts >= policy.max_attempts {
        TaskState::Dead
    } else if backoff {
        TaskState::Pending { ready_at_ms: now_ms.saturating_add(policy.backoff.delay_ms(rec.attempts)) }
    } else {
        TaskState::Pending { ready_at_ms: now_ms }
    }
}

/// Per-state task counts of a job.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Counts {
    pub pending: u32,
    pub assigned: u32,
    pub succeeded: u32,
    pub dead: u32,
    pub cancelled: u32,
}

impl Counts {
    fn slot(&mut self, k: StateKind) -> &mut u32 {
        match k {
            StateKind::Pending => &mut self.pending,
            StateKind::Assigned => &mut self.assigned,
            StateKind::Succeeded => &mut self.succeeded,
            StateKind::Dead => &mut self.dead,
            StateKind::Cancelled => &mut self.cancelled,
        }
    }

    /// Account for one task moving from `from` to `to`.
    pub fn moved(&mut self, from: &TaskState, to: &TaskState) {
        let (f, t) = (from.kind(), to.kind());
        if f != t {
            let s = self.slot(f);
            // Counts mirror the task records: a task leaves a state it is in.
            debug_assert!(*s > 0, "count of {f:?} underflows moving to {t:?}");
            *s = s.saturating_sub(1);
            *self.slot(t) += 1;
        }
    }

    pub fn live(&self) -> u32 {
        self.pending + self.assigned
    }
}

/// A job's status, derived from its task counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum JobStatus {
    /// No shard has started yet.
    Queued,
    Running,
    Succeeded,
    /// Finished with at least one dead shard.
    Failed,
    Cancelled,
}

impl JobStatus {
    pub const ALL: [JobStatus; 5] =
        [JobStatus::Queued, JobStatus::Running, JobStatus::Succeeded, JobStatus::Failed, JobStatus::Cancelled];

    /// The byte that stands for this status in job index keys. Stored: never renumber.
    pub fn tag(self) -> u8 {
        match self {
            JobStatus::Queued => 1,
            JobStatus::Running => 2,
            JobStatus::Succeeded => 3,
            JobStatus::Failed => 4,
            JobStatus::Cancelled => 5,
        }
    }

    pub fn from_tag(tag: u8) -> Option<JobStatus> {
        JobStatus::ALL.into_iter().find(|s| s.tag() == tag)
    }

    pub fn is_terminal(self) -> bool {
        matches!(self, JobStatus::Succeeded | JobStatus::Failed | JobStatus::Cancelled)
    }

    pub fn name(self) -> &'static str {
        match self {
            JobStatus::Queued => "queued",
            JobStatus::Running => "running",
            JobStatus::Succeeded => "succeeded",
            JobStatus::Failed => "failed",
            JobStatus::Cancelled => "cancelled",
        }
    }
}

/// A job's durable record. Payloads and per-shard state live in task records.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobRecord {
    pub id: JobId,
    pub namespace: String,
    pub name: String,
    pub shards: u32,
    pub priority: i32,
    pub max_attempts: u32,
    pub backoff: Backoff,
    pub attempt_timeout_ms: u64,
    pub labels: BTreeMap<String, String>,
    pub constraints: BTreeMap<String, String>,
    pub not_before_ms: Option<u64>,
    pub idempotency_key: Option<String>,
    /// blake3 of the encoded spec, to tell a true retry from a key reuse.
    pub spec_hash: [u8; 32],
    pub created_ms: u64,
    pub counts: Counts,
    /// Set once any shard has been granted.
    pub started: bool,
    pub cancel_reason: Option<String>,
    pub finished_ms: Option<u64>,
    /// The workflow step that started this job, if any.
    pub origin: Option<JobOrigin>,
    /// The schedule fire or event that started this job, if any.
    pub run_of: Option<RunOrigin>,
    /// From the spec; see [`JobSpec::retention_ms`].
    pub retention_ms: Option<u64>,
    /// No new attempt is granted while set (PauseJob).
    pub paused: bool,
    /// When the collector deletes this finished job: set when it finishes
    /// (finish time + retention), to now by DeleteJob, cleared by RetryJob.
    /// Jobs of a workflow get it when their workflow is deleted.
    pub expires_ms: Option<u64>,
    /// DeleteJob was applied: reads say not found while the collector works.
    pub deleted: bool,
    /// The status under which the job's index keys are stored (see
    /// `keys::job_index`); brought up to date by take_writes.
    pub indexed_status: Option<JobStatus>,
    /// Log bytes accepted over all attempts (charged like
    /// [`crate::lifecycle::LogRecord::bytes`]), against
    /// [`crate::limits::MAX_LOG_BYTES_PER_JOB`].
    pub log_bytes: u64,
    /// Bytes of the payloads the job was created with, counted against its
    /// namespace's payload quota while it is live ([`crate::quota`]).
    pub payload_bytes: u64,
}

impl JobRecord {
    /// The record of a job just submitted from `spec`: nothing started yet.
    pub fn new(id: JobId, spec: &JobSpec, spec_hash: [u8; 32], created_ms: u64) -> Self {
        let shards = spec.payloads.len() as u32;
        JobRecord {
            id,
            namespace: spec.namespace.clone(),
            name: spec.name.clone(),
            shards,
            priority: spec.priority,
            max_attempts: spec.max_attempts,
            backoff: spec.backoff,
            attempt_timeout_ms: spec.attempt_timeout_ms,
            labels: spec.labels.clone(),
            constraints: spec.constraints.clone(),
            not_before_ms: spec.not_before_ms,
            idempotency_key: spec.idempotency_key.clone(),
            spec_hash,
            created_ms,
            counts: Counts { pending: shards, ..Counts::default() },
            started: false,
            cancel_reason: None,
            finished_ms: None,
            origin: None,
            run_of: None,
            retention_ms: spec.retention_ms,
            paused: false,
            expires_ms: None,
            deleted: false,
            indexed_status: None,
            log_bytes: 0,
            payload_bytes: spec.payloads.iter().map(|p| p.len() as u64).sum(),
        }
    }

    pub fn status(&self) -> JobStatus {
        if self.cancel_reason.is_some() {
            JobStatus::Cancelled
        } else if self.counts.live() == 0 {
            // A shard cancelled on its own (CancelTask) did not succeed either.
            if self.counts.dead > 0 || self.counts.cancelled > 0 { JobStatus::Failed } else { JobStatus::Succeeded }
        } else if self.started {
            JobStatus::Running
        } else {
            JobStatus::Queued
        }
    }

    pub fn policy(&self) -> Policy {
        Policy { max_attempts: self.max_attempts, backoff: self.backoff, attempt_timeout_ms: self.attempt_timeout_ms }
    }
}

/// Why a session ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum EndReason {
    Expired,
    Deregistered,
    /// The same worker name registered again.
    Replaced,
}

/// A worker session's durable record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionRecord {
    pub id: SessionId,
    pub name: String,
    /// Incarnation of this worker name: 1 for its first session, then +1.
    pub epoch: u64,
    pub labels: BTreeMap<String, String>,
    pub capacity: u32,
    pub registered_ms: u64,
    pub ended: Option<(u64, EndReason)>,
    /// The namespaces whose tasks this session may receive (`None`: all);
    /// from its `RegisterWorker` entry.
    pub namespaces: Option<BTreeSet<String>>,
}

impl SessionRecord {
    /// Whether this session's labels satisfy a job's constraints.
    pub fn satisfies(&self, constraints: &BTreeMap<String, String>) -> bool {
        constraints.iter().all(|(k, v)| self.labels.get(k) == Some(v))
    }

    /// Whether this session may receive tasks of `namespace`.
    pub fn serves(&self, namespace: &str) -> bool {
        self.namespaces.as_ref().is_none_or(|ns| ns.contains(namespace))
    }

    /// Whether a task of `job` may go to this session: its constraints and its namespace.
    pub fn accepts(&self, job: &JobRecord) -> bool {
        self.satisfies(&job.constraints) && self.serves(&job.namespace)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const K: TaskKey = TaskKey { job: 1, shard: 0 };
    const P: Policy =
        Policy { max_attempts: 2, backoff: Backoff { base_ms: 100, max_ms: 1000 }, attempt_timeout_ms: 50 };

    fn granted(token: Token, now: u64) -> TaskRecord {
        let rec = TaskRecord::new(0, 0);
        transition(K, &rec, &Event::Grant { session: 7, worker: "w", token }, &P, now).unwrap().next
    }

    #[test]
    fn grant_complete_and_duplicate() {
        let rec = granted(10, 5);
        assert_eq!(rec.state, TaskState::Assigned { session: 7, token: 10, deadline_ms: 55 });
        assert_eq!(rec.attempts, 1);
        let done = transition(K, &rec, &Event::Complete { token: 10, result: b"r" }, &P, 6).unwrap();
        assert_eq!(done.effect, Effect::Changed);
        let again = transition(K, &done.next, &Event::Complete { token: 10, result: b"x" }, &P, 7).unwrap();
        assert_eq!(again.effect, Effect::Duplicate);
        assert_eq!(again.next, done.next);
    }

    #[test]
    fn stale_tokens_are_fenced() {
        let rec = granted(10, 5);
        for ev in [
            Event::Complete { token: 9, result: b"" },
            Event::Fail { token: 9, error: "e", retryable: true },
            Event::Progress { token: 9, progress_bp: 1, message: "" },
            Event::Timeout { token: 9 },
        ] {
            let err = transition(K, &rec, &ev, &P, 100).unwrap_err();
            assert!(err.is_fenced(), "{ev:?} -> {err}");
        }
    }

    #[test]
    fn failure_retries_with_backoff_then_dies() {
        let rec = granted(10, 5);
        let s = transition(K, &rec, &Event::Fail { token: 10, error: "boom", retryable: true }, &P, 20).unwrap();
        assert_eq!(s.next.state, TaskState::Pending { ready_at_ms: 120 });
        let err = transition(K, &s.next, &Event::Grant { session: 7, worker: "w", token: 11 }, &P, 119);
        assert!(matches!(err, Err(CommandError::NotReady { .. })));
        let rec = transition(K, &s.next, &Event::Grant { session: 7, worker: "w", token: 11 }, &P, 120).unwrap().next;
        let s = transition(K, &rec, &Event::Fail { token: 11, error: "boom", retryable: true }, &P, 130).unwrap();
        assert_eq!(s.next.state, TaskState::Dead);
        let dup = transition(K, &s.next, &Event::Fail { token: 11, error: "boom", retryable: true }, &P, 131).unwrap();
        assert_eq!(dup.effect, Effect::Duplicate);
    }

    #[test]
    fn timeout_respects_deadline() {
        let rec = granted(10, 5);
        assert!(matches!(
            transition(K, &rec, &Event::Timeout { token: 10 }, &P, 54),
            Err(CommandError::NotExpired { .. })
        ));
        let s = transition(K, &rec, &Event::Timeout { token: 10 }, &P, 55).unwrap();
        assert_eq!(s.next.state, TaskState::Pending { ready_at_ms: 155 });
    }

    #[test]
    fn terminal_states_are_final() {
        let rec = granted(10, 5);
        let done = transition(K, &rec, &Event::Complete { token: 10, result: b"" }, &P, 6).unwrap().next;
        assert!(transition(K, &done, &Event::Cancel, &P, 7).is_err());
        assert!(transition(K, &done, &Event::Grant { session: 1, worker: "w", token: 20 }, &P, 7).is_err());
        assert!(transition(K, &done, &Event::Release { session: 7, graceful: false }, &P, 7).is_err());
    }

    #[test]
    fn graceful_releases_do_not_use_up_attempts() {
        let p3 = Policy { max_attempts: 3, ..P };
        let mut rec = TaskRecord::new(0, 0);
        for token in [10, 11] {
            rec = transition(K, &rec, &Event::Grant { session: 7, worker: "w", token }, &p3, token).unwrap().next;
            assert_eq!(rec.attempts, 1, "the attempt number does not grow with graceful releases");
            rec = transition(K, &rec, &Event::Release { session: 7, graceful: true }, &p3, token).unwrap().next;
            assert_eq!(rec.state, TaskState::Pending { ready_at_ms: token });
        }
        rec = transition(K, &rec, &Event::Grant { session: 7, worker: "w", token: 12 }, &p3, 12).unwrap().next;
        assert_eq!(rec.attempts, 1);
        let s = transition(K, &rec, &Event::Fail { token: 12, error: "e", retryable: true }, &p3, 13).unwrap();
        assert!(matches!(s.next.state, TaskState::Pending { .. }), "{:?}", s.next.state);
    }

    #[test]
    fn failure_report_after_timeout_or_expiry_is_fenced() {
        let fail = Event::Fail { token: 10, error: "late", retryable: true };
        let timed_out = transition(K, &granted(10, 5), &Event::Timeout { token: 10 }, &P, 55).unwrap().next;
        assert!(transition(K, &timed_out, &fail, &P, 56).unwrap_err().is_fenced());
        let expired =
            transition(K, &granted(10, 5), &Event::Release { session: 7, graceful: false }, &P, 6).unwrap().next;
        assert!(transition(K, &expired, &fail, &P, 7).unwrap_err().is_fenced());
        let left = transition(K, &granted(10, 5), &Event::Release { session: 7, graceful: true }, &P, 6).unwrap().next;
        assert!(transition(K, &left, &fail, &P, 7).unwrap_err().is_fenced());
        // Out of attempts: Dead by timeout, still fenced.
        let mut last = granted(10, 5);
        last.attempts = P.max_attempts;
        let dead = transition(K, &last, &Event::Timeout { token: 10 }, &P, 55).unwrap().next;
        assert_eq!(dead.state, TaskState::Dead);
        assert!(transition(K, &dead, &fail, &P, 56).unwrap_err().is_fenced());
        // Ended by a failure report: the repeat is a duplicate.
        let failed = transition(K, &granted(10, 5), &fail, &P, 6).unwrap().next;
        assert_eq!(transition(K, &failed, &fail, &P, 7).unwrap().effect, Effect::Duplicate);
    }

    #[test]
    fn graceful_release_does_not_kill() {
        let mut rec = granted(10, 5);
        rec.attempts = P.max_attempts;
        let s = transition(K, &rec, &Event::Release { session: 7, graceful: true }, &P, 9).unwrap();
        assert_eq!(s.next.state, TaskState::Pending { ready_at_ms: 9 });
        let s = transition(K, &rec, &Event::Release { session: 7, graceful: false }, &P, 9).unwrap();
        assert_eq!(s.next.state, TaskState::Dead);
    }
}
