//! The history: everything the harness saw during one chaos run, as a list of
//! events, stored one JSON object per line (JSONL).
//!
//! Every line looks like `{"seq":7,"t":1520,"type":"submit_ok",...}`: `seq`
//! orders events (it strictly increases), `t` is the recorder's clock in
//! milliseconds, and `type` selects the remaining fields (see [`Body`]).
//! Operations that can fail or time out are recorded twice: an `*_invoke` when
//! the request is sent, and one reply event, matched to it by (process, op).
//!
//! Timing bounds need the run's settings: the harness records them first, in
//! one `config` event ([`RunConfig`]), and records every leader it observes
//! (`leader`). Both were added after the first histories were written: an
//! older history without them still reads, and the checks that need them say
//! so in a note instead of judging. Nemesis events name what they hit in a
//! structured `targets` field ([`Targets`]); older ones carry only `detail`.
//!
//! Workflows add their own events: `workflow_submit_invoke` (carrying the
//! shape of the steps as sent: dependencies, trigger rules, reduces, choices)
//! and its replies, `workflow_cancel` requests, a `step` on every `assign` of
//! a job a workflow started, an `origin` on such jobs and a `workflows` list
//! in the final state. All are optional, so histories without workflows read
//! and write as before.
//!
//! Schedules and event triggers add `schedule_create` (an acknowledged
//! schedule with its cadence and policies), `schedule_pause` (the workload
//! paused it: its window ends), `event_publish` (an acknowledged publish
//! and the runs it reported), and on final-state jobs `run_of` (the fire or
//! event that started the job), `created_ms` and `finished_ms` (log time).
//! These are optional too: older histories read as before.

use std::fmt;
use std::fs::File;
use std::io::{BufRead, BufReader, BufWriter, Write};
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::Error;

// These types mirror the cluster's on purpose instead of importing them from
// baton-raft-store: the checker is an independent oracle over a wire format,
// and sharing the implementation's types would let it share its bugs.

/// A job id as assigned by the cluster.
pub type JobId = u64;
/// A workflow id as assigned by the cluster.
pub type WorkflowId = u64;
/// A fencing token: strictly increasing per task.
pub type Token = u64;

/// One task: a shard of a job.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct TaskKey {
    /// The job the task belongs to.
    pub job: JobId,
    /// The shard's index within the job, from 0.
    pub shard: u32,
}

impl TaskKey {
    /// The task for `shard` of `job`.
    pub fn new(job: JobId, shard: u32) -> Self {
        Self { job, shard }
    }
}

impl fmt::Display for TaskKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "job {} shard {}", self.job, self.shard)
    }
}

/// One line of the history.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Event {
    /// Position in the history; strictly increasing. The checker's "before"
    /// always means a smaller `seq`, never a smaller `t`.
    pub seq: u64,
    /// Recorder time in milliseconds. Only the liveness and reassignment
    /// bounds read it.
    pub t: u64,
    #[serde(flatten)]
    /// The event kind and its fields; `type` in JSON.
    pub body: Body,
}

/// What happened. The JSON `type` field is the variant name in snake_case.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Body {
    /// A submitter sent `SubmitJob`.
    SubmitInvoke(SubmitInvoke),
    /// The submit was acknowledged: the job exists and must never be lost.
    SubmitOk(SubmitOk),
    /// The submit was refused and definitely not applied.
    SubmitFail(OpFailure),
    /// The submit's outcome is unknown (timeout, lost connection): it may or
    /// may not have been applied.
    SubmitInfo(OpFailure),
    /// A worker received an attempt: this is how the history observes grants.
    Assign(Assign),
    /// A worker sent `Complete{token, result}`.
    CompleteInvoke(CompleteInvoke),
    /// The complete committed the result.
    CompleteOk(CompleteReply),
    /// The same token had already completed the task; nothing changed.
    CompleteDuplicate(CompleteReply),
    /// The token was not the task's current one; nothing changed.
    CompleteFenced(CompleteReply),
    /// The complete was refused for another reason and definitely not applied.
    CompleteFail(CompleteReply),
    /// The complete's outcome is unknown.
    CompleteInfo(CompleteReply),
    /// A client asked for a job's status (a linearizable read).
    ReadInvoke(ReadInvoke),
    /// The read found the job in this status.
    ReadOk(ReadOk),
    /// The read answered that no such job exists.
    ReadNotFound(ReadReply),
    /// The read failed; it says nothing about the job.
    ReadFail(OpFailure),
    /// A fault was injected or removed.
    Nemesis(Nemesis),
    /// The settings that bound the run's timing; recorded once, first.
    Config(RunConfig),
    /// An observer saw a leader of a term newer than any it had seen.
    Leader(LeaderSeen),
    /// The task table read after heal and drain.
    FinalState(FinalState),
    /// One replica's state hash at its applied index.
    Replica(Replica),
    /// A submitter sent `SubmitWorkflow`; the spec's shape, as sent.
    WorkflowSubmitInvoke(WorkflowSubmitInvoke),
    /// The workflow submit was acknowledged: the workflow exists.
    WorkflowSubmitOk(WorkflowSubmitOk),
    /// The workflow submit was refused and definitely not applied.
    WorkflowSubmitFail(OpFailure),
    /// The workflow submit's outcome is unknown.
    WorkflowSubmitInfo(OpFailure),
    /// A client asked to cancel a workflow (whatever the answer).
    WorkflowCancel(WorkflowCancel),
    /// A schedule's creation was acknowledged.
    ScheduleCreate(ScheduleCreate),
    /// The workload's pause of a schedule was acknowledged.
    SchedulePause(SchedulePause),
    /// A `PublishEvent` was acknowledged, with the runs it reported.
    EventPublish(EventPublish),
}

