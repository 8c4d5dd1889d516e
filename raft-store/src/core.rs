//! The deterministic core of the state machine.
//!
//! [`Core::apply_entry`] is the only code that changes the task table. It reads
//! durable records through a [`Kv`] (RocksDB in production, [`MemKv`](crate::kv::MemKv) in tests
//! and simulation), keeps every change in an in-memory overlay until the caller
//! takes them with [`Core::take_writes`], and maintains the in-memory
//! [`Indexes`] the scheduler reads.
//!
//! Determinism rules: no clock (time comes from the entry), no randomness, no
//! iteration over hash maps, and a command either succeeds or changes nothing
//! (every handler validates fully before its first mutation).

use std::collections::{BTreeMap, BTreeSet};
use std::ops::Bound;

use openraft::EntryPayload;
use serde::{Deserialize, Serialize};
use serde_bytes::ByteBuf;

use crate::codec;
use crate::command::*;
use crate::error::StoreError;
use crate::indexes::{Indexes, PendingTask, index_insert, index_remove, usage_move};
use crate::keys::{self, IdemKey, Table};
use crate::kv::{Kv, decode_at, load};
use crate::lifecycle::{GcTarget, LogChunk, LogRecord, NamespaceRecord};
use crate::limits::*;
use crate::schedule::*;
use crate::task::*;
use crate::types::*;
use crate::workflow::*;

/// Replicated counters and Raft bookkeeping, stored under the meta key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Meta {
    pub last_applied: Option<LogId>,
    pub membership: StoredMembership,
    pub next_job: JobId,
    pub next_session: SessionId,
    pub next_workflow: WorkflowId,
    pub next_schedule: ScheduleId,
    pub next_trigger: TriggerId,
    /// Logical time: the max `proposed_at_ms` applied so far. Never goes back,
    /// even if a new leader's clock is behind the old one's.
    pub clock_ms: u64,
    /// The collector's place inside a target that spans entries.
    pub gc: Option<crate::lifecycle::GcProgress>,
}

impl Default for Meta {
    fn default() -> Self {
        Self {
            last_applied: None,
            membership: StoredMembership::default(),
            next_job: 1,
            next_session: 1,
            next_workflow: 1,
            next_schedule: 1,
            next_trigger: 1,
            clock_ms: 0,
            gc: None,
        }
    }
}

/// The latest incarnation of a worker name.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NameRecord {
    pub epoch: u64,
    pub session: SessionId,
}

/// An idempotency key's job (or workflow, or an event's first job).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IdemRecord {
    pub job: JobId,
    /// Log time until which the key dedups: the entry's time plus its
    /// namespace's window when the record was written. A later change of
    /// the window leaves it as it is.
    pub expires_ms: u64,
    pub spec_hash: [u8; 32],
}

