//! `Client` calls of the ScheduleService and the EventService: create,
//! update, read, list, pause, resume, delete and run schedules; publish
//! events; create, list and delete triggers. They share the job calls' retry
//! loop (leader hints, backoff, the client's deadline).
//!
//! Creating a schedule or a trigger is idempotent by (namespace, name): a
//! retry with the same spec returns the first one, so the retry loop never
//! creates two. Publishing is idempotent by event id. Running a schedule now
//! is not: see [`Client::run_schedule_now`]. Build specs with
//! [`crate::schedule::ScheduleBuilder`].

use crate::client::Channel;

use crate::client::{Client, MAX_RESPONSE_BYTES};
use crate::error::Error;
use crate::proto;
use crate::proto::event_service_client::EventServiceClient;
use crate::proto::schedule_service_client::ScheduleServiceClient;

impl Client {
    fn schedules(ch: Channel) -> ScheduleServiceClient<Channel> {
        ScheduleServiceClient::new(ch).max_decoding_message_size(MAX_RESPONSE_BYTES)
    }

    fn events(ch: Channel) -> EventServiceClient<Channel> {
        EventServiceClient::new(ch).max_decoding_message_size(MAX_RESPONSE_BYTES)
    }

    /// Create a schedule. The same (namespace, name) with the same spec
    /// returns the first schedule with `duplicate` set.
    ///
    /// Errors: [`Error::InvalidArgument`] naming the field (a bad cron
    /// pattern is `cadence.cron`, an unknown time zone `cadence.time_zone`);
    /// [`Error::AlreadyExists`] when the name holds another spec;
    /// [`Error::ResourceExhausted`] at the cluster's schedule limit.
    pub async fn create_schedule(&self, spec: proto::ScheduleSpec) -> Result<proto::CreateScheduleResponse, Error> {
        self.retry(true, |ch| {
            let req = proto::CreateScheduleRequest { spec: Some(spec.clone()) };
            async move { Self::schedules(ch).create_schedule(req).await }
        })
        .await
    }

    /// Replace a schedule's spec (same namespace and name); its next fire
    /// time is computed afresh. Repeating it gives the same state.
    pub async fn update_schedule(
        &self,
        id: u64,
        spec: proto::ScheduleSpec,
    ) -> Result<proto::UpdateScheduleResponse, Error> {
        self.retry(true, |ch| {
            let req = proto::UpdateScheduleRequest { schedule_id: id, spec: Some(spec.clone()) };
            async move { Self::schedules(ch).update_schedule(req).await }
        })
        .await
    }

    /// The schedule with its next 5 fire times, live runs and recent runs.
    pub async fn get_schedule(&self, id: u64) -> Result<proto::Schedule, Error> {
        self.get_schedule_by(proto::GetScheduleRequest { schedule_id: id, ..Default::default() }).await
    }

    /// The schedule named `name` in `namespace`.
    pub async fn get_schedule_by_name(&self, namespace: &str, name: &str) -> Result<proto::Schedule, Error> {
        self.get_schedule_by(proto::GetScheduleRequest {
            namespace: namespace.to_string(),
            name: name.to_string(),
            ..Default::default()
        })
        .await
    }

    async fn get_schedule_by(&self, req: proto::GetScheduleRequest) -> Result<proto::Schedule, Error> {
        self.retry(false, |ch| {
            let req = req.clone();
            async move { Self::schedules(ch).get_schedule(req).await }
        })
        .await
    }

    /// One page of schedules in id order; pass `next_page_token` back as
    /// `page_token` for the next.
    pub async fn list_schedules(
        &self,
        req: proto::ListSchedulesRequest,
    ) -> Result<proto::ListSchedulesResponse, Error> {
        self.retry(false, |ch| {
            let req = req.clone();
            async move { Self::schedules(ch).list_schedules(req).await }
        })
        .await
    }

