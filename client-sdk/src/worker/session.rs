//! The worker's session core: every decision of a worker's session, with no
//! IO and no clock of its own.
//!
//! Time comes in as `now_ms`, a monotonic millisecond count chosen by the
//! caller; the core never reads a clock. [`Session::step`] takes one
//! [`Event`] and returns the [`Action`]s to perform, in order;
//! [`Session::next_wakeup_ms`] is the instant of its next timer, at which the
//! caller must step an [`Event::Tick`], whatever else it is waiting for.
//!
//! What it decides:
//! - **the link**: which node to open a session on (leader hint first; a node
//!   that went silent is skipped for one lease), how long an open may take,
//!   reconnect backoff with full jitter;
//! - **register or resume**: resume while the session lives; register anew
//!   after it ended (`NOT_FOUND`, `SESSION_ENDED`) or after self-fencing;
//! - **the lease**: heartbeats, matching acks by `seq` to the instant each was
//!   sent, self-fencing at `sent_at + ttl - margin`, reattaching elsewhere
//!   after `max(2 × heartbeat, ttl / 3)` of silence;
//! - **attempts**: start, deduplicate resynced assignments, the attempt
//!   deadline, cancel (silence) and abort;
//! - **reports**: build them, resend them until acknowledged, back off on
//!   `RETRY_LATER`, count the outcomes; progress coalesced per attempt;
//! - **task logs**: when each attempt's log buffer is collected (every
//!   [`LOG_FLUSH_INTERVAL_MS`], when it fills, and with the handler's
//!   result, so the last lines go out before the report), resent like
//!   reports until acknowledged, and bounded by [`LOG_UNACKED_BYTES_MAX`];
//! - **shutdown**: drain, grace, deregister.

use std::collections::{BTreeMap, VecDeque};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use super::logs::{LOG_FLUSH_INTERVAL_MS, LOG_UNACKED_BYTES_MAX, LogBatch, REPORT_LOG_BYTES_MAX, encode_chunk};
use super::{CANCEL_GRACE, MAX_ERROR_BYTES, TaskError, WorkerStats};
use crate::error::{codes, status_code};
use crate::proto;
use crate::proto::coordinator_message::Msg as Out;
use crate::proto::worker_message::Msg as In;

/// Lease TTL assumed until the first `Registered` names the cluster's (the
/// server's default). It only sizes the first open's timeout: no lease exists
/// before a session does.
pub const TTL_BEFORE_REGISTERED_MS: u64 = 2_000;
/// Heartbeat interval assumed until the first `Registered` (the server's
/// default); only sizes the first open's timeout, like the TTL above.
pub const HEARTBEAT_BEFORE_REGISTERED_MS: u64 = 600;
/// The self-fencing margin is this fraction of the TTL (1/10), and at least
/// [`FENCE_MARGIN_MIN_MS`]. It absorbs the worker's timer and scheduling
/// lateness (a busy runtime wakes tens of ms late) and the drift between the
/// worker's and the leader's monotonic clock rates (well under 1% over a TTL).
pub const FENCE_MARGIN_TTL_DIVISOR: u64 = 10;
/// Smallest self-fencing margin: timer lateness does not shrink with the TTL.
pub const FENCE_MARGIN_MIN_MS: u64 = 100;
/// First reconnect delay bound; doubles per consecutive failure (full jitter:
/// the delay is uniform in `0..=bound`), so a cluster coming back is not hit
/// by every worker at once.
pub const RECONNECT_BACKOFF_BASE_MS: u64 = 20;
/// Largest reconnect delay bound: well under any TTL, so a worker that lost
/// its node still reattaches within its lease.
pub const RECONNECT_BACKOFF_MAX_MS: u64 = 640;
/// First delay before resending a report the node answered `RETRY_LATER`
/// (it was overloaded); doubles per refusal of that report. The delay is
/// drawn from the upper half of the bound, so a refused report is never
/// resent at once to the node that just said it is overloaded.
pub const REPORT_RETRY_BASE_MS: u64 = 50;
/// Largest delay before resending a `RETRY_LATER` report: an overloaded node
/// is asked again at least this often.
pub const REPORT_RETRY_MAX_MS: u64 = 2_000;
/// At most one progress update per attempt is sent per this interval; later
/// updates replace the pending one. Progress is informational and each
/// update is a Raft entry: a chatty handler must not load the cluster.
pub const PROGRESS_MIN_INTERVAL_MS: u64 = 500;
/// Largest progress value: basis points, 10,000 being done.
pub const PROGRESS_BP_MAX: u32 = 10_000;
/// Longest progress message sent (`Progress.message` in the proto); longer
/// messages are cut at a character boundary.
pub const PROGRESS_MESSAGE_MAX_BYTES: usize = 1024;
/// Largest result a `Complete` may carry (`Complete.result` in the proto: one
/// Raft entry must replicate within a heartbeat). A larger result is reported
/// as a non-retryable failure saying so, rather than refused over and over.
pub const MAX_RESULT_BYTES: usize = 1 << 20;
/// Heartbeats remembered while waiting for their acks. Acks come back in
/// order, and one that no longer matches only misses a renewal (the worker
/// fences a little early, never late), so a short window is enough.
pub const HEARTBEATS_IN_FLIGHT_MAX: usize = 64;
/// Backstop on the attempts the worker tracks (running or finished and not
/// yet acknowledged). The cluster assigns a session at most its capacity
/// (at most 10,000 by the proto), and attempts leave when they end, so this
/// is reached only if a node misbehaves; further assignments are then
/// refused locally (they time out on the cluster).
pub const TRACKED_ATTEMPTS_MAX: usize = 20_000;

/// [`CANCEL_GRACE`] in ms.
const CANCEL_GRACE_MS: u64 = CANCEL_GRACE.as_millis() as u64;

/// What the core needs to know about the worker.
#[derive(Debug, Clone)]
pub struct Config {
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub capacity: u32,
    /// Normalized endpoint URLs (at least one).
    pub urls: Vec<String>,
    pub shutdown_grace_ms: u64,
    /// Seeds the jitter.
    pub seed: u64,
}

