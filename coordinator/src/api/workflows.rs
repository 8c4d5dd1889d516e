//! `baton.v1.WorkflowService`. Writes go to the leader (forwarded from a
//! follower like the job calls); reads are linearizable at the leader or
//! stale from this node, as the request asks; watches are served from this
//! node's applied state. Every decision about a workflow is made by apply();
//! this service only converts, validates at the edge, and reads.

use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::pin::Pin;

use futures::Stream;
use tokio::sync::mpsc;
use tonic::{Request, Response, Status};

use baton_client::proto;
use baton_client::proto::workflow_service_client::WorkflowServiceClient;
use baton_client::proto::workflow_service_server::WorkflowService;
use baton_raft_store::{
    Command, CommandError, Counts, JobId, Outcome, Response as StoreResponse, StepState, StoreReader, TaskKey,
    TaskState, WorkflowId, WorkflowRecord,
};

use super::jobs::{LIST_PAGE_DEFAULT, LIST_PAGE_MAX, LIST_SCAN_MAX, WATCH_QUEUE, page_size};
use super::{Ctx, convert, watch};
use crate::error::ApiError;

pub struct Workflows {
    pub ctx: Ctx,
}

fn outcome(r: StoreResponse) -> Result<Outcome, ApiError> {
    r.into_result().map_err(ApiError::from)
}

fn unexpected(o: Outcome) -> ApiError {
    ApiError::Internal(format!("unexpected reply {o:?}"))
}

/// Shard counts and shard number of finished jobs, which never change: a
/// watch reads each finished job once.
type FinishedJobs = HashMap<JobId, (Counts, u32)>;

/// A workflow's view as of this node's applied index, with each step's
/// current job counts; `None` when the workflow is unknown here. The
/// workflow and its live jobs (in memory) are read together under the lock;
/// finished jobs, which no longer change, are read from disk after it, each
/// once per `finished` cache.
fn view(
    reader: &StoreReader,
    id: WorkflowId,
    finished: &mut FinishedJobs,
) -> (u64, Result<Option<proto::Workflow>, ApiError>) {
    let (applied, read) = reader.read(|core, kv| {
        let applied = core.meta.last_applied.map_or(0, |l| l.index);
        let wf = match core.workflow(kv, id) {
            Ok(Some(w)) => w,
            Ok(None) => return (applied, Ok(None)),
            Err(e) => return (applied, Err(ApiError::from(e))),
        };
        let live: HashMap<JobId, (Counts, u32)> = wf
            .steps
            .iter()
            .filter_map(convert::current_job)
            .filter_map(|j| core.idx.jobs.get(&j).map(|r| (j, (r.counts, r.shards))))
            .collect();
        (applied, Ok(Some((wf, live))))
    });
    let (wf, mut jobs) = match read {
        Ok(Some(x)) => x,
        Ok(None) => return (applied, Ok(None)),
        Err(e) => return (applied, Err(e)),
    };
    for j in wf.steps.iter().filter_map(convert::current_job) {
        if jobs.contains_key(&j) {
            continue;
        }
        let counts = match finished.entry(j) {
            Entry::Occupied(o) => *o.get(),
            Entry::Vacant(v) => match reader.job(j) {
                Ok(Some(rec)) => *v.insert((rec.counts, rec.shards)),
                Ok(None) => continue,
                Err(e) => return (applied, Err(e.into())),
            },
        };
        jobs.insert(j, counts);
    }
    (applied, Ok(Some(convert::workflow(&wf, &|j| jobs.get(&j).copied()))))
}

impl Workflows {
    fn workflow_or_404(&self, id: WorkflowId) -> Result<WorkflowRecord, ApiError> {
        self.ctx.reader.workflow(id)?.ok_or_else(|| ApiError::from(CommandError::WorkflowNotFound(id)))
    }

    async fn resolve(
        &self,
        r: proto::ResolveStepRequest,
        approve: bool,
    ) -> Result<proto::ResolveStepResponse, ApiError> {
        let cmd = Command::ResolveGate { workflow: r.workflow_id, step: r.step, approve, by: r.by };
        cmd.validate()?;
        match outcome(self.ctx.proposer.propose(cmd).await?)? {
            Outcome::GateResolved { .. } => Ok(proto::ResolveStepResponse {}),
            other => Err(unexpected(other)),
        }
    }

