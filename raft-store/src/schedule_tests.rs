use super::*;

const SEC: u64 = 1000;
const MIN: u64 = 60 * SEC;
const HOUR: u64 = 60 * MIN;

/// 2026-03-01T00:00:00Z.
const MAR_1_2026: u64 = 1_772_323_200_000;

fn job() -> JobSpec {
    JobSpec::with_shards("ns", 1)
}

fn spec(cadence: Cadence) -> ScheduleSpec {
    ScheduleSpec {
        namespace: "ns".into(),
        name: "s".into(),
        cadence,
        start_ms: None,
        end_ms: None,
        jitter_ms: 0,
        misfire: Misfire::Skip,
        misfire_grace_ms: MISFIRE_GRACE_MS_DEFAULT,
        overlap: Overlap::Skip,
        template: Template::Job(job()),
    }
}

fn cron(pattern: &str, tz: &str) -> Cadence {
    Cadence::Cron { pattern: pattern.into(), time_zone: tz.into() }
}

fn field_of(e: CommandError) -> String {
    match e {
        CommandError::Invalid { field, .. } => field,
        other => panic!("not an invalid-argument error: {other:?}"),
    }
}

#[test]
fn five_and_six_field_patterns_parse_and_others_are_refused_by_name() {
    assert!(spec(cron("*/5 * * * *", "Europe/Berlin")).validate().is_ok());
    assert!(spec(cron("*/2 * * * * *", "")).validate().is_ok());
    assert!(spec(cron("@daily", "UTC")).validate().is_ok());
    for bad in ["* * * *", "0 0 0 1 1 * 2030", "61 * * * *", "not cron at all", ""] {
        let e = spec(cron(bad, "UTC")).validate().unwrap_err();
        assert_eq!(field_of(e), "cadence.cron", "{bad:?}");
    }
    let e = spec(cron("* * * * *", "Mars/Olympus")).validate().unwrap_err();
    assert_eq!(field_of(e.clone()), "cadence.time_zone");
    assert!(e.to_string().contains("Mars/Olympus"), "{e}");
}

#[test]
fn a_pattern_that_never_fires_is_refused() {
    let e = spec(cron("0 0 30 2 *", "UTC")).validate().unwrap_err();
    assert!(e.to_string().contains("never fires"), "{e}");
}

#[test]
fn bounds_are_named_with_their_units() {
    let e = spec(Cadence::FixedRate { period_ms: 999 }).validate().unwrap_err();
    assert!(e.to_string().contains("1000..="), "{e}");
    let mut s = spec(Cadence::FixedRate { period_ms: SEC });
    s.jitter_ms = MAX_SCHEDULE_JITTER_MS + 1;
    assert_eq!(field_of(s.validate().unwrap_err()), "jitter_ms");
    let mut s = spec(Cadence::FixedRate { period_ms: SEC });
    s.misfire = Misfire::FireAll { max: MAX_FIRE_ALL_CATCH_UP + 1 };
    assert_eq!(field_of(s.validate().unwrap_err()), "misfire.fire_all");
    let mut s = spec(Cadence::FixedRate { period_ms: SEC });
    s.start_ms = Some(10);
    s.end_ms = Some(5);
    assert_eq!(field_of(s.validate().unwrap_err()), "end_ms");
}

#[test]
fn a_template_may_not_carry_its_own_key_time_or_namespace() {
    let mut s = spec(Cadence::FixedRate { period_ms: SEC });
    let mut j = job();
    j.idempotency_key = Some("k".into());
    s.template = Template::Job(j);
    assert_eq!(field_of(s.validate().unwrap_err()), "template.idempotency_key");
    let mut j = job();
    j.not_before_ms = Some(1);
    s.template = Template::Job(j);
    assert_eq!(field_of(s.validate().unwrap_err()), "template.not_before_ms");
    s.template = Template::Job(JobSpec::with_shards("other", 1));
    assert_eq!(field_of(s.validate().unwrap_err()), "template.namespace");
}

