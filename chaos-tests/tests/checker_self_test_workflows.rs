//! The checker's self-test for workflows: a healthy history of five
//! workflows passes every invariant, and each workflow invariant is shown to
//! fail on an anomaly injected into a copy of it, naming the workflow, step
//! and job involved.

mod common;

use baton_chaos::history::{
    Body, CompleteInvoke, FinalJob, FinalShard, JobStatus, StepRef, StepRole, StepState, TaskKey, TaskStatus,
    WorkflowStatus,
};
use baton_chaos::{Invariant, check};
use common::{assert_caught, config, edited, final_state, final_workflow, position, retoken, workflow_history};

#[test]
fn the_workflow_history_passes_every_invariant() {
    let report = check(&workflow_history(), &config());
    assert!(report.passed(), "{}", report.render_text());
    let notes = |inv| report.get(inv).notes.join("; ");
    assert!(notes(Invariant::StepTriggerOrder).contains("5 workflows: 8 started steps"), "{}", report.render_text());
    assert!(notes(Invariant::SkippedNeverRuns).contains("3 skipped steps"), "{}", report.render_text());
    assert!(notes(Invariant::WorkflowsFinish).contains("5 finished"), "{}", report.render_text());
    assert!(notes(Invariant::ReduceAtMostOnce).contains("2 steps with a reduce job"), "{}", report.render_text());
    assert!(
        notes(Invariant::WorkflowResult)
            .contains("2 reduce results recomputed from their map shards, 2 workflow results and 1 choices"),
        "{}",
        report.render_text()
    );
}

// ---- step_trigger_order ----------------------------------------------------

#[test]
fn a_step_granted_before_its_predecessor_finished_is_caught() {
    // `after` is granted token 15, before the reduce of `map` (token 20).
    let h = edited(&workflow_history(), |ev| retoken(ev, 3, 0, 25, 15));
    assert_caught(
        &h,
        &[Invariant::StepTriggerOrder],
        &[
            "step \"after\" of workflow 1",
            "job 3 shard 0",
            "token 15",
            "predecessor \"map\"",
            "job 2 shard 0",
            "token 20",
        ],
        Some(3),
        Some(0),
    );
}

#[test]
fn a_reduce_granted_before_its_map_finished_is_caught() {
    let h = edited(&workflow_history(), |ev| retoken(ev, 2, 0, 20, 9));
    assert_caught(
        &h,
        &[Invariant::StepTriggerOrder],
        &["step \"map\" of workflow 1", "job 2 shard 0", "token 9", "its map", "token 11"],
        Some(2),
        Some(0),
    );
}

#[test]
fn a_step_started_while_a_predecessor_still_runs_is_caught() {
    // The final state says `a` of workflow 3 never finished, yet `comp` ran
    // (and `b` was skipped, and the workflow never finished).
    let h = edited(&workflow_history(), |ev| {
        let wf = final_workflow(final_state(ev), 3);
        wf.steps[0].state = StepState::Running;
        wf.status = WorkflowStatus::Running;
    });
    let r = assert_caught(
        &h,
        &[Invariant::StepTriggerOrder, Invariant::SkippedNeverRuns, Invariant::WorkflowsFinish],
        &["workflow 3"],
        None,
        None,
    );
    let v = &r.get(Invariant::StepTriggerOrder).violations;
    assert!(
        v[0].message.contains("step \"comp\" of workflow 3 started") && v[0].message.contains("\"a\" is still running"),
        "{}",
        v[0].message
    );
}

// ---- skipped_never_runs ----------------------------------------------------

/// Workflow 2's `right`, which the choice did not take, ran as job 11.
fn run_right(ev: &mut Vec<baton_chaos::history::Event>) {
    let right = Some(StepRef { workflow: 2, step: "right".into(), role: StepRole::Map, reduce_of: None });
    let i = position(ev, |b| matches!(b, Body::Assign(a) if a.job == 6));
    let mut grant = ev[i].clone();
    grant.body = Body::Assign(baton_chaos::history::Assign {
        worker: "w3".into(),
        job: 11,
        shard: 0,
        token: 38,
        step: right.clone(),
    });
    let mut invoke = ev[i].clone();
    invoke.body = Body::CompleteInvoke(CompleteInvoke {
        worker: "w3".into(),
        op: 9,
        job: 11,
        shard: 0,
        token: 38,
        result: "1 w3:11/0@38".into(),
    });
    let mut reply = ev[i].clone();
    reply.body = baton_chaos::history::CompleteOutcome::Ok.reply("w3", 9, "");
    ev.splice(i..i, [grant, invoke, reply]);
    final_state(ev).jobs.push(FinalJob {
        id: 11,
        key: String::new(),
        status: JobStatus::Succeeded,
        shards: vec![FinalShard {
            shard: 0,
            status: TaskStatus::Succeeded,
            result: Some("1 w3:11/0@38".into()),
            token: Some(38),
            latest_token: Some(38),
        }],
        origin: right,
        run_of: None,
        created_ms: None,
        finished_ms: None,
    });
}

