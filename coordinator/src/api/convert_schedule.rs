//! Conversions between the public proto and the store's schedule, trigger
//! and event types. Specs are validated here with the store's own
//! `validate()`, so a bad cron pattern, an unknown time zone or a bad
//! template is refused with INVALID_ARGUMENT naming the field before it costs
//! a log entry.

use baton_client::proto;
use baton_client::proto::cadence::Kind;
use baton_raft_store::limits::{MAX_FIRE_ALL_CATCH_UP, MISFIRE_GRACE_MS_DEFAULT};
use baton_raft_store::{
    Cadence, EventSpec, Misfire, Overlap, RunEntry, RunOrigin, RunOutcome, RunTarget, ScheduleRecord, ScheduleSpec,
    Template, TemplateKind, TriggerRecord, TriggerSpec,
};
use serde_bytes::ByteBuf;

use super::convert;
use crate::error::ApiError;

/// How many fire times a schedule's view lists ahead of now.
pub const UPCOMING_FIRES: usize = 5;

/// Proto schedule spec → store spec, validated with [`ScheduleSpec::validate`].
/// A template that names no namespace takes the schedule's.
pub fn schedule_spec(spec: Option<proto::ScheduleSpec>) -> Result<ScheduleSpec, ApiError> {
    let s = spec.ok_or_else(|| ApiError::invalid("spec", "is required"))?;
    let cadence = cadence(s.cadence)?;
    let misfire = misfire(s.misfire, s.misfire_max)?;
    let overlap = match proto::OverlapPolicy::try_from(s.overlap) {
        Ok(proto::OverlapPolicy::Skip) => Overlap::Skip,
        Ok(proto::OverlapPolicy::Allow) => Overlap::Allow,
        Ok(proto::OverlapPolicy::CancelPrevious) => Overlap::CancelPrevious,
        Ok(proto::OverlapPolicy::BufferOne) => Overlap::BufferOne,
        Err(_) => return Err(ApiError::invalid("overlap", format!("unknown value {}", s.overlap))),
    };
    let template = match s.template {
        Some(proto::schedule_spec::Template::Job(mut j)) => {
            if j.namespace.is_empty() {
                j.namespace = s.namespace.clone();
            }
            Template::Job(convert::job_spec_fields("template.", j)?)
        }
        Some(proto::schedule_spec::Template::Workflow(mut w)) => {
            if w.namespace.is_empty() {
                w.namespace = s.namespace.clone();
            }
            Template::Workflow(convert::workflow_spec(Some(w))?)
        }
        None => return Err(ApiError::invalid("template", "give a job or a workflow")),
    };
    let spec = ScheduleSpec {
        namespace: s.namespace,
        name: s.name,
        cadence,
        start_ms: nonzero(s.start_ms),
        end_ms: nonzero(s.end_ms),
        jitter_ms: s.jitter_ms,
        misfire,
        misfire_grace_ms: s.misfire_grace_ms.unwrap_or(MISFIRE_GRACE_MS_DEFAULT),
        overlap,
        template,
    };
    spec.validate()?;
    Ok(spec)
}

fn nonzero(v: u64) -> Option<u64> {
    (v != 0).then_some(v)
}

fn cadence(c: Option<proto::Cadence>) -> Result<Cadence, ApiError> {
    Ok(match c.and_then(|c| c.kind) {
        Some(Kind::Cron(c)) => Cadence::Cron { pattern: c.pattern, time_zone: c.time_zone },
        Some(Kind::EveryMs(period_ms)) => Cadence::FixedRate { period_ms },
        Some(Kind::DelayMs(delay_ms)) => Cadence::FixedDelay { delay_ms },
        Some(Kind::AtMs(0)) => {
            return Err(ApiError::invalid("cadence.at_ms", "must be a time (ms since the Unix epoch)"));
        }
        Some(Kind::AtMs(at_ms)) => Cadence::Once { at_ms },
        None => return Err(ApiError::invalid("cadence", "give cron, every_ms, delay_ms or at_ms")),
    })
}

