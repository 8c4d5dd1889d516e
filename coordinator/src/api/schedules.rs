//! `baton.v1.ScheduleService`. Writes go to the leader (forwarded from a
//! follower like the job and workflow calls) after the spec is validated
//! here; reads are linearizable at the leader or stale from this node, as
//! the request asks. Every schedule record is in memory (`Indexes::schedules`),
//! so reads take them under the reader's lock, a bounded number per call.
//! Firing is the leader core's and apply()'s; this service never fires.

use tonic::{Request, Response, Status};

use baton_client::proto;
use baton_client::proto::schedule_service_client::ScheduleServiceClient;
use baton_client::proto::schedule_service_server::ScheduleService;
use baton_raft_store::limits::MAX_RECENT_RUNS;
use baton_raft_store::{
    Command, CommandError, Outcome, Response as StoreResponse, RunTarget, ScheduleId, ScheduleRecord,
};

use super::jobs::page_size;
use super::{Ctx, convert, convert_schedule};
use crate::error::ApiError;

/// Default and largest page of ListSchedules. A schedule's view is small
/// (its rule, 5 upcoming times, at most [`LIST_RECENT_RUNS`] runs), well
/// under 4 KiB, so the largest page stays under 1 MiB.
pub const SCHEDULE_PAGE_DEFAULT: usize = 50;
pub const SCHEDULE_PAGE_MAX: usize = 200;
/// Recent runs each schedule of a ListSchedules page carries (newest first);
/// GetSchedule and ListScheduleRuns give all the record keeps
/// ([`MAX_RECENT_RUNS`]).
pub const LIST_RECENT_RUNS: usize = 5;

pub struct Schedules {
    pub ctx: Ctx,
}

fn outcome(r: StoreResponse) -> Result<Outcome, ApiError> {
    r.into_result().map_err(ApiError::from)
}

fn unexpected(o: Outcome) -> ApiError {
    ApiError::Internal(format!("unexpected reply {o:?}"))
}

fn updated(o: Outcome) -> Result<proto::UpdateScheduleResponse, ApiError> {
    match o {
        Outcome::ScheduleUpdated { schedule, paused, next_fire_ms } => {
            Ok(proto::UpdateScheduleResponse { schedule_id: schedule, paused, next_fire_ms: next_fire_ms.unwrap_or(0) })
        }
        other => Err(unexpected(other)),
    }
}

impl Schedules {
    /// The record by id, or by (namespace, name) when the id is 0.
    fn find(&self, r: &proto::GetScheduleRequest) -> Result<ScheduleRecord, ApiError> {
        let found = self.ctx.reader.read(|core, _| {
            let id = match r.schedule_id {
                0 => core.idx.schedule_names.get(&(r.namespace.clone(), r.name.clone())).copied(),
                id => Some(id),
            };
            id.and_then(|id| core.idx.schedules.get(&id).cloned())
        });
        found.ok_or_else(|| match r.schedule_id {
            0 => ApiError::NotFound(format!("no schedule {:?} in namespace {:?}", r.name, r.namespace)),
            id => CommandError::ScheduleNotFound(id).into(),
        })
    }

    fn get_by_id(&self, id: ScheduleId) -> Result<ScheduleRecord, ApiError> {
        self.find(&proto::GetScheduleRequest { schedule_id: id, ..Default::default() })
    }

    async fn pause(&self, id: ScheduleId, paused: bool) -> Result<proto::UpdateScheduleResponse, ApiError> {
        updated(outcome(self.ctx.proposer.propose(Command::PauseSchedule { schedule: id, paused }).await?)?)
    }
}

#[tonic::async_trait]
impl ScheduleService for Schedules {
    async fn create_schedule(
        &self,
        req: Request<proto::CreateScheduleRequest>,
    ) -> Result<Response<proto::CreateScheduleResponse>, Status> {
        forward_if_not_here!(self.ctx, self.ctx.route(&req)?, req, ScheduleServiceClient::create_schedule, write);
        let spec = convert_schedule::schedule_spec(req.into_inner().spec)?;
        match outcome(self.ctx.proposer.propose(Command::CreateSchedule(Box::new(spec))).await?)? {
            Outcome::ScheduleCreated { schedule, duplicate, next_fire_ms } => {
                tracing::info!(schedule, duplicate, "schedule created");
                Ok(Response::new(proto::CreateScheduleResponse {
                    schedule_id: schedule,
                    duplicate,
                    next_fire_ms: next_fire_ms.unwrap_or(0),
                }))
            }
            other => Err(unexpected(other).into()),
        }
    }

    async fn update_schedule(
        &self,
        req: Request<proto::UpdateScheduleRequest>,
    ) -> Result<Response<proto::UpdateScheduleResponse>, Status> {
        forward_if_not_here!(self.ctx, self.ctx.route(&req)?, req, ScheduleServiceClient::update_schedule, write);
        let r = req.into_inner();
        let spec = convert_schedule::schedule_spec(r.spec)?;
        let cmd = Command::UpdateSchedule { schedule: r.schedule_id, spec: Box::new(spec) };
        Ok(Response::new(updated(outcome(self.ctx.proposer.propose(cmd).await?)?)?))
    }

