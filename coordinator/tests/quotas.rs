//! Tenancy against a real 3-node cluster: each namespace quota (live tasks,
//! payload bytes, submits per second) refuses with RESOURCE_EXHAUSTED,
//! QUOTA_EXCEEDED, the quota's name and a retry-after hint, and changes
//! nothing; once tasks finish, submits go through again. Idempotency keys
//! are scoped per namespace.

mod common;

use std::time::{Duration, Instant};

use baton_client::error::{ERROR_CODE_HEADER, QUOTA_HEADER, RETRY_AFTER_HEADER, codes};
use baton_client::{Client, ClientConfig, Error, QuotaUpdate, TaskContext, TaskError, Worker, proto};
use common::*;

static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
const SECS: fn(u64) -> Duration = Duration::from_secs;
/// Bound for what the cluster does on its own: only a real stall fails.
const PATIENCE: Duration = Duration::from_secs(30);

fn client(c: &Cluster) -> Client {
    let mut cfg = ClientConfig::new(c.endpoints());
    cfg.deadline = SECS(30);
    cfg.rpc_timeout = SECS(3);
    Client::new(cfg).unwrap()
}

fn job(ns: &str, shards: usize, bytes: usize) -> proto::JobSpec {
    proto::JobSpec {
        namespace: ns.into(),
        payloads: vec![vec![b'x'; bytes]; shards],
        attempt_timeout_ms: 60_000,
        max_attempts: 1,
        ..Default::default()
    }
}

async fn jobs_in(cl: &Client, ns: &str) -> usize {
    cl.list_all(proto::ListJobsRequest { namespace: ns.into(), ..Default::default() }).await.unwrap().len()
}

/// The quota a refusal names, after checking it is one.
fn quota_of(e: &Error) -> String {
    match e {
        Error::QuotaExceeded { quota, retry_after, .. } => {
            assert!(retry_after.is_some_and(|d| d > Duration::ZERO), "no retry-after hint: {e:?}");
            assert_eq!(e.code(), Some(codes::QUOTA_EXCEEDED));
            quota.clone()
        }
        e => panic!("not a quota refusal: {e:?}"),
    }
}

/// A submit straight to node `id` (the leader or a follower that forwards):
/// the raw status, to check the wire form.
async fn raw_submit(c: &Cluster, id: u64, spec: proto::JobSpec) -> Result<u64, tonic::Status> {
    let mut jobs = c.jobs(id).await;
    jobs.submit_job(proto::SubmitJobRequest { spec: Some(spec) }).await.map(|r| r.into_inner().job_id)
}

fn worker(c: &Cluster) -> tokio::task::JoinHandle<()> {
    let w = Worker::builder()
        .endpoints(c.endpoints())
        .name("quota-worker")
        .capacity(8)
        .handler(|_ctx: TaskContext| async move { Ok::<_, TaskError>(b"ok".to_vec()) })
        .build()
        .unwrap();
    tokio::spawn(async move {
        let _ = w.run(futures::future::pending()).await;
    })
}