fn misfire(policy: i32, max: u32) -> Result<Misfire, ApiError> {
    let p = proto::MisfirePolicy::try_from(policy)
        .map_err(|_| ApiError::invalid("misfire", format!("unknown value {policy}")))?;
    if max != 0 && p != proto::MisfirePolicy::FireAll {
        return Err(ApiError::invalid("misfire_max", "only a FIRE_ALL policy takes a bound"));
    }
    Ok(match p {
        proto::MisfirePolicy::Skip => Misfire::Skip,
        proto::MisfirePolicy::FireOnce => Misfire::FireOnce,
        proto::MisfirePolicy::FireAll => Misfire::FireAll { max: if max == 0 { MAX_FIRE_ALL_CATCH_UP } else { max } },
    })
}

/// Proto trigger spec → store spec, validated with [`TriggerSpec::validate`].
pub fn trigger_spec(spec: Option<proto::TriggerSpec>) -> Result<TriggerSpec, ApiError> {
    let s = spec.ok_or_else(|| ApiError::invalid("spec", "is required"))?;
    use proto::trigger_spec::Template as T;
    let template = match s.template {
        Some(T::Job(mut job)) => {
            if job.namespace.is_empty() {
                job.namespace = s.namespace.clone();
            }
            Template::Job(convert::job_spec_fields("job.", job)?)
        }
        Some(T::Workflow(mut w)) => {
            if w.namespace.is_empty() {
                w.namespace = s.namespace.clone();
            }
            Template::Workflow(convert::workflow_spec(Some(w))?)
        }
        None => return Err(ApiError::invalid("job", "is required (or workflow): what each event starts")),
    };
    let spec = TriggerSpec {
        namespace: s.namespace,
        name: s.name,
        topic: s.topic,
        filter: s.filter.into_iter().collect(),
        template,
        debounce_ms: nonzero(s.debounce_ms),
        debounce_key: s.debounce_key,
    };
    spec.validate()?;
    Ok(spec)
}

/// A publish request → store event, validated with [`EventSpec::validate`].
pub fn event_spec(r: proto::PublishEventRequest) -> Result<EventSpec, ApiError> {
    if r.event_id.is_empty() {
        return Err(ApiError::invalid("event_id", "is required (the Rust SDK generates one)"));
    }
    let ev = EventSpec {
        namespace: r.namespace,
        topic: r.topic,
        event_id: r.event_id,
        payload: ByteBuf::from(r.payload),
        attributes: r.attributes.into_iter().collect(),
    };
    ev.validate()?;
    Ok(ev)
}

pub fn run_origin(o: &RunOrigin) -> proto::RunOrigin {
    use proto::run_origin::Source;
    let source = match o {
        RunOrigin::Schedule { schedule, fire_ms, manual } => {
            Source::Schedule(proto::ScheduleFire { schedule_id: *schedule, fire_ms: *fire_ms, manual: *manual })
        }
        RunOrigin::Event { trigger, event_id } => {
            Source::Event(proto::EventOrigin { trigger_id: *trigger, event_id: event_id.clone() })
        }
    };
    proto::RunOrigin { source: Some(source) }
}

fn target_ids(t: Option<RunTarget>) -> (u64, u64) {
    match t {
        Some(RunTarget::Job(j)) => (j, 0),
        Some(RunTarget::Workflow(w)) => (0, w),
        None => (0, 0),
    }
}

pub fn run_outcome(o: &RunOutcome) -> (proto::RunOutcome, String) {
    match o {
        RunOutcome::Live => (proto::RunOutcome::Live, String::new()),
        RunOutcome::Buffered => (proto::RunOutcome::Buffered, String::new()),
        RunOutcome::Succeeded => (proto::RunOutcome::Succeeded, String::new()),
        RunOutcome::Failed => (proto::RunOutcome::Failed, String::new()),
        RunOutcome::Cancelled => (proto::RunOutcome::Cancelled, String::new()),
        RunOutcome::Skipped(why) => (proto::RunOutcome::Skipped, why.clone()),
    }
}

pub fn schedule_run(e: &RunEntry) -> proto::ScheduleRun {
    let (job_id, workflow_id) = target_ids(e.target);
    let (outcome, reason) = run_outcome(&e.outcome);
    proto::ScheduleRun {
        fire_ms: e.fire_ms,
        manual: e.manual,
        job_id,
        workflow_id,
        outcome: outcome as i32,
        reason,
        at_ms: e.at_ms,
    }
}

