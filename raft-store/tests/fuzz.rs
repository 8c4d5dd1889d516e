//! Fuzzed decoders: whatever bytes a peer, a snapshot or the disk hand a
//! node, decoding never panics, and what is refused is refused with a typed
//! error that changes nothing.
//!
//! A seeded harness rather than cargo-fuzz, which needs a nightly toolchain:
//! inputs are arbitrary bytes and byte-level mutations of valid encodings.
//! The codec writes fixed-width integers, so most mutations still decode,
//! and apply(), open and install see well-formed values that lie.
//!
//! `BATON_FUZZ_CASES` sets the cases per target (`make test` runs the
//! default, [`CASES_DEFAULT`]); `BATON_FUZZ_SEED` replays a run. A failing
//! case prints the command that replays it.

use std::collections::BTreeMap;
use std::panic::{AssertUnwindSafe, catch_unwind, resume_unwind};

use baton_raft_store::*;
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse, VoteRequest,
    VoteResponse,
};
use openraft::storage::RaftStateMachine;
use openraft::{CommittedLeaderId, EntryPayload, RaftSnapshotBuilder, Vote};
use rand::rngs::StdRng;
use rand::{Rng, RngCore, SeedableRng};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_bytes::ByteBuf;

mod common;
use common::Rig;

/// Cases per target in `make test`: a few seconds in all on 2 cores.
const CASES_DEFAULT: usize = 5_000;
/// Cases of the RocksDB install target, which writes a generation per case.
const INSTALL_CASES_DEFAULT: usize = 24;

fn cases(default: usize) -> usize {
    std::env::var("BATON_FUZZ_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

/// The run's seed: `BATON_FUZZ_SEED`, or a fresh one.
fn seed() -> u64 {
    std::env::var("BATON_FUZZ_SEED").ok().and_then(|v| v.parse().ok()).unwrap_or_else(rand::random)
}

/// Run `case` `n` times from `target`'s seeded generator. A panic names the
/// case and prints the command that replays the run.
fn run(target: &str, n: usize, mut case: impl FnMut(&mut StdRng, usize)) {
    let seed = seed();
    println!("{target}: {n} cases, seed {seed}");
    let mut rng = StdRng::seed_from_u64(seed);
    for i in 0..n {
        if let Err(p) = catch_unwind(AssertUnwindSafe(|| case(&mut rng, i))) {
            eprintln!(
                "{target}: case {i} failed; replay: BATON_FUZZ_SEED={seed} BATON_FUZZ_CASES={n} \
                 cargo test --workspace --test fuzz {target}"
            );
            resume_unwind(p);
        }
    }
}

/// Prints the replay command if the case it guards panics.
struct Replay(String);

impl Drop for Replay {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("{}", self.0);
        }
    }
}

/// Values the codec's fixed-width integers hold at their edges.
const EDGES: [u64; 8] = [0, 1, 0x7f, 0x80, 0xffff_ffff, 1 << 32, i64::MAX as u64, u64::MAX];

/// One to four byte-level mutations of `b`: bit flips, edge values written
/// over 1, 4 or 8 bytes, cuts, inserts and repeats.
fn mutate(rng: &mut StdRng, mut b: Vec<u8>) -> Vec<u8> {
    for _ in 0..rng.random_range(1..=4) {
        let at = if b.is_empty() { 0 } else { rng.random_range(0..b.len()) };
        match rng.random_range(0..6) {
            0 if !b.is_empty() => b[at] ^= 1 << rng.random_range(0..8),
            1 if !b.is_empty() => {
                let v = EDGES[rng.random_range(0..EDGES.len())].to_le_bytes();
                let w = [1, 4, 8][rng.random_range(0..3)];
                let end = (at + w).min(b.len());
                b[at..end].copy_from_slice(&v[..end - at]);
            }
            2 => b.truncate(at),
            3 => {
                let mut extra = vec![0u8; rng.random_range(1..9)];
                rng.fill_bytes(&mut extra);
                b.splice(at..at, extra);
            }
            4 if !b.is_empty() => {
                let end = rng.random_range(at..=b.len());
                let piece = b[at..end].to_vec();
                b.splice(at..at, piece);
            }
            _ => {
                let mut junk = vec![0u8; rng.random_range(0..64)];
                rng.fill_bytes(&mut junk);
                b.extend_from_slice(&junk);
            }
        }
    }
    b
}

