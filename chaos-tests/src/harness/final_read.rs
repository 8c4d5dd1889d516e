//! Reading the final task table and workflows from the cluster, and mapping
//! the proto's statuses to the history's.

use anyhow::Result;
use baton_client::{Client, proto};

use crate::history::{
    FinalJob, FinalShard, FinalStep, FinalWorkflow, JobStatus, RunOf, StepRef, StepRole, StepState, TaskStatus,
    WorkflowStatus,
};

/// Namespace every chaos job and workflow is submitted under, and the final
/// read lists.
pub const NAMESPACE: &str = "chaos";
/// Page size for the final listing.
const LIST_PAGE: u32 = 1000;

/// A job status as the history writes it.
pub(super) fn job_status(s: i32) -> JobStatus {
    match proto::JobStatus::try_from(s) {
        Ok(proto::JobStatus::Running) => JobStatus::Running,
        Ok(proto::JobStatus::Succeeded) => JobStatus::Succeeded,
        Ok(proto::JobStatus::Failed) => JobStatus::Failed,
        Ok(proto::JobStatus::Cancelled) => JobStatus::Cancelled,
        _ => JobStatus::Queued,
    }
}

/// A task status as the history writes it.
pub(super) fn task_status(s: i32) -> TaskStatus {
    match proto::TaskStatus::try_from(s) {
        Ok(proto::TaskStatus::Running) => TaskStatus::Running,
        Ok(proto::TaskStatus::Succeeded) => TaskStatus::Succeeded,
        Ok(proto::TaskStatus::Dead) => TaskStatus::Dead,
        Ok(proto::TaskStatus::Cancelled) => TaskStatus::Cancelled,
        _ => TaskStatus::Pending,
    }
}

fn workflow_status(s: i32) -> WorkflowStatus {
    match proto::WorkflowStatus::try_from(s) {
        Ok(proto::WorkflowStatus::Succeeded) => WorkflowStatus::Succeeded,
        Ok(proto::WorkflowStatus::Failed) => WorkflowStatus::Failed,
        Ok(proto::WorkflowStatus::Cancelled) => WorkflowStatus::Cancelled,
        _ => WorkflowStatus::Running,
    }
}

fn step_state(s: i32) -> StepState {
    match proto::StepStatus::try_from(s) {
        Ok(proto::StepStatus::Running) => StepState::Running,
        Ok(proto::StepStatus::AwaitingApproval) => StepState::AwaitingApproval,
        Ok(proto::StepStatus::Succeeded) => StepState::Succeeded,
        Ok(proto::StepStatus::Failed) => StepState::Failed,
        Ok(proto::StepStatus::Skipped) => StepState::Skipped,
        Ok(proto::StepStatus::Cancelled) => StepState::Cancelled,
        _ => StepState::Waiting,
    }
}

fn step_role(r: i32) -> StepRole {
    match proto::StepRole::try_from(r) {
        Ok(proto::StepRole::Generate) => StepRole::Generate,
        Ok(proto::StepRole::Reduce) => StepRole::Reduce,
        _ => StepRole::Map,
    }
}

/// Every chaos job and workflow, read linearizably from the leader.
pub(super) async fn read_final(client: &Client) -> Result<(Vec<FinalJob>, Vec<FinalWorkflow>)> {
    let workflows = read_workflows(client).await?;
    let mut jobs = Vec::new();
    let mut page_token = 0;
    loop {
        let page = client
            .list(proto::ListJobsRequest {
                namespace: NAMESPACE.into(),
                page_size: LIST_PAGE,
                page_token,
                ..Default::default()
            })
            .await?;
        for j in page.jobs {
            let shards = client
                .results(j.id)
                .await?
                .into_iter()
                .map(|r| {
                    let status = task_status(r.status);
                    let done = status == TaskStatus::Succeeded;
                    FinalShard {
                        shard: r.shard,
                        status,
                        result: done.then(|| String::from_utf8_lossy(&r.result).into_owned()),
                        token: done.then_some(r.token),
                        latest_token: (r.attempts > 0).then_some(r.token),
                    }
                })
                .collect();
            let origin = j.origin.map(|o| {
                let role = step_role(o.role);
                // The job read does not say which map a reduce reads; its
                // step's record does. What each worker was told is in its
                // `assign` events, which the checker compares with this.
                let reduce_of = (role == StepRole::Reduce)
                    .then(|| workflows.iter().find(|w| w.id == o.workflow_id))
                    .flatten()
                    .and_then(|w| w.step(&o.step))
                    .and_then(|s| s.map_job);
                StepRef { workflow: o.workflow_id, step: o.step, role, reduce_of }
            });
            let run_of = j.run_origin.and_then(|r| r.source).map(|s| match s {
                proto::run_origin::Source::Schedule(f) => {
                    RunOf::Schedule { schedule: f.schedule_id, fire_ms: f.fire_ms, manual: f.manual }
                }
                proto::run_origin::Source::Event(e) => RunOf::Event { trigger: e.trigger_id, event_id: e.event_id },
            });
            jobs.push(FinalJob {
                id: j.id,
                key: j.idempotency_key,
                status: job_status(j.status),
                shards,
                origin,
                run_of,
                created_ms: (j.created_ms != 0).then_some(j.created_ms),
                finished_ms: (j.finished_ms != 0).then_some(j.finished_ms),
            });
        }
        if page.next_page_token == 0 {
            break;
        }
        page_token = page.next_page_token;
    }
    Ok((jobs, workflows))
}

/// Every chaos workflow with its steps, and the result of each that
/// succeeded with a result step (GetWorkflowResult).
async fn read_workflows(client: &Client) -> Result<Vec<FinalWorkflow>> {
    let mut out = Vec::new();
    let mut page_token = 0;
    loop {
        let page = client
            .list_workflows(proto::ListWorkflowsRequest {
                namespace: NAMESPACE.into(),
                page_size: LIST_PAGE,
                page_token,
                ..Default::default()
            })
            .await?;
        for w in page.workflows {
            let status = workflow_status(w.status);
            let result = if status == WorkflowStatus::Succeeded && !w.result_step.is_empty() {
                Some(String::from_utf8_lossy(&client.workflow_result(w.id).await?.result).into_owned())
            } else {
                None
            };
            let nonzero = |id: u64| (id != 0).then_some(id);
            let steps = w
                .steps
                .into_iter()
                .map(|s| FinalStep {
                    state: step_state(s.status),
                    chosen: (!s.chosen.is_empty() || s.choice && step_state(s.status) == StepState::Succeeded)
                        .then_some(s.chosen),
                    generate_job: nonzero(s.generate_job_id),
                    map_job: nonzero(s.map_job_id),
                    reduce_job: nonzero(s.reduce_job_id),
                    name: s.name,
                })
                .collect();
            out.push(FinalWorkflow { id: w.id, key: w.idempotency_key, status, steps, result });
        }
        if page.next_page_token == 0 {
            return Ok(out);
        }
        page_token = page.next_page_token;
    }
}
