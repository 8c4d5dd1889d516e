//! **skipped_never_runs**: a skipped step never runs, and skip decisions
//! follow the trigger rules (issue 12's second workflow invariant).
//!
//! A step is skipped if the final state says so, or if its rule, applied by
//! the checker to its predecessors' final states (a choice's taken branches
//! read from its committed result), says skip. Such a step has no job in the
//! final state and no grant in the history. A step whose rule says skip is
//! skipped in the final state (or cancelled with its workflow); a step the
//! final state skipped had a rule that said so.

use super::facts::Facts;
use super::flows::{Flows, Readiness, describe_job};
use crate::history::{StepState, WorkflowStatus};
use crate::report::InvariantReport;

pub(super) fn check(f: &Facts<'_>, out: &mut InvariantReport) {
    let Some(flows) = Flows::new(f, out, "that skipped steps never ran") else { return };
    let mut skipped = 0;
    for flow in &flows.flows {
        let Some(spec) = flow.spec else { continue };
        for step in &spec.steps {
            let Some(rec) = flow.step(&step.name) else { continue };
            let rule = flow.readiness(spec, step);
            if rec.state != StepState::Skipped && rule != Readiness::Skip {
                continue;
            }
            skipped += 1;
            let why = format!(
                "{} (final state: {}; rule {} on {})",
                flow.name(&step.name),
                rec.state.name(),
                step.trigger.name(),
                flow.preds_summary(spec, step)
            );
            let grants = flow.grants(f, &step.name);
            let jobs = flow.jobs_of(&step.name);
            if let Some((task, g)) = grants.first() {
                out.flag(format!(
                    "{why} is skipped, but {task} was granted token {} to {} at seq {}: a skipped step never runs",
                    g.token, g.worker, g.seq
                ))
                .on_task(*task)
                .token(g.token)
                .seqs([g.seq, flows.fin.seq]);
                continue;
            }
            if let Some(j) = jobs.first() {
                out.flag(format!("{why} is skipped, but {} was started for it", describe_job(j)))
                    .job(j.id)
                    .seqs([flows.fin.seq]);
                continue;
            }
            let cancelled = rec.state == StepState::Cancelled && flow.rec.status == WorkflowStatus::Cancelled;
            match rule {
                Readiness::Skip if rec.state != StepState::Skipped && !cancelled => {
                    out.flag(format!("{why}: its rule cannot be met, so it must be skipped")).seqs([flows.fin.seq]);
                }
                Readiness::Run if rec.state == StepState::Skipped => {
                    out.flag(format!("{why} was skipped although its rule was met")).seqs([flows.fin.seq]);
                }
                Readiness::Wait(p) if rec.state == StepState::Skipped => {
                    out.flag(format!("{why} was skipped while its predecessor {p:?} had not finished"))
                        .seqs([flows.fin.seq]);
                }
                _ => {}
            }
        }
    }
    out.note(format!("{} workflows: {skipped} skipped steps checked for grants and jobs", flows.flows.len()));
}
