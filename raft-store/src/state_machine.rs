//! The state machine on RocksDB: openraft's `RaftStateMachine` around [`Core`].
//!
//! apply() runs the core over a batch of entries and writes every change, plus
//! `last_applied` and the membership, in one RocksDB WriteBatch. It does not
//! fsync: it shares the log's WAL, and the log store's next fsync (or the one
//! taken before every snapshot) makes it durable. A state machine that loses
//! unsynced applies on power loss re-applies them from the log, which still
//! holds everything after the last snapshot.
//!
//! Snapshots are streamed from a RocksDB snapshot into a file and installed
//! into a fresh key generation that is switched on with one atomic write.

use std::io::{Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock, RwLockReadGuard, RwLockWriteGuard};

use openraft::storage::RaftStateMachine;
use openraft::{ErrorSubject, ErrorVerb, RaftSnapshotBuilder};
use rocksdb::{DB, ReadOptions, WriteBatch, WriteOptions};

use crate::backup;
use crate::command::Response;
use crate::core::{Core, Meta};
use crate::error::{StoreError, raft_err};
use crate::keys::parse_task;
use crate::keys::{self, Table};
use crate::kv::{Kv, decode_at, load, state_hash};
use crate::log_store::LogStore;
use crate::rocks::{self, CF_SM, GenKv, cf};
use crate::snapshot;
use crate::task::{JobRecord, JobStatus, SessionRecord, TaskRecord};
use crate::types::*;
use crate::workflow::WorkflowRecord;

const CURRENT_SNAPSHOT: &str = "current.snap";
/// Bytes buffered per WriteBatch while installing a snapshot. Bounds install
/// memory regardless of table size.
pub const INSTALL_BATCH_BYTES: usize = 4 * 1024 * 1024;
/// Changed records buffered by apply() before it writes them out, at an entry
/// boundary. Bounds apply memory when catching up on many large entries; each
/// entry's changes still land in one batch with its `last_applied`.
pub const APPLY_FLUSH_RECORDS: usize = 50_000;

/// Open (or create) a node's store under `dir`: the log store and the state machine.
pub fn open_store(dir: &Path) -> Result<(LogStore, StateMachine), StoreError> {
    let db = rocks::open(&dir.join("db"))?;
    let sm = StateMachine::open(db.clone(), dir.join("snapshots"))?;
    Ok((LogStore::open(db)?, sm))
}

/// What apply() changes and readers read: the core and the live generation.
/// apply() holds the write lock for one whole apply call, so readers never see
/// a half-applied entry.
struct Live {
    core: Core,
    generation: u64,
}

/// The RocksDB-backed state machine.
pub struct StateMachine {
    db: Arc<DB>,
    live: Arc<RwLock<Live>>,
    snap_dir: PathBuf,
    /// Serializes replacing `current.snap` between builders and installs.
    snap_lock: Arc<Mutex<()>>,
    recv_seq: u64,
}

impl StateMachine {
    pub fn open(db: Arc<DB>, snap_dir: PathBuf) -> Result<Self, StoreError> {
        std::fs::create_dir_all(&snap_dir).map_err(|e| StoreError::io(snap_dir.display(), e))?;
        // Leftovers of interrupted builds or receives.
        if let Ok(rd) = std::fs::read_dir(&snap_dir) {
            for f in rd.flatten() {
                if f.file_name().to_string_lossy().ends_with(".tmp") {
                    let _ = std::fs::remove_file(f.path());
                }
            }
        }
        let generation = rocks::current_gen(&db, None)?;
        // Drop every other generation: the rest of an install that crashed
        // before switching, or an old one whose deletion did not finish.
        let sm = cf(&db, CF_SM)?;
        let mut batch = WriteBatch::default();
        batch.delete_range_cf(sm, keys::gen_prefix(0), keys::gen_prefix(generation));
        batch.delete_range_cf(sm, &keys::gen_prefix(generation + 1)[..], &[keys::GEN_PREFIX + 1][..]);
        db.write(batch)?;
        let core = Core::open(&GenKv { db: &db, generation, snapshot: None })?;
        tracing::info!(
            generation,
            last_applied = ?core.meta.last_applied,
            live_jobs = core.idx.jobs.len(),
            live_tasks = core.idx.live_tasks,
            "state machine opened"
        );
        Ok(Self {
            db,
            live: Arc::new(RwLock::new(Live { core, generation })),
            snap_dir,
            snap_lock: Arc::new(Mutex::new(())),
            recv_seq: 0,
        })
    }

