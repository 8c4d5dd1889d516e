//! The in-memory indexes over the live part of the task table: what the
//! scheduler and the leader read without touching storage. apply() keeps them
//! in step with the records ([`index_insert`]/[`index_remove`] are called only
//! from the core's `set_task` and from open), and open rebuilds them from disk.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use crate::ids::*;
use crate::schedule::{ScheduleId, ScheduleRecord, TriggerId, TriggerRecord};
use crate::task::*;
use crate::workflow::WorkflowRecord;

/// A pending shard, as the scheduler sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PendingTask {
    pub ready_at_ms: u64,
    /// Interned name of the worker that last held this shard.
    pub sticky: Option<NameId>,
}

/// Interned worker name (in-memory only; never stored or replicated).
pub type NameId = u32;

/// Worker-name interning, so pending entries stay small. Names are counted by
/// the pending tasks that reference them and forgotten at zero, so memory
/// follows live work: restarted workers with fresh names (the SDK default is
/// `<host>-<pid>`) do not pile up.
#[derive(Debug, Default)]
pub struct Interner {
    /// Name and reference count by id; a free slot holds an empty name and 0.
    slots: Vec<(String, u32)>,
    ids: HashMap<String, NameId>,
    /// Ids of free slots, reused before the table grows.
    free: Vec<NameId>,
}

impl Interner {
    /// The id of `name`, taking one reference; give it back with [`Interner::release`].
    pub fn intern(&mut self, name: &str) -> NameId {
        if let Some(&id) = self.ids.get(name) {
            self.slots[id as usize].1 += 1;
            return id;
        }
        let id = match self.free.pop() {
            Some(id) => {
                self.slots[id as usize] = (name.to_string(), 1);
                id
            }
            None => {
                self.slots.push((name.to_string(), 1));
                (self.slots.len() - 1) as NameId
            }
        };
        self.ids.insert(name.to_string(), id);
        id
    }

    /// Drop one reference taken by [`Interner::intern`]; the name is
    /// forgotten when none is left.
    pub fn release(&mut self, id: NameId) {
        let slot = &mut self.slots[id as usize];
        debug_assert!(slot.1 > 0, "name id {id} released more often than interned");
        slot.1 = slot.1.saturating_sub(1);
        if slot.1 == 0 {
            let name = std::mem::take(&mut slot.0);
            self.ids.remove(&name);
            self.free.push(id);
        }
    }

    pub fn get(&self, name: &str) -> Option<NameId> {
        self.ids.get(name).copied()
    }

    pub fn name(&self, id: NameId) -> &str {
        &self.slots[id as usize].0
    }

    /// Names currently referenced.
    pub fn len(&self) -> usize {
        self.ids.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }
}

/// In-memory indexes over the live part of the table, maintained by apply and
/// rebuilt from disk at open. Finished jobs and ended sessions are not here.
#[derive(Debug, Default)]
pub struct Indexes {
    /// Jobs with at least one pending or assigned shard.
    pub jobs: BTreeMap<JobId, JobRecord>,
    /// Pending shards per live job. Each entry holds one reference on its
    /// sticky name in `names`: change it through `index_insert`/`index_remove`.
    pub pending: BTreeMap<JobId, BTreeMap<u32, PendingTask>>,
    /// Live sessions.
    pub sessions: BTreeMap<SessionId, SessionRecord>,
    pub live_by_name: BTreeMap<String, SessionId>,
    /// Assigned tasks per live session.
    pub by_session: BTreeMap<SessionId, BTreeSet<TaskKey>>,
    /// (deadline, task, token) of every assigned attempt.
    pub deadlines: BTreeSet<(u64, TaskKey, Token)>,
    /// Pending + assigned tasks across all jobs.
    pub live_tasks: u64,
    /// Unfinished workflows.
    pub workflows: BTreeMap<WorkflowId, WorkflowRecord>,
    /// (deadline, workflow, step) of every gate awaiting approval with a
    /// timeout: the leader proposes ExpireGates from it.
    pub gate_deadlines: BTreeSet<(u64, WorkflowId, u32)>,
    pub names: Interner,
    /// (time, target) of everything the collector will delete: finished
    /// jobs and workflows past their retention, ended sessions. Rebuilt at
    /// open from the records' `expires_ms`/`finished_ms`/`ended`.
    pub expiry: BTreeSet<(u64, crate::lifecycle::GcTarget)>,
    /// Namespaces with stored settings.
    pub namespaces: BTreeMap<String, crate::lifecycle::NamespaceRecord>,
    /// What each namespace with live jobs uses, against its quotas: the sum
    /// over its live jobs of their live shards (`counts`) and payload bytes.
    /// Changed with every transition that moves a shard in or out of the
    /// live states ([`usage_move`]); no entry at zero.
    pub ns_usage: BTreeMap<String, crate::quota::NamespaceUsage>,
    /// Every schedule (at most [`crate::limits::MAX_SCHEDULES`]), without templates.
    pub schedules: BTreeMap<ScheduleId, ScheduleRecord>,
    /// (namespace, name) → schedule.
    pub schedule_names: BTreeMap<(String, String), ScheduleId>,
    /// (due time, schedule) of every unpaused schedule with a next fire:
    /// the leader proposes Fire from it. Kept by `Core::put_schedule`.
    pub fire_due: BTreeSet<(u64, ScheduleId)>,
    /// Every trigger (at most [`crate::limits::MAX_TRIGGERS`]), without templates.
    pub triggers: BTreeMap<TriggerId, TriggerRecord>,
    pub trigger_names: BTreeMap<(String, String), TriggerId>,
    /// (namespace, topic) → its triggers.
    pub triggers_by_topic: BTreeMap<(String, String), BTreeSet<TriggerId>>,
    /// (namespace, topic) → the event gates waiting on it, as (workflow, step).
    pub event_gates: BTreeMap<(String, String), BTreeSet<(WorkflowId, u32)>>,
}

