//! Integration tests: real `baton serve` processes on loopback, killed,
//! paused and restarted, with workers speaking the public session protocol.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use baton_client::proto;
use common::*;

/// One cluster at a time: the machine has two cores and the leases are short.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

const SECS: fn(u64) -> Duration = Duration::from_secs;

async fn all_jobs(c: &Cluster) -> Vec<proto::Job> {
    let mut out = Vec::new();
    let mut token = 0;
    loop {
        let leader = c.wait_leader(SECS(10)).await;
        let mut client = c.jobs(leader).await;
        let Ok(r) =
            client.list_jobs(proto::ListJobsRequest { page_size: 1000, page_token: token, ..Default::default() }).await
        else {
            continue;
        };
        let r = r.into_inner();
        out.extend(r.jobs);
        if r.next_page_token == 0 {
            return out;
        }
        token = r.next_page_token;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leader_killed_under_submit_load_loses_nothing() {
    let _g = SERIAL.lock().await;
    let mut c = Cluster::start(3, Opts::default());
    let leader = c.wait_leader(SECS(15)).await;

    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let acked = std::sync::Arc::new(std::sync::Mutex::new(Vec::<(String, u64, Instant)>::new()));
    let endpoints = c.ports.clone();
    let mut submitters = Vec::new();
    for s in 0..4 {
        let (stop, acked, endpoints) = (stop.clone(), acked.clone(), endpoints.clone());
        submitters.push(tokio::spawn(async move {
            let mut k = 0;
            while !stop.load(Ordering::SeqCst) {
                k += 1;
                let key = format!("s{s}-{k}");
                // Retry with the same key until acknowledged, through any node.
                let deadline = Instant::now() + SECS(20);
                let mut n = k;
                loop {
                    let ids: Vec<u64> = endpoints.keys().copied().collect();
                    let id = ids[n % ids.len()];
                    n += 1;
                    let ch =
                        tonic::transport::Endpoint::from_shared(format!("http://127.0.0.1:{}", endpoints[&id].api))
                            .unwrap()
                            .timeout(SECS(3))
                            .connect_timeout(Duration::from_millis(200))
                            .connect_lazy();
                    let mut client = proto::job_service_client::JobServiceClient::new(ch);
                    match client.submit_job(proto::SubmitJobRequest { spec: Some(spec("load", 1, &key)) }).await {
                        Ok(r) => {
                            acked.lock().unwrap().push((key, r.into_inner().job_id, Instant::now()));
                            break;
                        }
                        Err(_) if Instant::now() < deadline => tokio::time::sleep(Duration::from_millis(30)).await,
                        Err(e) => panic!("submission {key} never acknowledged: {e:?}"),
                    }
                }
            }
        }));
    }
    tokio::time::sleep(Duration::from_millis(800)).await;
    let killed_at = Instant::now();
    c.kill(leader);
    let new_leader = c.wait_leader(SECS(10)).await;
    assert_ne!(new_leader, leader);
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    stop.store(true, Ordering::SeqCst);
    for s in submitters {
        s.await.unwrap();
    }
    let acked = acked.lock().unwrap().clone();
    let after = acked.iter().filter(|(_, _, t)| *t > killed_at + Duration::from_millis(100)).count();
    assert!(after > 0, "no submission acknowledged after the failover");

    // Every acknowledged job is there, exactly once.
    let jobs = all_jobs(&c).await;
    let by_key: BTreeMap<String, u64> = jobs.iter().map(|j| (j.idempotency_key.clone(), j.id)).collect();
    assert_eq!(by_key.len(), jobs.len(), "two jobs share an idempotency key");
    for (key, id, _) in &acked {
        assert_eq!(by_key.get(key), Some(id), "acknowledged job {key} (id {id}) lost or changed");
    }
    assert_eq!(jobs.len(), acked.len(), "phantom jobs: {} in the table, {} acknowledged", jobs.len(), acked.len());
    println!("{} jobs acknowledged, {after} after killing leader {leader}; new leader {new_leader}", acked.len());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn five_nodes_survive_two_losses_and_refuse_writes_without_quorum() {
    let _g = SERIAL.lock().await;
    let mut c = Cluster::start(5, Opts::default());
    let leader = c.wait_leader(SECS(15)).await;
    let first = submit(&c, spec("five", 2, "before"), SECS(10)).await;

    // Lose the leader and one follower: three of five remain.
    let follower = (1..=5).find(|id| *id != leader).unwrap();
    c.kill(leader);
    c.kill(follower);
    c.wait_leader(SECS(10)).await;
    let during = submit(&c, spec("five", 2, "during"), SECS(10)).await;

    // Lose a third: no majority. Writes fail cleanly and nothing crashes.
    let third = c.live()[0];
    c.kill(third);
    let survivor = c.live()[0];
    let mut client = c.jobs(survivor).await;
    let mut req = tonic::Request::new(proto::SubmitJobRequest { spec: Some(spec("five", 1, "no-quorum")) });
    req.set_timeout(SECS(3));
    let err = client.submit_job(req).await.expect_err("a write without a majority must not be acknowledged");
    assert!(
        matches!(err.code(), tonic::Code::Unavailable | tonic::Code::DeadlineExceeded | tonic::Code::Cancelled),
        "unexpected error without quorum: {err:?}"
    );
    for id in c.live() {
        assert!(c.procs.get_mut(&id).unwrap().try_wait().unwrap().is_none(), "node {id} crashed without quorum");
    }

    // Bring them back: the cluster recovers with everything acknowledged.
    for id in [leader, follower, third] {
        c.spawn(id, true);
    }
    c.wait_leader(SECS(15)).await;
    let after = submit(&c, spec("five", 1, "after"), SECS(15)).await;
    for id in [first.job_id, during.job_id, after.job_id] {
        get_job(&c, id, SECS(10)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dead_worker_tasks_are_reassigned_within_ttl_plus_check() {
    let _g = SERIAL.lock().await;
    let opts = Opts::default();
    let c = Cluster::start(3, opts.clone());
    c.wait_leader(SECS(15)).await;
    let doomed = TestWorker::start(c.endpoints(), "doomed", 8, Duration::ZERO);
    doomed.hold.store(true, Ordering::SeqCst);
    let job = submit(&c, spec("reassign", 3, "r1"), SECS(10)).await.job_id;
    let deadline = Instant::now() + SECS(10);
    while doomed.assigned().len() < 3 {
        assert!(Instant::now() < deadline, "doomed worker never got the shards\n{}", c.logs());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let survivor = TestWorker::start(c.endpoints(), "survivor", 8, Duration::from_millis(10));
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(survivor.assigned().is_empty(), "shards were handed out twice while their owner lived");

    let killed = Instant::now();
    doomed.kill();
    let done = wait_job_done(&c, job, SECS(20)).await;
    assert_eq!(done.status, proto::JobStatus::Succeeded as i32);
    let first_reassign = survivor.assigned().iter().map(|(_, _, _, at)| *at).min().unwrap();
    let took = first_reassign.duration_since(killed);
    // The promise: TTL + one check interval, plus one commit and the push.
    let bound = Duration::from_millis(opts.ttl_ms + opts.check_ms) + Duration::from_millis(500);
    println!("reassigned {took:?} after the kill (bound {bound:?})");
    assert!(took <= bound, "reassignment took {took:?}, more than {bound:?}");
    for r in results(&c, job).await {
        assert!(String::from_utf8_lossy(&r.result).starts_with("survivor:"), "{r:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn zombie_worker_is_fenced_and_the_new_owner_result_stands() {
    let _g = SERIAL.lock().await;
    let opts = Opts::default();
    let c = Cluster::start(3, opts.clone());
    c.wait_leader(SECS(15)).await;
    let zombie = TestWorker::start(c.endpoints(), "zombie", 4, Duration::ZERO);
    zombie.hold.store(true, Ordering::SeqCst);
    let job = submit(&c, spec("zombie", 1, "z1"), SECS(10)).await.job_id;
    let deadline = Instant::now() + SECS(10);
    while zombie.assigned().is_empty() {
        assert!(Instant::now() < deadline, "zombie never got the shard\n{}", c.logs());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let (_, _, stale_token, _) = zombie.assigned()[0];

    // Stall past the TTL (a GC pause, a SIGSTOP): the lease expires.
    zombie.paused.store(true, Ordering::SeqCst);
    let heir = TestWorker::start(c.endpoints(), "heir", 4, Duration::from_millis(10));
    let done = wait_job_done(&c, job, SECS(20)).await;
    assert_eq!(done.status, proto::JobStatus::Succeeded as i32);
    let (_, _, heir_token, _) = heir.assigned()[0];
    assert!(heir_token > stale_token);

    // The zombie wakes and reports its stale attempt: fenced, nothing changes.
    zombie.paused.store(false, Ordering::SeqCst);
    zombie.complete(job, 0, stale_token, "zombie-result");
    let deadline = Instant::now() + SECS(10);
    let status = loop {
        if let Some((_, _, _, s)) = zombie.acks().into_iter().find(|(_, _, t, _)| *t == stale_token) {
            break s;
        }
        assert!(Instant::now() < deadline, "zombie's report was never answered\n{}", c.logs());
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(status, proto::ReportStatus::Fenced as i32);
    let r = &results(&c, job).await[0];
    assert_eq!(r.token, heir_token);
    assert!(String::from_utf8_lossy(&r.result).starts_with("heir:"), "{r:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_cluster_restart_keeps_jobs_tasks_and_sessions() {
    let _g = SERIAL.lock().await;
    let mut c = Cluster::start(3, Opts { ttl_ms: 3_000, heartbeat_ms: 500, ..Opts::default() });
    c.wait_leader(SECS(15)).await;
    let worker = TestWorker::start(c.endpoints(), "steady", 4, Duration::from_millis(10));
    let done_job = submit(&c, spec("restart", 2, "done"), SECS(10)).await.job_id;
    wait_job_done(&c, done_job, SECS(15)).await;
    let mut gpu = spec("restart", 3, "waiting");
    gpu.constraints.insert("gpu".into(), "yes".into());
    let waiting_job = submit(&c, gpu, SECS(10)).await.job_id;
    let session = worker.session.lock().unwrap().expect("registered");
    let before_done = results(&c, done_job).await;

    for id in c.live() {
        c.kill(id);
    }
    for id in 1..=3 {
        c.spawn(id, true);
    }
    c.wait_leader(SECS(15)).await;
    assert_eq!(results(&c, done_job).await, before_done, "results changed across the restart");
    let w = get_job(&c, waiting_job, SECS(10)).await;
    assert_eq!(w.counts.unwrap().pending, 3);
    assert_eq!(w.status, proto::JobStatus::Queued as i32);
    // The worker's session survived and was resumed, not re-registered.
    let deadline = Instant::now() + SECS(10);
    loop {
        let leader = c.wait_leader(SECS(10)).await;
        let mut wc = proto::worker_service_client::WorkerServiceClient::new(c.channel(leader).await);
        if let Ok(r) = wc.list_workers(proto::ListWorkersRequest::default()).await {
            let ids: Vec<u64> = r.into_inner().workers.iter().map(|w| w.session).collect();
            if ids == vec![session.0] && *worker.session.lock().unwrap() == Some(session) {
                break;
            }
        }
        assert!(Instant::now() < deadline, "session {session:?} not intact after restart\n{}", c.logs());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn membership_grows_to_five_and_shrinks_to_three_while_jobs_run() {
    let _g = SERIAL.lock().await;
    let mut c = Cluster::start(3, Opts::default());
    c.wait_leader(SECS(15)).await;
    let _w = TestWorker::start(c.endpoints(), "mw", 16, Duration::from_millis(5));
    let mut jobs = Vec::new();
    let mut n = 0;
    let mut submit_some = async |c: &Cluster, jobs: &mut Vec<u64>| {
        for _ in 0..5 {
            n += 1;
            jobs.push(submit(c, spec("member", 4, &format!("m{n}")), SECS(15)).await.job_id);
        }
    };
    submit_some(&c, &mut jobs).await;
    for id in [4, 5] {
        c.spawn(id, false);
        let leader = c.wait_leader_among(&[1, 2, 3], SECS(10)).await;
        let p = c.ports[&id];
        let mut cl = c.cluster(leader).await;
        let mut req = tonic::Request::new(proto::AddLearnerRequest {
            node_id: id,
            raft_addr: format!("127.0.0.1:{}", p.raft),
            api_addr: format!("127.0.0.1:{}", p.api),
        });
        req.set_timeout(SECS(20));
        cl.add_learner(req).await.expect("add learner");
        submit_some(&c, &mut jobs).await;
    }
    let leader = c.wait_leader_among(&[1, 2, 3], SECS(10)).await;
    let mut cl = c.cluster(leader).await;
    let r = cl
        .change_membership(proto::ChangeMembershipRequest { voters: vec![1, 2, 3, 4, 5] })
        .await
        .expect("grow to five")
        .into_inner();
    assert_eq!(r.members.iter().filter(|m| m.voter).count(), 5);
    submit_some(&c, &mut jobs).await;

    for id in [4, 5] {
        let leader = c.wait_leader_among(&[1, 2, 3], SECS(10)).await;
        let mut cl = c.cluster(leader).await;
        cl.remove_node(proto::RemoveNodeRequest { node_id: id }).await.expect("remove node");
        submit_some(&c, &mut jobs).await;
    }
    let leader = c.wait_leader_among(&[1, 2, 3], SECS(10)).await;
    let st = c.status(leader).await.unwrap();
    let voters: BTreeSet<u64> = st.members.iter().filter(|m| m.voter).map(|m| m.id).collect();
    assert_eq!(st.members.len(), 3, "removed nodes are gone: {:?}", st.members);
    assert!(voters.len() == 3 && !voters.contains(&4) && !voters.contains(&5), "{voters:?}");
    c.kill(4);
    c.kill(5);
    for j in jobs {
        let done = wait_job_done(&c, j, SECS(20)).await;
        assert_eq!(done.status, proto::JobStatus::Succeeded as i32, "{done:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn followers_forward_or_return_the_leader_hint() {
    let _g = SERIAL.lock().await;
    // Forwarding on: a follower serves writes and linearizable reads.
    {
        let c = Cluster::start(3, Opts::default());
        let leader = c.wait_leader(SECS(15)).await;
        let follower = c.live().into_iter().find(|id| *id != leader).unwrap();
        let mut client = c.jobs(follower).await;
        let resp = client
            .submit_job(proto::SubmitJobRequest { spec: Some(spec("fwd", 2, "via-follower")) })
            .await
            .expect("follower forwards the submit");
        // A forwarded success names the leader, so clients go there next time.
        assert_eq!(resp.metadata().get("baton-leader-id").unwrap().to_str().unwrap(), leader.to_string());
        assert_eq!(
            resp.metadata().get("baton-leader-addr").unwrap().to_str().unwrap(),
            format!("127.0.0.1:{}", c.ports[&leader].api)
        );
        let r = resp.into_inner();
        let j = client.get_job(proto::GetJobRequest { job_id: r.job_id, consistency: 0 }).await.expect("read");
        assert_eq!(j.into_inner().shards, 2);
        // Bad input is refused with the field named, wherever it lands.
        let err = client
            .submit_job(proto::SubmitJobRequest { spec: Some(proto::JobSpec { shards: 1, ..Default::default() }) })
            .await
            .unwrap_err();
        assert_eq!(err.code(), tonic::Code::InvalidArgument);
        assert!(err.message().contains("namespace"), "{err:?}");
        let err = client.get_job(proto::GetJobRequest { job_id: 9_999, consistency: 0 }).await.unwrap_err();
        assert_eq!(err.code(), tonic::Code::NotFound);
    }
    // Forwarding off: UNAVAILABLE with the leader's id and address.
    let c = Cluster::start(3, Opts { forward: false, ..Opts::default() });
    let leader = c.wait_leader(SECS(15)).await;
    let follower = c.live().into_iter().find(|id| *id != leader).unwrap();
    let mut client = c.jobs(follower).await;
    let err = client
        .submit_job(proto::SubmitJobRequest { spec: Some(spec("fwd", 1, "hint")) })
        .await
        .expect_err("no forwarding");
    assert_eq!(err.code(), tonic::Code::Unavailable);
    assert_eq!(err.metadata().get("baton-leader-id").unwrap().to_str().unwrap(), leader.to_string());
    assert_eq!(
        err.metadata().get("baton-leader-addr").unwrap().to_str().unwrap(),
        format!("127.0.0.1:{}", c.ports[&leader].api)
    );
    // Stale reads are served by the follower itself.
    let r = client.list_jobs(proto::ListJobsRequest { consistency: 1, ..Default::default() }).await;
    assert!(r.is_ok(), "{r:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_node_catches_up_from_a_streamed_snapshot() {
    let _g = SERIAL.lock().await;
    // Snapshot every 100 entries and keep no log behind it: a node that joins
    // later can only catch up by receiving a snapshot over the network.
    let env = vec![
        ("BATON_RAFT__SNAPSHOT_AFTER_ENTRIES".to_string(), "100".to_string()),
        ("BATON_RAFT__KEEP_LOGS_AFTER_SNAPSHOT".to_string(), "0".to_string()),
    ];
    let mut c = Cluster::start(3, Opts { env, ..Opts::default() });
    c.wait_leader(SECS(15)).await;
    let _w = TestWorker::start(c.endpoints(), "snap-worker", 64, Duration::ZERO);
    let mut ids = Vec::new();
    for i in 0..350 {
        ids.push(submit(&c, spec("snap", 2, &format!("snap-{i}")), SECS(10)).await.job_id);
    }
    for id in &ids {
        wait_job_done(&c, *id, SECS(20)).await;
    }
    c.spawn(4, false);
    let leader = c.wait_leader_among(&[1, 2, 3], SECS(10)).await;
    let p = c.ports[&4];
    let mut cl = c.cluster(leader).await;
    let mut req = tonic::Request::new(proto::AddLearnerRequest {
        node_id: 4,
        raft_addr: format!("127.0.0.1:{}", p.raft),
        api_addr: format!("127.0.0.1:{}", p.api),
    });
    req.set_timeout(SECS(30));
    cl.add_learner(req).await.expect("learner catches up");
    // The learner's own (stale-read) view holds every job and result.
    let deadline = Instant::now() + SECS(15);
    loop {
        let mut jobs = c.jobs(4).await;
        let r = jobs.list_jobs(proto::ListJobsRequest { page_size: 1000, consistency: 1, ..Default::default() }).await;
        if let Ok(r) = r {
            let r = r.into_inner();
            // Replicated is not yet applied: the learner may list every job
            // before it has applied the entries that finished the last ones.
            let done = r.jobs.iter().all(|j| j.status == proto::JobStatus::Succeeded as i32);
            if r.jobs.len() == ids.len() && done {
                let res = jobs
                    .get_results(proto::GetResultsRequest { job_id: ids[0], consistency: 1, ..Default::default() })
                    .await
                    .unwrap()
                    .into_inner();
                assert!(res.results.iter().all(|s| String::from_utf8_lossy(&s.result).starts_with("snap-worker:")));
                break;
            }
        }
        assert!(Instant::now() < deadline, "learner never caught up\n{}", c.logs());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let log = std::fs::read_to_string(c.dir.path().join("node4.log")).unwrap();
    let l1 = std::fs::read_to_string(c.dir.path().join(format!("node{leader}.log"))).unwrap();
    let snaps: Vec<&str> = l1.lines().filter(|l| l.contains("snapshot")).collect();
    assert!(
        log.contains("snapshot installed"),
        "node 4 caught up without a snapshot:\n{log}\nleader:\n{}",
        snaps.join("\n")
    );
}
