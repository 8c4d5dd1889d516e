//! `Client` calls of the WorkflowService: submit, read, list, watch, cancel,
//! decide gates, and read a workflow's result. They share the job calls'
//! retry loop (leader hints, backoff, the client's deadline); a submission
//! always carries an idempotency key, so a retry never starts a second
//! workflow. Build specs with [`crate::workflow::WorkflowBuilder`].

use crate::client::Channel;
use futures::Stream;

use crate::client::{Client, MAX_RESPONSE_BYTES};
use crate::error::Error;
use crate::proto;
use crate::proto::workflow_service_client::WorkflowServiceClient;

impl Client {
    fn workflows(ch: Channel) -> WorkflowServiceClient<Channel> {
        WorkflowServiceClient::new(ch).max_decoding_message_size(MAX_RESPONSE_BYTES)
    }

    /// Submit a workflow. An idempotency key is generated when the spec has
    /// none, so retries (here and by the caller) never start a second one.
    /// A malformed spec (a cycle, an unknown dependency, a limit) is refused
    /// with [`Error::InvalidArgument`] naming the field.
    pub async fn submit_workflow(&self, mut spec: proto::WorkflowSpec) -> Result<proto::SubmitWorkflowResponse, Error> {
        if spec.idempotency_key.is_empty() {
            spec.idempotency_key = uuid::Uuid::new_v4().to_string();
        }
        self.retry(true, |ch| {
            let req = proto::SubmitWorkflowRequest { spec: Some(spec.clone()) };
            async move { Self::workflows(ch).submit_workflow(req).await }
        })
        .await
    }

    /// The workflow with every step's state and shard counts.
    pub async fn get_workflow(&self, id: u64) -> Result<proto::Workflow, Error> {
        self.retry(false, |ch| async move {
            Self::workflows(ch).get_workflow(proto::GetWorkflowRequest { workflow_id: id, consistency: 0 }).await
        })
        .await
    }

    pub async fn list_workflows(
        &self,
        req: proto::ListWorkflowsRequest,
    ) -> Result<proto::ListWorkflowsResponse, Error> {
        self.retry(false, |ch| {
            let req = req.clone();
            async move { Self::workflows(ch).list_workflows(req).await }
        })
        .await
    }

    /// The workflow now, then its later states, until it finishes. Like
    /// [`Client::watch`]: states may be coalesced, the stream survives leader
    /// changes, and the last event is the finished workflow.
    pub fn watch_workflow(&self, id: u64) -> impl Stream<Item = Result<proto::WorkflowEvent, Error>> + Send + 'static {
        self.watch_events(
            move |ch| async move {
                Self::workflows(ch).watch_workflow(proto::WatchWorkflowRequest { workflow_id: id }).await
            },
            |ev: &proto::WorkflowEvent| (ev.applied_index, ev.workflow.as_ref().is_some_and(|w| w.finished_ms != 0)),
        )
    }

    /// Cancel every running, waiting and awaiting step; running shards are
    /// told to stop.
    pub async fn cancel_workflow(&self, id: u64, reason: &str) -> Result<proto::CancelWorkflowResponse, Error> {
        let reason = reason.to_string();
        self.retry(true, |ch| {
            let req = proto::CancelWorkflowRequest { workflow_id: id, reason: reason.clone() };
            async move { Self::workflows(ch).cancel_workflow(req).await }
        })
        .await
    }

    /// Approve a gate step awaiting approval; `by` is recorded as the reason.
    pub async fn approve_step(&self, id: u64, step: &str, by: &str) -> Result<(), Error> {
        self.resolve_step(id, step, by, true).await
    }

    /// Reject a gate step awaiting approval: the step fails.
    pub async fn reject_step(&self, id: u64, step: &str, by: &str) -> Result<(), Error> {
        self.resolve_step(id, step, by, false).await
    }

    async fn resolve_step(&self, id: u64, step: &str, by: &str, approve: bool) -> Result<(), Error> {
        let req = proto::ResolveStepRequest { workflow_id: id, step: step.to_string(), by: by.to_string() };
        self.retry(true, |ch| {
            let req = req.clone();
            async move {
                let mut svc = Self::workflows(ch);
                if approve { svc.approve_step(req).await } else { svc.reject_step(req).await }
            }
        })
        .await
        .map(|_| ())
    }

    /// The result of the workflow's result step: [`Error::NotFound`] until
    /// that step has succeeded, [`Error::FailedPrecondition`] when the
    /// workflow names no result step.
    pub async fn workflow_result(&self, id: u64) -> Result<proto::GetWorkflowResultResponse, Error> {
        self.retry(false, |ch| async move {
            let req = proto::GetWorkflowResultRequest { workflow_id: id, consistency: 0 };
            Self::workflows(ch).get_workflow_result(req).await
        })
        .await
    }
}
