//! A hand-written history of a healthy chaos run, and helpers to inject
//! anomalies into copies of it.

#![allow(dead_code)] // each test binary uses a different part of this module

use baton_chaos::history::{
    Body, CompleteOutcome, Event, FinalJob, FinalShard, FinalState, FinalStep, FinalWorkflow, JobStatus,
    NemesisOutcome, NemesisPhase, ReadInvoke, ReadOk, ReadReply, RunConfig, StepRef, StepRole, StepState, Targets,
    TaskKey, TaskStatus, TriggerRule, WorkflowStatus, WorkflowStepSpec,
};
use baton_chaos::{Config, History, Invariant, Report, check};

/// The liveness bound the tests check with.
pub const BOUND_MS: u64 = 10_000;
/// When the last fault was healed in [`valid_history`].
pub const LAST_HEAL_T: u64 = 6_000;
/// The run config both histories record: the harness's timing.
pub const RUN_CONFIG: RunConfig = RunConfig { ttl_ms: 1_500, check_interval_ms: 100, election_timeout_max_ms: 120 };
/// ttl + check + the default slack: how long a dead worker's tasks may wait
/// for their next grant when no leader change overlaps.
pub const REASSIGN_BOUND_MS: u64 =
    RUN_CONFIG.ttl_ms + RUN_CONFIG.check_interval_ms + baton_chaos::Config::DEFAULT_REASSIGN_SLACK_MS;
/// How long after a nemesis on nodes a leader change it causes may end.
pub const FAILOVER_MS: u64 = baton_chaos::Config::FAILOVER_ELECTION_TIMEOUTS * RUN_CONFIG.election_timeout_max_ms;

fn task(job: u64, shard: u32) -> TaskKey {
    TaskKey::new(job, shard)
}

fn succeeded(shard: u32, token: u64, result: &str) -> FinalShard {
    FinalShard {
        shard,
        status: TaskStatus::Succeeded,
        result: Some(result.into()),
        token: Some(token),
        latest_token: Some(token),
    }
}

