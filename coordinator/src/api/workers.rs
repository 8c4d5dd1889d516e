//! `baton.v1.WorkerService`: the worker session stream.
//!
//! A session lives on the leader. The first message registers (or resumes)
//! it; after that, heartbeats renew the lease in the leader's memory and
//! reports are proposed through the batcher. Assignments and cancellations
//! come from the leader task down the same stream.

use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use futures::Stream;
use tokio::sync::{Semaphore, mpsc};
use tonic::{Request, Response, Status, Streaming};

use baton_client::proto;
use baton_client::proto::coordinator_message::Msg as Out;
use baton_client::proto::worker_message::Msg as In;
use baton_client::proto::worker_service_client::WorkerServiceClient;
use baton_client::proto::worker_service_server::WorkerService;
use baton_raft_store::{Command, CommandError, Outcome, Response as StoreResponse, SessionId, TaskKey};
use serde_bytes::ByteBuf;

use super::{Ctx, convert};
use crate::error::{ApiError, to_status};
use crate::leader::{LeaderMsg, Outbound, task_ref};

/// How long a new stream may take to send its Register.
pub const REGISTER_TIMEOUT: Duration = Duration::from_secs(10);
/// Reports of one session being proposed at once; more wait, which slows that
/// worker's stream rather than the leader.
pub const REPORTS_IN_FLIGHT_PER_SESSION: usize = 256;

pub struct Workers {
    pub ctx: Ctx,
}

type OutStream = Pin<Box<dyn Stream<Item = Result<proto::CoordinatorMessage, Status>> + Send>>;

fn out(msg: Out) -> proto::CoordinatorMessage {
    proto::CoordinatorMessage { msg: Some(msg) }
}

fn task_key(t: Option<proto::TaskRef>) -> Result<TaskKey, ApiError> {
    let t = t.ok_or_else(|| ApiError::invalid("task", "is required"))?;
    Ok(TaskKey::new(t.job_id, t.shard))
}

impl Workers {
    /// Register a new session or resume a live one. Returns (session, epoch, resumed).
    async fn open(&self, r: proto::Register) -> Result<(SessionId, u64, bool), ApiError> {
        if r.resume_session != 0 {
            // A new leader may not have applied the session's registration
            // yet: read it only after a barrier, or a live session would be
            // answered "not found" and its worker would start over.
            self.ctx.linearize().await?;
            return match self.ctx.reader.session(r.resume_session)? {
                Some(s) if s.ended.is_none() && s.epoch == r.resume_epoch && s.name == r.name => {
                    Ok((s.id, s.epoch, true))
                }
                Some(_) => Err(ApiError::SessionEnded(format!(
                    "session {} has ended or belongs to another incarnation; register again",
                    r.resume_session
                ))),
                None => Err(CommandError::SessionNotFound(r.resume_session).into()),
            };
        }
        let cmd =
            Command::RegisterWorker { name: r.name, labels: r.labels.into_iter().collect(), capacity: r.capacity };
        cmd.validate()?;
        match self.ctx.proposer.propose(cmd).await?.into_result()? {
            Outcome::Registered { session, epoch, .. } => Ok((session, epoch, false)),
            other => Err(ApiError::Internal(format!("unexpected reply {other:?}"))),
        }
    }
}

fn report_ack(task: TaskKey, token: u64, kind: proto::ReportKind, status: proto::ReportStatus, message: String) -> Out {
    Out::ReportAck(proto::ReportAck {
        task: Some(task_ref(task)),
        token,
        status: status as i32,
        message,
        kind: kind as i32,
    })
}

/// Turn the reply to a report into the ack the worker gets. `Err` means the
/// outcome is unknown (no leader): the stream ends and the worker resends.
fn ack(
    task: TaskKey,
    token: u64,
    kind: proto::ReportKind,
    reply: Result<StoreResponse, ApiError>,
) -> Result<Out, ApiError> {
    use proto::ReportStatus as S;
    let (status, message) = match reply {
        // Never proposed: the worker sends it again later on the same stream.
        Err(ApiError::Overloaded(m)) => (S::RetryLater, m),
        Err(e) => return Err(e),
        Ok(r) => match r.into_result() {
            Ok(Outcome::Completed { duplicate: true, .. } | Outcome::Failed { duplicate: true, .. }) => {
                (S::Duplicate, String::new())
            }
            Ok(_) => (S::Accepted, String::new()),
            Err(e @ CommandError::Fenced { .. }) => {
                metrics::counter!("baton_fenced_reports_total").increment(1);
                (S::Fenced, e.to_string())
            }
            Err(e) => (S::Rejected, e.to_string()),
        },
    };
    Ok(report_ack(task, token, kind, status, message))
}

