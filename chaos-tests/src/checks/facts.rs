//! One pass over the history that pairs invokes with replies and indexes
//! grants, so that each invariant reads prepared facts instead of raw events.

use std::collections::{BTreeMap, HashMap};

use crate::history::{
    Body, CompleteOutcome, CompleteReply, EventPublish, FinalJob, FinalShard, FinalState, History, JobId, JobStatus,
    LeaderSeen, Nemesis, OpFailure, Replica, RunConfig, RunOf, ScheduleCreate, ScheduleId, SchedulePause, StepRef,
    TaskKey, Token, WorkflowCancel, WorkflowId, WorkflowSubmitInvoke,
};

/// How a submit ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SubmitOutcome {
    Ok(JobId),
    Fail,
    Info,
}

/// A submit invoke and its reply, if one was recorded.
#[derive(Debug)]
pub(crate) struct SubmitOp<'a> {
    pub client: &'a str,
    pub op: u64,
    pub key: &'a str,
    pub shards: u32,
    pub invoke_seq: u64,
    pub reply: Option<(u64, SubmitOutcome)>,
}

impl SubmitOp<'_> {
    pub fn acked_job(&self) -> Option<JobId> {
        match self.reply {
            Some((_, SubmitOutcome::Ok(job))) => Some(job),
            _ => None,
        }
    }

    pub fn reply_seq(&self) -> Option<u64> {
        self.reply.map(|(s, _)| s)
    }

    /// `submit c1#3 (key "k", invoked at seq 5)`
    pub fn describe(&self) -> String {
        format!("submit {}#{} (key {:?}, invoked at seq {})", self.client, self.op, self.key, self.invoke_seq)
    }
}

/// A workflow submit invoke and its reply, if one was recorded.
#[derive(Debug)]
pub(crate) struct WorkflowSubmitOp<'a> {
    pub spec: &'a WorkflowSubmitInvoke,
    pub invoke_seq: u64,
    /// (reply seq, the workflow if acknowledged; `None` for fail and info).
    pub reply: Option<(u64, SubmitOutcome)>,
}

impl WorkflowSubmitOp<'_> {
    pub fn acked(&self) -> Option<WorkflowId> {
        match self.reply {
            Some((_, SubmitOutcome::Ok(w))) => Some(w),
            _ => None,
        }
    }

    /// `workflow submit c1#3 (key "k", invoked at seq 5)`
    pub fn describe(&self) -> String {
        format!(
            "workflow submit {}#{} (key {:?}, invoked at seq {})",
            self.spec.client, self.spec.op, self.spec.key, self.invoke_seq
        )
    }
}

impl Invoked for WorkflowSubmitOp<'_> {
    type Outcome = SubmitOutcome;
    fn reply_mut(&mut self) -> &mut Option<(u64, SubmitOutcome)> {
        &mut self.reply
    }
    fn what(&self) -> String {
        self.describe()
    }
}

/// A complete invoke and its reply, if one was recorded.
#[derive(Debug)]
pub(crate) struct CompleteOp<'a> {
    pub worker: &'a str,
    pub op: u64,
    pub task: TaskKey,
    pub token: Token,
    pub result: &'a str,
    pub invoke_seq: u64,
    /// The invoke's `t`.
    pub invoke_t: u64,
    pub reply: Option<(u64, CompleteOutcome)>,
}

impl CompleteOp<'_> {
    pub fn outcome(&self) -> Option<CompleteOutcome> {
        self.reply.map(|(_, o)| o)
    }

    /// A missing reply is as good as `info`: the complete may have applied.
    pub fn may_have_applied(&self) -> bool {
        self.outcome().is_none_or(CompleteOutcome::may_have_applied)
    }

    /// `complete by w1#2 with token 11 (invoked at seq 20)`
    pub fn describe(&self) -> String {
        format!(
            "complete by {}#{} with token {} (invoked at seq {})",
            self.worker, self.op, self.token, self.invoke_seq
        )
    }
}

