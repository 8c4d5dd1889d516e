//! The workflows of a history, digested for the workflow invariants: each
//! workflow of the final state with the shape it was submitted with, its
//! jobs by step, and the grants of those jobs; and the checker's own reading
//! of the trigger rules, independent of the cluster's.
//!
//! The shape comes from the submitter's `workflow_submit_invoke` (what was
//! asked), the step states and jobs from the final state (what happened),
//! and which successors a choice took from its committed result, not from
//! the cluster's `chosen`, so that a wrong choice record cannot hide a wrong
//! skip.

use std::collections::BTreeMap;

use super::facts::{Facts, FinalView, Grant};
use crate::history::{
    FinalJob, FinalStep, FinalWorkflow, StepRole, StepState, TaskKey, TaskStatus, Token, TriggerRule, WorkflowStepSpec,
    WorkflowSubmitInvoke,
};
use crate::report::InvariantReport;

/// How one predecessor ended, as a successor sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Edge {
    Pending,
    Succeeded,
    Failed,
    /// Skipped, cancelled, or a choice that did not take this successor.
    Skipped,
}

/// What a step's trigger rule says on its predecessors' final states.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Readiness {
    /// A predecessor has not finished: this one.
    Wait(String),
    Run,
    Skip,
}

/// The rule on the outcomes of a step's incoming edges. Every rule waits
/// until every predecessor has finished.
pub(crate) fn readiness(rule: TriggerRule, edges: &[(&str, Edge)]) -> Readiness {
    if let Some((p, _)) = edges.iter().find(|(_, e)| *e == Edge::Pending) {
        return Readiness::Wait(p.to_string());
    }
    let ok = edges.iter().filter(|(_, e)| *e == Edge::Succeeded).count();
    let failed = edges.iter().filter(|(_, e)| *e == Edge::Failed).count();
    let run = match rule {
        TriggerRule::AllSucceeded => ok == edges.len(),
        TriggerRule::AnySucceeded => ok > 0,
        TriggerRule::AllDone => true,
        TriggerRule::AnyFailed => failed > 0,
        TriggerRule::NoneFailed => failed == 0 && ok > 0,
    };
    if run { Readiness::Run } else { Readiness::Skip }
}

/// One workflow of the final state.
pub(crate) struct Flow<'a> {
    pub rec: &'a FinalWorkflow,
    /// The shape it was submitted with (found by its key); `None` if no
    /// submit names it, which no_phantom_jobs reports.
    pub spec: Option<&'a WorkflowSubmitInvoke>,
    /// Its jobs in the final state, by step name.
    jobs: BTreeMap<&'a str, Vec<&'a FinalJob>>,
}

/// Every workflow of the final state, with the final state itself.
pub(crate) struct Flows<'a> {
    pub fin: FinalView<'a>,
    pub flows: Vec<Flow<'a>>,
}

impl<'a> Flows<'a> {
    /// The digest, or `None` when there is nothing to judge: no final state
    /// (failing closed if workflows were submitted) or no workflow at all.
    pub fn new(f: &Facts<'a>, out: &mut InvariantReport, what: &str) -> Option<Self> {
        let Some(fin) = f.final_state() else {
            if f.workflow_submits.is_empty() {
                out.note("no workflow was submitted and there is no final state: nothing to judge");
            } else {
                super::no_final_state(out, what);
            }
            return None;
        };
        if f.workflow_submits.is_empty() && fin.state.workflows.is_empty() {
            out.note("no workflow was submitted: nothing to judge");
            return None;
        }
        let mut flows: Vec<Flow<'a>> = fin
            .state
            .workflows
            .iter()
            .map(|rec| {
                let by_ack = f.workflow_submits.iter().find(|s| s.acked() == Some(rec.id));
                let by_key = f.workflow_submits.iter().find(|s| !rec.key.is_empty() && s.spec.key == rec.key);
                Flow { rec, spec: by_ack.or(by_key).map(|s| s.spec), jobs: BTreeMap::new() }
            })
            .collect();
        for j in &fin.state.jobs {
            let Some(o) = &j.origin else { continue };
            if let Some(flow) = flows.iter_mut().find(|fl| fl.rec.id == o.workflow) {
                flow.jobs.entry(o.step.as_str()).or_default().push(j);
            }
        }
        Some(Flows { fin, flows })
    }
}

impl<'a> Flow<'a> {
    /// `step "map" of workflow 3`
    pub fn name(&self, step: &str) -> String {
        format!("step {step:?} of workflow {}", self.rec.id)
    }