#[test]
fn a_fixed_rate_counts_periods_from_its_anchor() {
    let r = spec(Cadence::FixedRate { period_ms: 10 * SEC }).rule();
    let anchor = 1_000_000;
    assert_eq!(r.first_at_or_after(anchor, anchor), Some(anchor));
    assert_eq!(r.first_at_or_after(anchor, anchor + 1), Some(anchor + 10 * SEC));
    assert_eq!(r.next_after(anchor, anchor), Some(anchor + 10 * SEC));
    assert_eq!(r.next_after(anchor, anchor + 10 * SEC), Some(anchor + 20 * SEC));
    assert_eq!(r.upcoming(anchor, Some(anchor), 3), vec![anchor, anchor + 10 * SEC, anchor + 20 * SEC]);
}

#[test]
fn start_and_end_bound_every_fire() {
    let mut s = spec(Cadence::FixedRate { period_ms: MIN });
    s.start_ms = Some(MAR_1_2026);
    s.end_ms = Some(MAR_1_2026 + 2 * MIN);
    let r = s.rule();
    assert_eq!(r.first_at_or_after(MAR_1_2026, MAR_1_2026 - HOUR), Some(MAR_1_2026));
    assert_eq!(r.upcoming(MAR_1_2026, Some(MAR_1_2026), 10), vec![MAR_1_2026, MAR_1_2026 + MIN, MAR_1_2026 + 2 * MIN]);
    assert_eq!(r.first_at_or_after(MAR_1_2026, MAR_1_2026 + 3 * MIN), None);
    let mut s = spec(cron("0 * * * *", "UTC"));
    s.start_ms = Some(MAR_1_2026 + 1);
    assert_eq!(s.rule().first_at_or_after(0, 0), Some(MAR_1_2026 + HOUR));
}

#[test]
fn cron_reads_wall_time_in_its_zone() {
    // 09:30 every day in Berlin is 08:30 UTC in winter (CET, UTC+1).
    let r = spec(cron("30 9 * * *", "Europe/Berlin")).rule();
    assert_eq!(r.first_at_or_after(0, MAR_1_2026), Some(MAR_1_2026 + 8 * HOUR + 30 * MIN));
    // Six fields: seconds first.
    let r = spec(cron("*/15 * * * * *", "UTC")).rule();
    assert_eq!(r.next_after(0, MAR_1_2026), Some(MAR_1_2026 + 15 * SEC));
    assert_eq!(r.first_at_or_after(0, MAR_1_2026), Some(MAR_1_2026));
}

/// Europe/Berlin moves from 02:00 CET to 03:00 CEST on 2026-03-29 and back
/// from 03:00 CEST to 02:00 CET on 2026-10-25. A daily 02:30 does not exist
/// on the first day: it fires at 03:00 CEST, the first instant after the
/// gap. On the second day 02:30 happens twice: it fires once, at the first
/// (CEST). docs/schedules.md states both.
#[test]
fn daylight_saving_moves_a_missing_time_past_the_gap_and_fires_a_repeated_time_once() {
    let r = spec(cron("30 2 * * *", "Europe/Berlin")).rule();
    let utc = |d: &str| chrono::DateTime::parse_from_rfc3339(d).unwrap().timestamp_millis() as u64;
    let mar_28 = utc("2026-03-28T00:00:00Z");
    let first = r.first_at_or_after(0, mar_28).unwrap();
    assert_eq!(first, utc("2026-03-28T01:30:00Z"), "02:30 CET");
    let second = r.next_after(0, first).unwrap();
    assert_eq!(second, utc("2026-03-29T01:00:00Z"), "03:00 CEST: 02:30 does not exist that night");
    assert_eq!(r.next_after(0, second), Some(utc("2026-03-30T00:30:00Z")), "02:30 CEST");
    let oct_24 = utc("2026-10-24T00:00:00Z");
    let mut fires = vec![r.first_at_or_after(0, oct_24).unwrap()];
    for _ in 0..3 {
        fires.push(r.next_after(0, *fires.last().unwrap()).unwrap());
    }
    let want: Vec<u64> =
        ["2026-10-24T00:30:00Z", "2026-10-25T00:30:00Z", "2026-10-26T01:30:00Z", "2026-10-27T01:30:00Z"]
            .iter()
            .map(|d| utc(d))
            .collect();
    assert_eq!(fires, want, "the repeated 02:30 of 2026-10-25 fires once, at its first (CEST) instant");
}

