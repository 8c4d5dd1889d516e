//! The Raft log and vote on RocksDB.
//!
//! `append` writes entries into RocksDB's WAL and memtable at once (so readers
//! see them when it returns) and hands the flush callback to a syncer thread.
//! The syncer drains every queued callback, makes one `flush_wal(sync=true)`,
//! and only then fires them: the callback never fires before the fsync, and
//! concurrent appends share one fsync.

use std::fmt::Debug;
use std::ops::{Bound, RangeBounds};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use openraft::storage::{LogFlushed, LogState, RaftLogStorage};
use openraft::{ErrorSubject, ErrorVerb, RaftLogReader};
use rocksdb::{DB, Direction, IteratorMode, WriteBatch, WriteOptions};
use tokio::sync::mpsc;

use crate::codec;
use crate::error::{StoreError, raft_err};
use crate::rocks::{CF_LOGS, CF_RAFT, cf};
use crate::types::*;

const VOTE_KEY: &[u8] = b"vote";
const COMMITTED_KEY: &[u8] = b"committed";
const PURGED_KEY: &[u8] = b"purged";
/// The cluster this data dir belongs to ([`ClusterId`]).
const CLUSTER_ID_KEY: &[u8] = b"cluster_id";
/// This data dir's [`Incarnation`].
const INCARNATION_KEY: &[u8] = b"incarnation";
/// The node id this data dir serves as (set by its first owner).
const NODE_ID_KEY: &[u8] = b"node_id";

/// Flush callbacks waiting for the syncer. Bounded so a stalled disk pushes
/// back on openraft (append awaits a slot) instead of queueing without limit.
pub const SYNC_QUEUE_DEPTH: usize = 1024;

fn index_key(index: u64) -> [u8; 8] {
    index.to_be_bytes()
}

/// The log store. Cheap to clone; clones share the syncer.
#[derive(Clone)]
pub struct LogStore {
    db: Arc<DB>,
    syncer: Arc<Syncer>,
    appended: Arc<AtomicU64>,
}

/// Bytes of encoded entries appended to a log store since it was opened,
/// read by the coordinator's snapshot trigger: openraft's policy counts
/// entries, and batched entries can carry gigabytes before it fires.
#[derive(Clone, Debug, Default)]
pub struct AppendedBytes(Arc<AtomicU64>);

