//! The retention collector of the apply core.
//!
//! Finished jobs and workflows and ended sessions are queued in
//! `Indexes::expiry` at the time their retention ends. Every applied normal
//! entry runs [`Core::collect_garbage`] with a budget of key deletions
//! that grows with the entry's commands ([`gc_budget`]): it continues the target in
//! `Meta::gc`, else takes the first queued target that is due at the entry's
//! time. A job goes shard by shard (task and payload), then its logs, then
//! its index keys and record, so one entry's work is bounded whatever the
//! job's size, and a follower catching up never stalls on one entry.
//!
//! The cursor lives in `Meta`, written with every entry, and every read
//! goes through the overlay, so the keys an entry deletes depend only on
//! the entries applied before it, never on how apply() calls were chunked
//! or when the node restarted.

use super::*;
use crate::lifecycle::GcProgress;

/// Keys one shard takes: its task record and its payload (a tombstone when
/// it had none, cheaper than reading to find out).
const SHARD_KEYS: usize = 2;
/// Keys the last step of a job takes: its index keys and its record.
const JOB_END_KEYS: usize = JOB_INDEX_KEYS + 1;
/// Keys a session takes: its record and its worker-name record.
const SESSION_KEYS: usize = 2;
/// Keys a workflow takes: its record (its jobs are queued on their own).
const WORKFLOW_KEYS: usize = 1;

/// What collecting one target left to do.
type Left = Option<GcProgress>;

impl Core {
    /// How long a finished job or workflow of `namespace` is kept when the
    /// job sets nothing itself.
    pub(super) fn namespace_retention_ms(&self, namespace: &str) -> u64 {
        self.idx.namespaces.get(namespace).and_then(|n| n.retention_ms).unwrap_or(RETENTION_MS_DEFAULT)
    }

    /// One entry's share of collection at log time `now_ms`: at most
    /// `allowed` key deletions. Returns how many it made.
    pub(super) fn collect_garbage(&mut self, kv: &dyn Kv, now_ms: u64, allowed: usize) -> Result<u32, StoreError> {
        let mut budget = allowed;
        while budget > 0 {
            let progress = match self.meta.gc.take() {
                Some(p) => p,
                None => match self.idx.expiry.first() {
                    Some(&(at, target)) if at <= now_ms => {
                        self.idx.expiry.pop_first();
                        GcProgress { target, next_shard: 0, last_log_key: None }
                    }
                    _ => break,
                },
            };
            let left = match progress.target {
                GcTarget::Job(_) => self.collect_job(kv, progress, &mut budget)?,
                GcTarget::Workflow(_) => self.collect_workflow(kv, now_ms, progress, &mut budget)?,
                GcTarget::Session(_) => self.collect_session(kv, progress, &mut budget)?,
            };
            if left.is_some() {
                self.meta.gc = left;
                break;
            }
        }
        debug_assert!(budget <= allowed);
        Ok((allowed - budget) as u32)
    }

    /// Tasks and payloads shard by shard, then logs, then index keys and
    /// the record. Idempotency records keep their own window.
    fn collect_job(&mut self, kv: &dyn Kv, mut p: GcProgress, budget: &mut usize) -> Result<Left, StoreError> {
        let GcTarget::Job(id) = p.target else { return Ok(None) };
        let Some(rec) = self.job(kv, id)? else {
            debug_assert!(false, "the collector's job {id} has no record");
            return Ok(None);
        };
        if rec.finished_ms.is_none() {
            // Nothing live is ever queued (RetryJob takes a job out of the queue).
            debug_assert!(false, "the collector took live job {id}");
            return Ok(None);
        }
        while p.next_shard < rec.shards {
            if *budget < SHARD_KEYS {
                return Ok(Some(p));
            }
            let key = TaskKey::new(id, p.next_shard);
            self.dirty.tasks.insert(key, None);
            self.dirty.payloads.insert(key, None);
            *budget -= SHARD_KEYS;
            p.next_shard += 1;
        }
        let want = *budget;
        let logs = self.next_log_keys(kv, id, p.last_log_key, want)?;
        let found = logs.len();
        for key in logs {
            self.dirty.logs.insert(key, None);
            p.last_log_key = Some(key);
        }
        *budget -= found;
        // A full batch may have more behind it; so may a budget too small to finish.
        if found == want || *budget < JOB_END_KEYS {
            return Ok(Some(p));
        }
        self.dirty.jobs.remove(&id);
        self.dirty.finished.remove(&id);
        self.dirty.gone_jobs.insert(id, rec);
        *budget -= JOB_END_KEYS;
        Ok(None)
    }

