//! Schedules and event triggers in the simulation: a submitter that creates
//! seeded fixed-rate schedules and two triggers, publishes events (some ids
//! more than once) while the faults run, and pauses its schedules when the
//! drain starts, so the run can end.
//!
//! Schedules (namespace [`NAMESPACE`], one of each per run, periods drawn
//! from [`PERIOD_MS`]):
//! - `every`: misfire `fire_all` (the newest [`FIRE_ALL_MAX`] missed
//!   times), overlap `allow`: one run per fire time, caught up after an
//!   outage;
//! - `slow`: overlap `skip`, with runs that hold their task for longer than
//!   the period ([`HOLD_PERIODS`]): the payload `hold:<ms>` tells the sim
//!   worker how long, so fires while a run is live are skipped;
//! - `lossy`: misfire `skip`, overlap `allow`: fire times missed during an
//!   outage are dropped.
//!
//! The history records each acknowledged create (`schedule_create`, with
//! the first fire time the cluster reported as the cadence's anchor), each
//! acknowledged pause and each acknowledged publish with the runs it
//! reported; the final state carries every job's `run_of` and log times.
//! The leader core (`fire_due`) proposes the fires, as in the coordinator.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use baton_chaos::history::{
    EventPublish, EventRunRef, MisfirePolicy, OverlapPolicy, RunOf, ScheduleCadence, ScheduleCreate,
};
use baton_raft_store::schedule::{
    Cadence, EventSpec, Misfire, Overlap, RunOrigin, RunTarget, ScheduleSpec, Template, TriggerSpec,
};
use baton_raft_store::{Backoff, Command, JobSpec, NodeId, Outcome, Response, TaskKey};
use serde_bytes::ByteBuf;

use crate::net::{ClientReply, client_write};
use crate::workload::retarget;
use crate::world::{Phase, World};

/// Namespace of every schedule, trigger and event the sim creates.
pub const NAMESPACE: &str = "sched";
/// A schedule's period, ms (inclusive range): 1–2 s, as issue 14 asks.
pub const PERIOD_MS: (u64, u64) = (1_000, 2_000);
/// How many periods a run of the overlap-skip schedule holds its task.
pub const HOLD_PERIODS: u64 = 2;
/// Grace before a late fire counts as missed (the documented default).
pub const MISFIRE_GRACE_MS: u64 = 5_000;
/// Wait before the first create, ms (inclusive range), like the other
/// submitters' first gap.
pub const START_GAP_MS: (u64, u64) = (100, 2_000);
/// Gap between publishes, ms (inclusive range).
pub const PUBLISH_GAP_MS: (u64, u64) = (300, 3_000);
/// Chance that a publish repeats an event id already published, per mille.
pub const REPEAT_EVENT_PER_MILLE: u32 = 300;
/// The topic both triggers listen on.
pub const TOPIC: &str = "uploads";
/// How many missed fire times the `fire_all` schedule catches up: a few,
/// so a catch-up is exercised without flooding the workers' slots after a
/// clock jump moved log time minutes ahead (reassignment_bound counts on a
/// dead worker's tasks finding a free slot).
pub const FIRE_ALL_MAX: u32 = 3;
/// The payload prefix that makes the sim worker hold a task: `hold:<ms>`.
pub const HOLD_PREFIX: &str = "hold:";

/// The history's view of what started a job.
pub fn run_of(o: &RunOrigin) -> RunOf {
    match o {
        RunOrigin::Schedule { schedule, fire_ms, manual } => {
            RunOf::Schedule { schedule: *schedule, fire_ms: *fire_ms, manual: *manual }
        }
        RunOrigin::Event { trigger, event_id } => RunOf::Event { trigger: *trigger, event_id: event_id.clone() },
    }
}

/// How long a worker must hold an attempt of `task`, if its payload says
/// so (read from the first running node that has it).
pub fn hold_ms(w: &World, task: TaskKey) -> Option<u64> {
    w.nodes.values().find_map(|s| {
        let sm = s.run.as_ref()?.sm.lock().unwrap();
        sm.core.job(&sm.kv, task.job).ok().flatten()?;
        let payload: ByteBuf =
            baton_raft_store::kv::load(&sm.kv, &baton_raft_store::keys::payload(task)).ok().flatten()?;
        std::str::from_utf8(&payload).ok()?.strip_prefix(HOLD_PREFIX)?.parse().ok()
    })
}

