use baton_client::ScheduleBuilder;
use baton_raft_store::limits::MAX_ATTEMPTS_DEFAULT;
use baton_raft_store::{JobSpec, TriggerRule};
use std::time::Duration;

use super::*;

fn shards(n: u32) -> proto::JobSpec {
    proto::JobSpec { shards: n, ..Default::default() }
}

fn field_of(r: Result<impl std::fmt::Debug, ApiError>) -> String {
    match r {
        Err(ApiError::Invalid { field, .. }) => field,
        other => panic!("expected an invalid argument, got {other:?}"),
    }
}

#[test]
fn a_built_schedule_converts_with_the_server_defaults() {
    let spec = ScheduleBuilder::every("ns", "tick", Duration::from_secs(2)).job(shards(3)).build();
    let s = schedule_spec(Some(spec)).unwrap();
    assert_eq!(s.cadence, Cadence::FixedRate { period_ms: 2000 });
    assert_eq!((s.misfire, s.overlap), (Misfire::Skip, Overlap::Skip));
    assert_eq!(s.misfire_grace_ms, MISFIRE_GRACE_MS_DEFAULT);
    assert_eq!((s.start_ms, s.end_ms, s.jitter_ms), (None, None, 0));
    match &s.template {
        Template::Job(j) => {
            assert_eq!(j.namespace, "ns", "an empty template namespace takes the schedule's");
            assert_eq!(j.payloads.len(), 3);
            assert_eq!(j.max_attempts, MAX_ATTEMPTS_DEFAULT);
            assert!(j.idempotency_key.is_none() && j.not_before_ms.is_none());
        }
        t => panic!("{t:?}"),
    }
    let spec = ScheduleBuilder::cron("ns", "c", "*/1 * * * * *", "Europe/Berlin")
        .job(shards(1))
        .misfire_fire_all(0)
        .misfire_grace(Duration::ZERO)
        .overlap(proto::OverlapPolicy::CancelPrevious)
        .build();
    let s = schedule_spec(Some(spec)).unwrap();
    assert_eq!(s.misfire, Misfire::FireAll { max: MAX_FIRE_ALL_CATCH_UP }, "0 means the largest bound");
    assert_eq!(s.misfire_grace_ms, 0, "an explicit zero grace is kept");
    assert_eq!(s.overlap, Overlap::CancelPrevious);
}

#[test]
fn a_workflow_template_converts_and_is_validated() {
    let wf = baton_client::WorkflowBuilder::new("", "wf")
        .step(baton_client::Step::job("a", shards(1)))
        .step(baton_client::Step::job("b", shards(1)).depends_on(["a"]).trigger(proto::TriggerRule::AllDone))
        .build();
    let s =
        schedule_spec(Some(ScheduleBuilder::every("ns", "w", Duration::from_secs(5)).workflow(wf).build())).unwrap();
    match s.template {
        Template::Workflow(w) => {
            assert_eq!(w.namespace, "ns");
            assert_eq!(w.steps[1].trigger, TriggerRule::AllDone);
        }
        t => panic!("{t:?}"),
    }
    let cycle = baton_client::WorkflowBuilder::new("ns", "wf")
        .step(baton_client::Step::job("a", shards(1)).depends_on(["b"]))
        .step(baton_client::Step::job("b", shards(1)).depends_on(["a"]))
        .build();
    let spec = ScheduleBuilder::every("ns", "w", Duration::from_secs(5)).workflow(cycle).build();
    assert_eq!(field_of(schedule_spec(Some(spec))), "steps");
}

#[test]
fn bad_schedules_are_refused_naming_the_field() {
    let every = |ms: u64| ScheduleBuilder::every("ns", "s", Duration::from_millis(ms)).job(shards(1));
    assert_eq!(field_of(schedule_spec(None)), "spec");
    assert_eq!(
        field_of(schedule_spec(Some(ScheduleBuilder::every("ns", "s", Duration::from_secs(1)).build()))),
        "template"
    );
    let mut no_cadence = every(1000).build();
    no_cadence.cadence = None;
    assert_eq!(field_of(schedule_spec(Some(no_cadence))), "cadence");
    assert_eq!(field_of(schedule_spec(Some(every(10).build()))), "cadence.every_ms");
    let cron = |p: &str, tz: &str| ScheduleBuilder::cron("ns", "s", p, tz).job(shards(1)).build();
    assert_eq!(field_of(schedule_spec(Some(cron("61 * * * *", "")))), "cadence.cron");
    assert_eq!(field_of(schedule_spec(Some(cron("* * * * *", "Mars/Olympus")))), "cadence.time_zone");
    let mut at0 = every(1000).build();
    at0.cadence = Some(proto::Cadence { kind: Some(Kind::AtMs(0)) });
    assert_eq!(field_of(schedule_spec(Some(at0))), "cadence.at_ms");
    let mut s = every(1000).build();
    s.misfire_max = 3;
    assert_eq!(field_of(schedule_spec(Some(s))), "misfire_max", "a bound without FIRE_ALL");
    let mut s = every(1000).build();
    s.overlap = 42;
    assert_eq!(field_of(schedule_spec(Some(s))), "overlap");
    let mut s = every(1000).build();
    s.misfire = 9;
    assert_eq!(field_of(schedule_spec(Some(s))), "misfire");
    let keyed = ScheduleBuilder::every("ns", "s", Duration::from_secs(1))
        .job(proto::JobSpec { idempotency_key: "k".into(), ..shards(1) })
        .build();
    assert_eq!(field_of(schedule_spec(Some(keyed))), "template.idempotency_key");
    let other_ns = ScheduleBuilder::every("ns", "s", Duration::from_secs(1))
        .job(proto::JobSpec { namespace: "other".into(), ..shards(1) })
        .build();
    assert_eq!(field_of(schedule_spec(Some(other_ns))), "template.namespace");
    let no_shards = ScheduleBuilder::every("ns", "s", Duration::from_secs(1)).job(shards(0)).build();
    assert_eq!(field_of(schedule_spec(Some(no_shards))), "template.shards");
}

