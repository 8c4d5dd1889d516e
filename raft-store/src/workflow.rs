//! Workflows: DAGs of steps, each a sharded job (optionally followed by a
//! reduce, or preceded by a generator that emits the shards) or a gate that
//! waits for approval. This module holds the spec a submitter sends, its
//! validation (cycle detection included), the durable records, and the pure
//! rules apply() uses to move steps along. Nothing here does IO or reads a
//! clock; `core.rs` calls these functions from the entry that finishes a step.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_bytes::ByteBuf;

use crate::codec;
use crate::command::{
    COMMAND_TAG_BYTES, CommandError, JobSpec, check_bytes, check_count, check_idempotency_key, check_labels,
    check_name, invalid,
};
use crate::ids::{JobId, WorkflowId};
use crate::limits::*;

/// When a step may run, judged on the outcomes of the steps it depends on.
/// Every rule waits until all predecessors have finished (succeeded, failed,
/// skipped or cancelled); it then either readies the step or skips it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum TriggerRule {
    /// Every predecessor succeeded (the default).
    #[default]
    AllSucceeded,
    /// At least one predecessor succeeded.
    AnySucceeded,
    /// Whatever the outcomes: clean-up steps.
    AllDone,
    /// At least one predecessor failed: compensation steps.
    AnyFailed,
    /// None failed and at least one succeeded: the join after a choice,
    /// where the branches not taken are skipped.
    NoneFailed,
}

impl TriggerRule {
    pub fn name(self) -> &'static str {
        match self {
            TriggerRule::AllSucceeded => "all_succeeded",
            TriggerRule::AnySucceeded => "any_succeeded",
            TriggerRule::AllDone => "all_done",
            TriggerRule::AnyFailed => "any_failed",
            TriggerRule::NoneFailed => "none_failed",
        }
    }

    pub fn parse(s: &str) -> Option<TriggerRule> {
        [
            TriggerRule::AllSucceeded,
            TriggerRule::AnySucceeded,
            TriggerRule::AllDone,
            TriggerRule::AnyFailed,
            TriggerRule::NoneFailed,
        ]
        .into_iter()
        .find(|r| r.name() == s)
    }
}

/// What a gate does when its timeout passes without a decision.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum GateTimeout {
    /// The gate fails (the default): an unanswered approval is a refusal.
    #[default]
    Reject,
    Approve,
}

/// The reduce that follows a step's map.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReduceSpec {
    /// Handed to the reduce task as its payload (its input is the map's
    /// shard results, read through the SDK, never copied into this).
    pub payload: ByteBuf,
}

/// What a step does.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum StepKind {
    /// Run a sharded job. `job.namespace` must be empty or the workflow's;
    /// `job.idempotency_key` must be unset (the workflow's key covers it).
    Job {
        job: JobSpec,
        /// One reduce task after every shard has succeeded.
        reduce: Option<ReduceSpec>,
        /// The step's result names the successors to run ([`parse_choice`]).
        choice: bool,
        /// Dynamic map: `job` has one shard, a generator whose result lists
        /// the payloads of the shards to run ([`decode_children`]).
        dynamic: bool,
    },
    /// Run nothing: wait for ApproveStep or RejectStep, for a matching
    /// published event (when `event` is set), or for the timeout.
    Gate { timeout_ms: Option<u64>, on_timeout: GateTimeout, event: Option<GateEvent> },
}

/// The event an event gate waits for: the first event published, while the
/// gate waits, on `topic` in the workflow's namespace whose attributes hold
/// every `filter` pair approves it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct GateEvent {
    pub topic: String,
    pub filter: BTreeMap<String, String>,
}

impl GateEvent {
    pub fn matches(&self, topic: &str, attributes: &BTreeMap<String, String>) -> bool {
        self.topic == topic && self.filter.iter().all(|(k, v)| attributes.get(k) == Some(v))
    }
}

