//! Conversions between the public proto and the store's types. Field checks
//! that the store repeats at apply() are done here too, so a bad request is
//! refused before it costs a log entry.

use baton_client::proto;
use baton_raft_store::limits::*;
use baton_raft_store::workflow::{GateTimeout, ReduceSpec};
use baton_raft_store::{
    Backoff, Counts, JobId, JobOrigin, JobRecord, JobSpec, JobStatus, StepKind, StepRecord, StepRole, StepShape,
    StepSpec, StepState, TaskRecord, TaskState, TriggerRule, WorkflowRecord, WorkflowSpec, WorkflowStatus,
};
use serde_bytes::ByteBuf;

use crate::error::ApiError;

/// Proto spec → store spec, filling defaults for zero values.
pub fn job_spec(spec: Option<proto::JobSpec>) -> Result<JobSpec, ApiError> {
    let s = spec.ok_or_else(|| ApiError::invalid("spec", "is required"))?;
    let spec = job_spec_fields("", s)?;
    spec.validate()?;
    Ok(spec)
}

/// The conversion of [`job_spec`] without the store's validation (a
/// workflow validates its steps' jobs itself); field names in errors start
/// with `prefix`.
pub(super) fn job_spec_fields(prefix: &str, s: proto::JobSpec) -> Result<JobSpec, ApiError> {
    let payloads: Vec<ByteBuf> = if s.payloads.is_empty() {
        if s.shards == 0 {
            return Err(ApiError::invalid(format!("{prefix}shards"), "give payloads, or shards > 0"));
        }
        if s.shards as usize > MAX_SHARDS_PER_JOB {
            return Err(ApiError::invalid(
                format!("{prefix}shards"),
                format!("{} exceeds the limit of {MAX_SHARDS_PER_JOB}", s.shards),
            ));
        }
        vec![ByteBuf::new(); s.shards as usize]
    } else {
        if s.shards != 0 && s.shards as usize != s.payloads.len() {
            return Err(ApiError::invalid(
                format!("{prefix}shards"),
                format!("is {} but {} payloads were given; set one or make them agree", s.shards, s.payloads.len()),
            ));
        }
        s.payloads.into_iter().map(ByteBuf::from).collect()
    };
    let or = |v: u64, d: u64| if v == 0 { d } else { v };
    Ok(JobSpec {
        namespace: s.namespace,
        name: s.name,
        payloads,
        priority: s.priority,
        max_attempts: if s.max_attempts == 0 { MAX_ATTEMPTS_DEFAULT } else { s.max_attempts },
        backoff: Backoff {
            base_ms: or(s.backoff_base_ms, BACKOFF_BASE_MS_DEFAULT),
            max_ms: or(s.backoff_max_ms, BACKOFF_MAX_MS_DEFAULT.max(s.backoff_base_ms)),
        },
        attempt_timeout_ms: or(s.attempt_timeout_ms, ATTEMPT_TIMEOUT_MS_DEFAULT),
        labels: s.labels.into_iter().collect(),
        constraints: s.constraints.into_iter().collect(),
        not_before_ms: (s.not_before_ms != 0).then_some(s.not_before_ms),
        idempotency_key: (!s.idempotency_key.is_empty()).then_some(s.idempotency_key),
        retention_ms: (s.retention_ms != 0).then_some(s.retention_ms),
    })
}

