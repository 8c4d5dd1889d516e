//! The `baton serve` command line: configuration from flags and env is
//! validated before anything starts, and a bad value is named.

use std::process::Command;

const BIN: &str = env!("CARGO_BIN_EXE_baton");

fn serve(args: &[&str], env: &[(&str, &str)]) -> (bool, String) {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(BIN)
        .arg("serve")
        .arg("--data-dir")
        .arg(dir.path())
        .args(args)
        .envs(env.iter().copied())
        .output()
        .unwrap();
    (out.status.success(), String::from_utf8_lossy(&out.stderr).into_owned())
}

#[test]
fn bad_values_from_env_and_flags_are_named_and_refused() {
    let (ok, err) = serve(&[], &[("BATON_NODE_ID", "0")]);
    assert!(!ok && err.contains("node_id"), "env override ignored or unnamed: {err}");
    let (ok, err) = serve(&[], &[("BATON_WORKERS__CHECK_INTERVAL_MS", "0")]);
    assert!(!ok && err.contains("workers.check_interval_ms"), "{err}");
    let (ok, err) = serve(&["--node-id", "0"], &[]);
    assert!(!ok && err.contains("node_id"), "{err}");
    // Flags beat env: a valid flag overrides a bad env value, then the bad
    // initial member list is reported.
    let (ok, err) = serve(&["--node-id", "2", "--initial-members", "1=a:1/a:2"], &[("BATON_NODE_ID", "0")]);
    assert!(!ok && err.contains("initial_members"), "{err}");
    let (ok, err) = serve(&["--config", "/nonexistent/baton.toml"], &[]);
    assert!(!ok && err.contains("does not exist"), "{err}");
}

mod common;

fn baton(args: &[&str], endpoints: &str) -> (bool, String, String) {
    let out = Command::new(BIN).args(args).args(["--endpoints", endpoints]).output().unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn json(args: &[&str], endpoints: &str) -> serde_json::Value {
    let mut a = args.to_vec();
    a.push("--json");
    let (ok, out, err) = baton(&a, endpoints);
    assert!(ok, "baton {args:?} failed: {err}");
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("baton {args:?} printed no JSON ({e}): {out}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operator_commands_print_documented_json_and_fail_with_one_line() {
    let c = common::Cluster::start(3, common::Opts::default());
    c.wait_leader(std::time::Duration::from_secs(15)).await;
    let eps: Vec<String> = c.ports.values().map(|p| format!("127.0.0.1:{}", p.api)).collect();
    let eps = eps.join(",");
    let submitted = tokio::task::spawn_blocking({
        let eps = eps.clone();
        move || json(&["job", "submit", "--shards", "3", "--namespace", "cli", "--label", "team=a"], &eps)
    })
    .await
    .unwrap();
    let id = submitted["job_id"].as_u64().expect("job_id");
    assert_eq!(submitted["shards"], 3);
    assert_eq!(submitted["duplicate"], false);
    let eps2 = eps.clone();
    tokio::task::spawn_blocking(move || {
        let j = json(&["job", "get", &id.to_string()], &eps2);
        for field in ["id", "namespace", "status", "shards", "counts", "labels", "created_ms", "idempotency_key"] {
            assert!(j.get(field).is_some(), "job JSON lacks {field}: {j}");
        }
        assert_eq!(j["status"], "queued");
        assert_eq!(j["labels"]["team"], "a");
        let l = json(&["job", "list", "--namespace", "cli"], &eps2);
        assert_eq!(l["jobs"].as_array().unwrap().len(), 1);
        let x = json(&["job", "cancel", &id.to_string()], &eps2);
        assert_eq!(x["tasks_cancelled"], 3);
        let s = json(&["cluster", "status"], &eps2);
        let nodes = s["nodes"].as_array().unwrap();
        assert_eq!(nodes.len(), 3);
        for n in nodes {
            for field in [
                "endpoint",
                "reachable",
                "node_id",
                "role",
                "leader_id",
                "term",
                "commit_index",
                "applied_index",
                "members",
            ] {
                assert!(n.get(field).is_some(), "status JSON lacks {field}: {n}");
            }
        }
        assert_eq!(nodes.iter().filter(|n| n["role"] == "leader").count(), 1);
        // Errors: one line, non-zero exit, saying what to do.
        let (ok, _, err) = baton(&["job", "get", "424242"], &eps2);
        assert!(!ok && err.trim().lines().count() == 1 && err.contains("not found"), "{err}");
        let (ok, _, err) = baton(&["job", "get", "1", "--timeout-secs", "1"], "127.0.0.1:9");
        assert!(!ok && err.trim().lines().count() == 1 && err.contains("baton dev"), "{err}");
    })
    .await
    .unwrap();
}

#[test]
fn baton_dev_runs_the_demo_and_exits_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    // Ports 100 apart per role; a random base keeps parallel runs apart.
    let base = 20_000 + (std::process::id() % 300) as u16 * 100;
    let out = Command::new(BIN)
        .current_dir(dir.path())
        .args(["dev", "--exit-after-demo", "--port-base", &base.to_string(), "--shards", "12"])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "baton dev failed: {stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.contains("succeeded") && stdout.contains("words counted across 12 shards"), "{stdout}");
}
