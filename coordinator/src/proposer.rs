//! Proposal batching. One owner task takes commands from a bounded queue and
//! groups whatever is waiting into one `Batch` entry, so concurrent requests
//! share one log append and one fsync. A few proposals may be in flight at
//! once; while they are, new commands pile up and form the next, larger batch.

use std::sync::Arc;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use openraft::error::{ClientWriteError, RaftError};
use tokio::sync::{Semaphore, mpsc, oneshot};

use baton_raft_store::{Command, NodeId, Proposal, Raft, Response};

use crate::config::Limits;
use crate::error::ApiError;

struct Pending {
    cmd: Command,
    bytes: usize,
    reply: oneshot::Sender<Result<Response, ApiError>>,
}

/// Handle to the batcher; cheap to clone.
#[derive(Clone)]
pub struct Proposer {
    tx: mpsc::Sender<Pending>,
}

/// Leader wall clock in ms; only stamped into entries, never read by apply() otherwise.
pub fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}

/// Rough encoded size, to bound batches without encoding twice.
fn approx_bytes(cmd: &Command) -> usize {
    64 + match cmd {
        Command::SubmitJob(s) => s.payloads.iter().map(|p| p.len() + 8).sum::<usize>() + 256,
        Command::CompleteTask { result, .. } => result.len(),
        Command::FailTask { error, .. } => error.len(),
        Command::AssignTasks { assignments } => assignments.len() * 24,
        Command::TimeoutAttempts { attempts } => attempts.len() * 24,
        _ => 64,
    }
}

impl Proposer {
    pub fn spawn(raft: Raft, limits: &Limits) -> Proposer {
        let (tx, rx) = mpsc::channel(limits.proposal_queue);
        tokio::spawn(run(raft, rx, limits.clone()));
        Proposer { tx }
    }

    /// Propose one command and wait for its reply. `Err` means the command was
    /// not committed by this call (it may still commit later if the leader
    /// lost leadership after appending it; retries must be idempotent).
    pub async fn propose(&self, cmd: Command) -> Result<Response, ApiError> {
        let (reply, rx) = oneshot::channel();
        let p = Pending { bytes: approx_bytes(&cmd), cmd, reply };
        self.tx.try_send(p).map_err(|e| match e {
            mpsc::error::TrySendError::Full(_) => ApiError::Exhausted("proposal queue is full; retry later".into()),
            mpsc::error::TrySendError::Closed(_) => ApiError::Unavailable("node is shutting down".into()),
        })?;
        rx.await.map_err(|_| ApiError::Unavailable("node is shutting down".into()))?
    }
}

async fn run(raft: Raft, mut rx: mpsc::Receiver<Pending>, limits: Limits) {
    let inflight = Arc::new(Semaphore::new(limits.max_inflight_proposals));
    while let Some(first) = rx.recv().await {
        let permit = match inflight.clone().acquire_owned().await {
            Ok(p) => p,
            Err(_) => return,
        };
        // Collect what queued while we waited for a slot.
        let mut bytes = first.bytes;
        let mut batch = vec![first];
        while batch.len() < limits.max_batch_commands && bytes < limits.max_batch_bytes {
            match rx.try_recv() {
                Ok(p) => {
                    bytes += p.bytes;
                    batch.push(p);
                }
                Err(_) => break,
            }
        }
        metrics::histogram!("baton_proposal_batch_size").record(batch.len() as f64);
        let raft = raft.clone();
        tokio::spawn(async move {
            let _permit = permit;
            commit(&raft, batch).await;
        });
    }
}

async fn commit(raft: &Raft, mut batch: Vec<Pending>) {
    let (cmd, replies): (Command, Vec<_>) = if batch.len() == 1 {
        let p = batch.pop().expect("one element");
        (p.cmd, vec![p.reply])
    } else {
        let (cmds, replies) = batch.into_iter().map(|p| (p.cmd, p.reply)).unzip();
        (Command::Batch(cmds), replies)
    };
    let started = Instant::now();
    let result = raft.client_write(Proposal { proposed_at_ms: now_ms(), cmd }).await;
    metrics::histogram!("baton_commit_latency_seconds").record(started.elapsed().as_secs_f64());
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
            let e = map_write_error(e);
            for reply in replies {
                let _ = reply.send(Err(e.clone()));
            }
        }
    }
}

fn map_write_error(e: RaftError<NodeId, ClientWriteError<NodeId, baton_raft_store::NodeInfo>>) -> ApiError {
    match e {
        RaftError::APIError(ClientWriteError::ForwardToLeader(f)) => {
            ApiError::NotLeader { leader: f.leader_id.zip(f.leader_node.map(|n| n.api_addr)) }
        }
        RaftError::APIError(ClientWriteError::ChangeMembershipError(e)) => ApiError::Precondition(e.to_string()),
        RaftError::Fatal(f) => ApiError::Unavailable(format!("raft stopped: {f}")),
    }
}
