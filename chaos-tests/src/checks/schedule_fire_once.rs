//! **schedule_fire_once**: a schedule starts at most one run per fire time,
//! never before that time, and, under `fire_all` with overlap `allow`, one
//! for every fire time of its window (issue 14's first schedule invariant).
//!
//! Judged on the final state's jobs whose `run_of` names a schedule, against
//! the schedules the workload created (`schedule_create`):
//!
//! - **Once.** No two cadence runs (not `manual`) of one schedule share a
//!   fire time. Every schedule is judged, whatever its policies: a repeated
//!   or stale `Fire` must start nothing.
//! - **Not early.** A run's `created_ms` (log time of the entry that
//!   started it) is never before its fire time. Jitter only delays.
//! - **On the cadence.** For a fixed rate, every cadence run's fire time is
//!   `anchor + k * period`.
//! - **None missing.** For a fixed rate with misfire `fire_all` and overlap
//!   `allow`, every fire time between the schedule's first and last run has
//!   a run. The window is the runs' span: before the first run the
//!   schedule may not have been due yet, and after the workload's pause
//!   (`schedule_pause`) nothing is due. A missing time is excused only as
//!   `fire_all {max}` drops it: the catch-up that passed over it ran in the
//!   entry that created the next run, more than the misfire grace after the
//!   oldest missing time of its gap (the schedule's next fire time then,
//!   whose lateness makes the fire a misfire), and kept the `max` newest
//!   times, so the next run and the `max - 1` fire times after it all have
//!   runs (those after the last run excepted, if the workload paused the
//!   schedule: the pause may cut a catch-up short); or when the
//!   schedule may have had [`MAX_LIVE_RUNS_PER_SCHEDULE`] live runs when it
//!   came due: at some log time between the creation of the run before it
//!   and the run after it (the skipped fire's entry lies between them), that
//!   many runs were created and not yet finished. The cluster documents
//!   that cap, and a catch-up after a long outage (or a leader whose clock
//!   ran ahead) reaches it.
//!
//! A run naming a schedule the workload never created is reported here too
//! (no_phantom_jobs does not judge runs, which have no key).

use std::collections::{BTreeMap, BTreeSet};

use super::facts::Facts;
use crate::history::{MisfirePolicy, OverlapPolicy, ScheduleCadence};
use crate::report::InvariantReport;

/// Fire times a message lists before it says "and N more".
pub(crate) const MAX_LISTED: usize = 10;

/// Live runs a schedule with overlap `allow` may have; a fire beyond them
/// starts nothing. Mirrors the cluster's documented limit of the same name
/// (docs/schedules.md, "Limits"), not its code.
pub const MAX_LIVE_RUNS_PER_SCHEDULE: usize = 64;

/// The most runs of `runs` (created, finished) live at once at any log time
/// in `[from, to]`.
fn max_live(runs: &[(u64, Option<u64>)], from: u64, to: u64) -> usize {
    let live_at = |t: u64| runs.iter().filter(|(c, f)| *c <= t && f.is_none_or(|f| f > t)).count();
    let points = std::iter::once(from).chain(runs.iter().map(|(c, _)| *c).filter(|c| (from..=to).contains(c)));
    points.map(live_at).max().unwrap_or(0)
}

