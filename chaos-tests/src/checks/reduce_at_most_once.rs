//! **reduce_at_most_once**: a reduce commits at most once per successful map
//! (issue 12's fourth workflow invariant).
//!
//! Per step: at most one reduce job, and only for a step that declared a
//! reduce; at most one committed reduce result; the reduce reads the step's
//! map job (`reduce_of`), which succeeded in every shard before it started
//! (a dynamic map that emitted no shard has no map job and no `reduce_of`);
//! and every worker granted the reduce was told to read that same job.

use super::facts::Facts;
use super::flows::Flows;
use crate::history::{JobStatus, StepRole, TaskKey, TaskStatus};
use crate::report::InvariantReport;

pub(super) fn check(f: &Facts<'_>, out: &mut InvariantReport) {
    let Some(flows) = Flows::new(f, out, "how often each reduce committed") else { return };
    let fin_seq = flows.fin.seq;
    let mut reduces = 0;
    for flow in &flows.flows {
        let Some(spec) = flow.spec else { continue };
        for step in &spec.steps {
            let jobs: Vec<_> = flow
                .jobs_of(&step.name)
                .iter()
                .filter(|j| j.origin.as_ref().is_some_and(|o| o.role == StepRole::Reduce))
                .collect();
            let Some(first) = jobs.first() else { continue };
            reduces += 1;
            let name = flow.name(&step.name);
            if step.reduce.is_none() {
                out.flag(format!("{name} declared no reduce, but job {} is a reduce of it", first.id))
                    .job(first.id)
                    .seqs([fin_seq]);
                continue;
            }
            let committed: Vec<String> = jobs
                .iter()
                .flat_map(|j| j.shards.iter().filter(|s| s.status == TaskStatus::Succeeded).map(move |s| (j.id, s)))
                .map(|(id, s)| format!("job {id} shard {} token {}", s.shard, s.token.unwrap_or(0)))
                .collect();
            if jobs.len() > 1 || committed.len() > 1 {
                let ids: Vec<String> = jobs.iter().map(|j| format!("job {}", j.id)).collect();
                out.flag(format!(
                    "{name} has {} reduce jobs ({}) with {} committed results [{}] in the final state (seq {fin_seq}): \
                     a reduce commits at most once per successful map",
                    jobs.len(),
                    ids.join(", "),
                    committed.len(),
                    committed.join(", ")
                ))
                .job(jobs[1.min(jobs.len() - 1)].id)
                .seqs([fin_seq]);
                continue;
            }
            let reduce_of = first.origin.as_ref().and_then(|o| o.reduce_of);
            let told = f
                .grants
                .get(&TaskKey::new(first.id, 0))
                .into_iter()
                .flatten()
                .find(|g| g.step.is_some_and(|s| s.reduce_of != reduce_of));
            if let Some(g) = told {
                let said = g.step.and_then(|s| s.reduce_of);
                out.flag(format!(
                    "{name}: {} was told at seq {} (token {}) to reduce {}, but reduce job {} reads {}",
                    g.worker,
                    g.seq,
                    g.token,
                    said.map_or("nothing".to_string(), |j| format!("job {j}")),
                    first.id,
                    reduce_of.map_or("nothing".to_string(), |j| format!("job {j}")),
                ))
                .on_task(TaskKey::new(first.id, 0))
                .token(g.token)
                .seqs([g.seq, fin_seq]);
            }
            match (flow.job(&step.name, StepRole::Map), reduce_of) {
                (Some(map), Some(of)) if map.id == of => {
                    let unfinished: Vec<String> = map
                        .shards
                        .iter()
                        .filter(|s| s.status != TaskStatus::Succeeded)
                        .map(|s| format!("shard {} {}", s.shard, s.status.name()))
                        .collect();
                    if map.status != JobStatus::Succeeded || !unfinished.is_empty() {
                        out.flag(format!(
                            "{name}: reduce job {} started, but its map job {} is {} with [{}]: a reduce runs only \
                             after every map shard succeeded",
                            first.id,
                            map.id,
                            map.status.name(),
                            unfinished.join(", ")
                        ))
                        .job(first.id)
                        .seqs([fin_seq]);
                    }
                }
                (None, None) if step.dynamic => {}
                (map, of) => {
                    out.flag(format!(
                        "{name}: reduce job {} reads {}, but the step's map job is {}",
                        first.id,
                        of.map_or("no map job".to_string(), |j| format!("job {j}")),
                        map.map_or("missing".to_string(), |m| format!("job {}", m.id))
                    ))
                    .job(first.id)
                    .seqs([fin_seq]);
                }
            }
        }
    }
    out.note(format!("{} workflows: {reduces} steps with a reduce job checked", flows.flows.len()));
}