/// One attempt: a shard and the token of the grant.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct AttemptKey {
    pub job: u64,
    pub shard: u32,
    pub token: u64,
}

impl AttemptKey {
    fn of(task: &proto::TaskRef, token: u64) -> AttemptKey {
        AttemptKey { job: task.job_id, shard: task.shard, token }
    }

    fn task(&self) -> Option<proto::TaskRef> {
        Some(proto::TaskRef { job_id: self.job, shard: self.shard })
    }
}

/// How a handler ended.
#[derive(Debug)]
pub enum Outcome {
    Finished(Result<Vec<u8>, TaskError>),
    Panicked(String),
}

/// Why a stream could not be opened or ended, as far as the session cares.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    /// The cluster no longer has this session: register a new one.
    pub ends_session: bool,
    /// The cluster refused the worker's credential (`UNAUTHENTICATED`,
    /// `PERMISSION_DENIED`): trying again cannot help, so the worker stops
    /// with this error.
    pub refused: Option<Refused>,
    /// Normalized URL of the leader, if the node named it.
    pub leader: Option<String>,
    pub reason: String,
}

/// Why the cluster refused the worker's credential, with its message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refused {
    Unauthenticated(String),
    PermissionDenied(String),
}

impl Refused {
    pub fn to_error(&self) -> crate::Error {
        match self {
            Refused::Unauthenticated(m) => crate::Error::Unauthenticated(m.clone()),
            Refused::PermissionDenied(m) => crate::Error::PermissionDenied(m.clone()),
        }
    }
}

/// Error codes of a `FAILED_PRECONDITION` that are about a task, not the
/// session, so they do not end it. Any other (`SESSION_ENDED`, the generic
/// `PRECONDITION`, or none from servers before the codes) does: resuming a
/// session the node refuses for a reason the worker cannot name would only
/// repeat the refusal.
const TASK_PRECONDITIONS: [&str; 2] = [codes::FENCED, codes::JOB_FINISHED];

impl Failure {
    /// A failure that keeps the session (transport, timeout, overload).
    pub fn transient(reason: impl Into<String>) -> Failure {
        Failure { ends_session: false, refused: None, leader: None, reason: reason.into() }
    }

    /// [`Failure::from_status_with`] for a plaintext worker.
    #[cfg(test)]
    pub fn from_status(s: &tonic::Status) -> Failure {
        Failure::from_status_with(s, false)
    }

    /// Classify a stream's status. Only `NOT_FOUND`, or `FAILED_PRECONDITION`
    /// about the session (code `SESSION_ENDED`; see [`TASK_PRECONDITIONS`]),
    /// end the session; everything else (`UNAVAILABLE`, including `LAGGING`
    /// from a leader that has not applied the session yet) keeps it, so the
    /// worker resumes it elsewhere or later. With `tls`, a leader hint
    /// becomes an `https://` URL.
    pub fn from_status_with(s: &tonic::Status, tls: bool) -> Failure {
        let code = status_code(s);
        let ends_session = match s.code() {
            tonic::Code::NotFound => true,
            tonic::Code::FailedPrecondition => !code.is_some_and(|c| TASK_PRECONDITIONS.contains(&c)),
            _ => false,
        };
        let leader = crate::error::leader_hint(s).and_then(|a| crate::tls::normalize_url(&a, tls).ok());
        let reason = match code {
            Some(c) => format!("{:?} ({c}): {}", s.code(), s.message()),
            None => format!("{:?}: {}", s.code(), s.message()),
        };
        let refused = match code {
            Some(codes::UNAUTHENTICATED) => Some(Refused::Unauthenticated(s.message().to_string())),
            Some(codes::PERMISSION_DENIED) => Some(Refused::PermissionDenied(s.message().to_string())),
            _ => None,
        };
        Failure { ends_session, refused, leader, reason }
    }
}

/// What happened.
#[derive(Debug)]
pub enum Event {
    /// Time passed (the caller reached [`Session::next_wakeup_ms`]).
    Tick,
    /// Shut down gracefully.
    Shutdown,
    /// The stream asked for by [`Action::Open`] could not be opened.
    OpenFailed(Failure),
    /// A message on the open stream; `wall_ms` is the worker's wall clock
    /// (ms since the Unix epoch), used only for deadlines from old servers.
    Inbound { msg: Out, wall_ms: u64 },
    /// The open stream ended: `None` when it closed cleanly.
    StreamEnded(Option<Failure>),
    /// A handler returned (or panicked), with the lines it logged since its
    /// buffer was last collected.
    HandlerDone { key: AttemptKey, outcome: Outcome, logs: LogBatch },
    /// A handler's latest progress.
    Progress { key: AttemptKey, progress_bp: u32, message: String },
    /// An attempt's log buffer reached its flush bound.
    LogsFull(AttemptKey),
    /// What [`Action::CollectLogs`] took from the attempt's buffer.
    LogsCollected { key: AttemptKey, batch: LogBatch },
}

/// What to do, in order.
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    /// Drop any current stream, connect to `url` and open a session stream
    /// whose first message is `register`.
    Open { url: String, register: proto::Register },
    /// Drop the current stream (or the open in progress).
    Close,
    /// Send on the current stream.
    Send(proto::WorkerMessage),
    /// Run the handler for a new attempt. `workflow`: what a workflow
    /// step's handler may read (`Assignment.workflow`).
    Start {
        key: AttemptKey,
        attempt: u32,
        payload: Vec<u8>,
        deadline_ms: u64,
        workflow: Option<Box<proto::WorkflowContext>>,
    },
    /// Trip the attempt's cancellation token.
    Cancel(AttemptKey),
    /// Abort the attempt's handler task.
    Abort(AttemptKey),
    /// Take what the attempt's log buffer holds and step it back as
    /// [`Event::LogsCollected`].
    CollectLogs(AttemptKey),
}

/// The session the worker holds with the cluster.
#[derive(Debug, Clone, Copy)]
struct Lease {
    session: u64,
    epoch: u64,
    /// The cluster renewed the lease no earlier than this: the send time of
    /// the newest acknowledged heartbeat, or of the register that created the
    /// session. The cluster cannot expire it before this + ttl.
    renewed_from_ms: u64,
}

