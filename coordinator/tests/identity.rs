//! Cluster identity on real processes: a node of another cluster, a node
//! whose data dir was wiped, and a second initialization are refused with
//! errors that say what happened and what to do.

mod common;

use std::time::{Duration, Instant};

use baton_client::proto;
use baton_coordinator::network::pb;
use common::recovery::*;
use common::*;

static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

const SECS: fn(u64) -> Duration = Duration::from_secs;

async fn raft_client(c: &Cluster, id: u64) -> pb::raft_service_client::RaftServiceClient<tonic::transport::Channel> {
    let ch = tonic::transport::Endpoint::from_shared(format!("http://{}", c.raft_addr(id)))
        .unwrap()
        .timeout(SECS(5))
        .connect_lazy();
    pb::raft_service_client::RaftServiceClient::new(ch)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_of_another_cluster_is_refused() {
    let _g = SERIAL.lock().await;
    let a = Cluster::start(3, Opts::default());
    let b = Cluster::start(1, Opts::default());
    let leader = a.wait_leader(SECS(15)).await;
    b.wait_leader(SECS(15)).await;
    let a_id = status_of(&a, 1).await.cluster_id;
    let b_id = status_of(&b, 1).await.cluster_id;
    assert!(a_id.len() == 32 && b_id.len() == 32 && a_id != b_id, "{a_id} {b_id}");

    // Adding B's node to A is refused before it enters the membership.
    let mut cl = a.cluster(leader).await;
    let e = cl
        .add_learner(proto::AddLearnerRequest { node_id: 1, raft_addr: b.raft_addr(1), api_addr: b.api_addr(1) })
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::FailedPrecondition, "{e:?}");
    assert!(e.message().contains(&a_id) && e.message().contains(&b_id), "names both clusters: {e:?}");
    let r = baton(&[
        "--endpoints",
        &a.endpoints_arg(),
        "cluster",
        "add-node",
        "--id",
        "1",
        "--raft-addr",
        &b.raft_addr(1),
        "--api-addr",
        &b.api_addr(1),
    ])
    .await;
    assert!(!r.ok && r.stderr.contains(&b_id), "{r:?}");

    // A Raft message from B's cluster, addressed right, is refused before
    // openraft sees it: the receiver's term does not move.
    let mut raft = raft_client(&a, 2).await;
    let who = raft.identify(pb::IdentifyRequest {}).await.unwrap().into_inner();
    assert_eq!((who.node_id, who.cluster_id.as_str()), (2, a_id.as_str()));
    let vote = openraft::raft::VoteRequest::<u64>::new(openraft::Vote::new(1_000, 1), None);
    let e = raft
        .vote(pb::RaftMessage {
            data: baton_raft_store::codec::encode(&vote).unwrap(),
            cluster_id: b_id.clone(),
            from_node: 1,
            to_node: 2,
            to_incarnation: who.incarnation.clone(),
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::FailedPrecondition, "{e:?}");
    assert!(e.message().contains(&a_id) && e.message().contains(&b_id), "names both clusters: {e:?}");
    assert!(status_of(&a, 2).await.term < 1_000, "the refused vote reached openraft");
    a.wait_log(2, "refused raft message", SECS(10)).await;

    // Both clusters go on, each with its own members.
    assert_eq!(a.wait_leader(SECS(10)).await, leader);
    assert_eq!(status_of(&a, leader).await.members.len(), 3);
    assert_eq!(status_of(&b, 1).await.members.len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wiped_node_rejoining_under_its_old_id_is_refused_until_removed_and_added_again() {
    let _g = SERIAL.lock().await;
    let mut c = Cluster::start(3, Opts::default());
    c.wait_leader(SECS(15)).await;
    let cluster = status_of(&c, 1).await.cluster_id;
    let old_incarnation = status_of(&c, 1).await.incarnation;
    for i in 0..5 {
        submit(&c, spec("w", 1, &format!("before-{i}")), SECS(15)).await;
    }

    // Node 1 (the lowest id: the one that initializes, like ordinal 0 of a
    // StatefulSet) loses its disk and comes back with the same flags.
    c.kill(1);
    std::fs::remove_dir_all(c.data_dir(1)).unwrap();
    c.spawn(1, true);
    let line = c.wait_log(1, "not initializing a new cluster", SECS(20)).await;
    assert!(line.contains(&cluster) && line.contains("remove-node --id 1"), "{line}");
    // The others' messages to its old incarnation are refused, saying how
    // to fix it.
    let line = c.wait_log(1, "refused raft message", SECS(20)).await;
    assert!(line.contains(&old_incarnation) && line.contains("remove-node --id 1"), "{line}");
    let s = status_of(&c, 1).await;
    assert_eq!(s.cluster_id, "", "the wiped node joined nothing");
    assert_ne!(s.incarnation, old_incarnation);
    assert!(s.members.is_empty(), "{s:?}");

    // The cluster goes on without it; re-adding it under the old
    // incarnation's entry is refused with the remedy.
    let leader = c.wait_leader_among(&[2, 3], SECS(15)).await;
    submit(&c, spec("w", 1, "during"), SECS(15)).await;
    let r = baton(&[
        "--endpoints",
        &c.api_addr(leader),
        "cluster",
        "add-node",
        "--id",
        "1",
        "--raft-addr",
        &c.raft_addr(1),
        "--api-addr",
        &c.api_addr(1),
    ])
    .await;
    assert!(!r.ok && r.stderr.contains("remove-node --id 1"), "{r:?}");

    // The fix: remove it, add it again, promote it.
    let r = baton(&["--endpoints", &c.api_addr(leader), "cluster", "remove-node", "--id", "1"]).await;
    assert!(r.ok, "{r:?}");
    let r = baton(&[
        "--endpoints",
        &c.api_addr(leader),
        "--timeout-secs",
        "60",
        "cluster",
        "add-node",
        "--id",
        "1",
        "--raft-addr",
        &c.raft_addr(1),
        "--api-addr",
        &c.api_addr(1),
    ])
    .await;
    assert!(r.ok, "{r:?}\n{}", c.logs());
    let r = baton(&["--endpoints", &c.api_addr(leader), "cluster", "promote", "--voters", "1,2,3"]).await;
    assert!(r.ok, "{r:?}");
    c.wait_leader(SECS(15)).await;
    let s = status_of(&c, 1).await;
    assert_eq!(s.cluster_id, cluster);
    let m = s.members.iter().find(|m| m.id == 1).unwrap();
    assert!(m.voter && m.incarnation == s.incarnation, "{s:?}");
    let j = submit(&c, spec("w", 1, "after"), SECS(15)).await;
    wait_applied(&c, 1, status_of(&c, leader).await.commit_index, SECS(20)).await;
    assert!(j.job_id > 0);
}

/// Wait for a `baton serve` that must fail; its stderr.
async fn fails(mut child: std::process::Child, c: &Cluster) -> String {
    let deadline = Instant::now() + SECS(30);
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            assert!(!status.success(), "the node should have refused to start");
            let mut err = String::new();
            std::io::Read::read_to_string(child.stderr.as_mut().unwrap(), &mut err).unwrap();
            return err;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            panic!("the node did not exit\n{}", c.logs());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn serve(c: &Cluster, id: u64, data_dir: &std::path::Path, extra: &[&str]) -> std::process::Child {
    std::process::Command::new(BIN)
        .args(["serve", "--node-id", &id.to_string(), "--data-dir", &arg(data_dir)])
        .args(["--raft-listen", &c.raft_addr(id), "--api-listen", &c.api_addr(id)])
        .args(["--http-listen", &format!("127.0.0.1:{}", c.ports[&id].http)])
        .args(extra)
        .env("BATON_LOG", "warn")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_initialization_is_refused() {
    let _g = SERIAL.lock().await;
    // `--init` creates a one-node cluster; a second `--init` on its data dir
    // is refused and names the cluster.
    let mut one = Cluster::empty(Opts::default());
    one.spawn_args(1, false, &["--init"]);
    one.wait_leader(SECS(15)).await;
    let cluster = status_of(&one, 1).await.cluster_id;
    assert_eq!(cluster.len(), 32);
    one.kill(1);
    let err = fails(serve(&one, 1, &one.data_dir(1), &["--init"]), &one).await;
    assert!(err.contains("already initialized") && err.contains(&cluster), "{err}");
    // Without --init the same data dir starts as before.
    one.spawn(1, false);
    one.wait_leader(SECS(15)).await;
    assert_eq!(status_of(&one, 1).await.cluster_id, cluster);

    // Initializing a new node with a member of an existing cluster is
    // refused too, naming that cluster.
    let a = Cluster::start(3, Opts::default());
    a.wait_leader(SECS(15)).await;
    let a_id = status_of(&a, 2).await.cluster_id;
    let mut fresh = Cluster::empty(Opts::default());
    fresh.reserve(9);
    let members = format!("9={}/{},2={}/{}", fresh.raft_addr(9), fresh.api_addr(9), a.raft_addr(2), a.api_addr(2));
    let err = fails(serve(&fresh, 9, &fresh.data_dir(9), &["--init", "--initial-members", &members]), &fresh).await;
    assert!(err.contains("already belongs to cluster") && err.contains(&a_id), "{err}");
    assert_eq!(status_of(&a, 2).await.cluster_id, a_id);
}
