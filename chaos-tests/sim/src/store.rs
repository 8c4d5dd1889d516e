//! In-memory storage with crash semantics.
//!
//! [`Disk`] is one node's disk. It outlives the node's incarnations: a crash
//! keeps what was synced and throws away the rest. Every write goes to a live
//! view at once (readers see it), and is queued as an [`Op`] until the next
//! simulated fsync applies the queue to the durable copy. The log store fires
//! openraft's flush callback only after that fsync (unless the sim runs with
//! the deliberate `ack_before_fsync` bug). The vote is written through
//! synchronously, as Raft requires.
//!
//! The state machine applies a batch of entries and then writes their
//! changes together, as the real one does. It is volatile, but its
//! snapshots are durable: a snapshot
//! is a copy of the whole key space (the `Core`'s meta lives in it) taken
//! under the state lock, and it is written to the disk at once, as the real
//! store fsyncs its snapshot file before using it. Log purges follow
//! snapshots and are queued like every other log write. A restarted node
//! starts from its last snapshot (or empty) and openraft re-applies the
//! durable log after it. Snapshot data never goes through a real file: the
//! sim's network hands the sender's snapshot to the receiver's state machine
//! (see `net.rs`), and openraft only ever sees a placeholder handle.

use std::fmt::Debug;
use std::ops::RangeBounds;
use std::sync::{Arc, Mutex};

use openraft::storage::{LogFlushed, LogState, RaftLogStorage, RaftStateMachine};
use openraft::{AnyError, ErrorSubject, ErrorVerb, RaftLogReader, RaftSnapshotBuilder, StorageIOError};

use baton_raft_store::state_machine::APPLY_FLUSH_RECORDS;
use baton_raft_store::{
    Entry, LogId, Response, Snapshot, SnapshotMeta, StorageError, StoredMembership, TypeConfig, Vote,
};

pub use crate::disk::{Disk, Op, SimSnapshot, SmState, placeholder_file};
use crate::world::World;

fn stale(subject: ErrorSubject<u64>, verb: ErrorVerb) -> StorageError {
    StorageError::from(StorageIOError::new(subject, verb, AnyError::error("this incarnation has crashed")))
}

/// The log store of one incarnation.
#[derive(Clone)]
pub struct SimLogStore {
    pub node: u64,
    pub epoch: u64,
    pub disk: Arc<Mutex<Disk>>,
    pub world: Arc<Mutex<World>>,
    /// Wakes this incarnation's syncer.
    pub sync_kick: Arc<tokio::sync::Notify>,
    /// The deliberate bug: acknowledge appends before they are synced.
    pub ack_before_fsync: bool,
}

// openraft's StorageError is what every caller returns anyway.
#[allow(clippy::result_large_err)]
impl SimLogStore {
    fn disk(
        &self,
        subject: ErrorSubject<u64>,
        verb: ErrorVerb,
    ) -> Result<std::sync::MutexGuard<'_, Disk>, StorageError> {
        let d = self.disk.lock().unwrap();
        if d.epoch != self.epoch {
            return Err(stale(subject, verb));
        }
        Ok(d)
    }

    fn read<RB: RangeBounds<u64>>(&self, range: RB) -> Result<Vec<Entry>, StorageError> {
        let d = self.disk(ErrorSubject::Logs, ErrorVerb::Read)?;
        Ok(d.log.range(range).map(|(_, e)| e.clone()).collect())
    }
}

impl RaftLogReader<TypeConfig> for SimLogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + Send>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry>, StorageError> {
        self.read(range)
    }
}

impl RaftLogStorage<TypeConfig> for SimLogStore {
    type LogReader = SimLogStore;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, StorageError> {
        let d = self.disk(ErrorSubject::Logs, ErrorVerb::Read)?;
        let last = d.log.values().next_back().map(|e| e.log_id).or(d.purged);
        Ok(LogState { last_purged_log_id: d.purged, last_log_id: last })
    }

    async fn get_log_reader(&mut self) -> SimLogStore {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote) -> Result<(), StorageError> {
        let mut d = self.disk(ErrorSubject::Vote, ErrorVerb::Write)?;
        d.vote = Some(*vote);
        drop(d);
        self.world.lock().unwrap().trace(format_args!("vote n{} {vote}", self.node));
        Ok(())
    }