/// A schedule id as assigned by the cluster.
pub type ScheduleId = u64;
/// A trigger id as assigned by the cluster.
pub type TriggerId = u64;

/// An acknowledged schedule: what the checker needs to know its fire times.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScheduleCreate {
    /// The creating process.
    pub client: String,
    /// The schedule id the cluster returned (the first one, for a retried
    /// create answered `duplicate`).
    pub schedule: ScheduleId,
    /// Its namespace.
    pub namespace: String,
    /// Its name, unique in the namespace.
    pub name: String,
    /// When it fires.
    pub cadence: ScheduleCadence,
    /// What happens to fire times missed during an outage.
    pub misfire: MisfirePolicy,
    /// How late a fire may be applied and still count as on time, ms (0
    /// when not recorded: then any late fire may have been a misfire).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub misfire_grace_ms: u64,
    /// What a fire does while an earlier run is live.
    pub overlap: OverlapPolicy,
}

fn is_zero(v: &u64) -> bool {
    *v == 0
}

/// A schedule's cadence, as far as the checker judges it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ScheduleCadence {
    /// Fire times are `anchor_ms + k * period_ms` (k any integer, within the
    /// schedule's window). `anchor_ms` is any one of them: the first fire
    /// time the cluster reported.
    FixedRate {
        /// The period, ms.
        period_ms: u64,
        /// One fire time on the grid, ms (log time).
        anchor_ms: u64,
    },
    /// Any other cadence (cron, fixed delay, once): its fire times are not
    /// enumerated by the checker.
    Other {
        /// The cadence, for humans.
        detail: String,
    },
}

/// A schedule's misfire policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MisfirePolicy {
    /// Missed times start nothing.
    Skip,
    /// One run for the newest missed time.
    FireOnce,
    /// One run per missed time, for the newest `max` of them.
    FireAll {
        /// How many missed times at most are caught up.
        max: u32,
    },
}

/// A schedule's overlap policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OverlapPolicy {
    /// Start another run.
    Allow,
    /// Skip the fire.
    Skip,
    /// Cancel the live runs, then start this one.
    CancelPrevious,
    /// Start it when the live run ends.
    BufferOne,
}

/// The workload paused a schedule (the pause was acknowledged).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SchedulePause {
    /// The pausing process.
    pub client: String,
    /// The schedule paused.
    pub schedule: ScheduleId,
}

/// An acknowledged `PublishEvent`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EventPublish {
    /// The publishing process.
    pub client: String,
    /// The event's namespace.
    pub namespace: String,
    /// Its topic.
    pub topic: String,
    /// Its id: idempotent per namespace.
    pub event_id: String,
    /// The cluster answered that the event id was already published: this
    /// publish started nothing.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub duplicate: bool,
    /// The runs the reply reported, one per matching trigger.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub runs: Vec<EventRunRef>,
}

/// One trigger's run of a published event, as reported.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EventRunRef {
    /// The trigger whose run this is.
    pub trigger: TriggerId,
    /// The job started; `None` when the run was refused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub job: Option<JobId>,
}

/// What started a job: a schedule's fire, or a published event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RunOf {
    /// A fire of a schedule.
    Schedule {
        /// The schedule.
        schedule: ScheduleId,
        /// The fire time the run is for (log time, ms); for a run-now, the
        /// time it was applied.
        fire_ms: u64,
        /// Started by run-now rather than by the cadence.
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        manual: bool,
    },
    /// A published event.
    Event {
        /// The trigger that matched it.
        trigger: TriggerId,
        /// The event's id.
        event_id: String,
    },
}

/// A submitter's `SubmitJob` request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SubmitInvoke {
    /// The submitting process.
    pub client: String,
    /// Operation id, unique per client; replies name it.
    pub op: u64,
    /// Idempotency key. A retry reuses the key under a new op id.
    pub key: String,
    /// Number of shards in the job.
    pub shards: u32,
}

/// An acknowledged submit.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SubmitOk {
    /// The submitting process.
    pub client: String,
    /// The op id of the `submit_invoke` this answers.
    pub op: u64,
    /// The job id the cluster returned.
    pub job: JobId,
}

