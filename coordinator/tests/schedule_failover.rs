//! The "done when" of the schedules issue: the leader is killed again and
//! again across the fire times of 1-second schedules for 30 s. Under
//! fire-all every fire time in the window has exactly one run, none before
//! its time; under overlap skip no two runs are ever live at once; under
//! misfire skip no run starts later than its grace. Judged from the runs'
//! committed records (their origin's fire time, and their created and
//! finished log times), never from the test's clock.

mod common;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use baton_client::proto::run_origin::Source;
use baton_client::{Client, ClientConfig, ScheduleBuilder, TaskContext, Worker, proto};
use common::*;

const SECS: fn(u64) -> Duration = Duration::from_secs;
/// How long the schedules fire while leaders are killed.
const CHAOS: Duration = Duration::from_secs(30);
/// The misfire grace of the `late` schedule: shorter than a failover, so
/// fires delayed by one are missed and skipped.
const LATE_GRACE_MS: u64 = 300;

fn client(c: &Cluster) -> Client {
    let mut cfg = ClientConfig::new(c.endpoints());
    cfg.deadline = SECS(30);
    cfg.rpc_timeout = SECS(3);
    Client::new(cfg).unwrap()
}

/// An SDK worker: payload `sleep:MS` sleeps that long, anything else returns at once.
fn worker(c: &Cluster, name: &str) {
    let w = Worker::builder()
        .endpoints(c.endpoints())
        .name(name)
        .capacity(16)
        .handler(move |ctx: TaskContext| async move {
            let text = String::from_utf8_lossy(&ctx.payload).into_owned();
            if let Some(ms) = text.strip_prefix("sleep:").and_then(|m| m.parse::<u64>().ok()) {
                tokio::time::sleep(Duration::from_millis(ms)).await;
            }
            Ok(b"ok".to_vec())
        })
        .build()
        .unwrap();
    tokio::spawn(w.run(std::future::pending()));
}

fn job(payload: &str) -> proto::JobSpec {
    proto::JobSpec { payloads: vec![payload.as_bytes().to_vec()], attempt_timeout_ms: 60_000, ..Default::default() }
}

/// A run as committed: its fire time and its job's created and finished log times.
#[derive(Debug, Clone, Copy)]
struct Run {
    job: u64,
    fire_ms: u64,
    created_ms: u64,
    finished_ms: u64,
}

