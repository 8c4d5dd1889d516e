//! The RocksDB state machine and the pure in-memory core reach byte-identical
//! state from the same entries, however the entries are split into apply()
//! calls, and a reopen rebuilds the same indexes.

use std::collections::BTreeMap;

use baton_raft_store::keys;
use baton_raft_store::workflow::{self, GateTimeout, ReduceSpec, StepShape};
use baton_raft_store::*;
use openraft::storage::RaftStateMachine;
use openraft::{CommittedLeaderId, EntryPayload};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_bytes::ByteBuf;

/// A seeded workload that aims at things that exist: generated against a
/// reference core so most commands succeed.
fn workload(seed: u64, n: usize) -> Vec<Entry> {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut kv = MemKv::default();
    let mut core = Core::open(&kv).unwrap();
    let mut entries = Vec::new();
    let mut clock = 1_700_000_000_000u64;
    for index in 1..=n as u64 {
        clock += rng.random_range(0..2_000);
        // Now and then a long quiet spell: ended sessions and long retentions expire.
        if rng.random_bool(0.01) {
            clock += limits::SESSION_RETENTION_MS;
        }
        let idx = &core.idx;
        let held: Vec<(TaskKey, Token)> = idx.deadlines.iter().map(|(_, k, t)| (*k, *t)).collect();
        let pending: Vec<TaskKey> =
            idx.pending.iter().flat_map(|(j, m)| m.keys().map(|s| TaskKey::new(*j, *s))).collect();
        let sessions: Vec<(SessionId, u64)> = idx.sessions.values().map(|s| (s.id, s.epoch)).collect();
        let any_job = rng.random_range(1..core.meta.next_job + 2);
        let cmd = match rng.random_range(0..133) {
            0..8 => Command::RegisterWorker {
                name: format!("w{}", rng.random_range(0..5)),
                labels: BTreeMap::new(),
                capacity: rng.random_range(1..20),
                namespaces: None,
            },
            8..18 => {
                let mut spec = JobSpec::with_shards("ns", rng.random_range(1..30));
                spec.priority = rng.random_range(-2..3);
                spec.attempt_timeout_ms = 5_000;
                spec.backoff = Backoff { base_ms: 100, max_ms: 1_000 };
                spec.idempotency_key = rng.random_bool(0.3).then(|| format!("k{}", rng.random_range(0..10)));
                // Short enough that the collector runs mid-stream.
                spec.retention_ms = rng.random_bool(0.7).then(|| rng.random_range(0..30_000));
                spec.payloads.iter_mut().for_each(|p| *p = ByteBuf::from(vec![rng.random(); 8]));
                Command::SubmitJob(spec)
            }
            18..45 if !pending.is_empty() && !sessions.is_empty() => Command::AssignTasks {
                assignments: (0..rng.random_range(1..40))
                    .map(|_| Assign {
                        task: pending[rng.random_range(0..pending.len())],
                        session: sessions[rng.random_range(0..sessions.len())].0,
                    })
                    .collect(),
            },
            45..80 if !held.is_empty() => Command::Batch(
                (0..rng.random_range(1..20))
                    .map(|_| {
                        let (task, token) = held[rng.random_range(0..held.len())];
                        if rng.random_bool(0.8) {
                            let result = workflow_result(&core, task, &mut rng);
                            Command::CompleteTask {
                                task,
                                token,
                                result: ByteBuf::from(result),
                                logs: Default::default(),
                            }
                        } else {
                            Command::FailTask {
                                task,
                                token,
                                error: "e".into(),
                                retryable: rng.random(),
                                logs: Default::default(),
                            }
                        }
                    })
                    .collect(),
            ),
            80..86 if !held.is_empty() => {
                let (task, token) = held[rng.random_range(0..held.len())];
                Command::TimeoutAttempts { attempts: vec![(task, token)] }
            }
            86..92 if !sessions.is_empty() => {
                let (session, epoch) = sessions[rng.random_range(0..sessions.len())];
                if rng.random() {
                    Command::ExpireWorker { session, epoch }
                } else {
                    Command::DeregisterWorker { session, epoch }
                }
            }
            92..95 if !idx.jobs.is_empty() => {
                let jobs: Vec<JobId> = idx.jobs.keys().copied().collect();
                Command::CancelJob { job: jobs[rng.random_range(0..jobs.len())], reason: String::new() }
            }
            95..98 => Command::SubmitWorkflow(random_workflow(&mut rng)),
            98..100 if !idx.workflows.is_empty() => {
                let wfs: Vec<&WorkflowRecord> = idx.workflows.values().collect();
                let wf = wfs[rng.random_range(0..wfs.len())];
                let step = rng.random_range(0..wf.steps.len());
                match rng.random_range(0..4) {
                    0 => Command::CancelWorkflow { workflow: wf.id, reason: "r".into() },
                    1 => Command::ExpireGates { gates: vec![(wf.id, step as u32)] },
                    _ => Command::ResolveGate {
                        workflow: wf.id,
                        step: wf.steps[step].name.clone(),
                        approve: rng.random(),
                        by: "op".into(),
                    },
                }
            }
            100..104 => Command::DeleteJob { job: any_job },
            104..108 => Command::RetryJob { job: any_job },
            108..111 if !pending.is_empty() || !held.is_empty() => {
                let all: Vec<TaskKey> = pending.iter().copied().chain(held.iter().map(|h| h.0)).collect();
                Command::CancelTask { task: all[rng.random_range(0..all.len())], reason: "op".into() }
            }
            111..113 => Command::PauseJob { job: any_job, paused: rng.random_bool(0.6) },
            113 => Command::PauseNamespace { namespace: "ns".into(), paused: rng.random_bool(0.3) },
            114 => Command::SetNamespaceRetention {
                namespace: "ns".into(),
                retention_ms: rng.random_bool(0.8).then(|| rng.random_range(0..20_000)),
            },
            115..117 => Command::SetPriority { job: any_job, priority: rng.random_range(-2..3) },
            117..123 if !held.is_empty() => {
                let (task, token) = held[rng.random_range(0..held.len())];
                let lines: Vec<LogLine> = (0..rng.random_range(1..6))
                    .map(|i| LogLine { at_ms: clock, level: LogLevel::Info, message: format!("line {i}") })
                    .collect();
                Command::AppendLogs { task, token, lines: LogChunk::of_lines(&lines).unwrap() }
            }
            123..125 => Command::CollectGarbage,
            125 => Command::CreateSchedule(Box::new(random_schedule(&mut rng, clock))),
            126..128 if !idx.schedules.is_empty() => {
                let ids: Vec<u64> = idx.schedules.keys().copied().collect();
                let id = ids[rng.random_range(0..ids.len())];
                // Mostly the time a leader would propose; sometimes a stale or wrong one.
                let fire_ms = match idx.schedules[&id].next_fire_ms {
                    Some(t) if rng.random_bool(0.8) => t,
                    _ => clock.saturating_sub(rng.random_range(0..5_000)),
                };
                Command::Fire { schedule: id, fire_ms }
            }
            128 if !idx.schedules.is_empty() => {
                let ids: Vec<u64> = idx.schedules.keys().copied().collect();
                let schedule = ids[rng.random_range(0..ids.len())];
                match rng.random_range(0..4) {
                    0 => Command::PauseSchedule { schedule, paused: rng.random_bool(0.5) },
                    1 => Command::RunSchedule { schedule },
                    2 => Command::DeleteSchedule { schedule },
                    _ => {
                        let mut spec = random_schedule(&mut rng, clock);
                        spec.name = idx.schedules[&schedule].rule.name.clone();
                        Command::UpdateSchedule { schedule, spec: Box::new(spec) }
                    }
                }
            }
            129 => Command::CreateTrigger(Box::new(TriggerSpec {
                namespace: "ns".into(),
                name: format!("t{}", rng.random_range(0..3)),
                topic: format!("topic{}", rng.random_range(0..2)),
                filter: if rng.random() { BTreeMap::from([("k".into(), "a".into())]) } else { BTreeMap::new() },
                template: Template::Job(JobSpec::with_shards("ns", rng.random_range(1..3))),
                debounce_ms: rng.random_bool(0.5).then(|| rng.random_range(1..5_000)),
                debounce_key: String::new(),
            })),
            130 => Command::PublishEvent(EventSpec {
                namespace: "ns".into(),
                topic: format!("topic{}", rng.random_range(0..2)),
                event_id: format!("e{}", rng.random_range(0..40)),
                payload: ByteBuf::from(vec![1; rng.random_range(0..4)]),
                attributes: BTreeMap::from([("k".into(), if rng.random() { "a" } else { "b" }.into())]),
            }),
            // Tight quotas (0: unlimited), so submits and retries are refused mid-stream.
            132 => Command::SetNamespaceQuota {
                namespace: "ns".into(),
                change: QuotaChange {
                    live_tasks: rng.random_bool(0.7).then(|| rng.random_range(0..300)),
                    payload_bytes: rng.random_bool(0.5).then(|| rng.random_range(0..3_000)),
                    submits_per_sec: rng.random_bool(0.2).then(|| rng.random_range(0..10)),
                    clear: rng.random_bool(0.1),
                },
            },
            // Short windows, so keys and event ids expire mid-stream.
            131 => Command::SetNamespaceIdempotencyWindow {
                namespace: "ns".into(),
                window_ms: rng.random_bool(0.8).then(|| rng.random_range(500..30_000)),
            },
            _ => Command::ReportProgress { task: TaskKey::new(1, 0), token: 1, progress_bp: 1, message: String::new() },
        };
        let e = Entry {
            log_id: LogId::new(CommittedLeaderId::new(1, 1), index),
            payload: EntryPayload::Normal(Proposal { proposed_at_ms: clock, cmd }),
        };
        core.apply_entry(&kv, &e).unwrap();
        let w = core.take_writes().unwrap();
        kv.write(w);
        entries.push(e);
    }
    entries
}

