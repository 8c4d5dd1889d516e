//! **workflow_result**: results derived from shard results equal what the
//! committed shard results give (issue 12's fifth workflow invariant).
//!
//! - A reduce's committed result equals the reduce function of its map
//!   job's committed shard results. The submitter names the function in the
//!   step's `reduce`; the checker knows `sum`: every result starts with a
//!   decimal number and a space (`"17 w1:4/0@33"`), and the reduce's number
//!   is the sum of the map's (0 for a dynamic map that emitted no shard).
//! - A workflow that succeeded with a result step has the result step's
//!   committed output as its result.
//! - A choice step that succeeded chose exactly the successors its committed
//!   result names, and each is a successor.

use super::facts::Facts;
use super::flows::Flows;
use crate::history::{StepRole, StepState, TaskStatus, WorkflowStatus};
use crate::report::InvariantReport;

/// The leading decimal number of a workload result.
fn value(result: &str) -> Option<u128> {
    result.split(' ').next()?.parse().ok()
}

pub(super) fn check(f: &Facts<'_>, out: &mut InvariantReport) {
    let Some(flows) = Flows::new(f, out, "workflow results against committed shard results") else { return };
    let fin_seq = flows.fin.seq;
    let (mut reduces, mut results, mut choices) = (0, 0, 0);
    for flow in &flows.flows {
        let Some(spec) = flow.spec else { continue };
        for step in &spec.steps {
            let name = flow.name(&step.name);
            if let Some(func) = &step.reduce
                && let Some(reduce) = flow.job(&step.name, StepRole::Reduce)
                && let Some(r) = reduce.shards.iter().find(|s| s.status == TaskStatus::Succeeded)
            {
                let got = r.result.as_deref().unwrap_or_default();
                if func != "sum" {
                    out.note(format!("{name}: reduce function {func:?} is unknown to the checker; not judged"));
                    continue;
                }
                reduces += 1;
                let map = flow.job(&step.name, StepRole::Map);
                let inputs: Vec<(u32, Option<&str>)> =
                    map.map(|m| m.shards.iter().map(|s| (s.shard, s.result.as_deref())).collect()).unwrap_or_default();
                let mut sum: u128 = 0;
                let mut bad = None;
                for (shard, res) in &inputs {
                    match res.and_then(value) {
                        Some(v) => sum += v,
                        None => bad = Some((*shard, res.unwrap_or("nothing"))),
                    }
                }
                let map_name =
                    map.map_or("no map job (no shard was emitted)".to_string(), |m| format!("map job {}", m.id));
                if let Some((shard, res)) = bad {
                    out.flag(format!(
                        "{name}: reduce job {} committed {got:?}, but shard {shard} of {map_name} committed {res:?}, \
                         which gives no number to sum",
                        reduce.id
                    ))
                    .job(reduce.id)
                    .seqs([fin_seq]);
                } else if value(got) != Some(sum) {
                    let parts: Vec<String> =
                        inputs.iter().map(|(_, r)| r.and_then(value).unwrap_or(0).to_string()).collect();
                    out.flag(format!(
                        "{name}: reduce job {} committed {got:?}, but the sum of {map_name}'s committed shard results \
                         is {sum} ({}): a reduce must read the committed shard results",
                        reduce.id,
                        if parts.is_empty() { "none".to_string() } else { parts.join(" + ") }
                    ))
                    .job(reduce.id)
                    .token(r.token.unwrap_or(0))
                    .seqs([fin_seq]);
                }
            }
            let Some(rec) = flow.step(&step.name) else { continue };
            if step.choice && rec.state == StepState::Succeeded {
                choices += 1;
                match flow.committed_choice(&step.name) {
                    Err(why) => {
                        out.flag(format!("{name} is a choice that succeeded, but {why}")).seqs([fin_seq]);
                    }
                    Ok(mut names) => {
                        let succs: Vec<&str> = spec.successors(&step.name).map(|s| s.name.as_str()).collect();
                        if let Some(n) = names.iter().find(|n| !succs.contains(&n.as_str())) {
                            out.flag(format!(
                                "{name} is a choice that succeeded, but its committed result names {n:?}, which is \
                                 not one of its successors {succs:?}"
                            ))
                            .seqs([fin_seq]);
                        }
                        let mut chosen = rec.chosen.clone().unwrap_or_default();
                        names.sort();
                        names.dedup();
                        chosen.sort();
                        if chosen != names {
                            out.flag(format!(
                                "{name} chose {chosen:?} in the final state (seq {fin_seq}), but its committed result \
                                 names {names:?}"
                            ))
                            .seqs([fin_seq]);
                        }
                    }
                }
            }
        }
        if let (Some(rs), WorkflowStatus::Succeeded) = (&spec.result_step, flow.rec.status) {
            results += 1;
            let expected = flow.output_result(rs);
            if flow.rec.result.as_deref() != expected {
                out.flag(format!(
                    "workflow {} has result {:?} in the final state (seq {fin_seq}), but its result step {rs:?} \
                     committed {:?}",
                    flow.rec.id, flow.rec.result, expected
                ))
                .seqs([fin_seq]);
            }
        }
    }
    out.note(format!(
        "{} workflows: {reduces} reduce results recomputed from their map shards, {results} workflow results and \
         {choices} choices checked against committed results",
        flows.flows.len()
    ));
}