/// Every cadence-started run of `ns`, by fire time; panics on a fire time with two runs.
async fn runs_of(cl: &Client, ns: &str) -> BTreeMap<u64, Run> {
    let mut runs = BTreeMap::new();
    let mut token = 0;
    loop {
        let page = cl
            .list(proto::ListJobsRequest {
                namespace: ns.into(),
                page_size: 500,
                page_token: token,
                ..Default::default()
            })
            .await
            .unwrap();
        for j in &page.jobs {
            let Some(Source::Schedule(o)) = j.run_origin.as_ref().and_then(|o| o.source.as_ref()) else {
                panic!("job {} of {ns} has no schedule origin", j.id)
            };
            if o.manual {
                continue;
            }
            let run = Run { job: j.id, fire_ms: o.fire_ms, created_ms: j.created_ms, finished_ms: j.finished_ms };
            if let Some(other) = runs.insert(o.fire_ms, run) {
                panic!("{ns}: fire time {} has two runs: jobs {} and {}", o.fire_ms, other.job, j.id);
            }
        }
        if page.next_page_token == 0 {
            return runs;
        }
        token = page.next_page_token;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leaders_killed_across_fire_times_leave_one_run_per_fire_time_and_the_policies_hold() {
    let mut c = Cluster::start(3, Opts::default());
    c.wait_leader(SECS(15)).await;
    let cl = client(&c);
    worker(&c, "w1");
    worker(&c, "w2");

    let all = ScheduleBuilder::every("all", "all", SECS(1))
        .job(job("tick"))
        .overlap(proto::OverlapPolicy::Allow)
        .misfire_fire_all(1000)
        .build();
    let cron = ScheduleBuilder::cron("cron", "cron", "* * * * * *", "Europe/Berlin")
        .job(job("tick"))
        .overlap(proto::OverlapPolicy::Allow)
        .misfire_fire_all(1000)
        .build();
    let slow = ScheduleBuilder::every("slow", "slow", SECS(1))
        .job(job("sleep:1500"))
        .overlap(proto::OverlapPolicy::Skip)
        .misfire_fire_all(1000)
        .build();
    let late = ScheduleBuilder::every("late", "late", SECS(1))
        .job(job("tick"))
        .overlap(proto::OverlapPolicy::Allow)
        .misfire_skip()
        .misfire_grace(Duration::from_millis(LATE_GRACE_MS))
        .build();
    let mut ids = BTreeMap::new();
    for (name, spec) in [("all", all), ("cron", cron), ("slow", slow), ("late", late)] {
        ids.insert(name, cl.create_schedule(spec).await.unwrap().schedule_id);
    }

    // Kill the leader at a different point of the second each time, and
    // bring it back once a new leader is up.
    let start = Instant::now();
    let mut kills = 0;
    let offsets_ms = [0u64, 950, 300, 650, 100, 800];
    while start.elapsed() < CHAOS {
        tokio::time::sleep(SECS(2)).await;
        let leader = c.wait_leader(SECS(20)).await;
        let into_second = (wall_ms() % 1000) as i64;
        let wait = (offsets_ms[kills % offsets_ms.len()] as i64 - into_second).rem_euclid(1000);
        tokio::time::sleep(Duration::from_millis(wait as u64)).await;
        c.kill(leader);
        kills += 1;
        let others: Vec<u64> = c.live();
        c.wait_leader_among(&others, SECS(20)).await;
        c.spawn(leader, true);
    }
    c.wait_leader(SECS(20)).await;
    for id in ids.values() {
        cl.pause_schedule(*id).await.unwrap();
    }
    // Let every run finish, so finished times are known.
    let deadline = Instant::now() + SECS(60);
    loop {
        let mut live = 0;
        for id in ids.values() {
            live += cl.get_schedule(*id).await.unwrap().live_runs.len();
        }
        if live == 0 {
            break;
        }
        assert!(Instant::now() < deadline, "runs still live 60 s after the schedules were paused");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    eprintln!("{kills} leader kills in {:?}", start.elapsed());
    assert!(kills >= 8, "only {kills} kills");

    // Fire-all: every fire time from the first to the last has exactly one
    // run (runs_of refuses a second), and none was created before its time.
    for (name, period) in [("all", 1000), ("cron", 1000)] {
        let runs = runs_of(&cl, name).await;
        let first = *runs.keys().next().unwrap();
        let last = *runs.keys().last().unwrap();
        let missing: Vec<u64> = (first..=last).step_by(period).filter(|t| !runs.contains_key(t)).collect();
        assert!(missing.is_empty(), "{name}: fire times without a run: {missing:?}");
        assert!(runs.len() >= 25, "{name}: only {} runs in {:?}", runs.len(), CHAOS);
        for r in runs.values() {
            assert!(
                r.created_ms >= r.fire_ms,
                "{name}: job {} created at {} before its fire time",
                r.job,
                r.created_ms
            );
        }
        let s = cl.get_schedule(ids[name]).await.unwrap();
        assert_eq!(s.fires_skipped, 0, "{name}: fire-all skipped fires: {s:#?}");
        eprintln!("{name}: {} runs, one per fire time from {first} to {last}", runs.len());
    }
    if let Some(r) = runs_of(&cl, "cron").await.values().next() {
        assert_eq!(r.fire_ms % 1000, 0, "cron fires on whole seconds");
    }

    // Overlap skip: each run was created after the one before it finished.
    let slow = runs_of(&cl, "slow").await;
    let ordered: Vec<Run> = slow.values().copied().collect();
    for pair in ordered.windows(2) {
        assert!(
            pair[1].created_ms >= pair[0].finished_ms,
            "slow: job {} started at {} while job {} was live until {}",
            pair[1].job,
            pair[1].created_ms,
            pair[0].job,
            pair[0].finished_ms
        );
    }
    let s = cl.get_schedule(ids["slow"]).await.unwrap();
    assert!(s.fires_skipped > 0 && ordered.len() >= 8, "slow: {} runs, {} skipped", ordered.len(), s.fires_skipped);

    // Misfire skip: no run started later than its grace after its time.
    let late = runs_of(&cl, "late").await;
    for r in late.values() {
        assert!(
            r.created_ms <= r.fire_ms + LATE_GRACE_MS,
            "late: job {} fired {} ms after its time, past the {LATE_GRACE_MS}-ms grace",
            r.job,
            r.created_ms - r.fire_ms
        );
    }
    let s = cl.get_schedule(ids["late"]).await.unwrap();
    eprintln!("late: {} runs, {} fire times missed and skipped", late.len(), s.fires_skipped);
    assert!(late.len() >= 15, "late: only {} runs", late.len());
}

fn wall_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as u64
}
