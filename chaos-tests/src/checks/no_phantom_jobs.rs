//! **no_phantom_jobs**: every job in the final state comes from a submit that
//! may have applied, and one idempotency key never yields two jobs.
//!
//! A key whose every submit was refused (`submit_fail`) must have no job. A
//! key whose submits timed out (`submit_info`) may have one job or none, never
//! two; and all acknowledgements of one key name the same job.
//!
//! Workflows are judged the same way by their keys. A job a workflow started
//! has no key of its own: it must name (in its `origin`) a workflow that the
//! final state holds. A job a schedule or a trigger started (`run_of`) has
//! no key either: schedule_fire_once and event_runs_once judge where it
//! came from.

use std::collections::BTreeMap;

use super::facts::{Facts, SubmitOp, SubmitOutcome, WorkflowSubmitOp};
use crate::history::{FinalJob, FinalState, JobId};
use crate::report::InvariantReport;

pub(super) fn check(f: &Facts<'_>, out: &mut InvariantReport) {
    let mut by_key: BTreeMap<&str, Vec<&SubmitOp<'_>>> = BTreeMap::new();
    for s in &f.submits {
        by_key.entry(s.key).or_default().push(s);
    }

    // Acknowledgements of one key must agree; this needs no final state.
    for (key, subs) in &by_key {
        let mut acks: BTreeMap<JobId, &SubmitOp<'_>> = BTreeMap::new();
        for s in subs {
            if let Some(job) = s.acked_job() {
                acks.entry(job).or_insert(s);
            }
        }
        if acks.len() > 1 {
            let list: Vec<String> = acks.iter().map(|(job, s)| format!("job {job} by {}", s.describe())).collect();
            let second = *acks.keys().nth(1).expect("two acks");
            out.flag(format!(
                "idempotency key {key:?} was acknowledged as different jobs: {}; a retried submit must return the \
                 same job",
                list.join(" and ")
            ))
            .job(second)
            .seqs(acks.values().flat_map(|s| [s.invoke_seq, s.reply_seq().unwrap_or(s.invoke_seq)]));
        }
    }

    let Some(fin) = f.final_state() else {
        return super::no_final_state(out, "the absence of phantom jobs");
    };

    for fj in fin.state.jobs.iter().filter(|j| j.run_of.is_none()) {
        if let Some(o) = &fj.origin {
            if fin.state.workflow(o.workflow).is_none() {
                out.flag(format!(
                    "job {} is in the final state (seq {}) as the {} of step {:?} of workflow {}, which the final                      state does not hold",
                    fj.id,
                    fin.seq,
                    o.role.name(),
                    o.step,
                    o.workflow
                ))
                .job(fj.id)
                .seqs([fin.seq]);
            }
            continue;
        }
        match by_key.get(fj.key.as_str()) {
            None => {
                out.flag(format!(
                    "job {} (key {:?}) is in the final state (seq {}), but no submit ever invoked that key",
                    fj.id, fj.key, fin.seq
                ))
                .job(fj.id)
                .seqs([fin.seq]);
            }
            Some(subs) if subs.iter().all(|s| s.reply.is_some_and(|(_, o)| o == SubmitOutcome::Fail)) => {
                let list: Vec<String> = subs.iter().map(|s| s.describe()).collect();
                out.flag(format!(
                    "job {} (key {:?}) is in the final state (seq {}), but every submit of that key was refused as \
                     not applied: {}",
                    fj.id,
                    fj.key,
                    fin.seq,
                    list.join(", ")
                ))
                .job(fj.id)
                .seqs(subs.iter().map(|s| s.invoke_seq).chain([fin.seq]));
            }
            Some(subs) => extra_shards(fj, subs, fin.seq, out),
        }
    }

    let mut jobs_by_key: BTreeMap<&str, Vec<JobId>> = BTreeMap::new();
    for fj in fin.state.jobs.iter().filter(|j| j.origin.is_none() && j.run_of.is_none()) {
        jobs_by_key.entry(&fj.key).or_default().push(fj.id);
    }
    for (key, mut ids) in jobs_by_key.into_iter().filter(|(_, ids)| ids.len() > 1) {
        ids.sort_unstable();
        ids.dedup();
        if ids.len() < 2 {
            continue; // one job listed twice: well_formed reports it
        }
        let list: Vec<String> = ids.iter().map(|id| format!("job {id}")).collect();
        out.flag(format!(
            "{} in the final state (seq {}) share idempotency key {key:?}: one submit created more than one job",
            list.join(" and "),
            fin.seq
        ))
        .job(ids[1])
        .seqs([fin.seq]);
    }

    phantom_workflows(f, fin.state, fin.seq, out);
    out.note(format!(
        "{} final jobs checked against {} submitted keys; {} final workflows against {} workflow submits",
        fin.state.jobs.len(),
        by_key.len(),
        fin.state.workflows.len(),
        f.workflow_submits.len()
    ));
}

