//! Schedules and event triggers: the specs a client sends, their validation,
//! the durable records, and the pure rules apply() uses to fire them.
//!
//! Everything here is a function of its arguments: fire times are computed
//! from the schedule and a fire time (or the entry's time), never from a
//! clock, and cron patterns and time zones are evaluated by `croner` and
//! `chrono-tz`, whose rules are compiled in, so every replica computes the
//! same times. `core_schedule.rs` calls these from the entries that fire.

use std::collections::BTreeMap;
use std::str::FromStr;

use chrono::{DateTime, TimeZone, Utc};
use serde::{Deserialize, Serialize};
use serde_bytes::ByteBuf;

use crate::codec;
use crate::command::{COMMAND_TAG_BYTES, CommandError, JobSpec, check_bytes, check_labels, check_name, invalid};
use crate::ids::{JobId, WorkflowId};
use crate::limits::*;
use crate::workflow::WorkflowSpec;

/// A schedule id, assigned by apply() from a replicated counter (starts at 1).
pub type ScheduleId = u64;
/// A trigger id, assigned by apply() from a replicated counter (starts at 1).
pub type TriggerId = u64;

/// When a schedule fires.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Cadence {
    /// A 5-field (minute) or 6-field (second first) cron pattern, read in
    /// an IANA time zone (`UTC` when empty).
    Cron { pattern: String, time_zone: String },
    /// Every `period_ms`, counted from the start time (else the creation time).
    FixedRate { period_ms: u64 },
    /// `delay_ms` after the previous run finished; the first run fires at
    /// the start time (else at once).
    FixedDelay { delay_ms: u64 },
    /// Once, at `at_ms`.
    Once { at_ms: u64 },
}

/// What happens to fire times missed while the cluster had no leader or the
/// schedule was paused: those applied more than the schedule's grace after
/// they were due.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum Misfire {
    /// Missed times start nothing; the schedule goes on from the next time.
    #[default]
    Skip,
    /// One run for the newest missed time, the others skipped.
    FireOnce,
    /// One run per missed time, oldest first, the newest `max` of them
    /// (at most [`MAX_FIRE_ALL_CATCH_UP`]); older ones are skipped.
    FireAll { max: u32 },
}

/// What a fire does while an earlier run of the same schedule is live.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum Overlap {
    /// Start another run (up to [`MAX_LIVE_RUNS_PER_SCHEDULE`] live).
    Allow,
    /// Skip this fire.
    #[default]
    Skip,
    /// Cancel the live runs, then start this one.
    CancelPrevious,
    /// Start this run when the live one finishes; a fire while one is
    /// already buffered is skipped.
    BufferOne,
}

/// What a run starts: a job, or a workflow.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Template {
    Job(JobSpec),
    Workflow(WorkflowSpec),
}

impl Template {
    pub fn namespace(&self) -> &str {
        match self {
            Template::Job(j) => &j.namespace,
            Template::Workflow(w) => &w.namespace,
        }
    }

    fn validate(&self, namespace: &str) -> Result<(), CommandError> {
        let (ns, key, not_before) = match self {
            Template::Job(j) => {
                j.validate()?;
                (&j.namespace, &j.idempotency_key, j.not_before_ms)
            }
            Template::Workflow(w) => {
                w.validate()?;
                (&w.namespace, &w.idempotency_key, None)
            }
        };
        if ns != namespace {
            return Err(invalid("template.namespace", format!("is {ns:?}; must be the schedule's ({namespace:?})")));
        }
        if key.is_some() {
            return Err(invalid(
                "template.idempotency_key",
                "must be empty: each run is deduplicated by its fire time".into(),
            ));
        }
        if not_before.is_some() {
            return Err(invalid("template.not_before_ms", "must be empty: the schedule says when runs start".into()));
        }
        Ok(())
    }

    /// This template with `payload` in every empty shard payload of the
    /// job, or of a workflow's steps without predecessors.
    pub fn with_event_payload(&self, payload: &ByteBuf) -> Template {
        let fill = |job: &mut JobSpec| {
            for p in job.payloads.iter_mut().filter(|p| p.is_empty()) {
                *p = payload.clone();
            }
        };
        let mut t = self.clone();
        match &mut t {
            Template::Job(j) => fill(j),
            Template::Workflow(w) => {
                for step in w.steps.iter_mut().filter(|s| s.depends_on.is_empty()) {
                    if let crate::workflow::StepKind::Job { job, .. } = &mut step.kind {
                        fill(job);
                    }
                }
            }
        }
        t
    }