async fn wait_idle(cl: &Client, ns: &str) {
    let deadline = Instant::now() + PATIENCE;
    loop {
        let n = cl.namespace(ns).await.unwrap();
        if n.live_tasks == 0 {
            return;
        }
        assert!(Instant::now() < deadline, "{ns} still has live tasks: {n:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_quota_refuses_with_resource_exhausted_and_changes_nothing() {
    let _g = SERIAL.lock().await;
    let c = Cluster::start(3, Opts::default());
    let leader = c.wait_leader(SECS(15)).await;
    let follower = c.live().into_iter().find(|n| *n != leader).unwrap();
    let cl = client(&c);

    // Live tasks: no worker yet, so submitted shards stay pending.
    let n = cl.set_namespace_quota("q-live", QuotaUpdate { live_tasks: Some(3), ..Default::default() }).await.unwrap();
    assert_eq!((n.quota_live_tasks, n.live_tasks), (3, 0));
    cl.submit(job("q-live", 2, 1)).await.unwrap();
    let e = cl.submit(job("q-live", 2, 1)).await.unwrap_err();
    assert_eq!(quota_of(&e), "live_tasks");
    // On the wire, through a follower that forwards it too.
    for node in [leader, follower] {
        let s = raw_submit(&c, node, job("q-live", 2, 1)).await.unwrap_err();
        assert_eq!(s.code(), tonic::Code::ResourceExhausted, "node {node}: {s:?}");
        let md = |k: &str| s.metadata().get(k).and_then(|v| v.to_str().ok()).map(str::to_string);
        assert_eq!(md(ERROR_CODE_HEADER).as_deref(), Some(codes::QUOTA_EXCEEDED), "node {node}");
        assert_eq!(md(QUOTA_HEADER).as_deref(), Some("live_tasks"), "node {node}");
        assert!(md(RETRY_AFTER_HEADER).and_then(|v| v.parse::<u64>().ok()).is_some_and(|ms| ms > 0));
    }
    assert_eq!(jobs_in(&cl, "q-live").await, 1, "a refused submit created a job");
    let n = cl.namespace("q-live").await.unwrap();
    assert_eq!((n.quota_live_tasks, n.live_tasks), (3, 2));

    // Payload bytes of live jobs.
    cl.set_namespace_quota("q-bytes", QuotaUpdate { payload_bytes: Some(100), ..Default::default() }).await.unwrap();
    cl.submit(job("q-bytes", 2, 30)).await.unwrap();
    let e = cl.submit(job("q-bytes", 1, 41)).await.unwrap_err();
    assert_eq!(quota_of(&e), "payload_bytes");
    assert_eq!(jobs_in(&cl, "q-bytes").await, 1);
    assert_eq!(cl.namespace("q-bytes").await.unwrap().payload_bytes, 60);

    // Submits per second: one batch is admitted in one go, so with 1/s
    // exactly one of its items gets through, whatever the machine's pace.
    cl.set_namespace_quota("q-rate", QuotaUpdate { submits_per_sec: Some(1), ..Default::default() }).await.unwrap();
    let items = cl.submit_batch(vec![job("q-rate", 1, 1), job("q-rate", 1, 1), job("q-rate", 1, 1)]).await.unwrap();
    assert_eq!(items.iter().filter(|r| r.is_ok()).count(), 1, "{items:?}");
    for e in items.iter().filter_map(|r| r.as_ref().err()) {
        assert_eq!(quota_of(e), "submits_per_sec");
    }
    assert_eq!(jobs_in(&cl, "q-rate").await, 1);
    // A client that allows quota retries waits the hint and gets the next
    // token (the default client above returned the refusal at once).
    let mut cfg = ClientConfig::new(c.endpoints());
    cfg.quota_retries = 3;
    Client::new(cfg).unwrap().submit(job("q-rate", 1, 1)).await.unwrap();
    assert_eq!(jobs_in(&cl, "q-rate").await, 2);

    // Once the tasks finish, the state quotas have room again.
    let _w = worker(&c);
    wait_idle(&cl, "q-live").await;
    wait_idle(&cl, "q-bytes").await;
    cl.submit(job("q-live", 3, 1)).await.unwrap();
    cl.submit(job("q-bytes", 1, 100)).await.unwrap();
    // Cleared, the namespace is unlimited.
    let n = cl.set_namespace_quota("q-live", QuotaUpdate { clear: true, ..Default::default() }).await.unwrap();
    assert_eq!(n.quota_live_tasks, 0);
    cl.submit(job("q-live", 10, 1)).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_idempotency_key_in_two_namespaces_makes_two_jobs() {
    let _g = SERIAL.lock().await;
    let c = Cluster::start(3, Opts::default());
    c.wait_leader(SECS(15)).await;
    let a = submit(&c, spec("tenant-a", 1, "shared-key"), PATIENCE).await;
    let b = submit(&c, spec("tenant-b", 1, "shared-key"), PATIENCE).await;
    assert!(!b.duplicate && a.job_id != b.job_id, "tenant-b got tenant-a's job {}", a.job_id);
    assert_eq!(get_job(&c, a.job_id, PATIENCE).await.namespace, "tenant-a");
    assert_eq!(get_job(&c, b.job_id, PATIENCE).await.namespace, "tenant-b");
    // Within a namespace the key still dedups, and a conflict names only
    // that namespace's job.
    let again = submit(&c, spec("tenant-b", 1, "shared-key"), PATIENCE).await;
    assert_eq!((again.job_id, again.duplicate), (b.job_id, true));
    let leader = c.wait_leader(SECS(15)).await;
    let s = raw_submit(&c, leader, spec("tenant-b", 2, "shared-key")).await.unwrap_err();
    assert_eq!(s.code(), tonic::Code::FailedPrecondition, "{s:?}");
    assert!(s.message().contains(&format!("job {}", b.job_id)), "{}", s.message());
    assert!(!s.message().contains(&format!("job {}", a.job_id)), "names another tenant's job: {}", s.message());
}
