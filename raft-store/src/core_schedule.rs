//! Schedule and trigger handlers of the apply core. A schedule fires only
//! through a `Fire` entry for its current next fire time, and that entry
//! moves the next fire time on, so each fire time starts at most one run
//! whatever leader proposed it or how often. Runs are plain jobs or
//! workflows marked with their origin; the entry that finishes one tells its
//! schedule (overlap and fixed-delay bookkeeping) in the same entry.

use super::*;

/// Events share the idempotency table (and their namespace's key space)
/// behind a prefix no user key can hold (keys may not contain control
/// characters).
fn event_idem_key(namespace: &str, event_id: &str) -> IdemKey {
    IdemKey::new(namespace, &format!("\u{1}ev:{event_id}"))
}

fn spec_hash<T: Serialize>(what: &'static str, v: &T) -> Result<[u8; 32], StoreError> {
    let encoded = codec::encode(v).map_err(|source| StoreError::Encode { what, source })?;
    Ok(*blake3::hash(&encoded).as_bytes())
}

impl Core {
    /// Store `rec` and keep `fire_due` in step with it.
    fn put_schedule(&mut self, rec: ScheduleRecord) {
        if let Some(due) = self.idx.schedules.get(&rec.id).and_then(|old| old.due_ms()) {
            self.idx.fire_due.remove(&(due, rec.id));
        }
        if let Some(due) = rec.due_ms() {
            self.idx.fire_due.insert((due, rec.id));
        }
        self.dirty.schedules.insert(rec.id);
        self.idx.schedules.insert(rec.id, rec);
    }

    fn schedule_rec(&self, id: ScheduleId) -> Res<ScheduleRecord> {
        self.idx.schedules.get(&id).cloned().ok_or_else(|| CommandError::ScheduleNotFound(id).into())
    }

    /// A stored run template, through the overlay.
    pub fn run_template(&self, kv: &dyn Kv, owner: TemplateOwner) -> Result<Option<Template>, StoreError> {
        match self.dirty.templates.get(&owner) {
            Some(t) => Ok(t.clone()),
            None => load(kv, &keys::run_template(owner)),
        }
    }

    pub(super) fn create_schedule(&mut self, ctx: Ctx, spec: &ScheduleSpec) -> Res<Outcome> {
        let hash = spec_hash("schedule spec", spec)?;
        if let Some(&id) = self.idx.schedule_names.get(&(spec.namespace.clone(), spec.name.clone())) {
            let rec = &self.idx.schedules[&id];
            return if rec.spec_hash == hash {
                Ok(Outcome::ScheduleCreated { schedule: id, duplicate: true, next_fire_ms: rec.next_fire_ms })
            } else {
                Err(name_taken("schedule", &spec.namespace, &spec.name, id))
            };
        }
        if self.idx.schedules.len() >= MAX_SCHEDULES {
            return Err(CommandError::LimitReached { what: "schedules".into(), limit: MAX_SCHEDULES as u64 }.into());
        }
        // Validated; mutations start here.
        let id = self.meta.next_schedule;
        self.meta.next_schedule += 1;
        let rule = spec.rule();
        let anchor_ms = spec.start_ms.unwrap_or(ctx.now_ms);
        let next_fire_ms = rule.first_at_or_after(anchor_ms, ctx.now_ms);
        let rec = ScheduleRecord {
            id,
            rule,
            spec_hash: hash,
            created_ms: ctx.now_ms,
            updated_ms: ctx.now_ms,
            anchor_ms,
            paused: false,
            next_fire_ms,
            live: Vec::new(),
            buffered: None,
            recent: Vec::new(),
            runs_started: 0,
            fires_skipped: 0,
        };
        self.idx.schedule_names.insert((spec.namespace.clone(), spec.name.clone()), id);
        self.dirty.templates.insert(TemplateOwner::Schedule(id), Some(spec.template.clone()));
        self.put_schedule(rec);
        Ok(Outcome::ScheduleCreated { schedule: id, duplicate: false, next_fire_ms })
    }

