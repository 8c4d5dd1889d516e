//! Schedules and event triggers through apply(): a fire time starts at most
//! one run whatever is proposed, overlap and misfire policies are decided by
//! the entries alone, and everything survives a reopen.

use std::collections::BTreeMap;

use baton_raft_store::kv::load;
use baton_raft_store::workflow::*;
use baton_raft_store::*;
use serde_bytes::ByteBuf;

const SEC: u64 = 1000;
const T0: u64 = 1_800_000_000_000;

mod common;

use common::Rig;

fn rig() -> Rig {
    Rig::new(T0, 0)
}

impl Rig {
    fn create(&mut self, spec: ScheduleSpec) -> ScheduleId {
        match self.ok(Command::CreateSchedule(Box::new(spec))) {
            Outcome::ScheduleCreated { schedule, duplicate: false, .. } => schedule,
            o => panic!("{o:?}"),
        }
    }

    fn sched(&self, id: ScheduleId) -> ScheduleRecord {
        self.core.idx.schedules[&id].clone()
    }

    /// Advance log time to the schedule's due time and fire it, as the leader would.
    fn fire_due(&mut self, id: ScheduleId) -> Outcome {
        let rec = self.sched(id);
        let (next, due) = (rec.next_fire_ms.unwrap(), rec.due_ms().unwrap());
        self.now_ms = self.now_ms.max(due);
        self.ok(Command::Fire { schedule: id, fire_ms: next })
    }

    fn finish(&mut self, job: JobId, ok: bool) {
        for shard in 0..self.job(job).shards {
            let task = TaskKey::new(job, shard);
            let grant =
                match self.ok(Command::AssignTasks { assignments: vec![Assign { task, session: self.session }] }) {
                    Outcome::Assigned(mut v) => v.remove(0).unwrap(),
                    o => panic!("{o:?}"),
                };
            let cmd = if ok {
                Command::CompleteTask { task, token: grant.token, result: ByteBuf::new(), logs: Default::default() }
            } else {
                Command::FailTask {
                    task,
                    token: grant.token,
                    error: "x".into(),
                    retryable: false,
                    logs: Default::default(),
                }
            };
            self.ok(cmd);
        }
    }
}

fn spec(cadence: Cadence, overlap: Overlap) -> ScheduleSpec {
    ScheduleSpec {
        namespace: "ns".into(),
        name: "nightly".into(),
        cadence,
        start_ms: None,
        end_ms: None,
        jitter_ms: 0,
        misfire: Misfire::Skip,
        misfire_grace_ms: SEC,
        overlap,
        template: Template::Job(JobSpec::with_shards("ns", 2)),
    }
}

fn every_10s(overlap: Overlap) -> ScheduleSpec {
    spec(Cadence::FixedRate { period_ms: 10 * SEC }, overlap)
}

fn run_job(o: &Outcome) -> JobId {
    match o {
        Outcome::Fired { run: Some(RunTarget::Job(j)), .. } => *j,
        o => panic!("no job run: {o:?}"),
    }
}

#[test]
fn only_the_current_next_fire_time_fires_and_only_once() {
    let mut r = rig();
    let mut s = every_10s(Overlap::Allow);
    s.start_ms = Some(T0 + 60 * SEC);
    let id = r.create(s);
    let first = r.sched(id).next_fire_ms.unwrap();
    assert_eq!(first, T0 + 60 * SEC, "a fixed rate starts at its start time");
    // Not due yet: the log time is before the fire time.
    r.now_ms = first - 1;
    assert!(matches!(r.err(Command::Fire { schedule: id, fire_ms: first }), CommandError::FireNotDue { .. }));
    let o = r.fire_due(id);
    let job = run_job(&o);
    assert_eq!(r.job(job).run_of, Some(RunOrigin::Schedule { schedule: id, fire_ms: first, manual: false }));
    assert_eq!(r.sched(id).next_fire_ms, Some(first + 10 * SEC));
    let jobs_before = r.core.meta.next_job;
    // A second leader proposing the same fire time, late or not, starts nothing.
    for at in [first + SEC, first + 9 * SEC] {
        r.now_ms = at;
        let e = r.err(Command::Fire { schedule: id, fire_ms: first });
        assert!(matches!(e, CommandError::FireNotDue { next_fire_ms: Some(n), .. } if n == first + 10 * SEC), "{e}");
    }
    // A time that is not a fire time at all.
    assert!(matches!(r.err(Command::Fire { schedule: id, fire_ms: first + 5 }), CommandError::FireNotDue { .. }));
    assert_eq!(r.core.meta.next_job, jobs_before, "no job was created by a refused fire");
    assert!(matches!(r.err(Command::Fire { schedule: 99, fire_ms: first }), CommandError::ScheduleNotFound(99)));
    r.assert_reopens();
}

