//! Per-namespace quotas: the settings (stored with the namespace's
//! [`NamespaceRecord`](crate::lifecycle::NamespaceRecord)), their bounds, the
//! usage apply() counts, and the pure check a submit passes.
//!
//! Two quotas are state and are enforced by apply(), deterministically, from
//! the usage counted in [`crate::Indexes::ns_usage`]:
//! - live tasks (pending + running shards of the namespace);
//! - payload bytes of the namespace's live jobs (each job's payloads,
//!   counted from its submit until it finishes). A total per namespace rather
//!   than per job: one job is already bounded by `MAX_JOB_PAYLOAD_BYTES`, and
//!   what a tenant can pin on every node's disk is the sum over its jobs.
//!   Finished jobs' dead or cancelled shards keep their payloads until
//!   retention takes them; retention bounds those, not this quota.
//!
//! The third, submits per second, is admission control: a token bucket at the
//! API edge of the leader. apply() only stores and validates its setting.

use serde::{Deserialize, Serialize};

use crate::command::{CommandError, invalid};

/// Highest live-task quota a namespace may set: the cluster's own bound
/// ([`crate::limits::MAX_LIVE_TASKS`]); more could never be reached.
pub const MAX_QUOTA_LIVE_TASKS: u64 = crate::limits::MAX_LIVE_TASKS;
/// Highest payload-bytes quota (1 TiB). Live payloads are replicated on
/// every node's disk; a larger setting is a typo, not a plan.
pub const MAX_QUOTA_PAYLOAD_BYTES: u64 = 1 << 40;
/// Highest submits-per-second quota (100 000/s): above what one leader
/// proposes, so a larger setting would never refuse anything.
pub const MAX_QUOTA_SUBMITS_PER_SEC: u32 = 100_000;
/// The retry-after hint of a refusal by a state quota (live tasks, payload
/// bytes), in ms: usage falls as workers finish tasks, at a pace the server
/// cannot predict, so the hint is a polite polling interval.
pub const QUOTA_RETRY_AFTER_MS: u64 = 1_000;

/// A namespace's quotas; `None`: unlimited.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NamespaceQuota {
    /// Pending + running shards.
    pub live_tasks: Option<u64>,
    /// Payload bytes of live jobs.
    pub payload_bytes: Option<u64>,
    /// Submits per second at the leader's API (token bucket, bursts of one
    /// second's worth).
    pub submits_per_sec: Option<u32>,
}

/// What `SetNamespaceQuota` changes. For each quota: `None` leaves it as it
/// is, `Some(0)` makes it unlimited, `Some(n)` sets it. `clear` first makes
/// every quota unlimited.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct QuotaChange {
    pub live_tasks: Option<u64>,
    pub payload_bytes: Option<u64>,
    pub submits_per_sec: Option<u32>,
    pub clear: bool,
}

impl QuotaChange {
    /// The bounds of each setting: stateless, run by `Command::validate`.
    pub fn validate(&self) -> Result<(), CommandError> {
        check_bound("quota.live_tasks", self.live_tasks, MAX_QUOTA_LIVE_TASKS)?;
        check_bound("quota.payload_bytes", self.payload_bytes, MAX_QUOTA_PAYLOAD_BYTES)?;
        check_bound("quota.submits_per_sec", self.submits_per_sec.map(u64::from), MAX_QUOTA_SUBMITS_PER_SEC.into())
    }

    /// `quota` after this change.
    pub fn applied_to(&self, quota: NamespaceQuota) -> NamespaceQuota {
        let mut q = if self.clear { NamespaceQuota::default() } else { quota };
        let set = |v: Option<u64>, old: Option<u64>| match v {
            None => old,
            Some(0) => None,
            Some(n) => Some(n),
        };
        q.live_tasks = set(self.live_tasks, q.live_tasks);
        q.payload_bytes = set(self.payload_bytes, q.payload_bytes);
        q.submits_per_sec = set(self.submits_per_sec.map(u64::from), q.submits_per_sec.map(u64::from))
            .map(|n| u32::try_from(n).unwrap_or(u32::MAX));
        q
    }
}