    pub(super) fn update_schedule(&mut self, ctx: Ctx, id: ScheduleId, spec: &ScheduleSpec) -> Res<Outcome> {
        let mut rec = self.schedule_rec(id)?;
        if rec.rule.namespace != spec.namespace || rec.rule.name != spec.name {
            return Err(invalid_cmd(
                "name",
                format!("an update keeps the namespace and name ({:?}, {:?})", rec.rule.namespace, rec.rule.name),
            ));
        }
        // Validated; mutations start here.
        rec.spec_hash = spec_hash("schedule spec", spec)?;
        rec.rule = spec.rule();
        rec.updated_ms = ctx.now_ms;
        rec.anchor_ms = spec.start_ms.unwrap_or(ctx.now_ms);
        let waits_for_run = matches!(rec.rule.cadence, Cadence::FixedDelay { .. }) && !rec.live.is_empty();
        rec.next_fire_ms = if waits_for_run { None } else { rec.rule.first_at_or_after(rec.anchor_ms, ctx.now_ms) };
        let (paused, next_fire_ms) = (rec.paused, rec.next_fire_ms);
        self.dirty.templates.insert(TemplateOwner::Schedule(id), Some(spec.template.clone()));
        self.put_schedule(rec);
        Ok(Outcome::ScheduleUpdated { schedule: id, paused, next_fire_ms })
    }

    pub(super) fn pause_schedule(&mut self, ctx: Ctx, id: ScheduleId, paused: bool) -> Res<Outcome> {
        let mut rec = self.schedule_rec(id)?;
        rec.paused = paused;
        rec.updated_ms = ctx.now_ms;
        let next_fire_ms = rec.next_fire_ms;
        self.put_schedule(rec);
        Ok(Outcome::ScheduleUpdated { schedule: id, paused, next_fire_ms })
    }

    pub(super) fn delete_schedule(&mut self, id: ScheduleId) -> Res<Outcome> {
        let rec = self.schedule_rec(id)?;
        if let Some(due) = rec.due_ms() {
            self.idx.fire_due.remove(&(due, id));
        }
        self.idx.schedule_names.remove(&(rec.rule.namespace.clone(), rec.rule.name.clone()));
        self.idx.schedules.remove(&id);
        self.dirty.schedules.insert(id);
        self.dirty.templates.insert(TemplateOwner::Schedule(id), None);
        Ok(Outcome::ScheduleDeleted { schedule: id })
    }

    /// A fire the leader proposed: only the schedule's current next fire
    /// time, once due, is accepted (the dedup that makes one run per time).
    pub(super) fn fire(&mut self, kv: &dyn Kv, ctx: Ctx, id: ScheduleId, fire_ms: u64) -> Res<Outcome> {
        let rec = self.schedule_rec(id)?;
        let not_due =
            || CommandError::FireNotDue { schedule: id, fire_ms, next_fire_ms: rec.next_fire_ms, paused: rec.paused };
        if rec.next_fire_ms != Some(fire_ms) || rec.due_ms().is_none_or(|due| due > ctx.now_ms) {
            return Err(not_due().into());
        }
        let plan = rec.rule.plan_fire(id, rec.anchor_ms, fire_ms, ctx.now_ms);
        let template = self.stored_template(kv, id)?;
        // Validated; mutations start here.
        let mut rec = rec;
        rec.next_fire_ms = plan.next_ms;
        rec.fires_skipped += plan.skipped;
        if plan.skipped > 0 {
            let why = format!("{} fire time(s) from {fire_ms} missed ({:?})", plan.skipped, rec.rule.misfire);
            rec.remember(RunEntry {
                fire_ms,
                manual: false,
                target: None,
                outcome: RunOutcome::Skipped(why),
                at_ms: ctx.now_ms,
            });
        }
        self.put_schedule(rec);
        let (run, skipped_reason, fired_for) = match plan.run_for {
            Some(t) => {
                let (run, why) = self.start_run(kv, ctx, id, t, false, &template)?;
                (run, why, t)
            }
            None => (None, Some("missed (misfire skip)".to_string()), fire_ms),
        };
        self.after_fire(ctx, id);
        let next_fire_ms = self.idx.schedules.get(&id).and_then(|r| r.next_fire_ms);
        Ok(Outcome::Fired { schedule: id, fire_ms: fired_for, run, skipped_reason, missed: plan.skipped, next_fire_ms })
    }

