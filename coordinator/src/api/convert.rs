//! Conversions between the public proto and the store's types. Field checks
//! that the store repeats at apply() are done here too, so a bad request is
//! refused before it costs a log entry.

use baton_client::proto;
use baton_raft_store::limits::*;
use baton_raft_store::{Backoff, JobRecord, JobSpec, JobStatus, TaskRecord, TaskState};
use serde_bytes::ByteBuf;

use crate::error::ApiError;

/// Proto spec → store spec, filling defaults for zero values.
pub fn job_spec(spec: Option<proto::JobSpec>) -> Result<JobSpec, ApiError> {
    let s = spec.ok_or_else(|| ApiError::invalid("spec", "is required"))?;
    let payloads: Vec<ByteBuf> = if s.payloads.is_empty() {
        if s.shards == 0 {
            return Err(ApiError::invalid("shards", "give payloads, or shards > 0"));
        }
        if s.shards as usize > MAX_SHARDS_PER_JOB {
            return Err(ApiError::invalid("shards", format!("{} exceeds the limit of {MAX_SHARDS_PER_JOB}", s.shards)));
        }
        vec![ByteBuf::new(); s.shards as usize]
    } else {
        if s.shards != 0 && s.shards as usize != s.payloads.len() {
            return Err(ApiError::invalid(
                "shards",
                format!("is {} but {} payloads were given; set one or make them agree", s.shards, s.payloads.len()),
            ));
        }
        s.payloads.into_iter().map(ByteBuf::from).collect()
    };
    let or = |v: u64, d: u64| if v == 0 { d } else { v };
    let spec = JobSpec {
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
    };
    spec.validate()?;
    Ok(spec)
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

pub fn job(j: &JobRecord) -> proto::Job {
    proto::Job {
        id: j.id,
        namespace: j.namespace.clone(),
        name: j.name.clone(),
        status: job_status(j.status()) as i32,
        shards: j.shards,
        priority: j.priority,
        counts: Some(proto::TaskCounts {
            pending: j.counts.pending,
            running: j.counts.assigned,
            succeeded: j.counts.succeeded,
            dead: j.counts.dead,
            cancelled: j.counts.cancelled,
        }),
        labels: j.labels.clone().into_iter().collect(),
        constraints: j.constraints.clone().into_iter().collect(),
        max_attempts: j.max_attempts,
        attempt_timeout_ms: j.attempt_timeout_ms,
        created_ms: j.created_ms,
        finished_ms: j.finished_ms.unwrap_or(0),
        cancel_reason: j.cancel_reason.clone().unwrap_or_default(),
        idempotency_key: j.idempotency_key.clone().unwrap_or_default(),
        origin: None,
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
        assert!(stale(7).is_err());
        assert!(status_filter(42).is_err());
    }
}