/// The state of the connection.
#[derive(Debug)]
enum Link {
    /// No stream; open one at `retry_at_ms`.
    Down { retry_at_ms: u64 },
    /// An open is in flight (until `Registered` arrives).
    Opening { url: String, started_ms: u64, give_up_at_ms: u64 },
    /// Registered on `url`.
    Up(Up),
    /// `Deregister` sent; waiting for the stream to end.
    Leaving { give_up_at_ms: u64 },
}

#[derive(Debug)]
struct Up {
    url: String,
    /// When the last heartbeat ack (or `Registered`) arrived.
    last_ack_ms: u64,
    next_heartbeat_ms: u64,
    /// Heartbeats awaiting an ack: (seq, sent at), oldest first.
    in_flight: VecDeque<(u64, u64)>,
}

/// A running attempt.
#[derive(Debug)]
struct Attempt {
    /// Local deadline (this worker's clock).
    deadline_at_ms: Option<u64>,
    /// Set once silenced: its cancellation fired, its result will never be
    /// reported, and its task is aborted at this instant.
    abort_at_ms: Option<u64>,
    /// When the last progress update was sent.
    progress_sent_ms: Option<u64>,
    /// The latest progress update not yet sent.
    progress_pending: Option<proto::Progress>,
    /// When its log buffer is next collected.
    logs_due_ms: u64,
}

impl Attempt {
    fn live(&self) -> bool {
        self.abort_at_ms.is_none()
    }

    fn progress_due_ms(&self) -> Option<u64> {
        self.progress_pending.as_ref()?;
        Some(self.progress_sent_ms.map_or(0, |t| t + PROGRESS_MIN_INTERVAL_MS))
    }
}

/// A finished attempt's report, until the cluster acknowledges it.
#[derive(Debug)]
struct Report {
    msg: proto::WorkerMessage,
    complete: bool,
    /// Waiting to be resent (after `RETRY_LATER`); `None` once sent on the
    /// current stream, or while no stream is up (sent on the next one).
    resend_at_ms: Option<u64>,
    /// `RETRY_LATER` answers so far.
    refusals: u32,
    /// Log lines the report carries (counted as dropped if it is refused).
    log_lines: u64,
}

/// A `Logs` message sent and not yet acknowledged.
#[derive(Debug)]
struct LogsOut {
    msg: proto::WorkerMessage,
    lines: u64,
    bytes: usize,
    /// Like [`Report::resend_at_ms`].
    resend_at_ms: Option<u64>,
    refusals: u32,
}

#[derive(Debug, Clone, Copy)]
struct Drain {
    since_ms: u64,
}

/// A worker's session state machine. See the module docs.
pub struct Session {
    cfg: Config,
    rng: StdRng,
    ttl_ms: u64,
    heartbeat_ms: u64,
    lease: Option<Lease>,
    link: Link,
    running: BTreeMap<AttemptKey, Attempt>,
    unacked: BTreeMap<AttemptKey, Report>,
    /// Logs messages awaiting their ack, by attempt and `seq` (sent order).
    logs_unacked: BTreeMap<(AttemptKey, u64), LogsOut>,
    /// Bytes of messages in `logs_unacked`.
    logs_unacked_bytes: usize,
    next_log_seq: u64,
    stats: WorkerStats,
    drain: Option<Drain>,
    next_seq: u64,
    /// Round-robin position in `cfg.urls`.
    cursor: usize,
    /// Where to open next (a leader hint).
    hint: Option<String>,
    /// A node that went silent, skipped until the given instant.
    avoid: Option<(String, u64)>,
    /// Consecutive failures to get a session up.
    failures: u32,
    finished: bool,
    /// The cluster refused the credential: the error the worker stops with.
    refusal: Option<Refused>,
}

/// Cut `s` to at most `max` bytes, at a character boundary.
fn truncate_utf8(mut s: String, max: usize) -> String {
    if s.len() > max {
        let mut end = max;
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        s.truncate(end);
    }
    s
}

/// Bound of the delay before resending a message refused `refusals` (≥ 1)
/// times with `RETRY_LATER`.
fn retry_bound_ms(refusals: u32) -> u64 {
    REPORT_RETRY_BASE_MS.saturating_mul(1u64 << (refusals - 1).min(16)).min(REPORT_RETRY_MAX_MS)
}

fn msg(m: In) -> proto::WorkerMessage {
    proto::WorkerMessage { msg: Some(m) }
}

fn fail(key: &AttemptKey, error: String, retryable: bool) -> In {
    In::Fail(proto::Fail {
        task: key.task(),
        token: key.token,
        error: truncate_utf8(error, MAX_ERROR_BYTES),
        retryable,
        log_chunk: None,
    })
}

impl Session {
    pub fn new(cfg: Config) -> Session {
        assert!(!cfg.urls.is_empty(), "a worker needs at least one endpoint");
        Session {
            rng: StdRng::seed_from_u64(cfg.seed),
            cfg,
            ttl_ms: TTL_BEFORE_REGISTERED_MS,
            heartbeat_ms: HEARTBEAT_BEFORE_REGISTERED_MS,
            lease: None,
            link: Link::Down { retry_at_ms: 0 },
            running: BTreeMap::new(),
            unacked: BTreeMap::new(),
            logs_unacked: BTreeMap::new(),
            logs_unacked_bytes: 0,
            next_log_seq: 1,
            stats: WorkerStats::default(),
            drain: None,
            next_seq: 1,
            cursor: 0,
            hint: None,
            avoid: None,
            failures: 0,
            finished: false,
            refusal: None,
        }
    }

    pub fn stats(&self) -> &WorkerStats {
        &self.stats
    }

    /// Shut down completely: nothing runs, nothing is left to report.
    pub fn is_finished(&self) -> bool {
        self.finished
    }

    /// Why the worker stopped, if the cluster refused its credential.
    pub fn refusal(&self) -> Option<crate::Error> {
        self.refusal.as_ref().map(Refused::to_error)
    }

