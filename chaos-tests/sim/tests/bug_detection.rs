//! The sim must catch real bugs:
//! - a log store that acknowledges appends before they are synced loses
//!   acknowledged writes on power loss, and the checker must see a lost
//!   acknowledged job;
//! - a leader that compares log times (ready times, deadlines) with its own
//!   wall clock stalls for as long as its clock trails the log, and the
//!   checker must see work that never finishes after the heal.

mod common;

use baton_chaos::Invariant;
use baton_sim::SimConfig;

#[test]
fn acking_before_fsync_loses_acknowledged_jobs() {
    // openraft notices the damage too ("follower log reversion") and panics in
    // its own tasks; keep those expected panics out of the output.
    let default = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        if !info.location().is_some_and(|l| l.file().contains("openraft")) {
            default(info);
        }
    }));
    let config = SimConfig { ack_before_fsync: true, ..SimConfig::default() };
    let outcomes = common::run_all((0..16).map(|seed| (config.clone(), seed)).collect());
    let caught: Vec<_> = outcomes.iter().filter(|o| o.failed_invariants().contains(&Invariant::NoLostJobs)).collect();
    for o in &caught {
        println!("seed {} caught: {:?}; replay: {}", o.seed, o.failed_invariants(), o.replay_command());
        for v in o.report.get(Invariant::NoLostJobs).violations.iter().take(2) {
            println!("  {}", v.message);
        }
    }
    assert!(!caught.is_empty(), "no seed of 0..16 detected the ack-before-fsync bug");
}

#[test]
fn a_leader_that_plans_with_its_wall_clock_stalls_under_skew() {
    let config = SimConfig { wall_clock_as_log_time: true, ..SimConfig::default() };
    let outcomes = common::run_all((0..40).map(|seed| (config.clone(), seed)).collect());
    let caught: Vec<_> =
        outcomes.iter().filter(|o| o.failed_invariants().contains(&Invariant::LivenessAfterHeal)).collect();
    for o in &caught {
        println!("seed {} caught: {:?}; replay: {}", o.seed, o.failed_invariants(), o.replay_command());
    }
    assert!(!caught.is_empty(), "no seed of 0..40 detected a leader planning with its skewed wall clock");
}
