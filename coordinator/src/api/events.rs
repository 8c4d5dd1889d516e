//! `baton.v1.EventService`: publish events and manage the triggers they
//! start runs of. Writes go to the leader like every write; the runs an
//! event starts are created by apply() in the event's own entry. Trigger
//! records are in memory (`Indexes::triggers`), so listing reads them under
//! the reader's lock, a bounded page per call.

use tonic::{Request, Response, Status};

use baton_client::proto;
use baton_client::proto::event_service_client::EventServiceClient;
use baton_client::proto::event_service_server::EventService;
use baton_raft_store::{Command, Outcome, Response as StoreResponse, RunTarget};

use super::jobs::{LIST_PAGE_DEFAULT, LIST_PAGE_MAX, page_size};
use super::{Ctx, convert, convert_schedule};
use crate::error::ApiError;

pub struct Events {
    pub ctx: Ctx,
}

fn outcome(r: StoreResponse) -> Result<Outcome, ApiError> {
    r.into_result().map_err(ApiError::from)
}

fn unexpected(o: Outcome) -> ApiError {
    ApiError::Internal(format!("unexpected reply {o:?}"))
}

#[tonic::async_trait]
impl EventService for Events {
    async fn publish_event(
        &self,
        req: Request<proto::PublishEventRequest>,
    ) -> Result<Response<proto::PublishEventResponse>, Status> {
        forward_if_not_here!(self.ctx, self.ctx.route(&req)?, req, EventServiceClient::publish_event, write);
        let ev = convert_schedule::event_spec(req.into_inner())?;
        match outcome(self.ctx.proposer.propose(Command::PublishEvent(ev)).await?)? {
            Outcome::EventPublished { runs, debounced, gates_opened, duplicate } => {
                Ok(Response::new(proto::PublishEventResponse {
                    runs: runs
                        .into_iter()
                        .map(|r| proto::EventRun {
                            trigger_id: r.trigger,
                            job_id: match r.run {
                                Some(RunTarget::Job(j)) => j,
                                _ => 0,
                            },
                            workflow_id: match r.run {
                                Some(RunTarget::Workflow(w)) => w,
                                _ => 0,
                            },
                            refused: r.refused.unwrap_or_default(),
                        })
                        .collect(),
                    debounced,
                    duplicate,
                    gates_opened,
                }))
            }
            other => Err(unexpected(other).into()),
        }
    }

    async fn create_trigger(
        &self,
        req: Request<proto::CreateTriggerRequest>,
    ) -> Result<Response<proto::CreateTriggerResponse>, Status> {
        forward_if_not_here!(self.ctx, self.ctx.route(&req)?, req, EventServiceClient::create_trigger, write);
        let spec = convert_schedule::trigger_spec(req.into_inner().spec)?;
        match outcome(self.ctx.proposer.propose(Command::CreateTrigger(Box::new(spec))).await?)? {
            Outcome::TriggerCreated { trigger, duplicate } => {
                tracing::info!(trigger, duplicate, "trigger created");
                Ok(Response::new(proto::CreateTriggerResponse { trigger_id: trigger, duplicate }))
            }
            other => Err(unexpected(other).into()),
        }
    }

    async fn list_triggers(
        &self,
        req: Request<proto::ListTriggersRequest>,
    ) -> Result<Response<proto::ListTriggersResponse>, Status> {
        let r = req.get_ref();
        let stale = convert::stale(r.consistency)?;
        let limit = page_size("page_size", r.page_size, LIST_PAGE_DEFAULT, LIST_PAGE_MAX)?;
        forward_if_not_here!(
            self.ctx,
            self.ctx.read_route(&req, stale).await?,
            req,
            EventServiceClient::list_triggers,
            read
        );
        let r = req.into_inner();
        // In memory, at most MAX_TRIGGERS records: one pass under the lock.
        let (triggers, more) = self.ctx.reader.read(|core, _| {
            let mut page = Vec::with_capacity(limit);
            let mut more = false;
            for t in core.idx.triggers.range(r.page_token.saturating_add(1)..).map(|(_, t)| t) {
                if (!r.namespace.is_empty() && t.namespace != r.namespace)
                    || (!r.topic.is_empty() && t.topic != r.topic)
                {
                    continue;
                }
                if page.len() == limit {
                    more = true;
                    break;
                }
                page.push(convert_schedule::trigger(t));
            }
            (page, more)
        });
        let next_page_token = if more { triggers.last().map_or(0, |t| t.id) } else { 0 };
        Ok(Response::new(proto::ListTriggersResponse { triggers, next_page_token }))
    }

    async fn delete_trigger(
        &self,
        req: Request<proto::DeleteTriggerRequest>,
    ) -> Result<Response<proto::DeleteTriggerResponse>, Status> {
        forward_if_not_here!(self.ctx, self.ctx.route(&req)?, req, EventServiceClient::delete_trigger, write);
        let id = req.get_ref().trigger_id;
        match outcome(self.ctx.proposer.propose(Command::DeleteTrigger { trigger: id }).await?)? {
            Outcome::TriggerDeleted { trigger } => {
                tracing::info!(trigger, "trigger deleted");
                Ok(Response::new(proto::DeleteTriggerResponse {}))
            }
            other => Err(unexpected(other).into()),
        }
    }
}
