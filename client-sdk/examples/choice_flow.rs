//! A choice flow: a `check` step looks at the text it is given and chooses
//! a branch, `fast` for a short text and `full` otherwise. The branch not
//! taken is skipped; the `join` step (trigger `none_failed`) runs after
//! whichever branch ran and reads its result, which becomes the workflow's.
//!
//! ```text
//!           ┌─▶ fast ─┐
//!   check ──┤         ├──▶ join (none_failed)
//!           └─▶ full ─┘
//! ```
//!
//! Against a running cluster (`make dev` in another terminal):
//!
//! ```sh
//! cargo run -p baton-client --example choice_flow -- README.md
//! ```
//!
//! It runs the flow twice, on a one-line text and on the file given, and
//! prints which branch each run took and skipped.

use std::time::Duration;

use baton_client::workflow::{Step, WorkflowBuilder, choose};
use baton_client::{Client, TaskContext, TaskError, Worker, proto};
use futures::StreamExt;

/// Texts up to this many words take the fast branch.
const FAST_UP_TO: usize = 100;

fn words(text: &[u8]) -> Vec<String> {
    String::from_utf8_lossy(text).split_whitespace().map(str::to_lowercase).collect()
}

fn retry_or_fail(e: baton_client::Error) -> TaskError {
    if e.is_retryable() { TaskError::retryable(e) } else { TaskError::fatal(e) }
}

/// One handler for every step; the step's name says what to do.
async fn handle(ctx: TaskContext) -> Result<Vec<u8>, TaskError> {
    let wf = ctx.workflow().ok_or_else(|| TaskError::fatal("not a workflow shard"))?;
    match wf.step.as_str() {
        // The choice: a JSON array of the successors to run.
        "check" => {
            let n = words(&ctx.payload).len();
            Ok(choose(&[if n <= FAST_UP_TO { "fast" } else { "full" }]))
        }
        "fast" => Ok(format!("fast: {} words", words(&ctx.payload).len()).into_bytes()),
        "full" => {
            let w = words(&ctx.payload);
            let mut distinct = w.clone();
            distinct.sort();
            distinct.dedup();
            let longest = w.iter().max_by_key(|s| s.chars().count()).cloned().unwrap_or_default();
            Ok(format!("full: {} words, {} distinct, longest {longest:?}", w.len(), distinct.len()).into_bytes())
        }
        // The join reads the branch that ran: the only input it has, since
        // a step's inputs are its predecessors that succeeded.
        "join" => {
            let branch = wf.inputs.first().map(|i| i.step.clone()).ok_or_else(|| TaskError::fatal("no branch ran"))?;
            let result = ctx.input(&branch).await.map_err(retry_or_fail)?;
            Ok(format!("after {branch}: {}", String::from_utf8_lossy(&result)).into_bytes())
        }
        other => Err(TaskError::fatal(format!("unknown step {other:?}"))),
    }
}

fn flow(text: &[u8]) -> proto::WorkflowSpec {
    // Only this example's workers know these steps.
    let job = |payload: &[u8]| proto::JobSpec {
        payloads: vec![payload.to_vec()],
        constraints: [("example".to_string(), "choice".to_string())].into_iter().collect(),
        ..Default::default()
    };
    WorkflowBuilder::new("examples", "choice")
        .step(Step::job("check", job(text)).choice())
        .step(Step::job("fast", job(text)).depends_on(["check"]))
        .step(Step::job("full", job(text)).depends_on(["check"]))
        .step(Step::job("join", job(b"")).depends_on(["fast", "full"]).trigger(proto::TriggerRule::NoneFailed))
        .result_step("join")
        .build()
}

fn status_name(v: i32) -> &'static str {
    match proto::StepStatus::try_from(v) {
        Ok(proto::StepStatus::Succeeded) => "succeeded",
        Ok(proto::StepStatus::Failed) => "failed",
        Ok(proto::StepStatus::Skipped) => "skipped",
        Ok(proto::StepStatus::Cancelled) => "cancelled",
        Ok(proto::StepStatus::Running) => "running",
        Ok(proto::StepStatus::Waiting) => "waiting",
        _ => "?",
    }
}

async fn run(client: &Client, label: &str, text: &[u8]) -> anyhow::Result<()> {
    let wf = client.submit_workflow(flow(text)).await?;
    // The watch ends with the finished workflow.
    let mut events = Box::pin(client.watch_workflow(wf.workflow_id));
    let mut last = None;
    while let Some(ev) = events.next().await {
        last = ev?.workflow.or(last);
    }
    let w = last.ok_or_else(|| anyhow::anyhow!("no state of workflow {}", wf.workflow_id))?;
    println!("workflow {} on {label} ({} words):", w.id, words(text).len());
    for s in &w.steps {
        let mut line = format!("  {:<6} {:<10}", s.name, status_name(s.status));
        if !s.chosen.is_empty() {
            line.push_str(&format!(" chose {}", s.chosen.join(", ")));
        }
        if !s.reason.is_empty() {
            line.push_str(&format!(" ({})", s.reason));
        }
        println!("{}", line.trim_end());
    }
    anyhow::ensure!(w.status == proto::WorkflowStatus::Succeeded as i32, "workflow {} did not succeed", w.id);
    let r = client.workflow_result(w.id).await?;
    println!("  result: {}", String::from_utf8_lossy(&r.result));
    Ok(())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let file = std::env::args().nth(1).unwrap_or_else(|| "README.md".into());
    let big = std::fs::read(&file)?;
    let endpoints: Vec<String> = std::env::var("BATON_ENDPOINTS")
        .unwrap_or_else(|_| "127.0.0.1:7201,127.0.0.1:7202,127.0.0.1:7203".into())
        .split(',')
        .map(str::to_string)
        .collect();

    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let mut workers = Vec::new();
    for i in 0..2 {
        let w = Worker::builder()
            .endpoints(endpoints.clone())
            .name(format!("choice-{i}"))
            .capacity(2)
            .label("example", "choice")
            .handler(handle)
            .build()?;
        let mut rx = stop_rx.clone();
        workers.push(tokio::spawn(w.run(async move {
            let _ = rx.wait_for(|s| *s).await;
        })));
    }

    let client = Client::connect(endpoints)?;
    run(&client, "a one-line text", b"a short text takes the fast branch").await?;
    run(&client, &file, &big).await?;

    let _ = stop_tx.send(true);
    for w in workers {
        let _ = tokio::time::timeout(Duration::from_secs(10), w).await;
    }
    Ok(())
}
