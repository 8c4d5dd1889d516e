//! **no_lost_jobs**: a job the cluster acknowledged, or whose tasks workers
//! were granted, is in the final state under the same id, with the submitted
//! idempotency key and every one of its shards.
//!
//! Whether those shards finished is `liveness_after_heal`'s question: a stuck
//! job is not a lost one.

use std::collections::{BTreeMap, BTreeSet};

use super::facts::{Facts, SubmitOp};
use crate::history::{JobId, TaskKey};
use crate::report::InvariantReport;

pub(super) fn check(f: &Facts<'_>, out: &mut InvariantReport) {
    let Some(fin) = f.final_state() else {
        return super::no_final_state(out, "acknowledged jobs surviving");
    };

    let mut acked: BTreeMap<JobId, Vec<&SubmitOp<'_>>> = BTreeMap::new();
    for s in &f.submits {
        if let Some(job) = s.acked_job() {
            acked.entry(job).or_default().push(s);
        }
    }

    // Jobs already reported missing, and tasks already reported missing, so a
    // job is reported once however much evidence there is for it.
    let mut missing_jobs: BTreeSet<JobId> = BTreeSet::new();
    let mut missing_tasks: BTreeSet<TaskKey> = BTreeSet::new();

    for (&job, subs) in &acked {
        let first = subs[0];
        let reply_seq = first.reply_seq().unwrap_or(first.invoke_seq);

        let keys: BTreeSet<&str> = subs.iter().map(|s| s.key).collect();
        if keys.len() > 1 {
            let list: Vec<String> = subs.iter().map(|s| s.describe()).collect();
            out.flag(format!(
                "job {job} was acknowledged for different idempotency keys: {}; one of those jobs is lost",
                list.join(", ")
            ))
            .job(job)
            .seqs(subs.iter().flat_map(|s| [s.invoke_seq, s.reply_seq().unwrap_or(s.invoke_seq)]));
        }

        let Some(fj) = fin.state.job(job) else {
            missing_jobs.insert(job);
            out.flag(format!(
                "{} was acknowledged as job {job} at seq {reply_seq}, but job {job} is not in the final state (seq {})",
                first.describe(),
                fin.seq
            ))
            .job(job)
            .seqs([first.invoke_seq, reply_seq, fin.seq]);
            continue;
        };

        for s in subs.iter().filter(|s| s.key != fj.key) {
            out.flag(format!(
                "{} was acknowledged as job {job}, but job {job} holds key {:?} in the final state (seq {})",
                s.describe(),
                fj.key,
                fin.seq
            ))
            .job(job)
            .seqs([s.invoke_seq, s.reply_seq().unwrap_or(s.invoke_seq), fin.seq]);
        }

        let shards = subs.iter().map(|s| s.shards).max().unwrap_or(0);
        for shard in 0..shards {
            if !fj.shards.iter().any(|s| s.shard == shard) {
                let task = TaskKey::new(job, shard);
                missing_tasks.insert(task);
                out.flag(format!(
                    "{task} is missing from the final state (seq {}), but {} acknowledged job {job} with {shards} shards",
                    fin.seq,
                    first.describe()
                ))
                .on_task(task)
                .seqs([first.invoke_seq, reply_seq, fin.seq]);
            }
        }
    }

    // A grant proves the job was applied, acknowledged or not (an `info`
    // submit can create a job no submitter knows the id of).
    for (&task, grants) in &f.grants {
        let g = grants[0];
        if fin.state.job(task.job).is_none() {
            if missing_jobs.insert(task.job) {
                out.flag(format!(
                    "job {} is not in the final state (seq {}), but {} was granted to {} with token {} at seq {}",
                    task.job, fin.seq, task, g.worker, g.token, g.seq
                ))
                .on_task(task)
                .token(g.token)
                .seqs([g.seq, fin.seq]);
            }
        } else if fin.shard(task).is_none() && missing_tasks.insert(task) {
            out.flag(format!(
                "{task} is missing from the final state (seq {}), but it was granted to {} with token {} at seq {}",
                fin.seq, g.worker, g.token, g.seq
            ))
            .on_task(task)
            .token(g.token)
            .seqs([g.seq, fin.seq]);
        }
    }

    out.note(format!(
        "{} acknowledged jobs and {} granted tasks checked against the final state",
        acked.len(),
        f.grants.len()
    ));
}