    /// `RunSchedule`: a run now, under the overlap policy, leaving the
    /// cadence alone (a paused schedule may be run by hand too).
    pub(super) fn run_schedule(&mut self, kv: &dyn Kv, ctx: Ctx, id: ScheduleId) -> Res<Outcome> {
        self.schedule_rec(id)?;
        let template = self.stored_template(kv, id)?;
        let (run, skipped_reason) = self.start_run(kv, ctx, id, ctx.now_ms, true, &template)?;
        let next_fire_ms = self.idx.schedules.get(&id).and_then(|r| r.next_fire_ms);
        Ok(Outcome::Fired { schedule: id, fire_ms: ctx.now_ms, run, skipped_reason, missed: 0, next_fire_ms })
    }

    fn stored_template(&self, kv: &dyn Kv, id: ScheduleId) -> Res<Template> {
        self.run_template(kv, TemplateOwner::Schedule(id))?
            .ok_or_else(|| invariant(format!("schedule {id} has no template")))
    }

    /// A fixed-delay schedule with nothing live and nothing buffered after
    /// a fire (its run was skipped or refused) waits its delay from now.
    fn after_fire(&mut self, ctx: Ctx, id: ScheduleId) {
        let Some(rec) = self.idx.schedules.get(&id) else { return };
        if let Cadence::FixedDelay { delay_ms } = rec.rule.cadence
            && rec.next_fire_ms.is_none()
            && rec.live.is_empty()
            && rec.buffered.is_none()
        {
            let mut rec = rec.clone();
            let next = ctx.now_ms.saturating_add(delay_ms);
            rec.next_fire_ms = Some(next).filter(|n| rec.rule.end_ms.is_none_or(|e| *n <= e));
            self.put_schedule(rec);
        }
    }

    /// Start the run for `fire_ms` under the schedule's overlap policy, or
    /// say why none started. A refusal by the template's own limits (live
    /// tasks, live workflows) skips the run; it never fails the entry, or the
    /// schedule would stop moving.
    fn start_run(
        &mut self,
        kv: &dyn Kv,
        ctx: Ctx,
        id: ScheduleId,
        fire_ms: u64,
        manual: bool,
        template: &Template,
    ) -> Res<(Option<RunTarget>, Option<String>)> {
        let rec = self.schedule_rec(id)?;
        let skip = |this: &mut Core, why: String, outcome: RunOutcome| -> Res<(Option<RunTarget>, Option<String>)> {
            let mut rec = this.schedule_rec(id)?;
            rec.fires_skipped += u64::from(matches!(outcome, RunOutcome::Skipped(_)));
            rec.remember(RunEntry { fire_ms, manual, target: None, outcome, at_ms: ctx.now_ms });
            this.put_schedule(rec);
            Ok((None, Some(why)))
        };
        if !rec.live.is_empty() {
            match rec.rule.overlap {
                Overlap::Skip => {
                    let why = "a run is live (overlap skip)".to_string();
                    return skip(self, why.clone(), RunOutcome::Skipped(why));
                }
                Overlap::BufferOne if rec.buffered.is_some() => {
                    let why = "a run is live and one is buffered (overlap buffer_one)".to_string();
                    return skip(self, why.clone(), RunOutcome::Skipped(why));
                }
                Overlap::BufferOne => {
                    let mut rec = rec;
                    rec.buffered = Some(fire_ms);
                    self.put_schedule(rec);
                    return skip(self, "buffered until the live run ends".into(), RunOutcome::Buffered);
                }
                Overlap::Allow if rec.live.len() >= MAX_LIVE_RUNS_PER_SCHEDULE => {
                    let why = format!("{MAX_LIVE_RUNS_PER_SCHEDULE} runs are live (the limit per schedule)");
                    return skip(self, why.clone(), RunOutcome::Skipped(why));
                }
                Overlap::Allow => {}
                Overlap::CancelPrevious => {
                    let reason = format!("replaced by schedule {id}'s run for {fire_ms}");
                    for target in rec.live.clone() {
                        // Each cancel finishes its run, which leaves `live`
                        // through `run_finished` in this same entry.
                        match target {
                            RunTarget::Job(job) if self.idx.jobs.contains_key(&job) => {
                                self.cancel_job(kv, ctx, job, &reason)?;
                            }
                            RunTarget::Workflow(wf) if self.idx.workflows.contains_key(&wf) => {
                                self.cancel_workflow(kv, ctx, wf, &reason)?;
                            }
                            _ => return Err(invariant(format!("schedule {id} lists finished run {target:?}"))),
                        }
                    }
                }
            }
        }
        let origin = RunOrigin::Schedule { schedule: id, fire_ms, manual };
        let target = match self.create_run(kv, ctx, template, origin)? {
            Ok(target) => target,
            Err(e) => {
                let why = format!("the run was refused: {e}");
                return skip(self, why.clone(), RunOutcome::Skipped(why));
            }
        };
        let mut rec = self.schedule_rec(id)?;
        rec.live.push(target);
        rec.runs_started += 1;
        rec.remember(RunEntry { fire_ms, manual, target: Some(target), outcome: RunOutcome::Live, at_ms: ctx.now_ms });
        self.put_schedule(rec);
        Ok((Some(target), None))
    }

