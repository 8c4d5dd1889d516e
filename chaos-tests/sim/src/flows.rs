//! Workflows in the simulation: a submitter of seeded workflow shapes, and
//! what a worker computes for an attempt of a job a workflow started.
//!
//! Shapes (one per workflow, seeded): a chain; a fan-out to three branches
//! with a fan-in, a clean-up (`all_done`) and a compensation (`any_failed`);
//! a choice between two branches joined by `none_failed`; a map with a sum
//! reduce named the workflow's result; a dynamic map (a generator emitting
//! zero to three shards) with a sum reduce; a gate with a short timeout
//! (approved or rejected on timeout, sometimes decided by the submitter
//! first) followed by a step and a compensation. Some workflows are
//! cancelled by their submitter.
//!
//! Workers compute every result from the cluster's committed state, never
//! from the workload's memory: a step reads its inputs' committed shard
//! results, a reduce sums its map job's committed shard results as the SDK's
//! reduce input pages through them, and a choice reads its successors from
//! the workflow record. A result that depends on state a node has not
//! applied yet waits ([`NotReady`]).

use std::sync::{Arc, Mutex};
use std::time::Duration;

use baton_chaos::history::{StepRef, StepRole as HStepRole, TriggerRule as HTrigger, WorkflowStepSpec};
use baton_raft_store::workflow::{GateTimeout, ReduceSpec, StepShape, encode_children};
use baton_raft_store::{
    Backoff, Command, JobId, JobOrigin, JobSpec, NodeId, Outcome, Response, StepKind, StepRole, StepSpec, StepState,
    TaskKey, TaskState, Token, TriggerRule, WorkflowId, WorkflowRecord, WorkflowSpec,
};
use serde_bytes::ByteBuf;

use crate::net::{ClientReply, client_write};
use crate::workload::retarget;
use crate::world::{Phase, World};

/// Namespace of every workflow the sim submits.
pub const NAMESPACE: &str = "wf";
/// Chance that a submitter cancels a workflow it submitted, per mille.
pub const CANCEL_WORKFLOW_PER_MILLE: u32 = 120;
/// Chance that the submitter decides a gate itself before its timeout, per mille.
pub const DECIDE_GATE_PER_MILLE: u32 = 400;
/// Chance that an attempt of a workflow job ends in a fatal failure, per
/// mille: high enough that failure and skip propagation happen in most runs.
pub const WORKFLOW_FATAL_FAIL_PER_MILLE: u32 = 50;
/// Chance that a choice names no successor, and that it names one that is
/// not a successor (the step then fails), per mille.
pub const EMPTY_CHOICE_PER_MILLE: u32 = 100;
pub const BAD_CHOICE_PER_MILLE: u32 = 60;
/// A gate's timeout, ms (inclusive range): short, so that most expire in
/// the run and the leader's expiry proposals are exercised.
pub const GATE_TIMEOUT_MS: (u64, u64) = (200, 1_500);
/// The reduce function every sim reduce computes, as the checker knows it.
pub const REDUCE_FN: &str = "sum";

/// The result depends on committed state no running node has applied yet.
#[derive(Debug)]
pub struct NotReady(pub String);

/// A workflow being built: the spec the cluster gets and the shape the history records.
struct Builder {
    key: String,
    steps: Vec<StepSpec>,
    shape: Vec<WorkflowStepSpec>,
}

impl Builder {
    fn new(key: &str) -> Self {
        Builder { key: key.to_string(), steps: Vec::new(), shape: Vec::new() }
    }

    #[allow(clippy::too_many_arguments)]
    fn job(
        &mut self,
        name: &str,
        deps: &[&str],
        trigger: TriggerRule,
        shards: usize,
        reduce: bool,
        choice: bool,
        dynamic: bool,
    ) {
        let mut job = JobSpec::with_shards(NAMESPACE, shards);
        job.max_attempts = 50;
        job.backoff = Backoff { base_ms: 50, max_ms: 400 };
        job.attempt_timeout_ms = 4_000;
        for (i, p) in job.payloads.iter_mut().enumerate() {
            *p = ByteBuf::from(format!("{}/{name}/{i}", self.key).into_bytes());
        }
        let reduce_spec = reduce.then(|| ReduceSpec { payload: ByteBuf::from(REDUCE_FN.as_bytes().to_vec()) });
        self.steps.push(StepSpec {
            name: name.into(),
            depends_on: deps.iter().map(|d| d.to_string()).collect(),
            trigger,
            kind: StepKind::Job { job, reduce: reduce_spec, choice, dynamic },
        });
        self.shape.push(WorkflowStepSpec {
            name: name.into(),
            depends_on: deps.iter().map(|d| d.to_string()).collect(),
            trigger: history_rule(trigger),
            gate: false,
            shards: shards as u32,
            reduce: reduce.then(|| REDUCE_FN.to_string()),
            choice,
            dynamic,
        });
    }

