//! The same seed gives the same run: the same trace hash and history, in one
//! process and across processes.

mod common;

use std::process::Command;

use baton_sim::{SimConfig, run};

#[test]
fn same_seed_same_trace_in_process() {
    for (nodes, seed) in [(3, 11), (5, 12)] {
        let config = SimConfig { nodes, ..SimConfig::default() };
        let a = run(seed, &config);
        let b = run(seed, &config);
        assert!(a.trace_events > 1_000, "only {} traced events", a.trace_events);
        assert_eq!(a.trace_hash, b.trace_hash, "seed {seed} on {nodes} nodes diverged");
        assert_eq!(a.history, b.history);
        assert_eq!(a.stats, b.stats);
        let c = run(seed + 1, &config);
        assert_ne!(a.trace_hash, c.trace_hash, "seeds {seed} and {} gave the same trace", seed + 1);
    }
}

fn hash_from_binary(seed: u64) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_baton-sim"))
        .args(["--seed", &seed.to_string(), "--nodes", "3"])
        .output()
        .expect("run baton-sim");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "baton-sim --seed {seed} failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
        .lines()
        .find_map(|l| l.strip_prefix("trace hash: "))
        .unwrap_or_else(|| panic!("no trace hash in:\n{stdout}"))
        .trim()
        .to_string()
}

#[test]
fn same_seed_same_trace_across_processes() {
    let seed = 5;
    let first = hash_from_binary(seed);
    let second = hash_from_binary(seed);
    assert_eq!(first, second, "two processes running seed {seed} diverged");
    let here = run(seed, &SimConfig::default());
    assert_eq!(first, here.trace_hash, "the binary and this process diverged on seed {seed}");
}
