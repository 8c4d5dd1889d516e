//! Opening the RocksDB instance and reading the state machine's live generation.

use std::path::Path;
use std::sync::Arc;

use rocksdb::{
    BlockBasedOptions, Cache, ColumnFamilyDescriptor, DB, DBCompressionType, Direction, IteratorMode, Options,
    ReadOptions,
};

use crate::error::StoreError;
use crate::keys;
use crate::kv::Kv;

pub use crate::keys::{CF_LOGS, CF_RAFT, CF_SM};

/// Marks a data dir as Baton's, and its on-disk layout version.
const LAYOUT_KEY: &[u8] = b"layout";
/// v2: record format 2 (see `codec::FORMAT_VERSION`); a v1 directory is
/// refused at open rather than failing on its first old record.
const LAYOUT: &str = "baton-store-v2";

/// Total memtable memory across column families (64 MiB). RocksDB's default
/// (64 MiB per memtable, two per family) would let three families use 384 MiB.
pub const MEMTABLE_BUDGET_BYTES: usize = 64 * 1024 * 1024;
/// Shared block cache (32 MiB). Hot tasks are read from memtables; the cache
/// mostly serves reads of recent results and payloads.
pub const BLOCK_CACHE_BYTES: usize = 32 * 1024 * 1024;

/// One RocksDB instance with the three column families. Sharing one instance
/// (and one WAL) means the log's fsync also makes earlier state-machine writes
/// durable, so apply() never needs an fsync of its own.
pub fn open(dir: &Path) -> Result<Arc<DB>, StoreError> {
    std::fs::create_dir_all(dir).map_err(|e| StoreError::io(dir.display(), e))?;
    let mut opts = Options::default();
    opts.create_if_missing(true);
    opts.create_missing_column_families(true);
    opts.set_compression_type(DBCompressionType::Lz4);
    // Two cores: one flush and one compaction at a time is plenty.
    opts.set_max_background_jobs(2);
    // Keep log writes cheap to fsync: sync dirty pages in the background.
    opts.set_wal_bytes_per_sync(1 << 20);
    opts.set_bytes_per_sync(1 << 20);
    opts.set_db_write_buffer_size(MEMTABLE_BUDGET_BYTES);
    let cache = Cache::new_lru_cache(BLOCK_CACHE_BYTES);
    let cf = |name: &str, memtable: usize, compression: DBCompressionType| {
        let mut o = Options::default();
        o.set_compression_type(compression);
        o.set_write_buffer_size(memtable);
        let mut t = BlockBasedOptions::default();
        t.set_block_cache(&cache);
        t.set_bloom_filter(10.0, false);
        o.set_block_based_table_factory(&t);
        ColumnFamilyDescriptor::new(name, o)
    };
    // Log entries are deleted once a snapshot covers them: compressing them
    // on flush and compaction is CPU spent on data about to go.
    let lz4 = DBCompressionType::Lz4;
    let logs = cf(CF_LOGS, 16 << 20, DBCompressionType::None);
    let db = DB::open_cf_descriptors(&opts, dir, [logs, cf(CF_RAFT, 1 << 20, lz4), cf(CF_SM, 32 << 20, lz4)])
        .map_err(|e| locked(dir, e))?;
    let raft = db.cf_handle(CF_RAFT).expect("cf raft created above");
    match db.get_cf(raft, LAYOUT_KEY)? {
        None => db.put_cf(raft, LAYOUT_KEY, LAYOUT)?,
        Some(v) if v == LAYOUT.as_bytes() => {}
        Some(v) => {
            return Err(StoreError::Format {
                found: String::from_utf8_lossy(&v).into_owned(),
                expected: LAYOUT.into(),
            });
        }
    }
    Ok(Arc::new(db))
}

/// RocksDB reports a held lock only in its message ("While lock file:
/// …/LOCK: Resource temporarily unavailable"); name that case, since the
/// offline tools and a second `baton serve` on one data dir meet it.
fn locked(dir: &Path, e: rocksdb::Error) -> StoreError {
    let msg = e.to_string();
    if msg.contains("lock file") || msg.contains("LOCK") {
        StoreError::Locked { path: dir.display().to_string() }
    } else {
        StoreError::Rocks(e)
    }
}

pub(crate) fn cf<'a>(db: &'a DB, name: &str) -> Result<&'a rocksdb::ColumnFamily, StoreError> {
    db.cf_handle(name).ok_or_else(|| StoreError::Invariant(format!("column family {name} missing")))
}

/// The live generation number (0 for a fresh store).
pub fn current_gen(db: &DB, opts: Option<&ReadOptions>) -> Result<u64, StoreError> {
    let sm = cf(db, CF_SM)?;
    let v = match opts {
        Some(o) => db.get_cf_opt(sm, keys::CURRENT_GEN_KEY, o)?,
        None => db.get_cf(sm, keys::CURRENT_GEN_KEY)?,
    };
    match v {
        None => Ok(0),
        Some(v) => Ok(u64::from_be_bytes(v.as_slice().try_into().map_err(|_| StoreError::Corrupt {
            cf: CF_SM,
            key: "generation".into(),
            source: crate::codec::CodecError::Malformed(format!("{} bytes, want 8", v.len())),
        })?)),
    }
}

/// A [`Kv`] over one generation of the state machine, optionally pinned to a
/// RocksDB snapshot through `opts`.
pub struct GenKv<'a> {
    pub db: &'a DB,
    pub generation: u64,
    pub snapshot: Option<&'a rocksdb::Snapshot<'a>>,
}