#[test]
fn create_is_idempotent_by_name_and_a_reused_name_is_refused() {
    let mut r = rig();
    let id = r.create(every_10s(Overlap::Skip));
    match r.ok(Command::CreateSchedule(Box::new(every_10s(Overlap::Skip)))) {
        Outcome::ScheduleCreated { schedule, duplicate: true, .. } => assert_eq!(schedule, id),
        o => panic!("{o:?}"),
    }
    let e = r.err(Command::CreateSchedule(Box::new(every_10s(Overlap::Allow))));
    assert!(matches!(e, CommandError::NameTaken { id: i, .. } if i == id), "{e}");
    let mut other = every_10s(Overlap::Allow);
    other.name = "hourly".into();
    assert_ne!(r.create(other), id);
    r.ok(Command::DeleteSchedule { schedule: id });
    assert!(matches!(r.err(Command::DeleteSchedule { schedule: id }), CommandError::ScheduleNotFound(_)));
    assert!(r.core.run_template(&r.kv, TemplateOwner::Schedule(id)).unwrap().is_none(), "template deleted");
    // The name is free again.
    assert!(r.create(every_10s(Overlap::Allow)) > id);
    r.assert_reopens();
}

#[test]
fn overlap_skip_starts_nothing_while_a_run_is_live() {
    let mut r = rig();
    let id = r.create(every_10s(Overlap::Skip));
    let job = run_job(&r.fire_due(id));
    let o = r.fire_due(id);
    assert!(
        matches!(&o, Outcome::Fired { run: None, skipped_reason: Some(w), .. } if w.contains("overlap skip")),
        "{o:?}"
    );
    r.finish(job, true);
    let rec = r.sched(id);
    assert!(rec.live.is_empty());
    assert_eq!(rec.recent.iter().map(|e| e.outcome.name()).collect::<Vec<_>>(), ["succeeded", "skipped"]);
    run_job(&r.fire_due(id));
    r.assert_reopens();
}

#[test]
fn overlap_allow_runs_side_by_side_and_cancel_previous_replaces_the_live_run() {
    let mut r = rig();
    let id = r.create(every_10s(Overlap::Allow));
    let a = run_job(&r.fire_due(id));
    let b = run_job(&r.fire_due(id));
    assert_eq!(r.sched(id).live, vec![RunTarget::Job(a), RunTarget::Job(b)]);

    let mut s = every_10s(Overlap::CancelPrevious);
    s.name = "replace".into();
    let id = r.create(s);
    let a = run_job(&r.fire_due(id));
    let b = run_job(&r.fire_due(id));
    assert_eq!(r.job(a).status(), JobStatus::Cancelled, "the live run was cancelled in the fire's entry");
    assert!(r.job(a).cancel_reason.unwrap().contains("replaced"));
    assert_eq!(r.sched(id).live, vec![RunTarget::Job(b)]);
    assert_eq!(r.sched(id).recent[0].outcome, RunOutcome::Cancelled);
    r.assert_reopens();
}

