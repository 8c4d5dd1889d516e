//! Workflows against a real 3-node cluster, through the Rust SDK: one test
//! per semantics row (sequential, parallel, choice, map-reduce, dynamic map,
//! failure and skip propagation, gates, cancellation, bad input,
//! idempotency), and a leader kill in the middle of a map-reduce.

mod common;

use std::collections::BTreeSet;
use std::future::Future;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use baton_client::error::{ERROR_CODE_HEADER, codes};
use baton_client::proto::workflow_service_client::WorkflowServiceClient;
use baton_client::workflow::{Step, WorkflowBuilder, choose, emit_children};
use baton_client::{Client, ClientConfig, Error, TaskContext, TaskError, Worker, proto};
use common::*;
use futures::StreamExt;

static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
const SECS: fn(u64) -> Duration = Duration::from_secs;
const NS: &str = "wf";

fn client(c: &Cluster) -> Client {
    let mut cfg = ClientConfig::new(c.endpoints());
    cfg.deadline = SECS(30);
    cfg.rpc_timeout = SECS(3);
    Client::new(cfg).unwrap()
}

/// A job of `n` shards whose payloads are "0".."n-1".
fn numbered(n: u32) -> proto::JobSpec {
    proto::JobSpec {
        payloads: (0..n).map(|i| i.to_string().into_bytes()).collect(),
        attempt_timeout_ms: 60_000,
        ..Default::default()
    }
}

fn one(payload: &str) -> proto::JobSpec {
    proto::JobSpec { payloads: vec![payload.as_bytes().to_vec()], attempt_timeout_ms: 60_000, ..Default::default() }
}

/// Start an SDK worker running `handler` until the test ends.
fn worker<F, Fut>(c: &Cluster, name: &str, capacity: u32, handler: F)
where
    F: Fn(TaskContext) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<Vec<u8>, TaskError>> + Send + 'static,
{
    let w = Worker::builder().endpoints(c.endpoints()).name(name).capacity(capacity).handler(handler).build().unwrap();
    tokio::spawn(w.run(std::future::pending()));
}

/// The step name and role of a task (panics outside a workflow).
fn step_of(ctx: &TaskContext) -> (String, proto::StepRole) {
    let w = ctx.workflow().expect("a workflow task has a workflow context");
    (w.step.clone(), proto::StepRole::try_from(w.role).unwrap())
}

fn num(b: &[u8]) -> i64 {
    std::str::from_utf8(b).unwrap().parse().unwrap()
}

fn bytes(n: i64) -> Vec<u8> {
    n.to_string().into_bytes()
}

/// Watch the workflow to its end; every event is newer than the one before.
async fn wait_done(cl: &Client, id: u64, timeout: Duration) -> proto::Workflow {
    let mut events = Box::pin(cl.watch_workflow(id));
    let mut last: Option<proto::WorkflowEvent> = None;
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let ev = match tokio::time::timeout_at(deadline, events.next()).await {
            Ok(Some(ev)) => ev.unwrap(),
            Ok(None) => break,
            Err(_) => panic!("workflow {id} not finished within {timeout:?}: {:#?}", last.map(|e| e.workflow)),
        };
        if let Some(prev) = &last {
            assert!(ev.applied_index > prev.applied_index, "events go forward");
        }
        last = Some(ev);
    }
    let wf = last.expect("at least one event").workflow.unwrap();
    assert_ne!(wf.finished_ms, 0, "the last event is the finished workflow");
    wf
}

fn step<'a>(wf: &'a proto::Workflow, name: &str) -> &'a proto::Step {
    wf.steps.iter().find(|s| s.name == name).unwrap_or_else(|| panic!("no step {name}"))
}

fn status(wf: &proto::Workflow, name: &str) -> proto::StepStatus {
    proto::StepStatus::try_from(step(wf, name).status).unwrap()
}