/// A client operation (a submit or a read) that failed (`submit_fail`,
/// `read_fail`) or whose outcome is unknown (`submit_info`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OpFailure {
    /// The client process.
    pub client: String,
    /// The op id of the invoke this answers.
    pub op: u64,
    /// What the client saw, for humans.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub error: String,
}

/// A worker received an attempt of a task.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Assign {
    /// The worker that received the attempt.
    pub worker: String,
    /// The task's job.
    pub job: JobId,
    /// The task's shard.
    pub shard: u32,
    /// The attempt's fencing token.
    pub token: Token,
    /// The workflow step the job belongs to, as the worker was told; absent
    /// for plain jobs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub step: Option<StepRef>,
}

impl Assign {
    /// The task this attempt belongs to.
    pub fn task(&self) -> TaskKey {
        TaskKey::new(self.job, self.shard)
    }
}

/// Which workflow step a job belongs to, and which of the step's jobs it is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StepRef {
    /// The workflow.
    pub workflow: WorkflowId,
    /// The step's name.
    pub step: String,
    /// Which of the step's jobs.
    pub role: StepRole,
    /// For a reduce: the map job whose shard results are its input.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reduce_of: Option<JobId>,
}

/// The jobs a workflow step runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StepRole {
    /// A dynamic map's one-shard generator, whose result lists the map's shards.
    Generate,
    /// The step's sharded job.
    Map,
    /// The one-shard reduce after every map shard succeeded.
    Reduce,
}

impl StepRole {
    /// The role as written in JSON.
    pub fn name(self) -> &'static str {
        match self {
            StepRole::Generate => "generate",
            StepRole::Map => "map",
            StepRole::Reduce => "reduce",
        }
    }
}

/// A `SubmitWorkflow` request: the workflow's shape as the submitter sent it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WorkflowSubmitInvoke {
    /// The submitting process.
    pub client: String,
    /// Operation id, unique per client (shared with its job submits).
    pub op: u64,
    /// Idempotency key. A retry reuses the key under a new op id.
    pub key: String,
    /// The steps, as submitted.
    pub steps: Vec<WorkflowStepSpec>,
    /// The step whose result is the workflow's result.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result_step: Option<String>,
}

impl WorkflowSubmitInvoke {
    /// The step named `name`.
    pub fn step(&self, name: &str) -> Option<&WorkflowStepSpec> {
        self.steps.iter().find(|s| s.name == name)
    }

    /// The steps that depend on `name`, in submission order.
    pub fn successors<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a WorkflowStepSpec> + 'a {
        self.steps.iter().filter(move |s| s.depends_on.iter().any(|d| d == name))
    }
}

/// One step of a submitted workflow.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WorkflowStepSpec {
    /// Unique within the workflow.
    pub name: String,
    /// The steps it waits for.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub depends_on: Vec<String>,
    /// When it runs, judged on its predecessors' outcomes.
    pub trigger: TriggerRule,
    /// A gate runs no job: it waits for a decision or its timeout.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub gate: bool,
    /// Shards of its map as submitted (a dynamic map's generator has one;
    /// a gate none).
    #[serde(default)]
    pub shards: u32,
    /// The reduce that follows the map, by the name of the function the
    /// workload's reduce computes (`sum`: see the `workflow_result` check).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reduce: Option<String>,
    /// Its result names the successors to run.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub choice: bool,
    /// A dynamic map: a generator emits the map's shards.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub dynamic: bool,
}

/// When a step may run. Every rule waits for all predecessors to finish.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TriggerRule {
    /// Every predecessor succeeded.
    AllSucceeded,
    /// At least one predecessor succeeded.
    AnySucceeded,
    /// Whatever the outcomes.
    AllDone,
    /// At least one predecessor failed.
    AnyFailed,
    /// None failed and at least one succeeded (the join after a choice).
    NoneFailed,
}

impl TriggerRule {
    /// The rule as written in JSON.
    pub fn name(self) -> &'static str {
        match self {
            TriggerRule::AllSucceeded => "all_succeeded",
            TriggerRule::AnySucceeded => "any_succeeded",
            TriggerRule::AllDone => "all_done",
            TriggerRule::AnyFailed => "any_failed",
            TriggerRule::NoneFailed => "none_failed",
        }
    }
}

/// An acknowledged workflow submit.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WorkflowSubmitOk {
    /// The submitting process.
    pub client: String,
    /// The op id of the `workflow_submit_invoke` this answers.
    pub op: u64,
    /// The workflow id the cluster returned.
    pub workflow: WorkflowId,
}

/// A request to cancel a workflow. Only its existence matters: a workflow
/// may end cancelled only if someone asked.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WorkflowCancel {
    /// The cancelling process.
    pub client: String,
    /// The workflow.
    pub workflow: WorkflowId,
}

