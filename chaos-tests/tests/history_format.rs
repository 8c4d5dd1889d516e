//! The JSONL history format: round trips, its exact shape, and clear errors.

mod common;

use std::io::Cursor;

use baton_chaos::history::{Body, Nemesis, NemesisOutcome, NemesisPhase, RunConfig, Targets};
use baton_chaos::{Error, History};
use common::valid_history;

#[test]
fn a_history_round_trips_through_a_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("history.jsonl");
    let h = valid_history();
    h.write(&path).unwrap();

    let text = std::fs::read_to_string(&path).unwrap();
    assert_eq!(text.lines().count(), h.len(), "one event per line");
    for line in text.lines() {
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        for field in ["seq", "t", "type"] {
            assert!(v.get(field).is_some(), "{field} missing in {line}");
        }
    }
    assert_eq!(History::read(&path).unwrap(), h);
}

#[test]
fn events_have_the_documented_shape() {
    let mut h = History::new();
    h.nemesis(100, "partition", NemesisPhase::Start, NemesisOutcome::Installed, "n1 | n2 n3");
    h.submit_invoke(120, "c1", 1, "k-1", 2);
    h.submit_ok(130, "c1", 1, 7);
    let mut out = Vec::new();
    h.write_to(&mut out).unwrap();
    let expected = concat!(
        r#"{"seq":1,"t":100,"type":"nemesis","name":"partition","phase":"start","outcome":"installed","detail":"n1 | n2 n3"}"#,
        "\n",
        r#"{"seq":2,"t":120,"type":"submit_invoke","client":"c1","op":1,"key":"k-1","shards":2}"#,
        "\n",
        r#"{"seq":3,"t":130,"type":"submit_ok","client":"c1","op":1,"job":7}"#,
        "\n",
    );
    assert_eq!(String::from_utf8(out).unwrap(), expected);
}

#[test]
fn config_leader_and_nemesis_targets_have_the_documented_shape() {
    use NemesisOutcome::Installed;
    use NemesisPhase::Start;
    let mut h = History::new();
    h.config(0, RunConfig { ttl_ms: 1_500, check_interval_ms: 100, election_timeout_max_ms: 120 });
    h.leader(40, 2, 7);
    h.nemesis_on(100, "kill-worker", Start, Installed, Targets::workers(["w2"]), "SIGKILL w2");
    h.nemesis_on(200, "kill-minority", Start, Installed, Targets::nodes([1, 3]), "");
    let mut out = Vec::new();
    h.write_to(&mut out).unwrap();
    let text = String::from_utf8(out).unwrap();
    let expected = concat!(
        r#"{"seq":1,"t":0,"type":"config","ttl_ms":1500,"check_interval_ms":100,"election_timeout_max_ms":120}"#,
        "\n",
        r#"{"seq":2,"t":40,"type":"leader","node":2,"term":7}"#,
        "\n",
        r#"{"seq":3,"t":100,"type":"nemesis","name":"kill-worker","phase":"start","outcome":"installed","targets":{"workers":["w2"]},"detail":"SIGKILL w2"}"#,
        "\n",
        r#"{"seq":4,"t":200,"type":"nemesis","name":"kill-minority","phase":"start","outcome":"installed","targets":{"nodes":[1,3]}}"#,
        "\n",
    );
    assert_eq!(text, expected);
    assert_eq!(History::parse(Cursor::new(text), "inline").unwrap(), h);
}

#[test]
fn optional_fields_may_be_left_out_and_assigned_reads_as_running() {
    let text = r#"{"seq":1,"t":5,"type":"nemesis","name":"kill","phase":"heal","outcome":"indeterminate"}
{"seq":2,"t":9,"type":"final_state","jobs":[{"id":1,"key":"k","status":"running","shards":[{"shard":0,"status":"assigned","latest_token":4}]}]}
"#;
    let h = History::parse(Cursor::new(text), "inline").unwrap();
    assert_eq!(h.len(), 2);
    let Body::Nemesis(Nemesis { detail, targets, .. }) = &h.events()[0].body else { panic!("not a nemesis event") };
    assert!(detail.is_empty());
    // Histories written before nemesis targets existed: no targets.
    assert!(targets.is_empty());
    let Body::FinalState(state) = &h.events()[1].body else { panic!("not a final state") };
    assert_eq!(state.drained_at, None);
    let shard = &state.jobs[0].shards[0];
    assert_eq!(shard.status, baton_chaos::history::TaskStatus::Running);
    assert_eq!((shard.result.as_deref(), shard.token, shard.latest_token), (None, None, Some(4)));
}

/// Write the valid history with line `n` (1-based) replaced by `line`.
fn corrupt(n: usize, line: &str) -> (tempfile::TempDir, std::path::PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.jsonl");
    valid_history().write(&path).unwrap();
    let text = std::fs::read_to_string(&path).unwrap();
    let mut lines: Vec<&str> = text.lines().collect();
    lines[n - 1] = line;
    std::fs::write(&path, lines.join("\n") + "\n").unwrap();
    (dir, path)
}

#[test]
fn a_line_that_is_not_json_names_its_line() {
    let (_dir, path) = corrupt(3, "{\"seq\":3,\"t\":");
    let err = History::read(&path).unwrap_err();
    assert!(matches!(err, Error::Parse { line: 3, .. }), "{err:?}");
    let msg = err.to_string();
    assert!(msg.starts_with(&format!("{}:3:", path.display())), "{msg}");
    assert!(!msg.contains('\n'), "one line: {msg}");
}