/// A run with everything a real run has to tolerate:
///
/// - job 1 (c1, ok): shard 0 plain; shard 1's first owner w1 is paused past its
///   lease, the shard goes to w2 with a higher token, and w1's late complete
///   is fenced (a zombie);
/// - job 2: the first submit times out (info), the retry with the same key is
///   acknowledged as the same job; its complete times out and the retry is
///   answered duplicate; w2's assignment is redelivered after a reconnect;
/// - job 3: submitted with an info outcome and never retried, but it exists;
///   shard 1's first complete times out and was not applied, so the task is
///   regranted and committed by the new owner;
/// - key k-delta: info, never created; key k-epsilon: refused (fail), never created;
/// - job 4: its shard runs out of attempts (dead); job 5 is cancelled before any grant;
/// - a partition, a leader kill and a worker pause, all healed, each naming
///   its targets; the run config is recorded first; w1 is paused holding
///   (1,1), which is granted again 1300 ms later;
/// - reads: job 1 read while running, job 2 read as succeeded twice, and a
///   read of job 9 (never submitted) answered not found;
/// - two replicas agree at index 40, a third lags at 38.
pub fn valid_history() -> History {
    use CompleteOutcome as C;
    use NemesisOutcome::{Healed, Installed};
    use NemesisPhase::{Heal, Start};

    let mut h = History::new();
    let all_nodes = || Targets::nodes([1, 2, 3]);
    h.config(0, RUN_CONFIG);
    h.leader(50, 1, 1);
    h.nemesis_on(100, "partition", Start, Installed, all_nodes(), "n1 | n2 n3");
    h.submit_invoke(200, "c1", 1, "k-alpha", 2);
    h.submit_invoke(210, "c2", 1, "k-beta", 1);
    h.submit_ok(400, "c1", 1, 1);
    h.push(450, ReadInvoke { client: "r1".into(), op: 1, job: 1 });
    h.push(460, ReadOk { client: "r1".into(), op: 1, status: JobStatus::Queued });
    h.push(470, ReadInvoke { client: "r1".into(), op: 2, job: 9 });
    h.push(480, Body::ReadNotFound(ReadReply { client: "r1".into(), op: 2 }));
    h.assign(500, "w1", task(1, 0), 10);
    h.assign(510, "w1", task(1, 1), 11);
    h.submit_info(1_200, "c2", 1, "deadline exceeded");
    h.submit_invoke(1_300, "c2", 2, "k-beta", 1);
    h.submit_ok(1_400, "c2", 2, 2);
    h.assign(1_500, "w2", task(2, 0), 12);
    h.submit_invoke(1_600, "c1", 2, "k-gamma", 2);
    h.complete_invoke(1_700, "w1", 1, task(1, 0), 10, "a0");
    h.complete_reply(1_750, "w1", 1, C::Ok, "");
    h.nemesis_on(2_000, "pause-worker", Start, Installed, Targets::workers(["w1"]), "SIGSTOP w1");
    h.assign(2_100, "w3", task(3, 0), 13);
    h.assign(2_110, "w3", task(3, 1), 14);
    h.submit_info(2_600, "c1", 2, "connection reset");
    h.nemesis_on(3_000, "kill", Start, Installed, Targets::nodes([1]), "SIGKILL n1 (leader)");
    h.complete_invoke(3_100, "w2", 1, task(2, 0), 12, "b0");
    h.complete_invoke(3_150, "w3", 1, task(3, 0), 13, "c0");
    h.complete_invoke(3_160, "w3", 2, task(3, 1), 14, "c1");
    h.leader(3_250, 2, 2);
    h.assign(3_300, "w2", task(1, 1), 15); // w1's lease on (1,1) expired
    h.complete_reply(3_400, "w3", 1, C::Ok, "");
    h.complete_reply(3_900, "w2", 1, C::Info, "leader lost");
    h.complete_reply(4_000, "w3", 2, C::Info, "deadline exceeded");
    h.assign(4_100, "w2", task(2, 0), 12); // redelivered after w2 reconnected
    h.complete_invoke(4_200, "w2", 2, task(2, 0), 12, "b0");
    h.complete_reply(4_250, "w2", 2, C::Duplicate, "");
    h.push(4_260, ReadInvoke { client: "r1".into(), op: 3, job: 2 });
    h.push(4_270, ReadOk { client: "r1".into(), op: 3, status: JobStatus::Succeeded });
    h.push(4_280, ReadInvoke { client: "r1".into(), op: 4, job: 2 });
    h.push(4_290, ReadOk { client: "r1".into(), op: 4, status: JobStatus::Succeeded });
    h.submit_invoke(4_300, "c2", 3, "k-delta", 1);
    h.submit_info(4_800, "c2", 3, "deadline exceeded");
    h.submit_invoke(4_900, "c1", 3, "k-epsilon", 1);
    h.submit_fail(4_950, "c1", 3, "invalid argument: shards must be > 0");
    h.nemesis_on(5_000, "partition", Heal, Healed, all_nodes(), "");
    h.nemesis_on(5_100, "pause-worker", Heal, Healed, Targets::workers(["w1"]), "SIGCONT w1");
    h.complete_invoke(5_200, "w1", 2, task(1, 1), 11, "a1-zombie");
    h.complete_reply(5_250, "w1", 2, C::Fenced, "fenced: token 11 is not current (latest 15)");
    h.complete_invoke(5_300, "w2", 3, task(1, 1), 15, "a1");
    h.complete_reply(5_350, "w2", 3, C::Ok, "");
    h.submit_invoke(5_400, "c1", 4, "k-zeta", 1);
    h.submit_ok(5_500, "c1", 4, 4);
    h.submit_invoke(5_510, "c2", 4, "k-eta", 1);
    h.submit_ok(5_600, "c2", 4, 5);
    h.assign(5_700, "w2", task(4, 0), 16);
    h.assign(5_800, "w3", task(4, 0), 18); // w2 reported a retryable failure
    h.nemesis_on(LAST_HEAL_T, "kill", Heal, Healed, Targets::nodes([1]), "restarted n1");
    h.assign(6_100, "w1", task(3, 1), 20); // w3's lease on (3,1) expired
    h.complete_invoke(6_200, "w1", 3, task(3, 1), 20, "c1");
    h.complete_reply(6_250, "w1", 3, C::Ok, "");
    let state = FinalState {
        workflows: Vec::new(),
        drained_at: Some(8_500),
        jobs: vec![
            FinalJob {
                id: 1,
                key: "k-alpha".into(),
                status: JobStatus::Succeeded,
                shards: vec![succeeded(0, 10, "a0"), succeeded(1, 15, "a1")],
                origin: None,
                run_of: None,
                created_ms: None,
                finished_ms: None,
            },
            FinalJob {
                id: 2,
                key: "k-beta".into(),
                status: JobStatus::Succeeded,
                shards: vec![succeeded(0, 12, "b0")],
                origin: None,
                run_of: None,
                created_ms: None,
                finished_ms: None,
            },
            FinalJob {
                id: 3,
                key: "k-gamma".into(),
                status: JobStatus::Succeeded,
                shards: vec![succeeded(0, 13, "c0"), succeeded(1, 20, "c1")],
                origin: None,
                run_of: None,
                created_ms: None,
                finished_ms: None,
            },
            FinalJob {
                id: 4,
                key: "k-zeta".into(),
                status: JobStatus::Failed,
                shards: vec![FinalShard {
                    shard: 0,
                    status: TaskStatus::Dead,
                    result: None,
                    token: None,
                    latest_token: Some(18),
                }],
                origin: None,
                run_of: None,
                created_ms: None,
                finished_ms: None,
            },
            FinalJob {
                id: 5,
                key: "k-eta".into(),
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
            },
        ],
    };
    h.final_state(9_000, state);
    h.replica(9_100, 1, 40, "9f2c4e01");
    h.replica(9_110, 2, 40, "9F2C4E01"); // same hash, other case
    h.replica(9_120, 3, 38, "77aa0b3c");
    h
}