    /// Silence on a live stream after which the worker reattaches elsewhere:
    /// a stalled leader keeps its TCP connections open, and a new leader keeps
    /// the session for only one TTL after taking over. Also bounds one open.
    fn reconnect_after_ms(&self) -> u64 {
        (2 * self.heartbeat_ms).max(self.ttl_ms / 3)
    }

    /// See [`FENCE_MARGIN_TTL_DIVISOR`]; at most half the TTL.
    fn fence_margin_ms(&self) -> u64 {
        (self.ttl_ms / FENCE_MARGIN_TTL_DIVISOR).max(FENCE_MARGIN_MIN_MS).min(self.ttl_ms / 2)
    }

    /// When the worker must have stopped its handlers, if it holds a lease.
    fn fence_at_ms(&self) -> Option<u64> {
        self.lease.map(|l| l.renewed_from_ms + self.ttl_ms - self.fence_margin_ms())
    }

    fn has_live_attempts(&self) -> bool {
        self.running.values().any(Attempt::live)
    }

    /// Attempts the worker knows (running, or finished and unacknowledged):
    /// a resync of one of them is not started again.
    fn knows(&self, key: &AttemptKey) -> bool {
        self.running.contains_key(key) || self.unacked.contains_key(key)
    }

    /// Attempts tracked; bounded by [`TRACKED_ATTEMPTS_MAX`].
    pub fn tracked(&self) -> usize {
        self.running.len() + self.unacked.len()
    }

    /// The instant of the next timer, if any.
    pub fn next_wakeup_ms(&self) -> Option<u64> {
        if self.finished {
            return None;
        }
        let mut t: Option<u64> = None;
        let mut at = |x: u64| t = Some(t.map_or(x, |t| t.min(x)));
        if self.has_live_attempts()
            && let Some(f) = self.fence_at_ms()
        {
            at(f);
        }
        for a in self.running.values() {
            match (a.abort_at_ms, a.deadline_at_ms) {
                (Some(abort), _) => at(abort),
                (None, Some(deadline)) => at(deadline),
                (None, None) => {}
            }
            if self.lease.is_some() && self.may_collect_logs() {
                at(a.logs_due_ms);
            }
        }
        if let Some(d) = self.drain {
            if self.has_live_attempts() {
                at(self.grace_ends_ms(d));
            }
            at(self.give_up_ms(d));
        }
        match &self.link {
            // While draining without a session nothing is opened again.
            Link::Down { retry_at_ms } => {
                if self.drain.is_none() || self.lease.is_some() {
                    at(*retry_at_ms)
                }
            }
            Link::Opening { give_up_at_ms, .. } | Link::Leaving { give_up_at_ms } => at(*give_up_at_ms),
            Link::Up(up) => {
                at(up.last_ack_ms + self.reconnect_after_ms());
                at(up.next_heartbeat_ms);
                if let Some(d) = self.drain {
                    at(self.deregister_by_ms(d));
                }
                self.unacked.values().filter_map(|r| r.resend_at_ms).for_each(&mut at);
                self.logs_unacked.values().filter_map(|l| l.resend_at_ms).for_each(&mut at);
                self.running.values().filter(|a| a.live()).filter_map(Attempt::progress_due_ms).for_each(&mut at);
            }
        }
        t
    }

    fn grace_ends_ms(&self, d: Drain) -> u64 {
        d.since_ms + self.cfg.shutdown_grace_ms
    }

    /// Past this, deregister even with reports unacknowledged: handlers were
    /// cancelled at the end of the grace and aborted one cancel grace later.
    fn deregister_by_ms(&self, d: Drain) -> u64 {
        self.grace_ends_ms(d) + 2 * CANCEL_GRACE_MS
    }

    /// Past this, stop without deregistering: the cluster was unreachable for
    /// a whole lease after the grace, so the session has expired anyway.
    fn give_up_ms(&self, d: Drain) -> u64 {
        self.deregister_by_ms(d) + self.ttl_ms
    }

    /// Handle one event at `now_ms`; returns the actions to perform in order.
    pub fn step(&mut self, event: Event, now_ms: u64) -> Vec<Action> {
        let mut out = Vec::new();
        if self.finished {
            return out;
        }
        match event {
            Event::Tick => {}
            Event::Shutdown => self.on_shutdown(now_ms, &mut out),
            Event::OpenFailed(f) => self.on_link_lost(now_ms, Some(f), &mut out),
            Event::StreamEnded(f) => self.on_link_lost(now_ms, f, &mut out),
            Event::Inbound { msg, wall_ms } => self.on_message(msg, now_ms, wall_ms, &mut out),
            Event::HandlerDone { key, outcome, logs } => self.on_done(key, outcome, logs, &mut out),
            Event::Progress { key, progress_bp, message } => self.on_progress(key, progress_bp, message),
            Event::LogsFull(key) => self.on_logs_full(key, now_ms, &mut out),
            Event::LogsCollected { key, batch } => self.on_logs_collected(key, batch, &mut out),
        }
        self.poll(now_ms, &mut out);
        out
    }

    fn on_shutdown(&mut self, now: u64, out: &mut Vec<Action>) {
        if self.drain.is_some() {
            return;
        }
        tracing::info!(worker = %self.cfg.name, running = self.running.len(), "draining before shutdown");
        self.drain = Some(Drain { since_ms: now });
        if matches!(self.link, Link::Up(_)) {
            out.push(Action::Send(msg(In::Drain(proto::Drain {}))));
        }
    }

    fn on_link_lost(&mut self, now: u64, failure: Option<Failure>, out: &mut Vec<Action>) {
        match &self.link {
            Link::Down { .. } => return, // stale: that stream was already dropped
            Link::Leaving { .. } => {
                // The deregister ended the stream (or failed: the lease ends it).
                self.link = Link::Down { retry_at_ms: u64::MAX };
                self.lease = None;
                self.finish(out);
                return;
            }
            Link::Opening { .. } | Link::Up(_) => {}
        }
        let reason = failure.as_ref().map_or("the stream closed", |f| f.reason.as_str());
        if let Some(e) = failure.as_ref().and_then(|f| f.refused.clone()) {
            tracing::error!(worker = %self.cfg.name, reason, "the cluster refused the worker's credential; stopping");
            self.refusal = Some(e);
            self.lease = None;
            self.finish(out);
            return;
        }
        tracing::debug!(worker = %self.cfg.name, reason, "worker stream lost; reconnecting");
        if let Some(f) = failure {
            if f.ends_session && self.lease.is_some() {
                tracing::warn!(worker = %self.cfg.name, reason = %f.reason, "session ended; registering again");
                self.end_session(now, out);
            }
            if let Some(l) = f.leader {
                self.hint = Some(l);
            }
        }
        self.down(now);
    }

