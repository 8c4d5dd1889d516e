//! Workflow handlers of the apply core. Every decision about a workflow is
//! made here, in the entry that causes it: the submit starts the steps with
//! no predecessors; the entry that finishes a step's job readies or skips its
//! successors, starts the reduce or the emitted shards, and finishes the
//! workflow. The leader only assigns shards and proposes gate timeouts.
//!
//! Steps move through `advance`, a worklist over steps that just became
//! terminal; each step enters it at most once, so one entry does at most
//! O(steps + edges) work ([`MAX_STEPS_PER_WORKFLOW`], [`MAX_EDGES_PER_WORKFLOW`]).

use serde_bytes::ByteBuf;

use super::*;

/// Idempotency keys of workflows share the jobs' table (and their
/// namespace's key space) behind a prefix no user key can contain (keys may
/// not hold control characters).
pub(crate) fn workflow_idem_key(namespace: &str, key: &str) -> IdemKey {
    IdemKey::new(namespace, &format!("\u{1}wf:{key}"))
}

impl Core {
    fn step_template(&self, kv: &dyn Kv, wf: WorkflowId, step: u32) -> Result<Option<StepTemplate>, StoreError> {
        match self.dirty.step_specs.get(&(wf, step)) {
            Some(t) => Ok(t.clone()),
            None => load(kv, &keys::step_spec(wf, step)),
        }
    }

    fn live_workflow(&self, kv: &dyn Kv, wf: WorkflowId) -> Res<&WorkflowRecord> {
        match self.idx.workflows.get(&wf) {
            Some(w) => Ok(w),
            None => Err(match self.workflow(kv, wf)? {
                Some(_) => CommandError::WorkflowFinished { workflow: wf }.into(),
                None => CommandError::WorkflowNotFound(wf).into(),
            }),
        }
    }

    /// The record of a live workflow, to change; marks it dirty.
    fn wf_mut(&mut self, wf: WorkflowId) -> Res<&mut WorkflowRecord> {
        self.dirty.workflows.insert(wf);
        self.idx.workflows.get_mut(&wf).ok_or_else(|| invariant(format!("workflow {wf} is not live")))
    }

