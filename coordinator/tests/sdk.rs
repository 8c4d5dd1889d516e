//! The Rust SDK (`baton_client::{Client, Worker}`) against a real 3-node cluster.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use baton_client::{Client, ClientConfig, TaskError, Worker, proto};
use common::blackhole::Blackhole;
use common::*;
use futures::StreamExt;

static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
const SECS: fn(u64) -> Duration = Duration::from_secs;

fn client(c: &Cluster) -> Client {
    let mut cfg = ClientConfig::new(c.endpoints());
    cfg.deadline = SECS(30);
    cfg.rpc_timeout = SECS(3);
    Client::new(cfg).unwrap()
}

fn job(shards: u32) -> proto::JobSpec {
    proto::JobSpec {
        namespace: "sdk".into(),
        payloads: (0..shards).map(|i| format!("item-{i}").into_bytes()).collect(),
        attempt_timeout_ms: 60_000,
        ..Default::default()
    }
}

/// Wait until a shard of `job_id` is running (10 s at most).
async fn wait_running(cl: &Client, job_id: u64) {
    let deadline = Instant::now() + SECS(10);
    while cl.get(job_id).await.unwrap().counts.unwrap().running == 0 {
        assert!(Instant::now() < deadline, "the shard never started");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn worker_runs_shards_and_client_watches_to_the_end() {
    let _g = SERIAL.lock().await;
    let c = Cluster::start(3, Opts::default());
    c.wait_leader(SECS(15)).await;
    let tokens = Arc::new(std::sync::Mutex::new(Vec::new()));
    let t2 = tokens.clone();
    let worker = Worker::builder()
        .endpoints(c.endpoints())
        .name("upper")
        .capacity(4)
        .handler(move |ctx: baton_client::TaskContext| {
            let tokens = t2.clone();
            async move {
                tokens.lock().unwrap().push(ctx.token);
                ctx.progress(5_000, "halfway");
                Ok(String::from_utf8_lossy(&ctx.payload).to_uppercase().into_bytes())
            }
        })
        .build()
        .unwrap();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let w = tokio::spawn(worker.run(async move {
        let _ = stop_rx.await;
    }));
    let cl = client(&c);
    let r = cl.submit(job(10)).await.unwrap();
    let mut events = Box::pin(cl.watch(r.job_id));
    let mut last = None;
    while let Some(ev) = events.next().await {
        last = Some(ev.unwrap());
    }
    let last = last.expect("at least one event").job.unwrap();
    assert_eq!(last.status, proto::JobStatus::Succeeded as i32);
    let results = cl.results(r.job_id).await.unwrap();
    assert_eq!(results.len(), 10);
    for (i, s) in results.iter().enumerate() {
        assert_eq!(s.result, format!("ITEM-{i}").into_bytes());
        assert!(s.token > 0 && tokens.lock().unwrap().contains(&s.token));
    }
    // Unknown job: a clear, non-retryable error.
    let e = cl.get(999_999).await.unwrap_err();
    assert!(matches!(e, baton_client::Error::NotFound(_)), "{e}");
    stop_tx.send(()).unwrap();
    let stats = w.await.unwrap().unwrap();
    assert_eq!(stats.completed, 10);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leader_killed_while_submitting_a_thousand_jobs_gives_exactly_a_thousand() {
    let _g = SERIAL.lock().await;
    let mut c = Cluster::start(3, Opts::default());
    let leader = c.wait_leader(SECS(15)).await;
    let cl = client(&c);
    let submitted = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    for s in 0..8 {
        let (cl, submitted) = (cl.clone(), submitted.clone());
        tasks.push(tokio::spawn(async move {
            for i in 0..125 {
                let mut spec = job(1);
                spec.name = format!("s{s}-{i}");
                cl.submit(spec).await.unwrap_or_else(|e| panic!("submit s{s}-{i} failed: {e}"));
                submitted.fetch_add(1, Ordering::SeqCst);
            }
        }));
    }
    while submitted.load(Ordering::SeqCst) < 300 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    c.kill(leader);
    for t in tasks {
        t.await.unwrap();
    }
    let mut total = Vec::new();
    let mut token = 0;
    loop {
        let r =
            cl.list(proto::ListJobsRequest { page_size: 1000, page_token: token, ..Default::default() }).await.unwrap();
        total.extend(r.jobs);
        if r.next_page_token == 0 {
            break;
        }
        token = r.next_page_token;
    }
    let names: std::collections::BTreeSet<String> = total.iter().map(|j| j.name.clone()).collect();
    assert_eq!(total.len(), 1000, "jobs lost or doubled");
    assert_eq!(names.len(), 1000);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cut_off_worker_self_fences_and_its_shard_runs_elsewhere() {
    let _g = SERIAL.lock().await;
    let c = Cluster::start(3, Opts::default());
    let leader = c.wait_leader(SECS(15)).await;
    let proxy = Blackhole::start(format!("127.0.0.1:{}", c.ports[&leader].api)).await;
    let fenced = Arc::new(AtomicBool::new(false));
    let f2 = fenced.clone();
    let cut_off = Worker::builder()
        .endpoints([proxy.addr.clone()])
        .name("cut-off")
        .handler(move |ctx: baton_client::TaskContext| {
            let fenced = f2.clone();
            async move {
                ctx.cancellation().cancelled().await;
                fenced.store(true, Ordering::SeqCst);
                Ok(b"stale".to_vec())
            }
        })
        .build()
        .unwrap();
    let _a = tokio::spawn(cut_off.run(futures::future::pending()));
    let cl = client(&c);
    let job_id = cl.submit(job(1)).await.unwrap().job_id;
    wait_running(&cl, job_id).await;
    proxy.black_hole();
    let cut_at = Instant::now();
    let healthy = Worker::builder()
        .endpoints(c.endpoints())
        .name("healthy")
        .handler(|_ctx: baton_client::TaskContext| async move { Ok(b"fresh".to_vec()) })
        .build()
        .unwrap();
    let _b = tokio::spawn(healthy.run(futures::future::pending()));
    let deadline = Instant::now() + SECS(20);
    loop {
        let j = cl.get(job_id).await.unwrap();
        if j.finished_ms != 0 {
            break;
        }
        assert!(Instant::now() < deadline, "the shard was never rerun");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let deadline = Instant::now() + SECS(5);
    while !fenced.load(Ordering::SeqCst) {
        assert!(Instant::now() < deadline, "the cut-off worker never cancelled its handler");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    println!("self-fenced and rerun within {:?} of the cut", cut_at.elapsed());
    // Heal the link: the stale result must never be committed.
    proxy.heal();
    tokio::time::sleep(SECS(2)).await;
    let r = cl.results(job_id).await.unwrap();
    assert_eq!(r[0].result, b"fresh".to_vec());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn graceful_shutdown_finishes_in_flight_work_and_releases_the_rest_at_once() {
    let _g = SERIAL.lock().await;
    // A long TTL: anything released faster than it was released by deregistering.
    let c = Cluster::start(3, Opts { ttl_ms: 10_000, heartbeat_ms: 1_000, ..Opts::default() });
    c.wait_leader(SECS(15)).await;
    let started = Arc::new(AtomicU64::new(0));
    let s2 = started.clone();
    let leaving = Worker::builder()
        .endpoints(c.endpoints())
        .name("leaving")
        .capacity(3)
        .shutdown_grace(SECS(10))
        .handler(move |_ctx: baton_client::TaskContext| {
            let started = s2.clone();
            async move {
                started.fetch_add(1, Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(800)).await;
                Ok(b"leaving".to_vec())
            }
        })
        .build()
        .unwrap();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let a = tokio::spawn(leaving.run(async move {
        let _ = stop_rx.await;
    }));
    let cl = client(&c);
    let job_id = cl.submit(job(3)).await.unwrap().job_id;
    while started.load(Ordering::SeqCst) < 3 {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // More work arrives while it holds three shards.
    let later = cl.submit(job(2)).await.unwrap().job_id;
    let stopping = Instant::now();
    stop_tx.send(()).unwrap();
    let stats = a.await.unwrap().unwrap();
    assert_eq!(stats.completed, 3, "in-flight work was not finished and reported: {stats:?}");
    let r = cl.results(job_id).await.unwrap();
    assert!(r.iter().all(|s| s.result == b"leaving".to_vec()));
    // The rest runs on another worker well before the 10 s lease would expire.
    let other = Worker::builder()
        .endpoints(c.endpoints())
        .name("other")
        .capacity(4)
        .handler(|_ctx: baton_client::TaskContext| async move { Ok(b"other".to_vec()) })
        .build()
        .unwrap();
    let _b = tokio::spawn(other.run(futures::future::pending()));
    let deadline = Instant::now() + SECS(5);
    while cl.get(later).await.unwrap().finished_ms == 0 {
        assert!(Instant::now() < deadline, "remaining work waited for the lease");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    println!("shutdown and handover took {:?}", stopping.elapsed());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panicking_handler_fails_the_attempt_and_the_worker_keeps_going() {
    let _g = SERIAL.lock().await;
    let c = Cluster::start(3, Opts::default());
    c.wait_leader(SECS(15)).await;
    let worker = Worker::builder()
        .endpoints(c.endpoints())
        .name("flaky")
        .handler(|ctx: baton_client::TaskContext| async move {
            if ctx.attempt == 1 {
                panic!("boom on attempt 1");
            }
            if ctx.payload == b"fatal" {
                return Err(TaskError::fatal("bad input"));
            }
            Ok(b"ok".to_vec())
        })
        .build()
        .unwrap();
    let _w = tokio::spawn(worker.run(futures::future::pending()));
    let cl = client(&c);
    let mut spec = job(1);
    spec.backoff_base_ms = 10;
    spec.backoff_max_ms = 10;
    let id = cl.submit(spec).await.unwrap().job_id;
    let mut fatal = job(1);
    fatal.payloads = vec![b"fatal".to_vec()];
    fatal.max_attempts = 5;
    fatal.backoff_base_ms = 10;
    fatal.backoff_max_ms = 10;
    let fid = cl.submit(fatal).await.unwrap().job_id;
    let deadline = Instant::now() + SECS(15);
    loop {
        let (a, b) = (cl.get(id).await.unwrap(), cl.get(fid).await.unwrap());
        if a.finished_ms != 0 && b.finished_ms != 0 {
            assert_eq!(a.status, proto::JobStatus::Succeeded as i32);
            assert_eq!(b.status, proto::JobStatus::Failed as i32);
            break;
        }
        assert!(Instant::now() < deadline, "jobs did not finish: {a:?} {b:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let r = cl.results(id).await.unwrap();
    assert_eq!(r[0].attempts, 2);
    let r = cl.results(fid).await.unwrap();
    assert_eq!(r[0].attempts, 2, "a non-retryable failure ends the shard: {r:?}");
    assert!(r[0].last_error.contains("bad input"), "{r:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_handler_that_ignores_cancellation_is_abandoned_and_not_reported() {
    let _g = SERIAL.lock().await;
    let c = Cluster::start(3, Opts::default());
    c.wait_leader(SECS(15)).await;
    let worker = Worker::builder()
        .endpoints(c.endpoints())
        .name("stubborn")
        .handler(|ctx: baton_client::TaskContext| async move {
            if ctx.attempt == 1 {
                // Ignores its cancellation and its deadline.
                tokio::time::sleep(SECS(30)).await;
                return Ok(b"attempt-1".to_vec());
            }
            Ok(format!("attempt-{}", ctx.attempt).into_bytes())
        })
        .build()
        .unwrap();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let w = tokio::spawn(worker.run(async move {
        let _ = stop_rx.await;
    }));
    let cl = client(&c);
    let mut spec = job(1);
    spec.attempt_timeout_ms = 800;
    spec.backoff_base_ms = 10;
    spec.backoff_max_ms = 10;
    let id = cl.submit(spec).await.unwrap().job_id;
    let deadline = Instant::now() + SECS(20);
    while cl.get(id).await.unwrap().finished_ms == 0 {
        assert!(Instant::now() < deadline, "job never finished");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let r = cl.results(id).await.unwrap();
    assert_eq!(r[0].result, b"attempt-2".to_vec(), "{r:?}");
    stop_tx.send(()).unwrap();
    let stats = w.await.unwrap().unwrap();
    assert_eq!(stats.abandoned, 1, "{stats:?}");
    assert_eq!(stats.completed, 1, "{stats:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_on_a_stalled_leader_reattaches_to_the_new_leader_and_keeps_its_attempt() {
    // A leader stalled by SIGSTOP keeps its TCP connections open, so the
    // worker only sees silence. It must reattach to the new leader within the
    // fresh TTL that leader grants on takeover; otherwise its session expires
    // and its running attempt is thrown away.
    let _g = SERIAL.lock().await;
    let c = Cluster::start(3, Opts { ttl_ms: 3_000, heartbeat_ms: 300, ..Opts::default() });
    let leader = c.wait_leader(SECS(15)).await;
    let worker = Worker::builder()
        .endpoints(c.endpoints())
        .name("steady")
        .handler(|_ctx: baton_client::TaskContext| async move {
            tokio::time::sleep(SECS(4)).await;
            Ok(b"done".to_vec())
        })
        .build()
        .unwrap();
    let _w = tokio::spawn(worker.run(futures::future::pending()));
    let others: Vec<String> = c.ports.keys().filter(|id| **id != leader).map(|id| c.api(*id)).collect();
    let mut cfg = ClientConfig::new(others);
    cfg.deadline = SECS(30);
    cfg.rpc_timeout = SECS(2);
    let cl = Client::new(cfg).unwrap();
    let job_id = cl.submit(job(1)).await.unwrap().job_id;
    wait_running(&cl, job_id).await;
    c.signal(leader, libc::SIGSTOP);
    let deadline = Instant::now() + SECS(20);
    let done = loop {
        let j = cl.get(job_id).await.unwrap();
        if j.finished_ms != 0 {
            break j;
        }
        if Instant::now() > deadline {
            c.signal(leader, libc::SIGCONT);
            panic!("the job did not finish while the old leader was stalled: {j:?}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    c.signal(leader, libc::SIGCONT);
    assert_eq!(done.status, proto::JobStatus::Succeeded as i32);
    let r = cl.results(job_id).await.unwrap();
    assert_eq!(r[0].attempts, 1, "the running attempt was kept across the failover, not redone: {r:?}");
    assert_eq!(r[0].result, b"done".to_vec());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_that_fenced_itself_starts_a_new_session_so_its_shards_are_released() {
    // The worker loses its link long enough to fence itself (0.8 TTL), and
    // gets it back before the cluster expires its session (1 TTL). Resuming
    // that session would leave the cluster believing the worker still runs
    // the attempt it abandoned; it must register anew instead, which ends the
    // old session and releases the shard at once.
    let _g = SERIAL.lock().await;
    let c = Cluster::start(3, Opts { ttl_ms: 6_000, heartbeat_ms: 300, ..Opts::default() });
    let leader = c.wait_leader(SECS(15)).await;
    let proxy = Blackhole::start(format!("127.0.0.1:{}", c.ports[&leader].api)).await;
    let attempts = Arc::new(AtomicU64::new(0));
    let fenced = Arc::new(AtomicBool::new(false));
    let (a2, f2) = (attempts.clone(), fenced.clone());
    let worker = Worker::builder()
        .endpoints([proxy.addr.clone()])
        .name("flaky-link")
        .handler(move |ctx: baton_client::TaskContext| {
            let (attempts, fenced) = (a2.clone(), f2.clone());
            async move {
                if attempts.fetch_add(1, Ordering::SeqCst) == 0 {
                    ctx.cancellation().cancelled().await;
                    fenced.store(true, Ordering::SeqCst);
                    return Ok(b"abandoned".to_vec());
                }
                Ok(format!("token {}", ctx.token).into_bytes())
            }
        })
        .build()
        .unwrap();
    let _w = tokio::spawn(worker.run(futures::future::pending()));
    let cl = client(&c);
    let job_id = cl.submit(job(1)).await.unwrap().job_id;
    wait_running(&cl, job_id).await;
    proxy.black_hole();
    let deadline = Instant::now() + SECS(10);
    while !fenced.load(Ordering::SeqCst) {
        assert!(Instant::now() < deadline, "the worker never fenced itself");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // Back before the cluster's 6 s lease runs out.
    proxy.heal();
    let deadline = Instant::now() + SECS(15);
    let done = loop {
        let j = cl.get(job_id).await.unwrap();
        if j.finished_ms != 0 {
            break j;
        }
        assert!(Instant::now() < deadline, "the abandoned shard was never released: {j:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(done.status, proto::JobStatus::Succeeded as i32);
    let r = cl.results(job_id).await.unwrap();
    assert_eq!(r[0].attempts, 2, "{r:?}");
    assert!(String::from_utf8_lossy(&r[0].result).starts_with("token "), "{r:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn under_a_black_holed_connection_the_handler_is_cancelled_before_another_worker_receives_the_shard() {
    // The cluster renews a lease when its leader processes a heartbeat, so it
    // cannot reassign before `sent_at(last acknowledged heartbeat) + ttl`
    // (plus a check and a commit). A worker whose link goes dark must stop its
    // handler before then, even while its attempts to reconnect hang on the
    // same dead link, so that two handlers never run the shard at once.
    let _g = SERIAL.lock().await;
    let c = Cluster::start(3, Opts { ttl_ms: 3_000, heartbeat_ms: 300, ..Opts::default() });
    let leader = c.wait_leader(SECS(15)).await;
    let hole = Blackhole::start(format!("127.0.0.1:{}", c.ports[&leader].api)).await;
    let cancelled_at = Arc::new(std::sync::Mutex::new(None::<Instant>));
    let c2 = cancelled_at.clone();
    let cut_off = Worker::builder()
        .endpoints([hole.addr.clone()])
        .name("behind-the-hole")
        .handler(move |ctx: baton_client::TaskContext| {
            let cancelled_at = c2.clone();
            async move {
                ctx.cancellation().cancelled().await;
                *cancelled_at.lock().unwrap() = Some(Instant::now());
                Ok(b"stale".to_vec())
            }
        })
        .build()
        .unwrap();
    let _a = tokio::spawn(cut_off.run(futures::future::pending()));
    let cl = client(&c);
    let job_id = cl.submit(job(1)).await.unwrap().job_id;
    wait_running(&cl, job_id).await;
    hole.black_hole();
    let dark_at = Instant::now();
    let direct = TestWorker::start(c.endpoints(), "direct", 1, Duration::from_millis(10));
    let done = wait_job_done(&c, job_id, SECS(20)).await;
    let received_at = direct
        .assigned()
        .into_iter()
        .find(|(job, ..)| *job == job_id)
        .map(|(.., at)| at)
        .expect("the direct worker never received the shard");
    let cancelled_at = cancelled_at
        .lock()
        .unwrap()
        .expect("the cut-off worker's handler was still running after another worker finished its shard");
    println!(
        "cancelled {:?} and received elsewhere {:?} after the link went dark",
        cancelled_at - dark_at,
        received_at - dark_at
    );
    assert!(
        cancelled_at < received_at,
        "the handler was cancelled {:?} after another worker received its shard",
        cancelled_at - received_at
    );
    assert_eq!(done.status, proto::JobStatus::Succeeded as i32);
    let r = results(&c, job_id).await;
    assert_eq!(r[0].result, format!("direct:{job_id}/0").into_bytes(), "{r:?}");
    assert_eq!(r[0].attempts, 2, "{r:?}");
}
