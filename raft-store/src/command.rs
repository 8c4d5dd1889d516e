//! Replicated commands, their replies, and the validation every command passes
//! before apply() lets it touch state.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use serde::{Deserialize, Serialize};

use crate::codec;
use crate::ids::{JobId, SessionId, TaskKey, Token, WorkflowId};
use crate::lifecycle::LogChunk;
use crate::limits::*;
use crate::quota::QuotaChange;
use crate::schedule::{EventSpec, ScheduleId, ScheduleSpec, TriggerId, TriggerSpec};
use crate::workflow::WorkflowSpec;

pub use crate::outcome::{EventRun, Grant, Outcome, Released, Response, Revoked};

/// The payload of every normal log entry: a command stamped by the leader.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Proposal {
    /// Leader's wall clock when it proposed the entry. The only time apply() reads.
    pub proposed_at_ms: u64,
    pub cmd: Command,
}

impl fmt::Display for Proposal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}@{}", self.cmd.kind(), self.proposed_at_ms)
    }
}

/// Retry backoff: `min(max_ms, base_ms * 2^(attempt-1))`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Backoff {
    pub base_ms: u64,
    pub max_ms: u64,
}

impl Default for Backoff {
    fn default() -> Self {
        Self { base_ms: BACKOFF_BASE_MS_DEFAULT, max_ms: BACKOFF_MAX_MS_DEFAULT }
    }
}

impl Backoff {
    /// Delay before attempt `attempts + 1`, after `attempts` attempts have failed.
    pub fn delay_ms(&self, attempts: u32) -> u64 {
        let exp = attempts.saturating_sub(1).min(40);
        self.base_ms.saturating_mul(1u64 << exp).min(self.max_ms)
    }
}

/// Everything a submitter says about a job.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobSpec {
    /// Tenant or team; fairness is computed across namespaces and jobs.
    pub namespace: String,
    /// Free-form human name.
    pub name: String,
    /// One payload per shard; the number of shards is `payloads.len()`.
    pub payloads: Vec<serde_bytes::ByteBuf>,
    /// Higher runs first.
    pub priority: i32,
    /// Attempts per shard before it is declared dead (>= 1).
    pub max_attempts: u32,
    pub backoff: Backoff,
    /// Per-attempt deadline, measured from the assigning entry's time.
    pub attempt_timeout_ms: u64,
    /// Descriptive labels, returned on reads.
    pub labels: BTreeMap<String, String>,
    /// Worker labels required to run this job's shards (all must match).
    pub constraints: BTreeMap<String, String>,
    /// No shard starts before this time (ms since the Unix epoch).
    pub not_before_ms: Option<u64>,
    /// Resubmitting with the same key within the dedup window returns the same job.
    pub idempotency_key: Option<String>,
    /// How long the job is kept once finished, then deleted with its tasks,
    /// results and logs. `None`: the namespace's retention, else
    /// [`RETENTION_MS_DEFAULT`]. A workflow's jobs follow the workflow's.
    pub retention_ms: Option<u64>,
}

impl JobSpec {
    /// A spec with defaults and `shards` empty payloads.
    pub fn with_shards(namespace: &str, shards: usize) -> Self {
        Self {
            namespace: namespace.to_string(),
            name: String::new(),
            payloads: vec![serde_bytes::ByteBuf::new(); shards],
            priority: 0,
            max_attempts: MAX_ATTEMPTS_DEFAULT,
            backoff: Backoff::default(),
            attempt_timeout_ms: ATTEMPT_TIMEOUT_MS_DEFAULT,
            labels: BTreeMap::new(),
            constraints: BTreeMap::new(),
            not_before_ms: None,
            idempotency_key: None,
            retention_ms: None,
        }
    }