    pub(super) fn submit_workflow(&mut self, kv: &dyn Kv, ctx: Ctx, spec: &WorkflowSpec) -> Res<Outcome> {
        let graph = spec.validate()?;
        for s in &spec.steps {
            if let StepKind::Job { job, .. } = &s.kind {
                job.check_not_before(ctx.now_ms)?;
            }
        }
        let encoded = codec::encode(spec).map_err(|source| StoreError::Encode { what: "workflow spec", source })?;
        let spec_hash = *blake3::hash(&encoded).as_bytes();
        let steps = spec.steps.len() as u32;
        let idem_key = spec.idempotency_key.as_deref().map(|k| workflow_idem_key(&spec.namespace, k));
        if let Some(key) = &idem_key
            && let Some(prior) = self.idem_rec(kv, key)?
            && prior.expires_ms > ctx.now_ms
        {
            return if prior.spec_hash == spec_hash {
                Ok(Outcome::WorkflowSubmitted { workflow: prior.job, steps, duplicate: true })
            } else {
                Err(CommandError::IdempotencyConflict {
                    key: spec.idempotency_key.clone().unwrap_or_default(),
                    job: prior.job,
                }
                .into())
            };
        }
        if self.idx.workflows.len() >= MAX_LIVE_WORKFLOWS {
            return Err(
                CommandError::LimitReached { what: "live workflows".into(), limit: MAX_LIVE_WORKFLOWS as u64 }.into()
            );
        }
        // The shards known at submit are reserved up front; dynamic children
        // and reduces may later pass the limit by what they add.
        if self.idx.live_tasks + spec.static_shards() > MAX_LIVE_TASKS {
            return Err(CommandError::LimitReached { what: "live tasks".into(), limit: MAX_LIVE_TASKS }.into());
        }
        // The namespace's quotas reserve the same way.
        let static_bytes = spec
            .steps
            .iter()
            .map(|s| match &s.kind {
                StepKind::Job { job, .. } => super::quota_ops::payload_bytes(&job.payloads),
                StepKind::Gate { .. } => 0,
            })
            .sum();
        self.check_quota(&spec.namespace, spec.static_shards(), static_bytes)?;
        // Validated; mutations start here.
        let id = self.meta.next_workflow;
        self.meta.next_workflow += 1;
        let index_of = |name: &str| spec.steps.iter().position(|s| s.name == name).map(|i| i as u32);
        let mut records = Vec::with_capacity(spec.steps.len());
        for (i, s) in spec.steps.iter().enumerate() {
            let shape = match &s.kind {
                StepKind::Job { job, reduce, choice, dynamic } => {
                    let mut job = job.clone();
                    job.namespace = spec.namespace.clone();
                    job.name = step_job_name(&spec.name, &s.name, StepRole::Map);
                    let shape = StepShape::Job {
                        shards: job.payloads.len() as u32,
                        reduce: reduce.is_some(),
                        choice: *choice,
                        dynamic: *dynamic,
                    };
                    let template = StepTemplate { job, reduce: reduce.clone() };
                    self.dirty.step_specs.insert((id, i as u32), Some(template));
                    shape
                }
                StepKind::Gate { timeout_ms, on_timeout, event } => {
                    StepShape::Gate { timeout_ms: *timeout_ms, on_timeout: *on_timeout, event: event.clone() }
                }
            };
            records.push(StepRecord {
                name: s.name.clone(),
                preds: graph.preds[i].clone(),
                succs: graph.succs[i].clone(),
                trigger: s.trigger,
                shape,
                state: StepState::Waiting,
                phase: None,
                generate_job: None,
                map_job: None,
                reduce_job: None,
                chosen: None,
                reason: None,
                started_ms: None,
                finished_ms: None,
            });
        }
        let roots: Vec<u32> = (0..steps).filter(|i| graph.preds[*i as usize].is_empty()).collect();
        let rec = WorkflowRecord {
            id,
            namespace: spec.namespace.clone(),
            name: spec.name.clone(),
            labels: spec.labels.clone(),
            idempotency_key: spec.idempotency_key.clone(),
            spec_hash,
            created_ms: ctx.now_ms,
            status: WorkflowStatus::Running,
            cancel_reason: None,
            finished_ms: None,
            result_step: spec.result_step.as_deref().and_then(index_of),
            steps: records,
            expires_ms: None,
            run_of: None,
        };
        self.idx.workflows.insert(id, rec);
        self.dirty.workflows.insert(id);
        if let Some(key) = idem_key {
            self.remember_idem(ctx, key, id, spec_hash);
        }
        let mut done = Vec::new();
        for r in roots {
            if self.start_step(kv, ctx, id, r)? {
                done.push(r);
            }
        }
        self.advance(kv, ctx, id, done)?;
        Ok(Outcome::WorkflowSubmitted { workflow: id, steps, duplicate: false })
    }

    /// Start a waiting step whose trigger rule is met. Returns true if the
    /// step is already terminal (never today: every kind waits for a job or
    /// a decision), so callers feed it to `advance` uniformly.
    fn start_step(&mut self, kv: &dyn Kv, ctx: Ctx, wf: WorkflowId, step: u32) -> Res<bool> {
        let rec = self.idx.workflows.get(&wf).ok_or_else(|| invariant(format!("workflow {wf} is not live")))?;
        let s = &rec.steps[step as usize];
        debug_assert_eq!(s.state, StepState::Waiting, "starting step {} of {wf}", s.name);
        match s.shape.clone() {
            StepShape::Gate { timeout_ms, event, .. } => {
                if let Some(e) = event {
                    let topic = (rec.namespace.clone(), e.topic.clone());
                    let waiting = self.idx.event_gates.entry(topic).or_default();
                    if waiting.len() >= MAX_EVENT_GATES_PER_TOPIC {
                        let why = format!(
                            "{MAX_EVENT_GATES_PER_TOPIC} event gates already wait on topic {:?} (the limit)",
                            e.topic
                        );
                        self.end_step(kv, wf, step, StepState::Failed, Some(why), ctx)?;
                        return Ok(true);
                    }
                    waiting.insert((wf, step));
                }
                let deadline_ms = timeout_ms.map(|t| ctx.now_ms.saturating_add(t));
                if let Some(d) = deadline_ms {
                    self.idx.gate_deadlines.insert((d, wf, step));
                }
                let s = &mut self.wf_mut(wf)?.steps[step as usize];
                s.state = StepState::AwaitingApproval { deadline_ms };
                s.started_ms = Some(ctx.now_ms);
                Ok(false)
            }
            StepShape::Job { dynamic, .. } => {
                let mut template = self
                    .step_template(kv, wf, step)?
                    .ok_or_else(|| invariant(format!("step {step} of workflow {wf} has no template")))?;
                let inputs = self.step_inputs(kv, wf, step)?;
                let role = if dynamic { StepRole::Generate } else { StepRole::Map };
                let payloads = std::mem::take(&mut template.job.payloads);
                let job = self.start_job(ctx, wf, step, role, &template, &payloads, inputs, None)?;
                // The map's payloads now live with its tasks; keep only the policies.
                template.job.payloads.clear();
                self.dirty.step_specs.insert((wf, step), Some(template));
                let s = &mut self.wf_mut(wf)?.steps[step as usize];
                s.state = StepState::Running;
                s.started_ms = Some(ctx.now_ms);
                s.phase = Some(role);
                match role {
                    StepRole::Generate => s.generate_job = Some(job),
                    _ => s.map_job = Some(job),
                }
                Ok(false)
            }
        }
    }

