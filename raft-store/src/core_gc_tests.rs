//! The collector's cursor and budget, at the level of the core's overlay:
//! what is read from disk and what is still unwritten must give the same
//! deletions, and a target that spans entries resumes where it stopped,
//! also after a reopen.

use std::collections::BTreeMap;

use openraft::{CommittedLeaderId, EntryPayload};

use super::*;
use crate::kv::MemKv;
use crate::lifecycle::{LogChunk, LogLevel, LogLine};

const T0: u64 = 1_700_000_000_000;

struct Rig {
    core: Core,
    kv: MemKv,
    index: u64,
    now_ms: u64,
}

impl Rig {
    fn new() -> Rig {
        let kv = MemKv::default();
        Rig { core: Core::open(&kv).unwrap(), kv, index: 0, now_ms: T0 }
    }

    /// Apply without writing out: the changes stay in the overlay.
    fn apply(&mut self, cmd: Command) -> Outcome {
        self.index += 1;
        self.now_ms += 10;
        let e = Entry {
            log_id: LogId::new(CommittedLeaderId::new(1, 1), self.index),
            payload: EntryPayload::Normal(Proposal { proposed_at_ms: self.now_ms, cmd: cmd.clone() }),
        };
        match self.core.apply_entry(&self.kv, &e).unwrap() {
            Response::Done(o) => o,
            r => panic!("{cmd:?}: {r:?}"),
        }
    }

    fn flush(&mut self) {
        let w = self.core.take_writes().unwrap();
        self.kv.write(w);
    }

    /// A finished job of `shards` shards, each with `attempts` log records,
    /// kept for 0 ms; returns its id.
    /// A job whose every attempt logged a line; returns it and the log
    /// keys, (task, token), in key order.
    fn logged_job(&mut self, shards: u32, attempts: u32, flush_every: u32) -> (JobId, Vec<(TaskKey, Token)>) {
        let session = match self.apply(Command::RegisterWorker {
            name: format!("w{}", self.index),
            labels: BTreeMap::new(),
            capacity: 10,
            namespaces: None,
        }) {
            Outcome::Registered { session, .. } => session,
            o => panic!("{o:?}"),
        };
        let mut spec = JobSpec::with_shards("ns", shards as usize);
        spec.retention_ms = Some(0);
        spec.max_attempts = attempts;
        spec.backoff = Backoff { base_ms: 0, max_ms: 0 };
        let Outcome::Submitted { job, .. } = self.apply(Command::SubmitJob(spec)) else { panic!() };
        let mut n = 0;
        let mut logged = Vec::new();
        for shard in 0..shards {
            let task = TaskKey::new(job, shard);
            for a in 0..attempts {
                let assignments = vec![Assign { task, session }];
                let Outcome::Assigned(g) = self.apply(Command::AssignTasks { assignments }) else { panic!() };
                let token = g[0].as_ref().unwrap().token;
                logged.push((task, token));
                let lines =
                    LogChunk::of_lines(&[LogLine { at_ms: 0, level: LogLevel::Info, message: format!("{shard}/{a}") }])
                        .unwrap();
                self.apply(Command::AppendLogs { task, token, lines });
                self.apply(Command::FailTask {
                    task,
                    token,
                    error: "e".into(),
                    retryable: true,
                    logs: Default::default(),
                });
                n += 1;
                if n % flush_every == 0 {
                    self.flush();
                }
            }
        }
        logged.sort();
        (job, logged)
    }
}

#[test]
fn log_keys_after_the_cursor_are_merged_from_disk_and_overlay() {
    let mut r = Rig::new();
    // Some logs are written out, the rest are still in the overlay.
    let (job, want) = r.logged_job(3, 3, 4);
    assert_eq!(want.len(), 9);
    let all = r.core.next_log_keys(&r.kv, job, None, 100).unwrap();
    assert_eq!(all, want);
    let on_disk = r.kv.0.keys().filter(|k| k[0] == Table::TaskLog as u8).count();
    assert!(on_disk > 0 && on_disk < 9, "{on_disk} of 9 on disk: both sources are used");
    assert_eq!(r.core.next_log_keys(&r.kv, job, None, 4).unwrap(), want[..4]);
    assert_eq!(r.core.next_log_keys(&r.kv, job, Some(want[3]), 3).unwrap(), want[4..7]);
    assert_eq!(r.core.next_log_keys(&r.kv, job, Some(want[8]), 3).unwrap(), []);
    assert_eq!(r.core.next_log_keys(&r.kv, job + 1, None, 3).unwrap(), [], "another job's range");
    assert_eq!(r.core.next_log_keys(&r.kv, job, None, 0).unwrap(), []);
}

