//! What apply() answers: the outcome of each command (with the grants,
//! revocations and releases the coordinator acts on) and the reply to an
//! entry.

use serde::{Deserialize, Serialize};

use crate::command::CommandError;
use crate::ids::{JobId, SessionId, TaskKey, Token, WorkflowId};
use crate::schedule::{RunTarget, ScheduleId, TriggerId};

/// A granted attempt.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Grant {
    pub task: TaskKey,
    pub session: SessionId,
    pub token: Token,
    /// 1-based attempt number.
    pub attempt: u32,
    pub deadline_ms: u64,
}

/// An attempt taken away from a worker (its job was cancelled); the coordinator
/// pushes a cancellation down that worker's stream.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Revoked {
    pub task: TaskKey,
    pub session: SessionId,
    pub token: Token,
}

/// Where released tasks went.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Released {
    /// Back to Pending, to run again.
    pub requeued: Vec<TaskKey>,
    /// Out of attempts: now Dead.
    pub dead: Vec<TaskKey>,
}

/// What a successful command did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Outcome {
    /// Blank and membership entries.
    Noop,
    Registered {
        session: SessionId,
        epoch: u64,
        replaced: Option<(SessionId, Released)>,
    },
    SessionEnded {
        session: SessionId,
        released: Released,
    },
    Submitted {
        job: JobId,
        shards: u32,
        duplicate: bool,
    },
    /// One result per requested assignment, in order.
    Assigned(Vec<Result<Grant, CommandError>>),
    /// `duplicate`: the same token had already completed the task (a retried report).
    Completed {
        task: TaskKey,
        job_finished: bool,
        duplicate: bool,
    },
    /// `retry_at_ms` is set when the task went back to Pending.
    Failed {
        task: TaskKey,
        retry_at_ms: Option<u64>,
        job_finished: bool,
        duplicate: bool,
    },
    Progressed {
        task: TaskKey,
    },
    /// One result per requested timeout, in order.
    TimedOut(Vec<Result<Released, CommandError>>),
    Cancelled {
        job: JobId,
        revoked: Vec<Revoked>,
        tasks_cancelled: u32,
    },
    WorkflowSubmitted {
        workflow: WorkflowId,
        steps: u32,
        duplicate: bool,
    },
    WorkflowCancelled {
        workflow: WorkflowId,
        /// Steps that were waiting, running or awaiting approval.
        steps_cancelled: u32,
        tasks_cancelled: u32,
    },
    GateResolved {
        workflow: WorkflowId,
        step: u32,
        approved: bool,
    },
    /// One result per requested gate, in order; `Ok(approved)`.
    GatesExpired(Vec<Result<bool, CommandError>>),
    /// The job is gone from reads; the collector deletes its records.
    JobDeleted {
        job: JobId,
    },
    /// `requeued` shards went back to Pending with a fresh attempt budget.
    JobRetried {
        job: JobId,
        requeued: u32,
    },
    TaskCancelled {
        task: TaskKey,
        /// The running attempt taken away, to push a cancellation to its worker.
        revoked: Option<Revoked>,
        job_finished: bool,
    },
    JobPaused {
        job: JobId,
        paused: bool,
    },
    NamespaceUpdated {
        namespace: String,
    },
    PrioritySet {
        job: JobId,
        priority: i32,
    },
    /// Lines kept, and lines refused by the job's bound (older lines pushed
    /// out of the attempt's ring are counted in its record, not here).
    LogsAppended {
        task: TaskKey,
        accepted: u32,
        refused: u32,
    },
    /// Keys deleted by this entry's collector run.
    Collected {
        keys_deleted: u32,
    },
    ScheduleCreated {
        schedule: ScheduleId,
        duplicate: bool,
        next_fire_ms: Option<u64>,
    },
    /// Updated, paused or resumed.
    ScheduleUpdated {
        schedule: ScheduleId,
        paused: bool,
        next_fire_ms: Option<u64>,
    },
    ScheduleDeleted {
        schedule: ScheduleId,
    },
    /// A Fire or RunSchedule: the run it started (if any), why it started
    /// none, how many fire times it passed over (misfires), and the next.
    Fired {
        schedule: ScheduleId,
        fire_ms: u64,
        run: Option<RunTarget>,
        skipped_reason: Option<String>,
        missed: u64,
        next_fire_ms: Option<u64>,
    },
    TriggerCreated {
        trigger: TriggerId,
        duplicate: bool,
    },
    TriggerDeleted {
        trigger: TriggerId,
    },
    /// The runs the event started, one per matching trigger that was not
    /// debounced (a refused run names why), and the event gates it opened.
    EventPublished {
        runs: Vec<EventRun>,
        debounced: u32,
        /// Event gates of workflows the event approved.
        gates_opened: u32,
        duplicate: bool,
    },
}

/// One trigger's answer to a published event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EventRun {
    pub trigger: TriggerId,
    /// The job or workflow it started.
    pub run: Option<RunTarget>,
    /// Why no job started (a limit, a payload too big for the template).
    pub refused: Option<String>,
}

/// The reply to one log entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Response {
    Done(Outcome),
    Rejected(CommandError),
    /// One reply per command of a Batch, in order.
    Batch(Vec<Response>),
}

impl Response {
    pub fn from_result(r: Result<Outcome, CommandError>) -> Self {
        match r {
            Ok(o) => Response::Done(o),
            Err(e) => Response::Rejected(e),
        }
    }

    pub fn into_result(self) -> Result<Outcome, CommandError> {
        match self {
            Response::Done(o) => Ok(o),
            Response::Rejected(e) => Err(e),
            Response::Batch(_) => Err(CommandError::Invalid {
                field: "response".into(),
                reason: "batch reply where a single reply was expected".into(),
            }),
        }
    }
}