/// A report as a command, with its kind, or why it is malformed.
fn report(msg: In) -> Result<(TaskKey, u64, proto::ReportKind, Command), ApiError> {
    use proto::ReportKind as K;
    Ok(match msg {
        In::Complete(c) => {
            let t = task_key(c.task)?;
            (
                t,
                c.token,
                K::Complete,
                Command::CompleteTask { task: t, token: c.token, result: ByteBuf::from(c.result) },
            )
        }
        In::Fail(f) => {
            let t = task_key(f.task)?;
            (t, f.token, K::Fail, Command::FailTask { task: t, token: f.token, error: f.error, retryable: f.retryable })
        }
        In::Progress(p) => {
            let t = task_key(p.task)?;
            let cmd =
                Command::ReportProgress { task: t, token: p.token, progress_bp: p.progress_bp, message: p.message };
            (t, p.token, K::Progress, cmd)
        }
        other => return Err(ApiError::Internal(format!("not a report: {other:?}"))),
    })
}

/// Reads one session's inbound messages until the stream ends.
async fn inbound_loop(
    ctx: Ctx,
    mut inbound: Streaming<proto::WorkerMessage>,
    session: SessionId,
    epoch: u64,
    conn: u64,
    tx: Outbound,
) {
    let reports = Arc::new(Semaphore::new(REPORTS_IN_FLIGHT_PER_SESSION));
    loop {
        let msg = match inbound.message().await {
            Ok(Some(m)) => m,
            Ok(None) | Err(_) => break,
        };
        let msg = match msg.msg {
            // The leader task acknowledges it once the lease is renewed.
            Some(In::Heartbeat(h)) => {
                ctx.leader.send(LeaderMsg::Heartbeat { session, conn, seq: h.seq }).await;
                continue;
            }
            Some(In::Drain(_)) => {
                ctx.leader.send(LeaderMsg::Drain { session }).await;
                continue;
            }
            Some(In::Deregister(_)) => {
                // On success the stream simply ends (Detach below drops the
                // leader's sender); a failure is reported as the stream's status.
                let r = ctx.proposer.propose(Command::DeregisterWorker { session, epoch }).await;
                match r.map(StoreResponse::into_result) {
                    Ok(Ok(_)) => tracing::info!(session, "worker deregistered"),
                    Ok(Err(e)) => drop(tx.send(Err(to_status(e.into()))).await),
                    Err(e) => drop(tx.send(Err(to_status(e))).await),
                }
                break;
            }
            Some(In::Register(_)) => {
                let _ = tx.send(Err(to_status(ApiError::invalid("register", "sent twice on one stream")))).await;
                break;
            }
            None => {
                let _ = tx.send(Err(to_status(ApiError::invalid("msg", "is empty")))).await;
                break;
            }
            Some(m) => m,
        };
        let (task, token, kind, cmd) = match report(msg) {
            Ok(r) => r,
            Err(e) => {
                let _ = tx.send(Err(to_status(e))).await;
                break;
            }
        };
        // Refuse what apply() would refuse before it reaches the log (a
        // result over the size limit, say): the worker gets a definite no.
        if let Err(e) = cmd.validate() {
            let ack = report_ack(task, token, kind, proto::ReportStatus::Rejected, e.to_string());
            if tx.send(Ok(out(ack))).await.is_err() {
                break;
            }
            continue;
        }
        let Ok(permit) = reports.clone().acquire_owned().await else { break };
        let (ctx2, tx2) = (ctx.clone(), tx.clone());
        tokio::spawn(async move {
            let _permit = permit;
            let reply = ctx2.proposer.propose(cmd).await;
            let _ = match ack(task, token, kind, reply) {
                Ok(a) => tx2.send(Ok(out(a))).await,
                Err(e) => tx2.send(Err(to_status(e))).await,
            };
        });
    }
    ctx.leader.send(LeaderMsg::Detach { session, conn }).await;
}

#[tonic::async_trait]
impl WorkerService for Workers {
    type SessionStream = OutStream;