#[test]
fn overlap_buffer_one_starts_the_buffered_run_in_the_entry_that_ends_the_live_one() {
    let mut r = rig();
    let id = r.create(every_10s(Overlap::BufferOne));
    let a = run_job(&r.fire_due(id));
    let second = r.sched(id).next_fire_ms.unwrap();
    let o = r.fire_due(id);
    assert!(matches!(o, Outcome::Fired { run: None, .. }), "{o:?}");
    assert_eq!(r.sched(id).buffered, Some(second));
    let o = r.fire_due(id);
    assert!(matches!(&o, Outcome::Fired { skipped_reason: Some(w), .. } if w.contains("buffered")), "{o:?}");
    let next_job = r.core.meta.next_job;
    r.finish(a, false);
    let rec = r.sched(id);
    assert_eq!(rec.buffered, None);
    assert_eq!(rec.live, vec![RunTarget::Job(next_job)], "the buffered run started when the first ended");
    assert_eq!(r.job(next_job).run_of, Some(RunOrigin::Schedule { schedule: id, fire_ms: second, manual: false }));
    let outcomes: Vec<_> = rec.recent.iter().map(|e| (e.fire_ms, e.outcome.name())).collect();
    assert_eq!(outcomes[0].1, "failed");
    assert_eq!(outcomes[1].1, "skipped");
    assert_eq!(outcomes[2], (second, "live"));
    r.assert_reopens();
}

#[test]
fn a_fixed_delay_waits_for_its_run_to_end_then_counts_its_delay_from_there() {
    let mut r = rig();
    let id = r.create(spec(Cadence::FixedDelay { delay_ms: 5 * SEC }, Overlap::Skip));
    assert_eq!(r.sched(id).next_fire_ms, Some(T0), "the first run fires at once");
    let job = run_job(&r.fire_due(id));
    assert_eq!(r.sched(id).next_fire_ms, None, "no fire while the run is live");
    r.now_ms += 60 * SEC;
    r.finish(job, true);
    let ended = r.now_ms;
    assert_eq!(r.sched(id).next_fire_ms, Some(ended + 5 * SEC));
    r.assert_reopens();
}

#[test]
fn a_pause_stops_fires_and_fire_all_then_catches_up_one_run_per_missed_time() {
    let mut r = rig();
    let mut s = every_10s(Overlap::Allow);
    s.misfire = Misfire::FireAll { max: 3 };
    let id = r.create(s);
    let first = r.sched(id).next_fire_ms.unwrap();
    r.ok(Command::PauseSchedule { schedule: id, paused: true });
    r.now_ms = first + 55 * SEC;
    let e = r.err(Command::Fire { schedule: id, fire_ms: first });
    assert!(matches!(e, CommandError::FireNotDue { paused: true, .. }), "{e}");
    assert!(r.core.idx.fire_due.is_empty(), "a paused schedule is never due");
    r.ok(Command::PauseSchedule { schedule: id, paused: false });
    // Six times passed (first .. first+50 s); the newest three are caught up.
    let mut fired = Vec::new();
    while r.sched(id).next_fire_ms.is_some_and(|n| n <= r.now_ms) {
        match r.fire_due(id) {
            Outcome::Fired { run: Some(_), fire_ms, .. } => fired.push(fire_ms - first),
            o => panic!("{o:?}"),
        }
    }
    assert_eq!(fired, vec![30 * SEC, 40 * SEC, 50 * SEC]);
    assert_eq!(r.sched(id).fires_skipped, 3);
    assert_eq!(r.sched(id).next_fire_ms, Some(first + 60 * SEC));
    r.assert_reopens();
}

#[test]
fn run_now_obeys_the_overlap_policy_and_leaves_the_cadence_alone() {
    let mut r = rig();
    let id = r.create(every_10s(Overlap::Skip));
    let next = r.sched(id).next_fire_ms;
    let o = r.ok(Command::RunSchedule { schedule: id });
    let job = run_job(&o);
    assert!(matches!(r.job(job).run_of, Some(RunOrigin::Schedule { manual: true, .. })));
    assert_eq!(r.sched(id).next_fire_ms, next);
    let o = r.ok(Command::RunSchedule { schedule: id });
    assert!(matches!(o, Outcome::Fired { run: None, .. }), "{o:?}");
}