    /// A cloneable read handle, for the coordinator's queries and scheduler.
    pub fn reader(&self) -> StoreReader {
        StoreReader { db: self.db.clone(), live: self.live.clone() }
    }

    /// Run `f` over the core and the live records, under the read lock.
    pub fn read<R>(&self, f: impl FnOnce(&Core, &dyn Kv) -> R) -> R {
        self.reader().read(f)
    }

    /// blake3 over the live generation, with the applied log id it covers;
    /// equal on replicas at equal applied log id.
    pub fn state_hash(&self) -> Result<(Option<LogId>, [u8; 32]), StoreError> {
        self.reader().state_hash()
    }

    fn write_lock(&self) -> RwLockWriteGuard<'_, Live> {
        self.live.write().unwrap_or_else(|p| p.into_inner())
    }
}

fn write_changes(db: &DB, live: &mut Live) -> Result<(), StoreError> {
    let writes = live.core.take_writes()?;
    let sm = cf(db, CF_SM)?;
    let mut batch = WriteBatch::default();
    for (k, v) in writes {
        let key = keys::in_gen(live.generation, &k);
        match v {
            Some(v) => batch.put_cf(sm, key, v),
            None => batch.delete_cf(sm, key),
        }
    }
    db.write(batch)?;
    Ok(())
}

/// Read access to the state machine from outside openraft: consistent with
/// whole applied entries, never blocking apply() for longer than one short
/// read. Long scans (`state_hash`, `list_jobs`, `tasks_of`) hold the lock only
/// to pin a RocksDB snapshot and run on that snapshot without it: Rust's
/// `RwLock` stops new readers once apply() waits, so a scan under the lock
/// would stall apply and, through it, every reader on the leader.
#[derive(Clone)]
pub struct StoreReader {
    db: Arc<DB>,
    live: Arc<RwLock<Live>>,
}

/// A state pinned for a long read: the live generation and the applied log id
/// at the moment the RocksDB snapshot was taken.
struct Pinned<'a> {
    db: &'a DB,
    generation: u64,
    last_applied: Option<LogId>,
    snap: rocksdb::Snapshot<'a>,
}

impl Pinned<'_> {
    fn kv(&self) -> GenKv<'_> {
        GenKv { db: self.db, generation: self.generation, snapshot: Some(&self.snap) }
    }
}