    /// Stateless checks of a template made for one run.
    pub fn validate_run(&self) -> Result<(), CommandError> {
        match self {
            Template::Job(j) => j.validate(),
            Template::Workflow(w) => w.validate().map(|_| ()),
        }
    }

    /// Summary kept in memory with the record (the template itself is not).
    pub fn kind(&self) -> TemplateKind {
        match self {
            Template::Job(j) => TemplateKind::Job { shards: j.payloads.len() as u32 },
            Template::Workflow(w) => TemplateKind::Workflow { steps: w.steps.len() as u32 },
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum TemplateKind {
    Job { shards: u32 },
    Workflow { steps: u32 },
}

/// Everything a client says about a schedule.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScheduleSpec {
    pub namespace: String,
    /// Unique in its namespace: creating the same name again with the same
    /// spec returns the first schedule (a safe retry), with another is refused.
    pub name: String,
    pub cadence: Cadence,
    /// No fire before this time (ms since the Unix epoch).
    pub start_ms: Option<u64>,
    /// No fire after this time.
    pub end_ms: Option<u64>,
    /// Each fire waits a deterministic offset in `[0, jitter_ms)` after its time.
    pub jitter_ms: u64,
    pub misfire: Misfire,
    /// How late a fire may be applied and still be on time.
    pub misfire_grace_ms: u64,
    pub overlap: Overlap,
    pub template: Template,
}

impl ScheduleSpec {
    /// Stateless checks: sizes, ranges, a cron pattern and time zone that
    /// parse and can fire, a template that is a valid job or workflow, and
    /// that the command fits one entry.
    pub fn validate(&self) -> Result<(), CommandError> {
        check_name("namespace", &self.namespace, false)?;
        check_name("name", &self.name, false)?;
        match &self.cadence {
            Cadence::Cron { pattern, time_zone } => {
                check_bytes("cadence.cron", pattern.len(), MAX_CRON_BYTES)?;
                check_bytes("cadence.time_zone", time_zone.len(), MAX_TIME_ZONE_BYTES)?;
                let cron = parse_cron(pattern)?;
                let tz = parse_time_zone(time_zone)?;
                // A pattern such as "0 0 30 2 *" parses but never fires.
                let probe = self.start_ms.unwrap_or(0);
                if cron_after(&cron, tz, probe).is_none() {
                    return Err(invalid("cadence.cron", format!("{pattern:?} never fires")));
                }
            }
            Cadence::FixedRate { period_ms } => check_period("cadence.every_ms", *period_ms)?,
            Cadence::FixedDelay { delay_ms } => check_period("cadence.delay_ms", *delay_ms)?,
            Cadence::Once { .. } => {}
        }
        if let (Some(s), Some(e)) = (self.start_ms, self.end_ms)
            && e < s
        {
            return Err(invalid("end_ms", format!("{e} is before start_ms {s}")));
        }
        if self.jitter_ms > MAX_SCHEDULE_JITTER_MS {
            return Err(invalid(
                "jitter_ms",
                format!("{} ms exceeds the {MAX_SCHEDULE_JITTER_MS}-ms limit", self.jitter_ms),
            ));
        }
        if self.misfire_grace_ms > MAX_MISFIRE_GRACE_MS {
            return Err(invalid(
                "misfire_grace_ms",
                format!("{} ms exceeds the {MAX_MISFIRE_GRACE_MS}-ms limit", self.misfire_grace_ms),
            ));
        }
        if let Misfire::FireAll { max } = self.misfire
            && (max == 0 || max > MAX_FIRE_ALL_CATCH_UP)
        {
            return Err(invalid(
                "misfire.fire_all",
                format!("catch-up bound {max} must be 1..={MAX_FIRE_ALL_CATCH_UP}"),
            ));
        }
        self.template.validate(&self.namespace)?;
        let encoded = codec::encoded_len(self).map_err(|e| invalid("spec", e.to_string()))? + COMMAND_TAG_BYTES;
        if encoded > MAX_ENTRY_BYTES {
            return Err(invalid(
                "template",
                format!("the schedule encodes to {encoded} bytes, over the {MAX_ENTRY_BYTES}-byte entry limit"),
            ));
        }
        Ok(())
    }

    /// The parts kept in the in-memory record (everything but the template).
    pub fn rule(&self) -> ScheduleRule {
        ScheduleRule {
            namespace: self.namespace.clone(),
            name: self.name.clone(),
            cadence: self.cadence.clone(),
            start_ms: self.start_ms,
            end_ms: self.end_ms,
            jitter_ms: self.jitter_ms,
            misfire: self.misfire,
            misfire_grace_ms: self.misfire_grace_ms,
            overlap: self.overlap,
            template: self.template.kind(),
        }
    }
}

fn check_period(field: &str, ms: u64) -> Result<(), CommandError> {
    if !(MIN_SCHEDULE_PERIOD_MS..=MAX_DURATION_MS).contains(&ms) {
        return Err(invalid(field, format!("{ms} ms must be {MIN_SCHEDULE_PERIOD_MS}..={MAX_DURATION_MS} ms")));
    }
    Ok(())
}

/// Parse a 5- or 6-field cron pattern (or a nickname such as `@daily`).
/// Day of month and day of week combine with OR, as in Vixie cron.
pub fn parse_cron(pattern: &str) -> Result<croner::Cron, CommandError> {
    let fields = pattern.split_whitespace().count();
    let nickname = pattern.trim_start().starts_with('@');
    if !nickname && !(5..=6).contains(&fields) {
        return Err(invalid("cadence.cron", format!("{pattern:?} has {fields} fields; must have 5 or 6")));
    }
    croner::parser::CronParser::builder()
        .seconds(croner::parser::Seconds::Optional)
        .year(croner::parser::Year::Disallowed)
        .build()
        .parse(pattern)
        .map_err(|e| invalid("cadence.cron", format!("{pattern:?}: {e}")))
}

/// Parse an IANA time-zone name; empty means UTC.
pub fn parse_time_zone(name: &str) -> Result<chrono_tz::Tz, CommandError> {
    if name.is_empty() {
        return Ok(chrono_tz::UTC);
    }
    chrono_tz::Tz::from_str(name)
        .map_err(|_| invalid("cadence.time_zone", format!("{name:?} is not an IANA time zone")))
}

/// `ms` as a time in `tz`, truncated to the whole second: cron times are
/// whole seconds, and croner carries a start time's fraction into its answer.
fn to_dt(ms: u64, tz: chrono_tz::Tz) -> Option<DateTime<chrono_tz::Tz>> {
    Utc.timestamp_millis_opt(i64::try_from(ms - ms % 1000).ok()?).single().map(|t| t.with_timezone(&tz))
}

fn from_dt(t: DateTime<chrono_tz::Tz>) -> Option<u64> {
    u64::try_from(t.timestamp_millis()).ok()
}

/// The first time the pattern matches strictly after `t_ms` (an occurrence
/// at `t_ms`'s whole second is not after it, whatever its fraction).
fn cron_after(cron: &croner::Cron, tz: chrono_tz::Tz, t_ms: u64) -> Option<u64> {
    cron.find_next_occurrence(&to_dt(t_ms, tz)?, false).ok().and_then(from_dt)
}

/// The newest time the pattern matches at or before `t_ms`.
fn cron_at_or_before(cron: &croner::Cron, tz: chrono_tz::Tz, t_ms: u64) -> Option<u64> {
    cron.find_previous_occurrence(&to_dt(t_ms, tz)?, true).ok().and_then(from_dt)
}

/// The schedule without its template: what the in-memory record holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScheduleRule {
    pub namespace: String,
    pub name: String,
    pub cadence: Cadence,
    pub start_ms: Option<u64>,
    pub end_ms: Option<u64>,
    pub jitter_ms: u64,
    pub misfire: Misfire,
    pub misfire_grace_ms: u64,
    pub overlap: Overlap,
    pub template: TemplateKind,
}

impl ScheduleRule {
    /// The fire times of this rule counted from `anchor_ms`, its cron pattern
    /// parsed once for every question asked of them.
    fn times(&self, anchor_ms: u64) -> Times<'_> {
        let cron = match &self.cadence {
            Cadence::Cron { pattern, time_zone } => parse_cron(pattern).ok().zip(parse_time_zone(time_zone).ok()),
            _ => None,
        };
        Times { rule: self, anchor_ms, cron }
    }