/// Changes made since the last [`Core::take_writes`]. A `None` value is a
/// delete, and reads through the overlay see it as absent.
#[derive(Debug, Default)]
struct Dirty {
    /// Meta changed (set by every applied entry).
    meta: bool,
    /// `None`: deleted by the collector.
    tasks: BTreeMap<TaskKey, Option<TaskRecord>>,
    /// Jobs whose record changed; the value is in `Indexes::jobs` or `finished`.
    jobs: BTreeSet<JobId>,
    finished: BTreeMap<JobId, JobRecord>,
    /// Jobs the collector deleted, with their last record: take_writes
    /// deletes the record and the index keys its `indexed_status` names.
    gone_jobs: BTreeMap<JobId, JobRecord>,
    /// `None`: delete (the shard succeeded, see `set_task`, or the collector took it).
    payloads: BTreeMap<TaskKey, Option<ByteBuf>>,
    /// `None`: deleted by the collector.
    sessions: BTreeMap<SessionId, Option<SessionRecord>>,
    names: BTreeMap<String, Option<NameRecord>>,
    idem: BTreeMap<IdemKey, Option<IdemRecord>>,
    /// The by-expiry index, by (expires_ms, key); true: put, false: delete.
    idem_expiry: BTreeMap<(u64, IdemKey), bool>,
    /// Workflows whose record changed; the value is in `Indexes::workflows`
    /// or `finished_workflows`.
    workflows: BTreeSet<WorkflowId>,
    finished_workflows: BTreeMap<WorkflowId, WorkflowRecord>,
    /// `None`: delete (the step started, or never will).
    step_specs: BTreeMap<(WorkflowId, u32), Option<StepTemplate>>,
    /// Workflows the collector deleted.
    gone_workflows: BTreeSet<WorkflowId>,
    /// Task logs by (task, token); `None`: deleted by the collector.
    logs: BTreeMap<(TaskKey, Token), Option<LogRecord>>,
    /// Namespaces whose settings changed; the value is in
    /// `Indexes::namespaces`, or the record is deleted when absent there.
    namespaces: BTreeSet<String>,
    /// Schedules whose record changed; the value is in `Indexes::schedules`,
    /// or the record is deleted when absent there.
    schedules: BTreeSet<ScheduleId>,
    /// Likewise for triggers and `Indexes::triggers`.
    triggers: BTreeSet<TriggerId>,
    /// Run templates of schedules and triggers; `None`: delete.
    templates: BTreeMap<TemplateOwner, Option<Template>>,
}

/// An internal failure: a refused command, or a storage error that stops the node.
enum Fail {
    Reject(CommandError),
    Store(StoreError),
}

impl From<CommandError> for Fail {
    fn from(e: CommandError) -> Self {
        Fail::Reject(e)
    }
}

impl From<StoreError> for Fail {
    fn from(e: StoreError) -> Self {
        Fail::Store(e)
    }
}

type Res<T> = Result<T, Fail>;

#[derive(Clone, Copy)]
struct Ctx {
    /// Log index of the entry being applied (the token of any grant it makes).
    index: u64,
    /// The entry's logical time (see [`Meta::clock_ms`]).
    now_ms: u64,
}

/// The state machine core.
#[derive(Debug, Default)]
pub struct Core {
    pub meta: Meta,
    pub idx: Indexes,
    dirty: Dirty,
    /// The last idempotency key pruned (expires_ms, key). Every key up to it is
    /// deleted, in `dirty` or already on disk, so pruning resumes after it.
    /// In memory only: after open, pruning restarts from the first key.
    idem_pruned_to: Option<(u64, IdemKey)>,
    /// Keys the collector deleted in the entry being applied, for
    /// `Outcome::Collected`.
    collected: u32,
}

#[path = "core_workflow.rs"]
mod workflow_steps;

#[path = "core_gc.rs"]
mod gc;

#[path = "core_sessions.rs"]
mod sessions;

#[path = "core_idem.rs"]
mod idem;

#[path = "core_quota.rs"]
mod quota_ops;

#[path = "core_lifecycle.rs"]
mod lifecycle_ops;

#[path = "core_schedule.rs"]
mod schedules;

#[path = "core_open.rs"]
mod open;

#[path = "core_writes.rs"]
mod writes;

fn invariant(msg: String) -> Fail {
    Fail::Store(StoreError::Invariant(msg))
}

impl Core {
    /// Apply one log entry. `Err` only for storage failures; a refused command
    /// is `Ok(Response::Rejected)` with state unchanged.
    pub fn apply_entry(&mut self, kv: &dyn Kv, entry: &Entry) -> Result<Response, StoreError> {
        self.meta.last_applied = Some(entry.log_id);
        self.dirty.meta = true;
        match &entry.payload {
            EntryPayload::Blank => Ok(Response::Done(Outcome::Noop)),
            EntryPayload::Membership(m) => {
                self.meta.membership = StoredMembership::new(Some(entry.log_id), m.clone());
                Ok(Response::Done(Outcome::Noop))
            }
            EntryPayload::Normal(p) => {
                let now_ms = self.meta.clock_ms.max(p.proposed_at_ms);
                self.meta.clock_ms = now_ms;
                // The share of background work this entry may do grows with
                // its commands, so deletion keeps pace with creation.
                let commands = p.cmd.work_count();
                self.prune_idempotency(kv, now_ms, idempotency_prune_budget(commands))?;
                self.collected = self.collect_garbage(kv, now_ms, gc_budget(commands))?;
                self.apply_command(kv, Ctx { index: entry.log_id.index, now_ms }, &p.cmd)
            }
        }
    }

