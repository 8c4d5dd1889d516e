//! Tenancy through apply(): idempotency keys scoped by namespace, and the
//! per-namespace quotas (live tasks, payload bytes): a submit or retry over
//! a quota is refused and changes nothing, and the usage apply() counts
//! follows every transition and is rebuilt identically at open.

mod common;

use std::collections::BTreeMap;

use baton_raft_store::quota::{self, NamespaceUsage};
use baton_raft_store::*;
use common::Rig;
use serde_bytes::ByteBuf;

const T0: u64 = 1_700_000_000_000;

fn rig() -> Rig {
    Rig::new(T0, 10)
}

/// A job of `shards` shards of `bytes` payload bytes each, in `ns`.
fn job(ns: &str, shards: usize, bytes: usize) -> JobSpec {
    let mut s = JobSpec::with_shards(ns, shards);
    s.max_attempts = 1;
    s.payloads = vec![ByteBuf::from(vec![7u8; bytes]); shards];
    s
}

fn keyed(ns: &str, key: &str) -> JobSpec {
    let mut s = job(ns, 1, 1);
    s.idempotency_key = Some(key.into());
    s
}

fn quota(ns: &str, live_tasks: Option<u64>, payload_bytes: Option<u64>) -> Command {
    Command::SetNamespaceQuota {
        namespace: ns.into(),
        change: QuotaChange { live_tasks, payload_bytes, ..QuotaChange::default() },
    }
}

impl Rig {
    fn submit(&mut self, spec: JobSpec) -> (JobId, bool) {
        match self.ok(Command::SubmitJob(spec)) {
            Outcome::Submitted { job, duplicate, .. } => (job, duplicate),
            o => panic!("{o:?}"),
        }
    }

    fn grant(&mut self, task: TaskKey) -> Grant {
        match self.ok(Command::AssignTasks { assignments: vec![Assign { task, session: self.session }] }) {
            Outcome::Assigned(mut g) => g.remove(0).unwrap(),
            o => panic!("{o:?}"),
        }
    }

    fn complete(&mut self, g: &Grant) {
        let result = ByteBuf::from(b"r".to_vec());
        self.ok(Command::CompleteTask { task: g.task, token: g.token, result, logs: Default::default() });
    }

    fn fail(&mut self, g: &Grant) {
        let error = "boom".into();
        self.ok(Command::FailTask { task: g.task, token: g.token, error, retryable: false, logs: Default::default() });
    }

    fn usage(&self, ns: &str) -> (u64, u64) {
        let u = self.core.usage(ns);
        (u.live_tasks, u.payload_bytes)
    }

    /// The usage apply() kept equals the one rebuilt from the records, and
    /// the one summed from the live jobs.
    fn assert_usage_rebuilds(&self) {
        self.assert_reopens();
        let mut summed: BTreeMap<String, NamespaceUsage> = BTreeMap::new();
        for j in self.core.idx.jobs.values() {
            let u = summed.entry(j.namespace.clone()).or_default();
            u.live_tasks += u64::from(j.counts.live());
            u.payload_bytes += j.payload_bytes;
        }
        summed.retain(|_, u| !u.is_zero());
        assert_eq!(summed, self.core.idx.ns_usage);
    }
}

/// A workflow of one single-shard job step.
fn one_step_workflow(ns: &str, idempotency_key: Option<&str>) -> WorkflowSpec {
    WorkflowSpec {
        namespace: ns.into(),
        name: "wf".into(),
        labels: BTreeMap::new(),
        idempotency_key: idempotency_key.map(Into::into),
        steps: vec![StepSpec {
            name: "s".into(),
            depends_on: vec![],
            trigger: TriggerRule::AllSucceeded,
            kind: StepKind::Job { job: JobSpec::with_shards("", 1), reduce: None, choice: false, dynamic: false },
        }],
        result_step: None,
    }
}

#[test]
fn the_same_key_in_two_namespaces_makes_two_jobs() {
    let mut r = rig();
    let (a, _) = r.submit(keyed("team-a", "nightly"));
    let (b, dup) = r.submit(keyed("team-b", "nightly"));
    assert!(!dup && a != b, "team-b's submit was answered with team-a's job {a}");
    assert_eq!((r.job(a).namespace.as_str(), r.job(b).namespace.as_str()), ("team-a", "team-b"));
    // Within one namespace the key still dedups, and a conflict names that
    // namespace's own job only.
    assert_eq!(r.submit(keyed("team-b", "nightly")), (b, true));
    let mut other = keyed("team-b", "nightly");
    other.name = "another spec".into();
    match r.err(Command::SubmitJob(other)) {
        CommandError::IdempotencyConflict { key, job } => assert_eq!((key.as_str(), job), ("nightly", b)),
        e => panic!("{e}"),
    }
    // Workflow keys are scoped the same way.
    let submit_wf = |r: &mut Rig, ns: &str| match r.ok(Command::SubmitWorkflow(one_step_workflow(ns, Some("nightly"))))
    {
        Outcome::WorkflowSubmitted { workflow, duplicate, .. } => (workflow, duplicate),
        o => panic!("{o:?}"),
    };
    let (w1, _) = submit_wf(&mut r, "team-a");
    let (w2, dup) = submit_wf(&mut r, "team-b");
    assert!(!dup && w1 != w2);
    r.assert_reopens();
}

