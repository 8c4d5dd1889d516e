//! One node's durable media in the simulation: its [`Disk`] (the Raft log,
//! with crash semantics, and its last snapshot) and the volatile
//! [`SmState`]. Plain data, shared by the storage adapters in `store.rs` and
//! the world that crashes and restarts nodes; it knows nothing of either.

use std::collections::BTreeMap;
use std::sync::Arc;

use openraft::storage::LogFlushed;

use baton_raft_store::{Core, Entry, LogId, MemKv, SnapshotMeta, TypeConfig, Vote};

/// One queued, not yet synced write.
#[derive(Debug, Clone)]
pub enum Op {
    Append(Vec<Entry>),
    /// Delete every entry at or after this index.
    Truncate(u64),
    Committed(Option<LogId>),
    /// Delete every entry at or before this log id.
    Purge(LogId),
}

/// A snapshot: the state machine's whole key space at `meta.last_log_id`.
#[derive(Clone)]
pub struct SimSnapshot {
    pub meta: SnapshotMeta,
    pub kv: Arc<MemKv>,
    /// Its size as it would be sent: every key and value.
    pub bytes: u64,
}

impl SimSnapshot {
    /// The state machine it holds.
    pub fn restore(&self) -> SmState {
        let kv = (*self.kv).clone();
        let core = Core::open(&kv).expect("a snapshot of a MemKv opens");
        SmState { core, kv }
    }
}

/// A handle for openraft's `SnapshotData` (a file) that is never read or
/// written: the sim moves snapshot contents itself. Opening it is synchronous,
/// so no blocking-pool task can reorder the simulation.
pub fn placeholder_file() -> Box<tokio::fs::File> {
    let f = std::fs::File::open("/dev/null").expect("open /dev/null");
    Box::new(tokio::fs::File::from_std(f))
}

/// A node's disk, shared by all its incarnations.
#[derive(Default)]
pub struct Disk {
    /// Incarnation that owns the disk; handles of older ones get errors.
    pub epoch: u64,
    pub vote: Option<Vote>,
    pub(crate) durable_log: BTreeMap<u64, Entry>,
    pub(crate) durable_committed: Option<LogId>,
    pub(crate) durable_purged: Option<LogId>,
    pub(crate) log: BTreeMap<u64, Entry>,
    pub(crate) committed: Option<LogId>,
    pub(crate) purged: Option<LogId>,
    /// The last snapshot built or installed; durable as soon as it is set.
    pub snapshot: Option<SimSnapshot>,
    pub(crate) pending: Vec<Op>,
    pub(crate) waiting: Vec<LogFlushed<TypeConfig>>,
}

fn apply_op(log: &mut BTreeMap<u64, Entry>, committed: &mut Option<LogId>, purged: &mut Option<LogId>, op: Op) {
    match op {
        Op::Purge(id) => {
            *log = log.split_off(&(id.index + 1));
            *purged = Some(id);
        }
        Op::Append(entries) => {
            for e in entries {
                log.insert(e.log_id.index, e);
            }
        }
        Op::Truncate(index) => {
            log.split_off(&index);
        }
        Op::Committed(c) => *committed = c,
    }
}

impl Disk {
    /// Whether writes are queued or callbacks wait for a sync.
    pub fn dirty(&self) -> bool {
        !self.pending.is_empty() || !self.waiting.is_empty()
    }

    /// The fsync: everything queued becomes durable, then the callbacks fire.
    pub fn sync(&mut self) -> usize {
        let ops = std::mem::take(&mut self.pending);
        let n = ops.len();
        for op in ops {
            apply_op(&mut self.durable_log, &mut self.durable_committed, &mut self.durable_purged, op);
        }
        for cb in self.waiting.drain(..) {
            cb.log_io_completed(Ok(()));
        }
        n
    }

    /// Power loss. The first `survive` queued ops reach the disk anyway (a
    /// WAL persists a prefix of what was written); the rest are lost, and
    /// pending callbacks never fire. Returns the number of log entries lost.
    pub fn crash(&mut self, survive: usize) -> u64 {
        self.epoch += 1;
        let mut ops = std::mem::take(&mut self.pending);
        let lost_ops = ops.split_off(survive.min(ops.len()));
        for op in ops {
            apply_op(&mut self.durable_log, &mut self.durable_committed, &mut self.durable_purged, op);
        }
        self.waiting.clear();
        self.log = self.durable_log.clone();
        self.committed = self.durable_committed;
        self.purged = self.durable_purged;
        lost_ops
            .iter()
            .map(|op| match op {
                Op::Append(e) => e.len() as u64,
                _ => 0,
            })
            .sum()
    }

    pub fn pending_len(&self) -> usize {
        self.pending.len()
    }

    /// Last index in the live view (the purge point when every entry is purged).
    pub fn last_index(&self) -> Option<u64> {
        self.log.keys().next_back().copied().or(self.purged.map(|p| p.index))
    }
}

/// What the volatile state machine holds: the real apply core over a [`MemKv`].
#[derive(Default)]
pub struct SmState {
    pub core: Core,
    pub kv: MemKv,
}

impl SmState {
    pub fn applied_index(&self) -> u64 {
        self.core.meta.last_applied.map_or(0, |l| l.index)
    }
}
