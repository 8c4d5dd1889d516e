//! The API error boundary: one enum for everything a client call can fail
//! with, and the one function that turns it into a `tonic::Status`.
//!
//! Every status carries the cause in `baton-error-code` (the SDK's
//! [`codes`]), so clients never read messages to decide what to do. The
//! metadata keys are the SDK's: one definition for both ends of the wire.

use baton_client::error::{
    ERROR_CODE_HEADER, LEADER_ADDR_HEADER, LEADER_ID_HEADER, QUOTA_HEADER, RETRY_AFTER_HEADER, codes,
};
use baton_raft_store::{CommandError, NodeId, NodeInfo};
use openraft::error::{CheckIsLeaderError, ClientWriteError, ForwardToLeader, RaftError};
use tonic::metadata::MetadataValue;

/// A leader's id and API address, as the hint headers carry them.
pub type LeaderHint = Option<(NodeId, String)>;

/// Name the leader in response or error metadata (the `.proto` documents
/// both headers), so a client can go straight there next time.
pub fn insert_leader_hint(md: &mut tonic::metadata::MetadataMap, leader: LeaderHint) {
    if let Some((id, addr)) = leader {
        md.insert(LEADER_ID_HEADER, MetadataValue::from(id));
        if let Ok(v) = addr.parse() {
            md.insert(LEADER_ADDR_HEADER, v);
        }
    }
}

fn hint_text(leader: &LeaderHint) -> String {
    match leader {
        Some((id, addr)) => format!("; leader is node {id} at {addr}"),
        None => "; no leader is known yet".into(),
    }
}

#[derive(Debug, Clone, thiserror::Error)]
pub enum ApiError {
    #[error("invalid {field}: {reason}")]
    Invalid { field: String, reason: String },
    #[error("{0}")]
    NotFound(String),
    /// A stale fencing token. Nothing changed.
    #[error("{0}")]
    Fenced(String),
    /// The job has already finished. Nothing changed.
    #[error("{0}")]
    JobFinished(String),
    /// The worker session expired, was replaced, or is at another epoch.
    #[error("{0}")]
    SessionEnded(String),
    /// DeleteJob on a job with pending or running shards. Nothing changed.
    #[error("{0}")]
    JobNotFinished(String),
    /// RetryJob on a job without dead or cancelled shards. Nothing changed.
    #[error("{0}")]
    NothingToRetry(String),
    /// DeleteJob or RetryJob on a workflow's job. Nothing changed.
    #[error("{0}")]
    JobInWorkflow(String),
    /// The job or its namespace is paused. Nothing changed.
    #[error("{0}")]
    Paused(String),
    /// Refused in the current state for another reason. Nothing changed.
    #[error("{0}")]
    Precondition(String),
    /// A schedule or trigger of that name exists with another spec. Nothing changed.
    #[error("{0}")]
    AlreadyExists(String),
    /// This node cannot serve the call; the leader, if known, can. Nothing
    /// was proposed.
    #[error("not the leader{}", hint_text(.leader))]
    NotLeader { leader: LeaderHint },
    /// This node has not yet applied what the leader committed; retry.
    #[error("lagging: {0}")]
    Lagging(String),
    #[error("unavailable: {0}")]
    Unavailable(String),
    /// A configured limit was reached.
    #[error("limit reached: {0}")]
    Exhausted(String),
    /// A namespace quota (`quota`, one of `baton_raft_store::quota::names`)
    /// refused the call; nothing changed. Retry after `retry_after_ms`.
    #[error("quota exceeded: {message}")]
    QuotaExceeded { quota: String, retry_after_ms: u64, message: String },
    /// A queue is full; nothing was done. Retry later.
    #[error("overloaded: {0}")]
    Overloaded(String),
    /// A worker session stream was replaced by a newer stream.
    #[error("aborted: {0}")]
    Aborted(String),
    /// The client did not send what the protocol expects in time (e.g. no
    /// register message on a new session stream). Nothing changed; retry.
    #[error("deadline exceeded: {0}")]
    Deadline(String),
    /// A write that may or may not have been applied, e.g. forwarded to a
    /// leader that went away before answering.
    #[error("outcome unknown: {reason}{}", hint_text(.leader))]
    Indeterminate { reason: String, leader: LeaderHint },
    #[error("internal error: {0}")]
    Internal(String),
    /// No credential, or a bad or expired one. Nothing was done.
    #[error("unauthenticated: {0}")]
    Unauthenticated(String),
    /// The caller lacks a role; the message names the role and namespace.
    /// Nothing was done.
    #[error("permission denied: {0}")]
    PermissionDenied(String),
    /// A plaintext connection reached a TLS port. Nothing was done.
    #[error("this port requires TLS: connect with https:// and the cluster CA (--ca)")]
    TlsRequired,
}

