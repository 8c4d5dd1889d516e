//! `baton.v1.JobService`.

use std::pin::Pin;

use futures::Stream;
use tonic::{Request, Response, Status};

use baton_client::proto;
use baton_client::proto::job_service_client::JobServiceClient;
use baton_client::proto::job_service_server::JobService;
use baton_raft_store::{Command, CommandError, JobId, Outcome, Response as StoreResponse, TaskKey};

use super::Ctx;
use super::{convert, watch};
use crate::error::ApiError;

/// Default and largest page of ListJobs.
pub const LIST_PAGE_DEFAULT: usize = 100;
pub const LIST_PAGE_MAX: usize = 1000;
/// Job records examined per ListJobs call, so a selective filter stays bounded.
pub const LIST_SCAN_MAX: usize = 100_000;
/// Default and largest page of GetResults.
pub const RESULTS_PAGE_DEFAULT: usize = 1000;
pub const RESULTS_PAGE_MAX: usize = 10_000;
/// Most bytes of shard records (results, mostly) in one GetResults page
/// (4 MiB), whatever its `limit`: 10,000 results of up to 1 MiB would
/// otherwise be gathered and encoded in one response. The proto encoding is
/// smaller than the stored records, so a page also decodes under gRPC's
/// default 4 MiB message limit. A page always holds at least one shard, and
/// clients continue from `next_shard`.
pub const RESULTS_PAGE_MAX_BYTES: usize = 4 * 1024 * 1024;
/// Events buffered per watch stream before the watcher is considered stuck.
pub const WATCH_QUEUE: usize = 64;

pub struct Jobs {
    pub ctx: Ctx,
}

/// A requested page size: 0 means the default; above `max` is refused.
pub(super) fn page_size(field: &str, requested: u32, default: usize, max: usize) -> Result<usize, ApiError> {
    match requested as usize {
        0 => Ok(default),
        n if n > max => Err(ApiError::invalid(field, format!("must be at most {max}"))),
        n => Ok(n),
    }
}

fn outcome(r: StoreResponse) -> Result<Outcome, ApiError> {
    r.into_result().map_err(ApiError::from)
}

impl Jobs {
    async fn submit_one(&self, spec: Option<proto::JobSpec>) -> Result<proto::SubmitJobResponse, ApiError> {
        let spec = convert::job_spec(spec)?;
        match outcome(self.ctx.proposer.propose(Command::SubmitJob(spec)).await?)? {
            Outcome::Submitted { job, shards, duplicate } => {
                Ok(proto::SubmitJobResponse { job_id: job, shards, duplicate })
            }
            other => Err(ApiError::Internal(format!("unexpected reply {other:?}"))),
        }
    }

    fn job_or_404(&self, id: JobId) -> Result<baton_raft_store::JobRecord, ApiError> {
        self.ctx.reader.job(id)?.ok_or_else(|| ApiError::from(CommandError::JobNotFound(id)))
    }
}

type EventStream = Pin<Box<dyn Stream<Item = Result<proto::JobEvent, Status>> + Send>>;

#[tonic::async_trait]
impl JobService for Jobs {
    async fn submit_job(
        &self,
        req: Request<proto::SubmitJobRequest>,
    ) -> Result<Response<proto::SubmitJobResponse>, Status> {
        forward_if_not_here!(self.ctx, self.ctx.route(&req)?, req, JobServiceClient::submit_job, write);
        Ok(Response::new(self.submit_one(req.into_inner().spec).await?))
    }

    async fn submit_jobs(
        &self,
        req: Request<proto::SubmitJobsRequest>,
    ) -> Result<Response<proto::SubmitJobsResponse>, Status> {
        let n = req.get_ref().specs.len();
        if n == 0 || n > self.ctx.cfg.limits.max_jobs_per_batch_submit {
            return Err(ApiError::invalid(
                "specs",
                format!("has {n} jobs; must be 1..={}", self.ctx.cfg.limits.max_jobs_per_batch_submit),
            )
            .into());
        }
        forward_if_not_here!(self.ctx, self.ctx.route(&req)?, req, JobServiceClient::submit_jobs, write);
        // Proposed concurrently: the batcher puts them in as few entries as it can.
        let futs = req.into_inner().specs.into_iter().map(|s| self.submit_one(Some(s)));
        let results = futures::future::join_all(futs)
            .await
            .into_iter()
            .map(|r| proto::SubmitJobResult {
                result: Some(match r {
                    Ok(ok) => proto::submit_job_result::Result::Ok(ok),
                    Err(e) => {
                        let s = crate::error::to_status(e);
                        proto::submit_job_result::Result::Error(proto::ItemError {
                            code: format!("{:?}", s.code()),
                            message: s.message().to_string(),
                        })
                    }
                }),
            })
            .collect();
        Ok(Response::new(proto::SubmitJobsResponse { results }))
    }

