//! Job operations and task logs in the apply core: delete, retry, cancel
//! one shard, pause (a job or a namespace), priority, namespace retention,
//! and appending an attempt's log lines. Like every handler, each one
//! validates fully before its first mutation, so a refused command changes
//! nothing.

use crate::lifecycle::LogChunk;

use super::*;

impl Core {
    /// `DeleteJob` and `RetryJob` refuse a workflow's job (`JOB_IN_WORKFLOW`):
    /// it is deleted only with its workflow, when the collector deletes the
    /// workflow's record and queues its jobs; and it is never retried, since
    /// no workflow-level rerun exists: a failed step stays failed, and its
    /// workflow is submitted again to run it again.
    fn refuse_workflow_job(rec: &JobRecord) -> Res<()> {
        match &rec.origin {
            Some(o) => {
                Err(CommandError::JobInWorkflow { job: rec.id, workflow: o.workflow, step: o.step_name.clone() }.into())
            }
            None => Ok(()),
        }
    }

    /// A live job's record, to change; marks it dirty.
    fn live_job_mut(&mut self, kv: &dyn Kv, job: JobId) -> Res<&mut JobRecord> {
        if !self.idx.jobs.contains_key(&job) {
            return Err(self.not_live(kv, job));
        }
        self.dirty.jobs.insert(job);
        self.idx.jobs.get_mut(&job).ok_or_else(|| invariant(format!("job {job} is not live")))
    }

    pub(super) fn delete_job(&mut self, kv: &dyn Kv, ctx: Ctx, job: JobId) -> Res<Outcome> {
        let mut rec = self.retained_job(kv, job, ctx.now_ms)?.ok_or(CommandError::JobNotFound(job))?;
        Self::refuse_workflow_job(&rec)?;
        if rec.finished_ms.is_none() {
            return Err(CommandError::JobNotFinished { job }.into());
        }
        // Validated; mutations start here. A retained job is still queued
        // at its later time: move it to now.
        if let Some(at) = rec.expires_ms {
            self.idx.expiry.remove(&(at, GcTarget::Job(job)));
        }
        rec.deleted = true;
        rec.expires_ms = Some(ctx.now_ms);
        self.idx.expiry.insert((ctx.now_ms, GcTarget::Job(job)));
        self.put_finished_job(rec);
        Ok(Outcome::JobDeleted { job })
    }

    pub(super) fn retry_job(&mut self, kv: &dyn Kv, ctx: Ctx, job: JobId) -> Res<Outcome> {
        let mut rec = self.retained_job(kv, job, ctx.now_ms)?.ok_or(CommandError::JobNotFound(job))?;
        Self::refuse_workflow_job(&rec)?;
        if rec.counts.dead + rec.counts.cancelled == 0 {
            return Err(CommandError::NothingToRetry { job }.into());
        }
        // Read every shard first, so a storage error cannot leave a half-retried job.
        let mut retry = Vec::with_capacity((rec.counts.dead + rec.counts.cancelled) as usize);
        for shard in 0..rec.shards {
            let key = TaskKey::new(job, shard);
            let t = self.task(kv, key)?.ok_or_else(|| invariant(format!("job {job} has no record for {key}")))?;
            if matches!(t.state, TaskState::Dead | TaskState::Cancelled) {
                retry.push((key, t));
            }
        }
        if retry.len() != (rec.counts.dead + rec.counts.cancelled) as usize {
            return Err(invariant(format!("job {job} counts {:?} but {} shards to retry", rec.counts, retry.len())));
        }
        if self.idx.live_tasks + retry.len() as u64 > MAX_LIVE_TASKS {
            return Err(CommandError::LimitReached { what: "live tasks".into(), limit: MAX_LIVE_TASKS }.into());
        }
        // A finished job that comes back charges its payloads again.
        let revived_bytes = if rec.finished_ms.is_some() { rec.payload_bytes } else { 0 };
        self.check_quota(&rec.namespace, retry.len() as u64, revived_bytes)?;
        // Validated; mutations start here. A finished job is live again.
        if rec.finished_ms.is_some() {
            usage_move(&mut self.idx.ns_usage, &rec.namespace, 0, revived_bytes as i64);
            if let Some(at) = rec.expires_ms {
                self.idx.expiry.remove(&(at, GcTarget::Job(job)));
            }
            rec.finished_ms = None;
            rec.expires_ms = None;
            rec.cancel_reason = None;
            self.dirty.finished.remove(&job);
            self.idx.jobs.insert(job, rec);
        }
        self.dirty.jobs.insert(job);
        let requeued = retry.len() as u32;
        for (key, t) in retry {
            // A fresh budget; the token, how the last attempt ended and its
            // error stay, so a late report of that attempt is still fenced.
            let mut next = t.clone();
            next.state = TaskState::Pending { ready_at_ms: ctx.now_ms };
            next.attempts = 0;
            next.updated_ms = ctx.now_ms;
            self.set_task(key, &t.state, next);
        }
        Ok(Outcome::JobRetried { job, requeued })
    }