/// How a status read ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ReadOutcome {
    Found(JobStatus),
    NotFound,
    Fail,
}

/// A read invoke and its reply, if one was recorded.
#[derive(Debug)]
pub(crate) struct ReadOp<'a> {
    pub client: &'a str,
    pub op: u64,
    pub job: JobId,
    pub invoke_seq: u64,
    pub reply: Option<(u64, ReadOutcome)>,
}

impl ReadOp<'_> {
    /// `read c1#4 of job 7 (invoked at seq 30)`
    pub fn describe(&self) -> String {
        format!("read {}#{} of job {} (invoked at seq {})", self.client, self.op, self.job, self.invoke_seq)
    }
}

/// A grant a worker observed.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Grant<'a> {
    pub seq: u64,
    /// The `assign` event's `t`.
    pub t: u64,
    pub worker: &'a str,
    pub token: Token,
    /// The workflow step the worker was told the job belongs to.
    pub step: Option<&'a StepRef>,
}

/// The final state event the checks judge (the last one in the history).
#[derive(Debug, Clone, Copy)]
pub(crate) struct FinalView<'a> {
    pub seq: u64,
    pub t: u64,
    pub state: &'a FinalState,
}

impl<'a> FinalView<'a> {
    /// Every shard record, with its task key.
    pub fn shards(&self) -> impl Iterator<Item = (TaskKey, &'a FinalShard)> + 'a {
        self.state.jobs.iter().flat_map(|j| j.shards.iter().map(move |s| (TaskKey::new(j.id, s.shard), s)))
    }

    /// The first record of `task`, if the final state holds it.
    pub fn shard(&self, task: TaskKey) -> Option<&'a FinalShard> {
        self.state.job(task.job)?.shards.iter().find(|s| s.shard == task.shard)
    }
}

/// An invoked operation that a reply event can answer.
trait Invoked {
    type Outcome;
    fn reply_mut(&mut self) -> &mut Option<(u64, Self::Outcome)>;
    /// How a malformed-history message names the operation.
    fn what(&self) -> String;
}

impl Invoked for SubmitOp<'_> {
    type Outcome = SubmitOutcome;
    fn reply_mut(&mut self) -> &mut Option<(u64, SubmitOutcome)> {
        &mut self.reply
    }
    fn what(&self) -> String {
        self.describe()
    }
}

impl Invoked for ReadOp<'_> {
    type Outcome = ReadOutcome;
    fn reply_mut(&mut self) -> &mut Option<(u64, ReadOutcome)> {
        &mut self.reply
    }
    fn what(&self) -> String {
        self.describe()
    }
}

impl Invoked for CompleteOp<'_> {
    type Outcome = CompleteOutcome;
    fn reply_mut(&mut self) -> &mut Option<(u64, CompleteOutcome)> {
        &mut self.reply
    }
    fn what(&self) -> String {
        format!("{} of {}", self.describe(), self.task)
    }
}

/// Give the op that `open` maps (`process`, `op`) to its reply, or say why
/// the history is malformed: no such invoke, or a second reply.
fn attach<T: Invoked>(
    ops: &mut [T],
    open: &HashMap<(&str, u64), usize>,
    kind: &str,
    process: &str,
    op: u64,
    seq: u64,
    outcome: T::Outcome,
) -> Option<Malformed> {
    let Some(&i) = open.get(&(process, op)) else {
        let message = format!("{kind} reply at seq {seq} answers {process}#{op}, which was never invoked");
        return Some(Malformed { message, seqs: vec![seq] });
    };
    let o = &mut ops[i];
    if let Some((first, _)) = *o.reply_mut() {
        let message = format!("{} has two replies (seqs {first} and {seq})", o.what());
        return Some(Malformed { message, seqs: vec![first, seq] });
    }
    *o.reply_mut() = Some((seq, outcome));
    None
}