    fn apply_command(&mut self, kv: &dyn Kv, ctx: Ctx, cmd: &Command) -> Result<Response, StoreError> {
        if let Err(e) = cmd.validate() {
            return Ok(Response::Rejected(e));
        }
        let r = match cmd {
            Command::Batch(cmds) => {
                let mut out = Vec::with_capacity(cmds.len());
                for c in cmds {
                    out.push(self.apply_command(kv, ctx, c)?);
                }
                return Ok(Response::Batch(out));
            }
            Command::RegisterWorker { name, labels, capacity, namespaces } => {
                self.register_worker(kv, ctx, name, labels, *capacity, namespaces)
            }
            Command::DeregisterWorker { session, epoch } => {
                self.end_session(kv, ctx, *session, *epoch, EndReason::Deregistered)
            }
            Command::ExpireWorker { session, epoch } => self.end_session(kv, ctx, *session, *epoch, EndReason::Expired),
            Command::SubmitJob(spec) => self.submit_job(kv, ctx, spec),
            Command::AssignTasks { assignments } => {
                let mut results = Vec::with_capacity(assignments.len());
                for a in assignments {
                    results.push(match self.assign_one(kv, ctx, a) {
                        Ok(g) => Ok(g),
                        Err(Fail::Reject(e)) => Err(e),
                        Err(Fail::Store(e)) => return Err(e),
                    });
                }
                Ok(Outcome::Assigned(results))
            }
            Command::CompleteTask { task, token, result, logs } => {
                let ev = Event::Complete { token: *token, result };
                self.report_event(kv, ctx, *task, &ev, logs).map(|(step, finished)| Outcome::Completed {
                    task: *task,
                    job_finished: finished,
                    duplicate: step.effect == Effect::Duplicate,
                })
            }
            Command::FailTask { task, token, error, retryable, logs } => {
                let ev = Event::Fail { token: *token, error, retryable: *retryable };
                self.report_event(kv, ctx, *task, &ev, logs).map(|(step, finished)| Outcome::Failed {
                    task: *task,
                    retry_at_ms: match step.next.state {
                        TaskState::Pending { ready_at_ms } => Some(ready_at_ms),
                        _ => None,
                    },
                    job_finished: finished,
                    duplicate: step.effect == Effect::Duplicate,
                })
            }
            Command::ReportProgress { task, token, progress_bp, message } => {
                let ev = Event::Progress { token: *token, progress_bp: *progress_bp, message };
                self.task_event(kv, ctx, *task, &ev).map(|_| Outcome::Progressed { task: *task })
            }
            Command::TimeoutAttempts { attempts } => {
                let mut results = Vec::with_capacity(attempts.len());
                for (task, token) in attempts {
                    results.push(match self.task_event(kv, ctx, *task, &Event::Timeout { token: *token }) {
                        Ok((step, _)) => Ok(released_one(*task, &step.next.state)),
                        Err(Fail::Reject(e)) => Err(e),
                        Err(Fail::Store(e)) => return Err(e),
                    });
                }
                Ok(Outcome::TimedOut(results))
            }
            Command::CancelJob { job, reason } => self.cancel_job(kv, ctx, *job, reason),
            Command::SubmitWorkflow(spec) => self.submit_workflow(kv, ctx, spec),
            Command::CancelWorkflow { workflow, reason } => self.cancel_workflow(kv, ctx, *workflow, reason),
            Command::ResolveGate { workflow, step, approve, by } => {
                self.resolve_gate(kv, ctx, *workflow, step, *approve, by)
            }
            Command::ExpireGates { gates } => {
                let mut results = Vec::with_capacity(gates.len());
                for (wf, step) in gates {
                    results.push(match self.expire_gate(kv, ctx, *wf, *step) {
                        Ok(approved) => Ok(approved),
                        Err(Fail::Reject(e)) => Err(e),
                        Err(Fail::Store(e)) => return Err(e),
                    });
                }
                Ok(Outcome::GatesExpired(results))
            }
            Command::DeleteJob { job } => self.delete_job(kv, ctx, *job),
            Command::RetryJob { job } => self.retry_job(kv, ctx, *job),
            Command::CancelTask { task, reason } => self.cancel_task(kv, ctx, *task, reason),
            Command::PauseJob { job, paused } => self.pause_job(kv, ctx, *job, *paused),
            Command::PauseNamespace { namespace, paused } => self.update_namespace(namespace, |r| r.paused = *paused),
            Command::SetNamespaceRetention { namespace, retention_ms } => {
                self.update_namespace(namespace, |r| r.retention_ms = *retention_ms)
            }
            Command::SetNamespaceIdempotencyWindow { namespace, window_ms } => {
                self.update_namespace(namespace, |r| r.idempotency_window_ms = *window_ms)
            }
            Command::SetNamespaceQuota { namespace, change } => {
                self.update_namespace(namespace, |r| r.quota = change.applied_to(r.quota))
            }
            Command::SetPriority { job, priority } => self.set_priority(kv, ctx, *job, *priority),
            Command::AppendLogs { task, token, lines } => self.append_logs(kv, ctx, *task, *token, lines.clone()),
            // Every normal entry ran the collector before its command.
            Command::CollectGarbage => Ok(Outcome::Collected { keys_deleted: self.collected }),
            Command::CreateSchedule(spec) => self.create_schedule(ctx, spec),
            Command::UpdateSchedule { schedule, spec } => self.update_schedule(ctx, *schedule, spec),
            Command::PauseSchedule { schedule, paused } => self.pause_schedule(ctx, *schedule, *paused),
            Command::DeleteSchedule { schedule } => self.delete_schedule(*schedule),
            Command::RunSchedule { schedule } => self.run_schedule(kv, ctx, *schedule),
            Command::Fire { schedule, fire_ms } => self.fire(kv, ctx, *schedule, *fire_ms),
            Command::CreateTrigger(spec) => self.create_trigger(ctx, spec),
            Command::DeleteTrigger { trigger } => self.delete_trigger(*trigger),
            Command::PublishEvent(ev) => self.publish_event(kv, ctx, ev),
        };
        match r {
            Ok(o) => Ok(Response::Done(o)),
            Err(Fail::Reject(e)) => Ok(Response::Rejected(e)),
            Err(Fail::Store(e)) => Err(e),
        }
    }

