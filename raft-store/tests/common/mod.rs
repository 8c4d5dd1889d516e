//! The apply rig the command-level tests share: a core over a `MemKv`, one
//! registered worker, entries applied one at a time and written at once.

#![allow(dead_code)]

use std::collections::BTreeMap;

use baton_raft_store::*;
use openraft::{CommittedLeaderId, EntryPayload};

pub struct Rig {
    pub kv: MemKv,
    pub core: Core,
    pub index: u64,
    /// The next entry's log time.
    pub now_ms: u64,
    /// Added to `now_ms` before each entry (0: time moves only when a test moves it).
    pub tick_ms: u64,
    /// The session of the worker registered at the start.
    pub session: SessionId,
}

impl Rig {
    pub fn new(now_ms: u64, tick_ms: u64) -> Rig {
        let kv = MemKv::default();
        let core = Core::open(&kv).unwrap();
        let mut r = Rig { kv, core, index: 0, now_ms, tick_ms, session: 0 };
        match r.ok(Command::RegisterWorker {
            name: "w".into(),
            labels: BTreeMap::new(),
            capacity: 10_000,
            namespaces: None,
        }) {
            Outcome::Registered { session, .. } => r.session = session,
            o => panic!("{o:?}"),
        }
        r
    }

    pub fn apply(&mut self, cmd: Command) -> Response {
        self.index += 1;
        self.now_ms += self.tick_ms;
        let e = Entry {
            log_id: LogId::new(CommittedLeaderId::new(1, 1), self.index),
            payload: EntryPayload::Normal(Proposal { proposed_at_ms: self.now_ms, cmd }),
        };
        let r = self.core.apply_entry(&self.kv, &e).unwrap();
        let w = self.core.take_writes().unwrap();
        self.kv.write(w);
        r
    }

    pub fn ok(&mut self, cmd: Command) -> Outcome {
        match self.apply(cmd) {
            Response::Done(o) => o,
            r => panic!("rejected: {r:?}"),
        }
    }

    /// A refused command changes nothing but meta (last applied, log time).
    pub fn err(&mut self, cmd: Command) -> CommandError {
        let records = |r: &Rig| {
            let mut m = r.kv.0.clone();
            m.remove(&keys::meta());
            (m, r.core.idx.canonical())
        };
        let before = records(self);
        let e = match self.apply(cmd) {
            Response::Rejected(e) => e,
            r => panic!("expected a rejection, got {r:?}"),
        };
        assert!(records(self) == before, "a refused command changed state: {e}");
        e
    }

    pub fn job(&self, id: JobId) -> JobRecord {
        self.core.job(&self.kv, id).unwrap().unwrap()
    }

    /// Indexes rebuilt from the records equal the ones apply() kept.
    pub fn assert_reopens(&self) {
        let reopened = Core::open(&self.kv).unwrap();
        assert_eq!(reopened.idx.canonical(), self.core.idx.canonical());
    }
}