    /// The outputs of a step's succeeded predecessors, in step order.
    fn step_inputs(&self, kv: &dyn Kv, wf: WorkflowId, step: u32) -> Res<Vec<StepInput>> {
        let rec = self.idx.workflows.get(&wf).ok_or_else(|| invariant(format!("workflow {wf} is not live")))?;
        let mut inputs = Vec::new();
        for &p in &rec.steps[step as usize].preds {
            let ps = &rec.steps[p as usize];
            if ps.state != StepState::Succeeded {
                continue;
            }
            if let Some(job) = ps.output_job() {
                let rec = self.job(kv, job)?.ok_or_else(|| invariant(format!("step output job {job} is missing")))?;
                inputs.push(StepInput { step: ps.name.clone(), job, shards: rec.shards });
            }
        }
        Ok(inputs)
    }

    #[allow(clippy::too_many_arguments)]
    fn start_job(
        &mut self,
        ctx: Ctx,
        wf: WorkflowId,
        step: u32,
        role: StepRole,
        template: &StepTemplate,
        payloads: &[ByteBuf],
        inputs: Vec<StepInput>,
        reduce_of: Option<JobId>,
    ) -> Res<JobId> {
        let rec = self.idx.workflows.get(&wf).ok_or_else(|| invariant(format!("workflow {wf} is not live")))?;
        let step_name = rec.steps[step as usize].name.clone();
        let mut spec = template.job.clone();
        spec.name = step_job_name(&rec.name, &step_name, role);
        let origin = JobOrigin { workflow: wf, step, step_name, role, inputs, reduce_of };
        Ok(self.create_job(ctx, &spec, payloads, [0; 32], Some(origin)))
    }

