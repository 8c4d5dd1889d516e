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
                "cluster_id",
                "incarnation",
            ] {
                assert!(n.get(field).is_some(), "status JSON lacks {field}: {n}");
            }
        }
        assert!(nodes.iter().all(|n| n["cluster_id"] == nodes[0]["cluster_id"]), "one cluster id: {s}");
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
    // Outside the repository the demo counts a generated corpus, one file per shard.
    assert!(stdout.contains("workflow 1 succeeded"), "{stdout}");
    assert!(stdout.contains(" in 12 files; top "), "{stdout}");
    assert!(stdout.contains("this equals the reference computed here"), "{stdout}");
}

/// `baton dev --secure`: TLS on every port and `[auth]` on, the demo's
/// workers and client with their tokens; the config holds hashes only.
#[test]
fn baton_dev_secure_runs_the_demo_with_tls_and_tokens() {
    let dir = tempfile::tempdir().unwrap();
    let base = 40_000 + (std::process::id() % 150) as u16 * 100;
    let out = Command::new(BIN)
        .current_dir(dir.path())
        .args(["dev", "--secure", "--exit-after-demo", "--port-base", &base.to_string(), "--shards", "6"])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "baton dev --secure failed: {stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.contains("secure: TLS on every port and [auth] on"), "{stdout}");
    assert!(stdout.contains("this equals the reference computed here"), "{stdout}");
    let tls = dir.path().join(".baton-dev/tls");
    let config = std::fs::read_to_string(tls.join("auth.toml")).unwrap();
    for token in ["admin.token", "worker.token"] {
        let t = std::fs::read_to_string(tls.join(token)).unwrap();
        assert!(!t.is_empty() && !config.contains(&t), "{token} is in the config in clear");
        assert!(config.contains(&baton_coordinator::auth::hash_token(&t)), "{token}'s hash is not in the config");
    }
}

/// A `baton demo-worker` process, killed on drop.
struct DemoWorker(std::process::Child);