    async fn read_vote(&mut self) -> Result<Option<Vote>, StorageError> {
        Ok(self.disk(ErrorSubject::Vote, ErrorVerb::Read)?.vote)
    }

    async fn save_committed(&mut self, committed: Option<LogId>) -> Result<(), StorageError> {
        let mut d = self.disk(ErrorSubject::Store, ErrorVerb::Write)?;
        d.committed = committed;
        d.pending.push(Op::Committed(committed));
        Ok(())
    }

    async fn read_committed(&mut self) -> Result<Option<LogId>, StorageError> {
        Ok(self.disk(ErrorSubject::Store, ErrorVerb::Read)?.committed)
    }

    async fn append<I>(&mut self, entries: I, callback: LogFlushed<TypeConfig>) -> Result<(), StorageError>
    where
        I: IntoIterator<Item = Entry> + Send,
        I::IntoIter: Send,
    {
        let entries: Vec<Entry> = entries.into_iter().collect();
        let (first, last) = (entries.first().map(|e| e.log_id.index), entries.last().map(|e| e.log_id.index));
        let mut d = self.disk(ErrorSubject::Logs, ErrorVerb::Write)?;
        for e in &entries {
            d.log.insert(e.log_id.index, e.clone());
        }
        d.pending.push(Op::Append(entries));
        if self.ack_before_fsync {
            callback.log_io_completed(Ok(()));
        } else {
            d.waiting.push(callback);
            self.sync_kick.notify_one();
        }
        drop(d);
        self.world.lock().unwrap().trace(format_args!("append n{} {first:?}..{last:?}", self.node));
        Ok(())
    }

    async fn truncate(&mut self, log_id: LogId) -> Result<(), StorageError> {
        let mut d = self.disk(ErrorSubject::Logs, ErrorVerb::Delete)?;
        d.log.split_off(&log_id.index);
        d.pending.push(Op::Truncate(log_id.index));
        drop(d);
        self.world.lock().unwrap().trace(format_args!("truncate n{} {}", self.node, log_id.index));
        Ok(())
    }

    async fn purge(&mut self, log_id: LogId) -> Result<(), StorageError> {
        // Like any other log write: live at once, durable at the next sync.
        // openraft purges only what a durable snapshot covers.
        let mut d = self.disk(ErrorSubject::Logs, ErrorVerb::Delete)?;
        d.log = d.log.split_off(&(log_id.index + 1));
        d.purged = Some(log_id);
        d.pending.push(Op::Purge(log_id));
        drop(d);
        self.world.lock().unwrap().trace(format_args!("purge n{} ..={}", self.node, log_id.index));
        Ok(())
    }
}

/// The state machine of one incarnation.
pub struct SimSm {
    pub node: u64,
    pub epoch: u64,
    pub state: Arc<Mutex<SmState>>,
    pub disk: Arc<Mutex<Disk>>,
    pub world: Arc<Mutex<World>>,
}

fn snapshot_err(verb: ErrorVerb, msg: String) -> StorageError {
    StorageError::from(StorageIOError::new(ErrorSubject::Snapshot(None), verb, AnyError::error(msg)))
}

/// Builds a snapshot of one incarnation's state machine.
pub struct SimSnapshotBuilder {
    node: u64,
    epoch: u64,
    state: Arc<Mutex<SmState>>,
    disk: Arc<Mutex<Disk>>,
    world: Arc<Mutex<World>>,
}

impl RaftSnapshotBuilder<TypeConfig> for SimSnapshotBuilder {
    async fn build_snapshot(&mut self) -> Result<Snapshot, StorageError> {
        // A consistent copy: apply holds the same lock for a whole batch.
        let (kv, last, membership) = {
            let s = self.state.lock().unwrap();
            (Arc::new(s.kv.clone()), s.core.meta.last_applied, s.core.meta.membership.clone())
        };
        let bytes = kv.0.iter().map(|(k, v)| (k.len() + v.len()) as u64).sum();
        let mut w = self.world.lock().unwrap();
        w.stats.snapshot_builds += 1;
        let id = format!("n{}-{}-{}", self.node, last.map_or(0, |l| l.index), w.stats.snapshot_builds);
        let meta = SnapshotMeta { last_log_id: last, last_membership: membership, snapshot_id: id };
        {
            let mut d = self.disk.lock().unwrap();
            if d.epoch != self.epoch {
                return Err(snapshot_err(ErrorVerb::Write, "this incarnation has crashed".into()));
            }
            // Written and synced before openraft hears of it.
            d.snapshot = Some(SimSnapshot { meta: meta.clone(), kv, bytes });
        }
        w.trace(format_args!("snapshot-built n{} {} bytes={bytes}", self.node, meta.snapshot_id));
        Ok(Snapshot { meta, snapshot: placeholder_file() })
    }
}

