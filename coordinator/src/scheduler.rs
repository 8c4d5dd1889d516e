//! The scheduler: which pending tasks go to which worker sessions in one planning round.
//!
//! [`plan`] is pure scheduling: a [`View`] of the replicated indexes and a time go in, a list of
//! assignments comes out, to be proposed by the leader as one `AssignTasks` entry. Apply() checks
//! each assignment again and rejects, one by one, those a stale view got wrong.
//!
//! What this module never does:
//! - IO of any kind, or reading a clock: time is the `now_ms` argument;
//! - mutate state: it only borrows the indexes, and applying the plan is the caller's job;
//! - iterate a hash map or use randomness: the same view and time always give the same plan, in
//!   the same order, on every node and every run.
//!
//! Cost of a round, with J live jobs, E eligible sessions, G distinct label sets among them, S
//! pending tasks examined (at most `max_scan`) and A assignments (at most `max_assignments`):
//! O(J log J + E log E) to set up, O(G) per distinct constraint set met, O(log) per examined task,
//! and O(G) per assignment (choosing the best session compares one candidate per compatible label
//! set, not one per session).
//!
//! Known limits, on purpose for now:
//! - Fairness holds within a round. Each round starts again at the first
//!   namespace and oldest job, so when only one slot frees per round the
//!   first namespace wins it every time. A rotation cursor carried in `View`
//!   would fix this.
//! - A large backlog of not-ready tasks (backoff, not-before) at high priority
//!   can use up `max_scan` before lower priorities are reached. An index of
//!   pending tasks by ready time in raft-store would remove the scan.
//! - Placement is greedy, not an optimal matching.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet, VecDeque, btree_map};

use baton_raft_store::NameId;
use baton_raft_store::{Assign, Indexes, JobId, JobRecord, PendingTask, SessionId, SessionRecord, TaskKey};

/// Bounds of one planning round.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PlanLimits {
    /// Most assignments per round (they go into one AssignTasks entry).
    pub max_assignments: usize,
    /// Most pending tasks examined per round, so a backlog of not-ready tasks cannot make a round slow.
    pub max_scan: usize,
}

/// What the scheduler sees.
#[derive(Debug, Clone, Copy)]
pub struct View<'a> {
    /// The replicated indexes: live jobs, pending tasks, live sessions and what they hold.
    pub idx: &'a Indexes,
    /// Sessions that may receive work now: live and attached to this leader.
    pub eligible: &'a BTreeSet<SessionId>,
    pub limits: PlanLimits,
}

/// Plans one round of assignments.
///
/// - Only pending tasks with `ready_at_ms <= now_ms`, of jobs present in `idx.jobs` that are not
///   paused and whose namespace is not paused (`idx.namespaces`), are assigned, each at most once,
///   and only to sessions that are both in `eligible` and live in `idx.sessions`, whose labels
///   satisfy the job's constraints, which may receive the job's namespace (`SessionRecord::
///   namespaces`, from the worker's credential), and which have a free slot (capacity minus the
///   tasks they hold minus what this round already gave them).
/// - Priority is strict: higher-priority jobs are served first. Within one priority, namespaces
///   take turns in name order and, within a namespace, jobs take turns in id order; a turn examines
///   one task, and a job's shards are examined in ascending order. So equal jobs share the slots
///   evenly, and a job whose next tasks are not ready yet only costs the others a scan step.
/// - A task goes to its sticky session (the eligible live session whose worker name last ran it)
///   if that one is compatible and has a free slot, else to the compatible session with the most
///   free slots, lowest id first.
/// - A job with no compatible session that has a free slot left is dropped for the rest of the
///   round without examining its tasks; since free slots only shrink during a round, it could not
///   place anything later either.
/// - The round stops at `max_assignments` assignments, after `max_scan` examined tasks (not-ready
///   ones included), or when no eligible session has a free slot. Short of those limits it is
///   work-conserving: every ready task left out has no compatible session with a free slot.
pub fn plan(view: &View<'_>, now_ms: u64) -> Vec<Assign> {
    let assigns = plan_counted(view, now_ms).assigns;
    debug_assert_eq!(contract_breach(view, &assigns, now_ms), None, "plan() broke its contract");
    assigns
}