/// A worker's `Complete` report.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CompleteInvoke {
    /// The reporting worker.
    pub worker: String,
    /// Operation id, unique per worker; the reply names it.
    pub op: u64,
    /// The task's job.
    pub job: JobId,
    /// The task's shard.
    pub shard: u32,
    /// The token of the attempt being reported.
    pub token: Token,
    /// The result bytes, as a string (the harness's workloads produce text).
    pub result: String,
}

impl CompleteInvoke {
    /// The task being reported.
    pub fn task(&self) -> TaskKey {
        TaskKey::new(self.job, self.shard)
    }
}

/// The reply to a `complete_invoke`; the event type carries the outcome.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CompleteReply {
    /// The reporting worker.
    pub worker: String,
    /// The op id of the `complete_invoke` this answers.
    pub op: u64,
    /// The server's message or the client error, for humans.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub detail: String,
}

/// How a complete ended, as seen by the worker.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CompleteOutcome {
    /// `complete_ok`: committed.
    Ok,
    /// `complete_duplicate`: already committed with this token.
    Duplicate,
    /// `complete_fenced`: stale token.
    Fenced,
    /// `complete_fail`: refused, not applied.
    Fail,
    /// `complete_info`: unknown.
    Info,
}

impl CompleteOutcome {
    /// The name used in messages (`ok`, `fenced`, ...).
    pub fn name(self) -> &'static str {
        match self {
            CompleteOutcome::Ok => "ok",
            CompleteOutcome::Duplicate => "duplicate",
            CompleteOutcome::Fenced => "fenced",
            CompleteOutcome::Fail => "fail",
            CompleteOutcome::Info => "info",
        }
    }

    /// Whether the complete might have changed the task. `fenced`, `fail` and
    /// `duplicate` all promise it did not.
    pub fn may_have_applied(self) -> bool {
        matches!(self, CompleteOutcome::Ok | CompleteOutcome::Info)
    }

    /// The reply event for op `op` of `worker` with this outcome.
    pub fn reply(self, worker: &str, op: u64, detail: &str) -> Body {
        let r = CompleteReply { worker: worker.into(), op, detail: detail.into() };
        match self {
            CompleteOutcome::Ok => Body::CompleteOk(r),
            CompleteOutcome::Duplicate => Body::CompleteDuplicate(r),
            CompleteOutcome::Fenced => Body::CompleteFenced(r),
            CompleteOutcome::Fail => Body::CompleteFail(r),
            CompleteOutcome::Info => Body::CompleteInfo(r),
        }
    }
}

/// A status read of one job.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReadInvoke {
    /// The reading process.
    pub client: String,
    /// Operation id, unique per client (shared with its submits).
    pub op: u64,
    /// The job read.
    pub job: JobId,
}

/// A read that found its job.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReadOk {
    /// The reading process.
    pub client: String,
    /// The op id of the `read_invoke` this answers.
    pub op: u64,
    /// The job's status as read.
    pub status: JobStatus,
}

/// A read's reply that carries no status.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReadReply {
    /// The reading process.
    pub client: String,
    /// The op id of the `read_invoke` this answers.
    pub op: u64,
}

/// A fault on the timeline.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Nemesis {
    /// Which fault, e.g. `partition`, `kill`, `pause-worker`.
    pub name: String,
    /// Injecting or removing the fault.
    pub phase: NemesisPhase,
    /// Whether the nemesis knows it worked.
    pub outcome: NemesisOutcome,
    /// What the fault hit; empty when unknown (older histories, or a fault
    /// that could not be installed).
    #[serde(default, skip_serializing_if = "Targets::is_empty")]
    pub targets: Targets,
    /// Free-form, for humans: the command run, the shape, the error seen.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub detail: String,
}

impl Nemesis {
    /// Whether the fault can only have hit worker processes, never a node or
    /// a link: then it cannot have changed the leader. A fault with no
    /// targets may have hit anything.
    pub fn workers_only(&self) -> bool {
        !self.targets.workers.is_empty() && self.targets.nodes.is_empty()
    }
}

/// What a nemesis event hit. JSON: `"targets":{"workers":["w2"]}` or
/// `"targets":{"nodes":[1,3]}`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Targets {
    /// Worker processes killed or paused, by name (the history's `worker`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub workers: Vec<String>,
    /// Raft node ids killed, paused, restarted, cut off or moved in or out of
    /// the voters.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub nodes: Vec<u64>,
}

impl Targets {
    /// Worker processes.
    pub fn workers(names: impl IntoIterator<Item = impl Into<String>>) -> Self {
        Self { workers: names.into_iter().map(Into::into).collect(), nodes: Vec::new() }
    }

    /// Nodes.
    pub fn nodes(ids: impl IntoIterator<Item = u64>) -> Self {
        Self { workers: Vec::new(), nodes: ids.into_iter().collect() }
    }

    /// Whether nothing is named.
    pub fn is_empty(&self) -> bool {
        self.workers.is_empty() && self.nodes.is_empty()
    }
}