    // ---- reads through the overlay -------------------------------------------------

    pub fn task(&self, kv: &dyn Kv, key: TaskKey) -> Result<Option<TaskRecord>, StoreError> {
        match self.dirty.tasks.get(&key) {
            Some(t) => Ok(t.clone()),
            None => load(kv, &keys::task(key)),
        }
    }

    /// A workflow's record, live or finished (until the collector deletes it).
    pub fn workflow(&self, kv: &dyn Kv, id: WorkflowId) -> Result<Option<WorkflowRecord>, StoreError> {
        if let Some(w) = self.idx.workflows.get(&id).or_else(|| self.dirty.finished_workflows.get(&id)) {
            return Ok(Some(w.clone()));
        }
        if self.dirty.gone_workflows.contains(&id) {
            return Ok(None);
        }
        load(kv, &keys::workflow(id))
    }

    /// A job's record, live or finished (deleted ones too, until the
    /// collector takes them: see [`JobRecord::deleted`]).
    pub fn job(&self, kv: &dyn Kv, id: JobId) -> Result<Option<JobRecord>, StoreError> {
        if let Some(j) = self.idx.jobs.get(&id).or_else(|| self.dirty.finished.get(&id)) {
            return Ok(Some(j.clone()));
        }
        if self.dirty.gone_jobs.contains_key(&id) {
            return Ok(None);
        }
        load(kv, &keys::job(id))
    }

