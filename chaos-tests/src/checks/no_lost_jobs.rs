//! **no_lost_jobs**: a job the cluster acknowledged, or whose tasks workers
//! were granted, is in the final state under the same id, with the submitted
//! idempotency key and every one of its shards.
//!
//! Status reads are evidence too: a read invoked after a job's submit was
//! acknowledged must find it, and once a read has seen a job finished, every
//! later read (and the final state) must see the same final status.
//!
//! Whether those shards finished is `liveness_after_heal`'s question: a stuck
//! job is not a lost one.

use std::collections::{BTreeMap, BTreeSet};

use super::facts::{Facts, ReadOutcome, SubmitOp};
use crate::history::{JobId, JobStatus, TaskKey};
use crate::report::InvariantReport;

pub(super) fn check(f: &Facts<'_>, out: &mut InvariantReport) {
    let finished = check_reads(f, out);
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

    for (job, (status, seq)) in finished {
        if let Some(fj) = fin.state.job(job)
            && fj.status != status
        {
            out.flag(format!(
                "job {job} was read as {} at seq {seq}, but the final state (seq {}) says {}",
                status.name(),
                fin.seq,
                fj.status.name()
            ))
            .job(job)
            .seqs([seq, fin.seq]);
        }
    }

    out.note(format!(
        "{} acknowledged jobs and {} granted tasks checked against the final state",
        acked.len(),
        f.grants.len()
    ));
}

/// Reads against acknowledgements and against earlier reads. Returns, per
/// job, the first finished status read and the seq of that reply.
fn check_reads(f: &Facts<'_>, out: &mut InvariantReport) -> BTreeMap<JobId, (JobStatus, u64)> {
    let mut first_ack: BTreeMap<JobId, (u64, &SubmitOp<'_>)> = BTreeMap::new();
    for s in &f.submits {
        if let (Some(job), Some(seq)) = (s.acked_job(), s.reply_seq()) {
            let e = first_ack.entry(job).or_insert((seq, s));
            if seq < e.0 {
                *e = (seq, s);
            }
        }
    }
    let mut finished: BTreeMap<JobId, (JobStatus, u64)> = BTreeMap::new();
    let mut reads: Vec<_> = f.reads.iter().filter_map(|r| r.reply.map(|(seq, o)| (r, seq, o))).collect();
    reads.sort_by_key(|r| r.0.invoke_seq);
    for (r, reply_seq, outcome) in reads {
        if outcome == ReadOutcome::NotFound
            && let Some(&(ack_seq, s)) = first_ack.get(&r.job)
            && ack_seq < r.invoke_seq
        {
            out.flag(format!(
                "{} answered not found at seq {reply_seq}, but {} was acknowledged as job {} at seq {ack_seq}",
                r.describe(),
                s.describe(),
                r.job
            ))
            .job(r.job)
            .seqs([ack_seq, r.invoke_seq, reply_seq]);
        }
        if let Some(&(done, done_seq)) = finished.get(&r.job)
            && done_seq < r.invoke_seq
        {
            let now = match outcome {
                ReadOutcome::Found(st) if st == done => None,
                ReadOutcome::Found(st) => Some(st.name()),
                ReadOutcome::NotFound => Some("not found"),
                ReadOutcome::Fail => None,
            };
            if let Some(now) = now {
                out.flag(format!(
                    "job {} was read as {} at seq {done_seq}, then {} by {}: a finished job changed",
                    r.job,
                    done.name(),
                    now,
                    r.describe()
                ))
                .job(r.job)
                .seqs([done_seq, r.invoke_seq, reply_seq]);
            }
        }
        if let ReadOutcome::Found(st) = outcome
            && st.is_terminal()
        {
            finished.entry(r.job).or_insert((st, reply_seq));
        }
    }
    if !f.reads.is_empty() {
        out.note(format!("{} status reads checked against acknowledgements and finished states", f.reads.len()));
    }
    finished
}