#[test]
fn triggers_and_events_convert_and_are_validated() {
    let t = proto::TriggerSpec {
        namespace: "ns".into(),
        name: "t".into(),
        topic: "orders".into(),
        filter: [("region".to_string(), "eu".to_string())].into(),
        template: Some(proto::trigger_spec::Template::Job(shards(1))),
        debounce_ms: 0,
        debounce_key: String::new(),
    };
    let s = trigger_spec(Some(t.clone())).unwrap();
    assert_eq!(s.template.namespace(), "ns");
    assert_eq!(s.debounce_ms, None);
    assert_eq!(s.filter.get("region").map(String::as_str), Some("eu"));
    assert_eq!(field_of(trigger_spec(Some(proto::TriggerSpec { template: None, ..t.clone() }))), "job");
    assert_eq!(field_of(trigger_spec(Some(proto::TriggerSpec { topic: String::new(), ..t.clone() }))), "topic");
    let key_alone = proto::TriggerSpec { debounce_key: "customer".into(), ..t.clone() };
    assert_eq!(field_of(trigger_spec(Some(key_alone))), "debounce_key");

    let ev = proto::PublishEventRequest {
        namespace: "ns".into(),
        topic: "orders".into(),
        event_id: "e-1".into(),
        payload: b"hi".to_vec(),
        attributes: [("region".to_string(), "eu".to_string())].into(),
    };
    let e = event_spec(ev.clone()).unwrap();
    assert_eq!((e.event_id.as_str(), e.payload.as_slice()), ("e-1", &b"hi"[..]));
    assert_eq!(field_of(event_spec(proto::PublishEventRequest { event_id: String::new(), ..ev.clone() })), "event_id");
    assert_eq!(field_of(event_spec(proto::PublishEventRequest { namespace: String::new(), ..ev })), "namespace");
}

fn record() -> ScheduleRecord {
    let spec = ScheduleSpec {
        namespace: "ns".into(),
        name: "s".into(),
        cadence: Cadence::FixedRate { period_ms: 1000 },
        start_ms: None,
        end_ms: Some(10_000),
        jitter_ms: 0,
        misfire: Misfire::FireAll { max: 4 },
        misfire_grace_ms: 250,
        overlap: Overlap::BufferOne,
        template: Template::Job(JobSpec::with_shards("ns", 2)),
    };
    let recent = (0..8u64)
        .map(|i| RunEntry {
            fire_ms: i * 1000,
            manual: i == 7,
            target: (i != 3).then_some(RunTarget::Job(100 + i)),
            outcome: match i {
                3 => RunOutcome::Skipped("a run is live (overlap skip)".into()),
                7 => RunOutcome::Live,
                _ => RunOutcome::Succeeded,
            },
            at_ms: i * 1000 + 5,
        })
        .collect();
    ScheduleRecord {
        id: 9,
        rule: spec.rule(),
        spec_hash: [0; 32],
        created_ms: 1,
        updated_ms: 2,
        anchor_ms: 0,
        paused: false,
        next_fire_ms: Some(7000),
        live: vec![RunTarget::Job(107)],
        buffered: Some(6500),
        recent,
        runs_started: 7,
        fires_skipped: 1,
    }
}

#[test]
fn a_schedules_view_has_its_rule_next_fires_and_runs_newest_first() {
    let v = schedule(&record(), 5);
    assert_eq!(v.cadence.unwrap().kind, Some(Kind::EveryMs(1000)));
    assert_eq!((v.misfire, v.misfire_max), (proto::MisfirePolicy::FireAll as i32, 4));
    assert_eq!((v.misfire_grace_ms, v.overlap), (250, proto::OverlapPolicy::BufferOne as i32));
    assert_eq!((v.template_kind.as_str(), v.template_shards, v.template_steps), ("job", 2, 0));
    assert_eq!(v.upcoming_fire_ms, vec![7000, 8000, 9000, 10_000], "the window ends at 10 s");
    assert_eq!(v.recent_runs.len(), 5);
    assert_eq!(v.recent_runs[0].fire_ms, 7000, "newest first");
    assert!(v.recent_runs[0].manual);
    let skipped = v.recent_runs.iter().find(|r| r.fire_ms == 3000).unwrap();
    assert_eq!(skipped.outcome, proto::RunOutcome::Skipped as i32);
    assert_eq!((skipped.job_id, skipped.reason.as_str()), (0, "a run is live (overlap skip)"));
    assert_eq!(v.live_runs.len(), 1);
    assert_eq!((v.live_runs[0].job_id, v.live_runs[0].fire_ms), (107, 7000));
    assert_eq!((v.buffered_fire_ms, v.end_ms, v.start_ms), (6500, 10_000, 0));
    assert_eq!(schedule(&record(), 50).recent_runs.len(), 8);

    let o = run_origin(&RunOrigin::Schedule { schedule: 9, fire_ms: 7000, manual: true });
    assert_eq!(
        o.source,
        Some(proto::run_origin::Source::Schedule(proto::ScheduleFire { schedule_id: 9, fire_ms: 7000, manual: true }))
    );
    let o = run_origin(&RunOrigin::Event { trigger: 2, event_id: "e".into() });
    assert_eq!(
        o.source,
        Some(proto::run_origin::Source::Event(proto::EventOrigin { trigger_id: 2, event_id: "e".into() }))
    );
}
