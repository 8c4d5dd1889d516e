use clap::Parser;

use super::*;
use crate::cli::JobCmd;

/// The operator commands as `main.rs` nests them.
#[derive(Parser)]
struct Baton {
    #[command(subcommand)]
    cmd: Top,
}

#[derive(Subcommand)]
enum Top {
    #[command(subcommand)]
    Job(JobCmd),
    #[command(subcommand)]
    Namespace(NamespaceCmd),
}

fn job(args: &[&str]) -> Result<JobCmd, clap::Error> {
    let argv = ["baton", "job"].iter().chain(args).copied();
    match Baton::try_parse_from(argv)?.cmd {
        Top::Job(c) => Ok(c),
        Top::Namespace(_) => unreachable!(),
    }
}

fn op(args: &[&str]) -> JobOpCmd {
    match job(args) {
        Ok(JobCmd::Op(op)) => op,
        Ok(_) => panic!("{args:?} parsed as another job command"),
        Err(e) => panic!("{args:?}: {e}"),
    }
}

fn ns(args: &[&str]) -> Result<NamespaceCmd, clap::Error> {
    let argv = ["baton", "namespace"].iter().chain(args).copied();
    match Baton::try_parse_from(argv)?.cmd {
        Top::Namespace(c) => Ok(c),
        Top::Job(_) => unreachable!(),
    }
}

#[test]
fn job_operations_parse_their_ids_and_values() {
    assert_eq!(op(&["delete", "7"]), JobOpCmd::Delete { id: 7 });
    assert_eq!(op(&["retry", "7"]), JobOpCmd::Retry { id: 7 });
    assert_eq!(op(&["pause", "7"]), JobOpCmd::Pause { id: 7 });
    assert_eq!(op(&["resume", "7"]), JobOpCmd::Resume { id: 7 });
    assert_eq!(op(&["priority", "7", "10"]), JobOpCmd::Priority { id: 7, priority: 10 });
    assert_eq!(op(&["priority", "7", "-3"]), JobOpCmd::Priority { id: 7, priority: -3 });
    assert_eq!(
        op(&["cancel-task", "7", "--shard", "2"]),
        JobOpCmd::CancelTask { id: 7, shard: 2, reason: "cancelled from the CLI".into() }
    );
    assert_eq!(
        op(&["cancel-task", "7", "--shard", "0", "--reason", "bad input"]),
        JobOpCmd::CancelTask { id: 7, shard: 0, reason: "bad input".into() }
    );
}

#[test]
fn job_operations_refuse_missing_or_malformed_arguments() {
    for bad in [
        &["cancel-task", "7"][..],
        &["cancel-task", "7", "--shard", "-1"],
        &["priority", "7"],
        &["priority", "7", "high"],
        &["priority", "7", "99999999999"],
        &["delete"],
        &["delete", "-7"],
        &["retry", "seven"],
    ] {
        assert!(job(bad).is_err(), "{bad:?} was accepted");
    }
}

#[test]
fn list_takes_order_paging_and_filters() {
    match job(&["list", "--namespace", "etl", "--status", "failed", "--newest", "--limit", "5", "--after", "90"]) {
        Ok(JobCmd::List { namespace, status, limit, newest, after }) => {
            assert_eq!(namespace.as_deref(), Some("etl"));
            assert_eq!(status.as_deref(), Some("failed"));
            assert_eq!((limit, newest, after), (5, true, Some(90)));
        }
        _ => panic!("job list did not parse"),
    }
    match job(&["list"]) {
        Ok(JobCmd::List { namespace: None, status: None, limit: 100, newest: false, after: None }) => {}
        _ => panic!("job list without flags did not parse to the defaults"),
    }
    assert_eq!(crate::cli::parse_job_status("failed").unwrap(), proto::JobStatus::Failed);
    let e = crate::cli::parse_job_status("done").unwrap_err();
    assert!(e.to_string().contains("queued, running, succeeded, failed or cancelled"), "{e}");
}