    async fn get_job(&self, req: Request<proto::GetJobRequest>) -> Result<Response<proto::Job>, Status> {
        let stale = convert::stale(req.get_ref().consistency)?;
        forward_if_not_here!(self.ctx, self.ctx.read_route(&req, stale).await?, req, JobServiceClient::get_job, read);
        Ok(Response::new(convert::job(&self.job_or_404(req.get_ref().job_id)?)))
    }

    async fn list_jobs(
        &self,
        req: Request<proto::ListJobsRequest>,
    ) -> Result<Response<proto::ListJobsResponse>, Status> {
        let r = req.get_ref();
        let stale = convert::stale(r.consistency)?;
        let status = convert::status_filter(r.status)?;
        let limit = page_size("page_size", r.page_size, LIST_PAGE_DEFAULT, LIST_PAGE_MAX)?;
        forward_if_not_here!(self.ctx, self.ctx.read_route(&req, stale).await?, req, JobServiceClient::list_jobs, read);
        let r = req.into_inner();
        let filter =
            baton_raft_store::JobFilter { namespace: (!r.namespace.is_empty()).then_some(r.namespace), status };
        let after = (r.page_token != 0).then_some(r.page_token);
        let (jobs, resume) = self.ctx.reader.list_jobs(&filter, after, limit, false).map_err(ApiError::from)?;
        Ok(Response::new(proto::ListJobsResponse {
            jobs: jobs.iter().map(convert::job).collect(),
            next_page_token: resume.unwrap_or(0),
        }))
    }

    async fn cancel_job(
        &self,
        req: Request<proto::CancelJobRequest>,
    ) -> Result<Response<proto::CancelJobResponse>, Status> {
        forward_if_not_here!(self.ctx, self.ctx.route(&req)?, req, JobServiceClient::cancel_job, write);
        let r = req.into_inner();
        match outcome(self.ctx.proposer.propose(Command::CancelJob { job: r.job_id, reason: r.reason }).await?)? {
            // The leader tells the workers of running attempts at its next check.
            Outcome::Cancelled { tasks_cancelled, .. } => {
                Ok(Response::new(proto::CancelJobResponse { tasks_cancelled }))
            }
            other => Err(ApiError::Internal(format!("unexpected reply {other:?}")).into()),
        }
    }

    type WatchJobStream = EventStream;

    async fn watch_job(&self, req: Request<proto::WatchJobRequest>) -> Result<Response<EventStream>, Status> {
        let permit = self
            .ctx
            .watches
            .clone()
            .try_acquire_owned()
            .map_err(|_| ApiError::Exhausted("too many open watches on this node".into()))?;
        let id = req.get_ref().job_id;
        // Served from this node's applied state, so it survives leader
        // changes; every event names the log index it reflects.
        watch::await_job(&self.ctx, &req, id).await?;
        let (tx, rx) = tokio::sync::mpsc::channel(WATCH_QUEUE);
        let reader = self.ctx.reader.clone();
        let metrics = self.ctx.raft.metrics();
        tokio::spawn(async move {
            let _permit = permit;
            // A client that goes away ends the watch at once, even if the
            // job never changes again.
            tokio::select! {
                _ = tx.closed() => {}
                _ = watch::watch_loop(&reader, metrics, id, &tx) => {}
            }
        });
        Ok(Response::new(Box::pin(tokio_stream::wrappers::ReceiverStream::new(rx))))
    }

    async fn get_results(
        &self,
        req: Request<proto::GetResultsRequest>,
    ) -> Result<Response<proto::GetResultsResponse>, Status> {
        let r = req.get_ref();
        let stale = convert::stale(r.consistency)?;
        let limit = page_size("limit", r.limit, RESULTS_PAGE_DEFAULT, RESULTS_PAGE_MAX)?;
        forward_if_not_here!(
            self.ctx,
            self.ctx.read_route(&req, stale).await?,
            req,
            JobServiceClient::get_results,
            read
        );
        let r = req.into_inner();
        let job = self.job_or_404(r.job_id)?;
        if r.from_shard > job.shards {
            return Err(ApiError::from(CommandError::TaskNotFound(TaskKey::new(r.job_id, r.from_shard))).into());
        }
        let tasks =
            self.ctx.reader.tasks_of(r.job_id, r.from_shard, limit, RESULTS_PAGE_MAX_BYTES).map_err(ApiError::from)?;
        let next_shard = tasks.last().map_or(job.shards, |(s, _)| s + 1);
        Ok(Response::new(proto::GetResultsResponse {
            results: tasks.into_iter().map(|(s, t)| convert::shard_result(s, t)).collect(),
            next_shard,
        }))
    }
}