#[test]
fn a_workflow_template_runs_as_a_workflow_and_reports_back_when_it_ends() {
    let mut r = rig();
    let mut s = every_10s(Overlap::Skip);
    s.template = Template::Workflow(WorkflowSpec {
        namespace: "ns".into(),
        name: "flow".into(),
        steps: vec![StepSpec {
            name: "a".into(),
            depends_on: vec![],
            trigger: TriggerRule::AllSucceeded,
            kind: StepKind::Job { job: JobSpec::with_shards("ns", 1), reduce: None, choice: false, dynamic: false },
        }],
        labels: BTreeMap::new(),
        idempotency_key: None,
        result_step: None,
    });
    let id = r.create(s);
    let wf = match r.fire_due(id) {
        Outcome::Fired { run: Some(RunTarget::Workflow(w)), .. } => w,
        o => panic!("{o:?}"),
    };
    let rec = r.core.workflow(&r.kv, wf).unwrap().unwrap();
    assert!(matches!(rec.run_of, Some(RunOrigin::Schedule { schedule, .. }) if schedule == id));
    let job = rec.steps[0].map_job.unwrap();
    r.finish(job, true);
    assert!(r.sched(id).live.is_empty());
    assert_eq!(r.sched(id).recent[0].outcome, RunOutcome::Succeeded);
    r.assert_reopens();
}

fn trigger(name: &str, filter: &[(&str, &str)], debounce_ms: Option<u64>, key: &str) -> TriggerSpec {
    TriggerSpec {
        namespace: "ns".into(),
        name: name.into(),
        topic: "uploads".into(),
        filter: filter.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
        template: Template::Job(JobSpec::with_shards("ns", 2)),
        debounce_ms,
        debounce_key: key.into(),
    }
}

fn event(id: &str, attrs: &[(&str, &str)]) -> EventSpec {
    EventSpec {
        namespace: "ns".into(),
        topic: "uploads".into(),
        event_id: id.into(),
        payload: ByteBuf::from(format!("file-{id}").into_bytes()),
        attributes: attrs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
    }
}

fn published(o: Outcome) -> (Vec<EventRun>, u32, bool) {
    match o {
        Outcome::EventPublished { runs, debounced, duplicate, .. } => (runs, debounced, duplicate),
        o => panic!("{o:?}"),
    }
}

#[test]
fn an_event_starts_one_run_per_matching_trigger_with_its_payload_and_only_once() {
    let mut r = rig();
    let raw = match r.ok(Command::CreateTrigger(Box::new(trigger("raw", &[("bucket", "raw")], None, "")))) {
        Outcome::TriggerCreated { trigger, duplicate: false } => trigger,
        o => panic!("{o:?}"),
    };
    r.ok(Command::CreateTrigger(Box::new(trigger("clean", &[("bucket", "clean")], None, ""))));
    let (runs, _, dup) = published(r.ok(Command::PublishEvent(event("e1", &[("bucket", "raw")]))));
    assert!(!dup);
    assert_eq!(runs.len(), 1);
    assert_eq!(runs[0].trigger, raw);
    let Some(RunTarget::Job(job)) = runs[0].run else { panic!("{runs:?}") };
    assert_eq!(r.job(job).run_of, Some(RunOrigin::Event { trigger: raw, event_id: "e1".into() }));
    for shard in 0..2 {
        let p: Option<ByteBuf> = load(&r.kv, &keys::payload(TaskKey::new(job, shard))).unwrap();
        assert_eq!(p.unwrap().as_ref(), b"file-e1", "the event's payload reaches every empty shard");
    }
    // The same event again: nothing new. Other content under the same id: refused.
    let next_job = r.core.meta.next_job;
    let (runs, _, dup) = published(r.ok(Command::PublishEvent(event("e1", &[("bucket", "raw")]))));
    assert!(dup && runs.is_empty());
    assert!(matches!(
        r.err(Command::PublishEvent(event("e1", &[("bucket", "clean")]))),
        CommandError::IdempotencyConflict { .. }
    ));
    assert_eq!(r.core.meta.next_job, next_job);
    // No trigger matches: accepted, no run.
    let (runs, _, _) = published(r.ok(Command::PublishEvent(event("e2", &[("bucket", "other")]))));
    assert!(runs.is_empty());
    r.assert_reopens();
}

