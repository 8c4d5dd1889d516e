//! Workflows through apply(): every step decision is made by the entry that
//! finishes the step before it, deterministically, and survives a reopen.

use std::collections::BTreeMap;

use baton_raft_store::kv::load;
use baton_raft_store::limits::MAX_EVENT_GATES_PER_TOPIC;
use baton_raft_store::workflow::*;
use baton_raft_store::*;
use serde_bytes::ByteBuf;

mod common;

use common::Rig;

fn rig() -> Rig {
    Rig::new(1_700_000_000_000, 10)
}

impl Rig {
    fn submit(&mut self, spec: WorkflowSpec) -> WorkflowId {
        match self.ok(Command::SubmitWorkflow(spec)) {
            Outcome::WorkflowSubmitted { workflow, duplicate: false, .. } => workflow,
            o => panic!("{o:?}"),
        }
    }

    fn wf(&self, id: WorkflowId) -> WorkflowRecord {
        self.core.workflow(&self.kv, id).unwrap().unwrap()
    }

    fn step(&self, id: WorkflowId, name: &str) -> StepRecord {
        self.wf(id).steps.into_iter().find(|s| s.name == name).unwrap()
    }

    fn state(&self, id: WorkflowId, name: &str) -> StepState {
        self.step(id, name).state
    }

    fn payload(&self, key: TaskKey) -> Vec<u8> {
        load::<ByteBuf>(&self.kv, &keys::payload(key)).unwrap().map(|b| b.into_vec()).unwrap_or_default()
    }

    /// Grant and finish every shard of `job`, the result of each computed
    /// from its payload; `Err` fails it without retry.
    fn run(&mut self, job: JobId, f: impl Fn(u32, &[u8]) -> Result<Vec<u8>, String>) {
        let shards = self.job(job).shards;
        for shard in 0..shards {
            let task = TaskKey::new(job, shard);
            let payload = self.payload(task);
            let grant =
                match self.ok(Command::AssignTasks { assignments: vec![Assign { task, session: self.session }] }) {
                    Outcome::Assigned(mut v) => v.remove(0).unwrap(),
                    o => panic!("{o:?}"),
                };
            let cmd = match f(shard, &payload) {
                Ok(result) => Command::CompleteTask {
                    task,
                    token: grant.token,
                    result: ByteBuf::from(result),
                    logs: Default::default(),
                },
                Err(error) => {
                    Command::FailTask { task, token: grant.token, error, retryable: false, logs: Default::default() }
                }
            };
            self.ok(cmd);
        }
    }

    /// The job step `name` runs now.
    fn current(&self, id: WorkflowId, name: &str) -> JobId {
        let s = self.step(id, name);
        assert_eq!(s.state, StepState::Running, "step {name}");
        match s.phase.unwrap() {
            StepRole::Generate => s.generate_job,
            StepRole::Map => s.map_job,
            StepRole::Reduce => s.reduce_job,
        }
        .unwrap()
    }

    fn succeed(&mut self, id: WorkflowId, name: &str, result: &[u8]) {
        let job = self.current(id, name);
        let result = result.to_vec();
        self.run(job, move |_, _| Ok(result.clone()));
    }

    fn fail(&mut self, id: WorkflowId, name: &str) {
        let job = self.current(id, name);
        self.run(job, |_, _| Err("boom".into()));
    }
}

fn job_step(name: &str, deps: &[&str], shards: usize) -> StepSpec {
    let mut job = JobSpec::with_shards("", shards);
    job.namespace.clear();
    job.max_attempts = 1;
    StepSpec {
        name: name.into(),
        depends_on: deps.iter().map(|d| d.to_string()).collect(),
        trigger: TriggerRule::AllSucceeded,
        kind: StepKind::Job { job, reduce: None, choice: false, dynamic: false },
    }
}

fn with_rule(mut s: StepSpec, rule: TriggerRule) -> StepSpec {
    s.trigger = rule;
    s
}

fn flow(steps: Vec<StepSpec>) -> WorkflowSpec {
    WorkflowSpec {
        namespace: "ns".into(),
        name: "flow".into(),
        labels: BTreeMap::new(),
        idempotency_key: None,
        steps,
        result_step: None,
    }
}

