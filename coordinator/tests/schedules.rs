//! Schedules, event triggers and delayed jobs against a real 3-node cluster:
//! through the Rust SDK (one run per fire time, pause/resume, run now,
//! delete, idempotent create, bad input, overlap skip, triggers with
//! filters and event-id dedup, the not-before bound), and through the
//! `baton` CLI end to end. Cluster start-up is the slow part, so each test
//! checks many things on one cluster. The leader-kill-across-fire-times
//! test lives elsewhere.

mod common;

use std::collections::BTreeMap;
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use baton_client::error::{ERROR_CODE_HEADER, LEADER_ID_HEADER, codes};
use baton_client::proto::cadence::Kind;
use baton_client::proto::run_origin::Source;
use baton_client::proto::schedule_service_client::ScheduleServiceClient;
use baton_client::{Client, ClientConfig, Error, ScheduleBuilder, TaskContext, TaskError, Worker, proto};
use common::*;

static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
const SECS: fn(u64) -> Duration = Duration::from_secs;

fn client(c: &Cluster) -> Client {
    let mut cfg = ClientConfig::new(c.endpoints());
    cfg.deadline = SECS(30);
    cfg.rpc_timeout = SECS(3);
    Client::new(cfg).unwrap()
}

fn wall_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_millis() as u64
}

/// One attempt a worker ran: its job, payload and wall-clock span.
#[derive(Clone, Debug)]
struct Ran {
    job: u64,
    payload: Vec<u8>,
    start_ms: u64,
    end_ms: u64,
}

/// What the test's workers ran, in start order.
#[derive(Clone, Default)]
struct Log(Arc<Mutex<Vec<Ran>>>);

impl Log {
    fn of_job(&self, job: u64) -> Vec<Ran> {
        self.0.lock().unwrap().iter().filter(|r| r.job == job).cloned().collect()
    }
}

/// An SDK worker: payload `sleep:MS` sleeps that long (until cancelled),
/// anything else returns at once; every attempt is logged.
fn worker(c: &Cluster, name: &str, capacity: u32, log: Log) {
    let w = Worker::builder()
        .endpoints(c.endpoints())
        .name(name)
        .capacity(capacity)
        .handler(move |ctx: TaskContext| {
            let log = log.clone();
            async move {
                let start_ms = wall_ms();
                let text = String::from_utf8_lossy(&ctx.payload).into_owned();
                if let Some(ms) = text.strip_prefix("sleep:").and_then(|m| m.parse::<u64>().ok()) {
                    let cancel = ctx.cancellation();
                    tokio::select! {
                        _ = tokio::time::sleep(Duration::from_millis(ms)) => {}
                        _ = cancel.cancelled() => return Err(TaskError::fatal("cancelled")),
                    }
                }
                let ran = Ran { job: ctx.job_id, payload: ctx.payload.clone(), start_ms, end_ms: wall_ms() };
                log.0.lock().unwrap().push(ran);
                Ok(b"ok".to_vec())
            }
        })
        .build()
        .unwrap();
    tokio::spawn(w.run(std::future::pending()));
}

fn job(payload: &str) -> proto::JobSpec {
    proto::JobSpec { payloads: vec![payload.as_bytes().to_vec()], attempt_timeout_ms: 60_000, ..Default::default() }
}