    /// Submit `template` as a run with `origin`; `Ok(Err)` when the submit
    /// was refused (nothing changed).
    fn create_run(
        &mut self,
        kv: &dyn Kv,
        ctx: Ctx,
        template: &Template,
        origin: RunOrigin,
    ) -> Res<Result<RunTarget, CommandError>> {
        let submitted = match template {
            Template::Job(spec) => self.submit_job(kv, ctx, spec),
            Template::Workflow(spec) => self.submit_workflow(kv, ctx, spec),
        };
        match submitted {
            Ok(Outcome::Submitted { job, .. }) => {
                let rec = self.idx.jobs.get_mut(&job).ok_or_else(|| invariant(format!("run job {job} not live")))?;
                rec.run_of = Some(origin);
                self.dirty.jobs.insert(job);
                Ok(Ok(RunTarget::Job(job)))
            }
            Ok(Outcome::WorkflowSubmitted { workflow, .. }) => {
                // A workflow of gates only may finish in its submit's entry.
                if let Some(rec) = self.idx.workflows.get_mut(&workflow) {
                    rec.run_of = Some(origin);
                    self.dirty.workflows.insert(workflow);
                } else if let Some(rec) = self.dirty.finished_workflows.get_mut(&workflow) {
                    rec.run_of = Some(origin);
                }
                Ok(Ok(RunTarget::Workflow(workflow)))
            }
            Ok(other) => Err(invariant(format!("a run's submit answered {other:?}"))),
            Err(Fail::Reject(e)) => Ok(Err(e)),
            Err(e) => Err(e),
        }
    }

    /// A run ended (called from the entry that finished its job or workflow):
    /// record its outcome, start a buffered run, and time a fixed delay.
    pub(super) fn run_finished(
        &mut self,
        kv: &dyn Kv,
        ctx: Ctx,
        origin: &RunOrigin,
        target: RunTarget,
        outcome: RunOutcome,
    ) -> Res<()> {
        let RunOrigin::Schedule { schedule: id, .. } = *origin else { return Ok(()) };
        // A deleted schedule's runs finish as plain jobs.
        let Some(rec) = self.idx.schedules.get(&id) else { return Ok(()) };
        let mut rec = rec.clone();
        rec.live.retain(|t| *t != target);
        if let Some(e) = rec.recent.iter_mut().rev().find(|e| e.target == Some(target)) {
            e.outcome = outcome;
        }
        let buffered = if rec.live.is_empty() { rec.buffered.take() } else { None };
        if let (Cadence::FixedDelay { delay_ms }, true, None) = (&rec.rule.cadence, rec.live.is_empty(), buffered) {
            let next = ctx.now_ms.saturating_add(*delay_ms);
            rec.next_fire_ms = Some(next).filter(|n| rec.rule.end_ms.is_none_or(|e| *n <= e));
        }
        // The buffered fire's entry is replaced by its run's.
        rec.recent.retain(|e| !(e.outcome == RunOutcome::Buffered && Some(e.fire_ms) == buffered));
        self.put_schedule(rec);
        if let Some(fire_ms) = buffered {
            let template = self.stored_template(kv, id)?;
            self.start_run(kv, ctx, id, fire_ms, false, &template)?;
            self.after_fire(ctx, id);
        }
        Ok(())
    }