    /// The committed result of the workflow's result step.
    fn result(&self, id: WorkflowId) -> Result<proto::GetWorkflowResultResponse, ApiError> {
        let wf = self.workflow_or_404(id)?;
        let Some(i) = wf.result_step else {
            return Err(ApiError::Precondition(format!("workflow {id} names no result step")));
        };
        let s = &wf.steps[i as usize];
        if s.state != StepState::Succeeded {
            return Err(ApiError::NotFound(format!(
                "workflow {id} has no result yet: its result step {:?} is {}",
                s.name,
                s.state.name()
            )));
        }
        let job = s.output_job().ok_or_else(|| {
            ApiError::Internal(format!("result step {:?} of workflow {id} succeeded without a job", s.name))
        })?;
        let key = TaskKey::new(job, 0);
        match self.ctx.reader.task(key)?.map(|t| t.state) {
            Some(TaskState::Succeeded { token, result }) => Ok(proto::GetWorkflowResultResponse {
                step: s.name.clone(),
                result: result.into_vec(),
                job_id: job,
                token,
            }),
            other => Err(ApiError::Internal(format!("result job {job} of workflow {id} has shard 0 in {other:?}"))),
        }
    }
}

type EventStream = Pin<Box<dyn Stream<Item = Result<proto::WorkflowEvent, Status>> + Send>>;

#[tonic::async_trait]
impl WorkflowService for Workflows {
    async fn submit_workflow(
        &self,
        req: Request<proto::SubmitWorkflowRequest>,
    ) -> Result<Response<proto::SubmitWorkflowResponse>, Status> {
        forward_if_not_here!(self.ctx, self.ctx.route(&req)?, req, WorkflowServiceClient::submit_workflow, write);
        let spec = convert::workflow_spec(req.into_inner().spec)?;
        self.ctx.admit_submit(&spec.namespace)?;
        match outcome(self.ctx.proposer.propose(Command::SubmitWorkflow(spec)).await?)? {
            Outcome::WorkflowSubmitted { workflow, steps, duplicate } => {
                Ok(Response::new(proto::SubmitWorkflowResponse { workflow_id: workflow, steps, duplicate }))
            }
            other => Err(unexpected(other).into()),
        }
    }

    async fn get_workflow(&self, req: Request<proto::GetWorkflowRequest>) -> Result<Response<proto::Workflow>, Status> {
        let stale = convert::stale(req.get_ref().consistency)?;
        forward_if_not_here!(
            self.ctx,
            self.ctx.read_route(&req, stale).await?,
            req,
            WorkflowServiceClient::get_workflow,
            read
        );
        let id = req.get_ref().workflow_id;
        match view(&self.ctx.reader, id, &mut FinishedJobs::new()).1? {
            Some(v) => Ok(Response::new(v)),
            None => Err(ApiError::from(CommandError::WorkflowNotFound(id)).into()),
        }
    }

    async fn list_workflows(
        &self,
        req: Request<proto::ListWorkflowsRequest>,
    ) -> Result<Response<proto::ListWorkflowsResponse>, Status> {
        let r = req.get_ref();
        let stale = convert::stale(r.consistency)?;
        let status = convert::workflow_status_filter(r.status)?;
        let limit = page_size("page_size", r.page_size, LIST_PAGE_DEFAULT, LIST_PAGE_MAX)?;
        forward_if_not_here!(
            self.ctx,
            self.ctx.read_route(&req, stale).await?,
            req,
            WorkflowServiceClient::list_workflows,
            read
        );
        let r = req.into_inner();
        let (wfs, resume) = self
            .ctx
            .reader
            .list_workflows(r.page_token, limit, LIST_SCAN_MAX, |w| {
                (r.namespace.is_empty() || w.namespace == r.namespace) && status.is_none_or(|s| w.status == s)
            })
            .map_err(ApiError::from)?;
        Ok(Response::new(proto::ListWorkflowsResponse {
            workflows: wfs.iter().map(|w| convert::workflow(w, &|_| None)).collect(),
            next_page_token: resume.unwrap_or(0),
        }))
    }

    type WatchWorkflowStream = EventStream;