    /// A job a workflow started has finished: move its step along.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn step_job_finished(
        &mut self,
        kv: &dyn Kv,
        ctx: Ctx,
        job: JobId,
        origin: &JobOrigin,
        status: JobStatus,
        cancel_reason: Option<String>,
        counts: Counts,
    ) -> Res<()> {
        let (wf, step) = (origin.workflow, origin.step);
        // A cancelled workflow, or a step already ended by it, ignores its jobs.
        let Some(rec) = self.idx.workflows.get(&wf) else { return Ok(()) };
        let s = &rec.steps[step as usize];
        if s.state != StepState::Running || s.phase != Some(origin.role) {
            return Ok(());
        }
        let outcome = match status {
            JobStatus::Succeeded => self.job_succeeded(kv, ctx, wf, step, job, origin.role)?,
            JobStatus::Cancelled => StepEnd::Failed(format!(
                "{} job {job} was cancelled: {}",
                origin.role.name(),
                cancel_reason.unwrap_or_default()
            )),
            _ => StepEnd::Failed(format!(
                "{} job {job} failed: {} of {} shards dead",
                origin.role.name(),
                counts.dead,
                counts.dead + counts.succeeded + counts.cancelled
            )),
        };
        match outcome {
            StepEnd::Continues => Ok(()),
            StepEnd::Succeeded => {
                self.end_step(kv, wf, step, StepState::Succeeded, None, ctx)?;
                self.advance(kv, ctx, wf, vec![step])
            }
            StepEnd::Failed(reason) => {
                self.end_step(kv, wf, step, StepState::Failed, Some(reason), ctx)?;
                self.advance(kv, ctx, wf, vec![step])
            }
        }
    }

    /// The step's current job succeeded: start its next job, or say how the step ends.
    fn job_succeeded(
        &mut self,
        kv: &dyn Kv,
        ctx: Ctx,
        wf: WorkflowId,
        step: u32,
        job: JobId,
        role: StepRole,
    ) -> Res<StepEnd> {
        let template = self
            .step_template(kv, wf, step)?
            .ok_or_else(|| invariant(format!("running step {step} of workflow {wf} has no template")))?;
        let inputs = || self.step_inputs(kv, wf, step);
        match role {
            StepRole::Generate => {
                let result = self.shard_result(kv, job)?;
                let children = match decode_children(&result) {
                    Ok(c) => c,
                    Err(e) => return Ok(StepEnd::Failed(format!("generator job {job}: {e}"))),
                };
                if children.is_empty() {
                    if template.reduce.is_some() {
                        let inputs = inputs()?;
                        self.start_reduce(ctx, wf, step, &template, inputs, None)?;
                        return Ok(StepEnd::Continues);
                    }
                    return self.step_result_checks(kv, wf, step);
                }
                let inputs = inputs()?;
                let map = self.start_job(ctx, wf, step, StepRole::Map, &template, &children, inputs, None)?;
                let s = &mut self.wf_mut(wf)?.steps[step as usize];
                s.map_job = Some(map);
                s.phase = Some(StepRole::Map);
                Ok(StepEnd::Continues)
            }
            StepRole::Map if template.reduce.is_some() => {
                let inputs = inputs()?;
                self.start_reduce(ctx, wf, step, &template, inputs, Some(job))?;
                Ok(StepEnd::Continues)
            }
            StepRole::Map | StepRole::Reduce => self.step_result_checks(kv, wf, step),
        }
    }

    fn start_reduce(
        &mut self,
        ctx: Ctx,
        wf: WorkflowId,
        step: u32,
        template: &StepTemplate,
        inputs: Vec<StepInput>,
        map: Option<JobId>,
    ) -> Res<()> {
        let payload = template.reduce.as_ref().map(|r| r.payload.clone()).unwrap_or_default();
        let reduce = self.start_job(ctx, wf, step, StepRole::Reduce, template, &[payload], inputs, map)?;
        let s = &mut self.wf_mut(wf)?.steps[step as usize];
        s.reduce_job = Some(reduce);
        s.phase = Some(StepRole::Reduce);
        Ok(())
    }

    /// The last job of a step succeeded. A choice step's result must name
    /// successors; it fails otherwise.
    fn step_result_checks(&mut self, kv: &dyn Kv, wf: WorkflowId, step: u32) -> Res<StepEnd> {
        let rec = &self.idx.workflows[&wf];
        let s = &rec.steps[step as usize];
        let StepShape::Job { choice: true, .. } = s.shape else {
            return Ok(StepEnd::Succeeded);
        };
        let Some(out) = s.output_job() else {
            return Ok(StepEnd::Failed("a choice step produced no result".into()));
        };
        let result = self.shard_result(kv, out)?;
        let names = match parse_choice(&result) {
            Ok(n) => n,
            Err(e) => return Ok(StepEnd::Failed(e)),
        };
        let rec = &self.idx.workflows[&wf];
        let s = &rec.steps[step as usize];
        let mut chosen = Vec::with_capacity(names.len());
        for n in &names {
            match s.succs.iter().find(|&&i| rec.steps[i as usize].name == *n) {
                Some(&i) => chosen.push(i),
                None => {
                    return Ok(StepEnd::Failed(format!(
                        "the choice named {n:?}, which is not a successor of {:?}",
                        s.name
                    )));
                }
            }
        }
        chosen.sort_unstable();
        chosen.dedup();
        self.wf_mut(wf)?.steps[step as usize].chosen = Some(chosen);
        Ok(StepEnd::Succeeded)
    }

    /// The committed result of a job's shard 0.
    fn shard_result(&self, kv: &dyn Kv, job: JobId) -> Res<Vec<u8>> {
        let key = TaskKey::new(job, 0);
        match self.task(kv, key)?.map(|t| t.state) {
            Some(TaskState::Succeeded { result, .. }) => Ok(result.into_vec()),
            other => Err(invariant(format!("succeeded job {job} has shard 0 in {other:?}"))),
        }
    }

    /// Put a step in a terminal state and drop what it kept for running.
    fn end_step(
        &mut self,
        _kv: &dyn Kv,
        wf: WorkflowId,
        step: u32,
        state: StepState,
        reason: Option<String>,
        ctx: Ctx,
    ) -> Res<()> {
        debug_assert!(state.is_terminal());
        let s = &mut self.wf_mut(wf)?.steps[step as usize];
        debug_assert!(!s.state.is_terminal(), "step {} of {wf} ends twice", s.name);
        let old = std::mem::replace(&mut s.state, state);
        s.reason = reason;
        s.finished_ms = Some(ctx.now_ms);
        let is_job = matches!(s.shape, StepShape::Job { .. });
        let event_topic = match &s.shape {
            StepShape::Gate { event: Some(e), .. } => Some(e.topic.clone()),
            _ => None,
        };
        if let StepState::AwaitingApproval { deadline_ms } = old {
            if let Some(d) = deadline_ms {
                self.idx.gate_deadlines.remove(&(d, wf, step));
            }
            if let Some(topic) = event_topic {
                let key = (self.idx.workflows[&wf].namespace.clone(), topic);
                if let Some(set) = self.idx.event_gates.get_mut(&key) {
                    set.remove(&(wf, step));
                    if set.is_empty() {
                        self.idx.event_gates.remove(&key);
                    }
                }
            }
        }
        if is_job {
            self.dirty.step_specs.insert((wf, step), None);
        }
        Ok(())
    }

    /// Judge the successors of steps that just ended, in order, until
    /// nothing changes; then finish the workflow if every step has ended.
    fn advance(&mut self, kv: &dyn Kv, ctx: Ctx, wf: WorkflowId, mut ended: Vec<u32>) -> Res<()> {
        let mut at = 0;
        while at < ended.len() {
            let step = ended[at];
            at += 1;
            let succs = self.idx.workflows[&wf].steps[step as usize].succs.clone();
            for succ in succs {
                let rec = &self.idx.workflows[&wf];
                let s = &rec.steps[succ as usize];
                if s.state != StepState::Waiting {
                    continue;
                }
                let edges: Vec<EdgeOutcome> = s.preds.iter().map(|&p| edge(rec, p, succ)).collect();
                match readiness(s.trigger, &edges) {
                    Readiness::Wait => {}
                    Readiness::Run => {
                        if self.start_step(kv, ctx, wf, succ)? {
                            ended.push(succ);
                        }
                    }
                    Readiness::Skip => {
                        let why = skip_reason(rec, succ);
                        self.end_step(kv, wf, succ, StepState::Skipped, Some(why), ctx)?;
                        ended.push(succ);
                    }
                }
            }
        }
        self.finish_workflow_if_done(kv, ctx, wf)
    }

    fn finish_workflow_if_done(&mut self, kv: &dyn Kv, ctx: Ctx, wf: WorkflowId) -> Res<()> {
        let rec = &self.idx.workflows[&wf];
        if !rec.steps.iter().all(|s| s.state.is_terminal()) {
            return Ok(());
        }
        let Some(mut rec) = self.idx.workflows.remove(&wf) else { return Ok(()) };
        if rec.status == WorkflowStatus::Running {
            rec.status = if rec.steps.iter().any(|s| s.state == StepState::Failed) {
                WorkflowStatus::Failed
            } else {
                WorkflowStatus::Succeeded
            };
        }
        rec.finished_ms = Some(ctx.now_ms);
        let at = ctx.now_ms.saturating_add(self.namespace_retention_ms(&rec.namespace));
        rec.expires_ms = Some(at);
        self.idx.expiry.insert((at, crate::lifecycle::GcTarget::Workflow(wf)));
        let run_of = rec.run_of.clone().map(|r| (r, rec.status));
        self.dirty.workflows.insert(wf);
        self.dirty.finished_workflows.insert(wf, rec);
        if let Some((run_of, status)) = run_of {
            let outcome = match status {
                WorkflowStatus::Succeeded => RunOutcome::Succeeded,
                WorkflowStatus::Cancelled => RunOutcome::Cancelled,
                _ => RunOutcome::Failed,
            };
            self.run_finished(kv, ctx, &run_of, RunTarget::Workflow(wf), outcome)?;
        }
        Ok(())
    }

    pub(super) fn cancel_workflow(&mut self, kv: &dyn Kv, ctx: Ctx, wf: WorkflowId, reason: &str) -> Res<Outcome> {
        let rec = self.live_workflow(kv, wf)?;
        let reason = if reason.is_empty() { "cancelled" } else { reason }.to_string();
        let mut running = Vec::new();
        let mut open = Vec::new();
        for (i, s) in rec.steps.iter().enumerate() {
            if s.state.is_terminal() {
                continue;
            }
            open.push(i as u32);
            let current = match s.phase {
                Some(StepRole::Generate) => s.generate_job,
                Some(StepRole::Map) => s.map_job,
                Some(StepRole::Reduce) => s.reduce_job,
                None => None,
            };
            if let Some(job) = current.filter(|j| self.idx.jobs.contains_key(j)) {
                running.push(job);
            }
        }
        // Validated; mutations start here. Steps end first, so the jobs'
        // cancellation below finds them ended and does not move them again.
        self.wf_mut(wf)?.status = WorkflowStatus::Cancelled;
        self.wf_mut(wf)?.cancel_reason = Some(reason.clone());
        for &i in &open {
            self.end_step(kv, wf, i, StepState::Cancelled, Some(reason.clone()), ctx)?;
        }
        let mut tasks_cancelled = 0;
        for job in running {
            match self.cancel_job(kv, ctx, job, &reason)? {
                Outcome::Cancelled { tasks_cancelled: n, .. } => tasks_cancelled += n,
                other => return Err(invariant(format!("cancel of job {job} answered {other:?}"))),
            }
        }
        self.finish_workflow_if_done(kv, ctx, wf)?;
        Ok(Outcome::WorkflowCancelled { workflow: wf, steps_cancelled: open.len() as u32, tasks_cancelled })
    }

    /// The index of a gate awaiting approval, or why there is none.
    fn waiting_gate(&self, kv: &dyn Kv, wf: WorkflowId, step: &str) -> Res<u32> {
        let rec = self.live_workflow(kv, wf)?;
        let Some(i) = rec.steps.iter().position(|s| s.name == step) else {
            return Err(CommandError::StepNotFound { workflow: wf, step: step.to_string() }.into());
        };
        let s = &rec.steps[i];
        if !matches!(s.state, StepState::AwaitingApproval { .. }) {
            let state = if matches!(s.shape, StepShape::Gate { .. }) { s.state.name() } else { "not a gate" };
            return Err(
                CommandError::GateNotWaiting { workflow: wf, step: step.to_string(), state: state.into() }.into()
            );
        }
        Ok(i as u32)
    }

    pub(super) fn resolve_gate(
        &mut self,
        kv: &dyn Kv,
        ctx: Ctx,
        wf: WorkflowId,
        step: &str,
        approve: bool,
        by: &str,
    ) -> Res<Outcome> {
        let i = self.waiting_gate(kv, wf, step)?;
        let verb = if approve { "approved" } else { "rejected" };
        let reason = if by.is_empty() { verb.to_string() } else { format!("{verb} by {by}") };
        let state = if approve { StepState::Succeeded } else { StepState::Failed };
        self.end_step(kv, wf, i, state, Some(reason), ctx)?;
        self.advance(kv, ctx, wf, vec![i])?;
        Ok(Outcome::GateResolved { workflow: wf, step: i, approved: approve })
    }

    /// Open every event gate waiting on the event's topic whose filter the
    /// event's attributes match, in this entry. Returns how many opened.
    pub(super) fn open_event_gates(
        &mut self,
        kv: &dyn Kv,
        ctx: Ctx,
        namespace: &str,
        topic: &str,
        event_id: &str,
        attributes: &BTreeMap<String, String>,
    ) -> Res<u32> {
        let Some(waiting) = self.idx.event_gates.get(&(namespace.to_string(), topic.to_string())) else {
            return Ok(0);
        };
        let matching: Vec<(WorkflowId, u32)> = waiting
            .iter()
            .filter(|(wf, step)| {
                matches!(&self.idx.workflows[wf].steps[*step as usize].shape,
                    StepShape::Gate { event: Some(e), .. } if e.matches(topic, attributes))
            })
            .copied()
            .collect();
        for &(wf, step) in &matching {
            // A cancel or an earlier gate's successors may have ended it in this entry.
            let waits = self
                .idx
                .workflows
                .get(&wf)
                .is_some_and(|r| matches!(r.steps[step as usize].state, StepState::AwaitingApproval { .. }));
            if waits {
                let reason = format!("approved by event {event_id:?}");
                self.end_step(kv, wf, step, StepState::Succeeded, Some(reason), ctx)?;
                self.advance(kv, ctx, wf, vec![step])?;
            }
        }
        Ok(matching.len() as u32)
    }

    /// A gate's timeout passed (checked against the entry's time): apply its
    /// `on_timeout`. Returns whether it was approved.
    pub(super) fn expire_gate(&mut self, kv: &dyn Kv, ctx: Ctx, wf: WorkflowId, step: u32) -> Res<bool> {
        let rec = self.live_workflow(kv, wf)?;
        let Some(s) = rec.steps.get(step as usize) else {
            return Err(CommandError::StepNotFound { workflow: wf, step: format!("#{step}") }.into());
        };
        let (StepState::AwaitingApproval { deadline_ms: Some(deadline) }, StepShape::Gate { on_timeout, .. }) =
            (&s.state, &s.shape)
        else {
            return Err(CommandError::GateNotWaiting {
                workflow: wf,
                step: s.name.clone(),
                state: s.state.name().into(),
            }
            .into());
        };
        if *deadline > ctx.now_ms {
            return Err(CommandError::GateNotWaiting {
                workflow: wf,
                step: s.name.clone(),
                state: format!("awaiting approval until {deadline}"),
            }
            .into());
        }
        let approve = *on_timeout == GateTimeout::Approve;
        let (state, reason) = if approve {
            (StepState::Succeeded, "approved on timeout")
        } else {
            (StepState::Failed, "rejected on timeout: no decision in time")
        };
        self.end_step(kv, wf, step, state, Some(reason.into()), ctx)?;
        self.advance(kv, ctx, wf, vec![step])?;
        Ok(approve)
    }
}

