//! A real map-reduce workflow: count the words of a set of files.
//!
//! One step, `count`, does it all:
//! - it is a **dynamic map**: its one shard is a generator that lists the
//!   files at run time (directories are expanded) and emits one child shard
//!   per file with `emit_children`;
//! - each map shard counts the words of its file;
//! - the **reduce** merges every shard's counts, read page by page with
//!   `ctx.reduce_input()` (never all in one buffer), and keeps the top words;
//! - the reduce's result is the workflow's result.
//!
//! Against a running cluster (`make dev` in another terminal):
//!
//! ```sh
//! cargo run -p baton-client --example wordcount_workflow -- README.md docs
//! ```
//!
//! It starts two workers in this process (they read the files, so they run
//! where the files are), submits the workflow, prints each step's progress,
//! and checks the result against a count made here. BATON_ENDPOINTS points
//! elsewhere.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use baton_client::workflow::{Step, WorkflowBuilder, emit_children};
use baton_client::{Client, TaskContext, TaskError, Worker, proto};
use futures::StreamExt;

/// Words the result keeps.
const TOP: usize = 10;

type Counts = BTreeMap<String, u64>;

fn count_words(text: &str, counts: &mut Counts) {
    for w in text.split(|c: char| !c.is_alphanumeric()).filter(|w| !w.is_empty()) {
        *counts.entry(w.to_lowercase()).or_default() += 1;
    }
}

/// Counts as text, one `word<TAB>count` line each: what a map shard returns.
fn encode(counts: &Counts) -> Vec<u8> {
    counts.iter().map(|(w, n)| format!("{w}\t{n}\n")).collect::<String>().into_bytes()
}

fn decode(bytes: &[u8], into: &mut Counts) -> Result<(), String> {
    let text = std::str::from_utf8(bytes).map_err(|e| e.to_string())?;
    for line in text.lines() {
        let (w, n) = line.split_once('\t').ok_or_else(|| format!("bad line {line:?}"))?;
        *into.entry(w.to_string()).or_default() += n.parse::<u64>().map_err(|e| e.to_string())?;
    }
    Ok(())
}

/// The result: totals, then the most frequent words (ties by word).
fn summary(counts: &Counts, files: usize) -> String {
    let mut top: Vec<(&String, &u64)> = counts.iter().collect();
    top.sort_by(|a, b| b.1.cmp(a.1).then_with(|| a.0.cmp(b.0)));
    let mut out = format!("{} words, {} distinct, in {files} files\n", counts.values().sum::<u64>(), counts.len());
    for (w, n) in top.into_iter().take(TOP) {
        out.push_str(&format!("{n:>8}  {w}\n"));
    }
    out
}

/// Files named by `paths` (one per line): files as given, directories'
/// regular files; sorted.
fn list_files(paths: &str) -> std::io::Result<Vec<PathBuf>> {
    let mut files = Vec::new();
    for p in paths.lines().map(Path::new) {
        if p.is_dir() {
            for e in std::fs::read_dir(p)? {
                let path = e?.path();
                if path.is_file() {
                    files.push(path);
                }
            }
        } else {
            std::fs::metadata(p)?;
            files.push(p.to_path_buf());
        }
    }
    files.sort();
    Ok(files)
}

fn step_status(v: i32) -> &'static str {
    match proto::StepStatus::try_from(v) {
        Ok(proto::StepStatus::Waiting) => "waiting",
        Ok(proto::StepStatus::Running) => "running",
        Ok(proto::StepStatus::Succeeded) => "succeeded",
        Ok(proto::StepStatus::Failed) => "failed",
        Ok(proto::StepStatus::Skipped) => "skipped",
        Ok(proto::StepStatus::Cancelled) => "cancelled",
        _ => "?",
    }
}

fn role(v: i32) -> &'static str {
    match proto::StepRole::try_from(v) {
        Ok(proto::StepRole::Generate) => "generate",
        Ok(proto::StepRole::Map) => "map",
        Ok(proto::StepRole::Reduce) => "reduce",
        _ => "-",
    }
}

fn retry_or_fail(e: baton_client::Error) -> TaskError {
    if e.is_retryable() { TaskError::retryable(e) } else { TaskError::fatal(e) }
}