    /// Back off before the next open.
    fn down(&mut self, now: u64) {
        self.failures = self.failures.saturating_add(1);
        let bound =
            RECONNECT_BACKOFF_BASE_MS.saturating_mul(1u64 << self.failures.min(16)).min(RECONNECT_BACKOFF_MAX_MS);
        let wait = self.rng.random_range(0..=bound);
        self.link = Link::Down { retry_at_ms: now + wait };
    }

    /// Skip `url` (and hints naming it) for one lease.
    fn avoid(&mut self, url: String, now: u64) {
        self.avoid = Some((url, now + self.ttl_ms));
    }

    /// The session is gone (ended by the cluster, replaced, or given up by
    /// self-fencing): its attempts belong to it, so stop them quietly and
    /// drop their reports, which could only be fenced now.
    fn end_session(&mut self, now: u64, out: &mut Vec<Action>) {
        let live: Vec<AttemptKey> = self.running.iter().filter(|(_, a)| a.live()).map(|(k, _)| *k).collect();
        for key in live {
            self.silence(key, now, "its session ended", out);
        }
        self.drop_unacked();
        self.lease = None;
    }

    /// Cancel an attempt: its result will never be reported, and its task is
    /// aborted after [`CANCEL_GRACE`].
    fn silence(&mut self, key: AttemptKey, now: u64, why: &str, out: &mut Vec<Action>) {
        let Some(a) = self.running.get_mut(&key) else { return };
        if a.abort_at_ms.is_some() {
            return;
        }
        a.abort_at_ms = Some(now + CANCEL_GRACE_MS);
        a.progress_pending = None;
        tracing::info!(job = key.job, shard = key.shard, token = key.token, why, "attempt cancelled");
        out.push(Action::Cancel(key));
    }

    fn on_message(&mut self, m: Out, now: u64, wall_ms: u64, out: &mut Vec<Action>) {
        match m {
            Out::Registered(r) => self.on_registered(r, now, out),
            Out::HeartbeatAck(a) => self.on_heartbeat_ack(a.seq, now),
            Out::Assignment(a) => self.on_assignment(a, now, wall_ms, out),
            Out::Cancel(c) => {
                if let Some(t) = &c.task {
                    let key = AttemptKey::of(t, c.token);
                    tracing::info!(job = key.job, shard = key.shard, reason = %c.reason, "the cluster cancelled an attempt");
                    self.silence(key, now, "cancelled by the cluster", out);
                }
            }
            Out::ReportAck(a) => self.on_report_ack(a, now),
        }
    }

    fn on_registered(&mut self, r: proto::Registered, now: u64, out: &mut Vec<Action>) {
        let (url, started_ms) = match &self.link {
            Link::Opening { url, started_ms, .. } => (url.clone(), *started_ms),
            _ => return, // the server sends it once, first
        };
        self.ttl_ms = r.ttl_ms.max(1);
        self.heartbeat_ms = r.heartbeat_interval_ms.max(1);
        if r.resumed {
            if !self.lease.is_some_and(|l| l.session == r.session && l.epoch == r.epoch) {
                // Not the session we asked for: start over with a new one.
                tracing::warn!(worker = %self.cfg.name, session = r.session, "resumed a session not held; registering again");
                self.end_session(now, out);
                out.push(Action::Close);
                self.link = Link::Down { retry_at_ms: now };
                return;
            }
            // The lease is renewed by the first heartbeat's ack, not by this.
        } else {
            // A new session: attempts of any older one are fenced or
            // reassigned. Its lease began no earlier than this open.
            self.end_session(now, out);
            self.lease = Some(Lease { session: r.session, epoch: r.epoch, renewed_from_ms: started_ms });
        }
        tracing::info!(worker = %self.cfg.name, session = r.session, resumed = r.resumed, url = %url, "worker registered");
        self.link = Link::Up(Up { url, last_ack_ms: now, next_heartbeat_ms: now, in_flight: VecDeque::new() });
        self.failures = 0;
        self.hint = None;
        self.avoid = None;
        // Deliver what was logged and what finished while we were away; an
        // attempt's lines before its report, as when they were first sent.
        for l in self.logs_unacked.values_mut() {
            l.resend_at_ms = None;
            out.push(Action::Send(l.msg.clone()));
        }
        for rep in self.unacked.values_mut() {
            rep.resend_at_ms = None;
            out.push(Action::Send(rep.msg.clone()));
        }
        if self.drain.is_some() {
            out.push(Action::Send(msg(In::Drain(proto::Drain {}))));
        }
    }

    fn on_heartbeat_ack(&mut self, seq: u64, now: u64) {
        let Link::Up(up) = &mut self.link else { return };
        let Some(&(_, sent_ms)) = up.in_flight.iter().find(|(s, _)| *s == seq) else { return };
        up.in_flight.retain(|(s, _)| *s > seq);
        up.last_ack_ms = now;
        if let Some(l) = &mut self.lease {
            l.renewed_from_ms = l.renewed_from_ms.max(sent_ms);
        }
    }