fn check_bound(field: &str, v: Option<u64>, max: u64) -> Result<(), CommandError> {
    match v {
        Some(n) if n > max => Err(invalid(field, format!("{n} exceeds the limit of {max} (0 means unlimited)"))),
        _ => Ok(()),
    }
}

/// What a namespace uses now: derived from its live jobs' records (their
/// counts and payload bytes), kept by apply() on every transition and
/// rebuilt from those records at open.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct NamespaceUsage {
    pub live_tasks: u64,
    pub payload_bytes: u64,
}

impl NamespaceUsage {
    pub fn is_zero(&self) -> bool {
        *self == NamespaceUsage::default()
    }
}

/// The quota a refusal names, as its `quota` field and the API's
/// `baton-quota` header spell it.
pub mod names {
    pub const LIVE_TASKS: &str = "live_tasks";
    pub const PAYLOAD_BYTES: &str = "payload_bytes";
    pub const SUBMITS_PER_SEC: &str = "submits_per_sec";
}

/// Whether `namespace`, using `used` under `quota`, may take `tasks` more
/// live tasks and `bytes` more payload bytes. The refusal names the first
/// quota that would be exceeded.
pub fn check(
    namespace: &str,
    quota: &NamespaceQuota,
    used: NamespaceUsage,
    tasks: u64,
    bytes: u64,
) -> Result<(), CommandError> {
    let over = |name: &str, limit: Option<u64>, used: u64, add: u64| match limit {
        Some(limit) if add > 0 && used.saturating_add(add) > limit => Err(CommandError::QuotaExceeded {
            namespace: namespace.to_string(),
            quota: name.to_string(),
            limit,
            used,
            requested: add,
        }),
        _ => Ok(()),
    };
    over(names::LIVE_TASKS, quota.live_tasks, used.live_tasks, tasks)?;
    over(names::PAYLOAD_BYTES, quota.payload_bytes, used.payload_bytes, bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_change_sets_clears_and_keeps_each_quota() {
        let q = NamespaceQuota { live_tasks: Some(5), payload_bytes: Some(9), submits_per_sec: Some(2) };
        let c = QuotaChange { live_tasks: Some(0), payload_bytes: None, submits_per_sec: Some(7), clear: false };
        assert_eq!(
            c.applied_to(q),
            NamespaceQuota { live_tasks: None, payload_bytes: Some(9), submits_per_sec: Some(7) }
        );
        let all = QuotaChange { clear: true, live_tasks: Some(3), ..QuotaChange::default() };
        assert_eq!(all.applied_to(q), NamespaceQuota { live_tasks: Some(3), ..NamespaceQuota::default() });
    }

    #[test]
    fn settings_are_bounded_and_name_their_field() {
        let at = QuotaChange {
            live_tasks: Some(MAX_QUOTA_LIVE_TASKS),
            payload_bytes: Some(MAX_QUOTA_PAYLOAD_BYTES),
            submits_per_sec: Some(MAX_QUOTA_SUBMITS_PER_SEC),
            clear: false,
        };
        at.validate().unwrap();
        let over = QuotaChange { payload_bytes: Some(MAX_QUOTA_PAYLOAD_BYTES + 1), ..at };
        assert!(matches!(over.validate(), Err(CommandError::Invalid { field, .. }) if field == "quota.payload_bytes"));
    }

    #[test]
    fn check_names_the_first_quota_exceeded_and_lets_zero_through() {
        let q = NamespaceQuota { live_tasks: Some(4), payload_bytes: Some(100), submits_per_sec: None };
        let used = NamespaceUsage { live_tasks: 3, payload_bytes: 100 };
        check("ns", &q, used, 1, 0).unwrap();
        let e = check("ns", &q, used, 2, 1).unwrap_err();
        assert!(
            matches!(e, CommandError::QuotaExceeded { ref quota, limit: 4, used: 3, requested: 2, .. } if quota == "live_tasks")
        );
        let e = check("ns", &q, used, 1, 1).unwrap_err();
        assert!(matches!(e, CommandError::QuotaExceeded { ref quota, .. } if quota == "payload_bytes"));
    }
}