    /// Stateless checks of a submission: sizes, ranges and shapes, and that
    /// the whole command fits in one log entry ([`MAX_ENTRY_BYTES`]; the
    /// per-shard length prefixes count too, so many small shards can exceed
    /// it while the payload bytes stay under [`MAX_JOB_PAYLOAD_BYTES`]).
    /// apply() runs it through [`Command::validate`]; the API edge calls it
    /// directly, without building a command.
    pub fn validate(&self) -> Result<(), CommandError> {
        let spec = self;
        check_name("namespace", &spec.namespace, false)?;
        check_name("name", &spec.name, true)?;
        check_count("payloads", spec.payloads.len(), 1, MAX_SHARDS_PER_JOB)?;
        let mut total = 0usize;
        for (i, p) in spec.payloads.iter().enumerate() {
            if p.len() > MAX_PAYLOAD_BYTES {
                return Err(invalid(
                    &format!("payloads[{i}]"),
                    format!("{} bytes exceeds the {MAX_PAYLOAD_BYTES}-byte shard limit", p.len()),
                ));
            }
            total += p.len();
        }
        check_bytes("payloads", total, MAX_JOB_PAYLOAD_BYTES)?;
        if spec.max_attempts == 0 || spec.max_attempts > MAX_ATTEMPTS_LIMIT {
            return Err(invalid("max_attempts", format!("must be 1..={MAX_ATTEMPTS_LIMIT}")));
        }
        if spec.attempt_timeout_ms == 0 || spec.attempt_timeout_ms > MAX_DURATION_MS {
            return Err(invalid("attempt_timeout_ms", format!("must be 1..={MAX_DURATION_MS}")));
        }
        if spec.backoff.base_ms > MAX_DURATION_MS || spec.backoff.max_ms > MAX_DURATION_MS {
            return Err(invalid("backoff", format!("must be at most {MAX_DURATION_MS} ms")));
        }
        if spec.backoff.base_ms > spec.backoff.max_ms {
            return Err(invalid("backoff", "base_ms must not exceed max_ms".into()));
        }
        check_labels("labels", &spec.labels)?;
        check_labels("constraints", &spec.constraints)?;
        if let Some(key) = &spec.idempotency_key {
            check_idempotency_key(key)?;
        }
        check_retention(spec.retention_ms)?;
        // Walks the spec without copying it. + the SubmitJob variant tag.
        let encoded = codec::encoded_len(spec).map_err(|e| invalid("spec", e.to_string()))? + COMMAND_TAG_BYTES;
        if encoded > MAX_ENTRY_BYTES {
            return Err(invalid(
                "payloads",
                format!(
                    "the job encodes to {encoded} bytes ({} shards), over the {MAX_ENTRY_BYTES}-byte entry limit",
                    spec.payloads.len()
                ),
            ));
        }
        Ok(())
    }

    /// Whether `not_before_ms` lies at most [`MAX_NOT_BEFORE_AHEAD_MS`] after
    /// `now_ms`. apply() checks it against the entry's time, so every replica
    /// agrees; the edge may check it earlier against the leader's clock.
    pub fn check_not_before(&self, now_ms: u64) -> Result<(), CommandError> {
        match self.not_before_ms {
            Some(t) if t > now_ms.saturating_add(MAX_NOT_BEFORE_AHEAD_MS) => Err(invalid(
                "not_before_ms",
                format!("{t} is more than {MAX_NOT_BEFORE_AHEAD_MS} ms after now ({now_ms})"),
            )),
            _ => Ok(()),
        }
    }
}

/// One assignment proposed by the scheduler.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Assign {
    pub task: TaskKey,
    pub session: SessionId,
}

/// Bytes the codec spends on a [`Command`]'s variant tag (fixed-int u32).
pub(crate) const COMMAND_TAG_BYTES: usize = 4;

