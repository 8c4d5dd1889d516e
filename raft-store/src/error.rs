//! The raft-store error boundary: everything that can go wrong below apply()
//! and the log, and its mapping into openraft's `StorageError`.

use openraft::{ErrorSubject, ErrorVerb, StorageIOError};

use crate::codec::CodecError;
use crate::types::{NodeId, StorageError};

/// A storage failure. Unlike [`crate::CommandError`] (a refused command, state
/// unchanged), a `StoreError` means the node cannot go on safely: openraft
/// stops the node when apply() or the log store returns one.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("rocksdb: {0}")]
    Rocks(#[from] rocksdb::Error),
    /// A record on disk does not decode. The node refuses to guess.
    #[error("corrupt record in column family {cf:?} at key {key}: {source}")]
    Corrupt { cf: &'static str, key: String, source: CodecError },
    #[error("cannot encode {what}: {source}")]
    Encode { what: &'static str, source: CodecError },
    #[error("io error on {path}: {source}")]
    Io { path: String, source: std::io::Error },
    /// In-memory indexes and records disagree: a bug, never bad input.
    #[error("invariant violated: {0}")]
    Invariant(String),
    #[error("snapshot: {0}")]
    Snapshot(String),
    /// A backup file that cannot be used (corrupt, truncated, foreign).
    #[error("backup: {0}")]
    Backup(String),
    /// Another process (a running node) holds the data dir.
    #[error("{path} is in use by another process (a running node holds its RocksDB lock): stop that node first")]
    Locked { path: String },
    /// A data dir that cannot be used as asked (offline tools, identity).
    #[error("{0}")]
    DataDir(String),
    #[error("the data directory has format {found}, this build reads {expected}")]
    Format { found: String, expected: String },
}

impl StoreError {
    pub fn io(path: impl std::fmt::Display, source: std::io::Error) -> Self {
        StoreError::Io { path: path.to_string(), source }
    }

    /// Wrap into openraft's error, naming what was being done.
    pub fn into_raft(self, subject: ErrorSubject<NodeId>, verb: ErrorVerb) -> StorageError {
        StorageError::from(StorageIOError::new(subject, verb, openraft::AnyError::new(&self)))
    }
}

/// Shorthand for the common "reading or writing X failed" conversions.
pub(crate) fn raft_err(subject: ErrorSubject<NodeId>, verb: ErrorVerb) -> impl FnOnce(StoreError) -> StorageError {
    move |e| e.into_raft(subject, verb)
}