async fn handle(ctx: TaskContext) -> Result<Vec<u8>, TaskError> {
    let role = ctx.workflow().map(|w| w.role).ok_or_else(|| TaskError::fatal("not a workflow shard"))?;
    match proto::StepRole::try_from(role) {
        // The generator: list the files now, one child shard per file.
        Ok(proto::StepRole::Generate) => {
            let paths = std::str::from_utf8(&ctx.payload).map_err(TaskError::fatal)?;
            let files = list_files(paths).map_err(TaskError::fatal)?;
            let children: Vec<Vec<u8>> = files.iter().map(|f| f.display().to_string().into_bytes()).collect();
            Ok(emit_children(&children))
        }
        // A map shard: one file's counts.
        Ok(proto::StepRole::Map) => {
            let path = std::str::from_utf8(&ctx.payload).map_err(TaskError::fatal)?;
            let text = std::fs::read_to_string(path).map_err(|e| TaskError::fatal(format!("{path}: {e}")))?;
            let mut counts = Counts::new();
            count_words(&text, &mut counts);
            Ok(encode(&counts))
        }
        // The reduce: merge every shard's counts as they stream in.
        Ok(proto::StepRole::Reduce) => {
            let mut counts = Counts::new();
            let mut files = 0;
            let mut input = Box::pin(ctx.reduce_input());
            while let Some(shard) = input.next().await {
                let shard = shard.map_err(retry_or_fail)?;
                decode(&shard.result, &mut counts)
                    .map_err(|e| TaskError::fatal(format!("shard {}: {e}", shard.shard)))?;
                files += 1;
            }
            Ok(summary(&counts, files).into_bytes())
        }
        _ => Err(TaskError::fatal(format!("unexpected role {role}"))),
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let paths: Vec<String> = std::env::args().skip(1).collect();
    anyhow::ensure!(!paths.is_empty(), "usage: wordcount_workflow PATH... (files or directories)");
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
            .name(format!("wordcount-workflow-{i}"))
            .capacity(4)
            .label("example", "wordcount")
            .handler(handle)
            .build()?;
        let mut rx = stop_rx.clone();
        workers.push(tokio::spawn(w.run(async move {
            let _ = rx.wait_for(|s| *s).await;
        })));
    }

    // Only this example's workers may run its shards: they read local files.
    let job = |payload: String| proto::JobSpec {
        payloads: vec![payload.into_bytes()],
        constraints: [("example".to_string(), "wordcount".to_string())].into_iter().collect(),
        ..Default::default()
    };
    let spec = WorkflowBuilder::new("examples", "wordcount")
        .step(Step::job("count", job(paths.join("\n"))).dynamic().reduce(Vec::new()))
        .result_step("count")
        .build();
    let client = Client::connect(endpoints)?;
    let wf = client.submit_workflow(spec).await?;
    println!("workflow {} submitted", wf.workflow_id);

    let mut events = Box::pin(client.watch_workflow(wf.workflow_id));
    let mut shown = BTreeMap::new();
    let mut status = proto::WorkflowStatus::Unspecified as i32;
    while let Some(ev) = events.next().await {
        let Some(w) = ev?.workflow else { continue };
        status = w.status;
        for s in &w.steps {
            let c = s.counts.unwrap_or_default();
            let line = format!(
                "  step {}: {} {}, {}/{} shards done",
                s.name,
                step_status(s.status),
                role(s.phase),
                c.succeeded + c.dead,
                s.shards
            );
            if shown.get(&s.name) != Some(&line) {
                println!("{line}");
                shown.insert(s.name.clone(), line);
            }
        }
    }
    anyhow::ensure!(status == proto::WorkflowStatus::Succeeded as i32, "workflow {} did not succeed", wf.workflow_id);
    let result = client.workflow_result(wf.workflow_id).await?;
    let got = String::from_utf8_lossy(&result.result).into_owned();
    print!("result (reduce job {}, token {}):\n{got}", result.job_id, result.token);

    // The same count, here.
    let files = list_files(&paths.join("\n"))?;
    let mut counts = Counts::new();
    for f in &files {
        count_words(&std::fs::read_to_string(f)?, &mut counts);
    }
    let want = summary(&counts, files.len());
    anyhow::ensure!(got == want, "the workflow's result differs from a local count:\n{want}");
    println!("equal to the count made here without the cluster");

    let _ = stop_tx.send(true);
    for w in workers {
        let _ = tokio::time::timeout(Duration::from_secs(10), w).await;
    }
    Ok(())
}