    fn gate(&mut self, name: &str, deps: &[&str], timeout_ms: u64, on_timeout: GateTimeout) {
        self.steps.push(StepSpec {
            name: name.into(),
            depends_on: deps.iter().map(|d| d.to_string()).collect(),
            trigger: TriggerRule::AllSucceeded,
            kind: StepKind::Gate { timeout_ms: Some(timeout_ms), on_timeout, event: None },
        });
        self.shape.push(WorkflowStepSpec {
            name: name.into(),
            depends_on: deps.iter().map(|d| d.to_string()).collect(),
            trigger: HTrigger::AllSucceeded,
            gate: true,
            shards: 0,
            reduce: None,
            choice: false,
            dynamic: false,
        });
    }
}

fn history_rule(r: TriggerRule) -> HTrigger {
    match r {
        TriggerRule::AllSucceeded => HTrigger::AllSucceeded,
        TriggerRule::AnySucceeded => HTrigger::AnySucceeded,
        TriggerRule::AllDone => HTrigger::AllDone,
        TriggerRule::AnyFailed => HTrigger::AnyFailed,
        TriggerRule::NoneFailed => HTrigger::NoneFailed,
    }
}

pub fn history_role(r: StepRole) -> HStepRole {
    match r {
        StepRole::Generate => HStepRole::Generate,
        StepRole::Map => HStepRole::Map,
        StepRole::Reduce => HStepRole::Reduce,
    }
}

/// The history's view of a job's origin.
pub fn step_ref(o: &JobOrigin) -> StepRef {
    StepRef { workflow: o.workflow, step: o.step_name.clone(), role: history_role(o.role), reduce_of: o.reduce_of }
}

/// A seeded workflow: the spec, its shape for the history, and the gate (name, timeout) if it has one.
struct Drawn {
    spec: WorkflowSpec,
    shape: Vec<WorkflowStepSpec>,
    gate: Option<(String, u64)>,
}

fn draw(w: &mut World, key: &str) -> Drawn {
    use TriggerRule::*;
    let mut b = Builder::new(key);
    let mut result_step = None;
    let mut gate = None;
    let n = |w: &mut World, hi: u64| w.range(1, hi) as usize;
    match w.range(0, 5) {
        0 => {
            let (a, c) = (n(w, 2), n(w, 2));
            b.job("a", &[], AllSucceeded, a, false, false, false);
            b.job("b", &["a"], AllSucceeded, c, false, false, false);
            b.job("c", &["b"], AllSucceeded, 1, false, false, false);
            result_step = Some("c");
        }
        1 => {
            b.job("src", &[], AllSucceeded, 1, false, false, false);
            for p in ["p1", "p2", "p3"] {
                let s = n(w, 2);
                b.job(p, &["src"], AllSucceeded, s, false, false, false);
            }
            b.job("join", &["p1", "p2", "p3"], AllSucceeded, 1, false, false, false);
            b.job("cleanup", &["join"], AllDone, 1, false, false, false);
            b.job("compensate", &["p1", "p2", "p3"], AnyFailed, 1, false, false, false);
        }
        2 => {
            b.job("decide", &[], AllSucceeded, 1, false, true, false);
            b.job("left", &["decide"], AllSucceeded, 1, false, false, false);
            b.job("right", &["decide"], AllSucceeded, n(w, 2), false, false, false);
            b.job("join", &["left", "right"], NoneFailed, 1, false, false, false);
        }
        3 => {
            let shards = w.range(2, 4) as usize;
            b.job("map", &[], AllSucceeded, shards, true, false, false);
            b.job("after", &["map"], AllSucceeded, 1, false, false, false);
            result_step = Some("map");
        }
        4 => {
            b.job("gen", &[], AllSucceeded, 1, true, false, true);
            b.job("after", &["gen"], AnySucceeded, 1, false, false, false);
            result_step = Some("gen");
        }
        _ => {
            let timeout = w.range(GATE_TIMEOUT_MS.0, GATE_TIMEOUT_MS.1);
            let on_timeout = if w.chance(500) { GateTimeout::Approve } else { GateTimeout::Reject };
            b.job("prepare", &[], AllSucceeded, 1, false, false, false);
            b.gate("approve", &["prepare"], timeout, on_timeout);
            b.job("ship", &["approve"], AllSucceeded, 1, false, false, false);
            b.job("rollback", &["approve"], AnyFailed, 1, false, false, false);
            gate = Some(("approve".to_string(), timeout));
        }
    }
    let spec = WorkflowSpec {
        namespace: NAMESPACE.into(),
        name: key.into(),
        labels: Default::default(),
        idempotency_key: Some(key.into()),
        steps: b.steps,
        result_step: result_step.map(str::to_string),
    };
    Drawn { spec, shape: b.shape, gate }
}

