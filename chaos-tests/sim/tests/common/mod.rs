//! Helpers shared by the simulation tests (included with `mod common`).

#![allow(dead_code)]

use std::ops::Range;

use baton_sim::{Outcome, SimConfig, parse_seed_range, run};

/// Seeds from `BATON_SIM_SEEDS` (`A..B`), or `default`.
pub fn seeds(default: Range<u64>) -> Range<u64> {
    match std::env::var("BATON_SIM_SEEDS") {
        Ok(s) if !s.trim().is_empty() => parse_seed_range(&s).unwrap_or_else(|e| panic!("BATON_SIM_SEEDS: {e}")),
        _ => default,
    }
}

/// Run every (config, seed) on two threads (this machine has two cores) and
/// return the outcomes in input order.
pub fn run_all(jobs: Vec<(SimConfig, u64)>) -> Vec<Outcome> {
    let threads = std::thread::available_parallelism().map_or(2, |n| n.get()).clamp(1, 4);
    let next = std::sync::atomic::AtomicUsize::new(0);
    let results = std::sync::Mutex::new(Vec::new());
    std::thread::scope(|s| {
        for _ in 0..threads {
            s.spawn(|| {
                loop {
                    let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    let Some((config, seed)) = jobs.get(i) else { break };
                    let o = run(*seed, config);
                    results.lock().unwrap().push((i, o));
                }
            });
        }
    });
    let mut r = results.into_inner().unwrap();
    r.sort_by_key(|(i, _)| *i);
    r.into_iter().map(|(_, o)| o).collect()
}
