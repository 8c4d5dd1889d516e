use clap::{FromArgMatches, Parser};

use super::*;

/// The `baton schedule|trigger|event|job submit` flags as clap parses them.
#[derive(Parser, Debug)]
struct Cli {
    #[command(subcommand)]
    cmd: Top,
}

#[derive(clap::Subcommand, Debug)]
enum Top {
    #[command(subcommand)]
    Schedule(ScheduleCmd),
    #[command(subcommand)]
    Trigger(crate::cli_trigger::TriggerCmd),
    #[command(subcommand)]
    Event(crate::cli_event::EventCmd),
    Submit(crate::cli::SubmitArgs),
}

fn parse(args: &[&str]) -> Result<Top, String> {
    let m = <Cli as clap::CommandFactory>::command()
        .try_get_matches_from(std::iter::once("baton").chain(args.iter().copied()))
        .map_err(|e| e.to_string())?;
    Cli::from_arg_matches(&m).map(|c| c.cmd).map_err(|e| e.to_string())
}

fn create(args: &[&str]) -> CreateArgs {
    let mut all = vec!["schedule", "create"];
    all.extend_from_slice(args);
    match parse(&all) {
        Ok(Top::Schedule(ScheduleCmd::Create(a))) => a,
        other => panic!("{other:?}"),
    }
}

fn job(ns: &str) -> proto::schedule_spec::Template {
    proto::schedule_spec::Template::Job(proto::JobSpec { namespace: ns.into(), shards: 2, ..Default::default() })
}

fn invalid(r: Result<proto::ScheduleSpec, Error>) -> String {
    match r {
        Err(Error::InvalidArgument(m)) => m,
        other => panic!("expected an invalid argument, got {other:?}"),
    }
}

#[test]
fn cron_flags_become_the_spec_with_defaults_left_to_the_server() {
    let a = create(&["--name", "n", "--cron", "*/5 * * * *", "--tz", "Europe/Berlin", "-f", "job.toml"]);
    let s = spec_from(&a, job("")).unwrap();
    assert_eq!(s.namespace, "default");
    assert_eq!(s.name, "n");
    assert_eq!(
        s.cadence.unwrap().kind,
        Some(Kind::Cron(proto::CronCadence { pattern: "*/5 * * * *".into(), time_zone: "Europe/Berlin".into() }))
    );
    assert_eq!((s.start_ms, s.end_ms, s.jitter_ms, s.misfire_max), (0, 0, 0, 0));
    assert_eq!(s.misfire_grace_ms, None, "the server's default grace");
    assert_eq!(s.misfire, proto::MisfirePolicy::Skip as i32);
    assert_eq!(s.overlap, proto::OverlapPolicy::Skip as i32);
    assert!(matches!(s.template, Some(proto::schedule_spec::Template::Job(_))));
}

#[test]
fn every_flag_is_parsed_into_its_field() {
    let a = create(&[
        "--name",
        "n",
        "--every",
        "90s",
        "--workflow",
        "flow.toml",
        "--start",
        "2026-12-01T09:00:00Z",
        "--end",
        "1796119200000",
        "--jitter",
        "2s",
        "--misfire",
        "fire-all:7",
        "--misfire-grace",
        "1m",
        "--overlap",
        "buffer-one",
        "--namespace",
        "ops",
    ]);
    let wf = proto::schedule_spec::Template::Workflow(proto::WorkflowSpec::default());
    let s = spec_from(&a, wf).unwrap();
    assert_eq!(s.namespace, "ops");
    assert_eq!(s.cadence.unwrap().kind, Some(Kind::EveryMs(90_000)));
    assert_eq!((s.start_ms, s.end_ms), (1_796_115_600_000, 1_796_119_200_000));
    assert_eq!(s.jitter_ms, 2000);
    assert_eq!((s.misfire, s.misfire_max), (proto::MisfirePolicy::FireAll as i32, 7));
    assert_eq!(s.misfire_grace_ms, Some(60_000));
    assert_eq!(s.overlap, proto::OverlapPolicy::BufferOne as i32);

    let s = spec_from(&create(&["--name", "n", "--delay", "5m", "-f", "j"]), job("")).unwrap();
    assert_eq!(s.cadence.unwrap().kind, Some(Kind::DelayMs(300_000)));
    let s = spec_from(&create(&["--name", "n", "--at", "2026-12-01T10:00:00+01:00", "-f", "j"]), job("")).unwrap();
    assert_eq!(s.cadence.unwrap().kind, Some(Kind::AtMs(1_796_115_600_000)));
}

