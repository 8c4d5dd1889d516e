//! Reading the final task table from the cluster, and mapping the proto's
//! statuses to the history's.

use anyhow::Result;
use baton_client::{Client, proto};

use crate::history::{FinalJob, FinalShard, JobStatus, TaskStatus};

/// Namespace every chaos job is submitted under, and the final read lists.
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

/// Every chaos job, read linearizably from the leader.
pub(super) async fn read_final(client: &Client) -> Result<Vec<FinalJob>> {
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
            jobs.push(FinalJob {
                id: j.id,
                key: j.idempotency_key,
                status: job_status(j.status),
                shards,
                origin: None,
            });
        }
        if page.next_page_token == 0 {
            return Ok(jobs);
        }
        page_token = page.next_page_token;
    }
}