/// A schedule of a random cadence and policies, with a small job or
/// workflow template; names repeat, so creates are also duplicates or
/// conflicts.
fn random_schedule(rng: &mut StdRng, clock: u64) -> ScheduleSpec {
    let cadence = match rng.random_range(0..4) {
        0 => Cadence::FixedRate { period_ms: rng.random_range(1_000..5_000) },
        1 => Cadence::Cron { pattern: "*/2 * * * * *".into(), time_zone: "Europe/Berlin".into() },
        2 => Cadence::FixedDelay { delay_ms: rng.random_range(1_000..3_000) },
        _ => Cadence::Once { at_ms: clock + rng.random_range(0..10_000) },
    };
    let misfire = match rng.random_range(0..3) {
        0 => Misfire::Skip,
        1 => Misfire::FireOnce,
        _ => Misfire::FireAll { max: rng.random_range(1..5) },
    };
    let overlap = [Overlap::Allow, Overlap::Skip, Overlap::CancelPrevious, Overlap::BufferOne][rng.random_range(0..4)];
    let template = if rng.random_bool(0.2) {
        let mut wf = random_workflow(rng);
        wf.idempotency_key = None;
        for s in &mut wf.steps {
            if let StepKind::Job { job, .. } = &mut s.kind {
                job.not_before_ms = None;
            }
        }
        Template::Workflow(wf)
    } else {
        let mut job = JobSpec::with_shards("ns", rng.random_range(1..4));
        job.retention_ms = Some(rng.random_range(0..30_000));
        Template::Job(job)
    };
    ScheduleSpec {
        namespace: "ns".into(),
        name: format!("s{}", rng.random_range(0..5)),
        cadence,
        start_ms: rng.random_bool(0.2).then(|| clock + rng.random_range(0..5_000)),
        end_ms: rng.random_bool(0.2).then(|| clock + rng.random_range(5_000..60_000)),
        jitter_ms: if rng.random_bool(0.3) { rng.random_range(0..500) } else { 0 },
        misfire,
        misfire_grace_ms: rng.random_range(0..3_000),
        overlap,
        template,
    }
}