/// How a step's current job ended, for the step.
enum StepEnd {
    /// The step started its next job.
    Continues,
    Succeeded,
    Failed(String),
}

/// The name of a job a step starts, for listings.
fn step_job_name(workflow: &str, step: &str, role: StepRole) -> String {
    let name = match role {
        StepRole::Map => format!("{workflow}/{step}"),
        _ => format!("{workflow}/{step}/{}", role.name()),
    };
    // Job names are bounded like every name; keep the tail, which names the step.
    if name.len() <= MAX_NAME_BYTES {
        return name;
    }
    let mut cut = name.len() - MAX_NAME_BYTES;
    while !name.is_char_boundary(cut) {
        cut += 1;
    }
    name[cut..].to_string()
}

/// How predecessor `p` ended, as seen by successor `succ`.
fn edge(rec: &WorkflowRecord, p: u32, succ: u32) -> EdgeOutcome {
    let ps = &rec.steps[p as usize];
    match ps.state {
        StepState::Succeeded => match &ps.chosen {
            Some(chosen) if !chosen.contains(&succ) => EdgeOutcome::Skipped,
            _ => EdgeOutcome::Succeeded,
        },
        StepState::Failed => EdgeOutcome::Failed,
        StepState::Skipped | StepState::Cancelled => EdgeOutcome::Skipped,
        StepState::Waiting | StepState::Running | StepState::AwaitingApproval { .. } => EdgeOutcome::Pending,
    }
}

fn skip_reason(rec: &WorkflowRecord, step: u32) -> String {
    let s = &rec.steps[step as usize];
    let outcomes: Vec<String> = s
        .preds
        .iter()
        .map(|&p| {
            let e = match edge(rec, p, step) {
                EdgeOutcome::Skipped if rec.steps[p as usize].state == StepState::Succeeded => "not chosen",
                EdgeOutcome::Skipped => "skipped",
                EdgeOutcome::Failed => "failed",
                EdgeOutcome::Succeeded => "succeeded",
                EdgeOutcome::Pending => "pending",
            };
            format!("{} {e}", rec.steps[p as usize].name)
        })
        .collect();
    format!("{} not met: {}", s.trigger.name(), outcomes.join(", "))
}
