//! The SDK's one error type, classified so callers know what to do next.
//!
//! Servers name the cause of every error in the `baton-error-code` metadata
//! (see the `.proto`); the SDK classifies by that code and the gRPC code,
//! never by the message, which is for people.

use std::time::Duration;

/// Metadata keys of the leader hint (see the `.proto`).
pub const LEADER_ID_HEADER: &str = "baton-leader-id";
pub const LEADER_ADDR_HEADER: &str = "baton-leader-addr";
/// Metadata key naming the cause of an error, one of the `codes` below.
pub const ERROR_CODE_HEADER: &str = "baton-error-code";
/// Metadata key of a [`codes::QUOTA_EXCEEDED`] error: which quota refused
/// (`live_tasks`, `payload_bytes` or `submits_per_sec`).
pub const QUOTA_HEADER: &str = "baton-quota";
/// Metadata key of a [`codes::QUOTA_EXCEEDED`] error: how long to wait
/// before trying again, in ms (decimal).
pub const RETRY_AFTER_HEADER: &str = "baton-retry-after-ms";

/// The values of [`ERROR_CODE_HEADER`], as the `.proto` lists them.
pub mod codes {
    pub const INVALID: &str = "INVALID";
    pub const NOT_FOUND: &str = "NOT_FOUND";
    pub const FENCED: &str = "FENCED";
    pub const JOB_FINISHED: &str = "JOB_FINISHED";
    pub const SESSION_ENDED: &str = "SESSION_ENDED";
    pub const PRECONDITION: &str = "PRECONDITION";
    pub const NOT_LEADER: &str = "NOT_LEADER";
    pub const LAGGING: &str = "LAGGING";
    pub const UNAVAILABLE: &str = "UNAVAILABLE";
    pub const LIMIT_REACHED: &str = "LIMIT_REACHED";
    pub const OVERLOADED: &str = "OVERLOADED";
    pub const ABORTED: &str = "ABORTED";
    pub const INDETERMINATE: &str = "INDETERMINATE";
    pub const INTERNAL: &str = "INTERNAL";
    /// DeleteJob on a job with pending or running shards.
    pub const JOB_NOT_FINISHED: &str = "JOB_NOT_FINISHED";
    /// RetryJob on a job without dead or cancelled shards.
    pub const NOTHING_TO_RETRY: &str = "NOTHING_TO_RETRY";
    /// DeleteJob or RetryJob on a workflow's job: it goes with its workflow (delete the workflow; there is no retry of one step).
    pub const JOB_IN_WORKFLOW: &str = "JOB_IN_WORKFLOW";
    /// The job or its namespace is paused.
    pub const PAUSED: &str = "PAUSED";
    /// A schedule or trigger of that name exists, with another spec.
    pub const ALREADY_EXISTS: &str = "ALREADY_EXISTS";
    /// No credential, or a bad or expired one (auth is on).
    pub const UNAUTHENTICATED: &str = "UNAUTHENTICATED";
    /// The credential lacks a role in a namespace; the message names both.
    pub const PERMISSION_DENIED: &str = "PERMISSION_DENIED";
    /// A plaintext connection reached a port that serves TLS.
    pub const TLS_REQUIRED: &str = "TLS_REQUIRED";
    /// A namespace quota refused the call (with RESOURCE_EXHAUSTED); the
    /// quota and a retry-after hint are in `baton-quota` and `baton-retry-after-ms`.
    pub const QUOTA_EXCEEDED: &str = "QUOTA_EXCEEDED";
}

