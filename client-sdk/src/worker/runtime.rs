//! The worker's IO: a tokio loop that performs the session core's actions
//! (connect, open a stream, send, start, cancel and abort handlers) and feeds
//! it events. It decides nothing; every await is raced against the core's
//! next wakeup, so a silent node never delays a timer.

use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tonic::Streaming;
use tracing::Instrument;

use super::logs::{LogBatch, LogSink};
use super::session::{Action, AttemptKey, Event, Failure, Outcome, Session};
use super::{Handler, OUTBOUND_QUEUE, TaskContext, WorkerStats};
use crate::Error;
use crate::client::Client;
use crate::proto;
use crate::proto::worker_service_client::WorkerServiceClient;

/// TCP connect timeout of one open. The core bounds the whole open (connect,
/// handshake, register) anyway; this only stops tonic from waiting on a host
/// that never answers the SYN longer than an open may take.
pub const CONNECT_TIMEOUT_MS: u64 = 1_000;
/// Handler results waiting for the loop. A full queue only makes the
/// finished handlers' tasks wait, never the loop.
pub const HANDLER_DONE_QUEUE: usize = 1024;

/// Outbound queue of one stream: [`OUTBOUND_QUEUE`] for heartbeats and
/// control messages, plus one report and one progress update per attempt the
/// cluster may give this worker (`capacity`), so a burst of results never
/// fills it; a full queue means the node stopped reading.
fn outbound_queue_len(capacity: u32) -> usize {
    OUTBOUND_QUEUE + 2 * capacity as usize
}

/// Progress wake-ups waiting for the loop: each attempt has at most one
/// outstanding, and up to `capacity` attempts run while as many cancelled ones
/// may still be stopping. If it is full anyway, the update is dropped.
fn progress_queue_len(capacity: u32) -> usize {
    2 * capacity as usize
}

/// "Log buffer full" wake-ups waiting for the loop: like progress, at most
/// one per attempt until the loop collects that buffer. If it is full anyway,
/// the buffer is collected at its next interval.
fn logs_queue_len(capacity: u32) -> usize {
    2 * capacity as usize
}

/// A handler's progress channel: the latest update of one attempt, and a
/// wake-up to the loop when a new one appears. Never blocks the handler.
#[derive(Clone)]
pub(crate) struct ProgressSink {
    key: AttemptKey,
    latest: Arc<Mutex<Option<(u32, String)>>>,
    wake: mpsc::Sender<AttemptKey>,
}

impl ProgressSink {
    pub(crate) fn publish(&self, progress_bp: u32, message: &str) {
        let mut slot = self.latest.lock().unwrap_or_else(|e| e.into_inner());
        let was_empty = slot.is_none();
        *slot = Some((progress_bp, message.to_string()));
        // One wake-up per update the loop has not taken yet.
        if was_empty && self.wake.try_send(self.key).is_err() {
            *slot = None; // the loop is swamped: best effort, drop it
        }
    }
}

/// A started handler.
struct Handle {
    cancel: CancellationToken,
    abort: tokio::task::AbortHandle,
    progress: Arc<Mutex<Option<(u32, String)>>>,
    logs: LogSink,
}

type OpenFut = Pin<Box<dyn Future<Output = Result<Streaming<proto::CoordinatorMessage>, tonic::Status>> + Send>>;

/// The session stream, as far as IO goes.
enum Link {
    None,
    Opening { tx: mpsc::Sender<proto::WorkerMessage>, open: OpenFut },
    Open { tx: mpsc::Sender<proto::WorkerMessage>, inbound: Box<Streaming<proto::CoordinatorMessage>> },
}

/// What woke the loop.
enum Wake {
    Event(Event),
    Opened(Streaming<proto::CoordinatorMessage>),
    Progress(AttemptKey),
    Nothing,
}