/// The first way `assigns` breaks plan()'s contract, if any: a cheap check of
/// what apply() would refuse (the tests check the rest against a reference).
fn contract_breach(view: &View<'_>, assigns: &[Assign], now_ms: u64) -> Option<String> {
    if assigns.len() > view.limits.max_assignments {
        return Some(format!("{} assignments over the limit {}", assigns.len(), view.limits.max_assignments));
    }
    let mut tasks = BTreeSet::new();
    let mut given: BTreeMap<SessionId, usize> = BTreeMap::new();
    for a in assigns {
        if !tasks.insert(a.task) {
            return Some(format!("{} assigned twice", a.task));
        }
        let Some(session) = view.idx.sessions.get(&a.session).filter(|_| view.eligible.contains(&a.session)) else {
            return Some(format!("{} given to session {}, not eligible and live", a.task, a.session));
        };
        let ready = view.idx.pending.get(&a.task.job).and_then(|m| m.get(&a.task.shard)).map(|p| p.ready_at_ms);
        if ready.is_none_or(|r| r > now_ms) {
            return Some(format!("{} is not a ready pending task (ready at {ready:?}, now {now_ms})", a.task));
        }
        let Some(job) = view.idx.jobs.get(&a.task.job) else {
            return Some(format!("{} has no live job", a.task));
        };
        if paused(view.idx, job) {
            return Some(format!("{} given out while its job or namespace is paused", a.task));
        }
        if !session.accepts(job) {
            return Some(format!(
                "{} given to session {} against its job's constraints or namespace",
                a.task, a.session
            ));
        }
        let n = given.entry(a.session).or_default();
        *n += 1;
        let held = view.idx.by_session.get(&a.session).map_or(0, |h| h.len());
        if held + *n > session.capacity as usize {
            return Some(format!(
                "session {} given {n} over its capacity {} (holds {held})",
                a.session, session.capacity
            ));
        }
    }
    None
}

/// A planned round, plus how many pending tasks it examined (tests check the scan bound).
struct Round {
    assigns: Vec<Assign>,
    examined: usize,
}

impl Round {
    fn at_limit(&self, limits: PlanLimits) -> bool {
        self.assigns.len() >= limits.max_assignments || self.examined >= limits.max_scan
    }
}

fn plan_counted(view: &View<'_>, now_ms: u64) -> Round {
    let mut round = Round { assigns: Vec::new(), examined: 0 };
    if round.at_limit(view.limits) {
        return round;
    }
    let mut pool = Pool::new(view.idx, view.eligible);
    // BTreeMap over Reverse(priority): highest priority first.
    for namespaces in levels(view.idx).into_values() {
        if !run_level(namespaces, &mut pool, view.limits, now_ms, &mut round) {
            break;
        }
    }
    round
}

type Labels = BTreeMap<String, String>;

/// The jobs of one priority, by namespace name, each namespace's jobs in id order.
type Level<'a> = BTreeMap<&'a str, VecDeque<JobCursor<'a>>>;

fn levels(idx: &Indexes) -> BTreeMap<Reverse<i32>, Level<'_>> {
    let mut levels: BTreeMap<Reverse<i32>, Level<'_>> = BTreeMap::new();
    // `pending` iterates in job id order, so each namespace queue comes out oldest job first.
    for (&id, shards) in &idx.pending {
        if shards.is_empty() {
            continue;
        }
        // A pending entry without its job is skipped: there are no constraints to place it by.
        let Some(job) = idx.jobs.get(&id) else { continue };
        // Paused: nothing new starts; apply() would refuse it anyway.
        if paused(idx, job) {
            continue;
        }
        levels
            .entry(Reverse(job.priority))
            .or_default()
            .entry(job.namespace.as_str())
            .or_default()
            .push_back(JobCursor { id, job, shards: shards.iter(), class: None });
    }
    levels
}

