//! A run's summary row: counts taken from the merged history and the report.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;

use serde::Serialize;

use crate::history::{Body, History, NemesisOutcome, NemesisPhase, TaskKey};
use crate::{Invariant, Report};

/// The summary row of a run (also written to `report.json`).
#[derive(Debug, Clone, Serialize)]
pub struct RunSummary {
    /// The run's name.
    pub name: String,
    /// Its seed.
    pub seed: u64,
    /// Voters at the start.
    pub nodes: u64,
    /// Faults injected, by name, with how many times.
    pub nemeses: BTreeMap<String, u32>,
    /// Faults skipped, with why.
    pub skipped: Vec<String>,
    /// Invokes of every kind.
    pub ops: usize,
    /// Jobs whose submit returned ok.
    pub acknowledged: usize,
    /// no_lost_jobs violations.
    pub lost: usize,
    /// exactly_once_commit violations.
    pub duplicates: usize,
    /// Completes answered FENCED (the cluster refusing stale tokens).
    pub fenced: usize,
    /// Elections won after the first leader (new terms with a leader), as
    /// polled every 100 ms.
    pub failovers: u64,
    /// Longest time from a worker fault to one of its tasks being granted to
    /// another worker, in ms.
    pub max_reassign_ms: Option<u64>,
    /// reassignment_bound violations: held tasks of a dead worker granted
    /// again too late, or never.
    pub late_reassigns: usize,
    /// Every invariant held.
    pub passed: bool,
    /// The invariants that did not.
    pub failed_invariants: Vec<String>,
    /// The merged history.
    pub history: PathBuf,
    /// The command that replays this run's seed.
    pub replay: String,
    /// How long the run took, in ms.
    pub wall_ms: u64,
}

/// What the harness knows about a run besides its history and report.
pub(super) struct RunFacts {
    pub name: String,
    pub seed: u64,
    pub nodes: u64,
    pub nemeses: BTreeMap<String, u32>,
    pub skipped: Vec<String>,
    pub failovers: u64,
    pub history: PathBuf,
    pub replay: String,
    pub wall_ms: u64,
}

/// The row for a finished run.
pub(super) fn summarize(run: RunFacts, history: &History, report: &Report) -> RunSummary {
    let mut ops = 0;
    let mut acknowledged = BTreeSet::new();
    let mut fenced = 0;
    for e in history.events() {
        match &e.body {
            Body::SubmitInvoke(_) | Body::CompleteInvoke(_) | Body::ReadInvoke(_) => ops += 1,
            Body::SubmitOk(s) => {
                acknowledged.insert(s.job);
            }
            Body::CompleteFenced(_) => fenced += 1,
            _ => {}
        }
    }
    RunSummary {
        name: run.name,
        seed: run.seed,
        nodes: run.nodes,
        nemeses: run.nemeses,
        skipped: run.skipped,
        ops,
        acknowledged: acknowledged.len(),
        lost: report.get(Invariant::NoLostJobs).violations.len(),
        duplicates: report.get(Invariant::ExactlyOnceCommit).violations.len(),
        fenced,
        failovers: run.failovers,
        max_reassign_ms: max_reassign_ms(history),
        late_reassigns: report.get(Invariant::ReassignmentBound).violations.len(),
        passed: report.passed(),
        failed_invariants: report.failed().iter().map(|i| i.name().to_string()).collect(),
        history: run.history,
        replay: run.replay,
        wall_ms: run.wall_ms,
    }
}

/// The longest time from a worker fault (`pause-worker`, `kill-worker`) to
/// the first grant of one of that worker's unfinished tasks to another worker.
/// The `reassignment_bound` invariant judges each of these against its bound;
/// this is only the figure for the summary table.
pub fn max_reassign_ms(history: &History) -> Option<u64> {
    let mut held: BTreeMap<TaskKey, String> = BTreeMap::new();
    let mut waiting: BTreeMap<TaskKey, (String, u64)> = BTreeMap::new();
    let mut ops: BTreeMap<(String, u64), TaskKey> = BTreeMap::new();
    let mut worst: Option<u64> = None;
    for e in history.events() {
        match &e.body {
            Body::Assign(a) => {
                let task = a.task();
                if let Some((from, at)) = waiting.get(&task)
                    && *from != a.worker
                {
                    worst = Some(worst.unwrap_or(0).max(e.t - at));
                    waiting.remove(&task);
                }
                held.insert(task, a.worker.clone());
            }
            Body::CompleteInvoke(c) => {
                ops.insert((c.worker.clone(), c.op), c.task());
            }
            Body::CompleteOk(r) | Body::CompleteDuplicate(r) => {
                if let Some(task) = ops.get(&(r.worker.clone(), r.op)) {
                    held.remove(task);
                    waiting.remove(task);
                }
            }
            Body::Nemesis(n) if n.phase == NemesisPhase::Start && n.outcome == NemesisOutcome::Installed => {
                for w in &n.targets.workers {
                    for (task, owner) in &held {
                        if owner == w {
                            waiting.insert(*task, (w.clone(), e.t));
                        }
                    }
                }
            }
            _ => {}
        }
    }
    worst
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::history::Targets;

    #[test]
    fn max_reassign_reads_the_worker_from_the_targets_not_the_detail() {
        let mut h = History::new();
        let task = TaskKey::new(1, 0);
        h.assign(100, "w1", task, 5);
        // The detail names another worker: only the targets count.
        let start = NemesisPhase::Start;
        h.nemesis_on(200, "kill-worker", start, NemesisOutcome::Installed, Targets::workers(["w1"]), "worker=w9");
        h.assign(1_900, "w2", task, 6);
        assert_eq!(max_reassign_ms(&h), Some(1_700));

        let mut h = History::new();
        h.assign(100, "w1", task, 5);
        h.nemesis(200, "kill-worker", start, NemesisOutcome::Installed, "worker=w1");
        h.assign(1_900, "w2", task, 6);
        assert_eq!(max_reassign_ms(&h), None, "no targets, no fault on w1");
    }
}
