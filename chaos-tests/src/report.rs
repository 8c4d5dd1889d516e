//! What the checker returns: a verdict per invariant and every violation found.

use std::fmt::{self, Write as _};

use serde::Serialize;

use crate::history::{JobId, TaskKey, Token};

/// The properties the checker judges, in the order it reports them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Invariant {
    /// The history itself makes sense: every reply answers one earlier invoke.
    WellFormed,
    /// Acknowledged jobs survive, with their key and shards.
    NoLostJobs,
    /// No job exists that was not submitted, or twice for one key.
    NoPhantomJobs,
    /// One commit per task, by its latest attempt.
    ExactlyOnceCommit,
    /// Stale tokens never win; tokens only increase.
    Fencing,
    /// Equal applied indexes give equal state hashes.
    ReplicaConvergence,
    /// After heal, everything finishes within the bound.
    LivenessAfterHeal,
    /// A dead worker's tasks are granted again within TTL + check interval
    /// (+ slack, + failover).
    ReassignmentBound,
    /// No workflow step starts before its trigger rule is satisfied.
    StepTriggerOrder,
    /// A skipped step never runs; skips follow the trigger rules.
    SkippedNeverRuns,
    /// Every workflow reaches a terminal state after heal.
    WorkflowsFinish,
    /// A reduce commits at most once per successful map.
    ReduceAtMostOnce,
    /// Reduces, workflow results and choices equal what the committed shard
    /// results give.
    WorkflowResult,
    /// One run per schedule fire time, never early; none missing under
    /// fire-all with overlap allow.
    ScheduleFireOnce,
    /// An overlap-skip schedule never has two live runs at once.
    OverlapSkipExclusive,
    /// One run set per published event id.
    EventRunsOnce,
}

impl Invariant {
    /// Every invariant, in report order.
    pub const ALL: [Invariant; 16] = [
        Invariant::WellFormed,
        Invariant::NoLostJobs,
        Invariant::NoPhantomJobs,
        Invariant::ExactlyOnceCommit,
        Invariant::Fencing,
        Invariant::ReplicaConvergence,
        Invariant::LivenessAfterHeal,
        Invariant::ReassignmentBound,
        Invariant::StepTriggerOrder,
        Invariant::SkippedNeverRuns,
        Invariant::WorkflowsFinish,
        Invariant::ReduceAtMostOnce,
        Invariant::WorkflowResult,
        Invariant::ScheduleFireOnce,
        Invariant::OverlapSkipExclusive,
        Invariant::EventRunsOnce,
    ];

    /// The invariant's snake_case name, as in reports.
    pub fn name(self) -> &'static str {
        match self {
            Invariant::WellFormed => "well_formed",
            Invariant::NoLostJobs => "no_lost_jobs",
            Invariant::NoPhantomJobs => "no_phantom_jobs",
            Invariant::ExactlyOnceCommit => "exactly_once_commit",
            Invariant::Fencing => "fencing",
            Invariant::ReplicaConvergence => "replica_convergence",
            Invariant::LivenessAfterHeal => "liveness_after_heal",
            Invariant::ReassignmentBound => "reassignment_bound",
            Invariant::StepTriggerOrder => "step_trigger_order",
            Invariant::SkippedNeverRuns => "skipped_never_runs",
            Invariant::WorkflowsFinish => "workflows_finish",
            Invariant::ReduceAtMostOnce => "reduce_at_most_once",
            Invariant::WorkflowResult => "workflow_result",
            Invariant::ScheduleFireOnce => "schedule_fire_once",
            Invariant::OverlapSkipExclusive => "overlap_skip_exclusive",
            Invariant::EventRunsOnce => "event_runs_once",
        }
    }
}

impl fmt::Display for Invariant {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Whether an invariant held over the whole history.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    /// No violation.
    Pass,
    /// At least one violation.
    Fail,
}

impl Verdict {
    /// `pass` or `FAIL`, as in the summary table.
    pub fn name(self) -> &'static str {
        match self {
            Verdict::Pass => "pass",
            Verdict::Fail => "FAIL",
        }
    }
}

/// One breach of an invariant. `message` is written for a human and names
/// everything involved; the other fields repeat the key facts for tools.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Violation {
    /// The invariant breached.
    pub invariant: Invariant,
    /// What happened, naming the job, task, token and seqs.
    pub message: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    /// The job involved, if one is.
    pub job: Option<JobId>,
    #[serde(skip_serializing_if = "Option::is_none")]
    /// The shard involved, if one task is.
    pub shard: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    /// The token involved, if one is.
    pub token: Option<Token>,
    /// Seqs of the events that show the breach.
    pub seqs: Vec<u64>,
}

