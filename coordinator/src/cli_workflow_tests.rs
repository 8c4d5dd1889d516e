use baton_client::proto;

use super::*;

fn counts(succeeded: u32, dead: u32, running: u32) -> Option<proto::TaskCounts> {
    Some(proto::TaskCounts { pending: 0, running, succeeded, dead, cancelled: 0 })
}

fn sample() -> proto::Workflow {
    proto::Workflow {
        id: 7,
        namespace: "demo".into(),
        name: "docs".into(),
        status: proto::WorkflowStatus::Running as i32,
        result_step: "count".into(),
        created_ms: 1000,
        idempotency_key: "k".into(),
        steps: vec![
            proto::Step {
                name: "count".into(),
                status: proto::StepStatus::Running as i32,
                kind: "job".into(),
                reduce: true,
                dynamic: true,
                phase: proto::StepRole::Map as i32,
                generate_job_id: 3,
                map_job_id: 4,
                shards: 10,
                counts: counts(2, 1, 4),
                started_ms: 1001,
                ..Default::default()
            },
            proto::Step {
                name: "check".into(),
                status: proto::StepStatus::Succeeded as i32,
                depends_on: vec!["count".into()],
                kind: "job".into(),
                choice: true,
                phase: proto::StepRole::Map as i32,
                map_job_id: 5,
                shards: 1,
                counts: counts(1, 0, 0),
                chosen: vec!["fast".into()],
                ..Default::default()
            },
            proto::Step {
                name: "release".into(),
                status: proto::StepStatus::AwaitingApproval as i32,
                depends_on: vec!["check".into()],
                trigger: proto::TriggerRule::NoneFailed as i32,
                kind: "gate".into(),
                gate_deadline_ms: 61_000,
                ..Default::default()
            },
            proto::Step {
                name: "full".into(),
                status: proto::StepStatus::Skipped as i32,
                depends_on: vec!["check".into()],
                kind: "job".into(),
                reason: "not chosen by check".into(),
                shards: 1,
                ..Default::default()
            },
        ],
        ..Default::default()
    }
}

#[test]
fn the_get_table_has_a_row_per_step_with_phase_shards_and_reason() {
    let t = workflow_table(&sample());
    let lines: Vec<&str> = t.lines().collect();
    assert_eq!(lines[0], "workflow 7 \"docs\" in demo: running (result step \"count\")");
    assert!(lines[1].starts_with("STEP") && lines[1].contains("SHARDS") && lines[1].ends_with("REASON"));
    let cols = |l: &str| l.split_whitespace().map(str::to_string).collect::<Vec<_>>();
    assert_eq!(cols(lines[2]), ["count", "running", "map", "3/10"]);
    assert_eq!(cols(lines[3]), ["check", "succeeded", "map", "1/1", "chose", "fast"]);
    let release = cols(lines[4]);
    assert_eq!(release[..4], ["release", "awaiting_approval", "gate", "-"]);
    assert!(lines[4].ends_with("timeout due"), "a deadline in the past: {}", lines[4]);
    let mut w = sample();
    let now_ms = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as u64;
    w.steps[2].gate_deadline_ms = now_ms + 90_000;
    let t = workflow_table(&w);
    let release = t.lines().nth(4).unwrap();
    assert!(release.ends_with("times out in 90 s") || release.ends_with("times out in 89 s"), "{release}");
    assert_eq!(cols(lines[5])[..4], ["full", "skipped", "-", "-"]);
    assert!(lines[5].ends_with("not chosen by check"));
    assert_eq!(lines.len(), 6);
}

#[test]
fn workflow_json_has_the_documented_fields_and_nulls_for_unset_ones() {
    let v = workflow_json(&sample());
    for f in [
        "id",
        "namespace",
        "name",
        "status",
        "labels",
        "result_step",
        "created_ms",
        "finished_ms",
        "cancel_reason",
        "idempotency_key",
        "steps",
    ] {
        assert!(v.get(f).is_some(), "workflow JSON lacks {f}: {v}");
    }
    assert_eq!(v["status"], "running");
    assert!(v["finished_ms"].is_null() && v["cancel_reason"].is_null());
    let count = &v["steps"][0];
    for f in [
        "name",
        "status",
        "kind",
        "depends_on",
        "trigger",
        "reduce",
        "choice",
        "dynamic",
        "phase",
        "shards",
        "counts",
        "generate_job_id",
        "map_job_id",
        "reduce_job_id",
        "chosen",
        "reason",
        "started_ms",
        "finished_ms",
        "gate_deadline_ms",
    ] {
        assert!(count.get(f).is_some(), "step JSON lacks {f}: {count}");
    }
    assert_eq!((count["phase"].as_str(), count["trigger"].as_str()), (Some("map"), Some("all_succeeded")));
    assert_eq!((count["map_job_id"].as_u64(), count["reduce_job_id"].is_null()), (Some(4), true));
    assert_eq!(count["counts"]["dead"], 1);
    assert_eq!(v["steps"][2]["status"], "awaiting_approval");
    assert_eq!(v["steps"][2]["trigger"], "none_failed");
    assert!(v["steps"][2]["phase"].is_null());
    assert_eq!(v["steps"][1]["chosen"][0], "fast");
}

#[test]
fn a_watched_step_prints_again_only_on_a_change_of_state_or_another_tenth() {
    let mut s = sample().steps[0].clone();
    s.counts = counts(10, 0, 0);
    s.shards = 100;
    let (k1, line) = step_line(&s, 5);
    assert!(line.contains("10/100") && line.contains("running") && line.contains("map"), "{line}");
    s.counts = counts(19, 0, 0);
    assert_eq!(step_line(&s, 5).0, k1, "within the same tenth");
    s.counts = counts(20, 0, 0);
    let (k2, _) = step_line(&s, 5);
    assert_ne!(k2, k1, "another tenth");
    s.phase = proto::StepRole::Reduce as i32;
    assert_ne!(step_line(&s, 5).0, k2, "a new phase");
}

#[test]
fn list_status_filter_names_the_accepted_values() {
    assert_eq!(parse_status("failed").unwrap(), proto::WorkflowStatus::Failed);
    match parse_status("done") {
        Err(Error::InvalidArgument(m)) => assert!(m.contains("\"done\"") && m.contains("cancelled"), "{m}"),
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_list_row_counts_finished_steps() {
    let row = list_row(&sample());
    let cols: Vec<&str> = row.split_whitespace().collect();
    assert_eq!(cols, ["7", "running", "demo", "4", "2", "docs"]);
}

#[test]
fn a_waiting_event_gate_says_which_topic_it_waits_on() {
    let gate = proto::Step {
        name: "uploaded".into(),
        status: proto::StepStatus::AwaitingApproval as i32,
        gate_event_topic: "uploads".into(),
        ..Default::default()
    };
    assert_eq!(step_reason(&gate), "waits for an event on \"uploads\"");
    let done =
        proto::Step { status: proto::StepStatus::Succeeded as i32, reason: "approved by event \"e1\"".into(), ..gate };
    assert_eq!(step_reason(&done), "approved by event \"e1\"");
}