/// The `baton-error-code` a status carries, if any.
pub fn status_code(s: &tonic::Status) -> Option<&str> {
    s.metadata().get(ERROR_CODE_HEADER).and_then(|v| v.to_str().ok())
}

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
    /// Refused in the current state. Nothing changed.
    #[error("failed precondition: {0}")]
    FailedPrecondition(String),
    /// The job has already finished. Nothing changed.
    #[error("failed precondition: {0}")]
    JobFinished(String),
    /// The worker session has ended (expired or replaced); register again.
    #[error("failed precondition: {0}")]
    SessionEnded(String),
    /// The job still has pending or running shards (DeleteJob). Cancel it
    /// first, or wait for it to finish. Nothing changed.
    #[error("failed precondition: {0}")]
    JobNotFinished(String),
    /// The job has no dead or cancelled shard (RetryJob). Nothing changed.
    #[error("failed precondition: {0}")]
    NothingToRetry(String),
    /// The job belongs to a workflow, which owns its lifecycle (DeleteJob,
    /// RetryJob): it goes with its workflow. Nothing changed.
    #[error("failed precondition: {0}")]
    JobInWorkflow(String),
    /// The job or its namespace is paused. Nothing changed.
    #[error("failed precondition: {0}")]
    Paused(String),
    /// A schedule or trigger of that name exists in the namespace with
    /// another spec (creating it again with the same spec succeeds as a
    /// duplicate). Nothing changed.
    #[error("already exists: {0}")]
    AlreadyExists(String),
    /// A worker session stream was replaced by a newer stream of the same session.
    #[error("aborted: {0}")]
    Aborted(String),
    /// The node answering is not the leader and did not apply the call; retry,
    /// at the leader if the error named one.
    #[error("unavailable: {0}")]
    NotLeader(String),
    /// The node answering has not yet applied what the leader committed; retry.
    #[error("unavailable: {0}")]
    Lagging(String),
    /// No leader, or no node reachable; safe to retry.
    #[error("unavailable: {0}")]
    Unavailable(String),
    /// A configured limit was hit; retry later.
    #[error("resource exhausted: {0}")]
    ResourceExhausted(String),
    /// A queue on the node is full; nothing was done. Retry later.
    #[error("resource exhausted: {0}")]
    Overloaded(String),
    /// A namespace quota (`quota`: `live_tasks`, `payload_bytes` or
    /// `submits_per_sec`) refused the call; nothing was done. Not retried by
    /// the SDK unless `ClientConfig::quota_retries` allows it; waiting
    /// `retry_after` first is what the server asks.
    #[error("resource exhausted: {message}")]
    QuotaExceeded { quota: String, retry_after: Option<Duration>, message: String },
    /// A write whose outcome is unknown (it may or may not have been applied).
    /// Retrying with the same idempotency key is safe.
    #[error("outcome unknown: {0}")]
    Indeterminate(String),
    /// Gave up: the deadline passed while retrying. `last` is the last error seen.
    #[error("gave up after {elapsed:?}: {last}")]
    DeadlineExceeded { elapsed: Duration, last: Box<Error> },
    #[error("internal error: {0}")]
    Internal(String),
    /// No credential, or a bad or expired one. Set a token
    /// (`ClientConfig::token`); retrying the same call cannot help.
    #[error("unauthenticated: {0}")]
    Unauthenticated(String),
    /// The credential lacks the role the call needs in its namespace (the
    /// message names both). Nothing was done.
    #[error("permission denied: {0}")]
    PermissionDenied(String),
    #[error("configuration: {0}")]
    Config(String),
    /// The server serves TLS and this client spoke plaintext: connect with
    /// `https://` and the cluster CA. Retrying cannot help.
    #[error("{0}")]
    TlsRequired(String),
}

