//! The history checker: one file per invariant, all reading the same
//! [`facts::Facts`] digest of the history.
//!
//! Each fact is judged by exactly one invariant, so that one breach shows up
//! under the invariant that names its cause. For example, a task still pending
//! after heal is a liveness failure, not a lost job; and a completion for a job
//! missing from the final state is reported as the lost job, not again as a
//! lost commit.

mod exactly_once_commit;
mod facts;
mod fencing;
mod liveness_after_heal;
mod no_lost_jobs;
mod no_phantom_jobs;
mod replica_convergence;
mod well_formed;

use crate::history::History;
use crate::report::{Invariant, InvariantReport, Report};
use facts::Facts;

/// Checker settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// Longest allowed time from the last `heal` nemesis event to the drained
    /// final state, in ms (recorder clock).
    pub liveness_bound_ms: u64,
}

impl Config {
    /// Default liveness bound: generous next to a failover plus one worker
    /// TTL, so that a slow CI machine does not fail a healthy run.
    pub const DEFAULT_LIVENESS_BOUND_MS: u64 = 60_000;
}

impl Default for Config {
    fn default() -> Self {
        Self { liveness_bound_ms: Self::DEFAULT_LIVENESS_BOUND_MS }
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
