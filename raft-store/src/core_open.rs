//! Opening the core: meta, then the in-memory indexes rebuilt from the
//! durable records (live jobs and their tasks, sessions, workflows and their
//! waiting gates, the collector's queue, namespaces, schedules, triggers).

use super::*;

impl Core {
    /// Load meta and rebuild the indexes from durable records.
    pub fn open(kv: &dyn Kv) -> Result<Core, StoreError> {
        let meta: Meta = load(kv, &keys::meta())?.unwrap_or_default();
        let mut idx = Indexes::default();
        // The collector's current target left the queue when it was taken.
        let in_progress = meta.gc.as_ref().map(|g| g.target);
        let mut expiry = BTreeSet::new();
        let mut queue = |at: Option<u64>, target: GcTarget| {
            if let Some(at) = at
                && in_progress != Some(target)
            {
                expiry.insert((at, target));
            }
        };
        kv.scan(&[Table::Job as u8], &mut |k, v| {
            let job: JobRecord = decode_at(k, v)?;
            if job.finished_ms.is_none() {
                let live = i64::from(job.counts.live());
                crate::indexes::usage_move(&mut idx.ns_usage, &job.namespace, live, job.payload_bytes as i64);
                idx.jobs.insert(job.id, job);
            } else {
                queue(job.expires_ms, GcTarget::Job(job.id));
            }
            Ok(true)
        })?;
        kv.scan(&[Table::Session as u8], &mut |k, v| {
            let s: SessionRecord = decode_at(k, v)?;
            match s.ended {
                None => {
                    idx.live_by_name.insert(s.name.clone(), s.id);
                    idx.sessions.insert(s.id, s);
                }
                Some((at, _)) => queue(Some(at.saturating_add(SESSION_RETENTION_MS)), GcTarget::Session(s.id)),
            }
            Ok(true)
        })?;
        kv.scan(&[Table::Workflow as u8], &mut |k, v| {
            let wf: WorkflowRecord = decode_at(k, v)?;
            if wf.status == WorkflowStatus::Running {
                for (i, s) in wf.steps.iter().enumerate() {
                    if let StepState::AwaitingApproval { deadline_ms } = s.state {
                        if let Some(d) = deadline_ms {
                            idx.gate_deadlines.insert((d, wf.id, i as u32));
                        }
                        if let StepShape::Gate { event: Some(e), .. } = &s.shape {
                            let key = (wf.namespace.clone(), e.topic.clone());
                            idx.event_gates.entry(key).or_default().insert((wf.id, i as u32));
                        }
                    }
                }
                idx.workflows.insert(wf.id, wf);
            } else {
                queue(wf.expires_ms, GcTarget::Workflow(wf.id));
            }
            Ok(true)
        })?;
        idx.expiry = expiry;
        kv.scan(&[Table::Namespace as u8], &mut |k, v| {
            let name = String::from_utf8(k[1..].to_vec())
                .map_err(|_| StoreError::Invariant(format!("bad key {}", keys::describe(k))))?;
            idx.namespaces.insert(name, decode_at(k, v)?);
            Ok(true)
        })?;
        kv.scan(&[Table::Schedule as u8], &mut |k, v| {
            let rec: ScheduleRecord = decode_at(k, v)?;
            idx.schedule_names.insert((rec.rule.namespace.clone(), rec.rule.name.clone()), rec.id);
            if let Some(due) = rec.due_ms() {
                idx.fire_due.insert((due, rec.id));
            }
            idx.schedules.insert(rec.id, rec);
            Ok(true)
        })?;
        kv.scan(&[Table::Trigger as u8], &mut |k, v| {
            let rec: TriggerRecord = decode_at(k, v)?;
            idx.trigger_names.insert((rec.namespace.clone(), rec.name.clone()), rec.id);
            idx.triggers_by_topic.entry((rec.namespace.clone(), rec.topic.clone())).or_default().insert(rec.id);
            idx.triggers.insert(rec.id, rec);
            Ok(true)
        })?;
        let live_jobs: Vec<JobId> = idx.jobs.keys().copied().collect();
        for job in live_jobs {
            kv.scan(&keys::tasks_of(job), &mut |k, v| {
                let key = keys::parse_task(k)
                    .ok_or_else(|| StoreError::Invariant(format!("bad task key {}", keys::describe(k))))?;
                let rec: TaskRecord = decode_at(k, v)?;
                index_insert(&mut idx, key, &rec);
                Ok(true)
            })?;
        }
        Ok(Core { meta, idx, dirty: Dirty::default(), idem_pruned_to: None, collected: 0 })
    }
}
