//! `baton workflow ...`: submit a workflow file, read, list, watch and cancel
//! workflows, decide gates, and print a workflow's result. Tables by
//! default, `--json` for scripts (fields listed in docs/cli.md).

use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use baton_client::{Client, Error, proto};
use clap::Subcommand;
use futures::StreamExt;
use serde_json::{Value, json};

use crate::cli::{Global, print_json};
use crate::workflow_file;

#[derive(Subcommand)]
pub enum WorkflowCmd {
    /// Submit a workflow described in a TOML or JSON file (docs/workflows.md).
    Submit {
        /// `.toml` or `.json`; `-` reads stdin (TOML or JSON, told apart by content).
        #[arg(short = 'f', long = "file")]
        file: PathBuf,
    },
    /// A workflow's steps: status, phase, shards done/total, reason.
    Get { id: u64 },
    /// Workflows in id order, optionally of one namespace or status.
    List {
        #[arg(long)]
        namespace: Option<String>,
        /// running, succeeded, failed or cancelled.
        #[arg(long)]
        status: Option<String>,
        #[arg(long, default_value_t = 100)]
        limit: u32,
    },
    /// Follow a workflow until it finishes, with a progress bar per step
    /// (plain lines when stdout is not a terminal).
    Watch { id: u64 },
    /// Cancel every running, waiting and awaiting step.
    Cancel {
        id: u64,
        #[arg(long, default_value = "cancelled from the CLI")]
        reason: String,
    },
    /// Approve a gate step awaiting approval.
    Approve {
        id: u64,
        step: String,
        /// Who decides, recorded as the step's reason (default: $USER).
        #[arg(long)]
        by: Option<String>,
    },
    /// Reject a gate step awaiting approval: the step fails.
    Reject {
        id: u64,
        step: String,
        /// Who decides, recorded as the step's reason (default: $USER).
        #[arg(long)]
        by: Option<String>,
    },
    /// Print the result of the workflow's result step (raw bytes; `--json`
    /// prints where it came from, with the bytes as text when they are UTF-8).
    Result { id: u64 },
}

pub fn workflow_status_name(v: i32) -> &'static str {
    match proto::WorkflowStatus::try_from(v) {
        Ok(proto::WorkflowStatus::Running) => "running",
        Ok(proto::WorkflowStatus::Succeeded) => "succeeded",
        Ok(proto::WorkflowStatus::Failed) => "failed",
        Ok(proto::WorkflowStatus::Cancelled) => "cancelled",
        _ => "unknown",
    }
}

pub fn step_status_name(v: i32) -> &'static str {
    match proto::StepStatus::try_from(v) {
        Ok(proto::StepStatus::Waiting) => "waiting",
        Ok(proto::StepStatus::Running) => "running",
        Ok(proto::StepStatus::AwaitingApproval) => "awaiting_approval",
        Ok(proto::StepStatus::Succeeded) => "succeeded",
        Ok(proto::StepStatus::Failed) => "failed",
        Ok(proto::StepStatus::Skipped) => "skipped",
        Ok(proto::StepStatus::Cancelled) => "cancelled",
        _ => "unknown",
    }
}

fn phase_name(v: i32) -> Option<&'static str> {
    match proto::StepRole::try_from(v) {
        Ok(proto::StepRole::Generate) => Some("generate"),
        Ok(proto::StepRole::Map) => Some("map"),
        Ok(proto::StepRole::Reduce) => Some("reduce"),
        _ => None,
    }
}

fn trigger_name(v: i32) -> &'static str {
    match proto::TriggerRule::try_from(v) {
        Ok(proto::TriggerRule::AllSucceeded) => "all_succeeded",
        Ok(proto::TriggerRule::AnySucceeded) => "any_succeeded",
        Ok(proto::TriggerRule::AllDone) => "all_done",
        Ok(proto::TriggerRule::AnyFailed) => "any_failed",
        Ok(proto::TriggerRule::NoneFailed) => "none_failed",
        Err(_) => "unknown",
    }
}