#[test]
fn policies_parse_and_bad_values_are_named() {
    assert_eq!(parse_misfire("skip").unwrap(), (proto::MisfirePolicy::Skip, 0));
    assert_eq!(parse_misfire("fire-once").unwrap(), (proto::MisfirePolicy::FireOnce, 0));
    assert_eq!(parse_misfire("fire-all").unwrap(), (proto::MisfirePolicy::FireAll, 0));
    assert_eq!(parse_misfire("fire-all:3").unwrap(), (proto::MisfirePolicy::FireAll, 3));
    for bad in ["fire-all:x", "fire-once:2", "always", ""] {
        assert!(parse_misfire(bad).unwrap_err().to_string().contains("--misfire"), "{bad}");
    }
    assert_eq!(parse_overlap("allow").unwrap(), proto::OverlapPolicy::Allow);
    assert_eq!(parse_overlap("cancel-previous").unwrap(), proto::OverlapPolicy::CancelPrevious);
    assert!(parse_overlap("queue").unwrap_err().to_string().contains("--overlap \"queue\""));
    let m = invalid(spec_from(&create(&["--name", "n", "--every", "often", "-f", "j"]), job("")));
    assert!(m.starts_with("--every \"often\""), "{m}");
    let m = invalid(spec_from(&create(&["--name", "n", "--every", "1s", "--start", "soon", "-f", "j"]), job("")));
    assert!(m.starts_with("--start \"soon\""), "{m}");
}

#[test]
fn the_namespace_comes_from_the_flag_or_the_file_and_they_must_agree() {
    let s = spec_from(&create(&["--name", "n", "--every", "1s", "-f", "j"]), job("team")).unwrap();
    assert_eq!(s.namespace, "team");
    let s = spec_from(&create(&["--name", "n", "--every", "1s", "-f", "j", "--namespace", "team"]), job("team"));
    assert_eq!(s.unwrap().namespace, "team");
    let m = invalid(spec_from(&create(&["--name", "n", "--every", "1s", "-f", "j", "--namespace", "a"]), job("b")));
    assert!(m.contains("--namespace \"a\"") && m.contains("\"b\""), "{m}");
}

#[test]
fn clap_requires_one_cadence_and_one_template() {
    let e = parse(&["schedule", "create", "--name", "n", "-f", "j"]).unwrap_err();
    assert!(e.contains("--cron") || e.contains("cadence"), "{e}");
    let e =
        parse(&["schedule", "create", "--name", "n", "--every", "1s", "--cron", "* * * * *", "-f", "j"]).unwrap_err();
    assert!(e.contains("cannot be used with"), "{e}");
    let e = parse(&["schedule", "create", "--name", "n", "--every", "1s"]).unwrap_err();
    assert!(e.contains("--file") || e.contains("template"), "{e}");
    let e = parse(&["schedule", "create", "--name", "n", "--tz", "UTC", "-f", "j"]).unwrap_err();
    assert!(e.contains("--cron"), "--tz needs --cron: {e}");
    let m = invalid(spec_from(&create(&["--name", "n", "--every", "1s", "--tz", "UTC", "-f", "j"]), job("")));
    assert!(m.contains("--tz") && m.contains("--cron"), "{m}");
    assert!(matches!(parse(&["schedule", "run-now", "4"]), Ok(Top::Schedule(ScheduleCmd::RunNow { id: 4 }))));
    match parse(&["schedule", "update", "7", "--name", "n", "--every", "2s", "-f", "j"]) {
        Ok(Top::Schedule(ScheduleCmd::Update { id: 7, args })) => {
            assert_eq!(spec_from(&args, job("")).unwrap().cadence.unwrap().kind, Some(Kind::EveryMs(2000)));
        }
        other => panic!("{other:?}"),
    }
    let e = parse(&["schedule", "update", "7", "--name", "n", "-f", "j"]).unwrap_err();
    assert!(e.contains("--cron") || e.contains("cadence"), "update needs a cadence too: {e}");
    assert!(matches!(parse(&["schedule", "runs", "4"]), Ok(Top::Schedule(ScheduleCmd::Runs { id: 4 }))));
}