impl StoreReader {
    fn read_lock(&self) -> RwLockReadGuard<'_, Live> {
        self.live.read().unwrap_or_else(|p| p.into_inner())
    }

    /// Run `f` over the core (meta and indexes) and the live records, under
    /// the read lock: keep `f` short, apply() waits for it.
    pub fn read<R>(&self, f: impl FnOnce(&Core, &dyn Kv) -> R) -> R {
        let g = self.read_lock();
        let kv = GenKv { db: &self.db, generation: g.generation, snapshot: None };
        f(&g.core, &kv)
    }

    /// Pin the applied state for a long read. apply() writes all its changes
    /// under the write lock, so a snapshot taken under the read lock holds
    /// exactly the state at `last_applied`.
    fn pin(&self) -> Pinned<'_> {
        let g = self.read_lock();
        let pinned = Pinned {
            db: &self.db,
            generation: g.generation,
            last_applied: g.core.meta.last_applied,
            snap: self.db.snapshot(),
        };
        drop(g);
        debug_assert_eq!(
            load::<Meta>(&pinned.kv(), &keys::meta()).ok().flatten().and_then(|m| m.last_applied),
            pinned.last_applied,
            "snapshot and core disagree on last_applied"
        );
        pinned
    }

    pub fn last_applied(&self) -> Option<LogId> {
        self.read_lock().core.meta.last_applied
    }

    /// blake3 over the live generation, with the applied log id it covers.
    /// Replicas at the same log id have equal hashes.
    pub fn state_hash(&self) -> Result<(Option<LogId>, [u8; 32]), StoreError> {
        let p = self.pin();
        Ok((p.last_applied, state_hash(&p.kv())?))
    }

    /// A job's record; `None` once DeleteJob was applied.
    pub fn job(&self, id: JobId) -> Result<Option<JobRecord>, StoreError> {
        self.read(|core, kv| core.job(kv, id)).map(|j| j.filter(|j| !j.deleted))
    }

    pub fn task(&self, key: TaskKey) -> Result<Option<TaskRecord>, StoreError> {
        self.read(|core, kv| core.task(kv, key))
    }

    /// A shard's payload (empty when it had none).
    pub fn payload(&self, key: TaskKey) -> Result<Vec<u8>, StoreError> {
        self.read(|_, kv| {
            Ok(load::<serde_bytes::ByteBuf>(kv, &keys::payload(key))?.map(|b| b.into_vec()).unwrap_or_default())
        })
    }

    pub fn session(&self, id: SessionId) -> Result<Option<SessionRecord>, StoreError> {
        self.read(|core, kv| match core.idx.sessions.get(&id) {
            Some(s) => Ok(Some(s.clone())),
            None => load(kv, &keys::session(id)),
        })
    }

    /// One page of jobs matching `filter`, in id (= creation) order, or
    /// newest first: at most `limit` records, starting after `after` (the
    /// last id of the previous page). Returns the page and the id to pass as
    /// `after` for the next one (`None` at the end). Pages come from the job
    /// table or a job index (`keys::job_index`), so a page reads about as
    /// many records as it returns, whatever the filter. Deleted jobs are
    /// left out. Runs on a pinned snapshot, not under the lock.
    pub fn list_jobs(
        &self,
        filter: &JobFilter,
        after: Option<JobId>,
        limit: usize,
        newest_first: bool,
    ) -> Result<(Vec<JobRecord>, Option<JobId>), StoreError> {
        self.list_jobs_inspect(filter, after, limit, newest_first, |_| {})
    }

    /// [`StoreReader::list_jobs`], calling `inspect` on every record read
    /// (tests use it to hold a scan open).
    fn list_jobs_inspect(
        &self,
        filter: &JobFilter,
        after: Option<JobId>,
        limit: usize,
        newest_first: bool,
        inspect: impl FnMut(&JobRecord),
    ) -> Result<(Vec<JobRecord>, Option<JobId>), StoreError> {
        let pinned = self.pin();
        list_jobs_at(&pinned.kv(), filter, after, limit, newest_first, inspect)
    }

    /// The stored logs of a task, one record per attempt in grant order
    /// (by token), from token `from_token` on, keeping those `keep` accepts;
    /// at most `limit` records.
    pub fn task_logs(
        &self,
        task: TaskKey,
        from_token: Token,
        limit: usize,
        keep: impl Fn(&crate::lifecycle::LogRecord) -> bool,
    ) -> Result<Vec<crate::lifecycle::LogRecord>, StoreError> {
        let pinned = self.pin();
        let mut out = Vec::new();
        let start = keys::task_log(task, from_token);
        pinned.kv().scan_from(&keys::task_logs_of(task), &start, &mut |k, v| {
            let (_, token) = keys::parse_task_log(k)
                .ok_or_else(|| StoreError::Invariant(format!("bad key {}", keys::describe(k))))?;
            let r: crate::lifecycle::LogRecord = decode_at(k, v)?;
            if r.token != token {
                return Err(StoreError::Invariant(format!("log record {} holds token {}", keys::describe(k), r.token)));
            }
            if keep(&r) {
                out.push(r);
            }
            Ok(out.len() < limit)
        })?;
        Ok(out)
    }

    /// A namespace's settings (defaults when it has no record).
    pub fn namespace(&self, namespace: &str) -> crate::lifecycle::NamespaceRecord {
        self.read(|core, _| core.idx.namespaces.get(namespace).cloned().unwrap_or_default())
    }

    /// A namespace's settings and what it uses now, read together.
    pub fn namespace_usage(
        &self,
        namespace: &str,
    ) -> (crate::lifecycle::NamespaceRecord, crate::quota::NamespaceUsage) {
        self.read(|core, _| (core.idx.namespaces.get(namespace).cloned().unwrap_or_default(), core.usage(namespace)))
    }

    /// A workflow's record, live or finished.
    pub fn workflow(&self, id: WorkflowId) -> Result<Option<WorkflowRecord>, StoreError> {
        self.read(|core, kv| core.workflow(kv, id))
    }

    /// Up to `limit` workflows with id greater than `after`, in id order,
    /// that pass `keep`; like [`StoreReader::list_jobs`].
    pub fn list_workflows(
        &self,
        after: WorkflowId,
        limit: usize,
        max_scan: usize,
        keep: impl Fn(&WorkflowRecord) -> bool,
    ) -> Result<(Vec<WorkflowRecord>, Option<WorkflowId>), StoreError> {
        let pinned = self.pin();
        let mut out = Vec::new();
        let mut scanned = 0usize;
        let mut resume = None;
        let start = keys::workflow(after.saturating_add(1));
        pinned.kv().scan_from(&[Table::Workflow as u8], &start, &mut |k, v| {
            let wf: WorkflowRecord = decode_at(k, v)?;
            scanned += 1;
            if keep(&wf) {
                if out.len() == limit {
                    resume = Some(out.last().map_or(wf.id, |w: &WorkflowRecord| w.id));
                    return Ok(false);
                }
                out.push(wf);
            } else if scanned >= max_scan {
                resume = Some(wf.id);
                return Ok(false);
            }
            Ok(true)
        })?;
        Ok((out, resume))
    }

    /// Task records of one job in shard order, from `from_shard`: at most
    /// `limit` records of at most `max_bytes` encoded bytes in all (results,
    /// mostly). Never empty while a record is left: a first record above
    /// `max_bytes` is returned alone. Runs on a pinned snapshot, not under
    /// the lock.
    pub fn tasks_of(
        &self,
        job: JobId,
        from_shard: u32,
        limit: usize,
        max_bytes: usize,
    ) -> Result<Vec<(u32, TaskRecord)>, StoreError> {
        let pinned = self.pin();
        let mut out = Vec::new();
        let mut bytes = 0usize;
        let start = keys::task(TaskKey::new(job, from_shard));
        pinned.kv().scan_from(&keys::tasks_of(job), &start, &mut |k, v| {
            if !out.is_empty() && bytes + v.len() > max_bytes {
                return Ok(false);
            }
            let key = parse_task(k).ok_or_else(|| StoreError::Invariant(format!("bad key {}", keys::describe(k))))?;
            out.push((key.shard, decode_at(k, v)?));
            bytes += v.len();
            Ok(out.len() < limit)
        })?;
        Ok(out)
    }
}

