//! The `Worker` runtime: runs a handler for every shard the cluster assigns.
//!
//! The runtime owns the session stream. It registers, heartbeats, follows the
//! leader across failovers (resuming the same session), and delivers every
//! finished result until the cluster acknowledges it, with the attempt's
//! original token. A `FENCED` answer means another attempt owns the shard: it is
//! logged and dropped.
//!
//! **Self-fencing.** If no heartbeat has been acknowledged for the lease TTL
//! minus a margin, the cluster may already have given this worker's shards to
//! someone else. Every running handler is cancelled and its result is never
//! reported. Safety does not depend on this (tokens fence), but it keeps a
//! cut-off worker from doing work that will be thrown away.
//!
//! **Graceful shutdown.** Stop taking work (`Drain`), let running handlers
//! finish up to a deadline, report their results, then `Deregister` so that
//! anything left is reassigned at once rather than after the TTL.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tonic::transport::Channel;

use crate::client::normalize;
use crate::error::{Error, leader_hint};
use crate::proto;
use crate::proto::coordinator_message::Msg as Out;
use crate::proto::worker_message::Msg as In;
use crate::proto::worker_service_client::WorkerServiceClient;

/// Messages queued towards the coordinator on one stream.
pub const OUTBOUND_QUEUE: usize = 1024;
/// Default time a graceful shutdown waits for running handlers.
pub const SHUTDOWN_GRACE_DEFAULT: Duration = Duration::from_secs(30);
/// How long a cancelled handler may take to stop before it is abandoned.
pub const CANCEL_GRACE: Duration = Duration::from_secs(1);
/// Longest error message sent (the cluster refuses longer ones).
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
    /// The attempt's deadline (ms since the Unix epoch, leader clock).
    pub deadline_ms: u64,
    cancel: CancellationToken,
    progress: mpsc::Sender<proto::WorkerMessage>,
}

impl TaskContext {
    /// Fires on job cancellation, lease loss (self-fencing), the attempt's
    /// deadline, or shutdown past its grace period.
    pub fn cancellation(&self) -> CancellationToken {
        self.cancel.clone()
    }

    pub fn is_cancelled(&self) -> bool {
        self.cancel.is_cancelled()
    }

    /// Report progress in basis points (0..=10000) with a short message.
    /// Best effort: dropped if the stream is busy or reconnecting.
    pub fn progress(&self, progress_bp: u32, message: &str) {
        let msg = proto::WorkerMessage {
            msg: Some(In::Progress(proto::Progress {
                task: Some(proto::TaskRef { job_id: self.job_id, shard: self.shard }),
                token: self.token,
                progress_bp: progress_bp.min(10_000),
                message: message.chars().take(256).collect(),
            })),
        };
        let _ = self.progress.try_send(msg);
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
    /// Attempts stopped without a report: cancelled, self-fenced, timed out or abandoned.
    pub abandoned: u64,
}

pub struct WorkerBuilder {
    endpoints: Vec<String>,
    name: Option<String>,
    labels: BTreeMap<String, String>,
    capacity: u32,
    shutdown_grace: Duration,
    handler: Option<Arc<dyn Handler>>,
}

impl WorkerBuilder {
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
        let urls = self.endpoints.iter().map(|e| normalize(e)).collect::<Result<Vec<_>, _>>()?;
        if urls.is_empty() {
            return Err(Error::Config("a worker needs at least one endpoint".into()));
        }
        if self.capacity == 0 {
            return Err(Error::Config("capacity must be at least 1".into()));
        }
        let handler = self.handler.ok_or_else(|| Error::Config("a worker needs a handler".into()))?;
        let name = self.name.unwrap_or_else(|| {
            let host = std::fs::read_to_string("/etc/hostname").unwrap_or_else(|_| "worker".into());
            format!("{}-{}", host.trim(), std::process::id())
        });
        Ok(Worker { urls, name, labels: self.labels, capacity: self.capacity, grace: self.shutdown_grace, handler })
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
}

type Key = (u64, u32, u64); // job, shard, token

struct Running {
    cancel: CancellationToken,
    abort: tokio::task::AbortHandle,
    /// When the handler must have stopped (deadline or cancel + grace).
    stop_by: Option<Instant>,
    /// Cancelled: its result must not be reported.
    silenced: bool,
}

enum Outcome {
    Done(Result<Vec<u8>, TaskError>),
    Panicked(String),
}

fn wall_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}