/// A command to the replicated task table.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Command {
    /// Open a new session for a worker. A live session with the same name is
    /// expired first: a re-registering worker has restarted and lost its work.
    RegisterWorker {
        name: String,
        labels: BTreeMap<String, String>,
        capacity: u32,
        /// The namespaces whose tasks the session may receive, from the
        /// worker's credential; `None`: every namespace (no authentication,
        /// or a credential granted `worker:*`). In the entry, so plan() and
        /// apply() agree on every node.
        namespaces: Option<BTreeSet<String>>,
    },
    /// Graceful goodbye: the session ends and its tasks are released at once.
    DeregisterWorker {
        session: SessionId,
        epoch: u64,
    },
    /// The leader saw no heartbeat for the TTL: end the session, release its tasks.
    ExpireWorker {
        session: SessionId,
        epoch: u64,
    },
    SubmitJob(JobSpec),
    /// Grant attempts. Each grant's token is this entry's log index.
    AssignTasks {
        assignments: Vec<Assign>,
    },
    /// `logs`: the attempt's last lines (at most [`MAX_REPORT_LOG_BYTES`]),
    /// stored only if the report is (a duplicate or fenced report stores
    /// nothing).
    CompleteTask {
        task: TaskKey,
        token: Token,
        result: serde_bytes::ByteBuf,
        logs: LogChunk,
    },
    FailTask {
        task: TaskKey,
        token: Token,
        error: String,
        retryable: bool,
        logs: LogChunk,
    },
    /// Progress in basis points (0..=10000) plus a short message.
    ReportProgress {
        task: TaskKey,
        token: Token,
        progress_bp: u32,
        message: String,
    },
    /// Attempts whose deadline has passed, by (task, token).
    TimeoutAttempts {
        attempts: Vec<(TaskKey, Token)>,
    },
    CancelJob {
        job: JobId,
        reason: String,
    },
    /// Start a workflow: its steps without predecessors start in this entry.
    SubmitWorkflow(WorkflowSpec),
    /// Cancel every running and waiting step (running jobs through the job
    /// cancel path).
    CancelWorkflow {
        workflow: WorkflowId,
        reason: String,
    },
    /// Decide a gate awaiting approval. `by` is who decided, kept as the
    /// step's reason.
    ResolveGate {
        workflow: WorkflowId,
        step: String,
        approve: bool,
        by: String,
    },
    /// Gates whose timeout has passed, by (workflow, step index); proposed
    /// by the leader, checked against the entry's time.
    ExpireGates {
        gates: Vec<(WorkflowId, u32)>,
    },
    /// Delete a finished job now instead of at the end of its retention. It
    /// disappears from reads at once; its records go through the collector,
    /// a bounded number per entry. A workflow's job goes with its workflow.
    DeleteJob {
        job: JobId,
    },
    /// Run the dead and cancelled shards of a job again, each with a fresh
    /// attempt budget; a finished job becomes live again. Tokens keep
    /// growing, so a late report from an old attempt is still fenced.
    RetryJob {
        job: JobId,
    },
    /// Cancel one unfinished shard; its running attempt is told to stop. A
    /// job that finishes with a cancelled shard is Failed (not every shard
    /// succeeded), unless the whole job was cancelled.
    CancelTask {
        task: TaskKey,
        reason: String,
    },
    /// Pause (no new attempt is granted; running attempts continue) or resume a job.
    PauseJob {
        job: JobId,
        paused: bool,
    },
    /// Pause or resume every job of a namespace, present and future.
    PauseNamespace {
        namespace: String,
        paused: bool,
    },
    /// Retention of the namespace's jobs and workflows that finish from now
    /// on; `None` goes back to [`RETENTION_MS_DEFAULT`].
    SetNamespaceRetention {
        namespace: String,
        retention_ms: Option<u64>,
    },
    /// How long the namespace's idempotency keys written from now on are
    /// remembered (records already written keep their expiry); `None` goes
    /// back to [`IDEMPOTENCY_WINDOW_MS_DEFAULT`].
    SetNamespaceIdempotencyWindow {
        namespace: String,
        window_ms: Option<u64>,
    },
    /// Set or clear the namespace's quotas (see [`crate::quota`]). Applies
    /// to submits from now on; what already runs is not touched.
    SetNamespaceQuota {
        namespace: String,
        change: QuotaChange,
    },
    /// Change the priority of a live job's shards not yet granted.
    SetPriority {
        job: JobId,
        priority: i32,
    },
    /// Lines a handler logged during the attempt of `token`. Accepted from
    /// the task's latest attempt only (running or ended, so a flush after the
    /// report is kept); an older attempt's lines are fenced.
    AppendLogs {
        task: TaskKey,
        token: Token,
        lines: LogChunk,
    },
    /// Proposed by the leader when retention has work due and no other entry
    /// is carrying it: every entry runs the collector's budget, this one
    /// exists for idle clusters.
    CollectGarbage,
    /// Create a schedule. The same (namespace, name) with the same spec
    /// returns the first schedule; with another spec it is refused.
    /// Boxed, like every spec of a rare command, so `Command` stays the
    /// size of a job submit (batches hold thousands of commands).
    CreateSchedule(Box<ScheduleSpec>),
    /// Replace a schedule's spec (same namespace and name); its next fire
    /// time is computed afresh from the entry's time. Live runs go on.
    UpdateSchedule {
        schedule: ScheduleId,
        spec: Box<ScheduleSpec>,
    },
    /// Stop or restart firing. Fire times passed while paused are misfires.
    PauseSchedule {
        schedule: ScheduleId,
        paused: bool,
    },
    /// Forget a schedule; its live runs go on as plain jobs or workflows.
    DeleteSchedule {
        schedule: ScheduleId,
    },
    /// Start a run now, as if a fire were due (the overlap policy applies).
    RunSchedule {
        schedule: ScheduleId,
    },
    /// Proposed by the leader when a schedule's next fire time is due.
    /// apply() accepts only the schedule's current next fire time, so a
    /// repeated or stale proposal starts nothing: one run per fire time.
    Fire {
        schedule: ScheduleId,
        fire_ms: u64,
    },
    /// Create an event trigger (idempotent on (namespace, name) like a schedule).
    CreateTrigger(Box<TriggerSpec>),
    DeleteTrigger {
        trigger: TriggerId,
    },
    /// Publish an event: every matching trigger starts its run in this
    /// entry. Idempotent on (namespace, event_id).
    PublishEvent(EventSpec),
    /// Independent commands grouped into one entry to amortize the fsync.
    /// Each succeeds or fails on its own; there is no cross-command atomicity.
    Batch(Vec<Command>),
}

impl Command {
    /// Commands of work this carries, for the share of background work its
    /// entry may do (collection, pruning): a batch counts its members, and
    /// `CollectGarbage`, which is that work, counts nothing.
    pub fn work_count(&self) -> usize {
        match self {
            Command::Batch(cmds) => cmds.iter().map(Command::work_count).sum(),
            Command::CollectGarbage => 0,
            _ => 1,
        }
    }

