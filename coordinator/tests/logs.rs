//! Task execution logs on a real 3-node cluster: handlers log through their
//! context and through `tracing`; every attempt keeps its own lines; a
//! zombie's late lines are fenced; `baton job logs` prints and follows them.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::Once;
use std::time::{Duration, Instant};

use baton_client::proto::worker_message::Msg as In;
use baton_client::{Client, ClientConfig, LogLevel, TaskError, TaskLogLayer, Worker, proto};
use common::*;
use tokio::sync::Notify;

static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
const SECS: fn(u64) -> Duration = Duration::from_secs;

/// The tracing bridge, installed once for this test process.
fn install_tracing_bridge() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        use tracing_subscriber::prelude::*;
        tracing_subscriber::registry().with(TaskLogLayer::new()).init();
    });
}

fn client(c: &Cluster) -> Client {
    let mut cfg = ClientConfig::new(c.endpoints());
    cfg.deadline = SECS(30);
    cfg.rpc_timeout = SECS(3);
    Client::new(cfg).unwrap()
}

fn endpoints(c: &Cluster) -> String {
    c.ports.values().map(|p| format!("127.0.0.1:{}", p.api)).collect::<Vec<_>>().join(",")
}

fn one_shard(ns: &str, max_attempts: u32) -> proto::JobSpec {
    proto::JobSpec {
        namespace: ns.into(),
        shards: 1,
        max_attempts,
        backoff_base_ms: 100,
        attempt_timeout_ms: 60_000,
        ..Default::default()
    }
}

fn messages(r: &proto::TaskLog) -> Vec<&str> {
    r.lines.iter().map(|l| l.message.as_str()).collect()
}

