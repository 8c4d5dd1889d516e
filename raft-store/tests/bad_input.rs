//! Bad input: malformed commands are refused with a typed error and change
//! nothing; corrupt or unknown-version records on disk make open fail with an
//! error naming the column family and the key.

use std::collections::BTreeMap;

use baton_raft_store::*;
use openraft::storage::RaftStateMachine;
use openraft::{CommittedLeaderId, EntryPayload};
use proptest::prelude::*;
use serde_bytes::ByteBuf;

fn entry(index: u64, cmd: Command) -> Entry {
    Entry {
        log_id: LogId::new(CommittedLeaderId::new(1, 1), index),
        payload: EntryPayload::Normal(Proposal { proposed_at_ms: 1_000 + index, cmd }),
    }
}

/// Everything but the meta record, which every entry updates.
fn table(kv: &dyn Kv) -> BTreeMap<Vec<u8>, Vec<u8>> {
    let mut t = BTreeMap::new();
    kv.scan(&[], &mut |k, v| {
        if k != keys::meta().as_slice() {
            t.insert(k.to_vec(), v.to_vec());
        }
        Ok(true)
    })
    .unwrap();
    t
}

/// One line in a chunk's encoding, with any level byte.
fn line_bytes(at_ms: u64, level: u8, message: &str) -> Vec<u8> {
    let mut b = at_ms.to_le_bytes().to_vec();
    b.push(level);
    b.extend_from_slice(&(message.len() as u16).to_le_bytes());
    b.extend_from_slice(message.as_bytes());
    b
}

fn raw_line(at_ms: u64, level: u8, message: &str) -> LogChunk {
    LogChunk::from_parts(1, ChunkEncoding::Raw, line_bytes(at_ms, level, message))
}

fn one_line(message: &str) -> LogChunk {
    raw_line(0, LogLevel::Info as u8, message)
}

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap()
}