/// The settings that bound a run's timing, as the cluster was started with
/// them. The reassignment bound is computed from these.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunConfig {
    /// Worker lease (`workers.ttl_ms`), ms.
    pub ttl_ms: u64,
    /// Failure-detector period (`workers.check_interval_ms`), ms.
    pub check_interval_ms: u64,
    /// Raft's largest election timeout (`raft.election_timeout_max_ms`), ms.
    pub election_timeout_max_ms: u64,
}

/// A leader observed by polling the nodes: the first time the observer saw
/// `node` lead `term`, newer than every term it had seen lead before. The
/// event's `t` is no earlier than the takeover itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeaderSeen {
    /// The leading node.
    pub node: u64,
    /// Its Raft term.
    pub term: u64,
}

/// Whether a nemesis event injects (`start`) or removes (`heal`) its fault.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NemesisPhase {
    /// The fault is being injected.
    Start,
    /// The fault is being removed.
    Heal,
}

/// What the nemesis knows about its own action.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NemesisOutcome {
    /// The fault is in place.
    Installed,
    /// The fault is gone.
    Healed,
    /// The nemesis could not tell (e.g. its command timed out).
    Indeterminate,
}

/// The task table read at the end of the run, after every fault was healed
/// and the workload drained.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct FinalState {
    /// When the recorder saw every task terminal, if it did. The liveness
    /// bound is measured to this time, or to the event's `t` without it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub drained_at: Option<u64>,
    /// Every job the cluster holds.
    pub jobs: Vec<FinalJob>,
    /// Every workflow the cluster holds.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub workflows: Vec<FinalWorkflow>,
}

impl FinalState {
    /// The job with id `id`, if listed.
    pub fn job(&self, id: JobId) -> Option<&FinalJob> {
        self.jobs.iter().find(|j| j.id == id)
    }

    /// The workflow with id `id`, if listed.
    pub fn workflow(&self, id: WorkflowId) -> Option<&FinalWorkflow> {
        self.workflows.iter().find(|w| w.id == id)
    }
}

/// One job in the final state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FinalJob {
    /// The job id.
    pub id: JobId,
    /// The idempotency key the job was created with.
    pub key: String,
    /// The job's status.
    pub status: JobStatus,
    /// One record per shard.
    pub shards: Vec<FinalShard>,
    /// The workflow step that started the job; absent for plain jobs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub origin: Option<StepRef>,
    /// The schedule fire or event that started the job; absent otherwise.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run_of: Option<RunOf>,
    /// When the job was created, in log time (ms); absent in older histories.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created_ms: Option<u64>,
    /// When the job finished, in log time (ms); absent while it is live.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished_ms: Option<u64>,
}

/// One workflow in the final state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FinalWorkflow {
    /// The workflow id.
    pub id: WorkflowId,
    /// The idempotency key it was submitted with.
    pub key: String,
    /// Its status.
    pub status: WorkflowStatus,
    /// Every step, in submission order.
    pub steps: Vec<FinalStep>,
    /// The result step's result (its output job's shard 0), once it has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result: Option<String>,
}

impl FinalWorkflow {
    /// The step named `name`.
    pub fn step(&self, name: &str) -> Option<&FinalStep> {
        self.steps.iter().find(|s| s.name == name)
    }
}

/// One step of a workflow in the final state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FinalStep {
    /// The step's name.
    pub name: String,
    /// Where it is.
    pub state: StepState,
    /// For a choice step that succeeded: the successors it chose.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub chosen: Option<Vec<String>>,
    /// A dynamic map's generator job, once started.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub generate_job: Option<JobId>,
    /// The map job, once started.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub map_job: Option<JobId>,
    /// The reduce job, once started.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reduce_job: Option<JobId>,
}

/// A workflow's status.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WorkflowStatus {
    /// Some step has not finished.
    Running,
    /// Every step finished and none failed.
    Succeeded,
    /// Every step finished and at least one failed.
    Failed,
    /// Cancelled by a user.
    Cancelled,
}

impl WorkflowStatus {
    /// Whether the workflow can no longer change.
    pub fn is_terminal(self) -> bool {
        !matches!(self, WorkflowStatus::Running)
    }

    /// The status as written in JSON.
    pub fn name(self) -> &'static str {
        match self {
            WorkflowStatus::Running => "running",
            WorkflowStatus::Succeeded => "succeeded",
            WorkflowStatus::Failed => "failed",
            WorkflowStatus::Cancelled => "cancelled",
        }
    }
}

/// A step's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StepState {
    /// Some predecessor has not finished.
    Waiting,
    /// Its jobs run.
    Running,
    /// A gate waiting for a decision.
    AwaitingApproval,
    /// Finished well.
    Succeeded,
    /// Its job failed, its choice was malformed, or its gate was rejected.
    Failed,
    /// Its trigger rule could not be met, or a choice did not take it.
    Skipped,
    /// Cancelled with its workflow.
    Cancelled,
}