impl ApiError {
    pub fn invalid(field: impl Into<String>, reason: impl Into<String>) -> Self {
        ApiError::Invalid { field: field.into(), reason: reason.into() }
    }

    /// The `baton-error-code` of this error.
    pub fn code(&self) -> &'static str {
        match self {
            ApiError::Invalid { .. } => codes::INVALID,
            ApiError::NotFound(_) => codes::NOT_FOUND,
            ApiError::Fenced(_) => codes::FENCED,
            ApiError::JobFinished(_) => codes::JOB_FINISHED,
            ApiError::SessionEnded(_) => codes::SESSION_ENDED,
            ApiError::JobNotFinished(_) => codes::JOB_NOT_FINISHED,
            ApiError::NothingToRetry(_) => codes::NOTHING_TO_RETRY,
            ApiError::JobInWorkflow(_) => codes::JOB_IN_WORKFLOW,
            ApiError::Paused(_) => codes::PAUSED,
            ApiError::Precondition(_) => codes::PRECONDITION,
            ApiError::AlreadyExists(_) => codes::ALREADY_EXISTS,
            ApiError::NotLeader { .. } => codes::NOT_LEADER,
            ApiError::Lagging(_) => codes::LAGGING,
            // Nothing was done and the client should come back: the same
            // advice as a node that cannot serve yet.
            ApiError::Unavailable(_) | ApiError::Deadline(_) => codes::UNAVAILABLE,
            ApiError::Exhausted(_) => codes::LIMIT_REACHED,
            ApiError::QuotaExceeded { .. } => codes::QUOTA_EXCEEDED,
            ApiError::Overloaded(_) => codes::OVERLOADED,
            ApiError::Aborted(_) => codes::ABORTED,
            ApiError::Indeterminate { .. } => codes::INDETERMINATE,
            ApiError::Internal(_) => codes::INTERNAL,
            ApiError::Unauthenticated(_) => codes::UNAUTHENTICATED,
            ApiError::PermissionDenied(_) => codes::PERMISSION_DENIED,
            ApiError::TlsRequired => codes::TLS_REQUIRED,
        }
    }

    fn grpc_code(&self) -> tonic::Code {
        use tonic::Code;
        match self {
            ApiError::Invalid { .. } => Code::InvalidArgument,
            ApiError::NotFound(_) => Code::NotFound,
            ApiError::AlreadyExists(_) => Code::AlreadyExists,
            ApiError::Fenced(_)
            | ApiError::JobFinished(_)
            | ApiError::SessionEnded(_)
            | ApiError::JobNotFinished(_)
            | ApiError::NothingToRetry(_)
            | ApiError::JobInWorkflow(_)
            | ApiError::Paused(_)
            | ApiError::Precondition(_)
            | ApiError::TlsRequired => Code::FailedPrecondition,
            ApiError::NotLeader { .. }
            | ApiError::Lagging(_)
            | ApiError::Unavailable(_)
            | ApiError::Indeterminate { .. } => Code::Unavailable,
            ApiError::Exhausted(_) | ApiError::QuotaExceeded { .. } | ApiError::Overloaded(_) => {
                Code::ResourceExhausted
            }
            ApiError::Aborted(_) => Code::Aborted,
            ApiError::Deadline(_) => Code::DeadlineExceeded,
            ApiError::Internal(_) => Code::Internal,
            ApiError::Unauthenticated(_) => Code::Unauthenticated,
            ApiError::PermissionDenied(_) => Code::PermissionDenied,
        }
    }
}

