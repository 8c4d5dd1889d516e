//! The checker's self-test for schedules and event triggers: a healthy
//! history of three schedules and two triggers passes every invariant, and
//! each schedule invariant is shown to fail on an anomaly injected into a
//! copy of it, naming the schedule or event and the job involved.

mod common;

use baton_chaos::history::{
    Body, CompleteOutcome, Event, EventPublish, EventRunRef, FinalJob, FinalShard, FinalState, JobStatus,
    MisfirePolicy, OverlapPolicy, RunOf, ScheduleCadence, ScheduleCreate, TaskKey, TaskStatus,
};
use baton_chaos::{History, Invariant, check};
use common::{assert_caught, config, edited, final_state};

/// (job, run_of, created_ms, finished_ms) of every run in the healthy history.
fn runs() -> Vec<(u64, RunOf, u64, u64)> {
    let fire = |schedule, fire_ms| RunOf::Schedule { schedule, fire_ms, manual: false };
    let event = |trigger, id: &str| RunOf::Event { trigger, event_id: id.into() };
    vec![
        // Schedule 1: every second from 10 000, fire-all, overlap allow; runs overlap.
        (1, fire(1, 10_000), 10_004, 11_300),
        (2, fire(1, 11_000), 11_002, 11_800),
        (3, fire(1, 12_000), 12_010, 12_400),
        // Schedule 2: every second from 10 500, overlap skip; its slow first
        // run made the fire at 11 500 a skip.
        (4, fire(2, 10_500), 10_501, 12_100),
        (5, fire(2, 12_500), 12_502, 14_000),
        // Schedule 3: misfire skip, overlap allow: an outage skipped 11 200 and 12 200.
        (6, fire(3, 10_200), 10_205, 10_600),
        (7, fire(3, 13_200), 13_201, 13_500),
        // Event e1 ran on triggers 1 and 2, e2 on trigger 1 only.
        (8, event(1, "e1"), 11_100, 11_400),
        (9, event(2, "e1"), 11_100, 11_500),
        (10, event(1, "e2"), 12_600, 12_900),
    ]
}

fn schedule(
    client: &str,
    schedule: u64,
    name: &str,
    anchor_ms: u64,
    misfire: MisfirePolicy,
    overlap: OverlapPolicy,
) -> ScheduleCreate {
    ScheduleCreate {
        client: client.into(),
        schedule,
        namespace: "sched".into(),
        name: name.into(),
        cadence: ScheduleCadence::FixedRate { period_ms: 1_000, anchor_ms },
        misfire,
        misfire_grace_ms: 5_000,
        overlap,
    }
}

fn publish(event_id: &str, duplicate: bool, runs: &[(u64, u64)]) -> EventPublish {
    EventPublish {
        client: "e1".into(),
        namespace: "sched".into(),
        topic: "uploads".into(),
        event_id: event_id.into(),
        duplicate,
        runs: runs.iter().map(|&(trigger, job)| EventRunRef { trigger, job: Some(job) }).collect(),
    }
}

fn run_job(id: u64, run_of: RunOf, created_ms: u64, finished_ms: Option<u64>) -> FinalJob {
    let token = 100 + id;
    FinalJob {
        id,
        key: String::new(),
        status: JobStatus::Succeeded,
        shards: vec![FinalShard {
            shard: 0,
            status: TaskStatus::Succeeded,
            result: Some(format!("r{id}")),
            token: Some(token),
            latest_token: Some(token),
        }],
        origin: None,
        run_of: Some(run_of),
        created_ms: Some(created_ms),
        finished_ms,
    }
}

