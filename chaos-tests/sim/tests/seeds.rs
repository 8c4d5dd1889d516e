//! Hundreds of seeds, on 3 and 5 nodes: every checker invariant must hold.
//! `BATON_SIM_SEEDS=A..B` sets the range (default `0..250`), run once per
//! cluster size.

mod common;

use std::time::Instant;

use baton_sim::{SimConfig, TABLE_HEADER, table_row};

#[test]
fn every_seed_passes_every_invariant() {
    let range = common::seeds(0..250);
    println!("BATON_SIM_SEEDS={}..{} on 3 and 5 nodes", range.start, range.end);
    let mut jobs = Vec::new();
    for nodes in [3, 5] {
        let config = SimConfig { nodes, ..SimConfig::default() };
        jobs.extend(range.clone().map(|seed| (config.clone(), seed)));
    }
    let started = Instant::now();
    let outcomes = common::run_all(jobs);
    println!("{TABLE_HEADER}");
    for o in &outcomes {
        println!("{}", table_row(o));
    }
    let failed: Vec<_> = outcomes.iter().filter(|o| !o.passed()).collect();
    println!("{} runs in {:.1}s, {} failed", outcomes.len(), started.elapsed().as_secs_f64(), failed.len());
    let mut msg = String::new();
    for o in &failed {
        msg.push_str(&format!("\nseed {} ({} nodes) violates {:?}\n", o.seed, o.config.nodes, o.failed_invariants()));
        for v in o.report.violations().take(5) {
            msg.push_str(&format!("  [{}] {}\n", v.invariant, v.message));
        }
        for v in o.sim_violations.iter().take(5) {
            msg.push_str(&format!("  [sim] {v}\n"));
        }
        msg.push_str(&format!("  replay: {}\n", o.replay_command()));
    }
    assert!(failed.is_empty(), "{} of {} runs failed:{msg}", failed.len(), outcomes.len());
    // Every run acknowledged work and drained it.
    for o in &outcomes {
        assert!(o.summary.acknowledged > 0, "seed {} acknowledged no job; replay: {}", o.seed, o.replay_command());
    }
}