fn task_ref(k: &Key) -> Option<proto::TaskRef> {
    Some(proto::TaskRef { job_id: k.0, shard: k.1 })
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
        }
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// Run until `shutdown` resolves, then shut down gracefully.
    pub async fn run(self, shutdown: impl Future<Output = ()> + Send) -> Result<WorkerStats, Error> {
        let mut rt = Runtime {
            w: self,
            session: None,
            ttl: Duration::from_secs(2),
            hb_every: Duration::from_millis(500),
            running: HashMap::new(),
            seen: BTreeSet::new(),
            unacked: BTreeMap::new(),
            last_ack: Instant::now(),
            stats: WorkerStats::default(),
            draining_since: None,
            next_url: 0,
            leader: None,
        };
        let (done_tx, mut done_rx) = mpsc::channel::<(Key, Outcome)>(1024);
        let (progress_tx, mut progress_rx) = mpsc::channel::<proto::WorkerMessage>(256);
        tokio::pin!(shutdown);
        let mut attempt = 0u32;
        let mut silent: Option<String> = None;
        loop {
            if rt.draining_since.is_some() && rt.running.is_empty() && rt.unacked.is_empty() && rt.session.is_none() {
                return Ok(rt.stats);
            }
            let url = rt.leader.take().unwrap_or_else(|| {
                rt.next_url += 1;
                let mut u = &rt.w.urls[rt.next_url % rt.w.urls.len()];
                // Do not go straight back to the node that just went silent.
                if Some(u) == silent.as_ref() && rt.w.urls.len() > 1 {
                    rt.next_url += 1;
                    u = &rt.w.urls[rt.next_url % rt.w.urls.len()];
                }
                u.clone()
            });
            silent = None;
            match rt.session_once(&url, &mut shutdown, &done_tx, &mut done_rx, &progress_tx, &mut progress_rx).await {
                Ok(true) => return Ok(rt.stats),
                Ok(false) => attempt = 0,
                Err(e) => {
                    tracing::debug!(error = %e, url = %url, "worker session failed; reconnecting");
                    if matches!(e, Error::Unavailable(_)) {
                        silent = Some(url);
                    }
                    attempt += 1;
                }
            }
            // Reconnecting can outlast the lease: fence here too, not only
            // on a live stream's heartbeat tick.
            if rt.session.is_some() && rt.last_ack.elapsed() > rt.fence_after() {
                rt.lease_lapsed();
            }
            rt.reap();
            let wait = Duration::from_millis(rand::random_range(0..=(20u64 << attempt.min(5))));
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                _ = &mut shutdown, if rt.draining_since.is_none() => rt.start_drain(),
            }
        }
    }
}

struct Runtime {
    w: Worker,
    session: Option<(u64, u64)>,
    ttl: Duration,
    hb_every: Duration,
    running: HashMap<Key, Running>,
    /// Attempts started and not yet acknowledged, so a resync does not rerun
    /// them. Bounded by capacity plus unacknowledged reports.
    seen: BTreeSet<Key>,
    /// Finished reports waiting for the cluster's acknowledgement.
    unacked: BTreeMap<Key, proto::WorkerMessage>,
    last_ack: Instant,
    stats: WorkerStats,
    draining_since: Option<Instant>,
    next_url: usize,
    leader: Option<String>,
}

impl Runtime {
    fn start_drain(&mut self) {
        tracing::info!(worker = %self.w.name, running = self.running.len(), "draining before shutdown");
        self.draining_since = Some(Instant::now());
    }

    /// How long the stream may go without a heartbeat ack before the worker
    /// gives up on this node and reattaches elsewhere: a leader that is
    /// stalled (not dead) keeps the TCP connection open, and a new leader
    /// only keeps the session for one TTL after taking over.
    fn reconnect_after(&self) -> Duration {
        (self.hb_every * 2).max(self.ttl / 3)
    }

    /// The self-fencing deadline: TTL minus a fifth of it.
    fn fence_after(&self) -> Duration {
        self.ttl - self.ttl / 5
    }