    // ---- triggers and events ---------------------------------------------------------

    pub(super) fn create_trigger(&mut self, ctx: Ctx, spec: &TriggerSpec) -> Res<Outcome> {
        let hash = spec_hash("trigger spec", spec)?;
        if let Some(&id) = self.idx.trigger_names.get(&(spec.namespace.clone(), spec.name.clone())) {
            return if self.idx.triggers[&id].spec_hash == hash {
                Ok(Outcome::TriggerCreated { trigger: id, duplicate: true })
            } else {
                Err(name_taken("trigger", &spec.namespace, &spec.name, id))
            };
        }
        if self.idx.triggers.len() >= MAX_TRIGGERS {
            return Err(CommandError::LimitReached { what: "triggers".into(), limit: MAX_TRIGGERS as u64 }.into());
        }
        let topic = (spec.namespace.clone(), spec.topic.clone());
        if self.idx.triggers_by_topic.get(&topic).is_some_and(|t| t.len() >= MAX_TRIGGERS_PER_TOPIC) {
            return Err(CommandError::LimitReached {
                what: format!("triggers on topic {:?}", spec.topic),
                limit: MAX_TRIGGERS_PER_TOPIC as u64,
            }
            .into());
        }
        // Validated; mutations start here.
        let id = self.meta.next_trigger;
        self.meta.next_trigger += 1;
        let rec = TriggerRecord {
            id,
            namespace: spec.namespace.clone(),
            name: spec.name.clone(),
            topic: spec.topic.clone(),
            filter: spec.filter.clone(),
            debounce_ms: spec.debounce_ms,
            debounce_key: spec.debounce_key.clone(),
            spec_hash: hash,
            created_ms: ctx.now_ms,
            last_run: BTreeMap::new(),
            runs_started: 0,
            events_debounced: 0,
        };
        self.idx.trigger_names.insert((spec.namespace.clone(), spec.name.clone()), id);
        self.idx.triggers_by_topic.entry(topic).or_default().insert(id);
        self.idx.triggers.insert(id, rec);
        self.dirty.triggers.insert(id);
        self.dirty.templates.insert(TemplateOwner::Trigger(id), Some(spec.template.clone()));
        Ok(Outcome::TriggerCreated { trigger: id, duplicate: false })
    }

    pub(super) fn delete_trigger(&mut self, id: TriggerId) -> Res<Outcome> {
        let Some(rec) = self.idx.triggers.remove(&id) else {
            return Err(CommandError::TriggerNotFound(id).into());
        };
        self.idx.trigger_names.remove(&(rec.namespace.clone(), rec.name.clone()));
        let topic = (rec.namespace, rec.topic);
        if let Some(set) = self.idx.triggers_by_topic.get_mut(&topic) {
            set.remove(&id);
            if set.is_empty() {
                self.idx.triggers_by_topic.remove(&topic);
            }
        }
        self.dirty.triggers.insert(id);
        self.dirty.templates.insert(TemplateOwner::Trigger(id), None);
        Ok(Outcome::TriggerDeleted { trigger: id })
    }