#[test]
fn a_submit_over_the_live_task_quota_is_refused_and_changes_nothing() {
    let mut r = rig();
    r.ok(quota("ns", Some(5), None));
    let (first, _) = r.submit(keyed("ns", "k"));
    r.submit(job("ns", 3, 1));
    assert_eq!(r.usage("ns").0, 4);
    match r.err(Command::SubmitJob(job("ns", 2, 1))) {
        CommandError::QuotaExceeded { namespace, quota, limit, used, requested } => {
            assert_eq!((namespace.as_str(), quota.as_str()), ("ns", quota::names::LIVE_TASKS));
            assert_eq!((limit, used, requested), (5, 4, 2));
        }
        e => panic!("{e}"),
    }
    // A retry of a submit that was accepted is still answered, over quota or not.
    r.submit(job("ns", 1, 1));
    assert_eq!(r.submit(keyed("ns", "k")), (first, true));
    // Other namespaces have their own usage; a workflow counts its shards too.
    r.submit(job("other", 50, 1));
    let e = r.err(Command::SubmitWorkflow(one_step_workflow("ns", None)));
    assert!(matches!(e, CommandError::QuotaExceeded { .. }), "{e}");
    // Once a task finishes, there is room again.
    let g = r.grant(TaskKey::new(first, 0));
    r.complete(&g);
    r.submit(job("ns", 1, 1));
    // Clearing the quota makes the namespace unlimited.
    r.ok(quota("ns", Some(0), None));
    assert_eq!(r.core.idx.namespaces.get("ns"), None, "no quota, no other setting: no record");
    r.submit(job("ns", 100, 1));
    r.assert_usage_rebuilds();
}

#[test]
fn a_submit_over_the_payload_quota_is_refused_and_changes_nothing() {
    let mut r = rig();
    r.ok(quota("ns", None, Some(1_000)));
    let (a, _) = r.submit(job("ns", 2, 300));
    match r.err(Command::SubmitJob(job("ns", 1, 401))) {
        CommandError::QuotaExceeded { quota, limit, used, requested, .. } => {
            assert_eq!((quota.as_str(), limit, used, requested), (quota::names::PAYLOAD_BYTES, 1_000, 600, 401));
        }
        e => panic!("{e}"),
    }
    // Empty payloads cost nothing.
    r.submit(job("ns", 10, 0));
    r.submit(job("ns", 1, 400));
    assert_eq!(r.usage("ns"), (13, 1_000));
    // The job's bytes come back when the job finishes, not shard by shard.
    let g = r.grant(TaskKey::new(a, 0));
    r.complete(&g);
    assert_eq!(r.usage("ns"), (12, 1_000));
    let g = r.grant(TaskKey::new(a, 1));
    r.complete(&g);
    assert_eq!(r.usage("ns"), (11, 400));
    r.submit(job("ns", 1, 600));
    r.assert_usage_rebuilds();
}

#[test]
fn usage_follows_complete_fail_cancel_retry_delete_and_retention() {
    let mut r = rig();
    r.ok(Command::SetNamespaceRetention { namespace: "ns".into(), retention_ms: Some(1_000) });
    let (a, _) = r.submit(job("ns", 3, 10));
    let (b, _) = r.submit(job("ns", 2, 5));
    assert_eq!(r.usage("ns"), (5, 40));
    // Running is still live.
    let g0 = r.grant(TaskKey::new(a, 0));
    assert_eq!(r.usage("ns"), (5, 40));
    r.complete(&g0);
    let g1 = r.grant(TaskKey::new(a, 1));
    r.fail(&g1);
    assert_eq!(r.usage("ns"), (3, 40));
    r.ok(Command::CancelTask { task: TaskKey::new(a, 2), reason: "x".into() });
    assert_eq!(r.usage("ns"), (2, 10), "job a finished: its 30 bytes are released");
    r.assert_usage_rebuilds();
    // Retry brings the dead and cancelled shards, and the job's bytes, back.
    r.ok(Command::RetryJob { job: a });
    assert_eq!(r.usage("ns"), (4, 40));
    r.ok(Command::CancelJob { job: b, reason: String::new() });
    assert_eq!(r.usage("ns"), (2, 30));
    // A retry over the quota is refused and changes nothing.
    r.ok(quota("ns", Some(3), None));
    match r.err(Command::RetryJob { job: b }) {
        CommandError::QuotaExceeded { quota, used: 2, requested: 2, .. } => assert_eq!(quota, "live_tasks"),
        e => panic!("{e}"),
    }
    r.ok(Command::CancelJob { job: a, reason: String::new() });
    assert_eq!(r.usage("ns"), (0, 0));
    assert!(r.core.idx.ns_usage.is_empty(), "no entry at zero");
    r.ok(Command::RetryJob { job: b });
    assert_eq!(r.usage("ns"), (2, 10));
    r.ok(Command::CancelJob { job: b, reason: String::new() });
    // Deleting and collecting finished jobs leaves the usage alone.
    r.ok(Command::DeleteJob { job: a });
    r.now_ms += 5_000;
    r.ok(Command::CollectGarbage);
    assert!(r.core.job(&r.kv, b).unwrap().is_none(), "b is past its retention");
    assert_eq!(r.usage("ns"), (0, 0));
    r.assert_usage_rebuilds();
}