/// Proto workflow spec → store spec, validated with the store's own
/// [`WorkflowSpec::validate`], so a bad spec is refused here, naming the
/// field (e.g. `invalid steps: cycle: a -> b -> a`), before it costs an entry.
pub fn workflow_spec(spec: Option<proto::WorkflowSpec>) -> Result<WorkflowSpec, ApiError> {
    let w = spec.ok_or_else(|| ApiError::invalid("spec", "is required"))?;
    // Counted before converting, so a huge spec is refused without work.
    if w.steps.len() > MAX_STEPS_PER_WORKFLOW {
        return Err(ApiError::invalid(
            "steps",
            format!("has {} steps; at most {MAX_STEPS_PER_WORKFLOW}", w.steps.len()),
        ));
    }
    let steps = w.steps.into_iter().enumerate().map(|(i, s)| step_spec(i, s)).collect::<Result<Vec<_>, _>>()?;
    let spec = WorkflowSpec {
        namespace: w.namespace,
        name: w.name,
        labels: w.labels.into_iter().collect(),
        idempotency_key: (!w.idempotency_key.is_empty()).then_some(w.idempotency_key),
        steps,
        result_step: (!w.result_step.is_empty()).then_some(w.result_step),
    };
    spec.validate()?;
    Ok(spec)
}

fn step_spec(i: usize, s: proto::StepSpec) -> Result<StepSpec, ApiError> {
    let field = |f: &str| format!("steps[{i}].{f}");
    let trigger = match proto::TriggerRule::try_from(s.trigger) {
        Ok(proto::TriggerRule::AllSucceeded) => TriggerRule::AllSucceeded,
        Ok(proto::TriggerRule::AnySucceeded) => TriggerRule::AnySucceeded,
        Ok(proto::TriggerRule::AllDone) => TriggerRule::AllDone,
        Ok(proto::TriggerRule::AnyFailed) => TriggerRule::AnyFailed,
        Ok(proto::TriggerRule::NoneFailed) => TriggerRule::NoneFailed,
        Err(_) => return Err(ApiError::invalid(field("trigger"), format!("unknown value {}", s.trigger))),
    };
    let kind = match s.kind {
        Some(proto::step_spec::Kind::Job(job)) if job.retention_ms != 0 => {
            return Err(ApiError::invalid(field("retention_ms"), "a workflow's jobs are kept as long as the workflow"));
        }
        Some(proto::step_spec::Kind::Job(job)) => StepKind::Job {
            job: job_spec_fields(&field(""), job)?,
            reduce: s.reduce.map(|r| ReduceSpec { payload: ByteBuf::from(r.payload) }),
            choice: s.choice,
            dynamic: s.dynamic,
        },
        Some(proto::step_spec::Kind::Gate(g)) => {
            for (set, f) in [(s.reduce.is_some(), "reduce"), (s.choice, "choice"), (s.dynamic, "dynamic")] {
                if set {
                    return Err(ApiError::invalid(field(f), "a gate runs no job; only job steps take it"));
                }
            }
            if g.approve_on_timeout && g.timeout_ms == 0 {
                return Err(ApiError::invalid(
                    field("gate.approve_on_timeout"),
                    "needs a timeout_ms; a gate without one waits for a decision",
                ));
            }
            if g.event_topic.is_empty() && !g.event_filter.is_empty() {
                return Err(ApiError::invalid(field("gate.event_filter"), "needs an event_topic"));
            }
            StepKind::Gate {
                timeout_ms: (g.timeout_ms != 0).then_some(g.timeout_ms),
                on_timeout: if g.approve_on_timeout { GateTimeout::Approve } else { GateTimeout::Reject },
                event: (!g.event_topic.is_empty()).then(|| baton_raft_store::workflow::GateEvent {
                    topic: g.event_topic.clone(),
                    filter: g.event_filter.clone().into_iter().collect(),
                }),
            }
        }
        None => return Err(ApiError::invalid(field("kind"), "give a job or a gate")),
    };
    Ok(StepSpec { name: s.name, depends_on: s.depends_on, trigger, kind })
}

pub fn job_status(s: JobStatus) -> proto::JobStatus {
    match s {
        JobStatus::Queued => proto::JobStatus::Queued,
        JobStatus::Running => proto::JobStatus::Running,
        JobStatus::Succeeded => proto::JobStatus::Succeeded,
        JobStatus::Failed => proto::JobStatus::Failed,
        JobStatus::Cancelled => proto::JobStatus::Cancelled,
    }
}

