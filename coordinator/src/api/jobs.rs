//! `baton.v1.JobService`: submit, read, list, cancel and watch jobs. The job
//! operations (delete, retry, cancel one shard, pause, priority) are in
//! `job_ops.rs` and the namespace settings in `namespaces.rs`; this file
//! routes their calls there.

use std::collections::BTreeMap;
use std::pin::Pin;

use futures::Stream;
use tonic::{Request, Response, Status};

use baton_client::proto;
use baton_client::proto::job_service_client::JobServiceClient;
use baton_client::proto::job_service_server::JobService;
use baton_raft_store::{
    Command, CommandError, JobFilter, JobId, JobRecord, Outcome, Response as StoreResponse, StoreReader, TaskKey,
};

use super::Ctx;
use super::{convert, watch};
use crate::error::ApiError;

/// Default and largest page of ListJobs.
pub const LIST_PAGE_DEFAULT: usize = 100;
pub const LIST_PAGE_MAX: usize = 1000;
/// Workflow records examined per ListWorkflows call, so a selective filter
/// stays bounded. (ListJobs pages through indexes and needs no such bound.)
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

/// A job's public view, with its namespace's pause read beside it.
pub(super) fn job_view(reader: &StoreReader, j: &JobRecord) -> proto::Job {
    convert::job(j, reader.namespace(&j.namespace).paused)
}

/// The views of a page of jobs, reading each namespace's settings once.
fn job_views(reader: &StoreReader, jobs: &[JobRecord]) -> Vec<proto::Job> {
    let mut paused: BTreeMap<&str, bool> = BTreeMap::new();
    jobs.iter()
        .map(|j| {
            let p = *paused.entry(j.namespace.as_str()).or_insert_with(|| reader.namespace(&j.namespace).paused);
            convert::job(j, p)
        })
        .collect()
}

impl Jobs {
    async fn submit_one(&self, spec: Option<proto::JobSpec>) -> Result<proto::SubmitJobResponse, ApiError> {
        let spec = convert::job_spec(spec)?;
        self.ctx.admit_submit(&spec.namespace)?;
        // apply() refuses it too, against the entry's time; refused here
        // against the same log clock, it costs no entry.
        spec.check_not_before(self.ctx.proposer.log_now_ms())?;
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
                        let (quota, retry_after_ms) = match &e {
                            ApiError::QuotaExceeded { quota, retry_after_ms, .. } => (quota.clone(), *retry_after_ms),
                            _ => (String::new(), 0),
                        };
                        let error_code = e.code().to_string();
                        let s = crate::error::to_status(e);
                        proto::submit_job_result::Result::Error(proto::ItemError {
                            code: format!("{:?}", s.code()),
                            message: s.message().to_string(),
                            error_code,
                            quota,
                            retry_after_ms,
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
        Ok(Response::new(job_view(&self.ctx.reader, &self.job_or_404(req.get_ref().job_id)?)))
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
        let filter = JobFilter { namespace: (!r.namespace.is_empty()).then_some(r.namespace), status };
        // The token is the previous page's last id: the page starts after it
        // in the listing's order (the .proto documents it).
        let after = (r.page_token != 0).then_some(r.page_token);
        let (jobs, resume) =
            self.ctx.reader.list_jobs(&filter, after, limit, r.newest_first).map_err(ApiError::from)?;
        Ok(Response::new(proto::ListJobsResponse {
            jobs: job_views(&self.ctx.reader, &jobs),
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
        self.ctx.authorize(&req)?;
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
    async fn delete_job(
        &self,
        req: Request<proto::DeleteJobRequest>,
    ) -> Result<Response<proto::DeleteJobResponse>, Status> {
        self.delete(req).await
    }

    async fn retry_job(
        &self,
        req: Request<proto::RetryJobRequest>,
    ) -> Result<Response<proto::RetryJobResponse>, Status> {
        self.retry(req).await
    }

    async fn cancel_task(
        &self,
        req: Request<proto::CancelTaskRequest>,
    ) -> Result<Response<proto::CancelTaskResponse>, Status> {
        self.cancel_shard(req).await
    }

    async fn pause_job(
        &self,
        req: Request<proto::PauseJobRequest>,
    ) -> Result<Response<proto::PauseJobResponse>, Status> {
        self.pause(req).await
    }

    async fn resume_job(
        &self,
        req: Request<proto::ResumeJobRequest>,
    ) -> Result<Response<proto::ResumeJobResponse>, Status> {
        self.resume(req).await
    }

    async fn set_priority(
        &self,
        req: Request<proto::SetPriorityRequest>,
    ) -> Result<Response<proto::SetPriorityResponse>, Status> {
        self.reprioritize(req).await
    }

    async fn pause_namespace(
        &self,
        req: Request<proto::PauseNamespaceRequest>,
    ) -> Result<Response<proto::Namespace>, Status> {
        self.pause_ns(req).await
    }

    async fn resume_namespace(
        &self,
        req: Request<proto::ResumeNamespaceRequest>,
    ) -> Result<Response<proto::Namespace>, Status> {
        self.resume_ns(req).await
    }

    async fn set_namespace_retention(
        &self,
        req: Request<proto::SetNamespaceRetentionRequest>,
    ) -> Result<Response<proto::Namespace>, Status> {
        self.ns_retention(req).await
    }

    async fn set_namespace_idempotency_window(
        &self,
        req: Request<proto::SetNamespaceIdempotencyWindowRequest>,
    ) -> Result<Response<proto::Namespace>, Status> {
        self.ns_idempotency_window(req).await
    }

    async fn set_namespace_quota(
        &self,
        req: Request<proto::SetNamespaceQuotaRequest>,
    ) -> Result<Response<proto::Namespace>, Status> {
        self.ns_quota(req).await
    }

    async fn get_namespace(
        &self,
        req: Request<proto::GetNamespaceRequest>,
    ) -> Result<Response<proto::Namespace>, Status> {
        self.read_ns(req).await
    }

    async fn get_task_logs(
        &self,
        req: Request<proto::GetTaskLogsRequest>,
    ) -> Result<Response<proto::GetTaskLogsResponse>, Status> {
        super::logs::get_task_logs(&self.ctx, req).await
    }
}