impl Drop for DemoWorker {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn baton_stdin(args: &[&str], endpoints: &str, stdin: &str) -> (bool, String, String) {
    use std::io::Write;
    let mut child = Command::new(BIN)
        .args(args)
        .args(["--endpoints", endpoints])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(stdin.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Poll `workflow get --json` until `done` holds for it.
fn wait_workflow(id: &str, eps: &str, what: &str, done: impl Fn(&serde_json::Value) -> bool) -> serde_json::Value {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let w = json(&["workflow", "get", id], eps);
        if done(&w) {
            return w;
        }
        assert!(std::time::Instant::now() < deadline, "workflow {id}: {what} never happened: {w}");
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
}

fn step<'a>(w: &'a serde_json::Value, name: &str) -> &'a serde_json::Value {
    w["steps"].as_array().unwrap().iter().find(|s| s["name"] == name).unwrap_or_else(|| panic!("no step {name}: {w}"))
}

const GATED_FLOW: &str = r#"
namespace = "cli"
name = "gated"
idempotency_key = "cli-gated-1"
result_step = "publish"

[[steps]]
name = "words"
payloads = ["to be or not to be"]

[[steps]]
name = "check"
depends_on = ["words"]
payloads = ["choose:fast"]
choice = true

[[steps]]
name = "fast"
depends_on = ["check", "words"]
payloads = ["pass"]

[[steps]]
name = "slow"
depends_on = ["check"]
payloads = ["fail:the branch not taken never runs"]

[[steps]]
name = "approve"
depends_on = ["fast", "slow"]
trigger = "none_failed"
gate = { timeout_ms = 600000 }

[[steps]]
name = "publish"
depends_on = ["approve", "fast"]
payloads = ["pass"]
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workflow_commands_submit_decide_watch_cancel_and_print_results() {
    let c = common::Cluster::start(3, common::Opts::default());
    c.wait_leader(std::time::Duration::from_secs(15)).await;
    let eps: Vec<String> = c.ports.values().map(|p| format!("127.0.0.1:{}", p.api)).collect();
    let eps = eps.join(",");
    let _worker = DemoWorker(
        Command::new(BIN)
            .args(["demo-worker", "--name", "cli-demo", "--capacity", "4", "--endpoints", &eps])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap(),
    );
    tokio::task::spawn_blocking(move || {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("gated.toml");
        std::fs::write(&file, GATED_FLOW).unwrap();
        let file = file.to_str().unwrap();

        // Submit, and again with the same key: the same workflow.
        let s = json(&["workflow", "submit", "-f", file], &eps);
        assert_eq!((s["steps"].as_u64(), s["duplicate"].as_bool()), (Some(6), Some(false)), "{s}");
        let id = s["workflow_id"].as_u64().expect("workflow_id").to_string();
        let again = json(&["workflow", "submit", "-f", file], &eps);
        assert_eq!((again["workflow_id"].to_string(), again["duplicate"].as_bool()), (id.clone(), Some(true)));

        // The choice skips `slow`; the join's gate waits.
        let w = wait_workflow(&id, &eps, "the gate opening", |w| step(w, "approve")["status"] == "awaiting_approval");
        assert_eq!(w["status"], "running");
        assert_eq!(step(&w, "check")["chosen"], serde_json::json!(["fast"]));
        assert_eq!(step(&w, "slow")["status"], "skipped");
        assert!(step(&w, "slow")["reason"].as_str().unwrap().contains("check not chosen"), "{w}");
        assert!(step(&w, "approve")["gate_deadline_ms"].as_u64().is_some(), "{w}");
        let (ok, table, _) = baton(&["workflow", "get", &id], &eps);
        assert!(ok && table.lines().any(|l| l.starts_with("approve") && l.contains("awaiting_approval")), "{table}");

        // No result before the result step succeeded; errors are one line.
        let (ok, _, err) = baton(&["workflow", "result", &id], &eps);
        assert!(!ok && err.trim().lines().count() == 1, "{err}");
        let (ok, _, err) = baton(&["workflow", "approve", &id, "words"], &eps);
        assert!(!ok && err.trim().lines().count() == 1 && err.contains("not a gate"), "{err}");

        let a = json(&["workflow", "approve", &id, "approve", "--by", "tester"], &eps);
        assert_eq!((a["approved"].as_bool(), a["by"].as_str()), (Some(true), Some("tester")));
        let done = json(&["workflow", "watch", &id], &eps);
        assert_eq!(done["status"], "succeeded", "{done}");
        assert_eq!(step(&done, "approve")["reason"], "approved by tester");
        // Not a terminal: plain lines, ending with the final status.
        let (ok, lines, _) = baton(&["workflow", "watch", &id], &eps);
        assert!(
            ok && lines.trim_end().lines().last().unwrap().starts_with(&format!("workflow {id} succeeded")),
            "{lines}"
        );
        let (ok, result, _) = baton(&["workflow", "result", &id], &eps);
        assert!(ok, "{result}");
        assert_eq!(result, r#"{"be":2,"not":1,"or":1,"to":2}"#, "the words step's counts, passed down twice");
        let r = json(&["workflow", "result", &id], &eps);
        assert_eq!((r["step"].as_str(), r["bytes"].as_u64()), (Some("publish"), Some(result.len() as u64)));
        assert!(r["job_id"].as_u64().is_some() && r["token"].as_u64().is_some(), "{r}");

        // Rejecting a gate fails the workflow; a clean-up step still runs. From stdin, as JSON.
        let rejected = r#"{"namespace": "cli", "name": "rejected", "steps": [
            {"name": "g", "gate": {}},
            {"name": "after", "depends_on": ["g"]},
            {"name": "cleanup", "depends_on": ["after"], "trigger": "all_done"}]}"#;
        let (ok, out, err) = baton_stdin(&["workflow", "submit", "-f", "-", "--json"], &eps, rejected);
        assert!(ok, "{err}");
        let id2 = serde_json::from_str::<serde_json::Value>(&out).unwrap()["workflow_id"].to_string();
        wait_workflow(&id2, &eps, "the gate opening", |w| step(w, "g")["status"] == "awaiting_approval");
        json(&["workflow", "reject", &id2, "g", "--by", "tester"], &eps);
        let w = json(&["workflow", "watch", &id2], &eps);
        assert_eq!(w["status"], "failed");
        let states: Vec<&str> = w["steps"].as_array().unwrap().iter().map(|s| s["status"].as_str().unwrap()).collect();
        assert_eq!(states, ["failed", "skipped", "succeeded"], "{w}");

        // Cancel ends the waiting and awaiting steps; cancelling again is refused.
        let (ok, out, err) = baton_stdin(&["workflow", "submit", "-f", "-", "--json"], &eps, rejected);
        assert!(ok, "{err}");
        let id3 = serde_json::from_str::<serde_json::Value>(&out).unwrap()["workflow_id"].to_string();
        wait_workflow(&id3, &eps, "the gate opening", |w| step(w, "g")["status"] == "awaiting_approval");
        let cancelled = json(&["workflow", "cancel", &id3, "--reason", "not today"], &eps);
        assert_eq!(cancelled["steps_cancelled"], 3, "{cancelled}");
        let w = json(&["workflow", "get", &id3], &eps);
        assert_eq!((w["status"].as_str(), w["cancel_reason"].as_str()), (Some("cancelled"), Some("not today")));
        let (ok, _, err) = baton(&["workflow", "cancel", &id3], &eps);
        assert!(!ok && err.trim().lines().count() == 1 && err.contains("finished"), "{err}");

        // Listing, with filters.
        let l = json(&["workflow", "list", "--namespace", "cli"], &eps);
        assert_eq!(l["workflows"].as_array().unwrap().len(), 3, "{l}");
        let l = json(&["workflow", "list", "--namespace", "cli", "--status", "failed"], &eps);
        let ids: Vec<String> = l["workflows"].as_array().unwrap().iter().map(|w| w["id"].to_string()).collect();
        assert_eq!(ids, [id2]);
        let (ok, table, _) = baton(&["workflow", "list", "--namespace", "cli"], &eps);
        assert!(ok && table.lines().count() == 4 && table.contains("gated"), "{table}");
        let (ok, _, err) = baton(&["workflow", "list", "--status", "done"], &eps);
        assert!(!ok && err.contains("running, succeeded, failed or cancelled"), "{err}");

        // Bad files and unknown workflows: one line naming the problem.
        let bad = dir.path().join("bad.toml");
        std::fs::write(&bad, "colour = 1\n[[steps]]\nname = \"a\"\n").unwrap();
        let (ok, _, err) = baton(&["workflow", "submit", "-f", bad.to_str().unwrap()], &eps);
        assert!(!ok && err.contains("unknown field `colour`") && err.starts_with("error: "), "{err}");
        let cycle = r#"{"steps": [{"name": "a", "depends_on": ["b"]}, {"name": "b", "depends_on": ["a"]}]}"#;
        let (ok, _, err) = baton_stdin(&["workflow", "submit", "-f", "-"], &eps, cycle);
        assert!(!ok && err.trim().lines().count() == 1 && err.contains("cycle: a -> b -> a"), "{err}");
        let (ok, _, err) = baton(&["workflow", "get", "424242"], &eps);
        assert!(!ok && err.trim().lines().count() == 1 && err.contains("not found"), "{err}");
    })
    .await
    .unwrap();
}

