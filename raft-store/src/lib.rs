//! Baton's replicated task table: the openraft type configuration, the
//! commands and their deterministic `apply()`, and the RocksDB-backed log
//! store and state machine with streamed snapshots.
//!
//! Data flow inside this crate: openraft appends [`Proposal`]s through
//! [`LogStore`] (durable before the flush callback fires), then hands
//! committed entries to [`StateMachine::apply`], which runs [`Core`] and writes
//! the result in one RocksDB batch.
//!
//! What this crate never does:
//! - network IO: it is driven by openraft and the coordinator;
//! - read a clock inside apply(): time comes from `Proposal::proposed_at_ms`;
//! - change the task table anywhere but [`Core::apply_entry`];
//! - decode a corrupt record by guessing: open fails naming the key instead.

pub mod backup;
pub mod codec;
pub mod command;
pub mod core;
pub mod error;
pub mod ids;
pub mod indexes;
pub mod keys;
pub mod kv;
pub mod lifecycle;
pub mod limits;
pub mod log_store;
pub mod outcome;
pub mod quota;
pub mod recovery;
pub mod rocks;
pub mod schedule;
pub mod snapshot;
pub mod state_machine;
pub mod task;
pub mod types;
pub mod workflow;

pub use crate::core::{Core, Meta};
pub use backup::BackupHeader;
pub use command::{
    Assign, Backoff, Command, CommandError, EventRun, Grant, JobSpec, Outcome, Proposal, Released, Response, Revoked,
};
pub use error::StoreError;
pub use indexes::{Indexes, Interner, NameId, PendingTask};
pub use kv::{CountingKv, Kv, MemKv, state_hash};
pub use lifecycle::{
    ChunkEncoding, ChunkError, GcProgress, GcTarget, LogChunk, LogLevel, LogLine, LogLineRef, LogRecord,
    NamespaceRecord,
};
pub use log_store::{AppendedBytes, LogReader, LogStore};
pub use quota::{NamespaceQuota, NamespaceUsage, QuotaChange};
pub use schedule::{
    Cadence, EventSpec, Misfire, Overlap, RunEntry, RunOrigin, RunOutcome, RunTarget, ScheduleId, ScheduleRecord,
    ScheduleRule, ScheduleSpec, Template, TemplateKind, TemplateOwner, TriggerId, TriggerRecord, TriggerSpec,
};
pub use state_machine::{JobFilter, SnapshotBuilder, StateMachine, StoreReader, list_jobs_in, open_store};
pub use task::{Counts, EndReason, JobRecord, JobStatus, SessionRecord, TaskRecord, TaskState};
pub use types::*;
pub use workflow::{
    JobOrigin, StepInput, StepKind, StepRecord, StepRole, StepShape, StepSpec, StepState, TriggerRule, WorkflowRecord,
    WorkflowSpec, WorkflowStatus,
};
