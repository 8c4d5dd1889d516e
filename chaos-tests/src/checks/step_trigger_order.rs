//! **step_trigger_order**: no step starts before its trigger rule is
//! satisfied (issue 12's first workflow invariant).
//!
//! A step started if the final state holds a job of it or a worker was
//! granted one. Then:
//!
//! - every predecessor is finished in the final state (a step whose rule
//!   says *skip* on those states is skipped_never_runs's);
//! - every grant of the step's jobs carries a larger token than every grant
//!   of every predecessor's jobs. Tokens are log indexes: a predecessor
//!   finishes only after its last shard's last attempt was granted, and a
//!   successor's jobs are created by the entry that finishes it, so their
//!   grants come later in the log;
//! - within a step, the reduce's grants follow every map grant, and a
//!   dynamic map's grants follow every grant of its generator.

use super::facts::Facts;
use super::flows::{Flows, Readiness, describe_job};
use crate::history::StepRole;
use crate::report::InvariantReport;

pub(super) fn check(f: &Facts<'_>, out: &mut InvariantReport) {
    let Some(flows) = Flows::new(f, out, "when workflow steps started") else { return };
    let (mut started, mut grants_checked) = (0, 0);
    for flow in &flows.flows {
        let Some(spec) = flow.spec else { continue };
        for step in &spec.steps {
            let grants = flow.grants(f, &step.name);
            if flow.jobs_of(&step.name).is_empty() && grants.is_empty() {
                continue;
            }
            started += 1;
            grants_checked += grants.len();
            if let Readiness::Wait(p) = flow.readiness(spec, step) {
                let state = flow.step(&p).map_or("missing", |s| s.state.name());
                let evidence = match (grants.first(), flow.jobs_of(&step.name).first()) {
                    (Some((task, g)), _) => {
                        format!("{task} was granted token {} to {} at seq {}", g.token, g.worker, g.seq)
                    }
                    (None, Some(j)) => format!("{} exists", describe_job(j)),
                    (None, None) => unreachable!("started"),
                };
                out.flag(format!(
                    "{} started ({evidence}), but its predecessor {p:?} is still {state} in the final state (seq {}): \
                     every rule waits for all predecessors to finish",
                    flow.name(&step.name),
                    flows.fin.seq
                ))
                .job(grants.first().map_or_else(|| flow.jobs_of(&step.name)[0].id, |(t, _)| t.job))
                .seqs(grants.first().map(|(_, g)| g.seq).into_iter().chain([flows.fin.seq]));
            }
            // Predecessors' last grants come before any of this step's.
            let all = [StepRole::Generate, StepRole::Map, StepRole::Reduce];
            for p in &step.depends_on {
                let Some(last) = flow.last_grant(f, p, &all) else { continue };
                let what = format!("its predecessor {p:?}");
                early(flow, &step.name, &grants, |_| true, last, &what, flows.fin.seq, out);
            }
            // Within the step: generate, then map, then reduce.
            if let Some(last) = flow.last_grant(f, &step.name, &[StepRole::Generate]) {
                let is_later = |r: Option<StepRole>| matches!(r, Some(StepRole::Map | StepRole::Reduce));
                early(flow, &step.name, &grants, is_later, last, "its generator", flows.fin.seq, out);
            }
            if let Some(last) = flow.last_grant(f, &step.name, &[StepRole::Map]) {
                let is_reduce = |r: Option<StepRole>| r == Some(StepRole::Reduce);
                early(flow, &step.name, &grants, is_reduce, last, "its map", flows.fin.seq, out);
            }
        }
    }
    out.note(format!(
        "{} workflows: {started} started steps, {grants_checked} of their grants checked against their predecessors' \
         last grants",
        flows.flows.len()
    ));
}

/// Flag the first grant of the step (among jobs whose role `which` selects)
/// whose token does not follow `last`, the newest grant of what had to finish first.
#[allow(clippy::too_many_arguments)]
fn early(
    flow: &super::flows::Flow<'_>,
    step: &str,
    grants: &[(crate::history::TaskKey, super::facts::Grant<'_>)],
    which: impl Fn(Option<StepRole>) -> bool,
    last: (crate::history::Token, crate::history::TaskKey),
    what: &str,
    final_seq: u64,
    out: &mut InvariantReport,
) {
    let role_of = |job: u64| {
        flow.jobs_of(step)
            .iter()
            .find(|j| j.id == job)
            .and_then(|j| j.origin.as_ref().map(|o| o.role))
            .or_else(|| grants.iter().find(|(t, _)| t.job == job).and_then(|(_, g)| g.step.map(|s| s.role)))
    };
    let (last_token, last_task) = last;
    if let Some((task, g)) = grants.iter().find(|(t, g)| which(role_of(t.job)) && g.token <= last_token) {
        out.flag(format!(
            "{}: {task} was granted token {} to {} at seq {}, but {what}'s {last_task} had been granted token \
             {last_token}: the step started before {what} finished",
            flow.name(step),
            g.token,
            g.worker,
            g.seq
        ))
        .on_task(*task)
        .token(g.token)
        .seqs([g.seq, final_seq]);
    }
}