/// One step of a workflow.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StepSpec {
    /// Unique within the workflow; how other steps and results refer to it.
    pub name: String,
    pub depends_on: Vec<String>,
    pub trigger: TriggerRule,
    pub kind: StepKind,
}

/// Everything a submitter says about a workflow.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WorkflowSpec {
    pub namespace: String,
    pub name: String,
    pub labels: BTreeMap<String, String>,
    /// Resubmitting with the same key within the dedup window returns the
    /// same workflow.
    pub idempotency_key: Option<String>,
    pub steps: Vec<StepSpec>,
    /// The step whose result is the workflow's result. It must have a reduce
    /// or exactly one shard, so its result is one value.
    pub result_step: Option<String>,
}

impl WorkflowSpec {
    /// Stateless checks: names, limits, the graph (unknown dependencies,
    /// cycles, depth), and each step's job spec. The returned [`Graph`] is
    /// the validated shape, with steps by index.
    pub fn validate(&self) -> Result<Graph, CommandError> {
        check_name("namespace", &self.namespace, false)?;
        check_name("name", &self.name, true)?;
        check_labels("labels", &self.labels)?;
        if let Some(key) = &self.idempotency_key {
            check_idempotency_key(key)?;
        }
        check_count("steps", self.steps.len(), 1, MAX_STEPS_PER_WORKFLOW)?;
        let mut index = BTreeMap::new();
        for (i, s) in self.steps.iter().enumerate() {
            check_name(&format!("steps[{i}].name"), &s.name, false)?;
            if index.insert(s.name.as_str(), i as u32).is_some() {
                return Err(invalid(&format!("steps[{i}].name"), format!("step {:?} is defined twice", s.name)));
            }
        }
        let n = self.steps.len();
        let mut preds = vec![Vec::new(); n];
        let mut succs = vec![Vec::new(); n];
        let mut edges = 0usize;
        for (i, s) in self.steps.iter().enumerate() {
            let field = format!("steps[{i}]");
            for d in &s.depends_on {
                let Some(&p) = index.get(d.as_str()) else {
                    return Err(invalid(&format!("{field}.depends_on"), format!("no step is named {d:?}")));
                };
                if p as usize == i {
                    return Err(invalid(&format!("{field}.depends_on"), format!("cycle: {d} -> {d}")));
                }
                if preds[i].contains(&p) {
                    return Err(invalid(&format!("{field}.depends_on"), format!("{d:?} is listed twice")));
                }
                preds[i].push(p);
                succs[p as usize].push(i as u32);
                edges += 1;
            }
            if s.trigger != TriggerRule::AllSucceeded && s.depends_on.is_empty() {
                return Err(invalid(
                    &format!("{field}.trigger"),
                    format!("{} needs predecessors; {:?} has none", s.trigger.name(), s.name),
                ));
            }
            self.validate_kind(&field, &s.kind)?;
        }
        if edges > MAX_EDGES_PER_WORKFLOW {
            return Err(invalid(
                "steps[*].depends_on",
                format!("has {edges} dependency edges in all; at most {MAX_EDGES_PER_WORKFLOW} edges"),
            ));
        }
        preds.iter_mut().for_each(|p| p.sort_unstable());
        succs.iter_mut().for_each(|p| p.sort_unstable());
        let graph = Graph { preds, succs };
        let depth = graph.depth().map_err(|cycle| {
            let names: Vec<&str> = cycle.iter().map(|&i| self.steps[i as usize].name.as_str()).collect();
            invalid("steps", format!("cycle: {}", names.join(" -> ")))
        })?;
        if depth > MAX_WORKFLOW_DEPTH {
            return Err(invalid("steps", format!("the longest chain has {depth} steps; at most {MAX_WORKFLOW_DEPTH}")));
        }
        for (i, s) in self.steps.iter().enumerate() {
            if let StepKind::Job { choice: true, .. } = s.kind
                && graph.succs[i].is_empty()
            {
                return Err(invalid(
                    &format!("steps[{i}].choice"),
                    format!("choice step {:?} has no successors", s.name),
                ));
            }
        }
        if let Some(r) = &self.result_step {
            let Some(&i) = index.get(r.as_str()) else {
                return Err(invalid("result_step", format!("no step is named {r:?}")));
            };
            match &self.steps[i as usize].kind {
                StepKind::Job { reduce: Some(_), .. } => {}
                StepKind::Job { job, dynamic: false, .. } if job.payloads.len() == 1 => {}
                _ => {
                    return Err(invalid(
                        "result_step",
                        format!(
                            "step {r:?} must have a reduce or exactly one shard (and not be a dynamic map or gate)"
                        ),
                    ));
                }
            }
        }
        let total: usize = self
            .steps
            .iter()
            .map(|s| match &s.kind {
                StepKind::Job { job, reduce, .. } => {
                    job.payloads.iter().map(|p| p.len()).sum::<usize>() + reduce.as_ref().map_or(0, |r| r.payload.len())
                }
                StepKind::Gate { .. } => 0,
            })
            .sum();
        check_bytes("payloads", total, MAX_JOB_PAYLOAD_BYTES)?;
        let encoded = codec::encoded_len(self).map_err(|e| invalid("spec", e.to_string()))? + COMMAND_TAG_BYTES;
        if encoded > MAX_ENTRY_BYTES {
            return Err(invalid(
                "steps",
                format!("the workflow encodes to {encoded} bytes, over the {MAX_ENTRY_BYTES}-byte entry limit"),
            ));
        }
        Ok(graph)
    }