    /// Cancel every running handler and forget their results.
    fn self_fence(&mut self) {
        if self.running.is_empty() {
            return;
        }
        tracing::warn!(worker = %self.w.name, running = self.running.len(), "no heartbeat ack within the lease; self-fencing");
        for r in self.running.values_mut() {
            r.silenced = true;
            r.cancel.cancel();
            r.stop_by.get_or_insert(Instant::now() + CANCEL_GRACE);
        }
    }

    /// No heartbeat was acknowledged for most of the lease: stop every
    /// running handler, and if any was stopped, give up the session too.
    /// Resuming it would leave the cluster believing this worker still runs
    /// those attempts, which would then sit unreported until they time out;
    /// a new session ends the old one and releases them at once. Returns
    /// whether the session was given up.
    fn lease_lapsed(&mut self) -> bool {
        if self.running.is_empty() {
            return false;
        }
        self.self_fence();
        self.session = None;
        true
    }

    /// Abort handlers past their stop time; they are abandoned unreported.
    fn reap(&mut self) {
        let now = Instant::now();
        let late: Vec<Key> =
            self.running.iter().filter(|(_, r)| r.stop_by.is_some_and(|t| t <= now)).map(|(k, _)| *k).collect();
        for k in late {
            if let Some(r) = self.running.remove(&k) {
                r.abort.abort();
                self.stats.abandoned += 1;
                tracing::warn!(job = k.0, shard = k.1, token = k.2, "handler did not stop in time; abandoned");
            }
        }
        if let Some(since) = self.draining_since
            && since.elapsed() > self.w.grace
        {
            for r in self.running.values_mut() {
                r.silenced = true;
                r.cancel.cancel();
                r.stop_by.get_or_insert(Instant::now() + CANCEL_GRACE);
            }
        }
    }

    fn start(
        &mut self,
        a: proto::Assignment,
        done_tx: &mpsc::Sender<(Key, Outcome)>,
        progress_tx: &mpsc::Sender<proto::WorkerMessage>,
    ) {
        let Some(t) = a.task else { return };
        let key = (t.job_id, t.shard, a.token);
        if !self.seen.insert(key) {
            return; // a resync of an attempt we already have
        }
        let cancel = CancellationToken::new();
        let ctx = TaskContext {
            job_id: t.job_id,
            shard: t.shard,
            payload: a.payload,
            attempt: a.attempt,
            token: a.token,
            deadline_ms: a.deadline_ms,
            cancel: cancel.clone(),
            progress: progress_tx.clone(),
        };
        let inner = tokio::spawn(self.w.handler.run(ctx));
        let abort = inner.abort_handle();
        let done = done_tx.clone();
        tokio::spawn(async move {
            let out = match inner.await {
                Ok(r) => Outcome::Done(r),
                Err(e) if e.is_panic() => {
                    let p = e.into_panic();
                    let msg = p
                        .downcast_ref::<&str>()
                        .map(|s| s.to_string())
                        .or_else(|| p.downcast_ref::<String>().cloned())
                        .unwrap_or_else(|| "handler panicked".into());
                    Outcome::Panicked(msg)
                }
                Err(_) => return, // aborted: abandoned, nothing to report
            };
            let _ = done.send((key, out)).await;
        });
        // The attempt's deadline, translated to this machine's clock.
        let left = a.deadline_ms.saturating_sub(wall_ms());
        let stop_by = (a.deadline_ms > 0).then(|| Instant::now() + Duration::from_millis(left) + CANCEL_GRACE);
        self.running.insert(key, Running { cancel, abort, stop_by, silenced: false });
    }

    fn finished(&mut self, key: Key, out: Outcome) -> Option<proto::WorkerMessage> {
        let r = self.running.remove(&key)?;
        if r.silenced {
            self.stats.abandoned += 1;
            return None;
        }
        let task = task_ref(&key);
        let msg = match out {
            Outcome::Done(Ok(result)) => In::Complete(proto::Complete { task, token: key.2, result }),
            Outcome::Done(Err(e)) => In::Fail(proto::Fail {
                task,
                token: key.2,
                error: e.message.chars().take(MAX_ERROR_BYTES / 4).collect(),
                retryable: e.retryable,
            }),
            Outcome::Panicked(m) => In::Fail(proto::Fail {
                task,
                token: key.2,
                error: format!("handler panicked: {m}").chars().take(MAX_ERROR_BYTES / 4).collect(),
                retryable: true,
            }),
        };
        let msg = proto::WorkerMessage { msg: Some(msg) };
        self.unacked.insert(key, msg.clone());
        Some(msg)
    }