    pub fn step(&self, name: &str) -> Option<&'a FinalStep> {
        self.rec.step(name)
    }

    /// The step's jobs in the final state.
    pub fn jobs_of(&self, step: &str) -> &[&'a FinalJob] {
        self.jobs.get(step).map_or(&[], Vec::as_slice)
    }

    /// The step's first job of `role` in the final state.
    pub fn job(&self, step: &str, role: StepRole) -> Option<&'a FinalJob> {
        self.jobs_of(step).iter().copied().find(|j| j.origin.as_ref().is_some_and(|o| o.role == role))
    }

    /// The job whose results are the step's output: its reduce, else its map.
    pub fn output_job(&self, step: &str) -> Option<&'a FinalJob> {
        self.job(step, StepRole::Reduce).or_else(|| self.job(step, StepRole::Map))
    }

    /// Grants of the step's jobs: those of its jobs in the final state, and
    /// those whose worker was told they belong to the step (a job missing
    /// from the final state is no_lost_jobs's, but its grants still count).
    pub fn grants(&self, f: &Facts<'a>, step: &str) -> Vec<(TaskKey, Grant<'a>)> {
        let ids: Vec<u64> = self.jobs_of(step).iter().map(|j| j.id).collect();
        f.grants
            .iter()
            .flat_map(|(task, gs)| gs.iter().map(move |g| (*task, *g)))
            .filter(|(task, g)| {
                ids.contains(&task.job) || g.step.is_some_and(|r| r.workflow == self.rec.id && r.step == step)
            })
            .collect()
    }

    /// The newest grant of any shard of the step's jobs of `roles` (by the
    /// final state's `latest_token` and by observed grants): the step was
    /// done with those jobs only after it.
    pub fn last_grant(&self, f: &Facts<'a>, step: &str, roles: &[StepRole]) -> Option<(Token, TaskKey)> {
        let mut best: Option<(Token, TaskKey)> = None;
        for j in self.jobs_of(step) {
            if !j.origin.as_ref().is_some_and(|o| roles.contains(&o.role)) {
                continue;
            }
            for sh in &j.shards {
                let task = TaskKey::new(j.id, sh.shard);
                let seen = f.max_grant(task).map(|g| g.token);
                if let Some(t) = sh.latest_token.max(seen)
                    && best.is_none_or(|(b, _)| t > b)
                {
                    best = Some((t, task));
                }
            }
        }
        best
    }

    /// Shard 0's committed result of the step's output job.
    pub fn output_result(&self, step: &str) -> Option<&'a str> {
        let job = self.output_job(step)?;
        let sh = job.shards.iter().find(|s| s.shard == 0)?;
        (sh.status == TaskStatus::Succeeded).then_some(sh.result.as_deref()).flatten()
    }

    /// The successors a succeeded choice step took, read from its
    /// committed result; `Err` says why the result names none.
    pub fn committed_choice(&self, step: &str) -> Result<Vec<String>, String> {
        let Some(result) = self.output_result(step) else {
            return Err("it committed no result".into());
        };
        serde_json::from_str::<Vec<String>>(result)
            .map_err(|e| format!("its committed result {result:?} is not a JSON array of step names ({e})"))
    }

    /// How predecessor `p` ended, as successor `succ` sees it.
    pub fn edge(&self, spec: &WorkflowSubmitInvoke, p: &str, succ: &str) -> Edge {
        let Some(ps) = self.step(p) else { return Edge::Pending };
        match ps.state {
            StepState::Succeeded if spec.step(p).is_some_and(|s| s.choice) => {
                let chosen = self.committed_choice(p).ok().or_else(|| ps.chosen.clone()).unwrap_or_default();
                if chosen.iter().any(|c| c == succ) { Edge::Succeeded } else { Edge::Skipped }
            }
            StepState::Succeeded => Edge::Succeeded,
            StepState::Failed => Edge::Failed,
            StepState::Skipped | StepState::Cancelled => Edge::Skipped,
            StepState::Waiting | StepState::Running | StepState::AwaitingApproval => Edge::Pending,
        }
    }

    /// What the step's rule says on its predecessors' final states.
    pub fn readiness(&self, spec: &WorkflowSubmitInvoke, step: &WorkflowStepSpec) -> Readiness {
        let edges: Vec<(&str, Edge)> =
            step.depends_on.iter().map(|p| (p.as_str(), self.edge(spec, p, &step.name))).collect();
        if edges.is_empty() {
            return Readiness::Run;
        }
        readiness(step.trigger, &edges)
    }

    /// `map succeeded, check failed`: the predecessors' final states.
    pub fn preds_summary(&self, spec: &WorkflowSubmitInvoke, step: &WorkflowStepSpec) -> String {
        let parts: Vec<String> = step
            .depends_on
            .iter()
            .map(|p| {
                let state = self.step(p).map_or("missing", |s| s.state.name());
                match self.edge(spec, p, &step.name) {
                    Edge::Skipped if self.step(p).is_some_and(|s| s.state == StepState::Succeeded) => {
                        format!("{p} succeeded without choosing it")
                    }
                    _ => format!("{p} {state}"),
                }
            })
            .collect();
        parts.join(", ")
    }
}

/// `job 7 (map)`
pub(crate) fn describe_job(j: &FinalJob) -> String {
    match &j.origin {
        Some(o) => format!("job {} ({})", j.id, o.role.name()),
        None => format!("job {}", j.id),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_rule_waits_for_all_then_runs_or_skips() {
        use Edge::*;
        let e = |v: &[Edge]| v.iter().map(|e| ("p", *e)).collect::<Vec<_>>();
        for rule in [
            TriggerRule::AllSucceeded,
            TriggerRule::AnySucceeded,
            TriggerRule::AllDone,
            TriggerRule::AnyFailed,
            TriggerRule::NoneFailed,
        ] {
            assert!(matches!(readiness(rule, &e(&[Succeeded, Pending])), Readiness::Wait(_)), "{rule:?}");
        }
        assert_eq!(readiness(TriggerRule::AllSucceeded, &e(&[Succeeded, Skipped])), Readiness::Skip);
        assert_eq!(readiness(TriggerRule::AnySucceeded, &e(&[Failed, Succeeded])), Readiness::Run);
        assert_eq!(readiness(TriggerRule::AllDone, &e(&[Failed, Skipped])), Readiness::Run);
        assert_eq!(readiness(TriggerRule::AnyFailed, &e(&[Succeeded, Skipped])), Readiness::Skip);
        assert_eq!(readiness(TriggerRule::AnyFailed, &e(&[Failed])), Readiness::Run);
        assert_eq!(readiness(TriggerRule::NoneFailed, &e(&[Skipped, Succeeded])), Readiness::Run);
        assert_eq!(readiness(TriggerRule::NoneFailed, &e(&[Skipped, Skipped])), Readiness::Skip);
        assert_eq!(readiness(TriggerRule::NoneFailed, &e(&[Failed, Succeeded])), Readiness::Skip);
    }
}
