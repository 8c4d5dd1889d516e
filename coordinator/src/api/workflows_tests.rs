use baton_client::workflow::{Step, WorkflowBuilder, choose, emit_children};
use baton_raft_store::workflow::{decode_children, parse_choice};
use baton_raft_store::{StepKind, TriggerRule};

use super::*;

fn shards(n: u32) -> proto::JobSpec {
    proto::JobSpec { shards: n, ..Default::default() }
}

fn invalid_field(spec: proto::WorkflowSpec) -> (String, String) {
    match convert::workflow_spec(Some(spec)) {
        Err(ApiError::Invalid { field, reason }) => (field, reason),
        other => panic!("expected an invalid argument, got {other:?}"),
    }
}

#[test]
fn the_sdk_encodings_are_what_the_store_decodes() {
    let kids = vec![b"ab".to_vec(), Vec::new(), vec![0xff; 300]];
    let decoded: Vec<Vec<u8>> =
        decode_children(&emit_children(&kids)).unwrap().into_iter().map(|b| b.into_vec()).collect();
    assert_eq!(decoded, kids);
    assert!(decode_children(&emit_children(&[])).unwrap().is_empty());
    let names = ["fast", "with \"quotes\" and \\", "naïve\n"];
    assert_eq!(parse_choice(&choose(&names)).unwrap(), names);
}

/// A reduce reads its input in pages of the SDK's
/// `REDUCE_INPUT_PAGE_SHARDS` through GetResults, so that page must be one
/// the server serves (else every `reduce_input()` is refused). The number of
/// pages is bounded by the map's shards, as docs/workflows.md#limits says.
#[test]
fn the_sdk_reduce_input_page_is_one_get_results_serves() {
    use baton_raft_store::limits::{MAX_DYNAMIC_CHILDREN, MAX_SHARDS_PER_JOB};

    use super::super::jobs::RESULTS_PAGE_MAX;
    let page = baton_client::worker::REDUCE_INPUT_PAGE_SHARDS as usize;
    assert!((1..=RESULTS_PAGE_MAX).contains(&page), "{page} shards per page; GetResults serves 1..={RESULTS_PAGE_MAX}");
    assert_eq!(MAX_SHARDS_PER_JOB.div_ceil(page), 100, "pages of a static map's reduce at most");
    assert_eq!(MAX_DYNAMIC_CHILDREN.div_ceil(page), 10, "pages of a dynamic map's reduce at most");
}

#[test]
fn a_built_spec_converts_with_defaults_and_gates() {
    let spec = WorkflowBuilder::new("ns", "wf")
        .step(Step::job("map", shards(3)).reduce(b"sum".to_vec()))
        .step(Step::gate("ok?").depends_on(["map"]).gate_timeout(std::time::Duration::from_secs(5), true))
        .step(Step::job("after", shards(1)).depends_on(["ok?", "map"]).trigger(proto::TriggerRule::AllDone))
        .result_step("map")
        .build();
    let s = convert::workflow_spec(Some(spec)).unwrap();
    assert_eq!(s.result_step.as_deref(), Some("map"));
    assert!(s.idempotency_key.is_none());
    match &s.steps[0].kind {
        StepKind::Job { job, reduce, choice: false, dynamic: false } => {
            assert_eq!(job.payloads.len(), 3);
            assert_eq!(reduce.as_ref().unwrap().payload.as_slice(), b"sum");
            assert_eq!(job.max_attempts, baton_raft_store::limits::MAX_ATTEMPTS_DEFAULT);
        }
        k => panic!("{k:?}"),
    }
    assert_eq!(
        s.steps[1].kind,
        StepKind::Gate {
            timeout_ms: Some(5000),
            on_timeout: baton_raft_store::workflow::GateTimeout::Approve,
            event: None
        }
    );
    assert_eq!(s.steps[2].trigger, TriggerRule::AllDone);
    assert_eq!(s.steps[2].depends_on, ["ok?", "map"]);
}

#[test]
fn bad_specs_name_the_field() {
    let cycle = WorkflowBuilder::new("ns", "wf")
        .step(Step::job("a", shards(1)).depends_on(["b"]))
        .step(Step::job("b", shards(1)).depends_on(["a"]))
        .build();
    let (field, reason) = invalid_field(cycle);
    assert_eq!(field, "steps");
    assert!(reason == "cycle: a -> b -> a" || reason == "cycle: b -> a -> b", "{reason}");

    let unknown = WorkflowBuilder::new("ns", "wf").step(Step::job("a", shards(1)).depends_on(["nope"])).build();
    let (field, reason) = invalid_field(unknown);
    assert_eq!(field, "steps[0].depends_on");
    assert!(reason.contains("\"nope\""), "{reason}");

    let mut many = WorkflowBuilder::new("ns", "wf");
    for i in 0..=baton_raft_store::limits::MAX_STEPS_PER_WORKFLOW {
        many = many.step(Step::job(format!("s{i}"), shards(1)));
    }
    assert_eq!(invalid_field(many.build()).0, "steps");

    let no_shards = WorkflowBuilder::new("ns", "wf").step(Step::job("a", shards(0))).build();
    assert_eq!(invalid_field(no_shards).0, "steps[0].shards");

    let bad_attempts = WorkflowBuilder::new("ns", "wf")
        .step(Step::job("a", proto::JobSpec { shards: 1, max_attempts: 10_000, ..Default::default() }))
        .build();
    assert_eq!(invalid_field(bad_attempts).0, "steps[0].max_attempts");

    let gate_reduce = WorkflowBuilder::new("ns", "wf").step(Step::gate("g").reduce(b"x".to_vec())).build();
    assert_eq!(invalid_field(gate_reduce).0, "steps[0].reduce");

    let approve_without_timeout = {
        let mut s = Step::gate("g").into_spec();
        if let Some(proto::step_spec::Kind::Gate(g)) = &mut s.kind {
            g.approve_on_timeout = true;
        }
        proto::WorkflowSpec { namespace: "ns".into(), steps: vec![s], ..Default::default() }
    };
    assert_eq!(invalid_field(approve_without_timeout).0, "steps[0].gate.approve_on_timeout");

    let no_kind = proto::WorkflowSpec {
        namespace: "ns".into(),
        steps: vec![proto::StepSpec { name: "a".into(), ..Default::default() }],
        ..Default::default()
    };
    assert_eq!(invalid_field(no_kind).0, "steps[0].kind");

    let bad_trigger = proto::WorkflowSpec {
        namespace: "ns".into(),
        steps: vec![proto::StepSpec { trigger: 99, ..Step::job("a", shards(1)).into_spec() }],
        ..Default::default()
    };
    assert_eq!(invalid_field(bad_trigger).0, "steps[0].trigger");

    let other_ns = WorkflowBuilder::new("ns", "wf")
        .step(Step::job("a", proto::JobSpec { namespace: "other".into(), shards: 1, ..Default::default() }))
        .build();
    assert_eq!(invalid_field(other_ns).0, "steps[0].namespace");

    let bad_result = WorkflowBuilder::new("ns", "wf").step(Step::job("a", shards(2))).result_step("a").build();
    assert_eq!(invalid_field(bad_result).0, "result_step");

    assert!(matches!(convert::workflow_spec(None), Err(ApiError::Invalid { .. })));
}