/// One page of [`StoreReader::list_jobs`] read from `kv`. Without a filter
/// it walks the job table; with one, the job index of that filter (by
/// namespace, status, or both), reading each listed job's record by key. So
/// a page reads its records, one more key to know whether more follow, and
/// (from the job table only) the deleted jobs the collector has not taken
/// yet; deleted jobs have no index keys.
pub fn list_jobs_in(
    kv: &dyn Kv,
    filter: &JobFilter,
    after: Option<JobId>,
    limit: usize,
    newest_first: bool,
) -> Result<(Vec<JobRecord>, Option<JobId>), StoreError> {
    list_jobs_at(kv, filter, after, limit, newest_first, |_| {})
}

/// [`list_jobs_in`], calling `inspect` on every record read.
fn list_jobs_at(
    kv: &dyn Kv,
    filter: &JobFilter,
    after: Option<JobId>,
    limit: usize,
    newest_first: bool,
    mut inspect: impl FnMut(&JobRecord),
) -> Result<(Vec<JobRecord>, Option<JobId>), StoreError> {
    let mut out: Vec<JobRecord> = Vec::new();
    let mut more = false;
    let ns = filter.namespace.as_deref();
    let status = filter.status.map(JobStatus::tag);
    let indexed = ns.is_some() || status.is_some();
    let mut visit = |k: &[u8], v: &[u8]| -> Result<bool, StoreError> {
        if out.len() >= limit {
            more = true;
            return Ok(false);
        }
        let job: JobRecord = if indexed {
            let id = keys::parse_job_index(k)
                .ok_or_else(|| StoreError::Invariant(format!("bad key {}", keys::describe(k))))?;
            load(kv, &keys::job(id))?
                .ok_or_else(|| StoreError::Invariant(format!("index key {} names no job", keys::describe(k))))?
        } else {
            decode_at(k, v)?
        };
        inspect(&job);
        // Index keys are written with their job's record, in one batch.
        debug_assert!(job.deleted || filter.matches(&job), "index key {} lists job {job:?}", keys::describe(k));
        if !job.deleted && filter.matches(&job) {
            out.push(job);
        }
        Ok(true)
    };
    let key_of = |id: JobId| if indexed { keys::job_index(ns, status, id) } else { keys::job(id) };
    let prefix = if indexed { keys::job_index_prefix(ns, status) } else { vec![Table::Job as u8] };
    if newest_first {
        let before = after.map(key_of);
        kv.scan_back(&prefix, before.as_deref(), &mut visit)?;
    } else {
        let start = match after.map(|a| a.checked_add(1)) {
            None => prefix.clone(),
            Some(Some(next)) => key_of(next),
            Some(None) => return Ok((Vec::new(), None)),
        };
        kv.scan_from(&prefix, &start, &mut visit)?;
    }
    let resume = if more { out.last().map(|j| j.id) } else { None };
    Ok((out, resume))
}