    async fn session(&self, req: Request<Streaming<proto::WorkerMessage>>) -> Result<Response<OutStream>, Status> {
        // Sessions live on the leader: a follower sends the worker there.
        if !self.ctx.is_leader() {
            return Err(ApiError::NotLeader { leader: self.ctx.leader_hint() }.into());
        }
        let permit = self
            .ctx
            .sessions
            .clone()
            .try_acquire_owned()
            .map_err(|_| ApiError::Exhausted("too many worker sessions on this node".into()))?;
        let mut inbound = req.into_inner();
        let first = tokio::time::timeout(REGISTER_TIMEOUT, inbound.message())
            .await
            .map_err(|_| ApiError::Deadline("no register message".into()))??;
        let Some(proto::WorkerMessage { msg: Some(In::Register(reg)) }) = first else {
            return Err(ApiError::invalid("register", "the first message must be register").into());
        };
        let (session, epoch, resumed) = self.open(reg).await?;
        let (tx, rx) = mpsc::channel(self.ctx.cfg.limits.session_queue);
        let registered = proto::Registered {
            session,
            epoch,
            ttl_ms: self.ctx.cfg.workers.ttl_ms,
            heartbeat_interval_ms: self.ctx.cfg.workers.heartbeat_interval_ms,
            resumed,
        };
        tx.send(Ok(out(Out::Registered(registered))))
            .await
            .map_err(|_| ApiError::Unavailable("the worker went away before its session opened".into()))?;
        let conn = self.ctx.leader.next_conn();
        self.ctx.leader.send(LeaderMsg::Attach { session, conn, tx: tx.clone() }).await;
        tracing::info!(session, epoch, resumed, "worker session attached");
        let ctx = self.ctx.clone();
        tokio::spawn(async move {
            let _permit = permit;
            inbound_loop(ctx, inbound, session, epoch, conn, tx).await;
        });
        Ok(Response::new(Box::pin(tokio_stream::wrappers::ReceiverStream::new(rx))))
    }

    async fn list_workers(
        &self,
        req: Request<proto::ListWorkersRequest>,
    ) -> Result<Response<proto::ListWorkersResponse>, Status> {
        let stale = convert::stale(req.get_ref().consistency)?;
        let route = self.ctx.read_route(&req, stale).await?;
        forward_if_not_here!(self.ctx, route, req, WorkerServiceClient::list_workers, read);
        let workers = self.ctx.reader.read(|c, _| {
            c.idx
                .sessions
                .values()
                .map(|s| proto::Worker {
                    session: s.id,
                    name: s.name.clone(),
                    epoch: s.epoch,
                    labels: s.labels.clone().into_iter().collect(),
                    capacity: s.capacity,
                    running: c.idx.by_session.get(&s.id).map_or(0, |t| t.len() as u32),
                    registered_ms: s.registered_ms,
                })
                .collect()
        });
        Ok(Response::new(proto::ListWorkersResponse { workers }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proto::{ReportKind as K, ReportStatus as S};

    fn status(r: Result<Out, ApiError>) -> S {
        match r {
            Ok(Out::ReportAck(a)) => S::try_from(a.status).unwrap(),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn an_overloaded_node_asks_for_the_report_again_and_keeps_the_stream() {
        let t = TaskKey::new(1, 0);
        assert_eq!(status(ack(t, 5, K::Complete, Err(ApiError::Overloaded("full".into())))), S::RetryLater);
        // Not knowing whether it committed ends the stream: the worker resends after reconnecting.
        assert!(ack(t, 5, K::Complete, Err(ApiError::Unavailable("no leader".into()))).is_err());
        let fenced = StoreResponse::Rejected(CommandError::Fenced { task: t, presented: 5, latest: 9 });
        assert_eq!(status(ack(t, 5, K::Complete, Ok(fenced))), S::Fenced);
    }

    #[test]
    fn an_oversized_result_is_refused_before_it_reaches_the_log() {
        let big = proto::Complete {
            task: Some(proto::TaskRef { job_id: 1, shard: 0 }),
            token: 5,
            result: vec![0; baton_raft_store::limits::MAX_RESULT_BYTES + 1],
        };
        let (_, _, kind, cmd) = report(In::Complete(big)).unwrap();
        assert_eq!(kind, K::Complete);
        assert!(cmd.validate().is_err());
    }
}
