//! **replica_convergence**: replicas that report the same applied index report
//! the same state hash. apply() is deterministic, so equal logs must give equal
//! state; a difference means a replica applied something else, or applied it
//! differently.

use std::collections::BTreeMap;

use super::facts::Facts;
use crate::history::Replica;
use crate::report::InvariantReport;

pub(super) fn check(f: &Facts<'_>, out: &mut InvariantReport) {
    let mut by_index: BTreeMap<u64, Vec<(u64, &Replica)>> = BTreeMap::new();
    for &(seq, r) in &f.replicas {
        by_index.entry(r.applied_index).or_default().push((seq, r));
    }

    let mut compared = 0;
    for (index, reports) in &by_index {
        if reports.len() > 1 {
            compared += 1;
        }
        // Hex case is presentation, not content.
        let first = reports[0].1.state_hash.to_ascii_lowercase();
        if reports.iter().all(|(_, r)| r.state_hash.to_ascii_lowercase() == first) {
            continue;
        }
        let list: Vec<String> =
            reports.iter().map(|(seq, r)| format!("node {} = {} (seq {seq})", r.node, r.state_hash)).collect();
        out.flag(format!("replicas disagree at applied index {index}: {}", list.join(", ")))
            .seqs(reports.iter().map(|(seq, _)| *seq));
    }

    if f.replicas.is_empty() {
        out.note("no replica events: nothing to compare");
    } else {
        out.note(format!(
            "{} replica reports at {} applied indexes; {compared} of those indexes were reported by two or more nodes",
            f.replicas.len(),
            by_index.len()
        ));
    }
}