#[test]
fn job_submit_takes_at_or_in_but_not_both() {
    let Ok(Top::Submit(a)) = parse(&["submit", "--in", "2s"]) else { panic!() };
    assert_eq!(crate::cli::spec_from(&a, 1_000).unwrap().not_before_ms, 3_000);
    let Ok(Top::Submit(a)) = parse(&["submit", "--at", "2026-12-01T09:00:00Z"]) else { panic!() };
    assert_eq!(crate::cli::spec_from(&a, 1_000).unwrap().not_before_ms, 1_796_115_600_000);
    let Ok(Top::Submit(a)) = parse(&["submit"]) else { panic!() };
    assert_eq!(crate::cli::spec_from(&a, 1_000).unwrap().not_before_ms, 0);
    let e = parse(&["submit", "--at", "1", "--in", "2s"]).unwrap_err();
    assert!(e.contains("cannot be used with"), "{e}");
}

#[test]
fn trigger_and_event_flags_become_their_requests() {
    let Ok(Top::Trigger(crate::cli_trigger::TriggerCmd::Create(a))) = parse(&[
        "trigger",
        "create",
        "--name",
        "t",
        "--topic",
        "orders",
        "-f",
        "job.toml",
        "--filter",
        "region=eu",
        "--filter",
        "kind=new",
        "--debounce",
        "10s",
        "--debounce-key",
        "customer",
    ]) else {
        panic!()
    };
    let s = crate::cli_trigger::spec_from(
        &a,
        proto::trigger_spec::Template::Job(proto::JobSpec { shards: 1, ..Default::default() }),
    )
    .unwrap();
    assert_eq!((s.namespace.as_str(), s.name.as_str(), s.topic.as_str()), ("default", "t", "orders"));
    assert_eq!(s.filter.len(), 2);
    assert_eq!(s.filter.get("region").map(String::as_str), Some("eu"));
    assert_eq!((s.debounce_ms, s.debounce_key.as_str()), (10_000, "customer"));
    let e = parse(&["trigger", "create", "--name", "t", "--topic", "o", "-f", "j", "--debounce-key", "k"]).unwrap_err();
    assert!(e.contains("--debounce"), "{e}");

    let Ok(Top::Event(crate::cli_event::EventCmd::Publish(p))) =
        parse(&["event", "publish", "orders", "--payload", "hello", "--id", "e-1", "--attr", "region=eu"])
    else {
        panic!()
    };
    let r = crate::cli_event::request_from(&p).unwrap();
    assert_eq!((r.topic.as_str(), r.event_id.as_str(), r.payload.as_slice()), ("orders", "e-1", &b"hello"[..]));
    assert_eq!(r.attributes.get("region").map(String::as_str), Some("eu"));
    let Ok(Top::Event(crate::cli_event::EventCmd::Publish(p))) = parse(&["event", "publish", "orders"]) else {
        panic!()
    };
    let (a, b) = (crate::cli_event::request_from(&p).unwrap(), crate::cli_event::request_from(&p).unwrap());
    assert!(!a.event_id.is_empty() && a.event_id != b.event_id, "a fresh id per publish without --id");
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("p.bin");
    std::fs::write(&f, [0u8, 1, 2]).unwrap();
    assert_eq!(crate::cli_event::payload_bytes(&format!("@{}", f.display())).unwrap(), vec![0, 1, 2]);
    let e = crate::cli_event::payload_bytes("@/nonexistent/p").unwrap_err().to_string();
    assert!(e.contains("--payload @/nonexistent/p"), "{e}");
}