    /// One connection's life. `Ok(true)`: shut down cleanly; `Ok(false)`:
    /// the stream ended and should be reopened; `Err`: it failed.
    #[allow(clippy::too_many_arguments)]
    async fn session_once(
        &mut self,
        url: &str,
        shutdown: &mut Pin<&mut impl Future<Output = ()>>,
        done_tx: &mpsc::Sender<(Key, Outcome)>,
        done_rx: &mut mpsc::Receiver<(Key, Outcome)>,
        progress_tx: &mpsc::Sender<proto::WorkerMessage>,
        progress_rx: &mut mpsc::Receiver<proto::WorkerMessage>,
    ) -> Result<bool, Error> {
        let ch = Channel::from_shared(url.to_string())
            .map_err(|e| Error::Config(e.to_string()))?
            .connect_timeout(Duration::from_secs(1))
            .tcp_nodelay(true)
            .connect()
            .await
            .map_err(|e| Error::Unavailable(format!("{url}: {e}")))?;
        let (tx, rx) = mpsc::channel::<proto::WorkerMessage>(OUTBOUND_QUEUE);
        let (resume_session, resume_epoch) = self.session.unwrap_or((0, 0));
        let register = proto::Register {
            name: self.w.name.clone(),
            labels: self.w.labels.clone().into_iter().collect(),
            capacity: self.w.capacity,
            resume_session,
            resume_epoch,
        };
        let _ = tx.send(proto::WorkerMessage { msg: Some(In::Register(register)) }).await;
        // A stalled node accepts the connection but never answers: bound the wait.
        let mut svc = WorkerServiceClient::new(ch);
        let open = svc.session(tokio_stream::wrappers::ReceiverStream::new(rx));
        let mut inbound = match tokio::time::timeout(self.reconnect_after(), open).await {
            Ok(Ok(r)) => r.into_inner(),
            Ok(Err(s)) => return Err(self.stream_error(&s)),
            Err(_) => return Err(Error::Unavailable(format!("{url} did not open a session in time"))),
        };
        let mut hb = tokio::time::interval(self.hb_every);
        let mut seq = 0u64;
        let mut deregistering = false;
        loop {
            tokio::select! {
                _ = hb.tick() => {
                    if self.session.is_some() && self.last_ack.elapsed() > self.fence_after() && self.lease_lapsed() {
                        return Err(Error::Unavailable("lease lapsed; registering a new session".into()));
                    }
                    if self.session.is_some() && self.last_ack.elapsed() > self.reconnect_after() {
                        return Err(Error::Unavailable(format!(
                            "no heartbeat ack from {url} for {:?}; reattaching elsewhere",
                            self.last_ack.elapsed()
                        )));
                    }
                    self.reap();
                    if let Some(since) = self.draining_since
                        && !deregistering
                        && self.session.is_some()
                        && ((self.running.is_empty() && self.unacked.is_empty()) || since.elapsed() > self.w.grace + CANCEL_GRACE * 2)
                    {
                        // Everything reported (or abandoned): leave, so what is
                        // left is reassigned now rather than after the TTL.
                        deregistering = true;
                        let _ = tx.send(proto::WorkerMessage { msg: Some(In::Deregister(proto::Deregister {})) }).await;
                    }
                    seq += 1;
                    if tx.send(proto::WorkerMessage { msg: Some(In::Heartbeat(proto::Heartbeat { seq })) }).await.is_err() {
                        return Ok(false);
                    }
                }
                _ = &mut *shutdown, if self.draining_since.is_none() => {
                    self.start_drain();
                    let _ = tx.send(proto::WorkerMessage { msg: Some(In::Drain(proto::Drain {})) }).await;
                }
                Some((key, out)) = done_rx.recv() => {
                    if let Some(msg) = self.finished(key, out) {
                        let _ = tx.send(msg).await;
                    }
                }
                Some(p) = progress_rx.recv() => {
                    let _ = tx.try_send(p);
                }
                m = inbound.message() => {
                    let m = match m {
                        Ok(Some(m)) => m,
                        Ok(None) => {
                            if deregistering {
                                self.session = None;
                                return Ok(true);
                            }
                            return Ok(false);
                        }
                        Err(s) => {
                            if deregistering {
                                self.session = None;
                                return Ok(true);
                            }
                            return Err(self.stream_error(&s));
                        }
                    };
                    match m.msg {
                        Some(Out::Registered(r)) => {
                            if !r.resumed {
                                // A new session: attempts of the old one are
                                // fenced or reassigned; stop them quietly.
                                self.self_fence();
                                self.unacked.clear();
                            }
                            tracing::info!(worker = %self.w.name, session = r.session, resumed = r.resumed, "worker registered");
                            self.session = Some((r.session, r.epoch));
                            self.ttl = Duration::from_millis(r.ttl_ms.max(1));
                            self.hb_every = Duration::from_millis(r.heartbeat_interval_ms.max(1));
                            hb = tokio::time::interval(self.hb_every);
                            self.last_ack = Instant::now();
                            // Deliver what finished while we were away.
                            for msg in self.unacked.values() {
                                let _ = tx.send(msg.clone()).await;
                            }
                            if self.draining_since.is_some() {
                                let _ = tx.send(proto::WorkerMessage { msg: Some(In::Drain(proto::Drain {})) }).await;
                            }
                        }
                        Some(Out::HeartbeatAck(_)) => self.last_ack = Instant::now(),
                        Some(Out::Assignment(a)) => {
                            if let Some(t) = &a.task {
                                let key = (t.job_id, t.shard, a.token);
                                // A resync of something finished but unacknowledged: resend.
                                if let Some(msg) = self.unacked.get(&key) {
                                    let _ = tx.send(msg.clone()).await;
                                    continue;
                                }
                            }
                            self.start(a, done_tx, progress_tx);
                        }
                        Some(Out::Cancel(c)) => {
                            if let Some(t) = c.task
                                && let Some(r) = self.running.get_mut(&(t.job_id, t.shard, c.token))
                            {
                                tracing::info!(job = t.job_id, shard = t.shard, reason = %c.reason, "attempt cancelled");
                                r.silenced = true;
                                r.cancel.cancel();
                                r.stop_by.get_or_insert(Instant::now() + CANCEL_GRACE);
                            }
                        }
                        Some(Out::ReportAck(a)) => {
                            let is_final = matches!(
                                proto::ReportKind::try_from(a.kind),
                                Ok(proto::ReportKind::Complete | proto::ReportKind::Fail)
                            );
                            if let Some(t) = a.task.filter(|_| is_final) {
                                let key = (t.job_id, t.shard, a.token);
                                // Progress acks are not tracked; final reports are.
                                let was_complete = self.unacked.remove(&key).map(|m| matches!(m.msg, Some(In::Complete(_))));
                                // Acknowledged: the cluster will never resync this
                                // attempt again, so stop remembering it.
                                self.seen.remove(&key);
                                if let Some(was_complete) = was_complete {
                                    match proto::ReportStatus::try_from(a.status) {
                                        Ok(proto::ReportStatus::Accepted | proto::ReportStatus::Duplicate) => {
                                            if was_complete { self.stats.completed += 1 } else { self.stats.failed += 1 }
                                        }
                                        Ok(proto::ReportStatus::Fenced) => {
                                            self.stats.fenced += 1;
                                            tracing::warn!(job = t.job_id, shard = t.shard, token = a.token, "result fenced: another attempt owns this shard; dropped");
                                        }
                                        _ => {
                                            self.stats.failed += 1;
                                            tracing::warn!(job = t.job_id, shard = t.shard, message = %a.message, "result refused");
                                        }
                                    }
                                }
                            }
                        }
                        None => {}
                    }
                }
            }
        }
    }

    fn stream_error(&mut self, s: &tonic::Status) -> Error {
        if let Some(addr) = leader_hint(s) {
            self.leader = normalize(&addr).ok();
        }
        if matches!(s.code(), tonic::Code::FailedPrecondition | tonic::Code::NotFound) {
            // Our session ended (expired while we were cut off): start a new
            // one. Its running attempts belong to the old session.
            tracing::warn!(worker = %self.w.name, reason = %s.message(), "session ended; registering again");
            self.session = None;
        }
        Error::from_status(s, false)
    }
}