/// Which jobs a listing returns.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct JobFilter {
    pub namespace: Option<String>,
    pub status: Option<JobStatus>,
}

impl JobFilter {
    pub fn matches(&self, job: &JobRecord) -> bool {
        self.namespace.as_ref().is_none_or(|n| *n == job.namespace) && self.status.is_none_or(|s| job.status() == s)
    }
}

impl RaftStateMachine<TypeConfig> for StateMachine {
    type SnapshotBuilder = SnapshotBuilder;

    async fn applied_state(&mut self) -> Result<(Option<LogId>, StoredMembership), StorageError> {
        let g = self.live.read().unwrap_or_else(|p| p.into_inner());
        Ok((g.core.meta.last_applied, g.core.meta.membership.clone()))
    }

    async fn apply<I>(&mut self, entries: I) -> Result<Vec<Response>, StorageError>
    where
        I: IntoIterator<Item = Entry> + Send,
        I::IntoIter: Send,
    {
        let started = std::time::Instant::now();
        let mut out = Vec::new();
        let db = self.db.clone();
        let mut live = self.write_lock();
        let live = &mut *live;
        for entry in entries {
            let kv = GenKv { db: &db, generation: live.generation, snapshot: None };
            let r = live
                .core
                .apply_entry(&kv, &entry)
                .map_err(|e| e.into_raft(ErrorSubject::Apply(entry.log_id), ErrorVerb::Write))?;
            out.push(r);
            if live.core.dirty_len() >= APPLY_FLUSH_RECORDS {
                write_changes(&db, live).map_err(raft_err(ErrorSubject::StateMachine, ErrorVerb::Write))?;
            }
        }
        write_changes(&db, live).map_err(raft_err(ErrorSubject::StateMachine, ErrorVerb::Write))?;
        // A facade call: recorded only if the process installed a recorder.
        metrics::histogram!("baton_apply_seconds").record(started.elapsed().as_secs_f64());
        metrics::histogram!("baton_apply_entries").record(out.len() as f64);
        Ok(out)
    }