impl RaftStateMachine<TypeConfig> for SimSm {
    type SnapshotBuilder = SimSnapshotBuilder;

    async fn applied_state(&mut self) -> Result<(Option<LogId>, StoredMembership), StorageError> {
        let s = self.state.lock().unwrap();
        Ok((s.core.meta.last_applied, s.core.meta.membership.clone()))
    }

    async fn apply<I>(&mut self, entries: I) -> Result<Vec<Response>, StorageError>
    where
        I: IntoIterator<Item = Entry> + Send,
        I::IntoIter: Send,
    {
        let mut out = Vec::new();
        let mut s = self.state.lock().unwrap();
        let s = &mut *s;
        let mut applied = Vec::new();
        // Like the real state machine: the batch's writes go down together
        // (or when the overlay grows large), so later entries of a batch
        // read earlier ones through the core's overlay, and where openraft
        // cuts batches differs between nodes.
        let flush = |s: &mut SmState| {
            let writes = s.core.take_writes().map_err(|e| e.into_raft(ErrorSubject::StateMachine, ErrorVerb::Write));
            writes.map(|w| s.kv.write(w)).map_err(Box::new)
        };
        for entry in entries {
            let r = s
                .core
                .apply_entry(&s.kv, &entry)
                .map_err(|e| e.into_raft(ErrorSubject::Apply(entry.log_id), ErrorVerb::Write))?;
            if s.core.dirty_len() >= APPLY_FLUSH_RECORDS {
                flush(s).map_err(|e| *e)?;
            }
            applied.push(entry.log_id);
            out.push(r);
        }
        flush(s).map_err(|e| *e)?;
        let mut w = self.world.lock().unwrap();
        for l in applied {
            w.trace(format_args!("apply n{} {l}", self.node));
        }
        Ok(out)
    }

    async fn get_snapshot_builder(&mut self) -> SimSnapshotBuilder {
        SimSnapshotBuilder {
            node: self.node,
            epoch: self.epoch,
            state: self.state.clone(),
            disk: self.disk.clone(),
            world: self.world.clone(),
        }
    }

    async fn begin_receiving_snapshot(&mut self) -> Result<Box<tokio::fs::File>, StorageError> {
        // Only the chunked InstallSnapshot RPC asks for this; the sim's
        // network sends whole snapshots (`full_snapshot`).
        Err(snapshot_err(ErrorVerb::Write, "the simulation sends whole snapshots, not chunks".into()))
    }

    async fn install_snapshot(&mut self, meta: &SnapshotMeta, _: Box<tokio::fs::File>) -> Result<(), StorageError> {
        let mut w = self.world.lock().unwrap();
        let Some(snap) = w.inflight_snapshots.remove(&(self.node, meta.snapshot_id.clone())) else {
            return Err(snapshot_err(ErrorVerb::Read, format!("snapshot {} was never received", meta.snapshot_id)));
        };
        {
            let mut d = self.disk.lock().unwrap();
            if d.epoch != self.epoch {
                return Err(snapshot_err(ErrorVerb::Write, "this incarnation has crashed".into()));
            }
            // Kept (durably) before the state switches, as the real store does.
            d.snapshot = Some(snap.clone());
        }
        // The switch is atomic: one assignment under the state lock.
        *self.state.lock().unwrap() = snap.restore();
        w.stats.snapshot_installs += 1;
        w.trace(format_args!("snapshot-installed n{} {} last={:?}", self.node, meta.snapshot_id, meta.last_log_id));
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot>, StorageError> {
        let d = self.disk.lock().unwrap();
        if d.epoch != self.epoch {
            return Err(snapshot_err(ErrorVerb::Read, "this incarnation has crashed".into()));
        }
        Ok(d.snapshot.as_ref().map(|s| Snapshot { meta: s.meta.clone(), snapshot: placeholder_file() }))
    }
}
