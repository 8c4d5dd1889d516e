use super::*;
use baton_raft_store::TaskKey;
use openraft::error::{ChangeMembershipError, EmptyMembership, Fatal, QuorumNotEnough};

fn code_of(s: &tonic::Status) -> &str {
    s.metadata().get(ERROR_CODE_HEADER).expect("every status carries a code").to_str().unwrap()
}

fn hint() -> LeaderHint {
    Some((2, "10.0.0.2:7201".into()))
}

#[test]
fn every_error_carries_its_grpc_code_and_baton_code() {
    use tonic::Code::*;
    let cases = [
        (ApiError::invalid("f", "r"), InvalidArgument, codes::INVALID),
        (ApiError::NotFound("x".into()), NotFound, codes::NOT_FOUND),
        (ApiError::Fenced("x".into()), FailedPrecondition, codes::FENCED),
        (ApiError::JobFinished("x".into()), FailedPrecondition, codes::JOB_FINISHED),
        (ApiError::SessionEnded("x".into()), FailedPrecondition, codes::SESSION_ENDED),
        (ApiError::Precondition("x".into()), FailedPrecondition, codes::PRECONDITION),
        (ApiError::JobNotFinished("x".into()), FailedPrecondition, codes::JOB_NOT_FINISHED),
        (ApiError::NothingToRetry("x".into()), FailedPrecondition, codes::NOTHING_TO_RETRY),
        (ApiError::JobInWorkflow("x".into()), FailedPrecondition, codes::JOB_IN_WORKFLOW),
        (ApiError::Paused("x".into()), FailedPrecondition, codes::PAUSED),
        (ApiError::AlreadyExists("x".into()), AlreadyExists, codes::ALREADY_EXISTS),
        (ApiError::NotLeader { leader: None }, Unavailable, codes::NOT_LEADER),
        (ApiError::Lagging("x".into()), Unavailable, codes::LAGGING),
        (ApiError::Unavailable("x".into()), Unavailable, codes::UNAVAILABLE),
        (ApiError::Exhausted("x".into()), ResourceExhausted, codes::LIMIT_REACHED),
        (ApiError::Overloaded("x".into()), ResourceExhausted, codes::OVERLOADED),
        (ApiError::Aborted("x".into()), Aborted, codes::ABORTED),
        (ApiError::Deadline("x".into()), DeadlineExceeded, codes::UNAVAILABLE),
        (ApiError::Indeterminate { reason: "x".into(), leader: None }, Unavailable, codes::INDETERMINATE),
        (ApiError::Internal("x".into()), Internal, codes::INTERNAL),
        (ApiError::Unauthenticated("x".into()), Unauthenticated, codes::UNAUTHENTICATED),
        (ApiError::PermissionDenied("x".into()), PermissionDenied, codes::PERMISSION_DENIED),
        (ApiError::TlsRequired, FailedPrecondition, codes::TLS_REQUIRED),
    ];
    for (e, grpc, code) in cases {
        assert_eq!(e.code(), code);
        let s = to_status(e);
        assert_eq!((s.code(), code_of(&s)), (grpc, code), "{s:?}");
    }
}

#[test]
fn not_leader_and_indeterminate_name_the_leader() {
    for e in [ApiError::NotLeader { leader: hint() }, ApiError::Indeterminate { reason: "cut".into(), leader: hint() }]
    {
        let s = to_status(e);
        assert_eq!(s.metadata().get(LEADER_ID_HEADER).unwrap(), "2");
        assert_eq!(s.metadata().get(LEADER_ADDR_HEADER).unwrap(), "10.0.0.2:7201");
        assert!(s.message().contains("leader is node 2 at 10.0.0.2:7201"), "{}", s.message());
    }
    let s = to_status(ApiError::NotLeader { leader: None });
    assert!(s.metadata().get(LEADER_ID_HEADER).is_none());
}

