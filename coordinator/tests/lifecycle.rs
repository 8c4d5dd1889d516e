//! Job operations, namespace settings, indexed listing and retention against
//! a real 3-node cluster, with real SDK workers (`baton_client::Worker`) and
//! the SDK client, plus the CLI over the same calls.
//!
//! The workers run one handler whose behaviour each shard's payload picks:
//! `ok` succeeds at once, `hold` waits until the test opens the gate (or its
//! attempt is cancelled), `flaky` fails for good while the test says so.

mod common;

use std::collections::BTreeSet;
use std::process::Command as Process;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use baton_client::workflow::{Step, WorkflowBuilder};
use baton_client::{Client, ClientConfig, Error, TaskContext, TaskError, Worker, proto};
use common::*;

static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
const SECS: fn(u64) -> Duration = Duration::from_secs;
/// Generous bound for anything the cluster does on its own (assign, finish,
/// collect): far above what it takes, so only a real stall fails a test.
const PATIENCE: Duration = Duration::from_secs(30);

fn client(c: &Cluster) -> Client {
    let mut cfg = ClientConfig::new(c.endpoints());
    cfg.deadline = SECS(30);
    cfg.rpc_timeout = SECS(3);
    Client::new(cfg).unwrap()
}

/// What the workers saw, shared with the test.
#[derive(Default)]
struct Seen {
    /// (job, shard, attempt, token) of every handler started, in order.
    started: Mutex<Vec<(u64, u32, u32, u64)>>,
    /// (job, shard) of every handler whose attempt was cancelled.
    cancelled: Mutex<Vec<(u64, u32)>>,
}

impl Seen {
    fn started_of(&self, job: u64) -> Vec<(u32, u32, u64)> {
        self.started.lock().unwrap().iter().filter(|s| s.0 == job).map(|s| (s.1, s.2, s.3)).collect()
    }

    fn was_cancelled(&self, job: u64, shard: u32) -> bool {
        self.cancelled.lock().unwrap().contains(&(job, shard))
    }
}

/// The test's levers on the workers.
struct Rig {
    seen: Arc<Seen>,
    /// `hold` shards finish once this is true.
    gate: tokio::sync::watch::Sender<bool>,
    /// `flaky` shards fail (not retryable) while this is true.
    failing: Arc<AtomicBool>,
}

impl Rig {
    fn new() -> Rig {
        Rig { seen: Arc::default(), gate: tokio::sync::watch::channel(false).0, failing: Arc::default() }
    }

    fn open_gate(&self) {
        self.gate.send_replace(true);
    }

    /// Start an SDK worker running the payload-driven handler.
    fn worker(&self, c: &Cluster, name: &str, capacity: u32) -> tokio::task::JoinHandle<()> {
        let (seen, gate, failing) = (self.seen.clone(), self.gate.subscribe(), self.failing.clone());
        let worker = Worker::builder()
            .endpoints(c.endpoints())
            .name(name)
            .capacity(capacity)
            .handler(move |ctx: TaskContext| {
                let (seen, mut gate, failing) = (seen.clone(), gate.clone(), failing.clone());
                async move {
                    seen.started.lock().unwrap().push((ctx.job_id, ctx.shard, ctx.attempt, ctx.token));
                    ctx.info(format!("token {}", ctx.token));
                    match ctx.payload.as_slice() {
                        b"hold" => {
                            let cancel = ctx.cancellation();
                            tokio::select! {
                                _ = cancel.cancelled() => {
                                    seen.cancelled.lock().unwrap().push((ctx.job_id, ctx.shard));
                                    return Err(TaskError::retryable("cancelled"));
                                }
                                _ = gate.wait_for(|open| *open) => {}
                            }
                        }
                        b"flaky" if failing.load(Ordering::SeqCst) => {
                            return Err(TaskError::fatal("failing on purpose"));
                        }
                        _ => {}
                    }
                    Ok(format!("done:{}", ctx.token).into_bytes())
                }
            })
            .build()
            .unwrap();
        tokio::spawn(async move {
            let _ = worker.run(futures::future::pending()).await;
        })
    }
}

fn job(ns: &str, payloads: &[&str]) -> proto::JobSpec {
    proto::JobSpec {
        namespace: ns.into(),
        payloads: payloads.iter().map(|p| p.as_bytes().to_vec()).collect(),
        attempt_timeout_ms: 60_000,
        max_attempts: 1,
        ..Default::default()
    }
}

