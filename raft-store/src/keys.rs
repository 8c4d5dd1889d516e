//! Key layout: the column family names, and the tables of the state-machine
//! column family.
//!
//! Table keys (below) are what the apply core reads and writes. The RocksDB
//! store prefixes each with `[GEN_PREFIX, generation(8 BE)]`, so a snapshot
//! install can write a whole new generation beside the live one and switch
//! with one key write. Big-endian integers keep RocksDB order equal to numeric
//! order, so scans come out sorted by job and shard.

use crate::ids::{JobId, SessionId, TaskKey, Token, WorkflowId};
use crate::schedule::{ScheduleId, TemplateOwner, TriggerId};

/// Raft log entries, keyed by index (8 bytes BE).
pub const CF_LOGS: &str = "logs";
/// Vote, committed and last-purged log ids.
pub const CF_RAFT: &str = "raft";
/// The state machine: generation pointer plus generation-scoped tables.
pub const CF_SM: &str = "sm";

/// Prefix of keys that belong to no generation (only the generation pointer).
pub const GLOBAL_PREFIX: u8 = 0x00;
/// Prefix of generation-scoped keys.
pub const GEN_PREFIX: u8 = 0x01;
/// The global key holding the live generation number.
pub const CURRENT_GEN_KEY: &[u8] = &[GLOBAL_PREFIX, b'g'];

/// Table tags. Their order is the order tables appear in snapshots.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
#[repr(u8)]
pub enum Table {
    Meta = 1,
    Job = 2,
    Task = 3,
    Payload = 4,
    Session = 5,
    WorkerName = 6,
    Idem = 7,
    /// Idempotency keys by (expires_ms, key), for pruning; empty values.
    IdemByExpiry = 8,
    /// Workflow records (graph and step states), by workflow id.
    Workflow = 9,
    /// The job spec of a workflow step not yet started, by (workflow, step);
    /// deleted when the step starts or can no longer start.
    StepSpec = 10,
    /// Namespace settings (pause, retention), by namespace name.
    Namespace = 11,
    /// Task execution logs, one record per attempt, by (job, shard, attempt).
    TaskLog = 12,
    /// Secondary indexes of jobs for paged listing (see [`job_index`]).
    JobIndex = 13,
    /// Schedule records (without their templates), by schedule id.
    Schedule = 14,
    /// Trigger records (without their templates), by trigger id.
    Trigger = 15,
    /// Run templates of schedules and triggers, by (owner kind, id).
    RunTemplate = 16,
}

impl Table {
    pub const ALL: [Table; 16] = [
        Table::Meta,
        Table::Job,
        Table::Task,
        Table::Payload,
        Table::Session,
        Table::WorkerName,
        Table::Idem,
        Table::IdemByExpiry,
        Table::Workflow,
        Table::StepSpec,
        Table::Namespace,
        Table::TaskLog,
        Table::JobIndex,
        Table::Schedule,
        Table::Trigger,
        Table::RunTemplate,
    ];

    pub fn from_tag(tag: u8) -> Option<Table> {
        Table::ALL.into_iter().find(|t| *t as u8 == tag)
    }

    pub fn name(self) -> &'static str {
        match self {
            Table::Meta => "meta",
            Table::Job => "job",
            Table::Task => "task",
            Table::Payload => "payload",
            Table::Session => "session",
            Table::WorkerName => "worker_name",
            Table::Idem => "idempotency",
            Table::IdemByExpiry => "idempotency_by_expiry",
            Table::Workflow => "workflow",
            Table::StepSpec => "step_spec",
            Table::Namespace => "namespace",
            Table::TaskLog => "task_log",
            Table::JobIndex => "job_index",
            Table::Schedule => "schedule",
            Table::Trigger => "trigger",
            Table::RunTemplate => "run_template",
        }
    }
}

pub fn meta() -> Vec<u8> {
    vec![Table::Meta as u8]
}

pub fn job(id: JobId) -> Vec<u8> {
    let mut k = vec![Table::Job as u8];
    k.extend_from_slice(&id.to_be_bytes());
    k
}

pub fn task(t: TaskKey) -> Vec<u8> {
    let mut k = Vec::with_capacity(13);
    k.push(Table::Task as u8);
    k.extend_from_slice(&t.job.to_be_bytes());
    k.extend_from_slice(&t.shard.to_be_bytes());
    k
}