fn template(payload: &str) -> JobSpec {
    let mut job = JobSpec::with_shards(NAMESPACE, 1);
    job.max_attempts = 50;
    job.backoff = Backoff { base_ms: 50, max_ms: 400 };
    job.attempt_timeout_ms = 10_000;
    job.payloads[0] = ByteBuf::from(payload.as_bytes().to_vec());
    job
}

fn schedule(name: &str, period_ms: u64, misfire: Misfire, overlap: Overlap, payload: &str) -> ScheduleSpec {
    ScheduleSpec {
        namespace: NAMESPACE.into(),
        name: name.into(),
        cadence: Cadence::FixedRate { period_ms },
        start_ms: None,
        end_ms: None,
        jitter_ms: 0,
        misfire,
        misfire_grace_ms: MISFIRE_GRACE_MS,
        overlap,
        template: Template::Job(template(payload)),
    }
}

fn misfire_policy(m: Misfire) -> MisfirePolicy {
    match m {
        Misfire::Skip => MisfirePolicy::Skip,
        Misfire::FireOnce => MisfirePolicy::FireOnce,
        Misfire::FireAll { max } => MisfirePolicy::FireAll { max },
    }
}

fn overlap_policy(o: Overlap) -> OverlapPolicy {
    match o {
        Overlap::Allow => OverlapPolicy::Allow,
        Overlap::Skip => OverlapPolicy::Skip,
        Overlap::CancelPrevious => OverlapPolicy::CancelPrevious,
        Overlap::BufferOne => OverlapPolicy::BufferOne,
    }
}

/// Send `cmd` until the answer is definite; `Some(outcome)` if it committed.
async fn until_definite(world: &Arc<Mutex<World>>, target: &mut NodeId, cmd: &Command) -> Option<Outcome> {
    loop {
        let reply = client_write(world, *target, cmd.clone()).await;
        let (retry_ms, done) = {
            let mut w = world.lock().unwrap();
            let r = match &reply {
                ClientReply::Ok(Response::Done(o)) => (None, Some(o.clone())),
                ClientReply::Ok(other) => {
                    w.trace(format_args!("{} refused {other:?}", cmd.kind()));
                    (None, None)
                }
                ClientReply::NotLeader(_) => (Some(20), None),
                ClientReply::Refused(_) => (Some(100), None),
                ClientReply::Unknown(_) => (Some(w.range(50, 400)), None),
            };
            *target = retarget(&mut w, *target, &reply);
            (r.0.filter(|_| w.phase != Phase::Stopped), r.1)
        };
        match retry_ms {
            Some(ms) => tokio::time::sleep(Duration::from_millis(ms)).await,
            None => return done,
        }
    }
}