fn sample() -> proto::Schedule {
    let cron = proto::CronCadence { pattern: "0 10 * * *".into(), time_zone: "Europe/Berlin".into() };
    proto::Schedule {
        id: 3,
        namespace: "ops".into(),
        name: "daily".into(),
        cadence: Some(proto::Cadence { kind: Some(Kind::Cron(cron)) }),
        misfire: proto::MisfirePolicy::FireAll as i32,
        misfire_max: 4,
        misfire_grace_ms: 5000,
        template_kind: "job".into(),
        template_shards: 2,
        next_fire_ms: 1_796_115_600_000,
        upcoming_fire_ms: vec![1_796_115_600_000, 1_796_202_000_000],
        recent_runs: vec![
            proto::ScheduleRun {
                fire_ms: 1_796_029_200_000,
                job_id: 12,
                outcome: proto::RunOutcome::Succeeded as i32,
                ..Default::default()
            },
            proto::ScheduleRun {
                fire_ms: 1_795_942_800_000,
                outcome: proto::RunOutcome::Skipped as i32,
                reason: "a run is live (overlap skip)".into(),
                ..Default::default()
            },
        ],
        runs_started: 1,
        fires_skipped: 1,
        ..Default::default()
    }
}

#[test]
fn list_and_get_print_fire_times_in_utc_and_the_schedules_zone() {
    let t = list_table(&[sample()]);
    assert!(t.contains("cron \"0 10 * * *\" Europe/Berlin"), "{t}");
    assert!(t.contains("next 2026-12-01T09:00:00Z (2026-12-01T10:00:00+01:00 Europe/Berlin)"), "{t}");
    assert!(t.contains("last 2026-11-30T09:00:00Z (2026-11-30T10:00:00+01:00 Europe/Berlin)  job 12 succeeded"), "{t}");
    assert!(t.contains("skipped: a run is live (overlap skip)"), "{t}");
    let g = schedule_text(&sample());
    assert!(g.contains("misfire fire_all:4 (grace 5s)") && g.contains("a job of 2 shard(s)"), "{g}");
    assert_eq!(g.matches("  next ").count(), 2, "{g}");
    let j = schedule_json(&sample());
    assert_eq!(j["cadence"]["cron"], "0 10 * * *");
    assert_eq!(j["cadence"]["time_zone"], "Europe/Berlin");
    assert_eq!(j["misfire"], "fire_all");
    assert_eq!(j["upcoming_fire_ms"].as_array().unwrap().len(), 2);
    assert_eq!(j["recent_runs"][0]["job_id"], 12);
    assert_eq!(j["recent_runs"][1]["job_id"], serde_json::Value::Null);
    assert_eq!(j["recent_runs"][1]["outcome"], "skipped");
}

#[test]
fn job_get_notes_the_start_time_and_what_started_the_job() {
    let fire = proto::ScheduleFire { schedule_id: 3, fire_ms: 1_796_115_600_000, manual: false };
    let j = proto::Job {
        id: 4,
        not_before_ms: 1_796_115_602_000,
        run_origin: Some(proto::RunOrigin { source: Some(proto::run_origin::Source::Schedule(fire)) }),
        ..Default::default()
    };
    let notes = crate::cli::job_notes(&j, 1_796_115_600_000);
    assert_eq!(notes[0], "starts at 2026-12-01T09:00:02Z (in 2s)");
    assert_eq!(notes[1], "started by schedule 3 for fire time 2026-12-01T09:00:00Z");
    let notes = crate::cli::job_notes(&j, 1_796_115_605_000);
    assert_eq!(notes[0], "not started before 2026-12-01T09:00:02Z (3s ago)");
    let j = crate::cli::job_json(&j);
    assert_eq!(j["not_before_ms"], 1_796_115_602_000u64);
    assert_eq!(j["run_origin"]["schedule_id"], 3);
    assert_eq!(j["run_origin"]["manual"], false);
    let ev = proto::EventOrigin { trigger_id: 2, event_id: "e-1".into() };
    let j = proto::Job {
        run_origin: Some(proto::RunOrigin { source: Some(proto::run_origin::Source::Event(ev)) }),
        ..Default::default()
    };
    assert_eq!(crate::cli::job_notes(&j, 0), vec!["started by trigger 2 for event e-1".to_string()]);
    assert_eq!(crate::cli::job_json(&j)["run_origin"]["event_id"], "e-1");
    assert_eq!(crate::cli::job_json(&proto::Job::default())["run_origin"], serde_json::Value::Null);
}
