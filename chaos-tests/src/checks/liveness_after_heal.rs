//! **liveness_after_heal**: once every fault is healed, the cluster finishes
//! the work. Every task and job in the final state is terminal, and the final
//! state was reached within `Config::liveness_bound_ms` of the last `heal`.
//!
//! The bound is measured on the recorder's clock, from the last heal event's
//! `t` to the final state's `drained_at` (or its `t` when it has none).

use super::Config;
use super::facts::Facts;
use crate::history::NemesisOutcome;
use crate::history::NemesisPhase;
use crate::report::InvariantReport;

pub(super) fn check(f: &Facts<'_>, config: &Config, out: &mut InvariantReport) {
    let Some(fin) = f.final_state() else {
        return super::no_final_state(out, "liveness after heal");
    };

    for fj in &fin.state.jobs {
        let mut stuck_shards = 0;
        for sh in fj.shards.iter().filter(|s| !s.status.is_terminal()) {
            stuck_shards += 1;
            let task = crate::history::TaskKey::new(fj.id, sh.shard);
            let v = out.flag(format!(
                "{task} is still {} in the final state (seq {}); after heal and drain every task must be terminal",
                sh.status.name(),
                fin.seq
            ));
            v.on_task(task).seqs([fin.seq]);
            if let Some(t) = sh.latest_token {
                v.token(t);
            }
        }
        // A job whose shards all finished but whose status did not follow.
        if stuck_shards == 0 && !fj.status.is_terminal() {
            out.flag(format!(
                "job {} is still {} in the final state (seq {}) although all its shards are terminal",
                fj.id,
                fj.status.name(),
                fin.seq
            ))
            .job(fj.id)
            .seqs([fin.seq]);
        }
    }

    let last_heal = f.nemeses.iter().rev().find(|(_, _, n)| n.phase == NemesisPhase::Heal);
    let Some(&(heal_seq, heal_t, heal)) = last_heal else {
        let starts = f.nemeses.iter().filter(|(_, _, n)| n.phase == NemesisPhase::Start).count();
        out.note(format!("no heal event ({starts} faults started): the liveness bound was not measured"));
        return;
    };

    for (seq, _, n) in f.nemeses.iter().filter(|(s, _, n)| *s > heal_seq && n.phase == NemesisPhase::Start) {
        out.note(format!("nemesis {} started at seq {seq}, after the last heal, and was never healed", n.name));
    }
    if heal.outcome == NemesisOutcome::Indeterminate {
        out.note(format!(
            "the last heal ({}, seq {heal_seq}) is indeterminate: the fault may still be there",
            heal.name
        ));
    }

    if fin.seq < heal_seq {
        out.flag(format!(
            "the final state (seq {}) was read before the last heal ({}, seq {heal_seq}), so it cannot show recovery",
            fin.seq, heal.name
        ))
        .seqs([fin.seq, heal_seq]);
        return;
    }

    let end = fin.state.drained_at.unwrap_or(fin.t);
    let elapsed = end.saturating_sub(heal_t);
    let bound = config.liveness_bound_ms;
    if elapsed > bound {
        out.flag(format!(
            "the cluster drained {elapsed} ms after the last heal ({}, seq {heal_seq}, t={heal_t}), over the bound of \
             {bound} ms (final state seq {})",
            heal.name, fin.seq
        ))
        .seqs([heal_seq, fin.seq]);
    } else {
        out.note(format!("drained {elapsed} ms after the last heal ({}, seq {heal_seq}); bound {bound} ms", heal.name));
    }
}