    fn on_assignment(&mut self, a: proto::Assignment, now: u64, wall_ms: u64, out: &mut Vec<Action>) {
        if !matches!(self.link, Link::Up(_)) || self.lease.is_none() {
            return;
        }
        let Some(t) = &a.task else { return };
        let key = AttemptKey::of(t, a.token);
        if self.knows(&key) {
            // A resync of an attempt we have: running, or finished and its
            // report already resent on this stream.
            return;
        }
        if self.tracked() >= TRACKED_ATTEMPTS_MAX {
            tracing::error!(
                job = key.job,
                shard = key.shard,
                tracked = self.tracked(),
                "too many attempts tracked; assignment refused"
            );
            return;
        }
        // Measured on this worker's clock from receipt; old servers send only
        // the absolute deadline, compared with the wall clock.
        let deadline_at_ms = if a.deadline_in_ms > 0 {
            Some(now + a.deadline_in_ms)
        } else if a.deadline_ms > 0 {
            Some(now + a.deadline_ms.saturating_sub(wall_ms))
        } else {
            None
        };
        self.running.insert(
            key,
            Attempt {
                deadline_at_ms,
                abort_at_ms: None,
                progress_sent_ms: None,
                progress_pending: None,
                logs_due_ms: now + LOG_FLUSH_INTERVAL_MS,
            },
        );
        out.push(Action::Start {
            key,
            attempt: a.attempt,
            payload: a.payload,
            deadline_ms: a.deadline_ms,
            workflow: a.workflow.map(Box::new),
        });
    }

    fn on_report_ack(&mut self, a: proto::ReportAck, now: u64) {
        use proto::ReportStatus as S;
        let kind = proto::ReportKind::try_from(a.kind);
        if kind == Ok(proto::ReportKind::Logs) {
            return self.on_logs_ack(a, now);
        }
        if !matches!(kind, Ok(proto::ReportKind::Complete | proto::ReportKind::Fail)) {
            return; // progress is best effort
        }
        let Some(t) = &a.task else { return };
        let key = AttemptKey::of(t, a.token);
        let Some(rep) = self.unacked.get_mut(&key) else { return };
        let status = S::try_from(a.status);
        if status == Ok(S::RetryLater) {
            rep.refusals = rep.refusals.saturating_add(1);
            let bound = retry_bound_ms(rep.refusals);
            rep.resend_at_ms = Some(now + self.rng.random_range(bound / 2..=bound));
            tracing::debug!(
                job = key.job,
                shard = key.shard,
                refusals = rep.refusals,
                "node overloaded; report resent later"
            );
            return;
        }
        let (complete, log_lines) = (rep.complete, rep.log_lines);
        self.unacked.remove(&key);
        if !matches!(status, Ok(S::Accepted | S::Duplicate)) {
            self.stats.log_lines_dropped += log_lines;
        }
        match status {
            Ok(S::Accepted | S::Duplicate) => {
                if complete {
                    self.stats.completed += 1
                } else {
                    self.stats.failed += 1
                }
            }
            Ok(S::Fenced) => {
                self.stats.fenced += 1;
                tracing::warn!(
                    job = key.job,
                    shard = key.shard,
                    token = key.token,
                    "result fenced: another attempt owns this shard; dropped"
                );
            }
            _ => {
                self.stats.failed += 1;
                tracing::warn!(job = key.job, shard = key.shard, message = %a.message, "result refused");
            }
        }
    }

    fn on_done(&mut self, key: AttemptKey, outcome: Outcome, logs: LogBatch, out: &mut Vec<Action>) {
        let Some(a) = self.running.remove(&key) else {
            self.stats.log_lines_dropped += logs.lines.len() as u64 + logs.dropped;
            return;
        };
        if !a.live() || self.lease.is_none() {
            // A cancelled attempt's lines are sent too (the cluster keeps
            // them while its token is the shard's latest).
            self.send_logs(key, logs, out);
            self.stats.abandoned += 1;
            return;
        }
        // The last lines ride in the report when they fit there: one command
        // per attempt instead of two. Otherwise they go just before it, on
        // the same stream: the leader proposes one stream's messages in the
        // order they arrive.
        self.stats.log_lines_dropped += logs.dropped;
        let lines = logs.into_lines(); // with the marker of lines dropped, if any
        let (report_logs, log_lines) = if lines.iter().map(|l| l.message.len()).sum::<usize>() <= REPORT_LOG_BYTES_MAX {
            let n = lines.len() as u64;
            (lines, n)
        } else {
            self.send_logs(key, LogBatch { lines, dropped: 0 }, out);
            (Vec::new(), 0)
        };
        let (mut m, complete) = match outcome {
            Outcome::Finished(Ok(result)) if result.len() <= MAX_RESULT_BYTES => {
                (In::Complete(proto::Complete { task: key.task(), token: key.token, result, log_chunk: None }), true)
            }
            Outcome::Finished(Ok(result)) => {
                let why = format!("result of {} bytes exceeds the {MAX_RESULT_BYTES}-byte limit", result.len());
                (fail(&key, why, false), false)
            }
            Outcome::Finished(Err(e)) => (fail(&key, e.message, e.retryable), false),
            Outcome::Panicked(p) => (fail(&key, format!("handler panicked: {p}"), true), false),
        };
        let chunk = encode_chunk(&report_logs);
        match &mut m {
            In::Complete(c) => c.log_chunk = chunk,
            In::Fail(f) => f.log_chunk = chunk,
            other => unreachable!("a report is a Complete or a Fail: {other:?}"),
        }
        let m = msg(m);
        if matches!(self.link, Link::Up(_)) {
            out.push(Action::Send(m.clone()));
        }
        self.unacked.insert(key, Report { msg: m, complete, resend_at_ms: None, refusals: 0, log_lines });
    }

    fn on_progress(&mut self, key: AttemptKey, progress_bp: u32, message: String) {
        let Some(a) = self.running.get_mut(&key).filter(|a| a.live()) else { return };
        a.progress_pending = Some(proto::Progress {
            task: key.task(),
            token: key.token,
            progress_bp: progress_bp.min(PROGRESS_BP_MAX),
            message: truncate_utf8(message, PROGRESS_MESSAGE_MAX_BYTES),
        });
    }

    /// Collecting more log buffers would not overrun [`LOG_UNACKED_BYTES_MAX`]
    /// (one buffer may go past it; a final one always may).
    fn may_collect_logs(&self) -> bool {
        self.logs_unacked_bytes < LOG_UNACKED_BYTES_MAX
    }

