//! The error contract at the gRPC edge: every error carries `baton-error-code`,
//! and a forwarded write whose leader vanishes mid-call is reported as
//! outcome-unknown, never as "not the leader" (which means "not applied").

mod common;

use std::time::Duration;

use baton_client::proto;
use common::*;

const SECS: fn(u64) -> Duration = Duration::from_secs;

fn code(s: &tonic::Status) -> &str {
    s.metadata().get("baton-error-code").map_or("<none>", |v| v.to_str().unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forwarded_write_whose_leader_dies_mid_call_is_indeterminate() {
    let mut c = Cluster::start(3, Opts::default());
    let leader = c.wait_leader(SECS(15)).await;
    let follower = c.live().into_iter().find(|id| *id != leader).unwrap();
    // A forwarded submit opens the follower's connection to the leader.
    let job = submit(&c, spec("fwd", 1, "fwd"), SECS(10)).await.job_id;
    let mut via_follower = c.jobs(follower).await;
    via_follower.get_job(proto::GetJobRequest { job_id: job, consistency: 0 }).await.expect("forwarded read");

    // The leader stalls: the forwarded cancel is written to its socket, and
    // nobody can tell whether it will be applied.
    c.signal(leader, libc::SIGSTOP);
    let cancel = tokio::spawn(async move {
        via_follower.cancel_job(proto::CancelJobRequest { job_id: job, reason: "test".into() }).await
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    c.kill(leader);
    let e = cancel.await.unwrap().expect_err("the leader died before answering");
    assert_eq!(code(&e), "INDETERMINATE", "{e:?}");
    assert_eq!(e.code(), tonic::Code::Unavailable, "{e:?}");
    let sdk = baton_client::Error::from_status(&e, true);
    assert!(sdk.is_indeterminate() && sdk.is_retryable(), "{sdk}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refusals_carry_their_error_code_through_a_forwarding_follower() {
    let c = Cluster::start(3, Opts::default());
    let leader = c.wait_leader(SECS(15)).await;
    let follower = c.live().into_iter().find(|id| *id != leader).unwrap();
    let job = submit(&c, spec("codes", 1, "codes"), SECS(10)).await.job_id;
    for node in [leader, follower] {
        let mut jobs = c.jobs(node).await;
        let e = jobs.submit_job(proto::SubmitJobRequest { spec: None }).await.unwrap_err();
        assert_eq!((e.code(), code(&e)), (tonic::Code::InvalidArgument, "INVALID"), "{e:?}");
        let e = jobs.get_job(proto::GetJobRequest { job_id: 424_242, consistency: 0 }).await.unwrap_err();
        assert_eq!((e.code(), code(&e)), (tonic::Code::NotFound, "NOT_FOUND"), "{e:?}");
        let e = jobs.cancel_job(proto::CancelJobRequest { job_id: 424_242, reason: String::new() }).await.unwrap_err();
        assert_eq!((e.code(), code(&e)), (tonic::Code::NotFound, "NOT_FOUND"), "{e:?}");
    }
    let mut jobs = c.jobs(follower).await;
    jobs.cancel_job(proto::CancelJobRequest { job_id: job, reason: "first".into() }).await.expect("first cancel");
    // Cancelling a finished job is refused as JOB_FINISHED, whoever answers.
    for node in [leader, follower] {
        let e = c
            .jobs(node)
            .await
            .cancel_job(proto::CancelJobRequest { job_id: job, reason: "again".into() })
            .await
            .unwrap_err();
        assert_eq!((e.code(), code(&e)), (tonic::Code::FailedPrecondition, "JOB_FINISHED"), "{e:?}");
        assert!(!baton_client::Error::from_status(&e, true).is_retryable());
    }
    let mut cl = c.cluster(follower).await;
    let e = cl.remove_node(proto::RemoveNodeRequest { node_id: 77 }).await.unwrap_err();
    assert_eq!((e.code(), code(&e)), (tonic::Code::NotFound, "NOT_FOUND"), "{e:?}");
}