/// A sim that injects nothing proves nothing: over a small range, every kind
/// of fault happened, and the cluster's defences were exercised.
#[test]
fn the_sim_exercises_faults() {
    let mut jobs: Vec<_> = (0..24).map(|seed| (SimConfig::default(), seed)).collect();
    jobs.extend((0..8).map(|seed| (SimConfig { nodes: 5, ..SimConfig::default() }, seed)));
    let outcomes = common::run_all(jobs);
    let sum = |f: &dyn Fn(&baton_sim::Outcome) -> u64| outcomes.iter().map(f).sum::<u64>();
    let runs = outcomes.len() as u64;
    let elections = sum(&|o| o.stats.elections);
    let crashes = sum(&|o| o.stats.crashes);
    let partitions = sum(&|o| o.stats.partitions);
    let pauses = sum(&|o| o.stats.pauses);
    let dropped = sum(&|o| o.stats.dropped);
    let lost_unsynced = sum(&|o| o.stats.lost_unsynced_entries);
    let fenced = sum(&|o| o.summary.fenced);
    let duplicates = sum(&|o| o.summary.duplicates);
    let infos = sum(&|o| o.summary.infos);
    let zombie_reports = sum(&|o| o.stats.zombie_reports);
    let zombie_fenced = sum(&|o| o.stats.zombie_fenced);
    let clock_jumps = sum(&|o| o.stats.clock_jumps);
    let cancels = sum(&|o| o.stats.cancels);
    let cancels_applied = sum(&|o| o.stats.cancels_applied);
    let tasks_cancelled = sum(&|o| o.stats.tasks_cancelled);
    let jobs_retried = sum(&|o| o.stats.jobs_retried);
    let fail_reports = sum(&|o| o.stats.fail_reports);
    let fatal_fail_reports = sum(&|o| o.stats.fatal_fail_reports);
    let progress_reports = sum(&|o| o.stats.progress_reports);
    let large_jobs = sum(&|o| o.stats.large_jobs);
    let snapshot_builds = sum(&|o| o.stats.snapshot_builds);
    let snapshot_installs = sum(&|o| o.stats.snapshot_installs);
    let snapshot_restores = sum(&|o| o.stats.snapshot_restores);
    let failed_jobs = sum(&|o| o.summary.failed_jobs);
    let cancelled_jobs = sum(&|o| o.summary.cancelled_jobs);
    let workflows = sum(&|o| o.summary.workflows);
    let failed_workflows = sum(&|o| o.summary.failed_workflows);
    let cancelled_workflows = sum(&|o| o.summary.cancelled_workflows);
    let skipped_steps = sum(&|o| o.summary.skipped_steps);
    let gates_expired = sum(&|o| o.stats.gates_expired);
    let gates_decided = sum(&|o| o.stats.gates_decided);
    let reduces = sum(&|o| o.stats.reduces);
    let choices = sum(&|o| o.stats.choices);
    let children = sum(&|o| o.stats.children);
    let empty_generators = sum(&|o| o.stats.empty_generators);
    let schedules = sum(&|o| o.stats.schedules);
    let schedule_runs = sum(&|o| o.summary.schedule_runs);
    let fires_skipped = sum(&|o| o.stats.fires_skipped);
    let held = sum(&|o| o.stats.held_attempts);
    let events = sum(&|o| o.stats.events_published);
    let duplicate_events = sum(&|o| o.stats.events_duplicate);
    let event_runs = sum(&|o| o.summary.event_runs);
    println!(
        "{runs} runs: elections={elections} crashes={crashes} partitions={partitions} pauses={pauses} \
         dropped={dropped} lost_unsynced={lost_unsynced} fenced={fenced} duplicates={duplicates} infos={infos} \
         zombie_fenced={zombie_fenced}/{zombie_reports} clock_jumps={clock_jumps} cancels={cancels} \
         cancels_applied={cancels_applied} cancelled_jobs={cancelled_jobs} tasks_cancelled={tasks_cancelled} \
         jobs_retried={jobs_retried} fail_reports={fail_reports} \
         fatal={fatal_fail_reports} failed_jobs={failed_jobs} progress={progress_reports} large_jobs={large_jobs} \
         snapshot_builds={snapshot_builds} snapshot_installs={snapshot_installs} snapshot_restores={snapshot_restores} \
         workflows={workflows} failed_workflows={failed_workflows} cancelled_workflows={cancelled_workflows} \
         skipped_steps={skipped_steps} gates_expired={gates_expired} gates_decided={gates_decided} reduces={reduces} \
         choices={choices} children={children} empty_generators={empty_generators} schedules={schedules} \
         schedule_runs={schedule_runs} fires_skipped={fires_skipped} held={held} events={events} \
         duplicate_events={duplicate_events} event_runs={event_runs}"
    );
    assert!(clock_jumps > 0, "no node's wall clock ever stepped");
    assert!(cancels > 0 && cancelled_jobs > 0, "no job was ever cancelled ({cancels} cancels committed)");
    assert!(tasks_cancelled > 0, "no single shard was ever cancelled");
    assert!(jobs_retried > 0, "no job's dead shards were ever retried");
    assert!(
        fail_reports > fatal_fail_reports && fatal_fail_reports > 0,
        "failure reports {fail_reports}, fatal {fatal_fail_reports}"
    );
    assert!(failed_jobs > 0, "no job ever ended failed");
    assert!(progress_reports > 0, "no progress was ever reported");
    assert!(large_jobs > 0, "no job ever carried the largest payload");
    assert!(snapshot_builds > 0, "no node ever built a snapshot");
    assert!(snapshot_installs > 0, "no follower ever caught up by InstallSnapshot");
    assert!(snapshot_restores > 0, "no crashed node ever restarted from its snapshot");
    // More leaderships than runs: failovers happened, not just the first election.
    assert!(elections > runs, "elections {elections} over {runs} runs");
    assert!(crashes > 0 && partitions > 0 && pauses > 0 && dropped > 0);
    assert!(lost_unsynced > 0, "no crash ever lost an unsynced write");
    assert!(fenced > 0, "no stale report was ever fenced");
    assert!(zombie_fenced > 0, "no paused worker's stale report was fenced ({zombie_reports} zombie reports)");
    assert!(duplicates > 0, "no retried report was ever answered duplicate");
    assert!(infos > 0, "no client ever saw an unknown outcome");
    // Workflows: failure and skip propagation, cancels, gate timeouts (the
    // leader core's ExpireGates), reduces, choices and dynamic maps.
    assert!(workflows >= runs, "{workflows} workflows over {runs} runs");
    assert!(
        failed_workflows > 0 && cancelled_workflows > 0,
        "failed {failed_workflows}, cancelled {cancelled_workflows}"
    );
    assert!(skipped_steps > 0, "no step was ever skipped");
    assert!(gates_expired > 0, "no gate ever timed out");
    assert!(reduces > 0 && choices > 0 && children > 0, "reduces {reduces}, choices {choices}, children {children}");
    // Schedules and triggers: every run creates its three schedules; fires
    // run, some are skipped (overlap skip behind held runs, misfires after
    // outages), events start runs and repeated ids answer duplicate.
    assert_eq!(schedules, 3 * runs, "every run creates three schedules");
    assert!(schedule_runs > 0 && fires_skipped > 0, "schedule runs {schedule_runs}, skipped fires {fires_skipped}");
    assert!(held > 0, "no run of the overlap-skip schedule held its task");
    assert!(event_runs > 0 && duplicate_events > 0, "event runs {event_runs}, duplicate publishes {duplicate_events}");
    for o in &outcomes {
        assert!(
            o.passed(),
            "seed {}: {:?} {:?}; replay: {}",
            o.seed,
            o.failed_invariants(),
            o.sim_violations,
            o.replay_command()
        );
    }
}