/// A job that takes several entries: the cursor in `Meta::gc` moves shard
/// by shard, then through the logs, and survives a reopen.
#[test]
fn a_job_spanning_entries_resumes_at_its_cursor() {
    let mut r = Rig::new();
    // 300 shards (600 keys) and 4 logs each (1200 keys): more than 3 budgets.
    let (job, logged) = r.logged_job(300, 4, 50);
    r.flush();
    let Outcome::Collected { keys_deleted } = r.apply(Command::CollectGarbage) else { panic!() };
    assert_eq!(keys_deleted as usize, GC_KEYS_PER_ENTRY);
    let p = r.core.meta.gc.clone().expect("a cursor");
    assert_eq!((p.target, p.next_shard, p.last_log_key), (GcTarget::Job(job), 256, None));
    r.flush();
    r.apply(Command::CollectGarbage);
    let p = r.core.meta.gc.clone().expect("a cursor");
    assert_eq!(p.next_shard, 300);
    // 512 - 2 * 44 shards = 424 log keys: 106 shards of 4 attempts.
    assert_eq!(p.last_log_key, Some(logged[423]));
    assert_eq!(logged[423].0, TaskKey::new(job, 105));
    // A restart resumes from the stored cursor; the target is not queued twice.
    r.flush();
    let reopened = Core::open(&r.kv).unwrap();
    assert_eq!(reopened.meta.gc, r.core.meta.gc);
    assert_eq!(reopened.idx.canonical(), r.core.idx.canonical());
    assert!(!reopened.idx.expiry.iter().any(|(_, t)| *t == GcTarget::Job(job)));
    r.core = reopened;
    // 776 log keys left: a full budget, then 264 and the end (index keys and record).
    let mut per_entry = Vec::new();
    while r.core.meta.gc.is_some() {
        let Outcome::Collected { keys_deleted } = r.apply(Command::CollectGarbage) else { panic!() };
        per_entry.push(keys_deleted as usize);
    }
    assert_eq!(per_entry, [GC_KEYS_PER_ENTRY, 264 + JOB_END_KEYS]);
    r.flush();
    assert!(r.core.job(&r.kv, job).unwrap().is_none());
    let left: Vec<String> = r
        .kv
        .0
        .keys()
        .filter(|k| matches!(Table::from_tag(k[0]), Some(Table::Job | Table::Task | Table::Payload | Table::TaskLog)))
        .map(|k| keys::describe(k))
        .collect();
    assert_eq!(left, Vec::<String>::new());
    assert_eq!(r.kv.0.keys().filter(|k| k[0] == Table::JobIndex as u8).count(), 0);
}

/// The end of a job needs its index keys and record in one budget: with
/// fewer keys left, it waits for the next entry with the cursor at the end.
#[test]
fn the_last_step_of_a_job_waits_for_room() {
    let mut r = Rig::new();
    let cancelled = |r: &mut Rig, shards: usize| {
        let mut spec = JobSpec::with_shards("ns", shards);
        spec.retention_ms = Some(0);
        let Outcome::Submitted { job, .. } = r.apply(Command::SubmitJob(spec)) else { panic!() };
        r.apply(Command::CancelJob { job, reason: String::new() });
        job
    };
    // 254 shards take 508 keys: the 4 left are exactly the end.
    let a = cancelled(&mut r, 254);
    let Outcome::Collected { keys_deleted } = r.apply(Command::CollectGarbage) else { panic!() };
    assert_eq!((keys_deleted as usize, r.core.meta.gc.clone()), (GC_KEYS_PER_ENTRY, None));
    assert!(r.core.job(&r.kv, a).unwrap().is_none());
    // 255 shards take 510 keys: 2 left are too few.
    let b = cancelled(&mut r, 255);
    let Outcome::Collected { keys_deleted } = r.apply(Command::CollectGarbage) else { panic!() };
    assert_eq!(keys_deleted, 510);
    let p = r.core.meta.gc.clone().unwrap();
    assert_eq!((p.target, p.next_shard, p.last_log_key), (GcTarget::Job(b), 255, None));
    assert!(r.core.job(&r.kv, b).unwrap().is_some());
    let Outcome::Collected { keys_deleted } = r.apply(Command::CollectGarbage) else { panic!() };
    assert_eq!((keys_deleted as usize, r.core.meta.gc.clone()), (JOB_END_KEYS, None));
    assert!(r.core.job(&r.kv, b).unwrap().is_none());
}