    async fn get_snapshot_builder(&mut self) -> SnapshotBuilder {
        SnapshotBuilder { db: self.db.clone(), snap_dir: self.snap_dir.clone(), lock: self.snap_lock.clone() }
    }

    async fn begin_receiving_snapshot(&mut self) -> Result<Box<tokio::fs::File>, StorageError> {
        self.recv_seq += 1;
        let path = self.snap_dir.join(format!("recv-{}.tmp", self.recv_seq));
        let f = tokio::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&path)
            .await
            .map_err(|e| StoreError::io(path.display(), e))
            .map_err(raft_err(ErrorSubject::Snapshot(None), ErrorVerb::Write))?;
        Ok(Box::new(f))
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta,
        snapshot: Box<tokio::fs::File>,
    ) -> Result<(), StorageError> {
        let err = raft_err(ErrorSubject::Snapshot(Some(meta.signature())), ErrorVerb::Write);
        let file = snapshot.into_std().await;
        let old_gen = self.live.read().unwrap_or_else(|p| p.into_inner()).generation;
        let (db, meta2) = (self.db.clone(), meta.clone());
        let (new_gen, core, file) = tokio::task::spawn_blocking(move || prepare_install(&db, old_gen, file, &meta2))
            .await
            .map_err(|e| StoreError::Snapshot(format!("install task failed: {e}")))
            .and_then(|r| r)
            .map_err(err)?;
        {
            // The switch: one synced batch flips the generation and drops the
            // old one, under the write lock so no reader sees the gap.
            let mut live = self.write_lock();
            switch_generation(&self.db, old_gen, new_gen)
                .map_err(raft_err(ErrorSubject::Snapshot(Some(meta.signature())), ErrorVerb::Write))?;
            *live = Live { core, generation: new_gen };
        }
        let (dir, lock, meta2) = (self.snap_dir.clone(), self.snap_lock.clone(), meta.clone());
        tokio::task::spawn_blocking(move || keep_received(file, &meta2, &dir, &lock))
            .await
            .map_err(|e| StoreError::Snapshot(format!("install task failed: {e}")))
            .and_then(|r| r)
            .map_err(raft_err(ErrorSubject::Snapshot(Some(meta.signature())), ErrorVerb::Write))?;
        tracing::info!(snapshot = %meta.snapshot_id, last = ?meta.last_log_id, new_gen, "snapshot installed");
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot>, StorageError> {
        let path = self.snap_dir.join(CURRENT_SNAPSHOT);
        let current =
            open_current(&path, &mut || {}).map_err(raft_err(ErrorSubject::Snapshot(None), ErrorVerb::Read))?;
        Ok(current.map(|(meta, f)| Snapshot { meta, snapshot: Box::new(tokio::fs::File::from_std(f)) }))
    }
}

/// The current snapshot file and its meta, if there is one. The file is
/// opened once and its meta read from that handle: a concurrent build may
/// rename a newer snapshot over the path at any moment, and a meta read from
/// the path could then describe another file than the one served (the
/// follower would refuse the install). `between` runs after the open; tests
/// publish a newer snapshot there.
fn open_current(path: &Path, between: &mut dyn FnMut()) -> Result<Option<(SnapshotMeta, std::fs::File)>, StoreError> {
    let mut f = match std::fs::File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(StoreError::io(path.display(), e)),
    };
    between();
    let (_, meta) = snapshot::Reader::new(&mut f)?;
    f.seek(SeekFrom::Start(0)).map_err(|e| StoreError::io(path.display(), e))?;
    Ok(Some((meta, f)))
}