#[test]
fn malformed_and_unknown_targets_are_refused_without_change() {
    rt().block_on(async {
        let dir = tempfile::tempdir().unwrap();
        let (_log, mut sm) = open_store(dir.path()).unwrap();
        // Job 1 needs a GPU worker; job 2 runs anywhere.
        let mut spec = JobSpec::with_shards("ns", 2);
        spec.constraints.insert("gpu".into(), "yes".into());
        sm.apply([
            entry(1, Command::RegisterWorker { name: "w".into(), labels: BTreeMap::new(), capacity: 1, namespaces: None }),
            entry(2, Command::SubmitJob(spec)),
            entry(3, Command::SubmitJob(JobSpec::with_shards("ns", 2))),
        ])
        .await
        .unwrap();

        let too_big = {
            let mut s = JobSpec::with_shards("ns", 1);
            s.payloads[0] = ByteBuf::from(vec![0u8; limits::MAX_PAYLOAD_BYTES + 1]);
            s
        };
        let cases: Vec<(Command, fn(&CommandError) -> bool)> = vec![
            (
                Command::SubmitJob(JobSpec::with_shards("ns", 0)),
                |e| matches!(e, CommandError::Invalid { field, .. } if field == "payloads"),
            ),
            (
                Command::SubmitJob(too_big),
                |e| matches!(e, CommandError::Invalid { field, .. } if field == "payloads[0]"),
            ),
            (
                Command::SubmitJob(JobSpec::with_shards("bad\u{0}ns", 1)),
                |e| matches!(e, CommandError::Invalid { field, .. } if field == "namespace"),
            ),
            (
                Command::Batch(vec![Command::Batch(vec![])]),
                |e| matches!(e, CommandError::Invalid { field, .. } if field == "batch"),
            ),
            (
                Command::RegisterWorker { name: String::new(), labels: BTreeMap::new(), capacity: 1, namespaces: None },
                |e| matches!(e, CommandError::Invalid { field, .. } if field == "name"),
            ),
            (Command::ExpireWorker { session: 99, epoch: 1 }, |e| matches!(e, CommandError::SessionNotFound(99))),
            (Command::ExpireWorker { session: 1, epoch: 7 }, |e| matches!(e, CommandError::StaleEpoch { .. })),
            (Command::CancelJob { job: 42, reason: String::new() }, |e| matches!(e, CommandError::JobNotFound(42))),
            (Command::CompleteTask { task: TaskKey::new(2, 9), token: 1, result: ByteBuf::new(), logs: Default::default() }, |e| {
                matches!(e, CommandError::TaskNotFound(_))
            }),
            (Command::CompleteTask { task: TaskKey::new(2, 0), token: 77, result: ByteBuf::new(), logs: Default::default() }, |e| e.is_fenced()),
            (
                Command::FailTask {
                    task: TaskKey::new(2, 0),
                    token: 0,
                    error: "x".repeat(limits::MAX_ERROR_BYTES + 1),
                    retryable: true, logs: Default::default(),
                },
                |e| matches!(e, CommandError::Invalid { field, .. } if field == "error"),
            ),
            (
                Command::ReportProgress {
                    task: TaskKey::new(2, 0),
                    token: 1,
                    progress_bp: 10_001,
                    message: String::new(),
                },
                |e| matches!(e, CommandError::Invalid { field, .. } if field == "progress_bp"),
            ),
            (Command::AssignTasks { assignments: vec![] }, |e| matches!(e, CommandError::Invalid { .. })),
            (Command::DeleteJob { job: 42 }, |e| matches!(e, CommandError::JobNotFound(42))),
            (Command::DeleteJob { job: 2 }, |e| matches!(e, CommandError::JobNotFinished { job: 2 })),
            (Command::RetryJob { job: 42 }, |e| matches!(e, CommandError::JobNotFound(42))),
            (Command::RetryJob { job: 2 }, |e| matches!(e, CommandError::NothingToRetry { job: 2 })),
            (Command::PauseJob { job: 42, paused: true }, |e| matches!(e, CommandError::JobNotFound(42))),
            (Command::SetPriority { job: 42, priority: 1 }, |e| matches!(e, CommandError::JobNotFound(42))),
            (Command::CancelTask { task: TaskKey::new(2, 9), reason: String::new() }, |e| {
                matches!(e, CommandError::TaskNotFound(_))
            }),
            (
                Command::CancelTask { task: TaskKey::new(2, 0), reason: "r".repeat(limits::MAX_ERROR_BYTES + 1) },
                |e| matches!(e, CommandError::Invalid { field, .. } if field == "reason"),
            ),
            (
                Command::PauseNamespace { namespace: String::new(), paused: true },
                |e| matches!(e, CommandError::Invalid { field, .. } if field == "namespace"),
            ),
            (
                Command::SetNamespaceRetention {
                    namespace: "ns".into(),
                    retention_ms: Some(limits::MAX_RETENTION_MS + 1),
                },
                |e| matches!(e, CommandError::Invalid { field, .. } if field == "retention_ms"),
            ),
            (
                Command::SetNamespaceIdempotencyWindow { namespace: "ns".into(), window_ms: Some(0) },
                |e| matches!(e, CommandError::Invalid { field, reason } if field == "idempotency_window_ms" && reason.contains("minimum")),
            ),
            (
                Command::SetNamespaceIdempotencyWindow {
                    namespace: "ns".into(),
                    window_ms: Some(limits::IDEMPOTENCY_WINDOW_MS_MAX + 1),
                },
                |e| matches!(e, CommandError::Invalid { field, reason } if field == "idempotency_window_ms" && reason.contains("limit")),
            ),
            (
                Command::SetNamespaceIdempotencyWindow { namespace: "a\nb".into(), window_ms: None },
                |e| matches!(e, CommandError::Invalid { field, .. } if field == "namespace"),
            ),
            (
                Command::SetNamespaceQuota {
                    namespace: "ns".into(),
                    change: QuotaChange { live_tasks: Some(quota::MAX_QUOTA_LIVE_TASKS + 1), ..QuotaChange::default() },
                },
                |e| matches!(e, CommandError::Invalid { field, reason } if field == "quota.live_tasks" && reason.contains("limit")),
            ),
            (
                Command::SetNamespaceQuota {
                    namespace: "ns".into(),
                    change: QuotaChange { submits_per_sec: Some(quota::MAX_QUOTA_SUBMITS_PER_SEC + 1), ..QuotaChange::default() },
                },
                |e| matches!(e, CommandError::Invalid { field, .. } if field == "quota.submits_per_sec"),
            ),
            (
                Command::SetNamespaceQuota { namespace: String::new(), change: QuotaChange::default() },
                |e| matches!(e, CommandError::Invalid { field, .. } if field == "namespace"),
            ),
            (
                Command::AppendLogs { task: TaskKey::new(2, 0), token: 1, lines: LogChunk::default() },
                |e| matches!(e, CommandError::Invalid { field, .. } if field == "lines"),
            ),
            (
                Command::AppendLogs { task: TaskKey::new(2, 0), token: 1, lines: raw_line(0, 2, &"x".repeat(limits::MAX_LOG_LINE_BYTES + 1)) },
                |e| matches!(e, CommandError::Invalid { field, reason } if field == "lines" && reason.contains("4097 bytes")),
            ),
            (
                Command::AppendLogs { task: TaskKey::new(2, 0), token: 1, lines: raw_line(0, 9, "bad level") },
                |e| matches!(e, CommandError::Invalid { field, reason } if field == "lines" && reason.contains("malformed")),
            ),
            (
                Command::AppendLogs { task: TaskKey::new(2, 0), token: 1, lines: LogChunk::from_parts(2, ChunkEncoding::Raw, line_bytes(0, 2, "one line")) },
                |e| matches!(e, CommandError::Invalid { field, reason } if field == "lines" && reason.contains("malformed")),
            ),
            (
                Command::CompleteTask { task: TaskKey::new(2, 0), token: 1, result: ByteBuf::new(), logs: LogChunk::from_parts(1, ChunkEncoding::Raw, vec![0xff; 20]) },
                |e| matches!(e, CommandError::Invalid { field, .. } if field == "logs"),
            ),
            (
                // An LZ4 chunk claiming 1 GiB of lines: refused before anything is allocated.
                Command::CompleteTask { task: TaskKey::new(2, 0), token: 1, result: ByteBuf::new(), logs: LogChunk::from_parts(1, ChunkEncoding::Lz4, [&(1u32 << 30).to_le_bytes()[..], &[0x10, b'x']].concat()) },
                |e| matches!(e, CommandError::Invalid { field, reason } if field == "logs" && reason.contains("1073741824 bytes")),
            ),
            (
                Command::AppendLogs { task: TaskKey::new(2, 0), token: 1, lines: LogChunk::from_parts(1, ChunkEncoding::Lz4, [&20u32.to_le_bytes()[..], &[0xff; 8]].concat()) },
                |e| matches!(e, CommandError::Invalid { field, reason } if field == "lines" && reason.contains("does not decompress")),
            ),
            (
                Command::AppendLogs {
                    task: TaskKey::new(42, 0),
                    token: 1,
                    lines: one_line("x"),
                },
                |e| matches!(e, CommandError::JobNotFound(42)),
            ),
            (
                Command::AppendLogs {
                    task: TaskKey::new(2, 0),
                    token: 3,
                    lines: one_line("x"),
                },
                |e| e.is_fenced(),
            ),
        ];
        let mut index = 3;
        for (cmd, expect) in cases {
            let before = sm.read(|_, kv| table(kv));
            index += 1;
            let r = sm.apply([entry(index, cmd.clone())]).await.unwrap().remove(0);
            match &r {
                Response::Rejected(e) => assert!(expect(e), "{cmd:?}: unexpected error {e}"),
                other => panic!("{cmd:?} was not refused: {other:?}"),
            }
            assert_eq!(before, sm.read(|_, kv| table(kv)), "refused {cmd:?} changed state");
        }
        // Per-item refusals inside an AssignTasks: constraint, capacity, unknown session.
        index += 1;
        let r = sm
            .apply([entry(
                index,
                Command::AssignTasks {
                    assignments: vec![
                        Assign { task: TaskKey::new(1, 0), session: 1 },
                        Assign { task: TaskKey::new(2, 0), session: 1 },
                        Assign { task: TaskKey::new(2, 1), session: 1 },
                        Assign { task: TaskKey::new(2, 1), session: 5 },
                    ],
                },
            )])
            .await
            .unwrap()
            .remove(0);
        let Response::Done(Outcome::Assigned(items)) = r else { panic!("{r:?}") };
        assert!(matches!(items[0], Err(CommandError::ConstraintMismatch { .. })));
        assert!(items[1].is_ok());
        assert!(matches!(items[2], Err(CommandError::AtCapacity { .. })));
        assert!(matches!(items[3], Err(CommandError::SessionNotFound(5))));
    });
}

