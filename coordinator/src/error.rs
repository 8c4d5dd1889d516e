//! The API error boundary: one enum for everything a client call can fail
//! with, and the one function that turns it into a `tonic::Status`.

use baton_raft_store::{CommandError, NodeId};
use tonic::metadata::MetadataValue;

/// Metadata keys carrying the leader hint on UNAVAILABLE.
pub const LEADER_ID_HEADER: &str = "baton-leader-id";
pub const LEADER_ADDR_HEADER: &str = "baton-leader-addr";

/// Name the leader in response or error metadata (the `.proto` documents
/// both headers), so a client can go straight there next time.
pub fn insert_leader_hint(md: &mut tonic::metadata::MetadataMap, leader: Option<(u64, String)>) {
    if let Some((id, addr)) = leader {
        md.insert(LEADER_ID_HEADER, MetadataValue::from(id));
        if let Ok(v) = addr.parse() {
            md.insert(LEADER_ADDR_HEADER, v);
        }
    }
}

#[derive(Debug, Clone, thiserror::Error)]
pub enum ApiError {
    #[error("invalid {field}: {reason}")]
    Invalid { field: String, reason: String },
    #[error("{0}")]
    NotFound(String),
    /// A stale fencing token. Nothing changed.
    #[error("fenced: {0}")]
    Fenced(String),
    #[error("{0}")]
    Precondition(String),
    /// This node cannot serve the call; the leader, if known, can.
    #[error("not the leader{}", .leader.as_ref().map(|(id, a)| format!("; leader is node {id} at {a}")).unwrap_or_else(|| "; no leader is known yet".into()))]
    NotLeader { leader: Option<(NodeId, String)> },
    #[error("unavailable: {0}")]
    Unavailable(String),
    #[error("limit reached: {0}")]
    Exhausted(String),
    #[error("internal error: {0}")]
    Internal(String),
    /// A worker stream was replaced by a newer stream of its session.
    #[error("{0}")]
    Aborted(String),
    /// The worker session is no longer live: register again.
    #[error("{0}")]
    SessionEnded(String),
    /// A queue is full; retry later.
    #[error("overloaded: {0}")]
    Overloaded(String),
}

impl ApiError {
    pub fn invalid(field: impl Into<String>, reason: impl Into<String>) -> Self {
        ApiError::Invalid { field: field.into(), reason: reason.into() }
    }
}

impl From<CommandError> for ApiError {
    fn from(e: CommandError) -> Self {
        match &e {
            CommandError::Invalid { field, reason } => ApiError::invalid(field.clone(), reason.clone()),
            CommandError::JobNotFound(_) | CommandError::TaskNotFound(_) | CommandError::SessionNotFound(_) => {
                ApiError::NotFound(e.to_string())
            }
            CommandError::Fenced { .. } => ApiError::Fenced(e.to_string().trim_start_matches("fenced: ").to_string()),
            CommandError::LimitReached { .. } => ApiError::Exhausted(e.to_string()),
            _ => ApiError::Precondition(e.to_string()),
        }
    }
}

/// The one mapping from errors to gRPC statuses.
pub fn to_status(e: ApiError) -> tonic::Status {
    let msg = e.to_string();
    match e {
        ApiError::Invalid { .. } => tonic::Status::invalid_argument(msg),
        ApiError::NotFound(_) => tonic::Status::not_found(msg),
        ApiError::Fenced(_) | ApiError::Precondition(_) => tonic::Status::failed_precondition(msg),
        ApiError::NotLeader { leader } => {
            let mut s = tonic::Status::unavailable(msg);
            insert_leader_hint(s.metadata_mut(), leader);
            s
        }
        ApiError::Unavailable(_) => tonic::Status::unavailable(msg),
        ApiError::Exhausted(_) => tonic::Status::resource_exhausted(msg),
        ApiError::Internal(_) => tonic::Status::internal(msg),
        ApiError::Aborted(_) => tonic::Status::aborted(msg),
        ApiError::SessionEnded(_) => tonic::Status::failed_precondition(msg),
        ApiError::Overloaded(_) => tonic::Status::resource_exhausted(msg),
    }
}

impl From<ApiError> for tonic::Status {
    fn from(e: ApiError) -> Self {
        to_status(e)
    }
}

impl From<baton_raft_store::StoreError> for ApiError {
    fn from(e: baton_raft_store::StoreError) -> Self {
        ApiError::Internal(e.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use baton_raft_store::TaskKey;

    #[test]
    fn codes_and_leader_hint() {
        let s = to_status(CommandError::Fenced { task: TaskKey::new(1, 2), presented: 3, latest: 9 }.into());
        assert_eq!(s.code(), tonic::Code::FailedPrecondition);
        assert!(s.message().starts_with("fenced:"), "{}", s.message());
        let s = to_status(CommandError::Invalid { field: "payloads".into(), reason: "empty".into() }.into());
        assert_eq!(s.code(), tonic::Code::InvalidArgument);
        assert!(s.message().contains("payloads"));
        assert_eq!(to_status(CommandError::JobNotFound(4).into()).code(), tonic::Code::NotFound);
        let s = to_status(ApiError::NotLeader { leader: Some((2, "10.0.0.2:7201".into())) });
        assert_eq!(s.code(), tonic::Code::Unavailable);
        assert_eq!(s.metadata().get(LEADER_ID_HEADER).unwrap(), "2");
        assert_eq!(s.metadata().get(LEADER_ADDR_HEADER).unwrap(), "10.0.0.2:7201");
        let s = to_status(CommandError::LimitReached { what: "x".into(), limit: 1 }.into());
        assert_eq!(s.code(), tonic::Code::ResourceExhausted);
    }
}