    pub fn kind(&self) -> &'static str {
        match self {
            Command::RegisterWorker { .. } => "register_worker",
            Command::DeregisterWorker { .. } => "deregister_worker",
            Command::ExpireWorker { .. } => "expire_worker",
            Command::SubmitJob(_) => "submit_job",
            Command::AssignTasks { .. } => "assign_tasks",
            Command::CompleteTask { .. } => "complete_task",
            Command::FailTask { .. } => "fail_task",
            Command::ReportProgress { .. } => "report_progress",
            Command::TimeoutAttempts { .. } => "timeout_attempts",
            Command::CancelJob { .. } => "cancel_job",
            Command::SubmitWorkflow(_) => "submit_workflow",
            Command::CancelWorkflow { .. } => "cancel_workflow",
            Command::ResolveGate { .. } => "resolve_gate",
            Command::ExpireGates { .. } => "expire_gates",
            Command::DeleteJob { .. } => "delete_job",
            Command::RetryJob { .. } => "retry_job",
            Command::CancelTask { .. } => "cancel_task",
            Command::PauseJob { .. } => "pause_job",
            Command::PauseNamespace { .. } => "pause_namespace",
            Command::SetNamespaceRetention { .. } => "set_namespace_retention",
            Command::SetNamespaceIdempotencyWindow { .. } => "set_namespace_idempotency_window",
            Command::SetNamespaceQuota { .. } => "set_namespace_quota",
            Command::SetPriority { .. } => "set_priority",
            Command::AppendLogs { .. } => "append_logs",
            Command::CollectGarbage => "collect_garbage",
            Command::CreateSchedule(_) => "create_schedule",
            Command::UpdateSchedule { .. } => "update_schedule",
            Command::PauseSchedule { .. } => "pause_schedule",
            Command::DeleteSchedule { .. } => "delete_schedule",
            Command::RunSchedule { .. } => "run_schedule",
            Command::Fire { .. } => "fire",
            Command::CreateTrigger(_) => "create_trigger",
            Command::DeleteTrigger { .. } => "delete_trigger",
            Command::PublishEvent(_) => "publish_event",
            Command::Batch(_) => "batch",
        }
    }

    /// Size of the command as stored in a log entry (without the proposal's
    /// timestamp), computed without copying it.
    pub fn encoded_len(&self) -> Result<usize, codec::CodecError> {
        codec::encoded_len(self)
    }

    /// Stateless checks: sizes, ranges and shapes. apply() calls this first,
    /// so a malformed command is rejected before it can touch state; the
    /// coordinator calls it at the API edge to answer early.
    ///
    /// Only a SubmitJob can exceed [`MAX_ENTRY_BYTES`] within its field
    /// limits, so only it measures its encoded size (a test checks that every
    /// other kind fits at its limits). A Batch is bounded by its builder.
    pub fn validate(&self) -> Result<(), CommandError> {
        match self {
            Command::RegisterWorker { name, labels, capacity, namespaces } => {
                check_name("name", name, false)?;
                check_labels("labels", labels)?;
                if let Some(ns) = namespaces {
                    if ns.is_empty() || ns.len() > MAX_WORKER_NAMESPACES {
                        return Err(invalid("namespaces", format!("must name 1..={MAX_WORKER_NAMESPACES} namespaces")));
                    }
                    for n in ns {
                        check_name("namespaces", n, false)?;
                    }
                }
                if *capacity == 0 || *capacity > MAX_WORKER_CAPACITY {
                    return Err(invalid("capacity", format!("must be 1..={MAX_WORKER_CAPACITY}")));
                }
                Ok(())
            }
            Command::DeregisterWorker { .. } | Command::ExpireWorker { .. } => Ok(()),
            Command::SubmitJob(spec) => spec.validate(),
            Command::AssignTasks { assignments } => {
                check_count("assignments", assignments.len(), 1, MAX_ITEMS_PER_COMMAND)
            }
            Command::CompleteTask { result, logs, .. } => {
                check_bytes("result", result.len(), MAX_RESULT_BYTES)?;
                check_report_logs(logs)
            }
            Command::FailTask { error, logs, .. } => {
                check_bytes("error", error.len(), MAX_ERROR_BYTES)?;
                check_report_logs(logs)
            }
            Command::ReportProgress { progress_bp, message, .. } => {
                if *progress_bp > 10_000 {
                    return Err(invalid("progress_bp", "must be 0..=10000".into()));
                }
                check_bytes("message", message.len(), MAX_PROGRESS_MESSAGE_BYTES)
            }
            Command::TimeoutAttempts { attempts } => check_count("attempts", attempts.len(), 1, MAX_ITEMS_PER_COMMAND),
            Command::CancelJob { reason, .. } => check_bytes("reason", reason.len(), MAX_ERROR_BYTES),
            Command::SubmitWorkflow(spec) => spec.validate().map(|_| ()),
            Command::CancelWorkflow { reason, .. } => check_bytes("reason", reason.len(), MAX_ERROR_BYTES),
            Command::ResolveGate { step, by, .. } => {
                check_name("step", step, false)?;
                check_bytes("by", by.len(), MAX_ERROR_BYTES)
            }
            Command::ExpireGates { gates } => check_count("gates", gates.len(), 1, MAX_ITEMS_PER_COMMAND),
            Command::DeleteJob { .. }
            | Command::RetryJob { .. }
            | Command::PauseJob { .. }
            | Command::SetPriority { .. }
            | Command::CollectGarbage => Ok(()),
            Command::CancelTask { reason, .. } => check_bytes("reason", reason.len(), MAX_ERROR_BYTES),
            Command::PauseNamespace { namespace, .. } => check_name("namespace", namespace, false),
            Command::SetNamespaceRetention { namespace, retention_ms } => {
                check_name("namespace", namespace, false)?;
                check_retention(*retention_ms)
            }
            Command::SetNamespaceIdempotencyWindow { namespace, window_ms } => {
                check_name("namespace", namespace, false)?;
                check_idempotency_window(*window_ms)
            }
            Command::SetNamespaceQuota { namespace, change } => {
                check_name("namespace", namespace, false)?;
                change.validate()
            }
            Command::AppendLogs { lines, .. } => {
                check_count("lines", lines.len() as usize, 1, MAX_LOG_LINES_PER_COMMAND)?;
                check_chunk("lines", lines)
            }
            Command::CreateSchedule(spec) | Command::UpdateSchedule { spec, .. } => spec.validate(),
            Command::PauseSchedule { .. }
            | Command::DeleteSchedule { .. }
            | Command::RunSchedule { .. }
            | Command::Fire { .. }
            | Command::DeleteTrigger { .. } => Ok(()),
            Command::CreateTrigger(spec) => spec.validate(),
            Command::PublishEvent(ev) => ev.validate(),
            Command::Batch(cmds) => {
                check_count("batch", cmds.len(), 1, MAX_BATCH_COMMANDS)?;
                if cmds.iter().any(|c| matches!(c, Command::Batch(_))) {
                    return Err(invalid("batch", "batches do not nest".into()));
                }
                // Inner commands are validated one by one at apply, so one bad
                // command fails alone instead of failing its neighbours.
                Ok(())
            }
        }
    }
}

