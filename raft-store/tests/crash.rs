//! Crash test of the log store: a child process appends, votes, truncates and
//! purges, reporting every operation whose durability callback fired; the
//! parent SIGKILLs it at seeded random moments and checks after each reopen:
//! - no entry whose append was acknowledged is missing (or changed);
//! - the log has no hole;
//! - the vote is the last one saved (or the one being saved when killed).
//!
//! Replay a run with the seed it prints: `BATON_CRASH_SEED=<seed> cargo test -p baton-raft-store --test crash`.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use baton_raft_store::*;
use openraft::storage::{RaftLogReaderExt, RaftLogStorage, RaftLogStorageExt};
use openraft::{CommittedLeaderId, EntryPayload, RaftLogReader};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

const CHILD_ENV: &str = "BATON_CRASH_CHILD_DIR";
const CHILD_SEED_ENV: &str = "BATON_CRASH_CHILD_SEED";
const KILLS: usize = 60;
/// Lines the child prints start with this, to tell them from libtest's output.
const TAG: &str = "@@";

/// A deterministic entry for (index, term), so the parent can check content.
fn entry(index: u64, term: u64) -> Entry {
    let payload = if index % 3 == 0 {
        EntryPayload::Blank
    } else {
        EntryPayload::Normal(Proposal {
            proposed_at_ms: index * 1_000 + term,
            cmd: baton_raft_store::Command::CancelJob { job: index, reason: format!("t{term}") },
        })
    };
    Entry { log_id: LogId::new(CommittedLeaderId::new(term, 1), index), payload }
}

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap()
}

/// The child: runs until killed.
fn child(dir: &str, seed: u64) -> ! {
    rt().block_on(async {
        let (mut log, _sm) = open_store(std::path::Path::new(dir)).expect("open store");
        let mut rng = StdRng::seed_from_u64(seed);
        let mut term = log.read_vote().await.unwrap().map_or(1, |v| v.leader_id.term);
        let state = log.get_log_state().await.unwrap();
        let mut purged = state.last_purged_log_id.map_or(0, |l| l.index);
        let mut next = state.last_log_id.map_or(1, |l| l.index + 1);
        let mut out = std::io::stdout().lock();
        loop {
            let roll = rng.random_range(0..100);
            if roll < 75 {
                let n = rng.random_range(1..=16u64);
                let entries: Vec<Entry> = (next..next + n).map(|i| entry(i, term)).collect();
                log.blocking_append(entries).await.expect("append");
                writeln!(out, "{TAG} append {next} {} {term}", next + n - 1).unwrap();
                next += n;
            } else if roll < 85 {
                let v = Vote::new_committed(term + 1, 1);
                writeln!(out, "{TAG} voting {}", term + 1).unwrap();
                out.flush().unwrap();
                log.save_vote(&v).await.expect("save vote");
                term += 1;
                writeln!(out, "{TAG} vote {term}").unwrap();
            } else if roll < 93 && next > purged + 2 {
                let at = rng.random_range(purged + 1..next);
                writeln!(out, "{TAG} truncating {at}").unwrap();
                out.flush().unwrap();
                log.truncate(LogId::new(CommittedLeaderId::new(term, 1), at)).await.expect("truncate");
                writeln!(out, "{TAG} truncate {at}").unwrap();
                next = at;
            } else if next > purged + 2 {
                let upto = rng.random_range(purged + 1..next - 1);
                let t = log.try_get_log_entry(upto).await.unwrap().expect("entry to purge").log_id;
                writeln!(out, "{TAG} purging {upto}").unwrap();
                out.flush().unwrap();
                log.purge(t).await.expect("purge");
                writeln!(out, "{TAG} purge {upto}").unwrap();
                purged = upto;
            }
            out.flush().unwrap();
        }
    })
}

#[derive(Default, Debug)]
struct Model {
    /// index -> term of every acknowledged, not truncated, not purged entry.
    acked: BTreeMap<u64, u64>,
    vote: Option<u64>,
    voting: Option<u64>,
    /// A truncate that was started but not acknowledged when the child died:
    /// entries from here on may legitimately be gone.
    truncating: Option<u64>,
    purged: u64,
    appends: usize,
}

impl Model {
    fn apply(&mut self, line: &str) {
        let f: Vec<&str> = line.split_whitespace().collect();
        let n = |i: usize| f[i].parse::<u64>().unwrap();
        match f[1] {
            "append" => {
                for i in n(2)..=n(3) {
                    self.acked.insert(i, n(4));
                }
                self.appends += 1;
            }
            "voting" => self.voting = Some(n(2)),
            "vote" => {
                self.vote = Some(n(2));
                self.voting = None;
            }
            "truncating" => self.truncating = Some(n(2)),
            "truncate" => {
                self.acked.split_off(&n(2));
                self.truncating = None;
            }
            // Purged entries are skipped by the check anyway.
            "purging" => {}
            "purge" => {
                self.purged = n(2);
                self.acked = self.acked.split_off(&(n(2) + 1));
            }
            other => panic!("unknown child line {other}"),
        }
    }
}

