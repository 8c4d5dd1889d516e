//! Worker sessions restricted to namespaces (from the worker's credential):
//! the restriction travels in the `RegisterWorker` entry, is kept on the
//! session record, survives a reopen, and apply() refuses an assignment of
//! another namespace's task whatever the leader planned.

mod common;

use std::collections::{BTreeMap, BTreeSet};

use baton_raft_store::*;
use common::Rig;

fn register(r: &mut Rig, name: &str, namespaces: Option<&[&str]>) -> SessionId {
    let namespaces = namespaces.map(|n| n.iter().map(|s| s.to_string()).collect::<BTreeSet<_>>());
    match r.ok(Command::RegisterWorker { name: name.into(), labels: BTreeMap::new(), capacity: 4, namespaces }) {
        Outcome::Registered { session, .. } => session,
        o => panic!("{o:?}"),
    }
}

fn submit(r: &mut Rig, namespace: &str) -> JobId {
    match r.ok(Command::SubmitJob(JobSpec::with_shards(namespace, 1))) {
        Outcome::Submitted { job, .. } => job,
        o => panic!("{o:?}"),
    }
}

#[test]
fn a_restricted_session_gets_only_its_namespaces_tasks() {
    let mut r = Rig::new(1_000, 1);
    let a_only = register(&mut r, "a-worker", Some(&["a"]));
    let job_a = submit(&mut r, "a");
    let job_b = submit(&mut r, "b");
    let rec = r.core.idx.sessions[&a_only].clone();
    assert_eq!(rec.namespaces, Some(BTreeSet::from(["a".to_string()])));
    assert!(rec.serves("a") && !rec.serves("b"));

    // The leader's plan was wrong: apply() refuses it per assignment and changes nothing.
    let assign =
        |job, session| Command::AssignTasks { assignments: vec![Assign { task: TaskKey::new(job, 0), session }] };
    match r.ok(assign(job_b, a_only)) {
        Outcome::Assigned(v) => {
            assert_eq!(v, vec![Err(CommandError::ConstraintMismatch { session: a_only, job: job_b })])
        }
        o => panic!("{o:?}"),
    }
    assert!(r.core.idx.pending[&job_b].contains_key(&0), "b's task stays pending");
    match r.ok(assign(job_a, a_only)) {
        Outcome::Assigned(v) => assert!(v[0].is_ok(), "{v:?}"),
        o => panic!("{o:?}"),
    }
    // The unrestricted session of the rig takes any namespace.
    let any = r.session;
    match r.ok(assign(job_b, any)) {
        Outcome::Assigned(v) => assert!(v[0].is_ok(), "{v:?}"),
        o => panic!("{o:?}"),
    }
    // The restriction is on the record, so a reopened core has it too.
    r.assert_reopens();
    let reopened = Core::open(&r.kv).unwrap();
    assert_eq!(reopened.idx.sessions[&a_only].namespaces, rec.namespaces);
}

#[test]
fn a_restriction_must_name_valid_namespaces() {
    let cmd = |ns: BTreeSet<String>| Command::RegisterWorker {
        name: "w".into(),
        labels: BTreeMap::new(),
        capacity: 1,
        namespaces: Some(ns),
    };
    assert!(cmd(BTreeSet::new()).validate().is_err(), "an empty list would starve the worker silently");
    assert!(cmd(BTreeSet::from([String::new()])).validate().is_err());
    let many = (0..=limits::MAX_WORKER_NAMESPACES).map(|i| format!("ns{i}")).collect();
    assert!(cmd(many).validate().is_err());
    assert!(cmd(BTreeSet::from(["a".to_string(), "b".to_string()])).validate().is_ok());
}

#[test]
fn the_entry_encoding_carries_the_restriction() {
    let cmd = Command::RegisterWorker {
        name: "w".into(),
        labels: BTreeMap::new(),
        capacity: 1,
        namespaces: Some(BTreeSet::from(["a".to_string()])),
    };
    let bytes = codec::encode(&cmd).unwrap();
    assert_eq!(bytes[0], codec::FORMAT_VERSION);
    assert_eq!(codec::decode::<Command>(&bytes).unwrap(), cmd);
}