#[test]
fn a_branch_the_choice_did_not_take_that_runs_is_caught() {
    let h = edited(&workflow_history(), run_right);
    assert_caught(
        &h,
        &[Invariant::SkippedNeverRuns],
        &[
            "step \"right\" of workflow 2",
            "decide succeeded without choosing it",
            "job 11 shard 0",
            "token 38",
            "never runs",
        ],
        Some(11),
        Some(0),
    );
}

#[test]
fn a_skip_against_the_rule_is_caught() {
    // `join` (none_failed: left succeeded, right skipped) must run; say it was skipped.
    let h = edited(&workflow_history(), |ev| {
        ev.retain(|e| match &e.body {
            Body::Assign(a) => a.job != 6,
            Body::CompleteInvoke(c) => c.job != 6,
            Body::CompleteOk(r) => !(r.worker == "w1" && r.op == 4),
            _ => true,
        });
        let state = final_state(ev);
        state.jobs.retain(|j| j.id != 6);
        let join = &mut final_workflow(state, 2).steps[3];
        join.state = StepState::Skipped;
        join.map_job = None;
    });
    assert_caught(
        &h,
        &[Invariant::SkippedNeverRuns],
        &["step \"join\" of workflow 2", "none_failed", "skipped although its rule was met"],
        None,
        None,
    );
}

#[test]
fn a_step_not_skipped_although_its_rule_cannot_be_met_is_caught() {
    // `b` waits for `a` to succeed; `a` failed, yet `b` is said to have succeeded.
    let h = edited(&workflow_history(), |ev| final_workflow(final_state(ev), 3).steps[1].state = StepState::Succeeded);
    assert_caught(
        &h,
        &[Invariant::SkippedNeverRuns],
        &["step \"b\" of workflow 3", "all_succeeded on a failed", "must be skipped"],
        None,
        None,
    );
}

// ---- workflows_finish ------------------------------------------------------

#[test]
fn a_workflow_left_running_after_heal_is_caught() {
    let h = edited(&workflow_history(), |ev| {
        let wf = final_workflow(final_state(ev), 4);
        wf.status = WorkflowStatus::Running;
        wf.steps[0].state = StepState::AwaitingApproval;
        wf.steps[1].state = StepState::Waiting;
    });
    assert_caught(
        &h,
        &[Invariant::WorkflowsFinish],
        &["workflow 4 is still running", "approve awaiting_approval", "ship waiting"],
        None,
        None,
    );
}

#[test]
fn a_lost_acknowledged_workflow_is_caught() {
    // Its jobs remain, naming a workflow the final state lost: phantoms too.
    let h = edited(&workflow_history(), |ev| final_state(ev).workflows.retain(|w| w.id != 1));
    let r = assert_caught(&h, &[Invariant::WorkflowsFinish, Invariant::NoPhantomJobs], &["workflow 1"], None, None);
    let v = &r.get(Invariant::WorkflowsFinish).violations;
    assert!(v[0].message.contains("f1#1") && v[0].message.contains("not in the final state"), "{}", v[0].message);
}

#[test]
fn a_workflow_cancelled_without_a_request_is_caught() {
    let h = edited(&workflow_history(), |ev| ev.retain(|e| !matches!(e.body, Body::WorkflowCancel(_))));
    assert_caught(&h, &[Invariant::WorkflowsFinish], &["workflow 4 cancelled", "no client asked"], None, None);
}

#[test]
fn a_workflow_that_succeeded_with_a_failed_step_is_caught() {
    let h = edited(&workflow_history(), |ev| final_workflow(final_state(ev), 3).status = WorkflowStatus::Succeeded);
    assert_caught(&h, &[Invariant::WorkflowsFinish], &["workflow 3 succeeded with 1 failed"], None, None);
}

// ---- reduce_at_most_once ---------------------------------------------------

#[test]
fn a_second_committed_reduce_of_one_map_is_caught() {
    // A leader change in the middle of the map-reduce, and a second reduce job
    // (12) for the same map commits too.
    let h = edited(&workflow_history(), |ev| {
        let reduce = Some(StepRef { workflow: 1, step: "map".into(), role: StepRole::Reduce, reduce_of: Some(1) });
        let i = position(ev, |b| matches!(b, Body::Assign(a) if a.job == 3));
        let mut grant = ev[i].clone();
        grant.body = Body::Assign(baton_chaos::history::Assign {
            worker: "w3".into(),
            job: 12,
            shard: 0,
            token: 22,
            step: reduce.clone(),
        });
        let mut invoke = ev[i].clone();
        invoke.body = Body::CompleteInvoke(CompleteInvoke {
            worker: "w3".into(),
            op: 9,
            job: 12,
            shard: 0,
            token: 22,
            result: "12 w3:12/0@22".into(),
        });
        let mut reply = ev[i].clone();
        reply.body = baton_chaos::history::CompleteOutcome::Ok.reply("w3", 9, "");
        ev.splice(i..i, [grant, invoke, reply]);
        final_state(ev).jobs.push(FinalJob {
            id: 12,
            key: String::new(),
            status: JobStatus::Succeeded,
            shards: vec![FinalShard {
                shard: 0,
                status: TaskStatus::Succeeded,
                result: Some("12 w3:12/0@22".into()),
                token: Some(22),
                latest_token: Some(22),
            }],
            origin: reduce,
            run_of: None,
            created_ms: None,
            finished_ms: None,
        });
    });
    assert_caught(
        &h,
        &[Invariant::ReduceAtMostOnce],
        &["step \"map\" of workflow 1", "2 reduce jobs (job 2, job 12)", "2 committed results", "at most once"],
        Some(12),
        None,
    );
}