/// Prefix of all task keys of one job.
pub fn tasks_of(job: JobId) -> Vec<u8> {
    let mut k = vec![Table::Task as u8];
    k.extend_from_slice(&job.to_be_bytes());
    k
}

pub fn payload(t: TaskKey) -> Vec<u8> {
    let mut k = task(t);
    k[0] = Table::Payload as u8;
    k
}

pub fn session(id: SessionId) -> Vec<u8> {
    let mut k = vec![Table::Session as u8];
    k.extend_from_slice(&id.to_be_bytes());
    k
}

pub fn worker_name(name: &str) -> Vec<u8> {
    let mut k = vec![Table::WorkerName as u8];
    k.extend_from_slice(name.as_bytes());
    k
}

/// An idempotency key in its namespace's key space, as stored:
/// `[namespace length][namespace][key]`. The same key in two namespaces is
/// two records, so a submit never learns of another namespace's job. The
/// length byte keeps "a"+"bc" apart from "ab"+"c". Ordered as its bytes, so
/// in-memory maps of keys sort as the stored keys do (the pruning cursor
/// relies on it).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct IdemKey(Vec<u8>);

impl IdemKey {
    /// `key` (already prefixed by its kind, for workflows and events) in
    /// `namespace` (at most [`crate::limits::MAX_NAME_BYTES`], so its length fits a byte).
    pub fn new(namespace: &str, key: &str) -> IdemKey {
        debug_assert!(namespace.len() <= u8::MAX as usize);
        let mut b = Vec::with_capacity(1 + namespace.len() + key.len());
        b.push(namespace.len() as u8);
        b.extend_from_slice(namespace.as_bytes());
        b.extend_from_slice(key.as_bytes());
        IdemKey(b)
    }

    /// Parse stored bytes; `None` if malformed.
    pub fn from_bytes(b: &[u8]) -> Option<IdemKey> {
        let (&n, rest) = b.split_first()?;
        if rest.len() < n as usize {
            return None;
        }
        std::str::from_utf8(&rest[..n as usize]).ok()?;
        std::str::from_utf8(&rest[n as usize..]).ok()?;
        Some(IdemKey(b.to_vec()))
    }

    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    pub fn namespace(&self) -> &str {
        let n = self.0[0] as usize;
        std::str::from_utf8(&self.0[1..1 + n]).unwrap_or_default()
    }

    /// The key within its namespace (with its kind prefix).
    pub fn key(&self) -> &str {
        let n = self.0[0] as usize;
        std::str::from_utf8(&self.0[1 + n..]).unwrap_or_default()
    }
}

impl std::fmt::Display for IdemKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.namespace(), self.key().escape_debug())
    }
}

pub fn idem(key: &IdemKey) -> Vec<u8> {
    let mut k = vec![Table::Idem as u8];
    k.extend_from_slice(key.as_bytes());
    k
}

pub fn idem_by_expiry(expires_ms: u64, key: &IdemKey) -> Vec<u8> {
    let mut k = vec![Table::IdemByExpiry as u8];
    k.extend_from_slice(&expires_ms.to_be_bytes());
    k.extend_from_slice(key.as_bytes());
    k
}

pub fn workflow(id: WorkflowId) -> Vec<u8> {
    let mut k = vec![Table::Workflow as u8];
    k.extend_from_slice(&id.to_be_bytes());
    k
}

pub fn step_spec(workflow: WorkflowId, step: u32) -> Vec<u8> {
    let mut k = Vec::with_capacity(13);
    k.push(Table::StepSpec as u8);
    k.extend_from_slice(&workflow.to_be_bytes());
    k.extend_from_slice(&step.to_be_bytes());
    k
}

pub fn schedule(id: ScheduleId) -> Vec<u8> {
    let mut k = vec![Table::Schedule as u8];
    k.extend_from_slice(&id.to_be_bytes());
    k
}

pub fn trigger(id: TriggerId) -> Vec<u8> {
    let mut k = vec![Table::Trigger as u8];
    k.extend_from_slice(&id.to_be_bytes());
    k
}

pub fn run_template(owner: TemplateOwner) -> Vec<u8> {
    let (kind, id) = match owner {
        TemplateOwner::Schedule(id) => (0u8, id),
        TemplateOwner::Trigger(id) => (1u8, id),
    };
    let mut k = vec![Table::RunTemplate as u8, kind];
    k.extend_from_slice(&id.to_be_bytes());
    k
}