#[test]
fn namespace_commands_parse_and_retention_needs_exactly_one_length() {
    assert_eq!(ns(&["pause", "etl"]).unwrap(), NamespaceCmd::Pause { namespace: "etl".into() });
    assert_eq!(ns(&["resume", "etl"]).unwrap(), NamespaceCmd::Resume { namespace: "etl".into() });
    assert_eq!(ns(&["show", "etl"]).unwrap(), NamespaceCmd::Show { namespace: "etl".into() });
    assert_eq!(
        ns(&["retention", "etl", "--days", "3"]).unwrap(),
        NamespaceCmd::Retention { namespace: "etl".into(), days: Some(3), ms: None, default: false }
    );
    assert_eq!(
        ns(&["retention", "etl", "--default"]).unwrap(),
        NamespaceCmd::Retention { namespace: "etl".into(), days: None, ms: None, default: true }
    );
    assert_eq!(
        ns(&["idempotency-window", "etl", "--for", "10m"]).unwrap(),
        NamespaceCmd::IdempotencyWindow { namespace: "etl".into(), window: Some("10m".into()), default: false }
    );
    assert_eq!(
        ns(&["idempotency-window", "etl", "--default"]).unwrap(),
        NamespaceCmd::IdempotencyWindow { namespace: "etl".into(), window: None, default: true }
    );
    assert_eq!(
        ns(&["quota", "etl", "--live-tasks", "10", "--payload-bytes", "64MiB"]).unwrap(),
        NamespaceCmd::Quota {
            namespace: "etl".into(),
            live_tasks: Some(10),
            payload_bytes: Some("64MiB".into()),
            submits_per_sec: None,
            clear: false,
        }
    );
    assert_eq!(
        ns(&["quota", "etl", "--clear"]).unwrap(),
        NamespaceCmd::Quota {
            namespace: "etl".into(),
            live_tasks: None,
            payload_bytes: None,
            submits_per_sec: None,
            clear: true
        }
    );
    for bad in [
        &["quota", "etl"][..],
        &["quota", "etl", "--submits-per-sec", "-1"],
        &["idempotency-window", "etl"][..],
        &["idempotency-window", "etl", "--for", "1h", "--default"],
        &["retention", "etl"][..],
        &["retention", "etl", "--days", "1", "--ms", "5"],
        &["retention", "etl", "--ms", "5", "--default"],
        &["retention", "--days", "1"],
        &["pause"],
    ] {
        assert!(ns(bad).is_err(), "{bad:?} was accepted");
    }
}

#[test]
fn retention_arguments_become_a_duration_or_the_default() {
    assert_eq!(retention_arg(Some(3), None, false).unwrap(), Some(Duration::from_secs(3 * 86_400)));
    assert_eq!(retention_arg(None, Some(1500), false).unwrap(), Some(Duration::from_millis(1500)));
    assert_eq!(retention_arg(None, None, true).unwrap(), None);
    for (days, ms) in [(Some(0), None), (None, Some(0))] {
        let e = retention_arg(days, ms, false).unwrap_err();
        assert!(matches!(e, Error::InvalidArgument(_)) && e.to_string().contains("--default"), "{e}");
    }
    assert!(retention_arg(Some(u64::MAX), None, false).is_err());
    assert!(retention_arg(None, None, false).is_err());
}

#[test]
fn idempotency_window_arguments_become_a_duration_or_the_default() {
    assert_eq!(idempotency_window_arg(Some("90s"), false).unwrap(), Some(Duration::from_secs(90)));
    assert_eq!(idempotency_window_arg(Some("1h"), false).unwrap(), Some(Duration::from_secs(3_600)));
    assert_eq!(idempotency_window_arg(None, true).unwrap(), None);
    let e = idempotency_window_arg(Some("0s"), false).unwrap_err();
    assert!(matches!(e, Error::InvalidArgument(_)) && e.to_string().contains("--default"), "{e}");
    let e = idempotency_window_arg(Some("soon"), false).unwrap_err();
    assert!(e.to_string().contains("--for"), "{e}");
    assert!(idempotency_window_arg(None, false).is_err());
}

#[test]
fn durations_print_in_their_two_largest_units() {
    assert_eq!(human_ms(250), "250ms");
    assert_eq!(human_ms(1000), "1s");
    assert_eq!(human_ms(1500), "1.5s");
    assert_eq!(human_ms(61_000), "1m1s");
    assert_eq!(human_ms(90 * 60_000), "1h30m");
    assert_eq!(human_ms(7 * DAY_MS), "7d");
    assert_eq!(human_ms(DAY_MS + 5 * 60_000), "1d");
    assert_eq!(human_ms(DAY_MS + 3 * 3_600_000 + 7), "1d3h");
}