fn corrupt(dir: &std::path::Path, cf: &str, key: &[u8], value: &[u8]) {
    let db = rocks::open(&dir.join("db")).unwrap();
    db.put_cf(db.cf_handle(cf).unwrap(), key, value).unwrap();
}

fn seeded_store() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    rt().block_on(async {
        let (mut log, mut sm) = open_store(dir.path()).unwrap();
        let e = entry(1, Command::SubmitJob(JobSpec::with_shards("ns", 3)));
        openraft::storage::RaftLogStorageExt::blocking_append(&mut log, [e.clone()]).await.unwrap();
        sm.apply([e]).await.unwrap();
    });
    dir
}

#[test]
fn corrupt_records_make_open_fail_naming_cf_and_key() {
    let task_key = keys::in_gen(0, &keys::task(TaskKey::new(1, 1)));
    let job_key = keys::in_gen(0, &keys::job(1));
    let cases: Vec<(&str, Vec<u8>, Vec<u8>, &str)> = vec![
        ("sm", task_key.clone(), vec![codec::FORMAT_VERSION, 0xff, 0xff], "task/1/1"),
        ("sm", task_key, vec![99, 0, 0], "unknown format version 99"),
        ("sm", job_key, vec![], "job/1"),
        ("logs", 1u64.to_be_bytes().to_vec(), vec![codec::FORMAT_VERSION, 1, 2, 3], "index 1"),
        ("raft", b"vote".to_vec(), vec![7, 7], "vote"),
    ];
    for (cf, key, value, needle) in cases {
        let dir = seeded_store();
        corrupt(dir.path(), cf, &key, &value);
        let err = match open_store(dir.path()) {
            Ok(_) => panic!("open succeeded with a corrupt {cf} record"),
            Err(e) => e.to_string(),
        };
        assert!(err.contains(&format!("{cf:?}")), "error does not name column family {cf}: {err}");
        assert!(err.contains(needle), "error does not name {needle:?}: {err}");
        println!("refused to open: {err}");
    }
}