#[test]
fn a_chain_runs_in_order_and_hands_each_step_its_inputs() {
    let mut r = rig();
    let wf = r.submit(flow(vec![job_step("a", &[], 2), job_step("b", &["a"], 1), job_step("c", &["b"], 1)]));
    assert_eq!(r.state(wf, "a"), StepState::Running);
    assert_eq!(r.state(wf, "b"), StepState::Waiting);
    let a_job = r.current(wf, "a");
    let origin = r.job(a_job).origin.unwrap();
    assert_eq!((origin.workflow, origin.step, origin.role), (wf, 0, StepRole::Map));
    assert_eq!(r.job(a_job).namespace, "ns");
    assert_eq!(r.job(a_job).name, "flow/a");
    r.succeed(wf, "a", b"A");
    let b_job = r.current(wf, "b");
    assert_eq!(r.job(b_job).origin.unwrap().inputs, vec![StepInput { step: "a".into(), job: a_job, shards: 2 }]);
    assert_eq!(r.state(wf, "c"), StepState::Waiting);
    r.succeed(wf, "b", b"B");
    r.succeed(wf, "c", b"C");
    let rec = r.wf(wf);
    assert_eq!(rec.status, WorkflowStatus::Succeeded);
    assert!(rec.finished_ms.is_some());
    assert!(r.core.idx.workflows.is_empty());
    // Templates are gone once their steps end.
    assert!(load::<StepTemplate>(&r.kv, &keys::step_spec(wf, 0)).unwrap().is_none());
    r.assert_reopens();
}

#[test]
fn fan_out_and_fan_in_wait_for_every_branch() {
    let mut r = rig();
    let wf = r.submit(flow(vec![
        job_step("root", &[], 1),
        job_step("x", &["root"], 1),
        job_step("y", &["root"], 1),
        job_step("join", &["x", "y"], 1),
    ]));
    r.succeed(wf, "root", b"");
    assert_eq!((r.state(wf, "x"), r.state(wf, "y")), (StepState::Running, StepState::Running));
    r.succeed(wf, "x", b"");
    assert_eq!(r.state(wf, "join"), StepState::Waiting);
    r.assert_reopens();
    r.succeed(wf, "y", b"");
    let join = r.current(wf, "join");
    let inputs: Vec<(String, u32)> =
        r.job(join).origin.unwrap().inputs.into_iter().map(|i| (i.step, i.shards)).collect();
    assert_eq!(inputs, vec![("x".to_string(), 1), ("y".to_string(), 1)], "x finished in an earlier entry");
    r.succeed(wf, "join", b"");
    assert_eq!(r.wf(wf).status, WorkflowStatus::Succeeded);
}

#[test]
fn a_failure_skips_what_can_no_longer_run_while_cleanup_and_compensation_run() {
    let mut r = rig();
    let wf = r.submit(flow(vec![
        job_step("a", &[], 1),
        job_step("b", &["a"], 1),
        job_step("c", &["b"], 1),
        with_rule(job_step("cleanup", &["b"], 1), TriggerRule::AllDone),
        with_rule(job_step("compensate", &["a"], 1), TriggerRule::AnyFailed),
        job_step("side", &[], 1),
    ]));
    r.fail(wf, "a");
    assert_eq!(r.state(wf, "b"), StepState::Skipped);
    assert_eq!(r.state(wf, "c"), StepState::Skipped, "skipping propagates");
    assert_eq!(r.step(wf, "c").reason.as_deref(), Some("all_succeeded not met: b skipped"));
    assert_eq!(r.state(wf, "cleanup"), StepState::Running, "all_done runs after a skipped predecessor");
    assert_eq!(r.state(wf, "compensate"), StepState::Running);
    assert!(r.step(wf, "a").reason.unwrap().contains("1 of 1 shards dead"));
    assert_eq!(r.wf(wf).status, WorkflowStatus::Running, "independent steps still run");
    r.succeed(wf, "cleanup", b"");
    r.succeed(wf, "compensate", b"");
    r.succeed(wf, "side", b"");
    assert_eq!(r.wf(wf).status, WorkflowStatus::Failed);
    r.assert_reopens();
}