async fn start(nodes: u64) -> Cluster {
    let c = Cluster::start(nodes, Opts::default());
    c.wait_leader(SECS(15)).await;
    c
}

/// Poll the job until `cond` holds, failing after [`PATIENCE`].
async fn wait_job(cl: &Client, id: u64, what: &str, cond: impl Fn(&proto::Job) -> bool) -> proto::Job {
    let deadline = Instant::now() + PATIENCE;
    loop {
        let j = cl.get(id).await.unwrap_or_else(|e| panic!("job {id}: {e}"));
        if cond(&j) {
            return j;
        }
        assert!(Instant::now() < deadline, "job {id}: {what} not within {PATIENCE:?}: {j:?}");
        tokio::time::sleep(Duration::from_millis(30)).await;
    }
}

async fn wait_done(cl: &Client, id: u64) -> proto::Job {
    wait_job(cl, id, "finished", |j| j.finished_ms != 0).await
}

async fn wait_until(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + PATIENCE;
    while !cond() {
        assert!(Instant::now() < deadline, "{what} not within {PATIENCE:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn counts(j: &proto::Job) -> proto::TaskCounts {
    j.counts.unwrap_or_default()
}

fn status(j: &proto::Job) -> proto::JobStatus {
    proto::JobStatus::try_from(j.status).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_finished_job_is_deleted_from_every_read_and_a_running_one_is_refused() {
    let _g = SERIAL.lock().await;
    let c = start(3).await;
    let cl = client(&c);
    let rig = Rig::new();
    let _w = rig.worker(&c, "w", 4);

    let done = cl.submit(job("del", &["ok", "ok"])).await.unwrap().job_id;
    assert_eq!(status(&wait_done(&cl, done).await), proto::JobStatus::Succeeded);
    let running = cl.submit(job("del", &["hold"])).await.unwrap().job_id;
    wait_job(&cl, running, "running", |j| counts(j).running == 1).await;

    let e = cl.delete_job(running).await.unwrap_err();
    assert!(matches!(e, Error::JobNotFinished(_)), "{e}");
    assert_eq!(e.code(), Some("JOB_NOT_FINISHED"));

    cl.delete_job(done).await.unwrap();
    assert!(matches!(cl.get(done).await, Err(Error::NotFound(_))));
    assert!(matches!(cl.results(done).await, Err(Error::NotFound(_))));
    let listed: Vec<u64> = cl
        .list_all(proto::ListJobsRequest { namespace: "del".into(), ..Default::default() })
        .await
        .unwrap()
        .iter()
        .map(|j| j.id)
        .collect();
    assert_eq!(listed, [running], "the deleted job is still listed");
    let e = cl.delete_job(done).await.unwrap_err();
    assert!(matches!(e, Error::NotFound(_)), "a second delete: {e}");

    // A workflow's job goes with its workflow: neither deleted nor retried alone.
    rig.failing.store(true, Ordering::SeqCst);
    let spec = WorkflowBuilder::new("del", "one-step").step(Step::job("only", job("", &["flaky"]))).build();
    let wf = cl.submit_workflow(spec).await.unwrap().workflow_id;
    let deadline = Instant::now() + PATIENCE;
    let wf_job = loop {
        let w = cl.get_workflow(wf).await.unwrap();
        if w.finished_ms != 0 {
            break w.steps[0].map_job_id;
        }
        assert!(Instant::now() < deadline, "workflow {wf} never finished: {w:?}");
        tokio::time::sleep(Duration::from_millis(30)).await;
    };
    assert_eq!(status(&cl.get(wf_job).await.unwrap()), proto::JobStatus::Failed);
    let e = cl.delete_job(wf_job).await.unwrap_err();
    assert!(matches!(e, Error::JobInWorkflow(_)), "{e}");
    let e = cl.retry_job(wf_job).await.unwrap_err();
    assert!(matches!(e, Error::JobInWorkflow(_)), "{e}");

    rig.open_gate();
    assert_eq!(status(&wait_done(&cl, running).await), proto::JobStatus::Succeeded);
    cl.delete_job(running).await.unwrap();
    assert!(matches!(cl.get(running).await, Err(Error::NotFound(_))));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retrying_a_failed_job_reruns_its_dead_shards_and_fences_the_old_attempts() {
    let _g = SERIAL.lock().await;
    let c = start(3).await;
    let cl = client(&c);
    let rig = Rig::new();
    rig.failing.store(true, Ordering::SeqCst);
    let _w = rig.worker(&c, "w", 4);

    let id = cl.submit(job("retry", &["ok", "flaky", "flaky"])).await.unwrap().job_id;
    let failed = wait_done(&cl, id).await;
    assert_eq!(status(&failed), proto::JobStatus::Failed);
    assert_eq!((counts(&failed).succeeded, counts(&failed).dead), (1, 2));
    let before = cl.results(id).await.unwrap();
    assert_eq!(before[1].status, proto::TaskStatus::Dead as i32);
    let old_token = before[1].token;

    rig.failing.store(false, Ordering::SeqCst);
    assert_eq!(cl.retry_job(id).await.unwrap(), 2);
    let retried = wait_done(&cl, id).await;
    assert_eq!(status(&retried), proto::JobStatus::Succeeded, "{retried:?}");
    assert!(retried.expires_ms > retried.finished_ms, "finished again, so due for deletion again: {retried:?}");
    let after = cl.results(id).await.unwrap();
    for shard in [1, 2] {
        let (b, a) = (&before[shard], &after[shard]);
        assert_eq!(a.status, proto::TaskStatus::Succeeded as i32);
        assert!(a.token > b.token, "shard {shard}: a fresh attempt has a larger token: {b:?} -> {a:?}");
        assert_eq!(a.attempts, 1, "shard {shard}: a fresh attempt budget: {a:?}");
        assert_eq!(a.result, format!("done:{}", a.token).into_bytes());
    }
    assert_eq!(after[0], before[0], "the succeeded shard did not run again");
    // Attempt numbers start again after a retry; each attempt keeps its own
    // lines (they rode in its report), in grant order.
    let logs = cl.task_logs(id, 1, Some(1)).await.unwrap();
    let kept: Vec<(u32, u64, Vec<String>)> =
        logs.logs.iter().map(|r| (r.attempt, r.token, r.lines.iter().map(|l| l.message.clone()).collect())).collect();
    let line = |t: u64| vec![format!("token {t}")];
    assert_eq!(kept, [(1, old_token, line(old_token)), (1, after[1].token, line(after[1].token))]);
    assert_eq!(rig.seen.started_of(id).iter().filter(|s| s.0 == 0).count(), 1);

    // A report from the old attempt is fenced.
    let stale = TestWorker::start(c.endpoints(), "stale", 1, Duration::ZERO);
    stale.complete(id, 1, old_token, "stale");
    wait_until("an ack of the stale report", || stale.acks().iter().any(|a| a.0 == id && a.2 == old_token)).await;
    let ack = stale.acks().into_iter().find(|a| a.0 == id && a.2 == old_token).unwrap();
    assert_eq!(ack.3, proto::ReportStatus::Fenced as i32, "{ack:?}");
    assert_eq!(cl.results(id).await.unwrap()[1], after[1]);

    let e = cl.retry_job(id).await.unwrap_err();
    assert!(matches!(e, Error::NothingToRetry(_)), "{e}");
    assert!(matches!(cl.retry_job(424_242).await, Err(Error::NotFound(_))));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancelling_one_shard_stops_its_attempt_on_the_worker_and_the_job_ends_failed() {
    let _g = SERIAL.lock().await;
    let c = start(3).await;
    let cl = client(&c);
    let rig = Rig::new();
    let _w = rig.worker(&c, "w", 4);

    let id = cl.submit(job("cancel", &["hold", "hold", "hold"])).await.unwrap().job_id;
    wait_until("three running attempts", || rig.seen.started_of(id).len() == 3).await;
    wait_job(&cl, id, "three running", |j| counts(j).running == 3).await;

    assert!(matches!(cl.cancel_task(id, 99, "no such shard").await, Err(Error::NotFound(_))));
    let r = cl.cancel_task(id, 1, "not needed").await.unwrap();
    assert!(r.was_running && !r.job_finished, "{r:?}");
    wait_until("the worker told to stop shard 1", || rig.seen.was_cancelled(id, 1)).await;
    let j = cl.get(id).await.unwrap();
    assert_eq!((counts(&j).running, counts(&j).cancelled), (2, 1), "{j:?}");
    assert_eq!(j.finished_ms, 0, "the other shards go on");

    rig.open_gate();
    let j = wait_done(&cl, id).await;
    assert_eq!(status(&j), proto::JobStatus::Failed, "a cancelled shard did not succeed: {j:?}");
    assert_eq!((counts(&j).succeeded, counts(&j).cancelled), (2, 1));
    assert!(j.cancel_reason.is_empty(), "the job itself was not cancelled");
    let results = cl.results(id).await.unwrap();
    assert_eq!(results[1].status, proto::TaskStatus::Cancelled as i32);
    assert!(results[1].result.is_empty());
    assert!(!rig.seen.was_cancelled(id, 0) && !rig.seen.was_cancelled(id, 2));
    assert_eq!(rig.seen.started_of(id).len(), 3, "the cancelled shard never ran again");
    assert!(matches!(cl.cancel_task(id, 0, "late").await, Err(Error::JobFinished(_))));

    // A finished shard of a live job cannot be cancelled; cancelling the
    // last live one finishes the job.
    rig.gate.send_replace(false);
    let id = cl.submit(job("cancel", &["ok", "hold"])).await.unwrap().job_id;
    wait_job(&cl, id, "shard 0 succeeded, shard 1 running", |j| counts(j).succeeded == 1 && counts(j).running == 1)
        .await;
    let e = cl.cancel_task(id, 0, "too late").await.unwrap_err();
    assert!(matches!(e, Error::FailedPrecondition(_)), "{e}");
    let r = cl.cancel_task(id, 1, "stop").await.unwrap();
    assert!(r.was_running && r.job_finished, "{r:?}");
    let j = cl.get(id).await.unwrap();
    assert_eq!(status(&j), proto::JobStatus::Failed);
    wait_until("the worker told to stop", || rig.seen.was_cancelled(id, 1)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paused_job_starts_no_attempt_lets_running_ones_finish_and_resumes() {
    let _g = SERIAL.lock().await;
    let c = start(3).await;
    let cl = client(&c);
    let rig = Rig::new();
    let _w = rig.worker(&c, "w", 2);

    let id = cl.submit(job("pause", &["hold", "hold", "hold", "hold"])).await.unwrap().job_id;
    wait_until("two running attempts", || rig.seen.started_of(id).len() == 2).await;
    cl.pause_job(id).await.unwrap();
    cl.pause_job(id).await.unwrap();
    assert!(cl.get(id).await.unwrap().paused);

    // The running attempts finish and report.
    rig.open_gate();
    wait_job(&cl, id, "two succeeded", |j| counts(j).succeeded >= 2).await;
    // The worker now has free slots and the scheduler plans on every applied
    // entry: another job running to its end proves rounds went by in which
    // the paused job's shards could have been granted.
    let other = cl.submit(job("pause-other", &["ok", "ok"])).await.unwrap().job_id;
    wait_done(&cl, other).await;
    let j = cl.get(id).await.unwrap();
    assert_eq!((counts(&j).pending, counts(&j).running), (2, 0), "{j:?}");
    assert_eq!(rig.seen.started_of(id).len(), 2, "a paused job started an attempt");
    assert_eq!(status(&j), proto::JobStatus::Running);

    cl.resume_job(id).await.unwrap();
    let j = wait_done(&cl, id).await;
    assert_eq!(status(&j), proto::JobStatus::Succeeded);
    assert!(!j.paused);
    assert_eq!(rig.seen.started_of(id).len(), 4);
    assert!(matches!(cl.pause_job(id).await, Err(Error::JobFinished(_))));
    assert!(matches!(cl.resume_job(424_242).await, Err(Error::NotFound(_))));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paused_namespace_starts_none_of_its_jobs_until_resumed() {
    let _g = SERIAL.lock().await;
    let c = start(3).await;
    let cl = client(&c);
    let rig = Rig::new();
    let _w = rig.worker(&c, "w", 4);

    let fresh = cl.namespace("frozen").await.unwrap();
    assert!(!fresh.paused && fresh.retention_ms == 0 && fresh.effective_retention_ms == 7 * 24 * 3_600_000);
    // A running attempt of the namespace goes on through the pause.
    let running = cl.submit(job("frozen", &["hold"])).await.unwrap().job_id;
    wait_job(&cl, running, "running", |j| counts(j).running == 1).await;
    let n = cl.pause_namespace("frozen").await.unwrap();
    assert!(n.paused && n.namespace == "frozen", "{n:?}");
    assert!(cl.namespace("frozen").await.unwrap().paused);

    let frozen = cl.submit(job("frozen", &["ok", "ok"])).await.unwrap().job_id;
    let thawed = cl.submit(job("thawed", &["ok", "ok"])).await.unwrap().job_id;
    wait_done(&cl, thawed).await;
    rig.open_gate();
    assert_eq!(status(&wait_done(&cl, running).await), proto::JobStatus::Succeeded);
    let j = cl.get(frozen).await.unwrap();
    assert_eq!((counts(&j).pending, status(&j)), (2, proto::JobStatus::Queued), "{j:?}");
    assert!(j.namespace_paused && !j.paused, "{j:?}");
    assert!(rig.seen.started_of(frozen).is_empty());

    let n = cl.resume_namespace("frozen").await.unwrap();
    assert!(!n.paused);
    let j = wait_done(&cl, frozen).await;
    assert_eq!(status(&j), proto::JobStatus::Succeeded);
    assert!(!j.namespace_paused);
    let e = cl.pause_namespace("").await.unwrap_err();
    assert!(matches!(e, Error::InvalidArgument(_)), "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_raised_priority_is_granted_first_when_a_slot_frees() {
    let _g = SERIAL.lock().await;
    let c = start(3).await;
    let cl = client(&c);
    let rig = Rig::new();
    let _w = rig.worker(&c, "w", 1);

    let blocker = cl.submit(job("prio", &["hold"])).await.unwrap().job_id;
    wait_job(&cl, blocker, "running", |j| counts(j).running == 1).await;
    // Equal priorities would run the older job first.
    let low = cl.submit(job("prio", &["ok"])).await.unwrap().job_id;
    let raised = cl.submit(job("prio", &["ok"])).await.unwrap().job_id;
    cl.set_priority(raised, 10).await.unwrap();
    assert_eq!(cl.get(raised).await.unwrap().priority, 10);
    rig.open_gate();
    wait_done(&cl, low).await;
    wait_done(&cl, raised).await;
    let order: Vec<u64> = rig.seen.started.lock().unwrap().iter().map(|s| s.0).collect();
    assert_eq!(order, [blocker, raised, low], "start order");
    assert!(matches!(cl.set_priority(raised, 1).await, Err(Error::JobFinished(_))));
}

/// Pages of `req` one by one, checking each page's size and token.
async fn pages(cl: &Client, mut req: proto::ListJobsRequest) -> Vec<u64> {
    let mut out = Vec::new();
    loop {
        let page = cl.list(req.clone()).await.unwrap();
        assert!(page.jobs.len() <= req.page_size as usize, "page over its size: {}", page.jobs.len());
        out.extend(page.jobs.iter().map(|j| j.id));
        if page.next_page_token == 0 {
            return out;
        }
        assert_eq!(Some(page.next_page_token), page.jobs.last().map(|j| j.id), "the token is the last id");
        req.page_token = page.next_page_token;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listing_pages_by_namespace_and_status_in_both_orders_without_gaps_or_repeats() {
    let _g = SERIAL.lock().await;
    let c = start(3).await;
    let cl = client(&c);
    // No workers: jobs stay queued unless cancelled.
    let mut jobs = Vec::new();
    for i in 0..14u32 {
        let ns = if i % 2 == 0 { "list-a" } else { "list-b" };
        let id = cl.submit(job(ns, &["ok"])).await.unwrap().job_id;
        let cancelled = i % 3 == 0;
        if cancelled {
            cl.cancel(id, "listing test").await.unwrap();
        }
        jobs.push((id, ns, cancelled));
    }
    let ids: Vec<u64> = jobs.iter().map(|j| j.0).collect();
    assert!(ids.windows(2).all(|w| w[0] < w[1]), "job ids grow with creation: {ids:?}");

    let queued = proto::JobStatus::Queued as i32;
    let cancelled = proto::JobStatus::Cancelled as i32;
    for namespace in ["", "list-a", "list-b", "list-none"] {
        for status in [0, queued, cancelled] {
            for newest_first in [false, true] {
                for page_size in [1, 2, 3, 100] {
                    let mut want: Vec<u64> = jobs
                        .iter()
                        .filter(|(_, ns, c)| {
                            (namespace.is_empty() || *ns == namespace) && (status == 0 || (status == cancelled) == *c)
                        })
                        .map(|j| j.0)
                        .collect();
                    if newest_first {
                        want.reverse();
                    }
                    let req = proto::ListJobsRequest {
                        namespace: namespace.into(),
                        status,
                        page_size,
                        newest_first,
                        ..Default::default()
                    };
                    let got = pages(&cl, req.clone()).await;
                    let what = format!("ns {namespace:?} status {status} newest {newest_first} size {page_size}");
                    assert_eq!(got, want, "{what}");
                    assert_eq!(got.iter().collect::<BTreeSet<_>>().len(), got.len(), "{what}: repeats");
                    let all: Vec<u64> = cl.list_all(req).await.unwrap().iter().map(|j| j.id).collect();
                    assert_eq!(all, want, "{what}: list_all");
                }
            }
        }
    }
    // Listed jobs carry their status and namespace.
    let page = cl
        .list(proto::ListJobsRequest {
            namespace: "list-b".into(),
            status: cancelled,
            newest_first: true,
            page_size: 1,
            ..Default::default()
        })
        .await
        .unwrap();
    let j = &page.jobs[0];
    assert_eq!((j.namespace.as_str(), j.status), ("list-b", cancelled));
    assert_eq!(j.id, jobs.iter().rev().find(|(_, ns, c)| *ns == "list-b" && *c).unwrap().0);
    // A token is a job id: a listing can start after any job.
    let mid = ids[6];
    let older =
        pages(&cl, proto::ListJobsRequest { page_size: 4, page_token: mid, newest_first: true, ..Default::default() })
            .await;
    assert_eq!(older, ids[..6].iter().rev().copied().collect::<Vec<_>>());
    let bad = cl.list(proto::ListJobsRequest { page_size: 1001, ..Default::default() }).await.unwrap_err();
    assert!(matches!(bad, Error::InvalidArgument(_)), "{bad}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_finished_job_disappears_once_its_retention_has_passed() {
    let _g = SERIAL.lock().await;
    let c = start(3).await;
    let cl = client(&c);
    let rig = Rig::new();
    let _w = rig.worker(&c, "w", 4);

    let mut spec = job("keep", &["ok", "ok"]);
    spec.retention_ms = 1000;
    let short = cl.submit(spec).await.unwrap().job_id;
    let kept = cl.submit(job("keep", &["ok"])).await.unwrap().job_id;
    let n = cl.set_namespace_retention("brief", Some(Duration::from_millis(1500))).await.unwrap();
    assert_eq!((n.retention_ms, n.effective_retention_ms), (1500, 1500));
    let by_namespace = cl.submit(job("brief", &["ok"])).await.unwrap().job_id;

    let j = wait_done(&cl, short).await;
    assert_eq!(j.retention_ms, 1000);
    assert_eq!(j.expires_ms, j.finished_ms + 1000, "{j:?}");
    let k = wait_done(&cl, kept).await;
    assert_eq!(k.expires_ms, k.finished_ms + 7 * 24 * 3_600_000, "the default retention: {k:?}");
    let b = wait_done(&cl, by_namespace).await;
    assert_eq!(b.expires_ms, b.finished_ms + 1500, "the namespace's retention: {b:?}");

    for id in [short, by_namespace] {
        let deadline = Instant::now() + PATIENCE;
        loop {
            match cl.get(id).await {
                Err(Error::NotFound(_)) => break,
                Ok(j) => assert!(Instant::now() < deadline, "job {id} outlived its retention: {j:?}"),
                Err(e) => panic!("job {id}: {e}"),
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert!(matches!(cl.results(id).await, Err(Error::NotFound(_))));
    }
    let left: Vec<u64> = cl.list_all(proto::ListJobsRequest::default()).await.unwrap().iter().map(|j| j.id).collect();
    assert_eq!(left, [kept]);
    let n = cl.set_namespace_retention("brief", None).await.unwrap();
    assert_eq!((n.retention_ms, n.effective_retention_ms), (0, 7 * 24 * 3_600_000));
    let e = cl.set_namespace_retention("brief", Some(Duration::from_secs(367 * 86_400))).await.unwrap_err();
    assert!(matches!(e, Error::InvalidArgument(_)), "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_is_remembered_for_its_namespace_window_only() {
    let _g = SERIAL.lock().await;
    let c = start(3).await;
    let cl = client(&c);

    let fresh = cl.namespace("quick").await.unwrap();
    assert_eq!((fresh.idempotency_window_ms, fresh.effective_idempotency_window_ms), (0, 24 * 3_600_000));
    let n = cl.set_namespace_idempotency_window("quick", Some(SECS(2))).await.unwrap();
    assert_eq!((n.idempotency_window_ms, n.effective_idempotency_window_ms), (2_000, 2_000));
    let mut spec = job("quick", &["ok"]);
    spec.idempotency_key = "K".into();
    let first = cl.submit(spec.clone()).await.unwrap();
    assert!(!first.duplicate);
    let again = cl.submit(spec.clone()).await.unwrap();
    assert_eq!((again.job_id, again.duplicate), (first.job_id, true));
    // Log time follows the leader's clock: past the window the key is free.
    tokio::time::sleep(Duration::from_millis(2_500)).await;
    let later = cl.submit(spec).await.unwrap();
    assert!(!later.duplicate && later.job_id != first.job_id, "{later:?} after {first:?}");

    for bad in [Duration::from_millis(999), SECS(7 * 86_400 + 1)] {
        let e = cl.set_namespace_idempotency_window("quick", Some(bad)).await.unwrap_err();
        assert!(matches!(e, Error::InvalidArgument(_)) && e.to_string().contains("idempotency_window_ms"), "{e}");
    }
    let n = cl.set_namespace_idempotency_window("quick", None).await.unwrap();
    assert_eq!((n.idempotency_window_ms, n.effective_idempotency_window_ms), (0, 24 * 3_600_000));
}

fn baton(args: &[&str], endpoints: &str) -> (bool, String, String) {
    let out = Process::new(BIN).args(args).args(["--endpoints", endpoints]).output().unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn baton_json(args: &[&str], endpoints: &str) -> serde_json::Value {
    let mut a = args.to_vec();
    a.push("--json");
    let (ok, out, err) = baton(&a, endpoints);
    assert!(ok, "baton {args:?} failed: {err}");
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("baton {args:?} printed no JSON ({e}): {out}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_runs_every_job_operation_and_namespace_command() {
    let _g = SERIAL.lock().await;
    let c = start(3).await;
    let cl = client(&c);
    let eps = c.ports.values().map(|p| format!("127.0.0.1:{}", p.api)).collect::<Vec<_>>().join(",");
    // No workers: the job stays queued until the end.
    let older = cl.submit(job("cli-ops", &["ok"])).await.unwrap().job_id;
    let id = cl.submit(job("cli-ops", &["ok", "ok"])).await.unwrap().job_id;
    let (id_s, older_s) = (id.to_string(), older.to_string());
    tokio::task::spawn_blocking(move || {
        let e = eps.as_str();
        assert_eq!(baton_json(&["job", "pause", &id_s], e), serde_json::json!({"job_id": id, "paused": true}));
        let j = baton_json(&["job", "get", &id_s], e);
        assert_eq!((j["paused"].clone(), j["namespace_paused"].clone()), (true.into(), false.into()), "{j}");
        assert_eq!(j["expires_ms"], serde_json::Value::Null);
        baton_json(&["job", "resume", &id_s], e);
        assert_eq!(baton_json(&["job", "get", &id_s], e)["paused"], false);
        assert_eq!(baton_json(&["job", "priority", &id_s, "-5"], e)["priority"], -5);
        assert_eq!(baton_json(&["job", "get", &id_s], e)["priority"], -5);

        let (ok, out, err) = baton(&["job", "delete", &id_s], e);
        assert!(!ok && out.is_empty() && err.trim().lines().count() == 1 && err.contains("cancel it first"), "{err}");

        let r = baton_json(&["job", "cancel-task", &id_s, "--shard", "1"], e);
        assert_eq!((r["was_running"].clone(), r["job_finished"].clone()), (false.into(), false.into()), "{r}");
        let (ok, out, _) = baton(&["job", "cancel-task", &id_s, "--shard", "0"], e);
        assert!(ok && out.contains("the job has finished"), "{out}");
        assert_eq!(baton_json(&["job", "get", &id_s], e)["status"], "failed");
        assert_eq!(baton_json(&["job", "retry", &id_s], e)["tasks_requeued"], 2);
        assert_eq!(baton_json(&["job", "get", &id_s], e)["status"], "queued");
        let (ok, _, err) = baton(&["job", "retry", &id_s], e);
        assert!(!ok && err.contains("no dead or cancelled shard"), "{err}");

        let l = baton_json(&["job", "list", "--namespace", "cli-ops", "--newest", "--limit", "1"], e);
        assert_eq!(l["jobs"][0]["id"], id);
        assert_eq!(l["next_page_token"], id);
        let l = baton_json(&["job", "list", "--namespace", "cli-ops", "--newest", "--after", &id_s], e);
        assert_eq!(l["jobs"][0]["id"], older);
        assert_eq!(l["next_page_token"], 0);
        let (ok, out, _) = baton(&["job", "list", "--namespace", "cli-ops", "--limit", "1"], e);
        assert!(ok && out.contains(&format!("--after {older_s}")), "a table says how to go on: {out}");
        let l = baton_json(&["job", "list", "--status", "queued", "--namespace", "nobody"], e);
        assert_eq!(l["jobs"].as_array().unwrap().len(), 0);

        let n = baton_json(&["namespace", "pause", "cli-ops"], e);
        assert_eq!(n["paused"], true);
        assert_eq!(baton_json(&["job", "get", &id_s], e)["namespace_paused"], true);
        let n = baton_json(&["namespace", "retention", "cli-ops", "--days", "2"], e);
        assert_eq!(
            (n["retention_ms"].clone(), n["effective_retention_ms"].clone()),
            (172_800_000u64.into(), 172_800_000u64.into())
        );
        let n = baton_json(&["namespace", "idempotency-window", "cli-ops", "--for", "10m"], e);
        assert_eq!(
            (n["idempotency_window_ms"].clone(), n["effective_idempotency_window_ms"].clone()),
            (600_000u64.into(), 600_000u64.into())
        );
        let (ok, out, _) = baton(&["namespace", "show", "cli-ops"], e);
        // The first line; the second is the usage against the quotas.
        assert!(
            ok && out.lines().next().unwrap_or_default()
                == "namespace cli-ops: paused (no new attempts start); finished jobs kept 2d; idempotency keys kept 10m",
            "{out}"
        );
        let n = baton_json(&["namespace", "idempotency-window", "cli-ops", "--default"], e);
        assert_eq!(n["idempotency_window_ms"], serde_json::Value::Null);
        assert_eq!(n["effective_idempotency_window_ms"], 24 * 3_600_000u64);
        let (ok, _, err) = baton(&["namespace", "idempotency-window", "cli-ops", "--for", "500ms"], e);
        assert!(!ok && err.contains("idempotency_window_ms"), "{err}");
        let n = baton_json(&["namespace", "retention", "cli-ops", "--default"], e);
        assert_eq!(n["retention_ms"], serde_json::Value::Null);
        assert_eq!(baton_json(&["namespace", "resume", "cli-ops"], e)["paused"], false);
        let (ok, _, err) = baton(&["namespace", "retention", "cli-ops", "--ms", "0"], e);
        assert!(!ok && err.contains("--default"), "{err}");

        let x = baton_json(&["job", "cancel", &older_s], e);
        assert_eq!(x["tasks_cancelled"], 1);
        assert_eq!(baton_json(&["job", "delete", &older_s], e)["deleted"], true);
        let (ok, _, err) = baton(&["job", "get", &older_s], e);
        assert!(!ok && err.contains("not found"), "{err}");
    })
    .await
    .unwrap();
}

/// openraft's policy counts entries, and the proposer batches commands, so
/// a log can hold a lot before it fires (no snapshot in 460 s of the
/// steady-state benchmark). A node also snapshots, and so can purge its
/// log, once `raft.snapshot_after_log_bytes` of log were appended.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_snapshots_once_enough_log_bytes_were_appended() {
    let _g = SERIAL.lock().await;
    let env = vec![("BATON_RAFT__SNAPSHOT_AFTER_LOG_BYTES".to_string(), (256 * 1024).to_string())];
    let c = Cluster::start(3, Opts { env, ..Opts::default() });
    c.wait_leader(SECS(15)).await;
    let cl = client(&c);
    let snapshot = |id: u64| c.data_dir(id).join("snapshots").join("current.snap");
    assert!((1..=3).all(|id| !snapshot(id).exists()), "no snapshot before any load");
    // 8 jobs of 64 KiB: 512 KiB of log in a few dozen entries, far from the
    // 100,000 entries of the entry policy.
    let big = "x".repeat(64 * 1024);
    for _ in 0..8 {
        cl.submit(job("snap", &[big.as_str()])).await.unwrap();
    }
    wait_until("a snapshot on every node", || (1..=3).all(|id| snapshot(id).exists())).await;
}