    pub(super) fn cancel_task(&mut self, kv: &dyn Kv, ctx: Ctx, task: TaskKey, reason: &str) -> Res<Outcome> {
        let (rec, policy) = self.live_task(kv, task)?;
        let step = transition(task, &rec, &Event::Cancel, &policy, ctx.now_ms)?;
        // Validated; mutations start here.
        let revoked = match rec.state {
            TaskState::Assigned { session, token, .. } => Some(Revoked { task, session, token }),
            _ => None,
        };
        let mut next = step.next;
        next.last_error = Some(if reason.is_empty() { "cancelled" } else { reason }.to_string());
        self.set_task(task, &rec.state, next);
        let job_finished = self.finish_if_done(kv, ctx, task.job)?;
        Ok(Outcome::TaskCancelled { task, revoked, job_finished })
    }

    pub(super) fn pause_job(&mut self, kv: &dyn Kv, _ctx: Ctx, job: JobId, paused: bool) -> Res<Outcome> {
        self.live_job_mut(kv, job)?.paused = paused;
        Ok(Outcome::JobPaused { job, paused })
    }

    pub(super) fn set_priority(&mut self, kv: &dyn Kv, _ctx: Ctx, job: JobId, priority: i32) -> Res<Outcome> {
        self.live_job_mut(kv, job)?.priority = priority;
        Ok(Outcome::PrioritySet { job, priority })
    }

    /// Change a namespace's settings. A namespace back at the defaults has
    /// no record, so [`MAX_NAMESPACE_RECORDS`] counts only those that differ.
    pub(super) fn update_namespace(
        &mut self,
        namespace: &str,
        change: impl FnOnce(&mut NamespaceRecord),
    ) -> Res<Outcome> {
        let old = self.idx.namespaces.get(namespace);
        let mut rec = old.cloned().unwrap_or_default();
        change(&mut rec);
        let keep = rec != NamespaceRecord::default();
        if keep && old.is_none() && self.idx.namespaces.len() >= MAX_NAMESPACE_RECORDS {
            return Err(CommandError::LimitReached {
                what: "namespaces with settings".into(),
                limit: MAX_NAMESPACE_RECORDS as u64,
            }
            .into());
        }
        // Validated; mutations start here.
        if old != keep.then_some(&rec) {
            if keep {
                self.idx.namespaces.insert(namespace.to_string(), rec);
            } else {
                self.idx.namespaces.remove(namespace);
            }
            self.dirty.namespaces.insert(namespace.to_string());
        }
        Ok(Outcome::NamespaceUpdated { namespace: namespace.to_string() })
    }

    /// Keep `lines` in the log of the attempt `token` names: the task's
    /// latest attempt, running or ended, of a job not deleted nor past its
    /// retention. An attempt given back (a worker that left) or retired by
    /// RetryJob is fenced like any older one.
    pub(super) fn append_logs(
        &mut self,
        kv: &dyn Kv,
        ctx: Ctx,
        task: TaskKey,
        token: Token,
        lines: LogChunk,
    ) -> Res<Outcome> {
        let (shards, log_bytes) = self
            .with_retained_job(kv, task.job, ctx.now_ms, |j| (j.shards, j.log_bytes))?
            .ok_or(CommandError::JobNotFound(task.job))?;
        if task.shard >= shards {
            return Err(CommandError::TaskNotFound(task).into());
        }
        let mut t =
            self.task(kv, task)?.ok_or_else(|| invariant(format!("job {} has no record for {task}", task.job)))?;
        let current = token != 0 && token == t.last_token && t.attempts > 0 && t.last_end != Some(AttemptEnd::Left);
        if !current {
            return Err(CommandError::Fenced { task, presented: token, latest: t.last_token }.into());
        }
        // A terminal task's record does not change after the entry that ended
        // it, so its flag is not kept up to date from then on: read.
        let terminal = t.state.is_terminal();
        let (accepted, refused) = self.keep_log_chunk(kv, task, log_bytes, &t, t.log_kept || terminal, lines)?;
        if !terminal && !t.log_kept {
            // The task's state is unchanged: the overlay, not `set_task`.
            t.log_kept = true;
            self.dirty.tasks.insert(task, Some(t));
        }
        Ok(Outcome::LogsAppended { task, accepted, refused })
    }

