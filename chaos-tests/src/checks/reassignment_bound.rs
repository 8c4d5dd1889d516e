//! **reassignment_bound**: a dead worker's tasks are granted again within its
//! lease TTL plus one check interval (promise 3 of `docs/guarantees.md`).
//!
//! For every worker fault (a `nemesis` start, outcome `installed`, whose
//! targets name workers: `kill-worker`, `pause-worker`), the tasks the worker
//! *held* are those whose newest grant (by token) seen before the fault went
//! to it, and whose attempt it had not seen committed or fenced. The worker
//! stopped heartbeating at the fault's `t` (it was already SIGKILLed or
//! SIGSTOPped when the event was recorded), so its lease ran out at most one
//! TTL later. Each held task's next attempt (an `assign` with a larger token,
//! to any worker) must be seen within
//!
//! ```text
//! bound = ttl_ms + check_interval_ms + Config::reassign_slack_ms
//! ```
//!
//! of the fault's `t`.
//!
//! A leader change restarts that clock: the new leader gives every live
//! session one fresh TTL from its takeover, which neither expires nor extends
//! every lease wholesale. So a takeover at time g, before the deadline, moves
//! the deadline to g + bound. Takeovers come from `leader` events (the
//! observer saw the new leader no earlier than it took over) and from every
//! nemesis event that may have hit a node (anything but a worker-only fault),
//! as a takeover [`Config::FAILOVER_ELECTION_TIMEOUTS`] election timeouts
//! after it.
//!
//! Exempt: a task whose held attempt committed from a complete sent before
//! the deadline (it finished), one that went dead or was cancelled without a
//! newer attempt (it or its job finished), and one missing from the final
//! state (`no_lost_jobs` judges that). A task never granted again and still
//! unfinished in a final state read after its deadline is a violation, and so
//! is a held attempt that committed only after its deadline (its lease never
//! ran out).
//!
//! The bound needs the history's `config` event; without one (older
//! histories, the simulation tier) it is not measured and a note says so.

use std::collections::BTreeSet;

use super::Config;
use super::facts::{Facts, FinalView, Grant};
use crate::history::{CompleteOutcome, Nemesis, NemesisOutcome, NemesisPhase, RunConfig, TaskKey, TaskStatus, Token};
use crate::report::InvariantReport;

/// A moment by which a leader may have taken over and renewed every lease.
struct Takeover {
    t: u64,
    what: String,
}

/// Every possible takeover, by time.
fn takeovers(f: &Facts<'_>, rc: &RunConfig) -> Vec<Takeover> {
    let failover_ms = Config::FAILOVER_ELECTION_TIMEOUTS * rc.election_timeout_max_ms;
    let seen = f.leaders.iter().map(|&(seq, t, l)| Takeover {
        t,
        what: format!("leader {} of term {} seen at seq {seq} (t={t})", l.node, l.term),
    });
    let faults = f.nemeses.iter().filter(|(_, _, n)| !n.workers_only()).map(|&(seq, t, n)| Takeover {
        t: t + failover_ms,
        what: format!("{} {} at seq {seq} (t={t}) plus {failover_ms} ms of failover", n.name, phase_name(n.phase)),
    });
    let mut all: Vec<Takeover> = seen.chain(faults).collect();
    all.sort_by_key(|k| k.t);
    all
}

fn phase_name(p: NemesisPhase) -> &'static str {
    match p {
        NemesisPhase::Start => "start",
        NemesisPhase::Heal => "heal",
    }
}

/// When the tasks of a worker stopped at `start` must have been granted again.
struct Deadline<'k> {
    t: u64,
    /// The bound without any takeover.
    plain_ms: u64,
    /// The last takeover that moved it, if any.
    moved_by: Option<&'k Takeover>,
}

impl Deadline<'_> {
    /// `2600 ms (ttl 1500 + check 100 + slack 1000)`, and the takeover that
    /// restarted the clock, if one did.
    fn explain(&self, start: u64, parts: &str) -> String {
        let allowed = self.t - start;
        match self.moved_by {
            None => format!("{allowed} ms ({parts}; no leader change overlapped)"),
            Some(k) => format!("{allowed} ms ({parts}, counted from the takeover by {})", k.what),
        }
    }
}

fn deadline(start: u64, bound: u64, takeovers: &[Takeover]) -> Deadline<'_> {
    let mut d = Deadline { t: start + bound, plain_ms: bound, moved_by: None };
    // Sorted by time and the deadline only grows: the first takeover past it ends the scan.
    for k in takeovers.iter().filter(|k| k.t >= start) {
        if k.t > d.t {
            break;
        }
        if k.t + bound > d.t {
            d = Deadline { t: k.t + bound, plain_ms: bound, moved_by: Some(k) };
        }
    }
    d
}

