//! **overlap_skip_exclusive**: a schedule with overlap `skip` never has two
//! live runs at once (issue 14's second schedule invariant).
//!
//! Its runs in the final state (manual ones too: run-now obeys the overlap
//! policy), ordered by `created_ms`, must each start at or after the
//! previous one's `finished_ms`; both are log time, the timestamps of the
//! entries that created and finished the jobs, so no node's clock enters.
//! A run that never finished while a later one started is a violation.

use super::facts::Facts;
use crate::history::OverlapPolicy;
use crate::report::InvariantReport;

pub(super) fn check(f: &Facts<'_>, out: &mut InvariantReport) {
    let Some(fin) = f.final_state() else {
        if f.schedules.is_empty() {
            out.note("no schedule was created and there is no final state: nothing to judge");
            return;
        }
        return super::no_final_state(out, "whether overlap-skip runs overlapped");
    };
    let schedules = f.schedules_by_id();
    let runs = Facts::schedule_runs(&fin);
    let (mut judged, mut pairs, mut untimed) = (0, 0, 0);
    for (id, &(create_seq, spec)) in schedules.iter().filter(|(_, (_, s))| s.overlap == OverlapPolicy::Skip) {
        judged += 1;
        let Some(list) = runs.get(id) else { continue };
        let mut timed: Vec<_> = list.iter().filter_map(|(fire, _, j)| Some((j.created_ms?, j.id, *fire, *j))).collect();
        untimed += list.len() - timed.len();
        timed.sort_by_key(|(created, id, _, _)| (*created, *id));
        let name = format!("schedule {id} ({}/{}, overlap skip)", spec.namespace, spec.name);
        for w in timed.windows(2) {
            let ((_, prev_id, prev_fire, prev), (created, next_id, next_fire, _)) = (w[0], w[1]);
            pairs += 1;
            match prev.finished_ms {
                Some(done) if done <= created => {}
                Some(done) => {
                    out.flag(format!(
                        "{name}: job {next_id} (fire time {next_fire}) started at {created}, while job {prev_id} \
                         (fire time {prev_fire}) was live until {done}: two live runs at once"
                    ))
                    .job(next_id)
                    .seqs([create_seq, fin.seq]);
                }
                None => {
                    out.flag(format!(
                        "{name}: job {next_id} (fire time {next_fire}) started at {created}, while job {prev_id} \
                         (fire time {prev_fire}) never finished: two live runs at once"
                    ))
                    .job(next_id)
                    .seqs([create_seq, fin.seq]);
                }
            }
        }
    }
    out.note(format!("{judged} overlap-skip schedules, {pairs} consecutive runs checked"));
    if untimed > 0 {
        out.note(format!("{untimed} runs have no created_ms: not judged"));
    }
}
