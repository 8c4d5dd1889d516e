//! The checker's self-test: a healthy history passes every invariant, and each
//! injected anomaly is caught by exactly the invariants it breaks, with a
//! message naming the job, task and token involved. A checker that cannot
//! fail proves nothing.

mod common;

use baton_chaos::history::{
    Assign, Body, CompleteInvoke, CompleteReply, FinalJob, FinalShard, JobStatus, NemesisPhase, OpFailure, ReadOk,
    ReadReply, SubmitOk, TaskStatus,
};
use baton_chaos::{Config, History, Invariant, check};
use common::{
    BOUND_MS, FAILOVER_MS, LAST_HEAL_T, LEADER_KILL_T, REASSIGN_BOUND_MS, WORKER_KILL_T, assert_caught, config, edited,
    final_shard, final_state, position, reassign_history, valid_history,
};

fn cancelled_job(id: u64, key: &str) -> FinalJob {
    FinalJob {
        id,
        key: key.into(),
        status: JobStatus::Cancelled,
        shards: vec![FinalShard {
            shard: 0,
            status: TaskStatus::Cancelled,
            result: None,
            token: None,
            latest_token: None,
        }],
        origin: None,
        run_of: None,
        created_ms: None,
        finished_ms: None,
    }
}

#[test]
fn the_valid_history_passes_every_invariant() {
    let report = check(&valid_history(), &config());
    assert!(report.passed(), "{}", report.render_text());
    assert_eq!(report.invariants.len(), Invariant::ALL.len());
    assert_eq!(report.violations().count(), 0);
    // The checks looked at something: each one says what it examined.
    for r in &report.invariants {
        assert!(!r.notes.is_empty(), "{} left no note", r.invariant);
    }
    let liveness = &report.get(Invariant::LivenessAfterHeal).notes;
    assert!(liveness.iter().any(|n| n.contains("drained 2500 ms after the last heal")), "{liveness:?}");
}

#[test]
fn the_valid_history_also_passes_with_the_default_config() {
    assert!(check(&valid_history(), &Config::default()).passed());
}

#[test]
fn a_lost_acknowledged_job_is_caught() {
    let h = edited(&valid_history(), |ev| final_state(ev).jobs.retain(|j| j.id != 1));
    assert_caught(&h, &[Invariant::NoLostJobs], &["job 1 ", "c1#1", "not in the final state"], Some(1), None);
}

#[test]
fn an_acknowledged_job_read_as_not_found_is_caught() {
    // The second read of job 2 (after its acknowledgement) answers not found.
    let h = edited(&valid_history(), |ev| {
        let i = position(ev, |b| matches!(b, Body::ReadOk(r) if r.op == 4));
        ev[i].body = Body::ReadNotFound(ReadReply { client: "r1".into(), op: 4 });
    });
    assert_caught(&h, &[Invariant::NoLostJobs], &["r1#4", "not found", "job 2"], Some(2), None);
}

#[test]
fn a_finished_job_read_as_running_again_is_caught() {
    let h = edited(&valid_history(), |ev| {
        let i = position(ev, |b| matches!(b, Body::ReadOk(r) if r.op == 4));
        ev[i].body = Body::ReadOk(ReadOk { client: "r1".into(), op: 4, status: JobStatus::Running });
    });
    assert_caught(
        &h,
        &[Invariant::NoLostJobs],
        &["job 2", "succeeded", "running", "a finished job changed"],
        Some(2),
        None,
    );
}

#[test]
fn a_final_state_contradicting_a_finished_read_is_caught() {
    let h = edited(&valid_history(), |ev| {
        final_state(ev).jobs.iter_mut().find(|j| j.id == 2).unwrap().status = JobStatus::Cancelled;
    });
    assert_caught(&h, &[Invariant::NoLostJobs], &["job 2", "succeeded", "cancelled"], Some(2), None);
}