pub(crate) fn invalid(field: &str, reason: String) -> CommandError {
    CommandError::Invalid { field: field.to_string(), reason }
}

pub(crate) fn check_count(field: &str, n: usize, min: usize, max: usize) -> Result<(), CommandError> {
    if n < min || n > max {
        return Err(invalid(field, format!("has {n} items; must be {min}..={max}")));
    }
    Ok(())
}

/// A chunk that decodes, within the per-command line bounds.
pub(crate) fn check_chunk(field: &str, c: &LogChunk) -> Result<(), CommandError> {
    c.validate().map_err(|e| invalid(field, e.to_string()))
}

/// The lines a report carries: a valid chunk of at most
/// [`MAX_REPORT_LOG_BYTES`] of messages.
fn check_report_logs(c: &LogChunk) -> Result<(), CommandError> {
    // Validated first: a malformed chunk's sizes mean nothing.
    check_chunk("logs", c)?;
    check_bytes("logs", c.message_bytes(), MAX_REPORT_LOG_BYTES)
}

pub(crate) fn check_bytes(field: &str, n: usize, max: usize) -> Result<(), CommandError> {
    if n > max {
        return Err(invalid(field, format!("{n} bytes exceeds the {max}-byte limit")));
    }
    Ok(())
}

pub(crate) fn check_name(field: &str, s: &str, allow_empty: bool) -> Result<(), CommandError> {
    if !allow_empty && s.is_empty() {
        return Err(invalid(field, "must not be empty".into()));
    }
    check_bytes(field, s.len(), MAX_NAME_BYTES)?;
    if s.chars().any(|c| c.is_control()) {
        return Err(invalid(field, "must not contain control characters".into()));
    }
    Ok(())
}

/// Idempotency keys share one table between jobs and workflows; workflow keys
/// are stored behind a control character no user key may contain.
pub(crate) fn check_idempotency_key(key: &str) -> Result<(), CommandError> {
    if key.is_empty() {
        return Err(invalid("idempotency_key", "must not be empty when given".into()));
    }
    check_bytes("idempotency_key", key.len(), MAX_IDEMPOTENCY_KEY_BYTES)?;
    if key.chars().any(|c| c.is_control()) {
        return Err(invalid("idempotency_key", "must not contain control characters".into()));
    }
    Ok(())
}

pub(crate) fn check_retention(retention_ms: Option<u64>) -> Result<(), CommandError> {
    match retention_ms {
        Some(ms) if ms > MAX_RETENTION_MS => {
            Err(invalid("retention_ms", format!("{ms} ms exceeds the {MAX_RETENTION_MS}-ms limit")))
        }
        _ => Ok(()),
    }
}