/// The recent runs of a record, newest first, at most `max`.
pub fn recent_runs(rec: &ScheduleRecord, max: usize) -> Vec<proto::ScheduleRun> {
    rec.recent.iter().rev().take(max).map(schedule_run).collect()
}

fn cadence_proto(c: &Cadence) -> proto::Cadence {
    let kind = match c {
        Cadence::Cron { pattern, time_zone } => {
            Kind::Cron(proto::CronCadence { pattern: pattern.clone(), time_zone: time_zone.clone() })
        }
        Cadence::FixedRate { period_ms } => Kind::EveryMs(*period_ms),
        Cadence::FixedDelay { delay_ms } => Kind::DelayMs(*delay_ms),
        Cadence::Once { at_ms } => Kind::AtMs(*at_ms),
    };
    proto::Cadence { kind: Some(kind) }
}

/// A schedule's public view, with its next [`UPCOMING_FIRES`] fire times
/// (computed from the rule, a pure function) and at most `recent_max` of its
/// recent runs.
pub fn schedule(rec: &ScheduleRecord, recent_max: usize) -> proto::Schedule {
    let r = &rec.rule;
    let (misfire, misfire_max) = match r.misfire {
        Misfire::Skip => (proto::MisfirePolicy::Skip, 0),
        Misfire::FireOnce => (proto::MisfirePolicy::FireOnce, 0),
        Misfire::FireAll { max } => (proto::MisfirePolicy::FireAll, max),
    };
    let overlap = match r.overlap {
        Overlap::Skip => proto::OverlapPolicy::Skip,
        Overlap::Allow => proto::OverlapPolicy::Allow,
        Overlap::CancelPrevious => proto::OverlapPolicy::CancelPrevious,
        Overlap::BufferOne => proto::OverlapPolicy::BufferOne,
    };
    let (template_kind, template_shards, template_steps) = match r.template {
        TemplateKind::Job { shards } => ("job", shards, 0),
        TemplateKind::Workflow { steps } => ("workflow", 0, steps),
    };
    let live_runs = rec
        .live
        .iter()
        .map(|t| match rec.recent.iter().rev().find(|e| e.target == Some(*t)) {
            Some(e) => schedule_run(e),
            None => {
                let (job_id, workflow_id) = target_ids(Some(*t));
                proto::ScheduleRun {
                    job_id,
                    workflow_id,
                    outcome: proto::RunOutcome::Live as i32,
                    ..Default::default()
                }
            }
        })
        .collect();
    proto::Schedule {
        id: rec.id,
        namespace: r.namespace.clone(),
        name: r.name.clone(),
        cadence: Some(cadence_proto(&r.cadence)),
        start_ms: r.start_ms.unwrap_or(0),
        end_ms: r.end_ms.unwrap_or(0),
        jitter_ms: r.jitter_ms,
        misfire: misfire as i32,
        misfire_max,
        misfire_grace_ms: r.misfire_grace_ms,
        overlap: overlap as i32,
        template_kind: template_kind.into(),
        template_shards,
        template_steps,
        paused: rec.paused,
        next_fire_ms: rec.next_fire_ms.unwrap_or(0),
        upcoming_fire_ms: r.upcoming(rec.anchor_ms, rec.next_fire_ms, UPCOMING_FIRES),
        live_runs,
        buffered_fire_ms: rec.buffered.unwrap_or(0),
        recent_runs: recent_runs(rec, recent_max),
        runs_started: rec.runs_started,
        fires_skipped: rec.fires_skipped,
        created_ms: rec.created_ms,
        updated_ms: rec.updated_ms,
    }
}

pub fn trigger(t: &TriggerRecord) -> proto::Trigger {
    proto::Trigger {
        id: t.id,
        namespace: t.namespace.clone(),
        name: t.name.clone(),
        topic: t.topic.clone(),
        filter: t.filter.clone().into_iter().collect(),
        debounce_ms: t.debounce_ms.unwrap_or(0),
        debounce_key: t.debounce_key.clone(),
        created_ms: t.created_ms,
        runs_started: t.runs_started,
        events_debounced: t.events_debounced,
    }
}

#[cfg(test)]
#[path = "convert_schedule_tests.rs"]
mod tests;