/// Arbitrary bytes, or a mutation of one of `valid`.
fn input(rng: &mut StdRng, valid: &[Vec<u8>]) -> Vec<u8> {
    if valid.is_empty() || rng.random_bool(0.15) {
        let mut b = vec![0u8; rng.random_range(0..256)];
        rng.fill_bytes(&mut b);
        if rng.random_bool(0.5) && !b.is_empty() {
            b[0] = codec::FORMAT_VERSION;
        }
        return b;
    }
    let pick = rng.random_range(0..valid.len());
    mutate(rng, valid[pick].clone())
}

fn chunk(lines: u32) -> LogChunk {
    let mut raw = Vec::new();
    for i in 0..lines {
        let msg = format!("line {i} of the fuzz seed");
        raw.extend_from_slice(&(1_700_000_000_000u64 + u64::from(i)).to_le_bytes());
        raw.push(2);
        raw.extend_from_slice(&(msg.len() as u16).to_le_bytes());
        raw.extend_from_slice(msg.as_bytes());
    }
    LogChunk::from_parts(lines, ChunkEncoding::Raw, raw)
}

/// A small history touching most tables: jobs with payloads, labels and
/// idempotency keys, grants, results with logs, a failure, a cancel, a
/// pause, namespace settings. Returns the rig and the commands it applied.
fn seeded() -> (Rig, Vec<Command>) {
    let mut r = Rig::new(1_700_000_000_000, 10);
    let mut cmds = Vec::new();
    let mut apply = |r: &mut Rig, cmd: Command| {
        cmds.push(cmd.clone());
        r.apply(cmd)
    };
    for j in 0..6u64 {
        let mut spec = JobSpec::with_shards(if j % 2 == 0 { "a" } else { "b" }, 3);
        spec.payloads = (0..3u8).map(|s| ByteBuf::from(vec![s; 16])).collect();
        spec.labels.insert("team".into(), format!("t{j}"));
        spec.idempotency_key = Some(format!("key-{j}"));
        spec.retention_ms = (j == 3).then_some(60_000);
        apply(&mut r, Command::SubmitJob(spec));
    }
    let session = r.session;
    for j in 1..=4u64 {
        for s in 0..3u32 {
            let task = TaskKey::new(j, s);
            apply(&mut r, Command::AssignTasks { assignments: vec![Assign { task, session }] });
            let token = r.index;
            let cmd = match (j, s) {
                (1, _) | (2, 0) => {
                    Command::CompleteTask { task, token, result: ByteBuf::from(vec![s as u8; 8]), logs: chunk(3) }
                }
                (2, 1) => Command::FailTask { task, token, error: "boom".into(), retryable: false, logs: chunk(1) },
                (3, _) => Command::AppendLogs { task, token, lines: chunk(2) },
                _ => Command::ReportProgress { task, token, progress_bp: 5_000, message: "half".into() },
            };
            apply(&mut r, cmd);
        }
    }
    apply(&mut r, Command::CancelJob { job: 5, reason: "fuzz".into() });
    apply(&mut r, Command::PauseJob { job: 6, paused: true });
    apply(&mut r, Command::PauseNamespace { namespace: "b".into(), paused: true });
    apply(&mut r, Command::SetNamespaceRetention { namespace: "a".into(), retention_ms: Some(120_000) });
    apply(&mut r, Command::SetNamespaceIdempotencyWindow { namespace: "a".into(), window_ms: Some(60_000) });
    apply(
        &mut r,
        Command::RegisterWorker {
            name: "w2".into(),
            labels: BTreeMap::new(),
            capacity: 2,
            namespaces: Some(["a".to_string()].into()),
        },
    );
    (r, cmds)
}