/// A random DAG (edges only to earlier steps) of jobs, reduces, choices,
/// dynamic maps and gates, with random trigger rules.
fn random_workflow(rng: &mut StdRng) -> WorkflowSpec {
    let n = rng.random_range(1..8);
    let mut steps = Vec::new();
    for i in 0..n {
        let depends_on: Vec<String> = (0..i).filter(|_| rng.random_bool(0.4)).map(|p| format!("s{p}")).collect();
        let trigger = if depends_on.is_empty() {
            TriggerRule::AllSucceeded
        } else {
            [
                TriggerRule::AllSucceeded,
                TriggerRule::AnySucceeded,
                TriggerRule::AllDone,
                TriggerRule::AnyFailed,
                TriggerRule::NoneFailed,
            ][rng.random_range(0..5)]
        };
        let kind = if rng.random_bool(0.15) {
            StepKind::Gate {
                timeout_ms: rng.random_bool(0.5).then(|| rng.random_range(1..5_000)),
                on_timeout: if rng.random() { GateTimeout::Approve } else { GateTimeout::Reject },
                // Opened by the workload's PublishEvent on that topic (attribute k=a or k=b).
                event: rng.random_bool(0.5).then(|| workflow::GateEvent {
                    topic: format!("topic{}", rng.random_range(0..2)),
                    filter: if rng.random() { BTreeMap::from([("k".into(), "a".into())]) } else { BTreeMap::new() },
                }),
            }
        } else {
            let dynamic = rng.random_bool(0.2);
            let mut job = JobSpec::with_shards("", if dynamic { 1 } else { rng.random_range(1..4) });
            job.attempt_timeout_ms = 5_000;
            job.max_attempts = rng.random_range(1..3);
            let reduce = rng.random_bool(0.3).then(ReduceSpec::default);
            StepKind::Job { job, reduce, choice: false, dynamic }
        };
        steps.push(StepSpec { name: format!("s{i}"), depends_on, trigger, kind });
    }
    // A choice needs successors and a single result.
    for i in 0..n {
        let has_succ = steps.iter().any(|s| s.depends_on.contains(&format!("s{i}")));
        if let StepKind::Job { job, reduce, choice, dynamic } = &mut steps[i].kind
            && has_succ
            && !*dynamic
            && (job.payloads.len() == 1 || reduce.is_some())
        {
            *choice = rng.random_bool(0.3);
        }
    }
    WorkflowSpec {
        namespace: "ns".into(),
        name: "wf".into(),
        labels: BTreeMap::new(),
        idempotency_key: rng.random_bool(0.2).then(|| format!("wk{}", rng.random_range(0..4))),
        steps,
        result_step: None,
    }
}

