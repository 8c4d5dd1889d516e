//! Proposal batching. One owner task takes commands from two bounded queues
//! and groups whatever is waiting into one `Batch` entry, so concurrent
//! requests share one log append and one fsync. A few proposals may be in
//! flight at once; while they are, new commands pile up and form the next,
//! larger batch.
//!
//! The leader's own proposals (expiries, attempt timeouts, assignments) come
//! through a separate control queue that is always served first, so a flood
//! of client writes can delay them by at most one batch, never starve them.
//!
//! Client commands reach the log in the order they were queued: batches are
//! filled from the queue in order and handed to Raft by the owner task, one
//! after the other, before their commits are awaited concurrently. A worker
//! stream relies on it: an attempt's last log lines are queued before its
//! report, so they are stored before the report can end the attempt and let
//! a new one fence them.

use std::future::Future;
use std::sync::Arc;
use std::time::Instant;

use tokio::sync::{Semaphore, mpsc, oneshot};

use baton_raft_store::limits::MAX_ENTRY_BYTES;
use baton_raft_store::{Command, Proposal, Raft, Response, TypeConfig};

use crate::clock::NodeClock;
use crate::config::Limits;
use crate::error::ApiError;

/// Leader proposals waiting for the batcher. The leader keeps at most one
/// assignment and one timeout proposal in flight, plus expiries, which its
/// rate limit bounds; a full queue fails the proposal, and the leader
/// proposes again at its next check.
pub const CONTROL_QUEUE: usize = 1024;

struct Pending {
    cmd: Command,
    bytes: usize,
    reply: oneshot::Sender<Result<Response, ApiError>>,
}

/// Handle to the batcher; cheap to clone.
#[derive(Clone)]
pub struct Proposer {
    tx: mpsc::Sender<Pending>,
    control: mpsc::Sender<Pending>,
    clock: Arc<NodeClock>,
}

/// A command's size in its entry, to bound batches. Measured by walking the
/// command with a counting writer (no copy); an estimate by kind once
/// counted a workflow carrying 1 MiB of step payloads as 64 bytes, letting
/// batches grow past the entry limit. A command that cannot be encoded is
/// counted as a whole entry, so it travels alone and fails alone.
fn approx_bytes(cmd: &Command) -> usize {
    cmd.encoded_len().unwrap_or(MAX_ENTRY_BYTES)
}

fn enqueue(q: &mpsc::Sender<Pending>, p: Pending) -> Result<(), ApiError> {
    q.try_send(p).map_err(|e| match e {
        mpsc::error::TrySendError::Full(_) => ApiError::Overloaded("proposal queue is full; retry later".into()),
        mpsc::error::TrySendError::Closed(_) => ApiError::Unavailable("node is shutting down".into()),
    })
}

impl Proposer {
    pub fn spawn(raft: Raft, limits: &Limits, clock: Arc<NodeClock>) -> Proposer {
        let (tx, rx) = mpsc::channel(limits.proposal_queue);
        let (control, control_rx) = mpsc::channel(CONTROL_QUEUE);
        tokio::spawn(run(raft, rx, control_rx, limits.clone(), clock.clone()));
        Proposer { tx, control, clock }
    }

    /// The log time this node would stamp an entry with now: what the edge
    /// checks time bounds against (e.g. `not_before_ms`) before proposing,
    /// as apply() will check them against the entry's time.
    pub fn log_now_ms(&self) -> u64 {
        self.clock.now().log_ms
    }

    /// Propose one client command and wait for its reply. `Err` means the
    /// command was not committed by this call (it may still commit later if
    /// the leader lost leadership after appending it; retries must be
    /// idempotent). A full queue is `Overloaded`: nothing was proposed.
    pub async fn propose(&self, cmd: Command) -> Result<Response, ApiError> {
        self.propose_on(&self.tx, cmd).await
    }

    /// Propose one of the leader's own commands, ahead of client traffic.
    pub async fn propose_control(&self, cmd: Command) -> Result<Response, ApiError> {
        self.propose_on(&self.control, cmd).await
    }