impl From<CommandError> for ApiError {
    fn from(e: CommandError) -> Self {
        let msg = e.to_string();
        match e {
            CommandError::Invalid { field, reason } => ApiError::Invalid { field, reason },
            CommandError::JobNotFound(_)
            | CommandError::TaskNotFound(_)
            | CommandError::SessionNotFound(_)
            | CommandError::WorkflowNotFound(_)
            | CommandError::ScheduleNotFound(_)
            | CommandError::TriggerNotFound(_)
            | CommandError::StepNotFound { .. } => ApiError::NotFound(msg),
            CommandError::NameTaken { .. } => ApiError::AlreadyExists(msg),
            CommandError::SessionEnded { .. } | CommandError::StaleEpoch { .. } => ApiError::SessionEnded(msg),
            CommandError::Fenced { .. } => ApiError::Fenced(msg),
            CommandError::JobFinished { .. } => ApiError::JobFinished(msg),
            CommandError::JobNotFinished { .. } => ApiError::JobNotFinished(msg),
            CommandError::NothingToRetry { .. } => ApiError::NothingToRetry(msg),
            CommandError::JobInWorkflow { .. } => ApiError::JobInWorkflow(msg),
            CommandError::JobPaused { .. } => ApiError::Paused(msg),
            CommandError::LimitReached { .. } => ApiError::Exhausted(msg),
            CommandError::QuotaExceeded { quota, .. } => ApiError::QuotaExceeded {
                quota,
                retry_after_ms: baton_raft_store::quota::QUOTA_RETRY_AFTER_MS,
                message: msg,
            },
            CommandError::NotPending { .. }
            | CommandError::NotReady { .. }
            | CommandError::AtCapacity { .. }
            | CommandError::ConstraintMismatch { .. }
            | CommandError::AlreadyGrantedInEntry { .. }
            | CommandError::NotExpired { .. }
            | CommandError::IdempotencyConflict { .. }
            | CommandError::WorkflowFinished { .. }
            | CommandError::GateNotWaiting { .. }
            | CommandError::FireNotDue { .. } => ApiError::Precondition(msg),
        }
    }
}

impl From<baton_raft_store::StoreError> for ApiError {
    fn from(e: baton_raft_store::StoreError) -> Self {
        ApiError::Internal(e.to_string())
    }
}

fn not_leader(f: ForwardToLeader<NodeId, NodeInfo>) -> ApiError {
    ApiError::NotLeader { leader: f.leader_id.zip(f.leader_node.map(|n| n.api_addr)) }
}

/// A refused or failed `client_write` / membership change. openraft answers
/// `ForwardToLeader` only for entries it did not commit, so that is NOT_LEADER.
impl From<RaftError<NodeId, ClientWriteError<NodeId, NodeInfo>>> for ApiError {
    fn from(e: RaftError<NodeId, ClientWriteError<NodeId, NodeInfo>>) -> Self {
        match e {
            RaftError::APIError(ClientWriteError::ForwardToLeader(f)) => not_leader(f),
            RaftError::APIError(ClientWriteError::ChangeMembershipError(e)) => ApiError::Precondition(e.to_string()),
            RaftError::Fatal(f) => ApiError::Unavailable(format!("raft: {f}")),
        }
    }
}

/// A failed read barrier.
impl From<RaftError<NodeId, CheckIsLeaderError<NodeId, NodeInfo>>> for ApiError {
    fn from(e: RaftError<NodeId, CheckIsLeaderError<NodeId, NodeInfo>>) -> Self {
        match e {
            RaftError::APIError(CheckIsLeaderError::ForwardToLeader(f)) => not_leader(f),
            RaftError::APIError(CheckIsLeaderError::QuorumNotEnough(q)) => ApiError::Unavailable(q.to_string()),
            RaftError::Fatal(f) => ApiError::Unavailable(format!("raft: {f}")),
        }
    }
}

/// The one mapping from errors to gRPC statuses: code, message,
/// `baton-error-code`, and the leader hint where there is one.
pub fn to_status(e: ApiError) -> tonic::Status {
    let mut s = tonic::Status::new(e.grpc_code(), e.to_string());
    s.metadata_mut().insert(ERROR_CODE_HEADER, MetadataValue::from_static(e.code()));
    match e {
        ApiError::NotLeader { leader } | ApiError::Indeterminate { leader, .. } => {
            insert_leader_hint(s.metadata_mut(), leader)
        }
        ApiError::QuotaExceeded { quota, retry_after_ms, .. } => {
            if let Ok(v) = quota.parse() {
                s.metadata_mut().insert(QUOTA_HEADER, v);
            }
            s.metadata_mut().insert(RETRY_AFTER_HEADER, MetadataValue::from(retry_after_ms));
        }
        _ => {}
    }
    s
}

impl From<ApiError> for tonic::Status {
    fn from(e: ApiError) -> Self {
        to_status(e)
    }
}

#[cfg(test)]
mod tests;