impl StepState {
    /// Whether the step can no longer change.
    pub fn is_terminal(self) -> bool {
        matches!(self, StepState::Succeeded | StepState::Failed | StepState::Skipped | StepState::Cancelled)
    }

    /// The state as written in JSON.
    pub fn name(self) -> &'static str {
        match self {
            StepState::Waiting => "waiting",
            StepState::Running => "running",
            StepState::AwaitingApproval => "awaiting_approval",
            StepState::Succeeded => "succeeded",
            StepState::Failed => "failed",
            StepState::Skipped => "skipped",
            StepState::Cancelled => "cancelled",
        }
    }
}

/// One task in the final state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FinalShard {
    /// The shard's index within the job.
    pub shard: u32,
    /// The task's status.
    pub status: TaskStatus,
    /// The committed result; set only when `status` is `succeeded`.
    #[serde(default)]
    pub result: Option<String>,
    /// The token the result was committed with.
    #[serde(default)]
    pub token: Option<Token>,
    /// The latest token ever granted for this task (`null` if never granted).
    #[serde(default)]
    pub latest_token: Option<Token>,
}

/// A job's status, derived by the cluster from its shards.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum JobStatus {
    /// No shard has started.
    Queued,
    /// Some shard has started and some is not terminal.
    Running,
    /// Every shard succeeded.
    Succeeded,
    /// Finished with at least one dead shard.
    Failed,
    /// Cancelled by a user.
    Cancelled,
}

impl JobStatus {
    /// Whether the job can no longer change.
    pub fn is_terminal(self) -> bool {
        matches!(self, JobStatus::Succeeded | JobStatus::Failed | JobStatus::Cancelled)
    }

    /// The status as written in JSON.
    pub fn name(self) -> &'static str {
        match self {
            JobStatus::Queued => "queued",
            JobStatus::Running => "running",
            JobStatus::Succeeded => "succeeded",
            JobStatus::Failed => "failed",
            JobStatus::Cancelled => "cancelled",
        }
    }
}

/// A task's status. `assigned` (the store's name) is accepted for `running`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TaskStatus {
    /// Waiting for a worker (or for its retry backoff).
    Pending,
    /// Granted to a worker.
    #[serde(alias = "assigned")]
    Running,
    /// Committed a result.
    Succeeded,
    /// Out of attempts, or failed for good.
    Dead,
    /// Cancelled with its job.
    Cancelled,
}

impl TaskStatus {
    /// Whether the task can no longer change.
    pub fn is_terminal(self) -> bool {
        matches!(self, TaskStatus::Succeeded | TaskStatus::Dead | TaskStatus::Cancelled)
    }

    /// The status as written in JSON.
    pub fn name(self) -> &'static str {
        match self {
            TaskStatus::Pending => "pending",
            TaskStatus::Running => "running",
            TaskStatus::Succeeded => "succeeded",
            TaskStatus::Dead => "dead",
            TaskStatus::Cancelled => "cancelled",
        }
    }
}

/// A replica's state hash at an applied log index.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Replica {
    /// The node's Raft id.
    pub node: u64,
    /// The log index the hash was taken at.
    pub applied_index: u64,
    /// Hex string; compared byte for byte.
    pub state_hash: String,
}

macro_rules! into_body {
    ($($ty:ident => $variant:ident),* $(,)?) => {
        $(impl From<$ty> for Body {
            fn from(v: $ty) -> Self {
                Body::$variant(v)
            }
        })*
    };
}

into_body!(
    SubmitInvoke => SubmitInvoke,
    SubmitOk => SubmitOk,
    ReadInvoke => ReadInvoke,
    ReadOk => ReadOk,
    Assign => Assign,
    CompleteInvoke => CompleteInvoke,
    Nemesis => Nemesis,
    RunConfig => Config,
    LeaderSeen => Leader,
    FinalState => FinalState,
    Replica => Replica,
    WorkflowSubmitInvoke => WorkflowSubmitInvoke,
    WorkflowSubmitOk => WorkflowSubmitOk,
    WorkflowCancel => WorkflowCancel,
    ScheduleCreate => ScheduleCreate,
    SchedulePause => SchedulePause,
    EventPublish => EventPublish,
);

/// A whole history, in `seq` order.
///
/// Recorders append with [`History::push`] (or the typed helpers), which
/// assigns the next `seq`; a history can only ever hold strictly increasing
/// seqs, so the checker never has to re-sort.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct History {
    events: Vec<Event>,
}

impl History {
    /// An empty history.
    pub fn new() -> Self {
        Self::default()
    }

    /// Build a history from events already carrying their seqs.
    pub fn from_events(events: Vec<Event>) -> Result<Self, Error> {
        let mut h = History::new();
        for (i, ev) in events.into_iter().enumerate() {
            h.push_event(ev, i + 1)?;
        }
        Ok(h)
    }

    /// The events, in seq order.
    pub fn events(&self) -> &[Event] {
        &self.events
    }