#[test]
fn a_reduce_that_reads_another_job_is_caught() {
    let h = edited(&workflow_history(), |ev| {
        for e in ev.iter_mut() {
            if let Body::Assign(a) = &mut e.body
                && let Some(s) = a.step.as_mut().filter(|s| s.role == StepRole::Reduce && s.workflow == 1)
            {
                s.reduce_of = Some(3);
            }
        }
        let j = final_state(ev).jobs.iter_mut().find(|j| j.id == 2).unwrap();
        j.origin.as_mut().unwrap().reduce_of = Some(3);
    });
    assert_caught(
        &h,
        &[Invariant::ReduceAtMostOnce],
        &["step \"map\" of workflow 1", "reduce job 2 reads job 3", "map job is job 1"],
        Some(2),
        None,
    );
}

#[test]
fn a_reduce_worker_told_to_read_another_job_is_caught() {
    // The job says it reduces map job 1; the assignment told the worker job 3.
    let h = edited(&workflow_history(), |ev| {
        for e in ev.iter_mut() {
            if let Body::Assign(a) = &mut e.body
                && let Some(s) = a.step.as_mut().filter(|s| s.role == StepRole::Reduce && s.workflow == 1)
            {
                s.reduce_of = Some(3);
            }
        }
    });
    assert_caught(
        &h,
        &[Invariant::ReduceAtMostOnce],
        &["step \"map\" of workflow 1", "w1 was told", "token 20", "to reduce job 3", "reduce job 2 reads job 1"],
        Some(2),
        Some(0),
    );
}

// ---- workflow_result -------------------------------------------------------

#[test]
fn a_reduce_result_that_is_not_the_sum_of_the_committed_shards_is_caught() {
    // The reducer summed a shard result from its own memory (an attempt that
    // never committed), not the committed one: 13 instead of 5 + 7.
    let h = edited(&workflow_history(), |ev| {
        let forged = "13 w1:2/0@20";
        for e in ev.iter_mut() {
            if let Body::CompleteInvoke(c) = &mut e.body
                && c.task() == TaskKey::new(2, 0)
            {
                c.result = forged.into();
            }
        }
        let state = final_state(ev);
        common::final_shard(state, 2, 0).result = Some(forged.into());
        final_workflow(state, 1).result = Some(forged.into());
    });
    assert_caught(
        &h,
        &[Invariant::WorkflowResult],
        &["step \"map\" of workflow 1", "reduce job 2 committed \"13 w1:2/0@20\"", "is 12 (5 + 7)"],
        Some(2),
        None,
    );
}

#[test]
fn a_workflow_result_other_than_its_result_steps_is_caught() {
    let h = edited(&workflow_history(), |ev| final_workflow(final_state(ev), 5).result = Some("7".into()));
    assert_caught(
        &h,
        &[Invariant::WorkflowResult],
        &["workflow 5 has result Some(\"7\")", "\"gen\"", "0 w2:10/0@60"],
        None,
        None,
    );
}

#[test]
fn a_choice_record_that_disagrees_with_the_committed_choice_is_caught() {
    let h = edited(&workflow_history(), |ev| {
        final_workflow(final_state(ev), 2).steps[0].chosen = Some(vec!["right".into()]);
    });
    assert_caught(
        &h,
        &[Invariant::WorkflowResult],
        &["step \"decide\" of workflow 2 chose [\"right\"]", "committed result names [\"left\"]"],
        None,
        None,
    );
}

#[test]
fn a_workflow_history_without_a_final_state_fails_closed() {
    let h = edited(&workflow_history(), |ev| ev.retain(|e| !matches!(e.body, Body::FinalState(_))));
    let want = [
        Invariant::NoLostJobs,
        Invariant::NoPhantomJobs,
        Invariant::ExactlyOnceCommit,
        Invariant::LivenessAfterHeal,
        Invariant::StepTriggerOrder,
        Invariant::SkippedNeverRuns,
        Invariant::WorkflowsFinish,
        Invariant::ReduceAtMostOnce,
        Invariant::WorkflowResult,
    ];
    assert_caught(&h, &want, &["no final_state event"], None, None);
}