#[test]
fn foreign_data_dir_is_refused() {
    let dir = seeded_store();
    corrupt(dir.path(), "raft", b"layout", b"something-else-v9");
    let err = open_store(dir.path()).err().expect("open must fail").to_string();
    assert!(err.contains("something-else-v9"), "{err}");
}

fn arb_command() -> impl Strategy<Value = Command> {
    let key = (0u64..4, 0u32..4).prop_map(|(j, s)| TaskKey::new(j, s));
    let s = ".{0,4}";
    let labels = proptest::collection::btree_map(s, s, 0..3);
    let spec = (
        s,
        proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..3), 0..4),
        any::<i32>(),
        any::<u32>(),
        any::<u64>(),
        any::<u64>(),
        any::<u64>(),
        labels.clone(),
        proptest::option::of(any::<u64>()),
        proptest::option::of(s),
    )
        .prop_map(|(ns, payloads, priority, max_attempts, base, max, timeout, constraints, nb, idem)| {
            Command::SubmitJob(JobSpec {
                namespace: ns,
                name: String::new(),
                payloads: payloads.into_iter().map(ByteBuf::from).collect(),
                priority,
                max_attempts: max_attempts % 5,
                backoff: Backoff { base_ms: base % 5000, max_ms: max },
                attempt_timeout_ms: timeout,
                labels: BTreeMap::new(),
                constraints,
                not_before_ms: nb,
                idempotency_key: idem,
                retention_ms: None,
            })
        });
    let leaf = prop_oneof![
        (s, labels, any::<u32>()).prop_map(|(name, labels, capacity)| Command::RegisterWorker {
            name,
            labels,
            capacity: capacity % 4,
            namespaces: None
        }),
        (0u64..4, 0u64..3).prop_map(|(session, epoch)| Command::ExpireWorker { session, epoch }),
        (0u64..4, 0u64..3).prop_map(|(session, epoch)| Command::DeregisterWorker { session, epoch }),
        spec,
        proptest::collection::vec((key.clone(), 0u64..4), 0..4).prop_map(|v| {
            Command::AssignTasks {
                assignments: v.into_iter().map(|(task, session)| Assign { task, session }).collect(),
            }
        }),
        // Logs as arbitrary bytes under an arbitrary count, raw or as LZ4
        // (its size prefix arbitrary too): the chunk validator sees
        // malformed input and lying sizes.
        (key.clone(), any::<u64>(), 0u32..3, any::<bool>(), proptest::collection::vec(any::<u8>(), 0..40)).prop_map(
            |(task, token, lines, lz4, data)| Command::CompleteTask {
                task,
                token: token % 40,
                result: ByteBuf::new(),
                logs: LogChunk::from_parts(lines, if lz4 { ChunkEncoding::Lz4 } else { ChunkEncoding::Raw }, data),
            }
        ),
        (key.clone(), any::<u64>(), s, any::<bool>()).prop_map(|(task, token, error, retryable)| {
            Command::FailTask { task, token: token % 40, error, retryable, logs: Default::default() }
        }),
        (key.clone(), any::<u64>(), any::<u32>()).prop_map(|(task, token, bp)| {
            Command::ReportProgress { task, token: token % 40, progress_bp: bp % 12_000, message: String::new() }
        }),
        proptest::collection::vec((key, any::<u64>()), 0..3)
            .prop_map(|v| { Command::TimeoutAttempts { attempts: v.into_iter().map(|(k, t)| (k, t % 40)).collect() } }),
        (0u64..4, s).prop_map(|(job, reason)| Command::CancelJob { job, reason }),
        (s, proptest::option::of(0u64..limits::IDEMPOTENCY_WINDOW_MS_MAX * 2))
            .prop_map(|(namespace, window_ms)| { Command::SetNamespaceIdempotencyWindow { namespace, window_ms } }),
        (
            s,
            proptest::option::of(any::<u64>()),
            proptest::option::of(any::<u64>()),
            proptest::option::of(any::<u32>()),
            any::<bool>()
        )
            .prop_map(|(namespace, live_tasks, payload_bytes, submits_per_sec, clear)| {
                Command::SetNamespaceQuota {
                    namespace,
                    change: QuotaChange { live_tasks, payload_bytes, submits_per_sec, clear },
                }
            }),
        arb_schedule_command(),
    ];
    prop_oneof![4 => leaf.clone(), 1 => proptest::collection::vec(leaf, 0..4).prop_map(Command::Batch)]
}