    /// Queue one client command now, behind every command queued before
    /// this call, and return its reply to await. `Err` (nothing queued) is
    /// `Overloaded` when the queue is full.
    pub fn enqueue(
        &self,
        cmd: Command,
    ) -> Result<impl Future<Output = Result<Response, ApiError>> + Send + 'static, ApiError> {
        let (reply, rx) = oneshot::channel();
        enqueue(&self.tx, Pending { bytes: approx_bytes(&cmd), cmd, reply })?;
        Ok(async move { rx.await.map_err(|_| ApiError::Unavailable("node is shutting down".into()))? })
    }

    async fn propose_on(&self, q: &mpsc::Sender<Pending>, cmd: Command) -> Result<Response, ApiError> {
        let (reply, rx) = oneshot::channel();
        enqueue(q, Pending { bytes: approx_bytes(&cmd), cmd, reply })?;
        rx.await.map_err(|_| ApiError::Unavailable("node is shutting down".into()))?
    }
}

async fn run(
    raft: Raft,
    mut rx: mpsc::Receiver<Pending>,
    mut control: mpsc::Receiver<Pending>,
    limits: Limits,
    clock: Arc<NodeClock>,
) {
    let inflight = Arc::new(Semaphore::new(limits.max_inflight_proposals));
    // A command that did not fit the last batch's byte budget opens the next.
    let mut carry: Option<Pending> = None;
    loop {
        let first = match carry.take() {
            Some(p) => p,
            None => tokio::select! {
                biased;
                Some(p) = control.recv() => p,
                Some(p) = rx.recv() => p,
                else => return,
            },
        };
        let permit = match inflight.clone().acquire_owned().await {
            Ok(p) => p,
            Err(_) => return,
        };
        let (batch, rest) = fill_batch(first, &mut control, &mut rx, &limits);
        carry = rest;
        metrics::histogram!("baton_proposal_batch_size").record(batch.len() as f64);
        // Handed to Raft here, in order; only the wait runs concurrently.
        let (cmd, replies) = entry(batch);
        let started = Instant::now();
        // Log time, not the wall clock: see `clock.rs`.
        let sent = raft.client_write_ff(Proposal { proposed_at_ms: clock.now().log_ms, cmd }).await;
        tokio::spawn(async move {
            let _permit = permit;
            let result = match sent {
                Ok(rx) => match rx.await {
                    Ok(r) => r.map_err(|e| ApiError::from(openraft::error::RaftError::APIError(e))),
                    Err(_) => Err(ApiError::Unavailable("raft stopped before answering".into())),
                },
                Err(fatal) => Err(ApiError::Unavailable(format!("raft: {fatal}"))),
            };
            metrics::histogram!("baton_commit_latency_seconds").record(started.elapsed().as_secs_f64());
            reply(result, replies);
        });
    }
}

/// Collect what queued while we waited for a slot into one batch: the
/// leader's own commands first, then clients', while the entry stays within
/// its byte budget (one entry must replicate within a heartbeat interval) and
/// its command count. Returns the batch and the command that did not fit,
/// which opens the next batch. A command that is itself a batch is never
/// combined with others.
fn fill_batch(
    first: Pending,
    control: &mut mpsc::Receiver<Pending>,
    client: &mut mpsc::Receiver<Pending>,
    limits: &Limits,
) -> (Vec<Pending>, Option<Pending>) {
    let mut bytes = first.bytes;
    // A command that is a batch already (the leader's due fires) goes in an
    // entry of its own: batches do not nest, and apply() refuses an entry
    // that nests them, every command in it.
    if matches!(first.cmd, Command::Batch(_)) {
        return (vec![first], None);
    }
    let mut batch = vec![first];
    for q in [control, client] {
        while batch.len() < limits.max_batch_commands {
            let Ok(p) = q.try_recv() else { break };
            if bytes + p.bytes > limits.max_batch_bytes || matches!(p.cmd, Command::Batch(_)) {
                return (batch, Some(p));
            }
            bytes += p.bytes;
            batch.push(p);
        }
    }
    (batch, None)
}

type Reply = oneshot::Sender<Result<Response, ApiError>>;

/// A batch as one entry's command, and its commands' reply channels in order.
fn entry(mut batch: Vec<Pending>) -> (Command, Vec<Reply>) {
    if batch.len() == 1 {
        let p = batch.pop().expect("one element");
        (p.cmd, vec![p.reply])
    } else {
        let (cmds, replies) = batch.into_iter().map(|p| (p.cmd, p.reply)).unzip();
        (Command::Batch(cmds), replies)
    }
}