    /// Stop firing; fire times passed while paused are misfires on resume.
    /// Idempotent.
    pub async fn pause_schedule(&self, id: u64) -> Result<proto::UpdateScheduleResponse, Error> {
        self.retry(true, |ch| async move {
            Self::schedules(ch).pause_schedule(proto::PauseScheduleRequest { schedule_id: id }).await
        })
        .await
    }

    /// Start firing again. Idempotent.
    pub async fn resume_schedule(&self, id: u64) -> Result<proto::UpdateScheduleResponse, Error> {
        self.retry(true, |ch| async move {
            Self::schedules(ch).resume_schedule(proto::ResumeScheduleRequest { schedule_id: id }).await
        })
        .await
    }

    /// Delete a schedule; its live runs go on as plain jobs or workflows.
    /// A retry after an unknown outcome that finds it gone reports
    /// [`Error::Indeterminate`] (see [`crate::job_ops`]).
    pub async fn delete_schedule(&self, id: u64) -> Result<(), Error> {
        self.retry(true, |ch| async move {
            Self::schedules(ch).delete_schedule(proto::DeleteScheduleRequest { schedule_id: id }).await
        })
        .await
        .map(drop)
    }

    /// Start a run now, under the schedule's overlap policy (the reply's
    /// `skipped_reason` says why none started). Not idempotent: this call
    /// is not retried after an attempt whose outcome is unknown, which is
    /// then returned as [`Error::Indeterminate`] (a run may have started;
    /// [`Client::schedule_runs`] tells).
    pub async fn run_schedule_now(&self, id: u64) -> Result<proto::RunScheduleNowResponse, Error> {
        self.retry_not_idempotent(|ch| async move {
            Self::schedules(ch).run_schedule_now(proto::RunScheduleNowRequest { schedule_id: id }).await
        })
        .await
    }

    /// The schedule's recent runs and skipped fires, newest first.
    pub async fn schedule_runs(&self, id: u64) -> Result<proto::ListScheduleRunsResponse, Error> {
        self.retry(false, |ch| async move {
            Self::schedules(ch)
                .list_schedule_runs(proto::ListScheduleRunsRequest { schedule_id: id, consistency: 0 })
                .await
        })
        .await
    }

    /// Publish an event: each trigger on its topic whose filter matches
    /// starts one run. When `req.event_id` is empty a fresh UUID is
    /// generated here, so retries of this call (and only of this call) are
    /// recognised as the same event; give your own id to make publishing
    /// idempotent across calls (the same id within 24 h starts nothing new
    /// and answers `duplicate`).
    pub async fn publish_event(
        &self,
        mut req: proto::PublishEventRequest,
    ) -> Result<proto::PublishEventResponse, Error> {
        if req.event_id.is_empty() {
            req.event_id = uuid::Uuid::new_v4().to_string();
        }
        self.retry(true, |ch| {
            let req = req.clone();
            async move { Self::events(ch).publish_event(req).await }
        })
        .await
    }

    /// Create a trigger; idempotent by (namespace, name) like a schedule.
    /// Errors: [`Error::InvalidArgument`]; [`Error::AlreadyExists`];
    /// [`Error::ResourceExhausted`] at the trigger limits.
    pub async fn create_trigger(&self, spec: proto::TriggerSpec) -> Result<proto::CreateTriggerResponse, Error> {
        self.retry(true, |ch| {
            let req = proto::CreateTriggerRequest { spec: Some(spec.clone()) };
            async move { Self::events(ch).create_trigger(req).await }
        })
        .await
    }

    /// One page of triggers in id order.
    pub async fn list_triggers(&self, req: proto::ListTriggersRequest) -> Result<proto::ListTriggersResponse, Error> {
        self.retry(false, |ch| {
            let req = req.clone();
            async move { Self::events(ch).list_triggers(req).await }
        })
        .await
    }

    pub async fn delete_trigger(&self, id: u64) -> Result<(), Error> {
        self.retry(true, |ch| async move {
            Self::events(ch).delete_trigger(proto::DeleteTriggerRequest { trigger_id: id }).await
        })
        .await
        .map(drop)
    }
}