/// One workflow submitter: `flows` workflows, one at a time, each retried
/// with its key until acknowledged; some gates decided, some workflows cancelled.
pub async fn submitter(world: Arc<Mutex<World>>, client: usize, flows: usize) {
    let name = format!("f{client}");
    let mut target = {
        let mut w = world.lock().unwrap();
        let n = w.cfg.nodes as u64;
        w.range(1, n)
    };
    let mut op = 0u64;
    for k in 0..flows {
        let key = format!("{name}-w{k}");
        let (gap, drawn, cancel, decide) = {
            let mut w = world.lock().unwrap();
            let gap = w.range(100, 2_000);
            let drawn = draw(&mut w, &key);
            // A gate is decided (racing its timeout) or the workflow cancelled, not both.
            let decide = match &drawn.gate {
                Some((_, timeout)) if w.chance(DECIDE_GATE_PER_MILLE) => {
                    let approve = w.chance(500);
                    Some((w.range(0, *timeout + 200), approve))
                }
                _ => None,
            };
            let cancel = (decide.is_none() && w.chance(CANCEL_WORKFLOW_PER_MILLE)).then(|| w.range(0, 2_000));
            (gap, drawn, cancel, decide)
        };
        tokio::time::sleep(Duration::from_millis(gap)).await;
        let mut acked = None;
        loop {
            op += 1;
            {
                let mut w = world.lock().unwrap();
                let t = w.now_ms();
                let rs = drawn.spec.result_step.clone();
                w.history.workflow_submit_invoke(t, &name, op, &key, drawn.shape.clone(), rs);
            }
            let reply = client_write(&world, target, Command::SubmitWorkflow(drawn.spec.clone())).await;
            let retry_ms = {
                let mut w = world.lock().unwrap();
                let t = w.now_ms();
                let retry_ms = match &reply {
                    ClientReply::Ok(Response::Done(Outcome::WorkflowSubmitted { workflow, .. })) => {
                        w.history.workflow_submit_ok(t, &name, op, *workflow);
                        w.stats.workflows += 1;
                        acked = Some(*workflow);
                        None
                    }
                    ClientReply::Ok(other) => {
                        w.history.workflow_submit_fail(t, &name, op, &format!("{other:?}"));
                        None
                    }
                    ClientReply::NotLeader(_) => {
                        w.history.workflow_submit_fail(t, &name, op, "not the leader");
                        Some(20)
                    }
                    ClientReply::Refused(e) => {
                        w.history.workflow_submit_fail(t, &name, op, e);
                        Some(100)
                    }
                    ClientReply::Unknown(e) => {
                        w.history.workflow_submit_info(t, &name, op, e);
                        Some(w.range(50, 400))
                    }
                };
                target = retarget(&mut w, target, &reply);
                retry_ms.filter(|_| w.phase != Phase::Stopped)
            };
            let Some(retry_ms) = retry_ms else { break };
            tokio::time::sleep(Duration::from_millis(retry_ms)).await;
        }
        let Some(wf) = acked else { continue };
        if let (Some((after_ms, approve)), Some((gate, _))) = (decide, &drawn.gate) {
            // As an operator would: decide once the gate asks, racing its timeout.
            if wait_for_gate(&world, wf, gate).await {
                tokio::time::sleep(Duration::from_millis(after_ms)).await;
                let cmd = Command::ResolveGate { workflow: wf, step: gate.clone(), approve, by: name.clone() };
                target = until_definite(&world, &name, target, cmd).await;
            }
        }
        if let Some(after_ms) = cancel {
            tokio::time::sleep(Duration::from_millis(after_ms)).await;
            {
                let mut w = world.lock().unwrap();
                let t = w.now_ms();
                w.history.workflow_cancel(t, &name, wf);
            }
            let cmd = Command::CancelWorkflow { workflow: wf, reason: format!("{name} changed its mind") };
            target = until_definite(&world, &name, target, cmd).await;
        }
    }
    world.lock().unwrap().clients_done += 1;
}