#[test]
fn jitter_is_a_pure_function_of_the_schedule_and_the_fire_time_below_its_bound() {
    let mut s = spec(Cadence::FixedRate { period_ms: MIN });
    s.jitter_ms = 10 * SEC;
    let r = s.rule();
    let offsets: Vec<u64> = (0..100).map(|i| r.jitter_of(7, i * MIN)).collect();
    assert!(offsets.iter().all(|o| *o < 10 * SEC));
    assert_eq!(offsets, (0..100).map(|i| r.jitter_of(7, i * MIN)).collect::<Vec<_>>());
    assert!(offsets.iter().collect::<std::collections::BTreeSet<_>>().len() > 50, "spread out");
    assert_ne!(r.jitter_of(7, 0), r.jitter_of(8, 0));
    assert_eq!(spec(Cadence::FixedRate { period_ms: MIN }).rule().jitter_of(7, 5), 0);
}

fn rate_rule(misfire: Misfire) -> ScheduleRule {
    let mut s = spec(Cadence::FixedRate { period_ms: 10 * SEC });
    s.misfire = misfire;
    s.misfire_grace_ms = SEC;
    s.rule()
}

#[test]
fn an_on_time_fire_runs_for_its_own_time_whatever_the_policy() {
    for m in [Misfire::Skip, Misfire::FireOnce, Misfire::FireAll { max: 5 }] {
        let p = rate_rule(m).plan_fire(1, 0, 100 * SEC, 100 * SEC + 900);
        assert_eq!(p, FirePlan { run_for: Some(100 * SEC), skipped: 0, next_ms: Some(110 * SEC) }, "{m:?}");
    }
}

/// A schedule every 10 s, 35 s late (fires at 100, 110, 120 and 130 were due).
#[test]
fn missed_fire_times_follow_the_misfire_policy() {
    let now = 135 * SEC;
    let skip = rate_rule(Misfire::Skip).plan_fire(1, 0, 100 * SEC, now);
    assert_eq!(skip, FirePlan { run_for: None, skipped: 4, next_ms: Some(140 * SEC) });
    // The newest due time is still on time: it runs, the older ones are skipped.
    let skip = rate_rule(Misfire::Skip).plan_fire(1, 0, 100 * SEC, 130 * SEC + 500);
    assert_eq!(skip, FirePlan { run_for: Some(130 * SEC), skipped: 3, next_ms: Some(140 * SEC) });
    let once = rate_rule(Misfire::FireOnce).plan_fire(1, 0, 100 * SEC, now);
    assert_eq!(once, FirePlan { run_for: Some(130 * SEC), skipped: 3, next_ms: Some(140 * SEC) });
    // Fire-all runs the oldest first, one per entry, each entry leaving the next due.
    let all = rate_rule(Misfire::FireAll { max: 10 }).plan_fire(1, 0, 100 * SEC, now);
    assert_eq!(all, FirePlan { run_for: Some(100 * SEC), skipped: 0, next_ms: Some(110 * SEC) });
    // Bounded: only the newest 2 are caught up.
    let all = rate_rule(Misfire::FireAll { max: 2 }).plan_fire(1, 0, 100 * SEC, now);
    assert_eq!(all, FirePlan { run_for: Some(120 * SEC), skipped: 2, next_ms: Some(130 * SEC) });
}