pub fn namespace(ns: &str) -> Vec<u8> {
    let mut k = vec![Table::Namespace as u8];
    k.extend_from_slice(ns.as_bytes());
    k
}

/// The log record of one attempt of a task, by the attempt's token: tokens
/// are log indexes, so a task's records sort in grant order, and unlike
/// attempt numbers (which repeat after a retry) they never name two attempts.
pub fn task_log(t: TaskKey, token: Token) -> Vec<u8> {
    let mut k = task(t);
    k[0] = Table::TaskLog as u8;
    k.extend_from_slice(&token.to_be_bytes());
    k
}

/// Prefix of the log records of every attempt of one task.
pub fn task_logs_of(t: TaskKey) -> Vec<u8> {
    let mut k = task(t);
    k[0] = Table::TaskLog as u8;
    k
}

/// Prefix of the log records of every task of one job.
pub fn job_logs_of(job: JobId) -> Vec<u8> {
    let mut k = vec![Table::TaskLog as u8];
    k.extend_from_slice(&job.to_be_bytes());
    k
}

/// Decode a log key into (task, token); `None` if malformed.
pub fn parse_task_log(k: &[u8]) -> Option<(TaskKey, Token)> {
    if k.len() != 21 || k[0] != Table::TaskLog as u8 {
        return None;
    }
    let job = u64::from_be_bytes(k[1..9].try_into().ok()?);
    let shard = u32::from_be_bytes(k[9..13].try_into().ok()?);
    let token = u64::from_be_bytes(k[13..21].try_into().ok()?);
    Some((TaskKey { job, shard }, token))
}

/// Which job index a [`job_index`] key belongs to. Listing all jobs needs no
/// index: the job table is already in id (= creation) order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum JobIndexKind {
    /// By namespace, then id.
    Namespace = 1,
    /// By status, then id.
    Status = 2,
    /// By namespace, then status, then id.
    NamespaceStatus = 3,
}

/// The prefix a listing scans: every job of `namespace` and/or `status`
/// (`status` is [`crate::JobStatus::tag`]). At least one must be given.
pub fn job_index_prefix(namespace: Option<&str>, status: Option<u8>) -> Vec<u8> {
    debug_assert!(namespace.is_some() || status.is_some(), "the job table itself lists all jobs");
    let kind = match (namespace, status) {
        (Some(_), None) => JobIndexKind::Namespace,
        (None, Some(_)) => JobIndexKind::Status,
        _ => JobIndexKind::NamespaceStatus,
    };
    let mut k = vec![Table::JobIndex as u8, kind as u8];
    if let Some(ns) = namespace {
        // Namespaces are at most MAX_NAME_BYTES (128) long: one length byte
        // keeps "a" and "ab" from sharing a prefix.
        debug_assert!(ns.len() <= u8::MAX as usize);
        k.push(ns.len() as u8);
        k.extend_from_slice(ns.as_bytes());
    }
    if let Some(s) = status {
        k.push(s);
    }
    k
}

/// The key of one job in one index.
pub fn job_index(namespace: Option<&str>, status: Option<u8>, job: JobId) -> Vec<u8> {
    let mut k = job_index_prefix(namespace, status);
    k.extend_from_slice(&job.to_be_bytes());
    k
}

/// The job id at the end of an index key.
pub fn parse_job_index(k: &[u8]) -> Option<JobId> {
    if k.len() < 10 || k[0] != Table::JobIndex as u8 {
        return None;
    }
    Some(u64::from_be_bytes(k[k.len() - 8..].try_into().ok()?))
}

/// Decode a task key; `None` if malformed.
pub fn parse_task(k: &[u8]) -> Option<TaskKey> {
    if k.len() != 13 || (k[0] != Table::Task as u8 && k[0] != Table::Payload as u8) {
        return None;
    }
    let job = u64::from_be_bytes(k[1..9].try_into().ok()?);
    let shard = u32::from_be_bytes(k[9..13].try_into().ok()?);
    Some(TaskKey { job, shard })
}