impl Error {
    /// Worth retrying the same call (after a backoff).
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            Error::NotLeader(_)
                | Error::Lagging(_)
                | Error::Unavailable(_)
                | Error::ResourceExhausted(_)
                | Error::Overloaded(_)
                | Error::Indeterminate(_)
        )
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

    /// The cause in the contract's vocabulary (a [`codes`] value): the
    /// server's `baton-error-code`, or the code of the same meaning for
    /// errors found by the SDK itself. `None` for configuration errors.
    pub fn code(&self) -> Option<&'static str> {
        Some(match self {
            Error::InvalidArgument(_) => codes::INVALID,
            Error::NotFound(_) => codes::NOT_FOUND,
            Error::Fenced(_) => codes::FENCED,
            Error::FailedPrecondition(_) => codes::PRECONDITION,
            Error::JobFinished(_) => codes::JOB_FINISHED,
            Error::SessionEnded(_) => codes::SESSION_ENDED,
            Error::JobNotFinished(_) => codes::JOB_NOT_FINISHED,
            Error::NothingToRetry(_) => codes::NOTHING_TO_RETRY,
            Error::JobInWorkflow(_) => codes::JOB_IN_WORKFLOW,
            Error::Paused(_) => codes::PAUSED,
            Error::AlreadyExists(_) => codes::ALREADY_EXISTS,
            Error::Aborted(_) => codes::ABORTED,
            Error::NotLeader(_) => codes::NOT_LEADER,
            Error::Lagging(_) => codes::LAGGING,
            Error::Unavailable(_) => codes::UNAVAILABLE,
            Error::ResourceExhausted(_) => codes::LIMIT_REACHED,
            Error::Overloaded(_) => codes::OVERLOADED,
            Error::QuotaExceeded { .. } => codes::QUOTA_EXCEEDED,
            Error::Indeterminate(_) => codes::INDETERMINATE,
            Error::Internal(_) => codes::INTERNAL,
            Error::Unauthenticated(_) => codes::UNAUTHENTICATED,
            Error::PermissionDenied(_) => codes::PERMISSION_DENIED,
            Error::TlsRequired(_) => codes::TLS_REQUIRED,
            Error::DeadlineExceeded { last, .. } => return last.code(),
            Error::Config(_) => return None,
        })
    }

    /// Classify a gRPC status. `write` marks calls that change state: for them
    /// a timeout or a broken connection leaves the outcome unknown.
    pub fn from_status(s: &tonic::Status, write: bool) -> Error {
        let mut m = s.message().to_string();
        if let Some(hint) = crate::tls::tls_hint(s) {
            m = format!("{m} ({hint})");
        }
        if status_code(s) == Some(codes::QUOTA_EXCEEDED) {
            let md = |k: &str| s.metadata().get(k).and_then(|v| v.to_str().ok());
            return Error::QuotaExceeded {
                quota: md(QUOTA_HEADER).unwrap_or_default().to_string(),
                retry_after: md(RETRY_AFTER_HEADER).and_then(|v| v.parse().ok()).map(Duration::from_millis),
                message: m,
            };
        }
        match status_code(s) {
            Some(code) => Error::from_code(code, s.code(), m, write),
            None => Error::from_grpc_code(s.code(), m, write, is_connect_failure(s)),
        }
    }

    fn from_code(code: &str, grpc: tonic::Code, m: String, write: bool) -> Error {
        match code {
            codes::INVALID => Error::InvalidArgument(m),
            codes::NOT_FOUND => Error::NotFound(m),
            codes::FENCED => Error::Fenced(m),
            codes::JOB_FINISHED => Error::JobFinished(m),
            codes::SESSION_ENDED => Error::SessionEnded(m),
            codes::PRECONDITION => Error::FailedPrecondition(m),
            codes::JOB_NOT_FINISHED => Error::JobNotFinished(m),
            codes::NOTHING_TO_RETRY => Error::NothingToRetry(m),
            codes::JOB_IN_WORKFLOW => Error::JobInWorkflow(m),
            codes::PAUSED => Error::Paused(m),
            codes::ALREADY_EXISTS => Error::AlreadyExists(m),
            codes::ABORTED => Error::Aborted(m),
            // Refused before anything was proposed: definitely not applied.
            codes::NOT_LEADER => Error::NotLeader(m),
            codes::LAGGING => Error::Lagging(m),
            codes::OVERLOADED => Error::Overloaded(m),
            codes::LIMIT_REACHED => Error::ResourceExhausted(m),
            // The server could not finish the call (Raft stopped, shutting
            // down): a write may have been appended before that.
            codes::UNAVAILABLE | codes::INDETERMINATE if write => Error::Indeterminate(m),
            codes::UNAVAILABLE | codes::INDETERMINATE => Error::Unavailable(m),
            codes::INTERNAL => Error::Internal(m),
            codes::UNAUTHENTICATED => Error::Unauthenticated(m),
            codes::PERMISSION_DENIED => Error::PermissionDenied(m),
            codes::TLS_REQUIRED => Error::TlsRequired(m),
            // A code newer than this SDK: fall back to the gRPC code.
            _ => Error::from_grpc_code(grpc, m, write, false),
        }
    }

    /// For servers without `baton-error-code`, and for failures found by the
    /// client's own transport: by gRPC code only.
    fn from_grpc_code(grpc: tonic::Code, m: String, write: bool, nothing_sent: bool) -> Error {
        use tonic::Code::*;
        match grpc {
            InvalidArgument | OutOfRange => Error::InvalidArgument(m),
            NotFound => Error::NotFound(m),
            FailedPrecondition => Error::FailedPrecondition(m),
            AlreadyExists => Error::AlreadyExists(m),
            Aborted => Error::Aborted(m),
            Unauthenticated => Error::Unauthenticated(m),
            PermissionDenied => Error::PermissionDenied(m),
            ResourceExhausted => Error::ResourceExhausted(m),
            // A connection that was never made carried nothing.
            Unavailable if nothing_sent => Error::Unavailable(m),
            Unavailable | DeadlineExceeded | Cancelled | Unknown if write => Error::Indeterminate(m),
            Unavailable | DeadlineExceeded | Cancelled | Unknown => Error::Unavailable(m),
            _ => Error::Internal(format!("{grpc:?}: {m}")),
        }
    }
}