fn check_idempotency_window(window_ms: Option<u64>) -> Result<(), CommandError> {
    match window_ms {
        Some(ms) if ms < IDEMPOTENCY_WINDOW_MS_MIN => Err(invalid(
            "idempotency_window_ms",
            format!("{ms} ms is below the {IDEMPOTENCY_WINDOW_MS_MIN}-ms minimum"),
        )),
        Some(ms) if ms > IDEMPOTENCY_WINDOW_MS_MAX => {
            Err(invalid("idempotency_window_ms", format!("{ms} ms exceeds the {IDEMPOTENCY_WINDOW_MS_MAX}-ms limit")))
        }
        _ => Ok(()),
    }
}

pub(crate) fn check_labels(field: &str, labels: &BTreeMap<String, String>) -> Result<(), CommandError> {
    check_count(field, labels.len(), 0, MAX_LABELS)?;
    for (k, v) in labels {
        check_name(&format!("{field}.key"), k, false)?;
        check_name(&format!("{field}[{k}]"), v, true)?;
    }
    Ok(())
}

/// Why apply() refused a command. The state is unchanged whenever this is returned.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum CommandError {
    #[error("invalid {field}: {reason}")]
    Invalid { field: String, reason: String },
    #[error("job {0} not found")]
    JobNotFound(JobId),
    #[error("task {0} not found")]
    TaskNotFound(TaskKey),
    #[error("session {0} not found")]
    SessionNotFound(SessionId),
    #[error("session {session} has ended")]
    SessionEnded { session: SessionId },
    #[error("session {session} is at epoch {current}, not {presented}")]
    StaleEpoch { session: SessionId, presented: u64, current: u64 },
    /// The attempt this token belongs to is no longer current. Nothing changed.
    #[error("fenced: task {task} token {presented} is not the current attempt (latest {latest})")]
    Fenced { task: TaskKey, presented: Token, latest: Token },
    #[error("task {task} is {state}, not pending")]
    NotPending { task: TaskKey, state: String },
    #[error("task {task} is not ready before {ready_at_ms}")]
    NotReady { task: TaskKey, ready_at_ms: u64 },
    #[error("session {session} is at its capacity of {capacity}")]
    AtCapacity { session: SessionId, capacity: u32 },
    #[error("session {session} does not satisfy the constraints of job {job}")]
    ConstraintMismatch { session: SessionId, job: JobId },
    #[error("task {task} was already granted in this entry")]
    AlreadyGrantedInEntry { task: TaskKey },
    #[error("attempt {token} of task {task} has not reached its deadline {deadline_ms}")]
    NotExpired { task: TaskKey, token: Token, deadline_ms: u64 },
    #[error("job {job} has already finished")]
    JobFinished { job: JobId },
    #[error("idempotency key {key:?} was used for job {job} with a different spec")]
    IdempotencyConflict { key: String, job: JobId },
    #[error("limit reached: {what} (at most {limit})")]
    LimitReached { what: String, limit: u64 },
    /// A submit (or retry) that would take its namespace over a quota
    /// (`quota` is one of [`crate::quota::names`]). Nothing changed.
    #[error("namespace {namespace:?} is over its {quota} quota: {used} used + {requested} requested > {limit}")]
    QuotaExceeded { namespace: String, quota: String, limit: u64, used: u64, requested: u64 },
    #[error("workflow {0} not found")]
    WorkflowNotFound(WorkflowId),
    #[error("workflow {workflow} has already finished")]
    WorkflowFinished { workflow: WorkflowId },
    #[error("workflow {workflow} has no step {step:?}")]
    StepNotFound { workflow: WorkflowId, step: String },
    /// ResolveGate on a step that is not a gate awaiting approval, or
    /// ExpireGates before the gate's deadline.
    #[error("step {step:?} of workflow {workflow} is {state}, not a gate awaiting approval")]
    GateNotWaiting { workflow: WorkflowId, step: String, state: String },
    /// DeleteJob on a job that still has pending or running shards.
    #[error("job {job} has not finished; cancel it first")]
    JobNotFinished { job: JobId },
    /// RetryJob on a job with no dead or cancelled shard.
    #[error("job {job} has no dead or cancelled shard to retry")]
    NothingToRetry { job: JobId },
    /// A job operation that belongs to the job's workflow (delete, retry).
    #[error(
        "job {job} is step {step:?} of workflow {workflow}: it is deleted with its workflow and cannot be retried alone"
    )]
    JobInWorkflow { job: JobId, workflow: WorkflowId, step: String },
    /// AssignTasks to a paused job, or to a job of a paused namespace
    /// (`namespace` is then set): the scheduler's plan raced the pause.
    #[error("job {job} is paused{}", namespace.as_ref().map(|n| format!(" (namespace {n:?} is paused)")).unwrap_or_default())]
    JobPaused { job: JobId, namespace: Option<String> },
    #[error("schedule {0} not found")]
    ScheduleNotFound(ScheduleId),
    #[error("trigger {0} not found")]
    TriggerNotFound(TriggerId),
    /// A Fire for a time that is not the schedule's next, not due yet, or of
    /// a paused schedule: a repeated or stale proposal. Nothing changed.
    #[error("schedule {schedule} has no fire due at {fire_ms} (next {next_fire_ms:?}, paused {paused})")]
    FireNotDue { schedule: ScheduleId, fire_ms: u64, next_fire_ms: Option<u64>, paused: bool },
    /// Create with a (namespace, name) another spec holds, or an update
    /// that would rename.
    #[error("{what} {name:?} already exists in namespace {namespace:?} (id {id}) with another spec")]
    NameTaken { what: String, namespace: String, name: String, id: u64 },
}