    fn validate_kind(&self, field: &str, kind: &StepKind) -> Result<(), CommandError> {
        match kind {
            StepKind::Job { job, reduce, choice, dynamic } => {
                if !job.namespace.is_empty() && job.namespace != self.namespace {
                    return Err(invalid(
                        &format!("{field}.namespace"),
                        format!("{:?} differs from the workflow's {:?}", job.namespace, self.namespace),
                    ));
                }
                if job.idempotency_key.is_some() {
                    return Err(invalid(
                        &format!("{field}.idempotency_key"),
                        "steps take the workflow's idempotency key; leave it unset".into(),
                    ));
                }
                let mut job = job.clone();
                job.namespace = self.namespace.clone();
                job.validate().map_err(|e| match e {
                    CommandError::Invalid { field: f, reason } => invalid(&format!("{field}.{f}"), reason),
                    e => e,
                })?;
                if *dynamic && job.payloads.len() != 1 {
                    return Err(invalid(
                        &format!("{field}.payloads"),
                        "a dynamic map has exactly one shard: the generator that emits the others".into(),
                    ));
                }
                if *choice && reduce.is_none() && (job.payloads.len() != 1 || *dynamic) {
                    return Err(invalid(
                        &format!("{field}.choice"),
                        "a choice step needs one shard or a reduce, so that its result is one value".into(),
                    ));
                }
                if let Some(r) = reduce {
                    check_bytes(&format!("{field}.reduce.payload"), r.payload.len(), MAX_PAYLOAD_BYTES)?;
                }
                Ok(())
            }
            StepKind::Gate { timeout_ms, event, .. } => {
                if let Some(t) = timeout_ms
                    && (*t == 0 || *t > MAX_GATE_TIMEOUT_MS)
                {
                    return Err(invalid(&format!("{field}.timeout_ms"), format!("must be 1..={MAX_GATE_TIMEOUT_MS}")));
                }
                if let Some(e) = event {
                    check_name(&format!("{field}.event.topic"), &e.topic, false)?;
                    check_bytes(&format!("{field}.event.topic"), e.topic.len(), MAX_TOPIC_BYTES)?;
                    check_labels(&format!("{field}.event.filter"), &e.filter)?;
                }
                Ok(())
            }
        }
    }

