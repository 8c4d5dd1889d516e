//! Quota checks of the apply core: a submit or retry that would take its
//! namespace over a quota is refused before its first mutation. The usage
//! it is checked against (`Indexes::ns_usage`) is kept by `set_task`,
//! `create_job` and `finish_if_done`.

use crate::quota::{self, NamespaceUsage};

use super::*;

/// Bytes of `payloads`, as a job's namespace is charged for them.
pub(super) fn payload_bytes(payloads: &[ByteBuf]) -> u64 {
    payloads.iter().map(|p| p.len() as u64).sum()
}

impl Core {
    /// `namespace`'s usage now.
    pub fn usage(&self, namespace: &str) -> NamespaceUsage {
        self.idx.ns_usage.get(namespace).copied().unwrap_or_default()
    }

    /// Refuse `tasks` more live shards or `bytes` more payload bytes that
    /// would take `namespace` over its quotas.
    pub(super) fn check_quota(&self, namespace: &str, tasks: u64, bytes: u64) -> Result<(), CommandError> {
        let Some(rec) = self.idx.namespaces.get(namespace) else { return Ok(()) };
        quota::check(namespace, &rec.quota, self.usage(namespace), tasks, bytes)
    }
}