/// Schedule, trigger and event commands with arbitrary patterns, zones,
/// times and policies: cron text goes straight to the parser.
fn arb_schedule_command() -> impl Strategy<Value = Command> {
    let s = ".{0,4}";
    let pattern = prop_oneof![
        Just("* * * * * *".to_string()),
        Just("0 0 30 2 *".to_string()),
        Just("@daily".to_string()),
        "[0-9*/,LW#?A-Z@ -]{0,24}",
    ];
    let zone = prop_oneof![Just(String::new()), Just("Europe/Berlin".to_string()), ".{0,8}"];
    let spec = (
        (s, pattern, zone, 0u8..4, any::<u64>()),
        (proptest::option::of(any::<u64>()), proptest::option::of(any::<u64>()), any::<u64>(), any::<u64>()),
        (0u8..3, any::<u32>(), 0u8..4, any::<bool>()),
    )
        .prop_map(
            |((name, pattern, time_zone, kind, n), (start_ms, end_ms, jitter, grace), (m, max, o, same_ns))| {
                ScheduleSpec {
                    namespace: "ns".into(),
                    name,
                    cadence: match kind {
                        0 => Cadence::Cron { pattern, time_zone },
                        1 => Cadence::FixedRate { period_ms: n },
                        2 => Cadence::FixedDelay { delay_ms: n },
                        _ => Cadence::Once { at_ms: n },
                    },
                    start_ms,
                    end_ms,
                    jitter_ms: jitter % 4_000_000,
                    misfire: [Misfire::Skip, Misfire::FireOnce, Misfire::FireAll { max }][m as usize],
                    misfire_grace_ms: grace % 100_000_000,
                    overlap: [Overlap::Allow, Overlap::Skip, Overlap::CancelPrevious, Overlap::BufferOne][o as usize],
                    template: Template::Job(JobSpec::with_shards(if same_ns { "ns" } else { "other" }, 1)),
                }
            },
        );
    prop_oneof![
        spec.clone().prop_map(|s| Command::CreateSchedule(Box::new(s))),
        (0u64..4, spec).prop_map(|(schedule, s)| Command::UpdateSchedule { schedule, spec: Box::new(s) }),
        (0u64..4, any::<u64>()).prop_map(|(schedule, fire_ms)| Command::Fire { schedule, fire_ms: fire_ms % 100_000 }),
        (0u64..4, any::<bool>()).prop_map(|(schedule, paused)| Command::PauseSchedule { schedule, paused }),
        (0u64..4).prop_map(|schedule| Command::RunSchedule { schedule }),
        (0u64..4).prop_map(|schedule| Command::DeleteSchedule { schedule }),
        (s, s, proptest::option::of(any::<u64>())).prop_map(|(name, topic, debounce_ms)| {
            Command::CreateTrigger(Box::new(TriggerSpec {
                namespace: "ns".into(),
                name,
                topic,
                filter: BTreeMap::new(),
                template: Template::Job(JobSpec::with_shards("ns", 2)),
                debounce_ms,
                debounce_key: String::new(),
            }))
        }),
        (0u64..4).prop_map(|trigger| Command::DeleteTrigger { trigger }),
        (s, s, proptest::collection::vec(any::<u8>(), 0..4)).prop_map(|(topic, event_id, payload)| {
            Command::PublishEvent(EventSpec {
                namespace: "ns".into(),
                topic,
                event_id,
                payload: ByteBuf::from(payload),
                attributes: BTreeMap::new(),
            })
        }),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 1024, ..ProptestConfig::default() })]

    /// Arbitrary commands never panic apply(), and a refused one changes nothing.
    #[test]
    fn arbitrary_commands_never_panic_and_refusals_change_nothing(cmds in proptest::collection::vec(arb_command(), 1..40)) {
        let mut kv = MemKv::default();
        let mut core = Core::open(&kv).unwrap();
        for (i, cmd) in cmds.into_iter().enumerate() {
            let before = table(&kv);
            let r = core.apply_entry(&kv, &entry(i as u64 + 1, cmd)).unwrap();
            let w = core.take_writes().unwrap();
            kv.write(w);
            if let Response::Rejected(_) = r {
                prop_assert_eq!(before, table(&kv));
            }
        }
    }
}