/// When w1 is killed in [`reassign_history`].
pub const WORKER_KILL_T: u64 = 1_000;
/// When the leader is killed in [`reassign_history`].
pub const LEADER_KILL_T: u64 = 2_000;

/// A healthy run around one dead worker, for the reassignment bound. w1 holds
/// three shards of job 1 when it is killed at [`WORKER_KILL_T`]:
///
/// - (1,0) is granted to w2 1400 ms later, within ttl + check + slack;
/// - (1,1) is granted to w3 4500 ms later: over the plain bound, but the
///   leader was killed at [`LEADER_KILL_T`], and the new leader renewed every
///   lease on takeover (by [`FAILOVER_MS`] after the kill, seen at 2300), so
///   the clock restarted then;
/// - (1,2): w1 sent its complete just before it died and the result
///   committed: it finished, nothing to reassign.
pub fn reassign_history() -> History {
    use CompleteOutcome as C;
    use NemesisOutcome::{Healed, Installed};
    use NemesisPhase::{Heal, Start};

    let mut h = History::new();
    h.config(0, RUN_CONFIG);
    h.leader(50, 1, 1);
    h.submit_invoke(100, "c1", 1, "k-r", 3);
    h.submit_ok(150, "c1", 1, 1);
    h.assign(200, "w1", task(1, 0), 10);
    h.assign(210, "w1", task(1, 1), 11);
    h.assign(220, "w1", task(1, 2), 12);
    h.complete_invoke(900, "w1", 1, task(1, 2), 12, "r2"); // no reply: w1 dies
    h.nemesis_on(WORKER_KILL_T, "kill-worker", Start, Installed, Targets::workers(["w1"]), "SIGKILL w1");
    h.nemesis_on(LEADER_KILL_T, "kill-leader", Start, Installed, Targets::nodes([1]), "SIGKILL n1");
    h.leader(2_300, 2, 2);
    h.assign(2_400, "w2", task(1, 0), 13);
    h.complete_invoke(2_500, "w2", 1, task(1, 0), 13, "r0");
    h.complete_reply(2_550, "w2", 1, C::Ok, "");
    h.nemesis_on(3_000, "kill-worker", Heal, Healed, Targets::workers(["w1"]), "restarted w1");
    h.assign(5_500, "w3", task(1, 1), 14);
    h.complete_invoke(5_900, "w3", 1, task(1, 1), 14, "r1");
    h.complete_reply(5_950, "w3", 1, C::Ok, "");
    h.nemesis_on(6_000, "kill-leader", Heal, Healed, Targets::nodes([1]), "restarted n1");
    let state = FinalState {
        workflows: Vec::new(),
        drained_at: Some(6_400),
        jobs: vec![FinalJob {
            id: 1,
            key: "k-r".into(),
            status: JobStatus::Succeeded,
            shards: vec![succeeded(0, 13, "r0"), succeeded(1, 14, "r1"), succeeded(2, 12, "r2")],
            origin: None,
            run_of: None,
            created_ms: None,
            finished_ms: None,
        }],
    };
    h.final_state(6_500, state);
    for node in 1..=3 {
        h.replica(6_600, node, 20, "5eed");
    }
    h
}

pub fn config() -> Config {
    Config { liveness_bound_ms: BOUND_MS, ..Config::default() }
}