/// Whether `job` may get no new attempt: it is paused, or its namespace is.
fn paused(idx: &Indexes, job: &JobRecord) -> bool {
    job.paused || idx.namespaces.get(&job.namespace).is_some_and(|n| n.paused)
}

/// Round-robin over the namespaces of one priority level until it runs dry. Returns false when the
/// whole round must stop (a limit was reached or no free slot is left anywhere).
fn run_level<'a>(level: Level<'a>, pool: &mut Pool<'a>, limits: PlanLimits, now_ms: u64, round: &mut Round) -> bool {
    let mut namespaces: VecDeque<VecDeque<JobCursor<'a>>> = level.into_values().collect();
    while let Some(mut jobs) = namespaces.pop_front() {
        // The namespace's turn goes to its first job that can still examine a task; jobs found
        // unable to are dropped on the way without using up the turn.
        while let Some(mut job) = jobs.pop_front() {
            if round.at_limit(limits) || pool.free_total == 0 {
                return false;
            }
            match job.turn(pool, now_ms, round) {
                Turn::Dropped => continue,
                Turn::Examined { more } => {
                    if more {
                        jobs.push_back(job);
                    }
                    break;
                }
            }
        }
        if !jobs.is_empty() {
            namespaces.push_back(jobs);
        }
    }
    true
}

/// A job's progress through its pending shards during the round.
struct JobCursor<'a> {
    id: JobId,
    job: &'a JobRecord,
    shards: btree_map::Iter<'a, u32, PendingTask>,
    /// The job's constraint class in the pool, resolved at its first turn.
    class: Option<usize>,
}

enum Turn {
    /// The job examined one task; `more` says whether it has shards left to examine.
    Examined { more: bool },
    /// The job can do nothing more this round and leaves the rotation.
    Dropped,
}

impl<'a> JobCursor<'a> {
    fn turn(&mut self, pool: &mut Pool<'a>, now_ms: u64, round: &mut Round) -> Turn {
        let job = self.job;
        let class = *self.class.get_or_insert_with(|| pool.class_of(job));
        if !pool.class_has_free(class) {
            return Turn::Dropped;
        }
        let Some((&shard, task)) = self.shards.next() else { return Turn::Dropped };
        round.examined += 1;
        let more = self.shards.len() > 0;
        if task.ready_at_ms > now_ms {
            return Turn::Examined { more };
        }
        match pool.place(class, task.sticky, job) {
            Some(slot) => {
                let session = pool.take(slot);
                round.assigns.push(Assign { task: TaskKey::new(self.id, shard), session });
                Turn::Examined { more }
            }
            // Not reached: class_has_free just found a compatible session with a free slot.
            None => Turn::Examined { more: false },
        }
    }
}

/// One eligible live session and its free slots, updated as the round assigns.
struct Slot<'a> {
    id: SessionId,
    rec: &'a SessionRecord,
    free: u32,
    group: usize,
}

/// Sessions with identical labels and namespaces: any job accepts all of them or none.
struct Group<'a> {
    /// Any member; stands for the group's labels and namespaces when testing a job.
    rep: &'a SessionRecord,
    /// Members with a free slot as (most free first, lowest id first, slot index).
    free: BTreeSet<(Reverse<u32>, SessionId, usize)>,
}

/// The sessions that can receive work this round.
struct Pool<'a> {
    slots: Vec<Slot<'a>>,
    groups: Vec<Group<'a>>,
    /// Interned worker name -> its session, for stickiness.
    by_name: BTreeMap<NameId, usize>,
    /// (Constraint set, namespace) -> class index. Jobs with equal constraints in one namespace
    /// share one class.
    classes: BTreeMap<(&'a Labels, &'a str), usize>,
    /// Per class: the groups that satisfy it and may still have a free slot. Full groups are pruned
    /// lazily; free slots only shrink during a round, so a pruned group never comes back.
    class_groups: Vec<Vec<usize>>,
    free_total: u64,
}