#[test]
fn a_missing_field_or_unknown_type_names_its_line() {
    let (_dir, path) = corrupt(4, r#"{"seq":4,"t":400,"type":"submit_ok","client":"c1"}"#);
    let msg = History::read(&path).unwrap_err().to_string();
    assert!(msg.contains(":4:") && msg.contains("missing field `op`"), "{msg}");

    let (_dir, path) = corrupt(2, r#"{"seq":2,"t":1,"type":"submit_maybe","client":"c1","op":1}"#);
    let msg = History::read(&path).unwrap_err().to_string();
    assert!(msg.contains(":2:") && msg.contains("unknown variant `submit_maybe`"), "{msg}");
}

#[test]
fn a_seq_that_goes_backwards_names_its_line() {
    let (_dir, path) = corrupt(5, r#"{"seq":2,"t":500,"type":"assign","worker":"w1","job":1,"shard":0,"token":10}"#);
    let msg = History::read(&path).unwrap_err().to_string();
    assert!(msg.contains(":5:") && msg.contains("seq 2 does not follow seq 4"), "{msg}");
}

#[test]
fn blank_lines_are_skipped_but_counted() {
    let text =
        "\n{\"seq\":1,\"t\":0,\"type\":\"replica\",\"node\":1,\"applied_index\":3,\"state_hash\":\"ab\"}\n\nnope\n";
    let err = History::parse(Cursor::new(text), "inline").unwrap_err();
    assert!(matches!(err, Error::Parse { line: 4, .. }), "{err:?}");
    assert!(err.to_string().starts_with("inline:4:"), "{err}");
}

#[test]
fn a_missing_file_is_an_io_error_naming_the_path() {
    let err = History::read("/nonexistent/baton/history.jsonl").unwrap_err();
    assert!(matches!(err, Error::Io { .. }), "{err:?}");
    assert!(err.to_string().contains("/nonexistent/baton/history.jsonl"), "{err}");
}

#[test]
fn from_events_refuses_seqs_out_of_order() {
    let mut events = valid_history().into_events();
    events.swap(1, 2);
    let err = History::from_events(events).unwrap_err();
    assert!(matches!(err, Error::SeqOrder { position: 3, seq: 2, prev: 3 }), "{err:?}");
}

#[test]
fn schedule_and_event_records_have_the_documented_shape() {
    use baton_chaos::history::{
        EventPublish, EventRunRef, MisfirePolicy, OverlapPolicy, ScheduleCadence, ScheduleCreate,
    };
    let mut h = History::new();
    h.schedule_create(
        10,
        ScheduleCreate {
            client: "s1".into(),
            schedule: 3,
            namespace: "sched".into(),
            name: "every".into(),
            cadence: ScheduleCadence::FixedRate { period_ms: 1_000, anchor_ms: 5_000 },
            misfire: MisfirePolicy::FireAll { max: 1_000 },
            misfire_grace_ms: 5_000,
            overlap: OverlapPolicy::Allow,
        },
    );
    h.schedule_pause(20, "s1", 3);
    h.event_publish(
        30,
        EventPublish {
            client: "s1".into(),
            namespace: "sched".into(),
            topic: "up".into(),
            event_id: "e1".into(),
            duplicate: false,
            runs: vec![EventRunRef { trigger: 2, job: Some(9) }],
        },
    );
    let mut out = Vec::new();
    h.write_to(&mut out).unwrap();
    let text = String::from_utf8(out).unwrap();
    let expected = concat!(
        r#"{"seq":1,"t":10,"type":"schedule_create","client":"s1","schedule":3,"namespace":"sched","name":"every","cadence":{"fixed_rate":{"period_ms":1000,"anchor_ms":5000}},"misfire":{"fire_all":{"max":1000}},"misfire_grace_ms":5000,"overlap":"allow"}"#,
        "\n",
        r#"{"seq":2,"t":20,"type":"schedule_pause","client":"s1","schedule":3}"#,
        "\n",
        r#"{"seq":3,"t":30,"type":"event_publish","client":"s1","namespace":"sched","topic":"up","event_id":"e1","runs":[{"trigger":2,"job":9}]}"#,
        "\n",
    );
    assert_eq!(text, expected);
    assert_eq!(History::parse(Cursor::new(text), "inline").unwrap(), h);

    // A final-state job carries its start and log times; older ones lack them.
    let line = r#"{"seq":1,"t":9,"type":"final_state","jobs":[{"id":4,"key":"","status":"succeeded","shards":[],"run_of":{"schedule":{"schedule":3,"fire_ms":6000}},"created_ms":6002,"finished_ms":6400}]}"#;
    let h = History::parse(Cursor::new(line), "inline").unwrap();
    let Body::FinalState(state) = &h.events()[0].body else { panic!("not a final state") };
    let j = &state.jobs[0];
    assert_eq!(j.run_of, Some(baton_chaos::history::RunOf::Schedule { schedule: 3, fire_ms: 6_000, manual: false }));
    assert_eq!((j.created_ms, j.finished_ms), (Some(6_002), Some(6_400)));
}