/// Assert that `h` fails exactly `expected`, that every expected invariant
/// has a violation whose message contains all of `mentions`, and that every
/// violation concerns `job` (and `shard`, when given).
pub fn assert_caught(
    h: &History,
    expected: &[Invariant],
    mentions: &[&str],
    job: Option<u64>,
    shard: Option<u32>,
) -> Report {
    let report = check(h, &config());
    let text = report.render_text();
    let mut want = expected.to_vec();
    want.sort();
    assert_eq!(report.failed(), want, "wrong invariants flagged:\n{text}");
    for inv in expected {
        let vs = &report.get(*inv).violations;
        assert!(
            vs.iter().any(|v| mentions.iter().all(|m| v.message.contains(m))),
            "no {inv} violation mentions all of {mentions:?}:\n{text}"
        );
    }
    for v in report.violations() {
        if job.is_some() {
            assert_eq!(v.job, job, "violation about another job: {}\n{text}", v.message);
        }
        if shard.is_some() {
            assert_eq!(v.shard, shard, "violation about another task: {}\n{text}", v.message);
        }
    }
    report
}

/// Apply `edit` to the events of `h` and rebuild it, renumbering seqs so
/// that inserted events fit.
pub fn edited(h: &History, edit: impl FnOnce(&mut Vec<Event>)) -> History {
    let mut events = h.events().to_vec();
    edit(&mut events);
    for (i, ev) in events.iter_mut().enumerate() {
        ev.seq = i as u64 + 1;
    }
    History::from_events(events).expect("renumbered seqs increase")
}

/// The final state of an event list.
pub fn final_state(events: &mut [Event]) -> &mut FinalState {
    events
        .iter_mut()
        .rev()
        .find_map(|e| match &mut e.body {
            Body::FinalState(s) => Some(s),
            _ => None,
        })
        .expect("the history has a final state")
}

/// The record of `task` in a final state.
pub fn final_shard(state: &mut FinalState, job: u64, shard: u32) -> &mut FinalShard {
    let j = state.jobs.iter_mut().find(|j| j.id == job).expect("job in final state");
    j.shards.iter_mut().find(|s| s.shard == shard).expect("shard in final job")
}

/// Index of the first event matching `pred`.
pub fn position(events: &[Event], pred: impl Fn(&Body) -> bool) -> usize {
    events.iter().position(|e| pred(&e.body)).expect("event present")
}

// ---- workflows ------------------------------------------------------------

/// A step of a submitted workflow's shape.
pub fn wf_step(name: &str, deps: &[&str], trigger: TriggerRule, shards: u32) -> WorkflowStepSpec {
    WorkflowStepSpec {
        name: name.into(),
        depends_on: deps.iter().map(|d| d.to_string()).collect(),
        trigger,
        gate: false,
        shards,
        reduce: None,
        choice: false,
        dynamic: false,
    }
}

fn origin(workflow: u64, step: &str, role: StepRole, reduce_of: Option<u64>) -> Option<StepRef> {
    Some(StepRef { workflow, step: step.into(), role, reduce_of })
}

fn step_rec(name: &str, state: StepState) -> FinalStep {
    FinalStep { name: name.into(), state, chosen: None, generate_job: None, map_job: None, reduce_job: None }
}

