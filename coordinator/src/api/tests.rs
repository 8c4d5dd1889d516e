use super::*;
use baton_client::error::{LEADER_ID_HEADER, codes};

fn code_of(s: &tonic::Status) -> &str {
    s.metadata().get(ERROR_CODE_HEADER).map_or("<none>", |v| v.to_str().unwrap())
}

fn hint() -> LeaderHint {
    Some((2, "10.0.0.2:7201".into()))
}

fn connect_refused() -> tonic::Status {
    let refused = std::io::Error::from(std::io::ErrorKind::ConnectionRefused);
    tonic::Status::from_error(Box::new(tonic::ConnectError(Box::new(refused))))
}

#[test]
fn a_forwarded_write_that_may_have_reached_the_leader_is_indeterminate() {
    // A broken connection, a reset stream, a timeout: the request had left.
    let cut_off = [
        tonic::Status::unavailable("connection closed"),
        tonic::Status::from_error(Box::new(std::io::Error::from(std::io::ErrorKind::ConnectionReset))),
        tonic::Status::cancelled("Timeout expired"),
        tonic::Status::unknown("h2 protocol error"),
    ];
    for s in cut_off {
        let text = format!("{s:?}");
        let out = forward_failure(s, Call::Write, hint());
        assert_eq!((out.code(), code_of(&out)), (tonic::Code::Unavailable, codes::INDETERMINATE), "{text}");
        assert_eq!(out.metadata().get(LEADER_ID_HEADER).unwrap(), "2");
        let sdk = baton_client::Error::from_status(&out, true);
        assert!(sdk.is_indeterminate(), "{sdk}");
    }
}

#[test]
fn a_forward_that_never_connected_or_a_read_is_not_the_leader() {
    let out = forward_failure(connect_refused(), Call::Write, hint());
    assert_eq!((out.code(), code_of(&out)), (tonic::Code::Unavailable, codes::NOT_LEADER));
    assert_eq!(out.metadata().get(LEADER_ID_HEADER).unwrap(), "2");
    assert!(!baton_client::Error::from_status(&out, true).is_indeterminate());
    let out = forward_failure(tonic::Status::unavailable("connection closed"), Call::Read, hint());
    assert_eq!(code_of(&out), codes::NOT_LEADER);
}

#[test]
fn the_leaders_own_answer_passes_through() {
    let answer = to_status(ApiError::JobFinished("job 1 has already finished".into()));
    let out = forward_failure(answer, Call::Write, hint());
    assert_eq!((out.code(), code_of(&out)), (tonic::Code::FailedPrecondition, codes::JOB_FINISHED));
    assert_eq!(out.message(), "job 1 has already finished");
}