#[test]
fn namespace_output_names_state_and_retention() {
    let n = proto::Namespace {
        namespace: "etl".into(),
        paused: true,
        retention_ms: 0,
        effective_retention_ms: 7 * DAY_MS,
        idempotency_window_ms: 0,
        effective_idempotency_window_ms: DAY_MS,
        ..Default::default()
    };
    assert_eq!(
        namespace_line(&n),
        "namespace etl: paused (no new attempts start); finished jobs kept 7d (default); idempotency keys kept 1d (default)"
    );
    let v = namespace_json(&n);
    assert_eq!(v["retention_ms"], Value::Null);
    assert_eq!(v["effective_retention_ms"], 7 * DAY_MS);
    assert_eq!(v["idempotency_window_ms"], Value::Null);
    assert_eq!(v["effective_idempotency_window_ms"], DAY_MS);
    assert_eq!(v["paused"], true);
    let n = proto::Namespace {
        paused: false,
        retention_ms: 3_600_000,
        effective_retention_ms: 3_600_000,
        idempotency_window_ms: 90_000,
        effective_idempotency_window_ms: 90_000,
        ..n
    };
    assert_eq!(namespace_line(&n), "namespace etl: active; finished jobs kept 1h; idempotency keys kept 1m30s");
    assert_eq!(namespace_json(&n)["retention_ms"], 3_600_000);
    assert_eq!(namespace_json(&n)["idempotency_window_ms"], 90_000);
}

#[test]
fn a_job_shows_its_pauses_and_when_it_is_deleted() {
    let live =
        proto::Job { id: 4, namespace: "etl".into(), paused: true, namespace_paused: true, ..Default::default() };
    let notes = crate::cli::job_notes(&live, 1_000);
    assert_eq!(notes.len(), 2, "{notes:?}");
    assert!(notes[0].contains("paused") && notes[1].contains("namespace etl is paused"), "{notes:?}");
    let v = crate::cli::job_json(&live);
    assert_eq!((v["paused"].clone(), v["namespace_paused"].clone()), (Value::Bool(true), Value::Bool(true)));
    assert_eq!((v["expires_ms"].clone(), v["retention_ms"].clone()), (Value::Null, Value::Null));

    let done = proto::Job { finished_ms: 500, expires_ms: 1_000 + 90 * 60_000, retention_ms: 5_400_500, ..live };
    assert_eq!(crate::cli::job_notes(&done, 1_000), ["deleted in 1h30m (retention)"], "a finished job is not paused");
    assert_eq!(crate::cli::job_notes(&done, u64::MAX), ["deleted now (retention)"]);
    let v = crate::cli::job_json(&done);
    assert_eq!(
        (v["expires_ms"].clone(), v["retention_ms"].clone()),
        (Value::from(done.expires_ms), Value::from(5_400_500u64))
    );
}

#[test]
fn sizes_parse_with_units_and_print_for_people() {
    assert_eq!(size_arg("--payload-bytes", "1500").unwrap(), 1500);
    assert_eq!(size_arg("--payload-bytes", "64MiB").unwrap(), 64 << 20);
    assert_eq!(size_arg("--payload-bytes", "2gb").unwrap(), 2_000_000_000);
    assert_eq!(size_arg("--payload-bytes", "0").unwrap(), 0);
    for bad in ["", "MiB", "1.5GiB", "3 parsecs", "99999999999TiB"] {
        let e = size_arg("--payload-bytes", bad).unwrap_err();
        assert!(e.to_string().contains("--payload-bytes"), "{bad}: {e}");
    }
    assert_eq!(human_bytes(512), "512B");
    assert_eq!(human_bytes(1536), "1.5KiB");
    assert_eq!(human_bytes(64 << 20), "64MiB");
}

#[test]
fn quota_line_shows_usage_against_each_quota() {
    let n = proto::Namespace {
        namespace: "etl".into(),
        quota_live_tasks: 10,
        live_tasks: 3,
        payload_bytes: 2048,
        quota_submits_per_sec: 5,
        ..Default::default()
    };
    assert_eq!(quota_line(&n), "  usage: live tasks 3 of 10; payload 2KiB (no quota); submits at most 5/s");
    let v = namespace_json(&n);
    assert_eq!((v["quota"]["live_tasks"].clone(), v["quota"]["payload_bytes"].clone()), (10.into(), Value::Null));
    assert_eq!((v["usage"]["live_tasks"].clone(), v["usage"]["payload_bytes"].clone()), (3.into(), 2048.into()));
}