impl<'a> Pool<'a> {
    fn new(idx: &'a Indexes, eligible: &BTreeSet<SessionId>) -> Self {
        let mut pool = Pool {
            slots: Vec::new(),
            groups: Vec::new(),
            by_name: BTreeMap::new(),
            classes: BTreeMap::new(),
            class_groups: Vec::new(),
            free_total: 0,
        };
        let mut group_of: BTreeMap<(&'a Labels, &'a Option<BTreeSet<String>>), usize> = BTreeMap::new();
        for &id in eligible {
            let Some(rec) = idx.sessions.get(&id) else { continue };
            let held = idx.by_session.get(&id).map_or(0, BTreeSet::len);
            let free = rec.capacity.saturating_sub(u32::try_from(held).unwrap_or(u32::MAX));
            let group = *group_of.entry((&rec.labels, &rec.namespaces)).or_insert_with(|| {
                pool.groups.push(Group { rep: rec, free: BTreeSet::new() });
                pool.groups.len() - 1
            });
            let slot = pool.slots.len();
            pool.slots.push(Slot { id, rec, free, group });
            if free > 0 {
                pool.groups[group].free.insert((Reverse(free), id, slot));
                pool.free_total += u64::from(free);
            }
            // Names are unique among live sessions; should two share one, the lowest id is sticky.
            if let Some(name) = idx.names.get(&rec.name) {
                pool.by_name.entry(name).or_insert(slot);
            }
        }
        pool
    }

    fn class_of(&mut self, job: &'a JobRecord) -> usize {
        let key = (&job.constraints, job.namespace.as_str());
        if let Some(&class) = self.classes.get(&key) {
            return class;
        }
        let groups = &self.groups;
        let compatible = (0..groups.len()).filter(|&g| !groups[g].free.is_empty() && groups[g].rep.accepts(job));
        self.class_groups.push(compatible.collect());
        let class = self.class_groups.len() - 1;
        self.classes.insert(key, class);
        class
    }

    /// Whether some session of the class has a free slot. Amortised O(1): full groups are removed
    /// as they are met, and the search stops at the first group with room.
    fn class_has_free(&mut self, class: usize) -> bool {
        let list = &mut self.class_groups[class];
        while let Some(&g) = list.first() {
            if !self.groups[g].free.is_empty() {
                return true;
            }
            list.swap_remove(0);
        }
        false
    }

    /// The slot a task should go to: its sticky session if usable, else the compatible session
    /// with the most free slots (lowest id on ties), which spreads load.
    fn place(&mut self, class: usize, sticky: Option<NameId>, job: &JobRecord) -> Option<usize> {
        if let Some(&slot) = sticky.and_then(|name| self.by_name.get(&name)) {
            let s = &self.slots[slot];
            if s.free > 0 && s.rec.accepts(job) {
                return Some(slot);
            }
        }
        let groups = &self.groups;
        let list = &mut self.class_groups[class];
        list.retain(|&g| !groups[g].free.is_empty());
        list.iter().filter_map(|&g| groups[g].free.first()).min().map(|&(_, _, slot)| slot)
    }

    /// Uses one free slot of `slot` and returns its session id.
    fn take(&mut self, slot: usize) -> SessionId {
        let s = &mut self.slots[slot];
        let members = &mut self.groups[s.group].free;
        members.remove(&(Reverse(s.free), s.id, slot));
        s.free -= 1;
        if s.free > 0 {
            members.insert((Reverse(s.free), s.id, slot));
        }
        self.free_total -= 1;
        s.id
    }
}

#[cfg(test)]
#[path = "scheduler_tests.rs"]
mod tests;
