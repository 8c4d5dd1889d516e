//! `baton.v1.WorkerService`: the worker session stream.
//!
//! A session lives on the leader. The first message registers (or resumes)
//! it; after that, heartbeats renew the lease in the leader's memory and
//! reports and task logs are proposed through the batcher, queued in the
//! order they arrive (so an attempt's last lines are stored before its
//! report). Assignments and cancellations come from the leader task down
//! the same stream.

use std::collections::BTreeSet;
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
use baton_raft_store::lifecycle::{ChunkEncoding, LogChunk};
use baton_raft_store::{Command, CommandError, Outcome, Response as StoreResponse, SessionId, TaskKey};
use serde_bytes::ByteBuf;

use super::{Ctx, convert};
use crate::error::{ApiError, to_status};
use crate::leader::{LeaderMsg, Outbound, task_ref};

/// How long a new stream may take to send its Register.
pub const REGISTER_TIMEOUT: Duration = Duration::from_secs(10);
/// Reports (and task log messages) of one session being proposed at once;
/// more wait, which slows that worker's stream rather than the leader.
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
    /// `namespaces`: what the caller's credential lets the session receive
    /// (`None`: all), recorded in the registration entry.
    async fn open(
        &self,
        r: proto::Register,
        namespaces: Option<BTreeSet<String>>,
    ) -> Result<(SessionId, u64, bool), ApiError> {
        if r.resume_session != 0 {
            // A new leader may not have applied the session's registration
            // yet: read it only after a barrier, or a live session would be
            // answered "not found" and its worker would start over.
            self.ctx.linearize().await?;
            return match self.ctx.reader.session(r.resume_session)? {
                // A resumed session keeps its recorded namespaces, so the
                // credential that resumes it must allow at least those.
                Some(s) if s.ended.is_none() && s.epoch == r.resume_epoch && s.name == r.name => {
                    match (&namespaces, &s.namespaces) {
                        (None, _) => Ok((s.id, s.epoch, true)),
                        (Some(may), Some(has)) if has.is_subset(may) => Ok((s.id, s.epoch, true)),
                        _ => Err(ApiError::PermissionDenied(format!(
                            "session {} receives namespaces this credential does not allow; register again",
                            s.id
                        ))),
                    }
                }
                Some(_) => Err(ApiError::SessionEnded(format!(
                    "session {} has ended or belongs to another incarnation; register again",
                    r.resume_session
                ))),
                None => Err(CommandError::SessionNotFound(r.resume_session).into()),
            };
        }
        let cmd = Command::RegisterWorker {
            name: r.name,
            labels: r.labels.into_iter().collect(),
            capacity: r.capacity,
            namespaces,
        };
        cmd.validate()?;
        match self.ctx.proposer.propose(cmd).await?.into_result()? {
            Outcome::Registered { session, epoch, .. } => Ok((session, epoch, false)),
            other => Err(ApiError::Internal(format!("unexpected reply {other:?}"))),
        }
    }
}

/// What the ack of a report or log message echoes.
struct Head {
    task: TaskKey,
    token: u64,
    kind: proto::ReportKind,
    /// `Logs.seq`; 0 for the other kinds.
    seq: u64,
}

fn report_ack(h: &Head, status: proto::ReportStatus, message: String) -> Out {
    Out::ReportAck(proto::ReportAck {
        task: Some(task_ref(h.task)),
        token: h.token,
        status: status as i32,
        message,
        kind: h.kind as i32,
        seq: h.seq,
    })
}

/// Turn the reply to a report into the ack the worker gets. `Err` means the
/// outcome is unknown (no leader): the stream ends and the worker resends.
fn ack(h: &Head, reply: Result<StoreResponse, ApiError>) -> Result<Out, ApiError> {
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
                if h.kind == proto::ReportKind::Logs {
                    metrics::counter!("baton_fenced_log_messages_total").increment(1);
                } else {
                    metrics::counter!("baton_fenced_reports_total").increment(1);
                }
                (S::Fenced, e.to_string())
            }
            Err(e) => (S::Rejected, e.to_string()),
        },
    };
    Ok(report_ack(h, status, message))
}

/// A proto log level; an unknown value (a newer client) is kept as info
/// rather than losing the line.
/// A message's log lines as the chunk apply() stores: the worker's bytes,
/// not decoded here (the command's `validate()` checks them), or why they
/// cannot be stored.
fn chunk(field: &str, c: Option<proto::LogChunk>) -> Result<LogChunk, CommandError> {
    let Some(c) = c else { return Ok(LogChunk::default()) };
    let encoding = match proto::LogEncoding::try_from(c.encoding) {
        Ok(proto::LogEncoding::Raw) => ChunkEncoding::Raw,
        Ok(proto::LogEncoding::Lz4) => ChunkEncoding::Lz4,
        Err(_) => {
            return Err(CommandError::Invalid {
                field: format!("{field}.encoding"),
                reason: format!("unknown log encoding {}", c.encoding),
            });
        }
    };
    Ok(LogChunk::from_parts(c.lines, encoding, c.data))
}