/// A healthy run of five workflows, each job granted once and committed:
///
/// - workflow 1 (`k-mr`): `map` (2 shards, reduce `sum`: 5 + 7 = 12, job 2
///   reading job 1) then `after`; its result is `map`'s reduce;
/// - workflow 2 (`k-choice`): `decide` chooses `["left"]`, so `right` is
///   skipped and `join` (none_failed) runs;
/// - workflow 3 (`k-fail`): `a`'s shard dies, so `b` (all_succeeded) is
///   skipped and `comp` (any_failed) runs; the workflow fails;
/// - workflow 4 (`k-cancel`): a gate, cancelled by its submitter while
///   awaiting approval, with `ship` after it;
/// - workflow 5 (`k-dyn`): a dynamic map whose generator emitted no shard,
///   so its reduce (job 10) reads nothing and sums to 0.
pub fn workflow_history() -> History {
    use CompleteOutcome as C;
    use StepRole::{Generate, Map, Reduce};
    use TriggerRule::*;

    let mut h = History::new();
    h.config(0, RUN_CONFIG);
    h.leader(10, 1, 1);
    let mut mr_map = wf_step("map", &[], AllSucceeded, 2);
    mr_map.reduce = Some("sum".into());
    let mr = vec![mr_map, wf_step("after", &["map"], AllSucceeded, 1)];
    let mut decide = wf_step("decide", &[], AllSucceeded, 1);
    decide.choice = true;
    let choice = vec![
        decide,
        wf_step("left", &["decide"], AllSucceeded, 1),
        wf_step("right", &["decide"], AllSucceeded, 1),
        wf_step("join", &["left", "right"], NoneFailed, 1),
    ];
    let fail = vec![
        wf_step("a", &[], AllSucceeded, 1),
        wf_step("b", &["a"], AllSucceeded, 1),
        wf_step("comp", &["a"], AnyFailed, 1),
    ];
    let mut gate = wf_step("approve", &[], AllSucceeded, 0);
    gate.gate = true;
    let cancel = vec![gate, wf_step("ship", &["approve"], AllSucceeded, 1)];
    let mut gen_step = wf_step("gen", &[], AllSucceeded, 1);
    gen_step.dynamic = true;
    gen_step.reduce = Some("sum".into());
    let dynamic = vec![gen_step];

    h.workflow_submit_invoke(100, "f1", 1, "k-mr", mr, Some("map".into()));
    h.workflow_submit_ok(110, "f1", 1, 1);
    h.workflow_submit_invoke(120, "f1", 2, "k-choice", choice, None);
    h.workflow_submit_info(400, "f1", 2, "deadline exceeded");
    h.workflow_submit_invoke(410, "f1", 3, "k-choice", h_clone_choice(), None);
    h.workflow_submit_ok(420, "f1", 3, 2);
    h.workflow_submit_invoke(430, "f2", 1, "k-fail", fail, None);
    h.workflow_submit_ok(440, "f2", 1, 3);
    h.workflow_submit_invoke(450, "f2", 2, "k-cancel", cancel, None);
    h.workflow_submit_ok(460, "f2", 2, 4);
    h.workflow_submit_invoke(470, "f2", 3, "k-dyn", dynamic, Some("gen".into()));
    h.workflow_submit_ok(480, "f2", 3, 5);

    // (job, shard, token, worker, result, origin) in grant order.
    type Run<'a> = (u64, u32, u64, &'a str, &'a str, Option<StepRef>);
    let runs: Vec<Run<'_>> = vec![
        (1, 0, 10, "w1", "5 w1:1/0@10", origin(1, "map", Map, None)),
        (1, 1, 11, "w2", "7 w2:1/1@11", origin(1, "map", Map, None)),
        (2, 0, 20, "w1", "12 w1:2/0@20", origin(1, "map", Reduce, Some(1))),
        (3, 0, 25, "w2", "3 w2:3/0@25", origin(1, "after", Map, None)),
        (4, 0, 30, "w1", "[\"left\"]", origin(2, "decide", Map, None)),
        (5, 0, 35, "w2", "9 w2:5/0@35", origin(2, "left", Map, None)),
        (6, 0, 40, "w1", "4 w1:6/0@40", origin(2, "join", Map, None)),
        (8, 0, 50, "w1", "8 w1:8/0@50", origin(3, "comp", Map, None)),
        (9, 0, 55, "w2", "BTNC\0\0\0\0", origin(5, "gen", Generate, None)),
        (10, 0, 60, "w2", "0 w2:10/0@60", origin(5, "gen", Reduce, None)),
    ];
    let mut t = 500;
    let mut ops: std::collections::BTreeMap<&str, u64> = Default::default();
    for (job, shard, token, worker, result, step) in &runs {
        t += 100;
        h.assign_step(t, worker, task(*job, *shard), *token, step.clone());
        if *job == 6 {
            // Job 7 (step `a` of workflow 3) is granted meanwhile; its shard dies.
            h.assign_step(t + 10, "w3", task(7, 0), 45, origin(3, "a", Map, None));
        }
        let op = ops.entry(worker).or_insert(0);
        *op += 1;
        h.complete_invoke(t + 50, worker, *op, task(*job, *shard), *token, result);
        h.complete_reply(t + 60, worker, *op, C::Ok, "");
    }
    h.workflow_cancel(t + 100, "f2", 4);

    let job = |id: u64, status: JobStatus, shards: Vec<FinalShard>, origin: Option<StepRef>| FinalJob {
        id,
        key: String::new(),
        status,
        shards,
        origin,
        run_of: None,
        created_ms: None,
        finished_ms: None,
    };
    let ok = JobStatus::Succeeded;
    let mut jobs = Vec::new();
    for (id, shard, token, _, result, step) in &runs {
        if *shard == 0 {
            jobs.push(job(*id, ok, Vec::new(), step.clone()));
        }
        jobs.last_mut().unwrap().shards.push(succeeded(*shard, *token, result));
    }
    let dead = FinalShard { shard: 0, status: TaskStatus::Dead, result: None, token: None, latest_token: Some(45) };
    jobs.insert(6, job(7, JobStatus::Failed, vec![dead], origin(3, "a", Map, None)));

    let with_jobs = |mut s: FinalStep, map: Option<u64>, reduce: Option<u64>| {
        s.map_job = map;
        s.reduce_job = reduce;
        s
    };
    use StepState::{Cancelled, Failed, Skipped, Succeeded};
    let mut decide_rec = with_jobs(step_rec("decide", Succeeded), Some(4), None);
    decide_rec.chosen = Some(vec!["left".into()]);
    let mut gen_rec = with_jobs(step_rec("gen", Succeeded), None, Some(10));
    gen_rec.generate_job = Some(9);
    let workflows = vec![
        FinalWorkflow {
            id: 1,
            key: "k-mr".into(),
            status: WorkflowStatus::Succeeded,
            steps: vec![
                with_jobs(step_rec("map", Succeeded), Some(1), Some(2)),
                with_jobs(step_rec("after", Succeeded), Some(3), None),
            ],
            result: Some("12 w1:2/0@20".into()),
        },
        FinalWorkflow {
            id: 2,
            key: "k-choice".into(),
            status: WorkflowStatus::Succeeded,
            steps: vec![
                decide_rec,
                with_jobs(step_rec("left", Succeeded), Some(5), None),
                step_rec("right", Skipped),
                with_jobs(step_rec("join", Succeeded), Some(6), None),
            ],
            result: None,
        },
        FinalWorkflow {
            id: 3,
            key: "k-fail".into(),
            status: WorkflowStatus::Failed,
            steps: vec![
                with_jobs(step_rec("a", Failed), Some(7), None),
                step_rec("b", Skipped),
                with_jobs(step_rec("comp", Succeeded), Some(8), None),
            ],
            result: None,
        },
        FinalWorkflow {
            id: 4,
            key: "k-cancel".into(),
            status: WorkflowStatus::Cancelled,
            steps: vec![step_rec("approve", Cancelled), step_rec("ship", Cancelled)],
            result: None,
        },
        FinalWorkflow {
            id: 5,
            key: "k-dyn".into(),
            status: WorkflowStatus::Succeeded,
            steps: vec![gen_rec],
            result: Some("0 w2:10/0@60".into()),
        },
    ];
    h.final_state(t + 500, FinalState { drained_at: Some(t + 400), jobs, workflows });
    for node in 1..=3 {
        h.replica(t + 600, node, 90, "c0ffee");
    }
    h
}