/// The public view of a job. `namespace_paused` comes from its namespace's
/// settings, read beside the record (see `jobs::job_view`).
pub fn job(j: &JobRecord, namespace_paused: bool) -> proto::Job {
    proto::Job {
        id: j.id,
        namespace: j.namespace.clone(),
        name: j.name.clone(),
        status: job_status(j.status()) as i32,
        shards: j.shards,
        priority: j.priority,
        counts: Some(task_counts(&j.counts)),
        labels: j.labels.clone().into_iter().collect(),
        constraints: j.constraints.clone().into_iter().collect(),
        max_attempts: j.max_attempts,
        attempt_timeout_ms: j.attempt_timeout_ms,
        created_ms: j.created_ms,
        finished_ms: j.finished_ms.unwrap_or(0),
        cancel_reason: j.cancel_reason.clone().unwrap_or_default(),
        idempotency_key: j.idempotency_key.clone().unwrap_or_default(),
        origin: j.origin.as_ref().map(job_origin),
        paused: j.paused,
        namespace_paused,
        retention_ms: j.retention_ms.unwrap_or(0),
        expires_ms: j.expires_ms.unwrap_or(0),
        run_origin: j.run_of.as_ref().map(super::convert_schedule::run_origin),
        not_before_ms: j.not_before_ms.unwrap_or(0),
    }
}

pub fn task_counts(c: &Counts) -> proto::TaskCounts {
    proto::TaskCounts {
        pending: c.pending,
        running: c.assigned,
        succeeded: c.succeeded,
        dead: c.dead,
        cancelled: c.cancelled,
    }
}

pub fn job_origin(o: &JobOrigin) -> proto::JobOrigin {
    proto::JobOrigin { workflow_id: o.workflow, step: o.step_name.clone(), role: step_role(o.role) as i32 }
}

pub fn step_role(r: StepRole) -> proto::StepRole {
    match r {
        StepRole::Generate => proto::StepRole::Generate,
        StepRole::Map => proto::StepRole::Map,
        StepRole::Reduce => proto::StepRole::Reduce,
    }
}

/// What a task of a workflow's job may read (`Assignment.workflow`).
/// `reduce_of_shards` is the shard count of `origin.reduce_of`.
pub fn workflow_context(o: &JobOrigin, reduce_of_shards: u32) -> proto::WorkflowContext {
    proto::WorkflowContext {
        workflow_id: o.workflow,
        step: o.step_name.clone(),
        role: step_role(o.role) as i32,
        inputs: o
            .inputs
            .iter()
            .map(|i| proto::StepOutput { step: i.step.clone(), job_id: i.job, shards: i.shards })
            .collect(),
        reduce_of_job_id: o.reduce_of.unwrap_or(0),
        reduce_of_shards,
    }
}

fn trigger_rule(t: TriggerRule) -> proto::TriggerRule {
    match t {
        TriggerRule::AllSucceeded => proto::TriggerRule::AllSucceeded,
        TriggerRule::AnySucceeded => proto::TriggerRule::AnySucceeded,
        TriggerRule::AllDone => proto::TriggerRule::AllDone,
        TriggerRule::AnyFailed => proto::TriggerRule::AnyFailed,
        TriggerRule::NoneFailed => proto::TriggerRule::NoneFailed,
    }
}

pub fn workflow_status(s: WorkflowStatus) -> proto::WorkflowStatus {
    match s {
        WorkflowStatus::Running => proto::WorkflowStatus::Running,
        WorkflowStatus::Succeeded => proto::WorkflowStatus::Succeeded,
        WorkflowStatus::Failed => proto::WorkflowStatus::Failed,
        WorkflowStatus::Cancelled => proto::WorkflowStatus::Cancelled,
    }
}