/// The leader's API address, if the status carries a hint.
pub fn leader_hint(s: &tonic::Status) -> Option<String> {
    s.metadata().get(LEADER_ADDR_HEADER).and_then(|v| v.to_str().ok()).map(str::to_string)
}

/// The status is the client's failure to connect at all, so the request was
/// never sent (tonic keeps the connect error in the status's source chain).
pub fn is_connect_failure(s: &tonic::Status) -> bool {
    let mut cause = std::error::Error::source(s);
    while let Some(e) = cause {
        if e.is::<tonic::ConnectError>() {
            return true;
        }
        cause = e.source();
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    fn coded(grpc: tonic::Code, code: &'static str, msg: &str) -> tonic::Status {
        let mut s = tonic::Status::new(grpc, msg);
        s.metadata_mut().insert(ERROR_CODE_HEADER, tonic::metadata::MetadataValue::from_static(code));
        s
    }

    #[test]
    fn classified_by_code_not_by_message() {
        use tonic::Code::*;
        // Messages say nothing here: only the codes classify.
        let e = Error::from_status(&coded(FailedPrecondition, codes::FENCED, "x"), true);
        assert!(e.is_fenced() && !e.is_retryable() && e.code() == Some(codes::FENCED));
        let e = Error::from_status(&coded(FailedPrecondition, codes::PRECONDITION, "fenced: x"), true);
        assert!(!e.is_fenced() && !e.is_retryable());
        let e = Error::from_status(&coded(Unavailable, codes::NOT_LEADER, "x"), true);
        assert!(e.is_retryable() && !e.is_indeterminate() && e.code() == Some(codes::NOT_LEADER));
        let e = Error::from_status(&coded(Unavailable, codes::INDETERMINATE, "not the leader"), true);
        assert!(e.is_retryable() && e.is_indeterminate());
        for code in [codes::LAGGING, codes::OVERLOADED, codes::LIMIT_REACHED] {
            let e = Error::from_status(&coded(Unavailable, code, "x"), true);
            assert!(e.is_retryable() && !e.is_indeterminate() && e.code() == Some(code), "{code}");
        }
        // A server that could not finish a write cannot say whether it applied.
        let e = Error::from_status(&coded(Unavailable, codes::UNAVAILABLE, "raft stopped"), true);
        assert!(e.is_indeterminate());
        let e = Error::from_status(&coded(Unavailable, codes::UNAVAILABLE, "raft stopped"), false);
        assert!(e.is_retryable() && !e.is_indeterminate());
        for code in [
            codes::JOB_FINISHED,
            codes::SESSION_ENDED,
            codes::ABORTED,
            codes::INVALID,
            codes::NOT_FOUND,
            codes::JOB_NOT_FINISHED,
            codes::NOTHING_TO_RETRY,
            codes::JOB_IN_WORKFLOW,
            codes::PAUSED,
            codes::ALREADY_EXISTS,
        ] {
            let e = Error::from_status(&coded(FailedPrecondition, code, "x"), true);
            assert!(!e.is_retryable() && !e.is_fenced() && e.code() == Some(code), "{code}");
        }
        let e = Error::from_status(&coded(FailedPrecondition, codes::JOB_NOT_FINISHED, "x"), true);
        assert!(matches!(e, Error::JobNotFinished(_)), "{e}");
        let e = Error::from_status(&coded(FailedPrecondition, codes::NOTHING_TO_RETRY, "x"), true);
        assert!(matches!(e, Error::NothingToRetry(_)), "{e}");
        let e = Error::from_status(&coded(FailedPrecondition, codes::JOB_IN_WORKFLOW, "x"), true);
        assert!(matches!(e, Error::JobInWorkflow(_)), "{e}");
        let e = Error::from_status(&coded(FailedPrecondition, codes::PAUSED, "x"), true);
        assert!(matches!(e, Error::Paused(_)), "{e}");
        let e = Error::from_status(&coded(Unauthenticated, codes::UNAUTHENTICATED, "x"), false);
        assert!(matches!(e, Error::Unauthenticated(_)) && !e.is_retryable(), "{e}");
        let e = Error::from_status(&coded(PermissionDenied, codes::PERMISSION_DENIED, "needs role operator"), true);
        assert!(matches!(e, Error::PermissionDenied(_)) && !e.is_retryable(), "{e}");
        assert_eq!(e.code(), Some(codes::PERMISSION_DENIED));
        let e = Error::from_status(&tonic::Status::unauthenticated("x"), true);
        assert!(matches!(e, Error::Unauthenticated(_)), "{e}");
        let e = Error::from_status(&coded(AlreadyExists, codes::ALREADY_EXISTS, "x"), true);
        assert!(matches!(e, Error::AlreadyExists(_)) && !e.is_retryable(), "{e}");
        // An older server without the code: the gRPC code alone says it.
        let e = Error::from_status(&tonic::Status::already_exists("x"), true);
        assert!(matches!(e, Error::AlreadyExists(_)), "{e}");
        // A code newer than this SDK falls back to the gRPC code.
        let e = Error::from_status(&coded(NotFound, "SOMETHING_NEW", "x"), false);
        assert!(matches!(e, Error::NotFound(_)));
    }

    #[test]
    fn without_a_code_only_the_grpc_code_counts() {
        let old_fenced = Error::from_status(&tonic::Status::failed_precondition("fenced: task 1/0"), true);
        assert!(!old_fenced.is_fenced() && !old_fenced.is_retryable());
        // An old server's "not the leader" on a write: treated as unknown, the safe side.
        let e = Error::from_status(&tonic::Status::unavailable("not the leader; no leader is known yet"), true);
        assert!(e.is_indeterminate());
        let e = Error::from_status(&tonic::Status::unavailable("not the leader"), false);
        assert!(e.is_retryable() && !e.is_indeterminate());
        let e = Error::from_status(&tonic::Status::deadline_exceeded("slow"), true);
        assert!(e.is_indeterminate() && e.is_retryable());
        let e = Error::from_status(&tonic::Status::deadline_exceeded("slow"), false);
        assert!(!e.is_indeterminate() && e.is_retryable());
        let e = Error::from_status(&tonic::Status::invalid_argument("invalid namespace"), true);
        assert!(!e.is_retryable() && e.code() == Some(codes::INVALID));
    }

    #[test]
    fn a_write_that_never_connected_was_not_sent() {
        let refused = std::io::Error::from(std::io::ErrorKind::ConnectionRefused);
        let s = tonic::Status::from_error(Box::new(tonic::ConnectError(Box::new(refused))));
        assert_eq!(s.code(), tonic::Code::Unavailable);
        assert!(is_connect_failure(&s));
        let e = Error::from_status(&s, true);
        assert!(e.is_retryable() && !e.is_indeterminate(), "{e}");
        // The same code from a broken connection may follow a sent request.
        let reset = tonic::Status::from_error(Box::new(std::io::Error::from(std::io::ErrorKind::ConnectionReset)));
        assert!(!is_connect_failure(&reset));
    }

    #[test]
    fn leader_hint_is_read_from_metadata() {
        let mut s = tonic::Status::unavailable("not the leader");
        s.metadata_mut().insert(LEADER_ADDR_HEADER, "10.0.0.1:7201".parse().unwrap());
        assert_eq!(leader_hint(&s).as_deref(), Some("10.0.0.1:7201"));
    }
}
