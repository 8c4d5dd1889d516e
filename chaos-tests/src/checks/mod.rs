//! The history checker: one file per invariant, all reading the same
//! [`facts::Facts`] digest of the history.
//!
//! Each fact is judged by exactly one invariant, so that one breach shows up
//! under the invariant that names its cause. For example, a task still pending
//! after heal is a liveness failure, not a lost job; and a completion for a job
//! missing from the final state is reported as the lost job, not again as a
//! lost commit.

mod event_runs_once;
mod exactly_once_commit;
mod facts;
mod fencing;
mod flows;
mod liveness_after_heal;
mod no_lost_jobs;
mod no_phantom_jobs;
mod overlap_skip_exclusive;
mod reassignment_bound;
mod reduce_at_most_once;
mod replica_convergence;
mod schedule_fire_once;
mod skipped_never_runs;
mod step_trigger_order;
mod well_formed;
mod workflow_result;
mod workflows_finish;

use crate::history::History;
use crate::report::{Invariant, InvariantReport, Report};
use facts::Facts;

/// Checker settings. The run's own timing (lease TTL, check interval,
/// election timeout) comes from the history's `config` event, not from here.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// Longest allowed time from the last `heal` nemesis event to the drained
    /// final state, in ms (recorder clock).
    pub liveness_bound_ms: u64,
    /// Added to `ttl_ms + check_interval_ms` when judging how soon a dead
    /// worker's tasks are granted again, in ms. See
    /// [`Config::DEFAULT_REASSIGN_SLACK_MS`].
    pub reassign_slack_ms: u64,
}

impl Config {
    /// Default liveness bound: generous next to a failover plus one worker
    /// TTL, so that a slow CI machine does not fail a healthy run.
    pub const DEFAULT_LIVENESS_BOUND_MS: u64 = 60_000;

    /// Default slack of the reassignment bound. Between a lease running out
    /// and the history's `assign` of the next attempt lie two Raft commits
    /// (`ExpireWorker`, then `AssignTasks`), each fsynced on a majority, a
    /// scheduling round (up to 50 ms), the push down the new owner's stream
    /// and its record; a heartbeat already in flight when the worker stopped
    /// can renew the lease by its delivery time; and event times are whole
    /// ms truncated from µs on both ends (2 ms). On a 2-core machine shared
    /// by 3 to 5 nodes, 4 workers and the harness, one commit has been seen
    /// to take a few hundred ms, so 1 s leaves margin for two. It stays
    /// below the harness's 1.5 s TTL, so a lease renewed once too often (a
    /// wholesale extension) or never expiring is still caught.
    pub const DEFAULT_REASSIGN_SLACK_MS: u64 = 1_000;

    /// A leader change caused by a fault on nodes is over, and the new
    /// leader has renewed every lease, within this many (largest) election
    /// timeouts of the nemesis event: an openraft follower campaigns after
    /// the leader lease plus its own timeout (2), each split vote costs
    /// another, a node restarted at heal must open its store before it can
    /// disrupt anything, and a loaded machine slows every vote's fsync.
    /// Later takeovers are seen directly in `leader` events.
    pub const FAILOVER_ELECTION_TIMEOUTS: u64 = 10;
}

impl Default for Config {
    fn default() -> Self {
        Self { liveness_bound_ms: Self::DEFAULT_LIVENESS_BOUND_MS, reassign_slack_ms: Self::DEFAULT_REASSIGN_SLACK_MS }
    }
}

/// Check `history` against every invariant. Never talks to a cluster.
pub fn check(history: &History, config: &Config) -> Report {
    let facts = Facts::new(history);
    let invariants = Invariant::ALL
        .iter()
        .map(|&inv| {
            let mut out = InvariantReport::new(inv);
            match inv {
                Invariant::WellFormed => well_formed::check(&facts, &mut out),
                Invariant::NoLostJobs => no_lost_jobs::check(&facts, &mut out),
                Invariant::NoPhantomJobs => no_phantom_jobs::check(&facts, &mut out),
                Invariant::ExactlyOnceCommit => exactly_once_commit::check(&facts, &mut out),
                Invariant::Fencing => fencing::check(&facts, &mut out),
                Invariant::ReplicaConvergence => replica_convergence::check(&facts, &mut out),
                Invariant::LivenessAfterHeal => liveness_after_heal::check(&facts, config, &mut out),
                Invariant::ReassignmentBound => reassignment_bound::check(&facts, config, &mut out),
                Invariant::StepTriggerOrder => step_trigger_order::check(&facts, &mut out),
                Invariant::SkippedNeverRuns => skipped_never_runs::check(&facts, &mut out),
                Invariant::WorkflowsFinish => workflows_finish::check(&facts, &mut out),
                Invariant::ReduceAtMostOnce => reduce_at_most_once::check(&facts, &mut out),
                Invariant::WorkflowResult => workflow_result::check(&facts, &mut out),
                Invariant::ScheduleFireOnce => schedule_fire_once::check(&facts, &mut out),
                Invariant::OverlapSkipExclusive => overlap_skip_exclusive::check(&facts, &mut out),
                Invariant::EventRunsOnce => event_runs_once::check(&facts, &mut out),
            }
            out
        })
        .collect();
    Report { invariants }
}

/// The message used by every invariant that needs a final state and has none.
/// Failing closed: a history that cannot show the property does not pass it.
fn no_final_state(out: &mut InvariantReport, what: &str) {
    out.flag(format!("the history has no final_state event, so {what} cannot be shown"));
}