    /// Total shards the workflow can create up front (dynamic children and
    /// reduces excluded): what SubmitWorkflow reserves against
    /// [`MAX_LIVE_TASKS`].
    pub fn static_shards(&self) -> u64 {
        self.steps
            .iter()
            .map(|s| match &s.kind {
                StepKind::Job { job, .. } => job.payloads.len() as u64,
                StepKind::Gate { .. } => 0,
            })
            .sum()
    }
}

/// The validated shape of a workflow: steps by index, in submission order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Graph {
    /// Predecessors of each step, ascending.
    pub preds: Vec<Vec<u32>>,
    /// Successors of each step, ascending.
    pub succs: Vec<Vec<u32>>,
}

impl Graph {
    /// The number of steps on the longest chain, or a cycle (as step indexes,
    /// first repeated last) if there is one. Iterative, so a deep graph
    /// cannot overflow the stack.
    pub fn depth(&self) -> Result<usize, Vec<u32>> {
        #[derive(Clone, Copy, PartialEq)]
        enum Mark {
            New,
            OnPath,
            Done,
        }
        let n = self.preds.len();
        let mut mark = vec![Mark::New; n];
        let mut depth = vec![0usize; n];
        for root in 0..n {
            if mark[root] != Mark::New {
                continue;
            }
            // (node, next successor position)
            let mut path: Vec<(usize, usize)> = vec![(root, 0)];
            mark[root] = Mark::OnPath;
            while let Some(&mut (node, ref mut pos)) = path.last_mut() {
                if let Some(&next) = self.succs[node].get(*pos) {
                    *pos += 1;
                    let next = next as usize;
                    match mark[next] {
                        Mark::New => {
                            mark[next] = Mark::OnPath;
                            path.push((next, 0));
                        }
                        Mark::OnPath => {
                            let start = path.iter().position(|(p, _)| *p == next).unwrap_or(0);
                            let mut cycle: Vec<u32> = path[start..].iter().map(|(p, _)| *p as u32).collect();
                            cycle.push(next as u32);
                            return Err(cycle);
                        }
                        Mark::Done => {}
                    }
                } else {
                    depth[node] = 1 + self.succs[node].iter().map(|&s| depth[s as usize]).max().unwrap_or(0);
                    mark[node] = Mark::Done;
                    path.pop();
                }
            }
        }
        Ok(depth.into_iter().max().unwrap_or(0))
    }
}

/// Where a step is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum StepState {
    /// Some predecessor has not finished.
    Waiting,
    /// Its generator, map or reduce job runs (see [`StepRecord::phase`]).
    Running,
    /// A gate waiting for a decision; `deadline_ms` is the log time of its timeout.
    AwaitingApproval {
        deadline_ms: Option<u64>,
    },
    Succeeded,
    Failed,
    /// Its trigger rule can no longer be met, or a choice did not take it.
    Skipped,
    Cancelled,
}

impl StepState {
    pub fn is_terminal(&self) -> bool {
        matches!(self, StepState::Succeeded | StepState::Failed | StepState::Skipped | StepState::Cancelled)
    }

    pub fn name(&self) -> &'static str {
        match self {
            StepState::Waiting => "waiting",
            StepState::Running => "running",
            StepState::AwaitingApproval { .. } => "awaiting_approval",
            StepState::Succeeded => "succeeded",
            StepState::Failed => "failed",
            StepState::Skipped => "skipped",
            StepState::Cancelled => "cancelled",
        }
    }
}

/// Which of a step's jobs a job is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub enum StepRole {
    /// The one-shard generator of a dynamic map.
    Generate,
    /// The step's sharded job (for a dynamic map: the emitted shards).
    Map,
    /// The reduce after the map.
    Reduce,
}

impl StepRole {
    pub fn name(self) -> &'static str {
        match self {
            StepRole::Generate => "generate",
            StepRole::Map => "map",
            StepRole::Reduce => "reduce",
        }
    }
}