/// A problem with the history's own shape, reported by `well_formed`.
#[derive(Debug)]
pub(crate) struct Malformed {
    pub message: String,
    pub seqs: Vec<u64>,
}

/// The digested history.
#[derive(Debug, Default)]
pub(crate) struct Facts<'a> {
    pub submits: Vec<SubmitOp<'a>>,
    pub completes: Vec<CompleteOp<'a>>,
    pub reads: Vec<ReadOp<'a>>,
    /// Grants per task, in seq order.
    pub grants: BTreeMap<TaskKey, Vec<Grant<'a>>>,
    /// Every final_state event; the checks use the last.
    pub finals: Vec<FinalView<'a>>,
    pub replicas: Vec<(u64, &'a Replica)>,
    /// (seq, t, nemesis), in seq order.
    pub nemeses: Vec<(u64, u64, &'a Nemesis)>,
    /// The run's settings: the first `config` event (a second is malformed).
    pub run_config: Option<(u64, &'a RunConfig)>,
    /// (seq, t, leader observed), in seq order.
    pub leaders: Vec<(u64, u64, &'a LeaderSeen)>,
    pub workflow_submits: Vec<WorkflowSubmitOp<'a>>,
    /// (seq, request), in seq order.
    pub workflow_cancels: Vec<(u64, &'a WorkflowCancel)>,
    /// (seq, acknowledged schedule), in seq order; a retried create may
    /// name one schedule more than once.
    pub schedules: Vec<(u64, &'a ScheduleCreate)>,
    /// (seq, acknowledged pause), in seq order.
    pub schedule_pauses: Vec<(u64, &'a SchedulePause)>,
    /// (seq, acknowledged publish), in seq order.
    pub publishes: Vec<(u64, &'a EventPublish)>,
    pub malformed: Vec<Malformed>,
}

impl<'a> Facts<'a> {
    pub fn new(history: &'a History) -> Self {
        let mut f = Facts::default();
        let mut open_submits: HashMap<(&str, u64), usize> = HashMap::new();
        let mut open_completes: HashMap<(&str, u64), usize> = HashMap::new();
        let mut open_reads: HashMap<(&str, u64), usize> = HashMap::new();
        let mut open_workflows: HashMap<(&str, u64), usize> = HashMap::new();
        for ev in history.events() {
            let seq = ev.seq;
            match &ev.body {
                Body::SubmitInvoke(s) => {
                    if let Some(&i) = open_submits.get(&(s.client.as_str(), s.op)) {
                        f.malformed(
                            format!(
                                "client {} reused op id {} (first invoked at seq {})",
                                s.client, s.op, f.submits[i].invoke_seq
                            ),
                            [f.submits[i].invoke_seq, seq],
                        );
                        continue;
                    }
                    open_submits.insert((&s.client, s.op), f.submits.len());
                    f.submits.push(SubmitOp {
                        client: &s.client,
                        op: s.op,
                        key: &s.key,
                        shards: s.shards,
                        invoke_seq: seq,
                        reply: None,
                    });
                }
                Body::SubmitOk(r) => f.submit_reply(&open_submits, &r.client, r.op, seq, SubmitOutcome::Ok(r.job)),
                Body::SubmitFail(OpFailure { client, op, .. }) => {
                    f.submit_reply(&open_submits, client, *op, seq, SubmitOutcome::Fail)
                }
                Body::SubmitInfo(OpFailure { client, op, .. }) => {
                    f.submit_reply(&open_submits, client, *op, seq, SubmitOutcome::Info)
                }
                Body::Assign(a) => f.grants.entry(a.task()).or_default().push(Grant {
                    seq,
                    t: ev.t,
                    worker: &a.worker,
                    token: a.token,
                    step: a.step.as_ref(),
                }),
                Body::CompleteInvoke(c) => {
                    if let Some(&i) = open_completes.get(&(c.worker.as_str(), c.op)) {
                        let first = f.completes[i].invoke_seq;
                        f.malformed(
                            format!("worker {} reused op id {} (first invoked at seq {first})", c.worker, c.op),
                            [first, seq],
                        );
                        continue;
                    }
                    open_completes.insert((&c.worker, c.op), f.completes.len());
                    f.completes.push(CompleteOp {
                        worker: &c.worker,
                        op: c.op,
                        task: c.task(),
                        token: c.token,
                        result: &c.result,
                        invoke_seq: seq,
                        invoke_t: ev.t,
                        reply: None,
                    });
                }
                Body::CompleteOk(r) => f.complete_reply(&open_completes, r, seq, CompleteOutcome::Ok),
                Body::CompleteDuplicate(r) => f.complete_reply(&open_completes, r, seq, CompleteOutcome::Duplicate),
                Body::CompleteFenced(r) => f.complete_reply(&open_completes, r, seq, CompleteOutcome::Fenced),
                Body::CompleteFail(r) => f.complete_reply(&open_completes, r, seq, CompleteOutcome::Fail),
                Body::CompleteInfo(r) => f.complete_reply(&open_completes, r, seq, CompleteOutcome::Info),
                Body::ReadInvoke(r) => {
                    if let Some(&i) = open_reads.get(&(r.client.as_str(), r.op)) {
                        let first = f.reads[i].invoke_seq;
                        f.malformed(
                            format!("client {} reused read op id {} (first invoked at seq {first})", r.client, r.op),
                            [first, seq],
                        );
                        continue;
                    }
                    open_reads.insert((&r.client, r.op), f.reads.len());
                    f.reads.push(ReadOp { client: &r.client, op: r.op, job: r.job, invoke_seq: seq, reply: None });
                }
                Body::ReadOk(r) => f.read_reply(&open_reads, &r.client, r.op, seq, ReadOutcome::Found(r.status)),
                Body::ReadNotFound(r) => f.read_reply(&open_reads, &r.client, r.op, seq, ReadOutcome::NotFound),
                Body::ReadFail(r) => f.read_reply(&open_reads, &r.client, r.op, seq, ReadOutcome::Fail),
                Body::Nemesis(n) => f.nemeses.push((seq, ev.t, n)),
                Body::Config(c) => match f.run_config {
                    None => f.run_config = Some((seq, c)),
                    Some((first, _)) => f.malformed(
                        format!("the run config is recorded twice (seqs {first} and {seq}); a run has one"),
                        [first, seq],
                    ),
                },
                Body::Leader(l) => f.leaders.push((seq, ev.t, l)),
                Body::FinalState(state) => f.finals.push(FinalView { seq, t: ev.t, state }),
                Body::Replica(r) => f.replicas.push((seq, r)),
                Body::WorkflowSubmitInvoke(w) => {
                    if let Some(&i) = open_workflows.get(&(w.client.as_str(), w.op)) {
                        let first = f.workflow_submits[i].invoke_seq;
                        f.malformed(
                            format!(
                                "client {} reused workflow op id {} (first invoked at seq {first})",
                                w.client, w.op
                            ),
                            [first, seq],
                        );
                        continue;
                    }
                    open_workflows.insert((&w.client, w.op), f.workflow_submits.len());
                    f.workflow_submits.push(WorkflowSubmitOp { spec: w, invoke_seq: seq, reply: None });
                }
                Body::WorkflowSubmitOk(r) => {
                    let outcome = SubmitOutcome::Ok(r.workflow);
                    let m = attach(
                        &mut f.workflow_submits,
                        &open_workflows,
                        "workflow submit",
                        &r.client,
                        r.op,
                        seq,
                        outcome,
                    );
                    f.malformed.extend(m);
                }
                Body::WorkflowSubmitFail(OpFailure { client, op, .. }) => {
                    let m = attach(
                        &mut f.workflow_submits,
                        &open_workflows,
                        "workflow submit",
                        client,
                        *op,
                        seq,
                        SubmitOutcome::Fail,
                    );
                    f.malformed.extend(m);
                }
                Body::WorkflowSubmitInfo(OpFailure { client, op, .. }) => {
                    let m = attach(
                        &mut f.workflow_submits,
                        &open_workflows,
                        "workflow submit",
                        client,
                        *op,
                        seq,
                        SubmitOutcome::Info,
                    );
                    f.malformed.extend(m);
                }
                Body::WorkflowCancel(c) => f.workflow_cancels.push((seq, c)),
                Body::ScheduleCreate(c) => f.schedules.push((seq, c)),
                Body::SchedulePause(p) => f.schedule_pauses.push((seq, p)),
                Body::EventPublish(p) => f.publishes.push((seq, p)),
            }
        }
        f
    }

    fn malformed(&mut self, message: String, seqs: impl IntoIterator<Item = u64>) {
        self.malformed.push(Malformed { message, seqs: seqs.into_iter().collect() });
    }

    fn submit_reply(
        &mut self,
        open: &HashMap<(&str, u64), usize>,
        client: &str,
        op: u64,
        seq: u64,
        outcome: SubmitOutcome,
    ) {
        let m = attach(&mut self.submits, open, "submit", client, op, seq, outcome);
        self.malformed.extend(m);
    }

    fn read_reply(
        &mut self,
        open: &HashMap<(&str, u64), usize>,
        client: &str,
        op: u64,
        seq: u64,
        outcome: ReadOutcome,
    ) {
        let m = attach(&mut self.reads, open, "read", client, op, seq, outcome);
        self.malformed.extend(m);
    }

    fn complete_reply(
        &mut self,
        open: &HashMap<(&str, u64), usize>,
        r: &CompleteReply,
        seq: u64,
        outcome: CompleteOutcome,
    ) {
        let m = attach(&mut self.completes, open, "complete", &r.worker, r.op, seq, outcome);
        self.malformed.extend(m);
    }

    /// The final state the checks judge: the last one recorded.
    pub fn final_state(&self) -> Option<FinalView<'a>> {
        self.finals.last().copied()
    }

    /// The grant with the highest token for `task` (the earliest such, on a tie).
    pub fn max_grant(&self, task: TaskKey) -> Option<Grant<'a>> {
        let grants = self.grants.get(&task)?;
        grants.iter().copied().reduce(|best, g| if g.token > best.token { g } else { best })
    }

    /// The first acknowledged create of each schedule, by id.
    pub fn schedules_by_id(&self) -> BTreeMap<ScheduleId, (u64, &'a ScheduleCreate)> {
        let mut out = BTreeMap::new();
        for &(seq, c) in &self.schedules {
            out.entry(c.schedule).or_insert((seq, c));
        }
        out
    }

    /// The runs of each schedule in the final state: (fire time, manual, job),
    /// ordered by fire time, then job id.
    pub fn schedule_runs(fin: &FinalView<'a>) -> BTreeMap<ScheduleId, Vec<(u64, bool, &'a FinalJob)>> {
        let mut out: BTreeMap<ScheduleId, Vec<(u64, bool, &'a FinalJob)>> = BTreeMap::new();
        for j in &fin.state.jobs {
            if let Some(RunOf::Schedule { schedule, fire_ms, manual }) = &j.run_of {
                out.entry(*schedule).or_default().push((*fire_ms, *manual, j));
            }
        }
        for runs in out.values_mut() {
            runs.sort_by_key(|(fire, _, j)| (*fire, j.id));
        }
        out
    }

    /// Completes of `task`, in invoke order.
    pub fn completes_of(&self, task: TaskKey) -> impl Iterator<Item = &CompleteOp<'a>> {
        self.completes.iter().filter(move |c| c.task == task)
    }
}