fn encodings<T: Serialize>(values: &[T]) -> Vec<Vec<u8>> {
    values.iter().map(|v| codec::encode(v).unwrap()).collect()
}

/// Decoding `T` from fuzzed bytes returns a value or a typed error. A value
/// decoded from bytes re-encodes to the same bytes: no two encodings of one
/// value, so a replica never stores a record another would write otherwise.
fn decodes_cleanly<T: Serialize + DeserializeOwned>(target: &str, valid: Vec<Vec<u8>>) {
    run(target, cases(CASES_DEFAULT), |rng, _| {
        let bytes = input(rng, &valid);
        if let Ok(v) = codec::decode::<T>(&bytes) {
            assert_eq!(codec::encode(&v).unwrap(), bytes, "{target}: a decoded value encodes otherwise");
        }
    });
}

fn entry(index: u64, cmd: Command) -> Entry {
    Entry {
        log_id: LogId::new(CommittedLeaderId::new(3, 1), index),
        payload: EntryPayload::Normal(Proposal { proposed_at_ms: 1_700_000_100_000 + index, cmd }),
    }
}

#[test]
fn command_decoding() {
    let (_, cmds) = seeded();
    let proposals: Vec<Proposal> = cmds.into_iter().map(|cmd| Proposal { proposed_at_ms: 7, cmd }).collect();
    decodes_cleanly::<Proposal>("command_decoding", encodings(&proposals));
}

#[test]
fn log_entry_decoding() {
    let (_, cmds) = seeded();
    let entries: Vec<Entry> = cmds.into_iter().enumerate().map(|(i, c)| entry(i as u64 + 1, c)).collect();
    decodes_cleanly::<Entry>("log_entry_decoding", encodings(&entries));
}

/// Every Raft RPC's request and reply, as the transport decodes them.
#[test]
fn raft_message_decoding() {
    let (_, cmds) = seeded();
    let entries: Vec<Entry> = cmds.into_iter().enumerate().map(|(i, c)| entry(i as u64 + 1, c)).collect();
    let vote = Vote::new_committed(3, 1);
    let appends: Vec<AppendEntriesRequest<TypeConfig>> = entries
        .chunks(5)
        .map(|c| AppendEntriesRequest {
            vote,
            prev_log_id: Some(LogId::new(CommittedLeaderId::new(3, 1), 4)),
            entries: c.to_vec(),
            leader_commit: Some(LogId::new(CommittedLeaderId::new(3, 1), 2)),
        })
        .collect();
    decodes_cleanly::<AppendEntriesRequest<TypeConfig>>("raft_append_decoding", encodings(&appends));
    let replies: Vec<AppendEntriesResponse<NodeId>> = vec![
        AppendEntriesResponse::Success,
        AppendEntriesResponse::PartialSuccess(Some(LogId::new(CommittedLeaderId::new(3, 1), 9))),
        AppendEntriesResponse::Conflict,
        AppendEntriesResponse::HigherVote(Vote::new(9, 2)),
    ];
    decodes_cleanly::<AppendEntriesResponse<NodeId>>("raft_append_reply_decoding", encodings(&replies));
    let votes = vec![VoteRequest::new(Vote::new(4, 2), Some(LogId::new(CommittedLeaderId::new(3, 1), 7)))];
    decodes_cleanly::<VoteRequest<NodeId>>("raft_vote_decoding", encodings(&votes));
    let vote_replies =
        vec![VoteResponse::new(Vote::new(4, 2), Some(LogId::new(CommittedLeaderId::new(3, 1), 7)), true)];
    decodes_cleanly::<VoteResponse<NodeId>>("raft_vote_reply_decoding", encodings(&vote_replies));
    let snaps: Vec<InstallSnapshotRequest<TypeConfig>> = (0..3u64)
        .map(|i| InstallSnapshotRequest {
            vote,
            meta: SnapshotMeta {
                last_log_id: Some(LogId::new(CommittedLeaderId::new(3, 1), 40 + i)),
                last_membership: Default::default(),
                snapshot_id: format!("snap-{i}"),
            },
            offset: i * 1024,
            data: vec![i as u8; 64],
            done: i == 2,
        })
        .collect();
    decodes_cleanly::<InstallSnapshotRequest<TypeConfig>>("raft_snapshot_decoding", encodings(&snaps));
    let snap_replies = vec![InstallSnapshotResponse { vote }];
    decodes_cleanly::<InstallSnapshotResponse<NodeId>>("raft_snapshot_reply_decoding", encodings(&snap_replies));
}