/// Load the snapshot in `file` into a new generation, beside the live one,
/// and build its core. Nothing live changes until [`switch_generation`].
fn prepare_install(
    db: &DB,
    old_gen: u64,
    mut file: std::fs::File,
    meta: &SnapshotMeta,
) -> Result<(u64, Core, std::fs::File), StoreError> {
    file.seek(SeekFrom::Start(0)).map_err(|e| StoreError::io("received snapshot", e))?;
    let (mut reader, file_meta) = snapshot::Reader::new(&mut file)?;
    if file_meta.last_log_id != meta.last_log_id || file_meta.last_membership != meta.last_membership {
        return Err(StoreError::Snapshot(format!(
            "file holds {:?}, expected {:?}",
            file_meta.last_log_id, meta.last_log_id
        )));
    }
    let new_gen = old_gen + 1;
    load_generation(db, new_gen, StoreError::Snapshot, &mut || reader.next_record())?;
    // The new generation must describe exactly the snapshot it came from.
    let kv = GenKv { db, generation: new_gen, snapshot: None };
    let m: Meta = load(&kv, &keys::meta())?.unwrap_or_default();
    if m.last_applied != meta.last_log_id || m.membership != meta.last_membership {
        return Err(StoreError::Snapshot(format!(
            "snapshot meta says {:?} but its state is at {:?}",
            meta.last_log_id, m.last_applied
        )));
    }
    let core = Core::open(&kv)?;
    Ok((new_gen, core, file))
}

/// Write the records `next` yields into generation `new_gen` (cleared
/// first), in batches of [`INSTALL_BATCH_BYTES`]. `bad` names the source in
/// the error for a record of no known table.
fn load_generation(
    db: &DB,
    new_gen: u64,
    bad: fn(String) -> StoreError,
    next: &mut dyn FnMut() -> Result<Option<backup::Record>, StoreError>,
) -> Result<(), StoreError> {
    let sm = cf(db, CF_SM)?;
    let mut batch = WriteBatch::default();
    batch.delete_range_cf(sm, keys::gen_prefix(new_gen), keys::gen_prefix(new_gen + 1));
    while let Some((k, v)) = next()? {
        if k.first().and_then(|t| Table::from_tag(*t)).is_none() {
            return Err(bad(format!("record with unknown table key {k:02x?}")));
        }
        batch.put_cf(sm, keys::in_gen(new_gen, &k), v);
        if batch.size_in_bytes() >= INSTALL_BATCH_BYTES {
            db.write(std::mem::take(&mut batch))?;
        }
    }
    db.write(batch)?;
    Ok(())
}

/// One synced batch: point at `new_gen`, range-delete `old_gen`. A crash
/// before it leaves the old state (open drops the half-built generation);
/// after it, the new one.
fn switch_generation(db: &DB, old_gen: u64, new_gen: u64) -> Result<(), StoreError> {
    let sm = cf(db, CF_SM)?;
    let mut flip = WriteBatch::default();
    flip.put_cf(sm, keys::CURRENT_GEN_KEY, new_gen.to_be_bytes());
    flip.delete_range_cf(sm, keys::gen_prefix(old_gen), keys::gen_prefix(old_gen + 1));
    let mut wo = WriteOptions::default();
    wo.set_sync(true);
    db.write_opt(flip, &wo)?;
    Ok(())
}

/// Keep the received snapshot as the current one, so it can be served on.
fn keep_received(mut file: std::fs::File, meta: &SnapshotMeta, dir: &Path, lock: &Mutex<()>) -> Result<(), StoreError> {
    let tmp = dir.join("install.tmp");
    {
        let mut out = std::fs::File::create(&tmp).map_err(|e| StoreError::io(tmp.display(), e))?;
        file.seek(SeekFrom::Start(0)).map_err(|e| StoreError::io("received snapshot", e))?;
        std::io::copy(&mut file, &mut out).map_err(|e| StoreError::io(tmp.display(), e))?;
        out.sync_all().map_err(|e| StoreError::io(tmp.display(), e))?;
    }
    publish(dir, &tmp, meta, lock)?;
    if let Ok(rd) = std::fs::read_dir(dir) {
        for f in rd.flatten() {
            if f.file_name().to_string_lossy().starts_with("recv-") {
                let _ = std::fs::remove_file(f.path());
            }
        }
    }
    Ok(())
}