/// A result that fits the task's role: children for a generator, a choice
/// of successors (sometimes a bad one) for a choice step, bytes otherwise.
fn workflow_result(core: &Core, task: TaskKey, rng: &mut StdRng) -> Vec<u8> {
    let Some(origin) = core.idx.jobs.get(&task.job).and_then(|j| j.origin.as_ref()) else {
        return vec![1, 2, 3];
    };
    let Some(wf) = core.idx.workflows.get(&origin.workflow) else { return vec![1, 2, 3] };
    let step = &wf.steps[origin.step as usize];
    match (&step.shape, origin.role) {
        (_, StepRole::Generate) => {
            let kids: Vec<Vec<u8>> = (0..rng.random_range(0..4)).map(|i| vec![i]).collect();
            workflow::encode_children(&kids)
        }
        (StepShape::Job { choice: true, reduce, .. }, role) if *reduce == (role == StepRole::Reduce) => {
            let mut names: Vec<&str> = step
                .succs
                .iter()
                .filter(|_| rng.random_bool(0.6))
                .map(|&s| wf.steps[s as usize].name.as_str())
                .collect();
            if rng.random_bool(0.1) {
                names.push("nope");
            }
            serde_json::to_vec(&names).unwrap()
        }
        _ => vec![1, 2, 3],
    }
}