/// Proto workflow-status filter → store status (None: any).
pub fn workflow_status_filter(v: i32) -> Result<Option<WorkflowStatus>, ApiError> {
    let s =
        proto::WorkflowStatus::try_from(v).map_err(|_| ApiError::invalid("status", format!("unknown value {v}")))?;
    Ok(match s {
        proto::WorkflowStatus::Unspecified => None,
        proto::WorkflowStatus::Running => Some(WorkflowStatus::Running),
        proto::WorkflowStatus::Succeeded => Some(WorkflowStatus::Succeeded),
        proto::WorkflowStatus::Failed => Some(WorkflowStatus::Failed),
        proto::WorkflowStatus::Cancelled => Some(WorkflowStatus::Cancelled),
    })
}

fn step_status(s: &StepState) -> proto::StepStatus {
    match s {
        StepState::Waiting => proto::StepStatus::Waiting,
        StepState::Running => proto::StepStatus::Running,
        StepState::AwaitingApproval { .. } => proto::StepStatus::AwaitingApproval,
        StepState::Succeeded => proto::StepStatus::Succeeded,
        StepState::Failed => proto::StepStatus::Failed,
        StepState::Skipped => proto::StepStatus::Skipped,
        StepState::Cancelled => proto::StepStatus::Cancelled,
    }
}

/// The job a step runs now, or ran last.
pub fn current_job(s: &StepRecord) -> Option<JobId> {
    match s.phase? {
        StepRole::Generate => s.generate_job,
        StepRole::Map => s.map_job,
        StepRole::Reduce => s.reduce_job,
    }
}

/// A workflow's view. `job` gives the record of a step's current job, for
/// its shard counts; `None` leaves them out (ListWorkflows).
pub fn workflow(w: &WorkflowRecord, job: &dyn Fn(JobId) -> Option<(Counts, u32)>) -> proto::Workflow {
    let steps = w
        .steps
        .iter()
        .map(|s| {
            let depends_on = s.preds.iter().map(|&p| w.steps[p as usize].name.clone()).collect();
            let (kind, reduce, choice, dynamic, static_shards) = match &s.shape {
                StepShape::Job { shards, reduce, choice, dynamic } => ("job", *reduce, *choice, *dynamic, *shards),
                StepShape::Gate { .. } => ("gate", false, false, false, 0),
            };
            let current = current_job(s).and_then(job);
            proto::Step {
                name: s.name.clone(),
                status: step_status(&s.state) as i32,
                depends_on,
                trigger: trigger_rule(s.trigger) as i32,
                kind: kind.into(),
                reduce,
                choice,
                dynamic,
                phase: s.phase.map_or(proto::StepRole::Unspecified, step_role) as i32,
                generate_job_id: s.generate_job.unwrap_or(0),
                map_job_id: s.map_job.unwrap_or(0),
                reduce_job_id: s.reduce_job.unwrap_or(0),
                chosen: s.chosen.iter().flatten().map(|&c| w.steps[c as usize].name.clone()).collect(),
                reason: s.reason.clone().unwrap_or_default(),
                started_ms: s.started_ms.unwrap_or(0),
                finished_ms: s.finished_ms.unwrap_or(0),
                gate_deadline_ms: match s.state {
                    StepState::AwaitingApproval { deadline_ms } => deadline_ms.unwrap_or(0),
                    _ => 0,
                },
                counts: current.as_ref().map(|(c, _)| task_counts(c)),
                shards: current.map_or(static_shards, |(_, n)| n),
                gate_event_topic: match &s.shape {
                    StepShape::Gate { event: Some(e), .. } => e.topic.clone(),
                    _ => String::new(),
                },
            }
        })
        .collect();
    proto::Workflow {
        id: w.id,
        namespace: w.namespace.clone(),
        name: w.name.clone(),
        status: workflow_status(w.status) as i32,
        labels: w.labels.clone().into_iter().collect(),
        steps,
        result_step: w.result_step.map(|i| w.steps[i as usize].name.clone()).unwrap_or_default(),
        created_ms: w.created_ms,
        finished_ms: w.finished_ms.unwrap_or(0),
        cancel_reason: w.cancel_reason.clone().unwrap_or_default(),
        idempotency_key: w.idempotency_key.clone().unwrap_or_default(),
        run_origin: w.run_of.as_ref().map(super::convert_schedule::run_origin),
    }
}