    async fn watch_workflow(&self, req: Request<proto::WatchWorkflowRequest>) -> Result<Response<EventStream>, Status> {
        let permit = self
            .ctx
            .watches
            .clone()
            .try_acquire_owned()
            .map_err(|_| ApiError::Exhausted("too many open watches on this node".into()))?;
        let id = req.get_ref().workflow_id;
        let ctx = &self.ctx;
        let from = &req;
        watch::await_known(
            ctx,
            &req,
            &format!("workflow {id}"),
            |reader| {
                reader.read(|core, kv| {
                    let applied = core.meta.last_applied.map_or(0, |l| l.index);
                    (applied, core.workflow(kv, id).map(|w| w.is_some()).map_err(ApiError::from))
                })
            },
            |ch| async move {
                let ask = ctx.forwarded(from, proto::GetWorkflowRequest { workflow_id: id, consistency: 0 });
                WorkflowServiceClient::new(ch).get_workflow(ask).await.map(drop)
            },
            || CommandError::WorkflowNotFound(id).into(),
        )
        .await?;
        self.ctx.authorize(&req)?;
        let (tx, rx) = mpsc::channel(WATCH_QUEUE);
        let reader = self.ctx.reader.clone();
        let metrics = self.ctx.raft.metrics();
        tokio::spawn(async move {
            let _permit = permit;
            tokio::select! {
                _ = tx.closed() => {}
                _ = watch_loop(&reader, metrics, id, &tx) => {}
            }
        });
        Ok(Response::new(Box::pin(tokio_stream::wrappers::ReceiverStream::new(rx))))
    }

    async fn cancel_workflow(
        &self,
        req: Request<proto::CancelWorkflowRequest>,
    ) -> Result<Response<proto::CancelWorkflowResponse>, Status> {
        forward_if_not_here!(self.ctx, self.ctx.route(&req)?, req, WorkflowServiceClient::cancel_workflow, write);
        let r = req.into_inner();
        let cmd = Command::CancelWorkflow { workflow: r.workflow_id, reason: r.reason };
        cmd.validate().map_err(ApiError::from)?;
        // Running shards are told to stop by the leader, as for CancelJob.
        match outcome(self.ctx.proposer.propose(cmd).await?)? {
            Outcome::WorkflowCancelled { steps_cancelled, tasks_cancelled, .. } => {
                Ok(Response::new(proto::CancelWorkflowResponse { steps_cancelled, tasks_cancelled }))
            }
            other => Err(unexpected(other).into()),
        }
    }

    async fn approve_step(
        &self,
        req: Request<proto::ResolveStepRequest>,
    ) -> Result<Response<proto::ResolveStepResponse>, Status> {
        forward_if_not_here!(self.ctx, self.ctx.route(&req)?, req, WorkflowServiceClient::approve_step, write);
        Ok(Response::new(self.resolve(req.into_inner(), true).await?))
    }

    async fn reject_step(
        &self,
        req: Request<proto::ResolveStepRequest>,
    ) -> Result<Response<proto::ResolveStepResponse>, Status> {
        forward_if_not_here!(self.ctx, self.ctx.route(&req)?, req, WorkflowServiceClient::reject_step, write);
        Ok(Response::new(self.resolve(req.into_inner(), false).await?))
    }

    async fn get_workflow_result(
        &self,
        req: Request<proto::GetWorkflowResultRequest>,
    ) -> Result<Response<proto::GetWorkflowResultResponse>, Status> {
        let stale = convert::stale(req.get_ref().consistency)?;
        forward_if_not_here!(
            self.ctx,
            self.ctx.read_route(&req, stale).await?,
            req,
            WorkflowServiceClient::get_workflow_result,
            read
        );
        Ok(Response::new(self.result(req.get_ref().workflow_id)?))
    }
}

/// Send the workflow's view each time an applied entry changes it, until it
/// finishes. Intermediate states between two wake-ups are coalesced.
async fn watch_loop(
    reader: &StoreReader,
    mut metrics: watch::RaftMetricsRx,
    id: WorkflowId,
    tx: &mpsc::Sender<Result<proto::WorkflowEvent, Status>>,
) {
    let mut last: Option<proto::Workflow> = None;
    let mut finished = FinishedJobs::new();
    loop {
        let (applied, v) = view(reader, id, &mut finished);
        let v = match v {
            Ok(Some(v)) => v,
            Ok(None) => return,
            Err(e) => {
                let _ = tx.send(Err(e.into())).await;
                return;
            }
        };
        if last.as_ref() != Some(&v) {
            let done = v.finished_ms != 0;
            let ev = proto::WorkflowEvent { workflow: Some(v.clone()), applied_index: applied };
            if tx.send(Ok(ev)).await.is_err() || done {
                return;
            }
            last = Some(v);
        }
        if watch::applied_beyond(&mut metrics, applied).await.is_err() {
            return;
        }
    }
}

#[cfg(test)]
#[path = "workflows_tests.rs"]
mod tests;