/// A report or log message as a command (or why apply() would refuse it),
/// with what its ack echoes; `Err` if it is not a report at all.
fn report(msg: In) -> Result<(Head, Result<Command, CommandError>), ApiError> {
    use proto::ReportKind as K;
    let r = |task, token, kind, cmd| (Head { task, token, kind, seq: 0 }, cmd);
    Ok(match msg {
        In::Complete(c) => {
            let t = task_key(c.task)?;
            let cmd = chunk("logs", c.log_chunk).map(|logs| Command::CompleteTask {
                task: t,
                token: c.token,
                result: ByteBuf::from(c.result),
                logs,
            });
            r(t, c.token, K::Complete, cmd)
        }
        In::Fail(f) => {
            let t = task_key(f.task)?;
            let cmd = chunk("logs", f.log_chunk).map(|logs| Command::FailTask {
                task: t,
                token: f.token,
                error: f.error,
                retryable: f.retryable,
                logs,
            });
            r(t, f.token, K::Fail, cmd)
        }
        In::Progress(p) => {
            let t = task_key(p.task)?;
            let cmd =
                Command::ReportProgress { task: t, token: p.token, progress_bp: p.progress_bp, message: p.message };
            r(t, p.token, K::Progress, Ok(cmd))
        }
        In::Logs(l) => {
            let t = task_key(l.task)?;
            let cmd = chunk("lines", l.chunk).map(|lines| Command::AppendLogs { task: t, token: l.token, lines });
            (Head { task: t, token: l.token, kind: K::Logs, seq: l.seq }, cmd)
        }
        other => return Err(ApiError::Internal(format!("not a report: {other:?}"))),
    })
}