impl Indexes {
    /// A rendering independent of interning order, to compare indexes built
    /// by applying entries with indexes rebuilt from disk.
    pub fn canonical(&self) -> String {
        let pending: BTreeMap<_, Vec<_>> = self
            .pending
            .iter()
            .map(|(j, m)| {
                let v = m.iter().map(|(s, p)| (*s, p.ready_at_ms, p.sticky.map(|n| self.names.name(n)))).collect();
                (*j, v)
            })
            .collect();
        format!(
            "jobs={:?}\npending={:?}\nsessions={:?}\nby_name={:?}\nby_session={:?}\ndeadlines={:?}\nlive={}\nworkflows={:?}\ngates={:?}\nexpiry={:?}\nnamespaces={:?}\nns_usage={:?}\nschedules={:?}\nschedule_names={:?}\nfire_due={:?}\ntriggers={:?}\ntrigger_names={:?}\nby_topic={:?}\nevent_gates={:?}",
            self.jobs,
            pending,
            self.sessions,
            self.live_by_name,
            self.by_session,
            self.deadlines,
            self.live_tasks,
            self.workflows,
            self.gate_deadlines,
            self.expiry,
            self.namespaces,
            self.ns_usage,
            self.schedules,
            self.schedule_names,
            self.fire_due,
            self.triggers,
            self.trigger_names,
            self.triggers_by_topic,
            self.event_gates
        )
    }
}

/// Move `namespace`'s usage by `tasks` live shards and `bytes` payload
/// bytes (negative: released), dropping the entry at zero.
pub(crate) fn usage_move(
    usage: &mut BTreeMap<String, crate::quota::NamespaceUsage>,
    namespace: &str,
    tasks: i64,
    bytes: i64,
) {
    if tasks == 0 && bytes == 0 {
        return;
    }
    let u = usage.entry(namespace.to_string()).or_default();
    debug_assert!(u.live_tasks.checked_add_signed(tasks).is_some(), "{namespace}: live tasks below zero");
    debug_assert!(u.payload_bytes.checked_add_signed(bytes).is_some(), "{namespace}: payload bytes below zero");
    u.live_tasks = u.live_tasks.saturating_add_signed(tasks);
    u.payload_bytes = u.payload_bytes.saturating_add_signed(bytes);
    if u.is_zero() {
        usage.remove(namespace);
    }
}

pub(crate) fn index_remove(idx: &mut Indexes, key: TaskKey, old: &TaskState) {
    match old {
        TaskState::Pending { .. } => {
            if let Some(m) = idx.pending.get_mut(&key.job) {
                if let Some(PendingTask { sticky: Some(name), .. }) = m.remove(&key.shard) {
                    idx.names.release(name);
                }
                if m.is_empty() {
                    idx.pending.remove(&key.job);
                }
            }
        }
        TaskState::Assigned { session, token, deadline_ms } => {
            if let Some(s) = idx.by_session.get_mut(session) {
                s.remove(&key);
                if s.is_empty() {
                    idx.by_session.remove(session);
                }
            }
            idx.deadlines.remove(&(*deadline_ms, key, *token));
        }
        _ => return,
    }
    idx.live_tasks -= 1;
}

pub(crate) fn index_insert(idx: &mut Indexes, key: TaskKey, rec: &TaskRecord) {
    match &rec.state {
        TaskState::Pending { ready_at_ms } => {
            let sticky = rec.last_worker.as_deref().map(|n| idx.names.intern(n));
            idx.pending
                .entry(key.job)
                .or_default()
                .insert(key.shard, PendingTask { ready_at_ms: *ready_at_ms, sticky });
        }
        TaskState::Assigned { session, token, deadline_ms } => {
            idx.by_session.entry(*session).or_default().insert(key);
            idx.deadlines.insert((*deadline_ms, key, *token));
        }
        _ => return,
    }
    idx.live_tasks += 1;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn interner_forgets_unreferenced_names_and_reuses_ids() {
        let mut n = Interner::default();
        let a = n.intern("a");
        assert_eq!(n.intern("a"), a);
        let b = n.intern("b");
        n.release(a);
        assert_eq!(n.get("a"), Some(a), "one reference left");
        n.release(a);
        assert_eq!(n.get("a"), None);
        assert_eq!(n.len(), 1);
        let c = n.intern("c");
        assert_eq!(c, a, "the freed id is reused");
        assert_eq!((n.name(b), n.name(c)), ("b", "c"));
    }
}
