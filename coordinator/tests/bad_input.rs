//! Hostile clients: malformed protobuf, half-open streams, workers vanishing
//! mid-stream, oversized and invalid requests. None may crash or wedge a node.

mod common;

use std::time::{Duration, Instant};

use baton_client::proto;
use common::raw::Raw;
use common::*;

async fn raw_call(c: &Cluster, id: u64, path: &'static str, body: Vec<u8>) -> Result<Vec<u8>, tonic::Status> {
    let mut grpc = tonic::client::Grpc::new(c.channel(id).await);
    grpc.ready().await.map_err(|e| tonic::Status::unavailable(e.to_string()))?;
    grpc.unary(tonic::Request::new(body), tonic::codegen::http::uri::PathAndQuery::from_static(path), Raw)
        .await
        .map(|r| r.into_inner())
}

fn error_code(s: &tonic::Status) -> &str {
    s.metadata().get("baton-error-code").map_or("<none>", |v| v.to_str().unwrap())
}

async fn still_serving(c: &Cluster, key: &str) {
    let t = Instant::now();
    let r = submit(c, spec("alive", 1, key), Duration::from_secs(10)).await;
    assert!(r.job_id > 0);
    println!("node still serving ({:?} for a submit)", t.elapsed());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_clients_never_crash_or_wedge_a_node() {
    let c = Cluster::start(3, Opts::default());
    let leader = c.wait_leader(Duration::from_secs(15)).await;

    // Malformed protobuf on every kind of call, to the leader and a follower.
    let follower = c.live().into_iter().find(|id| *id != leader).unwrap();
    let garbage: Vec<Vec<u8>> = vec![vec![0xff; 64], vec![0x0a, 0xff, 0xff, 0xff, 0xff, 0x0f], (0..=255).collect()];
    for id in [leader, follower] {
        for path in [
            "/baton.v1.JobService/SubmitJob",
            "/baton.v1.JobService/GetJob",
            "/baton.v1.ClusterService/AddLearner",
            "/baton.raft.v1.RaftService/AppendEntries",
        ] {
            for g in &garbage {
                let r = raw_call(&c, id, path, g.clone()).await;
                assert!(r.is_err(), "{path} accepted garbage: {r:?}");
            }
        }
    }
    // Garbage on the internal Raft port as well.
    let mut raft = tonic::client::Grpc::new(
        tonic::transport::Endpoint::from_shared(format!("http://127.0.0.1:{}", c.ports[&leader].raft))
            .unwrap()
            .connect_lazy(),
    );
    for g in &garbage {
        raft.ready().await.unwrap();
        let r = raft
            .unary(
                tonic::Request::new(g.clone()),
                tonic::codegen::http::uri::PathAndQuery::from_static("/baton.raft.v1.RaftService/Vote"),
                Raw,
            )
            .await;
        assert!(r.is_err(), "raft vote accepted garbage");
    }
    still_serving(&c, "after-garbage").await;

    // Half-open session streams: opened, never registered.
    let mut half_open = Vec::new();
    for _ in 0..50 {
        let (tx, rx) = tokio::sync::mpsc::channel::<proto::WorkerMessage>(1);
        let mut client = proto::worker_service_client::WorkerServiceClient::new(c.channel(leader).await);
        half_open.push((
            tx,
            tokio::spawn(async move { client.session(tokio_stream::wrappers::ReceiverStream::new(rx)).await }),
        ));
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    still_serving(&c, "during-half-open").await;

    // A worker that vanishes mid-stream (aborted while holding a task).
    let w = TestWorker::start(c.endpoints(), "vanisher", 4, Duration::ZERO);
    w.hold.store(true, std::sync::atomic::Ordering::SeqCst);
    let job = submit(&c, spec("vanish", 1, "vanish"), Duration::from_secs(10)).await.job_id;
    let deadline = Instant::now() + Duration::from_secs(10);
    while w.assigned().is_empty() {
        assert!(Instant::now() < deadline, "vanisher never got work");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    w.kill();
    drop(half_open);
    let heir = TestWorker::start(c.endpoints(), "heir", 4, Duration::ZERO);
    let done = wait_job_done(&c, job, Duration::from_secs(20)).await;
    assert_eq!(done.status, proto::JobStatus::Succeeded as i32);
    drop(heir);

    // Invalid requests are refused with the right code and the field named.
    let mut jobs = c.jobs(leader).await;
    let too_many = proto::JobSpec { namespace: "ns".into(), shards: 100_001, ..Default::default() };
    let e = jobs.submit_job(proto::SubmitJobRequest { spec: Some(too_many) }).await.unwrap_err();
    assert_eq!(e.code(), tonic::Code::InvalidArgument);
    assert_eq!(error_code(&e), "INVALID");
    assert!(e.message().contains("shards"), "{e:?}");
    let big = proto::JobSpec { namespace: "ns".into(), payloads: vec![vec![0; 2 * 1024 * 1024]], ..Default::default() };
    let e = jobs.submit_job(proto::SubmitJobRequest { spec: Some(big) }).await.unwrap_err();
    assert_eq!(e.code(), tonic::Code::InvalidArgument);
    assert!(e.message().contains("payloads[0]"), "{e:?}");
    let e = jobs.submit_job(proto::SubmitJobRequest { spec: None }).await.unwrap_err();
    assert_eq!(e.code(), tonic::Code::InvalidArgument);
    let e = jobs.cancel_job(proto::CancelJobRequest { job_id: 424_242, reason: String::new() }).await.unwrap_err();
    assert_eq!(e.code(), tonic::Code::NotFound);
    assert_eq!(error_code(&e), "NOT_FOUND");
    // The job above finished: cancelling it is refused as JOB_FINISHED.
    let e = jobs.cancel_job(proto::CancelJobRequest { job_id: job, reason: String::new() }).await.unwrap_err();
    assert_eq!(e.code(), tonic::Code::FailedPrecondition);
    assert_eq!(error_code(&e), "JOB_FINISHED");
    let e = jobs.list_jobs(proto::ListJobsRequest { page_size: 5_000, ..Default::default() }).await.unwrap_err();
    assert_eq!(e.code(), tonic::Code::InvalidArgument);
    let e = jobs.get_job(proto::GetJobRequest { job_id: job, consistency: 9 }).await.unwrap_err();
    assert!(e.message().contains("consistency"), "{e:?}");
    let e = jobs.submit_jobs(proto::SubmitJobsRequest { specs: vec![] }).await.unwrap_err();
    assert_eq!(e.code(), tonic::Code::InvalidArgument);
    // A batch with one bad item: the others still go through.
    let r = jobs
        .submit_jobs(proto::SubmitJobsRequest {
            specs: vec![spec("ns", 1, "b1"), proto::JobSpec { shards: 1, ..Default::default() }, spec("ns", 1, "b3")],
        })
        .await
        .unwrap()
        .into_inner();
    let kinds: Vec<bool> =
        r.results.iter().map(|x| matches!(x.result, Some(proto::submit_job_result::Result::Ok(_)))).collect();
    assert_eq!(kinds, vec![true, false, true]);
    let mut cl = c.cluster(leader).await;
    let e = cl
        .add_learner(proto::AddLearnerRequest { node_id: 0, raft_addr: "x".into(), api_addr: "y".into() })
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::InvalidArgument);
    assert_eq!(error_code(&e), "INVALID");
    let e = cl
        .add_learner(proto::AddLearnerRequest { node_id: 9, raft_addr: "h:0".into(), api_addr: "h:1".into() })
        .await
        .unwrap_err();
    assert!(e.message().contains("raft_addr"), "port 0 is not a port: {e:?}");
    let e = cl.change_membership(proto::ChangeMembershipRequest { voters: vec![] }).await.unwrap_err();
    assert_eq!(e.code(), tonic::Code::InvalidArgument);

    // Every node is still up and the cluster still agrees on a leader.
    still_serving(&c, "at-the-end").await;
    let mut c = c;
    for id in c.live() {
        assert!(c.procs.get_mut(&id).unwrap().try_wait().unwrap().is_none(), "node {id} died");
    }
}