/// The shape of `k-choice`, again, for its retried submit.
fn h_clone_choice() -> Vec<WorkflowStepSpec> {
    use TriggerRule::*;
    let mut decide = wf_step("decide", &[], AllSucceeded, 1);
    decide.choice = true;
    vec![
        decide,
        wf_step("left", &["decide"], AllSucceeded, 1),
        wf_step("right", &["decide"], AllSucceeded, 1),
        wf_step("join", &["left", "right"], NoneFailed, 1),
    ]
}

/// Move every trace of attempt `from` of (job, shard) to token `to`: its
/// grants, completes and final record.
pub fn retoken(events: &mut [Event], job: u64, shard: u32, from: u64, to: u64) {
    for e in events.iter_mut() {
        match &mut e.body {
            Body::Assign(a) if a.job == job && a.shard == shard && a.token == from => a.token = to,
            Body::CompleteInvoke(c) if c.job == job && c.shard == shard && c.token == from => c.token = to,
            Body::FinalState(s) => {
                let sh = final_shard(s, job, shard);
                if sh.token == Some(from) {
                    sh.token = Some(to);
                }
                if sh.latest_token == Some(from) {
                    sh.latest_token = Some(to);
                }
            }
            _ => {}
        }
    }
}

/// The workflow `id` of a final state.
pub fn final_workflow(state: &mut FinalState, id: u64) -> &mut FinalWorkflow {
    state.workflows.iter_mut().find(|w| w.id == id).expect("workflow in final state")
}