fn parse_status(s: &str) -> Result<proto::WorkflowStatus, Error> {
    Ok(match s {
        "running" => proto::WorkflowStatus::Running,
        "succeeded" => proto::WorkflowStatus::Succeeded,
        "failed" => proto::WorkflowStatus::Failed,
        "cancelled" => proto::WorkflowStatus::Cancelled,
        other => {
            return Err(Error::InvalidArgument(format!(
                "unknown status {other:?}; use running, succeeded, failed or cancelled"
            )));
        }
    })
}

fn is_terminal_step(v: i32) -> bool {
    matches!(
        proto::StepStatus::try_from(v),
        Ok(proto::StepStatus::Succeeded
            | proto::StepStatus::Failed
            | proto::StepStatus::Skipped
            | proto::StepStatus::Cancelled)
    )
}

/// Shards finished (succeeded, dead or cancelled) of the step's current job.
fn shards_done(s: &proto::Step) -> u32 {
    let c = s.counts.unwrap_or_default();
    c.succeeded + c.dead + c.cancelled
}

/// `done/total` of the step's current job; `-` for a gate or a step that
/// started no job (waiting, skipped, cancelled before it ran).
fn shards_cell(s: &proto::Step) -> String {
    let started = s.generate_job_id != 0 || s.map_job_id != 0 || s.reduce_job_id != 0;
    if s.kind == "gate" || !started { "-".into() } else { format!("{}/{}", shards_done(s), s.shards) }
}

fn nonzero(v: u64) -> Option<u64> {
    (v != 0).then_some(v)
}

fn nonempty(s: &str) -> Option<&str> {
    (!s.is_empty()).then_some(s)
}

/// The documented JSON form of a step.
pub fn step_json(s: &proto::Step) -> Value {
    let c = s.counts.unwrap_or_default();
    json!({
        "name": s.name, "status": step_status_name(s.status), "kind": s.kind,
        "depends_on": s.depends_on, "trigger": trigger_name(s.trigger),
        "reduce": s.reduce, "choice": s.choice, "dynamic": s.dynamic,
        "phase": phase_name(s.phase), "shards": s.shards,
        "counts": {"pending": c.pending, "running": c.running, "succeeded": c.succeeded, "dead": c.dead, "cancelled": c.cancelled},
        "generate_job_id": nonzero(s.generate_job_id), "map_job_id": nonzero(s.map_job_id),
        "reduce_job_id": nonzero(s.reduce_job_id), "chosen": s.chosen, "reason": nonempty(&s.reason),
        "started_ms": nonzero(s.started_ms), "finished_ms": nonzero(s.finished_ms),
        "gate_deadline_ms": nonzero(s.gate_deadline_ms),
        "gate_event_topic": (!s.gate_event_topic.is_empty()).then_some(&s.gate_event_topic),
    })
}

/// The documented JSON form of a workflow.
pub fn workflow_json(w: &proto::Workflow) -> Value {
    json!({
        "id": w.id, "namespace": w.namespace, "name": w.name, "status": workflow_status_name(w.status),
        "labels": w.labels, "result_step": nonempty(&w.result_step), "created_ms": w.created_ms,
        "finished_ms": nonzero(w.finished_ms), "cancel_reason": nonempty(&w.cancel_reason),
        "idempotency_key": w.idempotency_key,
        "steps": w.steps.iter().map(step_json).collect::<Vec<_>>(),
    })
}

fn step_name_width(w: &proto::Workflow) -> usize {
    w.steps.iter().map(|s| s.name.chars().count()).max().unwrap_or(4).clamp(4, 40)
}

