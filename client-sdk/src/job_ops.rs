//! `Client` calls that operate on existing jobs and namespaces: delete,
//! retry, cancel one shard, pause and resume, priority, namespace settings,
//! and listing across pages.
//!
//! They share the retry loop of every call. They are writes, so a retry after
//! an attempt whose outcome is unknown reports [`Error::Indeterminate`] if the
//! next attempt is refused (e.g. a retried delete that finds the job already
//! gone). Pausing, resuming and setting a priority, a retention or an
//! idempotency window give the same state when repeated, so retrying them is
//! always safe.

use std::time::Duration;

use crate::client::Channel;

use crate::client::{Client, MAX_RESPONSE_BYTES};
use crate::error::Error;
use crate::proto;
use crate::proto::job_service_client::JobServiceClient;

/// Most jobs [`Client::list_all`] gathers before giving up, so a forgotten
/// filter cannot pull a whole cluster's history into memory.
pub const LIST_ALL_MAX_JOBS: usize = 100_000;

impl Client {
    fn job_ops(ch: Channel) -> JobServiceClient<Channel> {
        JobServiceClient::new(ch).max_decoding_message_size(MAX_RESPONSE_BYTES)
    }

    /// Delete a finished job now instead of when its retention ends. It is
    /// gone from reads at once ([`Error::NotFound`] from then on).
    ///
    /// Errors: [`Error::NotFound`]; [`Error::JobNotFinished`] while shards are
    /// pending or running (cancel the job first); [`Error::JobInWorkflow`]
    /// for a workflow's job, which goes with its workflow.
    pub async fn delete_job(&self, job_id: u64) -> Result<(), Error> {
        self.retry(true, |ch| async move { Self::job_ops(ch).delete_job(proto::DeleteJobRequest { job_id }).await })
            .await
            .map(drop)
    }

    /// Run the job's dead and cancelled shards again with a fresh attempt
    /// budget; a finished job becomes live again. Returns how many shards
    /// were requeued. Reports from the old attempts stay fenced.
    ///
    /// Errors: [`Error::NotFound`]; [`Error::NothingToRetry`] when no shard is
    /// dead or cancelled; [`Error::JobInWorkflow`]; [`Error::ResourceExhausted`]
    /// when the cluster holds its most live tasks.
    pub async fn retry_job(&self, job_id: u64) -> Result<u32, Error> {
        self.retry(true, |ch| async move { Self::job_ops(ch).retry_job(proto::RetryJobRequest { job_id }).await })
            .await
            .map(|r| r.tasks_requeued)
    }

    /// Cancel one unfinished shard; a running attempt is told to stop on its
    /// worker. A job that finishes with a cancelled shard is `FAILED`.
    ///
    /// Errors: [`Error::NotFound`] (job or shard); [`Error::JobFinished`];
    /// [`Error::FailedPrecondition`] when the shard has already finished.
    pub async fn cancel_task(&self, job_id: u64, shard: u32, reason: &str) -> Result<proto::CancelTaskResponse, Error> {
        let req = proto::CancelTaskRequest { job_id, shard, reason: reason.to_string() };
        self.retry(true, |ch| {
            let req = req.clone();
            async move { Self::job_ops(ch).cancel_task(req).await }
        })
        .await
    }

    /// Start no new attempt of the job's shards until [`Client::resume_job`];
    /// running attempts go on. Pausing a paused job succeeds.
    ///
    /// Errors: [`Error::NotFound`]; [`Error::JobFinished`].
    pub async fn pause_job(&self, job_id: u64) -> Result<(), Error> {
        self.retry(true, |ch| async move { Self::job_ops(ch).pause_job(proto::PauseJobRequest { job_id }).await })
            .await
            .map(drop)
    }

    /// Let a paused job's shards start again (unless its namespace is paused).
    ///
    /// Errors: [`Error::NotFound`]; [`Error::JobFinished`].
    pub async fn resume_job(&self, job_id: u64) -> Result<(), Error> {
        self.retry(true, |ch| async move { Self::job_ops(ch).resume_job(proto::ResumeJobRequest { job_id }).await })
            .await
            .map(drop)
    }

    /// Change a live job's priority (higher runs first); its shards not yet
    /// started are granted in the new order.
    ///
    /// Errors: [`Error::NotFound`]; [`Error::JobFinished`].
    pub async fn set_priority(&self, job_id: u64, priority: i32) -> Result<(), Error> {
        self.retry(true, |ch| async move {
            Self::job_ops(ch).set_priority(proto::SetPriorityRequest { job_id, priority }).await
        })
        .await
        .map(drop)
    }

    /// Start no new attempt of any job of `namespace`, present or future,
    /// until [`Client::resume_namespace`]; running attempts go on.
    ///
    /// Errors: [`Error::InvalidArgument`]; [`Error::ResourceExhausted`] when
    /// too many namespaces have settings.
    pub async fn pause_namespace(&self, namespace: &str) -> Result<proto::Namespace, Error> {
        let namespace = namespace.to_string();
        self.retry(true, |ch| {
            let req = proto::PauseNamespaceRequest { namespace: namespace.clone() };
            async move { Self::job_ops(ch).pause_namespace(req).await }
        })
        .await
    }

    /// Let the namespace's jobs start attempts again.
    pub async fn resume_namespace(&self, namespace: &str) -> Result<proto::Namespace, Error> {
        let namespace = namespace.to_string();
        self.retry(true, |ch| {
            let req = proto::ResumeNamespaceRequest { namespace: namespace.clone() };
            async move { Self::job_ops(ch).resume_namespace(req).await }
        })
        .await
    }