impl AppendedBytes {
    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// The syncer thread's handle. Dropping the last one closes the queue and
/// joins the thread, so the database is released when the store is dropped
/// (a reopen in the same process must not find it still locked).
struct Syncer {
    tx: Option<mpsc::Sender<LogFlushed<TypeConfig>>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Drop for Syncer {
    fn drop(&mut self) {
        drop(self.tx.take());
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Reads log entries; handed to replication tasks.
#[derive(Clone)]
pub struct LogReader {
    db: Arc<DB>,
}

impl LogStore {
    /// Open the log store over `db`, checking that the vote, the raft
    /// pointers and the last log entry decode: a node with a corrupt log
    /// refuses to start instead of guessing.
    pub fn open(db: Arc<DB>) -> Result<Self, StoreError> {
        let store = Self::new(db);
        store.get_raft::<Vote>(VOTE_KEY)?;
        store.get_raft::<Option<LogId>>(COMMITTED_KEY)?;
        store.get_raft::<LogId>(PURGED_KEY)?;
        store.get_raft::<ClusterId>(CLUSTER_ID_KEY)?;
        store.get_raft::<Incarnation>(INCARNATION_KEY)?;
        store.get_raft::<NodeId>(NODE_ID_KEY)?;
        store.last_entry_id()?;
        Ok(store)
    }

    /// The cluster this data dir belongs to; `None` until it joins or
    /// creates one.
    pub fn cluster_id(&self) -> Result<Option<ClusterId>, StoreError> {
        self.get_raft(CLUSTER_ID_KEY)
    }

    /// Record the cluster this data dir belongs to. Synced: a node must not
    /// answer a cluster's messages and then forget which cluster it was.
    pub fn save_cluster_id(&self, id: ClusterId) -> Result<(), StoreError> {
        self.put_raft(CLUSTER_ID_KEY, &id, true)
    }

    /// This data dir's incarnation; `None` for a data dir created before it
    /// had one (a new store gets one from its first owner).
    pub fn incarnation(&self) -> Result<Option<Incarnation>, StoreError> {
        self.get_raft(INCARNATION_KEY)
    }

    /// Record this data dir's incarnation (synced).
    pub fn save_incarnation(&self, inc: Incarnation) -> Result<(), StoreError> {
        self.put_raft(INCARNATION_KEY, &inc, true)
    }

    /// The node id this data dir serves as; `None` until its first start.
    pub fn node_id(&self) -> Result<Option<NodeId>, StoreError> {
        self.get_raft(NODE_ID_KEY)
    }

    /// Record the node id this data dir serves as (synced).
    pub fn save_node_id(&self, id: NodeId) -> Result<(), StoreError> {
        self.put_raft(NODE_ID_KEY, &id, true)
    }

    /// Append entries and fsync them, outside openraft: for the offline
    /// tools that seed or rewrite a data dir (restore, recover). The entries
    /// must follow the last one.
    pub fn append_offline(&self, entries: &[Entry]) -> Result<(), StoreError> {
        let last = self.last_log_id()?;
        let logs = cf(&self.db, CF_LOGS)?;
        let mut batch = WriteBatch::default();
        for (expect, e) in (last.map_or(0, |l| l.index + 1)..).zip(entries) {
            if e.log_id.index != expect {
                return Err(StoreError::Invariant(format!(
                    "offline append of index {} after {:?}",
                    e.log_id.index, last
                )));
            }
            let bytes = codec::encode(e).map_err(|source| StoreError::Encode { what: "log entry", source })?;
            batch.put_cf(logs, index_key(e.log_id.index), bytes);
        }
        let mut wo = WriteOptions::default();
        wo.set_sync(true);
        self.db.write_opt(batch, &wo)?;
        Ok(())
    }

    /// A handle on the count of bytes appended since open.
    pub fn appended_bytes(&self) -> AppendedBytes {
        AppendedBytes(self.appended.clone())
    }

    /// The last log id, purged or not (`None` for an empty log).
    pub fn last_log_id(&self) -> Result<Option<LogId>, StoreError> {
        Ok(self.last_entry_id()?.or(self.get_raft::<LogId>(PURGED_KEY)?))
    }

    /// Log entries with index in `range`, in order.
    pub fn entries(&self, range: std::ops::Range<u64>) -> Result<Vec<Entry>, StoreError> {
        read_range(&self.db, range, usize::MAX)
    }

    fn new(db: Arc<DB>) -> Self {
        let (tx, rx) = mpsc::channel(SYNC_QUEUE_DEPTH);
        let sync_db = db.clone();
        let thread = std::thread::Builder::new()
            .name("baton-log-sync".into())
            .spawn(move || sync_loop(sync_db, rx))
            .expect("spawn log sync thread");
        Self {
            db,
            syncer: Arc::new(Syncer { tx: Some(tx), thread: Some(thread) }),
            appended: Arc::new(AtomicU64::new(0)),
        }
    }

    fn get_raft<T: serde::de::DeserializeOwned>(&self, key: &[u8]) -> Result<Option<T>, StoreError> {
        let raft = cf(&self.db, CF_RAFT)?;
        match self.db.get_cf(raft, key)? {
            None => Ok(None),
            Some(v) => codec::decode(&v).map(Some).map_err(|source| StoreError::Corrupt {
                cf: CF_RAFT,
                key: String::from_utf8_lossy(key).into_owned(),
                source,
            }),
        }
    }

    fn put_raft<T: serde::Serialize>(&self, key: &[u8], v: &T, sync: bool) -> Result<(), StoreError> {
        let raft = cf(&self.db, CF_RAFT)?;
        let bytes = codec::encode(v).map_err(|source| StoreError::Encode { what: "raft state", source })?;
        let mut wo = WriteOptions::default();
        wo.set_sync(sync);
        self.db.put_cf_opt(raft, key, bytes, &wo)?;
        Ok(())
    }

    fn last_entry_id(&self) -> Result<Option<LogId>, StoreError> {
        let logs = cf(&self.db, CF_LOGS)?;
        match self.db.iterator_cf(logs, IteratorMode::End).next() {
            None => Ok(None),
            Some(item) => {
                let (k, v) = item?;
                let e: Entry = decode_entry(&k, &v)?;
                Ok(Some(e.log_id))
            }
        }
    }
}

fn decode_entry(k: &[u8], v: &[u8]) -> Result<Entry, StoreError> {
    codec::decode(v).map_err(|source| StoreError::Corrupt {
        cf: CF_LOGS,
        key: match <[u8; 8]>::try_from(k) {
            Ok(b) => format!("index {}", u64::from_be_bytes(b)),
            Err(_) => format!("{k:02x?}"),
        },
        source,
    })
}

/// The syncer: one fsync for everything queued, then the callbacks.
fn sync_loop(db: Arc<DB>, mut rx: mpsc::Receiver<LogFlushed<TypeConfig>>) {
    let mut pending = Vec::new();
    while let Some(first) = rx.blocking_recv() {
        pending.push(first);
        while let Ok(more) = rx.try_recv() {
            pending.push(more);
        }
        let res = db.flush_wal(true).map_err(|e| std::io::Error::other(e.to_string()));
        if let Err(e) = &res {
            tracing::error!(error = %e, "log fsync failed");
        }
        for cb in pending.drain(..) {
            cb.log_io_completed(match &res {
                Ok(()) => Ok(()),
                Err(e) => Err(std::io::Error::new(e.kind(), e.to_string())),
            });
        }
    }
}

fn read_range<RB: RangeBounds<u64>>(db: &DB, range: RB, max: usize) -> Result<Vec<Entry>, StoreError> {
    let start = match range.start_bound() {
        Bound::Included(i) => *i,
        Bound::Excluded(i) => i.saturating_add(1),
        Bound::Unbounded => 0,
    };
    let logs = cf(db, CF_LOGS)?;
    let mut out = Vec::new();
    let from = index_key(start);
    for item in db.iterator_cf(logs, IteratorMode::From(&from, Direction::Forward)) {
        let (k, v) = item?;
        let idx = u64::from_be_bytes(k.as_ref().try_into().map_err(|_| StoreError::Corrupt {
            cf: CF_LOGS,
            key: format!("{k:02x?}"),
            source: codec::CodecError::Malformed("log key is not 8 bytes".into()),
        })?);
        if !range.contains(&idx) || out.len() >= max {
            break;
        }
        let e = decode_entry(&k, &v)?;
        if e.log_id.index != idx {
            return Err(StoreError::Invariant(format!("entry at key {idx} has index {}", e.log_id.index)));
        }
        out.push(e);
    }
    Ok(out)
}

impl RaftLogReader<TypeConfig> for LogReader {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + Send>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry>, StorageError> {
        read_range(&self.db, range, usize::MAX).map_err(raft_err(ErrorSubject::Logs, ErrorVerb::Read))
    }
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + Send>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry>, StorageError> {
        read_range(&self.db, range, usize::MAX).map_err(raft_err(ErrorSubject::Logs, ErrorVerb::Read))
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = LogReader;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, StorageError> {
        let read = || -> Result<_, StoreError> {
            let purged: Option<LogId> = self.get_raft(PURGED_KEY)?;
            let last = self.last_entry_id()?.or(purged);
            Ok(LogState { last_purged_log_id: purged, last_log_id: last })
        };
        read().map_err(raft_err(ErrorSubject::Logs, ErrorVerb::Read))
    }

    async fn get_log_reader(&mut self) -> LogReader {
        LogReader { db: self.db.clone() }
    }

    async fn save_vote(&mut self, vote: &Vote) -> Result<(), StorageError> {
        // sync=true: the vote is on disk before we return, as Raft requires.
        self.put_raft(VOTE_KEY, vote, true).map_err(raft_err(ErrorSubject::Vote, ErrorVerb::Write))
    }

    async fn read_vote(&mut self) -> Result<Option<Vote>, StorageError> {
        self.get_raft(VOTE_KEY).map_err(raft_err(ErrorSubject::Vote, ErrorVerb::Read))
    }

    async fn save_committed(&mut self, committed: Option<LogId>) -> Result<(), StorageError> {
        // Not synced: it only lets a restarted node re-apply sooner; losing it is safe.
        self.put_raft(COMMITTED_KEY, &committed, false).map_err(raft_err(ErrorSubject::Store, ErrorVerb::Write))
    }

    async fn read_committed(&mut self) -> Result<Option<LogId>, StorageError> {
        self.get_raft::<Option<LogId>>(COMMITTED_KEY)
            .map(Option::flatten)
            .map_err(raft_err(ErrorSubject::Store, ErrorVerb::Read))
    }

    async fn append<I>(&mut self, entries: I, callback: LogFlushed<TypeConfig>) -> Result<(), StorageError>
    where
        I: IntoIterator<Item = Entry> + Send,
        I::IntoIter: Send,
    {
        let write = || -> Result<(), StoreError> {
            let logs = cf(&self.db, CF_LOGS)?;
            let mut batch = WriteBatch::default();
            let mut size = 0u64;
            for e in entries {
                let bytes = codec::encode(&e).map_err(|source| StoreError::Encode { what: "log entry", source })?;
                size += bytes.len() as u64;
                batch.put_cf(logs, index_key(e.log_id.index), bytes);
            }
            // Unsynced write: visible to readers now; the syncer makes it durable.
            self.db.write(batch)?;
            self.appended.fetch_add(size, Ordering::Relaxed);
            Ok(())
        };
        write().map_err(raft_err(ErrorSubject::Logs, ErrorVerb::Write))?;
        let tx = self.syncer.tx.as_ref().expect("syncer queue is open while the store lives");
        if let Err(mpsc::error::SendError(cb)) = tx.send(callback).await {
            cb.log_io_completed(Err(std::io::Error::other("log syncer stopped")));
        }
        Ok(())
    }

    async fn truncate(&mut self, log_id: LogId) -> Result<(), StorageError> {
        // One range delete of [index, end): the log keeps its prefix, so no hole.
        let run = || -> Result<(), StoreError> {
            let logs = cf(&self.db, CF_LOGS)?;
            let mut batch = WriteBatch::default();
            batch.delete_range_cf(logs, index_key(log_id.index), index_key(u64::MAX));
            batch.delete_cf(logs, index_key(u64::MAX));
            self.db.write(batch)?;
            Ok(())
        };
        run().map_err(raft_err(ErrorSubject::Logs, ErrorVerb::Delete))
    }

    async fn purge(&mut self, log_id: LogId) -> Result<(), StorageError> {
        // The purged marker and the deletion are one atomic batch: after a crash
        // either both happened or neither did, so first-present = purged + 1.
        let run = || -> Result<(), StoreError> {
            let logs = cf(&self.db, CF_LOGS)?;
            let raft = cf(&self.db, CF_RAFT)?;
            let mut batch = WriteBatch::default();
            let bytes =
                codec::encode(&log_id).map_err(|source| StoreError::Encode { what: "purged log id", source })?;
            batch.put_cf(raft, PURGED_KEY, bytes);
            batch.delete_range_cf(logs, index_key(0), index_key(log_id.index.saturating_add(1)));
            self.db.write(batch)?;
            Ok(())
        };
        run().map_err(raft_err(ErrorSubject::Logs, ErrorVerb::Delete))
    }
}