/// A predecessor's output, as a task handler sees it: the job whose shard
/// results are that step's result (its reduce if it has one).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StepInput {
    pub step: String,
    pub job: JobId,
    pub shards: u32,
}

/// Set on every job a workflow starts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobOrigin {
    pub workflow: WorkflowId,
    /// Index of the step in the workflow.
    pub step: u32,
    pub step_name: String,
    pub role: StepRole,
    /// Succeeded predecessors' outputs, in step order.
    pub inputs: Vec<StepInput>,
    /// For a reduce: the map job whose shard results are its input (`None`
    /// when a dynamic map emitted no shards).
    pub reduce_of: Option<JobId>,
}

/// What a job step needs until it finishes, stored apart from the workflow
/// record (Table::StepSpec) so the record stays small: the job spec whose
/// policies its jobs share, and the reduce payload. The shard payloads are
/// dropped once the map job holds them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StepTemplate {
    pub job: JobSpec,
    pub reduce: Option<ReduceSpec>,
}

/// Summary of a step's kind kept in the workflow record (no payloads).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum StepShape {
    Job { shards: u32, reduce: bool, choice: bool, dynamic: bool },
    Gate { timeout_ms: Option<u64>, on_timeout: GateTimeout, event: Option<GateEvent> },
}

/// One step's durable state, inside its [`WorkflowRecord`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StepRecord {
    pub name: String,
    pub preds: Vec<u32>,
    pub succs: Vec<u32>,
    pub trigger: TriggerRule,
    pub shape: StepShape,
    pub state: StepState,
    /// The job that runs now or ran last.
    pub phase: Option<StepRole>,
    pub generate_job: Option<JobId>,
    pub map_job: Option<JobId>,
    pub reduce_job: Option<JobId>,
    /// For a choice step that succeeded: the successors it chose, by index.
    pub chosen: Option<Vec<u32>>,
    /// Why it failed, was skipped or cancelled, or who decided a gate.
    pub reason: Option<String>,
    pub started_ms: Option<u64>,
    pub finished_ms: Option<u64>,
}

impl StepRecord {
    /// The job whose shard results are this step's output: the reduce if
    /// there is one, else the map. Gates have none.
    pub fn output_job(&self) -> Option<JobId> {
        self.reduce_job.or(self.map_job)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum WorkflowStatus {
    /// Some step has not finished.
    Running,
    /// Every step finished and none failed.
    Succeeded,
    /// Every step finished and at least one failed.
    Failed,
    Cancelled,
}

impl WorkflowStatus {
    pub fn is_terminal(self) -> bool {
        !matches!(self, WorkflowStatus::Running)
    }

    pub fn name(self) -> &'static str {
        match self {
            WorkflowStatus::Running => "running",
            WorkflowStatus::Succeeded => "succeeded",
            WorkflowStatus::Failed => "failed",
            WorkflowStatus::Cancelled => "cancelled",
        }
    }
}

/// A workflow's durable record: its graph and every step's state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WorkflowRecord {
    pub id: WorkflowId,
    pub namespace: String,
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub idempotency_key: Option<String>,
    pub spec_hash: [u8; 32],
    pub created_ms: u64,
    pub status: WorkflowStatus,
    pub cancel_reason: Option<String>,
    pub finished_ms: Option<u64>,
    pub result_step: Option<u32>,
    pub steps: Vec<StepRecord>,
    /// When the collector deletes this finished workflow (its finish time
    /// plus its namespace's retention then), and with it its jobs.
    pub expires_ms: Option<u64>,
    /// The schedule fire that started this workflow, if any.
    pub run_of: Option<crate::schedule::RunOrigin>,
}

/// What a step's predecessors' outcomes say about it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Readiness {
    /// Some predecessor has not finished.
    Wait,
    Run,
    Skip,
}