    /// The first fire time at or after `t_ms` within the window, for a
    /// schedule (re)started at `t_ms` whose fixed rate counts from `anchor_ms`.
    pub fn first_at_or_after(&self, anchor_ms: u64, t_ms: u64) -> Option<u64> {
        self.times(anchor_ms).first_at_or_after(t_ms)
    }

    /// The fire time after `fire_ms` (a fixed delay's next time depends on
    /// when its run ends, so it has none here).
    pub fn next_after(&self, anchor_ms: u64, fire_ms: u64) -> Option<u64> {
        self.times(anchor_ms).next_after(fire_ms)
    }

    /// The deterministic delay of the fire at `fire_ms`: a hash of the
    /// schedule and the fire time, below `jitter_ms`.
    pub fn jitter_of(&self, schedule: ScheduleId, fire_ms: u64) -> u64 {
        if self.jitter_ms == 0 {
            return 0;
        }
        let mut h = blake3::Hasher::new();
        h.update(&schedule.to_be_bytes());
        h.update(&fire_ms.to_be_bytes());
        let bytes = h.finalize();
        let v = u64::from_be_bytes(bytes.as_bytes()[..8].try_into().expect("8 bytes"));
        v % self.jitter_ms
    }

    /// What the entry that fires `fire_ms` at `now_ms` does, by the misfire
    /// policy: which fire time its run is for (if any), and the next fire time.
    /// A fire is missed when applied more than the grace after it was due.
    pub fn plan_fire(&self, id: ScheduleId, anchor_ms: u64, fire_ms: u64, now_ms: u64) -> FirePlan {
        let times = self.times(anchor_ms);
        let due = fire_ms.saturating_add(self.jitter_of(id, fire_ms));
        let missed = now_ms > due.saturating_add(self.misfire_grace_ms);
        if !missed {
            return FirePlan { run_for: Some(fire_ms), skipped: 0, next_ms: times.next_after(fire_ms) };
        }
        match (&self.cadence, self.misfire) {
            // These have no later time to catch up to: fire or skip this one.
            (Cadence::Once { .. } | Cadence::FixedDelay { .. }, Misfire::Skip) => {
                FirePlan { run_for: None, skipped: 1, next_ms: None }
            }
            (Cadence::Once { .. } | Cadence::FixedDelay { .. }, _) => {
                FirePlan { run_for: Some(fire_ms), skipped: 0, next_ms: None }
            }
            (_, Misfire::Skip) => {
                // The newest due time may itself be on time (the schedule
                // was behind by more than a period but caught up now).
                let newest = times.newest_at_or_before(fire_ms, now_ms).unwrap_or(fire_ms);
                let on_time =
                    newest.saturating_add(self.jitter_of(id, newest)).saturating_add(self.misfire_grace_ms) >= now_ms;
                let run_for = on_time.then_some(newest);
                let skipped = times.count_between(fire_ms, newest) + u64::from(!on_time);
                FirePlan { run_for, skipped, next_ms: times.next_after(newest) }
            }
            (_, Misfire::FireOnce) => {
                let newest = times.newest_at_or_before(fire_ms, now_ms).unwrap_or(fire_ms);
                FirePlan {
                    run_for: Some(newest),
                    skipped: times.count_between(fire_ms, newest),
                    next_ms: times.next_after(newest),
                }
            }
            (_, Misfire::FireAll { max }) => {
                let oldest_kept = times.nth_newest_at_or_before(fire_ms, now_ms, max).unwrap_or(fire_ms);
                FirePlan {
                    run_for: Some(oldest_kept),
                    skipped: times.count_between(fire_ms, oldest_kept),
                    next_ms: times.next_after(oldest_kept),
                }
            }
        }
    }

