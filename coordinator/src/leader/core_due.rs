//! Work that falls due in log time and is carried by one proposal at a
//! time: gate timeouts, schedule fires and retention. Nothing about it is
//! kept in memory; a new leader derives it from the applied state.

use super::*;

impl LeaderCore {
    /// Gates whose timeout has passed in log time: propose their expiry, a
    /// bounded batch at a time, one proposal in flight. Nothing about gates
    /// is kept in memory: a new leader reads the same `gate_deadlines` and
    /// proposes whatever is still due. apply() checks each deadline against
    /// the entry's time and refuses a gate decided in the meantime.
    pub(super) fn expire_gates_due(&mut self, now: Now, state: &StateView<'_>, out: &mut Vec<Action>) {
        if !self.leading || self.gates_in_flight {
            return;
        }
        let due: Vec<(WorkflowId, u32)> = state
            .core
            .idx
            .gate_deadlines
            .iter()
            .take_while(|(d, _, _)| *d <= now.log_ms)
            .take(self.cfg.gates_per_entry)
            .map(|(_, wf, step)| (*wf, *step))
            .collect();
        if due.is_empty() {
            return;
        }
        tracing::info!(gates = due.len(), "gate timeouts due");
        self.gates_in_flight = true;
        out.push(self.propose(ProposalKind::ExpireGates, Command::ExpireGates { gates: due }));
    }

    /// Schedules whose next fire is due in log time: propose a Fire for
    /// each, a bounded batch at a time, one batch in flight. Nothing about
    /// fires is kept in memory: a new leader reads the same `fire_due` and
    /// proposes whatever is still due, and apply() accepts a fire only for
    /// the schedule's current next time, so a fire proposed twice (by this
    /// leader after a lost reply, or by the next) starts one run.
    pub(super) fn fire_due(&mut self, now: Now, state: &StateView<'_>, out: &mut Vec<Action>) {
        if !self.leading || self.fires_in_flight {
            return;
        }
        let idx = &state.core.idx;
        let fires: Vec<Command> = idx
            .fire_due
            .iter()
            .take_while(|(due, _)| *due <= now.log_ms)
            .take(FIRES_PER_ENTRY)
            .filter_map(|(_, id)| {
                idx.schedules.get(id)?.next_fire_ms.map(|fire_ms| Command::Fire { schedule: *id, fire_ms })
            })
            .collect();
        if fires.is_empty() {
            return;
        }
        tracing::debug!(fires = fires.len(), "schedule fires due");
        self.fires_in_flight = true;
        out.push(self.propose(ProposalKind::Fire, Command::Batch(fires)));
    }

    /// Retention work due in log time (something queued has expired, or the
    /// collector is inside a target): propose one CollectGarbage, with one
    /// in flight at most. Every entry runs the collector's budget, so this
    /// only matters when nothing else is being written; nothing about it is
    /// kept in memory, and a new leader reads the same queue.
    pub(super) fn collect_due(&mut self, now: Now, state: &StateView<'_>, out: &mut Vec<Action>) {
        if !self.leading || self.gc_in_flight {
            return;
        }
        if state.core.gc_due_ms().is_none_or(|at| at > now.log_ms) {
            return;
        }
        self.gc_in_flight = true;
        out.push(self.propose(ProposalKind::CollectGarbage, Command::CollectGarbage));
    }
}