/// The `get` table: one header line, then a row per step.
pub fn workflow_table(w: &proto::Workflow) -> String {
    let n = step_name_width(w);
    let mut out = format!(
        "workflow {} {:?} in {}: {}{}\n",
        w.id,
        w.name,
        w.namespace,
        workflow_status_name(w.status),
        if w.result_step.is_empty() { String::new() } else { format!(" (result step {:?})", w.result_step) }
    );
    if !w.cancel_reason.is_empty() {
        out.push_str(&format!("cancelled: {}\n", w.cancel_reason));
    }
    out.push_str(&format!("{:<n$}  {:<17} {:<8} {:>13}  REASON\n", "STEP", "STATUS", "PHASE", "SHARDS"));
    for s in &w.steps {
        let phase = if s.kind == "gate" { "gate" } else { phase_name(s.phase).unwrap_or("-") };
        out.push_str(&format!(
            "{:<n$}  {:<17} {:<8} {:>13}  {}\n",
            s.name,
            step_status_name(s.status),
            phase,
            shards_cell(s),
            step_reason(s)
        ));
    }
    out
}

/// The reason column: why it ended, who decided a gate, what a choice took,
/// when a gate times out.
fn step_reason(s: &proto::Step) -> String {
    let mut parts = Vec::new();
    if !s.reason.is_empty() {
        parts.push(s.reason.clone());
    }
    if !s.chosen.is_empty() {
        parts.push(format!("chose {}", s.chosen.join(", ")));
    }
    let awaiting = s.status == proto::StepStatus::AwaitingApproval as i32;
    if awaiting && !s.gate_event_topic.is_empty() {
        parts.push(format!("waits for an event on {:?}", s.gate_event_topic));
    }
    if s.gate_deadline_ms != 0 && awaiting {
        // Log time, shown against this machine's clock: close enough to read.
        let now_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
        match s.gate_deadline_ms.checked_sub(now_ms) {
            Some(left) => parts.push(format!("times out in {} s", left.div_ceil(1000))),
            None => parts.push("timeout due".into()),
        }
    }
    parts.join("; ")
}

const LIST_HEADER: &str = "      ID  STATUS      NAMESPACE         STEPS  DONE  NAME";

fn list_row(w: &proto::Workflow) -> String {
    let done = w.steps.iter().filter(|s| is_terminal_step(s.status)).count();
    format!(
        "{:>8}  {:<10}  {:<16} {:>6} {:>5}  {}",
        w.id,
        workflow_status_name(w.status),
        w.namespace,
        w.steps.len(),
        done,
        w.name
    )
}

fn default_by() -> String {
    std::env::var("USER").ok().filter(|u| !u.is_empty()).unwrap_or_else(|| "baton-cli".into())
}