    /// A job as commands see it at `now_ms`: `None` once deleted or past its
    /// retention, when the collector may already be taking its records.
    fn retained_job(&self, kv: &dyn Kv, id: JobId, now_ms: u64) -> Result<Option<JobRecord>, StoreError> {
        Ok(self.job(kv, id)?.filter(|j| !j.deleted && j.expires_ms.is_none_or(|e| e > now_ms)))
    }

    /// `f` of the job [`Core::retained_job`] would return, without copying
    /// the record of a live job (the task path asks this once per report).
    fn with_retained_job<R>(
        &self,
        kv: &dyn Kv,
        id: JobId,
        now_ms: u64,
        f: impl FnOnce(&JobRecord) -> R,
    ) -> Result<Option<R>, StoreError> {
        if let Some(j) = self.idx.jobs.get(&id) {
            // Only a finished job is deleted or given an expiry.
            debug_assert!(!j.deleted && j.expires_ms.is_none(), "live job {id} is deleted or expiring");
            return Ok(Some(f(j)));
        }
        Ok(self.retained_job(kv, id, now_ms)?.as_ref().map(f))
    }

    /// A task's log record of the attempt `token`.
    pub fn task_log(&self, kv: &dyn Kv, key: TaskKey, token: Token) -> Result<Option<LogRecord>, StoreError> {
        match self.dirty.logs.get(&(key, token)) {
            Some(l) => Ok(l.clone()),
            None => load(kv, &keys::task_log(key, token)),
        }
    }

    /// When the collector next has work, in log time: now (`clock_ms`) while
    /// a target is half done, else the first queued time. The leader
    /// proposes `CollectGarbage` once it is due and no entry is carrying it.
    pub fn gc_due_ms(&self) -> Option<u64> {
        match &self.meta.gc {
            Some(_) => Some(self.meta.clock_ms),
            None => self.idx.expiry.first().map(|(at, _)| *at),
        }
    }

    // ---- the one place indexes and counts change -----------------------------------

    fn set_task(&mut self, key: TaskKey, old: &TaskState, new: TaskRecord) {
        index_remove(&mut self.idx, key, old);
        index_insert(&mut self.idx, key, &new);
        if let Some(job) = self.idx.jobs.get_mut(&key.job) {
            job.counts.moved(old, &new.state);
            let live = |s: &TaskState| matches!(s, TaskState::Pending { .. } | TaskState::Assigned { .. });
            let delta = i64::from(live(&new.state)) - i64::from(live(old));
            usage_move(&mut self.idx.ns_usage, &job.namespace, delta, 0);
            if matches!(new.state, TaskState::Assigned { .. }) {
                job.started = true;
            }
        }
        // A payload is only read to push an attempt: a succeeded shard never
        // runs again, so its input goes (deleting a shard that had none
        // writes a tombstone, cheaper than reading to find out). Dead and
        // cancelled shards keep theirs for RetryJob; the collector deletes
        // them with the job.
        if matches!(new.state, TaskState::Succeeded { .. }) && !old.is_terminal() {
            self.dirty.payloads.insert(key, None);
        }
        self.dirty.jobs.insert(key.job);
        self.dirty.tasks.insert(key, Some(new));
    }

