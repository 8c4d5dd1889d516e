//! The `baton-check` binary: exit codes and output.

mod common;

use std::path::Path;
use std::process::{Command, Output};

use baton_chaos::history::{Body, CompleteReply};
use common::{edited, position, reassign_history, valid_history};

fn baton_check(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_baton-check")).args(args).output().expect("run baton-check")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// The valid history with the zombie's fenced complete answered ok.
fn write_anomalous(path: &Path) {
    let h = edited(&valid_history(), |ev| {
        let i =
            position(ev, |b| matches!(b, Body::CompleteFenced(CompleteReply { worker, op: 2, .. }) if worker == "w1"));
        ev[i].body = Body::CompleteOk(CompleteReply { worker: "w1".into(), op: 2, detail: String::new() });
    });
    h.write(path).unwrap();
}

#[test]
fn a_valid_history_exits_0_with_a_table() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ok.jsonl");
    valid_history().write(&path).unwrap();
    let out = baton_check(&[path.to_str().unwrap()]);
    let stdout = text(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{stdout}{}", text(&out.stderr));
    for name in [
        "no_lost_jobs",
        "no_phantom_jobs",
        "exactly_once_commit",
        "fencing",
        "replica_convergence",
        "reassignment_bound",
    ] {
        assert!(stdout.lines().any(|l| l.starts_with(name) && l.contains("pass")), "{name} row:\n{stdout}");
    }
    assert!(stdout.contains("all invariants hold"), "{stdout}");
}

#[test]
fn an_anomalous_history_exits_1_and_names_the_violation() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.jsonl");
    write_anomalous(&path);
    let out = baton_check(&[path.to_str().unwrap()]);
    let stdout = text(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    assert!(stdout.lines().any(|l| l.starts_with("fencing") && l.contains("FAIL")), "{stdout}");
    assert!(stdout.contains("[fencing]") && stdout.contains("job 1 shard 1"), "{stdout}");
}

#[test]
fn json_output_is_the_report() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.jsonl");
    write_anomalous(&path);
    let out = baton_check(&[path.to_str().unwrap(), "--json"]);
    assert_eq!(out.status.code(), Some(1));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).expect("stdout is JSON");
    let invariants = report["invariants"].as_array().unwrap();
    assert_eq!(invariants.len(), baton_chaos::Invariant::ALL.len());
    let fencing = invariants.iter().find(|r| r["invariant"] == "fencing").unwrap();
    assert_eq!(fencing["verdict"], "fail");
    assert_eq!(fencing["violations"][0]["job"], 1);
    assert_eq!(fencing["violations"][0]["shard"], 1);
    assert_eq!(fencing["violations"][0]["token"], 11);
}

#[test]
fn the_liveness_bound_flag_is_applied() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ok.jsonl");
    valid_history().write(&path).unwrap();
    // The valid history drains 2500 ms after its last heal.
    assert_eq!(baton_check(&[path.to_str().unwrap(), "--liveness-bound-ms", "2500"]).status.code(), Some(0));
    let out = baton_check(&[path.to_str().unwrap(), "--liveness-bound-ms", "2499"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stdout).contains("over the bound of 2499 ms"), "{}", text(&out.stdout));
}

#[test]
fn the_reassign_slack_flag_is_applied() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ok.jsonl");
    // Without the leader kill, (1,1) is granted again 4500 ms after w1 died:
    // 1500 ms over ttl 1500 + check 100 + the default slack of 1000.
    let h = edited(&reassign_history(), |ev| {
        ev.retain(|e| !matches!(&e.body, Body::Nemesis(n) if n.name == "kill-leader"))
    });
    h.write(&path).unwrap();
    let out = baton_check(&[path.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stdout));
    assert!(text(&out.stdout).contains("[reassignment_bound] job 1 shard 1"), "{}", text(&out.stdout));
    // The observed takeover at 2300 restarts the clock: due at 4900 with
    // the default slack, at 5500 with 1600.
    assert_eq!(baton_check(&[path.to_str().unwrap(), "--reassign-slack-ms", "1600"]).status.code(), Some(0));
    let out = baton_check(&[path.to_str().unwrap(), "--reassign-slack-ms", "1599"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stdout).contains("slack 1599"), "{}", text(&out.stdout));
}

#[test]
fn unreadable_input_exits_2_with_one_line() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("missing.jsonl");
    let out = baton_check(&[missing.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    let stderr = text(&out.stderr);
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.contains("missing.jsonl"), "{stderr}");
    assert!(out.stdout.is_empty());

    let corrupt = dir.path().join("corrupt.jsonl");
    std::fs::write(
        &corrupt,
        "{\"seq\":1,\"t\":0,\"type\":\"replica\",\"node\":1,\"applied_index\":1,\"state_hash\":\"a\"}\n]\n",
    )
    .unwrap();
    let out = baton_check(&[corrupt.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    let stderr = text(&out.stderr);
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.contains("corrupt.jsonl:2:"), "{stderr}");
}