/// How one predecessor ended, as its successor sees it: a choice step that
/// did not choose this successor counts as skipped on that edge.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EdgeOutcome {
    Pending,
    Succeeded,
    Failed,
    Skipped,
}

/// Apply a trigger rule to the outcomes of a step's incoming edges.
pub fn readiness(rule: TriggerRule, edges: &[EdgeOutcome]) -> Readiness {
    use EdgeOutcome::*;
    if edges.contains(&Pending) {
        return Readiness::Wait;
    }
    let count = |o: EdgeOutcome| edges.iter().filter(|e| **e == o).count();
    let (ok, failed) = (count(Succeeded), count(Failed));
    let run = match rule {
        TriggerRule::AllSucceeded => ok == edges.len(),
        TriggerRule::AnySucceeded => ok > 0,
        TriggerRule::AllDone => true,
        TriggerRule::AnyFailed => failed > 0,
        TriggerRule::NoneFailed => failed == 0 && ok > 0,
    };
    if run { Readiness::Run } else { Readiness::Skip }
}

/// The branches a choice step's result names: a JSON array of step names,
/// e.g. `["fast_path"]`. Each must be a successor of the step.
pub fn parse_choice(result: &[u8]) -> Result<Vec<String>, String> {
    serde_json::from_slice::<Vec<String>>(result).map_err(|e| {
        let shown = String::from_utf8_lossy(&result[..result.len().min(64)]).into_owned();
        format!("a choice result must be a JSON array of step names, like [\"a\"]; got {shown:?} ({e})")
    })
}

/// Magic prefix of a dynamic map generator's result.
pub const CHILDREN_MAGIC: &[u8; 4] = b"BTNC";

/// Encode child payloads as a generator's result: `BTNC`, a u32 BE count,
/// then each payload as a u32 BE length and its bytes. The SDKs call this.
pub fn encode_children(children: &[Vec<u8>]) -> Vec<u8> {
    let mut out = Vec::with_capacity(8 + children.iter().map(|c| 4 + c.len()).sum::<usize>());
    out.extend_from_slice(CHILDREN_MAGIC);
    out.extend_from_slice(&(children.len() as u32).to_be_bytes());
    for c in children {
        out.extend_from_slice(&(c.len() as u32).to_be_bytes());
        out.extend_from_slice(c);
    }
    out
}

/// Decode a generator's result into child payloads; the error says what is
/// wrong (and fails the step). At most [`MAX_DYNAMIC_CHILDREN`] children.
pub fn decode_children(result: &[u8]) -> Result<Vec<ByteBuf>, String> {
    let rest = result
        .strip_prefix(CHILDREN_MAGIC.as_slice())
        .ok_or("a dynamic map generator must return its children encoded by encode_children (no BTNC prefix)")?;
    let take_u32 = |b: &[u8]| -> Option<(u32, usize)> { Some((u32::from_be_bytes(b.get(..4)?.try_into().ok()?), 4)) };
    let (count, _) = take_u32(rest).ok_or("truncated child count")?;
    if count as usize > MAX_DYNAMIC_CHILDREN {
        return Err(format!("{count} children; a dynamic map emits at most {MAX_DYNAMIC_CHILDREN}"));
    }
    let mut pos = 4;
    let mut out = Vec::with_capacity(count as usize);
    for i in 0..count {
        let (len, _) = take_u32(&rest[pos..]).ok_or_else(|| format!("truncated length of child {i}"))?;
        pos += 4;
        let end = pos.checked_add(len as usize).filter(|e| *e <= rest.len());
        let end = end.ok_or_else(|| format!("child {i} runs past the end of the result"))?;
        out.push(ByteBuf::from(rest[pos..end].to_vec()));
        pos = end;
    }
    if pos != rest.len() {
        return Err(format!("{} bytes after the last child", rest.len() - pos));
    }
    Ok(out)
}

#[cfg(test)]
#[path = "workflow_tests.rs"]
mod tests;