#[test]
fn command_errors_map_to_precise_codes() {
    let task = TaskKey::new(1, 2);
    let cases: Vec<(CommandError, &str)> = vec![
        (CommandError::Invalid { field: "payloads".into(), reason: "empty".into() }, codes::INVALID),
        (CommandError::JobNotFound(4), codes::NOT_FOUND),
        (CommandError::TaskNotFound(task), codes::NOT_FOUND),
        (CommandError::SessionNotFound(3), codes::NOT_FOUND),
        (CommandError::SessionEnded { session: 3 }, codes::SESSION_ENDED),
        (CommandError::StaleEpoch { session: 3, presented: 1, current: 2 }, codes::SESSION_ENDED),
        (CommandError::Fenced { task, presented: 3, latest: 9 }, codes::FENCED),
        (CommandError::JobFinished { job: 1 }, codes::JOB_FINISHED),
        (CommandError::LimitReached { what: "x".into(), limit: 1 }, codes::LIMIT_REACHED),
        (
            CommandError::QuotaExceeded {
                namespace: "ns".into(),
                quota: "live_tasks".into(),
                limit: 2,
                used: 2,
                requested: 1,
            },
            codes::QUOTA_EXCEEDED,
        ),
        (CommandError::NotPending { task, state: "done".into() }, codes::PRECONDITION),
        (CommandError::IdempotencyConflict { key: "k".into(), job: 1 }, codes::PRECONDITION),
        (CommandError::JobNotFinished { job: 1 }, codes::JOB_NOT_FINISHED),
        (CommandError::NothingToRetry { job: 1 }, codes::NOTHING_TO_RETRY),
        (CommandError::JobInWorkflow { job: 1, workflow: 2, step: "s".into() }, codes::JOB_IN_WORKFLOW),
        (CommandError::JobPaused { job: 1, namespace: None }, codes::PAUSED),
        (CommandError::JobPaused { job: 1, namespace: Some("etl".into()) }, codes::PAUSED),
        (CommandError::ScheduleNotFound(5), codes::NOT_FOUND),
        (CommandError::TriggerNotFound(6), codes::NOT_FOUND),
        (
            CommandError::NameTaken { what: "schedule".into(), namespace: "ns".into(), name: "n".into(), id: 5 },
            codes::ALREADY_EXISTS,
        ),
        (
            CommandError::FireNotDue { schedule: 5, fire_ms: 1000, next_fire_ms: None, paused: true },
            codes::PRECONDITION,
        ),
    ];
    for (c, code) in cases {
        let text = c.to_string();
        let s = to_status(c.into());
        assert_eq!(code_of(&s), code, "{text}");
        assert!(s.message().contains(&text), "the message keeps the store's words: {}", s.message());
    }
    let s = to_status(CommandError::Invalid { field: "payloads".into(), reason: "empty".into() }.into());
    assert!(s.message().contains("payloads"));
}

#[test]
fn a_quota_refusal_carries_its_quota_and_retry_after_as_metadata() {
    let e = CommandError::QuotaExceeded {
        namespace: "ns".into(),
        quota: "payload_bytes".into(),
        limit: 10,
        used: 8,
        requested: 4,
    };
    let s = to_status(e.into());
    assert_eq!(s.code(), tonic::Code::ResourceExhausted);
    assert_eq!(code_of(&s), codes::QUOTA_EXCEEDED);
    let md = |k: &str| s.metadata().get(k).and_then(|v| v.to_str().ok()).map(str::to_string);
    assert_eq!(md(baton_client::error::QUOTA_HEADER).as_deref(), Some("payload_bytes"));
    let after = baton_raft_store::quota::QUOTA_RETRY_AFTER_MS.to_string();
    assert_eq!(md(baton_client::error::RETRY_AFTER_HEADER), Some(after));
    let sdk = baton_client::Error::from_status(&s, true);
    assert!(
        matches!(
            &sdk,
            baton_client::Error::QuotaExceeded { quota, retry_after: Some(d), .. }
                if quota == "payload_bytes" && d.as_millis() == 1_000
        ),
        "{sdk:?}"
    );
    assert!(!sdk.is_retryable(), "the SDK does not retry a quota refusal by itself");
}

#[test]
fn openraft_errors_convert_once() {
    let node = NodeInfo { raft_addr: "10.0.0.2:7200".into(), api_addr: "10.0.0.2:7201".into(), ..Default::default() };
    let w: RaftError<NodeId, ClientWriteError<NodeId, NodeInfo>> =
        RaftError::APIError(ClientWriteError::ForwardToLeader(ForwardToLeader::new(2, node.clone())));
    assert!(matches!(ApiError::from(w), ApiError::NotLeader { leader } if leader == hint()));
    let w: RaftError<NodeId, ClientWriteError<NodeId, NodeInfo>> = RaftError::APIError(
        ClientWriteError::ChangeMembershipError(ChangeMembershipError::EmptyMembership(EmptyMembership {})),
    );
    assert_eq!(ApiError::from(w).code(), codes::PRECONDITION);
    let w: RaftError<NodeId, ClientWriteError<NodeId, NodeInfo>> = RaftError::Fatal(Fatal::Stopped);
    assert_eq!(ApiError::from(w).code(), codes::UNAVAILABLE);

    let r: RaftError<NodeId, CheckIsLeaderError<NodeId, NodeInfo>> =
        RaftError::APIError(CheckIsLeaderError::ForwardToLeader(ForwardToLeader::new(2, node)));
    assert!(matches!(ApiError::from(r), ApiError::NotLeader { leader } if leader == hint()));
    let r: RaftError<NodeId, CheckIsLeaderError<NodeId, NodeInfo>> =
        RaftError::APIError(CheckIsLeaderError::QuorumNotEnough(QuorumNotEnough {
            cluster: "{1,2,3}".into(),
            got: [1].into(),
        }));
    assert_eq!(ApiError::from(r).code(), codes::UNAVAILABLE);
}