/// Gates approved by an event, in the workflow records of `kv`.
fn finished_by_event(kv: &MemKv) -> usize {
    kv.0.iter()
        .filter(|(k, _)| k[0] == keys::Table::Workflow as u8)
        .map(|(_, v)| codec::decode::<WorkflowRecord>(v).unwrap())
        .flat_map(|w| w.steps)
        .filter(|s| s.reason.as_deref().is_some_and(|r| r.starts_with("approved by event")))
        .count()
}

#[tokio::test]
async fn rocksdb_and_memory_cores_agree_for_any_chunking() {
    let (mut collected_sessions, mut logs_seen, mut runs, mut event_runs, mut gates_by_event) = (0, 0, 0, 0, 0);
    for seed in 0..8u64 {
        let entries = workload(seed, 600);
        let mut kv = MemKv::default();
        let mut core = Core::open(&kv).unwrap();
        for e in &entries {
            core.apply_entry(&kv, e).unwrap();
        }
        let w = core.take_writes().unwrap();
        kv.write(w);
        let want = state_hash(&kv).unwrap();
        assert!(core.idx.live_tasks > 0 || core.meta.next_job > 10, "seed {seed}: workload did nothing");
        assert!(core.meta.next_workflow > 3, "seed {seed}: workload submitted no workflows");
        // The collector ran mid-stream: jobs and logs were deleted.
        let jobs_left = kv.0.keys().filter(|k| k[0] == keys::Table::Job as u8).count() as u64;
        assert!(
            jobs_left + 3 < core.meta.next_job - 1,
            "seed {seed}: {jobs_left} of {} jobs left",
            core.meta.next_job - 1
        );
        runs += core.idx.schedules.values().map(|s| s.runs_started).sum::<u64>();
        event_runs += core.idx.triggers.values().map(|t| t.runs_started).sum::<u64>();
        gates_by_event += finished_by_event(&kv);
        collected_sessions +=
            core.meta.next_session - 1 - kv.0.keys().filter(|k| k[0] == keys::Table::Session as u8).count() as u64;
        logs_seen += kv.0.keys().filter(|k| k[0] == keys::Table::TaskLog as u8).count();

        for chunk in [1usize, 7, 64, 600] {
            let dir = tempfile::tempdir().unwrap();
            let (_log, mut sm) = open_store(dir.path()).unwrap();
            for c in entries.chunks(chunk) {
                sm.apply(c.to_vec()).await.unwrap();
            }
            assert_eq!(sm.state_hash().unwrap().1, want, "seed {seed}, chunk {chunk}: RocksDB state differs");
            assert_eq!(sm.read(|c, _| c.idx.canonical()), core.idx.canonical(), "seed {seed}, chunk {chunk}");
            drop(sm);
            drop(_log);
            let (_log, sm) = open_store(dir.path()).unwrap();
            assert_eq!(sm.state_hash().unwrap().1, want, "seed {seed}, chunk {chunk}: after reopen");
            assert_eq!(
                sm.read(|c, _| c.idx.canonical()),
                core.idx.canonical(),
                "seed {seed}, chunk {chunk}: rebuilt indexes"
            );
        }
    }
    assert!(collected_sessions > 0, "no ended session was collected");
    assert!(runs > 10 && event_runs > 5, "schedules started {runs} runs, triggers {event_runs}");
    assert!(gates_by_event > 0, "no event opened a gate");
    assert!(logs_seen > 0, "no log survived to the end");
}

const DAY_MS: u64 = 24 * 3600 * 1000;

fn at(index: u64, proposed_at_ms: u64, cmd: Command) -> Entry {
    Entry {
        log_id: LogId::new(CommittedLeaderId::new(1, 1), index),
        payload: EntryPayload::Normal(Proposal { proposed_at_ms, cmd }),
    }
}