    /// Consume the history, returning its events (e.g. to edit and rebuild).
    pub fn into_events(self) -> Vec<Event> {
        self.events
    }

    /// The number of events.
    pub fn len(&self) -> usize {
        self.events.len()
    }

    /// Whether there are no events.
    pub fn is_empty(&self) -> bool {
        self.events.is_empty()
    }

    /// The seq the next [`push`](History::push) will use. Seqs start at 1.
    pub fn next_seq(&self) -> u64 {
        self.events.last().map_or(1, |e| e.seq + 1)
    }

    /// Append an event at time `t`; returns its seq.
    pub fn push(&mut self, t: u64, body: impl Into<Body>) -> u64 {
        let seq = self.next_seq();
        self.events.push(Event { seq, t, body: body.into() });
        seq
    }

    /// Append an event that already has a seq; it must exceed the last one.
    /// `position` (1-based) only goes into the error message.
    fn push_event(&mut self, ev: Event, position: usize) -> Result<(), Error> {
        if let Some(last) = self.events.last()
            && ev.seq <= last.seq
        {
            return Err(Error::SeqOrder { position, seq: ev.seq, prev: last.seq });
        }
        self.events.push(ev);
        Ok(())
    }

    /// Record a `submit_invoke`; returns its seq.
    pub fn submit_invoke(&mut self, t: u64, client: &str, op: u64, key: &str, shards: u32) -> u64 {
        self.push(t, SubmitInvoke { client: client.into(), op, key: key.into(), shards })
    }

    /// Record a `submit_ok`; returns its seq.
    pub fn submit_ok(&mut self, t: u64, client: &str, op: u64, job: JobId) -> u64 {
        self.push(t, SubmitOk { client: client.into(), op, job })
    }

    /// Record a `submit_fail`; returns its seq.
    pub fn submit_fail(&mut self, t: u64, client: &str, op: u64, error: &str) -> u64 {
        self.push(t, Body::SubmitFail(OpFailure { client: client.into(), op, error: error.into() }))
    }

    /// Record a `submit_info`; returns its seq.
    pub fn submit_info(&mut self, t: u64, client: &str, op: u64, error: &str) -> u64 {
        self.push(t, Body::SubmitInfo(OpFailure { client: client.into(), op, error: error.into() }))
    }

    /// Record an `assign`; returns its seq.
    pub fn assign(&mut self, t: u64, worker: &str, task: TaskKey, token: Token) -> u64 {
        self.assign_step(t, worker, task, token, None)
    }

    /// Record an `assign` of a job a workflow step started; returns its seq.
    pub fn assign_step(&mut self, t: u64, worker: &str, task: TaskKey, token: Token, step: Option<StepRef>) -> u64 {
        self.push(t, Assign { worker: worker.into(), job: task.job, shard: task.shard, token, step })
    }

    /// Record a `workflow_submit_invoke`; returns its seq.
    pub fn workflow_submit_invoke(
        &mut self,
        t: u64,
        client: &str,
        op: u64,
        key: &str,
        steps: Vec<WorkflowStepSpec>,
        result_step: Option<String>,
    ) -> u64 {
        self.push(t, WorkflowSubmitInvoke { client: client.into(), op, key: key.into(), steps, result_step })
    }

    /// Record a `workflow_submit_ok`; returns its seq.
    pub fn workflow_submit_ok(&mut self, t: u64, client: &str, op: u64, workflow: WorkflowId) -> u64 {
        self.push(t, WorkflowSubmitOk { client: client.into(), op, workflow })
    }

    /// Record a `workflow_submit_fail`; returns its seq.
    pub fn workflow_submit_fail(&mut self, t: u64, client: &str, op: u64, error: &str) -> u64 {
        self.push(t, Body::WorkflowSubmitFail(OpFailure { client: client.into(), op, error: error.into() }))
    }

    /// Record a `workflow_submit_info`; returns its seq.
    pub fn workflow_submit_info(&mut self, t: u64, client: &str, op: u64, error: &str) -> u64 {
        self.push(t, Body::WorkflowSubmitInfo(OpFailure { client: client.into(), op, error: error.into() }))
    }

    /// Record a `workflow_cancel` request; returns its seq.
    pub fn workflow_cancel(&mut self, t: u64, client: &str, workflow: WorkflowId) -> u64 {
        self.push(t, WorkflowCancel { client: client.into(), workflow })
    }

    /// Record an acknowledged `schedule_create`; returns its seq.
    pub fn schedule_create(&mut self, t: u64, create: ScheduleCreate) -> u64 {
        self.push(t, create)
    }

    /// Record an acknowledged `schedule_pause`; returns its seq.
    pub fn schedule_pause(&mut self, t: u64, client: &str, schedule: ScheduleId) -> u64 {
        self.push(t, SchedulePause { client: client.into(), schedule })
    }

    /// Record an acknowledged `event_publish`; returns its seq.
    pub fn event_publish(&mut self, t: u64, publish: EventPublish) -> u64 {
        self.push(t, publish)
    }

