//! Backup and restore, and recovery after losing a majority for good: real
//! `baton` processes, the operator commands as the operator runs them.

mod common;

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use baton_client::proto;
use common::recovery::*;
use common::*;

/// One cluster at a time: the machine has two cores.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

const SECS: fn(u64) -> Duration = Duration::from_secs;

/// Every replica of `c` reaches the same applied index and the same state
/// hash there.
async fn replicas_agree(c: &Cluster) {
    let client = baton_client::Client::connect(c.endpoints()).unwrap();
    let deadline = Instant::now() + SECS(30);
    loop {
        let mut seen = BTreeSet::new();
        for id in c.live() {
            seen.insert(client.state_hash(&c.api(id)).await.ok());
        }
        if seen.len() == 1 && seen.first().is_some_and(|s| s.is_some()) {
            return;
        }
        assert!(Instant::now() < deadline, "replicas never agreed: {seen:?}\n{}", c.logs());
        tokio::time::sleep(SECS(1)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backup_taken_under_load_restores_into_a_new_three_node_cluster() {
    let _g = SERIAL.lock().await;
    let old = Cluster::start(3, Opts::default());
    old.wait_leader(SECS(15)).await;
    let old_cluster = status_of(&old, 1).await.cluster_id;
    assert_eq!(old_cluster.len(), 32, "the cluster has an id");
    let _worker = TestWorker::start(old.endpoints(), "old-worker", 8, Duration::from_millis(5));
    // Parked jobs no worker may take keep their payloads: a state of a few
    // MiB, so the backup streams in several chunks.
    let mut parked = Vec::new();
    for i in 0..4 {
        let spec = proto::JobSpec {
            namespace: "parked".into(),
            payloads: (0..15).map(|s| vec![(i * 16 + s) as u8; 60 * 1024]).collect(),
            constraints: [("zone".to_string(), "nowhere".to_string())].into(),
            idempotency_key: format!("parked-{i}"),
            ..Default::default()
        };
        parked.push(submit(&old, spec, SECS(15)).await.job_id);
    }
    let load = Submitters::start(&old, 3, "bk");
    load.wait_acked(40, SECS(60)).await;

    // The backup runs while the submitters go on.
    let file = old.dir.path().join("cluster.bak");
    let started = Instant::now();
    let backup =
        baton(&["--endpoints", &old.endpoints_arg(), "--json", "cluster", "backup", "--out", &arg(&file)]).await.json();
    let acked_before: Vec<u64> =
        load.acked.lock().unwrap().iter().filter(|(_, at)| *at < started).map(|(j, _)| *j).collect();
    let n = load.count();
    load.wait_acked(n + 20, SECS(60)).await;
    let all = load.stop().await;
    println!("backup: {backup}; {} jobs acknowledged before it, {} in all", acked_before.len(), all.len());
    assert_eq!(backup["cluster_id"], old_cluster.as_str());
    let index = backup["last_applied_index"].as_u64().unwrap();
    assert!(index > 0 && acked_before.len() >= 40, "{backup}");
    assert!(all.len() > acked_before.len(), "the load went on during the backup");
    assert!(backup["bytes"].as_u64().unwrap() > 3 * 1024 * 1024, "several chunks: {backup}");

    // Restore into a new data dir, and grow it to three nodes.
    let mut new = Cluster::empty(Opts::default());
    new.reserve(1);
    let restored = baton(&[
        "--json",
        "cluster",
        "restore",
        "--from",
        &arg(&file),
        "--data-dir",
        &arg(&new.data_dir(1)),
        "--node-id",
        "1",
        "--raft-addr",
        &new.raft_addr(1),
        "--api-addr",
        &new.api_addr(1),
    ])
    .await
    .json();
    assert_eq!(restored["state_hash"], backup["state_hash"], "the restored state is the backup's");
    assert_eq!(restored["last_applied_index"].as_u64(), Some(index));
    assert_eq!(restored["backup_cluster_id"], old_cluster.as_str());
    let new_cluster = restored["cluster_id"].as_str().unwrap().to_string();
    assert_ne!(new_cluster, old_cluster, "a restore starts a new cluster");
    drop(old);

    new.spawn(1, false);
    new.wait_leader(SECS(15)).await;
    let s = status_of(&new, 1).await;
    assert_eq!(s.cluster_id, new_cluster);
    assert_eq!(s.members.iter().map(|m| m.id).collect::<Vec<_>>(), vec![1]);
    new.grow(&[2, 3], &[1, 2, 3]).await;
    new.wait_leader(SECS(15)).await;
    for id in [2, 3] {
        assert_eq!(status_of(&new, id).await.cluster_id, new_cluster, "node {id} joined the new cluster");
    }

    // Every job acknowledged before the backup started is there, and runs to
    // the end on the new cluster's workers.
    let _worker = TestWorker::start(new.endpoints(), "new-worker", 8, Duration::from_millis(5));
    for job in &acked_before {
        let j = wait_job_done(&new, *job, SECS(60)).await;
        assert_eq!(j.id, *job);
    }
    for job in &parked {
        let j = get_job(&new, *job, SECS(10)).await;
        assert_eq!((j.shards, j.finished_ms), (15, 0), "parked job {job} restored with its shards pending");
    }
    replicas_agree(&new).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_losing_two_of_three_nodes_the_survivor_recovers_and_grows_back() {
    let _g = SERIAL.lock().await;
    let mut c = Cluster::start(3, Opts::default());
    let leader = c.wait_leader(SECS(15)).await;
    let old_cluster = status_of(&c, leader).await.cluster_id;
    let _worker = TestWorker::start(c.endpoints(), "worker", 8, Duration::from_millis(5));
    let load = Submitters::start(&c, 3, "rc");
    load.wait_acked(30, SECS(60)).await;

    // One follower goes for good; the other two go on committing, so every
    // write acknowledged from now on is in both their logs.
    let gone = *c.live().iter().find(|id| **id != leader).unwrap();
    c.kill(gone);
    let n = load.count();
    load.wait_acked(n + 30, SECS(60)).await;
    // Then the leader of the two goes too, in the middle of the load: the
    // survivor may hold entries it never learned were committed.
    let pair: Vec<u64> = c.live();
    let leader = c.wait_leader_among(&pair, SECS(15)).await;
    let survivor = *pair.iter().find(|id| **id != leader).unwrap();
    c.kill(leader);
    let acked = load.stop().await;
    c.kill(survivor);
    for id in [gone, leader] {
        std::fs::remove_dir_all(c.data_dir(id)).unwrap();
    }

    let survey =
        baton(&["--json", "cluster", "recover", "--data-dir", &arg(&c.data_dir(survivor)), "--dry-run"]).await.json();
    let r = baton(&["--json", "cluster", "recover", "--data-dir", &arg(&c.data_dir(survivor))]).await.json();
    println!("survivor before: {survey}\nrecovered: {r}\n{} jobs acknowledged", acked.len());
    assert_eq!(r["applied_index"], survey["last_log_index"], "recover applies the whole log");
    assert_eq!(r["applied_before_index"], survey["applied_index"]);
    assert_eq!(r["node_id"].as_u64(), Some(survivor));
    assert_eq!(r["old_cluster_id"], old_cluster.as_str());
    assert_eq!(r["old_voters"], serde_json::json!([1, 2, 3]));
    let new_cluster = r["cluster_id"].as_str().unwrap().to_string();
    assert_ne!(new_cluster, old_cluster);

    c.spawn(survivor, true);
    assert_eq!(c.wait_leader(SECS(15)).await, survivor);
    let s = status_of(&c, survivor).await;
    assert_eq!(s.cluster_id, new_cluster);
    assert_eq!(s.members.iter().map(|m| m.id).collect::<Vec<_>>(), vec![survivor]);
    c.grow(&[4, 5], &[survivor, 4, 5]).await;
    c.wait_leader(SECS(15)).await;

    // Every acknowledged job was in the survivor's log, and is there.
    let _worker = TestWorker::start(c.live().iter().map(|id| c.api(*id)).collect(), "new-worker", 8, Duration::ZERO);
    for (job, _) in &acked {
        wait_job_done(&c, *job, SECS(60)).await;
    }
    let j = submit(&c, spec("rc", 2, "after-recovery"), SECS(15)).await;
    wait_job_done(&c, j.job_id, SECS(30)).await;
    replicas_agree(&c).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recover_refuses_a_data_dir_a_running_node_holds() {
    let _g = SERIAL.lock().await;
    let c = Cluster::start(1, Opts::default());
    c.wait_leader(SECS(15)).await;
    let r = baton(&["cluster", "recover", "--data-dir", &arg(&c.data_dir(1))]).await;
    assert!(!r.ok, "{r:?}");
    assert!(r.stderr.contains("in use by another process"), "{r:?}");
    let r = baton(&[
        "cluster",
        "restore",
        "--from",
        &arg(&c.dir.path().join("none.bak")),
        "--data-dir",
        &arg(&c.data_dir(1)),
    ])
    .await;
    assert!(!r.ok && r.stderr.contains("none.bak"), "{r:?}");
    // The node did not notice.
    assert_eq!(c.wait_leader(SECS(5)).await, 1);
}