/// Hand each command of an entry its own reply.
fn reply(result: Result<openraft::raft::ClientWriteResponse<TypeConfig>, ApiError>, replies: Vec<Reply>) {
    match result {
        Ok(resp) => match (resp.data, replies.len()) {
            (Response::Batch(items), n) if n > 1 && items.len() == n => {
                for (r, reply) in items.into_iter().zip(replies) {
                    let _ = reply.send(Ok(r));
                }
            }
            (r, 1) => {
                let _ = replies.into_iter().next().expect("one reply").send(Ok(r));
            }
            (r, n) => {
                let e = ApiError::Internal(format!("batch of {n} got reply {r:?}"));
                replies.into_iter().for_each(|reply| drop(reply.send(Err(e.clone()))));
            }
        },
        Err(e) => {
            for reply in replies {
                let _ = reply.send(Err(e.clone()));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pending(cmd: Command) -> Pending {
        let (reply, _) = oneshot::channel();
        Pending { bytes: approx_bytes(&cmd), cmd, reply }
    }

    fn submit(bytes: usize) -> Command {
        let mut s = baton_raft_store::JobSpec::with_shards("ns", 1);
        s.payloads = vec![serde_bytes::ByteBuf::from(vec![0; bytes])];
        Command::SubmitJob(s)
    }

    fn expire(session: u64) -> Command {
        Command::ExpireWorker { session, epoch: 1 }
    }

    #[test]
    fn the_leaders_commands_go_first_and_entries_stay_within_their_byte_budget() {
        // Room for the 100-byte submit and both expiries, not for the 600-byte
        // submit on top; the 600- and 10-byte submits fit together.
        let size = |c: Command| approx_bytes(&c);
        let budget = size(submit(100)) + size(expire(1)) + size(expire(2)) + size(submit(600)) - 1;
        assert!(size(submit(600)) + size(submit(10)) <= budget);
        let limits = Limits { max_batch_bytes: budget, max_batch_commands: 4, ..Limits::default() };
        let (ctl_tx, mut ctl) = mpsc::channel(16);
        let (cli_tx, mut cli) = mpsc::channel(16);
        for s in 1..=2 {
            ctl_tx.try_send(pending(expire(s))).unwrap();
        }
        for b in [100, 600, 10] {
            cli_tx.try_send(pending(submit(b))).unwrap();
        }
        let first = cli.try_recv().unwrap();
        let (batch, carry) = fill_batch(first, &mut ctl, &mut cli, &limits);
        let kinds: Vec<_> = batch.iter().map(|p| p.cmd.kind()).collect();
        assert_eq!(kinds, ["submit_job", "expire_worker", "expire_worker"]);
        assert!(batch.iter().map(|p| p.bytes).sum::<usize>() <= budget);
        // The 600-byte submit did not fit: it opens the next batch, in order.
        let carry = carry.expect("carried over");
        assert_eq!(carry.bytes, approx_bytes(&submit(600)));
        let (batch, carry) = fill_batch(carry, &mut ctl, &mut cli, &limits);
        assert_eq!(batch.len(), 2);
        assert!(carry.is_none());
    }

    /// Every kind is estimated at least at its encoded size, so a batch
    /// bounded by estimates is bounded in bytes (a workflow carrying its
    /// steps' payloads was once counted as 64 bytes).
    #[test]
    fn the_estimate_covers_the_encoded_size_of_every_kind() {
        use baton_raft_store::workflow::{ReduceSpec, StepKind, StepSpec, TriggerRule, WorkflowSpec};
        let mut job = baton_raft_store::JobSpec::with_shards("", 1);
        job.payloads = vec![serde_bytes::ByteBuf::from(vec![0; 300 * 1024])];
        let step = |name: &str| StepSpec {
            name: name.into(),
            depends_on: vec![],
            trigger: TriggerRule::AllSucceeded,
            kind: StepKind::Job {
                job: job.clone(),
                reduce: Some(ReduceSpec { payload: serde_bytes::ByteBuf::from(vec![1; 4096]) }),
                choice: false,
                dynamic: false,
            },
        };
        let wf = Command::SubmitWorkflow(WorkflowSpec {
            namespace: "ns".into(),
            name: "w".into(),
            labels: Default::default(),
            idempotency_key: None,
            steps: vec![step("a"), step("b"), step("c")],
            result_step: None,
        });
        let labels = (0..32).map(|i| (format!("k{i:0>120}"), "v".repeat(128))).collect();
        let cmds = [
            wf,
            submit(700 * 1024),
            Command::RegisterWorker { name: "w".repeat(128), labels, capacity: 1, namespaces: None },
            Command::CancelWorkflow { workflow: 1, reason: "r".repeat(4096) },
            Command::ResolveGate { workflow: 1, step: "s".repeat(128), approve: true, by: "b".repeat(4096) },
            Command::CancelJob { job: 1, reason: "r".repeat(4096) },
            Command::ReportProgress {
                task: baton_raft_store::TaskKey::new(1, 1),
                token: 1,
                progress_bp: 1,
                message: "m".repeat(1024),
            },
        ];
        for cmd in cmds {
            let exact = cmd.encoded_len().unwrap();
            assert!(approx_bytes(&cmd) >= exact, "{}: estimated {} < {exact}", cmd.kind(), approx_bytes(&cmd));
        }
    }

    /// The leader proposes some commands as a batch already (due schedule
    /// fires). Batched with others, the entry would nest batches, which
    /// apply() refuses whole: every command in it, clients' too, failed.
    /// Found by the chaos harness (a publish refused as "batches do not nest").
    #[test]
    fn a_batch_command_is_never_batched_with_others() {
        let limits = Limits::default();
        let fires = || Command::Batch(vec![Command::CollectGarbage, Command::CollectGarbage]);
        let (ctl_tx, mut ctl) = mpsc::channel(16);
        let (cli_tx, mut cli) = mpsc::channel(16);
        // A batch first: it goes alone.
        ctl_tx.try_send(pending(fires())).unwrap();
        cli_tx.try_send(pending(submit(10))).unwrap();
        let first = ctl.try_recv().unwrap();
        let (batch, carry) = fill_batch(first, &mut ctl, &mut cli, &limits);
        assert_eq!(batch.len(), 1);
        assert!(carry.is_none());
        assert_eq!(cli.len(), 1, "the submit waits for the next entry");
        // A batch behind other commands opens the next entry.
        ctl_tx.try_send(pending(fires())).unwrap();
        let first = cli.try_recv().unwrap();
        let (batch, carry) = fill_batch(first, &mut ctl, &mut cli, &limits);
        assert_eq!(batch.len(), 1);
        assert!(matches!(carry.map(|p| p.cmd), Some(Command::Batch(_))));
        // Whatever fill_batch returns makes a valid entry.
        let (ctl2, mut ctl) = mpsc::channel(16);
        let (cli2, mut cli) = mpsc::channel(16);
        for _ in 0..3 {
            cli2.try_send(pending(submit(10))).unwrap();
            ctl2.try_send(pending(fires())).unwrap();
        }
        let mut next = ctl.try_recv().ok();
        while let Some(first) = next.take().or_else(|| ctl.try_recv().ok()).or_else(|| cli.try_recv().ok()) {
            let (batch, carry) = fill_batch(first, &mut ctl, &mut cli, &limits);
            let (cmd, _) = entry(batch);
            assert!(cmd.validate().is_ok(), "{cmd:?}");
            next = carry;
        }
    }

    #[test]
    fn a_batch_never_holds_more_than_the_command_limit() {
        let limits = Limits { max_batch_commands: 3, ..Limits::default() };
        let (ctl_tx, mut ctl) = mpsc::channel(16);
        let (_cli_tx, mut cli) = mpsc::channel(16);
        for s in 1..=5 {
            ctl_tx.try_send(pending(expire(s))).unwrap();
        }
        let first = ctl.try_recv().unwrap();
        let (batch, carry) = fill_batch(first, &mut ctl, &mut cli, &limits);
        assert_eq!(batch.len(), 3);
        assert!(carry.is_none());
        assert_eq!(ctl.len(), 2, "the rest wait for the next batch");
    }

    #[test]
    fn a_full_queue_is_overloaded_and_proposes_nothing() {
        let (tx, _rx) = mpsc::channel(1);
        enqueue(&tx, pending(expire(1))).unwrap();
        assert!(matches!(enqueue(&tx, pending(expire(2))), Err(ApiError::Overloaded(_))));
    }
}