    /// The next `n` fire times from `after_ms` on (for reads).
    pub fn upcoming(&self, anchor_ms: u64, next_ms: Option<u64>, n: usize) -> Vec<u64> {
        let times = self.times(anchor_ms);
        let mut out = Vec::with_capacity(n);
        let mut at = next_ms;
        while let Some(t) = at
            && out.len() < n
        {
            out.push(t);
            at = times.next_after(t);
        }
        out
    }
}

/// A rule's fire times: the rule, the anchor of its fixed rate, and its cron
/// pattern and zone parsed once (`None` for other cadences; a stored rule
/// was validated, so its pattern parses).
struct Times<'a> {
    rule: &'a ScheduleRule,
    anchor_ms: u64,
    cron: Option<(croner::Cron, chrono_tz::Tz)>,
}

impl Times<'_> {
    fn first_at_or_after(&self, t_ms: u64) -> Option<u64> {
        let (rule, anchor_ms) = (self.rule, self.anchor_ms);
        let t = t_ms.max(rule.start_ms.unwrap_or(0));
        let first = match &rule.cadence {
            Cadence::Cron { .. } => {
                let (cron, tz) = self.cron.as_ref()?;
                cron_after(cron, *tz, t.checked_sub(1)?)
            }
            Cadence::FixedRate { period_ms } => {
                if t <= anchor_ms {
                    Some(anchor_ms)
                } else {
                    let k = (t - anchor_ms).div_ceil(*period_ms);
                    anchor_ms.checked_add(k.checked_mul(*period_ms)?)
                }
            }
            Cadence::FixedDelay { .. } => Some(t),
            Cadence::Once { at_ms } => Some(*at_ms),
        };
        first.filter(|f| rule.end_ms.is_none_or(|e| *f <= e))
    }

    fn next_after(&self, fire_ms: u64) -> Option<u64> {
        let (rule, anchor_ms) = (self.rule, self.anchor_ms);
        let next = match &rule.cadence {
            Cadence::Cron { .. } => {
                let (cron, tz) = self.cron.as_ref()?;
                cron_after(cron, *tz, fire_ms)
            }
            Cadence::FixedRate { period_ms } => {
                if fire_ms < anchor_ms {
                    Some(anchor_ms)
                } else {
                    let k = (fire_ms - anchor_ms) / period_ms + 1;
                    anchor_ms.checked_add(k.checked_mul(*period_ms)?)
                }
            }
            Cadence::FixedDelay { .. } | Cadence::Once { .. } => None,
        };
        next.filter(|f| rule.start_ms.is_none_or(|s| *f >= s) && rule.end_ms.is_none_or(|e| *f <= e))
    }

    /// The newest fire time at or before `t_ms`, no earlier than `from_ms`.
    fn newest_at_or_before(&self, from_ms: u64, t_ms: u64) -> Option<u64> {
        let (rule, anchor_ms) = (self.rule, self.anchor_ms);
        let t = match rule.end_ms {
            Some(e) => t_ms.min(e),
            None => t_ms,
        };
        let newest = match &rule.cadence {
            Cadence::Cron { .. } => {
                let (cron, tz) = self.cron.as_ref()?;
                cron_at_or_before(cron, *tz, t)
            }
            Cadence::FixedRate { period_ms } => {
                let since = t.checked_sub(anchor_ms)?;
                Some(anchor_ms + since / period_ms * period_ms)
            }
            Cadence::FixedDelay { .. } | Cadence::Once { .. } => None,
        };
        newest.filter(|n| *n >= from_ms)
    }

    /// The `n`-th newest fire time at or before `t_ms` (1 = the newest),
    /// no earlier than `from_ms`: where a `fire_all` catch-up starts.
    fn nth_newest_at_or_before(&self, from_ms: u64, t_ms: u64, n: u32) -> Option<u64> {
        let mut at = self.newest_at_or_before(from_ms, t_ms)?;
        for _ in 1..n {
            match at.checked_sub(1).and_then(|t| self.newest_at_or_before(from_ms, t)) {
                Some(prev) => at = prev,
                None => break,
            }
        }
        Some(at)
    }

    /// How many fire times lie in `[from_ms, to_ms)`, counting at most
    /// [`MAX_FIRE_ALL_CATCH_UP`] (a cron pattern is stepped one time at a time).
    fn count_between(&self, from_ms: u64, to_ms: u64) -> u64 {
        if to_ms <= from_ms {
            return 0;
        }
        if let Cadence::FixedRate { period_ms } = self.rule.cadence {
            return (to_ms - from_ms).div_ceil(period_ms);
        }
        let mut n = 0;
        let mut at = from_ms;
        while at < to_ms && n < u64::from(MAX_FIRE_ALL_CATCH_UP) {
            n += 1;
            match self.next_after(at) {
                Some(next) => at = next,
                None => break,
            }
        }
        n
    }
}