#[test]
fn debounce_runs_once_per_key_per_window() {
    let mut r = rig();
    r.ok(Command::CreateTrigger(Box::new(trigger("t", &[], Some(10 * SEC), "user"))));
    let runs = |r: &mut Rig, id: &str, user: &str| published(r.ok(Command::PublishEvent(event(id, &[("user", user)]))));
    assert_eq!(runs(&mut r, "1", "ann").0.len(), 1);
    assert_eq!(runs(&mut r, "2", "bob").0.len(), 1, "another key runs");
    let (v, debounced, _) = runs(&mut r, "3", "ann");
    assert!(v.is_empty());
    assert_eq!(debounced, 1);
    r.now_ms += 10 * SEC;
    assert_eq!(runs(&mut r, "4", "ann").0.len(), 1, "the window has passed");
    r.assert_reopens();
}

#[test]
fn trigger_limits_and_deletion() {
    let mut r = rig();
    for i in 0..MAX_TRIGGERS_PER_TOPIC_FOR_TEST {
        r.ok(Command::CreateTrigger(Box::new(trigger(&format!("t{i}"), &[], None, ""))));
    }
    let e = r.err(Command::CreateTrigger(Box::new(trigger("one-too-many", &[], None, ""))));
    assert!(matches!(e, CommandError::LimitReached { .. }), "{e}");
    r.ok(Command::DeleteTrigger { trigger: 1 });
    assert!(matches!(r.err(Command::DeleteTrigger { trigger: 1 }), CommandError::TriggerNotFound(1)));
    r.ok(Command::CreateTrigger(Box::new(trigger("one-too-many", &[], None, ""))));
    r.assert_reopens();
}

const MAX_TRIGGERS_PER_TOPIC_FOR_TEST: usize = baton_raft_store::limits::MAX_TRIGGERS_PER_TOPIC;

#[test]
fn a_workflow_trigger_hands_the_event_payload_to_its_first_steps() {
    let mut r = rig();
    let step = |name: &str, deps: &[&str]| StepSpec {
        name: name.into(),
        depends_on: deps.iter().map(|d| d.to_string()).collect(),
        trigger: TriggerRule::AllSucceeded,
        kind: StepKind::Job { job: JobSpec::with_shards("ns", 1), reduce: None, choice: false, dynamic: false },
    };
    let mut t = trigger("flow", &[], None, "");
    t.template = Template::Workflow(WorkflowSpec {
        namespace: "ns".into(),
        name: "flow".into(),
        steps: vec![step("first", &[]), step("then", &["first"])],
        labels: BTreeMap::new(),
        idempotency_key: None,
        result_step: None,
    });
    r.ok(Command::CreateTrigger(Box::new(t)));
    let (runs, _, _) = published(r.ok(Command::PublishEvent(event("e1", &[]))));
    let Some(RunTarget::Workflow(wf)) = runs[0].run else { panic!("{runs:?}") };
    let rec = r.core.workflow(&r.kv, wf).unwrap().unwrap();
    assert!(matches!(rec.run_of, Some(RunOrigin::Event { ref event_id, .. }) if event_id == "e1"));
    let first = rec.steps[0].map_job.unwrap();
    let p: Option<ByteBuf> = load(&r.kv, &keys::payload(TaskKey::new(first, 0))).unwrap();
    assert_eq!(p.unwrap().as_ref(), b"file-e1");
    r.assert_reopens();
}
