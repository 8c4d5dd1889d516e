//! The client side of a run: submitters of jobs and of workflows, a reader,
//! and the leader watcher, each recording what it sees until told to stop.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use baton_client::{Client, ClientConfig, proto, workflow};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use super::final_read::{NAMESPACE, job_status};
use super::record::Recorder;
use crate::history::{
    Body, LeaderSeen, OpFailure, ReadInvoke, ReadOk, ReadReply, SubmitInvoke, SubmitOk, TriggerRule, WorkflowCancel,
    WorkflowStepSpec, WorkflowSubmitInvoke, WorkflowSubmitOk,
};

/// Most submits a submitter retries one idempotency key after `info`.
const SUBMIT_RETRIES: u32 = 10;
/// How often the watcher polls every node for its role and term.
const WATCH_PERIOD: Duration = Duration::from_millis(100);
/// Deadline of one watcher poll of one node: a paused node must not stall the
/// watch for long.
const WATCH_RPC_TIMEOUT: Duration = Duration::from_millis(300);

/// Jobs acknowledged so far, shared by the submitters and the reader.
pub(super) type Acked = Arc<Mutex<Vec<u64>>>;

/// Submit jobs of 1-3 shards until `stop`, retrying an `info` with the same key.
pub(super) async fn submitter(
    client: Client,
    rec: Arc<Recorder>,
    name: String,
    seed: u64,
    stop: Arc<AtomicBool>,
    acked: Acked,
) {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut op = 0u64;
    let mut n = 0u64;
    while !stop.load(Ordering::Relaxed) {
        n += 1;
        let key = format!("{name}-{n}");
        let shards = rng.random_range(1..=3u32);
        for _ in 0..=SUBMIT_RETRIES {
            op += 1;
            rec.record(SubmitInvoke { client: name.clone(), op, key: key.clone(), shards });
            let spec = proto::JobSpec {
                namespace: NAMESPACE.into(),
                name: key.clone(),
                shards,
                max_attempts: 50,
                backoff_base_ms: 100,
                backoff_max_ms: 1_000,
                idempotency_key: key.clone(),
                ..Default::default()
            };
            match client.submit(spec).await {
                Ok(r) => {
                    rec.record(SubmitOk { client: name.clone(), op, job: r.job_id });
                    acked.lock().unwrap_or_else(|p| p.into_inner()).push(r.job_id);
                    break;
                }
                Err(e) if e.is_indeterminate() => {
                    rec.record(Body::SubmitInfo(OpFailure { client: name.clone(), op, error: e.to_string() }));
                }
                Err(e) => {
                    rec.record(Body::SubmitFail(OpFailure { client: name.clone(), op, error: e.to_string() }));
                    break;
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(rng.random_range(20..80))).await;
    }
}

/// Linearizable status reads of random acknowledged jobs until `stop`.
pub(super) async fn reader(client: Client, rec: Arc<Recorder>, seed: u64, stop: Arc<AtomicBool>, acked: Acked) {
    let mut rng = StdRng::seed_from_u64(seed);
    let name = "r1".to_string();
    let mut op = 0;
    while !stop.load(Ordering::Relaxed) {
        tokio::time::sleep(Duration::from_millis(rng.random_range(50..200))).await;
        let job = {
            let a = acked.lock().unwrap_or_else(|p| p.into_inner());
            if a.is_empty() {
                continue;
            }
            a[rng.random_range(0..a.len())]
        };
        op += 1;
        rec.record(ReadInvoke { client: name.clone(), op, job });
        match client.get(job).await {
            Ok(j) => rec.record(ReadOk { client: name.clone(), op, status: job_status(j.status) }),
            Err(baton_client::Error::NotFound(_)) => {
                rec.record(Body::ReadNotFound(ReadReply { client: name.clone(), op }))
            }
            Err(e) => rec.record(Body::ReadFail(OpFailure { client: name.clone(), op, error: e.to_string() })),
        }
    }
}

/// Until `stop`, poll every node; record each leader of a term newer than
/// any seen lead before (a `leader` event), and count the elections won
/// after the first leader in `changes`.
pub(super) async fn watch_leader(
    mut cfg: ClientConfig,
    rec: Arc<Recorder>,
    stop: Arc<AtomicBool>,
    changes: Arc<AtomicU64>,
) {
    cfg.rpc_timeout = WATCH_RPC_TIMEOUT;
    let endpoints = cfg.endpoints.clone();
    let Ok(client) = Client::new(cfg) else { return };
    let mut last_term = 0u64;
    while !stop.load(Ordering::Relaxed) {
        for e in &endpoints {
            if let Ok(s) = client.status(Some(e)).await
                && s.role == "leader"
                && s.term > last_term
            {
                rec.record(LeaderSeen { node: s.node_id, term: s.term });
                if last_term != 0 {
                    changes.fetch_add(1, Ordering::Relaxed);
                }
                last_term = s.term;
            }
        }
        tokio::time::sleep(WATCH_PERIOD).await;
    }
}

/// A choice step's payload: this prefix, then its successors' names, comma
/// separated; the worker chooses among them.
pub const CHOICE_PREFIX: &[u8] = b"choose:";
/// A dynamic map generator's payload: the worker emits 0-3 children.
pub const GENERATE_PAYLOAD: &[u8] = b"generate";
/// Every reduce's payload, and the function it computes, as the checker
/// knows it: the sum of the leading numbers of its map's results.
pub const REDUCE_PAYLOAD: &[u8] = b"sum";
/// Chance that a workflow submitter cancels a workflow it submitted, and
/// that it decides a gate, per mille.
const CANCEL_WORKFLOW_PER_MILLE: u32 = 120;
const DECIDE_GATE_PER_MILLE: u32 = 400;
/// A gate's timeout, ms (inclusive): short, so that the leader's gate
/// expiries happen under the faults.
const GATE_TIMEOUT_MS: (u64, u64) = (300, 2_000);

/// A workflow being built: the proto spec and the shape the history records.
struct Flow {
    steps: Vec<workflow::Step>,
    shape: Vec<WorkflowStepSpec>,
}

impl Flow {
    #[allow(clippy::too_many_arguments)]
    fn job(
        &mut self,
        name: &str,
        deps: &[&str],
        trigger: TriggerRule,
        shards: u32,
        payload: Option<&[u8]>,
        reduce: bool,
    ) {
        let payloads = payload.map(|p| vec![p.to_vec()]).unwrap_or_default();
        let job = proto::JobSpec {
            shards: if payloads.is_empty() { shards } else { 0 },
            payloads,
            max_attempts: 50,
            backoff_base_ms: 100,
            backoff_max_ms: 1_000,
            ..Default::default()
        };
        let mut step = workflow::Step::job(name, job).depends_on(deps.iter().copied()).trigger(proto_rule(trigger));
        if reduce {
            step = step.reduce(REDUCE_PAYLOAD.to_vec());
        }
        let choice = payload.is_some_and(|p| p.starts_with(CHOICE_PREFIX));
        let dynamic = payload == Some(GENERATE_PAYLOAD);
        if choice {
            step = step.choice();
        }
        if dynamic {
            step = step.dynamic();
        }
        self.steps.push(step);
        self.shape.push(WorkflowStepSpec {
            name: name.into(),
            depends_on: deps.iter().map(|d| d.to_string()).collect(),
            trigger,
            gate: false,
            shards: if payload.is_some() { 1 } else { shards },
            reduce: reduce.then(|| String::from_utf8_lossy(REDUCE_PAYLOAD).into_owned()),
            choice,
            dynamic,
        });
    }

    fn gate(&mut self, name: &str, deps: &[&str], timeout_ms: u64, approve_on_timeout: bool) {
        let step = workflow::Step::gate(name)
            .depends_on(deps.iter().copied())
            .gate_timeout(Duration::from_millis(timeout_ms), approve_on_timeout);
        self.steps.push(step);
        self.shape.push(WorkflowStepSpec {
            name: name.into(),
            depends_on: deps.iter().map(|d| d.to_string()).collect(),
            trigger: TriggerRule::AllSucceeded,
            gate: true,
            shards: 0,
            reduce: None,
            choice: false,
            dynamic: false,
        });
    }
}

fn proto_rule(r: TriggerRule) -> proto::TriggerRule {
    match r {
        TriggerRule::AllSucceeded => proto::TriggerRule::AllSucceeded,
        TriggerRule::AnySucceeded => proto::TriggerRule::AnySucceeded,
        TriggerRule::AllDone => proto::TriggerRule::AllDone,
        TriggerRule::AnyFailed => proto::TriggerRule::AnyFailed,
        TriggerRule::NoneFailed => proto::TriggerRule::NoneFailed,
    }
}

/// One seeded workflow: its steps, result step and gate (name, timeout).
fn draw_flow(rng: &mut StdRng) -> (Flow, Option<&'static str>, Option<(&'static str, u64)>) {
    use TriggerRule::*;
    let mut f = Flow { steps: Vec::new(), shape: Vec::new() };
    let mut n = |hi: u32| rng.random_range(1..=hi);
    let (a, b, c) = (n(2), n(2), n(3));
    match rng.random_range(0..6) {
        0 => {
            f.job("a", &[], AllSucceeded, a, None, false);
            f.job("b", &["a"], AllSucceeded, b, None, false);
            f.job("c", &["b"], AllSucceeded, 1, None, false);
            (f, Some("c"), None)
        }
        1 => {
            f.job("src", &[], AllSucceeded, 1, None, false);
            f.job("p1", &["src"], AllSucceeded, a, None, false);
            f.job("p2", &["src"], AllSucceeded, b, None, false);
            f.job("p3", &["src"], AllSucceeded, c, None, false);
            f.job("join", &["p1", "p2", "p3"], AllSucceeded, 1, None, false);
            f.job("cleanup", &["join"], AllDone, 1, None, false);
            f.job("compensate", &["p1", "p2", "p3"], AnyFailed, 1, None, false);
            (f, None, None)
        }
        2 => {
            let choose = [CHOICE_PREFIX, b"left,right"].concat();
            f.job("decide", &[], AllSucceeded, 1, Some(&choose), false);
            f.job("left", &["decide"], AllSucceeded, a, None, false);
            f.job("right", &["decide"], AllSucceeded, b, None, false);
            f.job("join", &["left", "right"], NoneFailed, 1, None, false);
            (f, None, None)
        }
        3 => {
            f.job("map", &[], AllSucceeded, c + 1, None, true);
            f.job("after", &["map"], AllSucceeded, 1, None, false);
            (f, Some("map"), None)
        }
        4 => {
            f.job("gen", &[], AllSucceeded, 1, Some(GENERATE_PAYLOAD), true);
            f.job("after", &["gen"], AnySucceeded, 1, None, false);
            (f, Some("gen"), None)
        }
        _ => {
            let timeout = rng.random_range(GATE_TIMEOUT_MS.0..=GATE_TIMEOUT_MS.1);
            f.job("prepare", &[], AllSucceeded, 1, None, false);
            f.gate("approve", &["prepare"], timeout, rng.random_bool(0.5));
            f.job("ship", &["approve"], AllSucceeded, 1, None, false);
            f.job("rollback", &["approve"], AnyFailed, 1, None, false);
            (f, None, Some(("approve", timeout)))
        }
    }
}

/// Submit seeded workflows until `stop`, each with an idempotency key and
/// retried after `info`; decide some gates (once they ask, racing their
/// timeout) and cancel some workflows.
pub(super) async fn workflow_submitter(
    client: Client,
    rec: Arc<Recorder>,
    name: String,
    seed: u64,
    stop: Arc<AtomicBool>,
) {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut op = 0u64;
    let mut n = 0u64;
    while !stop.load(Ordering::Relaxed) {
        n += 1;
        let key = format!("{name}-w{n}");
        let (flow, result_step, gate) = draw_flow(&mut rng);
        let mut b = workflow::WorkflowBuilder::new(NAMESPACE, key.clone()).idempotency_key(key.clone());
        for s in flow.steps {
            b = b.step(s);
        }
        if let Some(r) = result_step {
            b = b.result_step(r);
        }
        let spec = b.build();
        let mut acked = None;
        for _ in 0..=SUBMIT_RETRIES {
            op += 1;
            rec.record(WorkflowSubmitInvoke {
                client: name.clone(),
                op,
                key: key.clone(),
                steps: flow.shape.clone(),
                result_step: result_step.map(str::to_string),
            });
            match client.submit_workflow(spec.clone()).await {
                Ok(r) => {
                    rec.record(WorkflowSubmitOk { client: name.clone(), op, workflow: r.workflow_id });
                    acked = Some(r.workflow_id);
                    break;
                }
                Err(e) if e.is_indeterminate() => {
                    rec.record(Body::WorkflowSubmitInfo(OpFailure { client: name.clone(), op, error: e.to_string() }));
                }
                Err(e) => {
                    rec.record(Body::WorkflowSubmitFail(OpFailure { client: name.clone(), op, error: e.to_string() }));
                    break;
                }
            }
        }
        if let Some(wf) = acked {
            if let Some((gate, timeout)) = gate.filter(|_| rng.random_range(0..1000) < DECIDE_GATE_PER_MILLE) {
                let (after, approve) = (rng.random_range(0..timeout + 300), rng.random_bool(0.5));
                if wait_for_gate(&client, wf, gate, &stop).await {
                    tokio::time::sleep(Duration::from_millis(after)).await;
                    let r = if approve {
                        client.approve_step(wf, gate, &name).await
                    } else {
                        client.reject_step(wf, gate, &name).await
                    };
                    tracing::debug!(workflow = wf, approve, ok = r.is_ok(), "gate decided");
                }
            } else if rng.random_range(0..1000) < CANCEL_WORKFLOW_PER_MILLE {
                tokio::time::sleep(Duration::from_millis(rng.random_range(0..2_000))).await;
                rec.record(WorkflowCancel { client: name.clone(), workflow: wf });
                let r = client.cancel_workflow(wf, &format!("{name} changed its mind")).await;
                tracing::debug!(workflow = wf, ok = r.is_ok(), "workflow cancel");
            }
        }
        tokio::time::sleep(Duration::from_millis(rng.random_range(200..1_000))).await;
    }
}

/// Poll the workflow until `gate` awaits approval (true) or has finished,
/// or the run stops (false).
async fn wait_for_gate(client: &Client, wf: u64, gate: &str, stop: &AtomicBool) -> bool {
    while !stop.load(Ordering::Relaxed) {
        if let Ok(w) = client.get_workflow(wf).await
            && let Some(s) = w.steps.iter().find(|s| s.name == gate)
        {
            match proto::StepStatus::try_from(s.status) {
                Ok(proto::StepStatus::AwaitingApproval) => return true,
                Ok(proto::StepStatus::Waiting | proto::StepStatus::Running) => {}
                _ => return false,
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    false
}