/// Fuzzed commands that decode are applied to a seeded state: apply never
/// panics, and what it accepts reopens to the same indexes. The same command
/// at the next log time, if refused, changes nothing. (At a fuzzed log time
/// the entry also runs the collector, which may delete what retention let
/// go: that is the entry's doing, not the refused command's.)
#[test]
fn decoded_commands_apply_or_are_refused_without_change() {
    let (seed_rig, cmds) = seeded();
    let next_ms = seed_rig.now_ms + 10;
    let proposals: Vec<Proposal> = cmds.into_iter().map(|cmd| Proposal { proposed_at_ms: next_ms, cmd }).collect();
    let valid = encodings(&proposals);
    let (mut applied, mut refused) = (0, 0);
    let index = seed_rig.index + 1;
    let apply = |p: Proposal| {
        let mut kv = seed_rig.kv.clone();
        let mut core = Core::open(&kv).unwrap();
        let e = Entry { log_id: LogId::new(CommittedLeaderId::new(3, 1), index), payload: EntryPayload::Normal(p) };
        let r = core.apply_entry(&kv, &e).unwrap();
        kv.write(core.take_writes().unwrap());
        (r, kv, core)
    };
    let without_meta = |kv: &MemKv| {
        let mut m = kv.0.clone();
        m.remove(&keys::meta());
        m
    };
    run("decoded_commands_apply", cases(CASES_DEFAULT), |rng, _| {
        let Ok(p) = codec::decode::<Proposal>(&input(rng, &valid)) else { return };
        let cmd = p.cmd.clone();
        let (r, kv, core) = apply(p);
        if !matches!(r, Response::Rejected(_)) {
            assert_eq!(Core::open(&kv).unwrap().idx.canonical(), core.idx.canonical(), "reopen differs");
        }
        let (r, after, _) = apply(Proposal { proposed_at_ms: next_ms, cmd });
        match r {
            Response::Rejected(err) => {
                refused += 1;
                assert!(without_meta(&after) == without_meta(&seed_rig.kv), "refused ({err}) yet changed state");
            }
            _ => applied += 1,
        }
    });
    println!("decoded commands: {applied} applied, {refused} refused");
    assert!(applied > 0 && refused > 0, "{applied} applied, {refused} refused: the mutations are too coarse");
}

/// Stored records with fuzzed keys or values: opening returns a core or a
/// typed error, never a panic.
#[test]
fn stored_record_decoding_on_open() {
    let (r, _) = seeded();
    let records: Vec<(Vec<u8>, Vec<u8>)> = r.kv.0.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
    let (mut opened, mut refused) = (0, 0);
    run("stored_record_decoding", cases(CASES_DEFAULT), |rng, _| {
        let mut kv = r.kv.clone();
        for _ in 0..rng.random_range(1..=3) {
            let (k, v) = &records[rng.random_range(0..records.len())];
            if rng.random_bool(0.8) {
                kv.0.insert(k.clone(), mutate(rng, v.clone()));
            } else {
                kv.0.remove(k);
                kv.0.insert(mutate(rng, k.clone()), v.clone());
            }
        }
        match Core::open(&kv) {
            Ok(_) => opened += 1,
            Err(_) => refused += 1,
        }
    });
    println!("fuzzed stores: {opened} opened, {refused} refused with an error");
}