/// Decode an idempotency expiry-index key into (expires_ms, key).
pub fn parse_idem_by_expiry(k: &[u8]) -> Option<(u64, IdemKey)> {
    if k.len() < 10 || k[0] != Table::IdemByExpiry as u8 {
        return None;
    }
    let t = u64::from_be_bytes(k[1..9].try_into().ok()?);
    Some((t, IdemKey::from_bytes(&k[9..])?))
}

/// `[GEN_PREFIX, gen]`: the prefix of every key in a generation.
pub fn gen_prefix(generation: u64) -> [u8; 9] {
    let mut p = [0u8; 9];
    p[0] = GEN_PREFIX;
    p[1..].copy_from_slice(&generation.to_be_bytes());
    p
}

/// A table key under a generation.
pub fn in_gen(generation: u64, table_key: &[u8]) -> Vec<u8> {
    let mut k = Vec::with_capacity(9 + table_key.len());
    k.extend_from_slice(&gen_prefix(generation));
    k.extend_from_slice(table_key);
    k
}

/// The smallest key above every key that starts with `prefix`; `None` when
/// the prefix is all 0xff (then nothing sorts above it).
pub fn prefix_successor(prefix: &[u8]) -> Option<Vec<u8>> {
    let mut s = prefix.to_vec();
    while let Some(last) = s.pop() {
        if last < 0xff {
            s.push(last + 1);
            return Some(s);
        }
    }
    None
}

/// The exclusive upper bound of a backward scan over `prefix` below
/// `before`: the smaller of the two; `None` when nothing bounds it.
pub fn scan_back_upper(prefix: &[u8], before: Option<&[u8]>) -> Option<Vec<u8>> {
    match (before, prefix_successor(prefix)) {
        (Some(b), Some(s)) => Some(b.to_vec().min(s)),
        (Some(b), None) => Some(b.to_vec()),
        (None, s) => s,
    }
}

/// Human-readable rendering of a table key, for error messages.
pub fn describe(table_key: &[u8]) -> String {
    let Some(table) = table_key.first().and_then(|t| Table::from_tag(*t)) else {
        return format!("unknown key {table_key:02x?}");
    };
    let rest = &table_key[1..];
    let detail = match table {
        Table::Task | Table::Payload => parse_task(table_key).map(|t| t.to_string()),
        Table::Job | Table::Session | Table::Workflow if rest.len() == 8 => {
            Some(u64::from_be_bytes(rest.try_into().unwrap_or_default()).to_string())
        }
        Table::TaskLog => parse_task_log(table_key).map(|(t, token)| format!("{t}/token {token}")),
        Table::WorkerName | Table::Namespace => Some(String::from_utf8_lossy(rest).into_owned()),
        Table::Idem => IdemKey::from_bytes(rest).map(|k| k.to_string()),
        Table::IdemByExpiry => parse_idem_by_expiry(table_key).map(|(t, k)| format!("{t}/{k}")),
        _ => None,
    };
    match detail {
        Some(d) => format!("{}/{d}", table.name()),
        None => format!("{}/{rest:02x?}", table.name()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn task_keys_sort_by_job_then_shard() {
        let a = task(TaskKey::new(1, 300));
        let b = task(TaskKey::new(2, 0));
        let c = task(TaskKey::new(2, 1));
        assert!(a < b && b < c);
        assert_eq!(parse_task(&c), Some(TaskKey::new(2, 1)));
        assert!(c.starts_with(&tasks_of(2)));
        assert_eq!(describe(&c), "task/2/1");
    }

    #[test]
    fn idempotency_keys_are_scoped_by_namespace_and_sort_as_stored() {
        let (a, b) = (IdemKey::new("a", "bc"), IdemKey::new("ab", "c"));
        assert_ne!(idem(&a), idem(&b), "the length byte keeps the namespaces apart");
        assert_eq!((b.namespace(), b.key()), ("ab", "c"));
        assert_eq!(describe(&idem(&a)), "idempotency/a/bc");
        let mut ks = [IdemKey::new("zz", "a"), IdemKey::new("b", "z"), IdemKey::new("b", "a\u{1}")];
        ks.sort();
        let mut stored: Vec<Vec<u8>> = ks.iter().map(|k| idem_by_expiry(5, k)).collect();
        let sorted = stored.clone();
        stored.sort();
        assert_eq!(stored, sorted, "in-memory order is stored order");
        assert_eq!(parse_idem_by_expiry(&sorted[0]), Some((5, ks[0].clone())));
    }
}