#[test]
fn a_lost_shard_of_an_unacknowledged_job_is_caught() {
    // Job 3's submit timed out, but workers were granted its tasks, so it exists.
    let h = edited(&valid_history(), |ev| {
        final_state(ev).jobs.iter_mut().find(|j| j.id == 3).unwrap().shards.retain(|s| s.shard != 1)
    });
    assert_caught(&h, &[Invariant::NoLostJobs], &["job 3 shard 1", "token 14"], Some(3), Some(1));
}

#[test]
fn a_phantom_job_with_a_key_never_submitted_is_caught() {
    let h = edited(&valid_history(), |ev| final_state(ev).jobs.push(cancelled_job(9, "k-never")));
    assert_caught(&h, &[Invariant::NoPhantomJobs], &["job 9", "k-never", "no submit"], Some(9), None);
}

#[test]
fn a_phantom_job_from_a_refused_submit_is_caught() {
    let h = edited(&valid_history(), |ev| final_state(ev).jobs.push(cancelled_job(9, "k-epsilon")));
    assert_caught(&h, &[Invariant::NoPhantomJobs], &["job 9", "k-epsilon", "refused", "c1#3"], Some(9), None);
}

#[test]
fn two_jobs_with_one_idempotency_key_are_caught() {
    // k-beta's first submit timed out; a duplicate job for it is the classic
    // non-idempotent retry.
    let h = edited(&valid_history(), |ev| final_state(ev).jobs.push(cancelled_job(9, "k-beta")));
    assert_caught(&h, &[Invariant::NoPhantomJobs], &["job 2 and job 9", "k-beta"], Some(9), None);
}

#[test]
fn a_retry_acknowledged_as_another_job_is_caught() {
    let h = edited(&valid_history(), |ev| {
        let i = position(ev, |b| matches!(b, Body::SubmitInfo(OpFailure { client, op: 1, .. }) if client == "c2"));
        ev[i].body = Body::SubmitOk(SubmitOk { client: "c2".into(), op: 1, job: 6 });
        final_state(ev).jobs.push(cancelled_job(6, "k-beta"));
    });
    let r = assert_caught(&h, &[Invariant::NoPhantomJobs], &["k-beta", "job 2", "job 6"], None, None);
    assert!(r.violations().any(|v| v.message.contains("acknowledged as different jobs")), "{}", r.render_text());
}

#[test]
fn a_committed_token_that_is_not_the_latest_is_caught() {
    // The zombie's result is committed although the task was regranted.
    let h = edited(&valid_history(), |ev| {
        let sh = final_shard(final_state(ev), 1, 1);
        sh.token = Some(11);
        sh.result = Some("a1-zombie".into());
    });
    let r = assert_caught(
        &h,
        &[Invariant::ExactlyOnceCommit],
        &["job 1 shard 1", "committed token 11", "latest token granted for it is 15"],
        Some(1),
        Some(1),
    );
    // The zombie's complete was fenced, so it cannot be the commit's source,
    // and w2's acknowledged commit is not the one that stands.
    let msgs: Vec<&str> = r.violations().map(|v| v.message.as_str()).collect();
    assert!(msgs.iter().any(|m| m.contains("every complete with that token was refused")), "{msgs:?}");
    assert!(msgs.iter().any(|m| m.contains("w2#3") && m.contains("commits token 11")), "{msgs:?}");
}

#[test]
fn two_acknowledged_commits_of_one_task_are_caught() {
    // w3's complete of (3,1) timed out; pretend it was acknowledged. The task
    // was regranted to w1 and committed again: a double commit.
    let h = edited(&valid_history(), |ev| {
        let i =
            position(ev, |b| matches!(b, Body::CompleteInfo(CompleteReply { worker, op: 2, .. }) if worker == "w3"));
        ev[i].body = Body::CompleteOk(CompleteReply { worker: "w3".into(), op: 2, detail: String::new() });
    });
    assert_caught(
        &h,
        &[Invariant::ExactlyOnceCommit],
        &["job 3 shard 1", "committed twice", "token 14", "token 20"],
        Some(3),
        Some(1),
    );
}

