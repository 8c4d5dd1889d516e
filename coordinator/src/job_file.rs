//! The job file `baton schedule create -f` and `baton trigger create -f`
//! read: one job, in TOML or JSON (told apart like a workflow file), turned
//! into a [`proto::JobSpec`] or an error naming the key at fault. Unknown
//! keys are refused by name.
//!
//! ```toml
//! namespace = "reports"          # optional: the schedule's --namespace
//! name = "nightly"
//! shards = 4                     # or payloads = ["a", "b"]; neither: 1 shard
//! priority = 0
//! max_attempts = 3
//! attempt_timeout_ms = 60000
//! backoff_base_ms = 1000
//! backoff_max_ms = 60000
//! retention_ms = 86400000
//! labels = { team = "data" }
//! constraints = { gpu = "yes" }
//! ```
//!
//! As for workflow files, only what the format adds is checked here
//! (unknown keys, `shards` vs `payloads`); names and limits are the
//! cluster's to judge. A template has no idempotency key or start time
//! (each run is deduplicated by its fire time or event), so the file takes
//! neither.

use std::collections::BTreeMap;
use std::path::Path;

use baton_client::proto;
use serde::Deserialize;

use crate::workflow_file::{self, FileError, Format};

/// The keys of a job file.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JobFile {
    pub namespace: Option<String>,
    #[serde(default)]
    pub name: String,
    pub shards: Option<u32>,
    /// One UTF-8 payload per shard.
    pub payloads: Option<Vec<String>>,
    #[serde(default)]
    pub priority: i32,
    pub max_attempts: Option<u32>,
    pub attempt_timeout_ms: Option<u64>,
    pub backoff_base_ms: Option<u64>,
    pub backoff_max_ms: Option<u64>,
    pub retention_ms: Option<u64>,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    #[serde(default)]
    pub constraints: BTreeMap<String, String>,
}

/// Parse a job file's text. `path` only labels errors (`-` for stdin).
pub fn parse(text: &str, format: Format, path: &str) -> Result<JobFile, FileError> {
    workflow_file::parse_as(text, format, path)
}

/// Read and parse a job file (`-` is stdin).
pub fn load(path: &Path) -> Result<JobFile, FileError> {
    let (text, format) = workflow_file::read(path)?;
    parse(&text, format, &path.display().to_string())
}

impl JobFile {
    /// The proto spec this file describes. The namespace is the file's
    /// (empty when it names none: the schedule's or trigger's applies).
    pub fn into_spec(self, path: &str) -> Result<proto::JobSpec, FileError> {
        let (shards, payloads) = match (self.shards, self.payloads) {
            (Some(_), Some(_)) => {
                return Err(FileError::Invalid {
                    path: path.into(),
                    field: "payloads".into(),
                    reason: "set both `shards` and `payloads`; give one".into(),
                });
            }
            (Some(n), None) => (n, Vec::new()),
            (None, Some(p)) => (0, p.into_iter().map(String::into_bytes).collect()),
            (None, None) => (1, Vec::new()),
        };
        Ok(proto::JobSpec {
            namespace: self.namespace.unwrap_or_default(),
            name: self.name,
            payloads,
            shards,
            priority: self.priority,
            max_attempts: self.max_attempts.unwrap_or(0),
            backoff_base_ms: self.backoff_base_ms.unwrap_or(0),
            backoff_max_ms: self.backoff_max_ms.unwrap_or(0),
            attempt_timeout_ms: self.attempt_timeout_ms.unwrap_or(0),
            labels: self.labels.into_iter().collect(),
            constraints: self.constraints.into_iter().collect(),
            not_before_ms: 0,
            idempotency_key: String::new(),
            retention_ms: self.retention_ms.unwrap_or(0),
        })
    }
}

#[cfg(test)]
#[path = "job_file_tests.rs"]
mod tests;