/// Run a worker until the returned sender fires.
fn run_worker(w: Worker) -> (tokio::sync::oneshot::Sender<()>, tokio::task::JoinHandle<baton_client::WorkerStats>) {
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let h = tokio::spawn(async move {
        w.run(async move {
            let _ = stop_rx.await;
        })
        .await
        .unwrap()
    });
    (stop_tx, h)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_attempt_keeps_the_lines_its_handler_logged_through_ctx_and_tracing() {
    let _g = SERIAL.lock().await;
    install_tracing_bridge();
    let c = Cluster::start(3, Opts::default());
    c.wait_leader(SECS(15)).await;
    let worker = Worker::builder()
        .endpoints(c.endpoints())
        .name("logger")
        .capacity(2)
        .handler(|ctx: baton_client::TaskContext| async move {
            ctx.info(format!("attempt {} starting", ctx.attempt));
            tracing::warn!(attempt = ctx.attempt, "through tracing");
            if ctx.attempt == 1 {
                ctx.log(LogLevel::Error, "x".repeat(10_000));
                return Err(TaskError::retryable("the first attempt fails"));
            }
            ctx.debug("second attempt done");
            Ok(b"ok".to_vec())
        })
        .build()
        .unwrap();
    let (stop, run) = run_worker(worker);
    let cl = client(&c);
    let job = cl.submit(one_shard("logs", 3)).await.unwrap().job_id;
    let done = wait_job_done(&c, job, SECS(30)).await;
    assert_eq!(done.status, proto::JobStatus::Succeeded as i32);

    let logs = cl.task_logs(job, 0, None).await.unwrap();
    assert_eq!(logs.status, proto::TaskStatus::Succeeded as i32);
    assert_eq!(logs.attempts, 2);
    assert_eq!(logs.logs.iter().map(|r| r.attempt).collect::<Vec<_>>(), [1, 2], "{logs:?}");
    let (first, second) = (&logs.logs[0], &logs.logs[1]);
    assert_eq!(messages(first)[..2], ["attempt 1 starting", "through tracing attempt=1"]);
    assert_eq!(messages(second), ["attempt 2 starting", "through tracing attempt=2", "second attempt done"]);
    assert_eq!(
        second.lines.iter().map(|l| l.level).collect::<Vec<_>>(),
        [proto::LogLevel::Info as i32, proto::LogLevel::Warn as i32, proto::LogLevel::Debug as i32]
    );
    // The long line was cut at the line bound and says so.
    let long = &first.lines[2];
    assert_eq!(long.level, proto::LogLevel::Error as i32);
    assert!(long.message.len() <= baton_client::worker::MAX_LOG_LINE_BYTES);
    assert!(long.message.ends_with(baton_client::worker::TRUNCATED_MARKER));
    assert_eq!((first.dropped, second.dropped), (0, 0));
    // Each record carries its attempt's token; the second is the committed one.
    let results = cl.results(job).await.unwrap();
    assert!(first.token < second.token);
    assert_eq!(second.token, results[0].token);
    // One attempt alone.
    let only = cl.task_logs(job, 0, Some(1)).await.unwrap();
    assert_eq!(only.logs, vec![first.clone()]);

    // The CLI prints time, level, attempt and message, in order.
    let eps = endpoints(&c);
    let out = tokio::task::spawn_blocking(move || {
        Command::new(BIN).args(["job", "logs", &job.to_string(), "--endpoints", &eps]).output().unwrap()
    })
    .await
    .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8_lossy(&out.stdout);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 6, "{text}");
    assert!(lines[0].ends_with("INFO   attempt 1  attempt 1 starting"), "{text}");
    assert!(lines[1].ends_with("WARN   attempt 1  through tracing attempt=1"), "{text}");
    assert!(lines[5].ends_with("DEBUG  attempt 2  second attempt done"), "{text}");

    let _ = stop.send(());
    let stats = run.await.unwrap();
    assert_eq!(stats.log_lines_dropped, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_zombies_late_lines_are_fenced_and_stored_nowhere() {
    let _g = SERIAL.lock().await;
    let c = Cluster::start(3, Opts::default());
    let leader = c.wait_leader(SECS(15)).await;
    let zombie = TestWorker::start(vec![c.api(leader)], "zombie", 1, Duration::from_millis(1));
    zombie.hold.store(true, std::sync::atomic::Ordering::SeqCst);
    let cl = client(&c);
    let job = cl.submit(one_shard("zombie", 5)).await.unwrap().job_id;
    let deadline = Instant::now() + SECS(20);
    let old = loop {
        if let Some((_, _, token, _)) = zombie.assigned().into_iter().find(|(j, ..)| *j == job) {
            break token;
        }
        assert!(Instant::now() < deadline, "never assigned\n{}", c.logs());
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let logs = |token: u64, seq: u64, message: &str| {
        In::Logs(proto::Logs {
            task: Some(proto::TaskRef { job_id: job, shard: 0 }),
            token,
            seq,
            chunk: baton_client::worker::encode_chunk(&[proto::LogLine {
                at_ms: 1,
                level: proto::LogLevel::Info as i32,
                message: message.into(),
            }]),
        })
    };
    let acked = |w: &TestWorker, token: u64| w.acks().into_iter().find(|(j, _, t, _)| *j == job && *t == token);
    zombie.send(logs(old, 1, "while it owned the shard"));
    let deadline = Instant::now() + SECS(10);
    while acked(&zombie, old).is_none() {
        assert!(Instant::now() < deadline, "no ack\n{}", c.logs());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(acked(&zombie, old).unwrap().3, proto::ReportStatus::Accepted as i32);

    // The zombie stalls past its lease; another worker gets the shard.
    zombie.paused.store(true, std::sync::atomic::Ordering::SeqCst);
    let other = TestWorker::start(c.endpoints(), "other", 1, Duration::from_millis(1));
    other.hold.store(true, std::sync::atomic::Ordering::SeqCst);
    let deadline = Instant::now() + SECS(20);
    let new = loop {
        if let Some((_, _, token, _)) = other.assigned().into_iter().find(|(j, ..)| *j == job) {
            break token;
        }
        assert!(Instant::now() < deadline, "never reassigned\n{}", c.logs());
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert!(new > old);
    other.send(logs(new, 1, "the new owner"));

    // The zombie wakes and flushes what it still had: fenced. Its stream may
    // be closed under it as its session ended, so it sends again until
    // answered (a fenced message changes nothing, however often).
    let before = zombie.acks().len();
    zombie.paused.store(false, std::sync::atomic::Ordering::SeqCst);
    let deadline = Instant::now() + SECS(30);
    let fenced = 'answered: loop {
        zombie.send(logs(old, 2, "late zombie line"));
        let retry_at = Instant::now() + SECS(1);
        while Instant::now() < retry_at {
            if let Some(a) = zombie.acks()[before..].iter().find(|(j, _, t, _)| *j == job && *t == old) {
                break 'answered *a;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert!(Instant::now() < deadline, "the late lines were never answered\n{}", c.logs());
    };
    assert_eq!(fenced.3, proto::ReportStatus::Fenced as i32);
    let deadline = Instant::now() + SECS(10);
    while acked(&other, new).is_none() {
        assert!(Instant::now() < deadline, "no ack for the new owner\n{}", c.logs());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    let logs = cl.task_logs(job, 0, None).await.unwrap();
    let all: Vec<(u32, u64, Vec<&str>)> = logs.logs.iter().map(|r| (r.attempt, r.token, messages(r))).collect();
    assert_eq!(all, vec![(1, old, vec!["while it owned the shard"]), (2, new, vec!["the new owner"])]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn follow_prints_a_running_attempts_lines_until_it_finishes() {
    let _g = SERIAL.lock().await;
    let c = Cluster::start(3, Opts::default());
    c.wait_leader(SECS(15)).await;
    let release = Arc::new(Notify::new());
    let r2 = release.clone();
    let worker = Worker::builder()
        .endpoints(c.endpoints())
        .name("follow")
        .capacity(1)
        .handler(move |ctx: baton_client::TaskContext| {
            let release = r2.clone();
            async move {
                ctx.info("started");
                let mut i = 0;
                loop {
                    tokio::select! {
                        _ = release.notified() => break,
                        _ = tokio::time::sleep(Duration::from_millis(300)) => {
                            ctx.info(format!("tick {i}"));
                            i += 1;
                        }
                    }
                }
                ctx.warn("finishing");
                Ok(Vec::new())
            }
        })
        .build()
        .unwrap();
    let (stop, run) = run_worker(worker);
    let cl = client(&c);
    let job = cl.submit(one_shard("follow", 1)).await.unwrap().job_id;

    let mut child = Command::new(BIN)
        .args(["job", "logs", &job.to_string(), "--follow", "--endpoints", &endpoints(&c)])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let (line_tx, mut line_rx) = tokio::sync::mpsc::unbounded_channel::<String>();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if line_tx.send(line).is_err() {
                break;
            }
        }
    });
    // Lines of the running attempt arrive while it runs.
    let mut seen = Vec::new();
    let deadline = Instant::now() + SECS(30);
    while !seen.iter().any(|l: &String| l.ends_with("tick 1")) {
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, line_rx.recv()).await {
            Ok(Some(l)) => seen.push(l),
            _ => panic!("no running lines followed: {seen:?}\n{}", c.logs()),
        }
    }
    assert!(seen[0].ends_with("INFO   attempt 1  started"), "{seen:?}");
    let job_now = cl.get(job).await.unwrap();
    assert_eq!(job_now.counts.unwrap().running, 1, "the attempt was still running");
    release.notify_one();
    // The follower ends by itself once the shard finished, after the last line.
    while let Some(l) = tokio::time::timeout(SECS(30), line_rx.recv()).await.expect("follow did not end") {
        seen.push(l);
    }
    let status = tokio::task::spawn_blocking(move || child.wait().unwrap()).await.unwrap();
    assert!(status.success());
    assert!(seen.last().unwrap().ends_with("WARN   attempt 1  finishing"), "{seen:?}");
    let ticks: Vec<&String> = seen.iter().filter(|l| l.contains("tick ")).collect();
    for (i, l) in ticks.iter().enumerate() {
        assert!(l.ends_with(&format!("tick {i}")), "each line once, in order: {seen:?}");
    }
    let _ = stop.send(());
    run.await.unwrap();
}