#[test]
fn quota_settings_are_bounded_and_a_bad_one_changes_nothing() {
    let mut r = rig();
    r.ok(quota("ns", Some(10), Some(10)));
    let e = r.err(quota("ns", Some(quota::MAX_QUOTA_LIVE_TASKS + 1), None));
    assert!(matches!(e, CommandError::Invalid { ref field, .. } if field == "quota.live_tasks"), "{e}");
    let e = r.err(quota("ns", None, Some(quota::MAX_QUOTA_PAYLOAD_BYTES + 1)));
    assert!(matches!(e, CommandError::Invalid { ref field, .. } if field == "quota.payload_bytes"), "{e}");
    let rate = Command::SetNamespaceQuota {
        namespace: "ns".into(),
        change: QuotaChange { submits_per_sec: Some(quota::MAX_QUOTA_SUBMITS_PER_SEC + 1), ..QuotaChange::default() },
    };
    assert!(matches!(r.err(rate), CommandError::Invalid { ref field, .. } if field == "quota.submits_per_sec"));
    // Setting one quota keeps the others; `clear` drops them all.
    r.ok(Command::SetNamespaceQuota {
        namespace: "ns".into(),
        change: QuotaChange { submits_per_sec: Some(7), ..QuotaChange::default() },
    });
    let q = r.core.idx.namespaces["ns"].quota;
    assert_eq!((q.live_tasks, q.payload_bytes, q.submits_per_sec), (Some(10), Some(10), Some(7)));
    r.ok(Command::SetNamespaceQuota {
        namespace: "ns".into(),
        change: QuotaChange { clear: true, ..QuotaChange::default() },
    });
    assert_eq!(r.core.idx.namespaces.get("ns"), None);
    r.assert_reopens();
}

/// The usage is rebuilt from a snapshot exactly as apply() kept it: built
/// on one RocksDB store, streamed into another and installed, then reopened.
#[tokio::test]
async fn usage_is_rebuilt_identically_from_a_snapshot() {
    use openraft::storage::RaftStateMachine;
    use openraft::{CommittedLeaderId, EntryPayload, RaftSnapshotBuilder};
    let entry = |index: u64, cmd: Command| Entry {
        log_id: LogId::new(CommittedLeaderId::new(1, 1), index),
        payload: EntryPayload::Normal(Proposal { proposed_at_ms: T0 + index, cmd }),
    };
    let (dir_a, dir_b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (_la, mut sm_a) = open_store(dir_a.path()).unwrap();
    let reg = Command::RegisterWorker { name: "w".into(), labels: BTreeMap::new(), capacity: 100, namespaces: None };
    sm_a.apply([
        entry(1, reg),
        entry(2, quota("a", Some(50), Some(10_000))),
        entry(3, Command::SubmitJob(job("a", 4, 100))),
        entry(4, Command::SubmitJob(job("a", 2, 7))),
        entry(5, Command::SubmitJob(job("b", 3, 0))),
        entry(6, Command::AssignTasks { assignments: vec![Assign { task: TaskKey::new(1, 0), session: 1 }] }),
        entry(7, Command::CancelJob { job: 2, reason: String::new() }),
    ])
    .await
    .unwrap();
    let usage = |sm: &StateMachine, ns: &str| sm.reader().namespace_usage(ns).1;
    assert_eq!(usage(&sm_a, "a"), NamespaceUsage { live_tasks: 4, payload_bytes: 400 });
    assert_eq!(usage(&sm_a, "b"), NamespaceUsage { live_tasks: 3, payload_bytes: 0 });

    let mut snap = sm_a.get_snapshot_builder().await.build_snapshot().await.unwrap();
    let (_lb, mut sm_b) = open_store(dir_b.path()).unwrap();
    let mut recv = sm_b.begin_receiving_snapshot().await.unwrap();
    tokio::io::copy(&mut snap.snapshot, &mut *recv).await.unwrap();
    sm_b.install_snapshot(&snap.meta, recv).await.unwrap();
    let canon = sm_a.read(|c, _| c.idx.canonical());
    assert_eq!(canon, sm_b.read(|c, _| c.idx.canonical()));
    assert_eq!(sm_a.state_hash().unwrap().1, sm_b.state_hash().unwrap().1);
    drop((sm_b, _lb));
    let (_lb, sm_b) = open_store(dir_b.path()).unwrap();
    assert_eq!(canon, sm_b.read(|c, _| c.idx.canonical()));
    for ns in ["a", "b"] {
        assert_eq!(usage(&sm_a, ns), usage(&sm_b, ns), "{ns}");
    }
}