    /// How long the namespace's jobs (without a retention of their own) and
    /// workflows are kept once finished; `None` goes back to the default
    /// (7 days). Applies to those that finish from now on.
    ///
    /// Errors: [`Error::InvalidArgument`] (a retention of 0, under 1 ms, or
    /// over 366 days); [`Error::ResourceExhausted`] as
    /// [`Client::pause_namespace`].
    pub async fn set_namespace_retention(
        &self,
        namespace: &str,
        retention: Option<Duration>,
    ) -> Result<proto::Namespace, Error> {
        let retention_ms = match retention {
            None => 0,
            Some(d) => match u64::try_from(d.as_millis()) {
                Ok(ms) if ms > 0 => ms,
                _ => {
                    return Err(Error::InvalidArgument(format!(
                        "invalid retention_ms: {d:?} is not a whole number of ms from 1 ms up"
                    )));
                }
            },
        };
        let namespace = namespace.to_string();
        self.retry(true, |ch| {
            let req = proto::SetNamespaceRetentionRequest { namespace: namespace.clone(), retention_ms };
            async move { Self::job_ops(ch).set_namespace_retention(req).await }
        })
        .await
    }

    /// How long the namespace's idempotency keys (submit keys, event ids) are
    /// remembered; `None` goes back to the default (24 hours). Applies to
    /// keys written from now on: a key keeps the window it was written with.
    /// Once a key's window has passed, a submit with it creates a new job, so
    /// the window should outlast any retry of the same submit.
    ///
    /// Errors: [`Error::InvalidArgument`] (a window under 1 s or over
    /// 7 days); [`Error::ResourceExhausted`] as [`Client::pause_namespace`].
    pub async fn set_namespace_idempotency_window(
        &self,
        namespace: &str,
        window: Option<Duration>,
    ) -> Result<proto::Namespace, Error> {
        let idempotency_window_ms = match window {
            None => 0,
            Some(d) => match u64::try_from(d.as_millis()) {
                // 0 would mean the default; the server judges the bounds.
                Ok(ms) if ms > 0 => ms,
                _ => {
                    return Err(Error::InvalidArgument(format!(
                        "invalid idempotency_window_ms: {d:?} is not a whole number of ms from 1 ms up"
                    )));
                }
            },
        };
        let namespace = namespace.to_string();
        self.retry(true, |ch| {
            let req =
                proto::SetNamespaceIdempotencyWindowRequest { namespace: namespace.clone(), idempotency_window_ms };
            async move { Self::job_ops(ch).set_namespace_idempotency_window(req).await }
        })
        .await
    }

    /// Set or clear the namespace's quotas (see [`QuotaUpdate`]); answers
    /// with the namespace's settings and usage as applied. A submit over a
    /// quota then fails with [`Error::QuotaExceeded`].
    ///
    /// Errors: [`Error::InvalidArgument`] (a quota over its bound);
    /// [`Error::ResourceExhausted`] as [`Client::pause_namespace`].
    pub async fn set_namespace_quota(&self, namespace: &str, update: QuotaUpdate) -> Result<proto::Namespace, Error> {
        let namespace = namespace.to_string();
        self.retry(true, |ch| {
            let req = proto::SetNamespaceQuotaRequest {
                namespace: namespace.clone(),
                live_tasks: update.live_tasks,
                payload_bytes: update.payload_bytes,
                submits_per_sec: update.submits_per_sec,
                clear: update.clear,
            };
            async move { Self::job_ops(ch).set_namespace_quota(req).await }
        })
        .await
    }

    /// The namespace's settings (the defaults when none were set), its
    /// quotas and its usage against them.
    pub async fn namespace(&self, namespace: &str) -> Result<proto::Namespace, Error> {
        let namespace = namespace.to_string();
        self.retry(false, |ch| {
            let req = proto::GetNamespaceRequest { namespace: namespace.clone(), consistency: 0 };
            async move { Self::job_ops(ch).get_namespace(req).await }
        })
        .await
    }

    /// Every job `req` selects (namespace, status, order), following page
    /// tokens from `req.page_token` to the end, in the listing's order.
    /// Fails with [`Error::ResourceExhausted`] past [`LIST_ALL_MAX_JOBS`];
    /// page with [`Client::list`] for more.
    pub async fn list_all(&self, mut req: proto::ListJobsRequest) -> Result<Vec<proto::Job>, Error> {
        let mut out = Vec::new();
        loop {
            let page = self.list(req.clone()).await?;
            out.extend(page.jobs);
            if out.len() > LIST_ALL_MAX_JOBS {
                return Err(Error::ResourceExhausted(format!(
                    "more than {LIST_ALL_MAX_JOBS} jobs match; page with Client::list"
                )));
            }
            if page.next_page_token == 0 {
                return Ok(out);
            }
            req.page_token = page.next_page_token;
        }
    }
}

/// A change of a namespace's quotas, for [`Client::set_namespace_quota`].
/// For each quota: `None` leaves it as it is, `Some(0)` makes it unlimited,
/// `Some(n)` sets it. `clear` makes every quota unlimited first.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct QuotaUpdate {
    /// Pending + running shards of the namespace.
    pub live_tasks: Option<u64>,
    /// Payload bytes of the namespace's live jobs.
    pub payload_bytes: Option<u64>,
    /// Submits (jobs, batch items, workflows) per second at the leader.
    pub submits_per_sec: Option<u32>,
    pub clear: bool,
}