pub(crate) struct Runtime {
    core: Session,
    handler: Arc<dyn Handler>,
    /// Shared by every task's context (predecessor results, reduce input).
    client: Client,
    /// Zero of the core's clock.
    origin: Instant,
    link: Link,
    handles: HashMap<AttemptKey, Handle>,
    outbound_len: usize,
    done_tx: mpsc::Sender<(AttemptKey, Outcome)>,
    done_rx: mpsc::Receiver<(AttemptKey, Outcome)>,
    progress_tx: mpsc::Sender<AttemptKey>,
    progress_rx: mpsc::Receiver<AttemptKey>,
    logs_tx: mpsc::Sender<AttemptKey>,
    logs_rx: mpsc::Receiver<AttemptKey>,
}

fn wall_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}

async fn link_wake(link: &mut Link, tls: bool) -> Wake {
    match link {
        Link::None => std::future::pending().await,
        Link::Opening { open, .. } => match open.await {
            Ok(inbound) => Wake::Opened(inbound),
            Err(s) => Wake::Event(Event::OpenFailed(Failure::from_status_with(&s, tls))),
        },
        Link::Open { inbound, .. } => match inbound.message().await {
            Ok(Some(proto::CoordinatorMessage { msg: Some(msg) })) => {
                Wake::Event(Event::Inbound { msg, wall_ms: wall_ms() })
            }
            Ok(Some(_)) => Wake::Nothing,
            Ok(None) => Wake::Event(Event::StreamEnded(None)),
            Err(s) => Wake::Event(Event::StreamEnded(Some(Failure::from_status_with(&s, tls)))),
        },
    }
}

impl Runtime {
    pub(crate) fn new(core: Session, handler: Arc<dyn Handler>, client: Client, capacity: u32) -> Runtime {
        let (done_tx, done_rx) = mpsc::channel(HANDLER_DONE_QUEUE);
        let (progress_tx, progress_rx) = mpsc::channel(progress_queue_len(capacity).max(1));
        let (logs_tx, logs_rx) = mpsc::channel(logs_queue_len(capacity).max(1));
        Runtime {
            core,
            handler,
            client,
            origin: Instant::now(),
            link: Link::None,
            handles: HashMap::new(),
            outbound_len: outbound_queue_len(capacity),
            done_tx,
            done_rx,
            progress_tx,
            progress_rx,
            logs_tx,
            logs_rx,
        }
    }

    fn now_ms(&self) -> u64 {
        self.origin.elapsed().as_millis() as u64
    }

    /// Run until shut down, or until the cluster refuses the worker's
    /// credential (that error).
    pub(crate) async fn run(mut self, shutdown: impl Future<Output = ()> + Send) -> Result<WorkerStats, Error> {
        tokio::pin!(shutdown);
        let mut shutdown_seen = false;
        self.feed(Event::Tick);
        while !self.core.is_finished() {
            let wake = self.core.next_wakeup_ms().map(|ms| self.origin + Duration::from_millis(ms));
            let sleep = async {
                match wake {
                    Some(t) => tokio::time::sleep_until(t.into()).await,
                    None => std::future::pending().await,
                }
            };
            let tls = self.client.uses_tls();
            let woke = tokio::select! {
                _ = &mut shutdown, if !shutdown_seen => {
                    shutdown_seen = true;
                    Wake::Event(Event::Shutdown)
                }
                Some((key, outcome)) = self.done_rx.recv() => {
                    // Its last lines travel with its result, so they are sent first.
                    let logs = self.handles.remove(&key).map_or_else(LogBatch::default, |h| h.logs.close());
                    Wake::Event(Event::HandlerDone { key, outcome, logs })
                }
                Some(key) = self.progress_rx.recv() => Wake::Progress(key),
                Some(key) = self.logs_rx.recv() => Wake::Event(Event::LogsFull(key)),
                w = link_wake(&mut self.link, tls) => w,
                _ = sleep => Wake::Event(Event::Tick),
            };
            match woke {
                Wake::Event(e) => {
                    if matches!(e, Event::OpenFailed(_) | Event::StreamEnded(_)) {
                        self.link = Link::None;
                    }
                    self.feed(e);
                }
                Wake::Opened(inbound) => {
                    if let Link::Opening { tx, .. } = std::mem::replace(&mut self.link, Link::None) {
                        self.link = Link::Open { tx, inbound: Box::new(inbound) };
                    }
                }
                Wake::Progress(key) => {
                    let update = self.handles.get(&key).and_then(|h| h.progress.lock().ok()?.take());
                    if let Some((progress_bp, message)) = update {
                        self.feed(Event::Progress { key, progress_bp, message });
                    }
                }
                Wake::Nothing => {}
            }
        }
        match self.core.refusal() {
            Some(e) => Err(e),
            None => Ok(self.core.stats().clone()),
        }
    }

