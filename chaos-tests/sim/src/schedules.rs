//! Schedules and event triggers in the simulation.

use baton_chaos::history::RunOf;
use baton_raft_store::schedule::RunOrigin;

/// The history's view of what started a job.
pub fn run_of(o: &RunOrigin) -> RunOf {
    match o {
        RunOrigin::Schedule { schedule, fire_ms, manual } => {
            RunOf::Schedule { schedule: *schedule, fire_ms: *fire_ms, manual: *manual }
        }
        RunOrigin::Event { trigger, event_id } => RunOf::Event { trigger: *trigger, event_id: event_id.clone() },
    }
}