    /// Move a job out of the live set once no shard is pending or assigned.
    /// A workflow job that finishes moves its step along (see `core_workflow.rs`);
    /// any other is queued for the collector at the end of its retention.
    fn finish_if_done(&mut self, kv: &dyn Kv, ctx: Ctx, job: JobId) -> Res<bool> {
        let done = self.idx.jobs.get(&job).is_some_and(|j| j.counts.live() == 0);
        if done && let Some(mut rec) = self.idx.jobs.remove(&job) {
            usage_move(&mut self.idx.ns_usage, &rec.namespace, 0, -(rec.payload_bytes as i64));
            rec.finished_ms = Some(ctx.now_ms);
            if rec.origin.is_none() {
                let retention = rec.retention_ms.unwrap_or_else(|| self.namespace_retention_ms(&rec.namespace));
                let at = ctx.now_ms.saturating_add(retention);
                rec.expires_ms = Some(at);
                self.idx.expiry.insert((at, GcTarget::Job(job)));
            }
            // No shard is live, so `set_task` already emptied (and dropped) its
            // pending map; should one be left, drop it with its name references.
            if let Some(left) = self.idx.pending.remove(&job) {
                debug_assert!(left.is_empty(), "finished job {job} still has pending shards");
                for name in left.values().filter_map(|p| p.sticky) {
                    self.idx.names.release(name);
                }
            }
            let origin = rec.origin.clone().map(|o| (o, rec.status(), rec.cancel_reason.clone(), rec.counts));
            let run_of = rec.run_of.clone().map(|r| (r, rec.status()));
            self.dirty.jobs.insert(job);
            self.dirty.finished.insert(job, rec);
            if let Some((origin, status, cancel_reason, counts)) = origin {
                self.step_job_finished(kv, ctx, job, &origin, status, cancel_reason, counts)?;
            }
            if let Some((run_of, status)) = run_of {
                let outcome = match status {
                    JobStatus::Succeeded => RunOutcome::Succeeded,
                    JobStatus::Cancelled => RunOutcome::Cancelled,
                    _ => RunOutcome::Failed,
                };
                self.run_finished(kv, ctx, &run_of, RunTarget::Job(job), outcome)?;
            }
        }
        Ok(done)
    }

    // ---- handlers ------------------------------------------------------------------

    fn submit_job(&mut self, kv: &dyn Kv, ctx: Ctx, spec: &JobSpec) -> Res<Outcome> {
        // Against the entry's time, so every replica reaches the same verdict.
        spec.check_not_before(ctx.now_ms)?;
        let encoded = codec::encode(spec).map_err(|source| StoreError::Encode { what: "job spec", source })?;
        let spec_hash = *blake3::hash(&encoded).as_bytes();
        let shards = spec.payloads.len() as u32;
        // Keys are scoped by namespace: a conflict names a job of this one.
        let idem_key = spec.idempotency_key.as_deref().map(|k| IdemKey::new(&spec.namespace, k));
        if let Some(key) = &idem_key
            && let Some(prior) = self.idem_rec(kv, key)?
            && prior.expires_ms > ctx.now_ms
        {
            return if prior.spec_hash == spec_hash {
                Ok(Outcome::Submitted { job: prior.job, shards, duplicate: true })
            } else {
                Err(CommandError::IdempotencyConflict { key: key.key().to_string(), job: prior.job }.into())
            };
        }
        if self.idx.live_tasks + shards as u64 > MAX_LIVE_TASKS {
            return Err(CommandError::LimitReached { what: "live tasks".into(), limit: MAX_LIVE_TASKS }.into());
        }
        self.check_quota(&spec.namespace, shards.into(), quota_ops::payload_bytes(&spec.payloads))?;
        // Validated; mutations start here.
        let id = self.create_job(ctx, spec, &spec.payloads, spec_hash, None);
        if let Some(key) = idem_key {
            self.remember_idem(ctx, key, id, spec_hash);
        }
        Ok(Outcome::Submitted { job: id, shards, duplicate: false })
    }