#[test]
fn a_choice_runs_the_named_branches_and_skips_the_rest_down_the_graph() {
    let mut r = rig();
    let mut check = job_step("check", &[], 1);
    if let StepKind::Job { choice, .. } = &mut check.kind {
        *choice = true;
    }
    let wf = r.submit(flow(vec![
        check,
        job_step("fast", &["check"], 1),
        job_step("full", &["check"], 1),
        job_step("after_full", &["full"], 1),
        with_rule(job_step("join", &["fast", "after_full"], 1), TriggerRule::NoneFailed),
    ]));
    r.succeed(wf, "check", br#"["fast"]"#);
    assert_eq!(r.step(wf, "check").chosen, Some(vec![1]));
    assert_eq!(r.state(wf, "fast"), StepState::Running);
    assert_eq!(r.state(wf, "full"), StepState::Skipped);
    assert_eq!(r.step(wf, "full").reason.as_deref(), Some("all_succeeded not met: check not chosen"));
    assert_eq!(r.state(wf, "after_full"), StepState::Skipped);
    assert_eq!(r.state(wf, "join"), StepState::Waiting);
    r.succeed(wf, "fast", b"");
    assert_eq!(r.state(wf, "join"), StepState::Running, "none_failed joins the branch taken");
    r.succeed(wf, "join", b"");
    assert_eq!(r.wf(wf).status, WorkflowStatus::Succeeded);
}

#[test]
fn a_choice_naming_no_successor_or_malformed_fails_the_step() {
    for (result, want) in [(&br#"["nope"]"#[..], "not a successor"), (&b"fast"[..], "JSON array")] {
        let mut r = rig();
        let mut check = job_step("check", &[], 1);
        if let StepKind::Job { choice, .. } = &mut check.kind {
            *choice = true;
        }
        let wf = r.submit(flow(vec![check, job_step("fast", &["check"], 1)]));
        r.succeed(wf, "check", result);
        assert_eq!(r.state(wf, "check"), StepState::Failed);
        assert!(r.step(wf, "check").reason.unwrap().contains(want));
        assert_eq!(r.state(wf, "fast"), StepState::Skipped);
        assert_eq!(r.wf(wf).status, WorkflowStatus::Failed);
    }
}

fn reduce_step(name: &str, shards: usize) -> StepSpec {
    let mut s = job_step(name, &[], shards);
    if let StepKind::Job { reduce, job, .. } = &mut s.kind {
        *reduce = Some(ReduceSpec { payload: ByteBuf::from(b"sum".to_vec()) });
        for (i, p) in job.payloads.iter_mut().enumerate() {
            *p = ByteBuf::from((i as u64 + 1).to_string().into_bytes());
        }
    }
    s
}

#[test]
fn a_reduce_runs_once_after_every_map_shard_succeeded() {
    let mut r = rig();
    let mut spec = flow(vec![reduce_step("count", 5)]);
    spec.result_step = Some("count".into());
    let wf = r.submit(spec);
    let map = r.current(wf, "count");
    // Four shards done: no reduce yet.
    let shards = r.job(map).shards;
    assert_eq!(shards, 5);
    r.run(map, |_, p| Ok(p.to_vec()));
    let s = r.step(wf, "count");
    assert_eq!(s.phase, Some(StepRole::Reduce));
    let reduce = s.reduce_job.unwrap();
    let origin = r.job(reduce).origin.unwrap();
    assert_eq!((origin.role, origin.reduce_of), (StepRole::Reduce, Some(map)));
    assert_eq!(r.job(reduce).shards, 1);
    assert_eq!(r.payload(TaskKey::new(reduce, 0)), b"sum");
    assert_eq!(r.job(reduce).name, "flow/count/reduce");
    r.succeed(wf, "count", b"15");
    let rec = r.wf(wf);
    assert_eq!(rec.status, WorkflowStatus::Succeeded);
    assert_eq!(rec.result_step, Some(0));
    assert_eq!(rec.steps[0].output_job(), Some(reduce));
    r.assert_reopens();
}

#[test]
fn a_map_with_a_dead_shard_fails_without_a_reduce() {
    let mut r = rig();
    let wf = r.submit(flow(vec![reduce_step("count", 3)]));
    let map = r.current(wf, "count");
    r.run(map, |shard, _| if shard == 1 { Err("bad".into()) } else { Ok(vec![]) });
    let s = r.step(wf, "count");
    assert_eq!((s.state, s.reduce_job), (StepState::Failed, None));
    assert_eq!(r.wf(wf).status, WorkflowStatus::Failed);
}

fn dynamic_step(name: &str, reduce: bool) -> StepSpec {
    let mut s = job_step(name, &[], 1);
    if let StepKind::Job { dynamic, reduce: r, .. } = &mut s.kind {
        *dynamic = true;
        *r = reduce.then(ReduceSpec::default);
    }
    s
}

#[test]
fn a_dynamic_map_runs_the_shards_its_generator_emits_then_reduces() {
    let mut r = rig();
    let wf = r.submit(flow(vec![dynamic_step("gen", true), job_step("after", &["gen"], 1)]));
    let s = r.step(wf, "gen");
    assert_eq!(s.phase, Some(StepRole::Generate));
    let children: Vec<Vec<u8>> = (0..7).map(|i| vec![i]).collect();
    let enc = encode_children(&children);
    r.succeed(wf, "gen", &enc);
    let map = r.current(wf, "gen");
    assert_eq!(r.job(map).shards, 7);
    assert_eq!(r.payload(TaskKey::new(map, 3)), vec![3]);
    r.run(map, |_, p| Ok(p.to_vec()));
    assert_eq!(r.step(wf, "gen").phase, Some(StepRole::Reduce));
    r.succeed(wf, "gen", b"21");
    let after = r.current(wf, "after");
    let input = &r.job(after).origin.unwrap().inputs[0];
    assert_eq!(Some(input.job), r.step(wf, "gen").reduce_job, "the step's output is its reduce");
}

#[test]
fn a_dynamic_map_with_no_children_or_a_bad_encoding_ends_at_once() {
    let mut r = rig();
    let wf = r.submit(flow(vec![dynamic_step("gen", false)]));
    r.succeed(wf, "gen", &encode_children(&[]));
    assert_eq!(r.state(wf, "gen"), StepState::Succeeded);

    let wf = r.submit(flow(vec![dynamic_step("gen", true)]));
    r.succeed(wf, "gen", &encode_children(&[]));
    let s = r.step(wf, "gen");
    assert_eq!(s.phase, Some(StepRole::Reduce), "the reduce runs over an empty input");
    assert_eq!(r.job(s.reduce_job.unwrap()).origin.unwrap().reduce_of, None);

    let wf = r.submit(flow(vec![dynamic_step("gen", false)]));
    r.succeed(wf, "gen", b"not children");
    assert_eq!(r.state(wf, "gen"), StepState::Failed);
    assert!(r.step(wf, "gen").reason.unwrap().contains("BTNC"));
}

fn gate(name: &str, deps: &[&str], timeout_ms: Option<u64>, on_timeout: GateTimeout) -> StepSpec {
    StepSpec {
        name: name.into(),
        depends_on: deps.iter().map(|d| d.to_string()).collect(),
        trigger: TriggerRule::AllSucceeded,
        kind: StepKind::Gate { timeout_ms, on_timeout, event: None },
    }
}

#[test]
fn gates_wait_for_a_decision_or_their_timeout() {
    let mut r = rig();
    let wf = r.submit(flow(vec![
        gate("approve", &[], None, GateTimeout::Reject),
        job_step("deploy", &["approve"], 1),
        gate("soak", &[], Some(1_000), GateTimeout::Approve),
        gate("sign", &[], Some(1_000), GateTimeout::Reject),
    ]));
    assert!(matches!(r.state(wf, "approve"), StepState::AwaitingApproval { deadline_ms: None }));
    assert_eq!(r.core.idx.gate_deadlines.len(), 2);
    // Not a gate, unknown, or too early.
    let e = r.err(Command::ResolveGate { workflow: wf, step: "deploy".into(), approve: true, by: "x".into() });
    assert!(matches!(e, CommandError::GateNotWaiting { .. }), "{e}");
    let e = r.err(Command::ResolveGate { workflow: wf, step: "nope".into(), approve: true, by: "x".into() });
    assert!(matches!(e, CommandError::StepNotFound { .. }), "{e}");
    let e = r.err(Command::ResolveGate { workflow: 99, step: "nope".into(), approve: true, by: "x".into() });
    assert!(matches!(e, CommandError::WorkflowNotFound(99)), "{e}");
    match r.ok(Command::ExpireGates { gates: vec![(wf, 2)] }) {
        Outcome::GatesExpired(v) => assert!(matches!(v[0], Err(CommandError::GateNotWaiting { .. }))),
        o => panic!("{o:?}"),
    }
    r.ok(Command::ResolveGate { workflow: wf, step: "approve".into(), approve: true, by: "ann".into() });
    assert_eq!(r.step(wf, "approve").reason.as_deref(), Some("approved by ann"));
    assert_eq!(r.state(wf, "deploy"), StepState::Running);
    let e = r.err(Command::ResolveGate { workflow: wf, step: "approve".into(), approve: false, by: "x".into() });
    assert!(matches!(e, CommandError::GateNotWaiting { .. }), "decided once");
    r.now_ms += 1_000;
    match r.ok(Command::ExpireGates { gates: vec![(wf, 2), (wf, 3)] }) {
        Outcome::GatesExpired(v) => assert_eq!(v, vec![Ok(true), Ok(false)]),
        o => panic!("{o:?}"),
    }
    assert!(r.core.idx.gate_deadlines.is_empty());
    assert_eq!(r.state(wf, "soak"), StepState::Succeeded);
    assert_eq!(r.state(wf, "sign"), StepState::Failed);
    r.succeed(wf, "deploy", b"");
    assert_eq!(r.wf(wf).status, WorkflowStatus::Failed);
    r.assert_reopens();
}

#[test]
fn cancel_ends_running_and_waiting_steps_and_their_jobs() {
    let mut r = rig();
    let wf = r.submit(flow(vec![
        job_step("a", &[], 3),
        job_step("b", &["a"], 1),
        gate("g", &[], Some(10_000), GateTimeout::Reject),
    ]));
    let a = r.current(wf, "a");
    let task = TaskKey::new(a, 0);
    r.ok(Command::AssignTasks { assignments: vec![Assign { task, session: r.session }] });
    match r.ok(Command::CancelWorkflow { workflow: wf, reason: "stop".into() }) {
        Outcome::WorkflowCancelled { steps_cancelled, tasks_cancelled, .. } => {
            assert_eq!((steps_cancelled, tasks_cancelled), (3, 3));
        }
        o => panic!("{o:?}"),
    }
    let rec = r.wf(wf);
    assert_eq!(rec.status, WorkflowStatus::Cancelled);
    assert!(rec.steps.iter().all(|s| s.state == StepState::Cancelled));
    assert_eq!(r.job(a).status(), JobStatus::Cancelled);
    assert!(r.core.idx.gate_deadlines.is_empty() && r.core.idx.workflows.is_empty());
    let e = r.err(Command::CancelWorkflow { workflow: wf, reason: String::new() });
    assert!(matches!(e, CommandError::WorkflowFinished { .. }));
    r.assert_reopens();
}

#[test]
fn cancelling_a_steps_job_directly_fails_the_step() {
    let mut r = rig();
    let wf = r.submit(flow(vec![job_step("a", &[], 1), job_step("b", &["a"], 1)]));
    let a = r.current(wf, "a");
    r.ok(Command::CancelJob { job: a, reason: "by hand".into() });
    assert_eq!(r.state(wf, "a"), StepState::Failed);
    assert!(r.step(wf, "a").reason.unwrap().contains("by hand"));
    assert_eq!(r.state(wf, "b"), StepState::Skipped);
    assert_eq!(r.wf(wf).status, WorkflowStatus::Failed);
}

#[test]
fn resubmitting_with_the_key_returns_the_same_workflow_and_a_cycle_changes_nothing() {
    let mut r = rig();
    let mut spec = flow(vec![job_step("a", &[], 1)]);
    spec.idempotency_key = Some("k".into());
    let wf = r.submit(spec.clone());
    match r.ok(Command::SubmitWorkflow(spec.clone())) {
        Outcome::WorkflowSubmitted { workflow, duplicate: true, .. } => assert_eq!(workflow, wf),
        o => panic!("{o:?}"),
    }
    // A job may use the same key: the tables do not collide.
    let mut job = JobSpec::with_shards("ns", 1);
    job.idempotency_key = Some("k".into());
    assert!(matches!(r.ok(Command::SubmitJob(job)), Outcome::Submitted { duplicate: false, .. }));
    spec.name = "other".into();
    assert!(matches!(r.err(Command::SubmitWorkflow(spec)), CommandError::IdempotencyConflict { .. }));

    let before = tables(&r.kv);
    let (jobs, workflows) = (r.core.meta.next_job, r.core.meta.next_workflow);
    let cyclic = flow(vec![job_step("a", &["b"], 1), job_step("b", &["a"], 1)]);
    let e = r.err(Command::SubmitWorkflow(cyclic));
    assert_eq!(e.to_string(), "invalid steps: cycle: a -> b -> a");
    assert_eq!((r.core.meta.next_job, r.core.meta.next_workflow), (jobs, workflows));
    // Only meta (last applied, clock) moved.
    assert_eq!(tables(&r.kv), before);
    assert_eq!(r.core.idx.workflows.len(), 1, "only the first workflow is live");
}

/// Every record but meta, which every entry updates.
fn tables(kv: &dyn Kv) -> BTreeMap<Vec<u8>, Vec<u8>> {
    let mut t = BTreeMap::new();
    kv.scan(&[], &mut |k, v| {
        if k != keys::meta().as_slice() {
            t.insert(k.to_vec(), v.to_vec());
        }
        Ok(true)
    })
    .unwrap();
    t
}

fn event_gate(name: &str, topic: &str, filter: &[(&str, &str)]) -> StepSpec {
    let event =
        GateEvent { topic: topic.into(), filter: filter.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect() };
    StepSpec {
        kind: StepKind::Gate { timeout_ms: None, on_timeout: GateTimeout::Reject, event: Some(event) },
        ..gate(name, &[], None, GateTimeout::Reject)
    }
}

fn publish(r: &mut Rig, ns: &str, topic: &str, id: &str, attrs: &[(&str, &str)]) -> u32 {
    let ev = EventSpec {
        namespace: ns.into(),
        topic: topic.into(),
        event_id: id.into(),
        payload: ByteBuf::new(),
        attributes: attrs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
    };
    match r.ok(Command::PublishEvent(ev)) {
        Outcome::EventPublished { gates_opened, .. } => gates_opened,
        o => panic!("{o:?}"),
    }
}

#[test]
fn an_event_gate_opens_on_the_first_matching_event_of_its_namespace_and_topic() {
    let mut r = rig();
    let wf = r.submit(flow(vec![
        event_gate("uploaded", "uploads", &[("bucket", "raw")]),
        job_step("process", &["uploaded"], 1),
        event_gate("signed", "signatures", &[]),
    ]));
    assert_eq!(r.core.idx.event_gates.len(), 2);
    // Another namespace, another topic, or attributes that miss the filter: nothing.
    assert_eq!(publish(&mut r, "other", "uploads", "e1", &[("bucket", "raw")]), 0);
    assert_eq!(publish(&mut r, "ns", "downloads", "e2", &[("bucket", "raw")]), 0);
    assert_eq!(publish(&mut r, "ns", "uploads", "e3", &[("bucket", "clean")]), 0);
    assert!(matches!(r.state(wf, "uploaded"), StepState::AwaitingApproval { .. }));
    r.assert_reopens();
    // The matching event approves the gate and starts its successor in the same entry.
    assert_eq!(publish(&mut r, "ns", "uploads", "e4", &[("bucket", "raw"), ("size", "9")]), 1);
    assert_eq!(r.state(wf, "uploaded"), StepState::Succeeded);
    assert_eq!(r.step(wf, "uploaded").reason.as_deref(), Some("approved by event \"e4\""));
    assert_eq!(r.state(wf, "process"), StepState::Running);
    // A second matching event finds no gate waiting.
    assert_eq!(publish(&mut r, "ns", "uploads", "e5", &[("bucket", "raw")]), 0);
    // An event gate can still be decided by hand, and leaves the index then.
    r.ok(Command::ResolveGate { workflow: wf, step: "signed".into(), approve: false, by: "ops".into() });
    assert!(r.core.idx.event_gates.is_empty());
    assert_eq!(publish(&mut r, "ns", "signatures", "e6", &[]), 0);
    r.assert_reopens();
    // Cancelling a workflow takes its waiting event gates out of the index too.
    let wf2 = r.submit(WorkflowSpec { name: "two".into(), ..flow(vec![event_gate("g", "uploads", &[])]) });
    assert_eq!(r.core.idx.event_gates.len(), 1);
    r.ok(Command::CancelWorkflow { workflow: wf2, reason: String::new() });
    assert!(r.core.idx.event_gates.is_empty());
}

#[test]
fn an_event_gate_past_the_per_topic_limit_fails_saying_why() {
    let mut r = rig();
    // Two workflows (a workflow has at most 1000 steps): the limit, then one more.
    let gates = |from: usize, to: usize| (from..to).map(|i| event_gate(&format!("g{i}"), "t", &[])).collect();
    let half = MAX_EVENT_GATES_PER_TOPIC / 2;
    let a = r.submit(WorkflowSpec { name: "a".into(), ..flow(gates(0, half)) });
    let b = r.submit(WorkflowSpec { name: "b".into(), ..flow(gates(half, MAX_EVENT_GATES_PER_TOPIC + 1)) });
    assert!(matches!(r.state(a, "g0"), StepState::AwaitingApproval { .. }));
    let last = r.step(b, &format!("g{MAX_EVENT_GATES_PER_TOPIC}"));
    assert_eq!(last.state, StepState::Failed);
    assert!(last.reason.unwrap().contains("event gates already wait on topic"));
    assert_eq!(publish(&mut r, "ns", "t", "e", &[]), MAX_EVENT_GATES_PER_TOPIC as u32);
    r.assert_reopens();
}