    fn on_logs_full(&mut self, key: AttemptKey, now: u64, out: &mut Vec<Action>) {
        if !self.may_collect_logs() || self.lease.is_none() {
            return; // collected at a later interval, once acks made room
        }
        if let Some(a) = self.running.get_mut(&key) {
            a.logs_due_ms = now + LOG_FLUSH_INTERVAL_MS;
            out.push(Action::CollectLogs(key));
        }
    }

    fn on_logs_collected(&mut self, key: AttemptKey, batch: LogBatch, out: &mut Vec<Action>) {
        if self.running.contains_key(&key) {
            self.send_logs(key, batch, out);
        } else {
            self.stats.log_lines_dropped += batch.lines.len() as u64 + batch.dropped;
        }
    }

    /// Collect the log buffers whose interval has passed, of every attempt
    /// still running (a cancelled one too, while it stops).
    fn collect_due_logs(&mut self, now: u64, out: &mut Vec<Action>) {
        if !self.may_collect_logs() || self.lease.is_none() {
            return;
        }
        for (key, a) in self.running.iter_mut() {
            if now >= a.logs_due_ms {
                a.logs_due_ms = now + LOG_FLUSH_INTERVAL_MS;
                out.push(Action::CollectLogs(*key));
            }
        }
    }

    /// Send an attempt's lines (now if a stream is up, else when one is)
    /// and keep them until acknowledged. Without a session they are
    /// dropped: the attempt belonged to the session that ended.
    fn send_logs(&mut self, key: AttemptKey, batch: LogBatch, out: &mut Vec<Action>) {
        if batch.is_empty() {
            return;
        }
        if self.lease.is_none() {
            self.stats.log_lines_dropped += batch.lines.len() as u64 + batch.dropped;
            return;
        }
        self.stats.log_lines_dropped += batch.dropped;
        let (lines, bytes) = (batch.lines.len() as u64, batch.bytes());
        let seq = self.next_log_seq;
        self.next_log_seq += 1;
        let chunk = encode_chunk(&batch.into_lines());
        let m = msg(In::Logs(proto::Logs { task: key.task(), token: key.token, seq, chunk }));
        if matches!(self.link, Link::Up(_)) {
            out.push(Action::Send(m.clone()));
        }
        self.logs_unacked_bytes += bytes;
        self.logs_unacked.insert((key, seq), LogsOut { msg: m, lines, bytes, resend_at_ms: None, refusals: 0 });
    }

    fn on_logs_ack(&mut self, a: proto::ReportAck, now: u64) {
        use proto::ReportStatus as S;
        let Some(t) = &a.task else { return };
        let key = AttemptKey::of(t, a.token);
        let status = S::try_from(a.status);
        let Some(l) = self.logs_unacked.get_mut(&(key, a.seq)) else { return };
        if status == Ok(S::RetryLater) {
            l.refusals = l.refusals.saturating_add(1);
            let bound = retry_bound_ms(l.refusals);
            l.resend_at_ms = Some(now + self.rng.random_range(bound / 2..=bound));
            return;
        }
        let l = self.logs_unacked.remove(&(key, a.seq)).expect("found above");
        debug_assert!(self.logs_unacked_bytes >= l.bytes, "unacked log bytes out of step");
        self.logs_unacked_bytes -= l.bytes;
        match status {
            Ok(S::Accepted | S::Duplicate) => {}
            Ok(S::Fenced) => {
                self.stats.log_lines_dropped += l.lines;
                tracing::debug!(
                    job = key.job,
                    shard = key.shard,
                    token = key.token,
                    "log lines fenced: another attempt owns this shard"
                );
            }
            _ => {
                self.stats.log_lines_dropped += l.lines;
                tracing::warn!(job = key.job, shard = key.shard, message = %a.message, "log lines refused");
            }
        }
    }

    /// The session is gone: reports and lines not acknowledged will not be
    /// sent (they could only be fenced now). Counted as abandoned reports
    /// and dropped lines.
    fn drop_unacked(&mut self) {
        self.stats.abandoned += self.unacked.len() as u64;
        self.stats.log_lines_dropped += self.unacked.values().map(|r| r.log_lines).sum::<u64>();
        self.unacked.clear();
        self.drop_unacked_logs();
    }

    /// Lines not acknowledged will not be sent.
    fn drop_unacked_logs(&mut self) {
        self.stats.log_lines_dropped += self.logs_unacked.values().map(|l| l.lines).sum::<u64>();
        self.logs_unacked.clear();
        self.logs_unacked_bytes = 0;
    }

    /// Act on every timer due at `now`.
    fn poll(&mut self, now: u64, out: &mut Vec<Action>) {
        if self.finished {
            return;
        }
        if self.has_live_attempts() && self.fence_at_ms().is_some_and(|f| now >= f) {
            self.fence(now, out);
        }
        self.check_attempts(now, out);
        self.collect_due_logs(now, out);
        if let Some(d) = self.drain {
            if now >= self.give_up_ms(d) {
                tracing::warn!(worker = %self.cfg.name, "could not deregister within a lease after the grace; stopping");
                self.finish(out);
                return;
            }
            if now >= self.grace_ends_ms(d) {
                let live: Vec<AttemptKey> = self.running.iter().filter(|(_, a)| a.live()).map(|(k, _)| *k).collect();
                for key in live {
                    self.silence(key, now, "shutdown grace passed", out);
                }
            }
        }
        let silent_ms = match &self.link {
            Link::Up(up) => Some(now - up.last_ack_ms),
            _ => None,
        };
        match &self.link {
            Link::Down { retry_at_ms } => {
                if self.drain.is_some() && self.lease.is_none() {
                    // Nothing to report or deregister: stop once handlers have.
                    if self.running.is_empty() {
                        self.finish(out);
                    }
                } else if now >= *retry_at_ms {
                    self.open(now, out);
                }
            }
            Link::Opening { url, give_up_at_ms, .. } => {
                if now >= *give_up_at_ms {
                    tracing::debug!(worker = %self.cfg.name, url = %url, "no session opened in time; trying elsewhere");
                    let url = url.clone();
                    out.push(Action::Close);
                    self.avoid(url, now);
                    self.down(now);
                }
            }
            Link::Up(up) => {
                if silent_ms.is_some_and(|s| s >= self.reconnect_after_ms()) {
                    tracing::warn!(worker = %self.cfg.name, url = %up.url, silent_ms, "no heartbeat ack; reattaching elsewhere");
                    let url = up.url.clone();
                    out.push(Action::Close);
                    self.avoid(url, now);
                    self.down(now);
                } else {
                    self.poll_up(now, out);
                }
            }
            Link::Leaving { give_up_at_ms } => {
                if now >= *give_up_at_ms {
                    self.lease = None;
                    self.finish(out);
                }
            }
        }
    }

