//! Records of the lifecycle features: namespace settings (pause, retention),
//! task execution logs, and the garbage collector's queue and progress.
//! Pure data and pure rules; the apply handlers live in `core_lifecycle.rs`
//! and `core_gc.rs`.

use serde::{Deserialize, Serialize};

use crate::ids::{JobId, SessionId, TaskKey, Token, WorkflowId};

/// Per-namespace settings, stored under [`crate::keys::namespace`] and kept
/// in memory ([`crate::Indexes::namespaces`]). A namespace without a record
/// has the defaults: not paused, the default retention.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NamespaceRecord {
    /// No new attempt of this namespace's jobs is granted while set; running
    /// attempts continue.
    pub paused: bool,
    /// How long a finished job (or workflow) of this namespace is kept, when
    /// the job does not set its own. `None`: [`crate::limits::RETENTION_MS_DEFAULT`].
    pub retention_ms: Option<u64>,
}

/// Severity of a log line, as the SDK's logger and `tracing` bridge map it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub enum LogLevel {
    Trace,
    Debug,
    Info,
    Warn,
    Error,
}

impl LogLevel {
    pub fn name(self) -> &'static str {
        match self {
            LogLevel::Trace => "trace",
            LogLevel::Debug => "debug",
            LogLevel::Info => "info",
            LogLevel::Warn => "warn",
            LogLevel::Error => "error",
        }
    }
}

/// One line a handler logged. `at_ms` is the worker's clock: shown to
/// users, never used for a decision.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogLine {
    pub at_ms: u64,
    pub level: LogLevel,
    pub message: String,
}

/// The stored log of one attempt: a ring of its newest lines, at most
/// [`crate::limits::MAX_LOG_BYTES_PER_ATTEMPT`] of messages, plus how many
/// older lines were dropped to keep it there (or refused by the job's
/// [`crate::limits::MAX_LOG_BYTES_PER_JOB`]).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogRecord {
    /// The attempt's fencing token.
    pub token: Token,
    /// The attempt number (1-based) the handler saw.
    pub attempt: u32,
    pub lines: std::collections::VecDeque<LogLine>,
    /// Bytes charged for `lines`: each message plus
    /// [`crate::limits::LOG_LINE_OVERHEAD_BYTES`].
    pub bytes: u64,
    /// Lines dropped (oldest first, or refused at the job's bound).
    pub dropped: u64,
}

/// Something the garbage collector deletes once its time has come.
/// Ordered so that the in-memory queue `(at_ms, GcTarget)` is deterministic.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub enum GcTarget {
    /// A finished job: tasks, payloads, results, logs, index keys, record.
    Job(JobId),
    /// A finished workflow: its record; its step jobs are queued as `Job`s.
    Workflow(WorkflowId),
    /// An ended session, and its worker-name record if it is the name's latest.
    Session(SessionId),
}

/// Where the collector stopped inside a target that takes more than one
/// entry (a job with many shards or log records). Stored in [`crate::Meta`],
/// so every replica resumes at the same key whatever its restarts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GcProgress {
    pub target: GcTarget,
    /// Phase-specific cursor: the next shard to delete, then the last log
    /// key deleted (see `core_gc.rs`).
    pub next_shard: u32,
    pub last_log_key: Option<(TaskKey, u32)>,
}
