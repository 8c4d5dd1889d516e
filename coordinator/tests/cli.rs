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