fn schedule_history() -> History {
    use MisfirePolicy::*;
    let mut h = History::new();
    h.schedule_create(100, schedule("s1", 1, "every", 10_000, FireAll { max: 1_000 }, OverlapPolicy::Allow));
    h.schedule_create(110, schedule("s1", 2, "slow", 10_500, Skip, OverlapPolicy::Skip));
    // A retried create answered duplicate names the same schedule again.
    h.schedule_create(120, schedule("s1", 2, "slow", 11_500, Skip, OverlapPolicy::Skip));
    h.schedule_create(130, schedule("s1", 3, "lossy", 10_200, Skip, OverlapPolicy::Allow));
    let mut t = 1_000;
    for (job, run_of, _, _) in runs() {
        if let RunOf::Event { .. } = run_of {
            continue;
        }
        let task = TaskKey::new(job, 0);
        h.assign(t, "w1", task, 100 + job);
        h.complete_invoke(t + 50, "w1", job, task, 100 + job, &format!("r{job}"));
        h.complete_reply(t + 60, "w1", job, CompleteOutcome::Ok, "");
        t += 100;
    }
    h.event_publish(t, publish("e1", false, &[(1, 8), (2, 9)]));
    h.event_publish(t + 10, publish("e1", true, &[]));
    h.event_publish(t + 20, publish("e2", false, &[(1, 10)]));
    for job in [8, 9, 10] {
        let task = TaskKey::new(job, 0);
        h.assign(t + 100, "w2", task, 100 + job);
        h.complete_invoke(t + 150, "w2", job, task, 100 + job, &format!("r{job}"));
        h.complete_reply(t + 160, "w2", job, CompleteOutcome::Ok, "");
        t += 100;
    }
    for s in 1..=3 {
        h.schedule_pause(t + 200, "s1", s);
    }
    let jobs = runs().into_iter().map(|(id, run_of, c, f)| run_job(id, run_of, c, Some(f))).collect();
    h.final_state(t + 500, FinalState { drained_at: Some(t + 400), jobs, workflows: Vec::new() });
    for node in 1..=3 {
        h.replica(t + 600, node, 40, "5c4ed");
    }
    h
}

/// The final record of `job`.
fn job(events: &mut [Event], id: u64) -> &mut FinalJob {
    final_state(events).jobs.iter_mut().find(|j| j.id == id).expect("job in the final state")
}

/// Drop `id` from the history: its grant, complete and final record.
fn drop_job(events: &mut Vec<Event>, id: u64) {
    events.retain(|e| match &e.body {
        Body::Assign(a) => a.job != id,
        Body::CompleteInvoke(c) => c.job != id,
        Body::CompleteOk(r) => r.op != id,
        _ => true,
    });
    final_state(events).jobs.retain(|j| j.id != id);
}

/// Add a run `id` to the final state (without grants: it ended cancelled).
fn add_run(events: &mut [Event], id: u64, run_of: RunOf, created_ms: u64) {
    let mut j = run_job(id, run_of, created_ms, Some(created_ms + 100));
    j.status = JobStatus::Cancelled;
    j.shards[0] = FinalShard { shard: 0, status: TaskStatus::Cancelled, result: None, token: None, latest_token: None };
    final_state(events).jobs.push(j);
}

#[test]
fn the_schedule_history_passes_every_invariant() {
    let report = check(&schedule_history(), &config());
    assert!(report.passed(), "{}", report.render_text());
    let notes = |inv| report.get(inv).notes.join("; ");
    assert!(
        notes(Invariant::ScheduleFireOnce).contains("3 schedules, 7 runs checked; 3 fire-all fire times"),
        "{}",
        report.render_text()
    );
    assert!(notes(Invariant::OverlapSkipExclusive).contains("1 overlap-skip schedules, 1 consecutive runs"));
    assert!(
        notes(Invariant::EventRunsOnce).contains("2 event ids published, 3 reported runs and 3 (trigger, event)"),
        "{}",
        report.render_text()
    );
}

// ---- schedule_fire_once ----------------------------------------------------

#[test]
fn two_runs_for_one_fire_time_are_caught() {
    // A second leader's Fire for 11 000 started a run too.
    let h = edited(&schedule_history(), |ev| {
        add_run(ev, 11, RunOf::Schedule { schedule: 1, fire_ms: 11_000, manual: false }, 11_150)
    });
    assert_caught(
        &h,
        &[Invariant::ScheduleFireOnce],
        &["schedule 1 (sched/every)", "2 runs for fire time 11000", "job 2, job 11", "at most one run"],
        Some(11),
        None,
    );
}

#[test]
fn a_duplicate_run_of_a_skip_schedule_is_caught_too() {
    let h = edited(&schedule_history(), |ev| {
        add_run(ev, 11, RunOf::Schedule { schedule: 3, fire_ms: 10_200, manual: false }, 10_700)
    });
    assert_caught(&h, &[Invariant::ScheduleFireOnce], &["schedule 3 (sched/lossy)", "fire time 10200"], Some(11), None);
}