pub fn shard_result(shard: u32, t: TaskRecord) -> proto::ShardResult {
    let (status, result) = match t.state {
        TaskState::Pending { .. } => (proto::TaskStatus::Pending, Vec::new()),
        TaskState::Assigned { .. } => (proto::TaskStatus::Running, Vec::new()),
        TaskState::Succeeded { result, .. } => (proto::TaskStatus::Succeeded, result.into_vec()),
        TaskState::Dead => (proto::TaskStatus::Dead, Vec::new()),
        TaskState::Cancelled => (proto::TaskStatus::Cancelled, Vec::new()),
    };
    proto::ShardResult {
        shard,
        status: status as i32,
        result,
        attempts: t.attempts,
        token: t.last_token,
        last_error: t.last_error.unwrap_or_default(),
        progress_bp: t.progress_bp,
    }
}

/// Proto job-status filter → store status (None: any).
pub fn status_filter(v: i32) -> Result<Option<JobStatus>, ApiError> {
    Ok(match proto::JobStatus::try_from(v).map_err(|_| ApiError::invalid("status", format!("unknown value {v}")))? {
        proto::JobStatus::Unspecified => None,
        proto::JobStatus::Queued => Some(JobStatus::Queued),
        proto::JobStatus::Running => Some(JobStatus::Running),
        proto::JobStatus::Succeeded => Some(JobStatus::Succeeded),
        proto::JobStatus::Failed => Some(JobStatus::Failed),
        proto::JobStatus::Cancelled => Some(JobStatus::Cancelled),
    })
}

/// True for a stale read; false (the default) for linearizable.
pub fn stale(v: i32) -> Result<bool, ApiError> {
    match proto::ReadConsistency::try_from(v) {
        Ok(proto::ReadConsistency::Linearizable) => Ok(false),
        Ok(proto::ReadConsistency::Stale) => Ok(true),
        Err(_) => Err(ApiError::invalid("consistency", format!("unknown value {v}"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shards_or_payloads_and_defaults() {
        let spec = job_spec(Some(proto::JobSpec { namespace: "ns".into(), shards: 3, ..Default::default() })).unwrap();
        assert_eq!(spec.payloads.len(), 3);
        assert_eq!(spec.max_attempts, MAX_ATTEMPTS_DEFAULT);
        assert_eq!(spec.attempt_timeout_ms, ATTEMPT_TIMEOUT_MS_DEFAULT);
        assert!(spec.idempotency_key.is_none());
        let err = job_spec(Some(proto::JobSpec { namespace: "ns".into(), ..Default::default() })).unwrap_err();
        assert!(err.to_string().contains("shards"), "{err}");
        let err = job_spec(Some(proto::JobSpec {
            namespace: "ns".into(),
            shards: 2,
            payloads: vec![vec![1]],
            ..Default::default()
        }))
        .unwrap_err();
        assert!(err.to_string().contains("shards"), "{err}");
        let err = job_spec(Some(proto::JobSpec { shards: 1, ..Default::default() })).unwrap_err();
        assert!(err.to_string().contains("namespace"), "{err}");
        assert!(job_spec(None).is_err());
        let keep = |retention_ms| {
            job_spec(Some(proto::JobSpec { namespace: "ns".into(), shards: 1, retention_ms, ..Default::default() }))
        };
        assert_eq!(keep(0).unwrap().retention_ms, None, "0 means the namespace's retention");
        assert_eq!(keep(5000).unwrap().retention_ms, Some(5000));
        let err = keep(MAX_RETENTION_MS + 1).unwrap_err();
        assert!(err.to_string().contains("retention_ms"), "{err}");
        assert!(stale(7).is_err());
        assert!(status_filter(42).is_err());
    }
}