pub async fn workflow(g: &Global, cmd: WorkflowCmd) -> Result<(), Error> {
    let client = g.client()?;
    match cmd {
        WorkflowCmd::Submit { file } => {
            let spec = workflow_file::load(&file).map_err(|e| Error::InvalidArgument(e.to_string()))?;
            let r = client.submit_workflow(spec).await?;
            if g.json {
                print_json(&json!({"workflow_id": r.workflow_id, "steps": r.steps, "duplicate": r.duplicate}));
            } else {
                println!(
                    "workflow {} submitted with {} steps{}",
                    r.workflow_id,
                    r.steps,
                    if r.duplicate { " (already existed)" } else { "" }
                );
            }
        }
        WorkflowCmd::Get { id } => {
            let w = client.get_workflow(id).await?;
            if g.json {
                print_json(&workflow_json(&w));
            } else {
                print!("{}", workflow_table(&w));
            }
        }
        WorkflowCmd::List { namespace, status, limit } => {
            let status = status.as_deref().map(parse_status).transpose()?.unwrap_or(proto::WorkflowStatus::Unspecified);
            let r = client
                .list_workflows(proto::ListWorkflowsRequest {
                    namespace: namespace.unwrap_or_default(),
                    status: status as i32,
                    page_size: limit,
                    ..Default::default()
                })
                .await?;
            if g.json {
                print_json(&json!({
                    "workflows": r.workflows.iter().map(workflow_json).collect::<Vec<_>>(),
                    "next_page_token": r.next_page_token,
                }));
            } else {
                println!("{LIST_HEADER}");
                for w in &r.workflows {
                    println!("{}", list_row(w));
                }
            }
        }
        WorkflowCmd::Watch { id } => {
            let view = if g.json {
                WatchView::Quiet
            } else if std::io::stdout().is_terminal() {
                WatchView::Bars
            } else {
                WatchView::Lines
            };
            let w = watch(&client, id, view).await?;
            if g.json {
                print_json(&workflow_json(&w));
            }
        }
        WorkflowCmd::Cancel { id, reason } => {
            let r = client.cancel_workflow(id, &reason).await?;
            if g.json {
                print_json(
                    &json!({"workflow_id": id, "steps_cancelled": r.steps_cancelled, "tasks_cancelled": r.tasks_cancelled}),
                );
            } else {
                println!(
                    "workflow {id} cancelled ({} steps cancelled, {} shards stopped)",
                    r.steps_cancelled, r.tasks_cancelled
                );
            }
        }
        WorkflowCmd::Approve { id, step, by } => resolve(g, &client, id, &step, by, true).await?,
        WorkflowCmd::Reject { id, step, by } => resolve(g, &client, id, &step, by, false).await?,
        WorkflowCmd::Result { id } => {
            let r = client.workflow_result(id).await?;
            if g.json {
                print_json(&json!({
                    "workflow_id": id, "step": r.step, "job_id": r.job_id, "token": r.token,
                    "bytes": r.result.len(), "result": std::str::from_utf8(&r.result).ok(),
                }));
            } else {
                let mut out = std::io::stdout().lock();
                let io = |e: std::io::Error| Error::Internal(format!("cannot write the result: {e}"));
                out.write_all(&r.result).map_err(io)?;
                if out.is_terminal() && !r.result.ends_with(b"\n") {
                    out.write_all(b"\n").map_err(io)?;
                }
                out.flush().map_err(io)?;
            }
        }
    }
    Ok(())
}

async fn resolve(
    g: &Global,
    client: &Client,
    id: u64,
    step: &str,
    by: Option<String>,
    approve: bool,
) -> Result<(), Error> {
    let by = by.unwrap_or_else(default_by);
    if approve {
        client.approve_step(id, step, &by).await?;
    } else {
        client.reject_step(id, step, &by).await?;
    }
    let verdict = if approve { "approved" } else { "rejected" };
    if g.json {
        print_json(&json!({"workflow_id": id, "step": step, "approved": approve, "by": by}));
    } else {
        println!("step {step:?} of workflow {id} {verdict} by {by}");
    }
    Ok(())
}

/// How [`watch`] shows progress.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WatchView {
    /// A progress bar per step, redrawn on each event (for a terminal).
    Bars,
    /// A line per step whenever its status or phase changes or it passes
    /// another tenth of its shards (for logs and pipes).
    Lines,
    /// Nothing; the caller prints the result.
    Quiet,
}

/// One step's row as [`WatchView::Lines`] prints it, and the key that
/// decides whether it changed enough to print again.
fn step_line(s: &proto::Step, width: usize) -> (String, String) {
    let phase = if s.kind == "gate" { "gate" } else { phase_name(s.phase).unwrap_or("-") };
    let tenth = if s.shards == 0 { 0 } else { shards_done(s) as u64 * 10 / s.shards as u64 };
    let key = format!("{}/{}/{}/{}/{}", s.status, s.phase, s.shards, tenth, s.reason);
    let line = format!(
        "  {:<width$}  {:<17} {:<8} {:>13}  {}",
        s.name,
        step_status_name(s.status),
        phase,
        shards_cell(s),
        step_reason(s)
    );
    (key, line)
}