#[test]
fn a_run_created_before_its_fire_time_is_caught() {
    let h = edited(&schedule_history(), |ev| job(ev, 2).created_ms = Some(10_990));
    assert_caught(
        &h,
        &[Invariant::ScheduleFireOnce],
        &["schedule 1 (sched/every)", "job 2 for fire time 11000", "created at 10990", "10 ms before"],
        Some(2),
        None,
    );
}

#[test]
fn a_missing_fire_all_run_is_caught() {
    let h = edited(&schedule_history(), |ev| drop_job(ev, 2));
    assert_caught(
        &h,
        &[Invariant::ScheduleFireOnce],
        &["schedule 1 (sched/every)", "no run for 1 fire time(s)", "first run (10000)", "last (12000): 11000"],
        None,
        None,
    );
}

#[test]
fn a_run_off_the_cadence_is_caught() {
    let h = edited(&schedule_history(), |ev| {
        job(ev, 7).run_of = Some(RunOf::Schedule { schedule: 3, fire_ms: 13_250, manual: false })
    });
    assert_caught(&h, &[Invariant::ScheduleFireOnce], &["job 7 is for 13250", "not a fire time"], Some(7), None);
}

#[test]
fn a_run_of_an_unknown_schedule_is_caught() {
    let h = edited(&schedule_history(), |ev| {
        add_run(ev, 11, RunOf::Schedule { schedule: 9, fire_ms: 11_000, manual: false }, 11_001)
    });
    assert_caught(
        &h,
        &[Invariant::ScheduleFireOnce],
        &["job 11", "run of schedule 9", "no acknowledged"],
        Some(11),
        None,
    );
}

// ---- overlap_skip_exclusive ------------------------------------------------

#[test]
fn an_overlap_skip_run_started_while_the_previous_was_live_is_caught() {
    // The fire at 11 500 started a run although job 4 was live until 12 100.
    let h = edited(&schedule_history(), |ev| {
        let j = job(ev, 5);
        j.run_of = Some(RunOf::Schedule { schedule: 2, fire_ms: 11_500, manual: false });
        j.created_ms = Some(11_501);
    });
    assert_caught(
        &h,
        &[Invariant::OverlapSkipExclusive],
        &["schedule 2 (sched/slow, overlap skip)", "job 5 (fire time 11500) started at 11501", "job 4", "until 12100"],
        Some(5),
        None,
    );
}

#[test]
fn an_overlap_skip_run_started_while_the_previous_never_finished_is_caught() {
    let h = edited(&schedule_history(), |ev| job(ev, 4).finished_ms = None);
    assert_caught(
        &h,
        &[Invariant::OverlapSkipExclusive],
        &["job 5 (fire time 12500)", "job 4 (fire time 10500) never finished"],
        Some(5),
        None,
    );
}

// ---- event_runs_once -------------------------------------------------------

#[test]
fn a_second_run_of_one_event_on_one_trigger_is_caught() {
    let h =
        edited(&schedule_history(), |ev| add_run(ev, 11, RunOf::Event { trigger: 1, event_id: "e1".into() }, 11_200));
    let r = assert_caught(
        &h,
        &[Invariant::EventRunsOnce],
        &["trigger 1 has 2 runs of event \"e1\"", "job 8", "job 11"],
        Some(11),
        None,
    );
    let v = &r.get(Invariant::EventRunsOnce).violations;
    assert!(v.iter().any(|v| v.message.contains("did not report it")), "{v:?}");
}

#[test]
fn a_reported_event_run_missing_from_the_final_state_is_caught() {
    let h = edited(&schedule_history(), |ev| drop_job(ev, 9));
    assert_caught(
        &h,
        &[Invariant::EventRunsOnce],
        &["event \"e1\"", "reported job 9 for trigger 2", "is not in the final state"],
        Some(9),
        None,
    );
}

#[test]
fn a_duplicate_publish_that_started_runs_is_caught() {
    let h = edited(&schedule_history(), |ev| {
        for e in ev.iter_mut() {
            if let Body::EventPublish(p) = &mut e.body
                && p.duplicate
            {
                p.runs = vec![EventRunRef { trigger: 1, job: Some(8) }];
            }
        }
    });
    assert_caught(
        &h,
        &[Invariant::EventRunsOnce],
        &["event \"e1\"", "answered duplicate but reported runs (job 8)"],
        None,
        None,
    );
}

