//! The `Worker` runtime: runs a handler for every shard the cluster assigns.
//!
//! The worker owns one session stream at a time. It registers (or resumes its
//! session after a failover), heartbeats, follows the leader, and delivers
//! every finished result with the attempt's own token until the cluster
//! acknowledges it. A `FENCED` answer means another attempt owns the shard: it
//! is logged and dropped.
//!
//! # Design: a pure session core, an IO runtime
//!
//! - `session`: the sans-IO core. `Session::step(event, now_ms)` takes one
//!   event (a message, a stream failure, a handler's result, a tick) on a
//!   monotonic millisecond clock that the caller supplies, and returns the
//!   actions to perform (open a stream, send, start, cancel or abort a
//!   handler). `Session::next_wakeup_ms()` names the instant of its next
//!   timer. Every decision is made there and unit-tested on a virtual clock
//!   (`session_tests.rs`).
//! - `runtime`: the tokio loop. It performs actions and turns IO into events;
//!   every await (connecting, opening a session, reading) is raced against the
//!   core's next wakeup, so no timer is ever late because a node is silent.
//!
//! # Guarantees
//!
//! **Self-fencing before the cluster can reassign.** The cluster renews a
//! session's lease when its leader processes a heartbeat, which is after the
//! worker sent it; so the cluster cannot expire the session before
//! `sent_at(last acknowledged heartbeat) + ttl`. At that instant minus a
//! margin (timer lateness, clock-rate drift), every running handler's
//! cancellation token fires and its result is never reported, even while the
//! worker is still trying to reach a node. The worker then registers a new
//! session rather than resuming the old one, so the cluster releases the
//! abandoned attempts at once. Safety does not depend on this (tokens fence),
//! but it keeps a cut-off worker from doing work that will be thrown away,
//! and from touching external sinks after its shard moved.
//!
//! **Failover.** Without a heartbeat ack for `max(2 × heartbeat, ttl / 3)` the
//! worker reattaches elsewhere (a stalled leader keeps its TCP connections
//! open), and keeps its session on `UNAVAILABLE`; only `NOT_FOUND` or
//! `SESSION_ENDED` end it.
//!
//! **Attempt deadlines** are measured on the worker's own monotonic clock from
//! when the assignment arrived (`deadline_in_ms`); at the deadline the handler
//! is cancelled, and aborted [`CANCEL_GRACE`] later.
//!
//! **Graceful shutdown.** Stop taking work (`Drain`), let running handlers
//! finish within the grace period, report their results, then `Deregister`,
//! so anything left is reassigned at once rather than after the TTL.
//!
//! **Task logs.** [`TaskContext::log`] (and `info`, `warn`, …) and the
//! [`TaskLogLayer`] `tracing` bridge write to a per-attempt buffer that never
//! blocks the handler. Lines are sent about once a second
//! ([`LOG_FLUSH_INTERVAL_MS`]), as soon as the buffer fills, and before the
//! attempt's result, on the same stream, so the cluster stores them before it
//! commits the report. They are resent like reports until acknowledged (so a
//! line can be stored twice if a stream breaks after the cluster took it).

mod inputs;
mod logs;
mod runtime;
mod session;
mod tracing_bridge;

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::client::{Client, ClientConfig};
use crate::error::Error;

pub use inputs::REDUCE_INPUT_PAGE_SHARDS;
pub use logs::{
    LOG_BUFFER_MAX_BYTES, LOG_BUFFER_MAX_LINES, LOG_FLUSH_BYTES, LOG_FLUSH_INTERVAL_MS, LOG_FLUSH_LINES,
    LOG_UNACKED_BYTES_MAX, LogLevel, MAX_LOG_LINE_BYTES, TRUNCATED_MARKER, encode_chunk,
};
pub use session::{MAX_RESULT_BYTES, PROGRESS_BP_MAX, PROGRESS_MESSAGE_MAX_BYTES, PROGRESS_MIN_INTERVAL_MS};
pub use tracing_bridge::{TASK_SPAN, TASK_SPAN_TARGET, TaskLogLayer};