#[test]
fn two_committed_records_for_one_task_are_caught() {
    let h = edited(&valid_history(), |ev| {
        let job = final_state(ev).jobs.iter_mut().find(|j| j.id == 3).unwrap();
        job.shards.push(FinalShard {
            shard: 1,
            status: TaskStatus::Succeeded,
            result: Some("c1".into()),
            token: Some(14),
            latest_token: Some(20),
        });
    });
    assert_caught(
        &h,
        &[Invariant::ExactlyOnceCommit],
        &["job 3 shard 1", "2 records", "token 14", "token 20"],
        Some(3),
        Some(1),
    );
}

#[test]
fn a_committed_result_no_complete_sent_is_caught() {
    let h = edited(&valid_history(), |ev| final_shard(final_state(ev), 2, 0).result = Some("forged".into()));
    assert_caught(
        &h,
        &[Invariant::ExactlyOnceCommit],
        &["job 2 shard 0", "\"forged\"", "token 12", "\"b0\""],
        Some(2),
        Some(0),
    );
}

#[test]
fn an_accepted_stale_token_is_caught() {
    // The zombie w1's token-11 complete is answered ok although token 15 was
    // granted before it was invoked. Accepting it is also a second commit of
    // the task (w2 committed 15), so exactly_once_commit fails with fencing.
    let h = edited(&valid_history(), |ev| {
        let i =
            position(ev, |b| matches!(b, Body::CompleteFenced(CompleteReply { worker, op: 2, .. }) if worker == "w1"));
        ev[i].body = Body::CompleteOk(CompleteReply { worker: "w1".into(), op: 2, detail: String::new() });
    });
    let r = assert_caught(
        &h,
        &[Invariant::Fencing, Invariant::ExactlyOnceCommit],
        &["job 1 shard 1", "token 11"],
        Some(1),
        Some(1),
    );
    let fencing = &r.get(Invariant::Fencing).violations;
    assert_eq!(fencing.len(), 1, "{}", r.render_text());
    assert!(fencing[0].message.contains("token 15 had already been granted to w2"), "{}", fencing[0].message);
    assert_eq!(fencing[0].token, Some(11));
}

#[test]
fn a_decreasing_token_is_caught() {
    let h = edited(&valid_history(), |ev| {
        let i = position(ev, |b| matches!(b, Body::Assign(a) if a.token == 15));
        let late = Assign { worker: "w3".into(), job: 1, shard: 1, token: 9, step: None };
        ev.insert(i + 1, ev[i].clone());
        ev[i + 1].body = Body::Assign(late);
    });
    assert_caught(
        &h,
        &[Invariant::Fencing],
        &["job 1 shard 1", "token 9", "after token 15", "strictly increase"],
        Some(1),
        Some(1),
    );
}

#[test]
fn one_token_granted_to_two_workers_is_caught() {
    let h = edited(&valid_history(), |ev| {
        let i = position(ev, |b| matches!(b, Body::Assign(a) if a.token == 10));
        ev.insert(i + 1, ev[i].clone());
        ev[i + 1].body = Body::Assign(Assign { worker: "w2".into(), job: 1, shard: 0, token: 10, step: None });
    });
    assert_caught(&h, &[Invariant::Fencing], &["job 1 shard 0", "token 10", "both w1", "w2"], Some(1), Some(0));
}

#[test]
fn a_final_state_that_forgot_a_grant_is_caught() {
    let h = edited(&valid_history(), |ev| final_shard(final_state(ev), 4, 0).latest_token = Some(16));
    assert_caught(&h, &[Invariant::Fencing], &["job 4 shard 0", "latest token is 16", "token 18"], Some(4), Some(0));
}

