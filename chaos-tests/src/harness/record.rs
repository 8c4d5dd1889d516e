//! Recording events from several processes and merging them into one history.
//!
//! Every process (the harness, each worker) appends raw lines to its own
//! file: the event plus a CLOCK_MONOTONIC timestamp in µs, which all
//! processes on one machine share. Each line is written and flushed at once,
//! so a SIGKILLed worker loses nothing it recorded. [`merge`] orders all
//! lines by time and turns them into a [`History`].

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};

use crate::history::{Body, Event, History, TaskKey, Token};

/// Microseconds on CLOCK_MONOTONIC: comparable across processes on this host.
pub fn mono_us() -> u64 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: clock_gettime writes into the timespec we own.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000 + ts.tv_nsec as u64 / 1_000
}

#[derive(Serialize, Deserialize)]
struct Raw {
    us: u64,
    /// Order within one file, for events with equal timestamps.
    n: u64,
    #[serde(flatten)]
    body: Body,
}

/// Appends one process's events to its raw file.
pub struct Recorder {
    path: PathBuf,
    inner: Mutex<(File, u64)>,
}

impl Recorder {
    /// Open the raw file at `path` for appending: a restarted worker keeps
    /// adding to the file of its name.
    pub fn create(path: &Path) -> Result<Recorder> {
        let f = OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .with_context(|| format!("cannot create {}", path.display()))?;
        Ok(Recorder { path: path.to_owned(), inner: Mutex::new((f, 0)) })
    }

    /// Record `body` now.
    pub fn record(&self, body: impl Into<Body>) {
        let mut g = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        let n = g.1;
        g.1 += 1;
        let mut line = serde_json::to_vec(&Raw { us: mono_us(), n, body: body.into() }).expect("events serialize");
        line.push(b'\n');
        // One write per line: a crash leaves whole lines, at worst a torn last one.
        if let Err(e) = g.0.write_all(&line) {
            tracing::error!(path = %self.path.display(), error = %e, "cannot record event");
        }
    }
}

/// What [`merge`] had to do besides sorting.
#[derive(Debug, Default, Clone, Copy)]
pub struct MergeStats {
    /// Raw events read.
    pub events: usize,
    /// Assign events observed after a newer token of the same task and moved
    /// back to just before it (see [`merge`]).
    pub late_assigns: usize,
    /// Torn last lines skipped (a process killed mid-write).
    pub torn_lines: usize,
}

/// Merge raw files into one history, with times relative to `start_us`.
///
/// Tokens are Raft log indexes, so a grant with a smaller token was committed
/// before one with a larger token. A worker that was paused can *observe* an
/// old grant after another worker observed a newer one; the assign event is
/// then moved to just before the first newer assign of that task. This keeps
/// the history's assigns in grant order, which the fencing check requires,
/// without hiding anything: no reply or complete moves.
pub fn merge(files: &[PathBuf], start_us: u64) -> Result<(History, MergeStats)> {
    let mut stats = MergeStats::default();
    let mut raw: Vec<(u64, usize, u64, Body)> = Vec::new();
    for (i, path) in files.iter().enumerate() {
        let f = match File::open(path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(e).with_context(|| format!("cannot open {}", path.display())),
        };
        let lines: Vec<String> = BufReader::new(f).lines().collect::<Result<_, _>>()?;
        let last = lines.len();
        for (k, line) in lines.into_iter().enumerate() {
            if line.trim().is_empty() {
                continue;
            }
            match serde_json::from_str::<Raw>(&line) {
                Ok(r) => raw.push((r.us, i, r.n, r.body)),
                Err(_) if k + 1 == last => stats.torn_lines += 1,
                Err(e) => return Err(e).with_context(|| format!("{}:{}", path.display(), k + 1)),
            }
        }
    }
    raw.sort_by_key(|r| (r.0, r.1, r.2));
    stats.events = raw.len();

    // Move late assigns: position -> events to insert before it.
    let mut first_pos: BTreeMap<(TaskKey, Token), usize> = BTreeMap::new();
    let mut max_tok: BTreeMap<TaskKey, Token> = BTreeMap::new();
    let mut moved: BTreeMap<usize, Vec<usize>> = BTreeMap::new();
    for (pos, r) in raw.iter().enumerate() {
        if let Body::Assign(a) = &r.3 {
            let task = a.task();
            match max_tok.get(&task) {
                Some(&m) if a.token < m => {
                    // Before the first assign of this task with a larger token.
                    let target =
                        first_pos.range((task, a.token + 1)..=(task, Token::MAX)).map(|(_, &p)| p).min().unwrap_or(pos);
                    moved.entry(target).or_default().push(pos);
                    stats.late_assigns += 1;
                    continue;
                }
                _ => {}
            }
            max_tok.insert(task, a.token.max(max_tok.get(&task).copied().unwrap_or(0)));
            first_pos.entry((task, a.token)).or_insert(pos);
        }
    }
    let moved_set: std::collections::BTreeSet<usize> = moved.values().flatten().copied().collect();
    // (position, time to use): a moved event takes its new neighbour's time.
    let mut order = Vec::with_capacity(raw.len());
    for (pos, r) in raw.iter().enumerate() {
        if let Some(before) = moved.get(&pos) {
            order.extend(before.iter().map(|&p| (p, r.0)));
        }
        if !moved_set.contains(&pos) {
            order.push((pos, r.0));
        }
    }
    let mut slots: Vec<Option<Body>> = raw.into_iter().map(|r| Some(r.3)).collect();
    let mut events = Vec::with_capacity(order.len());
    for (seq, (pos, us)) in order.into_iter().enumerate() {
        let body = slots[pos].take().expect("each event placed once");
        events.push(Event { seq: seq as u64 + 1, t: us.saturating_sub(start_us) / 1000, body });
    }
    Ok((History::from_events(events)?, stats))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::history::Assign;

    fn assign(worker: &str, token: Token) -> Body {
        Body::Assign(Assign { worker: worker.into(), job: 1, shard: 0, token, step: None })
    }

    #[test]
    fn merge_orders_by_time_and_moves_late_assigns_before_the_newer_grant() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = (dir.path().join("a"), dir.path().join("b"));
        let write = |p: &Path, lines: &[(u64, Body)]| {
            let mut f = File::create(p).unwrap();
            for (n, (us, body)) in lines.iter().enumerate() {
                let raw = Raw { us: *us, n: n as u64, body: body.clone() };
                writeln!(f, "{}", serde_json::to_string(&raw).unwrap()).unwrap();
            }
            // A torn last line, as a SIGKILL mid-write leaves.
            write!(f, "{{\"us\":").unwrap();
        };
        // Worker b observed token 5 at 2000 µs, after worker a saw token 9 at 1500 µs.
        write(&a, &[(1_000, assign("a", 3)), (1_500, assign("a", 9))]);
        write(&b, &[(2_000, assign("b", 5))]);
        let (h, stats) = merge(&[a, b], 0).unwrap();
        let tokens: Vec<Token> = h
            .events()
            .iter()
            .map(|e| match &e.body {
                Body::Assign(x) => x.token,
                _ => unreachable!(),
            })
            .collect();
        assert_eq!(tokens, vec![3, 5, 9]);
        assert_eq!(stats.late_assigns, 1);
        assert_eq!(stats.torn_lines, 2);
        let seqs: Vec<u64> = h.events().iter().map(|e| e.seq).collect();
        assert_eq!(seqs, vec![1, 2, 3]);
    }
}
