//! **exactly_once_commit**: each task commits at most one result; it is
//! committed with the latest token granted for the task; and it is the result
//! that some complete carrying that token sent.
//!
//! Replies count as evidence too: `ok` means "committed with my token" and
//! `duplicate` means "already committed with my token", so either must agree
//! with the final state, and two `ok`s with different tokens are two commits.
//! Tasks whose job is missing from the final state are `no_lost_jobs`'s.

use std::collections::BTreeMap;

use super::facts::{CompleteOp, Facts};
use crate::history::{CompleteOutcome, FinalShard, TaskKey, TaskStatus};
use crate::report::InvariantReport;

pub(super) fn check(f: &Facts<'_>, out: &mut InvariantReport) {
    two_acknowledged_commits(f, out);

    let Some(fin) = f.final_state() else {
        return super::no_final_state(out, "which result each task committed");
    };

    let mut commits = 0;
    for fj in &fin.state.jobs {
        let mut records: BTreeMap<u32, Vec<&FinalShard>> = BTreeMap::new();
        for sh in &fj.shards {
            records.entry(sh.shard).or_default().push(sh);
        }
        for (&shard, recs) in &records {
            let task = TaskKey::new(fj.id, shard);
            if recs.len() > 1 {
                let committed: Vec<String> =
                    recs.iter().filter_map(|r| r.token).map(|t| format!("token {t}")).collect();
                out.flag(format!(
                    "{task} has {} records in the final state (seq {}), committed with [{}]: a task commits at most \
                     one result",
                    recs.len(),
                    fin.seq,
                    committed.join(", ")
                ))
                .on_task(task)
                .seqs([fin.seq]);
            }
            for sh in recs {
                commits += usize::from(sh.token.is_some());
                judge_record(f, task, sh, fin.seq, out);
            }
        }
    }

    // Replies that promised a commit must match the final record.
    for c in &f.completes {
        let Some(outcome @ (CompleteOutcome::Ok | CompleteOutcome::Duplicate)) = c.outcome() else { continue };
        let Some(sh) = fin.shard(c.task) else { continue };
        if sh.token == Some(c.token) {
            continue;
        }
        let now = match sh.token {
            Some(t) => format!("commits token {t}"),
            None => format!("commits nothing (status {})", sh.status.name()),
        };
        let reply = c.reply.map_or(c.invoke_seq, |(s, _)| s);
        out.flag(format!(
            "{}: {} was answered {} at seq {reply}, but the final state (seq {}) {now}",
            c.task,
            c.describe(),
            outcome.name(),
            fin.seq
        ))
        .on_task(c.task)
        .token(c.token)
        .seqs([c.invoke_seq, reply, fin.seq]);
    }

    out.note(format!("{commits} committed results checked against grants and completes"));
}

/// Two `ok` replies with different tokens for one task: two commits happened.
fn two_acknowledged_commits(f: &Facts<'_>, out: &mut InvariantReport) {
    let mut oks: BTreeMap<TaskKey, Vec<&CompleteOp<'_>>> = BTreeMap::new();
    for c in f.completes.iter().filter(|c| c.outcome() == Some(CompleteOutcome::Ok)) {
        oks.entry(c.task).or_default().push(c);
    }
    for (task, list) in oks {
        let first = list[0];
        for c in list.iter().filter(|c| c.token != first.token) {
            out.flag(format!(
                "{task} was committed twice: {} and {} were both answered ok",
                first.describe(),
                c.describe()
            ))
            .on_task(task)
            .token(c.token)
            .seqs(
                [first.invoke_seq, c.invoke_seq]
                    .into_iter()
                    .chain(first.reply.map(|r| r.0))
                    .chain(c.reply.map(|r| r.0)),
            );
        }
    }
}

/// One final shard record: status and commit agree, and the commit is the
/// latest attempt's, with a result that attempt actually sent.
fn judge_record(f: &Facts<'_>, task: TaskKey, sh: &FinalShard, final_seq: u64, out: &mut InvariantReport) {
    let (token, result) = match (sh.status, sh.token, sh.result.as_deref()) {
        (TaskStatus::Succeeded, Some(token), Some(result)) => (token, result),
        (TaskStatus::Succeeded, _, _) => {
            out.flag(format!(
                "{task} is succeeded in the final state (seq {final_seq}) but lacks its committed result or token"
            ))
            .on_task(task)
            .seqs([final_seq]);
            return;
        }
        (_, None, None) => return,
        (status, token, _) => {
            let v = out.flag(format!(
                "{task} is {} in the final state (seq {final_seq}) but holds a committed result{}",
                status.name(),
                token.map(|t| format!(" (token {t})")).unwrap_or_default()
            ));
            v.on_task(task).seqs([final_seq]);
            if let Some(t) = token {
                v.token(t);
            }
            return;
        }
    };

    // The latest grant, from what workers saw and what the final state says.
    let observed = f.max_grant(task);
    let latest = observed.map(|g| g.token).max(sh.latest_token);
    if latest != Some(token) {
        let source = match (observed, sh.latest_token) {
            (Some(g), _) if Some(g.token) == latest => {
                format!("{} (granted to {} at seq {})", g.token, g.worker, g.seq)
            }
            (_, Some(l)) => format!("{l} (the final state's latest_token)"),
            (_, None) => "unknown: no grant was observed".to_string(),
        };
        out.flag(format!(
            "{task} committed token {token} in the final state (seq {final_seq}), but the latest token granted for it \
             is {source}: only the latest attempt may commit"
        ))
        .on_task(task)
        .token(token)
        .seqs(observed.map(|g| g.seq).into_iter().chain([final_seq]));
    }

    let same_token: Vec<&CompleteOp<'_>> = f.completes_of(task).filter(|c| c.token == token).collect();
    let candidates: Vec<&&CompleteOp<'_>> = same_token.iter().filter(|c| c.may_have_applied()).collect();
    if candidates.is_empty() {
        let refused: Vec<String> = same_token
            .iter()
            .map(|c| format!("seq {} {}", c.invoke_seq, c.outcome().map_or("unanswered", CompleteOutcome::name)))
            .collect();
        let why = if refused.is_empty() {
            "no complete with that token was invoked".to_string()
        } else {
            format!("every complete with that token was refused ({})", refused.join(", "))
        };
        out.flag(format!(
            "{task} committed result {result:?} with token {token} in the final state (seq {final_seq}), but {why}"
        ))
        .on_task(task)
        .token(token)
        .seqs(same_token.iter().map(|c| c.invoke_seq).chain([final_seq]));
    } else if !candidates.iter().any(|c| c.result == result) {
        let sent: Vec<String> = candidates.iter().map(|c| format!("{:?} (seq {})", c.result, c.invoke_seq)).collect();
        out.flag(format!(
            "{task} committed result {result:?} with token {token} in the final state (seq {final_seq}), but the \
             completes with that token sent {}",
            sent.join(", ")
        ))
        .on_task(task)
        .token(token)
        .seqs(candidates.iter().map(|c| c.invoke_seq).chain([final_seq]));
    }
}
