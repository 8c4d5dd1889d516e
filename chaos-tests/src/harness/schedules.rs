//! The real-process tier's schedules and events, through the SDK: five
//! fixed-rate schedules firing every second (fire-all with overlap allowed,
//! misfire skip, overlap skip, fire-once with cancel-previous, and
//! buffer-one), one trigger, and events published while
//! the faults run, some under an id already published. Each acknowledged
//! create, pause and publish goes into the history (`schedule_create` with
//! the first fire time the cluster reported as the cadence's anchor,
//! `schedule_pause`, `event_publish` with the runs the reply named); the
//! checker judges the runs in the final state against them
//! (`schedule_fire_once`, `overlap_skip_exclusive`, `event_runs_once`).
//! When the run stops, the schedules are paused, so the drain can end.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use baton_client::{Client, ScheduleBuilder, proto};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use super::final_read::NAMESPACE;
use super::record::Recorder;
use crate::history::{
    EventPublish, EventRunRef, MisfirePolicy, OverlapPolicy, ScheduleCadence, ScheduleCreate, SchedulePause,
};

/// Every schedule's period: short, so that fault rounds fall across many fire times.
const PERIOD: Duration = Duration::from_secs(1);
/// The on-time grace of every schedule (the cluster's default, set explicitly
/// so the history records what the cluster uses).
const GRACE: Duration = Duration::from_secs(5);
/// How many missed fire times a fire-all schedule catches up: small, so a
/// stepped clock does not flood the workers.
const FIRE_ALL_MAX: u32 = 3;
/// Attempts at a create, pause or publish whose outcome stays unknown; each
/// is idempotent (by name, by id), so retrying is safe.
const RETRIES: usize = 20;
/// Chance that a publish reuses an earlier event id, per mille.
const REPEAT_EVENT_PER_MILLE: u32 = 300;
/// The topic the workload's trigger listens on.
const TOPIC: &str = "chaos-events";

/// Retry `f` while its outcome is unknown or the cluster is unavailable;
/// `None` when it never got a definite answer or was refused.
async fn definite<T, F, Fut>(what: &str, mut f: F) -> Option<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, baton_client::Error>>,
{
    for _ in 0..RETRIES {
        match f().await {
            Ok(v) => return Some(v),
            Err(e) if e.is_retryable() || e.is_indeterminate() => {
                tracing::debug!(what, error = %e, "retrying");
                tokio::time::sleep(Duration::from_millis(300)).await;
            }
            Err(e) => {
                tracing::warn!(what, error = %e, "refused");
                return None;
            }
        }
    }
    None
}

pub(super) async fn schedule_submitter(
    client: Client,
    rec: Arc<Recorder>,
    name: String,
    seed: u64,
    stop: Arc<AtomicBool>,
) {
    let mut rng = StdRng::seed_from_u64(seed);
    let job = proto::JobSpec { shards: 1, attempt_timeout_ms: 30_000, ..Default::default() };
    // Every misfire and overlap policy runs under the faults; the checker
    // judges fire times for all of them, one run per fire time for
    // `all`, and never two live runs for `excl`.
    let kinds = [
        ("all", MisfirePolicy::FireAll { max: FIRE_ALL_MAX }, OverlapPolicy::Allow),
        ("late", MisfirePolicy::Skip, OverlapPolicy::Allow),
        ("excl", MisfirePolicy::FireAll { max: FIRE_ALL_MAX }, OverlapPolicy::Skip),
        ("once", MisfirePolicy::FireOnce, OverlapPolicy::CancelPrevious),
        ("buffer", MisfirePolicy::Skip, OverlapPolicy::BufferOne),
    ];
    let mut created = Vec::new();
    for (tag, misfire, overlap) in kinds {
        let sname = format!("{name}-{tag}");
        let mut b = ScheduleBuilder::every(NAMESPACE, &sname, PERIOD).job(job.clone()).misfire_grace(GRACE);
        b = match misfire {
            MisfirePolicy::FireAll { max } => b.misfire_fire_all(max),
            MisfirePolicy::FireOnce => b.misfire_fire_once(),
            MisfirePolicy::Skip => b.misfire_skip(),
        };
        b = b.overlap(match overlap {
            OverlapPolicy::Skip => proto::OverlapPolicy::Skip,
            OverlapPolicy::Allow => proto::OverlapPolicy::Allow,
            OverlapPolicy::CancelPrevious => proto::OverlapPolicy::CancelPrevious,
            OverlapPolicy::BufferOne => proto::OverlapPolicy::BufferOne,
        });
        let spec = b.build();
        let Some(r) = definite("create schedule", || client.create_schedule(spec.clone())).await else { continue };
        rec.record(ScheduleCreate {
            client: name.clone(),
            schedule: r.schedule_id,
            namespace: NAMESPACE.into(),
            name: sname,
            cadence: ScheduleCadence::FixedRate { period_ms: PERIOD.as_millis() as u64, anchor_ms: r.next_fire_ms },
            misfire,
            misfire_grace_ms: GRACE.as_millis() as u64,
            overlap,
        });
        created.push(r.schedule_id);
    }
    let trigger = proto::TriggerSpec {
        namespace: NAMESPACE.into(),
        name: format!("{name}-trigger"),
        topic: TOPIC.into(),
        template: Some(proto::trigger_spec::Template::Job(job.clone())),
        ..Default::default()
    };
    let _ = definite("create trigger", || client.create_trigger(trigger.clone())).await;

    let mut published: Vec<String> = Vec::new();
    while !stop.load(Ordering::Relaxed) {
        tokio::time::sleep(Duration::from_millis(rng.random_range(300..800))).await;
        let repeat = !published.is_empty() && rng.random_range(0..1000) < REPEAT_EVENT_PER_MILLE;
        let id = if repeat {
            published[rng.random_range(0..published.len())].clone()
        } else {
            format!("{name}-e{}", published.len() + 1)
        };
        // The same id always carries the same payload, so a repeat is a duplicate, not a conflict.
        let req = proto::PublishEventRequest {
            namespace: NAMESPACE.into(),
            topic: TOPIC.into(),
            event_id: id.clone(),
            payload: id.clone().into_bytes(),
            ..Default::default()
        };
        let Some(r) = definite("publish", || client.publish_event(req.clone())).await else { continue };
        if !repeat {
            published.push(id.clone());
        }
        rec.record(EventPublish {
            client: name.clone(),
            namespace: NAMESPACE.into(),
            topic: TOPIC.into(),
            event_id: id,
            duplicate: r.duplicate,
            runs: r
                .runs
                .iter()
                .map(|run| EventRunRef { trigger: run.trigger_id, job: (run.job_id != 0).then_some(run.job_id) })
                .collect(),
        });
    }
    for id in created {
        if definite("pause schedule", || client.pause_schedule(id)).await.is_some() {
            rec.record(SchedulePause { client: name.clone(), schedule: id });
        }
    }
}