#[test]
fn divergent_replicas_are_caught() {
    let h = edited(&valid_history(), |ev| {
        let i = position(ev, |b| matches!(b, Body::Replica(r) if r.node == 2));
        if let Body::Replica(r) = &mut ev[i].body {
            r.state_hash = "9f2c4e02".into();
        }
    });
    assert_caught(
        &h,
        &[Invariant::ReplicaConvergence],
        &["applied index 40", "node 1 = 9f2c4e01", "node 2 = 9f2c4e02"],
        None,
        None,
    );
}

#[test]
fn a_task_left_pending_after_heal_is_caught() {
    let h = edited(&valid_history(), |ev| {
        let state = final_state(ev);
        final_shard(state, 4, 0).status = TaskStatus::Pending;
        state.jobs.iter_mut().find(|j| j.id == 4).unwrap().status = JobStatus::Running;
    });
    assert_caught(&h, &[Invariant::LivenessAfterHeal], &["job 4 shard 0", "still pending"], Some(4), Some(0));
}

#[test]
fn a_job_status_that_never_finished_is_caught() {
    let h = edited(&valid_history(), |ev| {
        final_state(ev).jobs.iter_mut().find(|j| j.id == 1).unwrap().status = JobStatus::Running;
    });
    assert_caught(&h, &[Invariant::LivenessAfterHeal], &["job 1 ", "still running"], Some(1), None);
}

#[test]
fn an_exceeded_liveness_bound_is_caught() {
    let late = LAST_HEAL_T + BOUND_MS + 1;
    let h = edited(&valid_history(), |ev| final_state(ev).drained_at = Some(late));
    assert_caught(
        &h,
        &[Invariant::LivenessAfterHeal],
        &[&format!("drained {} ms after the last heal", BOUND_MS + 1), &format!("bound of {BOUND_MS} ms")],
        None,
        None,
    );
    // Exactly at the bound is fine.
    let h = edited(&valid_history(), |ev| final_state(ev).drained_at = Some(LAST_HEAL_T + BOUND_MS));
    assert!(check(&h, &config()).passed());
}

#[test]
fn a_final_state_read_before_the_last_heal_is_caught() {
    let h = edited(&valid_history(), |ev| {
        let i = position(ev, |b| matches!(b, Body::Nemesis(n) if n.phase == NemesisPhase::Heal && n.name == "kill"));
        let heal = ev.remove(i);
        ev.push(heal);
    });
    assert_caught(&h, &[Invariant::LivenessAfterHeal], &["before the last heal", "kill"], None, None);
}

#[test]
fn a_history_without_a_final_state_fails_closed() {
    let h = edited(&valid_history(), |ev| ev.retain(|e| !matches!(e.body, Body::FinalState(_))));
    let want = [
        Invariant::NoLostJobs,
        Invariant::NoPhantomJobs,
        Invariant::ExactlyOnceCommit,
        Invariant::LivenessAfterHeal,
        Invariant::ReassignmentBound,
    ];
    assert_caught(&h, &want, &["no final_state event"], None, None);
}

#[test]
fn a_reply_without_an_invoke_is_caught() {
    let mut h = valid_history();
    h.complete_reply(9_500, "w9", 77, baton_chaos::history::CompleteOutcome::Ok, "");
    assert_caught(&h, &[Invariant::WellFormed], &["w9#77", "never invoked"], None, None);
}

#[test]
fn a_job_listed_twice_in_the_final_state_is_caught() {
    let h = edited(&valid_history(), |ev| {
        let state = final_state(ev);
        let dup = state.jobs[1].clone();
        state.jobs.push(dup);
    });
    assert_caught(&h, &[Invariant::WellFormed], &["job 2 is listed 2 times"], Some(2), None);
}

// ---- reassignment_bound: a dead worker's tasks are granted again within
// ttl + check + slack, counted from the last leader takeover that overlapped.

