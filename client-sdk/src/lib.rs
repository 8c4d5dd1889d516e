//! Baton's Rust SDK: how submitters and workers talk to a Baton cluster.
//!
//! - [`Client`]: submit jobs (always with an idempotency key), read, list,
//!   cancel and watch them; delete, retry, pause, resume and reprioritize
//!   them, cancel one shard, set namespace pause and retention
//!   ([`job_ops`]); and operate the cluster. It finds the leader,
//!   follows leader hints and retries with backoff within a deadline.
//! - [`Worker`]: runs a handler for every assigned shard, with the fencing
//!   token in its context; owns heartbeats, reconnects, result delivery,
//!   self-fencing and graceful shutdown.
//! - task logs: handlers log with [`TaskContext::log`] or `tracing` through
//!   [`TaskLogLayer`]; read them with [`Client::task_logs`] and
//!   [`Client::follow_task_logs`].
//! - [`schedule`]: build schedule specs (cron, fixed rate, fixed delay,
//!   once) for [`Client::create_schedule`]; publish events and manage
//!   triggers with [`Client::publish_event`] and [`Client::create_trigger`].
//! - [`workflow`]: build workflow specs (DAGs of jobs and gates) for
//!   [`Client::submit_workflow`], and the results a choice step or a dynamic
//!   map's generator returns.
//! - [`proto`]: the generated gRPC contract (`baton.v1`), the source of truth
//!   for every client language.
//!
//! This crate never knows Raft internals: it speaks only the public API, and
//! treats every node as interchangeable.

pub mod client;
pub mod error;
pub mod job_ops;
pub mod schedule;
mod schedules;
pub mod task_logs;
pub mod tls;
pub mod worker;
pub mod workflow;
mod workflows;

pub use client::{Client, ClientConfig};
pub use error::Error;
pub use job_ops::QuotaUpdate;
pub use schedule::ScheduleBuilder;
pub use task_logs::{LogEvent, TaskLogs};
pub use tls::TlsOptions;
pub use worker::{Handler, LogLevel, TaskContext, TaskError, TaskLogLayer, Worker, WorkerBuilder, WorkerStats};
pub use workflow::{Step, WorkflowBuilder};

/// Generated from `proto/baton/v1/baton.proto`.
#[allow(clippy::all, missing_docs)]
pub mod proto {
    tonic::include_proto!("baton.v1");

    /// Encoded `FileDescriptorSet` of the public API, for server reflection.
    pub const FILE_DESCRIPTOR_SET: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/baton_descriptor.bin"));
}