    /// The last lines a Complete or Fail carried, once the report itself
    /// was applied (not a duplicate) and left the task as `after`: its token
    /// is then the task's latest attempt, so nothing here can refuse them
    /// but the job's log bound (or its retention, if that ended just now).
    pub(super) fn keep_report_logs(
        &mut self,
        kv: &dyn Kv,
        ctx: Ctx,
        task: TaskKey,
        after: &TaskRecord,
        logs: &LogChunk,
    ) -> Res<()> {
        if logs.is_empty() {
            return Ok(());
        }
        // A job kept for 0 ms is past its retention as soon as this report
        // finishes it: its lines would go with it, so they are not kept.
        let Some(log_bytes) = self.with_retained_job(kv, task.job, ctx.now_ms, |j| j.log_bytes)? else {
            return Ok(());
        };
        self.keep_log_chunk(kv, task, log_bytes, after, after.log_kept, logs.clone())?;
        if !after.log_kept {
            // The report changed the task in this command, so its record is in
            // the overlay: the flag is set with that change.
            match self.dirty.tasks.get_mut(&task) {
                Some(Some(t)) => t.log_kept = true,
                _ => {
                    debug_assert!(false, "the record of reported task {task} is not in the overlay");
                    self.dirty.tasks.insert(task, Some(TaskRecord { log_kept: true, ..after.clone() }));
                }
            }
        }
        Ok(())
    }

    /// Add a chunk to the record of the attempt `rec` names (its latest),
    /// within the job's bound (`log_bytes` used so far). The record is read
    /// only if it `may_exist`. Returns the lines accepted and refused.
    fn keep_log_chunk(
        &mut self,
        kv: &dyn Kv,
        task: TaskKey,
        log_bytes: u64,
        rec: &TaskRecord,
        may_exist: bool,
        lines: LogChunk,
    ) -> Res<(u32, u32)> {
        let (token, attempt) = (rec.last_token, rec.attempts);
        let stored = if may_exist { self.task_log(kv, task, token)? } else { None };
        debug_assert!(
            stored.is_some() || !rec.log_kept,
            "{task} says attempt {token} has a log record; none is stored"
        );
        let mut log = stored.unwrap_or(LogRecord { token, attempt, ..LogRecord::default() });
        debug_assert_eq!(log.attempt, attempt, "a token names one attempt");
        let n = lines.len();
        // The job's bound keeps the lines that fit under it and refuses the
        // rest, in the order they were logged.
        debug_assert!(log_bytes <= MAX_LOG_BYTES_PER_JOB, "a job past its log bound");
        let room = MAX_LOG_BYTES_PER_JOB - log_bytes;
        let (lines, refused) = if lines.cost() > room { lines.oldest_within(room) } else { (lines, 0) };
        let refused = u32::try_from(refused).expect("a chunk holds at most MAX_LOG_LINES_PER_COMMAND lines");
        log.dropped += u64::from(refused);
        let cost = lines.cost();
        if !lines.is_empty() {
            log.push(lines);
        }
        self.dirty.logs.insert((task, token), Some(log));
        if cost == 0 {
            return Ok((0, refused));
        }
        let log_bytes = log_bytes + cost;
        debug_assert!(log_bytes <= MAX_LOG_BYTES_PER_JOB);
        match self.idx.jobs.get_mut(&task.job) {
            Some(live) => {
                live.log_bytes = log_bytes;
                self.dirty.jobs.insert(task.job);
            }
            None => {
                // A finished job: rare (the report that finished it, or a late
                // flush), so its record may be copied.
                let mut job = self.job(kv, task.job)?.ok_or_else(|| invariant(format!("job {} is gone", task.job)))?;
                job.log_bytes = log_bytes;
                self.put_finished_job(job);
            }
        }
        Ok((n - refused, refused))
    }
}