/// One schedule submitter: three schedules, two triggers, events until the
/// drain, then it pauses its schedules.
pub async fn submitter(world: Arc<Mutex<World>>, client: usize) {
    let name = format!("s{client}");
    let (mut target, periods, gap) = {
        let mut w = world.lock().unwrap();
        let n = w.cfg.nodes as u64;
        let periods: Vec<u64> = (0..3).map(|_| w.range(PERIOD_MS.0, PERIOD_MS.1)).collect();
        (w.range(1, n), periods, w.range(START_GAP_MS.0, START_GAP_MS.1))
    };
    tokio::time::sleep(Duration::from_millis(gap)).await;
    let specs = [
        schedule(&format!("{name}-every"), periods[0], Misfire::FireAll { max: FIRE_ALL_MAX }, Overlap::Allow, "every"),
        schedule(
            &format!("{name}-slow"),
            periods[1],
            Misfire::Skip,
            Overlap::Skip,
            &format!("{HOLD_PREFIX}{}", periods[1] * HOLD_PERIODS),
        ),
        schedule(&format!("{name}-lossy"), periods[2], Misfire::Skip, Overlap::Allow, "lossy"),
    ];
    let mut created = Vec::new();
    for spec in &specs {
        let cmd = Command::CreateSchedule(Box::new(spec.clone()));
        let Some(Outcome::ScheduleCreated { schedule, next_fire_ms, .. }) =
            until_definite(&world, &mut target, &cmd).await
        else {
            continue;
        };
        let Cadence::FixedRate { period_ms } = spec.cadence else { unreachable!("fixed rates only") };
        let cadence = match next_fire_ms {
            Some(anchor_ms) => ScheduleCadence::FixedRate { period_ms, anchor_ms },
            None => ScheduleCadence::Other { detail: format!("every {period_ms} ms, no next fire time reported") },
        };
        let mut w = world.lock().unwrap();
        let t = w.now_ms();
        w.history.schedule_create(
            t,
            ScheduleCreate {
                client: name.clone(),
                schedule,
                namespace: NAMESPACE.into(),
                name: spec.name.clone(),
                cadence,
                misfire: misfire_policy(spec.misfire),
                misfire_grace_ms: spec.misfire_grace_ms,
                overlap: overlap_policy(spec.overlap),
            },
        );
        w.stats.schedules += 1;
        created.push(schedule);
    }

    // Two triggers on one topic: every event, and events of kind "a".
    for (trigger, filter) in [("all", None), ("kind-a", Some("a"))] {
        let spec = TriggerSpec {
            namespace: NAMESPACE.into(),
            name: format!("{name}-{trigger}"),
            topic: TOPIC.into(),
            filter: filter.map(|v| BTreeMap::from([("kind".to_string(), v.to_string())])).unwrap_or_default(),
            template: Template::Job(template("")),
            debounce_ms: None,
            debounce_key: String::new(),
        };
        until_definite(&world, &mut target, &Command::CreateTrigger(Box::new(spec))).await;
    }

    // Events while the faults run; some ids repeat (same payload and
    // attributes, so the repeat is a duplicate, not a conflict).
    let mut events: Vec<EventSpec> = Vec::new();
    loop {
        let (gap, event) = {
            let mut w = world.lock().unwrap();
            if w.phase != Phase::Workload {
                break;
            }
            let gap = w.range(PUBLISH_GAP_MS.0, PUBLISH_GAP_MS.1);
            let event = if !events.is_empty() && w.chance(REPEAT_EVENT_PER_MILLE) {
                events[w.range(0, events.len() as u64 - 1) as usize].clone()
            } else {
                let kind = if w.chance(500) { "a" } else { "b" };
                let id = format!("{name}-e{}", events.len());
                let e = EventSpec {
                    namespace: NAMESPACE.into(),
                    topic: TOPIC.into(),
                    event_id: id.clone(),
                    payload: ByteBuf::from(format!("event {id}").into_bytes()),
                    attributes: BTreeMap::from([("kind".to_string(), kind.to_string())]),
                };
                events.push(e.clone());
                e
            };
            (gap, event)
        };
        tokio::time::sleep(Duration::from_millis(gap)).await;
        let cmd = Command::PublishEvent(event.clone());
        if let Some(Outcome::EventPublished { runs, duplicate, .. }) = until_definite(&world, &mut target, &cmd).await {
            let mut w = world.lock().unwrap();
            let t = w.now_ms();
            w.stats.events_published += 1;
            w.stats.events_duplicate += u64::from(duplicate);
            w.history.event_publish(
                t,
                EventPublish {
                    client: name.clone(),
                    namespace: event.namespace.clone(),
                    topic: event.topic.clone(),
                    event_id: event.event_id.clone(),
                    duplicate,
                    runs: runs
                        .iter()
                        .map(|r| EventRunRef {
                            trigger: r.trigger,
                            job: match r.run {
                                Some(RunTarget::Job(j)) => Some(j),
                                _ => None,
                            },
                        })
                        .collect(),
                },
            );
        }
    }

    // The drain has begun: stop firing, so the cluster can go idle.
    for schedule in created {
        let cmd = Command::PauseSchedule { schedule, paused: true };
        if let Some(Outcome::ScheduleUpdated { .. }) = until_definite(&world, &mut target, &cmd).await {
            let mut w = world.lock().unwrap();
            let t = w.now_ms();
            w.history.schedule_pause(t, &name, schedule);
        }
    }
    world.lock().unwrap().clients_done += 1;
}

/// Fire times the schedules on `core` passed over without a run (misfires
/// and overlap skips), for the coverage asserts.
pub fn fires_skipped(core: &baton_raft_store::Core) -> u64 {
    core.idx.schedules.values().map(|s| s.fires_skipped).sum()
}