/// Whether `session` may report on `task`: a live job of a namespace it serves.
/// Anything else (an ended session, a finished job) is left to apply().
fn reports_on(ctx: &Ctx, session: SessionId, task: TaskKey) -> bool {
    ctx.reader.read(|core, _| match (core.idx.sessions.get(&session), core.idx.jobs.get(&task.job)) {
        (Some(s), Some(j)) => s.serves(&j.namespace),
        _ => true,
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
        let (r, cmd) = match report(msg) {
            Ok(r) => r,
            Err(e) => {
                let _ = tx.send(Err(to_status(e))).await;
                break;
            }
        };
        // Refuse what apply() would refuse before it reaches the log (a
        // result over the size limit, say): the worker gets a definite no.
        // A session restricted to some namespaces reports only on their
        // tasks: a guessed token of another namespace's task stops here.
        let cmd = cmd.and_then(|c| match reports_on(&ctx, session, r.task) {
            true => Ok(c),
            false => Err(CommandError::ConstraintMismatch { session, job: r.task.job }),
        });
        let cmd = match cmd.and_then(|c| c.validate().map(|()| c)) {
            Ok(c) => c,
            Err(e) => {
                let ack = report_ack(&r, proto::ReportStatus::Rejected, e.to_string());
                if tx.send(Ok(out(ack))).await.is_err() {
                    break;
                }
                continue;
            }
        };
        let Ok(permit) = reports.clone().acquire_owned().await else { break };
        // Queued here, in arrival order; only the wait is spawned.
        let queued = ctx.proposer.enqueue(cmd);
        let tx2 = tx.clone();
        tokio::spawn(async move {
            let _permit = permit;
            let reply = match queued {
                Ok(reply) => reply.await,
                Err(e) => Err(e),
            };
            let _ = match ack(&r, reply) {
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
        let namespaces = crate::auth::check::worker_namespaces(self.ctx.auth_on(), &req)?;
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
        let (session, epoch, resumed) = self.open(reg, namespaces).await?;
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
    use baton_client::worker::encode_chunk;
    use baton_raft_store::lifecycle::LogLevel;
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
        let h = Head { task: t, token: 5, kind: K::Complete, seq: 0 };
        assert_eq!(status(ack(&h, Err(ApiError::Overloaded("full".into())))), S::RetryLater);
        // Not knowing whether it committed ends the stream: the worker resends after reconnecting.
        assert!(ack(&h, Err(ApiError::Unavailable("no leader".into()))).is_err());
        let fenced = StoreResponse::Rejected(CommandError::Fenced { task: t, presented: 5, latest: 9 });
        assert_eq!(status(ack(&h, Ok(fenced))), S::Fenced);
    }

    #[test]
    fn log_lines_become_an_append_and_their_ack_echoes_the_seq() {
        let logs = proto::Logs {
            task: Some(proto::TaskRef { job_id: 3, shard: 1 }),
            token: 42,
            seq: 7,
            chunk: encode_chunk(&[
                proto::LogLine { at_ms: 10, level: proto::LogLevel::Warn as i32, message: "w".into() },
                proto::LogLine { at_ms: 11, level: 99, message: "from a newer client".into() },
            ]),
        };
        let (h, cmd) = report(In::Logs(logs)).unwrap();
        let Ok(Command::AppendLogs { task, token, lines }) = &cmd else { panic!("{cmd:?}") };
        assert_eq!((*task, *token), (TaskKey::new(3, 1), 42));
        cmd.as_ref().unwrap().validate().unwrap();
        assert_eq!(
            lines.to_lines().iter().map(|l| (l.at_ms, l.level)).collect::<Vec<_>>(),
            [(10, LogLevel::Warn), (11, LogLevel::Info)]
        );
        let fenced = StoreResponse::Rejected(CommandError::Fenced { task: h.task, presented: 42, latest: 50 });
        match ack(&h, Ok(fenced)).unwrap() {
            Out::ReportAck(a) => {
                assert_eq!((a.kind, a.seq, a.token), (K::Logs as i32, 7, 42));
                assert_eq!(a.status, S::Fenced as i32);
            }
            other => panic!("{other:?}"),
        }
        // Too many lines never reach the log.
        let many = proto::Logs {
            task: Some(proto::TaskRef { job_id: 3, shard: 1 }),
            token: 42,
            seq: 8,
            chunk: encode_chunk(&vec![
                proto::LogLine::default();
                baton_raft_store::limits::MAX_LOG_LINES_PER_COMMAND + 1
            ]),
        };
        let e = report(In::Logs(many)).unwrap().1.and_then(|c| c.validate()).unwrap_err();
        assert!(matches!(&e, CommandError::Invalid { field, .. } if field == "lines"), "{e}");
        // So does a line longer than a line may be; the stream goes on (a
        // Rejected ack), it is not ended.
        let long = proto::Logs {
            task: Some(proto::TaskRef { job_id: 3, shard: 1 }),
            token: 42,
            seq: 9,
            chunk: encode_chunk(&[proto::LogLine { message: "x".repeat(4097), ..Default::default() }]),
        };
        let e = report(In::Logs(long)).unwrap().1.and_then(|c| c.validate()).unwrap_err();
        assert!(e.to_string().contains("4097 bytes"), "{e}");
        // An encoding this build does not know is refused by name.
        let unknown = proto::Logs {
            task: Some(proto::TaskRef { job_id: 3, shard: 1 }),
            token: 42,
            seq: 10,
            chunk: Some(proto::LogChunk { lines: 1, data: vec![0; 12], encoding: 7 }),
        };
        let e = report(In::Logs(unknown)).unwrap().1.unwrap_err();
        assert!(matches!(&e, CommandError::Invalid { field, .. } if field == "lines.encoding"), "{e}");
    }

    #[test]
    fn a_reports_last_lines_ride_in_its_command_and_too_many_bytes_are_refused() {
        let line = |m: &str| proto::LogLine { at_ms: 1, level: proto::LogLevel::Error as i32, message: m.into() };
        let done = proto::Complete {
            task: Some(proto::TaskRef { job_id: 1, shard: 0 }),
            token: 5,
            result: b"r".to_vec(),
            log_chunk: encode_chunk(&[line("last"), line("lines")]),
        };
        let (_, cmd) = report(In::Complete(done)).unwrap();
        let Ok(Command::CompleteTask { logs, .. }) = &cmd else { panic!("{cmd:?}") };
        assert_eq!(logs.to_lines().into_iter().map(|l| l.message).collect::<Vec<_>>(), ["last", "lines"]);
        let big = "x".repeat(4096);
        let fail = proto::Fail {
            task: Some(proto::TaskRef { job_id: 1, shard: 0 }),
            token: 5,
            error: "e".into(),
            retryable: true,
            log_chunk: encode_chunk(&vec![line(&big); 9]),
        };
        let (h, cmd) = report(In::Fail(fail)).unwrap();
        assert_eq!(h.kind, K::Fail);
        let e = cmd.unwrap().validate().unwrap_err();
        assert!(matches!(&e, CommandError::Invalid { field, .. } if field == "logs"), "{e}");
    }

    #[test]
    fn an_oversized_result_is_refused_before_it_reaches_the_log() {
        let big = proto::Complete {
            task: Some(proto::TaskRef { job_id: 1, shard: 0 }),
            token: 5,
            result: vec![0; baton_raft_store::limits::MAX_RESULT_BYTES + 1],
            log_chunk: None,
        };
        let (h, cmd) = report(In::Complete(big)).unwrap();
        assert_eq!(h.kind, K::Complete);
        assert!(cmd.unwrap().validate().is_err());
    }
}