    /// Create a job with `payloads` as its shards (at least one) and the
    /// rest of `spec`; the caller has checked the spec and the limits.
    fn create_job(
        &mut self,
        ctx: Ctx,
        spec: &JobSpec,
        payloads: &[ByteBuf],
        spec_hash: [u8; 32],
        origin: Option<JobOrigin>,
    ) -> JobId {
        debug_assert!(!payloads.is_empty(), "a job needs at least one shard");
        let id = self.meta.next_job;
        self.meta.next_job += 1;
        let shards = payloads.len() as u32;
        let ready_at_ms = ctx.now_ms.max(spec.not_before_ms.unwrap_or(0));
        let mut pending = BTreeMap::new();
        for (shard, payload) in payloads.iter().enumerate() {
            let key = TaskKey::new(id, shard as u32);
            self.dirty.tasks.insert(key, Some(TaskRecord::new(ready_at_ms, ctx.now_ms)));
            if !payload.is_empty() {
                self.dirty.payloads.insert(key, Some(payload.clone()));
            }
            pending.insert(shard as u32, PendingTask { ready_at_ms, sticky: None });
        }
        self.idx.pending.insert(id, pending);
        self.idx.live_tasks += shards as u64;
        let mut rec = JobRecord::new(id, spec, spec_hash, ctx.now_ms);
        rec.shards = shards;
        rec.payload_bytes = quota_ops::payload_bytes(payloads);
        usage_move(&mut self.idx.ns_usage, &rec.namespace, shards.into(), rec.payload_bytes as i64);
        rec.counts = Counts { pending: shards, ..Counts::default() };
        rec.origin = origin;
        self.idx.jobs.insert(id, rec);
        self.dirty.jobs.insert(id);
        id
    }

    fn assign_one(&mut self, kv: &dyn Kv, ctx: Ctx, a: &Assign) -> Res<Grant> {
        let Some(sess) = self.idx.sessions.get(&a.session) else {
            return Err(self.dead_session(kv, a.session));
        };
        let held = self.idx.by_session.get(&a.session).map_or(0, |s| s.len());
        if held >= sess.capacity as usize {
            return Err(CommandError::AtCapacity { session: a.session, capacity: sess.capacity }.into());
        }
        let (rec, policy) = self.live_task(kv, a.task)?;
        let job = &self.idx.jobs[&a.task.job];
        let ns_paused = self.idx.namespaces.get(&job.namespace).is_some_and(|n| n.paused);
        if job.paused || ns_paused {
            return Err(
                CommandError::JobPaused { job: job.id, namespace: ns_paused.then(|| job.namespace.clone()) }.into()
            );
        }
        // A session restricted to other namespaces is refused like one
        // whose labels do not match: the leader's plan was stale or wrong.
        if !sess.accepts(job) {
            return Err(CommandError::ConstraintMismatch { session: a.session, job: a.task.job }.into());
        }
        let worker = sess.name.clone();
        let ev = Event::Grant { session: a.session, worker: &worker, token: ctx.index };
        let step = transition(a.task, &rec, &ev, &policy, ctx.now_ms)?;
        let TaskState::Assigned { deadline_ms, .. } = step.next.state else {
            return Err(invariant(format!("grant of {} did not assign", a.task)));
        };
        let grant =
            Grant { task: a.task, session: a.session, token: ctx.index, attempt: step.next.attempts, deadline_ms };
        self.set_task(a.task, &rec.state, step.next);
        Ok(grant)
    }

    /// A task of a live job with its policy; typed errors for unknown or
    /// finished jobs and out-of-range shards.
    fn live_task(&self, kv: &dyn Kv, key: TaskKey) -> Res<(TaskRecord, Policy)> {
        let Some(job) = self.idx.jobs.get(&key.job) else {
            return Err(self.not_live(kv, key.job));
        };
        if key.shard >= job.shards {
            return Err(CommandError::TaskNotFound(key).into());
        }
        let rec =
            self.task(kv, key)?.ok_or_else(|| invariant(format!("live job {} has no record for {key}", key.job)))?;
        Ok((rec, job.policy()))
    }

    /// Why job `id` is not live: it finished, or it never existed, was
    /// deleted or is past its retention (then it is as good as gone).
    fn not_live(&self, kv: &dyn Kv, id: JobId) -> Fail {
        match self.job(kv, id) {
            Ok(Some(j)) if !j.deleted && j.expires_ms.is_none_or(|e| e > self.meta.clock_ms) => {
                CommandError::JobFinished { job: id }.into()
            }
            Ok(_) => CommandError::JobNotFound(id).into(),
            Err(e) => e.into(),
        }
    }