/// A task the worker held when it stopped: its newest grant before the fault.
fn held<'a>(f: &Facts<'a>, worker: &str, fault_seq: u64) -> Vec<(TaskKey, Grant<'a>)> {
    let settled = |task: TaskKey, token: Token| {
        f.completes_of(task).any(|c| {
            c.worker == worker
                && c.token == token
                && c.reply.is_some_and(|(seq, o)| {
                    seq < fault_seq
                        && matches!(o, CompleteOutcome::Ok | CompleteOutcome::Duplicate | CompleteOutcome::Fenced)
                })
        })
    };
    f.grants
        .iter()
        .filter_map(|(&task, grants)| {
            let newest = grants
                .iter()
                .filter(|g| g.seq < fault_seq)
                .copied()
                .reduce(|best, g| if g.token > best.token { g } else { best })?;
            (newest.worker == worker && !settled(task, newest.token)).then_some((task, newest))
        })
        .collect()
}

/// How the judged tasks ended, for the note.
#[derive(Default)]
struct Tally {
    faults: usize,
    held: usize,
    regranted: usize,
    /// Of those, granted after the plain bound, within a deadline a takeover moved.
    excused: usize,
    /// The longest time from a fault to a next grant within its deadline.
    longest_ms: Option<u64>,
    finished: usize,
    unseen: usize,
    missing: usize,
    early_final: usize,
}

pub(super) fn check(f: &Facts<'_>, config: &Config, out: &mut InvariantReport) {
    let Some((_, rc)) = f.run_config else {
        out.note(
            "the history records no run config (ttl_ms, check_interval_ms, election_timeout_max_ms): the \
             reassignment bound was not measured",
        );
        return;
    };
    let worker_faults: Vec<(u64, u64, &Nemesis)> = f
        .nemeses
        .iter()
        .copied()
        .filter(|(_, _, n)| {
            n.phase == NemesisPhase::Start && n.outcome == NemesisOutcome::Installed && !n.targets.workers.is_empty()
        })
        .collect();
    if worker_faults.is_empty() {
        out.note("no installed worker fault names its workers in `targets`: no reassignment to measure");
        return;
    }
    let Some(fin) = f.final_state() else {
        return super::no_final_state(out, "the reassignment bound");
    };

    let bound = rc.ttl_ms + rc.check_interval_ms + config.reassign_slack_ms;
    let parts = format!("ttl {} + check {} + slack {}", rc.ttl_ms, rc.check_interval_ms, config.reassign_slack_ms);
    let takeovers = takeovers(f, rc);
    let mut tally = Tally::default();
    // A task held across two faults of its worker is judged at the first.
    let mut judged: BTreeSet<(TaskKey, Token)> = BTreeSet::new();
    for (fault_seq, start, fault) in worker_faults {
        tally.faults += 1;
        let d = deadline(start, bound, &takeovers);
        for worker in &fault.targets.workers {
            for (task, g) in held(f, worker, fault_seq) {
                if !judged.insert((task, g.token)) {
                    continue;
                }
                tally.held += 1;
                let stopped = Stopped { task, worker, grant: g, fault, fault_seq, start };
                judge(f, &fin, &stopped, &d, &parts, &mut tally, out);
            }
        }
    }

    let longest = tally.longest_ms.map_or("none".to_string(), |ms| format!("{ms} ms"));
    out.note(format!(
        "{} worker faults, {} held tasks: {} granted again in time (longest {longest} after its fault; bound {bound} \
         ms = {parts}; {} of them later than that, within a deadline restarted by one of {} possible leader \
         takeovers), {} finished or cancelled first, {} granted again unseen, {} missing from the final state, {} \
         with the final state read before their deadline",
        tally.faults,
        tally.held,
        tally.regranted,
        tally.excused,
        takeovers.len(),
        tally.finished,
        tally.unseen,
        tally.missing,
        tally.early_final,
    ));
}

/// One held task of a stopped worker.
struct Stopped<'a, 'f> {
    task: TaskKey,
    worker: &'a str,
    grant: Grant<'f>,
    fault: &'a Nemesis,
    fault_seq: u64,
    start: u64,
}

impl Stopped<'_, '_> {
    /// `job 1 shard 1: w1 held token 11 (granted at seq 10) when pause-worker stopped it at seq 19 (t=2000)`
    fn describe(&self) -> String {
        format!(
            "{}: {} held token {} (granted at seq {}) when {} stopped it at seq {} (t={})",
            self.task, self.worker, self.grant.token, self.grant.seq, self.fault.name, self.fault_seq, self.start
        )
    }
}