/// Make `tmp` the current snapshot unless a newer one is already current.
fn publish(dir: &Path, tmp: &Path, meta: &SnapshotMeta, lock: &Mutex<()>) -> Result<(), StoreError> {
    let _g = lock.lock().unwrap_or_else(|p| p.into_inner());
    let current = dir.join(CURRENT_SNAPSHOT);
    if let Ok(existing) = snapshot::read_meta(&current)
        && existing.last_log_id > meta.last_log_id
    {
        let _ = std::fs::remove_file(tmp);
        return Ok(());
    }
    std::fs::rename(tmp, &current).map_err(|e| StoreError::io(current.display(), e))?;
    std::fs::File::open(dir).and_then(|d| d.sync_all()).map_err(|e| StoreError::io(dir.display(), e))?;
    Ok(())
}

/// Builds a snapshot from a consistent RocksDB view, off the apply path.
#[derive(Clone)]
pub struct SnapshotBuilder {
    db: Arc<DB>,
    snap_dir: PathBuf,
    lock: Arc<Mutex<()>>,
}

impl SnapshotBuilder {
    fn build_blocking(&self) -> Result<(SnapshotMeta, std::fs::File), StoreError> {
        let db = &*self.db;
        // Everything applied so far becomes durable before the snapshot lets
        // the log be purged behind it.
        db.flush_wal(true)?;
        let snap = db.snapshot();
        let mut ro = ReadOptions::default();
        ro.set_snapshot(&snap);
        let generation = rocks::current_gen(db, Some(&ro))?;
        let kv = GenKv { db, generation, snapshot: Some(&snap) };
        let m: Meta = load(&kv, &keys::meta())?.unwrap_or_default();
        let id = match m.last_applied {
            Some(l) => format!("{}-{}-{}", l.leader_id, l.index, unique_suffix()),
            None => format!("empty-{}", unique_suffix()),
        };
        let meta = SnapshotMeta { last_log_id: m.last_applied, last_membership: m.membership.clone(), snapshot_id: id };
        let tmp = self.snap_dir.join(format!("build-{}.tmp", meta.snapshot_id));
        let f = std::fs::File::create(&tmp).map_err(|e| StoreError::io(tmp.display(), e))?;
        let mut w = snapshot::Writer::new(f, &meta)?;
        kv.scan(&[], &mut |k, v| w.record(k, v).map(|_| true))?;
        let f = w.finish()?;
        f.sync_all().map_err(|e| StoreError::io(tmp.display(), e))?;
        drop(f);
        let reader = std::fs::File::open(&tmp).map_err(|e| StoreError::io(tmp.display(), e))?;
        publish(&self.snap_dir, &tmp, &meta, &self.lock)?;
        // If a newer snapshot won, `tmp` is already unlinked; the open handle still reads it.
        Ok((meta, reader))
    }
}

/// Distinguishes snapshots built at the same log id (ids must be unique).
fn unique_suffix() -> u128 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0)
}

impl RaftSnapshotBuilder<TypeConfig> for SnapshotBuilder {
    async fn build_snapshot(&mut self) -> Result<Snapshot, StorageError> {
        let this = self.clone();
        let (meta, file) = tokio::task::spawn_blocking(move || this.build_blocking())
            .await
            .map_err(|e| StoreError::Snapshot(format!("build task failed: {e}")))
            .and_then(|r| r)
            .map_err(raft_err(ErrorSubject::Snapshot(None), ErrorVerb::Write))?;
        tracing::info!(snapshot = %meta.snapshot_id, last = ?meta.last_log_id, "snapshot built");
        Ok(Snapshot { meta, snapshot: Box::new(tokio::fs::File::from_std(file)) })
    }
}

mod backup_io;
#[cfg(test)]
mod tests;