impl Violation {
    /// The task involved, when the violation names one.
    pub fn task(&self) -> Option<TaskKey> {
        Some(TaskKey::new(self.job?, self.shard?))
    }

    pub(crate) fn job(&mut self, job: JobId) -> &mut Self {
        self.job = Some(job);
        self
    }

    pub(crate) fn on_task(&mut self, task: TaskKey) -> &mut Self {
        self.job = Some(task.job);
        self.shard = Some(task.shard);
        self
    }

    pub(crate) fn token(&mut self, token: Token) -> &mut Self {
        self.token = Some(token);
        self
    }

    pub(crate) fn seqs(&mut self, seqs: impl IntoIterator<Item = u64>) -> &mut Self {
        self.seqs.extend(seqs);
        self.seqs.sort_unstable();
        self.seqs.dedup();
        self
    }
}

/// The verdict on one invariant.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct InvariantReport {
    /// Which invariant.
    pub invariant: Invariant,
    /// Its verdict.
    pub verdict: Verdict,
    /// Every breach found; empty when it passed.
    pub violations: Vec<Violation>,
    /// What was checked, and what could not be (e.g. no heal event, so no
    /// bound to measure). Notes never change the verdict.
    pub notes: Vec<String>,
}

impl InvariantReport {
    pub(crate) fn new(invariant: Invariant) -> Self {
        Self { invariant, verdict: Verdict::Pass, violations: Vec::new(), notes: Vec::new() }
    }

    /// Record a violation; the verdict becomes `Fail`.
    pub(crate) fn flag(&mut self, message: impl Into<String>) -> &mut Violation {
        self.verdict = Verdict::Fail;
        self.violations.push(Violation {
            invariant: self.invariant,
            message: message.into(),
            job: None,
            shard: None,
            token: None,
            seqs: Vec::new(),
        });
        self.violations.last_mut().expect("just pushed")
    }

    pub(crate) fn note(&mut self, note: impl Into<String>) {
        self.notes.push(note.into());
    }

    /// Whether the invariant held.
    pub fn passed(&self) -> bool {
        self.verdict == Verdict::Pass
    }
}

/// The checker's answer for one history.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Report {
    /// One entry per invariant, in [`Invariant::ALL`] order.
    pub invariants: Vec<InvariantReport>,
}

impl Report {
    /// True when every invariant passed.
    pub fn passed(&self) -> bool {
        self.invariants.iter().all(InvariantReport::passed)
    }

    /// The invariants that failed, in report order.
    pub fn failed(&self) -> Vec<Invariant> {
        self.invariants.iter().filter(|r| !r.passed()).map(|r| r.invariant).collect()
    }

    /// The verdict on `invariant`.
    pub fn get(&self, invariant: Invariant) -> &InvariantReport {
        self.invariants.iter().find(|r| r.invariant == invariant).expect("the report holds every invariant")
    }

    /// Every violation, in report order.
    pub fn violations(&self) -> impl Iterator<Item = &Violation> {
        self.invariants.iter().flat_map(|r| &r.violations)
    }

    /// The summary table, then every violation, then the notes.
    pub fn render_text(&self) -> String {
        let mut s = String::new();
        let width = Invariant::ALL.iter().map(|i| i.name().len()).max().unwrap_or(0);
        let _ = writeln!(s, "{:<width$}  {:<7}  violations", "invariant", "verdict");
        for r in &self.invariants {
            let _ = writeln!(s, "{:<width$}  {:<7}  {}", r.invariant.name(), r.verdict.name(), r.violations.len());
        }
        let total = self.violations().count();
        if total > 0 {
            let _ = writeln!(s, "\n{total} violation(s):");
            for v in self.violations() {
                let _ = writeln!(s, "  [{}] {}", v.invariant, v.message);
            }
        }
        let notes: Vec<_> =
            self.invariants.iter().flat_map(|r| r.notes.iter().map(move |n| (r.invariant, n))).collect();
        if !notes.is_empty() {
            let _ = writeln!(s, "\nnotes:");
            for (inv, n) in notes {
                let _ = writeln!(s, "  [{inv}] {n}");
            }
        }
        let _ = writeln!(s, "\n{}", if self.passed() { "all invariants hold" } else { "INVARIANTS VIOLATED" });
        s
    }
}