/// Messages queued towards the coordinator on one stream, on top of room for
/// one report and one progress update per attempt the worker may hold (see
/// `runtime`): a full queue means the node stopped reading, and the worker
/// reconnects rather than wait.
pub const OUTBOUND_QUEUE: usize = 1024;
/// Default time a graceful shutdown waits for running handlers.
pub const SHUTDOWN_GRACE_DEFAULT: Duration = Duration::from_secs(30);
/// How long a cancelled handler may take to stop before it is abandoned.
pub const CANCEL_GRACE: Duration = Duration::from_secs(1);
/// Longest error message sent (`Fail.error` in the proto; the cluster refuses
/// longer ones). Longer messages are cut at a character boundary.
pub const MAX_ERROR_BYTES: usize = 4096;

/// One shard to work on.
pub struct TaskContext {
    pub job_id: u64,
    pub shard: u32,
    pub payload: Vec<u8>,
    /// 1-based attempt number.
    pub attempt: u32,
    /// The fencing token of this attempt. Pass it to external sinks and have
    /// them refuse writes carrying a lower token than one they have seen.
    pub token: u64,
    /// The attempt's deadline (ms since the Unix epoch, leader clock). The
    /// worker enforces it on its own monotonic clock; this is for display.
    pub deadline_ms: u64,
    cancel: CancellationToken,
    progress: runtime::ProgressSink,
    logs: logs::LogSink,
    workflow: Option<Box<crate::proto::WorkflowContext>>,
    client: Client,
}

impl TaskContext {
    /// Fires on job cancellation, lease loss (self-fencing), the attempt's
    /// deadline, or shutdown past its grace period. Once it fired, the
    /// attempt's result is never reported.
    pub fn cancellation(&self) -> CancellationToken {
        self.cancel.clone()
    }

    pub fn is_cancelled(&self) -> bool {
        self.cancel.is_cancelled()
    }

    /// Report progress in basis points (0..=[`PROGRESS_BP_MAX`]) with a short message (cut
    /// to [`PROGRESS_MESSAGE_MAX_BYTES`]). Best effort and never blocks: only
    /// the latest update of an attempt is kept, and at most one per
    /// [`PROGRESS_MIN_INTERVAL_MS`] is sent.
    pub fn progress(&self, progress_bp: u32, message: &str) {
        self.progress.publish(progress_bp, message);
    }
}

/// Why a handler failed.
#[derive(Debug, Clone)]
pub struct TaskError {
    pub message: String,
    /// False marks the shard dead at once instead of retrying it.
    pub retryable: bool,
}

impl TaskError {
    pub fn retryable(message: impl std::fmt::Display) -> Self {
        TaskError { message: message.to_string(), retryable: true }
    }

    pub fn fatal(message: impl std::fmt::Display) -> Self {
        TaskError { message: message.to_string(), retryable: false }
    }
}

type BoxFut = Pin<Box<dyn Future<Output = Result<Vec<u8>, TaskError>> + Send>>;

/// What a worker runs for each shard. Implemented for async closures.
pub trait Handler: Send + Sync + 'static {
    fn run(&self, ctx: TaskContext) -> BoxFut;
}

impl<F, Fut> Handler for F
where
    F: Fn(TaskContext) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<Vec<u8>, TaskError>> + Send + 'static,
{
    fn run(&self, ctx: TaskContext) -> BoxFut {
        Box::pin(self(ctx))
    }
}

/// Counts of what the worker did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WorkerStats {
    pub completed: u64,
    pub failed: u64,
    pub fenced: u64,
    /// Attempts stopped without a report: cancelled, self-fenced, timed out or
    /// abandoned (including finished results the cluster never acknowledged
    /// before their session ended).
    pub abandoned: u64,
    /// Task log lines that were not stored: dropped from a full buffer,
    /// fenced or refused by the cluster, or unsent when a session ended.
    pub log_lines_dropped: u64,
}

pub struct WorkerBuilder {
    endpoints: Vec<String>,
    name: Option<String>,
    labels: BTreeMap<String, String>,
    capacity: u32,
    shutdown_grace: Duration,
    handler: Option<Arc<dyn Handler>>,
    token: Option<String>,
    tls: Option<crate::tls::TlsOptions>,
}