/// See [`ScheduleRule::plan_fire`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FirePlan {
    /// The fire time whose run this entry starts; `None`: it starts none.
    pub run_for: Option<u64>,
    /// Fire times passed over without a run.
    pub skipped: u64,
    /// The schedule's next fire time; `None`: none left (or a fixed delay
    /// waits for its run to end).
    pub next_ms: Option<u64>,
}

/// Whose run template a stored template is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum TemplateOwner {
    Schedule(ScheduleId),
    Trigger(TriggerId),
}

/// A run's job or workflow.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub enum RunTarget {
    Job(JobId),
    Workflow(WorkflowId),
}

/// How a run ended, or why a fire started none.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum RunOutcome {
    Live,
    /// Waiting for the live run to end (overlap `buffer_one`).
    Buffered,
    Succeeded,
    Failed,
    Cancelled,
    /// The fire started no run, and why.
    Skipped(String),
}

impl RunOutcome {
    pub fn name(&self) -> &'static str {
        match self {
            RunOutcome::Live => "live",
            RunOutcome::Buffered => "buffered",
            RunOutcome::Succeeded => "succeeded",
            RunOutcome::Failed => "failed",
            RunOutcome::Cancelled => "cancelled",
            RunOutcome::Skipped(_) => "skipped",
        }
    }
}