    /// Step the core with `event`, and with any event its actions cause.
    fn feed(&mut self, event: Event) {
        let mut queue = VecDeque::from([event]);
        while let Some(e) = queue.pop_front() {
            let now = self.now_ms();
            for a in self.core.step(e, now) {
                if let Some(follow) = self.perform(a) {
                    queue.push_back(follow);
                }
            }
        }
    }

    fn perform(&mut self, action: Action) -> Option<Event> {
        match action {
            Action::Open { url, register } => {
                let (tx, rx) = mpsc::channel(self.outbound_len);
                tx.try_send(proto::WorkerMessage { msg: Some(proto::worker_message::Msg::Register(register)) })
                    .expect("a new stream's queue has room for its first message");
                let bearer = self.client.bearer();
                let tls = self.client.config().tls.clone();
                let open = async move {
                    let ch = crate::tls::endpoint(&url, tls.as_ref())
                        .map_err(|e| tonic::Status::invalid_argument(format!("{url}: {e}")))?
                        .connect_timeout(Duration::from_millis(CONNECT_TIMEOUT_MS))
                        .tcp_nodelay(true)
                        .connect()
                        .await
                        .map_err(|e| tonic::Status::unavailable(format!("{url}: {e}")))?;
                    let r = WorkerServiceClient::with_interceptor(ch, bearer)
                        .session(tokio_stream::wrappers::ReceiverStream::new(rx))
                        .await?;
                    Ok(r.into_inner())
                };
                self.link = Link::Opening { tx, open: Box::pin(open) };
                None
            }
            Action::Close => {
                self.link = Link::None;
                None
            }
            Action::Send(m) => {
                let Link::Open { tx, .. } = &self.link else { return None };
                if tx.try_send(m).is_err() {
                    self.link = Link::None;
                    return Some(Event::StreamEnded(Some(Failure::transient("outbound queue full or closed"))));
                }
                None
            }
            Action::Start { key, attempt, payload, deadline_ms, workflow } => {
                self.start(key, attempt, payload, deadline_ms, workflow);
                None
            }
            Action::Cancel(key) => {
                if let Some(h) = self.handles.get(&key) {
                    h.cancel.cancel();
                }
                None
            }
            Action::Abort(key) => {
                if let Some(h) = self.handles.remove(&key) {
                    h.cancel.cancel();
                    h.abort.abort();
                }
                None
            }
            Action::CollectLogs(key) => {
                let batch = self.handles.get(&key)?.logs.take();
                Some(Event::LogsCollected { key, batch })
            }
        }
    }

    fn start(
        &mut self,
        key: AttemptKey,
        attempt: u32,
        payload: Vec<u8>,
        deadline_ms: u64,
        workflow: Option<Box<proto::WorkflowContext>>,
    ) {
        let cancel = CancellationToken::new();
        let latest = Arc::new(Mutex::new(None));
        let logs = LogSink::new(key, self.logs_tx.clone());
        let span = super::tracing_bridge::task_span(key, attempt, &logs);
        let ctx = TaskContext {
            job_id: key.job,
            shard: key.shard,
            payload,
            attempt,
            token: key.token,
            deadline_ms,
            cancel: cancel.clone(),
            progress: ProgressSink { key, latest: latest.clone(), wake: self.progress_tx.clone() },
            logs: logs.clone(),
            workflow,
            client: self.client.clone(),
        };
        let inner = tokio::spawn(self.handler.run(ctx).instrument(span));
        let abort = inner.abort_handle();
        let done = self.done_tx.clone();
        tokio::spawn(async move {
            let outcome = match inner.await {
                Ok(r) => Outcome::Finished(r),
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
            let _ = done.send((key, outcome)).await;
        });
        self.handles.insert(key, Handle { cancel, abort, progress: latest, logs });
    }
}
