//! Snapshots by log bytes. openraft's policy builds a snapshot every
//! `snapshot_after_entries` entries, but the proposer batches commands, so
//! an entry can hold hundreds of them: in the steady-state benchmark
//! (docs/benchmarks.md) 3 million lifecycles made no snapshot in 460 s, and
//! the Raft log, purged only behind a snapshot, held gigabytes. This asks
//! openraft for a snapshot once `raft.snapshot_after_log_bytes` have been
//! appended since the last one. Snapshots are local to each node, so each
//! node decides for itself; safety does not depend on when.
//!
//! [`SnapshotTrigger::step`] decides (pure); [`run`] samples and asks.

use std::time::Duration;

use baton_raft_store::AppendedBytes;
use baton_raft_store::types::Raft;

/// How often the loop samples the counter and the last snapshot.
pub const SNAPSHOT_CHECK_INTERVAL_MS: u64 = 1_000;
/// How long to wait for a requested snapshot before asking again: building
/// one reads the whole state, which takes seconds for millions of records.
pub const SNAPSHOT_RETRY_AFTER_MS: u64 = 60_000;

/// The trigger's memory: the last snapshot seen, and the byte count then.
#[derive(Debug, Default)]
pub struct SnapshotTrigger {
    last_snapshot: Option<u64>,
    /// Appended bytes when `last_snapshot` was first seen (0 at start: a
    /// restarted node counts from its start).
    base: u64,
    /// When a snapshot was asked for and has not appeared yet.
    asked_at_ms: Option<u64>,
}

impl SnapshotTrigger {
    /// Whether to ask for a snapshot now, given the bytes appended since
    /// start, the index of the newest snapshot, and a monotonic `now_ms`.
    pub fn step(&mut self, appended: u64, snapshot: Option<u64>, threshold: u64, now_ms: u64) -> bool {
        debug_assert!(appended >= self.base, "the appended count only grows");
        if snapshot != self.last_snapshot {
            self.last_snapshot = snapshot;
            self.base = appended;
            self.asked_at_ms = None;
        }
        if self.asked_at_ms.is_some_and(|t| now_ms < t + SNAPSHOT_RETRY_AFTER_MS) {
            return false;
        }
        if appended - self.base < threshold {
            return false;
        }
        self.asked_at_ms = Some(now_ms);
        true
    }
}

/// Sample every [`SNAPSHOT_CHECK_INTERVAL_MS`] and ask openraft for a
/// snapshot when [`SnapshotTrigger::step`] says so. Runs until aborted.
pub async fn run(raft: Raft, appended: AppendedBytes, threshold: u64) {
    let start = tokio::time::Instant::now();
    let mut trigger = SnapshotTrigger::default();
    let mut tick = tokio::time::interval(Duration::from_millis(SNAPSHOT_CHECK_INTERVAL_MS));
    loop {
        tick.tick().await;
        let snapshot = raft.metrics().borrow().snapshot.map(|l| l.index);
        let now_ms = start.elapsed().as_millis() as u64;
        if trigger.step(appended.get(), snapshot, threshold, now_ms) {
            tracing::info!(
                appended_bytes = appended.get(),
                threshold,
                "log bytes since the last snapshot reached the bound; snapshot requested"
            );
            if let Err(e) = raft.trigger().snapshot().await {
                tracing::warn!(error = %e, "snapshot request failed");
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: u64 = 1 << 20;

    #[test]
    fn asks_once_the_bound_is_crossed_then_counts_from_the_new_snapshot() {
        let mut t = SnapshotTrigger::default();
        assert!(!t.step(0, None, 10 * MIB, 0));
        assert!(!t.step(10 * MIB - 1, None, 10 * MIB, 1_000));
        assert!(t.step(10 * MIB, None, 10 * MIB, 2_000));
        // Asked: not again while it is being built.
        assert!(!t.step(12 * MIB, None, 10 * MIB, 3_000));
        // The snapshot appears: counting starts again from there.
        assert!(!t.step(13 * MIB, Some(500), 10 * MIB, 4_000));
        assert!(!t.step(22 * MIB, Some(500), 10 * MIB, 5_000));
        assert!(t.step(23 * MIB, Some(500), 10 * MIB, 6_000));
    }

    #[test]
    fn a_request_that_never_produced_a_snapshot_is_repeated_after_the_retry_delay() {
        let mut t = SnapshotTrigger::default();
        assert!(t.step(10 * MIB, None, MIB, 0));
        assert!(!t.step(11 * MIB, None, MIB, SNAPSHOT_RETRY_AFTER_MS - 1));
        assert!(t.step(11 * MIB, None, MIB, SNAPSHOT_RETRY_AFTER_MS));
    }

    #[test]
    fn a_snapshot_by_openrafts_own_policy_resets_the_count_too() {
        let mut t = SnapshotTrigger::default();
        assert!(!t.step(5 * MIB, Some(100), 8 * MIB, 0));
        assert!(!t.step(12 * MIB, Some(100), 8 * MIB, 1_000));
        assert!(t.step(13 * MIB, Some(100), 8 * MIB, 2_000));
    }
}