fn keyed(key: String) -> Command {
    let mut spec = JobSpec::with_shards("ns", 1);
    spec.idempotency_key = Some(key);
    Command::SubmitJob(spec)
}

/// Many idempotency keys expire while entries keep coming: some keys are
/// reused after expiry (while their old index entries still wait to be
/// pruned), then the reused ones expire in turn.
fn expiring_keys_workload() -> Vec<Entry> {
    let t0 = 1_700_000_000_000u64;
    let mut cmds = Vec::new();
    for i in 0..1_500u64 {
        cmds.push((t0 + i, keyed(format!("k{i}"))));
    }
    let t1 = t0 + DAY_MS + 3_600_000;
    for i in 0..200u64 {
        let cmd = match i % 4 {
            0 => keyed(format!("k{}", i * 7)),
            1 => keyed(format!("new{i}")),
            _ => Command::CancelJob { job: 1_000_000 + i, reason: String::new() },
        };
        cmds.push((t1 + i * 50, cmd));
    }
    let t2 = t1 + DAY_MS + 60_000;
    for i in 0..100u64 {
        cmds.push((t2 + i, Command::CancelJob { job: 2_000_000 + i, reason: String::new() }));
    }
    cmds.into_iter().enumerate().map(|(i, (t, c))| at(i as u64 + 1, t, c)).collect()
}

/// Keys of three namespaces with windows of 2 s, 1 h and the default,
/// interleaved so expiry order differs from write order; the windows change
/// halfway (records already written keep theirs), and some short-window
/// keys are reused after expiry while their old index entries wait behind
/// hundreds of others.
fn mixed_windows_workload() -> Vec<Entry> {
    let t0 = 1_700_000_000_000u64;
    let window =
        |ns: &str, ms: Option<u64>| Command::SetNamespaceIdempotencyWindow { namespace: ns.into(), window_ms: ms };
    let keyed_in = |ns: &str, key: String| {
        let mut spec = JobSpec::with_shards(ns, 1);
        spec.idempotency_key = Some(key);
        Command::SubmitJob(spec)
    };
    let mut cmds = vec![(t0, window("short", Some(2_000))), (t0, window("hour", Some(3_600_000)))];
    for i in 0..1_200u64 {
        let ns = ["short", "hour", "day"][i as usize % 3];
        cmds.push((t0 + 1 + i * 3, keyed_in(ns, format!("{ns}{i}"))));
    }
    let t1 = t0 + 10_000;
    cmds.push((t1, window("short", Some(3_600_000))));
    cmds.push((t1, window("hour", Some(2_000))));
    for i in 0..300u64 {
        let cmd = match i % 3 {
            // Expired short keys, reused (now with a 1-h window).
            0 => keyed_in("short", format!("short{}", i * 3)),
            1 => keyed_in("hour", format!("later{i}")),
            _ => Command::CancelJob { job: 1_000_000 + i, reason: String::new() },
        };
        cmds.push((t1 + i * 20, cmd));
    }
    // The hour's keys and the reused ones expire; then the day's.
    let t2 = t0 + 3_600_000 + 60_000;
    for i in 0..100u64 {
        cmds.push((t2 + i, Command::CancelJob { job: 2_000_000 + i, reason: String::new() }));
    }
    let t3 = t0 + DAY_MS + 60_000;
    for i in 0..100u64 {
        cmds.push((t3 + i, Command::CancelJob { job: 3_000_000 + i, reason: String::new() }));
    }
    cmds.into_iter().enumerate().map(|(i, (t, c))| at(i as u64 + 1, t, c)).collect()
}

#[tokio::test]
async fn idempotency_pruning_is_the_same_for_any_chunking() {
    same_state_for_any_chunking(expiring_keys_workload()).await;
}

#[tokio::test]
async fn idempotency_pruning_with_mixed_windows_is_the_same_for_any_chunking() {
    same_state_for_any_chunking(mixed_windows_workload()).await;
}

