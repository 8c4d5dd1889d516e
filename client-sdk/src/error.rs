//! The SDK's one error type, classified so callers know what to do next.

use std::time::Duration;

/// Metadata keys of the leader hint (see the `.proto`).
pub const LEADER_ID_HEADER: &str = "baton-leader-id";
pub const LEADER_ADDR_HEADER: &str = "baton-leader-addr";

#[derive(Debug, Clone, thiserror::Error)]
pub enum Error {
    /// The request is wrong; retrying it cannot help.
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    #[error("not found: {0}")]
    NotFound(String),
    /// The fencing token is stale: another attempt owns the task. Nothing changed.
    #[error("fenced: {0}")]
    Fenced(String),
    /// Refused in the current state (job finished, session ended…). Nothing changed.
    #[error("failed precondition: {0}")]
    FailedPrecondition(String),
    /// No leader, or no node reachable; safe to retry.
    #[error("unavailable: {0}")]
    Unavailable(String),
    /// A limit was hit; retry later.
    #[error("resource exhausted: {0}")]
    ResourceExhausted(String),
    /// A write whose outcome is unknown (it may or may not have been applied).
    /// Retrying with the same idempotency key is safe.
    #[error("outcome unknown: {0}")]
    Indeterminate(String),
    /// Gave up: the deadline passed while retrying. `last` is the last error seen.
    #[error("gave up after {elapsed:?}: {last}")]
    DeadlineExceeded { elapsed: Duration, last: Box<Error> },
    #[error("internal error: {0}")]
    Internal(String),
    #[error("configuration: {0}")]
    Config(String),
}

impl Error {
    /// Worth retrying the same call (after a backoff).
    pub fn is_retryable(&self) -> bool {
        matches!(self, Error::Unavailable(_) | Error::ResourceExhausted(_) | Error::Indeterminate(_))
    }

    /// The report was refused because its token is stale.
    pub fn is_fenced(&self) -> bool {
        matches!(self, Error::Fenced(_))
    }

    /// The call may or may not have taken effect.
    pub fn is_indeterminate(&self) -> bool {
        match self {
            Error::Indeterminate(_) => true,
            Error::DeadlineExceeded { last, .. } => last.is_indeterminate() || last.is_retryable(),
            _ => false,
        }
    }

    /// Classify a gRPC status. `write` marks calls that change state: for them
    /// a timeout or a broken connection leaves the outcome unknown.
    pub fn from_status(s: &tonic::Status, write: bool) -> Error {
        use tonic::Code::*;
        let m = s.message().to_string();
        match s.code() {
            InvalidArgument | OutOfRange => Error::InvalidArgument(m),
            NotFound => Error::NotFound(m),
            FailedPrecondition if m.starts_with("fenced:") => Error::Fenced(m),
            FailedPrecondition | AlreadyExists | Aborted => Error::FailedPrecondition(m),
            ResourceExhausted => Error::ResourceExhausted(m),
            // A write refused by a node that is not the leader was not applied
            // by that node, but a leader that lost leadership mid-commit
            // answers the same way: treat writes as indeterminate.
            Unavailable if write && !m.starts_with("not the leader") => Error::Indeterminate(m),
            Unavailable => Error::Unavailable(m),
            DeadlineExceeded | Cancelled | Unknown if write => Error::Indeterminate(m),
            DeadlineExceeded | Cancelled | Unknown => Error::Unavailable(m),
            _ => Error::Internal(format!("{:?}: {m}", s.code())),
        }
    }
}

/// The leader's API address, if the status carries a hint.
pub fn leader_hint(s: &tonic::Status) -> Option<String> {
    s.metadata().get(LEADER_ADDR_HEADER).and_then(|v| v.to_str().ok()).map(str::to_string)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classification() {
        let fenced = Error::from_status(&tonic::Status::failed_precondition("fenced: task 1/0 …"), true);
        assert!(fenced.is_fenced() && !fenced.is_retryable());
        let e = Error::from_status(&tonic::Status::unavailable("not the leader; no leader is known yet"), true);
        assert!(e.is_retryable() && !e.is_indeterminate());
        let e = Error::from_status(&tonic::Status::deadline_exceeded("slow"), true);
        assert!(e.is_indeterminate() && e.is_retryable());
        let e = Error::from_status(&tonic::Status::deadline_exceeded("slow"), false);
        assert!(!e.is_indeterminate() && e.is_retryable());
        let e = Error::from_status(&tonic::Status::invalid_argument("invalid namespace"), true);
        assert!(!e.is_retryable());
        let mut s = tonic::Status::unavailable("not the leader");
        s.metadata_mut().insert(LEADER_ADDR_HEADER, "10.0.0.1:7201".parse().unwrap());
        assert_eq!(leader_hint(&s).as_deref(), Some("10.0.0.1:7201"));
    }
}