    /// Start one run per matching trigger, in this entry. The event id is
    /// remembered for the idempotency window: publishing it again starts
    /// nothing (with other content, it is refused).
    pub(super) fn publish_event(&mut self, kv: &dyn Kv, ctx: Ctx, ev: &EventSpec) -> Res<Outcome> {
        let hash = spec_hash("event", ev)?;
        let key = event_idem_key(&ev.namespace, &ev.event_id);
        if let Some(prior) = self.idem_rec(kv, &key)?
            && prior.expires_ms > ctx.now_ms
        {
            return if prior.spec_hash == hash {
                Ok(Outcome::EventPublished { runs: Vec::new(), debounced: 0, gates_opened: 0, duplicate: true })
            } else {
                Err(CommandError::IdempotencyConflict { key: ev.event_id.clone(), job: prior.job }.into())
            };
        }
        let ids: Vec<TriggerId> = self
            .idx
            .triggers_by_topic
            .get(&(ev.namespace.clone(), ev.topic.clone()))
            .map(|s| s.iter().copied().collect())
            .unwrap_or_default();
        // Read every template first, so a storage error changes nothing.
        let mut matching = Vec::new();
        for id in ids {
            let t = &self.idx.triggers[&id];
            if !t.filter.iter().all(|(k, v)| ev.attributes.get(k) == Some(v)) {
                continue;
            }
            let Some(template) = self.run_template(kv, TemplateOwner::Trigger(id))? else {
                return Err(invariant(format!("trigger {id} has no template")));
            };
            matching.push((id, template));
        }
        // Validated; mutations start here.
        let mut runs = Vec::new();
        let mut debounced = 0;
        for (id, template) in matching {
            let mut t = self.idx.triggers[&id].clone();
            let dkey = ev.attributes.get(&t.debounce_key).cloned().unwrap_or_default();
            if let Some(window) = t.debounce_ms
                && t.last_run.get(&dkey).is_some_and(|last| last.saturating_add(window) > ctx.now_ms)
            {
                t.events_debounced += 1;
                debounced += 1;
                self.idx.triggers.insert(id, t);
                self.dirty.triggers.insert(id);
                continue;
            }
            let template = template.with_event_payload(&ev.payload);
            let origin = RunOrigin::Event { trigger: id, event_id: ev.event_id.clone() };
            // The event's payload may make the run too big; it is refused alone.
            let run = match template.validate_run() {
                Ok(()) => self.create_run(kv, ctx, &template, origin)?,
                Err(e) => Err(e),
            };
            match run {
                Ok(target) => {
                    t.runs_started += 1;
                    if t.debounce_ms.is_some() {
                        if t.last_run.len() >= MAX_DEBOUNCE_KEYS && !t.last_run.contains_key(&dkey) {
                            // Forget the key that ran longest ago (ties: the smallest key).
                            let oldest =
                                t.last_run.iter().min_by_key(|(k, at)| (**at, (*k).clone())).map(|(k, _)| k.clone());
                            if let Some(k) = oldest {
                                t.last_run.remove(&k);
                            }
                        }
                        t.last_run.insert(dkey, ctx.now_ms);
                    }
                    runs.push(EventRun { trigger: id, run: Some(target), refused: None });
                }
                Err(e) => runs.push(EventRun { trigger: id, run: None, refused: Some(e.to_string()) }),
            }
            self.idx.triggers.insert(id, t);
            self.dirty.triggers.insert(id);
        }
        let gates_opened = self.open_event_gates(kv, ctx, &ev.namespace, &ev.topic, &ev.event_id, &ev.attributes)?;
        // The idempotency record names a job; a workflow run's id is not one.
        let first = runs.iter().find_map(|r| match r.run {
            Some(RunTarget::Job(j)) => Some(j),
            _ => None,
        });
        let first = first.unwrap_or(0);
        self.remember_idem(ctx, key, first, hash);
        Ok(Outcome::EventPublished { runs, debounced, gates_opened, duplicate: false })
    }
}

fn name_taken(what: &str, namespace: &str, name: &str, id: u64) -> Fail {
    CommandError::NameTaken { what: what.into(), namespace: namespace.into(), name: name.into(), id }.into()
}

fn invalid_cmd(field: &str, reason: String) -> Fail {
    CommandError::Invalid { field: field.into(), reason }.into()
}