    /// The first `want` log keys of `job` after `after`, from disk and the
    /// overlay merged. Only the collector deletes logs, in key order, and a
    /// job past its retention takes no more, so every key after the cursor
    /// is live in both sources: the result depends only on the entries
    /// applied, not on what has been written out yet.
    fn next_log_keys(
        &self,
        kv: &dyn Kv,
        job: JobId,
        after: Option<(TaskKey, Token)>,
        want: usize,
    ) -> Result<Vec<(TaskKey, Token)>, StoreError> {
        let mut found = BTreeSet::new();
        if want == 0 {
            return Ok(Vec::new());
        }
        let prefix = keys::job_logs_of(job);
        let start = match after {
            // The smallest key after the cursor's.
            Some((t, a)) => [keys::task_log(t, a), vec![0]].concat(),
            None => prefix.clone(),
        };
        kv.scan_from(&prefix, &start, &mut |k, _| {
            let key = keys::parse_task_log(k)
                .ok_or_else(|| StoreError::Invariant(format!("bad key {}", keys::describe(k))))?;
            found.insert(key);
            Ok(found.len() < want)
        })?;
        let lo = match after {
            Some(k) => Bound::Excluded(k),
            None => Bound::Included((TaskKey::new(job, 0), 0)),
        };
        let hi = match job.checked_add(1) {
            Some(next) => Bound::Excluded((TaskKey::new(next, 0), 0)),
            None => Bound::Unbounded,
        };
        for (key, rec) in self.dirty.logs.range((lo, hi)).take(want) {
            debug_assert!(rec.is_some(), "log {key:?} deleted after the collector's cursor");
            if rec.is_some() {
                found.insert(*key);
            } else {
                found.remove(key);
            }
        }
        Ok(found.into_iter().take(want).collect())
    }

    /// The workflow's record goes; its jobs are queued to go now, each on
    /// its own budget.
    fn collect_workflow(
        &mut self,
        kv: &dyn Kv,
        now_ms: u64,
        p: GcProgress,
        budget: &mut usize,
    ) -> Result<Left, StoreError> {
        let GcTarget::Workflow(wf) = p.target else { return Ok(None) };
        if *budget < WORKFLOW_KEYS {
            return Ok(Some(p));
        }
        let Some(rec) = self.workflow(kv, wf)? else {
            debug_assert!(false, "the collector's workflow {wf} has no record");
            return Ok(None);
        };
        if rec.status == WorkflowStatus::Running {
            debug_assert!(false, "the collector took running workflow {wf}");
            return Ok(None);
        }
        // At most 3 jobs per step (generator, map, reduce): bounded by
        // MAX_STEPS_PER_WORKFLOW record rewrites, no deletions.
        let jobs = rec.steps.iter().flat_map(|s| [s.generate_job, s.map_job, s.reduce_job]).flatten();
        for job in jobs {
            let Some(mut j) = self.job(kv, job)? else { continue };
            // Every job of a finished workflow has finished, and only its
            // workflow's collection gives it a time.
            if j.finished_ms.is_none() || j.expires_ms.is_some() {
                debug_assert!(false, "job {job} of collected workflow {wf}: {j:?}");
                continue;
            }
            j.expires_ms = Some(now_ms);
            self.idx.expiry.insert((now_ms, GcTarget::Job(job)));
            self.put_finished_job(j);
        }
        // No step spec is left: every step of a finished workflow ended
        // through `end_step`, which deletes it.
        self.dirty.workflows.remove(&wf);
        self.dirty.finished_workflows.remove(&wf);
        self.dirty.gone_workflows.insert(wf);
        *budget -= WORKFLOW_KEYS;
        Ok(None)
    }

    /// The session's record, and its worker name's when no later session
    /// took the name (the name's next session then starts at epoch 1).
    fn collect_session(&mut self, kv: &dyn Kv, p: GcProgress, budget: &mut usize) -> Result<Left, StoreError> {
        let GcTarget::Session(id) = p.target else { return Ok(None) };
        if *budget < SESSION_KEYS {
            return Ok(Some(p));
        }
        let Some(rec) = self.session_rec(kv, id)? else {
            debug_assert!(false, "the collector's session {id} has no record");
            return Ok(None);
        };
        if rec.ended.is_none() {
            debug_assert!(false, "the collector took live session {id}");
            return Ok(None);
        }
        if self.name_rec(kv, &rec.name)?.is_some_and(|n| n.session == id) {
            self.dirty.names.insert(rec.name, None);
        }
        self.dirty.sessions.insert(id, None);
        *budget -= SESSION_KEYS;
        Ok(None)
    }

    /// Store a changed record of a finished job.
    pub(super) fn put_finished_job(&mut self, rec: JobRecord) {
        debug_assert!(!self.idx.jobs.contains_key(&rec.id), "job {} is live", rec.id);
        self.dirty.jobs.insert(rec.id);
        self.dirty.finished.insert(rec.id, rec);
    }
}

#[cfg(test)]
#[path = "core_gc_tests.rs"]
mod tests;