struct Bars {
    _multi: indicatif::MultiProgress,
    head: indicatif::ProgressBar,
    steps: Vec<indicatif::ProgressBar>,
}

impl Bars {
    fn new(w: &proto::Workflow) -> Bars {
        let multi = indicatif::MultiProgress::with_draw_target(indicatif::ProgressDrawTarget::stdout());
        let head = multi.add(indicatif::ProgressBar::new_spinner());
        head.set_style(
            indicatif::ProgressStyle::with_template("{spinner} {msg} ({elapsed})")
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_spinner()),
        );
        head.enable_steady_tick(Duration::from_millis(120));
        let width = step_name_width(w);
        let template = format!("  {{prefix:<{width}}} [{{bar:20}}] {{msg}}");
        let style = indicatif::ProgressStyle::with_template(&template)
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
            .progress_chars("=> ");
        let steps = w
            .steps
            .iter()
            .map(|s| {
                let pb = multi.add(indicatif::ProgressBar::new(1));
                pb.set_style(style.clone());
                pb.set_prefix(s.name.clone());
                pb
            })
            .collect();
        Bars { _multi: multi, head, steps }
    }

    fn draw(&self, w: &proto::Workflow) {
        self.head.set_message(format!("workflow {} {:?}: {}", w.id, w.name, workflow_status_name(w.status)));
        for (pb, s) in self.steps.iter().zip(&w.steps) {
            let len = s.shards.max(1) as u64;
            let done = if s.status == proto::StepStatus::Succeeded as i32 { len } else { shards_done(s) as u64 };
            pb.set_length(len);
            pb.set_position(done.min(len));
            let phase = if s.kind == "gate" { "gate" } else { phase_name(s.phase).unwrap_or("") };
            let reason = step_reason(s);
            pb.set_message(format!(
                "{:>11}  {} {}{}{}",
                shards_cell(s),
                step_status_name(s.status),
                phase,
                if reason.is_empty() { "" } else { "  " },
                reason
            ));
        }
    }

    /// Stop redrawing, leaving every bar as last drawn (`finish` would fill
    /// the bars of skipped and failed steps).
    fn finish(self) {
        for pb in &self.steps {
            pb.abandon();
        }
        self.head.abandon();
    }
}

/// Follow a workflow until it finishes, showing each step's progress, and
/// return the finished workflow.
pub async fn watch(client: &Client, id: u64, view: WatchView) -> Result<proto::Workflow, Error> {
    let started = Instant::now();
    let mut events = Box::pin(client.watch_workflow(id));
    let mut bars: Option<Bars> = None;
    let mut printed: Vec<String> = Vec::new();
    let mut last: Option<proto::Workflow> = None;
    while let Some(ev) = events.next().await {
        let Some(w) = ev?.workflow else { continue };
        match view {
            WatchView::Bars => bars.get_or_insert_with(|| Bars::new(&w)).draw(&w),
            WatchView::Lines => {
                if last.is_none() {
                    println!("workflow {} {:?} in {}: {} steps", w.id, w.name, w.namespace, w.steps.len());
                }
                let width = step_name_width(&w);
                printed.resize(w.steps.len(), String::new());
                for (seen, s) in printed.iter_mut().zip(&w.steps) {
                    let (key, line) = step_line(s, width);
                    if *seen != key {
                        println!("{line}");
                        *seen = key;
                    }
                }
            }
            WatchView::Quiet => {}
        }
        last = Some(w);
    }
    let last = match last {
        Some(w) => w,
        None => client.get_workflow(id).await?,
    };
    if let Some(b) = bars {
        b.draw(&last);
        b.finish();
    }
    if view != WatchView::Quiet {
        println!("workflow {id} {} after {:.1} s", workflow_status_name(last.status), started.elapsed().as_secs_f64());
    }
    Ok(last)
}

#[cfg(test)]
#[path = "cli_workflow_tests.rs"]
mod tests;
