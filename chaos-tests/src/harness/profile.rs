//! Profiles (lists of runs) and the summary table every profile prints.

use std::fmt::Write as _;
use std::path::Path;

use super::run::{RunOpts, RunSummary};

/// One entry of a profile.
pub struct Entry {
    /// Row name.
    pub name: &'static str,
    /// Voters: 3 or 5.
    pub nodes: u64,
    /// Faults and groups, comma-separated.
    pub faults: &'static str,
    /// How long faults are injected, in ms.
    pub duration_ms: u64,
    /// TLS and `[auth]` on (see [`super::secure`]).
    pub secure: bool,
}

/// The CI smoke profile: one short run per fault family; about five minutes
/// in all on a 2-core machine. Every run is secure (TLS, mutual TLS between
/// nodes, tokens), the configuration a deployment should run: on a shared
/// 2-core machine the whole profile took 2.5 minutes secure, and a 20-s
/// kill-leader + partition run 33 s secure against 28 s plaintext, within
/// the noise of shared cores, so no plaintext smoke run is kept. The soak profile and `baton-chaos run` stay
/// plaintext unless asked, so both paths keep being exercised.
pub const SMOKE: [Entry; 4] = [
    Entry { name: "kill", nodes: 3, faults: "kill,pause-then-kill", duration_ms: 20_000, secure: true },
    Entry { name: "pause", nodes: 3, faults: "pause-leader,rolling-restart", duration_ms: 20_000, secure: true },
    Entry { name: "partition", nodes: 5, faults: "partition", duration_ms: 25_000, secure: true },
    Entry { name: "zombie", nodes: 3, faults: "zombie,membership", duration_ms: 20_000, secure: true },
];

/// The soak profile's rotation: every fault family, 3 and 5 nodes.
pub const SOAK: [Entry; 4] = [
    Entry { name: "soak-all-3", nodes: 3, faults: "all", duration_ms: 300_000, secure: false },
    Entry { name: "soak-partition-5", nodes: 5, faults: "partition,kill,pause", duration_ms: 300_000, secure: false },
    Entry { name: "soak-zombie-3", nodes: 3, faults: "zombie,kill,partition", duration_ms: 300_000, secure: false },
    Entry { name: "soak-all-5", nodes: 5, faults: "all", duration_ms: 300_000, secure: false },
];

impl Entry {
    /// The run options for this entry with `seed`, writing under `root`.
    pub fn opts(&self, seed: u64, root: &Path, index: usize) -> RunOpts {
        RunOpts {
            name: self.name.to_string(),
            nodes: self.nodes,
            faults: self.faults.split(',').map(str::to_string).collect(),
            duration_ms: self.duration_ms,
            seed,
            workers: 4,
            submitters: 2,
            workflow_submitters: 1,
            schedule_submitters: 1,
            out: root.join(format!("{index:02}-{}", self.name)),
            liveness_bound_ms: crate::Config::DEFAULT_LIVENESS_BOUND_MS,
            secure: self.secure,
        }
    }
}

/// The summary table: one row per run.
pub fn table(rows: &[RunSummary]) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "{:<18} {:>5} {:>20} {:>6} {:>6} {:>5} {:>5} {:>6} {:>9} {:>12} {:>4}  verdict",
        "run", "nodes", "seed", "ops", "acked", "lost", "dups", "fenced", "failovers", "max reassign", "late",
    );
    for r in rows {
        let reassign = r.max_reassign_ms.map_or("-".to_string(), |ms| format!("{ms} ms"));
        let verdict = if r.passed { "pass".to_string() } else { format!("FAIL ({})", r.failed_invariants.join(", ")) };
        let _ = writeln!(
            s,
            "{:<18} {:>5} {:>20} {:>6} {:>6} {:>5} {:>5} {:>6} {:>9} {:>12} {:>4}  {}",
            r.name,
            r.nodes,
            r.seed,
            r.ops,
            r.acknowledged,
            r.lost,
            r.duplicates,
            r.fenced,
            r.failovers,
            reassign,
            r.late_reassigns,
            verdict
        );
    }
    for r in rows {
        let faults: Vec<String> = r.nemeses.iter().map(|(k, v)| format!("{k}×{v}")).collect();
        let _ = writeln!(s, "{}: faults {}", r.name, faults.join(" "));
        for why in &r.skipped {
            let _ = writeln!(s, "{}: SKIPPED {why}", r.name);
        }
        if !r.passed {
            let _ = writeln!(s, "{}: history {} ; replay: {}", r.name, r.history.display(), r.replay);
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::harness::nemesis::Fault;

    #[test]
    fn profiles_name_only_known_faults_and_smoke_covers_every_family() {
        let mut covered = std::collections::BTreeSet::new();
        for e in SMOKE.iter().chain(SOAK.iter()) {
            let faults = Fault::parse_list(e.faults).unwrap();
            if SMOKE.iter().any(|s| s.name == e.name) {
                covered.extend(faults);
            }
        }
        for f in [Fault::KillLeader, Fault::PauseLeader, Fault::PartitionHalves, Fault::PauseWorker] {
            assert!(covered.contains(&f), "smoke misses {f}");
        }
    }

    #[test]
    fn smoke_runs_kill_leader_and_partitions_with_tls_and_tokens() {
        let secure_faults: std::collections::BTreeSet<Fault> =
            SMOKE.iter().filter(|e| e.secure).flat_map(|e| Fault::parse_list(e.faults).unwrap()).collect();
        for f in [Fault::KillLeader, Fault::PartitionHalves] {
            assert!(secure_faults.contains(&f), "no secure smoke run covers {f}");
        }
        let o = SMOKE[0].opts(7, Path::new("/tmp"), 0);
        assert!(o.secure && o.replay_command().ends_with(" --secure"), "{}", o.replay_command());
    }
}