/// `reassign_history` with the `t` of the first event matching `pred` set to `t`.
fn retimed(h: &History, t: u64, pred: impl Fn(&Body) -> bool) -> History {
    edited(h, |ev| {
        let i = position(ev, pred);
        ev[i].t = t;
    })
}

fn is_regrant_of_shard_1(b: &Body) -> bool {
    matches!(b, Body::Assign(a) if a.shard == 1 && a.token == 14)
}

#[test]
fn the_valid_histories_measure_the_reassignment_bound() {
    let report = check(&reassign_history(), &config());
    assert!(report.passed(), "{}", report.render_text());
    let notes = &report.get(Invariant::ReassignmentBound).notes;
    // (1,0) in 1400 ms, (1,1) in 4500 ms thanks to the failover, (1,2) finished.
    let want =
        format!("3 held tasks: 2 granted again in time (longest 4500 ms after its fault; bound {REASSIGN_BOUND_MS}");
    let excused = "1 of them later than that, within a deadline restarted by one of";
    assert!(
        notes.iter().any(|n| n.contains(&want) && n.contains(excused) && n.contains("1 finished or cancelled first")),
        "{notes:?}"
    );

    let report = check(&valid_history(), &config());
    let notes = &report.get(Invariant::ReassignmentBound).notes;
    let want = "1 held tasks: 1 granted again in time (longest 1300 ms after its fault; bound 2600 ms = ttl 1500 + \
                check 100 + slack 1000; 0 of them later than that";
    assert!(notes.iter().any(|n| n.contains(want)), "{notes:?}");
}

#[test]
fn a_regrant_later_than_ttl_plus_check_plus_slack_without_failover_is_caught() {
    // The same run without the leader kill: nothing excuses (1,1)'s 4500 ms.
    let h = edited(&reassign_history(), |ev| {
        ev.retain(|e| match &e.body {
            Body::Nemesis(n) => n.name != "kill-leader",
            Body::Leader(l) => l.term == 1,
            _ => true,
        })
    });
    assert_caught(
        &h,
        &[Invariant::ReassignmentBound],
        &[
            "job 1 shard 1",
            "w1 held token 11",
            "kill-worker stopped it",
            "token 14, to w3",
            "4500 ms later",
            &format!("allowed {REASSIGN_BOUND_MS} ms"),
            "no leader change overlapped",
        ],
        Some(1),
        Some(1),
    );
    // Exactly at the plain bound passes.
    let in_time = retimed(&h, WORKER_KILL_T + REASSIGN_BOUND_MS, is_regrant_of_shard_1);
    assert!(check(&in_time, &config()).passed(), "{}", check(&in_time, &config()).render_text());
}

#[test]
fn a_regrant_later_than_the_failover_allows_is_caught() {
    // The takeover by the leader kill restarts the clock at most FAILOVER_MS
    // after the kill; past that plus the bound, the failover excuses nothing.
    let deadline = LEADER_KILL_T + FAILOVER_MS + REASSIGN_BOUND_MS;
    let h = retimed(&reassign_history(), deadline + 1, is_regrant_of_shard_1);
    assert_caught(
        &h,
        &[Invariant::ReassignmentBound],
        &[
            "job 1 shard 1",
            &format!("{} ms later", deadline + 1 - WORKER_KILL_T),
            &format!("allowed {} ms", deadline - WORKER_KILL_T),
            "counted from the takeover by kill-leader start",
        ],
        Some(1),
        Some(1),
    );
    // Exactly at the deadline is fine.
    let h = retimed(&reassign_history(), deadline, is_regrant_of_shard_1);
    assert!(check(&h, &config()).passed(), "{}", check(&h, &config()).render_text());
}