#[test]
fn fire_all_catches_up_every_missed_time_exactly_once_in_order() {
    let r = rate_rule(Misfire::FireAll { max: 100 });
    let now = 1000 * SEC;
    let mut next = Some(500 * SEC);
    let mut ran = Vec::new();
    while let Some(f) = next.filter(|f| *f <= now) {
        let p = r.plan_fire(1, 0, f, now);
        ran.extend(p.run_for);
        next = p.next_ms;
    }
    // 500..=1000 s is 51 times; the newest 100 are all of them.
    assert_eq!(ran, (50..=100).map(|k| k * 10 * SEC).collect::<Vec<_>>());
}

#[test]
fn cron_misfires_step_back_through_the_pattern() {
    let mut s = spec(cron("* * * * *", "UTC"));
    s.misfire = Misfire::FireAll { max: 3 };
    s.misfire_grace_ms = SEC;
    let r = s.rule();
    // Ten minutes late: the newest three minutes are caught up, from 7 on.
    let p = r.plan_fire(1, 0, MAR_1_2026, MAR_1_2026 + 9 * MIN + 30 * SEC);
    assert_eq!(p.run_for, Some(MAR_1_2026 + 7 * MIN));
    assert_eq!(p.skipped, 7);
    assert_eq!(p.next_ms, Some(MAR_1_2026 + 8 * MIN));
    s.misfire = Misfire::FireOnce;
    let p = s.rule().plan_fire(1, 0, MAR_1_2026, MAR_1_2026 + 9 * MIN + 30 * SEC);
    assert_eq!(p, FirePlan { run_for: Some(MAR_1_2026 + 9 * MIN), skipped: 9, next_ms: Some(MAR_1_2026 + 10 * MIN) });
}

#[test]
fn a_missed_one_shot_fires_unless_the_policy_skips() {
    let mut s = spec(Cadence::Once { at_ms: 100 * SEC });
    s.misfire_grace_ms = SEC;
    assert_eq!(s.rule().plan_fire(1, 0, 100 * SEC, HOUR), FirePlan { run_for: None, skipped: 1, next_ms: None });
    s.misfire = Misfire::FireOnce;
    assert_eq!(
        s.rule().plan_fire(1, 0, 100 * SEC, HOUR),
        FirePlan { run_for: Some(100 * SEC), skipped: 0, next_ms: None }
    );
    assert_eq!(s.rule().first_at_or_after(0, HOUR), Some(100 * SEC), "a past one-shot is due at once");
}

#[test]
fn triggers_match_namespace_topic_and_every_filter_pair() {
    let t = TriggerSpec {
        namespace: "ns".into(),
        name: "t".into(),
        topic: "uploads".into(),
        filter: BTreeMap::from([("bucket".to_string(), "raw".to_string())]),
        template: Template::Job(job()),
        debounce_ms: None,
        debounce_key: String::new(),
    };
    assert!(t.validate().is_ok());
    let mut ev = EventSpec {
        namespace: "ns".into(),
        topic: "uploads".into(),
        event_id: "e1".into(),
        payload: ByteBuf::from(b"x".to_vec()),
        attributes: BTreeMap::from([("bucket".to_string(), "raw".to_string()), ("k".to_string(), "v".to_string())]),
    };
    assert!(ev.validate().is_ok());
    assert!(t.matches(&ev));
    ev.attributes.insert("bucket".into(), "clean".into());
    assert!(!t.matches(&ev));
    ev.attributes.insert("bucket".into(), "raw".into());
    ev.topic = "other".into();
    assert!(!t.matches(&ev));
    let mut bad = t.clone();
    bad.debounce_key = "k".into();
    assert_eq!(field_of(bad.validate().unwrap_err()), "debounce_key");
    ev.event_id = String::new();
    assert_eq!(field_of(ev.validate().unwrap_err()), "event_id");
}