pub(super) fn check(f: &Facts<'_>, out: &mut InvariantReport) {
    let Some(fin) = f.final_state() else {
        if f.schedules.is_empty() {
            out.note("no schedule was created and there is no final state: nothing to judge");
            return;
        }
        return super::no_final_state(out, "how often each schedule fired");
    };
    let schedules = f.schedules_by_id();
    let runs = Facts::schedule_runs(&fin);
    let (mut judged_runs, mut unjudged_times, mut gap_checked, mut excused) = (0usize, 0usize, 0u64, 0u64);
    for (id, list) in &runs {
        let Some(&(create_seq, spec)) = schedules.get(id) else {
            let j = list[0].2;
            out.flag(format!(
                "job {} in the final state (seq {}) is a run of schedule {id}, which no acknowledged \
                 schedule_create names",
                j.id, fin.seq
            ))
            .job(j.id)
            .seqs([fin.seq]);
            continue;
        };
        let name = format!("schedule {id} ({}/{})", spec.namespace, spec.name);
        let cadence: Vec<_> = list.iter().filter(|(_, manual, _)| !manual).collect();
        judged_runs += list.len();

        // Once per fire time.
        let mut by_fire: BTreeMap<u64, Vec<u64>> = BTreeMap::new();
        for (fire, _, j) in &cadence {
            by_fire.entry(*fire).or_default().push(j.id);
        }
        for (fire, jobs) in by_fire.iter().filter(|(_, jobs)| jobs.len() > 1) {
            let ids: Vec<String> = jobs.iter().map(|j| format!("job {j}")).collect();
            out.flag(format!(
                "{name} has {} runs for fire time {fire} ({}) in the final state (seq {}): a fire time starts at \
                 most one run",
                jobs.len(),
                ids.join(", "),
                fin.seq
            ))
            .job(jobs[1])
            .seqs([create_seq, fin.seq]);
        }

        // Never early.
        for (fire, manual, j) in list {
            match j.created_ms {
                Some(created) if created < *fire && !manual => {
                    out.flag(format!(
                        "{name}: job {} for fire time {fire} was created at {created}, {} ms before its time",
                        j.id,
                        fire - created
                    ))
                    .job(j.id)
                    .seqs([create_seq, fin.seq]);
                }
                Some(_) => {}
                None => unjudged_times += 1,
            }
        }

        let ScheduleCadence::FixedRate { period_ms, anchor_ms } = spec.cadence else { continue };
        if period_ms == 0 {
            out.flag(format!("{name} was recorded with a fixed rate of 0 ms")).seqs([create_seq]);
            continue;
        }
        let on_grid = |t: u64| t.abs_diff(anchor_ms) % period_ms == 0;
        for (fire, _, j) in cadence.iter().filter(|(fire, _, _)| !on_grid(*fire)) {
            out.flag(format!(
                "{name}: job {} is for {fire}, which is not a fire time (anchor {anchor_ms} + k x {period_ms} ms)",
                j.id
            ))
            .job(j.id)
            .seqs([create_seq, fin.seq]);
        }

        // None missing, for fire-all + allow.
        let MisfirePolicy::FireAll { max } = spec.misfire else { continue };
        if spec.overlap != OverlapPolicy::Allow {
            continue;
        }
        let created: BTreeMap<u64, u64> =
            cadence.iter().filter_map(|(fire, _, j)| Some((*fire, j.created_ms?))).collect();
        let lives: Vec<(u64, Option<u64>)> =
            list.iter().filter_map(|(_, _, j)| Some((j.created_ms?, j.finished_ms))).collect();
        let fired: BTreeSet<u64> = cadence.iter().map(|(fire, _, _)| *fire).filter(|t| on_grid(*t)).collect();
        let (Some(&first), Some(&last)) = (fired.first(), fired.last()) else { continue };
        let paused = f.schedule_pauses.iter().any(|(_, p)| p.schedule == *id);
        let mut missing = Vec::new();
        let mut t = first;
        while t <= last {
            gap_checked += 1;
            if !fired.contains(&t) {
                let next = fired.range(t..).next().copied();
                // The oldest missing time of this gap: the schedule's next
                // fire time when the catch-up ran.
                let gap_start = fired.range(..t).next_back().map_or(t, |p| p + period_ms);
                let caught_up = next.is_some_and(|r| {
                    let late = created.get(&r).is_some_and(|c| *c > gap_start.saturating_add(spec.misfire_grace_ms));
                    // A pause may cut the catch-up short: after the last
                    // run of a paused schedule nothing more fires.
                    let kept = |k: u64| {
                        let at = r + k * period_ms;
                        fired.contains(&at) || (paused && at > last)
                    };
                    late && (0..u64::from(max)).all(kept)
                });
                let before = fired.range(..t).next_back().and_then(|f| created.get(f));
                let after = next.and_then(|f| created.get(&f));
                let full = match (before, after) {
                    (Some(&a), Some(&b)) => max_live(&lives, a, b) >= MAX_LIVE_RUNS_PER_SCHEDULE,
                    _ => false,
                };
                if caught_up || full {
                    excused += 1;
                } else {
                    missing.push(t);
                }
            }
            t += period_ms;
        }
        if !missing.is_empty() {
            let shown: Vec<String> = missing.iter().take(MAX_LISTED).map(u64::to_string).collect();
            let more = missing.len().saturating_sub(MAX_LISTED);
            out.flag(format!(
                "{name} (fire_all, overlap allow, every {period_ms} ms) has no run for {} fire time(s) between its \
                 first run ({first}) and its last ({last}): {}{}",
                missing.len(),
                shown.join(", "),
                if more > 0 { format!(" and {more} more") } else { String::new() }
            ))
            .seqs([create_seq, fin.seq]);
        }
    }
    for (id, (seq, _)) in &schedules {
        if !runs.contains_key(id) {
            out.note(format!("schedule {id} (created at seq {seq}) has no run in the final state"));
        }
    }
    out.note(format!(
        "{} schedules, {judged_runs} runs checked; {gap_checked} fire-all fire times checked for a run, {excused} \
         without one excused (dropped by the catch-up bound, or {MAX_LIVE_RUNS_PER_SCHEDULE} runs live)",
        schedules.len()
    ));
    if unjudged_times > 0 {
        out.note(format!("{unjudged_times} runs have no created_ms: not judged for firing early"));
    }
}