    async fn get_schedule(&self, req: Request<proto::GetScheduleRequest>) -> Result<Response<proto::Schedule>, Status> {
        let stale = convert::stale(req.get_ref().consistency)?;
        forward_if_not_here!(
            self.ctx,
            self.ctx.read_route(&req, stale).await?,
            req,
            ScheduleServiceClient::get_schedule,
            read
        );
        let rec = self.find(req.get_ref())?;
        Ok(Response::new(convert_schedule::schedule(&rec, MAX_RECENT_RUNS)))
    }

    async fn list_schedules(
        &self,
        req: Request<proto::ListSchedulesRequest>,
    ) -> Result<Response<proto::ListSchedulesResponse>, Status> {
        let r = req.get_ref();
        let stale = convert::stale(r.consistency)?;
        let limit = page_size("page_size", r.page_size, SCHEDULE_PAGE_DEFAULT, SCHEDULE_PAGE_MAX)?;
        forward_if_not_here!(
            self.ctx,
            self.ctx.read_route(&req, stale).await?,
            req,
            ScheduleServiceClient::list_schedules,
            read
        );
        let r = req.into_inner();
        // In memory, at most MAX_SCHEDULES records: one pass under the lock.
        let (schedules, more) = self.ctx.reader.read(|core, _| {
            let mut page = Vec::with_capacity(limit);
            let mut more = false;
            let after = r.page_token.saturating_add(1);
            for rec in core.idx.schedules.range(after..).map(|(_, s)| s) {
                if !r.namespace.is_empty() && rec.rule.namespace != r.namespace {
                    continue;
                }
                if page.len() == limit {
                    more = true;
                    break;
                }
                page.push(convert_schedule::schedule(rec, LIST_RECENT_RUNS));
            }
            (page, more)
        });
        let next_page_token = if more { schedules.last().map_or(0, |s| s.id) } else { 0 };
        Ok(Response::new(proto::ListSchedulesResponse { schedules, next_page_token }))
    }

    async fn pause_schedule(
        &self,
        req: Request<proto::PauseScheduleRequest>,
    ) -> Result<Response<proto::UpdateScheduleResponse>, Status> {
        forward_if_not_here!(self.ctx, self.ctx.route(&req)?, req, ScheduleServiceClient::pause_schedule, write);
        Ok(Response::new(self.pause(req.get_ref().schedule_id, true).await?))
    }

    async fn resume_schedule(
        &self,
        req: Request<proto::ResumeScheduleRequest>,
    ) -> Result<Response<proto::UpdateScheduleResponse>, Status> {
        forward_if_not_here!(self.ctx, self.ctx.route(&req)?, req, ScheduleServiceClient::resume_schedule, write);
        Ok(Response::new(self.pause(req.get_ref().schedule_id, false).await?))
    }

    async fn delete_schedule(
        &self,
        req: Request<proto::DeleteScheduleRequest>,
    ) -> Result<Response<proto::DeleteScheduleResponse>, Status> {
        forward_if_not_here!(self.ctx, self.ctx.route(&req)?, req, ScheduleServiceClient::delete_schedule, write);
        let id = req.get_ref().schedule_id;
        match outcome(self.ctx.proposer.propose(Command::DeleteSchedule { schedule: id }).await?)? {
            Outcome::ScheduleDeleted { schedule } => {
                tracing::info!(schedule, "schedule deleted");
                Ok(Response::new(proto::DeleteScheduleResponse {}))
            }
            other => Err(unexpected(other).into()),
        }
    }

    async fn run_schedule_now(
        &self,
        req: Request<proto::RunScheduleNowRequest>,
    ) -> Result<Response<proto::RunScheduleNowResponse>, Status> {
        forward_if_not_here!(self.ctx, self.ctx.route(&req)?, req, ScheduleServiceClient::run_schedule_now, write);
        let id = req.get_ref().schedule_id;
        match outcome(self.ctx.proposer.propose(Command::RunSchedule { schedule: id }).await?)? {
            Outcome::Fired { fire_ms, run, skipped_reason, .. } => {
                let (job_id, workflow_id) = match run {
                    Some(RunTarget::Job(j)) => (j, 0),
                    Some(RunTarget::Workflow(w)) => (0, w),
                    None => (0, 0),
                };
                Ok(Response::new(proto::RunScheduleNowResponse {
                    fire_ms,
                    job_id,
                    workflow_id,
                    skipped_reason: skipped_reason.unwrap_or_default(),
                }))
            }
            other => Err(unexpected(other).into()),
        }
    }

    async fn list_schedule_runs(
        &self,
        req: Request<proto::ListScheduleRunsRequest>,
    ) -> Result<Response<proto::ListScheduleRunsResponse>, Status> {
        let stale = convert::stale(req.get_ref().consistency)?;
        forward_if_not_here!(
            self.ctx,
            self.ctx.read_route(&req, stale).await?,
            req,
            ScheduleServiceClient::list_schedule_runs,
            read
        );
        let rec = self.get_by_id(req.get_ref().schedule_id)?;
        Ok(Response::new(proto::ListScheduleRunsResponse {
            runs: convert_schedule::recent_runs(&rec, MAX_RECENT_RUNS),
            runs_started: rec.runs_started,
            fires_skipped: rec.fires_skipped,
        }))
    }
}