/// Workflows by key, as jobs are: submitted, not refused, one per key.
fn phantom_workflows(f: &Facts<'_>, state: &FinalState, final_seq: u64, out: &mut InvariantReport) {
    let mut by_key: BTreeMap<&str, Vec<&WorkflowSubmitOp<'_>>> = BTreeMap::new();
    for s in &f.workflow_submits {
        by_key.entry(s.spec.key.as_str()).or_default().push(s);
    }
    for (key, subs) in &by_key {
        let mut acks: BTreeMap<u64, &WorkflowSubmitOp<'_>> = BTreeMap::new();
        for s in subs {
            if let Some(w) = s.acked() {
                acks.entry(w).or_insert(s);
            }
        }
        if acks.len() > 1 {
            let list: Vec<String> = acks.iter().map(|(w, s)| format!("workflow {w} by {}", s.describe())).collect();
            out.flag(format!(
                "idempotency key {key:?} was acknowledged as different workflows: {}",
                list.join(" and ")
            ))
            .seqs(acks.values().flat_map(|s| [s.invoke_seq, s.reply.map_or(s.invoke_seq, |r| r.0)]));
        }
    }
    let mut per_key: BTreeMap<&str, Vec<u64>> = BTreeMap::new();
    for w in &state.workflows {
        per_key.entry(w.key.as_str()).or_default().push(w.id);
        match by_key.get(w.key.as_str()) {
            None => {
                out.flag(format!(
                    "workflow {} (key {:?}) is in the final state (seq {final_seq}), but no workflow submit ever                      invoked that key",
                    w.id, w.key
                ))
                .seqs([final_seq]);
            }
            Some(subs) if subs.iter().all(|s| s.reply.is_some_and(|(_, o)| o == SubmitOutcome::Fail)) => {
                out.flag(format!(
                    "workflow {} (key {:?}) is in the final state (seq {final_seq}), but every submit of that key                      was refused as not applied",
                    w.id, w.key
                ))
                .seqs(subs.iter().map(|s| s.invoke_seq).chain([final_seq]));
            }
            Some(_) => {}
        }
    }
    for (key, ids) in per_key.into_iter().filter(|(_, ids)| ids.len() > 1) {
        let list: Vec<String> = ids.iter().map(|id| format!("workflow {id}")).collect();
        out.flag(format!(
            "{} in the final state (seq {final_seq}) share idempotency key {key:?}: one submit created more than one              workflow",
            list.join(" and ")
        ))
        .seqs([final_seq]);
    }
}

/// Shards beyond the submitted count were never asked for.
fn extra_shards(fj: &FinalJob, subs: &[&SubmitOp<'_>], final_seq: u64, out: &mut InvariantReport) {
    let submitted = subs.iter().map(|s| s.shards).max().unwrap_or(0);
    for sh in fj.shards.iter().filter(|s| s.shard >= submitted) {
        out.flag(format!(
            "job {} shard {} is in the final state (seq {final_seq}), but key {:?} was submitted with {submitted} \
             shards",
            fj.id, sh.shard, fj.key
        ))
        .on_task(crate::history::TaskKey::new(fj.id, sh.shard))
        .seqs(subs.iter().map(|s| s.invoke_seq).chain([final_seq]));
    }
}