impl GenKv<'_> {
    fn read_opts(&self) -> ReadOptions {
        let mut o = ReadOptions::default();
        if let Some(s) = self.snapshot {
            o.set_snapshot(s);
        }
        o
    }
}

impl Kv for GenKv<'_> {
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        let sm = cf(self.db, CF_SM)?;
        Ok(self.db.get_cf_opt(sm, keys::in_gen(self.generation, key), &self.read_opts())?)
    }

    fn scan_from(
        &self,
        prefix: &[u8],
        start: &[u8],
        visit: &mut dyn FnMut(&[u8], &[u8]) -> Result<bool, StoreError>,
    ) -> Result<(), StoreError> {
        let sm = cf(self.db, CF_SM)?;
        let prefix = keys::in_gen(self.generation, prefix);
        let start = keys::in_gen(self.generation, start).max(prefix.clone());
        let mut opts = self.read_opts();
        opts.fill_cache(false);
        // Bounded to the prefix: past its last live key the iterator would
        // otherwise step over every tombstone before the next live key (the
        // collector leaves many), only to find it outside the prefix.
        if let Some(end) = keys::prefix_successor(&prefix) {
            opts.set_iterate_upper_bound(end);
        }
        let it = self.db.iterator_cf_opt(sm, opts, IteratorMode::From(&start, Direction::Forward));
        for item in it {
            let (k, v) = item?;
            if !k.starts_with(&prefix) {
                break;
            }
            if !visit(&k[9..], &v)? {
                break;
            }
        }
        Ok(())
    }

    fn scan_back(
        &self,
        prefix: &[u8],
        before: Option<&[u8]>,
        visit: &mut dyn FnMut(&[u8], &[u8]) -> Result<bool, StoreError>,
    ) -> Result<(), StoreError> {
        let sm = cf(self.db, CF_SM)?;
        let prefix = keys::in_gen(self.generation, prefix);
        let mut opts = self.read_opts();
        opts.fill_cache(false);
        // Bounded below, for the reason `scan_from` is bounded above.
        opts.set_iterate_lower_bound(prefix.clone());
        let mut it = self.db.raw_iterator_cf_opt(sm, opts);
        // Start below `before`, or below the first key past the prefix.
        let upper = match before {
            Some(b) => keys::scan_back_upper(&prefix, Some(&keys::in_gen(self.generation, b))),
            None => keys::prefix_successor(&prefix),
        };
        match &upper {
            Some(u) => {
                it.seek_for_prev(u);
                if it.key() == Some(u.as_slice()) {
                    it.prev();
                }
            }
            None => it.seek_to_last(),
        }
        while it.valid() {
            let (Some(k), Some(v)) = (it.key(), it.value()) else { break };
            if !k.starts_with(&prefix) {
                break;
            }
            if !visit(&k[9..], v)? {
                break;
            }
            it.prev();
        }
        it.status()?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use rocksdb::perf::{PerfContext, PerfMetric, PerfStatsLevel, set_perf_stats};

    use super::*;
    use crate::keys::Table;

    /// Tombstones RocksDB stepped over during `f`, on this thread.
    fn tombstones_skipped(f: impl FnOnce()) -> u64 {
        set_perf_stats(PerfStatsLevel::EnableCount);
        let mut ctx = PerfContext::default();
        ctx.reset();
        f();
        ctx.metric(PerfMetric::InternalDeleteSkippedCount)
    }

    /// The collector scans a finished job's log keys on every entry; a job
    /// that logged nothing has an empty range, and the table after it holds
    /// the index keys of every job collected before (deleted, so
    /// tombstones until compaction). A scan that reads past its prefix
    /// steps over all of them: in the retention benchmark each entry's
    /// scan grew with every collected job until the nodes stopped keeping
    /// their elections. A scan must stop at its prefix, whatever follows.
    #[test]
    fn a_scan_stops_at_its_prefix_and_never_walks_the_tombstones_after_it() {
        let dir = tempfile::tempdir().unwrap();
        let db = open(dir.path()).unwrap();
        let kv = GenKv { db: &db, generation: 0, snapshot: None };
        let sm = cf(&db, CF_SM).unwrap();
        // Tombstones in the tables on both sides of the task logs' table.
        let key = |t: Table, i: u32| keys::in_gen(0, &[&[t as u8][..], &i.to_be_bytes()].concat());
        for t in [Table::Namespace, Table::JobIndex] {
            for i in 0..5_000 {
                db.put_cf(sm, key(t, i), b"x").unwrap();
            }
            for i in 0..5_000 {
                db.delete_cf(sm, key(t, i)).unwrap();
            }
            db.put_cf(sm, key(t, 9_999), b"live").unwrap();
        }
        let logs_of_a_job = keys::job_logs_of(7);
        let mut seen = 0;
        let skipped = tombstones_skipped(|| {
            kv.scan_from(&logs_of_a_job, &logs_of_a_job, &mut |_, _| {
                seen += 1;
                Ok(true)
            })
            .unwrap()
        });
        assert_eq!((seen, skipped), (0, 0), "forward: {skipped} tombstones stepped over");
        // Backwards: the same.
        let skipped = tombstones_skipped(|| {
            kv.scan_back(&logs_of_a_job, None, &mut |_, _| {
                seen += 1;
                Ok(true)
            })
            .unwrap()
        });
        assert_eq!((seen, skipped), (0, 0), "backward: {skipped} tombstones stepped over");
    }
}