/// One fire of a schedule, as its record remembers it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunEntry {
    /// The fire time (for `run now`, the entry's time).
    pub fire_ms: u64,
    /// Started by `RunSchedule` rather than by the cadence.
    pub manual: bool,
    pub target: Option<RunTarget>,
    pub outcome: RunOutcome,
    /// When the entry that fired (or skipped) it was applied.
    pub at_ms: u64,
}

/// Set on every job or workflow a schedule or a trigger started.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum RunOrigin {
    Schedule { schedule: ScheduleId, fire_ms: u64, manual: bool },
    Event { trigger: TriggerId, event_id: String },
}

/// A schedule's durable record; all of them are in memory too.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScheduleRecord {
    pub id: ScheduleId,
    pub rule: ScheduleRule,
    /// blake3 of the encoded spec, to tell a retried create from a name reuse.
    pub spec_hash: [u8; 32],
    pub created_ms: u64,
    pub updated_ms: u64,
    /// A fixed rate counts its periods from here: the start time, else the
    /// time of the create or update that set the cadence.
    pub anchor_ms: u64,
    pub paused: bool,
    /// The next fire time (before jitter). `None`: none left, or a fixed
    /// delay waits for its live run to end.
    pub next_fire_ms: Option<u64>,
    /// Runs not finished yet, oldest first.
    pub live: Vec<RunTarget>,
    /// A fire time waiting for the live run to end (overlap `buffer_one`).
    pub buffered: Option<u64>,
    /// The newest runs and skipped fires, oldest first (at most [`MAX_RECENT_RUNS`]).
    pub recent: Vec<RunEntry>,
    pub runs_started: u64,
    pub fires_skipped: u64,
}

impl ScheduleRecord {
    /// When the next fire is due (its time plus jitter), if it can fire.
    pub fn due_ms(&self) -> Option<u64> {
        if self.paused {
            return None;
        }
        self.next_fire_ms.map(|f| f.saturating_add(self.rule.jitter_of(self.id, f)))
    }

    /// Finished: nothing left to fire and nothing live or buffered.
    pub fn is_done(&self) -> bool {
        self.next_fire_ms.is_none() && self.live.is_empty() && self.buffered.is_none()
    }