fn judge(
    f: &Facts<'_>,
    fin: &FinalView<'_>,
    s: &Stopped<'_, '_>,
    d: &Deadline<'_>,
    parts: &str,
    tally: &mut Tally,
    out: &mut InvariantReport,
) {
    let task = s.task;
    let token = s.grant.token;
    let plain_bound = d.plain_ms;
    // Grants are in seq order; every grant before the fault has a token <= the held one.
    let next = f.grants.get(&task).into_iter().flatten().find(|g| g.token > token);
    if let Some(n) = next {
        // A hand-edited history may step back in time; that is early, not late.
        let took = n.t.saturating_sub(s.start);
        if n.t > d.t {
            out.flag(format!(
                "{}; the next attempt (token {}, to {}) was granted at seq {} (t={}), {took} ms later, over the \
                 allowed {}",
                s.describe(),
                n.token,
                n.worker,
                n.seq,
                n.t,
                d.explain(s.start, parts)
            ))
            .on_task(task)
            .token(token)
            .seqs([s.grant.seq, s.fault_seq, n.seq]);
        } else {
            tally.regranted += 1;
            if took > plain_bound {
                tally.excused += 1;
            }
            tally.longest_ms = Some(tally.longest_ms.unwrap_or(0).max(took));
        }
        return;
    }
    let Some(sh) = fin.shard(task) else {
        tally.missing += 1;
        return;
    };
    if sh.latest_token.is_some_and(|l| l > token) {
        // The cluster granted a newer attempt that no worker lived to record.
        tally.unseen += 1;
        return;
    }
    match sh.status {
        TaskStatus::Succeeded if sh.token == Some(token) => {
            let sent = f.completes_of(task).filter(|c| c.token == token).min_by_key(|c| c.invoke_seq);
            match sent {
                Some(c) if c.invoke_seq > s.fault_seq && c.invoke_t > d.t => {
                    out.flag(format!(
                        "{}; no later attempt was ever granted: the held attempt committed from {} at t={}, {} ms \
                         after the fault, over the allowed {}, so its lease never ran out",
                        s.describe(),
                        c.describe(),
                        c.invoke_t,
                        c.invoke_t.saturating_sub(s.start),
                        d.explain(s.start, parts)
                    ))
                    .on_task(task)
                    .token(token)
                    .seqs([s.grant.seq, s.fault_seq, c.invoke_seq, fin.seq]);
                }
                // Sent before the fault or within the lease; or sent by
                // nobody, which exactly_once_commit judges.
                _ => tally.finished += 1,
            }
        }
        // Another commit, or none: exactly_once_commit and fencing judge those.
        TaskStatus::Succeeded | TaskStatus::Dead | TaskStatus::Cancelled => tally.finished += 1,
        TaskStatus::Pending | TaskStatus::Running if fin.t <= d.t => tally.early_final += 1,
        TaskStatus::Pending | TaskStatus::Running => {
            out.flag(format!(
                "{}; no later attempt was ever granted, and the final state (seq {}, t={}, {} ms after the fault) \
                 says it is still {} with token {token}, over the allowed {}",
                s.describe(),
                fin.seq,
                fin.t,
                fin.t - s.start,
                sh.status.name(),
                d.explain(s.start, parts)
            ))
            .on_task(task)
            .token(token)
            .seqs([s.grant.seq, s.fault_seq, fin.seq]);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn takeover(t: u64) -> Takeover {
        Takeover { t, what: format!("t{t}") }
    }

    #[test]
    fn a_takeover_within_the_deadline_restarts_the_clock_and_later_ones_chain() {
        let ks = [takeover(500), takeover(1_900), takeover(2_500), takeover(9_000)];
        // Fault at 1000, bound 1600: due at 2600; the takeover at 1900 moves it
        // to 3500, which lets the one at 2500 move it to 4100; 9000 is too late.
        let d = deadline(1_000, 1_600, &ks);
        assert_eq!(d.t, 4_100);
        assert_eq!(d.moved_by.map(|k| k.t), Some(2_500));
        // None within reach: the plain bound.
        let ks = [takeover(500), takeover(2_601)];
        let d = deadline(1_000, 1_600, &ks);
        assert_eq!((d.t, d.moved_by.is_none()), (2_600, true));
        // Exactly at the deadline still counts.
        assert_eq!(deadline(1_000, 1_600, &[takeover(2_600)]).t, 4_200);
    }
}
