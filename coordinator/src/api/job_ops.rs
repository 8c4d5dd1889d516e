//! The job operations of `baton.v1.JobService`: delete, retry, cancel one
//! shard, pause and resume, priority. Each is one command proposed at the
//! leader (a follower forwards the call, as for CancelJob); apply() decides
//! and its refusals become the codes the `.proto` documents.
//!
//! A running attempt that CancelTask takes away is stopped on its worker the
//! way CancelJob's are: the leader's reconciliation sees that the applied
//! state no longer gives the attempt to its session and pushes a `Cancel`
//! down that session's stream. Nothing here tells the leader.

use tonic::{Request, Response, Status};

use baton_client::proto;
use baton_client::proto::job_service_client::JobServiceClient;
use baton_raft_store::{Command, Outcome, TaskKey};

use super::jobs::Jobs;
use crate::error::ApiError;

pub(super) fn unexpected(o: Outcome) -> Status {
    ApiError::Internal(format!("unexpected reply {o:?}")).into()
}

impl Jobs {
    /// Check `cmd` without state (so a malformed one is refused before it
    /// costs a hop or an entry); the caller proposes it once routed here.
    pub(super) fn checked(cmd: Command) -> Result<Command, ApiError> {
        cmd.validate()?;
        Ok(cmd)
    }

    /// Propose `cmd` and wait until it is applied: its outcome, or apply()'s
    /// refusal as an [`ApiError`].
    pub(super) async fn apply(&self, cmd: Command) -> Result<Outcome, ApiError> {
        self.ctx.proposer.propose(cmd).await?.into_result().map_err(ApiError::from)
    }

    pub(super) async fn delete(
        &self,
        req: Request<proto::DeleteJobRequest>,
    ) -> Result<Response<proto::DeleteJobResponse>, Status> {
        let cmd = Self::checked(Command::DeleteJob { job: req.get_ref().job_id })?;
        forward_if_not_here!(self.ctx, self.ctx.route(&req)?, req, JobServiceClient::delete_job, write);
        match self.apply(cmd).await? {
            Outcome::JobDeleted { .. } => Ok(Response::new(proto::DeleteJobResponse {})),
            other => Err(unexpected(other)),
        }
    }

    pub(super) async fn retry(
        &self,
        req: Request<proto::RetryJobRequest>,
    ) -> Result<Response<proto::RetryJobResponse>, Status> {
        let cmd = Self::checked(Command::RetryJob { job: req.get_ref().job_id })?;
        forward_if_not_here!(self.ctx, self.ctx.route(&req)?, req, JobServiceClient::retry_job, write);
        match self.apply(cmd).await? {
            // The leader plans on every applied index, so the requeued
            // shards are granted without waiting for a tick.
            Outcome::JobRetried { requeued, .. } => {
                Ok(Response::new(proto::RetryJobResponse { tasks_requeued: requeued }))
            }
            other => Err(unexpected(other)),
        }
    }

    pub(super) async fn cancel_shard(
        &self,
        req: Request<proto::CancelTaskRequest>,
    ) -> Result<Response<proto::CancelTaskResponse>, Status> {
        let r = req.get_ref();
        let cmd =
            Self::checked(Command::CancelTask { task: TaskKey::new(r.job_id, r.shard), reason: r.reason.clone() })?;
        forward_if_not_here!(self.ctx, self.ctx.route(&req)?, req, JobServiceClient::cancel_task, write);
        match self.apply(cmd).await? {
            // The worker of a revoked attempt is told at the leader's next
            // reconciliation (see the module comment).
            Outcome::TaskCancelled { revoked, job_finished, .. } => {
                Ok(Response::new(proto::CancelTaskResponse { was_running: revoked.is_some(), job_finished }))
            }
            other => Err(unexpected(other)),
        }
    }

    /// PauseJob and ResumeJob.
    async fn set_paused(&self, job: u64, paused: bool) -> Result<(), Status> {
        match self.apply(Self::checked(Command::PauseJob { job, paused })?).await? {
            Outcome::JobPaused { .. } => Ok(()),
            other => Err(unexpected(other)),
        }
    }

    pub(super) async fn pause(
        &self,
        req: Request<proto::PauseJobRequest>,
    ) -> Result<Response<proto::PauseJobResponse>, Status> {
        forward_if_not_here!(self.ctx, self.ctx.route(&req)?, req, JobServiceClient::pause_job, write);
        self.set_paused(req.get_ref().job_id, true).await?;
        Ok(Response::new(proto::PauseJobResponse {}))
    }

    pub(super) async fn resume(
        &self,
        req: Request<proto::ResumeJobRequest>,
    ) -> Result<Response<proto::ResumeJobResponse>, Status> {
        forward_if_not_here!(self.ctx, self.ctx.route(&req)?, req, JobServiceClient::resume_job, write);
        self.set_paused(req.get_ref().job_id, false).await?;
        Ok(Response::new(proto::ResumeJobResponse {}))
    }

    pub(super) async fn reprioritize(
        &self,
        req: Request<proto::SetPriorityRequest>,
    ) -> Result<Response<proto::SetPriorityResponse>, Status> {
        let r = req.get_ref();
        let cmd = Self::checked(Command::SetPriority { job: r.job_id, priority: r.priority })?;
        forward_if_not_here!(self.ctx, self.ctx.route(&req)?, req, JobServiceClient::set_priority, write);
        match self.apply(cmd).await? {
            Outcome::PrioritySet { .. } => Ok(Response::new(proto::SetPriorityResponse {})),
            other => Err(unexpected(other)),
        }
    }
}