    /// Record a `complete_invoke`; returns its seq.
    pub fn complete_invoke(&mut self, t: u64, worker: &str, op: u64, task: TaskKey, token: Token, result: &str) -> u64 {
        let ev = CompleteInvoke {
            worker: worker.into(),
            op,
            job: task.job,
            shard: task.shard,
            token,
            result: result.into(),
        };
        self.push(t, ev)
    }

    /// Record the reply to a `complete_invoke`, of the kind `outcome` names; returns its seq.
    pub fn complete_reply(&mut self, t: u64, worker: &str, op: u64, outcome: CompleteOutcome, detail: &str) -> u64 {
        self.push(t, outcome.reply(worker, op, detail))
    }

    /// Record a `nemesis` event without targets; returns its seq.
    pub fn nemesis(&mut self, t: u64, name: &str, phase: NemesisPhase, outcome: NemesisOutcome, detail: &str) -> u64 {
        self.nemesis_on(t, name, phase, outcome, Targets::default(), detail)
    }

    /// Record a `nemesis` event that hit `targets`; returns its seq.
    pub fn nemesis_on(
        &mut self,
        t: u64,
        name: &str,
        phase: NemesisPhase,
        outcome: NemesisOutcome,
        targets: Targets,
        detail: &str,
    ) -> u64 {
        self.push(t, Nemesis { name: name.into(), phase, outcome, targets, detail: detail.into() })
    }

    /// Record the run's `config`; returns its seq.
    pub fn config(&mut self, t: u64, config: RunConfig) -> u64 {
        self.push(t, config)
    }

    /// Record a `leader` observation; returns its seq.
    pub fn leader(&mut self, t: u64, node: u64, term: u64) -> u64 {
        self.push(t, LeaderSeen { node, term })
    }

    /// Record the `final_state`; returns its seq.
    pub fn final_state(&mut self, t: u64, state: FinalState) -> u64 {
        self.push(t, state)
    }

    /// Record a `replica` hash; returns its seq.
    pub fn replica(&mut self, t: u64, node: u64, applied_index: u64, state_hash: &str) -> u64 {
        self.push(t, Replica { node, applied_index, state_hash: state_hash.into() })
    }

    /// Read a JSONL history file.
    pub fn read(path: impl AsRef<Path>) -> Result<Self, Error> {
        let path = path.as_ref();
        let file = File::open(path).map_err(|source| Error::Io { path: path.display().to_string(), source })?;
        Self::parse(BufReader::new(file), &path.display().to_string())
    }

    /// Parse JSONL from a reader. `origin` names the input in errors. Blank
    /// lines are skipped; line numbers in errors count them.
    pub fn parse(reader: impl BufRead, origin: &str) -> Result<Self, Error> {
        let mut h = History::new();
        for (i, line) in reader.lines().enumerate() {
            let n = i + 1;
            let line = line.map_err(|source| Error::Io { path: format!("{origin}:{n}"), source })?;
            if line.trim().is_empty() {
                continue;
            }
            let ev: Event = serde_json::from_str(&line).map_err(|e| parse_error(origin, n, &e))?;
            h.push_event(ev, n).map_err(|e| match e {
                Error::SeqOrder { seq, prev, .. } => Error::Parse {
                    origin: origin.to_string(),
                    line: n,
                    column: 1,
                    message: format!("seq {seq} does not follow seq {prev}; seqs must strictly increase"),
                },
                other => other,
            })?;
        }
        Ok(h)
    }

    /// Write the history as JSONL, one event per line.
    pub fn write(&self, path: impl AsRef<Path>) -> Result<(), Error> {
        let path = path.as_ref();
        let io = |source| Error::Io { path: path.display().to_string(), source };
        let mut w = BufWriter::new(File::create(path).map_err(io)?);
        self.write_to(&mut w).map_err(|e| match e {
            Error::Io { source, .. } => io(source),
            other => other,
        })?;
        w.flush().map_err(io)?;
        w.get_ref().sync_all().map_err(io)
    }

    /// Write the history as JSONL to any writer.
    pub fn write_to(&self, w: &mut impl Write) -> Result<(), Error> {
        for ev in &self.events {
            let line = serde_json::to_string(ev).map_err(|e| Error::Encode { seq: ev.seq, message: e.to_string() })?;
            writeln!(w, "{line}").map_err(|source| Error::Io { path: "<writer>".into(), source })?;
        }
        Ok(())
    }
}

/// serde_json reports positions within the one line it saw; keep the column
/// and drop its "line 1", which would contradict the file's line number.
fn parse_error(origin: &str, line: usize, e: &serde_json::Error) -> Error {
    let text = e.to_string();
    let message = match text.rsplit_once(" at line ") {
        Some((msg, _)) if e.line() > 0 => msg.to_string(),
        _ => text,
    };
    Error::Parse { origin: origin.to_string(), line, column: e.column(), message }
}