#[test]
fn a_task_never_granted_again_is_caught() {
    // (1,1) is never granted again: its lease never ran out and it is still
    // running when the final state is read. That is also a liveness failure.
    let h = edited(&reassign_history(), |ev| {
        ev.retain(|e| match &e.body {
            Body::Assign(a) => a.token != 14,
            Body::CompleteInvoke(c) => c.token != 14,
            Body::CompleteOk(r) => r.worker != "w3",
            _ => true,
        });
        let state = final_state(ev);
        *final_shard(state, 1, 1) =
            FinalShard { shard: 1, status: TaskStatus::Running, result: None, token: None, latest_token: Some(11) };
        state.jobs[0].status = JobStatus::Running;
    });
    assert_caught(
        &h,
        &[Invariant::LivenessAfterHeal, Invariant::ReassignmentBound],
        &["job 1 shard 1", "still running"],
        Some(1),
        Some(1),
    );
    let r = check(&h, &config());
    let v = &r.get(Invariant::ReassignmentBound).violations;
    assert_eq!(v.len(), 1, "{}", r.render_text());
    assert!(v[0].message.contains("no later attempt was ever granted"), "{}", v[0].message);
    assert!(v[0].message.contains("5500 ms after the fault"), "{}", v[0].message);
    assert_eq!(v[0].token, Some(11));
}

#[test]
fn a_zombie_whose_lease_never_ran_out_and_committed_late_is_caught() {
    // w1 is paused instead of killed, its lease never runs out, nothing is
    // granted again, and after it resumes its old attempt commits. Every
    // other invariant holds: only the bound shows the lease was kept.
    let late = LEADER_KILL_T + FAILOVER_MS + REASSIGN_BOUND_MS + 100;
    let h = edited(&reassign_history(), |ev| {
        for e in ev.iter_mut() {
            if let Body::Nemesis(n) = &mut e.body
                && n.name == "kill-worker"
            {
                n.name = "pause-worker".into();
            }
        }
        let i = position(ev, is_regrant_of_shard_1);
        ev[i].t = late - 10;
        ev[i].body = Body::Assign(Assign { worker: "w1".into(), job: 1, shard: 1, token: 11, step: None }); // redelivered on resume
        let i = position(ev, |b| matches!(b, Body::CompleteInvoke(c) if c.token == 14));
        ev[i].t = late;
        ev[i].body = Body::CompleteInvoke(CompleteInvoke {
            worker: "w1".into(),
            op: 2,
            job: 1,
            shard: 1,
            token: 11,
            result: "r1".into(),
        });
        let i = position(ev, |b| matches!(b, Body::CompleteOk(r) if r.worker == "w3"));
        ev[i].t = late + 10;
        ev[i].body = Body::CompleteOk(CompleteReply { worker: "w1".into(), op: 2, detail: String::new() });
        let sh = final_shard(final_state(ev), 1, 1);
        sh.token = Some(11);
        sh.latest_token = Some(11);
    });
    assert_caught(
        &h,
        &[Invariant::ReassignmentBound],
        &[
            "job 1 shard 1",
            "pause-worker stopped it",
            "no later attempt was ever granted",
            "committed from complete by w1#2 with token 11",
            "lease never ran out",
        ],
        Some(1),
        Some(1),
    );
}

#[test]
fn without_a_run_config_the_bound_is_not_measured() {
    // Older histories and the simulation tier record no config: the check
    // says so and does not judge, even a late regrant.
    let late = LEADER_KILL_T + FAILOVER_MS + REASSIGN_BOUND_MS + 1;
    let h = edited(&retimed(&reassign_history(), late, is_regrant_of_shard_1), |ev| {
        ev.retain(|e| !matches!(e.body, Body::Config(_)))
    });
    let r = check(&h, &config());
    assert!(r.passed(), "{}", r.render_text());
    let notes = &r.get(Invariant::ReassignmentBound).notes;
    assert!(notes.iter().any(|n| n.contains("no run config") && n.contains("not measured")), "{notes:?}");
}

#[test]
fn a_second_run_config_is_malformed() {
    let mut h = reassign_history();
    h.config(7_000, common::RUN_CONFIG);
    assert_caught(&h, &[Invariant::WellFormed], &["run config is recorded twice"], None, None);
}