impl WorkerBuilder {
    /// Bearer token for clusters with auth on: the session and the reads of
    /// task inputs send it. Its `worker` grants decide which namespaces'
    /// tasks the worker receives.
    pub fn token(mut self, token: impl Into<String>) -> Self {
        self.token = Some(token.into());
        self
    }

    /// TLS settings (the cluster CA, a client certificate); see [`crate::tls`].
    pub fn tls(mut self, tls: crate::tls::TlsOptions) -> Self {
        self.tls = Some(tls);
        self
    }

    pub fn endpoints(mut self, e: impl IntoIterator<Item = impl Into<String>>) -> Self {
        self.endpoints = e.into_iter().map(Into::into).collect();
        self
    }

    /// Stable name; defaults to `<hostname>-<pid>`.
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.name = Some(name.into());
        self
    }

    pub fn label(mut self, k: impl Into<String>, v: impl Into<String>) -> Self {
        self.labels.insert(k.into(), v.into());
        self
    }

    /// Most shards run at once.
    pub fn capacity(mut self, n: u32) -> Self {
        self.capacity = n;
        self
    }

    pub fn shutdown_grace(mut self, d: Duration) -> Self {
        self.shutdown_grace = d;
        self
    }

    pub fn handler(mut self, h: impl Handler) -> Self {
        self.handler = Some(Arc::new(h));
        self
    }

    pub fn build(self) -> Result<Worker, Error> {
        let tls = crate::client::uses_tls(&self.endpoints, self.tls.as_ref());
        let urls = self.endpoints.iter().map(|e| crate::tls::normalize_url(e, tls)).collect::<Result<Vec<_>, _>>()?;
        if urls.is_empty() {
            return Err(Error::Config("a worker needs at least one endpoint".into()));
        }
        if self.capacity == 0 {
            return Err(Error::Config("capacity must be at least 1".into()));
        }
        let handler = self.handler.ok_or_else(|| Error::Config("a worker needs a handler".into()))?;
        crate::client::Bearer::new(self.token.as_deref())?;
        let name = self.name.unwrap_or_else(|| {
            let host = std::fs::read_to_string("/etc/hostname").unwrap_or_else(|_| "worker".into());
            format!("{}-{}", host.trim(), std::process::id())
        });
        Ok(Worker {
            urls,
            name,
            labels: self.labels,
            capacity: self.capacity,
            grace: self.shutdown_grace,
            handler,
            token: self.token,
            tls: self.tls,
        })
    }
}

/// A worker process's connection to the cluster. See the module docs.
pub struct Worker {
    urls: Vec<String>,
    name: String,
    labels: BTreeMap<String, String>,
    capacity: u32,
    grace: Duration,
    handler: Arc<dyn Handler>,
    token: Option<String>,
    tls: Option<crate::tls::TlsOptions>,
}

impl Worker {
    pub fn builder() -> WorkerBuilder {
        WorkerBuilder {
            endpoints: Vec::new(),
            name: None,
            labels: BTreeMap::new(),
            capacity: 1,
            shutdown_grace: SHUTDOWN_GRACE_DEFAULT,
            handler: None,
            token: None,
            tls: None,
        }
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// Run until `shutdown` resolves, then shut down gracefully. Ends early
    /// with the error if the cluster refuses the worker's credential
    /// (`Error::Unauthenticated`, `Error::PermissionDenied`): reconnecting
    /// cannot fix that.
    pub async fn run(self, shutdown: impl Future<Output = ()> + Send) -> Result<WorkerStats, Error> {
        let capacity = self.capacity;
        let cfg = session::Config {
            name: self.name,
            labels: self.labels,
            capacity: self.capacity,
            urls: self.urls,
            shutdown_grace_ms: u64::try_from(self.grace.as_millis()).unwrap_or(u64::MAX),
            seed: rand::random(),
        };
        // One client per worker, shared by every task that reads its inputs.
        let mut client_cfg = ClientConfig::new(cfg.urls.clone());
        client_cfg.token = self.token;
        client_cfg.tls = self.tls;
        let client = Client::new(client_cfg)?;
        runtime::Runtime::new(session::Session::new(cfg), self.handler, client, capacity).run(shutdown).await
    }
}
