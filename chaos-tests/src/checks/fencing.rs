//! **fencing**: a stale token never wins, and tokens only move forward.
//!
//! - No complete is answered `ok` if a newer token for its task had been
//!   granted (observed in an `assign` with a smaller seq) before the complete
//!   was invoked. Observing a grant happens after it is made, so this never
//!   blames a complete that raced an unseen grant.
//! - Per task, granted tokens strictly increase in seq order. The same token
//!   seen again by the same worker is a redelivery (a resumed session), not a
//!   new grant; the same token held by two workers is a violation. This
//!   trusts recorders to log `assign` in grant order: a delivery recorded
//!   after a newer grant's would read as a decrease.
//! - The final state's `latest_token` is not older than any observed grant.

use super::facts::{Facts, Grant};
use crate::history::CompleteOutcome;
use crate::report::InvariantReport;

pub(super) fn check(f: &Facts<'_>, out: &mut InvariantReport) {
    for (&task, grants) in &f.grants {
        let mut best: Option<Grant<'_>> = None;
        for &g in grants {
            if let Some(b) = best {
                if g.token < b.token {
                    out.flag(format!(
                        "{task}: token {} was granted to {} at seq {} after token {} had been granted to {} at seq \
                         {}; tokens must strictly increase",
                        g.token, g.worker, g.seq, b.token, b.worker, b.seq
                    ))
                    .on_task(task)
                    .token(g.token)
                    .seqs([b.seq, g.seq]);
                } else if g.token == b.token && g.worker != b.worker {
                    out.flag(format!(
                        "{task}: token {} was granted to both {} (seq {}) and {} (seq {}); a token names one attempt",
                        g.token, b.worker, b.seq, g.worker, g.seq
                    ))
                    .on_task(task)
                    .token(g.token)
                    .seqs([b.seq, g.seq]);
                }
            }
            if best.is_none_or(|b| g.token > b.token) {
                best = Some(g);
            }
        }
    }

    let mut accepted = 0;
    for c in f.completes.iter().filter(|c| c.outcome() == Some(CompleteOutcome::Ok)) {
        accepted += 1;
        let newer = f
            .grants
            .get(&c.task)
            .into_iter()
            .flatten()
            .filter(|g| g.seq < c.invoke_seq && g.token > c.token)
            .max_by_key(|g| g.token);
        if let Some(g) = newer {
            let reply = c.reply.map_or(c.invoke_seq, |(s, _)| s);
            out.flag(format!(
                "{}: {} was accepted (ok at seq {reply}), but token {} had already been granted to {} at seq {}: a \
                 stale token must be fenced",
                c.task,
                c.describe(),
                g.token,
                g.worker,
                g.seq
            ))
            .on_task(c.task)
            .token(c.token)
            .seqs([g.seq, c.invoke_seq, reply]);
        }
    }

    if let Some(fin) = f.final_state() {
        for (task, sh) in fin.shards() {
            let Some(g) = f.max_grant(task) else { continue };
            if sh.latest_token.is_none_or(|l| l < g.token) {
                let latest = sh.latest_token.map_or("none".to_string(), |l| l.to_string());
                out.flag(format!(
                    "{task}: the final state (seq {}) says the latest token is {latest}, but token {} was granted to \
                     {} at seq {}",
                    fin.seq, g.token, g.worker, g.seq
                ))
                .on_task(task)
                .token(g.token)
                .seqs([g.seq, fin.seq]);
            }
        }
    }

    out.note(format!(
        "{} grants over {} tasks, {accepted} accepted completes checked",
        f.grants.values().map(Vec::len).sum::<usize>(),
        f.grants.len()
    ));
}
