//! The leader's liveness under clock skew and at the size limits, on real
//! `baton serve` processes.

mod common;

use std::time::{Duration, Instant};

use baton_client::proto;
use baton_client::proto::worker_message::Msg as In;
use baton_raft_store::limits::{MAX_JOB_PAYLOAD_BYTES, MAX_PAYLOAD_BYTES, MAX_RESULT_BYTES};
use common::*;

/// One cluster at a time: the machine has two cores and the leases are short.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

const SECS: fn(u64) -> Duration = Duration::from_secs;

/// Wait until `f` returns Some, or fail after `timeout` with `what`.
async fn until<T>(timeout: Duration, what: &str, c: &Cluster, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(x) = f() {
            return x;
        }
        assert!(Instant::now() < deadline, "{what} within {timeout:?}\n{}", c.logs());
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Kill and restart leaders until node `want` leads.
async fn make_leader(c: &mut Cluster, want: u64) {
    for _ in 0..20 {
        let l = c.wait_leader(SECS(15)).await;
        if l == want {
            return;
        }
        c.kill(l);
        let others: Vec<u64> = c.live();
        c.wait_leader_among(&others, SECS(15)).await;
        c.spawn(l, false);
        c.wait_leader(SECS(15)).await;
    }
    panic!("node {want} never became leader\n{}", c.logs());
}

async fn terms(c: &Cluster) -> Vec<u64> {
    let mut out = Vec::new();
    for id in c.live() {
        out.push(c.status(id).await.map_or(0, |s| s.term));
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_60s_behind_its_peers_dispatches_new_and_requeued_work_within_1s() {
    let _g = SERIAL.lock().await;
    assert!(
        std::process::Command::new("faketime").arg("--version").output().is_ok(),
        "this test runs a node under `faketime`: apt-get install faketime (the README's test command installs it)"
    );
    let mut opts = Opts::default();
    // Node 3's wall clock is 60 s behind; its monotonic clock is not faked.
    opts.wrap.insert(3, vec!["faketime".into(), "-f".into(), "-60s".into()]);
    opts.env.push(("FAKETIME_DONT_FAKE_MONOTONIC".into(), "1".into()));
    let mut c = Cluster::start(3, opts);
    let first = c.wait_leader(SECS(15)).await;
    if first == 3 {
        // Let a true-time node stamp the log first.
        make_leader(&mut c, 1).await;
    }
    // A true-time leader stamps the log: log time is now ~60 s ahead of node 3.
    let warm = submit(&c, spec("warm", 1, "warm"), SECS(10)).await;
    let mut client = c.jobs(c.wait_leader(SECS(10)).await).await;
    client.cancel_job(proto::CancelJobRequest { job_id: warm.job_id, reason: "warm-up".into() }).await.unwrap();
    make_leader(&mut c, 3).await;

    let w = TestWorker::start(c.endpoints(), "w", 4, Duration::from_secs(3600));
    w.hold.store(true, std::sync::atomic::Ordering::SeqCst);
    until(SECS(10), "worker registered", &c, || *w.session.lock().unwrap()).await;

    let mut s = spec("skew", 1, "skewed-leader");
    s.backoff_base_ms = 100;
    s.backoff_max_ms = 100;
    let submitted = Instant::now();
    let job = submit(&c, s, SECS(10)).await.job_id;
    let (_, _, token, at) =
        until(SECS(70), "new work dispatched", &c, || w.assigned().into_iter().find(|a| a.0 == job)).await;
    let took = at.duration_since(submitted);
    assert!(took < SECS(1), "new work waited {took:?} on a leader whose clock is 60 s behind");

    // The attempt fails; its retry is ready 100 ms later, in log time.
    w.send(In::Fail(proto::Fail {
        task: Some(proto::TaskRef { job_id: job, shard: 0 }),
        token,
        error: "retry me".into(),
        retryable: true,
        log_chunk: None,
    }));
    let failed = until(SECS(10), "failure acknowledged", &c, || {
        w.acks().iter().any(|a| a.0 == job && a.2 == token).then(Instant::now)
    })
    .await;
    let (_, _, _, again) = until(SECS(70), "requeued work dispatched", &c, || {
        w.assigned().into_iter().find(|a| a.0 == job && a.2 > token)
    })
    .await;
    let took = again.duration_since(failed);
    assert!(took < SECS(1), "requeued work waited {took:?} (backoff 100 ms)");
    assert_eq!(c.wait_leader(SECS(5)).await, 3, "node 3 led throughout");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jobs_and_results_at_the_size_limits_replicate_without_a_leader_change() {
    let _g = SERIAL.lock().await;
    let c = Cluster::start(3, Opts::default());
    c.wait_leader(SECS(15)).await;
    // Let the cluster settle before taking the term.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let before = terms(&c).await;

    // The documented maximum: MAX_JOB_PAYLOAD_BYTES in all, in at least 16
    // shards of at most MAX_PAYLOAD_BYTES each.
    let shards = (MAX_JOB_PAYLOAD_BYTES / MAX_PAYLOAD_BYTES).max(16) as u32;
    let max_job = |key: &str| {
        let mut s = spec("big", shards, key);
        s.payloads = (0..shards).map(|i| vec![i as u8; MAX_JOB_PAYLOAD_BYTES / shards as usize]).collect();
        s
    };
    // One job at the documented maximum, then several at once (the batcher
    // must not put them in one entry), then small ones.
    let t = Instant::now();
    let first = submit(&c, max_job("big-0"), SECS(5)).await;
    assert!(!first.duplicate);
    let many: Vec<_> = (1..=4).map(|i| submit(&c, max_job(&format!("big-{i}")), SECS(5))).collect();
    for r in futures::future::join_all(many).await {
        assert!(!r.duplicate);
    }
    for i in 0..20 {
        let r = submit(&c, spec("small", 1, &format!("small-{i}")), SECS(5)).await;
        assert!(!r.duplicate);
    }
    eprintln!("5 jobs of {MAX_JOB_PAYLOAD_BYTES} bytes and 20 small ones acknowledged in {:?}", t.elapsed());

    // Just over the limit: refused at the edge, naming the field.
    let mut over = spec("big", 1, "over");
    over.payloads = vec![vec![0; MAX_JOB_PAYLOAD_BYTES + 1]];
    let leader = c.wait_leader(SECS(5)).await;
    let err = c.jobs(leader).await.submit_job(proto::SubmitJobRequest { spec: Some(over) }).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument, "{err:?}");
    assert!(err.message().contains("payloads"), "{err:?}");

    // A worker returns the largest result, then one byte more.
    let w = TestWorker::start(c.endpoints(), "w", 64, Duration::from_secs(3600));
    w.hold.store(true, std::sync::atomic::Ordering::SeqCst);
    let (job, shard, token, _) =
        until(SECS(10), "an assignment", &c, || w.assigned().into_iter().find(|a| a.0 == first.job_id)).await;
    let complete = |shard: u32, token: u64, n: usize| {
        In::Complete(proto::Complete {
            task: Some(proto::TaskRef { job_id: job, shard }),
            token,
            result: vec![7; n],
            log_chunk: None,
        })
    };
    w.send(complete(shard, token, MAX_RESULT_BYTES));
    let status = until(SECS(5), "the largest result acknowledged", &c, || {
        w.acks().iter().find(|a| a.0 == job && a.1 == shard).map(|a| a.3)
    })
    .await;
    assert_eq!(status, proto::ReportStatus::Accepted as i32);
    let (_, shard2, token2, _) =
        until(SECS(10), "a second assignment", &c, || w.assigned().into_iter().find(|a| a.0 == job && a.1 != shard))
            .await;
    w.send(complete(shard2, token2, MAX_RESULT_BYTES + 1));
    let status = until(SECS(5), "the oversized result answered", &c, || {
        w.acks().iter().find(|a| a.0 == job && a.1 == shard2).map(|a| a.3)
    })
    .await;
    assert_eq!(status, proto::ReportStatus::Rejected as i32, "refused at the edge, nothing proposed");

    let after = terms(&c).await;
    assert_eq!(before, after, "the term changed: a leader was deposed\n{}", c.logs());
}

/// Processes whose command line names `dir` (a node's data dir).
fn processes_using(dir: &std::path::Path) -> Vec<String> {
    let needle = dir.to_string_lossy().into_owned();
    let mut out = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(cmd) = std::fs::read(e.path().join("cmdline")) else { continue };
        let cmd = String::from_utf8_lossy(&cmd).replace('\0', " ");
        if cmd.contains(&needle) && cmd.contains(" serve ") {
            out.push(format!("{}: {cmd}", e.file_name().to_string_lossy()));
        }
    }
    out
}

/// A node run under a wrapper that forks (as `faketime` does) is stopped,
/// wrapper and node, when the test kills it or drops the cluster: a node
/// left behind holds ports and CPU and skews what runs after it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_under_a_forking_wrapper_leaves_no_process_behind() {
    let _g = SERIAL.lock().await;
    let mut opts = Opts::default();
    // `sh -c '"$@"; exit $?'` runs the node as its child, like faketime.
    let wrap = |_| vec!["sh".to_string(), "-c".into(), "\"$@\"; exit $?".into(), "sh".into()];
    opts.wrap.insert(1, wrap(1));
    opts.wrap.insert(2, wrap(2));
    let mut c = Cluster::start(3, opts);
    c.wait_leader(SECS(15)).await;
    let (dir1, dir2) = (c.data_dir(1), c.data_dir(2));
    assert_eq!(processes_using(&dir1).len(), 2, "the wrapper and the node: {:?}", processes_using(&dir1));
    c.kill(1);
    assert_eq!(processes_using(&dir1), Vec::<String>::new(), "killed, yet still running");
    drop(c);
    assert_eq!(processes_using(&dir2), Vec::<String>::new(), "the cluster is gone, yet node 2 runs");
}