/// Poll the workflow until `cond` holds (10 s at most).
async fn wait_for(cl: &Client, id: u64, what: &str, cond: impl Fn(&proto::Workflow) -> bool) -> proto::Workflow {
    let deadline = Instant::now() + SECS(10);
    loop {
        let wf = cl.get_workflow(id).await.unwrap();
        if cond(&wf) {
            return wf;
        }
        assert!(Instant::now() < deadline, "{what}: not within 10 s: {wf:#?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Names of the steps whose tasks ran.
#[derive(Clone, Default)]
struct Ran(Arc<Mutex<Vec<String>>>);

impl Ran {
    fn add(&self, step: &str) {
        self.0.lock().unwrap().push(step.to_string());
    }

    fn set(&self) -> BTreeSet<String> {
        self.0.lock().unwrap().iter().cloned().collect()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sequential_steps_run_in_order_and_read_their_predecessors_results() {
    let _g = SERIAL.lock().await;
    let c = Cluster::start(3, Opts::default());
    c.wait_leader(SECS(15)).await;
    let checked = Arc::new(AtomicU32::new(0));
    let seen = checked.clone();
    worker(&c, "seq", 4, move |ctx: TaskContext| {
        let checked = seen.clone();
        async move {
            let (step, role) = step_of(&ctx);
            assert_eq!(role, proto::StepRole::Map);
            let e = |e: Error| TaskError::fatal(e);
            Ok(match step.as_str() {
                "a" => ctx.payload.clone(),
                "b" => {
                    let w = ctx.workflow().unwrap();
                    assert_eq!(w.inputs.iter().map(|i| i.step.as_str()).collect::<Vec<_>>(), ["a"]);
                    // Only predecessors are inputs.
                    let not_input = ctx.input("c").await.unwrap_err();
                    assert!(matches!(not_input, Error::InvalidArgument(_)), "{not_input}");
                    checked.fetch_add(1, Ordering::SeqCst);
                    bytes(num(&ctx.input("a").await.map_err(e)?) * 10)
                }
                "c" => bytes(num(&ctx.input("b").await.map_err(e)?) + 1),
                other => panic!("unexpected step {other}"),
            })
        }
    });
    let cl = client(&c);
    let spec = WorkflowBuilder::new(NS, "chain")
        .step(Step::job("a", one("2")))
        .step(Step::job("b", one("")).depends_on(["a"]))
        .step(Step::job("c", one("")).depends_on(["b"]))
        .result_step("c")
        .build();
    let r = cl.submit_workflow(spec).await.unwrap();
    assert_eq!((r.steps, r.duplicate), (3, false));
    let wf = wait_done(&cl, r.workflow_id, SECS(20)).await;
    assert_eq!(wf.status, proto::WorkflowStatus::Succeeded as i32, "{wf:#?}");
    for s in ["a", "b", "c"] {
        assert_eq!(status(&wf, s), proto::StepStatus::Succeeded, "{s}");
        let st = step(&wf, s);
        assert_eq!(st.counts.unwrap().succeeded, 1, "{s}: counts of its job");
        assert_eq!((st.shards, st.phase), (1, proto::StepRole::Map as i32), "{s}");
    }
    assert!(step(&wf, "b").started_ms >= step(&wf, "a").finished_ms);
    assert!(step(&wf, "c").started_ms >= step(&wf, "b").finished_ms);
    assert_eq!(step(&wf, "c").depends_on, ["b"]);
    assert_eq!(checked.load(Ordering::SeqCst), 1);

    let res = cl.workflow_result(r.workflow_id).await.unwrap();
    assert_eq!((res.step.as_str(), res.result.as_slice()), ("c", b"21".as_slice()));
    let c_job = step(&wf, "c").map_job_id;
    assert_eq!(res.job_id, c_job);
    // Jobs show the workflow and step they belong to.
    let job = cl.get(c_job).await.unwrap();
    assert_eq!(job.name, "chain/c");
    assert_eq!(job.namespace, NS);
    let origin = job.origin.unwrap();
    assert_eq!((origin.workflow_id, origin.step.as_str()), (r.workflow_id, "c"));
    assert_eq!(origin.role, proto::StepRole::Map as i32);
    // The token of the committed result.
    let shard = cl.results_page(c_job, 0, 1).await.unwrap().results.remove(0);
    assert_eq!(res.token, shard.token);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parallel_steps_fan_out_and_a_fan_in_waits_for_all_of_them() {
    let _g = SERIAL.lock().await;
    let c = Cluster::start(3, Opts::default());
    c.wait_leader(SECS(15)).await;
    worker(&c, "par", 16, |ctx: TaskContext| async move {
        let (step, _) = step_of(&ctx);
        Ok(match step.as_str() {
            "split" => b"ok".to_vec(),
            "x" | "y" | "z" => {
                let offset = match step.as_str() {
                    "x" => 0,
                    "y" => 3,
                    _ => 6,
                };
                bytes((num(&ctx.payload) + 1 + offset) * 2)
            }
            "join" => {
                let w = ctx.workflow().unwrap().clone();
                let names: Vec<&str> = w.inputs.iter().map(|i| i.step.as_str()).collect();
                assert_eq!(names, ["x", "y", "z"]);
                let mut sum = 0;
                for i in &w.inputs {
                    let mut n = 0;
                    let mut s = Box::pin(ctx.input_results(&i.step));
                    while let Some(r) = s.next().await {
                        sum += num(&r.map_err(TaskError::fatal)?.result);
                        n += 1;
                    }
                    assert_eq!(n, 3, "every shard of {}", i.step);
                }
                bytes(sum)
            }
            other => panic!("unexpected step {other}"),
        })
    });
    let cl = client(&c);
    let spec = WorkflowBuilder::new(NS, "fan")
        .step(Step::job("split", one("")))
        .step(Step::job("x", numbered(3)).depends_on(["split"]))
        .step(Step::job("y", numbered(3)).depends_on(["split"]))
        .step(Step::job("z", numbered(3)).depends_on(["split"]))
        .step(Step::job("join", one("")).depends_on(["x", "y", "z"]))
        .result_step("join")
        .build();
    let id = cl.submit_workflow(spec).await.unwrap().workflow_id;
    let wf = wait_done(&cl, id, SECS(20)).await;
    assert_eq!(wf.status, proto::WorkflowStatus::Succeeded as i32, "{wf:#?}");
    // The fan-out starts in the entry that finishes `split`; the fan-in
    // starts only when the last branch finished.
    let branches = ["x", "y", "z"].map(|s| step(&wf, s).clone());
    assert!(
        branches
            .iter()
            .all(|b| b.started_ms == branches[0].started_ms && b.started_ms >= step(&wf, "split").finished_ms)
    );
    let last = branches.iter().map(|b| b.finished_ms).max().unwrap();
    assert!(step(&wf, "join").started_ms >= last);
    assert_eq!(cl.workflow_result(id).await.unwrap().result, bytes((1..=9).sum::<i64>() * 2));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_choice_skips_the_branch_not_taken_down_the_graph_and_a_none_failed_join_runs() {
    let _g = SERIAL.lock().await;
    let c = Cluster::start(3, Opts::default());
    c.wait_leader(SECS(15)).await;
    let ran = Ran::default();
    let r2 = ran.clone();
    worker(&c, "choice", 4, move |ctx: TaskContext| {
        let ran = r2.clone();
        async move {
            let (step, _) = step_of(&ctx);
            ran.add(&step);
            Ok(match step.as_str() {
                "decide" => choose(&["fast"]),
                "join" => {
                    let w = ctx.workflow().unwrap();
                    assert_eq!(w.inputs.iter().map(|i| i.step.as_str()).collect::<Vec<_>>(), ["fast"]);
                    ctx.input("fast").await.map_err(TaskError::fatal)?
                }
                s => s.as_bytes().to_vec(),
            })
        }
    });
    let cl = client(&c);
    let spec = WorkflowBuilder::new(NS, "choose")
        .step(Step::job("decide", one("")).choice())
        .step(Step::job("fast", one("")).depends_on(["decide"]))
        .step(Step::job("slow", one("")).depends_on(["decide"]))
        .step(Step::job("slow2", one("")).depends_on(["slow"]))
        .step(Step::job("join", one("")).depends_on(["fast", "slow2"]).trigger(proto::TriggerRule::NoneFailed))
        .result_step("join")
        .build();
    let id = cl.submit_workflow(spec).await.unwrap().workflow_id;
    let wf = wait_done(&cl, id, SECS(20)).await;
    assert_eq!(wf.status, proto::WorkflowStatus::Succeeded as i32, "{wf:#?}");
    assert_eq!(step(&wf, "decide").chosen, ["fast"]);
    assert_eq!(status(&wf, "fast"), proto::StepStatus::Succeeded);
    assert_eq!(status(&wf, "slow"), proto::StepStatus::Skipped);
    assert_eq!(status(&wf, "slow2"), proto::StepStatus::Skipped, "skipping propagates");
    assert_eq!(status(&wf, "join"), proto::StepStatus::Succeeded);
    assert!(step(&wf, "slow").reason.contains("not chosen"), "{}", step(&wf, "slow").reason);
    assert_eq!(step(&wf, "slow2").map_job_id, 0, "a skipped step starts no job");
    assert_eq!(ran.set(), ["decide", "fast", "join"].map(String::from).into());
    assert_eq!(cl.workflow_result(id).await.unwrap().result, b"fast");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reduce_reads_every_map_result_as_a_paged_stream_and_is_the_workflow_result() {
    let _g = SERIAL.lock().await;
    let c = Cluster::start(3, Opts::default());
    c.wait_leader(SECS(15)).await;
    // More than one reduce input page.
    const SHARDS: u32 = baton_client::worker::REDUCE_INPUT_PAGE_SHARDS + 200;
    let reduces = Arc::new(AtomicU32::new(0));
    let r2 = reduces.clone();
    worker(&c, "mr", 64, move |ctx: TaskContext| {
        let reduces = r2.clone();
        async move {
            let (_, role) = step_of(&ctx);
            match role {
                proto::StepRole::Map => Ok(bytes(num(&ctx.payload) * 3)),
                proto::StepRole::Reduce => {
                    reduces.fetch_add(1, Ordering::SeqCst);
                    let w = ctx.workflow().unwrap();
                    assert_eq!(w.reduce_of_shards, SHARDS);
                    assert_eq!(ctx.payload, b"sum");
                    let (mut sum, mut next) = (0, 0);
                    let mut input = Box::pin(ctx.reduce_input());
                    while let Some(r) = input.next().await {
                        let r = r.map_err(TaskError::retryable)?;
                        assert_eq!((r.shard, r.status), (next, proto::TaskStatus::Succeeded as i32));
                        next += 1;
                        sum += num(&r.result);
                    }
                    assert_eq!(next, SHARDS);
                    Ok(bytes(sum))
                }
                other => panic!("unexpected role {other:?}"),
            }
        }
    });
    let cl = client(&c);
    let spec = WorkflowBuilder::new(NS, "mapreduce")
        .step(Step::job("count", numbered(SHARDS)).reduce(b"sum".to_vec()))
        .result_step("count")
        .build();
    let id = cl.submit_workflow(spec).await.unwrap().workflow_id;
    // Not before the reduce has succeeded.
    let early = cl.workflow_result(id).await.unwrap_err();
    assert!(matches!(early, Error::NotFound(_)), "{early}");
    let wf = wait_done(&cl, id, SECS(60)).await;
    assert_eq!(wf.status, proto::WorkflowStatus::Succeeded as i32, "{wf:#?}");
    let s = step(&wf, "count");
    assert_eq!(s.phase, proto::StepRole::Reduce as i32);
    assert!(s.reduce && s.map_job_id != 0 && s.reduce_job_id != 0);
    assert_eq!((s.shards, s.counts.unwrap().succeeded), (1, 1), "counts of the reduce job");
    let res = cl.workflow_result(id).await.unwrap();
    assert_eq!(res.result, bytes((0..SHARDS as i64).sum::<i64>() * 3));
    assert_eq!(res.job_id, s.reduce_job_id);
    assert_eq!(reduces.load(Ordering::SeqCst), 1);
    let reduce_job = cl.get(s.reduce_job_id).await.unwrap();
    assert_eq!(reduce_job.name, "mapreduce/count/reduce");
    assert_eq!(reduce_job.origin.unwrap().role, proto::StepRole::Reduce as i32);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dynamic_map_runs_the_children_its_generator_emits_then_the_reduce() {
    let _g = SERIAL.lock().await;
    let c = Cluster::start(3, Opts::default());
    c.wait_leader(SECS(15)).await;
    worker(&c, "dyn", 16, |ctx: TaskContext| async move {
        let (_, role) = step_of(&ctx);
        match role {
            // The payload says how many children to emit.
            proto::StepRole::Generate => {
                let n = num(&ctx.payload);
                Ok(emit_children(&(1..=n).map(bytes).collect::<Vec<_>>()))
            }
            proto::StepRole::Map => Ok(ctx.payload.clone()),
            proto::StepRole::Reduce => {
                let mut sum = 0;
                let mut input = Box::pin(ctx.reduce_input());
                while let Some(r) = input.next().await {
                    sum += num(&r.map_err(TaskError::retryable)?.result);
                }
                Ok(bytes(sum))
            }
            other => panic!("unexpected role {other:?}"),
        }
    });
    let cl = client(&c);
    let flow = |name: &str, children: &str| {
        WorkflowBuilder::new(NS, name)
            .step(Step::job("gen", one(children)).dynamic().reduce(Vec::new()))
            .result_step("gen")
            .build()
    };
    let id = cl.submit_workflow(flow("dynamic", "25")).await.unwrap().workflow_id;
    let wf = wait_done(&cl, id, SECS(20)).await;
    assert_eq!(wf.status, proto::WorkflowStatus::Succeeded as i32, "{wf:#?}");
    let s = step(&wf, "gen");
    assert!(s.dynamic && s.generate_job_id != 0 && s.map_job_id != 0 && s.reduce_job_id != 0);
    assert_eq!(cl.get(s.map_job_id).await.unwrap().shards, 25);
    assert_eq!(cl.get(s.generate_job_id).await.unwrap().origin.unwrap().role, proto::StepRole::Generate as i32);
    assert_eq!(cl.workflow_result(id).await.unwrap().result, bytes((1..=25).sum()));

    // No children: no map job, and the reduce reads an empty input.
    let id = cl.submit_workflow(flow("empty", "0")).await.unwrap().workflow_id;
    let wf = wait_done(&cl, id, SECS(20)).await;
    assert_eq!(wf.status, proto::WorkflowStatus::Succeeded as i32, "{wf:#?}");
    assert_eq!(step(&wf, "gen").map_job_id, 0);
    assert_eq!(cl.workflow_result(id).await.unwrap().result, b"0");
}

/// Every way a job step fails, in one cluster: a dead shard (with clean-up
/// and compensation after it), a bad choice result (malformed, or naming no
/// successor), a generator result that does not decode, a step job
/// cancelled directly, and a dead map shard before a reduce.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_step_fails_the_workflow_skips_what_depends_on_it_and_runs_cleanup_and_compensation() {
    let _g = SERIAL.lock().await;
    let c = Cluster::start(3, Opts::default());
    c.wait_leader(SECS(15)).await;
    let ran = Ran::default();
    let r2 = ran.clone();
    let stopped = Arc::new(AtomicU32::new(0));
    let s2 = stopped.clone();
    worker(&c, "fail", 8, move |ctx: TaskContext| {
        let (ran, stopped) = (r2.clone(), s2.clone());
        async move {
            let (step, role) = step_of(&ctx);
            match role {
                proto::StepRole::Map => ran.add(&step),
                other => ran.add(&format!("{step}/{other:?}")),
            }
            match (step.as_str(), role) {
                ("b", _) => Err(TaskError::fatal("b cannot work")),
                // Not a JSON array of names.
                ("bad-json", _) => Ok(b"fast".to_vec()),
                // A name that is not a successor.
                ("bad-name", _) => Ok(choose(&["ghost"])),
                // Not encoded by emit_children.
                ("gen", proto::StepRole::Generate) => Ok(b"a,b,c".to_vec()),
                ("hold", _) => {
                    ctx.cancellation().cancelled().await;
                    stopped.fetch_add(1, Ordering::SeqCst);
                    Err(TaskError::retryable("cancelled"))
                }
                ("mr", proto::StepRole::Map) if ctx.payload == b"1" => Err(TaskError::fatal("shard 1 cannot work")),
                _ => Ok(step.into_bytes()),
            }
        }
    });
    let cl = client(&c);
    let spec = WorkflowBuilder::new(NS, "failing")
        .step(Step::job("a", one("")))
        .step(Step::job("b", one("")).depends_on(["a"]))
        .step(Step::job("c", one("")).depends_on(["b"]))
        .step(Step::job("d", one("")).depends_on(["c"]))
        .step(Step::job("cleanup", one("")).depends_on(["b", "d"]).trigger(proto::TriggerRule::AllDone))
        .step(Step::job("compensate", one("")).depends_on(["b"]).trigger(proto::TriggerRule::AnyFailed))
        .step(Step::job("never", one("")).depends_on(["a"]).trigger(proto::TriggerRule::AnyFailed))
        .build();
    let id = cl.submit_workflow(spec).await.unwrap().workflow_id;
    // Independent roots, each failing its own way, each with a successor.
    let others = WorkflowBuilder::new(NS, "failing-otherwise")
        .step(Step::job("bad-json", one("")).choice())
        .step(Step::job("after-json", one("")).depends_on(["bad-json"]))
        .step(Step::job("bad-name", one("")).choice())
        .step(Step::job("after-name", one("")).depends_on(["bad-name"]))
        .step(Step::job("gen", one("")).dynamic())
        .step(Step::job("after-gen", one("")).depends_on(["gen"]))
        .step(Step::job("hold", one("")))
        .step(Step::job("after-hold", one("")).depends_on(["hold"]))
        .step(Step::job("mr", numbered(3)).reduce(b"sum".to_vec()))
        .step(Step::job("after-mr", one("")).depends_on(["mr"]))
        .step(Step::job("fine", one("")))
        .build();
    let id2 = cl.submit_workflow(others).await.unwrap().workflow_id;

    let wf = wait_done(&cl, id, SECS(20)).await;
    assert_eq!(wf.status, proto::WorkflowStatus::Failed as i32, "{wf:#?}");
    assert_eq!(status(&wf, "a"), proto::StepStatus::Succeeded);
    assert_eq!(status(&wf, "b"), proto::StepStatus::Failed);
    assert!(step(&wf, "b").reason.contains("failed"), "{}", step(&wf, "b").reason);
    assert_eq!(step(&wf, "b").counts.unwrap().dead, 1);
    for s in ["c", "d", "never"] {
        assert_eq!(status(&wf, s), proto::StepStatus::Skipped, "{s}");
    }
    assert_eq!(status(&wf, "cleanup"), proto::StepStatus::Succeeded);
    assert_eq!(status(&wf, "compensate"), proto::StepStatus::Succeeded);
    let e = cl.workflow_result(id).await.unwrap_err();
    assert!(matches!(e, Error::FailedPrecondition(_)), "no result step: {e}");

    // The step job cancelled directly, through the job cancel path.
    let running =
        wait_for(&cl, id2, "hold running", |wf| step(wf, "hold").counts.is_some_and(|c| c.running == 1)).await;
    let hold_job = step(&running, "hold").map_job_id;
    assert_eq!(cl.cancel(hold_job, "operator stop").await.unwrap(), 1);
    let wf = wait_done(&cl, id2, SECS(20)).await;
    assert_eq!(wf.status, proto::WorkflowStatus::Failed as i32, "{wf:#?}");
    let reason = |s: &str| step(&wf, s).reason.clone();
    assert_eq!(status(&wf, "bad-json"), proto::StepStatus::Failed);
    assert!(reason("bad-json").contains("a choice result must be a JSON array"), "{}", reason("bad-json"));
    assert_eq!(status(&wf, "bad-name"), proto::StepStatus::Failed);
    assert!(reason("bad-name").contains("\"ghost\", which is not a successor"), "{}", reason("bad-name"));
    assert!(step(&wf, "bad-name").chosen.is_empty());
    assert_eq!(status(&wf, "gen"), proto::StepStatus::Failed);
    assert!(reason("gen").contains("generator job") && reason("gen").contains("BTNC"), "{}", reason("gen"));
    assert!(step(&wf, "gen").generate_job_id != 0 && step(&wf, "gen").map_job_id == 0, "no map job");
    assert_eq!(status(&wf, "hold"), proto::StepStatus::Failed);
    assert_eq!(reason("hold"), format!("map job {hold_job} was cancelled: operator stop"));
    assert_eq!(status(&wf, "mr"), proto::StepStatus::Failed);
    assert!(reason("mr").contains("1 of 3 shards dead"), "{}", reason("mr"));
    let mr = step(&wf, "mr");
    assert_eq!((mr.counts.unwrap().dead, mr.counts.unwrap().succeeded), (1, 2), "counts of the map job");
    assert_eq!((mr.phase, mr.reduce_job_id), (proto::StepRole::Map as i32, 0), "no reduce job");
    for s in ["after-json", "after-name", "after-gen", "after-hold", "after-mr"] {
        assert_eq!(status(&wf, s), proto::StepStatus::Skipped, "{s}");
        assert!(reason(s).starts_with("all_succeeded not met"), "{s}: {}", reason(s));
    }
    assert_eq!(status(&wf, "fine"), proto::StepStatus::Succeeded, "other steps keep running");
    // The cancelled handler was told to stop; the step's job cannot be
    // retried on its own.
    let deadline = Instant::now() + SECS(10);
    while stopped.load(Ordering::SeqCst) < 1 {
        assert!(Instant::now() < deadline, "the running shard was not cancelled");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let e = cl.retry_job(hold_job).await.unwrap_err();
    assert!(e.code() == Some(codes::JOB_IN_WORKFLOW), "{e}");
    // No reduce job exists for the failed map.
    let jobs = cl.list(proto::ListJobsRequest { namespace: NS.into(), page_size: 1000, ..Default::default() }).await;
    let reduces = jobs
        .unwrap()
        .jobs
        .iter()
        .filter(|j| j.origin.as_ref().is_some_and(|o| o.role == proto::StepRole::Reduce as i32))
        .count();
    assert_eq!(reduces, 0);

    let expected = ["a", "b", "cleanup", "compensate", "bad-json", "bad-name", "gen/Generate", "hold", "mr", "fine"];
    assert_eq!(ran.set(), expected.map(String::from).into());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gate_waits_for_approval_or_rejection() {
    let _g = SERIAL.lock().await;
    let c = Cluster::start(3, Opts::default());
    c.wait_leader(SECS(15)).await;
    worker(&c, "gates", 4, |ctx: TaskContext| async move { Ok(step_of(&ctx).0.into_bytes()) });
    let cl = client(&c);
    let flow = |name: &str| {
        WorkflowBuilder::new(NS, name)
            .step(Step::job("build", one("")))
            .step(Step::gate("release?").depends_on(["build"]))
            .step(Step::job("release", one("")).depends_on(["release?"]))
            .build()
    };
    let awaiting = |wf: &proto::Workflow| status(wf, "release?") == proto::StepStatus::AwaitingApproval;

    let ok = cl.submit_workflow(flow("approved")).await.unwrap().workflow_id;
    let wf = wait_for(&cl, ok, "gate awaiting approval", awaiting).await;
    assert_eq!(status(&wf, "release"), proto::StepStatus::Waiting);
    assert_eq!(step(&wf, "release?").kind, "gate");
    // Only a gate awaiting approval can be decided.
    let e = cl.approve_step(ok, "release", "alice").await.unwrap_err();
    assert!(matches!(e, Error::FailedPrecondition(_)), "{e}");
    let e = cl.approve_step(ok, "nope", "alice").await.unwrap_err();
    assert!(matches!(e, Error::NotFound(_)), "{e}");
    cl.approve_step(ok, "release?", "alice").await.unwrap();
    let wf = wait_done(&cl, ok, SECS(20)).await;
    assert_eq!(wf.status, proto::WorkflowStatus::Succeeded as i32, "{wf:#?}");
    assert_eq!(step(&wf, "release?").reason, "approved by alice");
    assert_eq!(status(&wf, "release"), proto::StepStatus::Succeeded);
    let e = cl.reject_step(ok, "release?", "bob").await.unwrap_err();
    assert!(matches!(e, Error::FailedPrecondition(_)), "a finished workflow: {e}");

    let no = cl.submit_workflow(flow("rejected")).await.unwrap().workflow_id;
    wait_for(&cl, no, "gate awaiting approval", awaiting).await;
    cl.reject_step(no, "release?", "bob").await.unwrap();
    let wf = wait_done(&cl, no, SECS(20)).await;
    assert_eq!(wf.status, proto::WorkflowStatus::Failed as i32, "{wf:#?}");
    assert_eq!(status(&wf, "release?"), proto::StepStatus::Failed);
    assert_eq!(step(&wf, "release?").reason, "rejected by bob");
    assert_eq!(status(&wf, "release"), proto::StepStatus::Skipped);

    // An event gate: opened by the first matching event on its topic.
    let on_event = WorkflowBuilder::new(NS, "on-event")
        .step(Step::gate("uploaded").gate_event("uploads", [("bucket", "raw")]))
        .step(Step::job("process", one("")).depends_on(["uploaded"]))
        .build();
    let ev = cl.submit_workflow(on_event).await.unwrap().workflow_id;
    let is_waiting = |wf: &proto::Workflow| status(wf, "uploaded") == proto::StepStatus::AwaitingApproval;
    let waiting = wait_for(&cl, ev, "event gate waiting", is_waiting).await;
    assert_eq!(step(&waiting, "uploaded").gate_event_topic, "uploads");
    let publish = |id: &str, bucket: &str| proto::PublishEventRequest {
        namespace: NS.into(),
        topic: "uploads".into(),
        event_id: id.into(),
        attributes: [("bucket".to_string(), bucket.to_string())].into(),
        ..Default::default()
    };
    let r = cl.publish_event(publish("u1", "clean")).await.unwrap();
    assert_eq!(r.gates_opened, 0, "the filter does not match");
    let r = cl.publish_event(publish("u2", "raw")).await.unwrap();
    assert_eq!(r.gates_opened, 1);
    let wf = wait_done(&cl, ev, SECS(20)).await;
    assert_eq!(wf.status, proto::WorkflowStatus::Succeeded as i32, "{wf:#?}");
    assert_eq!(step(&wf, "uploaded").reason, "approved by event \"u2\"");
    let r = cl.publish_event(publish("u2", "raw")).await.unwrap();
    assert!(r.duplicate && r.gates_opened == 0, "the same event again opens nothing: {r:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gate_that_times_out_takes_its_timeout_outcome() {
    let _g = SERIAL.lock().await;
    let c = Cluster::start(3, Opts::default());
    c.wait_leader(SECS(15)).await;
    worker(&c, "timeouts", 4, |ctx: TaskContext| async move { Ok(step_of(&ctx).0.into_bytes()) });
    let cl = client(&c);
    let flow = |name: &str, approve: bool| {
        WorkflowBuilder::new(NS, name)
            .step(Step::gate("wait").gate_timeout(Duration::from_millis(300), approve))
            .step(Step::job("then", one("")).depends_on(["wait"]))
            .build()
    };
    let yes = cl.submit_workflow(flow("timeout-approves", true)).await.unwrap().workflow_id;
    let no = cl.submit_workflow(flow("timeout-rejects", false)).await.unwrap().workflow_id;
    let wf = cl.get_workflow(yes).await.unwrap();
    assert_ne!(step(&wf, "wait").gate_deadline_ms, 0);

    let wf = wait_done(&cl, yes, SECS(10)).await;
    assert_eq!(wf.status, proto::WorkflowStatus::Succeeded as i32, "{wf:#?}");
    assert_eq!(step(&wf, "wait").reason, "approved on timeout");
    assert_eq!(status(&wf, "then"), proto::StepStatus::Succeeded);
    let wf = wait_done(&cl, no, SECS(10)).await;
    assert_eq!(wf.status, proto::WorkflowStatus::Failed as i32, "{wf:#?}");
    assert_eq!(status(&wf, "wait"), proto::StepStatus::Failed);
    assert_eq!(step(&wf, "wait").reason, "rejected on timeout: no decision in time");
    assert_eq!(status(&wf, "then"), proto::StepStatus::Skipped);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancelling_a_workflow_stops_running_shards_and_cancels_waiting_steps() {
    let _g = SERIAL.lock().await;
    let c = Cluster::start(3, Opts::default());
    c.wait_leader(SECS(15)).await;
    let stopped = Arc::new(AtomicU32::new(0));
    let s2 = stopped.clone();
    worker(&c, "cancel", 8, move |ctx: TaskContext| {
        let stopped = s2.clone();
        async move {
            // Runs until told to stop.
            ctx.cancellation().cancelled().await;
            stopped.fetch_add(1, Ordering::SeqCst);
            Err(TaskError::retryable("cancelled"))
        }
    });
    let cl = client(&c);
    let spec = WorkflowBuilder::new(NS, "cancelled")
        .step(Step::job("long", numbered(3)))
        .step(Step::gate("ok?"))
        .step(Step::job("after", one("")).depends_on(["long", "ok?"]))
        .build();
    let id = cl.submit_workflow(spec).await.unwrap().workflow_id;
    let wf = wait_for(&cl, id, "every shard running", |wf| {
        step(wf, "long").counts.is_some_and(|c| c.running == 3)
            && status(wf, "ok?") == proto::StepStatus::AwaitingApproval
    })
    .await;
    let long_job = step(&wf, "long").map_job_id;
    let r = cl.cancel_workflow(id, "changed my mind").await.unwrap();
    assert_eq!((r.steps_cancelled, r.tasks_cancelled), (3, 3));
    let wf = wait_done(&cl, id, SECS(10)).await;
    assert_eq!(wf.status, proto::WorkflowStatus::Cancelled as i32, "{wf:#?}");
    assert_eq!(wf.cancel_reason, "changed my mind");
    for s in ["long", "ok?", "after"] {
        assert_eq!(status(&wf, s), proto::StepStatus::Cancelled, "{s}");
    }
    let job = cl.get(long_job).await.unwrap();
    assert_eq!(job.status, proto::JobStatus::Cancelled as i32);
    assert_eq!(job.counts.unwrap().cancelled, 3);
    // The running handlers are told to stop.
    let deadline = Instant::now() + SECS(10);
    while stopped.load(Ordering::SeqCst) < 3 {
        assert!(Instant::now() < deadline, "running shards were not cancelled");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let e = cl.cancel_workflow(id, "again").await.unwrap_err();
    assert!(matches!(e, Error::FailedPrecondition(_)), "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_spec_is_refused_naming_the_field_and_changes_nothing() {
    let _g = SERIAL.lock().await;
    let c = Cluster::start(3, Opts::default());
    let leader = c.wait_leader(SECS(15)).await;
    let cl = client(&c);
    let cycle = WorkflowBuilder::new(NS, "cycle")
        .step(Step::job("a", one("")).depends_on(["b"]))
        .step(Step::job("b", one("")).depends_on(["a"]))
        .build();
    let unknown = WorkflowBuilder::new(NS, "unknown").step(Step::job("a", one("")).depends_on(["ghost"])).build();
    let mut many = WorkflowBuilder::new(NS, "many");
    for i in 0..=1000 {
        many = many.step(Step::job(format!("s{i}"), one("")));
    }
    let mut deep = WorkflowBuilder::new(NS, "deep").step(Step::job("s0", one("")));
    for i in 1..=500 {
        deep = deep.step(Step::job(format!("s{i}"), one("")).depends_on([format!("s{}", i - 1)]));
    }
    // Every one of 100 sinks depends on each of 101 sources: 10100 edges.
    let sources: Vec<String> = (0..101).map(|i| format!("src{i}")).collect();
    let mut wide = WorkflowBuilder::new(NS, "wide");
    for s in &sources {
        wide = wide.step(Step::job(s.clone(), one("")));
    }
    for i in 0..100 {
        wide = wide.step(Step::job(format!("sink{i}"), one("")).depends_on(sources.clone()));
    }
    let cases = [
        (cycle, "cycle: a -> b -> a"),
        (unknown, "steps[0].depends_on"),
        (many.build(), "invalid steps: has 1001 steps; at most 1000"),
        (deep.build(), "invalid steps: the longest chain has 501 steps; at most 500"),
        (wide.build(), "invalid steps[*].depends_on: has 10100 dependency edges in all; at most 10000 edges"),
    ];
    for (spec, says) in cases {
        let e = cl.submit_workflow(spec.clone()).await.unwrap_err();
        assert!(matches!(e, Error::InvalidArgument(_)) && e.code() == Some(codes::INVALID), "{e}");
        assert!(e.to_string().contains(says), "{e} should say {says:?}");
        // Through a follower too, with the code in the metadata.
        let follower = c.live().into_iter().find(|n| *n != leader).unwrap();
        let mut raw = WorkflowServiceClient::new(c.channel(follower).await);
        let s = raw.submit_workflow(proto::SubmitWorkflowRequest { spec: Some(spec) }).await.unwrap_err();
        assert_eq!(s.code(), tonic::Code::InvalidArgument);
        assert_eq!(s.metadata().get(ERROR_CODE_HEADER).unwrap(), codes::INVALID);
        assert!(s.message().contains(says), "{}", s.message());
    }
    let listed = cl.list_workflows(proto::ListWorkflowsRequest::default()).await.unwrap();
    assert!(listed.workflows.is_empty(), "{listed:?}");
    assert!(cl.list(proto::ListJobsRequest::default()).await.unwrap().jobs.is_empty());
    let e = cl.get_workflow(1).await.unwrap_err();
    assert!(matches!(e, Error::NotFound(_)) && e.code() == Some(codes::NOT_FOUND), "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resubmitting_with_the_same_key_returns_the_same_workflow() {
    let _g = SERIAL.lock().await;
    let c = Cluster::start(3, Opts::default());
    c.wait_leader(SECS(15)).await;
    let cl = client(&c);
    let flow = |payload: &str| {
        WorkflowBuilder::new(NS, "once").idempotency_key("deploy-42").step(Step::job("a", one(payload))).build()
    };
    let first = cl.submit_workflow(flow("x")).await.unwrap();
    let again = cl.submit_workflow(flow("x")).await.unwrap();
    assert_eq!(again.workflow_id, first.workflow_id);
    assert!(!first.duplicate && again.duplicate);
    // The same key for another spec is a conflict, not a new workflow.
    let e = cl.submit_workflow(flow("y")).await.unwrap_err();
    assert!(matches!(e, Error::FailedPrecondition(_)), "{e}");
    // Without a key the SDK sets one: two submissions, two workflows.
    let other = WorkflowBuilder::new("other", "keyless").step(Step::job("a", one(""))).build();
    let k1 = cl.submit_workflow(other.clone()).await.unwrap().workflow_id;
    let k2 = cl.submit_workflow(other).await.unwrap().workflow_id;
    assert_ne!(k1, k2);
    let wf = cl.get_workflow(k1).await.unwrap();
    assert!(!wf.idempotency_key.is_empty());

    let listed = cl.list_workflows(proto::ListWorkflowsRequest { namespace: NS.into(), ..Default::default() }).await;
    let ids: Vec<u64> = listed.unwrap().workflows.iter().map(|w| w.id).collect();
    assert_eq!(ids, [first.workflow_id]);
    let running = proto::ListWorkflowsRequest {
        status: proto::WorkflowStatus::Running as i32,
        page_size: 2,
        ..Default::default()
    };
    let page = cl.list_workflows(running).await.unwrap();
    assert_eq!(page.workflows.len(), 2);
    assert_ne!(page.next_page_token, 0);
}

/// The "done when" of the issue: a leader kill in the middle of a map-reduce
/// still yields exactly one committed reduce result, equal to the reference.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_killed_mid_map_reduce_still_commits_one_reduce_result_equal_to_the_reference() {
    let _g = SERIAL.lock().await;
    let mut c = Cluster::start(3, Opts::default());
    let leader = c.wait_leader(SECS(15)).await;
    const SHARDS: u32 = 200;
    let value = |shard: i64| shard * shard + 7;
    let reference: i64 = (0..SHARDS as i64).map(value).sum();
    let reduces = Arc::new(AtomicU32::new(0));
    for w in 0..2 {
        let reduces = reduces.clone();
        worker(&c, &format!("mr-{w}"), 8, move |ctx: TaskContext| {
            let reduces = reduces.clone();
            async move {
                match step_of(&ctx).1 {
                    proto::StepRole::Map => {
                        tokio::time::sleep(Duration::from_millis(60)).await;
                        Ok(bytes(value(num(&ctx.payload))))
                    }
                    proto::StepRole::Reduce => {
                        reduces.fetch_add(1, Ordering::SeqCst);
                        let mut sum = 0;
                        let mut input = Box::pin(ctx.reduce_input());
                        while let Some(r) = input.next().await {
                            sum += num(&r.map_err(TaskError::retryable)?.result);
                        }
                        Ok(bytes(sum))
                    }
                    other => panic!("unexpected role {other:?}"),
                }
            }
        });
    }
    let cl = client(&c);
    let spec = WorkflowBuilder::new(NS, "mr-failover")
        .step(Step::job("squares", numbered(SHARDS)).reduce(b"sum".to_vec()))
        .result_step("squares")
        .build();
    let id = cl.submit_workflow(spec).await.unwrap().workflow_id;
    let mid = wait_for(&cl, id, "half the map done", |wf| {
        step(wf, "squares").counts.is_some_and(|c| c.succeeded >= SHARDS / 2)
    })
    .await;
    let before = step(&mid, "squares");
    assert!(before.counts.unwrap().succeeded < SHARDS && before.reduce_job_id == 0, "not mid-map: {before:?}");
    c.kill(leader);
    let wf = wait_done(&cl, id, SECS(60)).await;
    assert_eq!(wf.status, proto::WorkflowStatus::Succeeded as i32, "{wf:#?}\n{}", c.logs());
    let s = step(&wf, "squares");
    let res = cl.workflow_result(id).await.unwrap();
    assert_eq!(res.result, bytes(reference));
    assert_eq!(res.job_id, s.reduce_job_id);

    // Exactly one reduce job, with one committed shard: the result read.
    let reduce = cl.get(s.reduce_job_id).await.unwrap();
    assert_eq!((reduce.shards, reduce.status), (1, proto::JobStatus::Succeeded as i32));
    let shard = cl.results_page(s.reduce_job_id, 0, 10).await.unwrap().results;
    assert_eq!(shard.len(), 1);
    assert_eq!((shard[0].status, &shard[0].result), (proto::TaskStatus::Succeeded as i32, &res.result));
    assert_eq!(shard[0].token, res.token);
    // Each attempt ran the handler at most once; the committed one ran it.
    let runs = reduces.load(Ordering::SeqCst);
    assert!(runs >= 1 && shard[0].attempts >= runs, "{runs} reduce runs, {} attempts recorded", shard[0].attempts);
    let jobs = cl.list(proto::ListJobsRequest { namespace: NS.into(), page_size: 1000, ..Default::default() }).await;
    let reduce_jobs: Vec<u64> = jobs
        .unwrap()
        .jobs
        .iter()
        .filter(|j| j.origin.as_ref().is_some_and(|o| o.workflow_id == id && o.role == proto::StepRole::Reduce as i32))
        .map(|j| j.id)
        .collect();
    assert_eq!(reduce_jobs, [s.reduce_job_id]);
    // Every map shard committed once, with the reference values.
    let map = cl.results(s.map_job_id).await.unwrap();
    assert_eq!(map.len(), SHARDS as usize);
    assert!(
        map.iter().all(|r| r.status == proto::TaskStatus::Succeeded as i32 && num(&r.result) == value(r.shard as i64))
    );
}
