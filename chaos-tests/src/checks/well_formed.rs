//! **well_formed**: the history can be judged at all. Every reply answers
//! exactly one earlier invoke by the same process, op ids are not reused, there
//! is at most one final state, and it lists each job once, and at most one run
//! config.
//!
//! Without this, a reply that matches nothing would be silently dropped, and
//! with it the evidence another invariant needed.

use std::collections::BTreeMap;

use super::facts::Facts;
use crate::report::InvariantReport;

pub(super) fn check(f: &Facts<'_>, out: &mut InvariantReport) {
    for m in &f.malformed {
        out.flag(m.message.clone()).seqs(m.seqs.iter().copied());
    }

    if f.finals.len() > 1 {
        let seqs: Vec<u64> = f.finals.iter().map(|v| v.seq).collect();
        out.flag(format!("the history has {} final_state events (seqs {seqs:?}); it must have one", f.finals.len()))
            .seqs(seqs);
    }

    if let Some(fin) = f.final_state() {
        let mut per_id: BTreeMap<u64, usize> = BTreeMap::new();
        for j in &fin.state.jobs {
            *per_id.entry(j.id).or_default() += 1;
        }
        for (id, n) in per_id.into_iter().filter(|&(_, n)| n > 1) {
            out.flag(format!("job {id} is listed {n} times in the final state (seq {})", fin.seq))
                .job(id)
                .seqs([fin.seq]);
        }
    }

    let unanswered_submits = f.submits.iter().filter(|s| s.reply.is_none()).count();
    let unanswered_completes = f.completes.iter().filter(|c| c.reply.is_none()).count();
    out.note(format!(
        "{} submits ({unanswered_submits} without reply, treated as info), {} completes ({unanswered_completes} \
         without reply), {} grants, {} reads",
        f.submits.len(),
        f.completes.len(),
        f.grants.values().map(Vec::len).sum::<usize>(),
        f.reads.len()
    ));
}