#[test]
fn auth_helpers_make_tokens_and_their_hashes() {
    use std::io::Write;
    let out = Command::new(BIN).args(["auth", "new-token", "--json"]).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let (token, sha) = (v["token"].as_str().unwrap(), v["sha256"].as_str().unwrap());
    assert_eq!(sha, baton_coordinator::auth::hash_token(token));
    // hash-token reads the token from stdin; one trailing newline is not part of it.
    let mut child = Command::new(BIN)
        .args(["auth", "hash-token"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(format!("{token}\n").as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), sha);
    // A server refuses an [auth] section that names a malformed hash, before starting.
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("auth.toml");
    std::fs::write(&cfg, "[[auth.tokens]]\nname = \"ci\"\nsha256 = \"abc\"\ngrants = [\"reader:*\"]\n").unwrap();
    let (ok, err) = serve(&["--config", cfg.to_str().unwrap()], &[]);
    assert!(!ok && err.contains("auth.tokens.sha256"), "{err}");
}

#[test]
fn certs_generate_writes_and_lists_a_ca_node_and_client_certificates() {
    let dir = tempfile::tempdir().unwrap();
    let out_dir = dir.path().join("tls");
    let out = Command::new(BIN)
        .args(["certs", "generate", "--json", "--nodes", "2", "--hosts", "10.9.0.11,baton.internal", "--out"])
        .arg(&out_dir)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let nodes = v["nodes"].as_array().unwrap();
    assert_eq!(nodes.len(), 2);
    for path in [&v["ca"], &nodes[1]["cert"], &nodes[1]["key"], &v["client_cert"], &v["client_key"]] {
        let p = std::path::Path::new(path.as_str().unwrap());
        assert!(p.starts_with(&out_dir) && p.is_file(), "{p:?}");
    }
    // A bad SAN is refused in one line naming it, and nothing is written.
    let bad = dir.path().join("bad");
    let out =
        Command::new(BIN).args(["certs", "generate", "--hosts", "no such host", "--out"]).arg(&bad).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("no such host"), "{err}");
    assert!(!bad.exists());
}