/// Wait until some node's committed state shows `gate` of `wf` awaiting
/// approval (true), or finished without asking (false), polling as a
/// client watching the workflow would.
async fn wait_for_gate(world: &Arc<Mutex<World>>, wf: WorkflowId, gate: &str) -> bool {
    loop {
        {
            let w = world.lock().unwrap();
            if w.phase == Phase::Stopped {
                return false;
            }
            let states: Vec<StepState> = w
                .nodes
                .values()
                .filter_map(|s| {
                    let sm = s.run.as_ref()?.sm.lock().unwrap();
                    let rec = sm.core.workflow(&sm.kv, wf).ok().flatten()?;
                    rec.steps.iter().find(|s| s.name == gate).map(|s| s.state.clone())
                })
                .collect();
            if states.iter().any(|s| matches!(s, StepState::AwaitingApproval { .. })) {
                return true;
            }
            if states.iter().any(StepState::is_terminal) {
                return false;
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Send `cmd` until the answer is definite: committed or refused.
async fn until_definite(world: &Arc<Mutex<World>>, name: &str, mut target: NodeId, cmd: Command) -> NodeId {
    loop {
        let reply = client_write(world, target, cmd.clone()).await;
        let retry_ms = {
            let mut w = world.lock().unwrap();
            let retry_ms = match &reply {
                ClientReply::Ok(Response::Done(o)) => {
                    match o {
                        Outcome::WorkflowCancelled { .. } => w.stats.workflows_cancelled += 1,
                        Outcome::GateResolved { .. } => w.stats.gates_decided += 1,
                        _ => {}
                    }
                    w.trace(format_args!("{} committed {name} {o:?}", cmd.kind()));
                    None
                }
                ClientReply::Ok(other) => {
                    w.trace(format_args!("{} refused {name} {other:?}", cmd.kind()));
                    None
                }
                ClientReply::NotLeader(_) => Some(20),
                ClientReply::Refused(_) => Some(100),
                ClientReply::Unknown(_) => Some(w.range(50, 400)),
            };
            target = retarget(&mut w, target, &reply);
            retry_ms.filter(|_| w.phase != Phase::Stopped)
        };
        let Some(retry_ms) = retry_ms else { return target };
        tokio::time::sleep(Duration::from_millis(retry_ms)).await;
    }
}

/// The origin of `job` (`Some(None)` for a plain job), read from the first
/// running node that has its record; `None` if none has it yet.
pub fn origin_of(w: &World, job: JobId) -> Option<Option<JobOrigin>> {
    w.nodes.values().find_map(|s| {
        let sm = s.run.as_ref()?.sm.lock().unwrap();
        sm.core.job(&sm.kv, job).ok().flatten().map(|j| j.origin)
    })
}

/// What a node's committed state says about the shards of `job`: their
/// committed results, once every shard has succeeded there.
fn committed_results(w: &World, prefer: NodeId, job: JobId) -> Result<Vec<String>, NotReady> {
    let order = std::iter::once(prefer).chain(w.nodes.keys().copied().filter(|n| *n != prefer));
    for node in order {
        let Some(run) = w.running(node) else { continue };
        let sm = run.sm.lock().unwrap();
        let Ok(Some(rec)) = sm.core.job(&sm.kv, job) else { continue };
        // Paged by shard, as the SDK's reduce input reads GetResults.
        let mut out = Vec::with_capacity(rec.shards as usize);
        for shard in 0..rec.shards {
            match sm.core.task(&sm.kv, TaskKey::new(job, shard)).ok().flatten().map(|t| t.state) {
                Some(TaskState::Succeeded { result, .. }) => out.push(String::from_utf8_lossy(&result).into_owned()),
                _ => break,
            }
        }
        if out.len() == rec.shards as usize {
            return Ok(out);
        }
    }
    Err(NotReady(format!("no running node has every shard of job {job} succeeded")))
}

fn workflow_record(w: &World, prefer: NodeId, wf: WorkflowId) -> Result<WorkflowRecord, NotReady> {
    let order = std::iter::once(prefer).chain(w.nodes.keys().copied().filter(|n| *n != prefer));
    for node in order {
        let Some(run) = w.running(node) else { continue };
        let sm = run.sm.lock().unwrap();
        if let Ok(Some(rec)) = sm.core.workflow(&sm.kv, wf) {
            return Ok(rec);
        }
    }
    Err(NotReady(format!("no running node has workflow {wf}")))
}

/// The leading number of a workflow job's result (0 for one without).
fn value(result: &str) -> u64 {
    result.split(' ').next().and_then(|v| v.parse().ok()).unwrap_or(0)
}

/// The result a worker commits for an attempt of a workflow job, computed
/// from committed state read on `node` (the worker's node) or any other.
pub fn result(
    w: &mut World,
    node: NodeId,
    tag: &str,
    task: TaskKey,
    token: Token,
    o: &JobOrigin,
) -> Result<Vec<u8>, NotReady> {
    let rec = workflow_record(w, node, o.workflow)?;
    let shape = rec.steps[o.step as usize].shape.clone();
    let (choice, reduce) = match shape {
        StepShape::Job { choice, reduce, .. } => (choice, reduce),
        StepShape::Gate { .. } => (false, false),
    };
    match o.role {
        StepRole::Generate => {
            let n = w.range(0, 3);
            let children: Vec<Vec<u8>> = (0..n).map(|i| format!("child-{i}").into_bytes()).collect();
            w.stats.children += n;
            w.stats.empty_generators += u64::from(n == 0);
            Ok(encode_children(&children))
        }
        role if choice && (role == StepRole::Reduce || !reduce) => {
            let succs: Vec<String> =
                rec.steps[o.step as usize].succs.iter().map(|&i| rec.steps[i as usize].name.clone()).collect();
            let names: Vec<String> = if w.chance(BAD_CHOICE_PER_MILLE) {
                vec!["nowhere".into()]
            } else if w.chance(EMPTY_CHOICE_PER_MILLE) {
                Vec::new()
            } else {
                let pick: Vec<String> = succs.iter().filter(|_| w.chance(600)).cloned().collect();
                if pick.is_empty() { vec![succs[w.range(0, succs.len() as u64 - 1) as usize].clone()] } else { pick }
            };
            w.stats.choices += 1;
            Ok(serde_json_array(&names).into_bytes())
        }
        StepRole::Reduce => {
            let inputs = match o.reduce_of {
                Some(map) => committed_results(w, node, map)?,
                None => Vec::new(),
            };
            let sum: u64 = inputs.iter().map(|r| value(r)).sum();
            w.stats.reduces += 1;
            Ok(format!("{sum} {tag}:{}/{}@{token} reduce of {}", task.job, task.shard, inputs.len()).into_bytes())
        }
        StepRole::Map => {
            // Reads every predecessor's committed output, and mixes in the
            // token, so a result read from the wrong attempt shows.
            let mut from_inputs = 0;
            for input in &o.inputs {
                let results = committed_results(w, node, input.job)?;
                check_input(w, task, o, input, results.len());
                from_inputs += results.iter().map(|r| value(r)).sum::<u64>();
            }
            let v = token % 100 + from_inputs % 1_000;
            Ok(format!("{v} {tag}:{}/{}@{token}", task.job, task.shard).into_bytes())
        }
    }
}

/// The SDK reads a predecessor's output as `input.shards` shards: that
/// must be the output job's shard count, or the handler reads too little.
fn check_input(w: &mut World, task: TaskKey, o: &JobOrigin, input: &baton_raft_store::StepInput, shards: usize) {
    if input.shards as usize != shards {
        let v = format!(
            "job {} (step {:?} of workflow {}, {}) names its input {:?} as job {} with {} shards, but that job has \
             {shards} committed shards: a handler reading its predecessor's results would read the wrong count",
            task.job,
            o.step_name,
            o.workflow,
            o.role.name(),
            input.step,
            input.job,
            input.shards
        );
        if !w.violations.contains(&v) {
            w.violations.push(v);
        }
    }
}

/// `["a","b"]`, without pulling a JSON encoder into the sim for step names
/// that never need escaping.
fn serde_json_array(names: &[String]) -> String {
    let quoted: Vec<String> = names.iter().map(|n| format!("\"{n}\"")).collect();
    format!("[{}]", quoted.join(","))
}