impl CommandError {
    pub fn is_fenced(&self) -> bool {
        matches!(self, CommandError::Fenced { .. })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_and_caps() {
        let b = Backoff { base_ms: 100, max_ms: 1000 };
        assert_eq!(b.delay_ms(1), 100);
        assert_eq!(b.delay_ms(2), 200);
        assert_eq!(b.delay_ms(4), 800);
        assert_eq!(b.delay_ms(5), 1000);
        assert_eq!(b.delay_ms(u32::MAX), 1000);
    }

    fn labels_at_limit(tag: char) -> BTreeMap<String, String> {
        (0..MAX_LABELS).map(|i| (format!("{tag}{i:0>127}"), "v".repeat(MAX_NAME_BYTES))).collect()
    }

    fn chunk_of(lines: usize, len: usize) -> LogChunk {
        let mut c = LogChunk::default();
        for _ in 0..lines {
            c.push(u64::MAX, crate::lifecycle::LogLevel::Error, &"m".repeat(len)).unwrap();
        }
        c
    }

    /// The most lines a report may carry: short ones (the header weighs
    /// most), up to [`MAX_REPORT_LOG_BYTES`] of messages.
    fn report_logs_at_limit() -> LogChunk {
        let per_line = MAX_REPORT_LOG_BYTES / MAX_LOG_LINES_PER_COMMAND;
        chunk_of(MAX_LOG_LINES_PER_COMMAND, per_line)
    }

    #[test]
    fn a_report_carries_at_most_its_log_bytes_and_a_valid_chunk() {
        let task = TaskKey::new(1, 0);
        let complete = |logs| Command::CompleteTask { task, token: 1, result: Default::default(), logs };
        complete(report_logs_at_limit()).validate().unwrap();
        // 9 lines of 4 KiB: 36 KiB of messages.
        let over = chunk_of(9, MAX_LOG_LINE_BYTES);
        let e = complete(over.clone()).validate().unwrap_err().to_string();
        assert!(e.contains("logs") && e.contains(&MAX_REPORT_LOG_BYTES.to_string()), "{e}");
        let fail = Command::FailTask { task, token: 1, error: String::new(), retryable: true, logs: over };
        assert!(fail.validate().unwrap_err().to_string().contains("logs"));
        let empty = Command::AppendLogs { task, token: 1, lines: LogChunk::default() };
        assert!(empty.validate().unwrap_err().to_string().contains("lines"));
    }

    #[test]
    fn every_command_but_submit_fits_one_entry_at_its_field_limits() {
        let task = TaskKey::new(u64::MAX, u32::MAX);
        let biggest = [
            Command::RegisterWorker {
                name: "w".repeat(MAX_NAME_BYTES),
                labels: labels_at_limit('k'),
                capacity: 1,
                namespaces: Some(
                    (0..MAX_WORKER_NAMESPACES).map(|i| format!("{i:0>width$}", width = MAX_NAME_BYTES)).collect(),
                ),
            },
            Command::DeregisterWorker { session: 1, epoch: 1 },
            Command::AssignTasks { assignments: vec![Assign { task, session: 1 }; MAX_ITEMS_PER_COMMAND] },
            Command::CompleteTask {
                task,
                token: 1,
                result: serde_bytes::ByteBuf::from(vec![7u8; MAX_RESULT_BYTES]),
                logs: report_logs_at_limit(),
            },
            Command::FailTask {
                task,
                token: 1,
                error: "e".repeat(MAX_ERROR_BYTES),
                retryable: true,
                logs: report_logs_at_limit(),
            },
            Command::ReportProgress { task, token: 1, progress_bp: 1, message: "m".repeat(MAX_PROGRESS_MESSAGE_BYTES) },
            Command::TimeoutAttempts { attempts: vec![(task, 1); MAX_ITEMS_PER_COMMAND] },
            Command::CancelJob { job: 1, reason: "r".repeat(MAX_ERROR_BYTES) },
            Command::DeleteJob { job: u64::MAX },
            Command::RetryJob { job: u64::MAX },
            Command::CancelTask { task, reason: "r".repeat(MAX_ERROR_BYTES) },
            Command::PauseJob { job: u64::MAX, paused: true },
            Command::PauseNamespace { namespace: "n".repeat(MAX_NAME_BYTES), paused: true },
            Command::SetNamespaceRetention {
                namespace: "n".repeat(MAX_NAME_BYTES),
                retention_ms: Some(MAX_RETENTION_MS),
            },
            Command::SetNamespaceIdempotencyWindow {
                namespace: "n".repeat(MAX_NAME_BYTES),
                window_ms: Some(IDEMPOTENCY_WINDOW_MS_MAX),
            },
            Command::SetNamespaceQuota {
                namespace: "n".repeat(MAX_NAME_BYTES),
                change: QuotaChange {
                    live_tasks: Some(crate::quota::MAX_QUOTA_LIVE_TASKS),
                    payload_bytes: Some(crate::quota::MAX_QUOTA_PAYLOAD_BYTES),
                    submits_per_sec: Some(crate::quota::MAX_QUOTA_SUBMITS_PER_SEC),
                    clear: true,
                },
            },
            Command::SetPriority { job: u64::MAX, priority: i32::MIN },
            Command::AppendLogs {
                task,
                token: u64::MAX,
                lines: chunk_of(MAX_LOG_LINES_PER_COMMAND, MAX_LOG_LINE_BYTES),
            },
            Command::CollectGarbage,
        ];
        for cmd in biggest {
            cmd.validate().unwrap_or_else(|e| panic!("{}: {e}", cmd.kind()));
            let p = Proposal { proposed_at_ms: u64::MAX, cmd };
            let n = codec::encoded_len(&p).unwrap();
            assert!(n <= MAX_ENTRY_BYTES, "{}: {n} bytes", p.cmd.kind());
        }
    }

    #[test]
    fn a_job_is_measured_as_the_entry_it_becomes() {
        let mut spec = JobSpec::with_shards("ns", 3);
        spec.labels = labels_at_limit('l');
        let direct = codec::encoded_len(&spec).unwrap() + COMMAND_TAG_BYTES;
        assert_eq!(Command::SubmitJob(spec).encoded_len().unwrap(), direct);

        // The most shards, and one shard of the largest payload, each fit.
        JobSpec::with_shards("ns", MAX_SHARDS_PER_JOB).validate().unwrap();
        let mut one = JobSpec::with_shards("ns", 1);
        one.payloads[0] = serde_bytes::ByteBuf::from(vec![0u8; MAX_JOB_PAYLOAD_BYTES]);
        one.labels = labels_at_limit('l');
        one.constraints = labels_at_limit('c');
        one.validate().unwrap();
        // Payload bytes under their limit, but with 100k length prefixes the
        // entry would not fit.
        let mut many = JobSpec::with_shards("ns", MAX_SHARDS_PER_JOB);
        many.payloads.iter_mut().for_each(|p| *p = serde_bytes::ByteBuf::from(vec![1u8; 10]));
        let err = Command::SubmitJob(many).validate().unwrap_err();
        assert!(matches!(err, CommandError::Invalid { ref field, .. } if field == "payloads"), "{err}");
    }

    /// Batches hold thousands of commands: rare commands box their specs so
    /// that a command is no bigger than a job submit.
    #[test]
    fn a_command_is_no_bigger_than_a_job_submit() {
        let size = std::mem::size_of::<Command>();
        assert!(size <= std::mem::size_of::<JobSpec>() + 8, "Command is {size} bytes");
    }

    #[test]
    fn validation_names_the_field() {
        let mut spec = JobSpec::with_shards("ns", 0);
        let err = Command::SubmitJob(spec.clone()).validate().unwrap_err();
        assert!(matches!(err, CommandError::Invalid { ref field, .. } if field == "payloads"), "{err}");
        spec.payloads = vec![serde_bytes::ByteBuf::from(vec![0u8; MAX_PAYLOAD_BYTES + 1])];
        let err = Command::SubmitJob(spec.clone()).validate().unwrap_err();
        assert!(matches!(err, CommandError::Invalid { ref field, .. } if field == "payloads[0]"));
        let mut spec = JobSpec::with_shards("", 1);
        assert!(matches!(Command::SubmitJob(spec.clone()).validate(),
            Err(CommandError::Invalid { ref field, .. }) if field == "namespace"));
        spec.namespace = "ns".into();
        spec.max_attempts = 0;
        assert!(matches!(Command::SubmitJob(spec.clone()).validate(),
            Err(CommandError::Invalid { ref field, .. }) if field == "max_attempts"));
        spec.max_attempts = 1;
        spec.backoff = Backoff { base_ms: 10, max_ms: 5 };
        assert!(matches!(Command::SubmitJob(spec).validate(),
            Err(CommandError::Invalid { ref field, .. }) if field == "backoff"));
        let reg = Command::RegisterWorker { name: "w".into(), labels: BTreeMap::new(), capacity: 0, namespaces: None };
        assert!(matches!(reg.validate(), Err(CommandError::Invalid { ref field, .. }) if field == "capacity"));
        assert!(Command::Batch(vec![Command::Batch(vec![])]).validate().is_err());
        assert!(Command::Batch(vec![]).validate().is_err());
    }
}