    /// Timers of a registered stream: deregister, heartbeat, resend, progress.
    fn poll_up(&mut self, now: u64, out: &mut Vec<Action>) {
        if let Some(d) = self.drain
            && ((self.running.is_empty() && self.unacked.is_empty()) || now >= self.deregister_by_ms(d))
        {
            // Everything reported (or abandoned): leave, so what is left is
            // reassigned now rather than after the TTL.
            out.push(Action::Send(msg(In::Deregister(proto::Deregister {}))));
            self.link = Link::Leaving { give_up_at_ms: now + self.reconnect_after_ms() };
            return;
        }
        let Link::Up(up) = &mut self.link else { return };
        if now >= up.next_heartbeat_ms {
            let seq = self.next_seq;
            self.next_seq += 1;
            up.in_flight.push_back((seq, now));
            if up.in_flight.len() > HEARTBEATS_IN_FLIGHT_MAX {
                up.in_flight.pop_front();
            }
            up.next_heartbeat_ms = now + self.heartbeat_ms;
            out.push(Action::Send(msg(In::Heartbeat(proto::Heartbeat { seq }))));
        }
        for l in self.logs_unacked.values_mut() {
            if l.resend_at_ms.is_some_and(|t| now >= t) {
                l.resend_at_ms = None;
                out.push(Action::Send(l.msg.clone()));
            }
        }
        for rep in self.unacked.values_mut() {
            if rep.resend_at_ms.is_some_and(|t| now >= t) {
                rep.resend_at_ms = None;
                out.push(Action::Send(rep.msg.clone()));
            }
        }
        for a in self.running.values_mut() {
            if a.live() && a.progress_due_ms().is_some_and(|t| now >= t) {
                let p = a.progress_pending.take().expect("due implies pending");
                a.progress_sent_ms = Some(now);
                out.push(Action::Send(msg(In::Progress(p))));
            }
        }
    }

    /// Deadlines and aborts of running attempts.
    fn check_attempts(&mut self, now: u64, out: &mut Vec<Action>) {
        let mut expired = Vec::new();
        let mut late = Vec::new();
        for (k, a) in &self.running {
            match (a.abort_at_ms, a.deadline_at_ms) {
                (Some(abort), _) if now >= abort => late.push(*k),
                (None, Some(deadline)) if now >= deadline => expired.push(*k),
                _ => {}
            }
        }
        for key in expired {
            self.silence(key, now, "attempt deadline passed", out);
        }
        for key in late {
            self.running.remove(&key);
            self.stats.abandoned += 1;
            tracing::warn!(
                job = key.job,
                shard = key.shard,
                token = key.token,
                "handler did not stop in time; abandoned"
            );
            out.push(Action::Abort(key));
        }
    }

    /// No heartbeat acknowledged for most of the lease: the cluster may
    /// reassign this worker's shards at any moment. Stop every handler and
    /// give up the session: resuming it would leave the cluster believing
    /// this worker still runs those attempts; a new session ends the old one
    /// and releases them at once.
    fn fence(&mut self, now: u64, out: &mut Vec<Action>) {
        tracing::warn!(worker = %self.cfg.name, running = self.running.len(), "no heartbeat ack within the lease; self-fencing");
        self.end_session(now, out);
        match &self.link {
            Link::Opening { url, .. } | Link::Up(Up { url, .. }) => {
                let url = url.clone();
                out.push(Action::Close);
                self.avoid(url, now);
                self.link = Link::Down { retry_at_ms: now };
            }
            Link::Down { .. } | Link::Leaving { .. } => {}
        }
    }

    /// Open a stream: to the leader hint, else the next endpoint, skipping a
    /// node that went silent unless it is the only one.
    fn open(&mut self, now: u64, out: &mut Vec<Action>) {
        let avoided = self.avoid.as_ref().filter(|(_, until)| now < *until).map(|(u, _)| u.clone());
        let url = match self.hint.take().filter(|h| Some(h) != avoided.as_ref()) {
            Some(h) => h,
            None => {
                let n = self.cfg.urls.len();
                let mut url = self.cfg.urls[self.cursor % n].clone();
                self.cursor += 1;
                if n > 1 && Some(&url) == avoided.as_ref() {
                    url = self.cfg.urls[self.cursor % n].clone();
                    self.cursor += 1;
                }
                url
            }
        };
        let (resume_session, resume_epoch) = self.lease.map_or((0, 0), |l| (l.session, l.epoch));
        let register = proto::Register {
            name: self.cfg.name.clone(),
            labels: self.cfg.labels.clone().into_iter().collect(),
            capacity: self.cfg.capacity,
            resume_session,
            resume_epoch,
        };
        out.push(Action::Open { url: url.clone(), register });
        self.link = Link::Opening { url, started_ms: now, give_up_at_ms: now + self.reconnect_after_ms() };
    }

    /// Stop for good: abort what still runs and drop what was not acknowledged.
    fn finish(&mut self, out: &mut Vec<Action>) {
        if !matches!(self.link, Link::Down { .. }) {
            out.push(Action::Close);
            self.link = Link::Down { retry_at_ms: u64::MAX };
        }
        for key in std::mem::take(&mut self.running).into_keys() {
            self.stats.abandoned += 1;
            out.push(Action::Abort(key));
        }
        self.drop_unacked();
        self.finished = true;
        tracing::info!(worker = %self.cfg.name, stats = ?self.stats, "worker stopped");
    }
}

#[cfg(test)]
#[path = "session_tests.rs"]
mod tests;