/// Applied one entry per apply() call, in chunks in memory, and in chunks
/// on RocksDB, `entries` reach the same state, and pruning kept up.
async fn same_state_for_any_chunking(entries: Vec<Entry>) {
    // Reference: one entry per apply, written after each.
    let mut kv = MemKv::default();
    let mut core = Core::open(&kv).unwrap();
    for e in &entries {
        core.apply_entry(&kv, e).unwrap();
        let w = core.take_writes().unwrap();
        kv.write(w);
    }
    let want = state_hash(&kv).unwrap();
    let idem_left = kv.0.keys().filter(|k| k[0] == keys::Table::IdemByExpiry as u8).count();
    assert!(idem_left < 100, "pruning kept up: {idem_left} index keys left");

    for chunk in [7usize, 64, 500, entries.len()] {
        // In memory, writing only between chunks.
        let mut mkv = MemKv::default();
        let mut mcore = Core::open(&mkv).unwrap();
        for c in entries.chunks(chunk) {
            for e in c {
                mcore.apply_entry(&mkv, e).unwrap();
            }
            let w = mcore.take_writes().unwrap();
            mkv.write(w);
        }
        assert_eq!(state_hash(&mkv).unwrap(), want, "chunk {chunk}: memory state differs");
        // On RocksDB.
        let dir = tempfile::tempdir().unwrap();
        let (_log, mut sm) = open_store(dir.path()).unwrap();
        for c in entries.chunks(chunk) {
            sm.apply(c.to_vec()).await.unwrap();
        }
        assert_eq!(sm.state_hash().unwrap().1, want, "chunk {chunk}: RocksDB state differs");
    }
}

/// Inside one apply() call nothing is written yet, so keys pruned by earlier
/// entries are still on disk: each entry must still read only about the
/// keys it prunes (66 for an entry of one command), not every key pruned
/// before it in the call.
#[test]
fn idempotency_pruning_reads_a_bounded_number_of_records_per_entry() {
    let t0 = 1_700_000_000_000u64;
    let mut kv = MemKv::default();
    let mut core = Core::open(&kv).unwrap();
    let mut index = 0;
    for i in 0..3_000u64 {
        index += 1;
        core.apply_entry(&kv, &at(index, t0 + i, keyed(format!("k{i}")))).unwrap();
    }
    let w = core.take_writes().unwrap();
    kv.write(w);
    // A day later, 40 entries in one apply() call.
    let counting = CountingKv::new(&kv);
    // Each entry carries one command.
    let budget = limits::idempotency_prune_budget(1);
    let per_entry_limit = 4 * budget;
    for i in 0..40u64 {
        index += 1;
        counting.reset();
        let e = at(index, t0 + DAY_MS + 10_000 + i, Command::CancelJob { job: 999_999, reason: String::new() });
        core.apply_entry(&counting, &e).unwrap();
        let reads = counting.reads();
        assert!(reads <= per_entry_limit, "entry {i} of the call read {reads} records");
    }
    let w = core.take_writes().unwrap();
    let pruned = w.iter().filter(|(k, v)| k[0] == keys::Table::IdemByExpiry as u8 && v.is_none()).count();
    assert_eq!(pruned, 40 * budget);
}