/// Reopen the store and check it against the model.
fn verify(dir: &std::path::Path, model: &mut Model, round: usize) {
    rt().block_on(async {
        let (mut log, _sm) = open_store(dir).expect("reopen after kill");
        let state = log.get_log_state().await.unwrap();
        let purged = state.last_purged_log_id.map_or(0, |l| l.index);
        let last = state.last_log_id.map_or(0, |l| l.index);
        let entries = log.try_get_log_entries(purged + 1..=last).await.unwrap();
        assert_eq!(entries.len() as u64, last - purged, "round {round}: hole in the log ({purged}, {last}]");
        for (i, e) in entries.iter().enumerate() {
            let idx = purged + 1 + i as u64;
            assert_eq!(e.log_id.index, idx, "round {round}: hole at {idx}");
            assert_eq!(e, &entry(idx, e.log_id.leader_id.term), "round {round}: entry {idx} corrupted");
        }
        for (idx, term) in &model.acked {
            if *idx <= purged || model.truncating.is_some_and(|t| *idx >= t) {
                continue;
            }
            let e = entries.get((*idx - purged - 1) as usize);
            assert!(
                e.is_some_and(|e| e.log_id.leader_id.term == *term),
                "round {round}: acknowledged entry {idx} (term {term}) lost; log is ({purged}, {last}]"
            );
        }
        let vote = log.read_vote().await.unwrap().map(|v| v.leader_id.term);
        assert!(
            vote == model.vote || (model.voting.is_some() && vote == model.voting),
            "round {round}: vote {vote:?}, last saved {:?} (in flight {:?})",
            model.vote,
            model.voting
        );
        // The disk is the truth from here on: entries past the acknowledged
        // ones (written, not yet acknowledged) survived the kill; keep them.
        model.acked = entries.iter().map(|e| (e.log_id.index, e.log_id.leader_id.term)).collect();
        model.purged = purged;
        model.vote = vote;
        model.voting = None;
        model.truncating = None;
    });
}

#[test]
fn sigkill_never_loses_acknowledged_log_entries() {
    if let Ok(dir) = std::env::var(CHILD_ENV) {
        let seed = std::env::var(CHILD_SEED_ENV).unwrap().parse().unwrap();
        child(&dir, seed);
    }
    let seed: u64 =
        std::env::var("BATON_CRASH_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or_else(|| rand::rng().random());
    println!("crash test seed={seed}; replay: BATON_CRASH_SEED={seed} cargo test -p baton-raft-store --test crash");
    let mut rng = StdRng::seed_from_u64(seed);
    let dir = tempfile::tempdir().unwrap();
    let mut model = Model::default();
    let started = Instant::now();
    for round in 0..KILLS {
        let mut child = Command::new(std::env::current_exe().unwrap())
            .args(["sigkill_never_loses_acknowledged_log_entries", "--exact", "--nocapture", "--test-threads=1"])
            .env(CHILD_ENV, dir.path())
            .env(CHILD_SEED_ENV, rng.random::<u64>().to_string())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let kill_after = Duration::from_millis(rng.random_range(20..200));
        // The child's libtest prints "test <name> ... " without a newline
        // before the test body runs, so the first line of the child's own
        // output arrives behind it: look for the tag anywhere in the line.
        // (Dropping that first line made a vote or truncate in flight at the
        // kill look unacknowledged-and-unknown.)
        let reader = std::thread::spawn(move || {
            BufReader::new(stdout)
                .lines()
                .map_while(Result::ok)
                .filter_map(|l| l.find(TAG).map(|i| l[i..].to_string()))
                .collect::<Vec<_>>()
        });
        std::thread::sleep(kill_after);
        // SIGKILL: no destructor, no flush, no goodbye.
        unsafe { libc::kill(child.id() as i32, libc::SIGKILL) };
        let status = child.wait().unwrap();
        assert!(!status.success(), "round {round}: child exited on its own: {status}");
        // Lines are complete only up to the last newline; a torn last line is
        // the operation that was in flight, so it is dropped.
        for line in reader.join().unwrap() {
            model.apply(&line);
        }
        verify(dir.path(), &mut model, round);
    }
    println!(
        "{KILLS} kills survived in {:?}: {} acknowledged appends, final log ({}, {}] with {} entries",
        started.elapsed(),
        model.appends,
        model.purged,
        model.acked.keys().last().copied().unwrap_or(model.purged),
        model.acked.len()
    );
    assert!(model.appends >= KILLS, "the child made too little progress to test anything");
}