#[test]
fn an_event_acknowledged_as_new_twice_is_caught() {
    let h = edited(&schedule_history(), |ev| {
        for e in ev.iter_mut() {
            if let Body::EventPublish(p) = &mut e.body {
                p.duplicate = false;
            }
        }
    });
    assert_caught(&h, &[Invariant::EventRunsOnce], &["event \"e1\"", "acknowledged as new 2 times"], None, None);
}

#[test]
fn a_run_of_an_event_nobody_published_is_caught() {
    let h =
        edited(&schedule_history(), |ev| add_run(ev, 11, RunOf::Event { trigger: 1, event_id: "e9".into() }, 13_000));
    assert_caught(
        &h,
        &[Invariant::EventRunsOnce],
        &["job 11", "event \"e9\"", "no acknowledged publish"],
        Some(11),
        None,
    );
}

#[test]
fn a_schedule_history_without_a_final_state_fails_closed() {
    let h = edited(&schedule_history(), |ev| ev.retain(|e| !matches!(e.body, Body::FinalState(_))));
    let want = [
        Invariant::NoLostJobs,
        Invariant::NoPhantomJobs,
        Invariant::ExactlyOnceCommit,
        Invariant::LivenessAfterHeal,
        Invariant::ScheduleFireOnce,
        Invariant::OverlapSkipExclusive,
        Invariant::EventRunsOnce,
    ];
    assert_caught(&h, &want, &["no final_state event"], None, None);
}

/// Schedule 1 (fire-all, catch-up bound 3) after an outage: its next fire
/// time, 13 000, was overdue by more than the 5 s grace when a leader came
/// back at 18 100, which ran 15 000, 16 000 and 17 000 (the newest 3) and
/// dropped 13 000 and 14 000.
fn caught_up(ev: &mut [Event], kept: &[u64]) {
    for e in ev.iter_mut() {
        if let Body::ScheduleCreate(c) = &mut e.body
            && c.schedule == 1
        {
            c.misfire = MisfirePolicy::FireAll { max: 3 };
        }
    }
    for (i, &fire) in kept.iter().enumerate() {
        let run_of = RunOf::Schedule { schedule: 1, fire_ms: fire, manual: false };
        add_run(ev, 20 + i as u64, run_of, 18_100 + i as u64);
    }
}

#[test]
fn a_fire_all_catch_up_that_dropped_the_oldest_missed_times_passes() {
    let h = edited(&schedule_history(), |ev| caught_up(ev, &[15_000, 16_000, 17_000]));
    let report = check(&h, &config());
    assert!(report.passed(), "{}", report.render_text());
    let notes = report.get(Invariant::ScheduleFireOnce).notes.join("; ");
    assert!(notes.contains("2 without one excused"), "{notes}");
}

#[test]
fn a_catch_up_that_kept_fewer_than_its_bound_is_caught() {
    // 16 000 was one of the newest 3 and is lost: the catch-up does not
    // excuse 13 000 and 14 000 either.
    let h = edited(&schedule_history(), |ev| caught_up(ev, &[15_000, 17_000]));
    assert_caught(
        &h,
        &[Invariant::ScheduleFireOnce],
        &["schedule 1 (sched/every)", "no run for 3 fire time(s)", "13000, 14000, 16000"],
        None,
        None,
    );
}

#[test]
fn a_catch_up_cut_short_by_the_workloads_pause_passes_and_without_the_pause_is_caught() {
    // Only 15 000 and 16 000 ran before the pause stopped the schedule.
    let h = edited(&schedule_history(), |ev| caught_up(ev, &[15_000, 16_000]));
    let report = check(&h, &config());
    assert!(report.passed(), "{}", report.render_text());
    let h = edited(&h, |ev| ev.retain(|e| !matches!(&e.body, Body::SchedulePause(p) if p.schedule == 1)));
    assert_caught(
        &h,
        &[Invariant::ScheduleFireOnce],
        &["schedule 1 (sched/every)", "no run for 2 fire time(s)", "13000, 14000"],
        None,
        None,
    );
}