/// Poll the schedule until `cond` holds.
async fn wait_schedule(
    cl: &Client,
    id: u64,
    what: &str,
    timeout: Duration,
    cond: impl Fn(&proto::Schedule) -> bool,
) -> proto::Schedule {
    let deadline = Instant::now() + timeout;
    loop {
        let s = cl.get_schedule(id).await.unwrap();
        if cond(&s) {
            return s;
        }
        assert!(Instant::now() < deadline, "schedule {id}: {what}: not within {timeout:?}: {s:#?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn schedule_fire(j: &proto::Job) -> (u64, u64, bool) {
    match j.run_origin.as_ref().and_then(|o| o.source.as_ref()) {
        Some(Source::Schedule(s)) => (s.schedule_id, s.fire_ms, s.manual),
        other => panic!("job {} has no schedule origin: {other:?}", j.id),
    }
}

/// Every job of a namespace, oldest first.
async fn jobs_in(cl: &Client, ns: &str) -> Vec<proto::Job> {
    let r =
        cl.list(proto::ListJobsRequest { namespace: ns.into(), page_size: 1000, ..Default::default() }).await.unwrap();
    assert_eq!(r.next_page_token, 0, "one page holds them");
    r.jobs
}

fn invalid_message(r: Result<impl std::fmt::Debug, Error>) -> String {
    match r {
        Err(Error::InvalidArgument(m)) => m,
        other => panic!("expected INVALID_ARGUMENT, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schedules_fire_once_per_time_and_obey_pause_run_now_delete_overlap_and_triggers_start_jobs() {
    let _g = SERIAL.lock().await;
    let c = Cluster::start(3, Opts::default());
    c.wait_leader(SECS(15)).await;
    let cl = client(&c);
    let log = Log::default();
    worker(&c, "sched-worker", 8, log.clone());

    // Overlap skip: a 1-s schedule whose runs take 2.5 s. Created first so
    // that it runs while the other checks do; a poller watches its live runs.
    let slow = ScheduleBuilder::every("slow", "slow", SECS(1)).job(job("sleep:2500")).build();
    let slow_id = cl.create_schedule(slow).await.unwrap().schedule_id;
    let poller = {
        let cl = cl.clone();
        tokio::spawn(async move {
            let (mut most_live, mut polls) = (0, 0);
            let until = Instant::now() + SECS(8);
            while Instant::now() < until {
                let s = cl.get_schedule(slow_id).await.unwrap();
                most_live = most_live.max(s.live_runs.len());
                polls += 1;
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            (most_live, polls)
        })
    };

    // A 1-s fixed rate that allows overlap: one run per fire time.
    let tick = ScheduleBuilder::every("tick", "tick", SECS(1)).job(job("tick")).overlap(proto::OverlapPolicy::Allow);
    let created = cl.create_schedule(tick.clone().build()).await.unwrap();
    assert!(!created.duplicate && created.next_fire_ms != 0, "{created:?}");
    let id = created.schedule_id;

    // Create is idempotent by name; another spec under the name is refused.
    let again = cl.create_schedule(tick.clone().build()).await.unwrap();
    assert_eq!((again.schedule_id, again.duplicate), (id, true));
    let other = tick.clone().overlap(proto::OverlapPolicy::Skip).build();
    match cl.create_schedule(other).await {
        Err(e @ Error::AlreadyExists(_)) => assert_eq!(e.code(), Some(codes::ALREADY_EXISTS)),
        r => panic!("expected ALREADY_EXISTS, got {r:?}"),
    }
    let by_name = cl.get_schedule_by_name("tick", "tick").await.unwrap();
    assert_eq!(by_name.id, id);

    // Listing pages by id.
    let page = |token| proto::ListSchedulesRequest { page_size: 1, page_token: token, ..Default::default() };
    let first = cl.list_schedules(page(0)).await.unwrap();
    assert_eq!(first.schedules.iter().map(|s| s.id).collect::<Vec<_>>(), vec![slow_id]);
    assert_eq!(first.next_page_token, slow_id);
    let second = cl.list_schedules(page(first.next_page_token)).await.unwrap();
    assert_eq!(second.schedules.iter().map(|s| s.id).collect::<Vec<_>>(), vec![id]);
    assert_eq!(second.next_page_token, 0, "the last page");
    let too_big = proto::ListSchedulesRequest { page_size: 100_000, ..Default::default() };
    assert!(matches!(cl.list_schedules(too_big).await, Err(Error::InvalidArgument(_))));

    // A workflow template: run now starts a workflow that names its origin.
    let wf = baton_client::WorkflowBuilder::new("", "flow").step(baton_client::Step::job("only", job("wf"))).build();
    let in_an_hour = SystemTime::now() + SECS(3600);
    let once = ScheduleBuilder::once("wf", "once", in_an_hour).workflow(wf).build();
    let wf_id = cl.create_schedule(once).await.unwrap().schedule_id;
    let s = cl.get_schedule(wf_id).await.unwrap();
    assert_eq!((s.template_kind.as_str(), s.template_steps, s.upcoming_fire_ms.len()), ("workflow", 1, 1));
    let run = cl.run_schedule_now(wf_id).await.unwrap();
    assert!(run.workflow_id != 0 && run.job_id == 0, "{run:?}");
    let w = cl.get_workflow(run.workflow_id).await.unwrap();
    match w.run_origin.as_ref().and_then(|o| o.source.as_ref()) {
        Some(Source::Schedule(f)) => assert_eq!((f.schedule_id, f.manual), (wf_id, true)),
        other => panic!("{other:?}"),
    }
    cl.delete_schedule(wf_id).await.unwrap();

    // Bad input is refused at the edge, naming the field.
    let bad = |p: &str, tz: &str| ScheduleBuilder::cron("tick", "bad", p, tz).job(job("x")).build();
    let m = invalid_message(cl.create_schedule(bad("61 * * * *", "")).await);
    assert!(m.contains("cadence.cron"), "{m}");
    let m = invalid_message(cl.create_schedule(bad("* * * * *", "Mars/Olympus")).await);
    assert!(m.contains("cadence.time_zone") && m.contains("Mars/Olympus"), "{m}");
    assert!(matches!(cl.get_schedule_by_name("tick", "bad").await, Err(Error::NotFound(_))), "nothing was created");

    // Through a follower: forwarded like every write, the leader's refusal
    // and its code pass through, and an answer names the leader.
    let leader = c.wait_leader(SECS(5)).await;
    let follower = c.live().into_iter().find(|n| *n != leader).unwrap();
    let mut raw = ScheduleServiceClient::new(c.channel(follower).await);
    let req = proto::CreateScheduleRequest { spec: Some(bad("61 * * * *", "")) };
    let s = raw.create_schedule(req).await.unwrap_err();
    assert_eq!(s.code(), tonic::Code::InvalidArgument);
    assert_eq!(s.metadata().get(ERROR_CODE_HEADER).unwrap(), codes::INVALID);
    let req = proto::CreateScheduleRequest { spec: Some(tick.clone().build()) };
    let r = raw.create_schedule(req).await.unwrap();
    assert!(r.metadata().get(LEADER_ID_HEADER).is_some(), "a forwarded answer names the leader");
    assert_eq!((r.get_ref().schedule_id, r.get_ref().duplicate), (id, true));
    let req = proto::CreateScheduleRequest { spec: Some(tick.clone().overlap(proto::OverlapPolicy::Skip).build()) };
    let s = raw.create_schedule(req).await.unwrap_err();
    assert_eq!(s.code(), tonic::Code::AlreadyExists);
    assert_eq!(s.metadata().get(ERROR_CODE_HEADER).unwrap(), codes::ALREADY_EXISTS);

    // Fires come once a second; each run's job names its fire time.
    let s = wait_schedule(&cl, id, "4 runs", SECS(15), |s| s.runs_started >= 4).await;
    assert_eq!(s.upcoming_fire_ms.len(), 5);
    assert_eq!(s.upcoming_fire_ms[0], s.next_fire_ms);
    assert!(s.upcoming_fire_ms.windows(2).all(|w| w[1] - w[0] == 1000), "{:?}", s.upcoming_fire_ms);
    assert_eq!(s.cadence.as_ref().unwrap().kind, Some(Kind::EveryMs(1000)));
    let runs = cl.schedule_runs(id).await.unwrap();
    assert!(runs.runs.len() >= 4 && runs.runs_started >= 4, "{runs:?}");
    let mut fires = Vec::new();
    for r in &runs.runs {
        assert_ne!(r.job_id, 0, "overlap allow starts every fire: {r:?}");
        let j = wait_job_done(&c, r.job_id, SECS(15)).await;
        assert_eq!(j.status, proto::JobStatus::Succeeded as i32, "{j:?}");
        let (sid, fire_ms, manual) = schedule_fire(&j);
        assert_eq!((sid, fire_ms, manual), (id, r.fire_ms, false));
        assert_eq!(log.of_job(j.id).len(), 1, "the worker ran job {} once", j.id);
        fires.push(fire_ms);
    }
    fires.sort_unstable();
    assert!(fires.windows(2).all(|w| w[1] - w[0] == 1000), "distinct, consecutive fire times: {fires:?}");

    // Pause stops runs; resume starts them again.
    let p = cl.pause_schedule(id).await.unwrap();
    assert!(p.paused);
    let paused_at = cl.get_schedule(id).await.unwrap().runs_started;
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let s = cl.get_schedule(id).await.unwrap();
    assert!(s.paused);
    assert_eq!(s.runs_started, paused_at, "no run while paused");
    assert!(!cl.resume_schedule(id).await.unwrap().paused);
    wait_schedule(&cl, id, "a run after resume", SECS(10), |s| s.runs_started > paused_at).await;

    // Run now: a manual run, its job says so.
    let now = cl.run_schedule_now(id).await.unwrap();
    assert!(now.job_id != 0 && now.skipped_reason.is_empty(), "{now:?}");
    let j = wait_job_done(&c, now.job_id, SECS(15)).await;
    assert_eq!(schedule_fire(&j), (id, now.fire_ms, true));
    assert!(cl.schedule_runs(id).await.unwrap().runs.iter().any(|r| r.manual && r.job_id == now.job_id));

    // Delete: gone, and no run starts after it.
    cl.delete_schedule(id).await.unwrap();
    assert!(matches!(cl.get_schedule(id).await, Err(Error::NotFound(_))));
    assert!(matches!(cl.run_schedule_now(id).await, Err(Error::NotFound(_))));
    let after_delete = jobs_in(&cl, "tick").await.len();
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert_eq!(jobs_in(&cl, "tick").await.len(), after_delete, "no run after delete");

    // Overlap skip never had two live runs, skipped the fires in between,
    // and its runs never overlapped on the worker.
    let (most_live, polls) = poller.await.unwrap();
    assert!(polls > 20, "the poller read the schedule {polls} times");
    assert_eq!(most_live, 1, "overlap skip: at most one live run, and one was seen");
    let slow_runs = cl.schedule_runs(slow_id).await.unwrap();
    assert!(slow_runs.fires_skipped >= 2, "{slow_runs:?}");
    assert!(
        slow_runs
            .runs
            .iter()
            .any(|r| r.outcome == proto::RunOutcome::Skipped as i32 && r.reason.contains("overlap skip")),
        "{slow_runs:?}"
    );
    cl.delete_schedule(slow_id).await.unwrap();
    let mut spans: Vec<(u64, u64)> = Vec::new();
    for j in jobs_in(&cl, "slow").await {
        spans.extend(log.of_job(j.id).iter().map(|r| (r.start_ms, r.end_ms)));
    }
    spans.sort_unstable();
    assert!(spans.len() >= 2, "{spans:?}");
    assert!(spans.windows(2).all(|w| w[1].0 >= w[0].1), "runs overlapped: {spans:?}");

    // A trigger with a filter: the matching event's payload reaches the job;
    // the same event id again starts nothing; a non-matching event neither.
    let trigger = proto::TriggerSpec {
        namespace: "ev".into(),
        name: "orders-eu".into(),
        topic: "orders".into(),
        filter: [("region".to_string(), "eu".to_string())].into(),
        template: Some(proto::trigger_spec::Template::Job(proto::JobSpec {
            shards: 1,
            attempt_timeout_ms: 60_000,
            ..Default::default()
        })),
        debounce_ms: 0,
        debounce_key: String::new(),
    };
    let t = cl.create_trigger(trigger.clone()).await.unwrap();
    assert!(!t.duplicate);
    assert_eq!(
        cl.create_trigger(trigger.clone()).await.unwrap(),
        proto::CreateTriggerResponse { duplicate: true, ..t }
    );
    let taken = proto::TriggerSpec { topic: "returns".into(), ..trigger };
    assert!(matches!(cl.create_trigger(taken).await, Err(Error::AlreadyExists(_))));
    let event = |id: &str, region: &str| proto::PublishEventRequest {
        namespace: "ev".into(),
        topic: "orders".into(),
        event_id: id.into(),
        payload: format!("order for {region}").into_bytes(),
        attributes: BTreeMap::from([("region".to_string(), region.to_string())]).into_iter().collect(),
    };
    let r = cl.publish_event(event("e-1", "eu")).await.unwrap();
    assert!(!r.duplicate && r.runs.len() == 1 && r.runs[0].trigger_id == t.trigger_id, "{r:?}");
    let job_id = r.runs[0].job_id;
    assert_ne!(job_id, 0, "{r:?}");
    let again = cl.publish_event(event("e-1", "eu")).await.unwrap();
    assert!(again.duplicate && again.runs.is_empty(), "{again:?}");
    let us = cl.publish_event(event("e-2", "us")).await.unwrap();
    assert!(!us.duplicate && us.runs.is_empty(), "the filter does not match: {us:?}");
    let j = wait_job_done(&c, job_id, SECS(15)).await;
    match j.run_origin.as_ref().and_then(|o| o.source.as_ref()) {
        Some(Source::Event(e)) => assert_eq!((e.trigger_id, e.event_id.as_str()), (t.trigger_id, "e-1")),
        other => panic!("{other:?}"),
    }
    let ran = log.of_job(job_id);
    assert_eq!(ran.len(), 1);
    assert_eq!(ran[0].payload, b"order for eu", "the worker sees the event's payload");
    assert_eq!(jobs_in(&cl, "ev").await.len(), 1, "one job for the event, none for the duplicate or the filtered one");
    let listed = cl.list_triggers(proto::ListTriggersRequest { namespace: "ev".into(), ..Default::default() }).await;
    let listed = listed.unwrap().triggers;
    assert_eq!(listed.len(), 1);
    assert_eq!((listed[0].runs_started, listed[0].topic.as_str()), (1, "orders"));
    cl.delete_trigger(t.trigger_id).await.unwrap();

    // A workflow template: the event's payload reaches its first step's shard.
    let flow = baton_client::WorkflowBuilder::new("", "on-order")
        .step(baton_client::Step::job("first", proto::JobSpec { shards: 1, ..Default::default() }))
        .step(baton_client::Step::job("then", job("then")).depends_on(["first"]))
        .build();
    let wf_trigger = proto::TriggerSpec {
        namespace: "evwf".into(),
        name: "orders-flow".into(),
        topic: "orders".into(),
        template: Some(proto::trigger_spec::Template::Workflow(flow)),
        ..Default::default()
    };
    let wt = cl.create_trigger(wf_trigger).await.unwrap();
    let r = cl
        .publish_event(proto::PublishEventRequest {
            namespace: "evwf".into(),
            topic: "orders".into(),
            event_id: "w-1".into(),
            payload: b"flow order".to_vec(),
            ..Default::default()
        })
        .await
        .unwrap();
    assert!(r.runs.len() == 1 && r.runs[0].job_id == 0 && r.runs[0].workflow_id != 0, "{r:?}");
    let w = cl.get_workflow(r.runs[0].workflow_id).await.unwrap();
    match w.run_origin.as_ref().and_then(|o| o.source.as_ref()) {
        Some(Source::Event(e)) => assert_eq!((e.trigger_id, e.event_id.as_str()), (wt.trigger_id, "w-1")),
        other => panic!("{other:?}"),
    }
    let deadline = Instant::now() + SECS(20);
    let first_job = loop {
        let w = cl.get_workflow(r.runs[0].workflow_id).await.unwrap();
        if let Some(j) = w.steps.iter().find(|s| s.name == "first").map(|s| s.map_job_id).filter(|j| *j != 0) {
            break j;
        }
        assert!(Instant::now() < deadline, "the workflow's first step never started");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    wait_job_done(&c, first_job, SECS(15)).await;
    assert_eq!(log.of_job(first_job)[0].payload, b"flow order", "the first step's shard got the event's payload");
    cl.delete_trigger(wt.trigger_id).await.unwrap();
    let r = cl.publish_event(event("e-3", "eu")).await.unwrap();
    assert!(r.runs.is_empty(), "a deleted trigger starts nothing: {r:?}");
    assert!(matches!(cl.delete_trigger(t.trigger_id).await, Err(Error::NotFound(_))));

    // The not-before bound is refused at the edge, naming the field.
    let far =
        proto::JobSpec { namespace: "later".into(), not_before_ms: wall_ms() + 31 * 24 * 3600 * 1000, ..job("x") };
    let m = invalid_message(cl.submit(far).await);
    assert!(m.contains("not_before_ms"), "{m}");
}

fn baton(args: &[&str], endpoints: &str) -> (bool, String, String) {
    let out = Command::new(BIN).args(args).args(["--endpoints", endpoints]).output().unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn json(args: &[&str], endpoints: &str) -> serde_json::Value {
    let mut a = args.to_vec();
    a.push("--json");
    let (ok, out, err) = baton(&a, endpoints);
    assert!(ok, "baton {args:?} failed: {err}");
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("baton {args:?} printed no JSON ({e}): {out}"))
}

/// Run `baton ...` until `done` holds for its JSON (20 s at most).
fn wait_json(args: &[&str], eps: &str, what: &str, done: impl Fn(&serde_json::Value) -> bool) -> serde_json::Value {
    let deadline = Instant::now() + SECS(20);
    loop {
        let v = json(args, eps);
        if done(&v) {
            return v;
        }
        assert!(Instant::now() < deadline, "baton {args:?}: {what} never happened: {v}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The one-line error of a failing command.
fn fails(args: &[&str], eps: &str) -> String {
    let (ok, out, err) = baton(args, eps);
    assert!(!ok, "baton {args:?} succeeded: {out}");
    assert_eq!(err.trim().lines().count(), 1, "one line: {err}");
    err
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schedule_event_trigger_and_delayed_job_commands_run_end_to_end() {
    let _g = SERIAL.lock().await;
    let c = Cluster::start(3, Opts::default());
    c.wait_leader(SECS(15)).await;
    let log = Log::default();
    worker(&c, "cli-worker", 8, log.clone());
    let eps: Vec<String> = c.ports.values().map(|p| format!("127.0.0.1:{}", p.api)).collect();
    let eps = eps.join(",");
    let dir = tempfile::tempdir().unwrap();
    let job_file = dir.path().join("job.toml");
    std::fs::write(&job_file, "name = \"tick\"\npayloads = [\"cli-tick\"]\nattempt_timeout_ms = 60000\n").unwrap();
    let trig_file = dir.path().join("trigger.json");
    std::fs::write(&trig_file, r#"{"namespace": "cli", "shards": 1}"#).unwrap();
    let payload_file = dir.path().join("event.bin");
    std::fs::write(&payload_file, b"payload from a file").unwrap();
    let (job_file, trig_file) = (job_file.display().to_string(), trig_file.display().to_string());
    let payload_arg = format!("@{}", payload_file.display());

    tokio::task::spawn_blocking(move || {
        // schedule create: a 1-s cron, idempotent; bad zones are refused naming the field.
        let create = ["schedule", "create", "--name", "c", "--cron", "*/1 * * * * *", "--tz", "Europe/Berlin"];
        let mut args = create.to_vec();
        args.extend(["-f", &job_file, "--namespace", "cli", "--overlap", "allow", "--misfire", "fire-all:3"]);
        let made = json(&args, &eps);
        let id = made["schedule_id"].as_u64().expect("schedule_id");
        assert_eq!(made["duplicate"], false);
        assert!(made["next_fire_ms"].as_u64().is_some(), "{made}");
        assert_eq!(json(&args, &eps)["duplicate"], true);
        let id_s = id.to_string();
        let mut bad = create.to_vec();
        bad[7] = "Mars/Olympus";
        bad.extend(["-f", &job_file, "--namespace", "cli"]);
        let err = fails(&bad, &eps);
        assert!(err.contains("cadence.time_zone"), "{err}");
        let mut taken = create.to_vec();
        taken.extend(["-f", &job_file, "--namespace", "cli"]);
        let err = fails(&taken, &eps);
        assert!(err.contains("already exists"), "{err}");

        // get / list / runs: fire times, last runs, the zone.
        let s = wait_json(&["schedule", "get", &id_s], &eps, "2 runs", |s| s["runs_started"].as_u64() >= Some(2));
        for field in
            ["id", "cadence", "misfire", "overlap", "paused", "next_fire_ms", "upcoming_fire_ms", "recent_runs"]
        {
            assert!(s.get(field).is_some(), "schedule JSON lacks {field}: {s}");
        }
        assert_eq!(s["cadence"]["time_zone"], "Europe/Berlin");
        assert_eq!((s["misfire"].as_str(), s["misfire_max"].as_u64()), (Some("fire_all"), Some(3)));
        assert_eq!(s["upcoming_fire_ms"].as_array().unwrap().len(), 5);
        let l = json(&["schedule", "list", "--namespace", "cli"], &eps);
        assert_eq!(l["schedules"].as_array().unwrap().len(), 1);
        let (ok, table, _) = baton(&["schedule", "list", "--namespace", "cli"], &eps);
        assert!(
            ok && table.contains("next ") && table.contains("Europe/Berlin)") && table.contains("last "),
            "{table}"
        );
        let runs = json(&["schedule", "runs", &id_s], &eps);
        let first = &runs["runs"][0];
        assert!(
            first["job_id"].as_u64().is_some() && first["fire_ms"].as_u64().unwrap().is_multiple_of(1000),
            "{runs}"
        );

        // A run's job shows where it came from.
        let j = json(&["job", "get", &first["job_id"].as_u64().unwrap().to_string()], &eps);
        assert_eq!(j["run_origin"]["schedule_id"].as_u64(), Some(id), "{j}");
        assert_eq!(j["run_origin"]["fire_ms"], first["fire_ms"]);

        // update: same name, another cadence.
        let mut upd = vec!["schedule", "update", &id_s, "--name", "c", "--every", "2s", "-f", &job_file];
        upd.extend(["--namespace", "cli", "--overlap", "allow"]);
        assert!(json(&upd, &eps)["next_fire_ms"].as_u64().is_some());
        let s = json(&["schedule", "get", &id_s], &eps);
        assert_eq!(s["cadence"]["every_ms"], 2000, "{s}");
        let ups = s["upcoming_fire_ms"].as_array().unwrap();
        assert_eq!(ups[1].as_u64().unwrap() - ups[0].as_u64().unwrap(), 2000, "{s}");

        // pause / resume / run-now / delete.
        assert_eq!(json(&["schedule", "pause", &id_s], &eps)["paused"], true);
        assert_eq!(json(&["schedule", "resume", &id_s], &eps)["paused"], false);
        let now = json(&["schedule", "run-now", &id_s], &eps);
        assert!(now["job_id"].as_u64().is_some(), "{now}");
        assert_eq!(json(&["schedule", "delete", &id_s], &eps)["deleted"], true);
        let err = fails(&["schedule", "get", &id_s], &eps);
        assert!(err.contains("not found"), "{err}");

        // trigger create / list, event publish from a file, twice.
        let tr = json(
            &["trigger", "create", "--name", "t", "--topic", "orders", "-f", &trig_file, "--filter", "region=eu"],
            &eps,
        );
        let tid = tr["trigger_id"].as_u64().expect("trigger_id");
        let listed = json(&["trigger", "list", "--namespace", "cli"], &eps);
        assert_eq!(listed["triggers"][0]["filter"]["region"], "eu", "{listed}");
        let publish = ["event", "publish", "orders", "--namespace", "cli", "--payload", &payload_arg, "--id", "ev-1"];
        let mut p = publish.to_vec();
        p.extend(["--attr", "region=eu"]);
        let out = json(&p, &eps);
        assert_eq!((out["event_id"].as_str(), out["duplicate"].as_bool()), (Some("ev-1"), Some(false)));
        let job_id = out["runs"][0]["job_id"].as_u64().expect("a job started");
        assert_eq!(json(&p, &eps)["duplicate"], true);
        let j = wait_json(&["job", "get", &job_id.to_string()], &eps, "done", |j| j["status"] == "succeeded");
        assert_eq!(j["run_origin"]["trigger_id"].as_u64(), Some(tid));
        assert_eq!(j["run_origin"]["event_id"], "ev-1");
        assert_eq!(log.of_job(job_id)[0].payload, b"payload from a file");
        assert_eq!(json(&["trigger", "delete", &tid.to_string()], &eps)["deleted"], true);

        // job submit --in: not started before its time, which reads show.
        let sub = json(&["job", "submit", "--shards", "1", "--namespace", "cli-later", "--in", "2s"], &eps);
        let (jid, not_before) = (sub["job_id"].as_u64().unwrap(), sub["not_before_ms"].as_u64().unwrap());
        let (ok, text, _) = baton(&["job", "get", &jid.to_string()], &eps);
        assert!(ok && text.contains("starts at ") && text.contains('Z'), "{text}");
        assert_eq!(json(&["job", "get", &jid.to_string()], &eps)["not_before_ms"].as_u64(), Some(not_before));
        std::thread::sleep(Duration::from_millis(1000));
        assert!(log.of_job(jid).is_empty(), "started a second before its time");
        wait_json(&["job", "get", &jid.to_string()], &eps, "done", |j| j["status"] == "succeeded");
        let started = log.of_job(jid)[0].start_ms;
        assert!(started >= not_before, "started at {started}, before its time {not_before}");
        let err = fails(&["job", "submit", "--shards", "1", "--in", "31days"], &eps);
        assert!(err.contains("not_before_ms"), "{err}");
        let err = fails(&["job", "submit", "--shards", "1", "--at", "next tuesday"], &eps);
        assert!(err.contains("--at"), "{err}");
    })
    .await
    .unwrap();
}