/// A built snapshot, read back through the reader after fuzzing: records or
/// a typed error, never a panic, and never more than one record in memory.
#[tokio::test]
async fn snapshot_decoding() {
    let (r, cmds) = seeded();
    let dir = tempfile::tempdir().unwrap();
    let (_log, mut sm) = open_store(dir.path()).unwrap();
    sm.apply(cmds.into_iter().enumerate().map(|(i, c)| entry(i as u64 + 1, c))).await.unwrap();
    drop(r);
    let mut snap = sm.get_snapshot_builder().await.build_snapshot().await.unwrap();
    let mut bytes = Vec::new();
    tokio::io::AsyncReadExt::read_to_end(&mut snap.snapshot, &mut bytes).await.unwrap();
    let valid = vec![bytes];
    let (mut whole, mut refused) = (0, 0);
    run("snapshot_decoding", cases(CASES_DEFAULT), |rng, _| {
        let b = input(rng, &valid);
        let read = (|| -> Result<u64, StoreError> {
            let (mut reader, _meta) = snapshot::Reader::new(&b[..])?;
            let mut n = 0;
            while reader.next_record()?.is_some() {
                n += 1;
            }
            Ok(n)
        })();
        match read {
            Ok(_) => whole += 1,
            Err(_) => refused += 1,
        }
    });
    println!("fuzzed snapshot files: {whole} read whole, {refused} refused");
    assert!(refused > 0);
}

/// Snapshots whose records were fuzzed and then re-checksummed (what a
/// hostile or broken peer could send): install either succeeds or fails
/// with an error, and a failed install leaves the receiver's state as it was.
#[tokio::test]
async fn fuzzed_snapshot_install_changes_nothing_when_refused() {
    let (_, cmds) = seeded();
    let (dir_a, dir_b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (_la, mut sm_a) = open_store(dir_a.path()).unwrap();
    let (_lb, mut sm_b) = open_store(dir_b.path()).unwrap();
    sm_a.apply(cmds.into_iter().enumerate().map(|(i, c)| entry(i as u64 + 1, c))).await.unwrap();
    sm_b.apply([entry(1, Command::SubmitJob(JobSpec::with_shards("other", 2)))]).await.unwrap();
    let mut snap = sm_a.get_snapshot_builder().await.build_snapshot().await.unwrap();
    let mut bytes = Vec::new();
    tokio::io::AsyncReadExt::read_to_end(&mut snap.snapshot, &mut bytes).await.unwrap();
    let (mut reader, meta) = snapshot::Reader::new(&bytes[..]).unwrap();
    let mut records = Vec::new();
    while let Some(r) = reader.next_record().unwrap() {
        records.push(r);
    }
    let seed = seed();
    let n = cases(INSTALL_CASES_DEFAULT);
    println!("fuzzed_snapshot_install: {n} cases, seed {seed}");
    let mut rng = StdRng::seed_from_u64(seed);
    let (mut installed, mut refused) = (0, 0);
    for i in 0..n {
        let mut recs = records.clone();
        for _ in 0..rng.random_range(1..=3) {
            let at = rng.random_range(0..recs.len());
            let v = mutate(&mut rng, recs[at].1.clone());
            recs[at].1 = v;
        }
        let mut w = snapshot::Writer::new(Vec::new(), &meta).unwrap();
        for (k, v) in &recs {
            w.record(k, v).unwrap();
        }
        let file = w.finish().unwrap();
        let before = sm_b.state_hash().unwrap().1;
        let mut recv = sm_b.begin_receiving_snapshot().await.unwrap();
        tokio::io::AsyncWriteExt::write_all(&mut *recv, &file).await.unwrap();
        let replay = format!(
            "replay: BATON_FUZZ_SEED={seed} BATON_FUZZ_CASES={n} cargo test --workspace --test fuzz fuzzed_snapshot_install (case {i})"
        );
        let _replay = Replay(replay.clone());
        match sm_b.install_snapshot(&snap.meta, recv).await {
            Ok(()) => {
                installed += 1;
                // Back to a state unlike the next case's source.
                sm_b.apply([entry(snap.meta.last_log_id.unwrap().index + 1, Command::CollectGarbage)]).await.unwrap();
            }
            Err(_) => {
                refused += 1;
                assert_eq!(sm_b.state_hash().unwrap().1, before, "a refused install changed state; {replay}");
            }
        }
    }
    println!("fuzzed installs: {installed} installed, {refused} refused");
}