    pub(crate) fn remember(&mut self, entry: RunEntry) {
        if self.recent.len() >= MAX_RECENT_RUNS {
            self.recent.remove(0);
        }
        self.recent.push(entry);
    }
}

/// An event trigger: every event published on its topic (in its namespace)
/// whose attributes match its filter starts one run of its job template.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TriggerSpec {
    pub namespace: String,
    /// Unique in its namespace, like a schedule's.
    pub name: String,
    pub topic: String,
    /// Every pair must equal the event's attribute.
    pub filter: BTreeMap<String, String>,
    /// The run: a job, each of whose shards with an empty payload gets the
    /// event's payload; or a workflow, whose steps without predecessors get
    /// it the same way.
    pub template: Template,
    /// At most one run per debounce key in this window (leading edge).
    pub debounce_ms: Option<u64>,
    /// The attribute whose value is the debounce key (all events share one
    /// key when empty).
    pub debounce_key: String,
}

impl TriggerSpec {
    pub fn validate(&self) -> Result<(), CommandError> {
        check_name("namespace", &self.namespace, false)?;
        check_name("name", &self.name, false)?;
        check_topic(&self.topic)?;
        check_labels("filter", &self.filter)?;
        self.template.validate(&self.namespace)?;
        if let Some(ms) = self.debounce_ms
            && (ms == 0 || ms > MAX_DEBOUNCE_MS)
        {
            return Err(invalid("debounce_ms", format!("{ms} ms must be 1..={MAX_DEBOUNCE_MS} ms")));
        }
        check_name("debounce_key", &self.debounce_key, true)?;
        if self.debounce_ms.is_none() && !self.debounce_key.is_empty() {
            return Err(invalid("debounce_key", "needs debounce_ms".into()));
        }
        let encoded = codec::encoded_len(self).map_err(|e| invalid("spec", e.to_string()))? + COMMAND_TAG_BYTES;
        if encoded > MAX_ENTRY_BYTES {
            return Err(invalid(
                "template",
                format!("the trigger encodes to {encoded} bytes, over the {MAX_ENTRY_BYTES}-byte entry limit"),
            ));
        }
        Ok(())
    }

    pub fn matches(&self, event: &EventSpec) -> bool {
        self.namespace == event.namespace
            && self.topic == event.topic
            && self.filter.iter().all(|(k, v)| event.attributes.get(k) == Some(v))
    }
}

fn check_topic(topic: &str) -> Result<(), CommandError> {
    check_name("topic", topic, false)?;
    check_bytes("topic", topic.len(), MAX_TOPIC_BYTES)
}

/// A trigger's durable record, in memory too (its template lives apart).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TriggerRecord {
    pub id: TriggerId,
    pub namespace: String,
    pub name: String,
    pub topic: String,
    pub filter: BTreeMap<String, String>,
    pub debounce_ms: Option<u64>,
    pub debounce_key: String,
    pub spec_hash: [u8; 32],
    pub created_ms: u64,
    /// Debounce key → time of its last run (at most [`MAX_DEBOUNCE_KEYS`]).
    pub last_run: BTreeMap<String, u64>,
    pub runs_started: u64,
    pub events_debounced: u64,
}

/// An event to publish.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EventSpec {
    pub namespace: String,
    pub topic: String,
    /// Publishing the same id again (within the idempotency window) starts
    /// nothing new; with another payload or attributes it is refused.
    pub event_id: String,
    pub payload: ByteBuf,
    pub attributes: BTreeMap<String, String>,
}

impl EventSpec {
    pub fn validate(&self) -> Result<(), CommandError> {
        check_name("namespace", &self.namespace, false)?;
        check_topic(&self.topic)?;
        crate::command::check_idempotency_key(&self.event_id).map_err(|e| match e {
            CommandError::Invalid { reason, .. } => invalid("event_id", reason),
            other => other,
        })?;
        check_bytes("payload", self.payload.len(), MAX_PAYLOAD_BYTES)?;
        check_labels("attributes", &self.attributes)?;
        Ok(())
    }
}

#[cfg(test)]
#[path = "schedule_tests.rs"]
mod tests;