    /// Apply a token-carrying event (complete, fail, progress, timeout). Works
    /// on finished jobs too (until deleted or past retention), so a retried
    /// report of a result that finished the job is answered as a duplicate
    /// rather than "not found".
    /// A Complete or Fail, and then the last log lines it carried, unless
    /// it was a duplicate (whose lines were kept the first time).
    fn report_event(
        &mut self,
        kv: &dyn Kv,
        ctx: Ctx,
        key: TaskKey,
        ev: &Event<'_>,
        logs: &LogChunk,
    ) -> Res<(Step, bool)> {
        let (step, finished) = self.task_event(kv, ctx, key, ev)?;
        if step.effect != Effect::Duplicate {
            self.keep_report_logs(kv, ctx, key, &step.next, logs)?;
        }
        Ok((step, finished))
    }

    fn task_event(&mut self, kv: &dyn Kv, ctx: Ctx, key: TaskKey, ev: &Event<'_>) -> Res<(Step, bool)> {
        let (rec, policy) = match self.live_task(kv, key) {
            Ok(x) => x,
            Err(Fail::Reject(CommandError::JobFinished { .. })) => {
                let job = self.retained_job(kv, key.job, ctx.now_ms)?.ok_or(CommandError::JobNotFound(key.job))?;
                if key.shard >= job.shards {
                    return Err(CommandError::TaskNotFound(key).into());
                }
                let rec = self.task(kv, key)?.ok_or(CommandError::TaskNotFound(key))?;
                let step = transition(key, &rec, ev, &job.policy(), ctx.now_ms)?;
                if step.effect == Effect::Changed {
                    return Err(invariant(format!("{ev:?} changed {key} of finished job")));
                }
                return Ok((step, false));
            }
            Err(e) => return Err(e),
        };
        let step = transition(key, &rec, ev, &policy, ctx.now_ms)?;
        let mut finished = false;
        if step.effect == Effect::Changed {
            self.set_task(key, &rec.state, step.next.clone());
            finished = self.finish_if_done(kv, ctx, key.job)?;
        }
        Ok((step, finished))
    }

    fn cancel_job(&mut self, kv: &dyn Kv, ctx: Ctx, job: JobId, reason: &str) -> Res<Outcome> {
        let Some(rec) = self.idx.jobs.get(&job) else {
            return Err(self.not_live(kv, job));
        };
        let shards = rec.shards;
        let policy = rec.policy();
        // Read everything first so a storage error cannot leave a half-cancelled job.
        let mut live = Vec::new();
        for shard in 0..shards {
            let key = TaskKey::new(job, shard);
            let t = self.task(kv, key)?.ok_or_else(|| invariant(format!("missing {key}")))?;
            if !t.state.is_terminal() {
                live.push((key, t));
            }
        }
        let mut revoked = Vec::new();
        let tasks_cancelled = live.len() as u32;
        for (key, t) in live {
            let step = transition(key, &t, &Event::Cancel, &policy, ctx.now_ms)
                .map_err(|e| invariant(format!("cancel of live {key}: {e}")))?;
            if let TaskState::Assigned { session, token, .. } = t.state {
                revoked.push(Revoked { task: key, session, token });
            }
            self.set_task(key, &t.state, step.next);
        }
        let reason = if reason.is_empty() { "cancelled" } else { reason };
        if let Some(j) = self.idx.jobs.get_mut(&job) {
            j.cancel_reason = Some(reason.to_string());
        }
        self.dirty.jobs.insert(job);
        self.finish_if_done(kv, ctx, job)?;
        Ok(Outcome::Cancelled { job, revoked, tasks_cancelled })
    }
}

/// Keys a job's index entries take (see [`index_key_writes`]); the
/// collector counts them against its budget whether or not they exist.
pub(crate) const JOB_INDEX_KEYS: usize = 3;

fn released_one(task: TaskKey, state: &TaskState) -> Released {
    let mut r = Released::default();
    match state {
        TaskState::Dead => r.dead.push(task),
        _ => r.requeued.push(task),
    }
    r
}