/// Jobs too big for one entry's collector budget (2,000 shards, logs on
/// some), finishing and expiring while other work goes on, so targets span
/// entries and apply() calls: the state is the same however the entries are
/// chunked, in memory and on RocksDB.
fn collecting_workload() -> Vec<Entry> {
    let t0 = 1_700_000_000_000u64;
    let mut kv = MemKv::default();
    let mut core = Core::open(&kv).unwrap();
    let mut entries = Vec::new();
    let mut clock = t0;
    let apply = |cmd: Command, clock: u64, entries: &mut Vec<Entry>, core: &mut Core, kv: &mut MemKv| {
        let e = at(entries.len() as u64 + 1, clock, cmd);
        let r = core.apply_entry(kv, &e).unwrap();
        kv.write(core.take_writes().unwrap());
        entries.push(e);
        r
    };
    let reg = Command::RegisterWorker { name: "w".into(), labels: BTreeMap::new(), capacity: 100, namespaces: None };
    let Response::Done(Outcome::Registered { session, .. }) = apply(reg, clock, &mut entries, &mut core, &mut kv)
    else {
        panic!()
    };
    for round in 0..6u64 {
        clock += 100;
        let mut spec = JobSpec::with_shards("ns", 2_000);
        spec.retention_ms = Some(round * 700);
        spec.payloads.iter_mut().step_by(3).for_each(|p| *p = ByteBuf::from(vec![round as u8; 4]));
        let Response::Done(Outcome::Submitted { job, .. }) =
            apply(Command::SubmitJob(spec), clock, &mut entries, &mut core, &mut kv)
        else {
            panic!()
        };
        for shard in (0..2_000).step_by(40) {
            clock += 5;
            let task = TaskKey::new(job, shard);
            let assign = Command::AssignTasks { assignments: vec![Assign { task, session }] };
            let Response::Done(Outcome::Assigned(g)) = apply(assign, clock, &mut entries, &mut core, &mut kv) else {
                panic!()
            };
            let token = g[0].as_ref().unwrap().token;
            let lines: Vec<LogLine> =
                (0..3).map(|i| LogLine { at_ms: 0, level: LogLevel::Warn, message: format!("{i}") }).collect();
            let lines = LogChunk::of_lines(&lines).unwrap();
            apply(Command::AppendLogs { task, token, lines: lines.clone() }, clock, &mut entries, &mut core, &mut kv);
            let done = Command::CompleteTask { task, token, result: ByteBuf::from(vec![1]), logs: lines };
            apply(done, clock, &mut entries, &mut core, &mut kv);
        }
        apply(Command::CancelJob { job, reason: String::new() }, clock, &mut entries, &mut core, &mut kv);
        // Other work (and the leader's CollectGarbage) while it expires.
        for i in 0..12u64 {
            clock += 200;
            let cmd =
                if i % 3 == 0 { Command::SubmitJob(JobSpec::with_shards("other", 2)) } else { Command::CollectGarbage };
            apply(cmd, clock, &mut entries, &mut core, &mut kv);
        }
    }
    for _ in 0..30 {
        clock += 1_000;
        apply(Command::CollectGarbage, clock, &mut entries, &mut core, &mut kv);
    }
    assert_eq!(core.meta.gc, None, "the workload leaves nothing half collected");
    let tasks = kv.0.keys().filter(|k| k[0] == keys::Table::Task as u8).count();
    assert_eq!(tasks, 6 * 12 / 3 * 2, "only the small jobs' tasks are left");
    entries
}

#[tokio::test]
async fn collection_is_the_same_for_any_chunking() {
    let entries = collecting_workload();
    let mut kv = MemKv::default();
    let mut core = Core::open(&kv).unwrap();
    for e in &entries {
        core.apply_entry(&kv, e).unwrap();
    }
    kv.write(core.take_writes().unwrap());
    let want = state_hash(&kv).unwrap();
    for chunk in [1usize, 3, 50, 400] {
        let mut mkv = MemKv::default();
        let mut mcore = Core::open(&mkv).unwrap();
        for c in entries.chunks(chunk) {
            for e in c {
                mcore.apply_entry(&mkv, e).unwrap();
            }
            mkv.write(mcore.take_writes().unwrap());
        }
        assert_eq!(state_hash(&mkv).unwrap(), want, "chunk {chunk}: memory state differs");
        let dir = tempfile::tempdir().unwrap();
        let (_log, mut sm) = open_store(dir.path()).unwrap();
        for c in entries.chunks(chunk) {
            sm.apply(c.to_vec()).await.unwrap();
        }
        assert_eq!(sm.state_hash().unwrap().1, want, "chunk {chunk}: RocksDB state differs");
        assert_eq!(sm.read(|c, _| c.idx.canonical()), core.idx.canonical(), "chunk {chunk}");
    }
}
